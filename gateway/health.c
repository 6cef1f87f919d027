/* Platform information, health and metrics routes (no key, no rate limit):
 *
 *   GET /                               name, version, links
 *   GET /api/v1/health                  the edge's own view: broker, Redis (200, or 503 when the broker is down)
 *   GET /api/v1/health/services         per domain, from the broker itself: consumers on rpc.<s>,
 *                                       backlogs of rpc.<s> / events.<s>, dead letters in dead.<s>
 *   GET /api/v1/services/{name}/status  that service's ping reply
 *   GET /metrics                        Prometheus text
 *
 * The broker is asked with passive queue declares that do not wait
 * (bus_conn_queue_probe). Answers are cached per queue: 1 s for a queue with
 * consumers, 250 ms for "no consumer" and "no queue" (so a service that just
 * started is seen quickly). A request that finds a fresh answer goes on at
 * once (and a live answer in its last quarter is refreshed behind it, so
 * steady traffic never waits); any other waits for a probe, and all
 * requests waiting on one queue share one probe. The event loop never waits
 * for the broker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
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

typedef struct {
    char name[72];        /* queue name; "" = free */
    int known;            /* rc and counts are an answer read on connection generation gen */
    int rc;               /* of the last probe: 0, BUS_ENOT_FOUND, BUS_EUNAVAILABLE */
    uint32_t messages, consumers;
    uint64_t at;          /* uv_now of that answer */
    uint64_t gen;
    int probing;          /* a probe is out: the slot is not reused until it answers */
    waiter_t *waiters;    /* called (and freed) when the probe answers */
} qinfo_t;

static qinfo_t cache[CACHE_SLOTS];
static unsigned next_victim;
static gw_t *cache_gw; /* probes answer on the one gateway of the process */

/* The slot of `queue`; with create, a free or reusable one is taken (NULL
 * when every slot has a probe out). */
static qinfo_t *slot_of(const char *queue, int create) {
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (strcmp(cache[i].name, queue) == 0) return &cache[i];
    if (!create) return NULL;
    qinfo_t *slot = NULL;
    for (int i = 0; i < CACHE_SLOTS && !slot; i++)
        if (!cache[i].name[0]) slot = &cache[i];
    for (int i = 0; i < CACHE_SLOTS && !slot; i++) {
        qinfo_t *v = &cache[next_victim++ % CACHE_SLOTS];
        if (!v->probing) slot = v;
    }
    if (!slot) return NULL;
    memset(slot, 0, sizeof *slot);
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
    gw_t *gw = cache_gw;
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
        cache_gw = gw;
    }
    if (w) q->waiters = w;
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
    decide(r, slot_of(name, 0));
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
    qinfo_t *q = slot_of(name, 1);
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

void gw_health_free(void) {
    for (int i = 0; i < CACHE_SLOTS; i++)
        while (cache[i].waiters) {
            waiter_t *n = cache[i].waiters->next;
            free(cache[i].waiters);
            cache[i].waiters = n;
        }
    memset(cache, 0, sizeof cache);
}

void gw_root(gw_req_t *r) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "name", "bus");
    cJSON_AddStringToObject(d, "service", "gateway");
    cJSON_AddStringToObject(d, "version", BUS_VERSION);
    cJSON_AddStringToObject(d, "description", "event-driven message bus for game-community bots: HTTP edge");
    cJSON_AddBoolToObject(d, "auth", r->gw->keys != NULL);
    cJSON *links = cJSON_AddObjectToObject(d, "links");
    cJSON_AddStringToObject(links, "health", "/api/v1/health");
    cJSON_AddStringToObject(links, "services", "/api/v1/health/services");
    cJSON_AddStringToObject(links, "service_status", "/api/v1/services/{name}/status");
    cJSON_AddStringToObject(links, "rpc", "/api/v1/rpc/{service}/{method}");
    cJSON_AddStringToObject(links, "events", "/api/v1/events/{type}");
    cJSON_AddStringToObject(links, "openapi", "/api/v1/openapi.json");
    cJSON_AddStringToObject(links, "metrics", "/metrics");
    gw_finish_json(r, 200, d);
}

void gw_health(gw_req_t *r) {
    gw_t *gw = r->gw;
    int up = bus_conn_is_up(gw->conn);
    int broker = up && !bus_conn_blocked(gw->conn); /* blocked: RPC and events answer 503 */
    int redis = gw->redis && bus_redis_is_connected(gw->redis);
    char body[256];
    int n = snprintf(body, sizeof body,
                     "{\"status\":\"%s\",\"service\":\"gateway\",\"version\":\"%s\",\"broker\":\"%s\","
                     "\"redis\":\"%s\",\"store\":\"none\"}",
                     broker && redis ? "ok" : "degraded", BUS_VERSION, broker ? "up" : up ? "blocked" : "down",
                     redis ? "up" : "down");
    gw_finish(r, broker ? 200 : 503, "application/json", body, (size_t)n);
}

/* GET /api/v1/health/services: three queues per service (rpc, events,
 * dead), probed together; the answer is built when the last one is in. */
#define MAX_HEALTH_SERVICES 64
typedef struct {
    gw_req_t *r;
    size_t nservices;
    const char *services[MAX_HEALTH_SERVICES];
    int pending;
} health_ctx_t;

static const char *const QUEUE_KINDS[3] = {"rpc", "events", "dead"};

