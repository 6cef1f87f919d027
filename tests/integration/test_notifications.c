/* bus-notifications through a real broker, Redis and SQLite store, against
 * fake Discord, Telegram and webhook endpoints (tests/support/fake_notify.h):
 * subscriptions with secrets masked (answers and logs), rendering per
 * destination and language, signed webhooks, exactly one message per
 * (event, subscription) on redelivery, retries (429 retry_after, 5xx, slow),
 * dead deliveries and disabled subscriptions (404), announcements, and one
 * reminder fanned out to 1,000 subscriptions by 3 processes. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/fake_notify.h"
#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/topology.h"

#define ALLIANCE_A "11111111-1111-4111-8111-111111111111"
#define ALLIANCE_B "22222222-2222-4222-8222-222222222222"
#define WH_SECRET "whsec-0123456789abcdef"

static bt_notify_t *fk;
static bt_client_t C;
static pid_t pids[3];
static int npids;

/* ---- events the worker publishes ------------------------------------------- */

static int n_disabled, n_announced;
static char last_disabled[2048];

static void on_event(bus_msg_t *m, void *data) {
    (void)data;
    if (strcmp(m->routing_key, "subscription.disabled") == 0) {
        n_disabled++;
        snprintf(last_disabled, sizeof last_disabled, "%.*s", (int)m->len, m->body);
    }
    if (strcmp(m->routing_key, "announcement.published") == 0) n_announced++;
    bus_msg_ack(m);
}

static void setup(const char *name, int workers, const char *const *extra) {
    n_disabled = n_announced = 0;
    fk = bt_notify_start(WH_SECRET);
    bt_client_open(&C);
    bt_delete_queue(&C, "rpc.notifications");
    bt_delete_queue(&C, "events.notifications");
    npids = workers;
    for (int i = 0; i < workers; i++) {
        pids[i] = bt_notify_worker(fk, name, i, i == 0, extra);
        CHECK(pids[i] > 0);
        if (i == 0) CHECK(bt_wait_ping("notifications", 15000) == 0); /* the first one creates the tables */
    }
    char q[64];
    snprintf(q, sizeof q, "test.notifications.%d", (int)getpid());
    bus_queue_options_t o = {.exclusive = 1, .auto_delete = 1};
    CHECK(bus_conn_declare_queue(C.conn, q, &o) == 0);
    CHECK(bus_conn_bind(C.conn, q, BUS_EXCHANGE_EVENTS, "subscription.disabled") == 0);
    CHECK(bus_conn_bind(C.conn, q, BUS_EXCHANGE_EVENTS, "announcement.published") == 0);
    CHECK(bus_conn_consume(C.conn, q, 0, 1, amqp_empty_table, on_event, NULL, NULL, 0) == 0);
}

static void teardown(void) {
    for (int i = 0; i < npids; i++) {
        kill(pids[i], SIGTERM);
        CHECK_INT(bt_wait_exit(pids[i], 15000), 0);
    }
    bt_client_close(&C);
    bt_notify_stop(fk);
}

static void pump(int ms) {
    int flag = 0;
    bt_run_until(&C, &flag, ms);
}

/* Waits until fn() >= want (or the time is up); returns fn(). */
#define WAIT_FOR(expr, want, ms)                                        \
    do {                                                                \
        double end_ = bt_now_ms() + (ms);                               \
        while ((expr) < (want) && bt_now_ms() < end_) pump(20);         \
    } while (0)

/* ---- calls ------------------------------------------------------------------ */

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

static char *last_text;

static cJSON *call(const char *method, const char *fmt, ...) {
    static char params[20000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(params, sizeof params, fmt, ap);
    va_end(ap);
    res_t r = {0};
    bus_rpc_call_opts_t o = {.timeout_ms = 10000, .correlation_id = "corr-test"};
    CHECK_INT(bus_rpc_call(C.rpc, "notifications", method, params, strlen(params), &o, on_reply, &r), 0);
    bt_run_until(&C, &r.done, 15000);
    CHECK_INT(r.status, 0);
    CHECK(r.reply != NULL);
    free(last_text);
    last_text = cJSON_PrintUnformatted(r.reply);
    return r.reply;
}

static const char *dstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static const cJSON *ok_data(cJSON *reply) {
    if (!cJSON_IsTrue(cJSON_GetObjectItem(reply, "success"))) fprintf(stderr, "  expected success, got %s\n", last_text);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(reply, "success")));
    return cJSON_GetObjectItem(reply, "data");
}

