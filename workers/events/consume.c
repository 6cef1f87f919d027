/* Events the events worker consumes. Both clean-ups are idempotent by
 * nature (deleting what is gone, clearing what is cleared), so they need no
 * marker: a redelivery finds less to do.
 *
 * alliance.dissolved {alliance, ...}: the alliance's scheduled events go,
 * with their pending items in the due-time index (an item whose event is
 * gone would be dropped when due anyway; deleting it keeps the index small).
 *
 * user.forgotten {user}: a user asked for their data to be deleted. The
 * events they created or last changed belong to their alliance or state,
 * not to them alone, so they stay; the user's id is removed from them
 * (created_by and updated_by become null).
 *
 * Store errors retry the event later (BUS_EUNAVAILABLE).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "events.h"

typedef struct sweep {
    bus_event_t *ev;
    ev_state_t *st;
    char value[160];   /* the alliance id or the user id */
    const char *field; /* "alliance", "created_by", "updated_by" */
    cJSON *docs;       /* the current page of events */
    int next;
    int pending;
    int err;
    int changed;
} sweep_t;

static void sweep_page(sweep_t *sw);
static void sweep_next(sweep_t *sw);

static void sweep_end(sweep_t *sw) {
    cJSON_Delete(sw->docs);
    if (sw->err)
        bus_event_done(sw->ev, BUS_EUNAVAILABLE, "store unavailable");
    else
        bus_event_done(sw->ev, 0, NULL);
    free(sw);
}

static int tolerable(int status) { return status == 0 || status == BUS_ENOT_FOUND || status == BUS_ECONFLICT; }

static void on_status(int status, void *data) {
    sweep_t *sw = data;
    if (!tolerable(status)) sw->err = 1;
    if (--sw->pending == 0) sweep_next(sw);
}

static void on_doc(int status, const cJSON *doc, void *data) {
    (void)doc;
    on_status(status, data);
}

static void on_items(int status, const cJSON *docs, const char *next_cursor, void *data) {
    (void)next_cursor;
    sweep_t *sw = data;
    const cJSON *ev = cJSON_GetArrayItem(sw->docs, sw->next - 1);
    sw->pending = 1; /* held while launching */
    if (status != 0) sw->err = 1;
    const cJSON *d, *list = status == 0 ? docs : NULL;
    cJSON_ArrayForEach(d, list) {
        if (bus_store_delete(sw->st->store, EV_COLL_ITEMS, ev_str(d, "_id"), BUS_STORE_ANY_VERSION, on_status, sw) == 0)
            sw->pending++;
        else
            sw->err = 1;
    }
    if (bus_store_delete(sw->st->store, EV_COLL_EVENTS, ev_str(ev, "_id"), BUS_STORE_ANY_VERSION, on_status, sw) == 0)
        sw->pending++;
    else
        sw->err = 1;
    on_status(0, sw);
}

/* One event of the page: deleted with its items, or the user cleared. */
static void sweep_next(sweep_t *sw) {
    if (sw->err) {
        sweep_end(sw);
        return;
    }
    const cJSON *ev = cJSON_GetArrayItem(sw->docs, sw->next);
    if (!ev) {
        /* a full page may have more behind it: the changed ones no longer match */
        if (cJSON_GetArraySize(sw->docs) == BUS_STORE_MAX_LIMIT) {
            sweep_page(sw);
            return;
        }
        if (strcmp(sw->field, "created_by") == 0) { /* then the events the user last changed */
            sw->field = "updated_by";
            sweep_page(sw);
            return;
        }
        sweep_end(sw);
        return;
    }
    sw->next++;
    sw->changed++;
    if (strcmp(sw->field, "alliance") == 0) {
        cJSON *where = cJSON_CreateObject();
        cJSON_AddStringToObject(where, "event", ev_str(ev, "_id"));
        bus_store_query_t q = {.where = where, .limit = BUS_STORE_MAX_LIMIT};
        int rc = bus_store_find(sw->st->store, EV_COLL_ITEMS, &q, on_items, sw);
        cJSON_Delete(where);
        if (rc != 0) {
            sw->err = 1;
            sweep_end(sw);
        }
        return;
    }
    cJSON *patch = cJSON_CreateObject();
    cJSON_AddNullToObject(patch, sw->field); /* null removes the field */
    sw->pending = 1;
    int rc = bus_store_update(sw->st->store, EV_COLL_EVENTS, ev_str(ev, "_id"), BUS_STORE_ANY_VERSION, patch, on_doc, sw);
    cJSON_Delete(patch);
    if (rc != 0) {
        sw->err = 1;
        sweep_end(sw);
    }
}

static void on_page(int status, const cJSON *docs, const char *next_cursor, void *data) {
    (void)next_cursor;
    sweep_t *sw = data;
    if (status != 0) {
        sw->err = 1;
        sweep_end(sw);
        return;
    }
    cJSON_Delete(sw->docs);
    sw->docs = cJSON_Duplicate(docs, 1);
    sw->next = 0;
    sweep_next(sw);
}

static void sweep_page(sweep_t *sw) {
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, sw->field, sw->value);
    bus_store_query_t q = {.where = where, .limit = BUS_STORE_MAX_LIMIT};
    int rc = bus_store_find(sw->st->store, EV_COLL_EVENTS, &q, on_page, sw);
    cJSON_Delete(where);
    if (rc != 0) {
        sw->err = 1;
        sweep_end(sw);
    }
}

static void sweep_start(bus_event_t *ev, const char *data_field, const char *field) {
    const bus_envelope_t *e = bus_event_envelope(ev);
    const char *value = ev_str(e->data, data_field);
    if (!*value) {
        bus_event_done(ev, BUS_EINVALID, "the event names no alliance or user");
        return;
    }
    sweep_t *sw = calloc(1, sizeof *sw);
    if (!sw) {
        bus_event_done(ev, BUS_EINTERNAL, "out of memory");
        return;
    }
    sw->ev = ev;
    sw->st = ev_state(bus_event_worker(ev));
    sw->field = field;
    snprintf(sw->value, sizeof sw->value, "%s", value);
    sweep_page(sw);
}

void ev_on_alliance_dissolved(bus_event_t *ev) { sweep_start(ev, "alliance", "alliance"); }
void ev_on_user_forgotten(bus_event_t *ev) { sweep_start(ev, "user", "created_by"); }
