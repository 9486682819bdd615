/* orders-units: unit tests of orders_allocate, db_retryable, the queue names and db arrays. */
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/db.h"
#include "lib/log.h"
#include "lib/orders-internal.h"
#include "lib/policy.h"
#include "tap.h"

#define MAX_BATCH 8

/* A batch as orders_place hands it to the allocation: no request answered yet, no repeats. */
struct fixture {
	struct order_request rq[MAX_BATCH];
	struct order_result res[MAX_BATCH];
	size_t same[MAX_BATCH];
	const char *vendor[MAX_BATCH];
	size_t n;
};

static void
add(struct fixture *fx, const char *sku, long long quantity)
{
	struct order_request *rq = &fx->rq[fx->n];

	memset(rq, 0, sizeof *rq);
	rq->sku = sku;
	rq->quantity = quantity;
	rq->has_quantity = 1;
	fx->same[fx->n] = fx->n;
	fx->n++;
}

static size_t
allocate(struct fixture *fx, struct locked_stock *stock, size_t nstock)
{
	return orders_allocate(fx->rq, fx->res, fx->same, fx->n, stock, nstock, fx->vendor);
}

static void
clear(struct fixture *fx)
{
	for (size_t i = 0; i < MAX_BATCH; i++)
		order_result_clear(&fx->res[i]);
	memset(fx, 0, sizeof *fx);
}

static int
vendor_is(const struct fixture *fx, size_t i, const char *vendor)
{
	return fx->vendor[i] != NULL && strcmp(fx->vendor[i], vendor) == 0 &&
	    fx->res[i].status == NULL;
}

static int
rejected(const struct fixture *fx, size_t i, const char *error)
{
	return fx->vendor[i] == NULL && fx->res[i].error != NULL &&
	    strcmp(fx->res[i].error, error) == 0 && strcmp(fx->res[i].status, "rejected") == 0;
}

static void
test_allocate(void)
{
	static struct fixture fx;

	{
		struct locked_stock s[] = { { "A", "acme", 5 }, { "A", "globex", 8 } };

		add(&fx, "A", 3);
		ok(allocate(&fx, s, 2) == 1 && vendor_is(&fx, 0, "globex") && s[1].available == 5 &&
		    s[0].available == 5, "an order goes to the vendor with the most left, which is"
		    " lowered by it");
		clear(&fx);
	}
	{
		struct locked_stock s[] = { { "A", "acme", 5 }, { "A", "globex", 4 } };

		add(&fx, "A", 7);
		ok(allocate(&fx, s, 2) == 0 && rejected(&fx, 0, "insufficient_stock") &&
		    s[0].available == 5 && s[1].available == 4,
		    "an order no one vendor covers is insufficient_stock, never split");
		ok(strcmp(fx.res[0].sku, "A") == 0 && fx.res[0].quantity == 7,
		    "the rejection echoes the request");
		clear(&fx);
	}
	{
		struct locked_stock s[] = { { "A", "acme", 5 }, { "A", "globex", 4 } };

		add(&fx, "A", 4);
		add(&fx, "A", 4);
		add(&fx, "A", 1);
		add(&fx, "A", 1);
		ok(allocate(&fx, s, 2) == 3 && vendor_is(&fx, 0, "acme") &&
		    vendor_is(&fx, 1, "globex") && vendor_is(&fx, 2, "acme") &&
		    rejected(&fx, 3, "insufficient_stock"),
		    "orders on one SKU take stock in input order, each from what the earlier left");
		ok(s[0].available == 0 && s[1].available == 0, "every unit taken is counted once");
		clear(&fx);
	}
	{
		struct locked_stock s[] = { { "A", "acme", 5 }, { "A", "globex", 5 } };

		add(&fx, "A", 1);
		ok(allocate(&fx, s, 2) == 1 && vendor_is(&fx, 0, "acme"),
		    "a tie goes to the first vendor in (sku, vendor) order");
		clear(&fx);
	}
	{
		struct locked_stock s[] = {
			{ "A", "acme", 2 }, { "C", "acme", 9 }, { "C", "zeta", 1 },
		};

		add(&fx, "B", 1);
		add(&fx, "C", 2);
		add(&fx, "A", 2);
		add(&fx, "D", 1);
		ok(allocate(&fx, s, 3) == 2 && rejected(&fx, 0, "unknown_sku") &&
		    vendor_is(&fx, 1, "acme") && vendor_is(&fx, 2, "acme") &&
		    rejected(&fx, 3, "unknown_sku") && s[0].available == 0 && s[1].available == 7,
		    "a SKU without a locked row is unknown_sku; each SKU finds its own rows");
		clear(&fx);
	}
	{
		struct locked_stock s[] = { { "A", "acme", 10 } };

		add(&fx, "A", 3);
		add(&fx, "A", 3);	/* repeats request 0's key */
		add(&fx, "A", 3);	/* answered already, by its key */
		add(&fx, "A", 3);	/* invalid */
		fx.same[1] = 0;
		fx.res[2].status = strdup("pending");
		fx.rq[3].invalid = "\"quantity\" must be a whole number";
		ok(allocate(&fx, s, 1) == 1 && vendor_is(&fx, 0, "acme") && fx.vendor[1] == NULL &&
		    fx.res[1].status == NULL && fx.vendor[2] == NULL &&
		    strcmp(fx.res[2].status, "pending") == 0 && fx.vendor[3] == NULL &&
		    fx.res[3].status == NULL && s[0].available == 7,
		    "repeats, requests answered by their key and invalid ones take nothing");
		clear(&fx);
	}
	{
		add(&fx, "A", 1);
		ok(allocate(&fx, NULL, 0) == 0 && rejected(&fx, 0, "unknown_sku"),
		    "with no locked rows at all every SKU is unknown");
		clear(&fx);
	}
}

