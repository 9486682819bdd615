/* httpd: one libmicrohttpd server skeleton, from ADDR:PORT to the last signal, for every HTTP server. */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "num.h"
#include "policy.h"
#include "retry.h"
#include "xalloc.h"

#define PORT_MAX 65535

/* --- where to listen -------------------------------------------------------- */

int
httpd_addr_parse(const char *arg, struct httpd_addr *a, char *why, size_t whylen)
{
	const char *colon = strrchr(arg, ':'), *what;
	struct addrinfo hints = { 0 }, *ai;
	char host[256];
	size_t hlen;
	long port;
	int rc;

	if (colon == NULL || colon == arg) {
		snprintf(why, whylen, "\"%s\" is not ADDR:PORT", arg);
		return -1;
	}
	if (parse_long(colon + 1, 0, PORT_MAX, &port, &what) < 0) {
		snprintf(why, whylen, "\"%s\" %s (allowed 0 to %d)", colon + 1, what, PORT_MAX);
		return -1;
	}
	hlen = colon - arg;
	if (arg[0] == '[' && hlen >= 2 && arg[hlen - 1] == ']')
		arg++, hlen -= 2;
	if (hlen >= sizeof host) {
		snprintf(why, whylen, "address is too long");
		return -1;
	}
	memcpy(host, arg, hlen);
	host[hlen] = '\0';
	/* IPv4 first: "localhost" should not land on ::1 where IPv6 may be off. */
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, NULL, &hints, &ai) != 0) {
		hints.ai_family = AF_INET6;
		if ((rc = getaddrinfo(host, NULL, &hints, &ai)) != 0) {
			snprintf(why, whylen, "cannot resolve \"%s\": %s", host, gai_strerror(rc));
			return -1;
		}
	}
	memcpy(&a->ss, ai->ai_addr, ai->ai_addrlen);
	a->len = ai->ai_addrlen;
	freeaddrinfo(ai);
	if (a->ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
	return 0;
}

void
httpd_addr_option(const char *opt, const char *arg, struct httpd_addr *a)
{
	char why[512];

	if (httpd_addr_parse(arg, a, why, sizeof why) < 0)
		die(EXIT_USAGE, "option %s: %s", opt, why);
}

unsigned
httpd_addr_port(const struct httpd_addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

/* --- answers ---------------------------------------------------------------- */

enum MHD_Result
httpd_send(struct httpd_req *r, unsigned status, struct MHD_Response *resp,
    const char *const *headers)
{
	enum MHD_Result rc;

	xalloc_check(resp);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	for (; headers != NULL && headers[0] != NULL; headers += 2)
		MHD_add_response_header(resp, headers[0], headers[1]);
	rc = MHD_queue_response(r->c, status, resp);
	MHD_destroy_response(resp);
	if (r->srv->answered != NULL)
		r->srv->answered(r, status);
	return rc;
}

enum MHD_Result
httpd_send_json(struct httpd_req *r, unsigned status, const char *body,
    const char *const *headers)
{
	return httpd_send(r, status, MHD_create_response_from_buffer(strlen(body), (void *)body,
	    MHD_RESPMEM_MUST_COPY), headers);
}

enum MHD_Result
httpd_send_error(struct httpd_req *r, unsigned status, const char *code)
{
	char body[128];

	snprintf(body, sizeof body, "{\"error\":\"%s\"}", code);
	return httpd_send_json(r, status, body, NULL);
}

enum MHD_Result
httpd_method_not_allowed(struct httpd_req *r, const char *allow)
{
	return httpd_send_json(r, MHD_HTTP_METHOD_NOT_ALLOWED, "{\"error\":\"method_not_allowed\"}",
	    (const char *[]){ MHD_HTTP_HEADER_ALLOW, allow, NULL });
}

/* --- the request lifecycle -------------------------------------------------- */

/* True when the request declares a Content-Length over max. */
static int
declared_too_big(struct MHD_Connection *c, unsigned long long max)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_LENGTH);

	return cl != NULL && strtoull(cl, NULL, 10) > max;
}

/* libmicrohttpd calls it first with the headers, then per piece of body, then once more. */
static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
    const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct httpd *srv = cls;
	struct httpd_req *r = *con_cls;

	(void)version;
	if (r == NULL) {
		r = xcalloc(1, srv->req_size);
		*con_cls = r;
		r->srv = srv;
		r->c = c;
		r->method = method;
		r->url = url;
		r->body.max = srv->body_max;
		if (srv->opened != NULL)
			srv->opened(r);
		/* Refuse before reading a body we would only throw away. */
		if (declared_too_big(c, srv->body_max))
			return httpd_send_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large");
		return MHD_YES;
	}
	r->c = c;
	r->method = method;
	r->url = url;
	if (*upload_size > 0) {
		if (!r->too_big && xbuf_add(&r->body, upload, *upload_size) < 0)
			r->too_big = 1;
		*upload_size = 0;
		return MHD_YES;
	}
	return srv->handle(r);
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct httpd *srv = cls;
	struct httpd_req *r = *con_cls;

	(void)c;
	(void)toe;
	if (r == NULL)
		return;
	if (srv->closed != NULL)
		srv->closed(r);
	buf_free(&r->body);
	free(r);
	*con_cls = NULL;
}

