/* Hardening (issue 16, "Security and bad input"): oversized messages are
 * dead-lettered by the broker without the worker copying them; bad input at
 * the edge (UTF-8, error codes, credentials in logs, look-ups of unknown
 * services, CloudEvents source); GET /api/docs in a real headless browser.
 *
 * The gateway runs as the real program (build/bus-gateway) on ports
 * 26900-26949; the worker "hardw" is defined here. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/apikey.h"
#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/log.h"
#include "bus/topology.h"

static void on_hard_event(bus_event_t *ev) { bus_event_done(ev, 0, NULL); }
static const bus_subscription_t hard_subs[] = {{"hardw.#", on_hard_event}, {NULL, NULL}};
static const bus_worker_def_t hardw = {.service = "hardw", .summary = "hardening test worker",
                                       .subscriptions = hard_subs};


/* ---- the edge: a worker "hgw", a schemas dir, a keys file ---- */

static void m_echo(bus_request_t *req) { bus_reply_ok(req, cJSON_Duplicate(bus_request_params(req), 1)); }
static const bus_method_t hgw_methods[] = {{"echo", m_echo}, {NULL, NULL}};
static const bus_worker_def_t hgw = {.service = "hgw", .summary = "hardening edge test worker", .methods = hgw_methods};

static char tmpdir[512], schemas_dir[600], keys_path[600], env_schemas[700], env_keys[700], secret[128], key_id[32];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void setup_files(void) {
    const char *t = getenv("BUS_TEST_TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/hard-%d", t ? t : "/tmp", (int)getpid());
    mkdir(tmpdir, 0755);
    snprintf(schemas_dir, sizeof schemas_dir, "%s/schemas", tmpdir);
    mkdir(schemas_dir, 0755);
    char p[800];
    snprintf(p, sizeof p, "%s/rpc", schemas_dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/events", schemas_dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/rpc/hgw.echo.json", schemas_dir);
    write_file(p, "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"title\":\"hgw.echo\","
                  "\"description\":\"echoes its params\",\"definitions\":{\"params\":{\"type\":\"object\","
                  "\"required\":[\"name\"],\"properties\":{\"name\":{\"type\":\"string\",\"minLength\":1},"
                  "\"count\":{\"type\":\"integer\",\"minimum\":3}}},\"result\":{\"type\":\"object\"}}}");
    snprintf(p, sizeof p, "%s/events/hgw.created.json", schemas_dir);
    write_file(p, "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"type\":\"object\","
                  "\"required\":[\"name\"],\"properties\":{\"name\":{\"type\":\"string\"}}}");
    char line[1024], err[256];
    snprintf(key_id, sizeof key_id, "hk%d", (int)getpid());
    CHECK_INT(bus_apikey_generate(key_id, "rpc:hgw.*,events:hgw.*", secret, sizeof secret, line, sizeof line, err,
                                  sizeof err), 0);
    snprintf(keys_path, sizeof keys_path, "%s/keys.jsonl", tmpdir);
    char text[1100];
    snprintf(text, sizeof text, "%s\n", line);
    write_file(keys_path, text);
    snprintf(env_schemas, sizeof env_schemas, "BUS_SCHEMAS_DIR=%s", schemas_dir);
    snprintf(env_keys, sizeof env_keys, "BUS_API_KEYS_FILE=%s", keys_path);
}

static pid_t start_hgw(void) {
    const char *env[] = {env_schemas, NULL};
    pid_t pid = bt_spawn_worker(&hgw, env);
    CHECK(bt_wait_ping("hgw", 15000) == 0);
    return pid;
}

static const char *build_dir(void) {
    const char *b = getenv("BUS_TEST_BUILD");
    return b ? b : "build";
}

typedef struct {
    int status;
    char head[8192];
    char body[1 << 20];
    size_t body_len;
} resp_t;

/* A source address of its own per run (any 127/8 address is loopback), so
 * that the per-address rate-limit windows in Redis start empty. */
