/* Structured logs: one JSON object per line on stderr.
 *
 *   {"ts":"2026-11-23T09:15:05.123Z","level":"info","service":"alliances",
 *    "instance":"alliances-3f2a","msg":"...","correlation_id":"..."}
 *
 * The message is formatted printf-style and JSON-escaped; correlation_id is
 * omitted when NULL. Safe to call from any thread (one write(2) per line).
 */
#ifndef BUS_LOG_H
#define BUS_LOG_H

#include <stddef.h>

typedef enum { BUS_LOG_DEBUG = 0, BUS_LOG_INFO, BUS_LOG_WARN, BUS_LOG_ERROR, BUS_LOG_OFF } bus_log_level_t;

/* Names the program in every line. Strings are copied. */
void bus_log_init(const char *service, const char *instance, bus_log_level_t level);
void bus_log_set_level(bus_log_level_t level);
bus_log_level_t bus_log_get_level(void);
/* "debug", "info", "warn", "error", "off" -> level; -1 when unknown. */
int bus_log_level_parse(const char *name);

void bus_log(bus_log_level_t level, const char *correlation_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define bus_debug(corr, ...) bus_log(BUS_LOG_DEBUG, corr, __VA_ARGS__)
#define bus_info(corr, ...) bus_log(BUS_LOG_INFO, corr, __VA_ARGS__)
#define bus_warn(corr, ...) bus_log(BUS_LOG_WARN, corr, __VA_ARGS__)
#define bus_error(corr, ...) bus_log(BUS_LOG_ERROR, corr, __VA_ARGS__)

/* Appends `s` JSON-escaped (without quotes) to buf[*len..cap); truncates
 * safely. Exposed for the access log and tests. */
void bus_json_escape_into(char *buf, size_t *len, size_t cap, const char *s);

/* A URL safe to print: "scheme://user:password@host..." becomes
 * "scheme://user:***@host..."; a URL without a password is copied as it is.
 * Every URL that reaches a log line, a health answer or an error message
 * goes through this (worker start-up, AMQP, Redis, MongoDB, the edge's
 * settings). Writes into out (truncated to cap) and returns it. */
const char *bus_url_mask(const char *url, char *out, size_t cap);

#endif
