#!/usr/bin/env bash
# Every program and script a user runs: -h and --help list every option, one line each, on stdout;
# a bad option is the short usage on stderr and exit 64; --version is "PROG (order-aggregator) VERSION".
. "$(dirname "$0")/lib.sh"

PROGRAMS=$(grep -l "^main(" "$TOP"/src/*.c | sed "s|.*/||; s|\.c$||" | sort)
VERSION=$(sed -n "s/^VERSION *= *//p" "$TOP/Makefile")

# synopsis_flags PAGE: the flags the man page's SYNOPSIS shows, one a line
# ("Fl q" is -q, "Fl \-queue" and "Fl -queue" --queue, "Fl h | \-help" both),
# without the "--" that ends the options.
synopsis_flags() {
	sed -n "/^\.Sh SYNOPSIS/,/^\.Sh /p" "$1" | tr -d "\\\\" |
		awk '{ fl = 0; sub(/^\./, ""); for (i = 1; i <= NF; i++) {
			if ($i == "Fl") { fl = 1; continue }
			if ($i ~ /^[A-Z][a-z]$/) { fl = 0; continue }
			if (fl && $i != "|") print "-" $i
		} }' | grep -v "^--$" | sort -u
}
# table_options SOURCE: the long options of the program's getopt_long table
table_options() {
	sed -n "s/^[[:space:]]*{ \"\([a-z0-9-]*\)\", *[a-z]*_argument,.*/--\1/p" "$1" | sort -u
}
# help_options FILE: the options --help listed, one per line of its own
help_options() {
	grep -oE "^ +(-[A-Za-z], )?--[A-Za-z0-9-]+" "$1" | sed "s/.* //" | sort
}
# listed FLAG FILE: FLAG begins an option line of the help in FILE
listed() {
	grep -qE -- "^ +(-[A-Za-z], )?$1( |,|\$)" "$2" || grep -qE -- "^ +$1, " "$2"
}

test_expect_success 'the programs are found: every src/PROG.c with a main, each with a man page' '
	test "$(echo "$PROGRAMS" | wc -l)" -ge 11 &&
	for p in $PROGRAMS; do test -f "$TOP/man/man1/$p.1" || fail "no man/man1/$p.1" || exit 1; done
'

for p in $PROGRAMS; do
	PROG=$p
	test_expect_success "$p -h and --help: the same help on stdout, exit 0, nothing on stderr" '
		test_expect_code 0 $PROG -h >h.out 2>h.err &&
		test_expect_code 0 $PROG --help >help.out 2>help.err &&
		test_cmp h.out help.out &&
		{ test ! -s h.err && test ! -s help.err || fail "stderr: $(cat h.err help.err)"; } &&
		expect_grep "^usage: $PROG" help.out &&
		listed -h help.out && listed --help help.out && listed --version help.out
	'

	test_expect_success "$p --help lists each option of its man page's SYNOPSIS and of its getopt table, one line each" '
		synopsis_flags "$TOP/man/man1/$PROG.1" >synopsis &&
		table_options "$TOP/src/$PROG.c" >table &&
		test -s synopsis && test -s table &&
		$PROG --help >help.out &&
		for f in $(cat synopsis table); do listed "$f" help.out || fail "$PROG --help does not list $f" || exit 1; done &&
		help_options help.out >listed &&
		{ test -z "$(uniq -d listed)" || fail "listed twice: $(uniq -d listed)"; } &&
		for f in $(cat listed); do grep -qx -- "$f" table || fail "$PROG --help lists $f, not in its getopt table" || exit 1; done
	'

	test_expect_success "$p --version: one line, \"$p (order-aggregator) $VERSION\", exit 0" '
		test_expect_code 0 $PROG --version >v.out 2>v.err &&
		test ! -s v.err &&
		expect_eq "$PROG (order-aggregator) $VERSION" "$(cat v.out)" "--version" &&
		expect_eq 1 "$(lines v.out)" "lines"
	'

	test_expect_success "$p with an unknown option: the short usage on stderr, nothing on stdout, exit 64" '
		test_expect_code 64 $PROG --no-such-option >bad.out 2>bad.err &&
		test ! -s bad.out &&
		expect_grep "^usage: $PROG" bad.err &&
		! grep -q -e "--version" bad.err
	'
done

test_expect_success 'scripts/db-migrate (the source tree'"'"'s wrapper) says the program'"'"'s help and version' '
	"$TOP/scripts/db-migrate" -h >h.out && expect_grep "^usage: db-migrate" h.out && listed --status h.out &&
	expect_eq "db-migrate (order-aggregator) $VERSION" "$("$TOP/scripts/db-migrate" --version)" "--version"
'

test_expect_success 'sync-stock -h and --help: its usage and vendor-fetch'"'"'s options, on stdout, exit 0' '
	test_expect_code 0 sync-stock -h >h.out 2>h.err &&
	test_expect_code 0 sync-stock --help >help.out &&
	test_cmp h.out help.out && test ! -s h.err &&
	expect_grep "^usage: sync-stock" help.out &&
	listed -h help.out && listed --version help.out &&
	vendor-fetch --help >vf.out &&
	for f in $(help_options vf.out | grep -v -x -e --help -e --version); do
		listed "$f" help.out || fail "sync-stock --help does not list $f" || exit 1
	done
'

test_expect_success 'sync-stock --version: "sync-stock (order-aggregator) VERSION"' '
	expect_eq "sync-stock (order-aggregator) $VERSION" "$(sync-stock --version)" "--version"
'

test_expect_success 'sync-stock with an unknown option and no vendor: usage on stderr, exit 64' '
	test_expect_code 64 sync-stock --no-such-option >bad.out 2>bad.err &&
	test ! -s bad.out && expect_grep "^usage: sync-stock" bad.err
'

test_done
