/* db-migrate: apply the schema's numbered migrations, once each, safely in parallel. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/db.h"
#include "lib/log.h"
#include "lib/policy.h"
#include "migrations.h"	/* generated from the SQL files in src/sql by the Makefile */

/* Any fixed number: every db-migrate takes this advisory lock, so they queue. */
#define MIGRATE_LOCK 0x6f61676772L

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = { "[--status]", NULL };
	static const struct usage_option options[] = {
		{ "--status", "list every migration as applied or pending; change nothing" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

/* Whether the migration is recorded: 1 or 0, or -1 with *f filled in. */
static int
applied(PGconn *c, struct db_failure *f, int version)
{
	char v[16];
	PGresult *r;
	int yes;

	snprintf(v, sizeof v, "%d", version);
	r = db_run(c, f, "reading schema_migrations",
	    "SELECT 1 FROM schema_migrations WHERE version = $1", 1, (const char *[]){ v });
	if (r == NULL)
		return -1;
	yes = PQntuples(r) > 0;
	PQclear(r);
	return yes;
}

/* Apply one migration in its own transaction unless it is recorded; 0, or -1 (printed). */
static int
migrate_one(PGconn *c, struct db_failure *f, const struct migration *m)
{
	char lock[24], version[16], what[300];
	int done;

	snprintf(lock, sizeof lock, "%ld", MIGRATE_LOCK);
	snprintf(version, sizeof version, "%d", m->version);
	snprintf(what, sizeof what, "applying %03d-%s", m->version, m->name);
	if (db_command(c, f, "beginning the migration", "BEGIN", 0, NULL) < 0 ||
	    db_command(c, f, "taking the migration lock", "SELECT pg_advisory_xact_lock($1)",
	    1, (const char *[]){ lock }) < 0 ||
	    db_command(c, f, "creating schema_migrations",
	    "CREATE TABLE IF NOT EXISTS schema_migrations ("
	    " version integer PRIMARY KEY, name text NOT NULL,"
	    " applied_at timestamptz NOT NULL DEFAULT now())", 0, NULL) < 0 ||
	    (done = applied(c, f, m->version)) < 0) {
		db_warn(f);
		return -1;
	}
	if (done) {
		if (db_command(c, f, "committing", "COMMIT", 0, NULL) < 0) {
			db_warn(f);
			return -1;
		}
		return 0;
	}
	if (db_command(c, f, what, m->sql, 0, NULL) < 0) {
		db_warn(f);
		warning("migration %03d-%s failed; nothing of it was applied", m->version, m->name);
		return -1;
	}
	if (db_command(c, f, "recording the migration",
	    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2,
	    (const char *[]){ version, m->name }) < 0 ||
	    db_command(c, f, "committing", "COMMIT", 0, NULL) < 0) {
		db_warn(f);
		return -1;
	}
	fprintf(stderr, "%s: applied %03d-%s\n", progname, m->version, m->name);
	return 0;
}

/* --status: one line per migration, applied or pending. */
static int
print_status(PGconn *c, struct db_failure *f)
{
	PGresult *r = db_run(c, f, "looking for schema_migrations",
	    "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL);
	int have, done = 0;

	if (r == NULL) {
		db_warn(f);
		return -1;
	}
	have = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	for (size_t i = 0; i < n_migrations; i++) {
		const struct migration *m = &migrations[i];

		if (have && (done = applied(c, f, m->version)) < 0) {
			db_warn(f);
			return -1;
		}
		printf("%03d-%s %s\n", m->version, m->name, done ? "applied" : "pending");
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "status", no_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct db_failure f;
	int status_only = 0, ch, rc = 0;
	PGconn *c;

	log_init(argv[0]);
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 's': status_only = 1; break;
		case 'h': usage(stdout, 0); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (optind != argc)
		usage(stderr, EXIT_USAGE);
	c = db_connect_or_die("no migration was applied");
	if (db_command(c, &f, "quieting notices", "SET client_min_messages = warning", 0,
	    NULL) < 0) {
		db_warn(&f);
		rc = -1;
	} else if (status_only) {
		rc = print_status(c, &f);
	} else {
		for (size_t i = 0; i < n_migrations && rc == 0; i++)
			rc = migrate_one(c, &f, &migrations[i]);
	}
	PQfinish(c);
	return rc < 0 ? db_exit_status(&f) : EXIT_OK;
}
