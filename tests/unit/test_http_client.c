/* Tests of bus/src/http_client.c against the fake server of
 * tests/support/fake_http.c (a thread of this process on a loopback port):
 * no broker, no outside network. */
#include "bus/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include "../support/fake_http.h"
#include "../support/support.h"
#include "../test.h"
#include "bus/metrics.h"

/* ---- harness ---- */

typedef struct {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps RUN_UNTIL's loop turning to re-check its condition */
    bt_fake_http_t *fake;
    bus_http_client_t *hc;
    int closed;
} env_t;

static void on_tick(uv_timer_t *t) { (void)t; }

static void env_open(env_t *e, const bus_http_client_opts_t *o) {
    memset(e, 0, sizeof *e);
    CHECK_INT(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->tick);
    e->fake = bt_fake_http_start();
    CHECK_INT(bus_http_client_new(&e->loop, o, &e->hc), 0);
}

#define RUN_UNTIL(e, cond, ms)                                                    \
    do {                                                                          \
        uv_timer_start(&(e)->tick, on_tick, 5, 5);                                \
        double end_ = bt_now_ms() + (ms);                                         \
        while (!(cond) && bt_now_ms() < end_) uv_run(&(e)->loop, UV_RUN_ONCE);    \
        uv_timer_stop(&(e)->tick);                                                \
    } while (0)

static void on_client_closed(void *data) { ++*(int *)data; }

/* Closes the client and checks that the loop is left with nothing open. */
static void env_close(env_t *e) {
    bus_http_client_close(e->hc, on_client_closed, &e->closed);
    RUN_UNTIL(e, e->closed, 5000);
    CHECK_INT(e->closed, 1);
    uv_close((uv_handle_t *)&e->tick, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT); /* returns at once unless a handle was left */
    CHECK_INT(uv_loop_close(&e->loop), 0);
    bt_fake_http_stop(e->fake);
}

static const char *url(env_t *e, const char *path) {
    static char buf[8][256];
    static int n;
    return bt_fake_http_url(e->fake, path, buf[n++ % 8], sizeof buf[0]);
}

/* What a callback saw, copied. */
typedef struct {
    int calls;
    int status;
    int http_status;
    char *body;
    size_t body_len;
    char error[512];
    char content_type[128];
    char retry_after[128];
    int64_t retry_ms;
    int limit_rc, remaining_rc;
    int64_t limit, remaining;
    size_t header_count;
    double total_ms;
} result_t;

static void on_result(int status, const bus_http_response_t *r, void *data) {
    result_t *res = data;
    res->calls++;
    res->status = status;
    res->http_status = r->http_status;
    free(res->body);
    res->body = malloc(r->body_len + 1);
    CHECK(res->body != NULL);
    memcpy(res->body, r->body, r->body_len + 1); /* the NUL terminator too */
    res->body_len = r->body_len;
    snprintf(res->error, sizeof res->error, "%s", r->error);
    const char *ct = bus_http_response_header(r, "content-type");
    snprintf(res->content_type, sizeof res->content_type, "%s", ct ? ct : "");
    const char *ra = bus_http_response_header(r, "RETRY-AFTER");
    snprintf(res->retry_after, sizeof res->retry_after, "%s", ra ? ra : "");
    res->retry_ms = bus_http_response_retry_after_ms(r);
    res->limit_rc = bus_http_response_header_int(r, "x-ratelimit-limit", &res->limit);
    res->remaining_rc = bus_http_response_header_int(r, "X-RateLimit-Remaining", &res->remaining);
    res->header_count = r->header_count;
    res->total_ms = r->total_ms;
}

/* Forgets a result (and frees its body) before the next call. */
static void res_reset(result_t *res) {
    free(res->body);
    memset(res, 0, sizeof *res);
}

static uint64_t outcome_count(const char *client, const char *outcome) {
    return bus_counter_value(bus_counter("bus_http_client_requests_total", "Outgoing HTTP calls by outcome",
                                         "client", client, "outcome", outcome, NULL));
}

static int64_t in_flight_gauge(const char *client) {
    return bus_gauge_value(
        bus_gauge("bus_http_client_in_flight", "Outgoing HTTP calls awaiting their answer", "client", client, NULL));
}

/* ---- requests and answers ---- */

