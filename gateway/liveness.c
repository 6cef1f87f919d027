/* The liveness cache: does a queue exist, and how many consumers and
 * messages has it, as the broker last said. The RPC routes ask it before a
 * call (gw_require_live_service: a service without a live instance is a 503
 * at once, not a timeout), GET /api/v1/health/services reads it for every
 * domain (health.c).
 *
 * The broker is asked with passive queue declares that do not wait
 * (bus_conn_queue_probe). Answers are cached per queue: 1 s for a queue with
 * consumers, 250 ms for "no consumer" and "no queue" (so a service that just
 * started is seen quickly). A request that finds a fresh answer goes on at
 * once (and a live answer in its last quarter is refreshed behind it, so
 * steady traffic never waits); any other waits for a probe, and all
 * requests waiting on one queue share one probe. The event loop never waits
 * for the broker. An answer read on an earlier connection (the broker came
 * back since) is never fresh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/topology.h"
#include "gateway.h"

#define CACHE_SLOTS 256
#define TTL_OK_MS 1000
#define TTL_NEG_MS 250

typedef struct waiter {
    struct waiter *next;
    void (*cb)(void *data);
    void *data;
} waiter_t;

typedef struct gw_qinfo {
    gw_t *gw;             /* the gateway whose cache this slot is */
    char name[72];        /* queue name; "" = free */
    int known;            /* rc and counts are an answer read on connection generation gen */
    int rc;               /* of the last probe: 0, BUS_ENOT_FOUND, BUS_EUNAVAILABLE */
    uint32_t messages, consumers;
    uint64_t at;          /* uv_now of that answer */
    uint64_t gen;
    int probing;          /* a probe is out: the slot is not reused until it answers */
    waiter_t *waiters;    /* called (and freed) when the probe answers */
} qinfo_t;

/* The slot of `queue` in gw->qcache (CACHE_SLOTS of them, allocated on
 * first use); with create, a free or reusable one is taken (NULL when every
 * slot has a probe out, or out of memory). */
static qinfo_t *slot_of(gw_t *gw, const char *queue, int create) {
    qinfo_t *cache = gw->qcache;
    if (!cache) {
        if (!create || !(cache = gw->qcache = calloc(CACHE_SLOTS, sizeof *cache))) return NULL;
    }
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (strcmp(cache[i].name, queue) == 0) return &cache[i];
    if (!create) return NULL;
    qinfo_t *slot = NULL;
    for (int i = 0; i < CACHE_SLOTS && !slot; i++)
        if (!cache[i].name[0]) slot = &cache[i];
    for (int i = 0; i < CACHE_SLOTS && !slot; i++) {
        qinfo_t *v = &cache[gw->qcache_victim++ % CACHE_SLOTS];
        if (!v->probing) slot = v;
    }
    if (!slot) return NULL;
    memset(slot, 0, sizeof *slot);
    slot->gw = gw;
    snprintf(slot->name, sizeof slot->name, "%s", queue);
    return slot;
}

static int current(gw_t *gw, const qinfo_t *q) { return q->known && q->gen == bus_conn_generation(gw->conn); }
static int live(const qinfo_t *q) { return q->rc == 0 && q->consumers > 0; }
static int fresh(gw_t *gw, const qinfo_t *q) {
    return current(gw, q) && uv_now(gw->loop) - q->at < (live(q) ? TTL_OK_MS : TTL_NEG_MS);
}

static void on_probe(int status, uint32_t messages, uint32_t consumers, void *data) {
    qinfo_t *q = data;
    gw_t *gw = q->gw;
    q->probing = 0;
    q->rc = status == 0 || status == BUS_ENOT_FOUND ? status : BUS_EUNAVAILABLE;
    q->known = q->rc != BUS_EUNAVAILABLE;
    q->messages = status == 0 ? messages : 0;
    q->consumers = status == 0 ? consumers : 0;
    q->at = uv_now(gw->loop);
    q->gen = bus_conn_generation(gw->conn);
    waiter_t *w = q->waiters;
    q->waiters = NULL;
    while (w) { /* callbacks may look the slot up again (it holds the answer) or probe anew */
        waiter_t *n = w->next;
        w->cb(w->data);
        free(w);
        w = n;
    }
}

