/* order-place: reserve stock and record pending orders, answering one line per request. */
#include <getopt.h>
#include <math.h>
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
#include "lib/retry.h"
#include "lib/validate.h"
#include "lib/xalloc.h"

/*
 * Requests already waiting on stdin are taken together, up to a batch, and
 * placed in one transaction: the commit (and, on a hot SKU, the row lock held
 * until it) is shared by the whole batch. Nothing waits for more input while
 * the transaction is open. A batch's answers are printed after its commit.
 */
#define BATCH_DEFAULT 1000
#define BATCH_MAX 10000
/* Input bytes held per batch at most (after the line that crosses it): memory stays bounded. */
#define BATCH_BYTES (1024 * 1024)

struct batch {
	size_t cap, n;
	cJSON **obj;
	struct order_request *rq;
	struct order_result *res;
	long first_line, last_line;
};

/*
 * --stats keeps commit latencies in a fixed histogram, so its memory does not
 * grow with the input: bucket i holds latencies up to STATS_MIN_MS * STATS_STEP^i
 * (the last bucket anything longer), and a percentile is reported as its
 * bucket's upper edge, at most 1% above the true value.
 */
#define STATS_BUCKETS 2000
#define STATS_STEP 1.01
#define STATS_MIN_MS 0.001

static long printed;
static struct {
	int on;
	long requests, orders, transactions;
	long count[STATS_BUCKETS];
} stats;

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = {
		"[-b N] [-k KEY] [--stats] SKU QUANTITY",
		"[-b N] [--max-line BYTES] [--stats] < requests.jsonl",
		NULL,
	};
	static const struct usage_option options[] = {
		{ "-b, --batch N", "requests per transaction at most, 1 to 10000 (default 1000)" },
		{ "-k, --key KEY", "the idempotency key of the order on the command line" },
		{ "--max-line BYTES", "the longest input line taken (default 1048576)" },
		{ "--stats", "at the end, counts and commit latencies on stderr" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

static void
stats_add(double ms)
{
	long i = ms <= STATS_MIN_MS ? 0 : lround(ceil(log(ms / STATS_MIN_MS) / log(STATS_STEP)));

	stats.count[i < STATS_BUCKETS ? i : STATS_BUCKETS - 1]++;
	stats.transactions++;
}

/* The p-th quantile (nearest rank) in ms, rounded to the microsecond; JSON null when none. */
static cJSON *
stats_quantile(double p)
{
	long rank = lround(ceil(p * (double)stats.transactions)), seen = 0;
	int i;

	if (stats.transactions == 0)
		return cJSON_CreateNull();
	if (rank < 1)
		rank = 1;
	for (i = 0; i < STATS_BUCKETS - 1 && (seen += stats.count[i]) < rank; i++)
		;
	return cJSON_CreateNumber(round(STATS_MIN_MS * pow(STATS_STEP, i) * 1000) / 1000);
}

/* One line on stderr: what was placed, in how many transactions, how fast they committed. */
static void
stats_print(void)
{
	cJSON *o = xalloc_check(cJSON_CreateObject());

	json_add_int(o, "requests", stats.requests);
	json_add_int(o, "orders", stats.orders);
	json_add_int(o, "transactions", stats.transactions);
	cJSON_AddItemToObject(o, "commit_ms_p50", stats_quantile(0.50));
	cJSON_AddItemToObject(o, "commit_ms_p99", stats_quantile(0.99));
	jsonl_write(stderr, o);
	cJSON_Delete(o);
}

/* How order-place exits when the database did not take a batch: 69 gone, 70 refused. */
static int
exit_status(int rc)
{
	return rc == ORDERS_LOST || rc == ORDERS_LOST_BEFORE_COMMIT ? EXIT_UNAVAILABLE : EXIT_SQL;
}

/* The first words of the message that says so. */
static const char *
failure_words(int rc)
{
	return rc == ORDERS_LOST || rc == ORDERS_LOST_BEFORE_COMMIT ? "database unavailable" :
	    "database error";
}

/*
 * orders_place, counted and timed for --stats: a batch with a valid request is
 * one transaction, timed from BEGIN sent to COMMIT acknowledged (retries after
 * a deadlock included). A batch of invalid requests alone touches no database.
 */
static int
place(PGconn *c, const struct order_request *rq, size_t n, struct order_result *res)
{
	double t0 = now_seconds();
	int rc = orders_place(c, rq, n, res), valid = 0;

	if (!stats.on || rc != ORDERS_OK)
		return rc;
	for (size_t i = 0; i < n; i++) {
		valid |= rq[i].invalid == NULL;
		stats.orders += res[i].error == NULL && !res[i].existing;
	}
	stats.requests += (long)n;
	if (valid)
		stats_add((now_seconds() - t0) * 1000);
	return rc;
}

static void
batch_init(struct batch *b, size_t cap)
{
	memset(b, 0, sizeof *b);
	b->cap = cap;
	b->obj = xcalloc(cap, sizeof *b->obj);
	b->rq = xcalloc(cap, sizeof *b->rq);
	b->res = xcalloc(cap, sizeof *b->res);
}

static void
batch_clear(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		order_result_clear(&b->res[i]);
		cJSON_Delete(b->obj[i]);
		b->obj[i] = NULL;
	}
	b->n = 0;
}

static void
batch_free(struct batch *b)
{
	batch_clear(b);
	free(b->obj);
	free(b->rq);
	free(b->res);
}

/* Read one line into the batch; returns its length, or -1 at end of input. */
static long
batch_read(struct batch *b, struct jsonl *in, int *bad)
{
	struct order_request *rq = &b->rq[b->n];
	const char *why;
	cJSON *obj;
	int rc = jsonl_next(in, &obj, &why);

	if (rc == JSONL_EOF) {
		if (ferror(in->fp))
			die(EXIT_OUTPUT, "reading standard input failed; %ld answers were printed,"
			    " all committed", printed);
		return -1;
	}
	memset(rq, 0, sizeof *rq);
	if (rc == JSONL_BAD)
		rq->invalid = why;
	/* Bytes PostgreSQL would refuse, or a \u0000 cJSON cut a string at ("k\u0000one"). */
	else if ((why = validate_json_text(in->buf, in->len)) != NULL)
		rq->invalid = why;
	else
		order_request_from_json(obj, rq);
	if (rq->invalid != NULL) {
		warn_line(in->lineno, "%s", rq->invalid);
		*bad = 1;
	}
	if (b->n == 0)
		b->first_line = in->lineno;
	b->last_line = in->lineno;
	b->obj[b->n++] = obj;
	return (long)in->len;
}

static void
batch_print(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		cJSON *o = order_result_json(&b->res[i]);

		jsonl_write(stdout, o);
		cJSON_Delete(o);
	}
	if (fflush(stdout) == EOF || ferror(stdout)) {
		char msg[160];

		snprintf(msg, sizeof msg, "the last batch (%zu requests) was committed but its"
		    " answers may not all have been written; %ld earlier answers were",
		    b->n, printed);
		out_flush(msg);
	}
	printed += (long)b->n;
}

