/* Redis on libuv.
 *
 * The adapter. hiredis's async context asks for read/write interest through
 * five hooks (ev.addRead ... ev.cleanup); we back them with one uv_poll_t and
 * one uv_prepare_t per connection (ev_t). Unlike the adapter shipped with
 * hiredis 0.14, a poll error is passed on: we let hiredis read/write so that
 * it sees the socket error and disconnects, instead of leaving the
 * connection hanging. The ev_t outlives its hiredis context until both
 * handles are closed.
 *
 * Timeouts. hiredis 0.14 has no command timeout. Every command is a req_t
 * on a FIFO list (replies come back in the order commands were sent); all
 * commands share one timeout, so deadlines grow along the list and one
 * uv_timer armed for the first live deadline suffices. A timed-out request
 * is answered with BUS_ETIMEOUT at once and stays on the list, marked done,
 * until hiredis hands back its reply (or NULL when the connection goes),
 * and only then is freed. If the oldest request has had no reply at all for
 * stall_ms, the connection is considered dead and dropped.
 *
 * Reconnection. On any failure or loss the client waits a jittered,
 * exponentially growing delay and connects again (name resolution through
 * uv_getaddrinfo, so nothing blocks the loop). While not connected, calls
 * fail at once with BUS_EUNAVAILABLE.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/redis.h"

enum { ST_IDLE, ST_RESOLVING, ST_CONNECTING, ST_CONNECTED, ST_CLOSED };
enum { K_ARGV, K_INCR, K_SETNX, K_GET, K_SET, K_DEL, K_INTERNAL };

typedef struct req {
    struct req *prev, *next;
    bus_redis_t *r;
    int kind;
    int done;        /* the user callback has run (reply, timeout or error) */
    int listed;      /* on r's FIFO */
    uint64_t sent;   /* uv_now when sent */
    void (*cb)(void);
    void *data;
} req_t;

typedef struct {
    uv_poll_t poll;
    uv_prepare_t flush;    /* writes what hiredis has queued, before the loop waits */
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    int events;            /* what poll is armed for */
    int want_write;        /* hiredis has output queued */
    int flushing;          /* inside flush: a new write wish means the socket is full */
    int open_handles;
} ev_t;

struct bus_redis {
    uv_loop_t *loop;
    bus_redis_opts_t o;
    char host[256];
    int port;
    int db;
    char *user, *password;
    char url[512]; /* masked */
    int state;
    int closing;
    redisAsyncContext *ac;
    uv_getaddrinfo_t gai;
    int resolving;
    uv_timer_t t_cmd;   /* command deadlines */
    uv_timer_t t_retry; /* backoff and connect timeout */
    int open_handles;
    unsigned attempts;
    uint64_t rnd;
    req_t *head, *tail; /* FIFO of requests sent on the current connection */
    size_t pending;     /* listed and not done */
    char last_error[600];
    void (*done)(void *);
    void *done_data;
};

/* last_error = "BUS_REDIS_URL=<masked url>: <message>" */
static void seterr(bus_redis_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void seterr(bus_redis_t *r, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->last_error, sizeof r->last_error, "BUS_REDIS_URL=%.300s: %.255s", r->url, msg);
}

/* ---- the libuv adapter -------------------------------------------------- */

/* Once connected, hiredis's output is written from a uv_prepare_t rather
 * than by arming the poll for writability: a command costs one send() in
 * the turn it was issued, and the poll keeps the same interest (reading) for
 * the connection's life. libuv carries out every uv_poll_start() with a new
 * interest as an epoll DEL and ADD, which were two system calls per command
 * batch. Only when the socket is full is writability armed. Before the
 * connection is up, writability is how hiredis learns that connect() ended,
 * so that phase uses the poll. */

