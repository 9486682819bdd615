/* amqp: connecting to RabbitMQ, declaring a work queue's topology, publishing and reading frames. */
#include "amqp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "config.h"
#include "log.h"
#include "policy.h"
#include "retry.h"
#include "xalloc.h"

#define CHANNEL		1
#define FRAME_MAX	131072
#define CONNECT_TIMEOUT	5	/* seconds for the TCP connect */
#define RPC_TIMEOUT	30	/* seconds for any request/reply with the broker */

/*
 * RABBITMQ_URL as a list of nodes, comma-separated (spaces around a comma
 * ignored); each process starts at a random one, so workers spread.
 */
void
mq_init(struct mq *m, int heartbeat, int confirms)
{
	const char *p = config_amqp_url();

	memset(m, 0, sizeof *m);
	m->heartbeat = heartbeat;
	m->confirms = confirms;
	while (*p != '\0') {
		size_t n = strcspn(p, ",");
		const char *e = p + n;

		while (p < e && *p == ' ')
			p++;
		while (e > p && e[-1] == ' ')
			e--;
		if (e > p && m->nodes < MQ_NODES_MAX) {
			char *t;

			if ((size_t)(e - p) >= sizeof m->urls[0])
				die(EXIT_USAGE, "RABBITMQ_URL: a node's URL is longer than %zu bytes",
				    sizeof m->urls[0] - 1);
			memcpy(m->urls[m->nodes], p, (size_t)(e - p));
			m->urls[m->nodes][e - p] = '\0';
			t = config_redact_url(m->urls[m->nodes]);
			snprintf(m->targets[m->nodes], sizeof m->targets[0], "%s", t);
			free(t);
			m->nodes++;
		} else if (e > p) {
			die(EXIT_USAGE, "RABBITMQ_URL lists more than %d nodes", MQ_NODES_MAX);
		}
		p += n + (p[n] == ',');
	}
	if (m->nodes == 0)
		die(EXIT_USAGE, "RABBITMQ_URL lists no node (it is \"%s\")", config_amqp_url());
	m->node = m->nodes > 1 ? (int)(((unsigned)getpid() ^ (unsigned)time(NULL)) % (unsigned)m->nodes) : 0;
	snprintf(m->target, sizeof m->target, "%s", m->targets[m->node]);
}

int
mq_connected(const struct mq *m)
{
	return m->conn != NULL;
}

/* Say in m->why what went wrong, for the caller's message. */
static void
set_why(struct mq *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->why, sizeof m->why, fmt, ap);
	va_end(ap);
}

/* Forget a connection that failed: no polite close, it would only wait. */
static void
drop(struct mq *m)
{
	if (m->conn == NULL)
		return;
	amqp_destroy_connection(m->conn);
	m->conn = NULL;
}

void
mq_drop(struct mq *m)
{
	drop(m);
}

void
mq_close(struct mq *m)
{
	if (m->conn == NULL)
		return;
	/* A lost node: the next connect starts at the next one. */
	if (m->nodes > 1)
		m->node = (m->node + 1) % m->nodes;
	amqp_channel_close(m->conn, CHANNEL, AMQP_REPLY_SUCCESS);
	amqp_connection_close(m->conn, AMQP_REPLY_SUCCESS);
	drop(m);
}

/* Record why a broker's close happened; answer it so the broker can finish. */
static void
server_closed(struct mq *m, const char *doing, amqp_method_t *method)
{
	if (method->id == AMQP_CONNECTION_CLOSE_METHOD) {
		amqp_connection_close_t *c = method->decoded;
		amqp_connection_close_ok_t ok = { 0 };

		m->code = c->reply_code;
		set_why(m, "%s: %.*s", doing, (int)c->reply_text.len, (char *)c->reply_text.bytes);
		amqp_send_method(m->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
	} else if (method->id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_t *c = method->decoded;
		amqp_channel_close_ok_t ok = { 0 };

		m->code = c->reply_code;
		set_why(m, "%s: %.*s", doing, (int)c->reply_text.len, (char *)c->reply_text.bytes);
		amqp_send_method(m->conn, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
	} else {
		set_why(m, "%s: unexpected %s from the broker", doing, amqp_method_name(method->id));
	}
}

/* 1 if the reply is normal; else m->why and m->code say what happened. */
static int
reply_ok(struct mq *m, amqp_rpc_reply_t r, const char *doing)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		return 1;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		server_closed(m, doing, &r.reply);
		return 0;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		set_why(m, "%s: %s", doing, amqp_error_string2(r.library_error));
		return 0;
	default:
		set_why(m, "%s: no reply from the broker", doing);
		return 0;
	}
}

