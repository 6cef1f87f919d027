/* The RPC handlers of events.<method>.
 *
 * libbus has validated the params against schemas/rpc/events.<method>.json
 * before a handler runs (types, enums, ranges); the handlers check what a
 * schema cannot (a time in the past, a time zone) and read fields
 * defensively.
 *
 * State-changing methods (create, update, toggle, delete) run through
 * libbus's bus_op (bus/include/bus/op.h): marker, per-event lock, loads,
 * the permission check (perm.c), then ONE batch holding the event, its
 * re-planned items in the due-time index and the request's marker. Every
 * update and toggle re-plans from now: the plan's generation (gen) goes up,
 * the pending items not yet fired are deleted and the current occurrence's
 * items are planned again (those already past are left out). Read-only
 * methods (get, list, upcoming) read and answer.
 *
 * Answers: not_found, permission_denied "rule: ...", invalid for a time in
 * the past or without a zone, conflict never (lost races are retried by
 * bus_op).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/log.h"
#include "events.h"

#define PARAM(op, name) ev_str(bus_op_params(op), name)

static const cJSON *param(const bus_op_t *op, const char *name) {
    return cJSON_GetObjectItemCaseSensitive(bus_op_params(op), name);
}

/* The first occurrence that starts at or after `from` (the start itself for
 * a one-off event). */
static int64_t first_from(int64_t start, int rec, int anchor, int64_t from) {
    if (rec == EV_REC_NONE) return start;
    for (int i = 0; start < from && i < 100000; i++) start = ev_next_start(start, rec, anchor);
    return start;
}

static void add_str_or_null(cJSON *o, const char *k, const cJSON *v) {
    cJSON_AddItemToObject(o, k, cJSON_IsString(v) ? cJSON_CreateString(v->valuestring) : cJSON_CreateNull());
}

/* Checks and applies the schedule params present in the request to doc
 * (create: every field; update: those given). 0, or ends the op. */
static int apply_schedule(bus_op_t *op, cJSON *doc, int creating, int64_t now) {
    const cJSON *v;
    if ((v = param(op, "name")) && cJSON_IsString(v)) cJSON_ReplaceItemInObject(doc, "name", cJSON_CreateString(v->valuestring));
    if ((v = param(op, "duration_min")) && cJSON_IsNumber(v))
        cJSON_ReplaceItemInObject(doc, "duration_min", cJSON_CreateNumber((int)v->valuedouble));
    if ((v = param(op, "recurrence")) && cJSON_IsString(v)) {
        if (ev_recurrence_parse(v->valuestring) < 0) {
            bus_op_fail(op, BUS_EINVALID, "/params/recurrence: unknown recurrence \"%s\"", v->valuestring);
            return -1;
        }
        cJSON_ReplaceItemInObject(doc, "recurrence", cJSON_CreateString(v->valuestring));
    }
    if ((v = param(op, "reminders")) && cJSON_IsArray(v)) {
        cJSON *r = cJSON_CreateArray(), *it;
        cJSON_ArrayForEach(it, (cJSON *)v) cJSON_AddItemToArray(r, cJSON_CreateNumber((int)it->valuedouble));
        cJSON_ReplaceItemInObject(doc, "reminders", r);
    }
    if ((v = param(op, "language")) && cJSON_IsString(v))
        cJSON_ReplaceItemInObject(doc, "language", cJSON_CreateString(v->valuestring));
    if ((v = param(op, "channel_hint"))) {
        cJSON_DeleteItemFromObject(doc, "channel_hint");
        add_str_or_null(doc, "channel_hint", v);
    }
    int rec = ev_recurrence_parse(ev_str(doc, "recurrence"));
    if ((v = param(op, "starts_at")) && cJSON_IsString(v)) {
        int64_t start = ev_parse_time(v->valuestring);
        if (start < 0) {
            bus_op_fail(op, BUS_EINVALID, "/params/starts_at: \"%s\" is not an RFC 3339 time with its zone (UTC: ...Z)",
                        v->valuestring);
            return -1;
        }
        if (start < now && rec == EV_REC_NONE) {
            bus_op_fail(op, BUS_EINVALID, "/params/starts_at: %s is in the past (the game's clock is UTC)",
                        v->valuestring);
            return -1;
        }
        cJSON_ReplaceItemInObject(doc, "anchor_day", cJSON_CreateNumber(ev_day_of_month(start)));
        cJSON_ReplaceItemInObject(doc, "start_ms", cJSON_CreateNumber((double)start));
    } else if (creating) {
        bus_op_fail(op, BUS_EINVALID, "/params/starts_at: required");
        return -1;
    }
    /* a recurring event starting in the past begins with its next occurrence */
    int64_t start = first_from(ev_int(doc, "start_ms"), rec, (int)ev_int(doc, "anchor_day"), now);
    cJSON_ReplaceItemInObject(doc, "start_ms", cJSON_CreateNumber((double)start));
    return 0;
}

