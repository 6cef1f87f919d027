/* Chaos for bus-verification: a process SIGKILLed in the middle of a
 * gift-code batch, with three processes redeeming for 500 verified players
 * against the fake game API (which answers after a delay, so that calls are
 * in flight when the process dies).
 *
 * What must hold: the batch finishes, giftcode.finished is published once,
 * every player has exactly one recorded result, and no player's code was
 * sent to the game twice. A call that may have reached the game when its
 * process died is recorded as "interrupted" and never repeated; there are
 * at most as many of those as the dead process had calls in flight
 * (BUS_GIFTCODE_CONCURRENCY). */
#include <signal.h>

#include "../support/vf_testkit.h"
#include "bus/error.h"

#define PLAYERS 500
#define FIRST 100000

static void test_sigkill_during_giftcode_batch(void) {
    bt_client_t c;
    bt_game_api_t *api = bt_game_api_start(NULL);
    vt_prepare("chaos", 10, api);
    vt_open(&c);
    const char *extra[] = {"BUS_VERIFY_ATTEMPTS=0", "BUS_GAME_API_TIMEOUT_MS=1000", "BUS_GAME_API_MAX_WAIT_MS=1000",
                           "BUS_GIFTCODE_CONCURRENCY=4", NULL};
    pid_t w[3];
    for (int i = 0; i < 3; i++) w[i] = vt_start("chaos", i, extra);
    CHECK(bt_wait_ping("verification", 15000) == 0);
    vt_listen(&c);

    /* 500 verified players */
    vt_batch_t b;
    vt_batch_init(&b, PLAYERS);
    for (int i = 0; i < PLAYERS; i++) {
        bt_game_api_player(api, FIRST + i, "P", 9, 30);
        vt_fire(&c, &b, "verify", 60000, "{\"user\":\"discord:%d\",\"player_id\":%d}", FIRST + i, FIRST + i);
    }
    vt_wait_batch(&c, &b, 60000);
    for (int i = 0; i < PLAYERS; i++) CHECK_STR(vt_outcome(&b.r[i]), "ok");
    vt_batch_free(&b);

    /* the batch, with every answer 20 ms late */
    bt_game_api_code(api, "CHAOS", 0, NULL, 0, 0);
    bt_game_api_delay(api, 20);
    cJSON_Delete(vt_call(&c, "giftcodes_add", "{\"code\":\"CHAOS\"}"));
    double end = bt_now_ms() + 30000;
    while (bt_game_api_calls(api, "/api/gift_code") < PLAYERS / 3 && bt_now_ms() < end) vt_settle(&c, 5);
    int at_kill = bt_game_api_calls(api, "/api/gift_code");
    bt_kill(w[1], SIGKILL);
    fprintf(stderr, "  SIGKILL after %d of %d redemption calls\n", at_kill, PLAYERS);
    CHECK(at_kill >= PLAYERS / 3 && at_kill < PLAYERS);
    vt_settle(&c, 300);
    w[1] = vt_start("chaos", 3, extra); /* a replacement comes up */

    /* finished once */
    end = bt_now_ms() + 60000;
    while (vt_count("giftcode.finished") < 1 && bt_now_ms() < end) vt_settle(&c, 20);
    vt_settle(&c, 1000);
    CHECK_INT(vt_count_distinct("giftcode.finished"), 1); /* once (a replay may repeat it with its id) */
    const cJSON *totals = cJSON_GetObjectItem(vt_last("giftcode.finished")->data, "totals");
    CHECK_INT(vt_num(totals, "done"), PLAYERS);
    CHECK_INT(vt_num(totals, "pending"), 0);

    /* every player: one result; no second call */
    static int results[PLAYERS];
    memset(results, 0, sizeof results);
    int interrupted = 0, redeemed = 0;
    char cursor[1200] = "";
    for (;;) {
        cJSON *r = cursor[0] ? vt_call(&c, "giftcodes_status", "{\"code\":\"CHAOS\",\"limit\":100,\"cursor\":\"%s\"}", cursor)
                             : vt_call(&c, "giftcodes_status", "{\"code\":\"CHAOS\",\"limit\":100}");
        const cJSON *d = vt_ok(r), *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItem(d, "players")) {
            int i = (int)vt_num(p, "player_id") - FIRST;
            CHECK(i >= 0 && i < PLAYERS);
            results[i]++;
            CHECK_STR(vt_str(p, "status"), "done");
            const char *res = vt_str(p, "result");
            if (strcmp(res, "interrupted") == 0)
                interrupted++;
            else {
                CHECK_STR(res, "redeemed");
                redeemed++;
                CHECK_INT(bt_game_api_redeem_calls(api, FIRST + i, "CHAOS"), 1);
            }
        }
        const char *next = vt_str(d, "next_cursor");
        if (!next) {
            cJSON_Delete(r);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", next);
        cJSON_Delete(r);
    }
    for (int i = 0; i < PLAYERS; i++) CHECK_INT(results[i], 1);
    fprintf(stderr, "  %d redeemed, %d interrupted (the dead process's calls in flight), %d calls in all\n", redeemed,
            interrupted, bt_game_api_calls(api, "/api/gift_code"));
    CHECK_INT(redeemed + interrupted, PLAYERS);
    CHECK(interrupted <= 4);
    CHECK_INT(bt_game_api_max_redeem_calls(api, "CHAOS"), 1);
    CHECK(bt_game_api_calls(api, "/api/gift_code") <= PLAYERS);
    CHECK(bt_game_api_calls(api, "/api/gift_code") >= redeemed);
    CHECK_INT(bt_game_api_bad_signs(api), 0);

    bt_client_close(&c);
    for (int i = 0; i < 3; i++) bt_kill(w[i], SIGTERM);
    bt_game_api_stop(api);
}

