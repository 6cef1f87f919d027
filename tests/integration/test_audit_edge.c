/* The audit trail at the HTTP edge, with real HTTP clients (libcurl, and a
 * raw socket that never reads): GET /api/v1/audit/stream (Server-Sent
 * Events: every record with its stream offset as id, resumed with
 * Last-Event-ID, keep-alive comments, a slow reader cut off while the
 * others go on), GET /api/v1/audit (paged query), the audit:read scope, and
 * POST /api/v1/events refusing a type without a schema. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/publish.h"
#include "bus/topology.h"

/* below the ephemeral range (32768 and up), where an outgoing connection could
 * hold it: the tests' HTTP ports are 26000-27999 */
#define PORT 27180

static char db_path[512];
static const char *tmpdir(void) { return getenv("BUS_TEST_TMPDIR") ? getenv("BUS_TEST_TMPDIR") : "/tmp"; }
static const char *build(void) { return getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build"; }

static void fresh(const char *test) {
    snprintf(db_path, sizeof db_path, "%s/audit-edge-%s.db", tmpdir(), test);
    char p[600];
    unlink(db_path);
    snprintf(p, sizeof p, "%s-wal", db_path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", db_path);
    unlink(p);
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "events.audit");
    bt_delete_queue(&c, "audit.events");
    bt_delete_queue(&c, "rpc.audit");
    bt_delete_queue(&c, BUS_AUDIT_STREAM);
    bt_client_close(&c);
}

/* audit.events is durable and bound to every event: once its worker is
 * gone, the tests that follow would fill it for nobody */
static void drop_event_queue(void) {
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "audit.events");
    bt_client_close(&c);
}

static pid_t spawn(const char *prog, const char *const *env, const char *log) {
    char path[600], logp[700];
    snprintf(path, sizeof path, "%s/%s", build(), prog);
    snprintf(logp, sizeof logp, "%s/%s", tmpdir(), log);
    char *argv[] = {path, NULL};
    pid_t pid = bt_spawn_program(argv, env, logp);
    CHECK(pid > 0);
    return pid;
}

typedef struct {
    char *buf;
    size_t len, cap;
    int events, keepalives, stop_after;
    char last_id[32];
    int64_t seqs[20000];
} sse_t;

static size_t on_body(char *data, size_t size, size_t n, void *arg) {
    sse_t *s = arg;
    size_t len = size * n;
    if (s->len + len + 1 > s->cap) {
        s->cap = (s->len + len + 1) * 2;
        s->buf = realloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    s->buf[s->len] = '\0';
    /* complete events end with a blank line */
    char *end;
    while ((end = strstr(s->buf, "\n\n")) != NULL) {
        *end = '\0';
        if (strncmp(s->buf, ": keep-alive", 12) == 0) s->keepalives++;
        char *id = strstr(s->buf, "id: "), *d = strstr(s->buf, "data: ");
        if (id && d) {
            sscanf(id + 4, "%31s", s->last_id);
            cJSON *r = cJSON_Parse(d + 6);
            CHECK(r != NULL);
            if (s->events < 20000) s->seqs[s->events] = (int64_t)cJSON_GetObjectItem(r, "seq")->valuedouble;
            s->events++;
            cJSON_Delete(r);
        }
        size_t used = (size_t)(end + 2 - s->buf);
        memmove(s->buf, end + 2, s->len - used + 1);
        s->len -= used;
        if (s->stop_after && s->events >= s->stop_after) return 0; /* hang up */
    }
    return len;
}

/* GET url as an SSE client until stop_after events or timeout_ms. Returns the HTTP status. */
static long sse_get(const char *path, const char *last_event_id, sse_t *s, int stop_after, long timeout_ms) {
    char url[512], hdr[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", PORT, path);
    CURL *h = curl_easy_init();
    struct curl_slist *hd = curl_slist_append(NULL, "Accept: text/event-stream");
    if (last_event_id) {
        snprintf(hdr, sizeof hdr, "Last-Event-ID: %s", last_event_id);
        hd = curl_slist_append(hd, hdr);
    }
    s->stop_after = stop_after;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return status;
}

static long get(const char *path, char *out, size_t cap) {
    sse_t s = {0};
    long st = sse_get(path, NULL, &s, 0, 10000);
    snprintf(out, cap, "%s", s.buf ? s.buf : "");
    free(s.buf);
    return st;
}

typedef struct {
    int confirmed, failed;
} pub_t;
static void on_confirm(int status, void *data) {
    pub_t *p = data;
    if (status == 0) p->confirmed++;
    else p->failed++;
}

static void publish_notes(int n, const char *actor) {
    bt_client_t c;
    bt_client_open(&c);
    pub_t p = {0};
    for (int i = 0; i < n; i++) {
        bus_envelope_t env = {0};
        cJSON *data = cJSON_CreateObject();
        cJSON_AddStringToObject(data, "actor", actor);
        cJSON_AddStringToObject(data, "text", "a note long enough to make the records of this test weigh something");
        cJSON_AddNumberToObject(data, "n", i);
        bus_envelope_init(&env, "audit.note.recorded", "tests", NULL, NULL, data);
        CHECK_INT(bus_event_publish(c.conn, &env, on_confirm, &p), 0);
        bus_envelope_clear(&env);
        if (i % 1000 == 999)
            while (p.confirmed + p.failed < i - 500) uv_run(&c.loop, UV_RUN_ONCE);
    }
    while (p.confirmed + p.failed < n) uv_run(&c.loop, UV_RUN_ONCE);
    CHECK_INT(p.failed, 0);
    bt_client_close(&c);
}

static int tip(void) {
    bt_client_t c;
    bt_client_open(&c);
    char *reply = NULL;
    int t = -1;
    if (bt_call(&c, "audit", "verify", "{\"from\":1,\"to\":1}", 10000, &reply) == 0) {
        cJSON *d = cJSON_Parse(reply);
        t = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(d, "data"), "tip"), "seq")->valueint;
        cJSON_Delete(d);
    }
    free(reply);
    bt_client_close(&c);
    return t;
}

