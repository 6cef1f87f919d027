/* The worker's optional Prometheus endpoint (BUS_METRICS_ADDR): GET /metrics
 * on the libbus HTTP server; anything else is 404. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/http.h"
#include "bus/metrics.h"
#include "worker_internal.h"

static void on_metrics_request(bus_http_req_t *req, void *data) {
    (void)data;
    if (strcmp(bus_http_path(req), "/metrics") != 0) {
        bus_http_respond_error(req, 404, "only /metrics is served here");
        return;
    }
    size_t len = 0;
    char *text = bus_metrics_render(&len);
    if (!text) {
        bus_http_respond_error(req, 500, "out of memory");
        return;
    }
    bus_http_respond(req, 200, "text/plain; version=0.0.4", text, len);
    free(text);
}

int bus__worker_metrics_start(bus_worker_t *w, char *err, size_t errlen) {
    if (!w->cfg.metrics_addr) return 0;
    bus_http_config_t hc = {.addr = w->cfg.metrics_addr, .on_request = on_metrics_request, .data = w};
    int rc = bus_http_server_start(w->loop, &hc, &w->metrics_server);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s (%d)", w->cfg.metrics_addr, rc);
        return rc;
    }
    return 0;
}

void bus__worker_metrics_stop(bus_worker_t *w) {
    if (w->metrics_server) bus_http_server_close(w->metrics_server, NULL, NULL);
    w->metrics_server = NULL;
}
