/* bus-audit through a real broker and a real SQLite store: RBAC (roles,
 * scopes, the owner bootstrap, every decision recorded), the cache dropped
 * across processes by grant events, the trail (every event once, the same
 * event id twice gives one record, events no domain consumes), verify
 * naming the first broken link of a tampered store, busctl publish refusing
 * a type without a schema, and busctl tail (order, filters, --json).
 *
 * Each test gets a fresh database ($BUS_TEST_TMPDIR/audit-<test>.db) and
 * fresh queues (events.audit, rpc.audit, the audit.log stream). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/publish.h"
#include "bus/store.h"
#include "bus/topology.h"

static char db_path[512];

static const char *tmpdir(void) { return getenv("BUS_TEST_TMPDIR") ? getenv("BUS_TEST_TMPDIR") : "/tmp"; }
static const char *build(void) { return getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build"; }

static void fresh(const char *test) {
    snprintf(db_path, sizeof db_path, "%s/audit-%s.db", tmpdir(), test);
    char p[600];
    unlink(db_path);
    snprintf(p, sizeof p, "%s-wal", db_path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", db_path);
    unlink(p);
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "events.audit");
    bt_delete_queue(&c, "audit.events");
    bt_delete_queue(&c, "rpc.audit");
    bt_delete_queue(&c, "retry.audit");
    bt_delete_queue(&c, BUS_AUDIT_STREAM);
    bt_client_close(&c);
}

/* audit.events is durable and bound to every event: once its worker is
 * gone, the tests that follow would fill it for nobody */
static void drop_event_queue(void) {
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "audit.events");
    bt_client_close(&c);
}

static pid_t start_audit(const char *test, const char *extra) {
    static char store[600], prog[600], log[600];
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s", db_path);
    snprintf(prog, sizeof prog, "%s/bus-audit", build());
    snprintf(log, sizeof log, "%s/audit-%s.log", tmpdir(), test);
    const char *env[] = {store, "BUS_LOG_LEVEL=warn", "BUS_VALIDATE_REPLIES=1", "BUS_AUDIT_LEASE_MS=1000",
                         extra ? extra : "BUS_PREFETCH=256", NULL};
    char *argv[] = {prog, NULL};
    pid_t pid = bt_spawn_program(argv, env, log);
    CHECK(pid > 0);
    return pid;
}

/* SIGTERM: the worker drains and exits 0 (under the sanitizers, also without a leak) */
static void stop_clean(pid_t w) {
    kill(w, SIGTERM);
    CHECK_INT(bt_wait_exit(w, 15000), 0);
}

