/* bus-alliances: alliances, members and ranks (R1-R5). */
#include "bus/worker.h"

static const bus_worker_def_t definition = {
    .service = "alliances",
    .summary = "alliances, members and ranks (answers ping; the domain arrives with its issue)",
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
