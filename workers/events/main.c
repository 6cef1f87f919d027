/* bus-events: scheduled game events (Bear Trap, SvS, Foundry Battle, ...)
 * and their reminders (the issue "scheduled game events").
 *
 * RPC events.<create|update|toggle|delete|get|list|upcoming> (methods.c),
 * the scheduler publishing event.reminder / event.started / event.ended /
 * event.reminder.missed (scheduler.c, fire.c), alliance.dissolved and
 * user.forgotten in (consume.c), state in the store named by BUS_STORE
 * (store.c). Any number of processes may run side by side on one store:
 * each item fires exactly once (scheduler.c says how).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "events.h"

static bus_config_extra_t extras[] = {
    {"BUS_EVENTS_MODERATORS", "--moderators",
     "comma-separated users who are platform moderators or administrators (may change any event)", "", NULL},
    {"BUS_EVENTS_LATE_WINDOW_S", "--late-window-s",
     "seconds an item may be late and still be sent (then the late policy decides)", "60", NULL},
    {"BUS_EVENTS_LATE_POLICY", "--late-policy",
     "past the window: miss (publish event.reminder.missed, never stale news) or send (send anyway)", "miss", NULL},
    {"BUS_EVENTS_LEASE_MS", "--lease-ms",
     "how long a claimed item is reserved for its process (a dead process's items come back after it)", "10000",
     NULL},
    {"BUS_EVENTS_POLL_MS", "--poll-ms",
     "at most this long between looks at the due-time index (items planned by other processes)", "1000", NULL},
    {"BUS_EVENTS_FIRE_MAX", "--fire-max", "items this process fires at once", "64", NULL},
    {"BUS_MARKER_TTL_H", "--marker-ttl-h", "hours a handled request/fired item id is remembered", "168", NULL},
};

ev_state_t *ev_state(bus_worker_t *w) { return bus_worker_state(w); }

static void ev_ctx_reset(bus_op_t *op, void *ctx) {
    (void)op;
    ev_ctx_t *c = ctx;
    cJSON_Delete(c->event);
    cJSON_Delete(c->item);
    cJSON_Delete(c->pending);
    cJSON_Delete(c->membership);
    memset(c, 0, sizeof *c);
}

/* What this process just planned may be due before its timer: wake earlier. */
static void ev_committed(bus_op_t *op, void *ctx) {
    ev_ctx_t *c = ctx;
    if (c->min_due) ev_sched_hint(ev_state(bus_op_worker(op)), c->min_due);
}

static const bus_op_engine_options_t engine_options = {
    .rpc_scope = EV_SCOPE_RPC,
    .event_scope = EV_SCOPE_FIRE,
    .ctx_size = sizeof(ev_ctx_t),
    .ctx_reset = ev_ctx_reset,
    .committed = ev_committed,
};

static void on_pruned(int status, int64_t count, void *data) {
    (void)data;
    if (status == 0 && count > 0) bus_info(NULL, "forgot %lld old request/fired-item markers", (long long)count);
    if (status != 0) bus_warn(NULL, "pruning markers failed: %d", status);
}

static void on_prune_timer(bus_worker_timer_t *t, void *data) {
    (void)t;
    ev_state_t *st = data;
    bus_store_processed_prune(st->store, st->marker_ttl_ms, on_pruned, NULL);
}

/* A whole number setting in [lo, hi]; 0 or BUS_EBAD_REQUEST with err. */
static int int_setting(bus_worker_t *w, const char *env, long lo, long hi, long *out, char *err, size_t errlen) {
    const char *v = bus_worker_extra(w, env);
    char *end = NULL;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || n < lo || n > hi) {
        snprintf(err, errlen, "%s: \"%s\" is not a whole number from %ld to %ld", env, v ? v : "", lo, hi);
        return BUS_EBAD_REQUEST;
    }
    *out = n;
    return 0;
}

