/*
 * fuzz-jsonl: the one line reader (lib/jsonl) over any bytes, read the two
 * ways programs read: through a descriptor (a memfd, read(2) as stdin is)
 * when the first byte is even, through stdio (fmemopen) when it is odd.
 * Every line must come back NUL-terminated with its number counting up; a
 * line past the reader's cap (sometimes a short one) is a bad line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lib/jsonl.h"

static FILE *
open_input(const uint8_t *data, size_t size)
{
	int fd;

	if (size > 0 && (data[0] & 1))
		return fmemopen((void *)data, size, "r");
	if ((fd = memfd_create("fuzz-jsonl", MFD_CLOEXEC)) < 0)
		abort();
	if (size > 0 && write(fd, data, size) != (ssize_t)size)
		abort();
	if (lseek(fd, 0, SEEK_SET) != 0)
		abort();
	return fdopen(fd, "r");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *fp;
	struct jsonl r;
	const char *why;
	cJSON *obj;
	long last = 0;
	int rc;

	if (size == 0)
		return 0;
	/* fmemopen of the fuzzer's buffer: it must not be written, only read. */
	if ((fp = open_input(data, size)) == NULL)
		abort();
	jsonl_open(&r, fp);
	/* A short cap when the second byte asks: long lines are read past, not held. */
	if (size > 1 && (data[1] & 1))
		r.max_line = 8 + data[1];
	while ((rc = jsonl_next(&r, &obj, &why)) != JSONL_EOF) {
		if (r.lineno <= last || r.buf == NULL || strlen(r.buf) > size)
			abort();
		last = r.lineno;
		if (rc == JSONL_OK) {
			if (!cJSON_IsObject(obj))
				abort();
			cJSON_Delete(obj);
		} else if (obj != NULL || why == NULL) {
			abort();
		}
		(void)jsonl_pending(&r);
	}
	if (r.error != 0)
		abort();
	jsonl_close(&r);
	fclose(fp);
	return 0;
}
