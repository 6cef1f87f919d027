/* The operator's tools: busctl dead, the rpc.unrouted answer to unknown
 * services, busctl events, dead letters on the edge's /metrics, make install
 * run from elsewhere, busctl's help and output. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/topology.h"

static char fail_flag[600], handled_file[600];

/* Fails every event while the flag file exists (dead-lettered at once: invalid
 * is not retried); otherwise appends the event id to handled_file. */
static void on_optest(bus_event_t *ev) {
    if (access(fail_flag, F_OK) == 0) {
        bus_event_done(ev, BUS_EINVALID, "told to fail");
        return;
    }
    FILE *f = fopen(handled_file, "a");
    if (f) {
        fprintf(f, "%s\n", bus_event_envelope(ev)->id);
        fclose(f);
    }
    bus_event_done(ev, 0, NULL);
}
static const bus_method_t methods[] = {{NULL, NULL}};
static const bus_subscription_t subs[] = {{"optest.#", on_optest}, {NULL, NULL}};
static const bus_worker_def_t optest = {.service = "optest", .summary = "operator tools test", .methods = methods,
                                        .subscriptions = subs};

static const char *build_dir(void) { return getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build"; }
static const char *tmpdir(void) { return getenv("BUS_TEST_TMPDIR") ? getenv("BUS_TEST_TMPDIR") : "/tmp"; }

static int run(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static uint32_t queue_count(bt_client_t *c, const char *q) {
    uint32_t n = 0;
    CHECK_INT(bus_conn_queue_info(c->conn, q, &n, NULL), 0);
    return n;
}

static int wait_count(bt_client_t *c, const char *q, uint32_t want, int ms) {
    double end = bt_now_ms() + ms;
    while (bt_now_ms() < end) {
        if (queue_count(c, q) == want) return 0;
        usleep(50000);
    }
    return -1;
}

static void read_file(const char *path, char *out, size_t cap) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* A plain rabbitmq-c connection to BUS_AMQP_URL, channel 1 open. */
static amqp_connection_state_t plain_connect(void) {
    struct amqp_connection_info ci;
    char *url = strdup(getenv("BUS_AMQP_URL"));
    CHECK(amqp_parse_url(url, &ci) == AMQP_STATUS_OK);
    amqp_connection_state_t st = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(st);
    CHECK(amqp_socket_open(s, ci.host, ci.port) == AMQP_STATUS_OK);
    CHECK(amqp_login(st, *ci.vhost ? ci.vhost : "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password).reply_type ==
          AMQP_RESPONSE_NORMAL);
    amqp_channel_open(st, 1);
    CHECK(amqp_get_rpc_reply(st).reply_type == AMQP_RESPONSE_NORMAL);
    free(url);
    return st;
}

static void plain_close(amqp_connection_state_t st) {
    amqp_channel_close(st, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(st, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(st);
}

/* A structured CloudEvent published by a plain client: AMQP message_id and
 * per-message expiration only when given (NULL: absent). */
static void publish_plain(const char *type, const char *id, const char *message_id, const char *expiration) {
    amqp_connection_state_t st = plain_connect();
    char body[512];
    snprintf(body, sizeof body,
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"plain-client\",\"type\":\"%s\",\"data\":{}}", id,
             type);
    amqp_basic_properties_t props = {._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG,
                                     .content_type = amqp_cstring_bytes("application/cloudevents+json"),
                                     .delivery_mode = 2};
    if (message_id) {
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        props.message_id = amqp_cstring_bytes(message_id);
    }
    if (expiration) {
        props._flags |= AMQP_BASIC_EXPIRATION_FLAG;
        props.expiration = amqp_cstring_bytes(expiration);
    }
    CHECK_INT(amqp_basic_publish(st, 1, amqp_cstring_bytes(BUS_EXCHANGE_EVENTS), amqp_cstring_bytes(type), 0, 0,
                                 &props, amqp_cstring_bytes(body)),
              0);
    plain_close(st);
}

static void clean_slate(bt_client_t *c) {
    const char *qs[] = {"events.optest", "rpc.optest", "retry.optest", "dead.optest", NULL};
    for (int i = 0; qs[i]; i++) bt_delete_queue(c, qs[i]);
}

/* A client on a clean slate; the fail flag and handled file named (the
 * handled file emptied). */
static void optest_setup(bt_client_t *c) {
    bt_client_open(c);
    clean_slate(c);
    snprintf(fail_flag, sizeof fail_flag, "%s/optest.fail.%d", tmpdir(), getpid());
    snprintf(handled_file, sizeof handled_file, "%s/optest.handled.%d", tmpdir(), getpid());
    unlink(handled_file);
}

static pid_t spawn_optest(const char *log) {
    /* the worker's stderr (its log) into `log` */
    int saved = dup(2);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    dup2(fd, 2);
    pid_t w = bt_spawn_worker(&optest, NULL);
    dup2(saved, 2);
    close(saved);
    close(fd);
    return w;
}

/* Item 1: list, show, replay (counted, audited), purge (confirmed), and the
 * dead-letter log line names the event id without a message_id. */
/* A schemas directory holding the repository's schemas plus permissive
 * schemas for this test's own event types: busctl publish refuses a type
 * without one. Returns "BUS_SCHEMAS_DIR=<dir>" for a command's prefix. */
static const char *test_schemas_env(void) {
    static char env[700];
    if (env[0]) return env;
    char dir[600], cmd[2048];
    snprintf(dir, sizeof dir, "%s/optools-all-schemas-%d", tmpdir(), (int)getpid());
    const char *repo = getenv("BUS_SCHEMAS_DIR") ? getenv("BUS_SCHEMAS_DIR") : "schemas";
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && cp -r %s %s && for t in optest.one optest.two optest.a optest.c other.b; do "
             "echo '{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"type\":\"object\"}' "
             "> %s/events/$t.json; done",
             dir, repo, dir, dir);
    CHECK(system(cmd) == 0);
    snprintf(env, sizeof env, "BUS_SCHEMAS_DIR=%s", dir);
    return env;
}

static void test_dead_letters_list_show_replay_purge(void) {
    bt_client_t c;
    optest_setup(&c);
    FILE *f = fopen(fail_flag, "w");
    CHECK(f != NULL);
    fclose(f);
    char log[700];
    snprintf(log, sizeof log, "%s/optest.worker.%d.log", tmpdir(), getpid());
    pid_t w = spawn_optest(log);
    CHECK(bt_wait_ping("optest", 15000) == 0);

    /* an audit consumer of deadletter.replayed */
    bus_queue_options_t ao = {.exclusive = 1, .auto_delete = 1};
    char audit_q[128];
    CHECK_INT(bus_conn_declare_queue_named(c.conn, "", &ao, audit_q, sizeof audit_q), 0);
    CHECK_INT(bus_conn_bind(c.conn, audit_q, BUS_EXCHANGE_EVENTS, "deadletter.replayed"), 0);

    char cmd[1024], out[65536], id1[64] = "", id2[64] = "";
    snprintf(cmd, sizeof cmd, "%s %s/busctl publish optest.one '{\"n\":1}'", test_schemas_env(), build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    sscanf(out, "%63s", id1);
    snprintf(cmd, sizeof cmd, "%s %s/busctl publish optest.two '{\"n\":2}'", test_schemas_env(), build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    sscanf(out, "%63s", id2);
    publish_plain("optest.raw", "ce-no-msgid-1", NULL, NULL);
    CHECK_INT(wait_count(&c, "dead.optest", 3, 15000), 0);

    /* the log line carries the CloudEvent id although message_id was empty */
    char text[65536];
    read_file(log, text, sizeof text);
    CHECK_CONTAINS(text, "dead-lettered optest.raw message ce-no-msgid-1");

    /* list: every field; listing twice loses nothing and keeps the order */
    snprintf(cmd, sizeof cmd, "%s/busctl dead list optest --json", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK(strchr(out, '\n') == out + strlen(out) - 1); /* compact on a pipe: one line */
    cJSON *list = cJSON_Parse(out);
    CHECK(cJSON_IsArray(list));
    CHECK_INT(cJSON_GetArraySize(list), 3);
    const char *want_types[] = {"optest.one", "optest.two", "optest.raw"};
    const char *want_ids[] = {id1, id2, "ce-no-msgid-1"};
    for (int i = 0; i < 3; i++) {
        cJSON *o = cJSON_GetArrayItem(list, i);
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "type")), want_types[i]);
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "id")), want_ids[i]);
        CHECK_CONTAINS(cJSON_GetStringValue(cJSON_GetObjectItem(o, "reason")), "told to fail");
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "attempts")) >= 1);
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "dead_lettered_at")) > 0);
        CHECK_CONTAINS(cJSON_GetStringValue(cJSON_GetObjectItem(o, "excerpt")), "specversion");
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "queue")), "events.optest");
    }
    cJSON_Delete(list);
    char again[65536];
    CHECK_INT(run(cmd, again, sizeof again), 0);
    CHECK_INT(queue_count(&c, "dead.optest"), 3);
    /* the same order (the redelivered flag is not shown) */
    cJSON *l1 = cJSON_Parse(out), *l2 = cJSON_Parse(again);
    for (int i = 0; i < 3; i++)
        CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(l2, i), "id")),
                  cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(l1, i), "id")));
    cJSON_Delete(l1);
    cJSON_Delete(l2);
    snprintf(cmd, sizeof cmd, "%s/busctl dead list optest", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "REASON");
    CHECK_CONTAINS(out, "3 dead letters in dead.optest");

    /* show */
    snprintf(cmd, sizeof cmd, "%s/busctl dead show optest ce-no-msgid-1", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "\"source\":\"plain-client\"");
    CHECK_CONTAINS(out, "x-bus-dead-reason");
    snprintf(cmd, sizeof cmd, "%s/busctl dead show optest no-such-id 2>&1", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 1);
    CHECK_INT(queue_count(&c, "dead.optest"), 3);

    /* replay one: back in events.optest, handled, counted, audited */
    unlink(fail_flag);
    snprintf(cmd, sizeof cmd, "%s/busctl dead replay optest %s", build_dir(), id1);
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "1 replayed, 0 failed");
    CHECK_INT(wait_count(&c, "dead.optest", 2, 5000), 0);
    double end = bt_now_ms() + 10000;
    while (bt_now_ms() < end && (read_file(handled_file, text, sizeof text), !strstr(text, id1))) usleep(50000);
    CHECK_CONTAINS(text, id1);
    CHECK_INT(wait_count(&c, audit_q, 1, 5000), 0);

    /* purge asks: without a terminal and without --yes it refuses */
    snprintf(cmd, sizeof cmd, "%s/busctl dead purge optest --all < /dev/null 2>&1", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 1);
    CHECK_CONTAINS(out, "--yes");
    CHECK_INT(queue_count(&c, "dead.optest"), 2);
    snprintf(cmd, sizeof cmd, "%s/busctl dead purge optest %s --yes", build_dir(), id2);
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "1 purged");
    CHECK_INT(queue_count(&c, "dead.optest"), 1);

    /* replay --all: the one without a message_id too */
    snprintf(cmd, sizeof cmd, "%s/busctl dead replay optest --all", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "1 replayed");
    CHECK_INT(wait_count(&c, "dead.optest", 0, 5000), 0);
    end = bt_now_ms() + 10000;
    while (bt_now_ms() < end && (read_file(handled_file, text, sizeof text), !strstr(text, "ce-no-msgid-1")))
        usleep(50000);
    CHECK_CONTAINS(text, "ce-no-msgid-1");
    CHECK(!strstr(text, id2)); /* purged: never handled */
    CHECK_INT(wait_count(&c, audit_q, 2, 5000), 0);

    bt_kill(w, SIGKILL);
    clean_slate(&c);
    bt_client_close(&c);
    unlink(handled_file);
    unlink(log);
}

