/* Redis on libuv: hiredis's asynchronous API on a small adapter of our own
 * (hiredis 0.14's libuv adapter drops poll errors), with a timeout per
 * command, reconnection with jittered exponential backoff in the background,
 * and the helpers the domains and the edge need (rate-limit counters,
 * SET NX locks/idempotency keys, caches).
 *
 * Degraded mode: while the connection is down every call fails at once with
 * BUS_EUNAVAILABLE and the caller decides (serve without cache, allow or deny
 * a rate-limited request...). The client reconnects by itself.
 *
 * Threading: everything on the loop thread that owns the client.
 *
 * Calling convention of every command function:
 *   - returns 0: the command is sent (pipelined with the others issued in the
 *     same loop iteration) and its callback will be called exactly once, on
 *     the loop thread, with a status: 0, BUS_ETIMEOUT (no reply within the
 *     timeout; the reply, if it comes later, is discarded), BUS_EUNAVAILABLE
 *     (connection lost or client closed before the reply), BUS_EINTERNAL
 *     (Redis answered with an error, e.g. WRONGTYPE; logged), or the
 *     function's own codes below;
 *   - returns < 0: BUS_EUNAVAILABLE (not connected, too many commands
 *     pending, closing) or BUS_EBAD_REQUEST (bad arguments); nothing was sent
 *     and the callback is NEVER called.
 *   - Keys and values are copied before the function returns. Values handed
 *     to callbacks are valid only during the callback.
 */
#ifndef BUS_REDIS_H
#define BUS_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <uv.h>

typedef struct bus_redis bus_redis_t;

typedef struct {
    int timeout_ms;         /* per command; default 500 */
    int connect_timeout_ms; /* default 2000 */
    int backoff_min_ms;     /* first reconnection delay; default 100 */
    int backoff_max_ms;     /* cap; default 5000. Each delay is drawn in [d/2, d]. */
    int stall_ms;           /* no reply at all for this long: drop the connection
                               and reconnect; default max(4 x timeout, 2000) */
    int max_pending;        /* commands awaiting a reply; default 10000 */
    /* Called on the loop thread when the connection comes up (1) or goes down
     * (0). May be NULL. */
    void (*on_state)(int connected, void *data);
    void *state_data;
} bus_redis_opts_t;

/* Creates the client and starts connecting in the background; returns at
 * once. url: "redis://[[user]:password@]host[:port][/db]" (NULL: the default
 * redis://127.0.0.1:6379/0). opts may be NULL (defaults); it is copied.
 * Returns 0, or BUS_EBAD_REQUEST with a message naming BUS_REDIS_URL in
 * err[errlen] for a malformed URL. An unreachable server is not an error
 * here: it is logged (naming BUS_REDIS_URL), bus_redis_last_error() says why,
 * and commands fail with BUS_EUNAVAILABLE until it answers.
 * *out is owned by the caller: release with bus_redis_close. */
int bus_redis_open(uv_loop_t *loop, const char *url, const bus_redis_opts_t *opts, bus_redis_t **out, char *err,
                   size_t errlen);

/* Closes the client: pending commands are called back with
 * BUS_EUNAVAILABLE (before this returns, or from the loop if called from
 * inside a command callback); the memory is freed once the libuv handles are
 * closed, then `done` (may be NULL) runs on the loop thread. Safe with NULL. */
void bus_redis_close(bus_redis_t *r, void (*done)(void *data), void *data);

/* 1 when connected and ready for commands. */
int bus_redis_is_connected(const bus_redis_t *r);
/* The last connection error ("BUS_REDIS_URL=redis://...: connection refused"),
 * "" when none. Valid until the next loop iteration. */
const char *bus_redis_last_error(const bus_redis_t *r);
/* Commands sent and not yet answered or timed out. */
size_t bus_redis_pending(const bus_redis_t *r);
/* The URL with any password masked, for logs and health. */
const char *bus_redis_url(const bus_redis_t *r);

/* ---- helpers --------------------------------------------------------------- */

/* Fixed-window counter: INCR key, and PEXPIRE key window_ms when it has no
 * expiry yet, and PTTL key — in one round trip (MULTI/EXEC).
 * count: the value after increment; ttl_ms: time until the window resets
 * (for X-RateLimit-Reset). */
typedef void (*bus_redis_incr_cb)(int status, int64_t count, int64_t ttl_ms, void *data);
int bus_redis_incr_expire(bus_redis_t *r, const char *key, int64_t window_ms, bus_redis_incr_cb cb, void *data);

/* SET key value NX PX ttl_ms: was_set = 1 when the key was created, 0 when it
 * already existed (lock held, event already seen...). */
typedef void (*bus_redis_set_nx_cb)(int status, int was_set, void *data);
int bus_redis_set_nx_px(bus_redis_t *r, const char *key, const void *val, size_t len, int64_t ttl_ms,
                        bus_redis_set_nx_cb cb, void *data);

/* GET key: status BUS_ENOT_FOUND when the key does not exist. */
typedef void (*bus_redis_get_cb)(int status, const char *val, size_t len, void *data);
int bus_redis_get(bus_redis_t *r, const char *key, bus_redis_get_cb cb, void *data);

/* SET key value [PX ttl_ms] (ttl_ms <= 0: no expiry). */
typedef void (*bus_redis_status_cb)(int status, void *data);
int bus_redis_set_px(bus_redis_t *r, const char *key, const void *val, size_t len, int64_t ttl_ms,
                     bus_redis_status_cb cb, void *data);

/* DEL key: deleted = number of keys removed (0 or 1). */
typedef void (*bus_redis_del_cb)(int status, int64_t deleted, void *data);
int bus_redis_del(bus_redis_t *r, const char *key, bus_redis_del_cb cb, void *data);

/* Any command. reply: hiredis's reply, valid during the callback only; NULL
 * unless status is 0 or BUS_EINTERNAL (then it is the error reply). */
typedef void (*bus_redis_reply_cb)(int status, const redisReply *reply, void *data);
int bus_redis_command_argv(bus_redis_t *r, int argc, const char **argv, const size_t *argvlen,
                           bus_redis_reply_cb cb, void *data);

#endif
