/* Store benchmark: insert, get, conditional update and claim
 * (find_one_and_update) operations per second on the SQLite backend, with 1
 * and 4 store reader threads (BUS_STORE_THREADS; writes always go to the one
 * group-commit writer), each run in its own process, 64 operations in flight.
 *
 *   build/tests/bench/bench_store [N]     N documents (default 5000)
 *
 * Files go to $BUS_TEST_TMPDIR or /tmp and are removed.
 * BUS_BENCH_SQLITE_OPTS="?sync=normal" measures without an fsync per commit
 * (the default, sync=full, syncs the WAL at every group commit).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "bus/error.h"
#include "bus/store.h"

#define INFLIGHT 64

static uv_loop_t *loop;
static bus_store_t *st;
static int n_total, issued, completed, failures;
static int64_t *versions;
static int phase;
static const char *coll = "bench";

static void issue(void);

static void done_doc(int status, const cJSON *doc, void *data) {
    intptr_t i = (intptr_t)data;
    if (status)
        failures++;
    else if (phase != 3)
        versions[i] = (int64_t)cJSON_GetObjectItem(doc, "_v")->valuedouble;
    completed++;
    issue();
}

static void issue(void) {
    while (issued < n_total && issued - completed < INFLIGHT) {
        intptr_t i = issued++;
        char id[32];
        snprintf(id, sizeof id, "doc%06ld", (long)i);
        int rc = 0;
        cJSON *d;
        switch (phase) {
        case 0: /* insert */
            d = cJSON_CreateObject();
            cJSON_AddStringToObject(d, "state", "pending");
            cJSON_AddNumberToObject(d, "n", (double)i);
            cJSON_AddStringToObject(d, "name", "some player name");
            rc = bus_store_insert(st, coll, id, d, done_doc, (void *)i);
            cJSON_Delete(d);
            break;
        case 1: /* get */
            rc = bus_store_get(st, coll, id, done_doc, (void *)i);
            break;
        case 2: /* conditional update on the version we know */
            d = cJSON_CreateObject();
            cJSON_AddNumberToObject(d, "score", (double)i);
            rc = bus_store_update(st, coll, id, versions[i], d, done_doc, (void *)i);
            cJSON_Delete(d);
            break;
        case 3: { /* claim */
            cJSON *w = cJSON_CreateObject(), *p = cJSON_CreateObject();
            cJSON_AddStringToObject(w, "state", "pending");
            cJSON_AddStringToObject(p, "state", "claimed");
            rc = bus_store_find_one_and_update(st, coll, w, NULL, p, done_doc, (void *)i);
            cJSON_Delete(w);
            cJSON_Delete(p);
            break;
        }
        }
        if (rc) {
            failures++;
            completed++;
        }
    }
}

static double run_phase(int ph) {
    phase = ph;
    issued = completed = failures = 0;
    uint64_t t0 = uv_hrtime();
    issue();
    while (completed < n_total) uv_run(loop, UV_RUN_ONCE);
    return (double)(uv_hrtime() - t0) / 1e9;
}

static int child(int threads, const char *path) {
    char buf[8];
    snprintf(buf, sizeof buf, "%d", threads);
    setenv("BUS_STORE_THREADS", buf, 1);
    loop = uv_default_loop();
    char url[700], err[512];
    const char *opts = getenv("BUS_BENCH_SQLITE_OPTS");
    snprintf(url, sizeof url, "sqlite:%s%s", path, opts ? opts : "");
    if (bus_store_open(loop, url, &st, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const char *idx[] = {"state", NULL};
    if (bus_store_declare(st, coll, idx, NULL, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    versions = calloc((size_t)n_total, sizeof *versions);
    const char *names[] = {"insert", "get", "conditional update", "claim (find_one_and_update)"};
    for (int ph = 0; ph < 4; ph++) {
        double s = run_phase(ph);
        printf("store sqlite%s threads=%d %-28s %9.0f ops/s  (%d ops, %d failed, %d in flight)\n", getenv("BUS_BENCH_SQLITE_OPTS") ? getenv("BUS_BENCH_SQLITE_OPTS") : "", threads, names[ph],
               n_total / s, n_total, failures, INFLIGHT);
        fflush(stdout);
        if (failures) return 1;
    }
    bus_store_close(st, NULL, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    free(versions);
    return 0;
}

int main(int argc, char **argv) {
    n_total = argc > 1 ? atoi(argv[1]) : 5000;
    if (n_total <= 0) n_total = 5000;
    const char *base = getenv("BUS_TEST_TMPDIR");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bench-store.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = 0;
    int threads[] = {1, 4};
    for (int k = 0; k < 2; k++) {
        char path[600];
        snprintf(path, sizeof path, "%s/bench%d.db", dir, threads[k]);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) _exit(child(threads[k], path));
        int status;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
