/* listen: ADDR:PORT options and the readiness line of the HTTP servers. */
#ifndef OA_LISTEN_H
#define OA_LISTEN_H

#include <sys/socket.h>

#include <stdarg.h>

#include <microhttpd.h>

/* Parse ADDR:PORT (a name, IPv4, or [IPv6]) for option `opt`; exit 64 when bad. */
void listen_parse(const char *opt, const char *arg, struct sockaddr_storage *ss, socklen_t *sslen);
/* The port of ss, host order. */
unsigned listen_port(const struct sockaddr_storage *ss);
/* Print {"listening":"ADDR:PORT"} with the port actually bound, and flush (exit 74 if not). */
void listen_announce(struct MHD_Daemon *d, const struct sockaddr_storage *ss, socklen_t sslen);

/* True when the request declares a Content-Length over max: refuse before reading it. */
int listen_body_too_big(struct MHD_Connection *c, unsigned long long max);
/* MHD_OPTION_EXTERNAL_LOGGER: libmicrohttpd's messages as "PROG: libmicrohttpd: ..." */
void listen_mhd_log(void *cls, const char *fmt, va_list ap);

#endif
