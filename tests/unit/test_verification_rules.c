/* The game's facts of the verification domain (workers/verification/rules.c),
 * pure functions: furnace labels, the signature, and the classification of
 * the player and gift-code endpoints' answers. rules.c belongs to the
 * bus-verification program, so it is compiled into this test directly. The
 * expected signatures were computed independently (md5 of the documented
 * string). */
#include "../../workers/verification/rules.c"

#include "../test.h"

static void test_furnace_labels(void) {
    char b[32];
    CHECK_STR(vf_furnace_label(1, b, sizeof b), "1");
    CHECK_STR(vf_furnace_label(30, b, sizeof b), "30");
    CHECK_STR(vf_furnace_label(31, b, sizeof b), "30-1");
    CHECK_STR(vf_furnace_label(34, b, sizeof b), "30-4");
    CHECK_STR(vf_furnace_label(35, b, sizeof b), "FC 1");
    CHECK_STR(vf_furnace_label(36, b, sizeof b), "FC 1 - 1");
    CHECK_STR(vf_furnace_label(39, b, sizeof b), "FC 1 - 4");
    CHECK_STR(vf_furnace_label(40, b, sizeof b), "FC 2");
    CHECK_STR(vf_furnace_label(80, b, sizeof b), "FC 10");
    CHECK_STR(vf_furnace_label(84, b, sizeof b), "FC 10 - 4");
    /* every FC level: tier and step from the level, the tier's first has no step */
    for (int lv = 35; lv <= 84; lv++) {
        char want[32];
        int tier = (lv - 35) / 5 + 1, step = (lv - 35) % 5;
        if (step)
            snprintf(want, sizeof want, "FC %d - %d", tier, step);
        else
            snprintf(want, sizeof want, "FC %d", tier);
        CHECK_STR(vf_furnace_label(lv, b, sizeof b), want);
    }
}

static void test_sign(void) {
    char s[33];
    const char *f1[] = {"time", "1744314924000", "fid", "409449988", NULL}; /* unsorted on purpose */
    CHECK_INT(vf_sign(f1, VF_DEFAULT_SALT, s), 0);
    CHECK_STR(s, "570f59246ef9d960a50dbb5e074ea425");
    const char *f2[] = {"time", "2", "fid", "1", "cdk", "ABC", NULL};
    CHECK_INT(vf_sign(f2, VF_DEFAULT_SALT, s), 0);
    CHECK_STR(s, "2113c1ac8bec53638e4a3d0f7b2878e1");
    CHECK_INT(vf_sign(f2, "other", s), 0);
    CHECK(strcmp(s, "2113c1ac8bec53638e4a3d0f7b2878e1") != 0);
}

static void player(int http, const char *body, vf_player_answer_t *a) { vf_player_classify(http, body, strlen(body), a); }

static void test_player_answers(void) {
    vf_player_answer_t a;
    player(200,
           "{\"code\":0,\"msg\":\"success\",\"err_code\":\"\",\"data\":{\"fid\":409449988,\"nickname\":\"FalteHD\","
           "\"kid\":2630,\"stove_lv\":35,\"stove_lv_content\":\"u\",\"avatar_image\":\"https://a/b.png\","
           "\"total_recharge_amount\":0}}",
           &a);
    CHECK_INT(a.kind, VF_PLAYER_OK);
    CHECK_INT(a.fid, 409449988);
    CHECK_STR(a.nickname, "FalteHD");
    CHECK_INT(a.state, 2630);
    CHECK_INT(a.furnace_level, 35);
    CHECK_STR(a.avatar_url, "https://a/b.png");
    player(200, "{\"code\":1,\"msg\":\"ROLE NOT EXIST.\",\"data\":[],\"err_code\":40001}", &a);
    CHECK_INT(a.kind, VF_PLAYER_NOT_FOUND);
    player(200, "{\"code\":1,\"msg\":\"TIMEOUT RETRY.\",\"data\":[],\"err_code\":40004}", &a);
    CHECK_INT(a.kind, VF_PLAYER_TRANSIENT);
    player(429, "", &a);
    CHECK_INT(a.kind, VF_PLAYER_TRANSIENT);
    player(503, "<html>", &a);
    CHECK_INT(a.kind, VF_PLAYER_TRANSIENT);
    player(200, "{\"code\":1,\"msg\":\"SIGN ERROR\",\"data\":[],\"err_code\":\"\"}", &a);
    CHECK_INT(a.kind, VF_PLAYER_INTERNAL);
    CHECK_CONTAINS(a.code, "SIGN ERROR");
    player(200, "{\"code\":1,\"msg\":\"WHATEVER\",\"err_code\":40099}", &a);
    CHECK_INT(a.kind, VF_PLAYER_INTERNAL);
    CHECK_CONTAINS(a.code, "40099");
    player(200, "not json", &a);
    CHECK_INT(a.kind, VF_PLAYER_INTERNAL);
    player(200, "{\"code\":0,\"data\":{\"fid\":\"x\"}}", &a); /* success without the fields: unknown shape */
    CHECK_INT(a.kind, VF_PLAYER_INTERNAL);
}

