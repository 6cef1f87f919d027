/* An AMQP connection on libuv: connect, drain, confirms, consumers, acks,
 * reconnect. See bus/conn.h for the model and the rules. */
#include "bus/conn.h"

#include <amqp_tcp_socket.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>
#include <time.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/metrics.h"

#define CH 1       /* consumers, publishes, acks */
#define CH_ADMIN 2 /* passive inspection */
#define CH_FAST 3  /* no confirms: RPC requests, replies, direct reply-to */
#define CH_PROBE 4 /* asynchronous passive declares (bus_conn_queue_probe) */
#define MSG_TRIM_BYTES (1u << 20) /* bodies this large are followed by malloc_trim (bus_msg_free, pump) */
#define CH_RPC_IN 5 /* consumers of RPC request queues: their deliveries and acks */
#define ACK_CHANNELS 6

typedef struct probe {
    struct probe *next;
    bus_queue_probe_cb cb;
    void *data;
    char queue[256];
} probe_t;

typedef struct consumer {
    char tag[128];
    int channel;
    int no_ack;
    bus_msg_cb cb;
    void *data;
    struct consumer *next;
} consumer_t;

typedef struct pending_confirm {
    uint64_t seq;
    bus_publish_cb cb;
    void *data;
    int returned;
    char message_id[96];
    struct pending_confirm *next;
} pending_confirm_t;

/* Ack coalescing, per channel (see ack_finish). Delivery tags of a channel
 * count up from 1; `done` holds the finished flags of the tags after
 * `floor` (a ring of ACK_WINDOW bits). */
#define ACK_WINDOW 65536
typedef struct {
    uint64_t floor;                  /* every tag <= floor is finished */
    int off;                         /* tracking gave up (see ack_delivered): plain acks */
    unsigned char done[ACK_WINDOW / 8];
    uint64_t *unsent;                /* acks finished in this loop turn, not encoded yet */
    size_t nunsent, cap;
} ack_state_t;

struct bus_conn {
    uv_loop_t *loop;
    char *url;            /* one URL or a comma-separated list (see url_at) */
    int nurls;
    unsigned url_next;    /* the list entry the next connect attempt uses */
    char *name;
    bus_conn_options_t opts;

    amqp_connection_state_t amqp; /* NULL while down */
    uv_poll_t *poll;              /* one per socket; freed in its close callback */
    uv_prepare_t prepare;
    uv_timer_t heartbeat_timer;
    uv_timer_t reconnect_timer;
    int up;
    int started;
    int closing;
    int pumping;
    struct {              /* frames encoded, not yet written (see out_flush) */
        unsigned char *buf;
        size_t len, cap;
        int stalled;      /* the socket was full: waiting for it to be writable */
        uint64_t stalled_at; /* uv_now when it filled */
    } out;
    ack_state_t acks[ACK_CHANNELS];  /* per channel (see ack_finish) */
    int admin_channel_open;
    int trim_pending; /* a large body was read: give memory back once rabbitmq-c released its buffers (pump) */
    int blocked;          /* the broker said connection.blocked (a resource alarm) */
    char blocked_reason[128];
    struct {              /* bus_conn_queue_probe: FIFO, one on the wire at a time */
        probe_t *head, *tail;
        int channel;      /* PROBE_CLOSED, PROBE_OPENING, PROBE_OPEN */
        int sent;         /* head's queue.declare is on the wire */
        int discard;      /* the answer on the wire belongs to a probe already failed */
    } probes;
    int backoff_ms;
    uint64_t generation;
    uint64_t next_seq;

    pending_confirm_t *confirm_head, *confirm_tail;
    size_t unconfirmed;
    consumer_t *consumers;

    struct {
        void (*on_up)(bus_conn_t *, void *);
        void (*on_down)(bus_conn_t *, int, void *);
        void *data;
    } listeners[8];
    int nlisteners;
    void (*on_return)(const char *message_id, const char *correlation_id, void *data);
    void *on_return_data;

    int handles_open;
    void (*close_cb)(void *);
    void *close_data;
};

static bus_counter_t *m_reconnects, *m_conn_lost, *m_published, *m_publish_nacked, *m_returned;
static bus_gauge_t *m_blocked;

static void init_metrics(void) {
    if (m_reconnects) return;
    m_reconnects = bus_counter("bus_amqp_connects_total", "Successful AMQP (re)connects", NULL);
    m_conn_lost = bus_counter("bus_amqp_connection_lost_total", "AMQP connections lost", NULL);
    m_published = bus_counter("bus_amqp_published_total", "Messages published", NULL);
    m_publish_nacked = bus_counter("bus_amqp_publish_failed_total", "Publishes nacked or lost before confirm", NULL);
    m_returned = bus_counter("bus_amqp_returned_total", "Mandatory publishes returned as unroutable", NULL);
    m_blocked = bus_gauge("bus_amqp_blocked_connections", "AMQP connections the broker blocked (resource alarm)", NULL);
}

static void teardown(bus_conn_t *c, int err, const char *why);
static void acks_reset(bus_conn_t *c);
static void pump(bus_conn_t *c);

static int reply_ok(amqp_rpc_reply_t r) { return r.reply_type == AMQP_RESPONSE_NORMAL; }

static void describe_reply(amqp_rpc_reply_t r, char *buf, size_t len) {
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: snprintf(buf, len, "ok"); break;
    case AMQP_RESPONSE_NONE: snprintf(buf, len, "missing RPC reply"); break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: snprintf(buf, len, "%s", amqp_error_string2(r.library_error)); break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(buf, len, "server closed connection: %u %.*s", m->reply_code, (int)m->reply_text.len,
                     (char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(buf, len, "server closed channel: %u %.*s", m->reply_code, (int)m->reply_text.len,
                     (char *)m->reply_text.bytes);
        } else {
            snprintf(buf, len, "server exception, method 0x%08X", r.reply.id);
        }
        break;
    }
}

/* ---- lifecycle --------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
    bus_conn_t *c = h->data;
    if (--c->handles_open > 0) return;
    void (*cb)(void *) = c->close_cb;
    void *data = c->close_data;
    free(c->out.buf);
    acks_reset(c);
    free(c->url);
    free(c->name);
    free(c);
    if (cb) cb(data);
}

/* ---- outgoing frames ----------------------------------------------------
 *
 * rabbitmq-c writes each frame of a publish with its own send() (method,
 * content header, body: three system calls) and each ack with another, at
 * once. Under load a loop turn makes dozens of them (a burst of replies,
 * each with its ack). Instead, publishes, acks and nacks are encoded here
 * with rabbitmq-c's own encoders (amqp_encode_method/_properties) into
 * c->out, and the whole turn leaves in one send() from the prepare handle,
 * which runs before the loop waits for I/O: nothing waits past the end of
 * the turn. rabbitmq-c still writes everything else itself (connection
 * set-up, the synchronous topology calls, heartbeats); out_flush runs
 * before each of those that has an answer to wait for. Frames of other
 * channels, and heartbeats, may come between whole messages: AMQP allows it.
 */
#define OUT_FLUSH_AT (256u << 10) /* bytes: write at once past this */
#define OUT_STALL_MAX (64u << 20) /* bytes kept while the broker reads nothing */

/* When the socket is full (the broker is slow, stopped, or blocks us under
 * a resource alarm) the loop does not wait: out_send keeps the rest in
 * c->out, the poll waits for writability instead of readability, and frames
 * made meanwhile are appended. While stalled nothing is read either, because
 * reading lets rabbitmq-c write (a heartbeat, a close-ok) into the middle of
 * our half-written frame. Only the synchronous calls, which wait for an
 * answer anyway, write everything out first (out_flush). A stall longer
 * than two heartbeat intervals (unless the broker said it blocks us), or
 * more than OUT_STALL_MAX bytes waiting, ends the connection. */

static int out_reserve(bus_conn_t *c, size_t n) {
    if (c->out.len + n <= c->out.cap) return 0;
    size_t cap = c->out.cap ? c->out.cap : 16384;
    while (cap < c->out.len + n) cap *= 2;
    unsigned char *b = realloc(c->out.buf, cap);
    if (!b) return -1;
    c->out.buf = b;
    c->out.cap = cap;
    return 0;
}

static void put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}
static void put_u32(unsigned char *p, uint32_t v) {
    put_u16(p, (uint16_t)(v >> 16));
    put_u16(p + 2, (uint16_t)v);
}

/* Appends one frame whose payload the callback encodes (at most `max`
 * bytes); returns 0 or -1. */
typedef int (*encode_fn)(void *arg, amqp_bytes_t into);
static int out_frame(bus_conn_t *c, uint8_t type, amqp_channel_t ch, size_t max, encode_fn enc, void *arg) {
    if (out_reserve(c, max + 8) != 0) return -1;
    unsigned char *f = c->out.buf + c->out.len;
    int n = enc(arg, (amqp_bytes_t){max, f + 7});
    if (n < 0) return -1;
    f[0] = type;
    put_u16(f + 1, ch);
    put_u32(f + 3, (uint32_t)n);
    f[7 + n] = AMQP_FRAME_END;
    c->out.len += (size_t)n + 8;
    return 0;
}

