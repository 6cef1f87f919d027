/* An AMQP 0-9-1 connection (rabbitmq-c) driven by a libuv loop.
 *
 * rabbitmq-c is a blocking library with its own read-ahead buffer. We drive it
 * without blocking the loop: a uv_poll_t on its socket, a uv_prepare_t that
 * drains frames rabbitmq-c already buffered (amqp_frames_enqueued /
 * amqp_data_in_buffer) before the loop sleeps, and a timer at half the
 * heartbeat interval that services heartbeats. Every call on a connection
 * must happen on its loop thread.
 *
 * Publishes and acks are encoded into a buffer and written once per loop
 * turn. When the broker stops reading (it hangs, or blocks us under a
 * resource alarm) the loop does not wait for the socket: the rest waits in
 * the buffer, nothing is read meanwhile, and the connection is dropped
 * after two heartbeat intervals without progress (not while the broker says
 * it blocks us) or past 64 MiB waiting.
 *
 * Channel 1 carries consumers, acks and publishes in confirm mode; channel 2
 * is used for synchronous passive inspection (queue depth and consumer
 * counts), because a failed passive declare closes its channel, and
 * channel 4 for the asynchronous one (bus_conn_queue_probe); channel 3
 * carries what needs no confirm: RPC requests, RPC replies and the direct
 * reply-to consumer (which must share the channel the requests are
 * published on); channel 5 the consumers of RPC request queues and their
 * acks. The reply is the request's confirmation, and a reply's ack follows
 * it on the same connection, so confirms there would only cost a frame and
 * a wake-up.
 *
 * On any loss (socket error, missed heartbeats, broker close) the connection
 * fails every pending publish confirm with BUS_EUNAVAILABLE, calls on_down,
 * then reconnects with jittered exponential backoff; after each successful
 * (re)connect it calls on_up, where the owner declares topology and starts
 * consumers again. Consumers and acks do not survive a reconnect: unacked
 * messages are redelivered by the broker, and acks for deliveries of an
 * earlier connection are ignored.
 *
 * Topology declarations (bus_conn_declare_*) are synchronous AMQP methods:
 * they are meant for on_up, take well under a millisecond on a healthy
 * broker, and are bounded by the RPC timeout (5 s).
 */
#ifndef BUS_CONN_H
#define BUS_CONN_H

#include <amqp.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bus/envelope.h"

typedef struct bus_conn bus_conn_t;

typedef struct bus_conn_options {
    const char *url;           /* amqp://user:pass@host:port/vhost (copied) */
    const char *name;          /* connection_name shown in the management UI (copied) */
    int heartbeat_s;           /* default 10; 0 = default */
    uint16_t prefetch;         /* basic.qos on channel 1; 0 = unlimited */
    int reconnect_min_ms;      /* default 100 */
    int reconnect_max_ms;      /* default 5000 */
    void (*on_up)(bus_conn_t *conn, void *data);
    void (*on_down)(bus_conn_t *conn, int err, void *data);
    void *data;
} bus_conn_options_t;

/* A delivered message. Owned by the consumer callback that receives it,
 * which must finish it exactly once with bus_msg_ack(), bus_msg_reject() or
 * (for no-ack consumers) bus_msg_free(); each of these frees it. Every string
 * is NUL-terminated ("" when absent) and lives as long as the message. */
typedef struct bus_msg {
    bus_conn_t *conn;
    uint64_t delivery_tag;
    uint64_t generation;        /* connection generation it arrived on */
    int redelivered;
    const char *exchange;
    const char *routing_key;
    const char *consumer_tag;
    const char *content_type;
    const char *message_id;
    const char *correlation_id;
    const char *reply_to;
    const char *type;
    int64_t timestamp;          /* seconds, 0 when absent */
    int64_t expiration_ms;      /* the per-message TTL it was published with, 0 when none */
    const char *body;           /* not NUL-terminated beyond len (but body[len] == 0) */
    size_t len;
    bus_header_t *headers;      /* string-valued headers (others rendered as text) */
    size_t nheaders;
    int channel;                /* internal: the channel to ack on */
} bus_msg_t;

typedef void (*bus_msg_cb)(bus_msg_t *msg, void *data);
/* Publish completion: 0 when the broker confirmed, BUS_ENOT_FOUND when a
 * mandatory message could not be routed, BUS_EUNAVAILABLE when nacked or the
 * connection was lost before the confirm. */
typedef void (*bus_publish_cb)(int status, void *data);

