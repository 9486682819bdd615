/* stock-apply: apply vendor-fetch's stock lines to PostgreSQL, one transaction per vendor snapshot. */
#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/db.h"
#include "lib/hash.h"
#include "lib/jsonl.h"
#include "lib/jsonslab.h"
#include "lib/log.h"
#include "lib/num.h"
#include "lib/policy.h"
#include "lib/retry.h"
#include "lib/validate.h"
#include "lib/xalloc.h"

/*
 * Item lines are streamed with COPY into a session-local staging table as
 * they arrive (any number of vendors, interleaved or not); a vendor's
 * snapshot line then applies that vendor's staged rows in one transaction.
 * A vendor the table does not know yet is loaded straight into vendor_stock
 * instead, by COPY inside a transaction held open until its snapshot line:
 * that is as fast as PostgreSQL can take rows. While such a load is open,
 * other vendors' lines are staged on a second connection. Nothing but the
 * COPY buffers and one small record per vendor is held here.
 *
 * Staged rows are committed as they are copied, so a snapshot's transaction
 * that fails with a deadlock or serialization failure (db_retryable) is run
 * again from them. A direct load cannot be: its rows went in with the
 * transaction that failed, and only the input had them.
 *
 * Every field is checked here (lib/validate) before it is copied, so a bad
 * line never becomes a database error. A statement the database still
 * refuses costs only the vendors whose rows it carried: their snapshots are
 * rolled back and reported with their line ranges, the run goes on, and it
 * exits 70 at the end. Only a lost connection stops the run (69).
 */

#define COPY_CHUNK (256 * 1024)
/* Past this many SKUs a vendor's set is dropped (memory) and SQL dedupes. */
#define SKUSET_MAX (2L * 1024 * 1024)
#define MAX_QUANTITY 1000000000000LL
/* price_cents is a bigint, given as a JSON number: whole and exactly held by a double. */
#define MAX_PRICE 9007199254740992LL
/* Tries of a snapshot's transaction while it keeps failing with a retryable error. */
#define APPLY_ATTEMPTS 5
/*
 * Past this many SKUs of one vendor (its rows in the table, then the new
 * ones its snapshot adds) the vendor's items are all staged and merged in
 * SQL: the table of them costs about 40 bytes a SKU.
 */
#define KNOWN_MAX 500000L
/* Unlisted SKUs are looked up, and withdrawn, this many at a time. */
#define WITHDRAW_BATCH "10000"

/*
 * The 64-bit hashes of a snapshot's SKUs (lib/hash, a set). When none
 * repeats, the snapshot merges without a sort and the withdrawal can be
 * skipped by counting. A repeat, or a set too large, falls back to SQL.
 */
struct skuset {
	struct hash hashes;
	int unsure;	/* a SKU may repeat: dedupe in SQL */
};

/*
 * The rows the table had for a vendor when its snapshot began, read under a
 * session advisory lock held until the snapshot is applied, so no other
 * stock-apply changes them meanwhile. Per SKU: a second hash that tells
 * apart SKUs of the same lib/hash hash (a SKU is known by 128 bits), the
 * digest stored with its figures (0: none), whether it had stock and
 * whether the snapshot listed it. An item whose digest is the stored one is
 * not staged at all: the database never sees it. A SKU new to the table gets
 * an entry (digest 0) as it comes, so a SKU listed twice is still seen. Rows
 * with stock that the snapshot did not list are then counted here, so a
 * snapshot that leaves none out costs no query for its withdrawal.
 */
struct known_row {
	uint64_t check;
	uint64_t digest;
};

enum { KNOWN_LISTED = 1, KNOWN_STOCKED = 2 };

struct known {
	int on;			/* loaded: items are compared here */
	int locked;		/* the vendor's session lock is held */
	int untracked;		/* new SKUs past KNOWN_MAX were staged without an entry */
	long unmapped;		/* rows with stock whose SKU no snapshot can list (too long) */
	struct hash map;	/* hash_string(sku) -> index in rows */
	struct known_row *rows;
	unsigned char *flags;	/* per row: KNOWN_LISTED, KNOWN_STOCKED */
	size_t len, cap;
};

/*
 * A direct load goes in COPY's binary format: PostgreSQL then parses no
 * fetched_at per row (timestamptz input was a sixth of the load's server
 * time), no number and no escape. A fetched_at in another form than
 * vendor-fetch's (UTC, at most microseconds) is loaded as text instead.
 */
enum copying { NOT_COPYING, INTO_STAGING, INTO_STOCK, INTO_STOCK_TEXT };

/* A database session, its staging table and the COPY it has open. */
struct conn {
	PGconn *db;
	enum copying copying;
	struct vendor *loading;	/* the new vendor loaded straight into vendor_stock */
	int open;		/* vendors whose lines went here, not yet applied */
	char *buf;		/* COPY data not yet sent */
	size_t len;
};

struct vendor {
	char *name;
	struct conn *conn;	/* where its lines go; NULL between snapshots */
	char *fetched_at;	/* from the vendor's lines; NULL if none carried one */
	int fetched_binary;	/* fetched_us holds it for a binary COPY */
	int64_t fetched_us;	/* microseconds since 2000-01-01 UTC (binary timestamptz) */
	long staged;		/* item lines staged since its last snapshot */
	int tainted;		/* an invalid line may have been one of its items */
	long first_line, last_line;	/* its lines since its last snapshot (0: none) */
	char *failure;		/* the database refused its snapshot: why (then its lines are dropped) */
	long positive;		/* its items with quantity > 0 */
	long copied;		/* items sent to the database (the rest were unchanged) */
	struct skuset seen;	/* to know the snapshot has no SKU twice (without `known`) */
	struct known known;
	/* Its snapshot's transaction, decided at its closing line: */
	int complete;		/* withdraw what it does not list */
	char ts[64];		/* its fetched_at, or -infinity */
	int by_name;		/* `known` was loaded: withdraw and settle by name */
	int left_out;		/* by_name: rows with stock were left out (`known` is kept for them) */
	char *settle;		/* by_name: the SKUs with orders to settle (array literal), or NULL */
};

static struct {
	struct conn main;
	struct conn side;	/* stages other vendors while main loads one */
	long seq;
	struct vendor **v;
	size_t nv;
	long applied_vendors;
	int bad_lines;
	int refused;		/* the database refused some vendor's snapshot */
	/*
	 * The vendor whose MERGE runs on its connection while the next vendor's
	 * lines are read and staged on the other; its transaction is finished
	 * (finish_pending) before anything else uses that connection and
	 * before any other snapshot is applied, so summaries keep their order.
	 */
	struct vendor *pending;
} st;

static const char *CREATE_STAGING =
	"CREATE TEMP TABLE staging ("
	" vendor text NOT NULL, sku text NOT NULL, quantity bigint NOT NULL,"
	" name text, price_cents bigint, extra jsonb, digest bigint, seq bigint NOT NULL)";

/*
 * MERGE joins the snapshot against the table instead of probing per row as
 * INSERT ... ON CONFLICT does (about twice as fast on large snapshots). Only
 * stock-apply inserts rows, one vendor at a time (advisory lock), so MERGE's
 * lack of conflict handling for concurrent inserts does not matter here.
 * Rows whose figures did not change are not rewritten.
 */
