/* bus-alliances through a real broker and a real SQLite store: every method
 * and rule, the events with their correlation ids, succession, user.forgotten,
 * exactly-once on redelivery (same message id twice; SIGKILL mid-burst and
 * restart), and two worker processes racing on one alliance.
 *
 * Each test gets a fresh database ($BUS_TEST_TMPDIR/alliances-<test>.db) and
 * fresh queues; the events the worker publishes are read from an exclusive
 * queue bound to bus.events with "alliance.#". */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/publish.h"
#include "bus/topology.h"

/* ---- the worker ------------------------------------------------------------ */

static char db_path[512];

static const char *tmpdir(void) { return getenv("BUS_TEST_TMPDIR") ? getenv("BUS_TEST_TMPDIR") : "/tmp"; }

static pid_t start_worker(const char *test, int fresh) {
    static char store[600], schemas[600], prog[600], log[600];
    snprintf(db_path, sizeof db_path, "%s/alliances-%s.db", tmpdir(), test);
    if (fresh) {
        char p[600];
        unlink(db_path);
        snprintf(p, sizeof p, "%s-wal", db_path);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", db_path);
        unlink(p);
    }
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s", db_path);
    const char *sd = getenv("BUS_SCHEMAS_DIR");
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", sd ? sd : "schemas");
    snprintf(prog, sizeof prog, "%s/bus-alliances", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    snprintf(log, sizeof log, "%s/alliances-%s.log", tmpdir(), test);
    const char *env[] = {store, schemas, "BUS_LOG_LEVEL=warn", "BUS_VALIDATE_REPLIES=1", "BUS_PREFETCH=64", NULL};
    char *argv[] = {prog, NULL};
    pid_t pid = bt_spawn_program(argv, env, log);
    CHECK(pid > 0);
    return pid;
}

/* ---- events seen on bus.events ---------------------------------------------- */

#define MAX_SEEN 4096
typedef struct {
    char type[64];
    char id[40];
    char corr[128];
    cJSON *data;
} seen_t;
static seen_t seen[MAX_SEEN];
static int nseen;

static void on_event(bus_msg_t *m, void *data) {
    (void)data;
    cJSON *e = cJSON_ParseWithLength(m->body, m->len);
    if (e && nseen < MAX_SEEN) {
        seen_t *s = &seen[nseen++];
        const cJSON *t = cJSON_GetObjectItem(e, "type"), *id = cJSON_GetObjectItem(e, "id"),
                    *c = cJSON_GetObjectItem(e, "correlationid");
        snprintf(s->type, sizeof s->type, "%s", cJSON_IsString(t) ? t->valuestring : "");
        snprintf(s->id, sizeof s->id, "%s", cJSON_IsString(id) ? id->valuestring : "");
        snprintf(s->corr, sizeof s->corr, "%s", cJSON_IsString(c) ? c->valuestring : "");
        s->data = cJSON_DetachItemFromObject(e, "data");
        /* the AMQP properties mirror the envelope */
        CHECK_STR(m->message_id, s->id);
        CHECK_STR(m->routing_key, s->type);
    }
    cJSON_Delete(e);
    bus_msg_ack(m);
}

static pid_t setup(bt_client_t *c, const char *test) {
    nseen = 0;
    bt_client_open(c);
    bt_delete_queue(c, "rpc.alliances");
    bt_delete_queue(c, "events.alliances");
    pid_t w = start_worker(test, 1);
    CHECK(bt_wait_ping("alliances", 15000) == 0);
    char q[64];
    snprintf(q, sizeof q, "test.alliances.%d", (int)getpid());
    bus_queue_options_t o = {.exclusive = 1, .auto_delete = 1};
    CHECK(bus_conn_declare_queue(c->conn, q, &o) == 0);
    CHECK(bus_conn_bind(c->conn, q, BUS_EXCHANGE_EVENTS, "alliance.#") == 0);
    CHECK(bus_conn_consume(c->conn, q, 0, 1, amqp_empty_table, on_event, NULL, NULL, 0) == 0);
    return w;
}

static int count_type(const char *type) {
    int n = 0;
    for (int i = 0; i < nseen; i++) n += strcmp(seen[i].type, type) == 0;
    return n;
}

/* Runs the loop until `n` events of `type` (or any type when NULL) arrived. */
static void wait_events(bt_client_t *c, const char *type, int n, int ms) {
    double end = bt_now_ms() + ms;
    int flag = 0;
    while ((type ? count_type(type) : nseen) < n && bt_now_ms() < end) bt_run_until(c, &flag, 20);
    CHECK_INT(type ? count_type(type) : nseen, n);
}

/* Lets late events arrive (to prove there are none). */
static void settle(bt_client_t *c, int ms) {
    int flag = 0;
    bt_run_until(c, &flag, ms);
}

static const seen_t *last_of(const char *type) {
    for (int i = nseen - 1; i >= 0; i--)
        if (strcmp(seen[i].type, type) == 0) return &seen[i];
    return NULL;
}

static const char *dstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
static double dnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* ---- calls ------------------------------------------------------------------------ */

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

static char last_corr[64];

/* Calls alliances.<method> with params from fmt; every call carries its own
 * correlation id (in last_corr). Returns the parsed reply (caller frees). */
static cJSON *call(bt_client_t *c, const char *method, const char *fmt, ...) {
    static char params[20000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(params, sizeof params, fmt, ap);
    va_end(ap);
    static int n;
    snprintf(last_corr, sizeof last_corr, "corr-%d-%d", (int)getpid(), ++n);
    res_t r = {0};
    bus_rpc_call_opts_t o = {.timeout_ms = 10000, .correlation_id = last_corr};
    CHECK_INT(bus_rpc_call(c->rpc, "alliances", method, params, strlen(params), &o, on_reply, &r), 0);
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

/* Checks an error reply's code and that its message contains `needle`. */
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

static void ok(cJSON *reply) {
    ok_data(reply);
    cJSON_Delete(reply);
}

/* Creates an alliance; returns its id (static buffer, one of 8). */
static const char *create(bt_client_t *c, const char *name, int state, const char *leader) {
    static char ids[8][40];
    static int k;
    cJSON *r = call(c, "create", "{\"name\":\"%s\",\"tag\":\"TAG\",\"state\":%d,\"leader\":\"%s\"}", name, state,
                    leader);
    const cJSON *d = ok_data(r);
    char *id = ids[k++ % 8];
    snprintf(id, 40, "%s", dstr(d, "id"));
    cJSON_Delete(r);
    return id;
}

static void join(bt_client_t *c, const char *id, const char *user) {
    ok(call(c, "join", "{\"id\":\"%s\",\"user\":\"%s\"}", id, user));
}

static void set_rank(bt_client_t *c, const char *actor, const char *user, const char *rank) {
    ok(call(c, "set_rank", "{\"actor\":\"%s\",\"user\":\"%s\",\"rank\":\"%s\"}", actor, user, rank));
}

static const char *rank_of(bt_client_t *c, const char *user) {
    static char rank[8];
    cJSON *r = call(c, "member", "{\"user\":\"%s\"}", user);
    const cJSON *d = cJSON_GetObjectItem(r, "data");
    snprintf(rank, sizeof rank, "%s", d && dstr(d, "rank") ? dstr(d, "rank") : "none");
    cJSON_Delete(r);
    return rank;
}

/* The alliance's invariants, from get + members: exactly one R5 who is the
 * leader, member_count = the members listed, ranks = their ranks counted. */
static int check_invariants(bt_client_t *c, const char *id) {
    cJSON *g = call(c, "get", "{\"id\":\"%s\"}", id);
    const cJSON *a = ok_data(g);
    cJSON *m = call(c, "members", "{\"id\":\"%s\",\"limit\":100}", id);
    const cJSON *list = cJSON_GetObjectItem(ok_data(m), "members");
    int counts[6] = {0}, n = 0;
    const cJSON *it;
    const char *r5 = NULL;
    cJSON_ArrayForEach(it, list) {
        const char *rk = dstr(it, "rank");
        CHECK(rk && rk[0] == 'R' && rk[1] >= '1' && rk[1] <= '5');
        counts[rk[1] - '0']++;
        if (rk[1] == '5') r5 = dstr(it, "user");
        CHECK_STR(dstr(it, "alliance"), id);
        n++;
    }
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(ok_data(m), "next_cursor")));
    CHECK_INT(counts[5], 1);
    CHECK_STR(dstr(a, "leader"), r5);
    CHECK_INT(dnum(a, "member_count"), n);
    const cJSON *ranks = cJSON_GetObjectItem(a, "ranks");
    for (int r = 1; r <= 5; r++) {
        char k[4] = {'R', (char)('0' + r), 0};
        CHECK_INT(dnum(ranks, k), counts[r]);
    }
    /* members are listed in succession order: R5, then rank, then seniority */
    const cJSON *first = cJSON_GetArrayItem(list, 0);
    CHECK_STR(dstr(first, "rank"), "R5");
    cJSON_Delete(g);
    cJSON_Delete(m);
    return n;
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_create_get_find_list(void) {
    bt_client_t c;
    pid_t w = setup(&c, "crud");
    cJSON *r = call(&c, "create",
                    "{\"name\":\"Frost Wolves\",\"tag\":\"FWo\",\"state\":2630,\"leader\":\"discord:409449988\","
                    "\"language\":\"de\"}");
    const cJSON *a = ok_data(r);
    char id[40], corr[64];
    snprintf(id, sizeof id, "%s", dstr(a, "id"));
    snprintf(corr, sizeof corr, "%s", last_corr);
    CHECK_INT(strlen(id), 36);
    CHECK_STR(dstr(a, "name"), "Frost Wolves");
    CHECK_STR(dstr(a, "tag"), "FWo");
    CHECK_STR(dstr(a, "language"), "de");
    CHECK_STR(dstr(a, "leader"), "discord:409449988");
    CHECK_INT(dnum(a, "state"), 2630);
    CHECK_INT(dnum(a, "member_count"), 1);
    CHECK_INT(dnum(cJSON_GetObjectItem(a, "ranks"), "R5"), 1);
    CHECK(cJSON_GetObjectItem(a, "name_key") == NULL); /* no store-internal fields */
    CHECK(cJSON_GetObjectItem(a, "_v") == NULL);
    cJSON_Delete(r);
    wait_events(&c, "alliance.created", 1, 5000);
    const seen_t *e = last_of("alliance.created");
    CHECK_STR(e->corr, corr);
    CHECK_STR(dstr(e->data, "alliance"), id);
    CHECK_STR(dstr(e->data, "leader"), "discord:409449988");

    r = call(&c, "get", "{\"id\":\"%s\"}", id);
    CHECK_STR(dstr(ok_data(r), "created_at"), dstr(ok_data(r), "created_at"));
    CHECK_STR(dstr(ok_data(r), "id"), id);
    cJSON_Delete(r);
    r = call(&c, "find", "{\"state\":2630,\"name\":\"fROST wOLVES\"}"); /* case-insensitive */
    CHECK_STR(dstr(ok_data(r), "id"), id);
    cJSON_Delete(r);
    expect_error(call(&c, "find", "{\"state\":2631,\"name\":\"Frost Wolves\"}"), "not_found", "no alliance named");
    expect_error(call(&c, "get", "{\"id\":\"00000000-0000-4000-8000-000000000000\"}"), "not_found", "no alliance");
    /* default language */
    const char *b = create(&c, "bravo", 2630, "discord:2");
    r = call(&c, "get", "{\"id\":\"%s\"}", b);
    CHECK_STR(dstr(ok_data(r), "language"), "en");
    cJSON_Delete(r);
    create(&c, "Alpha", 2630, "discord:3");
    create(&c, "charlie", 2630, "discord:4");
    create(&c, "Other state", 7, "discord:5");

    /* list: by name case-insensitively, pages of 2 */
    const char *want[] = {"Alpha", "bravo", "charlie", "Frost Wolves"};
    int got = 0;
    char cursor[1100] = "";
    for (int page = 0; page < 4; page++) {
        if (cursor[0])
            r = call(&c, "list", "{\"state\":2630,\"limit\":2,\"cursor\":\"%s\"}", cursor);
        else
            r = call(&c, "list", "{\"state\":2630,\"limit\":2}");
        const cJSON *d = ok_data(r), *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(d, "alliances")) {
            CHECK(got < 4);
            CHECK_STR(dstr(it, "name"), want[got]);
            got++;
        }
        const char *nc = dstr(d, "next_cursor");
        snprintf(cursor, sizeof cursor, "%s", nc ? nc : "");
        cJSON_Delete(r);
        if (!cursor[0]) break;
    }
    CHECK_INT(got, 4);
    r = call(&c, "list", "{}");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "alliances")), 5);
    cJSON_Delete(r);
    expect_error(call(&c, "list", "{\"cursor\":\"garbage\"}"), "bad_request", "cursor");

    /* conflicts: the name in the same state (any case), a leader already in one */
    expect_error(call(&c, "create", "{\"name\":\"FROST WOLVES\",\"tag\":\"X1\",\"state\":2630,\"leader\":\"discord:9\"}"),
                 "conflict", "already exists in state 2630");
    expect_error(call(&c, "create", "{\"name\":\"New\",\"tag\":\"X1\",\"state\":2630,\"leader\":\"discord:409449988\"}"),
                 "conflict", "already in an alliance");
    ok(call(&c, "create", "{\"name\":\"Frost Wolves\",\"tag\":\"X1\",\"state\":1,\"leader\":\"discord:9\"}"));
    settle(&c, 300);
    CHECK_INT(count_type("alliance.created"), 6);
    bt_client_close(&c);
    bt_kill(w, SIGTERM);
}

