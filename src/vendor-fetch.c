/* vendor-fetch: fetch every vendor's stock in parallel and write it as JSON lines, one block per vendor. */
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/config.h"
#include "lib/http.h"
#include "lib/jsonl.h"
#include "lib/jsonslab.h"
#include "lib/log.h"
#include "lib/num.h"
#include "lib/policy.h"
#include "lib/retry.h"
#include "lib/spawn.h"
#include "lib/stockscan.h"
#include "lib/utf8.h"
#include "lib/xalloc.h"

/*
 * One curl multi handle carries every vendor's transfer. A vendor whose
 * attempt failed transiently waits for its retry time while the others keep
 * transferring; the loop sleeps in curl_multi_poll until the next socket event
 * or the earliest retry. A response is checked whole, then written as one
 * block (parsed again an item at a time), so a vendor's lines are never
 * interleaved with another's and a broken response writes none.
 */

enum state { WAITING, RUNNING, DONE, FAILED };

struct vendor {
	char *name;
	char *url;
	char *shown;		/* url without a password, for messages */
	CURL *h;
	struct http_resp resp;
	struct backoff backoff;
	enum state state;
	int attempts;
	double retry_at;	/* monotonic time of the next attempt */
	double deadline;	/* monotonic time the running attempt times out */
	struct timespec started;	/* wall clock when the current attempt began */
	char why[CURL_ERROR_SIZE + 64];
};


