/* Documents of the events domain.
 *
 * "game_events"  id = a UUID. {scope, alliance, state, kind, name, start_ms,
 *                anchor_day, duration_min, recurrence, reminders: [minutes],
 *                language, channel_hint, enabled, gen, occurrence,
 *                created_by, updated_by, created_at, updated_at}
 *                scope: "alliance:<id>" or "state:<n>" (list and upcoming
 *                read by it, sorted by start_ms). start_ms: the start of the
 *                occurrence being planned (UTC ms); it moves to the next
 *                occurrence when the current one starts. gen: the plan's
 *                generation, bumped by every update/toggle; items of an
 *                older gen are dropped when they come due.
 * "reminders"    the due-time index: one document per item (reminder,
 *                started, ended) of a planned occurrence, id = ev_item_id.
 *                {event, gen, what, offset_min, occ_ms, at, due_at, claimed_by,
 *                fired}. at: when it is due; due_at: when a process should
 *                next look at it (= at while pending, the lease's end once
 *                claimed). fired: true once its firing committed (its
 *                marker holds the events to publish); the firing deletes it
 *                after the publish is confirmed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "events.h"

int ev_store_declare(bus_store_t *s, char *err, size_t errlen) {
    static const char *const e_idx[] = {"scope,start_ms", "alliance", "created_by", "updated_by", NULL};
    static const char *const i_idx[] = {"due_at", "event", NULL};
    int rc = bus_store_declare(s, EV_COLL_EVENTS, e_idx, NULL, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, EV_COLL_ITEMS, i_idx, NULL, err, errlen);
    return rc;
}

const char *ev_str(const cJSON *doc, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsString(v) ? v->valuestring : "";
}

int64_t ev_int(const cJSON *doc, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

int ev_bool(const cJSON *doc, const char *field) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, field));
}

int64_t ev_version(const cJSON *doc) { return ev_int(doc, "_v"); }

static void copy_field(cJSON *to, const cJSON *from, const char *field, const char *as) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, field);
    cJSON_AddItemToObject(to, as ? as : field, v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
}

cJSON *ev_event_view(const cJSON *doc) {
    cJSON *o = cJSON_CreateObject();
    copy_field(o, doc, "_id", "id");
    copy_field(o, doc, "alliance", NULL);
    copy_field(o, doc, "state", NULL);
    copy_field(o, doc, "kind", NULL);
    copy_field(o, doc, "name", NULL);
    char t[40];
    int64_t start = ev_int(doc, "start_ms");
    ev_format_time(start, t, sizeof t);
    cJSON_AddStringToObject(o, "starts_at", t);
    ev_format_time(start + ev_int(doc, "duration_min") * 60000, t, sizeof t);
    cJSON_AddStringToObject(o, "ends_at", t);
    static const char *const f[] = {"duration_min", "recurrence", "reminders", "language", "channel_hint",
                                    "enabled",      "occurrence", "created_by", "created_at", "updated_at"};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) copy_field(o, doc, f[i], NULL);
    return o;
}

int ev_plan_occurrence(bus_op_t *op, const char *event_id, const cJSON *doc, int64_t start_ms, int64_t from_ms) {
    int offsets[EV_MAX_REMINDERS], n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(doc, "reminders")) {
        if (n < EV_MAX_REMINDERS && cJSON_IsNumber(r)) offsets[n++] = (int)r->valuedouble;
    }
    ev_item_t items[EV_MAX_ITEMS];
    int64_t gen = ev_int(doc, "gen");
    int k = ev_plan_items(start_ms, (int)ev_int(doc, "duration_min"), offsets, n, from_ms, items);
    for (int i = 0; i < k; i++) {
        char id[160];
        ev_item_id(event_id, gen, start_ms, &items[i], id, sizeof id);
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "event", event_id);
        cJSON_AddNumberToObject(d, "gen", (double)gen);
        cJSON_AddStringToObject(d, "what", ev_item_name(items[i].what));
        cJSON_AddNumberToObject(d, "offset_min", items[i].offset_min);
        cJSON_AddNumberToObject(d, "occ_ms", (double)start_ms);
        cJSON_AddNumberToObject(d, "at", (double)items[i].at_ms);
        cJSON_AddNumberToObject(d, "due_at", (double)items[i].at_ms);
        bus_op_plan_insert(op, EV_COLL_ITEMS, id, d);
        if (EV(op)->min_due == 0 || items[i].at_ms < EV(op)->min_due) EV(op)->min_due = items[i].at_ms;
    }
    return k;
}

void ev_plan_drop_pending(bus_op_t *op) {
    const cJSON *d;
    cJSON_ArrayForEach(d, EV(op)->pending) {
        if (ev_bool(d, "fired")) continue; /* its firing publishes and deletes it */
        bus_op_plan_delete(op, EV_COLL_ITEMS, ev_str(d, "_id"), ev_version(d));
    }
}
