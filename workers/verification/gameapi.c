/* The game-API client (verification.h "the game API").
 *
 * Every call is a signed form POST (rules.h) on libbus's HTTP client
 * (bus/http_client.h) with BUS_GAME_API_TIMEOUT_MS (15 s). The player
 * lookup:
 *   - takes one grant of the shared limit per attempt (limiter.h);
 *   - retries the transient answers (40004 TIMEOUT RETRY, TOO FREQUENT,
 *     HTTP 429, 5xx, timeouts, refused connections) up to
 *     BUS_GAME_API_ATTEMPTS times with a doubling backoff from
 *     BUS_GAME_API_BACKOFF_MS, waiting at least Retry-After, and a whole
 *     backoff window when x-ratelimit-remaining says 0;
 *   - after a transport failure or a 5xx asks the fallback endpoint
 *     (BUS_GAME_API_FALLBACK_URL, same contract) on the next attempt;
 *   - never concludes "no such player" from a transient failure: only an
 *     explicit 40001 ROLE NOT EXIST does;
 *   - SIGN ERROR and unknown shapes end with internal and the raw code.
 * Answers are kept per process for a short while (the cache below) so that
 * a request retried after a lost store race does not spend the budget again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/metrics.h"
#include "verification.h"

int64_t vf_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vf_api_post(vf_state_t *st, const char *base, const char *path, const char *const *fields,
                bus_http_response_cb cb, void *data) {
    const char *f[34];
    size_t n = 0;
    for (; fields[n] && n < 30; n += 2) {
        f[n] = fields[n];
        f[n + 1] = fields[n + 1];
    }
    char sign[33];
    f[n] = NULL;
    if (vf_sign(f, st->salt, sign) != 0) return BUS_EBAD_REQUEST;
    f[n++] = "sign";
    f[n++] = sign;
    f[n] = NULL;
    char url[700];
    snprintf(url, sizeof url, "%s%s", base, path);
    bus_http_request_t rq = {.url = url, .form = f, .timeout_ms = st->api_timeout_ms};
    return bus_http_client_send(st->http, &rq, cb, data, NULL);
}

/* ---- the answers cache --------------------------------------------------- */

#define CACHE_N 256
typedef struct {
    int64_t fid;
    uint64_t at; /* uv_now */
    vf_player_answer_t a;
} cached_t;
static cached_t cache[CACHE_N];

static const vf_player_answer_t *cache_get(vf_state_t *st, int64_t fid, int64_t max_age_ms) {
    uint64_t now = uv_now(bus_worker_loop(st->w));
    for (int i = 0; i < CACHE_N; i++)
        if (cache[i].fid == fid && cache[i].at && now - cache[i].at <= (uint64_t)max_age_ms) return &cache[i].a;
    return NULL;
}

static void cache_put(vf_state_t *st, const vf_player_answer_t *a, int64_t fid) {
    int slot = 0;
    for (int i = 0; i < CACHE_N; i++) {
        if (cache[i].fid == fid) {
            slot = i;
            break;
        }
        if (cache[i].at < cache[slot].at) slot = i;
    }
    cache[slot].fid = fid;
    cache[slot].at = uv_now(bus_worker_loop(st->w));
    cache[slot].a = *a;
}

/* ---- the player lookup ---------------------------------------------------- */

typedef struct {
    vf_state_t *st;
    int64_t fid;
    int attempt;
    int use_fallback;
    vf_player_cb cb;
    void *data;
    uv_timer_t timer;
    char last[160]; /* what the last transient failure was */
    /* the outcome, delivered from the timer (never inside vf_api_player) */
    int status;
    int64_t retry_after_ms;
    vf_player_answer_t a;
    int finished;
} lookup_t;

static bus_counter_t *calls_counter(const char *outcome) {
    return bus_counter("bus_verification_game_api_calls_total", "Calls to the game API by outcome", "outcome",
                       outcome, NULL);
}

static void lookup_closed(uv_handle_t *h) { free(h->data); }

static void lookup_deliver(uv_timer_t *t) {
    lookup_t *l = t->data;
    const char *msg = l->last;
    l->cb(l->status, &l->a, l->retry_after_ms, msg, l->data);
    uv_close((uv_handle_t *)&l->timer, lookup_closed);
}

static void lookup_end(lookup_t *l, int status, int64_t retry_after_ms) {
    l->status = status;
    l->retry_after_ms = retry_after_ms;
    l->finished = 1;
    uv_timer_start(&l->timer, lookup_deliver, 0, 0);
}

static void lookup_attempt(uv_timer_t *t);

/* A transient failure: try again after delay_ms, or end. */
static void lookup_transient(lookup_t *l, int64_t delay_ms) {
    int64_t backoff = l->st->api_backoff_ms;
    for (int i = 1; i < l->attempt && backoff < 600000; i++) backoff *= 2;
    if (delay_ms < backoff) delay_ms = backoff;
    if (l->attempt >= l->st->api_attempts) {
        char why[160];
        snprintf(why, sizeof why, "the game API kept failing (%d attempts, last: %.90s); try again later",
                 l->attempt, l->last);
        memcpy(l->last, why, sizeof why);
        lookup_end(l, BUS_EUNAVAILABLE, delay_ms);
        return;
    }
    uv_timer_start(&l->timer, lookup_attempt, (uint64_t)delay_ms, 0);
}

