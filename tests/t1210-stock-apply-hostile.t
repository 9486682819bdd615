#!/usr/bin/env bash
# stock-apply contains hostile input: a bad line costs only itself (its vendor becomes partial), a refused vendor only itself.
. "$(dirname "$0")/lib.sh"

item() { printf '{"vendor":"%s","sku":"%s","quantity":%s}\n' "$1" "$2" "$3"; }
snap() { printf '{"vendor":"%s","snapshot":"complete","items":%s}\n' "$1" "$2"; }
qty() { sql "SELECT quantity FROM vendor_stock WHERE vendor = '$1' AND sku = '$2'"; }
rows() { sql "SELECT count(*) FROM vendor_stock WHERE vendor = '$1'"; }

test_expect_success 'three vendors, the middle one with a 3 KB SKU, a bad name and a \u0000 SKU: the others in full' '
	{ item v1 A 1; item v1 B 2; item v1 Z 9; snap v1 3; item v2 A 1; item v2 B 1; item v2 C 1; snap v2 3; item v3 A 3; snap v3 1; } | stock-apply >/dev/null &&
	long=$(head -c 3000 /dev/zero | tr "\0" x) &&
	{ item v1 A 5; item v1 B 6; snap v1 2;
	  item v2 A 7;
	  item v2 "$long" 1;
	  printf "{\"vendor\":\"v2\",\"sku\":\"B\",\"quantity\":8,\"name\":\"bad \377 name\"}\n";
	  printf "{\"vendor\":\"v2\",\"sku\":\"A\\\\u0000B\",\"quantity\":9}\n";
	  item v2 D 4; snap v2 5;
	  item v3 A 2; item v3 Q 1; snap v3 2; } >in &&
	rc=0; stock-apply <in >out 2>err || rc=$?
	expect_eq 65 "$rc" "exit status" &&
	expect_grep "^stock-apply: line 5: \"sku\" is longer than 255 bytes" err &&
	expect_grep "^stock-apply: line 6: not valid UTF-8" err &&
	expect_grep "^stock-apply: line 7: a string holds \\\\u0000" err &&
	expect_eq 3 "$(lines out)" "summary lines" &&
	expect_grep "{\"vendor\":\"v1\",\"applied\":2,\"withdrawn\":1,\"snapshot\":\"complete\"}" out &&
	expect_grep "{\"vendor\":\"v2\",\"applied\":2,\"withdrawn\":0,\"snapshot\":\"partial\"}" out &&
	expect_grep "{\"vendor\":\"v3\",\"applied\":2,\"withdrawn\":0,\"snapshot\":\"complete\"}" out &&
	expect_eq "5 6 0" "$(qty v1 A) $(qty v1 B) $(qty v1 Z)" "v1 in full" &&
	expect_eq "7 1 1 4" "$(qty v2 A) $(qty v2 B) $(qty v2 C) $(qty v2 D)" "v2 partially" &&
	expect_eq "" "$(sql "SELECT sku FROM vendor_stock WHERE vendor = '"'v2'"' AND length(sku) > 255")" &&
	expect_eq "2 1" "$(qty v3 A) $(qty v3 Q)" "v3 in full"
'

test_expect_success 'a fetched_at that is not a timestamp is a bad line, the rest applied' '
	{ printf "{\"vendor\":\"t1\",\"sku\":\"A\",\"quantity\":1,\"fetched_at\":\"yesterday\"}\n";
	  printf "{\"vendor\":\"t1\",\"sku\":\"B\",\"quantity\":2,\"fetched_at\":\"2026-02-30T00:00:00Z\"}\n";
	  printf "{\"vendor\":\"t1\",\"sku\":\"C\",\"quantity\":3,\"fetched_at\":\"2026-12-06T03:30:00.123Z\"}\n";
	  printf "{\"vendor\":\"t1\",\"snapshot\":\"complete\",\"items\":3,\"fetched_at\":\"2026-12-06T03:30:00.123Z\"}\n";
	  item t2 A 1; snap t2 1; } >in &&
	rc=0; stock-apply <in >out 2>err || rc=$?
	expect_eq 65 "$rc" "exit status" &&
	expect_grep "^stock-apply: line 1: \"fetched_at\" must be a timestamp" err &&
	expect_grep "^stock-apply: line 2: \"fetched_at\" must be a timestamp" err &&
	expect_eq "" "$(qty t1 A)" && expect_eq 3 "$(qty t1 C)" && expect_eq 1 "$(qty t2 A)" &&
	expect_eq t "$(sql "SELECT fetched_at = '"'2026-12-06T03:30:00.123Z'"' FROM vendor_stock WHERE vendor = '"'t1'"'")"
'

test_expect_success 'price_cents 1e308 is a bad field, never a float-to-integer conversion' '
	{ printf "{\"vendor\":\"p1\",\"sku\":\"A\",\"quantity\":1,\"price_cents\":1e308}\n";
	  printf "{\"vendor\":\"p1\",\"sku\":\"B\",\"quantity\":1,\"price_cents\":-1e308}\n";
	  printf "{\"vendor\":\"p1\",\"sku\":\"C\",\"quantity\":1,\"price_cents\":9007199254740992}\n";
	  printf "{\"vendor\":\"p1\",\"sku\":\"D\",\"quantity\":1e308}\n";
	  snap p1 4; } >in &&
	rc=0; stock-apply <in >out 2>err || rc=$?
	expect_eq 65 "$rc" "exit status" &&
	expect_grep "^stock-apply: line 1: \"price_cents\" must be a whole number" err &&
	expect_grep "^stock-apply: line 2: \"price_cents\" must be a whole number" err &&
	expect_grep "^stock-apply: line 4: \"quantity\" must be a non-negative integer" err &&
	expect_eq 9007199254740992 "$(sql "SELECT price_cents FROM vendor_stock WHERE vendor = '"'p1'"' AND sku = '"'C'"'")" &&
	expect_eq 1 "$(rows p1)"