static void
batch_place(PGconn *c, struct batch *b)
{
	int rc = place(c, b->rq, b->n, b->res);

	if (rc == ORDERS_OK)
		return;
	PQfinish(c);
	die(exit_status(rc), "%s: %ld answers printed, all committed;"
	    " the batch of lines %ld-%ld was %s and none of it was printed",
	    failure_words(rc), printed, b->first_line, b->last_line,
	    rc == ORDERS_LOST ? "not confirmed committed (resend it with the same keys)"
	    : "not committed");
}

static int
place_stream(PGconn *c, size_t batch_size, size_t max_line)
{
	struct jsonl in;
	struct batch b;
	int bad = 0, eof = 0;

	jsonl_open(&in, stdin);
	in.max_line = max_line;
	batch_init(&b, batch_size);
	while (!eof) {
		long bytes = 0, got;

		/* Block for the first request, then take only what is already waiting. */
		while (b.n < b.cap && bytes < BATCH_BYTES && (b.n == 0 || jsonl_pending(&in))) {
			if ((got = batch_read(&b, &in, &bad)) < 0) {
				eof = 1;
				break;
			}
			bytes += got;
		}
		if (b.n == 0)
			break;
		batch_place(c, &b);
		batch_print(&b);
		batch_clear(&b);
	}
	batch_free(&b);
	jsonl_close(&in);
	return bad ? EXIT_BAD_INPUT : EXIT_OK;
}

