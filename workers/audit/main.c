/* bus-audit: RBAC and the audit trail (the issue "RBAC and the audit trail").
 *
 * RPC audit.<check|grant|revoke|roles_of|role_define|roles> (rbac.c) and
 * audit.<verify|query> (query.c); every event of bus.events recorded
 * (intake.c) in one hash chain in the store named by BUS_STORE (trail.c)
 * and republished to the audit.log stream (streamer.c). Any number of
 * processes may run side by side on one store (audit.h says how the chain
 * stays one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "bus/log.h"
#include "bus/topology.h"

static bus_config_extra_t extras[] = {
    {"BUS_AUDIT_INFLIGHT_BATCHES", "--audit-inflight-batches",
     "record batches (of up to 62) in the store at once per process", "4", NULL},
    {"BUS_AUDIT_LEASE_MS", "--audit-lease-ms",
     "the stream lease: how long a silent streaming process keeps it before another takes over", "5000", NULL},
    {"BUS_RBAC_CACHE_TTL_MS", "--rbac-cache-ttl-ms",
     "how long a user's grants stay cached without a grant event (a safety net)", "60000", NULL},
    {"BUS_MARKER_TTL_H", "--marker-ttl-h", "hours a handled request id is remembered", "168", NULL},
};

au_state_t *au_state(bus_worker_t *w) { return bus_worker_state(w); }

const char *au_str(const cJSON *doc, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsString(v) ? v->valuestring : "";
}

int64_t au_int(const cJSON *doc, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static int int_setting(bus_worker_t *w, const char *env, long lo, long hi, int *out, char *err, size_t errlen) {
    const char *v = bus_worker_extra(w, env);
    char *end = NULL;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || n < lo || n > hi) {
        snprintf(err, errlen, "%s: \"%s\" is not a whole number from %ld to %ld", env, v ? v : "", lo, hi);
        return BUS_EBAD_REQUEST;
    }
    *out = (int)n;
    return 0;
}

static int declare(bus_store_t *s, char *err, size_t errlen) {
    static const char *const rec_idx[] = {"actor,seq", "type,seq", "subject,seq", "time", NULL};
    static const char *const rec_uniq[] = {"seq", "source_id", NULL};
    static const char *const tip_idx[] = {"seq", NULL};
    static const char *const grant_idx[] = {"user", "role", NULL};
    int rc = bus_store_declare(s, AU_COLL_RECORDS, rec_idx, rec_uniq, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, AU_COLL_TIP, tip_idx, NULL, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, AU_COLL_CURSOR, NULL, NULL, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, AU_COLL_GRANTS, grant_idx, NULL, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, AU_COLL_ROLES, NULL, NULL, err, errlen);
    return rc;
}

static void on_pruned(int status, int64_t count, void *data) {
    (void)data;
    if (status == 0 && count > 0) bus_info(NULL, "forgot %lld old request markers", (long long)count);
}

static int64_t marker_ttl_ms;

static void on_prune_timer(uv_timer_t *t) {
    au_state_t *st = t->data;
    bus_store_processed_prune(st->store, marker_ttl_ms, on_pruned, NULL);
}

static bus_op_engine_options_t engine_options = {
    .rpc_scope = AU_SCOPE_RPC,
    .event_scope = AU_SCOPE_EVENTS,
    .ctx_reset = au_rbac_ctx_reset,
    .committed = au_rbac_committed,
};

static void state_free(au_state_t *st) {
    if (st->prune_timer) uv_close((uv_handle_t *)st->prune_timer, (uv_close_cb)free);
    au_trail_free(st->trail);
    au_streamer_free(st->streamer);
    au_cache_free(st->cache);
    bus_op_engine_free(st->engine);
    if (st->store) bus_store_close(st->store, NULL, NULL); /* freed once its last callback ran */
    free(st);
}