static int
last_ok(struct mq *m, const char *doing)
{
	return reply_ok(m, amqp_get_rpc_reply(m->conn), doing);
}

static amqp_table_entry_t
entry_utf8(const char *key, const char *value)
{
	amqp_table_entry_t e;

	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_UTF8;
	e.value.value.bytes = amqp_cstring_bytes(value);
	return e;
}

static amqp_table_entry_t
entry_long(const char *key, long value)
{
	amqp_table_entry_t e;

	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_I64;
	e.value.value.i64 = value;
	return e;
}

static amqp_table_entry_t
entry_bool(const char *key, int value)
{
	amqp_table_entry_t e;

	e.key = amqp_cstring_bytes(key);
	e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
	e.value.value.boolean = value;
	return e;
}

/* Without these capabilities a wrong password is just a dropped socket. */
static amqp_rpc_reply_t
login(struct mq *m, const struct amqp_connection_info *info)
{
	amqp_table_entry_t caps[] = {
		entry_bool("authentication_failure_close", 1),
		entry_bool("consumer_cancel_notify", 1),
		entry_bool("publisher_confirms", 1),
	};
	amqp_table_entry_t props[2];
	amqp_table_t t;

	props[0].key = amqp_cstring_bytes("capabilities");
	props[0].value.kind = AMQP_FIELD_KIND_TABLE;
	props[0].value.value.table.num_entries = sizeof caps / sizeof caps[0];
	props[0].value.value.table.entries = caps;
	props[1] = entry_utf8("connection_name", progname);
	t.num_entries = 2;
	t.entries = props;
	return amqp_login_with_properties(m->conn, *info->vhost ? info->vhost : "/", 0,
	    FRAME_MAX, m->heartbeat, &t, AMQP_SASL_METHOD_PLAIN, info->user, info->password);
}

static int
open_channel(struct mq *m)
{
	amqp_channel_open(m->conn, CHANNEL);
	if (!last_ok(m, "opening a channel"))
		return -1;
	if (m->confirms) {
		amqp_confirm_select(m->conn, CHANNEL);
		if (!last_ok(m, "turning on publisher confirms"))
			return -1;
	}
	m->next_seq = 1;
	return 0;
}

/*
 * The TLS options of an amqps:// URL, from its query (RabbitMQ's URI
 * spec): cacertfile, certfile, keyfile, verify (verify_peer, the default, or
 * verify_none), server_name_indication (only the URL's own host: rabbitmq-c
 * sends that). NULL, or why the query is wrong.
 */
struct tls {
	const char *cacert, *cert, *key;
	int verify;
};

static const char *
tls_query(char *query, struct tls *t, const char *host)
{
	*t = (struct tls){ NULL, NULL, NULL, 1 };
	for (char *kv = strtok(query, "&"); kv != NULL; kv = strtok(NULL, "&")) {
		char *v = strchr(kv, '=');

		if (v == NULL)
			return "a query parameter without a value";
		*v++ = '\0';
		if (strcmp(kv, "cacertfile") == 0)
			t->cacert = v;
		else if (strcmp(kv, "certfile") == 0)
			t->cert = v;
		else if (strcmp(kv, "keyfile") == 0)
			t->key = v;
		else if (strcmp(kv, "verify") == 0 && (strcmp(v, "verify_peer") == 0 ||
		    strcmp(v, "verify_none") == 0))
			t->verify = strcmp(v, "verify_peer") == 0;
		else if (strcmp(kv, "server_name_indication") == 0 && host != NULL &&
		    strcmp(v, host) == 0)
			;
		else if (strcmp(kv, "server_name_indication") == 0)
			return "server_name_indication other than the URL's host (not supported)";
		else
			return "an unknown query parameter (cacertfile, certfile, keyfile, verify, "
			    "server_name_indication)";
	}
	if ((t->cert == NULL) != (t->key == NULL))
		return "certfile and keyfile go together";
	return NULL;
}

