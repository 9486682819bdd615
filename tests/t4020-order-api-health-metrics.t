#!/usr/bin/env bash
# order-api's /health follows its database and broker down and up again; /metrics, read by Prometheus's own parser, counts exactly what was done.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

# Debian's python3-prometheus-client (scripts/deps), under whichever python3 has it
PY=
for p in python3 /usr/bin/python3; do
	"$p" -c 'import prometheus_client.parser' 2>/dev/null && { PY=$p; break; }
done

sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('acme', 'SKU-1', 5)"

start_server api order-api -q $Q || exit 1
api_PID=$SERVER_PID
API=$SERVER_URL

# health: GET /health; prints the status, the body in $TRASH/health
health() { curl -s -o "$TRASH/health" -w '%{http_code}' "$API/health"; }
hfield() { jq -r "$1" "$TRASH/health"; }
# post BODY [KEY]: POST /order; prints the status, the headers in $TRASH/hdr
post() {
	curl -s -o "$TRASH/body" -D "$TRASH/hdr" -w '%{http_code}' ${2:+-H "Idempotency-Key: $2"} \
		--data-binary "$1" "$API/order"
	echo 1 >>"$TRASH/posts"
}
posts() { lines "$TRASH/posts"; }
# scrape: GET /metrics, parsed by prometheus_client into $TRASH/metrics, one
# line per sample: NAME LABEL=VALUE,... VALUE (labels sorted), and per family
# a line "# FAMILY TYPE"; the parser refusing the text fails the scrape
scrape() {
	curl -s -D "$TRASH/metrics.hdr" -o "$TRASH/metrics.txt" "$API/metrics" &&
	"$PY" -c '
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print("#", f.name, f.type)
    for s in f.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        print(s.name, labels or "-", repr(float(s.value)))
' <"$TRASH/metrics.txt" >"$TRASH/metrics"
}
# metric NAME [LABELS]: a sample's value from the last scrape, as an integer when it is one
metric() {
	awk -v n="$1" -v l="${2:--}" '$1 == n && $2 == l { v = $3; f = 1 }
		END { if (!f) { print "missing"; exit } if (v == int(v)) printf "%d\n", v; else print v }' "$TRASH/metrics"
}
orders() { metric order_api_orders_total "$@"; }
H=order_api_order_request_duration_seconds

test_expect_success 'python3-prometheus-client is installed (scripts/deps)' '
	test -n "$PY" || fail "no python3 imports prometheus_client: apt-get install python3-prometheus-client"
'

test_expect_success '/health is 200 {"status":"ok"} with the database and the broker up, HEAD too' '
	wait_for "[ \"\$(health)\" = 200 ]" 10 "/health 200" &&
	expect_eq ok "$(hfield .status)" && expect_eq up "$(hfield .database)" &&
	expect_eq up "$(hfield .broker)" &&
	curl -s -I -o head.hdr -w "%{http_code}" "$API/health" >head.code &&
	expect_eq 200 "$(cat head.code)" &&
	tr -d "\r" <head.hdr | grep -qi "^Content-Type: application/json" &&
	expect_eq 405 "$(curl -s -o /dev/null -w "%{http_code}" -X POST "$API/health")"
'

test_expect_success '/metrics is text format 0.0.4 the real parser reads; every order counter starts at 0' '
	scrape && tr -d "\r" <"$TRASH/metrics.hdr" | grep -qi "^Content-Type: text/plain; version=0.0.4" &&
	expect_grep "^# order_api_orders counter$" "$TRASH/metrics" &&
	expect_grep "^# $H histogram$" "$TRASH/metrics" &&
	expect_grep "^# order_api_publishes_awaiting_confirm gauge$" "$TRASH/metrics" &&
	expect_grep "^# order_api_database_reconnects counter$" "$TRASH/metrics" &&
	expect_grep "^# order_api_broker_reconnects counter$" "$TRASH/metrics" &&
	expect_grep "^# order_api_orders_unpublished counter$" "$TRASH/metrics" &&
	for f in $(sed -n "s/^# \([^ ]*\) .*/\1/p" "$TRASH/metrics"); do
		case $f in order_api_*) ;; *) fail "family $f is not prefixed order_api_"; return 1 ;; esac
		grep -q "^# HELP $f" "$TRASH/metrics.txt" || { fail "$f has no HELP"; return 1; }
	done &&
	expect_eq 0 "$(orders outcome=placed)" && expect_eq 0 "$(metric ${H}_count)" &&
	expect_eq 1 "$(metric order_api_database_up)" && expect_eq 1 "$(metric order_api_broker_up)"
'

