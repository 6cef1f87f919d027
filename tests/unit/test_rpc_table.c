/* The RPC correlation table (bus/src/rpc_table.c), without a broker. */
#include <stdlib.h>
#include <string.h>

#include "../../bus/src/rpc_table.h"
#include "../test.h"

typedef struct {
    bus__rpc_entry_t entry;
    int payload;
} call_t;

static void test_ids_are_unique_and_found(void) {
    bus__rpc_table_t t;
    bus__rpc_table_init(&t, "a1b2c3d4e5f6");
    enum { N = 20000 };
    call_t *calls = calloc(N, sizeof *calls);
    static char corr[N][64];
    for (int i = 0; i < N; i++) {
        calls[i].payload = i;
        bus__rpc_table_assign(&t, &calls[i].entry, corr[i], sizeof corr[i]);
        bus__rpc_table_link(&t, &calls[i].entry);
    }
    CHECK_INT(t.count, N);
    CHECK_STR(corr[0], "a1b2c3d4e5f6.1");
    for (int i = 0; i < N; i++) {
        call_t *c = (call_t *)bus__rpc_table_find(&t, corr[i]);
        CHECK(c != NULL);
        CHECK_INT(c->payload, i);
    }
    /* out-of-order completion: every other one, then the rest */
    for (int i = 0; i < N; i += 2) bus__rpc_table_remove(&t, bus__rpc_table_find(&t, corr[i]));
    CHECK_INT(t.count, N / 2);
    for (int i = 0; i < N; i++) CHECK((bus__rpc_table_find(&t, corr[i]) != NULL) == (i % 2 == 1));
    bus__rpc_entry_t *e;
    int drained = 0;
    while ((e = bus__rpc_table_any(&t))) {
        bus__rpc_table_remove(&t, e);
        drained++;
    }
    CHECK_INT(drained, N / 2);
    CHECK_INT(t.count, 0);
    free(calls);
}

static void test_foreign_and_malformed_ids_find_nothing(void) {
    bus__rpc_table_t t;
    bus__rpc_table_init(&t, "abc");
    call_t c = {0};
    char corr[64];
    bus__rpc_table_assign(&t, &c.entry, corr, sizeof corr);
    CHECK_STR(corr, "abc.1");
    /* assigned but not linked yet: not found */
    CHECK(bus__rpc_table_find(&t, "abc.1") == NULL);
    bus__rpc_table_link(&t, &c.entry);
    CHECK(bus__rpc_table_find(&t, "abc.1") == &c.entry);
    const char *bad[] = {"abd.1", "abc1", "abc.", "abc.1x", "abc.+1", "abc.-1", "abc. 1", "ab.1", "abcd.1",
                         "abc.01x", "abc.99999999999999999999999", "", "x", NULL};
    for (int i = 0; bad[i]; i++) CHECK(bus__rpc_table_find(&t, bad[i]) == NULL);
    CHECK(bus__rpc_table_find(&t, NULL) == NULL);
    CHECK(bus__rpc_table_find(&t, "abc.2") == NULL); /* never issued */
    bus__rpc_table_remove(&t, &c.entry);
    CHECK(bus__rpc_table_find(&t, "abc.1") == NULL); /* a late reply finds nothing */
}

/* An id made ahead (the edge's X-Request-Id) becomes a call's id once, only
 * while no pending call holds it, and never for foreign or unissued ids. */
static void test_made_ids(void) {
    bus__rpc_table_t t;
    bus__rpc_table_init(&t, "abc");
    char made[64], corr[64];
    bus__rpc_table_make(&t, made, sizeof made);
    CHECK_STR(made, "abc.1");
    call_t a = {0}, b = {0}, d = {0};
    bus__rpc_table_assign(&t, &d.entry, corr, sizeof corr);
    CHECK_STR(corr, "abc.2"); /* made and assigned ids share one counter */
    CHECK_INT(bus__rpc_table_assign_made(&t, &a.entry, made), 1);
    bus__rpc_table_link(&t, &a.entry);
    CHECK(bus__rpc_table_find(&t, "abc.1") == &a.entry);
    CHECK_INT(bus__rpc_table_assign_made(&t, &b.entry, made), 0); /* pending: taken */
    const char *bad[] = {"abc.3", "abd.1", "abc.01", "abc.0", "abc.", "req-abc.123", "", NULL};
    for (int i = 0; bad[i]; i++) CHECK_INT(bus__rpc_table_assign_made(&t, &b.entry, bad[i]), 0);
    CHECK_INT(bus__rpc_table_assign_made(&t, &b.entry, NULL), 0);
    bus__rpc_table_remove(&t, &a.entry);
    CHECK_INT(bus__rpc_table_assign_made(&t, &b.entry, made), 1); /* free again */
    CHECK_INT(b.entry.id, 1);
}

BUS_TESTS({"ids_are_unique_and_found", test_ids_are_unique_and_found, 10}, {"made_ids", test_made_ids, 10},
          {"foreign_and_malformed_ids_find_nothing", test_foreign_and_malformed_ids_find_nothing, 10})
