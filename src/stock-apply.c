/* stock-apply: apply vendor-fetch's stock lines to PostgreSQL, one transaction per vendor snapshot. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "lib/db.h"
#include "lib/jsonl.h"
#include "lib/log.h"

/*
 * Item lines are streamed with COPY into a session-local staging table as
 * they arrive (any number of vendors, interleaved or not); a vendor's
 * snapshot line then applies that vendor's staged rows in one transaction.
 * Nothing but the COPY buffer and one small record per vendor is held here.
 */

#define COPY_CHUNK (256 * 1024)
/* Past this many SKUs a vendor's set is dropped (memory) and SQL dedupes. */
#define SKUSET_MAX (2L * 1024 * 1024)
#define MAX_QUANTITY 1000000000000LL

/*
 * 64-bit hashes of a snapshot's SKUs (open addressing, 0 = empty). When none
 * repeats, the snapshot merges without a sort and the withdrawal can be
 * skipped by counting. A repeat, or a set too large, falls back to SQL.
 */
struct skuset {
	uint64_t *slot;
	size_t cap, n;
	int unsure;	/* a SKU may repeat: dedupe in SQL */
};

struct vendor {
	char *name;
	char *fetched_at;	/* from the vendor's lines; NULL if none carried one */
	long staged;		/* item lines staged since its last snapshot */
	int tainted;		/* an invalid line may have been one of its items */
	long positive;		/* staged items with quantity > 0 */
	struct skuset seen;	/* to know the snapshot has no SKU twice */
};

