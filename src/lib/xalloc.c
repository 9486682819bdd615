/* xalloc: malloc and friends that exit on failure instead of returning NULL. */
#include "xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "policy.h"

void
die_nomem(void)
{
	die(EXIT_NOMEM, "out of memory");
}

void *
xalloc_check(void *p)
{
	if (p == NULL)
		die_nomem();
	return p;
}

void *
xmalloc(size_t n)
{
	return xalloc_check(malloc(n ? n : 1));
}

void *
xcalloc(size_t count, size_t size)
{
	return xalloc_check(calloc(count ? count : 1, size ? size : 1));
}

void *
xreallocarray(void *p, size_t count, size_t size)
{
	size_t n;

	if (size != 0 && count > (size_t)-1 / size)
		die_nomem();
	n = count * size;
	return xalloc_check(realloc(p, n != 0 ? n : 1));
}

char *
xstrdup(const char *s)
{
	return s == NULL ? NULL : xalloc_check(strdup(s));
}

char *
xstrndup(const char *s, size_t n)
{
	return s == NULL ? NULL : xalloc_check(strndup(s, n));
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		die_nomem();
	return s;
}
