/* vendor-mock: the vendor HTTP API (stock and orders) of SPEC §4, with injectable faults. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "lib/buf.h"
#include "lib/hash.h"
#include "lib/httpd.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/num.h"
#include "lib/policy.h"
#include "lib/retry.h"
#include "lib/xalloc.h"

#define DEFAULT_LISTEN	"127.0.0.1:8081"
#define BODY_MAX	(64 * 1024)	/* an order is tiny; anything bigger is abuse */
#define STREAM_BLOCK	(32 * 1024)
#define GENERATE_MAX	10000000L
#define SKU_DIGITS	6
#define NAME_MAX_LEN	64
#define ORDER_ID_MAX	200
#define CONNECTION_LIMIT 1024	/* a restarted client may hold its old and new connections */
#define IDLE_TIMEOUT	30	/* seconds a keep-alive connection may sit idle */
#define LATENCY_MAX	600000L
/* 2^53: beyond it a JSON number (a double) loses units. */
#define QUANTITY_MAX	9007199254740992.0

struct fault {
	long fail_first;	/* the first N requests fail */
	double fail_rate;	/* then each fails with this probability */
	long latency_ms;	/* added before every answer */
	int answer_status;	/* --answer: every request gets this status ... */
	const char *answer_body;	/* ... and this body; 0: a real answer */
	int hang;		/* --hang: no answer until the client gives up */
	int drop;		/* --drop: the connection is closed without an answer */
};

struct stats {
	long stock_requests, order_requests, orders_accepted, orders_refused;
	long duplicate_orders, injected_failures, units_sold;
};

/* What an order_id was answered the first time: the same answer is given again. */
struct outcome {
	char *order_id;	/* canonical (order_key) */
	int status;
	char *body;
};

struct vendor {
	char *name;
	size_t n;		/* items */
	int64_t *qty;		/* current quantity of each item */
	int generated;		/* else read from a file */
	char **head, **tail;	/* file catalogue: item text before and after its quantity */
	char **sku;		/* file catalogue: each item's SKU */
	struct hash skus;	/* file catalogue: sku -> item */
	int width;		/* generated catalogue: digits in a SKU */
	struct fault fault;
	pthread_mutex_t lock;	/* guards qty and everything below */
	long seen;
	uint64_t rng;
	struct stats st;
	struct hash orders;	/* canonical order_id -> outcome */
	struct outcome *outcomes;
	size_t n_outcomes, cap_outcomes;
};

/* One HTTP request, from its first callback to its completion. */
struct req {
	struct httpd_req h;	/* the body is capped at BODY_MAX */
	struct vendor *v;
	int waited;		/* --latency: suspended for it and resumed */
	char order_id[ORDER_ID_MAX + 1];
};

/* The GET /stock body, generated as the client reads it. */
struct stream {
	struct vendor *v;
	int64_t *qty;		/* quantities as they were when the request was answered */
	size_t next;
	int opened, closed;
	struct buf piece;
	size_t off;
};

/* A --fail-first/--fail-rate/--latency given before the vendors it names exist. */
struct fault_opt {
	int which;
	const char *opt, *vendor, *value;
};

static struct vendor *vendors;
static size_t n_vendors;
static int fail_status = 503;
static long retry_after = -1;
static uint64_t seed = 1;
static int logging;		/* set once before serving; logfp may close on a write error */
static FILE *logfp;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int stopping;

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = {
		"[--listen ADDR:PORT] [--vendor NAME=FILE]... [--generate NAME:COUNT]...\n"
		"[--fail-rate [VENDOR=]P] [--fail-first [VENDOR=]N] [--latency [VENDOR=]MS]\n"
		"[--fail-status CODE] [--retry-after S] [--seed N] [--log FILE]\n"
		"[--answer [VENDOR=]STATUS[:BODY]] [--hang VENDOR] [--drop VENDOR]",
		NULL,
	};
	static const struct usage_option options[] = {
		{ "--listen ADDR:PORT", "where to listen (default " DEFAULT_LISTEN ")" },
		{ "--vendor NAME=FILE", "serve vendor NAME with the catalogue in FILE" },
		{ "--generate NAME:COUNT", "serve vendor NAME with COUNT generated products" },
		{ "--fail-rate [VENDOR=]P", "fail each request with probability P" },
		{ "--fail-first [VENDOR=]N", "fail each vendor's first N requests" },
		{ "--latency [VENDOR=]MS", "wait MS milliseconds before each answer" },
		{ "--fail-status CODE", "the status of injected failures, 400 to 599 (default 503)" },
		{ "--retry-after S", "add Retry-After: S to injected failures" },
		{ "--answer [VENDOR=]STATUS[:BODY]", "answer every request with STATUS and BODY" },
		{ "--hang VENDOR", "answer nothing to the vendor's requests" },
		{ "--drop VENDOR", "close the vendor's connections without answering" },
		{ "--seed N", "seed of generated catalogues and --fail-rate (default 1)" },
		{ "--log FILE", "append one JSON line per request to FILE" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

static void
sb_str(struct buf *b, const char *s)
{
	xbuf_add(b, s, strlen(s));
}

/* splitmix64: a stateless mix, so a generated item needs no storage but its quantity. */
static uint64_t
mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static double
next_unit(uint64_t *state)
{
	*state += 1;
	return (double)(mix64(*state) >> 11) / 9007199254740992.0;
}

/* What the vendor's tables are searched for: a SKU or an order_id of vendor v. */
struct vendor_key {
	const struct vendor *v;
	const char *name;
};

/* hash_match_fn: whether item i of vendor k->v has SKU k->name. */
static int
sku_is(const void *ctx, size_t i)
{
	const struct vendor_key *k = ctx;

	return strcmp(k->v->sku[i], k->name) == 0;
}

/* hash_match_fn: whether outcome i of vendor k->v answered order k->name. */
static int
order_is(const void *ctx, size_t i)
{
	const struct vendor_key *k = ctx;

	return strcmp(k->v->outcomes[i].order_id, k->name) == 0;
}

static struct vendor *
vendor_find(const char *name, size_t len)
{
	for (size_t i = 0; i < n_vendors; i++)
		if (strlen(vendors[i].name) == len && memcmp(vendors[i].name, name, len) == 0)
			return &vendors[i];
	return NULL;
}

static void
check_vendor_name(const char *opt, const char *name, size_t len)
{
	if (len == 0 || len > NAME_MAX_LEN)
		die(EXIT_USAGE, "option %s: a vendor name must have 1 to %d characters", opt,
		    NAME_MAX_LEN);
	for (size_t i = 0; i < len; i++)
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
		    name[i]) == NULL)
			die(EXIT_USAGE, "option %s: vendor name \"%.*s\" may only contain letters, "
			    "digits, '.', '_' and '-'", opt, (int)len, name);
}

