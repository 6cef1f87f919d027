/* The worker skeleton's hooks against the real broker: timers and the
 * SIGTERM drain, the on_up hook on every connect, extra consumers (stream
 * offsets, resuming after a reconnect, classic queues with bindings,
 * server-named queues, per-consumer prefetch), and the domain workers that
 * use them (bus-audit, bus-events).
 *
 * Each test worker runs in a child (bt_spawn_worker) and reports what its
 * callbacks see as lines on a pipe ("tick 2", "stream first 3 m3"); the
 * test reads them in order.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"
#include "bus/topology.h"

/* ---- the report pipe ---------------------------------------------------- */

static int report_fd = -1; /* the child's write end */

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(report_fd, line, (size_t)n); /* one write under PIPE_BUF: never interleaved */
    (void)w;
}

/* Reads one line (without '\n') within timeout_ms: 0, or -1 on timeout/EOF. */
static int read_line(int fd, char *buf, size_t len, int timeout_ms) {
    size_t n = 0;
    double end = bt_now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(end - bt_now_ms());
        if (left <= 0) return -1;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        char ch;
        ssize_t got = read(fd, &ch, 1);
        if (got <= 0) return -1;
        if (ch == '\n') {
            buf[n] = '\0';
            return 0;
        }
        if (n + 1 < len) buf[n++] = ch;
    }
}

/* Reads lines until one starts with `prefix` (copied into buf); lines
 * before it are appended to `seen` (may be NULL). 0 or -1. */
static int wait_line(int fd, const char *prefix, char *buf, size_t len, int timeout_ms, char *seen, size_t seen_len) {
    double end = bt_now_ms() + timeout_ms;
    while (bt_now_ms() < end) {
        if (read_line(fd, buf, len, (int)(end - bt_now_ms()) + 1) != 0) return -1;
        if (strncmp(buf, prefix, strlen(prefix)) == 0) return 0;
        if (seen) {
            size_t used = strlen(seen);
            snprintf(seen + used, seen_len - used, "%s\n", buf);
        }
    }
    return -1;
}

static int count_lines(const char *text, const char *prefix) {
    int n = 0;
    size_t plen = strlen(prefix);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, plen) == 0) n++;
        p = strchr(p, '\n');
        if (p) p++;
    }
    return n;
}

/* A pipe whose write end the worker child inherits as report_fd. */
static int open_reports(void) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    report_fd = fds[1];
    return fds[0];
}

/* After the fork: the parent keeps only the read end, so EOF means the child is gone. */
static void parent_side(void) {
    close(report_fd);
    report_fd = -1;
}

static const char *const worker_env[] = {"BUS_DRAIN_MS=20000", "BUS_HEARTBEAT_S=2", NULL};

/* ---- timers and the drain ------------------------------------------------ */

static int go_fd = -1; /* read end: the test ends the in-flight work by writing a byte */
static uv_poll_t work_poll;
static bus_worker_timer_t *never_timer, *self_timer, *held_timer;

static void on_never(bus_worker_timer_t *t, void *data) {
    (void)t;
    (void)data;
    report("never");
}

static int self_fired;
static void on_self(bus_worker_timer_t *t, void *data) {
    (void)data;
    report("self %d", ++self_fired);
    if (self_fired == 3) bus_worker_timer_stop(t); /* from its own callback */
}

static void on_once(bus_worker_timer_t *t, void *data) {
    (void)t;
    (void)data;
    report("once");
}

static void on_go(uv_poll_t *p, int status, int events) {
    (void)status;
    (void)events;
    bus_worker_t *w = p->data;
    char b;
    ssize_t r = read(go_fd, &b, 1);
    (void)r;
    uv_poll_stop(p);
    uv_close((uv_handle_t *)p, NULL);
    report("done");
    bus_worker_work_end(w);
}

/* Every 100 ms; the second tick starts asynchronous work (waiting for the
 * test's go byte), marks it in flight, and sends this process SIGTERM. */
static void on_tick(bus_worker_timer_t *t, void *data) {
    (void)t;
    bus_worker_t *w = data;
    static int ticks;
    static int begun;
    report("tick %d", ++ticks);
    /* the work starts on the second tick, or later when a loaded machine
     * has not yet let the 10 ms timer fire three times */
    if (ticks < 2 || begun || self_fired < 3) return;
    begun = 1;
    bus_worker_work_begin(w);
    uv_poll_init(bus_worker_loop(w), &work_poll, go_fd);
    work_poll.data = w;
    uv_poll_start(&work_poll, UV_READABLE, on_go);
    report("begin");
    kill(getpid(), SIGTERM);
}

