/* http: libcurl handles set up one safe way, and one reading of what a response means. */
#ifndef OA_HTTP_H
#define OA_HTTP_H

#include <stddef.h>
#include <curl/curl.h>

#include "buf.h"
#include "retry.h"

/* Retry-After is honoured up to this many seconds; a longer wait is cut to it. */
#define HTTP_RETRY_AFTER_MAX 60.0

struct http_limits {
	double timeout;		/* whole attempt, seconds */
	double connect_timeout;	/* connecting, seconds */
	size_t max_bytes;	/* largest response body accepted */
};

/* One response: the body, its status, and what the server asked of us. */
struct http_resp {
	struct buf body;	/* body.max: the largest body accepted */
	int too_big;		/* the body passed body.max and the transfer was aborted */
	int nomem;		/* no memory to hold the body */
	double retry_after;	/* seconds the server asked us to wait (http_result), or -1 */
	struct curl_slist *headers;	/* request headers we set, freed with the response */
	char err[CURL_ERROR_SIZE];
};

enum http_outcome {
	HTTP_OK,		/* a 2xx response, whole */
	HTTP_TRANSIENT,		/* connection error, timeout, 408, 429, 5xx: worth retrying */
	HTTP_PERMANENT		/* anything else: retrying will not help */
};

/* curl_global_init once per program; exits EXIT_BUG (70) if libcurl cannot start. */
void http_global_init(void);
void http_global_cleanup(void);
/* 0 if libcurl reads url as an absolute http:// or https:// URL, else -1 with *why set. */
int http_url_check(const char *url, const char **why);
/*
 * BASE/vendor/V/WHAT with V percent-escaped and one slash between BASE's
 * path and the rest; caller frees. NULL if base fails http_url_check.
 */
char *http_vendor_url(const char *base, const char *vendor, const char *what);

void http_resp_init(struct http_resp *r, size_t max_bytes);
/* Forget the last response (keeping the buffer) before another attempt. */
void http_resp_reset(struct http_resp *r);
void http_resp_free(struct http_resp *r);

/*
 * Point h at url with our limits: http/https only, TLS verified, no
 * redirects followed, timeouts, the body collected into r and capped.
 * Returns 0, or -1 with a message in r->err.
 */
int http_prepare(CURL *h, const char *url, const struct http_limits *lim, struct http_resp *r);
/*
 * Make h a POST of a JSON body of len bytes. The body is not copied: it must
 * stay as it is until the transfer ends. Returns 0 or -1 (r->err); out of
 * memory exits EXIT_NOMEM (71).
 */
int http_post_json(CURL *h, struct http_resp *r, const char *json, size_t len);

/*
 * A curl multi handle that runs transfers to the end, keeping their
 * connections for later ones: the one transfer loop of every program.
 */
struct http_loop {
	CURLM *multi;
	size_t active;		/* transfers added and not yet finished or removed */
};

/*
 * keep: idle connections kept open for later transfers (libcurl's default
 * follows how many transfers are added, so it shrinks as they finish and
 * closes connections the next batch needs); 0 leaves libcurl's default.
 * Out of memory exits EXIT_NOMEM (71).
 */
void http_loop_init(struct http_loop *l, long keep);
void http_loop_free(struct http_loop *l);
/* Add a prepared easy handle; it starts on the next turn of http_loop_run. */
void http_loop_add(struct http_loop *l, CURL *h);
/* Take a running transfer out (a time limit of the caller's own passed); done() is not called. */
void http_loop_remove(struct http_loop *l, CURL *h);
/*
 * Run until every added transfer has finished, calling done(h, result, arg)
 * for each as it does (h is removed from the loop before the call).
 */
void http_loop_run(struct http_loop *l, void (*done)(CURL *h, CURLcode rc, void *arg),
    void *arg);
/*
 * http_loop_run for a caller with timers of its own (retries, time limits):
 * wake(arg) runs after each turn's done() calls; it may add and remove
 * transfers, and returns the seconds until it next needs to run, or < 0 when
 * it expects nothing more. The loop ends when no transfer is left and wake
 * expects nothing; the wait between turns is at most a second.
 */
void http_loop_drive(struct http_loop *l, void (*done)(CURL *h, CURLcode rc, void *arg),
    double (*wake)(void *arg), void *arg);

/*
 * The two halves of a turn, for a caller with a loop of its own (fulfil's
 * reads its input too): step runs the transfers and calls done() for each
 * that finished (removed from the loop first), returning how many; wait
 * sleeps until a transfer needs attention, fd (if >= 0) is readable,
 * http_loop_wakeup is called (from any thread), or wait_ms passed.
 */
size_t http_loop_step(struct http_loop *l, void (*done)(CURL *h, CURLcode rc, void *arg),
    void *arg);
void http_loop_wait(struct http_loop *l, int fd, long wait_ms);
void http_loop_wakeup(struct http_loop *l);

/*
 * What a finished transfer means. *status gets the HTTP status (0 if none),
 * r->retry_after what the server's Retry-After asked (libcurl reads it); why
 * gets a one-line reason for anything but HTTP_OK.
 */
enum http_outcome http_result(CURL *h, CURLcode rc, struct http_resp *r, long *status,
    char *why, size_t whylen);
/*
 * The decision http_result makes, from what it read off the handle: libcurl's
 * result, the HTTP status, and r's too_big, nomem, err and body.max. 2xx is
 * OK; 408, 429, 5xx, timeouts and connection errors are transient; other
 * statuses, a body past its cap and errors no retry can mend are permanent.
 */
enum http_outcome http_outcome_of(CURLcode rc, long status, const struct http_resp *r,
    char *why, size_t whylen);
/*
 * The wait before the next attempt: the backoff, or longer if Retry-After
 * asked, but never more than HTTP_RETRY_AFTER_MAX for Retry-After's sake.
 */
double http_retry_delay(struct backoff *b, const struct http_resp *r);

#endif
