/* orders: place a batch of orders in one transaction: lock, allocate here, insert and reserve at once. */
#include "orders.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "jsonl.h"
#include "log.h"
#include "orders-internal.h"
#include "policy.h"
#include "retry.h"
#include "utf8.h"
#include "xalloc.h"

/* Deadlocks with other writers (stock-apply, fulfil) are possible; each costs a retry. */
#define MAX_ATTEMPTS 10

/*
 * A batch costs a fixed number of statements whatever its size: look up its
 * keys, lock its SKUs' stock rows, then one statement inserts every order and
 * reserves every unit. The allocation itself is computed here, between the
 * lock and the insert, from the locked figures. Updating each stock row once
 * per batch, rather than once per order, keeps a hot SKU's row from growing
 * a version chain that every later order of the batch would have to walk.
 */

/* Orders already recorded under some of the batch's idempotency keys. */
#define SQL_BY_KEY \
	"SELECT idempotency_key, id, sku, quantity, vendor, status" \
	" FROM orders WHERE idempotency_key = ANY($1::text[])"

/*
 * Lock every vendor row of the batch's SKUs, in (sku, vendor) order: every
 * batch locks in this one order, so concurrent batches queue instead of
 * deadlocking, and the figures read here cannot change until commit.
 */
#define SQL_LOCK \
	"SELECT sku, vendor, quantity - reserved FROM vendor_stock" \
	" WHERE sku = ANY($1::text[]) ORDER BY sku, vendor FOR UPDATE"

/*
 * Record the allocated orders and add their quantities to reserved, in one
 * statement. An order whose key a concurrent transaction committed first is
 * not inserted (ON CONFLICT waits for that transaction), and so reserves
 * nothing. The UPDATE re-checks availability; the caller compares the rows it
 * changed with the rows it had to change.
 */
#define SQL_INSERT \
	"WITH req AS MATERIALIZED (" \
	"  SELECT nextval(pg_get_serial_sequence('orders', 'id')) AS id, r.*" \
	"  FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[])" \
	"  WITH ORDINALITY AS r(sku, quantity, vendor, key, ord))," \
	" ins AS (" \
	"  INSERT INTO orders (id, sku, quantity, vendor, idempotency_key)" \
	"  SELECT id, sku, quantity, vendor, key FROM req ORDER BY ord" \
	"  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id)," \
	" held AS (" \
	"  SELECT req.sku, req.vendor, sum(req.quantity) AS quantity" \
	"  FROM req JOIN ins USING (id) GROUP BY req.sku, req.vendor)," \
	" upd AS (" \
	"  UPDATE vendor_stock s SET reserved = s.reserved + held.quantity FROM held" \
	"  WHERE s.sku = held.sku AND s.vendor = held.vendor" \
	"  AND s.quantity - s.reserved >= held.quantity RETURNING 1)" \
	" SELECT req.id, ins.id IS NOT NULL," \
	"  (SELECT count(*) FROM upd) = (SELECT count(*) FROM held)" \
	" FROM req LEFT JOIN ins USING (id) ORDER BY req.ord"

/*
 * Prepared on each connection by orders_prepare, with generic plans: parsing
 * and planning the insert cost as much as running it (0.35 of 0.6 ms a batch).
 */
static const struct db_statement statements[] = {
	{ "orders_by_key", SQL_BY_KEY },
	{ "orders_lock", SQL_LOCK },
	{ "orders_insert", SQL_INSERT },
};

/* The state of one attempt at a batch; its steps return 0, or -1 with `why` filled in. */
struct attempt {
	PGconn *c;
	const struct order_request *rq;
	struct order_result *res;
	size_t n;
	size_t *same;		/* same[i] != i: request i repeats request same[i]'s key */
	const char **vendor;	/* allocation of request i, NULL when none */
	struct locked_stock *stock;	/* points into `locked` */
	size_t nstock;
	PGresult *locked;
	struct db_failure why;
	int commit_sent;	/* a lost connection may then have committed */
};

static int
invalid(struct order_request *rq, const char *why)
{
	rq->invalid = why;
	return -1;
}

