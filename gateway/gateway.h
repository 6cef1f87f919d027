/* bus-gateway: the HTTP edge (README.md "The HTTP edge"). Internal header shared
 * by the files of gateway/ — one file per concern:
 *
 *   main.c        settings, start-up, signals, graceful shutdown
 *   routes.c      the route table (one row per route: methods, path pattern,
 *                 handler, scope, rate limit), matched in one place (404, 405
 *                 with Allow, OPTIONS); the request contexts
 *   forward.c     POST /api/v1/rpc/{service}/{method}, POST /api/v1/events/{type}
 *   respond.c     every answer: the one exit (gw_finish), the JSON error and
 *                 success bodies, X-Request-Id, rate-limit and CORS headers,
 *                 the preflight answer, the access-log line and request metrics
 *   auth.c        API keys (401/403) and rate limits in Redis (429)
 *   health.c      GET /, /api/v1/health, /api/v1/health/services,
 *                 /api/v1/services/{name}/status, /metrics
 *   liveness.c    the liveness cache: which queues exist and have consumers,
 *                 asked of the broker with asynchronous probes, cached and
 *                 refreshed; the "live instance before an RPC" gate
 *   openapi.c     GET /api/v1/openapi.json, built once from schemas/
 *   docs.c        GET /api/docs, the HTML page made from that document
 *   access_log.c  one JSON line per request, written in batches
 *   audit.c       GET /api/v1/audit (stored records) and /api/v1/audit/stream
 *                 (Server-Sent Events from the audit.log stream)
 *
 * Everything runs on the one loop thread of the process; nothing here is
 * thread-safe and nothing needs to be.
 *
 * Ownership: the gateway (gw_t, one per process, made and freed by main.c)
 * owns the connection, RPC client, Redis client, keys, schema registry and
 * HTTP server, and the state of every file (request contexts, liveness
 * cache, rate-limit windows, access-log buffer): no file keeps state in
 * statics, every function reaches it through the gw_t or gw_req_t it is
 * given. A request context (gw_req_t) is created for each request handed to
 * on_request, owns the bus_http_req_t until gw_finish()/gw_fail() answers
 * it, and is released by that call; no pointer into it survives the answer.
 *
 * Adding a route: its handler (in the file of its concern) and one row in
 * the table of routes.c; its answers go through respond.c.
 */
#ifndef BUS_GATEWAY_H
#define BUS_GATEWAY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bus/apikey.h"
#include "bus/config.h"
#include "bus/conn.h"
#include "bus/http.h"
#include "bus/metrics.h"
#include "bus/redis.h"
#include "bus/rpc.h"
#include "bus/schema.h"

#define GW_STATUS_SLOTS 20 /* distinct statuses counted per route (+ "other") */
#define GW_REQUEST_ID_CAP 130 /* 128 characters of a client's id + NUL (respond.c) */
#define GW_ROUTES_MAX 32      /* rows the route table may hold (routes.c checks at compile time) */
#define GW_ACCESS_LOG_BYTES (64 * 1024) /* lines buffered before a write (access_log.c) */
#define GW_RL_PUBLIC 2        /* gw_route_t.rate_limited of the public status and health routes */
#define GW_ROUTE_NONE 0       /* gw_req_t.route of a request no row matched, and of the server's own errors */

