#!/usr/bin/env bash
# order-api rides out a broker restart: orders never fail, unpublished ones stay pending for order-sweep, publishing resumes.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('acme', 'SKU-1', 1000)"

start_order_api || exit 1

# post KEY: place one unit keyed KEY; appends "ID KEY PUBLISHED" to $TRASH/placed, prints the status
post() {
	local code
	code=$(post_order "$1") || return 1
	[ "$code" = 201 ] &&
		echo "$(jq -r .order_id "$TRASH/body") $1 $(tr -d '\r' <"$TRASH/hdr" | sed -n 's/^X-Order-Published: //Ip')" >>"$TRASH/placed"
	echo "$code"
}
published() { awk '{ print $3 }' "$TRASH/placed" | tail -n 1; }
ids() { awk -v k="$1" '$2 ~ k { print $1 }' "$TRASH/placed" | sort; }
healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$API/health")" = 200 ]; }
metric() { curl -s "$API/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

test_expect_success 'an order is answered at COMMIT (X-Order-Published: false), then published' '
	wait_for healthy 10 "/health 200" &&
	expect_eq 201 "$(post a-1)" && expect_eq false "$(published)" && wait_depth $Q 1
'

stop_rabbitmq

test_expect_success 'with the broker stopped an order is still 201, pending, and counted unpublished' '
	expect_eq 201 "$(post b-1)" && expect_eq false "$(published)" &&
	expect_eq 201 "$(post b-2)" && expect_eq false "$(published)" &&
	expect_eq 3 "$(sql "SELECT count(*) FROM orders WHERE status = \$\$pending\$\$")" &&
	wait_for "[ \"\$(metric order_api_orders_unpublished_total)\" = 2 ]" 10 "two unpublished orders"
'

start_rabbitmq

test_expect_success 'once the broker is back, orders are published again' '
	wait_for healthy 30 "/health 200 with the broker back" &&
	expect_eq 201 "$(post c-1)" && wait_depth $Q 2 &&
	expect_eq 2 "$(metric order_api_orders_unpublished_total)"
'

test_expect_success 'the queue holds exactly the orders placed while the broker was up' '
	drain $Q | jq -r .order_id | sort >queued &&
	ids "^[ac]-" >want && test_cmp want queued
'

test_expect_success 'order-sweep finds every order that was not published' '
	order-sweep --older-than 0 >swept &&
	ids "^b-" >unpublished && expect_eq 2 "$(lines unpublished)" &&
	for id in $(cat unpublished); do
		grep -q "^{\"order_id\":$id," swept || fail "order $id not swept" || return 1
	done
'

kill -TERM $api_PID && wait $api_PID
echo $? >"$TRASH/api.status"
test_expect_success 'SIGTERM exits 0; the broker outage was reported on stderr' '
	expect_eq 0 "$(cat "$TRASH/api.status")" && expect_grep "^order-api: broker" "$TRASH/api.err"
'

test_done