static void test_members_ranks_transfer(void) {
    bt_client_t c;
    pid_t w = setup(&c, "ranks");
    const char *id = create(&c, "Ice Bears", 100, "discord:1");
    cJSON *r = call(&c, "join", "{\"id\":\"%s\",\"user\":\"discord:2\"}", id);
    const cJSON *m = ok_data(r);
    CHECK_STR(dstr(m, "rank"), "R1");
    CHECK_STR(dstr(m, "alliance"), id);
    CHECK_STR(dstr(m, "user"), "discord:2");
    char corr[64];
    snprintf(corr, sizeof corr, "%s", last_corr);
    cJSON_Delete(r);
    wait_events(&c, "alliance.member.joined", 1, 5000);
    CHECK_STR(last_of("alliance.member.joined")->corr, corr);
    CHECK_STR(dstr(last_of("alliance.member.joined")->data, "user"), "discord:2");
    join(&c, id, "telegram:3");
    join(&c, id, "telegram:4");
    expect_error(call(&c, "join", "{\"id\":\"%s\",\"user\":\"telegram:4\"}", id), "conflict", "already a member");
    const char *other = create(&c, "Elsewhere", 100, "discord:50");
    expect_error(call(&c, "join", "{\"id\":\"%s\",\"user\":\"telegram:4\"}", other), "conflict", "another alliance");
    expect_error(call(&c, "join", "{\"id\":\"00000000-0000-4000-8000-000000000000\",\"user\":\"telegram:5\"}"),
                 "not_found", "no alliance");

    /* the R5 promotes discord:2 to R4; the event names old, new and actor */
    set_rank(&c, "discord:1", "discord:2", "R4");
    snprintf(corr, sizeof corr, "%s", last_corr);
    wait_events(&c, "alliance.member.rank_changed", 1, 5000);
    const seen_t *e = last_of("alliance.member.rank_changed");
    CHECK_STR(e->corr, corr);
    CHECK_STR(dstr(e->data, "old_rank"), "R1");
    CHECK_STR(dstr(e->data, "new_rank"), "R4");
    CHECK_STR(dstr(e->data, "actor"), "discord:1");
    CHECK_STR(dstr(e->data, "user"), "discord:2");
    /* the same rank again: success, nothing changes, no event */
    set_rank(&c, "discord:1", "discord:2", "R4");
    /* the R4 sets R1..R3 */
    set_rank(&c, "discord:2", "telegram:3", "R3");
    set_rank(&c, "discord:2", "telegram:3", "R2");
    CHECK_STR(rank_of(&c, "telegram:3"), "R2");
    /* every rule, each with the message naming it */
    expect_error(call(&c, "set_rank", "{\"actor\":\"discord:2\",\"user\":\"telegram:3\",\"rank\":\"R4\"}"),
                 "permission_denied", "rule: the actor may only give a rank below their own");
    expect_error(call(&c, "set_rank", "{\"actor\":\"discord:1\",\"user\":\"discord:2\",\"rank\":\"R5\"}"),
                 "permission_denied", "rule: R5 is given only by transfer");
    expect_error(call(&c, "set_rank", "{\"actor\":\"telegram:3\",\"user\":\"telegram:4\",\"rank\":\"R2\"}"),
                 "permission_denied", "rule: only R4 and R5 may change ranks (the actor is R2)");
    expect_error(call(&c, "set_rank", "{\"actor\":\"discord:2\",\"user\":\"discord:1\",\"rank\":\"R1\"}"),
                 "permission_denied", "rule: the actor must outrank the user (actor R4, user R5)");
    set_rank(&c, "discord:1", "telegram:4", "R4");
    expect_error(call(&c, "set_rank", "{\"actor\":\"discord:2\",\"user\":\"telegram:4\",\"rank\":\"R1\"}"),
                 "permission_denied", "rule: the actor must outrank the user (actor R4, user R4)");
    expect_error(call(&c, "set_rank", "{\"actor\":\"discord:1\",\"user\":\"discord:1\",\"rank\":\"R4\"}"),
                 "permission_denied", "own rank");
    expect_error(call(&c, "set_rank", "{\"actor\":\"discord:1\",\"user\":\"discord:50\",\"rank\":\"R2\"}"),
                 "permission_denied", "rule: the actor and the user must be in the same alliance");
    expect_error(call(&c, "set_rank", "{\"actor\":\"discord:1\",\"user\":\"discord:77\",\"rank\":\"R2\"}"),
                 "not_found", "discord:77 is not in an alliance");
    expect_error(call(&c, "set_rank", "{\"actor\":\"discord:77\",\"user\":\"discord:1\",\"rank\":\"R2\"}"),
                 "not_found", "the actor discord:77");
    CHECK_STR(rank_of(&c, "telegram:4"), "R4");
    CHECK_STR(rank_of(&c, "discord:2"), "R4");

    /* kick: R4/R5 only, must outrank */
    join(&c, id, "telegram:6");
    expect_error(call(&c, "kick", "{\"actor\":\"telegram:3\",\"user\":\"telegram:6\"}"), "permission_denied",
                 "rule: only R4 and R5 may kick");
    expect_error(call(&c, "kick", "{\"actor\":\"discord:2\",\"user\":\"telegram:4\"}"), "permission_denied",
                 "rule: the actor must outrank the user");
    expect_error(call(&c, "kick", "{\"actor\":\"discord:2\",\"user\":\"discord:1\"}"), "permission_denied",
                 "rule: the actor must outrank the user");
    r = call(&c, "kick", "{\"actor\":\"discord:2\",\"user\":\"telegram:6\"}");
    CHECK_STR(dstr(ok_data(r), "rank"), "R1");
    cJSON_Delete(r);
    snprintf(corr, sizeof corr, "%s", last_corr);
    wait_events(&c, "alliance.member.kicked", 1, 5000);
    CHECK_STR(last_of("alliance.member.kicked")->corr, corr);
    CHECK_STR(dstr(last_of("alliance.member.kicked")->data, "actor"), "discord:2");
    CHECK_STR(rank_of(&c, "telegram:6"), "none");

    /* transfer: R5 only, to another member; the old R5 becomes R4 */
    expect_error(call(&c, "transfer", "{\"actor\":\"discord:2\",\"user\":\"telegram:3\"}"), "permission_denied",
                 "rule: only the R5 may transfer");
    expect_error(call(&c, "transfer", "{\"actor\":\"discord:1\",\"user\":\"discord:1\"}"), "permission_denied",
                 "another member");
    r = call(&c, "transfer", "{\"actor\":\"discord:1\",\"user\":\"telegram:3\"}");
    CHECK_STR(dstr(ok_data(r), "new_leader"), "telegram:3");
    cJSON_Delete(r);
    snprintf(corr, sizeof corr, "%s", last_corr);
    wait_events(&c, "alliance.leader.changed", 1, 5000);
    e = last_of("alliance.leader.changed");
    CHECK_STR(e->corr, corr);
    CHECK_STR(dstr(e->data, "reason"), "transfer");
    CHECK_STR(dstr(e->data, "old_leader"), "discord:1");
    CHECK_STR(dstr(e->data, "new_leader"), "telegram:3");
    CHECK_STR(rank_of(&c, "discord:1"), "R4");
    CHECK_STR(rank_of(&c, "telegram:3"), "R5");
    CHECK_INT(check_invariants(&c, id), 4);

    /* members: by rank, the R5 first; a rank filter; pages */
    r = call(&c, "members", "{\"id\":\"%s\",\"rank\":\"R4\"}", id);
    const cJSON *list = cJSON_GetObjectItem(ok_data(r), "members");
    CHECK_INT(cJSON_GetArraySize(list), 3);
    CHECK_STR(dstr(cJSON_GetArrayItem(list, 0), "user"), "discord:1"); /* the longest-standing R4 first */
    cJSON_Delete(r);
    r = call(&c, "members", "{\"id\":\"%s\",\"limit\":3}", id);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "members")), 3);
    CHECK(dstr(ok_data(r), "next_cursor") != NULL);
    cJSON_Delete(r);
    expect_error(call(&c, "members", "{\"id\":\"00000000-0000-4000-8000-000000000000\"}"), "not_found", NULL);

    /* a plain member leaves */
    r = call(&c, "leave", "{\"user\":\"telegram:4\"}");
    CHECK_STR(dstr(ok_data(r), "rank"), "R4");
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(ok_data(r), "dissolved")));
    cJSON_Delete(r);
    wait_events(&c, "alliance.member.left", 1, 5000);
    CHECK_STR(dstr(last_of("alliance.member.left")->data, "reason"), "left");
    expect_error(call(&c, "leave", "{\"user\":\"telegram:4\"}"), "not_found", "not in an alliance");
    expect_error(call(&c, "member", "{\"user\":\"telegram:4\"}"), "not_found", NULL);
    CHECK_INT(check_invariants(&c, id), 3);

    /* dissolve: R5 only; every member leaves; one event lists them */
    expect_error(call(&c, "dissolve", "{\"actor\":\"discord:1\",\"id\":\"%s\"}", id), "permission_denied",
                 "rule: only the R5 may dissolve");
    expect_error(call(&c, "dissolve", "{\"actor\":\"discord:50\",\"id\":\"%s\"}", id), "permission_denied",
                 "not a member");
    r = call(&c, "dissolve", "{\"actor\":\"telegram:3\",\"id\":\"%s\"}", id);
    CHECK_INT(dnum(ok_data(r), "members"), 3);
    cJSON_Delete(r);
    wait_events(&c, "alliance.dissolved", 1, 5000);
    e = last_of("alliance.dissolved");
    CHECK_STR(dstr(e->data, "reason"), "dissolved");
    CHECK_STR(dstr(e->data, "actor"), "telegram:3");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(e->data, "members")), 3);
    expect_error(call(&c, "get", "{\"id\":\"%s\"}", id), "not_found", NULL);
    CHECK_STR(rank_of(&c, "discord:1"), "none");
    CHECK_STR(rank_of(&c, "discord:2"), "none");
    /* a former member can join elsewhere at once */
    join(&c, other, "discord:2");
    settle(&c, 300);
    /* exactly the events of the successful changes, each once */
    CHECK_INT(count_type("alliance.member.joined"), 5);
    CHECK_INT(count_type("alliance.member.rank_changed"), 4);
    CHECK_INT(count_type("alliance.member.kicked"), 1);
    CHECK_INT(count_type("alliance.leader.changed"), 1);
    CHECK_INT(count_type("alliance.member.left"), 1);
    CHECK_INT(count_type("alliance.dissolved"), 1);
    for (int i = 0; i < nseen; i++) CHECK(seen[i].corr[0] != '\0');
    bt_client_close(&c);
    bt_kill(w, SIGTERM);
}