static void wait_tip(int n) {
    double end = bt_now_ms() + 30000;
    while (tip() < n && bt_now_ms() < end) usleep(100 * 1000);
    CHECK_INT(tip(), n);
}

static pid_t gateway(const char *extra) {
    static char addr[64], schemas[600];
    snprintf(addr, sizeof addr, "BUS_HTTP_ADDR=127.0.0.1:%d", PORT);
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", getenv("BUS_SCHEMAS_DIR") ? getenv("BUS_SCHEMAS_DIR") : "schemas");
    const char *env[] = {addr, schemas, "BUS_LOG_LEVEL=warn", "BUS_SSE_KEEPALIVE_MS=200", "BUS_RATE_LIMIT=0",
                         extra ? extra : "BUS_ACCESS_LOG=0", NULL};
    pid_t g = spawn("bus-gateway", env, "audit-edge-gateway.log");
    char out[256];
    double end = bt_now_ms() + 15000;
    while (bt_now_ms() < end && get("/api/v1/health", out, sizeof out) != 200) usleep(50 * 1000);
    return g;
}

static pid_t audit_worker(void) {
    static char store[600];
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s", db_path);
    const char *env[] = {store, "BUS_LOG_LEVEL=warn", "BUS_AUDIT_LEASE_MS=1000", NULL};
    pid_t w = spawn("bus-audit", env, "audit-edge-worker.log");
    CHECK_INT(bt_wait_ping("audit", 15000), 0);
    return w;
}

static void test_sse_every_record_resume_and_keepalive(void) {
    fresh("sse");
    pid_t w = audit_worker();
    pid_t g = gateway(NULL);
    publish_notes(50, "discord:31");
    wait_tip(50);
    /* from the first: 20 events, then the client hangs up */
    sse_t a = {0};
    CHECK_INT(sse_get("/api/v1/audit/stream?from=first", NULL, &a, 20, 10000), 200);
    CHECK_INT(a.events, 20);
    for (int i = 0; i < 20; i++) CHECK_INT(a.seqs[i], i + 1);
    /* ids are "<offset>-<seq>": the stream offset of the pack holding the
     * record (one pack here: the 50 were committed close together or not,
     * the offset is a number either way) and the record's seq */
    char *dash = strchr(a.last_id, '-');
    CHECK(dash != NULL && dash > a.last_id && strspn(a.last_id, "0123456789") == (size_t)(dash - a.last_id));
    CHECK_STR(dash ? dash : "", "-20");
    /* resume after it: the other 30, then keep-alive comments while idle */
    sse_t b = {0};
    CHECK_INT(sse_get("/api/v1/audit/stream", a.last_id, &b, 0, 1500), 200);
    CHECK_INT(b.events, 30);
    for (int i = 0; i < 30; i++) CHECK_INT(b.seqs[i], i + 21);
    CHECK(b.keepalives >= 2);
    /* a bad start is refused */
    char out[4096];
    CHECK_INT(get("/api/v1/audit/stream?from=sometime", out, sizeof out), 400);
    sse_t bad = {0};
    CHECK_INT(sse_get("/api/v1/audit/stream", "12-x", &bad, 0, 3000), 400);
    CHECK_CONTAINS(bad.buf ? bad.buf : "", "Last-Event-ID");
    free(bad.buf);
    free(a.buf);
    free(b.buf);
    kill(g, SIGTERM);
    CHECK_INT(bt_wait_exit(g, 15000), 0); /* open streams end at shutdown; a clean exit */
    bt_kill(w, SIGKILL);
    drop_event_queue();
}

