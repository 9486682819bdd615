/* log-units: lib/log's syslog priority prefixes when stderr is the journal
 * (JOURNAL_STREAM names stderr's device and inode), none elsewhere; the one
 * --help and --version format. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/log.h"
#include "tap.h"

static char path[] = "/tmp/oa-log-units.XXXXXX";

/* ok() that got is want, showing what it got when not, as TAP comments. */
static void
same(const char *got, const char *want, const char *name)
{
	ok(strcmp(got, want) == 0, "%s", name);
	if (strcmp(got, want) == 0)
		return;
	printf("#   got:\n#     ");
	for (const char *p = got; *p != '\0'; p++)
		if (*p == '\n')
			printf(p[1] != '\0' ? "\n#     " : "\n");
		else
			putchar(*p);
}

/* Empty the file stderr now writes to. */
static void
reset(void)
{
	fflush(stderr);
	if (ftruncate(STDERR_FILENO, 0) < 0 || lseek(STDERR_FILENO, 0, SEEK_SET) < 0)
		abort();
}

/* What was written to stderr since reset(). */
static const char *
captured(void)
{
	static char buf[8192];
	FILE *f = fopen(path, "r");
	size_t n;

	fflush(stderr);
	if (f == NULL)
		abort();
	n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* JOURNAL_STREAM set to stderr's own device and inode, plus delta on the inode. */
static void
set_journal_stream(long delta)
{
	struct stat st;
	char v[64];

	if (fstat(STDERR_FILENO, &st) < 0)
		abort();
	snprintf(v, sizeof v, "%llu:%llu", (unsigned long long)st.st_dev,
	    (unsigned long long)st.st_ino + (unsigned long long)delta);
	setenv("JOURNAL_STREAM", v, 1);
}

/* Run every kind of message; die's in a child, whose exit status is returned. */
static int
write_all_kinds(void)
{
	pid_t pid;
	int status;

	reset();
	warning("a warning");
	warn_line(12, "a bad line");
	inform("news");
	debugx("details");
	warning("first\nsecond");
	fflush(stderr);
	if ((pid = fork()) == 0)
		die(69, "fatal");
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		abort();
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void
test_journal(void)
{
	static const char want[] =
	    "<4>prog: a warning\n"
	    "<4>prog: line 12: a bad line\n"
	    "<6>prog: news\n"
	    "<7>prog: debug: details\n"
	    "<4>prog: first\n<4>second\n"
	    "<3>prog: fatal\n";
	int code;

	set_journal_stream(0);
	log_init("/usr/lib/order-aggregator/prog");
	code = write_all_kinds();
	same(captured(), want, "stderr is JOURNAL_STREAM: <3> die, <4> warnings, <6> inform, "
	    "<7> debug, on every line of a message");
	ok(code == 69, "die still exits with its code (%d)", code);

	/* Decided once, at log_init: the variable changing later changes nothing. */
	unsetenv("JOURNAL_STREAM");
	reset();
	warning("still");
	same(captured(), "<4>prog: still\n", "the choice holds until the next log_init");
}

static void
test_not_journal(void)
{
	static const char want[] =
	    "prog: a warning\n"
	    "prog: line 12: a bad line\n"
	    "prog: news\n"
	    "prog: debug: details\n"
	    "prog: first\nsecond\n"
	    "prog: fatal\n";
	static const char *const malformed[] = { "", "12", "12:", ":12", "a:b", "1:2x", "1:2:3",
		"99999999999999999999999:1" };
	int code;

	unsetenv("JOURNAL_STREAM");
	log_init("prog");
	code = write_all_kinds();
	same(captured(), want, "no JOURNAL_STREAM: no prefix");
	ok(code == 69, "die exits with its code (%d)", code);

	set_journal_stream(1);
	log_init("prog");
	write_all_kinds();
	same(captured(), want, "JOURNAL_STREAM naming another stream (stdout's, a parent's): no prefix");

	for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++) {
		char name[80];

		setenv("JOURNAL_STREAM", malformed[i], 1);
		log_init("prog");
		reset();
		warning("w");
		snprintf(name, sizeof name, "JOURNAL_STREAM=\"%s\": no prefix", malformed[i]);
		same(captured(), "prog: w\n", name);
	}
	unsetenv("JOURNAL_STREAM");
	log_init("prog");
}

/*
 * Run usage_exit on stdout (which 0) or stderr (2), or version_exit (1), in a
 * child with stdout on stderr's file; its output.
 */
static const char *
child_output(int which, int code, int *status)
{
	static const char *const synopsis[] = { "[-q QUEUE] [--long-one N]\nFILE ...", "--other", NULL };
	static const struct usage_option options[] = {
		{ "-q, --queue QUEUE", "the queue" },
		{ "--long-one N", "a long option alone" },
		{ NULL, NULL },
	};
	pid_t pid;

	reset();
	if ((pid = fork()) == 0) {
		if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
			_exit(99);
		if (which == 0)
			usage_exit(stdout, code, synopsis, options);
		if (which == 2)
			usage_exit(stderr, code, synopsis, options);
		version_exit();
	}
	if (pid < 0 || waitpid(pid, status, 0) != pid)
		abort();
	return captured();
}

static void
test_usage(void)
{
	static const char help[] =
	    "usage: prog [-q QUEUE] [--long-one N]\n"
	    "            FILE ...\n"
	    "       prog --other\n"
	    "  -q, --queue QUEUE  the queue\n"
	    "      --long-one N   a long option alone\n"
	    "  -h, --help         print this help and exit\n"
	    "      --version      print the version and exit\n";
	static const char short_usage[] =
	    "usage: prog [-q QUEUE] [--long-one N]\n"
	    "            FILE ...\n"
	    "       prog --other\n";
	const char *out;
	int status;

	log_init("prog");
	out = child_output(0, 0, &status);
	same(out, help, "usage_exit with 0: the synopsis, then every option one line each");
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "usage_exit with 0 exits 0");
	out = child_output(0, 64, &status);
	same(out, short_usage, "usage_exit with 64: the synopsis alone");
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 64, "usage_exit with 64 exits 64");
	out = child_output(1, 0, &status);
	same(out, "prog (order-aggregator) " OA_VERSION "\n", "version_exit: \"prog (order-aggregator) VERSION\"");
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "version_exit exits 0");

	set_journal_stream(0);
	log_init("prog");
	out = child_output(2, 64, &status);
	same(out, "<3>usage: prog [-q QUEUE] [--long-one N]\n"
	    "<3>            FILE ...\n"
	    "<3>       prog --other\n", "a usage error on stderr in the journal: <3> on each line");
	out = child_output(0, 0, &status);
	same(out, help, "--help on stdout: no prefix, whatever stderr is");
	unsetenv("JOURNAL_STREAM");
	log_init("prog");
}

int
main(void)
{
	int fd = mkstemp(path), saved;

	/* TAP goes to stdout; stderr becomes a file of ours, the real one kept. */
	if (fd < 0 || (saved = dup(STDERR_FILENO)) < 0 || dup2(fd, STDERR_FILENO) < 0) {
		perror("log-units: setting up stderr");
		return 1;
	}
	close(fd);
	setvbuf(stdout, NULL, _IONBF, 0);
	setenv("OA_DEBUG", "1", 1);
	test_journal();
	test_not_journal();
	test_usage();
	dup2(saved, STDERR_FILENO);
	unlink(path);
	return tap_done();
}
