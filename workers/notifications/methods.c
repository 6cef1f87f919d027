/* The RPC handlers of notifications.<method> (schemas/rpc/notifications.*.json).
 *
 * State-changing methods (subscribe, unsubscribe, test, announce) run
 * through bus_op (bus/include/bus/op.h): a redelivered request replays its
 * stored answer and events instead of subscribing twice or announcing
 * twice. list and deliveries read and answer. Secrets never appear in an
 * answer (store.c nt_sub_view) nor in a log line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "notifications.h"

typedef struct nt_ctx {
    cJSON *sub;
} nt_ctx_t;

#define CTX(op) ((nt_ctx_t *)bus_op_ctx(op))
#define PARAM(op, name) nt_str(bus_op_params(op), name)

void nt_ctx_reset(bus_op_t *op, void *ctx);
void nt_ctx_reset(bus_op_t *op, void *ctx) {
    (void)op;
    nt_ctx_t *c = ctx;
    cJSON_Delete(c->sub);
    memset(c, 0, sizeof *c);
}

static nt_state_t *ST(bus_op_t *op) { return nt_state(bus_op_worker(op)); }

/* ---- subscribe ---------------------------------------------------------------- */

static void subscribe_decide(bus_op_t *op) {
    const cJSON *p = bus_op_params(op);
    char scope_id[64], why[300];
    if (nt_scope_id(p, scope_id, sizeof scope_id) != 0) {
        bus_op_fail(op, BUS_EINVALID, "/params/id: an alliance id (UUID) for scope alliance, a state number for scope state");
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "scope", PARAM(op, "scope"));
    cJSON_AddStringToObject(doc, "scope_id", scope_id);
    if (nt_destination_fill(ST(op), cJSON_GetObjectItemCaseSensitive(p, "destination"), doc, why, sizeof why) != 0) {
        cJSON_Delete(doc);
        bus_op_fail(op, BUS_EINVALID, "%s", why);
        return;
    }
    cJSON *topics = cJSON_CreateArray();
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(p, "topics")) {
        if (cJSON_IsString(t)) cJSON_AddItemToArray(topics, cJSON_CreateString(t->valuestring));
    }
    cJSON_AddItemToObject(doc, "topics", topics);
    cJSON_AddStringToObject(doc, "language", PARAM(op, "language")[0] ? PARAM(op, "language") : "en");
    cJSON_AddTrueToObject(doc, "enabled");
    cJSON_AddNumberToObject(doc, "failures", 0);
    char id[37], now[32];
    bus_uuid(id);
    bus_now_rfc3339(now);
    cJSON_AddStringToObject(doc, "created_at", now);
    cJSON_AddStringToObject(doc, "_id", id); /* for the view; the store takes the id argument */
    cJSON *view = nt_sub_view(doc);
    cJSON_DeleteItemFromObject(doc, "_id");
    bus_op_plan_insert(op, NT_COLL_SUBS, id, doc);
    bus_op_commit(op, view);
}

/* ---- unsubscribe ------------------------------------------------------------------ */

static void unsubscribe_decide(bus_op_t *op) {
    if (!CTX(op)->sub) {
        bus_op_fail(op, BUS_ENOT_FOUND, "no subscription %s", PARAM(op, "subscription"));
        return;
    }
    bus_op_plan_delete(op, NT_COLL_SUBS, PARAM(op, "subscription"), nt_int(CTX(op)->sub, "_v"));
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "subscription", PARAM(op, "subscription"));
    cJSON_AddTrueToObject(r, "removed");
    bus_op_commit(op, r);
}

static void sub_load(bus_op_t *op, bus_op_step_fn next) {
    bus_op_load_doc(op, NT_COLL_SUBS, PARAM(op, "subscription"), &CTX(op)->sub);
    bus_op_load_wait(op, next);
}

static void unsubscribe_load(bus_op_t *op) { sub_load(op, unsubscribe_decide); }

/* ---- test --------------------------------------------------------------------------- */

static void test_decide(bus_op_t *op) {
    const cJSON *sub = CTX(op)->sub;
    if (!sub) {
        bus_op_fail(op, BUS_ENOT_FOUND, "no subscription %s", PARAM(op, "subscription"));
        return;
    }
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sub, "enabled"))) {
        bus_op_fail(op, BUS_ECONFLICT, "the subscription is disabled (%s); subscribe again", nt_str(sub, "disabled_reason"));
        return;
    }
    char ev_id[64], del_id[160], now[32];
    char u[37];
    bus_uuid(u);
    snprintf(ev_id, sizeof ev_id, "test-%s", u);
    snprintf(del_id, sizeof del_id, "%s.%s", ev_id, PARAM(op, "subscription"));
    bus_now_rfc3339(now);
    const char *corr = bus_op_correlation_id(op) ? bus_op_correlation_id(op) : "";
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "type", "notification.test");
    cJSON_AddObjectToObject(ev, "data");
    cJSON_AddStringToObject(ev, "correlation_id", corr);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "event_id", ev_id);
    cJSON_AddStringToObject(d, "subscription", PARAM(op, "subscription"));
    cJSON_AddStringToObject(d, "type", "notification.test");
    cJSON_AddStringToObject(d, "correlation_id", corr);
    cJSON_AddStringToObject(d, "status", "pending");
    cJSON_AddNumberToObject(d, "attempts", 0);
    cJSON_AddStringToObject(d, "last_error", "");
    cJSON_AddNumberToObject(d, "next_at", (double)nt_now_ms());
    cJSON_AddStringToObject(d, "created_at", now);
    cJSON_AddStringToObject(d, "updated_at", now);
    bus_op_plan_insert(op, NT_COLL_EVENTS, ev_id, ev);
    bus_op_plan_insert(op, NT_COLL_DELIVERIES, del_id, d);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "delivery", del_id);
    cJSON_AddStringToObject(r, "status", "pending");
    bus_op_commit(op, r);
}

