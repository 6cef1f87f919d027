/* HTTP client on libuv with libcurl's multi-socket interface. See
 * bus/http_client.h for the contract.
 *
 * How the pieces fit:
 * - libcurl tells us which sockets to watch (on_curl_socket: one uv_poll_t
 *   per socket, attached to it with curl_multi_assign) and when to wake it
 *   up (on_curl_timer: one uv_timer_t). Neither callback calls libcurl: the
 *   timer callback only (re)arms the uv timer, even for a timeout of 0.
 * - A readable/writable socket or the timer's expiry calls
 *   curl_multi_socket_action(), then drain() reads the finished transfers
 *   with curl_multi_info_read() and runs their callbacks.
 * - Every call has a uv_timer_t of its own for its whole timeout: libcurl's
 *   CURLOPT_TIMEOUT does not cover a transfer that waits for a free
 *   connection (max_host_connections), ours does. The call's memory is freed
 *   in that timer's close callback, so a call is never freed under a libuv
 *   callback that still refers to it.
 * - The client is freed when its last handle (its timer, the polls, the
 *   calls' timers) has closed. curl_multi_cleanup() runs from the client
 *   timer's close callback: never inside drain(), which may be on the stack
 *   when a user callback closes the client.
 */
#include "bus/http_client.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/metrics.h"

#ifndef BUS_VERSION
#define BUS_VERSION "dev"
#endif

#define MAX_HEADER_BYTES 65536
#define RETRY_AFTER_MAX_MS 1000000000000LL

enum { CALL_ACTIVE, CALL_IN_CALLBACK, CALL_DONE };
enum { TOO_LARGE_NONE, TOO_LARGE_BODY, TOO_LARGE_HEADERS };
enum {
    OUT_1XX, OUT_2XX, OUT_3XX, OUT_4XX, OUT_5XX,
    OUT_TIMEOUT, OUT_UNAVAILABLE, OUT_TOO_LARGE, OUT_INTERNAL, OUT_CANCELLED,
    OUT_COUNT
};
static const char *const outcome_names[OUT_COUNT] = {
    "1xx", "2xx", "3xx", "4xx", "5xx", "timeout", "unavailable", "too_large", "internal", "cancelled",
};

typedef struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct bus_http_client *client;
    struct sock *prev, *next;
} sock_t;

struct bus_http_call {
    struct bus_http_client *client;
    struct bus_http_call *prev, *next;
    CURL *easy;
    struct curl_slist *req_headers;
    char *req_body;
    uv_timer_t timer; /* the call's whole timeout; its close frees the call */
    bus_http_response_cb cb;
    void *data;
    int state;
    int timeout_ms;
    uint64_t t0;
    char method[24];
    char origin[160]; /* scheme://host:port, for error messages */
    /* the answer */
    char *body;
    size_t body_len, body_cap, max_body;
    int too_large;
    char *hbuf; /* "name\0value\0" pairs of the last answer's headers */
    size_t hbuf_len, hbuf_cap, nheaders;
    char errbuf[CURL_ERROR_SIZE];
};

struct bus_http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer; /* libcurl's timer */
    bus_http_client_opts_t opts;
    char *name, *user_agent, *proxy;
    struct bus_http_call *calls; /* in flight */
    sock_t *socks;
    size_t in_flight;
    int handles; /* libuv handles not closed yet */
    int closing;
    int curl_gone;
    void (*done)(void *);
    void *done_data;
    bus_counter_t *m_outcome[OUT_COUNT];
    bus_gauge_t *m_in_flight;
    bus_histogram_t *m_duration;
};

/* ---- global ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_rc;
static void curl_init_once(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1; }

/* ---- teardown ---- */

static void client_maybe_free(bus_http_client_t *c) {
    if (!c->closing || !c->curl_gone || c->handles > 0) return;
    void (*done)(void *) = c->done;
    void *done_data = c->done_data;
    free(c->name);
    free(c->user_agent);
    free(c->proxy);
    free(c);
    if (done) done(done_data);
}

static void on_sock_closed(uv_handle_t *h) {
    sock_t *s = h->data;
    bus_http_client_t *c = s->client;
    free(s);
    c->handles--;
    client_maybe_free(c);
}

