/* The shared outbound rate limit of the game API (limiter.h). */
#include "limiter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/metrics.h"

/* KEYS[1] the set; ARGV limit, window ms, member. Returns {1, 0} granted or
 * {0, ms until a slot frees}. */
static const char SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local limit = tonumber(ARGV[1])\n"
    "local window = tonumber(ARGV[2])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)\n"
    "if redis.call('ZCARD', KEYS[1]) < limit then\n"
    "  redis.call('ZADD', KEYS[1], now, ARGV[3])\n"
    "  redis.call('PEXPIRE', KEYS[1], window)\n"
    "  return {1, 0}\n"
    "end\n"
    "local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "local wait = tonumber(oldest[2]) + window - now + 1\n"
    "if wait < 1 then wait = 1 end\n"
    "return {0, wait}\n";

typedef struct waiter {
    struct waiter *next;
    vf_limiter_cb cb;
    void *data;
    uint64_t deadline; /* uv_now */
} waiter_t;

struct vf_limiter {
    uv_loop_t *loop;
    bus_redis_t *redis;
    vf_limiter_opts_t o;
    char key[128], prefix[96];
    uint64_t seq;
    waiter_t *head, *tail;
    size_t nwaiting;
    int asking;   /* a script call is out */
    int shared;   /* last answer came from Redis */
    int closing;
    uv_timer_t timer;
    /* the local share: times (uv_now) of the last local_limit grants, a ring */
    uint64_t *ring;
    int ring_n, ring_pos, ring_used;
    bus_gauge_t *g_shared, *g_waiting;
    bus_counter_t *c_granted_shared, *c_granted_local, *c_limited;
};

static void pump(vf_limiter_t *l);
static void on_timer(uv_timer_t *t);

static waiter_t *pop(vf_limiter_t *l) {
    waiter_t *w = l->head;
    if (!w) return NULL;
    l->head = w->next;
    if (!l->head) l->tail = NULL;
    l->nwaiting--;
    bus_gauge_set(l->g_waiting, (int64_t)l->nwaiting);
    return w;
}

static void grant(vf_limiter_t *l) {
    waiter_t *w = pop(l);
    if (!w) return;
    bus_counter_inc(l->shared ? l->c_granted_shared : l->c_granted_local, 1);
    w->cb(0, 0, w->data);
    free(w);
}

/* Nobody gets a slot within wait_ms: every waiter whose deadline comes
 * first is refused now (FIFO: no one behind the head is served before it),
 * the others sleep until then. */
static void deny(vf_limiter_t *l, int64_t wait_ms) {
    uint64_t now = uv_now(l->loop);
    waiter_t **pp = &l->head, *prev = NULL;
    while (*pp) {
        waiter_t *w = *pp;
        if (now + (uint64_t)wait_ms > w->deadline) {
            *pp = w->next;
            if (l->tail == w) l->tail = prev;
            l->nwaiting--;
            bus_counter_inc(l->c_limited, 1);
            w->cb(BUS_ERATE_LIMITED, wait_ms, w->data);
            free(w);
        } else {
            prev = w;
            pp = &w->next;
        }
    }
    bus_gauge_set(l->g_waiting, (int64_t)l->nwaiting);
    if (l->head && !l->closing) uv_timer_start(&l->timer, on_timer, (uint64_t)wait_ms, 0);
}

static void set_shared(vf_limiter_t *l, int shared) {
    if (shared != l->shared)
        bus_warn(NULL, shared ? "game API limiter: Redis answers again; back on the shared window"
                              : "game API limiter: Redis unavailable; using this process's local share of %d calls",
                 vf_limiter_local_limit(l));
    l->shared = shared;
    bus_gauge_set(l->g_shared, shared);
}

static int64_t window(const vf_limiter_t *l) { return l->o.window_ms + l->o.margin_ms; }

static void local_try(vf_limiter_t *l) {
    uint64_t now = uv_now(l->loop);
    if (l->ring_used < l->ring_n) {
        l->ring[(l->ring_pos + l->ring_used++) % l->ring_n] = now;
        grant(l);
        pump(l);
        return;
    }
    uint64_t oldest = l->ring[l->ring_pos];
    if (now >= oldest + (uint64_t)window(l)) {
        l->ring[l->ring_pos] = now;
        l->ring_pos = (l->ring_pos + 1) % l->ring_n;
        grant(l);
        pump(l);
        return;
    }
    deny(l, (int64_t)(oldest + (uint64_t)window(l) - now));
}

static void on_script(int status, const redisReply *r, void *data) {
    vf_limiter_t *l = data;
    l->asking = 0;
    if (l->closing) return;
    if (status == 0 && r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER) {
        set_shared(l, 1);
        if (r->element[0]->integer == 1) {
            grant(l);
            pump(l);
        } else
            deny(l, r->element[1]->integer);
        return;
    }
    set_shared(l, 0);
    local_try(l);
}

