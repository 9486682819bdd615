/* vendor_answer: what a vendor's answer to an order POST means (SPEC §4), as one pure decision. */
#ifndef OA_VENDOR_ANSWER_H
#define OA_VENDOR_ANSWER_H

#include <stddef.h>

#include "http.h"

enum vendor_answer {
	VA_ACCEPTED,	/* 201 {"status":"accepted",...}: the order is fulfilled */
	VA_REFUSED,	/* 409 {"error":"insufficient_stock"|"unknown_sku"}: it fails, stock released */
	VA_TRANSIENT,	/* timeout, connection error, 408, 429, 5xx: try again */
	VA_UNDEFINED	/* anything else: not the customer's refusal; the order stays pending */
};

/*
 * outcome: http_outcome_of's reading of the transfer (it tells a timeout or
 * a connection error from an answer); status: the HTTP status, 0 if none;
 * body, len: the response body (NULL when there is none). For VA_REFUSED
 * *refusal gets the vendor's reason code (a static string); else NULL.
 */
enum vendor_answer vendor_answer_classify(enum http_outcome outcome, long status,
    const char *body, size_t len, const char **refusal);

#endif