/* Runs a shell command with the store of this test; output into out. Returns the exit code. */
static int sh(char *out, size_t cap, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(cmd, sizeof cmd, "export BUS_STORE=sqlite:%s; ", db_path);
    vsnprintf(cmd + n, sizeof cmd - (size_t)n, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t len = 0;
    if (out) {
        size_t r;
        while (len + 1 < cap && (r = fread(out + len, 1, cap - 1 - len, p)) > 0) len += r;
        out[len] = '\0';
    } else {
        char sink[4096];
        while (fread(sink, 1, sizeof sink, p) > 0) {
        }
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* audit.<method>: the reply's data (caller frees), or NULL for an error
 * reply, with the error name in err (may be NULL). */
static cJSON *call(bt_client_t *c, const char *method, const char *params, char *err) {
    char *reply = NULL;
    int rc = bt_call(c, "audit", method, params, 10000, &reply);
    CHECK_INT(rc, 0);
    cJSON *doc = cJSON_Parse(reply);
    free(reply);
    CHECK(doc != NULL);
    cJSON *data = NULL;
    if (cJSON_IsTrue(cJSON_GetObjectItem(doc, "success"))) {
        data = cJSON_DetachItemFromObject(doc, "data");
        if (err) err[0] = '\0';
    } else if (err) {
        snprintf(err, 64, "%s", cJSON_GetObjectItem(doc, "error")->valuestring);
    }
    cJSON_Delete(doc);
    return data;
}

static int allowed(bt_client_t *c, const char *params) {
    cJSON *d = call(c, "check", params, NULL);
    CHECK(d != NULL);
    int a = cJSON_IsTrue(cJSON_GetObjectItem(d, "allowed"));
    cJSON_Delete(d);
    return a;
}

static int count_records(bt_client_t *c, const char *filter_json) {
    int n = 0;
    char params[2600], cursor[1200] = "";
    for (;;) {
        snprintf(params, sizeof params, "{%s%s\"limit\":1000%s%s%s}", filter_json, *filter_json ? "," : "",
                 *cursor ? ",\"cursor\":\"" : "", cursor, *cursor ? "\"" : "");
        cJSON *d = call(c, "query", params, NULL);
        CHECK(d != NULL);
        n += cJSON_GetArraySize(cJSON_GetObjectItem(d, "records"));
        const cJSON *next = cJSON_GetObjectItem(d, "next_cursor");
        if (!cJSON_IsString(next)) {
            cJSON_Delete(d);
            return n;
        }
        snprintf(cursor, sizeof cursor, "%s", next->valuestring);
        cJSON_Delete(d);
    }
}

/* Waits until the chain's tip reaches `seq` (verify's tip.seq). */
static int wait_tip(bt_client_t *c, int64_t seq, int timeout_ms) {
    double end = bt_now_ms() + timeout_ms;
    int64_t tip = -1;
    while (bt_now_ms() < end) {
        cJSON *d = call(c, "verify", "{\"from\":1,\"to\":1}", NULL);
        CHECK(d != NULL);
        tip = (int64_t)cJSON_GetObjectItem(cJSON_GetObjectItem(d, "tip"), "seq")->valuedouble;
        cJSON_Delete(d);
        if (tip >= seq) return (int)tip;
        usleep(100 * 1000);
    }
    return (int)tip;
}

typedef struct {
    int confirmed, failed;
} pub_t;

static void on_confirm(int status, void *data) {
    pub_t *p = data;
    if (status == 0) p->confirmed++;
    else p->failed++;
}

/* Publishes an audit.note.recorded event with a given id (NULL = fresh). */
static void publish_note(bt_client_t *c, pub_t *p, const char *id, const char *actor, int n) {
    bus_envelope_t env = {0};
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "actor", actor);
    cJSON_AddStringToObject(data, "text", "a note");
    cJSON_AddNumberToObject(data, "n", n);
    CHECK_INT(bus_envelope_init(&env, "audit.note.recorded", "tests", "notes", NULL, data), 0);
    if (id) {
        free(env.id);
        env.id = strdup(id);
    }
    CHECK_INT(bus_event_publish(c->conn, &env, on_confirm, p), 0);
    bus_envelope_clear(&env);
}

/* ---- RBAC ------------------------------------------------------------------------ */

static void test_rbac_roles_scopes_and_decisions(void) {
    fresh("rbac");
    pid_t w = start_audit("rbac", NULL);
    CHECK_INT(bt_wait_ping("audit", 15000), 0);
    bt_client_t c;
    bt_client_open(&c);
    char err[64], out[4096];
    /* no owner yet: nobody may grant anything */
    CHECK(call(&c, "grant", "{\"actor\":\"discord:1\",\"user\":\"discord:2\",\"role\":\"moderator\"}", err) == NULL);
    CHECK_STR(err, "permission_denied");
    /* the bootstrap is a command on the store, once */
    CHECK_INT(sh(out, sizeof out, "%s/busctl rbac bootstrap-owner discord:1 2>&1", build()), 0);
    CHECK_INT(sh(out, sizeof out, "%s/busctl rbac bootstrap-owner discord:9 2>&1", build()), 1);
    CHECK_CONTAINS(out, "an owner exists already (discord:1)");
    /* and there is no method for it */
    CHECK(call(&c, "bootstrap_owner", "{\"user\":\"discord:9\"}", err) == NULL);
    CHECK_STR(err, "not_found");

    cJSON *d = call(&c, "grant", "{\"actor\":\"discord:1\",\"user\":\"discord:2\",\"role\":\"moderator\",\"scope\":\"state:12\"}", err);
    CHECK(d != NULL);
    CHECK_STR(cJSON_GetObjectItem(d, "scope")->valuestring, "state:12");
    cJSON_Delete(d);
    /* scopes: the state, an alliance of that state, not another state, not global */
    CHECK(allowed(&c, "{\"user\":\"discord:2\",\"permission\":\"giftcode.manage\",\"scope\":\"state:12\"}"));
    CHECK(allowed(&c, "{\"user\":\"discord:2\",\"permission\":\"giftcode.manage\",\"scope\":\"alliance:0a1b\",\"state\":12}"));
    CHECK(!allowed(&c, "{\"user\":\"discord:2\",\"permission\":\"giftcode.manage\",\"scope\":\"alliance:0a1b\"}"));
    CHECK(!allowed(&c, "{\"user\":\"discord:2\",\"permission\":\"giftcode.manage\",\"scope\":\"state:13\"}"));
    CHECK(!allowed(&c, "{\"user\":\"discord:2\",\"permission\":\"giftcode.manage\"}"));
    /* a moderator holds no player management */
    CHECK(!allowed(&c, "{\"user\":\"discord:2\",\"permission\":\"player.manage\",\"scope\":\"state:12\"}"));
    d = call(&c, "check", "{\"user\":\"discord:2\",\"permission\":\"event.manage\",\"scope\":\"state:12\"}", NULL);
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "via"), "role")->valuestring, "moderator");
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "via"), "scope")->valuestring, "state:12");
    cJSON_Delete(d);
    /* the owner holds everything everywhere */
    CHECK(allowed(&c, "{\"user\":\"discord:1\",\"permission\":\"player.manage\",\"scope\":\"state:99\"}"));

    /* only an owner hands out administrator; an administrator manages other roles */
    CHECK(call(&c, "grant", "{\"actor\":\"discord:2\",\"user\":\"discord:3\",\"role\":\"administrator\"}", err) == NULL);
    CHECK_STR(err, "permission_denied");
    d = call(&c, "grant", "{\"actor\":\"discord:1\",\"user\":\"discord:3\",\"role\":\"administrator\"}", err);
    CHECK(d != NULL);
    cJSON_Delete(d);
    CHECK(call(&c, "grant", "{\"actor\":\"discord:3\",\"user\":\"discord:4\",\"role\":\"owner\"}", err) == NULL);
    CHECK_STR(err, "permission_denied");
    /* custom roles */
    CHECK(call(&c, "role_define", "{\"actor\":\"discord:2\",\"name\":\"codes\",\"permissions\":[\"giftcode.manage\"]}", err) == NULL);
    CHECK_STR(err, "permission_denied");
    CHECK(call(&c, "role_define", "{\"actor\":\"discord:3\",\"name\":\"moderator\",\"permissions\":[\"all\"]}", err) == NULL);
    CHECK_STR(err, "invalid");
    CHECK(call(&c, "role_define", "{\"actor\":\"discord:3\",\"name\":\"codes\",\"permissions\":[\"gifts\"]}", err) == NULL);
    CHECK_STR(err, "invalid");
    d = call(&c, "role_define", "{\"actor\":\"discord:3\",\"name\":\"codes\",\"permissions\":[\"giftcode.manage\"]}", err);
    CHECK(d != NULL);
    cJSON_Delete(d);
    CHECK(call(&c, "grant", "{\"actor\":\"discord:3\",\"user\":\"discord:4\",\"role\":\"nosuch\"}", err) == NULL);
    CHECK_STR(err, "not_found");
    d = call(&c, "grant", "{\"actor\":\"discord:3\",\"user\":\"discord:4\",\"role\":\"codes\",\"scope\":\"alliance:77aa\"}", err);
    CHECK(d != NULL);
    cJSON_Delete(d);
    CHECK(call(&c, "grant", "{\"actor\":\"discord:3\",\"user\":\"discord:4\",\"role\":\"codes\",\"scope\":\"alliance:77aa\"}", err) == NULL);
    CHECK_STR(err, "conflict");
    CHECK(allowed(&c, "{\"user\":\"discord:4\",\"permission\":\"giftcode.manage\",\"scope\":\"alliance:77aa\"}"));
    CHECK(!allowed(&c, "{\"user\":\"discord:4\",\"permission\":\"announcement.manage\",\"scope\":\"alliance:77aa\"}"));
    /* a redefinition takes effect at once */
    d = call(&c, "role_define", "{\"actor\":\"discord:3\",\"name\":\"codes\",\"permissions\":[\"giftcode.manage\",\"announcement.manage\"]}", err);
    cJSON_Delete(d);
    CHECK(allowed(&c, "{\"user\":\"discord:4\",\"permission\":\"announcement.manage\",\"scope\":\"alliance:77aa\"}"));
    d = call(&c, "roles_of", "{\"user\":\"discord:4\"}", NULL);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(d, "grants")), 1);
    cJSON_Delete(d);
    d = call(&c, "roles", "{}", NULL);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(d, "roles")), 4);
    cJSON_Delete(d);
    /* revoke: the next check says no */
    d = call(&c, "revoke", "{\"actor\":\"discord:1\",\"user\":\"discord:2\",\"role\":\"moderator\",\"scope\":\"state:12\"}", err);
    CHECK(d != NULL);
    cJSON_Delete(d);
    CHECK(!allowed(&c, "{\"user\":\"discord:2\",\"permission\":\"giftcode.manage\",\"scope\":\"state:12\"}"));
    CHECK(call(&c, "revoke", "{\"actor\":\"discord:1\",\"user\":\"discord:2\",\"role\":\"moderator\",\"scope\":\"state:12\"}", err) == NULL);
    CHECK_STR(err, "not_found");
    /* bad input */
    CHECK(call(&c, "check", "{\"user\":\"discord:2\",\"permission\":\"nope\"}", err) == NULL);
    CHECK_STR(err, "invalid");
    CHECK(call(&c, "check", "{\"user\":\"discord:2\",\"permission\":\"all\",\"scope\":\"planet:3\"}", err) == NULL);
    CHECK_STR(err, "invalid");

    /* every decision is a record: 12 checks (not the 2 invalid ones), 12
     * grant/revoke/role_define decisions (the refusals by rule and the ones whose
     * change then conflicts or finds nothing included; not
     * the invalid or unknown-role requests, which decide nothing) */
    CHECK_INT(count_records(&c, "\"type\":\"rbac.check\""), 12);
    int changes = count_records(&c, "\"type\":\"rbac.grant\"") + count_records(&c, "\"type\":\"rbac.revoke\"") +
                  count_records(&c, "\"type\":\"rbac.role_define\"");
    CHECK_INT(changes, 12);
    CHECK_INT(count_records(&c, "\"type\":\"rbac.check\",\"actor\":\"discord:4\""), 3);
    /* and the 7 grant events too, the bootstrap's among them */
    CHECK_INT(wait_tip(&c, 12 + 12 + 7, 10000), 12 + 12 + 7);
    CHECK_INT(count_records(&c, "\"type\":\"role.granted\""), 4);
    d = call(&c, "query", "{\"type\":\"role.granted\",\"limit\":1}", NULL);
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(d, "records"), 0), "actor")->valuestring,
              "bootstrap");
    cJSON_Delete(d);
    d = call(&c, "verify", "{}", NULL);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(d, "ok")));
    cJSON_Delete(d);
    bt_client_close(&c);
    stop_clean(w);
    drop_event_queue();
}

