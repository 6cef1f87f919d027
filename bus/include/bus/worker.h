/* The worker skeleton: one process of a domain.
 *
 *   static const bus_method_t methods[] = {{"create", on_create}, {NULL, NULL}};
 *   static const bus_subscription_t subs[] = {{"user.forgotten", on_forgotten}, {NULL, NULL}};
 *   static const bus_worker_def_t def = {.service = "alliances", .methods = methods, .subscriptions = subs};
 *   int main(int argc, char **argv) { return bus_worker_main(argc, argv, &def); }
 *
 * bus_worker_main reads the configuration (bus/config.h), connects, declares
 * the domain's queues (events.<s>, rpc.<s>, retry.<s>, dead.<s>), consumes
 * them with BUS_PREFETCH unacked deliveries, and dispatches:
 *
 * RPC: a request on rpc.<s> with routing key <s>.<method> goes to the method's
 * handler with its params parsed (and validated when a schema exists). The
 * handler answers exactly once, now or later, with bus_reply_ok /
 * bus_reply_error / bus_reply_raw. The reply is published without a confirm
 * and the request's ack leaves after it in the same write (bus/src/worker_rpc.c):
 * the broker holds the reply before the request is settled; when the
 * connection is down the request is not acked and the broker redelivers it.
 * Unknown methods get `not_found`, bad JSON
 * `bad_request`, schema violations `invalid` (the paths in the message).
 * Every worker answers <s>.ping.
 *
 * Events: a delivery on events.<s> is decoded as a CloudEvent (structured or
 * binary mode), validated, and handed to the first subscription whose type
 * pattern matches (AMQP topic syntax: * one word, # any). The handler
 * finishes it exactly once with bus_event_done: 0 acks it; BUS_EUNAVAILABLE,
 * BUS_ETIMEOUT, BUS_EINTERNAL and BUS_ERATE_LIMITED retry it after
 * BUS_RETRY_DELAY_MS (doubling) up to BUS_MAX_ATTEMPTS deliveries; anything
 * else, and a message that is not JSON, not a CloudEvent, too large or
 * invalid, is dead-lettered to dead.<s> with the reason in x-bus-dead-reason.
 *
 * Extra consumers (bus_consumer_def_t, below): queues a domain declares
 * besides its own (a stream such as audit.log, a queue bound to bus.events
 * with "#"), declared, bound and consumed again after every connect, their
 * deliveries handed over as bus_delivery_t.
 *
 * Hooks: def->on_up runs after every (re)connect once the topology above is
 * declared; timers (bus_worker_timer_start) carry scheduled work.
 *
 * SIGTERM/SIGINT: stop consuming (every consumer, extra ones included), stop
 * the timers started before the signal, wait for in-flight work (requests,
 * events, extra deliveries, and bus_worker_work_begin/end) up to
 * BUS_DRAIN_MS, close, exit 0.
 *
 * All callbacks run on the worker's loop thread. Requests and events are
 * owned by the handler from dispatch until it finishes them.
 */
#ifndef BUS_WORKER_H
#define BUS_WORKER_H

#include <cjson/cJSON.h>
#include <uv.h>

#include "bus/config.h"
#include "bus/conn.h"
#include "bus/envelope.h"

typedef struct bus_worker bus_worker_t;
typedef struct bus_request bus_request_t;
typedef struct bus_event bus_event_t;

typedef void (*bus_method_fn)(bus_request_t *req);
typedef void (*bus_event_fn)(bus_event_t *ev);

typedef struct bus_method {
    const char *name; /* "create"; the table ends with a NULL name */
    bus_method_fn fn;
} bus_method_t;

typedef struct bus_subscription {
    const char *type; /* "alliance.member.joined" or a topic pattern "alliance.#"; NULL ends the table */
    bus_event_fn fn;
} bus_subscription_t;

/* ---- extra consumers ----------------------------------------------------
 *
 *   static const bus_binding_t all_events[] = {{BUS_EXCHANGE_EVENTS, "#"}, {NULL, NULL}};
 *   static const bus_consumer_def_t consumers[] = {
 *       {.queue = "audit.events", .options = {.durable = 1}, .bindings = all_events, .fn = on_event},
 *       {.queue = BUS_AUDIT_STREAM, .declare = bus_topology_declare_audit, .options = {.queue_type = "stream"},
 *        .offset = {BUS_STREAM_FIRST}, .resume = resume_audit, .fn = on_audit},
 *       {.fn = NULL}};
 *
 * libbus builds every AMQP argument table; domain code names what it wants.
 */
