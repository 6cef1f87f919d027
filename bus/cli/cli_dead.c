/* busctl dead: the dead letters of a service (dead.<service>), to read and act on.
 *
 *   busctl dead list SERVICE [--json]           type, id, reason, attempts, age, body excerpt
 *   busctl dead show SERVICE ID                 one message: its headers and whole body
 *   busctl dead replay SERVICE (ID | --all)     back to the queue it died in (x-bus-dead-queue, or the broker's x-first-death-queue)
 *   busctl dead purge SERVICE (ID | --all) [--yes]
 *
 * How the queue is read without losing anything: busctl consumes dead.<s>
 * with manual acks and holds every delivery unacknowledged (it asks the
 * broker how many are ready first, and stops at that count or after one
 * second without a delivery). It acks only what it has dealt with:
 *   - list and show ack nothing; closing the connection gives every message
 *     back to the broker, which puts them back where they were (the order of
 *     the queue is kept; they are marked redelivered). If busctl dies, the
 *     broker does the same.
 *   - replay publishes a copy to its queue through the default exchange,
 *     waits for the broker's confirm, and only then acks the dead one. A
 *     crash between the two leaves the message in both queues: a replay is
 *     at-least-once, which the domains' exactly-once markers absorb (a
 *     replayed event or request with the same id is done once). Each replay
 *     is counted on the command's output and audited: an event
 *     deadletter.replayed (schemas/events/deadletter.replayed.json) is
 *     published, confirmed, for the audit domain to record.
 *   - purge acks the chosen messages, after a confirmation on the terminal
 *     (--yes for scripts; without a terminal and without --yes it refuses).
 * A message is named by its id: the AMQP message_id, else the CloudEvent id
 * in its body; "#N" (its position in `dead list`) names one that has neither.
 * Exit codes: 0 done; 1 nothing matched, or some replays failed; 2 usage or
 * broker errors.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus/conn.h"
#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/publish.h"
#include "bus/topology.h"
#include "cli.h"

#define IDLE_MS 1000
#define EXCERPT 60

typedef struct {
    bus_msg_t *msg; /* held unacked until acked (done) or the connection closes */
    char id[128];
    char kind[128]; /* what it was: event type or service.method (kind_of) */
    int done;       /* acked */
} dead_t;

typedef struct {
    uv_loop_t loop;
    bus_conn_t *conn;
    uv_timer_t idle;
    dead_t *items;
    size_t n, cap;
    uint32_t expected;
    int collecting;
    int pending;    /* publishes waiting for their confirm */
    int replayed, failed;
    const char *service;
} dq_t;

static int dead_usage(void) {
    fprintf(stderr, "usage:\n"
                    "  busctl dead list SERVICE [--json]\n"
                    "  busctl dead show SERVICE ID\n"
                    "  busctl dead replay SERVICE (ID | --all)\n"
                    "  busctl dead purge SERVICE (ID | --all) [--yes]\n");
    return 2;
}

/* What it was: the original routing key (event type or service.method) that
 * our dead-lettering recorded, else the AMQP type, else the "type" of a
 * CloudEvent body (a message the broker dead-lettered itself carries none of
 * our headers), else the routing key it arrived with. */
static void kind_of(const bus_msg_t *m, const cJSON *doc, char *out, size_t len) {
    const char *k = bus_msg_header(m, BUS_HDR_ROUTING_KEY);
    /* a retried event came back through its queue: the key is a queue name */
    int queue_name = k && (strncmp(k, "events.", 7) == 0 || strncmp(k, "rpc.", 4) == 0);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(doc, "type");
    const char *kind = k && *k && !queue_name ? k
                       : *m->type             ? m->type
                       : cJSON_IsString(type) ? type->valuestring
                       : k && *k              ? k
                                              : m->routing_key;
    snprintf(out, len, "%s", kind);
}

