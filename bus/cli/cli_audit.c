/* busctl tail and busctl rbac bootstrap-owner.
 *
 * busctl tail [--since 10m|RFC3339 | --from first|last|next | --offset N]
 *             [--type GLOB] [--actor USER] [--follow] [--json] [--limit N] [--idle-ms MS]
 *   Reads the audit.log stream with a consumer of its own (basic.qos, manual
 *   acks, x-stream-offset): a stream consumer takes nothing from anyone, so
 *   any number of tails run at once and none slows bus-audit. Default start:
 *   --since 10m. Records are shown in seq order, once each: the stream may
 *   hold a record twice after the streaming process crashed (workers/audit/
 *   streamer.c), so only the next seq is shown (bus/audit_stream.h).
 *   Without --follow it stops once nothing arrived for --idle-ms (default
 *   1000) or --limit records were shown. One line per record, coloured on a terminal; --json prints each
 *   record as one JSON object with its stream "offset" added (the offset of
 *   the pack of records that holds it: bus/audit_stream.h; --offset N
 *   starts with that whole pack).
 *   Exit 0; 2 on usage or connection errors.
 *
 * busctl rbac bootstrap-owner USER [--store URL]
 *   Makes USER the first owner, writing the grant into the store (BUS_STORE,
 *   the one bus-audit uses) directly: whoever can write the store can do
 *   it, nobody can over the bus. Refused (exit 1) once any owner exists;
 *   owners name further owners with audit.grant. Publishes role.granted
 *   (by "bootstrap") so the grant is in the audit trail and every bus-audit
 *   drops its cached view of USER.
 */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus/audit_stream.h"
#include "bus/conn.h"
#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/publish.h"
#include "bus/store.h"
#include "bus/topology.h"
#include "cli.h"

typedef struct {
    uv_loop_t loop;
    bus_conn_t *conn;
    uv_timer_t idle;
    uv_signal_t sigint;
    const char *type_glob, *actor;
    int json, follow, colour, idle_ms;
    long limit, shown;
    bus_audit_follow_t shown_seq; /* which records to show (each seq once) */
    int done;
} tail_t;

static const char *rstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static void tail_stop(tail_t *t) {
    if (t->done) return;
    t->done = 1;
    uv_timer_stop(&t->idle);
    uv_signal_stop(&t->sigint);
}

static void print_record(tail_t *t, const cJSON *r, const char *offset) {
    if (t->json) {
        cJSON *copy = cJSON_Duplicate(r, 1);
        cJSON_AddNumberToObject(copy, "offset", offset && *offset ? strtod(offset, NULL) : -1);
        char *s = cJSON_PrintUnformatted(copy);
        printf("%s\n", s ? s : "{}");
        free(s);
        cJSON_Delete(copy);
        return;
    }
    const char *outcome = rstr(r, "outcome");
    const char *dim = t->colour ? "\033[2m" : "", *bold = t->colour ? "\033[1m" : "", *reset = t->colour ? "\033[0m" : "";
    const char *oc = !t->colour ? ""
                     : strcmp(outcome, "denied") == 0  ? "\033[31m"
                     : strcmp(outcome, "allowed") == 0 ? "\033[32m"
                                                       : "\033[36m";
    char subject[300] = "";
    if (*rstr(r, "subject")) snprintf(subject, sizeof subject, " -> %s", rstr(r, "subject"));
    char corr[200] = "";
    if (*rstr(r, "correlation_id")) snprintf(corr, sizeof corr, " %scorr=%s%s", dim, rstr(r, "correlation_id"), reset);
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(r, "seq");
    printf("%s%s%s #%-7lld %s%-28s%s %s%s %s%s%s%s\n", dim, rstr(r, "time"), reset,
           cJSON_IsNumber(seq) ? (long long)seq->valuedouble : 0LL, bold, rstr(r, "type"), reset, rstr(r, "actor"),
           subject, oc, outcome, reset, corr);
}