static void test_slow_reader_is_cut_off_others_go_on(void) {
    fresh("slow");
    pid_t w = audit_worker();
    pid_t g = gateway("BUS_SSE_MAX_BACKLOG=1048576");
    /* a client that asks and never reads, with a small receive window */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(PORT)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CHECK_INT(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char *req = "GET /api/v1/audit/stream?from=first HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n";
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    usleep(300 * 1000);
    int n = 12000; /* ~10 MB of records: more than the socket buffers plus the 1 MiB backlog */
    publish_notes(n, "discord:32");
    wait_tip(n);
    /* a reader that keeps up sees everything meanwhile */
    sse_t fast = {0};
    CHECK_INT(sse_get("/api/v1/audit/stream?from=first", NULL, &fast, n, 60000), 200);
    CHECK_INT(fast.events, n);
    /* the slow one was disconnected: reading now ends at EOF well before all of it */
    size_t total = 0;
    char buf[65536];
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) total += (size_t)r;
    CHECK(r == 0 || r < 0);
    CHECK(total < (size_t)n * 400);
    close(fd);
    char out[256];
    CHECK_INT(get("/api/v1/health", out, sizeof out), 200); /* the edge is fine */
    free(fast.buf);
    kill(g, SIGTERM);
    CHECK_INT(bt_wait_exit(g, 15000), 0);
    bt_kill(w, SIGKILL);
    drop_event_queue();
}

static void test_query_route_scope_and_unknown_types(void) {
    fresh("query");
    pid_t w = audit_worker();
    /* keys: one with audit:read, one without */
    char keys[600], cmd[1200], secret_read[128] = "", secret_other[128] = "";
    snprintf(keys, sizeof keys, "%s/audit-edge-keys", tmpdir());
    unlink(keys);
    const char *ids[2] = {"reader", "other"}, *scopes[2] = {"audit:read", "rpc:alliances.*"};
    char *secrets[2] = {secret_read, secret_other};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "%s/busctl apikey new --id %s --scopes '%s'", build(), ids[i], scopes[i]);
        FILE *p = popen(cmd, "r");
        char line[512];
        while (fgets(line, sizeof line, p)) {
            if (strncmp(line, "secret: ", 8) == 0) sscanf(line + 8, "%127s", secrets[i]);
            else if (line[0] == '{') {
                FILE *k = fopen(keys, "a");
                fputs(line, k);
                fclose(k);
            }
        }
        pclose(p);
    }
    CHECK(*secret_read && *secret_other);
    char kenv[700];
    snprintf(kenv, sizeof kenv, "BUS_API_KEYS_FILE=%s", keys);
    pid_t g = gateway(kenv);
    publish_notes(30, "discord:41");
    publish_notes(12, "discord:42");
    wait_tip(42);
    char url[256], h[200];
    CURL *c = curl_easy_init();
    sse_t s = {0};
    struct curl_slist *hd = NULL;
    snprintf(h, sizeof h, "X-API-Key: %s", secret_read);
    hd = curl_slist_append(hd, h);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v1/audit?actor=discord:42&limit=5", PORT);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    CHECK_INT(curl_easy_perform(c), CURLE_OK);
    long st = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    CHECK_INT(st, 200);
    cJSON *doc = cJSON_Parse(s.buf);
    cJSON *data = cJSON_GetObjectItem(doc, "data");
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(data, "records")), 5);
    CHECK(cJSON_IsString(cJSON_GetObjectItem(data, "next_cursor")));
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(data, "records"), 0), "actor")->valuestring,
              "discord:42");
    cJSON_Delete(doc);
    curl_slist_free_all(hd);
    curl_easy_cleanup(c);
    free(s.buf);
    /* the other key has no audit:read; no key at all is 401 */
    char out[2048], path[256];
    snprintf(path, sizeof path, "/api/v1/audit?limit=1");
    CHECK_INT(get(path, out, sizeof out), 401);
    c = curl_easy_init();
    s = (sse_t){0};
    snprintf(h, sizeof h, "X-API-Key: %s", secret_other);
    hd = curl_slist_append(NULL, h);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v1/audit/stream", PORT);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    CHECK_INT(st, 403);
    curl_slist_free_all(hd);
    curl_easy_cleanup(c);
    free(s.buf);
    kill(g, SIGTERM);
    CHECK_INT(bt_wait_exit(g, 15000), 0);
    bt_kill(w, SIGKILL);
    drop_event_queue();
}

BUS_TESTS({"sse_every_record_resume_and_keepalive", test_sse_every_record_resume_and_keepalive, 60},
          {"slow_reader_is_cut_off_others_go_on", test_slow_reader_is_cut_off_others_go_on, 120},
          {"query_route_scope_and_unknown_types", test_query_route_scope_and_unknown_types, 60})
