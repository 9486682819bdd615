#!/usr/bin/env bash
# stock-apply: snapshots applied per vendor, withdrawals, bad lines, reservations kept.
. "$(dirname "$0")/lib.sh"

item() { printf '{"vendor":"%s","sku":"%s","quantity":%s,"fetched_at":"%s"}\n' "$1" "$2" "$3" "${4:-2026-01-01T00:00:00.000Z}"; }
snap() { printf '{"vendor":"%s","snapshot":"complete","items":%s,"fetched_at":"%s"}\n' "$1" "$2" "${3:-2026-01-01T00:00:00.000Z}"; }
qty() { sql "SELECT quantity FROM vendor_stock WHERE vendor = '$1' AND sku = '$2'"; }

test_expect_success 'a snapshot is applied and summarised per vendor' '
	{ item acme A 5; item acme B 7; snap acme 2; item globex A 3; snap globex 1; } >in &&
	stock-apply <in >out &&
	expect_eq 2 "$(lines out)" "summary lines" &&
	expect_grep "{\"vendor\":\"acme\",\"applied\":2,\"withdrawn\":0" out &&
	expect_eq 5 "$(qty acme A)" && expect_eq 7 "$(qty acme B)" && expect_eq 3 "$(qty globex A)"
'

test_expect_success 'stock from several vendors for the same SKU adds up in available_stock' '
	expect_eq 8 "$(sql "SELECT available FROM available_stock WHERE sku = '"'A'"'")"
'

test_expect_success 'a complete snapshot withdraws the SKUs it no longer lists' '
	{ item acme A 4; snap acme 1; } >in &&
	stock-apply <in >out &&
	expect_grep "\"withdrawn\":1" out &&
	expect_eq 4 "$(qty acme A)" && expect_eq 0 "$(qty acme B)" && expect_eq 3 "$(qty globex A)"
'

test_expect_success 'lines without a snapshot line update but withdraw nothing' '
	{ item acme B 9; } >in &&
	rc=0; stock-apply <in >out 2>err || rc=$?
	expect_eq 65 "$rc" "exit status" &&
	expect_grep "\"snapshot\":\"partial\"" out && expect_grep "no snapshot line" err &&
	expect_eq 9 "$(qty acme B)" && expect_eq 4 "$(qty acme A)"
'

test_expect_success 'malformed lines exit 65 with their line numbers and the valid lines are applied' '
	{ item acme A 11; echo "not json"; echo "{\"vendor\":\"acme\",\"quantity\":1}";
	  item acme C -1; item acme D 2; printf "{\"vendor\":\"acme\",\"sku\":\"E\",\"quan"; } >in &&
	test_expect_code 65 stock-apply <in >out 2>err &&
	expect_grep "^stock-apply: line 2: not valid JSON" err &&
	expect_grep "^stock-apply: line 3: \"sku\" must be a non-empty string" err &&
	expect_grep "^stock-apply: line 4: \"quantity\" must be a non-negative integer" err &&
	expect_grep "^stock-apply: line 6: truncated line" err &&
	expect_eq 11 "$(qty acme A)" && expect_eq 2 "$(qty acme D)" &&
	expect_eq "" "$(qty acme C)"
'

test_expect_success 'a complete snapshot with an invalid line withdraws nothing' '
	{ item acme A 1; item acme B -5; snap acme 2; } >in &&
	test_expect_code 65 stock-apply <in >out 2>err &&
	expect_grep "withdrew nothing" err && expect_eq 2 "$(qty acme D)"
'

test_expect_success 'a SKU listed twice in one snapshot takes its last figure' '
	{ item dup X 1; item dup X 2; item dup Y 3; snap dup 3; } >in &&
	stock-apply <in >out &&
	expect_eq 2 "$(qty dup X)" && expect_eq 3 "$(qty dup Y)"
'

