/* order-report: print one JSON object saying how the system is doing: orders by status, the oldest pending order, reservations, queue depths. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/amqp.h"
#include "lib/db.h"
#include "lib/jsonl.h"
#include "lib/log.h"
#include "lib/policy.h"
#include "lib/xalloc.h"

/*
 * One statement, so the counts, the oldest pending order and the reserved
 * units are one snapshot of the database. The age is whole seconds since the
 * order was placed (created_at), NULL when nothing is pending.
 */
static const char *SQL_REPORT =
	"SELECT count(*) FILTER (WHERE status = 'pending'),"
	" count(*) FILTER (WHERE status = 'success'),"
	" count(*) FILTER (WHERE status = 'failed'),"
	" floor(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')))::bigint,"
	" (SELECT coalesce(sum(reserved), 0) FROM vendor_stock)"
	" FROM orders";

/* A report is asked for now: the broker gets a few seconds, not a worker's patience. */
#define MQ_PATIENCE 5.0

/*
 * The channel lib/amqp opens on connect. A passive queue.declare is not in
 * lib/amqp (yet), so it is done here on that channel.
 */
#define MQ_CHANNEL 1

static void
usage(FILE *fp, int code)
{
	static const char *const synopsis[] = { "[-q QUEUE]", NULL };
	static const struct usage_option options[] = {
		{ "-q, --queue QUEUE", "the work queue whose depth and dead-letter depth to report"
		    " (default " QUEUE_DEFAULT ")" },
		{ NULL, NULL },
	};

	usage_exit(fp, code, synopsis, options);
}

static long long
cell_int(const PGresult *r, int col)
{
	return atoll(PQgetvalue(r, 0, col));
}

/* The database's half of the report; exits 69 (unreachable) or 70 (refused). */
static void
report_database(cJSON *report)
{
	PGconn *c = db_connect_or_die("no report was written");
	struct db_failure f;
	PGresult *r = db_run(c, &f, "reading the orders", SQL_REPORT, 0, NULL);
	cJSON *orders;

	if (r == NULL)
		db_die(&f, "no report was written");
	orders = cJSON_AddObjectToObject(report, "orders");
	xalloc_check(orders);
	json_add_int(orders, "pending", cell_int(r, 0));
	json_add_int(orders, "success", cell_int(r, 1));
	json_add_int(orders, "failed", cell_int(r, 2));
	if (PQgetisnull(r, 0, 3))
		xalloc_check(cJSON_AddNullToObject(report, "oldest_pending_seconds"));
	else
		json_add_int(report, "oldest_pending_seconds", cell_int(r, 3));
	json_add_int(report, "reserved_units", cell_int(r, 4));
	PQclear(r);
	PQfinish(c);
}

/*
 * Ready messages in `queue` by a passive queue.declare: 0 and *count, or -1
 * after saying why on stderr. A queue that does not exist closes the channel;
 * it is opened again so the next queue can still be asked.
 */
static int
queue_count(struct mq *m, const char *queue, long long *count)
{
	amqp_queue_declare_ok_t *ok;
	amqp_rpc_reply_t r;

	ok = amqp_queue_declare(m->conn, MQ_CHANNEL, amqp_cstring_bytes(queue), 1, 0, 0, 0,
	    amqp_empty_table);
	if (ok != NULL) {
		*count = ok->message_count;
		return 0;
	}
	r = amqp_get_rpc_reply(m->conn);
	if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_t *close = r.reply.decoded;
		amqp_channel_close_ok_t close_ok = { 0 };

		warning("broker %s: queue %s: %.*s", m->target, queue, (int)close->reply_text.len,
		    (char *)close->reply_text.bytes);
		amqp_send_method(m->conn, MQ_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
		amqp_channel_open(m->conn, MQ_CHANNEL);
		if (amqp_get_rpc_reply(m->conn).reply_type != AMQP_RESPONSE_NORMAL)
			mq_close(m);
		return -1;
	}
	warning("broker %s: asking for queue %s failed; its depth is null", m->target, queue);
	mq_close(m);
	return -1;
}

static void
add_depth(cJSON *report, const char *key, struct mq *m, const char *queue)
{
	long long n;

	if (mq_connected(m) && queue_count(m, queue, &n) == 0)
		json_add_int(report, key, n);
	else
		xalloc_check(cJSON_AddNullToObject(report, key));
}

/* The broker's half: an unreachable broker leaves the depths null, it is not fatal. */
static void
report_queues(cJSON *report, const char *queue)
{
	char *dead = queue_dead_name(queue);
	struct mq m;

	mq_init(&m, 0, 0);
	if (mq_connect_retry(&m, MQ_PATIENCE, NULL) < 0)
		warning("queue depths are null: the broker did not answer");
	xalloc_check(cJSON_AddStringToObject(report, "queue", queue));
	add_depth(report, "queue_depth", &m, queue);
	xalloc_check(cJSON_AddStringToObject(report, "dead_letter_queue", dead));
	add_depth(report, "dead_letter_depth", &m, dead);
	mq_close(&m);
	free(dead);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "queue", required_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *queue = QUEUE_DEFAULT;
	cJSON *report;
	int ch;

	log_init(argv[0]);
	while ((ch = getopt_long(argc, argv, "q:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'q': queue = optarg; break;
		case 'h': usage(stdout, EXIT_OK); break;
		case 'V': version_exit();
		default: usage(stderr, EXIT_USAGE);
		}
	}
	if (optind != argc || *queue == '\0')
		usage(stderr, EXIT_USAGE);
	signal(SIGPIPE, SIG_IGN);
	report = cJSON_CreateObject();
	xalloc_check(report);
	report_database(report);
	report_queues(report, queue);
	if (jsonl_write(stdout, report) < 0)
		die(EXIT_OUTPUT, "writing the report failed; order-report only reads, nothing changed");
	out_flush("order-report only reads; nothing changed");
	cJSON_Delete(report);
	return EXIT_OK;
}
