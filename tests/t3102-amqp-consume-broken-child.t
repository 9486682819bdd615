#!/usr/bin/env bash
# amqp-consume never acks what its child did not answer: garbage, extra lines, silence, unknown keys.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders
# total QUEUE: messages in QUEUE and QUEUE.dead together
total() { echo $(($(queue_depth "$1") + $(queue_depth "$1.dead"))); }
# wait_total QUEUE N: wait (up to 20 s) until QUEUE and QUEUE.dead hold N messages together
wait_total() {
	local i got
	for i in $(seq 1 100); do
		got=$(total "$1")
		[ "$got" = "$2" ] && return 0
		sleep 0.2
	done
	fail "queue $1 and $1.dead: expected $2 messages, found $got"
}
# await_grep PATTERN FILE: wait (up to 10 s) until FILE has a line matching PATTERN
await_grep() {
	local i
	for i in $(seq 1 200); do
		grep -q "$1" "$2" 2>/dev/null && return 0
		sleep 0.05
	done
	fail "'$1' not found in $2: $(cat "$2")"
}
# stop_within PID S: SIGTERM PID, then wait (up to S s) for it to exit; its status in $rc
stop_within() {
	local i
	kill -TERM "$1"
	for i in $(seq 1 $(($2 * 20))); do
		kill -0 "$1" 2>/dev/null || { wait "$1"; rc=$?; return 0; }
		sleep 0.05
	done
	kill -9 "$1"
	fail "pid $1 still running $2 s after SIGTERM"
}

test_expect_success 'a child printing garbage: it is killed as broken, nothing is acked, every message is in Q or Q.dead' '
	publish_n $Q.g 1 20 &&
	{ amqp-consume -q $Q.g -- sh -c "while read -r l; do echo hello; done" >out.txt 2>err.txt & pid=$!; } &&
	await_grep "printed \"hello\", which is not a JSON object" err.txt &&
	expect_grep "killed it: nothing is acked" err.txt &&
	stop_within $pid 15 && expect_eq 0 "$rc" "exit status" &&
	test ! -s out.txt &&
	wait_total $Q.g 20
'

test_expect_success 'a child printing a known status that is not one: broken, nothing acked' '
	publish_n $Q.s 1 5 &&
	{ amqp-consume -q $Q.s -- jq -c --unbuffered ". + {status: \"ok\"}" >out.txt 2>err.txt & pid=$!; } &&
	await_grep "which has no known status" err.txt &&
	stop_within $pid 15 && expect_eq 0 "$rc" "exit status" &&
	test ! -s out.txt && wait_total $Q.s 5
'

test_expect_success 'a child printing two lines per message (one message at a time): the extra line is a broken child, nothing acked unanswered' '
	publish_n $Q.two 1 10 &&
	cat >child <<-\EOF &&
	#!/bin/sh
	while read -r line; do
		a="${line%\}},\"status\":\"success\"}"
		printf "%s\n%s\n" "$a" "$a"
	done
	EOF
	chmod +x child &&
	{ amqp-consume -q $Q.two -p 1 -- ./child >out.txt 2>err.txt & pid=$!; } &&
	await_grep "a line more than it was given messages" err.txt &&
	stop_within $pid 15 && expect_eq 0 "$rc" "exit status" &&
	answered=$(jq .n out.txt | sort -un | wc -l) &&
	wait_total $Q.two $((10 - answered)) &&
	expect_eq 0 "$(($(jq .n out.txt | sort -n | uniq -d | wc -l)))" "messages answered twice in out.txt"
'

test_expect_success 'with --match, a second answer for the same message names no message in hand: broken' '
	publish_n $Q.twom 1 10 &&
	{ amqp-consume -q $Q.twom --match n -- ./child >out.txt 2>err.txt & pid=$!; } &&
	await_grep "whose match field names no message it was given" err.txt &&
	stop_within $pid 15 && expect_eq 0 "$rc" "exit status" &&
	answered=$(jq .n out.txt | sort -un | wc -l) &&
	wait_total $Q.twom $((10 - answered))
'

test_expect_success 'a child that never answers, then SIGTERM: killed after --grace, exit 0, every message still queued' '
	publish_n $Q.silent 1 30 &&
	{ OA_WAIT_REPORT=1 amqp-consume -q $Q.silent --grace 1 -- sh -c "while read -r l; do :; done" >out.txt 2>err.txt & pid=$!; } &&
	await_grep "has answered nothing for [0-9]* s while holding 30 messages" err.txt &&
	start=$(date +%s) &&
	stop_within $pid 8 && expect_eq 0 "$rc" "exit status" &&
	expect_grep "answered nothing for 1 s (--grace)" err.txt &&
	test ! -s out.txt &&
	wait_depth $Q.silent 30 && expect_eq 0 "$(queue_depth $Q.silent.dead)" "dead-lettered"
