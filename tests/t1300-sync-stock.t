#!/usr/bin/env bash
# sync-stock runs vendor-fetch | stock-apply once at a time and exits with the pipeline's real status.
. "$(dirname "$0")/lib.sh"

qty() { sql "SELECT quantity FROM vendor_stock WHERE vendor = '$1' AND sku = '$2'"; }

echo '[{"sku":"G-1","quantity":5},{"sku":"G-2","quantity":7}]' >"$TRASH/good.json"
echo '[{"sku":"B-1","quantity":3}]' >"$TRASH/bad.json"
start_vendor_mock --vendor good="$TRASH/good.json" --vendor bad="$TRASH/bad.json" \
	--fail-rate bad=1 || exit 1
# Each test file has a lock of its own, so parallel runs of the suite never meet.
export XDG_RUNTIME_DIR=$TRASH/run
mkdir -p "$XDG_RUNTIME_DIR"
LOCK=$XDG_RUNTIME_DIR/order-aggregator-sync-stock.lock

test_expect_success 'all vendors good: exit 0, a summary line each, stock applied' '
	sync-stock good >out 2>err &&
	expect_eq 1 "$(lines out)" "summary lines" &&
	expect_grep "{\"vendor\":\"good\",\"applied\":2,\"withdrawn\":0" out &&
	expect_eq 5 "$(qty good G-1)" && expect_eq 7 "$(qty good G-2)"
'

test_expect_code 69 'a failing vendor exits 69 while the good one is still applied' '
	sql "DELETE FROM vendor_stock" &&
	sync-stock --retries 0 good bad >out 2>err; rc=$?
	expect_eq 1 "$(lines out)" "summary lines" &&
	expect_grep "\"vendor\":\"good\"" out &&
	expect_grep "^vendor-fetch: bad: " err &&
	expect_eq 5 "$(qty good G-1)" && expect_eq "" "$(qty bad B-1)" &&
	exit $rc
'

test_expect_success 'vendors come from $VENDORS when no argument is given' '
	sql "DELETE FROM vendor_stock" &&
	VENDORS=good sync-stock >out 2>err &&
	expect_grep "\"vendor\":\"good\"" out && expect_eq 7 "$(qty good G-2)"
'

test_expect_code 69 '$VENDORS with a failing vendor exits 69 too' '
	VENDORS="bad good" sync-stock --retries 0 >out 2>err; rc=$?
	expect_grep "\"vendor\":\"good\"" out && exit $rc
'

test_expect_code 64 'no vendor at all is a usage error' '
	VENDORS= sync-stock >out 2>err; rc=$?
	test ! -s out && expect_grep "^sync-stock: no vendor" err && exit $rc
'

test_expect_code 65 'stock-apply failing wins over a vendor failure' '
	mkdir -p fake && printf "#!/bin/sh\ncat >/dev/null\nexit 65\n" >fake/stock-apply &&
	chmod +x fake/stock-apply &&
	PATH=$PWD/fake:$PATH sync-stock --retries 0 good bad >out 2>err
'

test_expect_code 75 'a run that finds another one holding the lock fetches nothing and exits 75' '
	sql "DELETE FROM vendor_stock" &&
	flock "$LOCK" sleep 3 & holder=$!
	for i in $(seq 50); do flock -n "$LOCK" true || break; sleep 0.05; done
	sync-stock good >out 2>err; rc=$?
	kill $holder; wait $holder
	test ! -s out && expect_grep "another sync-stock holds" err &&
	expect_eq "" "$(qty good G-1)" && exit $rc
'

test_expect_success 'with SYNC_STOCK_WAIT a run waits for the lock, then syncs' '
	flock "$LOCK" sleep 1 & holder=$!
	for i in $(seq 50); do flock -n "$LOCK" true || break; sleep 0.05; done
	SYNC_STOCK_WAIT=10 sync-stock good >out 2>err && wait $holder &&
	expect_grep "\"vendor\":\"good\"" out && expect_eq 5 "$(qty good G-1)"
'

test_expect_success 'the lock is held until the pipeline has finished' '
	mkdir -p slow && printf "#!/bin/sh\nsleep 1.5\nexec \"$TOP/bin/stock-apply\"\n" >slow/stock-apply &&
	chmod +x slow/stock-apply &&
	PATH=$PWD/slow:$PATH sync-stock good >out1 2>err & first=$!
	sleep 0.5 && ! flock -n "$LOCK" true && wait $first &&
	flock -n "$LOCK" true && expect_grep "\"vendor\":\"good\"" out1
'

test_done
