/* jsonslab: a free list of 64-byte blocks in one arena, as cJSON's allocation hooks. */
#include "jsonslab.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cjson/cJSON.h>

#include "xalloc.h"

#define SLAB_BLOCK 64		/* sizeof (cJSON) on LP64, and most keys and values */
#define SLAB_BLOCKS 4096

union slab_block {
	union slab_block *next;
	max_align_t align;
	char bytes[SLAB_BLOCK];
};

static struct {
	union slab_block *base, *free;
} slab;

static void *
slab_alloc(size_t n)
{
	union slab_block *b = slab.free;

	if (n > SLAB_BLOCK || b == NULL)
		return xmalloc(n);
	slab.free = b->next;
	return b;
}

static void
slab_free(void *p)
{
	uintptr_t a = (uintptr_t)p, base = (uintptr_t)slab.base;

	if (a >= base && a < base + sizeof *slab.base * SLAB_BLOCKS) {
		union slab_block *b = p;

		b->next = slab.free;
		slab.free = b;
	} else {
		free(p);
	}
}

void
jsonslab_on(void)
{
	static cJSON_Hooks hooks = { slab_alloc, slab_free };

	if (slab.base == NULL) {
		slab.base = xmalloc(sizeof *slab.base * SLAB_BLOCKS);
		for (size_t i = 0; i < SLAB_BLOCKS; i++) {
			slab.base[i].next = slab.free;
			slab.free = &slab.base[i];
		}
	}
	cJSON_InitHooks(&hooks);
}

void
jsonslab_off(void)
{
	cJSON_InitHooks(NULL);
}
