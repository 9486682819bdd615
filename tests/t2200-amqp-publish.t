#!/usr/bin/env bash
# amqp-publish puts every valid line in the queue, confirmed, and survives a broker restart.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

test_expect_success 'every input line becomes one message, unchanged, and exit is 0' '
	seq 1 300 | sed "s/.*/{\"n\":&,\"sku\":\"SKU-&\"}/" >in &&
	amqp-publish -q $Q.a <in 2>err.txt && test ! -s err.txt &&
	drain $Q.a >got &&
	expect_eq 300 "$(lines got)" "messages" &&
	expect_eq "{\"n\":7,\"sku\":\"SKU-7\",\"status\":\"success\"}" "$(sed -n 7p got)" "7th message"
'

test_expect_success 'a 300 kB line is published whole, not split' '
	head -c 300000 /dev/zero | tr "\0" x | sed "s/.*/{\"big\":\"&\"}/" >in &&
	amqp-publish -q $Q.big <in &&
	amqp-consume -q $Q.big --idle-exit 1 -- jq -c --unbuffered "{len: (.big | length)}" >got &&
	expect_eq "{\"len\":300000}" "$(cat got)"
'

test_expect_success 'malformed lines are reported by number and the valid ones are still published' '
	printf "%s\n" "{\"n\":1}" "{\"n\":" "[1,2]" "{\"n\":4}" "" "not json" "{\"n\":7}" >in &&
	test_expect_code 65 amqp-publish -q $Q.bad <in 2>err.txt &&
	expect_grep "^amqp-publish: line 2: " err.txt &&
	expect_grep "^amqp-publish: line 3: not a JSON object" err.txt &&
	expect_grep "^amqp-publish: line 6: " err.txt &&
	expect_eq 3 "$(lines err.txt)" "error lines" &&
	drain $Q.bad >got && expect_eq "1 4 7" "$(jq -r .n got | xargs)" "published"
'

test_expect_success 'the queue is declared durable, quorum, with its dead-letter queue' '
	echo "{\"n\":1}" | amqp-publish -q $Q.topo --max-deliveries 3 &&
	rabbitmqctl list_queues -q --no-table-headers name durable type arguments >queues &&
	grep -q "^$Q.topo	true	quorum	.*x-delivery-limit\",2}.*x-dead-letter-routing-key\",\"$Q.topo.dead\"" queues &&
	grep -q "^$Q.topo.dead	true	quorum" queues
'

test_expect_success 'published messages survive a broker restart' '
	seq 1 50 | sed "s/.*/{\"n\":&}/" | amqp-publish -q $Q.keep &&
	restart_rabbitmq &&
	drain $Q.keep >got && expect_eq 50 "$(lines got)" "messages after restart"
'

test_expect_success 'a broker restart while publishing loses no line' '
	# 500 lines, then the broker stops; the other 1500 come while it is away
	{ for i in $(seq 1 2000); do
		echo "{\"n\":$i}"
		[ $i = 500 ] && touch half && { wait_for "test -e stopped" 60 "the broker to stop" || exit 1; }
	  done | (amqp-publish -q $Q.restart --patience 30 2>err.txt; echo $? >rc) & } && publisher=$! &&
	wait_for "test -e half" 20 "500 lines written" &&
	stop_rabbitmq && touch stopped && start_rabbitmq &&
	wait $publisher &&
	drain $Q.restart >got &&
	distinct=$(jq .n got | sort -un | wc -l) &&
	case $(cat rc) in
	0) expect_eq 2000 "$distinct" "distinct lines in the queue" ;;
	69) confirmed=$(sed -n "s/.* \([0-9]*\) lines were confirmed.*/\1/p" err.txt) &&
	    test "$confirmed" -le "$distinct" ;;
	*) fail "amqp-publish exited $(cat rc)" ;;
	esac
'

