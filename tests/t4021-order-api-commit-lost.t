#!/usr/bin/env bash
# order-api says "not placed" when its database connection broke before COMMIT was sent, "may have been placed" only after.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

# The placer's connection is broken at a chosen point by its own backend:
# kill_self() terminates the session that fires it.
sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('acme', 'SKU-1', 100);
     CREATE FUNCTION kill_self() RETURNS trigger LANGUAGE plpgsql AS \$\$
     BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END \$\$"

start_order_api || exit 1

post() { post_order "$1"; }
message() { jq -r .message "$TRASH/body"; }
keyed() { sql "SELECT count(*) FROM orders WHERE idempotency_key = \$\$$1\$\$"; }
healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$API/health")" = 200 ]; }
# metric NAME{LABELS}: one sample's value from /metrics, as written
metric() { curl -s "$API/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

test_expect_success 'the database and the broker answer' '
	wait_for healthy 10 "/health 200" && expect_eq 201 "$(post a-1)"
'

# Fired by the INSERT of the batch's orders: the backend dies mid-statement.
sql "CREATE TRIGGER kill_self BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION kill_self()"

test_expect_success 'a connection broken before COMMIT was sent: 503 "the order was not placed", and it was not' '
	expect_eq 503 "$(post b-1)" &&
	message >msg && expect_grep "before COMMIT was sent: the order was not placed" msg &&
	tr -d "\r" <"$TRASH/hdr" | grep -q "^Retry-After: [0-9]" &&
	expect_eq 0 "$(keyed b-1)" &&
	expect_eq 1 "$(sql "SELECT reserved FROM vendor_stock WHERE sku = \$\$SKU-1\$\$")" &&
	expect_grep "^order-api: database: connection lost placing a batch of 1 requests: .*none of it was committed" \
		"$TRASH/api.err"
'

sql "DROP TRIGGER kill_self ON orders"

test_expect_success 'once reconnected, the same key places the order: 201, once' '
	wait_for healthy 20 "/health 200 after the reconnect" &&
	expect_eq 201 "$(post b-1)" && expect_eq 1 "$(keyed b-1)"
'

# Fired at COMMIT (a deferred constraint trigger): the backend dies after
# COMMIT was sent and before its answer. Here it dies before committing, but
# order-api cannot tell that from a commit whose answer was lost.
sql "CREATE CONSTRAINT TRIGGER kill_at_commit AFTER INSERT ON orders
     DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION kill_self()"

test_expect_success 'a connection broken after COMMIT was sent: 503 "may have been placed; retry with the same key"' '
	expect_eq 503 "$(post c-1)" &&
	message >msg && expect_grep "after COMMIT was sent.*the order may have been placed; retry with the same key" msg &&
	expect_grep "^order-api: database: connection lost placing a batch of 1 requests: committing: .*COMMIT was sent" \
		"$TRASH/api.err"
'

sql "DROP TRIGGER kill_at_commit ON orders"

test_expect_success 'retrying with the same key learns the outcome: here 201, placed once' '
	wait_for healthy 20 "/health 200 after the reconnect" &&
	expect_eq 201 "$(post c-1)" && expect_eq 1 "$(keyed c-1)" &&
	expect_eq 3 "$(sql "SELECT reserved FROM vendor_stock WHERE sku = \$\$SKU-1\$\$")"
'

test_expect_success '/metrics counts one of each 503, and the two reconnects' '
	expect_eq 1 "$(metric "order_api_orders_total{outcome=\"unavailable\",reason=\"database\"}")" &&
	expect_eq 1 "$(metric "order_api_orders_total{outcome=\"unavailable\",reason=\"commit_unknown\"}")" &&
	expect_eq 3 "$(metric "order_api_orders_total{outcome=\"placed\"}")" &&
	expect_eq 2 "$(metric order_api_database_reconnects_total)"
'

kill -TERM $api_PID && wait $api_PID
echo $? >"$TRASH/api.status"
test_expect_success 'SIGTERM exits 0' 'expect_eq 0 "$(cat "$TRASH/api.status")"'

test_done
