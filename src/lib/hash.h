/*
 * hash: the one open-addressing hash table. It stores 64-bit hashes (FNV-1a
 * of the key, never 0) and, in a map, a size_t per entry: the index of the
 * entry in the caller's own array, where the key itself lives. So an insert
 * allocates nothing per entry, growth rehashes no key, and the caller says
 * what "the same key" means (or that the same hash is enough).
 */
#ifndef OA_HASH_H
#define OA_HASH_H

#include <stddef.h>
#include <stdint.h>

struct hash {
	uint64_t *hashes;	/* cap slots; 0 is an empty slot */
	size_t *vals;		/* cap values in a map; NULL in a set */
	size_t cap, len;	/* cap is 0 or a power of two, at least twice len */
	int is_map;
};

/* Initialisers: `struct hash t = HASH_MAP;`. A zeroed struct hash is an empty set. */
#define HASH_MAP ((struct hash){ NULL, NULL, 0, 0, 1 })
#define HASH_SET ((struct hash){ NULL, NULL, 0, 0, 0 })

/* FNV-1a of a C string, 64 bits; 0 (the empty slot) becomes 1. */
uint64_t hash_string(const char *s);

/*
 * Whether the entry stored with value val is the key being looked for: ctx
 * is what the caller passed along with the hash (typically the key and the
 * array val indexes). NULL instead of a function: equal hashes are the same
 * key (a set of hashes, where a collision reads as a repeat).
 */
typedef int hash_match_fn(const void *ctx, size_t val);

/* Find h: 0 with the entry's value in *val (if val is not NULL), or -1. */
int hash_find(const struct hash *t, uint64_t h, hash_match_fn *match, const void *ctx,
    size_t *val);
/*
 * Add h with value val unless the key is there already: then 1 and nothing
 * changes (its value in *old, if old is not NULL). Else 0. Grows the table
 * as needed (out of memory exits 71).
 */
int hash_add(struct hash *t, uint64_t h, hash_match_fn *match, const void *ctx, size_t val,
    size_t *old);
/* Free the slots; the table is empty again, of the same kind. */
void hash_free(struct hash *t);

#endif