static void test_get_with_headers(void) {
    env_t e;
    bus_http_client_opts_t o = {.name = "t"};
    env_open(&e, &o);
    bt_fake_reply_t player = {.body = "{\"id\":42,\"name\":\"Frost\"}", .headers = {"X-Answer: yes"}};
    bt_fake_http_route(e.fake, "GET", "/v1/player", &player, 0);

    result_t res = {0};
    const char *hdrs[] = {"Authorization: Bot secret-token", "X-Request-Id: r-1", NULL};
    bus_http_request_t rq = {.url = url(&e, "/v1/player?id=42&x=a%20b"), .headers = hdrs};
    bus_http_call_t *call = NULL;
    CHECK_INT(bus_http_client_send(e.hc, &rq, on_result, &res, &call), 0);
    CHECK(call != NULL);
    CHECK_INT(res.calls, 0); /* never inside send */
    CHECK_INT(bus_http_client_in_flight(e.hc), 1);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.calls, 1);
    CHECK_INT(res.status, 0);
    CHECK_INT(res.http_status, 200);
    CHECK_STR(res.body, "{\"id\":42,\"name\":\"Frost\"}");
    CHECK_INT(res.body_len, strlen(res.body));
    CHECK_STR(res.content_type, "application/json");
    CHECK_STR(res.error, "");
    CHECK(res.header_count >= 3);
    CHECK(res.total_ms > 0);
    CHECK_INT(bus_http_client_in_flight(e.hc), 0);

    CHECK_INT(bt_fake_http_count(e.fake), 1);
    const bt_fake_request_t *seen = bt_fake_http_request(e.fake, 0);
    CHECK_STR(seen->method, "GET");
    CHECK_STR(seen->target, "/v1/player?id=42&x=a%20b");
    CHECK_STR(bt_fake_request_header(seen, "authorization"), "Bot secret-token");
    CHECK_STR(bt_fake_request_header(seen, "X-Request-Id"), "r-1");
    CHECK(strncmp(bt_fake_request_header(seen, "User-Agent"), "bus/", 4) == 0);
    CHECK(bt_fake_request_header(seen, "Expect") == NULL);
    CHECK_INT(seen->body_len, 0);

    /* a 404 is an HTTP answer too: status 0 */
    bt_fake_reply_t missing = {.status = 404, .body = "{\"error\":\"no such player\"}"};
    bt_fake_http_route(e.fake, NULL, "/v1/missing", &missing, 0);
    res_reset(&res);
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/v1/missing"), on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, 0);
    CHECK_INT(res.http_status, 404);
    CHECK_STR(res.body, "{\"error\":\"no such player\"}");
    CHECK_INT(outcome_count("t", "2xx"), 1);
    CHECK_INT(outcome_count("t", "4xx"), 1);
    res_reset(&res);
    env_close(&e);
}