/* Its id (message_id, else the "id" of a CloudEvent body) and kind. */
static void identify(dead_t *d) {
    const bus_msg_t *m = d->msg;
    cJSON *doc = cJSON_ParseWithLength(m->body, m->len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "id");
    snprintf(d->id, sizeof d->id, "%s", *m->message_id ? m->message_id : cJSON_IsString(id) ? id->valuestring : "");
    kind_of(m, doc, d->kind, sizeof d->kind);
    cJSON_Delete(doc);
}

/* Deliveries may be handled in the loop's prepare phase (frames rabbitmq-c
 * had buffered): uv_stop, or the turn would then sleep until the next timer. */
static void stop_collecting(dq_t *q) {
    q->collecting = 0;
    uv_timer_stop(&q->idle);
    uv_stop(&q->loop);
}

static void on_idle(uv_timer_t *t) { stop_collecting(t->data); }

static void on_dead_msg(bus_msg_t *msg, void *data) {
    dq_t *q = data;
    if (!q->collecting || (q->n == q->cap && !(q->items = realloc(q->items, (q->cap = q->cap ? q->cap * 2 : 64) *
                                                                              sizeof *q->items)))) {
        bus_msg_free(msg); /* not ours to act on: the broker gets it back when we close */
        return;
    }
    dead_t *d = &q->items[q->n++];
    memset(d, 0, sizeof *d);
    d->msg = msg;
    identify(d);
    if (q->n >= q->expected) stop_collecting(q);
    else uv_timer_again(&q->idle);
}

/* Connects and takes every ready message of dead.<service>. 0, or an exit code. */
static int collect(dq_t *q, const char *service) {
    char err[512], queue[96];
    q->service = service;
    uv_loop_init(&q->loop);
    bus_conn_options_t o = {.url = bus_cli_amqp_url(), .name = "busctl dead"};
    if (bus_conn_new(&q->loop, &o, &q->conn, err, sizeof err) != 0) {
        fprintf(stderr, "busctl: %s\n", err);
        return 2;
    }
    if (bus_conn_connect_now(q->conn, err, sizeof err) != 0) {
        fprintf(stderr, "busctl: cannot reach the broker: %s\n", err);
        return 2;
    }
    bus_queue_name(queue, sizeof queue, "dead", service);
    int rc = bus_conn_queue_info(q->conn, queue, &q->expected, NULL);
    if (rc == BUS_ENOT_FOUND) {
        fprintf(stderr, "busctl: no queue %s: has %s ever run?\n", queue, service);
        return 2;
    }
    if (rc != 0) {
        fprintf(stderr, "busctl: cannot inspect %s: %s\n", queue, bus_strerror(rc));
        return 2;
    }
    if (q->expected == 0) return 0;
    uv_timer_init(&q->loop, &q->idle);
    q->idle.data = q;
    q->collecting = 1;
    uv_timer_start(&q->idle, on_idle, IDLE_MS, IDLE_MS);
    if (bus_conn_consume(q->conn, queue, 0, 0, amqp_empty_table, on_dead_msg, q, NULL, 0) != 0) {
        fprintf(stderr, "busctl: cannot consume %s\n", queue);
        return 2;
    }
    while (q->collecting && uv_run(&q->loop, UV_RUN_ONCE)) {
    }
    return 0;
}

static void on_closed(void *data) { (void)data; }

/* Closes the connection (unacked messages go back to the queue in their order). */
static void release(dq_t *q) {
    for (size_t i = 0; i < q->n; i++)
        if (!q->items[i].done) bus_msg_free(q->items[i].msg);
    if (q->conn) bus_conn_close(q->conn, on_closed, NULL);
    if (q->expected && q->idle.data) uv_close((uv_handle_t *)&q->idle, NULL);
    uv_run(&q->loop, UV_RUN_DEFAULT);
    uv_loop_close(&q->loop);
    free(q->items);
}

static const char *hdr(const bus_msg_t *m, const char *key) {
    const char *v = bus_msg_header(m, key);
    return v ? v : "";
}

/* The queue it died in and why: our own headers when a worker dead-lettered
 * it, the broker's (x-first-death-*) when the broker did, as it does for a
 * message over the size limit that the worker rejected unread. */