'

test_expect_success 'a closing line announcing another count exits 65 naming the vendor; applied as partial' '
	{ item c1 A 1; item c1 B 1; snap c1 2; } | stock-apply >/dev/null &&
	{ item c1 A 5; snap c1 2; item c2 A 1; snap c2 1; } >in &&
	rc=0; stock-apply <in >out 2>err || rc=$?
	expect_eq 65 "$rc" "exit status" &&
	expect_grep "^stock-apply: c1: lines 1-2: the snapshot line announced 2 items but 1 arrived" err &&
	expect_grep "\"vendor\":\"c1\",\"applied\":1,\"withdrawn\":0,\"snapshot\":\"partial\"" out &&
	expect_eq "5 1" "$(qty c1 A) $(qty c1 B)" && expect_eq 1 "$(qty c2 A)"
'

test_expect_success 'a vendor with no closing line at the end exits 65 naming it; applied as partial' '
	{ item m1 A 1; item m1 B 1; snap m1 2; } | stock-apply >/dev/null &&
	{ item m2 A 1; snap m2 1; item m1 A 7; } >in &&
	rc=0; stock-apply <in >out 2>err || rc=$?
	expect_eq 65 "$rc" "exit status" &&
	expect_grep "^stock-apply: m1: lines 3-3: no snapshot line" err &&
	expect_eq "7 1" "$(qty m1 A) $(qty m1 B)" && expect_eq 1 "$(qty m2 A)"
'

test_expect_success 'a line past --max-line is a bad line; the others go on' '
	{ item l1 A 1; printf "{\"vendor\":\"l1\",\"sku\":\"%s\",\"quantity\":1}\n" "$(head -c 5000 /dev/zero | tr "\0" y)"; item l1 B 2; snap l1 3; } >in &&
	rc=0; stock-apply --max-line 2048 <in >out 2>err || rc=$?
	expect_eq 65 "$rc" "exit status" &&
	expect_grep "^stock-apply: line 2: line longer than 2048 bytes" err &&
	expect_eq "1 2" "$(qty l1 A) $(qty l1 B)"
'

test_expect_success 'sixty vendors new to the table arriving during a first load are each applied whole' '
	{ item big A 1;
	  for i in $(seq 1 60); do item "nv$i" A "$i"; item big "S$i" 1; snap "nv$i" 1; done;
	  item big Z 2; snap big 62; } >in &&
	OA_DEBUG=1 stock-apply <in >out 2>err &&
	expect_eq 61 "$(lines out)" "summary lines" &&
	expect_eq 62 "$(rows big)" && expect_eq 2 "$(qty big Z)" && expect_eq 60 "$(qty nv60 A)" &&
	expect_eq 1 "$(grep -c "big: new to the table; loading it with COPY" err)" "big loaded directly"
'


test_expect_success 'a vendor the database refuses is rolled back alone, named with its lines; the next goes on (70)' '
	{ item r1 A 1; snap r1 1; item r2 A 1; snap r2 1; item r3 A 1; snap r3 1; } | stock-apply >/dev/null &&
	inject_sql_error vendor_stock UPDATE 23514 "NEW.vendor = '"'r2'"'" &&
	{ item r1 A 5; snap r1 1; item r2 A 6; item r2 B 6; snap r2 2; item r3 A 7; snap r3 1; } >in &&
	rc=0; stock-apply <in >out 2>err || rc=$?
	uninject_sql_error vendor_stock &&
	expect_eq 70 "$rc" "exit status" &&
	expect_grep "^stock-apply: database: merging stock: .*injected failure" err &&
	expect_grep "^stock-apply: r2: lines 3-5: its snapshot was rolled back" err &&
	expect_eq 2 "$(lines out)" "summary lines" &&
	expect_eq "5 1 7" "$(qty r1 A) $(qty r2 A) $(qty r3 A)" &&
	expect_eq "" "$(qty r2 B)"
'

test_expect_success 'a refused first load of a new vendor is rolled back alone; the next vendor goes on' '
	inject_sql_error vendor_stock INSERT 23514 "NEW.vendor = '"'new1'"'" &&
	{ item new1 A 1; item new1 B 2; snap new1 2; item new2 A 3; snap new2 1; } >in &&
	rc=0; stock-apply <in >out 2>err || rc=$?
	uninject_sql_error vendor_stock &&
	expect_eq 70 "$rc" "exit status" &&
	expect_grep "^stock-apply: database: loading stock lines: .*injected failure" err &&
	expect_grep "^stock-apply: new1: lines 1-3: its snapshot was rolled back" err &&
	expect_eq 0 "$(rows new1)" && expect_eq 3 "$(qty new2 A)"
'

test_done
