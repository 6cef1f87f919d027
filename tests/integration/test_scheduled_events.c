/* bus-events (scheduled game events) through a real broker and real SQLite
 * stores: every method and its rules (R4/R5 asked of a real bus-alliances,
 * moderators from BUS_EVENTS_MODERATORS), bad input, the scheduler firing on
 * time, recurrence roll-forward, edits re-planning, toggles, deletes, the
 * restart of every process with items due (late ones sent, later ones
 * missed, none twice), the crash between commit and publish (the same event
 * id is published), and the clean-ups (alliance.dissolved, user.forgotten).
 *
 * Each test gets fresh databases ($BUS_TEST_TMPDIR/sev-<test>.db and
 * sev-<test>-alliances.db) and fresh queues; the events bus-events publishes
 * are read from an exclusive queue bound to bus.events with "event.#".
 * The many-process load with SIGKILL is tests/chaos/test_events_chaos.c. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/publish.h"
#include "bus/store.h"
#include "bus/topology.h"

#define MOD "discord:900"

static const char *tmpdir(void) { return getenv("BUS_TEST_TMPDIR") ? getenv("BUS_TEST_TMPDIR") : "/tmp"; }
static const char *build(void) { return getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build"; }

static char db_events[512], db_alliances[512];

static void fresh_db(const char *path) {
    char p[600];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

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

/* One bus-events process on the test's database; extra "NAME=value" env. */
static pid_t start_events(const char *test, int k, const char *extra1, const char *extra2) {
    char store[600], schemas[600], prog[600], log[600];
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s", db_events);
    const char *sd = getenv("BUS_SCHEMAS_DIR");
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", sd ? sd : "schemas");
    snprintf(prog, sizeof prog, "%s/bus-events", build());
    snprintf(log, sizeof log, "%s/sev-%s-%d.log", tmpdir(), test, k);
    const char *env[] = {store,
                         schemas,
                         getenv("SEV_LOG_LEVEL") ? getenv("SEV_LOG_LEVEL") : "BUS_LOG_LEVEL=warn",
                         "BUS_VALIDATE_REPLIES=1",
                         "BUS_EVENTS_MODERATORS=" MOD ",telegram:901",
                         "BUS_EVENTS_LEASE_MS=2000",
                         "BUS_EVENTS_POLL_MS=500",
                         extra1 ? extra1 : "BUS_PREFETCH=64",
                         extra2 ? extra2 : "BUS_PREFETCH=64",
                         NULL};
    char *argv[] = {prog, NULL};
    pid_t pid = bt_spawn_program(argv, env, log);
    CHECK(pid > 0);
    return pid;
}

static pid_t start_alliances(const char *test) {
    char store[600], schemas[600], prog[600], log[600];
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s", db_alliances);
    const char *sd = getenv("BUS_SCHEMAS_DIR");
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", sd ? sd : "schemas");
    snprintf(prog, sizeof prog, "%s/bus-alliances", build());
    snprintf(log, sizeof log, "%s/sev-%s-alliances.log", tmpdir(), test);
    const char *env[] = {store, schemas, "BUS_LOG_LEVEL=warn", NULL};
    char *argv[] = {prog, NULL};
    pid_t pid = bt_spawn_program(argv, env, log);
    CHECK(pid > 0);
    return pid;
}

/* ---- events seen on bus.events -------------------------------------------------- */

#define MAX_SEEN 2048
typedef struct {
    char type[64];
    char id[40];
    char corr[200];
    cJSON *data;
    int64_t at_ms; /* when it arrived (wall clock) */
} seen_t;
static seen_t seen[MAX_SEEN];
static int nseen;

static void on_event(bus_msg_t *m, void *data) {
    (void)data;
    cJSON *e = cJSON_ParseWithLength(m->body, m->len);
    if (e && nseen < MAX_SEEN) {
        seen_t *s = &seen[nseen++];
        snprintf(s->type, sizeof s->type, "%s", m->routing_key ? m->routing_key : "");
        snprintf(s->id, sizeof s->id, "%s", m->message_id ? m->message_id : "");
        snprintf(s->corr, sizeof s->corr, "%s", m->correlation_id ? m->correlation_id : "");
        s->data = cJSON_DetachItemFromObject(e, "data");
        s->at_ms = wall_ms();
    }
    cJSON_Delete(e);
    bus_msg_ack(m);
}

static void setup(bt_client_t *c) {
    nseen = 0;
    bt_client_open(c);
    bt_delete_queue(c, "rpc.events");
    bt_delete_queue(c, "events.events");
    char q[64];
    snprintf(q, sizeof q, "test.sev.%d", (int)getpid());
    bus_queue_options_t o = {.exclusive = 1, .auto_delete = 1};
    CHECK(bus_conn_declare_queue(c->conn, q, &o) == 0);
    CHECK(bus_conn_bind(c->conn, q, BUS_EXCHANGE_EVENTS, "event.#") == 0);
    CHECK(bus_conn_consume(c->conn, q, 0, 1, amqp_empty_table, on_event, NULL, NULL, 0) == 0);
}

static void dbs(const char *test) {
    snprintf(db_events, sizeof db_events, "%s/sev-%s.db", tmpdir(), test);
    snprintf(db_alliances, sizeof db_alliances, "%s/sev-%s-alliances.db", tmpdir(), test);
    fresh_db(db_events);
    fresh_db(db_alliances);
}

static const char *dstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
static double dnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* Events of `type` about scheduled event `ev` (NULL: any). */
static int count_of(const char *type, const char *ev) {
    int n = 0;
    for (int i = 0; i < nseen; i++)
        if ((!type || strcmp(seen[i].type, type) == 0) && (!ev || (dstr(seen[i].data, "event") && strcmp(dstr(seen[i].data, "event"), ev) == 0)))
            n++;
    return n;
}

