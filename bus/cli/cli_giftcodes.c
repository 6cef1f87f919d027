/* busctl giftcodes redeem CODE [--note TEXT] [--timeout-s S]
 * busctl players refresh (--state N | ID...) [--timeout-s S]
 *
 * Long-running verification jobs with a live progress bar: the command
 * listens to the events first (an exclusive queue on bus.events bound to
 * giftcode.# / player.bulk_refresh.progress), then starts the job
 * (verification.giftcodes_add / verification.bulk_refresh), draws
 * giftcode.progress / player.bulk_refresh.progress as a bar, and prints the
 * totals of giftcode.finished (or the last progress with finished true).
 * Exit 0 when the job finished, 1 when it was refused or stopped (an expired
 * code...), 2 on connection errors or the timeout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/conn.h"
#include "bus/error.h"
#include "bus/rpc.h"
#include "bus/topology.h"
#include "cli.h"

typedef struct {
    uv_loop_t loop;
    bus_conn_t *conn;
    bus_rpc_client_t *rpc;
    uv_timer_t timer;
    int done, exit_code, giftcode;
    char key[128]; /* the code, or the bulk job id once known */
    char seen_ids[64][40];
    int nseen;
} job_t;

static void bar(int done, int total) {
    int width = 40, filled = total > 0 ? (int)((long long)done * width / total) : 0;
    if (filled > width) filled = width;
    char line[64];
    for (int i = 0; i < width; i++) line[i] = i < filled ? '#' : '.';
    line[width] = 0;
    fprintf(stderr, "\r[%s] %d/%d", line, done, total);
    fflush(stderr);
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}
static int jint(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (int)v->valuedouble : 0;
}

static void on_event(bus_msg_t *m, void *data) {
    job_t *j = data;
    cJSON *e = cJSON_ParseWithLength(m->body, m->len);
    bus_msg_ack(m);
    const char *type = jstr(e, "type");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "data");
    if (j->done || !j->key[0]) {
        cJSON_Delete(e);
        return;
    }
    if (j->giftcode && strcmp(jstr(d, "code"), j->key) == 0) {
        if (strcmp(type, "giftcode.progress") == 0) bar(jint(d, "done"), jint(d, "total"));
        if (strcmp(type, "giftcode.finished") == 0) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, "totals");
            bar(jint(t, "done"), jint(t, "done"));
            fprintf(stderr, "\n");
            printf("%s %s%s%s: %d players\n", j->key, jstr(d, "batch"), jstr(d, "reason")[0] ? " (" : "",
                   jstr(d, "reason")[0] ? jstr(d, "reason") : "", jint(t, "done"));
            const cJSON *r;
            cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(t, "results")) if (r->valuedouble > 0)
                printf("  %-18s %d\n", r->string, (int)r->valuedouble);
            j->exit_code = strcmp(jstr(d, "batch"), "finished") == 0 ? 0 : 1;
            j->done = 1;
        }
    } else if (!j->giftcode && strcmp(type, "player.bulk_refresh.progress") == 0 &&
               strcmp(jstr(d, "job"), j->key) == 0) {
        bar(jint(d, "done"), jint(d, "total"));
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "finished"))) {
            fprintf(stderr, "\n");
            printf("refreshed %d players, %d failed\n", jint(d, "done") - jint(d, "failed"), jint(d, "failed"));
            j->exit_code = jint(d, "failed") ? 1 : 0;
            j->done = 1;
        }
    }
    cJSON_Delete(e);
}

static void on_started(int status, const char *reply, size_t len, void *data) {
    job_t *j = data;
    cJSON *r = status == 0 ? cJSON_ParseWithLength(reply, len) : NULL;
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(r, "success");
    if (!cJSON_IsTrue(ok)) {
        if (status != 0)
            fprintf(stderr, "busctl: no answer from verification: %s\n", bus_strerror(status));
        else
            fprintf(stderr, "busctl: %s: %s\n", jstr(r, "error"), jstr(r, "message"));
        j->exit_code = status != 0 ? 2 : 1;
        j->done = 1;
    } else if (!j->giftcode) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(r, "data");
        snprintf(j->key, sizeof j->key, "%s", jstr(d, "job"));
        bar(0, jint(d, "total"));
    } else
        bar(0, 0);
    cJSON_Delete(r);
}

static void on_timeout(uv_timer_t *t) {
    job_t *j = t->data;
    fprintf(stderr, "\nbusctl: still running after the timeout; see verification.giftcodes_status\n");
    j->exit_code = 2;
    j->done = 1;
}

