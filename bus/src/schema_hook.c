/* Where libbus enforces schemas: RPC params and results, consumed and
 * published events. See schema_hook.h. */
#include "schema_hook.h"

#include <stdio.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/schema.h"

struct bus_schema_registry *bus__schema_registry_open(const char *dir, char *err, size_t errlen);
void bus__schema_registry_close(struct bus_schema_registry *reg);

/* A missing directory is allowed (nothing is validated, with a warning); a
 * broken schema is an error: NULL with the reason in err. */
struct bus_schema_registry *bus__schema_registry_open(const char *dir, char *err, size_t errlen) {
    bus_schema_registry_t *reg = NULL;
    err[0] = '\0';
    int rc = bus_schema_registry_load(dir, &reg, err, errlen);
    if (rc == BUS_ENOT_FOUND) {
        bus_warn(NULL, "no schema directory \"%s\" (BUS_SCHEMAS_DIR): messages are not validated", dir);
        err[0] = '\0';
        return NULL;
    }
    if (rc != 0) return NULL;
    bus_info(NULL, "schemas: %zu event types, %zu methods from %s", bus_schema_registry_event_count(reg),
             bus_schema_registry_method_count(reg), dir);
    return reg;
}

void bus__schema_registry_close(struct bus_schema_registry *reg) { bus_schema_registry_free(reg); }

static int check(const bus_schema_t *s, const cJSON *instance, const char *prefix, char *err, size_t errlen) {
    if (!s) return 0;
    bus_schema_result_t result;
    static const cJSON null_instance = {.type = cJSON_NULL};
    if (bus_schema_validate_at(s, instance ? instance : &null_instance, prefix, &result) == 0) return 0;
    bus_schema_result_format(&result, err, errlen);
    return BUS_EINVALID;
}

int bus__schema_check_params(struct bus_schema_registry *reg, const char *service, const char *method,
                             const cJSON *params, char *err, size_t errlen) {
    return reg ? check(bus_schema_registry_params(reg, service, method), params, "", err, errlen) : 0;
}

int bus__schema_check_result(struct bus_schema_registry *reg, const char *service, const char *method,
                             const cJSON *result, char *err, size_t errlen) {
    return reg ? check(bus_schema_registry_result(reg, service, method), result, "", err, errlen) : 0;
}

int bus__schema_check_event(struct bus_schema_registry *reg, const char *type, const cJSON *data,
                            const char *prefix, char *err, size_t errlen) {
    return reg ? check(bus_schema_registry_event(reg, type), data, prefix ? prefix : "", err, errlen) : 0;
}