static int timers_init(bus_worker_t *w, char *err, size_t errlen) {
    (void)err;
    (void)errlen;
    CHECK(bus_worker_timer_start(w, 50, 100, on_tick, w, NULL) == 0);
    CHECK(bus_worker_timer_start(w, 100, 0, on_never, w, &never_timer) == 0);
    bus_worker_timer_stop(never_timer); /* before it fires: never runs */
    CHECK(bus_worker_timer_start(w, 10, 10, on_self, w, &self_timer) == 0);
    CHECK(bus_worker_timer_start(w, 20, 0, on_once, w, NULL) == 0);
    CHECK(bus_worker_timer_start(w, 3600 * 1000, 0, on_never, w, &held_timer) == 0); /* stopped in fini */
    CHECK(bus_worker_timer_start(w, 10, 0, NULL, w, NULL) == BUS_EBAD_REQUEST);
    return 0;
}

static void timers_fini(bus_worker_t *w) {
    (void)w;
    bus_worker_timer_stop(held_timer); /* self_timer was stopped by its own callback: no longer ours */
    report("fini");
}

static const bus_worker_def_t timers_def = {.service = "hooktimers", .init = timers_init, .fini = timers_fini};

static void test_timer_work_drain(void) {
    int rd = open_reports();
    int go[2];
    CHECK(pipe(go) == 0);
    go_fd = go[0];
    pid_t pid = bt_spawn_worker(&timers_def, worker_env);
    parent_side();
    close(go[0]);
    char line[256], before[4096] = "";
    CHECK(wait_line(rd, "begin", line, sizeof line, 20000, before, sizeof before) == 0);
    CHECK(count_lines(before, "tick ") >= 2);
    /* SIGTERM arrived during the work: the drain waits for it (a 100 ms
     * timer still armed would tick ten times meanwhile) */
    usleep(1000 * 1000);
    int status;
    CHECK_INT(waitpid(pid, &status, WNOHANG), 0);
    CHECK_INT(write(go[1], "g", 1), 1);
    char after[4096] = "";
    CHECK(wait_line(rd, "fini", line, sizeof line, 20000, after, sizeof after) == 0);
    CHECK_INT(bt_wait_exit(pid, 20000), 0);
    close(go[1]);
    strcat(before, after);
    CHECK_INT(count_lines(after, "tick "), 0); /* the repeating timer stopped when the drain began */
    CHECK_INT(count_lines(after, "done"), 1);  /* the work finished before the exit */
    CHECK_INT(count_lines(before, "self "), 3);
    CHECK_INT(count_lines(before, "once"), 1);
    CHECK_INT(count_lines(before, "never"), 0);
    close(rd);
}

/* ---- on_up after a dropped connection ------------------------------------ */

static void on_up_msg(bus_delivery_t *d) {
    report("msg %s", bus_delivery_msg(d)->body);
    bus_delivery_ack(d);
}

static void hooks_on_up(bus_worker_t *w, bus_conn_t *conn) {
    (void)w;
    uint32_t messages = 0, consumers = 0;
    /* the extra consumer's queue is declared before the hook runs */
    int rc = bus_conn_queue_info(conn, "test.hooks.upq", &messages, &consumers);
    report("up %llu %d", (unsigned long long)bus_conn_generation(conn), rc);
}

static const bus_consumer_def_t upq_consumers[] = {
    {.queue = "test.hooks.upq", .options = {.exclusive = 1, .auto_delete = 1}, .fn = on_up_msg},
    {.fn = NULL},
};
static const bus_worker_def_t up_def = {.service = "hookup", .consumers = upq_consumers, .on_up = hooks_on_up};

static int close_broker_connections(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "deploy/local/servers.sh ctl '%s' close_all_connections test >/dev/null 2>&1",
             getenv("BUS_LOCAL_DIR"));
    return system(cmd) == 0 ? 0 : -1;
}

static int published;
static void on_published(int status, void *data) {
    (void)data;
    if (status == 0) published++;
}

