/* deploy/local/servers.sh (what `make test` uses) and deploy/local/run.sh
 * (`make run`) signal only what they started. Each test starts processes
 * the scripts did not start, all of them this test's own children: an epmd
 * on the default port 4369 (when that port is free; when another program
 * holds it, that one is only watched, never signalled), a process named
 * beam.smp, an epmd on the very port the script would use for its broker,
 * a Redis on the script's Redis port. Then the script runs on a block of
 * free ports in a directory of its own, starts and stops, and every one of
 * those processes must still be alive and answering, while everything the
 * script started is gone.
 *
 * The broker started here uses its own epmd on the AMQP port + 3, and its
 * node is registered there, not on 4369. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../support/support.h"
#include "../test.h"

#define EPMD "/usr/bin/epmd"

static int port_answers(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void wait_port(int port, int up, int timeout_ms) {
    double end = bt_now_ms() + timeout_ms;
    while (port_answers(port) != up && bt_now_ms() < end) usleep(50000);
    if (port_answers(port) != up) fprintf(stderr, "  port %d: still %s\n", port, up ? "closed" : "open");
    CHECK_INT(port_answers(port), up);
}

/* A block of ten free loopback ports, below the kernel's ephemeral range
 * (32768 and up on Linux), where an outgoing connection of any program
 * could take one of them between this check and the broker's start; and
 * above the fixed ports other tests listen on (26000-27999). */
static int free_block(void) {
    int base = 28000 + (int)(getpid() % 470) * 10;
    for (int tries = 0; tries < 40; tries++, base += 10) {
        if (base > 32750) base = 28000;
        int busy = 0;
        for (int p = base; p < base + 10 && !busy; p++) busy = port_answers(p);
        if (!busy) return base;
    }
    CHECK(!"a block of ten free ports");
    return 0;
}

static int alive(pid_t pid) {
    int status;
    return pid > 0 && waitpid(pid, &status, WNOHANG) == 0; /* our child, not reaped: still running */
}

static char tmp_root[400];
static void make_root(const char *name) {
    const char *t = getenv("BUS_TEST_TMPDIR");
    snprintf(tmp_root, sizeof tmp_root, "%s/scripts-%s-%d", t && *t ? t : "/tmp", name, (int)getpid());
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", tmp_root, tmp_root);
    CHECK(system(cmd) == 0);
}

/* An epmd of this test's own on `port`; its pid. */
static pid_t start_epmd(int port) {
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    char *argv[] = {EPMD, "-port", p, "-address", "127.0.0.1", NULL};
    char log[600];
    snprintf(log, sizeof log, "%s/epmd-%d.log", tmp_root, port);
    pid_t pid = bt_spawn_program(argv, NULL, log);
    wait_port(port, 1, 5000);
    return pid;
}

/* A process named beam.smp (a copy of sleep): a stand-in for someone
 * else's Erlang node. */
static pid_t start_fake_beam(void) {
    char path[500], cmd[1000];
    snprintf(path, sizeof path, "%s/beam.smp", tmp_root);
    snprintf(cmd, sizeof cmd, "cp \"$(command -v sleep)\" '%s'", path);
    CHECK(system(cmd) == 0);
    char *argv[] = {path, "600", NULL};
    pid_t pid = bt_spawn_program(argv, NULL, NULL);
    usleep(100000);
    CHECK(alive(pid));
    return pid;
}

static char env_prefix[600];
static int amqp_port, epmd_port, redis_port, http_port;
static void use_ports(int base) {
    amqp_port = base;
    epmd_port = base + 3; /* servers.sh's default: the AMQP port + 3 */
    redis_port = base + 7;
    http_port = base + 8;
    snprintf(env_prefix, sizeof env_prefix,
             "env -u BUS_LOCAL_EPMD_PORT BUS_LOCAL_AMQP_PORT=%d BUS_LOCAL_DIST_PORT=%d BUS_LOCAL_STREAM_PORT=%d "
             "BUS_LOCAL_REDIS_PORT=%d",
             base, base + 1, base + 2, base + 7);
}

