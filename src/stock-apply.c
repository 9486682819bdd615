/* stock-apply: apply vendor-fetch's stock lines to PostgreSQL, one transaction per vendor snapshot. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "lib/db.h"
#include "lib/hash.h"
#include "lib/jsonl.h"
#include "lib/log.h"

/*
 * Item lines are streamed with COPY into a session-local staging table as
 * they arrive (any number of vendors, interleaved or not); a vendor's
 * snapshot line then applies that vendor's staged rows in one transaction.
 * A vendor the table does not know yet is loaded straight into vendor_stock
 * instead, by COPY inside a transaction held open until its snapshot line:
 * that is as fast as PostgreSQL can take rows. While such a load is open,
 * other vendors' lines are staged on a second connection. Nothing but the
 * COPY buffers and one small record per vendor is held here.
 */

#define COPY_CHUNK (256 * 1024)
/* Past this many SKUs a vendor's set is dropped (memory) and SQL dedupes. */
#define SKUSET_MAX (2L * 1024 * 1024)
#define MAX_QUANTITY 1000000000000LL

/*
 * The 64-bit hashes of a snapshot's SKUs (lib/hash, a set). When none
 * repeats, the snapshot merges without a sort and the withdrawal can be
 * skipped by counting. A repeat, or a set too large, falls back to SQL.
 */
struct skuset {
	struct hash hashes;
	int unsure;	/* a SKU may repeat: dedupe in SQL */
};

enum copying { NOT_COPYING, INTO_STAGING, INTO_STOCK };

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
	long staged;		/* item lines staged since its last snapshot */
	int tainted;		/* an invalid line may have been one of its items */
	long positive;		/* staged items with quantity > 0 */
	struct skuset seen;	/* to know the snapshot has no SKU twice */
};

static struct {
	struct conn main;
	struct conn side;	/* stages other vendors while main loads one */
	long seq;
	struct vendor *v;
	size_t nv;
	long applied_vendors;
	int bad_lines;
} st;

static const char *CREATE_STAGING =
	"CREATE TEMP TABLE staging ("
	" vendor text NOT NULL, sku text NOT NULL, quantity bigint NOT NULL,"
	" name text, price_cents bigint, extra jsonb, seq bigint NOT NULL)";

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
	" WHEN MATCHED AND (s.quantity, s.name, s.price_cents, s.extra)" \
	"   IS DISTINCT FROM (g.quantity, g.name, g.price_cents, g.extra) THEN" \
	"   UPDATE SET quantity = g.quantity, name = g.name, price_cents = g.price_cents," \
	"   extra = g.extra, fetched_at = $2::timestamptz, updated_at = now()" \
	" WHEN NOT MATCHED THEN INSERT (vendor, sku, quantity, name, price_cents, extra, fetched_at)" \
	"   VALUES ($1, g.sku, g.quantity, g.name, g.price_cents, g.extra, $2::timestamptz)"

static const char *COPY_INTO[] = {
	[INTO_STAGING] = "COPY staging FROM STDIN",
	[INTO_STOCK] = "COPY vendor_stock (vendor, sku, quantity, name, price_cents, extra, fetched_at)"
	    " FROM STDIN",
};

static const char *MERGE_UNIQUE = MERGE_FROM("SELECT * FROM staging WHERE vendor = $1");
/* When a SKU came twice in one snapshot, its last line wins. */
static const char *MERGE_DEDUP = MERGE_FROM(
	"SELECT DISTINCT ON (sku) * FROM staging WHERE vendor = $1 ORDER BY sku, seq DESC");

/* Two syncs of one vendor at once would interleave their snapshots. */
static const char *LOCK_VENDOR =
	"SELECT pg_advisory_xact_lock(hashtext('stock-apply'), hashtext($1))";

/* Whether the table knows the vendor; the first SKU usually answers by index. */
static const char *HAS_STOCK =
	"SELECT EXISTS (SELECT 1 FROM vendor_stock WHERE sku = $2 AND vendor = $1)"
	" OR EXISTS (SELECT 1 FROM vendor_stock WHERE vendor = $1)";

