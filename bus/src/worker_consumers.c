/* The worker's extra consumers: queues a domain declares besides its own
 * (def->consumers), declared, bound and consumed again after every connect,
 * stream offsets included. See bus/worker.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "worker_internal.h"

#define STREAM_OFFSET_HEADER "x-stream-offset" /* consumer argument, and header of each stream delivery */

struct bus__consumer {
    bus_worker_t *w;
    const bus_consumer_def_t *def;
    char queue[256]; /* the broker's name for a server-named queue, new on each connect */
    char tag[128];
    int consuming;
};

struct bus_delivery {
    struct bus__consumer *c;
    bus_msg_t *msg;
    int64_t offset;
};

const bus_msg_t *bus_delivery_msg(const bus_delivery_t *d) { return d->msg; }
int64_t bus_delivery_stream_offset(const bus_delivery_t *d) { return d->offset; }
const char *bus_delivery_queue(const bus_delivery_t *d) { return d->c->queue; }
void *bus_delivery_data(const bus_delivery_t *d) { return d->c->def->data; }
bus_worker_t *bus_delivery_worker(const bus_delivery_t *d) { return d->c->w; }

void bus_delivery_ack(bus_delivery_t *d) {
    bus_worker_t *w = d->c->w;
    bus_msg_ack(d->msg);
    bus_counter_inc(w->m_acked, 1);
    free(d);
    bus__worker_work_done(w);
}

void bus_delivery_reject(bus_delivery_t *d, int requeue) {
    bus_worker_t *w = d->c->w;
    bus_msg_reject(d->msg, requeue);
    bus_counter_inc(w->m_nacked, 1);
    free(d);
    bus__worker_work_done(w);
}

static int64_t msg_stream_offset(const bus_msg_t *msg) {
    const char *h = bus_msg_header(msg, STREAM_OFFSET_HEADER);
    if (!h || !*h) return -1;
    char *end = NULL;
    long long v = strtoll(h, &end, 10);
    return *end || v < 0 ? -1 : (int64_t)v;
}

static void on_delivery(bus_msg_t *msg, void *data) {
    struct bus__consumer *c = data;
    bus_worker_t *w = c->w;
    bus_counter_inc(w->m_consumed, 1);
    bus_delivery_t *d = calloc(1, sizeof *d);
    if (!d) {
        bus_msg_reject(msg, 1);
        bus_counter_inc(w->m_nacked, 1);
        return;
    }
    d->c = c;
    d->msg = msg;
    d->offset = msg_stream_offset(msg);
    bus__worker_work_started(w);
    c->def->fn(d);
}

static int is_stream(const bus_consumer_def_t *d) {
    return d->options.queue_type && strcmp(d->options.queue_type, "stream") == 0;
}

int bus__worker_consumers_init(bus_worker_t *w, char *err, size_t errlen) {
    size_t n = 0;
    for (const bus_consumer_def_t *d = w->def->consumers; d && d->fn; d++) {
        const char *name = d->queue && *d->queue ? d->queue : "(server-named)";
        if (d->declare && (!d->queue || !*d->queue)) {
            snprintf(err, errlen, "extra consumer %zu: a queue declared by its own function needs its name", n);
            return BUS_EBAD_REQUEST;
        }
        /* the broker refuses x-stream-offset on other queues, and would close the channel on every connect */
        if (!is_stream(d) && (d->offset.from != BUS_STREAM_NEXT || d->resume)) {
            snprintf(err, errlen, "extra consumer %zu (%s): a stream offset needs options.queue_type \"stream\"", n,
                     name);
            return BUS_EBAD_REQUEST;
        }
        n++;
    }
    if (n == 0) return 0;
    w->consumers = calloc(n, sizeof *w->consumers);
    if (!w->consumers) {
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    for (size_t i = 0; i < n; i++) {
        w->consumers[i].w = w;
        w->consumers[i].def = &w->def->consumers[i];
    }
    w->nconsumers = n;
    return 0;
}

void bus__worker_consumers_free(bus_worker_t *w) {
    free(w->consumers);
    w->consumers = NULL;
    w->nconsumers = 0;
}

int bus__worker_consumers_declare(bus_worker_t *w, bus_conn_t *conn) {
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < w->nconsumers; i++) {
        struct bus__consumer *c = &w->consumers[i];
        const bus_consumer_def_t *d = c->def;
        const char *name = d->queue ? d->queue : "";
        if (d->declare) {
            snprintf(c->queue, sizeof c->queue, "%s", name);
            rc = d->declare(conn);
        } else {
            bus_queue_options_t o = d->options;
            /* a domain's durable queue follows the platform's queue type (quorum in a cluster) */
            if (!o.queue_type && *name && o.durable && !o.exclusive && !o.auto_delete) o.queue_type = w->cfg.queue_type;
            rc = bus_conn_declare_queue_named(conn, name, &o, c->queue, sizeof c->queue);
        }
        for (const bus_binding_t *b = d->bindings; rc == 0 && b && b->exchange; b++)
            rc = bus_conn_bind(conn, c->queue, b->exchange, b->key ? b->key : "");
    }
    return rc;
}

