/* bus-verification: players verified against the game's player API, their
 * profiles and history, gift codes redeemed for every verified player,
 * privacy export and erasure (the issue "verification").
 *
 * RPC verification.<verify|profile|refresh|history|unlink|players|
 * bulk_refresh|status|giftcodes.add|giftcodes.list|giftcodes.status|
 * privacy.export|privacy.forget> (methods.c, giftcodes.c, privacy.c);
 * events player.*, giftcode.*, user.forgotten, privacy.* out. Any number of
 * processes run side by side on one store and one Redis: the store's
 * conditional writes decide every race, the game API's rate limit is one
 * window in Redis (limiter.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "verification.h"

static bus_config_extra_t extras[] = {
    {"BUS_GAME_API_URL", "--game-api-url", "the game API's base URL (POST <url>/api/player, /api/gift_code)",
     "https://wos-giftcode-api.centurygame.com", NULL},
    {"BUS_GAME_API_FALLBACK_URL", "--game-api-fallback-url",
     "the second endpoint with the same contract, asked after a failure of the first (\"\" = none)",
     "https://gof-report-api-formal.centurygame.com", NULL},
    {"BUS_GAME_API_SALT", "--game-api-salt", "the signing salt", VF_DEFAULT_SALT, NULL},
    {"BUS_GAME_API_TIMEOUT_MS", "--game-api-timeout-ms", "timeout of one call", "15000", NULL},
    {"BUS_GAME_API_ATTEMPTS", "--game-api-attempts", "attempts on transient answers (40004, 429, 5xx)", "3", NULL},
    {"BUS_GAME_API_BACKOFF_MS", "--game-api-backoff-ms", "first pause before a retry (doubles)", "2000", NULL},
    {"BUS_GAME_API_LIMIT", "--game-api-limit", "calls per window, shared by every process (0 = no limit)", "30",
     NULL},
    {"BUS_GAME_API_WINDOW_MS", "--game-api-window-ms", "the limit's window", "60000", NULL},
    {"BUS_GAME_API_MARGIN_MS", "--game-api-margin-ms", "added to the window (delays between grant and arrival)",
     "1000", NULL},
    {"BUS_GAME_API_LOCAL_LIMIT", "--game-api-local-limit",
     "calls per window of ONE process while Redis is down (0 = limit/10, at least 1)", "0", NULL},
    {"BUS_GAME_API_MAX_WAIT_MS", "--game-api-max-wait-ms", "how long a call may wait for the limit", "30000", NULL},
    {"BUS_VERIFY_ATTEMPTS", "--verify-attempts", "verify attempts per user and window (0 = no limit)", "5", NULL},
    {"BUS_VERIFY_WINDOW_MS", "--verify-window-ms", "the window of verify attempts", "1800000", NULL},
    {"BUS_GIFTCODE_SCAN_MS", "--giftcode-scan-ms", "how often a process looks for gift-code work", "5000", NULL},
    {"BUS_GIFTCODE_CONCURRENCY", "--giftcode-concurrency", "redemptions in flight per process", "4", NULL},
    {"BUS_GIFTCODE_PROGRESS_MS", "--giftcode-progress-ms", "at most one giftcode.progress per process per", "1000",
     NULL},
    {"BUS_MARKER_TTL_H", "--marker-ttl-h", "hours a handled request/event id is remembered", "168", NULL},
};
#define NEXTRAS (sizeof extras / sizeof extras[0])

vf_state_t *vf_state(bus_worker_t *w) { return bus_worker_state(w); }

static void vf_ctx_reset(bus_op_t *op, void *ctx) {
    (void)op;
    vf_ctx_t *c = ctx;
    cJSON_Delete(c->player);
    cJSON_Delete(c->docs);
    cJSON_Delete(c->code);
    cJSON_Delete(c->extra);
    free(c->answer);
    memset(c, 0, sizeof *c);
}

static void vf_committed(bus_op_t *op, void *ctx) {
    vf_ctx_t *c = ctx;
    vf_state_t *st = vf_state(bus_op_worker(op));
    if (strcmp(bus_op_method(op), "verify") == 0)
        vf_runner_player_verified(st, vf_doc_int(bus_op_params(op), "player_id"));
    else if (strcmp(bus_op_method(op), "privacy_forget") == 0)
        vf_privacy_purge_later(st, VF_PARAM(op, "user"), c->docs);
}

static const bus_op_engine_options_t engine_options = {
    .rpc_scope = VF_SCOPE_RPC,
    .event_scope = VF_SCOPE_EVENTS,
    .ctx_size = sizeof(vf_ctx_t),
    .ctx_reset = vf_ctx_reset,
    .committed = vf_committed,
};

/* A whole number setting within [lo, hi]; 0 or BUS_EBAD_REQUEST naming it. */
static int setting(bus_worker_t *w, const char *env, long long lo, long long hi, int64_t *out, char *err,
                   size_t errlen) {
    const char *v = bus_worker_extra(w, env);
    char *end = NULL;
    long long n = v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || *end || n < lo || n > hi) {
        snprintf(err, errlen, "%s: \"%s\" is not a whole number from %lld to %lld", env, v ? v : "", lo, hi);
        return BUS_EBAD_REQUEST;
    }
    *out = n;
    return 0;
}

