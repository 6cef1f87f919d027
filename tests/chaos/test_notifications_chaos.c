/* bus-notifications under SIGKILL: a reminder fanned out to 500
 * subscriptions by 3 processes, two of which are killed with SIGKILL (one
 * right after the publish, while the delivery records are being written;
 * one in the middle of the sends) and started again. Nothing is lost: every
 * destination gets its messages and every record ends "sent". Duplicates
 * are bounded by the documented window (README "Notifications"): only a
 * send whose answer was not recorded yet when its process died is repeated,
 * so at most BUS_NOTIFY_CONCURRENCY per killed process. No destination goes
 * over its rate limit. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/fake_notify.h"
#include "../support/support.h"
#include "../test.h"

#define ALLIANCE "55555555-5555-4555-8555-555555555555"
#define SECRET "chaos-secret-0123456789"
#define CONCURRENCY 8

static bt_client_t C;

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

static cJSON *call(const char *method, const char *params) {
    res_t r = {0};
    bus_rpc_call_opts_t o = {.timeout_ms = 10000};
    CHECK_INT(bus_rpc_call(C.rpc, "notifications", method, params, strlen(params), &o, on_reply, &r), 0);
    bt_run_until(&C, &r.done, 15000);
    CHECK_INT(r.status, 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(r.reply, "success")));
    return r.reply;
}

static void pump(int ms) {
    int flag = 0;
    bt_run_until(&C, &flag, ms);
}

/* Records of the fan-out (by its correlation id) with status `status`. */
static int records(const char *status) {
    int n = 0;
    char cursor[1100] = "", params[1400];
    for (;;) {
        snprintf(params, sizeof params, "{\"correlation_id\":\"corr-chaos\",\"status\":\"%s\",\"limit\":100%s%s%s}", status,
                 cursor[0] ? ",\"cursor\":\"" : "", cursor, cursor[0] ? "\"" : "");
        cJSON *r = call("deliveries", params);
        const cJSON *d = cJSON_GetObjectItem(r, "data");
        n += cJSON_GetArraySize(cJSON_GetObjectItem(d, "deliveries"));
        const cJSON *next = cJSON_GetObjectItem(d, "next_cursor");
        int more = cJSON_IsString(next);
        if (more) snprintf(cursor, sizeof cursor, "%s", next->valuestring);
        cJSON_Delete(r);
        if (!more) return n;
    }
}

