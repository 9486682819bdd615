/* fulfil: ask each pending order's vendor to fulfil it, record the outcome, and answer one line per order. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/config.h"
#include "lib/db.h"
#include "lib/http.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/num.h"
#include "lib/policy.h"
#include "lib/retry.h"
#include "lib/xalloc.h"

/*
 * Lines already waiting on stdin are taken as one batch: their orders are
 * looked up in one query, the pending ones' vendors are called in parallel
 * over one curl multi handle (whose connection cache keeps connections
 * alive between batches), and every outcome is committed in one
 * transaction. Each change is guarded by status = 'pending', so a duplicate
 * delivery, here or in another fulfil, changes nothing twice; a guarded
 * change that finds the order no longer pending answers its current status
 * instead.
 * Answers are written in input order only after the commit.
 *
 * Two threads, each with its own database connection, overlap consecutive
 * batches: the main thread reads, looks up and calls the vendors of batch
 * k+1 while the committer commits batch k and writes its answers. The
 * committer takes one batch at a time, so commits and answers keep input
 * order; a batch that names an order of the batch being committed waits for
 * that commit before looking anything up, so it sees the outcome.
 */

#define BATCH_MAX 256
#define REDO_MAX 5		/* times a batch is redone after a deadlock or a lost connection */
#define ORDER_ID_MAX 9007199254740991LL

enum verdict { V_NONE, V_SUCCESS, V_FAILED, V_RETRY };

struct job {
	long lineno;
	long long id;
	const char *bad;	/* why the line is not an order message (static), or NULL */
	/* the order, as the database has it */
	int found;
	char status[16];
	char *sku, *vendor, *reason;
	long long quantity;
	long attempts;
	/* the vendor's answer */
	struct slot *slot;
	enum http_outcome outcome;
	long http_status;
	char why[CURL_ERROR_SIZE + 32];
	/* what is committed and answered */
	enum verdict verdict;
	char *answer_reason, *answer_error;
	long answer_attempts;
};

/*
 * One vendor call in flight: its handle is set up once and kept, with its
 * connection and buffers, for the calls of later batches.
 */
struct slot {
	CURL *h;
	struct http_resp resp;
	char *vendor;		/* whose URL the handle has */
	char body[512 + 64];
	struct job *job;
};

/* A database connection and why its last statement failed. */
struct dbc {
	PGconn *conn;
	struct db_failure failure;
	struct buf ids;		/* the bigint[] parameter of a batch's statements, reused */
};

/* A batch and its lines' jobs. */
struct batch {
	struct job jobs[BATCH_MAX];
	size_t n;
};

static struct {
	const char *base;
	long max_attempts;
	struct http_limits lim;
	struct dbc look;	/* the main thread's: lookups */
	struct dbc keep;	/* the committer's: changes */
	struct http_loop loop;
	struct slot pool[BATCH_MAX];
	atomic_long answered;
	atomic_int bad_lines;
	/* the hand-off to the committer: one batch at a time */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct batch *handed;	/* given and not yet answered, or NULL */
	int closing;		/* no more batches will come */
} st = {
	.max_attempts = 5,
	.lim = { .timeout = 10, .connect_timeout = 5, .max_bytes = 1 << 20 },
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.cv = PTHREAD_COND_INITIALIZER,
};

/*
 * The two statements every batch runs are prepared once per connection with
 * generic plans (db_prepare): a plan made for a batch's many ids could scan
 * the whole table while it was small. Joining unnest() keeps the lookup per
 * id in the primary key.
 */
static const char *const LOOKUP =
	"SELECT o.id, o.status, o.sku, o.vendor, o.quantity, o.attempts, o.reason"
	" FROM unnest($1::bigint[]) AS u(id) JOIN orders o ON o.id = u.id";

static const char *const MARK_SUCCESS =
	"UPDATE orders SET status = 'success', reason = NULL, fulfilled_at = now(),"
	" updated_at = now(), attempts = attempts + 1"
	" WHERE id = $1 AND status = 'pending' RETURNING attempts";

