/* bus-events internals, shared by the files of this worker:
 *
 *   main.c       the worker definition, settings, init/fini
 *   rules.c      pure rules: kinds, recurrences, UTC time, the items of an
 *                occurrence, the lateness policy (rules.h)
 *   store.c      documents: collections, the event view, planning an
 *                occurrence's items into an op's batch
 *   perm.c       who may change an alliance's or a state's events
 *                (alliances.member over RPC; BUS_EVENTS_MODERATORS)
 *   methods.c    the RPC handlers events.<create|update|toggle|delete|get|
 *                list|upcoming>
 *   scheduler.c  the due-time index, one timer per process, claims with a
 *                lease (the design and why: at the top of scheduler.c)
 *   fire.c       firing one claimed item exactly once (a bus_op job)
 *   consume.c    alliance.dissolved and user.forgotten
 *
 * Everything runs on the worker's loop thread; store callbacks come back to
 * it. An op's ev_ctx_t owns every cJSON it points at.
 */
#ifndef EV_EVENTS_H
#define EV_EVENTS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "bus/op.h"
#include "bus/store.h"
#include "bus/worker.h"
#include "rules.h"

#define EV_COLL_EVENTS "game_events"
#define EV_COLL_ITEMS "reminders"
#define EV_SCOPE_RPC "events.rpc"   /* markers of state-changing requests */
#define EV_SCOPE_FIRE "events.fire" /* markers of fired items: key = the item's id */

typedef struct ev_sched ev_sched_t;

typedef struct ev_state {
    bus_worker_t *w;
    bus_store_t *store;
    bus_op_engine_t *engine;
    ev_sched_t *sched;
    char *moderators;       /* ",a,b," (BUS_EVENTS_MODERATORS with commas around), never NULL */
    int late_policy;        /* ev_late_policy_t (BUS_EVENTS_LATE_POLICY) */
    int64_t late_window_ms; /* BUS_EVENTS_LATE_WINDOW_S */
    int64_t lease_ms;       /* BUS_EVENTS_LEASE_MS */
    int64_t poll_ms;        /* BUS_EVENTS_POLL_MS */
    int fire_max;           /* BUS_EVENTS_FIRE_MAX: items being fired at once by this process */
    int64_t marker_ttl_ms;
    bus_worker_timer_t *prune_timer; /* hourly: forget markers older than BUS_MARKER_TTL_H */
} ev_state_t;

ev_state_t *ev_state(bus_worker_t *w);

/* One request, consumed event or firing in flight (bus_op's per-op context).
 * Freed by ev_ctx_reset before a retry and when the op ends. */
typedef struct ev_ctx {
    cJSON *event;    /* the game event document (a copy), NULL when absent */
    cJSON *item;     /* the reminder document being fired */
    cJSON *pending;  /* the event's documents in "reminders" (re-planning) */
    cJSON *membership; /* the actor's membership, as alliances.member answered */
    bus_op_step_fn after_perm;
    int64_t min_due; /* the earliest item this op planned (0: none), to wake the scheduler */
} ev_ctx_t;

#define EV(op) ((ev_ctx_t *)bus_op_ctx(op))

/* ---- documents (store.c) ------------------------------------------------- */

int ev_store_declare(bus_store_t *s, char *err, size_t errlen);
const char *ev_str(const cJSON *doc, const char *field); /* "" when absent */
int64_t ev_int(const cJSON *doc, const char *field);    /* 0 when absent */
int ev_bool(const cJSON *doc, const char *field);
int64_t ev_version(const cJSON *doc);
/* The event as callers see it (new object, caller owns). */
cJSON *ev_event_view(const cJSON *doc);
/* Plans (bus_op_plan_insert) the items of the occurrence of `doc` (the
 * event's fields: start_ms, duration_min, reminders, gen) starting at
 * start_ms, leaving out those due before from_ms. Returns the number planned
 * and keeps the earliest due time in the op's min_due. */
int ev_plan_occurrence(bus_op_t *op, const char *event_id, const cJSON *doc, int64_t start_ms, int64_t from_ms);
/* Plans the deletion of the event's pending items in ctx->pending that were
 * not fired yet (an item already fired is deleted by its firing). */
void ev_plan_drop_pending(bus_op_t *op);

/* ---- permissions (perm.c) -------------------------------------------------- */

int ev_is_moderator(const ev_state_t *st, const char *user);
/* Runs next(op) when params.actor may change the events of `alliance`
 * (an alliance id; NULL or "" for a state's events), else ends the op with
 * permission_denied naming the rule (or unavailable when alliances does not
 * answer). */
void ev_check_permission(bus_op_t *op, const char *alliance, bus_op_step_fn next);

/* ---- methods (methods.c) ------------------------------------------------------ */

extern const bus_method_t ev_methods[];

/* ---- the scheduler (scheduler.c) and firing (fire.c) ------------------------ */

int ev_sched_start(ev_state_t *st, char *err, size_t errlen);
void ev_sched_stop(ev_state_t *st);
/* This process planned an item due at due_ms: wake earlier if needed. */
void ev_sched_hint(ev_state_t *st, int64_t due_ms);
/* Fires a claimed item (a copy of its document is taken); done(status)
 * runs exactly once, when the op ended. */
void ev_fire(ev_state_t *st, const cJSON *item, void (*done)(int status, void *data), void *data);

/* ---- consumed events (consume.c) ------------------------------------------------ */

void ev_on_alliance_dissolved(bus_event_t *ev);
void ev_on_user_forgotten(bus_event_t *ev);

#endif