test_expect_success 'interleaved vendors are each applied whole' '
	{ item i1 A 1; item i2 A 2; item i1 B 1; snap i1 2; item i2 B 2; snap i2 2; } >in &&
	stock-apply <in >out &&
	expect_eq 2 "$(lines out)" && expect_eq 1 "$(qty i1 B)" && expect_eq 2 "$(qty i2 B)"
'

test_expect_success 'a sync never erases a reservation held by a pending order' '
	{ item r1 S 10; snap r1 1; } | stock-apply >/dev/null &&
	sql "UPDATE vendor_stock SET reserved = 4 WHERE vendor = '"'r1'"' AND sku = '"'S'"';
	     INSERT INTO orders (sku, quantity, vendor) VALUES ('"'S'"', 4, '"'r1'"')" &&
	{ item r1 S 10 2030-01-01T00:00:00.000Z; snap r1 1 2030-01-01T00:00:00.000Z; } | stock-apply >/dev/null &&
	expect_eq 4 "$(sql "SELECT reserved FROM vendor_stock WHERE vendor = '"'r1'"'")" &&
	expect_eq 6 "$(sql "SELECT available FROM available_stock WHERE sku = '"'S'"'")"
'

test_expect_success 'a success is held until a snapshot fetched after it, then counted once' '
	sql "UPDATE orders SET status = '"'success'"', fulfilled_at = '"'2031-01-01'"' WHERE vendor = '"'r1'"'" &&
	{ item r1 S 10 2030-06-01T00:00:00.000Z; snap r1 1 2030-06-01T00:00:00.000Z; } | stock-apply >/dev/null &&
	expect_eq 4 "$(sql "SELECT reserved FROM vendor_stock WHERE vendor = '"'r1'"'")" &&
	{ item r1 S 6 2031-06-01T00:00:00.000Z; snap r1 1 2031-06-01T00:00:00.000Z; } | stock-apply >/dev/null &&
	expect_eq 0 "$(sql "SELECT reserved FROM vendor_stock WHERE vendor = '"'r1'"'")" &&
	expect_eq 6 "$(sql "SELECT available FROM available_stock WHERE sku = '"'S'"'")"
'

test_expect_success 'a failed vendor leaves its stock untouched while the others sync' '
	printf "[{\"sku\":\"F\",\"quantity\":5}]" >good.json &&
	{ item down F 42; snap down 1; } | stock-apply >/dev/null &&
	start_vendor_mock --vendor up=good.json --vendor down=good.json --fail-rate down=1 &&
	test_expect_code 69 vendor-fetch --retries 1 up down >fetched 2>ferr &&
	stock-apply <fetched >out &&
	expect_eq 42 "$(qty down F)" && expect_eq 5 "$(qty up F)"
'

test_expect_success '100,000 items from 3 vendors sync end to end' '
	start_vendor_mock --generate v1:40000 --generate v2:30000 --generate v3:30000 &&
	vendor-fetch v1 v2 v3 >fetched &&
	stock-apply <fetched >out &&
	expect_eq 3 "$(lines out)" &&
	expect_eq 100000 "$(sql "SELECT count(*) FROM vendor_stock WHERE vendor IN ('"'v1'"','"'v2'"','"'v3'"')")" &&
	expect_eq "$(jq -s "map(select(.sku) | .quantity) | add" fetched)" \
		"$(sql "SELECT sum(quantity) FROM vendor_stock WHERE vendor IN ('"'v1'"','"'v2'"','"'v3'"')")"
'

test_option_errors stock-apply <<\EOF
--bogus  | '--bogus'
extra    | usage: stock-apply
EOF
test_expect_success 'an unreachable database exits 69 and applies nothing' '
	DATABASE_URL="postgresql://u:secret@localhost/x?host=/nonexistent" OA_DB_PATIENCE=0 \
		test_expect_code 69 stock-apply </dev/null 2>err &&
	expect_grep "no stock was applied" err && ! grep -q secret err
'
test_done
