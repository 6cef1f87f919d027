/* Internal: the places where libbus enforces schemas (worker requests,
 * consumed and published events, busctl, the edge). Each returns 0 when the
 * instance is valid or no schema is registered for it, and BUS_EINVALID with
 * the failures ("path: message; ...") in err otherwise. A NULL registry
 * validates nothing. */
#ifndef BUS_SCHEMA_HOOK_H
#define BUS_SCHEMA_HOOK_H

#include <cjson/cJSON.h>
#include <stddef.h>

struct bus_schema_registry;

int bus__schema_check_params(struct bus_schema_registry *reg, const char *service, const char *method,
                             const cJSON *params, char *err, size_t errlen);
int bus__schema_check_result(struct bus_schema_registry *reg, const char *service, const char *method,
                             const cJSON *result, char *err, size_t errlen);
/* `prefix` is put before every path ("/data" for event data). */
int bus__schema_check_event(struct bus_schema_registry *reg, const char *type, const cJSON *data,
                            const char *prefix, char *err, size_t errlen);

#endif