#define MERGE_FROM(source) \
	"MERGE INTO vendor_stock s USING (" source ") g" \
	" ON s.sku = g.sku AND s.vendor = $1" \
	" WHEN MATCHED AND (s.quantity, s.name, s.price_cents, s.extra, s.digest)" \
	"   IS DISTINCT FROM (g.quantity, g.name, g.price_cents, g.extra, g.digest) THEN" \
	"   UPDATE SET quantity = g.quantity, name = g.name, price_cents = g.price_cents," \
	"   extra = g.extra, digest = g.digest, fetched_at = $2::timestamptz, updated_at = now()" \
	" WHEN NOT MATCHED THEN INSERT (vendor, sku, quantity, name, price_cents, extra, digest," \
	"   fetched_at) VALUES ($1, g.sku, g.quantity, g.name, g.price_cents, g.extra, g.digest," \
	"   $2::timestamptz)"

static const char *COPY_INTO[] = {
	[INTO_STAGING] = "COPY staging FROM STDIN",
	[INTO_STOCK] = "COPY vendor_stock (vendor, sku, quantity, name, price_cents, extra, digest,"
	    " fetched_at) FROM STDIN (FORMAT binary)",
	[INTO_STOCK_TEXT] = "COPY vendor_stock (vendor, sku, quantity, name, price_cents, extra, digest,"
	    " fetched_at) FROM STDIN",
};

static const char *MERGE_UNIQUE = MERGE_FROM("SELECT * FROM staging WHERE vendor = $1");
/* When a SKU came twice in one snapshot, its last line wins. */
static const char *MERGE_DEDUP = MERGE_FROM(
	"SELECT DISTINCT ON (sku) * FROM staging WHERE vendor = $1 ORDER BY sku, seq DESC");

/* Two syncs of one vendor at once would interleave their snapshots. */
static const char *TRY_LOCK_VENDOR =
	"SELECT pg_try_advisory_xact_lock(hashtext('stock-apply'), hashtext($1))";
static const char *LOCK_VENDOR =
	"SELECT pg_advisory_xact_lock(hashtext('stock-apply'), hashtext($1))";
/* The same lock for the session: held from reading a vendor's rows to applying its snapshot. */
static const char *TRY_LOCK_VENDOR_SESSION =
	"SELECT pg_try_advisory_lock(hashtext('stock-apply'), hashtext($1))";
static const char *UNLOCK_VENDOR_SESSION =
	"SELECT pg_advisory_unlock(hashtext('stock-apply'), hashtext($1))";
/* COPY takes no parameters: the vendor's name is a quoted literal (%s). */
static const char *READ_KNOWN =
	"COPY (SELECT sku, digest, quantity > 0 FROM vendor_stock WHERE vendor = %s) TO STDOUT";

/* Whether the table knows the vendor; the first SKU usually answers by index. */
static const char *HAS_STOCK =
	"SELECT EXISTS (SELECT 1 FROM vendor_stock WHERE sku = $2 AND vendor = $1)"
	" OR EXISTS (SELECT 1 FROM vendor_stock WHERE vendor = $1)";

static const char *COUNT_LISTED =
	"SELECT count(*) FROM vendor_stock WHERE vendor = $1 AND quantity > 0";

/* A complete snapshot is authoritative: what it no longer lists has none left. */
static const char *WITHDRAW =
	"UPDATE vendor_stock s SET quantity = 0, digest = NULL, updated_at = now()"
	" WHERE s.vendor = $1 AND s.quantity > 0"
	" AND NOT EXISTS (SELECT 1 FROM staging g WHERE g.vendor = $1 AND g.sku = s.sku)";

/*
 * With `known`, unstaged items are not in staging: the SKUs with stock that
 * staging does not list go through a cursor, and those `known` did not see
 * listed are withdrawn by name.
 */
static const char *DECLARE_STOCKED =
	"DECLARE stocked NO SCROLL CURSOR FOR SELECT sku FROM vendor_stock s"
	" WHERE s.vendor = $1 AND s.quantity > 0";
static const char *DECLARE_STOCKED_UNSTAGED =
	"DECLARE stocked NO SCROLL CURSOR FOR SELECT sku FROM vendor_stock s"
	" WHERE s.vendor = $1 AND s.quantity > 0"
	" AND NOT EXISTS (SELECT 1 FROM staging g WHERE g.vendor = $1 AND g.sku = s.sku)";
static const char *WITHDRAW_NAMED =
	"UPDATE vendor_stock SET quantity = 0, digest = NULL, updated_at = now()"
	" WHERE vendor = $1 AND sku = ANY ($2::text[]) AND quantity > 0";

/*
 * Successes the vendor had already applied when this snapshot was taken are
 * in its quantities now, so they stop being held. Only SKUs the snapshot
 * listed are settled: for the others the old figure still counts them.
 */
static const char *SETTLE =
	"WITH done AS ("
	"  UPDATE orders SET settled = true"
	"  WHERE vendor = $1 AND status = 'success' AND NOT settled"
	"  AND fulfilled_at <= $2::timestamptz"
	"  AND sku IN (SELECT sku FROM staging WHERE vendor = $1)"
	"  RETURNING sku, quantity),"
	" per_sku AS (SELECT sku, sum(quantity) AS q FROM done GROUP BY sku)"
	" UPDATE vendor_stock v SET reserved = v.reserved - per_sku.q"
	" FROM per_sku WHERE v.vendor = $1 AND v.sku = per_sku.sku";

/*
 * With `known`, the SKUs listed but not staged are named ($3): those of the
 * orders to settle (UNSETTLED) that `known` saw listed.
 */
static const char *UNSETTLED =
	"SELECT DISTINCT sku FROM orders WHERE vendor = $1 AND status = 'success' AND NOT settled"
	" AND fulfilled_at <= $2::timestamptz";
static const char *SETTLE_NAMED =
	"WITH done AS ("
	"  UPDATE orders SET settled = true"
	"  WHERE vendor = $1 AND status = 'success' AND NOT settled"
	"  AND fulfilled_at <= $2::timestamptz"
	"  AND (sku = ANY ($3::text[]) OR sku IN (SELECT sku FROM staging WHERE vendor = $1))"
	"  RETURNING sku, quantity),"
	" per_sku AS (SELECT sku, sum(quantity) AS q FROM done GROUP BY sku)"
	" UPDATE vendor_stock v SET reserved = v.reserved - per_sku.q"
	" FROM per_sku WHERE v.vendor = $1 AND v.sku = per_sku.sku";

static void
skuset_free(struct skuset *set)
{
	hash_free(&set->hashes);
	set->unsure = 0;
}

static void
skuset_add(struct skuset *set, const char *sku)
{
	if (set->unsure)
		return;
	if ((long)set->hashes.len >= SKUSET_MAX) {
		hash_free(&set->hashes);
		set->unsure = 1;
		return;
	}
	/* The same hash is taken for the same SKU: SQL then tells them apart. */
	if (hash_add(&set->hashes, hash_string(sku), NULL, NULL, 0, NULL) != 0)
		set->unsure = 1;
}

/* A finaliser (MurmurHash3's): every bit of h reaches every bit of the result. */
static uint64_t
mix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 33);
}

/* FNV-1a over n bytes, from h: a change of one byte always changes the result. */
static uint64_t
fold_bytes(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	while (n-- > 0)
		h = (h ^ *b++) * 0x100000001b3ULL;
	return h;
}

/* A string with its length (so fields cannot run into each other), or NULL as no length. */
static uint64_t
fold_string(uint64_t h, const char *s)
{
	uint64_t n = s != NULL ? strlen(s) : UINT64_MAX;

	h = fold_bytes(h, &n, sizeof n);
	return s != NULL ? fold_bytes(h, s, n) : h;
}

/* The second hash of a SKU: with hash_string's, 128 bits tell SKUs apart. */
static uint64_t
sku_check(const char *sku)
{
	return mix64(fold_string(0x9e3779b97f4a7c15ULL, sku));
}

