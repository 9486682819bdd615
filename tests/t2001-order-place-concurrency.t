#!/usr/bin/env bash
# Eight order-place processes at once never oversell, never lose a reservation, and honour keys.
. "$(dirname "$0")/lib.sh"

# requests SKU N [KEYPREFIX]: N requests of quantity 1, keyed KEYPREFIX-i when given
requests() {
	local i
	for i in $(seq 1 "$2"); do
		if [ -n "${3:-}" ]; then
			printf '{"sku":"%s","quantity":1,"key":"%s-%d"}\n' "$1" "$3" "$i"
		else
			printf '{"sku":"%s","quantity":1}\n' "$1"
		fi
	done
}

# slowly FILE: write FILE a few lines at a time with pauses, so batches vary
# (the pauses are the scenario, input trickling in; no outcome depends on them)
slowly() {
	local n=0 line
	while IFS= read -r line; do
		printf '%s\n' "$line"
		n=$((n + 1))
		[ $((n % 7)) = 0 ] && sleep 0.0$((RANDOM % 5))
	done <"$1"
}

# run8 MODE: start 8 order-place on in.1..in.8 (MODE fast|slow), wait, record statuses
run8() {
	local i pids=""
	for i in 1 2 3 4 5 6 7 8; do
		if [ "$1" = slow ]; then
			order-place -b $((i * 3)) < <(slowly in.$i) >out.$i 2>err.$i &
		else
			order-place <in.$i >out.$i 2>err.$i &
		fi
		pids="$pids $!"
	done
	for i in $pids; do wait "$i" || fail "an order-place exited $?" || return 1; done
	cat out.1 out.2 out.3 out.4 out.5 out.6 out.7 out.8 >all
}

# check_stock SKU PENDING REJECTED: answers and rows agree; no vendor over-reserved
check_stock() {
	expect_eq 400 "$(lines all)" "answers" &&
	expect_eq "$2" "$(jq -r "select(.status == \"pending\")" all | jq -s length)" "pending answers" &&
	expect_eq "$3" "$(jq -r "select(.error == \"insufficient_stock\")" all | jq -s length)" "insufficient_stock answers" &&
	expect_eq "$2" "$(sql "SELECT count(*) FROM orders WHERE sku = '$1' AND status = 'pending'")" "pending rows" &&
	expect_eq "$2" "$(jq -r "select(.status == \"pending\") | .order_id" all | sort -u | wc -l)" "distinct order ids" &&
	expect_eq 0 "$(sql "SELECT count(*) FROM vendor_stock WHERE sku = '$1' AND reserved > quantity")" "over-reserved vendors" &&
	expect_eq 0 "$(sql "SELECT count(*) FROM vendor_stock s WHERE sku = '$1' AND reserved <>
		(SELECT coalesce(sum(quantity), 0) FROM orders o WHERE o.sku = s.sku AND o.vendor = s.vendor AND status = 'pending')")" \
		"vendors whose reserved differs from their pending orders"
}

test_expect_success '400 requests from 8 processes against 60 + 40 units place exactly 100 orders' '
	sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES (\$\$acme\$\$, \$\$TWO\$\$, 60), (\$\$globex\$\$, \$\$TWO\$\$, 40)" &&
	for i in 1 2 3 4 5 6 7 8; do requests TWO 50 >in.$i; done &&
	run8 fast &&
	check_stock TWO 100 300 &&
	expect_eq "60 40" "$(sql "SELECT string_agg(reserved::text, \$\$ \$\$ ORDER BY vendor) FROM vendor_stock WHERE sku = \$\$TWO\$\$")" reserved
'

test_expect_success '400 requests from 8 processes on one hot SKU of one vendor place exactly 100 orders' '
	sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES (\$\$acme\$\$, \$\$HOT\$\$, 100)" &&
	for i in 1 2 3 4 5 6 7 8; do requests HOT 50 >in.$i; done &&
	run8 fast &&
	check_stock HOT 100 300
'

test_expect_success 'the same holds when input trickles in and batches vary in size' '
	sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES (\$\$acme\$\$, \$\$SLOW\$\$, 70), (\$\$globex\$\$, \$\$SLOW\$\$, 30)" &&
	for i in 1 2 3 4 5 6 7 8; do requests SLOW 50 >in.$i; done &&
	run8 slow &&
	check_stock SLOW 100 300
'

test_expect_success 'batches mixing many SKUs in different orders neither deadlock nor oversell' '
	sql "INSERT INTO vendor_stock (vendor, sku, quantity)
		SELECT v, \$\$MIX-\$\$ || g, 3 FROM generate_series(1, 20) g, unnest(ARRAY[\$\$acme\$\$, \$\$globex\$\$]) v" &&
	for i in 1 2 3 4 5 6 7 8; do
		for j in $(seq 1 50); do printf "{\"sku\":\"MIX-%d\",\"quantity\":1}\n" $(( (RANDOM % 20) + 1 )); done >in.$i
	done &&
	run8 fast &&
	expect_eq 400 "$(lines all)" answers &&
	pending=$(jq -r "select(.status == \"pending\")" all | jq -s length) &&
	expect_eq "$pending" "$(sql "SELECT count(*) FROM orders WHERE sku LIKE \$\$MIX-%\$\$")" "pending rows" &&
	expect_eq "$pending" "$(sql "SELECT sum(reserved) FROM vendor_stock WHERE sku LIKE \$\$MIX-%\$\$")" "units reserved" &&
	expect_eq 0 "$(sql "SELECT count(*) FROM vendor_stock WHERE reserved > quantity")" "over-reserved vendors" &&
	! grep -q . err.1 err.2 err.3 err.4 err.5 err.6 err.7 err.8
'

test_expect_success 'the same key from two processes at once gives one order, reserved once' '
	sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES (\$\$acme\$\$, \$\$KEYED\$\$, 1000)"
	requests KEYED 200 k >in.a
	shuf in.a >in.b
	order-place -b 16 <in.a >out.a 2>err.a & a=$!
	order-place -b 16 <in.b >out.b 2>err.b & b=$!
	wait $a && wait $b &&
	expect_eq 200 "$(sql "SELECT count(*) FROM orders WHERE sku = \$\$KEYED\$\$")" orders &&
	expect_eq 200 "$(sql "SELECT reserved FROM vendor_stock WHERE sku = \$\$KEYED\$\$")" reserved &&
	jq -r "\"\(.key) \(.order_id)\"" out.a | sort >ids.a &&
	jq -r "\"\(.key) \(.order_id)\"" out.b | sort >ids.b &&
	expect_eq 200 "$(lines ids.a)" "answers a" &&
	cmp ids.a ids.b
'

test_done