static int url_setting(bus_worker_t *w, const char *env, char *out, size_t cap, int allow_empty, char *err,
                       size_t errlen) {
    const char *v = bus_worker_extra(w, env);
    if (!v) v = "";
    size_t n = strlen(v);
    while (n > 0 && v[n - 1] == '/') n--; /* "http://h/" and "http://h" are one base */
    if ((!allow_empty || n) && strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
        snprintf(err, errlen, "%s: \"%s\" is not an http:// or https:// URL", env, v);
        return BUS_EBAD_REQUEST;
    }
    if (n >= cap) {
        snprintf(err, errlen, "%s: too long", env);
        return BUS_EBAD_REQUEST;
    }
    memcpy(out, v, n);
    out[n] = 0;
    return 0;
}

static void on_pruned(int status, int64_t count, void *data) {
    vf_state_t *st = data;
    if (status == 0 && count > 0) bus_info(NULL, "forgot %lld old request/event markers", (long long)count);
    bus_worker_work_end(st->w);
}

static void on_prune_timer(bus_worker_timer_t *t, void *data) {
    (void)t;
    vf_state_t *st = data;
    bus_worker_work_begin(st->w);
    if (bus_store_processed_prune(st->store, st->marker_ttl_ms, on_pruned, st) != 0) bus_worker_work_end(st->w);
}

static int read_settings(vf_state_t *st, bus_worker_t *w, vf_limiter_opts_t *lo, char *err, size_t errlen) {
    int64_t v[16];
    int rc = url_setting(w, "BUS_GAME_API_URL", st->api_url, sizeof st->api_url, 0, err, errlen);
    if (!rc) rc = url_setting(w, "BUS_GAME_API_FALLBACK_URL", st->fallback_url, sizeof st->fallback_url, 1, err, errlen);
    const char *salt = bus_worker_extra(w, "BUS_GAME_API_SALT");
    snprintf(st->salt, sizeof st->salt, "%s", salt ? salt : VF_DEFAULT_SALT);
    if (!rc) rc = setting(w, "BUS_GAME_API_TIMEOUT_MS", 100, 600000, &v[0], err, errlen);
    if (!rc) rc = setting(w, "BUS_GAME_API_ATTEMPTS", 1, 20, &v[1], err, errlen);
    if (!rc) rc = setting(w, "BUS_GAME_API_BACKOFF_MS", 1, 600000, &v[2], err, errlen);
    if (!rc) rc = setting(w, "BUS_GAME_API_LIMIT", 0, 1000000, &v[3], err, errlen);
    if (!rc) rc = setting(w, "BUS_GAME_API_WINDOW_MS", 100, 86400000, &v[4], err, errlen);
    if (!rc) rc = setting(w, "BUS_GAME_API_MARGIN_MS", 0, 600000, &v[5], err, errlen);
    if (!rc) rc = setting(w, "BUS_GAME_API_LOCAL_LIMIT", 0, 1000000, &v[6], err, errlen);
    if (!rc) rc = setting(w, "BUS_GAME_API_MAX_WAIT_MS", 0, 3600000, &v[7], err, errlen);
    if (!rc) rc = setting(w, "BUS_VERIFY_ATTEMPTS", 0, 1000000, &v[8], err, errlen);
    if (!rc) rc = setting(w, "BUS_VERIFY_WINDOW_MS", 1000, 86400000, &v[9], err, errlen);
    if (!rc) rc = setting(w, "BUS_GIFTCODE_SCAN_MS", 10, 3600000, &v[10], err, errlen);
    if (!rc) rc = setting(w, "BUS_GIFTCODE_CONCURRENCY", 1, 256, &v[11], err, errlen);
    if (!rc) rc = setting(w, "BUS_GIFTCODE_PROGRESS_MS", 10, 3600000, &v[12], err, errlen);
    if (!rc) rc = setting(w, "BUS_MARKER_TTL_H", 1, 24 * 365, &v[13], err, errlen);
    if (rc) return rc;
    st->api_timeout_ms = (int)v[0];
    st->api_attempts = (int)v[1];
    st->api_backoff_ms = v[2];
    lo->limit = (int)v[3];
    lo->window_ms = v[4];
    lo->margin_ms = v[5];
    lo->local_limit = (int)v[6];
    lo->max_wait_ms = v[7];
    st->verify_attempts = (int)v[8];
    st->verify_window_ms = v[9];
    st->giftcode_scan_ms = v[10];
    st->giftcode_concurrency = (int)v[11];
    st->giftcode_progress_ms = v[12];
    st->marker_ttl_ms = v[13] * 3600 * 1000;
    return 0;
}

