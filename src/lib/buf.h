/* buf: the one growable byte buffer: appended to, capped if asked, always NUL-terminated. */
#ifndef OA_BUF_H
#define OA_BUF_H

#include <stddef.h>

/* Zero-initialise ({ 0 }), or set max too. */
struct buf {
	char *data;	/* NULL until the first append; then data[len] == '\0' */
	size_t len, cap;
	size_t max;	/* 0: no cap; else len never passes max */
};

/*
 * Append n bytes (n may be 0: the buffer then exists and is ""). Returns 0,
 * or -1 with nothing appended and errno EMSGSIZE (len would pass max) or
 * ENOMEM.
 */
int buf_add(struct buf *b, const void *p, size_t n);
/* buf_add, but out of memory exits EXIT_NOMEM (71): -1 only past max. */
int xbuf_add(struct buf *b, const void *p, size_t n);
/* Empty it, keeping its memory and max. */
void buf_reset(struct buf *b);
/* Free its memory; max is kept, so it may be used again. */
void buf_free(struct buf *b);

#endif
