#!/usr/bin/env bash
# The worker (amqp-consume -- fulfil) ends every published order once: vendor faults, refusals, duplicates, bad messages.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders
# One vendor per case, so each case's vendor counts are its own.
for v in happy flaky dup bad lost; do
	awk -v v="$v" 'BEGIN { printf "["; for (i = 1; i <= 5; i++)
		printf "%s{\"sku\":\"%s-%d\",\"quantity\":1000}", (i > 1 ? "," : ""), v, i; print "]" }' >"$TRASH/$v.json"
done
echo '[{"sku":"refuse-1","quantity":0}]' >"$TRASH/refuse.json"
start_vendor_mock --vendor happy="$TRASH/happy.json" --vendor flaky="$TRASH/flaky.json" \
	--vendor dup="$TRASH/dup.json" --vendor bad="$TRASH/bad.json" --vendor lost="$TRASH/lost.json" \
	--vendor refuse="$TRASH/refuse.json" --fail-rate flaky=0.3 || exit 1
# Our stock is the vendors' own, synced the way cron does it (the flaky vendor needs patience).
XDG_RUNTIME_DIR=$TRASH sync-stock --retries 20 happy flaky dup bad lost >/dev/null || exit 1

stat() { curl -s "$VENDOR_BASE_URL/_stats" | jq -r --arg v "$1" --arg f "$2" '.vendors[$v][$f]'; }
count() { sql "SELECT count(*) FROM orders WHERE vendor = '$1' AND status = '$2'"; }
sum_qty() { sql "SELECT coalesce(sum(quantity), 0) FROM orders WHERE vendor = '$1' AND status = '$2'"; }
reserved() { sql "SELECT sum(reserved) FROM vendor_stock WHERE vendor = '$1'"; }
# requests VENDOR N: N order requests over the vendor's five SKUs, quantities 1 to 3
requests() {
	awk -v v="$1" -v n="$2" 'BEGIN { for (i = 1; i <= n; i++)
		printf "{\"sku\":\"%s-%d\",\"quantity\":%d}\n", v, i % 5 + 1, i % 3 + 1 }'
}
# place NAME: place NAME.req, keep the pending lines in NAME.pending, as order-place | jq would
place() {
	order-place <"$1.req" >"$1.placed" 2>"$1.place-err" || fail "order-place exited $?: $(cat "$1.place-err")"
	jq -c --unbuffered 'select(.status == "pending")' "$1.placed" >"$1.pending"
	expect_eq "$(lines "$1.req")" "$(lines "$1.pending")" "pending orders placed"
}
# publish NAME: publish NAME.pending to the worker's queue
publish() { amqp-publish -q "$Q" <"$1.pending" 2>"$1.publish-err" || fail "amqp-publish exited $?: $(cat "$1.publish-err")"; }
# work NAME [COMMAND...]: run the worker (default fulfil) until the queue stayed
# idle for 3 s; answers in NAME.answers
work() {
	local name=$1; shift
	[ $# -gt 0 ] || set -- fulfil
	amqp-consume -q "$Q" --retry-delay 0.5 --idle-exit 3 -- "$@" >"$name.answers" 2>"$name.err" ||
		fail "amqp-consume exited $?: $(head -n 20 "$name.err")"
}

test_expect_success 'happy path: every order succeeds once, the vendor sold exactly what was ordered' '
	requests happy 300 >h.req && place h && publish h && work h &&
	expect_eq 300 "$(count happy success)" "success orders" &&
	expect_eq 0 "$(sql "SELECT count(*) FROM orders WHERE vendor = '"'happy'"' AND status <> '"'success'"'")" "other orders" &&
	expect_eq 300 "$(lines h.answers)" "answers" &&
	expect_eq "$(jq .order_id h.pending | sort -n | xargs)" "$(jq .order_id h.answers | sort -n | xargs)" "answered orders" &&
	expect_eq 300 "$(grep -c "\"status\":\"success\"" h.answers)" "success answers" &&
	expect_eq 300 "$(stat happy orders_accepted)" "orders accepted by the vendor" &&
	expect_eq "$(sum_qty happy success)" "$(stat happy units_sold)" "units sold" &&
	expect_eq "$(sum_qty happy success)" "$(reserved happy)" "units held until settled" &&
	wait_depth "$Q" 0
'

test_expect_success 'happy path: the next sync settles the sold units, nothing is counted twice' '
	sold=$(stat happy units_sold) &&
	XDG_RUNTIME_DIR=$PWD sync-stock happy >sync.out 2>sync.err &&
	expect_eq 0 "$(reserved happy)" "reserved after the sync" &&
	expect_eq $((5000 - sold)) "$(sql "SELECT sum(quantity) FROM vendor_stock WHERE vendor = '"'happy'"'")" "vendor stock" &&
	expect_eq $((5000 - sold)) "$(sql "SELECT sum(available) FROM available_stock WHERE sku LIKE '"'happy-%'"'")" "available"
'

