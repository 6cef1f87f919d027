/* bus-verification through a real broker, Redis and SQLite store, against
 * the local fake of the game API (tests/support/fake_game_api.h):
 * verify/profile/refresh/history/unlink/players with their events and
 * errors, the game's transient answers and signature, the per-user attempt
 * limit, the ONE game-API limit shared by three processes (the fake counts
 * the most calls it saw in any window), the local share when Redis is
 * unreachable, gift codes (results by the game's table, batches stopped,
 * codes applied to players verified later), bulk_refresh with progress,
 * privacy export (with alliances' part) and forget.
 *
 * Each test has its own database, its own Redis db and its own fake. */
#include <curl/curl.h>
#include <signal.h>

#include "../support/vf_testkit.h"
#include "bus/error.h"

static bt_game_api_t *api;

static pid_t setup(bt_client_t *c, const char *test, int redis_db, const char *const *extra) {
    api = bt_game_api_start(NULL);
    vt_prepare(test, redis_db, api);
    vt_open(c);
    pid_t w = vt_start(test, 0, extra);
    CHECK(bt_wait_ping("verification", 15000) == 0);
    vt_listen(c);
    return w;
}

static void teardown(bt_client_t *c, pid_t *w, int n) {
    bt_client_close(c);
    for (int i = 0; i < n; i++) bt_kill(w[i], SIGTERM);
    bt_game_api_stop(api);
}

/* ---- players -------------------------------------------------------------- */

