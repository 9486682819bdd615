/*
 * fuzz-orders: order-api's reading of a request body (lib/orders:
 * order_request_from_json, then order_request_check) over any bytes. A
 * request is either valid (a SKU, a quantity in range) or says why not.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "lib/orders.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct order_request rq;
	cJSON *obj = cJSON_ParseWithLength((const char *)data, size);

	if (obj == NULL)
		return 0;
	memset(&rq, 0, sizeof rq);
	if (order_request_from_json(obj, &rq) == 0 && order_request_check(&rq) == 0) {
		if (rq.invalid != NULL || rq.sku == NULL || !rq.has_quantity ||
		    rq.quantity < 1 || rq.quantity > ORDER_MAX_QUANTITY ||
		    strlen(rq.sku) > ORDER_MAX_SKU ||
		    (rq.key != NULL && strlen(rq.key) > ORDER_MAX_KEY))
			abort();
	} else if (rq.invalid == NULL) {
		abort();
	}
	cJSON_Delete(obj);
	return 0;
}
