/* busctl: the platform from the command line.
 *
 *   busctl call SERVICE METHOD [JSON|-] [--timeout MS]
 *   busctl publish TYPE [JSON|-] [--source S] [--subject S] [--correlation-id ID]
 *   busctl status [--json]
 *   busctl schema check SCHEMA.json [INSTANCE.json|-]
 *   busctl schema list [--dir DIR]
 *   busctl apikey new --id NAME --scopes SCOPE[,SCOPE...]
 *   busctl tail [--since 10m | --from first | --offset N] [--type GLOB] [--actor USER] [--follow] [--json]
 *   busctl rbac bootstrap-owner USER [--store URL]
 *   busctl giftcodes redeem CODE | busctl players refresh ...  (cli_giftcodes.c)
 *   busctl dead list|show|replay|purge SERVICE ...   (cli_dead.c)
 *   busctl events [PATTERN] [--json] | --bindings    (cli_events.c)
 *
 * JSON output is indented on a terminal and one compact line on a pipe.
 * Exit codes: 0 success; 1 an error reply / invalid instance; 2 usage or
 * connection errors. The broker is BUS_AMQP_URL (or --amqp-url URL).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "bus/config.h"
#include "bus/conn.h"
#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/log.h"
#include "bus/publish.h"
#include "bus/rpc.h"
#include "bus/topology.h"

static const char *amqp_url = NULL;

static void print_usage(FILE *to) {
    fprintf(to,
            "usage: busctl [--amqp-url URL] COMMAND ...\n"
            "  busctl call SERVICE METHOD [JSON|-] [--timeout MS]   call an RPC method, print the reply\n"
            "  busctl publish TYPE [JSON|-] [--source S] [--subject S] [--correlation-id ID]\n"
            "                                                      publish an event, print its id once confirmed\n"
            "  busctl status [--json]                              each domain: live instances, backlog, dead letters\n"
            "  busctl dead list SERVICE [--json]                   dead letters: type, id, reason, attempts, age, body\n"
            "  busctl dead show SERVICE ID                         one dead letter, whole\n"
            "  busctl dead replay SERVICE (ID | --all)             send back to its queue (audited)\n"
            "  busctl dead purge SERVICE (ID | --all) [--yes]      delete (asks first; --yes for scripts)\n"
            "  busctl events [PATTERN] [--json]                    watch events live (PATTERN: topic, default #)\n"
            "  busctl events --bindings [--json]                   which event types some service consumes\n"
            "  busctl schema check SCHEMA.json [INSTANCE.json|-]   validate an instance (0 valid, 1 invalid, 2 error)\n"
            "  busctl schema list [--dir DIR]                      event types and methods with their schema files\n"
            "  busctl apikey new --id NAME --scopes S1,S2          make an API key for the HTTP edge\n"
            "  busctl tail [--since 10m | --from first | --offset N] [--type GLOB] [--actor USER] [--follow] [--json]\n"
            "                                                      read the audit trail (the audit.log stream)\n"
            "  busctl rbac bootstrap-owner USER [--store URL]      make USER the first owner (writes the store)\n"
            "  busctl giftcodes redeem CODE [--note TEXT]          add a gift code, show its redemption live\n"
            "  busctl players refresh (--state N | ID...)          refresh verified players, with a progress bar\n"
            "options: --amqp-url URL   the broker (default $BUS_AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/)\n"
            "         --help, -h       this text, on standard output\n"
            "         --version        the version\n"
            "environment: BUS_AMQP_URL, BUS_SCHEMAS_DIR (schemas; default ./schemas, else the installed ones),\n"
            "             BUS_LOG_LEVEL\n"
            "JSON output is indented on a terminal, one compact line on a pipe.\n"
            "exit codes: 0 success; 1 an error reply, an invalid instance, nothing matched; 2 usage or broker errors\n");
}

static int usage(void) {
    print_usage(stderr);
    return 2;
}

const char *bus_cli_amqp_url(void) {
    const char *url = amqp_url ? amqp_url : getenv("BUS_AMQP_URL");
    return url && *url ? url : "amqp://guest:guest@127.0.0.1:5672/";
}

const char *bus_cli_schemas_dir(void) {
    const char *dir = getenv("BUS_SCHEMAS_DIR");
    return dir && *dir ? dir : bus_config_default_schemas_dir();
}

void bus_cli_print_json(const cJSON *doc) {
    char *s = isatty(STDOUT_FILENO) ? cJSON_Print(doc) : cJSON_PrintUnformatted(doc);
    printf("%s\n", s ? s : "");
    free(s);
}

/* Reads a JSON argument: literal text, or "-" for standard input. Caller frees. */
static char *read_json_arg(const char *arg, size_t *len) {
    if (strcmp(arg, "-") != 0) {
        *len = strlen(arg);
        return strdup(arg);
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) break;
        if (n == cap) {
            if (cap > 16 * 1024 * 1024) break;
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) {
                free(buf);
                return NULL;
            }
            buf = bigger;
        }
    }
    if (buf) buf[n < cap ? n : cap - 1] = '\0';
    *len = n;
    return buf;
}

