/* The audit trail at the edge (README.md "Tailing the audit trail"), both
 * under the API-key scope audit:read:
 *
 * GET /api/v1/audit?actor=&type=&subject=&since=&until=&limit=&cursor=
 *   A page of stored records: the RPC audit.query with those parameters,
 *   answered as the RPC route answers ({"success":true,"data":{"records":
 *   [...],"next_cursor":...}}).
 *
 * GET /api/v1/audit/stream[?from=first|last|next][&offset=N][&since=10m]
 *   Server-Sent Events: one event per record, `id: <offset>-<seq>` (the
 *   offset in the audit.log stream of the pack that holds the record, and
 *   the record's seq: bus/audit_stream.h), `event: audit`, `data:` the
 *   record as one JSON line. A client that reconnects with Last-Event-ID:
 *   O-S resumes at offset O after seq S (a bare offset O, the form before
 *   packs, at offset O+1). Default start: `next` (records from now on). A comment line
 *   ": keep-alive" every BUS_SSE_KEEPALIVE_MS keeps proxies from closing an
 *   idle stream. Each stream is a consumer of its own on the stream queue
 *   (prefetch of the edge's connection, manual acks): it takes nothing from
 *   anyone. A client that does not read is cut off once
 *   BUS_SSE_MAX_BACKLOG bytes wait for it (the HTTP server's stream
 *   backlog), never buffered without bound. Records are shown once each in
 *   seq order, as busctl tail shows them (a record the stream holds twice
 *   after a crash of bus-audit's streaming process is skipped).
 *
 * A stream ends when the client goes, the edge shuts down, or the broker
 * connection drops (the client reconnects with Last-Event-ID).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus/audit_stream.h"
#include "bus/error.h"
#include "bus/log.h"
#include "bus/topology.h"
#include "gateway.h"

/* ---- GET /api/v1/audit ---- */

static void on_query_reply(int status, const char *reply, size_t len, void *data) {
    gw_req_t *r = data;
    if (status != 0) {
        gw_fail(r, status == BUS_ETIMEOUT ? 504 : 503, "the audit service did not answer");
        return;
    }
    cJSON *doc = bus_json_parse(reply, len, BUS_JSON_MAX_DEPTH, NULL, 0);
    int http = 0;
    if (doc) {
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(doc, "success"),
                    *err = cJSON_GetObjectItemCaseSensitive(doc, "error");
        http = cJSON_IsTrue(ok) ? 200 : bus_err_status(bus_err_from_name(cJSON_IsString(err) ? err->valuestring : ""));
    }
    cJSON_Delete(doc);
    if (!http) {
        gw_fail(r, 500, "the audit service sent a reply that is not a platform reply");
        return;
    }
    gw_finish_spliced(r, http, reply, len);
}

void gw_audit_query(gw_req_t *r) {
    gw_t *gw = r->gw;
    const char *q = bus_http_query(r->http);
    cJSON *params = cJSON_CreateObject();
    static const char *const names[] = {"actor", "type", "subject", "since", "until", "cursor"};
    char v[1100];
    for (size_t i = 0; q && i < sizeof names / sizeof names[0]; i++)
        if (bus_http_query_param(q, names[i], v, sizeof v) == 0 && *v) cJSON_AddStringToObject(params, names[i], v);
    if (q && bus_http_query_param(q, "limit", v, sizeof v) == 0 && *v) {
        char *end = NULL;
        long n = strtol(v, &end, 10);
        if (*end || n < 1 || n > 1000) {
            cJSON_Delete(params);
            gw_fail(r, 400, "limit: expected a whole number from 1 to 1000");
            return;
        }
        cJSON_AddNumberToObject(params, "limit", (double)n);
    }
    char *body = cJSON_PrintUnformatted(params);
    cJSON_Delete(params);
    if (!body) {
        gw_fail(r, 500, "out of memory");
        return;
    }
    snprintf(r->service, sizeof r->service, "audit");
    snprintf(r->method, sizeof r->method, "query");
    bus_rpc_call_opts_t opts = {.timeout_ms = gw->cfg.rpc_timeout_ms, .correlation_id = r->request_id,
                                .caller = r->key_id[0] ? r->key_id : NULL};
    int rc = bus_rpc_call(gw->rpc, "audit", "query", body, strlen(body), &opts, on_query_reply, r);
    free(body);
    if (rc != 0) gw_fail_broker(r);
}