static const seen_t *find_seen(const char *type, const char *ev) {
    for (int i = 0; i < nseen; i++)
        if (strcmp(seen[i].type, type) == 0 && strcmp(dstr(seen[i].data, "event") ? dstr(seen[i].data, "event") : "", ev) == 0)
            return &seen[i];
    return NULL;
}

static void wait_count(bt_client_t *c, const char *type, const char *ev, int n, int ms) {
    double end = bt_now_ms() + ms;
    int flag = 0;
    while (count_of(type, ev) < n && bt_now_ms() < end) bt_run_until(c, &flag, 20);
    CHECK_INT(count_of(type, ev), n);
}

static void settle(bt_client_t *c, int ms) {
    int flag = 0;
    bt_run_until(c, &flag, ms);
}

/* ---- calls ---------------------------------------------------------------------- */

typedef struct {
    int done, status;
    cJSON *reply;
} res_t;

static void on_reply(int status, const char *reply, size_t len, void *data) {
    res_t *r = data;
    r->done = 1;
    r->status = status;
    if (reply) r->reply = cJSON_ParseWithLength(reply, len);
}

static cJSON *callf(bt_client_t *c, const char *service, const char *method, const char *fmt, ...) {
    static char params[8000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(params, sizeof params, fmt, ap);
    va_end(ap);
    res_t r = {0};
    bus_rpc_call_opts_t o = {.timeout_ms = 10000};
    CHECK_INT(bus_rpc_call(c->rpc, service, method, params, strlen(params), &o, on_reply, &r), 0);
    bt_run_until(c, &r.done, 15000);
    CHECK_INT(r.status, 0);
    CHECK(r.reply != NULL);
    return r.reply;
}

static const cJSON *ok_data(cJSON *reply) {
    const cJSON *s = cJSON_GetObjectItem(reply, "success");
    if (!cJSON_IsTrue(s)) {
        char *t = cJSON_PrintUnformatted(reply);
        fprintf(stderr, "  expected success, got %s\n", t);
        free(t);
    }
    CHECK(cJSON_IsTrue(s));
    return cJSON_GetObjectItem(reply, "data");
}

static void expect_error(cJSON *reply, const char *code, const char *needle) {
    const char *e = dstr(reply, "error");
    if (!e || strcmp(e, code) != 0) {
        char *t = cJSON_PrintUnformatted(reply);
        fprintf(stderr, "  expected %s, got %s\n", code, t);
        free(t);
    }
    CHECK_STR(e, code);
    if (needle) CHECK_CONTAINS(dstr(reply, "message"), needle);
    cJSON_Delete(reply);
}

/* events.create; returns the new id (static buffer, one of 16). */
static const char *create_ev(bt_client_t *c, const char *fmt, ...) {
    static char ids[16][40];
    static int k;
    char params[4000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(params, sizeof params, fmt, ap);
    va_end(ap);
    cJSON *r = callf(c, "events", "create", "%s", params);
    char *id = ids[k++ % 16];
    snprintf(id, 40, "%s", dstr(ok_data(r), "id"));
    cJSON_Delete(r);
    return id;
}

/* ---- the store, read by the test ---------------------------------------------------- */

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

static void on_store_closed(void *data) { *(int *)data = 1; }

/* Documents of the due-time index (of one event when ev is not NULL). */
static int64_t items_in_store(bt_client_t *c, const char *ev) {
    bus_store_t *s = NULL;
    char url[600], err[256];
    snprintf(url, sizeof url, "sqlite:%s", db_events);
    CHECK_INT(bus_store_open(&c->loop, url, &s, err, sizeof err), 0);
    static const char *const idx[] = {"due_at", "event", NULL};
    CHECK_INT(bus_store_declare(s, "reminders", idx, NULL, err, sizeof err), 0);
    cJSON *where = cJSON_CreateObject();
    if (ev) cJSON_AddStringToObject(where, "event", ev);
    count_t k = {0};
    CHECK_INT(bus_store_count(s, "reminders", where, on_count, &k), 0);
    cJSON_Delete(where);
    bt_run_until(c, &k.done, 5000);
    CHECK_INT(k.status, 0);
    int closed = 0;
    bus_store_close(s, on_store_closed, &closed);
    bt_run_until(c, &closed, 5000);
    return k.count;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_methods_and_permissions(void) {
    bt_client_t c;
    dbs("methods");
    setup(&c);
    pid_t al = start_alliances("methods");
    pid_t w = start_events("methods", 0, NULL, NULL);
    CHECK(bt_wait_ping("alliances", 15000) == 0);
    CHECK(bt_wait_ping("events", 15000) == 0);

    /* an alliance: discord:10 R5, discord:11 R4, discord:12 R1; discord:20 elsewhere */
    cJSON *r = callf(&c, "alliances", "create", "{\"name\":\"Frost\",\"tag\":\"FRO\",\"state\":245,\"leader\":\"discord:10\"}");
    char al_id[40];
    snprintf(al_id, sizeof al_id, "%s", dstr(ok_data(r), "id"));
    cJSON_Delete(r);
    for (int u = 11; u <= 12; u++) {
        r = callf(&c, "alliances", "join", "{\"id\":\"%s\",\"user\":\"discord:%d\"}", al_id, u);
        ok_data(r);
        cJSON_Delete(r);
    }
    r = callf(&c, "alliances", "set_rank", "{\"actor\":\"discord:10\",\"user\":\"discord:11\",\"rank\":\"R4\"}");
    ok_data(r);
    cJSON_Delete(r);
    r = callf(&c, "alliances", "create", "{\"name\":\"Other\",\"tag\":\"OTH\",\"state\":245,\"leader\":\"discord:20\"}");
    ok_data(r);
    cJSON_Delete(r);

    char start[40];
    fmt_time(wall_ms() + 3 * 3600 * 1000, start, sizeof start);
    /* R5 and R4 may; the defaults come from the kind */
    r = callf(&c, "events", "create",
              "{\"actor\":\"discord:10\",\"alliance\":\"%s\",\"kind\":\"bear_trap\",\"starts_at\":\"%s\","
              "\"recurrence\":\"every_2_days\",\"channel_hint\":\"#bear\"}",
              al_id, start);
    const cJSON *d = ok_data(r);
    char ev1[40];
    snprintf(ev1, sizeof ev1, "%s", dstr(d, "id"));
    CHECK_STR(dstr(d, "name"), "Bear Trap");
    CHECK_INT(dnum(d, "duration_min"), 30);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(d, "reminders")), 4);
    CHECK_STR(dstr(d, "starts_at"), start);
    CHECK_STR(dstr(d, "language"), "en");
    CHECK_STR(dstr(d, "channel_hint"), "#bear");
    CHECK_STR(dstr(d, "created_by"), "discord:10");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(d, "enabled")));
    cJSON_Delete(r);
    /* 4 reminders + started + ended planned in the due-time index */
    CHECK_INT(items_in_store(&c, ev1), 6);
    const char *ev2 = create_ev(&c,
                                "{\"actor\":\"discord:11\",\"alliance\":\"%s\",\"kind\":\"svs\",\"name\":\"SvS vs 312\","
                                "\"starts_at\":\"%s\",\"reminders\":[1440,60],\"language\":\"de\"}",
                                al_id, start);
    (void)ev2;
    /* R1, members of other alliances and strangers may not: the rule is named */
    expect_error(callf(&c, "events", "create", "{\"actor\":\"discord:12\",\"alliance\":\"%s\",\"kind\":\"custom\",\"starts_at\":\"%s\"}", al_id, start),
                 "permission_denied", "rule: only the alliance's R4 and R5");
    expect_error(callf(&c, "events", "create", "{\"actor\":\"discord:20\",\"alliance\":\"%s\",\"kind\":\"custom\",\"starts_at\":\"%s\"}", al_id, start),
                 "permission_denied", "is not a member");
    expect_error(callf(&c, "events", "create", "{\"actor\":\"discord:99\",\"alliance\":\"%s\",\"kind\":\"custom\",\"starts_at\":\"%s\"}", al_id, start),
                 "permission_denied", "rule:");
    /* a state's events: moderators only */
    expect_error(callf(&c, "events", "create", "{\"actor\":\"discord:10\",\"state\":245,\"kind\":\"svs\",\"starts_at\":\"%s\"}", start),
                 "permission_denied", "rule: only platform moderators");
    const char *sev = create_ev(&c, "{\"actor\":\"" MOD "\",\"state\":245,\"kind\":\"daily_reset\",\"starts_at\":\"%s\",\"recurrence\":\"daily\",\"reminders\":[]}", start);
    char sev_id[40];
    snprintf(sev_id, sizeof sev_id, "%s", sev);
    /* a moderator may change an alliance's events */
    r = callf(&c, "events", "update", "{\"actor\":\"telegram:901\",\"id\":\"%s\",\"name\":\"Bear 1\",\"reminders\":[30,0]}", ev1);
    d = ok_data(r);
    CHECK_STR(dstr(d, "name"), "Bear 1");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(d, "reminders")), 2);
    cJSON_Delete(r);
    CHECK_INT(items_in_store(&c, ev1), 4); /* re-planned: 2 reminders + started + ended */
    expect_error(callf(&c, "events", "update", "{\"actor\":\"discord:12\",\"id\":\"%s\",\"name\":\"x\"}", ev1),
                 "permission_denied", "rule:");

    /* bad input: clear errors */
    expect_error(callf(&c, "events", "create", "{\"actor\":\"" MOD "\",\"state\":245,\"kind\":\"dragon\",\"starts_at\":\"%s\"}", start), "invalid", "/kind");
    expect_error(callf(&c, "events", "create", "{\"actor\":\"" MOD "\",\"state\":245,\"kind\":\"svs\",\"starts_at\":\"2020-01-01T00:00:00Z\"}"), "invalid", "in the past");
    expect_error(callf(&c, "events", "create", "{\"actor\":\"" MOD "\",\"state\":245,\"kind\":\"svs\",\"starts_at\":\"2030-01-01T00:00:00\"}"), "invalid", "starts_at");
    expect_error(callf(&c, "events", "create", "{\"actor\":\"" MOD "\",\"state\":245,\"alliance\":\"%s\",\"kind\":\"svs\",\"starts_at\":\"%s\"}", al_id, start), "invalid", NULL);
    expect_error(callf(&c, "events", "create", "{\"actor\":\"" MOD "\",\"state\":245,\"kind\":\"svs\",\"starts_at\":\"%s\",\"recurrence\":\"yearly\"}", start), "invalid", "recurrence");
    expect_error(callf(&c, "events", "create", "{\"actor\":\"" MOD "\",\"state\":245,\"kind\":\"svs\",\"starts_at\":\"%s\",\"reminders\":[5,5]}", start), "invalid", "reminders");
    expect_error(callf(&c, "events", "get", "{\"id\":\"00000000-0000-4000-8000-000000000000\"}"), "not_found", "no event");
    expect_error(callf(&c, "events", "get", "{\"id\":\"nope\"}"), "invalid", NULL);

    /* a recurring event whose start is past begins with its next occurrence */
    char past[40], next[40];
    int64_t past_ms = wall_ms() - 3600 * 1000;
    fmt_time(past_ms, past, sizeof past);
    fmt_time(past_ms + 24 * 3600 * 1000, next, sizeof next);
    r = callf(&c, "events", "create", "{\"actor\":\"" MOD "\",\"state\":246,\"kind\":\"custom\",\"starts_at\":\"%s\",\"recurrence\":\"daily\"}", past);
    CHECK_STR(dstr(ok_data(r), "starts_at"), next);
    cJSON_Delete(r);

    /* get, list, upcoming */
    r = callf(&c, "events", "get", "{\"id\":\"%s\"}", ev1);
    CHECK_STR(dstr(ok_data(r), "name"), "Bear 1");
    cJSON_Delete(r);
    r = callf(&c, "events", "list", "{\"alliance\":\"%s\",\"limit\":1}", al_id);
    d = ok_data(r);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(d, "events")), 1);
    const char *cur = dstr(d, "next_cursor");
    CHECK(cur != NULL);
    char cursor[1100];
    snprintf(cursor, sizeof cursor, "%s", cur);
    cJSON_Delete(r);
    r = callf(&c, "events", "list", "{\"alliance\":\"%s\",\"limit\":1,\"cursor\":\"%s\"}", al_id, cursor);
    d = ok_data(r);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(d, "events")), 1);
    cJSON_Delete(r);
    r = callf(&c, "events", "list", "{\"state\":245}");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "events")), 1);
    cJSON_Delete(r);
    /* within 75 h: the every-2-days Bear Trap twice (+3 h, +51 h), SvS once, the daily reset 4 times in state 245 */
    r = callf(&c, "events", "upcoming", "{\"alliance\":\"%s\",\"within_h\":75}", al_id);
    d = ok_data(r);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(d, "occurrences")), 3);
    cJSON_Delete(r);
    r = callf(&c, "events", "upcoming", "{\"state\":245,\"within_h\":75}");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "occurrences")), 4);
    cJSON_Delete(r);

    /* toggle: off drops the plan, twice is harmless, on plans again */
    r = callf(&c, "events", "toggle", "{\"actor\":\"discord:10\",\"id\":\"%s\",\"enabled\":false}", ev1);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(ok_data(r), "enabled")));
    cJSON_Delete(r);
    CHECK_INT(items_in_store(&c, ev1), 0);
    r = callf(&c, "events", "toggle", "{\"actor\":\"discord:10\",\"id\":\"%s\",\"enabled\":false}", ev1);
    ok_data(r);
    cJSON_Delete(r);
    r = callf(&c, "events", "upcoming", "{\"alliance\":\"%s\",\"within_h\":75}", al_id);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "occurrences")), 1);
    cJSON_Delete(r);
    r = callf(&c, "events", "toggle", "{\"actor\":\"discord:10\",\"id\":\"%s\",\"enabled\":true}", ev1);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(ok_data(r), "enabled")));
    cJSON_Delete(r);
    CHECK_INT(items_in_store(&c, ev1), 4);
    /* delete: R1 may not, R5 may; the plan goes with it */
    expect_error(callf(&c, "events", "delete", "{\"actor\":\"discord:12\",\"id\":\"%s\"}", ev1), "permission_denied", "rule:");
    r = callf(&c, "events", "delete", "{\"actor\":\"discord:10\",\"id\":\"%s\"}", ev1);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(ok_data(r), "deleted")));
    cJSON_Delete(r);
    CHECK_INT(items_in_store(&c, ev1), 0);
    expect_error(callf(&c, "events", "get", "{\"id\":\"%s\"}", ev1), "not_found", NULL);
    expect_error(callf(&c, "events", "delete", "{\"actor\":\"discord:10\",\"id\":\"%s\"}", ev1), "not_found", NULL);
    /* nothing fired: every start is hours away */
    CHECK_INT(nseen, 0);

    /* alliances down: unavailable, never a refusal */
    bt_kill(al, SIGKILL);
    bt_delete_queue(&c, "rpc.alliances");
    expect_error(callf(&c, "events", "create", "{\"actor\":\"discord:10\",\"alliance\":\"%s\",\"kind\":\"custom\",\"starts_at\":\"%s\"}", al_id, start),
                 "unavailable", "alliances");
    kill(w, SIGTERM);
    CHECK_INT(bt_wait_exit(w, 10000), 0);
    bt_client_close(&c);
}