static void publish_to(bt_client_t *c, const char *exchange, const char *key, const char *body) {
    bus_publish_t p = {.exchange = exchange, .routing_key = key, .body = body, .len = strlen(body),
                       .message_id = body, .persistent = 1};
    int before = published;
    CHECK_INT(bus_conn_publish(c->conn, &p, on_published, NULL), 0);
    int never = 0;
    double end = bt_now_ms() + 10000;
    while (published == before && bt_now_ms() < end) bt_run_until(c, &never, 10);
    CHECK(published == before + 1);
}

static void test_on_up_after_connection_drop(void) {
    int rd = open_reports();
    pid_t pid = bt_spawn_worker(&up_def, worker_env);
    parent_side();
    char line[256];
    CHECK(wait_line(rd, "up ", line, sizeof line, 20000, NULL, 0) == 0);
    CHECK_STR(line, "up 1 0");
    CHECK(bt_wait_ping("hookup", 15000) == 0);
    CHECK(close_broker_connections() == 0);
    CHECK(wait_line(rd, "up ", line, sizeof line, 30000, NULL, 0) == 0);
    CHECK_STR(line, "up 2 0");
    /* the extra consumer was declared and consumed again */
    CHECK(bt_wait_ping("hookup", 15000) == 0);
    bt_client_t c;
    bt_client_open(&c);
    publish_to(&c, "", "test.hooks.upq", "again");
    bt_client_close(&c);
    CHECK(wait_line(rd, "msg ", line, sizeof line, 10000, NULL, 0) == 0);
    CHECK_STR(line, "msg again");
    kill(pid, SIGTERM);
    CHECK_INT(bt_wait_exit(pid, 20000), 0);
    close(rd);
}

/* ---- stream consumers ----------------------------------------------------- */

#define TEST_STREAM "test.hooks.stream"

static int64_t last_offset = -1; /* the child's: last offset it processed */

static void on_stream(bus_delivery_t *d) {
    const bus_msg_t *m = bus_delivery_msg(d);
    const char *tag = bus_delivery_data(d);
    /* the resume test: m10.. on the first connection are "lost" (the
     * process would have crashed before handling them) */
    if (strcmp(tag, "resume") == 0 && bus_conn_generation(bus_worker_conn(bus_delivery_worker(d))) == 1 &&
        atoi(m->body + 1) >= 10) {
        report("unprocessed %s", m->body);
        bus_delivery_ack(d);
        return;
    }
    last_offset = bus_delivery_stream_offset(d);
    report("stream %s %lld %s", (const char *)bus_delivery_data(d), (long long)last_offset, m->body);
    bus_delivery_ack(d);
}

static int resume_after_last(bus_worker_t *w, void *data, bus_stream_offset_t *out) {
    (void)w;
    (void)data;
    report("resume %lld", (long long)(last_offset + 1));
    if (last_offset < 0) return 0;
    out->from = BUS_STREAM_OFFSET;
    out->value = last_offset + 1;
    return 1;
}

static void stream_on_up(bus_worker_t *w, bus_conn_t *conn) {
    (void)w;
    report("up %llu", (unsigned long long)bus_conn_generation(conn));
}

#define STREAM_OPTIONS {.durable = 1, .queue_type = "stream", .max_length_bytes = 10000000}

static bus_consumer_def_t first_consumers[] = {
    {.queue = TEST_STREAM, .options = STREAM_OPTIONS, .offset = {BUS_STREAM_FIRST}, .prefetch = 3, .fn = on_stream,
     .data = "first"},
    {.fn = NULL},
};
static const bus_worker_def_t first_def = {.service = "hookstream", .consumers = first_consumers};

static bus_consumer_def_t offset_consumers[] = {
    {.queue = TEST_STREAM, .options = STREAM_OPTIONS, .offset = {BUS_STREAM_OFFSET, 0}, .fn = on_stream,
     .data = "offset"},
    {.queue = TEST_STREAM, .options = STREAM_OPTIONS, .offset = {BUS_STREAM_TIMESTAMP, 0}, .fn = on_stream,
     .data = "time"},
    {.queue = TEST_STREAM, .options = STREAM_OPTIONS, .offset = {BUS_STREAM_NEXT, 0}, .fn = on_stream,
     .data = "next"},
    {.fn = NULL},
};
static const bus_worker_def_t offset_def = {.service = "hookstream", .consumers = offset_consumers};