static void on_player_answer(int status, const bus_http_response_t *r, void *data) {
    lookup_t *l = data;
    if (status != 0) {
        bus_counter_inc(calls_counter(status == BUS_ETIMEOUT ? "timeout" : "unavailable"), 1);
        snprintf(l->last, sizeof l->last, "%s", r->error);
        if (l->st->fallback_url[0]) l->use_fallback = !l->use_fallback;
        lookup_transient(l, 0);
        return;
    }
    vf_player_classify(r->http_status, r->body, r->body_len, &l->a);
    switch (l->a.kind) {
    case VF_PLAYER_OK:
    case VF_PLAYER_NOT_FOUND:
        bus_counter_inc(calls_counter(l->a.kind == VF_PLAYER_OK ? "ok" : "not_found"), 1);
        cache_put(l->st, &l->a, l->fid);
        l->last[0] = 0;
        lookup_end(l, 0, 0);
        return;
    case VF_PLAYER_TRANSIENT: {
        bus_counter_inc(calls_counter("transient"), 1);
        snprintf(l->last, sizeof l->last, "%s", l->a.code);
        int64_t wait = bus_http_response_retry_after_ms(r), remaining = -1;
        if (bus_http_response_header_int(r, "x-ratelimit-remaining", &remaining) == 0 && remaining == 0 &&
            wait < l->st->api_backoff_ms * 2)
            wait = l->st->api_backoff_ms * 2;
        if (r->http_status >= 500 && l->st->fallback_url[0]) l->use_fallback = !l->use_fallback;
        if (wait > vf_limiter_opts(l->st->limiter)->max_wait_ms && r->http_status == 429) {
            snprintf(l->last, sizeof l->last, "the game API is rate limiting us; retry in %lld ms", (long long)wait);
            lookup_end(l, BUS_ERATE_LIMITED, wait);
            return;
        }
        lookup_transient(l, wait > 0 ? wait : 0);
        return;
    }
    case VF_PLAYER_INTERNAL:
    default:
        bus_counter_inc(calls_counter("internal"), 1);
        bus_error(NULL, "game API: player %lld: unexpected answer %s (HTTP %d)", (long long)l->fid, l->a.code,
                  r->http_status);
        snprintf(l->last, sizeof l->last, "the game API answered %s", l->a.code);
        lookup_end(l, BUS_EINTERNAL, 0);
        return;
    }
}

static void on_granted(int status, int64_t retry_after_ms, void *data) {
    lookup_t *l = data;
    if (status != 0) {
        if (status == BUS_ERATE_LIMITED)
            snprintf(l->last, sizeof l->last, "the game API budget is used up; retry in %lld ms",
                     (long long)retry_after_ms);
        else
            snprintf(l->last, sizeof l->last, "shutting down");
        lookup_end(l, status, retry_after_ms);
        return;
    }
    char fid[24], now[24];
    snprintf(fid, sizeof fid, "%lld", (long long)l->fid);
    snprintf(now, sizeof now, "%lld", (long long)vf_now_ms());
    const char *fields[] = {"fid", fid, "time", now, NULL};
    const char *base = l->use_fallback && l->st->fallback_url[0] ? l->st->fallback_url : l->st->api_url;
    int rc = vf_api_post(l->st, base, "/api/player", fields, on_player_answer, l);
    if (rc != 0) {
        snprintf(l->last, sizeof l->last, "cannot call the game API: %s", bus_strerror(rc));
        lookup_end(l, rc == BUS_EUNAVAILABLE ? rc : BUS_EINTERNAL, 0);
    }
}

static void lookup_attempt(uv_timer_t *t) {
    lookup_t *l = t->data;
    l->attempt++;
    if (vf_limiter_acquire(l->st->limiter, on_granted, l) != 0) {
        snprintf(l->last, sizeof l->last, "out of memory");
        lookup_end(l, BUS_EINTERNAL, 0);
    }
}

void vf_api_player(vf_state_t *st, int64_t player_id, int64_t max_age_ms, vf_player_cb cb, void *data) {
    lookup_t *l = calloc(1, sizeof *l);
    if (!l) abort(); /* the worker cannot go on without memory */
    l->st = st;
    l->fid = player_id;
    l->cb = cb;
    l->data = data;
    uv_timer_init(bus_worker_loop(st->w), &l->timer);
    l->timer.data = l;
    const vf_player_answer_t *hit = max_age_ms > 0 ? cache_get(st, player_id, max_age_ms) : NULL;
    if (hit) {
        l->a = *hit;
        lookup_end(l, 0, 0);
        return;
    }
    uv_timer_start(&l->timer, lookup_attempt, 0, 0);
}
