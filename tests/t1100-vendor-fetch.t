#!/usr/bin/env bash
# vendor-fetch fetches every vendor at once, retries what is worth retrying, and writes whole blocks.
. "$(dirname "$0")/lib.sh"

# stat URL VENDOR FIELD: one of vendor-mock's per-vendor counters
stat() { curl -s "$1/_stats" | jq -r --arg v "$2" --arg f "$3" '.vendors[$v][$f]'; }
# logged LOG PATH: how many requests for PATH vendor-mock logged
logged() { grep -c "\"path\":\"$2\"" "$1" || true; }

# A vendor that reports stock per warehouse rather than as one quantity.
cat >"$TRASH/wh.json" <<'EOF'
[{"sku":"W-1","quantity":0,"warehouses":[{"bin":"A","on_hand":4},{"bin":"B","on_hand":3}]},
 {"sku":"W-2","quantity":0,"warehouses":[]}]
EOF

# A vendor whose names are not all UTF-8.
printf '[{"sku":"L-1","quantity":1,"name":"caf\303\251 \377"}]\n' >"$TRASH/latin.json"

start_vendor_mock --generate acme:3 --generate globex:4 --generate down:2 \
	--generate big:3000 --generate huge:3000 --generate slow:1 \
	--vendor wh="$TRASH/wh.json" --vendor latin="$TRASH/latin.json" \
	--fail-first acme=2 --fail-first down=1000000 --latency slow=3000 \
	--generate p1:10 --generate p2:10 --generate p3:10 \
	--latency p1=1000 --latency p2=1000 --latency p3=1000 \
	--latency big=200 --log "$TRASH/m1.log" || exit 1
M1=$VENDOR_BASE_URL
start_vendor_mock --generate ra:2 --fail-first 1 --fail-status 429 --retry-after 2 \
	--log "$TRASH/m2.log" || exit 1
M2=$VENDOR_BASE_URL
unset VENDOR_BASE_URL

test_expect_success 'a vendor failing its first two requests is fetched after retries' '
	vendor-fetch --base "$M1" acme >out 2>err &&
	expect_eq 4 "$(lines out)" "lines" &&
	expect_eq 3 "$(jq -r "select(.sku) | .vendor" out | grep -c acme)" "acme items" &&
	expect_eq complete "$(jq -r "select(.snapshot) | .snapshot" out)" "snapshot" &&
	expect_eq 3 "$(stat "$M1" acme stock_requests)" "requests"
'

test_expect_success 'a vendor failing every request fails after 3 retries; the others are written' '
	test_expect_code 69 vendor-fetch --base "$M1" down globex >out 2>err &&
	expect_eq 4 "$(stat "$M1" down stock_requests)" "requests to down" &&
	expect_eq 0 "$(grep -c "\"vendor\":\"down\"" out)" "lines for down" &&
	expect_eq 5 "$(lines out)" "lines" &&
	expect_eq "4 complete" "$(jq -r "select(.snapshot) | \"\(.items) \(.snapshot)\"" out)" \
		"globex snapshot" &&
	expect_grep "^vendor-fetch: down: HTTP 503 after 4 attempts; no lines written for down$" err
'

test_expect_success 'an unknown vendor (404) is not retried' '
	test_expect_code 69 vendor-fetch --base "$M1" nosuch >out 2>err &&
	expect_eq 1 "$(logged "$TRASH/m1.log" /vendor/nosuch/stock)" "requests" &&
	test ! -s out &&
	expect_grep "nosuch: HTTP 404 after 1 attempt; no lines written for nosuch" err
'

test_expect_success 'a 429 is retried no sooner than its Retry-After says' '
	vendor-fetch --base "$M2" ra >out 2>err &&
	expect_eq 3 "$(lines out)" "lines" &&
	expect_eq 2 "$(stat "$M2" ra stock_requests)" "requests" &&
	grep "/vendor/ra/stock" "$TRASH/m2.log" | jq -r .time >times &&
	t1=$(date -d "$(sed -n 1p times)" +%s.%N) && t2=$(date -d "$(sed -n 2p times)" +%s.%N) &&
	awk -v a="$t1" -v b="$t2" "BEGIN { exit !(b - a >= 1.95) }" ||
	fail "retried after $(awk -v a="$t1" -v b="$t2" "BEGIN { print b - a }") s"
'

