/* validate-units: unit tests of lib/validate (raw text, strings, numbers, timestamps) and jsonl's line cap. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jsonl.h"
#include "lib/validate.h"
#include "tap.h"

static const char *
text(const char *s)
{
	return validate_json_text(s, strlen(s));
}

static void
test_text(void)
{
	char buf[64];

	ok(text("{\"sku\":\"A\",\"quantity\":1}") == NULL, "plain ASCII JSON passes");
	ok(text("{\"name\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}") == NULL, "UTF-8 passes");
	ok(text("{\"sku\":\"A\\u0000B\"}") != NULL, "\\u0000 is refused");
	ok(text("{\"sku\":\"A\\\\u0000B\"}") == NULL, "an escaped backslash before u0000 is text, not a NUL");
	ok(text("{\"sku\":\"A\\\\\\u0000\"}") != NULL, "\\\\ then \\u0000 is a NUL");
	ok(text("{\"sku\":\"\\u0041\\n\\\"\"}") == NULL, "other escapes pass");
	ok(text("{\"sku\":\"\xff\"}") != NULL, "a byte 0xFF is refused");
	ok(text("{\"sku\":\"\xc0\x80\"}") != NULL, "an overlong NUL is refused");
	ok(text("{\"sku\":\"\xed\xa0\x80\"}") != NULL, "an encoded surrogate is refused");
	ok(validate_json_text("{\"a\":\"\xc3\xa9\"}", 7) != NULL, "a sequence cut by the length is refused");
	ok(validate_json_text("ab\0cd", 5) != NULL, "a NUL byte is refused");
	/* The eight-byte fast path: a bad byte at every offset is still found. */
	for (int at = 0; at < 24; at++) {
		memset(buf, 'x', 32);
		buf[32] = '\0';
		buf[at] = (char)0xff;
		ok(validate_json_text(buf, 32) != NULL, "0xFF at offset %d is found", at);
		buf[at] = '\\';
		memcpy(buf + at + 1, "u0000", 5);
		ok(validate_json_text(buf, 32) != NULL, "\\u0000 at offset %d is found", at);
	}
	ok(validate_json_text("\\u000", 5) == NULL, "a cut escape does not read past the end");
}

static void
test_fields(void)
{
	cJSON *o = cJSON_Parse("{\"s\":\"abc\",\"e\":\"\",\"n\":5,\"big\":1e308,\"neg\":-1e308,"
	    "\"half\":0.5,\"exact\":9007199254740992,\"over\":9007199254740994,\"nul\":null}");
	char *long_s = malloc(300);
	const char *s;
	long long v = 0;
	struct why why;
	cJSON *l;

	ok(validate_string(o, "s", 1, 255, 1, &s, &why) == 1 && strcmp(s, "abc") == 0, "a string");
	ok(validate_string(o, "e", 1, 255, 1, &s, &why) == -1 && strstr(why.msg, "non-empty"),
	    "an empty required string: %s", why.msg);
	ok(validate_string(o, "missing", 1, 255, 0, &s, &why) == 0 && s == NULL, "absent, optional");
	ok(validate_string(o, "nul", 1, 255, 0, &s, &why) == 0, "null, optional");
	ok(validate_string(o, "missing", 1, 255, 1, &s, &why) == -1, "absent, required");
	ok(validate_string(o, "n", 1, 255, 1, &s, &why) == -1, "a number is not a string");
	memset(long_s, 'x', 299);
	long_s[299] = '\0';
	l = cJSON_CreateObject();
	cJSON_AddStringToObject(l, "sku", long_s);
	ok(validate_string(l, "sku", 1, FIELD_MAX_NAME, 1, &s, &why) == -1 &&
	    strstr(why.msg, "longer than 255") != NULL, "300 bytes: %s", why.msg);
	long_s[255] = '\0';
	cJSON_DeleteItemFromObject(l, "sku");
	cJSON_AddStringToObject(l, "sku", long_s);
	ok(validate_string(l, "sku", 1, FIELD_MAX_NAME, 1, &s, &why) == 1, "255 bytes pass");
	ok(validate_cstring("\xff", 1, 255) != NULL, "a C string not UTF-8");

	ok(validate_int(o, "n", 0, 10, 1, &v, &why) == 1 && v == 5, "a whole number");
	ok(validate_int(o, "n", 6, 10, 1, &v, &why) == -1, "below the range");
	ok(validate_int(o, "big", -(1LL << 53), 1LL << 53, 1, &v, &why) == -1, "1e308: %s", why.msg);
	ok(validate_int(o, "neg", -(1LL << 53), 1LL << 53, 1, &v, &why) == -1, "-1e308");
	ok(validate_int(o, "half", 0, 10, 1, &v, &why) == -1, "0.5 is not whole");
	ok(validate_int(o, "exact", 0, 1LL << 53, 1, &v, &why) == 1 && v == 1LL << 53, "2^53 passes");
	ok(validate_int(o, "over", 0, LLONG_MAX, 1, &v, &why) == -1, "past 2^53 is refused");
	ok(validate_int(o, "missing", 0, 10, 0, &v, &why) == 0, "absent, optional");
	ok(!validate_double_int(INFINITY, 0, 10) && !validate_double_int(NAN, 0, 10) &&
	    !validate_double_int(-INFINITY, -10, 10), "inf and NaN are refused");
	cJSON_Delete(o);
	cJSON_Delete(l);
	free(long_s);
}

