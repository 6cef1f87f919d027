/* HTTP client on the loop: libcurl's multi-socket interface driven by
 * libuv, for workers that call outside services (the game API, Discord,
 * Telegram). The loop never blocks: sockets are watched with uv_poll_t,
 * libcurl's timer is one uv_timer_t, DNS runs in libcurl's resolver threads.
 *
 *   static void on_done(int status, const bus_http_response_t *r, void *data) {
 *       if (status != 0)                 // no HTTP answer: r->error says why
 *           fail(data, status);          // BUS_ETIMEOUT, BUS_EUNAVAILABLE, ...
 *       else if (r->http_status == 429)  // an HTTP answer, whatever its status
 *           retry_later(data, bus_http_response_retry_after_ms(r));
 *       else if (r->http_status == 200)
 *           use(data, r->body, r->body_len);
 *   }
 *   bus_http_client_opts_t o = {.name = "game_api", .timeout_ms = 3000};
 *   bus_http_client_t *hc;
 *   if (bus_http_client_new(loop, &o, &hc) != 0) ...
 *   bus_http_request_t rq = {.url = game_api_url, .json = "{\"player\":42}"};
 *   if (bus_http_client_send(hc, &rq, on_done, ctx, NULL) != 0) ...  // on_done will not run
 *   ...
 *   bus_http_client_close(hc, on_closed, NULL);
 *
 * Threading: a client belongs to the loop it was created on. Every function
 * taking a client, a call or a response must be called on that loop's
 * thread. bus_http_retry_after_ms() and bus_http_form_encode() are pure and
 * safe anywhere. Several clients (on several loops) may live in one process.
 *
 * Connections: one libcurl multi handle per client keeps finished requests'
 * connections open (HTTP/1.1 keep-alive, HTTP/2 multiplexing over TLS) and
 * reuses them for the next request to the same scheme://host:port. Requests
 * beyond max_host_connections for one host wait for a free connection; that
 * wait counts in their timeout. Redirects are not followed (a 3xx is an
 * answer like any other). Proxies come from opts.proxy only, never from the
 * environment. TLS peers and host names are verified (system CA store).
 * The client never retries by itself. One exception, libcurl's own: when a
 * reused keep-alive connection turns out to be closed by the server before
 * any byte of the answer arrived, libcurl sends the request once more on a
 * new connection. A server that received a request and closed without
 * answering may thus see it twice: do not count on at-most-once delivery of
 * a POST (neither Discord nor Telegram dedupe; the callers' own idempotency
 * rules apply).
 *
 * Ownership and the callback contract:
 * - bus_http_client_send() (and the get/post helpers) copy everything the
 *   request points to (URL, headers, body, form fields) before returning.
 * - It returns 0: the callback runs EXACTLY ONCE later, on the loop thread,
 *   never inside the send call itself -- unless bus_http_call_cancel()
 *   succeeds first, then it never runs.
 * - It returns < 0: nothing was sent, the callback NEVER runs, *call_out is
 *   left NULL.
 * - The response and everything it points to (body, headers, error) belong
 *   to the client and are valid only until the callback returns: copy what
 *   you keep.
 * - The call handle (*call_out) is valid from the send call until its
 *   callback returns, or until bus_http_call_cancel() returns; do not use it
 *   after that (forget it in the callback).
 * - From a callback you may send new requests, cancel other calls and close
 *   the client.
 *
 * Callback status (first argument):
 *   0                 an HTTP answer arrived in full, of ANY status code
 *                     (200, 404, 429, 503...): read r->http_status.
 *   BUS_ETIMEOUT      no complete answer within timeout_ms (measured from the
 *                     send call), or no connection within connect_timeout_ms.
 *   BUS_EUNAVAILABLE  the service could not be reached or did not answer
 *                     properly: connection refused or reset, DNS failure,
 *                     connection closed before the whole answer, TLS
 *                     failure, a malformed answer; also every call still in
 *                     flight when the client is closed.
 *   BUS_HTTP_ETOO_LARGE  the answer's body exceeds max_body_bytes (aborted
 *                     as soon as that is known: from Content-Length, or
 *                     while reading), or its headers exceed 64 KiB.
 *   BUS_EINTERNAL     out of memory or an unexpected libcurl failure.
 * When status != 0: r->http_status is 0, the body is "" and there are no
 * headers; r->error is a sentence such as
 *   "GET http://127.0.0.1:8081: connection refused (Failed to connect to ...)"
 * naming the method and the origin (scheme://host:port) only -- never the
 * path or the query, which may carry secrets (Telegram's bot token is part
 * of the path) -- so it is safe to log.
 *
 * Metrics (bus/metrics.h), labelled client=<opts.name>:
 *   bus_http_client_requests_total{client,outcome}  outcome: 1xx 2xx 3xx 4xx
 *       5xx (HTTP answers by class), timeout, unavailable, too_large,
 *       internal, cancelled
 *   bus_http_client_in_flight{client}                calls sent, callback not run yet
 *   bus_http_client_request_duration_seconds{client} send -> callback, cancels excluded
 *
 * Settings convention (README "Calling HTTP services from a worker"): every
 * outside service's base URL is a setting of its program (BUS_GAME_API_URL,
 * BUS_DISCORD_API_URL, BUS_TELEGRAM_API_URL, bus/config.h extras), so that the
 * tests point it at a fake (tests/support/fake_http.h).
 */