static const char *COUNT_LISTED =
	"SELECT count(*) FROM vendor_stock WHERE vendor = $1 AND quantity > 0";

/* A complete snapshot is authoritative: what it no longer lists has none left. */
static const char *WITHDRAW =
	"UPDATE vendor_stock s SET quantity = 0, updated_at = now()"
	" WHERE s.vendor = $1 AND s.quantity > 0"
	" AND NOT EXISTS (SELECT 1 FROM staging g WHERE g.vendor = $1 AND g.sku = s.sku)";

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

static void
usage(FILE *fp, int code)
{
	fprintf(fp, "usage: %s < vendor-fetch-lines\n", progname);
	exit(code);
}

static struct vendor *
vendor_get(const char *name)
{
	struct vendor *nv;

	for (size_t i = 0; i < st.nv; i++)
		if (strcmp(st.v[i].name, name) == 0)
			return &st.v[i];
	nv = realloc(st.v, (st.nv + 1) * sizeof *st.v);
	if (nv == NULL || (name = strdup(name)) == NULL)
		die(EX_OSERR, "out of memory");
	st.v = nv;
	memset(&st.v[st.nv], 0, sizeof st.v[st.nv]);
	st.v[st.nv].name = (char *)name;
	return &st.v[st.nv++];
}

static void
set_fetched_at(struct vendor *v, const char *ts)
{
	if (ts == NULL || (v->fetched_at != NULL && strcmp(v->fetched_at, ts) == 0))
		return;
	free(v->fetched_at);
	if ((v->fetched_at = strdup(ts)) == NULL)
		die(EX_OSERR, "out of memory");
}

/* The database went away: say what is and is not in it, then exit 69. */
static void __attribute__((noreturn))
db_lost(struct conn *c, const char *doing)
{
	warning("database: %s: %s", doing, db_error(c->db));
	die(EX_UNAVAILABLE, "%ld vendor snapshot(s) were committed before this; "
	    "none in progress was", st.applied_vendors);
}

static void
copy_send(struct conn *c)
{
	if (c->len > 0 && PQputCopyData(c->db, c->buf, (int)c->len) != 1)
		db_lost(c, "streaming stock lines (COPY)");
	c->len = 0;
}

static void
copy_end(struct conn *c)
{
	PGresult *r;

	if (c->copying == NOT_COPYING)
		return;
	copy_send(c);
	if (PQputCopyEnd(c->db, NULL) != 1)
		db_lost(c, "ending COPY");
	r = PQgetResult(c->db);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		PQclear(r);
		db_lost(c, c->copying == INTO_STOCK ? "loading stock lines" : "staging stock lines");
	}
	PQclear(r);
	while ((r = PQgetResult(c->db)) != NULL)
		PQclear(r);
	c->copying = NOT_COPYING;
}

/* Have a COPY into `into` open on c, ending one into the other table. */
static void
copy_begin(struct conn *c, enum copying into)
{
	PGresult *r;

	if (c->copying == into)
		return;
	copy_end(c);
	r = PQexec(c->db, COPY_INTO[into]);
	if (PQresultStatus(r) != PGRES_COPY_IN) {
		PQclear(r);
		db_lost(c, "starting COPY");
	}
	PQclear(r);
	c->copying = into;
}

static void
put(struct conn *c, const char *s, size_t n)
{
	if (c->len + n > COPY_CHUNK)
		copy_send(c);
	if (n > COPY_CHUNK) {
		if (PQputCopyData(c->db, s, (int)n) != 1)
			db_lost(c, "streaming stock lines (COPY)");
		return;
	}
	memcpy(c->buf + c->len, s, n);
	c->len += n;
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

static void
put_number(struct conn *c, long long n, char sep)
{
	char num[32];

	snprintf(num, sizeof num, "%lld", n);
	put_field(c, num, sep);
}

static long
count_of(PGresult *r)
{
	return r ? atol(PQcmdTuples(r)) : 0;
}

static PGresult *
run(struct conn *c, const char *what, const char *sql, const char *p1, const char *p2)
{
	const char *p[2] = { p1, p2 };
	PGresult *r = PQexecParams(c->db, sql, p2 ? 2 : 1, NULL, p, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
		PQclear(r);
		db_lost(c, what);
	}
	return r;
}

static void
exec_or_lost(struct conn *c, const char *what, const char *sql)
{
	PGresult *r = PQexec(c->db, sql);

	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		PQclear(r);
		db_lost(c, what);
	}
	PQclear(r);
}

