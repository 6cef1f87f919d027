/* busctl events: what flows on bus.events, and where it goes.
 *
 *   busctl events [PATTERN] [--json] [--count N]
 *       Watches events live. PATTERN is a topic pattern over event types
 *       ("alliance.*", "alliance.#", default "#"). It takes nothing from
 *       anyone: busctl declares its own server-named, exclusive, auto-delete
 *       queue, binds it to bus.events with PATTERN and consumes it without
 *       acks; the broker copies each matching event to it as to every other
 *       bound queue, and deletes the queue when busctl goes. Pretty lines on
 *       a terminal, or one CloudEvent per line with --json (for jq). A line
 *       "watching ..." goes to stderr once the queue is bound. --count N
 *       stops after N events; Ctrl-C stops.
 *
 *   busctl events --bindings [--json]
 *       For every event type with a schema (schemas/events, BUS_SCHEMAS_DIR),
 *       the services (the five domains and every service with a file in
 *       schemas/rpc) whose events.<service> queue receives it, so that a bot
 *       author sees when a type goes nowhere. Plain AMQP cannot list the
 *       bindings of an exchange (that needs the management plugin, which the
 *       platform does not require), so busctl asks each service: a worker's
 *       ping reports the patterns its events.<s> queue is bound to
 *       ("subscriptions", bus/src/worker_rpc.c), and a passive declare of
 *       events.<s> says how many consumers the broker has on it. A type that
 *       matches no live service's pattern is shown as "(nobody)". Types that
 *       other programs bind with their own queues (a bot's) are not seen.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/conn.h"
#include "bus/error.h"
#include "bus/rpc.h"
#include "bus/schema.h"
#include "bus/topology.h"
#include "bus/worker.h"
#include "cli.h"

typedef struct {
    uv_loop_t loop;
    bus_conn_t *conn;
    bus_rpc_client_t *rpc;
    uv_signal_t sigint, sigterm;
    int json, tty;
    long count, seen;
    int done;
    int pending;
    const char *services[64]; /* the domains, then the services of schemas/rpc (names owned by the registry) */
    int nservices;
    cJSON *subs[64]; /* per services[i]: its ping's subscriptions (owned), NULL when it did not answer */
} ev_t;

static int events_usage(void) {
    fprintf(stderr, "usage: busctl events [PATTERN] [--json] [--count N]\n"
                    "       busctl events --bindings [--json]\n");
    return 2;
}

static int connect_to(ev_t *e, int with_rpc) {
    char err[512];
    uv_loop_init(&e->loop);
    bus_conn_options_t o = {.url = bus_cli_amqp_url(), .name = "busctl events"};
    if (bus_conn_new(&e->loop, &o, &e->conn, err, sizeof err) != 0) {
        fprintf(stderr, "busctl: %s\n", err);
        return 2;
    }
    if (with_rpc) bus_rpc_client_new(e->conn, 2000, &e->rpc);
    if (bus_conn_connect_now(e->conn, err, sizeof err) != 0) {
        fprintf(stderr, "busctl: cannot reach the broker: %s\n", err);
        return 2;
    }
    return 0;
}

static void finish(ev_t *e) {
    if (e->rpc) bus_rpc_client_free(e->rpc);
    if (e->conn) bus_conn_close(e->conn, NULL, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
}

/* ---- watch -------------------------------------------------------------- */

static void print_pretty(const bus_msg_t *m) {
    cJSON *doc = cJSON_ParseWithLength(m->body, m->len);
    const char *time = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "time"));
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "id"));
    const char *source = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "source"));
    const char *subject = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "subject"));
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    char *d = data ? cJSON_PrintUnformatted(data) : NULL;
    printf("%s  %-28s %s  from %s%s%s\n    %s\n", time ? time : "-", m->routing_key,
           id ? id : (*m->message_id ? m->message_id : "-"), source ? source : "?", subject ? "  subject " : "",
           subject ? subject : "", d ? d : (doc ? "" : m->body));
    free(d);
    cJSON_Delete(doc);
}

static void on_event(bus_msg_t *m, void *data) {
    ev_t *e = data;
    if (e->json) {
        cJSON *doc = cJSON_ParseWithLength(m->body, m->len);
        if (doc) {
            char *s = cJSON_PrintUnformatted(doc); /* one event per line, whatever the terminal */
            printf("%s\n", s ? s : "");
            free(s);
            cJSON_Delete(doc);
        } else { /* not JSON: say what it is rather than drop it */
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", m->routing_key);
            cJSON_AddStringToObject(o, "body_text", m->body);
            char *s = cJSON_PrintUnformatted(o);
            printf("%s\n", s ? s : "");
            free(s);
            cJSON_Delete(o);
        }
    } else {
        print_pretty(m);
    }
    fflush(stdout);
    bus_msg_free(m);
    if (e->count > 0 && ++e->seen >= e->count) {
        e->done = 1;
        uv_stop(&e->loop); /* this may run in the prepare phase: do not sleep after it */
    }
}

static void on_stop_signal(uv_signal_t *s, int signum) {
    (void)signum;
    ((ev_t *)s->data)->done = 1;
    uv_stop(s->loop);
}

