/* bus-alliances: alliances, members and ranks R1-R5 (the issue "alliances").
 *
 * RPC alliances.<create|get|find|list|join|leave|set_rank|kick|transfer|
 * dissolve|member|members> (methods.c), events alliance.* out, user.forgotten
 * in (events.c), state in the store named by BUS_STORE (store.c). Any number
 * of processes may run side by side on one store: the store's conditional
 * writes decide every race (bus_op, bus/include/bus/op.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alliances.h"
#include "bus/error.h"
#include "bus/log.h"

/* Markers (request and event ids already handled) only need to outlive any
 * redelivery; a week by default. */
static bus_config_extra_t extras[] = {
    {"BUS_MARKER_TTL_H", "--marker-ttl-h", "hours a handled request/event id is remembered", "168", NULL},
};

al_state_t *al_state(bus_worker_t *w) { return bus_worker_state(w); }

static void al_ctx_reset(bus_op_t *op, void *ctx) {
    (void)op;
    al_ctx_t *c = ctx;
    cJSON *docs[] = {c->alliance, c->other, c->m_user, c->m_actor, c->succ, c->members, c->leftover};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) cJSON_Delete(docs[i]);
    memset(c, 0, sizeof *c);
}

/* A dissolve of more members than fit one batch deletes the rest now. */
static void al_committed(bus_op_t *op, void *ctx) {
    al_ctx_t *c = ctx;
    if (!c->leftover) return;
    al_delete_later(al_state(bus_op_worker(op)), c->leftover);
    c->leftover = NULL;
}

static const bus_op_engine_options_t engine_options = {
    .rpc_scope = AL_SCOPE_RPC,
    .event_scope = AL_SCOPE_EVENTS,
    .ctx_size = sizeof(al_ctx_t),
    .ctx_reset = al_ctx_reset,
    .committed = al_committed,
};

static void on_pruned(int status, int64_t count, void *data) {
    al_state_t *st = data;
    bus_worker_work_end(st->w);
    if (status == 0 && count > 0) bus_info(NULL, "forgot %lld old request/event markers", (long long)count);
    if (status != 0) bus_warn(NULL, "pruning markers failed: %d", status);
}

/* The drain waits for a prune in progress. */
static void on_prune_timer(bus_worker_timer_t *t, void *data) {
    (void)t;
    al_state_t *st = data;
    bus_worker_work_begin(st->w);
    if (bus_store_processed_prune(st->store, st->marker_ttl_ms, on_pruned, st) != 0) bus_worker_work_end(st->w);
}

static int al_init(bus_worker_t *w, char *err, size_t errlen) {
    al_state_t *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    st->w = w;
    const char *ttl = bus_worker_extra(w, "BUS_MARKER_TTL_H");
    char *end = NULL;
    long hours = ttl ? strtol(ttl, &end, 10) : 168;
    if (!ttl || !*ttl || *end || hours < 1 || hours > 24 * 365) {
        snprintf(err, errlen, "BUS_MARKER_TTL_H: \"%s\" is not a whole number of hours from 1 to 8760", ttl ? ttl : "");
        free(st);
        return BUS_EBAD_REQUEST;
    }
    st->marker_ttl_ms = (int64_t)hours * 3600 * 1000;
    int rc = bus_store_open(bus_worker_loop(w), bus_worker_config(w)->store, &st->store, err, errlen);
    if (rc == 0) rc = al_store_declare(st->store, err, errlen);
    if (rc == 0 && bus_op_engine_new(w, st->store, &engine_options, &st->engine) != 0) {
        snprintf(err, errlen, "out of memory");
        rc = BUS_EINTERNAL;
    }
    if (rc != 0) {
        bus_store_close(st->store, NULL, NULL);
        free(st);
        return rc;
    }
    bus_worker_timer_start(w, 60 * 1000, 3600 * 1000, on_prune_timer, st, &st->prune_timer);
    bus_worker_set_state(w, st);
    return 0;
}

static void al_fini(bus_worker_t *w) {
    al_state_t *st = bus_worker_state(w);
    if (!st) return;
    if (st->prune_timer) bus_worker_timer_stop(st->prune_timer);
    bus_op_engine_free(st->engine);
    bus_store_close(st->store, NULL, NULL); /* freed once its last callback ran */
    bus_worker_set_state(w, NULL);
    free(st);
}

static const bus_subscription_t subscriptions[] = {
    {"user.forgotten", al_on_user_forgotten},
    {NULL, NULL},
};

static const bus_worker_def_t definition = {
    .service = "alliances",
    .summary = "alliances, members and ranks R1-R5, rules enforced on the server",
    .methods = al_methods,
    .subscriptions = subscriptions,
    .extras = extras,
    .nextras = sizeof extras / sizeof extras[0],
    .init = al_init,
    .fini = al_fini,
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