static const bus_consumer_def_t resume_consumers[] = {
    {.queue = TEST_STREAM, .options = STREAM_OPTIONS, .offset = {BUS_STREAM_FIRST}, .resume = resume_after_last,
     .fn = on_stream, .data = "resume"},
    {.fn = NULL},
};
static const bus_worker_def_t resume_def = {.service = "hookstream", .consumers = resume_consumers,
                                            .on_up = stream_on_up};

static void publish_stream(bt_client_t *c, int from, int to) {
    int want = published + (to - from);
    for (int i = from; i < to; i++) {
        char body[32];
        snprintf(body, sizeof body, "m%d", i);
        bus_publish_t p = {.exchange = "", .routing_key = TEST_STREAM, .body = body, .len = strlen(body),
                           .message_id = body, .persistent = 1};
        CHECK_INT(bus_conn_publish(c->conn, &p, on_published, NULL), 0);
    }
    int never = 0;
    double end = bt_now_ms() + 10000;
    while (published < want && bt_now_ms() < end) bt_run_until(c, &never, 10);
    CHECK_INT(published, want);
}

/* Reads n "stream TAG OFFSET BODY" lines of one tag; offsets[i] and bodies
 * are filled. Lines of other kinds are skipped into `other`. */
static void read_stream_lines(int rd, const char *tag, int n, long long *offsets, int *bodies, char *other,
                              size_t other_len) {
    char prefix[64], line[256];
    snprintf(prefix, sizeof prefix, "stream %s ", tag);
    for (int i = 0; i < n; i++) {
        if (wait_line(rd, prefix, line, sizeof line, 20000, other, other_len) != 0) {
            fprintf(stderr, "  only %d of %d \"%s\" lines; other lines:\n%s", i, n, prefix, other ? other : "");
            CHECK(!"every delivery");
        }
        CHECK(sscanf(line + strlen(prefix), "%lld m%d", &offsets[i], &bodies[i]) == 2);
    }
}

static void fresh_stream(bt_client_t *c) {
    bt_delete_queue(c, TEST_STREAM);
    bus_queue_options_t o = STREAM_OPTIONS;
    CHECK_INT(bus_conn_declare_queue(c->conn, TEST_STREAM, &o), 0);
}

static void test_stream_offsets(void) {
    bt_client_t c;
    bt_client_open(&c);
    fresh_stream(&c);
    publish_stream(&c, 0, 10);

    /* from "first": everything in order, with its offsets */
    int rd = open_reports();
    pid_t pid = bt_spawn_worker(&first_def, worker_env);
    parent_side();
    long long off[16];
    int body[16];
    read_stream_lines(rd, "first", 10, off, body, NULL, 0);
    for (int i = 0; i < 10; i++) {
        CHECK_INT(body[i], i);
        if (i) CHECK_INT(off[i], off[0] + i);
    }
    kill(pid, SIGTERM);
    CHECK_INT(bt_wait_exit(pid, 20000), 0);
    close(rd);

    /* from a number (the 6th message's), from a timestamp (0: all), and
     * from "next" (nothing yet) */
    offset_consumers[0].offset.value = off[0] + 5;
    rd = open_reports();
    pid = bt_spawn_worker(&offset_def, worker_env);
    parent_side();
    char other[8192] = "";
    long long off2[16];
    int body2[16];
    read_stream_lines(rd, "offset", 5, off2, body2, other, sizeof other);
    for (int i = 0; i < 5; i++) {
        CHECK_INT(body2[i], 5 + i);
        CHECK_INT(off2[i], off[0] + 5 + i);
    }
    read_stream_lines(rd, "time", 10, off2, body2, other, sizeof other);
    CHECK_INT(body2[0], 0);
    CHECK_INT(body2[9], 9);
    /* "next" sees only what is published now */
    CHECK(bt_wait_ping("hookstream", 15000) == 0);
    publish_stream(&c, 10, 11);
    read_stream_lines(rd, "next", 1, off2, body2, other, sizeof other);
    CHECK_INT(body2[0], 10);
    for (int i = 0; i < 5; i++) { /* nothing below the offset asked for (m10 may come too: it is above) */
        char below[64];
        snprintf(below, sizeof below, "stream offset %lld m%d\n", off[0] + i, i);
        CHECK(strstr(other, below) == NULL);
    }
    kill(pid, SIGTERM);
    CHECK_INT(bt_wait_exit(pid, 20000), 0);
    close(rd);
    bt_delete_queue(&c, TEST_STREAM);
    bt_client_close(&c);
}

