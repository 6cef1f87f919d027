/* baseline_rpc_client: the yardstick RPC client for `make bench`.
 *
 *   baseline_rpc_client --queue Q --inflight N --seconds S [--warmup W]
 *                       [--name NAME] [--timeout T] [--body JSON]
 *   env BUS_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/)
 *
 * Plain blocking rabbitmq-c, the way one writes an RPC client without a
 * platform: one connection, one channel, direct reply-to (it consumes
 * amq.rabbitmq.reply-to with no-ack on the same channel before publishing),
 * requests to the default exchange with routing key Q. N calls stay in
 * flight: each reply immediately triggers the next call in the same slot.
 * Replies are matched by correlation_id "<slot>.<seq>"; a stale or unknown id
 * is ignored.
 *
 * Calls completing during the first W seconds (warm-up, default 1) are not
 * counted; then for S seconds every completed call's latency (publish to
 * reply, CLOCK_MONOTONIC) is recorded. Output, one line on stdout:
 *
 *   name=baseline inflight=N calls=C rps=R p50_ms=X p99_ms=Y rss_kb=K
 *
 * rps = C / S; p50/p99 are nearest-rank percentiles; rss_kb is this
 * process's peak RSS (getrusage ru_maxrss). Exit 0 on success; 1 when the
 * broker is unreachable, the queue does not exist, or no reply arrives for T
 * seconds (default 5) while calls are outstanding; 2 on bad usage.
 */
#include "baseline_amqp.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>

typedef struct {
    uint64_t seq;  /* sequence number of the call in flight in this slot */
    uint64_t t0;   /* when it was published, ns */
} slot_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile of sorted v[0..n), in ms */
static double pct_ms(const uint64_t *v, size_t n, double p)
{
    if (n == 0) return 0;
    size_t rank = (size_t)(p * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return (double)v[rank - 1] / 1e6;
}

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s --queue Q --inflight N --seconds S [--warmup W] [--name NAME]\n"
            "          [--timeout T] [--body JSON]      (env BUS_AMQP_URL)\n",
            argv0);
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *queue = NULL, *name = "baseline", *body_s = "{}";
    double inflight_d = 1, seconds = 5, warmup = 1, timeout_s = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout, argv[0]);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr, argv[0]);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--queue")) queue = v;
        else if (!strcmp(a, "--name")) name = v;
        else if (!strcmp(a, "--body")) body_s = v;
        else if (!strcmp(a, "--inflight")) bad = parse_double(v, &inflight_d);
        else if (!strcmp(a, "--seconds")) bad = parse_double(v, &seconds);
        else if (!strcmp(a, "--warmup")) bad = parse_double(v, &warmup);
        else if (!strcmp(a, "--timeout")) bad = parse_double(v, &timeout_s);
        else bad = 1;
        if (bad) {
            fprintf(stderr, "bad option or value: %s %s\n", a, v);
            usage(stderr, argv[0]);
            return 2;
        }
    }
    int inflight = (int)inflight_d;
    if (!queue || inflight < 1 || inflight > 100000 || seconds <= 0 || timeout_s <= 0) {
        usage(stderr, argv[0]);
        return 2;
    }
    const char *url = getenv("BUS_AMQP_URL");
    if (!url || !*url) url = BL_DEFAULT_URL;
    signal(SIGPIPE, SIG_IGN);

    amqp_connection_state_t conn = bl_connect(url);
    if (!conn) return 1;
    amqp_bytes_t qname = amqp_cstring_bytes(queue);
    amqp_bytes_t reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");

    /* A request to a queue nobody declared vanishes in the default exchange:
     * check first, so a missing server is an error and not a 5 s timeout. */
    amqp_queue_declare(conn, BL_CHANNEL, qname, 1 /*passive*/, 0, 0, 0, amqp_empty_table);
    if (bl_check(amqp_get_rpc_reply(conn), "queue.declare (passive; is the server running?)")) {
        amqp_destroy_connection(conn);
        return 1;
    }
    /* direct reply-to: consume the pseudo-queue, no-ack, before publishing */
    amqp_basic_consume(conn, BL_CHANNEL, reply_to, amqp_empty_bytes, 0, 1 /*no_ack*/, 0,
                       amqp_empty_table);
    if (bl_check(amqp_get_rpc_reply(conn), "basic.consume amq.rabbitmq.reply-to")) {
        amqp_destroy_connection(conn);
        return 1;
    }

    slot_t *slots = calloc((size_t)inflight, sizeof *slots);
    size_t lat_cap = 1 << 16, lat_n = 0;
    uint64_t *lat = malloc(lat_cap * sizeof *lat);
    if (!slots || !lat) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }

    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
                   AMQP_BASIC_CORRELATION_ID_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.reply_to = reply_to;
    amqp_bytes_t body = amqp_cstring_bytes(body_s);
    uint64_t next_seq = 1;
    char corr[48];

