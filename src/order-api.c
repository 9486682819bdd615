/* order-api: the HTTP front: orders placed in shared batches, lookups, /health and /metrics. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "lib/amqp.h"
#include "lib/buf.h"
#include "lib/config.h"
#include "lib/db.h"
#include "lib/httpd.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/num.h"
#include "lib/orders.h"
#include "lib/policy.h"
#include "lib/retry.h"
#include "lib/utf8.h"
#include "lib/validate.h"
#include "lib/xalloc.h"

#define DEFAULT_PORT	"3000"
#define THREADS_DEFAULT	4
#define THREADS_MAX	256
#define BODY_DEFAULT	(16 * 1024)
#define BODY_LIMIT	(16 * 1024 * 1024)
#define TIMEOUT_DEFAULT	30
#define CONNECTION_LIMIT 4096
/* Orders placed in one transaction at most; the rest wait for the next one. */
#define BATCH_MAX	1000
/* How long a publish waits for the broker's confirm before its order is left to order-sweep. */
#define CONFIRM_WAIT	5.0
/*
 * New orders handed to the publisher and not yet taken by it, at most: past
 * that (a publisher stuck in a broker that stopped reading) they are left
 * to order-sweep rather than held in memory.
 */
#define BACKLOG_MAX	65536
/* Idle database connections kept for the GET handlers. */
#define POOL_MAX	64
#define PAGE_DEFAULT	100
#define PAGE_MAX	1000
/* SIGTERM: how long requests already being answered may take to finish. */
#define DRAIN_WAIT	10
/* An idle placer asks the database "SELECT 1" at most this often (seconds), for /health. */
#define HEALTH_PROBE	1.0
/* /health: a placer that has said nothing for this long is stuck (in a call that hangs). */
#define HEALTH_STALE	30.0
/* The broker being unreachable is said at once, then at most this often (seconds). */
#define MQ_WARN_EVERY	60.0

enum req_state {
	READING,	/* body still arriving, or answered directly */
	QUEUED,		/* waiting (suspended) for the placer */
	PLACED,		/* the placer committed: res is final */
	UNAVAILABLE	/* the placer could not reach the database */
};

/* One HTTP request, from its first callback to its completion. */
struct req {
	struct httpd_req h;	/* the body is capped at --max-body */
	enum req_state state;
	cJSON *obj;			/* the parsed body: rq's strings point into it */
	char *key;			/* Idempotency-Key header, copied */
	struct order_request rq;
	struct order_result res;
	char *line;			/* res as an order line */
	int committed_unknown;		/* UNAVAILABLE: the connection broke after COMMIT was sent */
	const char *unavailable;	/* UNAVAILABLE: what the 503 says */
	long retry_after;
	int is_order;			/* POST /order: counted and timed when answered */
	double t0;			/* when its headers arrived */
	struct req *next;
};

static struct {
	const char *queue;
	long threads, max_body;
	double timeout;
} opt = { QUEUE_DEFAULT, THREADS_DEFAULT, BODY_DEFAULT, TIMEOUT_DEFAULT };

/* The queue between handler threads and the placer, and the count of open requests. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t quiet = PTHREAD_COND_INITIALIZER;
static struct req *head, *tail;
static int stopping, placer_gone;
static long open_requests;

/* Database connections for the GET handlers. */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static PGconn *pool[POOL_MAX];
static size_t pool_n;
static double pool_down_until;

/*
 * A committed batch's new orders on their way to the broker. Their requests
 * are answered at COMMIT and may be gone before the confirms come, so the
 * order lines are copied here. Reused: once there are as many outboxes as
 * batches in flight, each grown to its batches' size, publishing allocates
 * nothing.
 */
struct outbox {
	struct outbox *next;
	struct buf lines;		/* the order lines, one after another */
	struct outgoing {
		struct outbox *box;
		size_t off, len;	/* its line in box->lines */
		int returned;		/* came back unrouted: not in the queue */
	} *msg;
	size_t n, cap;
	size_t unsettled;		/* publishes whose confirm has not come (nor been given up) */
	double confirm_by;		/* when those confirms are given up */
};

/*
 * Outboxes filled by the placer, waiting for the publisher thread (which is
 * woken through an eventfd only when it sleeps: once a batch at most), and
 * empty ones to fill again.
 */
static pthread_mutex_t pub_lock = PTHREAD_MUTEX_INITIALIZER;
static struct outbox *pub_head, *pub_tail, *pub_free;
static size_t pub_backlog;	/* orders in pub_head's outboxes */
static int pub_done, pub_sleeping, pub_wake = -1;

/*
 * What the placer (database) and the publisher (broker) last saw of their
 * connections: each writes its own, GET /health reads.
 */
static struct {
	atomic_int db_up, mq_up;
	_Atomic double at, mq_at;	/* now_seconds() when each last said; 0: not yet */
} health;

/*
 * GET /metrics. Counted where they happen with relaxed atomics: no lock and
 * no allocation on the way of an order.
 */
enum outcome {
	OUT_PLACED, OUT_REPLAYED, OUT_INSUFFICIENT_STOCK, OUT_UNKNOWN_SKU, OUT_KEY_REUSED,
	OUT_INVALID, OUT_TOO_LARGE, OUT_DB_DOWN, OUT_COMMIT_UNKNOWN, OUT_SHUTTING_DOWN, OUT_OTHER,
	OUTCOMES
};
/* order_api_orders_total's labels for each outcome of a POST /order. */
static const char *const outcome_labels[OUTCOMES][5] = {
	[OUT_PLACED] = { "outcome", "placed", NULL },
	[OUT_REPLAYED] = { "outcome", "replayed", NULL },
	[OUT_INSUFFICIENT_STOCK] = { "outcome", "refused", "reason", "insufficient_stock", NULL },
	[OUT_UNKNOWN_SKU] = { "outcome", "refused", "reason", "unknown_sku", NULL },
	[OUT_KEY_REUSED] = { "outcome", "refused", "reason", "idempotency_key_reused", NULL },
	[OUT_INVALID] = { "outcome", "refused", "reason", "invalid_request", NULL },
	[OUT_TOO_LARGE] = { "outcome", "refused", "reason", "body_too_large", NULL },
	[OUT_DB_DOWN] = { "outcome", "unavailable", "reason", "database", NULL },
	[OUT_COMMIT_UNKNOWN] = { "outcome", "unavailable", "reason", "commit_unknown", NULL },
	[OUT_SHUTTING_DOWN] = { "outcome", "unavailable", "reason", "shutting_down", NULL },
	[OUT_OTHER] = { "outcome", "error", NULL },
};
/* Seconds from a POST /order's headers to its answer. */
static const double latency_bounds[] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5
};
static struct {
	atomic_ullong orders[OUTCOMES];
	atomic_ullong unpublished;	/* placed, not confirmed by the broker: order-sweep's */
	atomic_ullong db_reconnects, mq_reconnects;
	atomic_ullong awaiting_confirm;	/* a gauge: publishes awaiting their confirm */
	struct metrics_histogram latency;
} metrics = { .latency = METRICS_HISTOGRAM_INIT(latency_bounds) };