static char src_addr[32];
static void pick_src_addr(void) {
    unsigned r = (unsigned)getpid() * 2654435761u ^ (unsigned)bt_now_ms();
    snprintf(src_addr, sizeof src_addr, "127.%u.%u.%u", 1 + r % 250, 1 + (r >> 8) % 250, 1 + (r >> 16) % 250);
}

static int connect_from(int port, const char *from) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (from && *from) {
        struct sockaddr_in b = {.sin_family = AF_INET};
        inet_pton(AF_INET, from, &b.sin_addr);
        if (bind(fd, (struct sockaddr *)&b, sizeof b) != 0) {
            close(fd);
            return -1;
        }
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 15};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int send_all(int fd, const char *s, size_t n) {
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads until the peer closes (requests say Connection: close). */
static int read_all(int fd, resp_t *r) {
    static char buf[(1 << 20) + 16384];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        if (len == sizeof buf - 1) break;
    }
    buf[len] = 0;
    memset(r, 0, sizeof *r);
    char *end = strstr(buf, "\r\n\r\n");
    if (!end) return -1;
    size_t hl = (size_t)(end - buf) + 4;
    if (hl >= sizeof r->head) return -1;
    memcpy(r->head, buf, hl);
    r->status = atoi(buf + 9);
    r->body_len = len - hl;
    memcpy(r->body, buf + hl, r->body_len);
    r->body[r->body_len] = 0;
    return 0;
}

/* A raw request (text as is) from address `from` (NULL: 127.0.0.1). */
static int raw(int port, const char *from, const char *text, size_t n, resp_t *r) {
    int fd = connect_from(port, from);
    if (fd < 0) return -1;
    int rc = send_all(fd, text, n) == 0 ? read_all(fd, r) : -1;
    close(fd);
    return rc;
}

static int http_from(int port, const char *from, const char *method, const char *path, const char *extra,
                     const char *body, resp_t *r) {
    static char req[70000];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n%s",
                     method, path, extra ? extra : "", blen, body ? body : "");
    return raw(port, from, req, (size_t)n, r);
}

static int http(int port, const char *method, const char *path, const char *extra, const char *body, resp_t *r) {
    return http_from(port, NULL, method, path, extra, body, r);
}

