/* bus-audit under SIGKILL: a burst of events recorded by two processes on one
 * store, the one streaming the trail (it started first, so it holds the
 * stream lease) killed mid-burst and started again. Afterwards every event
 * has exactly one record, the chain verifies end to end, and a tail from
 * the first record of the stream sees every record once, in seq order.
 *
 * BUS_AUDIT_CHAOS_EVENTS sets the burst (default 10000). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/publish.h"
#include "bus/topology.h"

static char db_path[512];

static const char *tmpdir(void) { return getenv("BUS_TEST_TMPDIR") ? getenv("BUS_TEST_TMPDIR") : "/tmp"; }
static const char *build(void) { return getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build"; }

/* audit.events is durable and bound to every event: once its worker is
 * gone, the tests that follow would fill it for nobody */
static void drop_event_queue(void) {
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "audit.events");
    bt_client_close(&c);
}

static pid_t start_audit(const char *name) {
    static char store[600], prog[600], log[600];
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s", db_path);
    snprintf(prog, sizeof prog, "%s/bus-audit", build());
    snprintf(log, sizeof log, "%s/audit-chaos-%s.log", tmpdir(), name);
    const char *env[] = {store, "BUS_LOG_LEVEL=warn", "BUS_AUDIT_LEASE_MS=1000", "BUS_PREFETCH=512", NULL};
    char *argv[] = {prog, NULL};
    pid_t pid = bt_spawn_program(argv, env, log);
    CHECK(pid > 0);
    return pid;
}

static cJSON *call(bt_client_t *c, const char *method, const char *params) {
    char *reply = NULL;
    CHECK_INT(bt_call(c, "audit", method, params, 30000, &reply), 0);
    cJSON *doc = cJSON_Parse(reply);
    free(reply);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(doc, "success")));
    cJSON *d = cJSON_DetachItemFromObject(doc, "data");
    cJSON_Delete(doc);
    return d;
}

/* The chain's tip, or -1 when no process answered in time (one is being
 * killed or started, or the machine is slow: the caller polls again). */
static int64_t tip(bt_client_t *c) {
    char *reply = NULL;
    if (bt_call(c, "audit", "verify", "{\"from\":1,\"to\":1}", 5000, &reply) != 0) return -1;
    free(reply);
    cJSON *d = call(c, "verify", "{\"from\":1,\"to\":1}");
    int64_t t = (int64_t)cJSON_GetObjectItem(cJSON_GetObjectItem(d, "tip"), "seq")->valuedouble;
    cJSON_Delete(d);
    return t;
}

typedef struct {
    int confirmed, failed;
} pub_t;

static void on_confirm(int status, void *data) {
    pub_t *p = data;
    if (status == 0) p->confirmed++;
    else p->failed++;
}

