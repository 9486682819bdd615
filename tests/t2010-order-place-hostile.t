#!/usr/bin/env bash
# order-place contains hostile input: a huge line, \u0000 in a string, a reused idempotency key.
. "$(dirname "$0")/lib.sh"

sql "INSERT INTO vendor_stock (vendor, sku, quantity) VALUES ('acme', 'A', 100), ('acme', 'B', 100)"
orders() { sql "SELECT count(*) FROM orders $*"; }

test_expect_success 'a 200 MB line is a bad line read past in bounded memory; the next line is placed' '
	{ printf "{\"sku\":\""; head -c 200000000 /dev/zero | tr "\0" x; printf "\",\"quantity\":1}\n";
	  echo "{\"sku\":\"A\",\"quantity\":1}"; } |
		{ rc=0; /usr/bin/time -f %M -o "$TRASH/rss" order-place >out 2>err || rc=$?; echo $rc >rc; } &&
	expect_eq 65 "$(cat rc)" "exit status" &&
	expect_grep "^order-place: line 1: line longer than 1048576 bytes" err &&
	expect_eq 2 "$(lines out)" "answers" &&
	expect_eq "rejected pending" "$(jq -r .status out | paste -sd " ")" &&
	rss=$(tail -n 1 "$TRASH/rss") && say "peak RSS ${rss} KiB" &&
	test "$rss" -lt 65536
'

test_expect_success '--max-line takes a longer line when asked' '
	{ printf "{\"sku\":\"A\",\"quantity\":1,\"pad\":\""; head -c 2000000 /dev/zero | tr "\0" x; printf "\"}\n"; } >in &&
	order-place --max-line 4000000 <in >out &&
	expect_eq pending "$(jq -r .status out)"
'

test_expect_success '"A\u0000B" is a bad line, never an order for A' '
	before=$(orders) &&
	printf "%s\n" "{\"sku\":\"A\\u0000B\",\"quantity\":1}" "{\"sku\":\"B\",\"quantity\":1}" >in &&
	rc=0; order-place <in >out 2>err || rc=$?
	expect_eq 65 "$rc" "exit status" &&
	expect_grep "^order-place: line 1: a string holds \\\\u0000" err &&
	expect_eq "rejected pending" "$(jq -r .status out | paste -sd " ")" &&
	expect_eq $((before + 1)) "$(orders)" "one order" &&
	expect_eq 0 "$(orders "WHERE sku = '"'A'"' AND created_at > now() - interval '"'1 minute'"' AND quantity = 1 AND id > $before")" "no order for A"
'

test_expect_success 'keys k\u0000one and k\u0000two are bad lines, not one merged key' '
	printf "%s\n" "{\"sku\":\"A\",\"quantity\":1,\"key\":\"k\\u0000one\"}" \
		"{\"sku\":\"A\",\"quantity\":2,\"key\":\"k\\u0000two\"}" >in &&
	rc=0; order-place <in >out 2>err || rc=$?
	expect_eq 65 "$rc" "exit status" &&
	expect_grep "^order-place: line 1: a string holds" err &&
	expect_grep "^order-place: line 2: a string holds" err &&
	expect_eq 0 "$(orders "WHERE idempotency_key LIKE '"'k%'"'")" "orders under k"
'

test_expect_success 'a key reused with another SKU or quantity is refused; the same request still answers' '
	held=$(sql "SELECT reserved FROM vendor_stock WHERE sku = '"'A'"'") &&
	order-place -k reuse A 2 >first &&
	id=$(jq -r .order_id first) &&
	order-place -k reuse B 2 >out &&
	expect_eq "rejected idempotency_key_reused B reuse" "$(jq -r "\"\(.status) \(.error) \(.sku) \(.key)\"" out)" &&
	echo "{\"sku\":\"A\",\"quantity\":3,\"key\":\"reuse\"}" | order-place >out &&
	expect_eq "rejected idempotency_key_reused" "$(jq -r "\"\(.status) \(.error)\"" out)" &&
	order-place -k reuse A 2 >out &&
	expect_eq "$id pending" "$(jq -r "\"\(.order_id) \(.status)\"" out)" "the original order" &&
	expect_eq 1 "$(orders "WHERE idempotency_key = '"'reuse'"'")" &&
	expect_eq $((held + 2)) "$(sql "SELECT reserved FROM vendor_stock WHERE sku = '"'A'"'")" "reserved once"
'

test_expect_success 'in one batch, a key reused with another request is refused, the repeat answered' '
	printf "%s\n" "{\"sku\":\"B\",\"quantity\":1,\"key\":\"batch\"}" \
		"{\"sku\":\"B\",\"quantity\":5,\"key\":\"batch\"}" \
		"{\"sku\":\"A\",\"quantity\":1,\"key\":\"batch\"}" \
		"{\"sku\":\"B\",\"quantity\":1,\"key\":\"batch\"}" >in &&
	order-place <in >out &&
	expect_eq "pending idempotency_key_reused idempotency_key_reused pending" \
		"$(jq -r "if .error then .error else .status end" out | paste -sd " ")" &&
	expect_eq 1 "$(orders "WHERE idempotency_key = '"'batch'"'")" &&
	expect_eq "$(sed -n 1p out | jq .order_id)" "$(sed -n 4p out | jq .order_id)" "the repeat has the order"
'

test_done