static char gw_log[700];
static pid_t start_gateway(int port, const char *const *more_env) {
    char addr[64], gw[600];
    snprintf(addr, sizeof addr, "BUS_HTTP_ADDR=127.0.0.1:%d", port);
    snprintf(gw, sizeof gw, "%s/bus-gateway", build_dir());
    const char *env[32] = {addr, env_schemas, "BUS_LOG_LEVEL=warn", NULL};
    size_t k = 3;
    for (size_t i = 0; more_env && more_env[i] && k < 30; i++) env[k++] = more_env[i];
    env[k] = NULL;
    char *argv[] = {gw, NULL};
    snprintf(gw_log, sizeof gw_log, "%s/gateway-%d.log", tmpdir, port);
    pid_t pid = bt_spawn_program(argv, env, gw_log);
    double end = bt_now_ms() + 15000;
    resp_t *r = malloc(sizeof *r);
    r->status = 0;
    while (bt_now_ms() < end) {
        if (http(port, "GET", "/", NULL, NULL, r) == 0 && r->status == 200) break;
        usleep(50000);
    }
    CHECK_INT(r->status, 200);
    free(r);
    return pid;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* ---- a plain AMQP client (rabbitmq-c, synchronous), as another bot would be ---- */

static amqp_connection_state_t plain_open(void) {
    struct amqp_connection_info ci;
    char url[512];
    snprintf(url, sizeof url, "%s", getenv("BUS_AMQP_URL"));
    CHECK(amqp_parse_url(url, &ci) == AMQP_STATUS_OK);
    amqp_connection_state_t st = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(st);
    CHECK(amqp_socket_open(s, ci.host, ci.port) == AMQP_STATUS_OK);
    amqp_rpc_reply_t r = amqp_login(st, *ci.vhost ? ci.vhost : "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        fprintf(stderr, "login: type %d lib %s\n", r.reply_type, amqp_error_string2(r.library_error));
    CHECK(r.reply_type == AMQP_RESPONSE_NORMAL);
    return st;
}

/* Publishes on a fresh channel, then asks the broker something on it: 0
 * when the channel survived (the message was taken), else the reply code
 * with which the broker closed the channel (406: larger than the limit). */
static int plain_publish(amqp_connection_state_t st, amqp_channel_t ch, const char *exchange, const char *key,
                         const char *body, size_t len, const char *id) {
    amqp_channel_open(st, ch);
    CHECK(amqp_get_rpc_reply(st).reply_type == AMQP_RESPONSE_NORMAL);
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG,
                                 .message_id = amqp_cstring_bytes(id), .delivery_mode = 2};
    amqp_bytes_t b = {len, (void *)body};
    amqp_basic_publish(st, ch, amqp_cstring_bytes(exchange), amqp_cstring_bytes(key), 0, 0, &p, b);
    amqp_queue_declare(st, ch, amqp_cstring_bytes("dead.hardw"), 1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(st);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_channel_close(st, ch, AMQP_REPLY_SUCCESS);
        return 0;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(st, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        return ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
    }
    return -1;
}

static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    fclose(f);
    return kb;
}

typedef struct {
    int count;
    char reasons[8][64], queues[8][64];
    size_t lens[8];
} dead_inbox_t;

static void on_dead(bus_msg_t *m, void *data) {
    dead_inbox_t *in = data;
    if (in->count < 8) {
        const char *r = bus_msg_header(m, "x-first-death-reason");
        const char *q = bus_msg_header(m, "x-first-death-queue");
        snprintf(in->reasons[in->count], sizeof in->reasons[0], "%s", r ? r : "");
        snprintf(in->queues[in->count], sizeof in->queues[0], "%s", q ? q : "");
        in->lens[in->count] = m->len;
    }
    in->count++;
    bus_msg_ack(m);
}

/* Item 1: limit+1 and 3 MiB events, a 3 MiB RPC request without reply_to:
 * each reaches dead.hardw exactly once, moved by the broker (x-death, not a
 * copy of ours); 100 MB and 80 MB are refused by the broker's limit; pings
 * keep answering; the worker's memory goes back down. */
static void test_oversized_messages_dead_lettered_once(void) {
    bt_client_t c;
    bt_client_open(&c);
    const char *qs[] = {"events.hardw", "rpc.hardw", "retry.hardw", "dead.hardw"};
    for (int i = 0; i < 4; i++) bt_delete_queue(&c, qs[i]);
    pid_t w = bt_spawn_worker(&hardw, NULL);
    CHECK(bt_wait_ping("hardw", 15000) == 0);
    long rss_before = rss_kb(w);
    amqp_connection_state_t st = plain_open();
    size_t sizes[] = {BUS_ENVELOPE_MAX_BYTES + 1, 3u << 20, 3u << 20, 100000000, 80000000};
    const char *exch[] = {BUS_EXCHANGE_EVENTS, BUS_EXCHANGE_EVENTS, BUS_EXCHANGE_RPC, BUS_EXCHANGE_EVENTS,
                          BUS_EXCHANGE_RPC};
    const char *keys[] = {"hardw.big", "hardw.big", "hardw.ping", "hardw.huge", "hardw.ping"};
    char *body = malloc(100000000);
    CHECK(body != NULL);
    memset(body, 'x', 100000000);
    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof id, "big-%d", i);
        int rc = plain_publish(st, (amqp_channel_t)(i + 1), exch[i], keys[i], body, sizes[i], id);
        CHECK_INT(rc, i < 3 ? 0 : AMQP_PRECONDITION_FAILED); /* above 4 MiB: the broker's max_message_size */
        /* the service keeps answering meanwhile */
        char *reply = NULL;
        CHECK_INT(bt_call(&c, "hardw", "ping", "{}", 10000, &reply), 0);
        free(reply);
    }
    free(body);
    amqp_connection_close(st, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(st);
    static dead_inbox_t dead;
    memset(&dead, 0, sizeof dead);
    CHECK(bus_conn_consume(c.conn, "dead.hardw", 0, 0, amqp_empty_table, on_dead, &dead, NULL, 0) == 0);
    double end = bt_now_ms() + 20000;
    int never = 0;
    while (dead.count < 3 && bt_now_ms() < end) bt_run_until(&c, &never, 50);
    bt_run_until(&c, &never, 1500); /* any redelivery or second copy would show now */
    CHECK_INT(dead.count, 3);
    int from_events = 0, from_rpc = 0;
    for (int i = 0; i < 3 && i < dead.count; i++) {
        CHECK_STR(dead.reasons[i], "rejected"); /* the broker's dead-lettering, not a copy of ours */
        from_events += strcmp(dead.queues[i], "events.hardw") == 0;
        from_rpc += strcmp(dead.queues[i], "rpc.hardw") == 0;
        CHECK(dead.lens[i] > BUS_ENVELOPE_MAX_BYTES);
    }
    CHECK_INT(from_events, 2);
    CHECK_INT(from_rpc, 1);
    uint32_t waiting = 1;
    CHECK_INT(bus_conn_queue_info(c.conn, "events.hardw", &waiting, NULL), 0);
    CHECK_INT(waiting, 0);
    CHECK_INT(bus_conn_queue_info(c.conn, "rpc.hardw", &waiting, NULL), 0);
    CHECK_INT(waiting, 0);
    for (int i = 0; i < 5; i++) {
        char *reply = NULL;
        CHECK_INT(bt_call(&c, "hardw", "ping", "{}", 5000, &reply), 0);
        free(reply);
    }
#if !defined(__SANITIZE_ADDRESS__)
    /* the worker held 3 MiB messages: its own copies are freed and trimmed;
     * rabbitmq-c keeps the frame pages of each consuming channel for reuse,
     * at most the broker's limit (4 MiB) each (README "Message size limits").
     * ASan keeps freed memory in quarantine, so only without it. */
    long rss_after = rss_kb(w);
    fprintf(stderr, "worker RSS before %ld kB, after %ld kB\n", rss_before, rss_after);
    CHECK(rss_after < rss_before + 8 * 1024);
#else
    (void)rss_before; /* see above */
#endif
    bt_kill(w, SIGKILL);
    bt_client_close(&c);
}

