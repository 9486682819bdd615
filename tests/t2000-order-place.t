#!/usr/bin/env bash
# order-place reserves one vendor's stock per order, answers one line per request, and keeps keys idempotent.
. "$(dirname "$0")/lib.sh"

# stock VENDOR SKU QUANTITY...: put vendor stock in (triples)
stock() {
	local values="" sep=""
	while [ $# -ge 3 ]; do
		values="$values$sep('$1', '$2', $3)"; sep=", "; shift 3
	done
	sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES $values"
}
reserved() { sql "SELECT reserved FROM vendor_stock WHERE vendor = '$1' AND sku = '$2'"; }

stock acme SKU-1 5 globex SKU-1 8 acme SKU-2 3 acme SKU-3 4

test_expect_success 'the command-line form places a pending order and reserves its quantity' '
	order-place SKU-3 2 >out &&
	expect_eq 1 "$(lines out)" lines &&
	expect_eq "SKU-3 2 acme pending" "$(jq -r "\"\(.sku) \(.quantity) \(.vendor) \(.status)\"" out)" answer &&
	id=$(jq -r .order_id out) &&
	expect_eq "SKU-3|2|acme|pending" "$(sql "SELECT sku, quantity, vendor, status FROM orders WHERE id = $id")" row &&
	expect_eq 2 "$(reserved acme SKU-3)" reserved &&
	expect_eq null "$(jq .key out)" "key omitted"
'

test_expect_success 'the vendor with the most available stock is chosen' '
	order-place SKU-1 2 >out &&
	expect_eq globex "$(jq -r .vendor out)" vendor &&
	expect_eq 2 "$(reserved globex SKU-1)" "globex reserved" &&
	expect_eq 0 "$(reserved acme SKU-1)" "acme reserved"
'

test_expect_success 'a quantity no single vendor covers is insufficient_stock even if the sum would' '
	order-place SKU-1 7 >out &&
	expect_eq "rejected insufficient_stock 7" "$(jq -r "\"\(.status) \(.error) \(.quantity)\"" out)" answer &&
	expect_eq null "$(jq .order_id out)" "no order id" &&
	expect_eq "0 2" "$(reserved acme SKU-1) $(reserved globex SKU-1)" "reservations unchanged" &&
	expect_eq 2 "$(sql "SELECT count(*) FROM orders")" orders
'

test_expect_success 'a SKU no vendor lists is unknown_sku' '
	order-place NO-SUCH-SKU 1 >out &&
	expect_eq "rejected unknown_sku" "$(jq -r "\"\(.status) \(.error)\"" out)" answer
'

test_expect_success 'requests on stdin are answered one line each, in input order, rejections included' '
	cat >in <<-\EOF &&
	{"sku":"SKU-2","quantity":2,"key":"a"}
	{"sku":"SKU-2","quantity":2,"key":"b"}
	{"sku":"NOPE","quantity":1}
	{"sku":"SKU-2","quantity":1,"key":"c"}
	EOF
	order-place <in >out &&
	expect_eq "a:pending b:rejected null:rejected c:pending" \
		"$(jq -r "\"\(.key):\(.status)\"" out | tr "\n" " " | sed "s/ $//")" answers &&
	expect_eq insufficient_stock "$(sed -n 2p out | jq -r .error)" "second error" &&
	expect_eq unknown_sku "$(sed -n 3p out | jq -r .error)" "third error" &&
	expect_eq 3 "$(reserved acme SKU-2)" reserved
'

test_expect_success 'the same key twice in one stream gives one order, reserved once' '
	sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES (\$\$acme\$\$, \$\$SKU-4\$\$, 10)" &&
	printf "%s\n" "{\"sku\":\"SKU-4\",\"quantity\":3,\"key\":\"same\"}" \
		"{\"sku\":\"SKU-4\",\"quantity\":3,\"key\":\"same\"}" >in &&
	order-place <in >out &&
	expect_eq 2 "$(lines out)" lines &&
	expect_eq 1 "$(jq -r .order_id out | sort -u | wc -l)" "distinct order ids" &&
	expect_eq 1 "$(sql "SELECT count(*) FROM orders WHERE idempotency_key = \$\$same\$\$")" orders &&
	expect_eq 3 "$(reserved acme SKU-4)" reserved
'

