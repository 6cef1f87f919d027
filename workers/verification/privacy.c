/* privacy.export {user} and privacy.forget {user}.
 *
 * export: one JSON document
 *   {"export": {"user", "generated_at", "format_version": 1, "generated_by"},
 *    "domains": {"verification": {players, history, giftcode_results},
 *                "alliances": {membership} | {"error": "..."}}}
 * Each domain answers its own part over RPC (bus_worker_rpc): alliances
 * through alliances.member (not_found = no membership). A domain that does
 * not answer within 2 s is named with its error rather than silently left
 * out.
 * Audit events: privacy.export.requested and privacy.export.completed.
 *
 * forget: one bus_op (marker by request id): the user's player documents
 * are deleted, user.forgotten (consumed by alliances and the others) and
 * privacy.forget.completed are in the same batch's outbox;
 * privacy.forget.requested is published when the request arrives. The
 * user's history entries and gift-code results are deleted right after the
 * commit (best effort; a repeated forget deletes what is left).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/rpc.h"
#include "verification.h"

#define FORMAT_VERSION 1

static void audit(bus_op_t *op, const char *type) {
    cJSON *d = cJSON_CreateObject();
    char now[32];
    bus_now_rfc3339(now);
    cJSON_AddStringToObject(d, "user", VF_PARAM(op, "user"));
    const char *caller = bus_op_request(op) ? bus_request_caller(bus_op_request(op)) : "";
    cJSON_AddStringToObject(d, "requested_by", caller[0] ? caller : "unknown");
    cJSON_AddStringToObject(d, "at", now);
    bus_worker_publish(bus_op_worker(op), type, d, VF_PARAM(op, "user"), bus_op_correlation_id(op), NULL, NULL, NULL);
}

/* ---- export ---------------------------------------------------------------- */

static cJSON *strip(const cJSON *d) {
    cJSON *o = cJSON_Duplicate(d, 1);
    cJSON_DeleteItemFromObject(o, "_id");
    cJSON_DeleteItemFromObject(o, "_v");
    cJSON_DeleteItemFromObject(o, "owner");
    cJSON_DeleteItemFromObject(o, "lease_until");
    return o;
}

static void on_alliances_part(int status, const char *reply, size_t len, void *data) {
    bus_op_t *op = data;
    cJSON *doc = VF(op)->extra;
    cJSON *domains = cJSON_GetObjectItemCaseSensitive(doc, "domains");
    cJSON *part = cJSON_CreateObject();
    cJSON *r = status == 0 ? cJSON_ParseWithLength(reply, len) : NULL;
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(r, "success");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(r, "error");
    if (cJSON_IsTrue(ok))
        cJSON_AddItemToObject(part, "membership", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(r, "data"), 1));
    else if (cJSON_IsString(err) && strcmp(err->valuestring, "not_found") == 0)
        cJSON_AddNullToObject(part, "membership");
    else
        cJSON_AddStringToObject(part, "error", status != 0 ? bus_err_name(status)
                                                           : (cJSON_IsString(err) ? err->valuestring : "bad reply"));
    cJSON_Delete(r);
    cJSON_AddItemToObject(domains, "alliances", part);
    VF(op)->extra = NULL;
    audit(op, "privacy.export.completed");
    bus_op_reply(op, doc);
}

static void export_gathered(bus_op_t *op) {
    const char *user = VF_PARAM(op, "user");
    char now[32];
    bus_now_rfc3339(now);
    cJSON *doc = cJSON_CreateObject();
    cJSON *h = cJSON_AddObjectToObject(doc, "export");
    cJSON_AddStringToObject(h, "user", user);
    cJSON_AddStringToObject(h, "generated_at", now);
    cJSON_AddNumberToObject(h, "format_version", FORMAT_VERSION);
    cJSON_AddStringToObject(h, "generated_by", "bus-verification");
    cJSON *domains = cJSON_AddObjectToObject(doc, "domains");
    cJSON *v = cJSON_AddObjectToObject(domains, "verification");
    cJSON *players = cJSON_AddArrayToObject(v, "players");
    const cJSON *d;
    cJSON_ArrayForEach(d, VF(op)->docs) cJSON_AddItemToArray(players, vf_profile_view(d));
    cJSON *hist = cJSON_AddArrayToObject(v, "history");
    cJSON_ArrayForEach(d, VF(op)->code) cJSON_AddItemToArray(hist, strip(d));
    cJSON *res = cJSON_AddArrayToObject(v, "giftcode_results");
    cJSON_ArrayForEach(d, VF(op)->player) cJSON_AddItemToArray(res, strip(d));
    VF(op)->extra = doc;
    bus_rpc_client_t *rpc = bus_worker_rpc(bus_op_worker(op));
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "user", user);
    char *params = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    /* a domain that is down must not make the whole export miss its caller's deadline */
    bus_rpc_call_opts_t o = {.timeout_ms = 2000, .correlation_id = bus_op_correlation_id(op), .caller = "bus-verification"};
    int rc = rpc ? bus_rpc_call(rpc, "alliances", "member", params, strlen(params), &o, on_alliances_part, op)
                 : BUS_EUNAVAILABLE;
    free(params);
    if (rc != 0) on_alliances_part(rc, NULL, 0, op);
}

/* The history of each of the user's players (a user has few: their alts),
 * one find after the other, gathered into VF(op)->code. */
static void history_next(bus_op_t *op);

static void on_history_page(int status, const cJSON *docs, const char *next, void *data) {
    bus_op_t *op = data;
    (void)next;
    if (status != 0) {
        bus_op_fail(op, BUS_EUNAVAILABLE, "store: %s", bus_strerror(status));
        return;
    }
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) cJSON_AddItemToArray(VF(op)->code, cJSON_Duplicate(d, 1));
    history_next(op);
}