static void
count(atomic_ullong *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* What only the placer thread touches: the database connection and the batch. */
struct placer {
	PGconn *db;
	double db_retry_at;
	double db_answered_at;		/* the last statement that came back */
	struct backoff db_backoff;
	unsigned long db_connects;
	unsigned long behind;		/* batches not handed to a publisher too far behind */
	struct req *batch[BATCH_MAX];
	struct order_request rq[BATCH_MAX];
	struct order_result res[BATCH_MAX];
};

/*
 * What only the publisher thread touches: the broker connection and the
 * publishes awaiting their confirm, batch after batch, while the placer
 * places the next ones.
 */
struct publisher {
	struct mq mq;
	/*
	 * Orders and the idle publisher retry the broker at paces of their own:
	 * the first order after a long outage must not wait out a delay that
	 * grew while nobody ordered.
	 */
	double mq_retry_at, mq_idle_retry_at;
	struct backoff mq_backoff, mq_idle_backoff;
	double mq_warned_at;
	unsigned long mq_failures;	/* connection attempts failed in this outage */
	unsigned long mq_connects;
	double idle_at;			/* when the idle connection was last looked after */
	/* Reused: publishing allocates nothing once it has grown to the largest backlog. */
	struct mq_confirms waits;
	struct outbox *flying, *flying_tail;	/* published, oldest first, some confirms due */
};

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = {
		"[--listen ADDR:PORT] [--threads N] [-q QUEUE] [--max-body BYTES]\n"
		"[--timeout S]",
		NULL,
	};
	static const struct usage_option options[] = {
		{ "--listen ADDR:PORT", "where to listen (default 127.0.0.1:$PORT, PORT default " DEFAULT_PORT ")" },
		{ "--threads N", "HTTP threads, 1 to 256 (default 4)" },
		{ "-q, --queue QUEUE", "the queue new orders are published to (default " QUEUE_DEFAULT ")" },
		{ "--max-body BYTES", "the largest request body, 64 to 16777216 (default 16384)" },
		{ "--timeout S", "close a connection idle or stalled for S seconds (default 30)" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

/* --- answers ---------------------------------------------------------------- */

/* Send a cJSON object, deleting it. */
static enum MHD_Result
send_object(struct req *r, int status, cJSON *o, const char *const *headers)
{
	char *s = xalloc_check(cJSON_PrintUnformatted(o));
	enum MHD_Result rc;

	cJSON_Delete(o);
	rc = httpd_send_json(&r->h, status, s, headers);
	free(s);
	return rc;
}

static enum MHD_Result
reply_unavailable(struct req *r, long retry_after, const char *message)
{
	char secs[32];
	cJSON *o = cJSON_CreateObject();

	snprintf(secs, sizeof secs, "%ld", retry_after > 0 ? retry_after : 1);
	cJSON_AddStringToObject(o, "error", "database_unavailable");
	cJSON_AddStringToObject(o, "message", message);
	return send_object(r, MHD_HTTP_SERVICE_UNAVAILABLE, o,
	    (const char *[]){ MHD_HTTP_HEADER_RETRY_AFTER, secs, NULL });
}

static enum MHD_Result
reply_invalid(struct req *r, const char *why)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "status", "rejected");
	cJSON_AddStringToObject(o, "error", "invalid_request");
	cJSON_AddStringToObject(o, "message", why);
	return send_object(r, MHD_HTTP_BAD_REQUEST, o, NULL);
}

/* The placer's answer: 201 new order, 200 found by its key, 409/404/422 refused. */
static enum MHD_Result
answer_placed(struct req *r)
{
	const struct order_result *res = &r->res;
	char location[64];

	if (res->error != NULL) {
		int status = strcmp(res->error, "insufficient_stock") == 0 ? MHD_HTTP_CONFLICT :
		    strcmp(res->error, "unknown_sku") == 0 ? MHD_HTTP_NOT_FOUND :
		    strcmp(res->error, "idempotency_key_reused") == 0 ?
		    MHD_HTTP_UNPROCESSABLE_CONTENT : MHD_HTTP_BAD_REQUEST;

		return httpd_send_json(&r->h, status, r->line, NULL);
	}
	if (res->existing)
		return httpd_send_json(&r->h, MHD_HTTP_OK, r->line, NULL);
	snprintf(location, sizeof location, "/order/%lld", res->order_id);
	return httpd_send_json(&r->h, MHD_HTTP_CREATED, r->line, (const char *[]){
	    MHD_HTTP_HEADER_LOCATION, location,
	    /* Answered at COMMIT: the broker has not confirmed it yet (design.md). */
	    "X-Order-Published", "false", NULL });
}

/* --- the placer: one database connection, batches ---------------------------- */

/* Lazily (re)connect to the database, at most once per backoff delay. */
static int
placer_db(struct placer *p)
{
	double now = now_seconds();

	if (p->db != NULL)
		return 0;
	if (now < p->db_retry_at)
		return -1;
	if ((p->db = db_connect(0)) != NULL && orders_prepare(p->db) == 0) {
		backoff_reset(&p->db_backoff);
		p->db_answered_at = now_seconds();
		if (p->db_connects++ > 0) {
			count(&metrics.db_reconnects);
			warning("database %s: connected again", config_db_target());
		}
		return 0;
	}
	PQfinish(p->db);
	p->db = NULL;
	p->db_retry_at = now + backoff_next(&p->db_backoff);
	return -1;
}

/* The connection is gone: reconnect after the next backoff delay. */
static void
placer_db_lost(struct placer *p)
{
	PQfinish(p->db);
	p->db = NULL;
	p->db_retry_at = now_seconds() + backoff_next(&p->db_backoff);
}

/*
 * Keep /health true of the database while no order uses it: reconnect (at
 * the backoff's pace), or ask "SELECT 1" once nothing came back for a second.
 */
static void
placer_check_db(struct placer *p)
{
	struct db_failure f;
	PGresult *r;

	if (placer_db(p) < 0 || now_seconds() - p->db_answered_at < HEALTH_PROBE)
		return;
	if ((r = db_run(p->db, &f, "checking the connection", "SELECT 1", 0, NULL)) != NULL) {
		PQclear(r);
		p->db_answered_at = now_seconds();
		return;
	}
	db_warn(&f);
	if (f.lost)
		placer_db_lost(p);
}

/* Between batches and once a second while no order comes: look after the database, tell /health. */
static void
placer_idle(struct placer *p)
{
	placer_check_db(p);
	atomic_store(&health.db_up, p->db != NULL);
	atomic_store(&health.at, now_seconds());
}

/* What a request's 503 says when orders_place failed with rc. */
static const char *
place_failure(int rc)
{
	switch (rc) {
	case ORDERS_LOST:
		return "the database connection broke after COMMIT was sent, before its answer:"
		    " the order may have been placed; retry with the same key to learn it";
	case ORDERS_LOST_BEFORE_COMMIT:
		return "the database connection broke before COMMIT was sent: the order was not"
		    " placed";
	default:
		return "the database refused the transaction: the order was not placed";
	}
}

/* The batch's requests answer 503 saying why; unknown: COMMIT was sent, its answer lost. */
static void
fail_batch(struct placer *p, struct req **v, size_t n, int unknown, const char *why)
{
	long secs = (long)ceil(p->db_retry_at - now_seconds());

	for (size_t i = 0; i < n; i++) {
		v[i]->state = UNAVAILABLE;
		v[i]->committed_unknown = unknown;
		v[i]->unavailable = why;
		v[i]->retry_after = secs > 0 ? secs : 1;
		MHD_resume_connection(v[i]->h.c);
	}
}

/* An empty outbox: a reused one, or a new one when every one is in flight. */
static struct outbox *
outbox_take(void)
{
	struct outbox *b;

	pthread_mutex_lock(&pub_lock);
	if ((b = pub_free) != NULL)
		pub_free = b->next;
	pthread_mutex_unlock(&pub_lock);
	if (b == NULL)
		b = xcalloc(1, sizeof *b);
	b->next = NULL;
	b->n = 0;
	buf_reset(&b->lines);
	return b;
}

static void
outbox_add(struct outbox *b, const char *line)
{
	size_t len = strlen(line);

	if (b->n == b->cap) {
		b->cap = b->cap ? 2 * b->cap : 16;
		b->msg = xreallocarray(b->msg, b->cap, sizeof *b->msg);
	}
	b->msg[b->n++] = (struct outgoing){ b, b->lines.len, len, 0 };
	xbuf_add(&b->lines, line, len);
}

/* Give the publisher a batch's new orders; wake it if it sleeps. */
static void
hand_over(struct placer *p, struct outbox *b)
{
	int wake = 0, full;

	pthread_mutex_lock(&pub_lock);
	if (!(full = pub_backlog + b->n > BACKLOG_MAX)) {
		if (pub_tail != NULL)
			pub_tail->next = b;
		else
			pub_head = b;
		pub_tail = b;
		pub_backlog += b->n;
		wake = pub_sleeping;
		pub_sleeping = 0;
	} else {
		b->next = pub_free;
		pub_free = b;
	}
	pthread_mutex_unlock(&pub_lock);
	if (wake)
		eventfd_write(pub_wake, 1);
	if (!full) {
		p->behind = 0;
		return;
	}
	for (size_t i = 0; i < b->n; i++)
		count(&metrics.unpublished);
	if (!p->behind++)
		warning("the publisher is %d orders behind (is the broker reading?); new orders"
		    " stay pending for order-sweep until it catches up", BACKLOG_MAX);
}

/*
 * Place a batch in one transaction and answer every request once it is
 * committed. The new orders go to the publisher, which publishes them while
 * the placer places the next batch: the answers do not wait for the broker
 * (X-Order-Published: false), and an order whose publish is not confirmed
 * stays pending for order-sweep.
 */
static void
place(struct placer *p, struct req **v, size_t n)
{
	struct outbox *box = NULL;
	int rc;

	if (placer_db(p) < 0) {
		fail_batch(p, v, n, 0, "the database is unreachable: the order was not placed");
		return;
	}
	for (size_t i = 0; i < n; i++)
		p->rq[i] = v[i]->rq;
	if ((rc = orders_place(p->db, p->rq, n, p->res)) != ORDERS_OK) {
		if (rc != ORDERS_FAILED || db_connection_lost(p->db))
			placer_db_lost(p);
		else
			p->db_answered_at = now_seconds();
		fail_batch(p, v, n, rc == ORDERS_LOST, place_failure(rc));
		return;
	}
	p->db_answered_at = now_seconds();
	for (size_t i = 0; i < n; i++) {
		cJSON *o = order_result_json(&p->res[i]);

		v[i]->res = p->res[i];
		memset(&p->res[i], 0, sizeof p->res[i]);
		v[i]->line = xalloc_check(cJSON_PrintUnformatted(o));
		cJSON_Delete(o);
		v[i]->state = PLACED;
		if (v[i]->res.error == NULL && !v[i]->res.existing &&
		    strcmp(v[i]->res.status, "pending") == 0) {
			if (box == NULL)
				box = outbox_take();
			outbox_add(box, v[i]->line);
		}
		/* After resuming, a request belongs to its handler thread again: hands off. */
		MHD_resume_connection(v[i]->h.c);
	}
	debugx("placed a batch of %zu requests, %zu new orders", n, box != NULL ? box->n : 0);
	if (box != NULL)
		hand_over(p, box);
}

/* Take up to a batch from the queue, waiting for one; 0 when stopping and nothing is left. */
static size_t
take(struct placer *p)
{
	size_t n = 0;

	pthread_mutex_lock(&lock);
	while (head == NULL && !stopping) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (pthread_cond_timedwait(&wake, &lock, &ts) == ETIMEDOUT && head == NULL) {
			pthread_mutex_unlock(&lock);
			placer_idle(p);
			pthread_mutex_lock(&lock);
		}
	}
	while (head != NULL && n < BATCH_MAX) {
		p->batch[n++] = head;
		head = head->next;
	}
	if (head == NULL)
		tail = NULL;
	if (n == 0)
		placer_gone = 1;
	pthread_mutex_unlock(&lock);
	return n;
}