static int
open_socket(struct mq *m, const struct amqp_connection_info *info, const struct tls *t)
{
	struct timeval connect_tv = { CONNECT_TIMEOUT, 0 }, rpc_tv = { RPC_TIMEOUT, 0 };
	amqp_socket_t *s;
	int rc;

	m->conn = xalloc_check(amqp_new_connection());
	if (!info->ssl) {
		s = xalloc_check(amqp_tcp_socket_new(m->conn));
	} else {
		s = xalloc_check(amqp_ssl_socket_new(m->conn));
		/* Verified by default: the peer's chain and its name (rabbitmq-c's defaults). */
		amqp_ssl_socket_set_verify_peer(s, t->verify);
		amqp_ssl_socket_set_verify_hostname(s, t->verify);
		if (t->cacert != NULL && amqp_ssl_socket_set_cacert(s, t->cacert) != AMQP_STATUS_OK) {
			set_why(m, "cannot read the CA certificates in %s (cacertfile)", t->cacert);
			m->permanent = 1;
			return -1;
		}
		if (t->cert != NULL && amqp_ssl_socket_set_key(s, t->cert, t->key) != AMQP_STATUS_OK) {
			set_why(m, "cannot use the certificate %s with the key %s (certfile, keyfile)",
			    t->cert, t->key);
			m->permanent = 1;
			return -1;
		}
	}
	rc = amqp_socket_open_noblock(s, info->host, info->port, &connect_tv);
	if (rc != AMQP_STATUS_OK) {
		set_why(m, "cannot connect to %s: %s", m->target, amqp_error_string2(rc));
		/* A certificate that does not verify will not verify on the next try. */
		m->permanent = rc == AMQP_STATUS_SSL_PEER_VERIFY_FAILED ||
		    rc == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED;
		return -1;
	}
	amqp_set_rpc_timeout(m->conn, &rpc_tv);
	return 0;
}

static int
connect_node(struct mq *m, const char *node_url)
{
	struct amqp_connection_info info;
	char *url = xstrdup(node_url);	/* amqp_parse_url writes into its argument */
	int rc = -1;

	m->code = 0;
	m->permanent = 0;
	drop(m);
	struct tls tls;
	char *query = strchr(url, '?');
	const char *bad;

	if (query != NULL)
		*query++ = '\0';
	if (amqp_parse_url(url, &info) != AMQP_STATUS_OK) {
		set_why(m, "RABBITMQ_URL's %s is not an amqp[s]://user:pass@host:port/vhost URL",
		    m->target);
		m->permanent = 1;
		goto out;
	}
	if (query != NULL && (!info.ssl || (bad = tls_query(query, &tls, info.host)) != NULL)) {
		set_why(m, "RABBITMQ_URL's %s: %s", m->target, !info.ssl ? "a query is only for "
		    "amqps:// (TLS) URLs" : bad);
		m->permanent = 1;
		goto out;
	}
	if (query == NULL)
		tls = (struct tls){ NULL, NULL, NULL, 1 };
	if (open_socket(m, &info, &tls) < 0)
		goto out;
	if (!reply_ok(m, login(m, &info), "logging in")) {
		/* ACCESS_REFUSED, NOT_ALLOWED (vhost): retrying cannot help. */
		m->permanent = m->code == AMQP_ACCESS_REFUSED || m->code == AMQP_NOT_ALLOWED;
		goto out;
	}
	if (open_channel(m) < 0)
		goto out;
	m->generation++;
	rc = 0;
out:
	if (rc < 0)
		drop(m);
	free(url);
	return rc;
}

/*
 * One pass over the nodes, from the current one: the first that answers is
 * used. When none does, m->why says what each said, and m->permanent is set
 * only if every node's failure was permanent.
 */
int
mq_connect(struct mq *m)
{
	char all[1024];
	size_t used = 0;
	int permanent = 1;

	all[0] = '\0';
	for (int tried = 0; tried < m->nodes; tried++) {
		int i = (m->node + tried) % m->nodes;

		snprintf(m->target, sizeof m->target, "%s", m->targets[i]);
		if (connect_node(m, m->urls[i]) == 0) {
			m->node = i;
			return 0;
		}
		permanent &= m->permanent;
		if (m->nodes > 1 && used < 800)
			used += (size_t)snprintf(all + used, sizeof all - used, "%s%.150s",
			    used ? "; " : "", m->why);
	}
	if (m->nodes > 1) {
		snprintf(m->why, sizeof m->why, "no node answered: %.480s", all);
		snprintf(m->target, sizeof m->target, "%s", m->targets[m->node]);
	}
	m->permanent = permanent;
	return -1;
}