'

test_expect_success 'a child that never answers and --idle-exit: exit 0 after idle + grace, every message still queued' '
	publish_n $Q.idle 1 30 &&
	start=$(date +%s.%N) &&
	{ timeout 20 amqp-consume -q $Q.idle --idle-exit 1 --grace 1 -- sh -c "while read -r l; do :; done" >out.txt 2>err.txt; rc=$?; } &&
	expect_eq 0 "$rc" "exit status" &&
	awk -v s="$start" -v e="$(date +%s.%N)" "BEGIN { exit !(e - s < 10) }" &&
	test ! -s out.txt &&
	wait_depth $Q.idle 30 && expect_eq 0 "$(queue_depth $Q.idle.dead)" "dead-lettered"
'

test_expect_success '--match with answers in reverse order (and keys as strings): every message acked once' '
	publish_n $Q.rev 1 200 &&
	cat >rev.awk <<-\EOF &&
	{ n = $0; gsub(/[^0-9]/, "", n); buf[NR % 10] = n }
	NR % 10 == 0 {
		for (i = 9; i >= 0; i--) {
			k = buf[(NR - 9 + i) % 10]
			if (k % 2) printf "{\"n\":\"%s\",\"status\":\"success\"}\n", k
			else printf "{\"status\":\"success\",\"n\":%s}\n", k
		}
		fflush()
	}
	EOF
	test "$(OA_MATCH=x amqp-consume -q $Q.rev -p 50 --match n --idle-exit 1 -- sh -c "echo \$OA_MATCH >match.env; exec awk -W interactive -f rev.awk" >out.txt 2>err.txt; echo $?)" = 0 &&
	expect_eq n "$(cat match.env)" "OA_MATCH in the child" &&
	test ! -s err.txt &&
	expect_eq 200 "$(lines out.txt)" "answers" &&
	expect_eq 200 "$(jq -r .n out.txt | sort -un | wc -l)" "distinct answers" &&
	expect_eq 10 "$(head -n 1 out.txt | jq -r .n)" "first answer" &&
	wait_depth $Q.rev 0 && expect_eq 0 "$(queue_depth $Q.rev.dead)" "dead-lettered"
'

test_expect_success 'without --match, OA_MATCH is not in the child environment' '
	publish_n $Q.env 1 1 &&
	OA_MATCH=order_id amqp-consume -q $Q.env --idle-exit 1 -- sh -c "echo \"\${OA_MATCH-unset}\" >match.env; exec jq -c --unbuffered \". + {status: \\\"success\\\"}\"" >out.txt &&
	expect_eq unset "$(cat match.env)" "OA_MATCH"
'

test_expect_success '--match: a message without the field is dead-lettered at delivery' '
	publish_n $Q.nokey 1 2 &&
	echo "{\"m\":3}" | amqp-publish -q $Q.nokey &&
	amqp-consume -q $Q.nokey --match n --idle-exit 1 -- jq -c --unbuffered ". + {status: \"success\"}" >out.txt 2>err.txt &&
	expect_eq "1 2" "$(jq .n out.txt | xargs)" "answered" &&
	expect_grep "has no match field n: dead-lettered to $Q.nokey.dead" err.txt &&
	wait_depth $Q.nokey.dead 1
'

test_expect_success '"dead" sends the message to Q.dead at once; "defer" brings it back with x-attempts unchanged, "retry" adds one' '
	publish_n $Q.st 1 3 &&
	cat >child <<-\EOF &&
	#!/bin/sh
	while read -r line; do
		n=${line#*:} n=${n%\}}
		s=success
		[ "$n" = 2 ] && s=dead
		if [ "$n" = 3 ]; then
			if [ ! -e deferred ]; then touch deferred; s=defer
			elif [ ! -e retried ]; then touch retried; s=retry
			fi
		fi
		echo "{\"n\":$n,\"status\":\"$s\"}"
	done
	EOF
	chmod +x child &&
	OA_DEBUG=1 amqp-consume -q $Q.st --match n --retry-delay 0.2 --idle-exit 1.5 -- ./child >out.txt 2>err.txt &&
	expect_eq "1 success 2 dead 3 defer 3 retry 3 success" "$(jq -r "\"\(.n) \(.status)\"" out.txt | xargs)" &&
	expect_eq "0 1" "$(sed -n "s/.*copied to $Q.st.retry.200 with x-attempts \([0-9]*\)/\1/p" err.txt | xargs)" "x-attempts of the copies" &&
	wait_depth $Q.st.dead 1 && wait_depth $Q.st 0
'

test_done
