/* The worker's timers and its public in-flight work markers: scheduled work
 * that the SIGTERM drain knows about. See bus/worker.h.
 *
 * A timer lives in the worker's list from start until it is freed. Its
 * uv_timer_t is closed on stop or at shutdown; the struct is freed once the
 * handle is closed and nobody holds it any more: the caller that got it
 * through `out` until bus_worker_timer_stop, the worker otherwise. */
#include <stdlib.h>

#include "bus/error.h"
#include "worker_internal.h"

struct bus_worker_timer {
    uv_timer_t handle;
    bus_worker_t *w;
    bus_worker_timer_fn cb;
    void *data;
    uint64_t repeat_ms;
    int held;           /* the caller holds it (out != NULL) and has not stopped it */
    int closing;        /* uv_close was called */
    int closed;         /* its close callback ran */
    int started_draining; /* started during the drain: part of in-flight work, keeps firing */
    struct bus_worker_timer *prev, *next;
};

void bus_worker_work_begin(bus_worker_t *w) { bus__worker_work_started(w); }
void bus_worker_work_end(bus_worker_t *w) { bus__worker_work_done(w); }
int bus_worker_draining(const bus_worker_t *w) { return w->draining || w->exit_code == -1; }

static void timer_unlink_free(bus_worker_timer_t *t) {
    bus_worker_t *w = t->w;
    if (t->prev) t->prev->next = t->next;
    else w->timers = t->next;
    if (t->next) t->next->prev = t->prev;
    free(t);
}

static void on_timer_closed(uv_handle_t *h) {
    bus_worker_timer_t *t = h->data;
    t->closed = 1;
    if (!t->held) timer_unlink_free(t);
}

static void timer_close(bus_worker_timer_t *t) {
    if (t->closing) return;
    t->closing = 1;
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t *)&t->handle, on_timer_closed);
}

static void on_timer(uv_timer_t *h) {
    bus_worker_timer_t *t = h->data;
    t->cb(t, t->data);
    /* cb may have stopped t: the struct stays valid until its close callback,
     * which runs on a later loop turn */
    if (t->repeat_ms == 0 && !t->held && !t->closing) timer_close(t);
}

int bus_worker_timer_start(bus_worker_t *w, uint64_t delay_ms, uint64_t repeat_ms, bus_worker_timer_fn cb, void *data,
                           bus_worker_timer_t **out) {
    if (out) *out = NULL;
    if (!cb) return BUS_EBAD_REQUEST;
    if (w->exit_code == -1) return BUS_EUNAVAILABLE;
    bus_worker_timer_t *t = calloc(1, sizeof *t);
    if (!t) return BUS_EINTERNAL;
    if (uv_timer_init(w->loop, &t->handle) != 0) {
        free(t);
        return BUS_EINTERNAL;
    }
    t->handle.data = t;
    t->w = w;
    t->cb = cb;
    t->data = data;
    t->repeat_ms = repeat_ms;
    t->held = out != NULL;
    t->started_draining = w->draining;
    t->next = w->timers;
    if (w->timers) w->timers->prev = t;
    w->timers = t;
    /* the connection keeps the loop alive while the worker runs; a timer
     * must not hold it open once the worker shuts down */
    uv_unref((uv_handle_t *)&t->handle);
    uv_timer_start(&t->handle, on_timer, delay_ms, repeat_ms);
    if (out) *out = t;
    return 0;
}

void bus_worker_timer_stop(bus_worker_timer_t *t) {
    if (!t) return;
    if (!t->held) { /* the worker's own timer, stopped from its callback */
        timer_close(t);
        return;
    }
    t->held = 0;
    if (t->closed) timer_unlink_free(t);
    else timer_close(t);
}

void bus__worker_timers_drain(bus_worker_t *w) {
    for (bus_worker_timer_t *t = w->timers; t; t = t->next)
        if (!t->started_draining) uv_timer_stop(&t->handle);
}

void bus__worker_timers_close(bus_worker_t *w) {
    for (bus_worker_timer_t *t = w->timers, *next; t; t = next) {
        next = t->next; /* never freed here: close callbacks run later */
        timer_close(t);
    }
}

void bus__worker_timers_free(bus_worker_t *w) {
    while (w->timers) {
        bus_worker_timer_t *t = w->timers;
        if (!t->closed) { /* its close callback never ran (the loop did not run after the close): unlink
                              * only, the loop may still point at it */
            w->timers = t->next;
            if (w->timers) w->timers->prev = NULL;
            continue;
        }
        timer_unlink_free(t);
    }
}
