/* retry: exponential backoff with full jitter, the one retry policy of every program. */
#ifndef OA_RETRY_H
#define OA_RETRY_H

struct backoff {
	double base;	/* first delay, seconds */
	double cap;	/* largest delay, seconds */
	int attempt;	/* delays handed out so far */
};

#define BACKOFF_INIT(base, cap) { (base), (cap), 0 }

/* The next delay: uniform in [d/2, d] where d = min(cap, base * 2^attempt). */
double backoff_next(struct backoff *b);
void backoff_reset(struct backoff *b);
/* Sleep, resuming after signals; returns early only if *stop becomes non-zero. */
void sleep_seconds(double s, volatile int *stop);
/* Monotonic clock in seconds. */
double now_seconds(void);

#endif
