/* Helpers for integration tests: workers in child processes, a synchronous
 * RPC client over a private loop, the private broker's controls.
 *
 * The test runner (tests/run.sh) exports BUS_AMQP_URL, BUS_REDIS_URL,
 * BUS_LOCAL_DIR (the private servers' directory) and BUS_TEST_BUILD.
 */
#ifndef BUS_TEST_SUPPORT_H
#define BUS_TEST_SUPPORT_H

#include <sys/types.h>

#include "bus/conn.h"
#include "bus/rpc.h"
#include "bus/worker.h"

/* A method for test workers: answers {"slept":true} after params.ms
 * milliseconds (default 100) on a timer, without blocking the loop. */
void bt_method_slow(bus_request_t *req);

/* Makes a fresh schemas directory under $BUS_TEST_TMPDIR holding one file
 * (relpath such as "events/x.y.json" or "rpc/s.m.json") with `json`, and
 * writes "BUS_SCHEMAS_DIR=<dir>" into env_out, ready for a worker's env. */
void bt_schema_dir(const char *relpath, const char *json, char *env_out, size_t env_len);

/* Forks a child that runs bus_worker_main(def) with extra "NAME=value"
 * environment entries (NULL-terminated list, may be NULL). Returns its pid. */
pid_t bt_spawn_worker(const bus_worker_def_t *def, const char *const *env);
/* Forks and execs a program (argv[0] is the path) with extra env. stdout and
 * stderr go to `log_path` when not NULL. */
pid_t bt_spawn_program(char *const argv[], const char *const *env, const char *log_path);
/* Waits for the child up to timeout_ms; returns its exit status (0..255),
 * 128+signal when killed by a signal, or -1 on timeout (the child is then
 * killed with SIGKILL). */
int bt_wait_exit(pid_t pid, int timeout_ms);
/* Kills and reaps a child. */
void bt_kill(pid_t pid, int sig);

/* A synchronous client for tests. */
typedef struct bt_client {
    uv_loop_t loop;
    bus_conn_t *conn;
    bus_rpc_client_t *rpc;
} bt_client_t;

/* Connects to BUS_AMQP_URL; aborts the test when the broker is unreachable. */
void bt_client_open(bt_client_t *c);
void bt_client_close(bt_client_t *c);
/* Runs the loop until *flag becomes non-zero or timeout_ms passes; 0 when set. */
int bt_run_until(bt_client_t *c, const int *flag, int timeout_ms);
/* One call: returns the status (0 = reply); the reply is copied to a malloc'd
 * string in *reply (caller frees; NULL when no reply). */
int bt_call(bt_client_t *c, const char *service, const char *method, const char *params, int timeout_ms,
            char **reply);
/* Calls <service>.ping until it answers or timeout_ms passes; 0 when it did. */
int bt_wait_ping(const char *service, int timeout_ms);
/* Runs deploy/local/servers.sh ACTION on the private servers. 0 on success. */
int bt_servers(const char *action);
/* Milliseconds on a monotonic clock. */
double bt_now_ms(void);
/* Deletes a queue (used to start tests from a clean slate). */
void bt_delete_queue(bt_client_t *c, const char *queue);

#endif
