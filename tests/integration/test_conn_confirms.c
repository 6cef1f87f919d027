/* Publisher confirms (bus_conn_publish, bus/include/bus/conn.h): the
 * outcome a caller gets is the broker's, not "it was written". The broker
 * is made to refuse on purpose:
 *
 *   - a queue with x-max-length and x-overflow=reject-publish: once it is
 *     full the broker nacks every publish to it (BUS_EUNAVAILABLE), and
 *     confirms it again once there is room;
 *   - a mandatory publish that no queue takes: the broker returns it
 *     (basic.return, then basic.ack): BUS_ENOT_FOUND; the same publish
 *     without mandatory is confirmed (and dropped by the broker).
 *
 * No callback runs inside bus_conn_publish: every outcome comes later, from
 * the broker's answer. */
#include <stdlib.h>
#include <string.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/metrics.h"

typedef struct {
    int done;
    int status;
} outcome_t;

static int ndone;
static void on_outcome(int status, void *data) {
    outcome_t *o = data;
    CHECK(!o->done); /* exactly once */
    o->done = 1;
    o->status = status;
    ndone++;
}

static void wait_done(bt_client_t *c, int want) {
    int never = 0;
    double end = bt_now_ms() + 10000;
    while (ndone < want && bt_now_ms() < end) bt_run_until(c, &never, 10);
    CHECK_INT(ndone, want);
}

static void publish_to(bt_client_t *c, const char *queue, int mandatory, const char *id, outcome_t *o) {
    bus_publish_t p = {.exchange = "", .routing_key = queue, .body = "x", .len = 1, .message_id = id,
                       .mandatory = mandatory};
    CHECK_INT(bus_conn_publish(c->conn, &p, on_outcome, o), 0);
}

static void test_full_queue_nacks(void) {
    bt_client_t c;
    bt_client_open(&c);
    char q[64];
    snprintf(q, sizeof q, "test.confirms.full.%d", (int)getpid());
    bus_queue_options_t o = {.exclusive = 1, .auto_delete = 1, .max_length = 2, .overflow = "reject-publish"};
    CHECK_INT(bus_conn_declare_queue(c.conn, q, &o), 0);
    bus_counter_t *failed = bus_counter("bus_amqp_publish_failed_total", "", NULL);
    uint64_t failed_before = bus_counter_value(failed);
    enum { N = 5 };
    static outcome_t out[N];
    memset(out, 0, sizeof out);
    ndone = 0;
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "full-%d", i);
        publish_to(&c, q, 0, id, &out[i]);
    }
    CHECK_INT(ndone, 0); /* nothing is decided before the broker answers */
    CHECK_INT(bus_conn_unconfirmed(c.conn), N);
    wait_done(&c, N);
    for (int i = 0; i < N; i++) {
        if (out[i].status != (i < 2 ? 0 : BUS_EUNAVAILABLE)) fprintf(stderr, "  publish %d: %d\n", i, out[i].status);
        CHECK_INT(out[i].status, i < 2 ? 0 : BUS_EUNAVAILABLE); /* two fit, the broker refuses the rest */
    }
    CHECK_INT(bus_conn_unconfirmed(c.conn), 0);
    CHECK_INT(bus_counter_value(failed), failed_before + 3);
    uint32_t ready = 0, consumers = 0;
    CHECK_INT(bus_conn_queue_info(c.conn, q, &ready, &consumers), 0);
    CHECK_INT(ready, 2);
    /* room again: the same kind of publish is confirmed */
    CHECK_INT(bus_conn_delete_queue(c.conn, q), 0);
    CHECK_INT(bus_conn_declare_queue(c.conn, q, &o), 0);
    static outcome_t again;
    memset(&again, 0, sizeof again);
    ndone = 0;
    publish_to(&c, q, 0, "full-again", &again);
    wait_done(&c, 1);
    CHECK_INT(again.status, 0);
    bt_client_close(&c);
}

static void test_unroutable_mandatory_is_returned(void) {
    bt_client_t c;
    bt_client_open(&c);
    char q[64], nowhere[64];
    snprintf(q, sizeof q, "test.confirms.here.%d", (int)getpid());
    snprintf(nowhere, sizeof nowhere, "test.confirms.nowhere.%d", (int)getpid());
    bus_queue_options_t o = {.exclusive = 1, .auto_delete = 1};
    CHECK_INT(bus_conn_declare_queue(c.conn, q, &o), 0);
    bus_counter_t *returned = bus_counter("bus_amqp_returned_total", "", NULL);
    uint64_t returned_before = bus_counter_value(returned);
    static outcome_t routed, lost, dropped, routed2;
    memset(&routed, 0, sizeof routed);
    memset(&lost, 0, sizeof lost);
    memset(&dropped, 0, sizeof dropped);
    memset(&routed2, 0, sizeof routed2);
    ndone = 0;
    publish_to(&c, q, 1, "m-routed", &routed);
    publish_to(&c, nowhere, 1, "m-lost", &lost);
    publish_to(&c, nowhere, 0, "m-dropped", &dropped);
    publish_to(&c, q, 1, "m-routed-2", &routed2);
    CHECK_INT(ndone, 0);
    wait_done(&c, 4);
    CHECK_INT(routed.status, 0);
    CHECK_INT(lost.status, BUS_ENOT_FOUND);
    CHECK_INT(dropped.status, 0); /* not mandatory: the broker drops it and confirms */
    CHECK_INT(routed2.status, 0);
    CHECK_INT(bus_counter_value(returned), returned_before + 1);
    uint32_t ready = 0, consumers = 0;
    CHECK_INT(bus_conn_queue_info(c.conn, q, &ready, &consumers), 0);
    CHECK_INT(ready, 2);
    bt_client_close(&c);
}

BUS_TESTS({"full_queue_nacks", test_full_queue_nacks, 30},
          {"unroutable_mandatory_is_returned", test_unroutable_mandatory_is_returned, 30})