static void test_load(bus_op_t *op) { sub_load(op, test_decide); }

/* ---- announce ------------------------------------------------------------------------ */

static void announce_decide(bus_op_t *op) {
    const cJSON *p = bus_op_params(op);
    char scope_id[64];
    if (nt_scope_id(p, scope_id, sizeof scope_id) != 0) {
        bus_op_fail(op, BUS_EINVALID, "/params/id: an alliance id (UUID) for scope alliance, a state number for scope state");
        return;
    }
    char id[37], now[32];
    bus_uuid(id);
    bus_now_rfc3339(now);
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "announcement", id);
    cJSON_AddStringToObject(ev, "scope", PARAM(op, "scope"));
    cJSON_AddItemToObject(ev, "id", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(p, "id"), 1));
    cJSON_AddStringToObject(ev, "title", PARAM(op, "title"));
    cJSON_AddStringToObject(ev, "body", PARAM(op, "body"));
    cJSON_AddStringToObject(ev, "category", PARAM(op, "category"));
    if (bus_request_caller(bus_op_request(op))[0]) cJSON_AddStringToObject(ev, "by", bus_request_caller(bus_op_request(op)));
    cJSON_AddStringToObject(ev, "published_at", now);
    cJSON *r = cJSON_Duplicate(ev, 1);
    bus_op_plan_event(op, "announcement.published", scope_id, ev);
    bus_op_commit(op, r);
}

/* ---- list and deliveries -------------------------------------------------------------- */

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
    int subs = strcmp(bus_op_method(op), "list") == 0;
    cJSON *out = cJSON_CreateObject(), *items = cJSON_AddArrayToObject(out, subs ? "subscriptions" : "deliveries");
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) cJSON_AddItemToArray(items, subs ? nt_sub_view(d) : nt_delivery_view(d));
    if (next_cursor)
        cJSON_AddStringToObject(out, "next_cursor", next_cursor);
    else
        cJSON_AddNullToObject(out, "next_cursor");
    bus_op_reply(op, out);
}

static void page(bus_op_t *op, const char *coll, cJSON *where) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(bus_op_params(op), "cursor");
    int64_t limit = nt_int(bus_op_params(op), "limit");
    bus_store_query_t q = {.where = where,
                           .limit = limit > 0 ? (int)limit : 50,
                           .cursor = cJSON_IsString(c) && c->valuestring[0] ? c->valuestring : NULL};
    int rc = bus_store_find(ST(op)->store, coll, &q, on_page, op);
    cJSON_Delete(where);
    if (rc != 0) bus_op_fail(op, rc == BUS_EBAD_REQUEST ? rc : BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

static void list_load(bus_op_t *op) {
    const cJSON *p = bus_op_params(op);
    cJSON *where = cJSON_CreateObject();
    if (PARAM(op, "scope")[0]) cJSON_AddStringToObject(where, "scope", PARAM(op, "scope"));
    if (cJSON_GetObjectItemCaseSensitive(p, "id")) {
        char scope_id[64];
        if (nt_scope_id(p, scope_id, sizeof scope_id) != 0) {
            cJSON_Delete(where);
            bus_op_fail(op, BUS_EINVALID, "/params/id: an alliance id (UUID) for scope alliance, a state number for scope state");
            return;
        }
        cJSON_AddStringToObject(where, "scope_id", scope_id);
    }
    page(op, NT_COLL_SUBS, where);
}

static void deliveries_load(bus_op_t *op) {
    cJSON *where = cJSON_CreateObject();
    if (PARAM(op, "subscription")[0]) cJSON_AddStringToObject(where, "subscription", PARAM(op, "subscription"));
    if (PARAM(op, "correlation_id")[0]) cJSON_AddStringToObject(where, "correlation_id", PARAM(op, "correlation_id"));
    if (PARAM(op, "status")[0]) cJSON_AddStringToObject(where, "status", PARAM(op, "status"));
    page(op, NT_COLL_DELIVERIES, where);
}

/* ---- the table ------------------------------------------------------------------------------ */

static void run(bus_request_t *req, bus_op_step_fn load, int changes) {
    bus_op_t *op = bus_op_new_request(nt_state(bus_request_worker(req))->engine, req, load);
    if (!op) {
        bus_reply_error(req, BUS_EINTERNAL, "out of memory");
        return;
    }
    if (changes)
        bus_op_start(op, 0);
    else
        bus_op_run(op);
}

static void on_subscribe(bus_request_t *r) { run(r, subscribe_decide, 1); }
static void on_unsubscribe(bus_request_t *r) { run(r, unsubscribe_load, 1); }
static void on_test(bus_request_t *r) { run(r, test_load, 1); }
static void on_announce(bus_request_t *r) { run(r, announce_decide, 1); }
static void on_list(bus_request_t *r) { run(r, list_load, 0); }
static void on_deliveries(bus_request_t *r) { run(r, deliveries_load, 0); }

const bus_method_t nt_methods[] = {
    {"subscribe", on_subscribe}, {"unsubscribe", on_unsubscribe}, {"list", on_list},
    {"test", on_test},           {"deliveries", on_deliveries},   {"announce", on_announce},
    {NULL, NULL},
};
