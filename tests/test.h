/* A small test runner in the libuv manner: a test file lists its tests with
 * BUS_TESTS(...), every test runs in a forked child with a time limit, and
 * the program prints one line per test and closes with "N passed, N failed".
 *
 *   static void test_round_trip(void) { CHECK(x == 1); CHECK_STR(a, "b"); }
 *   BUS_TESTS({"round_trip", test_round_trip, 10})
 *
 * `./test_x NAME` runs only the tests whose name contains NAME, and
 * BUS_TEST_NOFORK=1 runs them in-process (for gdb or valgrind).
 * A failing CHECK prints file:line and the expression, then exits the child.
 */
#ifndef BUS_TEST_H
#define BUS_TEST_H

#include <signal.h>
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

static inline int bus__test_run_one(const bus_test_t *t) {
    if (getenv("BUS_TEST_NOFORK")) {
        t->fn();
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        alarm((unsigned)(t->timeout_s > 0 ? t->timeout_s : 30));
        t->fn();
        exit(0); /* not _exit: LeakSanitizer checks at exit */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 1;
    if (WIFSIGNALED(status))
        fprintf(stderr, "  killed by signal %d%s\n", WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (time limit)" : "");
    return 0;
}

static inline int bus__test_main(const bus_test_t *tests, size_t n, int argc, char **argv, const char *file) {
    int passed = 0, failed = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int ok = bus__test_run_one(&tests[i]);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
        printf("%s %s: %s (%.0f ms)\n", ok ? "ok  " : "FAIL", file, tests[i].name, ms);
        if (ok) passed++; else failed++;
    }
    printf("%s: %d passed, %d failed\n", file, passed, failed);
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
