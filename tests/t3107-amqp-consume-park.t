#!/usr/bin/env bash
# amqp-consume --match and "park": a message the child will take long over stops holding up the acks of others, and nothing is lost.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.park
# metric FILE NAME: a sample's value in an amqp-consume --metrics file
metric() { awk -v n="$2" '$1 ~ "^" n "[{]" { print $2 }' "$1"; }

# The child parks message 1 the first time it sees it and answers the others
# at once; it answers 1 only when 1 comes back (the copy): first for the
# original (late: amqp-consume must ignore it), then for the copy. So the run
# ends only if amqp-consume parked 1.
cat >"$TRASH/child" <<-\EOF
#!/bin/sh
while read -r line; do
	n=${line#*:} n=${n%\}}
	if [ "$n" = 1 ] && [ ! -e parked ]; then
		touch parked
		echo "{\"n\":1,\"status\":\"park\"}"
	elif [ "$n" = 1 ]; then
		echo "{\"n\":1,\"status\":\"success\",\"late\":true}"
		echo "{\"n\":1,\"status\":\"success\"}"
	else
		echo "{\"n\":$n,\"status\":\"success\"}"
	fi
done
EOF
chmod +x "$TRASH/child"

test_expect_success 'a parked message holding up others: copied to Q.retry, acked; its late answer ignored; the copy answered' '
	publish_n $Q.a 1 5 &&
	OA_DEBUG=1 timeout 30 amqp-consume -q $Q.a --match n --retry-delay 0.2 --idle-exit 1.5 \
		--metrics m.prom -- ./child >out.txt 2>err.txt &&
	expect_eq "2 3 4 5 1" "$(jq -r .n out.txt | xargs)" "answers copied out, in order" &&
	expect_eq 0 "$(grep -c late out.txt)" "late answers copied out" &&
	expect_eq 1 "$(grep -c "copied to $Q.a.retry.200 with x-attempts 0" err.txt)" "copies" &&
	expect_eq 1 "$(metric m.prom amqp_consume_messages_parked_total)" "parked" &&
	expect_eq 5 "$(metric m.prom amqp_consume_messages_acked_total)" "acked" &&
	wait_depth $Q.a 0 && expect_eq 0 "$(queue_depth $Q.a.dead)" "dead-lettered" &&
	expect_eq 0 "$(queue_depth $Q.a.retry.200)" "left in the retry queue"
'

test_expect_success 'behind a parked message the answered are acked in one range, not one by one' '
	publish_n $Q.r 1 50 &&
	rm -f parked &&
	OA_DEBUG=1 timeout 30 amqp-consume -q $Q.r -p 64 --match n --retry-delay 0.2 --idle-exit 1.5 \
		-- ./child >out.txt 2>err.txt &&
	expect_eq 50 "$(jq -r .n out.txt | sort -un | wc -l)" "distinct answers" &&
	acks=$(sed -n "s/.*acked \([0-9]*\) messages, up to delivery tag.*/\1/p" err.txt | awk "{ s += \$1 } END { print s }") &&
	expect_eq 50 "$acks" "messages acked in ranges (the 49 and the copy)"
'

test_expect_success 'a park that holds up nothing copies nothing: the answer settles the message' '
	publish_n $Q.one 1 1 &&
	OA_DEBUG=1 amqp-consume -q $Q.one --match n --idle-exit 1 --metrics m.prom -- \
		sh -c "read -r l; echo \"{\\\"n\\\":1,\\\"status\\\":\\\"park\\\"}\"; echo \"{\\\"n\\\":1,\\\"status\\\":\\\"success\\\"}\"; cat >/dev/null" \
		>out.txt 2>err.txt &&
	expect_eq 1 "$(lines out.txt)" "answers" &&
	expect_eq 0 "$(grep -c "copied to" err.txt)" "copies" &&
	expect_eq 0 "$(metric m.prom amqp_consume_messages_parked_total)" "parked" &&
	wait_depth $Q.one 0
'

test_expect_success 'a child dying after a park loses nothing: the copy comes back to the restarted child' '
	publish_n $Q.die 1 5 &&
	cat >dying <<-\EOF &&
	#!/bin/sh
	# parks 1, answers 2..5, then exits with 1 unanswered; later runs answer everything
	while read -r line; do
		n=${line#*:} n=${n%\}}
		if [ ! -e died ]; then
			if [ "$n" = 1 ]; then echo "{\"n\":1,\"status\":\"park\"}"; else echo "{\"n\":$n,\"status\":\"success\"}"; fi
			if [ "$n" = 5 ]; then touch died; exit 3; fi
		else
			echo "{\"n\":$n,\"status\":\"success\"}"
		fi
	done
	EOF
	chmod +x dying &&
	timeout 30 amqp-consume -q $Q.die --match n --retry-delay 0.2 --idle-exit 2 -- ./dying >out.txt 2>err.txt &&
	expect_grep "exited with status 3" err.txt &&
	expect_eq "1 2 3 4 5" "$(jq -r .n out.txt | sort -n | xargs)" "answered" &&
	wait_depth $Q.die 0 && expect_eq 0 "$(queue_depth $Q.die.dead)" "dead-lettered"
'

test_expect_success 'OA_MATCH fulfil marks park the calls of a vendor far slower than the others, and only those' '
	echo "[{\"sku\":\"A-1\",\"quantity\":1000}]" >acme.json &&
	echo "[{\"sku\":\"S-1\",\"quantity\":1000}]" >slow.json &&
	start_vendor_mock --vendor acme=acme.json --vendor slow=slow.json --latency slow=1500 &&
	# 40 orders at acme (the median: fulfil judges a call against the others), one at slow
	sql "INSERT INTO orders (id, sku, quantity, vendor) SELECT g, '"'A-1'"', 1, '"'acme'"' FROM generate_series(101, 140) g;
	     INSERT INTO orders (id, sku, quantity, vendor) VALUES (100, '"'S-1'"', 1, '"'slow'"');
	     INSERT INTO vendor_stock (vendor, sku, quantity, reserved) VALUES ('"'acme'"', '"'A-1'"', 1000, 40), ('"'slow'"', '"'S-1'"', 1000, 1)" &&
	seq 100 140 | sed "s/.*/{\"order_id\":&}/" >in &&
	OA_MATCH=order_id fulfil <in >out 2>err &&
	expect_eq 100 "$(jq -r "select(.status == \"park\") | .order_id" out)" "lines marked park" &&
	expect_eq 41 "$(jq -r "select(.status == \"success\") | .order_id" out | sort -u | wc -l)" "orders answered success" &&
	expect_eq "{\"order_id\":100,\"status\":\"success\"}" "$(tail -n 1 out | jq -c "{order_id, status}")" "the last line" &&
	fulfil <in >out.inorder 2>err &&
	expect_eq 0 "$(grep -c park out.inorder)" "park lines without OA_MATCH" &&
	OA_MATCH=order_id fulfil --park-after 0 <in >out.never 2>err &&
	expect_eq 0 "$(grep -c park out.never)" "park lines with --park-after 0"
'

test_expect_success 'park without --match is a broken child: nothing acked' '
	publish_n $Q.nm 1 3 &&
	{ amqp-consume -q $Q.nm -- sh -c "while read -r l; do echo \"{\\\"status\\\":\\\"park\\\"}\"; done" >out.txt 2>err.txt & pid=$!; } &&
	on_exit "kill $pid 2>/dev/null" &&
	wait_for "grep -q \"a park, which needs --match\" err.txt" 10 "the broken child said" &&
	kill -TERM $pid && wait $pid &&
	test ! -s out.txt &&
	wait_for "[ \$((\$(queue_depth $Q.nm) + \$(queue_depth $Q.nm.dead))) = 3 ]" 10 "3 messages in Q and Q.dead"
'

test_done