static struct vendor *
vendor_add(const char *opt, const char *name, size_t len)
{
	struct vendor *v;

	check_vendor_name(opt, name, len);
	if (vendor_find(name, len) != NULL)
		die(EXIT_USAGE, "option %s: vendor \"%.*s\" is given twice", opt, (int)len, name);
	vendors = xreallocarray(vendors, n_vendors + 1, sizeof *vendors);
	v = &vendors[n_vendors++];
	memset(v, 0, sizeof *v);
	v->skus = HASH_MAP;
	v->orders = HASH_MAP;
	v->name = xstrndup(name, len);
	pthread_mutex_init(&v->lock, NULL);
	return v;
}

/* A generated catalogue stores only quantities; names and prices derive from the seed. */
static void
generate(const char *arg)
{
	const char *colon = strrchr(arg, ':');
	struct vendor *v;
	long count;

	if (colon == NULL)
		die(EXIT_USAGE, "option --generate: \"%s\" is not NAME:COUNT", arg);
	count = option_long("--generate", colon + 1, 0, GENERATE_MAX);
	v = vendor_add("--generate", arg, colon - arg);
	v->generated = 1;
	v->n = count;
	v->width = SKU_DIGITS;
	for (long c = count; c >= 1000000; c /= 10)
		v->width++;
}

static void
generate_fill(struct vendor *v)
{
	v->qty = xmalloc(v->n * sizeof *v->qty);
	for (size_t i = 0; i < v->n; i++)
		v->qty[i] = 1 + mix64(seed ^ mix64(i + 1)) % 1000;
}

static int
generated_index(const struct vendor *v, const char *sku, size_t *idx)
{
	char *end;
	unsigned long long k;

	if (strncmp(sku, "SKU-", 4) != 0 || strlen(sku + 4) != (size_t)v->width ||
	    sku[4] < '0' || sku[4] > '9')
		return -1;
	errno = 0;
	k = strtoull(sku + 4, &end, 10);
	if (errno != 0 || *end != '\0' || k < 1 || k > v->n)
		return -1;
	*idx = k - 1;
	return 0;
}

static int
sku_index(const struct vendor *v, const char *sku, size_t *idx)
{
	if (v->generated)
		return generated_index(v, sku, idx);
	return hash_find(&v->skus, hash_string(sku), sku_is, &(struct vendor_key){ v, sku }, idx);
}

static char *
read_file(const char *path, size_t *len)
{
	struct buf b = { 0 };
	char chunk[65536];
	size_t n;
	FILE *fp = fopen(path, "r");

	if (fp == NULL)
		die(EXIT_NO_INPUT, "option --vendor: cannot open %s: %s", path, strerror(errno));
	while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0)
		xbuf_add(&b, chunk, n);
	if (ferror(fp))
		die(EXIT_NO_INPUT, "option --vendor: cannot read %s: %s", path, strerror(errno));
	fclose(fp);
	xbuf_add(&b, "", 0);	/* an empty file is "", not NULL */
	*len = b.len;
	return b.data;
}

