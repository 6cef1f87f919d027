/* Configuration from environment and flags. See bus/config.h. */
#include "bus/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus/error.h"
#include "bus/log.h"

typedef enum { KIND_STRING, KIND_INT, KIND_LEVEL, KIND_QUEUE_TYPE, KIND_ADDR, KIND_OPT_ADDR } kind_t;

typedef struct {
    const char *env, *flag, *def, *help;
    kind_t kind;
    long min, max;
    size_t offset;
} setting_t;

#define OFF(f) offsetof(bus_config_t, f)
static const setting_t settings[] = {
    {"BUS_AMQP_URL", "--amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL, or several separated by commas (failover)", KIND_STRING, 0, 0, OFF(amqp_url)},
    {"BUS_REDIS_URL", "--redis-url", "redis://127.0.0.1:6379/0", "Redis URL", KIND_STRING, 0, 0, OFF(redis_url)},
    {"BUS_STORE", "--store", "sqlite:var/bus.db", "store: sqlite:PATH or mongodb://...", KIND_STRING, 0, 0, OFF(store)},
    {"BUS_HTTP_ADDR", "--http-addr", "127.0.0.1:8080", "HTTP listen address (gateway)", KIND_ADDR, 0, 0, OFF(http_addr)},
    {"BUS_SCHEMAS_DIR", "--schemas-dir", "schemas", "JSON Schema directory", KIND_STRING, 0, 0, OFF(schemas_dir)},
    {"BUS_METRICS_ADDR", "--metrics-addr", "", "Prometheus endpoint host:port (off when empty)", KIND_OPT_ADDR, 0, 0, OFF(metrics_addr)},
    {"BUS_LOG_LEVEL", "--log-level", "info", "debug|info|warn|error|off", KIND_LEVEL, 0, 0, OFF(log_level)},
    {"BUS_PREFETCH", "--prefetch", "64", "unacked deliveries per process", KIND_INT, 1, 65535, OFF(prefetch)},
    {"BUS_QUEUE_TYPE", "--queue-type", "classic", "classic|quorum", KIND_QUEUE_TYPE, 0, 0, OFF(queue_type)},
    {"BUS_RPC_TIMEOUT_MS", "--rpc-timeout-ms", "5000", "RPC call timeout", KIND_INT, 1, 600000, OFF(rpc_timeout_ms)},
    {"BUS_DRAIN_MS", "--drain-ms", "10000", "grace period for in-flight work on SIGTERM", KIND_INT, 0, 600000, OFF(drain_ms)},
    {"BUS_RETRY_DELAY_MS", "--retry-delay-ms", "1000", "delay before a failed event is retried", KIND_INT, 10, 3600000, OFF(retry_delay_ms)},
    {"BUS_MAX_ATTEMPTS", "--max-attempts", "5", "deliveries of an event before it is dead-lettered", KIND_INT, 1, 100, OFF(max_attempts)},
    {"BUS_HEARTBEAT_S", "--heartbeat-s", "10", "AMQP heartbeat interval", KIND_INT, 1, 600, OFF(heartbeat_s)},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

/* Where `make install` put the schemas (the Makefile passes
 * -DBUS_DATADIR=$(PREFIX)/share/bus). */
#ifndef BUS_DATADIR
#define BUS_DATADIR "/usr/local/share/bus"
#endif

int bus_config_in_checkout(void) {
    struct stat st;
    return stat("schemas", &st) == 0 && S_ISDIR(st.st_mode);
}

const char *bus_config_default_schemas_dir(void) {
    if (bus_config_in_checkout()) return "schemas";
    /* an installed tree that was moved (or staged with DESTDIR): the schemas
     * next to the program, <bin>/../share/bus/schemas, before the compiled-in place */
    static char near[PATH_MAX + 32];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(near, sizeof near, "%s/../share/bus/schemas", exe);
            struct stat st;
            if (stat(near, &st) == 0 && S_ISDIR(st.st_mode)) return near;
        }
    }
    return BUS_DATADIR "/schemas";
}

const char *bus_config_state_dir(void) {
    static char dir[1024];
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg == '/') snprintf(dir, sizeof dir, "%s/bus", xdg);
    else if (home && *home == '/') snprintf(dir, sizeof dir, "%s/.local/state/bus", home);
    else snprintf(dir, sizeof dir, "/var/lib/bus");
    return dir;
}

const char *bus_config_default_store(void) {
    static char store[1100];
    if (bus_config_in_checkout()) return "sqlite:var/bus.db";
    const char *dir = bus_config_state_dir();
    /* the state directory and its parents (~/.local/state may not exist
     * yet); the store itself creates only the file's own folder */
    char path[1024];
    snprintf(path, sizeof path, "%s", dir);
    for (char *slash = strchr(path + 1, '/');; slash = strchr(slash + 1, '/')) {
        if (slash) *slash = '\0';
        mkdir(path, 0755); /* an error shows when the store is opened */
        if (!slash) break;
        *slash = '/';
    }
    snprintf(store, sizeof store, "sqlite:%s/bus.db", dir);
    return store;
}

/* The default of setting i: the data places depend on where the program runs. */
static const char *default_of(size_t i) {
    if (settings[i].offset == OFF(schemas_dir)) return bus_config_default_schemas_dir();
    if (settings[i].offset == OFF(store)) return bus_config_default_store();
    return settings[i].def;
}

int bus_parse_host_port(const char *addr, char *host, size_t hostlen, int *port) {
    if (!addr || !*addr) return -1;
    const char *colon;
    const char *h = addr;
    size_t hl;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':') return -1;
        h = addr + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon) return -1;
        hl = (size_t)(colon - addr);
    }
    if (hl == 0 || hl >= hostlen) return -1;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p < 0 || p > 65535) return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