typedef struct gw {
    uv_loop_t *loop;
    bus_config_t cfg;
    /* settings of the edge (validated in main.c) */
    const char *keys_file;    /* NULL = open access */
    int64_t rate_limit;       /* requests per window; 0 = no limit */
    int64_t public_rate_limit; /* per address, status and health routes ("public:<address>" windows) */
    int64_t rate_window_ms;
    int rate_fail_closed;     /* 1: refuse when Redis is down */
    char **cors_origins;      /* NULL = no CORS; {"*"} = any */
    size_t ncors;
    int cors_any;
    size_t max_body, max_header;
    int max_depth;
    int reuseport;
    int access_log;
    int sse_keepalive_ms;     /* ": keep-alive" comment interval of the audit stream */
    size_t sse_max_backlog;   /* unsent bytes before a slow stream reader is cut off */

    bus_conn_t *conn;
    bus_rpc_client_t *rpc;
    bus_redis_t *redis;
    bus_apikeys_t *keys;
    bus_schema_registry_t *schemas;
    bus_http_server_t *http;
    char *openapi;            /* the document, built at start */
    size_t openapi_len;
    char *docs;               /* GET /api/docs: the HTML page made from openapi at start (docs.c) */
    size_t docs_len;
    uv_signal_t sigterm, sigint;
    int stopping;

    /* The state of each file lives here, touched only by that file. Tables
     * are allocated on first use and freed at exit by the file's *_free. */

    /* request contexts (routes.c): a free list, so no malloc per request once warm */
    struct gw_req *req_pool;
    size_t req_pool_size;

    /* the liveness cache (liveness.c) */
    struct gw_qinfo *qcache;    /* its slots */
    unsigned qcache_victim;     /* where the search for a slot to reuse starts */

    /* the rate limiter's per-client windows and count batches (auth.c) */
    struct {
        struct gw_rl_client *clients;   /* the table of clients */
        struct gw_rl_client **dirty;    /* clients with counts waiting to be sent, ndirty of them */
        size_t ndirty;
        struct gw_rl_call *free_calls;  /* free list of calls to Redis */
        uv_timer_t flusher;             /* sends the batches; initialised on first use (flusher_on) */
        int flusher_on;
    } rl;

    /* the access log's buffer (access_log.c) */
    struct {
        int active;             /* 0: the log is off (or closed) */
        size_t used;            /* bytes of buf waiting to be written */
        uv_timer_t flusher;
        char buf[GW_ACCESS_LOG_BYTES];
    } alog;

    /* the open audit streams (audit.c) */
    struct sse *sse;

    /* scratch of the validating routes (forward.c): ~9 KB, kept off the stack */
    bus_schema_result_t schema_result;

    /* metrics; per route: index GW_ROUTE_NONE, then one per row of the table */
    bus_counter_t *m_requests[GW_ROUTES_MAX + 1][GW_STATUS_SLOTS + 1];
    bus_histogram_t *m_seconds[GW_ROUTES_MAX + 1];
    bus_counter_t *m_rl_unavailable;
    bus_counter_t *m_rate_limited;
    bus_counter_t *m_auth_missing, *m_auth_invalid, *m_auth_scope;
    bus_counter_t *m_publish_failed;
} gw_t;

/* One request in the edge. */
typedef struct gw_req {
    gw_t *gw;
    bus_http_req_t *http;
    int route;                  /* GW_ROUTE_NONE, or 1 + the index of its row in the table */
    uint64_t t0;                /* uv_hrtime at arrival */
    char request_id[GW_REQUEST_ID_CAP];
    char key_id[64];            /* "" = no key */
    char client[80];            /* rate-limit identity: key id or peer address */
    /* rate-limit headers, set once the counter answered (rl_known) */
    int rl_known;
    int rl_fail_open;           /* 1: Redis down lets this request through even with BUS_RATELIMIT_FAIL=closed
                                   (public routes, failed authentications) */
    char denied[64];            /* the 401 message of a failed authentication, answered after its count (auth.c) */
    int64_t rl_limit, rl_remaining, rl_reset_s;
    /* route parameters, copied from the path by the route table ("" = not in the route) */
    char service[64], method[64];
    char type[256];
    char event_id[40];          /* events route: the id published */
    /* next step after the rate limit (the route's handler) */
    void (*next)(struct gw_req *r);
    /* next step once the service is known to have a live instance */
    void (*after_check)(struct gw_req *r);
    struct gw_req *free_next;   /* free-list link */
} gw_req_t;

/* One row of the route table (routes.c). */
enum { GW_GET = 1u << 0 /* and HEAD */, GW_POST = 1u << 1 };
typedef struct {
    const char *name;     /* metric label "route" and the access log's "route" */
    unsigned methods;     /* GW_GET | GW_POST; OPTIONS is answered for every route */
    /* "/api/v1/rpc/{service}/{method}": literal text and {parameters}, each a
     * whole path segment, copied into gw_req_t and checked: {service} and
     * {method} (bus_valid_name), {type} (bus_valid_event_type) */
    const char *pattern;
    /* Runs once the checks of the row passed; must answer r (now or later). */
    void (*handler)(gw_req_t *r);
    /* API-key scope needed, with {parameters} filled in ("rpc:{service}.{method}");
     * NULL: no key needed */
    const char *scope;
    int rate_limited;     /* 1: counted against the client's window first (429); GW_RL_PUBLIC: the same,
                             per address, and served when Redis is down whatever BUS_RATELIMIT_FAIL says */
} gw_route_t;

