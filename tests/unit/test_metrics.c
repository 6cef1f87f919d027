/* Tests of bus/src/metrics.c: registry, text exposition, concurrency.
 * Every test runs in its own forked child, so each starts with an empty
 * registry. */
#include "bus/metrics.h"

#include "../test.h"

#include <math.h>
#include <pthread.h>

/* The registered families, without the process_* block that follows them. */
static char *render_own(void) {
    size_t len = 0;
    char *text = bus_metrics_render(&len);
    CHECK(text != NULL);
    CHECK_INT(len, strlen(text));
    char *proc = strstr(text, "# HELP process_");
    CHECK(proc != NULL);
    *proc = '\0';
    return text;
}

static void test_render_exact(void) {
    bus_counter_t *acked = bus_counter("bus_messages_acked_total", "Messages acked", "queue", "events.alliances", NULL);
    bus_counter_t *acked2 = bus_counter("bus_messages_acked_total", "ignored help", "queue", "q\"x\\y\nz", NULL);
    bus_gauge_t *inflight = bus_gauge("bus_inflight", "In-flight \\ messages\nnow", NULL);
    bus_histogram_t *lat =
        bus_histogram("bus_rpc_seconds", "RPC latency", "service", "alliances", "method", "promote", NULL);
    bus_counter_inc(acked, 3);
    bus_counter_inc(acked, 2);
    bus_counter_inc(acked2, 1);
    bus_gauge_set(inflight, 10);
    bus_gauge_add(inflight, -13);
    bus_histogram_observe(lat, 0.0001);  /* exactly on a bound: le is inclusive */
    bus_histogram_observe(lat, 0.003);
    bus_histogram_observe(lat, 0.75);
    bus_histogram_observe(lat, 42);      /* only +Inf */

    /* Looking a series up again returns the same one. */
    CHECK(bus_counter("bus_messages_acked_total", "x", "queue", "events.alliances", NULL) == acked);
    CHECK_INT(bus_counter_value(acked), 5);
    CHECK_INT(bus_gauge_value(inflight), -3);
    CHECK_INT(bus_histogram_count(lat), 4);

    const char *expected =
        "# HELP bus_messages_acked_total Messages acked\n"
        "# TYPE bus_messages_acked_total counter\n"
        "bus_messages_acked_total{queue=\"events.alliances\"} 5\n"
        "bus_messages_acked_total{queue=\"q\\\"x\\\\y\\nz\"} 1\n"
        "# HELP bus_inflight In-flight \\\\ messages\\nnow\n"
        "# TYPE bus_inflight gauge\n"
        "bus_inflight -3\n"
        "# HELP bus_rpc_seconds RPC latency\n"
        "# TYPE bus_rpc_seconds histogram\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.0001\"} 1\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.00025\"} 1\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.0005\"} 1\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.001\"} 1\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.0025\"} 1\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.005\"} 2\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.01\"} 2\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.025\"} 2\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.05\"} 2\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.1\"} 2\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.25\"} 2\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"0.5\"} 2\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"1\"} 3\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"2.5\"} 3\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"5\"} 3\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"10\"} 3\n"
        "bus_rpc_seconds_bucket{service=\"alliances\",method=\"promote\",le=\"+Inf\"} 4\n"
        "bus_rpc_seconds_sum{service=\"alliances\",method=\"promote\"} 42.7531\n"
        "bus_rpc_seconds_count{service=\"alliances\",method=\"promote\"} 4\n";
    char *text = render_own();
    CHECK_STR(text, expected);
    free(text);
}