typedef struct {
    amqp_method_number_t id;
    void *decoded;
} method_arg_t;
static int enc_method(void *arg, amqp_bytes_t into) {
    method_arg_t *m = arg;
    put_u32(into.bytes, m->id);
    int n = amqp_encode_method(m->id, m->decoded, (amqp_bytes_t){into.len - 4, (char *)into.bytes + 4});
    return n < 0 ? n : n + 4;
}

typedef struct {
    amqp_basic_properties_t *props;
    uint64_t body_size;
} header_arg_t;
static int enc_header(void *arg, amqp_bytes_t into) {
    header_arg_t *h = arg;
    unsigned char *p = into.bytes;
    put_u16(p, AMQP_BASIC_CLASS);
    put_u16(p + 2, 0); /* weight */
    put_u32(p + 4, (uint32_t)(h->body_size >> 32));
    put_u32(p + 8, (uint32_t)h->body_size);
    int n = amqp_encode_properties(AMQP_BASIC_CLASS, h->props, (amqp_bytes_t){into.len - 12, p + 12});
    return n < 0 ? n : n + 12;
}

static int enc_body(void *arg, amqp_bytes_t into) {
    amqp_bytes_t *chunk = arg;
    memcpy(into.bytes, chunk->bytes, chunk->len);
    return (int)chunk->len;
}

/* Writes c->out to fd. With wait, waits for room when the socket is full
 * (as rabbitmq-c's own sends do); without, keeps what the socket did not
 * take at the front of c->out and returns 1. 0 when everything is written;
 * -1 on error (errno set). c->out is empty after 0 and -1. */
static int out_write(bus_conn_t *c, int fd, int wait) {
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t n = send(fd, c->out.buf + off, c->out.len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait) {
                memmove(c->out.buf, c->out.buf + off, c->out.len - off);
                c->out.len -= off;
                return 1;
            }
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, c->opts.heartbeat_s * 1000) > 0) continue;
            errno = ETIMEDOUT;
        }
        if (n == 0) errno = EPIPE;
        c->out.len = 0;
        return -1;
    }
    c->out.len = 0;
    return 0;
}

static void on_poll(uv_poll_t *p, int status, int events);

static void poll_for(bus_conn_t *c, int writable) {
    if (c->poll) uv_poll_start(c->poll, (writable ? UV_WRITABLE : UV_READABLE) | UV_DISCONNECT, on_poll);
}

static void stall_end(bus_conn_t *c) {
    if (!c->out.stalled) return;
    c->out.stalled = 0;
    poll_for(c, 0);
}

/* Everything in c->out written, waiting for room if need be: before a
 * synchronous call. A failure tears the connection down. 0 or -1. */
static int out_flush(bus_conn_t *c) {
    if (!c->amqp || c->out.len == 0) {
        if (c->amqp) stall_end(c);
        return 0;
    }
    if (out_write(c, amqp_get_sockfd(c->amqp), 1) == 0) {
        stall_end(c);
        return 0;
    }
    char why[128];
    snprintf(why, sizeof why, "send: %s", strerror(errno));
    teardown(c, BUS_EUNAVAILABLE, why);
    return -1;
}

/* Writes what the socket takes now and keeps the rest (see above). A
 * failure tears the connection down. 0 or -1. */
static int out_send(bus_conn_t *c) {
    if (!c->amqp || c->out.len == 0) return 0;
    if (c->out.stalled) {
        if (c->out.len <= OUT_STALL_MAX) return 0;
        teardown(c, BUS_EUNAVAILABLE, "the broker has read nothing while 64 MiB waited to be sent");
        return -1;
    }
    int rc = out_write(c, amqp_get_sockfd(c->amqp), 0);
    if (rc == 1) {
        c->out.stalled = 1;
        c->out.stalled_at = uv_now(c->loop);
        poll_for(c, 1);
    } else if (rc < 0) {
        char why[128];
        snprintf(why, sizeof why, "send: %s", strerror(errno));
        teardown(c, BUS_EUNAVAILABLE, why);
        return -1;
    }
    return 0;
}

/* Encodes basic.publish + header + body frames of one message. */
static int out_publish(bus_conn_t *c, amqp_channel_t ch, amqp_bytes_t exchange, amqp_bytes_t key, int mandatory,
                       amqp_basic_properties_t *props, amqp_bytes_t body) {
    size_t mark = c->out.len;
    amqp_basic_publish_t m = {.exchange = exchange, .routing_key = key, .mandatory = mandatory != 0};
    method_arg_t ma = {AMQP_BASIC_PUBLISH_METHOD, &m};
    header_arg_t ha = {props, body.len};
    size_t props_max = 16 * 260; /* every short-string property at its longest */
    if (props->_flags & AMQP_BASIC_HEADERS_FLAG)
        for (int i = 0; i < props->headers.num_entries; i++) {
            const amqp_field_value_t *v = &props->headers.entries[i].value;
            props_max += props->headers.entries[i].key.len + 16;
            if (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES) props_max += v->value.bytes.len;
        }
    int rc = out_frame(c, AMQP_FRAME_METHOD, ch, exchange.len + key.len + 64, enc_method, &ma);
    if (rc == 0) rc = out_frame(c, AMQP_FRAME_HEADER, ch, props_max, enc_header, &ha);
    size_t chunk_max = (size_t)amqp_get_frame_max(c->amqp) - 8;
    for (size_t off = 0; rc == 0 && off < body.len; off += chunk_max) {
        amqp_bytes_t chunk = {body.len - off < chunk_max ? body.len - off : chunk_max, (char *)body.bytes + off};
        rc = out_frame(c, AMQP_FRAME_BODY, ch, chunk.len, enc_body, &chunk);
    }
    if (rc != 0) {
        c->out.len = mark; /* nothing of this message stays */
        return -1;
    }
    return c->out.len >= OUT_FLUSH_AT ? out_send(c) : 0;
}

/* Encodes basic.ack (multiple or not) or basic.nack. */
static int out_ack(bus_conn_t *c, amqp_channel_t ch, uint64_t tag, int ack, int requeue, int multiple) {
    amqp_basic_ack_t a = {.delivery_tag = tag, .multiple = multiple != 0};
    amqp_basic_nack_t n = {.delivery_tag = tag, .multiple = 0, .requeue = requeue != 0};
    method_arg_t ma = {ack ? AMQP_BASIC_ACK_METHOD : AMQP_BASIC_NACK_METHOD, ack ? (void *)&a : (void *)&n};
    if (out_frame(c, AMQP_FRAME_METHOD, ch, 64, enc_method, &ma) != 0) return -1;
    return c->out.len >= OUT_FLUSH_AT ? out_send(c) : 0;
}

/* ---- ack coalescing -------------------------------------------------------
 *
 * An ack costs the broker a frame to parse and a message between its
 * channel and queue processes; one ack with multiple=1 at the end of a loop
 * turn costs that once for the whole turn (about 10 us of broker CPU per
 * message under load). It may only cover tags that are all finished, and
 * its own tag must still be outstanding (RabbitMQ closes the channel on an
 * unknown tag). So each channel keeps which tags are finished; at the end of
 * a turn the acks of that turn within the finished prefix leave as one
 * multiple ack on the highest of them, and the others (finished out of
 * order, behind a slower message) leave one by one: no ack waits past the
 * turn, so a slow message never holds the prefetch window. Nacks leave at
 * once. Deliveries to no-ack consumers count as finished when they arrive.
 */
static int bit_get(const ack_state_t *a, uint64_t tag) { return a->done[(tag % ACK_WINDOW) / 8] >> (tag % 8) & 1; }
static void bit_set(ack_state_t *a, uint64_t tag, int on) {
    unsigned char *b = &a->done[(tag % ACK_WINDOW) / 8];
    if (on) *b |= (unsigned char)(1u << (tag % 8));
    else *b &= (unsigned char)~(1u << (tag % 8));
}

static void acks_reset(bus_conn_t *c) {
    for (int i = 0; i < ACK_CHANNELS; i++) {
        ack_state_t *a = &c->acks[i];
        free(a->unsent);
        memset(a, 0, sizeof *a);
    }
}

/* Records a finished tag; 0, or -1 when it cannot be tracked. */
static int ack_mark(ack_state_t *a, uint64_t tag) {
    if (a->off || tag <= a->floor) return -1;
    if (tag - a->floor >= ACK_WINDOW) { /* a message unfinished for 65,536 deliveries: stop tracking */
        a->off = 1;
        return -1;
    }
    bit_set(a, tag, 1);
    return 0;
}

/* A delivery arrived; no-ack deliveries are finished at once. */
static void ack_delivered(bus_conn_t *c, amqp_channel_t ch, uint64_t tag, int no_ack) {
    if (no_ack && ch < ACK_CHANNELS) ack_mark(&c->acks[ch], tag);
}

