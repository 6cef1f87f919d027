/* Internal state shared by worker.c, worker_rpc.c, worker_events.c,
 * worker_timer.c and worker_consumers.c. */
#ifndef BUS_WORKER_INTERNAL_H
#define BUS_WORKER_INTERNAL_H

#include "bus/metrics.h"
#include "bus/worker.h"

struct bus_http_server;
struct bus__consumer;

struct bus_worker {
    const bus_worker_def_t *def;
    bus_config_t cfg;
    uv_loop_t *loop;
    bus_conn_t *conn;
    struct bus_rpc_client *rpc; /* calls to other domains (bus_worker_rpc); NULL once stopping */
    char instance[96];
    char source[80];
    char q_events[96], q_rpc[96], q_retry[96], q_dead[96];
    char rpc_tag[128], events_tag[128], unrouted_tag[128];
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

    struct bus_worker_timer *timers;   /* worker_timer.c: every timer not yet freed */
    struct bus__consumer *consumers;   /* worker_consumers.c: one per def->consumers entry */
    size_t nconsumers;

    bus_counter_t *m_consumed, *m_acked, *m_nacked, *m_dead, *m_retried, *m_rpc_errors, *m_oversized;
    int unrouted_ok;         /* 1: rpc.unrouted was declared on this connection and is consumed (worker.c) */
    int events_dlx, rpc_dlx; /* 1: events.<s> / rpc.<s> dead-letter into dead.<s> through the broker (worker.c) */
    bus_histogram_t *m_rpc_seconds;
    bus_gauge_t *m_in_flight;
};

/* worker_rpc.c */
void bus__worker_on_request(bus_msg_t *msg, void *data);
/* worker_events.c */
void bus__worker_on_event(bus_msg_t *msg, void *data);
/* Sends msg to dead.<s> with the reason, then acks it (or requeues it when
 * the dead-letter publish fails). Takes ownership of msg. */
/* A message larger than BUS_ENVELOPE_MAX_BYTES: logged (id, type, size,
 * queue), counted, and rejected without requeue, for the broker to move to
 * dead.<s> without this process copying its body. Ends the work item. */
void bus__worker_reject_oversized(bus_worker_t *w, bus_msg_t *msg, const char *queue, int dlx);
/* Consumer of rpc.unrouted (every worker serves it): answers not_found at
 * once to a request for a service nobody has declared (bus/topology.h). */
void bus__worker_on_unrouted(bus_msg_t *msg, void *data);
void bus__worker_dead_letter(bus_worker_t *w, bus_msg_t *msg, const char *reason);
/* worker.c: one unit of work finished (for the drain). */
void bus__worker_work_done(bus_worker_t *w);
void bus__worker_work_started(bus_worker_t *w);

/* worker_timer.c */
/* The drain began: timers started so far stop firing. */
void bus__worker_timers_drain(bus_worker_t *w);
/* Shutting down: every timer's handle is closed (the close callbacks run on a later loop turn). */
void bus__worker_timers_close(bus_worker_t *w);
/* After the last loop run: frees every timer left (their owners' handles end with fini). */
void bus__worker_timers_free(bus_worker_t *w);

/* worker_consumers.c */
/* Checks def->consumers and allocates their state; 0, BUS_EBAD_REQUEST or BUS_EINTERNAL (err says why). */
int bus__worker_consumers_init(bus_worker_t *w, char *err, size_t errlen);
/* Declares and binds their queues (on_up). 0 or BUS_EUNAVAILABLE. */
int bus__worker_consumers_declare(bus_worker_t *w, bus_conn_t *conn);
/* Starts consuming them (on_up, not while draining). 0 or an error. */
int bus__worker_consumers_start(bus_worker_t *w, bus_conn_t *conn);
/* Cancels them (the drain). */
void bus__worker_consumers_cancel(bus_worker_t *w);
/* The connection was lost: their consumers are gone. */
void bus__worker_consumers_down(bus_worker_t *w);
void bus__worker_consumers_free(bus_worker_t *w);

#endif
