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
#include <sys/wait.h>
#include <unistd.h>

#include "lib/amqp.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/num.h"
#include "lib/policy.h"
#include "lib/retry.h"
#include "lib/spawn.h"
#include "lib/xalloc.h"

#define MAX_DEATHS_UNREAD 5	/* a child dying before reading anything this often is broken */

/*
 * A message we hold: received, maybe written to the child, not yet settled.
 * Messages go to the child in list order, so the sent ones are a prefix of
 * the list and the child's next answer belongs to the head.
 */
struct msg {
	struct msg *next;
	unsigned generation;	/* the connection it came on: its tag means nothing on another */
	uint64_t tag;
	char *body;
	size_t len;
	long attempts;		/* x-attempts: times it went through the retry queue */
	int redelivered;	/* may have killed a child before: give it to the child alone */
	int sent;
	int retry;		/* its answer, read but not yet settled, asked for a retry */
};

struct child {
	pid_t pid;		/* 0: not running */
	int in, out;		/* our ends of its stdin and stdout */
	char *wbuf, *rbuf;	/* bytes for its stdin; bytes from its stdout not yet a line */
	size_t wlen, woff, wcap, rlen, rcap;
	size_t written, answered;	/* bytes it was given; of which answered messages */
	int deaths;		/* in a row, without an answer in between */
	int deaths_unread;	/* in a row, without even reading a message */
	double restart_at;
	struct backoff backoff;
};

static struct {
	const char *queue;
	long prefetch, max_deliveries, retry_ms;
	double idle_exit, patience;
	char **argv;
} opt = { QUEUE_DEFAULT, 64, MAX_DELIVERIES_DEFAULT, RETRY_DELAY_MS_DEFAULT, -1, -1, NULL };

static struct mq mq;
static struct child child = { .backoff = BACKOFF_CHILD };
static struct msg *head, **tail = &head;
static long nsent, nsuspect;		/* sent to the child and unanswered; of which redelivered */
/* Retry copies published but not yet confirmed: each original is acked on its copy's confirm. */
static struct mq_confirms retry_copies;
static uint64_t ack_upto;		/* acks owed, up to this tag, sent as one (0: none) */
static unsigned ack_generation;		/* the connection ack_upto belongs to */
static long ack_count;			/* messages ack_upto stands for */
static char *retry_queue, *dead_queue;
static volatile sig_atomic_t stop_signals;
static int draining;			/* no new messages: finish those in flight, then exit */
static int linked;			/* connected, declared and consuming */
static double connect_at, lost_since = -1, last_activity;
static struct backoff connect_backoff = BACKOFF_MQ_CONNECT;

static void
usage(FILE *fp, int code)
{
	fprintf(fp, "usage: %s [-q QUEUE] [-p PREFETCH] [--retry-delay S] [--max-deliveries N]\n"
	    "       [--idle-exit S] [--patience S] -- COMMAND [ARG...]\n", progname);
	exit(code);
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

/* --- the child ------------------------------------------------------------ */

static void
set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/*
 * Start the child on two close-on-exec pipes. A command that cannot be run
 * (posix_spawnp reports the failed exec) is fatal before any message is taken.
 */
static void
start_child(void)
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
		close(in[1]);
		close(out[0]);
		child.pid = 0;
		die(EXIT_UNAVAILABLE, "cannot run %s: %s; no message was taken", opt.argv[0],
		    strerror(rc));
	}
	child.in = in[1];
	child.out = out[0];
	set_nonblock(child.in);
	set_nonblock(child.out);
	child.wlen = child.woff = child.rlen = child.written = child.answered = 0;
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

		if (sig == 0 && waited > 10)
			kill(child.pid, sig = SIGTERM);
		else if (sig == SIGTERM && waited > 15)
			kill(child.pid, sig = SIGKILL);
		sleep_seconds(0.02, NULL);
	}
	close(child.out);
	child.pid = 0;
}

/* --- messages --------------------------------------------------------------- */

static void
free_msg(struct msg *m)
{
	free(m->body);
	free(m);
}

static struct msg *
pop_head(void)
{
	struct msg *m = head;

	if ((head = m->next) == NULL)
		tail = &head;
	return m;
}

static int
current(const struct msg *m)
{
	return mq_connected(&mq) && m->generation == mq.generation;
}

/* Give a message back to the broker: to the queue, or to Q.dead when !requeue. */
static void
reject(struct msg *m, int requeue)
{
	if (current(m) && mq_reject(&mq, m->tag, requeue) < 0)
		warning("broker: %s", mq.why);
}

