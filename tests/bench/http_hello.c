/* A minimal HTTP server on libbus's bus_http for load tests:
 *
 *   make build/tests/bench/http_hello
 *   build/tests/bench/http_hello [ADDR] [--reuseport]   (default 127.0.0.1:26590)
 *   wrk -t2 -c32 -d5s http://127.0.0.1:26590/
 *
 * GET / answers "hello\n"; /delay answers after 1 ms (async path);
 * /metrics renders the Prometheus registry. SIGINT/SIGTERM close the server
 * gracefully; on exit it prints its peak RSS.
 */
#include "bus/http.h"
#include "bus/log.h"
#include "bus/metrics.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static bus_http_server_t *srv;
static uv_signal_t sig_int, sig_term;

typedef struct {
    uv_timer_t t;
    bus_http_req_t *req;
} delayed_t;

static void delayed_closed(uv_handle_t *h) { free(h->data); }

static void delayed_fire(uv_timer_t *t) {
    delayed_t *d = t->data;
    bus_http_respond(d->req, 200, "text/plain", "later\n", 6);
    uv_close((uv_handle_t *)t, delayed_closed);
}

static void on_req(bus_http_req_t *req, void *data) {
    uv_loop_t *loop = data;
    const char *path = bus_http_path(req);
    if (strcmp(path, "/delay") == 0) {
        delayed_t *d = malloc(sizeof *d);
        d->req = req;
        uv_timer_init(loop, &d->t);
        d->t.data = d;
        uv_timer_start(&d->t, delayed_fire, 1, 0);
    } else if (strcmp(path, "/metrics") == 0) {
        size_t len;
        char *text = bus_metrics_render(&len);
        bus_http_respond(req, 200, "text/plain; version=0.0.4", text, len);
        free(text);
    } else {
        bus_http_respond(req, 200, "text/plain", "hello\n", 6);
    }
}

static void on_closed(void *data) {
    (void)data;
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
    (void)s;
    (void)signum;
    uv_signal_stop(&sig_int);
    uv_signal_stop(&sig_term);
    bus_http_server_close(srv, on_closed, NULL);
}

int main(int argc, char **argv) {
    const char *addr = "127.0.0.1:26590";
    int reuseport = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reuseport") == 0) reuseport = 1;
        else addr = argv[i];
    }
    bus_log_init("http_hello", "bench", BUS_LOG_INFO);
    uv_loop_t *loop = uv_default_loop();
    bus_http_config_t cfg = {.addr = addr, .reuseport = reuseport, .on_request = on_req, .data = loop};
    if (bus_http_server_start(loop, &cfg, &srv) != 0) return 1;
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr, "peak RSS %ld KiB\n", ru.ru_maxrss);
    return uv_loop_close(loop) == 0 ? 0 : 1;
}
