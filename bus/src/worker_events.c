/* The worker's event side: decode a CloudEvent, dispatch it by type, and
 * finish it: ack, retry later through retry.<s>, or dead-letter to dead.<s>
 * with the reason. See bus/worker.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/topology.h"
#include "schema_hook.h"
#include "worker_internal.h"

struct bus_event {
    bus_worker_t *w;
    bus_msg_t *msg;
    bus_envelope_t env;
    int attempt;
};

const bus_envelope_t *bus_event_envelope(const bus_event_t *ev) { return &ev->env; }
int bus_event_attempt(const bus_event_t *ev) { return ev->attempt; }
bus_worker_t *bus_event_worker(const bus_event_t *ev) { return ev->w; }

int bus_topic_matches(const char *pattern, const char *key) {
    /* recursive on words; patterns are short */
    if (!*pattern) return !*key;
    const char *pend = strchr(pattern, '.');
    size_t plen = pend ? (size_t)(pend - pattern) : strlen(pattern);
    if (plen == 1 && pattern[0] == '#') {
        const char *rest = pend ? pend + 1 : "";
        if (!pend) return 1;
        for (const char *k = key;; ) {
            if (bus_topic_matches(rest, k)) return 1;
            const char *dot = strchr(k, '.');
            if (!dot) return 0;
            k = dot + 1;
        }
    }
    if (!*key) return 0;
    const char *kend = strchr(key, '.');
    size_t klen = kend ? (size_t)(kend - key) : strlen(key);
    int word_ok = (plen == 1 && pattern[0] == '*') || (plen == klen && memcmp(pattern, key, plen) == 0);
    if (!word_ok) return 0;
    if (!pend && !kend) return 1;
    if (!pend) return 0;
    if (!kend) return bus_topic_matches(pend + 1, "") ;
    return bus_topic_matches(pend + 1, kend + 1);
}

typedef struct {
    bus_worker_t *w;
    bus_msg_t *msg;
    int dead;
} forward_t;

static void on_forward_confirmed(int status, void *data) {
    forward_t *f = data;
    bus_worker_t *w = f->w;
    if (status == 0) {
        bus_msg_ack(f->msg);
        bus_counter_inc(f->dead ? w->m_dead : w->m_retried, 1);
    } else {
        bus_msg_reject(f->msg, 1); /* try again: nothing is dropped */
        bus_counter_inc(w->m_nacked, 1);
    }
    free(f);
    bus__worker_work_done(w);
}

/* Republishes msg to a queue of ours with extra headers; acks it once confirmed. */
static void forward(bus_worker_t *w, bus_msg_t *msg, const char *queue, const bus_header_t *extra, size_t nextra,
                    int attempt, const char *expiration, int dead) {
    bus_header_t headers[32];
    size_t n = 0;
    for (size_t i = 0; i < msg->nheaders && n + nextra < 32; i++) {
        if (strcmp(msg->headers[i].key, BUS_HDR_ATTEMPT) == 0) continue;
        if (dead && strncmp(msg->headers[i].key, "x-bus-dead-", 11) == 0) continue;
        headers[n++] = msg->headers[i];
    }
    for (size_t i = 0; i < nextra; i++) headers[n++] = extra[i];
    forward_t *f = malloc(sizeof *f);
    if (!f) {
        bus_msg_reject(msg, 1);
        bus__worker_work_done(w);
        return;
    }
    *f = (forward_t){w, msg, dead};
    bus_publish_t p = {
        .exchange = "",
        .routing_key = queue,
        .body = msg->body,
        .len = msg->len,
        .content_type = *msg->content_type ? msg->content_type : NULL,
        .message_id = *msg->message_id ? msg->message_id : NULL,
        .correlation_id = *msg->correlation_id ? msg->correlation_id : NULL,
        .type = *msg->type ? msg->type : NULL,
        .expiration_ms = expiration,
        .persistent = 1,
        .headers = headers,
        .nheaders = n,
        .int_header_key = BUS_HDR_ATTEMPT,
        .int_header_value = attempt,
    };
    if (bus_conn_publish(w->conn, &p, on_forward_confirmed, f) != 0) {
        free(f);
        bus_msg_free(msg); /* connection gone: the broker redelivers it */
        bus__worker_work_done(w);
    }
}

void bus__worker_reject_oversized(bus_worker_t *w, bus_msg_t *msg, const char *queue, int dlx) {
    const char *id = *msg->message_id ? msg->message_id : bus_msg_header(msg, "ce-id");
    bus_warn(*msg->correlation_id ? msg->correlation_id : NULL,
             "dead-lettered %s message %s (type %s) from %s: payload_too_large: %zu bytes, larger than %d; rejected "
             "for the broker to move to %s%s",
             msg->routing_key, id ? id : "(no id)", *msg->type ? msg->type : "-", queue, msg->len,
             BUS_ENVELOPE_MAX_BYTES, w->q_dead, dlx ? "" : " (queue without dead-letter arguments: see README)");
    bus_counter_inc(w->m_oversized, 1);
    bus_counter_inc(w->m_dead, 1);
    bus_msg_reject(msg, 0);
    bus__worker_work_done(w);
}

