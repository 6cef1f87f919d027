/* Redis on libuv against a real, private redis-server (BUS_REDIS_URL).
 *
 * The outage test stops and restarts that server with deploy/local/servers.sh
 * when BUS_LOCAL_DIR and BUS_LOCAL_REDIS_PORT say where it lives; otherwise
 * it prints a SKIP line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bus/error.h"
#include "bus/redis.h"
#include "../test.h"

static uv_loop_t *loop;
static const char *url;
static char pfx[64]; /* key prefix unique per test process */

typedef struct {
    int done, status, was_set;
    int64_t count, ttl;
    char val[256];
    size_t len;
    long long integer;
    uint64_t at; /* uv_now when called back */
} res_t;

static void incr_cb(int st, int64_t count, int64_t ttl, void *d) {
    res_t *r = d;
    r->done = 1, r->status = st, r->count = count, r->ttl = ttl, r->at = uv_now(loop);
}
static void setnx_cb(int st, int was_set, void *d) {
    res_t *r = d;
    r->done = 1, r->status = st, r->was_set = was_set, r->at = uv_now(loop);
}
static void get_cb(int st, const char *v, size_t len, void *d) {
    res_t *r = d;
    r->done = 1, r->status = st, r->len = len, r->at = uv_now(loop);
    if (v) {
        CHECK(len < sizeof r->val);
        memcpy(r->val, v, len);
        r->val[len] = 0;
    }
}
static void status_cb(int st, void *d) {
    res_t *r = d;
    r->done = 1, r->status = st, r->at = uv_now(loop);
}
static void del_cb(int st, int64_t n, void *d) {
    res_t *r = d;
    r->done = 1, r->status = st, r->count = n, r->at = uv_now(loop);
}
static void reply_cb(int st, const redisReply *x, void *d) {
    res_t *r = d;
    r->done = 1, r->status = st, r->at = uv_now(loop);
    if (x && x->type == REDIS_REPLY_INTEGER) r->integer = x->integer;
    if (x && (x->type == REDIS_REPLY_STRING || x->type == REDIS_REPLY_STATUS || x->type == REDIS_REPLY_ERROR))
        snprintf(r->val, sizeof r->val, "%s", x->str);
}

static void wait_for(res_t *r) {
    while (!r->done) uv_run(loop, UV_RUN_ONCE);
}