test_expect_success 'a key seen before returns the original order, even in a later run' '
	order-place -k same SKU-4 3 >out &&
	first=$(sql "SELECT id FROM orders WHERE idempotency_key = \$\$same\$\$") &&
	expect_eq "$first pending same" "$(jq -r "\"\(.order_id) \(.status) \(.key)\"" out)" answer &&
	expect_eq 3 "$(reserved acme SKU-4)" reserved
'

test_expect_success 'a repeated key answers with the current status of its order' '
	sql "UPDATE orders SET status = \$\$success\$\$ WHERE idempotency_key = \$\$same\$\$" &&
	echo "{\"sku\":\"SKU-4\",\"quantity\":3,\"key\":\"same\"}" >in &&
	order-place <in >out &&
	expect_eq success "$(jq -r .status out)" status &&
	expect_eq 3 "$(reserved acme SKU-4)" reserved
'

test_expect_success 'a key another transaction commits while the order waits is answered with that order' '
	stock acme RACE 10 globex RACE 5 &&
	psql -Xq -d "$DATABASE_URL" -c "BEGIN; INSERT INTO orders (sku, quantity, vendor, idempotency_key)
		VALUES (\$\$RACE\$\$, 1, \$\$globex\$\$, \$\$race\$\$); SELECT pg_sleep(1.5); COMMIT" >/dev/null &
	sleep 0.5
	order-place -k race RACE 1 >out &&
	wait &&
	expect_eq "$(sql "SELECT id FROM orders WHERE idempotency_key = \$\$race\$\$") globex" \
		"$(jq -r "\"\(.order_id) \(.vendor)\"" out)" "the other transaction order" &&
	expect_eq "0 0" "$(reserved acme RACE) $(reserved globex RACE)" "nothing reserved"
'

test_expect_success 'a deadlock with another transaction is retried and still answered right' '
	stock acme DEAD 10 &&
	psql -Xq -d "$DATABASE_URL" -c "BEGIN; INSERT INTO orders (sku, quantity, vendor, idempotency_key)
		VALUES (\$\$DEAD\$\$, 1, \$\$acme\$\$, \$\$dead\$\$); SELECT pg_sleep(1);
		UPDATE vendor_stock SET reserved = reserved + 1 WHERE sku = \$\$DEAD\$\$; COMMIT" >/dev/null 2>psql.err &
	sleep 0.3
	OA_DEBUG=1 order-place -k dead DEAD 1 >out 2>err &&
	wait &&
	expect_grep "deadlock detected" err &&
	expect_eq "$(sql "SELECT id FROM orders WHERE idempotency_key = \$\$dead\$\$") acme" \
		"$(jq -r "\"\(.order_id) \(.vendor)\"" out)" "the other transaction order" &&
	expect_eq 1 "$(reserved acme DEAD)" "reserved once"
'

test_expect_code 65 'malformed lines are reported with their line number and the valid ones still placed' '
	cat >in <<-\EOF
	{"sku":"SKU-4","quantity":1,"key":"v1"}
	not json
	{"sku":"SKU-4"}
	{"sku":"","quantity":1}
	{"sku":"SKU-4","quantity":0,"key":"k0"}
	{"sku":"SKU-4","quantity":1.5}
	{"sku":"SKU-4","quantity":1,"key":7}
	[1,2]
	{"sku":"SKU-4","quantity":1,"key":"v2"}
	EOF
	order-place <in >out 2>err
	rc=$?
	expect_eq 9 "$(lines out)" "answer lines" &&
	expect_eq "pending rejected rejected rejected rejected rejected rejected rejected pending" \
		"$(jq -r .status out | tr "\n" " " | sed "s/ $//")" statuses &&
	expect_eq 7 "$(jq -r "select(.error == \"invalid_request\")" out | jq -s length)" invalid &&
	expect_eq "SKU-4 0 k0" "$(sed -n 5p out | jq -r "\"\(.sku) \(.quantity) \(.key)\"")" "fields echoed" &&
	for n in 2 3 4 5 6 7 8; do expect_grep "^order-place: line $n: " err || exit 1; done &&
	expect_eq 7 "$(lines err)" "stderr lines" &&
	expect_eq 2 "$(sql "SELECT count(*) FROM orders WHERE idempotency_key IN (\$\$v1\$\$, \$\$v2\$\$)")" placed &&
	exit $rc
