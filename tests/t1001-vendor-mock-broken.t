#!/usr/bin/env bash
# vendor-mock plays a broken vendor, one vendor at a time: a chosen status and body, no answer at all, a dropped connection.
. "$(dirname "$0")/lib.sh"

echo '[{"sku":"SKU-1","quantity":12}]' >"$TRASH/cat.json"
# post VENDOR: POST an order; the status goes to stdout, the body to file "body"; curl's own status to file "rc".
post() {
	rc=0
	curl -s -m "${2:-5}" -o body -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
		-d '{"order_id":1,"sku":"SKU-1","quantity":1}' "$VENDOR_BASE_URL/vendor/$1/orders" || rc=$?
	echo "$rc" >rc
}
vendors=
for v in ok auth gone html hang drop; do vendors="$vendors --vendor $v=$TRASH/cat.json"; done
# shellcheck disable=SC2086
start_vendor_mock $vendors --answer auth='401:{"error":"unauthorized"}' --answer gone=404 \
	--answer html='200:<html>Moved</html>' --hang hang --drop drop || exit 1

test_expect_success '--answer VENDOR=STATUS:BODY answers that vendor with that status and body' '
	expect_eq 401 "$(post auth)" status && expect_eq unauthorized "$(jq -r .error body)" body &&
	expect_eq 200 "$(post html)" status && expect_eq "<html>Moved</html>" "$(cat body)" body &&
	curl -s -o body -w "%{http_code}" "$VENDOR_BASE_URL/vendor/auth/stock" >code &&
	expect_eq 401 "$(cat code)" "stock too"
'

test_expect_success '--answer VENDOR=STATUS alone answers with an empty body' '
	expect_eq 404 "$(post gone)" status && test ! -s body
'

test_expect_success 'the other vendors answer as usual' '
	expect_eq 201 "$(post ok)" status && expect_eq accepted "$(jq -r .status body)"
'

test_expect_success '--hang VENDOR answers nothing until the client gives up; the others are served meanwhile' '
	{ post hang 2 >hang.code; echo "$(cat rc)" >hang.rc; } &
	waiter=$! &&
	t0=$EPOCHREALTIME && expect_eq 201 "$(post ok)" "status beside a hung request" &&
	awk -v s="$t0" -v e="$EPOCHREALTIME" "BEGIN { exit !(e - s < 1) }" &&
	wait $waiter && expect_eq 28 "$(cat hang.rc)" "curl status (timeout)" &&
	expect_eq 000 "$(cat hang.code)" "no status"
'

test_expect_success '--drop VENDOR closes the connection without an answer' '
	post drop >code && expect_eq 52 "$(cat rc)" "curl status (empty reply)" &&
	expect_eq 000 "$(cat code)" "no status"
'

test_expect_success 'vendor-mock holding a hung request still stops on SIGTERM' '
	{ post hang 30 >/dev/null; } & waiter=$! &&
	wait_for "[ \$(ss -Htn state established \"( dport = :${VENDOR_BASE_URL##*:} )\" | wc -l) -gt 0 ]" 5 "the hung request" &&
	kill $VENDOR_MOCK_PID &&
	wait_for "! kill -0 $VENDOR_MOCK_PID 2>/dev/null" 10 "vendor-mock to stop" &&
	{ wait $waiter || true; }
'

for args in '--answer ok=99' '--answer ok=600:x' '--answer ok=abc' '--hang nobody' '--drop nobody'; do
	test_expect_success "vendor-mock $args is a usage error" "
		test_expect_code 64 vendor-mock --listen 127.0.0.1:0 --vendor ok=\$TRASH/cat.json $args >out 2>err &&
		test -s err
	"
done

test_done