/* Every field but the quantity passes through as it was written, in its order. */
static void
split_item(const cJSON *item, const cJSON *quantity, char **head, char **tail)
{
	struct buf b = { 0 };
	const cJSON *f;

	sb_str(&b, "{");
	cJSON_ArrayForEach(f, item) {
		cJSON *key = xalloc_check(cJSON_CreateString(f->string));
		char *k = xalloc_check(cJSON_PrintUnformatted(key)), *val;

		if (f != item->child)
			sb_str(&b, ",");
		sb_str(&b, k);
		sb_str(&b, ":");
		free(k);
		cJSON_Delete(key);
		if (f == quantity) {
			*head = b.data;
			b = (struct buf){ 0 };
			continue;
		}
		val = xalloc_check(cJSON_PrintUnformatted(f));
		sb_str(&b, val);
		free(val);
	}
	sb_str(&b, "}");
	*tail = b.data;
}

static void
load_item(struct vendor *v, const char *path, size_t i, const cJSON *item)
{
	const cJSON *sku = cJSON_GetObjectItemCaseSensitive(item, "sku");
	const cJSON *q = cJSON_GetObjectItemCaseSensitive(item, "quantity");
	size_t dup;

	if (!cJSON_IsObject(item))
		die(EXIT_BAD_INPUT, "%s: item %zu (.[%zu]) is not an object", path, i + 1, i);
	if (!cJSON_IsString(sku) || *sku->valuestring == '\0')
		die(EXIT_BAD_INPUT, "%s: item %zu (.[%zu]): \"sku\" must be a non-empty string",
		    path, i + 1, i);
	if (!cJSON_IsNumber(q) || q->valuedouble < 0 || q->valuedouble > QUANTITY_MAX ||
	    q->valuedouble != (double)(int64_t)q->valuedouble)
		die(EXIT_BAD_INPUT, "%s: item %zu (.[%zu]): \"quantity\" must be an integer >= 0",
		    path, i + 1, i);
	v->sku[i] = xstrdup(sku->valuestring);
	if (hash_add(&v->skus, hash_string(v->sku[i]), sku_is,
	    &(struct vendor_key){ v, v->sku[i] }, i, &dup) != 0)
		die(EXIT_BAD_INPUT, "%s: item %zu (.[%zu]): sku \"%s\" repeats item %zu", path,
		    i + 1, i, sku->valuestring, dup + 1);
	v->qty[i] = (int64_t)q->valuedouble;
	split_item(item, q, &v->head[i], &v->tail[i]);
}

/* Register a --vendor NAME=FILE; the file is read once every option is known good. */
static size_t
catalogue_add(const char *arg)
{
	const char *eq = strchr(arg, '=');

	if (eq == NULL || eq[1] == '\0')
		die(EXIT_USAGE, "option --vendor: \"%s\" is not NAME=FILE", arg);
	vendor_add("--vendor", arg, eq - arg);
	return n_vendors - 1;
}

static long
line_of(const char *text, const char *at)
{
	long line = 1;

	for (; text < at; text++)
		line += *text == '\n';
	return line;
}

static void
load_catalogue(struct vendor *v, const char *path)
{
	const char *end;
	cJSON *root;
	size_t len, i = 0;
	const cJSON *item;
	char *text;

	text = read_file(path, &len);
	root = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);	/* the NUL too */
	if (root == NULL)
		die(EXIT_BAD_INPUT, "%s: line %ld: not valid JSON (byte %td)", path,
		    line_of(text, end), end - text + 1);
	if (!cJSON_IsArray(root))
		die(EXIT_BAD_INPUT, "%s: a catalogue must be a JSON array of items", path);
	v->n = cJSON_GetArraySize(root);
	v->qty = xmalloc(v->n * sizeof *v->qty);
	v->head = xmalloc(v->n * sizeof *v->head);
	v->tail = xmalloc(v->n * sizeof *v->tail);
	v->sku = xcalloc(v->n, sizeof *v->sku);
	cJSON_ArrayForEach(item, root)
		load_item(v, path, i++, item);
	cJSON_Delete(root);
	free(text);
}

/* "[VENDOR=]VALUE": a fault for one vendor, or for all of them. */
static void
fault_opt_add(struct fault_opt **list, size_t *n, int which, const char *opt, char *arg)
{
	char *eq = strchr(arg, '=');
	struct fault_opt *grown = xreallocarray(*list, *n + 1, sizeof **list);

	*list = grown;
	grown[*n] = (struct fault_opt){ which, opt, NULL, arg };
	if (eq != NULL) {
		*eq = '\0';
		check_vendor_name(opt, arg, eq - arg);
		grown[*n].vendor = arg;
		grown[*n].value = eq + 1;
	}
	(*n)++;
}

static double
option_probability(const char *opt, const char *s)
{
	const char *why;
	double p;

	if (parse_seconds(s, 1.0, &p, &why) < 0)
		die(EXIT_USAGE, "option %s: \"%s\" is not a probability from 0 to 1", opt, s);
	return p;
}

/* --answer's STATUS[:BODY]: any status from 100 to 599, any body (none by default). */
static void
answer_set(struct fault *f, const struct fault_opt *o)
{
	const char *colon = strchr(o->value, ':');
	char *status = xstrndup(o->value, colon ? (size_t)(colon - o->value) : strlen(o->value));

	f->answer_status = (int)option_long(o->opt, status, 100, 599);
	f->answer_body = colon ? colon + 1 : "";
	free(status);
}