/* Runs deploy/local/servers.sh ACTION DIR with this test's ports; its exit status. */
static int servers(const char *action, const char *dir) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s deploy/local/servers.sh %s '%s' >> '%s/servers.log' 2>&1", env_prefix, action, dir,
             tmp_root);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Whatever happens to the test, the servers it started are stopped. */
static char cleanup_dir[700];
static void cleanup(void) {
    if (cleanup_dir[0]) servers("stop", cleanup_dir);
}

/* 1 when `epmd -port P -names` lists node bus<amqp>. */
static int node_registered_on(int port) {
    char cmd[256], line[256], want[64];
    snprintf(cmd, sizeof cmd, EPMD " -port %d -names 2>&1", port);
    snprintf(want, sizeof want, "name bus%d ", amqp_port);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    int found = 0;
    while (fgets(line, sizeof line, p)) found |= strncmp(line, want, strlen(want)) == 0;
    pclose(p);
    return found;
}

static void need_tools(void) {
    if (access(EPMD, X_OK) != 0) SKIP("%s is not installed", EPMD);
    if (access("deploy/local/servers.sh", X_OK) != 0) SKIP("not run from the repository root");
}

/* The default epmd port: ours when free, else somebody else's to watch. */
static pid_t default_epmd;
static int default_epmd_foreign;
static void occupy_default_epmd(void) {
    default_epmd = 0;
    default_epmd_foreign = port_answers(4369);
    if (!default_epmd_foreign) default_epmd = start_epmd(4369);
}
static void check_default_epmd(void) {
    if (default_epmd) CHECK(alive(default_epmd));
    CHECK(port_answers(4369));
}

/* make test's path: servers.sh start, then stop, next to an epmd on 4369
 * and a beam.smp it did not start. */
static void test_servers_sh_stops_only_its_own(void) {
    need_tools();
    make_root("own");
    use_ports(free_block());
    occupy_default_epmd();
    pid_t beam = start_fake_beam();
    char dir[700];
    snprintf(dir, sizeof dir, "%s/servers", tmp_root);
    snprintf(cleanup_dir, sizeof cleanup_dir, "%s", dir);
    atexit(cleanup);
    CHECK_INT(servers("start", dir), 0);
    CHECK(port_answers(amqp_port));
    CHECK(port_answers(epmd_port)); /* its own epmd */
    CHECK(node_registered_on(epmd_port));
    if (!default_epmd_foreign) CHECK(!node_registered_on(4369));
    CHECK_INT(servers("stop", dir), 0);
    wait_port(amqp_port, 0, 10000);
    wait_port(epmd_port, 0, 5000); /* its epmd went with it */
    wait_port(redis_port, 0, 5000);
    check_default_epmd();
    CHECK(alive(beam));
    /* stop again, with nothing of its own left and no beam.smp on the
     * machine this time (where one exists, "stop epmd when no Erlang node is
     * left" would not show): touches nothing, and leaves no epmd behind
     * either (rabbitmqctl would start one as a daemon) */
    bt_kill(beam, SIGKILL);
    CHECK_INT(servers("stop", dir), 0);
    usleep(500000);
    CHECK(!port_answers(epmd_port));
    check_default_epmd();
    cleanup_dir[0] = 0;
    if (default_epmd) bt_kill(default_epmd, SIGKILL);
}

/* An epmd already on the port the script would give its broker: the node
 * registers there, and stop leaves that epmd running. */
static void test_servers_sh_leaves_a_foreign_epmd_on_its_port(void) {
    need_tools();
    make_root("foreign-epmd");
    use_ports(free_block());
    pid_t epmd = start_epmd(epmd_port);
    char dir[700];
    snprintf(dir, sizeof dir, "%s/servers", tmp_root);
    snprintf(cleanup_dir, sizeof cleanup_dir, "%s", dir);
    atexit(cleanup);
    CHECK_INT(servers("start", dir), 0);
    CHECK(node_registered_on(epmd_port));
    CHECK_INT(servers("stop", dir), 0);
    wait_port(amqp_port, 0, 10000);
    usleep(300000);
    CHECK(alive(epmd));
    CHECK(port_answers(epmd_port));
    cleanup_dir[0] = 0;
    bt_kill(epmd, SIGKILL);
}

