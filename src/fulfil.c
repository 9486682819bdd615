/* fulfil: ask each pending order's vendor to fulfil it, record the outcome, and answer one line per order. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/config.h"
#include "lib/db.h"
#include "lib/hash.h"
#include "lib/http.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/num.h"
#include "lib/policy.h"
#include "lib/retry.h"
#include "lib/vendor_answer.h"
#include "lib/xalloc.h"

/*
 * Each order is answered when its own vendor call ends: nothing waits for
 * another order's vendor.
 *
 * The main thread reads the lines already waiting, looks their orders up in
 * one query, and starts each pending order's vendor call at once over one
 * curl multi handle (whose connection cache keeps connections alive), as
 * long as the order's vendor has a free slot: a vendor has at most
 * --vendor-calls calls in flight, so a slow one cannot take every slot. An
 * order whose vendor's share is full waits for a slot up to --defer-after
 * seconds, then is answered "defer" (amqp-consume brings it back later
 * without counting an attempt), so a slow vendor's orders never hold the
 * consumer's prefetch for the others.
 *
 * Finished orders (the vendor answered, or there was nothing to do) go to the
 * committer thread, which has its own database connection: whatever finished
 * while its last commit ran is committed in one transaction (group commit),
 * each change guarded by status = 'pending', so a duplicate delivery, here or
 * in another fulfil, changes nothing twice; a guarded change that finds the
 * order no longer pending answers its current status instead. A failed commit
 * is redone alone: the vendors' answers stand. Answers are written after their
 * commit: as they come with OA_MATCH=order_id (amqp-consume --match order_id),
 * else in input order.
 *
 * A line naming an order that an earlier line still has in hand (looked up,
 * at its vendor, or not yet committed) waits until that one is committed and
 * answered, then is looked up: it sees the outcome.
 *
 * With OA_MATCH, a line whose vendor call (or wait for one) has lasted
 * --park-after seconds is marked "park" at once, and so is every later line
 * for a vendor that has such a call: amqp-consume takes such a message off
 * its channel (a copy to the retry queue) if it holds up the acks of others.
 * The copy, when it comes back, is looked up like any line: it finds the
 * order decided, or still in hand (and waits), or pending (and is called).
 */

#define JOB_MAX (2 * FULFIL_CALLS_MAX)	/* lines in hand at once */
/*
 * While vendors' answers keep the loop busy, lines read are looked up once
 * this many have gathered (a lookup is a round trip); as soon as the loop
 * has nothing else to do, at once.
 */
#define LOOKUP_GATHER 64
#define REDO_MAX 5		/* times a commit is redone after a deadlock or a lost connection */
#define ORDER_ID_MAX 9007199254740991LL
/* A call is slow past --park-after and PARK_TIMES the median of the last PARK_SAMPLE calls. */
#define PARK_SAMPLE 256
/*
 * A slow vendor's calls go on a curl multi handle of their own, stepped this
 * often: libcurl visits every transfer of a handle at each step, and the
 * main loop turns thousands of times a second.
 */
#define SLOW_STEP 0.01
#define PARK_TIMES 4

enum verdict { V_NONE, V_SUCCESS, V_FAILED, V_RETRY, V_DEAD, V_DEFER };

/* Where a line is, as the main thread sees it. */
enum stage {
	S_FREE,		/* not in use */
	S_HELD,		/* its order is in hand for an earlier line */
	S_NEW,		/* read, to be looked up */
	S_WAIT,		/* pending, waiting for a slot of its vendor's */
	S_CALL,		/* at its vendor */
	S_DONE,		/* finished, to be committed */
	S_COMMIT	/* with the committer until it is answered */
};

struct job {
	long long seq;		/* input order */
	long lineno;
	long long id;
	const char *bad;	/* why the line is not an order message (static), or NULL */
	enum stage stage;
	struct job *next;	/* in its stage's list */
	int committed;		/* the committer's, under st.mu */
	/* the order, as the database has it */
	int found;
	char status[16];
	char *sku, *vendor, *reason;
	long long quantity;
	long attempts;
	/* the vendor's answer */
	size_t vi;		/* its vendor (st.vendors) */
	double waiting_since;	/* in S_WAIT: since when; in S_CALL: when the call started */
	int parked;		/* marked "park" (OA_MATCH) */
	struct slot *slot;
	enum http_outcome outcome;
	long http_status;
	char why[CURL_ERROR_SIZE + 32];
	/* what is committed and answered */
	enum verdict verdict;
	char *answer_reason, *answer_error;
	long answer_attempts;
};

struct jlist {
	struct job *head, *tail;
	size_t n;
};

/*
 * One vendor call in flight: its handle is set up once and kept, with its
 * buffers, for later calls.
 */
struct slot {
	CURL *h;
	struct http_resp resp;
	char *vendor;		/* whose URL the handle has */
	char body[512 + 64];
	struct job *job;
	struct slot *next_free;
};

