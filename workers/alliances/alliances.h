/* bus-alliances internals, shared by the files of this worker:
 *
 *   main.c     the worker definition, init/fini (store, collections)
 *   store.c    documents: collections, views without store fields, the
 *              asynchronous load helpers, rank counters
 *   events.c   consuming user.forgotten
 * The life of each request (marker, lock, load, decide, one atomic batch
 * with the outbox, publish, reply) is libbus's bus_op (bus/op.h).
 *   methods.c  the RPC handlers
 *   rules.c    the rank rules (pure; rules.h)
 *
 * Everything runs on the worker's loop thread; store callbacks come back to
 * it. An op's al_ctx_t owns every cJSON it points at.
 */
#ifndef AL_ALLIANCES_H
#define AL_ALLIANCES_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "bus/op.h"
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

typedef struct al_state {
    bus_worker_t *w;
    bus_store_t *store;
    bus_op_engine_t *engine; /* runs every request and event (bus/op.h) */
    bus_worker_timer_t *prune_timer; /* hourly: forget request/event markers older than BUS_MARKER_TTL_H */
    int64_t marker_ttl_ms;
} al_state_t;

al_state_t *al_state(bus_worker_t *w);

/* ---- one request or event being handled --------------------------------
 *
 * Every request and consumed event runs as a bus_op (bus/include/bus/op.h:
 * marker, per-alliance lock, loads, decide, one atomic batch with the
 * outbox, publish, answer). Its context is an al_ctx_t: the documents the
 * steps loaded (copies, NULL when absent), freed by al_ctx_reset before a
 * retry and when the op ends. */
typedef struct al_ctx {
    cJSON *alliance;
    cJSON *other;    /* the alliance of a membership found elsewhere */
    cJSON *m_user;
    cJSON *m_actor;
    cJSON *succ;     /* the successor's membership */
    cJSON *members;  /* array of memberships (dissolve), or of alliances (find) */
    cJSON *leftover; /* memberships to delete after the commit: [{"id","v"}] */
} al_ctx_t;

#define AL(op) ((al_ctx_t *)bus_op_ctx(op))

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
void al_leave_load(bus_op_t *op);

/* ---- methods (methods.c) -------------------------------------------- */

extern const bus_method_t al_methods[];

#endif
