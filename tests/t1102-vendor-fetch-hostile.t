#!/usr/bin/env bash
# vendor-fetch and hostile responses: a gzip bomb fails its vendor under its cap; memory has a ceiling.
. "$(dirname "$0")/lib.sh"

# Under make check SANITIZE=1, AddressSanitizer's quarantine keeps freed
# memory (every realloc of a growing body) resident: peak RSS is measured
# without it, so that it is the program's own.
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0
export ASAN_OPTIONS

start_vendor_mock --generate acme:3 --generate globex:4 || exit 1
M=$VENDOR_BASE_URL
unset VENDOR_BASE_URL

# serve.py: the files of the current directory; a .gz one with Content-Encoding: gzip.
cat >"$TRASH/serve.py" <<'PY'
import http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        if self.path.endswith(".gz"):
            self.send_header("Content-Encoding", "gzip")
        super().end_headers()
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY

# 512 MB of zeros in about 500 kB, and six 60 MB responses that are valid (an empty array).
(cd "$TRASH" && mkdir www && cd www &&
	head -c 512M /dev/zero | gzip -1 >bomb.gz &&
	{ printf "["; head -c 60000000 /dev/zero | tr "\0" " "; printf "]"; } | gzip -1 >pad.gz &&
	for i in 1 2 3 4 5 6; do ln pad.gz pad$i.gz; done &&
	printf "\001[{\"sku\":\"A\",\"quantity\":1}]" >ctl.json) || exit 1
(cd "$TRASH/www" && exec python3 ../serve.py >../serve.port 2>../serve.err) &
SERVE_PID=$!
on_exit "kill $SERVE_PID; wait $SERVE_PID"
wait_ready $SERVE_PID "$TRASH/serve.port" "^[0-9]+$" 10 "$TRASH/serve.err" || exit 1
W=http://127.0.0.1:$READY_LINE

test_expect_success 'a gzip bomb fails its vendor at the cap; the other vendors are written; exit 69' '
	test_expect_code 69 /usr/bin/time -f %M -o rss vendor-fetch --base "$M" acme bomb="$W/bomb.gz" globex \
		>out 2>err &&
	expect_grep "^vendor-fetch: bomb: response larger than 67108864 bytes after 1 attempt; no lines written for bomb" err &&
	expect_eq 0 "$(grep -c "\"vendor\":\"bomb\"" out)" "lines of bomb" &&
	expect_eq "acme complete 3
globex complete 4" "$(jq -r "select(.snapshot) | \"\(.vendor) \(.snapshot) \(.items)\"" out | sort)" "blocks" &&
	say "peak RSS $(tail -n 1 rss) kB" &&
	test "$(tail -n 1 rss)" -lt $((160 * 1024))
'

test_expect_success '--max-bytes lowers the cap: the bomb stops sooner' '
	test_expect_code 69 /usr/bin/time -f %M -o rss vendor-fetch --max-bytes 1048576 bomb="$W/bomb.gz" \
		>out 2>err &&
	expect_grep "bomb: response larger than 1048576 bytes" err &&
	say "peak RSS $(tail -n 1 rss) kB" &&
	test "$(tail -n 1 rss)" -lt $((32 * 1024))
'

test_expect_success 'six 60 MB responses under --max-total 128 MiB: all written, at most two held at once' '
	set -- &&
	for i in 1 2 3 4 5 6; do set -- "$@" "v$i=$W/pad$i.gz"; done &&
	/usr/bin/time -f %M -o rss vendor-fetch --max-total 134217728 "$@" >out 2>err &&
	expect_eq 6 "$(jq -r "select(.snapshot == \"complete\") | .vendor" out | sort -u | wc -l)" "blocks" &&
	say "peak RSS $(tail -n 1 rss) kB" &&
	test "$(tail -n 1 rss)" -lt $((200 * 1024))
'

test_expect_success 'a control byte before the array: the vendor fails saying why (found by make fuzz)' '
	test_expect_code 69 vendor-fetch ctl="$W/ctl.json" >out 2>err &&
	expect_grep "^vendor-fetch: ctl: the response is not valid JSON (near byte 0) after 1 attempt" err
'

test_expect_success 'an item whose SKU is longer than 255 bytes is skipped; the snapshot is partial' '
	printf "[{\"sku\":\"%s\",\"quantity\":1},{\"sku\":\"ok\",\"quantity\":2}]" \
		"$(head -c 300 /dev/zero | tr "\0" x)" >"$TRASH/www/long.json" &&
	vendor-fetch v="$W/long.json" >out 2>err &&
	expect_grep "v: item 1 (.\[0\]): \"sku\" is longer than 255 bytes; skipped" err &&
	expect_eq "ok" "$(jq -r "select(.sku) | .sku" out)" "written" &&
	expect_eq partial "$(jq -r "select(.snapshot) | .snapshot" out)" "snapshot"
'

test_expect_success 'a --max-total below --max-bytes is a usage error' '
	test_expect_code 64 vendor-fetch --max-bytes 2048 --max-total 1024 a=http://127.0.0.1:1/ >out 2>err && expect_grep "max-total" err
'

test_done
