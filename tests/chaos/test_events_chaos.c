/* Chaos for the scheduler of bus-events: 3 processes on one SQLite store,
 * 10,000 reminders due within the same 30 s (EVENTS_CHAOS_N, EVENTS_CHAOS_SPREAD_S
 * to change; the issue's "one minute" is EVENTS_CHAOS_SPREAD_S=60), a fifth
 * of them due at the same instant half-way, one process SIGKILLed 150 ms
 * after that burst (with firings in flight: their items come back when the
 * 3 s lease ends). A consumer on bus.events counts: every
 * reminder is published, each under exactly one event id (a redelivery of
 * the same id is counted and printed, never a second id), none unknown, and
 * the due-time index is empty at the end. Lateness (arrival minus due time)
 * p50/p99/max is printed.
 *
 * The plan is written straight into the store before the processes start
 * (1 event : 10 items, the documents bus-events itself writes, store.c):
 * creating 10,000 reminders through RPC is measured by the bench
 * (tests/bench/bench_events.c), this test is about firing them. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/store.h"
#include "bus/topology.h"

static const char *tmpdir(void) { return getenv("BUS_TEST_TMPDIR") ? getenv("BUS_TEST_TMPDIR") : "/tmp"; }

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

static char db[512];

static pid_t start_events(int k) {
    char store[600], schemas[600], prog[600], log[600];
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s", db);
    const char *sd = getenv("BUS_SCHEMAS_DIR");
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", sd ? sd : "schemas");
    snprintf(prog, sizeof prog, "%s/bus-events", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    snprintf(log, sizeof log, "%s/events-chaos-%d.log", tmpdir(), k);
    const char *env[] = {store, schemas, "BUS_LOG_LEVEL=warn", "BUS_EVENTS_LEASE_MS=3000", "BUS_EVENTS_POLL_MS=500",
                         NULL};
    char *argv[] = {prog, NULL};
    pid_t pid = bt_spawn_program(argv, env, log);
    CHECK(pid > 0);
    return pid;
}

/* ---- the plan ------------------------------------------------------------------ */

typedef struct {
    char id[120];
    int64_t at;
} planned_t;

static planned_t *plan;
static int nplan;

typedef struct {
    int done, status;
} st_t;

static void on_batch(int status, long failed, const int64_t *versions, void *data) {
    (void)failed;
    (void)versions;
    ((st_t *)data)->status = status;
    ((st_t *)data)->done = 1;
}

static void on_closed(void *data) { *(int *)data = 1; }

static void write_plan(bt_client_t *c, int n, int64_t first_at, int64_t spread_ms) {
    bus_store_t *s = NULL;
    char url[600], err[256];
    snprintf(url, sizeof url, "sqlite:%s?sync=normal", db);
    CHECK_INT(bus_store_open(&c->loop, url, &s, err, sizeof err), 0);
    static const char *const e_idx[] = {"scope,start_ms", "alliance", "created_by", "updated_by", NULL};
    static const char *const i_idx[] = {"due_at", "event", NULL};
    CHECK_INT(bus_store_declare(s, "game_events", e_idx, NULL, err, sizeof err), 0);
    CHECK_INT(bus_store_declare(s, "reminders", i_idx, NULL, err, sizeof err), 0);
    int nev = (n + 9) / 10;
    char (*evid)[37] = calloc((size_t)nev, 37);
    plan = calloc((size_t)n, sizeof *plan);
    nplan = n;
    bus_store_op_t ops[64];
    cJSON *docs[64];
    int k = 0;
    /* events first, then items, 64 operations per batch */
    for (int i = 0; i < nev + n; i++) {
        cJSON *d;
        if (i < nev) {
            bus_uuid(evid[i]);
            d = cJSON_Parse("{\"alliance\":null,\"kind\":\"bear_trap\",\"name\":\"Bear Trap\",\"anchor_day\":1,"
                            "\"duration_min\":0,\"recurrence\":\"none\",\"reminders\":[],\"language\":\"en\","
                            "\"channel_hint\":null,\"enabled\":true,\"gen\":1,\"occurrence\":1}");
            cJSON_AddStringToObject(d, "scope", "state:77");
            cJSON_AddNumberToObject(d, "state", 77);
            cJSON_AddNumberToObject(d, "start_ms", (double)(first_at + spread_ms + 3600 * 1000));
            ops[k] = (bus_store_op_t){.kind = BUS_STORE_OP_INSERT, .coll = "game_events", .id = evid[i], .doc = d};
        } else {
            int j = i - nev, e = j % nev, off = j / nev;
            /* uniform over the window, but every 5th one due at once half-way: a
             * burst that leaves every process with firings in flight when one
             * is killed right after it */
            int64_t at = j % 5 == 0 ? first_at + spread_ms / 2 : first_at + (int64_t)j * spread_ms / n;
            int64_t occ = at + (int64_t)off * 60000;
            planned_t *p = &plan[j];
            snprintf(p->id, sizeof p->id, "%s.1.%lld.r%d", evid[e], (long long)occ, off);
            p->at = at;
            d = cJSON_CreateObject();
            cJSON_AddStringToObject(d, "event", evid[e]);
            cJSON_AddNumberToObject(d, "gen", 1);
            cJSON_AddStringToObject(d, "what", "reminder");
            cJSON_AddNumberToObject(d, "offset_min", off);
            cJSON_AddNumberToObject(d, "occ_ms", (double)occ);
            cJSON_AddNumberToObject(d, "at", (double)at);
            cJSON_AddNumberToObject(d, "due_at", (double)at);
            ops[k] = (bus_store_op_t){.kind = BUS_STORE_OP_INSERT, .coll = "reminders", .id = p->id, .doc = d};
        }
        docs[k++] = d;
        if (k == 64 || i == nev + n - 1) {
            st_t st = {0};
            CHECK_INT(bus_store_batch(s, ops, (size_t)k, on_batch, &st), 0);
            bt_run_until(c, &st.done, 30000);
            CHECK_INT(st.status, 0);
            for (int m = 0; m < k; m++) cJSON_Delete(docs[m]);
            k = 0;
        }
    }
    free(evid);
    int closed = 0;
    bus_store_close(s, on_closed, &closed);
    bt_run_until(c, &closed, 5000);
}

