/* libFuzzer target: raw bytes through the HTTP server's request path.
 *
 * A fake connection (no socket) runs the same code as socket reads:
 * llhttp callbacks, limits, pipelining queue, pause/resume, error answers,
 * response building and in-order flushing. The first input byte picks the
 * server (tiny limits or defaults) and how the handler answers (at once,
 * later in reverse order, streaming, error body, or after the client is
 * gone); the second picks how the rest is split into reads. Nothing may
 * crash, trip ASan/UBSan, or leak.
 *
 *   make build/fuzz/fuzz_http && build/fuzz/fuzz_http -max_total_time=60
 */
#include "bus/http.h"
#include "bus/log.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MAX_HELD 64

static bus_http_server_t *srv_small, *srv_big;
static bus_http_req_t *held[MAX_HELD];
static int nheld;
static int mode;

static void touch(bus_http_req_t *req) {
    /* Read everything the handler API exposes. */
    volatile size_t sum = strlen(bus_http_method(req)) + strlen(bus_http_url(req)) +
                          strlen(bus_http_path(req)) + strlen(bus_http_peer(req));
    const char *q = bus_http_query(req);
    if (q) {
        char v[64];
        bus_http_query_param(q, "a", v, sizeof v);
        sum += strlen(q);
    }
    for (size_t i = 0; i < bus_http_header_count(req); i++) {
        const char *n, *v;
        bus_http_header_at(req, i, &n, &v);
        sum += strlen(n) + strlen(v);
    }
    const char *ct = bus_http_header(req, "content-type");
    if (ct) sum += strlen(ct);
    size_t blen;
    const char *b = bus_http_body(req, &blen);
    if (blen) sum += (unsigned char)b[blen - 1];
    char path[256];
    size_t plen = strlen(bus_http_path(req));
    if (plen < sizeof path) {
        memcpy(path, bus_http_path(req), plen + 1);
        bus_http_url_decode(path, &plen, 0);
    }
    (void)sum;
}

static void answer(bus_http_req_t *req, int how) {
    switch (how % 4) {
    case 0:
        bus_http_add_header(req, "X-A", "1");
        bus_http_respond(req, 200, "text/plain", "ok", 2);
        break;
    case 1:
        bus_http_respond_error(req, 404, "nope");
        break;
    case 2:
        bus_http_respond_stream_start(req, 200, "text/event-stream");
        bus_http_stream_write(req, "data: 1\n\n", 9);
        bus_http_stream_write(req, "data: 2\n\n", 9);
        bus_http_stream_end(req);
        break;
    default:
        bus_http_respond(req, 204, NULL, NULL, 0);
        break;
    }
}

static void on_req(bus_http_req_t *req, void *data) {
    (void)data;
    touch(req);
    if ((mode & 0x0c) && nheld < MAX_HELD) {
        held[nheld++] = req; /* answer later (out of order) */
        return;
    }
    answer(req, mode >> 4);
}

static size_t error_body(bus_http_req_t *req, int status, const char *code, const char *message,
                         char *buf, size_t cap, void *data) {
    (void)data;
    bus_http_add_header(req, "X-Request-Id", "fuzz");
    if (mode & 0x40) return 0; /* default body */
    return bus_http_error_json(buf, cap, status, code, message);
}

static bus_http_server_t *make(size_t hdr, size_t body, unsigned pipe) {
    bus_http_config_t cfg = {.on_request = on_req, .error_body = error_body,
                             .max_header_bytes = hdr, .max_body_bytes = body, .max_pipeline = pipe};
    bus_http_server_t *s = NULL;
    if (bus__http_server_unbound(uv_default_loop(), &cfg, &s) != 0) __builtin_trap();
    return s;
}

static void answer_held(void) {
    while (nheld) {
        bus_http_req_t *batch[MAX_HELD];
        int n = nheld;
        memcpy(batch, held, sizeof batch[0] * (size_t)n);
        nheld = 0;
        for (int i = n - 1; i >= 0; i--) answer(batch[i], (mode >> 4) + i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!srv_small) {
        bus_log_init("fuzz", "fuzz", BUS_LOG_OFF);
        srv_small = make(256, 64, 2);
        srv_big = make(0, 0, 0);
    }
    if (size < 2) return 0;
    mode = data[0];
    size_t step = (size_t)data[1] + 1;
    data += 2;
    size -= 2;
    bus__http_conn_t *c = bus__http_conn_fake(mode & 1 ? srv_small : srv_big);
    size_t half = (mode & 2) ? size / 2 : size;
    for (size_t off = 0; off < half; off += step)
        bus__http_conn_feed(c, (const char *)data + off, off + step > half ? half - off : step);
    /* Answer the held requests in reverse order: responses must still come
     * out in order. Answering can resume parsing, which may hold more. */
    if (mode & 0x08) {
        /* The client goes away first: the later answers are no-ops. */
        bus__http_conn_fake_free(c);
        c = NULL;
    }
    answer_held();
    if (c) {
        for (size_t off = half; off < size; off += step) {
            bus__http_conn_feed(c, (const char *)data + off, off + step > size ? size - off : step);
            if (mode & 0x80) answer_held();
        }
        answer_held();
        size_t olen;
        const char *out = bus__http_conn_fake_output(c, &olen);
        if (olen && strncmp(out, "HTTP/1.1 ", 9) != 0) __builtin_trap();
        bus__http_conn_fake_free(c);
    }
    return 0;
}