static void sock_close(sock_t *s) {
    bus_http_client_t *c = s->client;
    if (s->prev) s->prev->next = s->next;
    else c->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    uv_poll_stop(&s->poll); /* epoll forgets the fd now, before libcurl closes it */
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void on_call_closed(uv_handle_t *h) {
    bus_http_call_t *call = h->data;
    bus_http_client_t *c = call->client;
    free(call);
    c->handles--;
    client_maybe_free(c);
}

/* Frees what the call holds and closes its timer (which frees the call). */
static void call_release(bus_http_call_t *call) {
    call->state = CALL_DONE;
    if (call->easy) curl_easy_cleanup(call->easy);
    call->easy = NULL;
    curl_slist_free_all(call->req_headers);
    free(call->req_body);
    free(call->body);
    free(call->hbuf);
    uv_close((uv_handle_t *)&call->timer, on_call_closed);
}

/* Takes the call out of the client and out of libcurl. */
static void call_detach(bus_http_call_t *call) {
    bus_http_client_t *c = call->client;
    if (call->prev) call->prev->next = call->next;
    else c->calls = call->next;
    if (call->next) call->next->prev = call->prev;
    call->prev = call->next = NULL;
    c->in_flight--;
    bus_gauge_add(c->m_in_flight, -1);
    uv_timer_stop(&call->timer);
    if (call->easy && c->multi) curl_multi_remove_handle(c->multi, call->easy);
}

static int outcome_of(int status, int http_status) {
    switch (status) {
    case 0: return http_status >= 100 && http_status < 600 ? http_status / 100 - 1 : OUT_INTERNAL;
    case BUS_ETIMEOUT: return OUT_TIMEOUT;
    case BUS_EUNAVAILABLE: return OUT_UNAVAILABLE;
    case BUS_HTTP_ETOO_LARGE: return OUT_TOO_LARGE;
    default: return OUT_INTERNAL;
    }
}

/* Ends a call in flight: detach, run its callback once, release. */
static void call_finish(bus_http_call_t *call, int status, const char *error) {
    bus_http_client_t *c = call->client;
    call_detach(call);

    bus_http_response_t r = {.body = "", .error = error ? error : ""};
    const char **names = NULL, **values = NULL;
    if (status == 0) {
        long code = 0;
        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &code);
        r.http_status = (int)code;
        r.body = call->body ? call->body : "";
        r.body_len = call->body_len;
        if (call->nheaders) {
            names = malloc(call->nheaders * sizeof *names);
            values = malloc(call->nheaders * sizeof *values);
            if (names && values) {
                const char *p = call->hbuf;
                for (size_t i = 0; i < call->nheaders; i++) {
                    names[i] = p;
                    p += strlen(p) + 1;
                    values[i] = p;
                    p += strlen(p) + 1;
                }
                r.header_count = call->nheaders;
                r.header_names = names;
                r.header_values = values;
            } else {
                status = BUS_EINTERNAL;
                r = (bus_http_response_t){.body = "", .error = "out of memory reading the answer's headers"};
            }
        }
    }
    r.total_ms = (double)(uv_hrtime() - call->t0) / 1e6;
    bus_counter_inc(c->m_outcome[outcome_of(status, r.http_status)], 1);
    bus_histogram_observe(c->m_duration, r.total_ms / 1e3);

    call->state = CALL_IN_CALLBACK;
    call->cb(status, &r, call->data);
    free(names);
    free(values);
    call_release(call);
}

/* ---- libcurl -> libuv ---- */

static void drain(bus_http_client_t *c);

