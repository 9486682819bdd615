/* metrics: Prometheus's text exposition format 0.0.4 into a buf; lock-free histograms. */
#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "policy.h"

static void
add(struct buf *b, const char *s, size_t n)
{
	xbuf_add(b, s, n);
}

static void
add_str(struct buf *b, const char *s)
{
	add(b, s, strlen(s));
}

/* s with each byte of `special` escaped: \\ and \n, and \" when quoted. */
static void
add_escaped(struct buf *b, const char *s, const char *special)
{
	while (*s != '\0') {
		size_t n = strcspn(s, special);

		add(b, s, n);
		if (s[n] == '\0')
			return;
		s += n;
		add(b, *s == '\n' ? "\\n" : (const char[]){ '\\', *s }, 2);
		s++;
	}
}

static const char *const type_names[] = {
	[METRICS_COUNTER] = "counter", [METRICS_GAUGE] = "gauge",
	[METRICS_HISTOGRAM] = "histogram", [METRICS_UNTYPED] = "untyped",
};

void
metrics_family(struct buf *b, const char *name, enum metrics_type type, const char *help)
{
	add_str(b, "# HELP ");
	add_str(b, name);
	add(b, " ", 1);
	add_escaped(b, help, "\\\n");
	add_str(b, "\n# TYPE ");
	add_str(b, name);
	add(b, " ", 1);
	add_str(b, type_names[type]);
	add(b, "\n", 1);
}

/* A value as the format spells it, in the fewest digits that read back the same. */
static const char *
format_value(char *s, size_t size, double v)
{
	if (isnan(v))
		snprintf(s, size, "NaN");
	else if (isinf(v))
		snprintf(s, size, "%s", v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) <= 9007199254740992.0)
		snprintf(s, size, "%.0f", v == 0 ? 0.0 : v);	/* -0 is 0 */
	else {
		snprintf(s, size, "%.15g", v);
		if (strtod(s, NULL) != v)
			snprintf(s, size, "%.17g", v);
	}
	return s;
}

/* {L1="V1",...,extra="EV"}: labels then one more (either may be absent); nothing if none. */
static void
add_labels(struct buf *b, const char *const *labels, const char *extra, const char *extra_value)
{
	int first = 1;

	for (size_t i = 0; labels != NULL && labels[i] != NULL && labels[i + 1] != NULL; i += 2) {
		add_str(b, first ? "{" : ",");
		add_str(b, labels[i]);
		add_str(b, "=\"");
		add_escaped(b, labels[i + 1], "\\\"\n");
		add(b, "\"", 1);
		first = 0;
	}
	if (extra != NULL) {
		add_str(b, first ? "{" : ",");
		add_str(b, extra);
		add_str(b, "=\"");
		add_str(b, extra_value);
		add(b, "\"", 1);
		first = 0;
	}
	if (!first)
		add(b, "}", 1);
}

static void
sample(struct buf *b, const char *name, const char *suffix, const char *const *labels,
    const char *extra, const char *extra_value, double value)
{
	char s[40];

	add_str(b, name);
	add_str(b, suffix);
	add_labels(b, labels, extra, extra_value);
	add(b, " ", 1);
	add_str(b, format_value(s, sizeof s, value));
	add(b, "\n", 1);
}

void
metrics_sample(struct buf *b, const char *name, const char *const *labels, double value)
{
	sample(b, name, "", labels, NULL, NULL, value);
}

void
metrics_counter(struct buf *b, const char *name, const char *help, double value)
{
	metrics_family(b, name, METRICS_COUNTER, help);
	metrics_sample(b, name, NULL, value);
}

void
metrics_gauge(struct buf *b, const char *name, const char *help, double value)
{
	metrics_family(b, name, METRICS_GAUGE, help);
	metrics_sample(b, name, NULL, value);
}

void
metrics_observe(struct metrics_histogram *h, double value)
{
	size_t i = 0;
	double sum;

	while (i < h->n && !(value <= h->le[i]))
		i++;
	atomic_fetch_add_explicit(&h->count[i], 1, memory_order_relaxed);
	sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&h->sum, &sum, sum + value,
	    memory_order_relaxed, memory_order_relaxed))
		;
}

void
metrics_histogram(struct buf *b, const char *name, const char *help,
    const char *const *labels, const struct metrics_histogram *h)
{
	unsigned long long total = 0;
	char le[40];

	if (h->n > METRICS_BUCKETS_MAX)
		die(EXIT_BUG, "histogram %s: %zu buckets, at most %d", name, h->n,
		    METRICS_BUCKETS_MAX);
	metrics_family(b, name, METRICS_HISTOGRAM, help);
	for (size_t i = 0; i <= h->n; i++) {
		total += atomic_load_explicit(&h->count[i], memory_order_relaxed);
		sample(b, name, "_bucket", labels, "le",
		    i < h->n ? format_value(le, sizeof le, h->le[i]) : "+Inf", (double)total);
	}
	sample(b, name, "_sum", labels, NULL, NULL,
	    atomic_load_explicit(&h->sum, memory_order_relaxed));
	sample(b, name, "_count", labels, NULL, NULL, (double)total);
}
