/* HTTP/1.1 server: libuv TCP + llhttp. See bus/http.h for the contract.
 *
 * Shape of a connection (conn_t):
 * - Reads go into one 64 KiB buffer per server (libuv calls alloc_cb and
 *   read_cb back to back for one stream, and every byte is parsed before
 *   read_cb returns), so an idle keep-alive connection owns no buffer at all.
 *   Parsed pieces (URL, headers, body) are copied into the request.
 * - on_message_complete pauses llhttp, so each complete request is handed to
 *   the handler outside the parser. Requests wait in a FIFO queue (c->q_head)
 *   until their response is written; responses leave strictly from the head
 *   of the queue, so a handler answering late holds back the answers behind
 *   it. When the queue holds max_pipeline requests we stop reading; the
 *   unparsed rest of the last read is kept in c->leftover.
 * - One write in flight per connection: every ready response at the head of
 *   the queue goes out in one write (one iovec each). It is tried at once
 *   with uv_try_write; the socket usually takes it all, and then no write
 *   request exists, so libuv does not re-arm the socket in epoll (uv_write
 *   costs one epoll_ctl per response). Such a write completes from the
 *   server's idle handle at the start of the next loop turn (an active idle
 *   handle keeps the loop from blocking), never inside the call that
 *   started it, as uv_write's callback would. A partial write sends the
 *   rest with uv_write.
 * - One timer per connection with one meaning at a time: read deadline
 *   (partial request), idle deadline (nothing queued), linger (after the last
 *   response: we shut down our side and discard input for a short while, so
 *   that unread request bytes do not turn our close into a RST that destroys
 *   the response - the classic early-413 problem), or "kill now" (a deferred
 *   close requested from inside user calls).
 *
 * Request lifetime: reference counted. The connection holds one reference
 * while the request is being parsed or sits in the queue (then the write
 * holds it); the handler holds one from dispatch to its finishing call. When
 * the connection dies, queued requests are detached (req->conn = NULL), so
 * a handler's later answer only drops its reference.
 */
#include "bus/error.h"
#include "bus/http.h"
#include "bus/log.h"
#include "bus/metrics.h"

#include <llhttp.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF_SIZE 65536
#define HEAD_INLINE 768
#define HDRS_INLINE 16
#define MAX_HEADERS 128
#define WMAX 64            /* iovecs per uv_write */
#define LINGER_MS 2000
#define FAKE_OUT_KEEP 65536
#define NO_OFF UINT32_MAX

enum { R_PARSING, R_DISPATCHED, R_RESPONDED, R_STREAMING, R_STREAM_ENDED };
enum { T_NONE, T_READ, T_IDLE, T_LINGER, T_KILL };

typedef struct {
    uint32_t name, value;
} hdr_t;

typedef struct conn conn_t;

struct bus_http_req {
    conn_t *conn; /* NULL once the connection is gone */
    bus_http_req_t *next;
    int refs;
    uint8_t state;
    uint8_t keep_alive, close_after, head_only, http_minor, chunked_out, no_body;
    uint8_t url_done, method_set, hdr_open;
    const char *method;
    uint32_t url_off, path_off, query_off;
    uint64_t t0;
    void *data;
    void (*on_close)(bus_http_req_t *, void *);
    void *on_close_data;
    char *head; /* head_inline or heap */
    size_t head_len, head_cap;
    hdr_t *hdrs;
    uint32_t nhdrs, nhdrs_done, hdrs_cap;
    char *body;
    size_t body_len, body_cap;
    char *extra; /* "Name: value\r\n"... */
    size_t extra_len, extra_cap;
    char *out; /* bytes ready to go out */
    size_t out_len, out_cap;
    char peer[64];
    hdr_t hdrs_inline[HDRS_INLINE];
    char head_inline[HEAD_INLINE];
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    llhttp_t parser;
    bus_http_server_t *srv;
    conn_t *prev, *next; /* server's list */
    bus_http_req_t *cur; /* being parsed */
    bus_http_req_t *q_head, *q_tail;
    unsigned nqueue;
    char *leftover;
    size_t leftover_len;
    size_t head_bytes;
    int err_status;
    const char *err_msg;
    uint8_t closing, killed, lingering, writing, reading, paused, stop_parsing, in_message, in_feed,
        timer_mode, closed_handles, fake, in_drain;
    char peer[64];
    /* fake connections only */
    char *fake_out;
    size_t fake_out_len;
    struct wctx *fake_q;
};

typedef struct wctx {
    uv_write_t wr;
    conn_t *c;
    struct wctx *next; /* free list / fake or try_write completion queue */
    unsigned n, ndone;
    int close_after;
    uv_buf_t bufs[WMAX]; /* malloc'd bases, freed when the write completes */
    uv_buf_t rest[WMAX]; /* what uv_try_write left, for uv_write */
    bus_http_req_t *done[WMAX];
} wctx_t;

struct bus_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t shutdown_timer;
    uv_idle_t written_idle;    /* completes the writes uv_try_write finished */
    wctx_t *written, **written_tail;
    int own_handles_open;     /* shutdown_timer, written_idle (+ listener on a failed start) */
    llhttp_settings_t settings;
    bus_http_config_t cfg;
    char *addr;
    int port;
    int bound;
    int closing, listener_closed, timer_closing;
    void (*close_cb)(void *);
    void *close_data;
    conn_t *conns;
    size_t nconns;
    wctx_t *wfree;
    unsigned nwfree;
    char rbuf[READ_BUF_SIZE];
};

/* ---- metrics ---- */

static bus_counter_t *m_code[600];
static bus_counter_t *m_parse_errors;
static bus_counter_t *m_no_peer;
static bus_gauge_t *m_conns;
static bus_histogram_t *m_latency;

static void metrics_init(void) {
    if (m_conns) return;
    m_parse_errors = bus_counter("bus_http_parse_errors_total",
                                 "HTTP requests rejected by the parser (400/505)", NULL);
    m_no_peer = bus_counter("bus_http_connections_refused_no_peer_total",
                            "Connections reset before they were accepted (no peer address): closed unread", NULL);
    m_latency = bus_histogram("bus_http_request_duration_seconds",
                              "From a complete HTTP request to its response", NULL);
    m_conns = bus_gauge("bus_http_connections", "Open HTTP connections", NULL);
}

static void metrics_response(int status, uint64_t t0) {
    if (status < 100 || status > 599) return;
    if (!m_code[status]) {
        char code[8];
        snprintf(code, sizeof code, "%d", status);
        m_code[status] = bus_counter("bus_http_requests_total", "HTTP responses by status code",
                                     "code", code, NULL);
    }
    bus_counter_inc(m_code[status], 1);
    if (t0) bus_histogram_observe(m_latency, (double)(uv_hrtime() - t0) / 1e9);
}

