/*
 * stockscan: a vendor's stock response read as stock lines. The response is
 * a JSON array of items; each valid item is written to stdout as
 * {"vendor","sku","quantity","fetched_at",...its other fields}, an invalid
 * one is skipped (and reported), and the block ends with the closing line
 * {"vendor","snapshot":"complete"|"partial","items","fetched_at"}.
 * vendor-fetch's writer, apart so that tests/fuzz can drive it.
 */
#ifndef OA_STOCKSCAN_H
#define OA_STOCKSCAN_H

#include <stddef.h>
#include <time.h>

#include <cjson/cJSON.h>

#define STOCK_MAX_QUANTITY 9007199254740991LL	/* 2^53 - 1: exact in a JSON number */

/* One vendor's block being written. */
struct stock_block {
	const char *vendor;
	char stamp[64];		/* fetched_at: when the attempt began, UTC */
	long idx, written, bad;
};

/* NULL if it is a stock item; else why not, with *sku and *qty set as far as read. */
const char *stock_item_problem(const cJSON *it, const char **sku, long long *qty);
void stock_block_begin(struct stock_block *b, const char *vendor, const struct timespec *started);
/* Write the item, or count and report it (the first few) as skipped. */
void stock_block_item(struct stock_block *b, const cJSON *it);
/* The closing line: "partial" if any item was skipped. */
void stock_block_end(struct stock_block *b);

/* 1 if only JSON whitespace lies from p to end. */
int stock_all_blank(const char *p, const char *end);

/*
 * Each item of the response's array, in order, into b (NULL: only check the
 * syntax). cJSON parses one item at a time, so memory holds one item's tree.
 * 0, or -1 with why set if the response is not a JSON array.
 */
int stock_scan(const char *buf, size_t len, struct stock_block *b, char *why, size_t whylen);
/*
 * The response checked whole, then written as vendor's block: a response
 * that breaks off writes nothing. 0, or -1 with why set and nothing written.
 */
int stock_write(const char *vendor, const struct timespec *started, const char *buf,
    size_t len, char *why, size_t whylen);

#endif
