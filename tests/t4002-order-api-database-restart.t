#!/usr/bin/env bash
# order-api rides out a database restart: 503 with Retry-After while it is away, orders again once it is back.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('acme', 'SKU-1', 1000)"

start_order_api || exit 1

post() { post_order "$1"; }

test_expect_success 'an order and a stock lookup work with the database up' '
	expect_eq 201 "$(post a-1)" && jq -r .order_id "$TRASH/body" >"$TRASH/first" &&
	expect_eq 200 "$(curl -s -o /dev/null -w "%{http_code}" "$API/stock/SKU-1")"
'

"$TOP/scripts/services" stop pg >/dev/null 2>&1

test_expect_success 'with the database stopped, orders and lookups are 503 with Retry-After' '
	expect_eq 503 "$(post b-1)" &&
	tr -d "\r" <"$TRASH/hdr" | grep -q "^Retry-After: [0-9]" &&
	expect_eq 503 "$(curl -s -o /dev/null -w "%{http_code}" "$API/stock/SKU-1")" &&
	expect_eq 503 "$(curl -s -o /dev/null -w "%{http_code}" "$API/stock/SKU-1")"
'

"$TOP/scripts/services" start pg >/dev/null

test_expect_success 'once the database is back, orders are placed again' '
	# a poll on the state (an order per try, each must succeed), 20 s at most
	for i in $(seq 1 40); do
		code=$(post b-1)
		[ "$code" = 201 ] && break
		expect_eq 503 "$code" || return 1
		sleep 0.5
	done &&
	expect_eq 201 "$code" &&
	expect_eq 200 "$(post a-1)" && expect_eq "$(cat "$TRASH/first")" "$(jq -r .order_id "$TRASH/body")" &&
	for i in $(seq 1 10); do
		code=$(curl -s -o /dev/null -w "%{http_code}" "$API/stock/SKU-1")
		[ "$code" = 200 ] && break
		sleep 0.5
	done &&
	expect_eq 200 "$code" &&
	expect_eq 2 "$(sql "SELECT reserved FROM vendor_stock WHERE sku = \$\$SKU-1\$\$")"
'

kill -TERM $api_PID && wait $api_PID
echo $? >"$TRASH/api.status"
test_expect_success 'SIGTERM exits 0; the outage was reported on stderr' '
	expect_eq 0 "$(cat "$TRASH/api.status")" && expect_grep "^order-api: database" "$TRASH/api.err"
'

test_done