static void ev_poll_cb(uv_poll_t *h, int status, int events) {
    ev_t *e = h->data;
    if (!e->ac) return;
    if (status < 0) {
        /* the socket is in error: make hiredis notice it */
        if (e->ac->c.flags & REDIS_CONNECTED)
            redisAsyncHandleRead(e->ac);
        else
            redisAsyncHandleWrite(e->ac);
        return;
    }
    if (events & UV_READABLE) redisAsyncHandleRead(e->ac);
    if (e->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(e->ac);
}

static void ev_arm(ev_t *e, int events) {
    if (events == e->events) return;
    e->events = events;
    if (events)
        uv_poll_start(&e->poll, events, ev_poll_cb);
    else
        uv_poll_stop(&e->poll);
}

static void ev_flush_cb(uv_prepare_t *p) {
    ev_t *e = p->data;
    uv_prepare_stop(p);
    if (!e->ac || !e->want_write) return;
    e->flushing = 1;
    redisAsyncHandleWrite(e->ac); /* calls ev_del_write when all went out */
    e->flushing = 0;
}

static void ev_add_read(void *p) {
    ev_t *e = p;
    ev_arm(e, e->events | UV_READABLE);
}
static void ev_del_read(void *p) {
    ev_t *e = p;
    ev_arm(e, e->events & ~UV_READABLE);
}
static void ev_add_write(void *p) {
    ev_t *e = p;
    e->want_write = 1;
    /* connected and not already waiting for room: written before the loop waits */
    if ((e->ac->c.flags & REDIS_CONNECTED) && !e->flushing && !(e->events & UV_WRITABLE))
        uv_prepare_start(&e->flush, ev_flush_cb);
    else
        ev_arm(e, e->events | UV_WRITABLE);
}
static void ev_del_write(void *p) {
    ev_t *e = p;
    e->want_write = 0;
    ev_arm(e, e->events & ~UV_WRITABLE);
}
static void ev_closed(uv_handle_t *h) {
    ev_t *e = h->data;
    if (--e->open_handles == 0) free(e);
}
static void ev_cleanup(void *p) {
    ev_t *e = p;
    e->ac->ev.data = NULL;
    e->ac = NULL;
    uv_close((uv_handle_t *)&e->poll, ev_closed);
    uv_close((uv_handle_t *)&e->flush, ev_closed);
}

static int ev_attach(uv_loop_t *loop, redisAsyncContext *ac) {
    ev_t *e = calloc(1, sizeof *e);
    if (!e) return -1;
    if (uv_poll_init_socket(loop, &e->poll, ac->c.fd) != 0) {
        free(e);
        return -1;
    }
    uv_prepare_init(loop, &e->flush);
    e->open_handles = 2;
    e->poll.data = e;
    e->flush.data = e;
    e->ac = ac;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* ---- requests ----------------------------------------------------------- */

static void list_remove(bus_redis_t *r, req_t *q) {
    if (!q->listed) return;
    if (q->prev) q->prev->next = q->next; else r->head = q->next;
    if (q->next) q->next->prev = q->prev; else r->tail = q->prev;
    q->prev = q->next = NULL;
    q->listed = 0;
    if (!q->done) r->pending--;
}

static int64_t int_of(const redisReply *x) {
    if (!x) return 0;
    if (x->type == REDIS_REPLY_INTEGER) return x->integer;
    if (x->type == REDIS_REPLY_STRING) return strtoll(x->str, NULL, 10);
    return 0;
}

/* Runs the user callback of q with `st` and the reply (which may be NULL). */
static void deliver(req_t *q, int st, const redisReply *x) {
    if (q->done) return;
    bus_redis_t *r = q->r;
    if (q->listed) r->pending--;
    q->done = 1;
    if (st == 0 && x && x->type == REDIS_REPLY_ERROR) {
        bus_warn(NULL, "redis: %s", x->str);
        st = BUS_EINTERNAL;
    }
    switch (q->kind) {
    case K_ARGV:
        ((bus_redis_reply_cb)q->cb)(st, (st == 0 || st == BUS_EINTERNAL) ? x : NULL, q->data);
        break;
    case K_INCR: {
        int64_t count = 0, ttl = 0;
        if (st == 0) {
            /* EXEC: [INCR, PEXPIRE, PTTL]; nil when the transaction aborted */
            if (x->type == REDIS_REPLY_ARRAY && x->elements == 3 &&
                x->element[0]->type == REDIS_REPLY_INTEGER) {
                count = x->element[0]->integer;
                ttl = int_of(x->element[2]);
            } else {
                st = BUS_EINTERNAL;
            }
        }
        ((bus_redis_incr_cb)q->cb)(st, count, ttl, q->data);
        break;
    }
    case K_SETNX:
        ((bus_redis_set_nx_cb)q->cb)(st, st == 0 && x->type == REDIS_REPLY_STATUS, q->data);
        break;
    case K_GET:
        if (st == 0 && x->type == REDIS_REPLY_NIL) st = BUS_ENOT_FOUND;
        else if (st == 0 && x->type != REDIS_REPLY_STRING) st = BUS_EINTERNAL;
        ((bus_redis_get_cb)q->cb)(st, st ? NULL : x->str, st ? 0 : x->len, q->data);
        break;
    case K_SET:
        ((bus_redis_status_cb)q->cb)(st, q->data);
        break;
    case K_DEL:
        ((bus_redis_del_cb)q->cb)(st, st ? 0 : int_of(x), q->data);
        break;
    case K_INTERNAL:
        if (st == BUS_EINTERNAL && r->ac && !r->closing) {
            /* AUTH or SELECT refused: this connection is no use */
            seterr(r, "%s", x ? x->str : "error");
            bus_error(NULL, "redis: %s", r->last_error);
            redisAsyncFree(r->ac); /* deferred by hiredis: we are in its callback */
        }
        break;
    }
}

static void arm_timer(bus_redis_t *r);

/* The callback of requests whose reply is handled here (AUTH, SELECT). */
static void internal_cb(void) {}

static void client_free(bus_redis_t *r) {
    void (*done)(void *) = r->done;
    void *dd = r->done_data;
    free(r->user);
    free(r->password);
    free(r);
    if (done) done(dd);
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata) {
    (void)ac;
    req_t *q = privdata;
    if (!q) return;
    bus_redis_t *r = q->r;
    list_remove(r, q);
    deliver(q, reply ? 0 : BUS_EUNAVAILABLE, reply);
    free(q);
    if (!r->closing) arm_timer(r);
}

static void cmd_timer_cb(uv_timer_t *t) {
    bus_redis_t *r = t->data;
    uint64_t now = uv_now(r->loop);
    if (r->head && r->ac && now >= r->head->sent + (uint64_t)r->o.stall_ms) {
        seterr(r, "no reply for %d ms, reconnecting", r->o.stall_ms);
        bus_warn(NULL, "redis: %s", r->last_error);
        /* redisAsyncDisconnect would wait for the pending replies: free it,
         * which answers them with NULL (unavailable) and reconnects */
        redisAsyncFree(r->ac);
        return;
    }
    for (req_t *q = r->head; q; q = q->next) {
        if (q->done) continue;
        if (now < q->sent + (uint64_t)r->o.timeout_ms) break;
        deliver(q, BUS_ETIMEOUT, NULL);
        if (r->closing) return; /* the callback closed the client */
    }
    arm_timer(r);
}

/* Arms the timer for the next deadline: the first live request's timeout or
 * the oldest request's stall limit. */
static void arm_timer(bus_redis_t *r) {
    if (r->closing) return;
    uint64_t next = UINT64_MAX;
    if (r->head) next = r->head->sent + (uint64_t)r->o.stall_ms;
    for (req_t *q = r->head; q; q = q->next)
        if (!q->done) {
            uint64_t d = q->sent + (uint64_t)r->o.timeout_ms;
            if (d < next) next = d;
            break;
        }
    if (next == UINT64_MAX) {
        uv_timer_stop(&r->t_cmd);
        return;
    }
    uint64_t now = uv_now(r->loop);
    uv_timer_start(&r->t_cmd, cmd_timer_cb, next > now ? next - now : 0, 0);
}

static int ready(const bus_redis_t *r) {
    return r && !r->closing && r->state == ST_CONNECTED && r->ac &&
           !(r->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}

/* Sends argv with a fresh request (cb may be NULL: no request, no reply
 * handling). Returns 0 or BUS_EUNAVAILABLE. */
static int send_argv(bus_redis_t *r, int kind, int argc, const char **argv, const size_t *lens, void (*cb)(void),
                     void *data) {
    if (!ready(r)) return BUS_EUNAVAILABLE;
    if (!cb) return redisAsyncCommandArgv(r->ac, NULL, NULL, argc, argv, lens) == REDIS_OK ? 0 : BUS_EUNAVAILABLE;
    if (r->pending >= (size_t)r->o.max_pending) return BUS_EUNAVAILABLE;
    req_t *q = calloc(1, sizeof *q);
    if (!q) return BUS_EINTERNAL;
    q->r = r;
    q->kind = kind;
    q->cb = cb;
    q->data = data;
    q->sent = uv_now(r->loop);
    if (redisAsyncCommandArgv(r->ac, reply_cb, q, argc, argv, lens) != REDIS_OK) {
        free(q);
        return BUS_EUNAVAILABLE;
    }
    q->listed = 1;
    q->prev = r->tail;
    if (r->tail) r->tail->next = q; else r->head = q;
    r->tail = q;
    r->pending++;
    if (q == r->head || !uv_is_active((uv_handle_t *)&r->t_cmd)) arm_timer(r);
    return 0;
}

/* ---- connection --------------------------------------------------------- */

static void start_connect(bus_redis_t *r);
static void schedule_retry(bus_redis_t *r);

static void retry_cb(uv_timer_t *t) {
    bus_redis_t *r = t->data;
    if (r->state == ST_CONNECTING && r->ac) {
        /* connect timeout: free the half-open context (no callbacks are
         * pending on it) and try again later */
        seterr(r, "connect timed out after %d ms", r->o.connect_timeout_ms);
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    if (r->state == ST_IDLE) start_connect(r);
}

static void schedule_retry(bus_redis_t *r) {
    r->state = ST_IDLE;
    if (r->closing) return;
    uint64_t d = (uint64_t)r->o.backoff_min_ms << (r->attempts < 16 ? r->attempts : 16);
    if (d > (uint64_t)r->o.backoff_max_ms) d = (uint64_t)r->o.backoff_max_ms;
    r->rnd ^= r->rnd << 13, r->rnd ^= r->rnd >> 7, r->rnd ^= r->rnd << 17;
    uint64_t delay = d / 2 + (d / 2 ? r->rnd % (d / 2 + 1) : 0);
    r->attempts++;
    if (r->attempts == 1 || r->attempts % 10 == 0)
        bus_warn(NULL, "redis: %s; retrying in %llu ms (calls fail with unavailable meanwhile)", r->last_error,
                 (unsigned long long)delay);
    uv_timer_start(&r->t_retry, retry_cb, delay, 0);
}

static void set_state(bus_redis_t *r, int up) {
    if (r->o.on_state) r->o.on_state(up, r->o.state_data);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    bus_redis_t *r = ac->data;
    uv_timer_stop(&r->t_retry);
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns */
        seterr(r, "%s", ac->errstr);
        r->ac = NULL;
        schedule_retry(r);
        return;
    }
    r->state = ST_CONNECTED;
    r->attempts = 0;
    r->last_error[0] = 0;
    redisEnableKeepAlive((redisContext *)&ac->c);
    /* AUTH and SELECT go first on the connection; commands sent after them
     * wait behind them in Redis's queue. */
    if (r->password) {
        const char *argv[3] = {"AUTH", r->user ? r->user : r->password, r->password};
        send_argv(r, K_INTERNAL, r->user ? 3 : 2, argv, NULL, internal_cb, NULL);
    }
    if (r->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->db);
        const char *argv[2] = {"SELECT", db};
        send_argv(r, K_INTERNAL, 2, argv, NULL, internal_cb, NULL);
    }
    bus_info(NULL, "redis: connected to %s", r->url);
    set_state(r, 1);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    bus_redis_t *r = ac->data;
    int was_up = r->state == ST_CONNECTED;
    r->ac = NULL;
    /* hiredis has called every pending reply callback with NULL by now */
    if (status != REDIS_OK && !r->closing)
        seterr(r, "connection lost: %s", ac->errstr[0] ? ac->errstr : "closed");
    else if (!r->closing && !r->last_error[0])
        seterr(r, "disconnected");
    uv_timer_stop(&r->t_cmd);
    if (was_up) set_state(r, 0);
    if (r->closing) {
        r->state = ST_CLOSED;
        return;
    }
    schedule_retry(r);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res) {
    bus_redis_t *r = g->data;
    r->resolving = 0;
    r->open_handles--;
    if (r->closing) {
        uv_freeaddrinfo(res);
        if (r->open_handles == 0) client_free(r);
        return;
    }
    char ip[64] = "";
    if (status == 0 && res) {
        if (res->ai_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
        else
            uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
    }
    uv_freeaddrinfo(res);
    if (!ip[0]) {
        seterr(r, "cannot resolve %s: %s", r->host,
                 status ? uv_strerror(status) : "no address");
        schedule_retry(r);
        return;
    }
    redisAsyncContext *ac = redisAsyncConnect(ip, r->port);
    if (!ac || ac->err) {
        seterr(r, "%s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    ac->data = r;
    if (ev_attach(r->loop, ac) != 0) {
        seterr(r, "cannot watch the socket");
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = ST_CONNECTING; /* setting the connect callback asked for writability */
    uv_timer_start(&r->t_retry, retry_cb, (uint64_t)r->o.connect_timeout_ms, 0);
}

static void start_connect(bus_redis_t *r) {
    if (r->closing || r->state != ST_IDLE) return;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r->gai.data = r;
    r->state = ST_RESOLVING;
    int rc = uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->host, NULL, &hints);
    if (rc) {
        seterr(r, "%s", uv_strerror(rc));
        schedule_retry(r);
        return;
    }
    r->resolving = 1;
    r->open_handles++;
}

/* redis://[[user]:password@]host[:port][/db] */
static int parse_url(bus_redis_t *r, const char *url, char *err, size_t errlen) {
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) goto bad;
    p += 8;
    const char *at = strchr(p, '@'), *slash = strchr(p, '/');
    if (at && (!slash || at < slash)) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) goto bad;
        if (colon > p) r->user = strndup(p, (size_t)(colon - p));
        r->password = strndup(colon + 1, (size_t)(at - colon - 1));
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof r->host) goto bad;
    memcpy(r->host, p, hl);
    r->host[hl] = 0;
    p += hl;
    r->port = 6379;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535) goto bad;
        r->port = (int)port;
        p = end;
    }
    if (*p == '/') {
        p++;
        if (*p) {
            char *end;
            long db = strtol(p, &end, 10);
            if (end == p || *end || db < 0 || db > 1000000) goto bad;
            r->db = (int)db;
        }
    } else if (*p) {
        goto bad;
    }
    snprintf(r->url, sizeof r->url, "redis://%s%s%s:%d/%d", r->password ? (r->user ? r->user : "") : "",
             r->password ? ":***@" : "", r->host, r->port, r->db);
    return 0;
bad:
    if (err) {
        char masked[512];
        snprintf(err, errlen, "BUS_REDIS_URL=%s: expected redis://[[user]:password@]host[:port][/db]",
                 bus_url_mask(url, masked, sizeof masked));
    }
    return BUS_EBAD_REQUEST;
}

