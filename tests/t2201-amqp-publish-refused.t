#!/usr/bin/env bash
# amqp-publish and lines the broker refuses: reported by number, 65, every other line once.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

big_line() {	# big_line N BYTES: a JSON line {"n":N,"pad":"xxx..."} of about BYTES bytes
	printf '{"n":%d,"pad":"%s"}\n' "$1" "$(head -c "$2" /dev/zero | tr '\0' x)"
}

test_expect_success 'a line over the broker max_message_size: line 3 reported, the 4 others once, exit 65' '
	old=$(rabbitmqctl eval "application:get_env(rabbit, max_message_size)." |
		sed -n "s/.*{ok,\([0-9]*\)}.*/\1/p") &&
	test -n "$old" &&
	on_exit "rabbitmqctl eval \"application:set_env(rabbit, max_message_size, $old).\"" &&
	rabbitmqctl eval "application:set_env(rabbit, max_message_size, 1024)." >/dev/null &&
	{ echo "{\"n\":1}"; echo "{\"n\":2}"; big_line 3 2000; echo "{\"n\":4}"; echo "{\"n\":5}"; } >in &&
	test_expect_code 65 timeout 60 amqp-publish -q $Q.size --patience 10 <in 2>err.txt &&
	expect_grep "^amqp-publish: line 3: the broker refused it: .*larger than" err.txt &&
	! grep -q "line [1245]:" err.txt &&
	wait_depth $Q.size 4 &&
	drain $Q.size >got &&
	expect_eq "1 2 4 5" "$(jq -r .n got | xargs)" "published, each once" &&
	expect_eq 0 "$(grep -c "reconnecting" err.txt)" "reconnect warnings"
'

test_expect_success 'once the limit is known, more large lines are refused without reconnecting' '
	old=$(rabbitmqctl eval "application:get_env(rabbit, max_message_size)." |
		sed -n "s/.*{ok,\([0-9]*\)}.*/\1/p") &&
	on_exit "rabbitmqctl eval \"application:set_env(rabbit, max_message_size, $old).\"" &&
	rabbitmqctl eval "application:set_env(rabbit, max_message_size, 1024)." >/dev/null &&
	for i in $(seq 1 200); do
		if [ $((i % 20)) = 7 ]; then big_line $i 1500; else echo "{\"n\":$i}"; fi
	done >in &&
	test_expect_code 65 timeout 60 amqp-publish -q $Q.many --patience 10 <in 2>err.txt &&
	expect_eq 10 "$(grep -c "the broker refused it" err.txt)" "refused lines" &&
	expect_grep "^amqp-publish: line 187: the broker refused it" err.txt &&
	wait_depth $Q.many 190 &&
	drain $Q.many -p 256 >got &&
	expect_eq 190 "$(jq .n got | sort -un | wc -l)" "distinct lines" &&
	expect_eq 190 "$(lines got)" "messages"
'

test_expect_success '--max-message-size refuses a longer line before sending it' '
	{ echo "{\"n\":1}"; big_line 2 600; echo "{\"n\":3}"; } >in &&
	test_expect_code 65 amqp-publish -q $Q.opt --max-message-size 512 <in 2>err.txt &&
	expect_grep "^amqp-publish: line 2: the broker refused it: message size 6[0-9][0-9] is larger than the broker.s max size 512" err.txt &&
	wait_depth $Q.opt 2 &&
	drain $Q.opt >got && expect_eq "1 3" "$(jq -r .n got | xargs)" "published"
'

test_done
