/* Acks (bus/src/conn.c): every finished delivery is settled exactly
 * once, a delivery held by a slow handler never blocks the others, and
 * rejects mixed in are handled. Checked against a real broker by
 * closing the connection (anything unacked would be requeued) and counting
 * what is left in the queue.
 *
 * Queue probes (bus_conn_queue_probe): asynchronous passive declares,
 * answered in order with the broker's counts, a missing queue in between
 * (the broker closes the probe channel) not disturbing the next ones, and
 * every probe still out answered "unavailable" when the connection goes. */
#include <stdlib.h>
#include <string.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"

typedef struct {
    bus_msg_t *held;
    bus_msg_t *later[512];
    int nlater;
    int delivered;
    int rejected_once[512];
} sink_t;

static void on_msg(bus_msg_t *m, void *data) {
    sink_t *s = data;
    s->delivered++;
    int n = atoi(m->body);
    if (n == 0 && !s->held) { /* the slow one: held until the end */
        s->held = m;
        return;
    }
    if (n % 7 == 3 && !s->rejected_once[n]) { /* rejected with requeue once: comes back */
        s->rejected_once[n] = 1;
        bus_msg_reject(m, 1);
        return;
    }
    if (n % 2 == 0) { /* finished later, out of order */
        s->later[s->nlater++] = m;
        return;
    }
    bus_msg_ack(m);
}

static int confirmed;
static void on_confirm(int status, void *data) {
    (void)data;
    if (status == 0) confirmed++;
}

static void test_acks_settle_everything_once(void) {
    bt_client_t c;
    memset(&c, 0, sizeof c);
    uv_loop_init(&c.loop);
    char err[256];
    bus_conn_options_t o = {.url = getenv("BUS_AMQP_URL"), .name = "ack-test", .prefetch = 8};
    CHECK(bus_conn_new(&c.loop, &o, &c.conn, err, sizeof err) == 0);
    CHECK(bus_conn_connect_now(c.conn, err, sizeof err) == 0);
    bus_conn_delete_queue(c.conn, "test.acks");
    bus_queue_options_t q = {.durable = 0};
    CHECK(bus_conn_declare_queue(c.conn, "test.acks", &q) == 0);
    enum { N = 300 };
    confirmed = 0;
    for (int i = 0; i < N; i++) {
        char body[16], id[16];
        snprintf(body, sizeof body, "%d", i);
        snprintf(id, sizeof id, "m%d", i);
        bus_publish_t p = {.exchange = "", .routing_key = "test.acks", .body = body, .len = strlen(body),
                           .message_id = id};
        CHECK(bus_conn_publish(c.conn, &p, on_confirm, NULL) == 0);
    }
    int never = 0;
    double end = bt_now_ms() + 10000;
    while (confirmed < N && bt_now_ms() < end) bt_run_until(&c, &never, 10);
    CHECK_INT(confirmed, N);
    static sink_t s;
    memset(&s, 0, sizeof s);
    CHECK(bus_conn_consume(c.conn, "test.acks", 0, 0, amqp_empty_table, on_msg, &s, NULL, 0) == 0);
    int rejects = 0;
    for (int i = 0; i < N; i++) rejects += i % 7 == 3 && i != 0;
    /* the held delivery (prefetch 8) must not stop the flow: everything else arrives */
    end = bt_now_ms() + 15000;
    while (bt_now_ms() < end) {
        bt_run_until(&c, &never, 5);
        /* finish the deferred ones a few at a time, newest first */
        for (int k = 0; k < 3 && s.nlater > 0; k++) bus_msg_ack(s.later[--s.nlater]);
        if (s.delivered >= N + rejects && s.nlater == 0) break;
    }
    CHECK_INT(s.delivered, N + rejects);
    CHECK(s.held != NULL);
    uint32_t ready = 99, consumers = 0;
    CHECK(bus_conn_queue_info(c.conn, "test.acks", &ready, &consumers) == 0);
    CHECK_INT(ready, 0);
    bus_msg_ack(s.held);
    /* a clean close flushes the last acks; a reopen finds nothing requeued */
    bus_conn_close(c.conn, NULL, NULL);
    uv_run(&c.loop, UV_RUN_DEFAULT);
    uv_loop_close(&c.loop);
    bt_client_t d;
    bt_client_open(&d);
    ready = 99;
    CHECK(bus_conn_queue_info(d.conn, "test.acks", &ready, &consumers) == 0);
    CHECK_INT(ready, 0); /* every message settled, none redelivered */
    bus_conn_delete_queue(d.conn, "test.acks");
    bt_client_close(&d);
}