/* A vendor seen in an order: its calls in flight and its orders waiting for a slot. */
struct vendor {
	char *name;
	long calls;
	int slow;		/* has had a call or a wait last --park-after: its new lines are parked */
	struct jlist waiting;
};

/* A database connection and why its last statement failed. */
struct dbc {
	PGconn *conn;
	struct db_failure failure;
	struct buf ids;		/* the bigint[] parameter of a batch's statements, reused */
};

static struct {
	const char *base;
	long max_attempts, vendor_calls;
	double defer_after, park_after, db_patience, report_every;
	double next_park_scan;
	double took[PARK_SAMPLE];	/* how long the last calls took, a ring */
	size_t ntook;
	int parks_unflushed;	/* the main thread's: it wrote park lines since its last flush */
	int match;		/* OA_MATCH=order_id: answer as orders end */
	struct http_limits lim;
	struct dbc look;	/* the main thread's: lookups */
	struct dbc keep;	/* the committer's: changes */
	struct http_loop loop;
	struct http_loop slow_loop;	/* calls to slow vendors: stepped every SLOW_STEP seconds */
	double next_slow_step;
	struct slot pool[FULFIL_CALLS_MAX];
	struct slot *free_slots;
	struct job jobs[JOB_MAX];
	size_t jobs_used;	/* high-water mark of jobs[] */
	struct job *free_jobs;
	size_t live;		/* jobs not free */
	long long seq;
	struct vendor *vendors;
	size_t n_vendors, cap_vendors;
	struct hash vendor_index;
	struct jlist held, fresh, done;
	long waiting;		/* jobs in S_WAIT */
	atomic_long answered;
	atomic_int bad_lines;
	/* shared with the committer, under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_mutex_t out;	/* stdout: answers (committer) and park lines (main thread) */
	struct jlist handed;	/* to commit */
	int busy;		/* the committer has a batch */
	struct jlist returned;	/* answered: the main thread frees them */
	struct job *ring[JOB_MAX];	/* in-order mode: the lines in hand, in input order */
	size_t ring_head, ring_n;
	int closing;		/* no more batches will come */
} st = {
	.max_attempts = 5,
	.vendor_calls = FULFIL_VENDOR_CALLS,
	.defer_after = FULFIL_DEFER_AFTER,
	.park_after = FULFIL_PARK_AFTER,
	.db_patience = FULFIL_DB_PATIENCE,
	.report_every = WAIT_REPORT_INTERVAL,
	.lim = { .timeout = 10, .connect_timeout = 5, .max_bytes = 1 << 20 },
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.cv = PTHREAD_COND_INITIALIZER,
	.out = PTHREAD_MUTEX_INITIALIZER,
	.vendor_index = HASH_MAP,
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

/* A retry, and a dead letter: the order stays pending and reserved. */
static const char *const MARK_RETRY =
	"UPDATE orders SET attempts = attempts + 1, reason = $2, updated_at = now()"
	" WHERE id = $1 AND status = 'pending' RETURNING attempts";

static const char *const CURRENT =
	"SELECT status, reason FROM orders WHERE id = $1";

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = {
		"[--max-attempts N] [--timeout S] [--base URL]\n"
		"[--vendor-calls N] [--defer-after S] [--park-after S] [--db-patience S]",
		NULL,
	};
	static const struct usage_option options[] = {
		{ "--max-attempts N", "an order's attempts before it is failed (default 5)" },
		{ "--timeout S", "give up a vendor request after S seconds (default 10)" },
		{ "--base URL", "the vendors' base URL (overrides VENDOR_BASE_URL)" },
		{ "--vendor-calls N", "a vendor's share of the 512 calls in flight (default 256)" },
		{ "--defer-after S", "seconds an order waits for its vendor's slot before \"defer\" (default 1)" },
		{ "--park-after S", "with OA_MATCH: a call this long (and 4x the median) is marked \"park\" (default 0.05; 0: never)" },
		{ "--db-patience S", "seconds to keep trying the database before exit 69 (default 90)" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

/* --- lists ---------------------------------------------------------------------- */

static void
jl_push(struct jlist *l, struct job *j)
{
	j->next = NULL;
	if (l->tail != NULL)
		l->tail->next = j;
	else
		l->head = j;
	l->tail = j;
	l->n++;
}

static struct job *
jl_pop(struct jlist *l)
{
	struct job *j = l->head;

	if (j != NULL) {
		l->head = j->next;
		if (l->head == NULL)
			l->tail = NULL;
		l->n--;
		j->next = NULL;
	}
	return j;
}

/* Append all of b to a; b is left empty. */
static void
jl_splice(struct jlist *a, struct jlist *b)
{
	if (b->head == NULL)
		return;
	if (a->tail != NULL)
		a->tail->next = b->head;
	else
		a->head = b->head;
	a->tail = b->tail;
	a->n += b->n;
	*b = (struct jlist){ 0 };
}

/* --- the database ------------------------------------------------------------- */

/*
 * Every statement below fails the same way: NULL (or -1), with d->failure
 * saying why, so recover() can tell a deadlock or a lost connection from a bug.
 */

/*
 * Connect within --db-patience. Waiting says so when it starts and then
 * every WAIT_REPORT_INTERVAL seconds (db_connect warns as each try gives up).
 */
static PGconn *
connect_patiently(const char *not_done)
{
	double t0 = now_seconds();
	PGconn *c = db_connect(0);
	int waited = c == NULL;

	while (c == NULL) {
		double left = t0 + st.db_patience - now_seconds();

		if (left <= 0)
			die(EXIT_UNAVAILABLE, "database unavailable for %g s (--db-patience); %s",
			    st.db_patience, not_done);
		warning("database: waiting for it, %.0f s more at most (--db-patience %g)",
		    ceil(left), st.db_patience);
		c = db_connect(left < st.report_every ? left : st.report_every);
	}
	if (waited)
		warning("database: connected after %.1f s", now_seconds() - t0);
	return c;
}

/* Connect, and prepare the statements of every batch. */
static void
connect_db(struct dbc *d, const char *not_done)
{
	static const struct db_statement stmts[] = {
		{ "lookup", LOOKUP }, { "successes", MARK_SUCCESSES },
	};

	d->conn = connect_patiently(not_done);
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
	j->parked = 0;
}

static struct job *
job_in(const struct jlist *l, long long id)
{
	for (struct job *j = l->head; j != NULL; j = j->next)
		if (j->bad == NULL && j->id == id)
			return j;
	return NULL;
}

/* The ids of l's jobs that want, as a bigint[] literal in d's buffer; NULL when there is none. */
static const char *
id_array(struct dbc *d, const struct jlist *l, int (*want)(const struct job *))
{
	size_t k = 0;

	db_array_begin(&d->ids);
	for (const struct job *j = l->head; j != NULL; j = j->next)
		if (want(j)) {
			db_array_bigint(&d->ids, j->id);
			k++;
		}
	return k > 0 ? db_array_end(&d->ids) : NULL;
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

/* One query for every order of the list. */
static int
lookup(const struct jlist *l)
{
	const char *ids = id_array(&st.look, l, is_order);
	PGresult *r;

	if (ids == NULL)
		return 0;
	r = db_run_prepared(st.look.conn, &st.look.failure, "looking up the orders", "lookup", 1,
	    (const char *[]){ ids });
	if (r == NULL)
		return -1;
	for (int row = 0; row < PQntuples(r); row++) {
		struct job *j = job_in(l, strtoll(PQgetvalue(r, row, 0), NULL, 10));

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
same_vendor(const void *ctx, size_t i)
{
	return strcmp(st.vendors[i].name, ctx) == 0;
}

/* The index of the vendor called name in st.vendors, added on first sight. */
static size_t
vendor_of(const char *name)
{
	uint64_t h = hash_string(name);
	size_t i;

	if (hash_find(&st.vendor_index, h, same_vendor, name, &i) == 0)
		return i;
	if (st.n_vendors == st.cap_vendors) {
		st.cap_vendors = st.cap_vendors ? 2 * st.cap_vendors : 16;
		st.vendors = xreallocarray(st.vendors, st.cap_vendors, sizeof *st.vendors);
	}
	i = st.n_vendors++;
	st.vendors[i] = (struct vendor){ .name = xstrdup(name) };
	hash_add(&st.vendor_index, h, same_vendor, name, i, NULL);
	return i;
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
	} else
		http_resp_reset(&sl->resp);
	if (http_prepare(sl->h, url, &st.lim, &sl->resp) < 0)
		die(EXIT_BUG, "vendor %s: %s", vendor, sl->resp.err);
	free(sl->vendor);
	sl->vendor = xstrdup(vendor);
	free(url);
}

/* Mark j "park" (OA_MATCH only): a line to amqp-consume, flushed at the end of the loop's turn. */
static void
park(struct job *j)
{
	if (!st.match || st.park_after <= 0 || j->parked)
		return;
	j->parked = 1;
	pthread_mutex_lock(&st.out);
	if (printf("{\"order_id\":%lld,\"status\":\"park\"}\n", j->id) < 0)
		out_flush("every answered order's change was committed");
	st.parks_unflushed = 1;
	pthread_mutex_unlock(&st.out);
	debugx("order %lld: parked (vendor %s)", j->id, j->vendor);
}

static void
flush_parks(void)
{
	if (!st.parks_unflushed)
		return;
	pthread_mutex_lock(&st.out);
	out_flush("every answered order's change was committed");
	pthread_mutex_unlock(&st.out);
	st.parks_unflushed = 0;
}

static struct job *earlier_line(const struct job *j);

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/*
 * How long a call or a wait must last to be slow: --park-after, and
 * PARK_TIMES the recent median. Nothing is slow before PARK_SAMPLE / 16
 * calls have ended: a burst of calls at a start is not a slow vendor.
 */
static double
slow_after(void)
{
	static double v[PARK_SAMPLE];
	size_t n = st.ntook < PARK_SAMPLE ? st.ntook : PARK_SAMPLE;
	double median;

	if (n < PARK_SAMPLE / 16)
		return HUGE_VAL;
	memcpy(v, st.took, n * sizeof *v);
	qsort(v, n, sizeof *v, cmp_double);
	median = v[n / 2];
	return PARK_TIMES * median > st.park_after ? PARK_TIMES * median : st.park_after;
}

/*
 * A vendor with a call, or a wait for one, that is slow (slow_after) stays
 * slow until it has none: all its lines are parked, and the lines held
 * behind a parked one. Returns the seconds until the next scan.
 */
static double
park_scan(double now)
{
	double every, after;

	if (!st.match || st.park_after <= 0)
		return -1;
	if (now < st.next_park_scan)
		return st.next_park_scan - now;
	after = slow_after();
	/* Before there is a median: again soon, as --park-after would. */
	every = (after == HUGE_VAL ? st.park_after : after) / 4;
	every = every < 0.01 ? 0.01 : every > 1 ? 1 : every;
	st.next_park_scan = now + every;
	for (size_t i = 0; i < st.n_vendors; i++)
		st.vendors[i].slow = 0;
	for (size_t i = 0; i < st.jobs_used; i++) {
		struct job *j = &st.jobs[i];

		if ((j->stage == S_CALL || j->stage == S_WAIT) && now - j->waiting_since >= after)
			st.vendors[j->vi].slow = 1;
	}
	for (size_t i = 0; i < st.jobs_used; i++) {
		struct job *j = &st.jobs[i], *e;

		if ((j->stage == S_CALL || j->stage == S_WAIT) && st.vendors[j->vi].slow)
			park(j);
		else if (j->stage == S_HELD && !j->parked && (e = earlier_line(j)) != NULL &&
		    e->parked)
			park(j);
	}
	return every;
}

static void
call_start(struct job *j)
{
	struct slot *sl = st.free_slots;
	cJSON *o = xalloc_check(cJSON_CreateObject());

	st.free_slots = sl->next_free;
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
	j->stage = S_CALL;
	j->waiting_since = now_seconds();
	sl->job = j;
	st.vendors[j->vi].calls++;
	if (st.vendors[j->vi].slow)
		park(j);
	http_loop_add(st.vendors[j->vi].slow ? &st.slow_loop : &st.loop, sl->h);
	debugx("order %lld: POST to vendor %s", j->id, j->vendor);
}

/* A pending order: at its vendor now if the vendor has a free slot, else waiting for one. */
static void
call_or_wait(struct job *j, double now)
{
	struct vendor *v;

	j->vi = vendor_of(j->vendor);
	v = &st.vendors[j->vi];
	if (v->waiting.n == 0 && v->calls < st.vendor_calls && st.free_slots != NULL) {
		call_start(j);
		return;
	}
	j->stage = S_WAIT;
	j->waiting_since = now;
	jl_push(&v->waiting, j);
	st.waiting++;
	if (v->slow)
		park(j);
}

static void
finish(struct job *j)
{
	j->stage = S_DONE;
	jl_push(&st.done, j);
}

/* What the vendor's answer means for the order (SPEC §4, §5). */
static void
judge(struct job *j)
{
	const struct buf *body = &j->slot->resp.body;
	const char *refusal;
	enum vendor_answer a = vendor_answer_classify(j->outcome, j->http_status, body->data,
	    body->len, &refusal);
	int last = j->attempts + 1 >= st.max_attempts;
	char reason[512];

	switch (a) {
	case VA_ACCEPTED:
		j->verdict = V_SUCCESS;
		return;
	case VA_REFUSED:
		j->verdict = V_FAILED;
		j->answer_reason = xstrdup(refusal);
		j->answer_error = xstrdup(j->why);
		return;
	case VA_TRANSIENT:
		j->answer_error = xstrdup(j->why);
		/*
		 * A vendor that answered 408, 429 or 5xx did not take the order:
		 * failing it and releasing its stock is safe (SPEC §5). One that
		 * never answered (a timeout, a dropped or refused connection) may
		 * or may not have taken it, so the order is left pending and
		 * reserved for an operator, never released on a guess.
		 */
		if (last && j->http_status != 0) {
			j->verdict = V_FAILED;
			j->answer_reason = xstrdup("vendor_unavailable");
			return;
		}
		j->verdict = last ? V_DEAD : V_RETRY;
		snprintf(reason, sizeof reason, "vendor %.128s: %.200s", j->vendor, j->why);
		j->answer_reason = xstrdup(reason);
		if (last)
			warning("order %lld: %s after %ld attempts, without an answer; it stays "
			    "pending and reserved, its message goes to the dead-letter queue", j->id,
			    reason, j->attempts + 1);
		return;
	case VA_UNDEFINED:
		break;
	}
	if (j->http_status != 0)
		snprintf(reason, sizeof reason, "vendor %.128s answered HTTP %ld, not an answer of "
		    "the vendor API", j->vendor, j->http_status);
	else
		snprintf(reason, sizeof reason, "vendor %.128s: %.200s", j->vendor, j->why);
	j->verdict = last ? V_DEAD : V_RETRY;
	j->answer_reason = xstrdup(reason);
	warning("order %lld: %s; it stays pending and reserved%s", j->id, reason,
	    last ? ", its message goes to the dead-letter queue (--max-attempts)" : "; retrying");
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
	debugx("order %lld: %s", j->id, j->outcome == HTTP_OK ? "answered" : j->why);
	judge(j);
	st.took[st.ntook++ % PARK_SAMPLE] = now_seconds() - j->waiting_since;
	st.vendors[j->vi].calls--;
	sl->job = NULL;
	j->slot = NULL;
	sl->next_free = st.free_slots;
	st.free_slots = sl;
	finish(j);
}

/*
 * Start what waits for a slot that is free now; answer "defer" for what
 * waited --defer-after. Returns the seconds until the next deferral is due,
 * or -1 when nothing waits.
 */
static double
dispatch_waiting(double now)
{
	double due = -1;

	if (st.waiting == 0)
		return -1;
	for (size_t i = 0; i < st.n_vendors; i++) {
		struct vendor *v = &st.vendors[i];
		struct job *j;

		while (v->waiting.head != NULL && v->calls < st.vendor_calls &&
		    st.free_slots != NULL) {
			st.waiting--;
			call_start(jl_pop(&v->waiting));
		}
		while ((j = v->waiting.head) != NULL && now - j->waiting_since >= st.defer_after) {
			char reason[128 + 64];

			jl_pop(&v->waiting);
			st.waiting--;
			if (v->calls >= st.vendor_calls)
				snprintf(reason, sizeof reason, "vendor %.128s has %ld calls in "
				    "flight (--vendor-calls)", v->name, v->calls);
			else
				snprintf(reason, sizeof reason, "all %d vendor calls are in flight",
				    FULFIL_CALLS_MAX);
			j->verdict = V_DEFER;
			j->answer_reason = xstrdup(reason);
			finish(j);
		}
		if (j != NULL) {
			double d = j->waiting_since + st.defer_after - now;

			if (due < 0 || d < due)
				due = d;
		}
	}
	return due;
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
	const char *sql = j->verdict == V_FAILED ? MARK_FAILED : MARK_RETRY;
	char id[24];
	const char *params[2] = { id, j->answer_reason };
	PGresult *r;
	int changed;

	snprintf(id, sizeof id, "%lld", j->id);
	r = db_run(st.keep.conn, &st.keep.failure, "recording the vendor's answer", sql, 2, params);
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
record_successes(struct jlist *b)
{
	const char *ids = id_array(&st.keep, b, is_success);
	char id[24];
	PGresult *r;

	if (ids == NULL)
		return 0;
	r = db_run_prepared(st.keep.conn, &st.keep.failure, "recording the vendors' acceptances",
	    "successes", 1, (const char *[]){ ids });
	if (r == NULL)
		return -1;
	for (struct job *j = b->head; j != NULL; j = j->next)
		if (j->verdict == V_SUCCESS)
			j->answer_attempts = -1;
	for (int row = 0; row < PQntuples(r); row++) {
		long long oid = strtoll(PQgetvalue(r, row, 0), NULL, 10);

		for (struct job *j = b->head; j != NULL; j = j->next)
			if (j->verdict == V_SUCCESS && j->bad == NULL && j->id == oid)
				j->answer_attempts = strtol(PQgetvalue(r, row, 1), NULL, 10);
	}
	PQclear(r);
	for (struct job *j = b->head; j != NULL; j = j->next) {
		if (j->verdict != V_SUCCESS || j->answer_attempts >= 0)
			continue;
		snprintf(id, sizeof id, "%lld", j->id);
		if (decided_elsewhere(j, id) < 0)
			return -1;
	}
	return 0;
}

static int
changes(const struct job *j)
{
	return j->verdict != V_NONE && j->verdict != V_DEFER;
}

static int
commit_batch(struct jlist *b)
{
	const struct job *j;

	for (j = b->head; j != NULL && !changes(j); j = j->next)
		;
	if (j == NULL)
		return 0;	/* nothing to change: no transaction */
	if (db_command(st.keep.conn, &st.keep.failure, "beginning the batch", "BEGIN", 0, NULL) < 0)
		return -1;
	if (record_successes(b) < 0)
		return -1;
	for (struct job *k = b->head; k != NULL; k = k->next) {
		if (!changes(k) || k->verdict == V_SUCCESS)
			continue;
		if (record(k) < 0)
			return -1;
	}
	return db_command(st.keep.conn, &st.keep.failure, "committing the batch", "COMMIT", 0,
	    NULL);
}

/* What an error exit can say was and was not done. */
static const char *
not_done(void)
{
	static _Thread_local char buf[200];

	snprintf(buf, sizeof buf, "%ld answer(s) written before were committed; the lines not answered "
	    "may be fed again (every change is guarded)", atomic_load(&st.answered));
	return buf;
}

static void wait_idle(void);

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
		wait_idle();
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
	warning("database: reconnected; redoing the %zu line(s) in hand", n);
}

/* --- answers -------------------------------------------------------------------- */

static const char *const VERDICT_NAMES[] = {
	[V_SUCCESS] = "success", [V_FAILED] = "failed", [V_RETRY] = "retry", [V_DEAD] = "dead",
	[V_DEFER] = "defer",
};

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
	cJSON_AddStringToObject(a, "status", VERDICT_NAMES[j->verdict]);
	if (j->answer_reason != NULL)
		cJSON_AddStringToObject(a, "reason", j->answer_reason);
	if (j->answer_error != NULL && j->verdict == V_FAILED)
		cJSON_AddStringToObject(a, "error", j->answer_error);
	if (j->verdict != V_DEFER)
		json_add_int(a, "attempts", j->answer_attempts);
	return a;
}

static void
write_answers(struct job **w, size_t n)
{
	pthread_mutex_lock(&st.out);
	for (size_t i = 0; i < n; i++) {
		cJSON *a = answer(w[i]);

		if (w[i]->bad == NULL && !w[i]->found) {
			warn_line(w[i]->lineno, "order %lld does not exist", w[i]->id);
			atomic_fetch_add(&st.bad_lines, 1);
		}
		if (jsonl_write(stdout, a) < 0)
			out_flush("every answered order's change was committed");
		cJSON_Delete(a);
		atomic_fetch_add(&st.answered, 1);
	}
	out_flush("every answered order's change was committed");
	pthread_mutex_unlock(&st.out);
}

/* --- the committer -------------------------------------------------------------- */

/*
 * Commit each batch handed over (a redo repeats only the changes: the
 * vendors' answers stand, and every change is guarded), then answer what may
 * be answered: the batch as it is with OA_MATCH, else the lines in input
 * order up to the first not yet committed. Answered jobs go back to the main
 * thread.
 */
static void *
committer(void *arg)
{
	static struct job *w[JOB_MAX];
	struct backoff retry;

	(void)arg;
	pthread_mutex_lock(&st.mu);
	for (;;) {
		struct jlist b;
		size_t n = 0;

		while (st.handed.head == NULL && !st.closing)
			pthread_cond_wait(&st.cv, &st.mu);
		if (st.handed.head == NULL)
			break;
		b = st.handed;
		st.handed = (struct jlist){ 0 };
		pthread_mutex_unlock(&st.mu);
		retry = (struct backoff)BACKOFF_DB_RETRY;
		for (int redo = 0; commit_batch(&b) < 0; redo++)
			recover(&st.keep, b.n, redo + 1, &retry);
		if (st.match) {
			for (struct job *j = b.head; j != NULL; j = j->next)
				w[n++] = j;
		} else {
			pthread_mutex_lock(&st.mu);
			for (struct job *j = b.head; j != NULL; j = j->next)
				j->committed = 1;
			while (st.ring_n > 0 && st.ring[st.ring_head]->committed) {
				w[n++] = st.ring[st.ring_head];
				st.ring_head = (st.ring_head + 1) % JOB_MAX;
				st.ring_n--;
			}
			pthread_mutex_unlock(&st.mu);
		}
		write_answers(w, n);
		pthread_mutex_lock(&st.mu);
		if (st.match)
			jl_splice(&st.returned, &b);
		else
			for (size_t i = 0; i < n; i++)
				jl_push(&st.returned, w[i]);
		st.busy = 0;
		pthread_cond_broadcast(&st.cv);
		http_loop_wakeup(&st.loop);
	}
	pthread_mutex_unlock(&st.mu);
	return NULL;
}

/* Wait until the committer has no batch. */
static void
wait_idle(void)
{
	pthread_mutex_lock(&st.mu);
	while (st.busy)
		pthread_cond_wait(&st.cv, &st.mu);
	pthread_mutex_unlock(&st.mu);
}

/* --- the main thread ------------------------------------------------------------ */

/* An earlier line than j's, still in hand, that names j's order; NULL if none. */
static struct job *
earlier_line(const struct job *j)
{
	for (size_t i = 0; i < st.jobs_used; i++) {
		struct job *k = &st.jobs[i];

		if (k->stage != S_FREE && k != j && k->bad == NULL && k->id == j->id &&
		    k->seq < j->seq)
			return k;
	}
	return NULL;
}

static int
named_earlier(const struct job *j)
{
	return earlier_line(j) != NULL;
}

/* A line read: to look up, or held behind an earlier line of the same order, or done. */
static void
admit(struct job *j)
{
	if (j->bad != NULL)
		finish(j);
	else if (named_earlier(j)) {
		j->stage = S_HELD;
		jl_push(&st.held, j);
	} else {
		j->stage = S_NEW;
		jl_push(&st.fresh, j);
	}
}

/* Take back the jobs the committer answered; let held lines whose order is free go on. */
static void
reclaim(void)
{
	struct jlist back, still = { 0 };
	struct job *j;

	pthread_mutex_lock(&st.mu);
	back = st.returned;
	st.returned = (struct jlist){ 0 };
	pthread_mutex_unlock(&st.mu);
	if (back.head == NULL)
		return;
	while ((j = jl_pop(&back)) != NULL) {
		job_forget(j);
		j->stage = S_FREE;
		j->committed = 0;
		j->next = st.free_jobs;
		st.free_jobs = j;
		st.live--;
	}
	while ((j = jl_pop(&st.held)) != NULL) {
		if (named_earlier(j))
			jl_push(&still, j);
		else {
			j->stage = S_NEW;
			jl_push(&st.fresh, j);
		}
	}
	st.held = still;
}

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
	j->lineno = rd->lineno;
	j->bad = NULL;
	j->id = 0;
	if (rc == JSONL_BAD)
		j->bad = why;
	else if (json_int(o, "order_id", 1, ORDER_ID_MAX, &id) < 0)
		j->bad = "\"order_id\" must be a positive integer";
	else
		j->id = id;
	if (j->bad != NULL) {
		warn_line(j->lineno, "%s", j->bad);
		atomic_fetch_add(&st.bad_lines, 1);
	}
	cJSON_Delete(o);
	return GOT_JOB;
}

/* Read the lines already waiting, as many as there are free jobs for. Returns 1 at end of input. */
static int
read_lines(struct jsonl *rd)
{
	while (st.free_jobs != NULL && jsonl_pending(rd)) {
		struct job *j = st.free_jobs;

		if (next_job(rd, j) == GOT_NONE)
			return 1;
		st.free_jobs = j->next;
		if ((size_t)(j - st.jobs) >= st.jobs_used)
			st.jobs_used = (size_t)(j - st.jobs) + 1;
		st.live++;
		j->seq = st.seq++;
		if (!st.match) {
			pthread_mutex_lock(&st.mu);
			st.ring[(st.ring_head + st.ring_n++) % JOB_MAX] = j;
			pthread_mutex_unlock(&st.mu);
		}
		admit(j);
	}
	return 0;
}

/* Look up what was read, in one query; start the pending orders' vendor calls. */
static void
look_up_fresh(void)
{
	struct backoff retry = BACKOFF_DB_RETRY;
	struct job *j;
	double now;

	if (st.fresh.head == NULL)
		return;
	for (int redo = 0; lookup(&st.fresh) < 0; redo++) {
		recover(&st.look, st.fresh.n, redo + 1, &retry);
		for (j = st.fresh.head; j != NULL; j = j->next)
			job_forget(j);
	}
	now = now_seconds();
	while ((j = jl_pop(&st.fresh)) != NULL)
		if (j->found && strcmp(j->status, "pending") == 0)
			call_or_wait(j, now);
		else
			finish(j);
}

/* Give the committer whatever finished, if it has nothing to do. */
static void
hand_over(void)
{
	if (st.done.head == NULL)
		return;
	pthread_mutex_lock(&st.mu);
	if (!st.busy) {
		for (struct job *j = st.done.head; j != NULL; j = j->next)
			j->stage = S_COMMIT;
		jl_splice(&st.handed, &st.done);
		st.busy = 1;
		pthread_cond_signal(&st.cv);
	}
	pthread_mutex_unlock(&st.mu);
}

/*
 * The main loop: read, look up, call, hand over, and wait for whichever
 * comes first: input, a vendor's answer, the committer's return, a deferral.
 */
static void
run(void)
{
	struct jsonl rd;
	int eof = 0;

	jsonl_open(&rd, stdin);
	for (;;) {
		long wait_ms = 1000;
		int fd = -1;
		size_t answered;
		double due, park_due;

		reclaim();
		if (!eof)
			eof = read_lines(&rd);
		answered = http_loop_step(&st.loop, call_done, NULL);
		if (st.slow_loop.active > 0 && now_seconds() >= st.next_slow_step) {
			answered += http_loop_step(&st.slow_loop, call_done, NULL);
			st.next_slow_step = now_seconds() + SLOW_STEP;
		}
		if (answered == 0 || st.fresh.n >= LOOKUP_GATHER || eof)
			look_up_fresh();
		due = dispatch_waiting(now_seconds());
		park_due = park_scan(now_seconds());
		if (park_due >= 0 && (due < 0 || park_due < due))
			due = park_due;
		flush_parks();
		hand_over();
		if (eof && st.live == 0)
			break;
		if (due >= 0 && due * 1000 < wait_ms)
			wait_ms = (long)ceil(due * 1000);
		if (st.fresh.head != NULL)
			wait_ms = 0;	/* looked up on the next turn */
		else if (!eof && st.free_jobs != NULL) {
			if (rd.start < rd.end || rd.fd < 0)
				wait_ms = 0;
			else
				fd = rd.fd;
		}
		if (st.slow_loop.active > 0 && wait_ms > SLOW_STEP * 1000)
			wait_ms = (long)(SLOW_STEP * 1000);
		http_loop_wait(&st.loop, fd, wait_ms);
	}
	if (ferror(stdin) || rd.error)
		die(EXIT_OUTPUT, "reading standard input failed; %s", not_done());
	jsonl_close(&rd);
}

/* OA_MATCH (amqp-consume --match FIELD): answer as orders end, naming them by order_id. */
static void
read_match(void)
{
	const char *m = getenv("OA_MATCH");

	if (m == NULL || *m == '\0')
		return;
	if (strcmp(m, "order_id") != 0)
		die(EXIT_USAGE, "OA_MATCH=%s: fulfil answers by order_id (amqp-consume --match "
		    "order_id)", m);
	st.match = 1;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "max-attempts", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 't' },
		{ "base", required_argument, NULL, 'b' },
		{ "vendor-calls", required_argument, NULL, 'c' },
		{ "defer-after", required_argument, NULL, 'd' },
		{ "park-after", required_argument, NULL, 'k' },
		{ "db-patience", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *why, *env;
	pthread_t keeper;
	int ch;

	log_init(argv[0]);
	st.base = config_vendor_base();
	if ((env = getenv("OA_DB_PATIENCE")) != NULL)
		st.db_patience = option_seconds("OA_DB_PATIENCE", env, 1e9);
	if ((env = getenv("OA_WAIT_REPORT")) != NULL)
		st.report_every = option_seconds("OA_WAIT_REPORT", env, 1e9);
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'n': st.max_attempts = option_long("--max-attempts", optarg, 1, 1000); break;
		case 't': st.lim.timeout = option_seconds("--timeout", optarg, 3600); break;
		case 'b': st.base = optarg; break;
		case 'c':
			st.vendor_calls = option_long("--vendor-calls", optarg, 1, FULFIL_CALLS_MAX);
			break;
		case 'd': st.defer_after = option_seconds("--defer-after", optarg, 3600); break;
		case 'k': st.park_after = option_seconds("--park-after", optarg, 3600); break;
		case 'P': st.db_patience = option_seconds("--db-patience", optarg, 1e9); break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (optind != argc)
		usage(stderr, EXIT_USAGE);
	read_match();
	if (st.lim.timeout < 0.001)
		die(EXIT_USAGE, "option --timeout: must be more than 0 seconds");
	if (st.report_every < 0.1)
		st.report_every = 0.1;
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
	http_loop_init(&st.loop, FULFIL_CALLS_MAX);
	http_loop_init(&st.slow_loop, FULFIL_CALLS_MAX);
	for (size_t i = FULFIL_CALLS_MAX; i-- > 0;) {
		st.pool[i].next_free = st.free_slots;
		st.free_slots = &st.pool[i];
	}
	for (size_t i = JOB_MAX; i-- > 0;) {
		st.jobs[i].next = st.free_jobs;
		st.free_jobs = &st.jobs[i];
	}
	connect_db(&st.look, "no order was read or changed");
	connect_db(&st.keep, "no order was read or changed");
	if ((errno = pthread_create(&keeper, NULL, committer, NULL)) != 0)
		die(EXIT_NOMEM, "cannot start a thread: %s", strerror(errno));
	run();
	pthread_mutex_lock(&st.mu);
	st.closing = 1;
	pthread_cond_broadcast(&st.cv);
	pthread_mutex_unlock(&st.mu);
	pthread_join(keeper, NULL);
	PQfinish(st.look.conn);
	PQfinish(st.keep.conn);
	buf_free(&st.look.ids);
	buf_free(&st.keep.ids);
	for (size_t i = 0; i < FULFIL_CALLS_MAX; i++) {
		curl_easy_cleanup(st.pool[i].h);
		http_resp_free(&st.pool[i].resp);
		free(st.pool[i].vendor);
	}
	for (size_t i = 0; i < st.n_vendors; i++)
		free(st.vendors[i].name);
	free(st.vendors);
	hash_free(&st.vendor_index);
	http_loop_free(&st.loop);
	http_loop_free(&st.slow_loop);
	http_global_cleanup();
	return atomic_load(&st.bad_lines) ? EXIT_BAD_INPUT : EXIT_OK;
}
