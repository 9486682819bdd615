#!/usr/bin/env bash
# stock-apply: a re-sync sends the database only the items whose figures
# changed (vendor_stock.digest), and is still exact: withdrawals, repeats,
# settling, rows changed by other hands, another stock-apply holding the vendor.
. "$(dirname "$0")/lib.sh"

T0=2026-01-01T00:00:00.000Z
item() { printf '{"vendor":"%s","sku":"%s","quantity":%s,"fetched_at":"%s"%s}\n' "$1" "$2" "$3" "${4:-$T0}" "${5:-}"; }
snap() { printf '{"vendor":"%s","snapshot":"complete","items":%s,"fetched_at":"%s"}\n' "$1" "$2" "${3:-$T0}"; }
qty() { sql "SELECT quantity FROM vendor_stock WHERE vendor = '$1' AND sku = '$2'"; }
# sent VENDOR: "N of M" items of the vendor's last snapshot sent to the database (OA_DEBUG)
sent() { sed -n "s/^stock-apply: debug: $1: \([0-9]* of [0-9]*\) items sent.*/\1/p" err; }
many() {	# many VENDOR N Q: N item lines, SKUs M1..MN, quantity Q
	awk -v v="$1" -v n="$2" -v q="$3" -v t="$T0" 'BEGIN { for (i = 1; i <= n; i++)
		printf "{\"vendor\":\"%s\",\"sku\":\"M%d\",\"quantity\":%d,\"fetched_at\":\"%s\"}\n", v, i, q, t }'
}
export OA_DEBUG=1

test_expect_success 'an unchanged re-sync sends nothing and changes no row' '
	{ item r1 A 5; item r1 B 7 "$T0" ",\"colour\":\"red\""; snap r1 2; } | stock-apply >out 2>err &&
	sql "SELECT sku, quantity, digest IS NOT NULL, updated_at FROM vendor_stock
	     WHERE vendor = '"'r1'"' ORDER BY sku" >before &&
	expect_grep "|t|" before &&
	{ item r1 A 5 2026-02-01T00:00:00.000Z; item r1 B 7 2026-02-01T00:00:00.000Z ",\"colour\":\"red\"";
	  snap r1 2 2026-02-01T00:00:00.000Z; } | stock-apply >out 2>err &&
	expect_grep "{\"vendor\":\"r1\",\"applied\":2,\"withdrawn\":0,\"snapshot\":\"complete\"}" out &&
	expect_eq "0 of 2" "$(sent r1)" &&
	sql "SELECT sku, quantity, digest IS NOT NULL, updated_at FROM vendor_stock
	     WHERE vendor = '"'r1'"' ORDER BY sku" >after &&
	test_cmp before after
'

test_expect_success 'only the changed items are sent: a quantity, a name, an extra field' '
	{ item r1 A 6; item r1 B 7 "$T0" ",\"colour\":\"blue\""; item r1 C 1 "$T0" ",\"name\":\"New\"";
	  snap r1 3; } | stock-apply >out 2>err &&
	expect_eq "3 of 3" "$(sent r1)" &&
	{ item r1 A 6; item r1 B 7 "$T0" ",\"colour\":\"blue\""; item r1 C 1 "$T0" ",\"name\":\"Newer\"";
	  snap r1 3; } | stock-apply >out 2>err &&
	expect_eq "1 of 3" "$(sent r1)" &&
	expect_eq 6 "$(qty r1 A)" && expect_eq Newer "$(sql "SELECT name FROM vendor_stock WHERE sku = '"'C'"'")" &&
	expect_eq "{\"colour\": \"blue\"}" "$(sql "SELECT extra FROM vendor_stock WHERE sku = '"'B'"'")"
'

test_expect_success 'a row changed by other hands is rewritten by the next sync of the same items' '
	sql "UPDATE vendor_stock SET quantity = 99 WHERE vendor = '"'r1'"' AND sku = '"'A'"'" &&
	expect_eq "" "$(sql "SELECT digest FROM vendor_stock WHERE vendor = '"'r1'"' AND sku = '"'A'"'")" &&
	sql "UPDATE vendor_stock SET reserved = 1 WHERE vendor = '"'r1'"' AND sku = '"'B'"'" &&
	{ item r1 A 6; item r1 B 7 "$T0" ",\"colour\":\"blue\""; item r1 C 1 "$T0" ",\"name\":\"Newer\"";
	  snap r1 3; } | stock-apply >out 2>err &&
	expect_eq "1 of 3" "$(sent r1)" && expect_eq 6 "$(qty r1 A)" &&
	sql "UPDATE vendor_stock SET reserved = 0 WHERE vendor = '"'r1'"'"