typedef struct bus_delivery bus_delivery_t;
typedef void (*bus_delivery_fn)(bus_delivery_t *d);

typedef struct bus_binding {
    const char *exchange; /* "bus.events"; NULL ends the list */
    const char *key;      /* a routing key or topic pattern ("#", "alliance.*"); "" for a fanout exchange */
} bus_binding_t;

/* Where a stream consumer starts reading (the consumer argument x-stream-offset). */
typedef enum bus_stream_from {
    BUS_STREAM_NEXT = 0,  /* what is published after the consumer starts (the broker's default) */
    BUS_STREAM_FIRST,     /* the oldest message the stream still holds */
    BUS_STREAM_LAST,      /* the last chunk written (a few recent messages) */
    BUS_STREAM_OFFSET,    /* value = an offset (bus_delivery_stream_offset of a delivery) */
    BUS_STREAM_TIMESTAMP, /* value = seconds since the epoch: what was written from then on (chunk precision) */
} bus_stream_from_t;

typedef struct bus_stream_offset {
    bus_stream_from_t from;
    int64_t value; /* BUS_STREAM_OFFSET, BUS_STREAM_TIMESTAMP */
} bus_stream_offset_t;

typedef struct bus_consumer_def {
    /* The queue; NULL or "" = a name the broker chooses, new on every
     * connect (give it .options.exclusive = 1 so it goes with the connection). */
    const char *queue;
    /* Declared with these on every connect: durable, exclusive, auto_delete,
     * queue_type ("stream"; NULL = BUS_QUEUE_TYPE for a durable named queue,
     * else classic), message_ttl_ms, dead_letter_*, max_age ("7D"),
     * max_length_bytes. The arguments must match the queue's if it exists
     * (the broker refuses, and the connection starts again, otherwise). */
    bus_queue_options_t options;
    /* Declares the queue instead of `options` when another module owns its
     * arguments (e.g. bus_topology_declare_audit for audit.log); then only
     * options.queue_type is read: "stream" for a stream. May be NULL. */
    int (*declare)(bus_conn_t *conn);
    const bus_binding_t *bindings; /* bound on every connect; may be NULL */
    uint16_t prefetch;             /* unacked deliveries to this consumer; 0 = BUS_PREFETCH */
    /* Streams (options.queue_type "stream"): where reading starts when
     * `resume` is NULL or returns 0 (on every connect: with BUS_STREAM_FIRST
     * and no resume, a reconnect reads the whole stream again). Other queues
     * refuse an offset: setting one (or resume) there stops the worker at
     * start (exit 2). */
    bus_stream_offset_t offset;
    /* Streams: called before every consume, the first one included; fills
     * *out and returns 1 to start there (typically the last offset the
     * domain processed + 1), or returns 0 to use `offset`. May be NULL.
     * From a numeric offset the broker delivers that offset first, not the
     * rest of its chunk (tests/integration/test_worker_hooks.c checks it). */
    int (*resume)(bus_worker_t *w, void *data, bus_stream_offset_t *out);
    bus_delivery_fn fn; /* gets every delivery; NULL ends the table */
    void *data;         /* bus_delivery_data() */
} bus_consumer_def_t;

typedef struct bus_worker_def {
    const char *service;                       /* "alliances" */
    const char *summary;                       /* one line for --help */
    const bus_method_t *methods;               /* may be NULL */
    const bus_subscription_t *subscriptions;   /* may be NULL */
    bus_config_extra_t *extras;                /* the domain's own settings, may be NULL */
    size_t nextras;
    /* After configuration, before connecting: open stores, clients. Non-zero
     * stops the program with err printed: exit 2 for BUS_EBAD_REQUEST (a bad
     * setting; name it in err), else exit 1 (e.g. the store cannot be
     * opened). May be NULL. */
    int (*init)(bus_worker_t *w, char *err, size_t errlen);
    /* After the loop ended; release what init made. May be NULL. */
    void (*fini)(bus_worker_t *w);
    /* Extra consumers, ended by an entry whose fn is NULL. May be NULL. */
    const bus_consumer_def_t *consumers;
    /* After every (re)connect, once the exchanges, the domain's queues and
     * the extra consumers' queues are declared and bound, before consuming
     * starts (also while draining, when nothing is consumed). It may declare
     * more with bus_conn_declare_* / bus_conn_bind; when one of those fails
     * the connection is being re-established: return, on_up runs again on
     * the next connect. May be NULL. */
    void (*on_up)(bus_worker_t *w, bus_conn_t *conn);
} bus_worker_def_t;

