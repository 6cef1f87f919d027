/* Chaos: the broker killed and restarted under load, workers killed with
 * SIGKILL mid-burst, the broker hung (SIGSTOP) while a client publishes
 * more than the sockets hold. Counts that nothing is lost. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/publish.h"
#include "bus/topology.h"


typedef struct {
    uv_timer_t timer; /* first: the close callback frees the whole struct */
    bus_event_t *ev;
} pending_event_t;

static void on_event_timer(uv_timer_t *t) {
    pending_event_t *p = t->data;
    const bus_envelope_t *e = bus_event_envelope(p->ev);
    cJSON *seen = cJSON_CreateObject();
    cJSON_AddStringToObject(seen, "id", e->id);
    /* the effect (here: the report) is published and confirmed before the ack */
    bus_worker_publish(bus_event_worker(p->ev), "chaosseen.handled", seen, NULL, NULL, NULL, NULL, NULL);
    bus_event_done(p->ev, 0, NULL);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

/* Takes 3 ms per event, to leave events in flight when killed. */
static void on_chaos_event(bus_event_t *ev) {
    pending_event_t *p = malloc(sizeof *p);
    p->ev = ev;
    uv_timer_init(bus_worker_loop(bus_event_worker(ev)), &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_event_timer, 3, 0);
}

static const bus_method_t methods[] = {{"slow", bt_method_slow}, {NULL, NULL}};
static const bus_subscription_t subs[] = {{"chaos.#", on_chaos_event}, {NULL, NULL}};
static const bus_worker_def_t chaos = {.service = "chaos", .summary = "chaos test worker", .methods = methods,
                                       .subscriptions = subs};
static const char *worker_env[] = {"BUS_PREFETCH=32", "BUS_HEARTBEAT_S=2", NULL};

typedef struct {
    int answered, ok, unavailable, other;
    double last_ms;
} tally_t;

static void on_reply(int status, const char *reply, size_t len, void *data) {
    (void)reply;
    (void)len;
    tally_t *t = data;
    t->answered++;
    if (status == 0) t->ok++;
    else if (status == BUS_EUNAVAILABLE) t->unavailable++;
    else t->other++;
    t->last_ms = bt_now_ms();
}

static void test_broker_killed_fails_pending_calls_then_service_resumes(void) {
    pid_t w = bt_spawn_worker(&chaos, worker_env);
    CHECK(bt_wait_ping("chaos", 15000) == 0);
    bt_client_t c;
    bt_client_open(&c);
    tally_t t = {0};
    const char *p = "{\"ms\":8000}";
    bus_rpc_call_opts_t o = {.timeout_ms = 20000};
    for (int i = 0; i < 20; i++) CHECK(bus_rpc_call(c.rpc, "chaos", "slow", p, strlen(p), &o, on_reply, &t) == 0);
    int never = 0;
    bt_run_until(&c, &never, 300);
    CHECK_INT(t.answered, 0);
    double killed_at = bt_now_ms();
    CHECK(bt_servers("kill-rabbit") == 0);
    double end = bt_now_ms() + 5000;
    while (t.answered < 20 && bt_now_ms() < end) bt_run_until(&c, &never, 20);
    CHECK_INT(t.unavailable, 20);                /* every pending call, at once */
    CHECK(t.last_ms - killed_at < 3000);         /* promptly, not at the 20 s timeout */
    CHECK_INT(bus_rpc_call(c.rpc, "chaos", "slow", p, strlen(p), &o, on_reply, &t), BUS_EUNAVAILABLE);
    bt_client_close(&c);
    CHECK(bt_servers("start-rabbit") == 0);
    CHECK(bt_wait_ping("chaos", 30000) == 0);     /* the same worker process serves again */
    CHECK(kill(w, 0) == 0);
    bt_kill(w, SIGKILL);
}

static void test_worker_sigkilled_mid_burst_loses_no_call(void) {
    pid_t a = bt_spawn_worker(&chaos, worker_env);
    pid_t b = bt_spawn_worker(&chaos, worker_env);
    CHECK(bt_wait_ping("chaos", 15000) == 0);
    usleep(300000);
    bt_client_t c;
    bt_client_open(&c);
    tally_t t = {0};
    enum { N = 400 };
    const char *p = "{\"ms\":5}";
    bus_rpc_call_opts_t o = {.timeout_ms = 20000};
    for (int i = 0; i < N; i++) CHECK(bus_rpc_call(c.rpc, "chaos", "slow", p, strlen(p), &o, on_reply, &t) == 0);
    int never = 0;
    while (t.answered < 50) bt_run_until(&c, &never, 5);
    kill(a, SIGKILL); /* its unacked requests go back to the queue, to b */
    double end = bt_now_ms() + 20000;
    while (t.answered < N && bt_now_ms() < end) bt_run_until(&c, &never, 20);
    CHECK_INT(t.answered, N);
    CHECK_INT(t.ok, N);
    bt_client_close(&c);
    bt_kill(a, SIGKILL);
    bt_kill(b, SIGKILL);
}

typedef struct {
    int total;
    char (*ids)[40];
    int cap;
} seen_t;

static void on_seen(bus_msg_t *m, void *data) {
    seen_t *s = data;
    cJSON *doc = cJSON_ParseWithLength(m->body, m->len);
    const cJSON *d = cJSON_GetObjectItem(doc, "data");
    const cJSON *id = cJSON_GetObjectItem(d, "id");
    if (cJSON_IsString(id) && s->total < s->cap) snprintf(s->ids[s->total++], 40, "%s", id->valuestring);
    cJSON_Delete(doc);
    bus_msg_ack(m);
}

static int distinct(seen_t *s) {
    int n = 0;
    for (int i = 0; i < s->total; i++) {
        int dup = 0;
        for (int j = 0; j < i && !dup; j++) dup = strcmp(s->ids[i], s->ids[j]) == 0;
        n += !dup;
    }
    return n;
}

static int published_ok;
static void on_confirm(int status, void *data) {
    (void)data;
    if (status == 0) published_ok++;
}

static void publish_events(bt_client_t *c, int n) {
    published_ok = 0;
    for (int i = 0; i < n; i++) {
        bus_envelope_t env = {0};
        cJSON *d = cJSON_CreateObject();
        cJSON_AddNumberToObject(d, "i", i);
        CHECK(bus_envelope_init(&env, "chaos.tick", "test", NULL, NULL, d) == 0);
        CHECK(bus_event_publish(c->conn, &env, on_confirm, NULL) == 0);
        bus_envelope_clear(&env);
    }
    int never = 0;
    double end = bt_now_ms() + 10000;
    while (published_ok < n && bt_now_ms() < end) bt_run_until(c, &never, 10);
    CHECK_INT(published_ok, n);
}

static void watch_seen(bt_client_t *c, seen_t *s, const char *queue) {
    bus_queue_options_t q = {.durable = 0, .exclusive = 1, .auto_delete = 1};
    CHECK(bus_conn_declare_queue(c->conn, queue, &q) == 0);
    CHECK(bus_conn_bind(c->conn, queue, BUS_EXCHANGE_EVENTS, "chaosseen.handled") == 0);
    CHECK(bus_conn_consume(c->conn, queue, 0, 1, amqp_empty_table, on_seen, s, NULL, 0) == 0);
}

static void test_worker_sigkilled_mid_stream_loses_no_event(void) {
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "events.chaos");
    pid_t a = bt_spawn_worker(&chaos, worker_env);
    CHECK(bt_wait_ping("chaos", 15000) == 0);
    enum { N = 300 };
    static char ids[4 * N][40];
    seen_t s = {0, ids, 4 * N};
    watch_seen(&c, &s, "chaos.seen.1");
    publish_events(&c, N);
    int never = 0;
    while (s.total < 40) bt_run_until(&c, &never, 5);
    kill(a, SIGKILL);
    bt_wait_exit(a, 2000);
    pid_t b = bt_spawn_worker(&chaos, worker_env);
    double end = bt_now_ms() + 30000;
    while (distinct(&s) < N && bt_now_ms() < end) bt_run_until(&c, &never, 50);
    CHECK_INT(distinct(&s), N); /* every event handled; a few twice is at-least-once */
    bt_client_close(&c);
    bt_kill(b, SIGKILL);
}