/* What to publish. Strings are copied before bus_conn_publish returns. */
typedef struct bus_publish {
    const char *exchange;       /* "" = default exchange */
    const char *routing_key;
    const char *body;
    size_t len;
    const char *content_type;   /* NULL = none */
    const char *message_id;     /* required for confirmed mandatory publishes (matches returns) */
    const char *correlation_id;
    const char *reply_to;
    const char *type;
    const char *expiration_ms;  /* per-message TTL, as a decimal string */
    int64_t timestamp;          /* seconds; 0 = now (confirmed publishes) or none (unconfirmed) */
    int persistent;             /* delivery_mode 2 (else 1; absent on unconfirmed publishes) */
    int mandatory;              /* unroutable -> BUS_ENOT_FOUND (or the return handler when unconfirmed) */
    int unconfirmed;            /* channel 3, no confirm: cb must be NULL */
    const bus_header_t *headers;/* string headers (at most 32) */
    size_t nheaders;
    const char *int_header_key; /* one integer header (retry attempt), optional */
    int64_t int_header_value;
} bus_publish_t;

/* Creates the connection (not yet connected). Returns 0, BUS_EBAD_REQUEST
 * (bad URL: message in err) or BUS_EINTERNAL. */
int bus_conn_new(uv_loop_t *loop, const bus_conn_options_t *opts, bus_conn_t **out, char *err, size_t errlen);
/* Adds a listener called after on_up / on_down, in the order added (at
 * most 8). Components that share a connection (RPC client, worker) each add
 * one. Returns 0 or BUS_EINTERNAL when full. */
int bus_conn_add_listener(bus_conn_t *conn, void (*on_up)(bus_conn_t *, void *),
                          void (*on_down)(bus_conn_t *, int err, void *), void *data);
/* Removes every listener registered with this data pointer. */
void bus_conn_remove_listener(bus_conn_t *conn, void *data);
/* Starts connecting in the background (first attempt at once). */
void bus_conn_start(bus_conn_t *conn);
/* Connects once, synchronously, for command-line tools: 0 or BUS_EUNAVAILABLE
 * with the reason in err. on_up runs before it returns. */
int bus_conn_connect_now(bus_conn_t *conn, char *err, size_t errlen);
/* 1 when connected and on_up has run. */
int bus_conn_is_up(const bus_conn_t *conn);
/* Increments on each successful connect. */
uint64_t bus_conn_generation(const bus_conn_t *conn);
/* Closes the AMQP connection cleanly and releases everything; pending
 * publishes complete with BUS_EUNAVAILABLE; cb (may be NULL) runs once all
 * handles are closed, after which conn is freed. */
void bus_conn_close(bus_conn_t *conn, void (*cb)(void *data), void *data);
uv_loop_t *bus_conn_loop(const bus_conn_t *conn);

/* Topology (channel 1, synchronous, for on_up). queue_type: "classic",
 * "quorum", "stream" or NULL; a queue argument table is built from the
 * non-zero options. Return 0 or BUS_EUNAVAILABLE (the connection is then
 * being re-established). */
int bus_conn_declare_exchange(bus_conn_t *conn, const char *name, const char *type);
typedef struct bus_queue_options {
    int durable, exclusive, auto_delete;
    const char *queue_type;
    int64_t message_ttl_ms;          /* x-message-ttl */
    const char *dead_letter_exchange;/* x-dead-letter-exchange ("" allowed) */
    const char *dead_letter_key;     /* x-dead-letter-routing-key */
    const char *max_age;             /* streams: x-max-age, e.g. "7D" */
    int64_t max_length_bytes;        /* x-max-length-bytes */
    int64_t max_length;              /* x-max-length (messages) */
    const char *overflow;            /* x-overflow: "drop-head" (the broker's default), "reject-publish" (a
                                        publish to a full queue is nacked: BUS_EUNAVAILABLE), "reject-publish-dlx" */
} bus_queue_options_t;
int bus_conn_declare_queue(bus_conn_t *conn, const char *name, const bus_queue_options_t *opts);
/* The same, writing the queue's name into name_out: the broker's choice
 * when name is "" (server-named). BUS_EINTERNAL when it does not fit. */
int bus_conn_declare_queue_named(bus_conn_t *conn, const char *name, const bus_queue_options_t *opts, char *name_out,
                                 size_t name_len);
/* basic.qos on channel 1: the most unacked deliveries of each consumer
 * started on it afterwards (RabbitMQ's per-consumer prefetch; consumers
 * already started keep theirs; 0 = unlimited). A stream consumer needs one.
 * Synchronous, for on_up. 0 or BUS_EUNAVAILABLE. */
