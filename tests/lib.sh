# lib.sh: the harness every test sources (TAP output, real services, helpers).
#
# A test is a shell script that sources this file, calls test_expect_success /
# test_expect_code with a sentence for a name, and ends with test_done. When
# run by `make check` the services are already up (their environment is in
# OA_SERVICES_ENV); run alone (`prove tests/t1001-...t`) it starts its own set.
# Each test file gets a fresh database cloned from the migrated template, and a
# queue prefix of its own, so tests never see each other's data.

set -u
TEST_NAME=$(basename "$0" .t)
TOP=$(cd "$(dirname "$0")/.." && pwd)
PATH=$TOP/bin:$TOP/scripts:$PATH
export PATH
TRASH=$(mktemp -d "${TMPDIR:-/tmp}/oa-$TEST_NAME.XXXXXX")
chmod 755 "$TRASH"
test_count=0
test_failed=0
cleanup_cmds=()

run_cleanups() {
	local i
	for ((i = ${#cleanup_cmds[@]} - 1; i >= 0; i--)); do eval "${cleanup_cmds[$i]}" >/dev/null 2>&1 || true; done
	cleanup_cmds=()
}
cleanup() {
	run_cleanups
	rm -rf "$TRASH"
}
trap cleanup EXIT
on_exit() { cleanup_cmds+=("$*"); }

# --- TAP -----------------------------------------------------------------
say() { echo "# $*"; }

test_ok_() { test_count=$((test_count + 1)); echo "ok $test_count - $1"; }
test_fail_() {
	test_count=$((test_count + 1)); test_failed=$((test_failed + 1))
	echo "not ok $test_count - $1"
	[ -s "$TRASH/out" ] && sed 's/^/#   out: /' "$TRASH/out" | head -n 40
	[ -s "$TRASH/err" ] && sed 's/^/#   err: /' "$TRASH/err" | head -n 40
	return 0
}

# test_expect_success 'sentence' 'shell commands'
test_expect_success() {
	local name=$1 body=$2
	( cleanup_cmds=(); trap run_cleanups EXIT; cd "$TRASH" && eval "set -e; $body" ) >"$TRASH/out" 2>"$TRASH/err" </dev/null &&
		test_ok_ "$name" || test_fail_ "$name"
}

# test_expect_code CODE 'sentence' 'shell commands' : the last command's exact status
test_expect_code() {
	local want=$1 name=$2 body=$3 got
	( cleanup_cmds=(); trap run_cleanups EXIT; cd "$TRASH" && eval "$body" ) >"$TRASH/out" 2>"$TRASH/err" </dev/null
	got=$?
	if [ "$got" = "$want" ]; then test_ok_ "$name"
	else echo "# expected exit $want, got $got" >>"$TRASH/err"; test_fail_ "$name"; fi
}

test_done() {
	echo "1..$test_count"
	[ "$test_failed" = 0 ]
	exit $?
}

# --- assertions (used inside test bodies) ----------------------------------
fail() { echo "FAIL: $*" >&2; return 1; }
expect_eq() {	# expect_eq WANT GOT [what]
	[ "$1" = "$2" ] || fail "${3:-value}: expected '$1', got '$2'"
}
expect_grep() {	# expect_grep PATTERN FILE
	grep -q -e "$1" "$2" || fail "'$1' not found in $2: $(head -c 400 "$2")"
}
lines() { wc -l < "$1" | tr -d ' '; }

# --- services ---------------------------------------------------------------
if [ -z "${OA_SERVICES_ENV:-}" ]; then
	export OA_VAR="$TOP/var/t.$$"
	on_exit "'$TOP/scripts/services' destroy"
	"$TOP/scripts/services" start >/dev/null || { echo "Bail out! scripts/services could not start PostgreSQL and RabbitMQ under $OA_VAR"; exit 1; }
	OA_SERVICES_ENV=$OA_VAR/env
	. "$OA_SERVICES_ENV"
	"$TOP/bin/db-migrate" 2>/dev/null || exit 1
else
	. "$OA_SERVICES_ENV"
fi
BASE_DATABASE_URL=$DATABASE_URL
export OA_DB_PATIENCE=${OA_DB_PATIENCE:-5}

# A database of this test's own, cloned from the migrated one.
TEST_DB="t_$(echo "$TEST_NAME" | tr -c 'a-zA-Z0-9\n' '_')_$$"
psql -XqAt -d "$BASE_DATABASE_URL" -c "CREATE DATABASE $TEST_DB TEMPLATE oa" >/dev/null || exit 1
on_exit "psql -Xq -d '$BASE_DATABASE_URL' -c 'DROP DATABASE IF EXISTS $TEST_DB WITH (FORCE)'"
DATABASE_URL=${BASE_DATABASE_URL%/*}/$TEST_DB
export DATABASE_URL RABBITMQ_URL
QUEUE_PREFIX="$TEST_NAME.$$"

sql() { psql -XqAt -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "$*"; }
rabbitmqctl() { "$TOP/scripts/services" rabbitmqctl "$@"; }
queue_depth() {	# messages ready + unacked in queue $1
	rabbitmqctl list_queues -q --no-table-headers name messages 2>/dev/null |
		awk -v q="$1" '$1 == q { print $2; f = 1 } END { if (!f) print 0 }'
}

# start_server NAME PROG ARGS...: start an HTTP server of ours (vendor-mock,
# order-api) on a free port, output in $TRASH/NAME.out and NAME.err; waits for
# its {"listening":...} line, sets SERVER_PID and SERVER_URL, stops it on exit
start_server() {
	local out=$TRASH/$1.out prog=$2 i; shift 2
	"$prog" --listen 127.0.0.1:0 "$@" >"$out" 2>"${out%.out}.err" &
	SERVER_PID=$!
	on_exit "kill $SERVER_PID; wait $SERVER_PID"
	for i in $(seq 1 200); do
		if grep -q listening "$out" 2>/dev/null; then
			SERVER_URL="http://$(sed -n 's/.*"listening":"\([^"]*\)".*/\1/p' "$out" | head -n 1)"
			return 0
		fi
		kill -0 $SERVER_PID 2>/dev/null || break
		sleep 0.05
	done
	echo "$prog did not start: $(cat "${out%.out}.err")" >&2
	return 1
}

# start_vendor_mock ARGS...: start vendor-mock on a free port; sets VENDOR_BASE_URL
start_vendor_mock() {
	start_server "vendor-mock.$RANDOM" vendor-mock "$@" || return 1
	VENDOR_MOCK_PID=$SERVER_PID
	VENDOR_BASE_URL=$SERVER_URL
	export VENDOR_BASE_URL
}

# --- RabbitMQ helpers (amqp-publish / amqp-consume tests) ---------------------
# restart_rabbitmq: stop the broker and start it again (same port, same data)
restart_rabbitmq() {
	"$TOP/scripts/services" stop rabbitmq >/dev/null 2>&1
	"$TOP/scripts/services" start rabbitmq >/dev/null
}
# drain QUEUE [amqp-consume options]: consume every message, print each body
# with "status":"success" added, exit when the queue stayed idle for 1 s
drain() {
	local q=$1; shift
	amqp-consume -q "$q" --idle-exit 1 "$@" -- jq -c --unbuffered '. + {status: "success"}'
}
# wait_depth QUEUE N: wait (up to 20 s) until the broker counts N messages in
# QUEUE; quorum queues publish their counts every few seconds
wait_depth() {
	local i got
	for i in $(seq 1 100); do
		got=$(queue_depth "$1")
		[ "$got" = "$2" ] && return 0
		sleep 0.2
	done
	fail "queue $1: expected $2 messages, found $got"
}
# publish_raw QUEUE BODY: put BODY (any bytes, even not JSON) in QUEUE as is
publish_raw() {
	rabbitmqctl eval "rabbit_basic:publish(rabbit_misc:r(<<\"/\">>, exchange, <<\"\">>),
		<<\"$1\">>, [{delivery_mode, 2}], <<\"$2\">>)." >/dev/null
}
# bind_queue EXCHANGE KEY QUEUE: bind an existing queue to an existing exchange
bind_queue() {
	rabbitmqctl eval "rabbit_binding:add({binding, rabbit_misc:r(<<\"/\">>, exchange,
		<<\"$1\">>), <<\"$2\">>, rabbit_misc:r(<<\"/\">>, queue, <<\"$3\">>), []},
		<<\"guest\">>)." | grep -qx ok
}
