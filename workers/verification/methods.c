/* The RPC handlers of verification.<method> about players.
 *
 * libbus has validated the params against schemas/rpc/verification.<method>.json.
 *
 * verify {user, player_id}: the per-user attempt limit (Redis, fixed
 * window: BUS_VERIFY_ATTEMPTS per BUS_VERIFY_WINDOW_MS; allowed while Redis
 * is down, the shared API limit still holds), the player locked in this
 * process, its document loaded: linked to another user -> conflict naming
 * it; then the game asked (gameapi.c) and the profile stored with the link,
 * player.verified published; a failure publishes
 * player.verification_failed with its reason. Codes still active are then
 * redeemed for the player (giftcodes.c).
 * refresh {player_id}: asks the game again; every changed field becomes a
 * history entry and a player.changed event in the same batch.
 * unlink {user, player_id}: the link is removed, player.unlinked.
 * profile, history, players: reads (players {alliance} asks the alliances
 * domain for the members, a page of theirs per page of ours). bulk_refresh: refresh jobs in the
 * background paced by the shared limit, with player.bulk_refresh.progress.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/rpc.h"
#include "verification.h"

static int64_t param_pid(bus_op_t *op) { return vf_doc_int(bus_op_params(op), "player_id"); }

static void pid_str(int64_t pid, char *buf, size_t cap) { snprintf(buf, cap, "%lld", (long long)pid); }

/* Best effort: a failed verification is news, not state. */
static void publish_failed(bus_op_t *op, const char *reason, const char *message) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "user", VF_PARAM(op, "user"));
    cJSON_AddNumberToObject(d, "player_id", (double)param_pid(op));
    cJSON_AddStringToObject(d, "reason", reason);
    cJSON_AddStringToObject(d, "message", message);
    char subject[24];
    pid_str(param_pid(op), subject, sizeof subject);
    bus_worker_publish(bus_op_worker(op), "player.verification_failed", d, subject, bus_op_correlation_id(op), NULL,
                       NULL, NULL);
}

/* The game's answer for an op: status as vf_player_cb's. */
static int fetched_fail(bus_op_t *op, int status, int64_t retry_after_ms, const char *message, int verify) {
    const vf_player_answer_t *a = VF(op)->answer;
    if (status == 0 && a && a->kind == VF_PLAYER_OK) return 0;
    if (status == 0) { /* 40001: the game says so explicitly */
        if (verify) publish_failed(op, "no_such_player", "the game has no player with this id");
        bus_op_fail(op, BUS_ENOT_FOUND, "the game has no player %lld (ROLE NOT EXIST)", (long long)param_pid(op));
    } else if (status == BUS_ERATE_LIMITED) {
        if (verify) publish_failed(op, "rate_limited", message);
        bus_op_fail(op, BUS_ERATE_LIMITED, "%s (retry_after_ms=%lld)", message, (long long)retry_after_ms);
    } else if (status == BUS_EINTERNAL) {
        if (verify) publish_failed(op, "game_api_error", message);
        bus_op_fail(op, BUS_EINTERNAL, "%s", message);
    } else {
        if (verify) publish_failed(op, "game_api_unavailable", message);
        bus_op_fail(op, BUS_EUNAVAILABLE, "%s", message);
    }
    return -1;
}

static void keep_answer(bus_op_t *op, const vf_player_answer_t *a) {
    if (!a) return;
    free(VF(op)->answer);
    VF(op)->answer = malloc(sizeof *a);
    if (VF(op)->answer) *VF(op)->answer = *a;
}

/* ---- verify ---------------------------------------------------------------- */

