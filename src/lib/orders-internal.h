/*
 * orders-internal: the allocation step of orders_place, exposed only so the
 * unit tests (tests/unit/orders-units.c) can drive it without a database.
 * Programs use orders.h; nothing here is part of its interface.
 */
#ifndef OA_ORDERS_INTERNAL_H
#define OA_ORDERS_INTERNAL_H

#include <stddef.h>

#include "orders.h"

/* One locked vendor row: what it can still sell in this batch. */
struct locked_stock {
	const char *sku, *vendor;	/* borrowed (from the lock query's result) */
	long long available;
};

/*
 * Give each request, in input order, the one vendor that can cover all of
 * it and has the most left; figures are the locked ones less what earlier
 * requests of this batch took. stock[0..nstock) must be sorted by SKU, then
 * vendor, in strcmp order; its `available` figures are lowered as requests
 * take them. Requests that are invalid, already answered (res[i].status set)
 * or repeats (same[i] != i) are skipped. A request with no vendor row gets
 * res[i] rejected "unknown_sku"; one no vendor can cover alone,
 * "insufficient_stock"; an allocated one gets vendor[i] (pointing at the
 * row's vendor). Returns how many were allocated.
 */
size_t orders_allocate(const struct order_request *rq, struct order_result *res,
    const size_t *same, size_t n, struct locked_stock *stock, size_t nstock,
    const char **vendor);

#endif