/* --hang and --drop name a vendor (a value-less fault for it). */
static void
vendor_opt_add(struct fault_opt **list, size_t *n, int which, const char *opt, char *arg)
{
	struct fault_opt *grown = xreallocarray(*list, *n + 1, sizeof **list);

	check_vendor_name(opt, arg, strlen(arg));
	*list = grown;
	grown[(*n)++] = (struct fault_opt){ which, opt, arg, "" };
}

static void
fault_set(struct fault *f, const struct fault_opt *o)
{
	switch (o->which) {
	case 'f':
		f->fail_first = option_long(o->opt, o->value, 0, LONG_MAX);
		break;
	case 'r':
		f->fail_rate = option_probability(o->opt, o->value);
		break;
	case 'l':
		f->latency_ms = option_long(o->opt, o->value, 0, LATENCY_MAX);
		break;
	case 'A':
		answer_set(f, o);
		break;
	case 'H':
		f->hang = 1;
		break;
	case 'D':
		f->drop = 1;
		break;
	}
}

/* Faults for all vendors first, so one naming a vendor overrides them in any order. */
static void
faults_apply(const struct fault_opt *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (list[i].vendor == NULL)
			for (size_t k = 0; k < n_vendors; k++)
				fault_set(&vendors[k].fault, &list[i]);
	for (size_t i = 0; i < n; i++) {
		struct vendor *v;

		if (list[i].vendor == NULL)
			continue;
		v = vendor_find(list[i].vendor, strlen(list[i].vendor));
		if (v == NULL)
			die(EXIT_USAGE, "option %s: no vendor \"%s\" (give it with --vendor or "
			    "--generate)", list[i].opt, list[i].vendor);
		fault_set(&v->fault, &list[i]);
	}
}

static void
vendor_free(struct vendor *v)
{
	for (size_t i = 0; v->head != NULL && i < v->n; i++) {
		free(v->head[i]);
		free(v->tail[i]);
		free(v->sku[i]);
	}
	free(v->head);
	free(v->tail);
	free(v->sku);
	free(v->qty);
	hash_free(&v->skus);
	hash_free(&v->orders);
	for (size_t i = 0; i < v->n_outcomes; i++) {
		free(v->outcomes[i].order_id);
		free(v->outcomes[i].body);
	}
	free(v->outcomes);
	pthread_mutex_destroy(&v->lock);
	free(v->name);
}

/* httpd's answered hook: with --log, one JSON line per answer. */
static void
log_request(struct httpd_req *hr, unsigned status)
{
	const struct req *r = (const struct req *)hr;
	struct timespec ts;
	struct tm tm;
	char when[40];
	cJSON *o;
	char *line;

	if (!logging)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + strlen(when), sizeof when - strlen(when), ".%03ldZ", ts.tv_nsec / 1000000);
	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "time", when);
	cJSON_AddStringToObject(o, "method", r->h.method);
	cJSON_AddStringToObject(o, "path", r->h.url);
	json_add_int(o, "status", status);
	if (r->v != NULL)
		cJSON_AddStringToObject(o, "vendor", r->v->name);
	if (r->order_id[0] != '\0')
		cJSON_AddStringToObject(o, "order_id", r->order_id);
	line = xalloc_check(cJSON_PrintUnformatted(o));
	pthread_mutex_lock(&log_lock);
	if (logfp != NULL && (fprintf(logfp, "%s\n", line) < 0 || fflush(logfp) == EOF)) {
		warning("--log: writing failed: %s; no further requests are logged",
		    strerror(errno));
		fclose(logfp);
		logfp = NULL;
	}
	pthread_mutex_unlock(&log_lock);
	free(line);
	cJSON_Delete(o);
}

static enum MHD_Result
reply_injected(struct req *r)
{
	char secs[32];

	if (retry_after < 0)
		return httpd_send_error(&r->h, fail_status, "injected_failure");
	snprintf(secs, sizeof secs, "%ld", retry_after);
	return httpd_send_json(&r->h, fail_status, "{\"error\":\"injected_failure\"}",
	    (const char *[]){ MHD_HTTP_HEADER_RETRY_AFTER, secs, NULL });
}

static void
render_item(const struct stream *s, size_t i, struct buf *out)
{
	const struct vendor *v = s->v;
	char num[160];

	if (!v->generated) {
		sb_str(out, v->head[i]);
		snprintf(num, sizeof num, "%" PRId64, s->qty[i]);
		sb_str(out, num);
		sb_str(out, v->tail[i]);
		return;
	}
	snprintf(num, sizeof num, "{\"sku\":\"SKU-%0*zu\",\"name\":\"Item %0*zu\","
	    "\"quantity\":%" PRId64 ",\"price_cents\":%" PRIu64 "}", v->width, i + 1, v->width,
	    i + 1, s->qty[i], 99 + mix64(seed ^ mix64(i + 1) ^ 0x7072696365ULL) % 99901);
	sb_str(out, num);
}

