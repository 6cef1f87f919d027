/* HTTP/1.1 server on libuv (llhttp parser): the gateway's edge and every
 * program's /metrics endpoint.
 *
 *   static void on_req(bus_http_req_t *req, void *data) {
 *       bus_http_add_header(req, "X-Request-Id", "abc");
 *       bus_http_respond(req, 200, "text/plain", "hello\n", 6);
 *   }
 *   bus_http_config_t cfg = {.addr = "127.0.0.1:8080", .on_request = on_req};
 *   bus_http_server_t *srv;
 *   if (bus_http_server_start(loop, &cfg, &srv) == 0) ...
 *   bus_http_server_close(srv, on_closed, NULL);   // graceful
 *
 * What the server does by itself: keep-alive (HTTP/1.1 default, HTTP/1.0
 * with "Connection: keep-alive"); pipelining (several requests of one
 * connection are handed to on_request at once, up to max_pipeline, and their
 * responses go out strictly in request order whatever order the handlers
 * answer in); chunked request bodies (delivered de-chunked); limits on
 * header bytes (431), body bytes (413, answered from Content-Length before
 * the body is read), a read timeout for requests that do not arrive in full
 * (408) and an idle keep-alive timeout (quiet close); "Expect: 100-continue";
 * errors it detects itself (400 malformed, 505 HTTP version) are answered
 * with the platform's JSON error body (bus/error.h) followed by a close.
 *
 * Threading: a server and its requests belong to the loop thread. Every
 * function here must be called on that thread. Answer from another thread by
 * handing the work back to the loop (uv_async_t).
 *
 * Ownership of a request (bus_http_req_t):
 * - The server creates it and passes it to on_request. From then on the
 *   handler owns one reference and MUST eventually finish it exactly once:
 *   either bus_http_respond() (or bus_http_respond_error()), or
 *   bus_http_respond_stream_start() ... bus_http_stream_end(). That call
 *   releases the handler's reference; the handler must not touch req after
 *   it (after stream_start, until stream_end).
 * - Every pointer the accessors return (method, path, query, headers, body,
 *   peer) points into req and stays valid until that finishing call.
 * - If the client goes away (disconnect, timeout, server shutdown) while the
 *   handler still holds req, req stays valid: the finishing call becomes a
 *   harmless no-op that just frees it (it returns BUS_EUNAVAILABLE), and the
 *   close callback set with bus_http_req_on_close() runs once.
 * - Data passed to respond/stream_write is copied; the caller keeps its
 *   buffers.
 */
#ifndef BUS_HTTP_H
#define BUS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct bus_http_server bus_http_server_t;
typedef struct bus_http_req bus_http_req_t;

/* One callback per complete request (headers and whole body received). */
typedef void (*bus_http_handler_fn)(bus_http_req_t *req, void *data);

/* Formats the body of an error response the server answers itself (and of
 * bus_http_respond_error()). `code` is the wire name of bus/error.h
 * ("bad_request"), `message` a human sentence. Write at most `cap` bytes to
 * `buf` and return the length; return 0 to use the default body
 *   {"success":false,"error":CODE,"message":MSG,"status_code":STATUS}
 * The hook may add headers with bus_http_add_header(req, ...) (e.g.
 * X-Request-Id). `req` may be a request whose head was only partly parsed:
 * its method/path may be "" and headers missing. Runs on the loop thread. */
typedef size_t (*bus_http_error_body_fn)(bus_http_req_t *req, int status, const char *code,
                                         const char *message, char *buf, size_t cap, void *data);

typedef struct {
    /* "127.0.0.1:8080", "0.0.0.0:8080", "[::1]:8080", "[::]:0" (0 = any port).
     * Copied. Required. */
    const char *addr;
    /* Set SO_REUSEPORT so that several processes (or servers) share the port. */
    int reuseport;
    bus_http_handler_fn on_request; /* required */
    void *data;                     /* passed to on_request and error_body */
    bus_http_error_body_fn error_body; /* optional */

    /* Limits; 0 means the default in brackets. */
    size_t max_header_bytes;    /* request line + headers [16384] -> 431 */
    size_t max_body_bytes;      /* de-chunked body [1048576] -> 413 */
    unsigned max_pipeline;      /* requests in flight per connection [32] */
    uint64_t read_timeout_ms;   /* first byte to last byte of a request [10000] -> 408 */
    uint64_t idle_timeout_ms;   /* keep-alive connection with nothing to do [60000] */
    uint64_t shutdown_timeout_ms; /* graceful close waits this long [10000] */
    size_t max_stream_backlog;  /* unsent stream bytes before a slow client is cut [4 MiB] */
    unsigned max_connections;   /* more are accepted and closed at once [0 = no limit] */
    int backlog;                /* listen(2) backlog [511] */
} bus_http_config_t;

