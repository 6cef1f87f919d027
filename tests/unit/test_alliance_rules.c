/* The alliance rank rules (workers/alliances/rules.c), pure functions,
 * checked exhaustively where the space is small (every actor x user x rank).
 * rules.c belongs to the bus-alliances program, not to libbus, so it is
 * compiled into this test directly. */
#include "../../workers/alliances/rules.c"

#include "../test.h"

static void test_rank_names(void) {
    CHECK_INT(al_rank_parse("R1"), 1);
    CHECK_INT(al_rank_parse("R5"), 5);
    CHECK_INT(al_rank_parse("R0"), 0);
    CHECK_INT(al_rank_parse("R6"), 0);
    CHECK_INT(al_rank_parse("r1"), 0);
    CHECK_INT(al_rank_parse("R1 "), 0);
    CHECK_INT(al_rank_parse(""), 0);
    CHECK_INT(al_rank_parse(NULL), 0);
    for (int r = 1; r <= 5; r++) CHECK_INT(al_rank_parse(al_rank_name(r)), r);
    CHECK_STR(al_rank_name(0), "?");
    CHECK_STR(al_rank_name(6), "?");
}

/* The rule, written independently of rules.c's structure. */
static int expected_set_rank(int actor, int user, int rank, int self) {
    if (actor != 4 && actor != 5) return 0;
    if (self) return 0;
    if (rank == 5) return 0;
    if (!(actor > user)) return 0;
    if (!(rank < actor)) return 0;
    return 1;
}

static void test_set_rank_every_case(void) {
    char why[256];
    int allowed = 0;
    for (int a = 1; a <= 5; a++)
        for (int u = 1; u <= 5; u++)
            for (int r = 1; r <= 5; r++)
                for (int self = 0; self <= 1; self++) {
                    why[0] = '\0';
                    int rc = al_check_set_rank(a, u, r, self, why, sizeof why);
                    int want = expected_set_rank(a, u, r, self);
                    if ((rc == 0) != want) {
                        fprintf(stderr, "  actor R%d user R%d rank R%d self %d: rc %d (%s)\n", a, u, r, self, rc, why);
                        CHECK(0);
                    }
                    if (rc) {
                        CHECK_INT(rc, BUS_EPERMISSION);
                        CHECK_CONTAINS(why, "rule: ");
                    } else {
                        allowed++;
                    }
                }
    /* R4 over R1..R3 giving R1..R3: 3x3; R5 over R1..R4 giving R1..R4: 4x4 */
    CHECK_INT(allowed, 9 + 16);
}