/* SIGTERM instead: the process finishes the calls it has in flight, records
 * their results, starts nothing new and exits 0 within the drain; the other
 * process redeems the rest. Nothing is interrupted. */
static void test_sigterm_during_giftcode_batch(void) {
    const int n = 60;
    bt_client_t c;
    bt_game_api_t *api = bt_game_api_start(NULL);
    vt_prepare("drain", 10, api);
    vt_open(&c);
    const char *extra[] = {"BUS_VERIFY_ATTEMPTS=0", "BUS_GIFTCODE_CONCURRENCY=4", NULL};
    pid_t w[2];
    for (int i = 0; i < 2; i++) w[i] = vt_start("drain", i, extra);
    CHECK(bt_wait_ping("verification", 15000) == 0);
    vt_listen(&c);
    vt_batch_t b;
    vt_batch_init(&b, n);
    for (int i = 0; i < n; i++) {
        bt_game_api_player(api, FIRST + i, "P", 9, 30);
        vt_fire(&c, &b, "verify", 60000, "{\"user\":\"discord:%d\",\"player_id\":%d}", FIRST + i, FIRST + i);
    }
    vt_wait_batch(&c, &b, 60000);
    vt_batch_free(&b);
    bt_game_api_code(api, "DRAIN", 0, NULL, 0, 0);
    bt_game_api_delay(api, 400); /* calls outlast the shutdown unless it waits for them */
    cJSON_Delete(vt_call(&c, "giftcodes_add", "{\"code\":\"DRAIN\"}"));
    double end = bt_now_ms() + 30000;
    while (bt_game_api_calls(api, "/api/gift_code") < n / 4 && bt_now_ms() < end) vt_settle(&c, 5);
    kill(w[1], SIGTERM);
    CHECK_INT(bt_wait_exit(w[1], 15000), 0);
    int at_exit = bt_game_api_calls(api, "/api/gift_code");
    fprintf(stderr, "  SIGTERM: the process exited 0 after %d of %d calls\n", at_exit, n);
    CHECK(at_exit < n);
    end = bt_now_ms() + 60000;
    while (vt_count("giftcode.finished") < 1 && bt_now_ms() < end) vt_settle(&c, 20);
    CHECK(vt_count("giftcode.finished") >= 1);
    const cJSON *totals = cJSON_GetObjectItem(vt_last("giftcode.finished")->data, "totals");
    CHECK_INT(vt_num(totals, "done"), n);
    CHECK_INT(vt_num(cJSON_GetObjectItem(totals, "results"), "redeemed"), n);
    CHECK_INT(vt_num(cJSON_GetObjectItem(totals, "results"), "interrupted"), 0);
    CHECK_INT(bt_game_api_max_redeem_calls(api, "DRAIN"), 1);
    CHECK_INT(bt_game_api_calls(api, "/api/gift_code"), n);
    bt_client_close(&c);
    bt_kill(w[0], SIGTERM);
    bt_game_api_stop(api);
}

BUS_TESTS({"sigkill_during_giftcode_batch", test_sigkill_during_giftcode_batch, 120},
          {"sigterm_during_giftcode_batch", test_sigterm_during_giftcode_batch, 90})