/* Reminders, starts and ends fire on time, once; a daily event rolls
 * forward; an edit re-plans; a disabled or deleted event fires nothing. */
static void test_fire_on_time(void) {
    bt_client_t c;
    dbs("fire");
    setup(&c);
    pid_t w1 = start_events("fire", 1, NULL, NULL), w2 = start_events("fire", 2, NULL, NULL);
    CHECK(bt_wait_ping("events", 15000) == 0);
    int64_t t0 = wall_ms();
    char at3[40], at4[40], far[40];
    fmt_time(t0 + 3000, at3, sizeof at3);
    fmt_time(t0 + 4000, at4, sizeof at4);
    fmt_time(t0 + 3600 * 1000, far, sizeof far);
    const char *a = create_ev(&c, "{\"actor\":\"" MOD "\",\"state\":7,\"kind\":\"crazy_joe\",\"starts_at\":\"%s\",\"duration_min\":0,\"reminders\":[0],\"language\":\"ko\"}", at3);
    char ida[40], idb[40], idc[40], idd[40], ide[40];
    snprintf(ida, sizeof ida, "%s", a);
    snprintf(idb, sizeof idb, "%s", create_ev(&c, "{\"actor\":\"" MOD "\",\"state\":7,\"kind\":\"daily_reset\",\"starts_at\":\"%s\",\"recurrence\":\"daily\",\"reminders\":[0]}", at3));
    /* created for an hour from now, then moved to +4 s: only the new plan fires */
    snprintf(idc, sizeof idc, "%s", create_ev(&c, "{\"actor\":\"" MOD "\",\"state\":7,\"kind\":\"custom\",\"name\":\"Moved\",\"starts_at\":\"%s\",\"duration_min\":0,\"reminders\":[0]}", far));
    cJSON *r = callf(&c, "events", "update", "{\"actor\":\"" MOD "\",\"id\":\"%s\",\"starts_at\":\"%s\"}", idc, at4);
    ok_data(r);
    cJSON_Delete(r);
    /* disabled, and deleted, before they are due */
    snprintf(idd, sizeof idd, "%s", create_ev(&c, "{\"actor\":\"" MOD "\",\"state\":7,\"kind\":\"custom\",\"starts_at\":\"%s\",\"duration_min\":0,\"reminders\":[0]}", at3));
    snprintf(ide, sizeof ide, "%s", create_ev(&c, "{\"actor\":\"" MOD "\",\"state\":7,\"kind\":\"custom\",\"starts_at\":\"%s\",\"duration_min\":0,\"reminders\":[0]}", at3));
    r = callf(&c, "events", "toggle", "{\"actor\":\"" MOD "\",\"id\":\"%s\",\"enabled\":false}", idd);
    ok_data(r);
    cJSON_Delete(r);
    r = callf(&c, "events", "delete", "{\"actor\":\"" MOD "\",\"id\":\"%s\"}", ide);
    ok_data(r);
    cJSON_Delete(r);

    wait_count(&c, "event.started", ida, 1, 10000);
    wait_count(&c, "event.started", idb, 1, 10000);
    wait_count(&c, "event.started", idc, 1, 10000);
    settle(&c, 1500); /* anything else would arrive now */
    CHECK_INT(count_of("event.reminder", ida), 1);
    CHECK_INT(count_of("event.reminder", idb), 1);
    CHECK_INT(count_of("event.reminder", idc), 1);
    CHECK_INT(count_of(NULL, idd), 0);
    CHECK_INT(count_of(NULL, ide), 0);
    CHECK_INT(nseen, 6);
    const seen_t *s = find_seen("event.reminder", ida);
    CHECK_STR(dstr(s->data, "kind"), "crazy_joe");
    CHECK_STR(dstr(s->data, "name"), "Crazy Joe");
    CHECK_STR(dstr(s->data, "language"), "ko");
    CHECK_STR(dstr(s->data, "starts_at"), at3);
    CHECK_STR(dstr(s->data, "due_at"), at3);
    CHECK_INT(dnum(s->data, "minutes_left"), 0);
    CHECK_INT(dnum(s->data, "state"), 7);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(s->data, "alliance")));
    CHECK_CONTAINS(s->corr, ida); /* the correlation id names the item */
    CHECK_STR(dstr(find_seen("event.started", idc)->data, "starts_at"), at4);
    CHECK_STR(dstr(find_seen("event.started", idc)->data, "name"), "Moved");
    for (int i = 0; i < nseen; i++) {
        int64_t due = 0;
        const char *dd = dstr(seen[i].data, "due_at");
        CHECK(dd != NULL);
        /* how late it arrived; asserted loosely (a loaded machine), printed exactly */
        char buf[40];
        for (int64_t k = t0 + 2000; k < t0 + 6000 && !due; k++) {
            if (k % 1000 != (t0 + 3000) % 1000) continue;
            fmt_time(k, buf, sizeof buf);
            if (strcmp(buf, dd) == 0) due = k;
        }
        CHECK(due > 0);
        printf("    %-16s due %s, arrived %lld ms late (late_ms %d)\n", seen[i].type, dd, (long long)(seen[i].at_ms - due),
               (int)dnum(seen[i].data, "late_ms"));
        CHECK(seen[i].at_ms - due < 5000);
        CHECK(dnum(seen[i].data, "late_ms") >= 0);
    }
    /* the daily event rolled forward: next occurrence planned, counted */
    char next[40];
    fmt_time(t0 + 3000 + 24 * 3600 * 1000, next, sizeof next);
    r = callf(&c, "events", "get", "{\"id\":\"%s\"}", idb);
    CHECK_STR(dstr(ok_data(r), "starts_at"), next);
    CHECK_INT(dnum(ok_data(r), "occurrence"), 2);
    cJSON_Delete(r);
    CHECK_INT(items_in_store(&c, idb), 2); /* tomorrow's reminder and start */
    CHECK_INT(items_in_store(&c, ida), 0); /* fired items are deleted */
    CHECK_INT(items_in_store(&c, idc), 0); /* the old plan was dropped by the edit */
    kill(w1, SIGTERM);
    kill(w2, SIGTERM);
    CHECK_INT(bt_wait_exit(w1, 10000), 0);
    CHECK_INT(bt_wait_exit(w2, 10000), 0);
    bt_client_close(&c);
}

