#!/usr/bin/env bash
# scripts/server-lib: server_start waits for a server's listening line and gives up with 69, saying why, when it exits or stays silent.
. "$(dirname "$0")/lib.sh"
. "$TOP/scripts/server-lib"

test_expect_success 'server_start sets SERVER_URL to where vendor-mock listens' '
	server_start mock.out mock.err vendor-mock --listen 127.0.0.1:0 --generate acme:1 &&
	rc=0; curl -sf "$SERVER_URL/vendor/acme/stock" >stock || rc=$?
	kill "$SERVER_PID"; wait "$SERVER_PID"
	expect_eq 0 "$rc" "curl status" && expect_grep "SKU-000001" stock
'

test_expect_success 'a server that exits before listening: 69, its status and what it wrote' '
	rc=0; server_start mock.out mock.err vendor-mock --listen 127.0.0.1:0 --bogus 2>msg || rc=$?
	expect_eq 69 "$rc" "server_start status" &&
	expect_grep "exited with status 64 before it listened" msg && expect_grep "unrecognized option" msg
'

test_expect_success 'a server silent past SERVER_PATIENCE: 69 within a second more, stopped, what it wrote' '
	t0=$(date +%s) &&
	rc=0; SERVER_PATIENCE=1 server_start quiet.out quiet.err sh -c "echo starting >&2; exec sleep 60" 2>msg || rc=$?
	took=$(($(date +%s) - t0))
	expect_eq 69 "$rc" "server_start status" && expect_eq yes "$([ "$took" -le 3 ] && echo yes)" "gave up within 3 s (took $took)" &&
	expect_grep "did not say where it listens within 1 s" msg && expect_grep "starting" msg &&
	! kill -0 "$SERVER_PID" 2>/dev/null
'

test_done