static void verify_fetched(int status, const vf_player_answer_t *a, int64_t retry_after_ms, const char *message,
                           void *data) {
    bus_op_t *op = data;
    keep_answer(op, a);
    if (fetched_fail(op, status, retry_after_ms, message, 1)) return;
    const char *user = VF_PARAM(op, "user");
    char now[32], id[24];
    bus_now_rfc3339(now);
    pid_str(param_pid(op), id, sizeof id);
    cJSON *old = VF(op)->player;
    cJSON *doc = vf_player_doc(VF(op)->answer, old, user, now);
    if (old) vf_plan_changes(op, old, doc, now);
    cJSON *view = vf_profile_view(doc);
    cJSON *ev = vf_profile_view(doc);
    cJSON_DeleteItemFromObject(ev, "age_s");
    cJSON_DeleteItemFromObject(ev, "refreshed_at");
    if (old)
        bus_op_plan_replace(op, VF_COLL_PLAYERS, id, vf_doc_version(old), doc);
    else
        bus_op_plan_insert(op, VF_COLL_PLAYERS, id, doc);
    bus_op_plan_event(op, "player.verified", id, ev);
    bus_op_commit(op, view);
}

static void verify_check(bus_op_t *op) {
    const char *user = VF_PARAM(op, "user"), *linked = vf_doc_str(VF(op)->player, "user");
    if (linked[0] && strcmp(linked, user) != 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "player %lld is already linked to %s", (long long)param_pid(op), linked);
        publish_failed(op, "conflict", msg);
        bus_op_fail(op, BUS_ECONFLICT, "%s; they must unlink it first", msg);
        return;
    }
    vf_api_player(vf_state(bus_op_worker(op)), param_pid(op), 10000, verify_fetched, op);
}

static void verify_locked(bus_op_t *op) {
    char id[24];
    pid_str(param_pid(op), id, sizeof id);
    bus_op_load_doc(op, VF_COLL_PLAYERS, id, &VF(op)->player);
    bus_op_load_wait(op, verify_check);
}

static void lock_player(bus_op_t *op) {
    char id[24];
    pid_str(param_pid(op), id, sizeof id);
    bus_op_lock(op, id, verify_locked);
}

static void on_counted(int status, int64_t count, int64_t ttl_ms, void *data) {
    bus_op_t *op = data;
    vf_state_t *st = vf_state(bus_op_worker(op));
    if (status == 0 && count > st->verify_attempts) {
        char msg[200];
        snprintf(msg, sizeof msg, "at most %d verification attempts per %lld minutes; retry in %lld s",
                 st->verify_attempts, (long long)(st->verify_window_ms / 60000), (long long)(ttl_ms / 1000 + 1));
        publish_failed(op, "attempts_exceeded", msg);
        bus_op_fail(op, BUS_ERATE_LIMITED, "%s (retry_after_ms=%lld)", msg, (long long)ttl_ms);
        return;
    }
    lock_player(op);
}

static void verify_load(bus_op_t *op) {
    vf_state_t *st = vf_state(bus_op_worker(op));
    if (bus_op_attempt(op) > 0 || st->verify_attempts <= 0 || !st->redis) {
        lock_player(op);
        return;
    }
    char key[200];
    snprintf(key, sizeof key, "bus:verification:attempts:%s", VF_PARAM(op, "user"));
    if (bus_redis_incr_expire(st->redis, key, st->verify_window_ms, on_counted, op) != 0)
        lock_player(op); /* Redis down: not counted (the shared API limit still holds) */
}

/* ---- refresh ------------------------------------------------------------------ */

static void refresh_fetched(int status, const vf_player_answer_t *a, int64_t retry_after_ms, const char *message,
                            void *data) {
    bus_op_t *op = data;
    keep_answer(op, a);
    if (fetched_fail(op, status, retry_after_ms, message, 0)) return;
    char now[32], id[24];
    bus_now_rfc3339(now);
    pid_str(param_pid(op), id, sizeof id);
    cJSON *old = VF(op)->player;
    cJSON *doc = vf_player_doc(VF(op)->answer, old, NULL, now);
    int changed = vf_plan_changes(op, old, doc, now);
    cJSON *view = vf_profile_view(doc);
    cJSON_AddNumberToObject(view, "changes", changed);
    bus_op_plan_replace(op, VF_COLL_PLAYERS, id, vf_doc_version(old), doc);
    bus_op_commit(op, view);
}

static void refresh_check(bus_op_t *op) {
    if (!VF(op)->player) {
        bus_op_fail(op, BUS_ENOT_FOUND, "player %lld was never verified", (long long)param_pid(op));
        return;
    }
    /* a retry after a lost race uses the answer it already got */
    vf_api_player(vf_state(bus_op_worker(op)), param_pid(op), bus_op_attempt(op) > 0 ? 60000 : 0, refresh_fetched,
                  op);
}