static void expect_error(cJSON *reply, const char *code, const char *needle) {
    if (strcmp(dstr(reply, "error"), code) != 0) fprintf(stderr, "  expected %s, got %s\n", code, last_text);
    CHECK_STR(dstr(reply, "error"), code);
    if (needle) CHECK_CONTAINS(dstr(reply, "message"), needle);
    cJSON_Delete(reply);
}

/* Subscribes; returns the subscription id (static, one of 8). */
static const char *subscribe(const char *scope_id_json, const char *dest_json, const char *topics, const char *lang) {
    static char ids[8][40];
    static int k;
    cJSON *r = call("subscribe", "{\"scope\":\"%s\",\"id\":%s,\"destination\":%s,\"topics\":%s,\"language\":\"%s\"}",
                    scope_id_json[0] == '"' ? "alliance" : "state", scope_id_json, dest_json, topics, lang);
    const cJSON *d = ok_data(r);
    char *id = ids[k++ % 8];
    snprintf(id, 40, "%s", dstr(d, "subscription"));
    CHECK(strlen(id) == 36);
    cJSON_Delete(r);
    return id;
}

static const char *discord_dest(const char *id) {
    static char b[4][300];
    static int k;
    char *o = b[k++ % 4];
    char path[100];
    snprintf(path, sizeof path, "/api/webhooks/%s/tok-%s-SECRET", id, id);
    snprintf(o, 300, "{\"kind\":\"discord\",\"url\":\"%s\"}", bt_notify_url(fk, path));
    return o;
}

static const char *telegram_dest(long long chat, const char *bot) {
    static char b[4][200];
    static int k;
    char *o = b[k++ % 4];
    snprintf(o, 200, "{\"kind\":\"telegram\",\"chat_id\":%lld,\"bot\":\"%s\"}", chat, bot);
    return o;
}

static const char *webhook_dest(const char *name) {
    static char b[4][300];
    static int k;
    char *o = b[k++ % 4];
    char path[100];
    snprintf(path, sizeof path, "/hook/%s", name);
    snprintf(o, 300, "{\"kind\":\"webhook\",\"url\":\"%s\",\"secret\":\"%s\"}", bt_notify_url(fk, path), WH_SECRET);
    return o;
}

/* An event.reminder as the events domain publishes it. */
static cJSON *reminder(const char *alliance, int state, const char *name, int minutes) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "event", "33333333-3333-4333-8333-333333333333");
    if (alliance) cJSON_AddStringToObject(d, "alliance", alliance);
    else cJSON_AddNullToObject(d, "alliance");
    if (state) cJSON_AddNumberToObject(d, "state", state);
    else cJSON_AddNullToObject(d, "state");
    cJSON_AddStringToObject(d, "kind", "bear_trap");
    cJSON_AddStringToObject(d, "name", name);
    cJSON_AddStringToObject(d, "starts_at", "2026-12-03T21:00:00.000Z");
    cJSON_AddStringToObject(d, "ends_at", "2026-12-03T21:30:00.000Z");
    cJSON_AddStringToObject(d, "language", "en");
    cJSON_AddNullToObject(d, "channel_hint");
    cJSON_AddStringToObject(d, "due_at", "2026-12-03T20:55:00.000Z");
    cJSON_AddNumberToObject(d, "late_ms", 3);
    cJSON_AddNumberToObject(d, "minutes_left", minutes);
    cJSON_AddStringToObject(d, "what", "reminder");
    return d;
}

/* Deliveries of a subscription: the first page's records (reply owned by caller). */
static cJSON *deliveries_of(const char *sub) {
    return call("deliveries", "{\"subscription\":\"%s\"}", sub);
}

static int count_status(const char *sub, const char *status) {
    cJSON *r = deliveries_of(sub);
    int n = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(ok_data(r), "deliveries")) n += strcmp(dstr(d, "status"), status) == 0;
    cJSON_Delete(r);
    return n;
}

static int sent_for(const char *corr) {
    cJSON *r = call("deliveries", "{\"correlation_id\":\"%s\",\"status\":\"sent\",\"limit\":100}", corr);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "deliveries"));
    cJSON_Delete(r);
    return n;
}

static int file_contains(const char *path, const char *needle) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

/* ---- tests --------------------------------------------------------------------- */