static void test_succession(void) {
    bt_client_t c;
    pid_t w = setup(&c, "succession");
    const char *id = create(&c, "Heirs", 5, "discord:1");
    join(&c, id, "discord:2"); /* will be R3 */
    join(&c, id, "discord:3"); /* R4, joined before discord:4 */
    join(&c, id, "discord:4"); /* R4 */
    join(&c, id, "discord:5"); /* R1 */
    set_rank(&c, "discord:1", "discord:4", "R4");
    set_rank(&c, "discord:1", "discord:3", "R4");
    set_rank(&c, "discord:1", "discord:2", "R3");
    /* the R5 leaves: the longest-standing of the highest rank (discord:3) leads */
    cJSON *r = call(&c, "leave", "{\"user\":\"discord:1\"}");
    CHECK_STR(dstr(ok_data(r), "new_leader"), "discord:3");
    cJSON_Delete(r);
    char corr[64];
    snprintf(corr, sizeof corr, "%s", last_corr);
    wait_events(&c, "alliance.leader.changed", 1, 5000);
    const seen_t *e = last_of("alliance.leader.changed");
    CHECK_STR(dstr(e->data, "reason"), "succession");
    CHECK_STR(dstr(e->data, "old_leader"), "discord:1");
    CHECK_STR(dstr(e->data, "new_leader"), "discord:3");
    CHECK_STR(dstr(e->data, "new_leader_previous_rank"), "R4");
    CHECK_STR(e->corr, corr);
    CHECK_STR(last_of("alliance.member.left")->corr, corr);
    CHECK_INT(check_invariants(&c, id), 4);
    /* the new R5's data is deleted (user.forgotten): discord:4 (R4) leads */
    {
        bus_envelope_t env = {0};
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "user", "discord:3");
        CHECK_INT(bus_envelope_init(&env, "user.forgotten", "test", NULL, "corr-forget-1", data), 0);
        size_t len;
        char *body = bus_envelope_serialize(&env, &len);
        /* twice with the same id: a redelivery must not repeat anything */
        for (int i = 0; i < 2; i++)
            CHECK_INT(bus_event_publish_body(c.conn, "user.forgotten", env.id, "corr-forget-1", body, len, NULL, NULL),
                      0);
        free(body);
        bus_envelope_clear(&env);
    }
    wait_events(&c, "alliance.leader.changed", 2, 8000);
    e = last_of("alliance.leader.changed");
    CHECK_STR(dstr(e->data, "new_leader"), "discord:4");
    CHECK_STR(e->corr, "corr-forget-1");
    CHECK_STR(dstr(last_of("alliance.member.left")->data, "reason"), "forgotten");
    CHECK_STR(rank_of(&c, "discord:3"), "none");
    CHECK_STR(rank_of(&c, "discord:4"), "R5");
    CHECK_INT(check_invariants(&c, id), 3);
    settle(&c, 500);
    /* the twin was answered from the marker: the same event ids again, no new ones */
    int lc = 0;
    for (int i = 0; i < nseen; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= strcmp(seen[i].id, seen[j].id) == 0;
        if (!dup && strcmp(seen[i].type, "alliance.leader.changed") == 0) lc++;
    }
    CHECK_INT(lc, 2);
    /* forgotten with no membership: nothing to do, no event */
    int before = nseen;
    {
        bus_envelope_t env = {0};
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "user", "telegram:999");
        bus_envelope_init(&env, "user.forgotten", "test", NULL, NULL, data);
        size_t len;
        char *body = bus_envelope_serialize(&env, &len);
        CHECK_INT(bus_event_publish_body(c.conn, "user.forgotten", env.id, NULL, body, len, NULL, NULL), 0);
        free(body);
        bus_envelope_clear(&env);
    }
    settle(&c, 500);
    CHECK_INT(nseen, before);
    /* then R1 discord:5 (joined after discord:2 the R3): the R3 is next */
    r = call(&c, "leave", "{\"user\":\"discord:4\"}");
    CHECK_STR(dstr(ok_data(r), "new_leader"), "discord:2");
    cJSON_Delete(r);
    r = call(&c, "leave", "{\"user\":\"discord:2\"}");
    CHECK_STR(dstr(ok_data(r), "new_leader"), "discord:5");
    cJSON_Delete(r);
    CHECK_INT(check_invariants(&c, id), 1);
    /* the last member leaves: the alliance is dissolved */
    r = call(&c, "leave", "{\"user\":\"discord:5\"}");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(ok_data(r), "dissolved")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(ok_data(r), "new_leader")));
    cJSON_Delete(r);
    wait_events(&c, "alliance.dissolved", 1, 5000);
    CHECK_STR(dstr(last_of("alliance.dissolved")->data, "reason"), "empty");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(last_of("alliance.dissolved")->data, "actor")));
    expect_error(call(&c, "get", "{\"id\":\"%s\"}", id), "not_found", NULL);
    /* the name is free again */
    create(&c, "Heirs", 5, "discord:1");
    bt_client_close(&c);
    bt_kill(w, SIGTERM);
}

