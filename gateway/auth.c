/* API keys and rate limits of the edge.
 *
 * Keys: X-API-Key: <secret>, or Authorization: Bearer <secret>. With a keys
 * file (BUS_API_KEYS_FILE) every RPC and event route needs a key: none or an
 * unknown one is 401, a key without the route's scope is 403. Without a keys
 * file the edge is open (and bound to loopback only, see main.c); callers
 * are "anonymous".
 *
 * Rate limits: a fixed window per client counted in Redis, so every gateway
 * process shares it. The client is "key:<key id>" with a key, else the peer
 * address without its port; the Redis key is bus:rl:<client>:<window start
 * ms> and expires with the window. X-RateLimit-Reset is the time to the end
 * of the window (the same in every process). A request near the limit (or
 * the first of a client in a window) waits for INCR's answer; far below it
 * the request goes ahead and its count is sent in a per-iteration batch (see
 * rl_client_t below). Redis down or slow: counted in
 * bus_gateway_ratelimit_unavailable_total; the request is served
 * (BUS_RATELIMIT_FAIL=open, the default) or refused with 503 (closed).
 * BUS_RATE_LIMIT=0 turns limiting off.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "bus/error.h"
#include "bus/log.h"
#include "gateway.h"

/* The rate-limit identity of a request without a key: the peer address
 * without the port ("127.0.0.1:5123" -> "127.0.0.1", "[::1]:5" -> "[::1]"). */
static void client_from_peer(gw_req_t *r) {
    const char *peer = bus_http_peer(r->http);
    const char *colon = strrchr(peer, ':');
    size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
    if (n >= sizeof r->client) n = sizeof r->client - 1;
    memcpy(r->client, peer, n);
    r->client[n] = '\0';
}

int gw_authorize(gw_req_t *r, const char *scope) {
    gw_t *gw = r->gw;
    if (!gw->keys) {
        client_from_peer(r);
        return 0;
    }
    const char *secret = bus_http_header(r->http, "X-API-Key");
    if (!secret) {
        const char *a = bus_http_header(r->http, "Authorization");
        if (a && strncasecmp(a, "Bearer ", 7) == 0) {
            secret = a + 7;
            while (*secret == ' ') secret++;
        }
    }
    if (!secret || !*secret) {
        bus_counter_inc(gw->m_auth_missing, 1);
        gw_fail_unauthenticated(r, "an API key is required (X-API-Key header)");
        return -1;
    }
    const bus_apikey_t *key = bus_apikeys_find(gw->keys, secret);
    if (!key) {
        bus_counter_inc(gw->m_auth_invalid, 1);
        gw_fail_unauthenticated(r, "unknown API key");
        return -1;
    }
    snprintf(r->key_id, sizeof r->key_id, "%s", bus_apikey_id(key));
    snprintf(r->client, sizeof r->client, "key:%s", r->key_id);
    if (!bus_apikey_allows(key, scope)) {
        bus_counter_inc(gw->m_auth_scope, 1);
        gw_fail(r, 403, "API key %s lacks the scope %s", r->key_id, scope);
        return -1;
    }
    return 0;
}

static int64_t wall_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Per-client state of the current window, so that most requests need not
 * wait for Redis: while a client is far below its limit (by more than
 * max(limit/10, 16) requests, counting the requests of ours whose INCR is
 * still in flight), the request is let through at once and its INCR is sent
 * without waiting; near the limit (and for a client not seen in this window)
 * the request waits for Redis' answer, so the limit itself stays exact.
 * Every request is still counted in Redis, so all gateway processes share
 * the budget; the only slack is the few requests in flight between two
 * processes' INCRs while far from the limit. */
#define RL_SLOTS 4096
#define RL_PROBE 8

typedef struct gw_rl_client {
    char name[80];  /* "" = free */
    int64_t window; /* window start (ms) the counts belong to */
    int seen;       /* known is valid for window */
    int64_t known;  /* the largest count Redis returned for window */
    int64_t local;  /* our requests whose INCR is unanswered */
    int pending;    /* INCRs in flight (the slot cannot be reused meanwhile) */
    int64_t unsent; /* admitted without waiting, not yet sent to Redis */
    int batches;    /* INCRBY batches of unsent requests in flight */
    int dirty;      /* listed in `dirty` */
} rl_client_t;

typedef struct gw_rl_call {
    rl_client_t *c;     /* may be NULL (table full) */
    int64_t window;
    gw_t *gw;
    gw_req_t *r;        /* NULL when the request did not wait */
    int64_t n;          /* requests this call counts */
    struct gw_rl_call *next_free;
} rl_call_t;

/* The state (gw->rl): the table of clients, RL_SLOTS of them (allocated on
 * first use), a free list of calls, and the dirty clients below. */

/* Clients with requests admitted at once: their counts wait in `unsent`
 * and go out as one INCRBY per client from a timer every RL_BATCH_MS, and
 * not while the client's previous batch is still in flight. A busy client
 * costs Redis a few hundred commands a second rather than one per request;
 * its count reaches Redis at most RL_BATCH_MS plus a round trip late, which
 * only matters far below the limit (a request near it forces its client's
 * batch out first and waits for its own INCR). */