/* Every process is SIGKILLed with items due, and restarted later: items
 * later than the window (5 s here) are recorded missed, the others sent
 * late saying how late, and nothing is sent twice. */
static void test_restart_late_and_missed(void) {
    bt_client_t c;
    dbs("restart");
    setup(&c);
    pid_t w[2];
    for (int i = 0; i < 2; i++) w[i] = start_events("restart", i, "BUS_EVENTS_LATE_WINDOW_S=5", NULL);
    CHECK(bt_wait_ping("events", 15000) == 0);
    int64_t t0 = wall_ms();
    char at_a[40], at_b[40];
    fmt_time(t0 + 3000, at_a, sizeof at_a);
    fmt_time(t0 + 9000, at_b, sizeof at_b);
    char a[40], b[40];
    snprintf(a, sizeof a, "%s", create_ev(&c, "{\"actor\":\"" MOD "\",\"state\":8,\"kind\":\"foundry_battle\",\"starts_at\":\"%s\",\"duration_min\":0,\"reminders\":[0]}", at_a));
    snprintf(b, sizeof b, "%s", create_ev(&c, "{\"actor\":\"" MOD "\",\"state\":8,\"kind\":\"canyon_clash\",\"starts_at\":\"%s\",\"duration_min\":0,\"reminders\":[0]}", at_b));
    for (int i = 0; i < 2; i++) bt_kill(w[i], SIGKILL);
    CHECK(wall_ms() < t0 + 2500); /* killed before anything was due */
    while (wall_ms() < t0 + 10500) usleep(50 * 1000);
    for (int i = 0; i < 2; i++) w[i] = start_events("restart", 10 + i, "BUS_EVENTS_LATE_WINDOW_S=5", NULL);
    wait_count(&c, "event.reminder.missed", a, 2, 15000);
    wait_count(&c, "event.started", b, 1, 15000);
    settle(&c, 2000);
    CHECK_INT(count_of("event.reminder", a), 0);
    CHECK_INT(count_of("event.started", a), 0);
    CHECK_INT(count_of("event.reminder", b), 1);
    CHECK_INT(count_of("event.reminder.missed", b), 0);
    CHECK_INT(nseen, 4);
    for (int i = 0; i < nseen; i++) {
        int late = (int)dnum(seen[i].data, "late_ms");
        printf("    %-22s %s late_ms %d\n", seen[i].type, dstr(seen[i].data, "what") ? dstr(seen[i].data, "what") : "", late);
        if (strcmp(seen[i].type, "event.reminder.missed") == 0) {
            CHECK(late > 5000);
            CHECK_INT(dnum(seen[i].data, "window_s"), 5);
        } else {
            CHECK(late >= 1000 && late <= 5000);
        }
    }
    const seen_t *m = find_seen("event.reminder.missed", a);
    CHECK(strcmp(dstr(m->data, "what"), "reminder") == 0 || strcmp(dstr(m->data, "what"), "started") == 0);
    CHECK_INT(items_in_store(&c, NULL), 0);
    for (int i = 0; i < 2; i++) kill(w[i], SIGTERM);
    for (int i = 0; i < 2; i++) CHECK_INT(bt_wait_exit(w[i], 10000), 0);
    bt_client_close(&c);
}

