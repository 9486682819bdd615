/*
 * httpd: the libmicrohttpd skeleton of our HTTP servers (order-api,
 * vendor-mock): where to listen (ADDR:PORT), the daemon started with our
 * options and logger, the readiness line, the request lifecycle with a capped
 * body, JSON answers, 405 with Allow, and waiting for SIGTERM or SIGINT. A
 * server brings only its routes and its own logic.
 */
#ifndef OA_HTTPD_H
#define OA_HTTPD_H

#include <sys/socket.h>

#include <stddef.h>

#include <microhttpd.h>

#include "buf.h"

/* Where a server listens. */
struct httpd_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

/*
 * The first member of each server's own request struct: httpd allocates
 * req_size bytes, zeroed, when a request begins and frees them when it ends.
 */
struct httpd_req {
	struct httpd *srv;
	struct MHD_Connection *c;
	const char *method, *url;
	struct buf body;	/* the uploaded body, capped at srv->body_max */
	int too_big;		/* the body passed the cap without saying so up front */
};

struct httpd {
	/* Set by the server before httpd_start. */
	size_t req_size;	/* sizeof its request struct */
	size_t body_max;	/* a declared Content-Length above it is answered 413 at once */
	unsigned flags;		/* MHD_USE_* threading flags; httpd adds error log and IPv6 */
	unsigned threads;	/* MHD_OPTION_THREAD_POOL_SIZE; 0: no pool */
	unsigned connection_limit;
	/*
	 * MHD_OPTION_PER_IP_CONNECTION_LIMIT: connections one client address
	 * may hold at once, so one client cannot take them all; 0: no limit.
	 * The environment's OA_HTTP_MAX_PER_CLIENT, when set, overrides it.
	 */
	unsigned per_client_limit;
	/*
	 * Seconds a connection may sit idle or stall in its request line,
	 * headers or body (MHD_OPTION_CONNECTION_TIMEOUT) before it is closed.
	 */
	unsigned idle_timeout;
	/* The whole request has arrived: answer it (or suspend it). */
	enum MHD_Result (*handle)(struct httpd_req *r);
	/* Optional: a request begins; and it ends (free what the server hung on it). */
	void (*opened)(struct httpd_req *r);
	void (*closed)(struct httpd_req *r);
	/* Optional: a response with this status was queued (vendor-mock's --log). */
	void (*answered)(struct httpd_req *r, unsigned status);
	/* Set by httpd_start. */
	struct MHD_Daemon *d;
};


/*
 * Parse ADDR:PORT, ADDR a name, IPv4 or [IPv6]; a name is looked up for IPv4
 * first. Returns 0, or -1 with why written (a phrase, no option name).
 */
int httpd_addr_parse(const char *arg, struct httpd_addr *a, char *why, size_t whylen);
/* httpd_addr_parse for option opt, exiting 64 "option OPT: why" when bad. */
void httpd_addr_option(const char *opt, const char *arg, struct httpd_addr *a);
/* The port of a, host order. */
unsigned httpd_addr_port(const struct httpd_addr *a);

/*
 * Ignore SIGPIPE and block SIGTERM and SIGINT, which httpd_wait takes: call
 * before starting any thread, so none runs a handler.
 */
void httpd_block_signals(void);
/*
 * Start serving on a, then print {"listening":"ADDR:PORT"} with the port
 * actually bound and flush it. Exits 69 "cannot listen on SHOWN" when the
 * daemon cannot start, 74 when the line cannot be written.
 */
void httpd_start(struct httpd *srv, const struct httpd_addr *a, const char *shown);
/* Wait until SIGTERM or SIGINT arrives. */
void httpd_wait(void);
/* Stop the daemon: its threads end, open connections close. */
void httpd_stop(struct httpd *srv);

/*
 * Queue resp as application/json with the extra headers { name, value, ...,
 * NULL } (headers may be NULL), then tell srv->answered. resp is the
 * server's own (a streamed body); NULL is out of memory (exit 71).
 */
enum MHD_Result httpd_send(struct httpd_req *r, unsigned status, struct MHD_Response *resp,
    const char *const *headers);
/* httpd_send of a copy of the JSON text body. */
enum MHD_Result httpd_send_json(struct httpd_req *r, unsigned status, const char *body,
    const char *const *headers);
/* {"error":"CODE"}: code is a plain identifier (nothing to escape). */
enum MHD_Result httpd_send_error(struct httpd_req *r, unsigned status, const char *code);
/* 405 {"error":"method_not_allowed"} with Allow: allow ("GET, HEAD"). */
enum MHD_Result httpd_method_not_allowed(struct httpd_req *r, const char *allow);

#endif