int
order_request_check(struct order_request *rq)
{
	const char *bad;

	if (rq->invalid != NULL)
		return -1;
	if (rq->sku == NULL || *rq->sku == '\0')
		return invalid(rq, "\"sku\" must be a non-empty string");
	if ((bad = validate_cstring(rq->sku, 1, ORDER_MAX_SKU)) != NULL)
		return invalid(rq, strcmp(bad, "is not valid UTF-8") == 0 ?
		    "\"sku\" is not valid UTF-8" : "\"sku\" is longer than 255 bytes");
	if (!rq->has_quantity || rq->quantity < 1 || rq->quantity > ORDER_MAX_QUANTITY)
		return invalid(rq, "\"quantity\" must be a whole number from 1 to 1000000000");
	if (rq->key == NULL)
		return 0;
	if (*rq->key == '\0')
		return invalid(rq, "\"key\" must be a non-empty string");
	if ((bad = validate_cstring(rq->key, 1, ORDER_MAX_KEY)) != NULL)
		return invalid(rq, strcmp(bad, "is not valid UTF-8") == 0 ?
		    "\"key\" is not valid UTF-8" : "\"key\" is longer than 256 bytes");
	return 0;
}

int
order_request_from_json(const cJSON *obj, struct order_request *rq)
{
	const cJSON *s = cJSON_GetObjectItemCaseSensitive(obj, "sku");
	const cJSON *q = cJSON_GetObjectItemCaseSensitive(obj, "quantity");
	const cJSON *k = cJSON_GetObjectItemCaseSensitive(obj, "key");

	memset(rq, 0, sizeof *rq);
	if (cJSON_IsString(s))
		rq->sku = s->valuestring;
	/* Checked on the double before any conversion: 1e308 is refused, not cast. */
	if (cJSON_IsNumber(q) && validate_double_int(q->valuedouble, -ORDER_MAX_QUANTITY - 1,
	    ORDER_MAX_QUANTITY + 1)) {
		rq->quantity = (long long)q->valuedouble;
		rq->has_quantity = 1;
	}
	if (cJSON_IsString(k))
		rq->key = k->valuestring;
	if (order_request_check(rq) < 0)
		return -1;
	/* null is the same as no key; anything else is a mistake worth hearing about. */
	if (k != NULL && !cJSON_IsString(k) && !cJSON_IsNull(k))
		return invalid(rq, "\"key\" must be a string");
	return 0;
}

void
order_result_clear(struct order_result *res)
{
	free(res->sku);
	free(res->vendor);
	free(res->status);
	free(res->key);
	memset(res, 0, sizeof *res);
}

static void
reject(struct order_result *res, const struct order_request *rq, const char *error)
{
	/* Echo what was given, but never bytes that would make the answer bad JSON. */
	order_result_clear(res);
	if (rq->sku != NULL && utf8_valid(rq->sku))
		res->sku = xstrdup(rq->sku);
	res->quantity = rq->quantity;
	res->has_quantity = rq->has_quantity;
	res->status = xstrdup("rejected");
	res->error = error;
	if (rq->key != NULL && utf8_valid(rq->key))
		res->key = xstrdup(rq->key);
}

cJSON *
order_result_json(const struct order_result *res)
{
	cJSON *o = xalloc_check(cJSON_CreateObject());

	if (res->order_id > 0)
		json_add_int(o, "order_id", res->order_id);
	if (res->sku != NULL)
		cJSON_AddStringToObject(o, "sku", res->sku);
	if (res->has_quantity)
		json_add_int(o, "quantity", res->quantity);
	if (res->vendor != NULL)
		cJSON_AddStringToObject(o, "vendor", res->vendor);
	cJSON_AddStringToObject(o, "status", res->status != NULL ? res->status : "rejected");
	if (res->error != NULL)
		cJSON_AddStringToObject(o, "error", res->error);
	if (res->key != NULL)
		cJSON_AddStringToObject(o, "key", res->key);
	return o;
}

int
orders_prepare(PGconn *c)
{
	struct db_failure f;
	PGresult *r = db_run(c, &f, "checking the schema (is it migrated?)",
	    "SELECT 1 FROM orders, vendor_stock LIMIT 0", 0, NULL);

	if (r == NULL) {
		db_warn(&f);
		return f.lost ? ORDERS_LOST : ORDERS_FAILED;
	}
	PQclear(r);
	if (db_prepare(c, statements, sizeof statements / sizeof statements[0], &f) < 0) {
		db_warn(&f);
		return f.lost ? ORDERS_LOST : ORDERS_FAILED;
	}
	return ORDERS_OK;
}

static void
placed(struct order_result *res, const struct order_request *rq, long long id,
    const char *sku, long long quantity, const char *vendor, const char *status)
{
	order_result_clear(res);
	res->order_id = id;
	res->sku = xstrdup(sku);
	res->quantity = quantity;
	res->has_quantity = 1;
	res->vendor = xstrdup(vendor);
	res->status = xstrdup(status);
	res->key = xstrdup(rq->key);
}

