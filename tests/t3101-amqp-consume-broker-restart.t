#!/usr/bin/env bash
# amqp-consume rides out a broker restart: it reconnects, and nothing is lost or acked twice.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

test_expect_success 'a broker restart while consuming: every message answered, none left, no stale ack' '
	seq 1 600 | sed "s/.*/{\"n\":&}/" | amqp-publish -q $Q.a &&
	cat >child <<-\EOF &&
	#!/bin/sh
	while read -r line; do sleep 0.005; printf "%s\n" "${line%\}},\"status\":\"success\"}"; done
	EOF
	chmod +x child
	(sleep 1; restart_rabbitmq) &
	restarter=$!
	amqp-consume -q $Q.a -p 50 --idle-exit 2 -- ./child >out.txt 2>err.txt
	rc=$?
	wait $restarter
	expect_eq 0 $rc "exit status" &&
	expect_grep "reconnecting" err.txt &&
	expect_grep "connected again" err.txt &&
	! grep -qi "unknown delivery tag" err.txt &&
	expect_eq 600 "$(jq .n out.txt | sort -un | wc -l)" "distinct answers" &&
	drain $Q.a >left && expect_eq 0 "$(lines left)" "messages left"
'

test_expect_code 69 'the broker away longer than --patience: exit 69 saying so' '
	echo "{\"n\":1}" | amqp-publish -q $Q.p &&
	"$TOP/scripts/services" stop rabbitmq >/dev/null 2>&1
	amqp-consume -q $Q.p --patience 1 -- cat >out.txt 2>err.txt; rc=$?
	"$TOP/scripts/services" start rabbitmq >/dev/null &&
	expect_grep "unavailable for 1 s" err.txt && test ! -s out.txt &&
	drain $Q.p >left && expect_eq 1 "$(lines left)" "messages still queued" &&
	exit $rc
'

test_expect_success 'started while the broker is down, amqp-consume waits for it and then works' '
	echo "{\"n\":1}" | amqp-publish -q $Q.w &&
	"$TOP/scripts/services" stop rabbitmq >/dev/null 2>&1
	(sleep 1; "$TOP/scripts/services" start rabbitmq >/dev/null) &
	starter=$!
	amqp-consume -q $Q.w --idle-exit 1 -- jq -c --unbuffered ". + {status: \"success\"}" >out.txt 2>err.txt; rc=$?
	wait $starter
	expect_eq 0 $rc "exit status" && expect_eq 1 "$(jq .n out.txt)"
'

test_done
