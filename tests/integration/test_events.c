/* Events through a real broker: delivery to the handler, binary mode,
 * retries with delay, dead-lettering with the reason for every kind of bad
 * message, and the worker going on afterwards. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/publish.h"
#include "bus/topology.h"

/* The handler's behaviour is chosen by the event's subject:
 *   "ok"         ack
 *   "flaky"      unavailable on the first attempt, then ack
 *   "broken"     always unavailable (retried, then dead-lettered)
 *   "reject"     permission_denied (dead-lettered at once)
 * Every handled event is reported by publishing test.seen with the original
 * id and attempt, which the test consumes from its own queue. */
static void on_test_event(bus_event_t *ev) {
    const bus_envelope_t *e = bus_event_envelope(ev);
    const char *subject = e->subject ? e->subject : "ok";
    int status = 0;
    if (strcmp(subject, "flaky") == 0 && bus_event_attempt(ev) == 1) status = BUS_EUNAVAILABLE;
    if (strcmp(subject, "broken") == 0) status = BUS_EUNAVAILABLE;
    if (strcmp(subject, "reject") == 0) status = BUS_EPERMISSION;
    cJSON *seen = cJSON_CreateObject();
    cJSON_AddStringToObject(seen, "id", e->id);
    cJSON_AddNumberToObject(seen, "attempt", bus_event_attempt(ev));
    cJSON_AddBoolToObject(seen, "acked", status == 0);
    bus_worker_publish(bus_event_worker(ev), "testseen.handled", seen, subject, e->correlationid, NULL, NULL, NULL);
    bus_event_done(ev, status, status ? "the test handler said so" : NULL);
}

static const bus_subscription_t subs[] = {{"testev.#", on_test_event}, {NULL, NULL}};
static const bus_worker_def_t testev = {.service = "testev", .summary = "test worker", .subscriptions = subs};

typedef struct {
    int count;
    char bodies[64][2048];
    char reasons[64][512];
} inbox_t;

static void on_inbox(bus_msg_t *m, void *data) {
    inbox_t *in = data;
    if (in->count < 64) {
        snprintf(in->bodies[in->count], sizeof in->bodies[0], "%.*s", (int)m->len, m->body);
        const char *r = bus_msg_header(m, BUS_HDR_DEAD_REASON);
        if (!r) r = bus_msg_header(m, "x-first-death-reason"); /* dead-lettered by the broker */
        snprintf(in->reasons[in->count], sizeof in->reasons[0], "%s", r ? r : "");
        in->count++;
    }
    bus_msg_ack(m);
}

static inbox_t seen, dead;
static int confirmed;
static void on_confirm(int status, void *data) {
    (void)data;
    if (status == 0) confirmed++;
}

/* Starts the worker (fresh queues) and a client that watches test.seen and dead.testev. */
static pid_t setup_with(bt_client_t *c, const char *extra_env) {
    memset(&seen, 0, sizeof seen);
    memset(&dead, 0, sizeof dead);
    confirmed = 0;
    bt_client_open(c);
    bt_delete_queue(c, "events.testev");
    bt_delete_queue(c, "dead.testev");
    bt_delete_queue(c, "retry.testev");
    const char *env[] = {"BUS_RETRY_DELAY_MS=50", "BUS_MAX_ATTEMPTS=3", extra_env, NULL};
    pid_t w = bt_spawn_worker(&testev, env);
    CHECK(bt_wait_ping("testev", 15000) == 0);
    bus_queue_options_t tmp = {.exclusive = 1, .auto_delete = 1};
    CHECK(bus_conn_declare_queue(c->conn, "test.seen.inbox", &tmp) == 0);
    CHECK(bus_conn_bind(c->conn, "test.seen.inbox", BUS_EXCHANGE_EVENTS, "testseen.handled") == 0);
    CHECK(bus_conn_consume(c->conn, "test.seen.inbox", 0, 1, amqp_empty_table, on_inbox, &seen, NULL, 0) == 0);
    CHECK(bus_conn_consume(c->conn, "dead.testev", 0, 0, amqp_empty_table, on_inbox, &dead, NULL, 0) == 0);
    return w;
}

