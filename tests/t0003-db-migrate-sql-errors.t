#!/usr/bin/env bash
# db-migrate exits 70 when the database refuses a migration, and applies nothing of it.
. "$(dirname "$0")/lib.sh"

BARE=${TEST_DB}_bare
BARE_URL=${BASE_DATABASE_URL%/*}/$BARE

test_expect_success 'a migration that cannot be recorded exits 70 and leaves no table behind' '
	psql -Xq -d "$BASE_DATABASE_URL" -c "CREATE DATABASE $BARE" &&
	psql -Xq -d "$BARE_URL" -c "CREATE TABLE schema_migrations (version integer PRIMARY KEY)" &&
	rc=0; DATABASE_URL=$BARE_URL db-migrate >out 2>err || rc=$?
	tables=$(psql -XAt -d "$BARE_URL" -c "SELECT count(*) FROM pg_tables WHERE tablename = '"'orders'"'")
	psql -Xq -d "$BASE_DATABASE_URL" -c "DROP DATABASE $BARE" &&
	expect_eq 70 "$rc" "exit status" &&
	expect_grep "^db-migrate: database: recording the migration: " err &&
	expect_eq 0 "$tables" "tables left behind"
'

test_done
