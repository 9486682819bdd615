/*
 * fuzz-validate: the field checks every line and request passes before
 * PostgreSQL (lib/validate) over any bytes: the raw text check, then, when
 * the bytes parse as an object, its string, integer and timestamp fields.
 * What validate accepts must hold what it promises: no NUL cut short, lengths
 * in range, integers in range and exactly the JSON number.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "lib/utf8.h"
#include "lib/validate.h"

static void
check_string(const cJSON *obj, const char *field, size_t min, size_t max)
{
	struct why why = { "" };
	const char *s = NULL;
	int rc = validate_string(obj, field, min, max, 1, &s, &why);

	if (rc == 1 && (s == NULL || strlen(s) < min || strlen(s) > max || !utf8_valid(s) ||
	    validate_cstring(s, min, max) != NULL))
		abort();
	if (rc < 0 && why.msg[0] == '\0')
		abort();
}

static void
check_int(const cJSON *obj, const char *field, long long min, long long max)
{
	struct why why = { "" };
	long long v = 0;
	int rc = validate_int(obj, field, min, max, 1, &v, &why);

	if (rc == 1 && (v < min || v > max ||
	    (double)v != cJSON_GetObjectItemCaseSensitive(obj, field)->valuedouble))
		abort();
	if (rc < 0 && why.msg[0] == '\0')
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text_why = validate_json_text((const char *)data, size);
	cJSON *obj = cJSON_ParseWithLength((const char *)data, size);
	const cJSON *t;

	if (obj == NULL)
		return 0;
	if (cJSON_IsObject(obj)) {
		/* Text that passed: no string of it was cut short by a \u0000. */
		if (text_why == NULL)
			for (const cJSON *c = obj->child; c != NULL; c = c->next)
				if (cJSON_IsString(c) &&
				    !utf8_valid(c->valuestring))
					abort();
		check_string(obj, "sku", 1, FIELD_MAX_NAME);
		check_string(obj, "vendor", 1, FIELD_MAX_NAME);
		check_string(obj, "key", 1, FIELD_MAX_KEY);
		check_int(obj, "quantity", 0, 9007199254740991LL);
		check_int(obj, "price_cents", -9007199254740991LL, 9007199254740991LL);
		check_int(obj, "items", 1, 1000000000LL);
		if ((t = cJSON_GetObjectItemCaseSensitive(obj, "fetched_at")) != NULL &&
		    cJSON_IsString(t))
			(void)validate_timestamp(t->valuestring);
	}
	(void)validate_double_int(cJSON_IsNumber(obj) ? obj->valuedouble : 0, -5, 5);
	cJSON_Delete(obj);
	return 0;
}
