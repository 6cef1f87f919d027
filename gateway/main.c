/* bus-gateway: the HTTP edge. Parses, authenticates, limits, validates and
 * forwards (README.md "The HTTP edge"); see gateway.h for the file map.
 *
 * Settings (environment variable or the flag of the same name; bad values
 * exit 2 naming the variable), besides the common ones of bus/config.h:
 *   BUS_API_KEYS_FILE   keys file (bus/apikey.h); unset = open access, and then
 *                       BUS_HTTP_ADDR must be a loopback address
 *   BUS_RATE_LIMIT      requests per window per key (per address without keys) [1200]; 0 = off
 *   BUS_PUBLIC_RATE_LIMIT  per address to the status and health routes [600]; 0 = off
 *   BUS_RATE_WINDOW_MS  window length [60000]
 *   BUS_RATELIMIT_FAIL  open|closed: serve or refuse (503) when Redis is down [open]
 *   BUS_CORS_ORIGINS    comma-separated origins or "*"; unset = no CORS headers
 *   BUS_MAX_BODY_BYTES  [1048576] (413)    BUS_MAX_HEADER_BYTES [16384] (431)
 *   BUS_MAX_JSON_DEPTH  [64] (400)         BUS_REUSEPORT 1|0 [1] (SO_REUSEPORT)
 *   BUS_ACCESS_LOG      1|0 [1]: one JSON line per request
 *
 * SIGTERM/SIGINT: stop accepting, let in-flight requests finish (up to
 * BUS_DRAIN_MS), then close the RPC client, the broker and Redis; exit 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/topology.h"
#include "gateway.h"

enum { X_KEYS, X_RATE, X_PUBLIC_RATE, X_WINDOW, X_FAIL, X_CORS, X_BODY, X_HEADER, X_DEPTH, X_REUSE, X_ACCESS,
       X_SSE_KEEPALIVE, X_SSE_BACKLOG, X_COUNT };

/* The edge's own settings; main() copies them (bus_config_load fills in the values). */
static const bus_config_extra_t extra_settings[X_COUNT] = {
    [X_KEYS] = {"BUS_API_KEYS_FILE", "--api-keys-file", "API keys file (unset: open access, loopback only)", NULL, NULL},
    [X_RATE] = {"BUS_RATE_LIMIT", "--rate-limit", "requests per window per key or address (0 = off)", "1200", NULL},
    [X_PUBLIC_RATE] = {"BUS_PUBLIC_RATE_LIMIT", "--public-rate-limit",
                       "requests per window per address to the status and health routes (0 = off)", "600", NULL},
    [X_WINDOW] = {"BUS_RATE_WINDOW_MS", "--rate-window-ms", "rate-limit window", "60000", NULL},
    [X_FAIL] = {"BUS_RATELIMIT_FAIL", "--ratelimit-fail", "open|closed when Redis is down", "open", NULL},
    [X_CORS] = {"BUS_CORS_ORIGINS", "--cors-origins", "allowed origins, comma-separated, or *", NULL, NULL},
    [X_BODY] = {"BUS_MAX_BODY_BYTES", "--max-body-bytes", "largest request body (413)", "1048576", NULL},
    [X_HEADER] = {"BUS_MAX_HEADER_BYTES", "--max-header-bytes", "largest request head (431)", "16384", NULL},
    [X_DEPTH] = {"BUS_MAX_JSON_DEPTH", "--max-json-depth", "deepest JSON nesting accepted", "64", NULL},
    [X_REUSE] = {"BUS_REUSEPORT", "--reuseport", "1: SO_REUSEPORT (several gateways on one port)", "1", NULL},
    [X_ACCESS] = {"BUS_ACCESS_LOG", "--access-log", "1: one JSON access-log line per request", "1", NULL},
    [X_SSE_KEEPALIVE] = {"BUS_SSE_KEEPALIVE_MS", "--sse-keepalive-ms", "keep-alive comment interval of /api/v1/audit/stream",
                         "15000", NULL},
    [X_SSE_BACKLOG] = {"BUS_SSE_MAX_BACKLOG", "--sse-max-backlog",
                       "bytes waiting for a slow /api/v1/audit/stream reader before it is cut off", "4194304", NULL},
};

/* Strict integer in [lo, hi]; -1 when not. */
static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int bad(const char *var, const char *value, const char *why) {
    char masked[512]; /* a URL's password never reaches the terminal or a log */
    fprintf(stderr, "bus-gateway: %s=%s: %s\n", var, bus_url_mask(value, masked, sizeof masked), why);
    return 2;
}