/* The migration path: events.hardw made by an older version (no dead-letter
 * arguments) is used as it is; the worker starts and serves. */
static void test_legacy_queue_without_dead_letter_arguments(void) {
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "events.hardw");
    bt_delete_queue(&c, "rpc.hardw");
    bus_queue_options_t plain = {.durable = 1};
    CHECK_INT(bus_conn_declare_queue(c.conn, "events.hardw", &plain), 0);
    pid_t w = bt_spawn_worker(&hardw, NULL);
    CHECK(bt_wait_ping("hardw", 15000) == 0);
    bt_kill(w, SIGKILL);
    bt_delete_queue(&c, "events.hardw");
    bt_client_close(&c);
}

/* Item 7: each HTTP refusal has its own code; an empty X-API-Key next to a
 * valid Bearer key uses the Bearer key. */
static void test_error_codes_and_empty_api_key(void) {
    setup_files();
    pid_t w = start_hgw();
    const char *env[] = {env_keys, "BUS_MAX_BODY_BYTES=1000", "BUS_MAX_HEADER_BYTES=2000", "BUS_RATE_LIMIT=0", NULL};
    pid_t g = start_gateway(26900, env);
    static resp_t r;
    CHECK_INT(http(26900, "DELETE", "/api/v1/health", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 405);
    CHECK_CONTAINS(r.body, "\"error\":\"method_not_allowed\"");
    static char big[3000];
    memset(big, 'a', sizeof big - 1);
    CHECK_INT(http(26900, "POST", "/api/v1/rpc/hgw/echo", "Content-Type: application/json\r\n", big, &r), 0);
    CHECK_INT(r.status, 413);
    CHECK_CONTAINS(r.body, "\"error\":\"payload_too_large\"");
    char hdr[3100];
    snprintf(hdr, sizeof hdr, "X-Filler: %.2900s\r\n", big);
    CHECK_INT(http(26900, "GET", "/api/v1/health", hdr, NULL, &r), 0);
    CHECK_INT(r.status, 431);
    CHECK_CONTAINS(r.body, "\"error\":\"headers_too_large\"");
    const char *v9 = "GET / HTTP/9.9\r\nHost: t\r\n\r\n";
    CHECK_INT(raw(26900, NULL, v9, strlen(v9), &r), 0);
    CHECK_INT(r.status, 505);
    CHECK_CONTAINS(r.body, "\"error\":\"http_version_not_supported\"");
    char both[400];
    snprintf(both, sizeof both, "Content-Type: application/json\r\nX-API-Key: \r\nAuthorization: Bearer %s\r\n", secret);
    CHECK_INT(http(26900, "POST", "/api/v1/rpc/hgw/echo", both, "{\"name\":\"x\"}", &r), 0);
    CHECK_INT(r.status, 200);
    bt_kill(g, SIGKILL);
    bt_kill(w, SIGKILL);
}

/* Item 2: unknown services are 404 without a look-up; public routes and
 * failed authentications are counted per address. */
static void test_lookups_and_public_rate_limits(void) {
    setup_files();
    pick_src_addr();
    pid_t w = start_hgw();
    const char *env[] = {env_keys, "BUS_RATE_LIMIT=5", "BUS_PUBLIC_RATE_LIMIT=5", "BUS_RATE_WINDOW_MS=60000", NULL};
    pid_t g = start_gateway(26901, env);
    static resp_t r;
    /* 300 names that do not exist (more than the cache's 256 slots), from many addresses */
    for (int i = 0; i < 300; i++) {
        char path[128], from[32];
        snprintf(path, sizeof path, "/api/v1/services/nosuch%d%d/status", (int)getpid(), i);
        snprintf(from, sizeof from, "127.200.%d.%d", 1 + i / 200, 1 + i % 200);
        CHECK_INT(http_from(26901, from, "GET", path, NULL, NULL, &r), 0);
        if (r.status != 429) {
            CHECK_INT(r.status, 404);
            CHECK_CONTAINS(r.body, "schemas/"); /* refused from schemas/, the broker never asked */
        }
    }
    char key[200];
    snprintf(key, sizeof key, "Content-Type: application/json\r\nX-API-Key: %s\r\n", secret);
    CHECK_INT(http(26901, "POST", "/api/v1/rpc/hgw/echo", key, "{\"name\":\"x\"}", &r), 0);
    CHECK_INT(r.status, 200);
    /* public health: per address */
    int limited = 0;
    for (int i = 0; i < 8; i++) {
        CHECK_INT(http_from(26901, src_addr, "GET", "/api/v1/health", NULL, NULL, &r), 0);
        limited += r.status == 429;
    }
    CHECK_INT(limited, 3);
    /* failed authentications count against the address: 401 until the limit, then 429 */
    pick_src_addr();
    int unauth = 0, limited2 = 0;
    for (int i = 0; i < 8; i++) {
        CHECK_INT(http_from(26901, src_addr, "POST", "/api/v1/rpc/hgw/echo",
                            "Content-Type: application/json\r\nX-API-Key: wrong\r\n", "{}", &r), 0);
        unauth += r.status == 401;
        limited2 += r.status == 429;
    }
    CHECK_INT(unauth, 5);
    CHECK_INT(limited2, 3);
    /* the right key from that address still works: its own window */
    CHECK_INT(http_from(26901, src_addr, "POST", "/api/v1/rpc/hgw/echo", key, "{\"name\":\"y\"}", &r), 0);
    CHECK_INT(r.status, 200);
    bt_kill(g, SIGKILL);
    bt_kill(w, SIGKILL);
}

/* Item 3: no password in the worker's log nor in the edge's errors. */
static void test_credentials_masked(void) {
    setup_files();
    char path[700];
    snprintf(path, sizeof path, "%s/worker.log", tmpdir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    dup2(fd, 2);
    close(fd);
    const char *wenv[] = {env_schemas, "BUS_LOG_LEVEL=info", NULL};
    pid_t w = bt_spawn_worker(&hgw, wenv);
    CHECK(bt_wait_ping("hgw", 15000) == 0);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    bt_kill(w, SIGKILL);
    size_t n = 0;
    char *text = slurp(path, &n);
    CHECK(text != NULL);
    CHECK_CONTAINS(text, "starting");
    CHECK_CONTAINS(text, "amqp://guest:***@");
    CHECK(strstr(text, "guest:guest@") == NULL);
    /* the edge with broken URLs holding a password */
    const char *cases[][2] = {{"BUS_REDIS_URL=redis://u:TopSecretPw@", "BUS_REDIS_URL"},
                              {"BUS_AMQP_URL=amqp://guest:TopSecretPw@127.0.0.1:notaport/", "BUS_AMQP_URL"}};
    for (int i = 0; i < 2; i++) {
        char addr[64], gw[600], log[700];
        snprintf(addr, sizeof addr, "BUS_HTTP_ADDR=127.0.0.1:%d", 26902);
        snprintf(gw, sizeof gw, "%s/bus-gateway", build_dir());
        snprintf(log, sizeof log, "%s/gw-bad-%d.log", tmpdir, i);
        const char *env[] = {addr, env_schemas, cases[i][0], NULL};
        char *argv[] = {gw, NULL};
        pid_t g = bt_spawn_program(argv, env, log);
        CHECK(bt_wait_exit(g, 10000) != 0);
        char *t = slurp(log, NULL);
        CHECK(t != NULL);
        CHECK_CONTAINS(t, cases[i][1]);
        CHECK_CONTAINS(t, ":***@");
        CHECK(strstr(t, "TopSecretPw") == NULL);
    }
    char m[200];
    CHECK_STR(bus_url_mask("amqp://u:p@w@h:1/v", m, sizeof m), "amqp://u:***@h:1/v");
    CHECK_STR(bus_url_mask("redis://h:6379/0", m, sizeof m), "redis://h:6379/0");
    CHECK_STR(bus_url_mask("mongodb://user@h/db", m, sizeof m), "mongodb://user@h/db");
}

/* Every line of the file is JSON and valid UTF-8. */
static int lines_valid(char *text, int *count) {
    int bad = 0;
    *count = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] != '{') continue;
        (*count)++;
        cJSON *j = cJSON_Parse(line);
        if (!j || bus_utf8_invalid_at(line, strlen(line)) >= 0) {
            fprintf(stderr, "bad line: %s\n", line);
            bad++;
        }
        cJSON_Delete(j);
    }
    return bad;
}

