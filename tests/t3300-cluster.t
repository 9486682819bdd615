#!/usr/bin/env bash
# Several nodes: RABBITMQ_URL lists a 3-node cluster; a node stopped or killed under the publisher or the worker loses nothing.
. "$(dirname "$0")/lib.sh"

# A cluster of this test's own (about 30 s to start), beside the suite's
# PostgreSQL; RABBITMQ_URL lists its three nodes.
CLUSTER=$TRASH/cluster
on_exit "OA_VAR='$CLUSTER' '$TOP/scripts/services' destroy >/dev/null 2>&1"
OA_VAR=$CLUSTER "$TOP/scripts/services" start cluster >/dev/null 2>"$TRASH/cluster.err" ||
	{ echo "Bail out! the 3-node RabbitMQ cluster did not start: $(tail -n 5 "$TRASH/cluster.err")"; exit 1; }
RABBITMQ_URL=$(. "$CLUSTER/env" && echo "$RABBITMQ_URL")
export RABBITMQ_URL
read -r -a PORTS <<<"$(echo "$RABBITMQ_URL" | grep -o ':[0-9]*/' | tr -d ':/' | xargs)"
node() { OA_VAR=$CLUSTER "$TOP/scripts/services" "$1" "rabbitmq$2" >/dev/null; }
cluster_ctl() { OA_VAR=$CLUSTER OA_RMQ_NODE=$1 "$TOP/scripts/services" rabbitmqctl "${@:2}"; }
# node_of PID: the cluster node (1-3) the process is connected to, if any
node_of() {
	local p i
	for p in $(ss -Htnp state established 2>/dev/null | grep "pid=$1," | awk '{ print $4 }' | sed 's/.*://'); do
		for i in 0 1 2; do [ "$p" = "${PORTS[$i]}" ] && { echo $((i + 1)); return; }; done
	done
	return 1
}
# depth Q [NODE]: messages in Q as a running node reports it (quorum queues report each second)
depth() { cluster_ctl "${2:-1}" list_queues -q name messages 2>/dev/null | awk -v q="$1" '$1 == q { print $2 }'; }
all_up() {	# every node running again (a test leaves the node it stopped down)
	local i
	for i in 1 2 3; do node start $i || return 1; done
}

Q=$QUEUE_PREFIX.work
N=20000
seq 1 $N | sed 's/.*/{"order_id":&}/' >"$TRASH/lines"

test_expect_success 'topology: the work queue is a quorum queue with its 3 members online' '
	head -n 1 lines | amqp-publish -q "$Q" &&
	cluster_ctl 1 list_queues --formatter json name type members online 2>/dev/null |
		jq -c --arg q "$Q" ".[] | select(.name == \$q) | [.type, (.members | length), (.online | length)]" >topo &&
	expect_eq "[\"quorum\",3,3]" "$(cat topo)" "type, members, online" &&
	cluster_ctl 1 purge_queue "$Q" >/dev/null
'

test_expect_success 'a node that does not answer is skipped, its password never shown' '
	head -n 3 lines >lines.3 && : >err &&
	for i in 1 2 3 4 5 6; do
		RABBITMQ_URL="amqp://guest:s3cret@127.0.0.1:1/,$RABBITMQ_URL" amqp-publish -q "$Q" <lines.3 2>>err || exit 1
	done &&
	RABBITMQ_URL="amqp://guest:s3cret@127.0.0.1:1/,amqp://guest:s3cret@127.0.0.1:2/" \
		test_expect_code 69 amqp-publish -q "$Q" --patience 2 <lines.3 2>dead.err &&
	expect_grep "no node answered" dead.err && expect_grep "127.0.0.1:2" dead.err &&
	! grep -q s3cret err dead.err || fail "a password was printed: $(grep s3cret err dead.err | head -n 1)" &&
	wait_for "[ \"\$(depth $Q)\" = 18 ]" 10 "18 messages in $Q" &&
	cluster_ctl 1 purge_queue "$Q" >/dev/null
'

test_expect_success 'publish failover: the node amqp-publish is on is stopped at a quarter and left down; every line is queued once' '
	all_up && rm -f in && mkfifo in &&
	{ amqp-publish -q "$Q" <in >pub.out 2>pub.err & } && pub=$! &&
	exec 8>in &&
	head -n $((N / 4)) lines >&8 &&
	wait_for "n=\$(node_of $pub)" 10 "amqp-publish to connect" &&
	n=$(node_of $pub) && say "amqp-publish is on node $n" &&
	other=$(( n % 3 + 1 )) &&
	wait_for "[ \"\$(depth $Q $other)\" = $((N / 4)) ]" 30 "the first quarter queued" &&
	node stop "$n" &&
	tail -n +$((N / 4 + 1)) lines >&8 && exec 8>&- &&
	wait $pub &&
	expect_grep "connected again" pub.err &&
	wait_for "[ \"\$(depth $Q $other)\" = $N ]" 20 "$N messages in $Q" ||
		fail "queue $Q holds $(depth $Q $other) messages, not $N; amqp-publish said: $(cat pub.err)" &&
	cluster_ctl $other purge_queue "$Q" >/dev/null
