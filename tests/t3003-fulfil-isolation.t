#!/usr/bin/env bash
# A slow, hung or connection-dropping vendor delays only its own orders: the others are answered as their own calls end.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.iso
N=400	# healthy orders; one slow order per 100 of them
echo '[{"sku":"A-1","quantity":1000000}]' >"$TRASH/acme.json"
echo '[{"sku":"S-1","quantity":1000000}]' >"$TRASH/slow.json"
start_vendor_mock --vendor acme="$TRASH/acme.json" --vendor slow="$TRASH/slow.json" \
	--vendor hang="$TRASH/slow.json" --vendor drop="$TRASH/slow.json" \
	--latency slow=3000 --hang hang --drop drop || exit 1

# orders FROM TO VENDOR SKU: pending orders FROM..TO of one unit, reserved as order-place would
orders() {
	sql "INSERT INTO orders (id, sku, quantity, vendor) SELECT g, '$4', 1, '$3' FROM generate_series($1, $2) g;
	     INSERT INTO vendor_stock (vendor, sku, quantity, reserved) VALUES ('$3', '$4', 1000000, $2 - $1 + 1)
	     ON CONFLICT (sku, vendor) DO UPDATE SET reserved = vendor_stock.reserved + $2 - $1 + 1"
}
# mixed FROM SLOW_FROM: N healthy order lines from FROM, a slow one (from SLOW_FROM) before each 100th
mixed() {
	awk -v a="$1" -v s="$2" -v n="$N" 'BEGIN { for (i = 0; i < n; i++) {
		if (i % 100 == 50) printf "{\"order_id\":%d}\n", s++
		printf "{\"order_id\":%d}\n", a + i } }'
}
count() { sql "SELECT count(*) FROM orders WHERE vendor = '$1' AND status = '$2'"; }
reserved() { sql "SELECT reserved FROM vendor_stock WHERE vendor = '$1'"; }
# stamp: each line of stdin with the seconds since $start before it
stamp() { while IFS= read -r l; do echo "$EPOCHREALTIME $l"; done | awk -v s="$start" '{ $1 = $1 - s; print }'; }
has_match() { amqp-consume --help 2>&1 | grep -q -- --match; }

orders 1 400 acme A-1 && orders 1001 1400 acme A-1 && orders 2001 2400 acme A-1 &&
	orders 9001 9004 slow S-1 && orders 9101 9104 slow S-1 || exit 1

test_expect_success 'OA_MATCH=order_id: with 1 in 100 orders at a vendor of 3 s, the others end about as fast as alone' '
	seq 1001 1400 | sed "s/.*/{\"order_id\":&}/" >alone.in && mixed 1 9001 >mixed.in &&
	start=$EPOCHREALTIME && OA_MATCH=order_id fulfil <alone.in >alone.out 2>alone.err &&
	alone=$(awk -v s="$start" -v e="$EPOCHREALTIME" "BEGIN { print e - s }") &&
	start=$EPOCHREALTIME &&
	{ OA_MATCH=order_id fulfil <mixed.in 2>mixed.err | stamp >mixed.out; } &&
	healthy=$(jq -Rr "split(\" \") | select(.[1:] | join(\" \") | fromjson | .order_id < 9000) | .[0]" mixed.out | sort -g | tail -n 1) &&
	say "healthy orders alone: $alone s; beside the slow vendor: $healthy s" &&
	awk -v a="$alone" -v h="$healthy" "BEGIN { exit !(h <= 3 * a || h <= a + 1) }" ||
		fail "healthy orders took $healthy s beside the slow vendor, $alone s alone" &&
	expect_eq 404 "$(grep -vc "\"status\":\"park\"" mixed.out)" "answers" &&
	expect_eq 4 "$(grep -c "\"order_id\":900[1-4],\"status\":\"success\"" mixed.out)" "slow orders answered success" &&
	grep "\"status\":\"park\"" mixed.out | cut -d" " -f2- | jq -r .order_id >parked &&
	expect_eq 4 "$(grep -c "^900[1-4]$" parked)" "slow calls marked park" &&
	awk "END { exit !(NR - 4 <= 40) }" parked || fail "$(($(lines parked) - 4)) healthy calls marked park"
'

test_expect_success '--vendor-calls 1: a second order of the busy vendor is answered defer after --defer-after, nothing counted' '
	orders 9501 9502 slow S-1 && orders 9601 9601 acme A-1 &&
	printf "{\"order_id\":%d}\n" 9501 9502 9601 >in &&
	start=$EPOCHREALTIME &&
	{ OA_MATCH=order_id fulfil --vendor-calls 1 --defer-after 0.5 --park-after 0 <in 2>err | stamp >out; } &&
	expect_eq "9601:success 9502:defer 9501:success" "$(cut -d" " -f2- out | jq -r "\"\(.order_id):\(.status)\"" | xargs)" "answers" &&
	expect_grep "vendor slow has 1 calls in flight (--vendor-calls)" out &&
	d=$(grep 9502 out | cut -d" " -f1) &&
	awk -v d="$d" "BEGIN { exit !(d >= 0.5 && d < 2.5) }" || fail "defer answered after $d s" &&
	expect_eq "pending 0" "$(sql "SELECT status || '"' '"' || attempts FROM orders WHERE id = 9502")" "deferred order"
