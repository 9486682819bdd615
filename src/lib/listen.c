/* listen: parse where an HTTP server listens and announce it once it does. */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "log.h"
#include "num.h"

void
listen_parse(const char *opt, const char *arg, struct sockaddr_storage *ss, socklen_t *sslen)
{
	const char *colon = strrchr(arg, ':');
	struct addrinfo hints = { 0 }, *ai;
	char host[256];
	size_t hlen;
	long port;
	int rc;

	if (colon == NULL || colon == arg)
		die(EX_USAGE, "option %s: \"%s\" is not ADDR:PORT", opt, arg);
	port = option_long(opt, colon + 1, 0, 65535);
	hlen = colon - arg;
	if (arg[0] == '[' && hlen >= 2 && arg[hlen - 1] == ']')
		arg++, hlen -= 2;
	if (hlen >= sizeof host)
		die(EX_USAGE, "option %s: address is too long", opt);
	memcpy(host, arg, hlen);
	host[hlen] = '\0';
	/* IPv4 first: "localhost" should not land on ::1 where IPv6 may be off. */
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, NULL, &hints, &ai) != 0) {
		hints.ai_family = AF_INET6;
		if ((rc = getaddrinfo(host, NULL, &hints, &ai)) != 0)
			die(EX_USAGE, "option %s: cannot resolve \"%s\": %s", opt, host,
			    gai_strerror(rc));
	}
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*sslen = ai->ai_addrlen;
	freeaddrinfo(ai);
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

unsigned
listen_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

void
listen_announce(struct MHD_Daemon *d, const struct sockaddr_storage *ss, socklen_t sslen)
{
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	char host[NI_MAXHOST];
	int v6 = ss->ss_family == AF_INET6;

	if (info == NULL || getnameinfo((const struct sockaddr *)ss, sslen, host, sizeof host,
	    NULL, 0, NI_NUMERICHOST) != 0)
		die(EX_SOFTWARE, "cannot tell which address is being listened on");
	if (printf("{\"listening\":\"%s%s%s:%u\"}\n", v6 ? "[" : "", host, v6 ? "]" : "",
	    (unsigned)info->port) < 0 || fflush(stdout) == EOF)
		die(EX_IOERR, "writing the listening line failed: %s", strerror(errno));
}

void
listen_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[1024];
	size_t n;

	(void)cls;
	vsnprintf(buf, sizeof buf, fmt, ap);
	n = strlen(buf);
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	warning("libmicrohttpd: %s", buf);
}

int
listen_body_too_big(struct MHD_Connection *c, unsigned long long max)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_LENGTH);

	return cl != NULL && strtoull(cl, NULL, 10) > max;
}
