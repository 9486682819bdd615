/* amqp-publish: publish JSON lines to RabbitMQ, each one counted only once the broker confirmed it. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/amqp.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/num.h"
#include "lib/policy.h"
#include "lib/retry.h"
#include "lib/xalloc.h"


struct line {
	long lineno;
	char *body;
	size_t len;
	unsigned generation;	/* the connection it was published on; 0: not published since its nack */
	int nacks;
	int done;		/* confirmed, refused, or given up after MAX_NACKS */
};

struct batch {
	struct line *v;
	size_t n, cap, left;	/* left: published or not, not yet done */
	size_t inflight;	/* published on this connection, awaiting their confirm */
	struct mq_confirms waits;	/* lines published and awaiting their confirm */
	size_t again;		/* lines nacked since the last round, to publish again */
	int acked;		/* a line was acked since the last round: the broker takes lines */
	double trouble_since;	/* no confirm since then, over failed connections; < 0: none */
};

static struct {
	const char *queue, *exchange, *key;
	long max_deliveries;
	double patience;
	long max_size;		/* --max-message-size, lowered to what the broker says */
} opt = { QUEUE_DEFAULT, NULL, NULL, MAX_DELIVERIES_DEFAULT, 30, MAX_MESSAGE_SIZE_DEFAULT };

static struct mq mq;
/* Where lines go, for messages: queue "Q", or exchange "E" with key "K". */
static char dest[512];
/*
 * The last failure was the queue's, not the connection's: the broker is up
 * and answered (refused a declare or a publish), or kept the connection
 * alive while confirming nothing.
 */
static int refusing;
static char lost_from[256];	/* the node whose connection was lost, until connected again */
static long confirmed, returned, refused, too_large, bad_lines;
/*
 * The longest line the broker has confirmed. A longer one might be over the
 * broker's max_message_size, which closes the channel and voids the confirms
 * of everything published with it: so it goes out alone, once every earlier
 * line is confirmed, and nothing follows it until its own confirm.
 */