static const char *dead_queue_of(const bus_msg_t *m) {
    const char *q = hdr(m, BUS_HDR_DEAD_QUEUE);
    return *q ? q : hdr(m, "x-first-death-queue");
}
static const char *dead_reason_of(const bus_msg_t *m) {
    const char *r = hdr(m, BUS_HDR_DEAD_REASON);
    return *r ? r : hdr(m, "x-first-death-reason");
}

static void age_text(int64_t ts, char *out, size_t len) {
    if (ts <= 0) {
        snprintf(out, len, "-");
        return;
    }
    int64_t s = (int64_t)time(NULL) - ts;
    if (s < 0) s = 0;
    if (s < 120) snprintf(out, len, "%llds", (long long)s);
    else if (s < 7200) snprintf(out, len, "%lldm", (long long)(s / 60));
    else if (s < 172800) snprintf(out, len, "%lldh", (long long)(s / 3600));
    else snprintf(out, len, "%lldd", (long long)(s / 86400));
}

static void excerpt(const bus_msg_t *m, char *out, size_t len) {
    size_t j = 0;
    for (size_t i = 0; i < m->len && j + 4 < len && j < EXCERPT; i++) {
        unsigned char c = (unsigned char)m->body[i];
        out[j++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    if (m->len > EXCERPT && j + 4 < len) out[j++] = '.', out[j++] = '.', out[j++] = '.';
    out[j] = '\0';
}

static cJSON *describe(const dead_t *d, size_t index, int whole) {
    const bus_msg_t *m = d->msg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", (double)index);
    cJSON_AddStringToObject(o, "id", d->id);
    cJSON_AddStringToObject(o, "type", d->kind);
    cJSON_AddStringToObject(o, "reason", dead_reason_of(m));
    cJSON_AddNumberToObject(o, "attempts", atoi(hdr(m, BUS_HDR_ATTEMPT)));
    cJSON_AddStringToObject(o, "queue", dead_queue_of(m));
    cJSON_AddNumberToObject(o, "dead_lettered_at", (double)m->timestamp);
    cJSON_AddNumberToObject(o, "bytes", (double)m->len);
    if (!whole) {
        char ex[EXCERPT + 8];
        excerpt(m, ex, sizeof ex);
        cJSON_AddStringToObject(o, "excerpt", ex);
        return o;
    }
    cJSON_AddStringToObject(o, "correlation_id", *m->correlation_id ? m->correlation_id : hdr(m, BUS_HDR_CORRELATION));
    cJSON_AddStringToObject(o, "content_type", m->content_type);
    cJSON *h = cJSON_AddObjectToObject(o, "headers");
    for (size_t i = 0; i < m->nheaders; i++)
        cJSON_AddItemToObject(h, m->headers[i].key, cJSON_CreateString(m->headers[i].value));
    cJSON *body = cJSON_ParseWithLength(m->body, m->len);
    if (body) cJSON_AddItemToObject(o, "body", body);
    else cJSON_AddStringToObject(o, "body_text", m->body);
    return o;
}

/* Index of the message named `id` (its id, or "#N"), or -1. */
static long find(const dq_t *q, const char *id) {
    if (id[0] == '#') {
        long i = strtol(id + 1, NULL, 10);
        return i >= 1 && (size_t)i <= q->n ? i - 1 : -1;
    }
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->items[i].id, id) == 0) return (long)i;
    return -1;
}

static int cmd_list(dq_t *q, int json) {
    if (json) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < q->n; i++) cJSON_AddItemToArray(arr, describe(&q->items[i], i + 1, 0));
        bus_cli_print_json(arr);
        cJSON_Delete(arr);
        return 0;
    }
    printf("%-4s %-28s %-36s %4s %5s  %s\n", "#", "TYPE", "ID", "TRY", "AGE", "REASON / BODY");
    for (size_t i = 0; i < q->n; i++) {
        const bus_msg_t *m = q->items[i].msg;
        char age[32], ex[EXCERPT + 8];
        age_text(m->timestamp, age, sizeof age);
        excerpt(m, ex, sizeof ex);
        printf("%-4zu %-28s %-36s %4d %5s  %s\n%47s %s\n", i + 1, q->items[i].kind, q->items[i].id[0] ? q->items[i].id : "-",
               atoi(hdr(m, BUS_HDR_ATTEMPT)), age, dead_reason_of(m), "", ex);
    }
    printf("%zu dead letter%s in dead.%s\n", q->n, q->n == 1 ? "" : "s", q->service);
    return 0;
}

