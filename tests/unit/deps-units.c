/* deps-units: unit tests of what src/lib takes from its dependencies: HTTP outcomes and URLs, Retry-After, the JSON writer and reader, publisher confirms, spawning. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/amqp.h"
#include "lib/http.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/spawn.h"
#include "tap.h"

/* The outcome of a finished transfer described by its parts. */
static enum http_outcome
outcome(CURLcode rc, long status, int too_big, int nomem)
{
	struct http_resp r;
	char why[256];

	http_resp_init(&r, 100);
	r.too_big = too_big;
	r.nomem = nomem;
	return http_outcome_of(rc, status, &r, why, sizeof why);
}

static void
test_http_outcome(void)
{
	struct http_resp r;
	char why[256] = "";

	ok(outcome(CURLE_OK, 200, 0, 0) == HTTP_OK, "200 is OK");
	ok(outcome(CURLE_OK, 204, 0, 0) == HTTP_OK, "204 is OK");
	ok(outcome(CURLE_OK, 408, 0, 0) == HTTP_TRANSIENT, "408 is transient");
	ok(outcome(CURLE_OK, 429, 0, 0) == HTTP_TRANSIENT, "429 is transient");
	ok(outcome(CURLE_OK, 500, 0, 0) == HTTP_TRANSIENT, "500 is transient");
	ok(outcome(CURLE_OK, 503, 0, 0) == HTTP_TRANSIENT, "503 is transient");
	ok(outcome(CURLE_OK, 400, 0, 0) == HTTP_PERMANENT, "400 is permanent");
	ok(outcome(CURLE_OK, 404, 0, 0) == HTTP_PERMANENT, "404 is permanent");
	ok(outcome(CURLE_OK, 301, 0, 0) == HTTP_PERMANENT, "a redirect (not followed) is permanent");
	ok(outcome(CURLE_COULDNT_CONNECT, 0, 0, 0) == HTTP_TRANSIENT,
	    "a refused connection is transient");
	ok(outcome(CURLE_OPERATION_TIMEDOUT, 0, 0, 0) == HTTP_TRANSIENT, "a timeout is transient");
	ok(outcome(CURLE_RECV_ERROR, 0, 0, 0) == HTTP_TRANSIENT, "a broken connection is transient");
	ok(outcome(CURLE_WRITE_ERROR, 0, 1, 0) == HTTP_PERMANENT, "a body past its cap is permanent");
	ok(outcome(CURLE_FILESIZE_EXCEEDED, 0, 0, 0) == HTTP_PERMANENT,
	    "a declared size past the cap is permanent");
	ok(outcome(CURLE_WRITE_ERROR, 0, 0, 1) == HTTP_PERMANENT,
	    "no memory for the body is permanent");
	ok(outcome(CURLE_PEER_FAILED_VERIFICATION, 0, 0, 0) == HTTP_PERMANENT,
	    "a certificate that does not verify is permanent");

	http_resp_init(&r, 100);
	r.too_big = 1;
	http_outcome_of(CURLE_WRITE_ERROR, 0, &r, why, sizeof why);
	ok(strcmp(why, "response larger than 100 bytes") == 0, "too big says the cap: %s", why);
	http_outcome_of(CURLE_OK, 503, &r, why, sizeof why);
	ok(strcmp(why, "HTTP 503") == 0, "a status says itself: %s", why);
	r.too_big = 0;
	snprintf(r.err, sizeof r.err, "Failed to connect to x");
	http_outcome_of(CURLE_COULDNT_CONNECT, 0, &r, why, sizeof why);
	ok(strcmp(why, "Failed to connect to x") == 0, "libcurl's own message is kept: %s", why);
	http_resp_free(&r);
}