'

test_expect_success 'in-order mode (amqp-consume without --match): every order of both vendors succeeds' '
	mixed 2001 9101 | amqp-publish -q "$Q" 2>pub.err &&
	# --idle-exit past the slow vendor'"'"'s 3 s: in order, its orders hold up every answer
	# after them, and an idle run would stop taking the messages not yet given.
	amqp-consume -q "$Q" -p 512 --idle-exit 5 -- fulfil >w.out 2>w.err &&
	expect_eq 0 "$(sql "SELECT count(*) FROM orders WHERE id BETWEEN 2001 AND 2400 AND status <> '"'success'"'")" "healthy orders not success" &&
	expect_eq 0 "$(sql "SELECT count(*) FROM orders WHERE id BETWEEN 9101 AND 9104 AND status <> '"'success'"'")" "slow orders not success" &&
	expect_eq 0 "$(queue_depth "$Q")" "queue depth"
'

# The same through amqp-consume --match order_id (issue 13's other half): skipped until it has it.
if has_match; then
	orders 3001 3400 acme A-1 && orders 4001 4400 acme A-1 && orders 9201 9204 slow S-1 || exit 1
	test_expect_success 'amqp-consume --match order_id: the healthy vendor'"'"'s orders end about as fast as alone' '
		seq 3001 3400 | sed "s/.*/{\"order_id\":&}/" | amqp-publish -q "$Q" 2>pub.err &&
		start=$EPOCHREALTIME &&
		amqp-consume -q "$Q" -p 512 --match order_id --idle-exit 1 -- fulfil >a.out 2>a.err &&
		alone=$(awk -v s="$start" -v e="$EPOCHREALTIME" "BEGIN { print e - s - 1 }") &&
		mixed 4001 9201 | amqp-publish -q "$Q" 2>pub.err &&
		start=$EPOCHREALTIME &&
		{ amqp-consume -q "$Q" -p 512 --match order_id --idle-exit 2 -- fulfil >m.out 2>m.err & } &&
		pid=$! && on_exit "kill $pid 2>/dev/null" &&
		wait_for "[ \$(sql \"SELECT count(*) FROM orders WHERE id BETWEEN 4001 AND 4400 AND status = '"'success'"'\") = 400 ]" 30 "the healthy orders" &&
		healthy=$(awk -v s="$start" -v e="$EPOCHREALTIME" "BEGIN { print e - s }") &&
		say "healthy orders alone: $alone s; beside the slow vendor: $healthy s" &&
		awk -v a="$alone" -v h="$healthy" "BEGIN { exit !(h <= 3 * a || h <= a + 1.5) }" ||
			fail "healthy orders took $healthy s beside the slow vendor, $alone s alone" &&
		wait $pid &&
		expect_eq 4 "$(sql "SELECT count(*) FROM orders WHERE id BETWEEN 9201 AND 9204 AND status = '"'success'"'")" "slow orders succeeded"
	'

	orders 5001 5100 acme A-1 && orders 9301 9302 hang S-1 && orders 9401 9402 drop S-1 || exit 1
	test_expect_success 'amqp-consume --match: hung and dropping vendors'"'"' orders retry, then go to Q.dead pending and reserved; the others are not delayed' '
		r_hang=$(reserved hang) && r_drop=$(reserved drop) &&
		{ echo "{\"order_id\":9301}"; echo "{\"order_id\":9401}"; seq 5001 5100 | sed "s/.*/{\"order_id\":&}/";
		  echo "{\"order_id\":9302}"; echo "{\"order_id\":9402}"; } | amqp-publish -q "$Q" 2>pub.err &&
		start=$EPOCHREALTIME &&
		{ amqp-consume -q "$Q" -p 512 --match order_id --retry-delay 0.5 --idle-exit 3 -- \
			fulfil --timeout 2 --max-attempts 2 >d.out 2>d.err & } &&
		pid=$! && on_exit "kill $pid 2>/dev/null" &&
		wait_for "[ \$(sql \"SELECT count(*) FROM orders WHERE id BETWEEN 5001 AND 5100 AND status = '"'success'"'\") = 100 ]" 10 "the healthy orders" &&
		healthy=$(awk -v s="$start" -v e="$EPOCHREALTIME" "BEGIN { print e - s }") &&
		awk -v h="$healthy" "BEGIN { exit !(h < 1.5) }" || fail "healthy orders took $healthy s" &&
		wait $pid && wait_depth "$Q.dead" 4 &&
		expect_eq 4 "$(grep -c "\"status\":\"dead\"" d.out)" "dead answers" &&
		expect_eq 4 "$(sql "SELECT count(*) FROM orders WHERE id IN (9301, 9302, 9401, 9402) AND status = '"'pending'"'")" "pending" &&
		expect_eq "$r_hang $r_drop" "$(reserved hang) $(reserved drop)" "reservations"
	'
else
	for t in 'amqp-consume --match order_id: the healthy orders end about as fast as alone' \
		'amqp-consume --match: hung and dropping vendors end in Q.dead, pending and reserved'; do
		test_expect_success "$t # SKIP amqp-consume has no --match yet" 'true'
	done
fi

test_done
