/* The worker skeleton: configuration, connection, topology, signals, drain.
 * See bus/worker.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/publish.h"
#include "bus/rpc.h"
#include "bus/schema.h"
#include "bus/topology.h"
#include "schema_hook.h"
#include "worker_internal.h"

uv_loop_t *bus_worker_loop(bus_worker_t *w) { return w->loop; }
const bus_config_t *bus_worker_config(const bus_worker_t *w) { return &w->cfg; }
const char *bus_worker_service(const bus_worker_t *w) { return w->def->service; }
const char *bus_worker_instance(const bus_worker_t *w) { return w->instance; }
bus_conn_t *bus_worker_conn(bus_worker_t *w) { return w->conn; }
bus_rpc_client_t *bus_worker_rpc(bus_worker_t *w) { return w->rpc; }
void *bus_worker_state(const bus_worker_t *w) { return w->state; }
void bus_worker_set_state(bus_worker_t *w, void *state) { w->state = state; }
struct bus_schema_registry *bus_worker_schemas(bus_worker_t *w) { return w->schemas; }

const char *bus_worker_extra(const bus_worker_t *w, const char *env) {
    for (size_t i = 0; i < w->def->nextras; i++)
        if (strcmp(w->def->extras[i].env, env) == 0) return w->def->extras[i].value;
    return NULL;
}

static void shutdown_now(bus_worker_t *w);

void bus__worker_work_started(bus_worker_t *w) {
    w->in_flight++;
    bus_gauge_set(w->m_in_flight, w->in_flight);
}

void bus__worker_work_done(bus_worker_t *w) {
    w->in_flight--;
    bus_gauge_set(w->m_in_flight, w->in_flight);
    if (w->draining && w->in_flight == 0) shutdown_now(w);
}

/* events.<s> and rpc.<s> dead-letter through the broker into dead.<s>
 * (x-dead-letter-exchange "" and x-dead-letter-routing-key dead.<s>): a
 * message too large to handle is rejected without requeue and the broker
 * moves it, so that its body is never copied by this process
 * (bus__worker_reject_oversized). A queue declared by an older version has
 * no such arguments, and redeclaring it with them is refused
 * (PRECONDITION_FAILED): it is then used as it is, *dlx = 0 and a warning
 * names the migration (README "Dead letters": a policy, or recreating the
 * drained queue). */
static int declare_dead_lettered(bus_worker_t *w, bus_conn_t *conn, const char *queue, int *dlx) {
    bus_queue_options_t o = {.durable = 1, .queue_type = w->cfg.queue_type, .dead_letter_exchange = "",
                             .dead_letter_key = w->q_dead};
    int rc = bus_conn_declare_queue_try(conn, queue, &o);
    *dlx = rc == 0;
    if (rc != BUS_ECONFLICT) return rc;
    bus_warn(NULL, "queue %s was declared without dead-letter arguments (by an older version): oversized messages "
             "are rejected without requeue and reach %s only if a policy sets its dead-letter exchange (README "
             "\"Dead letters\")", queue, w->q_dead);
    bus_queue_options_t plain = {.durable = 1, .queue_type = w->cfg.queue_type};
    return bus_conn_declare_queue(conn, queue, &plain);
}

/* (Re)declares the domain's topology (its queues, then the extra consumers'
 * queues), runs the domain's on_up hook, and starts consuming. Runs after
 * every connect. */