static void on_record(bus_msg_t *msg, void *data) {
    tail_t *t = data;
    if (t->done) {
        bus_msg_reject(msg, 1);
        return;
    }
    uv_timer_again(&t->idle);
    cJSON *recs = bus_audit_stream_records(msg->body, msg->len);
    const cJSON *r;
    cJSON_ArrayForEach(r, recs) {
        if (t->done || !bus_audit_follow_show(&t->shown_seq, r)) continue;
        int match = (!t->type_glob || fnmatch(t->type_glob, rstr(r, "type"), 0) == 0) &&
                    (!t->actor || strcmp(t->actor, rstr(r, "actor")) == 0);
        if (match) {
            print_record(t, r, bus_msg_header(msg, "x-stream-offset"));
            if (++t->shown >= t->limit && t->limit > 0) tail_stop(t);
        }
    }
    cJSON_Delete(recs);
    bus_msg_ack(msg); /* a stream consumer's ack only makes room for more deliveries */
    fflush(stdout);
}

static void on_idle(uv_timer_t *h) {
    tail_t *t = h->data;
    if (!t->follow) tail_stop(t);
}

static void on_sigint(uv_signal_t *s, int signum) {
    (void)signum;
    tail_stop(s->data);
}

/* "10m", "2h", "30s", "1d" or an RFC 3339 time -> epoch seconds; -1 when neither. */
static int64_t parse_since(const char *s) {
    int64_t ms;
    if (bus_rfc3339_parse(s, &ms) == 0) return ms / 1000;
    char *end = NULL;
    double n = strtod(s, &end);
    if (end == s || n < 0) return -1;
    double mult = 0;
    if (strcmp(end, "s") == 0) mult = 1;
    else if (strcmp(end, "m") == 0) mult = 60;
    else if (strcmp(end, "h") == 0) mult = 3600;
    else if (strcmp(end, "d") == 0) mult = 86400;
    else return -1;
    return (int64_t)time(NULL) - (int64_t)(n * mult);
}

static int tail_usage(void) {
    fprintf(stderr, "usage: busctl tail [--since 10m|RFC3339 | --from first|last|next | --offset N] [--type GLOB]\n"
                    "                   [--actor USER] [--follow] [--json] [--limit N] [--idle-ms MS]\n");
    return 2;
}

