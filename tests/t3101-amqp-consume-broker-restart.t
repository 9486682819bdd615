#!/usr/bin/env bash
# amqp-consume rides out a broker restart: it reconnects, and nothing is lost or acked twice.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

test_expect_success 'a broker restart while consuming: every message answered, none left, no stale ack' '
	seq 1 600 | sed "s/.*/{\"n\":&}/" | amqp-publish -q $Q.a &&
	# a child that answers 100 messages, then holds the next until the broker
	# has stopped: the stop lands mid-run, with deliveries unacked
	cat >child <<-\EOF &&
	#!/bin/sh
	n=0
	while read -r line; do
		n=$((n + 1))
		if [ $n = 100 ]; then
			touch half
			while [ ! -e stopped ]; do sleep 0.05; done
		fi
		sleep 0.005; printf "%s\n" "${line%\}},\"status\":\"success\"}"
	done
	EOF
	chmod +x child &&
	{ amqp-consume -q $Q.a -p 50 --idle-exit 2 -- ./child >out.txt 2>err.txt & } && pid=$! &&
	wait_for "test -e half" 30 "100 messages answered" &&
	stop_rabbitmq && touch stopped && start_rabbitmq &&
	test_expect_code 0 wait $pid &&
	expect_grep "reconnecting" err.txt &&
	expect_grep "connected again" err.txt &&
	! grep -qi "unknown delivery tag" err.txt &&
	expect_eq 600 "$(jq .n out.txt | sort -un | wc -l)" "distinct answers" &&
	drain $Q.a >left && expect_eq 0 "$(lines left)" "messages left"
'

test_expect_success 'the broker away longer than --patience: exit 69 saying so' '
	echo "{\"n\":1}" | amqp-publish -q $Q.p &&
	stop_rabbitmq &&
	{ test_expect_code 69 amqp-consume -q $Q.p --patience 1 -- cat >out.txt 2>err.txt || rc=$?; } &&
	start_rabbitmq && test -z "${rc:-}" &&
	expect_grep "unavailable for 1 s" err.txt && test ! -s out.txt &&
	drain $Q.p >left && expect_eq 1 "$(lines left)" "messages still queued"
'

test_expect_success 'started while the broker is down, amqp-consume waits for it and then works' '
	echo "{\"n\":1}" | amqp-publish -q $Q.w &&
	stop_rabbitmq &&
	{ amqp-consume -q $Q.w --idle-exit 1 -- jq -c --unbuffered ". + {status: \"success\"}" >out.txt 2>err.txt & } && pid=$! &&
	wait_for "grep -q unreachable err.txt" 20 "amqp-consume to find the broker away" &&
	start_rabbitmq &&
	test_expect_code 0 wait $pid && expect_eq 1 "$(jq .n out.txt)" &&
	expect_grep "connected again" err.txt
'

test_done