/* The digest of an item's figures as stored in vendor_stock.digest; never 0 (none). */
static uint64_t
item_digest(const char *sku, long long quantity, const char *name, int has_price,
    long long price, const char *extra)
{
	uint64_t h = 0x6a09e667f3bcc908ULL, num[3] = { (uint64_t)quantity, (uint64_t)has_price,
		has_price ? (uint64_t)price : 0 };

	h = fold_string(h, sku);
	h = fold_bytes(h, num, sizeof num);
	h = fold_string(h, name);
	h = mix64(fold_string(h, extra));
	return h ? h : 1;
}

static void
known_free(struct known *k)
{
	hash_free(&k->map);
	free(k->rows);
	free(k->flags);
	*k = (struct known){ .map = HASH_MAP };
}

/* What known_match is given: the table and the second hash looked for. */
struct known_key {
	const struct known *k;
	uint64_t check;
};

static int
known_match(const void *ctx, size_t val)
{
	const struct known_key *key = ctx;

	return key->k->rows[val].check == key->check;
}

/* The entry of a SKU, by its two hashes: 0 with its index in *i, or -1. */
static int
known_find(const struct known *k, uint64_t h, uint64_t check, size_t *i)
{
	struct known_key key = { k, check };

	return hash_find(&k->map, h, known_match, &key, i);
}

/* Add a SKU not in k (the caller looked): 0 with its index in *i, or -1 past KNOWN_MAX. */
static int
known_add(struct known *k, uint64_t h, uint64_t check, uint64_t digest, int flags, size_t *i)
{
	struct known_key key = { k, check };

	if ((long)k->len >= KNOWN_MAX)
		return -1;
	if (k->len == k->cap) {
		k->cap = k->cap ? 2 * k->cap : 1024;
		k->rows = xreallocarray(k->rows, k->cap, sizeof *k->rows);
		k->flags = xreallocarray(k->flags, k->cap, 1);
	}
	k->rows[k->len] = (struct known_row){ check, digest };
	k->flags[k->len] = (unsigned char)flags;
	hash_add(&k->map, h, known_match, &key, k->len, NULL);
	*i = k->len++;
	return 0;
}

/* Whether the snapshot listed the SKU, as far as `known` tells (staged SKUs may not be in it). */
static int
known_listed(const struct known *k, const char *sku)
{
	size_t i;

	return known_find(k, hash_string(sku), sku_check(sku), &i) == 0 &&
	    (k->flags[i] & KNOWN_LISTED);
}

/* Whether a row with stock was left out of the snapshot (then it is looked for in SQL). */
static int
known_left_out(const struct known *k)
{
	if (k->unmapped > 0)
		return 1;
	for (size_t i = 0; i < k->len; i++)
		if ((k->flags[i] & (KNOWN_LISTED | KNOWN_STOCKED)) == KNOWN_STOCKED)
			return 1;
	return 0;
}

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = { "[--max-line BYTES] < vendor-fetch-lines", NULL };
	static const struct usage_option options[] = {
		{ "--max-line BYTES", "the longest input line taken (default 1048576)" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

static struct vendor *
vendor_get(const char *name)
{
	struct vendor *nv;

	for (size_t i = 0; i < st.nv; i++)
		if (strcmp(st.v[i]->name, name) == 0)
			return st.v[i];
	/* Each vendor stays where it is: a connection's `loading` points at one. */
	st.v = xreallocarray(st.v, st.nv + 1, sizeof *st.v);
	nv = xcalloc(1, sizeof *nv);
	nv->name = xstrdup(name);
	return st.v[st.nv++] = nv;
}

/*
 * A timestamp of vendor-fetch's form, YYYY-MM-DDTHH:MM:SS[.ffffff]Z (already
 * valid: validate_timestamp), as PostgreSQL's binary timestamptz: 0 with the
 * microseconds since 2000-01-01 UTC in *us, or -1 for any other form.
 */
static int
binary_timestamp(const char *s, int64_t *us)
{
	int y, mo, d, h, mi, sec, n = 0, len = 0;
	long frac = 0;
	int64_t days;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &len) != 6 ||
	    len != 19 || sec > 59)
		return -1;
	s += len;
	if (*s == '.')
		while (*++s >= '0' && *s <= '9' && n < 7)
			frac = frac * 10 + (*s - '0'), n++;
	if (n > 6 || strcmp(s, "Z") != 0)
		return -1;
	while (n++ < 6)
		frac *= 10;
	/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
	y -= mo <= 2;
	{
		int64_t era = (y >= 0 ? y : y - 399) / 400, yoe = y - era * 400;
		int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;

		days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
	}
	days -= 10957;	/* 1970-01-01 to 2000-01-01 */
	*us = ((days * 24 + h) * 60 + mi) * 60 * INT64_C(1000000) + sec * INT64_C(1000000) + frac;
	return 0;
}

static void
set_fetched_at(struct vendor *v, const char *ts)
{
	if (v->fetched_at == NULL && ts == NULL && !v->fetched_binary) {
		v->fetched_binary = 1;	/* -infinity */
		v->fetched_us = INT64_MIN;
	}
	if (ts == NULL || (v->fetched_at != NULL && strcmp(v->fetched_at, ts) == 0))
		return;
	free(v->fetched_at);
	v->fetched_at = xstrdup(ts);
	v->fetched_binary = binary_timestamp(ts, &v->fetched_us) == 0;
}

/*
 * A statement failed for good: say what is and is not in the database, then
 * exit 69 if it is gone, 70 if it refused.
 */
static void __attribute__((noreturn))
die_uncommitted(const struct db_failure *f)
{
	db_die(f, "%ld vendor snapshot(s) were committed before this; none in progress was",
	    st.applied_vendors);
}

/* A statement outside a snapshot's transaction: its result, or exit. */
static PGresult *
run_or_die(struct conn *c, const char *what, const char *sql, int n, const char *const *params)
{
	struct db_failure f;
	PGresult *r = db_run(c->db, &f, what, sql, n, params);

	if (r == NULL)
		die_uncommitted(&f);
	return r;
}

/* A libpq COPY call failed (no result): classify as any statement, and exit. */
static void __attribute__((noreturn))
copy_failed(struct conn *c, const char *what)
{
	struct db_failure f;

	db_result(c->db, &f, what, NULL);
	die_uncommitted(&f);
}

static void
copy_send(struct conn *c)
{
	if (c->len > 0 && PQputCopyData(c->db, c->buf, (int)c->len) != 1)
		copy_failed(c, "streaming stock lines (COPY)");
	c->len = 0;
}

static void
put(struct conn *c, const char *s, size_t n)
{
	if (c->len + n > COPY_CHUNK)
		copy_send(c);
	if (n > COPY_CHUNK) {
		if (PQputCopyData(c->db, s, (int)n) != 1)
			copy_failed(c, "streaming stock lines (COPY)");
		return;
	}
	memcpy(c->buf + c->len, s, n);
	c->len += n;
}

/*
 * The database refused a statement on c (not a lost connection: that exits
 * 69): roll back what c had open, and fail every vendor whose lines went to
 * c since their last snapshot. The rows they had staged may be only part of
 * what they sent, so none of it is applied; each is reported at its
 * snapshot line (or at the end) with its line range.
 */
static void
conn_refused(struct conn *c, const struct db_failure *f)
{
	if (f->lost)
		die_uncommitted(f);
	if (PQtransactionStatus(c->db) != PQTRANS_IDLE)
		PQclear(PQexec(c->db, "ROLLBACK"));
	c->copying = NOT_COPYING;
	c->len = 0;
	c->loading = NULL;
	for (size_t i = 0; i < st.nv; i++)
		if (st.v[i]->conn == c && st.v[i]->failure == NULL)
			st.v[i]->failure = xstrdup(f->msg);
}