static int ack_finish(bus_conn_t *c, amqp_channel_t ch, uint64_t tag, int ack, int requeue) {
    ack_state_t *a = ch < ACK_CHANNELS ? &c->acks[ch] : NULL;
    if (!a || !ack) {
        if (a) ack_mark(a, tag);
        return out_ack(c, ch, tag, ack, requeue, 0);
    }
    if (ack_mark(a, tag) != 0) return out_ack(c, ch, tag, 1, 0, 0);
    if (a->nunsent == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        uint64_t *u = realloc(a->unsent, cap * sizeof *u);
        if (!u) return out_ack(c, ch, tag, 1, 0, 0);
        a->unsent = u;
        a->cap = cap;
    }
    a->unsent[a->nunsent++] = tag;
    return 0;
}

/* Encodes the acks of this turn (before the turn's frames are written). */
static void acks_flush(bus_conn_t *c) {
    for (amqp_channel_t ch = 0; ch < ACK_CHANNELS && c->amqp; ch++) {
        ack_state_t *a = &c->acks[ch];
        if (!a->nunsent) continue;
        while (bit_get(a, a->floor + 1)) {
            bit_set(a, a->floor + 1, 0);
            a->floor++;
        }
        uint64_t top = 0;
        for (size_t i = 0; i < a->nunsent; i++)
            if (a->unsent[i] <= a->floor && a->unsent[i] > top) top = a->unsent[i];
        size_t n = a->nunsent;
        a->nunsent = 0;
        if (top && out_ack(c, ch, top, 1, 0, 1) != 0) return;
        for (size_t i = 0; i < n && c->amqp; i++)
            if (a->unsent[i] > a->floor && out_ack(c, ch, a->unsent[i], 1, 0, 0) != 0) return;
    }
}

static void on_prepare(uv_prepare_t *p) {
    bus_conn_t *c = p->data;
    if (c->amqp && (amqp_frames_enqueued(c->amqp) || amqp_data_in_buffer(c->amqp))) pump(c);
    acks_flush(c);
    out_send(c);
}

static void on_heartbeat_timer(uv_timer_t *t) {
    bus_conn_t *c = t->data;
    if (!c->amqp) return;
    if (!c->out.stalled) {
        pump(c);
        return;
    }
    uint64_t limit = (uint64_t)c->opts.heartbeat_s * 2000;
    if (!c->blocked && uv_now(c->loop) - c->out.stalled_at > limit)
        teardown(c, BUS_EUNAVAILABLE, "the broker has read nothing for two heartbeat intervals");
}

static void connect_attempt(bus_conn_t *c);

static void on_reconnect_timer(uv_timer_t *t) {
    bus_conn_t *c = t->data;
    if (!c->closing && !c->amqp) connect_attempt(c);
}

/* The i-th URL of a comma-separated list (spaces around entries ignored),
 * copied into out; 0, -1 when the list has fewer entries, -2 when the
 * entry does not fit. One URL is a list of one. */
static int url_at(const char *list, int i, char *out, size_t outlen) {
    const char *p = list;
    for (; i > 0; i--) {
        p = strchr(p, ',');
        if (!p) return -1;
        p++;
    }
    while (*p == ' ') p++;
    size_t n = strcspn(p, ",");
    while (n > 0 && p[n - 1] == ' ') n--;
    if (n >= outlen) return -2;
    memcpy(out, p, n);
    out[n] = 0;
    return 0;
}

int bus_conn_new(uv_loop_t *loop, const bus_conn_options_t *opts, bus_conn_t **out, char *err, size_t errlen) {
    init_metrics();
    const char *list = opts->url ? opts->url : "";
    int nurls = 0;
    for (;; nurls++) { /* every entry must parse: a typo fails now, not at the first failover */
        char one[1024];
        struct amqp_connection_info info;
        int at = url_at(list, nurls, one, sizeof one);
        if (at == -1) break;
        if (at != 0 || amqp_parse_url(one, &info) != AMQP_STATUS_OK) {
            if (at != 0 || url_at(list, nurls, one, sizeof one) != 0) snprintf(one, sizeof one, "%.300s", list);
            char masked[512];
            snprintf(err, errlen, "BUS_AMQP_URL: cannot parse \"%.300s\" (expected amqp://user:pass@host:port/vhost, "
                     "or several of them separated by commas)", bus_url_mask(one, masked, sizeof masked));
            return BUS_EBAD_REQUEST;
        }
    }
    if (nurls == 0) {
        char masked[512];
        snprintf(err, errlen, "BUS_AMQP_URL: cannot parse \"%.300s\"", bus_url_mask(list, masked, sizeof masked));
        return BUS_EBAD_REQUEST;
    }
    bus_conn_t *c = calloc(1, sizeof *c);
    if (!c) return BUS_EINTERNAL;
    c->loop = loop;
    c->opts = *opts;
    c->url = strdup(list);
    c->nurls = nurls;
    c->name = strdup(opts->name ? opts->name : "bus");
    c->opts.url = c->url;
    c->opts.name = c->name;
    if (c->opts.heartbeat_s <= 0) c->opts.heartbeat_s = 10;
    if (c->opts.reconnect_min_ms <= 0) c->opts.reconnect_min_ms = 100;
    if (c->opts.reconnect_max_ms <= 0) c->opts.reconnect_max_ms = 5000;
    c->backoff_ms = c->opts.reconnect_min_ms;
    uv_prepare_init(loop, &c->prepare);
    uv_timer_init(loop, &c->heartbeat_timer);
    uv_timer_init(loop, &c->reconnect_timer);
    c->prepare.data = c->heartbeat_timer.data = c->reconnect_timer.data = c;
    c->handles_open = 3;
    uv_unref((uv_handle_t *)&c->prepare);
    *out = c;
    return 0;
}

uv_loop_t *bus_conn_loop(const bus_conn_t *c) { return c->loop; }

void bus_conn_remove_listener(bus_conn_t *c, void *data) {
    int j = 0;
    for (int i = 0; i < c->nlisteners; i++)
        if (c->listeners[i].data != data) c->listeners[j++] = c->listeners[i];
    c->nlisteners = j;
}

int bus_conn_add_listener(bus_conn_t *c, void (*on_up)(bus_conn_t *, void *),
                          void (*on_down)(bus_conn_t *, int, void *), void *data) {
    if (c->nlisteners == (int)(sizeof c->listeners / sizeof c->listeners[0])) return BUS_EINTERNAL;
    c->listeners[c->nlisteners].on_up = on_up;
    c->listeners[c->nlisteners].on_down = on_down;
    c->listeners[c->nlisteners].data = data;
    c->nlisteners++;
    return 0;
}
int bus_conn_is_up(const bus_conn_t *c) { return c->up; }
const char *bus_conn_blocked(const bus_conn_t *c) { return c->blocked ? c->blocked_reason : NULL; }

/* The blocked state and its gauge (one per blocked connection). */
static void set_blocked(bus_conn_t *c, int on) {
    if (c->blocked == on) return;
    c->blocked = on;
    bus_gauge_add(m_blocked, on ? 1 : -1);
    if (!on) c->blocked_reason[0] = 0;
}
uint64_t bus_conn_generation(const bus_conn_t *c) { return c->generation; }
size_t bus_conn_unconfirmed(const bus_conn_t *c) { return c->unconfirmed; }

static void schedule_reconnect(bus_conn_t *c) {
    if (c->closing) return;
    /* full jitter: a random delay in [backoff/2, backoff], then double */
    int base = c->backoff_ms;
    int delay = base / 2 + (int)(rand() % (base / 2 + 1));
    c->backoff_ms = base * 2 > c->opts.reconnect_max_ms ? c->opts.reconnect_max_ms : base * 2;
    uv_timer_start(&c->reconnect_timer, on_reconnect_timer, (uint64_t)delay, 0);
}

static void on_poll(uv_poll_t *p, int status, int events) {
    bus_conn_t *c = p->data;
    if (!c || !c->amqp || p != c->poll) return;
    if (status < 0) {
        teardown(c, BUS_EUNAVAILABLE, uv_strerror(status));
        return;
    }
    if (c->out.stalled) {
        if (events & UV_DISCONNECT) { /* nothing is read while stalled: this would fire again and again */
            teardown(c, BUS_EUNAVAILABLE, "the broker closed the connection");
            return;
        }
        if (!(events & UV_WRITABLE)) return;
        c->out.stalled = 0; /* try again; out_send stalls anew if it is still full */
        if (out_send(c) != 0 || c->out.stalled) return;
        poll_for(c, 0);
        pump(c); /* what arrived meanwhile */
        return;
    }
    pump(c);
}

static void on_poll_closed(uv_handle_t *h) { free(h); }

/* Opens the socket, logs in, opens the channels. Synchronous, bounded by
 * short timeouts: it runs on the loop only while there is no connection. */
