/* db: one way to connect, one way to report a database error. */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "config.h"
#include "log.h"
#include "retry.h"

static PGconn *
connect_once(void)
{
	const char *keys[8], *vals[8];
	const char *url = getenv("DATABASE_URL");
	int n = 0;

	if (url != NULL && *url != '\0') {
		keys[n] = "dbname";
		vals[n++] = url;
	} else {
		static const char *map[][2] = {
			{ "DB_HOST", "host" }, { "DB_PORT", "port" }, { "DB_NAME", "dbname" },
			{ "DB_USER", "user" }, { "DB_PASS", "password" },
		};

		for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
			const char *v = getenv(map[i][0]);

			if (v != NULL && *v != '\0') {
				keys[n] = map[i][1];
				vals[n++] = v;
			}
		}
	}
	keys[n] = "application_name";
	vals[n++] = progname;
	keys[n] = NULL;
	vals[n] = NULL;
	/* expand_dbname=1: DATABASE_URL may be a URI or a conninfo string. */
	return PQconnectdbParams(keys, vals, 1);
}

PGconn *
db_connect(double patience)
{
	struct backoff b = BACKOFF_INIT(0.2, 2.0);
	double deadline = now_seconds() + patience;

	for (;;) {
		PGconn *c = connect_once();
		char *msg;

		if (PQstatus(c) == CONNECTION_OK)
			return c;
		msg = strdup(PQerrorMessage(c));
		PQfinish(c);
		if (msg != NULL)
			msg[strcspn(msg, "\n")] = '\0';
		if (now_seconds() >= deadline) {
			warning("database: cannot connect to %s: %s", config_db_target(),
			    msg ? msg : "out of memory");
			free(msg);
			return NULL;
		}
		debugx("database: %s; retrying", msg ? msg : "");
		free(msg);
		sleep_seconds(backoff_next(&b), NULL);
	}
}

static double
patience(void)
{
	const char *s = getenv("OA_DB_PATIENCE");

	return s != NULL ? atof(s) : 10.0;
}

PGconn *
db_connect_or_die(const char *not_done)
{
	PGconn *c = db_connect(patience());

	if (c == NULL)
		die(EX_UNAVAILABLE, "database unavailable: %s", not_done);
	return c;
}

const char *
db_error(PGconn *c)
{
	static _Thread_local char buf[1024];

	snprintf(buf, sizeof buf, "%s", PQerrorMessage(c));
	buf[strcspn(buf, "\n")] = '\0';
	return buf;
}

int
db_exec(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

	if (!ok)
		warning("database: %s", db_error(c));
	PQclear(r);
	return ok ? 0 : -1;
}

int
db_prepare(PGconn *c, const struct db_statement *stmts, size_t n)
{
	if (db_exec(c, "SET plan_cache_mode = force_generic_plan") < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		PGresult *r = PQprepare(c, stmts[i].name, stmts[i].sql, 0, NULL);
		int ok = PQresultStatus(r) == PGRES_COMMAND_OK;

		if (!ok)
			warning("database: preparing %s: %s", stmts[i].name, db_error(c));
		PQclear(r);
		if (!ok)
			return -1;
	}
	return 0;
}

PGresult *
db_query(PGconn *c, const char *what, const char *sql, int n, const char *const *params)
{
	PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)
		return r;
	warning("database: %s: %s", what, db_error(c));
	PQclear(r);
	return NULL;
}

int
db_connection_lost(PGconn *c)
{
	return PQstatus(c) != CONNECTION_OK;
}
