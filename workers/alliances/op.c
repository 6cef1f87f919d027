/* The life of one state-changing request (or consumed event), exactly once:
 *
 *   1. marker check: bus_store_processed_get(scope, key) (for the pair
 *      methods read together with their first documents: al_load_marker).
 *      Found: the request
 *      was already done (we died before answering, or the same message came
 *      twice): publish the stored events again, with their original ids so
 *      consumers dedupe, and answer the stored reply. Nothing is re-applied.
 *   2. load (method specific, op->load and the steps it chains), decide with
 *      the rules, and build the plan: the document changes, each conditional
 *      on the version read, the events (built here, ids known), the reply.
 *   3. commit ONE batch: the changes + a MARK (scope, key) whose result is
 *      the outbox {"reply": "<body>", "events": [{"type","id","body"}]}.
 *      A version conflict means another request changed the alliance since
 *      we read it: the whole load-decide-commit runs again on fresh data
 *      after a short random pause, up to AL_MAX_ATTEMPTS times in all (most
 *      races resolve there: the next decision sees the winner's effect and
 *      answers with the rule it now breaks, or simply succeeds, as joins of
 *      different users do); after the last attempt the answer is `conflict`.
 *      A conflict on the MARK itself means a twin of this
 *      request committed first: go to 1.
 *   4. publish the outbox with confirms, then answer (or ack the event). If
 *      the process dies between 3 and 4 the request is redelivered and 1
 *      publishes the same events.
 * Failures (rule violations, not found) change nothing and store nothing:
 * a redelivered failed request is simply decided again.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alliances.h"
#include "bus/error.h"
#include "bus/log.h"
#include "bus/rpc.h"

al_state_t *al_state(bus_worker_t *w) { return bus_worker_state(w); }

static bus_worker_t *op_worker(const al_op_t *op) { return op->st->w; }

al_op_t *al_op_new_request(bus_request_t *req, al_step_fn load) {
    al_op_t *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->st = al_state(bus_request_worker(req));
    op->req = req;
    snprintf(op->method, sizeof op->method, "%s", bus_request_method(req));
    snprintf(op->key, sizeof op->key, "%s", bus_request_id(req));
    snprintf(op->corr, sizeof op->corr, "%s", bus_request_correlation_id(req));
    op->scope = AL_SCOPE_RPC;
    op->params = cJSON_Duplicate(bus_request_params(req), 1);
    op->events = cJSON_CreateArray();
    op->load = load;
    return op;
}

al_op_t *al_op_new_event(bus_event_t *ev, al_step_fn load) {
    al_op_t *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    const bus_envelope_t *e = bus_event_envelope(ev);
    op->st = al_state(bus_event_worker(ev));
    op->ev = ev;
    snprintf(op->method, sizeof op->method, "%s", e->type);
    snprintf(op->key, sizeof op->key, "%s", e->id);
    snprintf(op->corr, sizeof op->corr, "%s", e->correlationid ? e->correlationid : e->id);
    op->scope = AL_SCOPE_EVENTS;
    op->params = e->data ? cJSON_Duplicate(e->data, 1) : cJSON_CreateObject();
    op->events = cJSON_CreateArray();
    op->load = load;
    return op;
}

/* Forgets what was loaded and planned (before a retry, and at the end). */
static void op_reset(al_op_t *op) {
    cJSON **docs[] = {&op->alliance, &op->other, &op->m_user, &op->m_actor, &op->succ, &op->members};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        cJSON_Delete(*docs[i]);
        *docs[i] = NULL;
    }
    for (size_t i = 0; i < op->nops; i++) cJSON_Delete(op->owned[i]);
    op->nops = 0;
    cJSON_Delete(op->events);
    op->events = cJSON_CreateArray();
    free(op->reply);
    op->reply = NULL;
    cJSON_Delete(op->leftover);
    op->leftover = NULL;
    op->load_err = 0;
    op->pending = 0;
}

/* ---- per-alliance locks within this process --------------------------------
 *
 * Requests on one alliance inside one process run one at a time: without
 * this, a burst of joins to one alliance would mostly collide on the
 * alliance's version and spend their retries. Across processes the store's
 * version checks still decide (and the retries absorb the few collisions).
 * An op holds at most one lock, from al_lock until it is freed. */
typedef struct al_lock {
    char key[64];
    al_op_t *holder;
    al_op_t *head, *tail; /* waiting, in arrival order */
    struct al_lock *next;
} al_lock_t;