/* ---- the crash between commit and publish ------------------------------------------ */

typedef struct {
    int done, status;
} st_t;
static void on_doc(int status, const cJSON *doc, void *data) {
    (void)doc;
    ((st_t *)data)->status = status;
    ((st_t *)data)->done = 1;
}
static void on_st(int status, void *data) {
    ((st_t *)data)->status = status;
    ((st_t *)data)->done = 1;
}

/* What a process leaves behind when it dies after committing a firing and
 * before publishing it: the item marked fired and still claimed (its lease
 * ended), the marker holding the event with its id. A new process must
 * publish exactly that event, with that id, once, and delete the item. */
static void test_crash_after_commit_same_id(void) {
    bt_client_t c;
    dbs("crash");
    setup(&c);
    bus_store_t *s = NULL;
    char url[600], err[256];
    snprintf(url, sizeof url, "sqlite:%s", db_events);
    CHECK_INT(bus_store_open(&c.loop, url, &s, err, sizeof err), 0);
    static const char *const e_idx[] = {"scope,start_ms", "alliance", "created_by", "updated_by", NULL};
    static const char *const i_idx[] = {"due_at", "event", NULL};
    CHECK_INT(bus_store_declare(s, "game_events", e_idx, NULL, err, sizeof err), 0);
    CHECK_INT(bus_store_declare(s, "reminders", i_idx, NULL, err, sizeof err), 0);
    const char *ev = "6f1c1b0e-6c1a-4a53-9a55-1b7f6c0a1e01";
    int64_t now = wall_ms(), start = now - 1500;
    char ts[40], item_id[200], eid[37];
    fmt_time(start, ts, sizeof ts);
    cJSON *e = cJSON_Parse("{\"scope\":\"state:9\",\"alliance\":null,\"state\":9,\"kind\":\"svs\",\"name\":\"SvS\","
                           "\"anchor_day\":1,\"duration_min\":360,\"recurrence\":\"none\",\"reminders\":[0],"
                           "\"language\":\"en\",\"channel_hint\":null,\"enabled\":true,\"gen\":1,\"occurrence\":1}");
    cJSON_AddNumberToObject(e, "start_ms", (double)start);
    st_t k = {0};
    CHECK_INT(bus_store_insert(s, "game_events", ev, e, on_doc, &k), 0);
    bt_run_until(&c, &k.done, 5000);
    CHECK_INT(k.status, 0);
    cJSON_Delete(e);
    snprintf(item_id, sizeof item_id, "%s.1.%lld.r0", ev, (long long)start);
    cJSON *it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "event", ev);
    cJSON_AddNumberToObject(it, "gen", 1);
    cJSON_AddStringToObject(it, "what", "reminder");
    cJSON_AddNumberToObject(it, "offset_min", 0);
    cJSON_AddNumberToObject(it, "occ_ms", (double)start);
    cJSON_AddNumberToObject(it, "at", (double)start);
    cJSON_AddNumberToObject(it, "due_at", (double)(now - 100)); /* the dead claimer's lease ended */
    cJSON_AddStringToObject(it, "claimed_by", "events-dead-process");
    cJSON_AddBoolToObject(it, "fired", 1);
    k.done = 0;
    CHECK_INT(bus_store_insert(s, "reminders", item_id, it, on_doc, &k), 0);
    bt_run_until(&c, &k.done, 5000);
    CHECK_INT(k.status, 0);
    cJSON_Delete(it);
    /* the outbox the dead process committed */
    bus_uuid(eid);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "event", ev);
    cJSON_AddNullToObject(data, "alliance");
    cJSON_AddNumberToObject(data, "state", 9);
    cJSON_AddStringToObject(data, "kind", "svs");
    cJSON_AddStringToObject(data, "name", "SvS");
    cJSON_AddStringToObject(data, "starts_at", ts);
    cJSON_AddStringToObject(data, "ends_at", ts);
    cJSON_AddStringToObject(data, "language", "en");
    cJSON_AddNullToObject(data, "channel_hint");
    cJSON_AddStringToObject(data, "due_at", ts);
    cJSON_AddNumberToObject(data, "late_ms", 3);
    cJSON_AddNumberToObject(data, "minutes_left", 0);
    bus_envelope_t env = {0};
    CHECK_INT(bus_envelope_init(&env, "event.reminder", "bus-events", ev, item_id, data), 0);
    free(env.id);
    env.id = strdup(eid);
    size_t len;
    char *body = bus_envelope_serialize(&env, &len);
    cJSON *outbox = cJSON_CreateObject(), *evs = cJSON_AddArrayToObject(outbox, "events"), *one = cJSON_CreateObject();
    cJSON_AddStringToObject(one, "type", "event.reminder");
    cJSON_AddStringToObject(one, "id", eid);
    cJSON_AddStringToObject(one, "body", body);
    cJSON_AddItemToArray(evs, one);
    free(body);
    bus_envelope_clear(&env);
    k.done = 0;
    CHECK_INT(bus_store_processed_put(s, "events.fire", item_id, outbox, on_st, &k), 0);
    bt_run_until(&c, &k.done, 5000);
    CHECK_INT(k.status, 0);
    cJSON_Delete(outbox);
    int closed = 0;
    bus_store_close(s, on_store_closed, &closed);
    bt_run_until(&c, &closed, 5000);

    pid_t w = start_events("crash", 0, NULL, NULL);
    wait_count(&c, "event.reminder", ev, 1, 15000);
    settle(&c, 1500);
    CHECK_INT(nseen, 1);
    CHECK_STR(seen[0].id, eid); /* the id chosen before the crash */
    CHECK_STR(seen[0].corr, item_id);
    CHECK_INT(dnum(seen[0].data, "late_ms"), 3);
    CHECK_INT(items_in_store(&c, NULL), 0);
    kill(w, SIGTERM);
    CHECK_INT(bt_wait_exit(w, 10000), 0);
    bt_client_close(&c);
}

