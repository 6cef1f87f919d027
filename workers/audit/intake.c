/* Every event of bus.events, into the trail.
 *
 * bus-audit consumes the queue events.audit, bound to bus.events with "#":
 * every event published on the platform, whether or not any domain
 * subscribed to its type. Each becomes one record (record id "e:<event
 * id>", so a redelivery after a crash adds nothing):
 *   actor    data.actor, else data.by, else the event's source
 *   type     the event type;  subject  the event's subject ("" if none)
 *   outcome  "published"; detail {source, event_time, data_sha256 (of
 *            the data's canonical form, chain.c)}
 * A message that is not a CloudEvent is recorded too: type its routing key,
 * outcome "malformed", detail {reason, body_sha256}, id "m:<body_sha256>".
 * The event is acked once its record is committed (trail.c).
 *
 * Each process also reads the grant events (role.*) on a queue of its own
 * (server-named, exclusive) to drop the RBAC cache entries they concern
 * (rbac.c): a shared queue would tell only one process.
 */
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>

#include "audit.h"
#include "bus/log.h"
#include "bus/topology.h"

typedef struct {
    void (*done)(int status, const char *why, void *data);
    void *data;
} intake_t;

static void on_recorded(int status, int64_t seq, void *data) {
    (void)seq;
    intake_t *in = data;
    if (status == 0 || status == BUS_ECONFLICT)
        in->done(0, "", in->data);
    else
        in->done(BUS_EUNAVAILABLE, "the audit record could not be stored", in->data);
    free(in);
}

void au_intake_envelope(au_state_t *st, const bus_envelope_t *env, void (*done)(int status, const char *why, void *data), void *data) {
    intake_t *in = malloc(sizeof *in);
    if (!in) {
        done(BUS_EINTERNAL, "out of memory", data);
        return;
    }
    in->done = done;
    in->data = data;
    const char *actor = au_str(env->data, "actor");
    if (!*actor) actor = au_str(env->data, "by");
    if (!*actor) actor = env->source;
    cJSON *detail = cJSON_CreateObject();
    cJSON_AddStringToObject(detail, "source", env->source);
    cJSON_AddStringToObject(detail, "event_time", env->time ? env->time : "");
    char h[65];
    size_t clen = 0;
    char *canon = au_canonical(env->data, &clen);
    au_sha256_hex(canon ? canon : "", canon ? clen : 0, h);
    free(canon);
    cJSON_AddStringToObject(detail, "data_sha256", h);
    char id[160];
    snprintf(id, sizeof id, "e:%s", env->id);
    cJSON *rec = au_record_new(NULL, actor, env->type, env->subject, env->correlationid, "published", id, detail);
    au_trail_append(st->trail, id, rec, on_recorded, in);
}

/* ---- the consumers (bus/worker.h extra consumers) ------------------------------ */

static void delivery_done(int status, const char *why, void *data) {
    (void)why;
    if (status == 0) bus_delivery_ack(data);
    else bus_delivery_reject(data, 1); /* only when the worker stops: another process records it */
}

static int binary_mode(const bus_msg_t *m) {
    for (size_t i = 0; i < m->nheaders; i++)
        if (strcasecmp(m->headers[i].key, "ce-id") == 0 || strcasecmp(m->headers[i].key, "ce-specversion") == 0)
            return 1;
    return 0;
}

void au_on_event(bus_delivery_t *d) {
    au_state_t *st = au_state(bus_delivery_worker(d));
    const bus_msg_t *m = bus_delivery_msg(d);
    bus_envelope_t env = {0};
    char why[300];
    int rc = binary_mode(m) ? bus_envelope_parse_binary(m->headers, m->nheaders, m->body, m->len, &env, why, sizeof why)
                            : bus_envelope_parse(m->body, m->len, &env, why, sizeof why);
    if (rc == 0) {
        au_intake_envelope(st, &env, delivery_done, d);
        bus_envelope_clear(&env);
        return;
    }
    char h[65], id[80];
    au_sha256_hex(m->body, m->len, h);
    snprintf(id, sizeof id, "m:%s", h);
    cJSON *detail = cJSON_CreateObject();
    cJSON_AddStringToObject(detail, "reason", why);
    cJSON_AddStringToObject(detail, "body_sha256", h);
    intake_t *in = malloc(sizeof *in);
    if (!in) {
        cJSON_Delete(detail);
        bus_delivery_reject(d, 1);
        return;
    }
    in->done = delivery_done;
    in->data = d;
    bus_warn(NULL, "audit: a message on %s is not a CloudEvent (%s); recorded as malformed", m->routing_key, why);
    au_trail_append(st->trail, id,
                    au_record_new(NULL, "", m->routing_key, "", m->correlation_id, "malformed", id, detail),
                    on_recorded, in);
}

void au_on_grant_event(bus_delivery_t *d) {
    au_state_t *st = au_state(bus_delivery_worker(d));
    const bus_msg_t *m = bus_delivery_msg(d);
    bus_envelope_t env = {0};
    char why[300];
    if (bus_envelope_parse(m->body, m->len, &env, why, sizeof why) == 0)
        au_cache_invalidate(st->cache, strcmp(env.type, "role.defined") == 0 ? NULL : au_str(env.data, "user"));
    else
        au_cache_invalidate_all(st->cache); /* cannot tell whom it concerns */
    bus_envelope_clear(&env);
    bus_delivery_ack(d);
}
