/* Internal to busctl: the commands that live in their own files. Each takes
 * the arguments after its name and returns the process exit code. */
#ifndef BUSCTL_CLI_H
#define BUSCTL_CLI_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* busctl schema check|list ... */
int bus_cli_schema(int argc, char **argv);
/* Validates event data against schemas/events/<type>.json (BUS_SCHEMAS_DIR,
 * default schemas/): 0 when valid; BUS_EINVALID with the failures in err;
 * BUS_ENOT_FOUND when the type has no schema (or no schemas directory is
 * found): an event type without a schema is never published. */
int bus_cli_check_event(const char *type, const cJSON *data, char *err, size_t errlen);
/* busctl tail ... and busctl rbac ... (cli_audit.c); amqp_url may be NULL. */
int bus_cli_tail(const char *amqp_url, int argc, char **argv);
int bus_cli_rbac(const char *amqp_url, int argc, char **argv);
/* busctl apikey new --id NAME --scopes S1,S2 */
int bus_cli_apikey(int argc, char **argv);
/* busctl giftcodes redeem CODE / busctl players refresh ... with a progress bar (cli_giftcodes.c) */
int bus_cli_giftcodes(int argc, char **argv, const char *amqp_url);
int bus_cli_players(int argc, char **argv, const char *amqp_url);

/* The broker URL: --amqp-url, else $BUS_AMQP_URL, else the local default. */
const char *bus_cli_amqp_url(void);
/* Prints a JSON document on stdout and a newline: indented when stdout is a
 * terminal, one compact line on a pipe (for jq, grep, scripts). */
void bus_cli_print_json(const cJSON *doc);
/* The schemas busctl reads: $BUS_SCHEMAS_DIR, else ./schemas in a checkout,
 * else the installed ones (bus_config_default_schemas_dir). */
const char *bus_cli_schemas_dir(void);
/* busctl dead list|show|replay|purge ... (cli_dead.c) */
int bus_cli_dead(int argc, char **argv);
/* busctl events [PATTERN] [--json] | --bindings (cli_events.c) */
int bus_cli_events(int argc, char **argv);

#endif
