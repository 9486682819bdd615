/* http: the one place that decides how we talk to vendors over HTTP and what their answers mean. */
#include "http.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "policy.h"
#include "xalloc.h"

void
http_global_init(void)
{
	CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);

	if (rc != CURLE_OK)
		die(EXIT_BUG, "libcurl: cannot initialise: %s", curl_easy_strerror(rc));
}

void
http_global_cleanup(void)
{
	curl_global_cleanup();
}

/* A space or control character: libcurl refuses them, and this says why in plain words. */
static int
has_control(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return 1;
	return 0;
}

/* url parsed by libcurl, as libcurl will read it when fetching; NULL with *why if it is not one. */
static CURLU *
parse_url(const char *url, const char **why)
{
	CURLU *u = xalloc_check(curl_url());
	CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
	char *scheme = NULL, *host = NULL;

	if (rc == CURLUE_OUT_OF_MEMORY)
		die_nomem();
	if (rc == CURLUE_OK) {
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
		curl_url_get(u, CURLUPART_HOST, &host, 0);
	}
	if (rc == CURLUE_NO_HOST || (rc == CURLUE_OK && (host == NULL || *host == '\0')))
		*why = "has no host";
	else if (rc == CURLUE_OK && strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
		*why = "is not an http:// or https:// URL";
	else if (rc != CURLUE_OK && has_control(url))
		*why = "contains a space or control character";
	else if (rc == CURLUE_BAD_SCHEME || rc == CURLUE_UNSUPPORTED_SCHEME ||
	    rc == CURLUE_BAD_SLASHES || rc == CURLUE_MALFORMED_INPUT)
		*why = "is not an http:// or https:// URL";
	else if (rc != CURLUE_OK)
		*why = "is not a valid URL";
	else
		*why = NULL;
	curl_free(scheme);
	curl_free(host);
	if (*why == NULL)
		return u;
	curl_url_cleanup(u);
	return NULL;
}

int
http_url_check(const char *url, const char **why)
{
	CURLU *u = parse_url(url, why);

	curl_url_cleanup(u);
	return u != NULL ? 0 : -1;
}

char *
http_vendor_url(const char *base, const char *vendor, const char *what)
{
	const char *why;
	CURLU *u = parse_url(base, &why);
	char *esc, *path = NULL, *url = NULL, *copy;
	size_t plen;

	if (u == NULL)
		return NULL;
	esc = xalloc_check(curl_easy_escape(NULL, vendor, 0));
	curl_url_get(u, CURLUPART_PATH, &path, 0);
	/* The base's own path is kept, with one slash between it and ours. */
	plen = path != NULL ? strlen(path) : 0;
	while (plen > 0 && path[plen - 1] == '/')
		plen--;
	copy = xasprintf("%.*s/vendor/%s/%s", (int)plen, path != NULL ? path : "", esc, what);
	if (curl_url_set(u, CURLUPART_PATH, copy, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK)
		die_nomem();
	free(copy);
	copy = xstrdup(url);
	curl_free(url);
	curl_free(path);
	curl_free(esc);
	curl_url_cleanup(u);
	return copy;
}

void
http_resp_init(struct http_resp *r, size_t max_bytes)
{
	memset(r, 0, sizeof *r);
	r->body.max = max_bytes;
	r->retry_after = -1;
}

void
http_resp_reset(struct http_resp *r)
{
	buf_reset(&r->body);
	r->too_big = 0;
	r->nomem = 0;
	r->retry_after = -1;
	r->err[0] = '\0';
}

void
http_resp_free(struct http_resp *r)
{
	buf_free(&r->body);
	curl_slist_free_all(r->headers);
	r->headers = NULL;
}

static size_t
on_body(char *data, size_t size, size_t n, void *arg)
{
	struct http_resp *r = arg;
	size_t add = size * n;

	if (buf_add(&r->body, data, add) == 0)
		return add;
	/* Returning less than was given aborts the transfer (CURLE_WRITE_ERROR). */
	if (errno == ENOMEM) {
		r->nomem = 1;
		snprintf(r->err, sizeof r->err, "out of memory for a %zu-byte response",
		    r->body.len + add);
	} else {
		r->too_big = 1;
	}
	return 0;
}

#define SET(h, opt, val) do { \
	CURLcode rc_ = curl_easy_setopt((h), (opt), (val)); \
	if (rc_ != CURLE_OK) { \
		snprintf(r->err, sizeof r->err, "libcurl: setting %s: %s", #opt, \
		    curl_easy_strerror(rc_)); \
		return -1; \
	} \
} while (0)

int
http_prepare(CURL *h, const char *url, const struct http_limits *lim, struct http_resp *r)
{
	http_resp_reset(r);
	r->body.max = lim->max_bytes;
	SET(h, CURLOPT_URL, url);
	SET(h, CURLOPT_PROTOCOLS_STR, "http,https");
	SET(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	SET(h, CURLOPT_FOLLOWLOCATION, 0L);
	SET(h, CURLOPT_SSL_VERIFYPEER, 1L);
	SET(h, CURLOPT_SSL_VERIFYHOST, 2L);
	SET(h, CURLOPT_NOSIGNAL, 1L);
	SET(h, CURLOPT_TIMEOUT_MS, (long)(lim->timeout * 1000));
	SET(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(lim->connect_timeout * 1000));
	SET(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)lim->max_bytes);
	SET(h, CURLOPT_TCP_KEEPALIVE, 1L);
	/* Compressed responses are welcome; the cap applies to what they inflate to. */
	SET(h, CURLOPT_ACCEPT_ENCODING, "");
	SET(h, CURLOPT_USERAGENT, "oa/" OA_VERSION);
	SET(h, CURLOPT_WRITEFUNCTION, on_body);
	SET(h, CURLOPT_WRITEDATA, r);
	SET(h, CURLOPT_ERRORBUFFER, r->err);
	return 0;
}

int
http_post_json(CURL *h, struct http_resp *r, const char *json, size_t len)
{
	if (r->headers == NULL) {
		struct curl_slist *l;

		l = xalloc_check(curl_slist_append(NULL, "Content-Type: application/json"));
		/* Expect: 100-continue only costs a round trip for small bodies. */
		r->headers = xalloc_check(curl_slist_append(l, "Expect:"));
	}
	SET(h, CURLOPT_HTTPHEADER, r->headers);
	/* A small JSON answer is not worth decompressing. */
	SET(h, CURLOPT_ACCEPT_ENCODING, NULL);
	SET(h, CURLOPT_POSTFIELDSIZE, (long)len);
	SET(h, CURLOPT_POSTFIELDS, json);
	return 0;
}

/* --- the loop ------------------------------------------------------------------ */

void
http_loop_init(struct http_loop *l, long keep)
{
	l->multi = xalloc_check(curl_multi_init());
	l->active = 0;
	if (keep > 0)
		curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, keep);
}