/* ---- create ------------------------------------------------------------------ */

static void create_decide(bus_op_t *op) {
    int64_t now = ev_now_ms();
    const char *kind = PARAM(op, "kind");
    const ev_kind_t *k = ev_kind_find(kind);
    char id[37], ts[40];
    bus_uuid(id);
    ev_format_time(now, ts, sizeof ts);
    cJSON *doc = cJSON_CreateObject();
    const cJSON *state = param(op, "state");
    const char *alliance = PARAM(op, "alliance");
    char scope[80];
    if (*alliance) {
        snprintf(scope, sizeof scope, "alliance:%s", alliance);
        cJSON_AddStringToObject(doc, "alliance", alliance);
        cJSON_AddNullToObject(doc, "state");
    } else {
        snprintf(scope, sizeof scope, "state:%lld", (long long)(cJSON_IsNumber(state) ? state->valuedouble : 0));
        cJSON_AddNullToObject(doc, "alliance");
        cJSON_AddNumberToObject(doc, "state", cJSON_IsNumber(state) ? state->valuedouble : 0);
    }
    cJSON_AddStringToObject(doc, "scope", scope);
    cJSON_AddStringToObject(doc, "kind", kind);
    cJSON_AddStringToObject(doc, "name", k->label);
    cJSON_AddNumberToObject(doc, "start_ms", 0);
    cJSON_AddNumberToObject(doc, "anchor_day", 1);
    cJSON_AddNumberToObject(doc, "duration_min", k->default_duration_min);
    cJSON_AddStringToObject(doc, "recurrence", "none");
    cJSON *r = cJSON_AddArrayToObject(doc, "reminders");
    static const int defaults[] = {60, 15, 5, 0};
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) cJSON_AddItemToArray(r, cJSON_CreateNumber(defaults[i]));
    cJSON_AddStringToObject(doc, "language", "en");
    cJSON_AddNullToObject(doc, "channel_hint");
    cJSON_AddBoolToObject(doc, "enabled", 1);
    cJSON_AddNumberToObject(doc, "gen", 1);
    cJSON_AddNumberToObject(doc, "occurrence", 1);
    cJSON_AddStringToObject(doc, "created_by", PARAM(op, "actor"));
    cJSON_AddStringToObject(doc, "updated_by", PARAM(op, "actor"));
    cJSON_AddStringToObject(doc, "created_at", ts);
    cJSON_AddStringToObject(doc, "updated_at", ts);
    if (apply_schedule(op, doc, 1, now) != 0) {
        cJSON_Delete(doc);
        return;
    }
    ev_plan_occurrence(op, id, doc, ev_int(doc, "start_ms"), now);
    cJSON_AddStringToObject(doc, "_id", id); /* for the view; the store takes the id argument */
    cJSON *view = ev_event_view(doc);
    bus_op_plan_insert(op, EV_COLL_EVENTS, id, doc);
    bus_op_commit(op, view);
}

static void create_load(bus_op_t *op) {
    if (!ev_kind_find(PARAM(op, "kind"))) {
        bus_op_fail(op, BUS_EINVALID, "/params/kind: unknown kind \"%s\"", PARAM(op, "kind"));
        return;
    }
    ev_check_permission(op, PARAM(op, "alliance"), create_decide);
}

/* ---- update, toggle, delete: the event, its pending items, the permission ---- */