/* The database answered something that cannot be: give the batch up, unretried. */
static int
inconsistent(struct attempt *a, const char *msg)
{
	memset(&a->why, 0, sizeof a->why);
	snprintf(a->why.msg, sizeof a->why.msg, "%s", msg);
	return -1;
}

/* Requests whose key already has an order are answered with that order. */
static int
find_keyed(struct attempt *a, const size_t *want, size_t nwant)
{
	struct buf keys = { 0 };
	PGresult *r;

	if (nwant == 0)
		return 0;
	db_array_begin(&keys);
	for (size_t k = 0; k < nwant; k++)
		db_array_text(&keys, a->rq[want[k]].key);
	r = db_run_prepared(a->c, &a->why, "looking up idempotency keys", "orders_by_key", 1,
	    (const char *[]){ db_array_end(&keys) });
	buf_free(&keys);
	if (r == NULL)
		return -1;
	for (int row = 0; row < PQntuples(r); row++)
		for (size_t k = 0; k < nwant; k++) {
			size_t i = want[k];

			if (strcmp(a->rq[i].key, PQgetvalue(r, row, 0)) != 0)
				continue;
			/* The key names another request: refuse rather than answer for it. */
			if (strcmp(a->rq[i].sku, PQgetvalue(r, row, 2)) != 0 ||
			    a->rq[i].quantity != atoll(PQgetvalue(r, row, 3))) {
				reject(&a->res[i], &a->rq[i], "idempotency_key_reused");
				continue;
			}
			placed(&a->res[i], &a->rq[i], atoll(PQgetvalue(r, row, 1)),
			    PQgetvalue(r, row, 2), atoll(PQgetvalue(r, row, 3)),
			    PQgetvalue(r, row, 4), PQgetvalue(r, row, 5));
			a->res[i].existing = 1;
		}
	PQclear(r);
	return 0;
}

static int
by_stock(const void *x, const void *y)
{
	const struct locked_stock *s = x, *t = y;
	int d = strcmp(s->sku, t->sku);

	return d != 0 ? d : strcmp(s->vendor, t->vendor);
}

/* Lock the vendor rows of every SKU still to be placed; index them by SKU. */
static int
lock_stock(struct attempt *a)
{
	struct buf skus = { 0 };

	db_array_begin(&skus);
	for (size_t i = 0; i < a->n; i++)
		if (a->rq[i].invalid == NULL && a->res[i].status == NULL && a->same[i] == i)
			db_array_text(&skus, a->rq[i].sku);
	db_array_end(&skus);
	if (skus.len == 2) {	/* every request was answered by its key */
		buf_free(&skus);
		return 0;
	}
	a->locked = db_run_prepared(a->c, &a->why, "locking stock rows", "orders_lock", 1,
	    (const char *[]){ skus.data });
	buf_free(&skus);
	if (a->locked == NULL)
		return -1;
	a->nstock = (size_t)PQntuples(a->locked);
	a->stock = xcalloc(a->nstock + 1, sizeof *a->stock);
	for (size_t k = 0; k < a->nstock; k++) {
		a->stock[k].sku = PQgetvalue(a->locked, (int)k, 0);
		a->stock[k].vendor = PQgetvalue(a->locked, (int)k, 1);
		a->stock[k].available = atoll(PQgetvalue(a->locked, (int)k, 2));
	}
	/* The server's collation ordered the locks; lookups here need strcmp order. */
	qsort(a->stock, a->nstock, sizeof *a->stock, by_stock);
	return 0;
}

/* The rows of one SKU in stock[0..nstock) (sorted): [*first, end). */
static size_t
stock_of(const struct locked_stock *stock, size_t nstock, const char *sku, size_t *first)
{
	size_t lo = 0, hi = nstock;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(stock[mid].sku, sku) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = lo;
	while (hi < nstock && strcmp(stock[hi].sku, sku) == 0)
		hi++;
	return hi;
}

size_t
orders_allocate(const struct order_request *rq, struct order_result *res, const size_t *same,
    size_t n, struct locked_stock *stock, size_t nstock, const char **vendor)
{
	size_t nplaced = 0;

	for (size_t i = 0; i < n; i++) {
		const struct order_request *q = &rq[i];
		struct locked_stock *best = NULL;
		size_t k, end;

		if (q->invalid != NULL || res[i].status != NULL || same[i] != i)
			continue;
		end = stock_of(stock, nstock, q->sku, &k);
		if (k == end) {
			reject(&res[i], q, "unknown_sku");
			continue;
		}
		for (; k < end; k++)
			if (stock[k].available >= q->quantity &&
			    (best == NULL || stock[k].available > best->available))
				best = &stock[k];
		if (best == NULL) {
			reject(&res[i], q, "insufficient_stock");
			continue;
		}
		best->available -= q->quantity;
		vendor[i] = best->vendor;
		nplaced++;
	}
	return nplaced;
}