static int read_settings(bus_worker_t *w, ev_state_t *st, char *err, size_t errlen) {
    long ttl, window, lease, poll, fire_max;
    if (int_setting(w, "BUS_MARKER_TTL_H", 1, 24 * 365, &ttl, err, errlen) ||
        int_setting(w, "BUS_EVENTS_LATE_WINDOW_S", 0, 7 * 24 * 3600, &window, err, errlen) ||
        int_setting(w, "BUS_EVENTS_LEASE_MS", 100, 3600 * 1000, &lease, err, errlen) ||
        int_setting(w, "BUS_EVENTS_POLL_MS", 10, 60 * 1000, &poll, err, errlen) ||
        int_setting(w, "BUS_EVENTS_FIRE_MAX", 1, 10000, &fire_max, err, errlen))
        return BUS_EBAD_REQUEST;
    const char *policy = bus_worker_extra(w, "BUS_EVENTS_LATE_POLICY");
    if (policy && strcmp(policy, "miss") == 0)
        st->late_policy = EV_LATE_MISS;
    else if (policy && strcmp(policy, "send") == 0)
        st->late_policy = EV_LATE_SEND;
    else {
        snprintf(err, errlen, "BUS_EVENTS_LATE_POLICY: \"%s\" is neither miss nor send", policy ? policy : "");
        return BUS_EBAD_REQUEST;
    }
    const char *mods = bus_worker_extra(w, "BUS_EVENTS_MODERATORS");
    size_t n = strlen(mods ? mods : "");
    st->moderators = malloc(n + 3);
    if (!st->moderators) return BUS_EINTERNAL;
    /* ",a,b," without spaces, so a lookup is a search for ",user," */
    char *o = st->moderators;
    *o++ = ',';
    for (size_t i = 0; i < n; i++)
        if (mods[i] != ' ') *o++ = mods[i];
    *o++ = ',';
    *o = '\0';
    st->marker_ttl_ms = (int64_t)ttl * 3600 * 1000;
    st->late_window_ms = (int64_t)window * 1000;
    st->lease_ms = lease;
    st->poll_ms = poll;
    st->fire_max = (int)fire_max;
    return 0;
}

static int ev_init(bus_worker_t *w, char *err, size_t errlen) {
    ev_state_t *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    st->w = w;
    int rc = read_settings(w, st, err, errlen);
    if (rc != 0) {
        free(st->moderators);
        free(st);
        return rc;
    }
    rc = bus_store_open(bus_worker_loop(w), bus_worker_config(w)->store, &st->store, err, errlen);
    if (rc == 0) rc = ev_store_declare(st->store, err, errlen);
    if (rc == 0 && bus_op_engine_new(w, st->store, &engine_options, &st->engine) != 0) {
        snprintf(err, errlen, "out of memory");
        rc = BUS_EINTERNAL;
    }
    if (rc == 0) rc = ev_sched_start(st, err, errlen);
    if (rc != 0) {
        bus_op_engine_free(st->engine);
        bus_store_close(st->store, NULL, NULL);
        free(st->moderators);
        free(st);
        return rc;
    }
    bus_worker_timer_start(w, 60 * 1000, 3600 * 1000, on_prune_timer, st, &st->prune_timer);
    bus_worker_set_state(w, st);
    return 0;
}

static void ev_fini(bus_worker_t *w) {
    ev_state_t *st = bus_worker_state(w);
    if (!st) return;
    ev_sched_stop(st);
    if (st->prune_timer) bus_worker_timer_stop(st->prune_timer);
    bus_op_engine_free(st->engine);
    bus_store_close(st->store, NULL, NULL); /* freed once its last callback ran */
    bus_worker_set_state(w, NULL);
    free(st->moderators);
    free(st);
}

static const bus_subscription_t subscriptions[] = {
    {"alliance.dissolved", ev_on_alliance_dissolved},
    {"user.forgotten", ev_on_user_forgotten},
    {NULL, NULL},
};

static const bus_worker_def_t definition = {
    .service = "events",
    .summary = "scheduled game events and their reminders, each fired exactly once, on time",
    .methods = ev_methods,
    .subscriptions = subscriptions,
    .extras = extras,
    .nextras = sizeof extras / sizeof extras[0],
    .init = ev_init,
    .fini = ev_fini,
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