static void
conn_open(struct conn *c)
{
	c->db = db_connect_or_die(st.applied_vendors ? "the snapshots summarised were committed"
	    : "no stock was applied");
	if ((c->buf = malloc(COPY_CHUNK)) == NULL)
		die(EX_OSERR, "out of memory");
	exec_or_lost(c, "creating the staging table", CREATE_STAGING);
	/* Large snapshots sort and hash in memory rather than on disk. */
	exec_or_lost(c, "setting work_mem", "SET work_mem = '64MB'");
	/* ANALYZE of staging samples a few hundred rows: enough to size a join. */
	exec_or_lost(c, "setting default_statistics_target", "SET default_statistics_target = 1");
}

static void
conn_close(struct conn *c)
{
	free(c->buf);
	if (c->db != NULL)
		PQfinish(c->db);
}

/*
 * Begin loading a vendor straight into vendor_stock if the table has no row
 * of it: its transaction, holding the vendor's lock, stays open until the
 * snapshot line. If the vendor has rows, nothing is held and c->loading stays NULL.
 */
static void
load_begin(struct conn *c, struct vendor *v, const char *sku)
{
	PGresult *r;
	int known;

	copy_end(c);
	exec_or_lost(c, "beginning the snapshot transaction", "BEGIN");
	PQclear(run(c, "taking the vendor's lock", LOCK_VENDOR, v->name, NULL));
	r = run(c, "looking the vendor up", HAS_STOCK, v->name, sku);
	known = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	if (known) {
		exec_or_lost(c, "releasing the vendor's lock", "COMMIT");
		return;
	}
	debugx("%s: new to the table; loading it with COPY", v->name);
	c->loading = v;
}

/* The session a vendor's lines go to until its snapshot line. */
static struct conn *
vendor_conn(struct vendor *v, const char *first_sku)
{
	if (v->conn != NULL)
		return v->conn;
	if (st.main.loading == NULL) {
		v->conn = &st.main;
		if (st.main.open == 0 && first_sku != NULL)
			load_begin(&st.main, v, first_sku);
	} else {
		if (st.side.db == NULL)
			conn_open(&st.side);
		v->conn = &st.side;
	}
	v->conn->open++;
	return v->conn;
}

/* Whether obj has a field not named in known[]: those are kept as "extra". */
static int
has_other_fields(const cJSON *obj, const char *const *known, size_t n)
{
	for (const cJSON *f = obj->child; f != NULL; f = f->next) {
		size_t i = 0;

		while (i < n && (f->string == NULL || strcmp(f->string, known[i]) != 0))
			i++;
		if (i == n)
			return 1;
	}
	return 0;
}