/* The next piece of the array: its "[", one item, or its "]". */
static int
stream_piece(struct stream *s)
{
	buf_reset(&s->piece);
	s->off = 0;
	if (!s->opened) {
		s->opened = 1;
		sb_str(&s->piece, "[");
	} else if (s->next < s->v->n) {
		if (s->next > 0)
			sb_str(&s->piece, ",");
		render_item(s, s->next++, &s->piece);
	} else if (!s->closed) {
		s->closed = 1;
		sb_str(&s->piece, "]");
	} else {
		return -1;
	}
	return 0;
}

static ssize_t
stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream *s = cls;
	size_t n = 0;

	(void)pos;
	while (n < max) {
		size_t k;

		if (s->off == s->piece.len && stream_piece(s) < 0)
			break;
		k = s->piece.len - s->off;
		if (k > max - n)
			k = max - n;
		memcpy(buf + n, s->piece.data + s->off, k);
		s->off += k;
		n += k;
	}
	return n > 0 ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

static void
stream_free(void *cls)
{
	struct stream *s = cls;

	free(s->qty);
	buf_free(&s->piece);
	free(s);
}

/*
 * The quantities are copied when the request is answered, so the body is one
 * consistent snapshot even while orders keep arriving as it streams out.
 */
static enum MHD_Result
handle_stock(struct req *r)
{
	struct vendor *v = r->v;
	struct stream *s = xcalloc(1, sizeof *s);
	struct MHD_Response *resp;

	s->qty = xmalloc(v->n * sizeof *s->qty);
	s->v = v;
	pthread_mutex_lock(&v->lock);
	memcpy(s->qty, v->qty, v->n * sizeof *s->qty);
	pthread_mutex_unlock(&v->lock);
	resp = xalloc_check(MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK,
	    stream_read, s, stream_free));
	return httpd_send(&r->h, MHD_HTTP_OK, resp, NULL);
}

/* The text an order_id is remembered by: 42 and "42" are the same order. */
static const char *
order_key(const cJSON *id, char *key, size_t len)
{
	if (cJSON_IsString(id)) {
		if (*id->valuestring == '\0' || strlen(id->valuestring) >= len)
			return "\"order_id\" must be a string of 1 to 200 bytes or an integer";
		strcpy(key, id->valuestring);
		return NULL;
	}
	if (!cJSON_IsNumber(id) || id->valuedouble > QUANTITY_MAX ||
	    id->valuedouble < -QUANTITY_MAX || id->valuedouble != (double)(int64_t)id->valuedouble)
		return "\"order_id\" must be a string of 1 to 200 bytes or an integer";
	snprintf(key, len, "%" PRId64, (int64_t)id->valuedouble);
	return NULL;
}

static char *
invalid_body(const char *why)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	cJSON_AddStringToObject(o, "error", "invalid_request");
	cJSON_AddStringToObject(o, "detail", why);
	s = xalloc_check(cJSON_PrintUnformatted(o));
	cJSON_Delete(o);
	return s;
}

/* Validate an order body; NULL, or why it is refused. */
static const char *
order_parse(struct req *r, cJSON **order, long long *quantity)
{
	const char *why;

	*order = cJSON_ParseWithLength(r->h.body.data ? r->h.body.data : "", r->h.body.len);
	if (!cJSON_IsObject(*order))
		return "the body must be a JSON object";
	why = order_key(cJSON_GetObjectItemCaseSensitive(*order, "order_id"), r->order_id,
	    sizeof r->order_id);
	if (why != NULL)
		return why;
	if (json_string(*order, "sku") == NULL)
		return "\"sku\" must be a string";
	if (json_int(*order, "quantity", 1, (long long)QUANTITY_MAX, quantity) < 0)
		return "\"quantity\" must be a positive integer";
	return NULL;
}

/* Decide a new order; called with the vendor locked. */
static struct outcome
order_decide(struct vendor *v, const cJSON *order, int64_t q)
{
	struct outcome o = { NULL, MHD_HTTP_CONFLICT, NULL };
	cJSON *body = cJSON_CreateObject();
	size_t i;

	if (sku_index(v, json_string(order, "sku"), &i) < 0) {
		cJSON_AddStringToObject(body, "error", "unknown_sku");
		v->st.orders_refused++;
	} else if (v->qty[i] < q) {
		cJSON_AddStringToObject(body, "error", "insufficient_stock");
		v->st.orders_refused++;
	} else {
		v->qty[i] -= q;
		v->st.units_sold += q;
		v->st.orders_accepted++;
		o.status = MHD_HTTP_CREATED;
		cJSON_AddItemToObject(body, "order_id",
		    cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(order, "order_id"), 1));
		cJSON_AddStringToObject(body, "status", "accepted");
	}
	o.body = xalloc_check(cJSON_PrintUnformatted(body));
	cJSON_Delete(body);
	return o;
}

