/* RPC over RabbitMQ (docs/ARCHITECTURE.md, "RPC on the wire").
 *
 * Client: a request is published straight to the queue rpc.<service>
 * through the default exchange (routing key = the queue name) with the
 * method in the `type` property ("<service>.<method>"): RabbitMQ routes a
 * default-exchange publish by queue name alone, which saves the topic match
 * of bus.rpc (other clients publish to bus.rpc with routing key
 * <service>.<method>; workers serve both routes). The publish is mandatory,
 * so a service without a queue fails at once with BUS_ENOT_FOUND. Body =
 * params JSON, reply_to = amq.rabbitmq.reply-to (direct reply-to, consumed
 * no-ack on the publishing channel), correlation_id = "<client id>.<n>",
 * unique across every client, which the worker takes as the request's
 * idempotency key since no message_id is sent (a caller that wants its own
 * key sends a message_id; workers prefer it), per-message expiration = the
 * call's timeout (a request nobody took in time is dropped, not run late;
 * workers also stop retrying lost races at that deadline), header
 * x-correlation-id = the end-to-end correlation id when it differs from the
 * correlation_id. Thousands of calls can be in flight; each has its own
 * timeout. Losing the connection fails every pending call at once with
 * BUS_EUNAVAILABLE; calls made while disconnected fail at once. Replies that
 * arrive after their call ended are dropped and counted
 * (bus_rpc_late_replies_total).
 *
 * Replies are `{"success":true,"data":...}` or
 * `{"success":false,"error":"<code>","message":"...","status_code":N}`.
 */
#ifndef BUS_RPC_H
#define BUS_RPC_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "bus/conn.h"

typedef struct bus_rpc_client bus_rpc_client_t;

/* The outcome of a call. status 0: a reply arrived; `reply` is its body
 * (valid only during the callback), which may itself be an error reply.
 * status < 0: no reply (BUS_ETIMEOUT, BUS_EUNAVAILABLE, BUS_ENOT_FOUND when
 * no queue exists for the service); reply is NULL. */
typedef void (*bus_rpc_cb)(int status, const char *reply, size_t len, void *data);

typedef struct bus_rpc_call_opts {
    int timeout_ms;             /* 0 = the client's default */
    const char *correlation_id; /* end-to-end id (NULL: the call's own correlation id); an id from
                                   bus_rpc_client_make_id travels as the AMQP correlation_id itself,
                                   any other in the x-correlation-id header */
    const char *caller;         /* identity (API key id, bot name); may be NULL */
} bus_rpc_call_opts_t;

/* Creates a client on `conn` (it adds a connection listener). The client
 * must be created before the connection starts. Returns 0 or BUS_EINTERNAL. */
int bus_rpc_client_new(bus_conn_t *conn, int default_timeout_ms, bus_rpc_client_t **out);
/* Fails every pending call with BUS_EUNAVAILABLE and frees the client after
 * its timers closed. Call before bus_conn_close. */
void bus_rpc_client_free(bus_rpc_client_t *client);
/* Writes a new id of this client's ("<16 hex>.<n>", unique across clients)
 * into out (at least 48 bytes). A caller that needs an end-to-end id before
 * it knows whether a call follows (the edge's X-Request-Id) takes this one:
 * passed as opts->correlation_id of one call, it becomes that call's correlation_id and
 * no header is needed (headers cost the broker a decode per message). */
void bus_rpc_client_make_id(bus_rpc_client_t *client, char *out, size_t len);
/* 1 when calls can be made now. */
int bus_rpc_client_ready(const bus_rpc_client_t *client);
size_t bus_rpc_client_pending(const bus_rpc_client_t *client);

/* Starts a call. params/len: the params JSON as bytes (copied). On success
 * returns 0 and cb runs exactly once later; otherwise returns
 * BUS_EUNAVAILABLE (not connected, or the broker blocks the connection:
 * bus_conn_blocked) / BUS_EBAD_REQUEST (bad service or method name) /
 * BUS_EINTERNAL and cb is never called. */
int bus_rpc_call(bus_rpc_client_t *client, const char *service, const char *method, const char *params, size_t len,
                 const bus_rpc_call_opts_t *opts, bus_rpc_cb cb, void *data);

/* Reply bodies. Both return malloc'd NUL-terminated JSON (caller frees) or NULL. */
char *bus_rpc_reply_ok_json(const cJSON *data, size_t *len);
char *bus_rpc_reply_error_json(int err, const char *message, size_t *len);
/* Reads a reply: returns 0 when well formed, with *ok = success flag and,
 * on failure, *err = the code (BUS_E*) and message (pointer into *doc).
 * *doc receives the parsed document (caller cJSON_Delete's it); *data points
 * into it. BUS_EBAD_REQUEST when the body is not a reply. */
int bus_rpc_reply_parse(const char *body, size_t len, cJSON **doc, int *ok, const cJSON **data, int *err,
                        const char **message);

#endif
