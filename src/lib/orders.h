/* orders: place batches of orders in one transaction each, one result per request. */
#ifndef OA_ORDERS_H
#define OA_ORDERS_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "validate.h"

/* Largest quantity one order may ask for; larger is an invalid request. */
#define ORDER_MAX_QUANTITY 1000000000LL
/* Longest SKU and idempotency key, in bytes (lib/validate: a SKU as stock-apply takes it). */
#define ORDER_MAX_SKU FIELD_MAX_NAME
#define ORDER_MAX_KEY FIELD_MAX_KEY

/*
 * One request as the client sent it. The strings are borrowed: they must live
 * until orders_place returns. A request with `invalid` set is answered
 * invalid_request without touching the database.
 */
struct order_request {
	const char *sku;	/* NULL when not given as a string */
	long long quantity;
	int has_quantity;	/* quantity was given as a whole number */
	const char *key;	/* idempotency key, NULL when none */
	const char *invalid;	/* why the request is invalid, or NULL */
};

/*
 * The answer to one request. status is "pending", "success" or "failed" for an
 * order (new, or found again by its key), or "rejected" with error set.
 */
struct order_result {
	long long order_id;	/* 0 when rejected */
	char *sku;
	long long quantity;
	int has_quantity;
	char *vendor;
	char *status;
	const char *error;	/* "insufficient_stock", "unknown_sku", "invalid_request",
				   "idempotency_key_reused" */
	char *key;
	int existing;		/* an earlier order found again by its key, not placed now */
};

enum {
	ORDERS_OK = 0,		/* committed: every result is final */
	ORDERS_LOST = -1,	/* connection lost once COMMIT was sent: the batch may or may
				   not have committed */
	ORDERS_FAILED = -2,	/* the database refused the batch: nothing committed */
	ORDERS_LOST_BEFORE_COMMIT = -3	/* connection lost before COMMIT was sent: the
					   server rolls the batch back, nothing committed */
};

/*
 * Fill *rq from one JSON request {"sku":…,"quantity":…,"key":…}; strings point
 * into obj. Returns 0, or -1 with rq->invalid set (and whatever fields were
 * usable still filled in, to be echoed in the rejection).
 */
int order_request_from_json(const cJSON *obj, struct order_request *rq);
/* Check a request's fields; returns 0, or -1 with rq->invalid set. */
int order_request_check(struct order_request *rq);

/*
 * Check the connection reaches a migrated schema and prepare the statements
 * orders_place runs on it (again after every reconnect): ORDERS_OK, or (printed)
 * ORDERS_LOST when the connection is gone, ORDERS_FAILED when the database
 * refused (not migrated).
 */
int orders_prepare(PGconn *c);
/*
 * Place n requests in one transaction, allocating in input order, retrying
 * the whole batch after a deadlock or serialization failure. res[i] answers
 * rq[i]; on ORDERS_OK every result is committed. A lost connection is
 * ORDERS_LOST only when COMMIT had been sent (its answer never came), else
 * ORDERS_LOST_BEFORE_COMMIT. The caller frees each with
 * order_result_clear (harmless after a failure, when all are empty).
 * A request whose key appears earlier in the batch gets the earlier answer.
 * A request whose key already names another request (another SKU or
 * quantity), in the database or earlier in the batch, is rejected
 * "idempotency_key_reused" and places nothing (SPEC §5).
 */
int orders_place(PGconn *c, const struct order_request *rq, size_t n, struct order_result *res);
void order_result_clear(struct order_result *res);
/* The answer as a JSON object in order-place's output format; caller deletes. */
cJSON *order_result_json(const struct order_result *res);

#endif