static void test_verify_profile_history_unlink(void) {
    bt_client_t c;
    const char *extra[] = {"BUS_VERIFY_ATTEMPTS=1000", NULL};
    pid_t w = setup(&c, "players", 1, extra);
    bt_game_api_player(api, 409449988, "FalteHD", 2630, 35);
    bt_game_api_player(api, 1002, "Bob", 100, 31);

    cJSON *r = vt_call(&c, "verify", "{\"user\":\"discord:1\",\"player_id\":409449988}");
    const cJSON *d = vt_ok(r);
    CHECK_INT(vt_num(d, "player_id"), 409449988);
    CHECK_STR(vt_str(d, "nickname"), "FalteHD");
    CHECK_INT(vt_num(d, "state"), 2630);
    CHECK_INT(vt_num(d, "furnace_level"), 35);
    CHECK_STR(vt_str(d, "furnace_label"), "FC 1");
    CHECK_STR(vt_str(d, "avatar_url"), "https://x/a409449988.png");
    CHECK_STR(vt_str(d, "user"), "discord:1");
    CHECK(vt_str(d, "verified_at") != NULL);
    cJSON_Delete(r);
    vt_wait_events(&c, "player.verified", 1, 5000);
    CHECK_STR(vt_str(vt_last("player.verified")->data, "user"), "discord:1");
    CHECK_INT(bt_game_api_bad_signs(api), 0);

    /* profile by user and by player, with its age */
    r = vt_call(&c, "profile", "{\"user\":\"discord:1\"}");
    d = cJSON_GetObjectItem(vt_ok(r), "profiles");
    CHECK_INT(cJSON_GetArraySize(d), 1);
    CHECK(vt_num(cJSON_GetArrayItem(d, 0), "age_s") >= 0);
    cJSON_Delete(r);
    r = vt_call(&c, "profile", "{\"player_id\":409449988}");
    CHECK_STR(vt_str(cJSON_GetArrayItem(cJSON_GetObjectItem(vt_ok(r), "profiles"), 0), "furnace_label"), "FC 1");
    cJSON_Delete(r);
    vt_error(vt_call(&c, "profile", "{\"player_id\":5}"), "not_found", "never verified");
    vt_error(vt_call(&c, "profile", "{\"user\":\"telegram:9\"}"), "not_found", "no verified player");

    /* another user: conflict naming the linked one, and a failure event */
    vt_error(vt_call(&c, "verify", "{\"user\":\"discord:2\",\"player_id\":409449988}"), "conflict", "discord:1");
    vt_wait_events(&c, "player.verification_failed", 1, 5000);
    CHECK_STR(vt_str(vt_last("player.verification_failed")->data, "reason"), "conflict");

    /* an unknown player: the game's 40001, never guessed */
    vt_error(vt_call(&c, "verify", "{\"user\":\"discord:3\",\"player_id\":777}"), "not_found", "ROLE NOT EXIST");
    vt_wait_events(&c, "player.verification_failed", 2, 5000);
    CHECK_STR(vt_str(vt_last("player.verification_failed")->data, "reason"), "no_such_player");

    /* transient 40004 twice, then the answer: 3 calls, verified */
    int before = bt_game_api_calls(api, "/api/player");
    bt_game_api_transient(api, 1002, 2);
    r = vt_call(&c, "verify", "{\"user\":\"telegram:5\",\"player_id\":1002}");
    CHECK_STR(vt_str(vt_ok(r), "furnace_label"), "30-1");
    cJSON_Delete(r);
    CHECK_INT(bt_game_api_calls(api, "/api/player") - before, 3);
    /* transient on every attempt: unavailable, NOT "no such player" */
    bt_game_api_player(api, 1003, "Carl", 100, 10);
    bt_game_api_transient(api, 1003, 100);
    vt_error(vt_call(&c, "verify", "{\"user\":\"telegram:6\",\"player_id\":1003}"), "unavailable", "40004");

    /* refresh sees changes: history entries and player.changed events */
    bt_game_api_player(api, 409449988, "Falte", 2631, 36);
    r = vt_call(&c, "refresh", "{\"player_id\":409449988}");
    d = vt_ok(r);
    CHECK_INT(vt_num(d, "changes"), 3);
    CHECK_STR(vt_str(d, "furnace_label"), "FC 1 - 1");
    CHECK_STR(vt_str(d, "user"), "discord:1"); /* the link is kept */
    cJSON_Delete(r);
    vt_wait_events(&c, "player.changed", 3, 5000);
    r = vt_call(&c, "refresh", "{\"player_id\":409449988}"); /* nothing changed: no entry */
    CHECK_INT(vt_num(vt_ok(r), "changes"), 0);
    cJSON_Delete(r);
    r = vt_call(&c, "history", "{\"player_id\":409449988}");
    d = cJSON_GetObjectItem(vt_ok(r), "changes");
    CHECK_INT(cJSON_GetArraySize(d), 3);
    int seen_nick = 0;
    const cJSON *h;
    cJSON_ArrayForEach(h, d) if (strcmp(vt_str(h, "field"), "nickname") == 0) {
        CHECK_STR(vt_str(h, "old"), "FalteHD");
        CHECK_STR(vt_str(h, "new"), "Falte");
        seen_nick = 1;
    }
    CHECK(seen_nick);
    cJSON_Delete(r);
    vt_error(vt_call(&c, "refresh", "{\"player_id\":4242}"), "not_found", "never verified");

    /* players: linked ones, by state */
    r = vt_call(&c, "players", "{}");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(vt_ok(r), "players")), 2);
    cJSON_Delete(r);
    r = vt_call(&c, "players", "{\"state\":100}");
    d = cJSON_GetObjectItem(vt_ok(r), "players");
    CHECK_INT(cJSON_GetArraySize(d), 1);
    CHECK_INT(vt_num(cJSON_GetArrayItem(d, 0), "player_id"), 1002);
    cJSON_Delete(r);

    /* unlink: only by the linked user; then someone else may verify */
    vt_error(vt_call(&c, "unlink", "{\"user\":\"discord:2\",\"player_id\":409449988}"), "not_found", "not linked");
    r = vt_call(&c, "unlink", "{\"user\":\"discord:1\",\"player_id\":409449988}");
    vt_ok(r);
    cJSON_Delete(r);
    vt_wait_events(&c, "player.unlinked", 1, 5000);
    r = vt_call(&c, "verify", "{\"user\":\"discord:2\",\"player_id\":409449988}");
    CHECK_STR(vt_str(vt_ok(r), "user"), "discord:2");
    cJSON_Delete(r);

    /* bad input */
    vt_error(vt_call(&c, "verify", "{\"user\":\"bob\",\"player_id\":1}"), "invalid", "/user");
    vt_error(vt_call(&c, "verify", "{\"user\":\"discord:1\",\"player_id\":\"12\"}"), "invalid", "/player_id");
    vt_error(vt_call(&c, "verify", "{\"user\":\"discord:1\",\"player_id\":0}"), "invalid", "/player_id");
    vt_error(vt_call(&c, "profile", "{}"), "invalid", NULL);
    CHECK_INT(bt_game_api_bad_signs(api), 0);
    teardown(&c, &w, 1);
}

/* A wrong salt: the game's SIGN ERROR is internal with the raw code, not
 * "no such player". */
