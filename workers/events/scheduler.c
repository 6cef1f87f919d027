/* The scheduler: every item (a reminder, "started", "ended") of every
 * planned occurrence fires exactly once, on time, however many bus-events
 * processes run, across SIGKILLs and restarts.
 *
 * Design, and why.
 *
 * 1. The plan lives in the store, not in memory. Each item due is one
 *    document of the "reminders" collection with an index on due_at (the
 *    due-time index; store.c). Creating, editing and firing events write
 *    these documents in the same atomic batch as the event itself (bus_op),
 *    so the plan is never out of step with the events, and a process that
 *    dies loses nothing: there is no in-memory state to rebuild. Memory per
 *    process does not grow with the number of scheduled items (tens of
 *    thousands cost index entries, not timers).
 *
 * 2. One timer per process. It is armed for the earliest due_at in the
 *    index (one indexed query, limit 1), capped at BUS_EVENTS_POLL_MS so an
 *    item planned by ANOTHER process is seen within that time (this process
 *    re-arms at once for what it plans itself: ev_sched_hint). When it
 *    fires, the process claims due items one after the other until none is
 *    due, firing up to BUS_EVENTS_FIRE_MAX at once, then looks for the next
 *    due time again.
 *
 * 3. A claim is bus_store_find_one_and_update({due_at <= now}, sort due_at,
 *    {due_at: now + lease, claimed_by}): atomic in the store, so two
 *    processes never claim the same item, and the claim itself moves the
 *    item's due_at to the end of its lease. That one field is both the
 *    "when due" and the lease: a claimed item disappears from the due set
 *    until its lease ends, and an item whose claimer died (SIGKILL between
 *    claim and publish) simply becomes due again when the lease ends and is
 *    claimed by whichever process is alive. No separate lease sweeper, no
 *    heartbeat, no process registry. The lease (BUS_EVENTS_LEASE_MS) must be
 *    longer than a normal firing (a commit and a publish confirm: a few ms);
 *    it bounds how late a dead process's items are re-fired.
 *
 * 4. Firing is a bus_op job keyed by the item's id (fire.c): its commit
 *    stores the marker (events.fire, item id) with the outbox (the event to
 *    publish, its id already chosen) and marks the item fired, at the
 *    version the claim read; then the outbox is published with confirms;
 *    then the item is deleted. A crash after the commit and before the
 *    delete leaves the item claimed: when its lease ends another process
 *    claims it, finds the marker and publishes the SAME event (same id)
 *    again. So nothing is lost, and what a consumer may see twice carries
 *    one id (consumers deduplicate by id, the platform's rule). The commit
 *    at the claimed version also serialises a firing against an edit of the
 *    same event: whichever commits first wins, the other is decided again.
 *
 * 5. Lateness. The fired event carries late_ms (publish decision time minus
 *    due time). Past BUS_EVENTS_LATE_WINDOW_S (default 60 s) the policy
 *    BUS_EVENTS_LATE_POLICY decides: "miss" (default) records and publishes
 *    event.reminder.missed instead of sending stale news, "send" sends it
 *    anyway. After a restart of every process, every item still in the
 *    index is due: each is sent late or recorded missed, once.
 *
 * Rejected alternatives: a timer per event in memory (memory and start-up
 * time grow with the plan, and every process would need every timer or a
 * leader election); a leader process that fires everything (failover takes
 * a lease anyway, and one process caps the rate); broker-delayed messages
 * (RabbitMQ has no native delay, and cancelling on edit is impossible).
 *
 * Clocks: due times are wall-clock UTC ms (they are shared between
 * processes and survive restarts); the timer's delays are computed from
 * them, so a clock step only shifts when a process looks, never what fires.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "events.h"

struct ev_sched {
    ev_state_t *st;
    /* the one timer: a worker timer (bus/worker.h), one-shot, held by us,
     * replaced on every arm; the SIGTERM drain stops it, and no new round
     * starts while draining (bus_worker_draining) */
    bus_worker_timer_t *timer;
    int claims;    /* claims in flight (each is in-flight work of the worker) */
    int firing;    /* items being fired (jobs) */
    int peeking;   /* the next-due query in flight (in-flight work too) */
    int exhausted; /* the last claim found nothing due */
    int stopped;
    int64_t armed_for; /* wall ms the timer is set for; 0 = not armed */
    char instance[80];
};

static void pump(ev_sched_t *s);
static void on_timer(bus_worker_timer_t *t, void *data);

/* After fini, store callbacks may still come back (the drain's time ran
 * out): the struct lives until the last of them. */
static void sched_maybe_free(ev_sched_t *s) {
    if (s->stopped && s->claims == 0 && !s->peeking && s->firing == 0) free(s);
}

/* The end of a claim or a peek: in-flight work of the worker, unless the
 * worker is gone (after fini). */
static void work_end(ev_sched_t *s) {
    if (!s->stopped) bus_worker_work_end(s->st->w);
}

static void disarm(ev_sched_t *s) {
    if (s->timer) bus_worker_timer_stop(s->timer);
    s->timer = NULL;
    s->armed_for = 0;
}

static void arm(ev_sched_t *s, int64_t at_ms) {
    disarm(s);
    if (s->stopped || bus_worker_draining(s->st->w)) return; /* no new round */
    int64_t now = ev_now_ms();
    if (at_ms > now + s->st->poll_ms) at_ms = now + s->st->poll_ms;
    if (at_ms < now) at_ms = now;
    if (bus_worker_timer_start(s->st->w, (uint64_t)(at_ms - now), 0, on_timer, s, &s->timer) == 0)
        s->armed_for = at_ms;
}