test_expect_success 'every line carries the documented fields; fetched_at is when the request began' '
	before=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ) &&
	vendor-fetch --base "$M1" globex >out 2>err &&
	after=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ) &&
	jq -e -s --arg lo "$before" --arg hi "$after" "
		(.[:-1] | all(.vendor == \"globex\" and (.sku | type) == \"string\"
			and (.quantity | type) == \"number\" and .quantity >= 0
			and (.name | type) == \"string\" and (.price_cents | type) == \"number\"
			and (keys | length) == 6))
		and (.[-1] | keys) == [\"fetched_at\", \"items\", \"snapshot\", \"vendor\"]
		and .[-1].items == 4 and (map(.fetched_at) | unique | length) == 1
		and (.[0].fetched_at | test(\"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}[.][0-9]{3}Z$\"))
		and .[0].fetched_at >= \$lo and .[0].fetched_at <= \$hi" out >/dev/null
'

test_expect_success 'vendors are fetched in parallel and each block is contiguous' '
	vendor-fetch --base "$M1" big huge globex >out 2>err &&
	expect_eq 6007 "$(lines out)" "lines" &&
	expect_eq 3 "$(jq -r .vendor out | uniq | wc -l)" "vendor runs" &&
	expect_eq "big 3000 complete" "$(jq -r "select(.vendor == \"big\" and .snapshot) |
		\"\(.vendor) \(.items) \(.snapshot)\"" out)" "big snapshot" &&
	expect_eq big "$(tail -n 1 out | jq -r .vendor)" "the slow vendor comes last"
'

test_expect_success 'three vendors answering in 1 s each are fetched in well under 3 s' '
	start=$(date +%s.%N) &&
	vendor-fetch --base "$M1" p1 p2 p3 >out 2>err &&
	end=$(date +%s.%N) &&
	expect_eq 33 "$(lines out)" "lines" &&
	awk -v a="$start" -v b="$end" "BEGIN { exit !(b - a < 1.9) }" ||
	fail "took $(awk -v a="$start" -v b="$end" "BEGIN { print b - a }") s"
'

test_expect_success 'a vendor timing out is retried, then fails; the others are not held up' '
	start=$(date +%s.%N) &&
	test_expect_code 69 vendor-fetch --base "$M1" --timeout 0.5 --retries 1 slow globex >out 2>err &&
	end=$(date +%s.%N) &&
	expect_eq 5 "$(lines out)" "lines" &&
	expect_eq 0 "$(grep -c "\"vendor\":\"slow\"" out)" "lines for slow" &&
	expect_grep "^vendor-fetch: slow: .*timed out.* after 2 attempts; no lines written for slow$" err &&
	awk -v a="$start" -v b="$end" "BEGIN { exit !(b - a < 2.5) }"
'

test_expect_success '--filter reshapes a response of another shape' '
	vendor-fetch --base "$M1" --filter "map(.quantity = ([.warehouses[].on_hand] | add // 0))" \
		wh >out 2>err &&
	expect_eq "W-1 7 W-2 0" "$(jq -r "select(.sku) | \"\(.sku) \(.quantity)\"" out | xargs)" \
		"quantities" &&
	expect_eq "complete 2" "$(jq -r "select(.snapshot) | \"\(.snapshot) \(.items)\"" out)" \
		"snapshot"
'

test_expect_success '--filter may produce a stream of items instead of one array' '
	vendor-fetch --base "$M1" --filter ".[] | select(.sku == \"W-1\")" wh >out 2>err &&
	expect_eq "W-1 1" "$(jq -r "select(.snapshot == null) | .sku" out) $(jq -r "select(.snapshot) | .items" out)" \
		"items"
'

test_expect_success 'a failing --filter fails that vendor with jq'"'"'s message' '
	test_expect_code 69 vendor-fetch --base "$M1" --filter ".items" wh >out 2>err &&
	test ! -s out &&
	expect_grep "^vendor-fetch: wh: --filter failed: jq: error.*; no lines written for wh$" err
'

test_expect_success 'an invalid item is skipped, named, and makes the snapshot partial' '
	vendor-fetch --base "$M1" --filter ". + [{\"sku\": \"bad\", \"quantity\": -1}]" \
		globex >out 2>err &&
	expect_grep "^vendor-fetch: globex: item 5 (.\[4\]): \"quantity\" must be an integer >= 0; skipped$" err &&
	expect_eq "partial 4" "$(jq -r "select(.snapshot) | \"\(.snapshot) \(.items)\"" out)" \
		"snapshot" &&
	expect_eq 0 "$(grep -c "\"bad\"" out)" "bad item written"
'

test_expect_success 'bytes that are not UTF-8 are written as U+FFFD; the lines stay UTF-8' '
	vendor-fetch --base "$M1" latin >out 2>err &&
	iconv -f UTF-8 -t UTF-8 out >/dev/null &&
	expect_eq "café \\ufffd" "$(head -n 1 out | sed "s/.*\"name\":\"\([^\"]*\)\".*/\1/")" "name"
'

test_expect_success 'a response over --max-bytes is abandoned and not retried' '
	n=$(logged "$TRASH/m1.log" /vendor/huge/stock) &&
	test_expect_code 69 vendor-fetch --base "$M1" --max-bytes 100 huge >out 2>err &&
	test ! -s out &&
	expect_grep "huge: response larger than 100 bytes after 1 attempt" err &&
	expect_eq $((n + 1)) "$(logged "$TRASH/m1.log" /vendor/huge/stock)" "requests"
'

test_expect_success 'VENDOR=URL and VENDOR_BASE_URL name where to fetch from' '
	VENDOR_BASE_URL=$M1 vendor-fetch globex other="$M1/vendor/acme/stock" >out 2>err &&
	expect_eq "globex 4 other 3" "$(jq -r "select(.snapshot) | \"\(.vendor) \(.items)\"" out |
		sort | xargs)" "snapshots"
'

test_expect_success 'a write error exits 74' '
	test_expect_code 74 vendor-fetch --base "$M1" globex >/dev/full 2>err
'

test_option_errors vendor-fetch <<\EOF
--base "$M1" --bogus acme                      | '--bogus'
--base "$M1" --retries x acme                  | option --retries
--base "$M1" --retries -1 acme                 | option --retries
--base "$M1" --timeout 0 acme                  | option --timeout
--base "$M1" --timeout abc acme                | option --timeout
--base "$M1" --max-bytes 0 acme                | option --max-bytes
--base "$M1"                                   | no vendor given
--base "$M1" acme=ftp://example.com/stock      | acme: URL "ftp://example.com/stock"
--base "$M1" --base file:///etc acme           | base URL "file:///etc"
--base "$M1" acme acme                         | acme: vendor named twice
--base "$M1" =http://example.com/              | the vendor name is empty
acme                                           | acme: no URL
EOF

test_done