static int watch(ev_t *e, const char *pattern) {
    int rc = connect_to(e, 0);
    if (rc != 0) return rc;
    char queue[256];
    bus_queue_options_t o = {.exclusive = 1, .auto_delete = 1};
    rc = bus_conn_declare_exchange(e->conn, BUS_EXCHANGE_EVENTS, "topic");
    if (rc == 0) rc = bus_conn_declare_queue_named(e->conn, "", &o, queue, sizeof queue);
    if (rc == 0) rc = bus_conn_bind(e->conn, queue, BUS_EXCHANGE_EVENTS, pattern);
    if (rc == 0) rc = bus_conn_consume(e->conn, queue, 1, 1, amqp_empty_table, on_event, e, NULL, 0);
    if (rc != 0) {
        fprintf(stderr, "busctl: cannot watch %s: %s\n", BUS_EXCHANGE_EVENTS, bus_strerror(rc));
        return 2;
    }
    fprintf(stderr, "watching %s for \"%s\" (Ctrl-C to stop)\n", BUS_EXCHANGE_EVENTS, pattern);
    uv_signal_init(&e->loop, &e->sigint);
    uv_signal_init(&e->loop, &e->sigterm);
    e->sigint.data = e->sigterm.data = e;
    uv_signal_start(&e->sigint, on_stop_signal, SIGINT);
    uv_signal_start(&e->sigterm, on_stop_signal, SIGTERM);
    while (!e->done && bus_conn_is_up(e->conn) && uv_run(&e->loop, UV_RUN_ONCE)) {
    }
    uv_close((uv_handle_t *)&e->sigint, NULL);
    uv_close((uv_handle_t *)&e->sigterm, NULL);
    if (!e->done) {
        fprintf(stderr, "busctl: the broker connection was lost\n");
        return 2;
    }
    return 0;
}

/* ---- bindings ----------------------------------------------------------- */

typedef struct {
    ev_t *e;
    int i;
} ping_t;

static void on_ping(int status, const char *reply, size_t len, void *data) {
    ping_t *p = data;
    ev_t *e = p->e;
    if (--e->pending == 0) uv_stop(&e->loop);
    cJSON *doc = NULL;
    int ok = 0;
    if (status == 0 && bus_rpc_reply_parse(reply, len, &doc, &ok, NULL, NULL, NULL) == 0 && ok) {
        cJSON *subs = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "data"), "subscriptions");
        if (cJSON_IsArray(subs)) e->subs[p->i] = cJSON_Duplicate(subs, 1);
    }
    cJSON_Delete(doc);
    free(p);
}

static void add_service(ev_t *e, const char *s) {
    for (int i = 0; i < e->nservices; i++)
        if (strcmp(e->services[i], s) == 0) return;
    if (e->nservices < 64) e->services[e->nservices++] = s;
}

static int bindings(ev_t *e) {
    const char *dir = bus_cli_schemas_dir();
    char err[512];
    bus_schema_registry_t *reg = NULL;
    if (bus_schema_registry_load(dir, &reg, err, sizeof err) != 0) {
        fprintf(stderr, "busctl: schemas (%s): %s\n", dir, err);
        return 2;
    }
    for (int i = 0; bus_domains[i]; i++) add_service(e, bus_domains[i]);
    for (size_t i = 0; i < bus_schema_registry_method_count(reg); i++) {
        const char *s = NULL;
        if (bus_schema_registry_method_at(reg, i, &s, NULL, NULL, NULL, NULL) == 0 && s) add_service(e, s);
    }
    int rc = connect_to(e, 1);
    for (int i = 0; rc == 0 && i < e->nservices; i++) {
        char q[96];
        uint32_t consumers = 0;
        bus_queue_name(q, sizeof q, "events", e->services[i]);
        if (bus_conn_queue_info(e->conn, q, NULL, &consumers) != 0 || consumers == 0) continue;
        ping_t *p = malloc(sizeof *p);
        if (!p) continue;
        *p = (ping_t){e, i};
        bus_rpc_call_opts_t opts = {.timeout_ms = 2000, .caller = "busctl"};
        if (bus_rpc_call(e->rpc, e->services[i], "ping", "{}", 2, &opts, on_ping, p) == 0) e->pending++;
        else free(p);
    }
    while (rc == 0 && e->pending > 0 && uv_run(&e->loop, UV_RUN_ONCE)) {
    }
    cJSON *out = cJSON_CreateArray();
    size_t n = bus_schema_registry_event_count(reg);
    if (rc == 0 && !e->json) printf("%-32s %s\n", "EVENT TYPE", "CONSUMED BY");
    for (size_t k = 0; rc == 0 && k < n; k++) {
        const char *type = bus_schema_registry_event_at(reg, k, NULL);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", type);
        cJSON *by = cJSON_AddArrayToObject(o, "consumed_by");
        char line[512] = "";
        for (int i = 0; i < e->nservices; i++) {
            const cJSON *s;
            cJSON_ArrayForEach(s, e->subs[i]) {
                if (cJSON_IsString(s) && bus_topic_matches(s->valuestring, type)) {
                    cJSON_AddItemToArray(by, cJSON_CreateString(e->services[i]));
                    size_t l = strlen(line);
                    snprintf(line + l, sizeof line - l, "%s%s", l ? ", " : "", e->services[i]);
                    break;
                }
            }
        }
        if (!e->json) printf("%-32s %s\n", type, *line ? line : "(nobody)");
        cJSON_AddItemToArray(out, o);
    }
    if (rc == 0 && e->json) bus_cli_print_json(out);
    cJSON_Delete(out);
    for (int i = 0; i < e->nservices; i++) cJSON_Delete(e->subs[i]);
    bus_schema_registry_free(reg);
    return rc;
}

int bus_cli_events(int argc, char **argv) {
    ev_t e = {0};
    const char *pattern = NULL;
    int want_bindings = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) e.json = 1;
        else if (strcmp(argv[i], "--bindings") == 0) want_bindings = 1;
        else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            e.count = atol(argv[++i]);
            if (e.count <= 0) return events_usage();
        } else if (!pattern && argv[i][0] != '-') pattern = argv[i];
        else return events_usage();
    }
    if (want_bindings && pattern) return events_usage();
    int rc = want_bindings ? bindings(&e) : watch(&e, pattern ? pattern : "#");
    finish(&e);
    return rc;
}