static void on_poll(uv_poll_t *p, int status, int events) {
    sock_t *s = p->data;
    bus_http_client_t *c = s->client;
    if (c->closing) return;
    int flags = 0;
    /* libuv stops a poll handle that reports an error; libcurl, told so,
     * ends the transfer on that socket (at worst the call's timer does) */
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running = 0;
    /* may close s (CURL_POLL_REMOVE): s is not used after this */
    CURLMcode rc = curl_multi_socket_action(c->multi, s->fd, flags, &running);
    if (rc != CURLM_OK) bus_warn(NULL, "http client: socket_action: %s", curl_multi_strerror(rc));
    drain(c);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)easy;
    bus_http_client_t *c = userp;
    sock_t *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) sock_close(s); /* libcurl forgets the socket's pointer itself */
        return 0;
    }
    if (!s) {
        if (c->closing) return 0;
        s = calloc(1, sizeof *s);
        if (!s) return -1;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            bus_warn(NULL, "http client: cannot watch socket %d", (int)fd);
            free(s);
            return -1;
        }
        s->fd = fd;
        s->client = c;
        s->poll.data = s;
        uv_unref((uv_handle_t *)&s->poll); /* the calls' timers keep the loop alive */
        c->handles++;
        s->next = c->socks;
        if (c->socks) c->socks->prev = s;
        c->socks = s;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t) {
    bus_http_client_t *c = t->data;
    if (c->closing) return;
    int running = 0;
    CURLMcode rc = curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    if (rc != CURLM_OK) bus_warn(NULL, "http client: socket_action: %s", curl_multi_strerror(rc));
    drain(c);
}

/* libcurl asks to be woken up in timeout_ms (-1: not at all). Only arms the
 * uv timer: calling libcurl from here is not allowed. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    bus_http_client_t *c = userp;
    if (c->closing) return 0;
    if (timeout_ms < 0) uv_timer_stop(&c->timer);
    else uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- finished transfers ---- */

static int status_of(CURLcode rc, const char **why) {
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: *why = "timed out"; return BUS_ETIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: *why = "name not resolved"; return BUS_EUNAVAILABLE;
    case CURLE_COULDNT_CONNECT: *why = "connection refused"; return BUS_EUNAVAILABLE;
    case CURLE_GOT_NOTHING: *why = "connection closed without an answer"; return BUS_EUNAVAILABLE;
    case CURLE_PARTIAL_FILE: *why = "connection closed before the whole answer"; return BUS_EUNAVAILABLE;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR: *why = "connection broken"; return BUS_EUNAVAILABLE;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING: *why = "malformed answer"; return BUS_EUNAVAILABLE;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED: *why = "TLS failure"; return BUS_EUNAVAILABLE;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT: *why = "bad URL"; return BUS_EINTERNAL; /* send() checked it */
    case CURLE_OUT_OF_MEMORY: *why = "out of memory"; return BUS_EINTERNAL;
    default: *why = "transfer failed"; return BUS_EINTERNAL;
    }
}

static void call_done_by_curl(bus_http_call_t *call, CURLcode rc) {
    if (rc == CURLE_OK) {
        call_finish(call, 0, NULL);
        return;
    }
    char msg[512];
    if (call->too_large != TOO_LARGE_NONE || rc == CURLE_FILESIZE_EXCEEDED) {
        if (call->too_large == TOO_LARGE_HEADERS)
            snprintf(msg, sizeof msg, "%s %s: answer headers larger than %d bytes", call->method, call->origin,
                     MAX_HEADER_BYTES);
        else
            snprintf(msg, sizeof msg, "%s %s: answer body larger than max_body_bytes (%zu bytes)", call->method,
                     call->origin, call->max_body);
        call_finish(call, BUS_HTTP_ETOO_LARGE, msg);
        return;
    }
    const char *why;
    int status = status_of(rc, &why);
    if (status == BUS_EINTERNAL && rc != CURLE_OUT_OF_MEMORY)
        bus_warn(NULL, "http client: %s %s: unexpected libcurl error %d (%s)", call->method, call->origin, (int)rc,
                 curl_easy_strerror(rc));
    snprintf(msg, sizeof msg, "%s %s: %s (%s)", call->method, call->origin, why,
             call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc));
    call_finish(call, status, msg);
}