static void refresh_locked(bus_op_t *op) {
    char id[24];
    pid_str(param_pid(op), id, sizeof id);
    bus_op_load_doc(op, VF_COLL_PLAYERS, id, &VF(op)->player);
    bus_op_load_wait(op, refresh_check);
}

static void refresh_load(bus_op_t *op) {
    char id[24];
    pid_str(param_pid(op), id, sizeof id);
    bus_op_lock(op, id, refresh_locked);
}

/* ---- unlink ------------------------------------------------------------------- */

static void unlink_decide(bus_op_t *op) {
    const char *user = VF_PARAM(op, "user");
    if (!VF(op)->player || strcmp(vf_doc_str(VF(op)->player, "user"), user) != 0) {
        bus_op_fail(op, BUS_ENOT_FOUND, "player %lld is not linked to %s", (long long)param_pid(op), user);
        return;
    }
    char id[24];
    pid_str(param_pid(op), id, sizeof id);
    cJSON *patch = cJSON_CreateObject();
    cJSON_AddStringToObject(patch, "user", "");
    bus_op_plan_update(op, VF_COLL_PLAYERS, id, vf_doc_version(VF(op)->player), patch);
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "user", user);
    cJSON_AddNumberToObject(ev, "player_id", (double)param_pid(op));
    bus_op_plan_event(op, "player.unlinked", id, cJSON_Duplicate(ev, 1));
    bus_op_commit(op, ev);
}

static void unlink_locked(bus_op_t *op) {
    char id[24];
    pid_str(param_pid(op), id, sizeof id);
    bus_op_load_doc(op, VF_COLL_PLAYERS, id, &VF(op)->player);
    bus_op_load_wait(op, unlink_decide);
}

static void unlink_load(bus_op_t *op) {
    char id[24];
    pid_str(param_pid(op), id, sizeof id);
    bus_op_lock(op, id, unlink_locked);
}

/* ---- profile ------------------------------------------------------------------ */

static void profile_answer(bus_op_t *op) {
    cJSON *out = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(out, "profiles");
    if (VF(op)->player) cJSON_AddItemToArray(list, vf_profile_view(VF(op)->player));
    const cJSON *d;
    cJSON_ArrayForEach(d, VF(op)->docs) cJSON_AddItemToArray(list, vf_profile_view(d));
    if (cJSON_GetArraySize(list) == 0) {
        cJSON_Delete(out);
        if (VF_PARAM(op, "user")[0])
            bus_op_fail(op, BUS_ENOT_FOUND, "%s has no verified player", VF_PARAM(op, "user"));
        else
            bus_op_fail(op, BUS_ENOT_FOUND, "player %lld was never verified", (long long)param_pid(op));
        return;
    }
    bus_op_reply(op, out);
}

static void profile_load(bus_op_t *op) {
    if (VF_PARAM(op, "user")[0]) {
        cJSON *where = cJSON_CreateObject();
        cJSON_AddStringToObject(where, "user", VF_PARAM(op, "user"));
        bus_op_load_find(op, VF_COLL_PLAYERS, where, NULL, 25, &VF(op)->docs);
    } else {
        char id[24];
        pid_str(param_pid(op), id, sizeof id);
        bus_op_load_doc(op, VF_COLL_PLAYERS, id, &VF(op)->player);
    }
    bus_op_load_wait(op, profile_answer);
}

/* ---- pages: history, players ------------------------------------------------------ */

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
    int history = strcmp(bus_op_method(op), "history") == 0;
    cJSON *out = cJSON_CreateObject();
    if (history) cJSON_AddNumberToObject(out, "player_id", (double)param_pid(op));
    cJSON *items = cJSON_AddArrayToObject(out, history ? "changes" : "players");
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        if (!history) {
            cJSON_AddItemToArray(items, vf_profile_view(d));
            continue;
        }
        cJSON *h = cJSON_CreateObject();
        static const char *const f[] = {"at", "field", "old", "new"};
        for (size_t i = 0; i < 4; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, f[i]);
            cJSON_AddItemToObject(h, f[i], v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
        }
        cJSON_AddItemToArray(items, h);
    }
    if (next_cursor)
        cJSON_AddStringToObject(out, "next_cursor", next_cursor);
    else
        cJSON_AddNullToObject(out, "next_cursor");
    bus_op_reply(op, out);
}