typedef struct {
    uv_loop_t loop;
    bus_conn_t *conn;
    bus_rpc_client_t *rpc;
    int exit_code;
    int done;
} cli_t;

static int cli_connect(cli_t *cli, int with_rpc) {
    const char *url = bus_cli_amqp_url();
    uv_loop_init(&cli->loop);
    char err[512];
    bus_conn_options_t o = {.url = url, .name = "busctl"};
    if (bus_conn_new(&cli->loop, &o, &cli->conn, err, sizeof err) != 0) {
        fprintf(stderr, "busctl: %s\n", err);
        return 2;
    }
    if (with_rpc) bus_rpc_client_new(cli->conn, 5000, &cli->rpc);
    if (bus_conn_connect_now(cli->conn, err, sizeof err) != 0) {
        fprintf(stderr, "busctl: cannot reach the broker: %s\n", err);
        return 2;
    }
    return 0;
}

static void cli_close(cli_t *cli) {
    if (cli->rpc) bus_rpc_client_free(cli->rpc);
    if (cli->conn) bus_conn_close(cli->conn, NULL, NULL);
    uv_run(&cli->loop, UV_RUN_DEFAULT);
    uv_loop_close(&cli->loop);
}

static void run_until_done(cli_t *cli) {
    while (!cli->done && uv_run(&cli->loop, UV_RUN_ONCE)) {
    }
}

/* ---- call --------------------------------------------------------------- */

static void on_call_reply(int status, const char *reply, size_t len, void *data) {
    cli_t *cli = data;
    cli->done = 1;
    if (status != 0) {
        const char *msg = status == BUS_ETIMEOUT       ? "no reply within the timeout (is a worker running?)"
                          : status == BUS_ENOT_FOUND   ? "no such service: nothing is bound to its queue"
                                                       : "the broker connection was lost";
        char *body = bus_rpc_reply_error_json(status, msg, NULL);
        printf("%s\n", body ? body : "");
        free(body);
        cli->exit_code = 1;
        return;
    }
    cJSON *doc = NULL;
    int ok = 0;
    if (bus_rpc_reply_parse(reply, len, &doc, &ok, NULL, NULL, NULL) != 0) {
        printf("%.*s\n", (int)len, reply);
        cli->exit_code = 1;
        return;
    }
    bus_cli_print_json(doc);
    cJSON_Delete(doc);
    cli->exit_code = ok ? 0 : 1;
}

