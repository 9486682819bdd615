#!/usr/bin/env bash
# amqp-consume --metrics: a Prometheus textfile whose counters say what happened to the messages.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders
# metrics FILE: its samples as parsed by Prometheus' own parser (Debian's
# python3-prometheus-client), one "name{label=value} value" a line; the queue
# label, checked to be $MQ on every sample, left out
metrics() {
	/usr/bin/python3 - "$1" "$MQ" <<-\EOF
	import sys
	from prometheus_client.parser import text_string_to_metric_families
	for family in text_string_to_metric_families(open(sys.argv[1]).read()):
	    for s in family.samples:
	        assert s.labels.pop("queue") == sys.argv[2], s
	        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
	        print("%s%s %g" % (s.name, "{%s}" % labels if labels else "", s.value))
	EOF
}
# metric FILE NAME: one sample's value
metric() { metrics "$1" | awk -v n="$2" '$1 == n { print $2 }'; }

test_expect_success 'counters after a run: success, retry, defer, dead and an invalid message, each counted once' '
	MQ=$Q.c &&
	publish_n $Q.c 1 30 &&
	publish_raw $Q.c "not json" &&
	cat >child <<-\EOF &&
	#!/bin/sh
	# 10, 20, 30: dead; 3, 6, 9: retry once; 5: defer once; the others (and the second tries) success
	while read -r line; do
		n=${line#*:} n=${n%\}}
		s=success
		case $n in
		10 | 20 | 30) s=dead ;;
		3 | 6 | 9) [ -e tried.$n ] || { touch tried.$n; s=retry; } ;;
		5) [ -e tried.$n ] || { touch tried.$n; s=defer; } ;;
		esac
		echo "{\"n\":$n,\"status\":\"$s\"}"
	done
	EOF
	chmod +x child &&
	amqp-consume -q $Q.c --retry-delay 0.2 --idle-exit 1.5 --metrics m.prom -- ./child >out.txt 2>err.txt &&
	expect_eq 34 "$(lines out.txt)" "answers (30, and 4 second tries)" &&
	metrics m.prom >got &&
	cat >want <<-\EOF &&
	amqp_consume_messages_acked_total 27
	amqp_consume_messages_retried_total 3
	amqp_consume_messages_deferred_total 1
	amqp_consume_messages_dead_lettered_total{reason=answer} 3
	amqp_consume_messages_dead_lettered_total{reason=invalid} 1
	amqp_consume_messages_returned_total 0
	amqp_consume_messages_parked_total 0
	amqp_consume_messages_blamed_total 0
	amqp_consume_child_restarts_total 0
	amqp_consume_child_deaths_total{cause=exited} 0
	amqp_consume_child_deaths_total{cause=signalled} 0
	amqp_consume_child_deaths_total{cause=broken} 0
	amqp_consume_messages_held 0
	amqp_consume_messages_in_child 0
	amqp_consume_broker_connected 0
	EOF
	grep -v seconds_since got >got.counts &&
	test_cmp want got.counts &&
	since=$(metric m.prom amqp_consume_seconds_since_last_answer) &&
	{ awk -v s="$since" "BEGIN { exit !(s >= 1 && s < 5) }" || fail "seconds since the last answer: $since"; } &&
	expect_grep "^# HELP amqp_consume_messages_acked_total " m.prom &&
	expect_grep "^# TYPE amqp_consume_messages_held gauge" m.prom &&
	test ! -e m.prom.tmp &&
	wait_depth $Q.c.dead 4 && wait_depth $Q.c 0
'

test_expect_success 'while running: the file is rewritten every few seconds, gauges show the messages a silent child holds; child deaths and restarts counted' '
	MQ=$Q.g &&
	publish_n $Q.g 1 5 &&
	cat >child <<-\EOF &&
	#!/bin/sh
	# the first one dies at once (having read nothing: no message is blamed); the next holds what it is given
	[ -e started ] || { touch started; exit 3; }
	while read -r line; do :; done
	EOF
	chmod +x child &&
	{ amqp-consume -q $Q.g --grace 0.5 --metrics m.prom -- ./child >out.txt 2>err.txt & pid=$!; } &&
	wait_for "test -e m.prom && [ \"\$(metric m.prom amqp_consume_messages_in_child)\" = 5 ]" 20 "5 messages in the child in m.prom" &&
	expect_eq 5 "$(metric m.prom amqp_consume_messages_held)" "held" &&
	expect_eq 1 "$(metric m.prom amqp_consume_broker_connected)" "connected" &&
	expect_eq 1 "$(metric m.prom amqp_consume_child_restarts_total)" "restarts" &&
	expect_eq 1 "$(metric m.prom "amqp_consume_child_deaths_total{cause=exited}")" "deaths" &&
	kill -TERM $pid && test_expect_code 0 wait $pid &&
	expect_eq 0 "$(metric m.prom amqp_consume_broker_connected)" "connected after exit" &&
	expect_eq 0 "$(metric m.prom amqp_consume_messages_acked_total)" "acked" &&
	wait_depth $Q.g 5
'

test_expect_success 'a metrics file that cannot be written: exit 73 at start, no message taken, the child never run' '
	publish_n $Q.no 1 3 &&
	test_expect_code 73 amqp-consume -q $Q.no --idle-exit 1 --metrics no/such/dir/m.prom -- sh -c "touch ran; cat" 2>err.txt &&
	expect_grep "creating no/such/dir/m.prom.tmp" err.txt &&
	test ! -e ran &&
	wait_depth $Q.no 3
'

test_option_errors amqp-consume <<\EOF
--metrics "" -- cat                 | option --metrics
--save x -- cat                     | saving a queue runs no COMMAND
--save x --metrics m.prom           | --metrics is for running a COMMAND
--save x --match n                  | --match is for running a COMMAND
--save ""                           | option --save
EOF

test_done