/* End c's COPY, if any. A refused COPY fails the vendors it carried (conn_refused). */
static void
copy_end(struct conn *c)
{
	struct db_failure f;
	PGresult *r;
	int ok;

	if (c->copying == NOT_COPYING)
		return;
	if (c->copying == INTO_STOCK)
		put(c, "\377\377", 2);	/* the binary format's trailer: a field count of -1 */
	copy_send(c);
	if (PQputCopyEnd(c->db, NULL) != 1)
		copy_failed(c, "ending COPY");
	r = PQgetResult(c->db);
	if (!(ok = PQresultStatus(r) == PGRES_COMMAND_OK))
		db_result(c->db, &f, c->copying != INTO_STAGING ? "loading stock lines" :
		    "staging stock lines", r);
	else
		PQclear(r);
	while ((r = PQgetResult(c->db)) != NULL)
		PQclear(r);
	c->copying = NOT_COPYING;
	if (!ok)
		conn_refused(c, &f);
}

/* Have a COPY into `into` open on c, ending one into the other table. */
static void
copy_begin(struct conn *c, enum copying into)
{
	if (c->copying == into)
		return;
	copy_end(c);
	PQclear(run_or_die(c, "starting COPY", COPY_INTO[into], 0, NULL));
	c->copying = into;
	/* The binary format's header: signature, flags, no extension. */
	if (into == INTO_STOCK)
		put(c, "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", 19);
}

/* One COPY text-format field: backslash, tab, newline and CR are escaped. */
static void
put_field(struct conn *c, const char *s, char sep)
{
	if (s == NULL) {
		put(c, "\\N", 2);
	} else {
		for (size_t n; *s; s += n) {
			const char *esc = NULL;

			/* The run of bytes that need no escape goes in one piece. */
			if ((n = strcspn(s, "\\\t\n\r")) > 0) {
				put(c, s, n);
				continue;
			}
			switch (*s) {
			case '\\': esc = "\\\\"; break;
			case '\t': esc = "\\t"; break;
			case '\n': esc = "\\n"; break;
			case '\r': esc = "\\r"; break;
			}
			put(c, esc, 2);
			n = 1;
		}
	}
	put(c, &sep, 1);
}

/* A number and its separator (snprintf cost a tenth of the time per line). */
static void
put_number(struct conn *c, long long n, char sep)
{
	char num[32], *p = num + sizeof num;
	unsigned long long u = n < 0 ? 0 - (unsigned long long)n : (unsigned long long)n;

	*--p = sep;
	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) > 0);
	if (n < 0)
		*--p = '-';
	put(c, p, (size_t)(num + sizeof num - p));
}

/* Binary COPY: a field's length (-1: NULL), then its bytes. */
static void
put_be32(struct conn *c, int32_t n)
{
	unsigned char b[4] = { (unsigned char)((uint32_t)n >> 24), (unsigned char)((uint32_t)n >> 16),
		(unsigned char)((uint32_t)n >> 8), (unsigned char)n };

	put(c, (const char *)b, 4);
}

static void
put_bin_text(struct conn *c, const char *s)
{
	size_t n;

	if (s == NULL) {
		put_be32(c, -1);
		return;
	}
	n = strlen(s);
	put_be32(c, (int32_t)n);
	put(c, s, n);
}

static void
put_bin_int8(struct conn *c, int64_t v)
{
	uint64_t u = (uint64_t)v;
	unsigned char b[12] = { 0, 0, 0, 8 };

	for (int i = 0; i < 8; i++)
		b[4 + i] = (unsigned char)(u >> (56 - 8 * i));
	put(c, (const char *)b, sizeof b);
}

/* jsonb's binary form: a version byte (1), then the text. */
static void
put_bin_jsonb(struct conn *c, const char *s)
{
	size_t n;

	if (s == NULL) {
		put_be32(c, -1);
		return;
	}
	n = strlen(s);
	put_be32(c, (int32_t)(n + 1));
	put(c, "\1", 1);
	put(c, s, n);
}

static void
conn_open(struct conn *c)
{
	c->db = db_connect_or_die(st.applied_vendors ? "the snapshots summarised were committed"
	    : "no stock was applied");
	c->buf = xmalloc(COPY_CHUNK);
	PQclear(run_or_die(c, "creating the staging table", CREATE_STAGING, 0, NULL));
	/* Large snapshots sort and hash in memory rather than on disk. */
	PQclear(run_or_die(c, "setting work_mem", "SET work_mem = '64MB'", 0, NULL));
	/* ANALYZE of staging samples a few hundred rows: enough to size a join. */
	PQclear(run_or_die(c, "setting default_statistics_target",
	    "SET default_statistics_target = 1", 0, NULL));
}

static void
conn_close(struct conn *c)
{
	free(c->buf);
	if (c->db != NULL)
		PQfinish(c->db);
}

/* A one-row, one-column boolean answer. */
static int
run_bool(struct conn *c, const char *what, const char *sql, int n, const char *const *params)
{
	PGresult *r = run_or_die(c, what, sql, n, params);
	int yes = strcmp(PQgetvalue(r, 0, 0), "t") == 0;

	PQclear(r);
	return yes;
}

/*
 * Begin loading a vendor straight into vendor_stock if the table has no row
 * of it: its transaction, holding the vendor's lock, stays open until the
 * snapshot line. If the vendor has rows, or another stock-apply holds the
 * vendor (nothing waits for a lock outside a transaction that is tried
 * again), nothing is held and c->loading stays NULL.
 */
static void
load_begin(struct conn *c, struct vendor *v, const char *sku)
{
	int known;

	copy_end(c);
	PQclear(run_or_die(c, "beginning the snapshot transaction", "BEGIN", 0, NULL));
	known = !run_bool(c, "taking the vendor's lock", TRY_LOCK_VENDOR, 1,
	    (const char *[]){ v->name }) ||
	    run_bool(c, "looking the vendor up", HAS_STOCK, 2, (const char *[]){ v->name, sku });
	if (known) {
		PQclear(run_or_die(c, "releasing the vendor's lock", "COMMIT", 0, NULL));
		return;
	}
	debugx("%s: new to the table; loading it with COPY", v->name);
	c->loading = v;
}

/* Undo COPY's text escapes in place (COPY TO writes \\, \b, \f, \n, \r, \t and \v). */
static void
copy_unescape(char *s)
{
	char *o = s;

	for (; *s != '\0'; s++) {
		if (*s != '\\' || s[1] == '\0') {
			*o++ = *s;
			continue;
		}
		switch (*++s) {
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'v': *o++ = '\v'; break;
		default: *o++ = *s; break;
		}
	}
	*o = '\0';
}

/*
 * One row of READ_KNOWN ("sku\tdigest\tt|f\n", n bytes, the last field
 * whether it has stock): into k, unless past KNOWN_MAX (-1).
 */
static int
known_read_row(struct known *k, char *row, int n)
{
	char *digest_at, *stocked_at;
	uint64_t digest = 0, h, check;
	int stocked;
	size_t i;

	row[n - 1] = '\0';
	if ((stocked_at = strrchr(row, '\t')) == NULL)
		return 0;
	*stocked_at++ = '\0';
	if ((digest_at = strrchr(row, '\t')) == NULL)
		return 0;
	*digest_at++ = '\0';
	stocked = strcmp(stocked_at, "t") == 0;
	if (strcmp(digest_at, "\\N") != 0)
		digest = (uint64_t)strtoll(digest_at, NULL, 10);
	copy_unescape(row);
	/* A SKU longer than a snapshot may list is not looked for: it is never listed. */
	if (strlen(row) > FIELD_MAX_NAME) {
		k->unmapped += stocked;
		return 0;
	}
	h = hash_string(row);
	check = sku_check(row);
	if (known_find(k, h, check, &i) == 0)
		return 0;
	return known_add(k, h, check, digest, stocked ? KNOWN_STOCKED : 0, &i);
}