/* ---- small buffers ---- */

static int buf_reserve(char **p, size_t *cap, size_t len, size_t need) {
    if (len + need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < len + need) ncap *= 2;
    char *np = realloc(*p, ncap);
    if (!np) return -1;
    *p = np;
    *cap = ncap;
    return 0;
}

static int buf_append(char **p, size_t *len, size_t *cap, const void *data, size_t n) {
    if (buf_reserve(p, cap, *len, n + 1) != 0) return -1;
    if (n) memcpy(*p + *len, data, n);
    *len += n;
    (*p)[*len] = '\0';
    return 0;
}

/* ---- requests ---- */

static bus_http_req_t *req_new(conn_t *c) {
    bus_http_req_t *r = malloc(sizeof *r);
    if (!r) return NULL;
    /* Only the fixed part needs zeroing; the inline arrays are written before read. */
    memset(r, 0, offsetof(bus_http_req_t, hdrs_inline));
    r->conn = c;
    r->refs = 1;
    r->state = R_PARSING;
    r->head = r->head_inline;
    r->head_cap = HEAD_INLINE;
    r->head[0] = '\0';
    r->hdrs = r->hdrs_inline;
    r->hdrs_cap = HDRS_INLINE;
    r->url_off = r->path_off = r->query_off = NO_OFF;
    r->method = "";
    r->keep_alive = 1;
    r->http_minor = 1;
    memcpy(r->peer, c->peer, sizeof r->peer);
    return r;
}

static void req_unref(bus_http_req_t *r) {
    if (--r->refs > 0) return;
    if (r->head != r->head_inline) free(r->head);
    if (r->hdrs != r->hdrs_inline) free(r->hdrs);
    free(r->body);
    free(r->extra);
    free(r->out);
    free(r);
}

static int head_append(bus_http_req_t *r, const char *at, size_t n) {
    /* `at` may point into r->head itself (the path is copied from the url):
     * keep it as an offset across the reallocation */
    int inside = at >= r->head && at < r->head + r->head_cap;
    size_t at_off = inside ? (size_t)(at - r->head) : 0;
    if (r->head_len + n + 1 > r->head_cap) {
        size_t ncap = r->head_cap * 2;
        while (ncap < r->head_len + n + 1) ncap *= 2;
        char *np;
        if (r->head == r->head_inline) {
            np = malloc(ncap);
            if (np) memcpy(np, r->head, r->head_len);
        } else {
            np = realloc(r->head, ncap);
        }
        if (!np) return -1;
        r->head = np;
        r->head_cap = ncap;
        if (inside) at = r->head + at_off;
    }
    memmove(r->head + r->head_len, at, n);
    r->head_len += n;
    r->head[r->head_len] = '\0';
    return 0;
}

/* A request whose head is cut short (error answer): forget the parts that
 * were not complete so the accessors only see finished strings. */
static void req_seal(bus_http_req_t *r) {
    if (!r->url_done) r->url_off = r->path_off = r->query_off = NO_OFF;
    r->nhdrs = r->nhdrs_done;
}

static int req_gone(const bus_http_req_t *r) {
    return !r->conn || r->conn->closing || r->conn->killed;
}

/* ---- connection plumbing ---- */

static void conn_close(conn_t *c);
static void conn_flush(conn_t *c);
static void conn_feed(conn_t *c, const char *data, size_t len);
static void conn_update_timer(conn_t *c);
static void server_maybe_finish(bus_http_server_t *srv);
static int respond_error(bus_http_req_t *r, int status, const char *message);

static void queue_push(conn_t *c, bus_http_req_t *r) {
    r->next = NULL;
    if (c->q_tail) c->q_tail->next = r;
    else c->q_head = r;
    c->q_tail = r;
    c->nqueue++;
}

static bus_http_req_t *queue_pop(conn_t *c) {
    bus_http_req_t *r = c->q_head;
    if (!r) return NULL;
    c->q_head = r->next;
    if (!c->q_head) c->q_tail = NULL;
    r->next = NULL;
    c->nqueue--;
    return r;
}

static void leftover_append(conn_t *c, const char *p, size_t n) {
    if (!n) return;
    char *np = realloc(c->leftover, c->leftover_len + n);
    if (!np) return; /* dropped bytes surface as a parse error or timeout */
    memcpy(np + c->leftover_len, p, n);
    c->leftover = np;
    c->leftover_len += n;
}