static void test_sign_error(void) {
    bt_client_t c;
    const char *extra[] = {"BUS_GAME_API_SALT=wrong", NULL};
    pid_t w = setup(&c, "sign", 2, extra);
    bt_game_api_player(api, 1001, "A", 1, 1);
    vt_error(vt_call(&c, "verify", "{\"user\":\"discord:1\",\"player_id\":1001}"), "internal", "SIGN ERROR");
    CHECK_INT(bt_game_api_bad_signs(api), 1); /* not retried */
    vt_wait_events(&c, "player.verification_failed", 1, 5000);
    CHECK_STR(vt_str(vt_last("player.verification_failed")->data, "reason"), "game_api_error");
    teardown(&c, &w, 1);
}

/* At most BUS_VERIFY_ATTEMPTS per user and window, whatever the outcome. */
static void test_attempts_per_user(void) {
    bt_client_t c;
    const char *extra[] = {"BUS_VERIFY_ATTEMPTS=3", NULL};
    pid_t w = setup(&c, "attempts", 3, extra);
    for (int i = 0; i < 3; i++)
        vt_error(vt_call(&c, "verify", "{\"user\":\"discord:1\",\"player_id\":%d}", 900 + i), "not_found", NULL);
    vt_error(vt_call(&c, "verify", "{\"user\":\"discord:1\",\"player_id\":990}"), "rate_limited", "attempts");
    CHECK_INT(bt_game_api_calls(api, "/api/player"), 3); /* the 4th spent no budget */
    vt_error(vt_call(&c, "verify", "{\"user\":\"discord:2\",\"player_id\":990}"), "not_found", NULL); /* others may */
    teardown(&c, &w, 1);
}

/* ---- the shared limit ------------------------------------------------------------- */

/* Three processes, 200 verifications in flight, a limit of 20 per second
 * held in Redis (the game's 30 per 60 s scaled down; the margin of 300 ms
 * covers the grant-to-arrival delays of a loaded machine and of sanitizer
 * builds, as the default 1 s does for 60 s windows): the fake never sees
 * more than 20 calls in any 1 s window, never answers 429 (its own limit is
 * the same), and every request succeeds (they queue). */
static void test_limit_shared_by_three_processes(void) {
    bt_client_t c;
    const char *extra[] = {"BUS_GAME_API_LIMIT=20", "BUS_GAME_API_WINDOW_MS=1000", "BUS_GAME_API_MARGIN_MS=300",
                           "BUS_GAME_API_MAX_WAIT_MS=60000", "BUS_VERIFY_ATTEMPTS=0", NULL};
    pid_t w[3];
    w[0] = setup(&c, "limit3", 4, extra);
    w[1] = vt_start("limit3", 1, extra);
    w[2] = vt_start("limit3", 2, extra);
    bt_game_api_rate_limit(api, 20, 1000); /* the fake's own limit too: a 429 would show an excess */
    const int n = 200;
    for (int i = 0; i < n; i++) bt_game_api_player(api, 5000 + i, "P", 7, 20);
    vt_batch_t b;
    vt_batch_init(&b, n);
    for (int i = 0; i < n; i++)
        vt_fire(&c, &b, "verify", 60000, "{\"user\":\"discord:%d\",\"player_id\":%d}", 100 + i, 5000 + i);
    vt_wait_batch(&c, &b, 60000);
    int ok = 0;
    for (int i = 0; i < n; i++) ok += strcmp(vt_outcome(&b.r[i]), "ok") == 0;
    CHECK_INT(ok, n);
    vt_batch_free(&b);
    int worst = bt_game_api_max_in_window(api, 1000);
    fprintf(stderr, "  most calls in any 1 s window: %d (limit 20)\n", worst);
    CHECK(worst <= 20);
    CHECK_INT(bt_game_api_rejected_429(api), 0);
    CHECK_INT(bt_game_api_calls(api, "/api/player"), n);
    teardown(&c, w, 3);
}

/* Past the bounded wait: rate_limited with a retry time, and the budget is
 * not exceeded. */
