#!/usr/bin/env bash
# vendor-mock serves SPEC §4: stock, idempotent orders, injected faults, and exits cleanly.
. "$(dirname "$0")/lib.sh"

cat >"$TRASH/cat.json" <<'EOF'
[
 {"sku":"SKU-1","name":"Widget","quantity":12,"price_cents":1999},
 {"sku":"SKU-2","name":"Gadget","quantity":0,"colour":"blue"},
 {"sku":"SKU-3","quantity":3}
]
EOF

# post VENDOR BODY: POST an order; the status goes to stdout, the body to file "body".
post() {
	curl -s -o body -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
		-d "$2" "$VENDOR_BASE_URL/vendor/$1/orders"
}
# get PATH: GET; the status goes to stdout, the body to file "body".
get() { curl -s -o body -w '%{http_code}' "$VENDOR_BASE_URL$1"; }
vstat() { curl -s "$VENDOR_BASE_URL/_stats" | jq -r ".vendors.$1.$2"; }

start_vendor_mock --vendor acme="$TRASH/cat.json" --generate globex:25 --seed 7 --log "$TRASH/requests.log" || exit 1
MOCK_PIDS=$VENDOR_MOCK_PID

test_expect_success 'the listening line names the address and the port actually bound' '
	case $VENDOR_BASE_URL in http://127.0.0.1:0) false ;; http://127.0.0.1:[0-9]*) true ;; *) false ;; esac
'

test_expect_success 'stock from a file lists every item with its fields as written' '
	expect_eq 200 "$(get /vendor/acme/stock)" status &&
	expect_eq 3 "$(jq length body)" items &&
	expect_eq "12 0 3" "$(jq -r "[.[].quantity] | join(\" \")" body)" quantities &&
	expect_eq blue "$(jq -r ".[1].colour" body)" "passed-through field"
'

