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
# other_session: a psql session (application "other") reading SQL from fd 3 of
# the caller, so a transaction can be opened, held and ended step by step
other_session() {
	rm -f other.sql && mkfifo other.sql &&
	{ PGAPPNAME=other psql -Xq -v ON_ERROR_STOP=1 -d "$DATABASE_URL" <other.sql >other.out 2>other.err & } &&
	other=$! && on_exit "kill $other" && exec 3>other.sql
}
# backends WHERE: how many sessions on this test database match WHERE
backends() { sql "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND $1"; }
# until_inserted: the other session has run its INSERT and waits inside its transaction
until_inserted() {
	wait_for '[ "$(backends "application_name = '"'other'"' AND state = '"'idle in transaction'"'
		AND query LIKE '"'INSERT%'"'")" = 1 ]' 10 "the other session to insert"
}
# until_blocked: order-place waits for a lock (the other session holds it)
until_blocked() {
	wait_for '[ "$(backends "application_name = '"'order-place'"' AND wait_event_type = '"'Lock'"'")" = 1 ]' \
		10 "order-place to wait for the other transaction"
}
# until_disconnected: order-place has no session any more
until_disconnected() {
	wait_for '[ "$(backends "application_name = '"'order-place'"'")" = 0 ]' 10 "order-place's session to end"
}

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
	other_session &&
	echo "BEGIN; INSERT INTO orders (sku, quantity, vendor, idempotency_key)
		VALUES (\$\$RACE\$\$, 1, \$\$globex\$\$, \$\$race\$\$);" >&3 &&
	until_inserted &&
	{ order-place -k race RACE 1 >out 3>&- & } && placing=$! &&
	until_blocked &&
	echo "COMMIT;" >&3 && exec 3>&- && wait $other &&
	wait $placing &&
	expect_eq "$(sql "SELECT id FROM orders WHERE idempotency_key = \$\$race\$\$") globex" \
		"$(jq -r "\"\(.order_id) \(.vendor)\"" out)" "the other transaction order" &&
	expect_eq "0 0" "$(reserved acme RACE) $(reserved globex RACE)" "nothing reserved"
'

test_expect_success 'a deadlock with another transaction is retried and still answered right' '
	stock acme DEAD 10 &&
	other_session &&
	echo "BEGIN; INSERT INTO orders (sku, quantity, vendor, idempotency_key)
		VALUES (\$\$DEAD\$\$, 1, \$\$acme\$\$, \$\$dead\$\$);" >&3 &&
	until_inserted &&
	{ OA_DEBUG=1 order-place -k dead DEAD 1 >out 2>err 3>&- & } && placing=$! &&
	until_blocked &&
	# order-place holds the stock row and waits for the key; taking the row closes the cycle
	echo "UPDATE vendor_stock SET reserved = reserved + 1 WHERE sku = \$\$DEAD\$\$; COMMIT;" >&3 &&
	exec 3>&- && wait $other &&
	wait $placing &&
	expect_grep "deadlock detected" err &&
	expect_eq "$(sql "SELECT id FROM orders WHERE idempotency_key = \$\$dead\$\$") acme" \
		"$(jq -r "\"\(.order_id) \(.vendor)\"" out)" "the other transaction order" &&
	expect_eq 1 "$(reserved acme DEAD)" "reserved once"
'

test_expect_success 'malformed lines are reported with their line number and the valid ones still placed' '
	cat >in <<-\EOF &&
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
	test_expect_code 65 order-place <in >out 2>err &&
	expect_eq 9 "$(lines out)" "answer lines" &&
	expect_eq "pending rejected rejected rejected rejected rejected rejected rejected pending" \
		"$(jq -r .status out | tr "\n" " " | sed "s/ $//")" statuses &&
	expect_eq 7 "$(jq -r "select(.error == \"invalid_request\")" out | jq -s length)" invalid &&
	expect_eq "SKU-4 0 k0" "$(sed -n 5p out | jq -r "\"\(.sku) \(.quantity) \(.key)\"")" "fields echoed" &&
	for n in 2 3 4 5 6 7 8; do expect_grep "^order-place: line $n: " err || exit 1; done &&
	expect_eq 7 "$(lines err)" "stderr lines" &&
	expect_eq 2 "$(sql "SELECT count(*) FROM orders WHERE idempotency_key IN (\$\$v1\$\$, \$\$v2\$\$)")" placed
'

test_expect_success 'an answer is written as soon as its batch commits, not at end of input' '
	mkfifo req &&
	{ order-place <req >out & } && pid=$! && exec 3>req &&
	echo "{\"sku\":\"SKU-3\",\"quantity\":1,\"key\":\"early\"}" >&3 &&
	wait_for "test -s out" 10 "the first answer" &&
	expect_eq 1 "$(lines out)" "answers while input is still open" &&
	kill -0 $pid &&
	exec 3>&- && wait $pid
'

test_expect_success 'a failing standard output exits 74 saying the order was committed' '
	test_expect_code 74 order-place -k full SKU-3 1 >/dev/full 2>err &&
	expect_grep "committed" err &&
	expect_eq 1 "$(sql "SELECT count(*) FROM orders WHERE idempotency_key = \$\$full\$\$")" "committed order"
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

test_expect_success '--stats counts no transaction for a stream of invalid requests only' '
	echo "{\"sku\":\"STATS\"}" >in &&
	test_expect_code 65 order-place --stats <in >out 2>err &&
	expect_eq 2 "$(lines err)" "stderr lines" &&
	expect_eq "1 0 0 null null" "$(tail -n 1 err | jq -r "\"\(.requests) \(.orders) \(.transactions) \(.commit_ms_p50) \(.commit_ms_p99)\"")" stats
'

test_option_errors order-place <<\EOF
--bogus          | '--bogus'
-b 0             | option -b
-b x             | option -b
SKU-1            | usage: order-place
SKU-1 0          | QUANTITY "0"
SKU-1 abc        | QUANTITY "abc"
SKU-1 1 extra    | usage: order-place
-k k             | -k applies to the SKU QUANTITY form
--stats=1        | '--stats' doesn't allow an argument
EOF

test_expect_success '--help prints usage on stdout and exits 0' '
	order-place --help >out && expect_grep "^usage: order-place" out
'

test_expect_success 'an unreachable database exits 69 saying nothing was placed' '
	echo "{\"sku\":\"SKU-4\",\"quantity\":1}" >in &&
	DATABASE_URL=postgresql://nobody:secret@localhost/x?host=/nonexistent OA_DB_PATIENCE=0 \
		test_expect_code 69 order-place <in >out 2>err &&
	expect_grep "no order was placed" err && ! grep -q secret err && test ! -s out
'

test_expect_success 'losing the database mid-stream says what was printed and exits 69' '
	echo "{\"sku\":\"SKU-4\",\"quantity\":1}" >in &&
	mkfifo fifo &&
	{ order-place <fifo >out 2>err & } && pid=$! && exec 3>fifo &&
	cat in >&3 &&
	wait_for "test -s out" 10 "the first answer" &&
	psql -Xq -d "$BASE_DATABASE_URL" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \$\$$TEST_DB\$\$ AND application_name = \$\$order-place\$\$" >/dev/null &&
	until_disconnected &&
	# order-place may already have seen the connection drop and exited
	( trap "" PIPE; cat in >&3 ) 2>/dev/null || : &&
	exec 3>&- &&
	test_expect_code 69 wait $pid &&
	expect_eq 1 "$(lines out)" "answers printed" &&
	expect_grep "1 answers printed, all committed" err
'

test_done