/*
 * Read the vendor's rows into v->known under the vendor's session lock,
 * unless another stock-apply holds it or the vendor has more than KNOWN_MAX
 * rows: then its items are all staged, as they always were.
 */
static void
known_begin(struct conn *c, struct vendor *v)
{
	struct known *k = &v->known;
	struct db_failure f;
	char *lit, *sql, *row;
	PGresult *r;
	int n, over = 0;

	copy_end(c);
	*k = (struct known){ .map = HASH_MAP };
	if (!run_bool(c, "taking the vendor's lock", TRY_LOCK_VENDOR_SESSION, 1,
	    (const char *[]){ v->name })) {
		debugx("%s: another stock-apply holds it; staging every item", v->name);
		return;
	}
	if ((lit = PQescapeLiteral(c->db, v->name, strlen(v->name))) == NULL)
		copy_failed(c, "quoting the vendor's name");
	sql = xasprintf(READ_KNOWN, lit);
	PQfreemem(lit);
	r = PQexec(c->db, sql);
	free(sql);
	if (PQresultStatus(r) != PGRES_COPY_OUT) {
		db_result(c->db, &f, "reading the vendor's stock", r);
		die_uncommitted(&f);
	}
	PQclear(r);
	while ((n = PQgetCopyData(c->db, &row, 0)) > 0) {
		if (!over && known_read_row(k, row, n) < 0)
			over = 1;
		PQfreemem(row);
	}
	if (n == -2)
		copy_failed(c, "reading the vendor's stock");
	r = PQgetResult(c->db);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		db_result(c->db, &f, "reading the vendor's stock", r);
		die_uncommitted(&f);
	}
	PQclear(r);
	while ((r = PQgetResult(c->db)) != NULL)
		PQclear(r);
	if (over) {
		debugx("%s: more than %ld rows; staging every item", v->name, KNOWN_MAX);
		known_free(k);
		PQclear(run_or_die(c, "releasing the vendor's lock", UNLOCK_VENDOR_SESSION, 1,
		    (const char *[]){ v->name }));
		return;
	}
	debugx("%s: %zu rows in the table; staging only what changed", v->name, k->len);
	k->on = k->locked = 1;
}

/* Forget v->known and release the vendor's session lock (c is not in a COPY). */
static void
known_end(struct conn *c, struct vendor *v)
{
	int locked = v->known.locked;

	known_free(&v->known);
	if (locked)
		PQclear(run_or_die(c, "releasing the vendor's lock", UNLOCK_VENDOR_SESSION, 1,
		    (const char *[]){ v->name }));
}

/*
 * Mark an item's SKU listed in v->known: 1 if the table holds it with this
 * digest already (nothing to send), else 0. A SKU listed twice is staged
 * every time after the first, and SQL keeps its last line.
 */
static int
known_unchanged(struct vendor *v, const char *sku, uint64_t digest)
{
	struct known *k = &v->known;
	uint64_t h = hash_string(sku), check = sku_check(sku);
	size_t i;

	if (known_find(k, h, check, &i) == 0) {
		if (k->flags[i] & KNOWN_LISTED) {
			v->seen.unsure = 1;
			return 0;
		}
		k->flags[i] |= KNOWN_LISTED;
		return k->rows[i].digest == digest;
	}
	if (known_add(k, h, check, 0, KNOWN_LISTED, &i) < 0) {
		k->untracked = 1;
		v->seen.unsure = 1;
	}
	return 0;
}

static void finish_pending(void);

/* The session a vendor's lines go to until its snapshot line. */
static struct conn *
vendor_conn(struct vendor *v, const char *first_sku)
{
	if (v->conn != NULL && st.pending != NULL && v->conn == st.pending->conn)
		finish_pending();	/* (which may have been v's own snapshot) */
	if (v->conn != NULL)
		return v->conn;
	if (st.main.loading == NULL && (st.pending == NULL || st.pending->conn != &st.main)) {
		v->conn = &st.main;
		if (st.main.open == 0 && first_sku != NULL)
			load_begin(&st.main, v, first_sku);
	} else {
		if (st.side.db == NULL)
			conn_open(&st.side);
		if (st.pending != NULL && st.pending->conn == &st.side)
			finish_pending();
		v->conn = &st.side;
	}
	v->conn->open++;
	if (first_sku != NULL && v->conn->loading != v)
		known_begin(v->conn, v);
	return v->conn;
}

/* Whether a field is not named in known[]: those are kept as "extra". */
static int
other_field(const cJSON *f, const char *const *known, size_t n)
{
	size_t i = 0;

	while (i < n && (f->string == NULL || strcmp(f->string, known[i]) != 0))
		i++;
	return i == n;
}

/* Lines usually list the known fields in their order: the i-th is tried first. */
static int
has_other_fields(const cJSON *obj, const char *const *known, size_t n)
{
	size_t i = 0;

	for (const cJSON *f = obj->child; f != NULL; f = f->next, i++)
		if ((i >= n || f->string == NULL || strcmp(f->string, known[i]) != 0) &&
		    other_field(f, known, n))
			return 1;
	return 0;
}

/* Stage one item line, unless v->known shows it unchanged. */
static void
stage_item(struct vendor *v, cJSON *item, const char *sku, long long quantity, int has_price,
    long long price)
{
	static const char *const known[] = { "vendor", "sku", "quantity", "fetched_at", "name",
		"price_cents" };
	const size_t nknown = sizeof known / sizeof known[0];
	const char *name = json_string(item, "name");
	struct conn *c = vendor_conn(v, sku);
	enum copying into;
	char *extra = NULL;
	uint64_t digest;

	v->staged++;
	v->positive += quantity > 0;
	if (!v->known.on)
		skuset_add(&v->seen, sku);
	if (has_other_fields(item, known, nknown)) {
		/* Printed from references: the line's own nodes are neither moved nor freed here. */
		cJSON *others = xalloc_check(cJSON_CreateObject());

		for (cJSON *f = item->child; f != NULL; f = f->next)
			if (other_field(f, known, nknown) &&
			    !cJSON_AddItemReferenceToObject(others, f->string, f))
				die(EXIT_NOMEM, "out of memory");
		extra = xalloc_check(cJSON_PrintUnformatted(others));
		cJSON_Delete(others);
	}
	digest = item_digest(sku, quantity, name, has_price, price, extra);
	if (c->loading == v && !v->seen.unsure && v->fetched_binary) {
		copy_begin(c, INTO_STOCK);
		put(c, "\0\10", 2);	/* 8 fields */
		put_bin_text(c, v->name);
		put_bin_text(c, sku);
		put_bin_int8(c, quantity);
		put_bin_text(c, name);
		if (has_price)
			put_bin_int8(c, price);
		else
			put_be32(c, -1);
		put_bin_jsonb(c, extra);
		put_bin_int8(c, (int64_t)digest);
		put_bin_int8(c, v->fetched_us);
		v->copied++;
	} else if (!v->known.on || !known_unchanged(v, sku, digest)) {
		/* From a SKU that may repeat on, a load goes through staging (MERGE). */
		into = c->loading == v && !v->seen.unsure ? INTO_STOCK_TEXT : INTO_STAGING;
		copy_begin(c, into);
		put_field(c, v->name, '\t');
		put_field(c, sku, '\t');
		put_number(c, quantity, '\t');
		put_field(c, name, '\t');
		if (has_price)
			put_number(c, price, '\t');
		else
			put_field(c, NULL, '\t');
		put_field(c, extra, '\t');
		put_number(c, (long long)digest, '\t');
		if (into == INTO_STOCK_TEXT)
			put_field(c, v->fetched_at ? v->fetched_at : "-infinity", '\n');
		else
			put_number(c, ++st.seq, '\n');
		v->copied++;
	}
	cJSON_free(extra);
}

