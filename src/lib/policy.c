/* policy: the names and classifications policy.h promises. */
#include "policy.h"

#include <string.h>

#include "xalloc.h"

char *
queue_dead_name(const char *q)
{
	return xasprintf("%s.dead", q);
}

char *
queue_retry_name(const char *q, long retry_ms)
{
	return xasprintf("%s.retry.%ld", q, retry_ms);
}

int
db_retryable(const char *sqlstate)
{
	return sqlstate != NULL &&
	    (strcmp(sqlstate, "40P01") == 0 ||	/* deadlock_detected */
	    strcmp(sqlstate, "40001") == 0);	/* serialization_failure */
}