int bus_redis_open(uv_loop_t *loop, const char *url, const bus_redis_opts_t *opts, bus_redis_t **out, char *err,
                   size_t errlen) {
    *out = NULL;
    if (err && errlen) err[0] = 0;
    if (!url || !*url) url = "redis://127.0.0.1:6379/0";
    bus_redis_t *r = calloc(1, sizeof *r);
    if (!r) return BUS_EINTERNAL;
    if (parse_url(r, url, err, errlen)) {
        free(r->user);
        free(r->password);
        free(r);
        return BUS_EBAD_REQUEST;
    }
    r->loop = loop;
    if (opts) r->o = *opts;
    if (r->o.timeout_ms <= 0) r->o.timeout_ms = 500;
    if (r->o.connect_timeout_ms <= 0) r->o.connect_timeout_ms = 2000;
    if (r->o.backoff_min_ms <= 0) r->o.backoff_min_ms = 100;
    if (r->o.backoff_max_ms < r->o.backoff_min_ms) r->o.backoff_max_ms = r->o.backoff_min_ms > 5000 ? r->o.backoff_min_ms : 5000;
    if (r->o.stall_ms <= 0) r->o.stall_ms = r->o.timeout_ms * 4 > 2000 ? r->o.timeout_ms * 4 : 2000;
    if (r->o.stall_ms < r->o.timeout_ms) r->o.stall_ms = r->o.timeout_ms;
    if (r->o.max_pending <= 0) r->o.max_pending = 10000;
    r->rnd = uv_hrtime() ^ (uint64_t)(uintptr_t)r;
    if (!r->rnd) r->rnd = 88172645463325252ull;
    uv_timer_init(loop, &r->t_cmd);
    uv_timer_init(loop, &r->t_retry);
    r->t_cmd.data = r->t_retry.data = r;
    r->open_handles = 2;
    r->state = ST_IDLE;
    start_connect(r);
    *out = r;
    return 0;
}

