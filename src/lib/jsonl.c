/* jsonl: the line reader and writer every program's streams go through. */
#include "jsonl.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>

#include "log.h"
#include "policy.h"
#include "xalloc.h"

#define READ_CHUNK 65536	/* bytes asked of each read(2); the buffer grows for longer lines */

/* What r->buf shows for a line too long to hold. */
static char empty_line[1];

void
jsonl_open(struct jsonl *r, FILE *fp)
{
	memset(r, 0, sizeof *r);
	r->fp = fp;
	r->fd = fileno(fp);
	r->held = SIZE_MAX;
	r->max_line = JSONL_MAX_LINE_DEFAULT;
}

void
jsonl_close(struct jsonl *r)
{
	free(r->data);
	r->data = r->buf = NULL;
	r->cap = r->start = r->end = 0;
}

static int
blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			return 0;
	return 1;
}

/*
 * Read more input after the bytes kept, moving them to the front first. A
 * read error ends the input; it is kept in r->error and, since the programs
 * ask ferror() of the stream they gave us, set on the stream too: one getc()
 * meets the same error and sets its error indicator.
 */
static void
fill(struct jsonl *r)
{
	ssize_t n;

	if (r->start > 0) {
		memmove(r->data, r->data + r->start, r->end - r->start);
		r->end -= r->start;
		r->start = 0;
	}
	if (r->cap - r->end < READ_CHUNK / 2 + 1) {
		r->cap = r->cap ? r->cap * 2 : READ_CHUNK + 1;
		r->data = xreallocarray(r->data, r->cap, 1);
	}
	/* A stream without a descriptor (fmemopen) is read through stdio: it cannot block. */
	if (r->fd < 0) {
		size_t got = fread(r->data + r->end, 1, r->cap - r->end - 1, r->fp);

		r->end += got;
		if (got == 0) {
			r->eof = 1;
			r->error = ferror(r->fp) ? EIO : 0;
		}
		return;
	}
	/* One byte stays free after the data for the NUL that ends a line. */
	while ((n = read(r->fd, r->data + r->end, r->cap - r->end - 1)) < 0) {
		struct pollfd p = { .fd = r->fd, .events = POLLIN };

		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)	/* a non-blocking descriptor: wait as a blocking one would */
			poll(&p, 1, -1);
		else
			break;
	}
	if (n < 0) {
		r->error = errno;
		(void)getc(r->fp);
		errno = r->error;
	}
	if (n <= 0)
		r->eof = 1;
	else
		r->end += (size_t)n;
}

/*
 * A line longer than max_line: drop what is buffered of it and read on to its
 * newline (or the end), keeping at most one read's worth. Returns -2.
 */
static ssize_t
skip_long_line(struct jsonl *r)
{
	char *nl = NULL;

	for (;;) {
		if (r->start < r->end &&
		    (nl = memchr(r->data + r->start, '\n', r->end - r->start)) != NULL)
			break;
		r->start = r->end;	/* fill() then moves nothing */
		if (r->eof)
			break;
		fill(r);
	}
	if (nl != NULL)
		r->start = (size_t)(nl + 1 - r->data);
	r->buf = empty_line;
	return -2;
}

/*
 * The next line, NUL-terminated in place, into r->buf; its length, -1 at the
 * end, or -2 for a line longer than max_line (read past, not held).
 */
static ssize_t
next_line(struct jsonl *r)
{
	size_t scanned = 0, len;
	char *nl;

	if (r->held != SIZE_MAX) {
		r->data[r->held] = r->held_byte;
		r->held = SIZE_MAX;
	}
	for (;;) {
		size_t unscanned = r->end - r->start - scanned;

		/* data is NULL before the first read: memchr must not see it. */
		nl = unscanned > 0 ? memchr(r->data + r->start + scanned, '\n', unscanned) : NULL;
		if (nl != NULL || r->eof)
			break;
		scanned = r->end - r->start;
		if (scanned > r->max_line)
			return skip_long_line(r);
		fill(r);
	}
	if (nl == NULL && r->start == r->end)
		return -1;
	/* A last line without a newline is returned as it is. */
	len = nl != NULL ? (size_t)(nl + 1 - (r->data + r->start)) : r->end - r->start;
	if (len - (nl != NULL) > r->max_line) {	/* it came whole in one read */
		r->start += len;
		r->buf = empty_line;
		return -2;
	}
	r->buf = r->data + r->start;
	r->start += len;
	r->held = r->start;
	r->held_byte = r->data[r->start];
	r->data[r->start] = '\0';
	return (ssize_t)len;
}

int
jsonl_next(struct jsonl *r, cJSON **out, const char **why)
{
	ssize_t n;

	*out = NULL;
	for (;;) {
		const char *end = NULL;
		cJSON *v;

		if ((n = next_line(r)) == -1)
			return JSONL_EOF;
		r->lineno++;
		r->len = n < 0 ? 0 : (size_t)n;
		if (n == -2) {
			snprintf(r->why, sizeof r->why, "line longer than %zu bytes (see --max-line)",
			    r->max_line);
			*why = r->why;
			return JSONL_BAD;
		}
		if (blank(r->buf, (size_t)n))
			continue;
		if (memchr(r->buf, '\0', (size_t)n) != NULL) {
			*why = "contains a NUL byte";
			return JSONL_BAD;
		}
		v = cJSON_ParseWithLengthOpts(r->buf, (size_t)n, &end, 0);
		if (v == NULL) {
			*why = r->buf[n - 1] != '\n' ? "truncated line: not valid JSON"
			    : "not valid JSON";
			return JSONL_BAD;
		}
		if (!blank(end, (size_t)(r->buf + n - end))) {
			cJSON_Delete(v);
			*why = "trailing characters after the JSON value";
			return JSONL_BAD;
		}
		if (!cJSON_IsObject(v)) {
			cJSON_Delete(v);
			*why = "not a JSON object";
			return JSONL_BAD;
		}
		*out = v;
		return JSONL_OK;
	}
}

int
jsonl_pending(struct jsonl *r)
{
	struct pollfd p = { .fd = r->fd, .events = POLLIN };

	if (r->start < r->end || r->eof || r->fd < 0)
		return 1;
	return poll(&p, 1, 0) > 0;
}

const char *
json_string(const cJSON *obj, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

int
json_int(const cJSON *obj, const char *key, long long min, long long max, long long *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	double d;

	if (!cJSON_IsNumber(v))
		return -1;
	d = v->valuedouble;
	if (d != floor(d) || d < (double)min || d > (double)max)
		return -1;
	*out = (long long)d;
	return 0;
}

void
json_add_int(cJSON *obj, const char *key, long long v)
{
	char digits[24];

	snprintf(digits, sizeof digits, "%lld", v);
	xalloc_check(cJSON_AddRawToObject(obj, key, digits));
}

int
jsonl_write(FILE *fp, const cJSON *obj)
{
	char *s = xalloc_check(cJSON_PrintUnformatted(obj));
	int rc = 0;

	if (fputs(s, fp) == EOF || putc('\n', fp) == EOF)
		rc = -1;
	free(s);
	return rc;
}

void
out_flush(const char *committed)
{
	if (fflush(stdout) == EOF || ferror(stdout))
		die(EXIT_OUTPUT, "writing standard output: %s; %s", strerror(errno),
		    committed ? committed : "nothing was lost from the database");
}
