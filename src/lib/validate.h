/*
 * validate: the one place where a field is checked before it may reach
 * PostgreSQL (stock-apply, order-place and order-api): a bad field makes a
 * bad line (or a 400), never a database error that stops more than itself.
 */
#ifndef OA_VALIDATE_H
#define OA_VALIDATE_H

#include <stddef.h>
#include <cjson/cJSON.h>

/* Longest SKU and vendor name, and longest idempotency key, in bytes. */
#define FIELD_MAX_NAME 255
#define FIELD_MAX_KEY 256
/*
 * The largest magnitude of an integer field given as a JSON number: 2^53,
 * the last one a double holds exactly (cJSON keeps numbers as doubles).
 * It fits a bigint; anything larger is refused before any C conversion.
 */
#define FIELD_MAX_EXACT 9007199254740992.0

/* Where a reason is written: "\"sku\" is longer than 255 bytes". */
struct why {
	char msg[160];
};

/*
 * Whether the raw JSON text s[0..n) can be stored: well-formed UTF-8, no NUL
 * byte, and no \u0000 escape (cJSON decodes it to a NUL that silently ends
 * the string: "A\u0000B" would become "A"). NULL when it can, else why (a
 * static string). s need not be NUL-terminated. One pass, eight bytes at a
 * time while they are ASCII without a backslash.
 */
const char *validate_json_text(const char *s, size_t n);

/*
 * String member `field` of obj. Returns 1 with *out set when present and
 * valid UTF-8 of min to max bytes; 0 when absent (or JSON null) and not
 * required; -1 with why filled in otherwise.
 */
int validate_string(const cJSON *obj, const char *field, size_t min, size_t max,
    int required, const char **out, struct why *why);
/* The same checks on a C string (a command-line argument, a URL path). NULL, or why. */
const char *validate_cstring(const char *s, size_t min, size_t max);

/*
 * Whole-number member `field` in [min, max] (both within +-FIELD_MAX_EXACT).
 * Range and wholeness are checked on the double before any conversion, so
 * 1e308, inf and -0.5 are bad fields. Same returns as validate_string.
 */
int validate_int(const cJSON *obj, const char *field, long long min, long long max,
    int required, long long *out, struct why *why);
/* Whether the double d is a whole number in [min, max]: then (long long)d is defined. */
int validate_double_int(double d, long long min, long long max);

/*
 * Whether s is a timestamp PostgreSQL's timestamptz accepts, in the ISO 8601
 * form vendor-fetch writes: YYYY-MM-DD, then optionally T (or a space)
 * HH:MM[:SS[.fraction]], then optionally Z or +HH[:MM] / -HH[:MM]. Dates are
 * checked (2026-02-30 is not one); years 0001 to 9999.
 */
int validate_timestamp(const char *s);

#endif