test_expect_success 'the counters move by exactly what was done; the histogram counts every POST' '
	for i in 1 2 3 4 5; do expect_eq 201 "$(post "{\"sku\":\"SKU-1\",\"quantity\":1}" k-$i)" || return 1; done &&
	expect_eq 409 "$(post "{\"sku\":\"SKU-1\",\"quantity\":1}")" &&
	expect_eq 409 "$(post "{\"sku\":\"SKU-1\",\"quantity\":1}")" &&
	expect_eq 404 "$(post "{\"sku\":\"NOPE\",\"quantity\":1}")" &&
	expect_eq 400 "$(post "{\"sku\":")" &&
	expect_eq 200 "$(post "{\"sku\":\"SKU-1\",\"quantity\":1}" k-1)" &&
	expect_eq 422 "$(post "{\"sku\":\"SKU-1\",\"quantity\":2}" k-1)" &&
	expect_eq 200 "$(curl -s -o /dev/null -w "%{http_code}" "$API/stock/SKU-1")" &&
	wait_for "scrape && [ \"\$(metric order_api_publishes_awaiting_confirm)\" = 0 ]" 10 \
		"the broker to confirm the five orders" &&
	expect_eq 5 "$(orders outcome=placed)" placed &&
	expect_eq 2 "$(orders outcome=refused,reason=insufficient_stock)" insufficient_stock &&
	expect_eq 1 "$(orders outcome=refused,reason=unknown_sku)" unknown_sku &&
	expect_eq 1 "$(orders outcome=refused,reason=invalid_request)" invalid_request &&
	expect_eq 1 "$(orders outcome=refused,reason=idempotency_key_reused)" key_reused &&
	expect_eq 1 "$(orders outcome=replayed)" replayed &&
	expect_eq 0 "$(orders outcome=unavailable,reason=database)" unavailable &&
	expect_eq 11 "$(posts)" &&
	expect_eq "$(posts)" "$(metric ${H}_count)" "histogram count" &&
	expect_eq "$(posts)" "$(metric ${H}_bucket le=+Inf)" "+Inf bucket" &&
	awk -v n=${H}_bucket "\$1 == n { if (\$3 + 0 < last) bad = 1; last = \$3 + 0 } END { exit bad }" \
		"$TRASH/metrics" || fail "buckets are not cumulative" &&
	awk -v n=${H}_sum "\$1 == n { exit !(\$3 > 0) }" "$TRASH/metrics" || fail "the sum is not positive" &&
	expect_eq 0 "$(metric order_api_orders_unpublished_total)" &&
	expect_eq 0 "$(metric order_api_database_reconnects_total)" &&
	expect_eq 0 "$(metric order_api_broker_reconnects_total)"
'

# The queue was declared when order-api started; it holds the five orders, and
# is at least two seconds old before its broker is stopped (never within a
# second of a queue's first declaration: design.md, recovery).
test_expect_success 'the five orders are in the queue, which is old enough to stop its broker' '
	wait_depth $Q 5 &&
	started=$(stat -c %Y "$TRASH/api.out") &&
	wait_for "[ \$(date +%s) -ge $((started + 2)) ]" 5 "the queue to be two seconds old"
'

stop_rabbitmq

test_expect_success 'with RabbitMQ stopped /health is 503 naming the broker, the database still up' '
	wait_for "[ \"\$(health)\" = 503 ]" 10 "/health 503" &&
	expect_eq unavailable "$(hfield .status)" && expect_eq down "$(hfield .broker)" &&
	expect_eq up "$(hfield .database)"
'

test_expect_success 'an order placed meanwhile is 201, not published, and counted so' '
	sql "UPDATE vendor_stock SET quantity = 100" &&
	expect_eq 201 "$(post "{\"sku\":\"SKU-1\",\"quantity\":1}" b-1)" &&
	tr -d "\r" <"$TRASH/hdr" | grep -qi "^X-Order-Published: false" &&
	wait_for "scrape && [ \"\$(metric order_api_orders_unpublished_total)\" = 1 ]" 10 \
		"the order counted unpublished" &&
	expect_eq 0 "$(metric order_api_broker_up)" && expect_eq 6 "$(orders outcome=placed)"
'

start_rabbitmq

test_expect_success 'once RabbitMQ is back /health is 200 again, after one broker reconnect' '
	wait_for "[ \"\$(health)\" = 200 ]" 30 "/health 200 again" &&
	expect_eq up "$(hfield .broker)" &&
	scrape && expect_eq 1 "$(metric order_api_broker_reconnects_total)" &&
	expect_eq 1 "$(metric order_api_broker_up)"
'

"$TOP/scripts/services" stop pg >/dev/null 2>&1

test_expect_success 'with PostgreSQL stopped /health is 503 naming the database, the broker still up' '
	wait_for "[ \"\$(health)\" = 503 ]" 10 "/health 503" &&
	expect_eq unavailable "$(hfield .status)" && expect_eq down "$(hfield .database)" &&
	expect_eq up "$(hfield .broker)"
'

test_expect_success 'an order meanwhile is 503 "not placed", counted unavailable' '
	expect_eq 503 "$(post "{\"sku\":\"SKU-1\",\"quantity\":1}" c-1)" &&
	jq -r .message "$TRASH/body" >msg && expect_grep "the order was not placed" msg &&
	scrape && expect_eq 1 "$(orders outcome=unavailable,reason=database)" &&
	expect_eq 0 "$(metric order_api_database_up)"
'

"$TOP/scripts/services" start pg >/dev/null

test_expect_success 'once PostgreSQL is back /health is 200 again, after one database reconnect' '
	wait_for "[ \"\$(health)\" = 200 ]" 30 "/health 200 again" &&
	expect_eq up "$(hfield .database)" &&
	expect_eq 201 "$(post "{\"sku\":\"SKU-1\",\"quantity\":1}" c-1)" &&
	scrape && expect_eq 1 "$(metric order_api_database_reconnects_total)" &&
	expect_eq 7 "$(orders outcome=placed)" &&
	expect_eq "$(posts)" "$(metric ${H}_count)" "histogram count"
'

kill -TERM $api_PID && wait $api_PID
echo $? >"$TRASH/api.status"
test_expect_success 'SIGTERM exits 0; both outages were reported on stderr' '
	expect_eq 0 "$(cat "$TRASH/api.status")" &&
	expect_grep "^order-api: broker .*connected again" "$TRASH/api.err" &&
	expect_grep "^order-api: database .*connected again" "$TRASH/api.err"
'

test_done