int
mq_connect_retry(struct mq *m, double patience, volatile int *stop)
{
	struct backoff b = BACKOFF_MQ_CONNECT;
	double deadline = now_seconds() + patience;
	int warned = 0;

	for (;;) {
		double left = deadline - now_seconds(), d;

		if (mq_connect(m) == 0) {
			if (warned)
				warning("broker %s: connected again", m->target);
			return 0;
		}
		if (m->permanent) {
			warning("broker %s: %s", m->target, m->why);
			return -1;
		}
		if ((patience >= 0 && left <= 0) || (stop != NULL && *stop)) {
			warning("broker %s unavailable (gave up after %g s): %s", m->target,
			    patience, m->why);
			return -1;
		}
		if (!warned++)
			warning("broker: %s; retrying", m->why);
		else
			debugx("broker: %s; retrying", m->why);
		d = backoff_next(&b);
		sleep_seconds(patience >= 0 && d > left ? left : d, stop);
	}
}

/* The arguments that make Q a quorum queue that dead-letters poison messages to Q.dead. */
static int
declare_main(struct mq *m, const struct mq_topology *t, const char *dead, int passive)
{
	amqp_table_entry_t e[] = {
		entry_utf8("x-queue-type", "quorum"),
		/* RabbitMQ counts returns, not deliveries: N deliveries allow N-1 returns. */
		entry_long("x-delivery-limit", t->max_deliveries - 1),
		entry_utf8("x-dead-letter-exchange", ""),
		entry_utf8("x-dead-letter-routing-key", dead),
		entry_utf8("x-dead-letter-strategy", "at-least-once"),
		entry_utf8("x-overflow", "reject-publish"),
	};
	amqp_table_t args = { (int)(sizeof e / sizeof e[0]), e };

	amqp_queue_declare(m->conn, CHANNEL, amqp_cstring_bytes(t->queue), passive, 1, 0, 0,
	    passive ? amqp_empty_table : args);
	return last_ok(m, "declaring the queue") ? 0 : -1;
}

static int
declare_dead(struct mq *m, const char *dead)
{
	amqp_table_entry_t e[] = { entry_utf8("x-queue-type", "quorum") };
	amqp_table_t args = { 1, e };

	amqp_queue_declare(m->conn, CHANNEL, amqp_cstring_bytes(dead), 0, 1, 0, 0, args);
	return last_ok(m, "declaring the dead-letter queue") ? 0 : -1;
}

/* A delay queue: messages wait ttl ms, then expire back into Q, never dropped. */
static int
declare_retry(struct mq *m, const char *retry, const char *back, long ttl)
{
	amqp_table_entry_t e[] = {
		entry_utf8("x-queue-type", "quorum"),
		entry_long("x-message-ttl", ttl),
		entry_utf8("x-dead-letter-exchange", ""),
		entry_utf8("x-dead-letter-routing-key", back),
		entry_utf8("x-dead-letter-strategy", "at-least-once"),
		entry_utf8("x-overflow", "reject-publish"),
	};
	amqp_table_t args = { (int)(sizeof e / sizeof e[0]), e };

	amqp_queue_declare(m->conn, CHANNEL, amqp_cstring_bytes(retry), 0, 1, 0, 0, args);
	return last_ok(m, "declaring the retry queue") ? 0 : -1;
}

/* Turn a failed declaration into -1 (try again later) or -2 (an operator must act). */
static int
declare_failed(struct mq *m, const char *queue)
{
	char why[sizeof m->why];

	snprintf(why, sizeof why, "%s", m->why);
	drop(m);
	if (m->code != AMQP_PRECONDITION_FAILED && m->code != AMQP_ACCESS_REFUSED)
		return -1;
	m->permanent = 1;
	if (m->code == AMQP_ACCESS_REFUSED)
		set_why(m, "queue %s: %s", queue, why);
	else
		set_why(m, "queue %s exists with other arguments (%s); declare it the same way "
		    "(same --max-deliveries) or, once it is drained, delete it "
		    "(rabbitmqctl delete_queue %s)", queue, why, queue);
	return -2;
}

/* Reopen the channel after the broker closed it (a passive declare of a missing queue). */
static int
reopen_channel(struct mq *m)
{
	if (m->code != AMQP_NOT_FOUND)
		return -1;
	if (open_channel(m) < 0) {
		drop(m);
		return -1;
	}
	return 0;
}