/* Stage one item line. Its known fields may be detached from the object. */
static void
stage_item(struct vendor *v, cJSON *item, const char *sku, long long quantity)
{
	static const char *const known[] = { "vendor", "sku", "quantity", "fetched_at", "name",
		"price_cents" };
	const cJSON *price = cJSON_GetObjectItemCaseSensitive(item, "price_cents");
	const char *name = json_string(item, "name");
	struct conn *c = vendor_conn(v, sku);
	enum copying into;
	char *extra = NULL;

	v->positive += quantity > 0;
	skuset_add(&v->seen, sku);	/* before the fields (and sku) are detached */
	/* From a SKU that may repeat on, a load goes through staging (MERGE). */
	into = c->loading == v && !v->seen.unsure ? INTO_STOCK : INTO_STAGING;
	copy_begin(c, into);
	put_field(c, v->name, '\t');
	put_field(c, sku, '\t');
	put_number(c, quantity, '\t');
	put_field(c, name, '\t');
	if (cJSON_IsNumber(price) && price->valuedouble == (double)(long long)price->valuedouble)
		put_number(c, (long long)price->valuedouble, '\t');
	else
		put_field(c, NULL, '\t');
	if (has_other_fields(item, known, sizeof known / sizeof known[0])) {
		for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
			cJSON_DeleteItemFromObjectCaseSensitive(item, known[i]);
		if ((extra = cJSON_PrintUnformatted(item)) == NULL)
			die(EX_OSERR, "out of memory");
	}
	put_field(c, extra, '\t');
	free(extra);
	if (into == INTO_STOCK)
		put_field(c, v->fetched_at ? v->fetched_at : "-infinity", '\n');
	else
		put_number(c, ++st.seq, '\n');
	v->staged++;
}

/*
 * With no SKU listed twice, every SKU the snapshot lists with stock is in
 * the table now; if the table has no more such rows, none is unlisted.
 */
static int
nothing_to_withdraw(struct conn *c, const struct vendor *v)
{
	PGresult *r;
	long listed;

	if (v->seen.unsure)
		return 0;
	r = run(c, "counting listed stock", COUNT_LISTED, v->name, NULL);
	listed = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	debugx("%s: %ld listed with stock, %ld staged with stock", v->name, listed, v->positive);
	return listed == v->positive;
}

/* Drop a vendor's staged rows, keeping other vendors' rows still staged. */
static void
clear_staged(struct conn *c, const struct vendor *v)
{
	if (c->open > 1)
		PQclear(run(c, "clearing staged lines", "DELETE FROM staging WHERE vendor = $1",
		    v->name, NULL));
	else
		exec_or_lost(c, "clearing staged lines", "TRUNCATE staging");
}

/* Merge the vendor's staged rows; statistics first, so the join is sized right. */
static void
merge_staged(struct conn *c, const struct vendor *v, const char *ts)
{
	exec_or_lost(c, "analyzing staged lines", "ANALYZE staging");
	PQclear(run(c, "merging stock", v->seen.unsure ? MERGE_DEDUP : MERGE_UNIQUE, v->name, ts));
}

/*
 * Apply a vendor's lines in one transaction; withdraw absent SKUs only when
 * the snapshot is complete and every one of its lines arrived intact. A
 * vendor loaded straight into the table had no rows before: there is nothing
 * to withdraw and no order of it to settle.
 */
static void
apply_vendor(struct vendor *v, int complete, long announced)
{
	struct conn *c = vendor_conn(v, NULL);
	int direct = c->loading == v;	/* its lines went straight into vendor_stock */
	char ts[64];
	long withdrawn = 0;
	cJSON *out;

	copy_end(c);
	if (complete && v->tainted) {
		warning("%s: snapshot had invalid lines; applied what was valid, withdrew nothing", v->name);
		complete = 0;
	} else if (complete && announced != v->staged) {
		warning("%s: snapshot announced %ld items but %ld arrived; withdrew nothing",
		    v->name, announced, v->staged);
		complete = 0;
	}
	/* Without a time of its own the snapshot settles nothing. */
	snprintf(ts, sizeof ts, "%s", v->fetched_at ? v->fetched_at : "-infinity");
	if (direct) {
		if (v->seen.unsure)
			merge_staged(c, v, ts);
	} else {
		exec_or_lost(c, "beginning the snapshot transaction", "BEGIN");
		PQclear(run(c, "taking the vendor's lock", LOCK_VENDOR, v->name, NULL));
		merge_staged(c, v, ts);
		if (complete && !nothing_to_withdraw(c, v)) {
			PGresult *r = run(c, "withdrawing unlisted stock", WITHDRAW, v->name, NULL);

			withdrawn = count_of(r);
			PQclear(r);
		}
		PQclear(run(c, "settling fulfilled orders", SETTLE, v->name, ts));
	}
	exec_or_lost(c, "committing the snapshot", "COMMIT");
	st.applied_vendors++;

	out = cJSON_CreateObject();
	cJSON_AddStringToObject(out, "vendor", v->name);
	json_add_int(out, "applied", v->staged);
	json_add_int(out, "withdrawn", withdrawn);
	cJSON_AddStringToObject(out, "snapshot", complete ? "complete" : "partial");
	if (jsonl_write(stdout, out) < 0)
		out_flush("the snapshot was committed");
	cJSON_Delete(out);
	out_flush("every snapshot summarised so far was committed");

	if (!direct || v->seen.unsure)
		clear_staged(c, v);
	if (direct)
		c->loading = NULL;
	c->open--;
	v->conn = NULL;
	v->staged = 0;
	v->positive = 0;
	v->tainted = 0;
	skuset_free(&v->seen);
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
		if (st.v[i].staged > 0)
			st.v[i].tainted = 1;
}

