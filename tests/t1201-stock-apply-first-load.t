#!/usr/bin/env bash
# stock-apply: a vendor new to the table is loaded straight in with COPY,
# still one transaction per snapshot, whatever else the stream holds.
. "$(dirname "$0")/lib.sh"

item() { printf '{"vendor":"%s","sku":"%s","quantity":%s,"fetched_at":"2026-01-01T00:00:00.000Z"}\n' "$1" "$2" "$3"; }
snap() { printf '{"vendor":"%s","snapshot":"complete","items":%s,"fetched_at":"2026-01-01T00:00:00.000Z"}\n' "$1" "$2"; }
qty() { sql "SELECT quantity FROM vendor_stock WHERE vendor = '$1' AND sku = '$2'"; }
rows() { sql "SELECT count(*) FROM vendor_stock WHERE vendor = '$1'"; }
many() {	# many VENDOR N: N item lines, SKUs M1..MN, quantity 3
	awk -v v="$1" -v n="$2" 'BEGIN { for (i = 1; i <= n; i++)
		printf "{\"vendor\":\"%s\",\"sku\":\"M%d\",\"quantity\":3,\"fetched_at\":\"2026-01-01T00:00:00.000Z\"}\n", v, i }'
}
# feed FIFO: stock-apply reads FIFO in the background (pid in $apply), fd 3 writes it.
feed() {
	rm -f "$1" && mkfifo "$1" || return
	stock-apply <"$1" >applied 2>apply.err &
	apply=$!
	exec 3>"$1"
}
# until_copying VENDOR: wait (10 s at most) until the load's COPY has reached the server.
until_copying() {
	wait_for '[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		AND query LIKE '"'COPY vendor_stock%'"'")" = 1 ]' 10 "a COPY into vendor_stock"
}

test_expect_success 'a new vendor is loaded whole and its next snapshot merges over it' '
	{ item n1 A 5; item n1 B 7; item n1 C 0; snap n1 3; } | stock-apply >out &&
	expect_grep "{\"vendor\":\"n1\",\"applied\":3,\"withdrawn\":0,\"snapshot\":\"complete\"}" out &&
	expect_eq 5 "$(qty n1 A)" && expect_eq 7 "$(qty n1 B)" && expect_eq 0 "$(qty n1 C)" &&
	expect_eq 2026-01-01 "$(sql "SELECT DISTINCT fetched_at::date FROM vendor_stock WHERE vendor = '"'n1'"'")" &&
	{ item n1 A 6; item n1 D 1; snap n1 2; } | stock-apply >out &&
	expect_grep "\"applied\":2,\"withdrawn\":1," out &&
	expect_eq 6 "$(qty n1 A)" && expect_eq 0 "$(qty n1 B)" && expect_eq 1 "$(qty n1 D)"
'

test_expect_success 'a first load listing SKUs more than once takes the last figure of each' '
	{ item n2 X 1; item n2 Y 2; item n2 X 3; item n2 Z 4; item n2 Y 5; item n2 X 6; snap n2 6; } |
		stock-apply >out &&
	expect_grep "\"applied\":6," out && expect_eq 3 "$(rows n2)" &&
	expect_eq 6 "$(qty n2 X)" && expect_eq 5 "$(qty n2 Y)" && expect_eq 4 "$(qty n2 Z)"
'

test_expect_success 'a first load is invisible to readers until its snapshot line commits it' '
	feed f && on_exit "kill $apply" &&
	many n3 20000 >&3 && until_copying &&
	expect_eq 0 "$(rows n3)" "rows visible during the load" &&
	snap n3 20000 >&3 && exec 3>&- && wait $apply &&
	expect_eq 20000 "$(rows n3)" && expect_grep "\"vendor\":\"n3\",\"applied\":20000" applied
'

test_expect_success 'a first load cut off (process killed) leaves nothing behind and no lock held' '
	feed f &&
	many n4 20000 >&3 && until_copying &&
	kill -9 $apply && { wait $apply || true; } && exec 3>&- &&
	expect_eq 0 "$(rows n4)" &&
	{ many n4 10; snap n4 10; } | timeout 10 stock-apply >out &&
	expect_eq 10 "$(rows n4)"
'

test_expect_success 'while a new vendor loads, a known vendor snapshot is applied and summarised first' '
	{ item e1 A 1; snap e1 1; } | stock-apply >/dev/null &&
	feed f && on_exit "kill $apply" &&
	many n5 20000 >&3 && until_copying &&
	{ item e1 A 2; item e1 B 2; snap e1 2; } >&3 &&
	many n5 5 >&3 && snap n5 20005 >&3 && exec 3>&- && wait $apply &&
	expect_eq "e1 n5" "$(jq -r .vendor applied | paste -sd " ")" &&
	expect_eq 2 "$(qty e1 B)" && expect_eq 20000 "$(rows n5)"
'

test_expect_success 'two processes loading the same new vendor at once both succeed, one after the other' '
	{ many n6 30000; snap n6 30000; } >in
	stock-apply <in >out1 2>err1 &
	a=$!
	stock-apply <in >out2 2>err2 &
	b=$!
	wait $a && wait $b &&
	expect_eq 30000 "$(rows n6)" && expect_eq 90000 "$(sql "SELECT sum(quantity) FROM vendor_stock WHERE vendor = '"'n6'"'")" &&
	expect_grep "\"applied\":30000,\"withdrawn\":0" out1 && expect_grep "\"applied\":30000,\"withdrawn\":0" out2
'

test_expect_success 'a first load keeps tabs, backslashes and newlines, and other fields as extra' '
	printf "%s\n" "{\"vendor\":\"n7\",\"sku\":\"a\\tb\\\\c\\nd\",\"quantity\":1,\"name\":\"x\\ry\",\"color\":\"re\\td\"}" \
		"{\"vendor\":\"n7\",\"sku\":\"plain\",\"quantity\":2,\"price_cents\":150}" \
		"{\"vendor\":\"n7\",\"snapshot\":\"complete\",\"items\":2}" | stock-apply >out 2>/dev/null &&
	expect_eq "{\"sku\":\"a\\tb\\\\c\\nd\",\"name\":\"x\\ry\",\"extra\":{\"color\":\"re\\td\"},\"price_cents\":null}
{\"sku\":\"plain\",\"name\":null,\"extra\":null,\"price_cents\":150}" \
		"$(sql "SELECT json_build_object('"'sku'"', sku, '"'name'"', name, '"'extra'"', extra, '"'price_cents'"', price_cents)
			FROM vendor_stock WHERE vendor = '"'n7'"' ORDER BY sku" | jq -c .)"
'

test_done