static int cmd_call(int argc, char **argv) {
    const char *service = NULL, *method = NULL, *json = NULL;
    int timeout = 5000;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            timeout = atoi(argv[++i]);
            if (timeout <= 0) return usage();
        } else if (!service) service = argv[i];
        else if (!method) method = argv[i];
        else if (!json) json = argv[i];
        else return usage();
    }
    if (!service || !method) return usage();
    if (!bus_valid_name(service) || !bus_valid_name(method)) {
        fprintf(stderr, "busctl: service and method are lower-case names ([a-z][a-z0-9_]*)\n");
        return 2;
    }
    size_t len = 2;
    char *params = json ? read_json_arg(json, &len) : strdup("{}");
    if (!params) return 2;
    char err[128];
    cJSON *check = bus_json_parse(params, len, BUS_JSON_MAX_DEPTH, err, sizeof err);
    if (!check) {
        fprintf(stderr, "busctl: params: %s\n", err);
        free(params);
        return 2;
    }
    cJSON_Delete(check);
    cli_t cli = {0};
    int rc = cli_connect(&cli, 1);
    if (rc == 0) {
        bus_rpc_call_opts_t opts = {.timeout_ms = timeout, .caller = "busctl"};
        rc = bus_rpc_call(cli.rpc, service, method, params, len, &opts, on_call_reply, &cli);
        if (rc != 0) {
            fprintf(stderr, "busctl: call failed: %s\n", bus_strerror(rc));
            rc = 2;
        } else {
            run_until_done(&cli);
            rc = cli.exit_code;
        }
    }
    free(params);
    cli_close(&cli);
    return rc;
}

/* ---- publish ------------------------------------------------------------ */

static void on_confirm(int status, void *data) {
    cli_t *cli = data;
    cli->done = 1;
    cli->exit_code = status == 0 ? 0 : 2;
    if (status != 0) fprintf(stderr, "busctl: the broker did not confirm the event: %s\n", bus_strerror(status));
}

static int cmd_publish(int argc, char **argv) {
    const char *type = NULL, *json = NULL, *source = "busctl", *subject = NULL, *corr = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--source") == 0 && i + 1 < argc) source = argv[++i];
        else if (strcmp(argv[i], "--subject") == 0 && i + 1 < argc) subject = argv[++i];
        else if (strcmp(argv[i], "--correlation-id") == 0 && i + 1 < argc) corr = argv[++i];
        else if (!type) type = argv[i];
        else if (!json) json = argv[i];
        else return usage();
    }
    if (!type) return usage();
    if (!bus_valid_event_type(type)) {
        fprintf(stderr, "busctl: \"%s\" is not an event type (dot-separated lower-case words)\n", type);
        return 2;
    }
    size_t len = 2;
    char *text = json ? read_json_arg(json, &len) : strdup("{}");
    if (!text) return 2;
    char err[1024];
    cJSON *data = bus_json_parse(text, len, BUS_JSON_MAX_DEPTH, err, sizeof err);
    free(text);
    if (!data) {
        fprintf(stderr, "busctl: data: %s\n", err);
        return 2;
    }
    int checked = bus_cli_check_event(type, data, err, sizeof err);
    if (checked != 0) {
        if (checked == BUS_EINVALID) fprintf(stderr, "busctl: invalid %s event: %s\n", type, err);
        else fprintf(stderr, "busctl: refusing to publish: %s\n", err);
        cJSON_Delete(data);
        return 1;
    }
    bus_envelope_t env = {0};
    if (bus_envelope_init(&env, type, source, subject, corr, data) != 0) return 2;
    cli_t cli = {0};
    int rc = cli_connect(&cli, 0);
    if (rc == 0) {
        bus_conn_declare_exchange(cli.conn, BUS_EXCHANGE_EVENTS, "topic");
        rc = bus_event_publish(cli.conn, &env, on_confirm, &cli);
        if (rc != 0) {
            fprintf(stderr, "busctl: publish failed: %s\n", bus_strerror(rc));
            rc = 2;
        } else {
            run_until_done(&cli);
            rc = cli.exit_code;
            if (rc == 0) printf("%s\n", env.id);
        }
    }
    bus_envelope_clear(&env);
    cli_close(&cli);
    return rc;
}

