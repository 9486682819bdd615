#!/usr/bin/env bash
# vendor-fetch reads a response's array an item at a time, yet writes a
# vendor's lines only when the whole response is a valid array.
. "$(dirname "$0")/lib.sh"

# Responses of every shape, served as static files (vendor-mock only serves good ones).
mkdir -p "$TRASH/www" && cd "$TRASH/www" || exit 1
printf '[]' >empty.json
printf ' [\n {"sku":"A","quantity":1,"name":"x","tags":["a",{"b":[1,2.5,null]}]} ,\n\t{"sku":"B","quantity":2}\n] \n' >spaced.json
printf '[{"sku":"A","quantity":1},{"sku":"B"' >cut.json
printf '[{"sku":"A","quantity":1},]' >comma.json
printf '[{"sku":"A","quantity":1} {"sku":"B","quantity":1}]' >nocomma.json
printf '[{"sku":"A","quantity":1}] x' >after.json
printf '{"items":[]}' >object.json
printf '[{"sku":"A","quantity":1},{"sku":"B","quantity":-1},7]' >bad-items.json
cd "$TRASH" || exit 1
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$TRASH/www" >www.out 2>www.err &
WWW_PID=$!
on_exit "kill $WWW_PID"
wait_ready $WWW_PID www.out ' port [0-9]+' 20 www.err || exit 1
WWW="http://127.0.0.1:$(echo "$READY_LINE" | sed -n 's/.* port \([0-9]*\).*/\1/p')"
unset VENDOR_BASE_URL

fetch() {	# fetch NAME...: vendor-fetch NAME=$WWW/NAME.json ..., once each, into fetched/ferr
	local args=() n
	for n in "$@"; do args+=("$n=$WWW/$n.json"); done
	vendor-fetch --retries 0 "${args[@]}" >fetched 2>ferr
}

test_expect_success 'an empty array is a complete snapshot of no items' '
	fetch empty &&
	expect_eq 1 "$(lines fetched)" &&
	expect_grep "\"vendor\":\"empty\",\"snapshot\":\"complete\",\"items\":0," fetched
'

test_expect_success 'items spread over lines, with nested fields, are written as the same JSON' '
	fetch spaced &&
	expect_eq 3 "$(lines fetched)" &&
	expect_eq "$(jq -c ".[] | {sku, quantity, name, tags}" www/spaced.json)" \
		"$(jq -c "select(.sku) | {sku, quantity, name, tags}" fetched)"
'

for shape in cut comma nocomma; do
	test_expect_success "a response that is not valid JSON ($shape) writes no line of that vendor" "
		test_expect_code 69 fetch $shape empty &&
		expect_eq 1 \"\$(lines fetched)\" && ! grep -q '\"vendor\":\"$shape\"' fetched &&
		expect_grep \"^vendor-fetch: $shape: the response is not valid JSON (near byte [0-9]*)\" ferr
	"
done

test_expect_success 'a response with data after its array writes nothing and says where' '
	test_expect_code 69 fetch after &&
	expect_eq 0 "$(lines fetched)" &&
	expect_grep "after: the response has data after its JSON value (at byte 26)" ferr
'

test_expect_success 'a response that is not an array writes nothing and says so' '
	test_expect_code 69 fetch object &&
	expect_eq 0 "$(lines fetched)" &&
	expect_grep "object: the response is not a JSON array of items" ferr
'

test_expect_success 'invalid items are skipped by position and make the snapshot partial' '
	fetch bad-items &&
	expect_eq 2 "$(lines fetched)" &&
	expect_grep "item 2 (.\[1\]): \"quantity\" must be an integer >= 0; skipped" ferr &&
	expect_grep "item 3 (.\[2\]): is not a JSON object; skipped" ferr &&
	expect_grep "\"snapshot\":\"partial\",\"items\":1," fetched
'

test_done
