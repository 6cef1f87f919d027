/* busctl as users run it: exit codes, output, stdin input, status. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"
#include "bus/error.h"

static void m_echo(bus_request_t *req) { bus_reply_ok(req, cJSON_Duplicate(bus_request_params(req), 1)); }
static void m_fail(bus_request_t *req) { bus_reply_error(req, BUS_ECONFLICT, "already taken"); }
static const bus_method_t methods[] = {{"echo", m_echo}, {"fail", m_fail}, {NULL, NULL}};
static const bus_worker_def_t ctltest = {.service = "ctltest", .summary = "busctl test worker", .methods = methods};

/* Runs a shell command; returns its exit code and its stdout in out. */
static int run(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *busctl(void) {
    static char path[512];
    snprintf(path, sizeof path, "%s/busctl", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    return path;
}

static void test_call_exit_codes_and_output(void) {
    pid_t w = bt_spawn_worker(&ctltest, NULL);
    CHECK(bt_wait_ping("ctltest", 15000) == 0);
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof cmd, "%s call ctltest echo '{\"a\":[1,2]}'", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "{\"success\":true"); /* compact on a pipe */
    CHECK_CONTAINS(out, "\"a\":");
    snprintf(cmd, sizeof cmd, "echo '{\"from\":\"stdin\"}' | %s call ctltest echo -", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "stdin");
    snprintf(cmd, sizeof cmd, "%s call ctltest fail", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 1);
    CHECK_CONTAINS(out, "\"error\":\"conflict\"");
    snprintf(cmd, sizeof cmd, "%s call ctltest echo '{oops' 2>&1", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "malformed JSON");
    snprintf(cmd, sizeof cmd, "%s call ctltest 2>&1", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "usage");
    snprintf(cmd, sizeof cmd, "%s call nosuchsvc ping", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 1);
    CHECK_CONTAINS(out, "not_found");
    snprintf(cmd, sizeof cmd, "%s --amqp-url amqp://guest:guest@127.0.0.1:1/ call ctltest echo 2>&1", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "cannot reach the broker");
    bt_kill(w, SIGKILL);
    /* nobody consumes now: a timeout, reported as such */
    snprintf(cmd, sizeof cmd, "%s call ctltest echo --timeout 300", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 1);
    CHECK_CONTAINS(out, "\"error\":\"timeout\"");
}

static void test_publish_prints_confirmed_id(void) {
    char cmd[1024], out[1024];
    snprintf(cmd, sizeof cmd, "%s publish audit.note.recorded '{\"actor\":\"discord:1\",\"text\":\"t\"}' --source tests --subject s",
             busctl());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_INT(strlen(out), 37); /* a UUID and a newline */
    CHECK(out[8] == '-' && out[13] == '-' && out[14] == '7'); /* a version 7 UUID (bus_uuid) */
    snprintf(cmd, sizeof cmd, "%s publish 'Not A Type' '{}' 2>&1", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 2);
    /* a type without a schema is refused: nobody could validate it */
    snprintf(cmd, sizeof cmd, "%s publish ctltest.happened '{\"n\":1}' 2>&1", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 1);
    CHECK_CONTAINS(out, "no schema for event type ctltest.happened");
    snprintf(cmd, sizeof cmd, "%s publish ctltest.happened '[1,' 2>&1", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "malformed JSON");
}

static void test_status_counts_instances(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/bus-events", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    char *argv[] = {path, NULL};
    const char *env[] = {"BUS_LOG_LEVEL=warn", NULL};
    pid_t a = bt_spawn_program(argv, env, "/dev/null");
    pid_t b = bt_spawn_program(argv, env, "/dev/null");
    CHECK(bt_wait_ping("events", 15000) == 0);
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof cmd, "%s status --json", busctl());
    int two = 0;
    for (int i = 0; i < 50 && !two; i++) {
        CHECK_INT(run(cmd, out, sizeof out), 0);
        cJSON *doc = cJSON_Parse(out);
        CHECK(cJSON_IsArray(doc));
        const cJSON *d;
        cJSON_ArrayForEach(d, doc) {
            if (strcmp(cJSON_GetObjectItem(d, "service")->valuestring, "events") == 0)
                two = cJSON_GetObjectItem(d, "instances")->valueint == 2;
        }
        cJSON_Delete(doc);
        if (!two) usleep(100000);
    }
    CHECK(two);
    snprintf(cmd, sizeof cmd, "%s status", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "SERVICE");
    CHECK_CONTAINS(out, "events");
    kill(a, SIGTERM);
    kill(b, SIGTERM);
    CHECK_INT(bt_wait_exit(a, 5000), 0);
    CHECK_INT(bt_wait_exit(b, 5000), 0);
}

/* busctl schema check against the repo's schemas: a file, RPC params by name, event data by type. */
static void test_schema_check(void) {
    char cmd[1024], out[65536]; /* schema list grows with every domain */
    snprintf(cmd, sizeof cmd,
             "echo '{\"name\":\"x\",\"tag\":\"!\",\"state\":0,\"leader\":\"me\"}' | %s schema check --params alliances.create -",
             busctl());
    CHECK_INT(run(cmd, out, sizeof out), 1);
    CHECK_CONTAINS(out, "/state: must be >= 1");
    CHECK_CONTAINS(out, "/tag: must match pattern");
    snprintf(cmd, sizeof cmd,
             "echo '{\"name\":\"Frost\",\"tag\":\"FW\",\"state\":1,\"leader\":\"discord:1\"}' | "
             "%s schema check --params alliances.create -",
             busctl());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    snprintf(cmd, sizeof cmd, "echo '{\"user\":\"discord:42\"}' | %s schema check --event user.forgotten -", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    snprintf(cmd, sizeof cmd, "echo '{}' | %s schema check schemas/events/user.forgotten.json -", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 1);
    CHECK_CONTAINS(out, "user");
    snprintf(cmd, sizeof cmd, "%s schema check --params nosuch.method /dev/null 2>&1", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "%s schema list", busctl());
    CHECK_INT(run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "alliances.set_rank");
    CHECK_CONTAINS(out, "schemas/events/alliance.member.joined.json");
}

BUS_TESTS({"schema_check", test_schema_check, 20},
          {"call_exit_codes_and_output", test_call_exit_codes_and_output, 40},
          {"publish_prints_confirmed_id", test_publish_prints_confirmed_id, 20},
          {"status_counts_instances", test_status_counts_instances, 30})
