/* utf8-units: unit tests of lib/utf8 (RFC 3629 validation, U+FFFD replacement in JSON strings). */
#include <stdlib.h>
#include <string.h>

#include "lib/utf8.h"
#include "tap.h"

/* What utf8_put_json_string writes for s. */
static char *
json_of(const char *s)
{
	char *out = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&out, &len);

	utf8_put_json_string(fp, s);
	fclose(fp);
	return out;
}

static void
test_len(void)
{
	ok(utf8_len("a") == 1, "ASCII is one byte");
	ok(utf8_len("") == 1, "the NUL is one byte (a C string ends there)");
	ok(utf8_len("\xc3\xa9") == 2, "U+00E9 is two bytes");
	ok(utf8_len("\xe2\x82\xac") == 3, "U+20AC is three bytes");
	ok(utf8_len("\xf0\x9f\x98\x80") == 4, "U+1F600 is four bytes");
	ok(utf8_len("\xf4\x8f\xbf\xbf") == 4, "U+10FFFF, the last code point, is four bytes");
	ok(utf8_len("\xed\x9f\xbf") == 3, "U+D7FF, just below the surrogates, is valid");
	ok(utf8_len("\xc0\x80") == 0, "overlong NUL C0 80 is rejected");
	ok(utf8_len("\xc1\xbf") == 0, "overlong C1 BF is rejected");
	ok(utf8_len("\xe0\x80\x80") == 0, "overlong three-byte E0 80 80 is rejected");
	ok(utf8_len("\xf0\x80\x80\x80") == 0, "overlong four-byte F0 80 80 80 is rejected");
	ok(utf8_len("\xed\xa0\x80") == 0, "surrogate U+D800 (ED A0 80) is rejected");
	ok(utf8_len("\xed\xbf\xbf") == 0, "surrogate U+DFFF (ED BF BF) is rejected");
	ok(utf8_len("\xf4\x90\x80\x80") == 0, "U+110000 (F4 90 80 80) is rejected");
	ok(utf8_len("\xf5\x80\x80\x80") == 0, "lead byte F5 is rejected");
	ok(utf8_len("\xff") == 0, "byte FF is rejected");
	ok(utf8_len("\x80") == 0, "a stray continuation byte is rejected");
	ok(utf8_len("\xc3") == 0, "a two-byte sequence cut by the NUL is rejected");
	ok(utf8_len("\xe2\x82") == 0, "a three-byte sequence cut by the NUL is rejected");
	ok(utf8_len("\xf0\x9f\x98") == 0, "a four-byte sequence cut by the NUL is rejected");
	ok(utf8_len("\xe2\x82z") == 0, "a sequence cut by an ASCII byte is rejected");
}

static void
test_valid(void)
{
	ok(utf8_valid(""), "the empty string is valid");
	ok(utf8_valid("plain ASCII"), "ASCII is valid");
	ok(utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "mixed multibyte text is valid");
	ok(!utf8_valid("ok\xc0\x80"), "an overlong form at the end is invalid");
	ok(!utf8_valid("\xed\xa0\x80 x"), "a surrogate at the start is invalid");
	ok(!utf8_valid("x\xf4\x90\x80\x80"), "a code point past U+10FFFF is invalid");
	ok(!utf8_valid("caf\xc3"), "text ending inside a sequence is invalid");
	ok(utf8_valid("ok\0\xff"), "validation stops at the NUL, as for any C string");
}

static void
test_put_json_string(void)
{
	static const struct { const char *in, *out, *what; } cases[] = {
		{ "abc", "\"abc\"", "plain text is quoted" },
		{ "", "\"\"", "the empty string" },
		{ "a\"b\\c", "\"a\\\"b\\\\c\"", "quote and backslash are escaped" },
		{ "\b\f\n\r\t", "\"\\b\\f\\n\\r\\t\"", "the short escapes" },
		{ "\x01\x1f", "\"\\u0001\\u001f\"", "other control characters as \\u00XX" },
		{ "caf\xc3\xa9", "\"caf\xc3\xa9\"", "valid UTF-8 passes through" },
		{ "a\xff" "b", "\"a\\ufffdb\"", "an invalid byte becomes \\ufffd" },
		{ "\xc0\x80", "\"\\ufffd\\ufffd\"", "each byte of an overlong form becomes \\ufffd" },
		{ "\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"", "each byte of a surrogate too" },
		{ "x\xe2\x82", "\"x\\ufffd\\ufffd\"", "a sequence cut short at the end" },
		{ "\xe2\x82\xe2\x82\xac", "\"\\ufffd\\ufffd\xe2\x82\xac\"",
		    "a cut sequence before a valid one: only the cut bytes are replaced" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *got = json_of(cases[i].in);

		ok(strcmp(got, cases[i].out) == 0, "utf8_put_json_string: %s (got %s)",
		    cases[i].what, got);
		free(got);
	}
}

int
main(void)
{
	test_len();
	test_valid();
	test_put_json_string();
	return tap_done();
}
