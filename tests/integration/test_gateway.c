/* bus-gateway against a real broker, Redis and a worker: every route and
 * every error of the edge, X-Request-Id propagation, CORS, rate limits,
 * Redis and broker outages, protocol edge cases (half a request, pipelining),
 * 1,000 keep-alive connections, SO_REUSEPORT, graceful SIGTERM.
 *
 * The gateway runs as the real program (build/bus-gateway) on ports
 * 26700-26799; the worker "gwtest" is defined here. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/apikey.h"
#include "bus/error.h"
#include "bus/topology.h"

/* ---- the worker ---- */

static void m_echo(bus_request_t *req) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddItemToObject(d, "params", cJSON_Duplicate(bus_request_params(req), 1));
    cJSON_AddStringToObject(d, "correlation_id", bus_request_correlation_id(req));
    cJSON_AddStringToObject(d, "caller", bus_request_caller(req));
    bus_reply_ok(req, d);
}


static void m_fail(bus_request_t *req) { bus_reply_error(req, BUS_ECONFLICT, "this method always conflicts"); }

static const bus_method_t methods[] = {{"echo", m_echo}, {"slow", bt_method_slow}, {"fail", m_fail}, {NULL, NULL}};
static const bus_worker_def_t gwtest = {.service = "gwtest", .summary = "gateway test worker", .methods = methods};

/* ---- fixtures: files, processes ---- */

static char tmpdir[512], schemas_dir[600], keys_path[600], env_schemas[700], env_keys[700];
static char secret_full[128], secret_limited[128], secret_rl[128], secret_rl2[128], secret_rl3[128], secret_rl4[128],
    secret_rl5[128], id_rl5[32];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void setup_files(void) {
    const char *t = getenv("BUS_TEST_TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/gw-%d", t ? t : "/tmp", (int)getpid());
    mkdir(tmpdir, 0755);
    snprintf(schemas_dir, sizeof schemas_dir, "%s/schemas", tmpdir);
    mkdir(schemas_dir, 0755);
    char p[800];
    snprintf(p, sizeof p, "%s/rpc", schemas_dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/events", schemas_dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/rpc/gwtest.echo.json", schemas_dir);
    write_file(p, "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"title\":\"gwtest.echo\","
                  "\"definitions\":{\"params\":{\"type\":\"object\",\"required\":[\"name\"],"
                  "\"properties\":{\"name\":{\"type\":\"string\"}}},\"result\":{\"type\":\"object\"}}}");
    snprintf(p, sizeof p, "%s/events/gwtest.created.json", schemas_dir);
    write_file(p, "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"type\":\"object\","
                  "\"required\":[\"name\"],\"properties\":{\"name\":{\"type\":\"string\"}}}");
    char line1[1024], line2[1024], err[256];
    CHECK_INT(bus_apikey_generate("full", "rpc:gwtest.*,events:gwtest.*", secret_full, sizeof secret_full, line1,
                                  sizeof line1, err, sizeof err), 0);
    CHECK_INT(bus_apikey_generate("limited", "rpc:gwtest.echo", secret_limited, sizeof secret_limited, line2,
                                  sizeof line2, err, sizeof err), 0);
    /* keys with a fresh id per run: rate-limit windows in Redis outlive a run */
    char line3[1024], line4[1024], id3[32], id4[32];
    snprintf(id3, sizeof id3, "rl%d", (int)getpid());
    snprintf(id4, sizeof id4, "rlb%d", (int)getpid());
    CHECK_INT(bus_apikey_generate(id3, "rpc:gwtest.*", secret_rl, sizeof secret_rl, line3, sizeof line3, err,
                                  sizeof err), 0);
    CHECK_INT(bus_apikey_generate(id4, "rpc:gwtest.*", secret_rl2, sizeof secret_rl2, line4, sizeof line4, err,
                                  sizeof err), 0);
    char line5[1024], id5[32];
    snprintf(id5, sizeof id5, "rlc%d", (int)getpid());
    CHECK_INT(bus_apikey_generate(id5, "rpc:gwtest.*", secret_rl3, sizeof secret_rl3, line5, sizeof line5, err,
                                  sizeof err), 0);
    char line6[1024], id6[32];
    snprintf(id6, sizeof id6, "rld%d", (int)getpid());
    CHECK_INT(bus_apikey_generate(id6, "rpc:gwtest.*", secret_rl4, sizeof secret_rl4, line6, sizeof line6, err,
                                  sizeof err), 0);
    char line7[1024];
    snprintf(id_rl5, sizeof id_rl5, "rle%d", (int)getpid());
    CHECK_INT(bus_apikey_generate(id_rl5, "rpc:gwtest.*", secret_rl5, sizeof secret_rl5, line7, sizeof line7, err,
                                  sizeof err), 0);
    snprintf(keys_path, sizeof keys_path, "%s/keys.jsonl", tmpdir);
    char text[7700];
    snprintf(text, sizeof text, "# test keys\n%s\n%s\n\n%s\n%s\n%s\n%s\n%s\n", line1, line2, line3, line4, line5,
             line6, line7);
    write_file(keys_path, text);
    snprintf(env_schemas, sizeof env_schemas, "BUS_SCHEMAS_DIR=%s", schemas_dir);
    snprintf(env_keys, sizeof env_keys, "BUS_API_KEYS_FILE=%s", keys_path);
}

static pid_t start_worker(void) {
    const char *env[] = {env_schemas, NULL};
    pid_t pid = bt_spawn_worker(&gwtest, env);
    CHECK(bt_wait_ping("gwtest", 15000) == 0);
    return pid;
}

static const char *build_dir(void) {
    const char *b = getenv("BUS_TEST_BUILD");
    return b ? b : "build";
}

/* ---- a tiny HTTP client on raw sockets ---- */

typedef struct {
    int status;
    char head[8192];
    char body[1 << 20];
    size_t body_len;
} resp_t;

static int connect_port(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 15};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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

/* Reads one response (Content-Length framed) from fd. Bytes read beyond it
 * stay in the per-fd carry buffer (pipelining). 0 or -1. */
static char carry[1 << 20]; /* the OpenAPI document grows with every domain's schemas */
static size_t carry_len;
static int carry_fd = -1;

static int read_response(int fd, resp_t *r) {
    if (carry_fd != fd) carry_len = 0, carry_fd = fd;
    memset(r, 0, sizeof *r);
    for (;;) {
        char *end = memmem(carry, carry_len, "\r\n\r\n", 4);
        if (end) {
            size_t hl = (size_t)(end - carry) + 4;
            if (hl >= sizeof r->head) return -1;
            memcpy(r->head, carry, hl);
            r->head[hl] = 0;
            const char *cl = strcasestr(r->head, "\r\ncontent-length:");
            size_t blen = cl ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
            if (blen >= sizeof r->body) return -1;
            if (carry_len >= hl + blen) {
                memcpy(r->body, carry + hl, blen);
                r->body[blen] = 0;
                r->body_len = blen;
                memmove(carry, carry + hl + blen, carry_len - hl - blen);
                carry_len -= hl + blen;
                r->status = atoi(r->head + 9);
                return 0;
            }
        }
        if (carry_len == sizeof carry) return -1;
        ssize_t n = read(fd, carry + carry_len, sizeof carry - carry_len);
        if (n <= 0) return -1;
        carry_len += (size_t)n;
    }
}

