/* The test runner itself: tests/test.h counts a test that calls SKIP as
 * skipped, never as passed (nor one that merely exits 77 without saying why),
 * and tests/run.sh adds the programs' "N passed, N failed, N skipped" lines
 * up, lists the skipped tests and closes with the same three counts. No
 * servers. */
#include <fcntl.h>
#include <sys/stat.h>

#include "../test.h"

static void inner_pass(void) {}
static void inner_skip(void) { SKIP("no %s on this host", "frobnicator"); }
static void inner_fail(void) { CHECK(1 == 2); }
static void inner_exit77(void) { exit(BUS_TEST_SKIPPED); } /* no reason: not a skip */

/* Reads a whole small file into buf. */
static void slurp(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void test_skip_is_counted_apart(void) {
    static const bus_test_t inner[] = {{"p", inner_pass, 10},
                                       {"s", inner_skip, 10},
                                       {"f", inner_fail, 10},
                                       {"e", inner_exit77, 10}};
    char out_path[] = "/tmp/bus-runner-out-XXXXXX";
    int fd = mkstemp(out_path);
    CHECK(fd >= 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) { /* the inner run, its output into the file */
        dup2(fd, 1);
        dup2(fd, 2);
        char *argv[] = {"inner", NULL};
        exit(bus__test_main(inner, sizeof inner / sizeof inner[0], 1, argv, "inner.c"));
    }
    close(fd);
    int status = 0;
    waitpid(pid, &status, 0);
    static char out[8192];
    slurp(out_path, out, sizeof out);
    unlink(out_path);
    CHECK(WIFEXITED(status));
    CHECK_INT(WEXITSTATUS(status), 1); /* a failure among them */
    CHECK_CONTAINS(out, "ok   inner.c: p (");
    CHECK_CONTAINS(out, "skip inner.c: s: no frobnicator on this host (");
    CHECK_CONTAINS(out, "FAIL inner.c: f (");
    CHECK_CONTAINS(out, "FAIL inner.c: e (");
    CHECK_CONTAINS(out, "\ninner.c: 1 passed, 2 failed, 1 skipped\n");
}

/* Writes an executable shell script. */
static void put_script(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
    CHECK(chmod(path, 0755) == 0);
}

static void test_run_sh_totals(void) {
    if (access("tests/run.sh", X_OK) != 0) SKIP("tests/run.sh not found (not run from the repository root)");
    char root[] = "/tmp/bus-runner-build-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    char dir[600], path[700], cmd[2048];
    snprintf(dir, sizeof dir, "%s/tests/unit", root);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    CHECK(system(cmd) == 0);
    /* a program with a skip, and one in the older two-count format */
    snprintf(path, sizeof path, "%s/test_a", dir);
    put_script(path, "#!/bin/sh\n"
                     "echo 'ok   a.c: one (1 ms)'\n"
                     "echo 'skip a.c: two: no frobnicator on this host (1 ms)'\n"
                     "echo 'ok   a.c: three (1 ms)'\n"
                     "echo 'a.c: 2 passed, 0 failed, 1 skipped'\n");
    snprintf(path, sizeof path, "%s/test_b", dir);
    put_script(path, "#!/bin/sh\necho 'ok   b.c: one (1 ms)'\necho 'b.c: 1 passed, 0 failed'\n");
    char out_path[700];
    snprintf(out_path, sizeof out_path, "%s/out", root);
    snprintf(cmd, sizeof cmd, "BUILD='%s' tests/run.sh unit > '%s' 2>&1", root, out_path);
    int rc = system(cmd);
    static char out[16384];
    slurp(out_path, out, sizeof out);
    CHECK_INT(rc, 0);
    CHECK_CONTAINS(out, "skipped (not run here, not counted as passed):\n  a.c: two: no frobnicator on this host");
    CHECK_CONTAINS(out, "\ntotal: 3 passed, 0 failed, 1 skipped\n");
    /* a failure makes the run fail, and the skip is still not a pass */
    snprintf(path, sizeof path, "%s/test_c", dir);
    put_script(path, "#!/bin/sh\necho 'FAIL c.c: one (1 ms)'\necho 'c.c: 0 passed, 1 failed, 0 skipped'\nexit 1\n");
    snprintf(cmd, sizeof cmd, "BUILD='%s' tests/run.sh unit > '%s' 2>&1", root, out_path);
    rc = system(cmd);
    slurp(out_path, out, sizeof out);
    CHECK(rc != 0);
    CHECK_CONTAINS(out, "\ntotal: 3 passed, 1 failed, 1 skipped\n");
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
}

BUS_TESTS({"skip_is_counted_apart", test_skip_is_counted_apart, 20}, {"run_sh_totals", test_run_sh_totals, 30})
