/* metrics-units: unit tests of lib/metrics (text format, escaping, values, histograms, threads). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "lib/metrics.h"
#include "tap.h"

#define THREADS 4
#define PER_THREAD 100000

static const double bounds[] = { 0.001, 0.01, 0.1, 1 };

static int
same(struct buf *b, const char *want)
{
	int eq = b->data != NULL && strcmp(b->data, want) == 0;

	if (!eq)
		printf("# got:\n%s# want:\n%s", b->data != NULL ? b->data : "(nothing)\n", want);
	buf_reset(b);
	return eq;
}

static void
test_families(void)
{
	struct buf b = { 0 };

	metrics_counter(&b, "x_requests_total", "Requests answered.", 3);
	ok(same(&b, "# HELP x_requests_total Requests answered.\n"
	    "# TYPE x_requests_total counter\nx_requests_total 3\n"), "a counter: HELP, TYPE, sample");
	metrics_gauge(&b, "x_in_flight", "Now.", 0);
	ok(same(&b, "# HELP x_in_flight Now.\n# TYPE x_in_flight gauge\nx_in_flight 0\n"),
	    "a gauge");
	metrics_family(&b, "x_u", METRICS_UNTYPED, "back\\slash\nnewline \"quotes\" stay");
	ok(same(&b, "# HELP x_u back\\\\slash\\nnewline \"quotes\" stay\n# TYPE x_u untyped\n"),
	    "HELP escapes backslash and newline only");
	metrics_sample(&b, "x_total", (const char *[]){ "outcome", "refused", "reason",
	    "a\"b\\c\nd", NULL }, 2);
	ok(same(&b, "x_total{outcome=\"refused\",reason=\"a\\\"b\\\\c\\nd\"} 2\n"),
	    "labels: in order, values escaped");
	metrics_sample(&b, "x_total", (const char *[]){ NULL }, 1);
	ok(same(&b, "x_total 1\n"), "an empty label list writes no braces");
	buf_free(&b);
}

static void
test_values(void)
{
	static const struct {
		double v;
		const char *want;
	} cases[] = {
		{ 0, "0" }, { -0.0, "0" }, { 42, "42" }, { -7, "-7" },
		{ 9007199254740992.0, "9007199254740992" }, { 1e300, "1e+300" },
		{ 0.1, "0.1" }, { 0.0025, "0.0025" }, { 1.0 / 3, "0.33333333333333331" },
		{ 2.5e-7, "2.5e-07" },
	};
	struct buf b = { 0 };
	char want[64];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		metrics_sample(&b, "v", NULL, cases[i].v);
		snprintf(want, sizeof want, "v %s\n", cases[i].want);
		ok(same(&b, want), "%s is written %s", cases[i].want, cases[i].want);
	}
	metrics_sample(&b, "v", NULL, NAN);
	ok(same(&b, "v NaN\n"), "NaN");
	metrics_sample(&b, "v", NULL, INFINITY);
	ok(same(&b, "v +Inf\n"), "+Inf");
	metrics_sample(&b, "v", NULL, -INFINITY);
	ok(same(&b, "v -Inf\n"), "-Inf");
	buf_free(&b);
}

static void
test_histogram(void)
{
	static struct metrics_histogram h = METRICS_HISTOGRAM_INIT(bounds);
	struct buf b = { 0 };

	ok(h.n == 4, "METRICS_HISTOGRAM_INIT counts the bounds");
	metrics_histogram(&b, "x_seconds", "Latency.", NULL, &h);
	ok(same(&b, "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\n"
	    "x_seconds_bucket{le=\"0.001\"} 0\nx_seconds_bucket{le=\"0.01\"} 0\n"
	    "x_seconds_bucket{le=\"0.1\"} 0\nx_seconds_bucket{le=\"1\"} 0\n"
	    "x_seconds_bucket{le=\"+Inf\"} 0\nx_seconds_sum 0\nx_seconds_count 0\n"),
	    "an empty histogram: every bucket 0");
	metrics_observe(&h, 0.001);	/* on a bound: in that bucket */
	metrics_observe(&h, 0.0011);
	metrics_observe(&h, 0.5);
	metrics_observe(&h, 0.5);
	metrics_observe(&h, 7);		/* past the last bound: +Inf only */
	metrics_histogram(&b, "x_seconds", "Latency.", (const char *[]){ "route", "/order",
	    NULL }, &h);
	ok(same(&b, "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\n"
	    "x_seconds_bucket{route=\"/order\",le=\"0.001\"} 1\n"
	    "x_seconds_bucket{route=\"/order\",le=\"0.01\"} 2\n"
	    "x_seconds_bucket{route=\"/order\",le=\"0.1\"} 2\n"
	    "x_seconds_bucket{route=\"/order\",le=\"1\"} 4\n"
	    "x_seconds_bucket{route=\"/order\",le=\"+Inf\"} 5\n"
	    "x_seconds_sum{route=\"/order\"} 8.0021\n"
	    "x_seconds_count{route=\"/order\"} 5\n"),
	    "cumulative buckets, bounds inclusive, labels before le, sum and count");
	buf_free(&b);
}

static struct metrics_histogram shared = METRICS_HISTOGRAM_INIT(bounds);

static void *
observer(void *arg)
{
	(void)arg;
	for (int i = 0; i < PER_THREAD; i++)
		metrics_observe(&shared, i % 2 ? 0.5 : 0.25);
	return NULL;
}

static void
test_threads(void)
{
	pthread_t t[THREADS];
	unsigned long long total = 0;

	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, observer, NULL);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (size_t i = 0; i <= shared.n; i++)
		total += shared.count[i];
	ok(total == THREADS * PER_THREAD && shared.count[3] == total,
	    "%d threads observing at once lose no count (%llu)", THREADS, total);
	ok(shared.sum == THREADS * (PER_THREAD / 2) * 0.75,
	    "nor any of the sum (%.17g)", (double)shared.sum);
}

int
main(void)
{
	test_families();
	test_values();
	test_histogram();
	test_threads();
	return tap_done();
}
