/* jsonl: read JSON lines of any length, with line numbers; write compact lines. */
#ifndef OA_JSONL_H
#define OA_JSONL_H

#include <stdio.h>
#include <cjson/cJSON.h>

struct jsonl {
	FILE *fp;
	char *buf;
	size_t cap;
	long lineno;	/* number of the line last returned */
};

enum { JSONL_EOF = 0, JSONL_OK = 1, JSONL_BAD = 2 };

void jsonl_open(struct jsonl *r, FILE *fp);
void jsonl_close(struct jsonl *r);
/*
 * Next non-blank line as a JSON object. JSONL_OK: *out owns the object.
 * JSONL_BAD: the line is not a JSON object; *why says why (static string).
 * JSONL_EOF: end of input (or a read error: check ferror(r->fp)).
 */
int jsonl_next(struct jsonl *r, cJSON **out, const char **why);
/* True if input is waiting, so a program can keep batching without blocking. */
int jsonl_pending(struct jsonl *r);

/* Field accessors: 0 on success, -1 when missing or of the wrong type. */
const char *json_string(const cJSON *obj, const char *key);
int json_int(const cJSON *obj, const char *key, long long min, long long max, long long *out);

/*
 * Add an integer member written as its digits: cJSON keeps numbers as
 * doubles and prints them with sprintf and a sscanf check, which costs more
 * than the rest of a small line. Exits 70 when out of memory.
 */
void json_add_int(cJSON *obj, const char *key, long long v);

/* Write obj as one compact line to fp; returns -1 on a write error. */
int jsonl_write(FILE *fp, const cJSON *obj);
/* Flush stdout; on failure exit 74 saying what had been committed. */
void out_flush(const char *committed);

#endif