/* ---- replay ------------------------------------------------------------- */

typedef struct {
    dq_t *q;
    dead_t *d;
} replay_t;

static void on_audited(int status, void *data) {
    dq_t *q = data;
    if (--q->pending == 0) uv_stop(&q->loop);
    if (status != 0) fprintf(stderr, "busctl: the deadletter.replayed event was not confirmed: %s\n", bus_strerror(status));
}

/* Publishes deadletter.replayed for the audit trail. */
static void audit_replay(dq_t *q, const dead_t *d, const char *queue) {
    const bus_msg_t *m = d->msg;
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "service", q->service);
    cJSON_AddStringToObject(data, "message_id", d->id);
    cJSON_AddStringToObject(data, "message_type", d->kind);
    cJSON_AddStringToObject(data, "queue", queue);
    cJSON_AddStringToObject(data, "reason", dead_reason_of(m));
    const char *user = getenv("USER");
    cJSON_AddStringToObject(data, "by", user && *user ? user : "busctl");
    bus_envelope_t env = {0};
    const char *corr = *m->correlation_id ? m->correlation_id : NULL;
    if (bus_envelope_init(&env, "deadletter.replayed", "busctl", q->service, corr, data) != 0) return;
    if (bus_event_publish(q->conn, &env, on_audited, q) == 0) q->pending++;
    bus_envelope_clear(&env);
}

static void on_replayed(int status, void *data) {
    replay_t *r = data;
    dq_t *q = r->q;
    if (--q->pending == 0) uv_stop(&q->loop); /* (audit_replay below may add one) */
    if (status == 0) {
        char queue[128]; /* copied: the ack below frees the message */
        snprintf(queue, sizeof queue, "%s", dead_queue_of(r->d->msg));
        audit_replay(q, r->d, queue);
        r->d->done = 1;
        bus_msg_ack(r->d->msg); /* only now: the copy is safely in its queue */
        q->replayed++;
        printf("replayed %s to %s\n", r->d->id[0] ? r->d->id : "(no id)", queue);
    } else {
        q->failed++;
        fprintf(stderr, "busctl: %s was not replayed (%s); it stays in dead.%s\n", r->d->id, bus_strerror(status),
                q->service);
    }
    free(r);
}

static void replay_one(dq_t *q, dead_t *d) {
    bus_msg_t *m = d->msg;
    const char *queue = dead_queue_of(m);
    char events_q[96], rpc_q[96];
    bus_queue_name(events_q, sizeof events_q, "events", q->service);
    bus_queue_name(rpc_q, sizeof rpc_q, "rpc", q->service);
    if (strcmp(queue, events_q) != 0 && strcmp(queue, rpc_q) != 0) {
        fprintf(stderr, "busctl: %s has no queue of %s to go back to (x-bus-dead-queue \"%s\"); left in place\n",
                d->id, q->service, queue);
        q->failed++;
        return;
    }
    bus_header_t headers[32];
    size_t n = 0;
    for (size_t i = 0; i < m->nheaders && n < 32; i++) {
        if (strncmp(m->headers[i].key, "x-bus-dead-", 11) == 0) continue;
        if (strcmp(m->headers[i].key, BUS_HDR_ATTEMPT) == 0) continue; /* a fresh start */
        if (strcmp(m->headers[i].key, BUS_HDR_ROUTING_KEY) == 0) continue;
        headers[n++] = m->headers[i];
    }
    replay_t *r = malloc(sizeof *r);
    if (!r) return;
    *r = (replay_t){q, d};
    /* Straight into the queue: an RPC request reaches the worker through the
     * default exchange with its method in `type` (bus/src/worker_rpc.c). */
    const char *rk = bus_msg_header(m, BUS_HDR_ROUTING_KEY);
    const char *type = *m->type ? m->type : (rk ? rk : NULL);
    bus_publish_t p = {
        .exchange = "",
        .routing_key = queue,
        .body = m->body,
        .len = m->len,
        .content_type = *m->content_type ? m->content_type : NULL,
        .message_id = *m->message_id ? m->message_id : NULL,
        .correlation_id = *m->correlation_id ? m->correlation_id : NULL,
        .reply_to = *m->reply_to ? m->reply_to : NULL,
        .type = type && *type ? type : NULL,
        .persistent = 1,
        .mandatory = *m->message_id != 0,
        .headers = headers,
        .nheaders = n,
    };
    if (bus_conn_publish(q->conn, &p, on_replayed, r) != 0) {
        free(r);
        q->failed++;
        return;
    }
    q->pending++;
}