/* A message the broker dead-lettered itself (here: its per-message TTL ran
 * out while the service was down) carries only the broker's x-first-death-*
 * headers: `busctl dead list` names that queue and reason, and `replay` sends
 * it back there, where the restarted worker handles it. */
static void test_broker_dead_letter_replayed(void) {
    bt_client_t c;
    optest_setup(&c);
    unlink(fail_flag);
    char log[700];
    snprintf(log, sizeof log, "%s/optest.worker2.%d.log", tmpdir(), getpid());
    pid_t w = spawn_optest(log); /* declares events.optest with its dead-letter arguments */
    CHECK(bt_wait_ping("optest", 15000) == 0);
    bt_kill(w, SIGKILL);
    uint32_t consumers = 1;
    for (double end = bt_now_ms() + 10000; consumers > 0 && bt_now_ms() < end; usleep(50000))
        CHECK_INT(bus_conn_queue_info(c.conn, "events.optest", NULL, &consumers), 0);
    CHECK_INT(consumers, 0); /* nobody consumes: the message can expire */

    publish_plain("optest.ttl", "ttl-1", "ttl-1", "1"); /* expires after 1 ms in events.optest */
    CHECK_INT(wait_count(&c, "dead.optest", 1, 15000), 0);
    CHECK_INT(queue_count(&c, "events.optest"), 0);

    char cmd[1024], out[65536], text[65536];
    snprintf(cmd, sizeof cmd, "%s/busctl dead list optest --json", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    cJSON *list = cJSON_Parse(out);
    CHECK(cJSON_IsArray(list) && cJSON_GetArraySize(list) == 1);
    cJSON *o = cJSON_GetArrayItem(list, 0);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "id")), "ttl-1");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "type")), "optest.ttl");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "queue")), "events.optest");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "reason")), "expired");
    cJSON_Delete(list);

    w = spawn_optest(log);
    CHECK(bt_wait_ping("optest", 15000) == 0);
    snprintf(cmd, sizeof cmd, "%s/busctl dead replay optest ttl-1", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "1 replayed, 0 failed");
    CHECK_INT(wait_count(&c, "dead.optest", 0, 5000), 0);
    double end = bt_now_ms() + 10000;
    while (bt_now_ms() < end && (read_file(handled_file, text, sizeof text), !strstr(text, "ttl-1"))) usleep(50000);
    CHECK_CONTAINS(text, "ttl-1");
    usleep(1000000); /* a second copy would show now */
    read_file(handled_file, text, sizeof text);
    int handled = 0;
    for (const char *at = text; (at = strstr(at, "ttl-1")) != NULL; at += 5) handled++;
    CHECK_INT(handled, 1);
    CHECK_INT(queue_count(&c, "dead.optest"), 0);

    bt_kill(w, SIGKILL);
    clean_slate(&c);
    bt_client_close(&c);
    unlink(handled_file);
    unlink(log);
}

