/* The route table, the request context and the two forwarding routes:
 *
 *   POST /api/v1/rpc/{service}/{method}   params -> RPC -> the worker's reply
 *   POST /api/v1/events/{type}            data or a CloudEvent -> publish with confirm -> 202
 *
 * Order of the checks on a forwarding route: route and names (404), method
 * (405), key (401) and scope (403), rate limit (429), Content-Type (415),
 * JSON (400 with the byte offset), schema (422), liveness of the service or
 * the broker (404/503), then the call (504 on timeout).
 *
 * Hot path: one request context from a free list, one cJSON parse of the
 * request body (needed for the 400/422 answers), no parse of the reply: its
 * status is read from its first bytes and "request_id" is spliced in before
 * its final '}'.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/log.h"
#include "bus/publish.h"
#include "bus/topology.h"
#include "gateway.h"

static const char *const route_names[GW_R_COUNT] = {
    "none", "root", "health", "health_services", "service_status", "metrics", "openapi", "rpc", "events"};

static const int status_slots[GW_STATUS_SLOTS] = {200, 202, 204, 400, 401, 403, 404, 405, 408, 413,
                                                  415, 422, 429, 431, 500, 502, 503, 504, 505, 0};

/* ---- request contexts (free list: no malloc per request once warm) ---- */

static gw_req_t *pool;
static size_t pool_size;
#define POOL_MAX 4096

static gw_req_t *req_new(gw_t *gw, bus_http_req_t *http) {
    gw_req_t *r = pool;
    if (r) {
        pool = r->free_next;
        pool_size--;
    } else {
        r = malloc(sizeof *r);
        if (!r) return NULL;
    }
    r->gw = gw;
    r->http = http;
    r->route = GW_R_NONE;
    r->t0 = uv_hrtime();
    r->request_id[0] = r->key_id[0] = r->client[0] = '\0';
    r->rl_known = 0;
    r->service[0] = r->method[0] = r->type[0] = r->event_id[0] = '\0';
    r->next = NULL;
    r->free_next = NULL;
    return r;
}

static void req_release(gw_req_t *r) {
    if (pool_size >= POOL_MAX) {
        free(r);
        return;
    }
    r->free_next = pool;
    pool = r;
    pool_size++;
}

void gw_req_pool_free(void) {
    while (pool) {
        gw_req_t *n = pool->free_next;
        free(pool);
        pool = n;
    }
    pool_size = 0;
}

/* ---- metrics ---- */

void gw_metrics_init(gw_t *gw) {
    for (int rt = 0; rt < GW_R_COUNT; rt++)
        gw->m_seconds[rt] = bus_histogram("bus_gateway_request_seconds", "Time from request to response",
                                          "route", route_names[rt], NULL);
    gw->m_rl_unavailable = bus_counter("bus_gateway_ratelimit_unavailable_total",
                                       "Requests whose rate limit could not be checked (Redis down)", NULL);
    gw->m_rate_limited = bus_counter("bus_gateway_rate_limited_total", "Requests refused with 429", NULL);
    gw->m_auth_missing = bus_counter("bus_gateway_auth_rejected_total", "Requests refused by authentication",
                                     "reason", "missing_key", NULL);
    gw->m_auth_invalid = bus_counter("bus_gateway_auth_rejected_total", "Requests refused by authentication",
                                     "reason", "invalid_key", NULL);
    gw->m_auth_scope = bus_counter("bus_gateway_auth_rejected_total", "Requests refused by authentication",
                                   "reason", "scope", NULL);
    gw->m_publish_failed = bus_counter("bus_gateway_publish_failed_total",
                                       "Events not confirmed by the broker (503)", NULL);
}

static void count(gw_t *gw, gw_route_t route, int status, uint64_t t0) {
    int slot = GW_STATUS_SLOTS;
    for (int i = 0; i < GW_STATUS_SLOTS && status_slots[i]; i++)
        if (status_slots[i] == status) {
            slot = i;
            break;
        }
    /* Series are looked up once (the registry takes a mutex) and kept. */
    if (!gw->m_requests[route][slot]) {
        char st[16];
        if (slot == GW_STATUS_SLOTS) snprintf(st, sizeof st, "other");
        else snprintf(st, sizeof st, "%d", status);
        gw->m_requests[route][slot] = bus_counter("bus_gateway_requests_total", "HTTP requests answered",
                                                  "route", route_names[route], "status", st, NULL);
    }
    bus_counter_inc(gw->m_requests[route][slot], 1);
    bus_histogram_observe(gw->m_seconds[route], (double)(uv_hrtime() - t0) / 1e9);
}

