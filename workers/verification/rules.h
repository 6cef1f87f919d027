/* The game's facts the verification domain relies on, as pure functions
 * (no I/O; unit-tested in tests/unit/test_verification_rules.c).
 *
 * Signing. Every call to the game API is a form POST whose field `sign` is
 * the lowercase hex MD5 of the other fields sorted by name as `k=v` joined
 * by `&`, with the salt appended directly (no separator):
 *   md5("fid=409449988&time=1744314924000" + "tB87#kPtkxqOS2")
 * Values are signed raw (before form encoding).
 *
 * Furnace labels. 1-30 plain; 31-34 "30-1".."30-4"; from 35 each Fire
 * Crystal tier spans five levels: 35 "FC 1", 36 "FC 1 - 1" .. 39 "FC 1 - 4",
 * 40 "FC 2" .. 80 "FC 10" .. 84 "FC 10 - 4".
 *
 * Answers of the player endpoint: HTTP 200 {"code":0,"data":{fid, nickname,
 * kid (state), stove_lv, avatar_image}}; err_code 40001 "ROLE NOT EXIST"
 * (no such player); 40004 "TIMEOUT RETRY" (transient: retry, never a
 * conclusion); "SIGN ERROR" (our signature is wrong: internal); HTTP 429
 * (rate limited, x-ratelimit-remaining / Retry-After).
 *
 * Answers of the gift-code endpoint, by err_code / msg (vf_redeem_classify).
 */
#ifndef VF_RULES_H
#define VF_RULES_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#define VF_DEFAULT_SALT "tB87#kPtkxqOS2"

/* The label of a furnace level into buf ("" for levels < 1 or > 84 are
 * written as the plain number). Returns buf. */
const char *vf_furnace_label(int level, char *buf, size_t cap);

/* sign over fields (name, value, ..., NULL; any order) with salt: 32 hex
 * digits + NUL into out[33]. 0, or -1 when there are more than 16 fields. */
int vf_sign(const char *const *fields, const char *salt, char out[33]);

/* ---- the player endpoint ----------------------------------------------- */
typedef enum {
    VF_PLAYER_OK = 0,
    VF_PLAYER_NOT_FOUND,  /* 40001 ROLE NOT EXIST */
    VF_PLAYER_TRANSIENT,  /* 40004, HTTP 429, 5xx, TOO FREQUENT: retry */
    VF_PLAYER_INTERNAL,   /* SIGN ERROR, an unknown shape: raw code in `code` */
} vf_player_kind_t;

typedef struct {
    vf_player_kind_t kind;
    char code[64]; /* the raw err_code / msg / HTTP status that decided */
    /* when OK: the profile fields */
    int64_t fid;
    char nickname[128];
    int64_t state;
    int furnace_level;
    char avatar_url[512];
} vf_player_answer_t;

/* Classifies an HTTP answer (status and body) of /api/player. */
void vf_player_classify(int http_status, const char *body, size_t len, vf_player_answer_t *out);

/* ---- the gift-code endpoint -------------------------------------------- */
typedef enum {
    VF_REDEEM_FINAL = 0, /* a result for this player: record it */
    VF_REDEEM_STOP,      /* a result that ends the batch for everyone (USED, TIME ERROR, CDK NOT FOUND, SIGN ERROR) */
    VF_REDEEM_RETRY,     /* transient: TIMEOUT RETRY 40004, TOO FREQUENT, HTTP 429 / 5xx */
} vf_redeem_kind_t;

typedef struct {
    vf_redeem_kind_t kind;
    /* the result recorded for the player: "redeemed", "already_redeemed",
     * "claim_limit", "expired", "not_found", "no_such_player",
     * "furnace_too_low", "recharge_required", "vip_required",
     * "wrong_state", "error" */
    const char *result;
    char code[64]; /* the raw err_code or msg */
    char msg[64];
} vf_redeem_answer_t;

void vf_redeem_classify(int http_status, const char *body, size_t len, vf_redeem_answer_t *out);

/* Every result name vf_redeem_classify can give, plus "interrupted" (see
 * giftcodes.c), NULL-terminated: the keys of the totals. */
extern const char *const vf_redeem_results[];

#endif