static void *
placer_main(void *arg)
{
	struct placer *p = arg;
	size_t n;

	/* Connected at once, so that /health answers from the start. */
	placer_idle(p);
	while ((n = take(p)) > 0) {
		place(p, p->batch, n);
		placer_idle(p);
	}
	PQfinish(p->db);
	/* Nothing more comes: the publisher finishes what it has, then stops. */
	pthread_mutex_lock(&pub_lock);
	pub_done = 1;
	pthread_mutex_unlock(&pub_lock);
	eventfd_write(pub_wake, 1);
	return NULL;
}

/* --- the publisher: one broker connection, confirms awaited across batches --- */

/*
 * (Re)connect to the broker and declare the queue, at most once per backoff
 * delay of the orders' pace or, when idle, the idle publisher's; 0 when it
 * can take messages.
 */
static int
publisher_mq(struct publisher *p, int idle)
{
	struct mq_topology t = { opt.queue, MAX_DELIVERIES_DEFAULT, -1, 1 };
	double now = now_seconds();
	double *retry_at = idle ? &p->mq_idle_retry_at : &p->mq_retry_at;

	if (mq_connected(&p->mq))
		return 0;
	if (now < *retry_at)
		return -1;
	if (mq_connect(&p->mq) == 0 && mq_declare(&p->mq, &t) == 0) {
		backoff_reset(&p->mq_backoff);
		backoff_reset(&p->mq_idle_backoff);
		p->mq_failures = 0;
		if (p->mq_connects++ > 0) {
			count(&metrics.mq_reconnects);
			warning("broker %s: connected again; new orders are published", p->mq.target);
		}
		return 0;
	}
	/* Said at the first failure, then once a minute: attempts go on every few seconds. */
	if (p->mq_failures++ == 0 || now - p->mq_warned_at >= MQ_WARN_EVERY) {
		warning("broker %s: %s; new orders stay pending for order-sweep (attempt %lu)",
		    p->mq.target, p->mq.why, p->mq_failures);
		p->mq_warned_at = now;
	}
	mq_close(&p->mq);
	*retry_at = now + backoff_next(idle ? &p->mq_idle_backoff : &p->mq_backoff);
	return -1;
}

