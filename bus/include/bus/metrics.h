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
 * A name registered once keeps its help text and label names. */
bus_counter_t *bus_counter(const char *name, const char *help, ...);
bus_gauge_t *bus_gauge(const char *name, const char *help, ...);
/* Histograms use fixed latency buckets in seconds:
 * 0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf */
bus_histogram_t *bus_histogram(const char *name, const char *help, ...);

void bus_counter_inc(bus_counter_t *c, uint64_t n);
uint64_t bus_counter_value(const bus_counter_t *c);
void bus_gauge_set(bus_gauge_t *g, int64_t v);
void bus_gauge_add(bus_gauge_t *g, int64_t delta);
int64_t bus_gauge_value(const bus_gauge_t *g);
void bus_histogram_observe(bus_histogram_t *h, double seconds);
uint64_t bus_histogram_count(const bus_histogram_t *h);

/* Renders every series. Returns a malloc'd NUL-terminated string (caller frees). */
char *bus_metrics_render(size_t *len);

#endif