static void handle_closed(uv_handle_t *h) {
    bus_redis_t *r = h->data;
    if (--r->open_handles == 0) client_free(r);
}

void bus_redis_close(bus_redis_t *r, void (*done)(void *data), void *data) {
    if (!r || r->closing) return;
    r->closing = 1;
    r->done = done;
    r->done_data = data;
    if (r->resolving) uv_cancel((uv_req_t *)&r->gai);
    if (r->ac) {
        /* pending callbacks run with NULL replies (EUNAVAILABLE); deferred by
         * hiredis when we are inside one of its callbacks */
        redisAsyncContext *ac = r->ac;
        if (r->state != ST_CONNECTED) r->ac = NULL; /* no disconnect callback for a half-open one */
        redisAsyncFree(ac);
    }
    uv_close((uv_handle_t *)&r->t_cmd, handle_closed);
    uv_close((uv_handle_t *)&r->t_retry, handle_closed);
}

int bus_redis_is_connected(const bus_redis_t *r) { return ready(r); }
const char *bus_redis_last_error(const bus_redis_t *r) { return r->last_error; }
size_t bus_redis_pending(const bus_redis_t *r) { return r->pending; }
const char *bus_redis_url(const bus_redis_t *r) { return r->url; }

/* ---- commands -------------------------------------------------------------- */

