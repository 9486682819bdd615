#!/usr/bin/env bash
# PostgreSQL with a synchronous standby: the primary stopped at once under the worker and order-place, the standby promoted; every order ends exactly once and nothing answered is lost.
. "$(dirname "$0")/lib.sh"

# A primary and a synchronous standby of this test's own (scripts/services
# start standby), beside the suite's RabbitMQ; DATABASE_URL names both, as
# libpq's multi-host URI with target_session_attrs=read-write.
PGSET=$TRASH/standby
on_exit "OA_VAR='$PGSET' '$TOP/scripts/services' destroy >/dev/null 2>&1"
OA_VAR=$PGSET "$TOP/scripts/services" start standby >/dev/null 2>"$TRASH/standby.err" ||
	{ echo "Bail out! PostgreSQL with a standby did not start: $(tail -n 5 "$TRASH/standby.err")"; exit 1; }
# Not the whole file: its OA_VAR would take lib.sh's rabbitmqctl off the suite's broker.
DATABASE_URL=$(. "$PGSET/env" && echo "$DATABASE_URL")
PRIMARY_URL=$(. "$PGSET/env" && echo "$DATABASE_URL_PRIMARY")
export DATABASE_URL
db-migrate >/dev/null 2>"$TRASH/migrate.err" || { echo "Bail out! db-migrate: $(cat "$TRASH/migrate.err")"; exit 1; }
pgset() { OA_VAR=$PGSET "$TOP/scripts/services" "$@" >/dev/null; }

Q=$QUEUE_PREFIX.orders
N=4000
# Seconds between the primary's stop and the standby's promotion.
OUTAGE=5
# One vendor at 400 ms a request: with its 256 calls at a time, the drain of
# N orders takes about 6 s, so the primary goes down in the middle of it.
awk 'BEGIN { printf "["; for (i = 1; i <= 5; i++)
	printf "%s{\"sku\":\"A-%d\",\"quantity\":100000000}", (i > 1 ? "," : ""), i; print "]" }' >"$TRASH/acme.json"
start_vendor_mock --vendor acme="$TRASH/acme.json" --latency 400 || exit 1
# acme's stock, and S-1 of a vendor only the database knows, for the orders
# order-place places while the primary goes down (they never reach a vendor).
sql "INSERT INTO vendor_stock (vendor, sku, quantity)
	SELECT 'acme', 'A-' || g, 100000000 FROM generate_series(1, 5) g
	UNION ALL SELECT 'stream', 'S-1', 1000000000" >/dev/null || exit 1

stat() { curl -s "$VENDOR_BASE_URL/_stats" | jq -r --arg f "$1" '.vendors.acme[$f]'; }
ended() { sql "SELECT count(*) FROM orders WHERE sku LIKE 'A-%' AND status <> 'pending'"; }
# secs T0 T1: T1 - T0 in seconds, one decimal
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# stream FIRST LAST: order-place requests for S-1, one unit each, keyed s-FIRST..s-LAST
stream() { awk -v f="$1" -v l="$2" 'BEGIN { for (i = f; i <= l; i++)
	printf "{\"sku\":\"S-1\",\"quantity\":1,\"key\":\"s-%d\"}\n", i }'; }

test_expect_success 'the standby is synchronous: the primary waits for it at every commit' '
	expect_eq "oa_standby|sync|streaming" \
		"$(psql -XAt -d "$PRIMARY_URL" -c "SELECT application_name, sync_state, state FROM pg_stat_replication")" \
		"the primary'"'"'s standby" &&
	expect_eq on "$(psql -XAt -d "$PRIMARY_URL" -c "SHOW synchronous_commit")" "synchronous_commit"
'

# The answer waits for the standby: with the primary's walsender stopped
# (SIGSTOP, as a standby cut off by the network), order-place's COMMIT waits
# in SyncRep and nothing is printed; once it runs again the order is answered.
# With asynchronous replication the order would be answered at once, and lost
# if the primary then died and the standby were promoted.
test_expect_success 'a standby that lags holds the answer: order-place prints its order only once the standby has the commit' '
	ws=$(psql -XAt -d "$PRIMARY_URL" -c "SELECT pid FROM pg_stat_replication") && test -n "$ws" &&
	on_exit "kill -CONT $ws" &&
	kill -STOP "$ws" &&
	{ order-place -k lag-1 S-1 1 >lag.out 2>lag.err & } && p=$! &&
	wait_for "[ \"\$(psql -XAt -d \"\$PRIMARY_URL\" -c \"SELECT wait_event FROM pg_stat_activity WHERE application_name = '"'order-place'"'\")\" = SyncRep ]" 20 \
		"order-place to wait for the standby (SyncRep)" &&
	{ test ! -s lag.out || fail "answered before the standby had it: $(cat lag.out)"; } &&
	kill -CONT "$ws" && wait $p &&
	expect_eq pending "$(jq -r .status lag.out)" "status" &&
	expect_eq 1 "$(psql -XAt -d "$(. "$PGSET/env" && echo "$DATABASE_URL_STANDBY")" -c "SELECT count(*) FROM orders WHERE idempotency_key = '"'lag-1'"'")" "the order on the standby"