static void page(bus_op_t *op, const char *coll, cJSON *where, const char *sort) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(bus_op_params(op), "cursor");
    int64_t limit = vf_doc_int(bus_op_params(op), "limit");
    bus_store_query_t q = {.where = where,
                           .sort = sort,
                           .limit = limit > 0 ? (int)limit : 50,
                           .cursor = cJSON_IsString(c) && c->valuestring[0] ? c->valuestring : NULL};
    int rc = bus_store_find(vf_state(bus_op_worker(op))->store, coll, &q, on_page, op);
    cJSON_Delete(where);
    if (rc != 0) bus_op_fail(op, rc == BUS_EBAD_REQUEST ? rc : BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

static void history_load(bus_op_t *op) {
    cJSON *where = cJSON_CreateObject();
    cJSON_AddNumberToObject(where, "player_id", (double)param_pid(op));
    page(op, VF_COLL_HISTORY, where, "at");
}

/* players {alliance}: the alliance's members come from the alliances domain
 * (alliances.members, one page of it per page of ours: its cursor is ours),
 * then each member's linked players from the store. VF(op)->docs: the
 * member users still to look up; VF(op)->extra: the answer being built. */
static void alliance_next(bus_op_t *op);

static void on_user_players(int status, const cJSON *docs, const char *next, void *data) {
    bus_op_t *op = data;
    (void)next;
    if (status != 0) {
        bus_op_fail(op, BUS_EUNAVAILABLE, "store: %s", bus_strerror(status));
        return;
    }
    cJSON *list = cJSON_GetObjectItemCaseSensitive(VF(op)->extra, "players");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(bus_op_params(op), "state");
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) if (!cJSON_IsNumber(st) || vf_doc_int(d, "state") == (int64_t)st->valuedouble)
        cJSON_AddItemToArray(list, vf_profile_view(d));
    alliance_next(op);
}

static void alliance_next(bus_op_t *op) {
    cJSON *user = cJSON_DetachItemFromArray(VF(op)->docs, 0);
    if (!user) {
        cJSON *out = VF(op)->extra;
        VF(op)->extra = NULL;
        bus_op_reply(op, out);
        return;
    }
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "user", cJSON_IsString(user) ? user->valuestring : "");
    cJSON_Delete(user);
    bus_store_query_t q = {.where = where, .limit = 25};
    int rc = bus_store_find(vf_state(bus_op_worker(op))->store, VF_COLL_PLAYERS, &q, on_user_players, op);
    cJSON_Delete(where);
    if (rc != 0) bus_op_fail(op, BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

static void on_alliance_members(int status, const char *reply, size_t len, void *data) {
    bus_op_t *op = data;
    cJSON *r = status == 0 ? cJSON_ParseWithLength(reply, len) : NULL;
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "success"))) {
        const char *err = vf_doc_str(r, "error");
        if (strcmp(err, "not_found") == 0)
            bus_op_fail(op, BUS_ENOT_FOUND, "no alliance %s", VF_PARAM(op, "alliance"));
        else if (strcmp(err, "bad_request") == 0)
            bus_op_fail(op, BUS_EBAD_REQUEST, "bad cursor (pass next_cursor of the previous page, same filters)");
        else
            bus_op_fail(op, BUS_EUNAVAILABLE, "the alliances domain did not answer: %s",
                        status != 0 ? bus_err_name(status) : err);
        cJSON_Delete(r);
        return;
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(r, "data"), *m;
    VF(op)->docs = cJSON_CreateArray();
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(d, "members"))
        cJSON_AddItemToArray(VF(op)->docs, cJSON_CreateString(vf_doc_str(m, "user")));
    cJSON *out = cJSON_CreateObject();
    cJSON_AddArrayToObject(out, "players");
    const char *next = vf_doc_str(d, "next_cursor");
    if (next[0])
        cJSON_AddStringToObject(out, "next_cursor", next);
    else
        cJSON_AddNullToObject(out, "next_cursor");
    VF(op)->extra = out;
    cJSON_Delete(r);
    alliance_next(op);
}

