/* busctl schema check / busctl schema list: the command-line side of the
 * schema registry, so busctl only dispatches (see bus/include/bus/schema.h
 * for the exit codes). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/config.h"
#include "bus/error.h"
#include "schema_internal.h"

static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            if (cap >= (256u << 20)) {
                free(buf);
                return NULL;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (buf && ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

int bus_schema_check_main(int argc, char **argv) {
    if (argc < 2 || argc > 3 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fprintf(stderr,
                "usage: busctl schema check SCHEMA.json [INSTANCE.json|-]\n"
                "  validates the instance (stdin when '-' or absent) against a draft-07 schema;\n"
                "  exit 0 valid, 1 invalid (one failure per line), 2 usage or bad schema\n");
        return 2;
    }
    char err[1024];
    bus_schema_t *s = NULL;
    int rc = bus_schema_load_file(argv[1], &s, err, sizeof err);
    if (rc) {
        fprintf(stderr, "bad schema: %s\n", err);
        return 2;
    }
    const char *ipath = argc == 3 ? argv[2] : "-";
    size_t len = 0;
    char *text;
    if (strcmp(ipath, "-") == 0) {
        text = read_stream(stdin, &len);
    } else {
        text = bus__read_file(ipath, &len);
    }
    if (!text) {
        fprintf(stderr, "%s: cannot read: %s\n", strcmp(ipath, "-") == 0 ? "stdin" : ipath,
                strerror(errno ? errno : EIO));
        bus_schema_free(s);
        return 2;
    }
    char perr[128];
    cJSON *inst = bus__schema_parse_json(text, len, perr, sizeof perr);
    free(text);
    if (!inst) {
        printf("(root): %s\n", perr);
        bus_schema_free(s);
        return 1;
    }
    bus_schema_result_t *res = malloc(sizeof *res);
    if (!res) {
        fprintf(stderr, "out of memory\n");
        cJSON_Delete(inst);
        bus_schema_free(s);
        return 2;
    }
    rc = bus_schema_validate(s, inst, res);
    for (size_t i = 0; i < res->count; i++) {
        char line[1200];
        bus_schema_error_format(&res->errors[i], line, sizeof line);
        printf("%s\n", line);
    }
    if (res->truncated) printf("... (more failures not shown)\n");
    free(res);
    cJSON_Delete(inst);
    bus_schema_free(s);
    return rc ? 1 : 0;
}

int bus_schema_list_main(int argc, char **argv) {
    const char *dir = getenv("BUS_SCHEMAS_DIR");
    if (!dir || !*dir) dir = bus_config_default_schemas_dir();
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strncmp(argv[i], "--dir=", 6) == 0) {
            dir = argv[i] + 6;
        } else {
            fprintf(stderr, "usage: busctl schema list [--dir DIR]\n");
            return 2;
        }
    }
    char err[1024];
    bus_schema_registry_t *r = NULL;
    if (bus_schema_registry_load(dir, &r, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    for (size_t i = 0; i < bus_schema_registry_event_count(r); i++) {
        const char *type = bus_schema_registry_event_at(r, i, NULL);
        printf("event  %-36s %s/events/%s.json\n", type, dir, type);
    }
    for (size_t i = 0; i < bus_schema_registry_method_count(r); i++) {
        const char *svc, *m;
        const bus_schema_t *p, *res;
        bus_schema_registry_method_at(r, i, &svc, &m, &p, &res, NULL);
        char name[160];
        snprintf(name, sizeof name, "%s.%s", svc, m);
        printf("rpc    %-36s %s/rpc/%s.json (params: %s, result: %s)\n", name, dir, name, p ? "yes" : "no",
               res ? "yes" : "no");
    }
    bus_schema_registry_free(r);
    return 0;
}
