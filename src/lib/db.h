/* db: PostgreSQL connections and the checks every libpq call needs. */
#ifndef OA_DB_H
#define OA_DB_H

#include <stddef.h>

#include <libpq-fe.h>

/*
 * Connect using DATABASE_URL, else DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASS,
 * else libpq's PG* defaults; retries with backoff for about `patience`
 * seconds. Returns NULL (after saying why on stderr) if it never answered.
 */
PGconn *db_connect(double patience);
/* Connect or exit 69 saying what was not done. */
PGconn *db_connect_or_die(const char *not_done);
/* Run a parameterless statement; returns 0, or -1 after printing the error. */
int db_exec(PGconn *c, const char *sql);
/* A statement a program prepares on each connection and then runs by name. */
struct db_statement {
	const char *name, *sql;
};
/*
 * Plan the session's statements for any parameter values (plan_cache_mode =
 * force_generic_plan: a plan made for one batch's many values may scan a whole
 * table the index would serve) and prepare `n` statements; 0, or -1 after
 * printing which failed.
 */
int db_prepare(PGconn *c, const struct db_statement *stmts, size_t n);
/* PQexecParams with text parameters; checks the status; NULL on error (printed). */
PGresult *db_query(PGconn *c, const char *what, const char *sql, int n, const char *const *params);
/* True when the error means the connection itself is gone (retry elsewhere). */
int db_connection_lost(PGconn *c);
/* The server's message, one line, for stderr. */
const char *db_error(PGconn *c);

#endif