static void redeem(const char *body, vf_redeem_answer_t *a) { vf_redeem_classify(200, body, strlen(body), a); }

static void test_redeem_answers(void) {
    struct {
        const char *body;
        vf_redeem_kind_t kind;
        const char *result;
    } cases[] = {
        {"{\"code\":0,\"msg\":\"SUCCESS\",\"err_code\":20000}", VF_REDEEM_FINAL, "redeemed"},
        {"{\"code\":0,\"msg\":\"SUCCESS\",\"err_code\":\"\"}", VF_REDEEM_FINAL, "redeemed"},
        {"{\"code\":1,\"msg\":\"RECEIVED.\",\"err_code\":40008}", VF_REDEEM_FINAL, "already_redeemed"},
        {"{\"code\":1,\"msg\":\"SAME TYPE EXCHANGE.\",\"err_code\":40011}", VF_REDEEM_FINAL, "already_redeemed"},
        {"{\"code\":1,\"msg\":\"USED.\",\"err_code\":40005}", VF_REDEEM_STOP, "claim_limit"},
        {"{\"code\":1,\"msg\":\"TIME ERROR.\",\"err_code\":40007}", VF_REDEEM_STOP, "expired"},
        {"{\"code\":1,\"msg\":\"CDK NOT FOUND.\",\"err_code\":40014}", VF_REDEEM_STOP, "not_found"},
        {"{\"code\":1,\"msg\":\"TIMEOUT RETRY.\",\"err_code\":40004}", VF_REDEEM_RETRY, NULL},
        {"{\"code\":1,\"msg\":\"ROLE NOT EXIST.\",\"err_code\":40001}", VF_REDEEM_FINAL, "no_such_player"},
        {"{\"code\":1,\"msg\":\"STOVE_LV ERROR.\",\"err_code\":40006}", VF_REDEEM_FINAL, "furnace_too_low"},
        {"{\"code\":1,\"msg\":\"RECHARGE_MONEY ERROR.\",\"err_code\":40017}", VF_REDEEM_FINAL, "recharge_required"},
        {"{\"code\":1,\"msg\":\"RECHARGE_MONEY_VIP ERROR.\",\"err_code\":40018}", VF_REDEEM_FINAL, "vip_required"},
        {"{\"code\":1,\"msg\":\"USER INFO ERROR.\",\"err_code\":40020}", VF_REDEEM_FINAL, "wrong_state"},
        {"{\"code\":1,\"msg\":\"TOO FREQUENT.\",\"err_code\":\"\"}", VF_REDEEM_RETRY, NULL},
        {"{\"code\":1,\"msg\":\"SIGN ERROR\",\"err_code\":\"\"}", VF_REDEEM_STOP, "error"},
        {"{\"code\":1,\"msg\":\"NEW THING\",\"err_code\":40123}", VF_REDEEM_FINAL, "error"},
    };
    vf_redeem_answer_t a;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        redeem(cases[i].body, &a);
        if (a.kind != cases[i].kind) fprintf(stderr, "  case %zu: %s\n", i, cases[i].body);
        CHECK_INT(a.kind, cases[i].kind);
        if (cases[i].result) CHECK_STR(a.result, cases[i].result);
    }
    redeem("{\"code\":1,\"msg\":\"NEW THING\",\"err_code\":40123}", &a);
    CHECK_STR(a.code, "40123"); /* the raw code is kept */
    vf_redeem_classify(429, "", 0, &a);
    CHECK_INT(a.kind, VF_REDEEM_RETRY);
    vf_redeem_classify(502, "x", 1, &a);
    CHECK_INT(a.kind, VF_REDEEM_RETRY);
    /* every result a rule gives is a key of the totals */
    const char *given[] = {"redeemed", "already_redeemed", "claim_limit", "expired", "not_found", "no_such_player",
                           "furnace_too_low", "recharge_required", "vip_required", "wrong_state", "error"};
    for (size_t i = 0; i < sizeof given / sizeof given[0]; i++) {
        int found = 0;
        for (const char *const *r = vf_redeem_results; *r; r++) found |= strcmp(*r, given[i]) == 0;
        CHECK(found);
    }
}

BUS_TESTS({"furnace_labels", test_furnace_labels, 10}, {"sign", test_sign, 10},
          {"player_answers", test_player_answers, 10}, {"redeem_answers", test_redeem_answers, 10})
