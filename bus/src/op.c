/* The exactly-once engine of state-changing work. See bus/op.h for the life
 * of an op, the contention design and ownership. */
#include "bus/op.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/metrics.h"
#include "bus/rpc.h"
#include "worker_internal.h"

/* A lost race waits a random time below this bound, which starts at 2 ms
 * and doubles per attempt up to the cap. */
#define RETRY_FIRST_SPAN_MS 2
#define RETRY_MAX_SPAN_MS 100

typedef struct op_lock op_lock_t;

struct bus_op_engine {
    bus_worker_t *w;
    bus_store_t *store;
    bus_op_engine_options_t o;
    op_lock_t *locks; /* held or waited for; loop thread only */
    bus_counter_t *m_conflict_retries;
    bus_counter_t *m_replays;
};

enum op_kind { OP_REQUEST, OP_EVENT, OP_JOB };

struct bus_op {
    bus_op_engine_t *e;
    enum op_kind kind;
    bus_request_t *req;
    bus_event_t *ev;
    bus_op_job_cb job_cb;
    void *job_data;
    char method[64];
    char key[128];   /* idempotency key ("" = none) */
    char corr[128];  /* correlation id carried by the events */
    const char *scope;
    cJSON *params;
    int attempt;
    uint64_t deadline; /* loop time (ms) after which a lost race is not retried */
    bus_op_step_fn load;
    int marker_loaded;
    cJSON *marker;

    int pending;  /* loads in flight */
    int load_err; /* first load or plan failure */
    bus_op_step_fn next;

    bus_store_op_t ops[BUS_OP_MAX_OPS];
    cJSON *owned[BUS_OP_MAX_OPS];
    size_t nops;
    cJSON *events; /* outbox: [{"type","id","body"}] */
    char *reply;   /* the success reply body (RPC) */
    int unconfirmed;
    int publish_failed;

    int rechecked;
    int fail_err;
    char fail_msg[512];

    op_lock_t *lock;
    bus_op_t *wait_next;
    bus_op_step_fn lock_next;
    uv_timer_t *retry_timer;

    cJSON *page_head; /* bus_op_reply_page: the answer being built */
    const char *page_field;
    bus_op_view_fn page_view;

    max_align_t ctx[]; /* the domain's context, ctx_size bytes */
};

/* ---- the engine ------------------------------------------------------------ */

int bus_op_engine_new(bus_worker_t *w, bus_store_t *store, const bus_op_engine_options_t *o, bus_op_engine_t **out) {
    bus_op_engine_t *e = calloc(1, sizeof *e);
    if (!e) return BUS_EINTERNAL;
    e->w = w;
    e->store = store;
    e->o = *o;
    if (!e->o.rpc_scope) e->o.rpc_scope = "rpc";
    if (!e->o.event_scope) e->o.event_scope = "events";
    if (e->o.retry_budget_ms <= 0) e->o.retry_budget_ms = bus_worker_config(w)->rpc_timeout_ms;
    const char *svc = bus_worker_service(w);
    e->m_conflict_retries = bus_counter("bus_op_conflict_retries_total",
                                        "Load-decide-commit rounds run again after losing a race", "service", svc,
                                        NULL);
    e->m_replays = bus_counter("bus_op_replays_total", "Requests and events answered from their stored outcome",
                               "service", svc, NULL);
    *out = e;
    return 0;
}

void bus_op_engine_free(bus_op_engine_t *e) { free(e); }
bus_store_t *bus_op_engine_store(const bus_op_engine_t *e) { return e->store; }

/* ---- creating and freeing ops ---------------------------------------------- */

static bus_op_t *op_new(bus_op_engine_t *e, enum op_kind kind, const char *method, const char *key,
                        const char *corr, const cJSON *params, bus_op_step_fn load) {
    bus_op_t *op = calloc(1, sizeof *op + e->o.ctx_size);
    if (!op) return NULL;
    op->e = e;
    op->kind = kind;
    snprintf(op->method, sizeof op->method, "%s", method);
    snprintf(op->key, sizeof op->key, "%s", key ? key : "");
    snprintf(op->corr, sizeof op->corr, "%s", corr ? corr : "");
    op->scope = kind == OP_REQUEST ? e->o.rpc_scope : e->o.event_scope;
    op->params = params ? cJSON_Duplicate(params, 1) : cJSON_CreateObject();
    op->events = cJSON_CreateArray();
    op->load = load;
    op->deadline = uv_now(bus_worker_loop(e->w)) + (uint64_t)e->o.retry_budget_ms;
    if (!op->params || !op->events) {
        cJSON_Delete(op->params);
        cJSON_Delete(op->events);
        free(op);
        return NULL;
    }
    return op;
}