/*
 * With no SKU listed twice, every SKU the snapshot lists with stock is in
 * the table now; if the table has no more such rows, none is unlisted. With
 * v->known, its rows tell. 1 or 0, or -1 with *f filled in.
 */
static int
nothing_to_withdraw(struct conn *c, const struct vendor *v, struct db_failure *f)
{
	PGresult *r;
	long listed;

	if (v->by_name)
		return !v->left_out;
	if (v->seen.unsure)
		return 0;
	r = db_run(c->db, f, "counting listed stock", COUNT_LISTED, 1, (const char *[]){ v->name });
	if (r == NULL)
		return -1;
	listed = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	debugx("%s: %ld listed with stock, %ld staged with stock", v->name, listed, v->positive);
	return listed == v->positive;
}

/* Drop a vendor's staged rows, keeping other vendors' rows still staged. */
static void
clear_staged(struct conn *c, const struct vendor *v)
{
	if (v->copied == 0 && v->by_name)
		return;	/* it staged nothing */
	if (c->open > 1)
		PQclear(run_or_die(c, "clearing staged lines",
		    "DELETE FROM staging WHERE vendor = $1", 1, (const char *[]){ v->name }));
	else
		PQclear(run_or_die(c, "clearing staged lines", "TRUNCATE staging", 0, NULL));
}

/* The MERGE of a vendor's staged rows: a SKU listed twice is deduplicated first. */
static const char *
merge_sql(const struct vendor *v)
{
	return v->seen.unsure ? MERGE_DEDUP : MERGE_UNIQUE;
}

/*
 * Merge the vendor's staged rows; statistics first, so the join is sized
 * right. 0, or -1 with *f filled in.
 */
static int
merge_staged(struct conn *c, const struct vendor *v, const char *ts, struct db_failure *f)
{
	if (db_command(c->db, f, "analyzing staged lines", "ANALYZE staging", 0, NULL) < 0)
		return -1;
	return db_command(c->db, f, "merging stock", merge_sql(v), 2,
	    (const char *[]){ v->name, ts });
}

/*
 * With v->known: withdraw, by name, the vendor's SKUs with stock that its
 * snapshot did not list (those `known` did not see listed and, when new SKUs
 * went untracked, staging lacks). The count withdrawn, or -1 with *f filled in.
 */
static long
withdraw_unlisted(struct conn *c, const struct vendor *v, struct db_failure *f)
{
	struct buf names = { 0 };
	long withdrawn = 0;
	int rows;

	if (db_command(c->db, f, "looking for unlisted stock", v->known.untracked ?
	    DECLARE_STOCKED_UNSTAGED : DECLARE_STOCKED, 1, (const char *[]){ v->name }) < 0)
		return -1;
	do {
		PGresult *r = db_run(c->db, f, "looking for unlisted stock",
		    "FETCH " WITHDRAW_BATCH " FROM stocked", 0, NULL);
		int n = 0;

		if (r == NULL)
			goto failed;
		rows = PQntuples(r);
		db_array_begin(&names);
		for (int i = 0; i < rows; i++)
			if (!known_listed(&v->known, PQgetvalue(r, i, 0))) {
				db_array_text(&names, PQgetvalue(r, i, 0));
				n++;
			}
		PQclear(r);
		if (n == 0)
			continue;
		r = db_run(c->db, f, "withdrawing unlisted stock", WITHDRAW_NAMED, 2,
		    (const char *[]){ v->name, db_array_end(&names) });
		if (r == NULL)
			goto failed;
		withdrawn += atol(PQcmdTuples(r));
		PQclear(r);
	} while (rows > 0);
	buf_free(&names);
	if (db_command(c->db, f, "looking for unlisted stock", "CLOSE stocked", 0, NULL) < 0)
		return -1;
	return withdrawn;
failed:
	buf_free(&names);
	return -1;
}

/*
 * With v->known: the SKUs of the orders this snapshot may settle that it
 * listed, into v->settle (NULL when no order waits). Asked before the
 * snapshot's transaction, while v->known is still held: an order fulfilled
 * meanwhile is settled by the next snapshot (held too long, never too
 * short). 0, or -1 with *f filled in.
 */
static int
settle_names(struct conn *c, struct vendor *v, struct db_failure *f)
{
	struct buf names = { 0 };
	PGresult *r = db_run(c->db, f, "looking for orders to settle", UNSETTLED, 2,
	    (const char *[]){ v->name, v->ts });

	if (r == NULL)
		return -1;
	if (PQntuples(r) > 0) {
		db_array_begin(&names);
		for (int i = 0; i < PQntuples(r); i++)
			if (known_listed(&v->known, PQgetvalue(r, i, 0)))
				db_array_text(&names, PQgetvalue(r, i, 0));
		v->settle = xstrdup(db_array_end(&names));
		buf_free(&names);
	}
	PQclear(r);
	return 0;
}

/*
 * The rest of a snapshot's transaction once its rows are merged: withdraw
 * what a complete snapshot no longer lists, settle the orders it accounts
 * for, commit. The count withdrawn, or -1 with *f filled in (the
 * transaction then needs a ROLLBACK).
 */
static long
apply_rest(struct conn *c, const struct vendor *v, struct db_failure *f)
{
	long withdrawn = 0;
	int none;

	if (v->complete && (none = nothing_to_withdraw(c, v, f)) <= 0) {
		PGresult *r;

		if (none < 0)
			return -1;
		if (v->by_name) {
			if ((withdrawn = withdraw_unlisted(c, v, f)) < 0)
				return -1;
		} else {
			r = db_run(c->db, f, "withdrawing unlisted stock", WITHDRAW, 1,
			    (const char *[]){ v->name });
			if (r == NULL)
				return -1;
			withdrawn = atol(PQcmdTuples(r));
			PQclear(r);
		}
	}
	if (v->by_name) {
		if (v->settle != NULL && db_command(c->db, f, "settling fulfilled orders",
		    SETTLE_NAMED, 3, (const char *[]){ v->name, v->ts, v->settle }) < 0)
			return -1;
	} else if (db_command(c->db, f, "settling fulfilled orders", SETTLE, 2,
	    (const char *[]){ v->name, v->ts }) < 0) {
		return -1;
	}
	if (db_command(c->db, f, "committing the snapshot", "COMMIT", 0, NULL) < 0)
		return -1;
	return withdrawn;
}

/*
 * One try at a known vendor's snapshot transaction from its staged rows:
 * lock, merge, then apply_rest. With `behind`, the MERGE is only sent, and
 * 0 returned: finish_pending takes its result and does the rest. The count
 * withdrawn, or -1 with *f filled in (the transaction then needs a ROLLBACK).
 */