static void pump(vf_limiter_t *l) {
    /* one script call at a time; a sleeping head is woken by its timer */
    if (l->closing || l->asking || !l->head || uv_is_active((uv_handle_t *)&l->timer)) return;
    if (l->o.limit <= 0) {
        while (l->head) grant(l);
        return;
    }
    if (l->redis && bus_redis_is_connected(l->redis)) {
        char limit[24], win[24], member[160];
        snprintf(limit, sizeof limit, "%d", l->o.limit);
        snprintf(win, sizeof win, "%lld", (long long)window(l));
        snprintf(member, sizeof member, "%s:%llu", l->prefix, (unsigned long long)++l->seq);
        const char *argv[] = {"EVAL", SCRIPT, "1", l->key, limit, win, member};
        size_t lens[7];
        for (int i = 0; i < 7; i++) lens[i] = strlen(argv[i]);
        if (bus_redis_command_argv(l->redis, 7, argv, lens, on_script, l) == 0) {
            l->asking = 1;
            return;
        }
    }
    set_shared(l, 0);
    local_try(l);
}

static void on_timer(uv_timer_t *t) { pump(t->data); }

int vf_limiter_new(uv_loop_t *loop, bus_redis_t *redis, const vf_limiter_opts_t *o, vf_limiter_t **out) {
    vf_limiter_t *l = calloc(1, sizeof *l);
    if (!l) return BUS_EINTERNAL;
    l->loop = loop;
    l->redis = redis;
    l->o = *o;
    snprintf(l->key, sizeof l->key, "%s", o->key ? o->key : "bus:verification:gameapi");
    snprintf(l->prefix, sizeof l->prefix, "%s", o->member_prefix ? o->member_prefix : "p");
    l->o.key = l->key;
    l->o.member_prefix = l->prefix;
    l->ring_n = vf_limiter_local_limit(l);
    l->ring = calloc((size_t)l->ring_n, sizeof *l->ring);
    if (!l->ring) {
        free(l);
        return BUS_EINTERNAL;
    }
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    uv_unref((uv_handle_t *)&l->timer);
    l->shared = redis != NULL;
    l->g_shared = bus_gauge("bus_verification_limiter_shared",
                            "1 while the game API limit is shared in Redis, 0 on this process's local share", NULL);
    l->g_waiting = bus_gauge("bus_verification_limiter_waiting", "Calls waiting for the game API limit", NULL);
    l->c_granted_shared = bus_counter("bus_verification_limiter_granted_total", "Game API calls granted",
                                      "window", "shared", NULL);
    l->c_granted_local = bus_counter("bus_verification_limiter_granted_total", "Game API calls granted", "window",
                                     "local", NULL);
    l->c_limited = bus_counter("bus_verification_limiter_refused_total",
                               "Calls refused after waiting the bounded wait for the game API limit", NULL);
    bus_gauge_set(l->g_shared, l->shared);
    *out = l;
    return 0;
}

static void on_closed(uv_handle_t *h) {
    vf_limiter_t *l = h->data;
    free(l->ring);
    free(l);
}

void vf_limiter_free(vf_limiter_t *l) {
    if (!l) return;
    l->closing = 1;
    waiter_t *w;
    while ((w = pop(l))) {
        w->cb(BUS_EUNAVAILABLE, 0, w->data);
        free(w);
    }
    /* a script call still out comes back with BUS_EUNAVAILABLE when Redis
     * closes; Redis is closed after the limiter (main.c), so l must live until
     * then: freed with the timer handle, after the loop's next iteration. */
    uv_close((uv_handle_t *)&l->timer, on_closed);
}

int vf_limiter_acquire(vf_limiter_t *l, vf_limiter_cb cb, void *data) {
    waiter_t *w = calloc(1, sizeof *w);
    if (!w) return BUS_EINTERNAL;
    w->cb = cb;
    w->data = data;
    w->deadline = uv_now(l->loop) + (uint64_t)(l->o.max_wait_ms > 0 ? l->o.max_wait_ms : 0);
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    l->nwaiting++;
    bus_gauge_set(l->g_waiting, (int64_t)l->nwaiting);
    /* never call back inside acquire: start from a zero timer */
    if (!l->asking && !uv_is_active((uv_handle_t *)&l->timer)) uv_timer_start(&l->timer, on_timer, 0, 0);
    return 0;
}

int vf_limiter_shared(const vf_limiter_t *l) { return l->shared; }
size_t vf_limiter_waiting(const vf_limiter_t *l) { return l->nwaiting; }
const vf_limiter_opts_t *vf_limiter_opts(const vf_limiter_t *l) { return &l->o; }
int vf_limiter_local_limit(const vf_limiter_t *l) {
    if (l->o.local_limit > 0) return l->o.local_limit;
    int n = l->o.limit / 10;
    return n > 0 ? n : 1;
}
