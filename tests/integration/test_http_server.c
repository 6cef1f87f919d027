/* The HTTP server over real sockets on 127.0.0.1 (ports 26500-26599).
 *
 * Each test starts a server on its own thread and loop (tsrv_*), talks to it
 * with plain blocking sockets from the test thread, then stops it gracefully
 * and checks that the loop closed every handle (uv_loop_close == 0), so a
 * leaked connection or timer fails the test; ASan catches leaked memory.
 *
 * Handler routes (see on_req):
 *   /echo          "METHOD PATH QUERY|BODY" (+ X-Reply when X-Test is sent)
 *   /delay/N       answers after N ms (uv_timer), body "delayed N QUERY"
 *   /late          answers after 300 ms; records respond()'s return code
 *   /hang          never answers; answers (no-op) from its close callback
 *   /sse           3 events 20 ms apart, then the end of the stream
 *   /sse-forever   an event every 20 ms until the client goes away
 *   /who           the server's name (for SO_REUSEPORT)
 */
#include "../test.h"

#include "bus/error.h"
#include "bus/http.h"
#include "bus/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <uv.h>

/* ---- the server under test, on its own thread ---- */

typedef struct {
    uv_loop_t loop;
    uv_async_t stop;
    bus_http_server_t *srv;
    bus_http_config_t cfg;
    char addr[64];
    const char *name;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, start_rc, closed_cb, loop_close_rc;
    atomic_int served;
} tsrv_t;

static atomic_int g_late_rc = 1;      /* respond()'s result in /late */
static atomic_int g_close_calls;      /* close callbacks seen */
static atomic_int g_hang_rc = 1;
static atomic_int g_stream_rc = 1;

typedef struct {
    uv_timer_t t;
    bus_http_req_t *req;
    int n;
    int kind; /* 0 delay, 1 late, 2 sse, 3 sse-forever */
    int dead;
} job_t;

static void job_closed(uv_handle_t *h) { free(h->data); }

static void job_fire(uv_timer_t *t) {
    job_t *j = t->data;
    char body[128];
    if (j->kind == 0) {
        const char *q = bus_http_query(j->req);
        int n = snprintf(body, sizeof body, "delayed %d %s", j->n, q ? q : "");
        bus_http_respond(j->req, 200, "text/plain", body, (size_t)n);
    } else if (j->kind == 1) {
        atomic_store(&g_late_rc, bus_http_respond(j->req, 200, "text/plain", "late", 4));
    } else {
        if (!j->dead) {
            int n = snprintf(body, sizeof body, "data: %d\n\n", j->n);
            int rc = bus_http_stream_write(j->req, body, (size_t)n);
            if (rc != 0) atomic_store(&g_stream_rc, rc);
        }
        j->n++;
        if (j->dead || (j->kind == 2 && j->n == 3)) {
            int rc = bus_http_stream_end(j->req);
            if (j->dead) atomic_store(&g_stream_rc, rc);
        } else {
            return; /* repeating timer */
        }
    }
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, job_closed);
}

static void on_hang_close(bus_http_req_t *req, void *data) {
    (void)data;
    atomic_fetch_add(&g_close_calls, 1);
    CHECK(bus_http_req_gone(req));
    atomic_store(&g_hang_rc, bus_http_respond(req, 200, "text/plain", "never", 5));
}

static void on_stream_close(bus_http_req_t *req, void *data) {
    (void)req;
    job_t *j = data;
    atomic_fetch_add(&g_close_calls, 1);
    j->dead = 1; /* the timer ends the stream on its next tick */
}

static job_t *job_start(tsrv_t *ts, bus_http_req_t *req, int kind, int n, uint64_t ms, uint64_t repeat) {
    job_t *j = calloc(1, sizeof *j);
    j->req = req;
    j->kind = kind;
    j->n = n;
    uv_timer_init(&ts->loop, &j->t);
    j->t.data = j;
    uv_timer_start(&j->t, job_fire, ms, repeat);
    return j;
}

static void on_req(bus_http_req_t *req, void *data) {
    tsrv_t *ts = data;
    atomic_fetch_add(&ts->served, 1);
    const char *path = bus_http_path(req);
    char body[4096];
    if (strcmp(path, "/echo") == 0) {
        size_t blen;
        const char *b = bus_http_body(req, &blen);
        const char *q = bus_http_query(req);
        const char *x = bus_http_header(req, "x-test");
        if (x) CHECK_INT(bus_http_add_header(req, "X-Reply", x), 0);
        CHECK_INT(bus_http_add_header(req, "Bad\r\nName", "v"), BUS_EINVALID);
        int n = snprintf(body, sizeof body, "%s %s %s|", bus_http_method(req), path, q ? q : "-");
        if (blen > sizeof body - (size_t)n - 1) blen = sizeof body - (size_t)n - 1;
        memcpy(body + n, b, blen);
        bus_http_respond(req, 200, "text/plain", body, (size_t)n + blen);
    } else if (strncmp(path, "/delay/", 7) == 0) {
        job_start(ts, req, 0, atoi(path + 7), (uint64_t)atoi(path + 7), 0);
    } else if (strcmp(path, "/late") == 0) {
        job_start(ts, req, 1, 0, 300, 0);
    } else if (strcmp(path, "/hang") == 0) {
        bus_http_req_on_close(req, on_hang_close, NULL);
    } else if (strcmp(path, "/sse") == 0 || strcmp(path, "/sse-forever") == 0) {
        int forever = path[4] == '-';
        bus_http_add_header(req, "Cache-Control", "no-cache");
        CHECK_INT(bus_http_respond_stream_start(req, 200, "text/event-stream"), 0);
        job_t *j = job_start(ts, req, forever ? 3 : 2, 0, 20, 20);
        if (forever) bus_http_req_on_close(req, on_stream_close, j);
    } else if (strcmp(path, "/len") == 0) {
        size_t blen;
        const unsigned char *b = (const unsigned char *)bus_http_body(req, &blen);
        unsigned long sum = 0;
        for (size_t i = 0; i < blen; i++) sum = sum * 31 + b[i];
        CHECK(b[blen] == '\0');
        int n = snprintf(body, sizeof body, "%zu %lu", blen, sum);
        bus_http_respond(req, 200, "text/plain", body, (size_t)n);
    } else if (strcmp(path, "/who") == 0) {
        bus_http_respond(req, 200, "text/plain", ts->name, strlen(ts->name));
    } else {
        bus_http_respond_error(req, 404, "no such route");
    }
}