/* Every success of a batch in one statement: successes are the common case. */
static const char *const MARK_SUCCESSES =
	"UPDATE orders o SET status = 'success', reason = NULL, fulfilled_at = now(),"
	" updated_at = now(), attempts = o.attempts + 1"
	" FROM unnest($1::bigint[]) AS u(id)"
	" WHERE o.id = u.id AND o.status = 'pending' RETURNING o.id, o.attempts";

/* The release happens only if this statement is what failed the order. */
static const char *const MARK_FAILED =
	"WITH o AS (UPDATE orders SET status = 'failed', reason = $2, updated_at = now(),"
	"   attempts = attempts + 1"
	"   WHERE id = $1 AND status = 'pending' RETURNING sku, vendor, quantity, attempts),"
	" r AS (UPDATE vendor_stock v SET reserved = v.reserved - o.quantity"
	"   FROM o WHERE v.sku = o.sku AND v.vendor = o.vendor RETURNING 1)"
	" SELECT attempts FROM o";

static const char *const MARK_RETRY =
	"UPDATE orders SET attempts = attempts + 1, reason = $2, updated_at = now()"
	" WHERE id = $1 AND status = 'pending' RETURNING attempts";

static const char *const CURRENT =
	"SELECT status, reason FROM orders WHERE id = $1";

static void
usage(FILE *fp, int code)
{
	fprintf(fp, "usage: %s [--max-attempts N] [--timeout S] [--base URL]\n", progname);
	exit(code);
}

/* --- the database ------------------------------------------------------------- */

/*
 * Every statement below fails the same way: NULL (or -1), with d->failure
 * saying why, so recover() can tell a deadlock or a lost connection from a bug.
 */

/* Connect, and prepare the statements of every batch. */
static void
connect_db(struct dbc *d, const char *not_done)
{
	static const struct db_statement stmts[] = {
		{ "lookup", LOOKUP }, { "successes", MARK_SUCCESSES },
	};

	d->conn = db_connect_or_die(not_done);
	if (db_prepare(d->conn, stmts, sizeof stmts / sizeof stmts[0], &d->failure) < 0)
		db_die(&d->failure, "database: cannot prepare statements; %s", not_done);
}

static void
job_forget(struct job *j)
{
	free(j->sku);
	free(j->vendor);
	free(j->reason);
	free(j->answer_reason);
	free(j->answer_error);
	j->sku = j->vendor = j->reason = j->answer_reason = j->answer_error = NULL;
	j->found = 0;
	j->verdict = V_NONE;
}

static struct job *
job_by_id(struct job *jobs, size_t n, long long id)
{
	for (size_t i = 0; i < n; i++)
		if (jobs[i].bad == NULL && jobs[i].id == id)
			return &jobs[i];
	return NULL;
}

static int
is_order(const struct job *j)
{
	return j->bad == NULL;
}

static int
is_success(const struct job *j)
{
	return j->verdict == V_SUCCESS;
}

/*
 * The ids of the jobs that want, as a bigint[] literal in d's buffer; NULL
 * when there is none.
 */
static const char *
id_array(struct dbc *d, const struct job *jobs, size_t n, int (*want)(const struct job *))
{
	size_t k = 0;

	db_array_begin(&d->ids);
	for (size_t i = 0; i < n; i++)
		if (want(&jobs[i])) {
			db_array_bigint(&d->ids, jobs[i].id);
			k++;
		}
	return k > 0 ? db_array_end(&d->ids) : NULL;
}

