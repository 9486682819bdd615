#!/usr/bin/env bash
# order-report prints one JSON object: orders by status, the oldest pending order's age, reserved units and queue depths.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('acme', 'SKU-1', 100), ('globex', 'SKU-2', 50)"

test_expect_success 'an empty database: zero counts, no oldest pending order, no reservation' '
	order-report -q $Q.none >out 2>err.txt &&
	expect_eq 1 "$(lines out)" "lines" &&
	expect_eq "{\"pending\":0,\"success\":0,\"failed\":0}" "$(jq -c .orders out)" "orders" &&
	expect_eq null "$(jq .oldest_pending_seconds out)" "oldest pending" &&
	expect_eq 0 "$(jq .reserved_units out)" "reserved units"
'

test_expect_success 'a queue that does not exist has a null depth, and stderr names it' '
	order-report -q $Q.none >out 2>err.txt &&
	expect_eq null "$(jq .queue_depth out)" "depth" &&
	expect_eq null "$(jq .dead_letter_depth out)" "dead-letter depth" &&
	expect_eq "$Q.none.dead" "$(jq -r .dead_letter_queue out)" "dead-letter queue" &&
	expect_grep "queue $Q.none: " err.txt
'

test_expect_success 'a missing work queue does not hide its dead-letter queue'\''s depth' '
	echo "{\"n\":1}" | amqp-publish -q $Q.gone.dead &&
	wait_depth $Q.gone.dead 1 &&
	order-report -q $Q.gone >out 2>err.txt &&
	expect_eq null "$(jq .queue_depth out)" "depth" &&
	expect_eq 1 "$(jq .dead_letter_depth out)" "dead-letter depth" &&
	expect_grep "queue $Q.gone: " err.txt
'

test_expect_success 'placed orders are counted by status, their units reserved, their messages counted' '
	printf "%s\n" "{\"sku\":\"SKU-1\",\"quantity\":3}" "{\"sku\":\"SKU-1\",\"quantity\":4}" \
		"{\"sku\":\"SKU-2\",\"quantity\":5}" "{\"sku\":\"SKU-9\",\"quantity\":1}" >requests &&
	order-place <requests >placed &&
	expect_eq 3 "$(grep -c "\"status\":\"pending\"" placed)" "pending orders placed" &&
	grep "\"status\":\"pending\"" placed | amqp-publish -q $Q &&
	wait_depth $Q 3 &&
	order-report -q $Q >out 2>err.txt && test ! -s err.txt &&
	expect_eq "{\"pending\":3,\"success\":0,\"failed\":0}" "$(jq -c .orders out)" "orders" &&
	expect_eq 12 "$(jq .reserved_units out)" "reserved units" &&
	expect_eq "$Q" "$(jq -r .queue out)" "queue" &&
	expect_eq 3 "$(jq .queue_depth out)" "depth" &&
	expect_eq 0 "$(jq .dead_letter_depth out)" "dead-letter depth"
'

test_expect_success 'the oldest pending order is aged from when it was placed; settled orders do not count' '
	id=$(jq -r "select(.status == \"pending\") | .order_id" placed | head -n 1) &&
	sql "UPDATE orders SET created_at = now() - interval '\''1 hour'\'' WHERE id = $id" &&
	sql "INSERT INTO orders (sku, quantity, vendor, status, created_at)
		VALUES ('\''SKU-1'\'', 1, '\''acme'\'', '\''success'\'', now() - interval '\''2 hours'\''),
		       ('\''SKU-1'\'', 1, '\''acme'\'', '\''failed'\'', now() - interval '\''3 hours'\'')" &&
	order-report -q $Q >out &&
	expect_eq "{\"pending\":3,\"success\":1,\"failed\":1}" "$(jq -c .orders out)" "orders" &&
	age=$(jq .oldest_pending_seconds out) &&
	test "$age" -ge 3600 && test "$age" -lt 3700 || fail "oldest pending age $age"
'

test_expect_success 'a message dead-lettered by amqp-consume is counted in the dead-letter depth' '
	cat >child <<-\EOF &&
	#!/bin/sh
	while read -r line; do
		n=$(echo "$line" | jq .n)
		[ "$n" = 2 ] && exit 3
		echo "{\"n\":$n,\"status\":\"success\"}"
	done
	EOF
	chmod +x child &&
	printf "%s\n" "{\"n\":1}" "{\"n\":2}" "{\"n\":3}" | amqp-publish -q $Q.poison --max-deliveries 1 &&
	amqp-consume -q $Q.poison --max-deliveries 1 --idle-exit 1 -- ./child >answers 2>/dev/null &&
	wait_depth $Q.poison.dead 1 &&
	order-report -q $Q.poison >out &&
	expect_eq 0 "$(jq .queue_depth out)" "depth" &&
	expect_eq 1 "$(jq .dead_letter_depth out)" "dead-letter depth" &&
	order-report -q $Q >out &&
	expect_eq 3 "$(jq .queue_depth out)" "depth of the other queue"
'

test_expect_success 'the default queue is orders' '
	order-report >out 2>/dev/null &&
	expect_eq orders "$(jq -r .queue out)" "queue" &&
	expect_eq orders.dead "$(jq -r .dead_letter_queue out)" "dead-letter queue"
'

test_expect_success 'an unreachable broker: the report still comes, depths null, stderr says why, exit 0' '
	RABBITMQ_URL=amqp://guest:guest@127.0.0.1:1/%2f order-report -q $Q >out 2>err.txt &&
	expect_eq 3 "$(jq .orders.pending out)" "pending" &&
	expect_eq null "$(jq .queue_depth out)" "depth" &&
	expect_eq null "$(jq .dead_letter_depth out)" "dead-letter depth" &&
	expect_grep "broker" err.txt
'

test_expect_success 'an unreachable database: nothing on stdout, exit 69' '
	DATABASE_URL=postgresql://127.0.0.1:1/none OA_DB_PATIENCE=0 \
		test_expect_code 69 order-report -q $Q >out 2>err.txt &&
	test ! -s out && expect_grep "database unavailable" err.txt
'

test_expect_success 'an unknown option or an argument is a usage error' '
	test_expect_code 64 order-report extra 2>err.txt &&
	expect_grep "^usage: order-report" err.txt
'

test_expect_success '-h and --help list the options; --version says the project' '
	order-report -h >out && expect_grep "^  -q, --queue QUEUE" out &&
	order-report --help >out2 && cmp out out2 &&
	expect_eq "order-report (order-aggregator)" "$(order-report --version | cut -d" " -f1-2)"
'

test_done