/* Item 2: a plain client's request for a service nobody serves is answered
 * not_found at once (bus.rpc's alternate exchange, rpc.unrouted). */
static void test_unknown_service_answered_at_once(void) {
    pid_t w = bt_spawn_worker(&optest, NULL);
    CHECK(bt_wait_ping("optest", 15000) == 0);
    amqp_connection_state_t st = plain_connect();
    amqp_queue_declare_ok_t *q = amqp_queue_declare(st, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    CHECK(q != NULL);
    amqp_bytes_t reply_q = amqp_bytes_malloc_dup(q->queue);
    amqp_basic_consume(st, 1, reply_q, amqp_empty_bytes, 0, 1, 1, amqp_empty_table);
    CHECK(amqp_get_rpc_reply(st).reply_type == AMQP_RESPONSE_NORMAL);
    amqp_basic_properties_t props = {._flags = AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
                                               AMQP_BASIC_CONTENT_TYPE_FLAG,
                                     .reply_to = reply_q,
                                     .correlation_id = amqp_cstring_bytes("plain-1"),
                                     .content_type = amqp_cstring_bytes("application/json")};
    CHECK_INT(amqp_basic_publish(st, 1, amqp_cstring_bytes(BUS_EXCHANGE_RPC), amqp_cstring_bytes("nosuchsvc.ping"), 0,
                                 0, &props, amqp_cstring_bytes("{}")),
              0);
    amqp_envelope_t env;
    amqp_maybe_release_buffers(st);
    struct timeval tv = {10, 0}; /* a generous bound: without the feature it never comes */
    amqp_rpc_reply_t r = amqp_consume_message(st, &env, &tv, 0);
    CHECK(r.reply_type == AMQP_RESPONSE_NORMAL);
    char body[1024];
    snprintf(body, sizeof body, "%.*s", (int)env.message.body.len, (char *)env.message.body.bytes);
    CHECK_CONTAINS(body, "\"not_found\"");
    CHECK_CONTAINS(body, "nosuchsvc");
    CHECK_INT((int)env.message.properties.correlation_id.len, 7);
    CHECK(memcmp(env.message.properties.correlation_id.bytes, "plain-1", 7) == 0);
    amqp_destroy_envelope(&env);
    amqp_bytes_free(reply_q);
    plain_close(st);
    /* and libbus callers (busctl) get the same answer */
    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "%s/busctl call nosuchsvc ping --timeout 10000", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 1); /* libbus publishes to rpc.<s>: a mandatory return */
    CHECK_CONTAINS(out, "not_found");
    bt_kill(w, SIGKILL);
}