/* One query for every order of the batch. */
static int
lookup(struct job *jobs, size_t n)
{
	const char *ids = id_array(&st.look, jobs, n, is_order);
	PGresult *r;

	if (ids == NULL)
		return 0;
	r = db_run_prepared(st.look.conn, &st.look.failure, "looking up the orders", "lookup", 1,
	    (const char *[]){ ids });
	if (r == NULL)
		return -1;
	for (int row = 0; row < PQntuples(r); row++) {
		struct job *j = job_by_id(jobs, n, strtoll(PQgetvalue(r, row, 0), NULL, 10));

		j->found = 1;
		snprintf(j->status, sizeof j->status, "%s", PQgetvalue(r, row, 1));
		j->sku = xstrdup(PQgetvalue(r, row, 2));
		j->vendor = xstrdup(PQgetvalue(r, row, 3));
		j->quantity = strtoll(PQgetvalue(r, row, 4), NULL, 10);
		j->attempts = strtol(PQgetvalue(r, row, 5), NULL, 10);
		j->reason = PQgetisnull(r, row, 6) ? NULL : xstrdup(PQgetvalue(r, row, 6));
	}
	PQclear(r);
	return 0;
}

/* --- the vendors ---------------------------------------------------------------- */

static int
wants_call(const struct job *j)
{
	return j->bad == NULL && j->found && strcmp(j->status, "pending") == 0;
}

/* Point the slot at the order's vendor; a handle is set up once, on its first use. */
static void
slot_aim(struct slot *sl, const char *vendor)
{
	char *url;

	if (sl->h != NULL && strcmp(sl->vendor, vendor) == 0) {
		http_resp_reset(&sl->resp);
		return;
	}
	url = xalloc_check(http_vendor_url(st.base, vendor, "orders"));
	if (sl->h == NULL) {
		sl->h = xalloc_check(curl_easy_init());
		http_resp_init(&sl->resp, st.lim.max_bytes);
		curl_easy_setopt(sl->h, CURLOPT_PRIVATE, sl);
	}
	if (http_prepare(sl->h, url, &st.lim, &sl->resp) < 0)
		die(EXIT_BUG, "vendor %s: %s", vendor, sl->resp.err);
	free(sl->vendor);
	sl->vendor = xstrdup(vendor);
	free(url);
}

static void
call_start(struct job *j, struct slot *sl)
{
	cJSON *o = xalloc_check(cJSON_CreateObject());

	json_add_int(o, "order_id", j->id);
	cJSON_AddStringToObject(o, "sku", j->sku);
	json_add_int(o, "quantity", j->quantity);
	if (!cJSON_PrintPreallocated(o, sl->body, sizeof sl->body, 0))
		die(EXIT_BUG, "order %lld: cannot format the vendor request", j->id);
	cJSON_Delete(o);
	slot_aim(sl, j->vendor);
	if (http_post_json(sl->h, &sl->resp, sl->body, strlen(sl->body)) < 0)
		die(EXIT_BUG, "order %lld: %s", j->id, sl->resp.err);
	j->slot = sl;
	sl->job = j;
	http_loop_add(&st.loop, sl->h);
	debugx("order %lld: POST to vendor %s", j->id, j->vendor);
}

static void
call_done(CURL *h, CURLcode rc, void *arg)
{
	struct slot *sl;
	struct job *j;

	(void)arg;
	curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&sl);
	j = sl->job;
	j->outcome = http_result(h, rc, &sl->resp, &j->http_status, j->why, sizeof j->why);
	debugx("order %lld: %s", j->id, j->outcome == HTTP_OK ? "accepted" : j->why);
}

/* Every pending order's vendor, all at once; each job gets its outcome. */
static void
call_vendors(struct job *jobs, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		if (wants_call(&jobs[i]))
			call_start(&jobs[i], &st.pool[k++]);
	if (k > 0)
		http_loop_run(&st.loop, call_done, NULL);
}