static void
remember(struct vendor *v, const char *key, struct outcome o)
{
	if (v->n_outcomes == v->cap_outcomes) {
		v->cap_outcomes = v->cap_outcomes ? 2 * v->cap_outcomes : 64;
		v->outcomes = xreallocarray(v->outcomes, v->cap_outcomes, sizeof *v->outcomes);
	}
	o.order_id = xstrdup(key);
	v->outcomes[v->n_outcomes] = o;
	hash_add(&v->orders, hash_string(key), order_is, &(struct vendor_key){ v, key },
	    v->n_outcomes++, NULL);
}

/*
 * The answer to an order_id is decided once, under the vendor's lock, and
 * remembered: a repeat gets the same status and body and sells nothing more.
 */
static enum MHD_Result
handle_order(struct req *r)
{
	struct vendor *v = r->v;
	cJSON *order;
	long long q;
	const char *why = order_parse(r, &order, &q);
	struct outcome o;
	size_t seen;
	char *copy;
	enum MHD_Result rc;

	if (why != NULL) {
		cJSON_Delete(order);
		copy = invalid_body(why);
		rc = httpd_send_json(&r->h, MHD_HTTP_BAD_REQUEST, copy, NULL);
		free(copy);
		return rc;
	}
	pthread_mutex_lock(&v->lock);
	if (hash_find(&v->orders, hash_string(r->order_id), order_is,
	    &(struct vendor_key){ v, r->order_id }, &seen) == 0) {
		v->st.duplicate_orders++;
	} else {
		seen = v->n_outcomes;
		remember(v, r->order_id, order_decide(v, order, q));
	}
	o = v->outcomes[seen];
	copy = xstrndup(o.body, strlen(o.body));
	pthread_mutex_unlock(&v->lock);
	cJSON_Delete(order);
	rc = httpd_send_json(&r->h, o.status, copy, NULL);
	free(copy);
	return rc;
}

static enum MHD_Result
handle_stats(struct req *r)
{
	cJSON *root = cJSON_CreateObject(), *all = cJSON_AddObjectToObject(root, "vendors");
	enum MHD_Result rc;
	char *body;

	for (size_t i = 0; i < n_vendors; i++) {
		struct vendor *v = &vendors[i];
		cJSON *o = cJSON_AddObjectToObject(all, v->name);
		struct stats st;

		pthread_mutex_lock(&v->lock);
		st = v->st;
		pthread_mutex_unlock(&v->lock);
		json_add_int(o, "stock_requests", st.stock_requests);
		json_add_int(o, "order_requests", st.order_requests);
		json_add_int(o, "orders_accepted", st.orders_accepted);
		json_add_int(o, "orders_refused", st.orders_refused);
		json_add_int(o, "duplicate_orders", st.duplicate_orders);
		json_add_int(o, "injected_failures", st.injected_failures);
		json_add_int(o, "units_sold", st.units_sold);
	}
	body = xalloc_check(cJSON_PrintUnformatted(root));
	cJSON_Delete(root);
	rc = httpd_send_json(&r->h, MHD_HTTP_OK, body, NULL);
	free(body);
	return rc;
}

/* Count the request and decide, before any state changes, whether to fail it. */
static int
inject_fault(struct vendor *v, int is_order)
{
	int fail;

	pthread_mutex_lock(&v->lock);
	if (is_order)
		v->st.order_requests++;
	else
		v->st.stock_requests++;
	v->seen++;
	fail = v->seen <= v->fault.fail_first ||
	    (v->fault.fail_rate > 0 && next_unit(&v->rng) < v->fault.fail_rate);
	if (fail)
		v->st.injected_failures++;
	pthread_mutex_unlock(&v->lock);
	return fail;
}

/*
 * --latency without a thread per request: the connection is suspended
 * (libmicrohttpd stops serving it) and the waker thread resumes it when its
 * time is up; libmicrohttpd then calls the handler again, which answers. One
 * polling thread serves the vendors without latency as fast as ever, however
 * many requests a slow vendor holds.
 */
static struct sleeper { double due; struct MHD_Connection *c; } *sleepers;	/* a min-heap on due */
static size_t n_sleepers, cap_sleepers;
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sleep_cv;	/* on CLOCK_MONOTONIC, as now_seconds() */
static int waker_stop;
static pthread_t waker_thread;
static int threaded;	/* a thread per connection (--hang): libmicrohttpd cannot suspend */

static void
sleepers_swap(size_t a, size_t b)
{
	struct sleeper t = sleepers[a];

	sleepers[a] = sleepers[b];
	sleepers[b] = t;
}

/* Suspend r's connection for ms milliseconds. */
static void
sleep_request(struct req *r, long ms)
{
	size_t i;

	pthread_mutex_lock(&sleep_lock);
	if (n_sleepers == cap_sleepers) {
		cap_sleepers = cap_sleepers ? 2 * cap_sleepers : 256;
		sleepers = xreallocarray(sleepers, cap_sleepers, sizeof *sleepers);
	}
	i = n_sleepers++;
	sleepers[i] = (struct sleeper){ now_seconds() + ms / 1000.0, r->h.c };
	for (; i > 0 && sleepers[(i - 1) / 2].due > sleepers[i].due; i = (i - 1) / 2)
		sleepers_swap(i, (i - 1) / 2);
	/* Suspended under the lock: the waker cannot resume it before this. */
	MHD_suspend_connection(r->h.c);
	r->waited = 1;
	if (i == 0)
		pthread_cond_signal(&sleep_cv);
	pthread_mutex_unlock(&sleep_lock);
}

