/* Consumed events -> delivery records.
 *
 * For an event of one of our types (nt_topic_of) the worker:
 *   1. stores the event's data once (events/<event id>; already there on a
 *      redelivery: fine);
 *   2. finds the enabled subscriptions of the event's scope, page by page:
 *        event.reminder, event.started  alliance subscriptions of data.alliance
 *                                       and state subscriptions of data.state
 *        announcement.published         the subscriptions of data.scope/data.id
 *        alliance.*                     alliance subscriptions of data.alliance
 *        player.verified                state subscriptions of data.state
 *        giftcode.added                 every subscription (a gift code is
 *                                       for everyone)
 *      and keeps those whose topics include the event's;
 *   3. inserts one delivery per (event, subscription) with id
 *      "<event id>.<subscription id>", status pending. The insert of an
 *      existing id fails with conflict and is skipped: a redelivered event,
 *      or the same event handled by two processes, never makes a second
 *      delivery (nor a second message: only pending deliveries are sent);
 *   4. acks the event once every insert is done, and wakes the dispatcher.
 * A store failure retries the event (BUS_EUNAVAILABLE): steps 1-3 are
 * idempotent. A process killed midway leaves the event unacked; the broker
 * redelivers it and the inserts resume.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "notifications.h"

#define PAGE 500
#define MAX_INSERTS_IN_FLIGHT 64

typedef struct fanout {
    nt_state_t *st;
    bus_event_t *ev;
    const char *topic;
    cJSON *queries; /* array of where filters still to run */
    char *cursor;
    cJSON *todo;    /* subscription ids of the current page still to insert */
    int inflight;
    int status;     /* first failure */
    int page_last;  /* no next page of the current query */
    int created;
} fanout_t;

static void next_page(fanout_t *f);
static void pump(fanout_t *f);

static void finish(fanout_t *f) {
    nt_state_t *st = f->st;
    const bus_envelope_t *env = bus_event_envelope(f->ev);
    if (f->status != 0)
        bus_warn(env->correlationid, "fan-out of %s %s failed (%s); it will be retried", env->type, env->id,
                 bus_strerror(f->status));
    else if (f->created > 0)
        bus_debug(env->correlationid, "%s %s: %d deliveries", env->type, env->id, f->created);
    bus_event_done(f->ev, f->status == 0 ? 0 : BUS_EUNAVAILABLE, f->status == 0 ? NULL : "store unavailable");
    cJSON_Delete(f->queries);
    cJSON_Delete(f->todo);
    free(f->cursor);
    free(f);
    nt_dispatcher_wake(st);
}

static void on_inserted(int status, const cJSON *doc, void *data) {
    (void)doc;
    fanout_t *f = data;
    f->inflight--;
    if (status == 0) f->created++;
    else if (status != BUS_ECONFLICT && f->status == 0) f->status = status; /* conflict: recorded before */
    pump(f);
}

/* Launches inserts up to the bound; when the page is done, the next page. */
static void pump(fanout_t *f) {
    const bus_envelope_t *env = bus_event_envelope(f->ev);
    while (f->status == 0 && f->inflight < MAX_INSERTS_IN_FLIGHT && cJSON_GetArraySize(f->todo) > 0) {
        cJSON *sub = cJSON_DetachItemFromArray(f->todo, 0);
        char id[160], now[32];
        snprintf(id, sizeof id, "%s.%s", env->id, sub->valuestring);
        bus_now_rfc3339(now);
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "event_id", env->id);
        cJSON_AddStringToObject(d, "subscription", sub->valuestring);
        cJSON_AddStringToObject(d, "type", env->type);
        cJSON_AddStringToObject(d, "correlation_id", env->correlationid ? env->correlationid : "");
        cJSON_AddStringToObject(d, "status", "pending");
        cJSON_AddNumberToObject(d, "attempts", 0);
        cJSON_AddStringToObject(d, "last_error", "");
        cJSON_AddNumberToObject(d, "next_at", (double)nt_now_ms());
        cJSON_AddStringToObject(d, "created_at", now);
        cJSON_AddStringToObject(d, "updated_at", now);
        int rc = bus_store_insert(f->st->store, NT_COLL_DELIVERIES, id, d, on_inserted, f);
        cJSON_Delete(d);
        cJSON_Delete(sub);
        if (rc != 0) f->status = rc;
        else f->inflight++;
    }
    if (f->inflight > 0) return;
    if (f->status != 0 || (cJSON_GetArraySize(f->queries) == 0 && f->page_last)) {
        finish(f);
        return;
    }
    next_page(f);
}