/* The vendor's own word for a refusal ({"error":"insufficient_stock"}), if it gave one. */
static char *
refusal_reason(const struct job *j)
{
	const struct buf *body = &j->slot->resp.body;
	cJSON *b = cJSON_ParseWithLength(body->data ? body->data : "", body->len);
	const char *e = json_string(b, "error");
	char buf[64];
	char *r;

	/* It is stored and echoed: take it only if it looks like a reason code. */
	if (e == NULL || *e == '\0' || strlen(e) > 64 || e[strspn(e,
	    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")] != '\0') {
		snprintf(buf, sizeof buf, "vendor_refused_%ld", j->http_status);
		e = buf;
	}
	r = xstrdup(e);
	cJSON_Delete(b);
	return r;
}

/* What the vendor's answer means for the order. */
static void
judge(struct job *j)
{
	if (j->outcome == HTTP_OK) {
		j->verdict = V_SUCCESS;
		return;
	}
	/* A 4xx is the vendor's considered refusal; anything else may pass. */
	if (j->http_status >= 400 && j->http_status < 500 && j->outcome == HTTP_PERMANENT) {
		j->verdict = V_FAILED;
		j->answer_reason = refusal_reason(j);
		j->answer_error = xstrdup(j->why);
		return;
	}
	j->answer_error = xstrdup(j->why);
	if (j->attempts + 1 >= st.max_attempts) {
		j->verdict = V_FAILED;
		j->answer_reason = xstrdup("vendor_unavailable");
	} else {
		j->verdict = V_RETRY;
		j->answer_reason = xstrdup(j->why);
	}
}

/* --- committing ----------------------------------------------------------------- */

/* The guarded change found the order no longer pending: answer what it is now. */
static int
decided_elsewhere(struct job *j, const char *id)
{
	PGresult *r = db_run(st.keep.conn, &st.keep.failure, "reading the order's status", CURRENT,
	    1, (const char *[]){ id });

	if (r == NULL)
		return -1;
	free(j->answer_reason);
	free(j->answer_error);
	j->answer_reason = j->answer_error = NULL;
	j->verdict = V_NONE;
	if (PQntuples(r) == 1) {
		snprintf(j->status, sizeof j->status, "%s", PQgetvalue(r, 0, 0));
		free(j->reason);
		j->reason = PQgetisnull(r, 0, 1) ? NULL : xstrdup(PQgetvalue(r, 0, 1));
	}
	PQclear(r);
	return 0;
}

static int
record(struct job *j)
{
	const char *sql[] = { NULL, MARK_SUCCESS, MARK_FAILED, MARK_RETRY };
	char id[24];
	const char *params[2] = { id, j->answer_reason };
	PGresult *r;
	int changed;

	snprintf(id, sizeof id, "%lld", j->id);
	r = db_run(st.keep.conn, &st.keep.failure, "recording the vendor's answer", sql[j->verdict],
	    j->verdict == V_SUCCESS ? 1 : 2, params);
	if (r == NULL)
		return -1;
	changed = PQntuples(r) == 1;
	if (changed)
		j->answer_attempts = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return changed ? 0 : decided_elsewhere(j, id);
}

/*
 * Record the batch's successes in one statement; a success whose order was
 * no longer pending (a duplicate fulfil won) answers what the order is now.
 */
static int
record_successes(struct job *jobs, size_t n)
{
	const char *ids = id_array(&st.keep, jobs, n, is_success);
	char id[24];
	PGresult *r;

	if (ids == NULL)
		return 0;
	r = db_run_prepared(st.keep.conn, &st.keep.failure, "recording the vendors' acceptances",
	    "successes", 1, (const char *[]){ ids });
	if (r == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (jobs[i].verdict == V_SUCCESS)
			jobs[i].answer_attempts = -1;
	for (int row = 0; row < PQntuples(r); row++) {
		long long oid = strtoll(PQgetvalue(r, row, 0), NULL, 10);

		for (size_t i = 0; i < n; i++)
			if (jobs[i].verdict == V_SUCCESS && jobs[i].bad == NULL && jobs[i].id == oid)
				jobs[i].answer_attempts = strtol(PQgetvalue(r, row, 1), NULL, 10);
	}
	PQclear(r);
	for (size_t i = 0; i < n; i++) {
		if (jobs[i].verdict != V_SUCCESS || jobs[i].answer_attempts >= 0)
			continue;
		snprintf(id, sizeof id, "%lld", jobs[i].id);
		if (decided_elsewhere(&jobs[i], id) < 0)
			return -1;
	}
	return 0;
}

static int
commit_batch(struct job *jobs, size_t n)
{
	if (db_command(st.keep.conn, &st.keep.failure, "beginning the batch", "BEGIN", 0, NULL) < 0)
		return -1;
	if (record_successes(jobs, n) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (jobs[i].verdict == V_NONE || jobs[i].verdict == V_SUCCESS)
			continue;
		if (record(&jobs[i]) < 0)
			return -1;
	}
	return db_command(st.keep.conn, &st.keep.failure, "committing the batch", "COMMIT", 0,
	    NULL);
}

/* Every answer written so far was committed; what the lines not answered name was not changed. */
static const char *
not_done(void)
{
	static _Thread_local char buf[160];

	snprintf(buf, sizeof buf, "%ld answer(s) written before were committed; the orders of "
	    "the lines not answered were not changed", atomic_load(&st.answered));
	return buf;
}

static void wait_committed(void);

/*
 * After the statement d->failure describes: a lost connection or a deadlock
 * (db_retryable) costs a redo, after a backoff; any other error is a bug.
 * The main thread first lets the committer finish, so what not_done() says
 * holds if it gives up; the exit status follows the last failure.
 */
static void
recover(struct dbc *d, size_t n, int redo, struct backoff *b)
{
	const struct db_failure *f = &d->failure;

	db_warn(f);
	if (d == &st.look)
		wait_committed();
	if (!f->lost && !f->retryable)
		die(EXIT_SQL, "database: stopped on an unexpected error; %s", not_done());
	if (redo >= REDO_MAX)
		die(db_exit_status(f), "database: gave up after %d tries; %s", redo, not_done());
	if (!f->lost) {
		PQclear(PQexec(d->conn, "ROLLBACK"));
		sleep_seconds(backoff_next(b), NULL);
		return;
	}
	PQfinish(d->conn);
	connect_db(d, not_done());
	warning("database: reconnected; redoing the batch of %zu line(s)", n);
}

/* --- answers -------------------------------------------------------------------- */

static cJSON *
answer(const struct job *j)
{
	cJSON *a = xalloc_check(cJSON_CreateObject());

	if (j->bad != NULL) {
		cJSON_AddStringToObject(a, "status", "failed");
		cJSON_AddStringToObject(a, "reason", "invalid_message");
		cJSON_AddStringToObject(a, "error", j->bad);
		json_add_int(a, "line", j->lineno);
		return a;
	}
	json_add_int(a, "order_id", j->id);
	if (!j->found) {
		cJSON_AddStringToObject(a, "status", "failed");
		cJSON_AddStringToObject(a, "reason", "unknown_order");
		return a;
	}
	if (j->verdict == V_NONE) {
		cJSON_AddStringToObject(a, "status", j->status);
		if (j->reason != NULL && strcmp(j->status, "failed") == 0)
			cJSON_AddStringToObject(a, "reason", j->reason);
		return a;
	}
	cJSON_AddStringToObject(a, "status", j->verdict == V_SUCCESS ? "success" :
	    j->verdict == V_FAILED ? "failed" : "retry");
	if (j->answer_reason != NULL)
		cJSON_AddStringToObject(a, "reason", j->answer_reason);
	if (j->answer_error != NULL && j->verdict == V_FAILED)
		cJSON_AddStringToObject(a, "error", j->answer_error);
	json_add_int(a, "attempts", j->answer_attempts);
	return a;
}

static void
write_answers(struct job *jobs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		cJSON *a = answer(&jobs[i]);

		if (jobs[i].bad == NULL && !jobs[i].found) {
			warn_line(jobs[i].lineno, "order %lld does not exist", jobs[i].id);
			atomic_fetch_add(&st.bad_lines, 1);
		}
		if (jsonl_write(stdout, a) < 0)
			out_flush("every answered order's change was committed");
		cJSON_Delete(a);
		atomic_fetch_add(&st.answered, 1);
	}
	out_flush("every answered order's change was committed");
}

/* --- the two threads ------------------------------------------------------------ */

/*
 * The committer: commit each batch handed to it (a redo repeats only the
 * changes: the vendors' answers stand, and every change is guarded), then
 * answer it.
 */
static void *
committer(void *arg)
{
	struct backoff retry;

	(void)arg;
	pthread_mutex_lock(&st.mu);
	for (;;) {
		struct batch *b;

		while (st.handed == NULL && !st.closing)
			pthread_cond_wait(&st.cv, &st.mu);
		if ((b = st.handed) == NULL)
			break;
		pthread_mutex_unlock(&st.mu);
		retry = (struct backoff)BACKOFF_DB_RETRY;
		for (int redo = 0; commit_batch(b->jobs, b->n) < 0; redo++)
			recover(&st.keep, b->n, redo + 1, &retry);
		write_answers(b->jobs, b->n);
		for (size_t i = 0; i < b->n; i++)
			job_forget(&b->jobs[i]);
		pthread_mutex_lock(&st.mu);
		st.handed = NULL;
		pthread_cond_broadcast(&st.cv);
	}
	pthread_mutex_unlock(&st.mu);
	return NULL;
}

/* Wait until the batch handed to the committer is committed and answered. */
static void
wait_committed(void)
{
	pthread_mutex_lock(&st.mu);
	while (st.handed != NULL)
		pthread_cond_wait(&st.cv, &st.mu);
	pthread_mutex_unlock(&st.mu);
}

static void
hand_over(struct batch *b)
{
	wait_committed();
	pthread_mutex_lock(&st.mu);
	st.handed = b;
	pthread_cond_broadcast(&st.cv);
	pthread_mutex_unlock(&st.mu);
}

/* Does b name an order of the batch being committed? (Only the main thread hands over.) */
static int
overlaps_handed(const struct batch *b)
{
	const struct batch *h;

	pthread_mutex_lock(&st.mu);
	h = st.handed;
	pthread_mutex_unlock(&st.mu);
	if (h == NULL)
		return 0;
	/* The committer changes neither id nor bad, and b is not its batch. */
	for (size_t i = 0; i < b->n; i++)
		for (size_t j = 0; j < h->n && b->jobs[i].bad == NULL; j++)
			if (h->jobs[j].bad == NULL && h->jobs[j].id == b->jobs[i].id)
				return 1;
	return 0;
}

/* The main thread's part of a batch: look up, call, judge; then hand it over. */
static void
process(struct batch *b)
{
	struct backoff retry = BACKOFF_DB_RETRY;

	if (overlaps_handed(b))
		wait_committed();
	for (int redo = 0; lookup(b->jobs, b->n) < 0; redo++) {
		recover(&st.look, b->n, redo + 1, &retry);
		for (size_t i = 0; i < b->n; i++)
			job_forget(&b->jobs[i]);
	}
	call_vendors(b->jobs, b->n);
	for (size_t i = 0; i < b->n; i++)
		if (wants_call(&b->jobs[i]))
			judge(&b->jobs[i]);
	hand_over(b);
}

/* --- input ----------------------------------------------------------------------- */

enum { GOT_NONE, GOT_JOB };

/* The next line as a job; GOT_NONE at the end of input. */
static int
next_job(struct jsonl *rd, struct job *j)
{
	const char *why = NULL;
	long long id;
	cJSON *o;
	int rc = jsonl_next(rd, &o, &why);

	if (rc == JSONL_EOF)
		return GOT_NONE;
	memset(j, 0, sizeof *j);
	j->lineno = rd->lineno;
	if (rc == JSONL_BAD)
		j->bad = why;
	else if (json_int(o, "order_id", 1, ORDER_ID_MAX, &id) < 0)
		j->bad = "\"order_id\" must be a positive integer";
	else
		j->id = id;
	if (j->bad != NULL) {
		warn_line(j->lineno, "%s", j->bad);
		st.bad_lines++;
	}
	cJSON_Delete(o);
	return GOT_JOB;
}

/*
 * Batches hold only lines that were already waiting, so an answer is never
 * held back for input that has not come. A second line for an order of the
 * batch starts the next batch: it must see the first one's outcome.
 */
static void
read_batches(void)
{
	static struct batch two[2];
	struct jsonl rd;
	struct job carry;
	int have_carry = 0, eof = 0;

	jsonl_open(&rd, stdin);
	for (int k = 0; !eof; k ^= 1) {
		struct batch *b = &two[k];	/* the other one may be with the committer */
		struct job *jobs = b->jobs;
		size_t n = 0;

		if (have_carry) {
			jobs[n++] = carry;
			have_carry = 0;
		} else if (next_job(&rd, &jobs[n]) == GOT_JOB)
			n++;
		else
			break;
		while (n < BATCH_MAX && jsonl_pending(&rd)) {
			if (next_job(&rd, &carry) == GOT_NONE) {
				eof = 1;
				break;
			}
			if (carry.bad == NULL && job_by_id(jobs, n, carry.id) != NULL) {
				have_carry = 1;
				break;
			}
			jobs[n++] = carry;
		}
		b->n = n;
		process(b);
	}
	wait_committed();
	if (ferror(stdin))
		die(EXIT_OUTPUT, "reading standard input failed; %s", not_done());
	jsonl_close(&rd);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "max-attempts", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 't' },
		{ "base", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *why;
	pthread_t keeper;
	int ch;

	log_init(argv[0]);
	st.base = config_vendor_base();
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'n': st.max_attempts = option_long("--max-attempts", optarg, 1, 1000); break;
		case 't': st.lim.timeout = option_seconds("--timeout", optarg, 3600); break;
		case 'b': st.base = optarg; break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': puts(OA_VERSION); return 0;
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (optind != argc)
		usage(stderr, EXIT_USAGE);
	if (st.lim.timeout < 0.001)
		die(EXIT_USAGE, "option --timeout: must be more than 0 seconds");
	if (st.lim.connect_timeout > st.lim.timeout)
		st.lim.connect_timeout = st.lim.timeout;
	if (st.base == NULL) {
		warning("no vendor URL: give --base or set VENDOR_BASE_URL");
		usage(stderr, EXIT_USAGE);
	}
	if (http_url_check(st.base, &why) < 0) {
		char *shown = config_redact_url(st.base);

		warning("base URL \"%s\" %s", shown, why);
		free(shown);
		usage(stderr, EXIT_USAGE);
	}
	signal(SIGPIPE, SIG_IGN);
	http_global_init();
	http_loop_init(&st.loop, BATCH_MAX);
	connect_db(&st.look, "no order was read or changed");
	connect_db(&st.keep, "no order was read or changed");
	if ((errno = pthread_create(&keeper, NULL, committer, NULL)) != 0)
		die(EXIT_NOMEM, "cannot start a thread: %s", strerror(errno));
	read_batches();
	pthread_mutex_lock(&st.mu);
	st.closing = 1;
	pthread_cond_broadcast(&st.cv);
	pthread_mutex_unlock(&st.mu);
	pthread_join(keeper, NULL);
	PQfinish(st.look.conn);
	PQfinish(st.keep.conn);
	buf_free(&st.look.ids);
	buf_free(&st.keep.ids);
	for (size_t i = 0; i < BATCH_MAX; i++) {
		curl_easy_cleanup(st.pool[i].h);
		http_resp_free(&st.pool[i].resp);
		free(st.pool[i].vendor);
	}
	http_loop_free(&st.loop);
	http_global_cleanup();
	return atomic_load(&st.bad_lines) ? EXIT_BAD_INPUT : EXIT_OK;
}
