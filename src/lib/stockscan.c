/* stockscan: a vendor's stock response checked, then written as stock lines (see stockscan.h). */
#include "stockscan.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "jsonl.h"
#include "log.h"
#include "policy.h"
#include "utf8.h"
#include "validate.h"

#define BAD_ITEM_WARNINGS 10		/* per vendor; then one summary line */

/* --- writing ---------------------------------------------------------------- */

static void
put_value(const cJSON *v)
{
	char fmt[64];	/* a number, true, false or null, as cJSON prints it */
	const cJSON *c;

	if (cJSON_IsString(v)) {
		utf8_put_json_string(stdout, v->valuestring);
		return;
	}
	/* Most values are small integers; print those without cJSON's round trip. */
	if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) &&
	    fabs(v->valuedouble) < 1e15) {
		printf("%lld", (long long)v->valuedouble);
		return;
	}
	/* Containers are walked here so their strings get utf8_put_json_string's care too. */
	if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
		putchar_unlocked(cJSON_IsArray(v) ? '[' : '{');
		for (c = v->child; c != NULL; c = c->next) {
			if (c != v->child)
				putchar_unlocked(',');
			if (cJSON_IsObject(v)) {
				utf8_put_json_string(stdout, c->string ? c->string : "");
				putchar_unlocked(':');
			}
			put_value(c);
		}
		putchar_unlocked(cJSON_IsArray(v) ? ']' : '}');
		return;
	}
	/* Other numbers, true, false, null: cJSON's own spelling. */
	if (!cJSON_PrintPreallocated((cJSON *)v, fmt, sizeof fmt, 0))
		die(EXIT_BUG, "cannot format a number");
	fputs_unlocked(fmt, stdout);
}

/* Fields we write ourselves; an item's own fields of these names are dropped. */
static int
reserved_field(const char *k)
{
	return strcmp(k, "vendor") == 0 || strcmp(k, "sku") == 0 || strcmp(k, "quantity") == 0 ||
	    strcmp(k, "fetched_at") == 0 || strcmp(k, "snapshot") == 0;
}

const char *
stock_item_problem(const cJSON *it, const char **sku, long long *qty)
{
	if (!cJSON_IsObject(it))
		return "is not a JSON object";
	if ((*sku = json_string(it, "sku")) == NULL || **sku == '\0')
		return "\"sku\" must be a non-empty string";
	/* What stock-apply would refuse as a bad line is not passed on (lib/validate). */
	if (strlen(*sku) > FIELD_MAX_NAME)
		return "\"sku\" is longer than 255 bytes";
	if (!utf8_valid(*sku))
		return "\"sku\" is not valid UTF-8";
	if (json_int(it, "quantity", 0, STOCK_MAX_QUANTITY, qty) < 0)
		return "\"quantity\" must be an integer >= 0";
	return NULL;
}

static void
put_item(const char *vendor, const char *sku, long long qty, const char *stamp,
    const cJSON *it)
{
	fputs_unlocked("{\"vendor\":", stdout);
	utf8_put_json_string(stdout, vendor);
	fputs_unlocked(",\"sku\":", stdout);
	utf8_put_json_string(stdout, sku);
	printf(",\"quantity\":%lld,\"fetched_at\":\"%s\"", qty, stamp);
	for (const cJSON *f = it->child; f != NULL; f = f->next) {
		if (f->string == NULL || reserved_field(f->string))
			continue;
		putchar_unlocked(',');
		utf8_put_json_string(stdout, f->string);
		putchar_unlocked(':');
		put_value(f);
	}
	fputs_unlocked("}\n", stdout);
}

static void
utc_stamp(const struct timespec *ts, char *buf, size_t n)
{
	struct tm tm;
	char sec[32];

	gmtime_r(&ts->tv_sec, &tm);
	strftime(sec, sizeof sec, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, n, "%s.%03dZ", sec, (int)(ts->tv_nsec / 1000000) % 1000);
}

/*
 * A vendor's block: its valid items, then the closing line. An invalid item
 * is skipped and makes the snapshot "partial", so stock-apply withdraws
 * nothing on the strength of a list we know to be incomplete.
 */
