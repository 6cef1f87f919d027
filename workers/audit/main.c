/* bus-audit: RBAC and the audit trail (domain arrives with its issue; answers ping now). */
#include "bus/worker.h"

static const bus_worker_def_t definition = {
    .service = "audit",
    .summary = "RBAC and the audit trail (domain arrives with its issue; answers ping now)",
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
