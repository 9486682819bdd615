#!/usr/bin/env bash
# order-place and order-sweep exit 70 when the database refuses a statement, 69 only when it is gone.
. "$(dirname "$0")/lib.sh"

orders() { sql "SELECT count(*) FROM orders"; }
BARE=${TEST_DB}_bare
BARE_URL=${BASE_DATABASE_URL%/*}/$BARE

test_expect_success 'a batch whose insert deadlocks once is placed on the retry' '
	sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('"'acme'"', '"'S'"', 10)" &&
	inject_sql_error orders INSERT 40P01 1 &&
	echo "{\"sku\":\"S\",\"quantity\":1}" | OA_DEBUG=1 order-place >out 2>err &&
	expect_grep "\"status\":\"pending\"" out &&
	expect_grep "retrying" err &&
	expect_eq 1 "$(orders)" && expect_eq 1 "$(sql "SELECT reserved FROM vendor_stock")"
'

test_expect_success 'a batch the database refuses exits 70 saying none of it was committed' '
	inject_sql_error orders INSERT 23514 1000000 &&
	rc=0; echo "{\"sku\":\"S\",\"quantity\":1}" | order-place >out 2>err || rc=$?
	expect_eq 70 "$rc" "exit status" &&
	expect_grep "database: placing a batch of 1 requests: inserting orders: .*injected failure; none of it was committed" err &&
	expect_grep "database error: 0 answers printed, all committed; the batch of lines 1-1 was not committed" err &&
	test ! -s out && expect_eq 1 "$(orders)" && expect_eq 1 "$(sql "SELECT reserved FROM vendor_stock")"
'

test_expect_success 'a single order the database refuses exits 70' '
	rc=0; order-place S 1 >out 2>err || rc=$?
	expect_eq 70 "$rc" "exit status" &&
	expect_grep "database error: the order was not placed" err && test ! -s out
'

test_expect_success 'an unmigrated database exits 70: order-place places nothing' '
	psql -Xq -d "$BASE_DATABASE_URL" -c "CREATE DATABASE $BARE" &&
	rc=0; DATABASE_URL=$BARE_URL order-place S 1 >out 2>err || rc=$?
	psql -Xq -d "$BASE_DATABASE_URL" -c "DROP DATABASE $BARE" &&
	expect_eq 70 "$rc" "exit status" &&
	expect_grep "database: checking the schema (is it migrated?): " err &&
	expect_grep "database error: no order was placed" err
'

test_expect_success 'an unmigrated database exits 70: order-sweep writes nothing' '
	psql -Xq -d "$BASE_DATABASE_URL" -c "CREATE DATABASE $BARE" &&
	rc=0; DATABASE_URL=$BARE_URL order-sweep >out 2>err || rc=$?
	psql -Xq -d "$BASE_DATABASE_URL" -c "DROP DATABASE $BARE" &&
	expect_eq 70 "$rc" "exit status" &&
	expect_grep "database: reading pending orders: " err &&
	expect_grep "database error: 0 pending orders were written before the sweep stopped" err &&
	test ! -s out
'

test_done
