/* lib-units: unit tests of src/lib (number parsing, JSON lines, backoff, URL redaction,
 * byte buffers). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/config.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/num.h"
#include "lib/retry.h"
#include "tap.h"

static void
test_num(void)
{
	const char *why = NULL;
	long v = 0;
	double d = 0;

	ok(parse_long("42", 0, 100, &v, &why) == 0 && v == 42, "parse_long accepts 42");
	ok(parse_long("101", 0, 100, &v, &why) < 0 && strcmp(why, "is too large") == 0,
	    "parse_long rejects a value above max");
	ok(parse_long("-1", 0, 100, &v, &why) < 0, "parse_long rejects a value below min");
	ok(parse_long("4x", 0, 100, &v, &why) < 0, "parse_long rejects trailing garbage");
	ok(parse_long("", 0, 100, &v, &why) < 0, "parse_long rejects an empty string");
	ok(parse_long("99999999999999999999", 0, 100, &v, &why) < 0, "parse_long rejects overflow");
	ok(parse_seconds("0.25", 10, &d, &why) == 0 && d == 0.25, "parse_seconds accepts fractions");
	ok(parse_seconds("-1", 10, &d, &why) < 0, "parse_seconds rejects negatives");
	ok(parse_seconds("nan", 10, &d, &why) < 0, "parse_seconds rejects nan");
}

static void
test_jsonl(void)
{
	static const char input[] =
	    "{\"a\":1}\n"
	    "\n"
	    "not json\n"
	    "[1,2]\n"
	    "{\"a\":2} x\n"
	    "{\"sku\":\"S\",\"quantity\":3.5}\n"
	    "{\"a\":3";
	FILE *fp = fmemopen((void *)input, sizeof input - 1, "r");
	struct jsonl r;
	const char *why = NULL;
	long long q;
	cJSON *o;

	jsonl_open(&r, fp);
	ok(jsonl_next(&r, &o, &why) == JSONL_OK && r.lineno == 1, "a JSON object line is read");
	cJSON_Delete(o);
	ok(jsonl_next(&r, &o, &why) == JSONL_BAD && r.lineno == 3, "blank lines are skipped and counted");
	ok(strcmp(why, "not valid JSON") == 0, "not JSON is said so");
	ok(jsonl_next(&r, &o, &why) == JSONL_BAD && strcmp(why, "not a JSON object") == 0,
	    "an array is not an object");
	ok(jsonl_next(&r, &o, &why) == JSONL_BAD && r.lineno == 5, "trailing characters are rejected");
	ok(jsonl_next(&r, &o, &why) == JSONL_OK, "line 6 parses");
	ok(json_int(o, "quantity", 0, 10, &q) < 0, "json_int rejects 3.5");
	ok(json_string(o, "sku") != NULL && json_string(o, "quantity") == NULL, "json_string checks the type");
	cJSON_Delete(o);
	ok(jsonl_next(&r, &o, &why) == JSONL_BAD && strncmp(why, "truncated", 9) == 0,
	    "a last line cut short is reported as truncated");
	ok(jsonl_next(&r, &o, &why) == JSONL_EOF, "then end of input");
	jsonl_close(&r);
	fclose(fp);
}

static void
test_backoff(void)
{
	struct backoff b = BACKOFF_INIT(0.1, 1.0);
	int in_range = 1;

	for (int i = 0; i < 10; i++) {
		double want = 0.1 * (1 << i) > 1.0 ? 1.0 : 0.1 * (1 << i);
		double d = backoff_next(&b);

		in_range &= d >= want / 2 && d <= want;
	}
	ok(in_range, "backoff delays double up to the cap, jittered within [d/2, d]");
	backoff_reset(&b);
	ok(backoff_next(&b) <= 0.1, "backoff_reset starts again from the base");
}

static void
test_redact(void)
{
	char *r = config_redact_url("amqp://user:secret@host:5672/vh");

	ok(r && strcmp(r, "amqp://user:***@host:5672/vh") == 0, "passwords are redacted from URLs");
	free(r);
	r = config_redact_url("amqp://host/");
	ok(r && strcmp(r, "amqp://host/") == 0, "URLs without a password are unchanged");
	free(r);
}

static void
test_buf(void)
{
	struct buf b = { 0 };
	int same = 1;

	ok(buf_add(&b, NULL, 0) == 0 && b.data != NULL && b.len == 0 && b.data[0] == '\0',
	    "a zero-length append makes an empty string");
	for (int i = 0; i < 1000; i++)
		same &= buf_add(&b, "0123456789", 10) == 0 && b.data[b.len] == '\0';
	ok(same && b.len == 10000 && b.cap > 10000, "appends grow the buffer, each NUL-terminated");
	for (size_t i = 0; i < b.len; i++)
		same &= b.data[i] == "0123456789"[i % 10];
	ok(same && strlen(b.data) == 10000, "the bytes survive growth in order");
	buf_reset(&b);
	ok(b.len == 0 && b.data != NULL && b.data[0] == '\0' && b.cap > 10000,
	    "reset empties the buffer and keeps its memory");
	ok(buf_add(&b, "x", 1) == 0 && strcmp(b.data, "x") == 0, "a reset buffer is appended to");
	buf_free(&b);
	ok(b.data == NULL && b.len == 0 && b.cap == 0, "free leaves an empty buffer");
	buf_free(&b);
	ok(b.data == NULL, "freeing twice is harmless");

	b.max = 10;
	ok(buf_add(&b, "12345678", 8) == 0, "a capped buffer takes what fits");
	errno = 0;
	ok(buf_add(&b, "abc", 3) < 0 && errno == EMSGSIZE, "an append past the cap is refused");
	ok(b.len == 8 && strcmp(b.data, "12345678") == 0,
	    "a refused append leaves the buffer as it was");
	ok(buf_add(&b, "ab", 2) == 0 && strcmp(b.data, "12345678ab") == 0,
	    "the cap itself is reached");
	ok(buf_add(&b, "", 0) == 0 && xbuf_add(&b, "c", 1) < 0 && b.len == 10,
	    "a full buffer takes nothing more, but a zero-length append");
	ok(b.cap <= b.max + 1, "a capped buffer never holds more memory than its cap and the NUL");
	buf_free(&b);
	ok(b.max == 10 && buf_add(&b, "0123456789x", 11) < 0 && b.data == NULL,
	    "free keeps the cap");
}

int
main(int argc, char **argv)
{
	(void)argc;
	log_init(argv[0]);
	test_num();
	test_jsonl();
	test_backoff();
	test_redact();
	test_buf();
	return tap_done();
}
