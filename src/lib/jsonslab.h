/*
 * jsonslab: cJSON allocations from a free list of small blocks, for the
 * programs that parse and free a JSON item at a time (stock-apply's lines,
 * vendor-fetch's items): their nodes and short strings (a dozen or so per
 * item) come from one fixed arena instead of malloc, which with free took a
 * fifth of the time per item. cJSON's hooks are global, so the slab is
 * switched on only while such items are parsed and deleted: anything else
 * cJSON allocates, such as printed output that is freed with free(), stays
 * malloc's. A pointer from outside the arena is freed with free().
 */
#ifndef OA_JSONSLAB_H
#define OA_JSONSLAB_H

/* cJSON allocates from the slab (set up on first use) until jsonslab_off. */
void jsonslab_on(void);
/* cJSON allocates with malloc again; every item from the slab must be deleted with it on. */
void jsonslab_off(void);

#endif
