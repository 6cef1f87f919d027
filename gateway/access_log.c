/* The access log: one JSON object per request, on stderr with the other logs.
 *
 *   {"ts":"2026-11-23T09:15:05.123Z","level":"info","service":"gateway","kind":"access",
 *    "request_id":"...","route":"rpc","method":"POST","path":"/api/v1/rpc/alliances/ping",
 *    "status":200,"bytes":57,"ms":0.412,"key":"raidbot","peer":"127.0.0.1:51234"}
 *
 * Lines are appended to a buffer and written FLUSH_MS after the first line
 * of a batch (or at once when the buffer is nearly full, and at close): one
 * write(2) per FLUSH_MS under load rather than one per loop iteration, and a
 * line reaches the log within FLUSH_MS. BUS_ACCESS_LOG=0 turns it off.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bus/envelope.h"
#include "bus/log.h"
#include "gateway.h"

#define LINE_MAX_BYTES 2048
#define FLUSH_MS 10

/* The state is gw->alog (gateway.h). */

static void flush(gw_t *gw) {
    size_t off = 0;
    while (off < gw->alog.used) {
        ssize_t n = write(2, gw->alog.buf + off, gw->alog.used - off);
        if (n <= 0) break; /* stderr gone or full: drop rather than block */
        off += (size_t)n;
    }
    gw->alog.used = 0;
}

static void on_flush_timer(uv_timer_t *t) {
    gw_t *gw = t->data;
    if (gw->alog.used) flush(gw);
}

void gw_access_log_init(gw_t *gw) {
    if (!gw->access_log) return;
    uv_timer_init(gw->loop, &gw->alog.flusher);
    gw->alog.flusher.data = gw;
    uv_unref((uv_handle_t *)&gw->alog.flusher);
    gw->alog.active = 1;
}

void gw_access_log(gw_t *gw, const char *request_id, const char *route, const char *method, const char *path,
                   int status, size_t bytes, double ms, const char *key, const char *peer) {
    if (!gw->alog.active) return;
    if (gw->alog.used + LINE_MAX_BYTES > GW_ACCESS_LOG_BYTES) flush(gw);
    if (!gw->alog.used) uv_timer_start(&gw->alog.flusher, on_flush_timer, FLUSH_MS, 0);
    char ts[32];
    bus_now_rfc3339(ts);
    char *line = gw->alog.buf + gw->alog.used;
    size_t n = 0, cap = LINE_MAX_BYTES;
    n = (size_t)snprintf(line, cap,
                         "{\"ts\":\"%s\",\"level\":\"info\",\"service\":\"gateway\",\"kind\":\"access\","
                         "\"request_id\":\"",
                         ts);
    bus_json_escape_into(line, &n, cap - 200, request_id ? request_id : "");
    n += (size_t)snprintf(line + n, cap - n, "\",\"route\":\"%s\",\"method\":\"", route);
    bus_json_escape_into(line, &n, cap - 200, method ? method : "");
    memcpy(line + n, "\",\"path\":\"", 10);
    n += 10;
    bus_json_escape_into(line, &n, cap - 200, path ? path : "");
    n += (size_t)snprintf(line + n, cap - n, "\",\"status\":%d,\"bytes\":%zu,\"ms\":%.3f,\"key\":\"", status,
                          bytes, ms);
    bus_json_escape_into(line, &n, cap - 60, key ? key : "");
    memcpy(line + n, "\",\"peer\":\"", 10);
    n += 10;
    bus_json_escape_into(line, &n, cap - 8, peer ? peer : "");
    memcpy(line + n, "\"}\n", 3);
    n += 3;
    gw->alog.used += n;
}

void gw_access_log_close(gw_t *gw) {
    if (!gw->alog.active) return;
    flush(gw);
    uv_timer_stop(&gw->alog.flusher);
    uv_close((uv_handle_t *)&gw->alog.flusher, NULL);
    gw->alog.active = 0;
}