static void test_set_rank_messages(void) {
    char why[256];
    CHECK_INT(al_check_set_rank(3, 1, 2, 0, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "only R4 and R5 may change ranks (the actor is R3)");
    CHECK_INT(al_check_set_rank(5, 4, 5, 0, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "R5 is given only by transfer");
    CHECK_INT(al_check_set_rank(4, 4, 1, 0, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "must outrank the user (actor R4, user R4)");
    CHECK_INT(al_check_set_rank(4, 2, 4, 0, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "only give a rank below their own (actor R4, rank R4 asked)");
    CHECK_INT(al_check_set_rank(5, 5, 4, 1, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "own rank");
    CHECK_INT(al_check_set_rank(5, 1, 0, 0, why, sizeof why), BUS_EPERMISSION); /* unknown rank */
    CHECK_INT(al_check_set_rank(5, 1, 4, 0, NULL, 0), 0);                      /* why may be NULL */
    CHECK_INT(al_check_set_rank(5, 1, 9, 0, NULL, 0), BUS_EPERMISSION);
}

static void test_kick(void) {
    char why[256];
    for (int a = 1; a <= 5; a++)
        for (int u = 1; u <= 5; u++) {
            int want = (a >= 4) && a > u;
            CHECK_INT(al_check_kick(a, u, 0, why, sizeof why) == 0, want);
        }
    CHECK_INT(al_check_kick(5, 5, 1, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "kick themselves");
    CHECK_INT(al_check_kick(3, 1, 0, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "only R4 and R5 may kick");
    CHECK_INT(al_check_kick(4, 5, 0, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "outrank");
}

static void test_transfer_and_dissolve(void) {
    char why[256];
    for (int a = 1; a <= 5; a++) {
        CHECK_INT(al_check_transfer(a, 0, why, sizeof why) == 0, a == 5);
        CHECK_INT(al_check_dissolve(a, why, sizeof why) == 0, a == 5);
    }
    CHECK_INT(al_check_transfer(5, 1, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "another member");
    CHECK_INT(al_check_transfer(4, 0, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "only the R5 may transfer");
    CHECK_INT(al_check_dissolve(4, why, sizeof why), BUS_EPERMISSION);
    CHECK_CONTAINS(why, "only the R5 may dissolve");
}

/* Succession: highest rank first, then the earliest joined; the numeric key
 * the store sorts by must agree with the comparison for every pair. */
static void test_succession_order(void) {
    CHECK(al_succeeds_before(4, 90, 3, 1));  /* rank beats seniority */
    CHECK(al_succeeds_before(3, 2, 3, 7));   /* equal rank: longest-standing */
    CHECK(!al_succeeds_before(3, 7, 3, 2));
    CHECK(!al_succeeds_before(1, 1, 2, 1000000));
    int64_t seqs[] = {1, 2, 3, 999, 1000000, 999999999999LL};
    for (int ra = 1; ra <= 5; ra++)
        for (int rb = 1; rb <= 5; rb++)
            for (size_t i = 0; i < 6; i++)
                for (size_t j = 0; j < 6; j++) {
                    if (ra == rb && i == j) continue;
                    int before = al_succeeds_before(ra, seqs[i], rb, seqs[j]);
                    int by_key = al_succession_key(ra, seqs[i]) < al_succession_key(rb, seqs[j]);
                    CHECK_INT(before, by_key);
                }
    /* pick the heir from a list the way the worker's query does */
    struct { int rank; int64_t seq; } m[] = {{2, 3}, {4, 9}, {1, 1}, {4, 5}, {3, 2}};
    size_t best = 0;
    for (size_t i = 1; i < 5; i++)
        if (al_succession_key(m[i].rank, m[i].seq) < al_succession_key(m[best].rank, m[best].seq)) best = i;
    CHECK_INT(best, 3); /* the R4 who joined first */
}

static void test_name_key(void) {
    char k[64];
    CHECK_INT(al_name_key("Frost Wolves", k, sizeof k), 0);
    CHECK_STR(k, "frost wolves");
    CHECK_INT(al_name_key("ÉLAN Ärger", k, sizeof k), 0);
    CHECK_STR(k, "élan ärger");
    CHECK_INT(al_name_key("ВОЛКИ Ёж", k, sizeof k), 0);
    CHECK_STR(k, "волки ёж");
    CHECK_INT(al_name_key("ΛΥΚΟΙ", k, sizeof k), 0);
    CHECK_STR(k, "λυκοι");
    CHECK_INT(al_name_key("狼群 ×", k, sizeof k), 0); /* no case; × is not a capital */
    CHECK_STR(k, "狼群 ×");
    char a[64], b[64];
    al_name_key("FROST wolves", a, sizeof a);
    al_name_key("frost WOLVES", b, sizeof b);
    CHECK_STR(a, b);
    CHECK_INT(al_name_key("abcdef", k, 6), -1); /* needs 7 bytes */
    CHECK_INT(al_name_key("abcdef", k, 7), 0);
    CHECK_INT(al_name_key("Ж", k, 2), -1);
}

BUS_TESTS({"rank_names", test_rank_names, 5}, {"set_rank_every_case", test_set_rank_every_case, 5},
          {"set_rank_messages", test_set_rank_messages, 5}, {"kick", test_kick, 5},
          {"transfer_and_dissolve", test_transfer_and_dissolve, 5}, {"succession_order", test_succession_order, 5},
          {"name_key", test_name_key, 5})
