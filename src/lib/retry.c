/* retry: backoff delays and sleeping; jitter keeps many clients from retrying in step. */
#include "retry.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static unsigned
seed_once(void)
{
	static unsigned seed;

	if (seed == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (unsigned)ts.tv_nsec ^ (unsigned)getpid() << 16 ^ (unsigned)ts.tv_sec;
		if (seed == 0)
			seed = 1;
	}
	return seed;
}

double
backoff_next(struct backoff *b)
{
	static _Thread_local unsigned state;	/* fulfil calls it from two threads */
	double d;

	if (state == 0)
		state = seed_once();
	d = b->base * pow(2.0, b->attempt < 30 ? b->attempt : 30);
	if (d > b->cap)
		d = b->cap;
	b->attempt++;
	return d / 2 + d / 2 * ((double)rand_r(&state) / RAND_MAX);
}

void
backoff_reset(struct backoff *b)
{
	b->attempt = 0;
}

double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void
sleep_seconds(double s, volatile int *stop)
{
	double end = now_seconds() + s;

	while (!(stop && *stop)) {
		double left = end - now_seconds();
		struct timespec ts;

		if (left <= 0)
			return;
		/* Short slices so a stop flag set by a signal handler is seen promptly. */
		if (left > 0.1)
			left = 0.1;
		ts.tv_sec = (time_t)left;
		ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
		nanosleep(&ts, NULL);
	}
}