static void leftover_free(conn_t *c) {
    free(c->leftover);
    c->leftover = NULL;
    c->leftover_len = 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    conn_t *c = h->data;
    *buf = uv_buf_init(c->srv->rbuf, READ_BUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void conn_update_reading(conn_t *c) {
    if (c->fake || c->closing) return;
    int want = !c->paused;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void write_done(wctx_t *w, int status);

/* Completes the writes uv_try_write finished (see the top of the file). */
static void on_written_idle(uv_idle_t *h) {
    bus_http_server_t *srv = h->data;
    wctx_t *w;
    while ((w = srv->written)) { /* completions may queue more */
        srv->written = w->next;
        if (!srv->written) srv->written_tail = &srv->written;
        write_done(w, 0);
    }
    uv_idle_stop(h);
}

/* A connection going away before its completion ran: complete it now,
 * while the connection still exists; write_done only frees, as it is
 * closing. */
static void written_forget(bus_http_server_t *srv, conn_t *c) {
    for (wctx_t **pp = &srv->written; *pp;) {
        wctx_t *w = *pp;
        if (w->c != c) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (!*pp) srv->written_tail = pp;
        write_done(w, 0);
    }
}

static void on_handle_closed(uv_handle_t *h) {
    conn_t *c = h->data;
    if (++c->closed_handles < 2) return;
    bus_http_server_t *srv = c->srv;
    written_forget(srv, c);
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->nconns--;
    free(c);
    server_maybe_finish(srv);
}

/* Closes now: detaches every request still queued (their handlers' later
 * answers become no-ops), runs their close callbacks, closes the handles.
 * The memory goes in on_handle_closed (fake connections: in fake_free). */
static void conn_close(conn_t *c) {
    if (c->closing) return;
    c->closing = 1;
    if (c->cur) {
        req_unref(c->cur);
        c->cur = NULL;
    }
    leftover_free(c);
    bus_http_req_t *r;
    while ((r = queue_pop(c))) {
        r->conn = NULL;
        if ((r->state == R_DISPATCHED || r->state == R_STREAMING) && r->on_close)
            r->on_close(r, r->on_close_data);
        req_unref(r);
    }
    if (m_conns) bus_gauge_add(m_conns, -1);
    if (c->fake) return;
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_timer(uv_timer_t *t);

/* Close later, from the loop: used where a close could otherwise run close
 * callbacks inside a user's own call (respond, stream_write). */
static void conn_kill(conn_t *c) {
    if (c->closing || c->killed) return;
    c->killed = 1;
    c->stop_parsing = 1;
    if (c->fake) return; /* closed by fake_drain */
    c->timer_mode = T_KILL;
    uv_timer_start(&c->timer, on_timer, 0, 0);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    (void)status;
    free(req);
}

/* After the last response: half-close, discard input until EOF or
 * LINGER_MS, then close (see the top comment). */
static void conn_linger(conn_t *c) {
    if (c->closing || c->lingering) return;
    if (c->fake) {
        conn_close(c);
        return;
    }
    c->lingering = 1;
    c->stop_parsing = 1;
    c->paused = 0;
    leftover_free(c);
    uv_shutdown_t *sh = malloc(sizeof *sh);
    if (!sh || uv_shutdown(sh, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(sh);
        conn_close(c);
        return;
    }
    conn_update_reading(c);
    c->timer_mode = T_LINGER;
    uint64_t ms = c->srv->cfg.read_timeout_ms < LINGER_MS ? c->srv->cfg.read_timeout_ms : LINGER_MS;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void conn_update_timer(conn_t *c) {
    if (c->fake || c->closing || c->killed || c->lingering) return;
    int want = T_NONE;
    if (!c->paused && !c->stop_parsing && (c->in_message || c->leftover_len)) want = T_READ;
    else if (c->nqueue == 0 && !c->writing && !c->stop_parsing) want = T_IDLE;
    if (want == c->timer_mode) return;
    c->timer_mode = (uint8_t)want;
    if (want == T_NONE) uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer,
                       want == T_READ ? c->srv->cfg.read_timeout_ms : c->srv->cfg.idle_timeout_ms, 0);
}

/* The server's own error answer, queued behind the requests before it;
 * nothing more is parsed on this connection, which closes after it. */
static void conn_fail(conn_t *c, int status, const char *message) {
    if (c->closing || c->killed) return;
    bus_http_req_t *r = c->cur;
    c->cur = NULL;
    c->in_message = 0;
    if (r) req_seal(r);
    else if (!(r = req_new(c))) {
        conn_kill(c);
        return;
    }
    c->stop_parsing = 1;
    c->paused = 0;
    leftover_free(c);
    r->state = R_DISPATCHED;
    r->close_after = 1;
    r->refs++; /* the "handler" reference, released by respond_error */
    r->t0 = 0;
    queue_push(c, r);
    respond_error(r, status, message);
}

static void on_timer(uv_timer_t *t) {
    conn_t *c = t->data;
    int mode = c->timer_mode;
    c->timer_mode = T_NONE;
    switch (mode) {
    case T_READ:
        conn_fail(c, 408, "request not received in time");
        conn_update_reading(c);
        break;
    case T_IDLE:
    case T_LINGER:
    case T_KILL:
        conn_close(c);
        break;
    default:
        break;
    }
}

/* ---- writing ---- */

static wctx_t *wctx_get(conn_t *c) {
    bus_http_server_t *srv = c->srv;
    wctx_t *w = srv->wfree;
    if (w) {
        srv->wfree = w->next;
        srv->nwfree--;
    } else if (!(w = malloc(sizeof *w))) {
        return NULL;
    }
    w->c = c;
    w->next = NULL;
    w->n = w->ndone = 0;
    w->close_after = 0;
    return w;
}

static void wctx_put(bus_http_server_t *srv, wctx_t *w) {
    if (srv->nwfree >= 64) {
        free(w);
        return;
    }
    w->next = srv->wfree;
    srv->wfree = w;
    srv->nwfree++;
}

static void fake_capture(conn_t *c, const wctx_t *w) {
    for (unsigned i = 0; i < w->n; i++) {
        const char *p = w->bufs[i].base;
        size_t n = w->bufs[i].len;
        if (n > FAKE_OUT_KEEP) {
            p += n - FAKE_OUT_KEEP;
            n = FAKE_OUT_KEEP;
        }
        if (c->fake_out_len + n > FAKE_OUT_KEEP) {
            size_t drop = c->fake_out_len + n - FAKE_OUT_KEEP;
            memmove(c->fake_out, c->fake_out + drop, c->fake_out_len - drop);
            c->fake_out_len -= drop;
        }
        memcpy(c->fake_out + c->fake_out_len, p, n);
        c->fake_out_len += n;
        c->fake_out[c->fake_out_len] = '\0';
    }
}

static void write_done(wctx_t *w, int status) {
    conn_t *c = w->c;
    bus_http_server_t *srv = c->srv;
    for (unsigned i = 0; i < w->n; i++) free(w->bufs[i].base);
    for (unsigned i = 0; i < w->ndone; i++) req_unref(w->done[i]);
    int close_after = w->close_after;
    wctx_put(srv, w);
    c->writing = 0;
    if (c->closing) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (close_after) {
        conn_linger(c);
        return;
    }
    conn_flush(c);
    if (c->paused && c->nqueue < srv->cfg.max_pipeline) conn_feed(c, NULL, 0);
    if (!c->closing && !c->writing && srv->closing && c->nqueue == 0) {
        conn_linger(c);
        return;
    }
    conn_update_timer(c);
}

static void on_write(uv_write_t *wr, int status) {
    write_done((wctx_t *)wr, status);
}

/* Fake connections complete their writes here, never inside the call that
 * started them, mirroring libuv's asynchronous write callbacks. */
static void fake_drain(conn_t *c) {
    if (c->in_drain || c->in_feed) return;
    c->in_drain = 1;
    for (;;) {
        wctx_t *w = c->fake_q;
        if (w) {
            c->fake_q = w->next;
            write_done(w, 0);
            continue;
        }
        if (c->killed && !c->closing) {
            conn_close(c);
            continue;
        }
        break;
    }
    c->in_drain = 0;
}

static void conn_write(conn_t *c, wctx_t *w) {
    c->writing = 1;
    if (c->fake) {
        fake_capture(c, w);
        w->next = NULL;
        wctx_t **pp = &c->fake_q;
        while (*pp) pp = &(*pp)->next;
        *pp = w;
        fake_drain(c);
        return;
    }
    if (w->n == 0) {
        /* Nothing to send (e.g. end of an HTTP/1.0 stream): complete now. */
        write_done(w, 0);
        return;
    }
    size_t total = 0;
    for (unsigned i = 0; i < w->n; i++) total += w->bufs[i].len;
    int sent = uv_try_write((uv_stream_t *)&c->tcp, w->bufs, w->n);
    if (sent >= 0 && (size_t)sent == total) {
        bus_http_server_t *srv = c->srv;
        w->next = NULL;
        *srv->written_tail = w;
        srv->written_tail = &w->next;
        uv_idle_start(&srv->written_idle, on_written_idle);
        return;
    }
    /* the rest, from the first byte the socket did not take */
    size_t skip = sent > 0 ? (size_t)sent : 0;
    unsigned nrest = 0;
    for (unsigned i = 0; i < w->n; i++) {
        if (skip >= w->bufs[i].len) {
            skip -= w->bufs[i].len;
            continue;
        }
        w->rest[nrest++] = uv_buf_init(w->bufs[i].base + skip, (unsigned)(w->bufs[i].len - skip));
        skip = 0;
    }
    if (uv_write(&w->wr, (uv_stream_t *)&c->tcp, w->rest, nrest, on_write) != 0) {
        for (unsigned i = 0; i < w->n; i++) free(w->bufs[i].base);
        for (unsigned i = 0; i < w->ndone; i++) req_unref(w->done[i]);
        wctx_put(c->srv, w);
        c->writing = 0;
        conn_kill(c);
    }
}

/* Moves every ready response at the head of the queue into one write. */
static void conn_flush(conn_t *c) {
    if (c->closing || c->killed || c->writing || !c->q_head) return;
    wctx_t *w = NULL;
    bus_http_req_t *r;
    while ((r = c->q_head) && r->state != R_DISPATCHED) {
        if (r->state == R_STREAMING && r->out_len == 0) break;
        if (!w && !(w = wctx_get(c))) {
            conn_kill(c);
            return;
        }
        if (r->out_len) {
            w->bufs[w->n++] = uv_buf_init(r->out, (unsigned)r->out_len);
            r->out = NULL;
            r->out_len = r->out_cap = 0;
        }
        if (r->state == R_STREAMING) break;
        queue_pop(c);
        w->done[w->ndone++] = r; /* the connection's reference moves to the write */
        if (r->close_after) {
            w->close_after = 1;
            break;
        }
        if (w->n == WMAX || w->ndone == WMAX) break;
    }
    if (w) conn_write(c, w);
}

/* ---- building responses ---- */

static _Thread_local char date_buf[40];
static _Thread_local time_t date_at;

static const char *http_date(void) {
    time_t now = time(NULL);
    if (now != date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date_buf, sizeof date_buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        date_at = now;
    }
    return date_buf;
}

static int has_crlf(const char *s) {
    return s && strpbrk(s, "\r\n") != NULL;
}

/* Writes status line and headers into r->out. stream: chunked or raw stream. */
static int resp_head(bus_http_req_t *r, int status, const char *ctype, size_t body_len, int stream,
                     size_t reserve_body) {
    conn_t *c = r->conn;
    int no_body = (status < 200 || status == 204 || status == 304);
    if (stream) r->chunked_out = r->http_minor >= 1;
    /* "Connection: close" only on the last answer of the connection: a
     * draining server still answers every request it already dispatched. */
    if (!r->keep_alive || (stream && !r->chunked_out) || (c->srv->closing && r == c->q_tail))
        r->close_after = 1;
    /* After an answer with Connection: close we parse nothing more. */
    if (r->close_after) c->stop_parsing = 1;
    size_t need = 160 + (ctype ? strlen(ctype) : 0) + r->extra_len + reserve_body;
    if (buf_reserve(&r->out, &r->out_cap, r->out_len, need) != 0) return BUS_EINTERNAL;
    char *p = r->out + r->out_len;
    size_t room = r->out_cap - r->out_len;
    int n = snprintf(p, room, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, bus_http_status_text(status),
                     http_date());
    size_t len = (size_t)n;
    if (ctype) len += (size_t)snprintf(p + len, room - len, "Content-Type: %s\r\n", ctype);
    if (stream) {
        if (r->chunked_out)
            len += (size_t)snprintf(p + len, room - len, "Transfer-Encoding: chunked\r\n");
    } else if (!no_body) {
        len += (size_t)snprintf(p + len, room - len, "Content-Length: %zu\r\n", body_len);
    }
    if (r->close_after) len += (size_t)snprintf(p + len, room - len, "Connection: close\r\n");
    else if (r->http_minor == 0)
        len += (size_t)snprintf(p + len, room - len, "Connection: keep-alive\r\n");
    if (r->extra_len) {
        memcpy(p + len, r->extra, r->extra_len);
        len += r->extra_len;
    }
    memcpy(p + len, "\r\n", 2);
    len += 2;
    r->out_len += len;
    r->no_body = (uint8_t)(no_body || r->head_only);
    return 0;
}

int bus_http_respond(bus_http_req_t *r, int status, const char *ctype, const void *body, size_t len) {
    if (!r || r->state != R_DISPATCHED) return BUS_EINVALID;
    int rc = 0;
    if (status < 100 || status > 599 || has_crlf(ctype) || (len && !body)) {
        /* A programming error still answers, so the client is not left hanging. */
        status = 500;
        ctype = NULL;
        body = NULL;
        len = 0;
        rc = BUS_EINVALID;
    }
    r->state = R_RESPONDED;
    if (req_gone(r)) {
        req_unref(r);
        return BUS_EUNAVAILABLE;
    }
    conn_t *c = r->conn;
    if (resp_head(r, status, ctype, len, 0, len) != 0) {
        conn_kill(c);
        req_unref(r);
        return BUS_EINTERNAL;
    }
    if (len && !r->no_body) {
        memcpy(r->out + r->out_len, body, len);
        r->out_len += len;
    }
    metrics_response(status, r->t0);
    req_unref(r); /* the handler's reference; the queue still holds one */
    conn_flush(c);
    return rc;
}

static int respond_error(bus_http_req_t *r, int status, const char *message) {
    char body[1024];
    const char *code = bus_http_error_code(status);
    size_t n = 0;
    conn_t *c = r->conn;
    if (c && !req_gone(r) && c->srv->cfg.error_body)
        n = c->srv->cfg.error_body(r, status, code, message, body, sizeof body, c->srv->cfg.data);
    if (n == 0 || n > sizeof body) n = bus_http_error_json(body, sizeof body, status, code, message);
    return bus_http_respond(r, status, "application/json", body, n);
}

int bus_http_respond_error(bus_http_req_t *r, int status, const char *message) {
    if (!r || r->state != R_DISPATCHED) return BUS_EINVALID;
    return respond_error(r, status, message ? message : bus_http_status_text(status));
}

int bus_http_add_header(bus_http_req_t *r, const char *name, const char *value) {
    if (!r || !name || !value || r->state != R_DISPATCHED) return BUS_EINVALID;
    if (!*name || strpbrk(name, "\r\n: \t") || has_crlf(value)) return BUS_EINVALID;
    if (req_gone(r)) return BUS_EUNAVAILABLE;
    size_t nl = strlen(name), vl = strlen(value);
    if (buf_reserve(&r->extra, &r->extra_cap, r->extra_len, nl + vl + 5) != 0) return BUS_EINTERNAL;
    char *p = r->extra + r->extra_len;
    memcpy(p, name, nl);
    memcpy(p + nl, ": ", 2);
    memcpy(p + nl + 2, value, vl);
    memcpy(p + nl + 2 + vl, "\r\n", 2);
    r->extra_len += nl + vl + 4;
    return 0;
}

int bus_http_respond_stream_start(bus_http_req_t *r, int status, const char *ctype) {
    if (!r || r->state != R_DISPATCHED) return BUS_EINVALID;
    if (status < 200 || status > 599 || status == 204 || status == 304 || has_crlf(ctype))
        return BUS_EINVALID;
    r->state = R_STREAMING;
    if (req_gone(r)) return BUS_EUNAVAILABLE;
    if (resp_head(r, status, ctype, 0, 1, 0) != 0) {
        conn_kill(r->conn);
        return BUS_EUNAVAILABLE;
    }
    metrics_response(status, r->t0);
    conn_flush(r->conn);
    return 0;
}

int bus_http_stream_write(bus_http_req_t *r, const void *data, size_t len) {
    if (!r || r->state != R_STREAMING) return BUS_EINVALID;
    if (req_gone(r)) return BUS_EUNAVAILABLE;
    if (len == 0 || r->no_body) return 0; /* an empty chunk would end the stream */
    conn_t *c = r->conn;
    if (r->out_len + len > c->srv->cfg.max_stream_backlog) {
        bus_warn(NULL, "http: %s reads too slowly, dropping its stream", c->peer);
        conn_kill(c);
        return BUS_EUNAVAILABLE;
    }
    if (buf_reserve(&r->out, &r->out_cap, r->out_len, len + 24) != 0) {
        conn_kill(c);
        return BUS_EUNAVAILABLE;
    }
    if (r->chunked_out)
        r->out_len += (size_t)snprintf(r->out + r->out_len, 24, "%zx\r\n", len);
    memcpy(r->out + r->out_len, data, len);
    r->out_len += len;
    if (r->chunked_out) {
        memcpy(r->out + r->out_len, "\r\n", 2);
        r->out_len += 2;
    }
    conn_flush(c);
    return 0;
}

int bus_http_stream_end(bus_http_req_t *r) {
    if (!r || r->state != R_STREAMING) return BUS_EINVALID;
    r->state = R_STREAM_ENDED;
    if (req_gone(r)) {
        req_unref(r);
        return BUS_EUNAVAILABLE;
    }
    conn_t *c = r->conn;
    if (r->chunked_out && !r->no_body) {
        if (buf_append(&r->out, &r->out_len, &r->out_cap, "0\r\n\r\n", 5) != 0) conn_kill(c);
    }
    req_unref(r);
    conn_flush(c);
    return 0;
}

/* ---- accessors ---- */

const char *bus_http_method(const bus_http_req_t *r) { return r->method; }
const char *bus_http_url(const bus_http_req_t *r) {
    return r->url_off == NO_OFF ? "" : r->head + r->url_off;
}
const char *bus_http_path(const bus_http_req_t *r) {
    return r->path_off == NO_OFF ? "" : r->head + r->path_off;
}
const char *bus_http_query(const bus_http_req_t *r) {
    return r->query_off == NO_OFF ? NULL : r->head + r->query_off;
}
const char *bus_http_header(const bus_http_req_t *r, const char *name) {
    for (uint32_t i = 0; i < r->nhdrs_done; i++)
        if (strcasecmp(r->head + r->hdrs[i].name, name) == 0) return r->head + r->hdrs[i].value;
    return NULL;
}
size_t bus_http_header_count(const bus_http_req_t *r) { return r->nhdrs_done; }
int bus_http_header_at(const bus_http_req_t *r, size_t i, const char **name, const char **value) {
    if (i >= r->nhdrs_done) return BUS_ENOT_FOUND;
    if (name) *name = r->head + r->hdrs[i].name;
    if (value) *value = r->head + r->hdrs[i].value;
    return 0;
}
const char *bus_http_body(const bus_http_req_t *r, size_t *len) {
    if (len) *len = r->body_len;
    return r->body ? r->body : "";
}
const char *bus_http_peer(const bus_http_req_t *r) { return r->peer; }
int bus_http_version_minor(const bus_http_req_t *r) { return r->http_minor; }
int bus_http_req_gone(const bus_http_req_t *r) { return req_gone(r); }
void bus_http_req_set_data(bus_http_req_t *r, void *data) { r->data = data; }
void *bus_http_req_data(const bus_http_req_t *r) { return r->data; }
void bus_http_req_on_close(bus_http_req_t *r, void (*cb)(bus_http_req_t *, void *), void *data) {
    r->on_close = cb;
    r->on_close_data = data;
}

/* ---- parsing ---- */

static int count_head(conn_t *c, size_t n) {
    c->head_bytes += n;
    if (c->head_bytes > c->srv->cfg.max_header_bytes) {
        c->err_status = 431;
        c->err_msg = "request header too large";
        return -1;
    }
    return 0;
}

static int oom(conn_t *c) {
    c->err_status = 500;
    c->err_msg = "out of memory";
    return -1;
}

static int cb_message_begin(llhttp_t *p) {
    conn_t *c = p->data;
    if (c->cur) req_unref(c->cur);
    c->cur = req_new(c);
    if (!c->cur) return oom(c);
    c->in_message = 1;
    c->head_bytes = 0;
    return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t n) {
    conn_t *c = p->data;
    if (count_head(c, n) != 0) return -1;
    return head_append(c->cur, at, n) == 0 ? 0 : oom(c);
}

static int cb_url_complete(llhttp_t *p) {
    conn_t *c = p->data;
    bus_http_req_t *r = c->cur;
    /* head = "<url>\0<path>\0"; the query points into the url copy. */
    size_t ulen = r->head_len;
    if (head_append(r, "", 1) != 0) return oom(c);
    const char *q = memchr(r->head, '?', ulen);
    size_t plen = q ? (size_t)(q - r->head) : ulen;
    r->url_off = 0;
    r->path_off = (uint32_t)r->head_len;
    if (head_append(r, r->head, plen) != 0 || head_append(r, "", 1) != 0) return oom(c);
    if (q) r->query_off = (uint32_t)(plen + 1);
    r->url_done = 1;
    return 0;
}

static int cb_header_field(llhttp_t *p, const char *at, size_t n) {
    conn_t *c = p->data;
    bus_http_req_t *r = c->cur;
    if (count_head(c, n) != 0) return -1;
    if (!r->hdr_open) {
        if (r->nhdrs >= MAX_HEADERS) {
            c->err_status = 431;
            c->err_msg = "too many request headers";
            return -1;
        }
        if (r->nhdrs == r->hdrs_cap) {
            uint32_t ncap = r->hdrs_cap * 2;
            hdr_t *nh = r->hdrs == r->hdrs_inline ? malloc(ncap * sizeof *nh)
                                                  : realloc(r->hdrs, ncap * sizeof *nh);
            if (!nh) return oom(c);
            if (r->hdrs == r->hdrs_inline) memcpy(nh, r->hdrs_inline, sizeof r->hdrs_inline);
            r->hdrs = nh;
            r->hdrs_cap = ncap;
        }
        r->hdrs[r->nhdrs].name = (uint32_t)r->head_len;
        r->hdrs[r->nhdrs].value = NO_OFF;
        r->nhdrs++;
        r->hdr_open = 1;
    }
    return head_append(r, at, n) == 0 ? 0 : oom(c);
}

static int cb_header_field_complete(llhttp_t *p) {
    conn_t *c = p->data;
    bus_http_req_t *r = c->cur;
    if (count_head(c, 4) != 0) return -1; /* ": " and CRLF */
    if (head_append(r, "", 1) != 0) return oom(c);
    r->hdrs[r->nhdrs - 1].value = (uint32_t)r->head_len;
    return 0;
}

static int cb_header_value(llhttp_t *p, const char *at, size_t n) {
    conn_t *c = p->data;
    if (count_head(c, n) != 0) return -1;
    return head_append(c->cur, at, n) == 0 ? 0 : oom(c);
}

static int cb_header_value_complete(llhttp_t *p) {
    conn_t *c = p->data;
    bus_http_req_t *r = c->cur;
    uint32_t v = r->hdrs[r->nhdrs - 1].value;
    while (r->head_len > v && (r->head[r->head_len - 1] == ' ' || r->head[r->head_len - 1] == '\t'))
        r->head_len--;
    if (head_append(r, "", 1) != 0) return oom(c);
    r->hdr_open = 0;
    r->nhdrs_done = r->nhdrs;
    return 0;
}

static void send_continue(conn_t *c) {
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    char *copy = malloc(sizeof line - 1);
    wctx_t *w = copy ? wctx_get(c) : NULL;
    if (!w) {
        free(copy);
        return; /* the client sends its body after its own timeout */
    }
    memcpy(copy, line, sizeof line - 1);
    w->bufs[w->n++] = uv_buf_init(copy, sizeof line - 1);
    conn_write(c, w);
}

static int cb_headers_complete(llhttp_t *p) {
    conn_t *c = p->data;
    bus_http_req_t *r = c->cur;
    bus_http_server_t *srv = c->srv;
    r->http_minor = p->http_minor;
    r->method = llhttp_method_name((llhttp_method_t)p->method);
    r->method_set = 1;
    r->head_only = p->method == HTTP_HEAD;
    if (p->http_major != 1) {
        c->err_status = 505;
        c->err_msg = "only HTTP/1.0 and HTTP/1.1 are supported";
        return -1;
    }
    if (p->upgrade) r->close_after = 1; /* we speak no other protocol: answer, then close */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0) {
        if (p->content_length > srv->cfg.max_body_bytes) {
            c->err_status = 413;
            c->err_msg = "request body too large";
            return -1;
        }
        /* Not the whole announced length up front: a client that announces
         * 1 MiB and sends nothing must not pin 1 MiB per connection. */
        size_t first = p->content_length < 16384 ? (size_t)p->content_length + 1 : 16384;
        r->body = malloc(first);
        if (!r->body) return oom(c);
        r->body_cap = first;
    }
    const char *expect = bus_http_header(r, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && r->http_minor >= 1 && c->nqueue == 0 &&
        !c->writing && (p->flags & (F_CONTENT_LENGTH | F_CHUNKED)))
        send_continue(c);
    return 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t n) {
    conn_t *c = p->data;
    bus_http_req_t *r = c->cur;
    if (r->body_len + n > c->srv->cfg.max_body_bytes) {
        c->err_status = 413;
        c->err_msg = "request body too large";
        return -1;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        /* Double, but never past the announced length (+1 for the NUL). */
        size_t need = r->body_len + n + 1, ncap = r->body_cap ? r->body_cap * 2 : 256;
        if (ncap < need) ncap = need;
        if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED)) {
            size_t total = r->body_len + (size_t)p->content_length + n + 1; /* content_length = bytes left after this piece */
            if (ncap > total && total >= need) ncap = total;
        }
        char *nb = realloc(r->body, ncap);
        if (!nb) return oom(c);
        r->body = nb;
        r->body_cap = ncap;
    }
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

static int cb_message_complete(llhttp_t *p) {
    conn_t *c = p->data;
    bus_http_req_t *r = c->cur;
    r->keep_alive = (uint8_t)llhttp_should_keep_alive(p);
    c->in_message = 0;
    /* Hand the request over outside llhttp (see parse_data). */
    return HPE_PAUSED;
}

/* A complete request goes to the queue and its handler. */
static void dispatch(conn_t *c) {
    bus_http_req_t *r = c->cur;
    bus_http_server_t *srv = c->srv;
    if (!r) return;
    c->cur = NULL;
    r->state = R_DISPATCHED;
    r->refs++;
    r->t0 = uv_hrtime();
    /* The read deadline covers one request: the next one starts its own. */
    if (c->timer_mode == T_READ && !c->fake) {
        uv_timer_stop(&c->timer);
        c->timer_mode = T_NONE;
    }
    if (!r->keep_alive || r->close_after) {
        r->close_after = 1;
        c->stop_parsing = 1;
    }
    queue_push(c, r);
    if (c->nqueue >= srv->cfg.max_pipeline) c->paused = 1;
    srv->cfg.on_request(r, srv->cfg.data);
}

static void parse_data(conn_t *c, const char *data, size_t len) {
    const char *p = data, *end = data + len;
    while (p < end && !c->closing && !c->killed && !c->stop_parsing) {
        llhttp_errno_t e = llhttp_execute(&c->parser, p, (size_t)(end - p));
        if (e == HPE_OK) return;
        if (e == HPE_PAUSED) {
            const char *at = llhttp_get_error_pos(&c->parser);
            llhttp_resume(&c->parser);
            p = (at && at >= p && at <= end) ? at : end;
            dispatch(c);
            if (c->paused && !c->closing && !c->killed && !c->stop_parsing) {
                leftover_append(c, p, (size_t)(end - p));
                return;
            }
            continue;
        }
        if (e == HPE_PAUSED_UPGRADE) {
            c->stop_parsing = 1;
            return;
        }
        int status = c->err_status;
        const char *msg = c->err_msg;
        if (!status) {
            status = e == HPE_INVALID_VERSION ? 505 : 400;
            msg = status == 505 ? "unsupported HTTP version" : llhttp_get_error_reason(&c->parser);
            if (m_parse_errors) bus_counter_inc(m_parse_errors, 1);
        }
        conn_fail(c, status, msg && *msg ? msg : "malformed request");
        return;
    }
}

/* Parses bytes from the socket (or the saved rest of an earlier read). */
static void conn_feed(conn_t *c, const char *data, size_t len) {
    bus_http_server_t *srv = c->srv;
    if (c->closing || c->killed || c->stop_parsing || c->lingering) goto out;
    if (c->in_feed || (c->paused && c->nqueue >= srv->cfg.max_pipeline)) {
        leftover_append(c, data, len);
        return;
    }
    c->in_feed = 1;
    c->paused = 0;
    if (c->leftover_len) {
        leftover_append(c, data, len); /* older bytes first */
        char *buf = c->leftover;
        size_t n = c->leftover_len;
        c->leftover = NULL;
        c->leftover_len = 0;
        parse_data(c, buf, n);
        free(buf);
    } else if (len) {
        parse_data(c, data, len);
    }
    while (!c->closing && !c->killed && !c->stop_parsing && c->paused &&
           c->nqueue < srv->cfg.max_pipeline) {
        c->paused = 0;
        char *buf = c->leftover;
        size_t n = c->leftover_len;
        c->leftover = NULL;
        c->leftover_len = 0;
        if (n) parse_data(c, buf, n);
        free(buf);
    }
    c->in_feed = 0;
out:
    if (c->stop_parsing) {
        c->paused = 0;
        leftover_free(c);
    }
    conn_update_reading(c);
    conn_update_timer(c);
    if (c->fake) fake_drain(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    conn_t *c = s->data;
    if (n < 0) {
        /* EOF or error: HTTP clients do not half-close, so the client is gone. */
        conn_close(c);
        return;
    }
    if (n == 0 || c->lingering || c->stop_parsing) return; /* discard */
    conn_feed(c, buf->base, (size_t)n);
}

/* ---- server ---- */

static void conn_init_common(bus_http_server_t *srv, conn_t *c) {
    c->srv = srv;
    llhttp_init(&c->parser, HTTP_REQUEST, &srv->settings);
    c->parser.data = c;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    if (m_conns) bus_gauge_add(m_conns, 1);
}

static void format_peer(const struct sockaddr_storage *ss, char *out, size_t cap) {
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        uv_ip4_name(a, ip, sizeof ip);
        snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(a, ip, sizeof ip);
        snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
    } else {
        snprintf(out, cap, "unknown");
    }
}

static void on_connection(uv_stream_t *l, int status) {
    bus_http_server_t *srv = l->data;
    if (status < 0) {
        bus_warn(NULL, "http: accept failed: %s", uv_strerror(status));
        return;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c) return;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    conn_init_common(srv, c);
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 || srv->closing ||
        (srv->cfg.max_connections && srv->nconns > srv->cfg.max_connections)) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    /* A connection reset before it was accepted has no peer address any
     * more: it is refused (closed unread), so that no request is ever served
     * without the address its rate limit and access log need. */
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) != 0) {
        if (m_no_peer) bus_counter_inc(m_no_peer, 1);
        conn_close(c);
        return;
    }
    format_peer(&ss, c->peer, sizeof c->peer);
    conn_update_reading(c);
    conn_update_timer(c);
}

