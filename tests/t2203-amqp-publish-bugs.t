#!/usr/bin/env bash
# amqp-publish and amqp-consume on one node (issue 15, bugs 1-3): nacked lines retried together, --patience afresh after confirms, heartbeats never taken for a lost connection.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

# full_queue NAME MAX: a classic queue NAME bound to amq.direct with key NAME,
# refusing publishes (basic.nack, at once) beyond MAX ready messages
full_queue() {
	rabbitmqctl eval "rabbit_amqqueue:declare(rabbit_misc:r(<<\"/\">>, queue, <<\"$1\">>),
		true, false, [], none, <<\"guest\">>)." >/dev/null &&
	on_exit "rabbitmqctl delete_queue '$1'" &&
	bind_queue amq.direct "$1" "$1" &&
	rabbitmqctl set_policy -p / "$1" "^$(echo "$1" | sed 's/[.]/\\./g')\$" \
		"{\"max-length\":$2,\"overflow\":\"reject-publish\"}" --apply-to queues >/dev/null &&
	on_exit "rabbitmqctl clear_policy -p / '$1'"
}

test_expect_success 'a full queue nacks 10 lines: refused together, 5 times each, within a few seconds (not one a sleep)' '
	full_queue $Q.full 0 &&
	seq 1 10 | sed "s/.*/{\"n\":&}/" >in &&
	t0=$EPOCHREALTIME &&
	test_expect_code 69 amqp-publish -e amq.direct -k $Q.full <in 2>err.txt &&
	took=$(awk -v s="$t0" -v e="$EPOCHREALTIME" "BEGIN { print e - s }") &&
	say "10 refused lines took $took s" &&
	awk -v t="$took" "BEGIN { exit !(t < 8) }" || fail "took $took s" &&
	expect_eq 10 "$(grep -c "the broker refused it: exchange \"amq.direct\" with key \"$Q.full\" nacked it 5 times" err.txt)" "refused lines" &&
	expect_grep "0 lines were confirmed; 0 were returned unroutable and 10 refused" err.txt &&
	! grep -q -e reconnecting -e "connection lost" err.txt
'

test_expect_success 'the full queue makes room while the lines are retried: every line confirmed at once, each once in the queue' '
	full_queue $Q.room 0 &&
	seq 10 19 | sed "s/.*/{\"n\":&}/" >in &&
	{ OA_DEBUG=1 amqp-publish -e amq.direct -k $Q.room <in 2>err.txt & pid=$!; } &&
	wait_for "grep -q \"10 lines nacked\" err.txt" 10 "a round of 10 nacks" &&
	rabbitmqctl set_policy -p / $Q.room "^$(echo $Q.room | sed "s/[.]/\\\\./g")\$" \
		"{\"max-length\":100,\"overflow\":\"reject-publish\"}" --apply-to queues >/dev/null &&
	t0=$EPOCHREALTIME &&
	{ wait $pid; rc=$?; } ; expect_eq 0 "$rc" "exit status" &&
	took=$(awk -v s="$t0" -v e="$EPOCHREALTIME" "BEGIN { print e - s }") &&
	say "confirmed $took s after the room was made" &&
	awk -v t="$took" "BEGIN { exit !(t < 4) }" || fail "took $took s" &&
	! grep -q -e "refused it" -e reconnecting err.txt &&
	wait_depth $Q.room 10 &&
	amqp-consume -q $Q.room --save got --idle-exit 1 &&
	expect_eq "10 11 12 13 14 15 16 17 18 19" "$(jq .n got | sort -n | xargs)" "each line once"
'

# Each line longer than any confirmed goes out alone, once the one before it
# is confirmed: 8000 lines, each a byte longer, make one batch of a few
# seconds with confirms all along. Its connection is lost twice, the second
# time more than --patience after the first: confirms came in between, so
# the patience counts afresh, and the publisher goes on.
test_expect_success 'a batch losing its connection twice, --patience apart, with confirms between: exit 0, every line in the queue' '
	# 64 MB in one batch: long enough, on a faster machine too, to be lost twice
	awk "BEGIN { p = \"\"; for (i = 1; i <= 8000; i++) { p = p \"xx\"; printf \"{\\\"n\\\":%d,\\\"p\\\":\\\"%s\\\"}\\n\", i, p } }" >in &&
	{ amqp-publish -q $Q.twice --batch 8000 --patience 2 <in 2>err.txt & pid=$!; } &&
	on_exit "kill $pid" &&
	wait_for "[ \"\$(queue_depth $Q.twice)\" -gt 0 ]" 20 "the first lines" &&
	rabbitmqctl close_all_connections "test: first loss" >/dev/null &&
	t1=$EPOCHREALTIME &&
	wait_for "grep -q \"connected again\" err.txt" 10 "the first reconnection" &&
	sleep 2.5 &&
	kill -0 $pid || fail "the batch was over before the second loss" &&
	rabbitmqctl close_all_connections "test: second loss" >/dev/null &&
	say "second loss $(awk -v s="$t1" -v e="$EPOCHREALTIME" "BEGIN { print e - s }") s after the first" &&
	{ wait $pid; rc=$?; } ; expect_eq 0 "$rc" "exit status" &&
	expect_eq 2 "$(grep -c "reconnecting to publish" err.txt)" "connections lost in the batch" &&
	amqp-consume -q $Q.twice --save got -p 512 --idle-exit 1 &&
	expect_eq 8000 "$(jq .n got | sort -un | wc -l)" "distinct lines in the queue"
