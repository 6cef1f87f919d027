/* Hardening (issue 16, "Security and bad input"): oversized messages are
 * dead-lettered by the broker without the worker copying them; bad input at
 * the edge (UTF-8, error codes, credentials in logs, look-ups of unknown
 * services, CloudEvents source); GET /api/docs in a real headless browser.
 *
 * The gateway runs as the real program (build/bus-gateway) on ports
 * 26900-26949; the worker "hardw" is defined here. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/apikey.h"
#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/topology.h"

static void on_hard_event(bus_event_t *ev) { bus_event_done(ev, 0, NULL); }
static const bus_subscription_t hard_subs[] = {{"hardw.#", on_hard_event}, {NULL, NULL}};
static const bus_worker_def_t hardw = {.service = "hardw", .summary = "hardening test worker",
                                       .subscriptions = hard_subs};

/* ---- a plain AMQP client (rabbitmq-c, synchronous), as another bot would be ---- */

static amqp_connection_state_t plain_open(void) {
    struct amqp_connection_info ci;
    char url[512];
    snprintf(url, sizeof url, "%s", getenv("BUS_AMQP_URL"));
    CHECK(amqp_parse_url(url, &ci) == AMQP_STATUS_OK);
    amqp_connection_state_t st = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(st);
    CHECK(amqp_socket_open(s, ci.host, ci.port) == AMQP_STATUS_OK);
    amqp_rpc_reply_t r = amqp_login(st, *ci.vhost ? ci.vhost : "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        fprintf(stderr, "login: type %d lib %s\n", r.reply_type, amqp_error_string2(r.library_error));
    CHECK(r.reply_type == AMQP_RESPONSE_NORMAL);
    return st;
}

/* Publishes on a fresh channel, then asks the broker something on it: 0
 * when the channel survived (the message was taken), else the reply code
 * with which the broker closed the channel (406: larger than the limit). */
static int plain_publish(amqp_connection_state_t st, amqp_channel_t ch, const char *exchange, const char *key,
                         const char *body, size_t len, const char *id) {
    amqp_channel_open(st, ch);
    CHECK(amqp_get_rpc_reply(st).reply_type == AMQP_RESPONSE_NORMAL);
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG,
                                 .message_id = amqp_cstring_bytes(id), .delivery_mode = 2};
    amqp_bytes_t b = {len, (void *)body};
    amqp_basic_publish(st, ch, amqp_cstring_bytes(exchange), amqp_cstring_bytes(key), 0, 0, &p, b);
    amqp_queue_declare(st, ch, amqp_cstring_bytes("dead.hardw"), 1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(st);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_channel_close(st, ch, AMQP_REPLY_SUCCESS);
        return 0;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(st, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        return ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
    }
    return -1;
}

static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    fclose(f);
    return kb;
}

typedef struct {
    int count;
    char reasons[8][64], queues[8][64];
    size_t lens[8];
} dead_inbox_t;

static void on_dead(bus_msg_t *m, void *data) {
    dead_inbox_t *in = data;
    if (in->count < 8) {
        const char *r = bus_msg_header(m, "x-first-death-reason");
        const char *q = bus_msg_header(m, "x-first-death-queue");
        snprintf(in->reasons[in->count], sizeof in->reasons[0], "%s", r ? r : "");
        snprintf(in->queues[in->count], sizeof in->queues[0], "%s", q ? q : "");
        in->lens[in->count] = m->len;
    }
    in->count++;
    bus_msg_ack(m);
}

/* Item 1: limit+1 and 3 MiB events, a 3 MiB RPC request without reply_to:
 * each reaches dead.hardw exactly once, moved by the broker (x-death, not a
 * copy of ours); 100 MB and 80 MB are refused by the broker's limit; pings
 * keep answering; the worker's memory goes back down. */
