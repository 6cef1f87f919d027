/* bus-alliances internals, shared by the files of this worker:
 *
 *   main.c     the worker definition, init/fini (store, collections)
 *   store.c    documents: collections, views without store fields, the
 *              asynchronous load helpers, rank counters
 *   op.c       the life of one state-changing request: idempotency marker,
 *              per-alliance lock (in this process), load, decide, one
 *              atomic batch with the outbox, publish, reply
 *   events.c   building events (envelope, schema check, outbox entry) and
 *              consuming user.forgotten
 *   methods.c  the RPC handlers
 *   rules.c    the rank rules (pure; rules.h)
 *
 * Everything runs on the worker's loop thread; store callbacks come back to
 * it. An al_op_t owns every cJSON it points at and frees them in al_op_free.
 */
#ifndef AL_ALLIANCES_H
#define AL_ALLIANCES_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "bus/schema.h"
#include "bus/store.h"
#include "bus/worker.h"

#define AL_COLL_ALLIANCES "alliances"
#define AL_COLL_MEMBERS "memberships"
#define AL_SCOPE_RPC "alliances.rpc"       /* markers of state-changing requests */
#define AL_SCOPE_EVENTS "alliances.events" /* markers of consumed events */
/* Membership deletions that fit into a dissolve's own batch (the batch holds
 * at most 64 operations); the rest are deleted right after (see store.c). */
#define AL_BATCH_MEMBERS 60
#define AL_MAX_OPS 64
/* Load-decide-commit rounds of one request before it answers `conflict`. */
#define AL_MAX_ATTEMPTS 5

typedef struct al_state {
    bus_worker_t *w;
    bus_store_t *store;
    uv_timer_t *prune_timer; /* hourly: forget request/event markers older than BUS_MARKER_TTL_H */
    int64_t marker_ttl_ms;
} al_state_t;

al_state_t *al_state(bus_worker_t *w);

/* ---- one request or event being handled (op.c) ---------------------- */

typedef struct al_op al_op_t;
typedef void (*al_step_fn)(al_op_t *op);

struct al_op {
    al_state_t *st;
    bus_request_t *req; /* the RPC request, or NULL */
    bus_event_t *ev;    /* the consumed event (user.forgotten), or NULL */
    char method[32];
    char key[128];   /* idempotency key: request id or event id */
    char corr[128];  /* correlation id carried by the events */
    const char *scope;
    cJSON *params; /* a copy of the params (or event data) */
    int attempt;   /* 0, then 1.. after internal retries on conflict */
    al_step_fn load; /* first step after the marker check (method specific) */
    int marker_in_load; /* load reads the marker itself, with its first documents (al_load_marker) */
    int marker_loaded;  /* al_load_marker ran (once per op: retries do not read it again) */
    cJSON *marker;      /* the stored outcome al_load_marker found, or NULL */

    /* documents loaded (copies with _id/_v), NULL when absent */
    cJSON *alliance;
    cJSON *other;   /* the alliance of a membership found elsewhere */
    cJSON *m_user;
    cJSON *m_actor;
    cJSON *succ;    /* the successor's membership */
    cJSON *members; /* array of memberships (dissolve) */
    int pending;    /* loads in flight + 1 while launching */
    int load_err;   /* first load failure other than not_found */
    al_step_fn next;

    /* the plan: one atomic batch */
    bus_store_op_t ops[AL_MAX_OPS];
    cJSON *owned[AL_MAX_OPS];
    size_t nops;
    cJSON *events; /* outbox: [{"type","id","body"}] */
    char *reply;   /* the success reply body (RPC) */
    cJSON *leftover; /* memberships to delete after the commit: [{"id","v"}] */
    int unconfirmed;
    int publish_failed;

    int rechecked;      /* the marker was looked at again before refusing */
    int fail_err;       /* the refusal waiting for that look */
    char fail_msg[512];

    struct al_lock *lock;  /* the per-alliance lock held, or NULL */
    al_op_t *wait_next;    /* next op waiting for the same lock */
    al_step_fn lock_next;  /* where to go on when the lock is granted */
};