static void
test_retry_delay(void)
{
	struct http_resp r;
	struct backoff b = BACKOFF_INIT(0.2, 5.0);
	double d;

	http_resp_init(&r, 100);
	d = http_retry_delay(&b, &r);
	ok(d >= 0.1 && d <= 0.2, "no Retry-After: the backoff (%g)", d);
	r.retry_after = 2;
	ok(http_retry_delay(&b, &r) == 2, "Retry-After longer than the backoff is honoured");
	r.retry_after = 0;
	backoff_reset(&b);
	d = http_retry_delay(&b, &r);
	ok(d >= 0.1 && d <= 0.2, "Retry-After 0 (or a date past): the backoff (%g)", d);
	r.retry_after = 1e6;
	ok(http_retry_delay(&b, &r) == HTTP_RETRY_AFTER_MAX, "a long Retry-After is cut to %g s",
	    HTTP_RETRY_AFTER_MAX);
	http_resp_free(&r);
}

static void
test_urls(void)
{
	const char *why = NULL;
	char *u;

	ok(http_url_check("http://127.0.0.1:8080", &why) == 0, "http URL accepted");
	ok(http_url_check("HTTPS://example.com/x?y=1", &why) == 0, "https URL accepted, any case");
	ok(http_url_check("ftp://example.com/", &why) < 0 &&
	    strcmp(why, "is not an http:// or https:// URL") == 0, "ftp refused: %s", why);
	ok(http_url_check("example.com", &why) < 0 &&
	    strcmp(why, "is not an http:// or https:// URL") == 0, "no scheme refused: %s", why);
	ok(http_url_check("http://", &why) < 0 && strcmp(why, "has no host") == 0,
	    "no host refused: %s", why);
	ok(http_url_check("http://a b/", &why) < 0 &&
	    strcmp(why, "contains a space or control character") == 0, "a space refused: %s", why);
	ok(http_url_check("http://h:99999/", &why) < 0, "a port past 65535 refused: %s", why);

	u = http_vendor_url("http://h:1/api//", "a b/c", "stock");
	ok(u != NULL && strcmp(u, "http://h:1/api/vendor/a%20b%2fc/stock") == 0,
	    "vendor URL: base path kept, name escaped: %s", u);
	free(u);
	u = http_vendor_url("http://h", "acme", "orders");
	ok(u != NULL && strcmp(u, "http://h/vendor/acme/orders") == 0, "vendor URL from a bare host: %s", u);
	free(u);
	ok(http_vendor_url("nonsense", "acme", "orders") == NULL, "no vendor URL from a bad base");
}

/* cJSON_PrintUnformatted of what json_add_int wrote. */
static int
prints_as(long long v, const char *want)
{
	cJSON *o = cJSON_CreateObject();
	char *s;
	int same;

	json_add_int(o, "n", v);
	s = cJSON_PrintUnformatted(o);
	same = strcmp(s, want) == 0;
	free(s);
	cJSON_Delete(o);
	return same;
}

/* jsonl_write of obj, into a string the caller frees. */
static char *
written(const cJSON *obj)
{
	char *s = NULL;
	size_t n = 0;
	FILE *fp = open_memstream(&s, &n);

	if (jsonl_write(fp, obj) < 0)
		s[0] = '\0';
	fclose(fp);
	return s;
}

static void
test_json_writer(void)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	ok(prints_as(0, "{\"n\":0}"), "json_add_int 0");
	ok(prints_as(-1, "{\"n\":-1}"), "json_add_int -1");
	ok(prints_as(LLONG_MAX, "{\"n\":9223372036854775807}"), "json_add_int LLONG_MAX, every digit");
	ok(prints_as(LLONG_MIN, "{\"n\":-9223372036854775808}"), "json_add_int LLONG_MIN, every digit");
	ok(prints_as(9007199254740993LL, "{\"n\":9007199254740993}"),
	    "json_add_int 2^53+1, which a double would round");

	cJSON_AddStringToObject(o, "q", "say \"hi\" \\ /");
	s = written(o);
	ok(strcmp(s, "{\"q\":\"say \\\"hi\\\" \\\\ /\"}\n") == 0, "quotes and backslashes escaped");
	free(s);
	cJSON_Delete(o);

	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "c", "a\nb\tc\x01\x1f");
	s = written(o);
	ok(strcmp(s, "{\"c\":\"a\\nb\\tc\\u0001\\u001f\"}\n") == 0, "control characters escaped");
	ok(strchr(s, '\n') == s + strlen(s) - 1, "so the line is one line");
	free(s);
	cJSON_Delete(o);

	o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "u", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa6");
	s = written(o);
	ok(strcmp(s, "{\"u\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa6\"}\n") == 0,
	    "UTF-8 written as it is");
	free(s);
	cJSON_Delete(o);
}