static void test_limit_bounded_wait(void) {
    bt_client_t c;
    const char *extra[] = {"BUS_GAME_API_LIMIT=3", "BUS_GAME_API_WINDOW_MS=10000", "BUS_GAME_API_MARGIN_MS=0",
                           "BUS_GAME_API_MAX_WAIT_MS=300", "BUS_VERIFY_ATTEMPTS=0", NULL};
    pid_t w = setup(&c, "wait", 5, extra);
    for (int i = 0; i < 8; i++) bt_game_api_player(api, 6000 + i, "P", 7, 20);
    vt_batch_t b;
    vt_batch_init(&b, 8);
    for (int i = 0; i < 8; i++)
        vt_fire(&c, &b, "verify", 20000, "{\"user\":\"discord:%d\",\"player_id\":%d}", 100 + i, 6000 + i);
    vt_wait_batch(&c, &b, 20000);
    int ok = 0, limited = 0;
    for (int i = 0; i < 8; i++) {
        ok += strcmp(vt_outcome(&b.r[i]), "ok") == 0;
        if (strcmp(vt_outcome(&b.r[i]), "rate_limited") == 0) {
            limited++;
            CHECK_CONTAINS(vt_str(b.r[i].reply, "message"), "retry_after_ms=");
        }
    }
    CHECK_INT(ok, 3);
    CHECK_INT(limited, 5);
    CHECK_INT(bt_game_api_calls(api, NULL), 3);
    vt_batch_free(&b);
    vt_wait_events(&c, "player.verification_failed", 5, 5000);
    teardown(&c, &w, 1);
}

/* Redis unreachable: the local share (limit/10 = 2 per window), said in status. */
static void test_limit_local_share_without_redis(void) {
    bt_client_t c;
    const char *extra[] = {"BUS_GAME_API_LIMIT=20",           "BUS_GAME_API_WINDOW_MS=1500",
                           "BUS_GAME_API_MARGIN_MS=300",      "BUS_GAME_API_MAX_WAIT_MS=60000",
                           "BUS_REDIS_URL=redis://127.0.0.1:1/0", NULL};
    pid_t w = setup(&c, "local", 6, extra);
    for (int i = 0; i < 6; i++) bt_game_api_player(api, 7000 + i, "P", 7, 20);
    vt_batch_t b;
    vt_batch_init(&b, 6);
    for (int i = 0; i < 6; i++)
        vt_fire(&c, &b, "verify", 30000, "{\"user\":\"discord:%d\",\"player_id\":%d}", 100 + i, 7000 + i);
    vt_wait_batch(&c, &b, 30000);
    for (int i = 0; i < 6; i++) CHECK_STR(vt_outcome(&b.r[i]), "ok");
    vt_batch_free(&b);
    CHECK(bt_game_api_max_in_window(api, 1500) <= 2);
    cJSON *r = vt_call(&c, "status", "{}");
    const cJSON *l = cJSON_GetObjectItem(vt_ok(r), "limiter");
    CHECK_STR(vt_str(l, "mode"), "local");
    CHECK_INT(vt_num(l, "local_limit"), 2);
    cJSON_Delete(r);
    teardown(&c, &w, 1);
}

/* ---- gift codes ---------------------------------------------------------------------- */

static void verify_many(bt_client_t *c, int first, int n, int furnace_split) {
    vt_batch_t b;
    vt_batch_init(&b, n);
    for (int i = 0; i < n; i++) {
        bt_game_api_player(api, first + i, "P", 7, i < furnace_split ? 20 : 30);
        vt_fire(c, &b, "verify", 30000, "{\"user\":\"discord:%d\",\"player_id\":%d}", first + i, first + i);
    }
    vt_wait_batch(c, &b, 30000);
    for (int i = 0; i < n; i++) CHECK_STR(vt_outcome(&b.r[i]), "ok");
    vt_batch_free(&b);
}

static const cJSON *finished_of(const char *code) {
    for (int i = vt_nseen - 1; i >= 0; i--)
        if (strcmp(vt_seen[i].type, "giftcode.finished") == 0 && strcmp(vt_str(vt_seen[i].data, "code"), code) == 0)
            return vt_seen[i].data;
    return NULL;
}

static const cJSON *wait_finished(bt_client_t *c, const char *code, int ms) {
    double end = bt_now_ms() + ms;
    while (!finished_of(code) && bt_now_ms() < end) vt_settle(c, 20);
    CHECK(finished_of(code) != NULL);
    return finished_of(code);
}

static int result_count(const cJSON *totals, const char *result) {
    return (int)vt_num(cJSON_GetObjectItem(totals, "results"), result);
}