static size_t
allocate(struct attempt *a)
{
	return orders_allocate(a->rq, a->res, a->same, a->n, a->stock, a->nstock, a->vendor);
}

/* Insert the allocated orders and reserve their stock; note which keys lost a race. */
static int
insert_orders(struct attempt *a, size_t nplaced, size_t *lost, size_t *nlost)
{
	struct buf sku = { 0 }, qty = { 0 }, vendor = { 0 }, key = { 0 };
	size_t *who, row = 0;
	PGresult *r;
	int rc = 0;

	*nlost = 0;
	if (nplaced == 0)
		return 0;
	who = xcalloc(nplaced, sizeof *who);
	db_array_begin(&sku), db_array_begin(&qty), db_array_begin(&vendor), db_array_begin(&key);
	for (size_t i = 0; i < a->n; i++) {
		if (a->vendor[i] == NULL)
			continue;
		who[row++] = i;
		db_array_text(&sku, a->rq[i].sku);
		db_array_bigint(&qty, a->rq[i].quantity);
		db_array_text(&vendor, a->vendor[i]);
		db_array_text(&key, a->rq[i].key);
	}
	r = db_run_prepared(a->c, &a->why, "inserting orders", "orders_insert", 4, (const char *[]){
	    db_array_end(&sku), db_array_end(&qty), db_array_end(&vendor), db_array_end(&key) });
	buf_free(&sku), buf_free(&qty), buf_free(&vendor), buf_free(&key);
	if (r == NULL) {
		rc = -1;
	} else if ((size_t)PQntuples(r) != nplaced) {
		char msg[96];

		snprintf(msg, sizeof msg, "inserting orders: %d rows for %zu orders",
		    PQntuples(r), nplaced);
		rc = inconsistent(a, msg);
		PQclear(r);
	} else if (PQgetvalue(r, 0, 2)[0] != 't') {
		/* Cannot happen while the rows are locked; refuse rather than oversell. */
		rc = inconsistent(a, "reserving stock: a locked row no longer covers its orders");
		PQclear(r);
	}
	if (rc < 0) {
		free(who);
		return rc;
	}
	for (row = 0; row < nplaced; row++) {
		size_t i = who[row];

		if (PQgetvalue(r, (int)row, 1)[0] == 't')
			placed(&a->res[i], &a->rq[i], atoll(PQgetvalue(r, (int)row, 0)),
			    a->rq[i].sku, a->rq[i].quantity, a->vendor[i], "pending");
		else
			lost[(*nlost)++] = i;
	}
	PQclear(r);
	free(who);
	return 0;
}

/* Later requests with a key already seen in this batch share the first's answer. */
static void
mark_repeats(struct attempt *a)
{
	for (size_t i = 0; i < a->n; i++) {
		a->same[i] = i;
		if (a->rq[i].invalid != NULL || a->rq[i].key == NULL)
			continue;
		for (size_t j = 0; j < i; j++)
			if (a->rq[j].invalid == NULL && a->rq[j].key != NULL &&
			    strcmp(a->rq[i].key, a->rq[j].key) == 0) {
				a->same[i] = a->same[j];
				break;
			}
	}
}

static void
copy_repeats(struct attempt *a)
{
	for (size_t i = 0; i < a->n; i++) {
		const struct order_result *o = &a->res[a->same[i]];

		if (a->same[i] == i)
			continue;
		/* The same key with another request earlier in the batch. */
		if (strcmp(a->rq[i].sku, a->rq[a->same[i]].sku) != 0 ||
		    a->rq[i].quantity != a->rq[a->same[i]].quantity) {
			reject(&a->res[i], &a->rq[i], "idempotency_key_reused");
			continue;
		}
		order_result_clear(&a->res[i]);
		a->res[i].order_id = o->order_id;
		a->res[i].sku = xstrdup(o->sku);
		a->res[i].quantity = o->quantity;
		a->res[i].has_quantity = o->has_quantity;
		a->res[i].vendor = xstrdup(o->vendor);
		a->res[i].status = xstrdup(o->status);
		a->res[i].error = o->error;
		a->res[i].key = xstrdup(a->rq[i].key);
		a->res[i].existing = o->status != NULL && strcmp(o->status, "rejected") != 0;
	}
}

