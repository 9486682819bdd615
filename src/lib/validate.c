/* validate: fields checked in C before they reach PostgreSQL (see validate.h). */
#include "validate.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "utf8.h"

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Length of the UTF-8 sequence at p (0 if none), reading nothing at or past end. */
static size_t
seq_len(const unsigned char *p, const unsigned char *end)
{
	char tmp[5] = { 0 };

	if (end - p >= 4)
		return utf8_len((const char *)p);
	memcpy(tmp, p, (size_t)(end - p));
	return utf8_len(tmp);
}

const char *
validate_json_text(const char *str, size_t n)
{
	const unsigned char *p = (const unsigned char *)str, *end = p + n;

	while (p < end) {
		/* Eight ASCII bytes with neither a backslash nor a NUL: nothing to look at. */
		while (end - p >= 8) {
			uint64_t w, x;

			memcpy(&w, p, 8);
			x = w ^ (ONES * '\\');
			if (((w | ((x - ONES) & ~x) | ((w - ONES) & ~w)) & HIGHS) != 0)
				break;
			p += 8;
		}
		if (p >= end)
			break;
		if (*p == '\0')
			return "contains a NUL byte";
		if (*p == '\\') {
			/* In JSON a backslash only ever begins an escape of two or six bytes. */
			if (end - p >= 6 && p[1] == 'u' && memcmp(p + 2, "0000", 4) == 0)
				return "a string holds \\u0000 (NUL), which no field may contain";
			p += end - p >= 2 ? 2 : 1;
		} else if (*p < 0x80) {
			p++;
		} else {
			size_t len = seq_len(p, end);

			if (len == 0)
				return "not valid UTF-8";
			p += len;
		}
	}
	return NULL;
}

const char *
validate_cstring(const char *s, size_t min, size_t max)
{
	size_t len = strlen(s);

	if (len < min)
		return "is empty";
	if (len > max)
		return max == FIELD_MAX_KEY ? "is longer than 256 bytes" : "is longer than 255 bytes";
	if (!utf8_valid(s))
		return "is not valid UTF-8";
	return NULL;
}

int
validate_string(const cJSON *obj, const char *field, size_t min, size_t max, int required,
    const char **out, struct why *why)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
	const char *bad;

	*out = NULL;
	if (v == NULL || cJSON_IsNull(v)) {
		if (!required)
			return 0;
		snprintf(why->msg, sizeof why->msg, "\"%s\" must be a non-empty string", field);
		return -1;
	}
	if (!cJSON_IsString(v)) {
		snprintf(why->msg, sizeof why->msg, "\"%s\" must be a%s string", field,
		    min > 0 ? " non-empty" : "");
		return -1;
	}
	if ((bad = validate_cstring(v->valuestring, min, max)) != NULL) {
		if (*v->valuestring == '\0')
			snprintf(why->msg, sizeof why->msg, "\"%s\" must be a non-empty string", field);
		else
			snprintf(why->msg, sizeof why->msg, "\"%s\" %s", field, bad);
		return -1;
	}
	*out = v->valuestring;
	return 1;
}

int
validate_double_int(double d, long long min, long long max)
{
	/* Every comparison is false for NaN: it is refused with the rest. */
	return isfinite(d) && d == floor(d) && d >= (double)min && d <= (double)max &&
	    fabs(d) <= FIELD_MAX_EXACT;
}

int
validate_int(const cJSON *obj, const char *field, long long min, long long max, int required,
    long long *out, struct why *why)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);

	if ((v == NULL || cJSON_IsNull(v)) && !required)
		return 0;
	if (!cJSON_IsNumber(v) || !validate_double_int(v->valuedouble, min, max)) {
		snprintf(why->msg, sizeof why->msg, "\"%s\" must be a whole number from %lld to %lld",
		    field, min, max);
		return -1;
	}
	*out = (long long)v->valuedouble;
	return 1;
}

/* n digits at *s as a number into *v, advancing *s: 0, or -1 if not n digits. */
static int
digits(const char **s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++, (*s)++) {
		if (**s < '0' || **s > '9')
			return -1;
		*v = *v * 10 + (**s - '0');
	}
	return 0;
}

int
validate_timestamp(const char *s)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int y, mo, d, h, mi, sec, leap;

	if (digits(&s, 4, &y) < 0 || *s++ != '-' || digits(&s, 2, &mo) < 0 || *s++ != '-' ||
	    digits(&s, 2, &d) < 0)
		return 0;
	leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
	    (mo == 2 && d == 29 && !leap))
		return 0;
	if (*s == 'T' || *s == ' ') {
		s++;
		if (digits(&s, 2, &h) < 0 || *s++ != ':' || digits(&s, 2, &mi) < 0 ||
		    h > 23 || mi > 59)
			return 0;
		if (*s == ':') {
			s++;
			/* PostgreSQL takes a leap second (60) and carries it. */
			if (digits(&s, 2, &sec) < 0 || sec > 60)
				return 0;
			if (*s == '.') {
				int n = 0;

				while (s[1] >= '0' && s[1] <= '9')
					s++, n++;
				s++;
				if (n < 1 || n > 9)
					return 0;
			}
		}
	} else {
		return *s == '\0';	/* a zone only after a time */
	}
	if (*s == 'Z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		s++;
		if (digits(&s, 2, &h) < 0 || h > 15)
			return 0;
		if (*s == ':')
			s++;
		if (*s >= '0' && *s <= '9' && (digits(&s, 2, &mi) < 0 || mi > 59))
			return 0;
	}
	return *s == '\0';
}