static void test_giftcodes(void) {
    bt_client_t c;
    const char *extra[] = {"BUS_VERIFY_ATTEMPTS=0", NULL};
    pid_t w[2];
    w[0] = setup(&c, "giftcodes", 7, extra);
    w[1] = vt_start("giftcodes", 1, extra);
    CHECK(bt_wait_ping("verification", 15000) == 0);
    verify_many(&c, 8000, 30, 10); /* 10 players at furnace 20, 20 at 30 */
    bt_game_api_code(api, "GIFT1", 0, NULL, 0, 0);
    bt_game_api_code(api, "HIGH", 0, NULL, 0, 25);
    bt_game_api_code(api, "OLD", 40007, "TIME ERROR.", 0, 0);
    bt_game_api_code(api, "FEW", 0, NULL, 5, 0);

    /* everyone redeemed once, with progress and one finished event */
    cJSON *r = vt_call(&c, "giftcodes_add", "{\"code\":\"GIFT1\",\"note\":\"launch\"}");
    CHECK_STR(vt_str(vt_ok(r), "batch"), "running");
    cJSON_Delete(r);
    vt_wait_events(&c, "giftcode.added", 1, 5000);
    const cJSON *f = wait_finished(&c, "GIFT1", 30000);
    CHECK_STR(vt_str(f, "batch"), "finished");
    const cJSON *totals = cJSON_GetObjectItem(f, "totals");
    CHECK_INT(vt_num(totals, "done"), 30);
    CHECK_INT(result_count(totals, "redeemed"), 30);
    CHECK(vt_count("giftcode.progress") >= 1);
    CHECK_INT(bt_game_api_max_redeem_calls(api, "GIFT1"), 1);
    CHECK_INT(bt_game_api_calls(api, "/api/gift_code"), 30);
    vt_error(vt_call(&c, "giftcodes_add", "{\"code\":\"GIFT1\"}"), "conflict", "already");

    /* status: totals and per-player results, paged */
    r = vt_call(&c, "giftcodes_status", "{\"code\":\"GIFT1\",\"limit\":20}");
    const cJSON *d = vt_ok(r);
    CHECK_INT(vt_num(cJSON_GetObjectItem(d, "totals"), "done"), 30);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(d, "players")), 20);
    CHECK_STR(vt_str(cJSON_GetArrayItem(cJSON_GetObjectItem(d, "players"), 0), "result"), "redeemed");
    CHECK(vt_str(d, "next_cursor") != NULL);
    cJSON_Delete(r);
    vt_error(vt_call(&c, "giftcodes_status", "{\"code\":\"NOPE\"}"), "not_found", NULL);

    /* furnace too low for some: recorded per player */
    cJSON_Delete(vt_call(&c, "giftcodes_add", "{\"code\":\"HIGH\"}"));
    f = wait_finished(&c, "HIGH", 30000);
    totals = cJSON_GetObjectItem(f, "totals");
    CHECK_INT(result_count(totals, "redeemed"), 20);
    CHECK_INT(result_count(totals, "furnace_too_low"), 10);

    /* expired: the batch stops for everyone after the first answers */
    cJSON_Delete(vt_call(&c, "giftcodes_add", "{\"code\":\"OLD\"}"));
    f = wait_finished(&c, "OLD", 30000);
    CHECK_STR(vt_str(f, "batch"), "stopped");
    CHECK_STR(vt_str(f, "reason"), "expired");
    int old_calls = bt_game_api_calls(api, "/api/gift_code") - 60;
    fprintf(stderr, "  calls for the expired code: %d of 30 players\n", old_calls);
    CHECK(old_calls >= 1 && old_calls <= 8); /* at most the calls already in flight (2 processes x 4) */

    /* claim limit reached: USED stops the batch */
    cJSON_Delete(vt_call(&c, "giftcodes_add", "{\"code\":\"FEW\"}"));
    f = wait_finished(&c, "FEW", 30000);
    CHECK_STR(vt_str(f, "reason"), "claim_limit");
    CHECK_INT(result_count(cJSON_GetObjectItem(f, "totals"), "redeemed"), 5);

    /* list */
    r = vt_call(&c, "giftcodes_list", "{}");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(vt_ok(r), "codes")), 4);
    cJSON_Delete(r);
    r = vt_call(&c, "giftcodes_list", "{\"status\":\"stopped\"}");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(vt_ok(r), "codes")), 2);
    cJSON_Delete(r);

    /* a player verified later gets the active codes (GIFT1, HIGH), not the stopped ones */
    int before = bt_game_api_calls(api, "/api/gift_code");
    verify_many(&c, 9000, 1, 0);
    double end = bt_now_ms() + 10000;
    while (bt_game_api_calls(api, "/api/gift_code") - before < 2 && bt_now_ms() < end) vt_settle(&c, 50);
    vt_settle(&c, 500);
    CHECK_INT(bt_game_api_calls(api, "/api/gift_code") - before, 2);
    CHECK_INT(bt_game_api_redeem_calls(api, 9000, "GIFT1"), 1);
    CHECK_INT(bt_game_api_redeem_calls(api, 9000, "HIGH"), 1);
    r = vt_call(&c, "giftcodes_status", "{\"code\":\"GIFT1\",\"limit\":1}");
    CHECK_INT(vt_num(cJSON_GetObjectItem(vt_ok(r), "totals"), "done"), 31);
    cJSON_Delete(r);
    CHECK_INT(bt_game_api_bad_signs(api), 0);
    teardown(&c, w, 2);
}

