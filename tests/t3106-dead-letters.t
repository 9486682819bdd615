#!/usr/bin/env bash
# Dead letters saved to a file with amqp-consume --save, at least once, and replayed with amqp-publish.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders
# kill_all QUEUE N [-p PREFETCH]: publish messages 1..N to QUEUE and let a child answer "dead" to each
kill_all() {
	local q=$1 n=$2; shift 2
	publish_n "$q" 1 "$n" &&
	amqp-consume -q "$q" --idle-exit 1 "$@" -- jq -c --unbuffered '. + {status: "dead"}' >/dev/null &&
	wait_depth "$q.dead" "$n"
}

test_expect_success 'messages answered "dead" are saved, one body a line, and Q.dead is left empty' '
	kill_all $Q.a 30 &&
	amqp-consume --save dead.jsonl -q $Q.a.dead 2>err.txt &&
	seq 1 30 | sed "s/.*/{\"n\":&}/" >want &&
	test_cmp want dead.jsonl &&
	expect_eq 600 "$(stat -c %a dead.jsonl)" "mode of the file" &&
	expect_grep "saved 30 messages of queue $Q.a.dead to dead.jsonl" err.txt &&
	wait_depth $Q.a.dead 0
'

test_expect_success 'a second save appends; the two-command replay puts them back in Q, and a worker finishes them' '
	kill_all $Q.a 35 &&
	amqp-consume --save dead.jsonl -q $Q.a.dead 2>err.txt &&
	expect_eq 65 "$(lines dead.jsonl)" "lines after two saves" &&
	wait_depth $Q.a.dead 0 &&
	amqp-publish -q $Q.a <dead.jsonl &&
	wait_depth $Q.a 65 &&
	amqp-consume -q $Q.a --idle-exit 1 -- jq -c --unbuffered ". + {status: \"success\"}" >out.txt &&
	expect_eq 65 "$(lines out.txt)" "answers" &&
	wait_depth $Q.a 0 && expect_eq 0 "$(queue_depth $Q.a.dead)" "dead-lettered again"
'

test_expect_success 'a body of several lines is not saved: it stays in the queue with a warning, exit 65' '
	kill_all $Q.ml 3 &&
	publish_raw $Q.ml.dead "first\nsecond" &&
	wait_depth $Q.ml.dead 4 &&
	test_expect_code 65 amqp-consume --save ml.jsonl -q $Q.ml.dead 2>err.txt &&
	seq 1 3 | sed "s/.*/{\"n\":&}/" >want &&
	test_cmp want ml.jsonl &&
	expect_grep "spans several lines (12 bytes: \"first?second\"): not saved, it stays in the queue" err.txt &&
	wait_depth $Q.ml.dead 1
'

test_expect_success 'a queue that does not exist: exit 66, nothing created, nothing declared' '
	test_expect_code 66 amqp-consume --save none.jsonl -q $Q.none.dead 2>err.txt &&
	expect_grep "queue $Q.none.dead does not exist" err.txt &&
	test ! -e none.jsonl &&
	! rabbitmqctl list_queues -q --no-table-headers name | grep -qx "$Q.none.dead"
'

test_expect_success 'killed with SIGKILL halfway through 5,000 dead letters, then run again: every message is in the file, none lost' '
	kill_all $Q.big 5000 -p 512 &&
	{ amqp-consume --save big.jsonl -q $Q.big.dead -p 2 2>err1.txt & pid=$!; } &&
	wait_for "[ -e big.jsonl ] && [ \$(lines big.jsonl) -ge 500 ]" 30 "500 lines saved" &&
	kill -9 $pid && { wait $pid || :; } &&
	first=$(lines big.jsonl) &&
	say "$first lines written when killed" &&
	test "$first" -lt 5000 &&
	amqp-consume --save big.jsonl -q $Q.big.dead 2>err2.txt &&
	total=$(lines big.jsonl) &&
	say "$total lines in all: $((total - 5000)) written twice" &&
	jq -r .n big.jsonl | sort -n | uniq >got &&
	seq 1 5000 >want &&
	test_cmp want got &&
	wait_depth $Q.big.dead 0 &&
	amqp-publish -q $Q.big <big.jsonl &&
	amqp-consume -q $Q.big -p 512 --match n --idle-exit 1 -- jq -c --unbuffered ". + {status: \"success\"}" >out.txt &&
	jq -r .n out.txt | sort -n | uniq >got &&
	test_cmp want got &&
	wait_depth $Q.big 0 && expect_eq 0 "$(queue_depth $Q.big.dead)" "dead-lettered again"
'

test_expect_success 'a file ending in a partial line (a run killed while writing): ended first, so every saved line is whole' '
	kill_all $Q.p 2 &&
	printf "{\"n\":1}\n{\"n\":" >p.jsonl &&
	amqp-consume --save p.jsonl -q $Q.p.dead 2>err.txt &&
	expect_grep "p.jsonl ends in a partial line" err.txt &&
	printf "{\"n\":1}\n{\"n\":\n{\"n\":1}\n{\"n\":2}\n" >want &&
	test_cmp want p.jsonl
'

test_expect_success 'SIGTERM: the batch in hand is written and acked, exit 0' '
	kill_all $Q.t 5 &&
	{ amqp-consume --save t.jsonl -q $Q.t.dead --idle-exit 3600 2>err.txt & pid=$!; } &&
	wait_for "[ -e t.jsonl ] && [ \$(lines t.jsonl) = 5 ]" 20 "5 lines saved" &&
	kill -TERM $pid && test_expect_code 0 wait $pid &&
	wait_depth $Q.t.dead 0
'

test_done