/* Two processes with a cache that would live an hour: a grant or a revoke
 * through one is seen at once by the other (role.* events on a queue of each). */
static void test_cache_dropped_across_processes_by_grant_events(void) {
    fresh("cache");
    pid_t a = start_audit("cache", "BUS_RBAC_CACHE_TTL_MS=3600000");
    pid_t b = start_audit("cache", "BUS_RBAC_CACHE_TTL_MS=3600000");
    CHECK_INT(bt_wait_ping("audit", 15000), 0);
    char out[1024];
    CHECK_INT(sh(out, sizeof out, "%s/busctl rbac bootstrap-owner discord:1 2>&1", build()), 0);
    bt_client_t c;
    bt_client_open(&c);
    const char *q = "{\"user\":\"discord:5\",\"permission\":\"event.manage\",\"scope\":\"state:3\"}";
    usleep(500 * 1000); /* both consume */
    for (int i = 0; i < 20; i++) CHECK(!allowed(&c, q)); /* both processes cache "no grants" */
    char err[64];
    cJSON *d = call(&c, "grant", "{\"actor\":\"discord:1\",\"user\":\"discord:5\",\"role\":\"moderator\",\"scope\":\"state:3\"}", err);
    CHECK(d != NULL);
    cJSON_Delete(d);
    usleep(300 * 1000); /* the event reaches the other process */
    for (int i = 0; i < 20; i++) CHECK(allowed(&c, q));
    d = call(&c, "revoke", "{\"actor\":\"discord:1\",\"user\":\"discord:5\",\"role\":\"moderator\",\"scope\":\"state:3\"}", err);
    CHECK(d != NULL);
    cJSON_Delete(d);
    usleep(300 * 1000);
    for (int i = 0; i < 20; i++) CHECK(!allowed(&c, q));
    bt_client_close(&c);
    bt_kill(a, SIGKILL);
    bt_kill(b, SIGKILL);
    drop_event_queue();
}