static void drain(bus_http_client_t *c) {
    CURLMsg *m;
    int left;
    /* a callback may close the client: then every call is finished already */
    while (!c->closing && (m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURLcode rc = m->data.result; /* m is gone once the handle is removed */
        bus_http_call_t *call = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        if (call && call->state == CALL_ACTIVE) call_done_by_curl(call, rc);
    }
}

static void on_call_timeout(uv_timer_t *t) {
    bus_http_call_t *call = t->data;
    char msg[256];
    snprintf(msg, sizeof msg, "%s %s: no complete answer within %d ms", call->method, call->origin,
             call->timeout_ms);
    call_finish(call, BUS_ETIMEOUT, msg);
}

/* ---- receiving ---- */

static int grow(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    char *q = realloc(*p, n);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userp) {
    bus_http_call_t *call = userp;
    size_t n = size * nmemb;
    if (n > call->max_body - call->body_len) {
        call->too_large = TOO_LARGE_BODY;
        return CURL_WRITEFUNC_ERROR;
    }
    if (grow(&call->body, &call->body_cap, call->body_len + n + 1) != 0) return CURL_WRITEFUNC_ERROR;
    memcpy(call->body + call->body_len, ptr, n);
    call->body_len += n;
    call->body[call->body_len] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nitems, void *userp) {
    bus_http_call_t *call = userp;
    size_t n = size * nitems;
    if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        /* a new answer (after 100 Continue, or a proxy's CONNECT): its headers only */
        call->hbuf_len = 0;
        call->nheaders = 0;
        return n;
    }
    const char *end = ptr + n;
    while (end > ptr && (end[-1] == '\r' || end[-1] == '\n')) end--;
    const char *colon = memchr(ptr, ':', (size_t)(end - ptr));
    if (!colon || colon == ptr) return n; /* the blank line, or an obsolete folded line */
    const char *v = colon + 1;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    const char *ve = end;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    size_t nl = (size_t)(colon - ptr), vl = (size_t)(ve - v);
    if (call->hbuf_len + nl + vl + 2 > MAX_HEADER_BYTES) {
        call->too_large = TOO_LARGE_HEADERS;
        return 0;
    }
    if (grow(&call->hbuf, &call->hbuf_cap, call->hbuf_len + nl + vl + 2) != 0) return 0;
    memcpy(call->hbuf + call->hbuf_len, ptr, nl);
    call->hbuf_len += nl;
    call->hbuf[call->hbuf_len++] = '\0';
    memcpy(call->hbuf + call->hbuf_len, v, vl);
    call->hbuf_len += vl;
    call->hbuf[call->hbuf_len++] = '\0';
    call->nheaders++;
    return n;
}

/* ---- client ---- */

int bus_http_client_new(uv_loop_t *loop, const bus_http_client_opts_t *opts, bus_http_client_t **out) {
    if (!loop || !out) return BUS_EBAD_REQUEST;
    *out = NULL;
    bus_http_client_opts_t o = opts ? *opts : (bus_http_client_opts_t){0};
    if (o.timeout_ms < 0 || o.connect_timeout_ms < 0 || o.max_host_connections < 0 ||
        o.max_total_connections < 0 || o.max_idle_s < 0)
        return BUS_EBAD_REQUEST;
    if (!o.timeout_ms) o.timeout_ms = 10000;
    if (!o.connect_timeout_ms) o.connect_timeout_ms = 3000;
    if (!o.max_body_bytes) o.max_body_bytes = 1 << 20;
    if (!o.max_host_connections) o.max_host_connections = 8;
    if (!o.max_idle_s) o.max_idle_s = 30;
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != 0) return BUS_EINTERNAL;

    bus_http_client_t *c = calloc(1, sizeof *c);
    if (!c) return BUS_EINTERNAL;
    c->loop = loop;
    c->name = strdup(o.name ? o.name : "http");
    c->user_agent = strdup(o.user_agent ? o.user_agent : "bus/" BUS_VERSION);
    c->proxy = o.proxy ? strdup(o.proxy) : NULL;
    c->multi = curl_multi_init();
    if (!c->name || !c->user_agent || (o.proxy && !c->proxy) || !c->multi) {
        if (c->multi) curl_multi_cleanup(c->multi);
        free(c->name);
        free(c->user_agent);
        free(c->proxy);
        free(c);
        return BUS_EINTERNAL;
    }
    o.name = c->name;
    o.user_agent = c->user_agent;
    o.proxy = c->proxy;
    c->opts = o;

    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o.max_host_connections);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o.max_total_connections);

    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_unref((uv_handle_t *)&c->timer);
    c->handles = 1;

    for (int i = 0; i < OUT_COUNT; i++)
        c->m_outcome[i] = bus_counter("bus_http_client_requests_total", "Outgoing HTTP calls by outcome", "client",
                                      c->name, "outcome", outcome_names[i], NULL);
    c->m_in_flight = bus_gauge("bus_http_client_in_flight", "Outgoing HTTP calls awaiting their answer", "client",
                               c->name, NULL);
    c->m_duration = bus_histogram("bus_http_client_request_duration_seconds",
                                  "Outgoing HTTP calls, from send to callback", "client", c->name, NULL);
    *out = c;
    return 0;
}