/* Makes sure a probe of q is out; with cb, cb(data) runs when it answers.
 * 0, or BUS_EUNAVAILABLE / BUS_EINTERNAL (cb will not run). */
static int probe(gw_t *gw, qinfo_t *q, void (*cb)(void *), void *data) {
    waiter_t *w = NULL;
    if (cb) {
        w = malloc(sizeof *w);
        if (!w) return BUS_EINTERNAL;
        *w = (waiter_t){q->waiters, cb, data};
    }
    if (!q->probing) {
        int rc = bus_conn_queue_probe(gw->conn, q->name, on_probe, q);
        if (rc != 0) {
            free(w);
            return rc == BUS_EUNAVAILABLE ? rc : BUS_EINTERNAL;
        }
        q->probing = 1;
    }
    if (w) q->waiters = w;
    return 0;
}

/* ---- the cache as health.c reads it ---- */

int gw_liveness_refresh(gw_t *gw, const char *queue, void (*done)(void *data), void *data) {
    qinfo_t *q = slot_of(gw, queue, 1);
    if (!q || fresh(gw, q)) return 0;
    return probe(gw, q, done, data) == 0;
}

int gw_liveness_get(gw_t *gw, const char *queue, gw_queue_state_t *out) {
    const qinfo_t *q = slot_of(gw, queue, 0);
    if (!q) return BUS_ENOT_FOUND;
    *out = (gw_queue_state_t){.rc = q->rc, .known = q->known, .messages = q->messages, .consumers = q->consumers};
    return 0;
}

/* ---- a live instance, before an RPC ---- */

/* Goes on with r->after_check, or answers 404 / 503 from q's answer. */
static void decide(gw_req_t *r, const qinfo_t *q) {
    if (!q || q->rc == BUS_EUNAVAILABLE)
        gw_fail_broker(r);
    else if (q->rc == BUS_ENOT_FOUND)
        gw_fail(r, 404, "unknown service \"%s\"", r->service);
    else if (q->consumers == 0)
        gw_fail(r, 503, "no live instance of service \"%s\"", r->service);
    else
        r->after_check(r);
}

static void rpc_queue(char *q, size_t cap, const char *service) { bus_queue_name(q, cap, "rpc", service); }

static void on_service_probed(void *data) {
    gw_req_t *r = data;
    char name[80];
    rpc_queue(name, sizeof name, r->service);
    decide(r, slot_of(r->gw, name, 0));
}

void gw_require_live_service(gw_req_t *r, void (*then)(gw_req_t *r)) {
    gw_t *gw = r->gw;
    if (!bus_conn_is_up(gw->conn) || bus_conn_blocked(gw->conn)) {
        gw_fail_broker(r);
        return;
    }
    r->after_check = then;
    char name[80];
    rpc_queue(name, sizeof name, r->service);
    qinfo_t *q = slot_of(gw, name, 1);
    if (!q) {
        gw_fail(r, 503, "too many services are being looked up; try again");
        return;
    }
    if (fresh(gw, q)) {
        /* a live answer in its last quarter is refreshed behind the request,
         * so steady traffic never waits for a probe */
        if (live(q) && uv_now(gw->loop) - q->at >= TTL_OK_MS * 3 / 4) probe(gw, q, NULL, NULL);
        decide(r, q);
        return;
    }
    if (probe(gw, q, on_service_probed, r) != 0) gw_fail_broker(r);
}

void gw_liveness_free(gw_t *gw) {
    qinfo_t *cache = gw->qcache;
    for (int i = 0; cache && i < CACHE_SLOTS; i++)
        while (cache[i].waiters) {
            waiter_t *n = cache[i].waiters->next;
            free(cache[i].waiters);
            cache[i].waiters = n;
        }
    free(cache);
    gw->qcache = NULL;
}
