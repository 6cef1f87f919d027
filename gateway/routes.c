/* The route table, matched in one place, and the request contexts.
 *
 * Each route is one row: its name (metric label and access-log "route"),
 * the methods it answers, its path pattern, its handler, the API-key scope
 * it needs (none: no key) and whether it is rate limited. A request is
 * taken through, in this order: the path (404 when no row matches), the
 * method (405 with an Allow header made of the methods of every row whose
 * pattern matches; OPTIONS answers with the same list), the key and scope
 * (401/403), the rate limit (429), then the handler.
 *
 * A pattern is literal text and {parameters}, each parameter one whole
 * path segment (not empty, no '/'), copied into the request context and
 * checked (see `params` below); a path whose parameter is not valid does
 * not match the row. Adding a route is adding a row (and its handler).
 *
 * Hot path: one request context from a free list (no malloc per request
 * once warm); matching compares the path with each row's pattern in turn,
 * without copies.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/log.h"
#include "bus/topology.h"
#include "gateway.h"

/* ---- the table ---- */

static const gw_route_t routes[] = {
    /* name             methods  pattern                              handler             scope                     limited */
    {"root",            GW_GET,  "/",                                 gw_root,            NULL,                     0},
    {"health",          GW_GET,  "/api/v1/health",                    gw_health,          NULL,                     GW_RL_PUBLIC},
    {"health_services", GW_GET,  "/api/v1/health/services",           gw_health_services, NULL,                     GW_RL_PUBLIC},
    {"service_status",  GW_GET,  "/api/v1/services/{service}/status", gw_service_status,  NULL,                     GW_RL_PUBLIC},
    {"metrics",         GW_GET,  "/metrics",                          gw_metrics,         NULL,                     0},
    {"openapi",         GW_GET,  "/api/v1/openapi.json",              gw_openapi,         NULL,                     0},
    {"docs",            GW_GET,  "/api/docs",                         gw_docs,            NULL,                     0},
    {"rpc",             GW_POST, "/api/v1/rpc/{service}/{method}",    gw_rpc,             "rpc:{service}.{method}", 1},
    {"events",          GW_POST, "/api/v1/events/{type}",             gw_events,          "events:{type}",          1},
    {"audit",           GW_GET,  "/api/v1/audit",                     gw_audit_query,     "audit:read",             1},
    {"audit_stream",    GW_GET,  "/api/v1/audit/stream",              gw_audit_stream,    "audit:read",             1},
};

#define NROUTES (sizeof routes / sizeof routes[0])
_Static_assert(NROUTES <= GW_ROUTES_MAX, "the route table outgrew GW_ROUTES_MAX (gateway.h)");

int gw_route_count(void) { return (int)NROUTES + 1; }

const char *gw_route_name(int route) { return route > 0 && route <= (int)NROUTES ? routes[route - 1].name : "none"; }

/* The parameters a pattern may name: where each goes in the request
 * context, and what a valid one is. */
typedef struct {
    const char *name;
    size_t offset, cap; /* of its char[] in gw_req_t */
    int (*valid)(const char *value);
} param_t;

#define FIELD(f) offsetof(gw_req_t, f), sizeof(((gw_req_t *)0)->f)
static const param_t params[] = {
    {"service", FIELD(service), bus_valid_name},
    {"method", FIELD(method), bus_valid_name},
    {"type", FIELD(type), bus_valid_event_type},
};
#define NPARAMS (sizeof params / sizeof params[0])

static const param_t *param_named(const char *name, size_t n) {
    for (size_t i = 0; i < NPARAMS; i++)
        if (strncmp(params[i].name, name, n) == 0 && params[i].name[n] == '\0') return &params[i];
    return NULL;
}

static char *param_field(gw_req_t *r, const param_t *p) { return (char *)r + p->offset; }

/* 1 when path matches pattern and every parameter is valid; the parameters
 * are then in r. On no match, r's parameters are left empty. Literal runs
 * are compared whole (strncmp), not a character at a time: this runs for
 * every row before the one that matches. */
static int match(const char *pattern, const char *path, gw_req_t *r) {
    const char *p = pattern, *s = path;
    int wrote = 0; /* a parameter was copied into r */
    for (;;) {
        const char *brace = strchrnul(p, '{');
        size_t lit = (size_t)(brace - p);
        if (strncmp(p, s, lit) != 0) goto no;
        s += lit;
        if (!*brace) {
            if (*s == '\0') return 1;
            goto no;
        }
        const char *close = strchr(brace, '}');
        const param_t *param = close ? param_named(brace + 1, (size_t)(close - brace - 1)) : NULL;
        if (!param) goto no; /* a typo in the table: the row never matches */
        size_t n = (size_t)(strchrnul(s, '/') - s);
        if (n == 0 || n >= param->cap) goto no;
        char *field = param_field(r, param);
        wrote = 1;
        memcpy(field, s, n);
        field[n] = '\0';
        if (!param->valid(field)) goto no;
        s += n;
        p = close + 1;
    }
no:
    if (wrote)
        for (size_t i = 0; i < NPARAMS; i++) param_field(r, &params[i])[0] = '\0';
    return 0;
}