/* ---- status ------------------------------------------------------------- */

static int cmd_status(int argc, char **argv) {
    int json = argc > 0 && strcmp(argv[0], "--json") == 0;
    cli_t cli = {0};
    int rc = cli_connect(&cli, 0);
    if (rc != 0) {
        cli_close(&cli);
        return rc;
    }
    cJSON *out = cJSON_CreateArray();
    if (!json) printf("%-14s %9s %9s %9s %9s\n", "SERVICE", "INSTANCES", "RPC", "EVENTS", "DEAD");
    for (int i = 0; bus_domains[i]; i++) {
        const char *d = bus_domains[i];
        char q[96];
        uint32_t rpc_msgs = 0, rpc_consumers = 0, ev_msgs = 0, ev_consumers = 0, dead = 0;
        bus_queue_name(q, sizeof q, "rpc", d);
        int found = bus_conn_queue_info(cli.conn, q, &rpc_msgs, &rpc_consumers) == 0;
        bus_queue_name(q, sizeof q, "events", d);
        bus_conn_queue_info(cli.conn, q, &ev_msgs, &ev_consumers);
        bus_queue_name(q, sizeof q, "dead", d);
        bus_conn_queue_info(cli.conn, q, &dead, NULL);
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "service", d);
            cJSON_AddBoolToObject(o, "declared", found);
            cJSON_AddNumberToObject(o, "instances", rpc_consumers);
            cJSON_AddNumberToObject(o, "rpc_backlog", rpc_msgs);
            cJSON_AddNumberToObject(o, "event_backlog", ev_msgs);
            cJSON_AddNumberToObject(o, "dead_letters", dead);
            cJSON_AddItemToArray(out, o);
        } else if (found) {
            printf("%-14s %9u %9u %9u %9u\n", d, rpc_consumers, rpc_msgs, ev_msgs, dead);
        } else {
            printf("%-14s %9s %9s %9s %9s\n", d, "-", "-", "-", "-");
        }
    }
    if (json) {
        bus_cli_print_json(out);
    }
    cJSON_Delete(out);
    cli_close(&cli);
    return 0;
}

int main(int argc, char **argv) {
    bus_log_init("busctl", NULL, BUS_LOG_ERROR);
    const char *lvl = getenv("BUS_LOG_LEVEL");
    if (lvl && bus_log_level_parse(lvl) >= 0) bus_log_set_level((bus_log_level_t)bus_log_level_parse(lvl));
    /* global options before the command */
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--amqp-url") == 0 && i + 1 < argc) amqp_url = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("busctl %s\n", BUS_VERSION);
            return 0;
        } else break;
    }
    if (i >= argc) return usage();
    const char *cmd = argv[i];
    int rest = argc - i - 1;
    char **args = argv + i + 1;
    if (strcmp(cmd, "call") == 0) return cmd_call(rest, args);
    if (strcmp(cmd, "publish") == 0) return cmd_publish(rest, args);
    if (strcmp(cmd, "status") == 0) return cmd_status(rest, args);
    if (strcmp(cmd, "schema") == 0) return bus_cli_schema(rest, args);
    if (strcmp(cmd, "apikey") == 0) return bus_cli_apikey(rest, args);
    if (strcmp(cmd, "tail") == 0) return bus_cli_tail(amqp_url, rest, args);
    if (strcmp(cmd, "rbac") == 0) return bus_cli_rbac(amqp_url, rest, args);
    if (strcmp(cmd, "giftcodes") == 0) return bus_cli_giftcodes(rest, args, amqp_url);
    if (strcmp(cmd, "players") == 0) return bus_cli_players(rest, args, amqp_url);
    if (strcmp(cmd, "dead") == 0) return bus_cli_dead(rest, args);
    if (strcmp(cmd, "events") == 0) return bus_cli_events(rest, args);
    return usage();
}