static int parse_addr(const char *addr, struct sockaddr_storage *ss) {
    char host[128];
    const char *port_s;
    if (!addr) return BUS_EINVALID;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - addr - 1) >= sizeof host) return BUS_EINVALID;
        memcpy(host, addr + 1, (size_t)(rb - addr - 1));
        host[rb - addr - 1] = '\0';
        port_s = rb + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= sizeof host) return BUS_EINVALID;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        if (!host[0] || strcmp(host, "*") == 0) strcpy(host, "0.0.0.0");
        else if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
        port_s = colon + 1;
    }
    char *endp;
    errno = 0;
    long port = strtol(port_s, &endp, 10);
    if (!*port_s || *endp || errno || port < 0 || port > 65535) return BUS_EINVALID;
    memset(ss, 0, sizeof *ss);
    if (addr[0] == '[') {
        if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) != 0) return BUS_EINVALID;
    } else if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) != 0) {
        return BUS_EINVALID;
    }
    return 0;
}

static void settings_init(llhttp_settings_t *s) {
    llhttp_settings_init(s);
    s->on_message_begin = cb_message_begin;
    s->on_url = cb_url;
    s->on_url_complete = cb_url_complete;
    s->on_header_field = cb_header_field;
    s->on_header_field_complete = cb_header_field_complete;
    s->on_header_value = cb_header_value;
    s->on_header_value_complete = cb_header_value_complete;
    s->on_headers_complete = cb_headers_complete;
    s->on_body = cb_body;
    s->on_message_complete = cb_message_complete;
}

