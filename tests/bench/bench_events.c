/* bench_events: the scheduler of bus-events, through libbus's RPC client and
 * a consumer on bus.events.
 *
 *   bench_events --reminders N [--inflight 64] [--spread-s 10]
 *   name=events reminders=N creates=... create_rps=... fired=... missing=... twice=...
 *        late_p50_ms=... late_p99_ms=... late_max_ms=...
 *
 * Phase 1, scheduling throughput: N/2 events.create calls (a moderator's
 * state events, reminders [0], duration 0: 2 items each, a reminder and a
 * start) at --inflight in flight, due a day from now: creates per second.
 * Phase 2, firing: N/2 more creates whose 2 items come due spread over
 * --spread-s seconds, starting once they are all created (the time is
 * estimated from phase 1), while the index also holds phase 1's N items;
 * every event.reminder / event.started is counted once by its
 * correlation id (the item) and its lateness is arrival minus due time.
 * `missing` items never arrived within 30 s of the last due time; `twice`
 * arrived under a second event id (must be 0). The bus-events processes
 * run beside it (tests/bench/run.sh starts them with
 * BUS_EVENTS_MODERATORS=discord:1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus/conn.h"
#include "bus/log.h"
#include "bus/rpc.h"
#include "bus/topology.h"

typedef struct {
    bus_rpc_client_t *rpc;
    int total, started, done, inflight_now, errors, refused;
    int64_t first_at, spread_ms; /* phase 2; 0 in phase 1 */
    int64_t *due;                /* per item index (phase 2) */
} bench_t;

typedef struct {
    char corr[128];
    char id[40];
    int64_t arrived;
} got_t;

static got_t *got;
static int ngot, maxgot;

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fmt_time(int64_t ms, char *out, size_t len) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    snprintf(out, len, "%.30s", tmp);
}