static int is_loopback(const char *addr) {
    char host[128];
    int port;
    if (bus_parse_host_port(addr, host, sizeof host, &port) != 0) return 0;
    if (strcmp(host, "localhost") == 0) return 1;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

static int parse_settings(gw_t *gw, const bus_config_extra_t *extras) {
    long long v;
    const char *s;
    s = extras[X_KEYS].value;
    gw->keys_file = s && *s ? s : NULL;
    s = extras[X_RATE].value;
    if (parse_int(s, 0, 1000000000, &v)) return bad("BUS_RATE_LIMIT", s, "expected an integer 0..1000000000");
    gw->rate_limit = v;
    s = extras[X_PUBLIC_RATE].value;
    if (parse_int(s, 0, 1000000000, &v))
        return bad("BUS_PUBLIC_RATE_LIMIT", s, "expected an integer 0..1000000000");
    gw->public_rate_limit = v;
    s = extras[X_WINDOW].value;
    if (parse_int(s, 100, 86400000, &v)) return bad("BUS_RATE_WINDOW_MS", s, "expected milliseconds 100..86400000");
    gw->rate_window_ms = v;
    s = extras[X_FAIL].value;
    if (strcmp(s, "open") == 0) gw->rate_fail_closed = 0;
    else if (strcmp(s, "closed") == 0) gw->rate_fail_closed = 1;
    else return bad("BUS_RATELIMIT_FAIL", s, "expected open or closed");
    s = extras[X_BODY].value;
    if (parse_int(s, 1, 1024LL * 1024 * 1024, &v)) return bad("BUS_MAX_BODY_BYTES", s, "expected bytes 1..1073741824");
    gw->max_body = (size_t)v;
    s = extras[X_HEADER].value;
    if (parse_int(s, 256, 1024 * 1024, &v)) return bad("BUS_MAX_HEADER_BYTES", s, "expected bytes 256..1048576");
    gw->max_header = (size_t)v;
    s = extras[X_DEPTH].value;
    if (parse_int(s, 1, 1000, &v)) return bad("BUS_MAX_JSON_DEPTH", s, "expected 1..1000");
    gw->max_depth = (int)v;
    s = extras[X_REUSE].value;
    if (parse_int(s, 0, 1, &v)) return bad("BUS_REUSEPORT", s, "expected 0 or 1");
    gw->reuseport = (int)v;
    s = extras[X_ACCESS].value;
    if (parse_int(s, 0, 1, &v)) return bad("BUS_ACCESS_LOG", s, "expected 0 or 1");
    gw->access_log = (int)v;
    s = extras[X_SSE_KEEPALIVE].value;
    if (parse_int(s, 10, 3600000, &v)) return bad("BUS_SSE_KEEPALIVE_MS", s, "expected milliseconds 10..3600000");
    gw->sse_keepalive_ms = (int)v;
    s = extras[X_SSE_BACKLOG].value;
    if (parse_int(s, 1024, 1024LL * 1024 * 1024, &v)) return bad("BUS_SSE_MAX_BACKLOG", s, "expected bytes 1024..1073741824");
    gw->sse_max_backlog = (size_t)v;
    s = extras[X_CORS].value;
    if (s && *s) {
        size_t n = 1;
        for (const char *p = s; *p; p++) n += *p == ',';
        gw->cors_origins = calloc(n, sizeof *gw->cors_origins);
        if (!gw->cors_origins) return bad("BUS_CORS_ORIGINS", s, "out of memory");
        const char *p = s;
        while (*p) {
            while (*p == ' ' || *p == ',') p++;
            const char *e = p;
            while (*e && *e != ',') e++;
            const char *t = e;
            while (t > p && t[-1] == ' ') t--;
            if (t > p) {
                char *o = strndup(p, (size_t)(t - p));
                if (strpbrk(o, "\r\n\t ")) {
                    free(o);
                    return bad("BUS_CORS_ORIGINS", s, "origins may not contain spaces or control characters");
                }
                if (strcmp(o, "*") == 0) gw->cors_any = 1;
                gw->cors_origins[gw->ncors++] = o;
            }
            p = e;
        }
        if (gw->ncors == 0) return bad("BUS_CORS_ORIGINS", s, "no origin listed");
    }
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void on_http_closed(void *data) {
    gw_t *gw = data;
    gw->http = NULL;
    bus_info(NULL, "HTTP server closed; closing the broker and Redis connections");
    if (gw->rpc) bus_rpc_client_free(gw->rpc);
    gw->rpc = NULL;
    if (gw->conn) bus_conn_close(gw->conn, NULL, NULL);
    gw->conn = NULL;
    gw_rate_limit_close(gw);
    if (gw->redis) bus_redis_close(gw->redis, NULL, NULL);
    gw->redis = NULL;
    gw_access_log_close(gw);
    uv_close((uv_handle_t *)&gw->sigterm, NULL);
    uv_close((uv_handle_t *)&gw->sigint, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
    gw_t *gw = s->data;
    if (gw->stopping) {
        bus_warn(NULL, "signal %d again: stopping now", signum);
        uv_walk(gw->loop, close_walk, NULL);
        return;
    }
    gw->stopping = 1;
    gw_audit_streams_end(gw); /* endless by nature: they end now */
    bus_info(NULL, "signal %d: finishing in-flight requests (%zu connections)", signum,
             gw->http ? bus_http_server_connections(gw->http) : 0);
    if (gw->http) bus_http_server_close(gw->http, on_http_closed, gw);
    else on_http_closed(gw);
}

static void on_up(bus_conn_t *conn, void *data) {
    (void)data;
    /* the edge publishes to bus.events and calls through bus.rpc: make sure
     * they exist on a fresh broker (idempotent) */
    if (bus_topology_declare_exchanges(conn) != 0) {
        bus_warn(NULL, "broker connection up but declaring the exchanges failed; retrying on reconnect");
        return;
    }
    bus_info(NULL, "broker connection up");
}

static void on_down(bus_conn_t *conn, int err, void *data) {
    (void)conn;
    gw_t *gw = data;
    gw_audit_streams_end(gw); /* their consumers are gone; clients resume with Last-Event-ID */
    if (gw->stopping) return; /* our own clean close after a signal: nothing is wrong */
    bus_warn(NULL, "broker connection down (%s); RPC and events answer 503 until it is back", bus_strerror(err));
}

static void on_redis_state(int connected, void *data) {
    gw_t *gw = data;
    if (connected) bus_info(NULL, "redis connection up");
    else if (!gw->stopping) /* not our own clean close */
        bus_warn(NULL, "redis down: rate limits %s (%s)", gw->rate_fail_closed ? "refuse requests" : "are not enforced",
                 gw->redis ? bus_redis_last_error(gw->redis) : "");
}

int main(int argc, char **argv) {
    /* the gateway: everything the edge holds, passed down to every file */
    gw_t *gw = calloc(1, sizeof *gw);
    if (!gw) {
        fprintf(stderr, "bus-gateway: out of memory\n");
        return 1;
    }
    bus_config_extra_t extras[X_COUNT];
    memcpy(extras, extra_settings, sizeof extras);
    char err[1024];
    int rc = bus_config_load(&gw->cfg, argc, argv, "bus-gateway",
                             "the HTTP edge: RPC and events over HTTP, API keys, rate limits", extras, X_COUNT, err,
                             sizeof err);
    if (rc != 0) {
        if (rc != 1) fprintf(stderr, "bus-gateway: %s\n", err);
        free(gw);
        return rc == 1 ? 0 : 2;
    }
    int code = parse_settings(gw, extras);
    if (code) goto out;
    char host[64] = "", instance[128], uuid[37];
    gethostname(host, sizeof host - 1);
    bus_uuid(uuid);
    snprintf(instance, sizeof instance, "gateway-%s-%d-%.4s", host, (int)getpid(), uuid);
    bus_log_init("gateway", instance, (bus_log_level_t)gw->cfg.log_level);

    if (gw->keys_file) {
        if (bus_apikeys_load(gw->keys_file, &gw->keys, err, sizeof err) != 0) {
            code = bad("BUS_API_KEYS_FILE", gw->keys_file, err);
            goto out;
        }
    } else if (!is_loopback(gw->cfg.http_addr)) {
        fprintf(stderr,
                "bus-gateway: BUS_HTTP_ADDR=%s: without BUS_API_KEYS_FILE the edge is open to anyone, so it only "
                "binds to a loopback address (127.0.0.1, [::1]); set BUS_API_KEYS_FILE (busctl apikey new) to "
                "serve other hosts\n",
                gw->cfg.http_addr);
        code = 2;
        goto out;
    }
    rc = bus_schema_registry_load(gw->cfg.schemas_dir, &gw->schemas, err, sizeof err);
    if (rc == BUS_ENOT_FOUND) {
        bus_warn(NULL, "BUS_SCHEMAS_DIR=%s: no such directory; requests are not validated", gw->cfg.schemas_dir);
        gw->schemas = NULL;
    } else if (rc != 0) {
        code = bad("BUS_SCHEMAS_DIR", gw->cfg.schemas_dir, err);
        goto out;
    }
    gw->openapi = gw_openapi_build(gw->schemas, gw->cfg.schemas_dir, &gw->openapi_len);
    gw->docs = gw_docs_build(gw->openapi, &gw->docs_len);

    gw->loop = uv_default_loop();
    signal(SIGPIPE, SIG_IGN);
    gw_metrics_init(gw);
    /* prefetch: the credit of each audit stream's consumer (stream consumers
     * need basic.qos), the only consumers here that ack. A stream message is a
     * pack of up to 64 records (bus/audit_stream.h), so 8 bound what one SSE
     * client is sent in one burst to about 512 records (~0.5 MB), well under
     * BUS_SSE_MAX_BACKLOG: a reader that keeps up is never cut off. */
    bus_conn_options_t co = {.url = gw->cfg.amqp_url, .name = instance, .heartbeat_s = gw->cfg.heartbeat_s,
                             .prefetch = 8, .on_up = on_up, .on_down = on_down, .data = gw};
    if (bus_conn_new(gw->loop, &co, &gw->conn, err, sizeof err) != 0) {
        code = bad("BUS_AMQP_URL", gw->cfg.amqp_url, err);
        goto out;
    }
    if (bus_rpc_client_new(gw->conn, gw->cfg.rpc_timeout_ms, &gw->rpc) != 0) {
        fprintf(stderr, "bus-gateway: out of memory\n");
        code = 1;
        goto out;
    }
    bus_redis_opts_t ro = {.on_state = on_redis_state, .state_data = gw};
    if (bus_redis_open(gw->loop, gw->cfg.redis_url, &ro, &gw->redis, err, sizeof err) != 0) {
        code = bad("BUS_REDIS_URL", gw->cfg.redis_url, err);
        goto out;
    }
    bus_http_config_t hc = {.addr = gw->cfg.http_addr,
                            .reuseport = gw->reuseport,
                            .on_request = gw_on_request,
                            .data = gw,
                            .error_body = gw_error_body,
                            .max_header_bytes = gw->max_header,
                            .max_body_bytes = gw->max_body,
                            .max_stream_backlog = gw->sse_max_backlog,
                            .shutdown_timeout_ms = (uint64_t)gw->cfg.drain_ms};
    rc = bus_http_server_start(gw->loop, &hc, &gw->http);
    if (rc != 0) {
        fprintf(stderr, "bus-gateway: BUS_HTTP_ADDR=%s: cannot listen: %s\n", gw->cfg.http_addr, bus_strerror(rc));
        code = rc == BUS_EINVALID ? 2 : 1;
        goto out;
    }
    gw_access_log_init(gw);
    uv_signal_init(gw->loop, &gw->sigterm);
    uv_signal_init(gw->loop, &gw->sigint);
    gw->sigterm.data = gw->sigint.data = gw;
    uv_signal_start(&gw->sigterm, on_signal, SIGTERM);
    uv_signal_start(&gw->sigint, on_signal, SIGINT);
    if (gw->keys)
        bus_info(NULL, "bus-gateway %s listening on %s (port %d), %zu API keys, rate limit %lld per %lld ms",
                 BUS_VERSION, gw->cfg.http_addr, bus_http_server_port(gw->http), bus_apikeys_count(gw->keys),
                 (long long)gw->rate_limit, (long long)gw->rate_window_ms);
    else
        bus_warn(NULL,
                 "bus-gateway %s listening on %s (port %d) WITHOUT API keys: open access, loopback only "
                 "(set BUS_API_KEYS_FILE to require keys)",
                 BUS_VERSION, gw->cfg.http_addr, bus_http_server_port(gw->http));
    bus_conn_start(gw->conn);
    uv_run(gw->loop, UV_RUN_DEFAULT);
    bus_info(NULL, "stopped");
    code = 0;

out:
    if (gw->http) { /* start-up failed after the server started: cannot happen today */
        bus_http_server_close(gw->http, NULL, NULL);
        gw->http = NULL;
    }
    if (gw->rpc) bus_rpc_client_free(gw->rpc);
    if (gw->conn) bus_conn_close(gw->conn, NULL, NULL);
    if (gw->redis) bus_redis_close(gw->redis, NULL, NULL);
    if (gw->loop) {
        uv_run(gw->loop, UV_RUN_DEFAULT);
        uv_loop_close(gw->loop);
    }
    free(gw->openapi);
    free(gw->docs);
    bus_schema_registry_free(gw->schemas);
    bus_apikeys_free(gw->keys);
    for (size_t i = 0; i < gw->ncors; i++) free(gw->cors_origins[i]);
    free(gw->cors_origins);
    gw_req_pool_free(gw);
    gw_rate_limit_free(gw);
    gw_liveness_free(gw);
    bus_config_free(&gw->cfg);
    bus_config_free_extras(extras, X_COUNT);
    free(gw);
    return code;
}
