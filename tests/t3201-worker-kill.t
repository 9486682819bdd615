#!/usr/bin/env bash
# The worker loses nothing and does nothing twice when fulfil or amqp-consume is killed, or stopped with SIGTERM, under load.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders
N=2000
# Vendors slow enough (50 ms a request) that a kill lands in the middle of the run.
for v in kill term group; do
	awk -v v="$v" 'BEGIN { printf "["; for (i = 1; i <= 5; i++)
		printf "%s{\"sku\":\"%s-%d\",\"quantity\":100000}", (i > 1 ? "," : ""), v, i; print "]" }' >"$TRASH/$v.json"
done
start_vendor_mock --vendor kill="$TRASH/kill.json" --vendor term="$TRASH/term.json" \
	--vendor group="$TRASH/group.json" --latency 50 || exit 1
XDG_RUNTIME_DIR=$TRASH sync-stock kill term group >/dev/null || exit 1

stat() { curl -s "$VENDOR_BASE_URL/_stats" | jq -r --arg v "$1" --arg f "$2" '.vendors[$v][$f]'; }
count() { sql "SELECT count(*) FROM orders WHERE vendor = '$1' AND status = '$2'"; }
sum_qty() { sql "SELECT coalesce(sum(quantity), 0) FROM orders WHERE vendor = '$1' AND status = '$2'"; }
# place_and_publish VENDOR: N orders for VENDOR, placed and published as the pipeline would
place_and_publish() {
	awk -v v="$1" -v n=$N 'BEGIN { for (i = 1; i <= n; i++)
		printf "{\"sku\":\"%s-%d\",\"quantity\":%d}\n", v, i % 5 + 1, i % 4 + 1 }' >"$1.req"
	order-place <"$1.req" >"$1.placed" || fail "order-place exited $?"
	jq -c --unbuffered 'select(.status == "pending")' "$1.placed" >"$1.pending"
	expect_eq $N "$(lines "$1.pending")" "pending orders placed"
	amqp-publish -q "$Q.$1" <"$1.pending" || fail "amqp-publish exited $?"
}
# await_lines FILE N: wait (up to 30 s) until FILE has at least N lines
await_lines() {
	local file=$1 want=$2
	wait_for '[ "$(lines "$file")" -ge "$want" ]' 30 "$want lines in $file" ||
		fail "$file has $(lines "$file") lines, not $want"
}
# child_of PID: the worker's child (fulfil), once it runs
child_of() {
	local parent=$1
	wait_for 'pgrep -P "$parent" >/dev/null' 10 "a child of $parent" || return 1
	pgrep -P "$parent" | head -n 1
}
# live_child_of PID: the worker's child that is alive (not a zombie not yet reaped)
live_child_of() { ps -o pid=,stat= --ppid "$1" | awk '$2 !~ /^Z/ { print $1; exit }'; }
# alive PID: the process runs (a zombie left to a parent that does not reap is not running)
alive() { ps -o stat= -p "$1" | grep -qv "^Z"; }
# ended_once VENDOR ANSWERS...: every order ended success exactly once, and the
# answers (of all runs together) name every order
ended_once() {
	local v=$1; shift
	expect_eq 0 "$(count "$v" pending)" "pending orders" &&
	expect_eq $N "$(count "$v" success)" "success orders" &&
	expect_eq $N "$(stat "$v" orders_accepted)" "orders accepted by the vendor" &&
	expect_eq "$(sum_qty "$v" success)" "$(stat "$v" units_sold)" "units sold" &&
	expect_eq "$(sql "SELECT sum(quantity) FROM orders WHERE vendor = '$v'")" \
		"$(sql "SELECT sum(reserved) FROM vendor_stock WHERE vendor = '$v'")" "reserved" &&
	jq .order_id "$v.pending" | sort -n >want &&
	cat "$@" | jq 'select(.status == "success") | .order_id' | sort -nu >got &&
	cmp -s want got || fail "orders never answered success: $(comm -23 want got | head | xargs)" &&
	wait_depth "$Q.$v" 0
}

test_expect_success 'kill -9 of fulfil, then of amqp-consume, mid-run: a restarted worker ends every order exactly once' '
	place_and_publish kill
	amqp-consume -q "$Q.kill" -p 20 --idle-exit 3 -- fulfil >run1 2>err1 &
	worker=$!
	first=$(child_of $worker) && await_lines run1 300 &&
	kill -9 "$first" &&
	wait_for "second=\$(live_child_of $worker) && [ -n \"\$second\" ] && [ \"\$second\" != $first ]" 10 \
		"fulfil to be restarted" &&
	await_lines run1 900 &&
	kill -9 $worker && status=0 && wait $worker || status=$?
	expect_eq 137 $status "amqp-consume killed" &&
	expect_grep "fulfil was killed by signal 9" err1 &&
	left=$(count kill pending) && test "$left" -gt 0 || fail "the run was over before the kill ($left pending)" &&
	# The orphaned fulfil sees its input close and ends by itself.
	wait_for "! alive $second" 15 "the orphaned fulfil $second to end" &&
	amqp-consume -q "$Q.kill" -p 20 --idle-exit 3 -- fulfil >run2 2>err2 &&
	test -s run2 &&
	ended_once kill run1 run2
'

test_expect_success 'SIGTERM under load: exit 0 with every order it touched answered; a second run ends the rest' '
	place_and_publish term
	amqp-consume -q "$Q.term" -p 20 -- fulfil >run1 2>err1 &
	worker=$!
	await_lines run1 300 &&
	kill -TERM $worker && status=0 && wait $worker || status=$?
	expect_eq 0 $status "amqp-consume exit status after SIGTERM" &&
	answered=$(jq .order_id run1 | sort -u | wc -l) &&
	test "$answered" -lt $N || fail "the run was over before SIGTERM" &&
	expect_eq "$answered" "$(lines run1)" "answers (each order once)" &&
	expect_eq "$answered" "$(count term success)" "orders changed = orders answered" &&
	expect_eq $((N - answered)) "$(count term pending)" "orders left pending" &&
	wait_depth "$Q.term" $((N - answered)) &&
	amqp-consume -q "$Q.term" -p 20 --idle-exit 3 -- fulfil >run2 2>err2 &&
	expect_eq $((N - answered)) "$(lines run2)" "answers of the second run" &&
	ended_once term run1 run2
'

test_expect_success 'SIGTERM to fulfil as well (systemd without KillMode=mixed): exit 0, nothing lost' '
	place_and_publish group
	amqp-consume -q "$Q.group" -p 20 -- fulfil >run1 2>err1 &
	worker=$!
	child=$(child_of $worker) && await_lines run1 300 &&
	kill -TERM $worker $child && status=0 && wait $worker || status=$?
	expect_eq 0 $status "amqp-consume exit status after SIGTERM" &&
	left=$(count group pending) && test "$left" -gt 0 || fail "the run was over before SIGTERM" &&
	amqp-consume -q "$Q.group" -p 20 --idle-exit 3 -- fulfil >run2 2>err2 &&
	ended_once group run1 run2
'

test_done
