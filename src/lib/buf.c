/* buf: one way to grow a byte buffer: doubling, never past its cap, NUL-terminated. */
#include "buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define FIRST_CAP 256

int
buf_add(struct buf *b, const void *p, size_t n)
{
	/* The most memory it may take: max bytes and the NUL. */
	size_t most = b->max != 0 && b->max < SIZE_MAX ? b->max + 1 : SIZE_MAX;

	if (n > most - 1 - b->len) {
		errno = EMSGSIZE;
		return -1;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : FIRST_CAP;
		char *q;

		while (cap < b->len + n + 1)
			cap = cap > most / 2 ? most : cap * 2;
		if (cap > most)
			cap = most;
		if ((q = realloc(b->data, cap)) == NULL) {
			errno = ENOMEM;
			return -1;
		}
		b->data = q;
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int
xbuf_add(struct buf *b, const void *p, size_t n)
{
	if (buf_add(b, p, n) == 0)
		return 0;
	if (errno == ENOMEM)
		die_nomem();
	return -1;
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void
buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