static void on_up(bus_conn_t *conn, void *data) {
    bus_worker_t *w = data;
    const char *qt = w->cfg.queue_type;
    bus_queue_options_t durable = {.durable = 1, .queue_type = qt};
    bus_queue_options_t retry = {.durable = 1, .queue_type = qt, .dead_letter_exchange = "",
                                 .dead_letter_key = w->q_events};
    char rpc_key[128];
    snprintf(rpc_key, sizeof rpc_key, "%s.*", w->def->service);
    int rc = bus_topology_declare_exchanges(conn);
    if (rc == 0) rc = declare_dead_lettered(w, conn, w->q_events, &w->events_dlx);
    if (rc == 0) rc = declare_dead_lettered(w, conn, w->q_rpc, &w->rpc_dlx);
    if (rc == 0) rc = bus_conn_declare_queue(conn, w->q_retry, &retry);
    if (rc == 0) rc = bus_conn_declare_queue(conn, w->q_dead, &durable);
    if (rc == 0) rc = bus_conn_bind(conn, w->q_rpc, BUS_EXCHANGE_RPC, rpc_key);
    if (rc == 0) {
        /* answering for unknown services is a courtesy to callers: a queue
         * that cannot be used now (on a cluster, a classic rpc.unrouted whose
         * node is down) must not keep the domain's own queues from being served */
        int unrouted = bus_topology_declare_unrouted(conn, qt);
        w->unrouted_ok = unrouted == 0;
        if (unrouted == BUS_EUNAVAILABLE) rc = unrouted;
        else if (unrouted != 0)
            bus_warn(NULL, "%s cannot be used now (%s): requests for unknown services wait for their timeout until "
                     "the next reconnect", BUS_QUEUE_RPC_UNROUTED, bus_strerror(unrouted));
    }
    for (const bus_subscription_t *s = w->def->subscriptions; rc == 0 && s && s->type; s++)
        rc = bus_conn_bind(conn, w->q_events, BUS_EXCHANGE_EVENTS, s->type);
    if (rc == 0) rc = bus__worker_consumers_declare(w, conn);
    if (rc != 0) return; /* the connection is being re-established */
    if (w->def->on_up) w->def->on_up(w, conn);
    if (!bus_conn_is_up(conn)) return; /* the hook's declarations failed: again on the next connect */
    if (w->draining) return;
    rc = bus_conn_consume_fast(conn, w->q_rpc, 0, bus__worker_on_request, w, w->rpc_tag, sizeof w->rpc_tag);
    if (rc == 0 && w->unrouted_ok)
        rc = bus_conn_consume_fast(conn, BUS_QUEUE_RPC_UNROUTED, 0, bus__worker_on_unrouted, w, w->unrouted_tag,
                                   sizeof w->unrouted_tag);
    if (rc == 0)
        rc = bus_conn_consume(conn, w->q_events, 0, 0, amqp_empty_table, bus__worker_on_event, w, w->events_tag,
                              sizeof w->events_tag);
    if (rc == 0) {
        w->consuming = 1;
        bus_info(NULL, "consuming %s and %s", w->q_rpc, w->q_events);
        bus__worker_consumers_start(w, conn);
    }
}

static void on_down(bus_conn_t *conn, int err, void *data) {
    (void)conn;
    bus_worker_t *w = data;
    w->consuming = 0;
    bus__worker_consumers_down(w);
    if (w->exit_code == -1) return; /* our own clean close */
    bus_warn(NULL, "broker connection lost (%s); unacked work will be redelivered", bus_err_name(err));
}

static void on_conn_closed(void *data) {
    bus_worker_t *w = data;
    w->conn = NULL;
    uv_stop(w->loop);
}

static void shutdown_now(bus_worker_t *w) {
    if (!w->conn || w->exit_code == -1) return;
    w->exit_code = -1; /* shutting down */
    bus_info(NULL, "stopping (%ld in flight)", w->in_flight);
    uv_timer_stop(&w->drain_timer);
    uv_signal_stop(&w->sigterm);
    uv_signal_stop(&w->sigint);
    if (w->rpc) { /* calls still out fail with unavailable */
        bus_rpc_client_free(w->rpc);
        w->rpc = NULL;
    }
    bus__worker_timers_close(w);
    bus_conn_close(w->conn, on_conn_closed, w);
}

static void on_drain_timeout(uv_timer_t *t) {
    bus_worker_t *w = t->data;
    bus_warn(NULL, "drain time (%d ms) is up with %ld in flight; they will be redelivered", w->cfg.drain_ms,
             w->in_flight);
    shutdown_now(w);
}