int bus_redis_command_argv(bus_redis_t *r, int argc, const char **argv, const size_t *argvlen, bus_redis_reply_cb cb,
                           void *data) {
    if (!r || !cb || argc <= 0 || !argv) return BUS_EBAD_REQUEST;
    return send_argv(r, K_ARGV, argc, argv, argvlen, (void (*)(void))cb, data);
}

int bus_redis_incr_expire(bus_redis_t *r, const char *key, int64_t window_ms, bus_redis_incr_cb cb, void *data) {
    if (!r || !cb || !key || window_ms <= 0) return BUS_EBAD_REQUEST;
    if (!ready(r) || r->pending >= (size_t)r->o.max_pending) return BUS_EUNAVAILABLE;
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)window_ms);
    const char *multi[] = {"MULTI"}, *incr[] = {"INCR", key}, *pexp[] = {"PEXPIRE", key, ms, "NX"},
               *pttl[] = {"PTTL", key}, *exec[] = {"EXEC"};
    /* the five commands leave in one write; only EXEC's reply matters */
    if (send_argv(r, K_INTERNAL, 1, multi, NULL, NULL, NULL) || send_argv(r, K_INTERNAL, 2, incr, NULL, NULL, NULL) ||
        send_argv(r, K_INTERNAL, 4, pexp, NULL, NULL, NULL) || send_argv(r, K_INTERNAL, 2, pttl, NULL, NULL, NULL))
        return BUS_EUNAVAILABLE;
    return send_argv(r, K_INCR, 1, exec, NULL, (void (*)(void))cb, data);
}