static void on_closed(void *data) {
    tsrv_t *ts = data;
    ts->closed_cb++;
}

static void on_stop(uv_async_t *a) {
    tsrv_t *ts = a->data;
    bus_http_server_close(ts->srv, on_closed, ts);
    uv_close((uv_handle_t *)a, NULL);
}

static void walk_print(uv_handle_t *h, void *arg) {
    (void)arg;
    fprintf(stderr, "  open handle: %s\n", uv_handle_type_name(h->type));
}

static void *tsrv_main(void *arg) {
    tsrv_t *ts = arg;
    uv_loop_init(&ts->loop);
    uv_async_init(&ts->loop, &ts->stop, on_stop);
    ts->stop.data = ts;
    int rc = bus_http_server_start(&ts->loop, &ts->cfg, &ts->srv);
    pthread_mutex_lock(&ts->mu);
    ts->start_rc = rc;
    ts->started = 1;
    pthread_cond_signal(&ts->cv);
    pthread_mutex_unlock(&ts->mu);
    if (rc != 0) uv_close((uv_handle_t *)&ts->stop, NULL);
    uv_run(&ts->loop, UV_RUN_DEFAULT);
    ts->loop_close_rc = uv_loop_close(&ts->loop);
    if (ts->loop_close_rc) uv_walk(&ts->loop, walk_print, NULL);
    return NULL;
}

static void tsrv_cfg(tsrv_t *ts, int port) {
    memset(ts, 0, sizeof *ts);
    snprintf(ts->addr, sizeof ts->addr, "127.0.0.1:%d", port);
    ts->cfg.addr = ts->addr;
    ts->cfg.on_request = on_req;
    ts->cfg.data = ts;
    ts->name = "a";
    pthread_mutex_init(&ts->mu, NULL);
    pthread_cond_init(&ts->cv, NULL);
}

static int tsrv_start(tsrv_t *ts) {
    pthread_create(&ts->th, NULL, tsrv_main, ts);
    pthread_mutex_lock(&ts->mu);
    while (!ts->started) pthread_cond_wait(&ts->cv, &ts->mu);
    pthread_mutex_unlock(&ts->mu);
    if (ts->start_rc != 0) pthread_join(ts->th, NULL);
    return ts->start_rc;
}

/* Graceful close, then every handle must be gone. */
static void tsrv_stop(tsrv_t *ts) {
    uv_async_send(&ts->stop);
    pthread_join(ts->th, NULL);
    CHECK_INT(ts->closed_cb, 1);
    CHECK_INT(ts->loop_close_rc, 0);
}

static tsrv_t *tsrv_run(int port, void (*tweak)(bus_http_config_t *)) {
    tsrv_t *ts = malloc(sizeof *ts);
    tsrv_cfg(ts, port);
    if (tweak) tweak(&ts->cfg);
    CHECK_INT(tsrv_start(ts), 0);
    return ts;
}

/* ---- a tiny blocking client ---- */

typedef struct {
    int fd;
    char buf[1 << 16];
    size_t len;
} cli_t;

typedef struct {
    int status;
    char head[8192];
    char body[1 << 16];
    size_t body_len;
} resp_t;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int tcp_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static cli_t *cli_open(int port) {
    cli_t *c = calloc(1, sizeof *c);
    c->fd = tcp_connect(port);
    CHECK(c->fd >= 0);
    return c;
}

static void cli_close(cli_t *c) {
    close(c->fd);
    free(c);
}

static void cli_send(cli_t *c, const char *s, size_t n) {
    while (n) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        CHECK(w > 0);
        s += w;
        n -= (size_t)w;
    }
}
#define SEND(c, s) cli_send((c), (s), strlen(s))

/* Reads more into c->buf; returns bytes read, 0 on EOF, -1 on error/timeout. */
static ssize_t cli_fill(cli_t *c) {
    if (c->len == sizeof c->buf) return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n > 0) c->len += (size_t)n;
    return n < 0 ? -1 : n;
}