static int open_amqp(bus_conn_t *c, char *err, size_t errlen) {
    struct amqp_connection_info info;
    /* Failover: each attempt takes the next URL of the list, so the
     * reconnect after a lost connection goes to another node first. */
    char *url = malloc(1024);
    if (!url) return BUS_EINTERNAL;
    url_at(c->url, (int)(c->url_next++ % (unsigned)c->nurls), url, 1024);
    amqp_parse_url(url, &info);
    /* "amqp://host:5672/" names the empty vhost in the URI spec, but every
     * user of it means the default vhost "/" */
    if (!info.vhost || !*info.vhost) info.vhost = "/";
    amqp_connection_state_t st = amqp_new_connection();
    amqp_socket_t *sock = st ? amqp_tcp_socket_new(st) : NULL;
    if (!sock) {
        if (st) amqp_destroy_connection(st);
        free(url);
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    struct timeval connect_tv = {2, 0}, rpc_tv = {5, 0};
    amqp_set_handshake_timeout(st, &rpc_tv);
    amqp_set_rpc_timeout(st, &rpc_tv);
    int rc = amqp_socket_open_noblock(sock, info.host, info.port, &connect_tv);
    if (rc != AMQP_STATUS_OK) {
        snprintf(err, errlen, "connect %s:%d: %s", info.host, info.port, amqp_error_string2(rc));
        goto fail;
    }
    /* rabbitmq-c merges these into its own properties, capabilities included:
     * connection.blocked asks the broker to say when a resource alarm stops
     * it reading what we publish (see bus_conn_blocked) */
    amqp_table_entry_t caps_entries[1];
    caps_entries[0].key = amqp_cstring_bytes("connection.blocked");
    caps_entries[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    caps_entries[0].value.value.boolean = 1;
    amqp_table_entry_t props_entries[3];
    props_entries[0].key = amqp_cstring_bytes("connection_name");
    props_entries[0].value.kind = AMQP_FIELD_KIND_UTF8;
    props_entries[0].value.value.bytes = amqp_cstring_bytes(c->name);
    props_entries[1].key = amqp_cstring_bytes("product");
    props_entries[1].value.kind = AMQP_FIELD_KIND_UTF8;
    props_entries[1].value.value.bytes = amqp_cstring_bytes("libbus");
    props_entries[2].key = amqp_cstring_bytes("capabilities");
    props_entries[2].value.kind = AMQP_FIELD_KIND_TABLE;
    props_entries[2].value.value.table = (amqp_table_t){1, caps_entries};
    amqp_table_t props = {3, props_entries};
    amqp_rpc_reply_t r = amqp_login_with_properties(st, info.vhost, 0, 131072, c->opts.heartbeat_s, &props,
                                                    AMQP_SASL_METHOD_PLAIN, info.user, info.password);
    if (!reply_ok(r)) {
        char why[256];
        describe_reply(r, why, sizeof why);
        snprintf(err, errlen, "login to %s:%d: %s", info.host, info.port, why);
        goto fail;
    }
    amqp_channel_open(st, CH);
    r = amqp_get_rpc_reply(st);
    if (!reply_ok(r)) goto fail_reply;
    amqp_confirm_select(st, CH);
    r = amqp_get_rpc_reply(st);
    if (!reply_ok(r)) goto fail_reply;
    if (c->opts.prefetch) {
        amqp_basic_qos(st, CH, 0, c->opts.prefetch, 0);
        r = amqp_get_rpc_reply(st);
        if (!reply_ok(r)) goto fail_reply;
    }
    static const amqp_channel_t unconfirmed[] = {CH_FAST, CH_RPC_IN};
    for (size_t i = 0; i < sizeof unconfirmed / sizeof *unconfirmed; i++) {
        amqp_channel_t ch = unconfirmed[i];
        amqp_channel_open(st, ch);
        r = amqp_get_rpc_reply(st);
        if (!reply_ok(r)) goto fail_reply;
        if (c->opts.prefetch) {
            amqp_basic_qos(st, ch, 0, c->opts.prefetch, 0);
            r = amqp_get_rpc_reply(st);
            if (!reply_ok(r)) goto fail_reply;
        }
    }
    free(url);
    c->amqp = st;
    return 0;
fail_reply : {
    char why[256];
    describe_reply(r, why, sizeof why);
    snprintf(err, errlen, "channel setup: %s", why);
}
fail:
    amqp_destroy_connection(st);
    free(url);
    return BUS_EUNAVAILABLE;
}

static int finish_connect(bus_conn_t *c) {
    c->poll = malloc(sizeof *c->poll);
    if (!c->poll || uv_poll_init(c->loop, c->poll, amqp_get_sockfd(c->amqp)) != 0) {
        free(c->poll);
        c->poll = NULL;
        teardown(c, BUS_EINTERNAL, "uv_poll_init failed");
        return BUS_EINTERNAL;
    }
    c->poll->data = c;
    uv_poll_start(c->poll, UV_READABLE | UV_DISCONNECT, on_poll);
    uv_prepare_start(&c->prepare, on_prepare);
    uint64_t hb_ms = (uint64_t)c->opts.heartbeat_s * 500;
    uv_timer_start(&c->heartbeat_timer, on_heartbeat_timer, hb_ms, hb_ms);
    c->up = 1;
    c->generation++;
    c->next_seq = 1;
    c->admin_channel_open = 0;
    c->backoff_ms = c->opts.reconnect_min_ms;
    bus_counter_inc(m_reconnects, 1);
    uint64_t gen = c->generation;
    if (c->opts.on_up) c->opts.on_up(c, c->opts.data);
    for (int i = 0; i < c->nlisteners && c->amqp && c->generation == gen; i++)
        if (c->listeners[i].on_up) c->listeners[i].on_up(c, c->listeners[i].data);
    /* on_up may have lost the connection again */
    if (!c->amqp || c->generation != gen) return BUS_EUNAVAILABLE;
    pump(c);
    return 0;
}

static void connect_attempt(bus_conn_t *c) {
    char err[512];
    if (open_amqp(c, err, sizeof err) != 0) {
        bus_warn(NULL, "amqp: %s; retrying", err);
        schedule_reconnect(c);
        return;
    }
    bus_info(NULL, "amqp: connected (generation %llu)", (unsigned long long)c->generation + 1);
    finish_connect(c);
}

void bus_conn_start(bus_conn_t *c) {
    if (c->started) return;
    c->started = 1;
    uv_timer_start(&c->reconnect_timer, on_reconnect_timer, 0, 0);
}

int bus_conn_connect_now(bus_conn_t *c, char *err, size_t errlen) {
    c->started = 1;
    int rc = BUS_EUNAVAILABLE;
    for (int i = 0; i < c->nurls && rc != 0; i++) rc = open_amqp(c, err, errlen); /* each URL once */
    if (rc != 0) return BUS_EUNAVAILABLE;
    rc = finish_connect(c);
    if (rc != 0) snprintf(err, errlen, "connection lost during setup");
    return rc;
}

/* ---- asynchronous queue probes ------------------------------------------ */

/* A passive queue.declare answers declare-ok, or closes the channel with 404
 * when the queue does not exist; so probes have a channel of their own, sent
 * one at a time, and the channel is opened again (asynchronously too) after
 * a 404. Their frames go out with the turn's other frames; the answers come
 * through handle_other_frame. */
enum { PROBE_CLOSED, PROBE_OPENING, PROBE_OPEN };

static void probes_kick(bus_conn_t *c) {
    if (!c->amqp || !c->probes.head || c->probes.sent) return;
    if (c->probes.channel == PROBE_OPENING) return;
    if (c->probes.channel == PROBE_CLOSED) {
        amqp_channel_open_t open = {.out_of_band = amqp_empty_bytes};
        method_arg_t m = {AMQP_CHANNEL_OPEN_METHOD, &open};
        if (out_frame(c, AMQP_FRAME_METHOD, CH_PROBE, 64, enc_method, &m) != 0) return;
        c->probes.channel = PROBE_OPENING;
        return;
    }
    amqp_queue_declare_t d = {.queue = amqp_cstring_bytes(c->probes.head->queue), .passive = 1,
                              .arguments = amqp_empty_table};
    method_arg_t m = {AMQP_QUEUE_DECLARE_METHOD, &d};
    if (out_frame(c, AMQP_FRAME_METHOD, CH_PROBE, 512, enc_method, &m) != 0) return;
    c->probes.sent = 1;
}

/* The head's answer: pops it, asks the next one, then calls back. */
static void probes_answer(bus_conn_t *c, int status, uint32_t messages, uint32_t consumers) {
    if (c->probes.discard) {
        c->probes.discard = 0;
        c->probes.sent = 0;
        probes_kick(c);
        return;
    }
    probe_t *p = c->probes.head;
    if (!p || !c->probes.sent) return;
    c->probes.head = p->next;
    if (!c->probes.head) c->probes.tail = NULL;
    c->probes.sent = 0;
    probes_kick(c);
    p->cb(status, messages, consumers, p->data);
    free(p);
}

/* Every waiting probe is answered BUS_EUNAVAILABLE: the connection is gone,
 * or (still_up) the broker blocked it and reads nothing until the alarm
 * clears; then the answer already on the wire is awaited and dropped. */
static void probes_fail(bus_conn_t *c, int still_up) {
    probe_t *p = c->probes.head;
    c->probes.head = c->probes.tail = NULL;
    if (still_up) {
        c->probes.discard = c->probes.sent;
    } else {
        c->probes.channel = PROBE_CLOSED;
        c->probes.sent = c->probes.discard = 0;
    }
    while (p) { /* callbacks may probe again: they get BUS_EUNAVAILABLE at once */
        probe_t *n = p->next;
        p->cb(BUS_EUNAVAILABLE, 0, 0, p->data);
        free(p);
        p = n;
    }
}

int bus_conn_queue_probe(bus_conn_t *c, const char *queue, bus_queue_probe_cb cb, void *data) {
    if (!c->amqp || !c->up || c->blocked) return BUS_EUNAVAILABLE;
    if (strlen(queue) > 255) return BUS_EBAD_REQUEST;
    probe_t *p = calloc(1, sizeof *p);
    if (!p) return BUS_EINTERNAL;
    memcpy(p->queue, queue, strlen(queue) + 1);
    p->cb = cb;
    p->data = data;
    if (c->probes.tail)
        c->probes.tail->next = p;
    else
        c->probes.head = p;
    c->probes.tail = p;
    probes_kick(c);
    return 0;
}

/* Fails every pending confirm and drops the connection. Reconnects later
 * unless closing. Safe to call from inside callbacks: pump() notices that
 * the state it was reading is gone. */
static void teardown(bus_conn_t *c, int err, const char *why) {
    if (!c->amqp) return;
    amqp_connection_state_t st = c->amqp;
    c->amqp = NULL;
    int was_up = c->up;
    c->up = 0;
    if (c->poll) {
        uv_poll_stop(c->poll);
        uv_close((uv_handle_t *)c->poll, on_poll_closed);
        c->poll = NULL;
    }
    uv_prepare_stop(&c->prepare);
    uv_timer_stop(&c->heartbeat_timer);
    if (err == 0) { /* clean close: this turn's acks and frames first */
        c->amqp = st;
        acks_flush(c);
        c->amqp = NULL;
        if (c->out.len) out_write(c, amqp_get_sockfd(st), 1);
    }
    c->out.len = 0;
    c->out.stalled = 0;
    acks_reset(c); /* tags start again at 1 on the next connection */
    if (err == 0) { /* clean close */
        amqp_channel_close(st, CH, AMQP_REPLY_SUCCESS);
        amqp_connection_close(st, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(st);
    while (c->consumers) {
        consumer_t *n = c->consumers->next;
        free(c->consumers);
        c->consumers = n;
    }
    pending_confirm_t *pc = c->confirm_head;
    c->confirm_head = c->confirm_tail = NULL;
    c->unconfirmed = 0;
    while (pc) {
        pending_confirm_t *n = pc->next;
        bus_counter_inc(m_publish_nacked, 1);
        if (pc->cb) pc->cb(BUS_EUNAVAILABLE, pc->data);
        free(pc);
        pc = n;
    }
    probes_fail(c, 0);
    set_blocked(c, 0);
    if (err != 0) {
        bus_counter_inc(m_conn_lost, 1);
        bus_warn(NULL, "amqp: connection lost: %s", why ? why : bus_strerror(err));
    }
    if (was_up) {
        if (c->opts.on_down) c->opts.on_down(c, err ? err : BUS_EUNAVAILABLE, c->opts.data);
        for (int i = 0; i < c->nlisteners; i++)
            if (c->listeners[i].on_down) c->listeners[i].on_down(c, err ? err : BUS_EUNAVAILABLE, c->listeners[i].data);
    }
    if (err != 0) schedule_reconnect(c);
}

void bus_conn_drop(bus_conn_t *c, const char *why) { teardown(c, BUS_EUNAVAILABLE, why); }

void bus_conn_close(bus_conn_t *c, void (*cb)(void *), void *data) {
    if (c->closing) return;
    c->closing = 1;
    c->close_cb = cb;
    c->close_data = data;
    teardown(c, 0, NULL);
    uv_close((uv_handle_t *)&c->prepare, on_handle_closed);
    uv_close((uv_handle_t *)&c->heartbeat_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->reconnect_timer, on_handle_closed);
}

/* ---- confirms ----------------------------------------------------------- */

static void complete_confirms(bus_conn_t *c, uint64_t tag, int multiple, int status) {
    pending_confirm_t **pp = &c->confirm_head, *prev = NULL;
    /* collect the completed entries first: callbacks may publish */
    pending_confirm_t *done = NULL, **done_tail = &done;
    while (*pp) {
        pending_confirm_t *pc = *pp;
        if (pc->seq > tag) break;
        if (multiple || pc->seq == tag) {
            *pp = pc->next;
            if (c->confirm_tail == pc) c->confirm_tail = prev;
            pc->next = NULL;
            *done_tail = pc;
            done_tail = &pc->next;
            c->unconfirmed--;
            if (!multiple) break;
        } else {
            prev = pc;
            pp = &pc->next;
        }
    }
    uint64_t gen = c->generation;
    while (done) {
        pending_confirm_t *n = done->next;
        int st = status;
        if (st == 0 && done->returned) st = BUS_ENOT_FOUND;
        if (st == BUS_ENOT_FOUND) bus_counter_inc(m_returned, 1);
        else if (st != 0) bus_counter_inc(m_publish_nacked, 1);
        /* a teardown inside a callback already failed nothing of ours: these
         * entries were unlinked, so finish them all with their outcome */
        (void)gen;
        if (done->cb) done->cb(st, done->data);
        free(done);
        done = n;
    }
}

static void mark_returned(bus_conn_t *c, amqp_basic_properties_t *p) {
    if (!(p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)) return;
    for (pending_confirm_t *pc = c->confirm_head; pc; pc = pc->next) {
        if (!pc->returned && strlen(pc->message_id) == p->message_id.len &&
            memcmp(pc->message_id, p->message_id.bytes, p->message_id.len) == 0) {
            pc->returned = 1;
            return;
        }
    }
}

/* ---- deliveries --------------------------------------------------------- */

static size_t header_value_text(const amqp_field_value_t *v, char *buf, size_t cap) {
    switch (v->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
        size_t n = v->value.bytes.len < cap - 1 ? v->value.bytes.len : cap - 1;
        if (n) memcpy(buf, v->value.bytes.bytes, n);
        buf[n] = '\0';
        return n;
    }
    case AMQP_FIELD_KIND_I8: return (size_t)snprintf(buf, cap, "%d", v->value.i8);
    case AMQP_FIELD_KIND_U8: return (size_t)snprintf(buf, cap, "%u", v->value.u8);
    case AMQP_FIELD_KIND_I16: return (size_t)snprintf(buf, cap, "%d", v->value.i16);
    case AMQP_FIELD_KIND_U16: return (size_t)snprintf(buf, cap, "%u", v->value.u16);
    case AMQP_FIELD_KIND_I32: return (size_t)snprintf(buf, cap, "%d", v->value.i32);
    case AMQP_FIELD_KIND_U32: return (size_t)snprintf(buf, cap, "%u", v->value.u32);
    case AMQP_FIELD_KIND_I64: return (size_t)snprintf(buf, cap, "%lld", (long long)v->value.i64);
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: return (size_t)snprintf(buf, cap, "%llu", (unsigned long long)v->value.u64);
    case AMQP_FIELD_KIND_BOOLEAN: return (size_t)snprintf(buf, cap, "%s", v->value.boolean ? "true" : "false");
    default: buf[0] = '\0'; return 0;
    }
}

/* Copies an envelope into one allocation the consumer owns. */
static bus_msg_t *msg_from_envelope(bus_conn_t *c, amqp_envelope_t *e) {
    amqp_basic_properties_t *p = &e->message.properties;
    amqp_bytes_t empty = {0, NULL};
#define PROP(flag, field) ((p->_flags & (flag)) ? p->field : empty)
    amqp_bytes_t strs[] = {
        e->exchange,
        e->routing_key,
        e->consumer_tag,
        PROP(AMQP_BASIC_CONTENT_TYPE_FLAG, content_type),
        PROP(AMQP_BASIC_MESSAGE_ID_FLAG, message_id),
        PROP(AMQP_BASIC_CORRELATION_ID_FLAG, correlation_id),
        PROP(AMQP_BASIC_REPLY_TO_FLAG, reply_to),
        PROP(AMQP_BASIC_TYPE_FLAG, type),
        e->message.body,
    };
#undef PROP
    enum { NSTR = sizeof strs / sizeof strs[0] };
    size_t nheaders = (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? (size_t)p->headers.num_entries : 0;
    size_t size = sizeof(bus_msg_t) + nheaders * sizeof(bus_header_t);
    for (size_t i = 0; i < NSTR; i++) size += strs[i].len + 1;
    /* header keys and values; non-string values are rendered (at most 32 chars) */
    for (size_t i = 0; i < nheaders; i++) {
        amqp_table_entry_t *h = &p->headers.entries[i];
        size += h->key.len + 1;
        if (h->value.kind == AMQP_FIELD_KIND_UTF8 || h->value.kind == AMQP_FIELD_KIND_BYTES)
            size += h->value.value.bytes.len + 1;
        else
            size += 33;
    }
    bus_msg_t *m = malloc(size);
    if (!m) return NULL;
    memset(m, 0, sizeof *m);
    char *cursor = (char *)(m + 1) + nheaders * sizeof(bus_header_t);
    const char **targets[] = {&m->exchange, &m->routing_key,    &m->consumer_tag, &m->content_type, &m->message_id,
                              &m->correlation_id, &m->reply_to, &m->type,         &m->body};
    for (size_t i = 0; i < NSTR; i++) {
        if (strs[i].len) memcpy(cursor, strs[i].bytes, strs[i].len);
        cursor[strs[i].len] = '\0';
        *targets[i] = cursor;
        cursor += strs[i].len + 1;
    }
    m->len = e->message.body.len;
    m->headers = nheaders ? (bus_header_t *)(m + 1) : NULL;
    m->nheaders = nheaders;
    for (size_t i = 0; i < nheaders; i++) {
        amqp_table_entry_t *h = &p->headers.entries[i];
        bus_header_t *out = &m->headers[i];
        if (h->key.len) memcpy(cursor, h->key.bytes, h->key.len);
        cursor[h->key.len] = '\0';
        out->key = cursor;
        out->key_len = h->key.len;
        cursor += h->key.len + 1;
        size_t cap = (h->value.kind == AMQP_FIELD_KIND_UTF8 || h->value.kind == AMQP_FIELD_KIND_BYTES)
                         ? h->value.value.bytes.len + 1
                         : 33;
        out->value_len = header_value_text(&h->value, cursor, cap);
        out->value = cursor;
        cursor += cap;
    }
    m->conn = c;
    m->channel = e->channel;
    m->delivery_tag = e->delivery_tag;
    m->generation = c->generation;
    m->redelivered = e->redelivered;
    m->timestamp = (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) ? (int64_t)p->timestamp : 0;
    if ((p->_flags & AMQP_BASIC_EXPIRATION_FLAG) && p->expiration.len > 0 && p->expiration.len < 20) {
        const char *x = p->expiration.bytes; /* a decimal string of milliseconds */
        int64_t ttl = 0;
        size_t i = 0;
        while (i < p->expiration.len && x[i] >= '0' && x[i] <= '9') ttl = ttl * 10 + (x[i++] - '0');
        if (i == p->expiration.len) m->expiration_ms = ttl;
    }
    return m;
}

static consumer_t *find_consumer(bus_conn_t *c, const char *tag, size_t len) {
    for (consumer_t *k = c->consumers; k; k = k->next)
        if (strlen(k->tag) == len && memcmp(k->tag, tag, len) == 0) return k;
    return NULL;
}

static void remove_consumer(bus_conn_t *c, const char *tag, size_t len) {
    for (consumer_t **pp = &c->consumers; *pp; pp = &(*pp)->next) {
        if (strlen((*pp)->tag) == len && memcmp((*pp)->tag, tag, len) == 0) {
            consumer_t *k = *pp;
            *pp = k->next;
            free(k);
            return;
        }
    }
}

/* Handles a frame that is not a delivery: confirms, returns, closes, cancels. */
static int handle_other_frame(bus_conn_t *c, amqp_connection_state_t st) {
    amqp_frame_t frame;
    struct timeval zero = {0, 0};
    int rc = amqp_simple_wait_frame_noblock(st, &frame, &zero);
    if (rc == AMQP_STATUS_TIMEOUT) return 1; /* nothing after all */
    if (rc != AMQP_STATUS_OK) {
        teardown(c, BUS_EUNAVAILABLE, amqp_error_string2(rc));
        return -1;
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) return 0; /* stray header/body: ignore */
    switch (frame.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *a = frame.payload.method.decoded;
        complete_confirms(c, a->delivery_tag, a->multiple, 0);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *a = frame.payload.method.decoded;
        complete_confirms(c, a->delivery_tag, a->multiple, BUS_EUNAVAILABLE);
        return 0;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t message;
        amqp_rpc_reply_t r = amqp_read_message(st, frame.channel, &message, 0);
        if (!reply_ok(r)) {
            teardown(c, BUS_EUNAVAILABLE, "reading a returned message failed");
            return -1;
        }
        if (frame.channel == CH_FAST) {
            char mid[128] = "", corr[128] = "";
            amqp_basic_properties_t *p = &message.properties;
            if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
                snprintf(mid, sizeof mid, "%.*s", (int)p->message_id.len, (char *)p->message_id.bytes);
            if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
                snprintf(corr, sizeof corr, "%.*s", (int)p->correlation_id.len, (char *)p->correlation_id.bytes);
            amqp_destroy_message(&message);
            bus_counter_inc(m_returned, 1);
            if (c->on_return) c->on_return(mid, corr, c->on_return_data);
            return 0;
        }
        mark_returned(c, &message.properties);
        amqp_destroy_message(&message);
        return 0;
    }
    case AMQP_BASIC_CANCEL_METHOD: {
        amqp_basic_cancel_t *m = frame.payload.method.decoded;
        bus_warn(NULL, "amqp: broker cancelled consumer %.*s (queue deleted?)", (int)m->consumer_tag.len,
                 (char *)m->consumer_tag.bytes);
        remove_consumer(c, m->consumer_tag.bytes, m->consumer_tag.len);
        return 0;
    }
    case AMQP_CHANNEL_OPEN_OK_METHOD:
        if (frame.channel == CH_PROBE) {
            c->probes.channel = PROBE_OPEN;
            probes_kick(c);
        }
        return 0;
    case AMQP_QUEUE_DECLARE_OK_METHOD:
        if (frame.channel == CH_PROBE) {
            amqp_queue_declare_ok_t *ok = frame.payload.method.decoded;
            probes_answer(c, 0, ok->message_count, ok->consumer_count);
            return c->amqp == st ? 0 : -1;
        }
        return 0;
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *m = frame.payload.method.decoded;
        char why[300];
        snprintf(why, sizeof why, "broker closed channel %u: %u %.*s", frame.channel, m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
        if (frame.channel == CH_PROBE) { /* after our frames of this turn, which it ignores now */
            amqp_channel_close_ok_t ok = {0};
            method_arg_t cm = {AMQP_CHANNEL_CLOSE_OK_METHOD, &ok};
            if (out_frame(c, AMQP_FRAME_METHOD, CH_PROBE, 16, enc_method, &cm) != 0) {
                teardown(c, BUS_EUNAVAILABLE, "out of memory");
                return -1;
            }
            c->probes.channel = PROBE_CLOSED;
            probes_answer(c, m->reply_code == AMQP_NOT_FOUND ? BUS_ENOT_FOUND : BUS_EINTERNAL, 0, 0);
            return c->amqp == st ? 0 : -1;
        }
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(st, frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        if (frame.channel == CH_ADMIN) {
            c->admin_channel_open = 0;
            return 0;
        }
        teardown(c, BUS_EUNAVAILABLE, why);
        return -1;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD: {
        amqp_connection_blocked_t *m = frame.payload.method.decoded;
        snprintf(c->blocked_reason, sizeof c->blocked_reason, "%.*s", (int)m->reason.len, (char *)m->reason.bytes);
        if (!c->blocked) {
            set_blocked(c, 1);
            bus_warn(NULL, "amqp: the broker blocked this connection (%s): it reads nothing we publish until "
                           "the alarm clears", c->blocked_reason);
            probes_fail(c, 1); /* their answers wait for the alarm to clear */
        }
        return c->amqp == st ? 0 : -1;
    }
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        if (c->blocked) bus_info(NULL, "amqp: the broker unblocked this connection");
        set_blocked(c, 0);
        return 0;
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *m = frame.payload.method.decoded;
        char why[300];
        snprintf(why, sizeof why, "broker closed the connection: %u %.*s", m->reply_code, (int)m->reply_text.len,
                 (char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        teardown(c, BUS_EUNAVAILABLE, why);
        return -1;
    }
    default: return 0;
    }
}

/* Reads and dispatches everything that is readable or already buffered,
 * never waiting. Only the first round may read the socket: once what one
 * recv() brought is used up, the next recv() would almost always be an
 * EAGAIN followed by rabbitmq-c's zero-timeout poll(), two wasted system
 * calls per loop turn. Anything that arrives later makes the socket
 * readable again (level-triggered), so nothing is left behind. */
static void pump(bus_conn_t *c) {
    if (c->pumping || !c->amqp || c->out.stalled) return; /* stalled: see out_send */
    c->pumping = 1;
    amqp_connection_state_t st = c->amqp;
    struct timeval zero = {0, 0};
    for (int rounds = 0; rounds < 4096 && c->amqp == st; rounds++) {
        if (rounds > 0 && !amqp_frames_enqueued(st) && !amqp_data_in_buffer(st)) break;
        amqp_envelope_t e;
        amqp_maybe_release_buffers(st);
#ifdef __GLIBC__
        if (c->trim_pending && !amqp_frames_enqueued(st) && !amqp_data_in_buffer(st)) {
            c->trim_pending = 0;
            malloc_trim(0);
        }
#endif
        amqp_rpc_reply_t r = amqp_consume_message(st, &e, &zero, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            bus_msg_t *m = msg_from_envelope(c, &e);
            if (e.message.body.len >= MSG_TRIM_BYTES) c->trim_pending = 1;
            consumer_t *k = find_consumer(c, e.consumer_tag.bytes, e.consumer_tag.len);
            uint64_t tag = e.delivery_tag;
            amqp_channel_t channel = e.channel;
            amqp_destroy_envelope(&e);
            ack_delivered(c, channel, tag, k && k->no_ack);
            if (!m) {
                if (!(k && k->no_ack)) ack_finish(c, channel, tag, 0, 1);
                continue;
            }
            if (k) {
                k->cb(m, k->data);
            } else if (bus_msg_header(m, "x-stream-offset")) {
                /* a late delivery of a cancelled stream consumer: a stream
                 * cannot take a message back (the broker closes the
                 * connection on a reject), and the ack is only credit */
                bus_msg_ack(m);
            } else {
                bus_msg_reject(m, 1);
            }
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) break;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            int rc = handle_other_frame(c, st);
            if (rc != 0) break;
            continue;
        }
        char why[256];
        describe_reply(r, why, sizeof why);
        teardown(c, BUS_EUNAVAILABLE, why);
        break;
    }
    /* more buffered than one round's worth: let prepare continue next turn */
    c->pumping = 0;
}

/* ---- synchronous topology ---------------------------------------------- */

static int check_rpc(bus_conn_t *c, const char *what) {
    if (!c->amqp) return BUS_EUNAVAILABLE;
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->amqp);
    if (reply_ok(r)) return 0;
    char why[256];
    describe_reply(r, why, sizeof why);
    char msg[400];
    snprintf(msg, sizeof msg, "%s: %s", what, why);
    teardown(c, BUS_EUNAVAILABLE, msg);
    return BUS_EUNAVAILABLE;
}

int bus_conn_declare_exchange(bus_conn_t *c, const char *name, const char *type) {
    if (!c->amqp) return BUS_EUNAVAILABLE;
    if (out_flush(c) != 0) return BUS_EUNAVAILABLE;
    amqp_exchange_declare(c->amqp, CH, amqp_cstring_bytes(name), amqp_cstring_bytes(type), 0, 1, 0, 0,
                          amqp_empty_table);
    return check_rpc(c, name);
}

/* The queue argument table of o, in entries (8 slots). Returns its size. */
static int queue_args(const bus_queue_options_t *o, amqp_table_entry_t *entries) {
    int n = 0;
    if (o->queue_type && strcmp(o->queue_type, "classic") != 0) {
        entries[n].key = amqp_cstring_bytes("x-queue-type");
        entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[n++].value.value.bytes = amqp_cstring_bytes(o->queue_type);
    }
    if (o->message_ttl_ms > 0) {
        entries[n].key = amqp_cstring_bytes("x-message-ttl");
        entries[n].value.kind = AMQP_FIELD_KIND_I64;
        entries[n++].value.value.i64 = o->message_ttl_ms;
    }
    if (o->dead_letter_exchange) {
        entries[n].key = amqp_cstring_bytes("x-dead-letter-exchange");
        entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[n++].value.value.bytes = amqp_cstring_bytes(o->dead_letter_exchange);
    }
    if (o->dead_letter_key) {
        entries[n].key = amqp_cstring_bytes("x-dead-letter-routing-key");
        entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[n++].value.value.bytes = amqp_cstring_bytes(o->dead_letter_key);
    }
    if (o->max_age) {
        entries[n].key = amqp_cstring_bytes("x-max-age");
        entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[n++].value.value.bytes = amqp_cstring_bytes(o->max_age);
    }
    if (o->max_length_bytes > 0) {
        entries[n].key = amqp_cstring_bytes("x-max-length-bytes");
        entries[n].value.kind = AMQP_FIELD_KIND_I64;
        entries[n++].value.value.i64 = o->max_length_bytes;
    }
    if (o->max_length > 0) {
        entries[n].key = amqp_cstring_bytes("x-max-length");
        entries[n].value.kind = AMQP_FIELD_KIND_I64;
        entries[n++].value.value.i64 = o->max_length;
    }
    if (o->overflow) {
        entries[n].key = amqp_cstring_bytes("x-overflow");
        entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[n++].value.value.bytes = amqp_cstring_bytes(o->overflow);
    }
    return n;
}

int bus_conn_declare_queue(bus_conn_t *c, const char *name, const bus_queue_options_t *o) {
    return bus_conn_declare_queue_named(c, name, o, NULL, 0);
}

int bus_conn_declare_queue_named(bus_conn_t *c, const char *name, const bus_queue_options_t *o, char *name_out,
                                 size_t name_len) {
    if (!c->amqp) return BUS_EUNAVAILABLE;
    if (out_flush(c) != 0) return BUS_EUNAVAILABLE;
    amqp_table_entry_t entries[8];
    int n = queue_args(o, entries);
    amqp_table_t args = {n, entries};
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c->amqp, CH, amqp_cstring_bytes(name), 0, o->durable, o->exclusive, o->auto_delete, args);
    int rc = check_rpc(c, *name ? name : "server-named queue");
    if (rc == 0 && name_out && name_len) {
        if (!ok || ok->queue.len >= name_len) return BUS_EINTERNAL;
        memcpy(name_out, ok->queue.bytes, ok->queue.len);
        name_out[ok->queue.len] = '\0';
    }
    return rc;
}

int bus_conn_set_prefetch(bus_conn_t *c, uint16_t prefetch) {
    if (!c->amqp) return BUS_EUNAVAILABLE;
    if (out_flush(c) != 0) return BUS_EUNAVAILABLE;
    amqp_basic_qos(c->amqp, CH, 0, prefetch, 0);
    return check_rpc(c, "basic.qos");
}

int bus_conn_bind(bus_conn_t *c, const char *queue, const char *exchange, const char *key) {
    if (!c->amqp) return BUS_EUNAVAILABLE;
    if (out_flush(c) != 0) return BUS_EUNAVAILABLE;
    amqp_queue_bind(c->amqp, CH, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange), amqp_cstring_bytes(key),
                    amqp_empty_table);
    return check_rpc(c, queue);
}

/* Starts a consumer on a channel and remembers which callback it feeds. */
static int start_consumer(bus_conn_t *c, amqp_channel_t channel, const char *queue, int no_ack, int exclusive,
                          amqp_table_t args, bus_msg_cb cb, void *data, char *tag_out, size_t tag_len) {
    if (!c->amqp) return BUS_EUNAVAILABLE;
    if (out_flush(c) != 0) return BUS_EUNAVAILABLE;
    amqp_basic_consume_ok_t *ok =
        amqp_basic_consume(c->amqp, channel, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, no_ack, exclusive, args);
    int rc = check_rpc(c, queue);
    if (rc != 0 || !ok) return BUS_EUNAVAILABLE;
    consumer_t *k = calloc(1, sizeof *k);
    if (!k) return BUS_EINTERNAL;
    snprintf(k->tag, sizeof k->tag, "%.*s", (int)ok->consumer_tag.len, (char *)ok->consumer_tag.bytes);
    k->channel = channel;
    k->no_ack = no_ack;
    k->cb = cb;
    k->data = data;
    k->next = c->consumers;
    c->consumers = k;
    if (tag_out) snprintf(tag_out, tag_len, "%s", k->tag);
    return 0;
}

int bus_conn_consume(bus_conn_t *c, const char *queue, int no_ack, int exclusive, amqp_table_t args, bus_msg_cb cb,
                     void *data, char *tag_out, size_t tag_len) {
    return start_consumer(c, CH, queue, no_ack, exclusive, args, cb, data, tag_out, tag_len);
}

int bus_conn_consume_fast(bus_conn_t *c, const char *queue, int no_ack, bus_msg_cb cb, void *data, char *tag_out,
                          size_t tag_len) {
    amqp_channel_t ch = no_ack ? CH_FAST : CH_RPC_IN;
    return start_consumer(c, ch, queue, no_ack, 0, amqp_empty_table, cb, data, tag_out, tag_len);
}

void bus_conn_set_return_handler(bus_conn_t *c, void (*cb)(const char *, const char *, void *), void *data) {
    c->on_return = cb;
    c->on_return_data = data;
}

int bus_conn_cancel(bus_conn_t *c, const char *tag) {
    if (!c->amqp) return BUS_EUNAVAILABLE;
    if (out_flush(c) != 0) return BUS_EUNAVAILABLE;
    consumer_t *k = find_consumer(c, tag, strlen(tag));
    amqp_basic_cancel(c->amqp, k ? (amqp_channel_t)k->channel : CH, amqp_cstring_bytes(tag));
    int rc = check_rpc(c, "basic.cancel");
    if (c->amqp) remove_consumer(c, tag, strlen(tag));
    return rc;
}

static int open_admin_channel(bus_conn_t *c) {
    if (out_flush(c) != 0) return BUS_EUNAVAILABLE;
    if (c->admin_channel_open) return 0;
    amqp_channel_open(c->amqp, CH_ADMIN);
    if (check_rpc(c, "admin channel") != 0) return BUS_EUNAVAILABLE;
    c->admin_channel_open = 1;
    return 0;
}

int bus_conn_delete_queue(bus_conn_t *c, const char *queue) {
    if (!c->amqp || open_admin_channel(c) != 0) return BUS_EUNAVAILABLE;
    amqp_queue_delete(c->amqp, CH_ADMIN, amqp_cstring_bytes(queue), 0, 0);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->amqp);
    if (reply_ok(r)) return 0;
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t close_ok = {0};
        amqp_send_method(c->amqp, CH_ADMIN, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
        c->admin_channel_open = 0;
        return 0;
    }
    teardown(c, BUS_EUNAVAILABLE, "queue.delete failed");
    return BUS_EUNAVAILABLE;
}

int bus_conn_queue_info(bus_conn_t *c, const char *queue, uint32_t *messages, uint32_t *consumers) {
    if (!c->amqp || open_admin_channel(c) != 0) return BUS_EUNAVAILABLE;
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c->amqp, CH_ADMIN, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->amqp);
    if (reply_ok(r) && ok) {
        if (messages) *messages = ok->message_count;
        if (consumers) *consumers = ok->consumer_count;
        return 0;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t close_ok = {0};
        amqp_send_method(c->amqp, CH_ADMIN, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
        c->admin_channel_open = 0;
        amqp_channel_close_t *m = r.reply.decoded;
        return m->reply_code == AMQP_NOT_FOUND ? BUS_ENOT_FOUND : BUS_EINTERNAL;
    }
    char why[256];
    describe_reply(r, why, sizeof why);
    teardown(c, BUS_EUNAVAILABLE, why);
    return BUS_EUNAVAILABLE;
}

/* On the admin channel, so that a refusal closes only that channel. */
int bus_conn_declare_queue_try(bus_conn_t *c, const char *name, const bus_queue_options_t *o) {
    if (!c->amqp || open_admin_channel(c) != 0) return BUS_EUNAVAILABLE;
    amqp_table_entry_t entries[8];
    int n = queue_args(o, entries);
    amqp_table_t args = {n, entries};
    amqp_queue_declare(c->amqp, CH_ADMIN, amqp_cstring_bytes(name), 0, o->durable, o->exclusive, o->auto_delete, args);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->amqp);
    if (reply_ok(r)) return 0;
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t close_ok = {0};
        amqp_send_method(c->amqp, CH_ADMIN, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
        c->admin_channel_open = 0;
        amqp_channel_close_t *m = r.reply.decoded;
        return m->reply_code == AMQP_PRECONDITION_FAILED ? BUS_ECONFLICT : BUS_EINTERNAL;
    }
    char why[256];
    describe_reply(r, why, sizeof why);
    teardown(c, BUS_EUNAVAILABLE, why);
    return BUS_EUNAVAILABLE;
}