/* ---- clean-ups ---------------------------------------------------------------------- */

static void publish_event(bt_client_t *c, const char *type, const char *json) {
    bus_envelope_t env = {0};
    CHECK_INT(bus_envelope_init(&env, type, "test", NULL, NULL, cJSON_Parse(json)), 0);
    size_t len;
    char *body = bus_envelope_serialize(&env, &len);
    CHECK_INT(bus_event_publish_body(c->conn, type, env.id, NULL, body, len, NULL, NULL), 0);
    free(body);
    bus_envelope_clear(&env);
}

static int list_size(bt_client_t *c, const char *alliance) {
    cJSON *r = callf(c, "events", "list", "{\"alliance\":\"%s\"}", alliance);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "events"));
    cJSON_Delete(r);
    return n;
}

static void test_cleanups(void) {
    bt_client_t c;
    dbs("cleanup");
    setup(&c);
    pid_t w = start_events("cleanup", 0, NULL, NULL);
    CHECK(bt_wait_ping("events", 15000) == 0);
    const char *x = "7a0c9a3e-1111-4b2a-8c3d-000000000001", *y = "7a0c9a3e-1111-4b2a-8c3d-000000000002";
    char start[40];
    fmt_time(wall_ms() + 2 * 3600 * 1000, start, sizeof start);
    char ex[3][40];
    for (int i = 0; i < 3; i++)
        snprintf(ex[i], 40, "%s", create_ev(&c, "{\"actor\":\"%s\",\"alliance\":\"%s\",\"kind\":\"bear_trap\",\"starts_at\":\"%s\"}",
                                         i == 0 ? "telegram:901" : MOD, i < 2 ? x : y, start));
    CHECK_INT(list_size(&c, x), 2);
    CHECK_INT(items_in_store(&c, ex[0]), 6);
    /* twice: the second finds nothing left to do */
    for (int i = 0; i < 2; i++)
        publish_event(&c, "alliance.dissolved",
                      "{\"alliance\":\"7a0c9a3e-1111-4b2a-8c3d-000000000001\",\"name\":\"Frost\",\"state\":245,"
                      "\"actor\":null,\"reason\":\"empty\",\"members\":[\"discord:10\"]}");
    double end = bt_now_ms() + 10000;
    while (list_size(&c, x) > 0 && bt_now_ms() < end) settle(&c, 100);
    CHECK_INT(list_size(&c, x), 0);
    CHECK_INT(items_in_store(&c, ex[0]), 0);
    CHECK_INT(items_in_store(&c, ex[1]), 0);
    CHECK_INT(list_size(&c, y), 1);
    CHECK_INT(items_in_store(&c, ex[2]), 6);
    /* the user who created Y's event (a moderator) asks to be forgotten */
    char ey[40];
    snprintf(ey, sizeof ey, "%s", create_ev(&c, "{\"actor\":\"telegram:901\",\"alliance\":\"%s\",\"kind\":\"svs\",\"starts_at\":\"%s\"}", y, start));
    publish_event(&c, "user.forgotten", "{\"user\":\"telegram:901\"}");
    end = bt_now_ms() + 10000;
    for (;;) {
        cJSON *r = callf(&c, "events", "get", "{\"id\":\"%s\"}", ey);
        int gone = cJSON_IsNull(cJSON_GetObjectItem(ok_data(r), "created_by"));
        cJSON_Delete(r);
        if (gone || bt_now_ms() > end) break;
        settle(&c, 100);
    }
    cJSON *r = callf(&c, "events", "get", "{\"id\":\"%s\"}", ey);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(ok_data(r), "created_by")));
    CHECK_STR(dstr(ok_data(r), "kind"), "svs"); /* the event stays: it is the alliance's */
    cJSON_Delete(r);
    r = callf(&c, "events", "get", "{\"id\":\"%s\"}", ex[2]);
    CHECK_STR(dstr(ok_data(r), "created_by"), MOD);
    cJSON_Delete(r);
    kill(w, SIGTERM);
    CHECK_INT(bt_wait_exit(w, 10000), 0);
    bt_client_close(&c);
}