#ifndef BUS_HTTP_CLIENT_H
#define BUS_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bus/error.h"

/* The callback status of an answer over max_body_bytes. It is BUS_EINVALID
 * ("the answer is not acceptable"), which no other callback outcome uses;
 * send() itself never returns it. */
#define BUS_HTTP_ETOO_LARGE BUS_EINVALID

typedef struct bus_http_client bus_http_client_t;
typedef struct bus_http_call bus_http_call_t;

typedef struct {
    /* Metrics label client="..." (and nothing else). Copied. [ "http" ] */
    const char *name;
    /* Defaults of every request; 0 means the value in brackets. */
    int timeout_ms;         /* whole call, from send to callback, waiting for a connection included [10000] */
    int connect_timeout_ms; /* TCP (and TLS) connection set-up [3000] */
    size_t max_body_bytes;  /* response body [1 MiB] -> BUS_HTTP_ETOO_LARGE */
    /* Connections. */
    int max_host_connections;  /* open connections per scheme://host:port; more calls wait [8] */
    int max_total_connections; /* open connections overall [0 = no limit] */
    int max_idle_s;            /* an idle keep-alive connection older than this is not reused [30] */
    const char *user_agent;    /* copied ["bus/<version>"] */
    const char *proxy;         /* "http://proxy:3128"; copied; NULL: no proxy (environment ignored) */
} bus_http_client_opts_t;

/* What to send. Only url is required. */
typedef struct {
    /* "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"... NULL: GET without a
     * body, POST with one. */
    const char *method;
    /* Absolute http:// or https:// URL, already percent-encoded. */
    const char *url;
    /* Extra headers, "Name: value" each, NULL-terminated; NULL for none.
     * (Host, Content-Length and Connection are the client's.) */
    const char *const *headers;
    /* At most one of the three bodies below (BUS_EBAD_REQUEST otherwise). */
    const void *body;         /* raw bytes; NULL: no body. body_len 0 with non-NULL body: empty body */
    size_t body_len;
    const char *content_type; /* Content-Type of the raw body; NULL: none sent */
    const char *json;         /* NUL-terminated JSON text, sent with Content-Type: application/json */
    /* name, value, name, value, ..., NULL: sent as application/x-www-form-urlencoded,
     * each name and value percent-encoded (bus_http_form_encode()). */
    const char *const *form;
    /* Per call; 0: the client's. */
    int timeout_ms;
    int connect_timeout_ms;
    size_t max_body_bytes;
} bus_http_request_t;

typedef struct {
    int http_status;    /* 100..599 when the callback status is 0, else 0 */
    const char *body;   /* NUL-terminated (not counted in body_len); "" when empty */
    size_t body_len;
    /* The final answer's headers in arrival order (names as received, values
     * trimmed); look them up with bus_http_response_header(). */
    size_t header_count;
    const char *const *header_names;
    const char *const *header_values;
    double total_ms;    /* send call -> callback */
    const char *error;  /* "" when the status is 0 (see above) */
} bus_http_response_t;

typedef void (*bus_http_response_cb)(int status, const bus_http_response_t *r, void *data);