static void on_client_timer_closed(uv_handle_t *h) {
    bus_http_client_t *c = h->data;
    /* No easy handle is left. Closing the cached connections calls
     * on_curl_socket(CURL_POLL_REMOVE) for the sockets still watched. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    c->curl_gone = 1;
    while (c->socks) sock_close(c->socks); /* any libcurl did not report */
    c->handles--;
    client_maybe_free(c);
}

void bus_http_client_close(bus_http_client_t *c, void (*done)(void *data), void *data) {
    if (!c || c->closing) return;
    c->closing = 1;
    c->done = done;
    c->done_data = data;
    while (c->calls) call_finish(c->calls, BUS_EUNAVAILABLE, "the HTTP client is closing");
    uv_close((uv_handle_t *)&c->timer, on_client_timer_closed);
}

size_t bus_http_client_in_flight(const bus_http_client_t *c) { return c ? c->in_flight : 0; }

/* ---- sending ---- */

static int is_token(const char *s) {
    if (!s || !*s) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s)) return 0;
    return 1;
}

static int header_ok(const char *h) {
    const char *colon = strchr(h, ':');
    if (!colon || colon == h || strpbrk(h, "\r\n")) return 0;
    for (const char *p = h; p < colon; p++)
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p)) return 0;
    return 1;
}

static int has_header(const char *const *headers, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; headers && headers[i]; i++)
        if (strncasecmp(headers[i], name, n) == 0 && headers[i][n] == ':') return 1;
    return 0;
}

/* Checks the URL (absolute http/https with a host) and writes its origin. */
static int url_origin(const char *url, char *origin, size_t cap) {
    CURLU *u = curl_url();
    if (!u) return BUS_EINTERNAL;
    int rc = BUS_EBAD_REQUEST;
    char *scheme = NULL, *host = NULL, *port = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0) &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host[0] &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
        snprintf(origin, cap, "%s://%s:%s", scheme, host, port);
        rc = 0;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

