/* utf8: well-formed UTF-8 (RFC 3629) recognised in one place, and replaced by U+FFFD where it is not. */
#include "utf8.h"

size_t
utf8_len(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n;
	unsigned cp;

	if (s[0] < 0x80)
		return 1;
	/* 0xc0, 0xc1 and 0xf5 up can only start overlong or out-of-range forms. */
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	/* Stops at the first byte that is not a continuation, the NUL included. */
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and code points past U+10FFFF are not UTF-8. */
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

int
utf8_valid(const char *s)
{
	size_t n;

	for (; *s != '\0'; s += n)
		if ((n = utf8_len(s)) == 0)
			return 0;
	return 1;
}

void
utf8_put_json_string(FILE *fp, const char *s)
{
	const char *run = s;	/* bytes not written yet that need no escape */
	size_t n;

	putc_unlocked('"', fp);
	for (; *s != '\0'; s += n) {
		unsigned char c = (unsigned char)*s;

		n = 1;
		if (c >= 0x80 && (n = utf8_len(s)) > 0)
			continue;
		if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80)
			continue;
		fwrite_unlocked(run, 1, (size_t)(s - run), fp);
		n = 1;
		run = s + 1;
		switch (c) {
		case '"': fputs_unlocked("\\\"", fp); break;
		case '\\': fputs_unlocked("\\\\", fp); break;
		case '\b': fputs_unlocked("\\b", fp); break;
		case '\f': fputs_unlocked("\\f", fp); break;
		case '\n': fputs_unlocked("\\n", fp); break;
		case '\r': fputs_unlocked("\\r", fp); break;
		case '\t': fputs_unlocked("\\t", fp); break;
		default: fprintf(fp, "\\u%04x", c >= 0x80 ? 0xfffd : c); break;
		}
	}
	fwrite_unlocked(run, 1, (size_t)(s - run), fp);
	putc_unlocked('"', fp);
}