static void test_oversized_messages_dead_lettered_once(void) {
    bt_client_t c;
    bt_client_open(&c);
    const char *qs[] = {"events.hardw", "rpc.hardw", "retry.hardw", "dead.hardw"};
    for (int i = 0; i < 4; i++) bt_delete_queue(&c, qs[i]);
    pid_t w = bt_spawn_worker(&hardw, NULL);
    CHECK(bt_wait_ping("hardw", 15000) == 0);
    long rss_before = rss_kb(w);
    amqp_connection_state_t st = plain_open();
    size_t sizes[] = {BUS_ENVELOPE_MAX_BYTES + 1, 3u << 20, 3u << 20, 100000000, 80000000};
    const char *exch[] = {BUS_EXCHANGE_EVENTS, BUS_EXCHANGE_EVENTS, BUS_EXCHANGE_RPC, BUS_EXCHANGE_EVENTS,
                          BUS_EXCHANGE_RPC};
    const char *keys[] = {"hardw.big", "hardw.big", "hardw.ping", "hardw.huge", "hardw.ping"};
    char *body = malloc(100000000);
    CHECK(body != NULL);
    memset(body, 'x', 100000000);
    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof id, "big-%d", i);
        int rc = plain_publish(st, (amqp_channel_t)(i + 1), exch[i], keys[i], body, sizes[i], id);
        CHECK_INT(rc, i < 3 ? 0 : AMQP_PRECONDITION_FAILED); /* above 4 MiB: the broker's max_message_size */
        /* the service keeps answering meanwhile */
        char *reply = NULL;
        CHECK_INT(bt_call(&c, "hardw", "ping", "{}", 10000, &reply), 0);
        free(reply);
    }
    free(body);
    amqp_connection_close(st, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(st);
    static dead_inbox_t dead;
    memset(&dead, 0, sizeof dead);
    CHECK(bus_conn_consume(c.conn, "dead.hardw", 0, 0, amqp_empty_table, on_dead, &dead, NULL, 0) == 0);
    double end = bt_now_ms() + 20000;
    int never = 0;
    while (dead.count < 3 && bt_now_ms() < end) bt_run_until(&c, &never, 50);
    bt_run_until(&c, &never, 1500); /* any redelivery or second copy would show now */
    CHECK_INT(dead.count, 3);
    int from_events = 0, from_rpc = 0;
    for (int i = 0; i < 3 && i < dead.count; i++) {
        CHECK_STR(dead.reasons[i], "rejected"); /* the broker's dead-lettering, not a copy of ours */
        from_events += strcmp(dead.queues[i], "events.hardw") == 0;
        from_rpc += strcmp(dead.queues[i], "rpc.hardw") == 0;
        CHECK(dead.lens[i] > BUS_ENVELOPE_MAX_BYTES);
    }
    CHECK_INT(from_events, 2);
    CHECK_INT(from_rpc, 1);
    uint32_t waiting = 1;
    CHECK_INT(bus_conn_queue_info(c.conn, "events.hardw", &waiting, NULL), 0);
    CHECK_INT(waiting, 0);
    CHECK_INT(bus_conn_queue_info(c.conn, "rpc.hardw", &waiting, NULL), 0);
    CHECK_INT(waiting, 0);
    for (int i = 0; i < 5; i++) {
        char *reply = NULL;
        CHECK_INT(bt_call(&c, "hardw", "ping", "{}", 5000, &reply), 0);
        free(reply);
    }
#if !defined(__SANITIZE_ADDRESS__)
    /* the worker held 3 MiB messages: its own copies are freed and trimmed;
     * rabbitmq-c keeps the frame pages of each consuming channel for reuse,
     * at most the broker's limit (4 MiB) each (README "Message size limits").
     * ASan keeps freed memory in quarantine, so only without it. */
    long rss_after = rss_kb(w);
    fprintf(stderr, "worker RSS before %ld kB, after %ld kB\n", rss_before, rss_after);
    CHECK(rss_after < rss_before + 8 * 1024);
#else
    (void)rss_before; /* see above */
#endif
    bt_kill(w, SIGKILL);
    bt_client_close(&c);
}

/* The migration path: events.hardw made by an older version (no dead-letter
 * arguments) is used as it is; the worker starts and serves. */
static void test_legacy_queue_without_dead_letter_arguments(void) {
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "events.hardw");
    bt_delete_queue(&c, "rpc.hardw");
    bus_queue_options_t plain = {.durable = 1};
    CHECK_INT(bus_conn_declare_queue(c.conn, "events.hardw", &plain), 0);
    pid_t w = bt_spawn_worker(&hardw, NULL);
    CHECK(bt_wait_ping("hardw", 15000) == 0);
    bt_kill(w, SIGKILL);
    bt_delete_queue(&c, "events.hardw");
    bt_client_close(&c);
}

BUS_TESTS({"oversized_messages_dead_lettered_once", test_oversized_messages_dead_lettered_once, 90},
          {"legacy_queue_without_dead_letter_arguments", test_legacy_queue_without_dead_letter_arguments, 30})