/* The reader over a real descriptor: a pipe, as programs read stdin. */
static void
test_jsonl_pipe(void)
{
	static char longline[200000];
	int p[2];
	FILE *in;
	struct jsonl r;
	const char *why = NULL;
	cJSON *o = NULL;
	int n;

	/* Room for the long line, so this one process can write it all before reading. */
	if (pipe(p) < 0 || fcntl(p[1], F_SETPIPE_SZ, 1 << 20) < 0 ||
	    (in = fdopen(p[0], "r")) == NULL) {
		ok(0, "a pipe");
		return;
	}
	jsonl_open(&r, in);
	ok(!jsonl_pending(&r), "an empty pipe: nothing pending");
	n = snprintf(longline, sizeof longline, "{\"s\":\"");
	memset(longline + n, 'x', sizeof longline - (size_t)n - 8);
	strcpy(longline + sizeof longline - 8, "\"}\n");
	if (write(p[1], "{\"a\":1}\n\n{\"b\":2}\n", 17) != 17 ||
	    write(p[1], longline, strlen(longline)) != (ssize_t)strlen(longline)) {
		ok(0, "writing the pipe");
		return;
	}
	ok(jsonl_pending(&r), "written: pending");
	ok(jsonl_next(&r, &o, &why) == JSONL_OK && r.lineno == 1 && strcmp(r.buf, "{\"a\":1}\n") == 0,
	    "line 1, NUL-terminated with its newline");
	cJSON_Delete(o);
	ok(jsonl_pending(&r), "line 3 is buffered: still pending");
	ok(jsonl_next(&r, &o, &why) == JSONL_OK && r.lineno == 3 &&
	    json_int(o, "b", 0, 9, &(long long){ 0 }) == 0, "blank line skipped, line 3 read");
	cJSON_Delete(o);
	ok(jsonl_next(&r, &o, &why) == JSONL_OK && strlen(r.buf) == strlen(longline),
	    "a line longer than the read buffer is whole");
	cJSON_Delete(o);
	ok(!jsonl_pending(&r), "all read: nothing pending");
	if (write(p[1], "{\"c\":3}", 7) != 7)
		ok(0, "writing the pipe");
	close(p[1]);
	ok(jsonl_next(&r, &o, &why) == JSONL_OK && strcmp(r.buf, "{\"c\":3}") == 0,
	    "a last line without a newline is read");
	cJSON_Delete(o);
	ok(jsonl_next(&r, &o, &why) == JSONL_EOF && r.error == 0 && !ferror(in), "then EOF, no error");
	ok(jsonl_pending(&r), "at EOF jsonl_next does not block: pending");
	jsonl_close(&r);
	fclose(in);
}

/* What a confirm settled, in order. */
struct seen {
	char log[64];
	int stop_at;	/* item number whose settling fails, or 0 */
};

static int
note(const struct mq_confirm_wait *w, int acked, void *arg)
{
	struct seen *s = arg;
	int item = (int)(intptr_t)w->item;
	size_t len = strlen(s->log);

	snprintf(s->log + len, sizeof s->log - len, "%s%d%s", len ? " " : "", item,
	    acked ? "+" : "-");
	return item == s->stop_at ? -1 : 0;
}

static struct mq_event
confirm(enum mq_event_type type, uint64_t tag, int multiple)
{
	return (struct mq_event){ .type = type, .tag = tag, .multiple = multiple };
}