/* Binds, listens and starts serving on `loop`. *out receives the server,
 * which lives until bus_http_server_close()'s callback has run.
 * Errors: BUS_EINVALID (bad address or missing on_request), BUS_EUNAVAILABLE
 * (socket/bind/listen failed, e.g. address in use), BUS_EINTERNAL (memory). */
int bus_http_server_start(uv_loop_t *loop, const bus_http_config_t *cfg, bus_http_server_t **out);

/* The bound port (useful with port 0). */
int bus_http_server_port(const bus_http_server_t *srv);

/* Number of open connections. */
size_t bus_http_server_connections(const bus_http_server_t *srv);

/* Graceful shutdown: stop accepting, close idle connections, drop partly
 * received requests, let dispatched requests finish (the last response of
 * each connection goes out with "Connection: close"), force-close whatever
 * remains after shutdown_timeout_ms (open streams included: their close
 * callbacks run), then call cb(data) once and free the server. Close
 * callbacks of requests on connections closed here may run inside this
 * call. Requests the handlers still hold stay valid (see above). Calling it
 * twice is a no-op. cb may be NULL. */
void bus_http_server_close(bus_http_server_t *srv, void (*cb)(void *data), void *data);

/* --- Request accessors (valid until the finishing call) --- */

const char *bus_http_method(const bus_http_req_t *req);  /* "GET" */
const char *bus_http_url(const bus_http_req_t *req);     /* raw target "/a%20b?x=1" */
const char *bus_http_path(const bus_http_req_t *req);    /* raw (not decoded) "/a%20b" */
const char *bus_http_query(const bus_http_req_t *req);   /* "x=1", NULL when no '?' */
/* First header of that name, case-insensitive; NULL when absent. Value
 * without surrounding whitespace. */
const char *bus_http_header(const bus_http_req_t *req, const char *name);
size_t bus_http_header_count(const bus_http_req_t *req);
/* The i-th header in arrival order. BUS_ENOT_FOUND when i is out of range. */
int bus_http_header_at(const bus_http_req_t *req, size_t i, const char **name, const char **value);
/* The de-chunked body and its length (NUL-terminated for convenience; the
 * terminator is not counted). Empty body: "" and 0. */
const char *bus_http_body(const bus_http_req_t *req, size_t *len);
const char *bus_http_peer(const bus_http_req_t *req); /* "127.0.0.1:51234", "[::1]:5" */
int bus_http_version_minor(const bus_http_req_t *req); /* 1 for HTTP/1.1, 0 for 1.0 */
/* 1 when the client is gone (or the server closed the connection). */
int bus_http_req_gone(const bus_http_req_t *req);

/* A user pointer carried by the request (NULL initially). */
void bus_http_req_set_data(bus_http_req_t *req, void *data);
void *bus_http_req_data(const bus_http_req_t *req);

/* cb(req, data) runs once if the connection closes before the handler's
 * finishing call (client gone, timeout, shutdown). req is still owned by the
 * handler: the callback (or later code) must still make the finishing call,
 * which then only frees req. */
void bus_http_req_on_close(bus_http_req_t *req, void (*cb)(bus_http_req_t *req, void *data),
                           void *data);

/* --- Answering --- */

/* Adds a response header; call before respond/stream_start. Name and value
 * are copied. Content-Length, Transfer-Encoding, Connection and Date are the
 * server's. Errors: BUS_EINVALID (CR, LF or ':' where not allowed, or after
 * the response started), BUS_EUNAVAILABLE (client gone; harmless). */
