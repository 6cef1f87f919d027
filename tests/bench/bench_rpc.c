/* bench_rpc: RPC round trips through libbus's client, the counterpart of
 * baseline_rpc_client (same output line, parsed by tests/bench/run.sh).
 *
 *   bench_rpc --service alliances --method ping --inflight 64 --seconds 5 [--warmup 1] [--body '{}']
 *   name=libbus inflight=64 calls=... rps=... p50_ms=... p99_ms=... rss_kb=...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bus/conn.h"
#include "bus/error.h"
#include "bus/log.h"
#include "bus/rpc.h"

typedef struct {
    bus_rpc_client_t *rpc;
    const char *service, *method, *body;
    uint64_t measure_from, stop_at;
    double *lat;
    size_t nlat, cap;
    long errors;
    int inflight_now;
    int stopping;
} bench_t;

static void start_call(bench_t *b);

static void on_reply(int status, const char *reply, size_t len, void *data) {
    (void)reply;
    (void)len;
    uint64_t *started = data;
    bench_t *b = (bench_t *)started[1];
    uint64_t now = uv_hrtime();
    b->inflight_now--;
    if (status != 0) b->errors++;
    else if (started[0] >= b->measure_from && now <= b->stop_at) {
        if (b->nlat == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 65536;
            b->lat = realloc(b->lat, b->cap * sizeof *b->lat);
        }
        b->lat[b->nlat++] = (double)(now - started[0]) / 1e6;
    }
    free(started);
    if (now < b->stop_at) start_call(b);
}

static void start_call(bench_t *b) {
    uint64_t *ctx = malloc(2 * sizeof *ctx);
    ctx[0] = uv_hrtime();
    ctx[1] = (uint64_t)b;
    if (bus_rpc_call(b->rpc, b->service, b->method, b->body, strlen(b->body), NULL, on_reply, ctx) != 0) {
        free(ctx);
        b->errors++;
        return;
    }
    b->inflight_now++;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    bench_t b = {.service = "alliances", .method = "ping", .body = "{}"};
    int inflight = 1;
    double seconds = 5, warmup = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--service")) b.service = argv[i + 1];
        else if (!strcmp(argv[i], "--method")) b.method = argv[i + 1];
        else if (!strcmp(argv[i], "--inflight")) inflight = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--body")) b.body = argv[i + 1];
    }
    bus_log_init("bench_rpc", NULL, BUS_LOG_WARN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *url = getenv("BUS_AMQP_URL");
    bus_conn_options_t o = {.url = url ? url : "amqp://guest:guest@127.0.0.1:5672/", .name = "bench_rpc"};
    bus_conn_t *conn;
    char err[256];
    if (bus_conn_new(&loop, &o, &conn, err, sizeof err) != 0) {
        fprintf(stderr, "bench_rpc: %s\n", err);
        return 1;
    }
    bus_rpc_client_new(conn, 10000, &b.rpc);
    if (bus_conn_connect_now(conn, err, sizeof err) != 0) {
        fprintf(stderr, "bench_rpc: %s\n", err);
        return 1;
    }
    uint64_t t0 = uv_hrtime();
    b.measure_from = t0 + (uint64_t)(warmup * 1e9);
    b.stop_at = b.measure_from + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < inflight; i++) start_call(&b);
    while (b.inflight_now > 0) uv_run(&loop, UV_RUN_ONCE);
    qsort(b.lat, b.nlat, sizeof *b.lat, cmp);
    double p50 = b.nlat ? b.lat[(size_t)((double)(b.nlat - 1) * 0.50)] : 0;
    double p99 = b.nlat ? b.lat[(size_t)((double)(b.nlat - 1) * 0.99)] : 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("name=libbus inflight=%d calls=%zu rps=%.0f p50_ms=%.3f p99_ms=%.3f rss_kb=%ld errors=%ld\n", inflight,
           b.nlat, (double)b.nlat / seconds, p50, p99, ru.ru_maxrss, b.errors);
    free(b.lat);
    bus_rpc_client_free(b.rpc);
    bus_conn_close(conn, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    return b.nlat ? 0 : 1;
}