int
mq_declare(struct mq *m, const struct mq_topology *t)
{
	char *dead = queue_dead_name(t->queue), *retry = queue_retry_name(t->queue, t->retry_ms);
	int rc = 0;

	if (m->conn == NULL) {
		set_why(m, "not connected");
		rc = -1;
	} else if (t->if_absent && declare_main(m, t, dead, 1) == 0) {
		/* It exists: whoever made it chose its arguments. */
	} else if (t->if_absent && reopen_channel(m) < 0) {
		rc = declare_failed(m, t->queue);
	} else if (declare_dead(m, dead) < 0) {
		rc = declare_failed(m, dead);
	} else if (declare_main(m, t, dead, 0) < 0) {
		rc = declare_failed(m, t->queue);
	} else if (t->retry_ms >= 0 && declare_retry(m, retry, t->queue, t->retry_ms) < 0) {
		rc = declare_failed(m, retry);
	}
	free(dead);
	free(retry);
	return rc;
}

int
mq_check_exchange(struct mq *m, const char *exchange)
{
	if (m->conn == NULL) {
		set_why(m, "not connected");
		return -1;
	}
	amqp_exchange_declare(m->conn, CHANNEL, amqp_cstring_bytes(exchange),
	    amqp_cstring_bytes("direct"), 1, 0, 0, 0, amqp_empty_table);
	if (last_ok(m, "checking the exchange"))
		return 0;
	drop(m);
	if (m->code != AMQP_NOT_FOUND && m->code != AMQP_ACCESS_REFUSED)
		return -1;
	m->permanent = 1;
	set_why(m, "exchange \"%s\" does not exist (or is not ours to use); declare it and "
	    "its bindings first", exchange);
	return -2;
}

int
mq_check_queue(struct mq *m, const char *queue, long *messages)
{
	amqp_queue_declare_ok_t *ok;

	if (m->conn == NULL) {
		set_why(m, "not connected");
		return -1;
	}
	ok = amqp_queue_declare(m->conn, CHANNEL, amqp_cstring_bytes(queue), 1, 0, 0, 0,
	    amqp_empty_table);
	if (last_ok(m, "checking the queue")) {
		if (messages != NULL)
			*messages = (long)ok->message_count;
		return 0;
	}
	drop(m);
	if (m->code != AMQP_NOT_FOUND && m->code != AMQP_ACCESS_REFUSED)
		return -1;
	m->permanent = 1;
	set_why(m, "queue %s %s", queue, m->code == AMQP_NOT_FOUND ? "does not exist" :
	    "is not ours to read");
	return -2;
}

int
mq_publish(struct mq *m, const char *exchange, const char *key, const char *body, size_t len,
    long attempts, uint64_t *seq)
{
	amqp_table_entry_t h[] = { entry_long("x-attempts", attempts) };
	amqp_basic_properties_t p;
	amqp_bytes_t b = { len, (void *)body };
	int rc;

	if (m->conn == NULL) {
		set_why(m, "not connected");
		return -1;
	}
	memset(&p, 0, sizeof p);
	p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
	p.content_type = amqp_cstring_bytes("application/json");
	p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	if (attempts > 0) {
		p._flags |= AMQP_BASIC_HEADERS_FLAG;
		p.headers.num_entries = 1;
		p.headers.entries = h;
	}
	rc = amqp_basic_publish(m->conn, CHANNEL, amqp_cstring_bytes(exchange),
	    amqp_cstring_bytes(key), 1, 0, &p, b);
	if (rc != AMQP_STATUS_OK) {
		set_why(m, "publishing: %s", amqp_error_string2(rc));
		drop(m);
		return -1;
	}
	*seq = m->next_seq++;
	return 0;
}

int
mq_consume(struct mq *m, const char *queue, int prefetch)
{
	amqp_basic_consume_ok_t *ok;

	if (m->conn == NULL) {
		set_why(m, "not connected");
		return -1;
	}
	amqp_basic_qos(m->conn, CHANNEL, 0, (uint16_t)prefetch, 0);
	if (!last_ok(m, "setting the prefetch count")) {
		drop(m);
		return -1;
	}
	ok = amqp_basic_consume(m->conn, CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes,
	    0, 0, 0, amqp_empty_table);
	if (!last_ok(m, "subscribing to the queue")) {
		drop(m);
		return -1;
	}
	m->consumer_tag_len = ok->consumer_tag.len < sizeof m->consumer_tag ?
	    ok->consumer_tag.len : sizeof m->consumer_tag;
	memcpy(m->consumer_tag, ok->consumer_tag.bytes, m->consumer_tag_len);
	return 0;
}

