#!/usr/bin/env bash
# stock-apply runs a snapshot's transaction again after a retryable error, and exits 70 when the database refuses it.
. "$(dirname "$0")/lib.sh"

item() { printf '{"vendor":"%s","sku":"%s","quantity":%s}\n' "$1" "$2" "$3"; }
snap() { printf '{"vendor":"%s","snapshot":"complete","items":%s}\n' "$1" "$2"; }
qty() { sql "SELECT quantity FROM vendor_stock WHERE vendor = '$1' AND sku = '$2'"; }

test_expect_success 'a snapshot whose merge hits a serialization failure is applied on the next try' '
	{ item acme A 5; item acme B 5; snap acme 2; } | stock-apply >/dev/null &&
	inject_sql_error vendor_stock UPDATE 40001 1 &&
	{ item acme A 9; snap acme 1; } | OA_DEBUG=1 stock-apply >out 2>err &&
	expect_eq 1 "$(lines out)" "summary lines" &&
	expect_grep "\"withdrawn\":1" out &&
	expect_eq 9 "$(qty acme A)" && expect_eq 0 "$(qty acme B)" &&
	expect_eq 1 "$(grep -c "applying the snapshot again" err)" "tries again"
'

test_expect_success 'a serialization failure that persists exits 70 after five tries, applying nothing' '
	inject_sql_error vendor_stock UPDATE 40001 1000000 &&
	rc=0; { item acme A 3; snap acme 1; } | OA_DEBUG=1 stock-apply >out 2>err || rc=$?
	expect_eq 70 "$rc" "exit status" &&
	expect_eq 4 "$(grep -c "applying the snapshot again" err)" "tries again" &&
	expect_grep "^stock-apply: database: merging stock: .*injected failure" err &&
	expect_grep "^stock-apply: acme: lines 1-2: its snapshot was rolled back" err &&
	test ! -s out && expect_eq 9 "$(qty acme A)"
'

# A snapshot that leaves nothing out and changes some items has its MERGE run
# while the input goes on; its failures are handled as the others are.
test_expect_success 'a merge left running that hits a serialization failure is applied on the next try' '
	uninject_sql_error vendor_stock &&
	{ item lr A 1; item lr B 1; snap lr 2; } | stock-apply >/dev/null &&
	{ item lr A 1; item lr B 2; snap lr 2; } | stock-apply >/dev/null &&
	inject_sql_error vendor_stock UPDATE 40001 1 &&
	{ item lr A 1; item lr B 3; snap lr 2; item other X 1; snap other 1; } |
		OA_DEBUG=1 stock-apply >out 2>err &&
	expect_grep "lr: 1 of 2 items sent" err &&
	expect_eq 1 "$(grep -c "applying the snapshot again" err)" "tries again" &&
	expect_eq 2 "$(lines out)" "summary lines" &&
	expect_grep "^{\"vendor\":\"lr\",\"applied\":2,\"withdrawn\":0," out &&
	expect_eq lr "$(head -n 1 out | jq -r .vendor)" "the first summary" &&
	expect_eq 3 "$(qty lr B)" && expect_eq 1 "$(qty other X)"
'

test_expect_success 'a merge left running that keeps failing exits 70 after five tries; the next vendor is applied' '
	inject_sql_error vendor_stock UPDATE 40001 "NEW.vendor = '"'lr'"'" &&
	rc=0; { item lr A 1; item lr B 4; snap lr 2; item other X 2; snap other 1; } |
		OA_DEBUG=1 stock-apply >out 2>err || rc=$?
	uninject_sql_error vendor_stock &&
	expect_eq 70 "$rc" "exit status" &&
	expect_eq 4 "$(grep -c "lr: .*applying the snapshot again" err)" "tries again" &&
	expect_grep "^stock-apply: lr: lines 1-3: its snapshot was rolled back" err &&
	expect_eq 3 "$(qty lr B)" && expect_eq 2 "$(qty other X)" &&
	expect_eq 1 "$(lines out)" "summary lines"
'

test_expect_success 'a statement the database refuses exits 70 at once' '
	inject_sql_error vendor_stock UPDATE 23514 1000000 &&
	rc=0; { item acme A 3; snap acme 1; } | OA_DEBUG=1 stock-apply >out 2>err || rc=$?
	expect_eq 70 "$rc" "exit status" &&
	! grep -q "applying the snapshot again" err &&
	expect_grep "database: merging stock: .*injected failure" err &&
	expect_eq 9 "$(qty acme A)"
'

test_expect_success 'a refused COPY of a new vendor exits 70 and loads none of it' '
	inject_sql_error vendor_stock INSERT 23514 1000000 &&
	rc=0; { item newco N 1; item newco M 2; snap newco 2; } | stock-apply >out 2>err || rc=$?
	expect_eq 70 "$rc" "exit status" &&
	expect_grep "database: loading stock lines: .*injected failure" err &&
	expect_eq 0 "$(sql "SELECT count(*) FROM vendor_stock WHERE vendor = '"'newco'"'")"
'

test_done