static long
apply_staged_once(struct conn *c, const struct vendor *v, int behind, struct db_failure *f)
{
	if (db_command(c->db, f, "beginning the snapshot transaction", "BEGIN", 0, NULL) < 0 ||
	    db_command(c->db, f, "taking the vendor's lock", LOCK_VENDOR, 1,
	    (const char *[]){ v->name }) < 0)
		return -1;
	if (v->copied > 0) {
		if (!behind) {
			if (merge_staged(c, v, v->ts, f) < 0)
				return -1;
		} else if (db_command(c->db, f, "analyzing staged lines", "ANALYZE staging", 0,
		    NULL) < 0) {
			return -1;
		} else if (!PQsendQueryParams(c->db, merge_sql(v), 2, NULL,
		    (const char *[]){ v->name, v->ts }, NULL, NULL, 0)) {
			db_result(c->db, f, "merging stock", NULL);
			return -1;
		} else {
			return 0;
		}
	}
	return apply_rest(c, v, f);
}

/*
 * apply_staged_once, run again after a backoff while it fails with a
 * retryable error: its staged rows were committed before, so a rolled-back
 * try loses nothing. Returns the count withdrawn, or -1 (rolled back) with
 * *f filled in when the database refused it; exits when the connection is lost.
 */
static long
apply_staged(struct conn *c, const struct vendor *v, int attempt, struct db_failure *f)
{
	struct backoff b = BACKOFF_DB_RETRY;
	long withdrawn;

	for (; (withdrawn = apply_staged_once(c, v, 0, f)) < 0; attempt++) {
		if (f->lost)
			die_uncommitted(f);
		PQclear(PQexec(c->db, "ROLLBACK"));
		if (!f->retryable || attempt == APPLY_ATTEMPTS)
			return -1;
		debugx("%s: %s; applying the snapshot again", v->name, f->msg);
		sleep_seconds(backoff_next(&b), NULL);
	}
	return withdrawn;
}

/* Forget a vendor's snapshot once it is applied or refused. */
static void
vendor_reset(struct vendor *v, struct conn *c)
{
	if (c->loading == v)
		c->loading = NULL;
	c->open--;
	known_end(c, v);
	v->conn = NULL;
	v->staged = 0;
	v->positive = 0;
	v->copied = 0;
	v->tainted = 0;
	v->first_line = v->last_line = 0;
	free(v->failure);
	v->failure = NULL;
	skuset_free(&v->seen);
	v->complete = v->by_name = v->left_out = 0;
	free(v->settle);
	v->settle = NULL;
}

/* The database refused the vendor's snapshot: say so with its lines, and go on. */
static void
vendor_refused(struct vendor *v, struct conn *c)
{
	warning("database: %s", v->failure);
	if (v->first_line > 0)
		warning("%s: lines %ld-%ld: its snapshot was rolled back and none of it applied;"
		    " going on with the other vendors", v->name, v->first_line, v->last_line);
	else
		warning("%s: its snapshot was rolled back and none of it applied;"
		    " going on with the other vendors", v->name);
	st.refused = 1;
	clear_staged(c, v);
	vendor_reset(v, c);
}

/* A snapshot committed: count it, summarise it, and forget it. */
static void
vendor_applied(struct vendor *v, struct conn *c, long withdrawn, int direct)
{
	cJSON *out;

	st.applied_vendors++;
	out = xalloc_check(cJSON_CreateObject());
	cJSON_AddStringToObject(out, "vendor", v->name);
	json_add_int(out, "applied", v->staged);
	json_add_int(out, "withdrawn", withdrawn);
	cJSON_AddStringToObject(out, "snapshot", v->complete ? "complete" : "partial");
	if (jsonl_write(stdout, out) < 0)
		out_flush("the snapshot was committed");
	cJSON_Delete(out);
	out_flush("every snapshot summarised so far was committed");

	if (!direct || v->seen.unsure)
		clear_staged(c, v);
	vendor_reset(v, c);
}

/*
 * The first try, its MERGE left running, failed with *f: roll back and try
 * again from the staged rows (apply_staged) if it is worth it. The count
 * withdrawn, or -1 when the database refused the snapshot (then reported,
 * and its staged rows dropped).
 */
static long
apply_again(struct conn *c, struct vendor *v, struct db_failure *f)
{
	struct backoff b = BACKOFF_DB_RETRY;
	long withdrawn = -1;

	if (f->lost)
		die_uncommitted(f);
	PQclear(PQexec(c->db, "ROLLBACK"));
	if (f->retryable) {
		debugx("%s: %s; applying the snapshot again", v->name, f->msg);
		sleep_seconds(backoff_next(&b), NULL);
		withdrawn = apply_staged(c, v, 2, f);
	}
	if (withdrawn < 0) {
		v->failure = xstrdup(f->msg);
		vendor_refused(v, c);
	}
	return withdrawn;
}

/* Take the result of the MERGE left running (apply_vendor), and finish its snapshot. */
static void
finish_pending(void)
{
	struct vendor *v = st.pending;
	struct conn *c;
	struct db_failure f;
	PGresult *r;
	long withdrawn;
	int merged;

	if (v == NULL)
		return;
	st.pending = NULL;
	c = v->conn;
	r = PQgetResult(c->db);
	if ((merged = PQresultStatus(r) == PGRES_COMMAND_OK))
		PQclear(r);
	else
		db_result(c->db, &f, "merging stock", r);	/* fills f, clears r */
	while ((r = PQgetResult(c->db)) != NULL)
		PQclear(r);
	withdrawn = merged ? apply_rest(c, v, &f) : -1;
	if (withdrawn < 0 && (withdrawn = apply_again(c, v, &f)) < 0)
		return;
	vendor_applied(v, c, withdrawn, 0);
}

/*
 * Apply a vendor's lines in one transaction; withdraw absent SKUs only when
 * the snapshot is complete and every one of its lines arrived intact. A
 * vendor loaded straight into the table had no rows before: there is nothing
 * to withdraw and no order of it to settle. A snapshot the database refuses
 * is rolled back alone (vendor_refused). A vendor whose unchanged items
 * were skipped (v->known) and that left nothing out has its MERGE left
 * running while the input goes on (st.pending), with its `known` freed.
 */
static void
apply_vendor(struct vendor *v, int complete, long announced)
{
	struct conn *c;
	int direct;
	long withdrawn = 0;
	struct db_failure f;

	finish_pending();
	c = vendor_conn(v, NULL);
	copy_end(c);
	if (v->failure != NULL) {
		vendor_refused(v, c);
		return;
	}
	direct = c->loading == v;	/* its lines went straight into vendor_stock */
	if (v->known.on)
		debugx("%s: %ld of %ld items sent to the database, the others unchanged", v->name,
		    v->copied, v->staged);
	if (complete && v->tainted) {
		warning("%s: snapshot had invalid lines; applied what was valid, withdrew nothing", v->name);
		complete = 0;
	} else if (complete && announced != v->staged) {
		warning("%s: lines %ld-%ld: the snapshot line announced %ld items but %ld arrived;"
		    " applied as a partial update, withdrew nothing", v->name, v->first_line,
		    v->last_line, announced, v->staged);
		st.bad_lines = 1;
		complete = 0;
	}
	v->complete = complete;
	/* Without a time of its own the snapshot settles nothing. */
	snprintf(v->ts, sizeof v->ts, "%s", v->fetched_at ? v->fetched_at : "-infinity");
	if (direct) {
		if ((v->seen.unsure && merge_staged(c, v, v->ts, &f) < 0) ||
		    db_command(c->db, &f, "committing the snapshot", "COMMIT", 0, NULL) < 0) {
			conn_refused(c, &f);
			vendor_refused(v, c);
			return;
		}
		vendor_applied(v, c, 0, 1);
		return;
	}
	if (v->known.on) {
		v->by_name = 1;
		if (settle_names(c, v, &f) < 0) {
			if (f.lost)
				die_uncommitted(&f);
			v->failure = xstrdup(f.msg);
			vendor_refused(v, c);
			return;
		}
		v->left_out = complete && known_left_out(&v->known);
		if (!v->left_out && v->copied > 0) {
			/* Its lock stays held until its commit; its table is not needed any more. */
			known_free(&v->known);
			v->known.locked = 1;
			if (apply_staged_once(c, v, 1, &f) == 0) {
				st.pending = v;
				return;
			}
			if ((withdrawn = apply_again(c, v, &f)) < 0)
				return;
			vendor_applied(v, c, withdrawn, 0);
			return;
		}
	}
	if ((withdrawn = apply_staged(c, v, 1, &f)) < 0) {
		v->failure = xstrdup(f.msg);
		vendor_refused(v, c);
		return;
	}
	vendor_applied(v, c, withdrawn, 0);
}