/* ---- request id ---- */

/* A client's X-Request-Id is kept when it is 1..128 characters of
 * [A-Za-z0-9._:-] (it goes into headers, JSON and logs unescaped); anything
 * else is replaced by a fresh id from the RPC client ("<16 hex>.<n>",
 * unique across gateways): an RPC carries such an id as its correlation_id,
 * without the x-correlation-id header a client's own id needs. */
static void pick_request_id(gw_t *gw, bus_http_req_t *http, char out[130]) {
    const char *v = bus_http_header(http, "X-Request-Id");
    if (v) {
        size_t n = 0;
        for (; v[n] && n <= 128; n++) {
            unsigned char c = (unsigned char)v[n];
            if (!(isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-')) break;
        }
        if (n >= 1 && n <= 128 && v[n] == '\0') {
            memcpy(out, v, n + 1);
            return;
        }
    }
    if (gw->rpc)
        bus_rpc_client_make_id(gw->rpc, out, 130);
    else
        bus_uuid(out);
}

/* ---- answering ---- */

static int origin_allowed(const gw_t *gw, const char *origin) {
    if (!gw->cors_origins || !origin) return 0;
    if (gw->cors_any) return 1;
    for (size_t i = 0; i < gw->ncors; i++)
        if (strcasecmp(gw->cors_origins[i], origin) == 0) return 1;
    return 0;
}

static void add_common_headers(gw_req_t *r) {
    bus_http_add_header(r->http, "X-Request-Id", r->request_id);
    if (r->rl_known) {
        char v[32];
        snprintf(v, sizeof v, "%lld", (long long)r->rl_limit);
        bus_http_add_header(r->http, "X-RateLimit-Limit", v);
        snprintf(v, sizeof v, "%lld", (long long)r->rl_remaining);
        bus_http_add_header(r->http, "X-RateLimit-Remaining", v);
        snprintf(v, sizeof v, "%lld", (long long)r->rl_reset_s);
        bus_http_add_header(r->http, "X-RateLimit-Reset", v);
    }
    if (r->gw->cors_origins) {
        const char *origin = bus_http_header(r->http, "Origin");
        if (origin_allowed(r->gw, origin)) {
            bus_http_add_header(r->http, "Access-Control-Allow-Origin", r->gw->cors_any ? "*" : origin);
            if (!r->gw->cors_any) bus_http_add_header(r->http, "Vary", "Origin");
            bus_http_add_header(r->http, "Access-Control-Expose-Headers",
                                "X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, "
                                "Retry-After");
        }
    }
}

void gw_finish(gw_req_t *r, int status, const char *content_type, const char *body, size_t len) {
    gw_t *gw = r->gw;
    add_common_headers(r);
    if (gw->access_log)
        gw_access_log(r->request_id, route_names[r->route], bus_http_method(r->http), bus_http_path(r->http),
                      status, len, (double)(uv_hrtime() - r->t0) / 1e6, r->key_id, bus_http_peer(r->http));
    count(gw, r->route, status, r->t0);
    bus_http_respond(r->http, status, content_type, body, len);
    req_release(r);
}

/* Writes body with ,"request_id":"<id>" before its final '}' into out.
 * Returns the length, or 0 when body is not an object ending in '}'. */
static size_t splice_request_id(const char *body, size_t len, const char *id, char *out, size_t cap) {
    size_t end = len;
    while (end > 0 && (body[end - 1] == ' ' || body[end - 1] == '\n' || body[end - 1] == '\r' ||
                       body[end - 1] == '\t'))
        end--;
    size_t start = 0;
    while (start < end && (body[start] == ' ' || body[start] == '\n' || body[start] == '\r' || body[start] == '\t'))
        start++;
    if (end - start < 2 || body[start] != '{' || body[end - 1] != '}') return 0;
    size_t before = end - 1; /* position of the final '}' */
    size_t k = before;
    while (k > start && (body[k - 1] == ' ' || body[k - 1] == '\n' || body[k - 1] == '\r' || body[k - 1] == '\t'))
        k--;
    int empty = body[k - 1] == '{';
    size_t idlen = strlen(id);
    size_t need = before + idlen + 20;
    if (need > cap) return 0;
    memcpy(out, body, before);
    size_t n = before;
    if (!empty) out[n++] = ',';
    memcpy(out + n, "\"request_id\":\"", 14);
    n += 14;
    memcpy(out + n, id, idlen);
    n += idlen;
    memcpy(out + n, "\"}", 2);
    n += 2;
    return n;
}

void gw_finish_spliced(gw_req_t *r, int status, const char *body, size_t len) {
    char stackbuf[4096];
    size_t cap = len + 160;
    char *buf = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
    size_t n = buf ? splice_request_id(body, len, r->request_id, buf, cap) : 0;
    if (n == 0) {
        if (buf && buf != stackbuf) free(buf);
        gw_fail(r, 500, "the service sent a reply that is not a JSON object");
        return;
    }
    gw_finish(r, status, "application/json", buf, n);
    if (buf != stackbuf) free(buf);
}

static size_t error_json(char *buf, size_t cap, int status, const char *message, const char *request_id) {
    char tmp[1200];
    size_t n = bus_http_error_json(tmp, sizeof tmp, status, bus_http_error_code(status), message);
    size_t m = splice_request_id(tmp, n, request_id, buf, cap);
    if (m == 0) { /* cannot happen with our own body; keep the plain one */
        m = n < cap ? n : cap - 1;
        memcpy(buf, tmp, m);
    }
    return m;
}

void gw_fail(gw_req_t *r, int status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char body[1400];
    size_t n = error_json(body, sizeof body, status, msg, r->request_id);
    gw_finish(r, status, "application/json", body, n);
}

/* The server's own errors (400 malformed, 408, 413, 431, 505): same body
 * with a request id, X-Request-Id header, an access-log line. */
size_t gw_error_body(bus_http_req_t *req, int status, const char *code, const char *message, char *buf,
                     size_t cap, void *data) {
    gw_t *gw = data;
    (void)code;
    if (bus_http_req_data(req)) return 0; /* not used by our own answers */
    char id[130];
    pick_request_id(gw, req, id);
    bus_http_add_header(req, "X-Request-Id", id);
    size_t n = error_json(buf, cap, status, message, id);
    if (gw->access_log)
        gw_access_log(id, "none", bus_http_method(req), bus_http_path(req), status, n, 0, "", bus_http_peer(req));
    count(gw, GW_R_NONE, status, uv_hrtime());
    return n;
}

/* ---- helpers ---- */

/* 1 when the Content-Type's media type (before any ';') is `want`. */
static int media_is(const char *ct, const char *want) {
    size_t n = strlen(want);
    while (*ct == ' ' || *ct == '\t') ct++;
    if (strncasecmp(ct, want, n) != 0) return 0;
    ct += n;
    while (*ct == ' ' || *ct == '\t') ct++;
    return *ct == '\0' || *ct == ';';
}

/* Copies path[0..n) into out when it is a valid name. */
static int take_name(const char *s, size_t n, char *out, size_t cap) {
    if (n == 0 || n >= cap) return 0;
    memcpy(out, s, n);
    out[n] = '\0';
    return bus_valid_name(out);
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

static void rpc_run(gw_req_t *r) {
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
        static bus_schema_result_t res; /* ~9 KB: one loop thread, kept off the stack */
        if (bus_schema_validate(ps, doc, &res) != 0) {
            char msg[1024];
            bus_schema_result_format(&res, msg, sizeof msg);
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

static void rpc_route(gw_req_t *r) {
    char scope[160];
    snprintf(scope, sizeof scope, "rpc:%s.%s", r->service, r->method);
    if (gw_authorize(r, scope) != 0) return;
    r->next = rpc_run;
    gw_rate_limit(r);
}

/* ---- POST /api/v1/events/{type} ---- */

static void on_confirm(int status, void *data) {
    gw_req_t *r = data;
    if (status != 0) {
        bus_counter_inc(r->gw->m_publish_failed, 1);
        gw_fail(r, 503, "the broker did not confirm the event");
        return;
    }
    char body[200];
    int n = snprintf(body, sizeof body, "{\"success\":true,\"data\":{\"id\":\"%s\"},\"request_id\":\"%s\"}",
                     r->event_id, r->request_id);
    gw_finish(r, 202, "application/json", body, (size_t)n);
}

static void events_run(gw_req_t *r) {
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
    if (es) {
        static bus_schema_result_t res;
        cJSON *null = env.data ? NULL : cJSON_CreateNull();
        int bad = bus_schema_validate_at(es, env.data ? env.data : null, prefix, &res) != 0;
        cJSON_Delete(null);
        if (bad) {
            char msg[1024];
            bus_schema_result_format(&res, msg, sizeof msg);
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

static void events_route(gw_req_t *r) {
    char scope[300];
    snprintf(scope, sizeof scope, "events:%s", r->type);
    if (gw_authorize(r, scope) != 0) return;
    r->next = events_run;
    gw_rate_limit(r);
}

/* ---- the route table ---- */

static void preflight(gw_req_t *r, const char *allow) {
    const char *origin = bus_http_header(r->http, "Origin");
    const char *want = bus_http_header(r->http, "Access-Control-Request-Method");
    if (!origin || !want) { /* a plain OPTIONS */
        bus_http_add_header(r->http, "Allow", allow);
        gw_finish(r, 204, NULL, NULL, 0);
        return;
    }
    if (!origin_allowed(r->gw, origin)) {
        gw_fail(r, 403, "origin %.200s is not allowed", origin);
        return;
    }
    bus_http_add_header(r->http, "Access-Control-Allow-Methods", allow);
    const char *hdrs = bus_http_header(r->http, "Access-Control-Request-Headers");
    bus_http_add_header(r->http, "Access-Control-Allow-Headers",
                        hdrs && *hdrs && strlen(hdrs) < 1024 && !strpbrk(hdrs, "\r\n")
                            ? hdrs
                            : "Content-Type, X-API-Key, Authorization, X-Request-Id");
    bus_http_add_header(r->http, "Access-Control-Max-Age", "600");
    gw_finish(r, 204, NULL, NULL, 0);
}

void gw_on_request(bus_http_req_t *http, void *data) {
    gw_t *gw = data;
    gw_req_t *r = req_new(gw, http);
    if (!r) {
        bus_http_respond_error(http, 500, "out of memory");
        return;
    }
    bus_http_req_set_data(http, r);
    pick_request_id(gw, http, r->request_id);
    const char *m = bus_http_method(http);
    const char *path = bus_http_path(http);
    int get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
    int post = strcmp(m, "POST") == 0;
    int options = strcmp(m, "OPTIONS") == 0;
    int want_post = 0;
    void (*run)(gw_req_t *) = NULL;

    if (strcmp(path, "/") == 0) r->route = GW_R_ROOT, run = gw_root;
    else if (strcmp(path, "/api/v1/health") == 0) r->route = GW_R_HEALTH, run = gw_health;
    else if (strcmp(path, "/api/v1/health/services") == 0) r->route = GW_R_HEALTH_SERVICES, run = gw_health_services;
    else if (strcmp(path, "/metrics") == 0) r->route = GW_R_METRICS, run = gw_metrics;
    else if (strcmp(path, "/api/v1/openapi.json") == 0) r->route = GW_R_OPENAPI, run = gw_openapi;
    else if (strncmp(path, "/api/v1/rpc/", 12) == 0) {
        const char *s = path + 12, *slash = strchr(s, '/');
        if (slash && take_name(s, (size_t)(slash - s), r->service, sizeof r->service) &&
            take_name(slash + 1, strlen(slash + 1), r->method, sizeof r->method))
            r->route = GW_R_RPC, run = rpc_route, want_post = 1;
    } else if (strncmp(path, "/api/v1/events/", 15) == 0) {
        const char *t = path + 15;
        size_t n = strlen(t);
        if (n > 0 && n < sizeof r->type) {
            memcpy(r->type, t, n + 1);
            if (bus_valid_event_type(r->type)) r->route = GW_R_EVENTS, run = events_route, want_post = 1;
        }
    } else if (strncmp(path, "/api/v1/services/", 17) == 0) {
        const char *s = path + 17, *slash = strchr(s, '/');
        if (slash && strcmp(slash, "/status") == 0 && take_name(s, (size_t)(slash - s), r->service, sizeof r->service))
            r->route = GW_R_SERVICE_STATUS, run = gw_service_status;
    }
    if (!run) {
        gw_fail(r, 404, "no route for %.200s", path);
        return;
    }
    const char *allow = want_post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS";
    if (options) {
        preflight(r, allow);
        return;
    }
    if (want_post ? !post : !get) {
        bus_http_add_header(http, "Allow", allow);
        gw_fail(r, 405, "method %.20s is not allowed here (allowed: %s)", m, allow);
        return;
    }
    run(r);
}