static size_t accepted_max;

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = {
		"[-q QUEUE | -e EXCHANGE -k ROUTING_KEY] [--max-deliveries N]\n"
		"[--batch N] [--patience S] [--max-message-size BYTES] < lines.jsonl",
		NULL,
	};
	static const struct usage_option options[] = {
		{ "-q, --queue QUEUE", "publish to QUEUE, declaring it (default " QUEUE_DEFAULT ")" },
		{ "-e, --exchange EXCHANGE", "publish to an existing EXCHANGE instead (with -k)" },
		{ "-k, --routing-key KEY", "the routing key used with -e" },
		{ "--max-deliveries N", "when the queue is created: deliveries before dead-lettering (default 5)" },
		{ "--batch N", "unconfirmed lines held at most (default 256)" },
		{ "--patience S", "seconds the broker may stay away or silent before exit 69 (default 30)" },
		{ "--max-message-size BYTES", "refuse a longer line before sending it (default 134217728)" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

/*
 * Stop: say whether the broker was away or up with a queue that does not
 * work (refusing), what it confirmed, and from which line on nothing is certain.
 */
static void __attribute__((noreturn))
give_up(const struct batch *b, const char *why)
{
	char what[sizeof dest + 64];
	long first = -1;

	for (size_t i = 0; i < b->n; i++)
		if (!b->v[i].done) {
			first = b->v[i].lineno;
			break;
		}
	if (refusing)
		snprintf(what, sizeof what, " is up, but %s does not work", dest);
	else
		what[0] = '\0';
	if (first < 0)
		die(EXIT_UNAVAILABLE, "broker %s%s: %s; %ld lines were confirmed, nothing else was "
		    "read", mq.target, what, why, confirmed);
	die(EXIT_UNAVAILABLE, "broker %s%s: %s; %ld lines were confirmed; line %ld and the lines "
	    "after it were not (some may have reached the queue)", mq.target, what, why, confirmed,
	    first);
}

/*
 * Connect and make sure the destination exists; -1 when the broker stayed
 * away, or stayed up refusing the destination (refusing set), for --patience.
 * A permanent refusal (a queue with other arguments, no such exchange)
 * gives up at once.
 */
static int
link_up(const struct batch *b)
{
	struct mq_topology t = { opt.queue, opt.max_deliveries, -1, 1 };
	struct backoff wait = BACKOFF_MQ_CONNECT;
	double deadline = now_seconds() + opt.patience, left;
	int warned = 0;

	for (;;) {
		left = deadline - now_seconds();
		/* A negative patience would mean "forever" to mq_connect_retry. */
		if (mq_connect_retry(&mq, left > 0 ? left : 0, NULL) < 0) {
			refusing = 0;	/* unreachable, or it refused the login: said already */
			return -1;
		}
		if ((opt.exchange ? mq_check_exchange(&mq, opt.exchange) : mq_declare(&mq, &t)) == 0) {
			if (lost_from[0] != '\0')
				warning("broker %s: connected again%s", mq.target,
				    strcmp(lost_from, mq.target) != 0 ? " (another node)" : "");
			lost_from[0] = '\0';
			return 0;
		}
		/* The broker answered (or kept silent) about the queue, unless it is shutting down. */
		refusing = mq.code != AMQP_CONNECTION_FORCED;
		if (mq.permanent)
			give_up(b, mq.why);
		mq_close(&mq);
		left = deadline - now_seconds();
		if (left <= 0)
			return -1;
		if (refusing && !warned++)
			warning("broker %s is up, but %s does not work (%s); trying again for %.0f s",
			    mq.target, dest, mq.why, left);
		sleep_seconds(fmin(backoff_next(&wait), left), NULL);
	}
}

/* While stdin is quiet, keep answering the broker's heartbeats. */
static void
wait_input(struct jsonl *r)
{
	while (!jsonl_pending(r)) {
		struct pollfd p[2] = {
			{ .fd = r->fd, .events = POLLIN },
			{ .fd = mq_fd(&mq), .events = POLLIN },
		};
		struct mq_event ev;

		poll(p, mq_connected(&mq) ? 2 : 1, 1000);
		if (!mq_connected(&mq))
			continue;
		do {
			mq_next_event(&mq, 0, &ev);
			free(ev.body);
		} while (ev.type != MQ_NONE && ev.type != MQ_CLOSED);
		if (ev.type == MQ_CLOSED) {
			warning("broker %s: %s; reconnecting when the next line comes", mq.target, mq.why);
			snprintf(lost_from, sizeof lost_from, "%s", mq.target);
		}
	}
}

static void
add_line(struct batch *b, long lineno, const char *s, size_t n)
{
	struct line *l = &b->v[b->n++];

	/* The line is sent as written: re-printing could round large numbers. */
	while (n > 0 && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' ||
	    s[n - 1] == '\t'))
		n--;
	memset(l, 0, sizeof *l);
	l->lineno = lineno;
	l->len = n;
	l->body = xmalloc(n + 1);
	memcpy(l->body, s, n);
	b->left++;
}

/* Read lines into the batch: until it is full or no more input is waiting. 1 at EOF. */
static int
fill(struct batch *b, struct jsonl *r)
{
	while (b->n < b->cap) {
		const char *why;
		cJSON *obj;
		int rc;

		if (b->n > 0 && !jsonl_pending(r))
			return 0;
		if (b->n == 0)
			wait_input(r);
		rc = jsonl_next(r, &obj, &why);
		if (rc == JSONL_EOF)
			return 1;
		if (rc == JSONL_BAD) {
			warn_line(r->lineno, "%s", why);
			bad_lines++;
			continue;
		}
		cJSON_Delete(obj);
		add_line(b, r->lineno, r->buf, strlen(r->buf));
	}
	return 0;
}

/* Refuse a line before it is sent: the broker would close the channel over it. */
static void
refuse_line(struct batch *b, struct line *l, const char *why)
{
	warn_line(l->lineno, "the broker refused it: %s; not published", why);
	l->done = 1;
	too_large++;
	b->left--;
}

/*
 * Publish the lines not yet published on this connection, in order, up to a
 * line longer than any the broker has confirmed (see accepted_max): that one
 * goes out only when nothing else is awaiting its confirm, and alone.
 */
static int
publish_unsent(struct batch *b)
{
	const char *exchange = opt.exchange ? opt.exchange : "";
	const char *key = opt.exchange ? opt.key : opt.queue;
	size_t start = 0;

	/*
	 * Such a line behind lines the broker nacked would wait until they are
	 * given up: at the start of a round it goes first, alone.
	 */
	for (size_t i = 0; b->inflight == 0 && i < b->n; i++) {
		const struct line *l = &b->v[i];

		if (l->done || l->generation == mq.generation || l->len > (size_t)opt.max_size)
			continue;
		if (l->len > accepted_max) {
			start = i;
			break;
		}
		if (l->nacks == 0)
			break;
	}
	for (size_t i = start; i < b->n; i++) {
		struct line *l = &b->v[i];
		uint64_t seq;

		if (l->done || l->generation == mq.generation)
			continue;
		if (l->len > (size_t)opt.max_size) {
			char why[128];

			snprintf(why, sizeof why, "message size %zu is larger than the broker's "
			    "max size %ld", l->len, opt.max_size);
			refuse_line(b, l, why);
			continue;
		}
		if (l->len > accepted_max && b->inflight > 0)
			return 0;
		if (mq_publish(&mq, exchange, key, l->body, l->len, 0, &seq) < 0)
			return -1;
		l->generation = mq.generation;
		mq_confirms_add(&b->waits, &mq, seq, l, 0);
		b->inflight++;
		if (l->len > accepted_max)
			return 0;
	}
	return 0;
}

/*
 * The broker closed the channel because a message was over its
 * max_message_size ("message size N is larger than [configured] max size M"):
 * learn M, and refuse the unconfirmed lines above it. 1 if that was it.
 */
static int
size_refused(struct batch *b)
{
	const char *p = strstr(mq.why, "max size ");
	long max;
	int found = 0;

	if (mq.code != AMQP_PRECONDITION_FAILED || strstr(mq.why, "message size ") == NULL ||
	    p == NULL || (max = strtol(p + 9, NULL, 10)) <= 0)
		return 0;
	if (max < opt.max_size)
		opt.max_size = max;
	for (size_t i = 0; i < b->n; i++) {
		struct line *l = &b->v[i];
		char why[128];

		if (l->done || l->generation == 0 || l->len <= (size_t)max)
			continue;
		snprintf(why, sizeof why, "message size %zu is larger than its max size %ld",
		    l->len, max);
		refuse_line(b, l, why);
		found = 1;
	}
	return found;
}

/* A line's confirm: an ack counts it; a nack has it published again, up to MAX_NACKS times. */
static int
line_confirmed(const struct mq_confirm_wait *w, int acked, void *arg)
{
	struct batch *b = arg;
	struct line *l = w->item;

	b->inflight--;
	/* Acked or nacked, the broker took a message this long without closing the channel. */
	if (l->len > accepted_max)
		accepted_max = l->len;
	if (acked) {
		b->acked = 1;
		l->done = 1;
		confirmed++;
	} else if (++l->nacks >= MAX_NACKS) {
		warn_line(l->lineno, "the broker refused it: %s nacked it %d times (full, or not "
		    "working); not published", dest, l->nacks);
		l->done = 1;
		refused++;
	} else {
		l->generation = 0;
		b->again++;
		return 0;
	}
	b->left--;
	return 0;
}

/*
 * Read confirms until every published line is settled: 0; 1: some were
 * nacked (b->again), to publish again together after one backoff; -1: the connection was lost or the broker closed it (refusing set
 * if it answered with a reason), or the queue confirmed nothing for half
 * the patience (the whole of it, counted from the first time, when a new
 * connection did not help either), though the broker kept the connection
 * alive: refusing, and b->trouble_since says since when.
 */
static int
await_confirms(struct batch *b)
{
	double quiet_since = now_seconds(), limit;

	b->again = 0;
	while (b->inflight > 0) {
		struct mq_event ev;

		mq_next_event(&mq, 1.0, &ev);
		free(ev.body);
		switch (ev.type) {
		case MQ_ACK:
		case MQ_NACK:
			/* The broker answers: whatever failed before is over. */
			quiet_since = now_seconds();
			b->trouble_since = -1;
			mq_confirms_apply(&b->waits, &ev, line_confirmed, b);
			break;
		case MQ_RETURN:
			/* Its ack follows: it counts as confirmed, then is taken back at the end. */
			if (returned++ == 0)
				warning("a line was returned by the broker (%s): nothing is bound to "
				    "exchange \"%s\" with key \"%s\"", mq.why,
				    opt.exchange ? opt.exchange : "", opt.exchange ? opt.key : opt.queue);
			break;
		case MQ_CLOSED:
			/* A close with a reason, other than the broker shutting down. */
			refusing = mq.code != 0 && mq.code != AMQP_CONNECTION_FORCED;
			return -1;
		default:
			limit = b->trouble_since >= 0 ? b->trouble_since + opt.patience :
			    quiet_since + opt.patience / 2;
			if (now_seconds() > limit) {
				if (b->trouble_since < 0)
					b->trouble_since = quiet_since;
				mq_drop(&mq);
				refusing = 1;
				snprintf(mq.why, sizeof mq.why, "published lines unconfirmed for %.0f "
				    "s (%zu awaiting), though the connection is alive", now_seconds() -
				    b->trouble_since, b->inflight);
				return -1;
			}
		}
	}
	return b->again > 0;
}

/*
 * Publish the batch until the broker confirmed every line; exits 69 if it
 * stays away. The lines nacked in a round are published again together,
 * after one backoff that starts over once the broker acks lines again.
 */
static void
confirm_batch(struct batch *b)
{
	struct backoff nack_wait = BACKOFF_MQ_NACK, lost_wait = BACKOFF_MQ_CONNECT;

	b->trouble_since = -1;
	while (b->left > 0) {
		int rc = 0;

		if (!mq_connected(&mq) && link_up(b) < 0)
			give_up(b, refusing ? mq.why : "unavailable");
		if (publish_unsent(b) < 0)
			refusing = 0;	/* a write failed: the connection is gone */
		if (!mq_connected(&mq) || (rc = await_confirms(b)) < 0) {
			char why[sizeof mq.why + 64];

			b->inflight = 0;
			if (size_refused(b))
				continue;	/* the broker's answer: not a failure */
			if (b->trouble_since < 0)
				b->trouble_since = now_seconds();
			else if (now_seconds() - b->trouble_since >= opt.patience) {
				snprintf(why, sizeof why, "%s%s", refusing ? "" :
				    "the connection keeps failing: ", mq.why);
				give_up(b, why);
			}
			if (refusing)
				warning("broker %s is up, but %s does not work (%s); publishing %zu "
				    "unconfirmed lines again on a new connection", mq.target, dest,
				    mq.why, b->left);
			else
				warning("broker %s: %s; reconnecting to publish %zu unconfirmed lines "
				    "again", mq.target, mq.why, b->left);
			snprintf(lost_from, sizeof lost_from, "%s", mq.target);
			/* A broker that takes the connection and drops it again: no storm. */
			sleep_seconds(backoff_next(&lost_wait), NULL);
			continue;
		}
		/* A round settled on a working connection: backoffs start over from there. */
		backoff_reset(&lost_wait);
		if (b->acked)
			backoff_reset(&nack_wait);
		b->acked = 0;
		if (rc == 1) {
			double d = backoff_next(&nack_wait);

			debugx("%zu lines nacked by %s; publishing them again in %.2f s", b->again,
			    dest, d);
			sleep_seconds(d, NULL);
		}
	}
}

static void
clear(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->v[i].body);
	b->n = b->left = b->inflight = 0;
}

