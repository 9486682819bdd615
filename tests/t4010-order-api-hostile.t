#!/usr/bin/env bash
# order-api contains hostile input: \u0000 in a body, a reused idempotency key (422), bad bytes in a path (400/404, never 503).
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

start_server api order-api -q "$Q" --threads 2 || exit 1
API=$SERVER_URL

post() {
	local body=$1; shift
	curl -s -o "$TRASH/body" -w '%{http_code}' -H 'Content-Type: application/json' \
		--data-binary "$body" "$@" "$API/order" >"$TRASH/code"
}
get() { curl -s -o "$TRASH/body" -w '%{http_code}' "$API$1" >"$TRASH/code"; }
code() { cat "$TRASH/code"; }
field() { jq -r "$1" "$TRASH/body"; }

sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('acme', 'A', 100), ('acme', 'B', 100)"

test_expect_success '"A\u0000B" is a bad request (400), never an order for A' '
	post "{\"sku\":\"A\\u0000B\",\"quantity\":1}" &&
	expect_eq 400 "$(code)" "status" &&
	expect_eq invalid_request "$(field .error)" &&
	expect_grep "u0000" "$TRASH/body" &&
	expect_eq 0 "$(sql "SELECT count(*) FROM orders")" "orders"
'

test_expect_success 'keys k\u0000one and k\u0000two are refused, not merged' '
	post "{\"sku\":\"A\",\"quantity\":1,\"key\":\"k\\u0000one\"}" && expect_eq 400 "$(code)" &&
	post "{\"sku\":\"A\",\"quantity\":2,\"key\":\"k\\u0000two\"}" && expect_eq 400 "$(code)" &&
	expect_eq 0 "$(sql "SELECT count(*) FROM orders")" "orders"
'

test_expect_success 'a key reused with another SKU is 422 idempotency_key_reused; the same request still answers' '
	post "{\"sku\":\"A\",\"quantity\":2}" -H "Idempotency-Key: reuse" &&
	expect_eq 201 "$(code)" && id=$(field .order_id) &&
	post "{\"sku\":\"B\",\"quantity\":2}" -H "Idempotency-Key: reuse" &&
	expect_eq 422 "$(code)" "status" &&
	expect_eq "rejected idempotency_key_reused" "$(field "\"\(.status) \(.error)\"")" &&
	post "{\"sku\":\"A\",\"quantity\":3,\"key\":\"reuse\"}" &&
	expect_eq 422 "$(code)" "status for another quantity" &&
	post "{\"sku\":\"A\",\"quantity\":2}" -H "Idempotency-Key: reuse" &&
	expect_eq 200 "$(code)" && expect_eq "$id" "$(field .order_id)" "the original order" &&
	expect_eq 1 "$(sql "SELECT count(*) FROM orders")" "orders" &&
	expect_eq 2 "$(sql "SELECT reserved FROM vendor_stock WHERE sku = '"'A'"'")" "reserved once"
'

test_expect_success '/stock/%FF is 400, %00 and a 300-byte SKU 404, never 503' '
	get /stock/%FF && expect_eq 400 "$(code)" "invalid UTF-8" &&
	get /stock/%C0%80 && expect_eq 400 "$(code)" "overlong NUL" &&
	get /stock/A%00B && expect_eq 404 "$(code)" "%00 never cuts the SKU short" &&
	get /order/1%00 && expect_eq 404 "$(code)" "%00 never cuts an order id short" &&
	get "/stock/$(head -c 300 /dev/zero | tr "\0" x)" && expect_eq 404 "$(code)" "too long" &&
	get "/stock?after=%FF" && expect_eq 400 "$(code)" "after" &&
	get /stock/A && expect_eq 200 "$(code)" "a real SKU still answers"
'

test_done
