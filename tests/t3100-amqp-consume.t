#!/usr/bin/env bash
# amqp-consume feeds one child, acks on its answers, retries, dead-letters poison, stops cleanly.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders
# consumers QUEUE: how many consumers the broker counts on QUEUE
consumers() {
	rabbitmqctl list_queues -q --no-table-headers name consumers 2>/dev/null |
		awk -v q="$1" '$1 == q { print $2; f = 1 } END { if (!f) print 0 }'
}
# now_ms: the time in milliseconds
now_ms() { echo $(($(date +%s%N) / 1000000)); }

test_expect_success 'each message is answered in order, the answers are copied out, the queue ends empty' '
	publish_n $Q.a 1 200 &&
	amqp-consume -q $Q.a --idle-exit 1 -- jq -c --unbuffered "{order_id: .n, status: \"success\"}" >out.txt 2>err.txt &&
	expect_eq 200 "$(lines out.txt)" "answers" &&
	expect_eq "$(seq 1 200 | xargs)" "$(jq .order_id out.txt | xargs)" "answer order" &&
	test ! -s err.txt &&
	drain $Q.a >left && expect_eq 0 "$(lines left)" "messages left"
'

test_expect_success 'a "retry" answer brings the message back after --retry-delay, then it succeeds' '
	cat >child <<-\EOF &&
	#!/bin/sh
	while read -r line; do
		n=$(echo "$line" | jq .n)
		date +%s.%N >>"seen.$n"
		if [ "$n" = 2 ] && [ ! -e marker ]; then
			touch marker; echo "{\"n\":$n,\"status\":\"retry\"}"
		else
			echo "{\"n\":$n,\"status\":\"success\"}"
		fi
	done
	EOF
	chmod +x child && publish_n $Q.r 1 3 &&
	amqp-consume -q $Q.r --retry-delay 0.5 --idle-exit 1.5 -- ./child >out.txt &&
	expect_eq "1 success 2 retry 3 success 2 success" "$(jq -r "\"\(.n) \(.status)\"" out.txt | xargs)" &&
	awk "NR == 1 { t = \$1 } NR == 2 { exit !(\$1 - t >= 0.45) }" seen.2 &&
	rabbitmqctl list_queues -q --no-table-headers name | grep -qx "$Q.r.retry.500" &&
	drain $Q.r --retry-delay 0.5 >left && expect_eq 0 "$(lines left)" "messages left"
'