/* Runs the worker; returns the process exit code (0 after a clean drain,
 * 1 on a start failure, 2 on a usage/configuration error). */
int bus_worker_main(int argc, char **argv, const bus_worker_def_t *def);

uv_loop_t *bus_worker_loop(bus_worker_t *w);
const bus_config_t *bus_worker_config(const bus_worker_t *w);
const char *bus_worker_service(const bus_worker_t *w);
const char *bus_worker_instance(const bus_worker_t *w);
bus_conn_t *bus_worker_conn(bus_worker_t *w);
/* An RPC client on the worker's connection, for calls to other domains
 * (bus/rpc.h; the call's timeout defaults to BUS_RPC_TIMEOUT_MS). Owned by
 * the worker; NULL once the worker is stopping (calls still out then fail
 * with BUS_EUNAVAILABLE). */
struct bus_rpc_client *bus_worker_rpc(bus_worker_t *w);
/* The domain's own state, set by init. */
void *bus_worker_state(const bus_worker_t *w);
void bus_worker_set_state(bus_worker_t *w, void *state);
/* The value of an extra setting by its env name, or NULL. */
const char *bus_worker_extra(const bus_worker_t *w, const char *env);
/* The schema registry loaded from BUS_SCHEMAS_DIR (NULL when unavailable). */
struct bus_schema_registry *bus_worker_schemas(bus_worker_t *w);

/* Publishes a new event of `type` with `data` (ownership moves in; NULL =
 * no data), validated against its schema first (BUS_EINVALID with the paths
 * in the log and no publish). source = "bus-<service>"; correlation_id and
 * subject may be NULL. cb (may be NULL) gets the confirm outcome. Returns 0
 * when sent; on error cb is not called. If id_out is not NULL it receives the
 * event id (37 bytes). */
int bus_worker_publish(bus_worker_t *w, const char *type, cJSON *data, const char *subject,
                       const char *correlation_id, bus_publish_cb cb, void *cbdata, char *id_out);
/* Builds a new structured-mode event of `type` (data owned; NULL = no
 * data): source "bus-<service>", a fresh id, dataschema the schema's $id,
 * validated against its schema first. On success returns 0 with the id in
 * id_out (37 bytes) and the body in *body (malloc'd, the caller frees it)
 * and its length in *len. BUS_EINVALID (the failing paths are logged) or
 * BUS_EINTERNAL, with nothing allocated. Every event a worker publishes is
 * built here, whoever publishes it (bus_worker_publish, bus_op's outbox). */
int bus_worker_build_event(bus_worker_t *w, const char *type, cJSON *data, const char *subject,
                           const char *correlation_id, char *id_out, char **body, size_t *len);
/* Publishes an already built structured-mode event body (as stored in an
 * outbox) again, with its own id: used to re-send the events of a request
 * that is redelivered. Returns 0 or an error; cb as above. */
int bus_worker_publish_raw(bus_worker_t *w, const char *type, const char *id, const char *correlation_id,
                           const char *body, size_t len, bus_publish_cb cb, void *cbdata);

/* ---- in-flight work and timers ------------------------------------------
 *
 * Work the drain waits for: a domain that starts asynchronous work outside a
 * request or an event (from a timer, say) calls bus_worker_work_begin(w)
 * when it starts and bus_worker_work_end(w) exactly once when it is done.
 * The SIGTERM drain waits until every begin has had its end (or BUS_DRAIN_MS
 * passed); the end of the last one lets the worker close and exit. Both may
 * be called during the drain (work finishing may start more).
 */
void bus_worker_work_begin(bus_worker_t *w);
void bus_worker_work_end(bus_worker_t *w);
/* 1 once the SIGTERM drain (or the shutdown) began: a domain that starts
 * rounds of work by itself (a scheduler) starts no new round then. */
int bus_worker_draining(const bus_worker_t *w);

/* A timer on the worker's loop, for scheduled and periodic work.
 *
 * bus_worker_timer_start calls cb(t, data) after delay_ms, then every
 * repeat_ms (0 = once). Callable from init and from any callback on the
 * loop. Returns 0, BUS_EBAD_REQUEST (cb NULL), BUS_EUNAVAILABLE (the worker
 * is shutting down) or BUS_EINTERNAL (out of memory); cb is then never called.
 *
 * The callback never runs after bus_worker_timer_stop, nor, for a timer
 * started before the drain began, once the SIGTERM drain began (no new work
 * starts; a timer started during the drain, e.g. a backoff inside in-flight
 * work, still runs). A one-shot timer's callback runs at most once. Timers
 * never keep the loop alive, and every handle is closed when the worker
 * shuts down.
 *
 * Ownership: with out == NULL the worker owns the timer (a one-shot one is
 * freed after its callback, a repeating one at exit, or when its own
 * callback stops it with the t it was given). With out != NULL the
 * caller holds *out until it calls bus_worker_timer_stop(*out), at most once,
 * at any time up to the end of def->fini (from the timer's own callback too);
 * stop frees it, and a timer never stopped is freed by the worker after fini. */