static al_lock_t *locks; /* loop thread only */

static void lock_handoff(al_lock_t *l) {
    al_op_t *w = l->head;
    if (!w) {
        for (al_lock_t **pp = &locks; *pp; pp = &(*pp)->next)
            if (*pp == l) {
                *pp = l->next;
                break;
            }
        free(l);
        return;
    }
    l->head = w->wait_next;
    if (!l->head) l->tail = NULL;
    w->wait_next = NULL;
    l->holder = w;
    w->lock = l;
    al_step_fn next = w->lock_next;
    w->lock_next = NULL;
    next(w);
}

void al_lock(al_op_t *op, const char *key, al_step_fn next) {
    if (op->lock && strncmp(op->lock->key, key, sizeof op->lock->key - 1) == 0) {
        next(op);
        return;
    }
    if (op->lock) { /* the membership moved to another alliance between attempts */
        al_lock_t *old = op->lock;
        op->lock = NULL;
        old->holder = NULL;
        lock_handoff(old);
    }
    al_lock_t *l = locks;
    while (l && strncmp(l->key, key, sizeof l->key - 1) != 0) l = l->next;
    if (!l) {
        l = calloc(1, sizeof *l);
        if (!l) {
            next(op); /* no lock: the store's checks still keep the rules */
            return;
        }
        snprintf(l->key, sizeof l->key, "%s", key);
        l->next = locks;
        locks = l;
    }
    if (!l->holder) {
        l->holder = op;
        op->lock = l;
        next(op);
        return;
    }
    op->lock_next = next;
    if (l->tail)
        l->tail->wait_next = op;
    else
        l->head = op;
    l->tail = op;
}

void al_op_free(al_op_t *op) {
    if (!op) return;
    al_lock_t *l = op->lock;
    op_reset(op);
    cJSON_Delete(op->marker);
    cJSON_Delete(op->events);
    cJSON_Delete(op->params);
    free(op);
    if (l) {
        l->holder = NULL;
        lock_handoff(l);
    }
}

static void replay(al_op_t *op, const cJSON *result);
static void fail_now(al_op_t *op, int err, const char *msg);

static void on_marker_before_fail(int status, const cJSON *result, void *data) {
    al_op_t *op = data;
    if (status == 0)
        replay(op, result);
    else
        fail_now(op, op->fail_err, op->fail_msg);
}

/* A refusal of a state-changing request looks at the marker once more: a
 * twin of this request (same message id) may have committed while this one
 * was deciding, and then the twin's answer is the answer. */
void al_op_fail(al_op_t *op, int err, const char *fmt, ...) {
    char msg[512] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (op->req && op->key[0] && !op->rechecked &&
        (err == BUS_ECONFLICT || err == BUS_ENOT_FOUND || err == BUS_EPERMISSION)) {
        op->rechecked = 1;
        op->fail_err = err;
        snprintf(op->fail_msg, sizeof op->fail_msg, "%s", msg);
        if (bus_store_processed_get(op->st->store, op->scope, op->key, on_marker_before_fail, op) == 0) return;
    }
    fail_now(op, err, msg);
}

static void fail_now(al_op_t *op, int err, const char *msg) {
    if (op->req) {
        bus_reply_error(op->req, err, "%s", msg);
    } else if (op->ev) {
        /* an event: nothing to do is done; store trouble and lost races are
         * retried later; anything else cannot succeed by retrying */
        int status = err;
        if (err == BUS_ENOT_FOUND || err == BUS_EPERMISSION) status = 0;
        if (err == BUS_ECONFLICT) status = BUS_EUNAVAILABLE;
        if (status) bus_warn(op->corr, "%s %s: %s: %s", op->method, op->key, bus_err_name(err), msg);
        bus_event_done(op->ev, status, msg);
    }
    al_op_free(op);
}

void al_op_reply(al_op_t *op, cJSON *data) {
    if (op->req)
        bus_reply_ok(op->req, data);
    else {
        cJSON_Delete(data);
        if (op->ev) bus_event_done(op->ev, 0, NULL);
    }
    al_op_free(op);
}

/* ---- publishing the outbox, then answering ---------------------------- */