static void test_post_json_and_methods(void) {
    env_t e;
    env_open(&e, NULL);
    result_t res = {0};
    const char *json = "{\"player\":42,\"code\":\"ABC-123\",\"text\":\"caf\xc3\xa9\"}";
    CHECK_INT(bus_http_client_post_json(e.hc, url(&e, "/verify"), json, on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, 0);
    CHECK_INT(res.http_status, 200);
    const bt_fake_request_t *seen = bt_fake_http_request(e.fake, 0);
    CHECK(seen != NULL);
    CHECK_STR(seen->method, "POST");
    CHECK_STR(seen->path, "/verify");
    CHECK_STR(seen->body, json);
    CHECK_INT(seen->body_len, strlen(json));
    CHECK_STR(bt_fake_request_header(seen, "Content-Type"), "application/json");
    CHECK(bt_fake_request_header(seen, "Expect") == NULL);

    /* PUT with a raw body and its type; DELETE and PATCH-with-JSON; HEAD */
    static const char raw[] = "bin\0ary";
    bus_http_request_t put = {.method = "PUT", .url = url(&e, "/blob"), .body = raw, .body_len = sizeof raw,
                              .content_type = "application/octet-stream"};
    bus_http_request_t del = {.method = "DELETE", .url = url(&e, "/blob/1")};
    bus_http_request_t patch = {.method = "PATCH", .url = url(&e, "/blob/2"), .json = "{}"};
    bus_http_request_t head = {.method = "HEAD", .url = url(&e, "/blob/3")};
    bus_http_request_t nobody_type = {.url = url(&e, "/raw"), .body = "x", .body_len = 1};
    result_t r2[5] = {{0}};
    CHECK_INT(bus_http_client_send(e.hc, &put, on_result, &r2[0], NULL), 0);
    RUN_UNTIL(&e, r2[0].calls, 5000);
    CHECK_INT(bus_http_client_send(e.hc, &del, on_result, &r2[1], NULL), 0);
    RUN_UNTIL(&e, r2[1].calls, 5000);
    CHECK_INT(bus_http_client_send(e.hc, &patch, on_result, &r2[2], NULL), 0);
    RUN_UNTIL(&e, r2[2].calls, 5000);
    CHECK_INT(bus_http_client_send(e.hc, &head, on_result, &r2[3], NULL), 0);
    RUN_UNTIL(&e, r2[3].calls, 5000);
    CHECK_INT(bus_http_client_send(e.hc, &nobody_type, on_result, &r2[4], NULL), 0);
    RUN_UNTIL(&e, r2[4].calls, 5000);
    for (int i = 0; i < 5; i++) {
        CHECK_INT(r2[i].status, 0);
        CHECK_INT(r2[i].http_status, 200);
        free(r2[i].body);
    }
    CHECK_INT(r2[3].body_len, 0); /* HEAD */
    CHECK_INT(bt_fake_http_count(e.fake), 6);
    seen = bt_fake_http_request(e.fake, 1);
    CHECK_STR(seen->method, "PUT");
    CHECK_INT(seen->body_len, sizeof raw);
    CHECK(memcmp(seen->body, raw, sizeof raw) == 0);
    CHECK_STR(bt_fake_request_header(seen, "content-type"), "application/octet-stream");
    CHECK_STR(bt_fake_http_request(e.fake, 2)->method, "DELETE");
    CHECK_STR(bt_fake_http_request(e.fake, 3)->method, "PATCH");
    CHECK_STR(bt_fake_http_request(e.fake, 3)->body, "{}");
    CHECK_STR(bt_fake_http_request(e.fake, 4)->method, "HEAD");
    seen = bt_fake_http_request(e.fake, 5);
    CHECK_STR(seen->method, "POST");
    CHECK(bt_fake_request_header(seen, "Content-Type") == NULL); /* not libcurl's form default */
    res_reset(&res);
    env_close(&e);
}

static void test_post_form(void) {
    env_t e;
    env_open(&e, NULL);
    result_t res = {0};
    const char *form[] = {"chat_id", "-100123", "text", "h\xc3\xa9llo w\xc3\xb6rld & a=b+c/100%", "empty", "",
                          NULL};
    CHECK_INT(bus_http_client_post_form(e.hc, url(&e, "/bot123:ABC/sendMessage"), form, on_result, &res, NULL),
              0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, 0);
    const bt_fake_request_t *seen = bt_fake_http_request(e.fake, 0);
    CHECK(seen != NULL);
    CHECK_STR(seen->method, "POST");
    CHECK_STR(seen->body, "chat_id=-100123&text=h%C3%A9llo+w%C3%B6rld+%26+a%3Db%2Bc%2F100%25&empty=");
    CHECK_STR(bt_fake_request_header(seen, "Content-Type"), "application/x-www-form-urlencoded");
    res_reset(&res);
    env_close(&e);
}

static void test_form_encode(void) {
    size_t len = 99;
    const char *empty[] = {NULL};
    char *s = bus_http_form_encode(empty, &len);
    CHECK_STR(s, "");
    CHECK_INT(len, 0);
    free(s);
    const char *f[] = {"a b", "~x-y_z.", "k\n", "\x01\xff", NULL};
    s = bus_http_form_encode(f, &len);
    CHECK_STR(s, "a+b=~x-y_z.&k%0A=%01%FF");
    CHECK_INT(len, strlen(s));
    free(s);
    const char *odd[] = {"a", "1", "b", NULL};
    CHECK(bus_http_form_encode(odd, NULL) == NULL);
}

/* ---- connections ---- */

typedef struct {
    env_t *e;
    int left;
    int ok;
} chain_t;

static void on_chained(int status, const bus_http_response_t *r, void *data) {
    chain_t *ch = data;
    if (status == 0 && r->http_status == 200) ch->ok++;
    if (--ch->left > 0) CHECK_INT(bus_http_client_get(ch->e->hc, url(ch->e, "/again"), on_chained, ch, NULL), 0);
}

static void test_connection_reuse(void) {
    env_t e;
    env_open(&e, NULL);
    chain_t ch = {.e = &e, .left = 5};
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/again"), on_chained, &ch, NULL), 0);
    RUN_UNTIL(&e, ch.left == 0, 5000);
    CHECK_INT(ch.ok, 5);
    CHECK_INT(bt_fake_http_count(e.fake), 5);
    CHECK_INT(bt_fake_http_peers(e.fake), 1); /* one keep-alive connection for all five */
    env_close(&e);
}

static void test_many_concurrent(void) {
    env_t e;
    bus_http_client_opts_t o = {.name = "many", .max_host_connections = 6};
    env_open(&e, &o);
    bt_fake_reply_t slowish = {.delay_ms = 20};
    bt_fake_http_route(e.fake, NULL, NULL, &slowish, 0);
    enum { N = 200 };
    static result_t res[N];
    for (int i = 0; i < N; i++) {
        char path[32];
        snprintf(path, sizeof path, "/item/%d", i);
        CHECK_INT(bus_http_client_get(e.hc, url(&e, path), on_result, &res[i], NULL), 0);
    }
    CHECK_INT(bus_http_client_in_flight(e.hc), N);
    CHECK_INT(in_flight_gauge("many"), N);
    int done = 0;
    RUN_UNTIL(&e, (done = (int)(N - bus_http_client_in_flight(e.hc))) == N, 20000);
    CHECK_INT(done, N);
    for (int i = 0; i < N; i++) {
        CHECK_INT(res[i].calls, 1);
        CHECK_INT(res[i].status, 0);
        CHECK_INT(res[i].http_status, 200);
        free(res[i].body);
    }
    CHECK_INT(bt_fake_http_count(e.fake), N);
    size_t peers = bt_fake_http_peers(e.fake);
    printf("  200 calls over %zu connections (max_host_connections 6)\n", peers);
    CHECK(peers >= 2 && peers <= 6);
    CHECK_INT(in_flight_gauge("many"), 0);
    CHECK_INT(outcome_count("many", "2xx"), N);
    env_close(&e);
}

/* ---- failures ---- */

static void test_timeout(void) {
    env_t e;
    bus_http_client_opts_t o = {.name = "t"};
    env_open(&e, &o);
    bt_fake_reply_t slow = {.delay_ms = 3000};
    bt_fake_http_route(e.fake, NULL, "/slow", &slow, 0);
    result_t res = {0};
    bus_http_request_t rq = {.url = url(&e, "/slow/secret-path?token=hush"), .timeout_ms = 200};
    CHECK_INT(bus_http_client_send(e.hc, &rq, on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.calls, 1);
    CHECK_INT(res.status, BUS_ETIMEOUT);
    CHECK_INT(res.http_status, 0);
    CHECK_STR(res.body, "");
    CHECK_INT(res.header_count, 0);
    CHECK_CONTAINS(res.error, "within 200 ms");
    CHECK_CONTAINS(res.error, "GET http://127.0.0.1:");
    CHECK(strstr(res.error, "secret") == NULL && strstr(res.error, "hush") == NULL);
    CHECK_INT(outcome_count("t", "timeout"), 1);
    CHECK_INT(bus_http_client_in_flight(e.hc), 0);

    /* the client default applies when the request has none */
    bus_http_client_t *quick;
    bus_http_client_opts_t qo = {.timeout_ms = 150};
    CHECK_INT(bus_http_client_new(&e.loop, &qo, &quick), 0);
    res_reset(&res);
    CHECK_INT(bus_http_client_get(quick, url(&e, "/slow"), on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, BUS_ETIMEOUT);
    int qclosed = 0;
    bus_http_client_close(quick, on_client_closed, &qclosed);
    RUN_UNTIL(&e, qclosed, 5000);
    CHECK_INT(qclosed, 1);
    res_reset(&res);
    env_close(&e);
}

/* A call waiting for a connection (the host's only one is busy) still
 * times out: libcurl's own timeout would not cover that wait. */
static void test_timeout_while_queued(void) {
    env_t e;
    bus_http_client_opts_t o = {.max_host_connections = 1};
    env_open(&e, &o);
    bt_fake_reply_t hang = {.action = BT_FAKE_HANG};
    bt_fake_http_route(e.fake, NULL, "/hang", &hang, 0);
    result_t a = {0}, b = {0};
    bus_http_call_t *ca;
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/hang"), on_result, &a, &ca), 0);
    RUN_UNTIL(&e, bt_fake_http_count(e.fake) == 1, 5000);
    bus_http_request_t rq = {.url = url(&e, "/fast"), .timeout_ms = 300};
    CHECK_INT(bus_http_client_send(e.hc, &rq, on_result, &b, NULL), 0);
    RUN_UNTIL(&e, b.calls, 5000);
    CHECK_INT(b.calls, 1);
    CHECK_INT(b.status, BUS_ETIMEOUT);
    CHECK_INT(a.calls, 0);
    CHECK_INT(bt_fake_http_count(e.fake), 1); /* /fast never left */
    CHECK_INT(bus_http_call_cancel(ca), 0);
    free(b.body);
    env_close(&e);
}

static void test_dropped_connection(void) {
    env_t e;
    bus_http_client_opts_t o = {.name = "t"};
    env_open(&e, &o);
    bt_fake_reply_t drop = {.action = BT_FAKE_DROP};
    bt_fake_reply_t partial = {.action = BT_FAKE_PARTIAL, .body_bytes = 100000};
    bt_fake_http_route(e.fake, NULL, "/drop", &drop, 0);
    bt_fake_http_route(e.fake, NULL, "/partial", &partial, 0);
    result_t res = {0};
    CHECK_INT(bus_http_client_post_json(e.hc, url(&e, "/drop"), "{}", on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.calls, 1);
    CHECK_INT(res.status, BUS_EUNAVAILABLE);
    CHECK_INT(res.http_status, 0);
    CHECK_CONTAINS(res.error, "POST http://127.0.0.1:");
    CHECK_CONTAINS(res.error, "connection"); /* closed without an answer (or reset) */

    res_reset(&res);
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/partial"), on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.calls, 1);
    CHECK_INT(res.status, BUS_EUNAVAILABLE);
    CHECK_INT(res.http_status, 0);
    CHECK_STR(res.body, "");
    CHECK_INT(outcome_count("t", "unavailable"), 2);

    /* the client is still good afterwards */
    res_reset(&res);
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/fine"), on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, 0);
    CHECK_INT(res.http_status, 200);
    res_reset(&res);
    env_close(&e);
}

static void test_connection_refused(void) {
    env_t e;
    env_open(&e, NULL);
    /* a bound port nobody listens on refuses connections */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK_INT(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    CHECK_INT(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    char u[64];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/x", ntohs(a.sin_port));
    result_t res = {0};
    CHECK_INT(bus_http_client_get(e.hc, u, on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    close(fd);
    CHECK_INT(res.calls, 1);
    CHECK_INT(res.status, BUS_EUNAVAILABLE);
    CHECK_CONTAINS(res.error, "refused");

    /* a name that does not resolve (RFC 6761 reserves .invalid) */
    res_reset(&res);
    bus_http_request_t rq = {.url = "http://no-such-host.invalid/x", .timeout_ms = 20000};
    CHECK_INT(bus_http_client_send(e.hc, &rq, on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 25000);
    CHECK_INT(res.calls, 1);
    CHECK_INT(res.status, BUS_EUNAVAILABLE);
    CHECK_CONTAINS(res.error, "not resolved");
    res_reset(&res);
    env_close(&e);
}

static void test_rate_limited(void) {
    env_t e;
    env_open(&e, NULL);
    bt_fake_reply_t limited = {.status = 429,
                               .body = "{\"retry_after\":3}",
                               .headers = {"Retry-After: 3", "X-RateLimit-Limit: 30", "x-ratelimit-remaining: 0"}};
    bt_fake_http_route(e.fake, NULL, "/limited", &limited, 0);
    result_t res = {0};
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/limited"), on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, 0);
    CHECK_INT(res.http_status, 429);
    CHECK_STR(res.retry_after, "3");
    CHECK_INT(res.retry_ms, 3000);
    CHECK_INT(res.limit_rc, 0);
    CHECK_INT(res.limit, 30);
    CHECK_INT(res.remaining_rc, 0);
    CHECK_INT(res.remaining, 0);
    CHECK_STR(res.body, "{\"retry_after\":3}");

    /* as an HTTP date two minutes ahead */
    char date[64], line[96];
    time_t later = time(NULL) + 120;
    struct tm tm;
    gmtime_r(&later, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    snprintf(line, sizeof line, "Retry-After: %s", date);
    bt_fake_reply_t dated = {.status = 503, .headers = {line}};
    bt_fake_http_route(e.fake, NULL, "/dated", &dated, 0);
    res_reset(&res);
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/dated"), on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, 0);
    CHECK_INT(res.http_status, 503);
    CHECK_STR(res.retry_after, date);
    CHECK(res.retry_ms > 100000 && res.retry_ms <= 120000);
    CHECK_INT(res.limit_rc, BUS_ENOT_FOUND);

    /* no header at all */
    res_reset(&res);
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/plain"), on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.retry_ms, -1);
    res_reset(&res);
    env_close(&e);
}

static void test_body_limit(void) {
    env_t e;
    bus_http_client_opts_t o = {.name = "t", .max_body_bytes = 1 << 20};
    env_open(&e, &o);
    bt_fake_reply_t big = {.body_bytes = 2u << 20};
    bt_fake_reply_t big_chunked = {.body_bytes = 2u << 20, .chunked = 1};
    bt_fake_http_route(e.fake, NULL, "/big", &big, 0);
    bt_fake_http_route(e.fake, NULL, "/chunked", &big_chunked, 0);
    const char *paths[] = {"/big", "/chunked"};
    result_t res = {0};
    for (int i = 0; i < 2; i++) { /* known from Content-Length, then found while reading */
        res_reset(&res);
        CHECK_INT(bus_http_client_get(e.hc, url(&e, paths[i]), on_result, &res, NULL), 0);
        RUN_UNTIL(&e, res.calls, 5000);
        CHECK_INT(res.calls, 1);
        CHECK_INT(res.status, BUS_HTTP_ETOO_LARGE);
        CHECK_INT(res.http_status, 0);
        CHECK_INT(res.body_len, 0);
        CHECK_CONTAINS(res.error, "larger than max_body_bytes (1048576 bytes)");
        res_reset(&res);
    }
    CHECK_INT(outcome_count("t", "too_large"), 2);

    /* a per-call limit */
    res_reset(&res);
    bus_http_request_t rq = {.url = url(&e, "/small"), .max_body_bytes = 5};
    CHECK_INT(bus_http_client_send(e.hc, &rq, on_result, &res, NULL), 0); /* {"ok":true} is 11 bytes */
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, BUS_HTTP_ETOO_LARGE);
    CHECK_CONTAINS(res.error, "(5 bytes)");
    res_reset(&res);

    /* exactly at the limit is fine */
    res_reset(&res);
    rq.max_body_bytes = 11;
    CHECK_INT(bus_http_client_send(e.hc, &rq, on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, 0);
    CHECK_STR(res.body, "{\"ok\":true}");
    res_reset(&res);

    /* headers over 64 KiB */
    static char h[BT_FAKE_MAX_HEADERS][12100];
    bt_fake_reply_t fat = {0};
    for (int i = 0; i < 6; i++) {
        int n = snprintf(h[i], sizeof h[i], "X-Fat-%d: ", i);
        memset(h[i] + n, 'f', 12000);
        h[i][n + 12000] = '\0';
        fat.headers[i] = h[i];
    }
    bt_fake_http_route(e.fake, NULL, "/fat", &fat, 0);
    res_reset(&res);
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/fat"), on_result, &res, NULL), 0);
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, BUS_HTTP_ETOO_LARGE);
    CHECK_CONTAINS(res.error, "headers larger than");
    res_reset(&res);
    env_close(&e);
}

static void test_large_body(void) {
    env_t e;
    bus_http_client_opts_t o = {.max_body_bytes = 8u << 20};
    env_open(&e, &o);
    const size_t size = 6u << 20;
    bt_fake_reply_t big = {.body_bytes = size, .content_type = "application/octet-stream"};
    bt_fake_reply_t big_chunked = {.body_bytes = size, .chunked = 1};
    bt_fake_http_route(e.fake, NULL, "/big", &big, 0);
    bt_fake_http_route(e.fake, NULL, "/chunked", &big_chunked, 0);
    const char *paths[] = {"/big", "/chunked"};
    for (int i = 0; i < 2; i++) {
        result_t res = {0};
        CHECK_INT(bus_http_client_get(e.hc, url(&e, paths[i]), on_result, &res, NULL), 0);
        RUN_UNTIL(&e, res.calls, 10000);
        CHECK_INT(res.status, 0);
        CHECK_INT(res.http_status, 200);
        CHECK_INT(res.body_len, size);
        CHECK(res.body[size] == '\0');
        for (size_t k = 0; k < size; k++)
            if (res.body[k] != bt_fake_body_byte(k)) {
                fprintf(stderr, "  byte %zu differs\n", k);
                CHECK(0);
            }
        res_reset(&res);
    }
    env_close(&e);
}

/* ---- cancel, close ---- */

static void on_must_not_run(int status, const bus_http_response_t *r, void *data) {
    (void)status;
    (void)r;
    (void)data;
    fprintf(stderr, "  a cancelled call's callback ran\n");
    CHECK(0);
}

static int own_cancel_rc = 1;
static void on_cancel_self(int status, const bus_http_response_t *r, void *data) {
    (void)r;
    CHECK_INT(status, 0);
    own_cancel_rc = bus_http_call_cancel(*(bus_http_call_t **)data);
}

static void test_cancel(void) {
    env_t e;
    bus_http_client_opts_t o = {.name = "t"};
    env_open(&e, &o);
    bt_fake_reply_t hang = {.action = BT_FAKE_HANG};
    bt_fake_http_route(e.fake, NULL, "/hang", &hang, 0);

    /* in flight, the server holding it */
    bus_http_call_t *call;
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/hang"), on_must_not_run, NULL, &call), 0);
    RUN_UNTIL(&e, bt_fake_http_held(e.fake) == 1, 5000);
    CHECK_INT(bt_fake_http_held(e.fake), 1);
    CHECK_INT(bus_http_call_cancel(call), 0);
    CHECK_INT(bus_http_client_in_flight(e.hc), 0);
    /* the connection is dropped: the server sees its client go */
    RUN_UNTIL(&e, bt_fake_http_held(e.fake) == 0, 5000);
    CHECK_INT(bt_fake_http_held(e.fake), 0);

    /* before it even started */
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/hang"), on_must_not_run, NULL, &call), 0);
    CHECK_INT(bus_http_call_cancel(call), 0);
    int spin = 0;
    RUN_UNTIL(&e, ++spin > 1000000, 200); /* give a wrongly-kept callback time to run */
    CHECK_INT(bt_fake_http_count(e.fake), 1);

    /* from its own callback: refused, harmless */
    bus_http_call_t *self = NULL;
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/ok"), on_cancel_self, &self, &self), 0);
    RUN_UNTIL(&e, own_cancel_rc != 1, 5000);
    CHECK_INT(own_cancel_rc, BUS_EINVALID);
    CHECK_INT(outcome_count("t", "cancelled"), 2);
    CHECK_INT(in_flight_gauge("t"), 0);
    env_close(&e);
}

static void test_close_with_calls_in_flight(void) {
    env_t e;
    env_open(&e, NULL);
    bt_fake_reply_t hang = {.action = BT_FAKE_HANG};
    bt_fake_http_route(e.fake, NULL, "/hang", &hang, 0);
    result_t res[3] = {{0}};
    for (int i = 0; i < 3; i++) CHECK_INT(bus_http_client_get(e.hc, url(&e, "/hang"), on_result, &res[i], NULL), 0);
    RUN_UNTIL(&e, bt_fake_http_held(e.fake) == 3, 5000);
    bus_http_client_close(e.hc, on_client_closed, &e.closed);
    for (int i = 0; i < 3; i++) { /* before close returned */
        CHECK_INT(res[i].calls, 1);
        CHECK_INT(res[i].status, BUS_EUNAVAILABLE);
        CHECK_CONTAINS(res[i].error, "closing");
        free(res[i].body);
    }
    result_t late = {0};
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/x"), on_result, &late, NULL), BUS_EUNAVAILABLE);
    bus_http_client_close(e.hc, NULL, NULL); /* a second close is a no-op */
    CHECK_INT(e.closed, 0);                  /* done runs from the loop */
    RUN_UNTIL(&e, e.closed, 5000);
    CHECK_INT(e.closed, 1);
    CHECK_INT(late.calls, 0);
    uv_close((uv_handle_t *)&e.tick, NULL);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&e.loop), 0);
    bt_fake_http_stop(e.fake);
}

typedef struct {
    env_t *e;
    int calls;
    int statuses[4];
} closer_t;

static void on_close_from_callback(int status, const bus_http_response_t *r, void *data) {
    (void)r;
    closer_t *cl = data;
    cl->statuses[cl->calls++] = status;
    bus_http_client_close(cl->e->hc, on_client_closed, &cl->e->closed);
}

static void test_close_from_callback(void) {
    env_t e;
    env_open(&e, NULL);
    bt_fake_reply_t slow = {.delay_ms = 300};
    bt_fake_http_route(e.fake, NULL, "/slow", &slow, 0);
    closer_t cl = {.e = &e};
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/fast"), on_close_from_callback, &cl, NULL), 0);
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/slow"), on_close_from_callback, &cl, NULL), 0);
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/slow"), on_close_from_callback, &cl, NULL), 0);
    RUN_UNTIL(&e, e.closed, 5000);
    CHECK_INT(e.closed, 1);
    CHECK_INT(cl.calls, 3);
    CHECK_INT(cl.statuses[0], 0);
    CHECK_INT(cl.statuses[1], BUS_EUNAVAILABLE);
    CHECK_INT(cl.statuses[2], BUS_EUNAVAILABLE);
    uv_close((uv_handle_t *)&e.tick, NULL);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&e.loop), 0);
    bt_fake_http_stop(e.fake);
}

/* ---- the loop ---- */

static int ticks;
static void on_count_tick(uv_timer_t *t) {
    (void)t;
    ticks++;
}

static void test_loop_keeps_turning(void) {
    env_t e;
    env_open(&e, NULL);
    bt_fake_reply_t slow = {.delay_ms = 600};
    bt_fake_http_route(e.fake, NULL, "/slow", &slow, 0);
    uv_timer_t counter;
    uv_timer_init(&e.loop, &counter);
    uv_timer_start(&counter, on_count_tick, 10, 10);
    result_t res = {0};
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/slow"), on_result, &res, NULL), 0);
    int ticks_at_send = ticks;
    RUN_UNTIL(&e, res.calls, 5000);
    CHECK_INT(res.status, 0);
    printf("  %d ticks of a 10 ms timer during a 600 ms call\n", ticks - ticks_at_send);
    CHECK(ticks - ticks_at_send >= 3); /* a blocked loop would show 0 or 1 */
    uv_close((uv_handle_t *)&counter, NULL);
    res_reset(&res);
    env_close(&e);
}

/* An idle client does not keep uv_run() alive; a call in flight does. */
static void test_idle_client_lets_loop_end(void) {
    env_t e;
    env_open(&e, NULL);
    uv_close((uv_handle_t *)&e.tick, NULL);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    result_t res = {0};
    CHECK_INT(bus_http_client_get(e.hc, url(&e, "/x"), on_result, &res, NULL), 0);
    uv_run(&e.loop, UV_RUN_DEFAULT); /* returns once the call is done */
    CHECK_INT(res.calls, 1);
    CHECK_INT(res.status, 0);
    res_reset(&res);
    bus_http_client_close(e.hc, on_client_closed, &e.closed);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    CHECK_INT(e.closed, 1);
    CHECK_INT(uv_loop_close(&e.loop), 0);
    bt_fake_http_stop(e.fake);
}

/* ---- arguments ---- */

static void test_bad_arguments(void) {
    env_t e;
    env_open(&e, NULL);
    bus_http_client_t *x;
    bus_http_client_opts_t neg = {.timeout_ms = -1};
    CHECK_INT(bus_http_client_new(&e.loop, &neg, &x), BUS_EBAD_REQUEST);
    result_t res = {0};
    bus_http_call_t *call = (bus_http_call_t *)&res;
    const char *bad_hdr[] = {"X-A: 1\r\nX-B: 2", NULL};
    const char *no_colon[] = {"Authorization", NULL};
    const char *odd[] = {"a", NULL};
    bus_http_request_t bad[] = {
        {.url = NULL},
        {.url = "ftp://127.0.0.1/x"},
        {.url = "/relative/path"},
        {.url = "not a url at all"},
        {.url = url(&e, "/x"), .method = "GE T"},
        {.url = url(&e, "/x"), .method = ""},
        {.url = url(&e, "/x"), .headers = bad_hdr},
        {.url = url(&e, "/x"), .headers = no_colon},
        {.url = url(&e, "/x"), .json = "{}", .form = odd},
        {.url = url(&e, "/x"), .form = odd},
        {.url = url(&e, "/x"), .timeout_ms = -5},
        {.url = url(&e, "/x"), .body = "a", .body_len = 1, .content_type = "text/plain\r\nX: y"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        call = (bus_http_call_t *)&res;
        int rc = bus_http_client_send(e.hc, &bad[i], on_result, &res, &call);
        if (rc != BUS_EBAD_REQUEST) fprintf(stderr, "  case %zu: %d\n", i, rc);
        CHECK_INT(rc, BUS_EBAD_REQUEST);
        CHECK(call == NULL);
    }
    CHECK_INT(bus_http_client_post_json(e.hc, url(&e, "/x"), NULL, on_result, &res, NULL), BUS_EBAD_REQUEST);
    bus_http_request_t ok = {.url = url(&e, "/x")};
    CHECK_INT(bus_http_client_send(e.hc, &ok, NULL, NULL, NULL), BUS_EBAD_REQUEST);
    int spin = 0;
    RUN_UNTIL(&e, ++spin > 1000000, 100);
    CHECK_INT(res.calls, 0);
    CHECK_INT(bt_fake_http_count(e.fake), 0);
    CHECK_INT(bus_http_client_in_flight(e.hc), 0);
    env_close(&e);
}

/* ---- the fake itself: what the game API, Discord and Telegram fakes build on ---- */

static void echo_handler(const bt_fake_request_t *req, bt_fake_reply_t *reply, void *data) {
    ++*(int *)data;
    static char body[256]; /* only needs to live until the handler returns; the fake copies it */
    snprintf(body, sizeof body, "{\"method\":\"%s\",\"path\":\"%s\",\"len\":%zu}", req->method, req->path,
             req->body_len);
    reply->status = 201;
    reply->body = body;
}

static void test_fake_routes_and_handler(void) {
    env_t e;
    env_open(&e, NULL);
    int handled = 0;
    bt_fake_http_set_handler(e.fake, echo_handler, &handled);
    bt_fake_reply_t once = {.status = 503, .body = "busy"};
    bt_fake_http_route(e.fake, "POST", "/send", &once, 1);
    bt_fake_reply_t gets = {.status = 200, .body = "got"};
    bt_fake_http_route(e.fake, "GET", "/send", &gets, 0);
    const char *paths[] = {"/send", "/send", "/send", "/elsewhere"};
    const char *methods[] = {"POST", "POST", "GET", "PUT"};
    const int want_status[] = {503, 201, 200, 201};
    const char *want_body[] = {"busy", "{\"method\":\"POST\",\"path\":\"/send\",\"len\":2}", "got",
                               "{\"method\":\"PUT\",\"path\":\"/elsewhere\",\"len\":2}"};
    for (int i = 0; i < 4; i++) {
        result_t res = {0};
        bus_http_request_t rq = {.method = methods[i], .url = url(&e, paths[i])};
        if (i != 2) rq.json = "{}";
        CHECK_INT(bus_http_client_send(e.hc, &rq, on_result, &res, NULL), 0);
        RUN_UNTIL(&e, res.calls, 5000);
        CHECK_INT(res.status, 0);
        CHECK_INT(res.http_status, want_status[i]);
        CHECK_STR(res.body, want_body[i]);
        res_reset(&res);
    }
    CHECK_INT(handled, 2);
    CHECK_INT(bt_fake_http_count(e.fake), 4);
    CHECK(bt_fake_http_request(e.fake, 4) == NULL);
    env_close(&e);
}

/* ---- Retry-After ---- */

static void test_retry_after_parse(void) {
    int64_t ms = -7;
    const int64_t now = 1445412450000LL; /* Wed, 21 Oct 2015 07:27:30 GMT */
    CHECK_INT(bus_http_retry_after_ms("120", now, &ms), 0);
    CHECK_INT(ms, 120000);
    CHECK_INT(bus_http_retry_after_ms(" 5\t", now, &ms), 0);
    CHECK_INT(ms, 5000);
    CHECK_INT(bus_http_retry_after_ms("0", now, &ms), 0);
    CHECK_INT(ms, 0);
    CHECK_INT(bus_http_retry_after_ms("1.5", now, &ms), 0);
    CHECK_INT(ms, 1500);
    CHECK_INT(bus_http_retry_after_ms("0.0001", now, &ms), 0);
    CHECK_INT(ms, 1); /* rounded up: never earlier than asked */
    CHECK_INT(bus_http_retry_after_ms("99999999999999999999999", now, &ms), 0);
    CHECK_INT(ms, 1000000000000LL);
    CHECK_INT(bus_http_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", now, &ms), 0);
    CHECK_INT(ms, 30000);
    CHECK_INT(bus_http_retry_after_ms("Wednesday, 21-Oct-15 07:28:00 GMT", now, &ms), 0);
    CHECK_INT(ms, 30000);
    CHECK_INT(bus_http_retry_after_ms("Wed Oct 21 07:28:00 2015", now, &ms), 0);
    CHECK_INT(ms, 30000);
    CHECK_INT(bus_http_retry_after_ms("Wed, 21 Oct 2015 07:00:00 GMT", now, &ms), 0);
    CHECK_INT(ms, 0); /* in the past */
    const char *bad[] = {"", "  ", "-1", "abc", "12abc", "1.", "1.5s", "+5", "now", "1e3", "Wed, 99 Foo 2015"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ms = -7;
        int rc = bus_http_retry_after_ms(bad[i], now, &ms);
        if (rc != BUS_EBAD_REQUEST) fprintf(stderr, "  \"%s\" gave %d (%lld)\n", bad[i], rc, (long long)ms);
        CHECK_INT(rc, BUS_EBAD_REQUEST);
        CHECK_INT(ms, -7);
    }
    CHECK_INT(bus_http_retry_after_ms(NULL, now, &ms), BUS_EBAD_REQUEST);
}

BUS_TESTS({"get_with_headers", test_get_with_headers, 20},
          {"post_json_and_methods", test_post_json_and_methods, 20},
          {"post_form", test_post_form, 20},
          {"form_encode", test_form_encode, 5},
          {"connection_reuse", test_connection_reuse, 20},
          {"many_concurrent", test_many_concurrent, 60},
          {"timeout", test_timeout, 20},
          {"timeout_while_queued", test_timeout_while_queued, 20},
          {"dropped_connection", test_dropped_connection, 20},
          {"connection_refused", test_connection_refused, 40},
          {"rate_limited", test_rate_limited, 20},
          {"body_limit", test_body_limit, 30},
          {"large_body", test_large_body, 60},
          {"cancel", test_cancel, 20},
          {"close_with_calls_in_flight", test_close_with_calls_in_flight, 20},
          {"close_from_callback", test_close_from_callback, 20},
          {"loop_keeps_turning", test_loop_keeps_turning, 20},
          {"idle_client_lets_loop_end", test_idle_client_lets_loop_end, 20},
          {"bad_arguments", test_bad_arguments, 20},
          {"fake_routes_and_handler", test_fake_routes_and_handler, 20},
          {"retry_after_parse", test_retry_after_parse, 5})
