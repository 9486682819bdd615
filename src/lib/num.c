/* num: the one number parser behind every numeric option. */
#include "num.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "log.h"
#include "policy.h"

int
parse_long(const char *s, long min, long max, long *out, const char **why)
{
	char *end;
	long v;

	if (s == NULL || *s == '\0') {
		*why = "is empty";
		return -1;
	}
	errno = 0;
	v = strtol(s, &end, 10);
	if (*end != '\0') {
		*why = "is not a whole number";
		return -1;
	}
	if (errno == ERANGE || v < min) {
		*why = v < 0 && errno != ERANGE ? "is too small" : "is out of range";
		return -1;
	}
	if (v > max) {
		*why = "is too large";
		return -1;
	}
	*out = v;
	return 0;
}

int
parse_seconds(const char *s, double max, double *out, const char **why)
{
	char *end;
	double v;

	if (s == NULL || *s == '\0') {
		*why = "is empty";
		return -1;
	}
	errno = 0;
	v = strtod(s, &end);
	if (*end != '\0' || errno != 0 || !isfinite(v)) {
		*why = "is not a number of seconds";
		return -1;
	}
	if (v < 0) {
		*why = "is negative";
		return -1;
	}
	if (v > max) {
		*why = "is too large";
		return -1;
	}
	*out = v;
	return 0;
}

long
option_long(const char *opt, const char *s, long min, long max)
{
	const char *why;
	long v;

	if (parse_long(s, min, max, &v, &why) < 0)
		die(EXIT_USAGE, "option %s: \"%s\" %s (allowed %ld to %ld)", opt, s, why, min, max);
	return v;
}

double
option_seconds(const char *opt, const char *s, double max)
{
	const char *why;
	double v;

	if (parse_seconds(s, max, &v, &why) < 0)
		die(EXIT_USAGE, "option %s: \"%s\" %s (allowed 0 to %g seconds)", opt, s, why, max);
	return v;
}
