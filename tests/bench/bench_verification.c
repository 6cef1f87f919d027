/* bench_verification: bus-verification against the fake game API
 * (tests/support/fake_game_api.h), with its processes started here.
 *
 *   bench_verification [--calls N] [--inflight K]
 *   name=verify procs=1 calls=... inflight=64 seconds=... rps=... errors=...
 *   name=verify procs=3 ...
 *   name=limiter procs=3 limit=20 window_ms=1000 calls=200 seconds=... max_in_window=... rate_per_window=... 429s=...
 *
 * verify: verifications per second with the game-API limit lifted
 * (BUS_GAME_API_LIMIT=0): RPC, attempt counter in Redis, the signed POST to
 * the fake, the store commit, player.verified. limiter: the shared limit's
 * accuracy under 3 processes and 200 requests in flight: the most calls the
 * fake saw in any window (must not exceed the limit) and the calls per
 * window actually achieved (the limit minus what the safety margin costs).
 * Needs BUS_AMQP_URL, BUS_REDIS_URL, BUS_TEST_TMPDIR, BUS_TEST_BUILD. */
#include <signal.h>

#include "../support/vf_testkit.h"

static bt_game_api_t *api;

static void run_verify(bt_client_t *c, int procs, int calls, int inflight, int first) {
    char name[32];
    snprintf(name, sizeof name, "bench%d", procs);
    vt_prepare(name, 12 + procs, api);
    const char *extra[] = {"BUS_VERIFY_ATTEMPTS=1000000", "BUS_LOG_LEVEL=error", NULL};
    pid_t w[3];
    for (int i = 0; i < procs; i++) w[i] = vt_start(name, i, extra);
    CHECK(bt_wait_ping("verification", 15000) == 0);
    vt_settle(c, 500); /* every process consuming */
    for (int i = 0; i < calls; i++) bt_game_api_player(api, first + i, "P", 7, 30);
    vt_batch_t b;
    vt_batch_init(&b, calls);
    int sent = 0, errors = 0;
    double t0 = bt_now_ms();
    while (1) {
        int done = 0;
        for (int i = 0; i < sent; i++) done += b.r[i].done;
        while (sent < calls && sent - done < inflight) {
            vt_fire(c, &b, "verify", 30000, "{\"user\":\"discord:%d\",\"player_id\":%d}", first + sent, first + sent);
            sent++;
        }
        if (done == calls) break;
        vt_settle(c, 1);
    }
    double secs = (bt_now_ms() - t0) / 1000;
    for (int i = 0; i < calls; i++) errors += strcmp(vt_outcome(&b.r[i]), "ok") != 0;
    printf("name=verify procs=%d calls=%d inflight=%d seconds=%.2f rps=%.0f errors=%d\n", procs, calls, inflight,
           secs, calls / secs, errors);
    fflush(stdout);
    vt_batch_free(&b);
    for (int i = 0; i < procs; i++) bt_kill(w[i], SIGTERM);
}

static void run_limiter(bt_client_t *c, int first) {
    vt_prepare("benchlimit", 15, api);
    const char *extra[] = {"BUS_GAME_API_LIMIT=20",          "BUS_GAME_API_WINDOW_MS=1000", "BUS_GAME_API_MARGIN_MS=300",
                           "BUS_GAME_API_MAX_WAIT_MS=60000", "BUS_VERIFY_ATTEMPTS=0",       "BUS_LOG_LEVEL=error",
                           NULL};
    pid_t w[3];
    for (int i = 0; i < 3; i++) w[i] = vt_start("benchlimit", i, extra);
    CHECK(bt_wait_ping("verification", 15000) == 0);
    vt_settle(c, 500);
    bt_game_api_reset_counts(api);
    bt_game_api_rate_limit(api, 20, 1000);
    const int n = 200;
    for (int i = 0; i < n; i++) bt_game_api_player(api, first + i, "P", 7, 30);
    vt_batch_t b;
    vt_batch_init(&b, n);
    double t0 = bt_now_ms();
    for (int i = 0; i < n; i++)
        vt_fire(c, &b, "verify", 60000, "{\"user\":\"discord:%d\",\"player_id\":%d}", first + i, first + i);
    vt_wait_batch(c, &b, 60000);
    double secs = (bt_now_ms() - t0) / 1000;
    int errors = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(vt_outcome(&b.r[i]), "ok") != 0 && errors++ < 2) {
            char *t = cJSON_PrintUnformatted(b.r[i].reply);
            fprintf(stderr, "bench_verification: %s\n", t);
            free(t);
        }
    printf("name=limiter procs=3 limit=20 window_ms=1000 calls=%d seconds=%.2f max_in_window=%d "
           "rate_per_window=%.1f 429s=%d errors=%d\n",
           n, secs, bt_game_api_max_in_window(api, 1000), n / secs, bt_game_api_rejected_429(api), errors);
    vt_batch_free(&b);
    for (int i = 0; i < 3; i++) bt_kill(w[i], SIGTERM);
}

int main(int argc, char **argv) {
    int calls = 2000, inflight = 64;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--calls") == 0) calls = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--inflight") == 0) inflight = atoi(argv[i + 1]);
    }
    if (calls < 1 || calls > 50000 || inflight < 1) {
        fprintf(stderr, "usage: bench_verification [--calls N] [--inflight K]\n");
        return 2;
    }
    api = bt_game_api_start(NULL);
    bt_client_t c;
    vt_open(&c);
    run_verify(&c, 1, calls, inflight, 1000000);
    run_verify(&c, 3, calls, inflight, 2000000);
    run_limiter(&c, 3000000);
    bt_client_close(&c);
    bt_game_api_stop(api);
    return 0;
}