static void on_timer(bus_worker_timer_t *t, void *data) {
    ev_sched_t *s = data;
    (void)t;
    disarm(s); /* a one-shot timer: the next arm makes a new one */
    s->exhausted = 0;
    pump(s);
}

static void on_peek(int status, const cJSON *docs, const char *next_cursor, void *data) {
    (void)next_cursor;
    ev_sched_t *s = data;
    s->peeking = 0;
    work_end(s);
    if (s->stopped) {
        sched_maybe_free(s);
        return;
    }
    if (!s->exhausted) { /* woken meanwhile */
        pump(s);
        return;
    }
    int64_t now = ev_now_ms();
    if (status != 0) {
        bus_warn(NULL, "scheduler: cannot read the due-time index: %s; trying again in 1 s", bus_strerror(status));
        arm(s, now + 1000);
        return;
    }
    const cJSON *first = cJSON_GetArrayItem(docs, 0);
    arm(s, first ? ev_int(first, "due_at") : now + s->st->poll_ms);
}

static void peek_next(ev_sched_t *s) {
    bus_store_query_t q = {.where = NULL, .sort = "due_at", .limit = 1};
    s->peeking = 1;
    bus_worker_work_begin(s->st->w);
    if (bus_store_find(s->st->store, EV_COLL_ITEMS, &q, on_peek, s) != 0) {
        s->peeking = 0;
        bus_worker_work_end(s->st->w);
        arm(s, ev_now_ms() + 1000);
    }
}

static void on_fired(int status, void *data) {
    ev_sched_t *s = data;
    (void)status;
    s->firing--;
    if (s->stopped) {
        sched_maybe_free(s);
        return;
    }
    pump(s);
}

static void on_claim(int status, const cJSON *doc, void *data) {
    ev_sched_t *s = data;
    s->claims--;
    work_end(s);
    if (s->stopped) { /* the worker is gone: the item comes back when its lease ends */
        sched_maybe_free(s);
        return;
    }
    if (status == 0 && doc) { /* claimed: fired even while draining (the drain waits for it) */
        s->firing++;
        ev_fire(s->st, doc, on_fired, s);
    } else if (status == BUS_ENOT_FOUND) {
        s->exhausted = 1;
    } else {
        bus_warn(NULL, "scheduler: claim failed: %s; trying again in 1 s", bus_strerror(status));
        s->exhausted = 1;
        if (s->claims == 0) arm(s, ev_now_ms() + 1000);
        return;
    }
    pump(s);
}

/* Claims in parallel per process: the store's writer serialises them anyway;
 * a few in flight hide the round trip. */
#define EV_CLAIMS_IN_FLIGHT 4

static int claim_one(ev_sched_t *s) {
    int64_t now = ev_now_ms();
    cJSON *where = cJSON_CreateObject(), *lte = cJSON_CreateObject(), *patch = cJSON_CreateObject();
    cJSON_AddNumberToObject(lte, "$lte", (double)now);
    cJSON_AddItemToObject(where, "due_at", lte);
    cJSON_AddNumberToObject(patch, "due_at", (double)(now + s->st->lease_ms));
    cJSON_AddStringToObject(patch, "claimed_by", s->instance);
    cJSON_AddNumberToObject(patch, "claimed_at", (double)now);
    bus_worker_work_begin(s->st->w);
    int rc = bus_store_find_one_and_update(s->st->store, EV_COLL_ITEMS, where, "due_at", patch, on_claim, s);
    cJSON_Delete(where);
    cJSON_Delete(patch);
    if (rc == 0)
        s->claims++;
    else
        bus_worker_work_end(s->st->w);
    return rc;
}

static void pump(ev_sched_t *s) {
    if (s->stopped || bus_worker_draining(s->st->w)) return; /* no new claims while draining */
    if (!bus_conn_is_up(bus_worker_conn(s->st->w))) { /* nothing could be published: look again soon */
        if (s->claims == 0 && !s->peeking) arm(s, ev_now_ms() + 200);
        return;
    }
    while (!s->exhausted && s->claims < EV_CLAIMS_IN_FLIGHT && s->claims + s->firing < s->st->fire_max) {
        if (claim_one(s) != 0) {
            s->exhausted = 1;
            break;
        }
    }
    if (s->claims == 0 && s->exhausted && !s->peeking && s->armed_for == 0) peek_next(s);
}

void ev_sched_hint(ev_state_t *st, int64_t due_ms) {
    ev_sched_t *s = st->sched;
    if (!s || s->stopped || due_ms <= 0) return;
    if (s->armed_for != 0 && due_ms < s->armed_for) arm(s, due_ms);
}

int ev_sched_start(ev_state_t *st, char *err, size_t errlen) {
    ev_sched_t *s = calloc(1, sizeof *s);
    if (!s) return BUS_EINTERNAL;
    s->st = st;
    snprintf(s->instance, sizeof s->instance, "%s", bus_worker_instance(st->w));
    st->sched = s;
    arm(s, ev_now_ms() + 100); /* first look once connected */
    if (!s->timer) {
        st->sched = NULL;
        free(s);
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    return 0;
}

void ev_sched_stop(ev_state_t *st) {
    ev_sched_t *s = st->sched;
    if (!s) return;
    st->sched = NULL;
    disarm(s);
    s->stopped = 1;
    sched_maybe_free(s);
}
