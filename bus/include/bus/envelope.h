/* CloudEvents 1.0 envelopes (docs/ARCHITECTURE.md, "Wire contract": Envelope).
 *
 * Structured mode: the AMQP body is the whole event as JSON
 * (content type application/cloudevents+json). Binary mode: the body is the
 * plain `data` JSON and the attributes come as `ce-`-prefixed AMQP headers
 * (ce-id, ce-source, ce-type, ce-time, ce-subject, ce-correlationid, ...).
 *
 * Ownership: a bus_envelope_t owns every string and `data` it points at;
 * bus_envelope_clear() frees them and leaves the struct zeroed. Parse
 * functions fill a zeroed struct the caller provides and, on failure, leave it
 * cleared and write a one-line reason into err.
 */
#ifndef BUS_ENVELOPE_H
#define BUS_ENVELOPE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#define BUS_CE_CONTENT_TYPE "application/cloudevents+json"
#define BUS_ENVELOPE_MAX_BYTES (1024 * 1024) /* larger bodies are refused */
#define BUS_JSON_MAX_DEPTH 64

typedef struct bus_envelope {
    char *specversion;      /* "1.0" */
    char *id;               /* required, non-empty */
    char *source;           /* required, non-empty (URI-reference) */
    char *type;             /* required, non-empty; also the routing key */
    char *time;             /* RFC 3339; optional on input, always set by bus_envelope_init */
    char *datacontenttype;  /* default "application/json" */
    char *subject;          /* optional */
    char *dataschema;       /* optional */
    char *correlationid;    /* extension; optional */
    cJSON *data;            /* the payload; may be NULL (no data) */
} bus_envelope_t;

/* A key/value pair of AMQP headers, as the consumer hands them over (not owned). */
typedef struct {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} bus_header_t;

/* Fills `env` for a new event: fresh id, time = now, specversion 1.0,
 * datacontenttype application/json. `data` ownership moves into env (may be NULL).
 * Strings are copied; source/subject/correlationid may be NULL.
 * Returns 0 or BUS_EINTERNAL (out of memory). */
int bus_envelope_init(bus_envelope_t *env, const char *type, const char *source, const char *subject,
                      const char *correlationid, cJSON *data);

/* Parses a structured-mode event. Checks: JSON (depth <= BUS_JSON_MAX_DEPTH,
 * size <= BUS_ENVELOPE_MAX_BYTES), an object, specversion "1.0", non-empty
 * string id/source/type, time (if present) valid RFC 3339, every attribute a
 * string. Returns 0, or BUS_EBAD_REQUEST with the reason in err.
 * An attribute whose JSON value is null counts as absent; unknown extension
 * attributes are ignored; "data_base64" is refused (JSON payloads only);
 * datacontenttype defaults to "application/json"; `data` is moved into env
 * (NULL when the event has none). Reasons look like
 * "missing or empty attribute \"id\"", "attribute \"time\" must be a string",
 * "unsupported specversion \"0.3\" (expected \"1.0\")", "event must be a JSON object",
 * "event larger than 1048576 bytes", or bus_json_parse's messages. */
int bus_envelope_parse(const char *body, size_t len, bus_envelope_t *env, char *err, size_t errlen);

/* Parses a binary-mode event: attributes from the ce-* headers (case-insensitive
 * names), data = the body parsed as JSON (an empty body means no data).
 * Same checks as bus_envelope_parse. Header names: "ce-<attribute>" (or
 * "ce_<attribute>"); "content-type"/"content_type" (the AMQP content_type
 * property) give datacontenttype. A JSON content type (application/json,
 * text/json, *+json; the default) has its body parsed as JSON; any other
 * type gets the body as a JSON string. When the content type is
 * application/cloudevents+json and no ce-id header is present, the body is
 * parsed as a structured event instead. Duplicate attribute headers and
 * values containing NUL bytes are refused. Headers and body are only read
 * during the call. */
int bus_envelope_parse_binary(const bus_header_t *headers, size_t nheaders, const char *body, size_t len,
                              bus_envelope_t *env, char *err, size_t errlen);

/* Serialises to structured-mode JSON (unformatted). Returns a malloc'd,
 * NUL-terminated string (caller frees with free()), or NULL on out of memory.
 * *len (if not NULL) gets the length. */
char *bus_envelope_serialize(const bus_envelope_t *env, size_t *len);

/* Frees what env owns and zeroes it. Safe on a zeroed struct. */
void bus_envelope_clear(bus_envelope_t *env);

/* Writes a version 7 UUID (RFC 9562: 48 bits of Unix time in ms, then 74
 * random bits), 36 characters + NUL, lower-case hex: ids sort by the time
 * they were made, to the millisecond. Thread-safe and fork-safe (a child
 * never repeats its parent's ids); takes kernel randomness (getrandom) in
 * bulk per thread, so most calls make no syscall. */
void bus_uuid(char out[37]);

/* Writes the current UTC time as RFC 3339 with milliseconds
 * ("2026-11-23T09:15:05.123Z"), 24 characters + NUL. */
void bus_now_rfc3339(char out[32]);

/* Parses an RFC 3339 date-time ("...Z" or "...+02:00", optional fraction)
 * into milliseconds since the epoch. Returns 0 or -1 when invalid.
 * Accepts 'T'/'t', 'Z'/'z', +hh:mm/-hh:mm, a fraction of any length
 * (truncated to milliseconds) and a leap second :60 (counted as the next
 * second). Refuses impossible dates (Feb 30, month 13), hour > 23, minute > 59,
 * trailing characters. epoch_ms may be NULL (validation only). */
int bus_rfc3339_parse(const char *s, int64_t *epoch_ms);

/* Formats epoch milliseconds as RFC 3339 UTC with milliseconds (24 chars + NUL).
 * Instants outside years 0000..9999 are clamped to that range. */
void bus_rfc3339_format(int64_t epoch_ms, char out[32]);

/* Parses JSON with the platform's limits (length-bounded input, depth <= max_depth).
 * Returns the document (caller cJSON_Delete's it) or NULL, with a message
 * naming the byte offset where cJSON stopped (at or one past the offending
 * byte: "malformed JSON at byte 17") or the
 * depth in err ("JSON nested deeper than 64 levels"). Only JSON whitespace may
 * follow the value. body need not be NUL-terminated; it is only read during
 * the call. Depth is checked by a linear pre-scan before cJSON recurses.
 * Thread-safe (the offset does not use cJSON's global error pointer). The
 * size bound is the caller's: bus_envelope_parse refuses bodies larger than
 * BUS_ENVELOPE_MAX_BYTES before calling this. */
cJSON *bus_json_parse(const char *body, size_t len, int max_depth, char *err, size_t errlen);
/* bus_json_parse refuses a body that is not UTF-8 first: "not valid UTF-8 at
 * byte N". The offset of the first byte of s[0..len) that does not start a
 * well-formed UTF-8 sequence (RFC 3629: no overlongs, surrogates or code
 * points above U+10FFFF), or -1 when all of it is UTF-8. */
long bus_utf8_invalid_at(const char *s, size_t len);
/* The length (1-4) of the well-formed UTF-8 sequence at p (avail bytes
 * readable), 0 when p does not start one. */
size_t bus_utf8_seq_len(const unsigned char *p, size_t avail);

#endif