/* One request on a new connection. extra: more header lines, each ending in \r\n. */
static int http(int port, const char *method, const char *path, const char *extra, const char *body, resp_t *r) {
    int fd = connect_port(port);
    if (fd < 0) return -1;
    char req[70000];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n%s",
                     method, path, extra ? extra : "", blen, body ? body : "");
    int rc = send_all(fd, req, (size_t)n) == 0 ? read_response(fd, r) : -1;
    close(fd);
    carry_fd = -1;
    return rc;
}

static int post_json(int port, const char *path, const char *key, const char *body, resp_t *r) {
    char extra[512];
    snprintf(extra, sizeof extra, "Content-Type: application/json\r\n%s%s%s", key ? "X-API-Key: " : "",
             key ? key : "", key ? "\r\n" : "");
    return http(port, "POST", path, extra, body, r);
}

/* The value of a response header (case-insensitive), copied; "" if absent. */
static const char *header(const resp_t *r, const char *name) {
    static char v[512];
    v[0] = 0;
    char pat[128];
    snprintf(pat, sizeof pat, "\r\n%s:", name);
    const char *p = strcasestr(r->head, pat);
    if (!p) return v;
    p += strlen(pat);
    while (*p == ' ') p++;
    size_t n = strcspn(p, "\r\n");
    if (n >= sizeof v) n = sizeof v - 1;
    memcpy(v, p, n);
    v[n] = 0;
    return v;
}

static pid_t start_gateway_log(int port, const char *const *more_env, const char *log) {
    char addr[64], gw[600];
    snprintf(addr, sizeof addr, "BUS_HTTP_ADDR=127.0.0.1:%d", port);
    snprintf(gw, sizeof gw, "%s/bus-gateway", build_dir());
    const char *env[32] = {addr, env_schemas, "BUS_LOG_LEVEL=warn", NULL};
    size_t k = 3;
    for (size_t i = 0; more_env && more_env[i] && k < 30; i++) env[k++] = more_env[i];
    env[k] = NULL;
    char *argv[] = {gw, NULL};
    char logpath[700];
    if (!log) snprintf(logpath, sizeof logpath, "%s/gateway-%d.log", tmpdir, port);
    pid_t pid = bt_spawn_program(argv, env, log ? log : logpath);
    /* up when it answers its health route and the broker is connected */
    double end = bt_now_ms() + 15000;
    resp_t *r = malloc(sizeof *r);
    while (bt_now_ms() < end) {
        if (http(port, "GET", "/api/v1/health", NULL, NULL, r) == 0 && r->status == 200) break;
        usleep(50000);
    }
    CHECK_INT(r->status, 200);
    free(r);
    return pid;
}

static pid_t start_gateway(int port, const char *const *more_env) { return start_gateway_log(port, more_env, NULL); }

/* ---- tests ---- */