/* The consumer resumes where the domain says (its last offset processed
 * + 1) after the connection is dropped: not from "first" again (m0..m9
 * would come twice), not from "next" (m10..m14, delivered but not
 * processed before the drop, would never come back). */
static void test_stream_resumes_after_reconnect(void) {
    bt_client_t c;
    bt_client_open(&c);
    fresh_stream(&c);
    publish_stream(&c, 0, 10);
    int rd = open_reports();
    pid_t pid = bt_spawn_worker(&resume_def, worker_env);
    parent_side();
    char seen[8192] = "", line[256];
    CHECK(wait_line(rd, "resume ", line, sizeof line, 20000, seen, sizeof seen) == 0);
    CHECK_STR(line, "resume 0"); /* nothing processed yet: from "first" */
    long long off[32];
    int body[32];
    read_stream_lines(rd, "resume", 10, off, body, seen, sizeof seen);
    CHECK_INT(body[9], 9);
    publish_stream(&c, 10, 15);
    for (int i = 10; i < 15; i++) CHECK(wait_line(rd, "unprocessed ", line, sizeof line, 20000, seen, sizeof seen) == 0);
    bt_client_close(&c);

    CHECK(close_broker_connections() == 0);
    CHECK(wait_line(rd, "up 2", line, sizeof line, 30000, seen, sizeof seen) == 0);
    CHECK(wait_line(rd, "resume ", line, sizeof line, 20000, seen, sizeof seen) == 0);
    char want[64];
    snprintf(want, sizeof want, "resume %lld", off[9] + 1);
    CHECK_STR(line, want);
    char after[8192] = "";
    read_stream_lines(rd, "resume", 5, off + 10, body + 10, after, sizeof after);
    for (int i = 10; i < 15; i++) CHECK_INT(body[i], i); /* m10..m14, none of m0..m9 again */
    CHECK_INT(off[10], off[9] + 1);
    kill(pid, SIGTERM);
    CHECK_INT(bt_wait_exit(pid, 20000), 0);
    /* nothing more came: no second reading */
    while (read_line(rd, line, sizeof line, 1000) == 0) CHECK(strncmp(line, "stream ", 7) != 0);
    close(rd);
    bt_client_open(&c);
    bt_delete_queue(&c, TEST_STREAM);
    bt_client_close(&c);
}

/* ---- classic queues: bindings, a server-named queue, prefetch -------------- */

static void on_classic(bus_delivery_t *d) {
    const bus_msg_t *m = bus_delivery_msg(d);
    const char *tag = bus_delivery_data(d);
    const char *q = bus_delivery_queue(d);
    report("%s %s %s %s", tag, strncmp(q, "amq.gen-", 8) == 0 ? "amq.gen" : q, m->routing_key, m->body);
    if (strcmp(tag, "held") == 0) return; /* never finished: holds its prefetch slot */
    bus_delivery_ack(d);
}

static const bus_binding_t q_bindings[] = {
    {BUS_EXCHANGE_EVENTS, "hooks.a.*"},
    {BUS_EXCHANGE_EVENTS, "hooks.b"},
    {NULL, NULL},
};
static const bus_binding_t audit_binding[] = {{BUS_EXCHANGE_AUDIT, ""}, {NULL, NULL}};
static const bus_binding_t held_binding[] = {{BUS_EXCHANGE_EVENTS, "hooks.held"}, {NULL, NULL}};

static const bus_consumer_def_t classic_consumers[] = {
    {.queue = "test.hooks.q", .options = {.durable = 1}, .bindings = q_bindings, .fn = on_classic, .data = "q"},
    {.queue = NULL, .options = {.exclusive = 1, .auto_delete = 1}, .bindings = audit_binding, .fn = on_classic,
     .data = "anon"},
    {.queue = "test.hooks.held", .options = {.durable = 1}, .bindings = held_binding, .prefetch = 2,
     .fn = on_classic, .data = "held"},
    {.fn = NULL},
};
static const bus_worker_def_t classic_def = {.service = "hookclassic", .consumers = classic_consumers};