int bus_cli_tail(const char *amqp_url, int argc, char **argv) {
    tail_t t = {0};
    t.idle_ms = 1000;
    const char *since = NULL, *from = NULL, *offset = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--follow") == 0 || strcmp(a, "-f") == 0) t.follow = 1;
        else if (strcmp(a, "--json") == 0) t.json = 1;
        else if (!v) return tail_usage();
        else if (strcmp(a, "--since") == 0) since = argv[++i];
        else if (strcmp(a, "--from") == 0) from = argv[++i];
        else if (strcmp(a, "--offset") == 0) offset = argv[++i];
        else if (strcmp(a, "--type") == 0) t.type_glob = argv[++i];
        else if (strcmp(a, "--actor") == 0) t.actor = argv[++i];
        else if (strcmp(a, "--limit") == 0) t.limit = atol(argv[++i]);
        else if (strcmp(a, "--idle-ms") == 0) t.idle_ms = atoi(argv[++i]);
        else return tail_usage();
    }
    if (!!since + !!from + !!offset > 1) {
        fprintf(stderr, "busctl: tail takes one of --since, --from and --offset\n");
        return 2;
    }
    amqp_table_entry_t arg = {.key = amqp_cstring_bytes("x-stream-offset")};
    if (from) {
        if (strcmp(from, "first") != 0 && strcmp(from, "last") != 0 && strcmp(from, "next") != 0) return tail_usage();
        arg.value.kind = AMQP_FIELD_KIND_UTF8;
        arg.value.value.bytes = amqp_cstring_bytes(from);
    } else if (offset) {
        char *end = NULL;
        long long n = strtoll(offset, &end, 10);
        if (end == offset || *end || n < 0) return tail_usage();
        arg.value.kind = AMQP_FIELD_KIND_I64;
        arg.value.value.i64 = n;
    } else {
        int64_t ts = parse_since(since ? since : "10m");
        if (ts < 0) {
            fprintf(stderr, "busctl: --since takes a duration (30s, 10m, 2h, 1d) or an RFC 3339 time\n");
            return 2;
        }
        arg.value.kind = AMQP_FIELD_KIND_TIMESTAMP;
        arg.value.value.u64 = (uint64_t)ts;
    }
    amqp_table_t args = {.num_entries = 1, .entries = &arg};
    t.colour = !t.json && isatty(STDOUT_FILENO) && !getenv("NO_COLOR");

    const char *url = amqp_url ? amqp_url : getenv("BUS_AMQP_URL");
    if (!url || !*url) url = "amqp://guest:guest@127.0.0.1:5672/";
    uv_loop_init(&t.loop);
    char err[512];
    /* the prefetch is the stream consumer's credit (basic.qos is required for streams) */
    bus_conn_options_t o = {.url = url, .name = "busctl tail", .prefetch = 1000};
    int rc = bus_conn_new(&t.loop, &o, &t.conn, err, sizeof err);
    if (rc == 0 && bus_conn_connect_now(t.conn, err, sizeof err) != 0) rc = BUS_EUNAVAILABLE;
    if (rc != 0) {
        fprintf(stderr, "busctl: cannot reach the broker: %s\n", err);
        if (t.conn) bus_conn_close(t.conn, NULL, NULL);
        uv_run(&t.loop, UV_RUN_DEFAULT);
        uv_loop_close(&t.loop);
        return 2;
    }
    /* the stream exists once bus-audit ran; declaring it here would have to
     * repeat its retention exactly (bus/topology.h), so only look */
    if (bus_conn_queue_info(t.conn, BUS_AUDIT_STREAM, NULL, NULL) == BUS_ENOT_FOUND) {
        fprintf(stderr, "busctl: there is no %s stream yet (bus-audit declares it when it starts)\n", BUS_AUDIT_STREAM);
        rc = 2;
    } else if (bus_conn_consume(t.conn, BUS_AUDIT_STREAM, 0, 0, args, on_record, &t, NULL, 0) != 0) {
        fprintf(stderr, "busctl: cannot read %s\n", BUS_AUDIT_STREAM);
        rc = 2;
    } else {
        uv_timer_init(&t.loop, &t.idle);
        t.idle.data = &t;
        uv_timer_start(&t.idle, on_idle, (uint64_t)t.idle_ms, (uint64_t)t.idle_ms);
        uv_signal_init(&t.loop, &t.sigint);
        t.sigint.data = &t;
        uv_signal_start(&t.sigint, on_sigint, SIGINT);
        while (!t.done && uv_run(&t.loop, UV_RUN_ONCE)) {
        }
        uv_close((uv_handle_t *)&t.idle, NULL);
        uv_close((uv_handle_t *)&t.sigint, NULL);
    }
    bus_conn_close(t.conn, NULL, NULL);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    uv_loop_close(&t.loop);
    return rc;
}

/* ---- rbac bootstrap-owner -------------------------------------------------------- */

typedef struct {
    int done, status;
    cJSON *docs;
} wait_t;

static void on_found(int status, const cJSON *docs, const char *next, void *data) {
    (void)next;
    wait_t *w = data;
    w->status = status;
    w->docs = docs ? cJSON_Duplicate(docs, 1) : NULL;
    w->done = 1;
}

static void on_inserted(int status, const cJSON *doc, void *data) {
    (void)doc;
    wait_t *w = data;
    w->status = status;
    w->done = 1;
}

static void on_published(int status, void *data) {
    wait_t *w = data;
    w->status = status;
    w->done = 1;
}

static void wait_done(uv_loop_t *loop, wait_t *w) {
    while (!w->done && uv_run(loop, UV_RUN_ONCE)) {
    }
}

