/* Prometheus metrics registry and text exposition. See bus/metrics.h.
 *
 * The registry is a list of families (one per metric name: type, help, label
 * names), each with a list of series (one per label-value tuple). Both lists
 * only grow, under `reg_lock`; nodes are never freed, which is what lets
 * callers keep series pointers forever and update them lock-free. Values are
 * C11 atomics with relaxed ordering: a scrape may see one counter a little
 * ahead of another, never a torn value.
 *
 * A histogram keeps one non-cumulative atomic count per bucket (an
 * observation touches one bucket, not all the ones above it) and the render
 * accumulates them. The sum is a double kept as its bit pattern in an
 * atomic uint64 and updated with a compare-and-swap loop.
 */
#include "bus/metrics.h"
#include "textbuf.h"

#include "bus/log.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#define MAX_LABELS 3
#define NBUCKETS 16 /* finite bounds; +Inf is the count */

static const double bucket_bounds[NBUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                               0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10};
static const char *const bucket_names[NBUCKETS] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                                                   "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
                                                   "1",      "2.5",     "5",      "10"};

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;
static const char *const kind_names[] = {"counter", "gauge", "histogram"};

typedef struct series {
    struct series *next;
    char *values[MAX_LABELS];
    union {
        atomic_uint_fast64_t counter;
        atomic_int_fast64_t gauge;
        struct {
            atomic_uint_fast64_t buckets[NBUCKETS + 1]; /* last: above the largest bound */
            atomic_uint_fast64_t count;
            atomic_uint_fast64_t sum_bits;
        } hist;
    } v;
} series_t;

/* The public handle types are all a series underneath. */
struct bus_counter {
    series_t s;
};
struct bus_gauge {
    series_t s;
};
struct bus_histogram {
    series_t s;
};

typedef struct family {
    struct family *next;
    kind_t kind;
    char *name;
    char *help;
    int nlabels;
    char *labels[MAX_LABELS];
    series_t *series, **series_tail;
} family_t;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static family_t *families, **families_tail = &families;

/* Handed out when registration is refused (bad name, label mismatch, out of
 * memory), so callers never have to check for NULL; it is never rendered. */
static series_t dummy_series;

static int valid_name(const char *s, int allow_colon) {
    if (!s || !*s) return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':') ||
                 (p != s && c >= '0' && c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

/* Finds or creates the series; NULL when refused. Caller holds no lock. */
static series_t *lookup(kind_t kind, const char *name, const char *help, va_list ap) {
    const char *lnames[MAX_LABELS], *lvalues[MAX_LABELS];
    int n = 0;
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k) break;
        const char *v = va_arg(ap, const char *);
        if (n == MAX_LABELS || !valid_name(k, 0) || strncmp(k, "__", 2) == 0) {
            bus_warn(NULL, "metric %s: bad or too many labels (at most %d)", name ? name : "?", MAX_LABELS);
            return NULL;
        }
        lnames[n] = k;
        lvalues[n] = v ? v : "";
        n++;
    }
    if (!valid_name(name, 1)) {
        bus_warn(NULL, "metric name \"%s\" is not a valid Prometheus name", name ? name : "(null)");
        return NULL;
    }

    series_t *found = NULL;
    pthread_mutex_lock(&reg_lock);
    family_t *f = families;
    for (; f; f = f->next)
        if (strcmp(f->name, name) == 0) break;
    if (f) {
        int same = f->kind == kind && f->nlabels == n;
        for (int i = 0; same && i < n; i++) same = strcmp(f->labels[i], lnames[i]) == 0;
        if (!same) {
            pthread_mutex_unlock(&reg_lock);
            bus_warn(NULL, "metric %s re-registered with another type or other label names", name);
            return NULL;
        }
    } else {
        f = calloc(1, sizeof *f);
        if (!f) goto out;
        f->kind = kind;
        f->name = strdup(name);
        f->help = strdup(help ? help : "");
        f->nlabels = n;
        int oom = !f->name || !f->help;
        for (int i = 0; i < n; i++) oom |= !(f->labels[i] = strdup(lnames[i]));
        if (oom) {
            free(f->name);
            free(f->help);
            for (int i = 0; i < n; i++) free(f->labels[i]);
            free(f);
            goto out;
        }
        f->series_tail = &f->series;
        *families_tail = f;
        families_tail = &f->next;
    }
    for (series_t *s = f->series; s; s = s->next) {
        int same = 1;
        for (int i = 0; same && i < n; i++) same = strcmp(s->values[i], lvalues[i]) == 0;
        if (same) {
            found = s;
            goto out;
        }
    }
    series_t *s = calloc(1, sizeof *s);
    if (!s) goto out;
    int oom = 0;
    for (int i = 0; i < n; i++) oom |= !(s->values[i] = strdup(lvalues[i]));
    if (oom) {
        for (int i = 0; i < n; i++) free(s->values[i]);
        free(s);
        goto out;
    }
    /* calloc left every atomic at 0 (all-zero bits are 0 and +0.0 here). */
    *f->series_tail = s;
    f->series_tail = &s->next;
    found = s;
