/* Prometheus metrics for every program.
 *
 * A process-wide registry of counters, gauges and histograms, each with a
 * fixed set of label names. Series are created on first use and live until
 * exit; the returned pointers stay valid for the process lifetime, so hot
 * paths look a series up once and keep it. Updates are atomic (any thread);
 * creation takes a mutex.
 *
 *   static bus_counter_t *acked;
 *   acked = bus_counter("bus_messages_acked_total", "Messages acked", "queue", "events.alliances", NULL);
 *   bus_counter_inc(acked, 1);
 *
 * bus_metrics_render() writes the text exposition format (version 0.0.4).
 */
#ifndef BUS_METRICS_H
#define BUS_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct bus_counter bus_counter_t;
typedef struct bus_gauge bus_gauge_t;
typedef struct bus_histogram bus_histogram_t;

/* After name and help: up to 3 (label name, label value) pairs, always
 * terminated by NULL: bus_counter("x_total", "help", "queue", "q1", NULL).
 * A name registered once keeps its help text and label names. A NULL label
 * value is rendered as "". Never returns NULL: on a bad metric or label name,
 * more than 3 labels, a name re-registered with another type or other label
 * names, or out of memory, it logs a warning and returns a shared dummy
 * series that is updated but never rendered. Names must match
 * [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* (not "__"...).
 * Each call takes the registry mutex and scans the family's series: look a
 * series up once, not per message. */
bus_counter_t *bus_counter(const char *name, const char *help, ...);
bus_gauge_t *bus_gauge(const char *name, const char *help, ...);
/* Histograms use fixed latency buckets in seconds:
 * 0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf */
bus_histogram_t *bus_histogram(const char *name, const char *help, ...);

/* Updates and reads are lock-free atomics, safe from any thread; a NULL
 * handle is ignored (reads give 0). Histogram observations that are NaN are
 * dropped; a value v lands in every bucket with le >= v (cumulative on render). */
void bus_counter_inc(bus_counter_t *c, uint64_t n);
uint64_t bus_counter_value(const bus_counter_t *c);
void bus_gauge_set(bus_gauge_t *g, int64_t v);
void bus_gauge_add(bus_gauge_t *g, int64_t delta);
int64_t bus_gauge_value(const bus_gauge_t *g);
void bus_histogram_observe(bus_histogram_t *h, double seconds);
uint64_t bus_histogram_count(const bus_histogram_t *h);

/* Renders every series. Returns a malloc'd NUL-terminated string (caller
 * frees), or NULL when out of memory; *len (if not NULL) gets its length.
 * Families come in registration order, series in creation order; after them
 * the process metrics, computed at each call:
 *   process_cpu_seconds_total (getrusage), process_open_fds (/proc/self/fd),
 *   process_resident_memory_bytes, process_virtual_memory_bytes (/proc/self/statm),
 *   process_start_time_seconds (/proc/stat btime + /proc/self/stat starttime).
 * Takes the registry mutex while walking it: call it off hot paths (a scrape). */
char *bus_metrics_render(size_t *len);

#endif
