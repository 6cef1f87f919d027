/* bus-events: scheduled game events and reminders (domain arrives with its issue; answers ping now).
 *
 * The skeleton the domain will fill: a scheduler tick every
 * BUS_EVENTS_TICK_MS on a worker timer (bus/worker.h). Each tick will look
 * for due events and reminders and publish them; that work is marked with
 * bus_worker_work_begin/end so a SIGTERM drain waits for it, and the drain
 * stops the tick, so no new scan starts. Today a tick finds nothing to do.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/worker.h"

static bus_config_extra_t extras[] = {
    {"BUS_EVENTS_TICK_MS", "--tick-ms", "scheduler tick: how often due events are looked for", "1000", NULL},
};

static uint64_t ticks;

static void on_tick(bus_worker_timer_t *t, void *data) {
    (void)t;
    bus_worker_t *w = data;
    bus_worker_work_begin(w); /* the scan, asynchronous once it queries the store */
    ticks++;
    bus_debug(NULL, "scheduler tick %llu: nothing due", (unsigned long long)ticks);
    bus_worker_work_end(w); /* after the last publish of the scan is confirmed */
}

static int ev_init(bus_worker_t *w, char *err, size_t errlen) {
    const char *v = bus_worker_extra(w, "BUS_EVENTS_TICK_MS");
    char *end = NULL;
    long ms = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || ms < 10 || ms > 3600 * 1000) {
        snprintf(err, errlen, "BUS_EVENTS_TICK_MS: \"%s\" is not a whole number of milliseconds from 10 to 3600000",
                 v ? v : "");
        return BUS_EBAD_REQUEST;
    }
    int rc = bus_worker_timer_start(w, (uint64_t)ms, (uint64_t)ms, on_tick, w, NULL); /* owned by the worker */
    if (rc != 0) snprintf(err, errlen, "cannot start the scheduler tick: %s", bus_strerror(rc));
    return rc;
}

static const bus_worker_def_t definition = {
    .service = "events",
    .summary = "scheduled game events and reminders (domain arrives with its issue; answers ping now)",
    .extras = extras,
    .nextras = sizeof extras / sizeof extras[0],
    .init = ev_init,
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