'

test_expect_success 'unsent items still count as listed: only the unlisted are withdrawn' '
	many w1 300 4 | { cat; snap w1 300; } | stock-apply >out 2>err &&
	{ many w1 300 4 | grep -v "\"M7\"" | grep -v "\"M200\""; snap w1 298; } | stock-apply >out 2>err &&
	expect_eq "0 of 298" "$(sent w1)" &&
	expect_grep "\"applied\":298,\"withdrawn\":2," out &&
	expect_eq 0 "$(qty w1 M7)" && expect_eq 0 "$(qty w1 M200)" && expect_eq 4 "$(qty w1 M8)" &&
	expect_eq 298 "$(sql "SELECT count(*) FROM vendor_stock WHERE vendor = '"'w1'"' AND quantity = 4")"
'

test_expect_success 'a withdrawn SKU listed again with its old figures comes back' '
	{ many w1 300 4; snap w1 300; } | stock-apply >out 2>err &&
	expect_eq "2 of 300" "$(sent w1)" && expect_grep "\"withdrawn\":0," out &&
	expect_eq 4 "$(qty w1 M7)" && expect_eq 4 "$(qty w1 M200)"
'

test_expect_success 'new SKUs beside unchanged ones are inserted; a new SKU left out again is withdrawn' '
	{ many w1 300 4; item w1 N1 2; item w1 N2 3; snap w1 302; } | stock-apply >out 2>err &&
	expect_eq "2 of 302" "$(sent w1)" && expect_eq 2 "$(qty w1 N1)" &&
	{ many w1 300 4; item w1 N2 3; snap w1 301; } | stock-apply >out 2>err &&
	expect_eq "0 of 301" "$(sent w1)" && expect_grep "\"withdrawn\":1," out &&
	expect_eq 0 "$(qty w1 N1)" && expect_eq 3 "$(qty w1 N2)"
'

test_expect_success 'a SKU listed twice takes its last figure, whether or not it changed' '
	{ item d1 X 1; item d1 Y 2; snap d1 2; } | stock-apply >out 2>err &&
	{ item d1 X 1; item d1 X 5; item d1 Y 9; item d1 Y 2; snap d1 4; } | stock-apply >out 2>err &&
	expect_eq 5 "$(qty d1 X)" && expect_eq 2 "$(qty d1 Y)" &&
	{ item d1 X 7; item d1 X 5; snap d1 2; } | stock-apply >out 2>err &&
	expect_eq 5 "$(qty d1 X)" && expect_grep "\"withdrawn\":1," out && expect_eq 0 "$(qty d1 Y)"
'

test_expect_success 'an unchanged item still settles the successes fulfilled before the snapshot' '
	{ item s1 S 10; item s1 T 10; snap s1 2; } | stock-apply >/dev/null &&
	sql "UPDATE vendor_stock SET reserved = 4 WHERE vendor = '"'s1'"' AND sku = '"'S'"';
	     UPDATE vendor_stock SET reserved = 3 WHERE vendor = '"'s1'"' AND sku = '"'T'"';
	     INSERT INTO orders (sku, quantity, vendor, status, fulfilled_at) VALUES
	     ('"'S'"', 4, '"'s1'"', '"'success'"', '"'2026-03-01'"'),
	     ('"'T'"', 3, '"'s1'"', '"'success'"', '"'2026-03-01'"')" &&
	{ item s1 S 10 2026-04-01T00:00:00.000Z; snap s1 1 2026-04-01T00:00:00.000Z; } |
		stock-apply >out 2>err &&
	expect_eq "0 of 1" "$(sent s1)" &&
	expect_eq 0 "$(sql "SELECT reserved FROM vendor_stock WHERE vendor = '"'s1'"' AND sku = '"'S'"'")" &&
	expect_eq 3 "$(sql "SELECT reserved FROM vendor_stock WHERE vendor = '"'s1'"' AND sku = '"'T'"'")" &&
	expect_eq "t f" "$(sql "SELECT settled FROM orders WHERE vendor = '"'s1'"' ORDER BY sku" | xargs)"