'

test_expect_success "the primary stopped at once (pg_ctl stop -m immediate) at a quarter of $N orders, the standby promoted: amqp-consume still runs and every order ends once" '
	awk -v n=$N "BEGIN { for (i = 1; i <= n; i++)
		printf \"{\\\"sku\\\":\\\"A-%d\\\",\\\"quantity\\\":%d}\\n\", i % 5 + 1, i % 3 + 1 }" >req &&
	order-place <req >placed &&
	jq -c "select(.status == \"pending\")" placed >pending &&
	expect_eq $N "$(lines pending)" "pending orders placed" &&
	amqp-publish -q "$Q" --batch 1024 <pending &&
	# The patience of the deployed worker (fulfil --db-patience 90 by default),
	# not the suite'"'"'s 5 s.
	{ OA_DB_PATIENCE=60 amqp-consume -q "$Q" -p 512 --match order_id -- fulfil >w.out 2>w.err & } && w=$! &&
	on_exit "kill $w 2>/dev/null" &&
	wait_for "[ \$(ended) -ge $((N / 4)) ]" 60 "a quarter of the orders to end" &&
	# order-place at full speed (batches of 100) while the primary goes down.
	{ { stream 1 1000000 | order-place -b 100 >s.out 2>s.err; echo $? >s.rc; } & } &&
	wait_for "[ \$(lines s.out) -ge 1000 ]" 30 "order-place to have placed 1000 orders" &&
	at=$(ended) && { test "$at" -lt $N || fail "the drain was over before the primary stopped"; } &&
	t0=$EPOCHREALTIME && pgset kill pg && t1=$EPOCHREALTIME &&
	# While no server takes writes: order-place with 1 s of patience gives
	# up, one with 30 s places its orders once the standby is promoted.
	stream 1 20 | sed "s/\"s-/\"o-/" >o.req &&
	{ { OA_DB_PATIENCE=1 order-place <o.req >o1.out 2>o1.err; echo $? >o1.rc; } & } &&
	{ { OA_DB_PATIENCE=30 order-place <o.req >o2.out 2>o2.err; echo $? >o2.rc; } & } &&
	# A failover manager takes a few seconds to decide: fulfil meanwhile
	# waits for the database as it would in production.
	wait_for "grep -q \"^fulfil: database: waiting for it\" w.err" 20 "fulfil to wait for the database" &&
	wait_for "[ -s o1.rc ]" 20 "order-place with 1 s of patience to give up" &&
	wait_for "awk -v a=$t1 -v b=\$EPOCHREALTIME \"BEGIN { exit !(b - a >= $OUTAGE) }\"" $((OUTAGE + 10)) "$OUTAGE s without a primary" &&
	pgset promote standby && t2=$EPOCHREALTIME &&
	# The moment of the promotion: the new timeline'"'"'s history file.
	promoted=$(command stat -c %.6Y "$PGSET"/pg2/pg_wal/00000002.history) &&
	wait_for "[ -s s.rc ] && [ -s o2.rc ]" 40 "the order-place runs to end" &&
	wait_for "[ \$(sql \"SELECT count(*) FROM pg_stat_activity WHERE application_name = '"'fulfil'"'\") -ge 1 ]" 60 \
		"fulfil to connect to the promoted standby" &&
	connected=$(sql "SELECT extract(epoch FROM min(backend_start)) FROM pg_stat_activity WHERE application_name = '"'fulfil'"'") &&
	wait_for "[ \$(ended) = $N ]" 90 "every order to end" ||
		fail "$(sql "SELECT status, count(*) FROM orders GROUP BY 1" | xargs); amqp-consume said: $(tail -n 5 w.err)" &&
	first=$(sql "SELECT extract(epoch FROM min(updated_at)) FROM orders WHERE sku LIKE '"'A-%'"' AND updated_at > to_timestamp($t1)") &&
	{ kill -0 $w || fail "amqp-consume exited: $(tail -n 5 w.err)"; } &&
	# fulfil itself rode out the failover: amqp-consume never had to restart it.
	{ ! grep -E "^amqp-consume: fulfil (exited|was killed)|Sanitizer" w.err || fail "fulfil did not ride out the failover"; } &&
	echo "primary stopped at $at of $N orders ended (pg_ctl stop -m immediate: $(secs $t0 $t1) s);" \
		"standby promoted $(secs $t1 $promoted) s after (pg_ctl promote: $(secs $promoted $t2) s until it took writes);" \
		"fulfil connected to it $(secs $promoted $connected) s after the promotion," \
		"and its first order ended there $(secs $promoted $first) s after it" >said &&
	{ grep -E "^(fulfil|amqp-consume|WARNING):" w.err | head -n 12 | sed "s/^/worker said: /" >>said || :; } &&
	kill -TERM $w && wait $w &&

	expect_eq "success|$N" "$(sql "SELECT status, count(*) FROM orders WHERE sku LIKE '"'A-%'"' GROUP BY 1")" "orders by status" &&
	expect_eq $N "$(stat orders_accepted)" "orders accepted by the vendor (each once)" &&
	expect_eq 0 "$(stat orders_refused)" "orders refused by the vendor" &&
	expect_eq "$(sql "SELECT sum(quantity) FROM orders WHERE sku LIKE '"'A-%'"'")" "$(stat units_sold)" "units sold" &&
	jq .order_id pending | sort -n >want &&
	jq "select(.status == \"success\") | .order_id" w.out | sort -nu >got &&
	cmp -s want got || fail "orders never answered success: $(comm -23 want got | head | xargs)" &&
	jq -c "select(.status != \"success\" and .status != \"defer\")" w.out >other &&
	{ test ! -s other || fail "answers neither success nor defer: $(head -n 3 other)"; } &&
	echo "answers: $(lines w.out) lines for $N orders; the vendor saw $(stat duplicate_orders) repeated requests (idempotent)" >>said &&
	wait_depth "$Q" 0 && expect_eq 0 "$(queue_depth "$Q.dead")" "dead-lettered"