static void test_events_survive_broker_restart(void) {
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "events.chaos");
    /* the worker declares its queue, then is stopped: events wait in the queue */
    pid_t a = bt_spawn_worker(&chaos, worker_env);
    CHECK(bt_wait_ping("chaos", 15000) == 0);
    bt_kill(a, SIGKILL);
    enum { N = 200 };
    publish_events(&c, N);
    bt_client_close(&c);
    CHECK(bt_servers("stop-rabbit") == 0);
    CHECK(bt_servers("start-rabbit") == 0);
    bt_client_open(&c);
    static char ids[2 * N][40];
    seen_t s = {0, ids, 2 * N};
    watch_seen(&c, &s, "chaos.seen.2");
    pid_t b = bt_spawn_worker(&chaos, worker_env);
    int never = 0;
    double end = bt_now_ms() + 30000;
    while (distinct(&s) < N && bt_now_ms() < end) bt_run_until(&c, &never, 50);
    CHECK_INT(distinct(&s), N);
    bt_client_close(&c);
    bt_kill(b, SIGKILL);
}

/* The broker hangs (SIGSTOP) while 24 MB are published: more than the
 * socket buffers hold, so the client's socket fills. Its loop must keep
 * running (a 5 ms timer keeps firing) rather than wait in a send, and once
 * the broker resumes every message is confirmed and in the queue. */
