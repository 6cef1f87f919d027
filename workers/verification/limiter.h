/* The one outbound rate limit of the game API, shared by every
 * bus-verification process (limiter.c).
 *
 * Algorithm: a sliding-window log in Redis. One sorted set per limit
 * (key "bus:verification:gameapi") holds one member per granted call,
 * scored by the Redis server's own clock (TIME, so the processes' clocks do
 * not matter). One Lua script, atomic on the server, drops members older
 * than the window, grants when fewer than `limit` remain (adding the new
 * member) and otherwise answers how long until the oldest leaves the
 * window. So across any number of processes at most `limit` calls are
 * granted in ANY window of `window_ms` (not just aligned ones, as a fixed
 * window INCR would allow up to twice the limit across a boundary). The
 * window used is window_ms + margin_ms: the grant and the call's arrival
 * at the game differ by the network's and the loop's delays.
 *
 * Waiting: a process queues its callers in FIFO order and only the head
 * asks Redis (one script call per grant); a denied head sleeps until the
 * retry time the script gave. A caller waits at most max_wait_ms, then gets
 * BUS_ERATE_LIMITED with the time after which a retry may succeed.
 *
 * Redis down (not connected, error, timeout): the process falls back to a
 * conservative local share (its own sliding window of local_limit calls,
 * default limit/10, at least 1), says so in its metrics
 * (bus_verification_limiter_shared 0) and in verification.status, and goes
 * back to the shared window as soon as Redis answers again.
 *
 * limit 0 lifts the limit (benchmarks). Everything runs on the loop thread.
 */
#ifndef VF_LIMITER_H
#define VF_LIMITER_H

#include <stdint.h>
#include <uv.h>

#include "bus/redis.h"

typedef struct vf_limiter vf_limiter_t;

typedef struct {
    int limit;          /* calls per window; 0 = no limit */
    int64_t window_ms;  /* the game's window (60000) */
    int64_t margin_ms;  /* added to the window */
    int local_limit;    /* per process while Redis is down; 0 = max(1, limit/10) */
    int64_t max_wait_ms;/* a caller's bounded wait */
    const char *key;    /* Redis key; copied */
    const char *member_prefix; /* unique per process (the instance id); copied */
} vf_limiter_opts_t;

/* status 0: go ahead (one call granted); BUS_ERATE_LIMITED: the wait would
 * pass max_wait_ms, retry_after_ms says when to try again;
 * BUS_EUNAVAILABLE: the limiter is closing. Runs exactly once, never inside
 * vf_limiter_acquire. */
typedef void (*vf_limiter_cb)(int status, int64_t retry_after_ms, void *data);

/* redis may be NULL (local share only). Returns 0 or BUS_EINTERNAL. */
int vf_limiter_new(uv_loop_t *loop, bus_redis_t *redis, const vf_limiter_opts_t *o, vf_limiter_t **out);
/* Callers still waiting get BUS_EUNAVAILABLE; freed once its timer closed. */
void vf_limiter_free(vf_limiter_t *l);
/* Queues a caller. 0 (cb will run) or BUS_EINTERNAL (out of memory; cb never runs). */
int vf_limiter_acquire(vf_limiter_t *l, vf_limiter_cb cb, void *data);
/* 1 while the shared window in Redis is used, 0 on the local share. */
int vf_limiter_shared(const vf_limiter_t *l);
size_t vf_limiter_waiting(const vf_limiter_t *l);
const vf_limiter_opts_t *vf_limiter_opts(const vf_limiter_t *l);
int vf_limiter_local_limit(const vf_limiter_t *l);

#endif