static void test_classic_queue_bindings(void) {
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "test.hooks.q");
    bt_delete_queue(&c, "test.hooks.held");
    int rd = open_reports();
    pid_t pid = bt_spawn_worker(&classic_def, worker_env);
    parent_side();
    CHECK(bt_wait_ping("hookclassic", 15000) == 0);
    publish_to(&c, BUS_EXCHANGE_EVENTS, "hooks.a.x", "1");
    publish_to(&c, BUS_EXCHANGE_EVENTS, "hooks.c", "2");     /* bound to nothing of ours */
    publish_to(&c, BUS_EXCHANGE_EVENTS, "hooks.a.y.z", "3"); /* * is one word */
    publish_to(&c, BUS_EXCHANGE_EVENTS, "hooks.b", "4");
    publish_to(&c, BUS_EXCHANGE_AUDIT, "anything", "5");
    for (int i = 0; i < 5; i++) publish_to(&c, BUS_EXCHANGE_EVENTS, "hooks.held", "h");
    char seen[4096] = "", line[256];
    CHECK(wait_line(rd, "q ", line, sizeof line, 10000, seen, sizeof seen) == 0);
    CHECK_STR(line, "q test.hooks.q hooks.a.x 1");
    CHECK(wait_line(rd, "q ", line, sizeof line, 10000, seen, sizeof seen) == 0);
    CHECK_STR(line, "q test.hooks.q hooks.b 4");
    /* whatever else arrives within a second */
    while (read_line(rd, line, sizeof line, 1000) == 0) {
        size_t used = strlen(seen);
        snprintf(seen + used, sizeof seen - used, "%s\n", line);
    }
    CHECK_INT(count_lines(seen, "q "), 0);
    CHECK_INT(count_lines(seen, "anon amq.gen anything 5"), 1);
    CHECK_INT(count_lines(seen, "held "), 2); /* prefetch 2, none acked */
    uint32_t messages = 0, consumers = 0;
    CHECK_INT(bus_conn_queue_info(c.conn, "test.hooks.held", &messages, &consumers), 0);
    CHECK_INT(messages, 3);
    CHECK_INT(consumers, 1);
    CHECK_INT(bus_conn_queue_info(c.conn, "test.hooks.q", &messages, &consumers), 0);
    CHECK_INT(messages, 0);
    bt_kill(pid, SIGKILL); /* the held deliveries would keep the drain waiting */
    close(rd);
    bt_delete_queue(&c, "test.hooks.q");
    bt_delete_queue(&c, "test.hooks.held");
    bt_client_close(&c);
}

/* A classic queue refuses x-stream-offset (the broker would close the
 * channel on every connect): the worker stops at start with exit 2. */
static const bus_consumer_def_t bad_offset_consumers[] = {
    {.queue = "test.hooks.bad", .options = {.durable = 1}, .offset = {BUS_STREAM_FIRST}, .fn = on_classic},
    {.fn = NULL},
};
static const bus_worker_def_t bad_offset_def = {.service = "hookbad", .consumers = bad_offset_consumers};

static void test_offset_on_classic_queue_refused(void) {
    pid_t pid = bt_spawn_worker(&bad_offset_def, worker_env);
    CHECK_INT(bt_wait_exit(pid, 20000), 2);
}

/* ---- the domain workers that use the hooks --------------------------------- */
/* bus-audit reads audit.log and every event (extra consumers); bus-events,
 * bus-verification and bus-notifications run a timer; all answer ping and
 * drain on SIGTERM. */

/* The value of `metric` on a worker's /metrics (BUS_METRICS_ADDR=127.0.0.1:port), -1 when unreadable. */
static double scrape(int port, const char *metric) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    ssize_t wr = write(fd, req, strlen(req));
    static char text[1 << 20];
    size_t len = 0;
    ssize_t r;
    while (wr > 0 && (r = read(fd, text + len, sizeof text - len - 1)) > 0) len += (size_t)r;
    text[len] = '\0';
    close(fd);
    char key[256];
    snprintf(key, sizeof key, "\n%s ", metric);
    const char *at = strstr(text, key);
    return at ? strtod(at + strlen(key), NULL) : -1;
}