/* A publish is settled: acked (and not returned unrouted), or not, and then order-sweep's. */
static void
settle(struct outgoing *m, int acked)
{
	if (!acked || m->returned)
		count(&metrics.unpublished);
	m->box->unsettled--;
}

static int
order_confirmed(const struct mq_confirm_wait *w, int acked, void *arg)
{
	(void)arg;
	settle(w->item, acked);
	return 0;
}

/* The connection is gone or given up: the confirms awaited will never come. */
static void
unconfirmed(struct publisher *p)
{
	for (size_t i = 0; i < p->waits.n; i++)
		settle(p->waits.v[i].item, 0);
	mq_confirms_clear(&p->waits);
}

/* Outboxes whose every publish is settled, oldest first, can be filled again. */
static void
release(struct publisher *p)
{
	struct outbox *b;

	while ((b = p->flying) != NULL && b->unsettled == 0) {
		if ((p->flying = b->next) == NULL)
			p->flying_tail = NULL;
		pthread_mutex_lock(&pub_lock);
		b->next = pub_free;
		pub_free = b;
		pthread_mutex_unlock(&pub_lock);
	}
}

/* A mandatory message came back unrouted: its ack will follow, but it is not in the queue. */
static void
returned(struct publisher *p, const struct mq_event *ev)
{
	for (size_t i = 0; i < p->waits.n; i++) {
		struct outgoing *m = p->waits.v[i].item;

		if (m->len == ev->len && memcmp(m->box->lines.data + m->off, ev->body, ev->len) == 0)
			m->returned = 1;
	}
}

/* Publish a list of outboxes; what the broker cannot take is left to order-sweep. */
static void
publish(struct publisher *p, struct outbox *b)
{
	double by = now_seconds() + CONFIRM_WAIT;
	struct outbox *next;
	uint64_t seq;

	if (!mq_connected(&p->mq) && p->waits.n > 0)
		unconfirmed(p);
	publisher_mq(p, 0);
	for (; b != NULL; b = next) {
		next = b->next;
		b->next = NULL;
		b->unsettled = b->n;
		b->confirm_by = by;
		if (p->flying_tail != NULL)
			p->flying_tail->next = b;
		else
			p->flying = b;
		p->flying_tail = b;
		for (size_t i = 0; i < b->n; i++) {
			struct outgoing *m = &b->msg[i];

			if (!mq_connected(&p->mq)) {
				settle(m, 0);
				continue;
			}
			if (mq_publish(&p->mq, "", opt.queue, b->lines.data + m->off, m->len, 0,
			    &seq) < 0) {
				warning("broker %s: publishing: %s; %zu orders stay pending for"
				    " order-sweep", p->mq.target, p->mq.why, p->waits.n + 1);
				mq_close(&p->mq);
				unconfirmed(p);
				settle(m, 0);
				continue;
			}
			mq_confirms_add(&p->waits, &p->mq, seq, m, 0);
		}
	}
	release(p);
}

