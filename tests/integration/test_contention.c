/* Scale never changes an answer (bus/include/bus/op.h, "Contention"):
 * three bus-alliances processes on one store, hundreds of requests on ONE
 * alliance in flight at once. Requests that do not conflict by the rules
 * all succeed, each with exactly one event, and the counts are exact. The
 * workers' bus_op_conflict_retries_total proves the processes really raced.
 */
#include <curl/curl.h>
#include <stdarg.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/topology.h"

#define WORKERS 3
#define JOINS 500
#define RANKS 200
#define METRICS_PORT0 29510

static pid_t workers[WORKERS];

static void start_workers(void) {
    const char *tmp = getenv("BUS_TEST_TMPDIR") ? getenv("BUS_TEST_TMPDIR") : "/tmp";
    static char db[600], store[700], schemas[700], prog[600], log[WORKERS][700], metrics[WORKERS][64];
    snprintf(db, sizeof db, "%s/contention.db", tmp);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s%s", db, suffixes[i]);
        unlink(p);
    }
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s", db);
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s",
             getenv("BUS_SCHEMAS_DIR") ? getenv("BUS_SCHEMAS_DIR") : "schemas");
    snprintf(prog, sizeof prog, "%s/bus-alliances", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    for (int i = 0; i < WORKERS; i++) {
        snprintf(log[i], sizeof log[i], "%s/contention-%d.log", tmp, i);
        snprintf(metrics[i], sizeof metrics[i], "BUS_METRICS_ADDR=127.0.0.1:%d", METRICS_PORT0 + i);
        const char *env[] = {store, schemas, metrics[i], "BUS_LOG_LEVEL=warn", "BUS_PREFETCH=64", NULL};
        char *argv[] = {prog, NULL};
        workers[i] = bt_spawn_program(argv, env, log[i]);
        CHECK(workers[i] > 0);
    }
}

/* ---- events seen on bus.events --------------------------------------------- */

#define MAX_SEEN 2048
static char seen_ids[MAX_SEEN][40];
static char seen_users[MAX_SEEN][40];
static char seen_types[MAX_SEEN][40];
static int nseen;

static void on_event(bus_msg_t *m, void *data) {
    (void)data;
    cJSON *e = cJSON_ParseWithLength(m->body, m->len);
    const cJSON *d = cJSON_GetObjectItem(e, "data");
    const cJSON *u = cJSON_GetObjectItem(d, "user");
    if (nseen < MAX_SEEN) {
        snprintf(seen_ids[nseen], sizeof seen_ids[0], "%s", m->message_id);
        snprintf(seen_types[nseen], sizeof seen_types[0], "%s", m->routing_key);
        snprintf(seen_users[nseen], sizeof seen_users[0], "%s", cJSON_IsString(u) ? u->valuestring : "");
        nseen++;
    }
    cJSON_Delete(e);
    bus_msg_ack(m);
}

/* Events of `type`, each user at most once; -1 when a user appears twice. */
static int distinct_users_of(const char *type) {
    int n = 0;
    for (int i = 0; i < nseen; i++) {
        if (strcmp(seen_types[i], type) != 0) continue;
        for (int j = 0; j < i; j++)
            if (strcmp(seen_types[j], type) == 0 && strcmp(seen_users[j], seen_users[i]) == 0) return -1;
        n++;
    }
    return n;
}

static int count_type(const char *type) {
    int n = 0;
    for (int i = 0; i < nseen; i++) n += strcmp(seen_types[i], type) == 0;
    return n;
}

/* ---- calls ------------------------------------------------------------------ */

typedef struct {
    int done, status;
    cJSON *reply;
} res_t;

static void on_reply(int status, const char *reply, size_t len, void *data) {
    res_t *r = data;
    r->done = 1;
    r->status = status;
    r->reply = reply ? cJSON_ParseWithLength(reply, len) : NULL;
}

static void fire(bt_client_t *c, res_t *r, const char *method, const char *fmt, ...) {
    char params[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(params, sizeof params, fmt, ap);
    va_end(ap);
    memset(r, 0, sizeof *r);
    bus_rpc_call_opts_t o = {.timeout_ms = 60000};
    CHECK_INT(bus_rpc_call(c->rpc, "alliances", method, params, strlen(params), &o, on_reply, r), 0);
}

/* Waits for every answer; returns how many were a success, printing the others. */
static int wait_all(bt_client_t *c, res_t *r, int n) {
    double end = bt_now_ms() + 90000;
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++) done += r[i].done;
        if (done == n || bt_now_ms() > end) break;
        int flag = 0;
        bt_run_until(c, &flag, 20);
    }
    int oks = 0, shown = 0;
    for (int i = 0; i < n; i++) {
        CHECK(r[i].done);
        CHECK_INT(r[i].status, 0);
        if (cJSON_IsTrue(cJSON_GetObjectItem(r[i].reply, "success"))) {
            oks++;
        } else if (shown++ < 5) {
            char *t = cJSON_PrintUnformatted(r[i].reply);
            fprintf(stderr, "  refused: %s\n", t);
            free(t);
        }
    }
    return oks;
}

static cJSON *call(bt_client_t *c, const char *method, const char *params) {
    char *reply = NULL;
    CHECK_INT(bt_call(c, "alliances", method, params, 20000, &reply), 0);
    cJSON *j = cJSON_Parse(reply);
    free(reply);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "success")));
    return j;
}

static size_t on_body(char *p, size_t sz, size_t n, void *data) {
    char *buf = data;
    size_t have = strlen(buf), add = sz * n;
    if (have + add >= 65536) add = 65535 - have;
    memcpy(buf + have, p, add);
    buf[have + add] = '\0';
    return sz * n;
}