bus_op_t *bus_op_new_request(bus_op_engine_t *e, bus_request_t *req, bus_op_step_fn load) {
    bus_op_t *op = op_new(e, OP_REQUEST, bus_request_method(req), bus_request_id(req),
                          bus_request_correlation_id(req), bus_request_params(req), load);
    if (op) {
        op->req = req;
        op->deadline = bus_request_deadline(req);
    }
    return op;
}

bus_op_t *bus_op_new_event(bus_op_engine_t *e, bus_event_t *ev, bus_op_step_fn load) {
    const bus_envelope_t *env = bus_event_envelope(ev);
    bus_op_t *op = op_new(e, OP_EVENT, env->type, env->id, env->correlationid ? env->correlationid : env->id,
                          env->data, load);
    if (op) op->ev = ev;
    return op;
}

bus_op_t *bus_op_new_job(bus_op_engine_t *e, const char *key, const char *correlation_id, const cJSON *params,
                         bus_op_step_fn load, bus_op_job_cb cb, void *cbdata) {
    bus_op_t *op = op_new(e, OP_JOB, "job", key, correlation_id, params, load);
    if (!op) return NULL;
    op->job_cb = cb;
    op->job_data = cbdata;
    bus__worker_work_started(e->w);
    return op;
}

void *bus_op_ctx(bus_op_t *op) { return op->ctx; }
const cJSON *bus_op_params(const bus_op_t *op) { return op->params; }
const char *bus_op_method(const bus_op_t *op) { return op->method; }
const char *bus_op_key(const bus_op_t *op) { return op->key; }
const char *bus_op_correlation_id(const bus_op_t *op) { return op->corr; }
bus_request_t *bus_op_request(const bus_op_t *op) { return op->req; }
bus_event_t *bus_op_event(const bus_op_t *op) { return op->ev; }
bus_worker_t *bus_op_worker(const bus_op_t *op) { return op->e->w; }
bus_op_engine_t *bus_op_engine(const bus_op_t *op) { return op->e; }
bus_store_t *bus_op_store(const bus_op_t *op) { return op->e->store; }
int bus_op_attempt(const bus_op_t *op) { return op->attempt; }
size_t bus_op_planned(const bus_op_t *op) { return op->nops; }

/* Forgets what was loaded and planned (before a retry, and at the end). */
static void op_reset(bus_op_t *op) {
    if (op->e->o.ctx_reset) op->e->o.ctx_reset(op, op->ctx);
    for (size_t i = 0; i < op->nops; i++) cJSON_Delete(op->owned[i]);
    op->nops = 0;
    cJSON_Delete(op->events);
    op->events = cJSON_CreateArray();
    free(op->reply);
    op->reply = NULL;
    op->load_err = 0;
    op->pending = 0;
}

static void lock_release(bus_op_t *op);

static void op_free(bus_op_t *op) {
    op_reset(op);
    cJSON_Delete(op->marker);
    cJSON_Delete(op->events);
    cJSON_Delete(op->params);
    cJSON_Delete(op->page_head);
    int job = op->kind == OP_JOB;
    bus_worker_t *w = op->e->w;
    lock_release(op); /* may start the next op waiting for the lock */
    free(op);
    if (job) bus__worker_work_done(w);
}

/* ---- per-key locks within this process ---------------------------------------
 *
 * Requests on one key inside one process run one at a time: without this, a
 * burst on one alliance would mostly collide with itself on the alliance's
 * version. Across processes the store's version checks decide. */
struct op_lock {
    char key[64];
    bus_op_t *holder;
    bus_op_t *head, *tail; /* waiting, in arrival order */
    op_lock_t *next;
};