out:
    pthread_mutex_unlock(&reg_lock);
    return found;
}

bus_counter_t *bus_counter(const char *name, const char *help, ...) {
    va_list ap;
    va_start(ap, help);
    series_t *s = lookup(KIND_COUNTER, name, help, ap);
    va_end(ap);
    return (bus_counter_t *)(s ? s : &dummy_series);
}

bus_gauge_t *bus_gauge(const char *name, const char *help, ...) {
    va_list ap;
    va_start(ap, help);
    series_t *s = lookup(KIND_GAUGE, name, help, ap);
    va_end(ap);
    return (bus_gauge_t *)(s ? s : &dummy_series);
}

bus_histogram_t *bus_histogram(const char *name, const char *help, ...) {
    va_list ap;
    va_start(ap, help);
    series_t *s = lookup(KIND_HISTOGRAM, name, help, ap);
    va_end(ap);
    return (bus_histogram_t *)(s ? s : &dummy_series);
}

void bus_counter_inc(bus_counter_t *c, uint64_t n) {
    if (c) atomic_fetch_add_explicit(&c->s.v.counter, n, memory_order_relaxed);
}
uint64_t bus_counter_value(const bus_counter_t *c) {
    return c ? atomic_load_explicit(&((bus_counter_t *)c)->s.v.counter, memory_order_relaxed) : 0;
}
void bus_gauge_set(bus_gauge_t *g, int64_t v) {
    if (g) atomic_store_explicit(&g->s.v.gauge, v, memory_order_relaxed);
}
void bus_gauge_add(bus_gauge_t *g, int64_t delta) {
    if (g) atomic_fetch_add_explicit(&g->s.v.gauge, delta, memory_order_relaxed);
}
int64_t bus_gauge_value(const bus_gauge_t *g) {
    return g ? atomic_load_explicit(&((bus_gauge_t *)g)->s.v.gauge, memory_order_relaxed) : 0;
}

