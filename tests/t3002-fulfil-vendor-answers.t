#!/usr/bin/env bash
# Only the vendor API's own answers decide an order: 401, 404, an HTML 200, a vendor that never answers or drops the connection leave it pending and reserved.
. "$(dirname "$0")/lib.sh"

# order ID VENDOR: a pending order of 2 X-1 from VENDOR, its units held as order-place would hold them
order() {
	sql "INSERT INTO orders (id, sku, quantity, vendor) VALUES ($1, 'X-1', 2, '$2');
	     INSERT INTO vendor_stock (vendor, sku, quantity, reserved) VALUES ('$2', 'X-1', 1000, 2)
	     ON CONFLICT (sku, vendor) DO UPDATE SET reserved = vendor_stock.reserved + 2"
}
line() { echo "{\"order_id\":$1}"; }
reserved() { sql "SELECT reserved FROM vendor_stock WHERE vendor = '$1' AND sku = 'X-1'"; }
row() { sql "SELECT status || ' ' || attempts FROM orders WHERE id = $1"; }
answer() { jq -r --argjson id "$1" 'select(.order_id == $id) | .status' "$2" | xargs; }

echo '[{"sku":"X-1","quantity":1000}]' >"$TRASH/x.json"
echo '[{"sku":"X-1","quantity":1}]' >"$TRASH/short.json"
vendors=
for v in acme auth gone html hang drop short; do
	f=$TRASH/x.json; [ $v = short ] && f=$TRASH/short.json
	vendors="$vendors --vendor $v=$f"
done
# shellcheck disable=SC2086
start_vendor_mock $vendors --answer auth='401:{"error":"unauthorized"}' --answer gone=404 \
	--answer html='200:<html><body>Service moved</body></html>' --hang hang --drop drop || exit 1

for c in 'auth 401' 'gone 404' 'html 200'; do
	set -- $c
	test_expect_success "a vendor answering HTTP $2 ($1): retry, the order still pending and reserved, the reason on stderr" "
		id=\$((3000 + $2)) && order \$id $1 && line \$id >in &&
		fulfil <in >out 2>err &&
		expect_eq retry \"\$(jq -r .status out)\" &&
		expect_grep 'vendor $1 answered HTTP $2' out &&
		expect_grep 'order '\$id': vendor $1 answered HTTP $2.*stays pending and reserved' err &&
		expect_eq 'pending 1' \"\$(row \$id)\" order &&
		expect_eq 2 \"\$(reserved $1)\" reserved
	"
done

test_expect_success 'after --max-attempts such an answer is "dead": still pending and reserved, never failed' '
	line 3401 >in && line 3401 >>in &&
	fulfil --max-attempts 3 <in >out 2>err &&
	expect_eq "retry dead" "$(answer 3401 out)" &&
	expect_grep "dead-letter queue" err &&
	expect_eq "pending 3" "$(row 3401)" "order" &&
	expect_eq 2 "$(reserved auth)" "reserved"
'

test_expect_success 'a 409 insufficient_stock fails the order and releases its stock' '
	order 3409 short && line 3409 >in &&
	fulfil <in >out 2>err &&
	expect_eq "failed insufficient_stock" "$(jq -r "\"\(.status) \(.reason)\"" out)" &&
	expect_eq "failed 1" "$(row 3409)" "order" && expect_eq 0 "$(reserved short)" "reserved"
'

test_expect_success 'a vendor that never answers and one that drops connections: retry, then dead, the order pending and reserved' '
	order 3501 hang && order 3502 drop &&
	{ line 3501 && line 3502 && line 3501 && line 3502; } >in &&
	fulfil --timeout 1 --max-attempts 2 <in >out 2>err &&
	expect_eq "retry dead" "$(answer 3501 out)" && expect_eq "retry dead" "$(answer 3502 out)" &&
	expect_grep "vendor hang: .*timed out" out && expect_grep "vendor drop: " out &&
	expect_eq "pending 2" "$(row 3501)" && expect_eq "pending 2" "$(row 3502)" &&
	expect_eq 2 "$(reserved hang)" "reserved (hang)" && expect_eq 2 "$(reserved drop)" "reserved (drop)"
'

test_expect_success 'a vendor still unreachable after --max-attempts never fails the order: dead, stock kept' '
	order 3503 drop && line 3503 >in &&
	fulfil --max-attempts 1 <in >out 2>err &&
	expect_eq "dead" "$(jq -r .status out)" &&
	expect_grep "without an answer; it stays pending and reserved" err &&
	expect_eq "pending 1" "$(row 3503)" && expect_eq 4 "$(reserved drop)" "reserved (3502 and 3503)"
'

test_expect_success 'with OA_MATCH=order_id a healthy order is answered before an earlier one whose vendor hangs' '
	order 3601 hang && order 3602 acme && { line 3601 && line 3602; } >in &&
	start=$(date +%s.%N) &&
	OA_MATCH=order_id fulfil --timeout 3 <in >out 2>err &&
	expect_eq "3602 3601" "$(jq -r "select(.status != \"park\") | .order_id" out | xargs)" "answer order" &&
	expect_eq "success retry" "$(jq -r "select(.status != \"park\") | .status" out | xargs)"
'

test_expect_success 'without OA_MATCH answers keep input order' '
	order 3603 hang && order 3604 acme && { line 3603 && line 3604; } >in &&
	fulfil --timeout 1 <in >out 2>err &&
	expect_eq "3603 3604" "$(jq -r .order_id out | xargs)" "answer order"
'

test_expect_success 'OA_MATCH naming another field is a usage error' '
	OA_MATCH=sku test_expect_code 64 fulfil </dev/null >out 2>err &&
	expect_grep "OA_MATCH=sku: fulfil answers by order_id (amqp-consume --match order_id)" err
'

test_done