#define RL_BATCH_MS 2

static void on_flush(uv_timer_t *t);
static void send_batch(gw_t *gw, rl_client_t *c, int force);
static void mark_dirty(gw_t *gw, rl_client_t *c);

static rl_call_t *call_new(gw_t *gw) {
    rl_call_t *call = gw->rl.free_calls;
    if (call) gw->rl.free_calls = call->next_free;
    else call = malloc(sizeof *call);
    return call;
}

static void call_free(gw_t *gw, rl_call_t *call) {
    call->next_free = gw->rl.free_calls;
    gw->rl.free_calls = call;
}

static uint32_t hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static rl_client_t *client_slot(gw_t *gw, const char *name, int64_t window) {
    if (!gw->rl.clients) {
        gw->rl.clients = calloc(RL_SLOTS, sizeof *gw->rl.clients);
        gw->rl.dirty = calloc(RL_SLOTS, sizeof *gw->rl.dirty);
        if (!gw->rl.clients || !gw->rl.dirty) {
            free(gw->rl.clients);
            free(gw->rl.dirty);
            gw->rl.clients = NULL;
            gw->rl.dirty = NULL;
            return NULL;
        }
    }
    rl_client_t *clients = gw->rl.clients;
    uint32_t h = hash(name);
    rl_client_t *reuse = NULL;
    for (int i = 0; i < RL_PROBE; i++) {
        rl_client_t *c = &clients[(h + (uint32_t)i) % RL_SLOTS];
        if (strcmp(c->name, name) == 0) {
            if (c->window != window && c->pending == 0 && !c->dirty) {
                c->window = window;
                c->seen = 0;
                c->known = c->local = 0;
            }
            return c->window == window ? c : NULL;
        }
        if (!reuse && (!c->name[0] || (c->pending == 0 && !c->dirty && c->window != window))) reuse = c;
    }
    if (!reuse) return NULL;
    memset(reuse, 0, sizeof *reuse);
    snprintf(reuse->name, sizeof reuse->name, "%s", name);
    reuse->window = window;
    return reuse;
}

void gw_rate_limit_close(gw_t *gw) {
    if (!gw->rl.flusher_on) return;
    /* send what was admitted and not counted yet */
    for (size_t i = 0; gw->rl.clients && i < RL_SLOTS; i++)
        if (gw->rl.clients[i].unsent > 0) send_batch(gw, &gw->rl.clients[i], 1);
    for (size_t i = 0; i < gw->rl.ndirty; i++) gw->rl.dirty[i]->dirty = 0;
    gw->rl.ndirty = 0;
    uv_close((uv_handle_t *)&gw->rl.flusher, NULL);
    gw->rl.flusher_on = 0;
}

void gw_rate_limit_free(gw_t *gw) {
    free(gw->rl.clients);
    free(gw->rl.dirty);
    gw->rl.clients = NULL;
    gw->rl.dirty = NULL;
    while (gw->rl.free_calls) {
        rl_call_t *n = gw->rl.free_calls->next_free;
        free(gw->rl.free_calls);
        gw->rl.free_calls = n;
    }
}

/* Redis could not count this request. */
static void unavailable(gw_req_t *r) {
    bus_counter_inc(r->gw->m_rl_unavailable, 1);
    if (r->gw->rate_fail_closed) {
        gw_fail(r, 503, "rate limiting is unavailable (Redis is down) and BUS_RATELIMIT_FAIL=closed");
        return;
    }
    r->next(r);
}

static void set_headers(gw_req_t *r, int64_t count, int64_t window) {
    gw_t *gw = r->gw;
    int64_t now = wall_ms();
    r->rl_known = 1;
    r->rl_limit = gw->rate_limit;
    r->rl_remaining = count >= gw->rate_limit ? 0 : gw->rate_limit - count;
    r->rl_reset_s = (window + gw->rate_window_ms - now + 999) / 1000;
    if (r->rl_reset_s < 0) r->rl_reset_s = 0;
}

static void on_counted(int status, int64_t count, int64_t ttl_ms, void *data) {
    rl_call_t *call = data;
    gw_req_t *r = call->r;
    rl_client_t *c = call->c;
    int64_t window = call->window;
    gw_t *cgw = call->gw;
    int64_t n = call->n;
    (void)ttl_ms;
    call_free(cgw, call);
    if (c) {
        c->pending--;
        c->local -= n;
        if (status == 0 && c->window == window) {
            c->seen = 1;
            if (count > c->known) c->known = count;
        }
        if (!r && --c->batches == 0 && c->unsent > 0) mark_dirty(cgw, c); /* what waited for this batch */
    }
    if (!r) { /* the request went ahead without waiting */
        if (status != 0) bus_counter_inc(cgw->m_rl_unavailable, (uint64_t)n);
        return;
    }
    if (status != 0) {
        unavailable(r);
        return;
    }
    gw_t *gw = r->gw;
    set_headers(r, count, window);
    if (count > gw->rate_limit) {
        bus_counter_inc(gw->m_rate_limited, 1);
        gw_fail_rate_limited(r);
        return;
    }
    r->next(r);
}

