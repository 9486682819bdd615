/* jsonl: read JSON lines up to a cap (1 MiB unless asked), with line numbers; write compact lines. */
#ifndef OA_JSONL_H
#define OA_JSONL_H

#include <stdio.h>
#include <cjson/cJSON.h>

/*
 * A reader keeps its own buffer over read(2) on fp's descriptor rather than
 * reading through stdio: "is input waiting" is then bytes in that buffer or
 * poll() on the descriptor, with no peeking into a FILE's private fields.
 * Nothing else may read fp while a reader is open on it. A stream without
 * a descriptor (fmemopen) is read through stdio instead, and never blocks.
 */
struct jsonl {
	FILE *fp;	/* its descriptor is read; its error indicator is set on a read error */
	int fd;		/* fileno(fp), or -1 */
	char *data;	/* bytes read, [start, end) not yet returned; data[end] is ours */
	size_t cap, start, end;
	char *buf;	/* the line last returned, NUL-terminated (inside data) */
	size_t len;	/* its length in bytes, newline included */
	size_t held;	/* where the byte the NUL replaced goes back, or SIZE_MAX */
	char held_byte;
	int eof;	/* read(2) said end of file, or failed */
	int error;	/* errno of a failed read, or 0 */
	long lineno;	/* number of the line last returned */
	size_t max_line;	/* longest line taken, newline excluded; longer is a bad line */
	char why[80];	/* the reason given for a line past max_line */
};

/*
 * The longest line a reader takes unless told otherwise (jsonl_open sets it;
 * a program may change max_line before the first read). A longer line is a
 * bad line, read past without being held: a reader's memory stays about
 * max_line plus 128 KiB whatever the input.
 */
#define JSONL_MAX_LINE_DEFAULT (1024 * 1024)
/* The largest --max-line a program accepts. */
#define JSONL_MAX_LINE_LIMIT (1024L * 1024 * 1024)

enum { JSONL_EOF = 0, JSONL_OK = 1, JSONL_BAD = 2 };

void jsonl_open(struct jsonl *r, FILE *fp);
void jsonl_close(struct jsonl *r);
/*
 * Next non-blank line as a JSON object; r->buf holds the line as read
 * (newline included) until the next call. Returns JSONL_OK with *out owning
 * the object; JSONL_BAD when the line is not a JSON object or is longer than
 * max_line (r->buf is then ""), *why saying why (valid until the next call)
 * and *out NULL; JSONL_EOF at end of input or on a read
 * error (r->error, and ferror(r->fp), tell the two apart).
 */
int jsonl_next(struct jsonl *r, cJSON **out, const char **why);
/* True if jsonl_next would not block: bytes are buffered, or the descriptor is readable or at EOF. */
int jsonl_pending(struct jsonl *r);

/* The string member key, or NULL when missing or not a string. */
const char *json_string(const cJSON *obj, const char *key);
/* The integer member key into *out: 0, or -1 when missing, not an integer or outside [min, max]. */
int json_int(const cJSON *obj, const char *key, long long min, long long max, long long *out);

/*
 * Add an integer member written as its digits: cJSON keeps numbers as
 * doubles and prints them with sprintf and a sscanf check, which costs more
 * than the rest of a small line. Out of memory exits EXIT_NOMEM (71).
 */
void json_add_int(cJSON *obj, const char *key, long long v);

/* Write obj as one compact line to fp: 0, or -1 on a write error. Out of memory exits 71. */
int jsonl_write(FILE *fp, const cJSON *obj);
/* Flush stdout; on failure exit EXIT_OUTPUT (74) saying what had been committed. */
void out_flush(const char *committed);

#endif