static struct {
	struct http_limits lim;	/* lim.max_bytes: one response, as decoded */
	size_t max_total;	/* every response held at once */
	long retries;
	const char *filter;
} opt = {
	.lim = { .timeout = 30, .connect_timeout = 10, .max_bytes = MAX_BYTES_DEFAULT },
	.max_total = MAX_TOTAL_DEFAULT,
	.retries = 3,
};

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = {
		"[--base URL] [--retries N] [--timeout S] [--max-bytes N]\n"
		"[--max-total N] [--filter JQ] VENDOR | VENDOR=URL ...",
		NULL,
	};
	static const struct usage_option options[] = {
		{ "--base URL", "the vendors' base URL (overrides VENDOR_BASE_URL)" },
		{ "--retries N", "retry a failing vendor up to N more times (default 3)" },
		{ "--timeout S", "give up an attempt after S seconds (default 30)" },
		{ "--max-bytes N", "the largest response, as decoded (default 67108864)" },
		{ "--max-total N", "the memory all responses may hold at once (default 1073741824)" },
		{ "--filter JQ", "run jq -c JQ over each response before reading it" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

/* --- writing ---------------------------------------------------------------- */

static void
block_flush(const struct vendor *v)
{
	char done[256];

	snprintf(done, sizeof done, "the lines of %s may be incomplete", v->name);
	out_flush(done);
}

static void
write_block(const struct vendor *v, const cJSON *items)
{
	struct stock_block b;

	stock_block_begin(&b, v->name, &v->started);
	for (const cJSON *it = items->child; it != NULL; it = it->next)
		stock_block_item(&b, it);
	stock_block_end(&b);
	block_flush(v);
}

/* --- parsing ------------------------------------------------------------------ */

/*
 * The response checked whole first, then parsed again item by item as its
 * block is written (lib/stockscan): a response that breaks off writes
 * nothing, and memory holds the body and one item rather than a tree of
 * every item.
 */
static int
stream_array(struct vendor *v, const char *buf, size_t len)
{
	int rc;

	/* Each item is parsed, written and deleted in there: its nodes come from the slab. */
	jsonslab_on();
	rc = stock_write(v->name, &v->started, buf, len, v->why, sizeof v->why);
	jsonslab_off();
	if (rc < 0)
		return -1;
	block_flush(v);
	return 0;
}

/*
 * jq writes one value per line: a single array is the item list; a stream
 * of objects (a filter like '.items[]') is gathered into one.
 */
static cJSON *
parse_jq_output(struct vendor *v, const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len, *stop;
	cJSON *list = NULL, *val;

	while (!stock_all_blank(p, end)) {
		val = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &stop, 0);
		if (val == NULL) {
			snprintf(v->why, sizeof v->why, "the filter's output is not valid JSON");
			cJSON_Delete(list);
			return NULL;
		}
		p = stop;
		if (list == NULL && cJSON_IsArray(val) && stock_all_blank(p, end))
			return val;
		if (list == NULL)
			list = xalloc_check(cJSON_CreateArray());
		cJSON_AddItemToArray(list, val);
	}
	if (list == NULL)
		snprintf(v->why, sizeof v->why, "the filter produced no output");
	return list;
}

/* All of fd into out: 0, or -1 if unreadable, past out->max or out of memory. */
static int
read_all(int fd, struct buf *out)
{
	char chunk[64 * 1024];
	ssize_t n;

	while ((n = read(fd, chunk, sizeof chunk)) > 0)
		if (buf_add(out, chunk, (size_t)n) < 0)
			return -1;
	return n < 0 ? -1 : 0;
}

/* jq's first line of complaint, for the failure message. */
static void
jq_complaint(struct vendor *v, FILE *err, int status)
{
	char line[512] = "";

	rewind(err);
	if (fgets(line, sizeof line, err) != NULL)
		line[strcspn(line, "\n")] = '\0';
	if (line[0] != '\0')
		snprintf(v->why, sizeof v->why, "--filter failed: %s", line);
	else if (WIFEXITED(status))
		snprintf(v->why, sizeof v->why, "--filter failed: jq exited with status %d",
		    WEXITSTATUS(status));
	else
		snprintf(v->why, sizeof v->why, "--filter failed: jq was killed by signal %d",
		    WTERMSIG(status));
}

/*
 * Run jq over the body. The body goes in through an unlinked temporary file
 * and jq's complaints out through another, so only its output uses a pipe
 * and nothing can deadlock however large either side is.
 */
static cJSON *
run_filter(struct vendor *v)
{
	FILE *in = tmpfile(), *err = tmpfile();
	struct buf out = { .max = opt.lim.max_bytes };
	char *argv[] = { "jq", "-c", NULL, NULL };
	struct spawn_fds fds;
	cJSON *items = NULL;
	int pfd[2] = { -1, -1 }, status = 0, rc;
	pid_t pid;

	/* jq 1.6 takes a program starting with '-' for an option; a space is harmless. */
	argv[2] = xasprintf(" %s", opt.filter);
	if (in == NULL || err == NULL ||
	    fwrite(v->resp.body.data, 1, v->resp.body.len, in) != v->resp.body.len ||
	    fflush(in) != 0 || lseek(fileno(in), 0, SEEK_SET) != 0 || pipe2(pfd, O_CLOEXEC) < 0) {
		snprintf(v->why, sizeof v->why, "--filter: cannot set up a temporary file or pipe");
		goto done;
	}
	/* jq reads the file: the body's memory is free for jq's output. */
	buf_free(&v->resp.body);
	fds = (struct spawn_fds){ .in = fileno(in), .out = pfd[1], .err = fileno(err) };
	rc = spawn_child(&pid, argv, &fds, 0);
	close(pfd[1]);
	if (rc != 0) {
		snprintf(v->why, sizeof v->why, "--filter: cannot run jq: %s", strerror(rc));
		goto done;
	}
	rc = read_all(pfd[0], &out);
	close(pfd[0]);
	pfd[0] = -1;
	if (rc < 0)
		kill(pid, SIGTERM);
	while (waitpid(pid, &status, 0) < 0)
		;
	if (rc < 0)
		snprintf(v->why, sizeof v->why, "--filter: jq's output was unreadable or larger "
		    "than %zu bytes", opt.lim.max_bytes);
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		jq_complaint(v, err, status);
	else
		items = parse_jq_output(v, out.data != NULL ? out.data : "", out.len);
done:
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (in != NULL)
		fclose(in);
	if (err != NULL)
		fclose(err);
	buf_free(&out);
	free(argv[2]);
	return items;
}

/* A whole response arrived: parse it and write its block, or say why not. */
static int
deliver(struct vendor *v)
{
	cJSON *items;
	int rc;

	if (opt.filter == NULL) {
		rc = stream_array(v, v->resp.body.data ? v->resp.body.data : "", v->resp.body.len);
		http_resp_free(&v->resp);
		return rc;
	}
	items = run_filter(v);
	/* The parse tree is all we need now; give the body's memory back first. */
	http_resp_free(&v->resp);
	if (items == NULL)
		return -1;
	write_block(v, items);
	cJSON_Delete(items);
	return 0;
}

/* --- transfers ---------------------------------------------------------------- */

/* Every vendor, and the loop (lib/http.c's) that carries their transfers. */
struct fetch {
	struct vendor *vs;
	size_t n;
	size_t running, slots;	/* transfers running, and at most: --max-total / --max-bytes */
	struct http_loop loop;
};

static void
start(struct fetch *f, struct vendor *v)
{
	struct http_limits lim = opt.lim;

	/* The attempt's time limit is kept here, where time spent writing is known. */
	lim.timeout = 0;
	if (http_prepare(v->h, v->url, &lim, &v->resp) < 0)
		die(EXIT_BUG, "%s: %s", v->name, v->resp.err);
	v->attempts++;
	v->state = RUNNING;
	f->running++;
	v->deadline = now_seconds() + opt.lim.timeout;
	clock_gettime(CLOCK_REALTIME, &v->started);
	http_loop_add(&f->loop, v->h);
	debugx("%s: attempt %d: GET %s", v->name, v->attempts, v->shown);
}

/* No lines for this vendor: say why, after how many attempts. */
static void
give_up_vendor(struct vendor *v)
{
	v->state = FAILED;
	warning("%s: %s after %d attempt%s; no lines written for %s", v->name, v->why,
	    v->attempts, v->attempts == 1 ? "" : "s", v->name);
}

/* An attempt ended, its handle out of the loop: write its block, or retry later, or give up. */
static void
finished(struct vendor *v, CURLcode rc)
{
	enum http_outcome o;
	long status;
	double delay;

	o = http_result(v->h, rc, &v->resp, &status, v->why, sizeof v->why);
	/* A failed attempt's body is of no use: its memory goes back to the budget. */
	if (o != HTTP_OK)
		buf_free(&v->resp.body);
	if (o == HTTP_OK) {
		v->state = deliver(v) == 0 ? DONE : FAILED;
		if (v->state == FAILED)
			give_up_vendor(v);
		return;
	}
	if (o == HTTP_PERMANENT || v->attempts > opt.retries) {
		give_up_vendor(v);
		return;
	}
	delay = http_retry_delay(&v->backoff, &v->resp);
	debugx("%s: %s; retrying in %.2f s", v->name, v->why, delay);
	v->state = WAITING;
	v->retry_at = now_seconds() + delay;
}

/*
 * While a block is written (or filtered) the transfers still running are not
 * read; that time is not theirs, so their deadlines move on by as much.
 */
static void
stalled(struct fetch *f, double seconds)
{
	for (size_t i = 0; i < f->n; i++)
		if (f->vs[i].state == RUNNING)
			f->vs[i].deadline += seconds;
}

/* The loop's done(): a vendor's transfer ended. */
static void
transfer_done(CURL *h, CURLcode rc, void *arg)
{
	struct fetch *f = arg;
	struct vendor *v;
	double t0 = now_seconds();

	curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&v);
	f->running--;
	finished(v, rc);
	stalled(f, now_seconds() - t0);
}

