/* log: messages on stderr, prefixed with the program's name (err(3) style). */
#ifndef OA_LOG_H
#define OA_LOG_H

#include <sysexits.h>

extern const char *progname;

void log_init(const char *argv0);
/* "PROG: message" */
void warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "PROG: line N: message" (SPEC §3) */
void warn_line(long lineno, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "PROG: message" and exit with the given sysexits code. */
void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
/* Verbose diagnostics, printed only when OA_DEBUG is set in the environment. */
void debugx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