# batch_child SIZE K: a child answering in batches: it reads SIZE lines, then
# writes their answers in one write (< PIPE_BUF, so amqp-consume reads them
# in one chunk), then runs ./after-batch if there is one (which may change
# $size); a message whose n is a multiple of K is answered "retry" the first time.
batch_child() {
	rm -f retried.* batch.times after-batch &&
	cat >child <<-EOF &&
	#!/bin/bash
	size=$1
	while :; do
		for i in \$(seq 1 \$size); do
			read -r line || exit 0
			n=\${line#*:} n=\${n%\}}
			if [ \$((n % $2)) = 0 ] && [ ! -e "retried.\$n" ]; then
				touch "retried.\$n"; status=retry
			else
				status=success
			fi
			printf "{\"n\":%s,\"status\":\"%s\"}\n" "\$n" "\$status"
		done >batch
		cat batch && date +%s.%N >>batch.times
		[ -e after-batch ] && . ./after-batch
	done
	EOF
	chmod +x child
}
# acks_coalesced ERR: the sizes of the multiple acks amqp-consume sent (OA_DEBUG)
acks_coalesced() { sed -n "s/.*debug: acked \([0-9]*\) messages, up to delivery tag.*/\1/p" "$1" | xargs; }

test_expect_success 'answers read in one chunk are acked with one multiple ack each; nothing comes back' '
	batch_child 100 1000000 &&
	publish_n $Q.many 1 500 &&
	OA_DEBUG=1 amqp-consume -q $Q.many -p 256 --idle-exit 1 -- ./child >out.txt 2>err.txt &&
	expect_eq "$(seq 1 500 | xargs)" "$(jq .n out.txt | xargs)" "answers" &&
	! grep -v "debug: " err.txt &&
	acks=$(acks_coalesced err.txt) &&
	expect_eq 500 $(($(echo $acks | tr " " +))) "messages acked by multiple acks ($acks)" &&
	expect_eq "" "$(for a in $acks; do [ $((a % 100)) = 0 ] || echo $a; done)" "multiple acks of whole batches ($acks)" &&
	drain $Q.many >left && expect_eq 0 "$(lines left)" "messages left"
'

test_expect_success '"retry" and success answers in one chunk: the acks stop short of a retried message, which comes back through the retry queue' '
	batch_child 60 3 && echo size=1 >after-batch &&
	publish_n $Q.mix 1 60 &&
	OA_DEBUG=1 amqp-consume -q $Q.mix --retry-delay 1 --idle-exit 2 -- ./child >out.txt 2>err.txt &&
	expect_eq 80 "$(lines out.txt)" "answers" &&
	expect_eq "$(seq 1 60 | xargs)" "$(head -n 60 out.txt | jq .n | xargs)" "first answers" &&
	expect_eq "$(seq 3 3 60 | xargs)" "$(jq "select(.status == \"retry\") | .n" out.txt | xargs)" "retried" &&
	expect_eq "$(seq 3 3 60 | xargs)" "$(tail -n 20 out.txt | jq "select(.status == \"success\") | .n" | sort -n | xargs)" "second answers" &&
	! grep -v "debug: " err.txt &&
	expect_eq 2 "$(acks_coalesced err.txt | cut -d" " -f1)" "the multiple ack before the first retry (of 1 and 2)" &&
	awk "NR == 1 { t = \$1 } NR == 2 { exit !(\$1 - t >= 0.9) }" batch.times &&
	drain $Q.mix --retry-delay 1 >left && expect_eq 0 "$(lines left)" "messages left"
'

test_expect_success 'amqp-consume killed (-9) just after a chunk of "retry" and success answers: every message is acked with a success answer or still queued' '
	batch_child 60 3 &&
	cat >after-batch <<-\EOF &&
	for i in $(seq 1 2000); do [ "$(wc -l <out.txt)" -ge 60 ] && break; done
	kill -9 $PPID; exit 0
	EOF
	publish_n $Q.kill 1 60 &&
	{ amqp-consume -q $Q.kill --retry-delay 0.5 -- ./child >out.txt 2>err.txt && rc=0 || rc=$?; } &&
	expect_eq 137 $rc "exit status of amqp-consume" &&
	expect_eq 60 "$(lines out.txt)" "answers copied out before the kill" &&
	drain $Q.kill --retry-delay 0.5 --idle-exit 2 >left &&
	{ jq "select(.status == \"success\") | .n" out.txt; jq .n left; } | sort -un >got &&
	expect_eq "$(seq 1 60 | xargs)" "$(xargs <got)" "answered with success, or still queued" &&
	jq .n left | sort -u >left.n && seq 3 3 60 | sort >retried &&
	expect_eq "" "$(comm -23 retried left.n | xargs)" "retried messages not queued any more"
'

test_expect_success 'a message that is not a JSON object line goes to Q.dead; the others are processed' '
	publish_n $Q.bad 1 2 &&
	publish_raw $Q.bad "not json" &&
	publish_n $Q.bad 3 4 &&
	amqp-consume -q $Q.bad --idle-exit 1 -- jq -c --unbuffered "{n, status: \"success\"}" >out.txt 2>err.txt &&
	expect_eq "1 2 3 4" "$(jq .n out.txt | xargs)" &&
	expect_grep "dead-lettered to $Q.bad.dead" err.txt &&
	wait_depth $Q.bad.dead 1
'

test_expect_success 'a message that kills the child every time ends in Q.dead after --max-deliveries' '
	cat >child <<-\EOF &&
	#!/bin/sh
	while read -r line; do
		n=$(echo "$line" | jq .n)
		echo "$n" >>seen
		[ "$n" = 3 ] && exit 3
		echo "{\"n\":$n,\"status\":\"success\"}"
	done
	EOF
	chmod +x child && publish_n $Q.poison 1 6 --max-deliveries 3 &&
	amqp-consume -q $Q.poison --max-deliveries 3 --idle-exit 1.5 -- ./child >out.txt 2>err.txt &&
	expect_eq "1 2 4 5 6" "$(jq .n out.txt | sort -n | xargs)" "answered" &&
	expect_eq 3 "$(grep -cx 3 seen)" "deliveries of the poison message" &&
	expect_grep "child exited with status 3" err.txt &&
	wait_depth $Q.poison.dead 1 &&
	drain $Q.poison --max-deliveries 3 >left && expect_eq 0 "$(lines left)" "messages left"
'

test_expect_success 'SIGTERM under load: exit 0, every message either answered and acked or still queued' '
	publish_n $Q.term 1 2000 &&
	# a child taking 2 ms a message, so that SIGTERM finds work in progress
	cat >child <<-\EOF &&
	#!/bin/sh
	while read -r line; do sleep 0.002; printf "%s\n" "${line%\}},\"status\":\"success\"}"; done
	EOF
	chmod +x child &&
	{ amqp-consume -q $Q.term -p 100 -- ./child >out.txt 2>err.txt & } && pid=$! &&
	wait_for "[ \$(lines out.txt) -ge 100 ]" 20 "100 answers" &&
	kill -TERM $pid && wait $pid &&
	drain $Q.term >left &&
	test "$(lines out.txt)" -gt 0 && test "$(lines left)" -gt 0 &&
	expect_eq 2000 "$(($(lines out.txt) + $(lines left)))" "answered + left" &&
	expect_eq 2000 "$(cat out.txt left | jq .n | sort -un | wc -l)" "distinct"
'

test_expect_success 'SIGTERM with nothing to do exits 0 at once (within a second)' '
	publish_n $Q.idle 1 0 &&
	{ amqp-consume -q $Q.idle -- cat >out.txt 2>err.txt & } && pid=$! &&
	wait_for "[ \$(consumers $Q.idle) = 1 ]" 20 "amqp-consume to consume from $Q.idle" &&
	start=$(now_ms) && kill -TERM $pid && wait $pid && took=$(($(now_ms) - start)) &&
	test ! -s out.txt &&
	{ test $took -lt 1000 || fail "exited $took ms after SIGTERM"; }
'

test_expect_success 'a child that dies before reading anything: exit 69 after --patience, no message dead-lettered' '
	publish_n $Q.false 1 5 &&
	test_expect_code 69 amqp-consume -q $Q.false --idle-exit 5 --patience 2 -- false 2>err.txt &&
	expect_grep "giving up" err.txt &&
	drain $Q.false >left && expect_eq 5 "$(lines left)" "messages still queued"
'

test_expect_success 'a command that cannot be run: exit 69 and no message is taken' '
	publish_n $Q.none 1 1 &&
	test_expect_code 69 amqp-consume -q $Q.none -- ./no-such-command 2>err.txt &&
	expect_grep "cannot run ./no-such-command" err.txt &&
	drain $Q.none >left && expect_eq 1 "$(lines left)" "messages still queued"
'

test_expect_success 'declaring the queue with other arguments is refused with a hint, exit 69' '
	publish_n $Q.args 1 1 --max-deliveries 5 &&
	test_expect_code 69 amqp-consume -q $Q.args --max-deliveries 2 --idle-exit 1 -- cat 2>err.txt &&
	expect_grep "queue $Q.args exists with other arguments" err.txt &&
	expect_grep "rabbitmqctl delete_queue $Q.args" err.txt
'

test_option_errors amqp-consume <<\EOF
--bogus -- cat               | '--bogus'
-p 0 -- cat                  | option -p
-p x -- cat                  | option -p
--retry-delay -1 -- cat      | option --retry-delay
--max-deliveries 0 -- cat    | option --max-deliveries
--idle-exit x -- cat         | option --idle-exit
-q a                         | a COMMAND to run is required
-q "" -- cat                 | option -q: a queue name
EOF

test_expect_success 'amqp-consume --help prints the usage on stdout and exits 0' '
	amqp-consume --help >out.txt && expect_grep "^usage: amqp-consume" out.txt
'

test_done