/* Attempts past their time limit end as timed out. */
static void
expire(struct fetch *f)
{
	double now = now_seconds();

	for (size_t i = 0; i < f->n; i++) {
		struct vendor *v = &f->vs[i];

		if (v->state != RUNNING || v->deadline > now)
			continue;
		http_loop_remove(&f->loop, v->h);
		f->running--;
		snprintf(v->resp.err, sizeof v->resp.err, "timed out after %g s", opt.lim.timeout);
		finished(v, CURLE_OPERATION_TIMEDOUT);
	}
}

/*
 * The loop's wake(): time limits enforced and due retries started. Returns
 * the seconds until the next retry or time limit, or -1 once every vendor is
 * done or failed.
 */
static double
vendors_due(void *arg)
{
	struct fetch *f = arg;
	double now, next;
	int open = 0;

	expire(f);
	now = now_seconds();
	/* Vendors past the budget's slots wait their turn, in order. */
	for (size_t i = 0; i < f->n && f->running < f->slots; i++)
		if (f->vs[i].state == WAITING && f->vs[i].retry_at <= now)
			start(f, &f->vs[i]);
	next = now + 1.0;
	for (size_t i = 0; i < f->n; i++) {
		const struct vendor *v = &f->vs[i];

		if (v->state == WAITING && v->retry_at < next && f->running < f->slots)
			next = v->retry_at;
		if (v->state == RUNNING && v->deadline < next)
			next = v->deadline;
		open += v->state == WAITING || v->state == RUNNING;
	}
	if (open == 0)
		return -1;
	return next > now ? next - now : 0;
}

static void
fetch_all(struct vendor *vs, size_t n)
{
	struct fetch f = { .vs = vs, .n = n, .slots = opt.max_total / opt.lim.max_bytes };

	http_loop_init(&f.loop, 0);
	http_loop_drive(&f.loop, transfer_done, vendors_due, &f);
	http_loop_free(&f.loop);
}

/* --- setup ---------------------------------------------------------------------- */

