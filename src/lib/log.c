/* log: one place that formats every message a program writes to stderr, and its usage. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy.h"

/* What every --version names besides the program: the project it belongs to. */
#define PROJECT "order-aggregator"
/* --help's option column: flags wider than this push only their own text along. */
#define USAGE_FLAGS_WIDTH 28

const char *progname = "oa";
static int debug_on;
/* The syslog priority prefixes (sd-daemon(3) SD_ERR...), "" when stderr is not the journal. */
static const char *prio_err = "", *prio_warning = "", *prio_info = "", *prio_debug = "";

/*
 * systemd sets JOURNAL_STREAM=DEV:INO (decimal) for a service whose stdout or
 * stderr is connected to the journal; stderr is the journal when it is that
 * very stream (not, say, a pipe or file a parent put there after exec).
 */
static int
stderr_is_journal(void)
{
	const char *s = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char *end;

	if (s == NULL || *s < '0' || *s > '9')
		return 0;
	errno = 0;
	dev = strtoull(s, &end, 10);
	if (errno != 0 || *end != ':' || end[1] < '0' || end[1] > '9')
		return 0;
	ino = strtoull(end + 1, &end, 10);
	if (errno != 0 || *end != '\0')
		return 0;
	if (fstat(STDERR_FILENO, &st) < 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void
log_init(const char *argv0)
{
	const char *slash = strrchr(argv0, '/');
	int journal = stderr_is_journal();

	progname = slash ? slash + 1 : argv0;
	debug_on = getenv("OA_DEBUG") != NULL && *getenv("OA_DEBUG") != '\0';
	prio_err = journal ? "<3>" : "";
	prio_warning = journal ? "<4>" : "";
	prio_info = journal ? "<6>" : "";
	prio_debug = journal ? "<7>" : "";
}

static void
vmsg(const char *prio, const char *prefix, const char *fmt, va_list ap)
{
	/* One fprintf per message so concurrent writers do not interleave mid-line. */
	char buf[4096], lines[8192];
	const char *msg = buf;
	int n = vsnprintf(buf, sizeof buf, fmt, ap);

	if (n < 0)
		buf[0] = '\0';
	/* journald takes a priority per line: each line of a longer message gets its own. */
	if (*prio != '\0' && strchr(buf, '\n') != NULL) {
		size_t plen = strlen(prio), o = 0;

		for (const char *p = buf; *p != '\0' && o + plen + 2 < sizeof lines; p++) {
			lines[o++] = *p;
			if (*p == '\n' && p[1] != '\0') {
				memcpy(lines + o, prio, plen);
				o += plen;
			}
		}
		lines[o] = '\0';
		msg = lines;
	}
	fprintf(stderr, "%s%s: %s%s\n", prio, progname, prefix, msg);
}

void
warning(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(prio_warning, "", fmt, ap);
	va_end(ap);
}

void
warn_line(long lineno, const char *fmt, ...)
{
	char prefix[32];
	va_list ap;

	snprintf(prefix, sizeof prefix, "line %ld: ", lineno);
	va_start(ap, fmt);
	vmsg(prio_warning, prefix, fmt, ap);
	va_end(ap);
}

void
inform(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(prio_info, "", fmt, ap);
	va_end(ap);
}

void
die(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(prio_err, "", fmt, ap);
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
	vmsg(prio_debug, "debug: ", fmt, ap);
	va_end(ap);
}

/* Exit with code once fp's text is out; one that could not be written is exit 74. */
static void __attribute__((noreturn))
flush_exit(FILE *fp, int code, const char *what)
{
	if (fflush(fp) != 0 || ferror(fp))
		die(EXIT_OUTPUT, "cannot write the %s: %s", what, strerror(errno));
	exit(code);
}

void
usage_exit(FILE *fp, int code, const char *const synopsis[], const struct usage_option options[])
{
	static const struct usage_option common[] = {
		{ "-h, --help", "print this help and exit" },
		{ "--version", "print the version and exit" },
		{ NULL, NULL },
	};
	const struct usage_option *lists[] = { options, common };
	/* A usage error in the journal is an error, on each of its lines. */
	const char *prio = fp == stderr ? prio_err : "";
	int indent = (int)strlen(progname) + 8, width = 0;

	for (size_t i = 0; synopsis[i] != NULL; i++) {
		fprintf(fp, "%s%s %s%s", prio, i == 0 ? "usage:" : "      ", progname,
		    *synopsis[i] != '\0' ? " " : "");
		for (const char *s = synopsis[i]; *s != '\0'; s++)
			if (*s == '\n')
				fprintf(fp, "\n%s%*s", prio, indent, "");
			else
				putc(*s, fp);
		putc('\n', fp);
	}
	if (code != EXIT_OK)
		flush_exit(fp, code, "usage");
	/* Long options alone line up under the long options of "-x, --xxx". */
	for (size_t l = 0; l < 2; l++)
		for (const struct usage_option *o = lists[l]; o->flags != NULL; o++) {
			int w = (int)strlen(o->flags) + (o->flags[1] == '-' ? 4 : 0);

			if (w > width && w <= USAGE_FLAGS_WIDTH)
				width = w;
		}
	for (size_t l = 0; l < 2; l++)
		for (const struct usage_option *o = lists[l]; o->flags != NULL; o++) {
			int long_only = o->flags[1] == '-';

			fprintf(fp, "  %s%-*s  %s\n", long_only ? "    " : "",
			    width - (long_only ? 4 : 0), o->flags, o->text);
		}
	flush_exit(fp, code, "help");
}

void
version_exit(void)
{
	printf("%s (" PROJECT ") %s\n", progname, OA_VERSION);
	flush_exit(stdout, EXIT_OK, "version");
}
