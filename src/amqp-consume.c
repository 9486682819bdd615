/* amqp-consume: feed a queue's messages to one long-lived child, a line each, and ack them on their answers. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/amqp.h"
#include "lib/buf.h"
#include "lib/hash.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/num.h"
#include "lib/policy.h"
#include "lib/retry.h"
#include "lib/spawn.h"
#include "lib/xalloc.h"

/*
 * A message we hold: received and not yet settled. The held list is in
 * delivery order (so, on one connection, in delivery-tag order): a run of
 * answered messages at its head is acked with one multiple ack.
 */
enum verdict { V_NONE, V_ACK, V_RETRY, V_DEFER, V_DEAD, V_PARK };

struct msg {
	struct msg *prev, *next;	/* the held list */
	struct msg *snext;	/* in the child's hands: next sent (in-order) or next with its key (--match) */
	unsigned generation;	/* the connection it came on: its tag means nothing on another */
	uint64_t tag;
	char *body;
	size_t len;
	long attempts;		/* x-attempts: times it went through the retry queue */
	double since;		/* when it was delivered (the broker's consumer_timeout clock) */
	unsigned group;		/* suspect group (in a dead child's hands), 0: none */
	unsigned sent:1;	/* in the child's hands */
	unsigned alone:1;	/* killed a child before: give it to the child alone */
	unsigned returned:1;	/* copied back (consumer timeout) or parked: its answer is void */
	unsigned released:1;	/* returned, and its original acked on the copy's confirm */
	unsigned park:1;	/* the child said it will take long: park it if it holds up acks */
	enum verdict verdict;	/* its answer, read but not yet settled */
	char key[];		/* --match: the canonical text of its FIELD */
};

struct child {
	pid_t pid;		/* 0: not running */
	int in, out;		/* our ends of its stdin and stdout */
	char *wbuf, *rbuf;	/* bytes for its stdin; bytes from its stdout not yet a line */
	size_t wlen, woff, wcap, rlen, rcap;
	size_t written, answered;	/* bytes it was given; of which answered messages */
	int broken;		/* it printed something that is not an answer: killed */
	char broken_why[400];
	double restart_at, down_since;	/* down_since: first death since an answer, or -1 */
	struct backoff backoff;
};

static struct {
	const char *queue, *match, *metrics, *save;
	long prefetch, max_deliveries, retry_ms;
	double idle_exit, patience, grace, consumer_timeout, report_every;
	char **argv;
} opt = { QUEUE_DEFAULT, NULL, NULL, NULL, -1, MAX_DELIVERIES_DEFAULT, RETRY_DELAY_MS_DEFAULT,
	-1, -1, GRACE_DEFAULT, CONSUMER_TIMEOUT_DEFAULT, WAIT_REPORT_INTERVAL, NULL };

