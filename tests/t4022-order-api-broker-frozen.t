#!/usr/bin/env bash
# order-api answers at COMMIT: a broker that stops answering delays no answer; its unconfirmed orders are left to order-sweep.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('acme', 'SKU-1', 1000)"

start_order_api || exit 1

# post KEY: one unit keyed KEY, answered within 2 s
post() { post_order "$1" -m 2; }
published() { tr -d '\r' <"$TRASH/hdr" | sed -n 's/^X-Order-Published: //Ip'; }
healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$API/health")" = 200 ]; }
metric() { curl -s "$API/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
broker=$(cat "$(readlink -f "$OA_VAR/rabbitmq")/pid")

test_expect_success 'an order is 201 at COMMIT, before its confirm, and then in the queue' '
	wait_for healthy 10 "/health 200" &&
	expect_eq 201 "$(post a-1)" && expect_eq false "$(published)" && wait_depth $Q 1 &&
	wait_for "[ \"\$(metric order_api_publishes_awaiting_confirm)\" = 0 ]" 10 "the confirm" &&
	expect_eq 0 "$(metric order_api_orders_unpublished_total)"
'

# The broker's process is frozen: its connection stays open, nothing answers.
kill -STOP "$broker"
on_exit "kill -CONT $broker"

test_expect_success 'with the broker frozen, orders are still answered at once' '
	expect_eq 201 "$(post b-1)" && expect_eq 201 "$(post b-2)" && expect_eq 201 "$(post b-3)" &&
	expect_eq 4 "$(sql "SELECT count(*) FROM orders WHERE status = \$\$pending\$\$")" &&
	wait_for "[ \"\$(metric order_api_publishes_awaiting_confirm)\" = 3 ]" 5 "three publishes awaiting"
'

test_expect_success 'confirms that do not come within 5 s are given up: counted, left to order-sweep' '
	wait_for "[ \"\$(metric order_api_orders_unpublished_total)\" = 3 ]" 15 "three unpublished orders" &&
	expect_eq 0 "$(metric order_api_publishes_awaiting_confirm)" &&
	expect_grep "^order-api: broker .*: 3 confirms did not arrive in 5 s; those orders stay pending for order-sweep" \
		"$TRASH/api.err" &&
	expect_eq 201 "$(post b-4)"
'

kill -CONT "$broker"

test_expect_success 'once the broker answers again, new orders are published and confirmed' '
	wait_for healthy 60 "/health 200 with the broker answering" &&
	wait_for "[ \"\$(metric order_api_publishes_awaiting_confirm)\" = 0 ]" 10 "b-4 settled" &&
	before=$(metric order_api_orders_unpublished_total) &&
	expect_eq 201 "$(post c-1)" &&
	wait_for "[ \"\$(metric order_api_publishes_awaiting_confirm)\" = 0 ]" 10 "the confirm" &&
	expect_eq "$before" "$(metric order_api_orders_unpublished_total)"
'

kill -TERM $api_PID && wait $api_PID
echo $? >"$TRASH/api.status"
test_expect_success 'SIGTERM exits 0' 'expect_eq 0 "$(cat "$TRASH/api.status")"'

test_done
