#!/usr/bin/env bash
# db-migrate applies the schema once, and concurrent runs do not trip over each other.
. "$(dirname "$0")/lib.sh"

test_expect_success 'db-migrate on a migrated database changes nothing and exits 0' '
	db-migrate 2>err && test ! -s err &&
	db-migrate --status | grep -q "001-stock-and-orders applied"
'

test_expect_success 'four concurrent db-migrate runs on an empty database apply each migration once' '
	psql -Xq -d "$BASE_DATABASE_URL" -c "CREATE DATABASE ${TEST_DB}_e" &&
	url=${BASE_DATABASE_URL%/*}/${TEST_DB}_e &&
	for i in 1 2 3 4; do DATABASE_URL=$url db-migrate 2>/dev/null & done; wait &&
	n=$(psql -XAt -d "$url" -c "SELECT count(*) FROM schema_migrations") &&
	psql -Xq -d "$BASE_DATABASE_URL" -c "DROP DATABASE ${TEST_DB}_e" &&
	expect_eq "$(ls "$TOP"/src/sql/*.sql | wc -l)" "$n" "migrations recorded (one per src/sql file)"
'

test_expect_success 'db-migrate against a closed port says which database and exits 69' '
	DATABASE_URL=postgresql://nobody:secret@127.0.0.1:1/x OA_DB_PATIENCE=0 \
		test_expect_code 69 db-migrate 2>err &&
	grep -q "cannot connect to postgresql://nobody:\*\*\*@127.0.0.1:1/x" err &&
	! grep -q secret err
'

test_expect_success 'db-migrate with an unknown flag prints usage and exits 64' '
	test_expect_code 64 db-migrate --bogus 2>err &&
	expect_grep "^usage: db-migrate" err
'

test_option_errors db-migrate <<\EOF
--bogus | --bogus
EOF

test_done
