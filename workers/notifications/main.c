/* bus-notifications: notifications to Discord, Telegram and webhooks (domain arrives with its issue; answers ping now). */
#include "bus/worker.h"

static const bus_worker_def_t definition = {
    .service = "notifications",
    .summary = "notifications to Discord, Telegram and webhooks (domain arrives with its issue; answers ping now)",
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
