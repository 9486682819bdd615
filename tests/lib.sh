# lib.sh: the harness every test sources (TAP output, real services, helpers).
#
# A test is a shell script that sources this file, calls test_expect_success
# with a sentence for a name and a body, and ends with test_done. Bodies are
# &&-chains run with set -e in a subshell inside $TRASH; inside one:
#   test_expect_code N CMD ARGS...  CMD must exit N (prints expected/got if not)
#   test_cmp EXPECTED ACTUAL        the files are equal (prints diff -u if not)
#   expect_eq WANT GOT [what], expect_grep PATTERN FILE, lines FILE, sql QUERY
#   wait_for 'CONDITION' [SECONDS] [what]  poll a shell condition on the state
# Outside bodies: start_server / start_vendor_mock (readiness watched on the
# pid), test_option_errors PROG <<EOF (a table of bad options, one test each).
# When run by `make check` the services are already up (their environment is
# in OA_SERVICES_ENV); run alone (`prove tests/t1001-...t`) it starts its own
# set. Each test file gets a fresh database cloned from the migrated template,
# and a queue prefix of its own, so tests never see each other's data.

set -u
# A fixed environment: what the caller's shell has set must not change what a
# test sees (messages, sort order, times, and above all which database, broker
# or vendor a program talks to). The services' environment is loaded below.
export LC_ALL=C TZ=UTC
unset LANGUAGE CDPATH
unset $(compgen -e | grep '^PG') 2>/dev/null
unset VENDOR_BASE_URL RABBITMQ_URL DATABASE_URL DB_HOST DB_PORT DB_NAME DB_USER DB_PASS \
	OA_DEBUG OA_DB_PATIENCE VENDORS SYNC_STOCK_WAIT
TEST_NAME=$(basename "$0" .t)
TOP=$(cd "$(dirname "$0")/.." && pwd)
PATH=$TOP/bin:$TOP/scripts:$PATH
export PATH
TRASH=$(mktemp -d "${TMPDIR:-/tmp}/oa-$TEST_NAME.XXXXXX")
chmod 755 "$TRASH"
# sync-stock's lock lives here: a test file never meets another's
export XDG_RUNTIME_DIR=$TRASH/run
mkdir -p "$XDG_RUNTIME_DIR"
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

# A body's output goes to these (hidden, so a body's own files never clash)
# and is shown only when it fails.
BODY_OUT=$TRASH/.body-out
BODY_ERR=$TRASH/.body-err

test_ok_() { test_count=$((test_count + 1)); echo "ok $test_count - $1"; }
test_fail_() {
	test_count=$((test_count + 1)); test_failed=$((test_failed + 1))
	echo "not ok $test_count - $1"
	[ -s "$BODY_OUT" ] && sed 's/^/#   out: /' "$BODY_OUT" | head -n 40
	[ -s "$BODY_ERR" ] && sed 's/^/#   err: /' "$BODY_ERR" | head -n 40
	return 0
}

# test_expect_success 'sentence' 'shell commands': ok if the body exits 0.
# Fd 7 is the body's own stderr, for helpers whose caller redirected 2.
test_expect_success() {
	local name=$1 body=$2
	# Not in an && list: bash ignores set -e inside a subshell whose status
	# is tested, and only the body's last command would count.
	( cleanup_cmds=(); trap run_cleanups EXIT; exec 7>&2; cd "$TRASH" && eval "set -e; $body" ) \
		>"$BODY_OUT" 2>"$BODY_ERR" </dev/null
	if [ $? = 0 ]; then test_ok_ "$name"; else test_fail_ "$name"; fi
}

test_done() {
	echo "1..$test_count"
	[ "$test_failed" = 0 ]
	exit $?
}

# --- assertions (used inside test bodies) ----------------------------------
# say_err MESSAGE: to the body's stderr even if the caller redirected 2
say_err() { { echo "$*" >&7; } 2>/dev/null || echo "$*" >&2; }
fail() { say_err "FAIL: $*"; return 1; }
expect_eq() {	# expect_eq WANT GOT [what]
	[ "$1" = "$2" ] || fail "${3:-value}: expected '$1', got '$2'"
}
expect_grep() {	# expect_grep PATTERN FILE
	grep -q -e "$1" "$2" || fail "'$1' not found in $2: $(head -c 400 "$2")"
}
lines() { wc -l < "$1" | tr -d ' '; }

# test_expect_code N CMD ARGS...: run CMD; fail unless it exited with status N
test_expect_code() {
	local want=$1 got=0; shift
	"$@" || got=$?
	[ "$got" = "$want" ] && return 0
	say_err "test_expect_code: expected exit $want, got $got: $*"
	return 1
}

# test_cmp EXPECTED ACTUAL: the two files are the same (the diff shown if not)
test_cmp() {
	local d
	d=$(diff -u "$1" "$2") && return 0
	say_err "test_cmp: $1 and $2 differ:"; say_err "$d"
	return 1
}

