/* The two forwarding routes:
 *
 *   POST /api/v1/rpc/{service}/{method}   params -> RPC -> the worker's reply
 *   POST /api/v1/events/{type}            data or a CloudEvent -> publish with confirm -> 202
 *
 * They run once the route table (routes.c) has checked the route and names
 * (404), the method (405), the key (401) and scope (403) and the rate limit
 * (429). Then: Content-Type (415), JSON (400 with the byte offset), schema
 * (422), liveness of the service or the broker (404/503), then the call
 * (504 on timeout).
 *
 * Hot path: one cJSON parse of the request body (needed for the 400/422
 * answers), no parse of the reply: its status is read from its first bytes
 * and "request_id" is spliced in before its final '}' (respond.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/log.h"
#include "bus/publish.h"
#include "gateway.h"

/* 1 when the Content-Type's media type (before any ';') is `want`. */
static int media_is(const char *ct, const char *want) {
    size_t n = strlen(want);
    while (*ct == ' ' || *ct == '\t') ct++;
    if (strncasecmp(ct, want, n) != 0) return 0;
    ct += n;
    while (*ct == ' ' || *ct == '\t') ct++;
    return *ct == '\0' || *ct == ';';
}

/* ---- POST /api/v1/rpc/{service}/{method} ---- */

static void on_rpc_reply(int status, const char *reply, size_t len, void *data) {
    gw_req_t *r = data;
    if (status == 0) {
        /* Read the status without parsing: our workers' replies start with
         * {"success":true or carry "status_code":N. Anything else takes the
         * slow path through cJSON. */
        size_t i = 0;
        while (i < len && (reply[i] == ' ' || reply[i] == '\n' || reply[i] == '\r' || reply[i] == '\t')) i++;
        int http = 0;
        if (len - i >= 15 && memcmp(reply + i, "{\"success\":true", 15) == 0) {
            http = 200;
        } else if (len - i >= 16 && memcmp(reply + i, "{\"success\":false", 16) == 0) {
            const char *p = memmem(reply, len, "\"status_code\":", 14);
            if (p) {
                long v = strtol(p + 14, NULL, 10);
                if (v >= 400 && v <= 599) http = (int)v;
            }
        }
        if (!http) {
            cJSON *doc = NULL;
            int ok = 0, err = 0;
            if (bus_rpc_reply_parse(reply, len, &doc, &ok, NULL, &err, NULL) == 0) {
                http = ok ? 200 : bus_err_status(err);
                const cJSON *sc = cJSON_GetObjectItemCaseSensitive(doc, "status_code");
                if (!ok && cJSON_IsNumber(sc) && sc->valueint >= 400 && sc->valueint <= 599) http = sc->valueint;
            }
            cJSON_Delete(doc);
            if (!http) {
                gw_fail(r, 500, "service %s sent a reply that is not a platform reply", r->service);
                return;
            }
        }
        gw_finish_spliced(r, http, reply, len);
    } else if (status == BUS_ETIMEOUT) {
        gw_fail(r, 504, "no reply from %s.%s within %d ms", r->service, r->method, r->gw->cfg.rpc_timeout_ms);
    } else if (status == BUS_ENOT_FOUND) {
        gw_fail(r, 404, "unknown service \"%s\"", r->service);
    } else {
        gw_fail(r, 503, "the broker connection was lost during the call");
    }
}
static void rpc_send(gw_req_t *r);

void gw_rpc(gw_req_t *r) {
    gw_t *gw = r->gw;
    size_t len = 0;
    const char *body = bus_http_body(r->http, &len);
    const char *ct = bus_http_header(r->http, "Content-Type");
    if (ct ? !media_is(ct, "application/json") : len != 0) {
        gw_fail(r, 415, "Content-Type must be application/json");
        return;
    }
    if (len == 0) {
        body = "{}";
        len = 2;
    }
    char err[256];
    cJSON *doc = bus_json_parse(body, len, gw->max_depth, err, sizeof err);
    if (!doc) {
        gw_fail(r, 400, "%s", err);
        return;
    }
    const bus_schema_t *ps = gw->schemas ? bus_schema_registry_params(gw->schemas, r->service, r->method) : NULL;
    if (ps) {
        bus_schema_result_t *res = &gw->schema_result; /* ~9 KB: kept off the stack */
        if (bus_schema_validate(ps, doc, res) != 0) {
            char msg[1024];
            bus_schema_result_format(res, msg, sizeof msg);
            cJSON_Delete(doc);
            gw_fail(r, 422, "%s", msg);
            return;
        }
    }
    cJSON_Delete(doc);
    gw_require_live_service(r, rpc_send);
}