/* Runs the loop until connected (or the limit passes); 1 when connected. */
static void tick_cb(uv_timer_t *t) { (void)t; }
static int wait_connected(bus_redis_t *rd, int ms) {
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick_cb, 10, 10);
    uint64_t end = uv_now(loop) + (uint64_t)ms;
    while (!bus_redis_is_connected(rd) && uv_now(loop) < end) uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return bus_redis_is_connected(rd);
}
static void flag_cb(uv_timer_t *t) { *(int *)t->data = 1; }
/* Runs the loop for `ms` (other handles keep working meanwhile). */
static void sleep_loop(int ms) {
    uv_timer_t t;
    int fired = 0;
    uv_timer_init(loop, &t);
    t.data = &fired;
    uv_timer_start(&t, flag_cb, (uint64_t)ms, 0);
    while (!fired) uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* Skips the test when there is no Redis to talk to. */
static void setup(void) {
    loop = uv_default_loop();
    url = getenv("BUS_REDIS_URL");
    snprintf(pfx, sizeof pfx, "bustest:%ld:", (long)getpid());
    if (!url || !*url) SKIP("BUS_REDIS_URL is not set (no Redis)");
}

static bus_redis_t *open_redis(const bus_redis_opts_t *o) {
    bus_redis_t *rd = NULL;
    char err[256];
    CHECK_INT(bus_redis_open(loop, url, o, &rd, err, sizeof err), 0);
    CHECK(wait_connected(rd, 3000));
    return rd;
}

static int closed;
static void on_closed(void *d) { *(int *)d = 1; }
static void close_redis(bus_redis_t *rd) {
    closed = 0;
    bus_redis_close(rd, on_closed, &closed);
    while (!closed) uv_run(loop, UV_RUN_ONCE); /* other clients may still be open */
}

static const char *K(const char *k) {
    static char buf[4][128];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s%s", pfx, k);
    return buf[i];
}

static void t_helpers(void) {
    setup();
    bus_redis_t *rd = open_redis(NULL);
    res_t r = {0};
    /* set/get/del with binary-safe values */
    CHECK_INT(bus_redis_set_px(rd, K("a"), "va\0lue", 6, 0, status_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_get(rd, K("a"), get_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.len, 6);
    CHECK(memcmp(r.val, "va\0lue", 6) == 0);
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_del(rd, K("a"), del_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.count, 1);
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_get(rd, K("a"), get_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ENOT_FOUND);

    /* cache entry with a TTL expires */
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_set_px(rd, K("c"), "x", 1, 80, status_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    sleep_loop(150);
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_get(rd, K("c"), get_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_ENOT_FOUND);

    /* SET NX PX: first wins, second sees it */
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_set_nx_px(rd, K("lock"), "me", 2, 60000, setnx_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.was_set, 1);
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_set_nx_px(rd, K("lock"), "you", 3, 60000, setnx_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.was_set, 0);

    /* rate-limit counter: count and the window's remaining TTL */
    for (int i = 1; i <= 3; i++) {
        memset(&r, 0, sizeof r);
        CHECK_INT(bus_redis_incr_expire(rd, K("rl"), 60000, incr_cb, &r), 0);
        wait_for(&r);
        CHECK_INT(r.status, 0);
        CHECK_INT(r.count, i);
        CHECK(r.ttl > 55000 && r.ttl <= 60000);
    }
    /* the window resets */
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_incr_expire(rd, K("rl2"), 100, incr_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.count, 1);
    sleep_loop(150);
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_incr_expire(rd, K("rl2"), 100, incr_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.count, 1);
    CHECK(r.ttl > 0 && r.ttl <= 100);

    /* a Redis error reply: EINTERNAL, with the error text */
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_incr_expire(rd, K("lock"), 1000, incr_cb, &r), 0); /* "me" is not an integer */
    wait_for(&r);
    CHECK_INT(r.status, BUS_EINTERNAL);
    const char *hs[] = {"HSET", K("h"), "f", "1"};
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_command_argv(rd, 4, hs, NULL, reply_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(r.integer, 1);
    const char *bad[] = {"NOSUCHCOMMAND"};
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_command_argv(rd, 1, bad, NULL, reply_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, BUS_EINTERNAL);
    CHECK_CONTAINS(r.val, "unknown command");

    const char *del[] = {"DEL", K("lock"), K("rl"), K("rl2"), K("h")};
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_command_argv(rd, 5, del, NULL, reply_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(bus_redis_set_px(rd, NULL, "x", 1, 0, status_cb, &r), BUS_EBAD_REQUEST);
    close_redis(rd);
}

/* 2000 commands issued in one go are pipelined; replies in order. */
static void t_pipeline(void) {
    setup();
    bus_redis_t *rd = open_redis(NULL);
    enum { N = 2000 };
    static res_t r[N];
    memset(r, 0, sizeof r);
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < N; i++) CHECK_INT(bus_redis_incr_expire(rd, K("pipe"), 10000, incr_cb, &r[i]), 0);
    CHECK_INT(bus_redis_pending(rd), N);
    for (int i = 0; i < N; i++) {
        wait_for(&r[i]);
        CHECK_INT(r[i].status, 0);
        CHECK_INT(r[i].count, i + 1);
    }
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    printf("  %d pipelined INCR+PEXPIRE+PTTL in %.1f ms (%.0f/s)\n", N, ms, N / (ms / 1000));
    CHECK_INT(bus_redis_pending(rd), 0);
    res_t d = {0};
    CHECK_INT(bus_redis_del(rd, K("pipe"), del_cb, &d), 0);
    wait_for(&d);
    close_redis(rd);
}

/* CLIENT PAUSE makes commands slow: they time out after timeout_ms, and the
 * connection is usable once the pause ends. */
static void t_timeout(void) {
    setup();
    bus_redis_opts_t o = {.timeout_ms = 150, .stall_ms = 5000};
    bus_redis_t *rd = open_redis(&o);
    bus_redis_t *other = open_redis(NULL);
    const char *pause[] = {"CLIENT", "PAUSE", "700"};
    res_t p = {0}, g = {0}, g2 = {0};
    CHECK_INT(bus_redis_command_argv(other, 3, pause, NULL, reply_cb, &p), 0);
    wait_for(&p);
    CHECK_INT(p.status, 0);
    uint64_t t0 = uv_now(loop);
    CHECK_INT(bus_redis_get(rd, K("slow"), get_cb, &g), 0);
    CHECK_INT(bus_redis_get(rd, K("slow2"), get_cb, &g2), 0);
    wait_for(&g);
    wait_for(&g2);
    CHECK_INT(g.status, BUS_ETIMEOUT);
    CHECK_INT(g2.status, BUS_ETIMEOUT);
    uint64_t el = g.at - t0;
    printf("  timed out after %llu ms\n", (unsigned long long)el);
    CHECK(el >= 140 && el < 400);
    /* after the pause: the late replies are discarded, new commands work */
    sleep_loop(700);
    res_t h = {0};
    CHECK_INT(bus_redis_get(rd, K("slow"), get_cb, &h), 0);
    wait_for(&h);
    CHECK_INT(h.status, BUS_ENOT_FOUND);
    CHECK_INT(bus_redis_pending(rd), 0);
    CHECK(bus_redis_is_connected(rd));
    close_redis(other);
    close_redis(rd);
}

/* A stalled server (no reply at all for stall_ms): the client drops the
 * connection and reconnects by itself. */
static int ups, downs;
static void on_state(int up, void *d) {
    (void)d;
    if (up)
        ups++;
    else
        downs++;
}

static void t_stall(void) {
    setup();
    bus_redis_opts_t o = {.timeout_ms = 100, .stall_ms = 300, .backoff_min_ms = 20, .backoff_max_ms = 100,
                          .on_state = on_state};
    ups = downs = 0;
    bus_redis_t *rd = open_redis(&o);
    bus_redis_t *other = open_redis(NULL);
    const char *pause[] = {"CLIENT", "PAUSE", "600"};
    res_t p = {0}, g = {0};
    CHECK_INT(bus_redis_command_argv(other, 3, pause, NULL, reply_cb, &p), 0);
    wait_for(&p);
    CHECK_INT(bus_redis_get(rd, K("x"), get_cb, &g), 0);
    wait_for(&g);
    CHECK_INT(g.status, BUS_ETIMEOUT);
    sleep_loop(300);
    CHECK(wait_connected(rd, 3000));
    CHECK_INT(downs, 1); /* dropped once, connected twice */
    CHECK_INT(ups, 2);
    sleep_loop(400);
    res_t h = {0};
    CHECK_INT(bus_redis_get(rd, K("x"), get_cb, &h), 0);
    wait_for(&h);
    CHECK_INT(h.status, BUS_ENOT_FOUND);
    close_redis(other);
    close_redis(rd);
}

/* Nothing listening: open succeeds, calls fail at once, the error names
 * the setting. Bad URLs are refused with a message naming it. */
static void t_unreachable(void) {
    loop = uv_default_loop();
    bus_redis_t *rd = NULL;
    char err[256];
    CHECK_INT(bus_redis_open(loop, "http://x", NULL, &rd, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "BUS_REDIS_URL");
    CHECK_INT(bus_redis_open(loop, "redis://h:99999/0", NULL, &rd, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_INT(bus_redis_open(loop, "redis://h:1/x", NULL, &rd, err, sizeof err), BUS_EBAD_REQUEST);
    bus_redis_opts_t o = {.backoff_min_ms = 20, .backoff_max_ms = 50};
    CHECK_INT(bus_redis_open(loop, "redis://:secret@127.0.0.1:1/3", &o, &rd, err, sizeof err), 0);
    CHECK_STR(bus_redis_url(rd), "redis://:***@127.0.0.1:1/3");
    CHECK(!wait_connected(rd, 300));
    CHECK_CONTAINS(bus_redis_last_error(rd), "BUS_REDIS_URL=redis://:***@127.0.0.1:1/3");
    printf("  %s\n", bus_redis_last_error(rd));
    res_t r = {0};
    uint64_t t0 = uv_hrtime();
    CHECK_INT(bus_redis_get(rd, "k", get_cb, &r), BUS_EUNAVAILABLE);
    CHECK_INT(bus_redis_incr_expire(rd, "k", 10, incr_cb, &r), BUS_EUNAVAILABLE);
    CHECK((uv_hrtime() - t0) < 1000000); /* under 1 ms */
    CHECK_INT(r.done, 0);
    close_redis(rd);
    /* an unresolvable host, closed while resolving or waiting */
    CHECK_INT(bus_redis_open(loop, "redis://no-such-host.invalid:6379/0", &o, &rd, err, sizeof err), 0);
    CHECK(!wait_connected(rd, 200));
    close_redis(rd);
}

/* Pending commands are answered with unavailable when the client closes. */
static void t_close_pending(void) {
    setup();
    bus_redis_t *rd = open_redis(NULL);
    res_t r[5];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 5; i++) CHECK_INT(bus_redis_get(rd, K("p"), get_cb, &r[i]), 0);
    closed = 0;
    bus_redis_close(rd, on_closed, &closed);
    for (int i = 0; i < 5; i++) {
        CHECK_INT(r[i].done, 1);
        CHECK_INT(r[i].status, BUS_EUNAVAILABLE);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK_INT(closed, 1);
}

/* Redis stopped: fast unavailable; Redis back: the same client reconnects. */
static void t_outage(void) {
    setup();
    const char *dir = getenv("BUS_LOCAL_DIR"), *port = getenv("BUS_LOCAL_REDIS_PORT");
    if (!dir || !port || access("deploy/local/servers.sh", X_OK) != 0)
        SKIP("BUS_LOCAL_DIR/BUS_LOCAL_REDIS_PORT not set, or not run from the repository root (no private Redis "
             "to stop and start)");
    ups = downs = 0;
    bus_redis_opts_t o = {.backoff_min_ms = 50, .backoff_max_ms = 400, .on_state = on_state};
    bus_redis_t *rd = open_redis(&o);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "deploy/local/servers.sh stop-redis '%s' >/dev/null", dir);
    CHECK(system(cmd) == 0);
    /* the loss is noticed without any command in flight */
    for (int i = 0; i < 100 && bus_redis_is_connected(rd); i++) sleep_loop(20);
    CHECK(!bus_redis_is_connected(rd));
    res_t r = {0};
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < 100; i++) CHECK_INT(bus_redis_get(rd, K("o"), get_cb, &r), BUS_EUNAVAILABLE);
    double us = (double)(uv_hrtime() - t0) / 1e3 / 100;
    printf("  while down: unavailable in %.2f us per call; %s\n", us, bus_redis_last_error(rd));
    sleep_loop(500); /* a few failed reconnection attempts */
    snprintf(cmd, sizeof cmd, "deploy/local/servers.sh start-redis '%s' >/dev/null", dir);
    CHECK(system(cmd) == 0);
    uint64_t t1 = uv_now(loop);
    CHECK(wait_connected(rd, 5000));
    printf("  reconnected %llu ms after the restart\n", (unsigned long long)(uv_now(loop) - t1));
    memset(&r, 0, sizeof r);
    CHECK_INT(bus_redis_set_px(rd, K("o"), "back", 4, 1000, status_cb, &r), 0);
    wait_for(&r);
    CHECK_INT(r.status, 0);
    CHECK_INT(ups, 2);
    CHECK_INT(downs, 1);
    close_redis(rd);
}

/* A command far larger than the socket's send buffer: the adapter's first
 * write is partial, the rest goes out as the socket drains (the write
 * interest path), and the commands queued behind it are answered in order. */
static void t_large(void) {
    setup();
    bus_redis_opts_t o = {.timeout_ms = 10000};
    bus_redis_t *rd = open_redis(&o);
    size_t n = (size_t)32 << 20;
    char *big = malloc(n);
    CHECK(big != NULL);
    for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 23);
    res_t set = {0}, len = {0}, tail = {0};
    CHECK_INT(bus_redis_set_px(rd, K("big"), big, n, 60000, status_cb, &set), 0);
    const char *strlen_argv[] = {"STRLEN", K("big")};
    CHECK_INT(bus_redis_command_argv(rd, 2, strlen_argv, NULL, reply_cb, &len), 0);
    const char *range_argv[] = {"GETRANGE", K("big"), "-5", "-1"};
    CHECK_INT(bus_redis_command_argv(rd, 4, range_argv, NULL, reply_cb, &tail), 0);
    wait_for(&tail);
    CHECK(set.done && len.done);
    CHECK_INT(set.status, 0);
    CHECK_INT(len.status, 0);
    CHECK_INT(len.integer, (long long)n);
    CHECK_INT(tail.status, 0);
    CHECK_INT(memcmp(tail.val, big + n - 5, 5), 0);
    CHECK(set.at <= len.at && len.at <= tail.at);
    free(big);
    res_t d = {0};
    CHECK_INT(bus_redis_del(rd, K("big"), del_cb, &d), 0);
    wait_for(&d);
    CHECK_INT(d.count, 1);
    close_redis(rd);
}

BUS_TESTS({"unreachable", t_unreachable, 20}, {"helpers", t_helpers, 20}, {"pipeline", t_pipeline, 20}, {"large_command", t_large, 30},
          {"timeout", t_timeout, 20}, {"stall_reconnect", t_stall, 20}, {"close_pending", t_close_pending, 10},
          {"outage_restart", t_outage, 30})