/* subscribe/list/unsubscribe, every secret masked, bad destinations refused */
static void test_subscriptions(void) {
    setup("subs", 1, NULL);
    const char *s1 = subscribe("\"" ALLIANCE_A "\"", discord_dest("9001"), "[\"reminders\",\"announcements\"]", "de");
    const char *s2 = subscribe("\"" ALLIANCE_A "\"", telegram_dest(-100123, "alpha"), "[\"reminders\"]", "ru");
    const char *s3 = subscribe("1234", webhook_dest("subs"), "[\"gift_codes\"]", "en");
    (void)s2;
    (void)s3;
    cJSON *r = call("list", "{\"scope\":\"alliance\",\"id\":\"%s\"}", ALLIANCE_A);
    const cJSON *subs = cJSON_GetObjectItem(ok_data(r), "subscriptions");
    CHECK_INT(cJSON_GetArraySize(subs), 2);
    CHECK(!strstr(last_text, "SECRET"));
    CHECK_CONTAINS(last_text, "/api/webhooks/9001/****");
    CHECK_CONTAINS(last_text, "\"bot\":\"alpha\"");
    cJSON_Delete(r);
    r = call("list", "{\"scope\":\"state\",\"id\":1234}");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "subscriptions")), 1);
    CHECK(!strstr(last_text, WH_SECRET));
    CHECK_CONTAINS(last_text, "\"secret\":\"****\"");
    cJSON_Delete(r);
    /* paging */
    r = call("list", "{\"limit\":2}");
    const cJSON *d = ok_data(r);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(d, "subscriptions")), 2);
    char cursor[1100];
    snprintf(cursor, sizeof cursor, "%s", dstr(d, "next_cursor"));
    CHECK(cursor[0]);
    cJSON_Delete(r);
    r = call("list", "{\"limit\":2,\"cursor\":\"%s\"}", cursor);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "subscriptions")), 1);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(ok_data(r), "next_cursor")));
    cJSON_Delete(r);
    /* refusals */
    expect_error(call("subscribe", "{\"scope\":\"alliance\",\"id\":\"%s\",\"destination\":{\"kind\":\"discord\","
                                   "\"url\":\"https://evil.example/api/webhooks/1/x\"},\"topics\":[\"reminders\"]}",
                      ALLIANCE_A),
                 "invalid", "not a Discord webhook URL");
    expect_error(call("subscribe", "{\"scope\":\"alliance\",\"id\":\"%s\",\"destination\":%s,\"topics\":[\"reminders\"]}",
                      ALLIANCE_A, telegram_dest(5, "nobody")),
                 "invalid", "no bot named");
    expect_error(call("subscribe", "{\"scope\":\"state\",\"id\":\"%s\",\"destination\":%s,\"topics\":[\"reminders\"]}",
                      ALLIANCE_A, webhook_dest("x")),
                 "invalid", "state number");
    expect_error(call("subscribe", "{\"scope\":\"state\",\"id\":5,\"destination\":%s,\"topics\":[\"weather\"]}",
                      webhook_dest("x")),
                 "invalid", NULL);
    expect_error(call("subscribe", "{\"scope\":\"state\",\"id\":5,\"destination\":{\"kind\":\"webhook\",\"url\":\"http://x/\","
                                   "\"secret\":\"short\"},\"topics\":[\"reminders\"]}"),
                 "invalid", NULL);
    /* unsubscribe */
    r = call("unsubscribe", "{\"subscription\":\"%s\"}", s1);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(ok_data(r), "removed")));
    cJSON_Delete(r);
    expect_error(call("unsubscribe", "{\"subscription\":\"%s\"}", s1), "not_found", NULL);
    teardown();
    /* no secret in the log either */
    char log[600];
    snprintf(log, sizeof log, "%s/notifications-subs-0.log", getenv("BUS_TEST_TMPDIR"));
    CHECK(file_contains(log, "starting"));
    CHECK(!file_contains(log, "SECRET"));
    CHECK(!file_contains(log, WH_SECRET));
}

/* One reminder to three destinations in three languages; the same event
 * again (a redelivery) sends nothing more. */