/* The earliest sleeper, out of the heap (the lock held). */
static struct MHD_Connection *
sleepers_pop(void)
{
	struct MHD_Connection *c = sleepers[0].c;
	size_t i = 0;

	sleepers[0] = sleepers[--n_sleepers];
	for (;;) {
		size_t l = 2 * i + 1, m = i;

		if (l < n_sleepers && sleepers[l].due < sleepers[m].due)
			m = l;
		if (l + 1 < n_sleepers && sleepers[l + 1].due < sleepers[m].due)
			m = l + 1;
		if (m == i)
			return c;
		sleepers_swap(i, m);
		i = m;
	}
}

/* The waker thread: resumes each sleeper when it is due; every one at once when stopping. */
static void *
waker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&sleep_lock);
	for (;;) {
		double now = now_seconds();

		if (n_sleepers > 0 && (waker_stop || sleepers[0].due <= now)) {
			MHD_resume_connection(sleepers_pop());
			continue;
		}
		if (waker_stop)
			break;
		if (n_sleepers == 0) {
			pthread_cond_wait(&sleep_cv, &sleep_lock);
		} else {
			double due = sleepers[0].due;
			struct timespec ts = { (time_t)due, (long)((due - (double)(time_t)due) * 1e9) };

			pthread_cond_timedwait(&sleep_cv, &sleep_lock, &ts);
		}
	}
	pthread_mutex_unlock(&sleep_lock);
	return NULL;
}

/* --hang: hold the request, answering nothing, until the client closes its connection. */
static void
hang(struct req *r)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->h.c,
	    MHD_CONNECTION_INFO_CONNECTION_FD);
	char c;

	while (!stopping && ci != NULL) {
		struct pollfd p = { .fd = ci->connect_fd, .events = POLLIN | POLLRDHUP };

		if (poll(&p, 1, 100) > 0 && ((p.revents & (POLLRDHUP | POLLHUP | POLLERR)) ||
		    recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0))
			return;
	}
	sleep_seconds(LATENCY_MAX / 1000.0, &stopping);
}

