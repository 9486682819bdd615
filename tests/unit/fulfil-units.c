/* fulfil-units: unit tests of lib/vendor_answer, the reading of a vendor's answer to an order. */
#include <string.h>

#include "lib/vendor_answer.h"
#include "tap.h"

static enum vendor_answer
classify(enum http_outcome o, long status, const char *body, const char **refusal)
{
	return vendor_answer_classify(o, status, body, body ? strlen(body) : 0, refusal);
}

int
main(void)
{
	const char *r;

	ok(classify(HTTP_OK, 201, "{\"order_id\":1,\"status\":\"accepted\"}", &r) == VA_ACCEPTED
	    && r == NULL, "201 accepted is accepted");
	ok(classify(HTTP_OK, 200, "{\"order_id\":1,\"status\":\"accepted\"}", &r) == VA_UNDEFINED,
	    "200 accepted is not the API's answer");
	ok(classify(HTTP_OK, 200, "<html>oops</html>", &r) == VA_UNDEFINED, "200 <html> is undefined");
	ok(classify(HTTP_OK, 201, "<html>", &r) == VA_UNDEFINED, "201 <html> is undefined");
	ok(classify(HTTP_OK, 201, "{\"status\":\"pending\"}", &r) == VA_UNDEFINED,
	    "201 with another status is undefined");
	ok(classify(HTTP_OK, 201, "[\"accepted\"]", &r) == VA_UNDEFINED, "201 array is undefined");
	ok(classify(HTTP_OK, 201, NULL, &r) == VA_UNDEFINED, "201 without a body is undefined");
	ok(classify(HTTP_OK, 204, NULL, &r) == VA_UNDEFINED, "204 is undefined");
	ok(classify(HTTP_PERMANENT, 409, "{\"error\":\"insufficient_stock\"}", &r) == VA_REFUSED
	    && r != NULL && strcmp(r, "insufficient_stock") == 0, "409 insufficient_stock refuses");
	ok(classify(HTTP_PERMANENT, 409, "{\"error\":\"unknown_sku\"}", &r) == VA_REFUSED
	    && r != NULL && strcmp(r, "unknown_sku") == 0, "409 unknown_sku refuses");
	ok(classify(HTTP_PERMANENT, 409, "{\"error\":\"conflict\"}", &r) == VA_UNDEFINED && r == NULL,
	    "409 with another error is undefined");
	ok(classify(HTTP_PERMANENT, 409, "insufficient_stock", &r) == VA_UNDEFINED,
	    "409 not JSON is undefined");
	ok(classify(HTTP_PERMANENT, 400, "{\"error\":\"insufficient_stock\"}", &r) == VA_UNDEFINED,
	    "400 with a refusal's body is undefined");
	ok(classify(HTTP_PERMANENT, 401, "{\"error\":\"unauthorized\"}", &r) == VA_UNDEFINED,
	    "401 is undefined");
	ok(classify(HTTP_PERMANENT, 403, NULL, &r) == VA_UNDEFINED, "403 is undefined");
	ok(classify(HTTP_PERMANENT, 404, "{\"error\":\"unknown_vendor\"}", &r) == VA_UNDEFINED,
	    "404 is undefined");
	ok(classify(HTTP_TRANSIENT, 429, NULL, &r) == VA_TRANSIENT, "429 is transient");
	ok(classify(HTTP_TRANSIENT, 503, "{\"error\":\"insufficient_stock\"}", &r) == VA_TRANSIENT,
	    "503 is transient whatever its body");
	ok(classify(HTTP_TRANSIENT, 0, NULL, &r) == VA_TRANSIENT,
	    "a timeout or connection error is transient");
	ok(classify(HTTP_PERMANENT, 0, NULL, &r) == VA_UNDEFINED,
	    "a body past its cap or a TLS error is undefined");
	return tap_done();
}
