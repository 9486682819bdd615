#!/usr/bin/env bash
# The worker as deployed comes back at full speed after a kill of fulfil, and rides out a 90 s database outage.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders
# One vendor at 200 ms a request (issue 18's setting), with stock for everything.
awk 'BEGIN { printf "["; for (i = 1; i <= 5; i++)
	printf "%s{\"sku\":\"A-%d\",\"quantity\":100000000}", (i > 1 ? "," : ""), i; print "]" }' >"$TRASH/acme.json"
start_vendor_mock --vendor acme="$TRASH/acme.json" --latency 200 || exit 1
sql "INSERT INTO vendor_stock (vendor, sku, quantity)
	SELECT 'acme', 'A-' || g, 100000000 FROM generate_series(1, 5) g" >/dev/null || exit 1
# The worker as deployed (scripts/systemd/order-worker.service).
WORKER=(amqp-consume -p 512 --match order_id)

stat() { curl -s "$VENDOR_BASE_URL/_stats" | jq -r --arg f "$1" '.vendors.acme[$f]'; }
# place NAME N: N orders placed and published to $Q.NAME as the pipeline
# would; RANGE_NAME (a condition on orders.id) is where they are
place() {
	awk -v n="$2" 'BEGIN { for (i = 1; i <= n; i++)
		printf "{\"sku\":\"A-%d\",\"quantity\":%d}\n", i % 5 + 1, i % 3 + 1 }' >"$1.req" &&
	order-place <"$1.req" >"$1.placed" &&
	jq -c 'select(.status == "pending")' "$1.placed" >"$1.pending" &&
	expect_eq "$2" "$(lines "$1.pending")" "pending orders placed" &&
	amqp-publish -q "$Q.$1" --batch 1024 <"$1.pending" &&
	echo "id BETWEEN $(jq .order_id "$1.pending" | sort -n | head -n 1) AND $(jq .order_id "$1.pending" | sort -n | tail -n 1)" >"$1.range"
}
ended() { sql "SELECT count(*) FROM orders WHERE $(cat "$1.range") AND status <> 'pending'"; }
# took NAME T0: seconds from T0 ($EPOCHREALTIME) until the last of NAME's orders ended
took() { sql "SELECT round((extract(epoch FROM max(updated_at)) - $2)::numeric, 2) FROM orders WHERE $(cat "$1.range")"; }
# worker NAME: the worker on $Q.NAME in the background; sets pid, output in NAME.out and NAME.err
worker() {
	"${WORKER[@]}" -q "$Q.$1" -- fulfil >"$1.out" 2>"$1.err" &
	pid=$!
	on_exit "kill $pid"
}
# each_once NAME...: every order of these batches success, in the database
# once, accepted once by the vendor, with its units sold and reserved once
each_once() {
	local name where="false"
	for name in "$@"; do where="$where OR $(cat "$name.range")"; done
	expect_eq 0 "$(sql "SELECT count(*) FROM orders WHERE ($where) AND status <> 'success'")" "orders not success" &&
	expect_eq "$(sql "SELECT count(*) FROM orders")" "$(stat orders_accepted)" "orders accepted by the vendor (each once)" &&
	expect_eq "$(sql "SELECT sum(quantity) FROM orders")" "$(stat units_sold)" "units sold" &&
	expect_eq "$(sql "SELECT sum(quantity) FROM orders")" "$(sql "SELECT sum(reserved) FROM vendor_stock")" "units reserved"
}

N=6000
test_expect_success "SIGKILL of fulfil mid-run, vendor at 200 ms: the whole drain of $N orders takes no more than about 1.5x the same drain without the kill" '
	place calm $N && place kill $N &&
	t0=$EPOCHREALTIME && worker calm &&
	wait_for "[ \$(ended calm) = $N ]" 60 "the undisturbed drain" &&
	calm=$(took calm $t0) &&
	kill -TERM $pid && wait $pid &&

	t0=$EPOCHREALTIME && worker kill &&
	wait_for "[ \$(ended kill) -ge $((N / 4)) ]" 60 "a quarter of the orders to end" &&
	child=$(pgrep -P $pid | head -n 1) && kill -KILL $child &&
	at=$(ended kill) && test "$at" -lt $N || fail "the drain was over before the kill" &&
	wait_for "[ \$(ended kill) = $N ]" 60 "the drain after the kill" &&
	killed=$(took kill $t0) &&
	kill -TERM $pid && wait $pid &&
	expect_grep "fulfil was killed by signal 9 while answering" kill.err &&
	echo "$N orders, vendor at 200 ms: $calm s undisturbed, $killed s with fulfil killed at $at ended" >said &&
	# The issue asks 1.5x, and make bench measures it on 20,000 orders
	# (design.md). Here the drain is a few seconds on 2 shared cores, so a
	# restart and one more vendor round trip weigh more and timing noise
	# is larger: 2x still fails the old behaviour (4x and more: 511
	# redeliveries one at a time at 200 ms each).
	awk -v c="$calm" -v k="$killed" "BEGIN { exit !(k <= 2 * c) }" ||
		fail "the drain took $killed s after a kill against $calm s undisturbed" &&
	each_once calm kill && wait_depth $Q.kill 0 && expect_eq 0 "$(queue_depth $Q.kill.dead)" "dead-lettered"
'
# The figures, for design.md (a body's own output is shown only when it fails).
[ -s "$TRASH/said" ] && say "$(cat "$TRASH/said")" && rm "$TRASH/said"

N=3000
test_expect_success "PostgreSQL down for 90 s while the worker drains $N orders: amqp-consume is still running afterwards and every order ends once" '
	place pg $N &&
	# fulfil gives up on the database after 20 s (its default is 90 s):
	# amqp-consume must restart it through the rest of the outage.
	OA_DB_PATIENCE=20 worker pg &&
	wait_for "[ \$(ended pg) -ge 300 ]" 60 "300 orders to end" &&
	on_exit "\"$TOP/scripts/services\" start pg" &&
	"$TOP/scripts/services" stop pg >/dev/null 2>&1 &&
	stopped=$(date +%s) &&
	wait_for "[ \$((\$(date +%s) - stopped)) -ge 90 ]" 100 "90 s of outage" &&
	{ kill -0 $pid || fail "amqp-consume exited during the outage: $(tail -n 5 pg.err)"; } &&
	"$TOP/scripts/services" start pg >/dev/null &&
	wait_for "[ \$(ended pg) = $N ]" 60 "every order to end once the database is back" &&
	{ kill -0 $pid || fail "amqp-consume exited: $(tail -n 5 pg.err)"; } &&
	after=$(sql "SELECT count(*) FROM orders WHERE $(cat pg.range) AND updated_at >= to_timestamp($stopped + 90)") &&
	echo "$after of $N orders ended after the outage" >said && test "$after" -gt 0 &&
	expect_grep "^fulfil: database: waiting for it" pg.err &&
	expect_grep "^amqp-consume: fulfil exited with status 69 while answering .*restarting it in" pg.err &&
	kill -TERM $pid && wait $pid &&
	each_once calm kill pg &&
	wait_depth $Q.pg 0 && expect_eq 0 "$(queue_depth $Q.pg.dead)" "dead-lettered"
'
[ -s "$TRASH/said" ] && say "$(cat "$TRASH/said")"

test_done