static void op_finish(al_op_t *op) {
    if (op->leftover) {
        al_delete_later(op->st, op->leftover);
        op->leftover = NULL;
    }
    if (op->publish_failed) {
        /* The change is stored with its outbox: a redelivery of the same
         * message (same id) publishes the events. An RPC caller learns it
         * through `unavailable`; an event is retried by libbus. */
        if (op->req)
            bus_reply_error(op->req, BUS_EUNAVAILABLE,
                            "the change is stored but its events were not confirmed by the broker; "
                            "send the same request (same message id) again to publish them");
        else if (op->ev)
            bus_event_done(op->ev, BUS_EUNAVAILABLE, "events not confirmed");
    } else if (op->req) {
        const char *body = op->reply ? op->reply : "{\"success\":true,\"data\":null}";
        bus_reply_raw(op->req, body, strlen(body));
    } else if (op->ev) {
        bus_event_done(op->ev, 0, NULL);
    }
    op->req = NULL;
    op->ev = NULL;
    al_op_free(op);
}

static void confirm_settle(al_op_t *op) {
    if (--op->unconfirmed == 0) op_finish(op);
}

static void on_confirm(int status, void *data) {
    al_op_t *op = data;
    if (status != 0) op->publish_failed = 1;
    confirm_settle(op);
}

static void publish_outbox(al_op_t *op) {
    op->unconfirmed = 1; /* held while sending */
    cJSON *e;
    cJSON_ArrayForEach(e, op->events) {
        const char *body = al_doc_str(e, "body");
        int rc = bus_worker_publish_raw(op_worker(op), al_doc_str(e, "type"), al_doc_str(e, "id"), op->corr, body,
                                        strlen(body), on_confirm, op);
        if (rc == 0)
            op->unconfirmed++;
        else
            op->publish_failed = 1;
    }
    confirm_settle(op);
}

/* Step 1 found the marker: the stored outbox again. */
static void replay(al_op_t *op, const cJSON *result) {
    bus_info(op->corr, "%s %s was already processed: answering the stored result", op->method, op->key);
    const cJSON *events = cJSON_GetObjectItemCaseSensitive(result, "events");
    const cJSON *reply = cJSON_GetObjectItemCaseSensitive(result, "reply");
    cJSON_Delete(op->events);
    op->events = cJSON_IsArray(events) ? cJSON_Duplicate(events, 1) : cJSON_CreateArray();
    free(op->reply);
    op->reply = cJSON_IsString(reply) ? strdup(reply->valuestring) : NULL;
    publish_outbox(op);
}

static void on_marker(int status, const cJSON *result, void *data) {
    al_op_t *op = data;
    if (status == 0)
        replay(op, result);
    else if (status == BUS_ENOT_FOUND)
        op->load(op);
    else
        al_op_fail(op, status, "store: cannot read the request marker: %s", bus_strerror(status));
}