/* ---- routes.c ---- */
/* Rows in the table + 1 (GW_ROUTE_NONE): the range of gw_req_t.route. */
int gw_route_count(void);
/* "rpc", ...; "none" for GW_ROUTE_NONE. Static. */
const char *gw_route_name(int route);
/* The server's on_request: matches the route and runs it. */
void gw_on_request(bus_http_req_t *req, void *data);
/* Puts r back on the free list (gw_finish does; nothing else may). */
void gw_req_release(gw_req_t *r);
/* Frees the free list (at exit). */
void gw_req_pool_free(gw_t *gw);

/* ---- respond.c ----
 * Every gw_finish*, gw_succeed, gw_fail* and gw_answer_options call answers
 * r exactly once and releases it: r is gone when the call returns. Strings
 * and bodies passed in are only read during the call. */
/* Creates the edge's metric series (the request series are made on first use). */
void gw_metrics_init(gw_t *gw);
/* The request id of http: its X-Request-Id when that is safe to echo, else a
 * fresh one. */
void gw_pick_request_id(gw_t *gw, bus_http_req_t *http, char out[GW_REQUEST_ID_CAP]);
/* The one exit: answers with `body` (copied) after adding the common headers
 * (X-Request-Id, CORS, rate-limit), logs the access line, counts metrics and
 * releases r. content_type may be NULL when len is 0. */
void gw_finish(gw_req_t *r, int status, const char *content_type, const char *body, size_t len);
/* Answers with a JSON object `body` (a complete object "{...}") with
 * ,"request_id":"..." spliced before its final '}'. A body that is not an
 * object ending in '}' is answered as 500. */
void gw_finish_spliced(gw_req_t *r, int status, const char *body, size_t len);
/* A streaming answer (audit.c): gw_stream_start sends the status and the
 * common headers and starts the stream on r->http; r stays the caller's
 * until gw_stream_end, which ends the stream, logs the access line, counts
 * the request and releases r (exactly once). */
void gw_stream_start(gw_req_t *r, int status, const char *content_type);
void gw_stream_end(gw_req_t *r);
/* Answers with doc printed (doc is freed, always). 500 when out of memory. */
void gw_finish_json(gw_req_t *r, int status, cJSON *doc);
/* Answers {"success":true,"data":<data_json>,"request_id":"..."}; data_json
 * is a complete JSON value. */
