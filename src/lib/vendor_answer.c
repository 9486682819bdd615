/* vendor_answer: only the vendor API's own answers decide an order (SPEC §4). */
#include <string.h>

#include <cjson/cJSON.h>
#include "vendor_answer.h"

static const char *const REFUSALS[] = { "insufficient_stock", "unknown_sku" };

/* The body's string member key, if the body is a JSON object that has one. */
static int
body_says(const char *body, size_t len, const char *key, const char *want)
{
	cJSON *o;
	const cJSON *v;
	int yes;

	if (body == NULL || len == 0)
		return 0;
	o = cJSON_ParseWithLength(body, len);
	v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
	yes = cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
	cJSON_Delete(o);
	return yes;
}

enum vendor_answer
vendor_answer_classify(enum http_outcome outcome, long status, const char *body, size_t len,
    const char **refusal)
{
	*refusal = NULL;
	if (outcome == HTTP_TRANSIENT)
		return VA_TRANSIENT;
	/* A body past its cap, or an error no retry mends (TLS, URL): not an answer. */
	if (outcome != HTTP_OK && (status < 400 || status > 599))
		return VA_UNDEFINED;
	if (status == 201 && outcome == HTTP_OK)
		return body_says(body, len, "status", "accepted") ? VA_ACCEPTED : VA_UNDEFINED;
	if (status == 409)
		for (size_t i = 0; i < sizeof REFUSALS / sizeof REFUSALS[0]; i++)
			if (body_says(body, len, "error", REFUSALS[i])) {
				*refusal = REFUSALS[i];
				return VA_REFUSED;
			}
	return VA_UNDEFINED;
}