static void check_marker(al_op_t *op) {
    int rc = bus_store_processed_get(op->st->store, op->scope, op->key, on_marker, op);
    if (rc != 0) al_op_fail(op, BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

void al_op_start(al_op_t *op) {
    if (!op) return;
    /* no id to remember it by: decided every time; or the load reads the
     * marker itself, with its first documents (al_load_marker) */
    if (!op->key[0] || op->marker_in_load) {
        op->load(op);
        return;
    }
    check_marker(op);
}

/* ---- loads -------------------------------------------------------------- */

typedef struct {
    al_op_t *op;
    cJSON **slot;
} load_t;

static void load_settle(al_op_t *op) {
    if (op->pending > 0) return;
    if (op->load_err) {
        al_op_fail(op, op->load_err, "store: %s", bus_strerror(op->load_err));
        return;
    }
    al_step_fn next = op->next;
    op->next = NULL;
    if (next) next(op);
}

static void on_load_doc(int status, const cJSON *doc, void *data) {
    load_t *l = data;
    al_op_t *op = l->op;
    if (status == 0)
        *l->slot = cJSON_Duplicate(doc, 1);
    else if (status != BUS_ENOT_FOUND && !op->load_err)
        op->load_err = status;
    free(l);
    op->pending--;
    load_settle(op);
}

static void on_load_find(int status, const cJSON *docs, const char *next_cursor, void *data) {
    (void)next_cursor;
    load_t *l = data;
    al_op_t *op = l->op;
    if (status == 0)
        *l->slot = cJSON_Duplicate(docs, 1);
    else if (!op->load_err)
        op->load_err = status;
    free(l);
    op->pending--;
    load_settle(op);
}

void al_load_doc(al_op_t *op, const char *coll, const char *id, cJSON **slot) {
    load_t *l = malloc(sizeof *l);
    if (!l) {
        op->load_err = BUS_EINTERNAL;
        return;
    }
    *l = (load_t){op, slot};
    int rc = bus_store_get(op->st->store, coll, id, on_load_doc, l);
    if (rc != 0) {
        free(l);
        if (!op->load_err) op->load_err = rc;
        return;
    }
    op->pending++;
}

void al_load_find(al_op_t *op, const char *coll, cJSON *where, const char *sort, int limit, cJSON **slot) {
    load_t *l = malloc(sizeof *l);
    if (!l) {
        cJSON_Delete(where);
        op->load_err = BUS_EINTERNAL;
        return;
    }
    *l = (load_t){op, slot};
    bus_store_query_t q = {.where = where, .sort = sort, .limit = limit};
    int rc = bus_store_find(op->st->store, coll, &q, on_load_find, l);
    cJSON_Delete(where); /* the store copied it */
    if (rc != 0) {
        free(l);
        if (!op->load_err) op->load_err = rc;
        return;
    }
    op->pending++;
}

static void on_load_marker(int status, const cJSON *result, void *data) {
    al_op_t *op = data;
    if (status == 0)
        op->marker = cJSON_Duplicate(result, 1);
    else if (status != BUS_ENOT_FOUND && !op->load_err)
        op->load_err = status;
    op->pending--;
    load_settle(op);
}

void al_load_marker(al_op_t *op) {
    if (!op->key[0] || op->marker_loaded) return;
    op->marker_loaded = 1;
    int rc = bus_store_processed_get(op->st->store, op->scope, op->key, on_load_marker, op);
    if (rc != 0) {
        if (!op->load_err) op->load_err = rc;
        return;
    }
    op->pending++;
}

int al_marker_replayed(al_op_t *op) {
    if (!op->marker) return 0;
    cJSON *outcome = op->marker;
    op->marker = NULL;
    replay(op, outcome); /* copies what it keeps; op may be gone after */
    cJSON_Delete(outcome);
    return 1;
}

/* Callbacks of the store never run before this (they come later on the
 * loop), so waiting can be decided here. */
void al_load_wait(al_op_t *op, al_step_fn next) {
    op->next = next;
    load_settle(op);
}

/* ---- plan and commit ----------------------------------------------------- */

static void plan_add(al_op_t *op, bus_store_op_kind_t kind, const char *coll, const char *id, int64_t v, cJSON *doc) {
    if (op->nops >= AL_MAX_OPS) { /* callers stay below; keep the invariant anyway */
        cJSON_Delete(doc);
        op->load_err = BUS_EINTERNAL;
        return;
    }
    /* the id string must outlive the batch call: keep it in the owned doc */
    cJSON *holder = cJSON_CreateObject();
    cJSON_AddStringToObject(holder, "id", id);
    if (doc) cJSON_AddItemToObject(holder, "doc", doc);
    op->owned[op->nops] = holder;
    op->ops[op->nops] = (bus_store_op_t){.kind = kind,
                                         .coll = coll,
                                         .id = cJSON_GetObjectItem(holder, "id")->valuestring,
                                         .version = v,
                                         .doc = doc};
    op->nops++;
}

void al_plan_insert(al_op_t *op, const char *coll, const char *id, cJSON *doc) {
    plan_add(op, BUS_STORE_OP_INSERT, coll, id, 0, doc);
}
void al_plan_update(al_op_t *op, const char *coll, const char *id, int64_t v, cJSON *patch) {
    plan_add(op, BUS_STORE_OP_UPDATE, coll, id, v, patch);
}
void al_plan_delete(al_op_t *op, const char *coll, const char *id, int64_t v) {
    plan_add(op, BUS_STORE_OP_DELETE, coll, id, v, NULL);
}

static void on_marker_after_race(int status, const cJSON *result, void *data) {
    al_op_t *op = data;
    if (status == 0)
        replay(op, result);
    else
        al_op_fail(op, BUS_ECONFLICT, "a concurrent copy of this request is being processed");
}

/* A retry after a lost race waits a little, with jitter, so that requests
 * racing for one alliance (in this process or in others) spread out. */
static void on_retry_closed(uv_handle_t *h) { free(h); }

static void on_retry(uv_timer_t *t) {
    al_op_t *op = t->data;
    uv_close((uv_handle_t *)t, on_retry_closed);
    op->load(op);
}

static void retry_later(al_op_t *op) {
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) {
        op->load(op);
        return;
    }
    uv_timer_init(bus_worker_loop(op_worker(op)), t);
    t->data = op;
    uint64_t span = 4u << op->attempt; /* 8, 16, 32, 64 ms */
    uv_timer_start(t, on_retry, 1 + (uint64_t)rand() % span, 0);
}

static void on_batch(int status, long failed, const int64_t *versions, void *data) {
    (void)versions;
    al_op_t *op = data;
    if (status == 0) {
        publish_outbox(op);
        return;
    }
    if (status == BUS_ECONFLICT && failed == (long)op->nops - 1) {
        /* the marker exists: a twin of this request committed first */
        for (size_t i = 0; i < op->nops; i++) cJSON_Delete(op->owned[i]);
        op->nops = 0;
        if (bus_store_processed_get(op->st->store, op->scope, op->key, on_marker_after_race, op) != 0)
            al_op_fail(op, BUS_EUNAVAILABLE, "store unavailable");
        return;
    }
    if (status == BUS_ECONFLICT && op->attempt + 1 < AL_MAX_ATTEMPTS) {
        op->attempt++;
        op_reset(op);
        retry_later(op);
        return;
    }
    if (status == BUS_ECONFLICT)
        al_op_fail(op, BUS_ECONFLICT, "lost a race: the alliance changed while this request was decided; try again");
    else
        al_op_fail(op, status, "store: %s", bus_strerror(status));
}

/* One validation result buffer for the loop thread (about 9 KB). */
static bus_schema_result_t check_result;

void al_op_commit(al_op_t *op, cJSON *data) {
    bus_schema_registry_t *reg = bus_worker_schemas(op_worker(op));
    if (op->req) {
        const bus_schema_t *rs = reg ? bus_schema_registry_result(reg, "alliances", op->method) : NULL;
        if (rs && bus_schema_validate_at(rs, data, "/data", &check_result) != 0) {
            char why[512];
            bus_schema_result_format(&check_result, why, sizeof why);
            bus_error(op->corr, "alliances.%s: reply violates its schema: %s", op->method, why);
            cJSON_Delete(data);
            al_op_fail(op, BUS_EINTERNAL, "reply violates its schema: %s", why);
            return;
        }
        op->reply = bus_rpc_reply_ok_json(data, NULL);
    }
    cJSON_Delete(data);
    if (op->load_err || (op->req && !op->reply) || op->nops >= AL_MAX_OPS) {
        al_op_fail(op, BUS_EINTERNAL, "cannot build the change");
        return;
    }
    cJSON *outbox = cJSON_CreateObject();
    if (op->reply) cJSON_AddStringToObject(outbox, "reply", op->reply);
    cJSON_AddItemToObject(outbox, "events", cJSON_Duplicate(op->events, 1));
    plan_add(op, BUS_STORE_OP_MARK, op->scope, op->key, 0, outbox);
    int rc = bus_store_batch(op->st->store, op->ops, op->nops, on_batch, op);
    if (rc != 0) al_op_fail(op, BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

/* ---- events into the outbox --------------------------------------------- */

int al_plan_event(al_op_t *op, const char *type, const char *subject, cJSON *data) {
    bus_envelope_t env = {0};
    char source[64];
    snprintf(source, sizeof source, "bus-%s", bus_worker_service(op_worker(op)));
    if (bus_envelope_init(&env, type, source, subject, op->corr[0] ? op->corr : NULL, data) != 0)
        return BUS_EINTERNAL;
    bus_schema_registry_t *reg = bus_worker_schemas(op_worker(op));
    const bus_schema_t *s = reg ? bus_schema_registry_event(reg, type) : NULL;
    if (s) {
        if (bus_schema_validate_at(s, env.data, "/data", &check_result) != 0) {
            char why[512];
            bus_schema_result_format(&check_result, why, sizeof why);
            bus_error(op->corr, "refusing to publish an invalid %s event: %s", type, why);
            bus_envelope_clear(&env);
            op->load_err = BUS_EINVALID;
            return BUS_EINVALID;
        }
        env.dataschema = strdup(bus_schema_uri(s));
    }
    size_t len = 0;
    char *body = bus_envelope_serialize(&env, &len);
    if (!body) {
        bus_envelope_clear(&env);
        op->load_err = BUS_EINTERNAL;
        return BUS_EINTERNAL;
    }
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddStringToObject(e, "id", env.id);
    cJSON_AddStringToObject(e, "body", body);
    cJSON_AddItemToArray(op->events, e);
    free(body);
    bus_envelope_clear(&env);
    return 0;
}