static int form_safe(unsigned char ch) { return isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~'; }

char *bus_http_form_encode(const char *const *fields, size_t *len) {
    size_t n = 0, i;
    for (i = 0; fields && fields[i]; i += 2) {
        if (!fields[i + 1]) return NULL;
        for (int k = 0; k < 2; k++)
            for (const unsigned char *p = (const unsigned char *)fields[i + k]; *p; p++)
                n += form_safe(*p) || *p == ' ' ? 1 : 3;
        n += 2; /* '=' and '&' */
    }
    char *out = malloc(n + 1), *w = out;
    if (!out) return NULL;
    static const char hex[] = "0123456789ABCDEF";
    for (i = 0; fields && fields[i]; i += 2) {
        if (i) *w++ = '&';
        for (int k = 0; k < 2; k++) {
            if (k) *w++ = '=';
            for (const unsigned char *p = (const unsigned char *)fields[i + k]; *p; p++) {
                if (form_safe(*p)) {
                    *w++ = (char)*p;
                } else if (*p == ' ') {
                    *w++ = '+';
                } else {
                    *w++ = '%';
                    *w++ = hex[*p >> 4];
                    *w++ = hex[*p & 15];
                }
            }
        }
    }
    *w = '\0';
    if (len) *len = (size_t)(w - out);
    return out;
}

int bus_http_client_send(bus_http_client_t *c, const bus_http_request_t *req, bus_http_response_cb cb,
                         void *data, bus_http_call_t **call_out) {
    if (call_out) *call_out = NULL;
    if (!c || !req || !cb || !req->url) return BUS_EBAD_REQUEST;
    if (c->closing) return BUS_EUNAVAILABLE;
    int nbodies = (req->body != NULL) + (req->json != NULL) + (req->form != NULL);
    if (nbodies > 1 || req->timeout_ms < 0 || req->connect_timeout_ms < 0) return BUS_EBAD_REQUEST;
    const char *method = req->method ? req->method : nbodies ? "POST" : "GET";
    if (!is_token(method) || strlen(method) >= sizeof((bus_http_call_t *)0)->method) return BUS_EBAD_REQUEST;
    if (req->content_type && (strpbrk(req->content_type, "\r\n") || strlen(req->content_type) > 200))
        return BUS_EBAD_REQUEST;
    for (size_t i = 0; req->headers && req->headers[i]; i++)
        if (!header_ok(req->headers[i])) return BUS_EBAD_REQUEST;

    bus_http_call_t *call = calloc(1, sizeof *call);
    if (!call) return BUS_EINTERNAL;
    int rc = url_origin(req->url, call->origin, sizeof call->origin);
    if (rc != 0) {
        free(call);
        return rc;
    }
    snprintf(call->method, sizeof call->method, "%s", method);
    call->client = c;
    call->cb = cb;
    call->data = data;
    call->timeout_ms = req->timeout_ms ? req->timeout_ms : c->opts.timeout_ms;
    call->max_body = req->max_body_bytes ? req->max_body_bytes : c->opts.max_body_bytes;

    /* the body, owned by the call (CURLOPT_POSTFIELDS does not copy) */
    size_t body_len = 0;
    const char *ctype = NULL;
    rc = BUS_EINTERNAL;
    if (req->form) {
        call->req_body = bus_http_form_encode(req->form, &body_len);
        if (!call->req_body) {
            /* odd list or memory: tell which */
            size_t i = 0;
            while (req->form[i]) i++;
            if (i % 2) rc = BUS_EBAD_REQUEST;
            goto fail;
        }
        ctype = "application/x-www-form-urlencoded";
    } else if (req->json) {
        body_len = strlen(req->json);
        call->req_body = strdup(req->json);
        if (!call->req_body) goto fail;
        ctype = "application/json";
    } else if (req->body) {
        body_len = req->body_len;
        call->req_body = malloc(body_len ? body_len : 1);
        if (!call->req_body) goto fail;
        memcpy(call->req_body, req->body, body_len);
        ctype = req->content_type;
    }

    /* headers: the caller's, no "Expect: 100-continue" wait, our Content-Type */
    struct curl_slist *h = NULL, *t;
    for (size_t i = 0; req->headers && req->headers[i]; i++) {
        if (!(t = curl_slist_append(h, req->headers[i]))) goto fail_headers;
        h = t;
    }
    if (!has_header(req->headers, "Expect")) {
        if (!(t = curl_slist_append(h, "Expect:"))) goto fail_headers;
        h = t;
    }
    if (call->req_body && !has_header(req->headers, "Content-Type")) {
        char line[256];
        if (ctype) snprintf(line, sizeof line, "Content-Type: %s", ctype);
        else snprintf(line, sizeof line, "Content-Type:"); /* not libcurl's form default */
        if (!(t = curl_slist_append(h, line))) goto fail_headers;
        h = t;
    }
    call->req_headers = h;

    CURL *e = call->easy = curl_easy_init();
    if (!e) goto fail;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->req_headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
    curl_easy_setopt(e, CURLOPT_PROXY, c->proxy ? c->proxy : "");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(req->connect_timeout_ms ? req->connect_timeout_ms : c->opts.connect_timeout_ms));
    curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, (long)c->opts.max_idle_s);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)(call->max_body > (size_t)INT64_MAX
                                                                     ? INT64_MAX
                                                                     : (int64_t)call->max_body));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (call->req_body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->req_body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        if (strcmp(method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }

    uv_timer_init(c->loop, &call->timer);
    call->timer.data = call;
    c->handles++;
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        call_release(call); /* frees the call once its timer has closed; no callback */
        return BUS_EINTERNAL;
    }
    call->t0 = uv_hrtime();
    uv_timer_start(&call->timer, on_call_timeout, (uint64_t)call->timeout_ms, 0);
    call->state = CALL_ACTIVE;
    call->next = c->calls;
    if (c->calls) c->calls->prev = call;
    c->calls = call;
    c->in_flight++;
    bus_gauge_add(c->m_in_flight, 1);
    if (call_out) *call_out = call;
    return 0;

fail_headers:
    curl_slist_free_all(h);
fail:
    if (call->easy) curl_easy_cleanup(call->easy);
    curl_slist_free_all(call->req_headers);
    free(call->req_body);
    free(call);
    return rc;
}

