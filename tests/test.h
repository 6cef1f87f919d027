/* A small test runner in the libuv manner: a test file lists its tests with
 * BUS_TESTS(...), every test runs in a forked child with a time limit, and
 * the program prints one line per test and closes with
 * "N passed, N failed, N skipped".
 *
 *   static void test_round_trip(void) { CHECK(x == 1); CHECK_STR(a, "b"); }
 *   BUS_TESTS({"round_trip", test_round_trip, 10})
 *
 * `./test_x NAME` runs only the tests whose name contains NAME, and
 * BUS_TEST_NOFORK=1 runs them in-process (for gdb or valgrind).
 * A failing CHECK prints file:line and the expression, then exits the child.
 *
 * A test that cannot run here (no MongoDB, no IPv6 loopback, a program not
 * built) says so with SKIP("why") instead of returning: it is then counted
 * as skipped, never as passed, and its line reads "skip file: name: why".
 */
#ifndef BUS_TEST_H
#define BUS_TEST_H

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *name;
    void (*fn)(void);
    int timeout_s; /* 0 = 30 s */
} bus_test_t;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            fflush(stderr);                                                         \
            exit(1);                                                                \
        }                                                                           \
    } while (0)

#define CHECK_INT(a, b)                                                                        \
    do {                                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                                    \
        if (a_ != b_) {                                                                        \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a, \
                    a_, #b, b_);                                                               \
            fflush(stderr);                                                                    \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

#define CHECK_STR(a, b)                                                                       \
    do {                                                                                      \
        const char *a_ = (a), *b_ = (b);                                                      \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                              \
            fprintf(stderr, "  %s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                  \
            fflush(stderr);                                                                   \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                                             \
    do {                                                                                        \
        const char *h_ = (hay), *n_ = (needle);                                                 \
        if (!h_ || !strstr(h_, n_)) {                                                           \
            fprintf(stderr, "  %s:%d: %s is \"%s\", which lacks \"%s\"\n", __FILE__, __LINE__, #hay, \
                    h_ ? h_ : "(null)", n_);                                                    \
            fflush(stderr);                                                                     \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

/* The exit status of a test child that skipped (as in automake). */
#define BUS_TEST_SKIPPED 77
enum { BUS__TEST_FAIL, BUS__TEST_PASS, BUS__TEST_SKIP };

/* Where a skipping child writes its reason for the parent (a pipe). */
static int bus__test_skip_fd = -1;

/* Ends the running test as skipped, with the reason (printf format). In
 * BUS_TEST_NOFORK mode it ends the whole program, like a failing CHECK. */
#define SKIP(...) bus__test_skip(__VA_ARGS__)
__attribute__((noreturn, format(printf, 1, 2), unused)) static void bus__test_skip(const char *fmt, ...) {
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (bus__test_skip_fd >= 0) {
        ssize_t w = write(bus__test_skip_fd, why, strlen(why) < 500 ? strlen(why) : 500);
        (void)w;
    } else {
        printf("  skipped: %s\n", why);
    }
    fflush(stdout);
    fflush(stderr);
    exit(BUS_TEST_SKIPPED);
}

static inline int bus__test_run_one(const bus_test_t *t, char *why, size_t whylen) {
    why[0] = '\0';
    if (getenv("BUS_TEST_NOFORK")) {
        t->fn();
        return BUS__TEST_PASS;
    }
    /* close-on-exec: a program the test starts (a broker, a worker) never
     * holds it; the reason is shorter than PIPE_BUF, so the child's one write
     * never blocks and is read whole once the child is gone */
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        perror("  pipe");
        return BUS__TEST_FAIL;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        bus__test_skip_fd = fds[1];
        alarm((unsigned)(t->timeout_s > 0 ? t->timeout_s : 30));
        t->fn();
        exit(0); /* not _exit: LeakSanitizer checks at exit */
    }
    close(fds[1]);
    int status = 0;
    waitpid(pid, &status, 0);
    fcntl(fds[0], F_SETFL, O_NONBLOCK); /* a forked helper may still hold the write end */
    ssize_t got = read(fds[0], why, whylen - 1);
    why[got > 0 ? got : 0] = '\0';
    for (char *p = why; *p; p++)
        if (*p == '\n') *p = ' '; /* one line per test */
    close(fds[0]);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return BUS__TEST_PASS;
    if (WIFEXITED(status) && WEXITSTATUS(status) == BUS_TEST_SKIPPED && got > 0) return BUS__TEST_SKIP;
    if (WIFSIGNALED(status))
        fprintf(stderr, "  killed by signal %d%s\n", WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (time limit)" : "");
    return BUS__TEST_FAIL;
}

static inline int bus__test_main(const bus_test_t *tests, size_t n, int argc, char **argv, const char *file) {
    int passed = 0, failed = 0, skipped = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
        struct timespec a, b;
        char why[512];
        clock_gettime(CLOCK_MONOTONIC, &a);
        int outcome = bus__test_run_one(&tests[i], why, sizeof why);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
        if (outcome == BUS__TEST_SKIP) {
            printf("skip %s: %s: %s (%.0f ms)\n", file, tests[i].name, why, ms);
            skipped++;
            continue;
        }
        printf("%s %s: %s (%.0f ms)\n", outcome == BUS__TEST_PASS ? "ok  " : "FAIL", file, tests[i].name, ms);
        if (outcome == BUS__TEST_PASS) passed++; else failed++;
    }
    printf("%s: %d passed, %d failed, %d skipped\n", file, passed, failed, skipped);
    return failed ? 1 : 0;
}

#define BUS_TESTS(...)                                                                       \
    static const bus_test_t bus__tests[] = {__VA_ARGS__};                                    \
    int main(int argc, char **argv) {                                                        \
        const char *f = strrchr(__FILE__, '/');                                              \
        return bus__test_main(bus__tests, sizeof bus__tests / sizeof bus__tests[0], argc, argv, \
                              f ? f + 1 : __FILE__);                                         \
    }

#endif
