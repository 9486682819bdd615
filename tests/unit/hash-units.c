/* hash-units: unit tests of lib/hash (a map with the caller's keys, a set of hashes, growth). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/hash.h"
#include "tap.h"

#define MANY 100000

/* The caller's keys: the map stores their indexes. */
struct keys {
	char **names;
	const char *wanted;
};

static int
same_name(const void *ctx, size_t i)
{
	const struct keys *k = ctx;

	return strcmp(k->names[i], k->wanted) == 0;
}

static int
find(const struct hash *t, struct keys *k, const char *name, size_t *val)
{
	k->wanted = name;
	return hash_find(t, hash_string(name), same_name, k, val);
}

static int
add(struct hash *t, struct keys *k, size_t i, size_t *old)
{
	k->wanted = k->names[i];
	return hash_add(t, hash_string(k->names[i]), same_name, k, i, old);
}

static void
test_map(void)
{
	struct hash t = HASH_MAP;
	struct keys k = { calloc(MANY, sizeof(char *)), NULL };
	size_t val = 0, old = 0;
	int found = 0, grew;

	ok(find(&t, &k, "a", &val) < 0, "an empty map finds nothing");
	for (size_t i = 0; i < MANY; i++) {
		char name[32];

		snprintf(name, sizeof name, "SKU-%06zu", i);
		k.names[i] = strdup(name);
	}
	ok(add(&t, &k, 0, &old) == 0 && t.len == 1, "insert one key");
	ok(find(&t, &k, "SKU-000000", &val) == 0 && val == 0, "find it, with its value");
	ok(find(&t, &k, "SKU-000001", &val) < 0, "a key not inserted is not found");
	ok(add(&t, &k, 0, &old) == 1 && old == 0 && t.len == 1,
	    "inserting it again reports the entry already there and changes nothing");
	grew = 0;
	for (size_t i = 1; i < MANY; i++) {
		size_t cap = t.cap;

		if (add(&t, &k, i, NULL) != 0)
			break;
		grew += t.cap != cap;
	}
	ok(t.len == MANY, "%d distinct keys inserted", MANY);
	ok(grew > 0 && t.cap >= 2 * t.len, "the table grew and stays at most half full (cap %zu)",
	    t.cap);
	for (size_t i = 0; i < MANY; i++)
		found += find(&t, &k, k.names[i], &val) == 0 && val == i;
	ok(found == MANY, "every key is found with its value after growth");
	ok(find(&t, &k, "SKU-999999", &val) < 0 && find(&t, &k, "", &val) < 0,
	    "keys never inserted are still not found");
	hash_free(&t);
	ok(t.len == 0 && t.cap == 0 && t.is_map && find(&t, &k, "SKU-000000", &val) < 0,
	    "hash_free leaves an empty map");
	ok(add(&t, &k, 7, NULL) == 0 && find(&t, &k, "SKU-000007", &val) == 0 && val == 7,
	    "a freed map can be used again");
	hash_free(&t);
	for (size_t i = 0; i < MANY; i++)
		free(k.names[i]);
	free(k.names);
}

/* Entries whose hashes collide are told apart by the caller's match. */
static void
test_collisions(void)
{
	struct hash t = HASH_MAP;
	char *names[] = { "x", "y", "z" };
	struct keys k = { names, NULL };
	size_t val = 9;

	for (size_t i = 0; i < 3; i++) {
		k.wanted = names[i];
		hash_add(&t, 42, same_name, &k, i, NULL);
	}
	k.wanted = "y";
	ok(t.len == 3 && hash_find(&t, 42, same_name, &k, &val) == 0 && val == 1,
	    "three keys of one hash: each found by the match");
	k.wanted = "w";
	ok(hash_find(&t, 42, same_name, &k, &val) < 0, "a fourth key of that hash is not found");
	hash_free(&t);
}

static void
test_set(void)
{
	struct hash s = { 0 };
	int repeats = 0;

	ok(!s.is_map, "a zeroed struct hash is a set");
	ok(hash_add(&s, hash_string("A"), NULL, NULL, 0, NULL) == 0, "add a hash to a set");
	ok(hash_add(&s, hash_string("A"), NULL, NULL, 0, NULL) == 1, "adding it again is a repeat");
	ok(hash_find(&s, hash_string("A"), NULL, NULL, NULL) == 0 &&
	    hash_find(&s, hash_string("B"), NULL, NULL, NULL) < 0, "find in a set");
	for (unsigned long i = 0; i < MANY; i++)
		repeats += hash_add(&s, 2 + i, NULL, NULL, 0, NULL);
	ok(repeats == 0 && s.len == MANY + 1 && s.vals == NULL,
	    "many hashes in a set, no values stored");
	hash_free(&s);
}

static void
test_hash_string(void)
{
	ok(hash_string("") == 0xcbf29ce484222325ULL, "hash_string is FNV-1a 64 (empty string)");
	ok(hash_string("a") == 0xaf63dc4c8601ec8cULL, "hash_string is FNV-1a 64 (\"a\")");
	ok(hash_string("a") != hash_string("b"), "different strings, different hashes");
}

int
main(void)
{
	test_map();
	test_collisions();
	test_set();
	test_hash_string();
	return tap_done();
}