static void on_signal(uv_signal_t *s, int signum) {
    bus_worker_t *w = s->data;
    if (w->draining) {
        shutdown_now(w); /* a second signal: stop now */
        return;
    }
    w->draining = 1;
    bus_info(NULL, "signal %d: draining (%ld in flight, up to %d ms)", signum, w->in_flight, w->cfg.drain_ms);
    bus__worker_timers_drain(w); /* no new scheduled work */
    if (w->consuming) {
        bus_conn_cancel(w->conn, w->rpc_tag);
        if (w->unrouted_ok) bus_conn_cancel(w->conn, w->unrouted_tag);
        bus_conn_cancel(w->conn, w->events_tag);
        w->consuming = 0;
    }
    bus__worker_consumers_cancel(w);
    if (w->in_flight == 0) {
        shutdown_now(w);
        return;
    }
    uv_timer_start(&w->drain_timer, on_drain_timeout, (uint64_t)w->cfg.drain_ms, 0);
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void on_guard(uv_timer_t *t) { uv_walk(t->loop, close_walk, NULL); }

/* A start that failed after init: close the timers init started, run their close callbacks, free them. */
static void release_timers(bus_worker_t *w) {
    bus__worker_timers_close(w);
    uv_run(w->loop, UV_RUN_NOWAIT);
    bus__worker_timers_free(w);
}

int bus__worker_metrics_start(bus_worker_t *w, char *err, size_t errlen);
void bus__worker_metrics_stop(bus_worker_t *w);
struct bus_schema_registry *bus__schema_registry_open(const char *dir, char *err, size_t errlen);
void bus__schema_registry_close(struct bus_schema_registry *reg);

int bus_worker_main(int argc, char **argv, const bus_worker_def_t *def) {
    static bus_worker_t worker; /* one per process */
    bus_worker_t *w = &worker;
    memset(w, 0, sizeof *w);
    w->def = def;
    char program[64], err[1024];
    snprintf(program, sizeof program, "bus-%s", def->service);
    int rc = bus_config_load(&w->cfg, argc, argv, program, def->summary ? def->summary : def->service, def->extras,
                             def->nextras, err, sizeof err);
    if (rc == 1) return 0;
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        return 2;
    }
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    char uuid[37];
    bus_uuid(uuid);
    snprintf(w->instance, sizeof w->instance, "%s-%s-%d-%.4s", def->service, host, (int)getpid(), uuid);
    snprintf(w->source, sizeof w->source, "bus-%s", def->service);
    bus_log_init(def->service, w->instance, (bus_log_level_t)w->cfg.log_level);
    bus_queue_name(w->q_events, sizeof w->q_events, "events", def->service);
    bus_queue_name(w->q_rpc, sizeof w->q_rpc, "rpc", def->service);
    bus_queue_name(w->q_retry, sizeof w->q_retry, "retry", def->service);
    bus_queue_name(w->q_dead, sizeof w->q_dead, "dead", def->service);
    srand((unsigned)(uv_hrtime() ^ (uint64_t)getpid()));

    w->m_consumed = bus_counter("bus_messages_consumed_total", "Messages delivered to this worker", "service", def->service, NULL);
    w->m_acked = bus_counter("bus_messages_acked_total", "Messages acked after their effect", "service", def->service, NULL);
    w->m_nacked = bus_counter("bus_messages_nacked_total", "Messages returned to their queue", "service", def->service, NULL);
    w->m_oversized = bus_counter("bus_messages_oversized_total", "Messages larger than the envelope limit, "
                                 "rejected for the broker to dead-letter", "service", def->service, NULL);
    w->m_dead = bus_counter("bus_messages_dead_lettered_total", "Messages sent to the dead-letter queue", "service", def->service, NULL);
    w->m_retried = bus_counter("bus_messages_retried_total", "Events sent for a delayed retry", "service", def->service, NULL);
    w->m_rpc_errors = bus_counter("bus_rpc_errors_total", "RPC requests answered with an error", "service", def->service, NULL);
    w->m_rpc_seconds = bus_histogram("bus_rpc_handler_seconds", "Time from request delivery to reply", "service", def->service, NULL);
    w->m_in_flight = bus_gauge("bus_in_flight", "Requests, events, deliveries and domain work in flight", "service",
                               def->service, NULL);

    const char *vr = getenv("BUS_VALIDATE_REPLIES");
    w->validate_replies = vr && strcmp(vr, "1") == 0;
    w->loop = uv_default_loop();
    w->started_ms = uv_now(w->loop);
    w->schemas = bus__schema_registry_open(w->cfg.schemas_dir, err, sizeof err);
    if (!w->schemas && err[0]) {
        fprintf(stderr, "%s: BUS_SCHEMAS_DIR: %s\n", program, err);
        bus_config_free(&w->cfg);
        return 2;
    }
    int irc = bus__worker_consumers_init(w, err, sizeof err);
    if (irc == 0 && def->init) irc = def->init(w, err, sizeof err);
    if (irc != 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        release_timers(w);
        bus__worker_consumers_free(w);
        bus__schema_registry_close(w->schemas);
        bus_config_free(&w->cfg);
        return irc == BUS_EBAD_REQUEST ? 2 : 1;
    }
    bus_conn_options_t co = {.url = w->cfg.amqp_url, .name = w->instance, .heartbeat_s = w->cfg.heartbeat_s,
                             .prefetch = (uint16_t)w->cfg.prefetch, .on_up = on_up, .on_down = on_down, .data = w};
    if (bus_conn_new(w->loop, &co, &w->conn, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        if (def->fini) def->fini(w);
        release_timers(w);
        bus__worker_consumers_free(w);
        bus__schema_registry_close(w->schemas);
        bus_config_free(&w->cfg);
        return 2;
    }
    if (bus_rpc_client_new(w->conn, w->cfg.rpc_timeout_ms, &w->rpc) != 0) {
        fprintf(stderr, "%s: out of memory\n", program);
        return 1;
    }
    if (bus__worker_metrics_start(w, err, sizeof err) != 0) {
        fprintf(stderr, "%s: BUS_METRICS_ADDR: %s\n", program, err);
        return 2;
    }
    uv_signal_init(w->loop, &w->sigterm);
    uv_signal_init(w->loop, &w->sigint);
    uv_timer_init(w->loop, &w->drain_timer);
    w->sigterm.data = w->sigint.data = w->drain_timer.data = w;
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    char masked[512];
    bus_info(NULL, "starting %s %s (rpc %s, events %s, broker %s)", program, BUS_VERSION, w->q_rpc, w->q_events,
             bus_url_mask(w->cfg.amqp_url, masked, sizeof masked));
    bus_conn_start(w->conn);
    uv_run(w->loop, UV_RUN_DEFAULT);

    /* the connection is closed; let the domain and our handles finish,
     * with a guard that closes whatever is left after 2 s */
    bus__worker_metrics_stop(w);
    if (def->fini) def->fini(w);
    uv_close((uv_handle_t *)&w->sigterm, NULL);
    uv_close((uv_handle_t *)&w->sigint, NULL);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_timer_t guard;
    uv_timer_init(w->loop, &guard);
    guard.data = w->loop;
    uv_timer_start(&guard, on_guard, 2000, 0);
    uv_unref((uv_handle_t *)&guard);
    uv_run(w->loop, UV_RUN_DEFAULT);
    if (!uv_is_closing((uv_handle_t *)&guard)) uv_close((uv_handle_t *)&guard, NULL);
    uv_run(w->loop, UV_RUN_DEFAULT);
    bus__worker_timers_free(w);
    bus__worker_consumers_free(w);
    uv_loop_close(w->loop);
    bus__schema_registry_close(w->schemas);
    bus_info(NULL, "stopped");
    bus_config_free(&w->cfg);
    return 0;
}

int bus_worker_build_event(bus_worker_t *w, const char *type, cJSON *data, const char *subject,
                           const char *correlation_id, char *id_out, char **body, size_t *len) {
    bus_envelope_t env = {0};
    if (bus_envelope_init(&env, type, w->source, subject, correlation_id, data) != 0) return BUS_EINTERNAL;
    char invalid[1024];
    if (bus__schema_check_event(w->schemas, type, env.data, "/data", invalid, sizeof invalid) != 0) {
        bus_error(correlation_id, "refusing to publish an invalid %s event: %s", type, invalid);
        bus_envelope_clear(&env);
        return BUS_EINVALID;
    }
    const bus_schema_t *s = w->schemas ? bus_schema_registry_event(w->schemas, type) : NULL;
    if (s) env.dataschema = strdup(bus_schema_uri(s));
    *body = bus_envelope_serialize(&env, len);
    snprintf(id_out, 37, "%s", env.id);
    bus_envelope_clear(&env);
    return *body ? 0 : BUS_EINTERNAL;
}

int bus_worker_publish(bus_worker_t *w, const char *type, cJSON *data, const char *subject,
                       const char *correlation_id, bus_publish_cb cb, void *cbdata, char *id_out) {
    char id[37];
    char *body = NULL;
    size_t len = 0;
    int rc = bus_worker_build_event(w, type, data, subject, correlation_id, id, &body, &len);
    if (rc != 0) return rc;
    if (id_out) snprintf(id_out, 37, "%s", id);
    rc = bus_event_publish_body(w->conn, type, id, correlation_id, body, len, cb, cbdata);
    free(body);
    return rc;
}

int bus_worker_publish_raw(bus_worker_t *w, const char *type, const char *id, const char *correlation_id,
                           const char *body, size_t len, bus_publish_cb cb, void *cbdata) {
    return bus_event_publish_body(w->conn, type, id, correlation_id, body, len, cb, cbdata);
}