static struct mq mq;
static struct child child = { .backoff = BACKOFF_CHILD, .down_since = -1 };
static struct msg *head, *last;		/* the held list */
static long nheld, nsent;		/* held; of which in the child's hands */
static struct msg *sent_head, **sent_tail = &sent_head;	/* in-order: the hands, oldest first */
static struct msg *alone_in_hands;	/* a message given alone */
/* --match: key -> slot of the messages in the child's hands with that key, oldest first. */
static struct keyslot { const char *key; struct msg *first, *last; } *slots;
static size_t nslots, slots_cap, dead_slots;
static struct hash keys = HASH_MAP;
/* Suspects: groups of messages that were in a dead child's hands; the first is on trial. */
static struct group { unsigned id; long n; } *groups;
static size_t ngroups, groups_cap;
static unsigned next_group = 1;
static struct hash guilty = HASH_SET;	/* hashes of the bodies of messages that killed a child */
/* Retry and returned copies published but not yet confirmed: each original is acked on its copy's confirm. */
static struct mq_confirms retry_copies;
static uint64_t ack_upto;		/* acks owed, up to this tag, sent as one (0: none) */
static unsigned ack_generation;		/* the connection ack_upto belongs to */
static long ack_count;			/* messages ack_upto stands for */
static int copies_confirmed;		/* a returned message's copy was confirmed: settle again */
static char *retry_queue, *dead_queue;
static volatile sig_atomic_t stop_signals;
static int draining;			/* no new messages: finish those in flight, then exit */
static double drain_since;
static int linked;			/* connected, declared and consuming */
static double connect_at, lost_since = -1, last_activity, last_answer, next_lost_report;
static double stall_since, next_stall_report, next_timeout_scan;	/* stall_since: last answer, or first message given since */
static int lost_refusing;		/* the broker is up, the queue does not work */
static struct backoff connect_backoff = BACKOFF_MQ_CONNECT;
/* --metrics: what happened since start, counted where it happens; written by write_metrics(). */
static struct {
	long acked, retried, deferred, dead_answer, dead_invalid, returned, parked, blamed;
	long restarts, deaths_exited, deaths_signalled, deaths_broken;
} count;
static double started, next_metrics, next_metrics_warning;
static char *metrics_tmp;		/* FILE.tmp, renamed over FILE */
static struct buf metrics_text;

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = {
		"[-q QUEUE] [-p PREFETCH] [--match FIELD] [--retry-delay S]\n"
		"[--max-deliveries N] [--idle-exit S] [--grace S] [--patience S]\n"
		"[--consumer-timeout S] [--metrics FILE] -- COMMAND [ARG...]",
		"--save FILE [-q QUEUE] [-p PREFETCH] [--idle-exit S] [--patience S]",
		NULL,
	};
	static const struct usage_option options[] = {
		{ "-q, --queue QUEUE", "the queue to consume (default " QUEUE_DEFAULT ")" },
		{ "-p, --prefetch N", "messages in flight at most (default 64)" },
		{ "--match FIELD", "the child answers in any order, naming each message by FIELD" },
		{ "--retry-delay S", "delay of a \"retry\" answer, in seconds (default 3)" },
		{ "--max-deliveries N", "deliveries before a message is dead-lettered (default 5)" },
		{ "--idle-exit S", "stop once nothing was delivered or answered for S seconds" },
		{ "--grace S", "seconds a stopping child may go without answering (default 10)" },
		{ "--patience S", "exit 69 when the broker or the child stays away S seconds (default never)" },
		{ "--consumer-timeout S", "the broker's consumer_timeout, in seconds (default 1800)" },
		{ "--metrics FILE", "write Prometheus metrics to FILE every 5 s and at exit" },
		{ "--save FILE", "append the queue's messages to FILE (no command), ack once written" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

static void
on_signal(int sig)
{
	(void)sig;
	stop_signals++;
}

static void *
grow(void *p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return p;
	while (*cap < need)
		*cap = *cap ? *cap * 2 : 4096;
	return xreallocarray(p, *cap, size);
}

static void
finish(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* --- the key index (--match) ------------------------------------------------ */

static int
slot_is(const void *ctx, size_t val)
{
	return slots[val].key != NULL && strcmp(slots[val].key, ctx) == 0;
}

/* Forget every key (nothing is in the child's hands any more). */
static void
keys_clear(void)
{
	hash_free(&keys);
	keys = HASH_MAP;
	nslots = dead_slots = 0;
}

/* Slots whose messages were all answered are dropped once they are most of the table. */
static void
keys_compact(void)
{
	size_t n = 0;

	hash_free(&keys);
	keys = HASH_MAP;
	for (size_t i = 0; i < nslots; i++) {
		if (slots[i].key == NULL)
			continue;
		slots[n] = slots[i];
		hash_add(&keys, hash_string(slots[n].key), slot_is, slots[n].key, n, NULL);
		n++;
	}
	nslots = n;
	dead_slots = 0;
}

/* m goes into the child's hands: last of its key. */
static void
keys_add(struct msg *m)
{
	uint64_t h = hash_string(m->key);
	size_t i;

	m->snext = NULL;
	if (hash_find(&keys, h, slot_is, m->key, &i) == 0) {
		slots[i].last->snext = m;
		slots[i].last = m;
		return;
	}
	if (dead_slots > 1024 && dead_slots > nslots / 2)
		keys_compact();
	slots = grow(slots, &slots_cap, nslots + 1, sizeof *slots);
	i = nslots++;
	slots[i] = (struct keyslot){ m->key, m, m };
	hash_add(&keys, h, slot_is, m->key, i, NULL);
}

/* The oldest message in the child's hands with this key, taken out of the index; NULL if none. */
static struct msg *
keys_take(const char *key)
{
	struct msg *m;
	size_t i;

	if (hash_find(&keys, hash_string(key), slot_is, key, &i) < 0)
		return NULL;
	m = slots[i].first;
	if ((slots[i].first = m->snext) == NULL) {
		slots[i].key = NULL;
		slots[i].last = NULL;
		dead_slots++;
	} else {
		slots[i].key = slots[i].first->key;
	}
	return m;
}

/* The oldest message in the child's hands with this key that may still be parked; NULL if none. */
static struct msg *
keys_peek(const char *key)
{
	struct msg *m;
	size_t i;

	if (hash_find(&keys, hash_string(key), slot_is, key, &i) < 0)
		return NULL;
	for (m = slots[i].first; m != NULL && (m->returned || m->park); m = m->snext)
		;
	return m;
}

/*
 * The canonical key of an object's FIELD: a string as it is, an integer as
 * its decimal digits. NULL (and *why) when there is none.
 */
static const char *
key_of(const cJSON *v, char *buf, size_t n, const char **why)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(v, opt.match);

	if (cJSON_IsString(f) && f->valuestring[0] != '\0')
		return f->valuestring;
	if (cJSON_IsNumber(f) && f->valuedouble == (double)(long long)f->valuedouble &&
	    f->valuedouble > -9007199254740992.0 && f->valuedouble < 9007199254740992.0) {
		snprintf(buf, n, "%lld", (long long)f->valuedouble);
		return buf;
	}
	*why = f == NULL ? "has no match field" : "has a match field that is not a string or an integer";
	return NULL;
}

/* --- suspects --------------------------------------------------------------- */

static unsigned
trial(void)
{
	return ngroups > 0 ? groups[0].id : 0;
}

static void
group_push(int front, unsigned id, long n)
{
	groups = grow(groups, &groups_cap, ngroups + 1, sizeof *groups);
	if (front) {
		memmove(groups + 1, groups, ngroups * sizeof *groups);
		groups[0] = (struct group){ id, n };
	} else {
		groups[ngroups] = (struct group){ id, n };
	}
	ngroups++;
}

/* A member left the held list: a group with none left is done. */
static void
group_leave(struct msg *m)
{
	for (size_t i = 0; m->group != 0 && i < ngroups; i++) {
		if (groups[i].id != m->group)
			continue;
		if (--groups[i].n == 0) {
			memmove(groups + i, groups + i + 1, (ngroups - i - 1) * sizeof *groups);
			ngroups--;
		}
		break;
	}
	m->group = 0;
}

/* --- the child ------------------------------------------------------------ */

static void
set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/*
 * Start the child on two close-on-exec pipes. A command that cannot be run
 * at all (posix_spawnp reports the failed exec) is fatal before any message
 * is taken; later (a deploy replacing it) it is tried again with backoff.
 */
static void
start_child(int first)
{
	int in[2], out[2], rc;
	struct spawn_fds fds;

	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		die(EXIT_NOMEM, "creating pipes for %s: %s", opt.argv[0], strerror(errno));
	fds = (struct spawn_fds){ .in = in[0], .out = out[1], .err = -1 };
	rc = spawn_child(&child.pid, opt.argv, &fds, SPAWN_OWN_GROUP);
	close(in[0]);
	close(out[1]);
	if (rc != 0) {
		double delay;

		close(in[1]);
		close(out[0]);
		child.pid = 0;
		if (first)
			die(EXIT_UNAVAILABLE, "cannot run %s: %s; no message was taken", opt.argv[0],
			    strerror(rc));
		if (child.down_since < 0)
			child.down_since = now_seconds();
		delay = backoff_next(&child.backoff);
		child.restart_at = now_seconds() + delay;
		warning("cannot run %s: %s; trying again in %.1f s", opt.argv[0], strerror(rc),
		    delay);
		return;
	}
	child.in = in[1];
	child.out = out[0];
	set_nonblock(child.in);
	set_nonblock(child.out);
	child.wlen = child.woff = child.rlen = child.written = child.answered = 0;
	child.broken = 0;
	if (!first)
		count.restarts++;
	last_activity = now_seconds();	/* a restart is not idleness */
	debugx("started %s (pid %d)", opt.argv[0], (int)child.pid);
}

static void
describe_status(char *buf, size_t n, int status)
{
	if (WIFEXITED(status))
		snprintf(buf, n, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, n, "was killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, n, "stopped");
}

/* Close its stdin and wait for it, sending SIGTERM then SIGKILL if it lingers. */
static void
stop_child(void)
{
	double t0 = now_seconds();
	int status, sig = 0;

	if (child.pid == 0)
		return;
	if (child.in >= 0)
		close(child.in);
	child.in = -1;
	while (waitpid(child.pid, &status, WNOHANG) == 0) {
		double waited = now_seconds() - t0;

		if (sig == 0 && waited > opt.grace)
			kill(child.pid, sig = SIGTERM);
		else if (sig == SIGTERM && waited > opt.grace + 5)
			kill(child.pid, sig = SIGKILL);
		sleep_seconds(0.02, NULL);
	}
	close(child.out);
	child.pid = 0;
}

/* --- messages --------------------------------------------------------------- */

static void
unlink_msg(struct msg *m)
{
	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		head = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
	else
		last = m->prev;
	m->prev = m->next = NULL;
	nheld--;
	group_leave(m);
}

static void
free_msg(struct msg *m)
{
	free(m->body);
	free(m);
}

/* Is a message held before the broker, by the connection we have now? */
static int
this_connection(const struct msg *m)
{
	return mq_connected(&mq) && m->generation == mq.generation;
}

/* ... and is it ours to settle (not returned: its copy stands for it)? */
static int
current(const struct msg *m)
{
	return this_connection(m) && !m->returned;
}

/* Give a message back to the broker: to the queue, or to Q.dead when !requeue. */
static void
reject(struct msg *m, int requeue)
{
	if (current(m) && mq_reject(&mq, m->tag, requeue) < 0)
		warning("broker: %s", mq.why);
}

/*
 * Messages not in the child's hands: those of a dead connection will be
 * redelivered (forget them, the answered too); else give back the unsent
 * (the answered wait for their ack).
 */
static void
forget_unsent(int requeue)
{
	for (struct msg *m = head, *next; m != NULL; m = next) {
		next = m->next;
		if (m->sent || (requeue && m->verdict != V_NONE))
			continue;
		if (requeue)
			reject(m, 1);
		unlink_msg(m);
		free_msg(m);
	}
}

/*
 * A message body must be one JSON object on one line (with --match, with a
 * usable FIELD, whose key is copied to key); *why says what else it is.
 */
static int
valid_body(char *body, size_t *len, const char **why, char *key, size_t keysize)
{
	const char *end = NULL, *k;
	char num[32];
	cJSON *v;

	while (*len > 0 && strchr(" \t\r\n", body[*len - 1]) != NULL)
		body[--*len] = '\0';
	if (memchr(body, '\0', *len) != NULL)
		return *why = "contains a NUL byte", 0;
	if (memchr(body, '\n', *len) != NULL)
		return *why = "spans several lines", 0;
	v = cJSON_ParseWithLengthOpts(body, *len, &end, 0);
	if (v == NULL)
		return *why = "is not valid JSON", 0;
	if (!cJSON_IsObject(v)) {
		cJSON_Delete(v);
		return *why = "is not a JSON object", 0;
	}
	if (end != body + *len) {
		cJSON_Delete(v);
		return *why = "has characters after the JSON value", 0;
	}
	if (opt.match != NULL) {
		if ((k = key_of(v, num, sizeof num, why)) == NULL || strlen(k) >= keysize) {
			if (k != NULL)
				*why = "has a match field longer than 1000 bytes";
			cJSON_Delete(v);
			return 0;
		}
		strcpy(key, k);
	}
	cJSON_Delete(v);
	return 1;
}

static void
on_delivery(struct mq_event *ev)
{
	static char key[1001];
	struct msg *m;
	const char *why;
	size_t klen;

	last_activity = now_seconds();
	if (draining) {
		/* Delivered before the broker saw our cancel: not ours to start any more. */
		if (mq_reject(&mq, ev->tag, 1) < 0)
			warning("broker: %s", mq.why);
		free(ev->body);
		return;
	}
	key[0] = '\0';
	if (!valid_body(ev->body, &ev->len, &why, key, sizeof key)) {
		count.dead_invalid++;
		warning("a message of queue %s %s%s%s: dead-lettered to %s without running %s",
		    opt.queue, why, opt.match ? " " : "", opt.match ? opt.match : "", dead_queue,
		    opt.argv[0]);
		if (mq_reject(&mq, ev->tag, 0) < 0)
			warning("broker: %s", mq.why);
		free(ev->body);
		return;
	}
	klen = opt.match != NULL ? strlen(key) + 1 : 0;
	m = xcalloc(1, sizeof *m + klen);
	memcpy(m->key, key, klen);
	m->generation = mq.generation;
	m->tag = ev->tag;
	m->body = ev->body;
	m->len = ev->len;
	m->attempts = ev->attempts;
	m->since = last_activity;
	/* Only a message that killed a child before is given alone; other redeliveries are not suspect. */
	if (ev->redelivered && guilty.len > 0 && hash_find(&guilty, hash_string(m->body), NULL,
	    NULL, NULL) == 0)
		m->alone = 1;
	m->prev = last;
	if (last != NULL)
		last->next = m;
	else
		head = m;
	last = m;
	nheld++;
}

/* Put m in the child's hands. */
static void
give(struct msg *m)
{
	child.wbuf = grow(child.wbuf, &child.wcap, child.wlen + m->len + 1, 1);
	memcpy(child.wbuf + child.wlen, m->body, m->len);
	child.wlen += m->len;
	child.wbuf[child.wlen++] = '\n';
	m->sent = 1;
	if (nsent++ == 0) {
		stall_since = now_seconds();
		next_stall_report = stall_since + opt.report_every;
	}
	if (opt.match != NULL) {
		keys_add(m);
	} else {
		m->snext = NULL;
		*sent_tail = m;
		sent_tail = &m->snext;
	}
}

/*
 * Write held messages to the child in order, at full concurrency, except
 * suspects: only the group on trial goes (with fresh messages), and a
 * message that killed a child before goes alone.
 */
static void
feed_child(void)
{
	unsigned on_trial = trial();

	if (child.pid == 0 || child.in < 0 || draining || alone_in_hands != NULL)
		return;
	for (struct msg *m = head; m != NULL; m = m->next) {
		if (m->sent || m->verdict != V_NONE)
			continue;
		if (m->alone) {
			if (nsent == 0) {
				give(m);
				alone_in_hands = m;
			}
			return;
		}
		if (m->group == 0)
			give(m);
	}
	/* The suspects on trial last: a child working in order answers the others first. */
	for (struct msg *m = head; on_trial != 0 && m != NULL; m = m->next)
		if (!m->sent && m->verdict == V_NONE && m->group == on_trial)
			give(m);
}

static void
write_child(void)
{
	while (child.in >= 0 && child.woff < child.wlen) {
		ssize_t n = write(child.in, child.wbuf + child.woff, child.wlen - child.woff);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			/* EAGAIN: later. EPIPE: it died; the reaper will notice. */
			if (errno != EAGAIN)
				child.woff = child.wlen;
			break;
		}
		child.woff += (size_t)n;
		child.written += (size_t)n;
	}
	if (child.woff == child.wlen)
		child.woff = child.wlen = 0;
}

/* --- answers ---------------------------------------------------------------- */

/* Marks the confirm of a copy whose original stays held (returned): see retry_copy_confirmed(). */
static char returned_copy;

/* Copy m to Q.retry.<ms> (attempts as given) or back to Q; its original is acked on the confirm. */
static void
copy_back(struct msg *m, const char *queue, long attempts)
{
	uint64_t seq;

	if (mq_publish(&mq, "", queue, m->body, m->len, attempts, &seq) < 0)
		return;	/* connection lost: the broker will redeliver the original */
	mq_confirms_add(&retry_copies, &mq, seq, m->returned ? &returned_copy : NULL, m->tag);
	debugx("delivery tag %llu copied to %s with x-attempts %ld", (unsigned long long)m->tag,
	    queue, attempts);
}

/* Send the acks owed as one basic.ack with multiple=true; a lost connection voids them. */
static void
flush_acks(void)
{
	uint64_t tag = ack_upto;

	ack_upto = 0;
	if (tag == 0 || !mq_connected(&mq) || ack_generation != mq.generation)
		return;
	if (mq_ack_multiple(&mq, tag) < 0)
		warning("broker: %s", mq.why);
	else
		debugx("acked %ld messages, up to delivery tag %llu, in one ack", ack_count,
		    (unsigned long long)tag);
}

/* Does a multiple ack up to tag cover an original whose copy is not yet confirmed? */
static int
covers_copy(uint64_t tag)
{
	if (retry_copies.generation != mq.generation)
		return 0;
	for (size_t i = 0; i < retry_copies.n; i++)
		if (retry_copies.v[i].tag < tag)
			return 1;
	return 0;
}

/*
 * Settle an answered message. An ack is owed rather than sent when m was at
 * the head of the held list (prefix): one multiple ack up to the highest tag
 * covers every unacked tag below it, and the held messages before it are all
 * answered or already acked. The only other lower tags kept unacked are
 * originals awaiting their copy's confirm: a multiple ack must not cover
 * them, so m is then acked singly, as is a message answered out of order.
 */
static void
settle(struct msg *m, int prefix)
{
	unlink_msg(m);
	/* A message of an old connection is redelivered by the broker: nothing to do. */
	if (!current(m))
		return;
	switch (m->verdict) {
	case V_RETRY:
	case V_DEFER:
		++*(m->verdict == V_RETRY ? &count.retried : &count.deferred);
		flush_acks();
		copy_back(m, retry_queue, m->attempts + (m->verdict == V_RETRY));
		break;
	case V_DEAD:
		count.dead_answer++;
		if (mq_reject(&mq, m->tag, 0) < 0)
			warning("broker: %s", mq.why);
		break;
	default:
		count.acked++;
		if (prefix && !covers_copy(m->tag)) {
			ack_count = ack_upto != 0 ? ack_count + 1 : 1;
			ack_upto = m->tag;
			ack_generation = mq.generation;
		} else if (mq_ack(&mq, m->tag) < 0) {
			warning("broker: %s", mq.why);
		}
	}
}

/*
 * Park m: it holds up the acks of messages answered after it, and the child
 * said it will take long. A copy goes to the retry queue (x-attempts
 * unchanged) and the original is acked on its confirm, so it holds neither
 * an ack range nor a prefetch slot; the child's answer to it is void, and
 * the copy, back after the retry delay, is answered from the child's own
 * record of what it did.
 */
static void
park(struct msg *m)
{
	m->returned = 1;
	count.parked++;
	copy_back(m, retry_queue, m->attempts);
}

/* Is any message after m answered (and so waiting for m before its ack can join a range)? */
static int
answered_after(const struct msg *m)
{
	for (m = m->next; m != NULL; m = m->next)
		if (m->verdict != V_NONE)
			return 1;
	return 0;
}

/*
 * Settle what may be settled, in held order. The answered run at the head
 * (skipping returned messages already acked) is acked with one multiple ack.
 * Behind an unanswered message the answered are acked singly, except behind
 * a returned message whose copy is not yet confirmed (it is acked in a few
 * milliseconds): they wait for it, and join the range. A message the child
 * marked with "park" is parked once it holds up an answered one.
 */
static void
settle_answered(void)
{
	int prefix = 1, single = 0;

	copies_confirmed = 0;
	for (struct msg *m = head, *next; m != NULL; m = next) {
		next = m->next;
		if (m->verdict == V_NONE && m->park && !m->returned && current(m) &&
		    answered_after(m))
			park(m);
		if (m->returned && (m->released || !this_connection(m)))
			continue;
		if (m->returned) {
			prefix = 0;
			continue;
		}
		if (m->verdict == V_NONE) {
			prefix = 0;
			single = 1;
			continue;
		}
		if (prefix || single || m->verdict != V_ACK) {
			settle(m, prefix);
			free_msg(m);
		}
	}
	flush_acks();
}

static enum verdict
verdict_of(const char *status)
{
	static const struct { const char *name; enum verdict v; } known[] = {
		{ "success", V_ACK }, { "failed", V_ACK }, { "retry", V_RETRY },
		{ "defer", V_DEFER }, { "dead", V_DEAD }, { "park", V_PARK },
	};

	for (size_t i = 0; status != NULL && i < sizeof known / sizeof known[0]; i++)
		if (strcmp(status, known[i].name) == 0)
			return known[i].v;
	return V_NONE;
}

/* The child printed something that is not an answer: say what, and kill it. */
static void
broken_child(const char *line, size_t len, const char *why)
{
	char shown[201];
	size_t n = len < 200 ? len : 200;

	for (size_t i = 0; i < n; i++)
		shown[i] = (unsigned char)line[i] < 0x20 ? '?' : line[i];
	shown[n] = '\0';
	snprintf(child.broken_why, sizeof child.broken_why, "printed \"%s\"%s, %s", shown,
	    len > 200 ? "..." : "", why);
	child.broken = 1;
	kill(-child.pid, SIGKILL);
}

/* The message a valid answer line settles; NULL when the child is broken. */
static struct msg *
answer_for(const char *line, size_t len, enum verdict *v)
{
	cJSON *j = cJSON_ParseWithLength(line, len);
	const char *why = NULL, *key;
	char num[32];
	struct msg *m = NULL;

	if (!cJSON_IsObject(j)) {
		why = "which is not a JSON object";
	} else if ((*v = verdict_of(json_string(j, "status"))) == V_NONE) {
		why = "which has no known status (success, failed, retry, defer, dead, park)";
	} else if (opt.match != NULL) {
		if ((key = key_of(j, num, sizeof num, &why)) == NULL)
			why = "which has no string or integer match field";
		else if ((m = *v == V_PARK ? keys_peek(key) : keys_take(key)) == NULL)
			why = *v == V_PARK ? "a park naming no message it was given and has not "
			    "parked" : "whose match field names no message it was given";
	} else if (*v == V_PARK) {
		why = "a park, which needs --match";
	} else if ((m = sent_head) == NULL) {
		why = "a line more than it was given messages";
	} else if ((sent_head = m->snext) == NULL) {
		sent_tail = &sent_head;
	}
	cJSON_Delete(j);
	if (why != NULL)
		broken_child(line, len, why);
	return m;
}

/*
 * Complete lines in rbuf: find each one's message, copy the answers out,
 * flush, and only then settle their messages (settle_answered). A park line
 * is not an answer: it marks its message, and is not copied out.
 */
static void
take_answers(void)
{
	char *p = child.rbuf, *end = child.rbuf + child.rlen, *nl;
	size_t done;

	while (!child.broken && p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		enum verdict v = V_NONE;
		struct msg *m = answer_for(p, (size_t)(nl - p), &v);

		if (m == NULL)
			break;
		if (v == V_PARK) {
			m->park = 1;
			p = nl + 1;
			continue;
		}
		if (m->returned) {
			debugx("a late answer for a message already copied back to %s: ignored",
			    opt.queue);
			p = nl + 1;
			nsent--;
			child.answered += m->len + 1;
			unlink_msg(m);
			free_msg(m);
			continue;
		}
		if (fwrite(p, 1, (size_t)(nl - p) + 1, stdout) != (size_t)(nl - p) + 1)
			break;	/* out_flush() reports it and exits: nothing below is settled */
		p = nl + 1;
		nsent--;
		if (m == alone_in_hands) {
			alone_in_hands = NULL;
			m->alone = 0;
		}
		m->verdict = v;
		m->sent = 0;	/* out of the child's hands, waiting for its ack */
		child.answered += m->len + 1;
	}
	out_flush("messages answered before this one were acked");
	if (p != child.rbuf) {
		last_activity = last_answer = stall_since = now_seconds();
		next_stall_report = last_answer + opt.report_every;
		child.down_since = -1;
		backoff_reset(&child.backoff);
	}
	if (p != child.rbuf)
		settle_answered();
	done = (size_t)(p - child.rbuf);
	memmove(child.rbuf, p, child.rlen - done);
	child.rlen -= done;
}

/* Read what the child wrote; 1 at end of file. */
static int
read_child(void)
{
	for (;;) {
		ssize_t n;

		if (child.broken)
			return 1;
		child.rbuf = grow(child.rbuf, &child.rcap, child.rlen + 65536, 1);
		n = read(child.out, child.rbuf + child.rlen, child.rcap - child.rlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			take_answers();
			return n == 0 || child.broken;
		}
		child.rlen += (size_t)n;
		if (child.rlen > 4 * 65536)
			take_answers();
	}
}

/* --- the child's death ---------------------------------------------------- */

/* Bytes the child read of what it was given, beyond its answered messages. */
static int
read_unanswered(int say)
{
	int unread = 0;

	if (child.in < 0 || ioctl(child.in, FIONREAD, &unread) < 0)
		return 1;
	if (say)
		debugx("%s was given %zu bytes, left %d unread, answered %zu", opt.argv[0],
		    child.written, unread, child.answered);
	return child.written - (size_t)unread > child.answered;
}

/* m killed a child: back to the queue, counted towards its delivery limit, and remembered. */
static void
blame(struct msg *m)
{
	hash_add(&guilty, hash_string(m->body), NULL, NULL, 0, NULL);
	count.blamed++;
	m->sent = 0;
	unlink_msg(m);
	reject(m, 1);
	free_msg(m);
}

/*
 * Messages in a dead child's hands are suspects; nothing else is. In-order
 * mode blames the first of them (the one it was on) at once. Then, in both
 * modes: the group on trial, if it was in the child's hands, is halved (a
 * group of one is the guilty one: blamed); the other suspects form a new
 * group. A child that read nothing of its messages, or exited saying a
 * service it needs is unavailable (69, 75), blames nothing.
 */
static int
sort_suspects(int status, long *nblamed)
{
	unsigned on_trial = trial(), a = 0, b = 0, fresh = 0;
	long ntrial = 0, nfresh = 0, i = 0;
	int innocent = !read_unanswered(1) || (WIFEXITED(status) &&
	    (WEXITSTATUS(status) == EXIT_UNAVAILABLE || WEXITSTATUS(status) == EX_TEMPFAIL));

	*nblamed = 0;
	if (alone_in_hands != NULL && !innocent) {
		/* Nothing else was in its hands. */
		blame(alone_in_hands);
		*nblamed = 1;
		innocent = 1;	/* the others in the list below were not in its hands */
	}
	alone_in_hands = NULL;
	if (!innocent && opt.match == NULL && sent_head != NULL && !sent_head->returned) {
		blame(sent_head);
		++*nblamed;
	}
	for (struct msg *m = head; m != NULL; m = m->next)
		if (m->sent && !m->returned)
			*(on_trial != 0 && m->group == on_trial ? &ntrial : &nfresh) += 1;
	if (ntrial > 1) {
		a = next_group++;
		b = next_group++;
	}
	if (nfresh > 0)
		fresh = next_group++;
	for (struct msg *m = head, *next; m != NULL; m = next) {
		next = m->next;
		if (!m->sent)
			continue;
		m->sent = 0;
		if (m->returned) {
			unlink_msg(m);
			free_msg(m);
		} else if (innocent) {
			continue;
		} else if (on_trial != 0 && m->group == on_trial) {
			if (ntrial == 1) {
				blame(m);
				++*nblamed;
				continue;
			}
			group_leave(m);
			m->group = i++ < ntrial / 2 ? a : b;
		} else {
			group_leave(m);
			m->group = fresh;
		}
	}
	sent_head = NULL;
	sent_tail = &sent_head;
	keys_clear();
	nsent = 0;
	if (innocent)
		return *nblamed > 0;
	if (nfresh > 0)
		group_push(0, fresh, nfresh);
	if (ntrial > 1) {
		group_push(1, b, ntrial - ntrial / 2);
		group_push(1, a, ntrial / 2);
	}
	return 1;
}

/*
 * The child died (or was killed as broken). It is restarted with backoff,
 * through outages of any length: amqp-consume gives up only after
 * --patience seconds without an answer.
 */
static void
child_died(int status)
{
	char how[64];
	long held = nsent, nblamed;
	int suspects;
	double delay;

	read_child();	/* answers it wrote before dying still count */
	suspects = sort_suspects(status, &nblamed);
	close(child.out);
	if (child.in >= 0)
		close(child.in);
	child.in = -1;
	child.pid = 0;
	child.wlen = child.woff = child.rlen = 0;
	if (child.broken)
		snprintf(how, sizeof how, "was broken");
	else
		describe_status(how, sizeof how, status);
	++*(child.broken ? &count.deaths_broken : WIFSIGNALED(status) ? &count.deaths_signalled :
	    &count.deaths_exited);
	if (child.broken)
		warning("%s %s; killed it: nothing is acked for that line", opt.argv[0],
		    child.broken_why);
	if (draining) {
		warning("%s %s while answering %ld messages: they go back to the queue",
		    opt.argv[0], how, held);
		forget_unsent(1);
		return;
	}
	if (child.down_since < 0)
		child.down_since = now_seconds();
	if (opt.patience >= 0 && now_seconds() - child.down_since > opt.patience)
		finish(EXIT_UNAVAILABLE, "%s %s, and has answered nothing for %g s (--patience); "
		    "giving up (its unanswered messages go back to the queue)", opt.argv[0], how,
		    opt.patience);
	delay = backoff_next(&child.backoff);
	child.restart_at = now_seconds() + delay;
	warning("%s %s while answering %ld messages (%s%s); restarting it in %.1f s", opt.argv[0],
	    how, held, !suspects ? (held ? "it read none of them or said a service is "
	    "unavailable: none is blamed" : "none was in its hands") : nblamed ? "the one that "
	    "killed it goes back to the queue, counted as a failed delivery" : "they are "
	    "suspects, tried again in halves", suspects && nblamed && held > 1 ? "; the others "
	    "are suspects, tried again in halves" : "", delay);
}

/*
 * At EOF on its stdout the child is exiting (or can no longer answer: it
 * gets 2 s, then SIGKILL). Without EOF it is polled: a grandchild could
 * hold the pipe open after the child itself died.
 */
static void
reap_child(int eof)
{
	double give_up = now_seconds() + 2;
	int status;
	pid_t pid;

	if (child.pid == 0)
		return;
	while ((pid = waitpid(child.pid, &status, WNOHANG)) == 0 && eof) {
		if (now_seconds() > give_up) {
			kill(child.pid, SIGKILL);
			give_up += 3600;
		}
		sleep_seconds(0.01, NULL);
	}
	if (pid == child.pid)
		child_died(status);
}

/* --- the broker ------------------------------------------------------------- */

static void
lost_connection(void)
{
	warning("broker %s: connection lost: %s; reconnecting (%ld messages the child holds "
	    "will be redelivered)", mq.target, mq.why, nsent);
	mq_close(&mq);
	linked = 0;
	forget_unsent(0);
	mq_confirms_clear(&retry_copies);
	ack_upto = 0;	/* the broker redelivers those messages */
	lost_since = now_seconds();
	next_lost_report = lost_since + opt.report_every;
	lost_refusing = 0;
	connect_at = lost_since;
	backoff_reset(&connect_backoff);
}

/*
 * A copy's confirm: ack its original; a nack means the copy may be lost, so
 * the original goes back instead. A returned original still held (in the
 * child's hands) is released: it no longer holds up the acks behind it.
 */
static int
retry_copy_confirmed(const struct mq_confirm_wait *w, int acked, void *arg)
{
	int rc = acked ? mq_ack(&mq, w->tag) : mq_reject(&mq, w->tag, 1);

	(void)arg;
	if (!acked)
		warning("broker %s refused (nack) the copy of delivery tag %llu: the original "
		    "goes back to %s instead", mq.target, (unsigned long long)w->tag, opt.queue);
	for (struct msg *m = head; w->item == &returned_copy && m != NULL; m = m->next) {
		if (m->tag == w->tag && m->returned && m->generation == mq.generation) {
			m->released = 1;
			copies_confirmed = 1;
			break;
		}
	}
	return rc;
}

/* Handle what the broker sent, without blocking; stop early to let the child progress. */
static void
broker_events(void)
{
	for (int i = 0; i < 1024 && mq_connected(&mq); i++) {
		struct mq_event ev;

		mq_next_event(&mq, 0, &ev);
		switch (ev.type) {
		case MQ_NONE:
			return;
		case MQ_DELIVERY:
			on_delivery(&ev);
			break;
		case MQ_ACK:
		case MQ_NACK:
			/* A failed ack or reject dropped the connection: the rest are void. */
			mq_confirms_apply(&retry_copies, &ev, retry_copy_confirmed, NULL);
			break;
		case MQ_RETURN:
			/* The retry queue is gone: start over, declaring it again. */
			free(ev.body);
			mq_close(&mq);
			snprintf(mq.why, sizeof mq.why, "%s was not routable", retry_queue);
			return;
		case MQ_CANCELLED:
			mq_close(&mq);
			snprintf(mq.why, sizeof mq.why, "the broker cancelled our consumer "
			    "(was queue %s deleted?)", opt.queue);
			return;
		case MQ_CLOSED:
			return;
		}
	}
}

/*
 * One attempt to connect, declare and subscribe; on failure the next is
 * scheduled. The wait is said at once, then every minute: a broker that
 * cannot be reached apart from one that is up but whose queue does not work.
 */
static void
link_up(void)
{
	struct mq_topology t = { opt.queue, opt.max_deliveries, opt.retry_ms, 0 };
	double started = now_seconds(), now;	/* a declare may wait for the RPC timeout */
	int rc = mq_connect(&mq), refusing = 0;

	if (rc == 0) {
		if ((rc = mq_declare(&mq, &t)) == 0)
			rc = mq_consume(&mq, opt.queue, (int)opt.prefetch);
		/* The broker answered about the queue, unless it is shutting down. */
		refusing = rc != 0 && mq.code != AMQP_CONNECTION_FORCED;
	}
	now = now_seconds();
	if (rc == 0) {
		if (lost_since >= 0)
			warning("broker %s: connected again and consuming %s", mq.target, opt.queue);
		lost_since = -1;
		linked = 1;
		last_activity = now;
		backoff_reset(&connect_backoff);
		return;
	}
	if (mq.permanent)
		finish(EXIT_UNAVAILABLE, "broker %s is up but refuses queue %s: %s; no message "
		    "was taken", mq.target, opt.queue, mq.why);
	if (mq_connected(&mq))
		mq_close(&mq);
	if (lost_since < 0 || next_lost_report <= now || refusing != lost_refusing) {
		if (lost_since < 0)
			lost_since = started;
		if (refusing)
			warning("broker %s is up, but queue %s does not work (declaring or "
			    "consuming it: %s); waiting for it for %.0f s so far", mq.target,
			    opt.queue, mq.why, now - lost_since);
		else
			warning("broker %s unreachable: %s; waiting for it for %.0f s so far",
			    mq.target, mq.why, now - lost_since);
		next_lost_report = now + opt.report_every;
		lost_refusing = refusing;
	}
	if (opt.patience >= 0 && now - lost_since > opt.patience)
		finish(EXIT_UNAVAILABLE, "broker %s unavailable for %g s (--patience; %s): %s; "
		    "messages not acked stay in the queue", mq.target, opt.patience, refusing ?
		    "up, but queue refusing" : "unreachable", mq.why);
	connect_at = now + backoff_next(&connect_backoff);
}

/* --- the broker's consumer timeout ------------------------------------------ */

/*
 * A message held unsettled for too long would be dead-lettered by the
 * broker's consumer_timeout (closing our channel). Before that, a copy goes
 * back to the queue (x-attempts unchanged, so no delivery is spent) and the
 * original is acked on its confirm. The child may still answer it: that
 * answer is void.
 */
static void
return_old_messages(double now)
{
	double margin = opt.consumer_timeout / 2;
	long n = 0;

	if (margin > CONSUMER_TIMEOUT_MARGIN)
		margin = CONSUMER_TIMEOUT_MARGIN;
	next_timeout_scan = now + (margin < 2 ? margin / 2 : 1);
	if (!mq_connected(&mq))
		return;
	for (struct msg *m = head, *next; m != NULL; m = next) {
		next = m->next;
		if (m->returned || m->verdict != V_NONE || !current(m) ||
		    now - m->since < opt.consumer_timeout - margin)
			continue;
		if (n++ == 0)
			flush_acks();
		m->returned = 1;
		copy_back(m, opt.queue, m->attempts);
		count.returned++;
		if (!m->sent) {
			unlink_msg(m);
			free_msg(m);
		} else {
			group_leave(m);
		}
	}
	if (n > 0)
		warning("%ld messages held unanswered for %.0f s were copied back to %s before "
		    "the broker's consumer timeout (%.0f s) (%s)", n, opt.consumer_timeout - margin,
		    opt.queue, opt.consumer_timeout, nsent ? "the child has not answered them" :
		    "they were waiting for the child");
}

/* --- metrics (--metrics) ------------------------------------------------------ */

/*
 * The Prometheus text format, for node_exporter's textfile collector: one
 * family (# HELP, # TYPE) and its samples, each with the queue label. This
 * is the only writer of the format here, to be replaced by a shared one.
 */
static void
prom_family(struct buf *b, const char *name, const char *type, const char *help)
{
	char line[512];
	int n = snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);

	xbuf_add(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* One sample: name{queue="Q"[,label="value"]} v; the label value is escaped as the format says. */
static void
prom_sample(struct buf *b, const char *name, const char *label, const char *value, double v)
{
	char num[64];
	int n;

	xbuf_add(b, name, strlen(name));
	xbuf_add(b, "{queue=\"", 8);
	for (const char *p = opt.queue; *p != '\0'; p++) {
		if (*p == '\\' || *p == '"')
			xbuf_add(b, "\\", 1);
		xbuf_add(b, *p == '\n' ? "\\n" : p, *p == '\n' ? 2 : 1);
	}
	xbuf_add(b, "\"", 1);
	if (label != NULL) {
		n = snprintf(num, sizeof num, ",%s=\"%s\"", label, value);
		xbuf_add(b, num, (size_t)n);
	}
	n = v == (double)(long)v ? snprintf(num, sizeof num, "} %ld\n", (long)v) :
	    snprintf(num, sizeof num, "} %.3f\n", v);
	xbuf_add(b, num, (size_t)n);
}

static void
prom_one(struct buf *b, const char *name, const char *type, const char *help, double v)
{
	prom_family(b, name, type, help);
	prom_sample(b, name, NULL, NULL, v);
}

static void
format_metrics(struct buf *b, double now)
{
	double since = last_answer > 0 ? last_answer : started;

	prom_one(b, "amqp_consume_messages_acked_total", "counter",
	    "Messages answered success or failed, and acked.", count.acked);
	prom_one(b, "amqp_consume_messages_retried_total", "counter",
	    "Messages answered retry: copied to the delay queue, x-attempts plus one.", count.retried);
	prom_one(b, "amqp_consume_messages_deferred_total", "counter",
	    "Messages answered defer: copied to the delay queue, x-attempts unchanged.",
	    count.deferred);
	prom_family(b, "amqp_consume_messages_dead_lettered_total", "counter",
	    "Messages rejected to the dead-letter queue: answered dead, or invalid at delivery.");
	prom_sample(b, "amqp_consume_messages_dead_lettered_total", "reason", "answer",
	    count.dead_answer);
	prom_sample(b, "amqp_consume_messages_dead_lettered_total", "reason", "invalid",
	    count.dead_invalid);
	prom_one(b, "amqp_consume_messages_returned_total", "counter",
	    "Messages held too long, copied back to the queue before the consumer timeout.",
	    count.returned);
	prom_one(b, "amqp_consume_messages_parked_total", "counter",
	    "Messages the child marked park, copied to the delay queue while it worked on them.",
	    count.parked);
	prom_one(b, "amqp_consume_messages_blamed_total", "counter",
	    "Messages that killed a child, returned to the queue as a failed delivery.",
	    count.blamed);
	prom_one(b, "amqp_consume_child_restarts_total", "counter",
	    "Times the child was started again.", count.restarts);
	prom_family(b, "amqp_consume_child_deaths_total", "counter",
	    "Times the child died: exited, killed by a signal, or killed as broken.");
	prom_sample(b, "amqp_consume_child_deaths_total", "cause", "exited", count.deaths_exited);
	prom_sample(b, "amqp_consume_child_deaths_total", "cause", "signalled",
	    count.deaths_signalled);
	prom_sample(b, "amqp_consume_child_deaths_total", "cause", "broken", count.deaths_broken);
	prom_one(b, "amqp_consume_messages_held", "gauge",
	    "Messages received and not yet settled (in flight).", nheld);
	prom_one(b, "amqp_consume_messages_in_child", "gauge",
	    "Messages in the child's hands, not yet answered.", nsent);
	prom_one(b, "amqp_consume_broker_connected", "gauge",
	    "1 when connected to the broker and consuming, else 0.", linked && mq_connected(&mq));
	prom_one(b, "amqp_consume_seconds_since_last_answer", "gauge",
	    "Seconds since the child's last answer (since start, before the first).", now - since);
}

/* Write FILE.tmp and rename it over FILE, so the collector never reads half a file. */
static int
write_metrics_file(const char **why)
{
	int fd = open(metrics_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t off = 0;

	*why = "creating";
	if (fd < 0)
		return -1;
	*why = "writing";
	while (off < metrics_text.len) {
		ssize_t n = write(fd, metrics_text.data + off, metrics_text.len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			close(fd);
			errno = e;
			return -1;
		}
		off += (size_t)n;
	}
	if (close(fd) < 0)
		return -1;
	*why = "renaming";
	return rename(metrics_tmp, opt.metrics);
}

/*
 * Rewrite the metrics file (every METRICS_INTERVAL seconds, and at exit;
 * never per message). A failure at start is fatal; later it is said, then
 * again every OA_WAIT_REPORT seconds while it lasts.
 */
static void
write_metrics(double now, int first)
{
	const char *why;

	if (opt.metrics == NULL)
		return;
	next_metrics = now + METRICS_INTERVAL;
	buf_reset(&metrics_text);
	format_metrics(&metrics_text, now);
	if (write_metrics_file(&why) == 0) {
		if (next_metrics_warning > 0)
			warning("metrics file %s written again", opt.metrics);
		next_metrics_warning = 0;
		return;
	}
	if (first)
		die(EXIT_CANT_CREATE, "--metrics: %s %s: %s; no message was taken", why,
		    why[0] == 'r' ? opt.metrics : metrics_tmp, strerror(errno));
	if (now < next_metrics_warning)
		return;
	warning("--metrics: %s %s: %s; messages are still handled, the file is stale", why,
	    why[0] == 'r' ? opt.metrics : metrics_tmp, strerror(errno));
	next_metrics_warning = now + opt.report_every;
}

/* --- shutting down ---------------------------------------------------------- */

static void
start_draining(void)
{
	draining = 1;
	drain_since = now_seconds();
	if (mq_connected(&mq))
		mq_cancel(&mq);
	forget_unsent(1);
}

static void
free_all(void)
{
	while (head != NULL) {
		struct msg *m = head;

		unlink_msg(m);
		free_msg(m);
	}
	free(child.wbuf);
	free(child.rbuf);
	free(slots);
	free(groups);
	hash_free(&keys);
	hash_free(&guilty);
	mq_confirms_free(&retry_copies);
	free(retry_queue);
	free(dead_queue);
}

/* Exit: the child gets EOF and is waited for; what we hold and did not settle is returned. */
static void
finish(int code, const char *fmt, ...)
{
	va_list ap;

	if (fmt != NULL) {
		char buf[1024];

		va_start(ap, fmt);
		vsnprintf(buf, sizeof buf, fmt, ap);
		va_end(ap);
		warning("%s", buf);
	}
	for (struct msg *m = head; m != NULL; m = m->next)
		reject(m, 1);
	stop_child();
	mq_close(&mq);
	free_all();
	nsent = 0;
	write_metrics(now_seconds(), 0);
	buf_free(&metrics_text);
	free(metrics_tmp);
	if (fflush(stdout) == EOF)
		code = EXIT_OUTPUT;
	exit(code);
}

/* --- main loop -------------------------------------------------------------- */

/* Idle: connected, no delivery and no answer for --idle-exit seconds (a stalled child's messages do not count). */
static int
idle_over(double now)
{
	return opt.idle_exit >= 0 && mq_connected(&mq) && retry_copies.n == 0 &&
	    now - last_activity >= opt.idle_exit;
}

/* Stopping, and the child answered nothing for --grace seconds: kill it, return its messages. */
static int
grace_over(double now)
{
	double since = last_answer > drain_since ? last_answer : drain_since;

	return draining && nsent > 0 && now - since >= opt.grace;
}

static int
poll_timeout(double now)
{
	double t = 1.0;

	if (mq_buffered(&mq))
		return 0;
	if (!mq_connected(&mq) && !draining && connect_at - now < t)
		t = connect_at - now;
	if (child.pid == 0 && !draining && child.restart_at - now < t)
		t = child.restart_at - now;
	if (next_timeout_scan - now < t)
		t = next_timeout_scan - now;
	if (opt.metrics != NULL && next_metrics - now < t)
		t = next_metrics - now;
	/* The idle clock stops while disconnected: see idle_over(). */
	if (opt.idle_exit >= 0 && !draining && mq_connected(&mq) && retry_copies.n == 0 &&
	    last_activity + opt.idle_exit - now < t)
		t = last_activity + opt.idle_exit - now;
	if (draining && nsent > 0) {
		double since = last_answer > drain_since ? last_answer : drain_since;

		if (since + opt.grace - now < t)
			t = since + opt.grace - now;
	}
	return t > 0 ? (int)(t * 1000) + 1 : 0;
}

static void
wait_events(double now)
{
	struct pollfd p[3];
	int n = 0, child_out = -1, child_in = -1;

	if (child.pid != 0) {
		child_out = n;
		p[n++] = (struct pollfd){ .fd = child.out, .events = POLLIN };
		if (child.in >= 0 && child.wlen > child.woff) {
			child_in = n;
			p[n++] = (struct pollfd){ .fd = child.in, .events = POLLOUT };
		}
	}
	if (mq_connected(&mq))
		p[n++] = (struct pollfd){ .fd = mq_fd(&mq), .events = POLLIN };
	if (poll(p, (nfds_t)n, poll_timeout(now)) < 0) {
		if (errno != EINTR)
			die(EXIT_NOMEM, "poll: %s", strerror(errno));
		return;
	}
	if (child_in >= 0 && p[child_in].revents)
		write_child();
	if (child_out >= 0 && p[child_out].revents)
		reap_child(read_child());
}

static int
done_draining(void)
{
	return draining && head == NULL && retry_copies.n == 0;
}

/* A child holding messages that has answered nothing for a while: say so, every minute. */
static void
report_stall(double now)
{
	if (nsent == 0 || child.pid == 0 || now < next_stall_report)
		return;
	warning("%s has answered nothing for %.0f s while holding %ld messages (pid %d)",
	    opt.argv[0], now - stall_since, nsent, (int)child.pid);
	next_stall_report = now + opt.report_every;
}

static void
consume_loop(void)
{
	for (;;) {
		double now = now_seconds();

		/* Any failed ack, reject or publish dropped the connection: clean up once. */
		if (linked && !mq_connected(&mq))
			lost_connection();
		if (stop_signals > 1 && draining)
			finish(EXIT_OK, "second signal: returning %ld unanswered messages to the queue",
			    nsent);
		if ((stop_signals > 0 || idle_over(now)) && !draining)
			start_draining();
		if (grace_over(now)) {
			if (child.pid != 0)
				kill(-child.pid, SIGKILL);
			finish(EXIT_OK, "%s answered nothing for %g s (--grace) while stopping: "
			    "killed it; its %ld unanswered messages go back to the queue unacked",
			    opt.argv[0], opt.grace, nsent);
		}
		if (done_draining() || (draining && !mq_connected(&mq) && nsent == 0))
			finish(EXIT_OK, NULL);
		if (!mq_connected(&mq) && !draining && now >= connect_at)
			link_up();
		if (child.pid == 0 && !draining && now >= child.restart_at)
			start_child(0);
		if (now >= next_timeout_scan)
			return_old_messages(now);
		report_stall(now);
		if (opt.metrics != NULL && now >= next_metrics)
			write_metrics(now, 0);
		feed_child();
		write_child();
		wait_events(now);
		reap_child(0);
		broker_events();
		if (copies_confirmed)
			settle_answered();
	}
}

/* --- saving a queue (--save) ------------------------------------------------ */

/*
 * --save FILE: append the queue's messages to FILE, one body a line, with no
 * child, declaring nothing (the queue must exist: a dead-letter queue has no
 * topology of its own). A batch of lines is written and fsync'd before its
 * messages are acked, so nothing is lost if we are killed: at worst the lines
 * of the last batch are in FILE and are saved again by the next run. A body
 * that is not one line (a newline before its end) cannot be a line of FILE:
 * it is kept unacked, with a warning, and goes back to the queue at exit;
 * while any is kept, the batch is acked one message at a time, so that no
 * multiple ack covers it.
 */
static struct {
	int fd;
	struct buf lines;	/* the batch: its bodies, a line each */
	uint64_t *tags;		/* its delivery tags */
	size_t ntags, tags_cap;
	long saved, kept;	/* in FILE and acked; left in the queue */
	long kept_here;		/* kept on this connection */
	double last_delivery;
} save = { .fd = -1 };

/* Connect, check the queue exists, subscribe: retried for --patience seconds, then exit 69. */
static void
save_link(void)
{
	long ready = 0;
	int rc;

	while (!stop_signals) {
		if (mq_connect_retry(&mq, opt.patience, &stop_signals) < 0)
			break;
		if ((rc = mq_check_queue(&mq, opt.queue, &ready)) == -2 && save.fd < 0)
			die(EXIT_NO_INPUT, "broker %s: %s; nothing was saved", mq.target, mq.why);
		if (rc == -2)
			die(EXIT_NO_INPUT, "broker %s: %s (deleted while we read it?); %ld messages "
			    "were saved to %s and acked", mq.target, mq.why, save.saved, opt.save);
		if (rc == 0 && mq_consume(&mq, opt.queue, (int)opt.prefetch) == 0) {
			debugx("queue %s: %ld messages ready", opt.queue, ready);
			save.kept_here = 0;
			save.last_delivery = now_seconds();
			return;
		}
		warning("broker %s: %s; connecting again", mq.target, mq.why);
		mq_close(&mq);
	}
	if (stop_signals)
		return;
	die(EXIT_UNAVAILABLE, "broker %s unavailable; %ld messages of queue %s were saved to %s "
	    "and acked, the others are still in the queue", mq.target, save.saved, opt.queue,
	    opt.save);
}

/*
 * FILE, for appending. A last line without its newline is the end of a run
 * killed while writing: it is ended, so that the next line is whole (its
 * message was not acked and is saved again below).
 */
static void
save_open(void)
{
	struct stat st;
	char last;

	save.fd = open(opt.save, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (save.fd < 0)
		die(EXIT_CANT_CREATE, "--save: opening %s: %s; nothing was taken from queue %s",
		    opt.save, strerror(errno), opt.queue);
	if (fstat(save.fd, &st) == 0 && st.st_size > 0 &&
	    pread(save.fd, &last, 1, st.st_size - 1) == 1 && last != '\n') {
		warning("%s ends in a partial line (a run killed while writing it): ending it; "
		    "its message was not acked and is saved again whole", opt.save);
		xbuf_add(&save.lines, "\n", 1);
	}
}

/* A delivery: a line of the batch, or kept in the queue when it is not one line. */
static void
save_take(struct mq_event *ev)
{
	const char *nl = memchr(ev->body, '\n', ev->len);

	save.last_delivery = now_seconds();
	if (nl != NULL && nl != ev->body + ev->len - 1) {
		char shown[81];
		size_t n = ev->len < 80 ? ev->len : 80;

		for (size_t i = 0; i < n; i++)
			shown[i] = (unsigned char)ev->body[i] < 0x20 ? '?' : ev->body[i];
		shown[n] = '\0';
		warning("a message of queue %s spans several lines (%zu bytes: \"%s\"%s): not saved, "
		    "it stays in the queue (delivery tag %llu)", opt.queue, ev->len, shown,
		    ev->len > 80 ? "..." : "", (unsigned long long)ev->tag);
		save.kept++;
		save.kept_here++;
		free(ev->body);
		return;
	}
	xbuf_add(&save.lines, ev->body, ev->len);
	if (nl == NULL)
		xbuf_add(&save.lines, "\n", 1);
	free(ev->body);
	save.tags = grow(save.tags, &save.tags_cap, save.ntags + 1, sizeof *save.tags);
	save.tags[save.ntags++] = ev->tag;
}

/* Write the batch, fsync it, and only then ack its messages. */
static void
save_flush(void)
{
	size_t off = 0;
	int acked = 0;

	while (off < save.lines.len) {
		ssize_t n = write(save.fd, save.lines.data + off, save.lines.len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die(EXIT_OUTPUT, "--save: writing %s: %s; the %zu messages of this batch were "
			    "not acked and stay in queue %s (%ld saved and acked before)", opt.save,
			    strerror(errno), save.ntags, opt.queue, save.saved);
		off += (size_t)n;
	}
	if (off > 0 && fsync(save.fd) < 0)
		die(EXIT_OUTPUT, "--save: fsync of %s: %s; the %zu messages of this batch were not "
		    "acked and stay in queue %s (%ld saved and acked before)", opt.save,
		    strerror(errno), save.ntags, opt.queue, save.saved);
	buf_reset(&save.lines);
	if (save.ntags == 0)
		return;
	if (save.kept_here == 0)
		acked = mq_ack_multiple(&mq, save.tags[save.ntags - 1]);
	for (size_t i = 0; save.kept_here > 0 && acked == 0 && i < save.ntags; i++)
		acked = mq_ack(&mq, save.tags[i]);
	if (acked < 0)
		warning("broker %s: %s; the %zu messages just saved to %s were not all acked: the "
		    "broker delivers them again, so they may be in the file twice", mq.target, mq.why,
		    save.ntags, opt.save);
	else
		save.saved += (long)save.ntags;
	save.ntags = 0;
}

/* Read what the broker sent; 1 when the connection is gone. */
static int
save_events(void)
{
	while (mq_connected(&mq)) {
		struct mq_event ev;

		mq_next_event(&mq, 0, &ev);
		if (ev.type == MQ_DELIVERY) {
			save_take(&ev);
			if (save.ntags >= (size_t)opt.prefetch)
				save_flush();
		} else if (ev.type == MQ_CANCELLED) {
			mq_close(&mq);
			snprintf(mq.why, sizeof mq.why, "the broker cancelled our consumer (was queue %s "
			    "deleted?)", opt.queue);
		} else if (ev.type == MQ_NONE) {
			return 0;
		} else if (ev.type == MQ_RETURN) {
			free(ev.body);
		}
	}
	return 1;
}

static void
save_queue(void)
{
	save_link();
	save_open();
	while (!stop_signals) {
		double now = now_seconds(), left = save.last_delivery + opt.idle_exit - now;
		struct pollfd p;

		if (!mq_connected(&mq)) {
			/* The batch's messages come again: saving them now would only repeat them. */
			warning("broker %s: connection lost: %s; connecting again", mq.target, mq.why);
			buf_reset(&save.lines);
			save.ntags = 0;
			save_link();
			continue;
		}
		if (left <= 0 && save.ntags == 0)
			break;
		if (!mq_buffered(&mq)) {
			p = (struct pollfd){ .fd = mq_fd(&mq), .events = POLLIN };
			poll(&p, 1, left < 1 ? (int)(left * 1000) + 1 : 1000);
		}
		if (save_events() == 0)
			save_flush();
	}
	if (mq_connected(&mq))
		save_flush();
	mq_close(&mq);
	if (close(save.fd) < 0)
		die(EXIT_OUTPUT, "--save: closing %s: %s", opt.save, strerror(errno));
	buf_free(&save.lines);
	free(save.tags);
	warning("saved %ld messages of queue %s to %s%s", save.saved, opt.queue, opt.save,
	    save.kept > 0 ? "; some messages span several lines: they were left in the queue" : "");
	exit(save.kept > 0 ? EXIT_BAD_INPUT : EXIT_OK);
}

static void
parse_options(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "queue", required_argument, NULL, 'q' },
		{ "prefetch", required_argument, NULL, 'p' },
		{ "match", required_argument, NULL, 'M' },
		{ "retry-delay", required_argument, NULL, 'r' },
		{ "max-deliveries", required_argument, NULL, 'm' },
		{ "idle-exit", required_argument, NULL, 'i' },
		{ "grace", required_argument, NULL, 'g' },
		{ "patience", required_argument, NULL, 'P' },
		{ "consumer-timeout", required_argument, NULL, 'C' },
		{ "metrics", required_argument, NULL, 'X' },
		{ "save", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *every = getenv("OA_WAIT_REPORT"), *work_only = NULL;
	int c;

	/* "+": options end at COMMAND, whose own options are its business. */
	while ((c = getopt_long(argc, argv, "+q:p:h", opts, NULL)) != -1) {
		switch (c) {
		case 'q': opt.queue = optarg; break;
		case 'p': opt.prefetch = option_long("-p", optarg, 1, 65535); break;
		case 'M': opt.match = optarg; work_only = "--match"; break;
		case 'r': opt.retry_ms = (long)(option_seconds("--retry-delay", optarg, 86400) * 1000 + 0.5); work_only = "--retry-delay"; break;
		case 'm': opt.max_deliveries = option_long("--max-deliveries", optarg, 1, 1000); work_only = "--max-deliveries"; break;
		case 'i': opt.idle_exit = option_seconds("--idle-exit", optarg, 1e9); break;
		case 'g': opt.grace = option_seconds("--grace", optarg, 1e9); work_only = "--grace"; break;
		case 'P': opt.patience = option_seconds("--patience", optarg, 1e9); break;
		case 'C': opt.consumer_timeout = option_seconds("--consumer-timeout", optarg, 1e9); work_only = "--consumer-timeout"; break;
		case 'X': opt.metrics = optarg; work_only = "--metrics"; break;
		case 'S': opt.save = optarg; break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (opt.save != NULL && (work_only != NULL || optind < argc)) {
		if (work_only != NULL)
			warning("option --save: %s is for running a COMMAND, not for saving a queue",
			    work_only);
		else
			warning("option --save: saving a queue runs no COMMAND");
		usage(stderr, EXIT_USAGE);
	}
	if (opt.save == NULL && optind >= argc) {
		warning("a COMMAND to run is required (or --save FILE)");
		usage(stderr, EXIT_USAGE);
	}
	if ((opt.save != NULL && *opt.save == '\0') || (opt.metrics != NULL && *opt.metrics == '\0')) {
		warning("option %s: a file name is required", opt.save != NULL ? "--save" : "--metrics");
		usage(stderr, EXIT_USAGE);
	}
	if (opt.prefetch < 0)
		opt.prefetch = opt.save != NULL ? SAVE_PREFETCH_DEFAULT : 64;
	if (opt.save != NULL && opt.idle_exit < 0)
		opt.idle_exit = SAVE_IDLE_EXIT_DEFAULT;
	if (opt.save != NULL && opt.patience < 0)
		opt.patience = SAVE_PATIENCE_DEFAULT;
	if (*opt.queue == '\0' || strlen(opt.queue) > 200) {
		warning("option -q: a queue name has 1 to 200 bytes");
		usage(stderr, EXIT_USAGE);
	}
	if (opt.match != NULL && (*opt.match == '\0' || strlen(opt.match) > 200)) {
		warning("option --match: a field name has 1 to 200 bytes");
		usage(stderr, EXIT_USAGE);
	}
	if (opt.consumer_timeout < 1) {
		warning("option --consumer-timeout: at least 1 s");
		usage(stderr, EXIT_USAGE);
	}
	if (every != NULL && *every != '\0')
		opt.report_every = option_seconds("OA_WAIT_REPORT", every, 1e9);
	opt.argv = argv + optind;
}

int
main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	log_init(argv[0]);
	parse_options(argc, argv);
	retry_queue = queue_retry_name(opt.queue, opt.retry_ms);
	dead_queue = queue_dead_name(opt.queue);
	/* The child learns the protocol from OA_MATCH: set with --match, absent without. */
	if ((opt.match != NULL ? setenv("OA_MATCH", opt.match, 1) : unsetenv("OA_MATCH")) < 0)
		die(EXIT_NOMEM, "setting OA_MATCH: %s", strerror(errno));
	/* No SA_RESTART: a signal must interrupt poll() so shutdown starts at once. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	mq_init(&mq, MQ_HEARTBEAT, opt.save == NULL);
	if (opt.save != NULL)
		save_queue();
	child.in = child.out = -1;
	started = now_seconds();
	if (opt.metrics != NULL) {
		metrics_tmp = xasprintf("%s.tmp", opt.metrics);
		write_metrics(started, 1);
	}
	/* The child first: a command that cannot run must not take any message. */
	start_child(1);
	last_activity = now_seconds();
	next_timeout_scan = last_activity + 1;
	consume_loop();
}
