/* A programmable HTTP server for tests of code that calls outside services
 * (bus/http_client.h): libbus's own server (bus/http.h) on a loop of its
 * own, in a thread of the test process, on 127.0.0.1 and a free port.
 *
 *   bt_fake_http_t *f = bt_fake_http_start();
 *   bt_fake_reply_t slow = {.delay_ms = 500, .body = "{\"ok\":true}"};
 *   bt_fake_http_route(f, "GET", "/slow", &slow, 0);
 *   char url[128];
 *   bt_fake_http_url(f, "/slow", url, sizeof url);   // http://127.0.0.1:PORT/slow
 *   ... the code under test calls url ...
 *   CHECK_INT(bt_fake_http_count(f), 1);
 *   CHECK_STR(bt_fake_http_request(f, 0)->method, "GET");
 *   bt_fake_http_stop(f);
 *
 * What a reply can do (bt_fake_reply_t): answer any status with headers and
 * a body (given, or generated of any size, with Content-Length or chunked),
 * after a delay; close the connection without answering; send the head and
 * half the body, then close; never answer (until the client goes away).
 *
 * Choosing the reply of a request: the most recently added route whose
 * method and path prefix match (a route added with times > 0 is used that
 * many times, then skipped); else the handler (bt_fake_http_set_handler),
 * which builds the fakes of the game API, Discord and Telegram; else 200
 * {"ok":true}.
 *
 * Every request is recorded (method, target, headers, body, peer) before it
 * is answered, so once the client has its answer the record is there.
 *
 * Threading: the bt_fake_http_* functions are called from the test's thread
 * (any thread); the handler runs on the fake's thread. Records returned by
 * bt_fake_http_request() stay valid, unchanged, until bt_fake_http_stop().
 * Everything a route or a handler's reply points to is copied.
 */
#ifndef BUS_TEST_FAKE_HTTP_H
#define BUS_TEST_FAKE_HTTP_H

#include <stddef.h>

typedef struct bt_fake_http bt_fake_http_t;

typedef enum {
    BT_FAKE_ANSWER = 0, /* answer after delay_ms */
    BT_FAKE_DROP,       /* after delay_ms, close the connection without a byte of answer */
    BT_FAKE_PARTIAL,    /* after delay_ms, status, headers and half the body (chunked), then close */
    BT_FAKE_HANG,       /* never answer; the request is released when the client goes away */
} bt_fake_action_t;

#define BT_FAKE_MAX_HEADERS 8

typedef struct {
    bt_fake_action_t action;
    int status;               /* [200] */
    const char *content_type; /* [application/json] */
    const char *body;         /* [{"ok":true}] */
    size_t body_len;          /* 0: strlen(body) */
    size_t body_bytes;        /* > 0: instead of body, this many bytes of bt_fake_body_byte(i) */
    int chunked;              /* send the body with chunked transfer encoding (no Content-Length) */
    const char *headers[BT_FAKE_MAX_HEADERS]; /* "Name: value"; the first NULL ends the list */
    int delay_ms;
} bt_fake_reply_t;

typedef struct {
    char method[16];
    char *target; /* "/path?query" as received */
    char *path;   /* without the query */
    char peer[64];  /* "127.0.0.1:51234": one per client connection */
    size_t header_count;
    char **header_names, **header_values;
    char *body; /* NUL-terminated; body_len bytes */
    size_t body_len;
} bt_fake_request_t;

/* The i-th byte of a generated body (a repeating printable pattern). */
char bt_fake_body_byte(size_t i);

/* Starts the server (aborts the test when it cannot). */
bt_fake_http_t *bt_fake_http_start(void);
/* Stops the server (requests still held are dropped), joins its thread,
 * frees everything. */
void bt_fake_http_stop(bt_fake_http_t *f);

int bt_fake_http_port(const bt_fake_http_t *f);
/* Writes "http://127.0.0.1:PORT" + path to buf; returns buf. */
const char *bt_fake_http_url(const bt_fake_http_t *f, const char *path, char *buf, size_t cap);

/* Adds a route: method NULL matches any method, path_prefix NULL or "" any
 * path; times 0 = every time. */
void bt_fake_http_route(bt_fake_http_t *f, const char *method, const char *path_prefix, const bt_fake_reply_t *reply,
                        int times);
/* The reply for requests no route matched: fn fills *reply, which starts as
 * the default (200 {"ok":true}); what it points to only needs to live until
 * fn returns. Runs on the fake's thread. NULL restores the default. */
typedef void (*bt_fake_handler_fn)(const bt_fake_request_t *req, bt_fake_reply_t *reply, void *data);
void bt_fake_http_set_handler(bt_fake_http_t *f, bt_fake_handler_fn fn, void *data);

/* Requests received so far; the i-th of them (arrival order), NULL when out
 * of range. */
size_t bt_fake_http_count(bt_fake_http_t *f);
const bt_fake_request_t *bt_fake_http_request(bt_fake_http_t *f, size_t i);
/* Distinct client connections (peers) the recorded requests came on. */
size_t bt_fake_http_peers(bt_fake_http_t *f);
/* Requests received but not answered yet (delayed, hanging). */
size_t bt_fake_http_held(bt_fake_http_t *f);

/* A recorded request's header, case-insensitive; NULL when absent. */
const char *bt_fake_request_header(const bt_fake_request_t *r, const char *name);

#endif
