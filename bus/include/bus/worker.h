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
 * bus_reply_error / bus_reply_raw; the request is acked once the reply is
 * published and confirmed. Unknown methods get `not_found`, bad JSON
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
 * SIGTERM/SIGINT: stop consuming, wait for in-flight work up to BUS_DRAIN_MS,
 * close, exit 0.
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
