/* The programmable HTTP server of the tests. See fake_http.h.
 *
 * bus/http.h has no call that drops a connection, so DROP and PARTIAL find
 * the request's socket among the fake loop's TCP handles (by the peer's
 * port) and shut it down; the server then sees the end of the connection
 * and runs the request's close callback, where the request is released. */
#include "fake_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <uv.h>

#include "../test.h"
#include "bus/http.h"

typedef struct {
    bt_fake_action_t action;
    int status;
    char *content_type;
    char *body;
    size_t body_len;
    int chunked;
    char *headers[BT_FAKE_MAX_HEADERS];
    int delay_ms;
} reply_t;

typedef struct route {
    char *method, *prefix;
    reply_t reply;
    int times_left; /* 0: forever; -1: used up */
    struct route *next;
} route_t;

typedef struct held {
    bt_fake_http_t *f;
    bus_http_req_t *req;
    reply_t reply;
    uv_timer_t timer;
    int peer_port;
    int streaming; /* PARTIAL: the head and half the body are out */
    int dropped;   /* the socket is shut down: release when the server notices */
    int finished;  /* req released */
    int ended;     /* held_end ran: x is being freed */
    struct held *prev, *next;
} held_t;

struct bt_fake_http {
    uv_loop_t loop;
    uv_async_t stop_async;
    bus_http_server_t *srv;
    pthread_t thread;
    int port;
    int stopping; /* fake thread only */
    held_t *held; /* fake thread only */

    pthread_mutex_t mu; /* guards what follows */
    route_t *routes;
    bt_fake_handler_fn handler;
    void *handler_data;
    bt_fake_request_t **recs;
    size_t nrecs, caprecs;
    size_t nheld;
};

char bt_fake_body_byte(size_t i) { return (char)('a' + (i * 7 + i / 26) % 26); }

static char *dup_or_null(const char *s) {
    if (!s) return NULL;
    char *d = strdup(s);
    CHECK(d != NULL);
    return d;
}

static void reply_copy(reply_t *dst, const bt_fake_reply_t *src) {
    memset(dst, 0, sizeof *dst);
    dst->action = src->action;
    dst->status = src->status ? src->status : 200;
    dst->content_type = dup_or_null(src->content_type ? src->content_type : "application/json");
    dst->chunked = src->chunked;
    dst->delay_ms = src->delay_ms;
    if (src->body_bytes) {
        dst->body_len = src->body_bytes;
        dst->body = malloc(src->body_bytes + 1);
        CHECK(dst->body != NULL);
        for (size_t i = 0; i < src->body_bytes; i++) dst->body[i] = bt_fake_body_byte(i);
        dst->body[src->body_bytes] = '\0';
    } else {
        const char *b = src->body ? src->body : "{\"ok\":true}";
        dst->body_len = src->body && src->body_len ? src->body_len : strlen(b);
        dst->body = malloc(dst->body_len + 1);
        CHECK(dst->body != NULL);
        memcpy(dst->body, b, dst->body_len);
        dst->body[dst->body_len] = '\0';
    }
    for (int i = 0; i < BT_FAKE_MAX_HEADERS && src->headers[i]; i++) dst->headers[i] = dup_or_null(src->headers[i]);
}

static void reply_free(reply_t *r) {
    free(r->content_type);
    free(r->body);
    for (int i = 0; i < BT_FAKE_MAX_HEADERS; i++) free(r->headers[i]);
}

static bt_fake_request_t *record(bus_http_req_t *req) {
    bt_fake_request_t *r = calloc(1, sizeof *r);
    CHECK(r != NULL);
    snprintf(r->method, sizeof r->method, "%s", bus_http_method(req));
    r->target = dup_or_null(bus_http_url(req));
    r->path = dup_or_null(bus_http_path(req));
    snprintf(r->peer, sizeof r->peer, "%s", bus_http_peer(req));
    r->header_count = bus_http_header_count(req);
    r->header_names = calloc(r->header_count + 1, sizeof(char *));
    r->header_values = calloc(r->header_count + 1, sizeof(char *));
    CHECK(r->header_names && r->header_values);
    for (size_t i = 0; i < r->header_count; i++) {
        const char *n, *v;
        bus_http_header_at(req, i, &n, &v);
        r->header_names[i] = dup_or_null(n);
        r->header_values[i] = dup_or_null(v);
    }
    const char *b = bus_http_body(req, &r->body_len);
    r->body = malloc(r->body_len + 1);
    CHECK(r->body != NULL);
    memcpy(r->body, b, r->body_len);
    r->body[r->body_len] = '\0';
    return r;
}