static int64_t items_left(bt_client_t *c);

/* ---- what the consumer saw ------------------------------------------------------------ */

typedef struct {
    char corr[120];
    char id[40];
    char type[32];
    int64_t arrived;
} got_t;

static got_t *got;
static int ngot, maxgot;

static void on_event(bus_msg_t *m, void *data) {
    (void)data;
    if (ngot < maxgot) {
        got_t *g = &got[ngot++];
        snprintf(g->corr, sizeof g->corr, "%s", m->correlation_id ? m->correlation_id : "");
        snprintf(g->id, sizeof g->id, "%s", m->message_id ? m->message_id : "");
        snprintf(g->type, sizeof g->type, "%s", m->routing_key ? m->routing_key : "");
        g->arrived = wall_ms();
    }
    bus_msg_ack(m);
}

static int by_corr(const void *a, const void *b) {
    const got_t *x = a, *y = b;
    int c = strcmp(x->corr, y->corr);
    return c ? c : strcmp(x->id, y->id);
}
static int by_id(const void *a, const void *b) { return strcmp(((const planned_t *)a)->id, ((const planned_t *)b)->id); }
static int by_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* sig: SIGKILL (the process dies with firings in flight) or SIGTERM (it
 * drains: finishes what it claimed, claims nothing new, exits 0). */