'

# short_heartbeat: new connections get a heartbeat of 1 s (the broker's
# offer is lower than MQ_HEARTBEAT), so that two heartbeat periods, after
# which rabbitmq-c looks at what came in, pass in seconds; undone on exit
short_heartbeat() {
	old=$(rabbitmqctl eval "application:get_env(rabbit, heartbeat).") &&
	case $old in
	"{ok,"*) on_exit rabbitmqctl eval "application:set_env(rabbit, heartbeat, ${old#\{ok,}." ;;
	*) on_exit rabbitmqctl eval "application:unset_env(rabbit, heartbeat)." ;;
	esac &&
	rabbitmqctl eval "application:set_env(rabbit, heartbeat, 1)." >/dev/null
}

# A publish that cannot be sent for two heartbeat periods has rabbitmq-c read
# what came in meanwhile and queue it, heartbeats included: those were taken
# for a lost connection, and every unconfirmed line was published again.
test_expect_success 'a publish blocked (disk alarm) over two heartbeats: the queued heartbeats are skipped, no reconnect, each line once' '
	short_heartbeat &&
	pad=$(head -c 100000 /dev/zero | tr "\0" x) &&
	for i in $(seq 1 200); do printf "{\"n\":%d,\"pad\":\"%s\"}\n" $((1000 + i)) "$pad"; done >big &&
	on_exit "rabbitmqctl eval \"rabbit_alarm:clear_alarm({resource_limit, disk, node()}).\"" &&
	{ { printf "{\"n\":1000,\"pad\":\"%s\"}\n" "$pad" &&
	    wait_depth $Q.blocked 1 &&
	    rabbitmqctl eval "rabbit_alarm:set_alarm({{resource_limit, disk, node()}, []})." >/dev/null &&
	    touch alarm && cat big; } | amqp-publish -q $Q.blocked --patience 60 2>err.txt & pid=$!; } &&
	wait_for "test -e alarm" 20 "the disk alarm" &&
	sleep 6 &&
	rabbitmqctl eval "rabbit_alarm:clear_alarm({resource_limit, disk, node()})." >/dev/null &&
	{ wait $pid; rc=$?; } ; expect_eq 0 "$rc" "exit status" &&
	! grep . err.txt &&
	wait_depth $Q.blocked 201
'

test_expect_success 'idle for over two heartbeats between batches: the publisher and the consumer keep their connections' '
	short_heartbeat &&
	mkfifo lines &&
	{ OA_DEBUG=1 amqp-publish -q $Q.idle <lines 2>pub.err & pub=$!; } &&
	exec 8>lines &&
	{ OA_DEBUG=1 amqp-consume -q $Q.idle --idle-exit 12 -- jq -c --unbuffered ". + {status: \"success\"}" >got 2>con.err & con=$!; } &&
	on_exit "kill $pub $con" &&
	echo "{\"n\":1}" >&8 &&
	wait_for "[ \$(lines got) = 1 ]" 10 "the first line consumed" &&
	sleep 4 &&
	echo "{\"n\":2}" >&8 &&
	wait_for "[ \$(lines got) = 2 ]" 10 "the second line consumed" &&
	sleep 4 &&
	echo "{\"n\":3}" >&8 && exec 8>&- &&
	{ wait $pub; rc=$?; } ; expect_eq 0 "$rc" "publisher exit status" &&
	wait_for "[ \$(lines got) = 3 ]" 10 "the third line consumed" &&
	{ wait $con; rc=$?; } ; expect_eq 0 "$rc" "consumer exit status" &&
	expect_eq "1 2 3" "$(jq .n got | xargs)" "consumed" &&
	! grep -v ": debug: " pub.err &&
	! grep -i -e "frame type" -e "connection lost" -e "connected again" -e heartbeat con.err
'

test_done