static void test_sigkill_during_fanout(void) {
    bt_notify_t *fk = bt_notify_start(SECRET);
    bt_client_open(&C);
    bt_delete_queue(&C, "rpc.notifications");
    bt_delete_queue(&C, "events.notifications");
    const char *extra[] = {"BUS_NOTIFY_CONCURRENCY=8", "BUS_LOG_LEVEL=warn", NULL};
    pid_t p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = bt_notify_worker(fk, "chaos", i, i == 0, extra);
        if (i == 0) CHECK(bt_wait_ping("notifications", 15000) == 0);
    }
    /* 200 Discord subscriptions on 20 webhooks (10 each: ~4 s of rate limit),
     * 300 webhooks answering after 150 ms */
    char params[800], url[300], path[100];
    for (int i = 0; i < 500; i++) {
        if (i < 200) {
            snprintf(path, sizeof path, "/api/webhooks/96%02d/tok", i % 20);
            snprintf(params, sizeof params, "{\"scope\":\"alliance\",\"id\":\"%s\",\"destination\":{\"kind\":\"discord\","
                     "\"url\":\"%s\"},\"topics\":[\"reminders\"]}", ALLIANCE, bt_notify_url(fk, path));
        } else {
            snprintf(path, sizeof path, "/hook/c%03d", i);
            snprintf(url, sizeof url, "%s", bt_notify_url(fk, path));
            snprintf(params, sizeof params, "{\"scope\":\"alliance\",\"id\":\"%s\",\"destination\":{\"kind\":\"webhook\","
                     "\"url\":\"%s\",\"secret\":\"%s\"},\"topics\":[\"reminders\"]}", ALLIANCE, url, SECRET);
            char key[32];
            snprintf(key, sizeof key, "wh:c%03d", i);
            bt_notify_rule(fk, key, 0, 0, 0, 150);
        }
        cJSON_Delete(call("subscribe", params));
    }
    CHECK(bt_wait_ping("notifications", 15000) == 0);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "event", "66666666-6666-4666-8666-666666666666");
    cJSON_AddStringToObject(d, "alliance", ALLIANCE);
    cJSON_AddNullToObject(d, "state");
    cJSON_AddStringToObject(d, "kind", "svs");
    cJSON_AddStringToObject(d, "name", "SvS");
    cJSON_AddStringToObject(d, "starts_at", "2026-12-03T21:00:00.000Z");
    cJSON_AddStringToObject(d, "ends_at", "2026-12-04T03:00:00.000Z");
    cJSON_AddStringToObject(d, "language", "en");
    cJSON_AddNullToObject(d, "channel_hint");
    cJSON_AddStringToObject(d, "due_at", "2026-12-03T20:00:00.000Z");
    cJSON_AddNumberToObject(d, "late_ms", 0);
    cJSON_AddNumberToObject(d, "minutes_left", 60);
    bt_notify_publish(C.conn, "event.reminder", NULL, "corr-chaos", d);
    /* kill one while the records are being written, one mid-send */
    usleep(30 * 1000);
    bt_kill(p[0], SIGKILL);
    double end = bt_now_ms() + 20000;
    while (bt_notify_total(fk) < 150 && bt_now_ms() < end) pump(10);
    int before = bt_notify_total(fk);
    bt_kill(p[1], SIGKILL);
    printf("  killed one process 30 ms after the publish and one after %d messages\n", before);
    p[0] = bt_notify_worker(fk, "chaos", 3, 0, extra);
    p[1] = bt_notify_worker(fk, "chaos", 4, 0, extra);
    /* everything arrives (the dead processes' claims come back after the lease) */
    end = bt_now_ms() + 40000;
    while (bt_notify_keys(fk) < 320 && bt_now_ms() < end) pump(50);
    for (int w = 0; w < 20; w++) {
        char key[32];
        snprintf(key, sizeof key, "discord:96%02d", w);
        while (bt_notify_count(fk, key) < 10 && bt_now_ms() < end) pump(50);
    }
    while (records("sent") < 500 && bt_now_ms() < end) pump(200);
    pump(1000);
    int dup = 0, lost = 0;
    for (int i = 0; i < 20; i++) {
        char key[32];
        snprintf(key, sizeof key, "discord:96%02d", i);
        int n = bt_notify_count(fk, key);
        if (n > 10) dup += n - 10;
        if (n < 10) lost += 10 - n;
    }
    for (int i = 200; i < 500; i++) {
        char key[32];
        snprintf(key, sizeof key, "wh:c%03d", i);
        int n = bt_notify_count(fk, key);
        if (n > 1) dup += n - 1;
        if (n < 1) lost++;
    }
    printf("  %d messages for 500 deliveries: %d lost, %d duplicated (bound %d)\n", bt_notify_total(fk), lost, dup,
           2 * CONCURRENCY);
    CHECK_INT(lost, 0);
    CHECK_INT(records("sent"), 500);
    CHECK_INT(records("pending"), 0);
    CHECK_INT(records("dead"), 0);
    CHECK(dup <= 2 * CONCURRENCY);
    CHECK_INT(bt_notify_total(fk), 500 + dup);
    CHECK_INT(bt_notify_violations(fk), 0);
    CHECK_INT(bt_notify_bad_signatures(fk), 0);
    for (int i = 0; i < 3; i++) {
        kill(p[i], SIGTERM);
        CHECK_INT(bt_wait_exit(p[i], 15000), 0);
    }
    bt_client_close(&C);
    bt_notify_stop(fk);
}

BUS_TESTS({"sigkill_during_fanout", test_sigkill_during_fanout, 90})