/* Starts handling: a state-changing op checks its marker first, then runs
 * op->load. Takes ownership of op. */
void al_op_start(al_op_t *op);
al_op_t *al_op_new_request(bus_request_t *req, al_step_fn load);
al_op_t *al_op_new_event(bus_event_t *ev, al_step_fn load);
void al_op_free(al_op_t *op);
/* Ends the op with an error reply (RPC) or the event's outcome; frees op. */
void al_op_fail(al_op_t *op, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Ends the op answering data (RPC, read-only methods: no marker); frees op. */
void al_op_reply(al_op_t *op, cJSON *data);
/* Ends a no-effect op: success with data, nothing stored, no event. */
#define al_op_noop al_op_reply

/* Runs next(op) once op holds this process's lock on `key` (an alliance
 * id): at once when free or already held by op, else when the holder is
 * freed. Requests on one alliance thus run one at a time per process. */
void al_lock(al_op_t *op, const char *key, al_step_fn next);

/* Plan building: each takes ownership of doc/patch. */
void al_plan_insert(al_op_t *op, const char *coll, const char *id, cJSON *doc);
void al_plan_update(al_op_t *op, const char *coll, const char *id, int64_t v, cJSON *patch);
void al_plan_delete(al_op_t *op, const char *coll, const char *id, int64_t v);
/* Adds an event to the outbox (data owned). BUS_EINVALID when the data
 * breaks the event's schema (a bug: logged), BUS_EINTERNAL. */
int al_plan_event(al_op_t *op, const char *type, const char *subject, cJSON *data);
/* Commits the plan with its marker, then publishes and answers `data`
 * (owned; validated against the method's result schema). Frees op. */
void al_op_commit(al_op_t *op, cJSON *data);

/* Loads, in parallel: each adds one pending load whose result lands in
 * *slot; call al_load_wait(op, next) after launching them all. */
void al_load_doc(al_op_t *op, const char *coll, const char *id, cJSON **slot);
void al_load_find(al_op_t *op, const char *coll, cJSON *where, const char *sort, int limit, cJSON **slot);
void al_load_wait(al_op_t *op, al_step_fn next);
/* For an op with marker_in_load: the request's marker read as one more load
 * of the first step, so it shares that step's store round trip (and read
 * transaction) instead of taking one of its own before it. Only the first
 * call of an op reads it. The step after that al_load_wait must begin with
 * al_marker_replayed. */
void al_load_marker(al_op_t *op);
/* 1 when the marker was found: the stored outcome has been replayed and op
 * is gone. 0: go on. */
int al_marker_replayed(al_op_t *op);

/* ---- documents (store.c) -------------------------------------------- */

int al_store_declare(bus_store_t *s, char *err, size_t errlen);
const char *al_doc_str(const cJSON *doc, const char *field); /* "" when absent */
int64_t al_doc_int(const cJSON *doc, const char *field);    /* 0 when absent */
int64_t al_doc_version(const cJSON *doc);
int al_doc_rank(const cJSON *membership);
/* Views answered to callers (new objects, caller owns). */
cJSON *al_alliance_view(const cJSON *doc);
cJSON *al_membership_view(const cJSON *doc);
/* The ranks counter object with `delta` added to rank r (new object). */
cJSON *al_ranks_with(const cJSON *alliance, int r, int delta);
cJSON *al_ranks_add(cJSON *ranks, int r, int delta); /* in place; returns ranks */
/* Deletes memberships [{"id","v"}] one after the other, best effort
 * (after a dissolve of a very large alliance). Takes ownership. */
void al_delete_later(al_state_t *st, cJSON *list);

/* ---- events (events.c) ---------------------------------------------- */

void al_on_user_forgotten(bus_event_t *ev);
/* The leave logic shared by `leave` and user.forgotten: from m_user loaded. */
void al_leave_load(al_op_t *op);

/* ---- methods (methods.c) -------------------------------------------- */

extern const bus_method_t al_methods[];

#endif