/* Unsent messages of a dead connection will be redelivered: forget them. */
static void
forget_unsent(int requeue)
{
	struct msg **pp = &head;

	while (*pp != NULL) {
		struct msg *m = *pp;

		if (m->sent) {
			pp = &m->next;
			continue;
		}
		if (requeue)
			reject(m, 1);
		*pp = m->next;
		free_msg(m);
	}
	tail = pp;
}

/* A message body must be one JSON object on one line; *why says what else it is. */
static int
valid_body(char *body, size_t *len, const char **why)
{
	const char *end = NULL;
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
	cJSON_Delete(v);
	if (end != body + *len)
		return *why = "has characters after the JSON value", 0;
	return 1;
}

static void
on_delivery(struct mq_event *ev)
{
	struct msg *m;
	const char *why;

	last_activity = now_seconds();
	if (draining) {
		/* Delivered before the broker saw our cancel: not ours to start any more. */
		if (mq_reject(&mq, ev->tag, 1) < 0)
			warning("broker: %s", mq.why);
		free(ev->body);
		return;
	}
	if (!valid_body(ev->body, &ev->len, &why)) {
		warning("a message %s: dead-lettered to %s without running %s", why,
		    dead_queue, opt.argv[0]);
		if (mq_reject(&mq, ev->tag, 0) < 0)
			warning("broker: %s", mq.why);
		free(ev->body);
		return;
	}
	m = xcalloc(1, sizeof *m);
	m->generation = mq.generation;
	m->tag = ev->tag;
	m->body = ev->body;
	m->len = ev->len;
	m->attempts = ev->attempts;
	m->redelivered = ev->redelivered;
	*tail = m;
	tail = &m->next;
}

/*
 * Write held messages to the child in order. A redelivered message may be
 * the one that killed the last child, so it goes alone: if the child dies
 * again, only that message is blamed (and counted towards its delivery limit).
 */
static void
feed_child(void)
{
	if (child.pid == 0 || child.in < 0 || draining)
		return;
	for (struct msg *m = head; m != NULL && nsuspect == 0; m = m->next) {
		if (m->sent)
			continue;
		if (m->redelivered && nsent > 0)
			break;
		child.wbuf = grow(child.wbuf, &child.wcap, child.wlen + m->len + 1, 1);
		memcpy(child.wbuf + child.wlen, m->body, m->len);
		child.wlen += m->len;
		child.wbuf[child.wlen++] = '\n';
		m->sent = 1;
		nsent++;
		nsuspect += m->redelivered;
	}
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

static void
retry_later(struct msg *m)
{
	uint64_t seq;

	if (mq_publish(&mq, "", retry_queue, m->body, m->len, m->attempts + 1, &seq) < 0)
		return;	/* connection lost: the broker will redeliver the original */
	mq_confirms_add(&retry_copies, &mq, seq, NULL, m->tag);
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

/*
 * The answer for the head message: ack it, or send it round the retry queue.
 * An ack is owed rather than sent: one multiple ack up to the highest tag
 * covers every unacked tag below it, so it may only be owed while each of
 * those is an answered message to ack. Messages are settled in delivery
 * order and the unanswered ones have higher tags; the only lower tags kept
 * unacked are originals awaiting their retry copy's confirm, and every one of
 * them is lower than any message still held. So: flush before a retry is
 * published, and owe nothing while a confirm is outstanding (ack at once).
 */
static void
ack_or_retry_head(void)
{
	struct msg *m = pop_head();

	nsent--;
	nsuspect -= m->redelivered;
	child.answered += m->len + 1;
	/* A message of an old connection is redelivered by the broker: nothing to do. */
	if (current(m)) {
		if (m->retry) {
			flush_acks();
			retry_later(m);
		} else if (retry_copies.n == 0) {
			ack_count = ack_upto != 0 ? ack_count + 1 : 1;
			ack_upto = m->tag;
			ack_generation = mq.generation;
		} else if (mq_ack(&mq, m->tag) < 0) {
			warning("broker: %s", mq.why);
		}
	}
	free_msg(m);
}

/*
 * Complete lines in rbuf: copy them out, noting which answers ask for a
 * retry, flush, and only then settle their messages, with one ack for the lot.
 */
static void
take_answers(void)
{
	char *p = child.rbuf, *end = child.rbuf + child.rlen, *nl;
	struct msg *m = head;
	size_t done;

	for (char *q = p; q < end && (nl = memchr(q, '\n', (size_t)(end - q))) != NULL; q = nl + 1) {
		cJSON *v = cJSON_ParseWithLength(q, (size_t)(nl - q));
		int object = cJSON_IsObject(v);
		const char *status = object ? json_string(v, "status") : NULL;

		/* Line i answers the i-th sent message; extra lines are reported below. */
		if (m != NULL && m->sent) {
			m->retry = status != NULL && strcmp(status, "retry") == 0;
			m = m->next;
		}
		cJSON_Delete(v);
		if (!object)
			warning("%s answered a line that is not a JSON object; not copied",
			    opt.argv[0]);
		else if (fwrite(q, 1, (size_t)(nl - q) + 1, stdout) != (size_t)(nl - q) + 1)
			break;	/* out_flush() reports it and exits: nothing below is settled */
	}
	out_flush("messages answered before this one were acked");
	while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		if (head == NULL || !head->sent)
			warning("%s answered more lines than it was given; extra line ignored",
			    opt.argv[0]);
		else
			ack_or_retry_head();
		p = nl + 1;
		last_activity = now_seconds();
		child.deaths = child.deaths_unread = 0;
		backoff_reset(&child.backoff);
	}
	flush_acks();
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

		child.rbuf = grow(child.rbuf, &child.rcap, child.rlen + 65536, 1);
		n = read(child.out, child.rbuf + child.rlen, child.rcap - child.rlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			take_answers();
			return n == 0;
		}
		child.rlen += (size_t)n;
		if (child.rlen > 4 * 65536)
			take_answers();
	}
}