int bus_http_add_header(bus_http_req_t *req, const char *name, const char *value);

/* Sends a complete response and releases req (always, except when req was
 * already answered: then BUS_EINVALID and nothing happens). An invalid
 * status or content type still answers, with a bare 500, and returns
 * BUS_EINVALID.
 * content_type may be NULL (no Content-Type). body may be NULL when len is 0.
 * HEAD requests get the headers only. 1xx/204/304 carry no body.
 * Errors: BUS_EUNAVAILABLE (client gone: nothing sent, req freed),
 * BUS_EINVALID (status outside 100..599, or req already answered). */
int bus_http_respond(bus_http_req_t *req, int status, const char *content_type, const void *body,
                     size_t len);

/* Answers with the JSON error body (through the server's error_body hook):
 * {"success":false,"error":"<code for status>","message":...,"status_code":status}.
 * Same rules and errors as bus_http_respond(). */
int bus_http_respond_error(bus_http_req_t *req, int status, const char *message);

/* Streaming response (Server-Sent Events): headers now, data as it comes,
 * chunked transfer encoding (for HTTP/1.0 clients: raw bytes, then close).
 * The connection's read/idle timers do not apply while streaming.
 * stream_write errors: BUS_EUNAVAILABLE (client gone; the stream is dead, still
 * call stream_end), BUS_EINVALID (no stream started). A client that does not
 * read fast enough (more than max_stream_backlog unsent bytes) is
 * disconnected and gets BUS_EUNAVAILABLE. stream_end sends the last chunk and
 * releases req (always). */
int bus_http_respond_stream_start(bus_http_req_t *req, int status, const char *content_type);
int bus_http_stream_write(bus_http_req_t *req, const void *data, size_t len);
int bus_http_stream_end(bus_http_req_t *req);

/* --- Helpers (bus/src/http_util.c) --- */

/* "Not Found" for 404; "Unknown" for codes it does not know. Static. */
const char *bus_http_status_text(int status);
/* The wire code (bus/error.h) for an HTTP status: "not_found" for 404; other 4xx ->
 * "bad_request", other statuses -> "internal". Static. */
const char *bus_http_error_code(int status);
/* Writes the default JSON error body into buf (NUL-terminated when cap > 0,
 * truncated safely); returns its length (without the NUL). */
size_t bus_http_error_json(char *buf, size_t cap, int status, const char *code, const char *message);
/* Percent-decodes s[0..*len) in place ('+' to space when plus_is_space);
 * updates *len and NUL-terminates. BUS_EBAD_REQUEST on a bad %XX escape or
 * a decoded NUL byte. */
int bus_http_url_decode(char *s, size_t *len, int plus_is_space);
/* Looks up `name` in a query string "a=1&b=x%20y" and writes its decoded
 * value to buf (NUL-terminated). Errors: BUS_ENOT_FOUND, BUS_EINVALID (value
 * does not fit in cap), BUS_EBAD_REQUEST (bad escape). A key without '='
 * has the value "". */
int bus_http_query_param(const char *query, const char *name, char *buf, size_t cap);

/* --- Internal: for the fuzzer and unit tests only --- */

typedef struct bus__http_conn bus__http_conn_t;
/* A server that does not listen (cfg->addr ignored); close it with
 * bus_http_server_close() (callback runs on the next loop turn). */
int bus__http_server_unbound(uv_loop_t *loop, const bus_http_config_t *cfg, bus_http_server_t **out);
/* A connection without a socket: bytes fed with bus__http_conn_feed() run
 * through the same parsing and answering code as socket reads; what the
 * server would write is appended to an internal buffer (last 64 KiB kept)
 * and writes complete at once. */
bus__http_conn_t *bus__http_conn_fake(bus_http_server_t *srv);
void bus__http_conn_feed(bus__http_conn_t *c, const char *data, size_t len);
/* What was written so far (NUL-terminated), and whether the server has
 * closed the connection. */
const char *bus__http_conn_fake_output(bus__http_conn_t *c, size_t *len);
int bus__http_conn_fake_closed(bus__http_conn_t *c);
/* Closes (if needed) and frees the fake connection. */
void bus__http_conn_fake_free(bus__http_conn_t *c);

#endif