static pid_t spawn_domain(const char *service, const char *metrics_addr) {
    char prog[512], log[512];
    const char *build = getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build";
    snprintf(prog, sizeof prog, "%s/bus-%s", build, service);
    const char *tmp = getenv("BUS_TEST_TMPDIR");
    snprintf(log, sizeof log, "%s/hooks-%s.log", tmp ? tmp : "/tmp", service);
    char *argv[] = {prog, NULL};
    char metrics[96], store[600];
    snprintf(metrics, sizeof metrics, "BUS_METRICS_ADDR=%s", metrics_addr);
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s/hooks-%s.db", tmp ? tmp : "/tmp", service); /* not var/bus.db */
    const char *const env[] = {"BUS_LOG_LEVEL=warn", "BUS_DRAIN_MS=5000", "BUS_EVENTS_TICK_MS=50", metrics, store, NULL};
    return bt_spawn_program(argv, env, log);
}

#define AUDIT_METRICS_PORT 26840
#define CONSUMED_AUDIT "bus_messages_consumed_total{service=\"audit\"}"
#define ACKED_AUDIT "bus_messages_acked_total{service=\"audit\"}"

static void test_domain_workers(void) {
    pid_t audit = spawn_domain("audit", "127.0.0.1:26840");
    pid_t events = spawn_domain("events", "127.0.0.1:26841");
    CHECK(bt_wait_ping("audit", 20000) == 0);
    CHECK(bt_wait_ping("events", 20000) == 0);
    bt_client_t c;
    bt_client_open(&c);
    uint32_t messages = 0, consumers = 0;
    CHECK_INT(bus_conn_queue_info(c.conn, "audit.events", &messages, &consumers), 0);
    CHECK_INT(consumers, 1);
    double consumed = scrape(AUDIT_METRICS_PORT, CONSUMED_AUDIT), acked = scrape(AUDIT_METRICS_PORT, ACKED_AUDIT);
    CHECK(consumed >= 1 && acked >= 1); /* the pings */
    /* into audit.events: bus-audit records it (as malformed: not a CloudEvent) and acks it */
    publish_to(&c, BUS_EXCHANGE_EVENTS, "hooks.anything", "{}");
    double end = bt_now_ms() + 10000;
    while (scrape(AUDIT_METRICS_PORT, ACKED_AUDIT) < acked + 1 && bt_now_ms() < end) usleep(50 * 1000);
    CHECK_INT(scrape(AUDIT_METRICS_PORT, CONSUMED_AUDIT), consumed + 1);
    CHECK_INT(scrape(AUDIT_METRICS_PORT, ACKED_AUDIT), acked + 1);
    CHECK_INT(bus_conn_queue_info(c.conn, "audit.events", &messages, &consumers), 0);
    CHECK_INT(messages, 0);
    /* the scheduler tick (every 50 ms here) does not hold up the drain */
    kill(audit, SIGTERM);
    kill(events, SIGTERM);
    CHECK_INT(bt_wait_exit(audit, 20000), 0);
    CHECK_INT(bt_wait_exit(events, 20000), 0);
    /* the other two start their timers, answer ping, and drain */
    pid_t verification = spawn_domain("verification", "127.0.0.1:26842");
    pid_t notifications = spawn_domain("notifications", "127.0.0.1:26843");
    CHECK(bt_wait_ping("verification", 20000) == 0);
    CHECK(bt_wait_ping("notifications", 20000) == 0);
    kill(verification, SIGTERM);
    kill(notifications, SIGTERM);
    CHECK_INT(bt_wait_exit(verification, 20000), 0);
    CHECK_INT(bt_wait_exit(notifications, 20000), 0);
    /* audit.events is durable and bound with "#": leave no queue behind that
     * would collect every event of the other tests */
    bt_delete_queue(&c, "audit.events");
    bt_client_close(&c);
}

BUS_TESTS({"timer_work_drain", test_timer_work_drain, 60},
          {"on_up_after_connection_drop", test_on_up_after_connection_drop, 90},
          {"stream_offsets", test_stream_offsets, 90},
          {"stream_resumes_after_reconnect", test_stream_resumes_after_reconnect, 90},
          {"classic_queue_bindings", test_classic_queue_bindings, 60},
          {"offset_on_classic_queue_refused", test_offset_on_classic_queue_refused, 30},
          {"domain_workers", test_domain_workers, 90})