/* --- the child's death ---------------------------------------------------- */

static void
finish(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/*
 * Did the child read any of the message it was working on (the head)? It
 * answers in order, so the head is the one that can have killed it; bytes
 * still in the pipe were never read. A child that died before reading
 * anything (a startup failure) blames no message.
 */
static int
head_was_read(void)
{
	int unread = 0;

	if (head == NULL || !head->sent || child.in < 0 ||
	    ioctl(child.in, FIONREAD, &unread) < 0)
		return head != NULL && head->sent;
	return child.written - (size_t)unread > child.answered;
}

/*
 * The message it was working on goes back to the queue: the broker counts
 * that towards the delivery limit, so a message that kills every child ends
 * in Q.dead. The other unanswered ones did nothing wrong: the restarted
 * child gets them, one at a time, so that a second death is blamed right.
 */
static void
child_died(int status)
{
	char how[64];
	int blamed;
	long held;
	double delay;

	read_child();	/* answers it wrote before dying still count */
	blamed = head_was_read();
	held = nsent;
	close(child.out);
	if (child.in >= 0)
		close(child.in);
	child.in = -1;
	child.pid = 0;
	child.wlen = child.woff = child.rlen = 0;
	if (blamed) {
		struct msg *m = pop_head();

		reject(m, 1);
		free_msg(m);
	}
	for (struct msg *m = head; m != NULL && m->sent; m = m->next)
		m->sent = 0, m->redelivered = 1;
	nsent = nsuspect = 0;
	describe_status(how, sizeof how, status);
	if (draining) {
		warning("%s %s while answering %ld messages: they go back to the queue",
		    opt.argv[0], how, held);
		forget_unsent(1);
		return;
	}
	child.deaths_unread = blamed ? 0 : child.deaths_unread + 1;
	/* Poison messages explain a few deaths in a row, never this many. */
	if (++child.deaths > 2 * opt.max_deliveries + 5 || child.deaths_unread >= MAX_DEATHS_UNREAD)
		finish(EXIT_UNAVAILABLE, "%s %s, %d times in a row without answering; giving up "
		    "(its unanswered messages go back to the queue)", opt.argv[0], how,
		    child.deaths);
	delay = backoff_next(&child.backoff);
	child.restart_at = now_seconds() + delay;
	warning("%s %s while answering %ld messages (%s); restarting it in %.1f s", opt.argv[0],
	    how, held, blamed ? "the first one goes back to the queue, counted as a failed "
	    "delivery" : "it had read none of them", delay);
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
	warning("broker %s: %s; reconnecting (%ld messages the child holds will be "
	    "redelivered)", mq.target, mq.why, nsent);
	mq_close(&mq);
	linked = 0;
	forget_unsent(0);
	mq_confirms_clear(&retry_copies);
	ack_upto = 0;	/* the broker redelivers those messages */
	lost_since = now_seconds();
	connect_at = lost_since;
	backoff_reset(&connect_backoff);
}

/* A retry copy's confirm: ack its original; a nack means the copy may be lost, so the original goes back instead. */
static int
retry_copy_confirmed(const struct mq_confirm_wait *w, int acked, void *arg)
{
	(void)arg;
	return acked ? mq_ack(&mq, w->tag) : mq_reject(&mq, w->tag, 1);
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

/* One attempt to connect, declare and subscribe; on failure the next is scheduled. */
static void
link_up(void)
{
	struct mq_topology t = { opt.queue, opt.max_deliveries, opt.retry_ms, 0 };
	int rc = mq_connect(&mq);

	if (rc == 0 && (rc = mq_declare(&mq, &t)) == 0)
		rc = mq_consume(&mq, opt.queue, (int)opt.prefetch);
	if (rc == 0) {
		if (lost_since >= 0)
			warning("broker %s: connected again", mq.target);
		lost_since = -1;
		linked = 1;
		last_activity = now_seconds();
		backoff_reset(&connect_backoff);
		return;
	}
	if (mq.permanent)
		finish(EXIT_UNAVAILABLE, "broker %s: %s", mq.target, mq.why);
	if (lost_since < 0)
		lost_since = now_seconds();
	if (opt.patience >= 0 && now_seconds() - lost_since > opt.patience)
		finish(EXIT_UNAVAILABLE, "broker %s unavailable for %g s: %s; messages not acked "
		    "stay in the queue", mq.target, opt.patience, mq.why);
	debugx("broker: %s; retrying", mq.why);
	connect_at = now_seconds() + backoff_next(&connect_backoff);
}

/* --- shutting down ---------------------------------------------------------- */

static void
start_draining(void)
{
	draining = 1;
	if (mq_connected(&mq))
		mq_cancel(&mq);
	forget_unsent(1);
}

static void
free_all(void)
{
	while (head != NULL)
		free_msg(pop_head());
	free(child.wbuf);
	free(child.rbuf);
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
	forget_unsent(1);
	while (head != NULL) {
		struct msg *m = pop_head();

		reject(m, 1);
		free_msg(m);
	}
	stop_child();
	mq_close(&mq);
	free_all();
	if (fflush(stdout) == EOF)
		code = EXIT_OUTPUT;
	exit(code);
}

/* --- main loop -------------------------------------------------------------- */

static int
idle_over(double now)
{
	return opt.idle_exit >= 0 && mq_connected(&mq) && head == NULL && retry_copies.n == 0 &&
	    now - last_activity >= opt.idle_exit;
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
	/* The idle clock stops while disconnected: see idle_over(). */
	if (opt.idle_exit >= 0 && mq_connected(&mq) && head == NULL && retry_copies.n == 0 &&
	    last_activity + opt.idle_exit - now < t)
		t = last_activity + opt.idle_exit - now;
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
		if (done_draining() || (draining && !mq_connected(&mq) && nsent == 0))
			finish(EXIT_OK, NULL);
		if (!mq_connected(&mq) && !draining && now >= connect_at)
			link_up();
		if (child.pid == 0 && !draining && now >= child.restart_at)
			start_child();
		feed_child();
		write_child();
		wait_events(now);
		reap_child(0);
		broker_events();
	}
}

static void
parse_options(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "queue", required_argument, NULL, 'q' },
		{ "prefetch", required_argument, NULL, 'p' },
		{ "retry-delay", required_argument, NULL, 'r' },
		{ "max-deliveries", required_argument, NULL, 'm' },
		{ "idle-exit", required_argument, NULL, 'i' },
		{ "patience", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	/* "+": options end at COMMAND, whose own options are its business. */
	while ((c = getopt_long(argc, argv, "+q:p:", opts, NULL)) != -1) {
		switch (c) {
		case 'q': opt.queue = optarg; break;
		case 'p': opt.prefetch = option_long("-p", optarg, 1, 65535); break;
		case 'r': opt.retry_ms = (long)(option_seconds("--retry-delay", optarg, 86400) * 1000 + 0.5); break;
		case 'm': opt.max_deliveries = option_long("--max-deliveries", optarg, 1, 1000); break;
		case 'i': opt.idle_exit = option_seconds("--idle-exit", optarg, 1e9); break;
		case 'P': opt.patience = option_seconds("--patience", optarg, 1e9); break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': printf("%s %s\n", progname, OA_VERSION); exit(EXIT_OK);
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (optind >= argc) {
		warning("a COMMAND to run is required");
		usage(stderr, EXIT_USAGE);
	}
	if (*opt.queue == '\0' || strlen(opt.queue) > 200) {
		warning("option -q: a queue name has 1 to 200 bytes");
		usage(stderr, EXIT_USAGE);
	}
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
	/* No SA_RESTART: a signal must interrupt poll() so shutdown starts at once. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	mq_init(&mq, MQ_HEARTBEAT, 1);
	child.in = child.out = -1;
	/* The child first: a command that cannot run must not take any message. */
	start_child();
	last_activity = now_seconds();
	consume_loop();
}