/* Item 4: a body that is not UTF-8 is a 400 naming the byte; invalid UTF-8
 * in a path keeps the access log valid UTF-8 JSON. */
static void test_invalid_utf8(void) {
    setup_files();
    pid_t w = start_hgw();
    const char *env[] = {"BUS_RATE_LIMIT=0", NULL};
    pid_t g = start_gateway(26903, env);
    static resp_t r;
    CHECK_INT(http(26903, "POST", "/api/v1/rpc/hgw/echo", "Content-Type: application/json\r\n",
                   "{\"name\":\"ab\xff\xfe\"}", &r), 0);
    CHECK_INT(r.status, 400);
    CHECK_CONTAINS(r.body, "not valid UTF-8 at byte 11");
    CHECK_INT(http(26903, "POST", "/api/v1/events/hgw.created", "Content-Type: application/json\r\n",
                   "{\"name\":\"\xc0\xaf\"}", &r), 0);
    CHECK_INT(r.status, 400);
    CHECK_CONTAINS(r.body, "not valid UTF-8 at byte 9");
    CHECK_INT(http(26903, "POST", "/api/v1/rpc/hgw/echo", "Content-Type: application/json\r\n",
                   "{\"name\":\"\xc3\xa9t\xc3\xa9\"}", &r), 0);
    CHECK_INT(r.status, 200); /* good UTF-8 goes through */
    /* binary mode: attributes in headers are UTF-8 too (their structured form is JSON) */
    bus_header_t h[] = {{"ce-id", 5, "x", 1}, {"ce-source", 9, "s\xff", 2}, {"ce-type", 7, "t.x", 3},
                        {"ce-specversion", 14, "1.0", 3}};
    bus_envelope_t parsed;
    char err[256];
    CHECK_INT(bus_envelope_parse_binary(h, 4, "{}", 2, &parsed, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "not valid UTF-8");
    const char *bad_path = "GET /api/v1/\xff\xfe\xc3/x\x80 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    CHECK_INT(raw(26903, NULL, bad_path, strlen(bad_path), &r), 0);
    CHECK_INT(r.status, 404);
    CHECK(bus_utf8_invalid_at(r.body, r.body_len) < 0);
    usleep(300000); /* the access log is written in batches */
    bt_kill(g, SIGKILL);
    bt_kill(w, SIGKILL);
    int count = 0;
    char *text = slurp(gw_log, NULL);
    CHECK(text != NULL);
    CHECK(strstr(text, "\\ufffd") != NULL); /* the bad bytes, replaced */
    CHECK_INT(lines_valid(text, &count), 0);
    CHECK(count >= 4);
}

/* Item 5: with API keys, a structured CloudEvent's source carries the key. */
static int tap_got;
static char tap_body[4096];
static void on_tap(bus_msg_t *m, void *data) {
    (void)data;
    snprintf(tap_body, sizeof tap_body, "%.*s", (int)m->len, m->body);
    tap_got = 1;
    bus_msg_ack(m);
}

static void test_structured_event_source_carries_key(void) {
    setup_files();
    bt_client_t c;
    bt_client_open(&c);
    bus_queue_options_t tmp = {.exclusive = 1, .auto_delete = 1};
    CHECK_INT(bus_conn_declare_queue(c.conn, "hard.tap", &tmp), 0);
    CHECK_INT(bus_conn_bind(c.conn, "hard.tap", BUS_EXCHANGE_EVENTS, "hgw.created"), 0);
    CHECK_INT(bus_conn_consume(c.conn, "hard.tap", 0, 0, amqp_empty_table, on_tap, NULL, NULL, 0), 0);
    const char *env[] = {env_keys, "BUS_RATE_LIMIT=0", NULL};
    pid_t g = start_gateway(26904, env);
    static resp_t r;
    char hdr[300];
    snprintf(hdr, sizeof hdr, "Content-Type: application/cloudevents+json\r\nX-API-Key: %s\r\n", secret);
    CHECK_INT(http(26904, "POST", "/api/v1/events/hgw.created", hdr,
                   "{\"specversion\":\"1.0\",\"id\":\"mine-1\",\"source\":\"bus-alliances\",\"type\":\"hgw.created\","
                   "\"data\":{\"name\":\"x\"}}", &r), 0);
    CHECK_INT(r.status, 202);
    CHECK_INT(bt_run_until(&c, &tap_got, 10000), 0);
    char want[200];
    snprintf(want, sizeof want, "\"source\":\"bus-gateway/%s/bus-alliances\"", key_id);
    CHECK_CONTAINS(tap_body, want);
    bt_kill(g, SIGKILL);
    bt_client_close(&c);
}

static long metric(int port, const char *name) {
    static resp_t r;
    if (http(port, "GET", "/metrics", NULL, NULL, &r) != 0) return -1;
    const char *p = strstr(r.body, name);
    while (p && (p > r.body && p[-1] != '\n')) p = strstr(p + 1, name);
    return p ? atol(p + strlen(name) + 1) : 0;
}

/* Item 6: a connection reset before the edge accepted it is refused, not
 * served with an empty peer address. */
static void test_reset_before_accept(void) {
    setup_files();
    const char *env[] = {"BUS_RATE_LIMIT=0", NULL};
    pid_t g = start_gateway(26905, env);
    CHECK_INT(kill(g, SIGSTOP), 0); /* nothing is accepted meanwhile */
    const char *req = "GET /api/v1/openapi.json HTTP/1.1\r\nHost: t\r\n\r\n";
    for (int i = 0; i < 5; i++) {
        int fd = connect_from(26905, NULL);
        CHECK(fd >= 0);
        CHECK_INT(send_all(fd, req, strlen(req)), 0);
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd); /* RST */
    }
    usleep(100000);
    CHECK_INT(kill(g, SIGCONT), 0);
    usleep(500000);
    long refused = metric(26905, "bus_http_connections_refused_no_peer_total");
    usleep(300000);
    bt_kill(g, SIGKILL);
    char *text = slurp(gw_log, NULL);
    CHECK(text != NULL);
    CHECK(strstr(text, "\"peer\":\"\"") == NULL);
    CHECK(strstr(text, "openapi.json") == NULL); /* none of them was served */
    fprintf(stderr, "connections refused without a peer address: %ld\n", refused);
    CHECK(refused >= 1);
}

