/* db: PostgreSQL connections, the one way to run a statement, and what its failure means. */
#ifndef OA_DB_H
#define OA_DB_H

#include <stddef.h>

#include <libpq-fe.h>

#include "buf.h"

/*
 * Connect using DATABASE_URL, else DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASS,
 * else libpq's PG* defaults; retries with backoff (BACKOFF_DB_CONNECT) for
 * about `patience` seconds. Returns NULL (after saying why on stderr) if it
 * never answered.
 */
PGconn *db_connect(double patience);
/*
 * Connect, waiting OA_DB_PATIENCE seconds (DB_PATIENCE_DEFAULT), or exit
 * EXIT_UNAVAILABLE saying what was not done.
 */
PGconn *db_connect_or_die(const char *not_done);

/* Why a statement failed, as db_run and its kin fill it in. */
struct db_failure {
	char sqlstate[6];	/* the server's SQLSTATE; "" when none came */
	int lost;		/* the connection is gone: nothing more runs on it */
	int retryable;		/* db_retryable(): the whole transaction may be run again */
	char msg[1280];		/* "WHAT: server message", one line */
};

/*
 * Run one statement with text parameters. With n == 0 the text goes by the
 * simple query protocol, so it may hold several statements (a migration).
 * Returns the result (PGRES_COMMAND_OK, PGRES_TUPLES_OK or PGRES_COPY_IN),
 * or NULL with *f filled in; nothing is printed, `what` ("merging stock")
 * only goes into f->msg.
 */
PGresult *db_run(PGconn *c, struct db_failure *f, const char *what, const char *sql,
    int n, const char *const *params);
/* db_run for a statement whose result is not needed: 0, or -1 with *f filled in. */
int db_command(PGconn *c, struct db_failure *f, const char *what, const char *sql,
    int n, const char *const *params);
/* db_run for a statement prepared by db_prepare, by its name. */
PGresult *db_run_prepared(PGconn *c, struct db_failure *f, const char *what, const char *name,
    int n, const char *const *params);
/*
 * The check db_run makes, for results obtained otherwise (a COPY's end): r,
 * or NULL (r cleared) with *f filled in. r may be NULL: a libpq call that
 * failed without a result (PQputCopyData) is classified the same way.
 */
PGresult *db_result(PGconn *c, struct db_failure *f, const char *what, PGresult *r);
/* Print f as "PROG: database: WHAT: server message". */
void db_warn(const struct db_failure *f);
/* How a program that stops on f exits: EXIT_UNAVAILABLE when lost, else EXIT_SQL. */
int db_exit_status(const struct db_failure *f);
/* db_warn(f), then die with db_exit_status(f) and the message given (what was committed). */
void db_die(const struct db_failure *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* A statement a program prepares on each connection and then runs by name. */
struct db_statement {
	const char *name, *sql;
};
/*
 * Plan the session's statements for any parameter values (plan_cache_mode =
 * force_generic_plan: a plan made for one batch's many values may scan a whole
 * table the index would serve) and prepare `n` statements; 0, or -1 with *f
 * saying which failed.
 */
int db_prepare(PGconn *c, const struct db_statement *stmts, size_t n, struct db_failure *f);

/* True when the connection itself is gone (retry elsewhere). */
int db_connection_lost(PGconn *c);
/* The server's last message on c, one line, for stderr. */
const char *db_error(PGconn *c);

/*
 * An array literal for a $n::text[] or $n::bigint[] parameter, built in a
 * buf: db_array_begin, one db_array_text or db_array_bigint per element,
 * db_array_end, which returns the literal ("{}" when empty). The buffer may
 * be reused (begin resets it, keeping its memory).
 */
void db_array_begin(struct buf *b);
/* A text element, double-quoted with " and \ escaped; NULL is SQL NULL. */
void db_array_text(struct buf *b, const char *s);
void db_array_bigint(struct buf *b, long long v);
const char *db_array_end(struct buf *b);

#endif