static void
test_timestamps(void)
{
	static const char *good[] = { "2026-12-06T03:30:00.123Z", "2026-12-06T03:30:00Z",
		"2026-12-06 03:30:00+01:00", "2026-12-06T03:30:00-0530", "2026-12-06T03:30",
		"2026-12-06", "2024-02-29T00:00:00Z", "2026-12-31T23:59:60Z", "0001-01-01T00:00:00Z",
		"2026-12-06T03:30:00.123456789+14" };
	static const char *bad[] = { "", "yesterday", "2026-02-30T00:00:00Z", "2025-02-29",
		"2026-13-01", "2026-12-06T24:00:00Z", "2026-12-06T03:60:00Z", "2026-12-06T03:30:00.Z",
		"2026-12-06T03:30:00.1234567890Z", "2026-12-06T03:30:00ZZ", "2026-12-06Z",
		"0000-01-01", "2026-12-06T03:30:00+16:00", "-infinity", "2026-1-6", "now" };

	for (size_t i = 0; i < sizeof good / sizeof *good; i++)
		ok(validate_timestamp(good[i]), "a timestamp: %s", good[i]);
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ok(!validate_timestamp(bad[i]), "not a timestamp: \"%s\"", bad[i]);
}

/* Read every line of s with a cap of max; write a letter per line: o ok, b bad. */
static void
lines_of(const char *s, size_t n, size_t max, char *out)
{
	FILE *fp = fmemopen((void *)s, n, "r");
	struct jsonl r;
	const char *why;
	cJSON *obj;
	int rc;

	jsonl_open(&r, fp);
	r.max_line = max;
	while ((rc = jsonl_next(&r, &obj, &why)) != JSONL_EOF) {
		*out++ = rc == JSONL_OK ? 'o' : 'b';
		cJSON_Delete(obj);
	}
	*out = '\0';
	jsonl_close(&r);
	fclose(fp);
}

static void
test_line_cap(void)
{
	size_t big = 300000;
	char *s = malloc(big + 64), got[16];
	size_t n = 0;

	n += (size_t)sprintf(s + n, "{\"a\":1}\n{\"b\":\"");
	memset(s + n, 'x', big);
	n += big;
	n += (size_t)sprintf(s + n, "\"}\n{\"c\":3}\n");
	lines_of(s, n, 1024, got);
	ok(strcmp(got, "obo") == 0, "a line past the cap is one bad line, the next is read: %s", got);
	lines_of(s, n, 1024 * 1024, got);
	ok(strcmp(got, "ooo") == 0, "under a larger cap it is read: %s", got);
	lines_of("{\"a\":1}\n{\"b\":222}\n", 18, 8, got);
	ok(strcmp(got, "ob") == 0, "a line one byte past the cap, whole in one read: %s", got);
	lines_of("{\"a\":1}\n{\"b\":2222222", 22, 8, got);
	ok(strcmp(got, "ob") == 0, "a long last line without a newline: %s", got);
	free(s);
}

int
main(void)
{
	test_text();
	test_fields();
	test_timestamps();
	test_line_cap();
	return tap_done();
}