/* Item 3: busctl events watches without taking; --bindings shows where types go. */
static void test_events_watch_and_bindings(void) {
    bt_client_t c;
    bt_client_open(&c);
    clean_slate(&c);
    snprintf(fail_flag, sizeof fail_flag, "%s/optest.nofail", tmpdir());
    snprintf(handled_file, sizeof handled_file, "%s/optest.handled.ev.%d", tmpdir(), getpid());
    unlink(handled_file);
    unlink(fail_flag);
    pid_t w = bt_spawn_worker(&optest, NULL);
    CHECK(bt_wait_ping("optest", 15000) == 0);
    char out_path[600], err_path[600], cmd[4096], text[16384];
    snprintf(out_path, sizeof out_path, "%s/events.%d.out", tmpdir(), getpid());
    snprintf(err_path, sizeof err_path, "%s/events.%d.err", tmpdir(), getpid());
    snprintf(cmd, sizeof cmd, "%s/busctl events 'optest.*' --json --count 2 > %s 2> %s & echo $!", build_dir(),
             out_path, err_path);
    char pid_text[32];
    CHECK_INT(run(cmd, pid_text, sizeof pid_text), 0);
    double end = bt_now_ms() + 10000;
    while (bt_now_ms() < end && (read_file(err_path, text, sizeof text), !strstr(text, "watching"))) usleep(50000);
    CHECK_CONTAINS(text, "watching bus.events for \"optest.*\"");
    char ids[3][64];
    const char *types[] = {"optest.a", "other.b", "optest.c"};
    for (int i = 0; i < 3; i++) {
        char out[256];
        snprintf(cmd, sizeof cmd, "%s %s/busctl publish %s '{\"i\":%d}'", test_schemas_env(), build_dir(), types[i],
                 i);
        CHECK_INT(run(cmd, out, sizeof out), 0);
        sscanf(out, "%63s", ids[i]);
    }
    pid_t watcher = (pid_t)atoi(pid_text);
    end = bt_now_ms() + 10000;
    while (bt_now_ms() < end && kill(watcher, 0) == 0) usleep(50000);
    CHECK(kill(watcher, 0) != 0); /* --count 2: it stopped after the two matching events */
    read_file(out_path, text, sizeof text);
    char *line2 = strchr(text, '\n');
    CHECK(line2 != NULL);
    CHECK_CONTAINS(text, ids[0]);
    CHECK_CONTAINS(line2 + 1, ids[2]);
    CHECK(!strstr(text, ids[1]));
    cJSON *first = cJSON_ParseWithLength(text, (size_t)(line2 - text));
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(first, "type")), "optest.a");
    cJSON_Delete(first);
    /* nothing was taken from the worker: it handled both */
    end = bt_now_ms() + 10000;
    while (bt_now_ms() < end && (read_file(handled_file, text, sizeof text), !strstr(text, ids[2]))) usleep(50000);
    CHECK_CONTAINS(text, ids[0]);
    CHECK_CONTAINS(text, ids[2]);

    /* --bindings: optest.a goes to optest, nobody.cares goes nowhere */
    char dir[600];
    snprintf(dir, sizeof dir, "%s/optools-schemas-%d", tmpdir(), getpid());
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/events %s/rpc && echo '{\"type\":\"object\"}' > %s/events/optest.a.json && "
             "echo '{\"type\":\"object\"}' > %s/events/nobody.cares.json && "
             "echo '{\"definitions\":{\"params\":{\"type\":\"object\"}}}' > %s/rpc/optest.ping.json",
             dir, dir, dir, dir, dir);
    CHECK_INT(system(cmd), 0);
    char out[8192];
    snprintf(cmd, sizeof cmd, "BUS_SCHEMAS_DIR=%s %s/busctl events --bindings --json", dir, build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    cJSON *b = cJSON_Parse(out);
    CHECK(cJSON_IsArray(b));
    int seen = 0;
    cJSON *o;
    cJSON_ArrayForEach(o, b) {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(o, "type"));
        cJSON *by = cJSON_GetObjectItem(o, "consumed_by");
        if (strcmp(type, "optest.a") == 0) {
            seen++;
            CHECK_INT(cJSON_GetArraySize(by), 1);
            CHECK_STR(cJSON_GetStringValue(cJSON_GetArrayItem(by, 0)), "optest");
        } else if (strcmp(type, "nobody.cares") == 0) {
            seen++;
            CHECK_INT(cJSON_GetArraySize(by), 0);
        }
    }
    CHECK_INT(seen, 2);
    cJSON_Delete(b);
    snprintf(cmd, sizeof cmd, "BUS_SCHEMAS_DIR=%s %s/busctl events --bindings", dir, build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "(nobody)");
    bt_kill(w, SIGKILL);
    clean_slate(&c);
    bt_client_close(&c);
    unlink(out_path);
    unlink(err_path);
    unlink(handled_file);
}

