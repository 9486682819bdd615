#!/usr/bin/env bash
# order-api answers POST /order and the GET lookups over real HTTP, in shared batches, publishing each new order.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

# start_api NAME ARGS...: start order-api on a free port; sets API (base URL) and NAME_PID
start_api() {
	local name=$1; shift
	start_server "$name" order-api "$@" || return 1
	eval "${name}_PID=$SERVER_PID"
	API=$SERVER_URL
}

# post BODY [CURL ARGS...]: POST BODY to /order; the status is in $TRASH/code,
# the body in $TRASH/body, the headers in $TRASH/hdr
post() {
	local body=$1; shift
	curl -s -o "$TRASH/body" -D "$TRASH/hdr" -w '%{http_code}' -H 'Content-Type: application/json' \
		--data-binary "$body" "$@" "$API/order" >"$TRASH/code"
}
get() { curl -s -o "$TRASH/body" -D "$TRASH/hdr" -w '%{http_code}' "$API$1" >"$TRASH/code"; }
code() { cat "$TRASH/code"; }
field() { jq -r "$1" "$TRASH/body"; }
header() { tr -d '\r' <"$TRASH/hdr" | sed -n "s/^$1: //Ip"; }

sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES
	('acme', 'SKU-1', 10), ('globex', 'SKU-1', 3), ('acme', 'HOT', 100),
	('acme', 'P-1', 1), ('acme', 'P-2', 2), ('acme', 'P-3', 3), ('acme', 'P-4', 4), ('acme', 'P-5', 5)"

test_option_errors order-api <<\EOF
--threads 0         | option --threads
--bogus             | '--bogus'
--timeout x         | option --timeout
--listen x          | option --listen
--max-body 0        | option --max-body
EOF
test_expect_success '--help prints the synopsis' 'order-api --help >help && expect_grep "max-body" help'

test_expect_success 'with the database unreachable a POST is 503 with Retry-After' '
	DATABASE_URL="postgresql://u@localhost/x?host=/nonexistent" start_api down -q $Q &&
	post "{\"sku\":\"SKU-1\",\"quantity\":1}" &&
	expect_eq 503 "$(code)" && expect_grep "^[0-9]" <(header Retry-After) &&
	expect_eq database_unavailable "$(field .error)" &&
	get /stock/SKU-1 && expect_eq 503 "$(code)" &&
	kill -TERM $down_PID && wait $down_PID &&
	expect_grep "order-api: database" "$TRASH/down.err"
'

start_api api -q $Q --threads 4 || exit 1
test_expect_success 'the server announces where it listens' '
	expect_grep "^{\"listening\":\"127.0.0.1:[0-9]*\"}$" "$TRASH/api.out"
'

test_expect_success 'a new order is 201 with the pending order line, answered before its publish is confirmed' '
	post "{\"sku\":\"SKU-1\",\"quantity\":2}" -H "Idempotency-Key: k-1" &&
	expect_eq 201 "$(code)" && expect_eq pending "$(field .status)" &&
	expect_eq acme "$(field .vendor)" && expect_eq k-1 "$(field .key)" &&
	expect_eq false "$(header X-Order-Published)" && wait_depth $Q 1 &&
	field .order_id >first_id && echo 1 >>"$TRASH/created"
'

test_expect_success 'the same key again is 200 with the same order, header or body' '
	post "{\"sku\":\"SKU-1\",\"quantity\":2}" -H "Idempotency-Key: k-1" &&
	expect_eq 200 "$(code)" && expect_eq "$(cat first_id)" "$(field .order_id)" &&
	post "{\"sku\":\"SKU-1\",\"quantity\":2,\"key\":\"k-1\"}" &&
	expect_eq 200 "$(code)" && expect_eq "$(cat first_id)" "$(field .order_id)" &&
	expect_eq 2 "$(sql "SELECT reserved FROM vendor_stock WHERE sku = \$\$SKU-1\$\$ AND vendor = \$\$acme\$\$")"
'

test_expect_success 'more than any vendor holds is 409 insufficient_stock' '
	post "{\"sku\":\"SKU-1\",\"quantity\":11}" &&
	expect_eq 409 "$(code)" && expect_eq insufficient_stock "$(field .error)"
'

test_expect_success 'an unknown SKU is 404 unknown_sku' '
	post "{\"sku\":\"NOPE\",\"quantity\":1}" &&
	expect_eq 404 "$(code)" && expect_eq unknown_sku "$(field .error)"
'

test_expect_success 'bad JSON is 400 saying so' '
	post "{\"sku\":" && expect_eq 400 "$(code)" &&
	expect_eq invalid_request "$(field .error)" && field .message >msg &&
	expect_grep "not valid JSON" msg
'

test_expect_success 'a missing or mistyped field is 400 naming it' '
	post "{\"sku\":\"SKU-1\"}" && expect_eq 400 "$(code)" &&
	field .message >msg && expect_grep "\"quantity\"" msg &&
	post "{\"sku\":7,\"quantity\":1}" && expect_eq 400 "$(code)" &&
	field .message >msg && expect_grep "\"sku\"" msg &&
	post "[1]" && expect_eq 400 "$(code)" &&
	post "{\"sku\":\"SKU-1\",\"quantity\":1,\"key\":\"a\"}" -H "Idempotency-Key: b" &&
	expect_eq 400 "$(code)" && field .message >msg && expect_grep "differ" msg
'

test_expect_success 'an oversized body is 413 and the server keeps serving' '
	head -c 20000 /dev/zero | tr "\0" " " >big && printf "{}" >>big &&
	post @big && expect_eq 413 "$(code)" &&
	post "{\"sku\":\"SKU-1\",\"quantity\":1}" && expect_eq 201 "$(code)" &&
	echo 1 >>"$TRASH/created"