/* busctl giftcodes redeem / players refresh: live progress, then the totals. */
static int run_busctl(const char *const *args, const char *log, char *out, size_t cap) {
    char prog[600];
    snprintf(prog, sizeof prog, "%s/busctl", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    char *argv[12] = {prog};
    int n = 1;
    for (; args[n - 1] && n < 11; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    pid_t p = bt_spawn_program(argv, NULL, log);
    int rc = bt_wait_exit(p, 30000);
    FILE *f = fopen(log, "r");
    size_t len = f ? fread(out, 1, cap - 1, f) : 0;
    out[len] = 0;
    if (f) fclose(f);
    return rc;
}

static void test_busctl_progress(void) {
    bt_client_t c;
    const char *extra[] = {"BUS_VERIFY_ATTEMPTS=0", NULL};
    pid_t w = setup(&c, "busctl", 11, extra);
    verify_many(&c, 4000, 8, 0);
    bt_game_api_code(api, "BUSCTL1", 0, NULL, 0, 0);
    char log[600], out[8192];
    snprintf(log, sizeof log, "%s/verification-busctl-cli.log", vt_tmpdir());
    const char *redeem[] = {"giftcodes", "redeem", "BUSCTL1", "--note", "from the cli", NULL};
    CHECK_INT(run_busctl(redeem, log, out, sizeof out), 0);
    CHECK_CONTAINS(out, "[########################################] 8/8");
    CHECK_CONTAINS(out, "BUSCTL1 finished: 8 players");
    CHECK_CONTAINS(out, "redeemed");
    CHECK_INT(run_busctl(redeem, log, out, sizeof out), 1); /* added already: refused */
    CHECK_CONTAINS(out, "conflict");
    const char *refresh[] = {"players", "refresh", "--state", "7", NULL};
    CHECK_INT(run_busctl(refresh, log, out, sizeof out), 0);
    CHECK_CONTAINS(out, "refreshed 8 players, 0 failed");
    teardown(&c, &w, 1);
}

/* ---- bulk refresh ---------------------------------------------------------------------- */

static void test_bulk_refresh(void) {
    bt_client_t c;
    const char *extra[] = {"BUS_VERIFY_ATTEMPTS=0", NULL};
    pid_t w = setup(&c, "bulk", 8, extra);
    verify_many(&c, 3000, 12, 0);
    for (int i = 0; i < 12; i += 2) bt_game_api_player(api, 3000 + i, "Renamed", 7, 30);
    cJSON *r = vt_call(&c, "bulk_refresh", "{\"state\":7}");
    CHECK_INT(vt_num(vt_ok(r), "total"), 12);
    cJSON_Delete(r);
    double end = bt_now_ms() + 20000;
    const vt_seen_t *last = NULL;
    while (bt_now_ms() < end) {
        last = vt_last("player.bulk_refresh.progress");
        if (last && cJSON_IsTrue(cJSON_GetObjectItem(last->data, "finished"))) break;
        vt_settle(&c, 20);
    }
    CHECK(last && cJSON_IsTrue(cJSON_GetObjectItem(last->data, "finished")));
    CHECK_INT(vt_num(last->data, "done"), 12);
    CHECK_INT(vt_num(last->data, "failed"), 0);
    vt_wait_events(&c, "player.changed", 6, 5000);
    vt_error(vt_call(&c, "bulk_refresh", "{}"), "invalid", NULL);
    teardown(&c, &w, 1);
}

/* ---- privacy ----------------------------------------------------------------------------- */

static pid_t start_alliances(void) {
    static char store[600], schemas[600], prog[600], logp[600];
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s/verification-privacy-alliances.db", vt_tmpdir());
    char p[600];
    snprintf(p, sizeof p, "%s/verification-privacy-alliances.db", vt_tmpdir());
    unlink(p);
    const char *sd = getenv("BUS_SCHEMAS_DIR");
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", sd ? sd : "schemas");
    snprintf(prog, sizeof prog, "%s/bus-alliances", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    snprintf(logp, sizeof logp, "%s/verification-privacy-alliances.log", vt_tmpdir());
    const char *env[] = {store, schemas, "BUS_LOG_LEVEL=warn", NULL};
    char *argv[] = {prog, NULL};
    return bt_spawn_program(argv, env, logp);
}

static void test_privacy(void) {
    bt_client_t c;
    const char *extra[] = {"BUS_VERIFY_ATTEMPTS=0", NULL};
    pid_t w[2];
    w[0] = setup(&c, "privacy", 9, extra);
    bt_delete_queue(&c, "rpc.alliances");
    bt_delete_queue(&c, "events.alliances");
    w[1] = start_alliances();
    CHECK(bt_wait_ping("alliances", 15000) == 0);
    bt_game_api_player(api, 11, "Main", 5, 30);
    bt_game_api_player(api, 12, "Alt", 5, 10);
    cJSON_Delete(vt_call(&c, "verify", "{\"user\":\"telegram:77\",\"player_id\":11}"));
    cJSON_Delete(vt_call(&c, "verify", "{\"user\":\"telegram:77\",\"player_id\":12}"));
    bt_game_api_player(api, 11, "Main2", 5, 30);
    cJSON_Delete(vt_call(&c, "refresh", "{\"player_id\":11}"));
    cJSON *r = vt_call_svc(&c, "alliances", "create", "{\"name\":\"Privates\",\"tag\":\"PRV\",\"state\":5,\"leader\":\"telegram:77\"}");
    char alliance[64];
    snprintf(alliance, sizeof alliance, "%s", vt_str(vt_ok(r), "id"));
    cJSON_Delete(r);

    /* players {alliance}: the members' linked players, from the alliances domain */
    bt_game_api_player(api, 13, "Friend", 5, 20);
    cJSON_Delete(vt_call(&c, "verify", "{\"user\":\"discord:78\",\"player_id\":13}"));
    r = vt_call_svc(&c, "alliances", "join", "{\"id\":\"%s\",\"user\":\"discord:78\"}", alliance);
    vt_ok(r);
    cJSON_Delete(r);
    r = vt_call(&c, "players", "{\"alliance\":\"%s\"}", alliance);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(vt_ok(r), "players")), 3);
    cJSON_Delete(r);
    r = vt_call(&c, "players", "{\"alliance\":\"%s\",\"limit\":1}", alliance); /* one member per page */
    const cJSON *pg = vt_ok(r);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(pg, "players")), 2); /* the leader's two */
    char next[1200];
    snprintf(next, sizeof next, "%s", vt_str(pg, "next_cursor"));
    cJSON_Delete(r);
    r = vt_call(&c, "players", "{\"alliance\":\"%s\",\"limit\":1,\"cursor\":\"%s\"}", alliance, next);
    CHECK_INT(vt_num(cJSON_GetArrayItem(cJSON_GetObjectItem(vt_ok(r), "players"), 0), "player_id"), 13);
    cJSON_Delete(r);
    vt_error(vt_call(&c, "players", "{\"alliance\":\"00000000-0000-4000-8000-000000000000\"}"), "not_found", NULL);

    r = vt_call(&c, "privacy_export", "{\"user\":\"telegram:77\"}");
    const cJSON *d = vt_ok(r);
    const cJSON *h = cJSON_GetObjectItem(d, "export");
    CHECK_STR(vt_str(h, "user"), "telegram:77");
    CHECK_INT(vt_num(h, "format_version"), 1);
    CHECK(vt_str(h, "generated_at") != NULL);
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(d, "domains"), "verification");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(v, "players")), 2);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(v, "history")), 1);
    const cJSON *a = cJSON_GetObjectItem(cJSON_GetObjectItem(d, "domains"), "alliances");
    CHECK_STR(vt_str(cJSON_GetObjectItem(a, "membership"), "rank"), "R5");
    cJSON_Delete(r);
    vt_wait_events(&c, "privacy.export.requested", 1, 5000);
    vt_wait_events(&c, "privacy.export.completed", 1, 5000);

    r = vt_call(&c, "privacy_forget", "{\"user\":\"telegram:77\"}");
    CHECK_INT(vt_num(vt_ok(r), "players_deleted"), 2);
    cJSON_Delete(r);
    vt_wait_events(&c, "privacy.forget.requested", 1, 5000);
    vt_wait_events(&c, "privacy.forget.completed", 1, 5000);
    vt_wait_events(&c, "user.forgotten", 1, 5000);
    CHECK_STR(vt_str(vt_last("user.forgotten")->data, "user"), "telegram:77");
    vt_error(vt_call(&c, "profile", "{\"user\":\"telegram:77\"}"), "not_found", NULL);
    vt_error(vt_call(&c, "profile", "{\"player_id\":11}"), "not_found", NULL);
    /* alliances consumed user.forgotten: the membership went, discord:78 leads */
    vt_wait_events(&c, "alliance.member.left", 1, 10000);
    CHECK_STR(vt_str(vt_last("alliance.member.left")->data, "reason"), "forgotten");
    vt_wait_events(&c, "alliance.leader.changed", 1, 10000);
    r = vt_call(&c, "privacy_export", "{\"user\":\"telegram:77\"}");
    d = vt_ok(r);
    v = cJSON_GetObjectItem(cJSON_GetObjectItem(d, "domains"), "verification");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(v, "players")), 0);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(v, "history")), 0);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "domains"), "alliances"),
                                           "membership")));
    cJSON_Delete(r);
    teardown(&c, w, 2);
}

