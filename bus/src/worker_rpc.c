/* The worker's RPC side: decode a request, dispatch it to its method,
 * publish the reply (unconfirmed: the reply is the caller's confirmation),
 * and ack the request right after it, in the same socket write. See
 * bus/worker.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/rpc.h"
#include "schema_hook.h"
#include "bus/topology.h"
#include "worker_internal.h"

struct bus_request {
    bus_worker_t *w;
    bus_msg_t *msg;
    cJSON *params;
    const char *method;
    const char *correlation;
    uint64_t started_ns;
    uint64_t delivered_ms; /* loop time */
};

const char *bus_request_method(const bus_request_t *r) { return r->method; }
const cJSON *bus_request_params(const bus_request_t *r) { return r->params; }
const char *bus_request_id(const bus_request_t *r) {
    return *r->msg->message_id ? r->msg->message_id : r->msg->correlation_id;
}
const char *bus_request_correlation_id(const bus_request_t *r) { return r->correlation; }
const char *bus_request_caller(const bus_request_t *r) {
    const char *c = bus_msg_header(r->msg, BUS_HDR_CALLER);
    return c ? c : "";
}
int bus_request_redelivered(const bus_request_t *r) { return r->msg->redelivered; }
uint64_t bus_request_deadline(const bus_request_t *r) {
    int64_t ttl = r->msg->expiration_ms > 0 ? r->msg->expiration_ms : r->w->cfg.rpc_timeout_ms;
    return r->delivered_ms + (uint64_t)ttl;
}
bus_worker_t *bus_request_worker(const bus_request_t *r) { return r->w; }

static void request_free(bus_request_t *r) {
    cJSON_Delete(r->params);
    free(r);
}

/* Publishes the reply body (copied) and finishes the request. */
static void send_reply(bus_request_t *r, const char *body, size_t len, int err) {
    bus_worker_t *w = r->w;
    bus_histogram_observe(w->m_rpc_seconds, (double)(uv_hrtime() - r->started_ns) / 1e9);
    if (err) bus_counter_inc(w->m_rpc_errors, 1);
    bus_publish_t p = {
        .exchange = "",
        .routing_key = r->msg->reply_to,
        .body = body,
        .len = len,
        .content_type = "application/json",
        .correlation_id = r->msg->correlation_id, /* all a caller needs to match it */
        .unconfirmed = 1,
    };
    /* The ack leaves after the reply, in the same write (acks are encoded
     * at the end of the loop turn): the broker has the reply in hand before
     * the request is settled. Waiting for the reply's confirm would only hold
     * a prefetch slot longer. A reply nobody waits for any more is dropped by
     * the broker, and the caller owns the timeout. */
    if (bus_conn_publish(w->conn, &p, NULL, NULL) == 0) {
        bus_msg_ack(r->msg);
        bus_counter_inc(w->m_acked, 1);
    } else {
        bus_msg_free(r->msg); /* not connected: the broker redelivers the request */
    }
    request_free(r);
    bus__worker_work_done(w);
}

void bus_reply_raw(bus_request_t *r, const char *json, size_t len) { send_reply(r, json, len, 0); }

int bus_worker_check_reply(bus_worker_t *w, const char *method, const cJSON *data, char *why, size_t whylen) {
    return bus__schema_check_result(w->schemas, w->def->service, method, data, why, whylen);
}

void bus_reply_ok(bus_request_t *r, cJSON *data) {
    char invalid[1024];
    if (r->w->validate_replies && bus_worker_check_reply(r->w, r->method, data, invalid, sizeof invalid) != 0) {
        bus_error(r->correlation, "%s.%s: reply violates its schema: %s", r->w->def->service, r->method, invalid);
        cJSON_Delete(data);
        bus_reply_error(r, BUS_EINTERNAL, "reply violates its schema: %s", invalid);
        return;
    }
    size_t len = 0;
    char *body = bus_rpc_reply_ok_json(data, &len);
    cJSON_Delete(data);
    if (!body) {
        bus_reply_error(r, BUS_EINTERNAL, "out of memory building the reply");
        return;
    }
    send_reply(r, body, len, 0);
    free(body);
}