/* Appends s[0..n) to out (length *len, capacity cap), cut to fit. */
static void append(char *out, size_t *len, size_t cap, const char *s, size_t n) {
    if (n > cap - 1 - *len) n = cap - 1 - *len;
    memcpy(out + *len, s, n);
    *len += n;
}

/* The row's scope with its {parameters} filled from r, into out. */
static void fill_scope(const char *scope, gw_req_t *r, char *out, size_t cap) {
    size_t n = 0;
    for (;;) {
        const char *brace = strchrnul(scope, '{');
        append(out, &n, cap, scope, (size_t)(brace - scope));
        if (!*brace) break;
        const char *close = strchr(brace, '}');
        const param_t *param = close ? param_named(brace + 1, (size_t)(close - brace - 1)) : NULL;
        if (!param) { /* not a parameter: a literal '{' */
            append(out, &n, cap, brace, 1);
            scope = brace + 1;
            continue;
        }
        const char *v = param_field(r, param);
        append(out, &n, cap, v, strlen(v));
        scope = close + 1;
    }
    out[n] = '\0';
}

/* "GET, HEAD, POST, OPTIONS" for the methods in `methods`. */
static void allow_list(unsigned methods, char *out, size_t cap) {
    snprintf(out, cap, "%s%s%s", methods & GW_GET ? "GET, HEAD, " : "", methods & GW_POST ? "POST, " : "",
             "OPTIONS");
}

/* ---- request contexts (free list: no malloc per request once warm) ---- */

#define POOL_MAX 4096 /* contexts kept on gw->req_pool */

static gw_req_t *req_new(gw_t *gw, bus_http_req_t *http) {
    gw_req_t *r = gw->req_pool;
    if (r) {
        gw->req_pool = r->free_next;
        gw->req_pool_size--;
    } else {
        r = malloc(sizeof *r);
        if (!r) return NULL;
    }
    r->gw = gw;
    r->http = http;
    r->route = GW_ROUTE_NONE;
    r->t0 = uv_hrtime();
    r->request_id[0] = r->key_id[0] = r->client[0] = '\0';
    r->rl_known = 0;
    r->rl_fail_open = 0;
    r->denied[0] = '\0';
    r->service[0] = r->method[0] = r->type[0] = r->event_id[0] = '\0';
    r->next = NULL;
    r->free_next = NULL;
    return r;
}

void gw_req_release(gw_req_t *r) {
    gw_t *gw = r->gw;
    if (gw->req_pool_size >= POOL_MAX) {
        free(r);
        return;
    }
    r->free_next = gw->req_pool;
    gw->req_pool = r;
    gw->req_pool_size++;
}

void gw_req_pool_free(gw_t *gw) {
    while (gw->req_pool) {
        gw_req_t *n = gw->req_pool->free_next;
        free(gw->req_pool);
        gw->req_pool = n;
    }
    gw->req_pool_size = 0;
}

/* ---- dispatch ---- */

static void run(gw_req_t *r, const gw_route_t *row) {
    if (!row->scope) gw_client_from_peer(r);
    r->rl_fail_open = row->rate_limited == GW_RL_PUBLIC;
    if (r->rl_fail_open) { /* windows of their own: "public:<address>" (auth.c) */
        char addr[sizeof r->client];
        snprintf(addr, sizeof addr, "%s", r->client);
        snprintf(r->client, sizeof r->client, "public:%.70s", addr);
    }
    if (row->scope) {
        char scope[320];
        fill_scope(row->scope, r, scope, sizeof scope);
        if (gw_authorize(r, scope) != 0) return;
    }
    if (row->rate_limited) {
        r->next = row->handler;
        gw_rate_limit(r);
        return;
    }
    row->handler(r);
}

void gw_on_request(bus_http_req_t *http, void *data) {
    gw_t *gw = data;
    gw_req_t *r = req_new(gw, http);
    if (!r) {
        bus_http_respond_error(http, 500, "out of memory");
        return;
    }
    bus_http_req_set_data(http, r);
    gw_pick_request_id(gw, http, r->request_id);
    const char *m = bus_http_method(http);
    const char *path = bus_http_path(http);
    unsigned want = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 ? GW_GET : strcmp(m, "POST") == 0 ? GW_POST : 0;
    unsigned allowed = 0; /* methods of every row whose pattern matches */
    for (size_t i = 0; i < NROUTES; i++) {
        if (!match(routes[i].pattern, path, r)) continue;
        if (!r->route) r->route = (int)i + 1; /* counted under the first row that matches */
        allowed |= routes[i].methods;
        if (want & routes[i].methods) {
            r->route = (int)i + 1;
            run(r, &routes[i]);
            return;
        }
    }
    if (r->route == GW_ROUTE_NONE) {
        gw_fail(r, 404, "no route for %.200s", path);
        return;
    }
    char allow[64];
    allow_list(allowed, allow, sizeof allow);
    if (strcmp(m, "OPTIONS") == 0) gw_answer_options(r, allow);
    else gw_fail_method(r, allow);
}
