/*
 * log: messages on stderr, prefixed with the program's name (err(3) style),
 * and the one format of every program's --help, usage error and --version.
 */
#ifndef OA_LOG_H
#define OA_LOG_H

#include <stdio.h>
#include <sysexits.h>

extern const char *progname;

/*
 * Set progname from argv[0], read OA_DEBUG, and decide once whether stderr is
 * the journal: when JOURNAL_STREAM (set by systemd) names stderr's device and
 * inode, every line gets a syslog priority prefix journald reads (sd-daemon(3)):
 * <3> die, <4> warning and warn_line, <6> inform, <7> debugx. Elsewhere none.
 */
void log_init(const char *argv0);
/* "PROG: message" */
void warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "PROG: line N: message" (SPEC §3) */
void warn_line(long lineno, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "PROG: message" for an event worth reading that is not a problem. */
void inform(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "PROG: message" and exit with the given sysexits code. */
void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
/* Verbose diagnostics, printed only when OA_DEBUG is set in the environment. */
void debugx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line of a program's --help: its flags ("-q, --queue QUEUE") and what it does. */
struct usage_option {
	const char *flags;
	const char *text;
};

/*
 * A program's usage(): print on fp and exit with code. synopsis is the
 * program's forms, NULL-terminated, each printed after "usage: PROG " (a "\n"
 * in a form goes on in an indented line). With code 0 (-h, --help, on stdout)
 * every option follows, one line each: options, ended by { NULL, NULL }, then
 * -h, --help and --version, which every program has. Otherwise (a usage
 * error, on stderr) the synopsis alone.
 */
void usage_exit(FILE *fp, int code, const char *const synopsis[],
    const struct usage_option options[]) __attribute__((noreturn));
/* --version: "PROG (order-aggregator) VERSION" on stdout, exit 0. */
void version_exit(void) __attribute__((noreturn));

#endif