test_expect_success 'a generated catalogue has COUNT items with zero-padded SKUs' '
	expect_eq 200 "$(get /vendor/globex/stock)" status &&
	expect_eq 25 "$(jq length body)" items &&
	expect_eq SKU-000001 "$(jq -r ".[0].sku" body)" "first sku" &&
	expect_eq SKU-000025 "$(jq -r ".[24].sku" body)" "last sku" &&
	expect_eq 25 "$(jq "[.[] | select(.quantity >= 1 and .quantity <= 1000 and (.price_cents | type) == \"number\")] | length" body)" "well-formed items"
'

test_expect_success 'the same --seed generates the same catalogue' '
	get /vendor/globex/stock >/dev/null && mv body first &&
	start_server seed2 vendor-mock --generate globex:25 --seed 7 &&
	curl -s -o second "$SERVER_URL/vendor/globex/stock" &&
	test_cmp first second
'

test_expect_success 'an unknown vendor is 404 unknown_vendor' '
	expect_eq 404 "$(get /vendor/nobody/stock)" status &&
	expect_eq unknown_vendor "$(jq -r .error body)" error
'

test_expect_success 'an order is accepted and the stock goes down by its quantity' '
	expect_eq 201 "$(post acme "{\"order_id\":1,\"sku\":\"SKU-1\",\"quantity\":5}")" status &&
	expect_eq "{\"order_id\":1,\"status\":\"accepted\"}" "$(cat body)" body &&
	get /vendor/acme/stock >/dev/null &&
	expect_eq 7 "$(jq ".[0].quantity" body)" "quantity left"
'

test_expect_success 'the same order_id again gets the same answer and sells nothing more' '
	expect_eq 201 "$(post acme "{\"order_id\":1,\"sku\":\"SKU-1\",\"quantity\":5}")" status &&
	expect_eq "{\"order_id\":1,\"status\":\"accepted\"}" "$(cat body)" body &&
	expect_eq 201 "$(post acme "{\"order_id\":\"1\",\"sku\":\"SKU-1\",\"quantity\":5}")" "status as a string" &&
	get /vendor/acme/stock >/dev/null &&
	expect_eq 7 "$(jq ".[0].quantity" body)" "quantity left" &&
	expect_eq 5 "$(vstat acme units_sold)" units_sold &&
	expect_eq 1 "$(vstat acme orders_accepted)" orders_accepted &&
	expect_eq 2 "$(vstat acme duplicate_orders)" duplicate_orders
'

test_expect_success 'an order for more than the stock is 409 insufficient_stock, and stays refused' '
	expect_eq 409 "$(post acme "{\"order_id\":2,\"sku\":\"SKU-3\",\"quantity\":4}")" status &&
	expect_eq insufficient_stock "$(jq -r .error body)" error &&
	expect_eq 201 "$(post acme "{\"order_id\":3,\"sku\":\"SKU-3\",\"quantity\":3}")" "exact stock" &&
	expect_eq 409 "$(post acme "{\"order_id\":4,\"sku\":\"SKU-3\",\"quantity\":1}")" "stock now 0" &&
	expect_eq 409 "$(post acme "{\"order_id\":2,\"sku\":\"SKU-3\",\"quantity\":1}")" "repeated refusal"
'

test_expect_success 'concurrent orders and repeats never sell a unit twice or oversell' '
	for i in $(seq 1 30); do
		echo "{\"order_id\":\"c-$i\",\"sku\":\"SKU-000005\",\"quantity\":50}"
		echo "{\"order_id\":\"c-$i\",\"sku\":\"SKU-000005\",\"quantity\":50}"
	done >orders &&
	get /vendor/globex/stock >/dev/null && have=$(jq ".[4].quantity" body) &&
	xargs -P 16 -I{} -d "\n" curl -s -o /dev/null -w "%{http_code}\n" -X POST -d {} \
		"$VENDOR_BASE_URL/vendor/globex/orders" <orders >codes &&
	expect_eq 60 "$(lines codes)" answers &&
	accepted=$(grep -c "^201" codes) && refused=$(grep -c "^409" codes) &&
	expect_eq $((have / 50 * 2)) "$accepted" "201 answers (each order twice)" &&
	expect_eq 60 $((accepted + refused)) "201 + 409 answers" &&
	get /vendor/globex/stock >/dev/null &&
	expect_eq $((have % 50)) "$(jq ".[4].quantity" body)" "quantity left" &&
	expect_eq 30 "$(curl -s "$VENDOR_BASE_URL/_stats" | jq .vendors.globex.duplicate_orders)" duplicates
'

test_expect_success 'an unknown SKU is 409 unknown_sku' '
	expect_eq 409 "$(post acme "{\"order_id\":5,\"sku\":\"SKU-404\",\"quantity\":1}")" status &&
	expect_eq unknown_sku "$(jq -r .error body)" error &&
	expect_eq 409 "$(post globex "{\"order_id\":5,\"sku\":\"SKU-000026\",\"quantity\":1}")" "past the last generated sku"
'

test_expect_success 'a generated item can be ordered by its SKU' '
	get /vendor/globex/stock >/dev/null && before=$(jq ".[2].quantity" body) &&
	expect_eq 201 "$(post globex "{\"order_id\":\"g-1\",\"sku\":\"SKU-000003\",\"quantity\":1}")" status &&
	get /vendor/globex/stock >/dev/null &&
	expect_eq $((before - 1)) "$(jq ".[2].quantity" body)" "quantity left"
'

test_expect_success 'malformed orders are 400 and change nothing' '
	sold=$(vstat acme units_sold) &&
	expect_eq 400 "$(post acme "not json")" "not json" &&
	expect_eq 400 "$(post acme "{\"sku\":\"SKU-1\",\"quantity\":1}")" "no order_id" &&
	expect_eq 400 "$(post acme "{\"order_id\":9,\"sku\":\"SKU-1\",\"quantity\":0}")" "zero quantity" &&
	expect_eq 400 "$(post acme "{\"order_id\":9,\"sku\":\"SKU-1\",\"quantity\":1.5}")" "fractional quantity" &&
	expect_eq 400 "$(post acme "{\"order_id\":[1],\"sku\":\"SKU-1\",\"quantity\":1}")" "array order_id" &&
	expect_eq invalid_request "$(jq -r .error body)" error &&
	expect_eq "$sold" "$(vstat acme units_sold)" units_sold
'

test_expect_success 'a body over 64 KiB is 413' '
	head -c 70000 /dev/zero | tr "\0" x >big &&
	code=$(curl -s -o body -w "%{http_code}" -X POST --data-binary @big "$VENDOR_BASE_URL/vendor/acme/orders") &&
	expect_eq 413 "$code" status
'

test_expect_success 'a wrong method is 405 and an unknown path 404' '
	code=$(curl -s -o body -w "%{http_code}" -X DELETE "$VENDOR_BASE_URL/vendor/acme/stock") &&
	expect_eq 405 "$code" "DELETE stock" &&
	expect_eq 404 "$(get /vendor/acme/nothing)" "unknown endpoint" &&
	expect_eq 404 "$(get /)" root
'

test_expect_success 'one connection serves several requests (keep-alive)' '
	curl -s -v -o /dev/null -o /dev/null "$VENDOR_BASE_URL/vendor/acme/stock" "$VENDOR_BASE_URL/vendor/globex/stock" 2>verbose &&
	expect_grep "Re-using existing connection" verbose
'

test_expect_success 'the log has one JSON line per request, with the order_id' '
	expect_grep "\"order_id\":\"g-1\"" requests.log &&
	expect_eq 1 "$(jq -c "select(.status == 404 and .path == \"/vendor/nobody/stock\")" requests.log | wc -l)" "404 lines"
'

test_expect_success 'an address already in use exits 69 saying which' '
	test_expect_code 69 vendor-mock --listen "${VENDOR_BASE_URL#http://}" --generate a:1 >out4 2>err4 &&
	expect_grep "cannot listen on ${VENDOR_BASE_URL#http://}" err4 && test ! -s out4
'

test_expect_success 'SIGTERM stops vendor-mock with status 0' '
	start_server term3 vendor-mock --generate a:3 &&
	curl -s -o /dev/null "$SERVER_URL/vendor/a/stock" &&
	kill -TERM $SERVER_PID && test_expect_code 0 wait $SERVER_PID &&
	test ! -s "$TRASH/term3.err"
'

# start_other ARGS...: a second mock; sets OTHER_URL, OTHER_PID.
start_other() {
	local saved=$VENDOR_BASE_URL savedpid=$VENDOR_MOCK_PID
	start_vendor_mock "$@" || return 1
	OTHER_URL=$VENDOR_BASE_URL OTHER_PID=$VENDOR_MOCK_PID
	MOCK_PIDS="$MOCK_PIDS $OTHER_PID"
	VENDOR_BASE_URL=$saved VENDOR_MOCK_PID=$savedpid
}

start_other --generate flaky:5 --generate steady:5 --fail-first flaky=2 --retry-after 1 || exit 1

test_expect_success '--fail-first 2 fails the first two requests with 503, then serves' '
	s1=$(curl -s -D h1 -o b1 -w "%{http_code}" "$OTHER_URL/vendor/flaky/stock") &&
	s2=$(curl -s -o b2 -w "%{http_code}" -X POST -d "{\"order_id\":1,\"sku\":\"SKU-000001\",\"quantity\":1}" "$OTHER_URL/vendor/flaky/orders") &&
	s3=$(curl -s -o b3 -w "%{http_code}" "$OTHER_URL/vendor/flaky/stock") &&
	expect_eq "503 503 200" "$s1 $s2 $s3" statuses &&
	expect_eq injected_failure "$(jq -r .error b1)" error &&
	grep -qi "^Retry-After: 1" h1 &&
	expect_eq 5 "$(jq length b3)" items &&
	expect_eq 200 "$(curl -s -o /dev/null -w "%{http_code}" "$OTHER_URL/vendor/steady/stock")" "other vendor unaffected"
'

test_expect_success 'an injected failure changes no stock and is not remembered' '
	code=$(curl -s -o b -w "%{http_code}" -X POST -d "{\"order_id\":1,\"sku\":\"SKU-000001\",\"quantity\":1}" "$OTHER_URL/vendor/flaky/orders") &&
	expect_eq 201 "$code" "retried order" &&
	st=$(curl -s "$OTHER_URL/_stats") &&
	expect_eq "2 1 1" "$(echo "$st" | jq -r ".vendors.flaky | \"\(.injected_failures) \(.orders_accepted) \(.units_sold)\"")" stats
