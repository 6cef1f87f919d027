/* bus-verification: player verification against the game's player API (domain arrives with its issue; answers ping now).
 *
 * The skeleton the domain will fill: a sweep every minute on a worker timer
 * (bus/worker.h) that will expire verification codes nobody confirmed. Its
 * work is marked with bus_worker_work_begin/end so a SIGTERM drain waits for
 * a sweep under way, and the drain stops the timer. Today there is nothing
 * to expire.
 */
#include <stdio.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/worker.h"

#define SWEEP_MS (60 * 1000)

static void on_sweep(bus_worker_timer_t *t, void *data) {
    (void)t;
    bus_worker_t *w = data;
    bus_worker_work_begin(w); /* the store query, asynchronous once there is a store */
    bus_debug(NULL, "expiry sweep: no pending verification");
    bus_worker_work_end(w);
}

static int verification_init(bus_worker_t *w, char *err, size_t errlen) {
    int rc = bus_worker_timer_start(w, SWEEP_MS, SWEEP_MS, on_sweep, w, NULL); /* owned by the worker */
    if (rc != 0) snprintf(err, errlen, "cannot start the expiry sweep timer: %s", bus_strerror(rc));
    return rc;
}

static const bus_worker_def_t definition = {
    .service = "verification",
    .summary = "player verification against the game's player API (domain arrives with its issue; answers ping now)",
    .init = verification_init,
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