static void test_reminder_rendered_once(void) {
    setup("render", 1, NULL);
    const char *sd = subscribe("\"" ALLIANCE_A "\"", discord_dest("9101"), "[\"reminders\"]", "en");
    const char *st = subscribe("\"" ALLIANCE_A "\"", telegram_dest(-100200, "alpha"), "[\"reminders\"]", "ru");
    const char *sw = subscribe("4321", webhook_dest("render"), "[\"reminders\"]", "ar");
    subscribe("\"" ALLIANCE_A "\"", discord_dest("9102"), "[\"announcements\"]", "en"); /* another topic */
    subscribe("\"" ALLIANCE_B "\"", discord_dest("9103"), "[\"reminders\"]", "en");       /* another alliance */
    for (int i = 0; i < 2; i++)
        bt_notify_publish(C.conn, "event.reminder", "44444444-4444-4444-8444-444444444444", "corr-rem-1",
                          reminder(ALLIANCE_A, 4321, "Bear <Trap> & Co", 5));
    WAIT_FOR(bt_notify_total(fk), 3, 15000);
    pump(1500); /* a second message would come now */
    CHECK_INT(bt_notify_count(fk, "discord:9101"), 1);
    CHECK_INT(bt_notify_count(fk, "tg:-100200"), 1);
    CHECK_INT(bt_notify_count(fk, "wh:render"), 1);
    CHECK_INT(bt_notify_count(fk, "discord:9102"), 0);
    CHECK_INT(bt_notify_count(fk, "discord:9103"), 0);
    CHECK_INT(bt_notify_total(fk), 3);
    CHECK_INT(bt_notify_bad_signatures(fk), 0);
    char *b = bt_notify_last_body(fk, "discord:9101");
    CHECK_CONTAINS(b, "\"embeds\":[{\"title\":\"Reminder: Bear <Trap> & Co\"");
    CHECK_CONTAINS(b, "starts in 5 minutes.");
    CHECK_CONTAINS(b, "\"allowed_mentions\":{\"parse\":[]}");
    free(b);
    b = bt_notify_last_body(fk, "tg:-100200");
    CHECK_CONTAINS(b, "\"parse_mode\":\"HTML\"");
    CHECK_CONTAINS(b, "<b>Напоминание: Bear &lt;Trap&gt; &amp; Co</b>\\n");
    CHECK_CONTAINS(b, "через 5 минут."); /* ru: 5 -> many */
    free(b);
    b = bt_notify_last_body(fk, "wh:render");
    CHECK_CONTAINS(b, "\"type\":\"event.reminder\"");
    CHECK_CONTAINS(b, "\"language\":\"ar\"");
    CHECK_CONTAINS(b, "5 دقائق"); /* ar: 5 -> few */
    CHECK_CONTAINS(b, "\"delivery\":\"44444444-4444-4444-8444-444444444444.");
    free(b);
    /* the records */
    const char *subs[] = {sd, st, sw};
    for (int i = 0; i < 3; i++) {
        cJSON *r = deliveries_of(subs[i]);
        const cJSON *list = cJSON_GetObjectItem(ok_data(r), "deliveries");
        CHECK_INT(cJSON_GetArraySize(list), 1);
        const cJSON *d = cJSON_GetArrayItem(list, 0);
        CHECK_STR(dstr(d, "status"), "sent");
        CHECK_INT((int)cJSON_GetObjectItem(d, "attempts")->valuedouble, 1);
        CHECK_STR(dstr(d, "correlation_id"), "corr-rem-1");
        cJSON_Delete(r);
    }
    cJSON *r = call("deliveries", "{\"correlation_id\":\"corr-rem-1\"}");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(ok_data(r), "deliveries")), 3);
    cJSON_Delete(r);
    /* test message: through the same path */
    r = call("test", "{\"subscription\":\"%s\"}", st);
    CHECK_STR(dstr(ok_data(r), "status"), "pending");
    cJSON_Delete(r);
    WAIT_FOR(bt_notify_count(fk, "tg:-100200"), 2, 10000);
    b = bt_notify_last_body(fk, "tg:-100200");
    CHECK_CONTAINS(b, "Тестовое сообщение");
    free(b);
    teardown();
}

/* 429 with retry_after (Discord body, Telegram parameters, HTTP header),
 * 5xx, a slow answer past the time limit: each retried to success, the
 * retry_after honoured (no resend before it). */