static void test_bad_input(void) {
    bt_client_t c;
    pid_t w = setup(&c, "bad");
    static char big[10100];
    memset(big, 'a', 10000);
    big[10000] = '\0';
    expect_error(call(&c, "create", "{\"name\":\"%s\",\"tag\":\"AB\",\"state\":1,\"leader\":\"discord:1\"}", big),
                 "invalid", "/name");
    expect_error(call(&c, "create", "{\"tag\":\"AB\",\"state\":1,\"leader\":\"discord:1\"}"), "invalid", "name");
    expect_error(call(&c, "create", "{\"name\":\"x\",\"tag\":\"AB\",\"state\":\"1\",\"leader\":\"discord:1\"}"),
                 "invalid", "/state");
    expect_error(call(&c, "create", "{\"name\":\"x\",\"tag\":\"AB\",\"state\":100000,\"leader\":\"discord:1\"}"),
                 "invalid", "/state");
    expect_error(call(&c, "create", "{\"name\":\"x\",\"tag\":\"A-B\",\"state\":1,\"leader\":\"discord:1\"}"),
                 "invalid", "/tag");
    expect_error(call(&c, "create", "{\"name\":\" x\",\"tag\":\"AB\",\"state\":1,\"leader\":\"discord:1\"}"),
                 "invalid", "/name");
    expect_error(call(&c, "create", "{\"name\":\"x\",\"tag\":\"AB\",\"state\":1,\"leader\":\"slack:1\"}"),
                 "invalid", "/leader");
    expect_error(call(&c, "create", "{\"name\":\"x\",\"tag\":\"AB\",\"state\":1,\"leader\":\"discord:1\",\"x\":1}"),
                 "invalid", "/x");
    expect_error(call(&c, "create", "{\"name\":\"x\",\"tag\":\"AB\",\"state\":1,\"leader\":\"discord:1\","
                                    "\"language\":\"xx\"}"),
                 "invalid", "/language");
    expect_error(call(&c, "set_rank", "{\"actor\":\"discord:1\",\"user\":\"discord:2\",\"rank\":\"R6\"}"), "invalid",
                 "/rank");
    expect_error(call(&c, "set_rank", "{\"actor\":\"discord:1\",\"user\":\"discord:2\",\"rank\":5}"), "invalid",
                 "/rank");
    expect_error(call(&c, "join", "{\"id\":\"not-a-uuid\",\"user\":\"discord:2\"}"), "invalid", "/id");
    expect_error(call(&c, "join", "[]"), "invalid", NULL);
    expect_error(call(&c, "list", "{\"limit\":0}"), "invalid", "/limit");
    expect_error(call(&c, "members", "{\"id\":\"00000000-0000-4000-8000-000000000000\",\"limit\":1000}"), "invalid",
                 "/limit");
    expect_error(call(&c, "nosuch", "{}"), "not_found", NULL);
    /* nothing was created by any of it, and the worker still answers */
    cJSON *r = call(&c, "list", "{}");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "alliances")), 0);
    cJSON_Delete(r);
    /* 40 characters (code points) pass, in any script */
    ok(call(&c, "create", "{\"name\":\"%s\",\"tag\":\"AB\",\"state\":1,\"leader\":\"discord:1\"}",
            "ЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖ"));
    expect_error(call(&c, "create", "{\"name\":\"%s\",\"tag\":\"AB\",\"state\":1,\"leader\":\"discord:2\"}",
                      "жжжжжжжжжжжжжжжжжжжжжжжжжжжжжжжжжжжжжжжж"),
                 "conflict", "already exists"); /* Cyrillic case-insensitive */
    settle(&c, 200);
    CHECK_INT(nseen, 1);
    bt_client_close(&c);
    bt_kill(w, SIGTERM);
}