/* Creates a client on `loop`. opts may be NULL (defaults); it is copied.
 * An idle client (nothing in flight) does not keep uv_run() alive.
 * Errors: BUS_EBAD_REQUEST (negative values in opts, a NULL argument),
 * BUS_EINTERNAL (memory, libcurl). *out is the caller's until
 * bus_http_client_close(). */
int bus_http_client_new(uv_loop_t *loop, const bus_http_client_opts_t *opts, bus_http_client_t **out);

/* Closes the client: the callbacks of calls still in flight run with
 * BUS_EUNAVAILABLE before this returns; connections are closed; once every
 * libuv handle of the client has closed the memory is freed, then done(data)
 * runs on the loop thread (done may be NULL). Between this call and done,
 * sends fail with BUS_EUNAVAILABLE; after done the client is gone. Safe with
 * NULL; a second call is a no-op. */
void bus_http_client_close(bus_http_client_t *c, void (*done)(void *data), void *data);

/* Calls sent whose callback has not run yet. */
size_t bus_http_client_in_flight(const bus_http_client_t *c);

/* Starts a call (see the contract at the top). call_out may be NULL when the
 * caller never cancels. Errors (callback never runs): BUS_EBAD_REQUEST (no
 * URL, not an absolute http(s) URL, a method that is not a token, a header
 * without "Name:" or with CR/LF, two bodies, an odd form list),
 * BUS_EUNAVAILABLE (client closing), BUS_EINTERNAL (memory, libcurl). */
int bus_http_client_send(bus_http_client_t *c, const bus_http_request_t *req, bus_http_response_cb cb,
                         void *data, bus_http_call_t **call_out);

/* Shorthands for send() with the client's defaults and no extra header. */
int bus_http_client_get(bus_http_client_t *c, const char *url, bus_http_response_cb cb, void *data,
                        bus_http_call_t **call_out);
int bus_http_client_post_json(bus_http_client_t *c, const char *url, const char *json,
                              bus_http_response_cb cb, void *data, bus_http_call_t **call_out);
int bus_http_client_post_form(bus_http_client_t *c, const char *url, const char *const *form,
                              bus_http_response_cb cb, void *data, bus_http_call_t **call_out);

/* Cancels a call in flight: its connection is dropped if the answer was
 * under way, and its callback will NOT run (the caller owns its data again
 * when this returns). Counted as outcome="cancelled". Returns 0, or
 * BUS_EINVALID when called from the call's own callback (nothing happens:
 * the call is already finished). The handle is invalid afterwards. */
int bus_http_call_cancel(bus_http_call_t *call);

/* --- Reading a response (inside the callback) --- */

/* The value of the first header of that name, case-insensitive
 * ("retry-after" finds "Retry-After"); NULL when absent. */
const char *bus_http_response_header(const bus_http_response_t *r, const char *name);
/* That header as a decimal integer (x-ratelimit-remaining). Errors:
 * BUS_ENOT_FOUND (absent), BUS_EBAD_REQUEST (not an integer). */
int bus_http_response_header_int(const bus_http_response_t *r, const char *name, int64_t *out);
/* The response's Retry-After in milliseconds from now (wall clock); -1 when
 * the header is absent or unreadable. */
int64_t bus_http_response_retry_after_ms(const bus_http_response_t *r);

/* --- Pure helpers (any thread) --- */

/* Parses a Retry-After value: delay-seconds ("120"; a fraction such as
 * "1.5" is accepted too) or an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT",
 * and the obsolete RFC 850 and asctime forms) compared with now_unix_ms
 * (milliseconds since the epoch). *out_ms gets the delay, 0 for a date in
 * the past, at most 10^12 (a value that large is clamped). Surrounding
 * whitespace is ignored. Errors: BUS_EBAD_REQUEST (NULL, empty, negative,
 * or neither form). */
int bus_http_retry_after_ms(const char *value, int64_t now_unix_ms, int64_t *out_ms);

/* application/x-www-form-urlencoded encoding of name, value, ..., NULL:
 * "text=a+b%26c&chat_id=42" (unreserved A-Z a-z 0-9 - . _ ~ kept, space as
 * '+', every other byte %XX). Returns a malloc'd NUL-terminated string the
 * caller frees ("" for an empty list), *len (if not NULL) its length; NULL
 * when out of memory or when the list has a name without a value. */
char *bus_http_form_encode(const char *const *fields, size_t *len);

#endif