/* Keyed, not yet answered, first of their key: the requests to look up. */
static size_t
keyed(const struct attempt *a, size_t *want)
{
	size_t m = 0;

	for (size_t i = 0; i < a->n; i++)
		if (a->rq[i].invalid == NULL && a->rq[i].key != NULL && a->same[i] == i)
			want[m++] = i;
	return m;
}

/* One try at the batch's transaction: 0 when committed, else -1 with a->why. */
static int
attempt_run(struct attempt *a, size_t *scratch)
{
	size_t nlost;

	if (db_command(a->c, &a->why, "starting a transaction",
	    "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL) < 0)
		return -1;
	if (find_keyed(a, scratch, keyed(a, scratch)) < 0)
		return -1;
	if (lock_stock(a) < 0)
		return -1;
	if (insert_orders(a, allocate(a), scratch, &nlost) < 0)
		return -1;
	/* Keys a concurrent batch committed while this one waited: answer with its orders. */
	if (find_keyed(a, scratch, nlost) < 0)
		return -1;
	for (size_t k = 0; k < nlost; k++)
		if (a->res[scratch[k]].status == NULL)
			return inconsistent(a, "idempotency key conflict without an order");
	a->commit_sent = 1;
	if (db_command(a->c, &a->why, "committing", "COMMIT", 0, NULL) < 0)
		return -1;
	copy_repeats(a);
	return 0;
}

static void
attempt_free(struct attempt *a)
{
	free(a->stock);
	a->stock = NULL;
	a->nstock = 0;
	PQclear(a->locked);
	a->locked = NULL;
}

/* Forget everything a failed attempt did: its transaction was rolled back. */
static void
attempt_reset(struct attempt *a)
{
	for (size_t i = 0; i < a->n; i++) {
		if (a->rq[i].invalid == NULL)
			order_result_clear(&a->res[i]);
		a->vendor[i] = NULL;
	}
	attempt_free(a);
	memset(&a->why, 0, sizeof a->why);
	a->commit_sent = 0;
}

static int
place_batch(struct attempt *a, size_t *scratch)
{
	struct backoff b = BACKOFF_DB_RETRY;

	for (int attempt = 1;; attempt++) {
		if (attempt_run(a, scratch) == 0)
			return ORDERS_OK;
		if (!a->why.lost && PQtransactionStatus(a->c) != PQTRANS_IDLE)
			PQclear(PQexec(a->c, "ROLLBACK"));
		if (a->why.lost) {
			warning("database: connection lost placing a batch of %zu requests: %s; %s",
			    a->n, a->why.msg, a->commit_sent ? "COMMIT was sent: it may have been"
			    " committed" : "none of it was committed");
			return a->commit_sent ? ORDERS_LOST : ORDERS_LOST_BEFORE_COMMIT;
		}
		if (!a->why.retryable || attempt == MAX_ATTEMPTS) {
			warning("database: placing a batch of %zu requests%s: %s; none of it was"
			    " committed", a->n, a->why.retryable ? ", still conflicting after"
			    " retries" : "", a->why.msg);
			return ORDERS_FAILED;
		}
		debugx("batch of %zu requests: %s; retrying", a->n, a->why.msg);
		attempt_reset(a);
		sleep_seconds(backoff_next(&b), NULL);
	}
}

int
orders_place(PGconn *c, const struct order_request *rq, size_t n, struct order_result *res)
{
	struct attempt a = { .c = c, .rq = rq, .res = res, .n = n };
	size_t *scratch;
	int rc = ORDERS_OK, todo = 0;

	memset(res, 0, n * sizeof *res);
	a.same = xcalloc(n + 1, sizeof *a.same);
	a.vendor = xcalloc(n + 1, sizeof *a.vendor);
	scratch = xcalloc(n + 1, sizeof *scratch);
	for (size_t i = 0; i < n; i++) {
		if (rq[i].invalid != NULL)
			reject(&res[i], &rq[i], "invalid_request");
		else
			todo = 1;
	}
	mark_repeats(&a);
	if (todo)
		rc = place_batch(&a, scratch);
	attempt_free(&a);
	if (rc != ORDERS_OK)
		for (size_t i = 0; i < n; i++)
			order_result_clear(&res[i]);
	free(a.same);
	free(a.vendor);
	free(scratch);
	return rc;
}
