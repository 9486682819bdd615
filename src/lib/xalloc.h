/*
 * xalloc: allocation that cannot fail, as git's wrapper.c has it. Out of
 * memory prints "PROG: out of memory" and exits EXIT_NOMEM (71), so callers
 * never check. Use these, or xalloc_check() on what a library allocated
 * (cJSON_Create*, curl_easy_init...), instead of testing for NULL by hand.
 */
#ifndef OA_XALLOC_H
#define OA_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
/* realloc; count * size is checked for overflow. */
void *xreallocarray(void *p, size_t count, size_t size);
/* strdup; NULL stays NULL. */
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* A new string as printf would write it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* p, or exit EXIT_NOMEM when it is NULL: for allocations made inside a library. */
void *xalloc_check(void *p);
/* Exit EXIT_NOMEM saying so. */
void die_nomem(void) __attribute__((noreturn));

#endif