static void
parse_options(int argc, char **argv, long *batch)
{
	static const struct option opts[] = {
		{ "queue", required_argument, NULL, 'q' },
		{ "exchange", required_argument, NULL, 'e' },
		{ "routing-key", required_argument, NULL, 'k' },
		{ "max-deliveries", required_argument, NULL, 'm' },
		{ "batch", required_argument, NULL, 'b' },
		{ "patience", required_argument, NULL, 'P' },
		{ "max-message-size", required_argument, NULL, 'M' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c, queue_given = 0;

	while ((c = getopt_long(argc, argv, "q:e:k:h", opts, NULL)) != -1) {
		switch (c) {
		case 'q': opt.queue = optarg; queue_given = 1; break;
		case 'e': opt.exchange = optarg; break;
		case 'k': opt.key = optarg; break;
		case 'm': opt.max_deliveries = option_long("--max-deliveries", optarg, 1, 1000); break;
		case 'b': *batch = option_long("--batch", optarg, 1, 65536); break;
		case 'P': opt.patience = option_seconds("--patience", optarg, 86400); break;
		case 'M': opt.max_size = option_long("--max-message-size", optarg, 1, 512L << 20); break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (optind != argc) {
		warning("unexpected argument \"%s\"", argv[optind]);
		usage(stderr, EXIT_USAGE);
	}
	if (opt.exchange != NULL && queue_given) {
		warning("-q and -e exclude each other");
		usage(stderr, EXIT_USAGE);
	}
	if ((opt.exchange == NULL) != (opt.key == NULL)) {
		warning("-e EXCHANGE and -k ROUTING_KEY go together");
		usage(stderr, EXIT_USAGE);
	}
	if (opt.exchange == NULL && (*opt.queue == '\0' || strlen(opt.queue) > 200)) {
		warning("option -q: a queue name has 1 to 200 bytes");
		usage(stderr, EXIT_USAGE);
	}
}

int
main(int argc, char **argv)
{
	struct batch b = { 0 };
	struct jsonl r;
	long batch = 256;
	int eof = 0;

	log_init(argv[0]);
	parse_options(argc, argv, &batch);
	if (opt.exchange != NULL)
		snprintf(dest, sizeof dest, "exchange \"%s\" with key \"%s\"", opt.exchange,
		    opt.key);
	else
		snprintf(dest, sizeof dest, "queue \"%s\"", opt.queue);
	b.cap = (size_t)batch;
	b.v = xcalloc(b.cap, sizeof *b.v);
	mq_init(&mq, MQ_HEARTBEAT, 1);
	if (link_up(&b) < 0)
		give_up(&b, refusing ? mq.why : "unavailable");
	jsonl_open(&r, stdin);
	while (!eof) {
		eof = fill(&b, &r);
		if (b.n > 0)
			confirm_batch(&b);
		clear(&b);
	}
	if (r.error != 0)
		die(EXIT_OUTPUT, "reading standard input: %s; %ld lines before line %ld were "
		    "confirmed", strerror(r.error), confirmed, r.lineno + 1);
	jsonl_close(&r);
	free(b.v);
	mq_confirms_free(&b.waits);
	mq_close(&mq);
	if (returned > 0 || refused > 0)
		die(EXIT_UNAVAILABLE, "%ld lines were confirmed; %ld were returned unroutable and "
		    "%ld refused by the broker (%s)", confirmed - returned, returned, refused, dest);
	if (too_large > 0)
		die(EXIT_BAD_INPUT, "%ld lines were confirmed; %ld too large for the broker were "
		    "not published", confirmed, too_large);
	return bad_lines > 0 ? EXIT_BAD_INPUT : EXIT_OK;
}