static void
vendor_init(struct vendor *v, const char *arg, const char *base)
{
	const char *eq = strchr(arg, '='), *why;

	memset(v, 0, sizeof *v);
	v->name = eq ? xstrndup(arg, (size_t)(eq - arg)) : xstrdup(arg);
	if (v->name[0] == '\0') {
		warning("\"%s\": the vendor name is empty", arg);
		usage(stderr, EXIT_USAGE);
	}
	if (eq != NULL)
		v->url = xstrdup(eq + 1);
	else if (base == NULL) {
		warning("%s: no URL: give --base, set VENDOR_BASE_URL, or write %s=URL", v->name,
		    v->name);
		usage(stderr, EXIT_USAGE);
	} else
		v->url = http_vendor_url(base, v->name, "stock");
	/* base passed http_url_check in main(), so only memory can be missing here. */
	xalloc_check(v->url);
	v->shown = xalloc_check(config_redact_url(v->url));
	if (http_url_check(v->url, &why) < 0) {
		warning("%s: URL \"%s\" %s", v->name, v->shown, why);
		usage(stderr, EXIT_USAGE);
	}
	v->h = xalloc_check(curl_easy_init());
	curl_easy_setopt(v->h, CURLOPT_PRIVATE, v);
	http_resp_init(&v->resp, opt.lim.max_bytes);
	v->backoff = (struct backoff)BACKOFF_HTTP;
	v->state = WAITING;
}

static void
vendor_free(struct vendor *v)
{
	curl_easy_cleanup(v->h);
	http_resp_free(&v->resp);
	free(v->name);
	free(v->url);
	free(v->shown);
}

static void
no_duplicates(struct vendor *vs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < i; j++)
			if (strcmp(vs[i].name, vs[j].name) == 0) {
				warning("%s: vendor named twice", vs[i].name);
				usage(stderr, EXIT_USAGE);
			}
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "base", required_argument, NULL, 'b' },
		{ "retries", required_argument, NULL, 'r' },
		{ "timeout", required_argument, NULL, 't' },
		{ "max-bytes", required_argument, NULL, 'm' },
		{ "max-total", required_argument, NULL, 'M' },
		{ "filter", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *base = config_vendor_base(), *why;
	struct vendor *vs;
	size_t n, failed = 0;
	int ch, total_given = 0;

	log_init(argv[0]);
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'b': base = optarg; break;
		case 'r': opt.retries = option_long("--retries", optarg, 0, 100); break;
		case 't': opt.lim.timeout = option_seconds("--timeout", optarg, 86400); break;
		case 'm':
			opt.lim.max_bytes = (size_t)option_long("--max-bytes", optarg, 1,
			    64L << 30);
			break;
		case 'M':
			opt.max_total = (size_t)option_long("--max-total", optarg, 1, 64L << 30);
			total_given = 1;
			break;
		case 'f': opt.filter = optarg; break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (opt.lim.timeout < 0.001)
		die(EXIT_USAGE, "option --timeout: must be more than 0 seconds");
	if (!total_given && opt.max_total < opt.lim.max_bytes)
		opt.max_total = opt.lim.max_bytes;
	if (opt.max_total < opt.lim.max_bytes)
		die(EXIT_USAGE, "option --max-total: %zu is less than --max-bytes (%zu)",
		    opt.max_total, opt.lim.max_bytes);
	if (opt.lim.connect_timeout > opt.lim.timeout)
		opt.lim.connect_timeout = opt.lim.timeout;
	if (optind == argc) {
		warning("no vendor given");
		usage(stderr, EXIT_USAGE);
	}
	if (base != NULL && http_url_check(base, &why) < 0) {
		char *shown = config_redact_url(base);

		warning("base URL \"%s\" %s", shown ? shown : "", why);
		free(shown);
		usage(stderr, EXIT_USAGE);
	}
	/* A closed pipe is a write error (exit 74), not a silent death. */
	signal(SIGPIPE, SIG_IGN);
	http_global_init();
	n = (size_t)(argc - optind);
	vs = xcalloc(n, sizeof *vs);
	for (size_t i = 0; i < n; i++)
		vendor_init(&vs[i], argv[optind + i], base);
	no_duplicates(vs, n);
	fetch_all(vs, n);
	for (size_t i = 0; i < n; i++) {
		failed += vs[i].state != DONE;
		vendor_free(&vs[i]);
	}
	free(vs);
	http_global_cleanup();
	out_flush("every vendor's block was written");
	return failed ? EXIT_UNAVAILABLE : EXIT_OK;
}
