#!/usr/bin/env bash
# fulfil redoes a batch's changes after a deadlock, and exits 70 when the database refuses them.
. "$(dirname "$0")/lib.sh"

# order ID: a pending order of 1 A-1 from acme, its unit held
order() {
	sql "INSERT INTO orders (id, sku, quantity, vendor) VALUES ($1, 'A-1', 1, 'acme');
	     INSERT INTO vendor_stock (vendor, sku, quantity, reserved) VALUES ('acme', 'A-1', 1000, 1)
	     ON CONFLICT (sku, vendor) DO UPDATE SET reserved = vendor_stock.reserved + 1"
}
line() { echo "{\"order_id\":$1}"; }
status() { sql "SELECT status FROM orders WHERE id = $1"; }
accepted() { curl -s "$VENDOR_BASE_URL/_stats" | jq -r ".vendors.acme.orders_accepted"; }

echo '[{"sku":"A-1","quantity":1000}]' >"$TRASH/acme.json"
start_vendor_mock --vendor acme="$TRASH/acme.json" || exit 1

test_expect_success 'a commit that deadlocks once is redone without calling the vendor again' '
	order 1 && inject_sql_error orders UPDATE 40P01 1 &&
	line 1 | fulfil >out 2>err &&
	expect_eq "{\"order_id\":1,\"status\":\"success\",\"attempts\":1}" "$(cat out)" &&
	expect_grep "database: recording the vendors.* acceptances: .*injected failure" err &&
	expect_eq success "$(status 1)" && expect_eq 1 "$(accepted)" "vendor calls"
'

test_expect_success 'a change the database refuses stops fulfil with 70, answering nothing' '
	order 2 && inject_sql_error orders UPDATE 23514 1000000 &&
	rc=0; line 2 | fulfil >out 2>err || rc=$?
	expect_eq 70 "$rc" "exit status" &&
	expect_grep "database: stopped on an unexpected error; 0 answer(s) written before were committed" err &&
	test ! -s out && expect_eq pending "$(status 2)"
'

test_expect_success 'a deadlock that persists gives up with 70 after five tries' '
	inject_sql_error orders UPDATE 40P01 1000000 &&
	rc=0; line 2 | fulfil >out 2>err || rc=$?
	expect_eq 70 "$rc" "exit status" &&
	expect_eq 5 "$(grep -c "injected failure" err)" "failures reported" &&
	expect_grep "database: gave up after 5 tries" err &&
	test ! -s out && expect_eq pending "$(status 2)"
'

test_done
