/* The RPC client: direct reply-to, a correlation table, per-call timers.
 * See bus/rpc.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/log.h"
#include "bus/metrics.h"
#include "bus/rpc.h"
#include "bus/topology.h"
#include "rpc_table.h"

typedef struct pending_call {
    bus__rpc_entry_t entry; /* first: the table links calls through it */
    bus_rpc_client_t *client;
    bus_rpc_cb cb;
    void *data;
    uint64_t started_ns;
    uv_timer_t timer; /* freed in its close callback */
} pending_call_t;

struct bus_rpc_client {
    bus_conn_t *conn;
    bus__rpc_table_t table; /* pending calls by correlation id */
    int default_timeout_ms;
    int ready;
    int freeing;
    size_t timers_open;   /* call timers not yet closed */
    /* The post-failover stall guard (see on_timeout): replies and timeouts on
     * the current connection, replies on the one before. */
    uint64_t replies_now, timeouts_now, replies_before;
};

/* The client is freed once nothing refers to it any more. */
static void maybe_free(bus_rpc_client_t *c) {
    if (c->freeing && c->timers_open == 0) free(c);
}

static bus_counter_t *m_calls, *m_timeouts, *m_unavailable, *m_late;
static bus_histogram_t *m_latency;

static void on_timer_closed(uv_handle_t *h) {
    pending_call_t *p = h->data;
    bus_rpc_client_t *c = p->client;
    free(p);
    c->timers_open--;
    maybe_free(c);
}

/* Unlinks a call, runs its callback, releases it. */
static void finish(pending_call_t *p, int status, const char *reply, size_t len) {
    bus_rpc_client_t *c = p->client;
    bus__rpc_table_remove(&c->table, &p->entry);
    uv_timer_stop(&p->timer);
    if (status == 0) bus_histogram_observe(m_latency, (double)(uv_hrtime() - p->started_ns) / 1e9);
    else if (status == BUS_ETIMEOUT) bus_counter_inc(m_timeouts, 1);
    else bus_counter_inc(m_unavailable, 1);
    bus_rpc_cb cb = p->cb;
    void *data = p->data;
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
    cb(status, reply, len, data);
}

static void fail_all(bus_rpc_client_t *c, int status) {
    bus__rpc_entry_t *e;
    while ((e = bus__rpc_table_any(&c->table))) finish((pending_call_t *)e, status, NULL, 0);
}

/* A RabbitMQ 3.10 cluster can leave a fresh channel that first published
 * to a quorum queue while the queue elected a new leader with every later
 * publish to that queue silently parked (seen in tests/cluster: the calls
 * of a client that failed over with its worker all timed out while new
 * connections were served). So when calls time out on a connection that
 * has had no reply at all, after a connection that had replies, the
 * connection is dropped once and made again; the next one has had no reply
 * before it, so a service that is simply down never makes this loop. */
#define STALL_TIMEOUTS 3
static void on_timeout(uv_timer_t *t) {
    pending_call_t *p = t->data;
    bus_rpc_client_t *c = p->client;
    finish(p, BUS_ETIMEOUT, NULL, 0);
    if (++c->timeouts_now == STALL_TIMEOUTS && c->replies_now == 0 && c->replies_before > 0 &&
        bus_conn_is_up(c->conn))
        bus_conn_drop(c->conn, "RPC calls time out since the last reconnect; connecting again");
}

static void on_reply(bus_msg_t *m, void *data) {
    bus_rpc_client_t *c = data;
    const char *corr = m->correlation_id;
    pending_call_t *p = (pending_call_t *)bus__rpc_table_find(&c->table, corr);
    if (!p) {
        bus_counter_inc(m_late, 1);
        bus_debug(corr, "rpc: reply for no pending call dropped");
    } else {
        c->replies_now++;
        finish(p, 0, m->body, m->len);
    }
    bus_msg_free(m);
}

static void on_up(bus_conn_t *conn, void *data) {
    bus_rpc_client_t *c = data;
    int rc = bus_conn_consume_fast(conn, BUS_DIRECT_REPLY_TO, 1, on_reply, c, NULL, 0);
    c->ready = rc == 0;
    c->replies_before = c->replies_now;
    c->replies_now = c->timeouts_now = 0;
}

/* A request the broker could not route: no queue is bound for the service. */
static void on_returned(const char *message_id, const char *corr, void *data) {
    (void)message_id;
    bus_rpc_client_t *c = data;
    pending_call_t *p = (pending_call_t *)bus__rpc_table_find(&c->table, corr);
    if (p) finish(p, BUS_ENOT_FOUND, NULL, 0);
}

static void on_down(bus_conn_t *conn, int err, void *data) {
    (void)conn;
    (void)err;
    bus_rpc_client_t *c = data;
    c->ready = 0;
    fail_all(c, BUS_EUNAVAILABLE);
}

