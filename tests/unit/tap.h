/* tap.h: the few TAP helpers the C unit tests of src/lib print with. */
#ifndef OA_TAP_H
#define OA_TAP_H
#include <stdio.h>

static int tap_n, tap_failed;

#define ok(cond, ...) do { \
	int ok_ = (cond); \
	printf("%sok %d - ", ok_ ? "" : "not ", ++tap_n); \
	printf(__VA_ARGS__); \
	putchar('\n'); \
	if (!ok_) { tap_failed++; printf("#   at %s:%d\n", __FILE__, __LINE__); } \
} while (0)

static int
tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed != 0;
}
#endif
