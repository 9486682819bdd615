#!/usr/bin/env bash
# fulfil asks the vendor once per pending order, records the outcome exactly once, and answers in order.
. "$(dirname "$0")/lib.sh"

stat() { curl -s "$VENDOR_BASE_URL/_stats" | jq -r --arg v "$1" --arg f "$2" '.vendors[$v][$f]'; }
# order ID SKU QUANTITY VENDOR: a pending order, its units held as order-place would hold them
order() {
	sql "INSERT INTO orders (id, sku, quantity, vendor) VALUES ($1, '$2', $3, '$4');
	     INSERT INTO vendor_stock (vendor, sku, quantity, reserved) VALUES ('$4', '$2', 1000, $3)
	     ON CONFLICT (sku, vendor) DO UPDATE SET reserved = vendor_stock.reserved + $3"
}
line() { sql "SELECT json_build_object('order_id', id, 'sku', sku, 'quantity', quantity,
	'vendor', vendor, 'status', 'pending') FROM orders WHERE id = $1"; }
reserved() { sql "SELECT reserved FROM vendor_stock WHERE vendor = '$1' AND sku = '$2'"; }
row() { sql "SELECT status || ' ' || attempts || ' ' || coalesce(reason, '-') FROM orders WHERE id = $1"; }
# backends WHERE: how many sessions on this test database match WHERE
backends() { sql "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND $1"; }

cat >"$TRASH/acme.json" <<'EOF'
[{"sku":"A-1","quantity":100},{"sku":"A-2","quantity":1},{"sku":"A-3","quantity":1000}]
EOF
echo '[{"sku":"F-1","quantity":10},{"sku":"F-2","quantity":10}]' >"$TRASH/flaky.json"
echo '[{"sku":"G-1","quantity":10}]' >"$TRASH/once.json"
start_vendor_mock --vendor acme="$TRASH/acme.json" --vendor flaky="$TRASH/flaky.json" \
	--vendor once="$TRASH/once.json" --fail-first flaky=1000000 --fail-first once=1 || exit 1

test_expect_success 'an accepted order becomes success and keeps its reservation' '
	order 101 A-1 2 acme && line 101 >in &&
	fulfil <in >out 2>err &&
	expect_eq "{\"order_id\":101,\"status\":\"success\",\"attempts\":1}" "$(cat out)" &&
	expect_eq "success 1 -" "$(row 101)" "order" &&
	expect_eq t "$(sql "SELECT fulfilled_at IS NOT NULL FROM orders WHERE id = 101")" &&
	expect_eq 2 "$(reserved acme A-1)" "reserved" &&
	expect_eq 1 "$(stat acme orders_accepted)" "accepted by the vendor"
'

test_expect_success 'a refused order (409) fails and its reservation is released' '
	order 102 A-2 3 acme && line 102 >in &&
	fulfil <in >out 2>err &&
	expect_eq "failed insufficient_stock" "$(jq -r "\"\(.status) \(.reason)\"" out)" &&
	expect_eq "failed 1 insufficient_stock" "$(row 102)" "order" &&
	expect_eq 0 "$(reserved acme A-2)" "reserved"
'

test_expect_success 'a vendor failing transiently gets retry answers, then the order fails and is released' '
	order 103 F-1 4 flaky && line 103 >in && cat in in in >in3 &&
	fulfil --max-attempts 3 <in3 >out 2>err &&
	expect_eq "retry retry failed" "$(jq -r .status out | xargs)" "answers" &&
	expect_eq "1 2 3" "$(jq -r .attempts out | xargs)" "attempts" &&
	expect_eq vendor_unavailable "$(tail -n 1 out | jq -r .reason)" &&
	expect_eq "failed 3 vendor_unavailable" "$(row 103)" "order" &&
	expect_eq 0 "$(reserved flaky F-1)" "reserved" &&
	expect_eq 3 "$(stat flaky order_requests)" "requests to the vendor"
'

test_expect_success 'a retried order succeeds on its next delivery' '
	order 104 G-1 1 once && line 104 >in &&
	fulfil <in >out1 2>err && fulfil <in >out2 2>>err &&
	expect_eq retry "$(jq -r .status out1)" &&
	expect_eq success "$(jq -r .status out2)" &&
	expect_eq "success 2 -" "$(row 104)" "order" &&
	expect_eq 1 "$(reserved once G-1)" "reserved"
'

test_expect_success 'a duplicate line is answered with the current status; the vendor sees one order' '
	order 105 A-3 5 acme && line 105 >in && cat in in >in2 &&
	before=$(stat acme order_requests) &&
	fulfil <in2 >out 2>err &&
	expect_eq "success success" "$(jq -r .status out | xargs)" "answers" &&
	expect_eq "{\"order_id\":105,\"status\":\"success\"}" "$(sed -n 2p out)" &&
	expect_eq $((before + 1)) "$(stat acme order_requests)" "requests to the vendor" &&
	expect_eq "success 1 -" "$(row 105)" "order" &&
	expect_eq 5 "$(reserved acme A-3)" "reserved"