/* A Redis already on the script's Redis port: start refuses, stop leaves it. */
static void test_servers_sh_leaves_a_foreign_redis(void) {
    need_tools();
    make_root("foreign-redis");
    use_ports(free_block());
    char port[16];
    snprintf(port, sizeof port, "%d", redis_port);
    char *argv[] = {"/usr/bin/redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", tmp_root, NULL};
    if (access(argv[0], X_OK) != 0) SKIP("%s is not installed", argv[0]);
    char redis_log[600];
    snprintf(redis_log, sizeof redis_log, "%s/redis.log", tmp_root);
    pid_t redis = bt_spawn_program(argv, NULL, redis_log);
    wait_port(redis_port, 1, 5000);
    char dir[700];
    snprintf(dir, sizeof dir, "%s/servers", tmp_root);
    CHECK(servers("start-redis", dir) != 0);
    CHECK_INT(servers("stop-redis", dir), 0);
    usleep(300000);
    CHECK(alive(redis));
    CHECK(port_answers(redis_port));
    char log[800], text[4096] = "";
    snprintf(log, sizeof log, "%s/servers.log", tmp_root);
    FILE *f = fopen(log, "r");
    CHECK(f != NULL);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    CHECK_CONTAINS(text, "is taken by a program this script did not start");
    bt_kill(redis, SIGKILL);
}

/* make run's path: deploy/local/run.sh up, then SIGTERM (as Ctrl-C): the
 * platform and its servers go, the epmd on 4369 and the beam.smp stay. */
static pid_t run_sh;
static void stop_run_sh(void) {
    if (run_sh > 0) kill(run_sh, SIGTERM);
    if (cleanup_dir[0]) {
        sleep(2);
        servers("stop", cleanup_dir);
    }
}

