/* A worker killed (SIGKILL) while its handler holds a message: the message
 * was not acked, so the broker gives it to the next instance, which handles
 * it; in effect it is handled exactly once. Deterministic: the first
 * instance's handler never finishes (it only notes that it started), so
 * the kill always lands while the message is in its hands; an ack sent
 * before the handler finished (an early ack) loses the message every time.
 *
 * The worker is this file's own ("testhold"): HOLD_MODE=hold notes
 * "started <id>" in HOLD_LOG and keeps the request or event forever;
 * HOLD_MODE=finish notes "handled <id>" and finishes it. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/publish.h"

/* ---- the worker ---- */

static void note(const char *what, const char *id) {
    const char *path = getenv("HOLD_LOG");
    if (!path) return;
    char line[256];
    int n = snprintf(line, sizeof line, "%s %s\n", what, id);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;
    ssize_t w = write(fd, line, (size_t)n); /* one write: lines never interleave */
    (void)w;
    close(fd);
}

static int holding(void) {
    const char *m = getenv("HOLD_MODE");
    return m && strcmp(m, "hold") == 0;
}

static void m_hold(bus_request_t *req) {
    const cJSON *id = cJSON_GetObjectItem(bus_request_params(req), "id");
    const char *key = cJSON_IsString(id) ? id->valuestring : "?";
    if (holding()) {
        note("started", key);
        return; /* never answered: the request stays unacked until the process dies */
    }
    note("handled", key);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "id", key);
    cJSON_AddBoolToObject(d, "redelivered", bus_request_redelivered(req));
    bus_reply_ok(req, d);
}

static void on_hold_event(bus_event_t *ev) {
    const bus_envelope_t *e = bus_event_envelope(ev);
    if (holding()) {
        note("started", e->id);
        return; /* never done */
    }
    note("handled", e->id);
    bus_event_done(ev, 0, NULL);
}

static const bus_method_t methods[] = {{"hold", m_hold}, {NULL, NULL}};
static const bus_subscription_t subs[] = {{"testhold.#", on_hold_event}, {NULL, NULL}};
static const bus_worker_def_t testhold = {
    .service = "testhold", .summary = "holds its work (test worker)", .methods = methods, .subscriptions = subs};

/* ---- helpers ---- */

static char log_path[600], log_env[700];

static void fresh_log(const char *name) {
    const char *tmp = getenv("BUS_TEST_TMPDIR");
    snprintf(log_path, sizeof log_path, "%s/hold-%s-%d.log", tmp && *tmp ? tmp : "/tmp", name, (int)getpid());
    unlink(log_path);
    snprintf(log_env, sizeof log_env, "HOLD_LOG=%s", log_path);
}

/* How many lines of the log are "<what> <id>". */
static int count_notes(const char *what, const char *id) {
    FILE *f = fopen(log_path, "r");
    if (!f) return 0;
    char line[256], want[256];
    snprintf(want, sizeof want, "%s %s\n", what, id);
    int n = 0;
    while (fgets(line, sizeof line, f)) n += strcmp(line, want) == 0;
    fclose(f);
    return n;
}

static void wait_note(bt_client_t *c, const char *what, const char *id, int timeout_ms) {
    double end = bt_now_ms() + timeout_ms;
    int never = 0;
    while (count_notes(what, id) == 0 && bt_now_ms() < end) bt_run_until(c, &never, 20);
    CHECK_INT(count_notes(what, id), 1);
}

static pid_t start_holder(const char *mode) {
    static char mode_env[64];
    snprintf(mode_env, sizeof mode_env, "HOLD_MODE=%s", mode);
    const char *env[] = {mode_env, log_env, NULL};
    pid_t pid = bt_spawn_worker(&testhold, env);
    CHECK(bt_wait_ping("testhold", 15000) == 0);
    return pid;
}

static void fresh_queues(bt_client_t *c) {
    const char *queues[] = {"rpc.testhold", "events.testhold", "retry.testhold", "dead.testhold"};
    for (size_t i = 0; i < sizeof queues / sizeof queues[0]; i++) bt_delete_queue(c, queues[i]);
}

