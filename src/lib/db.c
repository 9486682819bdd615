/* db: one way to connect, one way to run a statement, one way to say why it failed. */
#include "db.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "policy.h"
#include "retry.h"
#include "xalloc.h"

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
	return xalloc_check(PQconnectdbParams(keys, vals, 1));
}

/* The server's notices (a WARNING as it shuts down, say) as our own lines: "PROG: database: ...". */
static void
notice(void *arg, const char *message)
{
	(void)arg;
	warning("database: %.*s", (int)strcspn(message, "\n"), message);
}

/* libpq's message on one line: each host of a multi-host URI says why, joined with "; ". */
static char *
one_line(const char *message)
{
	char *out = xmalloc(2 * strlen(message) + 1), *o = out;

	for (const char *p = message; *p != '\0'; p++) {
		if (*p != '\n')
			*o++ = *p == '\t' ? ' ' : *p;
		else if (p[1] == '\t' || p[1] == ' ')
			*o++ = ' ';	/* a DETAIL or HINT line stays with its own */
		else if (p[1] != '\0')
			*o++ = ';', *o++ = ' ';
	}
	*o = '\0';
	return out;
}

PGconn *
db_connect(double patience)
{
	struct backoff b = BACKOFF_DB_CONNECT;
	double deadline = now_seconds() + patience;

	for (;;) {
		PGconn *c = connect_once();
		char *msg;

		if (PQstatus(c) == CONNECTION_OK) {
			PQsetNoticeProcessor(c, notice, NULL);
			return c;
		}
		msg = one_line(PQerrorMessage(c));
		PQfinish(c);
		if (now_seconds() >= deadline) {
			warning("database: cannot connect to %s: %s", config_db_target(), msg);
			free(msg);
			return NULL;
		}
		debugx("database: %s; retrying", msg);
		free(msg);
		sleep_seconds(backoff_next(&b), NULL);
	}
}

static double
patience(void)
{
	const char *s = getenv("OA_DB_PATIENCE");

	return s != NULL ? atof(s) : DB_PATIENCE_DEFAULT;
}

PGconn *
db_connect_or_die(const char *not_done)
{
	PGconn *c = db_connect(patience());

	if (c == NULL)
		die(EXIT_UNAVAILABLE, "database unavailable: %s", not_done);
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

PGresult *
db_result(PGconn *c, struct db_failure *f, const char *what, PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);
	const char *state;

	if (r != NULL && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_COPY_IN))
		return r;
	state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	snprintf(f->sqlstate, sizeof f->sqlstate, "%s", state != NULL ? state : "");
	f->lost = PQstatus(c) != CONNECTION_OK;
	f->retryable = !f->lost && db_retryable(f->sqlstate);
	snprintf(f->msg, sizeof f->msg, "%s: %s", what, db_error(c));
	PQclear(r);
	return NULL;
}

PGresult *
db_run(PGconn *c, struct db_failure *f, const char *what, const char *sql,
    int n, const char *const *params)
{
	PGresult *r;

	if (n == 0)
		r = PQexec(c, sql);
	else
		r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
	return db_result(c, f, what, r);
}

int
db_command(PGconn *c, struct db_failure *f, const char *what, const char *sql,
    int n, const char *const *params)
{
	PGresult *r = db_run(c, f, what, sql, n, params);

	PQclear(r);
	return r != NULL ? 0 : -1;
}

PGresult *
db_run_prepared(PGconn *c, struct db_failure *f, const char *what, const char *name,
    int n, const char *const *params)
{
	return db_result(c, f, what, PQexecPrepared(c, name, n, params, NULL, NULL, 0));
}

void
db_warn(const struct db_failure *f)
{
	warning("database: %s", f->msg);
}

int
db_exit_status(const struct db_failure *f)
{
	return f->lost ? EXIT_UNAVAILABLE : EXIT_SQL;
}

void
db_die(const struct db_failure *f, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	db_warn(f);
	die(db_exit_status(f), "%s", msg);
}

int
db_prepare(PGconn *c, const struct db_statement *stmts, size_t n, struct db_failure *f)
{
	char what[128];
	PGresult *r;

	if (db_command(c, f, "planning for any values", "SET plan_cache_mode = force_generic_plan",
	    0, NULL) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		snprintf(what, sizeof what, "preparing %s", stmts[i].name);
		if ((r = db_result(c, f, what, PQprepare(c, stmts[i].name, stmts[i].sql, 0,
		    NULL))) == NULL)
			return -1;
		PQclear(r);
	}
	return 0;
}

int
db_connection_lost(PGconn *c)
{
	return PQstatus(c) != CONNECTION_OK;
}

void
db_array_begin(struct buf *b)
{
	buf_reset(b);
	xbuf_add(b, "{", 1);
}

/* Elements after the first are preceded by a comma. */
static void
array_next(struct buf *b)
{
	if (b->len > 1)
		xbuf_add(b, ",", 1);
}

void
db_array_text(struct buf *b, const char *s)
{
	array_next(b);
	if (s == NULL) {
		xbuf_add(b, "NULL", 4);
		return;
	}
	xbuf_add(b, "\"", 1);
	for (size_t n; *s != '\0'; s += n) {
		/* The run of bytes that need no backslash goes in one piece. */
		if ((n = strcspn(s, "\"\\")) > 0) {
			xbuf_add(b, s, n);
			continue;
		}
		xbuf_add(b, "\\", 1);
		xbuf_add(b, s, 1);
		n = 1;
	}
	xbuf_add(b, "\"", 1);
}

void
db_array_bigint(struct buf *b, long long v)
{
	char num[32];

	array_next(b);
	xbuf_add(b, num, (size_t)snprintf(num, sizeof num, "%lld", v));
}

const char *
db_array_end(struct buf *b)
{
	xbuf_add(b, "}", 1);
	return b->data;
}