static void test_retries(void) {
    setup("retries", 1, NULL);
    const char *sd = subscribe("\"" ALLIANCE_A "\"", discord_dest("9201"), "[\"reminders\"]", "en");
    const char *st = subscribe("\"" ALLIANCE_A "\"", telegram_dest(-100300, "beta"), "[\"reminders\"]", "en");
    const char *sw = subscribe("\"" ALLIANCE_A "\"", webhook_dest("retry503"), "[\"reminders\"]", "en");
    const char *s5 = subscribe("\"" ALLIANCE_A "\"", discord_dest("9202"), "[\"reminders\"]", "en");
    const char *sl = subscribe("\"" ALLIANCE_A "\"", webhook_dest("slow"), "[\"reminders\"]", "en");
    bt_notify_rule(fk, "discord:9201", 429, 1, 1.5, 0);
    bt_notify_rule(fk, "tg:-100300", 429, 1, 2, 0);
    bt_notify_rule(fk, "wh:retry503", 503, 1, 1, 0);
    bt_notify_rule(fk, "discord:9202", 500, 2, 0, 0);
    bt_notify_rule(fk, "wh:slow", 0, 1, 0, 2500); /* past BUS_NOTIFY_HTTP_TIMEOUT_MS=1000 */
    double t0 = bt_now_ms();
    bt_notify_publish(C.conn, "event.reminder", NULL, "corr-retry", reminder(ALLIANCE_A, 0, "Crazy Joe", 1));
    const char *keys[] = {"discord:9201", "tg:-100300", "wh:retry503", "discord:9202", "wh:slow"};
    for (int i = 0; i < 5; i++) WAIT_FOR(bt_notify_count(fk, keys[i]), 1, 20000);
    (void)t0;
    CHECK_INT(bt_notify_count(fk, "discord:9201"), 1);
    CHECK_INT(bt_notify_hits(fk, "discord:9201"), 2);
    CHECK_INT(bt_notify_count(fk, "tg:-100300"), 1);
    CHECK_INT(bt_notify_hits(fk, "tg:-100300"), 2);
    CHECK_INT(bt_notify_count(fk, "wh:retry503"), 1);
    CHECK_INT(bt_notify_count(fk, "discord:9202"), 1);
    CHECK_INT(bt_notify_hits(fk, "discord:9202"), 3);
    CHECK(bt_notify_count(fk, "wh:slow") >= 1); /* the slow answer may have arrived after the time limit */
    /* retry_after was honoured: the second request arrived at least that long after the first */
    CHECK(bt_notify_last_gap_ms(fk, "discord:9201") >= 1500);
    CHECK(bt_notify_last_gap_ms(fk, "tg:-100300") >= 2000);
    CHECK(bt_notify_last_gap_ms(fk, "wh:retry503") >= 1000);
    int attempts[] = {2, 2, 2, 3};
    const char *subs[] = {sd, st, sw, s5};
    for (int i = 0; i < 4; i++) {
        /* the fake service counts a delivery when it answers 2xx; the worker
         * records "sent" once that answer is back and stored (under ASan it
         * was still "pending" here once) */
        WAIT_FOR(count_status(subs[i], "sent"), 1, 10000);
        cJSON *r = deliveries_of(subs[i]);
        const cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItem(ok_data(r), "deliveries"), 0);
        CHECK_STR(dstr(d, "status"), "sent");
        CHECK_INT((int)cJSON_GetObjectItem(d, "attempts")->valuedouble, attempts[i]);
        cJSON_Delete(r);
    }
    WAIT_FOR(count_status(sl, "sent"), 1, 10000);
    CHECK(count_status(sl, "sent") == 1);
    CHECK_INT(bt_notify_violations(fk), 0);
    teardown();
}

/* A deleted webhook (404 every time): the delivery dies with its last error,
 * the subscription is disabled after BUS_NOTIFY_DISABLE_AFTER answers and
 * subscription.disabled is published once; a 400 is dead at once. */