static int server_new(uv_loop_t *loop, const bus_http_config_t *cfg, bus_http_server_t **out) {
    if (!loop || !cfg || !cfg->on_request || !out) return BUS_EINVALID;
    bus_http_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) return BUS_EINTERNAL;
    srv->loop = loop;
    srv->cfg = *cfg;
    bus_http_config_t *k = &srv->cfg;
    k->addr = NULL;
    if (!k->max_header_bytes) k->max_header_bytes = 16384;
    if (!k->max_body_bytes) k->max_body_bytes = 1048576;
    if (!k->max_pipeline) k->max_pipeline = 32;
    if (!k->read_timeout_ms) k->read_timeout_ms = 10000;
    if (!k->idle_timeout_ms) k->idle_timeout_ms = 60000;
    if (!k->shutdown_timeout_ms) k->shutdown_timeout_ms = 10000;
    if (!k->max_stream_backlog) k->max_stream_backlog = 4u << 20;
    if (!k->backlog) k->backlog = 511;
    settings_init(&srv->settings);
    uv_timer_init(loop, &srv->shutdown_timer);
    srv->shutdown_timer.data = srv;
    uv_idle_init(loop, &srv->written_idle);
    srv->written_idle.data = srv;
    srv->written_tail = &srv->written;
    metrics_init();
    *out = srv;
    return 0;
}

