/* bus-alliances: alliances, members and ranks R1-R5 (the issue "alliances").
 *
 * RPC alliances.<create|get|find|list|join|leave|set_rank|kick|transfer|
 * dissolve|member|members> (methods.c), events alliance.* out, user.forgotten
 * in (events.c), state in the store named by BUS_STORE (store.c). Any number
 * of processes may run side by side on one store: the store's conditional
 * writes decide every race (op.c).
 */
#include <stdio.h>
#include <stdlib.h>

#include "alliances.h"
#include "bus/error.h"

static int al_init(bus_worker_t *w, char *err, size_t errlen) {
    al_state_t *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    st->w = w;
    int rc = bus_store_open(bus_worker_loop(w), bus_worker_config(w)->store, &st->store, err, errlen);
    if (rc == 0) rc = al_store_declare(st->store, err, errlen);
    if (rc != 0) {
        bus_store_close(st->store, NULL, NULL);
        free(st);
        return rc;
    }
    bus_worker_set_state(w, st);
    return 0;
}

static void al_fini(bus_worker_t *w) {
    al_state_t *st = bus_worker_state(w);
    if (!st) return;
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
    .init = al_init,
    .fini = al_fini,
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
