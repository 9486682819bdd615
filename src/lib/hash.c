/* hash: open addressing with linear probing over 64-bit hashes, the keys left with the caller. */
#include "hash.h"

#include <stdlib.h>

#include "xalloc.h"

#define HASH_FIRST_CAP 1024

uint64_t
hash_string(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ULL;
	return h ? h : 1;
}

/* The slot holding the key, or the empty slot ending its probe sequence. */
static size_t
slot_of(const struct hash *t, uint64_t h, hash_match_fn *match, const void *ctx)
{
	size_t mask = t->cap - 1, i;

	for (i = h & mask; t->hashes[i] != 0; i = (i + 1) & mask)
		if (t->hashes[i] == h && (match == NULL || match(ctx, t->vals[i])))
			break;
	return i;
}

/* Double the slots; entries move by their stored hashes, their keys are not read. */
static void
grow(struct hash *t)
{
	struct hash bigger = *t;

	bigger.cap = t->cap ? 2 * t->cap : HASH_FIRST_CAP;
	bigger.hashes = xcalloc(bigger.cap, sizeof *bigger.hashes);
	bigger.vals = t->is_map ? xcalloc(bigger.cap, sizeof *bigger.vals) : NULL;
	for (size_t i = 0; i < t->cap; i++) {
		size_t j, mask = bigger.cap - 1;

		if (t->hashes[i] == 0)
			continue;
		for (j = t->hashes[i] & mask; bigger.hashes[j] != 0; j = (j + 1) & mask)
			;
		bigger.hashes[j] = t->hashes[i];
		if (t->is_map)
			bigger.vals[j] = t->vals[i];
	}
	free(t->hashes);
	free(t->vals);
	*t = bigger;
}

int
hash_find(const struct hash *t, uint64_t h, hash_match_fn *match, const void *ctx,
    size_t *val)
{
	size_t i;

	if (t->len == 0)
		return -1;
	i = slot_of(t, h, match, ctx);
	if (t->hashes[i] == 0)
		return -1;
	if (val != NULL)
		*val = t->is_map ? t->vals[i] : 0;
	return 0;
}

int
hash_add(struct hash *t, uint64_t h, hash_match_fn *match, const void *ctx, size_t val,
    size_t *old)
{
	size_t i;

	/* Half full at most: probe sequences stay a few slots long. */
	if (2 * (t->len + 1) > t->cap)
		grow(t);
	i = slot_of(t, h, match, ctx);
	if (t->hashes[i] != 0) {
		if (old != NULL)
			*old = t->is_map ? t->vals[i] : 0;
		return 1;
	}
	t->hashes[i] = h;
	if (t->is_map)
		t->vals[i] = val;
	t->len++;
	return 0;
}

void
hash_free(struct hash *t)
{
	free(t->hashes);
	free(t->vals);
	t->hashes = NULL;
	t->vals = NULL;
	t->cap = t->len = 0;
}
