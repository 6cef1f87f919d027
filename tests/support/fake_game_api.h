/* A local fake of the game's API (the player and gift-code endpoints that
 * bus-verification calls), on the programmable HTTP server of
 * tests/support/fake_http.h. It behaves as the game does:
 *
 *   POST /api/player    form fid, time, sign
 *   POST /api/gift_code form fid, cdk, time, sign
 *
 * - checks the signature (lowercase hex MD5 of the other fields sorted by
 *   name as k=v joined by &, plus the salt): a bad one answers SIGN ERROR;
 * - knows the players it is given; others are 40001 ROLE NOT EXIST;
 * - answers the transient 40004 TIMEOUT RETRY the next n times for a player
 *   when told to;
 * - past its own rate limit (sliding window) answers HTTP 429 with
 *   x-ratelimit-limit, x-ratelimit-remaining: 0 and Retry-After; under it,
 *   the x-ratelimit headers on every answer;
 * - gift codes: SUCCESS 20000 the first time a player redeems a code,
 *   RECEIVED 40008 after that; a code may be given a fixed answer (TIME
 *   ERROR 40007, CDK NOT FOUND 40014, ...), a claim limit (USED 40005 once
 *   that many players redeemed it) or a minimum furnace (STOVE_LV ERROR
 *   40006); unknown codes are CDK NOT FOUND.
 * It counts what it saw (calls per endpoint, redemption calls per player and
 * code, bad signatures, arrival times) so tests assert on it.
 *
 * Thread-safe: the fake answers on its own thread, tests read from theirs.
 */
#ifndef BUS_TEST_FAKE_GAME_API_H
#define BUS_TEST_FAKE_GAME_API_H

#include <stddef.h>
#include <stdint.h>

typedef struct bt_game_api bt_game_api_t;

bt_game_api_t *bt_game_api_start(const char *salt);
void bt_game_api_stop(bt_game_api_t *g);
/* "http://127.0.0.1:PORT" (the BUS_GAME_API_URL to give the worker). */
const char *bt_game_api_url(bt_game_api_t *g, char *buf, size_t cap);

void bt_game_api_player(bt_game_api_t *g, int64_t fid, const char *nickname, int state, int stove_lv);
/* The next n lookups/redemptions of fid answer 40004 TIMEOUT RETRY. */
void bt_game_api_transient(bt_game_api_t *g, int64_t fid, int n);
/* The fake's own limit: more than `limit` calls in any window_ms -> 429. 0 = none. */
void bt_game_api_rate_limit(bt_game_api_t *g, int limit, int window_ms);
/* A gift code: err_code 0 = the normal SUCCESS/RECEIVED; else this answer
 * (err_code, msg) for everyone. claim_limit > 0: USED 40005 once that many
 * succeeded. min_furnace > 0: STOVE_LV ERROR 40006 below it. */
void bt_game_api_code(bt_game_api_t *g, const char *cdk, int err_code, const char *msg, int claim_limit,
                      int min_furnace);
/* Every answer waits delay_ms first (to keep calls in flight). */
void bt_game_api_delay(bt_game_api_t *g, int delay_ms);

/* Forgets every call seen so far (counters, arrival times, redemptions). */
void bt_game_api_reset_counts(bt_game_api_t *g);
/* Counters. path "/api/player" or "/api/gift_code"; NULL = both. */
int bt_game_api_calls(bt_game_api_t *g, const char *path);
int bt_game_api_redeem_calls(bt_game_api_t *g, int64_t fid, const char *cdk);
/* The largest number of redemption calls any one (fid, cdk) got. */
int bt_game_api_max_redeem_calls(bt_game_api_t *g, const char *cdk);
int bt_game_api_bad_signs(bt_game_api_t *g);
int bt_game_api_rejected_429(bt_game_api_t *g);
/* The most calls (both endpoints) that arrived within any window_ms. */
int bt_game_api_max_in_window(bt_game_api_t *g, int window_ms);

#endif