/* Take the confirms (and returns) that arrived; notice a closed connection. */
static void
receive(struct publisher *p)
{
	struct mq_event ev;

	while (mq_connected(&p->mq)) {
		mq_next_event(&p->mq, 0, &ev);
		if (ev.type == MQ_ACK || ev.type == MQ_NACK)
			mq_confirms_apply(&p->waits, &ev, order_confirmed, NULL);
		else if (ev.type == MQ_RETURN)
			returned(p, &ev);
		free(ev.body);
		if (ev.type == MQ_NONE)
			break;
		if (ev.type == MQ_CLOSED) {
			if (p->waits.n > 0)
				warning("broker %s: %s; %zu orders were not confirmed and stay"
				    " pending for order-sweep", p->mq.target, p->mq.why, p->waits.n);
			else
				warning("broker %s: %s; will reconnect", p->mq.target, p->mq.why);
			unconfirmed(p);
		}
	}
	release(p);
	/*
	 * Confirms that never came: give them up, and start over on a fresh
	 * connection. A broker that does not confirm may not be reading either:
	 * dropped, not closed politely (which would wait for its reply).
	 */
	if (p->flying != NULL && now_seconds() >= p->flying->confirm_by) {
		warning("broker %s: %zu confirms did not arrive in %.0f s; those orders stay"
		    " pending for order-sweep", p->mq.target, p->waits.n, CONFIRM_WAIT);
		unconfirmed(p);
		release(p);
		mq_drop(&p->mq);
	}
	atomic_store_explicit(&metrics.awaiting_confirm, p->waits.n, memory_order_relaxed);
}

/*
 * Sleep until the placer hands over orders, the broker sends something, the
 * oldest publish's confirm is due, or a second passed (heartbeats, reconnects).
 */
static void
await(struct publisher *p)
{
	struct pollfd fds[2] = { { pub_wake, POLLIN, 0 }, { mq_fd(&p->mq), POLLIN, 0 } };
	double wait = 1.0;
	eventfd_t v;

	if (mq_buffered(&p->mq))
		return;
	if (p->flying != NULL)
		wait = fmin(wait, fmax(0, p->flying->confirm_by - now_seconds()));
	if (poll(fds, fds[1].fd >= 0 ? 2 : 1, (int)ceil(wait * 1000)) > 0 &&
	    (fds[0].revents & POLLIN))
		eventfd_read(pub_wake, &v);
}

static void
outboxes_free(struct outbox *b)
{
	for (struct outbox *next; b != NULL; b = next) {
		next = b->next;
		buf_free(&b->lines);
		free(b->msg);
		free(b);
	}
}

static void *
publisher_main(void *arg)
{
	struct publisher *p = arg;

	/* Connected at once, so that /health answers from the start. */
	publisher_mq(p, 1);
	for (;;) {
		struct outbox *list;
		int done;

		atomic_store(&health.mq_up, mq_connected(&p->mq));
		atomic_store(&health.mq_at, now_seconds());
		pthread_mutex_lock(&pub_lock);
		list = pub_head;
		pub_head = pub_tail = NULL;
		pub_backlog = 0;
		done = pub_done;
		pub_sleeping = list == NULL;
		pthread_mutex_unlock(&pub_lock);
		if (list != NULL)
			publish(p, list);
		else if (done && p->waits.n == 0)
			break;
		else
			await(p);
		receive(p);
		/* Idle: answer heartbeats and reconnect at the idle pace, once a second. */
		if (p->waits.n == 0 && now_seconds() - p->idle_at >= HEALTH_PROBE) {
			publisher_mq(p, 1);
			p->idle_at = now_seconds();
		}
	}
	mq_close(&p->mq);
	mq_confirms_free(&p->waits);
	outboxes_free(p->flying);
	outboxes_free(pub_free);
	pub_free = NULL;
	return NULL;
}

/* --- POST /order ------------------------------------------------------------ */

static enum MHD_Result
enqueue(struct req *r)
{
	pthread_mutex_lock(&lock);
	if (placer_gone) {
		pthread_mutex_unlock(&lock);
		return reply_unavailable(r, 1, "shutting down; the order was not placed");
	}
	r->state = QUEUED;
	if (tail != NULL)
		tail->next = r;
	else
		head = r;
	tail = r;
	/* Suspended under the lock: the placer cannot resume it before this. */
	MHD_suspend_connection(r->h.c);
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	return MHD_YES;
}

/* The body's key, or the Idempotency-Key header: both may be given only if equal. */
static const char *
take_header_key(struct req *r)
{
	const char *h = MHD_lookup_connection_value(r->h.c, MHD_HEADER_KIND, "Idempotency-Key");

	if (h == NULL || r->rq.invalid != NULL)
		return NULL;
	if (r->rq.key != NULL && strcmp(r->rq.key, h) != 0)
		return "the Idempotency-Key header and \"key\" differ";
	r->key = xstrdup(h);
	r->rq.key = r->key;
	order_request_check(&r->rq);
	return NULL;
}