static int confirm_purge(const char *what, const char *service) {
    if (!isatty(STDIN_FILENO)) {
        fprintf(stderr, "busctl: purge needs a confirmation: run it on a terminal or add --yes\n");
        return 0;
    }
    fprintf(stderr, "Delete %s from dead.%s for good? [y/N] ", what, service);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 0;
    return line[0] == 'y' || line[0] == 'Y';
}

int bus_cli_dead(int argc, char **argv) {
    if (argc < 2) return dead_usage();
    const char *sub = argv[0], *service = argv[1], *id = NULL;
    int all = 0, yes = 0, json = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--all") == 0) all = 1;
        else if (strcmp(argv[i], "--yes") == 0 || strcmp(argv[i], "-y") == 0) yes = 1;
        else if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (!id && argv[i][0] != '-') id = argv[i];
        else return dead_usage();
    }
    int is_list = strcmp(sub, "list") == 0, is_show = strcmp(sub, "show") == 0;
    int is_replay = strcmp(sub, "replay") == 0, is_purge = strcmp(sub, "purge") == 0;
    if (!is_list && !is_show && !is_replay && !is_purge) return dead_usage();
    if (!bus_valid_name(service)) {
        fprintf(stderr, "busctl: \"%s\" is not a service name\n", service);
        return 2;
    }
    if (is_show && !id) return dead_usage();
    if ((is_replay || is_purge) && !id == !all) return dead_usage();
    if (is_list && (id || all)) return dead_usage();

    dq_t q = {0};
    int rc = collect(&q, service);
    if (rc == 0 && is_list) rc = cmd_list(&q, json);
    long at = (rc == 0 && id) ? find(&q, id) : 0;
    if (rc == 0 && id && at < 0) {
        fprintf(stderr, "busctl: no dead letter %s in dead.%s\n", id, service);
        rc = 1;
    } else if (rc == 0 && is_show) {
        cJSON *o = describe(&q.items[at], (size_t)at + 1, 1);
        bus_cli_print_json(o);
        cJSON_Delete(o);
    } else if (rc == 0 && is_replay) {
        for (size_t i = 0; i < q.n; i++)
            if (all || (long)i == at) replay_one(&q, &q.items[i]);
        while (q.pending > 0 && uv_run(&q.loop, UV_RUN_ONCE)) {
        }
        printf("%d replayed, %d failed\n", q.replayed, q.failed);
        rc = q.failed ? 1 : 0;
    } else if (rc == 0 && is_purge) {
        char what[160];
        if (all) snprintf(what, sizeof what, "all %zu dead letters", q.n);
        else snprintf(what, sizeof what, "dead letter %s", id);
        if (q.n == 0) {
            printf("0 purged\n");
        } else if (!yes && !confirm_purge(what, service)) {
            fprintf(stderr, "busctl: nothing purged\n");
            rc = 1;
        } else {
            int purged = 0;
            for (size_t i = 0; i < q.n; i++)
                if (all || (long)i == at) {
                    q.items[i].done = 1;
                    bus_msg_ack(q.items[i].msg);
                    purged++;
                }
            printf("%d purged\n", purged);
        }
    }
    release(&q);
    return rc;
}
