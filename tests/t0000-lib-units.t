#!/usr/bin/env bash
# The C unit tests of src/lib pass (each prints TAP; a "not ok" or a crash fails here).
. "$(dirname "$0")/lib.sh"
flavour=$(cat "$TOP/build/.flavour")
for t in "$TOP/$flavour"/unit/*; do
	test_expect_success "unit tests $(basename "$t") pass" '
		{ test_expect_code 0 "$t" >u.out 2>&1 || { cat u.out; false; }; } &&
		! grep "^not ok" u.out && grep -q "^1\.\." u.out
	'
done
test_done