static struct {
	PGconn *db;
	int copying;
	char *buf;
	size_t len;
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

static const char *MERGE_UNIQUE = MERGE_FROM("SELECT * FROM staging WHERE vendor = $1");
/* When a SKU came twice in one snapshot, its last line wins. */
static const char *MERGE_DEDUP = MERGE_FROM(
	"SELECT DISTINCT ON (sku) * FROM staging WHERE vendor = $1 ORDER BY sku, seq DESC");

/* Two syncs of one vendor at once would interleave their snapshots. */
static const char *LOCK_VENDOR =
	"SELECT pg_advisory_xact_lock(hashtext('stock-apply'), hashtext($1))";

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

static uint64_t
sku_hash(const char *s)
{
	uint64_t h = 14695981039346656037ULL;	/* FNV-1a */

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h ? h : 1;
}

static void
skuset_free(struct skuset *set)
{
	free(set->slot);
	memset(set, 0, sizeof *set);
}

static void
skuset_insert(struct skuset *set, uint64_t h)
{
	size_t i;

	for (i = h & (set->cap - 1); set->slot[i] != 0; i = (i + 1) & (set->cap - 1)) {
		if (set->slot[i] == h) {
			set->unsure = 1;
			return;
		}
	}
	set->slot[i] = h;
	set->n++;
}

static void
skuset_add(struct skuset *set, const char *sku)
{
	if (set->unsure)
		return;
	if (set->n + 1 > set->cap / 2) {
		struct skuset bigger = { NULL, set->cap ? set->cap * 2 : 1024, 0, 0 };

		if ((long)set->n >= SKUSET_MAX ||
		    (bigger.slot = calloc(bigger.cap, sizeof *bigger.slot)) == NULL) {
			skuset_free(set);
			set->unsure = 1;
			return;
		}
		for (size_t i = 0; i < set->cap; i++)
			if (set->slot[i] != 0)
				skuset_insert(&bigger, set->slot[i]);
		free(set->slot);
		*set = bigger;
	}
	skuset_insert(set, sku_hash(sku));
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
db_lost(const char *doing)
{
	warnx_("database: %s: %s", doing, db_error(st.db));
	die(EX_UNAVAILABLE, "%ld vendor snapshot(s) were committed before this; "
	    "the current one was not", st.applied_vendors);
}

static void
copy_send(void)
{
	if (st.len > 0 && PQputCopyData(st.db, st.buf, (int)st.len) != 1)
		db_lost("streaming stock lines (COPY)");
	st.len = 0;
}

static void
copy_begin(void)
{
	PGresult *r;

	if (st.copying)
		return;
	r = PQexec(st.db, "COPY staging FROM STDIN");
	if (PQresultStatus(r) != PGRES_COPY_IN) {
		PQclear(r);
		db_lost("starting COPY");
	}
	PQclear(r);
	st.copying = 1;
}

static void
copy_end(void)
{
	PGresult *r;

	if (!st.copying)
		return;
	copy_send();
	if (PQputCopyEnd(st.db, NULL) != 1)
		db_lost("ending COPY");
	r = PQgetResult(st.db);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		PQclear(r);
		db_lost("staging stock lines");
	}
	PQclear(r);
	while ((r = PQgetResult(st.db)) != NULL)
		PQclear(r);
	st.copying = 0;
}

static void
put(const char *s, size_t n)
{
	if (st.len + n > COPY_CHUNK)
		copy_send();
	if (n > COPY_CHUNK) {
		if (PQputCopyData(st.db, s, (int)n) != 1)
			db_lost("streaming stock lines (COPY)");
		return;
	}
	memcpy(st.buf + st.len, s, n);
	st.len += n;
}

/* One COPY text-format field: backslash, tab, newline and CR are escaped. */
static void
put_field(const char *s, char sep)
{
	if (s == NULL) {
		put("\\N", 2);
	} else {
		for (const char *p = s; *p; p++) {
			const char *esc = NULL;

			switch (*p) {
			case '\\': esc = "\\\\"; break;
			case '\t': esc = "\\t"; break;
			case '\n': esc = "\\n"; break;
			case '\r': esc = "\\r"; break;
			}
			if (esc != NULL)
				put(esc, 2);
			else
				put(p, 1);
		}
	}
	put(&sep, 1);
}

static void
put_number(long long n, char sep)
{
	char num[32];

	snprintf(num, sizeof num, "%lld", n);
	put_field(num, sep);
}

/* Stage one item line. The object is consumed (fields are detached from it). */
static void
stage_item(struct vendor *v, cJSON *item, const char *sku, long long quantity)
{
	static const char *known[] = { "vendor", "sku", "quantity", "fetched_at", "name", "price_cents" };
	const cJSON *price = cJSON_GetObjectItemCaseSensitive(item, "price_cents");
	const char *name = json_string(item, "name");
	char *extra = NULL;
	char num[32];

	v->positive += quantity > 0;
	skuset_add(&v->seen, sku);	/* before the fields (and sku) are detached */
	copy_begin();
	put_field(v->name, '\t');
	put_field(sku, '\t');
	put_number(quantity, '\t');
	put_field(name, '\t');
	if (cJSON_IsNumber(price) && price->valuedouble == (double)(long long)price->valuedouble) {
		snprintf(num, sizeof num, "%lld", (long long)price->valuedouble);
		put_field(num, '\t');
	} else {
		put_field(NULL, '\t');
	}
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		cJSON_DeleteItemFromObjectCaseSensitive(item, known[i]);
	if (item->child != NULL && (extra = cJSON_PrintUnformatted(item)) == NULL)
		die(EX_OSERR, "out of memory");
	put_field(extra, '\t');
	free(extra);
	put_number(++st.seq, '\n');
	v->staged++;
}

static long
count_of(PGresult *r)
{
	return r ? atol(PQcmdTuples(r)) : 0;
}

static PGresult *
run(const char *what, const char *sql, const char *vendor, const char *ts)
{
	const char *p[2] = { vendor, ts };
	PGresult *r = PQexecParams(st.db, sql, ts ? 2 : 1, NULL, p, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
		PQclear(r);
		db_lost(what);
	}
	return r;
}

static void
exec_or_lost(const char *what, const char *sql)
{
	PGresult *r = PQexec(st.db, sql);

	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		PQclear(r);
		db_lost(what);
	}
	PQclear(r);
}