typedef struct {
    int n;
    int order[16];
    int status[16];
    uint32_t messages[16], consumers[16];
} probes_t;
typedef struct {
    probes_t *all;
    int index;
} probe_arg_t;

static void on_probe(int status, uint32_t messages, uint32_t consumers, void *data) {
    probe_arg_t *a = data;
    probes_t *p = a->all;
    p->order[p->n++] = a->index;
    p->status[a->index] = status;
    p->messages[a->index] = messages;
    p->consumers[a->index] = consumers;
}
static void on_nothing(bus_msg_t *m, void *data) {
    (void)data;
    bus_msg_reject(m, 1); /* stays in the queue */
}

static void test_queue_probes(void) {
    bt_client_t c;
    bt_client_open(&c);
    bus_conn_delete_queue(c.conn, "test.probe.a");
    bus_conn_delete_queue(c.conn, "test.probe.missing");
    bus_queue_options_t q = {.durable = 0};
    CHECK(bus_conn_declare_queue(c.conn, "test.probe.a", &q) == 0);
    confirmed = 0;
    for (int i = 0; i < 3; i++) {
        bus_publish_t p = {.exchange = "", .routing_key = "test.probe.a", .body = "x", .len = 1};
        CHECK(bus_conn_publish(c.conn, &p, on_confirm, NULL) == 0);
    }
    int never = 0;
    double end = bt_now_ms() + 10000;
    while (confirmed < 3 && bt_now_ms() < end) bt_run_until(&c, &never, 10);
    CHECK_INT(confirmed, 3);

    /* made in one go: existing, missing, existing, missing, missing, existing */
    static probes_t got;
    memset(&got, 0, sizeof got);
    static probe_arg_t args[6];
    const char *names[6] = {"test.probe.a", "test.probe.missing", "test.probe.a",
                            "test.probe.missing", "test.probe.missing", "test.probe.a"};
    for (int i = 0; i < 6; i++) {
        args[i] = (probe_arg_t){&got, i};
        CHECK_INT(bus_conn_queue_probe(c.conn, names[i], on_probe, &args[i]), 0);
    }
    CHECK_INT(got.n, 0); /* nothing is answered inside the call */
    end = bt_now_ms() + 5000;
    while (got.n < 6 && bt_now_ms() < end) bt_run_until(&c, &never, 5);
    CHECK_INT(got.n, 6);
    for (int i = 0; i < 6; i++) {
        CHECK_INT(got.order[i], i);
        int missing = strcmp(names[i], "test.probe.missing") == 0;
        CHECK_INT(got.status[i], missing ? BUS_ENOT_FOUND : 0);
        CHECK_INT(got.messages[i], missing ? 0 : 3);
        CHECK_INT(got.consumers[i], 0);
    }

    /* a consumer shows up in the next probe */
    CHECK(bus_conn_consume(c.conn, "test.probe.a", 0, 0, amqp_empty_table, on_nothing, NULL, NULL, 0) == 0);
    memset(&got, 0, sizeof got);
    CHECK_INT(bus_conn_queue_probe(c.conn, "test.probe.a", on_probe, &args[0]), 0);
    end = bt_now_ms() + 5000;
    while (got.n < 1 && bt_now_ms() < end) bt_run_until(&c, &never, 5);
    CHECK_INT(got.n, 1);
    CHECK_INT(got.status[0], 0);
    CHECK_INT(got.consumers[0], 1);

    /* a name longer than AMQP allows is refused at once */
    char longname[300];
    memset(longname, 'q', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK_INT(bus_conn_queue_probe(c.conn, longname, on_probe, &args[0]), BUS_EBAD_REQUEST);

    /* probes still out when the connection goes are answered "unavailable" */
    memset(&got, 0, sizeof got);
    for (int i = 0; i < 3; i++) CHECK_INT(bus_conn_queue_probe(c.conn, names[i], on_probe, &args[i]), 0);
    bus_conn_delete_queue(c.conn, "test.probe.a");
    bt_client_close(&c);
    CHECK_INT(got.n, 3);
    int answered = 0, unavailable = 0;
    for (int i = 0; i < 3; i++) {
        answered += got.status[i] == 0 || got.status[i] == BUS_ENOT_FOUND;
        unavailable += got.status[i] == BUS_EUNAVAILABLE;
    }
    CHECK_INT(answered + unavailable, 3);
    CHECK(unavailable >= 1);
}

BUS_TESTS({"acks_settle_everything_once", test_acks_settle_everything_once, 40},
          {"queue_probes", test_queue_probes, 30})