static void test_process_metrics(void) {
    char *text = bus_metrics_render(NULL);
    CHECK(text);
    CHECK_CONTAINS(text, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ");
    CHECK_CONTAINS(text, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes ");
    CHECK_CONTAINS(text, "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ");
    CHECK_CONTAINS(text, "# TYPE process_open_fds gauge\nprocess_open_fds ");
    CHECK_CONTAINS(text, "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes ");
    double rss = strtod(strstr(text, "\nprocess_resident_memory_bytes ") + 31, NULL);
    CHECK(rss > 100 * 1024 && rss < 64.0 * 1024 * 1024 * 1024);
    /* This test's process is a child forked a moment ago. */
    double start = strtod(strstr(text, "\nprocess_start_time_seconds ") + 28, NULL);
    double now = (double)time(NULL);
    CHECK(start > now - 60 && start <= now + 1);
    long fds = strtol(strstr(text, "\nprocess_open_fds ") + 18, NULL, 10);
    CHECK(fds >= 3);
    /* burn some CPU and see the counter move */
    double cpu0 = strtod(strstr(text, "\nprocess_cpu_seconds_total ") + 27, NULL);
    free(text);
    volatile double x = 0;
    struct timespec a, b;
    /* by this process's own CPU clock: on a loaded machine wall time
     * passes without the process running */
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    do {
        for (int i = 0; i < 100000; i++) x += i * 0.5;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    } while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 200000000L);
    text = bus_metrics_render(NULL);
    double cpu1 = strtod(strstr(text, "\nprocess_cpu_seconds_total ") + 27, NULL);
    CHECK(cpu1 - cpu0 >= 0.1);
    free(text);
}

static void test_histogram_cumulative(void) {
    bus_histogram_t *h = bus_histogram("h_seconds", "h", NULL);
    /* 1 observation into each bucket interval, k+1 into the k-th */
    const double in_bucket[] = {0.00005, 0.0002, 0.0004, 0.0009, 0.002, 0.004, 0.009, 0.02, 0.04,
                                0.09,    0.2,    0.4,    0.9,    2,     4,     9,     11};
    uint64_t total = 0;
    for (int k = 0; k < 17; k++)
        for (int j = 0; j <= k; j++) {
            bus_histogram_observe(h, in_bucket[k]);
            total++;
        }
    bus_histogram_observe(h, NAN); /* NaN is dropped */
    CHECK_INT(bus_histogram_count(h), total);
    char *text = render_own();
    const char *p = text;
    unsigned long long prev = 0, expect = 0;
    int buckets = 0;
    while ((p = strstr(p, "h_seconds_bucket{le=\""))) {
        const char *v = strchr(p, '}') + 2;
        unsigned long long n = strtoull(v, NULL, 10);
        expect += (unsigned long long)buckets + 1;
        CHECK_INT(n, expect);
        CHECK(n >= prev);
        prev = n;
        buckets++;
        p = v;
    }
    CHECK_INT(buckets, 17);
    CHECK_CONTAINS(text, "h_seconds_bucket{le=\"+Inf\"} 153\n");
    CHECK_CONTAINS(text, "h_seconds_count 153\n");
    free(text);
}

static void test_refused_registrations(void) {
    bus_counter_t *ok = bus_counter("good_total", "ok", "a", "1", NULL);
    /* other type, other label names, bad names, too many labels: a dummy that works but is never rendered */
    bus_gauge_t *wrong_type = bus_gauge("good_total", "x", "a", "1", NULL);
    bus_counter_t *wrong_labels = bus_counter("good_total", "x", "b", "1", NULL);
    bus_counter_t *bad_name = bus_counter("bad-name", "x", NULL);
    bus_counter_t *bad_label = bus_counter("x_total", "x", "le-x", "1", NULL);
    bus_counter_t *reserved = bus_counter("y_total", "x", "__name", "1", NULL);
    bus_counter_t *four = bus_counter("z_total", "x", "a", "1", "b", "2", "c", "3", "d", "4", NULL);
    CHECK(wrong_type && wrong_labels && bad_name && bad_label && reserved && four);
    CHECK((void *)wrong_labels != (void *)ok);
    bus_gauge_set(wrong_type, 5);
    bus_counter_inc(bad_name, 1);
    bus_counter_inc(NULL, 1); /* NULL handles are ignored */
    CHECK_INT(bus_counter_value(NULL), 0);
    bus_counter_t *three = bus_counter("w_total", "x", "a", "1", "b", NULL, "c", "3", NULL);
    bus_counter_inc(three, 7);
    bus_counter_inc(ok, 1);
    char *text = render_own();
    CHECK_STR(text, "# HELP good_total ok\n# TYPE good_total counter\ngood_total{a=\"1\"} 1\n"
                    "# HELP w_total x\n# TYPE w_total counter\nw_total{a=\"1\",b=\"\",c=\"3\"} 7\n");
    free(text);
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++) n++;
    return n;
}

enum { THREADS = 4, PER_THREAD = 100000 };

static void *hammer(void *arg) {
    (void)arg;
    /* each thread looks the series up itself: creation races on the mutex */
    bus_counter_t *c = bus_counter("race_total", "r", "k", "v", NULL);
    bus_gauge_t *g = bus_gauge("race_gauge", "r", NULL);
    bus_histogram_t *h = bus_histogram("race_seconds", "r", NULL);
    for (int i = 0; i < PER_THREAD; i++) {
        bus_counter_inc(c, 1);
        bus_gauge_add(g, (i & 1) ? 1 : -1);
        bus_histogram_observe(h, 0.5);
    }
    return NULL;
}

static void test_concurrency(void) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) CHECK(pthread_create(&t[i], NULL, hammer, NULL) == 0);
    /* render concurrently with the updates: must not crash or deadlock */
    for (int i = 0; i < 20; i++) free(bus_metrics_render(NULL));
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    CHECK_INT(bus_counter_value(bus_counter("race_total", "r", "k", "v", NULL)), THREADS * PER_THREAD);
    CHECK_INT(bus_gauge_value(bus_gauge("race_gauge", "r", NULL)), 0);
    bus_histogram_t *h = bus_histogram("race_seconds", "r", NULL);
    CHECK_INT(bus_histogram_count(h), THREADS * PER_THREAD);
    char *text = render_own();
    CHECK_CONTAINS(text, "race_total{k=\"v\"} 400000\n");
    CHECK_CONTAINS(text, "race_seconds_sum 200000\n"); /* 0.5 is exact: the CAS loop lost nothing */
    CHECK_CONTAINS(text, "race_seconds_bucket{le=\"0.25\"} 0\n");
    CHECK_CONTAINS(text, "race_seconds_bucket{le=\"0.5\"} 400000\n");
    /* one family each, one series each */
    CHECK_INT(count_of(text, "# TYPE race_total counter\n"), 1);
    CHECK_INT(count_of(text, "race_total{"), 1);
    CHECK_INT(count_of(text, "race_seconds_count "), 1);
    free(text);
}

static void test_many_series(void) {
    char v[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(v, sizeof v, "q%d", i);
        bus_counter_inc(bus_counter("many_total", "m", "queue", v, NULL), (uint64_t)i);
    }
    char *text = render_own();
    CHECK_CONTAINS(text, "many_total{queue=\"q0\"} 0\nmany_total{queue=\"q1\"} 1\n");
    CHECK_CONTAINS(text, "many_total{queue=\"q1999\"} 1999\n");
    free(text);
}

BUS_TESTS({"render_exact", test_render_exact, 10},
          {"process_metrics", test_process_metrics, 10},
          {"histogram_cumulative", test_histogram_cumulative, 10},
          {"refused_registrations", test_refused_registrations, 10},
          {"concurrency", test_concurrency, 30},
          {"many_series", test_many_series, 10})