static void on_page(int status, const cJSON *docs, const char *next_cursor, void *data) {
    fanout_t *f = data;
    if (status != 0) {
        f->status = status;
        finish(f);
        return;
    }
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        if (nt_sub_has_topic(d, f->topic)) cJSON_AddItemToArray(f->todo, cJSON_CreateString(nt_str(d, "_id")));
    }
    free(f->cursor);
    f->cursor = next_cursor ? strdup(next_cursor) : NULL;
    f->page_last = next_cursor == NULL;
    if (f->page_last) cJSON_DeleteItemFromArray(f->queries, 0);
    pump(f);
}

static void next_page(fanout_t *f) {
    cJSON *where = cJSON_GetArrayItem(f->queries, 0);
    bus_store_query_t q = {.where = where, .limit = PAGE, .cursor = f->cursor};
    f->page_last = 0;
    int rc = bus_store_find(f->st->store, NT_COLL_SUBS, &q, on_page, f);
    if (rc != 0) {
        f->status = rc;
        finish(f);
    }
}

static void add_query(cJSON *queries, const char *scope, const char *scope_id) {
    cJSON *w = cJSON_CreateObject();
    cJSON_AddTrueToObject(w, "enabled");
    if (scope) {
        cJSON_AddStringToObject(w, "scope", scope);
        cJSON_AddStringToObject(w, "scope_id", scope_id);
    }
    cJSON_AddItemToArray(queries, w);
}

/* The scope queries of an event (see the top of this file). */
static cJSON *queries_of(const char *type, const cJSON *data) {
    cJSON *q = cJSON_CreateArray();
    const cJSON *alliance = cJSON_GetObjectItemCaseSensitive(data, "alliance");
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(data, "state");
    char num[32];
    if (strcmp(type, "giftcode.added") == 0) {
        add_query(q, NULL, NULL);
    } else if (strcmp(type, "announcement.published") == 0) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(data, "id");
        if (cJSON_IsNumber(id)) {
            snprintf(num, sizeof num, "%lld", (long long)id->valuedouble);
            add_query(q, nt_str(data, "scope"), num);
        } else if (cJSON_IsString(id)) {
            add_query(q, nt_str(data, "scope"), id->valuestring);
        }
    } else {
        int want_alliance = strcmp(type, "player.verified") != 0;
        int want_state = strncmp(type, "event.", 6) == 0 || strcmp(type, "player.verified") == 0;
        if (want_alliance && cJSON_IsString(alliance)) add_query(q, "alliance", alliance->valuestring);
        if (want_state && cJSON_IsNumber(state)) {
            snprintf(num, sizeof num, "%lld", (long long)state->valuedouble);
            add_query(q, "state", num);
        }
    }
    return q;
}

static void on_event_stored(int status, const cJSON *doc, void *data) {
    (void)doc;
    fanout_t *f = data;
    if (status != 0 && status != BUS_ECONFLICT) {
        f->status = status;
        finish(f);
        return;
    }
    if (cJSON_GetArraySize(f->queries) == 0) {
        finish(f);
        return;
    }
    next_page(f);
}

void nt_on_event(bus_event_t *ev) {
    nt_state_t *st = nt_state(bus_event_worker(ev));
    const bus_envelope_t *env = bus_event_envelope(ev);
    const char *topic = nt_topic_of(env->type);
    if (!topic || strcmp(topic, "test") == 0) {
        bus_event_done(ev, 0, NULL);
        return;
    }
    fanout_t *f = calloc(1, sizeof *f);
    if (!f) {
        bus_event_done(ev, BUS_EINTERNAL, "out of memory");
        return;
    }
    f->st = st;
    f->ev = ev;
    f->topic = topic;
    f->queries = queries_of(env->type, env->data);
    f->todo = cJSON_CreateArray();
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "type", env->type);
    cJSON_AddItemToObject(doc, "data", env->data ? cJSON_Duplicate(env->data, 1) : cJSON_CreateObject());
    cJSON_AddStringToObject(doc, "correlation_id", env->correlationid ? env->correlationid : "");
    int rc = bus_store_insert(st->store, NT_COLL_EVENTS, env->id, doc, on_event_stored, f);
    cJSON_Delete(doc);
    if (rc != 0) {
        f->status = rc;
        finish(f);
    }
}