/* Item 1: dead letters per service on the edge's /metrics. */
static int published;
static void on_pub(int status, void *data) {
    (void)data;
    CHECK_INT(status, 0);
    published++;
}

static void test_gateway_metrics_count_dead_letters(void) {
    char gw[600];
    snprintf(gw, sizeof gw, "%s/bus-gateway", build_dir());
    if (access(gw, X_OK) != 0) SKIP("%s is not built", gw);
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "dead.audit");
    bus_queue_options_t durable = {.durable = 1, .queue_type = "classic"};
    CHECK_INT(bus_conn_declare_queue(c.conn, "dead.audit", &durable), 0);
    published = 0;
    for (int i = 0; i < 3; i++) {
        bus_publish_t p = {.exchange = "", .routing_key = "dead.audit", .body = "{}", .len = 2, .persistent = 1};
        CHECK_INT(bus_conn_publish(c.conn, &p, on_pub, NULL), 0);
    }
    int three = 0;
    while (published < 3 && uv_run(&c.loop, UV_RUN_ONCE)) {
    }
    three = published == 3;
    CHECK(three);
    /* below the ephemeral range (32768 and up), where an outgoing connection
     * could hold the port: the tests' HTTP ports are 26000-27999 */
    int port = 27000 + (int)(getpid() % 100);
    char addr[64], url[128], cmd[512], out[65536];
    snprintf(addr, sizeof addr, "BUS_HTTP_ADDR=127.0.0.1:%d", port);
    const char *env[] = {addr, NULL};
    char *argv[] = {gw, NULL};
    char log[600];
    snprintf(log, sizeof log, "%s/optools-gw.%d.log", tmpdir(), getpid());
    pid_t g = bt_spawn_program(argv, env, log);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    snprintf(cmd, sizeof cmd, "curl -s %s", url);
    double end = bt_now_ms() + 15000;
    while (bt_now_ms() < end) {
        if (run(cmd, out, sizeof out) == 0 && strstr(out, "bus_dead_letters{service=\"audit\"} 3")) break;
        usleep(100000);
    }
    CHECK_CONTAINS(out, "bus_dead_letters{service=\"audit\"} 3");
    CHECK_CONTAINS(out, "# TYPE bus_dead_letters gauge");
    bt_kill(g, SIGTERM);
    bt_delete_queue(&c, "dead.audit");
    bt_client_close(&c);
    unlink(log);
}

