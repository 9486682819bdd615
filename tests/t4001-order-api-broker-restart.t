#!/usr/bin/env bash
# order-api rides out a broker restart: orders never fail, unconfirmed ones say so, publishing resumes.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders

sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('acme', 'SKU-1', 1000)"

start_server api order-api -q $Q || exit 1
api_PID=$SERVER_PID
API=$SERVER_URL

# post KEY: place one unit keyed KEY; appends "ID PUBLISHED" to $TRASH/placed, prints the status
post() {
	local code
	code=$(curl -s -o "$TRASH/body" -D "$TRASH/hdr" -w '%{http_code}' -H "Idempotency-Key: $1" \
		-d '{"sku":"SKU-1","quantity":1}' "$API/order") || return 1
	[ "$code" = 201 ] &&
		echo "$(jq -r .order_id "$TRASH/body") $(tr -d '\r' <"$TRASH/hdr" | sed -n 's/^X-Order-Published: //Ip')" >>"$TRASH/placed"
	echo "$code"
}
published() { awk '{ print $2 }' "$TRASH/placed" | tail -n 1; }

test_expect_success 'an order is published while the broker is up' '
	expect_eq 201 "$(post a-1)" && expect_eq true "$(published)"
'

stop_rabbitmq

test_expect_success 'with the broker stopped an order is still 201, not published, pending' '
	expect_eq 201 "$(post b-1)" && expect_eq false "$(published)" &&
	expect_eq 201 "$(post b-2)" && expect_eq false "$(published)" &&
	expect_eq 3 "$(sql "SELECT count(*) FROM orders WHERE status = \$\$pending\$\$")"
'

start_rabbitmq

test_expect_success 'once the broker is back, orders are published again' '
	# a poll on the state (an order per try, each must succeed), 20 s at most
	for i in $(seq 1 40); do
		expect_eq 201 "$(post c-$i)" || return 1
		[ "$(published)" = true ] && break
		sleep 0.5
	done &&
	expect_eq true "$(published)"
'

test_expect_success 'the queue holds exactly the confirmed orders' '
	wait_depth $Q "$(grep -c " true$" "$TRASH/placed")"
'

test_expect_success 'order-sweep finds every order that was not published' '
	order-sweep --older-than 0 >swept && grep -c " false$" "$TRASH/placed" >unpublished &&
	expect_eq 2 "$(cat unpublished)" &&
	for id in $(awk "\$2 == \"false\" { print \$1 }" "$TRASH/placed"); do
		grep -q "^{\"order_id\":$id," swept || fail "order $id not swept" || return 1
	done
'

kill -TERM $api_PID && wait $api_PID
echo $? >"$TRASH/api.status"
test_expect_success 'SIGTERM exits 0; the broker outage was reported on stderr' '
	expect_eq 0 "$(cat "$TRASH/api.status")" && expect_grep "^order-api: broker" "$TRASH/api.err"
'

test_done