static void change_decide(bus_op_t *op) {
    const char *id = PARAM(op, "id"), *method = bus_op_method(op);
    cJSON *ev = EV(op)->event;
    int64_t now = ev_now_ms();
    if (strcmp(method, "delete") == 0) {
        ev_plan_drop_pending(op);
        bus_op_plan_delete(op, EV_COLL_EVENTS, id, ev_version(ev));
        cJSON *out = cJSON_CreateObject();
        cJSON_AddStringToObject(out, "id", id);
        cJSON_AddBoolToObject(out, "deleted", 1);
        bus_op_commit(op, out);
        return;
    }
    cJSON *doc = cJSON_Duplicate(ev, 1);
    if (strcmp(method, "toggle") == 0) {
        int enabled = ev_bool(bus_op_params(op), "enabled");
        if (enabled == ev_bool(ev, "enabled")) { /* already so: no change, safe to repeat */
            bus_op_reply(op, ev_event_view(ev));
            cJSON_Delete(doc);
            return;
        }
        cJSON_ReplaceItemInObject(doc, "enabled", cJSON_CreateBool(enabled));
        int rec = ev_recurrence_parse(ev_str(doc, "recurrence"));
        int64_t start = first_from(ev_int(doc, "start_ms"), rec, (int)ev_int(doc, "anchor_day"), now);
        cJSON_ReplaceItemInObject(doc, "start_ms", cJSON_CreateNumber((double)start));
    } else if (apply_schedule(op, doc, 0, now) != 0) {
        cJSON_Delete(doc);
        return;
    }
    char ts[40];
    ev_format_time(now, ts, sizeof ts);
    cJSON_ReplaceItemInObject(doc, "gen", cJSON_CreateNumber((double)(ev_int(ev, "gen") + 1)));
    cJSON_ReplaceItemInObject(doc, "updated_at", cJSON_CreateString(ts));
    cJSON_ReplaceItemInObject(doc, "updated_by", cJSON_CreateString(PARAM(op, "actor")));
    ev_plan_drop_pending(op);
    if (ev_bool(doc, "enabled")) ev_plan_occurrence(op, id, doc, ev_int(doc, "start_ms"), now);
    cJSON *view = ev_event_view(doc);
    bus_op_plan_replace(op, EV_COLL_EVENTS, id, ev_version(ev), doc);
    bus_op_commit(op, view);
}

static void change_loaded(bus_op_t *op) {
    if (!EV(op)->event) {
        bus_op_fail(op, BUS_ENOT_FOUND, "no event %s", PARAM(op, "id"));
        return;
    }
    ev_check_permission(op, ev_str(EV(op)->event, "alliance"), change_decide);
}

static void change_locked(bus_op_t *op) {
    bus_op_load_doc(op, EV_COLL_EVENTS, PARAM(op, "id"), &EV(op)->event);
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "event", PARAM(op, "id"));
    bus_op_load_find(op, EV_COLL_ITEMS, where, NULL, 100, &EV(op)->pending);
    bus_op_load_wait(op, change_loaded);
}

static void change_load(bus_op_t *op) { bus_op_lock(op, PARAM(op, "id"), change_locked); }

/* ---- read-only -------------------------------------------------------------------- */

static void get_answer(bus_op_t *op) {
    if (!EV(op)->event) {
        bus_op_fail(op, BUS_ENOT_FOUND, "no event %s", PARAM(op, "id"));
        return;
    }
    bus_op_reply(op, ev_event_view(EV(op)->event));
}

static void get_load(bus_op_t *op) {
    bus_op_load_doc(op, EV_COLL_EVENTS, PARAM(op, "id"), &EV(op)->event);
    bus_op_load_wait(op, get_answer);
}

static void scope_of(const bus_op_t *op, char *out, size_t len) {
    const cJSON *state = param(op, "state");
    if (*PARAM(op, "alliance"))
        snprintf(out, len, "alliance:%s", PARAM(op, "alliance"));
    else
        snprintf(out, len, "state:%lld", (long long)(cJSON_IsNumber(state) ? state->valuedouble : 0));
}

static void on_page(int status, const cJSON *docs, const char *next_cursor, void *data) {
    bus_op_t *op = data;
    if (status == BUS_EBAD_REQUEST) {
        bus_op_fail(op, BUS_EBAD_REQUEST, "bad cursor (pass next_cursor of the previous page, same filters)");
        return;
    }
    if (status != 0) {
        bus_op_fail(op, status, "store: %s", bus_strerror(status));
        return;
    }
    cJSON *out = cJSON_CreateObject(), *items = cJSON_AddArrayToObject(out, "events");
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) cJSON_AddItemToArray(items, ev_event_view(d));
    if (next_cursor)
        cJSON_AddStringToObject(out, "next_cursor", next_cursor);
    else
        cJSON_AddNullToObject(out, "next_cursor");
    bus_op_reply(op, out);
}