/* The command-line form is checked before connecting: a bad argument is a usage error. */
static void
parse_one(struct order_request *rq, const char *sku, const char *quantity, const char *key)
{
	const char *why;
	long q;

	if (parse_long(quantity, 1, ORDER_MAX_QUANTITY, &q, &why) < 0)
		die(EXIT_USAGE, "QUANTITY \"%s\" %s (allowed 1 to %lld)", quantity, why,
		    ORDER_MAX_QUANTITY);
	memset(rq, 0, sizeof *rq);
	rq->sku = sku;
	rq->quantity = q;
	rq->has_quantity = 1;
	rq->key = key;
	if (order_request_check(rq) < 0)
		die(EXIT_USAGE, "%s", rq->invalid);
}

static int
place_one(PGconn *c, const struct order_request *rq)
{
	struct order_result res;
	int rc = place(c, rq, 1, &res);
	cJSON *o;

	if (rc != ORDERS_OK) {
		PQfinish(c);	/* nothing of it stays for the sanitizers' leak check */
		die(exit_status(rc), "%s: the order was not placed", failure_words(rc));
	}
	o = order_result_json(&res);
	jsonl_write(stdout, o);
	cJSON_Delete(o);
	order_result_clear(&res);
	out_flush("the order's transaction was committed");
	return EXIT_OK;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "batch", required_argument, NULL, 'b' },
		{ "key", required_argument, NULL, 'k' },
		{ "stats", no_argument, NULL, 'S' },
		{ "max-line", required_argument, NULL, 'M' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct order_request one;
	const char *key = NULL;
	long batch_size = BATCH_DEFAULT;
	size_t max_line = JSONL_MAX_LINE_DEFAULT;
	PGconn *c;
	int ch, rc;

	log_init(argv[0]);
	while ((ch = getopt_long(argc, argv, "b:k:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'b': batch_size = option_long("-b", optarg, 1, BATCH_MAX); break;
		case 'k': key = optarg; break;
		case 'S': stats.on = 1; break;
		case 'M':
			max_line = (size_t)option_long("--max-line", optarg, 1024, JSONL_MAX_LINE_LIMIT);
			break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 0 && argc != 2)
		usage(stderr, EXIT_USAGE);
	if (argc == 0 && key != NULL) {
		warning("-k applies to the SKU QUANTITY form; on stdin give \"key\" per request");
		usage(stderr, EXIT_USAGE);
	}
	if (argc == 2)
		parse_one(&one, argv[0], argv[1], key);
	/* A closed output pipe is an error to report (exit 74), not a silent death. */
	signal(SIGPIPE, SIG_IGN);
	c = db_connect_or_die("no order was placed");
	if ((rc = orders_prepare(c)) != ORDERS_OK) {
		PQfinish(c);
		die(exit_status(rc), "%s: no order was placed", failure_words(rc));
	}
	rc = argc == 2 ? place_one(c, &one) : place_stream(c, (size_t)batch_size, max_line);
	PQfinish(c);
	if (stats.on)
		stats_print();
	return rc;
}
