/* busctl schema check|list, and the event check before `busctl publish`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/schema.h"
#include "cli.h"

int bus_cli_schema(int argc, char **argv) {
    if (argc >= 1 && strcmp(argv[0], "check") == 0) return bus_schema_check_main(argc, argv);
    if (argc >= 1 && strcmp(argv[0], "list") == 0) return bus_schema_list_main(argc, argv);
    fprintf(stderr, "usage: busctl schema check SCHEMA.json [INSTANCE.json|-]\n"
                    "       busctl schema list [--dir DIR]\n");
    return 2;
}

int bus_cli_check_event(const char *type, const cJSON *data, char *err, size_t errlen) {
    const char *dir = getenv("BUS_SCHEMAS_DIR");
    bus_schema_registry_t *reg = NULL;
    int rc = bus_schema_registry_load(dir && *dir ? dir : "schemas", &reg, err, errlen);
    if (rc == BUS_ENOT_FOUND) return 0; /* no schemas here: the consumer validates */
    if (rc != 0) return rc;
    const bus_schema_t *s = bus_schema_registry_event(reg, type);
    bus_schema_result_t result;
    rc = 0;
    if (s && bus_schema_validate_at(s, data, "/data", &result) != 0) {
        bus_schema_result_format(&result, err, errlen);
        rc = BUS_EINVALID;
    }
    bus_schema_registry_free(reg);
    return rc;
}
