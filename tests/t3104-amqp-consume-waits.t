#!/usr/bin/env bash
# amqp-consume says what it waits for, and returns messages before the broker's consumer timeout would.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

test_expect_success 'broker unreachable at start: a line on stderr within 5 s, again every OA_WAIT_REPORT s, exit 69 after --patience' '
	port=$(python3 -c "import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])") &&
	{ RABBITMQ_URL=amqp://guest:guest@127.0.0.1:$port/ OA_WAIT_REPORT=1 \
		amqp-consume -q $Q.none --patience 4 -- cat 2>err.txt & pid=$!; } &&
	wait_for "grep -q \"unreachable: .*waiting for it for 0 s so far\" err.txt" 5 "the first unreachable line" &&
	test_expect_code 69 wait $pid &&
	test "$(grep -c "waiting for it for" err.txt)" -ge 3 &&
	expect_grep "unavailable for 4 s (--patience; unreachable)" err.txt
'

test_expect_success 'a child stopped (SIGSTOP) longer than the broker consumer_timeout: nothing dead-lettered, every message answered' '
	old=$(rabbitmqctl eval "application:get_env(rabbit, consumer_timeout).") &&
	say "consumer_timeout was $old" &&
	case $old in
	"{ok,"*) on_exit rabbitmqctl eval "application:set_env(rabbit, consumer_timeout, ${old#\{ok,}." ;;
	*) on_exit rabbitmqctl eval "application:unset_env(rabbit, consumer_timeout)." ;;
	esac &&
	rabbitmqctl eval "application:set_env(rabbit, consumer_timeout, 5000)." >/dev/null &&
	{ amqp-consume -q $Q.ct --match n -p 50 --consumer-timeout 5 --idle-exit 6 -- jq -c --unbuffered ". + {status: \"success\"}" >out.txt 2>err.txt & pid=$!; } &&
	child=$(for i in $(seq 1 100); do c=$(pgrep -P $pid) && echo "$c" && break; sleep 0.05; done) &&
	test -n "$child" && kill -STOP $child &&
	publish_n $Q.ct 1 20 &&
	wait_for "grep -q \"copied back to $Q.ct before the broker\" err.txt" 10 "messages copied back" &&
	sleep 5 &&
	kill -CONT $child &&
	{ wait $pid; rc=$?; } ; expect_eq 0 "$rc" "exit status" &&
	! grep -q "connection lost" err.txt &&
	expect_eq 20 "$(jq .n out.txt | sort -un | wc -l)" "messages answered" &&
	wait_depth $Q.ct 0 && expect_eq 0 "$(queue_depth $Q.ct.dead)" "dead-lettered"
'

test_done
