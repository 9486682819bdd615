/* config: where the services are, from the environment, read at each call (nothing is cached). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

static const char *
env(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : NULL;
}

const char *
config_amqp_url(void)
{
	const char *v = env("RABBITMQ_URL");

	return v ? v : "amqp://localhost";
}

const char *
config_vendor_base(void)
{
	return env("VENDOR_BASE_URL");
}

char *
config_redact_url(const char *url)
{
	const char *scheme = strstr(url, "://");
	const char *at, *colon;
	char *out;

	if (scheme == NULL || (at = strchr(scheme + 3, '@')) == NULL)
		return xstrdup(url);
	colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
	if (colon == NULL)
		return xstrdup(url);
	out = xmalloc(strlen(url) + 4);
	sprintf(out, "%.*s:***%s", (int)(colon - url), url, at);
	return out;
}

const char *
config_db_target(void)
{
	static _Thread_local char buf[512];
	const char *url = env("DATABASE_URL");

	if (url != NULL) {
		char *r = config_redact_url(url);

		/* conninfo strings ("host=... password=...") are not echoed at all. */
		if (strstr(url, "://") == NULL)
			snprintf(buf, sizeof buf, "the database in DATABASE_URL");
		else
			snprintf(buf, sizeof buf, "%s", r);
		free(r);
	} else if (env("DB_HOST") || env("DB_NAME") || env("DB_PORT")) {
		snprintf(buf, sizeof buf, "database %s on %s:%s",
		    env("DB_NAME") ? env("DB_NAME") : "(default)",
		    env("DB_HOST") ? env("DB_HOST") : "localhost",
		    env("DB_PORT") ? env("DB_PORT") : "5432");
	} else {
		snprintf(buf, sizeof buf, "the database from PG* defaults");
	}
	return buf;
}
