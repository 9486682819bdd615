/* amqp: the RabbitMQ connection of every program, its queue topology, publishing and confirms. */
#ifndef OA_AMQP_H
#define OA_AMQP_H

#include <stddef.h>
#include <stdint.h>

#include <amqp.h>

#include "policy.h"

/*
 * One connection with one channel. Every rabbitmq-c error ends in
 * mq_close(): the programs then reconnect with mq_connect_retry(), and
 * `generation` tells them that delivery tags of the old channel are void.
 */
#define MQ_NODES_MAX 16		/* nodes in RABBITMQ_URL */
#define MQ_URL_MAX 1024		/* bytes of one node's URL */

struct mq {
	amqp_connection_state_t conn;	/* NULL while disconnected */
	int heartbeat;			/* seconds, 0 for none */
	int confirms;			/* channel in confirm mode */
	unsigned generation;		/* bumped by every successful connect */
	uint64_t next_seq;		/* confirm sequence number of the next publish */
	int code;			/* last AMQP reply code (404, 406...), or 0 */
	int permanent;			/* last error will not go away by retrying */
	char consumer_tag[256];		/* as the broker named our consumer */
	size_t consumer_tag_len;
	char target[256];		/* the node in use: its URL without the password */
	char why[512];			/* last error, for messages */
	/*
	 * RABBITMQ_URL may list several nodes, comma-separated: a connect tries
	 * each once, from node on; a lost connection moves node to the next.
	 */
	int nodes, node;
	char urls[MQ_NODES_MAX][MQ_URL_MAX];
	char targets[MQ_NODES_MAX][256];
};

/* The queues one work queue needs (see mq_declare; names from policy.h). */
struct mq_topology {
	const char *queue;		/* Q; also Q.dead and Q.retry.<ms> */
	long max_deliveries;		/* deliveries before a message is dead-lettered */
	long retry_ms;			/* declare Q.retry.<retry_ms>; < 0: none */
	int if_absent;			/* leave an existing Q (and Q.dead) as it is */
};

enum mq_event_type {
	MQ_NONE,		/* nothing arrived in time */
	MQ_ACK,			/* publisher confirm: tag (and below, if multiple) */
	MQ_NACK,		/* the broker could not take tag (and below, if multiple) */
	MQ_RETURN,		/* a mandatory publish could not be routed */
	MQ_DELIVERY,		/* a message from our consumer */
	MQ_CANCELLED,		/* the broker cancelled our consumer (queue deleted) */
	MQ_CLOSED		/* connection or channel gone: mq_close() was called */
};

struct mq_event {
	enum mq_event_type type;
	uint64_t tag;		/* ACK/NACK: confirm sequence; DELIVERY: delivery tag */
	int multiple;		/* ACK/NACK */
	int redelivered;	/* DELIVERY */
	long attempts;		/* DELIVERY: the x-attempts header, 0 if absent */
	char *body;		/* DELIVERY/RETURN: malloc'd, NUL-terminated; caller frees */
	size_t len;
};

/* heartbeat: seconds asked of the broker (MQ_HEARTBEAT in policy.h), 0 for none. */
void mq_init(struct mq *m, int heartbeat, int confirms);
/* One attempt to connect, log in and open the channel; 0 or -1 (m->why). */
int mq_connect(struct mq *m);
/*
 * Connect, retrying with backoff for `patience` seconds (< 0: forever) or
 * until *stop; 0, or -1 after saying on stderr why the broker is unavailable.
 */
int mq_connect_retry(struct mq *m, double patience, volatile int *stop);
/* Close the connection: politely if it still works, else just drop it. */
void mq_close(struct mq *m);
/*
 * Drop the connection without a word: for a broker that keeps it alive but
 * may not be reading it (blocked publishers, a stuck queue), where a polite
 * close would wait for its reply.
 */
void mq_drop(struct mq *m);
int mq_connected(const struct mq *m);