static int64_t parse_time(const char *s) {
    struct tm tm = {0};
    int ms = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

static void start_create(bench_t *b);

static void on_created(int status, const char *reply, size_t len, void *data) {
    bench_t *b = data;
    b->inflight_now--;
    b->done++;
    if (status != 0)
        b->errors++;
    else if (!memmem(reply, len, "\"success\":true", 14) && b->refused++ < 3)
        fprintf(stderr, "bench_events: refused: %.*s\n", (int)len, reply);
    if (b->started < b->total) start_create(b);
}

static void start_create(bench_t *b) {
    int i = b->started++;
    char at[40], params[300];
    int64_t due = b->first_at ? b->first_at + (int64_t)i * b->spread_ms / b->total : wall_ms() + 24 * 3600 * 1000;
    fmt_time(due, at, sizeof at);
    int n = snprintf(params, sizeof params,
                     "{\"actor\":\"discord:1\",\"state\":%d,\"kind\":\"bear_trap\",\"starts_at\":\"%s\","
                     "\"duration_min\":0,\"reminders\":[0]}",
                     1 + i % 999, at);
    bus_rpc_call_opts_t o = {.timeout_ms = 60000};
    if (bus_rpc_call(b->rpc, "events", "create", params, (size_t)n, &o, on_created, b) != 0) {
        b->errors++;
        b->done++;
        return;
    }
    b->inflight_now++;
}

static void on_event(bus_msg_t *m, void *data) {
    (void)data;
    if (ngot < maxgot) {
        got_t *g = &got[ngot];
        const char *p = memmem(m->body, m->len, "\"due_at\":\"", 10);
        snprintf(g->corr, sizeof g->corr, "%s", m->correlation_id ? m->correlation_id : "");
        snprintf(g->id, sizeof g->id, "%s", m->message_id ? m->message_id : "");
        g->arrived = wall_ms() - (p ? parse_time(p + 10) : 0); /* lateness */
        if (p) ngot++;
    }
    bus_msg_ack(m);
}

static int by_corr(const void *a, const void *b) {
    const got_t *x = a, *y = b;
    int c = strcmp(x->corr, y->corr);
    return c ? c : strcmp(x->id, y->id);
}
static int cmp64(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;
    return a < c ? -1 : a > c;
}

static void run_creates(uv_loop_t *loop, bench_t *b, int inflight) {
    b->started = b->done = 0;
    for (int i = 0; i < inflight && b->started < b->total; i++) start_create(b);
    while (b->done < b->total) uv_run(loop, UV_RUN_ONCE);
}

int main(int argc, char **argv) {
    int reminders = 1000, inflight = 64;
    double spread_s = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--reminders")) reminders = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--inflight")) inflight = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--spread-s")) spread_s = atof(argv[i + 1]);
    }
    if (reminders < 2 || inflight < 1) {
        fprintf(stderr, "bench_events: --reminders >= 2, --inflight >= 1\n");
        return 2;
    }
    bus_log_init("bench_events", NULL, BUS_LOG_WARN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *url = getenv("BUS_AMQP_URL");
    bus_conn_options_t o = {.url = url ? url : "amqp://guest:guest@127.0.0.1:5672/", .name = "bench_events"};
    bus_conn_t *conn;
    char err[256];
    static bench_t b;
    if (bus_conn_new(&loop, &o, &conn, err, sizeof err) != 0 || bus_rpc_client_new(conn, 60000, &b.rpc) != 0 ||
        bus_conn_connect_now(conn, err, sizeof err) != 0) {
        fprintf(stderr, "bench_events: %s\n", err);
        return 1;
    }
    int items = reminders, creates = reminders / 2;
    maxgot = 2 * items + 16;
    got = calloc((size_t)maxgot, sizeof *got);
    char q[64];
    snprintf(q, sizeof q, "bench.events.%d", (int)getpid());
    bus_queue_options_t qo = {.exclusive = 1, .auto_delete = 1};
    if (bus_conn_declare_queue(conn, q, &qo) != 0 || bus_conn_bind(conn, q, BUS_EXCHANGE_EVENTS, "event.#") != 0 ||
        bus_conn_consume(conn, q, 0, 1, amqp_empty_table, on_event, NULL, NULL, 0) != 0) {
        fprintf(stderr, "bench_events: cannot consume bus.events\n");
        return 1;
    }

    /* phase 1: creates per second */
    b.total = creates;
    uint64_t t0 = uv_hrtime();
    run_creates(&loop, &b, inflight);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    double rps = creates / secs;

    /* phase 2: the same number again, due right after they are all created */
    int errors1 = b.errors;
    b.spread_ms = (int64_t)(spread_s * 1000);
    b.first_at = wall_ms() + (int64_t)(creates / rps * 1000 * 1.5) + 2000;
    run_creates(&loop, &b, inflight);
    int64_t last_due = b.first_at + b.spread_ms;
    int head_start = (int)(b.first_at - wall_ms());
    while (wall_ms() < last_due + 30000 && ngot < items) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    int64_t settle_until = wall_ms() + 1500;
    while (wall_ms() < settle_until) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    qsort(got, (size_t)ngot, sizeof *got, by_corr);
    int64_t *late = calloc((size_t)ngot + 1, sizeof *late);
    int distinct = 0, twice = 0;
    for (int i = 0; i < ngot; i++) {
        if (i > 0 && strcmp(got[i].corr, got[i - 1].corr) == 0) {
            twice += strcmp(got[i].id, got[i - 1].id) != 0;
            continue;
        }
        late[distinct++] = got[i].arrived;
    }
    qsort(late, (size_t)distinct, sizeof *late, cmp64);
    printf("name=events reminders=%d creates=%d create_rps=%.0f fired=%d missing=%d twice=%d late_p50_ms=%lld "
           "late_p99_ms=%lld late_max_ms=%lld head_start_ms=%d errors=%d refused=%d\n",
           items, creates, rps, distinct, items - distinct, twice, distinct ? (long long)late[distinct / 2] : -1,
           distinct ? (long long)late[(size_t)((distinct - 1) * 0.99)] : -1,
           distinct ? (long long)late[distinct - 1] : -1, head_start, errors1 + b.errors, b.refused);
    free(late);
    free(got);
    bus_rpc_client_free(b.rpc);
    bus_conn_close(conn, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    return distinct == items && !twice && !b.errors && !b.refused ? 0 : 1;
}