test_expect_success 'a broker restart in the middle of a steady stream: every line arrives' '
	# a chunk every 0.1 s (the pace is the scenario); after 10 chunks the
	# broker stops, and the other 30 come while it is away or starting
	{ for i in $(seq 0 39); do
		seq $((i * 500 + 1)) $((i * 500 + 500)) | sed "s/.*/{\"n\":&}/"; sleep 0.1
		[ $i = 9 ] && touch half && { wait_for "test -e stopped" 60 "the broker to stop" || exit 1; }
	  done | (amqp-publish -q $Q.steady 2>err.txt; echo $? >rc) & } && publisher=$! &&
	wait_for "test -e half" 20 "10 chunks written" &&
	stop_rabbitmq && touch stopped && start_rabbitmq &&
	wait $publisher &&
	expect_eq 0 "$(cat rc)" "exit status" &&
	expect_grep "reconnecting to publish\|connected again" err.txt &&
	drain $Q.steady -p 512 >got &&
	expect_eq 20000 "$(jq .n got | sort -un | wc -l)" "distinct lines"
'

test_expect_success 'an unreachable broker: exit 69, saying nothing was confirmed, no password shown' '
	echo "{\"n\":1}" >in &&
	RABBITMQ_URL=amqp://user:secret@127.0.0.1:1/ \
		test_expect_code 69 amqp-publish -q $Q.x --patience 1 <in 2>err.txt &&
	expect_grep "amqp://user:\*\*\*@127.0.0.1:1/" err.txt && ! grep -q secret err.txt &&
	expect_grep "0 lines were confirmed" err.txt
'

test_expect_success 'a wrong password is refused at once with exit 69' '
	start=$(date +%s) &&
	RABBITMQ_URL=$(echo "$RABBITMQ_URL" | sed "s/guest@/wrong@/") \
		test_expect_code 69 amqp-publish -q $Q.x --patience 30 </dev/null 2>err.txt &&
	expect_grep "ACCESS_REFUSED" err.txt && ! grep -q wrong err.txt &&
	# at once: well before the 30 s of --patience
	test $(($(date +%s) - start)) -lt 10 || fail "took $(($(date +%s) - start)) s"
'

test_expect_success '-e -k publishes through an existing exchange and its binding' '
	echo "{\"n\":0}" | amqp-publish -q $Q.ex && drain $Q.ex >/dev/null &&
	bind_queue amq.direct $Q.key $Q.ex &&
	seq 1 5 | sed "s/.*/{\"n\":&}/" | amqp-publish -e amq.direct -k $Q.key &&
	drain $Q.ex >got && expect_eq "1 2 3 4 5" "$(jq -r .n got | xargs)"
'

test_expect_success '-e with a key nothing is bound to: exit 69, the lines are said returned' '
	echo "{\"n\":1}" >in &&
	test_expect_code 69 amqp-publish -e amq.direct -k $Q.nobody <in 2>err.txt &&
	expect_grep "returned" err.txt
'

test_expect_success '-e with an exchange that does not exist: exit 69 naming it' '
	echo "{\"n\":1}" >in &&
	test_expect_code 69 amqp-publish -e $Q.nosuch -k k <in 2>err.txt &&
	expect_grep "exchange \"$Q.nosuch\" does not exist" err.txt
'

test_option_errors amqp-publish <<\EOF
--bogus              | '--bogus'
-q a -e b -k c       | -q and -e exclude each other
-e b                 | -e EXCHANGE and -k ROUTING_KEY go together
-k c                 | -e EXCHANGE and -k ROUTING_KEY go together
--batch 0            | option --batch
--max-deliveries x   | option --max-deliveries
--patience -1        | option --patience
-q a extra           | unexpected argument "extra"
-q ""                | option -q: a queue name
EOF

test_expect_success 'amqp-publish --help prints the usage on stdout and exits 0' '
	amqp-publish --help >out.txt && expect_grep "^usage: amqp-publish" out.txt
'

test_done