static int apply(bus_config_t *cfg, const setting_t *s, const char *value, const char *origin, char *err,
                 size_t errlen) {
    void *field = (char *)cfg + s->offset;
    switch (s->kind) {
    case KIND_STRING:
    case KIND_QUEUE_TYPE:
    case KIND_ADDR:
    case KIND_OPT_ADDR: {
        if (s->kind == KIND_STRING && !*value) {
            snprintf(err, errlen, "%s: must not be empty", origin);
            return BUS_EBAD_REQUEST;
        }
        if (s->kind == KIND_QUEUE_TYPE && strcmp(value, "classic") != 0 && strcmp(value, "quorum") != 0) {
            snprintf(err, errlen, "%s: \"%s\" is not classic or quorum", origin, value);
            return BUS_EBAD_REQUEST;
        }
        if ((s->kind == KIND_ADDR || (s->kind == KIND_OPT_ADDR && *value))) {
            char host[256];
            int port;
            if (bus_parse_host_port(value, host, sizeof host, &port) != 0) {
                snprintf(err, errlen, "%s: \"%s\" is not host:port", origin, value);
                return BUS_EBAD_REQUEST;
            }
        }
        char **dst = field;
        free(*dst);
        *dst = (s->kind == KIND_OPT_ADDR && !*value) ? NULL : strdup(value);
        return 0;
    }
    case KIND_INT: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || *end || end == value || v < s->min || v > s->max) {
            snprintf(err, errlen, "%s: \"%s\" is not a whole number from %ld to %ld", origin, value, s->min, s->max);
            return BUS_EBAD_REQUEST;
        }
        *(int *)field = (int)v;
        return 0;
    }
    case KIND_LEVEL: {
        int lvl = bus_log_level_parse(value);
        if (lvl < 0) {
            snprintf(err, errlen, "%s: \"%s\" is not debug, info, warn, error or off", origin, value);
            return BUS_EBAD_REQUEST;
        }
        *(int *)field = lvl;
        return 0;
    }
    }
    return 0;
}

static void usage(const char *program, const char *summary, bus_config_extra_t *extras, size_t nextras) {
    printf("%s - %s\n\nUsage: %s [options]\n\nOptions (each also an environment variable):\n", program, summary,
           program);
    for (size_t i = 0; i < NSETTINGS; i++)
        printf("  %-18s %-20s %s (default: %s)\n", settings[i].flag, settings[i].env, settings[i].help,
               *default_of(i) ? default_of(i) : "unset");
    for (size_t i = 0; i < nextras; i++)
        printf("  %-18s %-20s %s (default: %s)\n", extras[i].flag, extras[i].env, extras[i].help,
               extras[i].default_value && *extras[i].default_value ? extras[i].default_value : "unset");
    printf("  %-18s %-20s %s\n  %-18s %-20s %s\n", "--help", "", "print this help", "--version", "",
           "print the version");
}

int bus_config_load(bus_config_t *cfg, int argc, char **argv, const char *program, const char *summary,
                    bus_config_extra_t *extras, size_t nextras, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *env = getenv(settings[i].env);
        int rc = apply(cfg, &settings[i], default_of(i), settings[i].env, err, errlen);
        if (rc == 0 && env) rc = apply(cfg, &settings[i], env, settings[i].env, err, errlen);
        if (rc != 0) return rc;
    }
    for (size_t i = 0; i < nextras; i++) {
        const char *env = getenv(extras[i].env);
        free(extras[i].value);
        extras[i].value = strdup(env ? env : extras[i].default_value ? extras[i].default_value : "");
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(program, summary, extras, nextras);
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("%s %s\n", program, BUS_VERSION);
            return 1;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const char *value = eq ? eq + 1 : (a + 1 < argc ? argv[a + 1] : NULL);
        int matched = 0;
        for (size_t i = 0; i < NSETTINGS && !matched; i++) {
            if (strlen(settings[i].flag) != name_len || strncmp(settings[i].flag, arg, name_len) != 0) continue;
            matched = 1;
            if (!value) {
                snprintf(err, errlen, "%s needs a value", settings[i].flag);
                return BUS_EBAD_REQUEST;
            }
            int rc = apply(cfg, &settings[i], value, settings[i].flag, err, errlen);
            if (rc != 0) return rc;
        }
        for (size_t i = 0; i < nextras && !matched; i++) {
            if (strlen(extras[i].flag) != name_len || strncmp(extras[i].flag, arg, name_len) != 0) continue;
            matched = 1;
            if (!value) {
                snprintf(err, errlen, "%s needs a value", extras[i].flag);
                return BUS_EBAD_REQUEST;
            }
            free(extras[i].value);
            extras[i].value = strdup(value);
        }
        if (!matched) {
            snprintf(err, errlen, "unknown option %s (see --help)", arg);
            return BUS_EBAD_REQUEST;
        }
        if (!eq) a++;
    }
    return 0;
}

void bus_config_free(bus_config_t *cfg) {
    for (size_t i = 0; i < NSETTINGS; i++) {
        kind_t k = settings[i].kind;
        if (k == KIND_INT || k == KIND_LEVEL) continue;
        char **p = (char **)((char *)cfg + settings[i].offset);
        free(*p);
        *p = NULL;
    }
}

void bus_config_free_extras(bus_config_extra_t *extras, size_t nextras) {
    for (size_t i = 0; i < nextras; i++) {
        free(extras[i].value);
        extras[i].value = NULL;
    }
}