/* Item 5: make install into a DESTDIR; the installed programs, run from
 * another directory, find the installed schemas and keep their store in the
 * state directory, not in the working directory. */
static void test_make_install_runs_from_elsewhere(void) {
    char root[600], cmd[4096], out[65536];
    snprintf(root, sizeof root, "%s/install-%d", tmpdir(), getpid());
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s/elsewhere %s/home && make --no-print-directory install "
             "DESTDIR=%s PREFIX=/usr/local BUILD=%s > %s/install.log 2>&1", root, root, root, root, build_dir(), root);
    CHECK_INT(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "test -x %s/usr/local/bin/busctl -a -x %s/usr/local/bin/bus-alliances -a "
             "-f %s/usr/local/share/bus/schemas/rpc/alliances.create.json", root, root, root);
    CHECK_INT(system(cmd), 0);
    const char *clean_env = "env -u BUS_SCHEMAS_DIR -u BUS_STORE -u XDG_STATE_HOME";
    snprintf(cmd, sizeof cmd, "cd %s/elsewhere && %s HOME=%s/home %s/usr/local/bin/busctl schema list", root,
             clean_env, root, root);
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "alliances.create");
    snprintf(cmd, sizeof cmd, "cd %s/elsewhere && %s HOME=%s/home %s/usr/local/bin/bus-alliances --help", root,
             clean_env, root, root);
    CHECK_INT(run(cmd, out, sizeof out), 0);
    char want[800];
    snprintf(want, sizeof want, "sqlite:%s/home/.local/state/bus/bus.db", root);
    CHECK_CONTAINS(out, want);
    CHECK_CONTAINS(out, "/share/bus/schemas");
    /* the worker runs from there: it answers, its store is in the state dir */
    snprintf(cmd, sizeof cmd, "cd %s/elsewhere && exec %s HOME=%s/home %s/usr/local/bin/bus-alliances", root,
             clean_env, root, root);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    char log[700];
    snprintf(log, sizeof log, "%s/alliances.log", root);
    pid_t w = bt_spawn_program(argv, NULL, log);
    CHECK_INT(bt_wait_ping("alliances", 20000), 0);
    snprintf(cmd, sizeof cmd, "test -f %s/home/.local/state/bus/bus.db -a ! -e %s/elsewhere/var", root, root);
    CHECK_INT(system(cmd), 0);
    bt_kill(w, SIGTERM);
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK_INT(system(cmd), 0);
}