static void record_free(bt_fake_request_t *r) {
    for (size_t i = 0; i < r->header_count; i++) {
        free(r->header_names[i]);
        free(r->header_values[i]);
    }
    free(r->header_names);
    free(r->header_values);
    free(r->target);
    free(r->path);
    free(r->body);
    free(r);
}

/* ---- held requests (fake thread) ---- */

static void on_held_closed(uv_handle_t *h) {
    held_t *x = h->data;
    bt_fake_http_t *f = x->f;
    reply_free(&x->reply);
    free(x);
    pthread_mutex_lock(&f->mu);
    f->nheld--;
    pthread_mutex_unlock(&f->mu);
}

/* Releases the request (if not yet) and frees the held record. */
static void held_end(held_t *x) {
    bt_fake_http_t *f = x->f;
    if (x->ended) return; /* the client left while we answered */
    x->ended = 1;
    if (!x->finished) {
        x->finished = 1;
        if (x->streaming) bus_http_stream_end(x->req);
        else bus_http_respond(x->req, 503, "text/plain", "fake stopped\n", 13); /* a no-op when gone */
    }
    if (x->prev) x->prev->next = x->next;
    else f->held = x->next;
    if (x->next) x->next->prev = x->prev;
    uv_timer_stop(&x->timer);
    uv_close((uv_handle_t *)&x->timer, on_held_closed);
}

typedef struct {
    int port;
} walk_t;

static void shut_if_peer(uv_handle_t *h, void *arg) {
    walk_t *w = arg;
    if (h->type != UV_TCP || uv_is_closing(h)) return;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername((uv_tcp_t *)h, (struct sockaddr *)&ss, &len) != 0) return;
    int port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                       : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    uv_os_fd_t fd;
    if (port == w->port && uv_fileno(h, &fd) == 0) shutdown(fd, SHUT_RDWR);
}

/* Cuts the connection: the client sees the end of the stream, the server
 * sees it too and calls on_gone. */
static void held_drop(held_t *x) {
    x->dropped = 1;
    walk_t w = {x->peer_port};
    uv_walk(&x->f->loop, shut_if_peer, &w);
}

static void on_gone(bus_http_req_t *req, void *data) {
    (void)req;
    held_end(data);
}

static void on_partial_drop(uv_timer_t *t) { held_drop(t->data); }

static void held_act(held_t *x) {
    reply_t *r = &x->reply;
    switch (r->action) {
    case BT_FAKE_ANSWER:
        for (int i = 0; i < BT_FAKE_MAX_HEADERS && r->headers[i]; i++) {
            char name[128];
            const char *colon = strchr(r->headers[i], ':');
            if (!colon || (size_t)(colon - r->headers[i]) >= sizeof name) continue;
            memcpy(name, r->headers[i], (size_t)(colon - r->headers[i]));
            name[colon - r->headers[i]] = '\0';
            const char *v = colon + 1;
            while (*v == ' ') v++;
            bus_http_add_header(x->req, name, v);
        }
        x->finished = 1;
        if (r->chunked) {
            if (bus_http_respond_stream_start(x->req, r->status, r->content_type) == 0)
                for (size_t off = 0; off < r->body_len; off += 65536)
                    bus_http_stream_write(x->req, r->body + off,
                                          r->body_len - off < 65536 ? r->body_len - off : 65536);
            bus_http_stream_end(x->req);
        } else {
            bus_http_respond(x->req, r->status, r->content_type, r->body, r->body_len);
        }
        held_end(x);
        break;
    case BT_FAKE_DROP:
        held_drop(x); /* released in on_gone */
        break;
    case BT_FAKE_PARTIAL:
        if (bus_http_respond_stream_start(x->req, r->status, r->content_type) == 0) {
            x->streaming = 1;
            bus_http_stream_write(x->req, r->body, r->body_len / 2 ? r->body_len / 2 : 1);
        }
        /* let the half body leave before cutting */
        uv_timer_start(&x->timer, on_partial_drop, 50, 0);
        break;
    case BT_FAKE_HANG:
        break; /* released in on_gone or at stop */
    }
}