'

test_expect_success 'a first load (binary COPY) stores what text would, and re-syncs as unchanged' '
	{ item b1 A 5 2026-05-06T07:08:09.123456Z ",\"name\":\"Wid\\tget\",\"price_cents\":-1999,\"colour\":\"red\"";
	  item b1 B 0 2024-02-29T23:59:59.999999Z; item b1 C 2 1999-12-31T23:59:59Z;
	  snap b1 3 1999-12-31T23:59:59Z; } >b1 &&
	{ item b2 A 1 2026-05-06T09:08:09.5+02:00; snap b2 1 2026-05-06T09:08:09.5+02:00; } >b2 &&
	printf "{\"vendor\":\"b3\",\"sku\":\"A\",\"quantity\":4}\n{\"vendor\":\"b3\",\"snapshot\":\"complete\",\"items\":1}\n" >b3 &&
	cat b1 b2 b3 | stock-apply >out 2>err &&
	expect_grep "b1: new to the table" err && expect_grep "b3: new to the table" err &&
	sql "SELECT vendor, sku, quantity, name, price_cents, extra, fetched_at AT TIME ZONE '"'UTC'"'
	     FROM vendor_stock WHERE vendor LIKE '"'b_'"' ORDER BY vendor, sku" >got &&
	cat >want <<-\EOF &&
	b1|A|5|Wid	get|-1999|{"colour": "red"}|2026-05-06 07:08:09.123456
	b1|B|0||||2024-02-29 23:59:59.999999
	b1|C|2||||1999-12-31 23:59:59
	b2|A|1||||2026-05-06 07:08:09.5
	b3|A|4||||-infinity
	EOF
	test_cmp want got &&
	cat b1 b2 b3 | stock-apply >out 2>err &&
	expect_eq "0 of 3" "$(sent b1)" && expect_eq "0 of 1" "$(sent b2)" && expect_eq "0 of 1" "$(sent b3)"
'

advisory_locks() { sql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' ${1:+AND granted = $1}"; }
# hold_vendor VENDOR: another session holds the vendor's stock-apply lock until release
hold_vendor() {
	rm -f release && mkfifo release &&
	{ timeout 60 psql -XqAt -d "$DATABASE_URL" \
		-c "SELECT pg_advisory_lock(hashtext('stock-apply'), hashtext('$1'))" -f release >/dev/null & } &&
	holder=$! && on_exit "kill $holder" &&
	wait_for "[ \$(advisory_locks true) = 1 ]" 10 "the other session to take the lock"
}

test_expect_success 'a vendor another session holds is staged whole and applied once it is free' '
	{ many h1 50 1; snap h1 50; } | stock-apply >/dev/null &&
	hold_vendor h1 &&
	{ { many h1 49 2; snap h1 49; } | stock-apply >out 2>err & } && apply=$! &&
	wait_for "[ \$(advisory_locks false) = 1 ]" 10 "stock-apply to wait for the vendor" &&
	echo "SELECT 1;" >release && wait $holder && wait $apply &&
	expect_grep "h1: another stock-apply holds it; staging every item" err &&
	expect_grep "\"applied\":49,\"withdrawn\":1," out &&
	expect_eq 2 "$(qty h1 M49)" && expect_eq 0 "$(qty h1 M50)" &&
	expect_eq 0 "$(advisory_locks)"
'

test_expect_success 'a vendor lock is released after each snapshot, applied or refused' '
	rm -f in && mkfifo in &&
	{ stock-apply <in >out 2>err & } && apply=$! && exec 3>in &&
	{ many h1 49 3; snap h1 49; } >&3 &&
	wait_for "[ \$(lines out) = 1 ]" 10 "the first snapshot" &&
	expect_eq 0 "$(advisory_locks)" &&
	inject_sql_error vendor_stock UPDATE 23514 1 &&
	{ many h1 49 4; snap h1 49; } >&3 &&
	wait_for "grep -q \"rolled back\" err" 10 "the refused snapshot" &&
	expect_eq 0 "$(advisory_locks)" &&
	exec 3>&- && test_expect_code 70 wait $apply &&
	uninject_sql_error vendor_stock &&
	expect_grep "h1: lines 51-100: its snapshot was rolled back" err &&
	expect_eq 3 "$(qty h1 M49)"
'

test_done