/* ---- many calls in flight ----------------------------------------------------- */

typedef struct {
    res_t r[400];
    int n;
} batch_t;

static void fire(bt_client_t *c, batch_t *b, const char *method, int timeout_ms, const char *fmt, ...) {
    char params[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(params, sizeof params, fmt, ap);
    va_end(ap);
    CHECK(b->n < 400);
    res_t *r = &b->r[b->n++];
    memset(r, 0, sizeof *r);
    bus_rpc_call_opts_t o = {.timeout_ms = timeout_ms};
    CHECK_INT(bus_rpc_call(c->rpc, "alliances", method, params, strlen(params), &o, on_reply, r), 0);
}

static void wait_batch(bt_client_t *c, batch_t *b, int ms) {
    double end = bt_now_ms() + ms;
    for (;;) {
        int done = 0;
        for (int i = 0; i < b->n; i++) done += b->r[i].done;
        if (done == b->n || bt_now_ms() > end) break;
        int flag = 0;
        bt_run_until(c, &flag, 20);
    }
    for (int i = 0; i < b->n; i++) {
        CHECK(b->r[i].done);
        CHECK_INT(b->r[i].status, 0);
        CHECK(b->r[i].reply != NULL);
    }
}

/* "ok", or the error code of the reply. */
static const char *outcome(const res_t *r) {
    if (cJSON_IsTrue(cJSON_GetObjectItem(r->reply, "success"))) return "ok";
    return dstr(r->reply, "error");
}

static void batch_free(batch_t *b) {
    for (int i = 0; i < b->n; i++) cJSON_Delete(b->r[i].reply);
    b->n = 0;
}

/* Two processes on one SQLite file, many requests in flight on one alliance:
 * the rules hold whatever the interleaving, every answer is a success or a
 * clean refusal. */
static void test_two_workers_race(void) {
    bt_client_t c;
    pid_t w1 = setup(&c, "race");
    pid_t w2 = start_worker("race", 0);
    CHECK(bt_wait_ping("alliances", 15000) == 0);
    const char *id = create(&c, "Racers", 9, "discord:1000");
    static batch_t b;
    /* every user joins twice at once: exactly one of each pair succeeds */
    for (int u = 1001; u <= 1030; u++)
        for (int k = 0; k < 2; k++) fire(&c, &b, "join", 20000, "{\"id\":\"%s\",\"user\":\"discord:%d\"}", id, u);
    wait_batch(&c, &b, 30000);
    for (int u = 0; u < 30; u++) {
        const char *a = outcome(&b.r[2 * u]), *z = outcome(&b.r[2 * u + 1]);
        int oks = (strcmp(a, "ok") == 0) + (strcmp(z, "ok") == 0);
        if (oks != 1) fprintf(stderr, "  user %d: %s / %s\n", 1001 + u, a, z);
        CHECK_INT(oks, 1);
        CHECK(strcmp(a, "conflict") == 0 || strcmp(z, "conflict") == 0);
    }
    batch_free(&b);
    CHECK_INT(check_invariants(&c, id), 31);
    set_rank(&c, "discord:1000", "discord:1001", "R4");
    set_rank(&c, "discord:1000", "discord:1002", "R4");
    /* the events so far (created, 30 joins, 2 promotions) are in: count the
     * second burst's alone */
    wait_events(&c, "alliance.member.joined", 30, 10000);
    wait_events(&c, "alliance.member.rank_changed", 2, 10000);
    settle(&c, 300);
    CHECK_INT(nseen, 33);
    for (int i = 0; i < nseen; i++) cJSON_Delete(seen[i].data);
    nseen = 0;
    /* two officers promoting the same members at once, one officer demoted
     * meanwhile, a transfer and the leader leaving at the same time. Every
     * request's answer is one the rules allow whatever the interleaving, or
     * "conflict: lost a race" (two processes kept changing the alliance
     * under it for all its attempts), which changes nothing. The counts of
     * what succeeded then fix everything else exactly. */
    enum { K_JOIN, K_KICK, K_LEAVE, K_TRANSFER, K_DEMOTE, K_RANK_BY_1001, K_RANK_BY_1002 };
    static int kind[400], target[400];
    static int kicked[1031];
    memset(kicked, 0, sizeof kicked);
    for (int u = 1003; u <= 1030; u++) {
        kind[b.n] = K_RANK_BY_1001, target[b.n] = u;
        fire(&c, &b, "set_rank", 20000, "{\"actor\":\"discord:1001\",\"user\":\"discord:%d\",\"rank\":\"R2\"}", u);
        kind[b.n] = K_RANK_BY_1002, target[b.n] = u;
        fire(&c, &b, "set_rank", 20000, "{\"actor\":\"discord:1002\",\"user\":\"discord:%d\",\"rank\":\"R3\"}", u);
        if (u == 1010) {
            kind[b.n] = K_DEMOTE, target[b.n] = 1002;
            fire(&c, &b, "set_rank", 20000, "{\"actor\":\"discord:1000\",\"user\":\"discord:1002\",\"rank\":\"R1\"}");
        }
        if (u == 1015) {
            kind[b.n] = K_TRANSFER, target[b.n] = 1001;
            fire(&c, &b, "transfer", 20000, "{\"actor\":\"discord:1000\",\"user\":\"discord:1001\"}");
        }
        if (u == 1016) {
            kind[b.n] = K_LEAVE, target[b.n] = 1000;
            fire(&c, &b, "leave", 20000, "{\"user\":\"discord:1000\"}");
        }
        if (u % 5 == 0) {
            kind[b.n] = K_KICK, target[b.n] = u - 1;
            kicked[u - 1] = 1;
            fire(&c, &b, "kick", 20000, "{\"actor\":\"discord:1001\",\"user\":\"discord:%d\"}", u - 1);
        }
        kind[b.n] = K_JOIN, target[b.n] = u;
        fire(&c, &b, "join", 20000, "{\"id\":\"%s\",\"user\":\"telegram:%d\"}", id, u);
    }
    wait_batch(&c, &b, 60000);
    int oks = 0, lost = 0, ok_kind[7] = {0}, ok_rank_changes = 0, transfer_ok = 0, demote_ok = 0;
    static int ok_changes_of[1031];
    memset(ok_changes_of, 0, sizeof ok_changes_of);
    for (int i = 0; i < b.n; i++) {
        const char *o = outcome(&b.r[i]);
        int k = kind[i], t = target[i], is_ok = strcmp(o, "ok") == 0;
        /* what each request may answer:
         *   joins of new users, the kicks (1001 outranks everyone it kicks),
         *   the leader leaving: ok, always;
         *   1001 giving R2: ok, or not_found once its user was kicked;
         *   1002 giving R3: as 1001, or permission_denied once demoted;
         *   the transfer: ok, or not_found after the leader left;
         *   the demotion: ok, permission_denied after the transfer (1000
         *   is R4 then), not_found after the leader left */
        int lost_race = strcmp(o, "conflict") == 0 && strstr(dstr(b.r[i].reply, "message"), "lost a race");
        lost += lost_race;
        int allowed = is_ok;
        if (k == K_RANK_BY_1001) allowed = is_ok || (kicked[t] && strcmp(o, "not_found") == 0);
        if (k == K_RANK_BY_1002)
            allowed = is_ok || (kicked[t] && strcmp(o, "not_found") == 0) || strcmp(o, "permission_denied") == 0;
        if (k == K_TRANSFER) allowed = is_ok || strcmp(o, "not_found") == 0;
        if (k == K_DEMOTE) allowed = is_ok || strcmp(o, "permission_denied") == 0 || strcmp(o, "not_found") == 0;
        if (!allowed && !lost_race) {
            char *txt = cJSON_PrintUnformatted(b.r[i].reply);
            fprintf(stderr, "  request %d (kind %d, user %d): unexpected answer %s\n", i, k, t, txt);
            free(txt);
        }
        CHECK(allowed || lost_race);
        if (!is_ok) continue;
        oks++;
        ok_kind[k]++;
        if (k == K_RANK_BY_1001 || k == K_RANK_BY_1002 || k == K_DEMOTE) {
            ok_rank_changes++; /* never to the rank the user has: each one is a change */
            ok_changes_of[t]++;
        }
        transfer_ok += k == K_TRANSFER;
        demote_ok += k == K_DEMOTE;
    }
    fprintf(stderr, "  %d calls: %d ok (%d rank changes, transfer %s, demotion %s), %d lost a race\n", b.n, oks,
            ok_rank_changes, transfer_ok ? "ok" : "refused", demote_ok ? "ok" : "refused", lost);
    CHECK(lost <= b.n / 10); /* the retries absorb most races */
    int joins = ok_kind[K_JOIN], kicks = ok_kind[K_KICK], left = ok_kind[K_LEAVE];
    int leader_changes = transfer_ok || left; /* the transfer, or the succession when the leader left first */
    batch_free(&b);
    /* exactly one event per success, none for a refusal or a lost race */
    int want = joins + kicks + left + ok_rank_changes + leader_changes;
    wait_events(&c, NULL, want, 15000);
    settle(&c, 500);
    CHECK_INT(nseen, want);
    CHECK_INT(count_type("alliance.member.joined"), joins);
    CHECK_INT(count_type("alliance.member.kicked"), kicks);
    CHECK_INT(count_type("alliance.member.left"), left);
    CHECK_INT(count_type("alliance.member.rank_changed"), ok_rank_changes);
    CHECK_INT(count_type("alliance.leader.changed"), leader_changes);
    for (int i = 0; i < nseen; i++)
        for (int j = 0; j < i; j++) CHECK(strcmp(seen[i].id, seen[j].id) != 0); /* none sent twice */
    const seen_t *lc = last_of("alliance.leader.changed");
    if (lc) {
        CHECK_STR(dstr(lc->data, "old_leader"), "discord:1000");
        CHECK_STR(dstr(lc->data, "reason"), transfer_ok ? "transfer" : "succession");
        if (transfer_ok) CHECK_STR(dstr(lc->data, "new_leader"), "discord:1001");
    }
    for (int i = 0; i < nseen; i++) /* whoever was kicked was kicked by a success */
        if (strcmp(seen[i].type, "alliance.member.kicked") == 0) {
            int u = atoi(dstr(seen[i].data, "user") + strlen("discord:"));
            CHECK(u >= 1003 && u <= 1030 && kicked[u]);
        }
    /* each user's rank changes form one chain from R1 (whatever order the
     * two workers published them in), and the store holds its end */
    for (int u = 1003; u <= 1030; u++) {
        char user[32], rank[8] = "R1";
        snprintf(user, sizeof user, "discord:%d", u);
        int chain = 0;
        for (int step = 0; step < 3; step++) {
            int found = 0;
            char next[8] = "";
            for (int i = 0; i < nseen; i++) {
                if (strcmp(seen[i].type, "alliance.member.rank_changed") != 0) continue;
                if (strcmp(dstr(seen[i].data, "user"), user) != 0) continue;
                if (strcmp(dstr(seen[i].data, "old_rank"), rank) != 0) continue;
                snprintf(next, sizeof next, "%s", dstr(seen[i].data, "new_rank"));
                found++;
            }
            CHECK(found <= 1);
            if (!found) break;
            chain++;
            snprintf(rank, sizeof rank, "%s", next);
        }
        CHECK_INT(chain, ok_changes_of[u]);
        int was_kicked = 0;
        for (int i = 0; i < nseen; i++)
            was_kicked |= strcmp(seen[i].type, "alliance.member.kicked") == 0 && strcmp(dstr(seen[i].data, "user"), user) == 0;
        CHECK_STR(rank_of(&c, user), was_kicked ? "none" : rank);
    }
    CHECK_STR(rank_of(&c, "discord:1000"), left ? "none" : transfer_ok ? "R4" : "R5");
    if (demote_ok && !(lc && strcmp(dstr(lc->data, "new_leader"), "discord:1002") == 0))
        CHECK_STR(rank_of(&c, "discord:1002"), "R1");
    /* 31 members, then the joins, the kicks and the leaving that succeeded */
    CHECK_INT(check_invariants(&c, id), 31 + joins - kicks - left);
    /* each user is in at most one alliance: membership ids are the users, and
     * every member listed says this alliance */
    cJSON *m = call(&c, "members", "{\"id\":\"%s\",\"limit\":100}", id);
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(ok_data(m), "members")) {
        cJSON *r = call(&c, "member", "{\"user\":\"%s\"}", dstr(it, "user"));
        CHECK_STR(dstr(ok_data(r), "alliance"), id);
        CHECK_STR(dstr(ok_data(r), "rank"), dstr(it, "rank"));
        cJSON_Delete(r);
    }
    cJSON_Delete(m);
    bt_client_close(&c);
    bt_kill(w1, SIGTERM);
    bt_kill(w2, SIGTERM);
}

