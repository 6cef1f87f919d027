/* Helpers shared by the verification tests (tests/integration/test_verification.c,
 * tests/chaos/test_verification_chaos.c, tests/bench/bench_verification.c):
 * bus-verification processes pointed at the fake game API
 * (fake_game_api.h), the events they publish, calls one at a time or many
 * in flight. Header-only (static functions): each test program includes it
 * once. */
#ifndef BUS_TEST_VF_TESTKIT_H
#define BUS_TEST_VF_TESTKIT_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../test.h"
#include "bus/publish.h"
#include "bus/topology.h"
#include "fake_game_api.h"
#include "support.h"

/* every program uses only some of these */
#define VT_FN static __attribute__((unused))

static char vt_db[512];
static char vt_redis_env[300];
static char vt_api_env[300];

VT_FN const char *vt_tmpdir(void) { return getenv("BUS_TEST_TMPDIR") ? getenv("BUS_TEST_TMPDIR") : "/tmp"; }

/* A fresh database for the test and a Redis db of its own (1..15) so the
 * shared limiter's window and attempt counters start empty. */
VT_FN void vt_prepare(const char *test, int redis_db, bt_game_api_t *api) {
    snprintf(vt_db, sizeof vt_db, "%s/verification-%s.db", vt_tmpdir(), test);
    char p[600];
    unlink(vt_db);
    snprintf(p, sizeof p, "%s-wal", vt_db);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", vt_db);
    unlink(p);
    const char *r = getenv("BUS_REDIS_URL") ? getenv("BUS_REDIS_URL") : "redis://127.0.0.1:6379/0";
    char base[256];
    snprintf(base, sizeof base, "%s", r);
    char *slash = strrchr(base, '/');
    if (slash && slash > base + 8) *slash = 0; /* drop the db */
    snprintf(vt_redis_env, sizeof vt_redis_env, "BUS_REDIS_URL=%s/%d", base, redis_db);
    char url[200];
    snprintf(vt_api_env, sizeof vt_api_env, "BUS_GAME_API_URL=%s", bt_game_api_url(api, url, sizeof url));
    /* FLUSHDB of that db */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "redis-cli -u '%s/%d' FLUSHDB >/dev/null 2>&1", base, redis_db);
    if (system(cmd) != 0) fprintf(stderr, "  (redis-cli FLUSHDB failed)\n");
}

/* Starts bus-verification #idx with the test's settings plus `extra`
 * ("NAME=value" entries, NULL-terminated, may be NULL; later ones win). */
