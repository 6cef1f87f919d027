/* bus-verification internals, shared by the files of this worker:
 *
 *   main.c       the worker definition, settings, init/fini
 *   rules.c      the game's facts, pure (rules.h): signing, furnace labels,
 *                the answers of the player and gift-code endpoints
 *   limiter.c    the one outbound rate limit shared in Redis (limiter.h)
 *   gameapi.c    the game-API client: signed form POSTs on bus/http_client.h,
 *                the player lookup with its retries, the fetched-profile cache
 *   store.c      documents: collections, views, history
 *   methods.c    verify, profile, refresh, history, unlink, players,
 *                bulk_refresh, status
 *   giftcodes.c  giftcodes.add/list/status/redeem and the redemption runner
 *   privacy.c    privacy.export and privacy.forget
 *
 * State-changing requests run as bus_op (bus/op.h: marker, per-key lock,
 * loads, decide, one batch with the outbox, publish, answer). Everything
 * runs on the worker's loop thread. An op's vf_ctx_t owns every cJSON it
 * points at.
 */
#ifndef VF_VERIFICATION_H
#define VF_VERIFICATION_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "bus/http_client.h"
#include "bus/op.h"
#include "bus/redis.h"
#include "bus/store.h"
#include "bus/worker.h"
#include "limiter.h"
#include "rules.h"

#define VF_COLL_PLAYERS "vf_players"         /* id = the player id (decimal) */
#define VF_COLL_HISTORY "vf_history"         /* id = a UUID */
#define VF_COLL_CODES "vf_giftcodes"         /* id = the code */
#define VF_COLL_REDEMPTIONS "vf_redemptions" /* id = "<code>|<player id>" */
#define VF_SCOPE_RPC "verification.rpc"
#define VF_SCOPE_EVENTS "verification.events"

typedef struct vf_runner vf_runner_t; /* giftcodes.c */

typedef struct vf_state {
    bus_worker_t *w;
    bus_store_t *store;
    bus_op_engine_t *engine;
    bus_redis_t *redis;
    bus_http_client_t *http;
    vf_limiter_t *limiter;
    vf_runner_t *runner;
    /* settings */
    char api_url[512], fallback_url[512], salt[128];
    int api_timeout_ms, api_attempts;
    int64_t api_backoff_ms;
    int verify_attempts;
    int64_t verify_window_ms;
    int64_t giftcode_scan_ms, giftcode_progress_ms;
    int giftcode_concurrency;
    int64_t marker_ttl_ms;
    bus_worker_timer_t *prune_timer;
} vf_state_t;

vf_state_t *vf_state(bus_worker_t *w);

typedef struct vf_ctx {
    cJSON *player;  /* the player document */
    cJSON *docs;    /* an array of documents (players of a user, ...) */
    cJSON *code;    /* a gift-code document */
    cJSON *extra;   /* a method's own value */
    vf_player_answer_t *answer; /* the game's answer (malloc'd) */
} vf_ctx_t;

#define VF(op) ((vf_ctx_t *)bus_op_ctx(op))
#define VF_PARAM(op, name) vf_doc_str(bus_op_params(op), name)

/* ---- the game API (gameapi.c) ------------------------------------------- */

/* status 0: a->kind is VF_PLAYER_OK or VF_PLAYER_NOT_FOUND;
 * BUS_ERATE_LIMITED: the shared limit's bounded wait passed (retry_after_ms);
 * BUS_EUNAVAILABLE: transient failures (40004, 429, 5xx, timeouts) on every
 * attempt: message says which, never "no such player";
 * BUS_EINTERNAL: SIGN ERROR or an unknown shape, message has the raw code. */
typedef void (*vf_player_cb)(int status, const vf_player_answer_t *a, int64_t retry_after_ms, const char *message,
                             void *data);
/* Looks a player up through the shared limit with retries. Answers from
 * the last max_age_ms are taken from this process's cache (0 = always ask).
 * cb runs exactly once, never inside the call. */
void vf_api_player(vf_state_t *st, int64_t player_id, int64_t max_age_ms, vf_player_cb cb, void *data);
/* One signed POST of fields (name, value, ..., NULL; `sign` is added) to
 * base + path, no limiter, no retry; cb as bus_http_client_send's. 0 or an
 * error (cb never runs). */
int vf_api_post(vf_state_t *st, const char *base, const char *path, const char *const *fields,
                bus_http_response_cb cb, void *data);
/* Epoch milliseconds (wall clock). */
int64_t vf_now_ms(void);

/* ---- documents (store.c) -------------------------------------------------- */

int vf_store_declare(bus_store_t *s, char *err, size_t errlen);
const char *vf_doc_str(const cJSON *doc, const char *field); /* "" when absent */
int64_t vf_doc_int(const cJSON *doc, const char *field);    /* 0 when absent */
int64_t vf_doc_version(const cJSON *doc);
/* The profile answered to callers (new object): {player_id, nickname, state,
 * furnace_level, furnace_label, avatar_url, verified_at, user, refreshed_at,
 * age_s}. */
cJSON *vf_profile_view(const cJSON *doc);
/* A player document from a fetched answer, over `old` (may be NULL), with
 * user (may be NULL: keep old's). New object. */
cJSON *vf_player_doc(const vf_player_answer_t *a, const cJSON *old, const char *user, const char *now);
/* Plans one history entry and a player.changed event per changed field
 * (nickname, state, furnace_level) between old and new; returns how many. */
int vf_plan_changes(bus_op_t *op, const cJSON *old, const cJSON *nw, const char *now);

/* ---- methods --------------------------------------------------------------- */

extern const bus_method_t vf_methods[];
void vf_run(bus_request_t *req, bus_op_step_fn load, int changes);
enum { VF_READS, VF_CHANGES };

/* giftcodes.c */
void vf_giftcodes_add(bus_request_t *req);
void vf_giftcodes_list(bus_request_t *req);
void vf_giftcodes_status(bus_request_t *req);
int vf_runner_new(vf_state_t *st);
void vf_runner_free(vf_state_t *st);
/* A player was verified: apply the active codes to them. */
void vf_runner_player_verified(vf_state_t *st, int64_t player_id);
/* The runner's view for verification.status (new object). */
cJSON *vf_runner_status(vf_state_t *st);

/* privacy.c */
void vf_privacy_export(bus_request_t *req);
void vf_privacy_forget(bus_request_t *req);
/* After a forget committed: the user's history and gift-code results. */
void vf_privacy_purge_later(vf_state_t *st, const char *user, const cJSON *players);

#endif