/* ---- the trail -------------------------------------------------------------------- */

typedef struct {
    int done, status;
} st_wait_t;

static void on_doc(int status, const cJSON *doc, void *data) {
    (void)doc;
    st_wait_t *w = data;
    w->status = status;
    w->done = 1;
}

static void on_del(int status, void *data) { on_doc(status, NULL, data); }

/* Edits (or deletes) a stored record behind the worker's back. */
static void tamper(const char *id, const char *field, const char *value) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    bus_store_t *s = NULL;
    char url[600], err[256];
    snprintf(url, sizeof url, "sqlite:%s", db_path);
    CHECK_INT(bus_store_open(&loop, url, &s, err, sizeof err), 0);
    CHECK_INT(bus_store_declare(s, "audit_records", NULL, NULL, err, sizeof err), 0);
    st_wait_t w = {0};
    if (field) {
        cJSON *patch = cJSON_CreateObject();
        cJSON_AddStringToObject(patch, field, value);
        CHECK_INT(bus_store_update(s, "audit_records", id, BUS_STORE_ANY_VERSION, patch, on_doc, &w), 0);
        cJSON_Delete(patch);
    } else {
        CHECK_INT(bus_store_delete(s, "audit_records", id, BUS_STORE_ANY_VERSION, on_del, &w), 0);
    }
    while (!w.done) uv_run(&loop, UV_RUN_ONCE);
    CHECK_INT(w.status, 0);
    bus_store_close(s, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

static void test_every_event_once_and_verify_names_the_first_broken_link(void) {
    fresh("trail");
    pid_t w = start_audit("trail", NULL);
    CHECK_INT(bt_wait_ping("audit", 15000), 0);
    bt_client_t c;
    bt_client_open(&c);
    pub_t p = {0};
    /* 300 events no domain consumes, and 20 of them published a second time with the same id */
    char ids[300][40];
    for (int i = 0; i < 300; i++) {
        snprintf(ids[i], sizeof ids[i], "note-%04d", i);
        publish_note(&c, &p, ids[i], i % 2 ? "discord:11" : "discord:12", i);
    }
    for (int i = 0; i < 20; i++) publish_note(&c, &p, ids[i * 7], "discord:11", i * 7);
    while (p.confirmed + p.failed < 320) uv_run(&c.loop, UV_RUN_ONCE);
    CHECK_INT(p.failed, 0);
    CHECK_INT(wait_tip(&c, 300, 15000), 300);
    usleep(500 * 1000); /* the duplicates come after: still 300 */
    CHECK_INT(wait_tip(&c, 301, 300), 300);
    /* a message that is no CloudEvent is recorded too, as malformed */
    bus_publish_t junk = {.exchange = BUS_EXCHANGE_EVENTS, .routing_key = "junk.thing", .body = "not json",
                          .len = 8, .message_id = "junk-1"};
    CHECK_INT(bus_conn_publish(c.conn, &junk, on_confirm, &p), 0);
    while (p.confirmed + p.failed < 321) uv_run(&c.loop, UV_RUN_ONCE);
    CHECK_INT(wait_tip(&c, 301, 10000), 301);
    cJSON *m = call(&c, "query", "{\"type\":\"junk.thing\"}", NULL);
    const cJSON *mr = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "records"), 0);
    CHECK_STR(cJSON_GetObjectItem(mr, "outcome")->valuestring, "malformed");
    cJSON_Delete(m);
    CHECK_INT(count_records(&c, "\"type\":\"audit.note.recorded\""), 300);
    CHECK_INT(count_records(&c, "\"actor\":\"discord:11\""), 150);
    cJSON *d = call(&c, "verify", "{}", NULL);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(d, "ok")));
    CHECK_INT(cJSON_GetObjectItem(d, "checked")->valueint, 301);
    cJSON_Delete(d);
    /* the record of seq 120: edit its actor in the store */
    d = call(&c, "query", "{\"limit\":1000}", NULL);
    const cJSON *r120 = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "records"), 119);
    CHECK_INT(cJSON_GetObjectItem(r120, "seq")->valueint, 120);
    char id120[64], id200[64];
    snprintf(id120, sizeof id120, "%s", cJSON_GetObjectItem(r120, "source_id")->valuestring);
    snprintf(id200, sizeof id200, "%s",
             cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(d, "records"), 199), "source_id")->valuestring);
    cJSON_Delete(d);
    char store_id[24];
    snprintf(store_id, sizeof store_id, "%012d", 120); /* a record's store id is its seq (workers/audit/audit.h) */
    tamper(store_id, "actor", "discord:666");
    d = call(&c, "verify", "{}", NULL);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(d, "ok")));
    const cJSON *b = cJSON_GetObjectItem(d, "first_broken");
    CHECK_INT(cJSON_GetObjectItem(b, "seq")->valueint, 120);
    CHECK_STR(cJSON_GetObjectItem(b, "check")->valuestring, "hash");
    CHECK_STR(cJSON_GetObjectItem(b, "id")->valuestring, id120);
    CHECK_INT(cJSON_GetObjectItem(d, "checked")->valueint, 119);
    cJSON_Delete(d);
    /* a range after it still verifies; one across a deleted record names the gap */
    d = call(&c, "verify", "{\"from\":121,\"to\":301}", NULL);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(d, "ok")));
    cJSON_Delete(d);
    snprintf(store_id, sizeof store_id, "%012d", 200);
    tamper(store_id, NULL, NULL);
    d = call(&c, "verify", "{\"from\":150}", NULL);
    b = cJSON_GetObjectItem(d, "first_broken");
    CHECK_INT(cJSON_GetObjectItem(b, "seq")->valueint, 200);
    CHECK_STR(cJSON_GetObjectItem(b, "check")->valuestring, "seq");
    cJSON_Delete(d);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
    drop_event_queue();
}