static int bootstrap_owner(const char *amqp_url, const char *user, const char *store_url) {
    char now[32], err[1024];
    bus_now_rfc3339(now);
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "user", user);
    cJSON_AddStringToObject(ev, "role", "owner");
    cJSON_AddStringToObject(ev, "scope", "global");
    cJSON_AddStringToObject(ev, "by", "bootstrap");
    cJSON_AddStringToObject(ev, "at", now);
    if (bus_cli_check_event("role.granted", ev, err, sizeof err) != 0) {
        fprintf(stderr, "busctl: %s: %s\n", user, err);
        cJSON_Delete(ev);
        return 2;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    bus_store_t *store = NULL;
    if (!store_url) store_url = getenv("BUS_STORE");
    static const char *const grant_idx[] = {"user", "role", NULL};
    int rc = bus_store_open(&loop, store_url, &store, err, sizeof err);
    if (rc == 0) rc = bus_store_declare(store, "rbac_grants", grant_idx, NULL, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "busctl: %s\n", err);
        cJSON_Delete(ev);
        if (store) bus_store_close(store, NULL, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return 2;
    }
    int exit_code = 0;
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "role", "owner");
    bus_store_query_t q = {.where = where, .limit = 1};
    wait_t w = {0};
    bus_store_find(store, "rbac_grants", &q, on_found, &w);
    wait_done(&loop, &w);
    cJSON_Delete(where);
    const cJSON *owner = cJSON_GetArrayItem(w.docs, 0);
    if (w.status != 0) {
        fprintf(stderr, "busctl: reading the grants failed: %s\n", bus_strerror(w.status));
        exit_code = 2;
    } else if (owner) {
        fprintf(stderr, "busctl: an owner exists already (%s); owners name further owners with audit.grant\n",
                rstr(owner, "user"));
        exit_code = 1;
    } else {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "user", user);
        cJSON_AddStringToObject(doc, "role", "owner");
        cJSON_AddStringToObject(doc, "scope", "global");
        cJSON_AddStringToObject(doc, "granted_by", "bootstrap");
        cJSON_AddStringToObject(doc, "granted_at", now);
        char id[300];
        snprintf(id, sizeof id, "%s|owner|global", user);
        wait_t ins = {0};
        bus_store_insert(store, "rbac_grants", id, doc, on_inserted, &ins);
        wait_done(&loop, &ins);
        cJSON_Delete(doc);
        if (ins.status != 0) {
            fprintf(stderr, "busctl: storing the grant failed: %s\n", bus_strerror(ins.status));
            exit_code = 2;
        }
    }
    cJSON_Delete(w.docs);
    bus_store_close(store, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (exit_code == 0) {
        /* into the trail, and every bus-audit forgets what it cached about the user */
        bus_envelope_t env = {0};
        const char *url = amqp_url ? amqp_url : getenv("BUS_AMQP_URL");
        if (!url || !*url) url = "amqp://guest:guest@127.0.0.1:5672/";
        bus_conn_t *conn = NULL;
        bus_conn_options_t o = {.url = url, .name = "busctl"};
        wait_t pub = {0};
        int ok = bus_envelope_init(&env, "role.granted", "busctl", user, NULL, ev) == 0;
        ev = NULL;
        ok = ok && bus_conn_new(&loop, &o, &conn, err, sizeof err) == 0 &&
             bus_conn_connect_now(conn, err, sizeof err) == 0 && bus_event_publish(conn, &env, on_published, &pub) == 0;
        if (ok) wait_done(&loop, &pub);
        if (!ok || pub.status != 0)
            fprintf(stderr, "busctl: %s is owner, but role.granted could not be published (%s): the grant is not "
                            "in the audit trail and bus-audit may answer from its cache for BUS_RBAC_CACHE_TTL_MS\n",
                    user, ok ? bus_strerror(pub.status) : err);
        else
            printf("%s is the owner\n", user);
        bus_envelope_clear(&env);
        if (conn) bus_conn_close(conn, NULL, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    cJSON_Delete(ev);
    uv_loop_close(&loop);
    return exit_code;
}

int bus_cli_rbac(const char *amqp_url, int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[0], "bootstrap-owner") == 0) {
        const char *store = NULL;
        if (argc == 4 && strcmp(argv[2], "--store") == 0) store = argv[3];
        else if (argc != 2) goto usage;
        return bootstrap_owner(amqp_url, argv[1], store);
    }
usage:
    fprintf(stderr, "usage: busctl rbac bootstrap-owner USER [--store URL]   make USER the first owner\n");
    return 2;
}