/* The service has a live instance: the call goes out. */
static void rpc_send(gw_req_t *r) {
    gw_t *gw = r->gw;
    size_t len = 0;
    const char *body = bus_http_body(r->http, &len);
    if (len == 0) {
        body = "{}";
        len = 2;
    }
    bus_rpc_call_opts_t opts = {.timeout_ms = gw->cfg.rpc_timeout_ms,
                                .correlation_id = r->request_id,
                                .caller = r->key_id[0] ? r->key_id : NULL}; /* no key: no x-caller header */
    int rc = bus_rpc_call(gw->rpc, r->service, r->method, body, len, &opts, on_rpc_reply, r);
    if (rc == BUS_EBAD_REQUEST) gw_fail(r, 404, "unknown service \"%s\"", r->service);
    else if (rc != 0) gw_fail_broker(r);
}

/* ---- POST /api/v1/events/{type} ---- */

static void on_confirm(int status, void *data) {
    gw_req_t *r = data;
    if (status != 0) {
        bus_counter_inc(r->gw->m_publish_failed, 1);
        gw_fail(r, 503, "the broker did not confirm the event");
        return;
    }
    char id[64];
    snprintf(id, sizeof id, "{\"id\":\"%s\"}", r->event_id);
    gw_succeed(r, 202, id);
}

void gw_events(gw_req_t *r) {
    gw_t *gw = r->gw;
    size_t len = 0;
    const char *body = bus_http_body(r->http, &len);
    const char *ct = bus_http_header(r->http, "Content-Type");
    int structured = ct && media_is(ct, BUS_CE_CONTENT_TYPE);
    if (!structured && (ct ? !media_is(ct, "application/json") : len != 0)) {
        gw_fail(r, 415, "Content-Type must be application/json or " BUS_CE_CONTENT_TYPE);
        return;
    }
    char err[256];
    bus_envelope_t env = {0};
    const char *prefix = NULL;
    if (structured) {
        if (bus_envelope_parse(body, len, &env, err, sizeof err) != 0) {
            gw_fail(r, 400, "%s", err);
            return;
        }
        if (strcmp(env.type, r->type) != 0) {
            gw_fail(r, 400, "the event's type \"%.100s\" does not match the path's \"%s\"", env.type, r->type);
            bus_envelope_clear(&env);
            return;
        }
        if (!env.correlationid) env.correlationid = strdup(r->request_id);
        /* With API keys the caller's identity is part of source, as in the
         * binary form: "bus-gateway/<key id>/<the client's source>", so that
         * no key holder can speak as a platform service (README "The HTTP
         * edge"). Without keys (loopback only) source stays as given. */
        if (r->key_id[0]) {
            size_t n = strlen(r->key_id) + strlen(env.source) + 16;
            char *src = malloc(n);
            if (!src) {
                bus_envelope_clear(&env);
                gw_fail(r, 500, "out of memory");
                return;
            }
            snprintf(src, n, "bus-gateway/%s/%s", r->key_id, env.source);
            free(env.source);
            env.source = src;
        }
        prefix = "/data";
    } else {
        cJSON *data = NULL;
        if (len > 0) {
            data = bus_json_parse(body, len, gw->max_depth, err, sizeof err);
            if (!data) {
                gw_fail(r, 400, "%s", err);
                return;
            }
        }
        char source[96];
        snprintf(source, sizeof source, "bus-gateway/%s", r->key_id[0] ? r->key_id : "anonymous");
        if (bus_envelope_init(&env, r->type, source, NULL, r->request_id, data) != 0) {
            gw_fail(r, 500, "out of memory");
            return;
        }
    }
    const bus_schema_t *es = gw->schemas ? bus_schema_registry_event(gw->schemas, r->type) : NULL;
    if (gw->schemas && !es) { /* an event type without a schema is never published (nobody could check it) */
        bus_envelope_clear(&env);
        gw_fail(r, 422, "no schema for event type %s (every event type needs schemas/events/%s.json)", r->type, r->type);
        return;
    }
    if (es) {
        bus_schema_result_t *res = &gw->schema_result;
        cJSON *null = env.data ? NULL : cJSON_CreateNull();
        int bad = bus_schema_validate_at(es, env.data ? env.data : null, prefix, res) != 0;
        cJSON_Delete(null);
        if (bad) {
            char msg[1024];
            bus_schema_result_format(res, msg, sizeof msg);
            bus_envelope_clear(&env);
            gw_fail(r, 422, "%s", msg);
            return;
        }
    }
    if (!bus_conn_is_up(gw->conn) || bus_conn_blocked(gw->conn)) {
        bus_envelope_clear(&env);
        gw_fail_broker(r);
        return;
    }
    snprintf(r->event_id, sizeof r->event_id, "%s", env.id);
    int rc = bus_event_publish(gw->conn, &env, on_confirm, r);
    bus_envelope_clear(&env);
    if (rc != 0) {
        bus_counter_inc(gw->m_publish_failed, 1);
        gw_fail_broker(r);
    }
}
