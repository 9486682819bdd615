/*
 * policy: every decision that is not mechanism, in one place: what each kind
 * of failure exits with, how long each kind of wait backs off, the defaults
 * of the queue topology and what its queues are called, and which database
 * errors are worth running a transaction again for. Change a policy here and
 * every program follows.
 */
#ifndef OA_POLICY_H
#define OA_POLICY_H

#include <stddef.h>
#include <sysexits.h>

#include "retry.h"

/* Exit status by meaning (sysexits.h, SPEC §3). */
enum {
	EXIT_OK = 0,
	EXIT_USAGE = EX_USAGE,		/* 64: bad flags or arguments */
	EXIT_BAD_INPUT = EX_DATAERR,	/* 65: some input lines were invalid */
	EXIT_NO_INPUT = EX_NOINPUT,	/* 66: an input file named by an option cannot be read */
	EXIT_UNAVAILABLE = EX_UNAVAILABLE,	/* 69: a service lost after retries */
	EXIT_SQL = EX_SOFTWARE,		/* 70: the database refused a statement */
	EXIT_BUG = EX_SOFTWARE,		/* 70: an internal error */
	EXIT_NOMEM = EX_OSERR,		/* 71: out of memory, or no process could start */
	EXIT_CANT_CREATE = EX_CANTCREAT,	/* 73: an output file cannot be opened */
	EXIT_OUTPUT = EX_IOERR,		/* 74: reading the input or writing the output failed */
	EXIT_BUSY = EX_TEMPFAIL		/* 75: another run holds the lock */
};

/*
 * Backoffs, as BACKOFF_INIT(first delay, largest delay) in seconds; every
 * wait is jittered (retry.c). Use as `struct backoff b = BACKOFF_DB_CONNECT;`.
 */
#define BACKOFF_DB_CONNECT	BACKOFF_INIT(0.2, 2.0)	/* PostgreSQL not answering */
#define BACKOFF_DB_RETRY	BACKOFF_INIT(0.01, 1.0)	/* a deadlock or serialization failure */
#define BACKOFF_MQ_CONNECT	BACKOFF_INIT(0.2, 10.0)	/* RabbitMQ not answering */
#define BACKOFF_MQ_NACK		BACKOFF_INIT(0.2, 2.0)	/* the broker refused publishes (a full queue): about 3 s for MAX_NACKS */
#define BACKOFF_HTTP		BACKOFF_INIT(0.2, 5.0)	/* a vendor's transient error */
#define BACKOFF_CHILD		BACKOFF_INIT(0.1, 5.0)	/* restarting a child that died */

/*
 * A wait (broker unreachable, a queue that does not work, a child that
 * answers nothing) is said on stderr when it starts and again every this
 * many seconds while it lasts (OA_WAIT_REPORT overrides, for tests).
 */
#define WAIT_REPORT_INTERVAL	60.0

/*
 * amqp-consume returns a message held unanswered this long before the
 * broker's consumer_timeout (or after half of it, when that is shorter),
 * and assumes RabbitMQ's default (30 min since 3.8.15) unless told.
 */
#define CONSUMER_TIMEOUT_DEFAULT	1800.0
#define CONSUMER_TIMEOUT_MARGIN		60.0

/* amqp-consume's --grace: seconds a stopping child gets to answer before it is killed. */
#define GRACE_DEFAULT		10.0

/*
 * amqp-consume --metrics: the file is rewritten at most this often (seconds),
 * and at exit. --save: with no message for this long it has saved the
 * queue and exits (--idle-exit overrides); it takes this many messages at a
 * time, written and fsync'd as one batch before one ack, and waits this
 * long for the broker (--patience overrides) before exit 69.
 */
#define METRICS_INTERVAL	5.0
#define SAVE_IDLE_EXIT_DEFAULT	2.0
#define SAVE_PREFETCH_DEFAULT	1024
#define SAVE_PATIENCE_DEFAULT	30.0

/* How long a program waits for the database before giving up (OA_DB_PATIENCE overrides). */
#define DB_PATIENCE_DEFAULT	10.0

/*
 * fulfil. Vendor calls in flight at once: the unit's prefetch (-p 512), so
 * every message amqp-consume hands over can be at its vendor. A vendor's
 * share is half of them: alone, a vendor at 200 ms still gets 1,280 calls/s;
 * a slow or dead vendor holds at most half, leaving the others 256, the
 * batch fulfil had before. An order whose vendor's share is full waits this
 * long for a slot, then is answered "defer". The database gets long enough
 * for a PostgreSQL restart or a standby promotion (OA_DB_PATIENCE overrides).
 */
#define FULFIL_CALLS_MAX	512
#define FULFIL_VENDOR_CALLS	256
#define FULFIL_DEFER_AFTER	1.0
/*
 * With amqp-consume --match: a vendor call (or wait for one) this long, and
 * 4 times the median of the last calls, is marked "park", and so is every
 * new call to that vendor while it has one (design.md, "Fulfilment").
 */
#define FULFIL_PARK_AFTER	0.05
#define FULFIL_DB_PATIENCE	90.0

/*
 * Input limits (design.md, "Hostile input"). A line longer than
 * JSONL_MAX_LINE_DEFAULT is a bad line, read past without being held, unless
 * a program's --max-line (at most JSONL_MAX_LINE_LIMIT) says otherwise. A SKU
 * or vendor name has 1 to FIELD_MAX_NAME bytes, a key 1 to FIELD_MAX_KEY. An
 * integer given as a JSON number must be within +-FIELD_MAX_EXACT (2^53, the
 * last a double holds exactly; cJSON keeps numbers as doubles), checked
 * before any C conversion.
 */
#define JSONL_MAX_LINE_DEFAULT	(1024 * 1024)
#define JSONL_MAX_LINE_LIMIT	(1024L * 1024 * 1024)
#define FIELD_MAX_NAME		255
#define FIELD_MAX_KEY		256
#define FIELD_MAX_EXACT		9007199254740992.0
/* vendor-fetch: one decoded response (--max-bytes), all held at once (--max-total). */
#define MAX_BYTES_DEFAULT	(64UL << 20)
#define MAX_TOTAL_DEFAULT	(1UL << 30)
/* order-api: connections from one client address (OA_HTTP_MAX_PER_CLIENT overrides). */
#define HTTPD_PER_CLIENT_DEFAULT	256
/*
 * amqp-publish: RabbitMQ's default max_message_size (128 MiB; at most 512
 * MiB), until the broker says otherwise; a line it refuses this often
 * (nacks: the queue is full) is given up.
 */
#define MAX_MESSAGE_SIZE_DEFAULT	(128L << 20)
#define MAX_NACKS		5

/* The queue topology's defaults (mq_declare in amqp.c declares it). */
#define QUEUE_DEFAULT		"orders"
#define MAX_DELIVERIES_DEFAULT	5	/* deliveries before a message is dead-lettered */
#define RETRY_DELAY_MS_DEFAULT	3000	/* a "retry" answer waits this long in Q.retry.<ms> */
#define MQ_HEARTBEAT		10	/* seconds, asked of the broker: a silent node is given up after two (20 s) */

/* The queues of work queue q: where poison messages go, and where retries wait. */
char *queue_dead_name(const char *q);
char *queue_retry_name(const char *q, long retry_ms);

/*
 * True when a statement failed with an SQLSTATE that says "run the whole
 * transaction again" (deadlock, serialization failure) rather than a bug or
 * bad data. NULL or "" (no SQLSTATE: the connection is gone) is not.
 */
int db_retryable(const char *sqlstate);

#endif
