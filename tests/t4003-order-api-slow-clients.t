#!/usr/bin/env bash
# order-api and thousands of idle connections from one address: other clients are still served.
. "$(dirname "$0")/lib.sh"

Q=$QUEUE_PREFIX.orders
N=2000

sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('acme', 'SKU-1', 10)"

# hold.py PORT N: open N connections from 127.0.0.2, each with half a request
# (no blank line), print "held N" and keep them until stdin closes.
cat >"$TRASH/hold.py" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for i in range(n):
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"POST /order HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
    except OSError:
        pass
    socks.append(s)
print("held", len(socks), flush=True)
sys.stdin.read()
PY

test_expect_success "$N idle connections from 127.0.0.2: a POST from 127.0.0.1 still gets 201 within a second" '
	ulimit -n 8192 &&
	start_server api order-api -q $Q &&
	port=${SERVER_URL##*:} && api_pid=$SERVER_PID &&
	mkfifo hold.in &&
	{ timeout 120 python3 hold.py $port $N <hold.in >hold.out 2>hold.err & } &&
	hold_pid=$! && exec 9>hold.in &&
	on_exit "exec 9>&-; kill $hold_pid; wait $hold_pid" &&
	for i in $(seq 1 300); do grep -q held hold.out && break; sleep 0.1; done &&
	expect_grep "held $N" hold.out &&
	t=$(curl -s -m 5 -o body -w "%{http_code} %{time_total}" -H "Content-Type: application/json" \
		--data-binary "{\"sku\":\"SKU-1\",\"quantity\":1}" "$SERVER_URL/order") &&
	say "POST /order: $t" &&
	expect_eq 201 "${t% *}" "status" &&
	awk -v t="${t#* }" "BEGIN { exit !(t < 1.0) }" &&
	held=$(ss -Htn state established "( sport = :$port )" | grep -c "127.0.0.2:" || true) &&
	say "connections from 127.0.0.2 held by order-api: $held" &&
	test "$held" -le 256 &&
	exec 9>&- && wait $hold_pid; kill -0 $api_pid
'

test_expect_success 'OA_HTTP_MAX_PER_CLIENT lowers the limit: the connections past it are closed' '
	OA_HTTP_MAX_PER_CLIENT=3 start_server api2 order-api -q $Q &&
	port=${SERVER_URL##*:} &&
	mkfifo hold2.in &&
	{ timeout 60 python3 hold.py $port 10 <hold2.in >hold2.out 2>&1 & } &&
	hold_pid=$! && exec 8>hold2.in &&
	on_exit "exec 8>&-; kill $hold_pid; wait $hold_pid" &&
	for i in $(seq 1 100); do grep -q held hold2.out && break; sleep 0.1; done &&
	for i in $(seq 1 50); do
		held=$(ss -Htn state established "( sport = :$port )" | grep -c "127.0.0.2:" || true)
		[ "$held" -le 3 ] && break; sleep 0.1
	done &&
	expect_eq 3 "$held" "connections from 127.0.0.2 held" &&
	curl -s -o /dev/null -w "%{http_code}" "$SERVER_URL/stock/SKU-1" >code &&
	expect_eq 200 "$(cat code)" "GET from 127.0.0.1"
'

test_expect_success 'a bad OA_HTTP_MAX_PER_CLIENT is a usage error' '
	test_expect_code 64 env OA_HTTP_MAX_PER_CLIENT=x timeout 10 order-api --listen 127.0.0.1:0 -q $Q >out.txt 2>err.txt && expect_grep "OA_HTTP_MAX_PER_CLIENT" err.txt
'

test_done