static void on_delay(uv_timer_t *t) { held_act(t->data); }

/* ---- the server (fake thread) ---- */

static int route_match(const route_t *rt, const bt_fake_request_t *rec) {
    if (rt->times_left < 0) return 0;
    if (rt->method && strcasecmp(rt->method, rec->method) != 0) return 0;
    return !rt->prefix || strncmp(rec->path, rt->prefix, strlen(rt->prefix)) == 0;
}

static void on_request(bus_http_req_t *req, void *data) {
    bt_fake_http_t *f = data;
    if (f->stopping) {
        bus_http_respond(req, 503, "text/plain", "stopping\n", 9);
        return;
    }
    bt_fake_request_t *rec = record(req);
    held_t *x = calloc(1, sizeof *x);
    CHECK(x != NULL);
    x->f = f;
    x->req = req;
    const char *colon = strrchr(rec->peer, ':');
    x->peer_port = colon ? atoi(colon + 1) : 0;

    pthread_mutex_lock(&f->mu);
    if (f->nrecs == f->caprecs) {
        f->caprecs = f->caprecs ? 2 * f->caprecs : 64;
        f->recs = realloc(f->recs, f->caprecs * sizeof *f->recs);
        CHECK(f->recs != NULL);
    }
    f->recs[f->nrecs++] = rec;
    f->nheld++;
    route_t *rt = f->routes;
    while (rt && !route_match(rt, rec)) rt = rt->next;
    bt_fake_handler_fn handler = f->handler;
    void *hdata = f->handler_data;
    bt_fake_reply_t chosen = {0};
    if (rt) {
        chosen.action = rt->reply.action;
        chosen.status = rt->reply.status;
        chosen.content_type = rt->reply.content_type;
        chosen.body = rt->reply.body;
        chosen.body_len = rt->reply.body_len;
        chosen.chunked = rt->reply.chunked;
        chosen.delay_ms = rt->reply.delay_ms;
        memcpy(chosen.headers, rt->reply.headers, sizeof chosen.headers);
        reply_copy(&x->reply, &chosen);
        if (rt->times_left > 0 && --rt->times_left == 0) rt->times_left = -1;
    }
    pthread_mutex_unlock(&f->mu);
    if (!rt) {
        if (handler) handler(rec, &chosen, hdata);
        reply_copy(&x->reply, &chosen);
    }

    uv_timer_init(&f->loop, &x->timer);
    x->timer.data = x;
    x->next = f->held;
    if (f->held) f->held->prev = x;
    f->held = x;
    bus_http_req_on_close(req, on_gone, x);
    if (x->reply.action == BT_FAKE_HANG) return;
    if (x->reply.delay_ms > 0) uv_timer_start(&x->timer, on_delay, (uint64_t)x->reply.delay_ms, 0);
    else held_act(x);
}

static void on_async_closed(uv_handle_t *h) { (void)h; }

static void on_server_closed(void *data) {
    bt_fake_http_t *f = data;
    uv_close((uv_handle_t *)&f->stop_async, on_async_closed);
}

static void on_stop(uv_async_t *a) {
    bt_fake_http_t *f = a->data;
    if (f->stopping) return;
    f->stopping = 1;
    while (f->held) held_end(f->held);
    bus_http_server_close(f->srv, on_server_closed, f);
}

