/* RPC through a real broker: round trips, 1,000 calls in flight, errors,
 * timeouts, drain on SIGTERM, competing instances, bad configuration. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/metrics.h"

/* ---- a worker made for these tests ---- */

static void m_echo(bus_request_t *req) { bus_reply_ok(req, cJSON_Duplicate(bus_request_params(req), 1)); }

static void m_whoami(bus_request_t *req) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "instance", bus_worker_instance(bus_request_worker(req)));
    bus_reply_ok(req, d);
}


static void m_fail(bus_request_t *req) { bus_reply_error(req, BUS_EINTERNAL, "this method always fails"); }

static const bus_method_t methods[] = {
    {"echo", m_echo}, {"whoami", m_whoami}, {"slow", bt_method_slow}, {"fail", m_fail}, {NULL, NULL}};
static const bus_worker_def_t testrpc = {.service = "testrpc", .summary = "test worker", .methods = methods};

static pid_t start_worker(const char *const *env) {
    pid_t pid = bt_spawn_worker(&testrpc, env);
    CHECK(bt_wait_ping("testrpc", 15000) == 0);
    return pid;
}

/* ---- tests ---- */

static void test_round_trip(void) {
    pid_t w = start_worker(NULL);
    bt_client_t c;
    bt_client_open(&c);
    char *reply = NULL;
    CHECK_INT(bt_call(&c, "testrpc", "echo", "{\"hello\":\"world\",\"n\":[1,2]}", 3000, &reply), 0);
    CHECK_STR(reply, "{\"success\":true,\"data\":{\"hello\":\"world\",\"n\":[1,2]}}");
    free(reply);
    CHECK_INT(bt_call(&c, "testrpc", "ping", "{}", 3000, &reply), 0);
    CHECK_CONTAINS(reply, "\"service\":\"testrpc\"");
    CHECK_CONTAINS(reply, "\"in_flight\":");
    free(reply);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

/* A request and a reply larger than the broker's frame_max (128 KiB) go
 * out as several body frames; both come back whole. */
static void test_large_body_round_trip(void) {
    pid_t w = start_worker(NULL);
    bt_client_t c;
    bt_client_open(&c);
    enum { N = 700 * 1024 };
    char *params = malloc(N + 32);
    CHECK(params != NULL);
    int n = snprintf(params, 16, "{\"s\":\"");
    for (int i = 0; i < N; i++) params[n + i] = (char)('a' + i % 26);
    memcpy(params + n + N, "\"}", 3);
    char *reply = NULL;
    CHECK_INT(bt_call(&c, "testrpc", "echo", params, 10000, &reply), 0);
    CHECK(strlen(reply) == strlen(params) + strlen("{\"success\":true,\"data\":}"));
    CHECK(strstr(reply, params) != NULL);
    free(reply);
    free(params);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

/* What a bot with any AMQP client does (docs/ARCHITECTURE.md, "Wire contract": RPC on the wire):
 * publish to bus.rpc with routing key <service>.<method>, or straight to the
 * queue rpc.<service> through the default exchange with the method in
 * `type` (the path libbus's own client takes). A default-exchange request
 * without a usable type is answered not_found. */
static int nraw;
static char raw[8][1024], raw_corr[8][64];
static void on_raw(bus_msg_t *m, void *data) {
    (void)data;
    if (nraw < 8) {
        snprintf(raw[nraw], sizeof raw[0], "%.*s", (int)m->len, m->body);
        snprintf(raw_corr[nraw], sizeof raw_corr[0], "%s", m->correlation_id);
        nraw++;
    }
    bus_msg_ack(m);
}

static void test_plain_amqp_caller_both_routes(void) {
    pid_t w = start_worker(NULL);
    bt_client_t c;
    bt_client_open(&c);
    char q[64];
    snprintf(q, sizeof q, "test.raw.%d", (int)getpid());
    bus_queue_options_t o = {.exclusive = 1, .auto_delete = 1};
    CHECK(bus_conn_declare_queue(c.conn, q, &o) == 0);
    CHECK(bus_conn_consume(c.conn, q, 0, 1, amqp_empty_table, on_raw, NULL, NULL, 0) == 0);
    struct {
        const char *exchange, *key, *type, *corr, *want;
    } cases[] = {
        {"bus.rpc", "testrpc.echo", NULL, "c0", "{\"success\":true,\"data\":{\"x\":1}}"},
        {"", "rpc.testrpc", "testrpc.echo", "c1", "{\"success\":true,\"data\":{\"x\":1}}"},
        {"", "rpc.testrpc", NULL, "c2", "\"error\":\"not_found\""},
        {"", "rpc.testrpc", "other.echo", "c3", "\"error\":\"not_found\""},
        {"bus.rpc", "testrpc.nope", NULL, "c4", "\"error\":\"not_found\""},
    };
    enum { N = sizeof cases / sizeof cases[0] };
    nraw = 0;
    for (int i = 0; i < N; i++) {
        bus_publish_t p = {.exchange = cases[i].exchange, .routing_key = cases[i].key, .type = cases[i].type,
                           .body = "{\"x\":1}", .len = 7, .content_type = "application/json",
                           .correlation_id = cases[i].corr, .reply_to = q};
        CHECK_INT(bus_conn_publish(c.conn, &p, NULL, NULL), 0);
    }
    double end = bt_now_ms() + 10000;
    while (nraw < N && bt_now_ms() < end) {
        int flag = 0;
        bt_run_until(&c, &flag, 20);
    }
    CHECK_INT(nraw, N);
    for (int i = 0; i < N; i++) { /* one worker, one queue: answers in order */
        CHECK_STR(raw_corr[i], cases[i].corr);
        if (cases[i].want[0] == '{')
            CHECK_STR(raw[i], cases[i].want);
        else
            CHECK_CONTAINS(raw[i], cases[i].want);
    }
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

typedef struct {
    int index;
    int answered;
    int matched;
} slot_t;

static int answered_total;

static void on_numbered(int status, const char *reply, size_t len, void *data) {
    slot_t *s = data;
    s->answered = 1;
    answered_total++;
    if (status != 0) return;
    char want[64];
    snprintf(want, sizeof want, "{\"success\":true,\"data\":{\"i\":%d}}", s->index);
    s->matched = strlen(want) == len && memcmp(want, reply, len) == 0;
}

static void test_thousand_concurrent_calls(void) {
    pid_t w = start_worker(NULL);
    bt_client_t c;
    bt_client_open(&c);
    enum { N = 1000 };
    static slot_t slots[N];
    answered_total = 0;
    for (int i = 0; i < N; i++) {
        slots[i] = (slot_t){.index = i};
        char params[32];
        snprintf(params, sizeof params, "{\"i\":%d}", i);
        CHECK_INT(bus_rpc_call(c.rpc, "testrpc", "echo", params, strlen(params), NULL, on_numbered, &slots[i]), 0);
    }
    CHECK_INT(bus_rpc_client_pending(c.rpc), N);
    int all = 0;
    double end = bt_now_ms() + 20000;
    while (answered_total < N && bt_now_ms() < end) uv_run(&c.loop, UV_RUN_ONCE);
    for (int i = 0; i < N; i++) all += slots[i].matched;
    CHECK_INT(answered_total, N);
    CHECK_INT(all, N);
    CHECK_INT(bus_rpc_client_pending(c.rpc), 0);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

static void test_error_replies(void) {
    pid_t w = start_worker(NULL);
    bt_client_t c;
    bt_client_open(&c);
    char *reply = NULL;
    CHECK_INT(bt_call(&c, "testrpc", "nosuchmethod", "{}", 3000, &reply), 0);
    CHECK_CONTAINS(reply, "\"error\":\"not_found\"");
    CHECK_CONTAINS(reply, "\"status_code\":404");
    CHECK_CONTAINS(reply, "testrpc.nosuchmethod");
    free(reply);
    CHECK_INT(bt_call(&c, "testrpc", "fail", "{}", 3000, &reply), 0);
    CHECK_CONTAINS(reply, "\"error\":\"internal\"");
    CHECK_CONTAINS(reply, "always fails");
    free(reply);
    /* bytes that are not JSON reach the worker: bad_request with the offset */
    CHECK_INT(bt_call(&c, "testrpc", "echo", "{\"a\":tru}", 3000, &reply), 0);
    CHECK_CONTAINS(reply, "\"error\":\"bad_request\"");
    CHECK_CONTAINS(reply, "malformed JSON at byte");
    free(reply);
    /* the worker is still fine */
    CHECK_INT(bt_call(&c, "testrpc", "echo", "{}", 3000, &reply), 0);
    CHECK_CONTAINS(reply, "\"success\":true");
    free(reply);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

static void test_unknown_service_is_not_found(void) {
    bt_client_t c;
    bt_client_open(&c);
    double t0 = bt_now_ms();
    CHECK_INT(bt_call(&c, "nosuchservice", "ping", "{}", 3000, NULL), BUS_ENOT_FOUND);
    CHECK(bt_now_ms() - t0 < 1000); /* answered by the broker's return, not the timeout */
    CHECK_INT(bus_rpc_call(c.rpc, "Bad Name", "x", "{}", 2, NULL, NULL, NULL), BUS_EBAD_REQUEST);
    bt_client_close(&c);
}

static void test_timeout_when_no_worker_runs(void) {
    /* the queue exists (a worker ran once) but nobody consumes it now */
    pid_t w = start_worker(NULL);
    bt_kill(w, SIGKILL);
    bt_client_t c;
    bt_client_open(&c);
    double t0 = bt_now_ms();
    CHECK_INT(bt_call(&c, "testrpc", "echo", "{}", 300, NULL), BUS_ETIMEOUT);
    double took = bt_now_ms() - t0;
    CHECK(took >= 290 && took < 1500);
    bt_client_close(&c);
}

static void test_late_reply_dropped_and_counted(void) {
    pid_t w = start_worker(NULL);
    bt_client_t c;
    bt_client_open(&c);
    bus_counter_t *late = bus_counter("bus_rpc_late_replies_total", "", NULL);
    uint64_t before = bus_counter_value(late);
    CHECK_INT(bt_call(&c, "testrpc", "slow", "{\"ms\":400}", 100, NULL), BUS_ETIMEOUT);
    int never = 0;
    bt_run_until(&c, &never, 700); /* the reply arrives meanwhile */
    CHECK_INT(bus_counter_value(late), before + 1);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

static int sigterm_reply_done;
static int sigterm_status;
static char sigterm_reply[256];
static void on_slow_reply(int status, const char *reply, size_t len, void *data) {
    (void)data;
    sigterm_reply_done = 1;
    sigterm_status = status;
    if (reply) snprintf(sigterm_reply, sizeof sigterm_reply, "%.*s", (int)len, reply);
}

static void test_sigterm_finishes_slow_call_then_exits_0(void) {
    const char *env[] = {"BUS_DRAIN_MS=5000", NULL};
    pid_t w = start_worker(env);
    bt_client_t c;
    bt_client_open(&c);
    const char *p = "{\"ms\":800}";
    CHECK_INT(bus_rpc_call(c.rpc, "testrpc", "slow", p, strlen(p), NULL, on_slow_reply, NULL), 0);
    int never = 0;
    bt_run_until(&c, &never, 200); /* the request is in the worker's hands */
    kill(w, SIGTERM);
    CHECK(bt_run_until(&c, &sigterm_reply_done, 5000) == 0);
    CHECK_INT(sigterm_status, 0);
    CHECK_CONTAINS(sigterm_reply, "\"slept\":true");
    CHECK_INT(bt_wait_exit(w, 5000), 0);
    /* and it took no new work meanwhile: a call now times out */
    CHECK_INT(bt_call(&c, "testrpc", "echo", "{}", 300, NULL), BUS_ETIMEOUT);
    bt_client_close(&c);
}

static void test_two_instances_share_calls(void) {
    pid_t a = start_worker(NULL);
    pid_t b = bt_spawn_worker(&testrpc, NULL);
    usleep(500000);
    bt_client_t c;
    bt_client_open(&c);
    char first[128] = "";
    int other = 0;
    for (int i = 0; i < 200 && !other; i++) {
        char *reply = NULL;
        CHECK_INT(bt_call(&c, "testrpc", "whoami", "{}", 3000, &reply), 0);
        if (!first[0]) snprintf(first, sizeof first, "%s", reply);
        else if (strcmp(first, reply) != 0) other = 1;
        free(reply);
    }
    CHECK(other); /* both instances answered */
    bt_client_close(&c);
    bt_kill(a, SIGKILL);
    bt_kill(b, SIGKILL);
}

static void test_bad_env_value_stops_at_start(void) {
    const char *build = getenv("BUS_TEST_BUILD");
    char path[512], log[512];
    snprintf(path, sizeof path, "%s/bus-alliances", build ? build : "build");
    snprintf(log, sizeof log, "%s/bad-env.log", getenv("BUS_LOCAL_DIR") ? getenv("BUS_LOCAL_DIR") : "/tmp");
    unlink(log);
    char *argv[] = {path, NULL};
    const char *env[] = {"BUS_PREFETCH=lots", NULL};
    pid_t pid = bt_spawn_program(argv, env, log);
    CHECK_INT(bt_wait_exit(pid, 5000), 2);
    FILE *f = fopen(log, "r");
    CHECK(f != NULL);
    char text[1024] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    CHECK_CONTAINS(text, "BUS_PREFETCH");
    CHECK_CONTAINS(text, "lots");
    const char *env2[] = {"BUS_QUEUE_TYPE=fancy", NULL};
    pid = bt_spawn_program(argv, env2, NULL);
    CHECK_INT(bt_wait_exit(pid, 5000), 2);
    /* a broken schema stops the program at start, naming the file and the place */
    char env_dir[700];
    bt_schema_dir("events/x.y.json", "{\"properties\":{\"rank\":{\"enum\":\"R1\"}}}", env_dir, sizeof env_dir);
    const char *env3[] = {env_dir, NULL};
    unlink(log);
    pid = bt_spawn_program(argv, env3, log);
    CHECK_INT(bt_wait_exit(pid, 5000), 2);
    f = fopen(log, "r");
    n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    CHECK_CONTAINS(text, "x.y.json");
    CHECK_CONTAINS(text, "/properties/rank/enum");
    /* the domain's own settings: a bad value is exit 2 naming it; a store
     * that cannot be opened is exit 1 */
    struct {
        const char *env, *name;
        int code;
    } cases[] = {
        {"BUS_STORE_THREADS=abc", "BUS_STORE_THREADS", 2},
        {"BUS_MARKER_TTL_H=0", "BUS_MARKER_TTL_H", 2},
        {"BUS_STORE=postgres://x", "BUS_STORE", 2},
        {"BUS_STORE=sqlite:/nonexistent-dir/deeper/x.db", "cannot open", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *envi[] = {cases[i].env, NULL};
        unlink(log);
        pid = bt_spawn_program(argv, envi, log);
        CHECK_INT(bt_wait_exit(pid, 5000), cases[i].code);
        f = fopen(log, "r");
        CHECK(f != NULL);
        n = fread(text, 1, sizeof text - 1, f);
        text[n] = '\0';
        fclose(f);
        CHECK_CONTAINS(text, cases[i].name);
    }
}

/* GET over a plain socket; returns the whole answer (malloc'd). */
static char *http_get(int port, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0) len += (size_t)r;
    buf[len] = '\0';
    close(fd);
    return buf;
}

static void test_worker_metrics_endpoint(void) {
    const char *env[] = {"BUS_METRICS_ADDR=127.0.0.1:26998", NULL};
    pid_t w = start_worker(env);
    bt_client_t c;
    bt_client_open(&c);
    CHECK_INT(bt_call(&c, "testrpc", "echo", "{}", 3000, NULL), 0);
    CHECK_INT(bt_call(&c, "testrpc", "fail", "{}", 3000, NULL), 0);
    bt_client_close(&c);
    char *text = http_get(26998, "/metrics");
    CHECK(text != NULL);
    CHECK_CONTAINS(text, "HTTP/1.1 200");
    CHECK_CONTAINS(text, "bus_messages_consumed_total{service=\"testrpc\"}");
    CHECK_CONTAINS(text, "bus_rpc_errors_total{service=\"testrpc\"} 1");
    CHECK_CONTAINS(text, "bus_rpc_handler_seconds_bucket");
    CHECK_CONTAINS(text, "bus_amqp_connects_total 1");
    CHECK_CONTAINS(text, "bus_messages_dead_lettered_total");
    CHECK_CONTAINS(text, "process_resident_memory_bytes");
    free(text);
    text = http_get(26998, "/nope");
    CHECK_CONTAINS(text, "404");
    free(text);
    bt_kill(w, SIGKILL);
}

/* With a params schema, an invalid request gets `invalid` (422) with the
 * paths, and the handler never runs. */
static void test_invalid_params_never_reach_handler(void) {
    char env_dir[700];
    bt_schema_dir("rpc/testrpc.fail.json",
                  "{\"definitions\":{\"params\":{\"type\":\"object\",\"required\":[\"rank\"],\"additionalProperties\":false,"
                  "\"properties\":{\"rank\":{\"enum\":[\"R1\",\"R2\",\"R3\",\"R4\",\"R5\"]}}}}}",
                  env_dir, sizeof env_dir);
    const char *env[] = {env_dir, NULL};
    pid_t w = start_worker(env);
    bt_client_t c;
    bt_client_open(&c);
    char *reply = NULL;
    CHECK_INT(bt_call(&c, "testrpc", "fail", "{\"rank\":\"R9\",\"extra\":1}", 3000, &reply), 0);
    CHECK_CONTAINS(reply, "\"error\":\"invalid\"");
    CHECK_CONTAINS(reply, "\"status_code\":422");
    CHECK_CONTAINS(reply, "/rank: must be one of");
    CHECK_CONTAINS(reply, "/extra");
    free(reply);
    /* valid params reach the handler, which fails on purpose: proof it ran */
    CHECK_INT(bt_call(&c, "testrpc", "fail", "{\"rank\":\"R2\"}", 3000, &reply), 0);
    CHECK_CONTAINS(reply, "always fails");
    free(reply);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

/* The type the broker reports for each of the named queues, from
 * `rabbitmqctl list_queues name type` (servers.sh ctl): a passive declare
 * cannot tell it. types[i] gets "" for a queue the broker does not list. */
static void broker_queue_types(const char *const *names, size_t n, char types[][32]) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "deploy/local/servers.sh ctl '%s' -q list_queues name type 2>&1",
             getenv("BUS_LOCAL_DIR"));
    for (size_t i = 0; i < n; i++) types[i][0] = '\0';
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    char line[512];
    while (fgets(line, sizeof line, p)) {
        char name[256], type[32];
        if (sscanf(line, "%255s %31s", name, type) != 2) continue;
        for (size_t i = 0; i < n; i++)
            if (strcmp(name, names[i]) == 0) snprintf(types[i], sizeof types[i], "%s", type);
    }
    CHECK_INT(pclose(p), 0);
}

/* BUS_QUEUE_TYPE=quorum: the same worker on quorum queues (for clusters),
 * and the broker says they are quorum queues. Each run starts from no
 * queues, so what the broker reports is what this worker declared. */
static void test_quorum_queues(void) {
    if (!getenv("BUS_LOCAL_DIR") || access("deploy/local/servers.sh", X_OK) != 0)
        SKIP("BUS_LOCAL_DIR is not set, or not run from the repository root (no rabbitmqctl to ask the broker "
             "for the queue type)");
    static const bus_worker_def_t quorum = {.service = "testquorum", .summary = "test worker", .methods = methods};
    static const char *const queues[] = {"rpc.testquorum", "events.testquorum", "retry.testquorum",
                                         "dead.testquorum"};
    enum { NQ = sizeof queues / sizeof queues[0] };
    bt_client_t c;
    bt_client_open(&c);
    for (size_t i = 0; i < NQ; i++) bt_delete_queue(&c, queues[i]);
    const char *env[] = {"BUS_QUEUE_TYPE=quorum", NULL};
    pid_t w = bt_spawn_worker(&quorum, env);
    CHECK(bt_wait_ping("testquorum", 20000) == 0);
    char *reply = NULL;
    CHECK_INT(bt_call(&c, "testquorum", "echo", "{\"q\":1}", 3000, &reply), 0);
    CHECK_STR(reply, "{\"success\":true,\"data\":{\"q\":1}}");
    free(reply);
    char types[NQ][32];
    broker_queue_types(queues, NQ, types);
    for (size_t i = 0; i < NQ; i++) {
        if (strcmp(types[i], "quorum") != 0) fprintf(stderr, "  %s: type \"%s\"\n", queues[i], types[i]);
        CHECK_STR(types[i], "quorum");
    }
    /* and the default stays classic: the same question about testrpc's queue */
    pid_t w2 = start_worker(NULL);
    static const char *const classic[] = {"rpc.testrpc"};
    char ctypes[1][32];
    broker_queue_types(classic, 1, ctypes);
    CHECK_STR(ctypes[0], "classic");
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
    bt_kill(w2, SIGKILL);
}

BUS_TESTS({"quorum_queues", test_quorum_queues, 40},
          {"invalid_params_never_reach_handler", test_invalid_params_never_reach_handler, 30},
          {"worker_metrics_endpoint", test_worker_metrics_endpoint, 30},
          {"round_trip", test_round_trip, 30},
          {"plain_amqp_caller_both_routes", test_plain_amqp_caller_both_routes, 30},
          {"large_body_round_trip", test_large_body_round_trip, 30},
          {"thousand_concurrent_calls", test_thousand_concurrent_calls, 60},
          {"error_replies", test_error_replies, 30},
          {"unknown_service_is_not_found", test_unknown_service_is_not_found, 30},
          {"timeout_when_no_worker_runs", test_timeout_when_no_worker_runs, 30},
          {"late_reply_dropped_and_counted", test_late_reply_dropped_and_counted, 30},
          {"sigterm_finishes_slow_call_then_exits_0", test_sigterm_finishes_slow_call_then_exits_0, 30},
          {"two_instances_share_calls", test_two_instances_share_calls, 30},
          {"bad_env_value_stops_at_start", test_bad_env_value_stops_at_start, 30})