static void
test_confirms(void)
{
	struct mq m = { .generation = 1 };
	struct mq_confirms c = { 0 };
	struct seen s = { "", 0 };
	struct mq_event ev;

	/* Items 1..6 published as sequence numbers 11..16. */
	for (int i = 1; i <= 6; i++)
		mq_confirms_add(&c, &m, 10 + (uint64_t)i, (void *)(intptr_t)i, 100 + (uint64_t)i);
	ok(c.n == 6, "six publishes wait");
	ev = confirm(MQ_ACK, 13, 0);
	ok(mq_confirms_apply(&c, &ev, note, &s) == 1 && strcmp(s.log, "3+") == 0,
	    "a single ack out of order settles just its publish: %s", s.log);
	ev = confirm(MQ_NACK, 12, 1);
	s.log[0] = '\0';
	ok(mq_confirms_apply(&c, &ev, note, &s) == 2 && strcmp(s.log, "1- 2-") == 0,
	    "a multiple nack settles every one up to it, oldest first: %s", s.log);
	ev = confirm(MQ_ACK, 13, 1);
	s.log[0] = '\0';
	ok(mq_confirms_apply(&c, &ev, note, &s) == 0 && c.n == 3, "a repeated confirm settles nothing");
	ev = confirm(MQ_NACK, 15, 0);
	s.log[0] = '\0';
	ok(mq_confirms_apply(&c, &ev, note, &s) == 1 && strcmp(s.log, "5-") == 0 && c.n == 2,
	    "a single nack: %s", s.log);
	ok(c.v[0].seq == 14 && c.v[0].tag == 104 && c.v[1].seq == 16,
	    "the rest wait in order, with their tags");
	ev = confirm(MQ_ACK, 16, 1);
	s.log[0] = '\0';
	s.stop_at = 4;
	ok(mq_confirms_apply(&c, &ev, note, &s) == 1 && strcmp(s.log, "4+") == 0 && c.n == 1 &&
	    c.v[0].seq == 16, "a failed settle stops there and keeps the rest");
	m.generation = 2;
	mq_confirms_add(&c, &m, 1, (void *)(intptr_t)7, 0);
	ok(c.n == 1 && c.v[0].seq == 1, "a publish on a new connection drops the old waits");
	mq_confirms_clear(&c);
	ev = confirm(MQ_ACK, 1, 1);
	ok(c.n == 0 && mq_confirms_apply(&c, &ev, note, &s) == 0, "cleared: nothing to settle");
	mq_confirms_free(&c);
}

static void
test_spawn(void)
{
	char *exits[] = { "sh", "-c", "exit 3", NULL };
	char *missing[] = { "./no-such-command-here", NULL };
	char *status[] = { "sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status", NULL };
	struct spawn_fds fds = { -1, -1, -1 };
	char out[256] = "";
	unsigned long long blk = 1, ign = 1;
	int p[2], st = 0;
	sigset_t block;
	pid_t pid;
	ssize_t n;

	ok(spawn_child(&pid, exits, &fds, 0) == 0 && waitpid(pid, &st, 0) == pid &&
	    WIFEXITED(st) && WEXITSTATUS(st) == 3, "a child runs and its status is ours to read");
	ok(spawn_child(&pid, missing, &fds, 0) == ENOENT, "a missing command is ENOENT, no child");

	/* As the programs do: SIGPIPE ignored, and here a signal blocked too. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, NULL);
	if (pipe(p) < 0)
		return;
	fds.out = p[1];
	ok(spawn_child(&pid, status, &fds, SPAWN_OWN_GROUP) == 0, "a child on a pipe");
	close(p[1]);
	n = read(p[0], out, sizeof out - 1);
	out[n > 0 ? n : 0] = '\0';
	close(p[0]);
	waitpid(pid, &st, 0);
	sscanf(out, "SigBlk: %llx SigIgn: %llx", &blk, &ign);
	ok(blk == 0, "the child blocks no signal");
	ok(!(ign & 1ULL << (SIGPIPE - 1)), "the child has SIGPIPE at its default");
	sigprocmask(SIG_UNBLOCK, &block, NULL);
}

int
main(int argc, char **argv)
{
	(void)argc;
	log_init(argv[0]);
	test_http_outcome();
	test_retry_delay();
	test_urls();
	test_json_writer();
	test_jsonl_pipe();
	test_confirms();
	test_spawn();
	return tap_done();
}