/* An invalid line may have belonged to any vendor whose snapshot is open. */
static void
taint_open_vendors(const char *vendor)
{
	if (vendor != NULL) {
		vendor_get(vendor)->tainted = 1;
		return;
	}
	for (size_t i = 0; i < st.nv; i++)
		if (st.v[i]->staged > 0)
			st.v[i]->tainted = 1;
}

static void
bad_line(long lineno, const char *vendor, const char *why)
{
	warn_line(lineno, "%s", why);
	st.bad_lines = 1;
	taint_open_vendors(vendor);
}

/* The vendor a line names, if its name is one: an invalid line is charged to it. */
static const char *
line_vendor(const cJSON *obj)
{
	const char *vendor;
	struct why why;

	return validate_string(obj, "vendor", 1, FIELD_MAX_NAME, 1, &vendor, &why) > 0 ?
	    vendor : NULL;
}

/* fetched_at, when given, is a timestamp: 0, or -1 with why filled in. */
static int
check_fetched_at(const cJSON *obj, const char **ts, struct why *why)
{
	if (validate_string(obj, "fetched_at", 1, 64, 0, ts, why) < 0 ||
	    (*ts != NULL && !validate_timestamp(*ts))) {
		snprintf(why->msg, sizeof why->msg, "\"fetched_at\" must be a timestamp such as"
		    " 2026-12-06T03:30:00.000Z");
		return -1;
	}
	return 0;
}

static void
handle_line(long lineno, cJSON *obj)
{
	const char *vendor, *snapshot, *sku, *ts;
	long long quantity, items, price = 0;
	int has_price;
	struct vendor *v;
	struct why why;

	if (validate_string(obj, "vendor", 1, FIELD_MAX_NAME, 1, &vendor, &why) < 0) {
		bad_line(lineno, NULL, why.msg);
		return;
	}
	if (check_fetched_at(obj, &ts, &why) < 0) {
		bad_line(lineno, vendor, why.msg);
		return;
	}
	snapshot = json_string(obj, "snapshot");
	if (snapshot != NULL) {
		if (strcmp(snapshot, "complete") != 0 && strcmp(snapshot, "partial") != 0) {
			bad_line(lineno, vendor, "\"snapshot\" must be \"complete\" or \"partial\"");
			return;
		}
		if (json_int(obj, "items", 0, MAX_QUANTITY, &items) < 0) {
			bad_line(lineno, vendor, "\"items\" must be a non-negative integer");
			return;
		}
		v = vendor_get(vendor);
		set_fetched_at(v, ts);
		if (v->first_line == 0)
			v->first_line = lineno;
		v->last_line = lineno;
		apply_vendor(v, strcmp(snapshot, "complete") == 0, (long)items);
		return;
	}
	if (validate_string(obj, "sku", 1, FIELD_MAX_NAME, 1, &sku, &why) < 0) {
		bad_line(lineno, vendor, why.msg);
		return;
	}
	if (json_int(obj, "quantity", 0, MAX_QUANTITY, &quantity) < 0) {
		bad_line(lineno, vendor, "\"quantity\" must be a non-negative integer");
		return;
	}
	/* A price that is not a number is stored as none, as before; a number must fit. */
	if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(obj, "price_cents"))) {
		if (validate_int(obj, "price_cents", -MAX_PRICE, MAX_PRICE, 1, &price, &why) < 0) {
			bad_line(lineno, vendor, why.msg);
			return;
		}
		has_price = 1;
	} else {
		has_price = 0;
	}
	v = vendor_get(vendor);
	if (v->first_line == 0)
		v->first_line = lineno;
	v->last_line = lineno;
	/* The database refused this snapshot already: the rest of it goes nowhere. */
	if (v->failure != NULL)
		return;
	set_fetched_at(v, ts);
	stage_item(v, obj, sku, quantity, has_price, price);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "max-line", required_argument, NULL, 'M' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	size_t max_line = JSONL_MAX_LINE_DEFAULT;
	struct jsonl in;
	const char *why;
	cJSON *obj;
	int ch, rc;

	log_init(argv[0]);
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'M':
			max_line = (size_t)option_long("--max-line", optarg, 1024, JSONL_MAX_LINE_LIMIT);
			break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (optind != argc)
		usage(stderr, EXIT_USAGE);

	conn_open(&st.main);

	jsonl_open(&in, stdin);
	in.max_line = max_line;
	jsonslab_on();	/* while input lines are parsed and deleted */
	for (;;) {
		/* Nothing to read meanwhile: a MERGE left running is committed now, not later. */
		if (st.pending != NULL && !jsonl_pending(&in)) {
			jsonslab_off();
			finish_pending();
			jsonslab_on();
		}
		if ((rc = jsonl_next(&in, &obj, &why)) == JSONL_EOF)
			break;
		jsonslab_off();
		if (rc == JSONL_BAD) {
			bad_line(in.lineno, NULL, why);
			jsonslab_on();
			continue;
		}
		/* Bytes PostgreSQL would refuse, or a \u0000 that cJSON cut a string at. */
		if ((why = validate_json_text(in.buf, in.len)) != NULL)
			bad_line(in.lineno, line_vendor(obj), why);
		else
			handle_line(in.lineno, obj);
		jsonslab_on();
		cJSON_Delete(obj);
	}
	jsonslab_off();
	finish_pending();
	if (ferror(stdin))
		die(EXIT_OUTPUT, "reading standard input failed; %ld snapshot(s) committed",
		    st.applied_vendors);

	/*
	 * Lines without a closing snapshot line still carry valid stock: they are
	 * applied as a partial update (nothing withdrawn), and the run exits 65.
	 */
	for (size_t i = 0; i < st.nv; i++) {
		if (st.v[i]->staged == 0 && st.v[i]->failure == NULL)
			continue;
		warning("%s: lines %ld-%ld: no snapshot line at the end of the input; applied as a"
		    " partial update, nothing withdrawn", st.v[i]->name, st.v[i]->first_line,
		    st.v[i]->last_line);
		st.bad_lines = 1;
		apply_vendor(st.v[i], 0, 0);
	}
	finish_pending();

	jsonl_close(&in);
	for (size_t i = 0; i < st.nv; i++) {
		free(st.v[i]->name);
		free(st.v[i]->fetched_at);
		free(st.v[i]->failure);
		skuset_free(&st.v[i]->seen);
		known_free(&st.v[i]->known);
		free(st.v[i]);
	}
	free(st.v);
	conn_close(&st.main);
	conn_close(&st.side);
	if (fclose(stdout) != 0)
		die(EXIT_OUTPUT, "writing standard output failed; every snapshot was committed");
	return st.refused ? EXIT_SQL : st.bad_lines ? EXIT_BAD_INPUT : EXIT_OK;
}