static void
test_retryable(void)
{
	ok(db_retryable("40P01"), "a deadlock is retryable");
	ok(db_retryable("40001"), "a serialization failure is retryable");
	ok(!db_retryable("40002"), "an integrity violation at commit (class 40) is not");
	ok(!db_retryable("23505"), "a unique violation is not");
	ok(!db_retryable("") && !db_retryable(NULL), "no SQLSTATE (connection gone) is not");
}

static void
test_failure_status(void)
{
	struct db_failure f;

	memset(&f, 0, sizeof f);
	f.lost = 1;
	ok(db_exit_status(&f) == EXIT_UNAVAILABLE && EXIT_UNAVAILABLE == 69,
	    "a lost database exits 69");
	f.lost = 0;
	ok(db_exit_status(&f) == EXIT_SQL && EXIT_SQL == 70, "a refused statement exits 70");
	ok(db_result(NULL, &f, "testing", NULL) == NULL && f.lost && !f.retryable &&
	    f.sqlstate[0] == '\0' && strncmp(f.msg, "testing: ", 9) == 0,
	    "a call that failed without a result is classified as a lost connection");
}

static void
test_queue_names(void)
{
	char *dead = queue_dead_name("orders"), *retry = queue_retry_name("orders", 3000);

	ok(strcmp(dead, "orders.dead") == 0, "the dead-letter queue of orders is orders.dead");
	ok(strcmp(retry, "orders.retry.3000") == 0,
	    "the retry queue of orders at 3000 ms is orders.retry.3000");
	free(dead);
	free(retry);
}

static void
test_arrays(void)
{
	struct buf b = { 0 };

	db_array_begin(&b);
	ok(strcmp(db_array_end(&b), "{}") == 0, "an empty array is {}");
	db_array_begin(&b);
	db_array_text(&b, "plain");
	db_array_text(&b, "say \"hi\"");
	db_array_text(&b, "back\\slash");
	db_array_text(&b, NULL);
	db_array_text(&b, "");
	db_array_text(&b, "NULL");
	ok(strcmp(db_array_end(&b),
	    "{\"plain\",\"say \\\"hi\\\"\",\"back\\\\slash\",NULL,\"\",\"NULL\"}") == 0,
	    "text elements are quoted with \" and \\ escaped, NULL unquoted, \"NULL\" quoted: %s",
	    b.data);
	db_array_begin(&b);
	db_array_bigint(&b, 1);
	db_array_bigint(&b, -2);
	db_array_bigint(&b, 9007199254740991LL);
	ok(strcmp(db_array_end(&b), "{1,-2,9007199254740991}") == 0,
	    "bigint elements, and a reused buffer starts again: %s", b.data);
	db_array_begin(&b);
	db_array_text(&b, "{a,b}");
	ok(strcmp(db_array_end(&b), "{\"{a,b}\"}") == 0, "braces and commas stay inside quotes");
	buf_free(&b);
}

int
main(int argc, char **argv)
{
	(void)argc;
	log_init(argv[0]);
	test_allocate();
	test_retryable();
	test_failure_status();
	test_queue_names();
	test_arrays();
	return tap_done();
}