/* A burst of creates; the worker is SIGKILLed in the middle and restarted:
 * every call is answered with success, every alliance exists once, and no
 * event exists twice under different ids. */
static void test_sigkill_mid_burst(void) {
    bt_client_t c;
    pid_t w = setup(&c, "kill");
    enum { N = 200 };
    static batch_t b;
    for (int i = 0; i < N; i++)
        fire(&c, &b, "create", 30000, "{\"name\":\"Burst %d\",\"tag\":\"B%d\",\"state\":42,\"leader\":\"discord:%d\"}",
             i, i % 1000, 5000 + i);
    /* let part of the burst through, then kill */
    double end = bt_now_ms() + 10000;
    for (;;) {
        int done = 0;
        for (int i = 0; i < b.n; i++) done += b.r[i].done;
        if (done >= N / 5 || bt_now_ms() > end) break;
        int flag = 0;
        bt_run_until(&c, &flag, 1);
    }
    kill(w, SIGKILL);
    bt_wait_exit(w, 5000);
    int answered_before = 0;
    for (int i = 0; i < b.n; i++) answered_before += b.r[i].done;
    fprintf(stderr, "  killed after %d of %d answers\n", answered_before, N);
    CHECK(answered_before < N);
    w = start_worker("kill", 0);
    wait_batch(&c, &b, 45000);
    for (int i = 0; i < N; i++) {
        if (strcmp(outcome(&b.r[i]), "ok") != 0) {
            char *t = cJSON_PrintUnformatted(b.r[i].reply);
            fprintf(stderr, "  call %d: %s\n", i, t);
            free(t);
        }
        CHECK_STR(outcome(&b.r[i]), "ok");
    }
    /* the store: exactly N alliances */
    int total = 0;
    char cursor[1100] = "";
    for (;;) {
        cJSON *r = cursor[0] ? call(&c, "list", "{\"state\":42,\"limit\":100,\"cursor\":\"%s\"}", cursor)
                             : call(&c, "list", "{\"state\":42,\"limit\":100}");
        total += cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "alliances"));
        const char *nc = dstr(ok_data(r), "next_cursor");
        snprintf(cursor, sizeof cursor, "%s", nc ? nc : "");
        cJSON_Delete(r);
        if (!cursor[0]) break;
    }
    CHECK_INT(total, N);
    /* the events: N distinct ids, N distinct alliances; a re-sent event has its first id */
    wait_events(&c, NULL, nseen > N ? nseen : N, 10000);
    settle(&c, 500);
    int distinct = 0, dups = 0;
    for (int i = 0; i < nseen; i++) {
        CHECK_STR(seen[i].type, "alliance.created");
        int dup = 0;
        for (int j = 0; j < i; j++)
            if (strcmp(seen[i].id, seen[j].id) == 0) dup = 1;
            else CHECK(strcmp(dstr(seen[i].data, "alliance"), dstr(seen[j].data, "alliance")) != 0);
        distinct += !dup;
        dups += dup;
    }
    fprintf(stderr, "  %d events, %d distinct, %d re-sent with their first id\n", nseen, distinct, dups);
    CHECK_INT(distinct, N);
    batch_free(&b);
    bt_client_close(&c);
    bt_kill(w, SIGTERM);
}