void
stock_block_begin(struct stock_block *b, const char *vendor, const struct timespec *started)
{
	memset(b, 0, sizeof *b);
	b->vendor = vendor;
	utc_stamp(started, b->stamp, sizeof b->stamp);
}

void
stock_block_item(struct stock_block *b, const cJSON *it)
{
	const char *sku, *why;
	long long qty;

	if ((why = stock_item_problem(it, &sku, &qty)) != NULL) {
		if (b->bad++ < BAD_ITEM_WARNINGS)
			warning("%s: item %ld (.[%ld]): %s; skipped", b->vendor, b->idx + 1,
			    b->idx, why);
	} else {
		put_item(b->vendor, sku, qty, b->stamp, it);
		b->written++;
	}
	b->idx++;
}

void
stock_block_end(struct stock_block *b)
{
	if (b->bad > BAD_ITEM_WARNINGS)
		warning("%s: %ld more invalid items skipped", b->vendor, b->bad - BAD_ITEM_WARNINGS);
	fputs_unlocked("{\"vendor\":", stdout);
	utf8_put_json_string(stdout, b->vendor);
	printf(",\"snapshot\":\"%s\",\"items\":%ld,\"fetched_at\":\"%s\"}\n",
	    b->bad ? "partial" : "complete", b->written, b->stamp);
}

/* --- parsing ------------------------------------------------------------------ */

static const char *
skip_blank(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

int
stock_all_blank(const char *p, const char *end)
{
	return skip_blank(p, end) == end;
}

/* The whole body as one JSON array. */
static cJSON *
parse_array(const char *buf, size_t len, const char *what, char *why, size_t whylen)
{
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);

	if (root == NULL) {
		snprintf(why, whylen, "%s is not valid JSON (near byte %td)", what,
		    end != NULL ? end - buf : (ptrdiff_t)0);
		return NULL;
	}
	if (!stock_all_blank(end, buf + len)) {
		snprintf(why, whylen, "%s has data after its JSON value (at byte %td)",
		    what, end - buf);
		cJSON_Delete(root);
		return NULL;
	}
	if (!cJSON_IsArray(root)) {
		snprintf(why, whylen, "%s is not a JSON array of items", what);
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

int
stock_scan(const char *buf, size_t len, struct stock_block *b, char *why, size_t whylen)
{
	const char *p, *stop = NULL, *end = buf + len;
	cJSON *it;

	p = skip_blank(buf, end);
	if (p == end || *p != '[') {	/* not an array: say what it is instead */
		cJSON *root = parse_array(buf, len, "the response", why, whylen);

		/* cJSON skips any control byte as blank, JSON only four. */
		if (root != NULL)
			snprintf(why, whylen, "the response is not valid JSON (near byte %td)",
			    p - buf);
		cJSON_Delete(root);
		return -1;
	}
	p = skip_blank(p + 1, end);
	if (p < end && *p == ']')
		p++;
	else for (;;) {
		if ((it = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &stop, 0)) == NULL) {
			p = stop != NULL ? stop : p;
			goto invalid;
		}
		if (b != NULL)
			stock_block_item(b, it);
		cJSON_Delete(it);
		p = skip_blank(stop, end);
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		if (p < end && *p == ']') {
			p++;
			break;
		}
		goto invalid;
	}
	if (!stock_all_blank(p, end)) {
		snprintf(why, whylen, "the response has data after its JSON value "
		    "(at byte %td)", p - buf);
		return -1;
	}
	return 0;
invalid:
	snprintf(why, whylen, "the response is not valid JSON (near byte %td)", p - buf);
	return -1;
}

int
stock_write(const char *vendor, const struct timespec *started, const char *buf, size_t len,
    char *why, size_t whylen)
{
	struct stock_block b;

	if (stock_scan(buf, len, NULL, why, whylen) < 0)
		return -1;
	stock_block_begin(&b, vendor, started);
	stock_scan(buf, len, &b, why, whylen);
	stock_block_end(&b);
	return 0;
}