/* GET /api/docs in a real headless browser: every operation of the OpenAPI
 * document is on the page, with its schema and an example. */
static void test_api_docs_in_browser(void) {
    const char *candidates[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", NULL};
    const char *browser = NULL;
    for (int i = 0; candidates[i]; i++)
        if (access(candidates[i], X_OK) == 0) browser = candidates[i];
    setup_files();
    const char *env[] = {"BUS_RATE_LIMIT=0", NULL};
    pid_t g = start_gateway(26906, env);
    static resp_t r;
    CHECK_INT(http(26906, "GET", "/api/v1/openapi.json", NULL, NULL, &r), 0);
    cJSON *doc = cJSON_Parse(r.body);
    CHECK(doc != NULL);
    int ops = 0;
    const cJSON *item, *op;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(doc, "paths")) cJSON_ArrayForEach(op, item) ops++;
    cJSON_Delete(doc);
    CHECK(ops >= 9);
    CHECK_INT(http(26906, "GET", "/api/docs", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.head, "text/html");
    CHECK(strstr(r.body, "src=\"http") == NULL && strstr(r.body, "href=\"http") == NULL); /* no external assets */
    if (!browser) {
        bt_kill(g, SIGKILL);
        SKIP("no chromium (deploy/local/deps.sh installs it)");
        return;
    }
    char profile[700], out[700], url[128], udd[800];
    snprintf(profile, sizeof profile, "%s/chromium-profile", tmpdir);
    snprintf(out, sizeof out, "%s/docs-dom.html", tmpdir);
    snprintf(url, sizeof url, "http://127.0.0.1:26906/api/docs");
    snprintf(udd, sizeof udd, "--user-data-dir=%s", profile);
    char *argv[] = {(char *)browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", udd, "--dump-dom", url, NULL};
    pid_t b = bt_spawn_program(argv, NULL, out);
    int st = bt_wait_exit(b, 60000);
    bt_kill(g, SIGKILL);
    char *dom = slurp(out, NULL);
    CHECK(dom != NULL);
    if (st != 0) fprintf(stderr, "%s exited %d: %.2000s\n", browser, st, dom);
    CHECK_INT(st, 0);
    /* the inline script ran in the browser: it counted the operations and built the contents */
    char want[64];
    snprintf(want, sizeof want, "data-operations=\"%d\"", ops);
    CHECK_CONTAINS(dom, want);
    CHECK_CONTAINS(dom, "<a href=\"#POST/api/v1/rpc/hgw/echo\">");
    CHECK_CONTAINS(dom, "<code>/api/v1/events/hgw.created</code>");
    CHECK_CONTAINS(dom, "echoes its params");
    CHECK_CONTAINS(dom, "\"minLength\":\t1"); /* the schema */
    CHECK_CONTAINS(dom, "\"count\":\t3");     /* the example, made from it */
}

BUS_TESTS({"oversized_messages_dead_lettered_once", test_oversized_messages_dead_lettered_once, 90},
          {"legacy_queue_without_dead_letter_arguments", test_legacy_queue_without_dead_letter_arguments, 30},
          {"error_codes_and_empty_api_key", test_error_codes_and_empty_api_key, 30},
          {"lookups_and_public_rate_limits", test_lookups_and_public_rate_limits, 60},
          {"credentials_masked", test_credentials_masked, 30}, {"invalid_utf8", test_invalid_utf8, 30},
          {"structured_event_source_carries_key", test_structured_event_source_carries_key, 30},
          {"reset_before_accept", test_reset_before_accept, 30},
          {"api_docs_in_browser", test_api_docs_in_browser, 90})
