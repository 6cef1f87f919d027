/* Internal state shared by worker.c, worker_rpc.c and worker_events.c. */
#ifndef BUS_WORKER_INTERNAL_H
#define BUS_WORKER_INTERNAL_H

#include "bus/metrics.h"
#include "bus/worker.h"

struct bus_http_server;

struct bus_worker {
    const bus_worker_def_t *def;
    bus_config_t cfg;
    uv_loop_t *loop;
    bus_conn_t *conn;
    struct bus_rpc_client *rpc; /* calls to other domains (bus_worker_rpc); NULL once stopping */
    char instance[96];
    char source[80];
    char q_events[96], q_rpc[96], q_retry[96], q_dead[96];
    char rpc_tag[128], events_tag[128];
    int consuming;
    int draining;
    long in_flight;
    uint64_t started_ms;
    void *state;
    struct bus_schema_registry *schemas;
    struct bus_http_server *metrics_server;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    int exit_code;
    int validate_replies; /* BUS_VALIDATE_REPLIES=1: check results against their schema (tests) */

    bus_counter_t *m_consumed, *m_acked, *m_nacked, *m_dead, *m_retried, *m_rpc_errors;
    bus_histogram_t *m_rpc_seconds;
    bus_gauge_t *m_in_flight;
};

/* worker_rpc.c */
void bus__worker_on_request(bus_msg_t *msg, void *data);
/* worker_events.c */
void bus__worker_on_event(bus_msg_t *msg, void *data);
/* Sends msg to dead.<s> with the reason, then acks it (or requeues it when
 * the dead-letter publish fails). Takes ownership of msg. */
void bus__worker_dead_letter(bus_worker_t *w, bus_msg_t *msg, const char *reason);
/* worker.c: one unit of work finished (for the drain). */
void bus__worker_work_done(bus_worker_t *w);
void bus__worker_work_started(bus_worker_t *w);

#endif