static void test_busctl_publish_refuses_a_type_without_schema(void) {
    char out[2048];
    CHECK_INT(sh(out, sizeof out, "%s/busctl publish nobody.knows.this '{}' 2>&1", build()), 1);
    CHECK_CONTAINS(out, "no schema for event type nobody.knows.this");
    CHECK_INT(sh(out, sizeof out, "%s/busctl publish audit.note.recorded '{\"actor\":\"discord:1\"}' 2>&1", build()), 1);
    CHECK_CONTAINS(out, "invalid audit.note.recorded event");
    CHECK_INT(sh(out, sizeof out, "%s/busctl publish audit.note.recorded '{\"actor\":\"discord:1\",\"text\":\"x\"}' 2>&1",
                 build()),
              0);
}

static void test_busctl_tail_order_filters_and_json(void) {
    fresh("tail");
    pid_t w = start_audit("tail", NULL);
    CHECK_INT(bt_wait_ping("audit", 15000), 0);
    bt_client_t c;
    bt_client_open(&c);
    pub_t p = {0};
    for (int i = 0; i < 200; i++) publish_note(&c, &p, NULL, i % 4 ? "discord:21" : "telegram:22", i);
    while (p.confirmed + p.failed < 200) uv_run(&c.loop, UV_RUN_ONCE);
    CHECK(allowed(&c, "{\"user\":\"discord:21\",\"permission\":\"all\"}") == 0);
    CHECK_INT(wait_tip(&c, 201, 15000), 201);
    static char out[1 << 20];
    /* everything from the first, in seq order */
    double end = bt_now_ms() + 10000;
    int lines = 0;
    do {
        CHECK_INT(sh(out, sizeof out, "%s/busctl tail --from first --json --idle-ms 700", build()), 0);
        lines = 0;
        for (char *s = out; (s = strchr(s, '\n')); s++) lines++;
    } while (lines < 201 && bt_now_ms() < end);
    CHECK_INT(lines, 201);
    int64_t want = 1;
    long long offset150 = -1, offset_last = -1;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *r = cJSON_Parse(line);
        CHECK(r != NULL);
        CHECK_INT((int64_t)cJSON_GetObjectItem(r, "seq")->valuedouble, want++);
        const cJSON *off = cJSON_GetObjectItem(r, "offset");
        CHECK(cJSON_IsNumber(off));
        /* offsets name packs of records: they never go back */
        CHECK(off->valuedouble >= (double)offset_last);
        offset_last = (long long)off->valuedouble;
        if (want - 1 == 150) offset150 = offset_last;
        cJSON_Delete(r);
    }
    CHECK(offset150 >= 0);
    /* three tails at once each read everything: a stream consumer takes nothing from anyone */
    CHECK_INT(sh(out, sizeof out,
                 "for i in 1 2 3; do %s/busctl tail --from first --json --idle-ms 700 | wc -l & done; wait", build()),
              0);
    CHECK_INT(sh(out, sizeof out, "echo '%s' | awk '$1 == 201' | wc -l", out), 0);
    CHECK_INT(atoi(out), 3);
    /* filters */
    CHECK_INT(sh(out, sizeof out, "%s/busctl tail --from first --json --actor telegram:22 --idle-ms 700 | wc -l", build()), 0);
    CHECK_INT(atoi(out), 50);
    CHECK_INT(sh(out, sizeof out, "%s/busctl tail --from first --type 'rbac.*' --idle-ms 700", build()), 0);
    CHECK_CONTAINS(out, "rbac.check");
    CHECK_CONTAINS(out, "denied");
    CHECK(strstr(out, "audit.note") == NULL);
    CHECK(strstr(out, "\033[") == NULL); /* no colour into a pipe */
    CHECK_INT(sh(out, sizeof out, "%s/busctl tail --since 1h --limit 5 --json | wc -l", build()), 0);
    CHECK_INT(atoi(out), 5);
    /* --offset: from the pack holding seq 150, so its first line is that pack's */
    CHECK_INT(sh(out, sizeof out, "%s/busctl tail --offset %lld --json --idle-ms 700 | head -1", build(), offset150), 0);
    char want_off[48];
    snprintf(want_off, sizeof want_off, "\"offset\":%lld", offset150);
    CHECK_CONTAINS(out, want_off);
    CHECK_INT(sh(out, sizeof out, "%s/busctl tail --since yesterday 2>&1", build()), 2);
    /* --follow sees what comes later: it reads the 201 records, then waits
     * for the 3 published after it started (busctl itself is the child, so a
     * time-out kills it) */
    char prog[600], out_path[600];
    snprintf(prog, sizeof prog, "%s/busctl", build());
    snprintf(out_path, sizeof out_path, "%s/follow.out", tmpdir());
    unlink(out_path);
    char *argv[] = {prog, "tail", "--from", "first", "--follow", "--json", "--limit", "204", NULL};
    pid_t f = bt_spawn_program(argv, NULL, out_path);
    usleep(2000 * 1000); /* longer than the idle time that ends a tail without --follow */
    CHECK_INT(waitpid(f, NULL, WNOHANG), 0);
    p = (pub_t){0};
    for (int i = 0; i < 3; i++) publish_note(&c, &p, NULL, "discord:23", i);
    while (p.confirmed + p.failed < 3) uv_run(&c.loop, UV_RUN_ONCE);
    CHECK_INT(bt_wait_exit(f, 20000), 0);
    CHECK_INT(sh(out, sizeof out, "grep -c discord:23 %s", out_path), 0);
    CHECK_INT(atoi(out), 3);
    bt_client_close(&c);
    stop_clean(w);
    drop_event_queue();
}