#define SEND(slot_i)                                                                           \
    do {                                                                                       \
        slot_t *s_ = &slots[(slot_i)];                                                         \
        s_->seq = next_seq++;                                                                  \
        int n_ = snprintf(corr, sizeof corr, "%d.%" PRIu64, (slot_i), s_->seq);                \
        props.correlation_id.bytes = corr;                                                     \
        props.correlation_id.len = (size_t)n_;                                                 \
        s_->t0 = now_ns();                                                                     \
        int prc_ = amqp_basic_publish(conn, BL_CHANNEL, amqp_empty_bytes, qname, 0, 0, &props, \
                                      body);                                                   \
        if (prc_ != AMQP_STATUS_OK) {                                                          \
            fprintf(stderr, "publish: %s\n", amqp_error_string2(prc_));                        \
            goto fail;                                                                         \
        }                                                                                      \
    } while (0)

    uint64_t start = now_ns();
    uint64_t measure_from = start + (uint64_t)(warmup * 1e9);
    uint64_t end = measure_from + (uint64_t)(seconds * 1e9);
    uint64_t timeout_ns = (uint64_t)(timeout_s * 1e9);
    uint64_t last_reply = start;
    uint64_t calls = 0;

    for (int i = 0; i < inflight; i++) SEND(i);

    for (;;) {
        uint64_t t = now_ns();
        if (t >= end) break;
        if (t - last_reply > timeout_ns) {
            fprintf(stderr, "no reply for %.1f s (is the server consuming %s?)\n", timeout_s,
                    queue);
            goto fail;
        }
        uint64_t wait = end - t;
        if (wait > 200000000u) wait = 200000000u;
        struct timeval tv = {(time_t)(wait / 1000000000u), (suseconds_t)(wait % 1000000000u / 1000)};
        amqp_envelope_t env;
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
                if (r.library_error == AMQP_STATUS_TIMEOUT) continue;
                if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
                    if (bl_handle_other_frame(conn) == 0) continue;
                    goto fail;
                }
            }
            bl_check(r, "consume reply");
            goto fail;
        }
        uint64_t done = now_ns();
        /* correlation id "<slot>.<seq>" */
        int slot = -1;
        uint64_t seq = 0;
        amqp_bytes_t cid = env.message.properties.correlation_id;
        if ((env.message.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG) && cid.len > 0 &&
            cid.len < sizeof corr) {
            char buf[48];
            memcpy(buf, cid.bytes, cid.len);
            buf[cid.len] = 0;
            if (sscanf(buf, "%d.%" SCNu64, &slot, &seq) != 2) slot = -1;
        }
        amqp_destroy_envelope(&env);
        if (slot < 0 || slot >= inflight || slots[slot].seq != seq) continue; /* stale */
        last_reply = done;
        if (done >= measure_from) {
            if (lat_n == lat_cap) {
                lat_cap *= 2;
                uint64_t *nl = realloc(lat, lat_cap * sizeof *lat);
                if (!nl) {
                    fprintf(stderr, "out of memory\n");
                    goto fail;
                }
                lat = nl;
            }
            lat[lat_n++] = done - slots[slot].t0;
            calls++;
        }
        SEND(slot);
    }
#undef SEND

    qsort(lat, lat_n, sizeof *lat, cmp_u64);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("name=%s inflight=%d calls=%" PRIu64 " rps=%.1f p50_ms=%.3f p99_ms=%.3f rss_kb=%ld\n",
           name, inflight, calls, (double)calls / seconds, pct_ms(lat, lat_n, 0.50),
           pct_ms(lat, lat_n, 0.99), ru.ru_maxrss);
    fflush(stdout);
    free(slots);
    free(lat);
    /* calls still in flight are abandoned: closing the connection drops them */
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
fail:
    free(slots);
    free(lat);
    amqp_destroy_connection(conn);
    return 1;
}