static void
bad_line(long lineno, const char *vendor, const char *why)
{
	warn_line(lineno, "%s", why);
	st.bad_lines = 1;
	taint_open_vendors(vendor);
}

static void
handle_line(long lineno, cJSON *obj)
{
	const char *vendor = json_string(obj, "vendor");
	const char *snapshot = json_string(obj, "snapshot");
	const char *sku;
	long long quantity, items;
	struct vendor *v;

	if (vendor == NULL || *vendor == '\0') {
		bad_line(lineno, NULL, "\"vendor\" must be a non-empty string");
		return;
	}
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
		set_fetched_at(v, json_string(obj, "fetched_at"));
		apply_vendor(v, strcmp(snapshot, "complete") == 0, (long)items);
		return;
	}
	sku = json_string(obj, "sku");
	if (sku == NULL || *sku == '\0') {
		bad_line(lineno, vendor, "\"sku\" must be a non-empty string");
		return;
	}
	if (json_int(obj, "quantity", 0, MAX_QUANTITY, &quantity) < 0) {
		bad_line(lineno, vendor, "\"quantity\" must be a non-negative integer");
		return;
	}
	v = vendor_get(vendor);
	set_fetched_at(v, json_string(obj, "fetched_at"));
	stage_item(v, obj, sku, quantity);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct jsonl in;
	const char *why;
	cJSON *obj;
	int ch, rc;

	log_init(argv[0]);
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'h': usage(stdout, 0); break;
		case 'V': puts(OA_VERSION); return 0;
		default: usage(stderr, EX_USAGE);
		}
	}
	if (optind != argc)
		usage(stderr, EX_USAGE);

	conn_open(&st.main);

	jsonl_open(&in, stdin);
	while ((rc = jsonl_next(&in, &obj, &why)) != JSONL_EOF) {
		if (rc == JSONL_BAD) {
			bad_line(in.lineno, NULL, why);
			continue;
		}
		handle_line(in.lineno, obj);
		cJSON_Delete(obj);
	}
	if (ferror(stdin))
		die(EX_IOERR, "reading standard input failed; %ld snapshot(s) committed",
		    st.applied_vendors);

	/* Lines without a closing snapshot line still carry valid stock. */
	for (size_t i = 0; i < st.nv; i++) {
		if (st.v[i].staged == 0)
			continue;
		warning("%s: no snapshot line; applied as a partial update, nothing withdrawn",
		    st.v[i].name);
		apply_vendor(&st.v[i], 0, 0);
	}

	jsonl_close(&in);
	for (size_t i = 0; i < st.nv; i++) {
		free(st.v[i].name);
		free(st.v[i].fetched_at);
		skuset_free(&st.v[i].seen);
	}
	free(st.v);
	conn_close(&st.main);
	conn_close(&st.side);
	if (fclose(stdout) != 0)
		die(EX_IOERR, "writing standard output failed; every snapshot was committed");
	return st.bad_lines ? EX_DATAERR : 0;
}