/* The reply (cancel-ok) is read, and ignored, by mq_next_event: deliveries may precede it. */
int
mq_cancel(struct mq *m)
{
	amqp_basic_cancel_t c = { 0 };
	int rc;

	if (m->conn == NULL)
		return -1;
	c.consumer_tag.bytes = m->consumer_tag;
	c.consumer_tag.len = m->consumer_tag_len;
	rc = amqp_send_method(m->conn, CHANNEL, AMQP_BASIC_CANCEL_METHOD, &c);
	if (rc != AMQP_STATUS_OK) {
		set_why(m, "cancelling the consumer: %s", amqp_error_string2(rc));
		drop(m);
		return -1;
	}
	return 0;
}

static int
sent(struct mq *m, int rc, const char *doing)
{
	if (rc == AMQP_STATUS_OK)
		return 0;
	set_why(m, "%s: %s", doing, amqp_error_string2(rc));
	drop(m);
	return -1;
}

static int
ack(struct mq *m, uint64_t tag, int multiple)
{
	if (m->conn == NULL)
		return -1;
	return sent(m, amqp_basic_ack(m->conn, CHANNEL, tag, multiple),
	    multiple ? "acknowledging messages" : "acknowledging a message");
}

int
mq_ack(struct mq *m, uint64_t tag)
{
	return ack(m, tag, 0);
}

int
mq_ack_multiple(struct mq *m, uint64_t tag)
{
	return ack(m, tag, 1);
}

int
mq_reject(struct mq *m, uint64_t tag, int requeue)
{
	if (m->conn == NULL)
		return -1;
	return sent(m, amqp_basic_reject(m->conn, CHANNEL, tag, requeue), "rejecting a message");
}

static long
header_attempts(const amqp_basic_properties_t *p)
{
	if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
		return 0;
	for (int i = 0; i < p->headers.num_entries; i++) {
		const amqp_table_entry_t *e = &p->headers.entries[i];
		const amqp_field_value_t *v = &e->value;

		if (e->key.len != 10 || memcmp(e->key.bytes, "x-attempts", 10) != 0)
			continue;
		switch (v->kind) {
		case AMQP_FIELD_KIND_I8: return v->value.i8;
		case AMQP_FIELD_KIND_U8: return v->value.u8;
		case AMQP_FIELD_KIND_I16: return v->value.i16;
		case AMQP_FIELD_KIND_U16: return v->value.u16;
		case AMQP_FIELD_KIND_I32: return v->value.i32;
		case AMQP_FIELD_KIND_U32: return (long)v->value.u32;
		case AMQP_FIELD_KIND_I64: return (long)v->value.i64;
		default: return 0;
		}
	}
	return 0;
}

/* Read the header and body frames that follow a deliver or return method. */
static int
read_content(struct mq *m, struct mq_event *ev)
{
	amqp_message_t msg;

	if (!reply_ok(m, amqp_read_message(m->conn, CHANNEL, &msg, 0), "reading a message")) {
		drop(m);
		ev->type = MQ_CLOSED;
		return 0;
	}
	ev->len = msg.body.len;
	ev->body = xmalloc(ev->len + 1);
	if (ev->len > 0)
		memcpy(ev->body, msg.body.bytes, ev->len);
	ev->body[ev->len] = '\0';
	ev->attempts = header_attempts(&msg.properties);
	amqp_destroy_message(&msg);
	return 0;
}