/* The sum of a worker's counter lines named `name` on its /metrics. */
static double scrape(int port, const char *name) {
    static char body[65536];
    body[0] = '\0';
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, (void *)body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    CHECK(curl_easy_perform(h) == CURLE_OK);
    curl_easy_cleanup(h);
    double sum = 0;
    for (const char *p = body; (p = strstr(p, name)) != NULL; p++) {
        if (p != body && p[-1] != '\n') continue;
        const char *sp = strchr(p, ' ');
        if (sp) sum += atof(sp + 1);
    }
    return sum;
}

static void test_one_alliance_three_processes(void) {
    bt_client_t c;
    bt_client_open(&c);
    bt_delete_queue(&c, "rpc.alliances");
    bt_delete_queue(&c, "events.alliances");
    start_workers();
    CHECK(bt_wait_ping("alliances", 20000) == 0);
    char q[64];
    snprintf(q, sizeof q, "test.contention.%d", (int)getpid());
    bus_queue_options_t qo = {.exclusive = 1, .auto_delete = 1};
    CHECK(bus_conn_declare_queue(c.conn, q, &qo) == 0);
    CHECK(bus_conn_bind(c.conn, q, BUS_EXCHANGE_EVENTS, "alliance.#") == 0);
    CHECK(bus_conn_consume(c.conn, q, 0, 1, amqp_empty_table, on_event, NULL, NULL, 0) == 0);
    /* every worker consumes rpc.alliances before the burst starts */
    uint32_t msgs = 0, consumers = 0;
    for (int i = 0; i < 200 && consumers < WORKERS; i++) {
        CHECK(bus_conn_queue_info(c.conn, "rpc.alliances", &msgs, &consumers) == 0);
        if (consumers < WORKERS) usleep(50 * 1000);
    }
    CHECK_INT(consumers, WORKERS);

    cJSON *a = call(&c, "create", "{\"name\":\"Crowded\",\"tag\":\"CRW\",\"state\":77,\"leader\":\"discord:1\"}");
    char id[64];
    snprintf(id, sizeof id, "%s", cJSON_GetObjectItem(cJSON_GetObjectItem(a, "data"), "id")->valuestring);
    cJSON_Delete(a);

    static res_t r[JOINS];
    double t0 = bt_now_ms();
    for (int i = 0; i < JOINS; i++) fire(&c, &r[i], "join", "{\"id\":\"%s\",\"user\":\"discord:%d\"}", id, 10000 + i);
    int oks = wait_all(&c, r, JOINS);
    fprintf(stderr, "  %d joins in flight on one alliance, %d workers: %d ok in %.0f ms\n", JOINS, WORKERS, oks,
            bt_now_ms() - t0);
    CHECK_INT(oks, JOINS);
    for (int i = 0; i < JOINS; i++) cJSON_Delete(r[i].reply);

    /* the leader gives 200 members R2 at once: each a different member, so
     * none conflicts with another by the rules */
    t0 = bt_now_ms();
    for (int i = 0; i < RANKS; i++)
        fire(&c, &r[i], "set_rank", "{\"actor\":\"discord:1\",\"user\":\"discord:%d\",\"rank\":\"R2\"}", 10000 + i);
    oks = wait_all(&c, r, RANKS);
    fprintf(stderr, "  %d set_rank in flight: %d ok in %.0f ms\n", RANKS, oks, bt_now_ms() - t0);
    CHECK_INT(oks, RANKS);
    for (int i = 0; i < RANKS; i++) cJSON_Delete(r[i].reply);

    /* exactly one event each, and the counts are exact */
    double end = bt_now_ms() + 20000;
    int flag = 0;
    while (nseen < 1 + JOINS + RANKS && bt_now_ms() < end) bt_run_until(&c, &flag, 20);
    bt_run_until(&c, &flag, 300); /* late duplicates would arrive now */
    CHECK_INT(count_type("alliance.created"), 1);
    CHECK_INT(distinct_users_of("alliance.member.joined"), JOINS);
    CHECK_INT(distinct_users_of("alliance.member.rank_changed"), RANKS);
    CHECK_INT(nseen, 1 + JOINS + RANKS);
    char params[128];
    snprintf(params, sizeof params, "{\"id\":\"%s\"}", id);
    cJSON *g = call(&c, "get", params);
    const cJSON *d = cJSON_GetObjectItem(g, "data"), *ranks = cJSON_GetObjectItem(d, "ranks");
    CHECK_INT(cJSON_GetObjectItem(d, "member_count")->valuedouble, 1 + JOINS);
    CHECK_INT(cJSON_GetObjectItem(ranks, "R5")->valuedouble, 1);
    CHECK_INT(cJSON_GetObjectItem(ranks, "R2")->valuedouble, RANKS);
    CHECK_INT(cJSON_GetObjectItem(ranks, "R1")->valuedouble, JOINS - RANKS);
    cJSON_Delete(g);

    /* the processes really raced: lost races were decided again */
    double retries = 0;
    for (int i = 0; i < WORKERS; i++) retries += scrape(METRICS_PORT0 + i, "bus_op_conflict_retries_total");
    fprintf(stderr, "  lost races decided again: %.0f\n", retries);
    CHECK(retries > 0);

    bt_client_close(&c);
    for (int i = 0; i < WORKERS; i++) bt_kill(workers[i], SIGTERM);
}

BUS_TESTS({"one_alliance_three_processes", test_one_alliance_three_processes, 240})