int bus_redis_set_nx_px(bus_redis_t *r, const char *key, const void *val, size_t len, int64_t ttl_ms,
                        bus_redis_set_nx_cb cb, void *data) {
    if (!r || !cb || !key || (!val && len) || ttl_ms <= 0) return BUS_EBAD_REQUEST;
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)ttl_ms);
    const char *argv[] = {"SET", key, val ? val : "", "NX", "PX", ms};
    size_t lens[] = {3, strlen(key), len, 2, 2, strlen(ms)};
    return send_argv(r, K_SETNX, 6, argv, lens, (void (*)(void))cb, data);
}

int bus_redis_get(bus_redis_t *r, const char *key, bus_redis_get_cb cb, void *data) {
    if (!r || !cb || !key) return BUS_EBAD_REQUEST;
    const char *argv[] = {"GET", key};
    return send_argv(r, K_GET, 2, argv, NULL, (void (*)(void))cb, data);
}

int bus_redis_set_px(bus_redis_t *r, const char *key, const void *val, size_t len, int64_t ttl_ms,
                     bus_redis_status_cb cb, void *data) {
    if (!r || !cb || !key || (!val && len)) return BUS_EBAD_REQUEST;
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)ttl_ms);
    const char *argv[] = {"SET", key, val ? val : "", "PX", ms};
    size_t lens[] = {3, strlen(key), len, 2, strlen(ms)};
    return send_argv(r, K_SET, ttl_ms > 0 ? 5 : 3, argv, lens, (void (*)(void))cb, data);
}

int bus_redis_del(bus_redis_t *r, const char *key, bus_redis_del_cb cb, void *data) {
    if (!r || !cb || !key) return BUS_EBAD_REQUEST;
    const char *argv[] = {"DEL", key};
    return send_argv(r, K_DEL, 2, argv, NULL, (void (*)(void))cb, data);
}