static uint32_t ready_in(bt_client_t *c, const char *queue) {
    uint32_t ready = 99, consumers = 0;
    CHECK_INT(bus_conn_queue_info(c->conn, queue, &ready, &consumers), 0);
    return ready;
}

/* ---- tests ---- */

typedef struct {
    int done, status;
    char reply[512];
} call_t;

static void on_call(int status, const char *reply, size_t len, void *data) {
    call_t *r = data;
    r->done = 1;
    r->status = status;
    if (reply) snprintf(r->reply, sizeof r->reply, "%.*s", (int)len, reply);
}

static void test_request_survives_sigkill(void) {
    fresh_log("rpc");
    bt_client_t c;
    bt_client_open(&c);
    fresh_queues(&c);
    pid_t a = start_holder("hold");
    static call_t r;
    memset(&r, 0, sizeof r);
    const char *params = "{\"id\":\"req-1\"}";
    bus_rpc_call_opts_t o = {.timeout_ms = 30000};
    CHECK_INT(bus_rpc_call(c.rpc, "testhold", "hold", params, strlen(params), &o, on_call, &r), 0);
    wait_note(&c, "started", "req-1", 10000); /* in the first instance's hands */
    bt_kill(a, SIGKILL);
    CHECK(!r.done);
    pid_t b = start_holder("finish"); /* the broker requeued it: the next instance gets it */
    CHECK(bt_run_until(&c, &r.done, 20000) == 0);
    CHECK_INT(r.status, 0);
    CHECK_STR(r.reply, "{\"success\":true,\"data\":{\"id\":\"req-1\",\"redelivered\":true}}");
    int never = 0;
    bt_run_until(&c, &never, 500); /* nothing more comes */
    CHECK_INT(count_notes("started", "req-1"), 1);
    CHECK_INT(count_notes("handled", "req-1"), 1);
    CHECK_INT(ready_in(&c, "rpc.testhold"), 0);
    bt_kill(b, SIGKILL);
    bt_client_close(&c);
    unlink(log_path);
}

static int confirmed;
static void on_confirm(int status, void *data) {
    (void)data;
    if (status == 0) confirmed++;
}

static void test_event_survives_sigkill(void) {
    fresh_log("event");
    bt_client_t c;
    bt_client_open(&c);
    fresh_queues(&c);
    pid_t a = start_holder("hold");
    bus_envelope_t env = {0};
    CHECK_INT(bus_envelope_init(&env, "testhold.thing.happened", "test", NULL, NULL, cJSON_Parse("{\"n\":1}")), 0);
    char id[64];
    snprintf(id, sizeof id, "%s", env.id);
    confirmed = 0;
    CHECK_INT(bus_event_publish(c.conn, &env, on_confirm, NULL), 0);
    bus_envelope_clear(&env);
    wait_note(&c, "started", id, 10000);
    CHECK_INT(confirmed, 1);
    bt_kill(a, SIGKILL);
    pid_t b = start_holder("finish");
    wait_note(&c, "handled", id, 20000);
    int never = 0;
    bt_run_until(&c, &never, 1000); /* the ack reaches the broker; nothing is handled again */
    CHECK_INT(count_notes("started", id), 1);
    CHECK_INT(count_notes("handled", id), 1);
    CHECK_INT(ready_in(&c, "events.testhold"), 0);
    CHECK_INT(ready_in(&c, "retry.testhold"), 0);
    CHECK_INT(ready_in(&c, "dead.testhold"), 0);
    /* and once the last instance is gone too, nothing of it was left unacked */
    bt_kill(b, SIGKILL);
    bt_run_until(&c, &never, 300);
    CHECK_INT(ready_in(&c, "events.testhold"), 0);
    bt_client_close(&c);
    unlink(log_path);
}

BUS_TESTS({"request_survives_sigkill", test_request_survives_sigkill, 60},
          {"event_survives_sigkill", test_event_survives_sigkill, 60})
