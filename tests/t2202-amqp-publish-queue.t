#!/usr/bin/env bash
# amqp-publish tells a broker that is up but a queue that does not work from a lost connection, names the queue, exits 69.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

test_expect_success 'a dead-letter queue that exists with other arguments (declare refused): 69 at once, naming it and what to do' '
	echo "{\"n\":0}" | amqp-publish -q $Q.r.dead &&
	echo "{\"n\":1}" >in &&
	t0=$EPOCHREALTIME &&
	test_expect_code 69 amqp-publish -q $Q.r --patience 30 <in 2>err.txt &&
	awk -v s="$t0" -v e="$EPOCHREALTIME" "BEGIN { exit !(e - s < 10) }" ||
		fail "not at once: $(head -c 400 err.txt)" &&
	expect_grep "is up, but queue \"$Q.r\" does not work: queue $Q.r.dead exists with other arguments" err.txt &&
	expect_grep "delete it (rabbitmqctl delete_queue $Q.r.dead)" err.txt &&
	expect_grep "0 lines were confirmed" err.txt &&
	! grep -q -e "connection" -e "unavailable" -e "unreachable" err.txt
'

test_expect_success 'a queue locked by another connection (declare refused for now): said at once, 69 after --patience, naming it' '
	owner=oa_owner_$$ &&
	on_exit "rabbitmqctl eval \"$owner ! stop.\"" &&
	rabbitmqctl eval "P = spawn(fun() -> receive stop -> ok end end), register($owner, P),
		rabbit_amqqueue:declare(rabbit_misc:r(<<\"/\">>, queue, <<\"$Q.locked\">>), false, false, [], P, <<\"guest\">>)." >/dev/null &&
	echo "{\"n\":1}" >in &&
	t0=$EPOCHREALTIME &&
	test_expect_code 69 amqp-publish -q $Q.locked --patience 3 <in 2>err.txt &&
	awk -v s="$t0" -v e="$EPOCHREALTIME" "BEGIN { exit !(e - s >= 3 && e - s < 15) }" ||
		fail "gave up after $(awk -v s="$t0" -v e="$EPOCHREALTIME" "BEGIN { print e - s }") s, not after 3" &&
	expect_grep "is up, but queue \"$Q.locked\" does not work (declaring the queue: RESOURCE_LOCKED.*); trying again for 3 s" err.txt &&
	expect_grep "is up, but queue \"$Q.locked\" does not work: declaring the queue: RESOURCE_LOCKED.*; 0 lines were confirmed" err.txt &&
	! grep -q -e "connection lost" -e "unavailable" -e "unreachable" err.txt &&
	rabbitmqctl eval "$owner ! stop." >/dev/null &&
	wait_for "! rabbitmqctl list_queues -q --no-table-headers name | grep -qxF $Q.locked" 10 "the locked queue to go with its owner" &&
	amqp-publish -q $Q.locked <in && wait_depth $Q.locked 1
'

test_expect_success 'a broker that takes no message (disk alarm): no confirm arrives; 69 after --patience, the broker up, the queue named' '
	echo "{\"n\":0}" | amqp-publish -q $Q.alarm &&
	on_exit "rabbitmqctl eval \"rabbit_alarm:clear_alarm({resource_limit, disk, node()}).\"" &&
	rabbitmqctl eval "rabbit_alarm:set_alarm({{resource_limit, disk, node()}, []})." >/dev/null &&
	seq 1 5 | sed "s/.*/{\"n\":&}/" >in &&
	t0=$EPOCHREALTIME &&
	test_expect_code 69 timeout 60 amqp-publish -q $Q.alarm --patience 4 <in 2>err.txt &&
	took=$(awk -v s="$t0" -v e="$EPOCHREALTIME" "BEGIN { print e - s }") &&
	awk -v t="$took" "BEGIN { exit !(t >= 4 && t < 15) }" || fail "gave up after $took s, not after 4" &&
	expect_grep "is up, but queue \"$Q.alarm\" does not work (published lines unconfirmed for [0-9]* s (1 awaiting), though the connection is alive); publishing 5 unconfirmed lines again on a new connection" err.txt &&
	expect_grep "is up, but queue \"$Q.alarm\" does not work: published lines unconfirmed for [0-9]* s.*; 0 lines were confirmed; line 1 and the lines after it were not" err.txt &&
	! grep -q -e "connection lost" -e "keeps failing" -e "unavailable" err.txt &&
	rabbitmqctl eval "rabbit_alarm:clear_alarm({resource_limit, disk, node()})." >/dev/null &&
	echo "{\"n\":6}" | amqp-publish -q $Q.alarm --patience 10
'

test_done