void
http_loop_free(struct http_loop *l)
{
	curl_multi_cleanup(l->multi);
}

void
http_loop_add(struct http_loop *l, CURL *h)
{
	CURLMcode mc = curl_multi_add_handle(l->multi, h);

	if (mc != CURLM_OK)
		die(EXIT_BUG, "libcurl: adding a transfer: %s", curl_multi_strerror(mc));
	l->active++;
}

void
http_loop_remove(struct http_loop *l, CURL *h)
{
	if (curl_multi_remove_handle(l->multi, h) == CURLM_OK)
		l->active--;
}

size_t
http_loop_step(struct http_loop *l, void (*done)(CURL *h, CURLcode rc, void *arg), void *arg)
{
	int running, left;
	size_t n = 0;
	CURLMsg *msg;
	CURLMcode mc;

	if ((mc = curl_multi_perform(l->multi, &running)) != CURLM_OK)
		die(EXIT_BUG, "libcurl: %s", curl_multi_strerror(mc));
	while ((msg = curl_multi_info_read(l->multi, &left)) != NULL) {
		CURL *h = msg->easy_handle;
		CURLcode rc = msg->data.result;

		if (msg->msg != CURLMSG_DONE)
			continue;
		http_loop_remove(l, h);
		done(h, rc, arg);
		n++;
	}
	return n;
}

