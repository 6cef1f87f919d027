/* Test helpers. See support.h. */
#include "support.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../test.h"

double bt_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void put_env(const char *const *env) {
    for (size_t i = 0; env && env[i]; i++) putenv(strdup(env[i]));
}

pid_t bt_spawn_worker(const bus_worker_def_t *def, const char *const *env) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        put_env(env);
        if (!getenv("BUS_LOG_LEVEL")) setenv("BUS_LOG_LEVEL", "warn", 1);
        char *argv[] = {(char *)def->service, NULL};
        _exit(bus_worker_main(1, argv, def));
    }
    return pid;
}

pid_t bt_spawn_program(char *const argv[], const char *const *env, const char *log_path) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        put_env(env);
        if (log_path) {
            int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int bt_wait_exit(pid_t pid, int timeout_ms) {
    double end = bt_now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (bt_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(10000);
    }
}

void bt_kill(pid_t pid, int sig) {
    if (pid <= 0) return;
    kill(pid, sig);
    int status;
    waitpid(pid, &status, 0);
}

void bt_client_open(bt_client_t *c) {
    memset(c, 0, sizeof *c);
    uv_loop_init(&c->loop);
    const char *url = getenv("BUS_AMQP_URL");
    CHECK(url != NULL);
    char err[256];
    bus_conn_options_t o = {.url = url, .name = "test-client"};
    CHECK(bus_conn_new(&c->loop, &o, &c->conn, err, sizeof err) == 0);
    CHECK(bus_rpc_client_new(c->conn, 5000, &c->rpc) == 0);
    if (bus_conn_connect_now(c->conn, err, sizeof err) != 0) {
        fprintf(stderr, "  cannot connect: %s\n", err);
        CHECK(!"broker reachable");
    }
}

void bt_client_close(bt_client_t *c) {
    bus_rpc_client_free(c->rpc);
    bus_conn_close(c->conn, NULL, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
}

static void on_deadline(uv_timer_t *t) { *(int *)t->data = 1; }

int bt_run_until(bt_client_t *c, const int *flag, int timeout_ms) {
    int expired = 0;
    uv_timer_t t;
    uv_timer_init(&c->loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_deadline, (uint64_t)timeout_ms, 0);
    while (!*flag && !expired) uv_run(&c->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&c->loop, UV_RUN_NOWAIT);
    return *flag ? 0 : -1;
}

typedef struct {
    int done;
    int status;
    char *reply;
} call_result_t;

static void on_call(int status, const char *reply, size_t len, void *data) {
    call_result_t *r = data;
    r->done = 1;
    r->status = status;
    if (reply) r->reply = strndup(reply, len);
}

int bt_call(bt_client_t *c, const char *service, const char *method, const char *params, int timeout_ms,
            char **reply) {
    call_result_t r = {0};
    bus_rpc_call_opts_t o = {.timeout_ms = timeout_ms};
    int rc = bus_rpc_call(c->rpc, service, method, params, strlen(params), &o, on_call, &r);
    if (rc != 0) {
        if (reply) *reply = NULL;
        return rc;
    }
    bt_run_until(c, &r.done, timeout_ms + 5000);
    if (reply) *reply = r.reply;
    else free(r.reply);
    return r.status;
}

int bt_wait_ping(const char *service, int timeout_ms) {
    double end = bt_now_ms() + timeout_ms;
    while (bt_now_ms() < end) {
        bt_client_t c;
        memset(&c, 0, sizeof c);
        uv_loop_init(&c.loop);
        char err[256];
        bus_conn_options_t o = {.url = getenv("BUS_AMQP_URL"), .name = "test-ping"};
        int ok = 0;
        if (bus_conn_new(&c.loop, &o, &c.conn, err, sizeof err) == 0) {
            bus_rpc_client_new(c.conn, 1000, &c.rpc);
            if (bus_conn_connect_now(c.conn, err, sizeof err) == 0) {
                char *reply = NULL;
                int st = bt_call(&c, service, "ping", "{}", 500, &reply);
                ok = st == 0 && reply && strstr(reply, "\"success\":true");
                free(reply);
            }
            bt_client_close(&c);
        } else {
            uv_loop_close(&c.loop);
        }
        if (ok) return 0;
        usleep(100000);
    }
    return -1;
}

int bt_servers(const char *action) {
    const char *dir = getenv("BUS_LOCAL_DIR");
    if (!dir) return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "deploy/local/servers.sh %s '%s' >/dev/null 2>&1", action, dir);
    return system(cmd) == 0 ? 0 : -1;
}

void bt_delete_queue(bt_client_t *c, const char *queue) { bus_conn_delete_queue(c->conn, queue); }

static void on_slept(uv_timer_t *t) {
    bus_request_t *req = t->data;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddBoolToObject(d, "slept", 1);
    bus_reply_ok(req, d);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

void bt_method_slow(bus_request_t *req) {
    const cJSON *ms = cJSON_GetObjectItem(bus_request_params(req), "ms");
    uv_timer_t *t = malloc(sizeof *t);
    uv_timer_init(bus_worker_loop(bus_request_worker(req)), t);
    t->data = req;
    uv_timer_start(t, on_slept, cJSON_IsNumber(ms) ? (uint64_t)ms->valuedouble : 100, 0);
}

void bt_schema_dir(const char *relpath, const char *json, char *env_out, size_t env_len) {
    char dir[512], path[1024];
    const char *tmp = getenv("BUS_TEST_TMPDIR");
    snprintf(dir, sizeof dir, "%s/schemas-XXXXXX", tmp ? tmp : "/tmp");
    CHECK(mkdtemp(dir) != NULL);
    const char *slash = strchr(relpath, '/');
    if (slash) {
        snprintf(path, sizeof path, "%s/%.*s", dir, (int)(slash - relpath), relpath);
        CHECK(mkdir(path, 0755) == 0);
    }
    snprintf(path, sizeof path, "%s/%s", dir, relpath);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(json, f);
    fclose(f);
    snprintf(env_out, env_len, "BUS_SCHEMAS_DIR=%s", dir);
}