static void *fake_thread(void *arg) {
    bt_fake_http_t *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- the test's side ---- */

bt_fake_http_t *bt_fake_http_start(void) {
    signal(SIGPIPE, SIG_IGN); /* a write on a connection the fake cut */
    bt_fake_http_t *f = calloc(1, sizeof *f);
    CHECK(f != NULL);
    pthread_mutex_init(&f->mu, NULL);
    CHECK(uv_loop_init(&f->loop) == 0);
    CHECK(uv_async_init(&f->loop, &f->stop_async, on_stop) == 0);
    f->stop_async.data = f;
    bus_http_config_t cfg = {
        .addr = "127.0.0.1:0",
        .on_request = on_request,
        .data = f,
        .max_header_bytes = 65536,
        .max_body_bytes = 64u << 20,
        .max_stream_backlog = 256u << 20,
        .shutdown_timeout_ms = 500,
    };
    CHECK(bus_http_server_start(&f->loop, &cfg, &f->srv) == 0);
    f->port = bus_http_server_port(f->srv);
    CHECK(pthread_create(&f->thread, NULL, fake_thread, f) == 0);
    return f;
}

void bt_fake_http_stop(bt_fake_http_t *f) {
    if (!f) return;
    uv_async_send(&f->stop_async);
    pthread_join(f->thread, NULL);
    CHECK(uv_loop_close(&f->loop) == 0);
    for (route_t *rt = f->routes, *next; rt; rt = next) {
        next = rt->next;
        free(rt->method);
        free(rt->prefix);
        reply_free(&rt->reply);
        free(rt);
    }
    for (size_t i = 0; i < f->nrecs; i++) record_free(f->recs[i]);
    free(f->recs);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

int bt_fake_http_port(const bt_fake_http_t *f) { return f->port; }

const char *bt_fake_http_url(const bt_fake_http_t *f, const char *path, char *buf, size_t cap) {
    snprintf(buf, cap, "http://127.0.0.1:%d%s", f->port, path ? path : "");
    return buf;
}

void bt_fake_http_route(bt_fake_http_t *f, const char *method, const char *path_prefix, const bt_fake_reply_t *reply,
                        int times) {
    route_t *rt = calloc(1, sizeof *rt);
    CHECK(rt != NULL);
    rt->method = dup_or_null(method);
    rt->prefix = path_prefix && *path_prefix ? dup_or_null(path_prefix) : NULL;
    reply_copy(&rt->reply, reply);
    rt->times_left = times > 0 ? times : 0;
    pthread_mutex_lock(&f->mu);
    rt->next = f->routes;
    f->routes = rt;
    pthread_mutex_unlock(&f->mu);
}

void bt_fake_http_set_handler(bt_fake_http_t *f, bt_fake_handler_fn fn, void *data) {
    pthread_mutex_lock(&f->mu);
    f->handler = fn;
    f->handler_data = data;
    pthread_mutex_unlock(&f->mu);
}

size_t bt_fake_http_count(bt_fake_http_t *f) {
    pthread_mutex_lock(&f->mu);
    size_t n = f->nrecs;
    pthread_mutex_unlock(&f->mu);
    return n;
}

const bt_fake_request_t *bt_fake_http_request(bt_fake_http_t *f, size_t i) {
    pthread_mutex_lock(&f->mu);
    const bt_fake_request_t *r = i < f->nrecs ? f->recs[i] : NULL;
    pthread_mutex_unlock(&f->mu);
    return r;
}

size_t bt_fake_http_peers(bt_fake_http_t *f) {
    pthread_mutex_lock(&f->mu);
    size_t n = 0;
    for (size_t i = 0; i < f->nrecs; i++) {
        size_t j = 0;
        while (j < i && strcmp(f->recs[j]->peer, f->recs[i]->peer) != 0) j++;
        if (j == i) n++;
    }
    pthread_mutex_unlock(&f->mu);
    return n;
}

size_t bt_fake_http_held(bt_fake_http_t *f) {
    pthread_mutex_lock(&f->mu);
    size_t n = f->nheld;
    pthread_mutex_unlock(&f->mu);
    return n;
}

const char *bt_fake_request_header(const bt_fake_request_t *r, const char *name) {
    for (size_t i = 0; r && i < r->header_count; i++)
        if (strcasecmp(r->header_names[i], name) == 0) return r->header_values[i];
    return NULL;
}
