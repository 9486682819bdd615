/* db-migrate: apply the schema's numbered migrations, once each, safely in parallel. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "lib/db.h"
#include "lib/log.h"
#include "migrations.h"	/* generated from the SQL files in src/sql by the Makefile */

/* Any fixed number: every db-migrate takes this advisory lock, so they queue. */
#define MIGRATE_LOCK 0x6f61676772L

static void
usage(FILE *fp, int code)
{
	fprintf(fp, "usage: %s [--status]\n", progname);
	exit(code);
}

static int
applied(PGconn *c, int version)
{
	char v[16];
	const char *p[1] = { v };
	PGresult *r;
	int yes;

	snprintf(v, sizeof v, "%d", version);
	r = db_query(c, "reading schema_migrations",
	    "SELECT 1 FROM schema_migrations WHERE version = $1", 1, p);
	if (r == NULL)
		exit(EX_UNAVAILABLE);
	yes = PQntuples(r) > 0;
	PQclear(r);
	return yes;
}

static int
migrate_one(PGconn *c, const struct migration *m)
{
	char v[16];
	const char *p[2] = { v, m->name };
	PGresult *r;

	if (db_exec(c, "BEGIN") < 0)
		return -1;
	snprintf(v, sizeof v, "%ld", MIGRATE_LOCK);
	r = db_query(c, "taking the migration lock", "SELECT pg_advisory_xact_lock($1)", 1,
	    (const char *[]){ v });
	if (r == NULL)
		return -1;
	PQclear(r);
	if (db_exec(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
	    " version integer PRIMARY KEY, name text NOT NULL,"
	    " applied_at timestamptz NOT NULL DEFAULT now())") < 0)
		return -1;
	if (applied(c, m->version))
		return db_exec(c, "COMMIT");
	if (db_exec(c, m->sql) < 0) {
		warning("migration %03d-%s failed; nothing of it was applied", m->version, m->name);
		return -1;
	}
	snprintf(v, sizeof v, "%d", m->version);
	r = db_query(c, "recording the migration",
	    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, p);
	if (r == NULL)
		return -1;
	PQclear(r);
	if (db_exec(c, "COMMIT") < 0)
		return -1;
	fprintf(stderr, "%s: applied %03d-%s\n", progname, m->version, m->name);
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
	int status_only = 0, ch;
	PGconn *c;

	log_init(argv[0]);
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's': status_only = 1; break;
		case 'h': usage(stdout, 0); break;
		case 'V': puts(OA_VERSION); return 0;
		default: usage(stderr, EX_USAGE);
		}
	}
	if (optind != argc)
		usage(stderr, EX_USAGE);
	c = db_connect_or_die("no migration was applied");
	if (db_exec(c, "SET client_min_messages = warning") < 0)
		return EX_UNAVAILABLE;
	for (size_t i = 0; i < n_migrations; i++) {
		const struct migration *m = &migrations[i];

		if (status_only) {
			PGresult *r = PQexec(c, "SELECT to_regclass('schema_migrations') IS NOT NULL");
			int have = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';

			PQclear(r);
			printf("%03d-%s %s\n", m->version, m->name,
			    have && applied(c, m->version) ? "applied" : "pending");
			continue;
		}
		if (migrate_one(c, m) < 0) {
			PQfinish(c);
			return EX_UNAVAILABLE;
		}
	}
	PQfinish(c);
	return 0;
}
