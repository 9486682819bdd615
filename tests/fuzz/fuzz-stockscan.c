/*
 * fuzz-stockscan: vendor-fetch's reading of a response (lib/stockscan) over
 * any bytes: the array scanner, the item check and the block writer. The
 * lines go to /dev/null; a response that is not accepted must say why.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/stockscan.h"

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	log_init((*argv)[0]);
	if (freopen("/dev/null", "w", stdout) == NULL)
		abort();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct timespec started = { 1700000000, 123456789 };
	char *buf = malloc(size + 1), why[256] = "";

	/* vendor-fetch's bodies are NUL-terminated (lib/buf) but read by length. */
	if (buf == NULL)
		return 0;
	if (size > 0)
		memcpy(buf, data, size);
	buf[size] = '\0';
	if (stock_write("fuzz", &started, buf, size, why, sizeof why) < 0 && why[0] == '\0')
		abort();
	free(buf);
	return 0;
}