static int run_job(const char *amqp_url, int giftcode, const char *key, const char *method, const char *params,
                   int timeout_s) {
    job_t j = {0};
    j.giftcode = giftcode;
    snprintf(j.key, sizeof j.key, "%s", key);
    const char *url = amqp_url ? amqp_url : getenv("BUS_AMQP_URL");
    if (!url || !*url) url = "amqp://guest:guest@127.0.0.1:5672/";
    uv_loop_init(&j.loop);
    char err[512];
    bus_conn_options_t o = {.url = url, .name = "busctl"};
    int rc = 2;
    if (bus_conn_new(&j.loop, &o, &j.conn, err, sizeof err) != 0) {
        fprintf(stderr, "busctl: %s\n", err);
        uv_loop_close(&j.loop);
        return 2;
    }
    bus_rpc_client_new(j.conn, 10000, &j.rpc);
    if (bus_conn_connect_now(j.conn, err, sizeof err) != 0) {
        fprintf(stderr, "busctl: cannot reach the broker: %s\n", err);
        goto out;
    }
    char q[64];
    snprintf(q, sizeof q, "busctl.progress.%d", (int)getpid());
    bus_queue_options_t qo = {.exclusive = 1, .auto_delete = 1};
    bus_conn_declare_exchange(j.conn, BUS_EXCHANGE_EVENTS, "topic");
    if (bus_conn_declare_queue(j.conn, q, &qo) != 0 ||
        bus_conn_bind(j.conn, q, BUS_EXCHANGE_EVENTS, giftcode ? "giftcode.#" : "player.bulk_refresh.progress") != 0 ||
        bus_conn_consume(j.conn, q, 0, 1, amqp_empty_table, on_event, &j, NULL, 0) != 0) {
        fprintf(stderr, "busctl: cannot listen to the events\n");
        goto out;
    }
    bus_rpc_call_opts_t co = {.timeout_ms = 10000, .caller = "busctl"};
    if (bus_rpc_call(j.rpc, "verification", method, params, strlen(params), &co, on_started, &j) != 0) {
        fprintf(stderr, "busctl: the call failed\n");
        goto out;
    }
    uv_timer_init(&j.loop, &j.timer);
    j.timer.data = &j;
    uv_timer_start(&j.timer, on_timeout, (uint64_t)timeout_s * 1000, 0);
    while (!j.done && uv_run(&j.loop, UV_RUN_ONCE)) {
    }
    uv_close((uv_handle_t *)&j.timer, NULL);
    rc = j.exit_code;
out:
    bus_rpc_client_free(j.rpc);
    bus_conn_close(j.conn, NULL, NULL);
    uv_run(&j.loop, UV_RUN_DEFAULT);
    uv_loop_close(&j.loop);
    return rc;
}

static int usage(void) {
    fprintf(stderr, "usage:\n  busctl giftcodes redeem CODE [--note TEXT] [--timeout-s S]\n"
                    "  busctl players refresh (--state N | PLAYER_ID...) [--timeout-s S]\n");
    return 2;
}

int bus_cli_giftcodes(int argc, char **argv, const char *amqp_url) {
    if (argc < 2 || strcmp(argv[0], "redeem") != 0) return usage();
    const char *code = argv[1], *note = NULL;
    int timeout_s = 3600;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--note") == 0 && i + 1 < argc) note = argv[++i];
        else if (strcmp(argv[i], "--timeout-s") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0) timeout_s = atoi(argv[++i]);
        else return usage();
    }
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "code", code);
    if (note) cJSON_AddStringToObject(p, "note", note);
    char *params = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    int rc = run_job(amqp_url, 1, code, "giftcodes_add", params, timeout_s);
    free(params);
    return rc;
}

int bus_cli_players(int argc, char **argv, const char *amqp_url) {
    if (argc < 2 || strcmp(argv[0], "refresh") != 0) return usage();
    int timeout_s = 3600;
    cJSON *p = cJSON_CreateObject(), *ids = NULL;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        long long v = 0;
        if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
            cJSON_AddNumberToObject(p, "state", atoi(argv[++i]));
        else if (strcmp(argv[i], "--timeout-s") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0)
            timeout_s = atoi(argv[++i]);
        else if ((v = strtoll(argv[i], &end, 10)) > 0 && end && !*end) {
            if (!ids) ids = cJSON_AddArrayToObject(p, "player_ids");
            cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)v));
        } else {
            cJSON_Delete(p);
            return usage();
        }
    }
    char *params = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    int rc = run_job(amqp_url, 0, "", "bulk_refresh", params, timeout_s);
    free(params);
    return rc;
}
