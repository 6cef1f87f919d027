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
 * The event is acked once its record is committed (trail.c).
 * Grant events (role.granted, role.revoked, role.defined) also drop the
 * RBAC cache entries they concern (rbac.c).
 */
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "bus/log.h"

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
    if (strncmp(env->type, "role.", 5) == 0)
        au_cache_invalidate(st->cache, strcmp(env->type, "role.defined") == 0 ? NULL : au_str(env->data, "user"));
    au_trail_append(st->trail, id, rec, on_recorded, in);
}