static int by_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_sigkill_during_a_burst(void) {
    int n = getenv("BUS_AUDIT_CHAOS_EVENTS") ? atoi(getenv("BUS_AUDIT_CHAOS_EVENTS")) : 10000;
    snprintf(db_path, sizeof db_path, "%s/audit-chaos.db", tmpdir());
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
    bt_delete_queue(&c, BUS_AUDIT_STREAM);
    pid_t a = start_audit("a");
    CHECK_INT(bt_wait_ping("audit", 15000), 0);
    usleep(300 * 1000); /* a takes the stream lease */
    pid_t b = start_audit("b");
    usleep(300 * 1000);

    pub_t pub = {0};
    char **ids = calloc((size_t)n, sizeof *ids);
    for (int i = 0; i < n; i++) {
        bus_envelope_t env = {0};
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "actor", "discord:77");
        cJSON_AddStringToObject(data, "text", "burst");
        cJSON_AddNumberToObject(data, "n", i);
        CHECK_INT(bus_envelope_init(&env, "audit.note.recorded", "chaos", NULL, NULL, data), 0);
        ids[i] = strdup(env.id);
        CHECK_INT(bus_event_publish(c.conn, &env, on_confirm, &pub), 0);
        bus_envelope_clear(&env);
        if (i % 500 == 499) /* let the confirms come back */
            while (pub.confirmed + pub.failed < i + 1 - 1000 && uv_run(&c.loop, UV_RUN_ONCE)) {
            }
    }
    /* kill the streaming process once it has recorded part of the burst */
    double end = bt_now_ms() + 30000;
    while (tip(&c) < n / 3 && bt_now_ms() < end) usleep(20 * 1000);
    bt_kill(a, SIGKILL);
    while (pub.confirmed + pub.failed < n) uv_run(&c.loop, UV_RUN_ONCE);
    CHECK_INT(pub.failed, 0);
    pid_t a2 = start_audit("a2");

    end = bt_now_ms() + 60000;
    while (tip(&c) < n && bt_now_ms() < end) usleep(100 * 1000);
    usleep(500 * 1000);
    CHECK_INT(tip(&c), n); /* no event twice (that would pass n), none missing */
    cJSON *d = call(&c, "verify", "{}");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(d, "ok")));
    CHECK_INT(cJSON_GetObjectItem(d, "checked")->valueint, n);
    cJSON_Delete(d);
    /* every event id has its record, and only those */
    int found = 0;
    char **got = calloc((size_t)n + 1, sizeof *got);
    char params[2048], cursor[1200] = "";
    for (;;) {
        snprintf(params, sizeof params, "{\"limit\":1000%s%s%s}", *cursor ? ",\"cursor\":\"" : "", cursor,
                 *cursor ? "\"" : "");
        d = call(&c, "query", params);
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItem(d, "records")) {
            const char *sid = cJSON_GetObjectItem(r, "source_id")->valuestring;
            CHECK(strncmp(sid, "e:", 2) == 0);
            CHECK(found < n);
            got[found++] = strdup(sid + 2);
        }
        const cJSON *next = cJSON_GetObjectItem(d, "next_cursor");
        if (!cJSON_IsString(next)) {
            cJSON_Delete(d);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", next->valuestring);
        cJSON_Delete(d);
    }
    CHECK_INT(found, n);
    qsort(ids, (size_t)n, sizeof *ids, by_str);
    qsort(got, (size_t)n, sizeof *got, by_str);
    for (int i = 0; i < n; i++) CHECK_STR(got[i], ids[i]);
    for (int i = 0; i < n; i++) free(got[i]);
    free(got);
    /* the stream: every record once, in order, from the first */
    char cmd[1024], out_path[600];
    snprintf(out_path, sizeof out_path, "%s/audit-chaos-tail.out", tmpdir());
    int lines = 0;
    end = bt_now_ms() + 30000;
    do {
        snprintf(cmd, sizeof cmd, "%s/busctl tail --from first --json --idle-ms 1500 > %s", build(), out_path);
        CHECK_INT(system(cmd), 0);
        FILE *f = fopen(out_path, "r");
        CHECK(f != NULL);
        static char line[8192];
        int64_t want = 1;
        lines = 0;
        int seen_ids = 0;
        while (fgets(line, sizeof line, f)) {
            cJSON *r = cJSON_Parse(line);
            CHECK(r != NULL);
            CHECK_INT((int64_t)cJSON_GetObjectItem(r, "seq")->valuedouble, want);
            want++;
            lines++;
            seen_ids += strncmp(cJSON_GetObjectItem(r, "source_id")->valuestring, "e:", 2) == 0;
            cJSON_Delete(r);
        }
        fclose(f);
        CHECK_INT(seen_ids, lines);
    } while (lines < n && bt_now_ms() < end);
    CHECK_INT(lines, n);
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
    bt_client_close(&c);
    bt_kill(b, SIGKILL);
    bt_kill(a2, SIGKILL);
    drop_event_queue();
}

BUS_TESTS({"sigkill_during_a_burst", test_sigkill_during_a_burst, 150})
