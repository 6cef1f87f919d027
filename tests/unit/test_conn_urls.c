/* BUS_AMQP_URL as a comma-separated list of a cluster's nodes (bus/conn.h):
 * every entry is parsed when the connection is made, so a typo in the
 * third URL fails at start rather than at the first failover. The failover
 * itself runs against a real cluster in tests/cluster/test_cluster.c. */
#include <string.h>

#include "../test.h"
#include "bus/conn.h"
#include "bus/error.h"

static int make(const char *url, char *err, size_t errlen) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    bus_conn_t *c = NULL;
    bus_conn_options_t o = {.url = url, .name = "t"};
    err[0] = 0;
    int rc = bus_conn_new(&loop, &o, &c, err, errlen);
    if (rc == 0) {
        bus_conn_close(c, NULL, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&loop);
    return rc;
}

static void test_lists_parse(void) {
    char err[512];
    CHECK_INT(make("amqp://guest:guest@127.0.0.1:5672/", err, sizeof err), 0);
    CHECK_INT(make("amqp://a:b@h1:5672/,amqp://a:b@h2:5673/, amqp://a:b@h3:5674/vh", err, sizeof err), 0);
}

static void test_a_bad_entry_is_named(void) {
    char err[512];
    CHECK_INT(make("amqp://a:b@h1:5672/,amqp://a:b@h2:5673/,notaurl", err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "\"notaurl\""); /* the entry itself, not the whole list */
    CHECK_CONTAINS(err, "BUS_AMQP_URL");
    CHECK_INT(make("amqp://a:b@h1:5672/,,amqp://a:b@h2:5673/", err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_INT(make("", err, sizeof err), BUS_EBAD_REQUEST);
}

BUS_TESTS({"lists_parse", test_lists_parse, 10}, {"a_bad_entry_is_named", test_a_bad_entry_is_named, 10})