void bus_reply_error(bus_request_t *r, int err, const char *fmt, ...) {
    char message[1024] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(message, sizeof message, fmt, ap);
        va_end(ap);
    }
    if (err == BUS_EINTERNAL || err == BUS_EUNAVAILABLE)
        bus_warn(r->correlation, "%s.%s failed: %s: %s", r->w->def->service, r->method, bus_err_name(err), message);
    size_t len = 0;
    char *body = bus_rpc_reply_error_json(err, message, &len);
    if (!body) { /* out of memory: leave it unacked for a retry elsewhere */
        bus_worker_t *w = r->w;
        bus_msg_reject(r->msg, 1);
        request_free(r);
        bus__worker_work_done(w);
        return;
    }
    send_reply(r, body, len, err);
    free(body);
}

static void ping(bus_request_t *r) {
    bus_worker_t *w = r->w;
    static char host[256]; /* asked once: ping is the hot path of health checks and benchmarks */
    static long pid;
    if (!pid) {
        gethostname(host, sizeof host - 1);
        pid = (long)getpid();
    }
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "service", w->def->service);
    cJSON_AddStringToObject(d, "instance", w->instance);
    cJSON_AddStringToObject(d, "host", host);
    cJSON_AddNumberToObject(d, "pid", (double)pid);
    cJSON_AddStringToObject(d, "version", BUS_VERSION);
    cJSON_AddNumberToObject(d, "uptime_s", (double)(uv_now(w->loop) - w->started_ms) / 1000.0);
    cJSON_AddNumberToObject(d, "in_flight", (double)w->in_flight);
    bus_reply_ok(r, d);
}

void bus__worker_on_request(bus_msg_t *msg, void *data) {
    bus_worker_t *w = data;
    bus__worker_work_started(w);
    bus_counter_inc(w->m_consumed, 1);
    if (!*msg->reply_to) {
        bus__worker_dead_letter(w, msg, "RPC request without reply_to: nobody to answer");
        return;
    }
    bus_request_t *r = calloc(1, sizeof *r);
    if (!r) {
        bus_msg_reject(msg, 1);
        bus__worker_work_done(w);
        return;
    }
    r->w = w;
    r->msg = msg;
    r->started_ns = uv_hrtime();
    r->delivered_ms = uv_now(w->loop);
    const char *corr = bus_msg_header(msg, BUS_HDR_CORRELATION);
    r->correlation = corr && *corr ? corr : bus_request_id(r);
    /* Through bus.rpc the routing key names the method ("alliances.ping");
     * straight to the queue through the default exchange (libbus clients,
     * any bot that prefers it) the routing key is the queue name and the
     * method is in `type`. */
    size_t slen = strlen(w->def->service);
    const char *key = *msg->exchange ? msg->routing_key : msg->type;
    if (!*key) {
        r->method = "";
        bus_reply_error(r, BUS_ENOT_FOUND, "no method: publish to %s with routing key %s.<method>, or to %s with "
                        "type %s.<method>", BUS_EXCHANGE_RPC, w->def->service, msg->routing_key, w->def->service);
        return;
    }
    if (strncmp(key, w->def->service, slen) != 0 || key[slen] != '.') {
        r->method = key;
        bus_reply_error(r, BUS_ENOT_FOUND, "unknown method %s", key);
        return;
    }
    r->method = key + slen + 1;
    if (msg->len > BUS_ENVELOPE_MAX_BYTES) {
        bus_reply_error(r, BUS_EBAD_REQUEST, "params larger than %d bytes", BUS_ENVELOPE_MAX_BYTES);
        return;
    }
    char why[256];
    if (msg->len == 0) {
        r->params = cJSON_CreateObject();
    } else {
        r->params = bus_json_parse(msg->body, msg->len, BUS_JSON_MAX_DEPTH, why, sizeof why);
        if (!r->params) {
            bus_reply_error(r, BUS_EBAD_REQUEST, "%s", why);
            return;
        }
    }
    bus_method_fn fn = NULL;
    if (strcmp(r->method, "ping") == 0) fn = ping;
    for (const bus_method_t *m = w->def->methods; !fn && m && m->name; m++)
        if (strcmp(m->name, r->method) == 0) fn = m->fn;
    if (!fn) {
        bus_reply_error(r, BUS_ENOT_FOUND, "unknown method %s.%s", w->def->service, r->method);
        return;
    }
    char invalid[1024];
    if (bus__schema_check_params(w->schemas, w->def->service, r->method, r->params, invalid, sizeof invalid) != 0) {
        bus_reply_error(r, BUS_EINVALID, "%s", invalid);
        return;
    }
    fn(r);
}