/* Item 6: --help on stdout with every command and option; JSON compact on
 * a pipe and indented on a terminal. */
static void test_busctl_help_and_json_output(void) {
    char cmd[1024], out[16384];
    snprintf(cmd, sizeof cmd, "%s/busctl --help 2>/dev/null", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    const char *want[] = {"call SERVICE METHOD", "--timeout", "publish TYPE", "--source", "--subject",
                          "--correlation-id", "status [--json]", "dead list", "dead show", "dead replay",
                          "dead purge", "--yes", "events [PATTERN]", "--bindings", "schema check", "schema list",
                          "--dir", "apikey new", "--scopes", "--amqp-url", "--version", NULL};
    for (int i = 0; want[i]; i++) CHECK_CONTAINS(out, want[i]);
    snprintf(cmd, sizeof cmd, "%s/busctl status --json", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK(out[0] == '[' && strchr(out, '\n') == out + strlen(out) - 1); /* one line on a pipe */
    snprintf(cmd, sizeof cmd, "script -qec '%s/busctl status --json' /dev/null", build_dir());
    if (system("command -v script > /dev/null") != 0) SKIP("no script(1) for a terminal");
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "\t\"service\":\t"); /* indented on a terminal */
    /* the schema examples of schemas/README.md run as shown */
    snprintf(cmd, sizeof cmd, "l=$(grep '^echo .*| busctl schema check' schemas/README.md) && [ -n \"$l\" ] && "
             "echo \"$l\" | sed 's#| busctl#| %s/busctl#' | env -u BUS_SCHEMAS_DIR sh -e", build_dir());
    CHECK_INT(run(cmd, out, sizeof out), 0); /* exit 0: valid (sh -e stops at the first failure) */
}

BUS_TESTS({"dead_letters_list_show_replay_purge", test_dead_letters_list_show_replay_purge, 90},
          {"broker_dead_letter_replayed", test_broker_dead_letter_replayed, 60},
          {"unknown_service_answered_at_once", test_unknown_service_answered_at_once, 40},
          {"events_watch_and_bindings", test_events_watch_and_bindings, 60},
          {"gateway_metrics_count_dead_letters", test_gateway_metrics_count_dead_letters, 40},
          {"make_install_runs_from_elsewhere", test_make_install_runs_from_elsewhere, 120},
          {"busctl_help_and_json_output", test_busctl_help_and_json_output, 30})