/*
 * With no SKU listed twice, every SKU the snapshot lists with stock is in
 * the table now; if the table has no more such rows, none is unlisted.
 */
static int
nothing_to_withdraw(const struct vendor *v)
{
	PGresult *r;
	long listed;

	if (v->seen.unsure)
		return 0;
	r = run("counting listed stock", COUNT_LISTED, v->name, NULL);
	listed = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	debugx("%s: %ld listed with stock, %ld staged with stock", v->name, listed, v->positive);
	return listed == v->positive;
}

/* Drop a vendor's staged rows, keeping other vendors' rows still staged. */
static void
clear_staged(const struct vendor *v)
{
	for (size_t i = 0; i < st.nv; i++) {
		if (&st.v[i] != v && st.v[i].staged > 0) {
			PQclear(run("clearing staged lines",
			    "DELETE FROM staging WHERE vendor = $1", v->name, NULL));
			return;
		}
	}
	exec_or_lost("clearing staged lines", "TRUNCATE staging");
}

/*
 * Apply a vendor's staged rows in one transaction; withdraw absent SKUs only
 * when the snapshot is complete and every one of its lines arrived intact.
 */
static void
apply_vendor(struct vendor *v, int complete, long announced)
{
	char ts[64];
	long withdrawn = 0;
	cJSON *out;

	copy_end();
	if (complete && v->tainted) {
		warnx_("%s: snapshot had invalid lines; applied what was valid, withdrew nothing", v->name);
		complete = 0;
	} else if (complete && announced != v->staged) {
		warnx_("%s: snapshot announced %ld items but %ld arrived; withdrew nothing",
		    v->name, announced, v->staged);
		complete = 0;
	}
	/* Without a time of its own the snapshot settles nothing. */
	snprintf(ts, sizeof ts, "%s", v->fetched_at ? v->fetched_at : "-infinity");
	exec_or_lost("beginning the snapshot transaction", "BEGIN");
	PQclear(run("taking the vendor's lock", LOCK_VENDOR, v->name, NULL));
	PQclear(run("merging stock", v->seen.unsure ? MERGE_DEDUP : MERGE_UNIQUE, v->name, ts));
	if (complete && !nothing_to_withdraw(v)) {
		PGresult *r;

		/* Without statistics the planner may pick a nested-loop anti join. */
		exec_or_lost("analyzing staged lines", "ANALYZE staging");
		r = run("withdrawing unlisted stock", WITHDRAW, v->name, NULL);

		withdrawn = count_of(r);
		PQclear(r);
	}
	PQclear(run("settling fulfilled orders", SETTLE, v->name, ts));
	exec_or_lost("committing the snapshot", "COMMIT");
	st.applied_vendors++;

	out = cJSON_CreateObject();
	cJSON_AddStringToObject(out, "vendor", v->name);
	cJSON_AddNumberToObject(out, "applied", (double)v->staged);
	cJSON_AddNumberToObject(out, "withdrawn", (double)withdrawn);
	cJSON_AddStringToObject(out, "snapshot", complete ? "complete" : "partial");
	if (jsonl_write(stdout, out) < 0)
		out_flush("the snapshot was committed");
	cJSON_Delete(out);
	out_flush("every snapshot summarised so far was committed");

	clear_staged(v);
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

	st.db = db_connect_or_die("no stock was applied");
	if ((st.buf = malloc(COPY_CHUNK)) == NULL)
		die(EX_OSERR, "out of memory");
	exec_or_lost("creating the staging table", CREATE_STAGING);
	/* Large snapshots sort and hash in memory rather than on disk. */
	exec_or_lost("setting work_mem", "SET work_mem = '64MB'");

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
		warnx_("%s: no snapshot line; applied as a partial update, nothing withdrawn",
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
	free(st.buf);
	PQfinish(st.db);
	if (fclose(stdout) != 0)
		die(EX_IOERR, "writing standard output failed; every snapshot was committed");
	return st.bad_lines ? EX_DATAERR : 0;
}