int bus_conn_set_prefetch(bus_conn_t *conn, uint16_t prefetch);
int bus_conn_bind(bus_conn_t *conn, const char *queue, const char *exchange, const char *key);
/* Starts a consumer; the callback gets every delivery. `args` may carry
 * stream offsets (x-stream-offset), NULL otherwise. The consumer tag is
 * written to tag_out (may be NULL). Returns 0 or BUS_EUNAVAILABLE. */
int bus_conn_consume(bus_conn_t *conn, const char *queue, int no_ack, int exclusive, amqp_table_t args,
                     bus_msg_cb cb, void *data, char *tag_out, size_t tag_len);
/* Consumes without confirms in the way: a no_ack consumer (the direct
 * reply-to pseudo-queue) on channel 3, where the RPC requests it answers are
 * published, as direct reply-to requires; any other (an RPC request queue)
 * on channel 5 with the same prefetch, so that in the broker the deliveries
 * and acks of the requests are handled by one channel process and the
 * replies, published on channel 3, by another (+10 % calls/s at 64 in
 * flight, tests/bench/README.md). Returns 0 or BUS_EUNAVAILABLE. */
int bus_conn_consume_fast(bus_conn_t *conn, const char *queue, int no_ack, bus_msg_cb cb, void *data, char *tag_out,
                          size_t tag_len);
/* Called for a mandatory unconfirmed publish that could not be routed, with
 * its message_id and correlation_id ("" when absent). One handler per connection. */
void bus_conn_set_return_handler(bus_conn_t *conn,
                                 void (*cb)(const char *message_id, const char *correlation_id, void *data),
                                 void *data);
/* Cancels a consumer (no more deliveries to its callback). */
int bus_conn_cancel(bus_conn_t *conn, const char *tag);
/* NULL, or the broker's reason ("low on memory", "low on disk") while it
 * blocks this connection: under a resource alarm RabbitMQ stops reading from
 * connections that publish, until connection.unblocked. Whatever is
 * published meanwhile waits in the socket; callers that answer someone (the
 * edge, an RPC call) should refuse at once instead. Counted in the gauge
 * bus_amqp_blocked_connections. */
const char *bus_conn_blocked(const bus_conn_t *conn);

/* Passive look at a queue on channel 2: messages ready and consumers.
 * BUS_ENOT_FOUND when the queue does not exist. Synchronous: it waits for
 * the broker's answer (for tools and tests; a server uses the probe below). */
int bus_conn_queue_info(bus_conn_t *conn, const char *queue, uint32_t *messages, uint32_t *consumers);

/* The same look without waiting: a passive declare on channel 4, sent with
 * the turn's other frames. cb runs later on the loop, exactly once, with 0
 * (and the counts), BUS_ENOT_FOUND (no such queue), BUS_EINTERNAL (the
 * broker refused, e.g. access) or BUS_EUNAVAILABLE (the connection went
 * down, or the broker blocked it, first). Probes are answered in the order
 * they were made. Returns 0, or BUS_EUNAVAILABLE (not connected, or
 * blocked) / BUS_EBAD_REQUEST (name longer than 255 bytes) at once, and cb
 * is then not called. data belongs to the caller
 * and must stay valid until cb. */
typedef void (*bus_queue_probe_cb)(int status, uint32_t messages, uint32_t consumers, void *data);
int bus_conn_queue_probe(bus_conn_t *conn, const char *queue, bus_queue_probe_cb cb, void *data);

/* Deletes a queue (channel 2); 0 also when it did not exist. For tests and
 * operators' tools. */
int bus_conn_delete_queue(bus_conn_t *conn, const char *queue);

/* Publishes on channel 1 in confirm mode; cb (may be NULL) runs once with
 * the outcome. Returns 0 when sent, BUS_EUNAVAILABLE when not connected
 * (cb is then NOT called). */
int bus_conn_publish(bus_conn_t *conn, const bus_publish_t *p, bus_publish_cb cb, void *data);
/* Number of publishes waiting for their confirm. */
size_t bus_conn_unconfirmed(const bus_conn_t *conn);

/* Finishing deliveries; each frees msg. An ack/reject for a delivery of an
 * earlier connection generation is dropped (the broker redelivers it). */
void bus_msg_ack(bus_msg_t *msg);
void bus_msg_reject(bus_msg_t *msg, int requeue);
void bus_msg_free(bus_msg_t *msg);
/* The value of a string header (case-sensitive key), or NULL. */
const char *bus_msg_header(const bus_msg_t *msg, const char *key);

#endif