/* Reads a whole file into buf (empty when missing). */
static void slurp(const char *path, char *buf, size_t cap) {
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Runs a shell command; its exit status and stdout. */
static int run_out(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_make_run_stops_only_its_own(void) {
    need_tools();
    const char *build = getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build";
    char gw[600];
    snprintf(gw, sizeof gw, "%s/bus-gateway", build);
    if (access(gw, X_OK) != 0) SKIP("%s is not built (make run needs every program)", gw);
    make_root("run");
    use_ports(free_block());
    occupy_default_epmd();
    pid_t beam = start_fake_beam();
    static char e_amqp[64], e_dist[64], e_stream[64], e_redis[64], e_http[64], e_dir[700], e_build[700], e_metrics[64];
    int metrics_port = amqp_port + 10; /* the five workers' /metrics: the next block */
    for (int p = metrics_port; p < metrics_port + 5; p++)
        if (port_answers(p)) SKIP("port %d is taken", p);
    snprintf(e_metrics, sizeof e_metrics, "BUS_LOCAL_METRICS_PORT=%d", metrics_port);
    snprintf(e_amqp, sizeof e_amqp, "BUS_LOCAL_AMQP_PORT=%d", amqp_port);
    snprintf(e_dist, sizeof e_dist, "BUS_LOCAL_DIST_PORT=%d", amqp_port + 1);
    snprintf(e_stream, sizeof e_stream, "BUS_LOCAL_STREAM_PORT=%d", amqp_port + 2);
    snprintf(e_redis, sizeof e_redis, "BUS_LOCAL_REDIS_PORT=%d", redis_port);
    snprintf(e_http, sizeof e_http, "BUS_HTTP_ADDR=127.0.0.1:%d", http_port);
    snprintf(e_dir, sizeof e_dir, "BUS_RUN_DIR=%s/var", tmp_root);
    snprintf(e_build, sizeof e_build, "BUILD=%s", build);
    unsetenv("BUS_LOCAL_EPMD_PORT");
    unsetenv("BUS_STORE");
    unsetenv("BUS_API_KEYS_FILE");
    const char *env[] = {e_amqp, e_dist, e_stream, e_redis, e_http, e_dir, e_build, e_metrics, NULL};
    char log[800];
    snprintf(log, sizeof log, "%s/run.log", tmp_root);
    snprintf(cleanup_dir, sizeof cleanup_dir, "%s/var/local", tmp_root);
    char *argv[] = {"deploy/local/run.sh", NULL};
    run_sh = bt_spawn_program(argv, env, log);
    atexit(stop_run_sh);
    /* up: the platform answers through the edge's port */
    double end = bt_now_ms() + 90000;
    char text[16384] = "";
    while (bt_now_ms() < end) {
        FILE *f = fopen(log, "r");
        if (f) {
            size_t n = fread(text, 1, sizeof text - 1, f);
            text[n] = '\0';
            fclose(f);
        }
        if (strstr(text, "The platform is up") || !alive(run_sh)) break;
        usleep(200000);
    }
    CHECK_CONTAINS(text, "The platform is up");
    CHECK(port_answers(amqp_port));
    CHECK(port_answers(epmd_port));
    wait_port(http_port, 1, 10000);
    /* the banner: the line for a second terminal, and no API keys in force */
    char want[300];
    snprintf(want, sizeof want, "export BUS_AMQP_URL=amqp://guest:guest@127.0.0.1:%d/ BUS_REDIS_URL=redis://127.0.0.1:%d/0 "
             "BUS_HTTP_ADDR=127.0.0.1:%d", amqp_port, redis_port, http_port);
    CHECK_CONTAINS(text, want);
    CHECK_CONTAINS(text, "API keys are NOT in force");
    /* every worker has a metrics address; the edge counts dead letters */
    for (int p = metrics_port; p < metrics_port + 5; p++) wait_port(p, 1, 10000);
    char cmd[300], out[65536];
    snprintf(cmd, sizeof cmd, "curl -s http://127.0.0.1:%d/metrics", metrics_port + 1);
    CHECK_INT(run_out(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "service=\"alliances\"");
    snprintf(cmd, sizeof cmd, "curl -s http://127.0.0.1:%d/metrics", http_port);
    CHECK_INT(run_out(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "bus_dead_letters{service=\"alliances\"} 0");
    kill(run_sh, SIGTERM);
    CHECK_INT(bt_wait_exit(run_sh, 60000), 0);
    run_sh = 0;
    /* a clean stop: no false warnings in the edge's log */
    char gwlog[900], logtext[65536];
    snprintf(gwlog, sizeof gwlog, "%s/var/log/gateway.log", tmp_root);
    slurp(gwlog, logtext, sizeof logtext);
    CHECK_CONTAINS(logtext, "HTTP server closed");
    CHECK(!strstr(logtext, "broker connection down"));
    CHECK(!strstr(logtext, "redis down"));
    wait_port(http_port, 0, 5000);
    wait_port(amqp_port, 0, 10000);
    wait_port(epmd_port, 0, 5000);
    wait_port(redis_port, 0, 5000);
    check_default_epmd();
    CHECK(alive(beam));
    cleanup_dir[0] = 0;
    bt_kill(beam, SIGKILL);
    if (default_epmd) bt_kill(default_epmd, SIGKILL);
}

/* SIGINT to make alone (not its process group, as Ctrl-C would) stops
 * `make run` and everything it started. */
static pid_t make_pid;
static void stop_make(void) {
    if (make_pid > 0) kill(-make_pid, SIGTERM);
    if (cleanup_dir[0]) {
        sleep(2);
        servers("stop", cleanup_dir);
    }
}

/* `stop` finds the servers by the ports their start recorded (DIR/ports),
 * whatever its own environment says: run without the start's BUS_LOCAL_*,
 * it still stops both, and a second stop is a no-op. */
static void test_servers_sh_stop_uses_the_started_ports(void) {
    need_tools();
    make_root("ports");
    use_ports(free_block());
    char dir[700];
    snprintf(dir, sizeof dir, "%s/local", tmp_root);
    snprintf(cleanup_dir, sizeof cleanup_dir, "%s", dir);
    atexit(cleanup);
    CHECK_INT(servers("start", dir), 0);
    wait_port(amqp_port, 1, 5000);
    wait_port(redis_port, 1, 5000);
    wait_port(epmd_port, 1, 5000);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "env -u BUS_LOCAL_AMQP_PORT -u BUS_LOCAL_DIST_PORT -u BUS_LOCAL_STREAM_PORT -u BUS_LOCAL_REDIS_PORT "
             "-u BUS_LOCAL_EPMD_PORT deploy/local/servers.sh stop '%s' >> '%s/servers.log' 2>&1",
             dir, tmp_root);
    CHECK_INT(system(cmd), 0);
    wait_port(amqp_port, 0, 20000);
    wait_port(redis_port, 0, 5000);
    wait_port(epmd_port, 0, 5000);
    CHECK_INT(system(cmd), 0);
    cleanup_dir[0] = 0;
}

static void test_sigint_to_make_alone_stops_make_run(void) {
    need_tools();
    const char *build = getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build";
    char gw[600];
    snprintf(gw, sizeof gw, "%s/bus-gateway", build);
    if (access(gw, X_OK) != 0) SKIP("%s is not built (make run needs every program)", gw);
    make_root("make");
    use_ports(free_block());
    int metrics_port = amqp_port + 10;
    for (int p = metrics_port; p < metrics_port + 5; p++)
        if (port_answers(p)) SKIP("port %d is taken", p);
    char cmd[3000];
    /* make in a session of its own, so that the signal reaches make alone;
     * SIGINT at its default, as in a terminal (make then catches it) */
    snprintf(cmd, sizeof cmd,
             "exec env -u BUS_LOCAL_EPMD_PORT -u BUS_STORE -u BUS_API_KEYS_FILE BUS_LOCAL_AMQP_PORT=%d BUS_LOCAL_DIST_PORT=%d "
             "BUS_LOCAL_STREAM_PORT=%d BUS_LOCAL_REDIS_PORT=%d BUS_HTTP_ADDR=127.0.0.1:%d BUS_RUN_DIR=%s/var "
             "BUS_LOCAL_METRICS_PORT=%d make --no-print-directory run BUILD=%s",
             amqp_port, amqp_port + 1, amqp_port + 2, redis_port, http_port, tmp_root, metrics_port, build);
    char log[800];
    snprintf(log, sizeof log, "%s/make.log", tmp_root);
    snprintf(cleanup_dir, sizeof cleanup_dir, "%s/var/local", tmp_root);
    signal(SIGINT, SIG_DFL);
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGINT);
    sigprocmask(SIG_UNBLOCK, &unblock, NULL);
    char *argv[] = {"/usr/bin/setsid", "/bin/sh", "-c", cmd, NULL};
    make_pid = bt_spawn_program(argv, NULL, log);
    atexit(stop_make);
    double end = bt_now_ms() + 120000;
    char text[16384] = "";
    while (bt_now_ms() < end) {
        slurp(log, text, sizeof text);
        if (strstr(text, "The platform is up") || !alive(make_pid)) break;
        usleep(200000);
    }
    CHECK_CONTAINS(text, "The platform is up");
    wait_port(http_port, 1, 10000);
    CHECK_INT(kill(make_pid, SIGINT), 0);
    CHECK(bt_wait_exit(make_pid, 60000) >= 0); /* make ends (interrupted) */
    make_pid = 0;
    wait_port(http_port, 0, 5000);
    wait_port(amqp_port, 0, 20000);
    wait_port(redis_port, 0, 5000);
    for (int p = metrics_port; p < metrics_port + 5; p++) wait_port(p, 0, 5000);
    cleanup_dir[0] = 0;
}

BUS_TESTS({"servers_sh_stops_only_its_own", test_servers_sh_stops_only_its_own, 150},
          {"servers_sh_leaves_a_foreign_epmd_on_its_port", test_servers_sh_leaves_a_foreign_epmd_on_its_port, 150},
          {"servers_sh_leaves_a_foreign_redis", test_servers_sh_leaves_a_foreign_redis, 30},
          {"servers_sh_stop_uses_the_started_ports", test_servers_sh_stop_uses_the_started_ports, 120},
          {"make_run_stops_only_its_own", test_make_run_stops_only_its_own, 200},
          {"sigint_to_make_alone_stops_make_run", test_sigint_to_make_alone_stops_make_run, 240})