/*
 * Declare Q (durable quorum queue with x-delivery-limit and at-least-once
 * dead-lettering to Q.dead), Q.dead, and Q.retry.<ms> whose expired messages
 * go back to Q. 0; -1 when the connection failed (reconnect, declare again);
 * -2 when the broker refused (arguments differ from an existing queue):
 * m->why says which queue and what to do.
 */
int mq_declare(struct mq *m, const struct mq_topology *t);
/* Check that an exchange exists, declaring nothing. 0, -1 (connection), -2 (absent). */
int mq_check_exchange(struct mq *m, const char *exchange);

/*
 * Check that a queue exists (a passive declare), declaring nothing; its
 * ready messages into *messages if not NULL. 0, -1 (connection), -2 (absent
 * or refused: m->why names it, m->permanent is set).
 */
int mq_check_queue(struct mq *m, const char *queue, long *messages);
/*
 * Publish a persistent application/json message (mandatory). attempts > 0
 * adds an x-attempts header. *seq gets its confirm sequence number. 0 or -1.
 */
int mq_publish(struct mq *m, const char *exchange, const char *key,
    const char *body, size_t len, long attempts, uint64_t *seq);

/* basic.qos + basic.consume on queue; 0 or -1. */
int mq_consume(struct mq *m, const char *queue, int prefetch);
/* basic.cancel of our consumer, without waiting for the reply; 0 or -1. */
int mq_cancel(struct mq *m);
int mq_ack(struct mq *m, uint64_t tag);
/*
 * One basic.ack with multiple=true: acks EVERY unacked delivery of the
 * channel up to and including tag, so only when none of them is to be kept.
 */
int mq_ack_multiple(struct mq *m, uint64_t tag);
int mq_reject(struct mq *m, uint64_t tag, int requeue);

/*
 * The next event, waiting at most `timeout` seconds (0: only what has
 * arrived). Heartbeats are sent and checked while in here. Returns 0 with
 * ev->type set; MQ_CLOSED when the connection failed.
 */
int mq_next_event(struct mq *m, double timeout, struct mq_event *ev);
/* Frames already read by rabbitmq-c: poll() on the socket would not show them. */
int mq_buffered(struct mq *m);
/* The socket, for poll(); -1 while disconnected. */
int mq_fd(struct mq *m);

/*
 * Publishes awaiting their publisher confirm: confirm sequence number ->
 * the caller's item. The broker confirms with basic.ack or basic.nack of one
 * sequence number or, with `multiple`, of every one up to it, and single
 * confirms may come in any order. Zero-initialise; the array is reused, so
 * publishing allocates nothing once it has grown to the largest batch.
 */
struct mq_confirms {
	struct mq_confirm_wait {
		uint64_t seq;	/* the publish's confirm sequence number */
		void *item;	/* the caller's, for what it published */
		uint64_t tag;	/* the caller's too: a delivery tag the publish stands for */
	} *v;			/* in publishing order, so by seq */
	size_t n, cap;		/* n: publishes awaiting their confirm */
	unsigned generation;	/* the connection their sequence numbers belong to */
};

/* Note that item (and tag) went out as seq on m; waits of an earlier connection are void and dropped. */
void mq_confirms_add(struct mq_confirms *c, const struct mq *m, uint64_t seq, void *item,
    uint64_t tag);
/*
 * Apply an MQ_ACK or MQ_NACK event: settled(wait, acked, arg) for each
 * publish it covers, oldest first, which is then forgotten. When settled
 * returns < 0 the rest are kept as they are. Returns how many were settled.
 */
size_t mq_confirms_apply(struct mq_confirms *c, const struct mq_event *ev,
    int (*settled)(const struct mq_confirm_wait *w, int acked, void *arg), void *arg);
/* Forget every wait (the connection is gone: its confirms will never come). */
void mq_confirms_clear(struct mq_confirms *c);
void mq_confirms_free(struct mq_confirms *c);

#endif