static void lock_handoff(bus_op_engine_t *e, op_lock_t *l) {
    bus_op_t *w = l->head;
    if (!w) {
        for (op_lock_t **pp = &e->locks; *pp; pp = &(*pp)->next)
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
    bus_op_step_fn next = w->lock_next;
    w->lock_next = NULL;
    next(w);
}

static void lock_release(bus_op_t *op) {
    op_lock_t *l = op->lock;
    if (!l) return;
    op->lock = NULL;
    l->holder = NULL;
    lock_handoff(op->e, l);
}

void bus_op_lock(bus_op_t *op, const char *key, bus_op_step_fn next) {
    if (op->lock && strncmp(op->lock->key, key, sizeof op->lock->key - 1) == 0) {
        next(op);
        return;
    }
    lock_release(op); /* the key moved (e.g. a membership changed alliance between attempts) */
    op_lock_t *l = op->e->locks;
    while (l && strncmp(l->key, key, sizeof l->key - 1) != 0) l = l->next;
    if (!l) {
        l = calloc(1, sizeof *l);
        if (!l) {
            next(op); /* no lock: the store's checks still keep the rules */
            return;
        }
        snprintf(l->key, sizeof l->key, "%s", key);
        l->next = op->e->locks;
        op->e->locks = l;
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

/* ---- ending ------------------------------------------------------------------ */

static void replay(bus_op_t *op, const cJSON *result);
static void fail_now(bus_op_t *op, int err, const char *msg);

static void on_marker_before_fail(int status, const cJSON *result, void *data) {
    bus_op_t *op = data;
    if (status == 0)
        replay(op, result);
    else
        fail_now(op, op->fail_err, op->fail_msg);
}

void bus_op_fail(bus_op_t *op, int err, const char *fmt, ...) {
    char msg[512] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* a twin of this request (same message id) may have committed while
     * this one was deciding: then the twin's answer is the answer */
    if (op->kind == OP_REQUEST && op->key[0] && !op->rechecked &&
        (err == BUS_ECONFLICT || err == BUS_ENOT_FOUND || err == BUS_EPERMISSION)) {
        op->rechecked = 1;
        op->fail_err = err;
        snprintf(op->fail_msg, sizeof op->fail_msg, "%s", msg);
        if (bus_store_processed_get(op->e->store, op->scope, op->key, on_marker_before_fail, op) == 0) return;
    }
    fail_now(op, err, msg);
}

static void fail_now(bus_op_t *op, int err, const char *msg) {
    switch (op->kind) {
    case OP_REQUEST:
        bus_reply_error(op->req, err, "%s", msg);
        break;
    case OP_EVENT: {
        /* nothing to do is done; lost races and store trouble are retried
         * later; anything else cannot succeed by retrying */
        int status = err;
        if (err == BUS_ENOT_FOUND || err == BUS_EPERMISSION) status = 0;
        if (err == BUS_ECONFLICT) status = BUS_EUNAVAILABLE;
        if (status) bus_warn(op->corr, "%s %s: %s: %s", op->method, op->key, bus_err_name(err), msg);
        bus_event_done(op->ev, status, msg);
        break;
    }
    case OP_JOB:
        if (op->job_cb) op->job_cb(err, msg, op->job_data);
        break;
    }
    op_free(op);
}

void bus_op_reply(bus_op_t *op, cJSON *data) {
    switch (op->kind) {
    case OP_REQUEST:
        bus_reply_ok(op->req, data);
        break;
    case OP_EVENT:
        cJSON_Delete(data);
        bus_event_done(op->ev, 0, NULL);
        break;
    case OP_JOB:
        cJSON_Delete(data);
        if (op->job_cb) op->job_cb(0, "", op->job_data);
        break;
    }
    op_free(op);
}

/* ---- pages --------------------------------------------------------------------- */

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
    cJSON *out = op->page_head;
    op->page_head = NULL;
    cJSON *items = cJSON_AddArrayToObject(out, op->page_field);
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        cJSON *v = op->page_view(d);
        if (v) cJSON_AddItemToArray(items, v);
    }
    if (next_cursor)
        cJSON_AddStringToObject(out, "next_cursor", next_cursor);
    else
        cJSON_AddNullToObject(out, "next_cursor");
    bus_op_reply(op, out);
}

void bus_op_reply_page(bus_op_t *op, const char *coll, cJSON *where, const char *sort, cJSON *head,
                       const char *field, bus_op_view_fn view) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(op->params, "cursor");
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(op->params, "limit");
    int limit = cJSON_IsNumber(l) && l->valuedouble >= 1 ? (int)l->valuedouble : 50;
    bus_store_query_t q = {.where = where,
                           .sort = sort,
                           .limit = limit,
                           .cursor = cJSON_IsString(c) && c->valuestring[0] ? c->valuestring : NULL};
    cJSON_Delete(op->page_head);
    op->page_head = head ? head : cJSON_CreateObject();
    op->page_field = field;
    op->page_view = view;
    int rc = bus_store_find(op->e->store, coll, &q, on_page, op);
    cJSON_Delete(where); /* the store copied it */
    if (rc != 0) bus_op_fail(op, rc == BUS_EBAD_REQUEST ? rc : BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

/* ---- publishing the outbox, then answering -------------------------------------- */

static void op_finish(bus_op_t *op) {
    if (op->publish_failed) {
        /* The change is stored with its outbox: a redelivery of the same
         * message (same id) publishes the events. */
        fail_now(op, BUS_EUNAVAILABLE,
                 op->kind == OP_REQUEST ? "the change is stored but its events were not confirmed by the broker; "
                                          "send the same request (same message id) again to publish them"
                                        : "events not confirmed by the broker");
        return;
    }
    if (op->kind == OP_REQUEST) {
        const char *body = op->reply ? op->reply : "{\"success\":true,\"data\":null}";
        bus_reply_raw(op->req, body, strlen(body));
    } else if (op->kind == OP_EVENT) {
        bus_event_done(op->ev, 0, NULL);
    } else if (op->job_cb) {
        op->job_cb(0, "", op->job_data);
    }
    op_free(op);
}

static void confirm_settle(bus_op_t *op) {
    if (--op->unconfirmed == 0) op_finish(op);
}

static void on_confirm(int status, void *data) {
    bus_op_t *op = data;
    if (status != 0) op->publish_failed = 1;
    confirm_settle(op);
}

static const char *item_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static void publish_outbox(bus_op_t *op) {
    op->unconfirmed = 1; /* held while sending */
    const cJSON *ev;
    cJSON_ArrayForEach(ev, op->events) {
        const char *body = item_str(ev, "body");
        int rc = bus_worker_publish_raw(op->e->w, item_str(ev, "type"), item_str(ev, "id"), op->corr, body,
                                        strlen(body), on_confirm, op);
        if (rc == 0)
            op->unconfirmed++;
        else
            op->publish_failed = 1;
    }
    confirm_settle(op);
}

/* The marker was found: its stored outcome again. */
static void replay(bus_op_t *op, const cJSON *result) {
    bus_info(op->corr, "%s %s was already processed: answering the stored result", op->method, op->key);
    bus_counter_inc(op->e->m_replays, 1);
    const cJSON *events = cJSON_GetObjectItemCaseSensitive(result, "events");
    const cJSON *reply = cJSON_GetObjectItemCaseSensitive(result, "reply");
    cJSON_Delete(op->events);
    op->events = cJSON_IsArray(events) ? cJSON_Duplicate(events, 1) : cJSON_CreateArray();
    free(op->reply);
    op->reply = cJSON_IsString(reply) ? strdup(reply->valuestring) : NULL;
    publish_outbox(op);
}

static void on_marker(int status, const cJSON *result, void *data) {
    bus_op_t *op = data;
    if (status == 0)
        replay(op, result);
    else if (status == BUS_ENOT_FOUND)
        op->load(op);
    else
        bus_op_fail(op, status, "store: cannot read the marker: %s", bus_strerror(status));
}

void bus_op_start(bus_op_t *op, int marker_in_load) {
    if (!op) return;
    /* no id to remember it by: decided every time; or the load reads the
     * marker itself, with its first documents */
    if (!op->key[0] || marker_in_load) {
        op->load(op);
        return;
    }
    int rc = bus_store_processed_get(op->e->store, op->scope, op->key, on_marker, op);
    if (rc != 0) bus_op_fail(op, BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

void bus_op_run(bus_op_t *op) {
    if (!op) return;
    op->key[0] = '\0'; /* read-only: no marker */
    op->load(op);
}

/* ---- loads ----------------------------------------------------------------------- */

typedef struct {
    bus_op_t *op;
    cJSON **slot;
} load_t;

static void load_settle(bus_op_t *op) {
    if (op->pending > 0) return;
    if (op->load_err) {
        bus_op_fail(op, op->load_err, "store: %s", bus_strerror(op->load_err));
        return;
    }
    bus_op_step_fn next = op->next;
    op->next = NULL;
    if (next) next(op);
}

static void on_load_doc(int status, const cJSON *doc, void *data) {
    load_t *l = data;
    bus_op_t *op = l->op;
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
    bus_op_t *op = l->op;
    if (status == 0)
        *l->slot = cJSON_Duplicate(docs, 1);
    else if (!op->load_err)
        op->load_err = status;
    free(l);
    op->pending--;
    load_settle(op);
}

static load_t *load_new(bus_op_t *op, cJSON **slot) {
    load_t *l = malloc(sizeof *l);
    if (!l) {
        if (!op->load_err) op->load_err = BUS_EINTERNAL;
        return NULL;
    }
    *l = (load_t){op, slot};
    return l;
}

static void load_launched(bus_op_t *op, load_t *l, int rc) {
    if (rc == 0) {
        op->pending++;
        return;
    }
    free(l);
    if (!op->load_err) op->load_err = rc;
}

void bus_op_load_doc(bus_op_t *op, const char *coll, const char *id, cJSON **slot) {
    load_t *l = load_new(op, slot);
    if (l) load_launched(op, l, bus_store_get(op->e->store, coll, id, on_load_doc, l));
}

void bus_op_load_find(bus_op_t *op, const char *coll, cJSON *where, const char *sort, int limit, cJSON **slot) {
    load_t *l = load_new(op, slot);
    if (l) {
        bus_store_query_t q = {.where = where, .sort = sort, .limit = limit};
        load_launched(op, l, bus_store_find(op->e->store, coll, &q, on_load_find, l));
    }
    cJSON_Delete(where); /* the store copied it */
}

static void on_load_marker(int status, const cJSON *result, void *data) {
    bus_op_t *op = data;
    if (status == 0)
        op->marker = cJSON_Duplicate(result, 1);
    else if (status != BUS_ENOT_FOUND && !op->load_err)
        op->load_err = status;
    op->pending--;
    load_settle(op);
}

void bus_op_load_marker(bus_op_t *op) {
    if (!op->key[0] || op->marker_loaded) return;
    op->marker_loaded = 1;
    int rc = bus_store_processed_get(op->e->store, op->scope, op->key, on_load_marker, op);
    if (rc != 0) {
        if (!op->load_err) op->load_err = rc;
        return;
    }
    op->pending++;
}

int bus_op_marker_replayed(bus_op_t *op) {
    if (!op->marker) return 0;
    cJSON *outcome = op->marker;
    op->marker = NULL;
    replay(op, outcome); /* copies what it keeps; op may be gone after */
    cJSON_Delete(outcome);
    return 1;
}

/* Callbacks of the store never run before this (they come later on the
 * loop), so waiting can be decided here. */
void bus_op_load_wait(bus_op_t *op, bus_op_step_fn next) {
    op->next = next;
    load_settle(op);
}

/* ---- plan and commit ------------------------------------------------------------- */

static void plan_add(bus_op_t *op, bus_store_op_kind_t kind, const char *coll, const char *id, int64_t v, cJSON *doc) {
    if (op->nops >= BUS_OP_MAX_OPS) {
        cJSON_Delete(doc);
        op->load_err = BUS_EINTERNAL;
        return;
    }
    /* the strings must outlive the batch call: keep them in the owned holder */
    cJSON *holder = cJSON_CreateObject();
    cJSON *idv = cJSON_AddStringToObject(holder, "id", id);
    cJSON *collv = cJSON_AddStringToObject(holder, "coll", coll);
    if (doc) cJSON_AddItemToObject(holder, "doc", doc);
    if (!idv || !collv) {
        cJSON_Delete(holder);
        op->load_err = BUS_EINTERNAL;
        return;
    }
    op->owned[op->nops] = holder;
    op->ops[op->nops] =
        (bus_store_op_t){.kind = kind, .coll = collv->valuestring, .id = idv->valuestring, .version = v, .doc = doc};
    op->nops++;
}

void bus_op_plan_insert(bus_op_t *op, const char *coll, const char *id, cJSON *doc) {
    plan_add(op, BUS_STORE_OP_INSERT, coll, id, 0, doc);
}
void bus_op_plan_replace(bus_op_t *op, const char *coll, const char *id, int64_t v, cJSON *doc) {
    plan_add(op, BUS_STORE_OP_REPLACE, coll, id, v, doc);
}
void bus_op_plan_update(bus_op_t *op, const char *coll, const char *id, int64_t v, cJSON *patch) {
    plan_add(op, BUS_STORE_OP_UPDATE, coll, id, v, patch);
}
void bus_op_plan_delete(bus_op_t *op, const char *coll, const char *id, int64_t v) {
    plan_add(op, BUS_STORE_OP_DELETE, coll, id, v, NULL);
}

int bus_op_plan_event(bus_op_t *op, const char *type, const char *subject, cJSON *data) {
    char id[37];
    char *body = NULL;
    size_t len = 0;
    int rc = bus_worker_build_event(op->e->w, type, data, subject, op->corr[0] ? op->corr : NULL, id, &body, &len);
    if (rc != 0) {
        op->load_err = rc;
        return rc;
    }
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddStringToObject(e, "id", id);
    cJSON_AddStringToObject(e, "body", body);
    cJSON_AddItemToArray(op->events, e);
    free(body);
    return 0;
}

static void on_marker_after_race(int status, const cJSON *result, void *data) {
    bus_op_t *op = data;
    if (status == 0)
        replay(op, result);
    else
        bus_op_fail(op, BUS_EUNAVAILABLE, "a concurrent copy of this request is being processed; try again");
}

static void on_retry_closed(uv_handle_t *h) { free(h); }

static void on_retry(uv_timer_t *t) {
    bus_op_t *op = t->data;
    op->retry_timer = NULL;
    uv_close((uv_handle_t *)t, on_retry_closed);
    op->load(op);
}

/* A lost race is decided again after a random pause below a bound that
 * doubles per attempt (full jitter), so that racers spread out. */
static void retry_later(bus_op_t *op) {
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) {
        op->load(op);
        return;
    }
    uv_timer_init(bus_worker_loop(op->e->w), t);
    t->data = op;
    op->retry_timer = t;
    uint64_t span = RETRY_FIRST_SPAN_MS;
    for (int i = 1; i < op->attempt && span < RETRY_MAX_SPAN_MS; i++) span *= 2;
    if (span > RETRY_MAX_SPAN_MS) span = RETRY_MAX_SPAN_MS;
    uv_timer_start(t, on_retry, (uint64_t)rand() % (span + 1), 0);
}

static void on_batch(int status, long failed, const int64_t *versions, void *data) {
    (void)versions;
    bus_op_t *op = data;
    if (status == 0) {
        if (op->e->o.committed) op->e->o.committed(op, op->ctx);
        publish_outbox(op);
        return;
    }
    if (status == BUS_ECONFLICT && op->key[0] && failed == (long)op->nops - 1) {
        /* the marker exists: a twin of this request committed first */
        for (size_t i = 0; i < op->nops; i++) cJSON_Delete(op->owned[i]);
        op->nops = 0;
        if (bus_store_processed_get(op->e->store, op->scope, op->key, on_marker_after_race, op) != 0)
            bus_op_fail(op, BUS_EUNAVAILABLE, "store unavailable");
        return;
    }
    if (status == BUS_ECONFLICT && uv_now(bus_worker_loop(op->e->w)) < op->deadline) {
        op->attempt++;
        bus_counter_inc(op->e->m_conflict_retries, 1);
        op_reset(op);
        retry_later(op);
        return;
    }
    if (status == BUS_ECONFLICT)
        bus_op_fail(op, BUS_EUNAVAILABLE,
                    "busy: what this request changes kept changing under it for %d ms (%d attempts); try again",
                    op->e->o.retry_budget_ms, op->attempt + 1);
    else
        bus_op_fail(op, status, "store: %s", bus_strerror(status));
}

void bus_op_commit(bus_op_t *op, cJSON *data) {
    if (op->kind == OP_REQUEST) {
        char why[1024];
        if (bus_worker_check_reply(op->e->w, op->method, data, why, sizeof why) != 0) {
            bus_error(op->corr, "%s.%s: reply violates its schema: %s", bus_worker_service(op->e->w), op->method,
                      why);
            cJSON_Delete(data);
            bus_op_fail(op, BUS_EINTERNAL, "reply violates its schema: %s", why);
            return;
        }
        op->reply = bus_rpc_reply_ok_json(data, NULL);
    }
    cJSON_Delete(data);
    if (op->load_err || (op->kind == OP_REQUEST && !op->reply) || op->nops >= BUS_OP_MAX_OPS) {
        bus_op_fail(op, BUS_EINTERNAL, "cannot build the change");
        return;
    }
    if (op->key[0]) {
        cJSON *outbox = cJSON_CreateObject();
        if (op->reply) cJSON_AddStringToObject(outbox, "reply", op->reply);
        cJSON_AddItemToObject(outbox, "events", cJSON_Duplicate(op->events, 1));
        plan_add(op, BUS_STORE_OP_MARK, op->scope, op->key, 0, outbox);
    }
    if (op->nops == 0) { /* nothing to store (no key, no change): publish and answer */
        publish_outbox(op);
        return;
    }
    int rc = bus_store_batch(op->e->store, op->ops, op->nops, on_batch, op);
    if (rc != 0) bus_op_fail(op, BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}