test_expect_success 'a vendor failing 30% of requests: every order ends success or failed, released exactly' '
	# Three attempts, so that some orders (about 1 in 37) fail for good and are released.
	# Each answer is stamped with the time fulfil gave it, to measure the retry delay.
	requests flaky 200 >f.req && place f && publish f && before=$(stat flaky injected_failures) &&
	work f sh -c "fulfil --max-attempts 3 | jq -c --unbuffered \". + {answered_at: now}\"" &&
	expect_eq 0 "$(count flaky pending)" "pending orders" &&
	expect_eq 200 "$(( $(count flaky success) + $(count flaky failed) ))" "success + failed" &&
	expect_eq "$(sum_qty flaky success)" "$(reserved flaky)" "reserved = unsettled successes (failed released)" &&
	expect_eq "$(count flaky success)" "$(stat flaky orders_accepted)" "orders accepted by the vendor" &&
	expect_eq "$(sum_qty flaky success)" "$(stat flaky units_sold)" "units sold" &&
	expect_eq 0 "$(sql "SELECT count(*) FROM orders WHERE vendor = '"'flaky'"' AND status = '"'failed'"'
		AND (reason <> '"'vendor_unavailable'"' OR attempts <> 3)")" "failed orders not after 3 attempts" &&
	retries=$(grep -c "\"status\":\"retry\"" f.answers) &&
	test "$retries" -gt 0 || fail "no retry answer" &&
	expect_eq "$(( $(stat flaky injected_failures) - before ))" "$((retries + $(count flaky failed)))" \
		"injected failures = retry answers + orders failed after their last attempt"
'

test_expect_success 'a vendor failing 30% of requests: an order comes back only after the retry delay' '
	jq -r "\"\(.order_id) \(.answered_at)\"" f.answers | sort -s -k1,1n >times &&
	awk "\$1 == id { gap = \$2 - t; n++; if (n == 1 || gap < min) min = gap }
		{ id = \$1; t = \$2 } END { print n + 0, min + 0 }" times >gaps &&
	read -r again min <gaps &&
	test "$again" -gt 0 || fail "no order was answered twice" &&
	awk -v m="$min" "BEGIN { exit !(m >= 0.45) }" || fail "an order came back $min s after its retry answer"
'

test_expect_success 'a vendor refusing (409): the order fails, its reservation is released and sold again' '
	sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('"'refuse'"', '"'refuse-1'"', 10)" &&
	echo "{\"sku\":\"refuse-1\",\"quantity\":4}" >r.req && place r &&
	expect_eq 4 "$(reserved refuse)" "reserved while pending" &&
	publish r && work r &&
	expect_eq "failed insufficient_stock" "$(jq -r "\"\(.status) \(.reason)\"" r.answers)" "answer" &&
	expect_eq "failed 1 insufficient_stock" "$(sql "SELECT status || '"' '"' || attempts || '"' '"' || reason
		FROM orders WHERE vendor = '"'refuse'"'")" "order" &&
	expect_eq 0 "$(reserved refuse)" "reserved" &&
	expect_eq 10 "$(sql "SELECT available FROM available_stock WHERE sku = '"'refuse-1'"'")" "available" &&
	expect_eq 1 "$(stat refuse orders_refused)" "refusals" &&
	order-place -k placed-again refuse-1 10 >again && expect_eq pending "$(jq -r .status again)" "all 10 placed again"
'

test_expect_success 'the same message published twice: one vendor call, one status change' '
	echo "{\"sku\":\"dup-1\",\"quantity\":2}" >d.req && place d &&
	cat d.pending d.pending >d.twice && amqp-publish -q "$Q" <d.twice &&
	amqp-consume -q "$Q" --retry-delay 0.5 --idle-exit 3 -- fulfil >d.answers 2>d.err &&
	expect_eq "success success" "$(jq -r .status d.answers | xargs)" "answers" &&
	expect_eq 1 "$(stat dup order_requests)" "order requests to the vendor" &&
	expect_eq 1 "$(stat dup orders_accepted)" "orders accepted" &&
	expect_eq 2 "$(stat dup units_sold)" "units sold" &&
	expect_eq "success 1" "$(sql "SELECT status || '"' '"' || attempts FROM orders WHERE vendor = '"'dup'"'")" "order" &&
	expect_eq 2 "$(reserved dup)" "reserved" &&
	wait_depth "$Q" 0
'

test_expect_success 'a message that is not JSON goes to the dead-letter queue; the worker goes on' '
	requests bad 10 >b.req && place b && head -n 5 b.pending >b1 && tail -n 5 b.pending >b2 &&
	amqp-publish -q "$Q" <b1 && publish_raw "$Q" "this is not json" && amqp-publish -q "$Q" <b2 &&
	work b &&
	expect_eq 10 "$(lines b.answers)" "answers" &&
	expect_eq 10 "$(count bad success)" "success orders" &&
	expect_eq 10 "$(stat bad orders_accepted)" "orders accepted" &&
	expect_grep "dead-lettered to $Q.dead" b.err &&
	wait_depth "$Q.dead" 1 && wait_depth "$Q" 0
'

test_expect_success 'orders whose publish was lost are sent again by the order-sweep unit, then fulfilled' '
	requests lost 20 >l.req && place l &&
	sql "UPDATE orders SET updated_at = now() - interval '"'2 minutes'"' WHERE vendor = '"'lost'"'" &&
	# The unit'"'"'s own command, its installed paths mapped into the tree, its queue ours.
	cmd=$(sed -n "s/^ExecStart=//p" "$TOP/scripts/systemd/order-sweep.service" |
		sed -e "s#/usr/lib/order-aggregator/#$TOP/bin/#g" -e "s#-q orders#-q $Q#") &&
	expect_grep "order-sweep --older-than 60 |" <(echo "$cmd") &&
	eval "$cmd" >sweep.out 2>sweep.err &&
	wait_depth "$Q" 20 && work l &&
	expect_eq 20 "$(count lost success)" "success orders" &&
	expect_eq 20 "$(stat lost orders_accepted)" "orders accepted"
'

test_expect_success 'nothing is left pending, and no reservation exceeds its stock' '
	expect_eq 0 "$(sql "SELECT count(*) FROM orders WHERE status = '"'pending'"'
		AND idempotency_key IS DISTINCT FROM '"'placed-again'"'")" "pending" &&
	expect_eq 0 "$(sql "SELECT count(*) FROM vendor_stock WHERE reserved > quantity")" "oversold rows"
'

test_done