static void cli_consume(cli_t *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static char *find_end(cli_t *c, const char *pat) {
    return memmem(c->buf, c->len, pat, strlen(pat));
}

/* Reads one response (Content-Length or chunked). 0 ok, -1 EOF before a
 * complete response. */
static int cli_read(cli_t *c, resp_t *r) {
    memset(r, 0, offsetof(resp_t, body));
    r->body_len = 0;
    char *e;
    while (!(e = find_end(c, "\r\n\r\n")))
        if (cli_fill(c) <= 0) return -1;
    size_t hl = (size_t)(e - c->buf) + 4;
    CHECK(hl < sizeof r->head);
    memcpy(r->head, c->buf, hl);
    r->head[hl] = '\0';
    cli_consume(c, hl);
    CHECK(sscanf(r->head, "HTTP/1.1 %d", &r->status) == 1);
    char *cl = strcasestr(r->head, "\r\nContent-Length:");
    if (cl) {
        size_t n = strtoul(cl + 17, NULL, 10);
        CHECK(n < sizeof r->body);
        if (strstr(r->head, "HEAD-REQUEST")) n = 0;
        while (c->len < n)
            if (cli_fill(c) <= 0) return -1;
        memcpy(r->body, c->buf, n);
        r->body_len = n;
        cli_consume(c, n);
    } else if (strcasestr(r->head, "Transfer-Encoding: chunked")) {
        for (;;) {
            while (!(e = find_end(c, "\r\n")))
                if (cli_fill(c) <= 0) return -1;
            size_t n = strtoul(c->buf, NULL, 16);
            size_t ll = (size_t)(e - c->buf) + 2;
            while (c->len < ll + n + 2)
                if (cli_fill(c) <= 0) return -1;
            CHECK(r->body_len + n < sizeof r->body);
            memcpy(r->body + r->body_len, c->buf + ll, n);
            r->body_len += n;
            CHECK(c->buf[ll + n] == '\r' && c->buf[ll + n + 1] == '\n');
            cli_consume(c, ll + n + 2);
            if (n == 0) break;
        }
    }
    r->body[r->body_len] = '\0';
    return 0;
}

/* 1 when the server closed the connection (EOF) within the socket timeout. */
static int cli_eof(cli_t *c) {
    char tmp[4096];
    for (;;) {
        ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
        if (n == 0) return 1;
        if (n < 0) return errno == ECONNRESET;
    }
}

static void get_ok(cli_t *c, const char *path, resp_t *r) {
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    SEND(c, req);
    CHECK_INT(cli_read(c, r), 0);
    CHECK_INT(r->status, 200);
}

static resp_t R; /* large: keep it off the stack */

/* ---- tests ---- */

static void test_round_trip(void) {
    tsrv_t *ts = tsrv_run(26500, NULL);
    cli_t *c = cli_open(26500);
    SEND(c, "GET /echo?x=1&y=%20 HTTP/1.1\r\nHost: x\r\nX-Test:  hello  \r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 200);
    CHECK_STR(R.body, "GET /echo x=1&y=%20|");
    CHECK_CONTAINS(R.head, "\r\nX-Reply: hello\r\n");
    CHECK_CONTAINS(R.head, "Content-Type: text/plain\r\n");
    CHECK_CONTAINS(R.head, "\r\nDate: ");
    SEND(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_STR(R.body, "POST /echo -|hello world");
    SEND(c, "GET /nope HTTP/1.1\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 404);
    CHECK_STR(R.body,
              "{\"success\":false,\"error\":\"not_found\",\"message\":\"no such route\",\"status_code\":404}");
    SEND(c, "HEAD /echo HTTP/1.1\r\n\r\n");
    /* HEAD: Content-Length announced, no body follows. */
    char *e;
    while (!(e = find_end(c, "\r\n\r\n"))) CHECK(cli_fill(c) > 0);
    CHECK(strstr(c->buf, "Content-Length: 13\r\n") != NULL);
    cli_consume(c, (size_t)(e - c->buf) + 4);
    get_ok(c, "/echo", &R); /* nothing stray was left in between */
    CHECK_STR(R.body, "GET /echo -|");
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

/* Regression (found by fuzz_http): a URL whose path copy outgrows the
 * inline head buffer made the copy read freed memory (caught under ASan,
 * `make sanitize`). The path and query must come out intact. */
static void test_long_url_path_copy(void) {
    tsrv_t *ts = tsrv_run(26522, NULL);
    cli_t *c = cli_open(26522);
    char path[1000], req[2048];
    memset(path, 'p', sizeof path - 1);
    path[0] = '/';
    path[sizeof path - 1] = '\0';
    snprintf(req, sizeof req, "GET %s?q=%.300s HTTP/1.1\r\nHost: x\r\n\r\n", path, path + 1);
    SEND(c, req);
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 404); /* no such route, answered properly */
    get_ok(c, "/echo?after=1", &R);
    CHECK_STR(R.body, "GET /echo after=1|");
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_keep_alive(void) {
    tsrv_t *ts = tsrv_run(26501, NULL);
    cli_t *c = cli_open(26501);
    for (int i = 0; i < 20; i++) {
        char path[32];
        snprintf(path, sizeof path, "/echo?i=%d", i);
        get_ok(c, path, &R);
        char want[64];
        snprintf(want, sizeof want, "GET /echo i=%d|", i);
        CHECK_STR(R.body, want);
        CHECK(!strstr(R.head, "Connection: close"));
    }
    CHECK_INT(atomic_load(&ts->served), 20);
    /* HTTP/1.0 with keep-alive stays open, without it the server closes. */
    SEND(c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_CONTAINS(R.head, "Connection: keep-alive");
    SEND(c, "GET /echo HTTP/1.0\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_CONTAINS(R.head, "Connection: close");
    CHECK(cli_eof(c));
    cli_close(c);
    /* Connection: close on 1.1 */
    c = cli_open(26501);
    SEND(c, "GET /echo HTTP/1.1\r\nConnection: close\r\n\r\nGET /echo HTTP/1.1\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_CONTAINS(R.head, "Connection: close");
    CHECK(cli_eof(c));
    CHECK_INT(c->len, 0); /* the request after the close was not answered */
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_pipelining_in_order(void) {
    tsrv_t *ts = tsrv_run(26502, NULL);
    cli_t *c = cli_open(26502);
    /* The first answers last (200 ms), the third after 50 ms: order must hold. */
    SEND(c, "GET /delay/200?n=1 HTTP/1.1\r\n\r\n"
            "GET /echo?n=2 HTTP/1.1\r\n\r\n"
            "GET /delay/50?n=3 HTTP/1.1\r\n\r\n"
            "POST /echo?n=4 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
            "GET /echo?n=5 HTTP/1.1\r\n\r\n");
    double t0 = now_ms();
    const char *want[] = {"delayed 200 n=1", "GET /echo n=2|", "delayed 50 n=3", "POST /echo n=4|abc",
                          "GET /echo n=5|"};
    for (int i = 0; i < 5; i++) {
        CHECK_INT(cli_read(c, &R), 0);
        CHECK_INT(R.status, 200);
        CHECK_STR(R.body, want[i]);
        if (i == 0) CHECK(now_ms() - t0 >= 180);
    }
    /* All five were handed to the handler at once (concurrently). */
    CHECK(now_ms() - t0 < 400);
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void small_pipeline(bus_http_config_t *cfg) { cfg->max_pipeline = 2; }

static void test_pipeline_backpressure(void) {
    tsrv_t *ts = tsrv_run(26503, small_pipeline);
    cli_t *c = cli_open(26503);
    char req[8192];
    size_t n = 0;
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(req + n, sizeof req - n, "GET /delay/%d?i=%d HTTP/1.1\r\n\r\n", i % 3, i);
    cli_send(c, req, n);
    for (int i = 0; i < 40; i++) {
        CHECK_INT(cli_read(c, &R), 0);
        char want[64];
        snprintf(want, sizeof want, "delayed %d i=%d", i % 3, i);
        CHECK_STR(R.body, want);
    }
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_chunked_body(void) {
    tsrv_t *ts = tsrv_run(26504, NULL);
    cli_t *c = cli_open(26504);
    SEND(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n");
    usleep(50000);
    SEND(c, "8;ext=1\r\nlo world\r\n0\r\nTrailer: x\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_STR(R.body, "POST /echo -|hello world");
    get_ok(c, "/echo", &R); /* still in sync */
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void small_limits(bus_http_config_t *cfg) {
    cfg->max_body_bytes = 1024;
    cfg->max_header_bytes = 2048;
}

static void test_body_too_large(void) {
    tsrv_t *ts = tsrv_run(26505, small_limits);
    /* Answered from Content-Length alone: the body is never sent. */
    cli_t *c = cli_open(26505);
    SEND(c, "POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 413);
    CHECK_CONTAINS(R.body, "\"success\":false");
    CHECK_CONTAINS(R.body, "\"status_code\":413");
    CHECK_CONTAINS(R.head, "Connection: close");
    CHECK(cli_eof(c));
    cli_close(c);
    /* The client keeps sending its big body: it still gets the 413. */
    c = cli_open(26505);
    SEND(c, "POST /echo HTTP/1.1\r\nContent-Length: 200000\r\n\r\n");
    static char big[200000];
    memset(big, 'x', sizeof big);
    send(c->fd, big, sizeof big, MSG_NOSIGNAL | MSG_DONTWAIT);
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 413);
    cli_close(c);
    /* Chunked: counted as it arrives. */
    c = cli_open(26505);
    SEND(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[700];
    memset(chunk, 'y', sizeof chunk);
    for (int i = 0; i < 2; i++) {
        SEND(c, "2bc\r\n");
        cli_send(c, chunk, sizeof chunk);
        SEND(c, "\r\n");
    }
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 413);
    cli_close(c);
    /* At the limit is fine. */
    c = cli_open(26505);
    SEND(c, "POST /echo HTTP/1.1\r\nContent-Length: 1024\r\n\r\n");
    static char ok[1024];
    memset(ok, 'z', sizeof ok);
    cli_send(c, ok, sizeof ok);
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 200);
    CHECK_INT(R.body_len, strlen("POST /echo -|") + 1024);
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_large_body(void) {
    tsrv_t *ts = tsrv_run(26520, NULL);
    cli_t *c = cli_open(26520);
    static char big[300000];
    unsigned long sum = 0;
    for (size_t i = 0; i < sizeof big; i++) {
        big[i] = (char)('a' + i % 26);
        sum = sum * 31 + (unsigned char)big[i];
    }
    char want[64];
    snprintf(want, sizeof want, "%zu %lu", sizeof big, sum);
    for (int chunked = 0; chunked < 2; chunked++) {
        if (chunked) {
            SEND(c, "POST /len HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
            for (size_t off = 0; off < sizeof big; off += 50000) {
                SEND(c, "c350\r\n");
                cli_send(c, big + off, 50000);
                SEND(c, "\r\n");
            }
            SEND(c, "0\r\n\r\n");
        } else {
            char head[128];
            snprintf(head, sizeof head, "POST /len HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", sizeof big);
            SEND(c, head);
            cli_send(c, big, sizeof big);
        }
        CHECK_INT(cli_read(c, &R), 0);
        CHECK_INT(R.status, 200);
        CHECK_STR(R.body, want);
    }
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static size_t custom_error(bus_http_req_t *req, int status, const char *code, const char *message,
                           char *buf, size_t cap, void *data) {
    (void)data;
    CHECK_INT(bus_http_add_header(req, "X-Request-Id", "rid-1"), 0);
    return (size_t)snprintf(buf, cap,
                            "{\"success\":false,\"error\":\"%s\",\"message\":\"%s\",\"status_code\":%d,"
                            "\"request_id\":\"rid-1\"}",
                            code, message, status);
}

static void with_error_hook(bus_http_config_t *cfg) { cfg->error_body = custom_error; }

static void test_error_hook(void) {
    tsrv_t *ts = tsrv_run(26521, with_error_hook);
    cli_t *c = cli_open(26521);
    SEND(c, "GET /nope HTTP/1.1\r\n\r\n"); /* a handler's error */
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 404);
    CHECK_CONTAINS(R.head, "\r\nX-Request-Id: rid-1\r\n");
    CHECK_STR(R.body, "{\"success\":false,\"error\":\"not_found\",\"message\":\"no such route\","
                      "\"status_code\":404,\"request_id\":\"rid-1\"}");
    SEND(c, "GET /echo HTTP/1.1\r\nX-Test: a\r\nbroken\r\n\r\n"); /* the server's own */
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 400);
    CHECK_CONTAINS(R.head, "\r\nX-Request-Id: rid-1\r\n");
    CHECK_CONTAINS(R.body, "\"request_id\":\"rid-1\"");
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_headers_too_large(void) {
    tsrv_t *ts = tsrv_run(26506, small_limits);
    cli_t *c = cli_open(26506);
    char req[4096];
    char val[3000];
    memset(val, 'v', sizeof val - 1);
    val[sizeof val - 1] = '\0';
    snprintf(req, sizeof req, "GET /echo HTTP/1.1\r\nX-Big: %s\r\n\r\n", val);
    SEND(c, req);
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 431);
    CHECK_CONTAINS(R.body, "\"error\":\"bad_request\"");
    CHECK(cli_eof(c));
    cli_close(c);
    /* Many small headers add up too. */
    c = cli_open(26506);
    SEND(c, "GET /echo HTTP/1.1\r\n");
    for (int i = 0; i < 300; i++) {
        snprintf(req, sizeof req, "X-H%d: 1\r\n", i);
        if (send(c->fd, req, strlen(req), MSG_NOSIGNAL) <= 0) break;
    }
    send(c->fd, "\r\n", 2, MSG_NOSIGNAL);
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 431);
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_malformed(void) {
    tsrv_t *ts = tsrv_run(26507, NULL);
    cli_t *c = cli_open(26507);
    SEND(c, "GET /echo HTTP/1.1\r\nBad Header\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 400);
    CHECK_CONTAINS(R.head, "Content-Type: application/json");
    CHECK_CONTAINS(R.body, "{\"success\":false,\"error\":\"bad_request\",\"message\":\"");
    CHECK_CONTAINS(R.body, "\"status_code\":400}");
    CHECK(cli_eof(c));
    cli_close(c);
    /* A good request first, then garbage: the good one is answered first. */
    c = cli_open(26507);
    SEND(c, "GET /delay/100 HTTP/1.1\r\n\r\n\x01\x02garbage\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 200);
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 400);
    CHECK(cli_eof(c));
    cli_close(c);
    c = cli_open(26507);
    SEND(c, "GET / HTTP/2.0\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 505);
    CHECK_CONTAINS(R.body, "\"status_code\":505");
    cli_close(c);
    c = cli_open(26507);
    SEND(c, "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 400);
    cli_close(c);
    c = cli_open(26507);
    get_ok(c, "/echo", &R); /* the server is fine */
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_half_request_then_disconnect(void) {
    tsrv_t *ts = tsrv_run(26508, NULL);
    for (int i = 0; i < 20; i++) {
        cli_t *c = cli_open(26508);
        SEND(c, i % 2 ? "GET /echo HTT" : "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
        if (i % 4 == 0) {
            struct linger lg = {1, 0}; /* RST instead of FIN */
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        cli_close(c);
    }
    cli_t *c = cli_open(26508);
    get_ok(c, "/echo", &R);
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_disconnect_while_pending(void) {
    atomic_store(&g_late_rc, 1);
    atomic_store(&g_hang_rc, 1);
    atomic_store(&g_close_calls, 0);
    tsrv_t *ts = tsrv_run(26509, NULL);
    cli_t *c = cli_open(26509);
    SEND(c, "GET /late HTTP/1.1\r\n\r\n");
    usleep(50000);
    cli_close(c);
    c = cli_open(26509);
    SEND(c, "GET /hang HTTP/1.1\r\n\r\n");
    usleep(50000);
    cli_close(c);
    usleep(450000);
    CHECK_INT(atomic_load(&g_late_rc), BUS_EUNAVAILABLE);
    CHECK_INT(atomic_load(&g_hang_rc), BUS_EUNAVAILABLE);
    CHECK_INT(atomic_load(&g_close_calls), 1);
    c = cli_open(26509);
    get_ok(c, "/echo", &R);
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void short_timeouts(bus_http_config_t *cfg) {
    cfg->read_timeout_ms = 200;
    cfg->idle_timeout_ms = 300;
}

static void test_read_timeout(void) {
    tsrv_t *ts = tsrv_run(26510, short_timeouts);
    cli_t *c = cli_open(26510);
    double t0 = now_ms();
    SEND(c, "GET /echo HTTP/1.1\r\nHost: x\r\n");
    /* Trickle bytes: the deadline is per request, not per read. */
    for (int i = 0; i < 3; i++) {
        usleep(50000);
        send(c->fd, "X", 1, MSG_NOSIGNAL);
    }
    CHECK_INT(cli_read(c, &R), 0);
    double dt = now_ms() - t0;
    CHECK_INT(R.status, 408);
    CHECK_CONTAINS(R.body, "\"status_code\":408");
    CHECK(dt >= 180 && dt < 1500);
    CHECK(cli_eof(c));
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_idle_timeout(void) {
    tsrv_t *ts = tsrv_run(26511, short_timeouts);
    cli_t *c = cli_open(26511);
    get_ok(c, "/echo", &R);
    /* A slow handler is not idle: /delay/500 outlives both timeouts. */
    get_ok(c, "/delay/500", &R);
    double t0 = now_ms();
    CHECK(cli_eof(c));
    double dt = now_ms() - t0;
    CHECK(dt >= 250 && dt < 1500);
    cli_close(c);
    /* A connection that never sends anything is closed too. */
    c = cli_open(26511);
    CHECK(cli_eof(c));
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_graceful_shutdown(void) {
    tsrv_t *ts = tsrv_run(26512, NULL);
    cli_t *busy = cli_open(26512);
    cli_t *idle = cli_open(26512);
    get_ok(idle, "/echo", &R);
    SEND(busy, "GET /delay/300 HTTP/1.1\r\n\r\n");
    usleep(50000);
    double t0 = now_ms();
    uv_async_send(&ts->stop);
    CHECK(cli_eof(idle)); /* idle connections go at once */
    CHECK(now_ms() - t0 < 200);
    usleep(50000);
    CHECK(tcp_connect(26512) < 0); /* no longer accepting */
    CHECK_INT(cli_read(busy, &R), 0); /* the in-flight request completes */
    CHECK_INT(R.status, 200);
    CHECK_STR(R.body, "delayed 300 ");
    CHECK_CONTAINS(R.head, "Connection: close");
    CHECK(cli_eof(busy));
    double t1 = now_ms();
    cli_close(busy);
    cli_close(idle);
    pthread_join(ts->th, NULL);
    CHECK(now_ms() - t1 < 500); /* no lingering once the client is gone */
    CHECK_INT(ts->closed_cb, 1);
    CHECK_INT(ts->loop_close_rc, 0);
    free(ts);
}

static void quick_shutdown(bus_http_config_t *cfg) { cfg->shutdown_timeout_ms = 200; }

static void test_shutdown_timeout_cuts_streams(void) {
    atomic_store(&g_close_calls, 0);
    atomic_store(&g_stream_rc, 1);
    tsrv_t *ts = tsrv_run(26513, quick_shutdown);
    cli_t *c = cli_open(26513);
    SEND(c, "GET /sse-forever HTTP/1.1\r\n\r\n");
    while (!find_end(c, "data: 2")) CHECK(cli_fill(c) > 0);
    double t0 = now_ms();
    uv_async_send(&ts->stop);
    pthread_join(ts->th, NULL);
    double dt = now_ms() - t0;
    CHECK(dt >= 150 && dt < 1500);
    CHECK_INT(ts->closed_cb, 1);
    CHECK_INT(ts->loop_close_rc, 0);
    CHECK_INT(atomic_load(&g_close_calls), 1);
    CHECK_INT(atomic_load(&g_stream_rc), BUS_EUNAVAILABLE);
    cli_close(c);
    free(ts);
}

static void reuseport(bus_http_config_t *cfg) { cfg->reuseport = 1; }

static void test_reuseport(void) {
    tsrv_t *a = tsrv_run(26514, reuseport);
    tsrv_t *b = malloc(sizeof *b);
    tsrv_cfg(b, 26514);
    b->cfg.reuseport = 1;
    b->name = "b";
    CHECK_INT(tsrv_start(b), 0);
    /* Without SO_REUSEPORT the port is taken. */
    tsrv_t *x = malloc(sizeof *x);
    tsrv_cfg(x, 26514);
    CHECK_INT(tsrv_start(x), BUS_EUNAVAILABLE);
    CHECK_INT(x->loop_close_rc, 0);
    free(x);
    int seen_a = 0, seen_b = 0;
    for (int i = 0; i < 64 && !(seen_a && seen_b); i++) {
        cli_t *c = cli_open(26514);
        get_ok(c, "/who", &R);
        if (strcmp(R.body, "a") == 0) seen_a++;
        if (strcmp(R.body, "b") == 0) seen_b++;
        cli_close(c);
    }
    CHECK(seen_a > 0 && seen_b > 0);
    tsrv_stop(a);
    tsrv_stop(b);
    free(a);
    free(b);
}

static void test_bad_address(void) {
    tsrv_t *x = malloc(sizeof *x);
    tsrv_cfg(x, 1);
    x->cfg.addr = "nonsense";
    CHECK_INT(tsrv_start(x), BUS_EINVALID);
    tsrv_cfg(x, 1);
    x->cfg.addr = "127.0.0.1:99999";
    CHECK_INT(tsrv_start(x), BUS_EINVALID);
    CHECK_INT(x->loop_close_rc, 0);
    free(x);
}

static void test_ipv6(void) {
    tsrv_t *ts = malloc(sizeof *ts);
    tsrv_cfg(ts, 0);
    ts->cfg.addr = "[::1]:26515";
    int rc = tsrv_start(ts);
    if (rc != 0) { /* no IPv6 loopback here: nothing to test */
        free(ts);
        SKIP("no [::1] on this host (cannot listen on the IPv6 loopback)");
    }
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(26515)};
    inet_pton(AF_INET6, "::1", &a.sin6_addr);
    CHECK_INT(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    cli_t *c = calloc(1, sizeof *c);
    c->fd = fd;
    get_ok(c, "/echo", &R);
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_thousand_connections(void) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 4096) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    CHECK(rl.rlim_cur >= 2100);
    tsrv_t *ts = tsrv_run(26516, NULL);
    enum { N = 1000 };
    static int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = tcp_connect(26516);
        CHECK(fds[i] >= 0);
    }
    for (int i = 0; i < N; i++) {
        char req[64];
        int n = snprintf(req, sizeof req, "GET /echo?i=%d HTTP/1.1\r\n\r\n", i);
        CHECK(send(fds[i], req, (size_t)n, MSG_NOSIGNAL) == n);
    }
    cli_t *c = calloc(1, sizeof *c);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            c->fd = fds[i];
            c->len = 0;
            CHECK_INT(cli_read(c, &R), 0);
            char want[64];
            snprintf(want, sizeof want, "GET /echo i=%d|", i);
            CHECK_STR(R.body, want);
            if (round == 0) { /* again, on the same kept-alive connection */
                char req[64];
                int n = snprintf(req, sizeof req, "GET /echo?i=%d HTTP/1.1\r\n\r\n", i);
                CHECK(send(fds[i], req, (size_t)n, MSG_NOSIGNAL) == n);
            }
        }
    }
    CHECK_INT(atomic_load(&ts->served), 2 * N);
    CHECK_INT(bus_http_server_connections(ts->srv), N);
    for (int i = 0; i < N; i++) close(fds[i]);
    free(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_sse(void) {
    tsrv_t *ts = tsrv_run(26517, NULL);
    cli_t *c = cli_open(26517);
    SEND(c, "GET /sse HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_INT(R.status, 200);
    CHECK_CONTAINS(R.head, "Content-Type: text/event-stream");
    CHECK_CONTAINS(R.head, "Cache-Control: no-cache");
    CHECK_STR(R.body, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    get_ok(c, "/echo", &R); /* keep-alive after the stream */
    /* A stream pipelined behind a slow request waits for its turn. */
    SEND(c, "GET /delay/100 HTTP/1.1\r\n\r\nGET /sse HTTP/1.1\r\n\r\n");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_STR(R.body, "delayed 100 ");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_STR(R.body, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    cli_close(c);
    /* HTTP/1.0 clients get the raw stream and a close. */
    c = cli_open(26517);
    SEND(c, "GET /sse HTTP/1.0\r\n\r\n");
    while (cli_fill(c) > 0) {}
    CHECK(find_end(c, "\r\n\r\ndata: 0\n\ndata: 1\n\ndata: 2\n\n") != NULL);
    CHECK(!find_end(c, "chunked"));
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_sse_client_gone(void) {
    atomic_store(&g_close_calls, 0);
    atomic_store(&g_stream_rc, 1);
    tsrv_t *ts = tsrv_run(26518, NULL);
    cli_t *c = cli_open(26518);
    SEND(c, "GET /sse-forever HTTP/1.1\r\n\r\n");
    while (!find_end(c, "data: 3")) CHECK(cli_fill(c) > 0);
    cli_close(c);
    usleep(200000);
    CHECK_INT(atomic_load(&g_close_calls), 1);
    CHECK_INT(atomic_load(&g_stream_rc), BUS_EUNAVAILABLE);
    tsrv_stop(ts);
    free(ts);
}

static void test_expect_continue(void) {
    tsrv_t *ts = tsrv_run(26519, NULL);
    cli_t *c = cli_open(26519);
    SEND(c, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    while (!find_end(c, "\r\n\r\n")) CHECK(cli_fill(c) > 0);
    CHECK(strncmp(c->buf, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0);
    cli_consume(c, 25);
    SEND(c, "hi");
    CHECK_INT(cli_read(c, &R), 0);
    CHECK_STR(R.body, "POST /echo -|hi");
    cli_close(c);
    tsrv_stop(ts);
    free(ts);
}

static void test_util(void) {
    char buf[64];
    CHECK_INT(bus_http_query_param("a=1&b=x%20y+z&c", "b", buf, sizeof buf), 0);
    CHECK_STR(buf, "x y z");
    CHECK_INT(bus_http_query_param("a=1&b=2&c", "c", buf, sizeof buf), 0);
    CHECK_STR(buf, "");
    CHECK_INT(bus_http_query_param("a=1", "b", buf, sizeof buf), BUS_ENOT_FOUND);
    CHECK_INT(bus_http_query_param("ab=1", "a", buf, sizeof buf), BUS_ENOT_FOUND);
    CHECK_INT(bus_http_query_param("a=%zz", "a", buf, sizeof buf), BUS_EBAD_REQUEST);
    CHECK_INT(bus_http_query_param("a=%4", "a", buf, sizeof buf), BUS_EBAD_REQUEST);
    CHECK_INT(bus_http_query_param("a=%00", "a", buf, sizeof buf), BUS_EBAD_REQUEST);
    CHECK_INT(bus_http_query_param("a=123456", "a", buf, 4), BUS_EINVALID);
    char p[] = "/a%2Fb+c";
    size_t n = strlen(p);
    CHECK_INT(bus_http_url_decode(p, &n, 0), 0);
    CHECK_STR(p, "/a/b+c");
    CHECK_INT(n, 6);
    CHECK_STR(bus_http_status_text(431), "Request Header Fields Too Large");
    CHECK_STR(bus_http_error_code(404), "not_found");
    CHECK_STR(bus_http_error_code(413), "bad_request");
    CHECK_STR(bus_http_error_code(502), "internal");
    char body[256];
    bus_http_error_json(body, sizeof body, 422, "invalid", "bad \"x\"");
    CHECK_STR(body, "{\"success\":false,\"error\":\"invalid\",\"message\":\"bad \\\"x\\\"\",\"status_code\":422}");
    size_t len = bus_http_error_json(body, 20, 400, "bad_request", "long message here");
    CHECK(len < 20 && strlen(body) == len); /* never broken JSON */
}

/* The runner's children leave with _exit(), which skips LeakSanitizer's
 * exit-time check: run it explicitly so a leaked request or connection fails
 * the test under ASan. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define LEAK_CHECK() __lsan_do_leak_check()
#else
#define LEAK_CHECK() ((void)0)
#endif
static void quiet(void) { bus_log_init("test", "t", BUS_LOG_WARN); }
static void run_quiet(void (*fn)(void)) {
    quiet();
    fn();
    LEAK_CHECK();
}
#define Q(name) static void q_##name(void) { run_quiet(name); }
Q(test_round_trip)
Q(test_keep_alive)
Q(test_pipelining_in_order)
Q(test_pipeline_backpressure)
Q(test_chunked_body)
Q(test_body_too_large)
Q(test_headers_too_large)
Q(test_large_body)
Q(test_error_hook)
Q(test_malformed)
Q(test_half_request_then_disconnect)
Q(test_disconnect_while_pending)
Q(test_read_timeout)
Q(test_idle_timeout)
Q(test_graceful_shutdown)
Q(test_shutdown_timeout_cuts_streams)
Q(test_reuseport)
Q(test_bad_address)
Q(test_ipv6)
Q(test_thousand_connections)
Q(test_sse)
Q(test_sse_client_gone)
Q(test_expect_continue)

BUS_TESTS({"long_url_path_copy", test_long_url_path_copy, 10}, {"util", test_util, 5},
          {"round_trip", q_test_round_trip, 10},
          {"keep_alive", q_test_keep_alive, 10},
          {"pipelining_in_order", q_test_pipelining_in_order, 10},
          {"pipeline_backpressure", q_test_pipeline_backpressure, 10},
          {"chunked_body", q_test_chunked_body, 10},
          {"body_too_large", q_test_body_too_large, 10},
          {"headers_too_large", q_test_headers_too_large, 10},
          {"large_body", q_test_large_body, 10},
          {"error_hook", q_test_error_hook, 10},
          {"malformed", q_test_malformed, 10},
          {"half_request_then_disconnect", q_test_half_request_then_disconnect, 10},
          {"disconnect_while_pending", q_test_disconnect_while_pending, 10},
          {"read_timeout", q_test_read_timeout, 10},
          {"idle_timeout", q_test_idle_timeout, 10},
          {"graceful_shutdown", q_test_graceful_shutdown, 10},
          {"shutdown_timeout_cuts_streams", q_test_shutdown_timeout_cuts_streams, 10},
          {"reuseport", q_test_reuseport, 10},
          {"bad_address", q_test_bad_address, 10},
          {"ipv6", q_test_ipv6, 10},
          {"thousand_connections", q_test_thousand_connections, 60},
          {"sse", q_test_sse, 10},
          {"sse_client_gone", q_test_sse_client_gone, 10},
          {"expect_continue", q_test_expect_continue, 10})