static int au_init(bus_worker_t *w, char *err, size_t errlen) {
    au_state_t *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    st->w = w;
    int hours = 0;
    int rc = int_setting(w, "BUS_AUDIT_INFLIGHT_BATCHES", 1, 64, &st->inflight_batches, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_AUDIT_LEASE_MS", 200, 600000, &st->lease_ms, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_RBAC_CACHE_TTL_MS", 0, 86400000, &st->cache_ttl_ms, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_MARKER_TTL_H", 1, 24 * 365, &hours, err, errlen);
    if (rc != 0) {
        free(st);
        return rc;
    }
    marker_ttl_ms = (int64_t)hours * 3600 * 1000;
    engine_options.ctx_size = au_rbac_ctx_size();
    rc = bus_store_open(bus_worker_loop(w), bus_worker_config(w)->store, &st->store, err, errlen);
    if (rc == 0) rc = declare(st->store, err, errlen);
    if (rc == 0 && (bus_op_engine_new(w, st->store, &engine_options, &st->engine) != 0 ||
                    au_trail_new(st, &st->trail) != 0 || au_streamer_new(st, &st->streamer) != 0 ||
                    au_cache_new(st, &st->cache) != 0)) {
        snprintf(err, errlen, "out of memory");
        rc = BUS_EINTERNAL;
    }
    if (rc != 0) {
        state_free(st);
        return rc;
    }
    st->prune_timer = malloc(sizeof *st->prune_timer);
    if (st->prune_timer) {
        uv_timer_init(bus_worker_loop(w), st->prune_timer);
        st->prune_timer->data = st;
        uv_timer_start(st->prune_timer, on_prune_timer, 60 * 1000, 3600 * 1000);
        uv_unref((uv_handle_t *)st->prune_timer);
    }
    bus_worker_set_state(w, st);
    return 0;
}

static void au_fini(bus_worker_t *w) {
    au_state_t *st = bus_worker_state(w);
    if (!st) return;
    bus_worker_set_state(w, NULL);
    state_free(st);
}

/* ---- the consumers -------------------------------------------------------- */

static const bus_binding_t every_event[] = {{BUS_EXCHANGE_EVENTS, "#"}, {NULL, NULL}};
static const bus_binding_t grant_events[] = {{BUS_EXCHANGE_EVENTS, "role.*"}, {NULL, NULL}};

/* audit.events is a quorum queue whatever BUS_QUEUE_TYPE says: every event
 * of the platform goes through it, and on one node too the raw path through
 * a quorum queue cost the broker less CPU per event than through a classic
 * one, and varied less (make bench, section 9's two raw lines: 86-95 against
 * 132-262 us per event; tests/bench/README.md). A classic audit.events left
 * by an older version is used as it is (README "Tailing the audit trail"
 * says how to move it). */
static int declare_events_queue(bus_conn_t *conn) {
    bus_queue_options_t q = {.durable = 1, .queue_type = "quorum"};
    int rc = bus_conn_declare_queue_try(conn, "audit.events", &q);
    if (rc != BUS_ECONFLICT) return rc;
    bus_warn(NULL, "audit: audit.events exists as another queue type than quorum; used as it is (delete it once, "
                   "while bus-audit is stopped, to have it made a quorum queue)");
    return 0;
}

static const bus_consumer_def_t consumers[] = {
    /* every event of the platform, shared by the processes (intake.c); a
     * deep prefetch keeps the trail's batches full */
    {.queue = "audit.events", .declare = declare_events_queue, .bindings = every_event, .prefetch = 1024,
     .fn = au_on_event},
    /* the grant events, on a queue of each process's own (rbac.c's cache) */
    {.queue = NULL, .options = {.exclusive = 1, .auto_delete = 1}, .bindings = grant_events, .prefetch = 64,
     .fn = au_on_grant_event},
    {.fn = NULL},
};

/* After every (re)connect: the audit.log stream and its binding (bus/topology.h
 * owns its retention); grant events sent while we were away were missed by
 * our own queue, so the RBAC cache starts afresh. */
static void au_on_up(bus_worker_t *w, bus_conn_t *conn) {
    if (bus_topology_declare_audit(conn) != 0) return; /* reconnecting: on_up runs again */
    au_state_t *st = au_state(w);
    if (st) au_cache_invalidate_all(st->cache);
}

static const bus_worker_def_t definition = {
    .service = "audit",
    .summary = "RBAC (roles, grants, permission checks) and the hash-chained audit trail of every event",
    .methods = au_methods,
    .consumers = consumers,
    .on_up = au_on_up,
    .extras = extras,
    .nextras = sizeof extras / sizeof extras[0],
    .init = au_init,
    .fini = au_fini,
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