static void test_dead_and_disabled(void) {
    const char *extra[] = {"BUS_NOTIFY_DISABLE_AFTER=3", "BUS_NOTIFY_MAX_ATTEMPTS=3", NULL};
    setup("dead", 1, extra);
    const char *sg = subscribe("\"" ALLIANCE_A "\"", discord_dest("9301"), "[\"reminders\",\"started\"]", "en");
    const char *sb = subscribe("\"" ALLIANCE_A "\"", webhook_dest("bad400"), "[\"reminders\"]", "en");
    const char *sok = subscribe("\"" ALLIANCE_A "\"", discord_dest("9302"), "[\"reminders\"]", "en");
    bt_notify_rule(fk, "discord:9301", 404, 0, 0, 0);
    bt_notify_rule(fk, "wh:bad400", 400, 0, 0, 0);
    bt_notify_publish(C.conn, "event.reminder", NULL, "corr-dead", reminder(ALLIANCE_A, 0, "SvS", 15));
    WAIT_FOR(n_disabled, 1, 15000);
    WAIT_FOR(count_status(sg, "dead"), 1, 10000);
    CHECK_INT(n_disabled, 1);
    CHECK_CONTAINS(last_disabled, "\"http_status\":404");
    CHECK_INT(bt_notify_hits(fk, "discord:9301"), 3);
    cJSON *r = deliveries_of(sg);
    const cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItem(ok_data(r), "deliveries"), 0);
    CHECK_STR(dstr(d, "status"), "dead");
    CHECK_CONTAINS(dstr(d, "last_error"), "HTTP 404: Unknown Webhook");
    cJSON_Delete(r);
    WAIT_FOR(count_status(sb, "dead"), 1, 10000);
    CHECK_INT(bt_notify_hits(fk, "wh:bad400"), 1);
    CHECK_INT(count_status(sok, "sent"), 1);
    r = call("list", "{\"scope\":\"alliance\",\"id\":\"%s\"}", ALLIANCE_A);
    CHECK_CONTAINS(last_text, "\"enabled\":false");
    CHECK_CONTAINS(last_text, "HTTP 404 3 times in a row");
    cJSON_Delete(r);
    /* a disabled subscription gets nothing more */
    cJSON *started = reminder(ALLIANCE_A, 0, "SvS", 0);
    bt_notify_publish(C.conn, "event.started", NULL, "corr-started", started);
    expect_error(call("test", "{\"subscription\":\"%s\"}", sg), "conflict", "disabled");
    pump(1000);
    CHECK_INT(bt_notify_hits(fk, "discord:9301"), 3);
    CHECK_INT(n_disabled, 1);
    teardown();
}

/* announce -> announcement.published -> the scope's announcement subscribers */
static void test_announce(void) {
    setup("announce", 1, NULL);
    subscribe("77", discord_dest("9401"), "[\"announcements\"]", "fr");
    subscribe("77", discord_dest("9402"), "[\"reminders\"]", "fr");
    subscribe("78", discord_dest("9403"), "[\"announcements\"]", "fr");
    cJSON *r = call("announce", "{\"scope\":\"state\",\"id\":77,\"title\":\"Maintenance\",\"body\":\"Servers restart at "
                                "02:00 UTC.\",\"category\":\"maintenance\"}");
    CHECK_STR(dstr(ok_data(r), "title"), "Maintenance");
    cJSON_Delete(r);
    WAIT_FOR(bt_notify_count(fk, "discord:9401"), 1, 10000);
    pump(500);
    CHECK_INT(n_announced, 1);
    CHECK_INT(bt_notify_count(fk, "discord:9401"), 1);
    CHECK_INT(bt_notify_total(fk), 1);
    char *b = bt_notify_last_body(fk, "discord:9401");
    CHECK_CONTAINS(b, "\"title\":\"Maintenance\"");
    CHECK_CONTAINS(b, "Catégorie : maintenance");
    free(b);
    char title[200];
    memset(title, 'x', 101);
    title[101] = 0;
    expect_error(call("announce", "{\"scope\":\"state\",\"id\":77,\"title\":\"%s\",\"body\":\"b\",\"category\":\"c\"}", title),
                 "invalid", "/title");
    teardown();
}

/* One reminder to 1,000 subscriptions handled by 3 processes: every
 * destination gets exactly its messages, none over its rate limit:
 *   600 Discord subscriptions on 60 webhooks (10 each: 5 per 2 s applies),
 *   200 Telegram subscriptions on 40 chats of 2 bots (1/s per chat, 30/s per bot),
 *   200 webhooks (signed), one each. */