void gw_succeed(gw_req_t *r, int status, const char *data_json);
/* Answers with the JSON error body + request_id (printf-style message). */
void gw_fail(gw_req_t *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* 503: the broker is down, or blocks the connection (a resource alarm,
 * named in the message). */
void gw_fail_broker(gw_req_t *r);
/* 401 with WWW-Authenticate. */
void gw_fail_unauthenticated(gw_req_t *r, const char *message);
/* 429 with Retry-After (r->rl_reset_s; the rate-limit fields must be set). */
void gw_fail_rate_limited(gw_req_t *r);
/* 405 with Allow: allow ("GET, HEAD, OPTIONS"). */
void gw_fail_method(gw_req_t *r, const char *allow);
/* OPTIONS on a route whose methods are `allow`: 204 with Allow, or the CORS
 * preflight answer (403 for an origin not allowed). */
void gw_answer_options(gw_req_t *r, const char *allow);
/* The server's error_body hook (bus/http.h): its own errors (400, 408, 413,
 * 431, 505) get the same body, X-Request-Id, an access-log line, metrics. */
size_t gw_error_body(bus_http_req_t *req, int status, const char *code, const char *message, char *buf,
                     size_t cap, void *data);

/* ---- forward.c ---- */
void gw_rpc(gw_req_t *r);    /* POST /api/v1/rpc/{service}/{method} */
void gw_events(gw_req_t *r); /* POST /api/v1/events/{type} */

/* ---- audit.c ---- */
void gw_audit_query(gw_req_t *r);  /* GET /api/v1/audit */
void gw_audit_stream(gw_req_t *r); /* GET /api/v1/audit/stream */
/* Ends every open audit stream (shutdown, broker connection lost). */
void gw_audit_streams_end(gw_t *gw);

/* ---- auth.c ---- */
/* Authenticates r for `scope` ("rpc:<service>.<method>", "events:<type>")
 * and sets r->key_id and r->client (the rate-limit identity). Returns 0 when
 * allowed; otherwise it has answered or will answer (401 after counting the
 * failure against the peer address, 429 once that is over the limit; 403),
 * r is not the caller's any more, and it returns -1. With no keys file every request is allowed (caller "anonymous"). */
int gw_authorize(gw_req_t *r, const char *scope);
/* Sets r->client to the peer address without its port: the rate-limit
 * identity of a request without a (valid) key. */
void gw_client_from_peer(gw_req_t *r);
/* Counts the request against the client's window (r->client; the peer
 * address when gw_authorize has not set it), then calls r->next(r) or
 * answers 429 (or 503 when Redis is down and BUS_RATELIMIT_FAIL=closed). */
void gw_rate_limit(gw_req_t *r);
/* Sends the counts still batched and closes the batching handle (at
 * shutdown, before Redis is closed). */
void gw_rate_limit_close(gw_t *gw);
/* Frees the per-client window table (at exit, after Redis is closed and the
 * loop has run the handle's close). */
void gw_rate_limit_free(gw_t *gw);

/* ---- health.c ---- */
void gw_root(gw_req_t *r);
void gw_health(gw_req_t *r);
void gw_health_services(gw_req_t *r);
void gw_service_status(gw_req_t *r);
void gw_metrics(gw_req_t *r);

/* ---- liveness.c ---- */
/* The cache's last answer about one queue. */
typedef struct {
    int rc;                       /* 0, BUS_ENOT_FOUND (no such queue), BUS_EUNAVAILABLE (broker lost) */
    int known;                    /* rc and the counts are an answer of the current connection */
    uint32_t messages, consumers; /* when rc is 0 */
} gw_queue_state_t;
/* Goes on with then(r) when rpc.<r->service> has a consumer (from the
 * cache, or once a probe of the broker answers); otherwise answers 404 (no
 * such queue) or 503 (no consumer, broker down or blocked, cache full) and
 * r is gone. then may run before this returns (a fresh answer). */
void gw_require_live_service(gw_req_t *r, void (*then)(gw_req_t *r));
/* Asks the broker about `queue` unless the cache holds a fresh answer.
 * Returns 1 when done(data) will run exactly once, after this returns, when
 * the broker has answered (read the answer with gw_liveness_get); 0 when it
 * will not run (a fresh answer is there, or no probe could be made). */
int gw_liveness_refresh(gw_t *gw, const char *queue, void (*done)(void *data), void *data);
/* The cache's last answer about `queue`, of any age: 0 and *out, or
 * BUS_ENOT_FOUND when the cache has no slot for it. */
int gw_liveness_get(gw_t *gw, const char *queue, gw_queue_state_t *out);
/* Frees the cache (at exit, after the broker connection is closed: no probe
 * is out any more). */
void gw_liveness_free(gw_t *gw);

/* ---- openapi.c ---- */
/* Builds the document from the registry (may be NULL). malloc'd, caller frees. */
char *gw_openapi_build(const bus_schema_registry_t *reg, const char *schemas_dir, size_t *len);
void gw_openapi(gw_req_t *r);

/* ---- docs.c ---- */
/* The HTML page of GET /api/docs made from the OpenAPI document (malloc'd,
 * the caller frees; NULL when it cannot be parsed or memory runs out). */
char *gw_docs_build(const char *openapi, size_t *len);
void gw_docs(gw_req_t *r);

/* ---- access_log.c ---- */
/* Starts the log when gw->access_log is set (on gw->loop). */
void gw_access_log_init(gw_t *gw);
/* Appends one line (written within 10 ms, see access_log.c); nothing when
 * the log is off. Strings are only read during the call; key may be "" (no
 * key). */
void gw_access_log(gw_t *gw, const char *request_id, const char *route, const char *method, const char *path,
                   int status, size_t bytes, double ms, const char *key, const char *peer);
/* Writes what is buffered and closes the flusher (the loop runs its close). */
void gw_access_log_close(gw_t *gw);

#endif
