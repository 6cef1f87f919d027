/* bus-notifications: notifications to Discord, Telegram and webhooks (domain arrives with its issue; answers ping now).
 *
 * The skeleton the domain will fill: every 5 s a worker timer (bus/worker.h)
 * will send again the deliveries that failed (a webhook down, a rate limit).
 * A retry round is in-flight work (bus_worker_work_begin/end) until its last
 * HTTP call answers, so a SIGTERM drain waits for it, and the drain stops
 * the timer. Today there is nothing to retry.
 */
#include <stdio.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/worker.h"

#define RETRY_MS (5 * 1000)

static void on_retry_round(bus_worker_timer_t *t, void *data) {
    (void)t;
    bus_worker_t *w = data;
    bus_worker_work_begin(w); /* ends when the round's last call answers */
    bus_debug(NULL, "retry round: no failed delivery");
    bus_worker_work_end(w);
}

static int notifications_init(bus_worker_t *w, char *err, size_t errlen) {
    int rc = bus_worker_timer_start(w, RETRY_MS, RETRY_MS, on_retry_round, w, NULL); /* owned by the worker */
    if (rc != 0) snprintf(err, errlen, "cannot start the retry timer: %s", bus_strerror(rc));
    return rc;
}

static const bus_worker_def_t definition = {
    .service = "notifications",
    .summary = "notifications to Discord, Telegram and webhooks (domain arrives with its issue; answers ping now)",
    .init = notifications_init,
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