/* INCRBY + PEXPIRE (when the key has no expiry yet) in one command. */
static const char incrby_script[] =
    "local c = redis.call('INCRBY', KEYS[1], ARGV[1]) "
    "if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
    "return c";

static void on_batch(int status, const redisReply *reply, void *data) {
    int64_t count = 0;
    if (status == 0 && reply && reply->type == REDIS_REPLY_INTEGER) count = reply->integer;
    else if (status == 0) status = BUS_EINTERNAL;
    on_counted(status, count, 0, data);
}

/* Sends the INCRBY of what was admitted for c without waiting; unless
 * forced, not while an earlier batch of c is in flight. */
static void send_batch(gw_t *gw, rl_client_t *c, int force) {
    if (!force && c->batches > 0) return;
    int64_t n = c->unsent;
    c->unsent = 0;
    if (n <= 0) return;
    rl_call_t *call = call_new(gw);
    char key[160], nbuf[24], wbuf[24];
    snprintf(key, sizeof key, "bus:rl:%s:%lld", c->name, (long long)c->window);
    snprintf(nbuf, sizeof nbuf, "%lld", (long long)n);
    snprintf(wbuf, sizeof wbuf, "%lld", (long long)gw->rate_window_ms);
    const char *argv[] = {"EVAL", incrby_script, "1", key, nbuf, wbuf};
    if (call) *call = (rl_call_t){.c = c, .window = c->window, .gw = gw, .n = n};
    if (!call || bus_redis_command_argv(gw->redis, 6, argv, NULL, on_batch, call) != 0) {
        if (call) call_free(gw, call);
        c->local -= n;
        bus_counter_inc(gw->m_rl_unavailable, (uint64_t)n);
        return;
    }
    c->pending++;
    c->batches++;
}

static void on_flush(uv_timer_t *t) {
    gw_t *gw = t->data;
    for (size_t i = 0; i < gw->rl.ndirty; i++) {
        gw->rl.dirty[i]->dirty = 0;
        send_batch(gw, gw->rl.dirty[i], 0); /* a client with a batch in flight waits for its answer */
    }
    gw->rl.ndirty = 0;
    uv_timer_stop(t); /* mark_dirty starts it again */
}

static void mark_dirty(gw_t *gw, rl_client_t *c) {
    if (c->dirty || gw->rl.ndirty >= RL_SLOTS) return;
    c->dirty = 1;
    gw->rl.dirty[gw->rl.ndirty++] = c;
    if (gw->rl.flusher_on && !uv_is_active((uv_handle_t *)&gw->rl.flusher))
        uv_timer_start(&gw->rl.flusher, on_flush, RL_BATCH_MS, 0);
}

void gw_rate_limit(gw_req_t *r) {
    gw_t *gw = r->gw;
    if (gw->rate_limit <= 0) {
        r->next(r);
        return;
    }
    if (!gw->redis || !bus_redis_is_connected(gw->redis)) {
        unavailable(r);
        return;
    }
    if (!gw->rl.flusher_on) {
        uv_timer_init(gw->loop, &gw->rl.flusher);
        gw->rl.flusher.data = gw;
        gw->rl.flusher_on = 1;
    }
    if (!r->client[0]) client_from_peer(r); /* a route that needs no key */
    int64_t window = wall_ms() / gw->rate_window_ms * gw->rate_window_ms;
    rl_client_t *c = client_slot(gw, r->client, window);
    int64_t margin = gw->rate_limit / 10 > 16 ? gw->rate_limit / 10 : 16;
    int64_t est = c ? c->known + c->local + 1 : 0;
    if (c && c->seen && est <= gw->rate_limit - margin && (c->dirty || gw->rl.ndirty < RL_SLOTS)) {
        /* far below the limit: go ahead, count it in this iteration's batch */
        c->local++;
        c->unsent++;
        mark_dirty(gw, c);
        set_headers(r, est, window);
        r->next(r);
        return;
    }
    /* requests of this client admitted earlier in this iteration reach Redis
     * first (one connection keeps the order), so this count includes them */
    if (c && c->unsent > 0) send_batch(gw, c, 1);
    rl_call_t *call = call_new(gw);
    if (!call) {
        unavailable(r);
        return;
    }
    *call = (rl_call_t){.c = c, .window = window, .gw = gw, .r = r, .n = 1};
    char key[160];
    snprintf(key, sizeof key, "bus:rl:%s:%lld", r->client, (long long)window);
    if (bus_redis_incr_expire(gw->redis, key, gw->rate_window_ms, on_counted, call) != 0) {
        call_free(gw, call);
        unavailable(r);
        return;
    }
    if (c) {
        c->pending++;
        c->local++;
    }
}