/* ---- through the HTTP edge ------------------------------------------------------------ */

typedef struct {
    char buf[16384];
    size_t len;
} http_body_t;

static size_t on_http_body(char *p, size_t sz, size_t n, void *data) {
    http_body_t *b = data;
    size_t k = sz * n;
    if (b->len + k < sizeof b->buf) {
        memcpy(b->buf + b->len, p, k);
        b->len += k;
        b->buf[b->len] = 0;
    }
    return k;
}

static long http(int port, const char *path, const char *body, http_body_t *out) {
    CURL *h = curl_easy_init();
    CHECK(h != NULL);
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    memset(out, 0, sizeof *out);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    if (body) curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_http_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return status;
}

static void test_through_the_edge(void) {
    char prog[600];
    snprintf(prog, sizeof prog, "%s/bus-gateway", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    if (access(prog, X_OK) != 0) {
        fprintf(stderr, "  %s not built: skipped\n", prog);
        return;
    }
    bt_client_t c;
    pid_t w[2];
    w[0] = setup(&c, "edge", 12, NULL);
    int port = 26000 + (int)(getpid() % 1000) + 700;
    if (port > 27999) port -= 1000;
    char addr[64], logp[600], schemas[600];
    snprintf(addr, sizeof addr, "BUS_HTTP_ADDR=127.0.0.1:%d", port);
    snprintf(logp, sizeof logp, "%s/verification-edge-gw.log", vt_tmpdir());
    const char *sd = getenv("BUS_SCHEMAS_DIR");
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", sd ? sd : "schemas");
    const char *env[] = {addr, schemas, "BUS_RATE_LIMIT=0", "BUS_LOG_LEVEL=warn", NULL};
    char *argv[] = {prog, NULL};
    w[1] = bt_spawn_program(argv, env, logp);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    http_body_t b;
    long st = 0;
    for (int i = 0; i < 100 && !st; i++) {
        st = http(port, "/api/v1/health", NULL, &b);
        if (!st) usleep(100000);
    }
    CHECK(st != 0);
    bt_game_api_player(api, 42, "Edgy", 3, 40);
    CHECK_INT(http(port, "/api/v1/rpc/verification/verify", "{\"user\":\"discord:4\",\"player_id\":42}", &b), 200);
    CHECK_CONTAINS(b.buf, "\"furnace_label\":\"FC 2\"");
    CHECK_INT(http(port, "/api/v1/rpc/verification/verify", "{\"user\":\"discord:4\",\"player_id\":43}", &b), 404);
    CHECK_CONTAINS(b.buf, "ROLE NOT EXIST");
    CHECK_INT(http(port, "/api/v1/rpc/verification/verify", "{\"user\":\"x\",\"player_id\":43}", &b), 422);
    CHECK_INT(http(port, "/api/v1/rpc/verification/giftcodes_list", "{}", &b), 200);
    teardown(&c, w, 2);
}

BUS_TESTS({"verify_profile_history_unlink", test_verify_profile_history_unlink, 60},
          {"sign_error", test_sign_error, 30}, {"attempts_per_user", test_attempts_per_user, 30},
          {"limit_shared_by_three_processes", test_limit_shared_by_three_processes, 90},
          {"limit_bounded_wait", test_limit_bounded_wait, 40},
          {"limit_local_share_without_redis", test_limit_local_share_without_redis, 40},
          {"giftcodes", test_giftcodes, 90}, {"bulk_refresh", test_bulk_refresh, 40},
          {"busctl_progress", test_busctl_progress, 60}, {"privacy", test_privacy, 60},
          {"through_the_edge", test_through_the_edge, 40})