/* The same request (same message id) delivered twice: one effect, the same
 * answer twice, the same event id. */
static int nreplies;
static char replies[2][2048];
static void on_raw_reply(bus_msg_t *m, void *data) {
    (void)data;
    if (nreplies < 2) snprintf(replies[nreplies++], sizeof replies[0], "%.*s", (int)m->len, m->body);
    bus_msg_ack(m);
}

/* Publishes the same request twice with one message id; waits for both
 * replies (in replies[]) and returns that id in mid. */
static void send_twice(bt_client_t *c, const char *q, const char *key, const char *params, char mid[37]) {
    nreplies = 0;
    bus_uuid(mid);
    for (int i = 0; i < 2; i++) {
        bus_publish_t p = {.exchange = BUS_EXCHANGE_RPC, .routing_key = key, .body = params,
                           .len = strlen(params), .content_type = "application/json", .message_id = mid,
                           .correlation_id = "twice-corr", .reply_to = q, .persistent = 1};
        CHECK_INT(bus_conn_publish(c->conn, &p, NULL, NULL), 0);
    }
    double end = bt_now_ms() + 10000;
    while (nreplies < 2 && bt_now_ms() < end) {
        int flag = 0;
        bt_run_until(c, &flag, 20);
    }
    CHECK_INT(nreplies, 2);
    CHECK_CONTAINS(replies[0], "\"success\":true");
    CHECK_STR(replies[1], replies[0]); /* the stored answer, byte for byte */
}

/* Publishes one request with message id mid; waits for its reply (replies[0]). */
static void send_with_id(bt_client_t *c, const char *q, const char *key, const char *params, const char *mid) {
    nreplies = 0;
    bus_publish_t p = {.exchange = BUS_EXCHANGE_RPC, .routing_key = key, .body = params, .len = strlen(params),
                       .content_type = "application/json", .message_id = mid, .correlation_id = "once-corr",
                       .reply_to = q, .persistent = 1};
    CHECK_INT(bus_conn_publish(c->conn, &p, NULL, NULL), 0);
    double end = bt_now_ms() + 10000;
    while (nreplies < 1 && bt_now_ms() < end) {
        int flag = 0;
        bt_run_until(c, &flag, 20);
    }
    CHECK_INT(nreplies, 1);
}

/* The events of `type` seen are one event (one id), delivered `times`
 * times; returns how many times. */
static int check_one_event(const char *type, const char *mid) {
    int n = 0;
    const char *first = NULL;
    for (int i = 0; i < nseen; i++) {
        if (strcmp(seen[i].type, type) != 0) continue;
        n++;
        if (!first)
            first = seen[i].id;
        else
            CHECK_STR(seen[i].id, first);
        CHECK_STR(seen[i].corr, mid); /* no x-correlation-id header: the request id */
    }
    CHECK(n >= 1);
    return n;
}