int bus__http_server_unbound(uv_loop_t *loop, const bus_http_config_t *cfg, bus_http_server_t **out) {
    int rc = server_new(loop, cfg, out);
    if (rc == 0) (*out)->listener_closed = 1;
    return rc;
}

static void on_own_handle_closed(uv_handle_t *h);

/* Closes the server's own handles; the last close callback frees it and
 * calls the close callback. The listener is included on a failed start
 * (a normal close has closed it before). */
static void close_own_handles(bus_http_server_t *srv, int listener_too) {
    srv->own_handles_open = 2 + listener_too;
    uv_close((uv_handle_t *)&srv->shutdown_timer, on_own_handle_closed);
    uv_close((uv_handle_t *)&srv->written_idle, on_own_handle_closed);
    if (listener_too) {
        srv->listener.data = srv;
        uv_close((uv_handle_t *)&srv->listener, on_own_handle_closed);
    }
}

int bus_http_server_start(uv_loop_t *loop, const bus_http_config_t *cfg, bus_http_server_t **out) {
    struct sockaddr_storage ss;
    if (!cfg || parse_addr(cfg->addr, &ss) != 0) {
        bus_error(NULL, "http: bad listen address \"%s\" (want host:port or [v6]:port)",
                  cfg && cfg->addr ? cfg->addr : "(null)");
        return BUS_EINVALID;
    }
    bus_http_server_t *srv;
    int rc = server_new(loop, cfg, &srv);
    if (rc != 0) return rc;
    /* Our own socket: libuv 1.44 cannot set SO_REUSEPORT before bind. */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    const char *what = "socket";
    if (fd < 0) goto fail;
    what = "setsockopt";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) goto fail;
    if (cfg->reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) goto fail;
    if (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
        goto fail;
    what = "bind";
    socklen_t sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) goto fail;
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    what = "listen";
    if (uv_tcp_open(&srv->listener, fd) != 0) goto fail;
    fd = -1; /* the handle owns it now */
    int err = uv_listen((uv_stream_t *)&srv->listener, srv->cfg.backlog, on_connection);
    if (err != 0) {
        bus_error(NULL, "http: listen on %s: %s", cfg->addr, uv_strerror(err));
        /* The listener is a live handle: free the server from its close callback. */
        close_own_handles(srv, 1);
        return BUS_EUNAVAILABLE;
    }
    struct sockaddr_storage bound;
    int bl = sizeof bound;
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &bl) == 0)
        srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
    srv->bound = 1;
    bus_info(NULL, "http: listening on %s (port %d%s)", cfg->addr, srv->port,
             cfg->reuseport ? ", SO_REUSEPORT" : "");
    *out = srv;
    return 0;