'

# orders FROM TO: pending orders of one unit for acme, reserved as order-place would
orders() {
	sql "INSERT INTO orders (id, sku, quantity, vendor) SELECT g, 'A-1', 1, 'acme' FROM generate_series($1, $2) g;
	     INSERT INTO vendor_stock (vendor, sku, quantity, reserved) VALUES ('acme', 'A-1', 1000000, $2 - $1 + 1)
	     ON CONFLICT (sku, vendor) DO UPDATE SET reserved = vendor_stock.reserved + $2 - $1 + 1"
}
echo '[{"sku":"A-1","quantity":1000000}]' >"$TRASH/acme.json"
start_vendor_mock --vendor acme="$TRASH/acme.json" --latency 20 || exit 1
W=4000

test_expect_success 'worker failover: the node amqp-consume is on is killed (-9) mid-run and left down; every order succeeds once' '
	all_up && orders 1 $W && seq 1 $W | sed "s/.*/{\"order_id\":&}/" | amqp-publish -q "$Q.w" &&
	{ amqp-consume -q "$Q.w" -p 512 --match order_id -- fulfil >w.out 2>w.err & } && w=$! &&
	on_exit "kill $w 2>/dev/null" &&
	wait_for "n=\$(node_of $w)" 10 "amqp-consume to connect" &&
	n=$(node_of $w) && say "amqp-consume is on node $n" &&
	wait_for "[ \$(sql \"SELECT count(*) FROM orders WHERE status <> '"'pending'"'\") -ge $((W / 4)) ]" 60 "a quarter of the orders ended" &&
	t0=$EPOCHREALTIME && node kill "$n" &&
	wait_for "m=\$(node_of $w) && [ \$m != $n ]" 15 "amqp-consume on another node" &&
	reconnect=$(awk -v a="$t0" -v b="$EPOCHREALTIME" "BEGIN { printf \"%.1f\", b - a }") &&
	say "amqp-consume reconnected to node $(node_of $w) in $reconnect s" &&
	awk -v r="$reconnect" "BEGIN { exit !(r <= 10) }" || fail "reconnected after $reconnect s" &&
	wait_for "[ \$(sql \"SELECT count(*) FROM orders WHERE status = '"'success'"'\") = $W ]" 90 "every order to succeed" ||
		fail "$(sql "SELECT status, count(*) FROM orders GROUP BY 1" | xargs); amqp-consume said: $(tail -n 5 w.err)" &&
	kill -TERM $w && wait $w &&
	expect_eq $W "$(curl -s "$VENDOR_BASE_URL/_stats" | jq .vendors.acme.orders_accepted)" "orders the vendor accepted (each once)" &&
	expect_eq "$W" "$(sql "SELECT reserved FROM vendor_stock WHERE vendor = '"'acme'"'")" "reserved units"
'

test_expect_success 'the queue leader is killed (-9) while amqp-consume is on the other nodes: every message is answered, none lost' '
	all_up && seq 1 5000 | sed "s/.*/{\"order_id\":&}/" | amqp-publish -q "$Q.l" &&
	leader=$(cluster_ctl 1 list_queues -q name leader 2>/dev/null | awk -v q="$Q.l" "\$1 == q { print \$2 }") &&
	l=$(for i in 1 2 3; do [ "oa${PORTS[$((i - 1))]}@localhost" != "$leader" ] || echo $i; done) &&
	test -n "$l" &&
	say "the leader of $Q.l is node $l" &&
	others=$(for i in 1 2 3; do [ $i = $l ] || echo "amqp://guest:guest@127.0.0.1:${PORTS[$((i - 1))]}/"; done | paste -sd,) &&
	{ RABBITMQ_URL=$others amqp-consume -q "$Q.l" -p 64 --match order_id -- \
		jq -c --unbuffered "{order_id, status: \"success\"}" >l.out 2>l.err & } && c=$! &&
	on_exit "kill $c 2>/dev/null" &&
	wait_for "[ \$(lines l.out) -ge 1000 ]" 30 "a fifth of the messages answered" &&
	node kill "$l" &&
	wait_for "[ \$(sort -u l.out | wc -l) = 5000 ]" 60 "every message answered" ||
		fail "$(sort -u l.out | wc -l) distinct messages answered; amqp-consume said: $(tail -n 3 l.err)" &&
	kill -TERM $c && wait $c
'

test_done