static void players_of_alliance(bus_op_t *op) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "id", VF_PARAM(op, "alliance"));
    int64_t limit = vf_doc_int(bus_op_params(op), "limit");
    cJSON_AddNumberToObject(p, "limit", (double)(limit > 0 ? limit : 50));
    if (VF_PARAM(op, "cursor")[0]) cJSON_AddStringToObject(p, "cursor", VF_PARAM(op, "cursor"));
    char *params = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    bus_rpc_call_opts_t o = {.timeout_ms = 3000, .correlation_id = bus_op_correlation_id(op),
                             .caller = "bus-verification"};
    bus_rpc_client_t *rpc = bus_worker_rpc(bus_op_worker(op));
    int rc = rpc ? bus_rpc_call(rpc, "alliances", "members", params, strlen(params), &o, on_alliance_members, op)
                 : BUS_EUNAVAILABLE;
    free(params);
    if (rc != 0) bus_op_fail(op, BUS_EUNAVAILABLE, "cannot ask the alliances domain: %s", bus_strerror(rc));
}

static void players_load(bus_op_t *op) {
    if (VF_PARAM(op, "alliance")[0]) {
        players_of_alliance(op);
        return;
    }
    cJSON *where = cJSON_CreateObject();
    cJSON *ne = cJSON_AddObjectToObject(where, "user");
    cJSON_AddStringToObject(ne, "$gt", ""); /* linked players only */
    if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(bus_op_params(op), "state")))
        cJSON_AddNumberToObject(where, "state", (double)vf_doc_int(bus_op_params(op), "state"));
    page(op, VF_COLL_PLAYERS, where, NULL);
}

/* ---- bulk_refresh --------------------------------------------------------------- */

typedef struct {
    vf_state_t *st;
    char job[37], corr[128];
    cJSON *ids; /* numbers */
    int next, running, done, changed, failed, total;
    uint64_t last_progress;
} bulk_t;

#define BULK_CONCURRENCY 4

static void bulk_progress(bulk_t *b, int final) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "job", b->job);
    cJSON_AddNumberToObject(d, "done", b->done);
    cJSON_AddNumberToObject(d, "total", b->total);
    cJSON_AddNumberToObject(d, "failed", b->failed);
    cJSON_AddBoolToObject(d, "finished", final);
    bus_worker_publish(b->st->w, "player.bulk_refresh.progress", d, b->job, b->corr, NULL, NULL, NULL);
    b->last_progress = uv_now(bus_worker_loop(b->st->w));
}

static void bulk_next(bulk_t *b);

static void bulk_one_done(int status, const char *message, void *data) {
    bulk_t *b = data;
    (void)message;
    b->running--;
    b->done++;
    if (status != 0) b->failed++;
    int final = b->done == b->total;
    if (final || uv_now(bus_worker_loop(b->st->w)) - b->last_progress >= 1000) bulk_progress(b, final);
    if (final) {
        cJSON_Delete(b->ids);
        free(b);
        return;
    }
    bulk_next(b);
}

static void bulk_next(bulk_t *b) {
    while (b->running < BULK_CONCURRENCY && b->next < b->total) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddNumberToObject(p, "player_id", cJSON_GetArrayItem(b->ids, b->next++)->valuedouble);
        bus_op_t *op = bus_op_new_job(b->st->engine, "", b->corr, p, refresh_load, bulk_one_done, b);
        cJSON_Delete(p);
        b->running++;
        if (!op) {
            bulk_one_done(BUS_EINTERNAL, "out of memory", b);
            continue;
        }
        bus_op_start(op, 0);
    }
}