/* ---- through the edge ----------------------------------------------------------------- */

typedef struct {
    char buf[16384];
    size_t len;
} http_body_t;

static size_t on_http_body(char *p, size_t sz, size_t n, void *data) {
    http_body_t *b = data;
    size_t k = sz * n;
    if (b->len + k < sizeof b->buf) {
        memcpy(b->buf + b->len, p, k);
        b->len += k;
        b->buf[b->len] = '\0';
    }
    return k;
}

static long http(int port, const char *path, const char *body, http_body_t *out) {
    CURL *h = curl_easy_init();
    CHECK(h != NULL);
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    memset(out, 0, sizeof *out);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    if (body) curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_http_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return status;
}

/* The methods answer on the HTTP edge (POST /api/v1/rpc/events/<method>)
 * with the platform's status codes. */
static void test_through_the_edge(void) {
    char prog[600];
    snprintf(prog, sizeof prog, "%s/bus-gateway", build());
    if (access(prog, X_OK) != 0) {
        fprintf(stderr, "  %s not built: skipped\n", prog);
        return;
    }
    bt_client_t c;
    dbs("edge");
    setup(&c);
    pid_t w = start_events("edge", 0, NULL, NULL);
    CHECK(bt_wait_ping("events", 15000) == 0);
    int port = 26000 + (int)(getpid() % 1000) + 800;
    if (port > 27999) port -= 1000;
    char addr[64], store[600], log[600], schemas[600];
    snprintf(addr, sizeof addr, "BUS_HTTP_ADDR=127.0.0.1:%d", port);
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s/sev-edge-gw.db", tmpdir());
    snprintf(log, sizeof log, "%s/sev-edge-gw.log", tmpdir());
    const char *sd = getenv("BUS_SCHEMAS_DIR");
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", sd ? sd : "schemas");
    const char *env[] = {addr, store, schemas, "BUS_RATE_LIMIT=0", "BUS_LOG_LEVEL=warn", NULL};
    char *argv[] = {prog, NULL};
    pid_t gw = bt_spawn_program(argv, env, log);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    http_body_t b;
    long st = 0;
    for (int i = 0; i < 100 && !st; i++) { /* wait for the edge */
        st = http(port, "/api/v1/health", NULL, &b);
        if (!st) usleep(100000);
    }
    CHECK(st != 0);
    char start[40], body[600];
    fmt_time(wall_ms() + 3 * 3600 * 1000, start, sizeof start);
    snprintf(body, sizeof body, "{\"actor\":\"" MOD "\",\"state\":3,\"kind\":\"svs\",\"starts_at\":\"%s\"}", start);
    CHECK_INT(http(port, "/api/v1/rpc/events/create", body, &b), 200);
    cJSON *r = cJSON_Parse(b.buf);
    char id[40];
    snprintf(id, sizeof id, "%s", dstr(ok_data(r), "id"));
    cJSON_Delete(r);
    snprintf(body, sizeof body, "{\"id\":\"%s\"}", id);
    CHECK_INT(http(port, "/api/v1/rpc/events/get", body, &b), 200);
    CHECK_CONTAINS(b.buf, "\"kind\":\"svs\"");
    snprintf(body, sizeof body, "{\"actor\":\"discord:5\",\"state\":3,\"kind\":\"svs\",\"starts_at\":\"%s\"}", start);
    CHECK_INT(http(port, "/api/v1/rpc/events/create", body, &b), 403);
    CHECK_CONTAINS(b.buf, "rule:");
    CHECK_INT(http(port, "/api/v1/rpc/events/upcoming", "{\"state\":3}", &b), 422);
    CHECK_CONTAINS(b.buf, "within_h");
    CHECK_INT(http(port, "/api/v1/rpc/events/get", "{\"id\":\"00000000-0000-4000-8000-000000000000\"}", &b), 404);
    curl_global_cleanup();
    bt_kill(gw, SIGTERM);
    kill(w, SIGTERM);
    CHECK_INT(bt_wait_exit(w, 10000), 0);
    bt_client_close(&c);
}

BUS_TESTS({"methods_and_permissions", test_methods_and_permissions, 60}, {"fire_on_time", test_fire_on_time, 40},
          {"restart_late_and_missed", test_restart_late_and_missed, 60},
          {"crash_after_commit_same_id", test_crash_after_commit_same_id, 40}, {"cleanups", test_cleanups, 40},
          {"through_the_edge", test_through_the_edge, 40})