static enum MHD_Result
post_order(struct req *r)
{
	const char *end = NULL, *why;
	char msg[160];

	if (r->state == PLACED)
		return answer_placed(r);
	if (r->state == UNAVAILABLE)
		return reply_unavailable(r, r->retry_after, r->unavailable);
	if (r->h.too_big)
		return httpd_send_error(&r->h, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large");
	/* Bytes PostgreSQL would refuse, or a \u0000 cJSON would cut a string at. */
	if ((why = validate_json_text(r->h.body.data != NULL ? r->h.body.data : "",
	    r->h.body.len)) != NULL) {
		snprintf(msg, sizeof msg, "the body is refused: %s", why);
		return reply_invalid(r, msg);
	}
	r->obj = cJSON_ParseWithLengthOpts(r->h.body.data != NULL ? r->h.body.data : "",
	    r->h.body.len, &end, 0);
	if (r->obj == NULL) {
		snprintf(msg, sizeof msg, "the body is not valid JSON (error near byte %ld)",
		    end != NULL && r->h.body.data != NULL ? (long)(end - r->h.body.data) : 0L);
		return reply_invalid(r, msg);
	}
	if (!cJSON_IsObject(r->obj))
		return reply_invalid(r, "the body must be a JSON object {\"sku\":…,"
		    "\"quantity\":…}");
	order_request_from_json(r->obj, &r->rq);
	if ((why = take_header_key(r)) != NULL)
		return reply_invalid(r, why);
	if (r->rq.invalid != NULL)
		return reply_invalid(r, r->rq.invalid);
	return enqueue(r);
}

/* --- GET /order/ID, /stock/SKU, /stock ---------------------------------------- */

static PGconn *
pool_get(void)
{
	PGconn *c = NULL;
	int down;

	pthread_mutex_lock(&pool_lock);
	if (pool_n > 0)
		c = pool[--pool_n];
	down = now_seconds() < pool_down_until;
	pthread_mutex_unlock(&pool_lock);
	/* While the database is down, one attempt a second is enough for every thread. */
	if (c != NULL || down)
		return c;
	if ((c = db_connect(0)) != NULL)
		return c;
	pthread_mutex_lock(&pool_lock);
	pool_down_until = now_seconds() + 1;
	pthread_mutex_unlock(&pool_lock);
	return NULL;
}

static void
pool_put(PGconn *c)
{
	if (c == NULL)
		return;
	if (db_connection_lost(c) || PQtransactionStatus(c) != PQTRANS_IDLE) {
		PQfinish(c);
		return;
	}
	pthread_mutex_lock(&pool_lock);
	if (pool_n < POOL_MAX) {
		pool[pool_n++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&pool_lock);
	PQfinish(c);
}

static void
pool_free(void)
{
	while (pool_n > 0)
		PQfinish(pool[--pool_n]);
}

/* Run a read-only query from a pooled connection; NULL after answering 503 (*rc). */
static PGresult *
lookup(struct req *r, const char *what, const char *sql, int n, const char *const *params,
    enum MHD_Result *rc)
{
	PGresult *res = NULL;

	/* A pooled connection may have died with a database restart: one fresh try more. */
	for (int attempt = 0; attempt < 2 && res == NULL; attempt++) {
		PGconn *c = pool_get();
		struct db_failure f;

		if (c == NULL) {
			*rc = reply_unavailable(r, 1, "the database is unreachable");
			return NULL;
		}
		if ((res = db_run(c, &f, what, sql, n, params)) == NULL)
			db_warn(&f);
		pool_put(c);
		if (res == NULL && !f.lost)
			break;
	}
	if (res == NULL)
		*rc = reply_unavailable(r, 1, "the database could not answer");
	return res;
}

static enum MHD_Result
get_order(struct req *r, const char *id)
{
	static const char sql[] = "SELECT id, sku, quantity, vendor, status, idempotency_key,"
	    " reason, created_at, updated_at FROM orders WHERE id = $1";
	enum MHD_Result rc;
	const char *why;
	PGresult *res;
	cJSON *o;
	long n;

	if (parse_long(id, 1, LONG_MAX, &n, &why) < 0)
		return httpd_send_error(&r->h, MHD_HTTP_NOT_FOUND, "unknown_order");
	if ((res = lookup(r, "reading an order", sql, 1, (const char *[]){ id }, &rc)) == NULL)
		return rc;
	if (PQntuples(res) == 0) {
		PQclear(res);
		return httpd_send_error(&r->h, MHD_HTTP_NOT_FOUND, "unknown_order");
	}
	o = cJSON_CreateObject();
	json_add_int(o, "order_id", strtoll(PQgetvalue(res, 0, 0), NULL, 10));
	cJSON_AddStringToObject(o, "sku", PQgetvalue(res, 0, 1));
	json_add_int(o, "quantity", strtoll(PQgetvalue(res, 0, 2), NULL, 10));
	cJSON_AddStringToObject(o, "vendor", PQgetvalue(res, 0, 3));
	cJSON_AddStringToObject(o, "status", PQgetvalue(res, 0, 4));
	if (!PQgetisnull(res, 0, 5))
		cJSON_AddStringToObject(o, "key", PQgetvalue(res, 0, 5));
	if (!PQgetisnull(res, 0, 6))
		cJSON_AddStringToObject(o, "reason", PQgetvalue(res, 0, 6));
	cJSON_AddStringToObject(o, "created_at", PQgetvalue(res, 0, 7));
	cJSON_AddStringToObject(o, "updated_at", PQgetvalue(res, 0, 8));
	PQclear(res);
	return send_object(r, MHD_HTTP_OK, o, NULL);
}

static cJSON *
stock_item(PGresult *res, int row)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "sku", PQgetvalue(res, row, 0));
	json_add_int(o, "available", strtoll(PQgetvalue(res, row, 1), NULL, 10));
	return o;
}

static enum MHD_Result
get_stock(struct req *r, const char *sku)
{
	static const char sql[] = "SELECT sku, available FROM available_stock WHERE sku = $1";
	enum MHD_Result rc;
	PGresult *res;
	cJSON *o;

	/* Bytes no SKU can hold never reach the database (which would refuse them: 503). */
	if (!utf8_valid(sku))
		return reply_invalid(r, "the SKU in the path is not valid UTF-8");
	if (validate_cstring(sku, 1, FIELD_MAX_NAME) != NULL)
		return httpd_send_error(&r->h, MHD_HTTP_NOT_FOUND, "unknown_sku");
	if ((res = lookup(r, "reading stock", sql, 1, (const char *[]){ sku }, &rc)) == NULL)
		return rc;
	if (PQntuples(res) == 0) {
		PQclear(res);
		return httpd_send_error(&r->h, MHD_HTTP_NOT_FOUND, "unknown_sku");
	}
	o = stock_item(res, 0);
	PQclear(res);
	return send_object(r, MHD_HTTP_OK, o, NULL);
}