'

test_expect_success 'GET /order/ID gives the order and its status; unknown is 404' '
	get /order/$(cat first_id) && expect_eq 200 "$(code)" &&
	expect_eq pending "$(field .status)" && expect_eq SKU-1 "$(field .sku)" &&
	get /order/999999 && expect_eq 404 "$(code)" &&
	get /order/abc && expect_eq 404 "$(code)"
'

test_expect_success 'GET /stock/SKU gives what is still available; unknown is 404' '
	get /stock/SKU-1 && expect_eq 200 "$(code)" && expect_eq 10 "$(field .available)" &&
	get /stock/NOPE && expect_eq 404 "$(code)"
'

test_expect_success 'GET /stock pages through SKUs with a next cursor' '
	get "/stock?after=P-&limit=2" && expect_eq 200 "$(code)" &&
	expect_eq "P-1 P-2" "$(field "[.items[].sku] | join(\" \")")" &&
	expect_eq P-2 "$(field .next)" &&
	get "/stock?after=P-4&limit=2" && expect_eq "P-5 SKU-1" "$(field "[.items[].sku] | join(\" \")")" &&
	expect_eq null "$(field .next)" &&
	get "/stock?limit=1001" && expect_eq 400 "$(code)"
'

test_expect_success '1000 concurrent orders for 100 units: exactly 100 are 201' '
	curl -s --parallel --parallel-max 50 -o "r/#1" --create-dirs -w "%{http_code}\n" \
		-H "Content-Type: application/json" -d "{\"sku\":\"HOT\",\"quantity\":1}" \
		"$API/order?n=[1-1000]" >codes &&
	expect_eq 1000 "$(lines codes)" &&
	expect_eq 100 "$(grep -c "^201$" codes)" && expect_eq 900 "$(grep -c "^409$" codes)" &&
	expect_eq 100 "$(sql "SELECT count(*) FROM orders WHERE sku = \$\$HOT\$\$ AND status = \$\$pending\$\$")" &&
	expect_eq 100 "$(sql "SELECT reserved FROM vendor_stock WHERE sku = \$\$HOT\$\$")" &&
	grep "^201$" codes >>"$TRASH/created"
'

test_expect_success 'the same key from 20 clients at once makes one order' '
	curl -s --parallel --parallel-max 20 -o "s/#1" --create-dirs -w "%{http_code}\n" \
		-H "Idempotency-Key: same" -d "{\"sku\":\"SKU-1\",\"quantity\":1}" \
		"$API/order?n=[1-20]" >codes &&
	expect_eq 1 "$(grep -c "^201$" codes)" && expect_eq 19 "$(grep -c "^200$" codes)" &&
	expect_eq 1 "$(sql "SELECT count(*) FROM orders WHERE idempotency_key = \$\$same\$\$")" &&
	expect_eq 1 "$(cat s/* | jq -r .order_id | sort -u | wc -l)" &&
	echo 1 >>"$TRASH/created"
'

test_expect_success 'every 201 was published to the queue once' '
	wait_depth $Q "$(lines "$TRASH/created")"
'

test_expect_success 'with the broker down an order is still 201, marked not published' '
	RABBITMQ_URL=amqp://guest:guest@127.0.0.1:1/ start_api nobroker -q $Q &&
	post "{\"sku\":\"SKU-1\",\"quantity\":1}" && expect_eq 201 "$(code)" &&
	expect_eq false "$(header X-Order-Published)" &&
	expect_eq pending "$(sql "SELECT status FROM orders WHERE id = $(field .order_id)")" &&
	kill -TERM $nobroker_PID && wait $nobroker_PID
'

test_expect_success 'a chunked oversized body is 413 too' '
	post @big -H "Transfer-Encoding: chunked" && expect_eq 413 "$(code)" &&
	get /stock/SKU-1 && expect_eq 200 "$(code)"
'

test_expect_success 'a client that stalls mid-request is disconnected after --timeout' '
	start_api slow -q $Q --timeout 1 &&
	exec 3<>/dev/tcp/127.0.0.1/${API##*:} &&
	printf "POST /order HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n{" >&3 &&
	start=$(date +%s) && timeout 10 cat <&3 >/dev/null && end=$(date +%s) &&
	exec 3<&- &&
	test $((end - start)) -le 3 &&
	curl -s -o /dev/null -w "%{http_code}" "$API/stock/SKU-1" >code && expect_eq 200 "$(cat code)" &&
	kill -TERM $slow_PID && wait $slow_PID
'

test_expect_success 'SIGTERM during a burst answers what it took, then exits 0' '
	start_api term -q $Q &&
	{ curl -s --parallel --parallel-max 20 -o "t/#1" --create-dirs -w "%{http_code}\n" \
		-d "{\"sku\":\"P-5\",\"quantity\":1}" "$API/order?n=[1-2000]" >codes & } &&
	wait_for "[ \$(ls t 2>/dev/null | wc -l) -ge 20 ]" 20 "20 answers of the burst" &&
	kill -TERM $term_PID && wait $term_PID && wait &&
	! grep -v "^\(201\|409\|503\|000\)$" codes && grep -q "^409$" codes &&
	expect_eq "$(grep -c "^201$" codes)" "$(sql "SELECT count(*) FROM orders WHERE sku = \$\$P-5\$\$")"
'

kill -TERM $api_PID && wait $api_PID
echo $? >"$TRASH/api.status"
test_expect_success 'SIGTERM stops the server with status 0 and nothing on stderr' '
	expect_eq 0 "$(cat "$TRASH/api.status")" && expect_eq 0 "$(lines "$TRASH/api.err")"
'

test_done