static int
method_event(struct mq *m, amqp_method_t *method, struct mq_event *ev)
{
	switch (method->id) {
	case AMQP_BASIC_ACK_METHOD: {
		amqp_basic_ack_t *a = method->decoded;

		ev->type = MQ_ACK;
		ev->tag = a->delivery_tag;
		ev->multiple = a->multiple;
		return 0;
	}
	case AMQP_BASIC_NACK_METHOD: {
		amqp_basic_nack_t *n = method->decoded;

		ev->type = MQ_NACK;
		ev->tag = n->delivery_tag;
		ev->multiple = n->multiple;
		return 0;
	}
	case AMQP_BASIC_DELIVER_METHOD: {
		amqp_basic_deliver_t *d = method->decoded;

		ev->type = MQ_DELIVERY;
		ev->tag = d->delivery_tag;
		ev->redelivered = d->redelivered;
		return read_content(m, ev);
	}
	case AMQP_BASIC_RETURN_METHOD: {
		amqp_basic_return_t *r = method->decoded;

		set_why(m, "%.*s", (int)r->reply_text.len, (char *)r->reply_text.bytes);
		ev->type = MQ_RETURN;
		return read_content(m, ev);
	}
	case AMQP_BASIC_CANCEL_METHOD:
		ev->type = MQ_CANCELLED;
		return 0;
	case AMQP_CHANNEL_CLOSE_METHOD:
	case AMQP_CONNECTION_CLOSE_METHOD:
		server_closed(m, "the broker closed the connection", method);
		drop(m);
		ev->type = MQ_CLOSED;
		return 0;
	default:
		/* consume-ok, cancel-ok, connection.blocked...: nothing to do. */
		ev->type = MQ_NONE;
		return 0;
	}
}

int
mq_next_event(struct mq *m, double timeout, struct mq_event *ev)
{
	struct timeval tv;
	amqp_frame_t f;
	int rc;

	memset(ev, 0, sizeof *ev);
	if (m->conn == NULL) {
		ev->type = MQ_CLOSED;
		return 0;
	}
	/* Frames of earlier events live in rabbitmq-c's pools until released here. */
	amqp_maybe_release_buffers(m->conn);
	tv.tv_sec = (time_t)timeout;
	tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
	/*
	 * rabbitmq-c skips the heartbeats it reads itself, but not those it
	 * queued while a publish waited to send (amqp_try_recv): skip them here.
	 */
	do
		rc = amqp_simple_wait_frame_noblock(m->conn, &f, &tv);
	while (rc == AMQP_STATUS_OK && f.frame_type == AMQP_FRAME_HEARTBEAT);
	if (rc == AMQP_STATUS_TIMEOUT) {
		ev->type = MQ_NONE;
		return 0;
	}
	if (rc != AMQP_STATUS_OK) {
		set_why(m, "connection lost: %s", amqp_error_string2(rc));
		drop(m);
		ev->type = MQ_CLOSED;
		return 0;
	}
	if (f.frame_type != AMQP_FRAME_METHOD) {
		set_why(m, "connection lost: unexpected frame type %d", f.frame_type);
		drop(m);
		ev->type = MQ_CLOSED;
		return 0;
	}
	return method_event(m, &f.payload.method, ev);
}

int
mq_buffered(struct mq *m)
{
	return m->conn != NULL && (amqp_frames_enqueued(m->conn) || amqp_data_in_buffer(m->conn));
}

int
mq_fd(struct mq *m)
{
	return m->conn != NULL ? amqp_get_sockfd(m->conn) : -1;
}

/* --- publisher confirms ------------------------------------------------------ */

void
mq_confirms_clear(struct mq_confirms *c)
{
	c->n = 0;
}

void
mq_confirms_free(struct mq_confirms *c)
{
	free(c->v);
	c->v = NULL;
	c->n = c->cap = 0;
}

void
mq_confirms_add(struct mq_confirms *c, const struct mq *m, uint64_t seq, void *item,
    uint64_t tag)
{
	if (c->generation != m->generation) {
		c->n = 0;
		c->generation = m->generation;
	}
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->v = xreallocarray(c->v, c->cap, sizeof *c->v);
	}
	c->v[c->n].seq = seq;
	c->v[c->n].item = item;
	c->v[c->n].tag = tag;
	c->n++;
}

size_t
mq_confirms_apply(struct mq_confirms *c, const struct mq_event *ev,
    int (*settled)(const struct mq_confirm_wait *w, int acked, void *arg), void *arg)
{
	size_t i, kept = 0, done = 0;

	if (c->n == 0)
		return 0;

	/* The waits are in seq order: none past ev->tag is covered. */
	for (i = 0; i < c->n && c->v[i].seq <= ev->tag; i++) {
		if (c->v[i].seq != ev->tag && !ev->multiple) {
			c->v[kept++] = c->v[i];
			continue;
		}
		done++;
		if (settled(&c->v[i], ev->type == MQ_ACK, arg) < 0) {
			i++;
			break;
		}
	}
	memmove(c->v + kept, c->v + i, (c->n - i) * sizeof *c->v);
	c->n = kept + (c->n - i);
	return done;
}
