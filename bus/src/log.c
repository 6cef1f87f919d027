/* JSON log lines. See bus/log.h. */
#include "bus/log.h"
#include "bus/envelope.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char log_service[64] = "bus";
static char log_instance[96] = "";
static bus_log_level_t log_level = BUS_LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error", "off"};

void bus_log_init(const char *service, const char *instance, bus_log_level_t level) {
    snprintf(log_service, sizeof log_service, "%s", service ? service : "bus");
    snprintf(log_instance, sizeof log_instance, "%s", instance ? instance : "");
    log_level = level;
}

void bus_log_set_level(bus_log_level_t level) { log_level = level; }
bus_log_level_t bus_log_get_level(void) { return log_level; }

int bus_log_level_parse(const char *name) {
    for (int i = 0; i <= BUS_LOG_OFF; i++)
        if (name && strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

void bus_json_escape_into(char *buf, size_t *len, size_t cap, const char *s) {
    size_t n = *len;
    size_t slen = s ? strlen(s) : 0;
    for (size_t i = 0; i < slen;) {
        const unsigned char *p = (const unsigned char *)s + i;
        char tmp[8];
        const char *out = tmp;
        size_t outlen = 1, used = 1;
        switch (*p) {
        case '"': out = "\\\""; outlen = 2; break;
        case '\\': out = "\\\\"; outlen = 2; break;
        case '\n': out = "\\n"; outlen = 2; break;
        case '\r': out = "\\r"; outlen = 2; break;
        case '\t': out = "\\t"; outlen = 2; break;
        default:
            if (*p < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", *p);
                outlen = 6;
            } else if (*p < 0x80) {
                tmp[0] = (char)*p;
            } else {
                /* a whole UTF-8 sequence is copied (never split by the
                 * truncation); a byte that starts none is written as U+FFFD,
                 * so that every line stays valid UTF-8 JSON */
                used = bus_utf8_seq_len(p, slen - i);
                if (used) {
                    out = (const char *)p;
                    outlen = used;
                } else {
                    out = "\\ufffd";
                    outlen = 6;
                    used = 1;
                }
            }
        }
        if (n + outlen >= cap) break;
        memcpy(buf + n, out, outlen);
        n += outlen;
        i += used;
    }
    if (n < cap) buf[n] = '\0';
    *len = n;
}

const char *bus_url_mask(const char *url, char *out, size_t cap) {
    if (!cap) return out;
    if (!url) url = "";
    const char *scheme = strstr(url, "://");
    const char *user = scheme ? scheme + 3 : NULL;
    /* the last '@': a password with an unencoded '@' is still all hidden */
    const char *at = user ? strrchr(user, '@') : NULL;
    const char *colon = at ? memchr(user, ':', (size_t)(at - user)) : NULL;
    if (colon)
        snprintf(out, cap, "%.*s:***%s", (int)(colon - url), url, at);
    else
        snprintf(out, cap, "%s", url);
    return out;
}

static void append(char *buf, size_t *len, size_t cap, const char *s) {
    size_t l = strlen(s);
    if (*len + l >= cap) l = cap - *len - 1;
    memcpy(buf + *len, s, l);
    *len += l;
    buf[*len] = '\0';
}

void bus_log(bus_log_level_t level, const char *correlation_id, const char *fmt, ...) {
    if (level < log_level || level >= BUS_LOG_OFF) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    char line[4096];
    size_t len = 0;
    line[0] = '\0';
    append(line, &len, sizeof line, "{\"ts\":\"");
    append(line, &len, sizeof line, when);
    append(line, &len, sizeof line, "\",\"level\":\"");
    append(line, &len, sizeof line, level_names[level]);
    append(line, &len, sizeof line, "\",\"service\":\"");
    bus_json_escape_into(line, &len, sizeof line, log_service);
    if (log_instance[0]) {
        append(line, &len, sizeof line, "\",\"instance\":\"");
        bus_json_escape_into(line, &len, sizeof line, log_instance);
    }
    append(line, &len, sizeof line, "\",\"msg\":\"");
    bus_json_escape_into(line, &len, sizeof line, msg);
    if (correlation_id && *correlation_id) {
        append(line, &len, sizeof line, "\",\"correlation_id\":\"");
        bus_json_escape_into(line, &len, sizeof line, correlation_id);
    }
    append(line, &len, sizeof line, "\"}\n");
    if (len > 0 && line[len - 1] != '\n') line[len - 1] = '\n'; /* truncated line still ends */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
