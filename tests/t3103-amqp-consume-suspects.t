#!/usr/bin/env bash
# After a child dies only the messages in its hands are suspects: a poison message is found by halving, alone.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders
# A child that answers each line at once and dies (exit 1) on a poison message.
cat >"$TRASH/child.awk" <<-\EOF
/poison/ { print "poison" >>"seen.poison"; exit 1 }
{ n = $0; gsub(/[^0-9]/, "", n); printf "{\"n\":%s,\"status\":\"success\"}\n", n; fflush() }
EOF
printf '#!/bin/sh\nexec awk -W interactive -f "%s"\n' "$TRASH/child.awk" >"$TRASH/child"
chmod +x "$TRASH/child"

for mode in "--match n" ""; do
test_expect_success "a poison message among 500 good ones (${mode:-in order}): the good ones finish, the poison one alone ends in Q.dead" '
	q=$Q.p${mode:+m} && rm -f seen.poison &&
	{ publish_n $q 1 250 --max-deliveries 3 &&
	echo "{\"n\":0,\"poison\":true}" | amqp-publish -q $q --max-deliveries 3 &&
	publish_n $q 251 500 --max-deliveries 3; } &&
	start=$(date +%s.%N) &&
	amqp-consume -q $q -p 64 $mode --max-deliveries 3 --idle-exit 1.5 -- "$TRASH/child" >out.txt 2>err.txt &&
	took=$(awk -v s="$start" -v e="$(date +%s.%N)" "BEGIN { print e - s }") && say "took $took s" &&
	awk -v t="$took" "BEGIN { exit !(t < 30) }" &&
	expect_eq 500 "$(jq .n out.txt | sort -un | wc -l)" "good messages answered" &&
	expect_eq 3 "$(grep -c "the one that killed it goes back to the queue, counted" err.txt)" "deliveries of the poison message counted" &&
	test "$(lines seen.poison)" -le 10 &&
	expect_eq "" "$(jq "select(.status != \"success\")" out.txt)" "answers other than success" &&
	wait_depth $q.dead 1 && wait_depth $q 0
'
done

test_expect_success 'a child exiting 69 (a service it needs is down) is restarted through a long outage, blaming nothing' '
	publish_n $Q.out 1 5 --max-deliveries 2 &&
	cat >child <<-\EOF &&
	#!/bin/sh
	read -r line
	n=$(cat deaths 2>/dev/null || echo 0); echo $((n + 1)) >deaths
	[ $((n + 1)) -lt 5 ] && exit 69
	echo "${line%\}},\"status\":\"success\"}"
	exec jq -c --unbuffered ". + {status: \"success\"}"
	EOF
	chmod +x child &&
	amqp-consume -q $Q.out --max-deliveries 2 --idle-exit 3 -- ./child >out.txt 2>err.txt &&
	expect_eq 5 "$(jq .n out.txt | sort -un | wc -l)" "answered" &&
	expect_eq 4 "$(grep -c "exited with status 69.*none is blamed" err.txt)" "deaths said" &&
	expect_eq 0 "$(queue_depth $Q.out.dead)" "dead-lettered"
'

test_done
