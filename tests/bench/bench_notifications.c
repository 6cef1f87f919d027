/* Deliveries per second of bus-notifications against the fakes
 * (tests/support/fake_notify.h), and the fan-out latency: from publishing
 * one event.reminder to the last message arriving at a fake.
 *
 *   bench_notifications [--subs N]     (default 1000)
 *
 * Runs with 1 and 3 bus-notifications processes on one SQLite store:
 *   webhook  N signed generic webhooks (no rate limit: the machinery's own speed)
 *   mixed    N/2 Discord subscriptions on N/20 webhooks (5 per 2 s each),
 *            N/2 webhooks
 * and prints one line per run:
 *   procs=3 kind=webhook subs=1000 delivered=1000 fanout_ms=... deliveries_per_s=... violations=0
 * Needs BUS_AMQP_URL, BUS_REDIS_URL, BUS_TEST_TMPDIR, BUS_TEST_BUILD and
 * BUS_SCHEMAS_DIR (tests/bench/run.sh sets them). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/fake_notify.h"
#include "../support/support.h"

#define SECRET "bench-secret-0123456789"

typedef struct {
    int done, status;
} res_t;

static void on_reply(int status, const char *reply, size_t len, void *data) {
    (void)reply;
    (void)len;
    res_t *r = data;
    r->done++;
    if (status != 0 || !reply || !strstr(reply, "\"success\":true")) r->status = 1;
}

static void pump(bt_client_t *c, int ms) {
    int flag = 0;
    bt_run_until(c, &flag, ms);
}

static int run(bt_client_t *c, int procs, int mixed, int subs, int round) {
    bt_notify_t *fk = bt_notify_start(SECRET);
    const char *extra[] = {"BUS_LOG_LEVEL=warn", NULL};
    pid_t p[3];
    char name[64];
    snprintf(name, sizeof name, "bench-%d", round);
    for (int i = 0; i < procs; i++) {
        p[i] = bt_notify_worker(fk, name, i, i == 0, extra);
        if (i == 0 && bt_wait_ping("notifications", 15000) != 0) {
            fprintf(stderr, "bus-notifications did not answer\n");
            return 1;
        }
    }
    /* subscribe, 32 calls in flight */
    res_t r = {0};
    char params[800], path[100];
    int sent = 0;
    while (r.done < subs) {
        while (sent < subs && sent - r.done < 32) {
            int i = sent++;
            if (mixed && i < subs / 2) {
                snprintf(path, sizeof path, "/api/webhooks/97%03d/tok", i % (subs / 20 > 0 ? subs / 20 : 1));
                snprintf(params, sizeof params,
                         "{\"scope\":\"state\",\"id\":%d,\"destination\":{\"kind\":\"discord\",\"url\":\"%s\"},"
                         "\"topics\":[\"reminders\"]}",
                         100 + round, bt_notify_url(fk, path));
            } else {
                snprintf(path, sizeof path, "/hook/b%d", i);
                snprintf(params, sizeof params,
                         "{\"scope\":\"state\",\"id\":%d,\"destination\":{\"kind\":\"webhook\",\"url\":\"%s\",\"secret\":"
                         "\"%s\"},\"topics\":[\"reminders\"]}",
                         100 + round, bt_notify_url(fk, path), SECRET);
            }
            bus_rpc_call_opts_t o = {.timeout_ms = 20000};
            if (bus_rpc_call(c->rpc, "notifications", "subscribe", params, strlen(params), &o, on_reply, &r) != 0) {
                fprintf(stderr, "call failed\n");
                return 1;
            }
        }
        pump(c, 5);
    }
    if (r.status) {
        fprintf(stderr, "a subscribe failed\n");
        return 1;
    }
    if (procs > 1) bt_wait_ping("notifications", 15000);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "event", "77777777-7777-4777-8777-777777777777");
    cJSON_AddNullToObject(d, "alliance");
    cJSON_AddNumberToObject(d, "state", 100 + round);
    cJSON_AddStringToObject(d, "kind", "bear_trap");
    cJSON_AddStringToObject(d, "name", "Bear Trap");
    cJSON_AddStringToObject(d, "starts_at", "2026-12-03T21:00:00.000Z");
    cJSON_AddStringToObject(d, "ends_at", "2026-12-03T21:30:00.000Z");
    cJSON_AddStringToObject(d, "language", "en");
    cJSON_AddNullToObject(d, "channel_hint");
    cJSON_AddStringToObject(d, "due_at", "2026-12-03T20:50:00.000Z");
    cJSON_AddNumberToObject(d, "late_ms", 0);
    cJSON_AddNumberToObject(d, "minutes_left", 10);
    double t0 = bt_now_ms();
    bt_notify_publish(c->conn, "event.reminder", NULL, "bench", d);
    double end = t0 + 120000;
    while (bt_notify_total(fk) < subs && bt_now_ms() < end) pump(c, 5);
    double t1 = bt_notify_last_ms(fk);
    int total = bt_notify_total(fk);
    double ms = t1 - t0;
    printf("procs=%d kind=%s subs=%d delivered=%d fanout_ms=%.0f deliveries_per_s=%.0f violations=%d\n", procs,
           mixed ? "mixed" : "webhook", subs, total, ms, ms > 0 ? total * 1000.0 / ms : 0, bt_notify_violations(fk));
    fflush(stdout);
    for (int i = 0; i < procs; i++) {
        kill(p[i], SIGTERM);
        bt_wait_exit(p[i], 15000);
    }
    bt_notify_stop(fk);
    return total == subs ? 0 : 1;
}

int main(int argc, char **argv) {
    int subs = 1000;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--subs") == 0) subs = atoi(argv[i + 1]);
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "rpc.notifications");
    bt_delete_queue(&c, "events.notifications");
    int rc = 0, round = 0;
    for (int mixed = 0; mixed < 2; mixed++)
        for (int procs = 1; procs <= 3; procs += 2) rc |= run(&c, procs, mixed, subs, round++);
    bt_client_close(&c);
    return rc;
}