static const char *offset_text(const bus_stream_offset_t *o, char *buf, size_t len) {
    switch (o->from) {
    case BUS_STREAM_FIRST: return "first";
    case BUS_STREAM_LAST: return "last";
    case BUS_STREAM_OFFSET: snprintf(buf, len, "offset %lld", (long long)o->value); return buf;
    case BUS_STREAM_TIMESTAMP: snprintf(buf, len, "time %lld", (long long)o->value); return buf;
    default: return "next";
    }
}

/* One consume: where a stream consumer starts (resume, else the default) goes into x-stream-offset. */
static int consume_one(bus_worker_t *w, bus_conn_t *conn, struct bus__consumer *c) {
    const bus_consumer_def_t *d = c->def;
    bus_stream_offset_t from = d->offset;
    if (!is_stream(d)) from.from = BUS_STREAM_NEXT; /* no argument at all */
    else if (d->resume && !d->resume(w, d->data, &from)) from = d->offset;
    amqp_table_entry_t entry;
    entry.key = amqp_cstring_bytes(STREAM_OFFSET_HEADER);
    amqp_table_t args = {0, &entry};
    switch (from.from) {
    case BUS_STREAM_FIRST:
    case BUS_STREAM_LAST:
        entry.value.kind = AMQP_FIELD_KIND_UTF8;
        entry.value.value.bytes = amqp_cstring_bytes(from.from == BUS_STREAM_FIRST ? "first" : "last");
        args.num_entries = 1;
        break;
    case BUS_STREAM_OFFSET:
        entry.value.kind = AMQP_FIELD_KIND_I64;
        entry.value.value.i64 = from.value < 0 ? 0 : from.value;
        args.num_entries = 1;
        break;
    case BUS_STREAM_TIMESTAMP:
        entry.value.kind = AMQP_FIELD_KIND_TIMESTAMP;
        entry.value.value.u64 = from.value < 0 ? 0 : (uint64_t)from.value;
        args.num_entries = 1;
        break;
    default: /* next: the broker's default, and no argument at all for other queues */
        break;
    }
    int rc = bus_conn_consume(conn, c->queue, 0, 0, args, on_delivery, c, c->tag, sizeof c->tag);
    if (rc != 0) return rc;
    c->consuming = 1;
    char buf[48];
    bus_info(NULL, "consuming %s%s%s", c->queue, args.num_entries ? " from " : "",
             args.num_entries ? offset_text(&from, buf, sizeof buf) : "");
    return 0;
}

int bus__worker_consumers_start(bus_worker_t *w, bus_conn_t *conn) {
    uint16_t dflt = (uint16_t)w->cfg.prefetch, current = dflt;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < w->nconsumers; i++) {
        struct bus__consumer *c = &w->consumers[i];
        uint16_t want = c->def->prefetch ? c->def->prefetch : dflt;
        if (want != current) {
            rc = bus_conn_set_prefetch(conn, want);
            current = want;
        }
        if (rc == 0) rc = consume_one(w, conn, c);
    }
    /* consumers started later on the channel get the default again */
    if (rc == 0 && current != dflt) rc = bus_conn_set_prefetch(conn, dflt);
    return rc;
}

void bus__worker_consumers_cancel(bus_worker_t *w) {
    for (size_t i = 0; i < w->nconsumers; i++) {
        struct bus__consumer *c = &w->consumers[i];
        if (!c->consuming) continue;
        bus_conn_cancel(w->conn, c->tag);
        c->consuming = 0;
    }
}

void bus__worker_consumers_down(bus_worker_t *w) {
    for (size_t i = 0; i < w->nconsumers; i++) w->consumers[i].consuming = 0;
}