static void test_fanout_three_processes(void) {
    setup("fanout", 3, NULL);
    CHECK(bt_wait_ping("notifications", 15000) == 0);
    char dest[300];
    for (int i = 0; i < 1000; i++) {
        if (i < 600) {
            char id[16];
            snprintf(id, sizeof id, "95%02d", i % 60);
            snprintf(dest, sizeof dest, "%s", discord_dest(id));
        } else if (i < 800) {
            snprintf(dest, sizeof dest, "%s", telegram_dest(-200000 - (i % 40), (i % 40) < 20 ? "alpha" : "beta"));
        } else {
            char name[16];
            snprintf(name, sizeof name, "fan%03d", i - 800);
            snprintf(dest, sizeof dest, "%s", webhook_dest(name));
        }
        cJSON *r = call("subscribe", "{\"scope\":\"alliance\",\"id\":\"%s\",\"destination\":%s,\"topics\":[\"reminders\"],"
                                     "\"language\":\"%s\"}",
                        ALLIANCE_A, dest, i % 2 ? "uk" : "ja");
        ok_data(r);
        cJSON_Delete(r);
    }
    double t0 = bt_now_ms();
    bt_notify_publish(C.conn, "event.reminder", NULL, "corr-fanout", reminder(ALLIANCE_A, 0, "Foundry", 10));
    WAIT_FOR(bt_notify_total(fk), 1000, 60000);
    double t1 = bt_notify_last_ms(fk);
    pump(1500);
    CHECK_INT(bt_notify_total(fk), 1000);
    for (int w = 0; w < 60; w++) {
        char key[32];
        snprintf(key, sizeof key, "discord:95%02d", w);
        CHECK_INT(bt_notify_count(fk, key), 10);
    }
    for (int c = 0; c < 40; c++) {
        char key[32];
        snprintf(key, sizeof key, "tg:%d", -200000 - c);
        CHECK_INT(bt_notify_count(fk, key), 5);
    }
    CHECK_INT(bt_notify_keys(fk), 60 + 40 + 200);
    CHECK_INT(bt_notify_keys_over(fk, 10), 0);
    CHECK_INT(bt_notify_violations(fk), 0);
    CHECK_INT(bt_notify_bad_signatures(fk), 0);
    printf("  fan-out of 1000: last delivery %.0f ms after the publish\n", t1 - t0);
    /* every process took part */
    teardown();
    int sending = 0;
    for (int i = 0; i < 3; i++) {
        char log[600];
        snprintf(log, sizeof log, "%s/notifications-fanout-%d.log", getenv("BUS_TEST_TMPDIR"), i);
        sending += file_contains(log, "starting");
    }
    CHECK_INT(sending, 3);
}

/* SIGTERM in the middle of sends: the drain waits for the sends in flight
 * and records them, so the next process sends the rest and nothing twice. */
static void test_sigterm_drains_sends(void) {
    setup("sigterm", 1, NULL);
    for (int i = 0; i < 40; i++) {
        char name[16], key[24];
        snprintf(name, sizeof name, "term%02d", i);
        snprintf(key, sizeof key, "wh:%s", name);
        subscribe("\"" ALLIANCE_B "\"", webhook_dest(name), "[\"reminders\"]", "es");
        bt_notify_rule(fk, key, 0, 0, 0, 400); /* slow: sends are in flight when the signal comes */
    }
    bt_notify_publish(C.conn, "event.reminder", NULL, "corr-term", reminder(ALLIANCE_B, 0, "Canyon", 30));
    WAIT_FOR(bt_notify_http(fk) ? (int)bt_fake_http_held(bt_notify_http(fk)) : 0, 4, 10000);
    CHECK(bt_fake_http_held(bt_notify_http(fk)) >= 4);
    kill(pids[0], SIGTERM);
    CHECK_INT(bt_wait_exit(pids[0], 15000), 0);
    int at_exit = bt_notify_total(fk);
    CHECK(at_exit < 40);
    pids[0] = bt_notify_worker(fk, "sigterm", 1, 0, NULL);
    WAIT_FOR(bt_notify_total(fk), 40, 20000);
    WAIT_FOR(sent_for("corr-term"), 40, 20000); /* a send cut by the signal would be sent again after the lease */
    CHECK_INT(sent_for("corr-term"), 40);
    pump(500);
    printf("  %d delivered before SIGTERM's drain ended, %d in all\n", at_exit, bt_notify_total(fk));
    CHECK_INT(bt_notify_total(fk), 40);
    CHECK_INT(bt_notify_keys_over(fk, 1), 0);
    teardown();
}

BUS_TESTS({"subscriptions", test_subscriptions, 60}, {"reminder_rendered_once", test_reminder_rendered_once, 60},
          {"retries", test_retries, 60}, {"dead_and_disabled", test_dead_and_disabled, 60},
          {"announce", test_announce, 60}, {"fanout_three_processes", test_fanout_three_processes, 120},
          {"sigterm_drains_sends", test_sigterm_drains_sends, 60})