static void run_many_due(int n, int spread_s, int sig) {
    snprintf(db, sizeof db, "%s/events-chaos.db", tmpdir());
    char p[600];
    unlink(db);
    snprintf(p, sizeof p, "%s-wal", db);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", db);
    unlink(p);
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "rpc.events");
    bt_delete_queue(&c, "events.events");
    maxgot = 2 * n + 100;
    got = calloc((size_t)maxgot, sizeof *got);
    char q[64];
    snprintf(q, sizeof q, "test.events.chaos.%d", (int)getpid());
    bus_queue_options_t o = {.exclusive = 1, .auto_delete = 1};
    CHECK(bus_conn_declare_queue(c.conn, q, &o) == 0);
    CHECK(bus_conn_bind(c.conn, q, BUS_EXCHANGE_EVENTS, "event.#") == 0);
    CHECK(bus_conn_consume(c.conn, q, 0, 1, amqp_empty_table, on_event, NULL, NULL, 0) == 0);

    double t_plan = bt_now_ms();
    int64_t first_at = wall_ms() + 5000 + n / 2; /* writing the plan and starting the processes come first */
    write_plan(&c, n, first_at, (int64_t)spread_s * 1000);
    printf("    %d reminders due from +%lld ms over %d s written in %.0f ms\n", n, (long long)(first_at - wall_ms()),
           spread_s, bt_now_ms() - t_plan);
    if (wall_ms() > first_at - 2000) /* a loaded machine: the first ones are due before the processes are up */
        printf("    (writing the plan was slow: the first reminders are due before the processes are up)\n");
    pid_t w[3];
    for (int i = 0; i < 3; i++) w[i] = start_events(i);
    int64_t kill_at = first_at + (int64_t)spread_s * 500 + 150; /* just after the burst */
    int killed = 0, flag = 0;
    int64_t deadline = first_at + (int64_t)spread_s * 1000 + 30000;
    int distinct = 0;
    while (wall_ms() < deadline) {
        bt_run_until(&c, &flag, 50);
        if (!killed && wall_ms() >= kill_at) {
            if (sig == SIGKILL) {
                bt_kill(w[1], SIGKILL);
            } else {
                kill(w[1], SIGTERM);
                CHECK_INT(bt_wait_exit(w[1], 15000), 0); /* drained and exited cleanly */
            }
            killed = 1;
            printf("    %s one process at +%lld ms into the window (%d events seen so far)\n",
                   sig == SIGKILL ? "SIGKILLed" : "SIGTERMed (drained, exit 0)", (long long)(wall_ms() - first_at), ngot);
        }
        if (killed && ngot >= n) {
            /* count distinct items so far */
            qsort(got, (size_t)ngot, sizeof *got, by_corr);
            distinct = 0;
            for (int i = 0; i < ngot; i++) distinct += i == 0 || strcmp(got[i].corr, got[i - 1].corr) != 0;
            if (distinct >= n) break;
        }
    }
    bt_run_until(&c, &flag, 2500); /* a duplicate would arrive now */
    qsort(got, (size_t)ngot, sizeof *got, by_corr);
    qsort(plan, (size_t)nplan, sizeof *plan, by_id);
    int64_t *late = calloc((size_t)n + 1, sizeof *late);
    int nlate = 0, same_id_again = 0, second_id = 0, unknown = 0, missed = 0, over1s = 0, after_lease = 0;
    distinct = 0;
    int pi = 0;
    for (int i = 0; i < ngot; i++) {
        if (strcmp(got[i].type, "event.reminder") != 0) missed++;
        if (i > 0 && strcmp(got[i].corr, got[i - 1].corr) == 0) {
            if (strcmp(got[i].id, got[i - 1].id) == 0)
                same_id_again++;
            else
                second_id++;
            continue;
        }
        distinct++;
        while (pi < nplan && strcmp(plan[pi].id, got[i].corr) < 0) pi++;
        if (pi >= nplan || strcmp(plan[pi].id, got[i].corr) != 0) {
            unknown++;
            continue;
        }
        late[nlate] = got[i].arrived - plan[pi].at;
        over1s += late[nlate] > 1000;
        after_lease += late[nlate] >= 3000 && plan[pi].at == first_at + (int64_t)spread_s * 500;
        nlate++;
    }
    qsort(late, (size_t)nlate, sizeof *late, by_i64);
    printf("    published %d, distinct reminders %d of %d, same id again %d, second id %d, unknown %d, not "
           "event.reminder %d\n",
           ngot, distinct, n, same_id_again, second_id, unknown, missed);
    if (nlate > 0)
        printf("    lateness (arrival - due): p50 %lld ms, p99 %lld ms, max %lld ms; %d later than 1 s (a fifth "
               "of them come due at one instant)\n",
               (long long)late[nlate / 2], (long long)late[nlate * 99 / 100], (long long)late[nlate - 1], over1s);
    printf("    %d of the burst arrived 3 s (the lease) or more late: those the killed process had claimed, and any "
           "the survivors had not reached by then\n",
           after_lease);
    CHECK_INT(distinct, n);
    CHECK_INT(second_id, 0);
    CHECK_INT(unknown, 0);
    CHECK_INT(missed, 0);
    CHECK_INT(items_left(&c), 0);
    for (int i = 0; i < 3; i++)
        if (i != 1) kill(w[i], SIGTERM);
    for (int i = 0; i < 3; i++)
        if (i != 1) CHECK_INT(bt_wait_exit(w[i], 15000), 0);
    free(late);
    free(got);
    free(plan);
    bt_client_close(&c);
}

typedef struct {
    int done, status;
    int64_t count;
} count_t;
static void on_count(int status, int64_t count, void *data) {
    count_t *k = data;
    k->status = status;
    k->count = count;
    k->done = 1;
}

static int64_t items_left(bt_client_t *c) {
    bus_store_t *s = NULL;
    char url[600], err[256];
    snprintf(url, sizeof url, "sqlite:%s", db);
    CHECK_INT(bus_store_open(&c->loop, url, &s, err, sizeof err), 0);
    static const char *const i_idx[] = {"due_at", "event", NULL};
    CHECK_INT(bus_store_declare(s, "reminders", i_idx, NULL, err, sizeof err), 0);
    count_t k = {0};
    CHECK_INT(bus_store_count(s, "reminders", NULL, on_count, &k), 0);
    bt_run_until(c, &k.done, 5000);
    CHECK_INT(k.status, 0);
    int closed = 0;
    bus_store_close(s, on_closed, &closed);
    bt_run_until(c, &closed, 5000);
    return k.count;
}

static void test_many_due_three_processes_one_killed(void) {
    run_many_due(env_int("EVENTS_CHAOS_N", 10000), env_int("EVENTS_CHAOS_SPREAD_S", 30), SIGKILL);
}

/* SIGTERM in the middle of a burst: the drain waits for what the process
 * claimed, it starts no new round, and the others fire the rest. */
static void test_sigterm_drains(void) { run_many_due(2000, 4, SIGTERM); }

BUS_TESTS({"many_due_three_processes_one_killed", test_many_due_three_processes_one_killed, 150},
          {"sigterm_drains", test_sigterm_drains, 60})
