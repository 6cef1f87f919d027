/* Configuration shared by every program: environment variables, each with a
 * flag of the same meaning (the flag wins). A bad value is reported at start
 * naming the variable, never a crash later.
 *
 *   BUS_AMQP_URL        --amqp-url      amqp://guest:guest@127.0.0.1:5672/  (a comma-separated list of
 *                                       a cluster's nodes fails over: see bus/conn.h)
 *   BUS_REDIS_URL       --redis-url     redis://127.0.0.1:6379/0
 *   BUS_STORE           --store         sqlite:var/bus.db in a checkout, else sqlite:<state dir>/bus.db
 *                                       (or mongodb://...)
 *   BUS_HTTP_ADDR       --http-addr     127.0.0.1:8080
 *   BUS_SCHEMAS_DIR     --schemas-dir   schemas in a checkout, else $(PREFIX)/share/bus/schemas
 *   BUS_LOG_LEVEL       --log-level     info (debug|info|warn|error|off)
 *   BUS_PREFETCH        --prefetch      64 (1..65535): unacked RPC requests, and as many events, per process
 *   BUS_QUEUE_TYPE      --queue-type    classic (classic|quorum)
 *   BUS_RPC_TIMEOUT_MS  --rpc-timeout-ms 5000 (1..600000)
 *   BUS_DRAIN_MS        --drain-ms      10000 (0..600000): SIGTERM grace period
 *   BUS_METRICS_ADDR    --metrics-addr  unset: no metrics endpoint (host:port)
 *   BUS_RETRY_DELAY_MS  --retry-delay-ms 1000 (10..3600000): delay before a failed event is retried
 *   BUS_MAX_ATTEMPTS    --max-attempts  5 (1..100): deliveries before dead-lettering
 *   BUS_HEARTBEAT_S     --heartbeat-s   10 (1..600)
 *
 * "In a checkout" means the working directory has a schemas/ folder (make
 * run, the tests); an installed program run anywhere else uses the
 * installed schemas and a store under the state directory
 * ($XDG_STATE_HOME/bus, else $HOME/.local/state/bus, else /var/lib/bus).
 * Programs log to standard error (make run writes var/log/<program>.log).
 *
 * Ownership: a bus_config_t owns its strings; bus_config_free releases them.
 */
#ifndef BUS_CONFIG_H
#define BUS_CONFIG_H

#include <stddef.h>

typedef struct bus_config {
    char *amqp_url;
    char *redis_url;
    char *store;
    char *http_addr;
    char *schemas_dir;
    char *metrics_addr; /* NULL = none */
    int log_level;
    int prefetch;
    char *queue_type;
    int rpc_timeout_ms;
    int drain_ms;
    int retry_delay_ms;
    int max_attempts;
    int heartbeat_s;
} bus_config_t;

/* One program-specific setting (a domain's own variables). */
typedef struct bus_config_extra {
    const char *env;     /* "BUS_PLAYER_API_URL" */
    const char *flag;    /* "--player-api-url" */
    const char *help;
    const char *default_value;
    char *value;         /* filled by bus_config_load; owned by the caller's array, freed by bus_config_free_extras */
} bus_config_extra_t;

/* Fills cfg from the defaults, the environment, then argv (flags --name VALUE
 * or --name=VALUE). Returns 0; 1 after printing --help / --version output
 * (the caller exits 0); BUS_EBAD_REQUEST with a message naming the variable
 * in err (the caller prints it and exits 2). Unknown flags are errors.
 * extras (may be NULL, nextras 0) are parsed the same way. */
int bus_config_load(bus_config_t *cfg, int argc, char **argv, const char *program, const char *summary,
                    bus_config_extra_t *extras, size_t nextras, char *err, size_t errlen);
void bus_config_free(bus_config_t *cfg);
/* 1 when the working directory has a schemas/ folder (a checkout). */
int bus_config_in_checkout(void);
/* "schemas" in a checkout, else <the program's folder>/../share/bus/schemas
 * when it exists (an installed tree, even moved or staged with DESTDIR), else
 * BUS_DATADIR "/schemas" (compiled in: $(PREFIX)/share/bus). Static. */
const char *bus_config_default_schemas_dir(void);
/* "sqlite:var/bus.db" in a checkout, else "sqlite:<state dir>/bus.db". Static buffer. */
const char *bus_config_default_store(void);
/* $XDG_STATE_HOME/bus, else $HOME/.local/state/bus, else /var/lib/bus. Static buffer. */
const char *bus_config_state_dir(void);
void bus_config_free_extras(bus_config_extra_t *extras, size_t nextras);

/* Parses "host:port" or "[v6]:port". Returns 0 or -1. host gets at most hostlen-1 chars. */
int bus_parse_host_port(const char *addr, char *host, size_t hostlen, int *port);

#endif
