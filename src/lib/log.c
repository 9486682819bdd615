/* log: one place that formats every message a program writes to stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *progname = "oa";
static int debug_on;

void
log_init(const char *argv0)
{
	const char *slash = strrchr(argv0, '/');

	progname = slash ? slash + 1 : argv0;
	debug_on = getenv("OA_DEBUG") != NULL && *getenv("OA_DEBUG") != '\0';
}

static void
vmsg(const char *prefix, const char *fmt, va_list ap)
{
	/* One fprintf per message so concurrent writers do not interleave mid-line. */
	char buf[4096];
	int n = vsnprintf(buf, sizeof buf, fmt, ap);

	if (n < 0)
		buf[0] = '\0';
	fprintf(stderr, "%s: %s%s\n", progname, prefix, buf);
}

void
warning(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
}

void
warn_line(long lineno, const char *fmt, ...)
{
	char prefix[32];
	va_list ap;

	snprintf(prefix, sizeof prefix, "line %ld: ", lineno);
	va_start(ap, fmt);
	vmsg(prefix, fmt, ap);
	va_end(ap);
}

void
die(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
	exit(code);
}

void
debugx(const char *fmt, ...)
{
	va_list ap;

	if (!debug_on)
		return;
	va_start(ap, fmt);
	vmsg("debug: ", fmt, ap);
	va_end(ap);
}