'

test_expect_success 'an answer is written as soon as its batch commits, not at end of input' '
	mkfifo req
	{ echo "{\"sku\":\"SKU-3\",\"quantity\":1,\"key\":\"early\"}"; sleep 3; } >req &
	order-place <req >out &
	pid=$!
	for i in $(seq 1 40); do [ -s out ] && break; sleep 0.05; done
	expect_eq 1 "$(lines out)" "answers while input is still open" &&
	kill -0 $pid &&
	wait $pid
'

test_expect_code 74 'a failing standard output exits 74 saying the order was committed' '
	order-place -k full SKU-3 1 >/dev/full 2>err
	rc=$?
	expect_grep "committed" err &&
	expect_eq 1 "$(sql "SELECT count(*) FROM orders WHERE idempotency_key = \$\$full\$\$")" "committed order" &&
	exit $rc
'

test_expect_success '--stats writes one line of counts and commit latencies to stderr, stdout unchanged' '
	stock acme STATS 100 &&
	printf "%s\n" "{\"sku\":\"STATS\",\"quantity\":1}" "{\"sku\":\"STATS\",\"quantity\":2}" \
		"{\"sku\":\"NOPE\",\"quantity\":1}" "{\"sku\":\"STATS\",\"quantity\":3}" >in &&
	order-place --stats <in >out 2>err &&
	order-place <in >plain 2>plain.err &&
	expect_eq "$(jq -c "del(.order_id)" plain)" "$(jq -c "del(.order_id)" out)" "answers without order ids" &&
	test ! -s plain.err || fail "stderr without --stats" &&
	expect_eq 1 "$(lines err)" "stderr lines" &&
	expect_eq "4 3 1" "$(jq -r "\"\(.requests) \(.orders) \(.transactions)\"" err)" "requests orders transactions" &&
	jq -e ".commit_ms_p50 > 0 and .commit_ms_p99 >= .commit_ms_p50 and .commit_ms_p99 < 10000" err >/dev/null ||
		fail "latencies not sane: $(cat err)"
'

test_expect_code 65 '--stats counts no transaction for a stream of invalid requests only' '
	echo "{\"sku\":\"STATS\"}" | order-place --stats >out 2>err
	rc=$?
	expect_eq 2 "$(lines err)" "stderr lines" &&
	expect_eq "1 0 0 null null" "$(tail -n 1 err | jq -r "\"\(.requests) \(.orders) \(.transactions) \(.commit_ms_p50) \(.commit_ms_p99)\"")" stats &&
	exit $rc
'

test_expect_success 'option and argument errors exit 64 with empty output' '
	for args in "--bogus" "-b 0" "-b x" "SKU-1" "SKU-1 0" "SKU-1 abc" "SKU-1 1 extra" "-k k" "--stats=1"; do
		order-place $args >out 2>err </dev/null
		rc=$?
		expect_eq 64 $rc "status of order-place $args" || exit 1
		test ! -s out || fail "output from order-place $args" || exit 1
		expect_grep "^order-place: \|^usage:" err || exit 1
	done
'

test_expect_success '--help prints usage on stdout and exits 0' '
	order-place --help >out && expect_grep "^usage: order-place" out
'

test_expect_code 69 'an unreachable database exits 69 saying nothing was placed' '
	echo "{\"sku\":\"SKU-4\",\"quantity\":1}" >in &&
	DATABASE_URL=postgresql://nobody:secret@localhost/x?host=/nonexistent OA_DB_PATIENCE=0 order-place <in >out 2>err
	rc=$?
	expect_grep "no order was placed" err && ! grep -q secret err && test ! -s out && exit $rc
'

test_expect_code 69 'losing the database mid-stream says what was printed and exits 69' '
	echo "{\"sku\":\"SKU-4\",\"quantity\":1}" >in &&
	mkfifo fifo
	{ cat in; sleep 2; cat in; } >fifo &
	order-place <fifo >out 2>err &
	pid=$!
	sleep 1
	psql -Xq -d "$BASE_DATABASE_URL" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \$\$$TEST_DB\$\$ AND application_name = \$\$order-place\$\$" >/dev/null
	wait $pid
	rc=$?
	expect_eq 1 "$(lines out)" "answers printed" &&
	expect_grep "1 answers printed, all committed" err && exit $rc
'

test_done
