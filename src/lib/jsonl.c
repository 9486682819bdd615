/* jsonl: the line reader and writer every program's streams go through. */
#include "jsonl.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "log.h"

void
jsonl_open(struct jsonl *r, FILE *fp)
{
	memset(r, 0, sizeof *r);
	r->fp = fp;
}

void
jsonl_close(struct jsonl *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = 0;
}

static int
blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			return 0;
	return 1;
}

int
jsonl_next(struct jsonl *r, cJSON **out, const char **why)
{
	ssize_t n;

	*out = NULL;
	for (;;) {
		const char *end = NULL;
		cJSON *v;

		n = getline(&r->buf, &r->cap, r->fp);
		if (n < 0)
			return JSONL_EOF;
		r->lineno++;
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
	struct pollfd p = { .fd = fileno(r->fp), .events = POLLIN };

	/* Data already in stdio's buffer counts as waiting too. */
	if (r->fp->_IO_read_ptr < r->fp->_IO_read_end)
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
	if (cJSON_AddRawToObject(obj, key, digits) == NULL)
		die(EX_SOFTWARE, "out of memory formatting a JSON line");
}

int
jsonl_write(FILE *fp, const cJSON *obj)
{
	char *s = cJSON_PrintUnformatted(obj);
	int rc = 0;

	if (s == NULL)
		die(EX_SOFTWARE, "out of memory formatting a JSON line");
	if (fputs(s, fp) == EOF || putc('\n', fp) == EOF)
		rc = -1;
	free(s);
	return rc;
}

void
out_flush(const char *committed)
{
	if (fflush(stdout) == EOF || ferror(stdout))
		die(EX_IOERR, "writing standard output: %s; %s", strerror(errno),
		    committed ? committed : "nothing was lost from the database");
}