static uint64_t dbl_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}
static double bits_dbl(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

void bus_histogram_observe(bus_histogram_t *h, double seconds) {
    if (!h || isnan(seconds)) return;
    int b = 0;
    while (b < NBUCKETS && seconds > bucket_bounds[b]) b++; /* le: v <= bound */
    atomic_fetch_add_explicit(&h->s.v.hist.buckets[b], 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&h->s.v.hist.sum_bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&h->s.v.hist.sum_bits, &old, dbl_bits(bits_dbl(old) + seconds),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
    atomic_fetch_add_explicit(&h->s.v.hist.count, 1, memory_order_relaxed);
}

uint64_t bus_histogram_count(const bus_histogram_t *h) {
    return h ? atomic_load_explicit(&((bus_histogram_t *)h)->s.v.hist.count, memory_order_relaxed) : 0;
}

/* ------------------------------------------------------------- render --- */

static void sb_fmt(bus__text_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(bus__text_t *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) bus__text_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Label values escape \ " and newline; HELP text escapes \ and newline. */
static void sb_escaped(bus__text_t *b, const char *s, int quote) {
    for (const char *p = s; *p; p++) {
        if (*p == '\\') bus__text_put(b, "\\\\", 2);
        else if (*p == '\n') bus__text_put(b, "\\n", 2);
        else if (*p == '"' && quote) bus__text_put(b, "\\\"", 2);
        else bus__text_put(b, p, 1);
    }
}

/* Shortest of %.15g / %.17g that reads back as the same double. */
static void sb_double(bus__text_t *b, double d) {
    char tmp[40];
    if (isinf(d)) {
        bus__text_str(b, d > 0 ? "+Inf" : "-Inf");
        return;
    }
    snprintf(tmp, sizeof tmp, "%.15g", d);
    if (strtod(tmp, NULL) != d) snprintf(tmp, sizeof tmp, "%.17g", d);
    bus__text_str(b, tmp);
}

/* Writes `{a="x",b="y"` plus an optional extra le label, then `}`; nothing
 * at all when there are no labels. */
static void sb_labels(bus__text_t *b, const family_t *f, const series_t *s, const char *le) {
    if (f->nlabels == 0 && !le) return;
    bus__text_put(b, "{", 1);
    for (int i = 0; i < f->nlabels; i++) {
        if (i) bus__text_put(b, ",", 1);
        bus__text_str(b, f->labels[i]);
        bus__text_put(b, "=\"", 2);
        sb_escaped(b, s->values[i], 1);
        bus__text_put(b, "\"", 1);
    }
    if (le) {
        if (f->nlabels) bus__text_put(b, ",", 1);
        bus__text_str(b, "le=\"");
        bus__text_str(b, le);
        bus__text_put(b, "\"", 1);
    }
    bus__text_put(b, "}", 1);
}

static void render_family(bus__text_t *b, const family_t *f) {
    sb_fmt(b, "# HELP %s ", f->name);
    sb_escaped(b, f->help, 0);
    sb_fmt(b, "\n# TYPE %s %s\n", f->name, kind_names[f->kind]);
    for (series_t *s = f->series; s; s = s->next) {
        if (f->kind == KIND_COUNTER || f->kind == KIND_GAUGE) {
            bus__text_str(b, f->name);
            sb_labels(b, f, s, NULL);
            if (f->kind == KIND_COUNTER)
                sb_fmt(b, " %llu\n", (unsigned long long)atomic_load_explicit(&s->v.counter, memory_order_relaxed));
            else
                sb_fmt(b, " %lld\n", (long long)atomic_load_explicit(&s->v.gauge, memory_order_relaxed));
            continue;
        }
        /* Read the buckets first and derive +Inf/_count from them, so the
         * cumulative series is consistent even while observations land. */
        uint64_t cum = 0;
        for (int i = 0; i <= NBUCKETS; i++) {
            cum += atomic_load_explicit(&s->v.hist.buckets[i], memory_order_relaxed);
            sb_fmt(b, "%s_bucket", f->name);
            sb_labels(b, f, s, i < NBUCKETS ? bucket_names[i] : "+Inf");
            sb_fmt(b, " %llu\n", (unsigned long long)cum);
        }
        sb_fmt(b, "%s_sum", f->name);
        sb_labels(b, f, s, NULL);
        bus__text_put(b, " ", 1);
        sb_double(b, bits_dbl(atomic_load_explicit(&s->v.hist.sum_bits, memory_order_relaxed)));
        sb_fmt(b, "\n%s_count", f->name);
        sb_labels(b, f, s, NULL);
        sb_fmt(b, " %llu\n", (unsigned long long)cum);
    }
}

/* Process start time in seconds since the epoch: boot time (/proc/stat
 * btime) plus the process's start in clock ticks since boot (field 22 of
 * /proc/self/stat). Computed once. */
static double process_start;
static pthread_once_t process_start_once = PTHREAD_ONCE_INIT;

static void compute_process_start(void) {
    char buf[1024];
    long long btime = -1;
    FILE *fp = fopen("/proc/stat", "re");
    if (fp) {
        while (fgets(buf, sizeof buf, fp))
            if (sscanf(buf, "btime %lld", &btime) == 1) break;
        fclose(fp);
    }
    unsigned long long start_ticks = 0;
    int ok = 0;
    fp = fopen("/proc/self/stat", "re");
    if (fp) {
        size_t n = fread(buf, 1, sizeof buf - 1, fp);
        buf[n] = '\0';
        fclose(fp);
        char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
        /* After ")": state is field 3; starttime is field 22, i.e. the 20th after state. */
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                        &start_ticks) == 1)
            ok = 1;
    }
    long hz = sysconf(_SC_CLK_TCK);
    if (ok && btime >= 0 && hz > 0) {
        process_start = (double)btime + (double)start_ticks / (double)hz;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        process_start = (double)ts.tv_sec; /* best effort: first scrape */
    }
}

static void render_process(bus__text_t *b) {
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long vsize = 0, rss = 0;
    FILE *fp = fopen("/proc/self/statm", "re");
    if (fp) {
        if (fscanf(fp, "%llu %llu", &vsize, &rss) != 2) vsize = rss = 0;
        fclose(fp);
    }
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
              (double)ru.ru_stime.tv_usec / 1e6;
    long fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') fds++;
        closedir(d);
        fds--; /* the directory stream's own descriptor */
    }
    pthread_once(&process_start_once, compute_process_start);

    bus__text_str(b, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
              "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ");
    sb_double(b, cpu);
    bus__text_str(b, "\n# HELP process_open_fds Number of open file descriptors.\n"
              "# TYPE process_open_fds gauge\n");
    sb_fmt(b, "process_open_fds %ld\n", fds < 0 ? 0 : fds);
    bus__text_str(b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
              "# TYPE process_resident_memory_bytes gauge\n");
    sb_fmt(b, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)(page > 0 ? page : 4096));
    bus__text_str(b, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
              "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ");
    sb_double(b, process_start);
    bus__text_str(b, "\n# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
              "# TYPE process_virtual_memory_bytes gauge\n");
    sb_fmt(b, "process_virtual_memory_bytes %llu\n", vsize * (unsigned long long)(page > 0 ? page : 4096));
}

char *bus_metrics_render(size_t *len) {
    bus__text_t b = {0};
    pthread_mutex_lock(&reg_lock);
    for (family_t *f = families; f; f = f->next) render_family(&b, f);
    pthread_mutex_unlock(&reg_lock);
    render_process(&b);
    if (b.oom || !b.buf) {
        free(b.buf);
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = b.len;
    return b.buf;
}