fail:
    bus_error(NULL, "http: %s on %s: %s", what, cfg->addr, strerror(errno));
    if (fd >= 0) close(fd);
    if (srv->listener.loop) {
        /* uv_tcp_open failed after init: close the handle, then free. */
        close_own_handles(srv, 1);
        return BUS_EUNAVAILABLE;
    }
    close_own_handles(srv, 0);
    return BUS_EUNAVAILABLE;
}

int bus_http_server_port(const bus_http_server_t *srv) { return srv->port; }
size_t bus_http_server_connections(const bus_http_server_t *srv) { return srv->nconns; }

static void on_own_handle_closed(uv_handle_t *h) {
    bus_http_server_t *srv = h->data;
    if (--srv->own_handles_open > 0) return;
    void (*cb)(void *) = srv->close_cb;
    void *data = srv->close_data;
    while (srv->wfree) {
        wctx_t *w = srv->wfree;
        srv->wfree = w->next;
        free(w);
    }
    free(srv);
    if (cb) cb(data);
}

static void server_maybe_finish(bus_http_server_t *srv) {
    if (!srv->closing || !srv->listener_closed || srv->nconns || srv->timer_closing) return;
    srv->timer_closing = 1;
    close_own_handles(srv, 0);
}

static void on_listener_closed(uv_handle_t *h) {
    bus_http_server_t *srv = h->data;
    srv->listener_closed = 1;
    server_maybe_finish(srv);
}

