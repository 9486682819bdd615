#!/usr/bin/env bash
# The systemd units and the crontab example exist, run programs that exist, and pass systemd-analyze verify.
. "$(dirname "$0")/lib.sh"

UNITS="order-worker.service order-api.service stock-sync.service stock-sync.timer order-sweep.service order-sweep.timer"
SD=$TOP/scripts/systemd

# installed PATH: where the package (and make install PREFIX=/usr) puts the
# program named by an installed path, here: a built program or one of scripts/
LIBEXEC=/usr/lib/order-aggregator
local_path() {
	local name=${1#$LIBEXEC/}
	if [ -e "$TOP/src/$name.c" ]; then echo "$TOP/bin/$name"; else echo "$TOP/scripts/$name"; fi
}
# the installed programs a file runs
programs_of() { grep -o "$LIBEXEC/[A-Za-z0-9_.-]*" "$1" | sort -u; }
# directive FILE KEY: the value of KEY= in FILE (the last one, as systemd takes it)
directive() { sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" | tail -n 1; }

test_expect_success 'every unit file and the env and crontab examples exist' '
	for f in $UNITS env.example; do test -s "$SD/$f" || fail "missing scripts/systemd/$f"; done &&
	test -s "$TOP/scripts/crontab.example"
'

test_expect_success 'every program a unit runs exists in the tree and is executable' '
	for u in $UNITS; do
		case $u in *.service) ;; *) continue ;; esac
		expect_grep "^ExecStart=" "$SD/$u" && expect_grep "^EnvironmentFile=/etc/order-aggregator/env$" "$SD/$u" &&
		programs_of "$SD/$u" >progs && test -s progs || fail "$u runs no $LIBEXEC program"
		while read -r p; do test -x "$(local_path "$p")" || fail "$u: $p is not $(local_path "$p")"; done <progs
	done
'

test_expect_success 'each timer starts a service that exists' '
	for t in stock-sync order-sweep; do test -s "$SD/$t.service" || fail "$t.timer has no $t.service"; done
'

test_expect_success 'every man page a unit names in Documentation= is in man/' '
	for u in $UNITS; do
		for m in $(sed -n "s/^Documentation=//p" "$SD/$u"); do
			case $m in man:*) ;; *) continue ;; esac
			page=${m#man:} && sec=${page##*(} && sec=${sec%)} && page=${page%(*}
			test -s "$TOP/man/man$sec/$page.$sec" || fail "$u: no man/man$sec/$page.$sec"
		done
	done
'

test_expect_success 'the worker: amqp-consume on the orders queue feeding fulfil, stopped gracefully, restarted always' '
	u=$SD/order-worker.service &&
	set -- $(directive "$u" ExecStart) &&
	expect_eq amqp-consume "$(basename "$1")" "program the worker runs" &&
	queue=$(echo " $* " | sed -n "s/.* -q \([^ ]*\) .*/\1/p") &&
	expect_eq orders "$queue" "queue it consumes" &&
	child=$(echo " $* " | sed -n "s/.* -- \([^ ]*\).*/\1/p") &&
	expect_eq fulfil "$(basename "$child")" "the child amqp-consume feeds" &&
	# SIGTERM (the default if unset) to amqp-consume alone: it lets fulfil answer what it holds
	expect_eq mixed "$(directive "$u" KillMode)" KillMode &&
	case $(directive "$u" KillSignal) in "" | SIGTERM | TERM | 15) ;; *) fail "KillSignal is not SIGTERM" ;; esac &&
	{ test -n "$(directive "$u" TimeoutStopSec)" || fail "no TimeoutStopSec"; } &&
	expect_eq always "$(directive "$u" Restart)" Restart
'

test_expect_success 'the sweep unit publishes what order-sweep finds to the orders queue, failing if either fails' '
	cmd=$(directive "$SD/order-sweep.service" ExecStart) &&
	case $cmd in *pipefail*) ;; *) fail "the pipeline runs without pipefail: $cmd" ;; esac &&
	case $cmd in *"/order-sweep "*"| "*"/amqp-publish -q orders"*) ;; *) fail "not order-sweep | amqp-publish -q orders: $cmd" ;; esac
'

test_expect_success 'the crontab example runs existing programs with the env file, and parses' '
	c=$TOP/scripts/crontab.example &&
	grep -v "^#" "$c" | grep -E "^[*0-9]" >jobs && expect_eq 2 "$(lines jobs)" "jobs" &&
	for p in sync-stock order-sweep amqp-publish; do
		expect_grep "$p" jobs && test -x "$(local_path "$p")" || exit 1
	done &&
	expect_eq 2 "$(grep -c "\. /etc/order-aggregator/env" jobs)" "jobs reading the env file" &&
	cut -f 2- jobs >cmds && bash -n cmds
'

test_expect_success 'the env example sets every variable the programs read and sources cleanly' '
	( set -a && . "$SD/env.example" && set +a &&
	  test -n "$DATABASE_URL" && test -n "$RABBITMQ_URL" && test -n "$VENDOR_BASE_URL" &&
	  expect_eq "acme globex" "$VENDORS" )
'

if ! command -v systemd-analyze >/dev/null 2>&1; then
	test_ok_ "every timer has a calendar systemd-analyze accepts # skip systemd-analyze not installed"
	test_ok_ "systemd-analyze verify passes on every unit # skip systemd-analyze not installed"
	test_done
fi

test_expect_success 'every timer has a calendar systemd-analyze accepts' '
	for t in stock-sync order-sweep; do
		cal=$(directive "$SD/$t.timer" OnCalendar) &&
		test -n "$cal" || fail "$t.timer has no OnCalendar" &&
		systemd-analyze calendar "$cal" >cal.out 2>&1 || fail "$t.timer: OnCalendar=$cal: $(cat cal.out)" || exit 1
	done
'

# Verify copies whose installed paths point into the tree: that the programs
# exist is part of what verify checks, and nothing here is installed.
test_expect_success 'systemd-analyze verify passes on every unit (installed paths mapped to the tree)' '
	mkdir -p units && cp "$SD/env.example" env &&
	for u in $UNITS; do
		sed -e "s#^EnvironmentFile=/etc/order-aggregator/env#EnvironmentFile=$TRASH/env#" "$SD/$u" >units/$u
		for p in $(programs_of "$SD/$u"); do sed -i "s#$p#$(local_path "$p")#g" units/$u; done
	done &&
	( cd units && systemd-analyze verify --man=no $UNITS ) >out.txt 2>&1 ||
		fail "systemd-analyze verify: $(cat out.txt)" &&
	test ! -s out.txt || fail "systemd-analyze verify said: $(cat out.txt)"
'

test_done