static pid_t setup(bt_client_t *c) { return setup_with(c, NULL); }

static void publish_event(bt_client_t *c, const char *type, const char *subject, const char *json) {
    bus_envelope_t env = {0};
    CHECK(bus_envelope_init(&env, type, "test", subject, NULL, cJSON_Parse(json)) == 0);
    CHECK(bus_event_publish(c->conn, &env, on_confirm, NULL) == 0);
    bus_envelope_clear(&env);
}

static void publish_raw(bt_client_t *c, const char *key, const char *body, size_t len, const char *content_type,
                        const bus_header_t *headers, size_t nheaders) {
    char id[37];
    bus_uuid(id);
    bus_publish_t p = {.exchange = BUS_EXCHANGE_EVENTS, .routing_key = key, .body = body, .len = len,
                       .content_type = content_type, .message_id = id, .persistent = 1,
                       .headers = headers, .nheaders = nheaders};
    CHECK(bus_conn_publish(c->conn, &p, on_confirm, NULL) == 0);
}

static void wait_for(bt_client_t *c, int *counter, int want, int timeout_ms) {
    double end = bt_now_ms() + timeout_ms;
    int never = 0;
    while (*counter < want && bt_now_ms() < end) bt_run_until(c, &never, 20);
}

static void test_event_reaches_handler_once(void) {
    bt_client_t c;
    pid_t w = setup(&c);
    publish_event(&c, "testev.thing.happened", "ok", "{\"n\":1}");
    wait_for(&c, &seen.count, 1, 5000);
    CHECK_INT(seen.count, 1);
    CHECK_CONTAINS(seen.bodies[0], "\"attempt\":1");
    CHECK_CONTAINS(seen.bodies[0], "\"acked\":true");
    CHECK_CONTAINS(seen.bodies[0], "\"source\":\"bus-testev\"");
    int never = 0;
    bt_run_until(&c, &never, 300);
    CHECK_INT(seen.count, 1);
    CHECK_INT(dead.count, 0);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

static void test_binary_mode_event(void) {
    bt_client_t c;
    pid_t w = setup(&c);
    bus_header_t h[] = {
        {"ce-specversion", 14, "1.0", 3}, {"ce-id", 5, "bin-1", 5}, {"ce-source", 9, "otherbot", 8},
        {"ce-type", 7, "testev.binary", 13}, {"ce-subject", 10, "ok", 2},
    };
    publish_raw(&c, "testev.binary", "{\"x\":1}", 7, "application/json", h, 5);
    wait_for(&c, &seen.count, 1, 5000);
    CHECK_INT(seen.count, 1);
    CHECK_CONTAINS(seen.bodies[0], "\"id\":\"bin-1\"");
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

static void test_failing_event_is_retried_then_acked(void) {
    bt_client_t c;
    pid_t w = setup(&c);
    publish_event(&c, "testev.flaky", "flaky", "{}");
    wait_for(&c, &seen.count, 2, 5000);
    CHECK_INT(seen.count, 2);
    CHECK_CONTAINS(seen.bodies[0], "\"attempt\":1");
    CHECK_CONTAINS(seen.bodies[1], "\"attempt\":2");
    CHECK_CONTAINS(seen.bodies[1], "\"acked\":true");
    int never = 0;
    bt_run_until(&c, &never, 300);
    CHECK_INT(dead.count, 0);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

static void test_always_failing_event_is_dead_lettered_after_max_attempts(void) {
    bt_client_t c;
    pid_t w = setup(&c);
    publish_event(&c, "testev.broken", "broken", "{}");
    wait_for(&c, &dead.count, 1, 8000);
    CHECK_INT(dead.count, 1);
    CHECK_INT(seen.count, 3); /* BUS_MAX_ATTEMPTS=3 deliveries, no more */
    CHECK_CONTAINS(dead.reasons[0], "gave up after 3 attempts");
    CHECK_CONTAINS(dead.reasons[0], "unavailable");
    CHECK_CONTAINS(dead.bodies[0], "\"type\":\"testev.broken\""); /* the original event, whole */
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

static void test_permanent_failure_is_dead_lettered_at_once(void) {
    bt_client_t c;
    pid_t w = setup(&c);
    publish_event(&c, "testev.rejected", "reject", "{}");
    wait_for(&c, &dead.count, 1, 5000);
    CHECK_INT(dead.count, 1);
    CHECK_INT(seen.count, 1);
    CHECK_CONTAINS(dead.reasons[0], "permission_denied");
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

static void test_bad_messages_are_dead_lettered_with_reason(void) {
    bt_client_t c;
    pid_t w = setup(&c);
    publish_raw(&c, "testev.garbage", "this is not json", 16, "application/json", NULL, 0);
    publish_raw(&c, "testev.garbage", "{\"hello\":1}", 11, BUS_CE_CONTENT_TYPE, NULL, 0);
    const char *bad_time = "{\"specversion\":\"1.0\",\"id\":\"x\",\"source\":\"s\",\"type\":\"testev.t\",\"time\":\"yesterday\"}";
    publish_raw(&c, "testev.garbage", bad_time, strlen(bad_time), BUS_CE_CONTENT_TYPE, NULL, 0);
    size_t big = 1024 * 1024 + 10;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    publish_raw(&c, "testev.garbage", huge, big, BUS_CE_CONTENT_TYPE, NULL, 0);
    free(huge);
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    publish_raw(&c, "testev.garbage", deep, 200, BUS_CE_CONTENT_TYPE, NULL, 0);
    wait_for(&c, &dead.count, 5, 8000);
    CHECK_INT(dead.count, 5);
    CHECK_INT(seen.count, 0);
    int json = 0, not_ce = 0, time_bad = 0, large = 0, depth = 0;
    for (int i = 0; i < dead.count; i++) {
        json += strstr(dead.reasons[i], "malformed JSON") != NULL;
        not_ce += strstr(dead.reasons[i], "not a CloudEvent") != NULL && strstr(dead.reasons[i], "specversion") != NULL;
        time_bad += strstr(dead.reasons[i], "time") != NULL;
        large += strcmp(dead.reasons[i], "rejected") == 0; /* oversized: the broker's dead-lettering */
        depth += strstr(dead.reasons[i], "deeper") != NULL || strstr(dead.reasons[i], "depth") != NULL;
    }
    CHECK_INT(json, 1);
    CHECK_INT(not_ce, 1);
    CHECK(time_bad >= 1);
    CHECK_INT(large, 1);
    CHECK_INT(depth, 1);
    /* a good event after all that is still handled */
    publish_event(&c, "testev.after", "ok", "{}");
    wait_for(&c, &seen.count, 1, 5000);
    CHECK_INT(seen.count, 1);
    bt_client_close(&c);
    CHECK(kill(w, 0) == 0); /* never crashed */
    bt_kill(w, SIGKILL);
}

/* The README's ways for another bot to publish: busctl, and amqp-publish (a
 * plain AMQP client from Debian's amqp-tools) in structured and binary mode. */
static void test_other_bots_publish_with_busctl_and_plain_amqp(void) {
    bt_client_t c;
    pid_t w = setup(&c);
    const char *url = getenv("BUS_AMQP_URL");
    /* plain clients read "amqp://host:port/" as the empty vhost: name "/" as %2f */
    char plain[512];
    snprintf(plain, sizeof plain, "%s%s", url, url[strlen(url) - 1] == '/' ? "%2f" : "/%2f");
    const char *build = getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build";
    char cmd[2048], schemas[600];
    /* busctl publishes only a type with a schema */
    bt_schema_dir("events/testev.from.busctl.json", "{\"type\":\"object\"}", schemas, sizeof schemas);
    snprintf(cmd, sizeof cmd, "%s %s/busctl --amqp-url '%s' publish testev.from.busctl '{\"n\":1}' --subject ok >/dev/null",
             schemas, build, url);
    CHECK_INT(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "amqp-publish --url='%s' -e bus.events -r testev.from.amqp -p -C application/cloudevents+json "
             "-b '{\"specversion\":\"1.0\",\"id\":\"structured-1\",\"source\":\"raidbot\","
             "\"type\":\"testev.from.amqp\",\"data\":{\"n\":2}}'",
             plain);
    CHECK_INT(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "amqp-publish --url='%s' -e bus.events -r testev.from.amqp -p -C application/json "
             "-H 'ce-specversion: 1.0' -H 'ce-id: binary-1' -H 'ce-source: raidbot' -H 'ce-type: testev.from.amqp' "
             "-b '{\"n\":3}'",
             plain);
    CHECK_INT(system(cmd), 0);
    wait_for(&c, &seen.count, 3, 8000);
    CHECK_INT(seen.count, 3);
    int structured = 0, binary = 0;
    for (int i = 0; i < seen.count; i++) {
        structured += strstr(seen.bodies[i], "\"id\":\"structured-1\"") != NULL;
        binary += strstr(seen.bodies[i], "\"id\":\"binary-1\"") != NULL;
    }
    CHECK_INT(structured, 1);
    CHECK_INT(binary, 1);
    CHECK_INT(dead.count, 0);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

/* With a schema for the type, an invalid event never reaches the handler:
 * it is dead-lettered with the failing path. */
static void test_schema_violation_never_reaches_handler(void) {
    char env_dir[700];
    bt_schema_dir("events/testev.typed.json",
                  "{\"type\":\"object\",\"required\":[\"n\"],\"properties\":{\"n\":{\"type\":\"integer\",\"maximum\":9}}}",
                  env_dir, sizeof env_dir);
    bt_client_t c;
    pid_t w = setup_with(&c, env_dir);
    publish_event(&c, "testev.typed", "ok", "{\"n\":\"seven\"}");
    publish_event(&c, "testev.typed", "ok", "{\"n\":12}");
    publish_event(&c, "testev.typed", "ok", "{}");
    publish_event(&c, "testev.typed", "ok", "{\"n\":7}");
    wait_for(&c, &dead.count, 3, 5000);
    wait_for(&c, &seen.count, 1, 5000);
    CHECK_INT(dead.count, 3);
    CHECK_INT(seen.count, 1); /* only the valid one */
    int type = 0, max = 0, req = 0;
    for (int i = 0; i < 3; i++) {
        CHECK_CONTAINS(dead.reasons[i], "invalid:");
        type += strstr(dead.reasons[i], "/data/n") && strstr(dead.reasons[i], "integer");
        max += strstr(dead.reasons[i], "/data/n") && strstr(dead.reasons[i], "9");
        req += strstr(dead.reasons[i], "n") && strstr(dead.reasons[i], "required") != NULL;
    }
    CHECK_INT(type, 1);
    CHECK(max >= 1);
    CHECK_INT(req, 1);
    bt_client_close(&c);
    bt_kill(w, SIGKILL);
}

BUS_TESTS({"schema_violation_never_reaches_handler", test_schema_violation_never_reaches_handler, 30},
          {"other_bots_publish_with_busctl_and_plain_amqp", test_other_bots_publish_with_busctl_and_plain_amqp, 30},
          {"event_reaches_handler_once", test_event_reaches_handler_once, 30},
          {"binary_mode_event", test_binary_mode_event, 30},
          {"failing_event_is_retried_then_acked", test_failing_event_is_retried_then_acked, 30},
          {"always_failing_event_is_dead_lettered_after_max_attempts",
           test_always_failing_event_is_dead_lettered_after_max_attempts, 30},
          {"permanent_failure_is_dead_lettered_at_once", test_permanent_failure_is_dead_lettered_at_once, 30},
          {"bad_messages_are_dead_lettered_with_reason", test_bad_messages_are_dead_lettered_with_reason, 40})