/* An id the edge made: "<16 hex>.<n>" (see pick_request_id). */
static int made_id(const char *id) {
    if (!id || strlen(id) < 18 || id[16] != '.') return 0;
    for (int i = 0; i < 16; i++)
        if (!strchr("0123456789abcdef", id[i])) return 0;
    for (const char *p = id + 17; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return 1;
}

static void test_public_routes(void) {
    setup_files();
    const char *env[] = {env_keys, NULL};
    pid_t g = start_gateway(26701, env);
    static resp_t r;
    CHECK_INT(http(26701, "GET", "/", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.body, "\"name\":\"bus\"");
    CHECK_CONTAINS(r.body, "\"links\"");
    CHECK(made_id(header(&r, "X-Request-Id")));
    CHECK_INT(http(26701, "GET", "/api/v1/health", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.body, "\"status\":\"ok\"");
    CHECK_CONTAINS(r.body, "\"broker\":\"up\"");
    CHECK_CONTAINS(r.body, "\"redis\":\"up\"");
    CHECK_CONTAINS(r.body, "\"store\":\"none\"");
    CHECK_INT(http(26701, "GET", "/api/v1/openapi.json", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.body, "\"openapi\":\"3.1.0\"");
    CHECK_CONTAINS(r.body, "\"/api/v1/rpc/gwtest/echo\"");
    CHECK_CONTAINS(r.body, "\"/api/v1/events/gwtest.created\"");
    CHECK_CONTAINS(r.body, "#/components/schemas/gwtest.echo/definitions/params");
    cJSON *doc = cJSON_Parse(r.body);
    CHECK(doc != NULL);
    cJSON_Delete(doc);
    CHECK_INT(http(26701, "GET", "/metrics", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.body, "bus_gateway_requests_total{route=\"openapi\",status=\"200\"} 1");
    CHECK_CONTAINS(r.body, "process_resident_memory_bytes");
    /* 404 unknown route, 405 wrong method (with Allow) */
    CHECK_INT(http(26701, "GET", "/nope", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 404);
    CHECK_CONTAINS(r.body, "\"error\":\"not_found\"");
    CHECK_CONTAINS(r.body, "\"request_id\":\"");
    CHECK_INT(http(26701, "POST", "/api/v1/health", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 405);
    CHECK_STR(header(&r, "Allow"), "GET, HEAD, OPTIONS");
    CHECK_INT(http(26701, "GET", "/api/v1/rpc/gwtest/echo", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 405);
    CHECK_STR(header(&r, "Allow"), "POST, OPTIONS");
    /* 431: a head over BUS_MAX_HEADER_BYTES, answered by the server with our body */
    static char hdr[20000];
    memset(hdr, 'a', sizeof hdr);
    memcpy(hdr, "X-Big: ", 7);
    memcpy(hdr + sizeof hdr - 3, "\r\n", 3);
    CHECK_INT(http(26701, "GET", "/", hdr, NULL, &r), 0);
    CHECK_INT(r.status, 431);
    CHECK_CONTAINS(r.body, "\"status_code\":431");
    CHECK_CONTAINS(r.body, "\"request_id\":\"");
    /* bad names are unknown routes */
    CHECK_INT(post_json(26701, "/api/v1/rpc/Bad%20Name/x", secret_full, "{}", &r), 0);
    CHECK_INT(r.status, 404);
    CHECK_INT(post_json(26701, "/api/v1/events/..bad", secret_full, "{}", &r), 0);
    CHECK_INT(r.status, 404);
    bt_kill(g, SIGKILL);
}

static void test_rpc_route_and_errors(void) {
    setup_files();
    pid_t w = start_worker();
    const char *env[] = {env_keys, "BUS_MAX_BODY_BYTES=4096", "BUS_RPC_TIMEOUT_MS=700", NULL};
    pid_t g = start_gateway(26702, env);
    static resp_t r;
    const int P = 26702;
    /* success, with the request id carried end to end */
    CHECK_INT(http(P, "POST", "/api/v1/rpc/gwtest/echo",
                   "Content-Type: application/json\r\nX-Request-Id: req-abc.123\r\n"
                   "Authorization: Bearer NOPE\r\n",
                   "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 401); /* a wrong bearer */
    char extra[512];
    snprintf(extra, sizeof extra, "Content-Type: application/json\r\nX-Request-Id: req-abc.123\r\nX-API-Key: %s\r\n",
             secret_full);
    CHECK_INT(http(P, "POST", "/api/v1/rpc/gwtest/echo", extra, "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_STR(header(&r, "X-Request-Id"), "req-abc.123");
    CHECK_CONTAINS(r.body, "{\"success\":true,\"data\":{\"params\":{\"name\":\"n\"}");
    CHECK_CONTAINS(r.body, "\"correlation_id\":\"req-abc.123\"");
    CHECK_CONTAINS(r.body, "\"caller\":\"full\"");
    CHECK_CONTAINS(r.body, ",\"request_id\":\"req-abc.123\"}");
    CHECK_STR(header(&r, "X-RateLimit-Limit"), "1200");
    CHECK(atoi(header(&r, "X-RateLimit-Remaining")) >= 1190);
    /* Authorization: Bearer works too */
    snprintf(extra, sizeof extra, "Content-Type: application/json; charset=utf-8\r\nAuthorization: Bearer %s\r\n",
             secret_limited);
    CHECK_INT(http(P, "POST", "/api/v1/rpc/gwtest/echo", extra, "{\"name\":\"m\"}", &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.body, "\"caller\":\"limited\"");
    /* a bad X-Request-Id is replaced */
    CHECK_INT(http(P, "POST", "/api/v1/rpc/gwtest/echo", "X-Request-Id: has space\r\n", NULL, &r), 0);
    CHECK(made_id(header(&r, "X-Request-Id")));
    /* no X-Request-Id: the edge's id reaches the worker as the request's
     * correlation_id (no header needed) and comes back in the body */
    snprintf(extra, sizeof extra, "Content-Type: application/json\r\nX-API-Key: %s\r\n", secret_full);
    CHECK_INT(http(P, "POST", "/api/v1/rpc/gwtest/echo", extra, "{\"name\":\"k\"}", &r), 0);
    CHECK_INT(r.status, 200);
    CHECK(made_id(header(&r, "X-Request-Id")));
    char want[200];
    snprintf(want, sizeof want, "\"correlation_id\":\"%s\"", header(&r, "X-Request-Id"));
    CHECK_CONTAINS(r.body, want);
    /* 401 without a key, 401 unknown key, 403 no scope */
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 401);
    CHECK_CONTAINS(r.body, "\"error\":\"unauthorized\"");
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/echo", "wrong-secret", "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 401);
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/fail", secret_limited, "{}", &r), 0);
    CHECK_INT(r.status, 403);
    CHECK_CONTAINS(r.body, "\"error\":\"permission_denied\"");
    CHECK_CONTAINS(r.body, "rpc:gwtest.fail");
    /* 400 malformed JSON with the offset */
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/echo", secret_full, "{\"name\": tru}", &r), 0);
    CHECK_INT(r.status, 400);
    CHECK_CONTAINS(r.body, "malformed JSON at byte 9");
    /* depth limit */
    char deep[300] = "";
    for (int i = 0; i < 70; i++) strcat(deep, "[");
    for (int i = 0; i < 70; i++) strcat(deep, "]");
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/slow", secret_full, deep, &r), 0);
    CHECK_INT(r.status, 400);
    CHECK_CONTAINS(r.body, "deeper than");
    /* 415 */
    snprintf(extra, sizeof extra, "Content-Type: text/plain\r\nX-API-Key: %s\r\n", secret_full);
    CHECK_INT(http(P, "POST", "/api/v1/rpc/gwtest/echo", extra, "{}", &r), 0);
    CHECK_INT(r.status, 415);
    CHECK_CONTAINS(r.body, "application/json");
    /* missing Content-Type with an empty body = {} (then 422: name is required) */
    snprintf(extra, sizeof extra, "X-API-Key: %s\r\n", secret_full);
    CHECK_INT(http(P, "POST", "/api/v1/rpc/gwtest/echo", extra, NULL, &r), 0);
    CHECK_INT(r.status, 422);
    CHECK_CONTAINS(r.body, "\"error\":\"invalid\"");
    CHECK_CONTAINS(r.body, "name");
    /* 422 with the path */
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/echo", secret_full, "{\"name\":5}", &r), 0);
    CHECK_INT(r.status, 422);
    CHECK_CONTAINS(r.body, "/name");
    /* 413 from the server's limit, with the JSON body and a request id */
    static char big[6000];
    memset(big, ' ', sizeof big - 1);
    big[0] = '{';
    big[sizeof big - 2] = '}';
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/echo", secret_full, big, &r), 0);
    CHECK_INT(r.status, 413);
    CHECK_CONTAINS(r.body, "\"status_code\":413");
    CHECK_CONTAINS(r.body, "\"request_id\":\"");
    CHECK(strlen(header(&r, "X-Request-Id")) > 0);
    /* the worker's error reply: its status, its body, plus request_id */
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/fail", secret_full, "{}", &r), 0);
    CHECK_INT(r.status, 409);
    CHECK_CONTAINS(r.body, "\"error\":\"conflict\"");
    CHECK_CONTAINS(r.body, "always conflicts");
    CHECK_CONTAINS(r.body, "\"request_id\":\"");
    /* unknown method: the worker's 404 */
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/nosuch", secret_full, "{}", &r), 0);
    CHECK_INT(r.status, 404);
    /* unknown service: 404 */
    CHECK_INT(post_json(P, "/api/v1/rpc/gwnosuch/x", secret_full, "{}", &r), 0);
    CHECK_INT(r.status, 403); /* the key has no scope for it: checked first */
    /* 504 timeout */
    double t0 = bt_now_ms();
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/slow", secret_full, "{\"ms\":2000}", &r), 0);
    CHECK_INT(r.status, 504);
    CHECK_CONTAINS(r.body, "\"error\":\"timeout\"");
    CHECK(bt_now_ms() - t0 < 1800);
    /* service status and health of services */
    CHECK_INT(http(P, "GET", "/api/v1/services/gwtest/status", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.body, "\"service\":\"gwtest\"");
    CHECK_INT(http(P, "GET", "/api/v1/services/gwnosuch/status", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 404);
    CHECK_INT(http(P, "GET", "/api/v1/health/services", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.body, "{\"service\":\"gwtest\",\"instances\":1,");
    CHECK_CONTAINS(r.body, "\"service\":\"alliances\"");
    /* the access log has a line per request */
    char logp[700], cmd[800];
    snprintf(logp, sizeof logp, "%s/gateway-%d.log", tmpdir, P);
    snprintf(cmd, sizeof cmd, "grep -c '\"kind\":\"access\".*\"request_id\":\"req-abc.123\".*\"status\":200' %s", logp);
    FILE *f = popen(cmd, "r");
    int lines = 0;
    CHECK(fscanf(f, "%d", &lines) == 1);
    pclose(f);
    CHECK_INT(lines, 1);
    /* 503: no live instance */
    bt_kill(w, SIGKILL);
    usleep(1300 * 1000); /* past the queue-info cache */
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/echo", secret_full, "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 503);
    CHECK_CONTAINS(r.body, "no live instance");
    CHECK_INT(http(P, "GET", "/api/v1/services/gwtest/status", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 503);
    kill(g, SIGTERM);
    CHECK_INT(bt_wait_exit(g, 10000), 0); /* a clean exit (and no leak under ASan) */
}

static void test_unknown_service_open_access(void) {
    setup_files();
    pid_t g = start_gateway(26703, NULL); /* no keys file: open, loopback */
    static resp_t r;
    CHECK_INT(post_json(26703, "/api/v1/rpc/gwnosuchsvc/x", NULL, "{}", &r), 0);
    CHECK_INT(r.status, 404);
    CHECK_CONTAINS(r.body, "unknown service");
    bt_kill(g, SIGKILL);
}

static int tap_got;
static char tap_corr[200], tap_body[2048];
static void on_tap(bus_msg_t *m, void *data) {
    (void)data;
    tap_got++;
    snprintf(tap_corr, sizeof tap_corr, "%s", m->correlation_id);
    snprintf(tap_body, sizeof tap_body, "%.*s", (int)m->len, m->body);
    bus_msg_free(m);
}

static void test_events_route(void) {
    setup_files();
    bt_client_t c;
    bt_client_open(&c);
    bus_queue_options_t qo = {.exclusive = 1, .auto_delete = 1};
    CHECK_INT(bus_topology_declare_exchanges(c.conn), 0);
    CHECK_INT(bus_conn_declare_queue(c.conn, "gwtest.tap", &qo), 0);
    CHECK_INT(bus_conn_bind(c.conn, "gwtest.tap", BUS_EXCHANGE_EVENTS, "gwtest.#"), 0);
    amqp_table_t none = {0, NULL};
    CHECK_INT(bus_conn_consume(c.conn, "gwtest.tap", 1, 0, none, on_tap, NULL, NULL, 0), 0);
    const char *env[] = {env_keys, NULL};
    pid_t g = start_gateway(26704, env);
    static resp_t r;
    const int P = 26704;
    char extra[512];
    snprintf(extra, sizeof extra, "Content-Type: application/json\r\nX-Request-Id: ev-1\r\nX-API-Key: %s\r\n",
             secret_full);
    CHECK_INT(http(P, "POST", "/api/v1/events/gwtest.created", extra, "{\"name\":\"hello\"}", &r), 0);
    CHECK_INT(r.status, 202);
    CHECK_CONTAINS(r.body, "{\"success\":true,\"data\":{\"id\":\"");
    CHECK_CONTAINS(r.body, "\"request_id\":\"ev-1\"");
    cJSON *doc = cJSON_Parse(r.body);
    char id[64];
    snprintf(id, sizeof id, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "data"), "id")));
    cJSON_Delete(doc);
    double end = bt_now_ms() + 5000;
    while (tap_got < 1 && bt_now_ms() < end) uv_run(&c.loop, UV_RUN_NOWAIT), usleep(1000);
    CHECK_INT(tap_got, 1);
    CHECK_STR(tap_corr, "ev-1");
    CHECK_CONTAINS(tap_body, id);
    CHECK_CONTAINS(tap_body, "\"source\":\"bus-gateway/full\"");
    CHECK_CONTAINS(tap_body, "\"data\":{\"name\":\"hello\"}");
    /* 422 schema */
    CHECK_INT(post_json(P, "/api/v1/events/gwtest.created", secret_full, "{\"name\":1}", &r), 0);
    CHECK_INT(r.status, 422);
    CHECK_CONTAINS(r.body, "/name");
    /* 403 scope, 401 no key */
    CHECK_INT(post_json(P, "/api/v1/events/gwtest.created", secret_limited, "{\"name\":\"x\"}", &r), 0);
    CHECK_INT(r.status, 403);
    CHECK_INT(post_json(P, "/api/v1/events/gwtest.created", NULL, "{\"name\":\"x\"}", &r), 0);
    CHECK_INT(r.status, 401);
    /* a structured CloudEvent */
    snprintf(extra, sizeof extra, "Content-Type: application/cloudevents+json\r\nX-API-Key: %s\r\n", secret_full);
    CHECK_INT(http(P, "POST", "/api/v1/events/gwtest.created", extra,
                   "{\"specversion\":\"1.0\",\"id\":\"ce-1\",\"source\":\"bot\",\"type\":\"gwtest.other\",\"data\":{}}",
                   &r), 0);
    CHECK_INT(r.status, 400);
    CHECK_CONTAINS(r.body, "does not match");
    CHECK_INT(http(P, "POST", "/api/v1/events/gwtest.created", extra,
                   "{\"specversion\":\"1.0\",\"id\":\"ce-2\",\"source\":\"bot\",\"type\":\"gwtest.created\",\"data\":{}}",
                   &r), 0);
    CHECK_INT(r.status, 422);
    CHECK_CONTAINS(r.body, "/data");
    CHECK_INT(http(P, "POST", "/api/v1/events/gwtest.created", extra,
                   "{\"specversion\":\"1.0\",\"id\":\"ce-3\",\"source\":\"bot\",\"type\":\"gwtest.created\","
                   "\"data\":{\"name\":\"z\"}}",
                   &r), 0);
    CHECK_INT(r.status, 202);
    CHECK_CONTAINS(r.body, "\"id\":\"ce-3\"");
    /* an event type without a schema is refused: nobody could check it */
    CHECK_INT(post_json(P, "/api/v1/events/gwtest.free", secret_full, "[1,2,3]", &r), 0);
    CHECK_INT(r.status, 422);
    CHECK_CONTAINS(r.body, "no schema for event type gwtest.free");
    CHECK_INT(post_json(P, "/api/v1/events/gwtest.free", secret_full, "[1,2", &r), 0);
    CHECK_INT(r.status, 400);
    kill(g, SIGTERM);
    CHECK_INT(bt_wait_exit(g, 10000), 0); /* a clean exit (and no leak under ASan) */
    bt_client_close(&c);
}

static void test_cors(void) {
    setup_files();
    const char *env[] = {"BUS_CORS_ORIGINS=https://a.example, https://b.example", NULL};
    pid_t g = start_gateway(26705, env);
    static resp_t r;
    CHECK_INT(http(26705, "OPTIONS", "/api/v1/rpc/gwtest/echo",
                   "Origin: https://b.example\r\nAccess-Control-Request-Method: POST\r\n"
                   "Access-Control-Request-Headers: content-type, x-api-key\r\n",
                   NULL, &r), 0);
    CHECK_INT(r.status, 204);
    CHECK_STR(header(&r, "Access-Control-Allow-Origin"), "https://b.example");
    CHECK_STR(header(&r, "Access-Control-Allow-Methods"), "POST, OPTIONS");
    CHECK_STR(header(&r, "Access-Control-Allow-Headers"), "content-type, x-api-key");
    CHECK_INT(http(26705, "OPTIONS", "/api/v1/rpc/gwtest/echo",
                   "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n", NULL, &r), 0);
    CHECK_INT(r.status, 403);
    CHECK_STR(header(&r, "Access-Control-Allow-Origin"), "");
    CHECK_INT(http(26705, "GET", "/api/v1/health", "Origin: https://a.example\r\n", NULL, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_STR(header(&r, "Access-Control-Allow-Origin"), "https://a.example");
    CHECK_CONTAINS(header(&r, "Access-Control-Expose-Headers"), "X-Request-Id");
    bt_kill(g, SIGKILL);
}

static void test_rate_limit(void) {
    setup_files();
    pid_t w = start_worker();
    const char *env[] = {env_keys, "BUS_RATE_LIMIT=3", "BUS_RATE_WINDOW_MS=60000", NULL};
    pid_t g = start_gateway(26706, env);
    static resp_t r;
    for (int i = 0; i < 3; i++) {
        CHECK_INT(post_json(26706, "/api/v1/rpc/gwtest/echo", secret_rl, "{\"name\":\"n\"}", &r), 0);
        CHECK_INT(r.status, 200);
        CHECK_INT(atoi(header(&r, "X-RateLimit-Remaining")), 2 - i);
    }
    CHECK_INT(post_json(26706, "/api/v1/rpc/gwtest/echo", secret_rl, "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 429);
    CHECK_CONTAINS(r.body, "\"error\":\"rate_limited\"");
    int retry = atoi(header(&r, "Retry-After"));
    CHECK(retry >= 1 && retry <= 60);
    CHECK_STR(header(&r, "X-RateLimit-Remaining"), "0");
    CHECK_STR(header(&r, "X-RateLimit-Limit"), "3");
    /* another key has its own budget; health is never limited */
    CHECK_INT(post_json(26706, "/api/v1/rpc/gwtest/echo", secret_rl2, "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 200);
    for (int i = 0; i < 5; i++) {
        CHECK_INT(http(26706, "GET", "/api/v1/health", NULL, NULL, &r), 0);
        CHECK_INT(r.status, 200);
    }
    /* shared by every gateway process: a second one sees the spent budget */
    pid_t g2 = start_gateway(26707, env);
    CHECK_INT(post_json(26707, "/api/v1/rpc/gwtest/echo", secret_rl, "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 429);
    bt_kill(g2, SIGKILL);
    kill(g, SIGTERM);
    CHECK_INT(bt_wait_exit(g, 10000), 0); /* a clean exit (and no leak under ASan) */
    bt_kill(w, SIGKILL);
}

/* Far below the limit requests do not wait for Redis; the limit stays exact. */
static void test_rate_limit_fast_path(void) {
    setup_files();
    pid_t w = start_worker();
    const char *env[] = {env_keys, "BUS_RATE_LIMIT=40", NULL};
    pid_t g = start_gateway(26716, env);
    static resp_t r;
    int ok = 0, limited = 0;
    for (int i = 0; i < 50; i++) {
        CHECK_INT(post_json(26716, "/api/v1/rpc/gwtest/echo", secret_rl3, "{\"name\":\"n\"}", &r), 0);
        if (r.status == 200) {
            ok++;
            CHECK_INT(atoi(header(&r, "X-RateLimit-Remaining")), 40 - (i + 1));
        } else {
            CHECK_INT(r.status, 429);
            limited++;
        }
    }
    CHECK_INT(ok, 40);
    CHECK_INT(limited, 10);
    bt_kill(g, SIGKILL);
    bt_kill(w, SIGKILL);
}

/* 300 requests at once against a limit of 100: exactly 100 pass. */
static void test_rate_limit_concurrent(void) {
    setup_files();
    struct rlimit rl = {4096, 4096};
    setrlimit(RLIMIT_NOFILE, &rl);
    pid_t w = start_worker();
    const char *env[] = {env_keys, "BUS_RATE_LIMIT=100", NULL};
    pid_t g = start_gateway(26717, env);
    enum { N = 300 };
    static int fds[N];
    static resp_t r;
    for (int i = 0; i < N; i++) {
        fds[i] = connect_port(26717);
        CHECK(fds[i] >= 0);
        char req[512];
        int n = snprintf(req, sizeof req,
                         "POST /api/v1/rpc/gwtest/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         "X-API-Key: %s\r\nContent-Length: 12\r\n\r\n{\"name\":\"n\"}",
                         secret_rl4);
        CHECK_INT(send_all(fds[i], req, (size_t)n), 0);
    }
    int ok = 0, limited = 0;
    for (int i = 0; i < N; i++) {
        CHECK_INT(read_response(fds[i], &r), 0);
        ok += r.status == 200;
        limited += r.status == 429;
        close(fds[i]);
    }
    CHECK_INT(ok, 100);
    CHECK_INT(limited, 200);
    kill(g, SIGTERM);
    CHECK_INT(bt_wait_exit(g, 10000), 0);
    bt_kill(w, SIGKILL);
}

/* Far below the limit, requests are counted in batches, one in flight per
 * client: what is admitted while a batch waits for Redis goes in the next
 * one. Redis is paused (CLIENT PAUSE) so that batches stay in flight; every
 * request must still reach the shared count. */
static long redis_count(const char *key_id) {
    char cmd[512];
    const char *port = getenv("BUS_LOCAL_REDIS_PORT");
    snprintf(cmd, sizeof cmd,
             "for k in $(redis-cli -p %s --scan --pattern 'bus:rl:key:%s:*'); do redis-cli -p %s GET \"$k\"; done",
             port ? port : "6379", key_id, port ? port : "6379");
    FILE *f = popen(cmd, "r");
    CHECK(f != NULL);
    long total = 0, v;
    while (fscanf(f, "%ld", &v) == 1) total += v;
    pclose(f);
    return total;
}

static void test_rate_limit_counts_every_request(void) {
    setup_files();
    pid_t w = start_worker();
    const char *env[] = {env_keys, "BUS_RATE_LIMIT=100000", NULL};
    pid_t g = start_gateway(26718, env);
    static resp_t r;
    enum { N = 30 };
    /* the first request of a window waits for Redis; the next go ahead */
    CHECK_INT(post_json(26718, "/api/v1/rpc/gwtest/echo", secret_rl5, "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 200);
    char cmd[256];
    const char *port = getenv("BUS_LOCAL_REDIS_PORT");
    snprintf(cmd, sizeof cmd, "redis-cli -p %s CLIENT PAUSE 700 ALL >/dev/null", port ? port : "6379");
    CHECK(system(cmd) == 0);
    double t0 = bt_now_ms();
    for (int i = 0; i < N; i++) {
        CHECK_INT(post_json(26718, "/api/v1/rpc/gwtest/echo", secret_rl5, "{\"name\":\"n\"}", &r), 0);
        CHECK_INT(r.status, 200);
    }
    CHECK(bt_now_ms() - t0 < 600); /* answered while Redis was paused */
    usleep(1200 * 1000);          /* the pause ends; the waiting batches go */
    CHECK_INT(redis_count(id_rl5), N + 1);
    kill(g, SIGTERM);
    CHECK_INT(bt_wait_exit(g, 10000), 0);
    bt_kill(w, SIGKILL);
}

static void test_redis_down(void) {
    setup_files();
    pid_t w = start_worker();
    const char *env_open[] = {"BUS_RATE_LIMIT=1000", NULL};
    const char *env_closed[] = {"BUS_RATE_LIMIT=1000", "BUS_RATELIMIT_FAIL=closed", NULL};
    pid_t g1 = start_gateway(26708, env_open);
    pid_t g2 = start_gateway(26709, env_closed);
    static resp_t r1, r2, r3, r4, h;
    int s1 = bt_servers("stop-redis");
    usleep(300 * 1000);
    int rc1 = post_json(26708, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &r1);
    int rc2 = post_json(26709, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &r2);
    int rch = http(26708, "GET", "/api/v1/health", NULL, NULL, &h);
    int rcm = http(26708, "GET", "/metrics", NULL, NULL, &r3);
    int s2 = bt_servers("start-redis");
    /* both come back once Redis is up again */
    double end = bt_now_ms() + 10000;
    while (bt_now_ms() < end) {
        if (post_json(26709, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &r4) == 0 && r4.status == 200) break;
        usleep(100000);
    }
    bt_kill(g1, SIGKILL);
    bt_kill(g2, SIGKILL);
    bt_kill(w, SIGKILL);
    CHECK_INT(s1, 0);
    CHECK_INT(s2, 0);
    CHECK_INT(rc1, 0);
    CHECK_INT(r1.status, 200); /* fail-open */
    CHECK_STR(header(&r1, "X-RateLimit-Limit"), "");
    CHECK_INT(rc2, 0);
    CHECK_INT(r2.status, 503); /* fail-closed */
    CHECK_CONTAINS(r2.body, "BUS_RATELIMIT_FAIL=closed");
    CHECK_INT(rch, 0);
    CHECK_CONTAINS(h.body, "\"redis\":\"down\"");
    CHECK_CONTAINS(h.body, "\"status\":\"degraded\"");
    CHECK_INT(rcm, 0);
    /* the RPC call and the health request (a public route, rate limited per address, served anyway) */
    CHECK_CONTAINS(r3.body, "bus_gateway_ratelimit_unavailable_total 2");
    CHECK_INT(r4.status, 200);
}

static void test_broker_restart(void) {
    setup_files();
    pid_t w = start_worker();
    pid_t g = start_gateway(26710, NULL);
    static resp_t r;
    CHECK_INT(post_json(26710, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 200);
    /* a slow call in flight while the broker goes away */
    int fd = connect_port(26710);
    CHECK(fd >= 0);
    const char *slow = "POST /api/v1/rpc/gwtest/slow HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       "Content-Length: 11\r\n\r\n{\"ms\":3000}";
    CHECK_INT(send_all(fd, slow, strlen(slow)), 0);
    usleep(200 * 1000);
    /* killed, not stopped: a clean stop can take longer than the slow call on
     * a loaded machine, and then the call is answered before the broker goes */
    int stopped = bt_servers("kill-rabbit");
    static resp_t inflight, during, health, after;
    int rc_in = read_response(fd, &inflight);
    close(fd);
    carry_fd = -1;
    int rc_d = post_json(26710, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &during);
    int rc_h = http(26710, "GET", "/api/v1/health", NULL, NULL, &health);
    int started = bt_servers("start-rabbit");
    double end = bt_now_ms() + 40000;
    int back = 0;
    while (bt_now_ms() < end) {
        if (post_json(26710, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &after) == 0 && after.status == 200) {
            back = 1;
            break;
        }
        usleep(200 * 1000);
    }
    bt_kill(g, SIGKILL);
    bt_kill(w, SIGKILL);
    CHECK_INT(stopped, 0);
    CHECK_INT(started, 0);
    CHECK_INT(rc_in, 0);
    CHECK_INT(inflight.status, 503);
    CHECK_INT(rc_d, 0);
    CHECK_INT(during.status, 503);
    CHECK_INT(rc_h, 0);
    CHECK_INT(health.status, 503);
    CHECK_CONTAINS(health.body, "\"broker\":\"down\"");
    CHECK(back);
}

/* A resource alarm: RabbitMQ stops reading from publishing connections and,
 * as asked (capability connection.blocked), says so. The edge then answers
 * 503 naming the alarm, instead of letting requests wait in a socket the
 * broker does not read, and serves again once the alarm clears. */
static int broker_ctl(const char *args) {
    const char *dir = getenv("BUS_LOCAL_DIR");
    if (!dir) return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "deploy/local/servers.sh ctl '%s' %s >/dev/null 2>&1", dir, args);
    return system(cmd) == 0 ? 0 : -1;
}
static void clear_memory_alarm(void) { broker_ctl("set_vm_memory_high_watermark 0.3"); } /* servers.sh's value */

static void test_broker_blocked(void) {
    if (!getenv("BUS_LOCAL_DIR")) SKIP("BUS_LOCAL_DIR is not set (no private broker to put under an alarm)");
    setup_files();
    pid_t w = start_worker();
    const int P = 26719;
    pid_t g = start_gateway(P, NULL);
    static resp_t r, health, ev, metrics;
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 200);
    atexit(clear_memory_alarm); /* also when a CHECK below fails */
    CHECK_INT(broker_ctl("set_vm_memory_high_watermark 0.000001"), 0);
    int blocked = 0;
    double end = bt_now_ms() + 15000;
    while (!blocked && bt_now_ms() < end) {
        /* requests keep coming: the edge must refuse, not queue them */
        CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &r), 0);
        blocked = r.status == 503 && strstr(r.body, "refuses messages") != NULL;
        if (!blocked) usleep(100 * 1000);
    }
    CHECK(blocked);
    CHECK_CONTAINS(r.body, "memory");
    CHECK_CONTAINS(r.body, "\"error\":\"unavailable\"");
    double t0 = bt_now_ms();
    CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &r), 0);
    CHECK_INT(r.status, 503);
    CHECK(bt_now_ms() - t0 < 500); /* at once, not at the RPC timeout */
    CHECK_INT(http(P, "POST", "/api/v1/events/gwtest.created", "Content-Type: application/json\r\n",
                   "{\"name\":\"hello\"}", &ev), 0);
    CHECK_INT(ev.status, 503);
    CHECK_CONTAINS(ev.body, "refuses messages");
    CHECK_INT(http(P, "GET", "/api/v1/health", NULL, NULL, &health), 0);
    CHECK_INT(health.status, 503);
    CHECK_CONTAINS(health.body, "\"broker\":\"blocked\"");
    CHECK_INT(http(P, "GET", "/metrics", NULL, NULL, &metrics), 0);
    CHECK_CONTAINS(metrics.body, "bus_amqp_blocked_connections 1");
    CHECK_INT(broker_ctl("set_vm_memory_high_watermark 0.3"), 0);
    int back = 0;
    end = bt_now_ms() + 15000;
    while (!back && bt_now_ms() < end) {
        CHECK_INT(post_json(P, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"n\"}", &r), 0);
        back = r.status == 200;
        if (!back) usleep(100 * 1000);
    }
    CHECK(back);
    CHECK_INT(http(P, "GET", "/api/v1/health", NULL, NULL, &health), 0);
    CHECK_CONTAINS(health.body, "\"broker\":\"up\"");
    CHECK_INT(http(P, "GET", "/metrics", NULL, NULL, &metrics), 0);
    CHECK_CONTAINS(metrics.body, "bus_amqp_blocked_connections 0");
    kill(g, SIGTERM);
    CHECK_INT(bt_wait_exit(g, 10000), 0);
    bt_kill(w, SIGKILL);
}

static void test_half_request_and_pipelining(void) {
    setup_files();
    pid_t w = start_worker();
    pid_t g = start_gateway(26711, NULL);
    static resp_t r;
    /* half a request, then the client disconnects */
    for (int i = 0; i < 20; i++) {
        int fd = connect_port(26711);
        CHECK(fd >= 0);
        const char *half = "POST /api/v1/rpc/gwtest/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"na";
        CHECK_INT(send_all(fd, half, strlen(half)), 0);
        close(fd);
    }
    /* and one that disconnects while its call is in flight */
    int fd = connect_port(26711);
    const char *slow = "POST /api/v1/rpc/gwtest/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{\"ms\":300}";
    CHECK_INT(send_all(fd, slow, strlen(slow)), 0);
    usleep(50 * 1000);
    close(fd);
    usleep(400 * 1000);
    CHECK_INT(post_json(26711, "/api/v1/rpc/gwtest/echo", NULL, "{\"name\":\"still\"}", &r), 0);
    CHECK_INT(r.status, 200);
    /* pipelining: five requests in one write, answered in order on one connection */
    fd = connect_port(26711);
    char batch[4096] = "";
    for (int i = 0; i < 5; i++) {
        char one[512], body[64];
        snprintf(body, sizeof body, "{\"name\":\"p%d\"}", i);
        snprintf(one, sizeof one,
                 "POST /api/v1/rpc/gwtest/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 "X-Request-Id: pipe-%d\r\nContent-Length: %zu\r\n\r\n%s",
                 i, strlen(body), body);
        strcat(batch, one);
    }
    strcat(batch, "GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK_INT(send_all(fd, batch, strlen(batch)), 0);
    for (int i = 0; i < 5; i++) {
        CHECK_INT(read_response(fd, &r), 0);
        CHECK_INT(r.status, 200);
        char want[64];
        snprintf(want, sizeof want, "\"name\":\"p%d\"", i);
        CHECK_CONTAINS(r.body, want);
        snprintf(want, sizeof want, "pipe-%d", i);
        CHECK_STR(header(&r, "X-Request-Id"), want);
    }
    CHECK_INT(read_response(fd, &r), 0);
    CHECK_CONTAINS(r.body, "\"service\":\"gateway\"");
    close(fd);
    carry_fd = -1;
    /* a malformed request line: the server's own 400, in the platform's body */
    fd = connect_port(26711);
    const char *junk = "BLAH\x01 / HTTP/1.1\r\n\r\n";
    CHECK_INT(send_all(fd, junk, strlen(junk)), 0);
    CHECK_INT(read_response(fd, &r), 0);
    CHECK_INT(r.status, 400);
    CHECK_CONTAINS(r.body, "\"request_id\":\"");
    close(fd);
    carry_fd = -1;
    bt_kill(g, SIGKILL);
    bt_kill(w, SIGKILL);
}

static void test_thousand_keepalive_connections(void) {
    setup_files();
    struct rlimit rl = {8192, 8192};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    CHECK(rl.rlim_cur >= 2100);
    pid_t w = start_worker();
    const char *env[] = {"BUS_RATE_LIMIT=0", NULL};
    pid_t g = start_gateway(26712, env);
    enum { N = 1000 };
    static int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = connect_port(26712);
        CHECK(fds[i] >= 0);
    }
    static resp_t r;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            char req[256], body[64];
            snprintf(body, sizeof body, "{\"name\":\"c%d\"}", i);
            int n = snprintf(req, sizeof req,
                             "POST /api/v1/rpc/gwtest/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n%s",
                             strlen(body), body);
            CHECK_INT(send_all(fds[i], req, (size_t)n), 0);
        }
        for (int i = 0; i < N; i++) {
            CHECK_INT(read_response(fds[i], &r), 0);
            CHECK_INT(r.status, 200);
            char want[64];
            snprintf(want, sizeof want, "\"name\":\"c%d\"", i);
            CHECK_CONTAINS(r.body, want);
        }
    }
    for (int i = 0; i < N; i++) close(fds[i]);
    bt_kill(g, SIGKILL);
    bt_kill(w, SIGKILL);
}

static void test_two_gateways_one_port(void) {
    setup_files();
    char log1[700], log2[700];
    snprintf(log1, sizeof log1, "%s/reuse1.log", tmpdir);
    snprintf(log2, sizeof log2, "%s/reuse2.log", tmpdir);
    const char *env[] = {"BUS_LOG_LEVEL=info", NULL};
    pid_t g1 = start_gateway_log(26713, env, log1);
    pid_t g2 = start_gateway_log(26713, env, log2);
    /* the health check may have been answered by the first one: wait for
     * the second to say it listens */
    double end = bt_now_ms() + 15000;
    int listening = 0;
    while (!listening && bt_now_ms() < end) {
        FILE *f = fopen(log2, "r");
        char line[2048];
        while (f && fgets(line, sizeof line, f))
            if (strstr(line, "listening on")) listening = 1;
        if (f) fclose(f);
        if (!listening) usleep(50000);
    }
    CHECK(listening);
    static resp_t r;
    for (int i = 0; i < 200; i++) {
        CHECK_INT(http(26713, "GET", "/", NULL, NULL, &r), 0);
        CHECK_INT(r.status, 200);
    }
    usleep(100 * 1000);
    int counts[2];
    const char *logs[2] = {log1, log2};
    for (int k = 0; k < 2; k++) {
        char cmd[800];
        snprintf(cmd, sizeof cmd, "grep -c '\"route\":\"root\"' %s", logs[k]);
        FILE *f = popen(cmd, "r");
        CHECK(fscanf(f, "%d", &counts[k]) == 1);
        pclose(f);
    }
    CHECK(counts[0] > 10);
    CHECK(counts[1] > 10);
    /* one stops gracefully (exit 0); the other keeps serving the port */
    kill(g1, SIGTERM);
    CHECK_INT(bt_wait_exit(g1, 10000), 0);
    for (int i = 0; i < 20; i++) {
        CHECK_INT(http(26713, "GET", "/", NULL, NULL, &r), 0);
        CHECK_INT(r.status, 200);
    }
    bt_kill(g2, SIGKILL);
}

static void test_sigterm_finishes_in_flight(void) {
    setup_files();
    pid_t w = start_worker();
    pid_t g = start_gateway(26714, NULL);
    int fd = connect_port(26714);
    const char *slow = "POST /api/v1/rpc/gwtest/slow HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       "Content-Length: 10\r\n\r\n{\"ms\":600}";
    CHECK_INT(send_all(fd, slow, strlen(slow)), 0);
    usleep(150 * 1000);
    kill(g, SIGTERM);
    static resp_t r;
    CHECK_INT(read_response(fd, &r), 0);
    CHECK_INT(r.status, 200);
    CHECK_CONTAINS(r.body, "\"slept\":true");
    close(fd);
    carry_fd = -1;
    CHECK_INT(bt_wait_exit(g, 10000), 0);
    bt_kill(w, SIGKILL);
}

static void test_bad_settings(void) {
    setup_files();
    char gw[600];
    snprintf(gw, sizeof gw, "%s/bus-gateway", build_dir());
    char *argv[] = {gw, NULL};
    char logp[700];
    snprintf(logp, sizeof logp, "%s/bad.log", tmpdir);
    const char *e1[] = {"BUS_RATE_LIMIT=lots", NULL};
    CHECK_INT(bt_wait_exit(bt_spawn_program(argv, e1, logp), 5000), 2);
    const char *e2[] = {"BUS_HTTP_ADDR=0.0.0.0:26715", NULL}; /* open access off loopback */
    CHECK_INT(bt_wait_exit(bt_spawn_program(argv, e2, logp), 5000), 2);
    const char *e3[] = {"BUS_API_KEYS_FILE=/nonexistent/keys", NULL};
    CHECK_INT(bt_wait_exit(bt_spawn_program(argv, e3, logp), 5000), 2);
    const char *e4[] = {"BUS_RATELIMIT_FAIL=maybe", NULL};
    CHECK_INT(bt_wait_exit(bt_spawn_program(argv, e4, logp), 5000), 2);
    FILE *f = fopen(logp, "r");
    static char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    CHECK_CONTAINS(text, "BUS_RATE_LIMIT=lots");
    CHECK_CONTAINS(text, "loopback");
    CHECK_CONTAINS(text, "BUS_API_KEYS_FILE");
    CHECK_CONTAINS(text, "BUS_RATELIMIT_FAIL=maybe");
}

/* Follows a local "$ref" ("#/a/b") from the document root; NULL when it dangles. */
static const cJSON *resolve_pointer(const cJSON *root, const char *ref) {
    if (strncmp(ref, "#/", 2) != 0) return NULL;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", ref + 2);
    const cJSON *node = root;
    for (char *save = NULL, *part = strtok_r(buf, "/", &save); part && node; part = strtok_r(NULL, "/", &save))
        node = cJSON_GetObjectItemCaseSensitive(node, part);
    return node;
}

static int dangling_refs(const cJSON *root, const cJSON *node, char *first, size_t cap) {
    int n = 0;
    const cJSON *ref = cJSON_IsObject(node) ? cJSON_GetObjectItemCaseSensitive(node, "$ref") : NULL;
    if (cJSON_IsString(ref) && !resolve_pointer(root, ref->valuestring)) {
        if (!first[0]) snprintf(first, cap, "%s", ref->valuestring);
        n++;
    }
    for (const cJSON *c = node ? node->child : NULL; c; c = c->next) n += dangling_refs(root, c, first, cap);
    return n;
}

/* The OpenAPI document of the platform's real schemas: every operation is
 * there and every $ref (including those into schemas/common.json) resolves. */
static void test_openapi_of_repo_schemas_resolves(void) {
    setup_files();
    char dir[700];
    const char *repo = getenv("BUS_SCHEMAS_DIR");
    CHECK(repo != NULL);
    snprintf(dir, sizeof dir, "BUS_SCHEMAS_DIR=%s", repo);
    const char *env[] = {dir, NULL};
    pid_t g = start_gateway(26702, env);
    static resp_t r;
    CHECK_INT(http(26702, "GET", "/api/v1/openapi.json", NULL, NULL, &r), 0);
    CHECK_INT(r.status, 200);
    cJSON *doc = cJSON_Parse(r.body);
    CHECK(doc != NULL);
    const cJSON *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
    CHECK(cJSON_GetObjectItemCaseSensitive(paths, "/api/v1/rpc/alliances/set_rank") != NULL);
    CHECK(cJSON_GetObjectItemCaseSensitive(paths, "/api/v1/events/alliance.member.joined") != NULL);
    char first[512] = "";
    int n = dangling_refs(doc, doc, first, sizeof first);
    if (n) fprintf(stderr, "  %d dangling refs, e.g. %s\n", n, first);
    CHECK_INT(n, 0);
    cJSON_Delete(doc);
    kill(g, SIGTERM);
    CHECK_INT(bt_wait_exit(g, 5000), 0);
}

BUS_TESTS({"openapi_of_repo_schemas_resolves", test_openapi_of_repo_schemas_resolves, 30},
          {"public_routes", test_public_routes, 30}, {"rpc_route_and_errors", test_rpc_route_and_errors, 60},
          {"unknown_service_open_access", test_unknown_service_open_access, 30},
          {"events_route", test_events_route, 30}, {"cors", test_cors, 30}, {"rate_limit", test_rate_limit, 40},
          {"rate_limit_fast_path", test_rate_limit_fast_path, 40},
          {"rate_limit_counts_every_request", test_rate_limit_counts_every_request, 30},
          {"rate_limit_concurrent", test_rate_limit_concurrent, 40},
          {"redis_down", test_redis_down, 60}, {"broker_blocked", test_broker_blocked, 60}, {"broker_restart", test_broker_restart, 120},
          {"half_request_and_pipelining", test_half_request_and_pipelining, 40},
          {"thousand_keepalive_connections", test_thousand_keepalive_connections, 90},
          {"two_gateways_one_port", test_two_gateways_one_port, 40},
          {"sigterm_finishes_in_flight", test_sigterm_finishes_in_flight, 30},
          {"bad_settings", test_bad_settings, 30})