int bus_rpc_client_new(bus_conn_t *conn, int default_timeout_ms, bus_rpc_client_t **out) {
    if (!m_calls) {
        m_calls = bus_counter("bus_rpc_client_calls_total", "RPC calls started", NULL);
        m_timeouts = bus_counter("bus_rpc_client_timeouts_total", "RPC calls that timed out", NULL);
        m_unavailable = bus_counter("bus_rpc_client_unavailable_total", "RPC calls failed without a reply", NULL);
        m_late = bus_counter("bus_rpc_late_replies_total", "Replies that arrived after their call ended", NULL);
        m_latency = bus_histogram("bus_rpc_client_seconds", "RPC round trip time", NULL);
    }
    bus_rpc_client_t *c = calloc(1, sizeof *c);
    if (!c) return BUS_EINTERNAL;
    char uuid[37];
    bus_uuid(uuid);
    /* 64 random bits: with the counter, a correlation id is unique across
     * every client, so a worker can use it as the request's id (the
     * exactly-once key) when no message_id comes with it */
    char prefix[20];
    snprintf(prefix, sizeof prefix, "%.8s%.4s%.4s", uuid, uuid + 9, uuid + 24);
    bus__rpc_table_init(&c->table, prefix);
    c->conn = conn;
    c->default_timeout_ms = default_timeout_ms > 0 ? default_timeout_ms : 5000;
    bus_conn_set_return_handler(conn, on_returned, c);
    if (bus_conn_add_listener(conn, on_up, on_down, c) != 0) {
        free(c);
        return BUS_EINTERNAL;
    }
    *out = c;
    return 0;
}

void bus_rpc_client_make_id(bus_rpc_client_t *c, char *out, size_t len) { bus__rpc_table_make(&c->table, out, len); }

int bus_rpc_client_ready(const bus_rpc_client_t *c) { return c->ready && bus_conn_is_up(c->conn); }
size_t bus_rpc_client_pending(const bus_rpc_client_t *c) { return c->table.count; }

void bus_rpc_client_free(bus_rpc_client_t *c) {
    bus_conn_set_return_handler(c->conn, NULL, NULL);
    bus_conn_remove_listener(c->conn, c);
    fail_all(c, BUS_EUNAVAILABLE);
    c->freeing = 1;
    maybe_free(c);
}

int bus_rpc_call(bus_rpc_client_t *c, const char *service, const char *method, const char *params, size_t len,
                 const bus_rpc_call_opts_t *opts, bus_rpc_cb cb, void *data) {
    if (!bus_valid_name(service) || !bus_valid_name(method)) return BUS_EBAD_REQUEST;
    /* a blocked connection would hold the request until the alarm clears:
     * the caller learns now, not at its timeout */
    if (!bus_rpc_client_ready(c) || bus_conn_blocked(c->conn)) return BUS_EUNAVAILABLE;
    int timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : c->default_timeout_ms;
    char queue[80], method_key[140], corr[64], expiration[24];
    bus_queue_name(queue, sizeof queue, "rpc", service);
    snprintf(method_key, sizeof method_key, "%s.%s", service, method);
    snprintf(expiration, sizeof expiration, "%d", timeout_ms);
    pending_call_t *p = calloc(1, sizeof *p);
    if (!p) return BUS_EINTERNAL;
    /* The end-to-end correlation id: the worker takes the request's
     * correlation_id when no header comes. So an id this client made is used
     * as the correlation_id itself; any other travels in a header. */
    const char *e2e = opts && opts->correlation_id && *opts->correlation_id ? opts->correlation_id : NULL;
    if (e2e && strlen(e2e) < sizeof corr && bus__rpc_table_assign_made(&c->table, &p->entry, e2e)) {
        memcpy(corr, e2e, strlen(e2e) + 1);
        e2e = NULL;
    } else {
        bus__rpc_table_assign(&c->table, &p->entry, corr, sizeof corr);
    }
    bus_header_t headers[2];
    size_t nh = 0;
    if (e2e) headers[nh++] = (bus_header_t){BUS_HDR_CORRELATION, strlen(BUS_HDR_CORRELATION), e2e, strlen(e2e)};
    if (opts && opts->caller && *opts->caller)
        headers[nh++] = (bus_header_t){BUS_HDR_CALLER, strlen(BUS_HDR_CALLER), opts->caller, strlen(opts->caller)};
    /* Straight to rpc.<service> through the default exchange, the method in
     * `type` (the worker accepts this and bus.rpc + "<service>.<method>"):
     * RabbitMQ routes a default-exchange publish by the queue name alone,
     * where bus.rpc's topic match costs it about 13 us of CPU per call
     * (tests/bench/README.md). mandatory: no such queue -> not_found at once;
     * expiration: a request nobody waits for any more is never run. */
    bus_publish_t pub = {
        .exchange = "",
        .routing_key = queue,
        .body = params,
        .len = len,
        .content_type = "application/json",
        .correlation_id = corr,
        .reply_to = BUS_DIRECT_REPLY_TO,
        .type = method_key,
        .expiration_ms = expiration,
        .mandatory = 1,
        .unconfirmed = 1,
        .headers = headers,
        .nheaders = nh,
    };
    int rc = bus_conn_publish(c->conn, &pub, NULL, NULL);
    if (rc != 0) { /* the call was never linked: a teardown inside publish did not see it */
        free(p);
        return rc;
    }
    p->client = c;
    p->cb = cb;
    p->data = data;
    p->started_ns = uv_hrtime();
    uv_timer_init(bus_conn_loop(c->conn), &p->timer);
    /* calls may come from outside a loop callback (after a blocking connect):
     * refresh the loop's clock so the timeout counts from now */
    uv_update_time(bus_conn_loop(c->conn));
    p->timer.data = p;
    uv_timer_start(&p->timer, on_timeout, (uint64_t)timeout_ms, 0);
    c->timers_open++;
    bus__rpc_table_link(&c->table, &p->entry);
    bus_counter_inc(m_calls, 1);
    return 0;
}