void
http_loop_wait(struct http_loop *l, int fd, long wait_ms)
{
	struct curl_waitfd in = { .fd = fd, .events = CURL_WAIT_POLLIN };
	CURLMcode mc;

	/* libcurl shortens the wait to its own timers (new transfers, timeouts). */
	if ((mc = curl_multi_poll(l->multi, &in, fd >= 0, (int)wait_ms, NULL)) != CURLM_OK)
		die(EXIT_BUG, "libcurl: %s", curl_multi_strerror(mc));
}

void
http_loop_wakeup(struct http_loop *l)
{
	curl_multi_wakeup(l->multi);
}

void
http_loop_drive(struct http_loop *l, void (*done)(CURL *h, CURLcode rc, void *arg),
    double (*wake)(void *arg), void *arg)
{
	for (;;) {
		double due;
		long wait_ms = 1000;

		http_loop_step(l, done, arg);
		/* After done(): what it scheduled counts for the wait below. */
		due = wake != NULL ? wake(arg) : -1;
		if (l->active == 0 && due < 0)
			return;
		if (due >= 0 && due < 1.0)
			wait_ms = (long)ceil(due * 1000);
		http_loop_wait(l, -1, wait_ms);
	}
}

void
http_loop_run(struct http_loop *l, void (*done)(CURL *h, CURLcode rc, void *arg), void *arg)
{
	http_loop_drive(l, done, NULL, arg);
}

static int
permanent_curl_error(CURLcode rc)
{
	switch (rc) {
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_NOT_BUILT_IN:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_FILESIZE_EXCEEDED:
	case CURLE_TOO_MANY_REDIRECTS:
	case CURLE_OUT_OF_MEMORY:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_LOGIN_DENIED:
		return 1;
	default:
		return 0;
	}
}

enum http_outcome
http_outcome_of(CURLcode rc, long status, const struct http_resp *r, char *why, size_t whylen)
{
	if (rc != CURLE_OK) {
		if (r->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
			snprintf(why, whylen, "response larger than %zu bytes", r->body.max);
			return HTTP_PERMANENT;
		}
		snprintf(why, whylen, "%s", r->err[0] ? r->err : curl_easy_strerror(rc));
		return permanent_curl_error(rc) || r->nomem ? HTTP_PERMANENT
		    : HTTP_TRANSIENT;
	}
	if (status >= 200 && status < 300)
		return HTTP_OK;
	snprintf(why, whylen, "HTTP %ld", status);
	if (status == 408 || status == 429 || status >= 500)
		return HTTP_TRANSIENT;
	return HTTP_PERMANENT;
}

enum http_outcome
http_result(CURL *h, CURLcode rc, struct http_resp *r, long *status, char *why, size_t whylen)
{
	curl_off_t asked = 0;

	*status = 0;
	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	/* libcurl reads Retry-After in both forms (seconds, HTTP-date); 0 when absent. */
	if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &asked) == CURLE_OK && asked > 0)
		r->retry_after = (double)asked;
	return http_outcome_of(rc, *status, r, why, whylen);
}

double
http_retry_delay(struct backoff *b, const struct http_resp *r)
{
	double d = backoff_next(b);
	double asked = r->retry_after;

	if (asked > HTTP_RETRY_AFTER_MAX)
		asked = HTTP_RETRY_AFTER_MAX;
	return asked > d ? asked : d;
}