'

start_other --generate down:5 --fail-rate 1 --fail-status 500 || exit 1

test_expect_success '--fail-rate 1 fails every request with --fail-status' '
	for i in 1 2 3 4 5; do
		expect_eq 500 "$(curl -s -o /dev/null -w "%{http_code}" "$OTHER_URL/vendor/down/stock")" "request $i" || exit 1
	done &&
	expect_eq 5 "$(curl -s "$OTHER_URL/_stats" | jq .vendors.down.injected_failures)" injected
'

start_other --generate slow:1 --generate fast:1 --latency slow=300 || exit 1

test_expect_success '--latency delays only the vendor it names' '
	t=$(curl -s -o /dev/null -w "%{time_total}" "$OTHER_URL/vendor/slow/stock") &&
	awk -v t="$t" "BEGIN { exit !(t >= 0.3) }" &&
	t=$(curl -s -o /dev/null -w "%{time_total}" "$OTHER_URL/vendor/fast/stock") &&
	awk -v t="$t" "BEGIN { exit !(t < 0.3) }"
'

start_other --generate slow:1 --generate fast:1 --latency slow=3000 || exit 1

test_expect_success '--latency holds 200 requests at once without a thread each; another vendor answers meanwhile' '
	port=${OTHER_URL##*:} &&
	for i in $(seq 200); do echo "url = \"$OTHER_URL/vendor/slow/stock\""; echo "output = /dev/null"; done >burst.cfg &&
	{ curl -s --parallel --parallel-immediate --parallel-max 200 -K burst.cfg -w "%{http_code} %{time_total}\n" >burst.out 2>burst.err & } &&
	burst=$! &&
	wait_for "[ \$(ss -Htn state established \"( sport = :$port )\" | wc -l) -ge 200 ]" 10 "200 connections held" &&
	threads=$(awk "/^Threads:/ { print \$2 }" /proc/$OTHER_PID/status) &&
	test "$threads" -lt 20 || fail "vendor-mock runs $threads threads for 200 held requests" &&
	t=$(curl -s -o /dev/null -w "%{time_total}" "$OTHER_URL/vendor/fast/stock") &&
	awk -v t="$t" "BEGIN { exit !(t < 1) }" || fail "the fast vendor took $t s beside 200 held requests" &&
	wait $burst &&
	expect_eq 200 "$(grep -c "^200 " burst.out)" "held requests answered 200" &&
	expect_eq 0 "$(awk "\$2 < 3" burst.out | wc -l)" "held requests answered before 3 s"
'

start_other --generate huge:1000000 || exit 1

test_expect_success 'a 1,000,000-item catalogue streams whole' '
	start=$(date +%s) &&
	curl -s -o huge.json "$OTHER_URL/vendor/huge/stock" &&
	expect_eq 1000000 "$(jq length huge.json)" items &&
	expect_eq SKU-1000000 "$(tail -c 100 huge.json | sed -n "s/.*\"sku\":\"\([^\"]*\)\".*/\1/p")" "last sku" &&
	test $(($(date +%s) - start)) -lt 60