# wait_for 'CONDITION' [SECONDS] [what]: poll the shell CONDITION on the state
# (a file, a row, a process) until it holds; fail naming WHAT after SECONDS
# (default 20). Not a sleep: it returns as soon as the state is there.
wait_for() {
	local cond=$1 limit=${2:-20} what=${3:-$1} end
	end=$(($(date +%s%N) / 1000000 + ${limit%.*} * 1000))
	until eval "$cond"; do
		[ $(($(date +%s%N) / 1000000)) -lt "$end" ] || { fail "gave up after $limit s waiting for $what"; return 1; }
		sleep 0.05
	done
}

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
# publish_n QUEUE FIRST LAST [amqp-publish options]: {"n":FIRST}..{"n":LAST} into QUEUE
publish_n() {
	local q=$1 first=$2 last=$3; shift 3
	seq "$first" "$last" | sed "s/.*/{\"n\":&}/" | amqp-publish -q "$q" "$@"
}
# inject_sql_error TABLE INSERT|UPDATE SQLSTATE N|WHEN: rows written to TABLE
# fail with SQLSTATE: the next N of them (a number), or those for which WHEN
# (a condition on NEW) holds; uninject_sql_error TABLE takes it away
inject_sql_error() {
	local cond=$4
	case $cond in '' | *[!0-9]*) ;; *) cond="nextval('injected') <= $4" ;; esac
	sql "CREATE SEQUENCE IF NOT EXISTS injected;
	     SELECT setval('injected', 1, false);
	     CREATE OR REPLACE FUNCTION inject() RETURNS trigger LANGUAGE plpgsql AS \$\$
	     BEGIN
	         IF $cond THEN
	             RAISE EXCEPTION 'injected failure' USING ERRCODE = '$3';
	         END IF;
	         RETURN NEW;
	     END \$\$;
	     DROP TRIGGER IF EXISTS inject ON $1;
	     CREATE TRIGGER inject BEFORE $2 ON $1 FOR EACH ROW EXECUTE FUNCTION inject()" >/dev/null
}
uninject_sql_error() { sql "DROP TRIGGER IF EXISTS inject ON $1" >/dev/null; }
rabbitmqctl() { "$TOP/scripts/services" rabbitmqctl "$@"; }
queue_depth() {	# messages ready + unacked in queue $1
	rabbitmqctl list_queues -q --no-table-headers name messages 2>/dev/null |
		awk -v q="$1" '$1 == q { print $2; f = 1 } END { if (!f) print 0 }'
}

# wait_ready PID OUT PATTERN [SECONDS] [ERR]: wait until process PID has written
# a line matching the extended regex PATTERN in OUT, and set READY_LINE to it.
# Fails at once if PID exits first (saying its status and what it wrote on
# ERR), or after SECONDS (default 20) if it neither exits nor gets ready.
wait_ready() {
	local pid=$1 out=$2 pattern=$3 limit=${4:-20} err=${5:-} end status=0
	end=$(($(date +%s) + limit))
	while :; do
		READY_LINE=$(grep -E -m 1 -e "$pattern" "$out" 2>/dev/null) && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			# it may have printed the line just before exiting
			READY_LINE=$(grep -E -m 1 -e "$pattern" "$out" 2>/dev/null) && return 0
			wait "$pid" 2>/dev/null || status=$?
			fail "process $pid exited with status $status before it was ready${err:+: $(head -c 2000 "$err")}"
			return 1
		fi
		[ "$(date +%s)" -lt "$end" ] ||
			{ fail "process $pid not ready after $limit s${err:+: $(head -c 2000 "$err")}"; return 1; }
		sleep 0.02
	done
}