VT_FN pid_t vt_start(const char *test, int idx, const char *const *extra) {
    static char store[600], schemas[600], prog[600], logp[600];
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s", vt_db);
    const char *sd = getenv("BUS_SCHEMAS_DIR");
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", sd ? sd : "schemas");
    snprintf(prog, sizeof prog, "%s/bus-verification", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    snprintf(logp, sizeof logp, "%s/verification-%s-%d.log", vt_tmpdir(), test, idx);
    const char *env[40];
    int n = 0;
    const char *base[] = {store,
                          schemas,
                          vt_redis_env,
                          vt_api_env,
                          "BUS_GAME_API_FALLBACK_URL=",
                          "BUS_LOG_LEVEL=warn",
                          "BUS_VALIDATE_REPLIES=1",
                          "BUS_PREFETCH=200",
                          "BUS_GAME_API_TIMEOUT_MS=3000",
                          "BUS_GAME_API_BACKOFF_MS=20",
                          "BUS_GAME_API_LIMIT=0",
                          "BUS_GIFTCODE_SCAN_MS=100",
                          "BUS_GIFTCODE_PROGRESS_MS=100",
                          NULL};
    for (int i = 0; base[i]; i++) env[n++] = base[i];
    for (int i = 0; extra && extra[i] && n < 39; i++) env[n++] = extra[i];
    env[n] = NULL;
    char *argv[] = {prog, NULL};
    pid_t pid = bt_spawn_program(argv, env, logp);
    CHECK(pid > 0);
    return pid;
}

/* ---- events ------------------------------------------------------------------ */

#define VT_MAX_SEEN 20000
typedef struct {
    char type[64];
    char id[40];
    char corr[128];
    cJSON *data;
} vt_seen_t;
static vt_seen_t *vt_seen;
static int vt_nseen;

VT_FN void vt_on_event(bus_msg_t *m, void *data) {
    (void)data;
    cJSON *e = cJSON_ParseWithLength(m->body, m->len);
    if (e && vt_nseen < VT_MAX_SEEN) {
        vt_seen_t *s = &vt_seen[vt_nseen++];
        const cJSON *t = cJSON_GetObjectItem(e, "type"), *c = cJSON_GetObjectItem(e, "correlationid"),
                    *id = cJSON_GetObjectItem(e, "id");
        snprintf(s->id, sizeof s->id, "%s", cJSON_IsString(id) ? id->valuestring : "");
        snprintf(s->type, sizeof s->type, "%s", cJSON_IsString(t) ? t->valuestring : "");
        snprintf(s->corr, sizeof s->corr, "%s", cJSON_IsString(c) ? c->valuestring : "");
        s->data = cJSON_DetachItemFromObject(e, "data");
    }
    cJSON_Delete(e);
    bus_msg_ack(m);
}

/* Connects and clears the domain's queues. */
VT_FN void vt_open(bt_client_t *c) {
    if (!vt_seen) vt_seen = calloc(VT_MAX_SEEN, sizeof *vt_seen);
    vt_nseen = 0;
    bt_client_open(c);
    bt_delete_queue(c, "rpc.verification");
    bt_delete_queue(c, "events.verification");
}

/* Binds an exclusive queue to the events (once a worker declared the exchanges). */
VT_FN void vt_listen(bt_client_t *c) {
    char q[64];
    snprintf(q, sizeof q, "test.verification.%d", (int)getpid());
    bus_queue_options_t o = {.exclusive = 1, .auto_delete = 1};
    CHECK(bus_conn_declare_queue(c->conn, q, &o) == 0);
    const char *keys[] = {"player.#", "giftcode.#", "user.#", "privacy.#", "alliance.#"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        CHECK(bus_conn_bind(c->conn, q, BUS_EXCHANGE_EVENTS, keys[i]) == 0);
    CHECK(bus_conn_consume(c->conn, q, 0, 1, amqp_empty_table, vt_on_event, NULL, NULL, 0) == 0);
}

VT_FN int vt_count(const char *type) {
    int n = 0;
    for (int i = 0; i < vt_nseen; i++) n += strcmp(vt_seen[i].type, type) == 0;
    return n;
}

/* Events of type with distinct ids (a replayed outbox publishes an event
 * again with its id: consumers deduplicate by id). */
VT_FN int vt_count_distinct(const char *type) {
    int n = 0;
    for (int i = 0; i < vt_nseen; i++) {
        if (strcmp(vt_seen[i].type, type) != 0) continue;
        int dup = 0;
        for (int j = 0; j < i && !dup; j++) dup = strcmp(vt_seen[j].type, type) == 0 && strcmp(vt_seen[j].id, vt_seen[i].id) == 0;
        n += !dup;
    }
    return n;
}

VT_FN const vt_seen_t *vt_last(const char *type) {
    for (int i = vt_nseen - 1; i >= 0; i--)
        if (strcmp(vt_seen[i].type, type) == 0) return &vt_seen[i];
    return NULL;
}

VT_FN void vt_settle(bt_client_t *c, int ms) {
    int flag = 0;
    bt_run_until(c, &flag, ms);
}

/* Runs the loop until n events of type arrived (checks it). */
VT_FN void vt_wait_events(bt_client_t *c, const char *type, int n, int ms) {
    double end = bt_now_ms() + ms;
    while (vt_count(type) < n && bt_now_ms() < end) vt_settle(c, 20);
    CHECK_INT(vt_count(type), n);
}

VT_FN const char *vt_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
VT_FN double vt_num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* ---- calls ----------------------------------------------------------------------- */

typedef struct {
    int done, status;
    cJSON *reply;
} vt_res_t;

VT_FN void vt_on_reply(int status, const char *reply, size_t len, void *data) {
    vt_res_t *r = data;
    r->done = 1;
    r->status = status;
    if (reply) r->reply = cJSON_ParseWithLength(reply, len);
}

VT_FN cJSON *vt_vcall(bt_client_t *c, const char *service, const char *method, int timeout_ms, const char *fmt,
                       va_list ap) {
    static char params[20000];
    vsnprintf(params, sizeof params, fmt, ap);
    vt_res_t r = {0};
    bus_rpc_call_opts_t o = {.timeout_ms = timeout_ms};
    CHECK_INT(bus_rpc_call(c->rpc, service, method, params, strlen(params), &o, vt_on_reply, &r), 0);
    bt_run_until(c, &r.done, timeout_ms + 5000);
    CHECK_INT(r.status, 0);
    CHECK(r.reply != NULL);
    return r.reply;
}

/* verification.<method> with params from fmt; the parsed reply (caller frees). */
VT_FN cJSON *vt_call(bt_client_t *c, const char *method, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    cJSON *r = vt_vcall(c, "verification", method, 20000, fmt, ap);
    va_end(ap);
    return r;
}

VT_FN cJSON *vt_call_svc(bt_client_t *c, const char *service, const char *method, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    cJSON *r = vt_vcall(c, service, method, 10000, fmt, ap);
    va_end(ap);
    return r;
}

VT_FN const cJSON *vt_ok(cJSON *reply) {
    const cJSON *s = cJSON_GetObjectItem(reply, "success");
    if (!cJSON_IsTrue(s)) {
        char *t = cJSON_PrintUnformatted(reply);
        fprintf(stderr, "  expected success, got %s\n", t);
        free(t);
    }
    CHECK(cJSON_IsTrue(s));
    return cJSON_GetObjectItem(reply, "data");
}

VT_FN void vt_error(cJSON *reply, const char *code, const char *needle) {
    const char *e = vt_str(reply, "error");
    if (!e || strcmp(e, code) != 0 || (needle && !strstr(vt_str(reply, "message") ? vt_str(reply, "message") : "", needle))) {
        char *t = cJSON_PrintUnformatted(reply);
        fprintf(stderr, "  expected %s (%s), got %s\n", code, needle ? needle : "", t);
        free(t);
    }
    CHECK_STR(e, code);
    if (needle) CHECK_CONTAINS(vt_str(reply, "message"), needle);
    cJSON_Delete(reply);
}

/* many calls in flight */
typedef struct {
    vt_res_t *r;
    int n, cap;
} vt_batch_t;

VT_FN void vt_fire(bt_client_t *c, vt_batch_t *b, const char *method, int timeout_ms, const char *fmt, ...) {
    char params[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(params, sizeof params, fmt, ap);
    va_end(ap);
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        /* results are written by callbacks: never move them while calls are out */
        CHECK(b->n == 0);
        b->r = calloc((size_t)b->cap, sizeof *b->r);
    }
    vt_res_t *r = &b->r[b->n++];
    memset(r, 0, sizeof *r);
    bus_rpc_call_opts_t o = {.timeout_ms = timeout_ms};
    CHECK_INT(bus_rpc_call(c->rpc, "verification", method, params, strlen(params), &o, vt_on_reply, r), 0);
}

VT_FN void vt_batch_init(vt_batch_t *b, int cap) {
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->r = calloc((size_t)cap, sizeof *b->r);
}

VT_FN void vt_wait_batch(bt_client_t *c, vt_batch_t *b, int ms) {
    double end = bt_now_ms() + ms;
    for (;;) {
        int done = 0;
        for (int i = 0; i < b->n; i++) done += b->r[i].done;
        if (done == b->n || bt_now_ms() > end) break;
        vt_settle(c, 20);
    }
    for (int i = 0; i < b->n; i++) {
        CHECK(b->r[i].done);
        CHECK_INT(b->r[i].status, 0);
        CHECK(b->r[i].reply != NULL);
    }
}

VT_FN const char *vt_outcome(const vt_res_t *r) {
    if (cJSON_IsTrue(cJSON_GetObjectItem(r->reply, "success"))) return "ok";
    return vt_str(r->reply, "error");
}

VT_FN void vt_batch_free(vt_batch_t *b) {
    for (int i = 0; i < b->n; i++) cJSON_Delete(b->r[i].reply);
    free(b->r);
    memset(b, 0, sizeof *b);
}

#endif