typedef struct {
    uv_timer_t timer;
    uint64_t last, worst; /* uv_hrtime of the last tick, longest gap (ns) */
} ticker_t;
static void on_tick(uv_timer_t *t) {
    ticker_t *k = t->data;
    uint64_t now = uv_hrtime();
    if (k->last && now - k->last > k->worst) k->worst = now - k->last;
    k->last = now;
}
static int stall_confirmed, stall_failed;
static void on_stall_confirm(int status, void *data) {
    (void)data;
    if (status == 0)
        stall_confirmed++;
    else
        stall_failed++;
}

static void resume_broker(void) { bt_servers("resume-rabbit"); }

static void test_broker_hangs_loop_keeps_running(void) {
    bt_client_t c;
    bt_client_open(&c);
    const char *q = "chaos.stall";
    bus_conn_delete_queue(c.conn, q);
    bus_queue_options_t qo = {.durable = 0};
    CHECK_INT(bus_conn_declare_queue(c.conn, q, &qo), 0);
    enum { N = 1500, SIZE = 16 * 1024 };
    static char body[SIZE];
    memset(body, 'x', sizeof body);
    static ticker_t k;
    memset(&k, 0, sizeof k);
    uv_timer_init(&c.loop, &k.timer);
    k.timer.data = &k;
    uv_timer_start(&k.timer, on_tick, 5, 5);
    atexit(resume_broker); /* also when a CHECK below fails */
    CHECK_INT(bt_servers("pause-rabbit"), 0);
    stall_confirmed = stall_failed = 0;
    for (int i = 0; i < N; i++) {
        bus_publish_t p = {.exchange = "", .routing_key = q, .body = body, .len = sizeof body};
        CHECK_INT(bus_conn_publish(c.conn, &p, on_stall_confirm, NULL), 0);
        if (i % 100 == 99) uv_run(&c.loop, UV_RUN_NOWAIT);
    }
    int never = 0;
    k.last = 0;
    k.worst = 0;
    bt_run_until(&c, &never, 1500); /* the broker is still stopped */
    uint64_t worst_stalled = k.worst;
    int resumed = bt_servers("resume-rabbit");
    double end = bt_now_ms() + 30000;
    while (stall_confirmed + stall_failed < N && bt_now_ms() < end) bt_run_until(&c, &never, 20);
    uv_close((uv_handle_t *)&k.timer, NULL);
    printf("  longest loop gap while the broker hung: %.1f ms; confirmed %d of %d\n", (double)worst_stalled / 1e6,
           stall_confirmed, N);
    CHECK_INT(resumed, 0);
    CHECK(worst_stalled < 200 * 1000000ull);
    CHECK_INT(stall_failed, 0);
    CHECK_INT(stall_confirmed, N);
    uint32_t ready = 0, consumers = 0;
    CHECK_INT(bus_conn_queue_info(c.conn, q, &ready, &consumers), 0);
    CHECK_INT(ready, N);
    bus_conn_delete_queue(c.conn, q);
    bt_client_close(&c);
}

BUS_TESTS({"broker_killed_fails_pending_calls_then_service_resumes",
           test_broker_killed_fails_pending_calls_then_service_resumes, 90},
          {"worker_sigkilled_mid_burst_loses_no_call", test_worker_sigkilled_mid_burst_loses_no_call, 60},
          {"worker_sigkilled_mid_stream_loses_no_event", test_worker_sigkilled_mid_stream_loses_no_event, 60},
          {"events_survive_broker_restart", test_events_survive_broker_restart, 90},
          {"broker_hangs_loop_keeps_running", test_broker_hangs_loop_keeps_running, 60})
