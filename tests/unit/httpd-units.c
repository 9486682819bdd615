/* httpd-units: unit tests of lib/httpd's ADDR:PORT parser. */
#include <arpa/inet.h>
#include <string.h>

#include "lib/httpd.h"
#include "tap.h"

static const char *
host_of(const struct httpd_addr *a, char *buf, size_t size)
{
	const void *p = a->ss.ss_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)&a->ss)->sin_addr;

	return inet_ntop(a->ss.ss_family, p, buf, size);
}

int
main(void)
{
	struct httpd_addr a;
	char why[256], host[64];

	ok(httpd_addr_parse("127.0.0.1:8081", &a, why, sizeof why) == 0 &&
	    a.ss.ss_family == AF_INET && httpd_addr_port(&a) == 8081 &&
	    strcmp(host_of(&a, host, sizeof host), "127.0.0.1") == 0 &&
	    a.len == sizeof(struct sockaddr_in), "IPv4 address and port");
	ok(httpd_addr_parse("0.0.0.0:0", &a, why, sizeof why) == 0 && httpd_addr_port(&a) == 0,
	    "port 0 (any free port)");
	ok(httpd_addr_parse("localhost:3000", &a, why, sizeof why) == 0 &&
	    a.ss.ss_family == AF_INET && httpd_addr_port(&a) == 3000 &&
	    strcmp(host_of(&a, host, sizeof host), "127.0.0.1") == 0,
	    "a name resolves, IPv4 first");
	ok(httpd_addr_parse("[::1]:65535", &a, why, sizeof why) == 0 &&
	    a.ss.ss_family == AF_INET6 && httpd_addr_port(&a) == 65535 &&
	    strcmp(host_of(&a, host, sizeof host), "::1") == 0 &&
	    a.len == sizeof(struct sockaddr_in6), "[IPv6] address and port");
	ok(httpd_addr_parse("127.0.0.1:65536", &a, why, sizeof why) < 0 &&
	    strcmp(why, "\"65536\" is too large (allowed 0 to 65535)") == 0,
	    "a port past 65535 is refused (%s)", why);
	ok(httpd_addr_parse("127.0.0.1:http", &a, why, sizeof why) < 0 &&
	    strstr(why, "\"http\"") == why, "a port that is not a number is refused (%s)", why);
	ok(httpd_addr_parse("127.0.0.1:", &a, why, sizeof why) < 0, "an empty port is refused");
	ok(httpd_addr_parse("127.0.0.1:-1", &a, why, sizeof why) < 0, "a negative port is refused");
	ok(httpd_addr_parse("8080", &a, why, sizeof why) < 0 &&
	    strcmp(why, "\"8080\" is not ADDR:PORT") == 0, "no colon: not ADDR:PORT (%s)", why);
	ok(httpd_addr_parse(":8080", &a, why, sizeof why) < 0 &&
	    strcmp(why, "\":8080\" is not ADDR:PORT") == 0, "no address: not ADDR:PORT");
	ok(httpd_addr_parse("no-such-host.invalid:80", &a, why, sizeof why) < 0 &&
	    strncmp(why, "cannot resolve \"no-such-host.invalid\": ", 39) == 0,
	    "a name that does not resolve is refused (%s)", why);
	return tap_done();
}