static void on_shutdown_timeout(uv_timer_t *t) {
    bus_http_server_t *srv = t->data;
    if (srv->nconns)
        bus_warn(NULL, "http: shutdown timeout, closing %zu connection(s)", srv->nconns);
    for (conn_t *c = srv->conns, *next; c; c = next) {
        next = c->next;
        conn_close(c);
    }
}

void bus_http_server_close(bus_http_server_t *srv, void (*cb)(void *), void *data) {
    if (!srv || srv->closing) return;
    srv->closing = 1;
    srv->close_cb = cb;
    srv->close_data = data;
    if (srv->bound) uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    for (conn_t *c = srv->conns, *next; c; c = next) {
        next = c->next;
        if (c->closing || c->lingering) continue;
        if (c->nqueue == 0 && !c->writing) {
            conn_close(c);
            continue;
        }
        /* Busy: finish what was dispatched, parse nothing more. */
        if (c->cur) {
            req_unref(c->cur);
            c->cur = NULL;
        }
        c->in_message = 0;
        c->stop_parsing = 1;
        c->paused = 0;
        leftover_free(c);
        if (!c->fake) {
            c->timer_mode = T_NONE;
            uv_timer_stop(&c->timer);
        }
        conn_update_reading(c);
    }
    uv_timer_start(&srv->shutdown_timer, on_shutdown_timeout, srv->cfg.shutdown_timeout_ms, 0);
    server_maybe_finish(srv);
}

/* ---- fake connections (fuzzer, unit tests) ---- */

bus__http_conn_t *bus__http_conn_fake(bus_http_server_t *srv) {
    conn_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fake = 1;
    c->fake_out = malloc(FAKE_OUT_KEEP + 1);
    if (!c->fake_out) {
        free(c);
        return NULL;
    }
    c->fake_out[0] = '\0';
    snprintf(c->peer, sizeof c->peer, "fake:0");
    conn_init_common(srv, c);
    return (bus__http_conn_t *)c;
}

void bus__http_conn_feed(bus__http_conn_t *fc, const char *data, size_t len) {
    conn_t *c = (conn_t *)fc;
    if (c->closing || c->lingering) return;
    conn_feed(c, data, len);
}

const char *bus__http_conn_fake_output(bus__http_conn_t *fc, size_t *len) {
    conn_t *c = (conn_t *)fc;
    if (len) *len = c->fake_out_len;
    return c->fake_out;
}

int bus__http_conn_fake_closed(bus__http_conn_t *fc) {
    conn_t *c = (conn_t *)fc;
    return c->closing || c->killed || c->lingering;
}

void bus__http_conn_fake_free(bus__http_conn_t *fc) {
    conn_t *c = (conn_t *)fc;
    fake_drain(c);
    conn_close(c);
    /* Writes still queued hold the last references of their requests. */
    while (c->fake_q) {
        wctx_t *w = c->fake_q;
        c->fake_q = w->next;
        write_done(w, UV_ECANCELED);
    }
    bus_http_server_t *srv = c->srv;
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->nconns--;
    free(c->fake_out);
    free(c);
    server_maybe_finish(srv);
}
