/* busctl schema check|list, and the event check before `busctl publish`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/config.h"
#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/schema.h"
#include "cli.h"

/* Reads a whole file ("-" = stdin). Caller frees. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0;
    FILE *mem = open_memstream(&buf, &cap);
    char chunk[8192];
    size_t r;
    while (mem && (r = fread(chunk, 1, sizeof chunk, f)) > 0) fwrite(chunk, 1, r, mem);
    if (f != stdin) fclose(f);
    if (mem) fclose(mem);
    *len = cap;
    return buf;
}

/* busctl schema check --params|--result SERVICE.METHOD | --event TYPE [INSTANCE|-]:
 * validates against the registry of BUS_SCHEMAS_DIR (default schemas/), so
 * RPC params and results can be checked like event data. */
static int check_by_name(int argc, char **argv) {
    const char *kind = argv[1], *name = argc > 2 ? argv[2] : NULL, *ipath = argc > 3 ? argv[3] : "-";
    if (!name || argc > 4) {
        fprintf(stderr, "usage: busctl schema check --params|--result SERVICE.METHOD [INSTANCE.json|-]\n"
                        "       busctl schema check --event TYPE [INSTANCE.json|-]\n");
        return 2;
    }
    const char *dir = getenv("BUS_SCHEMAS_DIR");
    char err[1024];
    bus_schema_registry_t *reg = NULL;
    if (bus_schema_registry_load(dir && *dir ? dir : bus_config_default_schemas_dir(), &reg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    const bus_schema_t *schema = NULL;
    if (strcmp(kind, "--event") == 0) {
        schema = bus_schema_registry_event(reg, name);
    } else {
        char service[128];
        const char *dot = strchr(name, '.');
        if (dot && (size_t)(dot - name) < sizeof service) {
            snprintf(service, sizeof service, "%.*s", (int)(dot - name), name);
            schema = strcmp(kind, "--params") == 0 ? bus_schema_registry_params(reg, service, dot + 1)
                                                   : bus_schema_registry_result(reg, service, dot + 1);
        }
    }
    if (!schema) {
        fprintf(stderr, "no %s schema for %s in %s\n", kind + 2, name, dir && *dir ? dir : bus_config_default_schemas_dir());
        bus_schema_registry_free(reg);
        return 2;
    }
    size_t len = 0;
    char *text = slurp(ipath, &len);
    if (!text) {
        fprintf(stderr, "%s: cannot read\n", ipath);
        bus_schema_registry_free(reg);
        return 2;
    }
    cJSON *instance = bus_json_parse(text, len, BUS_JSON_MAX_DEPTH, err, sizeof err);
    free(text);
    int rc = 0;
    if (!instance) {
        printf("(root): %s\n", err);
        rc = 1;
    } else {
        bus_schema_result_t res;
        if (bus_schema_validate(schema, instance, &res) != 0) {
            for (size_t i = 0; i < res.count; i++) {
                char line[1024];
                bus_schema_error_format(&res.errors[i], line, sizeof line);
                printf("%s\n", line);
            }
            if (res.truncated) printf("... (more failures not shown)\n");
            rc = 1;
        }
        cJSON_Delete(instance);
    }
    bus_schema_registry_free(reg);
    return rc;
}

int bus_cli_schema(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[0], "check") == 0 &&
        (strcmp(argv[1], "--params") == 0 || strcmp(argv[1], "--result") == 0 || strcmp(argv[1], "--event") == 0))
        return check_by_name(argc, argv);
    if (argc >= 1 && strcmp(argv[0], "check") == 0) return bus_schema_check_main(argc, argv);
    if (argc >= 1 && strcmp(argv[0], "list") == 0) return bus_schema_list_main(argc, argv);
    fprintf(stderr, "usage: busctl schema check SCHEMA.json [INSTANCE.json|-]\n"
                    "       busctl schema check --params|--result SERVICE.METHOD [INSTANCE.json|-]\n"
                    "       busctl schema check --event TYPE [INSTANCE.json|-]\n"
                    "       busctl schema list [--dir DIR]\n");
    return 2;
}

int bus_cli_check_event(const char *type, const cJSON *data, char *err, size_t errlen) {
    const char *dir = getenv("BUS_SCHEMAS_DIR");
    bus_schema_registry_t *reg = NULL;
    /* every event type needs a schema: a type without one is refused here,
     * as at the edge; no schema directory at all is an error too */
    int rc = bus_schema_registry_load(dir && *dir ? dir : bus_config_default_schemas_dir(), &reg, err, errlen);
    if (rc != 0) return rc;
    const bus_schema_t *s = bus_schema_registry_event(reg, type);
    bus_schema_result_t result;
    rc = 0;
    if (!s) {
        snprintf(err, errlen, "no schema for event type %s in %s (every event type needs events/%s.json)", type,
                 dir && *dir ? dir : bus_config_default_schemas_dir(), type);
        rc = BUS_ENOT_FOUND;
    } else if (bus_schema_validate_at(s, data, "/data", &result) != 0) {
        bus_schema_result_format(&result, err, errlen);
        rc = BUS_EINVALID;
    }
    bus_schema_registry_free(reg);
    return rc;
}
