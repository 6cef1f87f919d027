/* Firing one claimed item exactly once (the scheduler's design: the top of
 * scheduler.c).
 *
 * A bus_op job keyed by the item's id in the marker scope "events.fire":
 *   load   the item (fresh) and its event;
 *   decide the item is gone (an edit re-planned it away): nothing;
 *          its event is gone, disabled or re-planned (gen differs): the
 *          item is deleted, nothing published;
 *          else the event to publish by the lateness policy (rules.c):
 *          event.reminder / event.started / event.ended with late_ms, or
 *          event.reminder.missed when it is later than the window; a
 *          "started" of a recurring event also rolls the event forward to
 *          its next occurrence and plans that occurrence's items;
 *   commit the item marked fired at the version read, the roll-forward,
 *          and the marker with the outbox (the event, id chosen): one batch;
 *   then   the outbox is published with confirms, then the item deleted.
 * A process that dies after the commit leaves the item claimed; when the
 * lease ends another process claims it, finds the marker and publishes the
 * same event (same id) again, then deletes the item.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "events.h"

typedef struct {
    ev_state_t *st;
    char id[160];
    void (*done)(int status, void *data);
    void *data;
} fire_t;

static void copy_field(cJSON *to, const cJSON *from, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, field);
    cJSON_AddItemToObject(to, field, v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
}

static cJSON *payload(const cJSON *ev, const cJSON *item, int64_t late_ms) {
    cJSON *d = cJSON_CreateObject();
    char t[40];
    int64_t occ = ev_int(item, "occ_ms");
    cJSON_AddStringToObject(d, "event", ev_str(ev, "_id"));
    copy_field(d, ev, "alliance");
    copy_field(d, ev, "state");
    copy_field(d, ev, "kind");
    copy_field(d, ev, "name");
    ev_format_time(occ, t, sizeof t);
    cJSON_AddStringToObject(d, "starts_at", t);
    ev_format_time(occ + ev_int(ev, "duration_min") * 60000, t, sizeof t);
    cJSON_AddStringToObject(d, "ends_at", t);
    copy_field(d, ev, "language");
    copy_field(d, ev, "channel_hint");
    ev_format_time(ev_int(item, "at"), t, sizeof t);
    cJSON_AddStringToObject(d, "due_at", t);
    cJSON_AddNumberToObject(d, "late_ms", (double)(late_ms > 0 ? late_ms : 0));
    return d;
}

static void fire_decide(bus_op_t *op) {
    if (bus_op_marker_replayed(op)) return; /* fired before: the same event published again */
    const cJSON *item = EV(op)->item, *ev = EV(op)->event;
    ev_state_t *st = ev_state(bus_op_worker(op));
    if (!item) { /* re-planned away by an edit, or fired and deleted already */
        bus_op_reply(op, NULL);
        return;
    }
    const char *item_id = ev_str(item, "_id");
    if (ev_bool(item, "fired") || !ev || ev_int(ev, "gen") != ev_int(item, "gen") || !ev_bool(ev, "enabled")) {
        /* fired (its marker was forgotten), or its event no longer wants it */
        bus_op_plan_delete(op, EV_COLL_ITEMS, item_id, ev_version(item));
        bus_op_commit(op, NULL);
        return;
    }
    int what = ev_item_parse(ev_str(item, "what"));
    int64_t now = ev_now_ms(), late = now - ev_int(item, "at");
    cJSON *d = payload(ev, item, late);
    const char *type;
    if (ev_is_missed(st->late_policy, late, st->late_window_ms)) {
        type = "event.reminder.missed";
        cJSON_AddStringToObject(d, "what", ev_item_name(what));
        if (what == EV_ITEM_REMINDER)
            cJSON_AddNumberToObject(d, "minutes_left", (double)ev_int(item, "offset_min"));
        else
            cJSON_AddNullToObject(d, "minutes_left");
        cJSON_AddNumberToObject(d, "window_s", (double)(st->late_window_ms / 1000));
    } else if (what == EV_ITEM_REMINDER) {
        type = "event.reminder";
        cJSON_AddNumberToObject(d, "minutes_left", (double)ev_int(item, "offset_min"));
    } else {
        type = what == EV_ITEM_STARTED ? "event.started" : "event.ended";
    }
    bus_op_plan_event(op, type, ev_str(ev, "_id"), d);

    int rec = ev_recurrence_parse(ev_str(ev, "recurrence"));
    int64_t occ = ev_int(item, "occ_ms");
    if (what == EV_ITEM_STARTED && rec > EV_REC_NONE && ev_int(ev, "start_ms") == occ) {
        /* roll forward: the next occurrence is planned from this start, so
         * its items are the same whenever this firing runs */
        int64_t next = ev_next_start(occ, rec, (int)ev_int(ev, "anchor_day"));
        cJSON *patch = cJSON_CreateObject();
        cJSON_AddNumberToObject(patch, "start_ms", (double)next);
        cJSON_AddNumberToObject(patch, "occurrence", (double)(ev_int(ev, "occurrence") + 1));
        bus_op_plan_update(op, EV_COLL_EVENTS, ev_str(ev, "_id"), ev_version(ev), patch);
        ev_plan_occurrence(op, ev_str(ev, "_id"), ev, next, occ);
    }
    cJSON *mark = cJSON_CreateObject();
    cJSON_AddBoolToObject(mark, "fired", 1);
    bus_op_plan_update(op, EV_COLL_ITEMS, item_id, ev_version(item), mark);
    bus_op_commit(op, NULL);
}

static void fire_load(bus_op_t *op) {
    const cJSON *p = bus_op_params(op);
    bus_op_load_marker(op); /* one store round trip with the two documents */
    bus_op_load_doc(op, EV_COLL_ITEMS, ev_str(p, "_id"), &EV(op)->item);
    bus_op_load_doc(op, EV_COLL_EVENTS, ev_str(p, "event"), &EV(op)->event);
    bus_op_load_wait(op, fire_decide);
}

static void on_deleted(int status, void *data) {
    (void)data;
    if (status != 0 && status != BUS_ENOT_FOUND)
        bus_warn(NULL, "deleting a fired item failed: %s (its lease re-fires it with the same event id)",
                 bus_strerror(status));
}

static void on_job(int status, const char *message, void *data) {
    fire_t *f = data;
    if (status == 0) {
        /* published and confirmed (or nothing to publish): the item is done */
        bus_store_delete(f->st->store, EV_COLL_ITEMS, f->id, BUS_STORE_ANY_VERSION, on_deleted, NULL);
    } else {
        bus_warn(f->id, "firing %s failed: %s %s (fired again when its lease ends)", f->id, bus_err_name(status),
                 message);
    }
    f->done(status, f->data);
    free(f);
}

void ev_fire(ev_state_t *st, const cJSON *item, void (*done)(int status, void *data), void *data) {
    fire_t *f = calloc(1, sizeof *f);
    const char *id = ev_str(item, "_id");
    bus_op_t *op = f ? bus_op_new_job(st->engine, id, id, item, fire_load, on_job, f) : NULL;
    if (!op) {
        free(f);
        bus_error(id, "firing %s: out of memory (fired again when its lease ends)", id);
        done(BUS_EINTERNAL, data);
        return;
    }
    f->st = st;
    snprintf(f->id, sizeof f->id, "%s", id);
    f->done = done;
    f->data = data;
    bus_op_start(op, 1);
}