static void history_next(bus_op_t *op) {
    /* VF(op)->extra counts the players done so far (a number) */
    int i = (int)VF(op)->extra->valuedouble;
    const cJSON *player = cJSON_GetArrayItem(VF(op)->docs, i);
    if (!player) {
        cJSON_Delete(VF(op)->extra);
        VF(op)->extra = NULL;
        export_gathered(op);
        return;
    }
    cJSON_SetNumberValue(VF(op)->extra, i + 1);
    cJSON *where = cJSON_CreateObject();
    cJSON_AddNumberToObject(where, "player_id", (double)vf_doc_int(player, "player_id"));
    bus_store_query_t q = {.where = where, .sort = "at", .limit = BUS_STORE_MAX_LIMIT};
    int rc = bus_store_find(vf_state(bus_op_worker(op))->store, VF_COLL_HISTORY, &q, on_history_page, op);
    cJSON_Delete(where);
    if (rc != 0) bus_op_fail(op, BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

static void export_history(bus_op_t *op) {
    VF(op)->code = cJSON_CreateArray();
    VF(op)->extra = cJSON_CreateNumber(0);
    history_next(op);
}

static void export_load(bus_op_t *op) {
    audit(op, "privacy.export.requested");
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "user", VF_PARAM(op, "user"));
    bus_op_load_find(op, VF_COLL_PLAYERS, where, NULL, 100, &VF(op)->docs);
    where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "user", VF_PARAM(op, "user"));
    bus_op_load_find(op, VF_COLL_REDEMPTIONS, where, NULL, BUS_STORE_MAX_LIMIT, &VF(op)->player);
    bus_op_load_wait(op, export_history);
}

void vf_privacy_export(bus_request_t *req) { vf_run(req, export_load, VF_READS); }

/* ---- forget ------------------------------------------------------------------ */

typedef struct {
    bus_store_t *store;
    char user[64];
    int64_t pids[100];
    int npids, next;
    int phase; /* 0 history of pids[next], 1 redemptions of the user */
} purge_t;

static void purge_step(purge_t *p);

static void on_purge_deleted(int status, void *data) {
    (void)status;
    (void)data;
}

static void on_purge_page(int status, const cJSON *docs, const char *next, void *data) {
    purge_t *p = data;
    (void)next;
    const cJSON *d;
    if (status == 0)
        cJSON_ArrayForEach(d, docs) bus_store_delete(p->store, p->phase == 0 ? VF_COLL_HISTORY : VF_COLL_REDEMPTIONS,
                                                     vf_doc_str(d, "_id"), BUS_STORE_ANY_VERSION, on_purge_deleted,
                                                     NULL);
    if (p->phase == 0) p->next++;
    else
        p->phase = 2;
    purge_step(p);
}

static void purge_step(purge_t *p) {
    if (p->phase == 0 && p->next >= p->npids) p->phase = 1;
    if (p->phase == 2) {
        free(p);
        return;
    }
    cJSON *where = cJSON_CreateObject();
    if (p->phase == 0)
        cJSON_AddNumberToObject(where, "player_id", (double)p->pids[p->next]);
    else
        cJSON_AddStringToObject(where, "user", p->user);
    bus_store_query_t q = {.where = where, .limit = BUS_STORE_MAX_LIMIT};
    int rc = bus_store_find(p->store, p->phase == 0 ? VF_COLL_HISTORY : VF_COLL_REDEMPTIONS, &q, on_purge_page, p);
    cJSON_Delete(where);
    if (rc != 0) free(p);
}

/* After the commit (main.c's committed hook): the rest of the user's data. */
void vf_privacy_purge_later(vf_state_t *st, const char *user, const cJSON *players) {
    purge_t *p = calloc(1, sizeof *p);
    if (!p) return;
    p->store = st->store;
    snprintf(p->user, sizeof p->user, "%s", user);
    const cJSON *d;
    cJSON_ArrayForEach(d, players) if (p->npids < 100) p->pids[p->npids++] = vf_doc_int(d, "player_id");
    purge_step(p);
}

static void forget_decide(bus_op_t *op) {
    const char *user = VF_PARAM(op, "user");
    char now[32];
    bus_now_rfc3339(now);
    int n = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, VF(op)->docs) {
        bus_op_plan_delete(op, VF_COLL_PLAYERS, vf_doc_str(d, "_id"), vf_doc_version(d));
        n++;
    }
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "user", user);
    cJSON_AddStringToObject(ev, "requested_at", now);
    bus_op_plan_event(op, "user.forgotten", user, ev);
    cJSON *done = cJSON_CreateObject();
    cJSON_AddStringToObject(done, "user", user);
    const char *caller = bus_request_caller(bus_op_request(op));
    cJSON_AddStringToObject(done, "requested_by", caller[0] ? caller : "unknown");
    cJSON_AddStringToObject(done, "at", now);
    cJSON_AddNumberToObject(done, "players_deleted", n);
    bus_op_plan_event(op, "privacy.forget.completed", user, done);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "user", user);
    cJSON_AddNumberToObject(out, "players_deleted", n);
    cJSON_AddStringToObject(out, "forgotten_at", now);
    bus_op_commit(op, out);
}

static void forget_load(bus_op_t *op) {
    if (bus_op_attempt(op) == 0) audit(op, "privacy.forget.requested");
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "user", VF_PARAM(op, "user"));
    bus_op_load_find(op, VF_COLL_PLAYERS, where, NULL, 60, &VF(op)->docs);
    bus_op_load_wait(op, forget_decide);
}

void vf_privacy_forget(bus_request_t *req) { vf_run(req, forget_load, VF_CHANGES); }