static void health_answer(health_ctx_t *h) {
    gw_t *gw = h->r->gw;
    cJSON *d = cJSON_CreateObject();
    cJSON *arr = cJSON_CreateArray();
    int up = 0, broker_lost = 0;
    for (size_t i = 0; i < h->nservices; i++) {
        const qinfo_t *q[3];
        for (int k = 0; k < 3; k++) {
            char name[80];
            bus_queue_name(name, sizeof name, QUEUE_KINDS[k], h->services[i]);
            q[k] = slot_of(name, 0);
            if (q[k] && q[k]->rc == BUS_EUNAVAILABLE) broker_lost = 1;
        }
        int declared = q[0] && q[0]->known && q[0]->rc == 0;
        uint32_t instances = declared ? q[0]->consumers : 0;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "service", h->services[i]);
        cJSON_AddNumberToObject(o, "instances", instances);
        cJSON_AddNumberToObject(o, "rpc_backlog", declared ? q[0]->messages : 0);
        cJSON_AddNumberToObject(o, "event_backlog", q[1] && q[1]->known && q[1]->rc == 0 ? q[1]->messages : 0);
        cJSON_AddNumberToObject(o, "dead_letters", q[2] && q[2]->known && q[2]->rc == 0 ? q[2]->messages : 0);
        cJSON_AddBoolToObject(o, "declared", declared);
        cJSON_AddStringToObject(o, "status", declared && instances > 0 ? "up" : "down");
        cJSON_AddItemToArray(arr, o);
        up += declared && instances > 0;
    }
    gw_req_t *r = h->r;
    free(h);
    if (broker_lost || !bus_conn_is_up(gw->conn)) {
        cJSON_Delete(arr);
        cJSON_Delete(d);
        gw_fail_broker(r);
        return;
    }
    cJSON_AddStringToObject(d, "status", (size_t)up == (size_t)cJSON_GetArraySize(arr) ? "ok" : "degraded");
    cJSON_AddItemToObject(d, "services", arr);
    gw_finish_json(r, 200, d);
}

static void on_health_probed(void *data) {
    health_ctx_t *h = data;
    if (--h->pending == 0) health_answer(h);
}

static void health_add(health_ctx_t *h, const char *s) {
    for (size_t i = 0; i < h->nservices; i++)
        if (strcmp(h->services[i], s) == 0) return;
    if (h->nservices < MAX_HEALTH_SERVICES) h->services[h->nservices++] = s;
}

void gw_health_services(gw_req_t *r) {
    gw_t *gw = r->gw;
    if (!bus_conn_is_up(gw->conn) || bus_conn_blocked(gw->conn)) {
        gw_fail_broker(r);
        return;
    }
    health_ctx_t *h = calloc(1, sizeof *h);
    if (!h) {
        gw_fail(r, 500, "out of memory");
        return;
    }
    h->r = r;
    /* the names live as long as the gateway: the domain list and the registry */
    for (size_t i = 0; bus_domains[i]; i++) health_add(h, bus_domains[i]);
    size_t n = gw->schemas ? bus_schema_registry_method_count(gw->schemas) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = NULL;
        if (bus_schema_registry_method_at(gw->schemas, i, &s, NULL, NULL, NULL, NULL) == 0 && s) health_add(h, s);
    }
    h->pending = 1; /* held while the probes are made, so none can finish h early */
    for (size_t i = 0; i < h->nservices; i++)
        for (int k = 0; k < 3; k++) {
            char name[80];
            bus_queue_name(name, sizeof name, QUEUE_KINDS[k], h->services[i]);
            qinfo_t *q = slot_of(name, 1);
            if (!q || fresh(gw, q)) continue;
            if (probe(gw, q, on_health_probed, h) == 0) h->pending++;
        }
    on_health_probed(h);
}

static void on_ping(int status, const char *reply, size_t len, void *data) {
    gw_req_t *r = data;
    if (status == 0) {
        gw_finish_spliced(r, len >= 15 && memcmp(reply, "{\"success\":true", 15) == 0 ? 200 : 503, reply, len);
    } else if (status == BUS_ETIMEOUT) {
        gw_fail(r, 504, "service %s did not answer its ping within %d ms", r->service, r->gw->cfg.rpc_timeout_ms);
    } else if (status == BUS_ENOT_FOUND) {
        gw_fail(r, 404, "unknown service \"%s\"", r->service);
    } else {
        gw_fail(r, 503, "the broker connection was lost during the call");
    }
}

static void service_status_run(gw_req_t *r) {
    gw_t *gw = r->gw;
    bus_rpc_call_opts_t opts = {.timeout_ms = gw->cfg.rpc_timeout_ms, .correlation_id = r->request_id,
                                .caller = "bus-gateway"};
    int rc = bus_rpc_call(gw->rpc, r->service, "ping", "{}", 2, &opts, on_ping, r);
    if (rc != 0) gw_fail_broker(r);
}

void gw_service_status(gw_req_t *r) { gw_require_live_service(r, service_status_run); }

void gw_metrics(gw_req_t *r) {
    size_t len = 0;
    char *text = bus_metrics_render(&len);
    if (!text) {
        gw_fail(r, 500, "out of memory");
        return;
    }
    gw_finish(r, 200, "text/plain; version=0.0.4", text, len);
    free(text);
}