'

test_expect_success 'a catalogue item without a quantity exits 65 naming the file and item' '
	echo "[{\"sku\":\"A\",\"quantity\":1},{\"sku\":\"B\"}]" >bad.json &&
	test_expect_code 65 vendor-mock --listen 127.0.0.1:0 --vendor x=bad.json >out1 2>err1 &&
	expect_grep "bad.json: item 2" err1 && test ! -s out1
'

test_expect_success 'a catalogue that is not JSON exits 65' '
	echo "[{" >bad2.json &&
	test_expect_code 65 vendor-mock --listen 127.0.0.1:0 --vendor x=bad2.json
'

test_expect_success 'a missing catalogue file exits 66' '
	test_expect_code 66 vendor-mock --listen 127.0.0.1:0 --vendor x=/nonexistent/cat.json
'

# Stopped here rather than in a test body, which runs in a subshell and cannot wait for them.
statuses=
for pid in $MOCK_PIDS; do
	kill -TERM "$pid" && wait "$pid"
	statuses="$statuses $?"
done
test_expect_success 'every mock above exits 0 on SIGTERM and wrote nothing on stderr' '
	expect_eq "$(echo "$MOCK_PIDS" | sed "s/[0-9][0-9]*/0/g")" "${statuses# }" statuses &&
	for f in "$TRASH"/vendor-mock.*.err; do test ! -s "$f" || { cat "$f" >&2; exit 1; }; done
'

# Each row also gives a vendor, so that only the flag in question is wrong.
test_option_errors vendor-mock <<\EOF
--fail-rate 1.5 --generate zz:1            | option --fail-rate
--fail-rate x --generate zz:1              | option --fail-rate
--fail-first -1 --generate zz:1            | option --fail-first
--fail-first acme= --generate zz:1         | option --fail-first
--latency =5 --generate zz:1               | option --latency
--fail-status 200 --generate zz:1          | option --fail-status
--retry-after -3 --generate zz:1           | option --retry-after
--seed x --generate zz:1                   | option --seed
--listen 127.0.0.1 --generate zz:1         | option --listen
--listen 127.0.0.1:70000 --generate zz:1   | option --listen
--generate big --generate zz:1             | option --generate
--generate big:-1 --generate zz:1          | option --generate
--vendor acme --generate zz:1              | option --vendor
--fail-first nobody=1 --generate zz:1      | no vendor "nobody"
--bogus --generate zz:1                    | '--bogus'
--listen 127.0.0.1:0                       | no vendor
EOF

test_done