'

test_expect_success 'an order that is not pending is answered with its status and left alone' '
	order 106 A-1 1 acme &&
	sql "UPDATE orders SET status = '"'failed'"', reason = '"'earlier'"',
		updated_at = '"'2020-01-01'"' WHERE id = 106" &&
	before=$(stat acme order_requests) && line 106 >in &&
	fulfil <in >out 2>err &&
	expect_eq "{\"order_id\":106,\"status\":\"failed\",\"reason\":\"earlier\"}" "$(cat out)" &&
	expect_eq "$before" "$(stat acme order_requests)" "requests to the vendor" &&
	expect_eq "2020-01-01" "$(sql "SELECT updated_at::date FROM orders WHERE id = 106")" &&
	expect_eq 3 "$(reserved acme A-1)" "reserved"
'

test_expect_success 'bad lines are answered and reported; the lines around them are still fulfilled' '
	order 107 A-3 1 acme && order 108 A-3 1 acme &&
	{ line 107; echo "not json"; echo "{\"sku\":\"A-3\"}"; line 108; } >in &&
	test_expect_code 65 fulfil <in >out 2>err &&
	expect_eq "107:success null:failed null:failed 108:success" \
		"$(jq -r "\"\(.order_id):\(.status)\"" out | xargs)" "answers" &&
	expect_eq "invalid_message 2" "$(sed -n 2p out | jq -r "\"\(.reason) \(.line)\"")" &&
	expect_grep "^fulfil: line 2: not valid JSON" err &&
	expect_grep "^fulfil: line 3: \"order_id\" must be a positive integer" err
'

test_expect_success 'an unknown order is answered failed/unknown_order' '
	echo "{\"order_id\":999999}" >in &&
	test_expect_code 65 fulfil <in >out 2>err &&
	expect_eq "{\"order_id\":999999,\"status\":\"failed\",\"reason\":\"unknown_order\"}" "$(cat out)" &&
	expect_grep "^fulfil: line 1: order 999999 does not exist" err
'

test_expect_success 'a batch of orders is fulfilled and answered in input order' '
	for i in $(seq 200 259); do order $i A-3 1 acme || exit 1; done &&
	for i in $(seq 200 259); do line $i; done >in &&
	fulfil <in >out 2>err &&
	expect_eq "$(seq 200 259 | xargs)" "$(jq -r .order_id out | xargs)" "order of answers" &&
	expect_eq 60 "$(grep -c "\"status\":\"success\"" out)" "successes" &&
	expect_eq 60 "$(sql "SELECT count(*) FROM orders WHERE id BETWEEN 200 AND 259
		AND status = '"'success'"' AND attempts = 1")" "rows"
'

test_expect_success 'batches overlap: the next is looked up and its vendor called while the one before it commits' '
	order 280 A-3 1 acme && order 281 A-3 1 acme &&
	other=$(mktemp -u other.XXXX) && mkfifo $other &&
	# another session locks order 280, so that its batch cannot commit
	{ PGAPPNAME=other psql -Xq -v ON_ERROR_STOP=1 -d "$DATABASE_URL" <$other >/dev/null & } && holder=$! &&
	exec 4>$other && on_exit "kill $holder" &&
	echo "BEGIN; SELECT id FROM orders WHERE id = 280 FOR UPDATE;" >&4 &&
	wait_for "[ \$(backends \"application_name = '"'other'"' AND state = '"'idle in transaction'"'\") = 1 ]" \
		10 "the other session to lock order 280" &&
	mkfifo input && { fulfil <input >out 2>err 4>&- & } && pid=$! && exec 3>input &&
	line 280 >&3 &&
	wait_for "[ \$(backends \"application_name = '"'fulfil'"' AND wait_event_type = '"'Lock'"'\") = 1 ]" \
		10 "the commit of the batch of order 280 to wait for the lock" &&
	before=$(stat acme order_requests) &&
	line 281 >&3 &&
	wait_for "[ \$(stat acme order_requests) = $((before + 1)) ]" 10 "the vendor call of order 281" &&
	{ test ! -s out || fail "answered before the first batch committed: $(cat out)"; } &&
	expect_eq "pending pending" "$(sql "SELECT status FROM orders WHERE id IN (280, 281) ORDER BY id" | xargs)" \
		"orders while the first batch waits" &&
	echo "COMMIT;" >&4 && exec 4>&- && wait $holder &&
	exec 3>&- && wait $pid &&
	expect_eq "280:success 281:success" "$(jq -r "\"\(.order_id):\(.status)\"" out | xargs)" "answers, in input order"
'

