#!/usr/bin/env bash
# order-sweep writes the pending orders with no progress for a while, oldest first, as order-place does.
. "$(dirname "$0")/lib.sh"

# order ID STATUS AGE [KEY]: an order last updated AGE seconds ago
order() {
	local key=NULL
	[ $# -ge 4 ] && key="'$4'"
	sql "INSERT INTO orders (id, sku, quantity, vendor, status, idempotency_key, updated_at)
		VALUES ($1, 'SKU-$1', $1, 'acme', '$2', $key, now() - interval '$3 seconds')"
}

order 1 pending 3600 key-1
order 2 pending 120
order 3 pending 10
order 4 success 3600
order 5 failed 3600
order 6 pending 7200

test_expect_success 'pending orders older than 60 seconds are written, oldest first' '
	order-sweep >out &&
	expect_eq "6 1 2" "$(jq -r .order_id out | tr "\n" " " | sed "s/ $//")" "order ids"
'

test_expect_success 'each line has order-place output format and jq accepts it' '
	order-sweep >out &&
	jq -e . out >/dev/null &&
	expect_eq "{\"order_id\":1,\"sku\":\"SKU-1\",\"quantity\":1,\"vendor\":\"acme\",\"status\":\"pending\",\"key\":\"key-1\"}" \
		"$(sed -n 2p out)" "line of order 1" &&
	expect_eq null "$(sed -n 1p out | jq .key)" "no key when none"
'

test_expect_success '--older-than chooses the age; recent and settled orders stay out' '
	order-sweep --older-than 5 >out &&
	expect_eq "6 1 2 3" "$(jq -r .order_id out | tr "\n" " " | sed "s/ $//")" "order ids" &&
	order-sweep --older-than 7000 >out &&
	expect_eq 6 "$(jq -r .order_id out)" "order ids"
'

test_expect_success 'thousands of old orders stream out in order, each exactly once' '
	sql "INSERT INTO orders (id, sku, quantity, vendor, updated_at)
		SELECT 1000 + g, \$\$BULK\$\$, 1, \$\$acme\$\$, now() - interval \$\$1 day\$\$ + (g % 7) * interval \$\$1 second\$\$
		FROM generate_series(1, 2500) g" &&
	order-sweep >out &&
	expect_eq 2503 "$(lines out)" lines &&
	expect_eq 2503 "$(jq -r .order_id out | sort -u | wc -l)" "distinct ids" &&
	jq -r .order_id out | head -n 2500 >ids &&
	sql "SELECT id FROM orders WHERE sku = \$\$BULK\$\$ ORDER BY updated_at, id" >want &&
	cmp ids want
'

test_option_errors order-sweep <<\EOF
--bogus            | '--bogus'
--older-than       | '--older-than' requires an argument
--older-than -1    | option --older-than
--older-than x     | option --older-than
extra              | usage: order-sweep
EOF

test_expect_success 'an unreachable database exits 69' '
	DATABASE_URL=postgresql://nobody:secret@localhost/x?host=/nonexistent OA_DB_PATIENCE=0 \
		test_expect_code 69 order-sweep >out 2>err &&
	expect_grep "no pending order was written" err && test ! -s out
'

test_expect_success 'a second sweep while one runs (another host, say) exits 75 and writes nothing' '
	rm -f release && mkfifo release &&
	{ timeout 60 psql -XqAt -d "$DATABASE_URL" \
		-c "SELECT pg_advisory_lock(hashtext('"'order-aggregator'"'), hashtext('"'order-sweep'"'))" \
		-f release >/dev/null & } && holder=$! && on_exit "kill $holder" &&
	wait_for "[ \$(sql \"SELECT count(*) FROM pg_locks WHERE locktype = '"'advisory'"' AND granted\") = 1 ]" 10 "the other sweep to hold the lock" &&
	test_expect_code 75 order-sweep >out 2>err &&
	expect_grep "another order-sweep (on this or another host) holds" err && test ! -s out &&
	echo "SELECT 1;" >release && wait $holder &&
	order-sweep >out2 2>err2 && test -s out2
'

test_done
