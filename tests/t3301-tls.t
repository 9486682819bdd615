#!/usr/bin/env bash
# amqps:// URLs: publish and consume over TLS with the certificate verified; a certificate from another CA is refused.
. "$(dirname "$0")/lib.sh"

# A throwaway CA, a server certificate for localhost from it, and another CA.
TLS=$TRASH/tls
mkdir -p "$TLS" && cd "$TLS" || exit 1
{
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=oa-test-ca &&
	openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost &&
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext &&
	openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
		-days 2 -extfile san.ext &&
	openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 -subj /CN=other-ca
} >openssl.log 2>&1 || { echo "Bail out! openssl could not make the test certificates: $(tail -n 3 openssl.log)"; exit 1; }
cd "$TRASH" || exit 1

# A broker of this test's own with a TLS listener beside its plain one.
NODE=$TRASH/node
on_exit "OA_VAR='$NODE' '$TOP/scripts/services' destroy >/dev/null 2>&1"
OA_VAR=$NODE OA_RMQ_TLS=$TLS "$TOP/scripts/services" start rabbitmq >"$TRASH/node.env" 2>"$TRASH/node.err" ||
	{ echo "Bail out! RabbitMQ with TLS did not start: $(tail -n 3 "$TRASH/node.err")"; exit 1; }
TLS_URL=$(. "$TRASH/node.env" && echo "${RABBITMQ_TLS_URL:-}")
[ -n "$TLS_URL" ] || { echo "Bail out! no TLS listener in $(cat "$TRASH/node.env")"; exit 1; }
Q=$QUEUE_PREFIX.tls

test_expect_success 'amqp-publish and amqp-consume over amqps:// with the CA given: every message goes round' '
	seq 1 100 | sed "s/.*/{\"n\":&}/" >in &&
	RABBITMQ_URL=$TLS_URL amqp-publish -q "$Q" <in 2>pub.err &&
	RABBITMQ_URL=$TLS_URL amqp-consume -q "$Q" --idle-exit 1 -- \
		jq -c --unbuffered "{n, status: \"success\"}" >out 2>con.err &&
	expect_eq 100 "$(jq -r .n out | sort -u | wc -l)" "messages answered" &&
	expect_eq "" "$(cat pub.err con.err)" "stderr"
'

test_expect_success 'a server certificate from another CA is refused at once: exit 69, the reason said, nothing taken' '
	bad=${TLS_URL%%\?*}?cacertfile=$TLS/other.pem &&
	start=$SECONDS &&
	echo "{\"n\":1}" | RABBITMQ_URL=$bad test_expect_code 69 amqp-publish -q "$Q" --patience 20 2>err &&
	test $((SECONDS - start)) -lt 10 || fail "took $((SECONDS - start)) s" &&
	expect_grep "certificate\|verif" err &&
	RABBITMQ_URL=$bad test_expect_code 69 amqp-consume -q "$Q" --idle-exit 1 -- cat 2>err2 &&
	expect_grep "verif" err2
'

test_expect_success 'verify=verify_none connects without a CA (said to be unverified in the URL only)' '
	echo "{\"n\":1}" | RABBITMQ_URL="${TLS_URL%%\?*}?verify=verify_none" amqp-publish -q "$Q" &&
	RABBITMQ_URL=$TLS_URL amqp-consume -q "$Q" --idle-exit 1 -- jq -c --unbuffered "{n, status: \"success\"}" >out2 &&
	expect_eq 1 "$(lines out2)" "answers"
'

test_expect_success 'a query on a plain amqp:// URL, or an unknown parameter, is refused with the reason, exit 69' '
	plain=$(. "$TRASH/node.env" && echo "$RABBITMQ_URL") &&
	echo "{\"n\":1}" | RABBITMQ_URL="$plain?cacertfile=$TLS/ca.pem" test_expect_code 69 amqp-publish -q "$Q" 2>err3 &&
	expect_grep "only for amqps://" err3 &&
	echo "{\"n\":1}" | RABBITMQ_URL="${TLS_URL}&colour=blue" test_expect_code 69 amqp-publish -q "$Q" 2>err4 &&
	expect_grep "unknown query parameter" err4
'

test_done