/* ---- publish and ack ---------------------------------------------------- */

static void set_prop(amqp_basic_properties_t *props, amqp_flags_t flag, amqp_bytes_t *field, const char *value) {
    if (!value) return;
    props->_flags |= flag;
    *field = amqp_cstring_bytes(value);
}

int bus_conn_publish(bus_conn_t *c, const bus_publish_t *p, bus_publish_cb cb, void *data) {
    if (!c->amqp || !c->up) return BUS_EUNAVAILABLE;
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    set_prop(&props, AMQP_BASIC_CONTENT_TYPE_FLAG, &props.content_type, p->content_type);
    set_prop(&props, AMQP_BASIC_MESSAGE_ID_FLAG, &props.message_id, p->message_id);
    set_prop(&props, AMQP_BASIC_CORRELATION_ID_FLAG, &props.correlation_id, p->correlation_id);
    set_prop(&props, AMQP_BASIC_REPLY_TO_FLAG, &props.reply_to, p->reply_to);
    set_prop(&props, AMQP_BASIC_TYPE_FLAG, &props.type, p->type);
    set_prop(&props, AMQP_BASIC_EXPIRATION_FLAG, &props.expiration, p->expiration_ms);
    /* Events carry their time and delivery mode; RPC traffic (unconfirmed)
     * carries only what it needs: every property costs the broker and the
     * receiver a decode, and a missing delivery_mode means transient. */
    if (p->timestamp || !p->unconfirmed) {
        props._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
        props.timestamp = (uint64_t)(p->timestamp ? p->timestamp : (int64_t)time(NULL));
    }
    if (p->persistent || !p->unconfirmed) {
        props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
        props.delivery_mode = p->persistent ? AMQP_DELIVERY_PERSISTENT : AMQP_DELIVERY_NONPERSISTENT;
    }
    amqp_table_entry_t entries[33];
    size_t n = 0;
    for (size_t i = 0; i < p->nheaders && n < 32; i++) {
        entries[n].key = (amqp_bytes_t){p->headers[i].key_len, (void *)p->headers[i].key};
        entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[n++].value.value.bytes = (amqp_bytes_t){p->headers[i].value_len, (void *)p->headers[i].value};
    }
    if (p->int_header_key) {
        entries[n].key = amqp_cstring_bytes(p->int_header_key);
        entries[n].value.kind = AMQP_FIELD_KIND_I64;
        entries[n++].value.value.i64 = p->int_header_value;
    }
    if (n) {
        props._flags |= AMQP_BASIC_HEADERS_FLAG;
        props.headers.num_entries = (int)n;
        props.headers.entries = entries;
    }
    amqp_bytes_t body = {p->len, (void *)p->body};
    amqp_bytes_t exchange = amqp_cstring_bytes(p->exchange ? p->exchange : "");
    amqp_bytes_t key = amqp_cstring_bytes(p->routing_key ? p->routing_key : "");
    if (p->unconfirmed) {
        if (out_publish(c, CH_FAST, exchange, key, p->mandatory, &props, body) != 0) {
            if (c->amqp) teardown(c, BUS_EUNAVAILABLE, "publish: cannot encode the message");
            return BUS_EUNAVAILABLE;
        }
        bus_counter_inc(m_published, 1);
        return 0;
    }
    pending_confirm_t *pc = calloc(1, sizeof *pc);
    if (!pc) return BUS_EINTERNAL;
    if (out_publish(c, CH, exchange, key, p->mandatory, &props, body) != 0) {
        free(pc);
        if (c->amqp) teardown(c, BUS_EUNAVAILABLE, "publish: cannot encode the message");
        return BUS_EUNAVAILABLE;
    }
    bus_counter_inc(m_published, 1);
    pc->seq = c->next_seq++;
    pc->cb = cb;
    pc->data = data;
    if (p->message_id) snprintf(pc->message_id, sizeof pc->message_id, "%s", p->message_id);
    if (c->confirm_tail) c->confirm_tail->next = pc;
    else c->confirm_head = pc;
    c->confirm_tail = pc;
    c->unconfirmed++;
    return 0;
}