static void list_load(bus_op_t *op) {
    char scope[80];
    scope_of(op, scope, sizeof scope);
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "scope", scope);
    const cJSON *c = param(op, "cursor");
    int64_t limit = ev_int(bus_op_params(op), "limit");
    bus_store_query_t q = {.where = where,
                           .sort = "start_ms",
                           .limit = limit > 0 ? (int)limit : 50,
                           .cursor = cJSON_IsString(c) && c->valuestring[0] ? c->valuestring : NULL};
    int rc = bus_store_find(bus_op_store(op), EV_COLL_EVENTS, &q, on_page, op);
    cJSON_Delete(where);
    if (rc != 0) bus_op_fail(op, rc == BUS_EBAD_REQUEST ? rc : BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

/* upcoming: every occurrence of the scope's enabled events that starts
 * within the next within_h hours (recurrences expanded), by start. */
#define EV_UPCOMING_MAX 500

static int by_start(const void *a, const void *b) {
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    int c = strcmp(ev_str(x, "starts_at"), ev_str(y, "starts_at"));
    return c ? c : strcmp(ev_str(x, "id"), ev_str(y, "id"));
}

static void upcoming_answer(bus_op_t *op) {
    int64_t now = ev_now_ms(), until = now + ev_int(bus_op_params(op), "within_h") * 3600 * 1000;
    cJSON **occ = calloc(EV_UPCOMING_MAX, sizeof *occ);
    if (!occ) {
        bus_op_fail(op, BUS_EINTERNAL, "out of memory");
        return;
    }
    int n = 0, truncated = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, EV(op)->pending) {
        if (!ev_bool(d, "enabled")) continue;
        int rec = ev_recurrence_parse(ev_str(d, "recurrence"));
        int anchor = (int)ev_int(d, "anchor_day");
        int64_t dur = ev_int(d, "duration_min") * 60000;
        for (int64_t s = ev_int(d, "start_ms"); s <= until;) {
            if (s + dur >= now) { /* not over yet */
                if (n == EV_UPCOMING_MAX) {
                    truncated = 1;
                    break;
                }
                cJSON *o = cJSON_CreateObject();
                char t[40];
                cJSON_AddStringToObject(o, "id", ev_str(d, "_id"));
                cJSON_AddStringToObject(o, "kind", ev_str(d, "kind"));
                cJSON_AddStringToObject(o, "name", ev_str(d, "name"));
                ev_format_time(s, t, sizeof t);
                cJSON_AddStringToObject(o, "starts_at", t);
                ev_format_time(s + dur, t, sizeof t);
                cJSON_AddStringToObject(o, "ends_at", t);
                occ[n++] = o;
            }
            if (rec == EV_REC_NONE) break;
            s = ev_next_start(s, rec, anchor);
        }
    }
    qsort(occ, (size_t)n, sizeof *occ, by_start);
    cJSON *out = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(out, "occurrences");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, occ[i]);
    cJSON_AddBoolToObject(out, "truncated", truncated);
    free(occ);
    bus_op_reply(op, out);
}

static void upcoming_load(bus_op_t *op) {
    char scope[80];
    scope_of(op, scope, sizeof scope);
    cJSON *where = cJSON_CreateObject(), *lte = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "scope", scope);
    cJSON_AddNumberToObject(lte, "$lte", (double)(ev_now_ms() + ev_int(bus_op_params(op), "within_h") * 3600 * 1000));
    cJSON_AddItemToObject(where, "start_ms", lte);
    bus_op_load_find(op, EV_COLL_EVENTS, where, "start_ms", BUS_STORE_MAX_LIMIT, &EV(op)->pending);
    bus_op_load_wait(op, upcoming_answer);
}

/* ---- the table -------------------------------------------------------------------- */

static void run(bus_request_t *req, bus_op_step_fn load, int changes) {
    bus_op_t *op = bus_op_new_request(ev_state(bus_request_worker(req))->engine, req, load);
    if (!op) {
        bus_reply_error(req, BUS_EINTERNAL, "out of memory");
        return;
    }
    if (changes)
        bus_op_start(op, 0);
    else
        bus_op_run(op);
}

static void on_create(bus_request_t *r) { run(r, create_load, 1); }
static void on_update(bus_request_t *r) { run(r, change_load, 1); }
static void on_toggle(bus_request_t *r) { run(r, change_load, 1); }
static void on_delete(bus_request_t *r) { run(r, change_load, 1); }
static void on_get(bus_request_t *r) { run(r, get_load, 0); }
static void on_list(bus_request_t *r) { run(r, list_load, 0); }
static void on_upcoming(bus_request_t *r) { run(r, upcoming_load, 0); }

const bus_method_t ev_methods[] = {
    {"create", on_create}, {"update", on_update}, {"toggle", on_toggle},     {"delete", on_delete},
    {"get", on_get},       {"list", on_list},     {"upcoming", on_upcoming}, {NULL, NULL},
};