/* --- the daemon ------------------------------------------------------------- */

/*
 * MHD_OPTION_EXTERNAL_LOGGER: libmicrohttpd's messages as "PROG: libmicrohttpd: ...".
 * A message repeated within a second is counted, not printed: one client
 * over its connection limit must not fill the log with a line per attempt.
 */
static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
	static char last[1024];
	static double last_at;
	static unsigned long repeated;
	char buf[1024];
	double now = now_seconds();
	size_t n;

	(void)cls;
	vsnprintf(buf, sizeof buf, fmt, ap);
	n = strlen(buf);
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	pthread_mutex_lock(&log_lock);
	if (strcmp(buf, last) == 0 && now - last_at < 1.0) {
		repeated++;
	} else {
		if (repeated > 0)
			warning("libmicrohttpd: (%lu more times) %s", repeated, last);
		warning("libmicrohttpd: %s", buf);
		memcpy(last, buf, sizeof last);
		last_at = now;
		repeated = 0;
	}
	pthread_mutex_unlock(&log_lock);
}

/* The readiness line, with the port actually bound (port 0 picks one). */
static void
announce(struct MHD_Daemon *d, const struct httpd_addr *a)
{
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	char host[NI_MAXHOST];
	int v6 = a->ss.ss_family == AF_INET6;

	if (info == NULL || getnameinfo((const struct sockaddr *)&a->ss, a->len, host,
	    sizeof host, NULL, 0, NI_NUMERICHOST) != 0)
		die(EXIT_BUG, "cannot tell which address is being listened on");
	if (printf("{\"listening\":\"%s%s%s:%u\"}\n", v6 ? "[" : "", host, v6 ? "]" : "",
	    (unsigned)info->port) < 0 || fflush(stdout) == EOF)
		die(EXIT_OUTPUT, "writing the listening line failed: %s", strerror(errno));
}

static int
hex_digit(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	    c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/*
 * MHD_OPTION_UNESCAPE_CALLBACK: libmicrohttpd's own unescaping turns %00 into
 * a NUL that silently cuts a path or an argument short (/stock/A%00B would
 * answer for A). This one decodes every %XX but %00, which stays as written,
 * so such a path names nothing and is answered as such.
 */
static size_t
unescape_keeping_nul(void *cls, struct MHD_Connection *c, char *s)
{
	char *w = s;

	(void)cls;
	(void)c;
	for (const char *r = s; *r != '\0';) {
		int hi = r[0] == '%' ? hex_digit(r[1]) : -1;
		int lo = hi >= 0 ? hex_digit(r[2]) : -1;

		if (lo >= 0 && (hi | lo) != 0) {
			*w++ = (char)(hi * 16 + lo);
			r += 3;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}

void
httpd_start(struct httpd *srv, const struct httpd_addr *a, const char *shown)
{
	struct MHD_OptionItem opts[] = {
		{ MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL },	/* first, as it asks */
		{ MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)unescape_keeping_nul, NULL },
		{ MHD_OPTION_SOCK_ADDR, 0, (void *)&a->ss },
		{ MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, srv },
		{ MHD_OPTION_CONNECTION_LIMIT, srv->connection_limit, NULL },
		{ MHD_OPTION_CONNECTION_TIMEOUT, srv->idle_timeout, NULL },
		{ MHD_OPTION_PER_IP_CONNECTION_LIMIT, 0, NULL },
		{ MHD_OPTION_THREAD_POOL_SIZE, srv->threads, NULL },
		{ MHD_OPTION_END, 0, NULL },
	};
	unsigned flags = srv->flags | MHD_USE_ERROR_LOG;
	const char *env = getenv("OA_HTTP_MAX_PER_CLIENT");

	if (env != NULL && *env != '\0')
		srv->per_client_limit = (unsigned)option_long("OA_HTTP_MAX_PER_CLIENT", env, 0,
		    1000000);
	opts[6].value = srv->per_client_limit;
	if (srv->threads == 0)
		opts[7].option = MHD_OPTION_END;
	if (a->ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* The port is only for libmicrohttpd's messages; it binds to a->ss. */
	srv->d = MHD_start_daemon(flags, (uint16_t)httpd_addr_port(a), NULL, NULL, on_request,
	    srv, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	if (srv->d == NULL)
		die(EXIT_UNAVAILABLE, "cannot listen on %s", shown);
	announce(srv->d, a);
}

/* --- signals ---------------------------------------------------------------- */

static void
stop_signals(sigset_t *sigs)
{
	sigemptyset(sigs);
	sigaddset(sigs, SIGINT);
	sigaddset(sigs, SIGTERM);
}

void
httpd_block_signals(void)
{
	sigset_t sigs;

	signal(SIGPIPE, SIG_IGN);
	stop_signals(&sigs);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
}

void
httpd_wait(void)
{
	sigset_t sigs;
	int sig;

	stop_signals(&sigs);
	while (sigwait(&sigs, &sig) != 0)
		;
}

void
httpd_stop(struct httpd *srv)
{
	MHD_stop_daemon(srv->d);
	srv->d = NULL;
}
