/* The audit trail's throughput, against raw publish+consume in the same run.
 *
 *   bench_audit --events N [--worker-pid PID] [--broker-pid PID] [--window W]
 *
 * raw:   N events published with confirms (at most W unconfirmed) to a topic
 *        exchange of its own and consumed from a durable classic queue bound
 *        to it (bus-audit's queue type by default): the time from the first
 *        publish to the last delivery. raw_quorum: the same through a quorum
 *        queue (BUS_QUEUE_TYPE=quorum).
 * audit: N audit.note.recorded events published with confirms onto
 *        bus.events while bus-audit runs; the time from the first publish
 *        until the N-th of their records arrived on the audit.log stream
 *        (read with a consumer of our own from "next"): published, audited,
 *        chained, stored and streamed. With --worker-pid, the worker's CPU
 *        time (utime+stime from /proc) over the run, per event; with
 *        --broker-pid, the broker's CPU time per event in each of the two
 *        runs (the broker shares the machine's cores with everything else).
 * Prints "raw events=... seconds=... eps=...", the same for raw_quorum, and
 * "audit events=... seconds=... eps=... cpu_us_per_event=...".
 */
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
#include "bus/topology.h"

static uv_loop_t loop;
static bus_conn_t *conn;
static long confirmed, failed, delivered;
static bus_audit_follow_t follow; /* each record once, in seq order */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* fields after the command: state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void on_confirm(int status, void *data) {
    (void)data;
    if (status == 0) confirmed++;
    else failed++;
}

static void on_raw(bus_msg_t *m, void *data) {
    (void)data;
    delivered++;
    bus_msg_ack(m);
}

static void on_record(bus_msg_t *m, void *data) {
    (void)data;
    cJSON *recs = bus_audit_stream_records(m->body, m->len);
    const cJSON *r;
    cJSON_ArrayForEach(r, recs) {
        const cJSON *type = cJSON_GetObjectItem(r, "type");
        if (bus_audit_follow_show(&follow, r) && cJSON_IsString(type) &&
            strcmp(type->valuestring, "audit.note.recorded") == 0)
            delivered++;
    }
    cJSON_Delete(recs);
    bus_msg_ack(m);
}

static void publish_all(long n, long window, const char *exchange_type, int audit) {
    for (long i = 0; i < n; i++) {
        while (i - confirmed - failed >= window) uv_run(&loop, UV_RUN_ONCE);
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "actor", "discord:1");
        cJSON_AddStringToObject(data, "text", "bench");
        cJSON_AddNumberToObject(data, "n", (double)i);
        bus_envelope_t env = {0};
        bus_envelope_init(&env, exchange_type, "bench", NULL, NULL, data);
        if (audit) {
            bus_event_publish(conn, &env, on_confirm, NULL);
        } else {
            size_t len = 0;
            char *body = bus_envelope_serialize(&env, &len);
            bus_publish_t p = {.exchange = "bench.raw", .routing_key = env.type, .body = body, .len = len,
                               .content_type = BUS_CE_CONTENT_TYPE, .message_id = env.id, .persistent = 1};
            bus_conn_publish(conn, &p, on_confirm, NULL);
            free(body);
        }
        bus_envelope_clear(&env);
    }
}

/* Publishes n events to a topic exchange of our own and consumes them from
 * a durable queue of queue_type bound to it; prints "<label> events=...". */