void bus__worker_dead_letter(bus_worker_t *w, bus_msg_t *msg, const char *reason) {
    const char *attempt_s = bus_msg_header(msg, BUS_HDR_ATTEMPT);
    int attempt = attempt_s ? atoi(attempt_s) : 1;
    const char *queue = msg->routing_key;
    bus_header_t extra[3] = {
        {BUS_HDR_DEAD_REASON, strlen(BUS_HDR_DEAD_REASON), reason, strlen(reason)},
        {BUS_HDR_DEAD_QUEUE, strlen(BUS_HDR_DEAD_QUEUE), w->q_events, strlen(w->q_events)},
        {BUS_HDR_ROUTING_KEY, strlen(BUS_HDR_ROUTING_KEY), queue, strlen(queue)},
    };
    /* an RPC request: through bus.rpc ("<s>.<method>") or straight to rpc.<s>
     * (an event type may start with the service's name: the exchange tells) */
    if (strcmp(msg->exchange, BUS_EXCHANGE_RPC) == 0 || strcmp(msg->routing_key, w->q_rpc) == 0) {
        extra[1].value = w->q_rpc;
        extra[1].value_len = strlen(w->q_rpc);
    }
    /* the id to find it by (busctl dead show): the AMQP message_id, else the
     * CloudEvent id of the body (a plain client may set no message_id) */
    char id[128];
    snprintf(id, sizeof id, "%s", msg->message_id);
    if (!*id && msg->len && msg->len <= (1u << 20) && msg->body[0] == '{') { /* not a huge one */
        cJSON *doc = cJSON_ParseWithLength(msg->body, msg->len);
        const char *ce_id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "id"));
        snprintf(id, sizeof id, "%s", ce_id ? ce_id : "");
        cJSON_Delete(doc);
    }
    bus_warn(*msg->correlation_id ? msg->correlation_id : NULL, "dead-lettered %s message %s (%zu bytes): %s",
             msg->routing_key, *id ? id : "(no id)", msg->len, reason);
    forward(w, msg, w->q_dead, extra, 3, attempt < 1 ? 1 : attempt, NULL, 1);
}

static int retryable(int status) {
    return status == BUS_EUNAVAILABLE || status == BUS_ETIMEOUT || status == BUS_EINTERNAL ||
           status == BUS_ERATE_LIMITED;
}

void bus_event_done(bus_event_t *ev, int status, const char *reason) {
    bus_worker_t *w = ev->w;
    bus_msg_t *msg = ev->msg;
    int attempt = ev->attempt;
    char why[512];
    snprintf(why, sizeof why, "%s: %s", bus_err_name(status), reason && *reason ? reason : bus_strerror(status));
    bus_envelope_clear(&ev->env);
    free(ev);
    if (status == 0) {
        bus_msg_ack(msg);
        bus_counter_inc(w->m_acked, 1);
        bus__worker_work_done(w);
        return;
    }
    if (retryable(status) && attempt < w->cfg.max_attempts) {
        /* delay doubles with each attempt, capped at an hour */
        long long delay = (long long)w->cfg.retry_delay_ms << (attempt - 1 < 20 ? attempt - 1 : 20);
        if (delay > 3600000) delay = 3600000;
        char expiration[24];
        snprintf(expiration, sizeof expiration, "%lld", delay);
        bus_info(*msg->correlation_id ? msg->correlation_id : NULL, "event %s attempt %d failed (%s); retry in %lld ms",
                 msg->message_id, attempt, why, delay);
        forward(w, msg, w->q_retry, NULL, 0, attempt + 1, expiration, 0);
        return;
    }
    if (retryable(status)) {
        char dead[600];
        snprintf(dead, sizeof dead, "gave up after %d attempts: %s", attempt, why);
        bus__worker_dead_letter(w, msg, dead);
        return;
    }
    bus__worker_dead_letter(w, msg, why);
}

static int is_binary_mode(const bus_msg_t *m) {
    for (size_t i = 0; i < m->nheaders; i++)
        if (strcasecmp(m->headers[i].key, "ce-id") == 0 || strcasecmp(m->headers[i].key, "ce-specversion") == 0)
            return 1;
    return 0;
}

void bus__worker_on_event(bus_msg_t *msg, void *data) {
    bus_worker_t *w = data;
    bus__worker_work_started(w);
    bus_counter_inc(w->m_consumed, 1);
    char why[1024];
    if (msg->len > BUS_ENVELOPE_MAX_BYTES) {
        bus__worker_reject_oversized(w, msg, w->q_events, w->events_dlx);
        return;
    }
    bus_event_t *ev = calloc(1, sizeof *ev);
    if (!ev) {
        bus_msg_reject(msg, 1);
        bus__worker_work_done(w);
        return;
    }
    ev->w = w;
    ev->msg = msg;
    const char *attempt = bus_msg_header(msg, BUS_HDR_ATTEMPT);
    ev->attempt = attempt && atoi(attempt) > 0 ? atoi(attempt) : 1;
    char reason[512];
    int rc = is_binary_mode(msg)
                 ? bus_envelope_parse_binary(msg->headers, msg->nheaders, msg->body, msg->len, &ev->env, reason,
                                             sizeof reason)
                 : bus_envelope_parse(msg->body, msg->len, &ev->env, reason, sizeof reason);
    if (rc != 0) {
        free(ev);
        snprintf(why, sizeof why, "bad_request: not a CloudEvent: %s", reason);
        bus__worker_dead_letter(w, msg, why);
        return;
    }
    char invalid[900];
    if (bus__schema_check_event(w->schemas, ev->env.type, ev->env.data, "/data", invalid, sizeof invalid) != 0) {
        snprintf(why, sizeof why, "invalid: %s", invalid);
        bus_envelope_clear(&ev->env);
        free(ev);
        bus__worker_dead_letter(w, msg, why);
        return;
    }
    for (const bus_subscription_t *s = w->def->subscriptions; s && s->type; s++) {
        if (bus_topic_matches(s->type, ev->env.type)) {
            s->fn(ev);
            return;
        }
    }
    snprintf(why, sizeof why, "not_found: no handler for event type %s", ev->env.type);
    bus_envelope_clear(&ev->env);
    free(ev);
    bus__worker_dead_letter(w, msg, why);
}
