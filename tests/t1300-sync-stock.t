#!/usr/bin/env bash
# sync-stock runs vendor-fetch | stock-apply once at a time and exits with the pipeline's real status.
. "$(dirname "$0")/lib.sh"

qty() { sql "SELECT quantity FROM vendor_stock WHERE vendor = '$1' AND sku = '$2'"; }

echo '[{"sku":"G-1","quantity":5},{"sku":"G-2","quantity":7}]' >"$TRASH/good.json"
echo '[{"sku":"B-1","quantity":3}]' >"$TRASH/bad.json"
start_vendor_mock --vendor good="$TRASH/good.json" --vendor bad="$TRASH/bad.json" \
	--fail-rate bad=1 || exit 1
# The lock is a PostgreSQL advisory lock (each test file has a database of its own).
KEYS="hashtext('order-aggregator'), hashtext('sync-stock')"
# hold_lock: another session (another host, say) takes the lock and keeps it
# until release_lock; returns once it holds it
hold_lock() {
	rm -f release && mkfifo release &&
	# (timeout: a failed test must not leave it waiting for ever)
	{ timeout 60 psql -XqAt -d "$DATABASE_URL" -c "SELECT pg_advisory_lock($KEYS)" -f release >/dev/null & } &&
	holder=$! && on_exit "kill $holder" &&
	wait_for "[ \$(locks true) = 1 ]" 10 "the other session to take the lock"
}
release_lock() { echo "SELECT 1;" >release && wait $holder; }
# locks GRANTED: sessions holding (true) or waiting for (false) the sync lock
locks() { sql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = $1"; }

test_expect_success 'all vendors good: exit 0, a summary line each, stock applied' '
	sync-stock good >out 2>err &&
	expect_eq 1 "$(lines out)" "summary lines" &&
	expect_grep "{\"vendor\":\"good\",\"applied\":2,\"withdrawn\":0" out &&
	expect_eq 5 "$(qty good G-1)" && expect_eq 7 "$(qty good G-2)"
'

test_expect_success 'a failing vendor exits 69 while the good one is still applied' '
	sql "DELETE FROM vendor_stock" &&
	test_expect_code 69 sync-stock --retries 0 good bad >out 2>err &&
	expect_eq 1 "$(lines out)" "summary lines" &&
	expect_grep "\"vendor\":\"good\"" out &&
	expect_grep "^vendor-fetch: bad: " err &&
	expect_eq 5 "$(qty good G-1)" && expect_eq "" "$(qty bad B-1)"
'

test_expect_success 'vendors come from $VENDORS when no argument is given' '
	sql "DELETE FROM vendor_stock" &&
	VENDORS=good sync-stock >out 2>err &&
	expect_grep "\"vendor\":\"good\"" out && expect_eq 7 "$(qty good G-2)"
'

test_expect_success '$VENDORS with a failing vendor exits 69 too' '
	VENDORS="bad good" test_expect_code 69 sync-stock --retries 0 >out 2>err &&
	expect_grep "\"vendor\":\"good\"" out
'

test_expect_success 'no vendor at all is a usage error' '
	VENDORS= test_expect_code 64 sync-stock >out 2>err &&
	test ! -s out && expect_grep "^sync-stock: no vendor" err
'

test_option_errors sync-stock <<\EOF
--retries 1                      | no vendor given
--bogus x good                   | '--bogus'
EOF

test_expect_success 'a bad SYNC_STOCK_WAIT is a usage error' '
	SYNC_STOCK_WAIT=soon test_expect_code 64 sync-stock good >out 2>err &&
	test ! -s out && expect_grep "SYNC_STOCK_WAIT" err
'

test_expect_success 'stock-apply failing wins over a vendor failure' '
	mkdir -p fake && printf "#!/bin/sh\ncat >/dev/null\nexit 65\n" >fake/stock-apply &&
	chmod +x fake/stock-apply &&
	PATH=$PWD/fake:$PATH test_expect_code 65 sync-stock --retries 0 good bad >out 2>err
'

test_expect_success 'a run that finds another one holding the lock fetches nothing and exits 75' '
	sql "DELETE FROM vendor_stock" &&
	hold_lock &&
	test_expect_code 75 sync-stock good >out 2>err &&
	release_lock &&
	test ! -s out && expect_grep "another sync-stock (on this or another host) holds" err &&
	expect_eq "" "$(qty good G-1)"
'

test_expect_success 'with SYNC_STOCK_WAIT a run waits for the lock, then syncs' '
	hold_lock &&
	{ SYNC_STOCK_WAIT=10 sync-stock good >out 2>err & } && run=$! &&
	wait_for "[ \$(locks false) = 1 ]" 10 "sync-stock to wait for the lock" &&
	test ! -s out &&
	release_lock && wait $run &&
	expect_grep "\"vendor\":\"good\"" out && expect_eq 5 "$(qty good G-1)"
'

test_expect_success 'the lock is held until the pipeline has finished' '
	# a stock-apply that says it runs, then waits to be let go
	mkdir -p slow && mkfifo go &&
	printf "#!/bin/sh\ntouch applying\ntimeout 60 sh -c \"read -r _ <go\"\nexec \"$TOP/bin/stock-apply\"\n" >slow/stock-apply &&
	chmod +x slow/stock-apply &&
	{ PATH=$PWD/slow:$PATH sync-stock good >out1 2>err & } && first=$! &&
	wait_for "test -e applying" 10 "stock-apply to start" &&
	wait_for "! pgrep -P $first -x vendor-fetch >/dev/null" 10 "vendor-fetch to end" &&
	expect_eq 1 "$(locks true)" "sync locks held while stock-apply runs" &&
	echo go >go && wait $first &&
	wait_for "[ \$(locks true) = 0 ]" 10 "the lock to be released" &&
	expect_grep "\"vendor\":\"good\"" out1
'

test_expect_success 'a database it cannot reach: exit 69, nothing fetched' '
	DATABASE_URL=postgresql://nobody@127.0.0.1:1/none test_expect_code 69 sync-stock good >out 2>err &&
	test ! -s out && expect_grep "database: cannot take the sync lock" err
'

test_done