static void test_same_message_id(void) {
    bt_client_t c;
    pid_t w = setup(&c, "twice");
    const char *id = create(&c, "Twice", 3, "discord:1");
    wait_events(&c, "alliance.created", 1, 5000);
    for (int i = 0; i < nseen; i++) cJSON_Delete(seen[i].data);
    nseen = 0;
    char q[64], params[256], mid[37];
    snprintf(q, sizeof q, "test.replies.%d", (int)getpid());
    bus_queue_options_t o = {.exclusive = 1, .auto_delete = 1};
    CHECK(bus_conn_declare_queue(c.conn, q, &o) == 0);
    CHECK(bus_conn_consume(c.conn, q, 0, 1, amqp_empty_table, on_raw_reply, NULL, NULL, 0) == 0);
    snprintf(params, sizeof params, "{\"id\":\"%s\",\"user\":\"telegram:77\"}", id);
    send_twice(&c, q, "alliances.join", params, mid);
    wait_events(&c, "alliance.member.joined", 2, 5000);
    settle(&c, 300);
    CHECK_INT(check_one_event("alliance.member.joined", mid), 2); /* the twin is refused, finds the marker, replays */
    CHECK_INT(check_invariants(&c, id), 2);
    /* A pair method, whose marker is read with its first documents. Once,
     * then its twin after the answer: the design's one outcome for a request
     * whose message id is already done (workers/alliances/op.c, step 1) is
     * the first result: the stored reply byte for byte and the stored event
     * re-sent with its first id. Deciding it again would answer "already so"
     * without the event. */
    snprintf(params, sizeof params, "{\"actor\":\"discord:1\",\"user\":\"telegram:77\",\"rank\":\"R3\"}");
    bus_uuid(mid);
    send_with_id(&c, q, "alliances.set_rank", params, mid);
    CHECK_CONTAINS(replies[0], "\"rank\":\"R3\"");
    char first[2048];
    snprintf(first, sizeof first, "%s", replies[0]);
    wait_events(&c, "alliance.member.rank_changed", 1, 5000);
    char first_event[40];
    snprintf(first_event, sizeof first_event, "%s", last_of("alliance.member.rank_changed")->id);
    send_with_id(&c, q, "alliances.set_rank", params, mid);
    CHECK_STR(replies[0], first);
    wait_events(&c, "alliance.member.rank_changed", 2, 5000);
    settle(&c, 300);
    CHECK_INT(check_one_event("alliance.member.rank_changed", mid), 2);
    CHECK_STR(rank_of(&c, "telegram:77"), "R3");
    /* another request moves the rank on; the same id once more still gets
     * the first result (R3 and its event again) and changes nothing: decided
     * again it would set R3 a second time */
    set_rank(&c, "discord:1", "telegram:77", "R2");
    wait_events(&c, "alliance.member.rank_changed", 3, 5000);
    CHECK_STR(rank_of(&c, "telegram:77"), "R2");
    send_with_id(&c, q, "alliances.set_rank", params, mid);
    CHECK_STR(replies[0], first);
    wait_events(&c, "alliance.member.rank_changed", 4, 5000);
    settle(&c, 300);
    CHECK_INT(count_type("alliance.member.rank_changed"), 4);
    int with_first_id = 0;
    for (int i = 0; i < nseen; i++)
        if (strcmp(seen[i].type, "alliance.member.rank_changed") == 0 && strcmp(seen[i].id, first_event) == 0) {
            with_first_id++;
            CHECK_STR(dstr(seen[i].data, "new_rank"), "R3");
        }
    CHECK_INT(with_first_id, 3); /* the first, its twin, the last resend: one event, sent three times */
    CHECK_STR(rank_of(&c, "telegram:77"), "R2");
    CHECK_INT(check_invariants(&c, id), 2);
    bt_client_close(&c);
    bt_kill(w, SIGTERM);
}

/* ---- through the HTTP edge (skipped when build/bus-gateway is not built) ---------- */

typedef struct {
    char buf[8192];
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

static long http_post(int port, const char *path, const char *body, const char *request_id, http_body_t *out) {
    CURL *h = curl_easy_init();
    CHECK(h != NULL);
    char url[256], rid[160];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    if (request_id) {
        snprintf(rid, sizeof rid, "X-Request-Id: %s", request_id);
        hd = curl_slist_append(hd, rid);
    }
    memset(out, 0, sizeof *out);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_http_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    long status = 0;
    CHECK_INT(curl_easy_perform(h), CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return status;
}

static void test_through_the_edge(void) {
    char prog[600];
    snprintf(prog, sizeof prog, "%s/bus-gateway", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    if (access(prog, X_OK) != 0) SKIP("%s is not built", prog);
    bt_client_t c;
    pid_t w = setup(&c, "edge");
    int port = 26000 + (int)(getpid() % 1000) + 900;
    if (port > 27999) port -= 1000;
    char addr[64], store[600], log[600], schemas[600];
    snprintf(addr, sizeof addr, "BUS_HTTP_ADDR=127.0.0.1:%d", port);
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s/alliances-edge-gw.db", tmpdir());
    snprintf(log, sizeof log, "%s/alliances-edge-gw.log", tmpdir());
    const char *sd = getenv("BUS_SCHEMAS_DIR");
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", sd ? sd : "schemas");
    const char *env[] = {addr, store, schemas, "BUS_RATE_LIMIT=0", "BUS_LOG_LEVEL=warn", NULL};
    char *argv[] = {prog, NULL};
    pid_t gw = bt_spawn_program(argv, env, log);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    http_body_t b;
    long st = 0;
    for (int i = 0; i < 100; i++) { /* wait for the edge */
        CURL *h = curl_easy_init();
        char url[128];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v1/health", port);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_http_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
        memset(&b, 0, sizeof b);
        if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
        curl_easy_cleanup(h);
        if (st) break;
        usleep(100000);
    }
    CHECK(st != 0);

    st = http_post(port, "/api/v1/rpc/alliances/create",
                   "{\"name\":\"Edge Wolves\",\"tag\":\"EW\",\"state\":2630,\"leader\":\"discord:409449988\"}",
                   "edge-create-1", &b);
    CHECK_INT(st, 200);
    cJSON *r = cJSON_Parse(b.buf);
    const cJSON *d = ok_data(r);
    char id[40], body[256];
    snprintf(id, sizeof id, "%s", dstr(d, "id"));
    CHECK_STR(dstr(r, "request_id"), "edge-create-1");
    cJSON_Delete(r);
    /* the X-Request-Id travels end to end as the events' correlation id */
    wait_events(&c, "alliance.created", 1, 5000);
    CHECK_STR(last_of("alliance.created")->corr, "edge-create-1");

    snprintf(body, sizeof body, "{\"id\":\"%s\",\"user\":\"telegram:5\"}", id);
    CHECK_INT(http_post(port, "/api/v1/rpc/alliances/join", body, NULL, &b), 200);
    CHECK_CONTAINS(b.buf, "\"rank\":\"R1\"");
    CHECK_INT(http_post(port, "/api/v1/rpc/alliances/join", body, NULL, &b), 409);
    CHECK_CONTAINS(b.buf, "\"error\":\"conflict\"");
    CHECK_INT(http_post(port, "/api/v1/rpc/alliances/set_rank",
                        "{\"actor\":\"telegram:5\",\"user\":\"discord:409449988\",\"rank\":\"R1\"}", NULL, &b),
              403);
    CHECK_CONTAINS(b.buf, "rule: only R4 and R5 may change ranks");
    CHECK_INT(http_post(port, "/api/v1/rpc/alliances/set_rank",
                        "{\"actor\":\"discord:409449988\",\"user\":\"telegram:5\",\"rank\":\"R9\"}", NULL, &b),
              422);
    CHECK_CONTAINS(b.buf, "/rank");
    CHECK_INT(http_post(port, "/api/v1/rpc/alliances/create", "{\"name\":1}", NULL, &b), 422);
    CHECK_CONTAINS(b.buf, "/name");
    CHECK_INT(http_post(port, "/api/v1/rpc/alliances/transfer",
                        "{\"actor\":\"discord:409449988\",\"user\":\"telegram:5\"}", "edge-transfer-1", &b),
              200);
    wait_events(&c, "alliance.leader.changed", 1, 5000);
    CHECK_STR(last_of("alliance.leader.changed")->corr, "edge-transfer-1");
    snprintf(body, sizeof body, "{\"id\":\"%s\"}", id);
    CHECK_INT(http_post(port, "/api/v1/rpc/alliances/get", body, NULL, &b), 200);
    CHECK_CONTAINS(b.buf, "\"leader\":\"telegram:5\"");
    CHECK_INT(http_post(port, "/api/v1/rpc/alliances/get", "{\"id\":\"00000000-0000-4000-8000-000000000000\"}", NULL,
                        &b),
              404);
    curl_global_cleanup();
    bt_kill(gw, SIGTERM);
    bt_client_close(&c);
    bt_kill(w, SIGTERM);
}

BUS_TESTS({"create_get_find_list", test_create_get_find_list, 60},
          {"members_ranks_transfer", test_members_ranks_transfer, 60}, {"succession", test_succession, 60},
          {"bad_input", test_bad_input, 60}, {"two_workers_race", test_two_workers_race, 120},
          {"sigkill_mid_burst", test_sigkill_mid_burst, 120}, {"same_message_id", test_same_message_id, 60},
          {"through_the_edge", test_through_the_edge, 60})
