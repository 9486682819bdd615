#!/usr/bin/env bash
# fulfil waits --db-patience for the database, saying so when it starts waiting and then at every report, and goes on once it is back.
. "$(dirname "$0")/lib.sh"

echo '[{"sku":"A-1","quantity":100}]' >"$TRASH/acme.json"
start_vendor_mock --vendor acme="$TRASH/acme.json" || exit 1
sql "INSERT INTO orders (id, sku, quantity, vendor) VALUES (1, 'A-1', 1, 'acme');
     INSERT INTO vendor_stock (vendor, sku, quantity, reserved) VALUES ('acme', 'A-1', 100, 1)" || exit 1
NOWHERE=postgresql://u@127.0.0.1:1/x

test_expect_success 'an unreachable database: waiting said at once and at every report, then 69 after --db-patience' '
	echo "{\"order_id\":1}" >in &&
	t0=$EPOCHREALTIME &&
	rc=0; DATABASE_URL=$NOWHERE OA_WAIT_REPORT=0.5 fulfil --db-patience 2 <in >out 2>err || rc=$?
	expect_eq 69 "$rc" "exit status" &&
	awk -v s="$t0" -v e="$EPOCHREALTIME" "BEGIN { exit !(e - s >= 2 && e - s < 10) }" &&
	expect_grep "database: waiting for it, 2 s more at most (--db-patience 2)" err &&
	n=$(grep -c "database: cannot connect to" err) &&
	[ "$n" -ge 3 ] || fail "$n reports in 2 s, one every 0.5 s wanted" &&
	expect_grep "database unavailable for 2 s (--db-patience)" err && test ! -s out
'

test_expect_success '--db-patience overrides OA_DB_PATIENCE' '
	rc=0; DATABASE_URL=$NOWHERE OA_DB_PATIENCE=0 OA_WAIT_REPORT=0.2 fulfil --db-patience 1 </dev/null >out 2>err || rc=$?
	expect_eq 69 "$rc" "exit status" && expect_grep "waiting for it" err
'

test_expect_success 'the database restarted while fulfil waits: it connects and fulfils the order' '
	"$TOP/scripts/services" stop pg >/dev/null 2>&1 &&
	on_exit "\"$TOP/scripts/services\" start pg >/dev/null 2>&1" &&
	{ OA_WAIT_REPORT=1 fulfil --db-patience 60 <in >out 2>err & } && pid=$! &&
	for i in $(seq 1 100); do grep -q "waiting for it" err && break; sleep 0.1; done &&
	expect_grep "waiting for it" err &&
	"$TOP/scripts/services" start pg >/dev/null &&
	wait $pid &&
	expect_eq success "$(jq -r .status out)" && expect_grep "database: connected after" err &&
	expect_eq success "$(sql "SELECT status FROM orders WHERE id = 1")"
'

test_done