static int raw_run(long n, long window, int broker, const char *queue_type, const char *label) {
    char queue[64];
    snprintf(queue, sizeof queue, "bench.raw.%s", queue_type);
    bus_conn_declare_exchange(conn, "bench.raw", "topic");
    bus_conn_delete_queue(conn, queue);
    bus_queue_options_t q = {.durable = 1, .queue_type = queue_type};
    char tag[64];
    if (bus_conn_declare_queue(conn, queue, &q) != 0 || bus_conn_bind(conn, queue, "bench.raw", "#") != 0 ||
        bus_conn_consume(conn, queue, 0, 0, amqp_empty_table, on_raw, NULL, tag, sizeof tag) != 0) {
        fprintf(stderr, "bench_audit: cannot set up %s\n", queue);
        return -1;
    }
    delivered = confirmed = failed = 0;
    double b0 = broker ? cpu_s(broker) : -1;
    double t0 = now_s();
    publish_all(n, window, "audit.note.recorded", 0);
    while (delivered < n && failed == 0) uv_run(&loop, UV_RUN_ONCE);
    double raw_s = now_s() - t0;
    double b1 = broker ? cpu_s(broker) : -1;
    printf("%s events=%ld seconds=%.3f eps=%.0f broker_cpu_us_per_event=%.1f failed=%ld\n", label, n, raw_s,
           (double)n / raw_s, b0 >= 0 && b1 >= 0 ? (b1 - b0) * 1e6 / (double)n : -1.0, failed);
    fflush(stdout);
    bus_conn_cancel(conn, tag);
    bus_conn_delete_queue(conn, queue);
    return failed == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    long n = 20000, window = 2000;
    int pid = 0, broker = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--events") == 0) n = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--worker-pid") == 0) pid = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--broker-pid") == 0) broker = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--window") == 0) window = atol(argv[i + 1]);
    }
    const char *url = getenv("BUS_AMQP_URL");
    uv_loop_init(&loop);
    char err[256];
    bus_conn_options_t o = {.url = url ? url : "amqp://guest:guest@127.0.0.1:5672/", .name = "bench_audit",
                            .prefetch = 2000};
    if (bus_conn_new(&loop, &o, &conn, err, sizeof err) != 0 || bus_conn_connect_now(conn, err, sizeof err) != 0) {
        fprintf(stderr, "bench_audit: %s\n", err);
        return 2;
    }
    /* raw: through a queue of our own, of the type bus-audit's queue has by
     * default (classic), then through a quorum queue (BUS_QUEUE_TYPE=quorum) */
    if (raw_run(n, window, broker, "classic", "raw") != 0 || raw_run(n, window, broker, "quorum", "raw_quorum") != 0)
        return 1;

    /* audit: the stream from "next", then the burst */
    if (bus_conn_queue_info(conn, BUS_AUDIT_STREAM, NULL, NULL) != 0) {
        fprintf(stderr, "bench_audit: no %s stream (is bus-audit running?)\n", BUS_AUDIT_STREAM);
        return 1;
    }
    amqp_table_entry_t arg = {.key = amqp_cstring_bytes("x-stream-offset")};
    arg.value.kind = AMQP_FIELD_KIND_UTF8;
    arg.value.value.bytes = amqp_cstring_bytes("next");
    amqp_table_t args = {.num_entries = 1, .entries = &arg};
    delivered = confirmed = failed = 0;
    bus_conn_consume(conn, BUS_AUDIT_STREAM, 0, 0, args, on_record, NULL, NULL, 0);
    double deadline = now_s() + 1;
    while (now_s() < deadline) uv_run(&loop, UV_RUN_NOWAIT); /* the consumer is attached */
    double c0 = pid ? cpu_s(pid) : -1;
    double b0 = broker ? cpu_s(broker) : -1;
    double t0 = now_s();
    publish_all(n, window, "audit.note.recorded", 1);
    double pub_s = now_s() - t0;
    deadline = now_s() + 120;
    while (delivered < n && now_s() < deadline) uv_run(&loop, UV_RUN_ONCE);
    double audit_s = now_s() - t0;
    double c1 = pid ? cpu_s(pid) : -1;
    double b1 = broker ? cpu_s(broker) : -1;
    printf("audit events=%ld recorded=%ld seconds=%.3f eps=%.0f publish_eps=%.0f cpu_us_per_event=%.1f "
           "broker_cpu_us_per_event=%.1f failed=%ld\n",
           n, delivered, audit_s, (double)delivered / audit_s, (double)n / pub_s,
           c0 >= 0 && c1 >= 0 ? (c1 - c0) * 1e6 / (double)n : -1.0,
           b0 >= 0 && b1 >= 0 ? (b1 - b0) * 1e6 / (double)n : -1.0, failed);
    bus_conn_close(conn, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return delivered == n ? 0 : 1;
}