'
# The figures, for design.md (a body's own output is shown only when it fails).
[ -s "$TRASH/said" ] && while IFS= read -r l; do say "$l"; done <"$TRASH/said" && rm "$TRASH/said"

test_expect_success 'order-place under way when the primary stopped: exit 69 naming the batch not confirmed; every order it answered pending is in the promoted database' '
	expect_eq 69 "$(cat s.rc)" "order-place exit status" &&
	expect_grep "answers printed, all committed; the batch of lines [0-9]*-[0-9]* was" s.err &&
	printed=$(sed -n "s/.*: \([0-9]*\) answers printed, all committed.*/\1/p" s.err) &&
	expect_eq "$printed" "$(lines s.out)" "answers printed" &&
	jq "select(.status == \"pending\") | .order_id" s.out | sort -n >s.want &&
	expect_eq "$printed" "$(lines s.want)" "pending answers" &&
	sql "SELECT id FROM orders WHERE idempotency_key LIKE '"'s-%'"'" | sort -n >s.have &&
	{ comm -23 s.want s.have >s.lost; test ! -s s.lost; } ||
		fail "$(lines s.lost) orders answered pending are not in the promoted database: $(head s.lost | xargs)" &&
	# The batch it names, sent again with the same keys, ends the run: the
	# database then holds exactly what was answered and that batch.
	from=$(sed -n "s/.*the batch of lines \([0-9]*\)-\([0-9]*\) was.*/\1/p" s.err) &&
	to=$(sed -n "s/.*the batch of lines \([0-9]*\)-\([0-9]*\) was.*/\2/p" s.err) &&
	expect_eq $((printed + 1)) "$from" "first line of the batch not answered" &&
	stream "$from" "$to" | order-place >s.again &&
	expect_eq $((to - from + 1)) "$(jq -c "select(.status == \"pending\")" s.again | wc -l)" "pending answers of the batch sent again" &&
	expect_eq "$to" "$(sql "SELECT count(*) FROM orders WHERE idempotency_key LIKE '"'s-%'"'")" "orders of the stream in the promoted database"
'
[ -s "$TRASH/s.err" ] && say "order-place said: $(cat "$TRASH/s.err")"

test_expect_success 'order-place started while no server took writes: with 1 s of patience exit 69 and nothing placed; with 30 s its orders placed after the promotion' '
	expect_eq 69 "$(cat o1.rc)" "exit status with 1 s of patience" &&
	{ test ! -s o1.out || fail "answers printed before exit 69: $(head -n 3 o1.out)"; } &&
	expect_grep "^order-place: .*no order was placed" o1.err &&
	expect_eq 0 "$(cat o2.rc)" "exit status with 30 s of patience" &&
	expect_eq 20 "$(jq -c "select(.status == \"pending\")" o2.out | wc -l)" "pending answers" &&
	jq .order_id o2.out | sort -n >o.want &&
	sql "SELECT id FROM orders WHERE idempotency_key LIKE '"'o-%'"'" | sort -n >o.have &&
	test_cmp o.want o.have
'
[ -s "$TRASH/o1.err" ] && say "order-place with 1 s of patience said: $(cat "$TRASH/o1.err")"

test_expect_success 'reserved units: each vendor and SKU holds exactly the units of its orders' '
	sql "SELECT s.vendor, s.sku, s.reserved, coalesce(o.q, 0) FROM vendor_stock s
	     LEFT JOIN (SELECT vendor, sku, sum(quantity) q FROM orders WHERE status <> '"'failed'"' GROUP BY 1, 2) o
	     USING (vendor, sku) WHERE s.reserved <> coalesce(o.q, 0)" >wrong &&
	{ test ! -s wrong || fail "reserved units that are not the orders'"'"': $(cat wrong)"; }
'

test_done