/* A page of SKUs after a cursor: keyset paging stays cheap however deep it goes. */
static enum MHD_Result
list_stock(struct req *r)
{
	static const char sql[] = "SELECT sku, available FROM available_stock"
	    " WHERE sku > $1 ORDER BY sku LIMIT $2";
	const char *after = MHD_lookup_connection_value(r->h.c, MHD_GET_ARGUMENT_KIND, "after");
	const char *slimit = MHD_lookup_connection_value(r->h.c, MHD_GET_ARGUMENT_KIND, "limit");
	long limit = PAGE_DEFAULT;
	char more[32], msg[96];
	enum MHD_Result rc;
	const char *why;
	PGresult *res;
	cJSON *o, *items;
	int n;

	if (after != NULL && !utf8_valid(after))
		return reply_invalid(r, "\"after\" is not valid UTF-8");
	if (slimit != NULL && parse_long(slimit, 1, PAGE_MAX, &limit, &why) < 0) {
		snprintf(msg, sizeof msg, "\"limit\" %s (allowed 1 to %d)", why, PAGE_MAX);
		return reply_invalid(r, msg);
	}
	/* One row more than asked tells whether there is a next page. */
	snprintf(more, sizeof more, "%ld", limit + 1);
	if ((res = lookup(r, "listing stock", sql, 2,
	    (const char *[]){ after != NULL ? after : "", more }, &rc)) == NULL)
		return rc;
	o = cJSON_CreateObject();
	items = cJSON_AddArrayToObject(o, "items");
	n = PQntuples(res) > limit ? (int)limit : PQntuples(res);
	for (int i = 0; i < n; i++)
		cJSON_AddItemToArray(items, stock_item(res, i));
	if (PQntuples(res) > limit)
		cJSON_AddStringToObject(o, "next", PQgetvalue(res, n - 1, 0));
	else
		cJSON_AddNullToObject(o, "next");
	PQclear(res);
	return send_object(r, MHD_HTTP_OK, o, NULL);
}

/* --- GET /health, GET /metrics ---------------------------------------------- */

/* 200 when the placer's database and broker connections answer, else 503 naming which. */
static enum MHD_Result
get_health(struct req *r)
{
	double at = atomic_load(&health.at), mq_at = atomic_load(&health.mq_at);
	/* Either thread of the placer stuck in a call that hangs. */
	int stalled = (at > 0 && now_seconds() - at > HEALTH_STALE) ||
	    (mq_at > 0 && now_seconds() - mq_at > HEALTH_STALE);
	int db = atomic_load(&health.db_up), mq = atomic_load(&health.mq_up);
	int up = db && mq && !stalled;
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "status", up ? "ok" : "unavailable");
	cJSON_AddStringToObject(o, "database", db ? "up" : "down");
	cJSON_AddStringToObject(o, "broker", mq ? "up" : "down");
	if (stalled)
		cJSON_AddStringToObject(o, "placer", "stalled");
	return send_object(r, up ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, o,
	    (const char *[]){ MHD_HTTP_HEADER_CACHE_CONTROL, "no-store", NULL });
}

static double
load(atomic_ullong *c)
{
	return (double)atomic_load_explicit(c, memory_order_relaxed);
}

/* The Prometheus text: httpd_send answers JSON only, so this one is queued here. */
static enum MHD_Result
get_metrics(struct req *r)
{
	static const char orders[] = "order_api_orders_total";
	struct buf b = { 0 };
	struct MHD_Response *resp;
	enum MHD_Result rc;

	metrics_family(&b, orders, METRICS_COUNTER, "POST /order requests answered, by outcome"
	    " (placed 201, replayed 200, refused 4xx, unavailable 503) and reason.");
	for (int o = 0; o < OUTCOMES; o++)
		metrics_sample(&b, orders, outcome_labels[o], load(&metrics.orders[o]));
	metrics_histogram(&b, "order_api_order_request_duration_seconds", "POST /order requests,"
	    " from their headers to their answer.", NULL, &metrics.latency);
	metrics_counter(&b, "order_api_orders_unpublished_total", "Orders placed whose publish"
	    " the broker did not confirm: they stay pending for order-sweep.",
	    load(&metrics.unpublished));
	metrics_gauge(&b, "order_api_publishes_awaiting_confirm", "Orders published and not yet"
	    " confirmed by the broker.", load(&metrics.awaiting_confirm));
	metrics_counter(&b, "order_api_database_reconnects_total", "Database connections of the"
	    " placer made again after one was lost or refused.", load(&metrics.db_reconnects));
	metrics_counter(&b, "order_api_broker_reconnects_total", "Broker connections of the"
	    " placer made again after one was lost.", load(&metrics.mq_reconnects));
	metrics_gauge(&b, "order_api_database_up", "1 when the placer's database connection"
	    " answers (as GET /health says).", atomic_load(&health.db_up));
	metrics_gauge(&b, "order_api_broker_up", "1 when the placer's broker connection is open"
	    " (as GET /health says).", atomic_load(&health.mq_up));
	resp = xalloc_check(MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY));
	buf_free(&b);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
	rc = MHD_queue_response(r->h.c, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return rc;
}

/* --- routing, and the hooks lib/httpd calls -------------------------------- */

static int
is_get(const char *method)
{
	return strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
	    strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
}

/* httpd's handle hook: the routes. */
static enum MHD_Result
route(struct httpd_req *hr)
{
	struct req *r = (struct req *)hr;
	const char *url = hr->url;
	int get = is_get(hr->method);

	if (strcmp(url, "/order") == 0) {
		if (strcmp(hr->method, MHD_HTTP_METHOD_POST) != 0)
			return httpd_method_not_allowed(hr, "POST");
		return post_order(r);
	}
	if (strncmp(url, "/order/", 7) == 0 && url[7] != '\0')
		return get ? get_order(r, url + 7) : httpd_method_not_allowed(hr, "GET, HEAD");
	if (strcmp(url, "/stock") == 0)
		return get ? list_stock(r) : httpd_method_not_allowed(hr, "GET, HEAD");
	if (strncmp(url, "/stock/", 7) == 0 && url[7] != '\0')
		return get ? get_stock(r, url + 7) : httpd_method_not_allowed(hr, "GET, HEAD");
	if (strcmp(url, "/health") == 0)
		return get ? get_health(r) : httpd_method_not_allowed(hr, "GET, HEAD");
	if (strcmp(url, "/metrics") == 0)
		return get ? get_metrics(r) : httpd_method_not_allowed(hr, "GET, HEAD");
	return httpd_send_error(hr, MHD_HTTP_NOT_FOUND, "not_found");
}

/* httpd's opened hook: count the request, so SIGTERM can wait for its answer; time an order. */
static void
request_opened(struct httpd_req *hr)
{
	struct req *r = (struct req *)hr;

	if (strcmp(hr->method, MHD_HTTP_METHOD_POST) == 0 && strcmp(hr->url, "/order") == 0) {
		r->is_order = 1;
		r->t0 = now_seconds();
	}
	pthread_mutex_lock(&lock);
	open_requests++;
	pthread_mutex_unlock(&lock);
}

