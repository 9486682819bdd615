/* order-sweep: write the pending orders that made no progress for a while, oldest first. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/db.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/num.h"
#include "lib/orders.h"
#include "lib/policy.h"

/*
 * Keyset pagination over the partial index orders_pending (updated_at): each
 * page is a short statement resuming after the last (updated_at, id) seen, so
 * no transaction stays open and memory holds one page. The cut-off is fixed
 * once, at the start: an order fulfil touches during the sweep moves past it,
 * so the sweep ends even while the table keeps changing.
 */
#define PAGE "1000"
#define MAX_AGE (10.0 * 365 * 86400)

static const char *SQL_CUTOFF = "SELECT now() - make_interval(secs => $1::float8)";

static const char *SQL_PAGE =
	"SELECT id, sku, quantity, vendor, status, idempotency_key, updated_at FROM orders"
	" WHERE status = 'pending' AND updated_at < $1::timestamptz"
	" AND (updated_at, id) > ($2::timestamptz, $3::bigint)"
	" ORDER BY updated_at, id LIMIT " PAGE;

static long written;

/*
 * One sweep at a time on every host that shares the database: a session
 * advisory lock, released when the sweep's connection ends (sync-stock takes
 * the same kind, keyed 'sync-stock').
 */
static const char *SQL_LOCK =
	"SELECT pg_try_advisory_lock(hashtext('order-aggregator'), hashtext('order-sweep'))";

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = { "[--older-than SECONDS]", NULL };
	static const struct usage_option options[] = {
		{ "--older-than SECONDS", "write the pending orders older than this (default 60)" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

/* The statement's result, or exit: 69 when the database is gone, 70 when it refused. */
static PGresult *
query_or_die(PGconn *c, const char *what, const char *sql, int n, const char *const *p)
{
	struct db_failure f;
	PGresult *r = db_run(c, &f, what, sql, n, p);

	if (r == NULL)
		db_die(&f, "%s: %ld pending orders were written before the sweep stopped",
		    f.lost ? "database unavailable" : "database error", written);
	return r;
}

static void
write_row(const PGresult *r, int row)
{
	struct order_result o = {
		.order_id = atoll(PQgetvalue(r, row, 0)),
		.sku = PQgetvalue(r, row, 1),
		.quantity = atoll(PQgetvalue(r, row, 2)),
		.has_quantity = 1,
		.vendor = PQgetvalue(r, row, 3),
		.status = PQgetvalue(r, row, 4),
		.key = PQgetisnull(r, row, 5) ? NULL : PQgetvalue(r, row, 5),
	};
	cJSON *j = order_result_json(&o);	/* borrowed strings: not cleared */

	jsonl_write(stdout, j);
	cJSON_Delete(j);
}

static void
sweep(PGconn *c, double older_than)
{
	char age[64], cutoff[64], after[64] = "-infinity", id[32] = "0";
	PGresult *r;
	int n;

	snprintf(age, sizeof age, "%.6f", older_than);
	r = query_or_die(c, "reading the clock", SQL_CUTOFF, 1, (const char *[]){ age });
	snprintf(cutoff, sizeof cutoff, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	do {
		r = query_or_die(c, "reading pending orders", SQL_PAGE, 3,
		    (const char *[]){ cutoff, after, id });
		n = PQntuples(r);
		for (int row = 0; row < n; row++)
			write_row(r, row);
		if (n > 0) {
			snprintf(id, sizeof id, "%s", PQgetvalue(r, n - 1, 0));
			snprintf(after, sizeof after, "%s", PQgetvalue(r, n - 1, 6));
		}
		PQclear(r);
		written += n;
		out_flush("order-sweep only reads; nothing in the database changed");
	} while (n == atoi(PAGE));
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "older-than", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	double older_than = 60;
	PGconn *c;
	PGresult *r;
	int ch;

	log_init(argv[0]);
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'o': older_than = option_seconds("--older-than", optarg, MAX_AGE); break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (optind != argc)
		usage(stderr, EXIT_USAGE);
	signal(SIGPIPE, SIG_IGN);
	c = db_connect_or_die("no pending order was written");
	/* Timestamps go back as text: ISO with full precision round-trips exactly. */
	PQclear(query_or_die(c, "setting DateStyle", "SET DateStyle = ISO", 0, NULL));
	r = query_or_die(c, "taking the sweep lock", SQL_LOCK, 0, NULL);
	if (strcmp(PQgetvalue(r, 0, 0), "t") != 0)
		die(EXIT_BUSY, "another order-sweep (on this or another host) holds the "
		    "database's sweep lock; no pending order was written");
	PQclear(r);
	sweep(c, older_than);
	PQfinish(c);
	return 0;
}