static void finish_msg(bus_msg_t *m, int ack, int requeue) {
    bus_conn_t *c = m->conn;
    if (c && c->amqp && c->generation == m->generation) {
        amqp_channel_t ch = m->channel ? (amqp_channel_t)m->channel : CH;
        if (ack_finish(c, ch, m->delivery_tag, ack, requeue) != 0 && c->amqp)
            teardown(c, BUS_EUNAVAILABLE, "ack: cannot encode");
    }
    bus_msg_free(m);
}

void bus_msg_ack(bus_msg_t *m) { finish_msg(m, 1, 0); }
void bus_msg_reject(bus_msg_t *m, int requeue) { finish_msg(m, 0, requeue); }
/* A large body was one allocation of its own: after freeing it, hand the
 * free memory at the top of the heap back to the system, so that the
 * resident size goes back down after a large message (glibc keeps it
 * otherwise, and raises its mmap threshold after freeing a large mmap). */
void bus_msg_free(bus_msg_t *m) {
    if (!m) return;
    int large = m->len >= MSG_TRIM_BYTES;
    free(m);
#ifdef __GLIBC__
    if (large) malloc_trim(0);
#endif
}

const char *bus_msg_header(const bus_msg_t *m, const char *key) {
    for (size_t i = 0; i < m->nheaders; i++)
        if (strcmp(m->headers[i].key, key) == 0) return m->headers[i].value;
    return NULL;
}