/* audit.events is a quorum queue (workers/audit/main.c); one left classic by
 * an older version is used as it is, with a warning, until it is deleted
 * once. Whether a queue is classic or quorum is asked of the broker: a
 * declaration with the other type is refused (PRECONDITION_FAILED). */
static void test_events_queue_is_quorum_and_an_old_classic_one_still_works(void) {
    fresh("qtype");
    bt_client_t c;
    bt_client_open(&c);
    bus_queue_options_t classic = {.durable = 1, .queue_type = "classic"};
    bus_queue_options_t quorum = {.durable = 1, .queue_type = "quorum"};
    CHECK_INT(bus_conn_declare_queue(c.conn, "audit.events", &classic), 0); /* as an older bus-audit left it */
    pid_t w = start_audit("qtype-old", NULL);
    CHECK_INT(bt_wait_ping("audit", 15000), 0);
    pub_t p = {0};
    for (int i = 0; i < 20; i++) publish_note(&c, &p, NULL, "discord:71", i);
    while (p.confirmed + p.failed < 20) uv_run(&c.loop, UV_RUN_ONCE);
    CHECK_INT(p.failed, 0);
    CHECK_INT(wait_tip(&c, 20, 15000), 20);
    CHECK_INT(bus_conn_declare_queue_try(c.conn, "audit.events", &classic), 0); /* still the classic one */
    stop_clean(w);
    char logpath[600], line[1024];
    snprintf(logpath, sizeof logpath, "%s/audit-qtype-old.log", tmpdir());
    FILE *f = fopen(logpath, "r");
    CHECK(f != NULL);
    int warned = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "audit.events exists as another queue type than quorum")) warned = 1;
    if (f) fclose(f);
    CHECK(warned);
    /* deleted once: the next start declares it quorum, and the trail goes on */
    drop_event_queue();
    w = start_audit("qtype-new", NULL);
    CHECK_INT(bt_wait_ping("audit", 15000), 0);
    CHECK_INT(bus_conn_declare_queue_try(c.conn, "audit.events", &quorum), 0);
    CHECK_INT(bus_conn_declare_queue_try(c.conn, "audit.events", &classic), BUS_ECONFLICT);
    for (int i = 0; i < 20; i++) publish_note(&c, &p, NULL, "discord:71", 20 + i);
    while (p.confirmed + p.failed < 40) uv_run(&c.loop, UV_RUN_ONCE);
    CHECK_INT(p.failed, 0);
    CHECK_INT(wait_tip(&c, 40, 15000), 40);
    cJSON *d = call(&c, "verify", "{}", NULL);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(d, "ok")));
    CHECK_INT(cJSON_GetObjectItem(d, "checked")->valueint, 40);
    cJSON_Delete(d);
    bt_client_close(&c);
    stop_clean(w);
    drop_event_queue();
}

BUS_TESTS({"rbac_roles_scopes_and_decisions", test_rbac_roles_scopes_and_decisions, 40},
          {"cache_dropped_across_processes_by_grant_events", test_cache_dropped_across_processes_by_grant_events, 40},
          {"every_event_once_and_verify_names_the_first_broken_link",
           test_every_event_once_and_verify_names_the_first_broken_link, 60},
          {"busctl_publish_refuses_a_type_without_schema", test_busctl_publish_refuses_a_type_without_schema, 20},
          {"busctl_tail_order_filters_and_json", test_busctl_tail_order_filters_and_json, 60},
          {"events_queue_is_quorum_and_an_old_classic_one_still_works",
           test_events_queue_is_quorum_and_an_old_classic_one_still_works, 60})