/* httpd's answered hook: count a POST /order by its outcome, and time it. */
static void
request_answered(struct httpd_req *hr, unsigned status)
{
	struct req *r = (struct req *)hr;
	enum outcome o;

	if (!r->is_order)
		return;
	switch (status) {
	case MHD_HTTP_CREATED: o = OUT_PLACED; break;
	case MHD_HTTP_OK: o = OUT_REPLAYED; break;
	case MHD_HTTP_CONFLICT: o = OUT_INSUFFICIENT_STOCK; break;
	case MHD_HTTP_NOT_FOUND: o = OUT_UNKNOWN_SKU; break;
	case MHD_HTTP_UNPROCESSABLE_CONTENT: o = OUT_KEY_REUSED; break;
	case MHD_HTTP_BAD_REQUEST: o = OUT_INVALID; break;
	case MHD_HTTP_CONTENT_TOO_LARGE: o = OUT_TOO_LARGE; break;
	case MHD_HTTP_SERVICE_UNAVAILABLE:
		o = r->state != UNAVAILABLE ? OUT_SHUTTING_DOWN : r->committed_unknown ?
		    OUT_COMMIT_UNKNOWN : OUT_DB_DOWN;
		break;
	default: o = OUT_OTHER;
	}
	count(&metrics.orders[o]);
	metrics_observe(&metrics.latency, now_seconds() - r->t0);
}

/* httpd's closed hook. */
static void
request_closed(struct httpd_req *hr)
{
	struct req *r = (struct req *)hr;

	cJSON_Delete(r->obj);
	free(r->key);
	order_result_clear(&r->res);
	free(r->line);
	pthread_mutex_lock(&lock);
	if (--open_requests == 0)
		pthread_cond_broadcast(&quiet);
	pthread_mutex_unlock(&lock);
}

/* SIGTERM: stop accepting, let the placer finish the queue and the publisher its confirms, let answers go out. */
static void
shut_down(struct httpd *srv, pthread_t placer, pthread_t publisher)
{
	MHD_socket s = MHD_quiesce_daemon(srv->d);
	struct timespec ts;

	if (s != MHD_INVALID_SOCKET)
		close(s);
	pthread_mutex_lock(&lock);
	stopping = 1;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	pthread_join(placer, NULL);
	pthread_join(publisher, NULL);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += DRAIN_WAIT;
	pthread_mutex_lock(&lock);
	while (open_requests > 0)
		if (pthread_cond_timedwait(&quiet, &lock, &ts) == ETIMEDOUT)
			break;
	if (open_requests > 0)
		warning("stopping with %ld requests unanswered (slow clients)", open_requests);
	pthread_mutex_unlock(&lock);
	httpd_stop(srv);
}

static const char *
default_listen(char *buf, size_t size)
{
	const char *port = getenv("PORT");
	const char *why;
	long n;

	if (port == NULL || *port == '\0')
		port = DEFAULT_PORT;
	if (parse_long(port, 0, 65535, &n, &why) < 0)
		die(EXIT_USAGE, "PORT \"%s\" %s (allowed 0 to 65535)", port, why);
	snprintf(buf, size, "127.0.0.1:%ld", n);
	return buf;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'L' },
		{ "threads", required_argument, NULL, 't' },
		{ "queue", required_argument, NULL, 'q' },
		{ "max-body", required_argument, NULL, 'm' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static struct placer placer;
	static struct publisher publisher;
	struct httpd srv = {
		.req_size = sizeof(struct req),
		.flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ITC |
		    MHD_ALLOW_SUSPEND_RESUME,
		.connection_limit = CONNECTION_LIMIT,
		.per_client_limit = HTTPD_PER_CLIENT_DEFAULT,
		.handle = route,
		.opened = request_opened,
		.closed = request_closed,
		.answered = request_answered,
	};
	const char *listen = NULL;
	char buf[64];
	struct httpd_addr addr;
	pthread_t tid, pub_tid;
	int ch;

	log_init(argv[0]);
	while ((ch = getopt_long(argc, argv, "q:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'L': listen = optarg; break;
		case 't': opt.threads = option_long("--threads", optarg, 1, THREADS_MAX); break;
		case 'q':
			if (*optarg == '\0' || strlen(optarg) > 200)
				die(EXIT_USAGE, "option -q: a queue name is 1 to 200 bytes");
			opt.queue = optarg;
			break;
		case 'm': opt.max_body = option_long("--max-body", optarg, 64, BODY_LIMIT); break;
		case 'T': opt.timeout = option_seconds("--timeout", optarg, 86400); break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (optind != argc)
		usage(stderr, EXIT_USAGE);
	if (opt.timeout < 1)
		die(EXIT_USAGE, "option --timeout: at least 1 second");
	if (listen == NULL)
		listen = default_listen(buf, sizeof buf);
	httpd_addr_option("--listen", listen, &addr);
	srv.body_max = (size_t)opt.max_body;
	srv.threads = (unsigned)opt.threads;
	srv.idle_timeout = (unsigned)ceil(opt.timeout);

	/* Before the placer's threads start, so that they inherit the blocked signals. */
	httpd_block_signals();
	if ((pub_wake = eventfd(0, EFD_CLOEXEC)) < 0)
		die(EXIT_NOMEM, "cannot make an eventfd for the publisher thread");
	placer.db_backoff = (struct backoff)BACKOFF_DB_CONNECT;
	mq_init(&publisher.mq, MQ_HEARTBEAT, 1);
	publisher.mq_backoff = (struct backoff)BACKOFF_MQ_CONNECT;
	publisher.mq_idle_backoff = (struct backoff)BACKOFF_MQ_CONNECT;
	if (pthread_create(&tid, NULL, placer_main, &placer) != 0 ||
	    pthread_create(&pub_tid, NULL, publisher_main, &publisher) != 0)
		die(EXIT_NOMEM, "cannot start the placer's threads");
	httpd_start(&srv, &addr, listen);
	httpd_wait();
	shut_down(&srv, tid, pub_tid);
	close(pub_wake);
	pool_free();
	return EXIT_OK;
}