static void vf_fini(bus_worker_t *w);

static int vf_init(bus_worker_t *w, char *err, size_t errlen) {
    vf_state_t *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    st->w = w;
    bus_worker_set_state(w, st);
    vf_limiter_opts_t lo = {.key = "bus:verification:gameapi", .member_prefix = bus_worker_instance(w)};
    int rc = read_settings(st, w, &lo, err, errlen);
    if (rc == 0) rc = bus_store_open(bus_worker_loop(w), bus_worker_config(w)->store, &st->store, err, errlen);
    if (rc == 0) rc = vf_store_declare(st->store, err, errlen);
    if (rc == 0) rc = bus_redis_open(bus_worker_loop(w), bus_worker_config(w)->redis_url, NULL, &st->redis, err, errlen);
    bus_http_client_opts_t ho = {.name = "game_api", .timeout_ms = st->api_timeout_ms, .max_host_connections = 16};
    if (rc == 0 && bus_http_client_new(bus_worker_loop(w), &ho, &st->http) != 0) {
        snprintf(err, errlen, "cannot create the HTTP client");
        rc = BUS_EINTERNAL;
    }
    if (rc == 0 && vf_limiter_new(bus_worker_loop(w), st->redis, &lo, &st->limiter) != 0) {
        snprintf(err, errlen, "out of memory");
        rc = BUS_EINTERNAL;
    }
    if (rc == 0 && bus_op_engine_new(w, st->store, &engine_options, &st->engine) != 0) {
        snprintf(err, errlen, "out of memory");
        rc = BUS_EINTERNAL;
    }
    if (rc == 0) rc = vf_runner_new(st);
    if (rc != 0) {
        vf_fini(w);
        return rc;
    }
    /* hourly: forget request/event markers older than BUS_MARKER_TTL_H */
    if (bus_worker_timer_start(w, 60 * 1000, 3600 * 1000, on_prune_timer, st, &st->prune_timer) != 0)
        bus_warn(NULL, "no marker pruning timer");
    bus_info(NULL, "game API %s (fallback %s), limit %d per %lld ms shared in Redis", st->api_url,
             st->fallback_url[0] ? st->fallback_url : "none", lo.limit, (long long)lo.window_ms);
    return 0;
}

static void vf_fini(bus_worker_t *w) {
    vf_state_t *st = bus_worker_state(w);
    if (!st) return;
    if (st->prune_timer) bus_worker_timer_stop(st->prune_timer);
    vf_runner_free(st);
    bus_http_client_close(st->http, NULL, NULL);
    vf_limiter_free(st->limiter);
    bus_op_engine_free(st->engine);
    bus_redis_close(st->redis, NULL, NULL);
    bus_store_close(st->store, NULL, NULL);
    bus_worker_set_state(w, NULL);
    free(st);
}

static const bus_worker_def_t definition = {
    .service = "verification",
    .summary = "players verified against the game's API, profiles and history, gift codes for every player, privacy",
    .methods = vf_methods,
    .extras = extras,
    .nextras = NEXTRAS,
    .init = vf_init,
    .fini = vf_fini,
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
