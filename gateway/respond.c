/* Every answer of the edge goes out through this file, so that every answer
 * carries the same things:
 *
 *   - X-Request-Id (the client's, when it is a safe one, else one the edge
 *     makes), also spliced into every JSON body as "request_id";
 *   - X-RateLimit-Limit/-Remaining/-Reset once the rate limit was counted,
 *     Retry-After on 429;
 *   - the CORS headers for an allowed Origin, and the preflight answer;
 *   - the error body {"success":false,"error","message","status_code",
 *     "request_id"} (the server's own errors too, through gw_error_body);
 *   - the success body {"success":true,"data":...,"request_id"};
 *   - one access-log line and the request metrics.
 *
 * Routes decide what to answer; they never add headers or build envelopes
 * themselves.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/log.h"
#include "gateway.h"

static const int status_slots[GW_STATUS_SLOTS] = {200, 202, 204, 400, 401, 403, 404, 405, 408, 413,
                                                  415, 422, 429, 431, 500, 502, 503, 504, 505, 0};

/* ---- metrics ---- */

void gw_metrics_init(gw_t *gw) {
    for (int rt = 0; rt < gw_route_count(); rt++)
        gw->m_seconds[rt] = bus_histogram("bus_gateway_request_seconds", "Time from request to response",
                                          "route", gw_route_name(rt), NULL);
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

static void count(gw_t *gw, int route, int status, uint64_t t0) {
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
                                                  "route", gw_route_name(route), "status", st, NULL);
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
void gw_pick_request_id(gw_t *gw, bus_http_req_t *http, char out[GW_REQUEST_ID_CAP]) {
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
        bus_rpc_client_make_id(gw->rpc, out, GW_REQUEST_ID_CAP);
    else
        bus_uuid(out);
}

/* ---- headers every answer carries ---- */

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

/* ---- the one exit ---- */

void gw_finish(gw_req_t *r, int status, const char *content_type, const char *body, size_t len) {
    gw_t *gw = r->gw;
    add_common_headers(r);
    if (gw->access_log)
        gw_access_log(gw, r->request_id, gw_route_name(r->route), bus_http_method(r->http), bus_http_path(r->http),
                      status, len, (double)(uv_hrtime() - r->t0) / 1e6, r->key_id, bus_http_peer(r->http));
    count(gw, r->route, status, r->t0);
    bus_http_respond(r->http, status, content_type, body, len);
    gw_req_release(r);
}

void gw_stream_start(gw_req_t *r, int status, const char *content_type) {
    add_common_headers(r);
    bus_http_respond_stream_start(r->http, status, content_type);
}

void gw_stream_end(gw_req_t *r) {
    gw_t *gw = r->gw;
    if (gw->access_log)
        gw_access_log(gw, r->request_id, gw_route_name(r->route), bus_http_method(r->http), bus_http_path(r->http),
                      200, 0, (double)(uv_hrtime() - r->t0) / 1e6, r->key_id, bus_http_peer(r->http));
    count(gw, r->route, 200, r->t0);
    bus_http_stream_end(r->http);
    gw_req_release(r);
}

/* ---- bodies ---- */

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

void gw_finish_json(gw_req_t *r, int status, cJSON *doc) {
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!s) {
        gw_fail(r, 500, "out of memory");
        return;
    }
    gw_finish(r, status, "application/json", s, strlen(s));
    free(s);
}

void gw_succeed(gw_req_t *r, int status, const char *data_json) {
    char stackbuf[512];
    size_t cap = strlen(data_json) + strlen(r->request_id) + 48;
    char *buf = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
    if (!buf) {
        gw_fail(r, 500, "out of memory");
        return;
    }
    int n = snprintf(buf, cap, "{\"success\":true,\"data\":%s,\"request_id\":\"%s\"}", data_json, r->request_id);
    gw_finish(r, status, "application/json", buf, (size_t)n);
    if (buf != stackbuf) free(buf);
}

/* The platform's error body with the request id. */
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

/* ---- errors that carry a header of their own ---- */

void gw_fail_broker(gw_req_t *r) {
    const char *why = bus_conn_blocked(r->gw->conn);
    if (why)
        gw_fail(r, 503, "the message broker refuses messages for now (%s); try again later",
                *why ? why : "resource alarm");
    else
        gw_fail(r, 503, "the message broker is unavailable");
}

void gw_fail_unauthenticated(gw_req_t *r, const char *message) {
    bus_http_add_header(r->http, "WWW-Authenticate", "ApiKey header=\"X-API-Key\"");
    gw_fail(r, 401, "%s", message);
}

void gw_fail_rate_limited(gw_req_t *r) {
    gw_t *gw = r->gw;
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)r->rl_reset_s);
    bus_http_add_header(r->http, "Retry-After", v);
    gw_fail(r, 429, "rate limit of %lld requests per %lld ms exceeded", (long long)r->rl_limit,
            (long long)gw->rate_window_ms);
}

void gw_fail_method(gw_req_t *r, const char *allow) {
    bus_http_add_header(r->http, "Allow", allow);
    gw_fail(r, 405, "method %.20s is not allowed here (allowed: %s)", bus_http_method(r->http), allow);
}

void gw_answer_options(gw_req_t *r, const char *allow) {
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

/* ---- the server's own errors ---- */

/* 400 malformed, 408, 413, 431, 505: same body with a request id,
 * X-Request-Id header, an access-log line. */
size_t gw_error_body(bus_http_req_t *req, int status, const char *code, const char *message, char *buf,
                     size_t cap, void *data) {
    gw_t *gw = data;
    (void)code;
    if (bus_http_req_data(req)) return 0; /* not used by our own answers */
    char id[GW_REQUEST_ID_CAP];
    gw_pick_request_id(gw, req, id);
    bus_http_add_header(req, "X-Request-Id", id);
    size_t n = error_json(buf, cap, status, message, id);
    if (gw->access_log)
        gw_access_log(gw, id, gw_route_name(GW_ROUTE_NONE), bus_http_method(req), bus_http_path(req), status, n, 0, "",
                      bus_http_peer(req));
    count(gw, GW_ROUTE_NONE, status, uv_hrtime());
    return n;
}