int bus_http_client_get(bus_http_client_t *c, const char *url, bus_http_response_cb cb, void *data,
                        bus_http_call_t **call_out) {
    bus_http_request_t r = {.url = url};
    return bus_http_client_send(c, &r, cb, data, call_out);
}

int bus_http_client_post_json(bus_http_client_t *c, const char *url, const char *json,
                              bus_http_response_cb cb, void *data, bus_http_call_t **call_out) {
    if (call_out) *call_out = NULL;
    if (!json) return BUS_EBAD_REQUEST;
    bus_http_request_t r = {.url = url, .json = json};
    return bus_http_client_send(c, &r, cb, data, call_out);
}

int bus_http_client_post_form(bus_http_client_t *c, const char *url, const char *const *form,
                              bus_http_response_cb cb, void *data, bus_http_call_t **call_out) {
    if (call_out) *call_out = NULL;
    if (!form) return BUS_EBAD_REQUEST;
    bus_http_request_t r = {.url = url, .form = form};
    return bus_http_client_send(c, &r, cb, data, call_out);
}

int bus_http_call_cancel(bus_http_call_t *call) {
    if (!call || call->state != CALL_ACTIVE) return BUS_EINVALID;
    bus_http_client_t *c = call->client;
    call_detach(call);
    bus_counter_inc(c->m_outcome[OUT_CANCELLED], 1);
    call_release(call);
    return 0;
}

/* ---- responses ---- */

const char *bus_http_response_header(const bus_http_response_t *r, const char *name) {
    if (!r || !name) return NULL;
    for (size_t i = 0; i < r->header_count; i++)
        if (strcasecmp(r->header_names[i], name) == 0) return r->header_values[i];
    return NULL;
}

int bus_http_response_header_int(const bus_http_response_t *r, const char *name, int64_t *out) {
    const char *v = bus_http_response_header(r, name);
    if (!v) return BUS_ENOT_FOUND;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end || errno) return BUS_EBAD_REQUEST;
    if (out) *out = n;
    return 0;
}

int64_t bus_http_response_retry_after_ms(const bus_http_response_t *r) {
    const char *v = bus_http_response_header(r, "Retry-After");
    if (!v) return -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ms;
    if (bus_http_retry_after_ms(v, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, &ms) != 0) return -1;
    return ms;
}

int bus_http_retry_after_ms(const char *value, int64_t now_unix_ms, int64_t *out_ms) {
    if (!value || !out_ms) return BUS_EBAD_REQUEST;
    while (*value == ' ' || *value == '\t') value++;
    size_t n = strlen(value);
    while (n && (value[n - 1] == ' ' || value[n - 1] == '\t')) n--;
    if (!n || n > 128) return BUS_EBAD_REQUEST;
    char v[129];
    memcpy(v, value, n);
    v[n] = '\0';

    if (isdigit((unsigned char)v[0])) {
        /* delay-seconds: digits, optionally a fraction */
        double secs = 0;
        size_t i = 0;
        for (; isdigit((unsigned char)v[i]); i++) secs = secs * 10 + (v[i] - '0');
        if (v[i] == '.') {
            double scale = 0.1;
            if (!isdigit((unsigned char)v[i + 1])) return BUS_EBAD_REQUEST;
            for (i++; isdigit((unsigned char)v[i]); i++, scale /= 10) secs += (v[i] - '0') * scale;
        }
        if (v[i]) return BUS_EBAD_REQUEST;
        double ms = ceil(secs * 1000.0);
        *out_ms = ms >= (double)RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : (int64_t)ms;
        return 0;
    }
    /* HTTP-date: it starts with a day name, which rules out curl_getdate()'s
     * other, looser forms (a bare "-5", "now"...) */
    if (!isalpha((unsigned char)v[0])) return BUS_EBAD_REQUEST;
    time_t t = curl_getdate(v, NULL);
    if (t == (time_t)-1) return BUS_EBAD_REQUEST;
    int64_t delta = (int64_t)t * 1000 - now_unix_ms;
    *out_ms = delta < 0 ? 0 : delta > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : delta;
    return 0;
}
