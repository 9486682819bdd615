/*
 * metrics: Prometheus's text exposition format, version 0.0.4, appended to a
 * struct buf: a family's # HELP and # TYPE lines, samples with labels, and
 * histograms. The caller keeps its own counters and gauges (atomics when
 * several threads count) and hands their values over when it writes; a
 * histogram counts its observations itself, with relaxed atomics, so any
 * thread may observe without a lock or an allocation. Writing allocates
 * (the buffer grows); out of memory exits 71.
 */
#ifndef OA_METRICS_H
#define OA_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

#include "buf.h"

/* The Content-Type of the text, for an HTTP answer. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM, METRICS_UNTYPED };

/*
 * "# HELP NAME HELP" (backslashes and newlines in help escaped) and
 * "# TYPE NAME TYPE": once per family, before its samples. A counter's
 * samples are conventionally named NAME ending in _total, and so is NAME.
 */
void metrics_family(struct buf *b, const char *name, enum metrics_type type, const char *help);
/*
 * One sample line: NAME{L1="V1",...} VALUE. labels is { "L1", "V1", ...,
 * NULL }, or NULL for none; values are escaped (\\, \", \n). VALUE is
 * written as an integer when it is one (exactly up to 2^53), NaN, +Inf and
 * -Inf as the format spells them, else in the fewest digits that read back
 * as the same double.
 */
void metrics_sample(struct buf *b, const char *name, const char *const *labels, double value);
/* A family of one unlabelled sample: metrics_family, then metrics_sample. */
void metrics_counter(struct buf *b, const char *name, const char *help, double value);
void metrics_gauge(struct buf *b, const char *name, const char *help, double value);

/* The most buckets a histogram has, +Inf not included. */
#define METRICS_BUCKETS_MAX 32

/*
 * A histogram: observations counted in buckets by their upper bounds (an
 * observation equal to a bound falls in that bucket), plus their sum.
 * Define it static with METRICS_HISTOGRAM_INIT, or zeroed with le and n set.
 */
struct metrics_histogram {
	const double *le;	/* the upper bounds, ascending; +Inf is implied */
	size_t n;		/* how many, at most METRICS_BUCKETS_MAX */
	atomic_ullong count[METRICS_BUCKETS_MAX + 1];	/* per bucket, not cumulative; [n]: +Inf */
	_Atomic double sum;
};

/* For a static histogram over a static array of bounds. */
#define METRICS_HISTOGRAM_INIT(bounds) { (bounds), sizeof(bounds) / sizeof((bounds)[0]), { 0 }, 0 }

/* Count one observation: lock-free, allocation-free, any thread. */
void metrics_observe(struct metrics_histogram *h, double value);
/*
 * The family of h: NAME_bucket{LABELS,le="B"} lines, cumulative, ending with
 * le="+Inf"; NAME_sum; NAME_count (equal to the +Inf bucket). labels as for
 * metrics_sample (NULL for none). The buckets are read one by one while
 * other threads may observe: _sum may lag or lead _count by an observation
 * or two, never the buckets each other.
 */
void metrics_histogram(struct buf *b, const char *name, const char *help,
    const char *const *labels, const struct metrics_histogram *h);

#endif