typedef struct bus_worker_timer bus_worker_timer_t;
typedef void (*bus_worker_timer_fn)(bus_worker_timer_t *t, void *data);
int bus_worker_timer_start(bus_worker_t *w, uint64_t delay_ms, uint64_t repeat_ms, bus_worker_timer_fn cb, void *data,
                           bus_worker_timer_t **out);
void bus_worker_timer_stop(bus_worker_timer_t *t);

/* ---- deliveries of extra consumers --------------------------------------
 *
 * A delivery is owned by the consumer's fn from dispatch until it finishes
 * it, exactly once, now or later, with bus_delivery_ack or
 * bus_delivery_reject (each frees it). Until then it is in-flight work: the
 * drain waits for it. Unfinished at a connection loss, the broker delivers
 * it again (stream consumers: from the offset they resume at). */
/* The message (body, routing key, headers, ...); lives as long as d. */
const bus_msg_t *bus_delivery_msg(const bus_delivery_t *d);
/* The stream offset of the delivery (header x-stream-offset), -1 when the
 * queue is not a stream. */
int64_t bus_delivery_stream_offset(const bus_delivery_t *d);
/* The queue it came from (the broker's name for a server-named one). */
const char *bus_delivery_queue(const bus_delivery_t *d);
void *bus_delivery_data(const bus_delivery_t *d);
bus_worker_t *bus_delivery_worker(const bus_delivery_t *d);
void bus_delivery_ack(bus_delivery_t *d);
/* requeue = 1 puts it back in its queue (at once: mind the loop); 0 drops
 * it, or dead-letters it when the queue has a dead-letter exchange. */
void bus_delivery_reject(bus_delivery_t *d, int requeue);

/* ---- RPC requests ---------------------------------------------------- */
const char *bus_request_method(const bus_request_t *req);
/* The params (an object, array or value); owned by the request. */
const cJSON *bus_request_params(const bus_request_t *req);
/* The idempotency key: message_id, else correlation_id. */
const char *bus_request_id(const bus_request_t *req);
/* The end-to-end correlation id (x-correlation-id header, else the request id). */
const char *bus_request_correlation_id(const bus_request_t *req);
/* The caller's identity (x-caller header) or "". */
const char *bus_request_caller(const bus_request_t *req);
int bus_request_redelivered(const bus_request_t *req);
/* Loop time (uv_now, ms) after which the caller no longer waits: delivery
 * plus the request's TTL (libbus callers send their timeout as the
 * per-message expiration), else plus BUS_RPC_TIMEOUT_MS. */
uint64_t bus_request_deadline(const bus_request_t *req);
bus_worker_t *bus_request_worker(const bus_request_t *req);
/* Checks a success reply's data against the method's result schema: 0
 * (valid, or no schema) or BUS_EINVALID with the paths in why. The one
 * place replies are validated (bus_reply_ok under BUS_VALIDATE_REPLIES=1,
 * and bus_op before it stores a reply). */
int bus_worker_check_reply(bus_worker_t *w, const char *method, const cJSON *data, char *why, size_t whylen);
/* Answer (each frees the request). bus_reply_ok takes ownership of data (NULL = null). */
void bus_reply_ok(bus_request_t *req, cJSON *data);
void bus_reply_error(bus_request_t *req, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A reply body built elsewhere (e.g. stored for idempotency); copied. */
void bus_reply_raw(bus_request_t *req, const char *json, size_t len);

/* ---- events ------------------------------------------------------------ */
const bus_envelope_t *bus_event_envelope(const bus_event_t *ev);
/* Deliveries so far, 1 on the first. */
int bus_event_attempt(const bus_event_t *ev);
bus_worker_t *bus_event_worker(const bus_event_t *ev);
/* Finishes the event (frees it): 0 ack, a retryable code retries, others dead-letter with reason. */
void bus_event_done(bus_event_t *ev, int status, const char *reason);

/* 1 when an AMQP topic pattern (words separated by '.', '*' one word, '#'
 * zero or more) matches the routing key. */
int bus_topic_matches(const char *pattern, const char *key);

#endif