/* ---- GET /api/v1/audit/stream ---- */

typedef struct sse {
    gw_req_t *r;
    char tag[64];
    int consuming, ended;
    bus_audit_follow_t follow; /* which records to show (each seq once) */
    uv_timer_t keepalive;
    struct sse *next; /* the edge's open streams (gw->sse) */
} sse_t;

static void sse_closed(uv_handle_t *h) { free(h->data); }

/* Ends the stream once (client gone, write refused, shutdown, broker lost). */
static void sse_end(sse_t *s) {
    if (s->ended) return;
    s->ended = 1;
    gw_t *gw = s->r->gw;
    for (sse_t **pp = (sse_t **)&gw->sse; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    if (s->consuming && gw->conn) bus_conn_cancel(gw->conn, s->tag);
    s->consuming = 0;
    uv_timer_stop(&s->keepalive);
    gw_stream_end(s->r);
    s->r = NULL;
    uv_close((uv_handle_t *)&s->keepalive, sse_closed);
}

static int sse_write(sse_t *s, const char *text, size_t len) {
    if (bus_http_stream_write(s->r->http, text, len) != 0) {
        sse_end(s); /* gone, or too slow: cut off */
        return -1;
    }
    return 0;
}

/* One write per stream message: the SSE events of the records it holds
 * that this stream shows. */
static void on_record(bus_msg_t *m, void *data) {
    sse_t *s = data;
    if (s->ended) {
        bus_msg_ack(m);
        return;
    }
    cJSON *recs = bus_audit_stream_records(m->body, m->len);
    const char *off = bus_msg_header(m, "x-stream-offset");
    char *out = NULL;
    size_t len = 0, cap = 0;
    const cJSON *rec;
    cJSON_ArrayForEach(rec, recs) {
        if (!bus_audit_follow_show(&s->follow, rec)) continue;
        char *line = cJSON_PrintUnformatted(rec);
        size_t ll = line ? strlen(line) : 0;
        if (line && len + ll + 128 > cap) {
            size_t ncap = (len + ll + 128) * 2;
            char *n = realloc(out, ncap);
            if (n) {
                out = n;
                cap = ncap;
            }
        }
        if (line && len + ll + 128 <= cap) {
            char id[48];
            bus_audit_event_id(id, sizeof id, off ? strtoll(off, NULL, 10) : 0, s->follow.next_seq - 1);
            len += (size_t)snprintf(out + len, cap - len, "id: %s\nevent: audit\ndata: ", id);
            memcpy(out + len, line, ll);
            memcpy(out + len + ll, "\n\n", 2);
            len += ll + 2;
        }
        free(line);
    }
    if (len) sse_write(s, out, len);
    free(out);
    cJSON_Delete(recs);
    bus_msg_ack(m);
}

static void on_keepalive(uv_timer_t *t) {
    sse_t *s = t->data;
    sse_write(s, ": keep-alive\n\n", 14);
}

static void on_client_gone(bus_http_req_t *req, void *data) {
    (void)req;
    sse_end(data);
}

/* "10m", "2h", "30s", "1d" or an RFC 3339 time -> epoch seconds; -1 when neither. */
static int64_t since_seconds(const char *s) {
    int64_t ms;
    if (bus_rfc3339_parse(s, &ms) == 0) return ms / 1000;
    char *end = NULL;
    double n = strtod(s, &end);
    if (end == s || n < 0) return -1;
    double mult = !strcmp(end, "s") ? 1 : !strcmp(end, "m") ? 60 : !strcmp(end, "h") ? 3600 : !strcmp(end, "d") ? 86400 : 0;
    return mult > 0 ? (int64_t)time(NULL) - (int64_t)(n * mult) : -1;
}

void gw_audit_stream(gw_req_t *r) {
    gw_t *gw = r->gw;
    const char *q = bus_http_query(r->http);
    const char *last = bus_http_header(r->http, "Last-Event-ID");
    char from[32] = "", offset[32] = "", since[64] = "";
    if (q) {
        bus_http_query_param(q, "from", from, sizeof from);
        bus_http_query_param(q, "offset", offset, sizeof offset);
        bus_http_query_param(q, "since", since, sizeof since);
    }
    amqp_table_entry_t arg = {.key = amqp_cstring_bytes("x-stream-offset")};
    char *end = NULL;
    int64_t resume_after = 0; /* the last seq the client saw */
    if (last && *last) { /* a reconnect resumes after the last event it saw */
        int64_t at = 0;
        if (bus_audit_event_id_parse(last, &at, &resume_after) != 0) {
            gw_fail(r, 400, "Last-Event-ID: expected <stream offset>-<seq>, as the id: lines of this stream");
            return;
        }
        arg.value.kind = AMQP_FIELD_KIND_I64;
        arg.value.value.i64 = at; /* the pack again, from the record after resume_after */
    } else if (*offset) {
        long long n = strtoll(offset, &end, 10);
        if (*end || n < 0) {
            gw_fail(r, 400, "offset: expected a stream offset");
            return;
        }
        arg.value.kind = AMQP_FIELD_KIND_I64;
        arg.value.value.i64 = n;
    } else if (*since) {
        int64_t ts = since_seconds(since);
        if (ts < 0) {
            gw_fail(r, 400, "since: expected a duration (30s, 10m, 2h, 1d) or an RFC 3339 time");
            return;
        }
        arg.value.kind = AMQP_FIELD_KIND_TIMESTAMP;
        arg.value.value.u64 = (uint64_t)ts;
    } else {
        const char *f = *from ? from : "next";
        if (strcmp(f, "first") != 0 && strcmp(f, "last") != 0 && strcmp(f, "next") != 0) {
            gw_fail(r, 400, "from: expected first, last or next");
            return;
        }
        arg.value.kind = AMQP_FIELD_KIND_UTF8;
        arg.value.value.bytes = amqp_cstring_bytes(f);
    }
    if (!gw->conn || !bus_conn_is_up(gw->conn) || bus_conn_blocked(gw->conn)) {
        gw_fail_broker(r);
        return;
    }
    sse_t *s = calloc(1, sizeof *s);
    if (!s) {
        gw_fail(r, 500, "out of memory");
        return;
    }
    s->r = r;
    s->follow.next_seq = resume_after ? resume_after + 1 : 0;
    amqp_table_t args = {.num_entries = 1, .entries = &arg};
    if (bus_conn_consume(gw->conn, BUS_AUDIT_STREAM, 0, 0, args, on_record, s, s->tag, sizeof s->tag) != 0) {
        free(s);
        gw_fail(r, 503, "the audit stream cannot be read now (is bus-audit running?)");
        return;
    }
    s->consuming = 1;
    bus_http_add_header(r->http, "Cache-Control", "no-cache");
    bus_http_add_header(r->http, "X-Accel-Buffering", "no");
    gw_stream_start(r, 200, "text/event-stream");
    bus_http_req_on_close(r->http, on_client_gone, s);
    uv_timer_init(gw->loop, &s->keepalive);
    s->keepalive.data = s;
    uv_timer_start(&s->keepalive, on_keepalive, (uint64_t)gw->sse_keepalive_ms, (uint64_t)gw->sse_keepalive_ms);
    s->next = gw->sse;
    gw->sse = s;
    sse_write(s, ": audit.log\n\n", 13); /* the headers and a first byte go out now */
}

void gw_audit_streams_end(gw_t *gw) {
    while (gw->sse) sse_end(gw->sse);
}