test_expect_success 'lines in bursts (many batches, overlapping) keep input order; a repeat is called once' '
	sql "INSERT INTO orders (id, sku, quantity, vendor) SELECT g, '"'A-3'"', 1, '"'acme'"'
		FROM generate_series(300, 699) g;
		UPDATE vendor_stock SET reserved = reserved + 400 WHERE vendor = '"'acme'"' AND sku = '"'A-3'"'" &&
	sql "SELECT json_build_object('"'order_id'"', id) FROM orders
		WHERE id BETWEEN 300 AND 699 ORDER BY id" >lines &&
	# Lines come in bursts so that fulfil makes many batches (the pauses are
	# the scenario); every 7th line repeats the line before it, within a
	# burst or across two.
	awk "{ print } NR % 7 == 0 { print } NR % 40 == 0 { fflush(); system(\"sleep 0.02\") }" lines >in &&
	before=$(stat acme order_requests) &&
	awk "{ print; fflush() } NR % 40 == 0 { system(\"sleep 0.02\") }" in | fulfil >out 2>err &&
	expect_eq "$(jq -r .order_id in | xargs)" "$(jq -r .order_id out | xargs)" "order of answers" &&
	expect_eq "$(lines in)" "$(grep -c "\"status\":\"success\"" out)" "successes" &&
	expect_eq $((before + 400)) "$(stat acme order_requests)" "requests to the vendor" &&
	expect_eq 400 "$(sql "SELECT count(*) FROM orders WHERE id BETWEEN 300 AND 699
		AND status = '"'success'"' AND attempts = 1")" "rows"
'

test_expect_success 'fulfil run again at once (hundreds of connections closed and opened) gets every answer' '
	# A vendor-mock on libmicrohttpd epoll mode once left such a burst of new
	# connections unaccepted until the client timed out.
	echo "[{\"sku\":\"B-1\",\"quantity\":100000}]" >bulk.json &&
	start_server bulk vendor-mock --vendor bulk=bulk.json &&
	sql "INSERT INTO orders (id, sku, quantity, vendor) SELECT g, '"'B-1'"', 1, '"'bulk'"'
		FROM generate_series(10000, 17999) g;
		INSERT INTO vendor_stock (vendor, sku, quantity, reserved) VALUES ('"'bulk'"', '"'B-1'"', 100000, 8000)" &&
	for run in 0 1 2 3; do
		sql "SELECT json_build_object('"'order_id'"', id) FROM orders
			WHERE id BETWEEN 10000 + 2000 * $run AND 11999 + 2000 * $run ORDER BY id" >in.$run &&
		fulfil --base "$SERVER_URL" --timeout 5 <in.$run >out.$run 2>err.$run &&
		expect_eq 2000 "$(grep -c "\"status\":\"success\"" out.$run)" "successes of run $run" || exit 1
	done
'

test_expect_success 'an unreachable vendor is a transient failure' '
	order 109 A-1 1 acme && line 109 >in &&
	port=$(python3 -c "import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])") &&
	fulfil --base "http://127.0.0.1:$port" <in >out 2>err &&
	expect_eq retry "$(jq -r .status out)" &&
	expect_eq "pending 1" "$(row 109 | cut -d" " -f1-2)" "order"
'

test_expect_success 'an unreachable database exits 69 and answers nothing' '
	order 110 A-1 1 acme && line 110 >in &&
	DATABASE_URL=postgresql://u:secret@127.0.0.1:1/x OA_DB_PATIENCE=0 \
		test_expect_code 69 fulfil <in >out 2>err &&
	test ! -s out && expect_grep "database" err && ! grep -q secret err &&
	expect_eq pending "$(sql "SELECT status FROM orders WHERE id = 110")"
'

test_expect_success 'a lost database connection is re-established and the next order still fulfilled' '
	order 112 A-1 1 acme && order 113 A-1 1 acme &&
	mkfifo fifo && { fulfil <fifo >out 2>err & } && pid=$! && exec 3>fifo &&
	line 112 >&3 &&
	wait_for "test -s out" 10 "the answer for order 112" &&
	sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = '"'fulfil'"' AND datname = current_database()" >/dev/null &&
	line 113 >&3 && exec 3>&- && wait $pid &&
	expect_eq "112:success 113:success" "$(jq -r "\"\(.order_id):\(.status)\"" out | xargs)" &&
	expect_grep "reconnected" err &&
	expect_eq "success success" "$(sql "SELECT status FROM orders WHERE id IN (112, 113)" | xargs)"
'

test_expect_success 'a write error exits 74' '
	order 111 A-1 1 acme && line 111 >in &&
	test_expect_code 74 fulfil <in >/dev/full 2>err &&
	expect_grep "committed" err
'

test_option_errors fulfil <<\EOF
--bogus             | '--bogus'
--max-attempts 0    | option --max-attempts
--max-attempts x    | option --max-attempts
--timeout 0         | option --timeout
--base ftp://x      | base URL "ftp://x"
extra               | usage: fulfil
EOF

test_expect_success 'fulfil without a vendor URL is a usage error' '
	test_expect_code 64 env -u VENDOR_BASE_URL fulfil </dev/null >out 2>err &&
	test ! -s out && expect_grep "no vendor URL" err
'

test_done