# start_server NAME PROG ARGS...: start an HTTP server of ours (vendor-mock,
# order-api) on a free port, output in $TRASH/NAME.out and NAME.err; waits for
# its {"listening":...} line, sets SERVER_PID and SERVER_URL, stops it on exit
start_server() {
	local out=$TRASH/$1.out prog=$2; shift 2
	"$prog" --listen 127.0.0.1:0 "$@" >"$out" 2>"${out%.out}.err" &
	SERVER_PID=$!
	on_exit "kill $SERVER_PID; wait $SERVER_PID"
	wait_ready "$SERVER_PID" "$out" '^\{"listening":"[^"]*"\}$' 20 "${out%.out}.err" ||
		{ fail "$prog did not start"; return 1; }
	SERVER_URL="http://$(echo "$READY_LINE" | sed 's/.*"listening":"\([^"]*\)".*/\1/')"
}

# start_vendor_mock ARGS...: start vendor-mock on a free port; sets VENDOR_BASE_URL
start_vendor_mock() {
	start_server "vendor-mock.$RANDOM" vendor-mock "$@" || return 1
	VENDOR_MOCK_PID=$SERVER_PID
	VENDOR_BASE_URL=$SERVER_URL
	export VENDOR_BASE_URL
}

# start_order_api [ARGS...]: order-api -q $Q ARGS, started as start_server does;
# sets API (its URL) and api_PID. post_order KEY [CURL-ARGS...]: POST one unit
# of SKU-1 keyed KEY to it; prints the HTTP status, body in $TRASH/body,
# headers in $TRASH/hdr.
start_order_api() {
	start_server api order-api -q "$Q" "$@" || return 1
	api_PID=$SERVER_PID API=$SERVER_URL
}
post_order() {
	local key=$1
	shift
	curl -s "$@" -o "$TRASH/body" -D "$TRASH/hdr" -w '%{http_code}' -H "Idempotency-Key: $key" \
		-d '{"sku":"SKU-1","quantity":1}' "$API/order"
}

# --- RabbitMQ helpers (amqp-publish / amqp-consume tests) ---------------------
# stop_rabbitmq, start_rabbitmq: the broker down (returns once its process is
# gone), up again on the same port with the same data (returns once the node
# has booted: scripts/services waits with `rabbitmqctl wait`).
# The rule (issue 18): a broker is never stopped within a second of a queue's
# first declaration. RabbitMQ 3.10 can lose every confirmed message of a
# quorum queue declared less than about 0.5 s before the node went down (and
# leave the queue stuck): that is the broker's behaviour, not what a test is
# about. So stop_rabbitmq first waits until every queue the broker lists has
# been seen for at least 1 s: a queue's first sighting (the names seen in
# $TRASH/.queues-seen.names, the newest sighting's time in .queues-seen) is
# after its declaration, so the queue is older than that.
# Stop the broker only through stop_rabbitmq (or restart_rabbitmq).
stop_rabbitmq() {
	local seen=$TRASH/.queues-seen now first q
	touch "$seen"
	now=$EPOCHREALTIME first=
	while IFS= read -r q; do
		[ -n "$q" ] || continue
		grep -qxF -e "$q" "${seen}.names" 2>/dev/null && continue
		echo "$q" >>"${seen}.names"
		first=$now
	done < <(rabbitmqctl list_queues -q --no-table-headers name 2>/dev/null)
	[ -n "$first" ] && echo "$first" >"$seen"
	# the newest first sighting, 1 s ago at least
	first=$(cat "$seen")
	[ -z "$first" ] || sleep "$(awk -v f="$first" -v n="$EPOCHREALTIME" \
		'BEGIN { d = f + 1 - n; printf "%.3f", (d > 0 ? d : 0) }')"
	"$TOP/scripts/services" stop rabbitmq >/dev/null 2>&1
}
start_rabbitmq() { "$TOP/scripts/services" start rabbitmq >/dev/null; }
# restart_rabbitmq: stop the broker and start it again
restart_rabbitmq() { stop_rabbitmq; start_rabbitmq; }
# drain QUEUE [amqp-consume options]: consume every message, print each body
# with "status":"success" added, exit when the queue stayed idle for 1 s
drain() {
	local q=$1; shift
	amqp-consume -q "$q" --idle-exit 1 "$@" -- jq -c --unbuffered '. + {status: "success"}'
}
# wait_depth QUEUE N: wait (up to 20 s) until the broker counts N messages in
# QUEUE; quorum queues publish their counts every tick (1 s here)
wait_depth() {
	local queue=$1 want=$2
	wait_for '[ "$(queue_depth "$queue")" = "$want" ]' 20 "queue $queue to hold $want messages" ||
		fail "queue $queue: expected $want messages, found $(queue_depth "$queue")"
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

# --- option tables ---------------------------------------------------------------
# test_option_errors PROG <<EOF: one test per line "ARGS | FRAGMENT": PROG ARGS
# (shell words, expanded when the test runs) exits 64, writes nothing on
# stdout, and has a stderr line containing FRAGMENT (the flag or what it names).
# Blank lines and lines starting with # are skipped.
test_option_errors() {
	local prog=$1 row
	while IFS= read -r row; do
		case $row in '' | '#'*) continue ;; esac
		OPT_ARGS=$(echo "${row%%|*}" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
		OPT_FRAGMENT=$(echo "${row#*|}" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
		OPT_PROG=$prog
		case $row in *'|'*) ;; *) OPT_FRAGMENT= ;; esac
		test_expect_success "$prog $OPT_ARGS: exit 64, nothing on stdout, stderr names '$OPT_FRAGMENT'" '
			test -n "$OPT_FRAGMENT" || fail "no stderr fragment in the table row" &&
			eval "set -- $OPT_ARGS" &&
			test_expect_code 64 "$OPT_PROG" "$@" >opt.out 2>opt.err &&
			{ test ! -s opt.out || fail "stdout: $(head -c 400 opt.out)"; } &&
			{ grep -q -F -e "$OPT_FRAGMENT" opt.err || fail "stderr does not say \"$OPT_FRAGMENT\": $(head -c 400 opt.err)"; }
		'
	done
}
