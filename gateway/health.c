/* Platform information, health and metrics routes (no key, no rate limit):
 *
 *   GET /                               name, version, links
 *   GET /api/v1/health                  the edge's own view: broker, Redis (200, or 503 when the broker is down)
 *   GET /api/v1/health/services         per domain, from the broker itself: consumers on rpc.<s>,
 *                                       backlogs of rpc.<s> / events.<s>, dead letters in dead.<s>
 *   GET /api/v1/services/{name}/status  that service's ping reply
 *   GET /metrics                        Prometheus text
 *
 * The broker is asked with passive queue declares (bus_conn_queue_info):
 * synchronous but sub-millisecond, so their answers are cached (~1 s; 250 ms
 * for "no consumer" and "no queue", so a service that just started is seen
 * quickly) and the event loop is never held for long.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/topology.h"
#include "gateway.h"

#define CACHE_SLOTS 64
#define TTL_OK_MS 1000
#define TTL_NEG_MS 250

typedef struct {
    char name[72]; /* queue name; "" = free */
    int rc;        /* 0 or BUS_ENOT_FOUND */
    uint32_t messages, consumers;
    uint64_t at;   /* uv_now of the look-up */
    uint64_t gen;  /* connection generation it was read on */
} qinfo_t;

static qinfo_t cache[CACHE_SLOTS];
static unsigned next_victim;

/* Queue info through the cache. 0, BUS_ENOT_FOUND or BUS_EUNAVAILABLE. */
static int queue_info(gw_t *gw, const char *queue, uint32_t *messages, uint32_t *consumers) {
    if (!bus_conn_is_up(gw->conn)) return BUS_EUNAVAILABLE;
    uint64_t now = uv_now(gw->loop), gen = bus_conn_generation(gw->conn);
    qinfo_t *slot = NULL;
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (strcmp(cache[i].name, queue) == 0) {
            slot = &cache[i];
            break;
        }
    if (slot && slot->gen == gen) {
        uint64_t ttl = slot->rc == 0 && slot->consumers > 0 ? TTL_OK_MS : TTL_NEG_MS;
        if (now - slot->at < ttl) goto hit;
    }
    uint32_t m = 0, c = 0;
    int rc = bus_conn_queue_info(gw->conn, queue, &m, &c);
    if (rc != 0 && rc != BUS_ENOT_FOUND) return BUS_EUNAVAILABLE;
    if (!slot) {
        for (int i = 0; i < CACHE_SLOTS && !slot; i++)
            if (!cache[i].name[0]) slot = &cache[i];
        if (!slot) slot = &cache[next_victim++ % CACHE_SLOTS];
        snprintf(slot->name, sizeof slot->name, "%s", queue);
    }
    slot->rc = rc;
    slot->messages = m;
    slot->consumers = c;
    slot->at = now;
    slot->gen = gen;
hit:
    if (messages) *messages = slot->messages;
    if (consumers) *consumers = slot->consumers;
    return slot->rc;
}

int gw_service_consumers(gw_t *gw, const char *service, uint32_t *consumers) {
    char q[80];
    bus_queue_name(q, sizeof q, "rpc", service);
    return queue_info(gw, q, NULL, consumers);
}

void gw_health_free(void) { memset(cache, 0, sizeof cache); }

static void finish_json(gw_req_t *r, int status, cJSON *doc) {
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!s) {
        gw_fail(r, 500, "out of memory");
        return;
    }
    gw_finish(r, status, "application/json", s, strlen(s));
    free(s);
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
    finish_json(r, 200, d);
}

void gw_health(gw_req_t *r) {
    gw_t *gw = r->gw;
    int broker = bus_conn_is_up(gw->conn);
    int redis = gw->redis && bus_redis_is_connected(gw->redis);
    char body[256];
    int n = snprintf(body, sizeof body,
                     "{\"status\":\"%s\",\"service\":\"gateway\",\"version\":\"%s\",\"broker\":\"%s\","
                     "\"redis\":\"%s\",\"store\":\"none\"}",
                     broker && redis ? "ok" : "degraded", BUS_VERSION, broker ? "up" : "down", redis ? "up" : "down");
    gw_finish(r, broker ? 200 : 503, "application/json", body, (size_t)n);
}

static void add_service(gw_t *gw, cJSON *arr, const char *s) {
    for (int i = 0; i < cJSON_GetArraySize(arr); i++)
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, i), "service")), s) == 0) return;
    char q[80];
    uint32_t rpc_m = 0, rpc_c = 0, ev_m = 0, ev_c = 0, dead = 0;
    bus_queue_name(q, sizeof q, "rpc", s);
    int rc = queue_info(gw, q, &rpc_m, &rpc_c);
    bus_queue_name(q, sizeof q, "events", s);
    queue_info(gw, q, &ev_m, &ev_c);
    bus_queue_name(q, sizeof q, "dead", s);
    queue_info(gw, q, &dead, NULL);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "service", s);
    cJSON_AddNumberToObject(o, "instances", rpc_c);
    cJSON_AddNumberToObject(o, "rpc_backlog", rpc_m);
    cJSON_AddNumberToObject(o, "event_backlog", ev_m);
    cJSON_AddNumberToObject(o, "dead_letters", dead);
    cJSON_AddBoolToObject(o, "declared", rc == 0);
    cJSON_AddStringToObject(o, "status", rc == 0 && rpc_c > 0 ? "up" : "down");
    cJSON_AddItemToArray(arr, o);
}

void gw_health_services(gw_req_t *r) {
    gw_t *gw = r->gw;
    if (!bus_conn_is_up(gw->conn)) {
        gw_fail(r, 503, "the message broker is unavailable");
        return;
    }
    cJSON *d = cJSON_CreateObject();
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; bus_domains[i]; i++) add_service(gw, arr, bus_domains[i]);
    size_t n = gw->schemas ? bus_schema_registry_method_count(gw->schemas) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = NULL;
        if (bus_schema_registry_method_at(gw->schemas, i, &s, NULL, NULL, NULL, NULL) == 0 && s) add_service(gw, arr, s);
    }
    int up = 0;
    for (int i = 0; i < cJSON_GetArraySize(arr); i++)
        up += strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, i), "status")), "up") == 0;
    cJSON_AddStringToObject(d, "status", up == cJSON_GetArraySize(arr) ? "ok" : "degraded");
    cJSON_AddItemToObject(d, "services", arr);
    finish_json(r, 200, d);
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

void gw_service_status(gw_req_t *r) {
    gw_t *gw = r->gw;
    if (gw_require_live_service(r) != 0) return;
    bus_rpc_call_opts_t opts = {.timeout_ms = gw->cfg.rpc_timeout_ms, .correlation_id = r->request_id,
                                .caller = "bus-gateway"};
    int rc = bus_rpc_call(gw->rpc, r->service, "ping", "{}", 2, &opts, on_ping, r);
    if (rc != 0) gw_fail(r, 503, "the message broker is unavailable");
}

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