static void bulk_start(bus_op_t *op, cJSON *ids) {
    bulk_t *b = calloc(1, sizeof *b);
    if (!b) {
        cJSON_Delete(ids);
        bus_op_fail(op, BUS_EINTERNAL, "out of memory");
        return;
    }
    b->st = vf_state(bus_op_worker(op));
    bus_uuid(b->job);
    snprintf(b->corr, sizeof b->corr, "%s", bus_op_correlation_id(op));
    b->ids = ids;
    b->total = cJSON_GetArraySize(ids);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "job", b->job);
    cJSON_AddNumberToObject(out, "total", b->total);
    bus_op_reply(op, out);
    if (b->total == 0) {
        bulk_progress(b, 1);
        cJSON_Delete(ids);
        free(b);
        return;
    }
    bulk_progress(b, 0);
    bulk_next(b);
}

static void bulk_found(bus_op_t *op) {
    cJSON *ids = cJSON_CreateArray();
    const cJSON *d;
    cJSON_ArrayForEach(d, VF(op)->docs) cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)vf_doc_int(d, "player_id")));
    bulk_start(op, ids);
}

static void bulk_load(bus_op_t *op) {
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(bus_op_params(op), "player_ids");
    if (cJSON_IsArray(ids)) {
        bulk_start(op, cJSON_Duplicate(ids, 1));
        return;
    }
    cJSON *where = cJSON_CreateObject();
    cJSON_AddNumberToObject(where, "state", (double)vf_doc_int(bus_op_params(op), "state"));
    bus_op_load_find(op, VF_COLL_PLAYERS, where, NULL, BUS_STORE_MAX_LIMIT, &VF(op)->docs);
    bus_op_load_wait(op, bulk_found);
}

/* ---- status ----------------------------------------------------------------------- */

static void status_load(bus_op_t *op) {
    vf_state_t *st = vf_state(bus_op_worker(op));
    const vf_limiter_opts_t *o = vf_limiter_opts(st->limiter);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "instance", bus_worker_instance(st->w));
    cJSON *l = cJSON_AddObjectToObject(out, "limiter");
    cJSON_AddStringToObject(l, "mode", vf_limiter_shared(st->limiter) ? "shared" : "local");
    cJSON_AddNumberToObject(l, "limit", o->limit);
    cJSON_AddNumberToObject(l, "window_ms", (double)o->window_ms);
    cJSON_AddNumberToObject(l, "local_limit", vf_limiter_local_limit(st->limiter));
    cJSON_AddNumberToObject(l, "waiting", (double)vf_limiter_waiting(st->limiter));
    cJSON_AddItemToObject(out, "giftcodes", vf_runner_status(st));
    bus_op_reply(op, out);
}

/* ---- the table ---------------------------------------------------------------------- */

void vf_run(bus_request_t *req, bus_op_step_fn load, int changes) {
    bus_op_t *op = bus_op_new_request(vf_state(bus_request_worker(req))->engine, req, load);
    if (!op) {
        bus_reply_error(req, BUS_EINTERNAL, "out of memory");
        return;
    }
    if (changes == VF_READS)
        bus_op_run(op);
    else
        bus_op_start(op, 0);
}

static void on_verify(bus_request_t *r) { vf_run(r, verify_load, VF_CHANGES); }
static void on_refresh(bus_request_t *r) { vf_run(r, refresh_load, VF_CHANGES); }
static void on_unlink(bus_request_t *r) { vf_run(r, unlink_load, VF_CHANGES); }
static void on_profile(bus_request_t *r) { vf_run(r, profile_load, VF_READS); }
static void on_history(bus_request_t *r) { vf_run(r, history_load, VF_READS); }
static void on_players(bus_request_t *r) { vf_run(r, players_load, VF_READS); }
static void on_bulk_refresh(bus_request_t *r) { vf_run(r, bulk_load, VF_READS); }
static void on_status(bus_request_t *r) { vf_run(r, status_load, VF_READS); }

const bus_method_t vf_methods[] = {
    {"verify", on_verify},
    {"refresh", on_refresh},
    {"unlink", on_unlink},
    {"profile", on_profile},
    {"history", on_history},
    {"players", on_players},
    {"bulk_refresh", on_bulk_refresh},
    {"status", on_status},
    {"giftcodes_add", vf_giftcodes_add},
    {"giftcodes_list", vf_giftcodes_list},
    {"giftcodes_status", vf_giftcodes_status},
    {"privacy_export", vf_privacy_export},
    {"privacy_forget", vf_privacy_forget},
    {NULL, NULL},
};
