/* Platform information, health and metrics routes (no key, no rate limit):
 *
 *   GET /                               name, version, links
 *   GET /api/v1/health                  the edge's own view: broker, Redis (200, or 503 when the broker is down)
 *   GET /api/v1/health/services         per domain, from the broker itself: consumers on rpc.<s>,
 *                                       backlogs of rpc.<s> / events.<s>, dead letters in dead.<s>
 *   GET /api/v1/services/{name}/status  that service's ping reply
 *   GET /metrics                        Prometheus text
 *
 * What the broker says about the queues comes from the liveness cache
 * (liveness.c); nothing here waits for the broker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/topology.h"
#include "gateway.h"

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
        gw_queue_state_t q[3];
        int answered[3]; /* 1: q[k] holds an answer of the broker */
        for (int k = 0; k < 3; k++) {
            char name[80];
            bus_queue_name(name, sizeof name, QUEUE_KINDS[k], h->services[i]);
            int cached = gw_liveness_get(gw, name, &q[k]) == 0;
            if (cached && q[k].rc == BUS_EUNAVAILABLE) broker_lost = 1;
            answered[k] = cached && q[k].known && q[k].rc == 0;
        }
        int declared = answered[0];
        uint32_t instances = declared ? q[0].consumers : 0;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "service", h->services[i]);
        cJSON_AddNumberToObject(o, "instances", instances);
        cJSON_AddNumberToObject(o, "rpc_backlog", declared ? q[0].messages : 0);
        cJSON_AddNumberToObject(o, "event_backlog", answered[1] ? q[1].messages : 0);
        cJSON_AddNumberToObject(o, "dead_letters", answered[2] ? q[2].messages : 0);
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
            h->pending += gw_liveness_refresh(gw, name, on_health_probed, h);
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