static enum MHD_Result
handle_vendor(struct req *r, const char *rest)
{
	const char *slash = strchr(rest, '/');
	int is_order;

	if (slash == NULL || (strcmp(slash, "/stock") != 0 && strcmp(slash, "/orders") != 0))
		return httpd_send_error(&r->h, MHD_HTTP_NOT_FOUND, "not_found");
	if ((r->v = vendor_find(rest, slash - rest)) == NULL)
		return httpd_send_error(&r->h, MHD_HTTP_NOT_FOUND, "unknown_vendor");
	is_order = strcmp(slash, "/orders") == 0;
	if (is_order && strcmp(r->h.method, MHD_HTTP_METHOD_POST) != 0)
		return httpd_method_not_allowed(&r->h, "POST");
	if (!is_order && strcmp(r->h.method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(r->h.method, MHD_HTTP_METHOD_HEAD) != 0)
		return httpd_method_not_allowed(&r->h, "GET, HEAD");
	if (r->h.too_big)
		return httpd_send_error(&r->h, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large");
	if (r->v->fault.latency_ms > 0 && !r->waited && !stopping) {
		if (threaded) {	/* --hang: a thread of its own, which may sleep */
			sleep_seconds(r->v->fault.latency_ms / 1000.0, &stopping);
		} else {
			sleep_request(r, r->v->fault.latency_ms);
			return MHD_YES;
		}
	}
	if (r->v->fault.drop)
		return MHD_NO;	/* libmicrohttpd closes the connection, answering nothing */
	if (r->v->fault.hang) {
		hang(r);
		return MHD_NO;
	}
	if (r->v->fault.answer_status != 0)
		return httpd_send_json(&r->h, (unsigned)r->v->fault.answer_status,
		    r->v->fault.answer_body, NULL);
	if (inject_fault(r->v, is_order))
		return reply_injected(r);
	return is_order ? handle_order(r) : handle_stock(r);
}

/* httpd's handle hook: the routes. */
static enum MHD_Result
dispatch(struct httpd_req *hr)
{
	struct req *r = (struct req *)hr;

	if (strncmp(hr->url, "/vendor/", 8) == 0)
		return handle_vendor(r, hr->url + 8);
	if (strcmp(hr->url, "/_stats") != 0)
		return httpd_send_error(hr, MHD_HTTP_NOT_FOUND, "not_found");
	if (strcmp(hr->method, MHD_HTTP_METHOD_GET) != 0)
		return httpd_method_not_allowed(hr, "GET");
	return handle_stats(r);
}

/* Whether a handler may block (--hang). */
static int
any_hang(void)
{
	for (size_t i = 0; i < n_vendors; i++)
		if (vendors[i].fault.hang)
			return 1;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'L' },
		{ "vendor", required_argument, NULL, 'v' },
		{ "generate", required_argument, NULL, 'g' },
		{ "fail-rate", required_argument, NULL, 'r' },
		{ "fail-first", required_argument, NULL, 'f' },
		{ "latency", required_argument, NULL, 'l' },
		{ "fail-status", required_argument, NULL, 's' },
		{ "answer", required_argument, NULL, 'A' },
		{ "hang", required_argument, NULL, 'H' },
		{ "drop", required_argument, NULL, 'D' },
		{ "retry-after", required_argument, NULL, 'a' },
		{ "seed", required_argument, NULL, 'S' },
		{ "log", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct httpd srv = {
		.req_size = sizeof(struct req),
		.body_max = BODY_MAX,
		.connection_limit = CONNECTION_LIMIT,
		.idle_timeout = IDLE_TIMEOUT,
		.handle = dispatch,
		.answered = log_request,
	};
	const char *listen = DEFAULT_LISTEN, *logpath = NULL;
	struct { size_t vendor; const char *path; } *catalogues;
	struct fault_opt *faults = NULL;
	size_t n_catalogues = 0, n_faults = 0;
	struct httpd_addr addr;
	int ch;

	log_init(argv[0]);
	catalogues = xcalloc(argc, sizeof *catalogues);
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'L': listen = optarg; break;
		case 'v':
			catalogues[n_catalogues].vendor = catalogue_add(optarg);
			catalogues[n_catalogues++].path = strchr(optarg, '=') + 1;
			break;
		case 'g': generate(optarg); break;
		case 'r': fault_opt_add(&faults, &n_faults, ch, "--fail-rate", optarg); break;
		case 'f': fault_opt_add(&faults, &n_faults, ch, "--fail-first", optarg); break;
		case 'l': fault_opt_add(&faults, &n_faults, ch, "--latency", optarg); break;
		case 'A': fault_opt_add(&faults, &n_faults, ch, "--answer", optarg); break;
		case 'H': vendor_opt_add(&faults, &n_faults, ch, "--hang", optarg); break;
		case 'D': vendor_opt_add(&faults, &n_faults, ch, "--drop", optarg); break;
		case 's': fail_status = option_long("--fail-status", optarg, 400, 599); break;
		case 'a': retry_after = option_long("--retry-after", optarg, 0, 86400); break;
		case 'S': seed = option_long("--seed", optarg, 0, LONG_MAX); break;
		case 'o': logpath = optarg; break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (optind != argc)
		usage(stderr, EXIT_USAGE);
	httpd_addr_option("--listen", listen, &addr);
	if (n_vendors == 0) {
		warning("no vendor: give --vendor NAME=FILE or --generate NAME:COUNT");
		usage(stderr, EXIT_USAGE);
	}
	faults_apply(faults, n_faults);
	free(faults);
	/* Catalogue errors (65, 66) come after every usage error (64). */
	for (size_t i = 0; i < n_catalogues; i++)
		load_catalogue(&vendors[catalogues[i].vendor], catalogues[i].path);
	free(catalogues);
	for (size_t i = 0; i < n_vendors; i++) {
		if (vendors[i].generated)
			generate_fill(&vendors[i]);
		vendors[i].rng = seed ^ hash_string(vendors[i].name);
	}
	if (logpath != NULL && (logfp = fopen(logpath, "a")) == NULL)
		die(EXIT_CANT_CREATE, "option --log: cannot open %s: %s", logpath,
		    strerror(errno));
	logging = logfp != NULL;

	/*
	 * One poll() thread serves every connection: hundreds of keep-alive
	 * clients cost no thread switches, and --latency suspends a request
	 * rather than a thread (sleep_request). Only --hang, which watches its
	 * client's socket, takes a thread per connection (where libmicrohttpd
	 * cannot suspend, so --latency sleeps in that thread).
	 * Not libmicrohttpd's epoll mode: it accepts ten connections a turn and
	 * then, at times, not the rest of a burst (a client opening 256 at once
	 * waited out its timeout with the requests unread in the accept queue).
	 */
	threaded = any_hang();
	srv.flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
	    (threaded ? MHD_USE_THREAD_PER_CONNECTION : MHD_ALLOW_SUSPEND_RESUME);
	httpd_block_signals();
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&sleep_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	if ((errno = pthread_create(&waker_thread, NULL, waker, NULL)) != 0)
		die(EXIT_NOMEM, "starting a thread: %s", strerror(errno));
	httpd_start(&srv, &addr, listen);
	httpd_wait();
	stopping = 1;
	/* Sleepers are resumed, and answered at once, before the daemon stops. */
	pthread_mutex_lock(&sleep_lock);
	waker_stop = 1;
	pthread_cond_signal(&sleep_cv);
	pthread_mutex_unlock(&sleep_lock);
	pthread_join(waker_thread, NULL);
	httpd_stop(&srv);
	for (size_t i = 0; i < n_vendors; i++)
		vendor_free(&vendors[i]);
	free(vendors);
	if (logfp != NULL && fclose(logfp) == EOF)
		warning("--log: closing %s failed: %s", logpath, strerror(errno));
	return EXIT_OK;
}
