/* bench_joins: state-changing requests under contention, through libbus's
 * RPC client: alliances.join with a fresh user each time, spread round-robin
 * over K alliances it creates first (K = 1: every request on one key).
 *
 *   bench_joins --alliances 1 --inflight 64 --seconds 5 [--warmup 1]
 *   name=joins alliances=1 inflight=64 calls=... rps=... p50_ms=... p99_ms=... refused=... errors=...
 *
 * `refused` counts error replies (there should be none: no join conflicts
 * with another by the rules), `errors` calls without a reply.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/conn.h"
#include "bus/log.h"
#include "bus/rpc.h"

#define MAX_ALLIANCES 256

typedef struct {
    bus_rpc_client_t *rpc;
    char ids[MAX_ALLIANCES][40];
    int nalliances, created;
    unsigned long next_user, user_base;
    uint64_t measure_from, stop_at;
    double *lat;
    size_t nlat, cap;
    long errors, refused;
    int inflight_now;
} bench_t;

typedef struct {
    bench_t *b;
    uint64_t started;
} call_t;

static void start_join(bench_t *b);

static void on_join(int status, const char *reply, size_t len, void *data) {
    call_t *c = data;
    bench_t *b = c->b;
    uint64_t now = uv_hrtime();
    b->inflight_now--;
    if (status != 0) {
        b->errors++;
    } else if (!memmem(reply, len, "\"success\":true", 14)) {
        if (b->refused++ < 3) fprintf(stderr, "bench_joins: refused: %.*s\n", (int)len, reply);
    } else if (c->started >= b->measure_from && now <= b->stop_at) {
        if (b->nlat == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 65536;
            b->lat = realloc(b->lat, b->cap * sizeof *b->lat);
        }
        b->lat[b->nlat++] = (double)(now - c->started) / 1e6;
    }
    free(c);
    if (now < b->stop_at) start_join(b);
}

static void start_join(bench_t *b) {
    call_t *c = malloc(sizeof *c);
    c->b = b;
    c->started = uv_hrtime();
    unsigned long u = b->next_user++;
    char params[160];
    int n = snprintf(params, sizeof params, "{\"id\":\"%s\",\"user\":\"discord:%lu%06lu\"}",
                     b->ids[u % (unsigned long)b->nalliances], b->user_base, u);
    bus_rpc_call_opts_t o = {.timeout_ms = 30000};
    if (bus_rpc_call(b->rpc, "alliances", "join", params, (size_t)n, &o, on_join, c) != 0) {
        free(c);
        b->errors++;
        return;
    }
    b->inflight_now++;
}

static void on_created(int status, const char *reply, size_t len, void *data) {
    bench_t *b = data;
    const char *p = reply ? memmem(reply, len, "\"id\":\"", 6) : NULL;
    if (status != 0 || !p) {
        fprintf(stderr, "bench_joins: create failed: %.*s\n", reply ? (int)len : 0, reply ? reply : "");
        exit(1);
    }
    snprintf(b->ids[b->created++], sizeof b->ids[0], "%.36s", p + 6);
}

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, c = *(const double *)y;
    return a < c ? -1 : a > c;
}

int main(int argc, char **argv) {
    static bench_t b;
    int inflight = 64;
    double seconds = 5, warmup = 1;
    b.nalliances = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--alliances")) b.nalliances = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--inflight")) inflight = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atof(argv[i + 1]);
    }
    if (b.nalliances < 1 || b.nalliances > MAX_ALLIANCES) {
        fprintf(stderr, "bench_joins: --alliances 1..%d\n", MAX_ALLIANCES);
        return 2;
    }
    bus_log_init("bench_joins", NULL, BUS_LOG_WARN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *url = getenv("BUS_AMQP_URL");
    bus_conn_options_t o = {.url = url ? url : "amqp://guest:guest@127.0.0.1:5672/", .name = "bench_joins"};
    bus_conn_t *conn;
    char err[256];
    if (bus_conn_new(&loop, &o, &conn, err, sizeof err) != 0 || bus_rpc_client_new(conn, 30000, &b.rpc) != 0 ||
        bus_conn_connect_now(conn, err, sizeof err) != 0) {
        fprintf(stderr, "bench_joins: %s\n", err);
        return 1;
    }
    /* users and names unique per run, so a bench store reused across runs is fine */
    b.user_base = (unsigned long)getpid() % 100000 * 1000 + (unsigned long)(uv_hrtime() / 1000000 % 1000);
    for (int i = 0; i < b.nalliances; i++) {
        char params[200];
        int n = snprintf(params, sizeof params,
                         "{\"name\":\"Join bench %lu %d\",\"tag\":\"JB\",\"state\":3,\"leader\":\"telegram:%lu%03d\"}",
                         b.user_base, i, b.user_base, i);
        if (bus_rpc_call(b.rpc, "alliances", "create", params, (size_t)n, NULL, on_created, &b) != 0) {
            fprintf(stderr, "bench_joins: cannot call alliances.create\n");
            return 1;
        }
    }
    while (b.created < b.nalliances) uv_run(&loop, UV_RUN_ONCE);
    uint64_t t0 = uv_hrtime();
    b.measure_from = t0 + (uint64_t)(warmup * 1e9);
    b.stop_at = b.measure_from + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < inflight; i++) start_join(&b);
    while (b.inflight_now > 0) uv_run(&loop, UV_RUN_ONCE);
    qsort(b.lat, b.nlat, sizeof *b.lat, cmp);
    double p50 = b.nlat ? b.lat[(size_t)((double)(b.nlat - 1) * 0.50)] : 0;
    double p99 = b.nlat ? b.lat[(size_t)((double)(b.nlat - 1) * 0.99)] : 0;
    printf("name=joins alliances=%d inflight=%d calls=%zu rps=%.0f p50_ms=%.3f p99_ms=%.3f refused=%ld errors=%ld\n",
           b.nalliances, inflight, b.nlat, (double)b.nlat / seconds, p50, p99, b.refused, b.errors);
    free(b.lat);
    bus_rpc_client_free(b.rpc);
    bus_conn_close(conn, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    return b.nlat && !b.refused ? 0 : 1;
}
