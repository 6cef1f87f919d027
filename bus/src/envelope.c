/* CloudEvents 1.0 envelopes: ids, times, parse and serialise. See bus/envelope.h. */
#include "bus/envelope.h"

#include "bus/error.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- ids --- */

/* bus_uuid() runs for every event and RPC, so it must not make a syscall
 * each time. Each thread keeps a buffer of kernel randomness (getrandom,
 * falling back to /dev/urandom) and takes 16 bytes per id: one syscall per
 * 256 ids. The ids must be unique across processes, so a fork() must not
 * leave parent and child drawing the same buffered bytes: a pthread_atfork
 * child handler bumps a generation counter and every thread's buffer from an
 * older generation is thrown away before its next use. */
#define UUID_POOL_BYTES 4096

static atomic_uint uuid_fork_gen = 1;
static pthread_once_t uuid_once = PTHREAD_ONCE_INIT;

static _Thread_local struct {
    unsigned char bytes[UUID_POOL_BYTES];
    size_t used; /* == UUID_POOL_BYTES when empty */
    unsigned gen;
} uuid_pool = {.used = UUID_POOL_BYTES, .gen = 0};

static void uuid_after_fork_child(void) { atomic_fetch_add(&uuid_fork_gen, 1); }
static void uuid_register_atfork(void) { pthread_atfork(NULL, NULL, uuid_after_fork_child); }

/* Fills buf with len random bytes from the kernel. Never fails: as a last
 * resort (no getrandom, no /dev/urandom) it mixes clock, pid and address
 * bits, which still gives distinct ids, only not unpredictable ones. */
static void random_fill(unsigned char *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    if (got == len) return;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        while (got < len) {
            ssize_t n = read(fd, buf + got, len - got);
            if (n > 0) got += (size_t)n;
            else if (n < 0 && errno == EINTR) continue;
            else break;
        }
        close(fd);
    }
    if (got == len) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
                 (uint64_t)(uintptr_t)buf;
    for (; got < len; got++) { /* xorshift64* */
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        buf[got] = (unsigned char)((x * 0x2545F4914F6CDD1DULL) >> 56);
    }
}

void bus_uuid(char out[37]) {
    static const char hex[] = "0123456789abcdef";
    pthread_once(&uuid_once, uuid_register_atfork);
    unsigned gen = atomic_load_explicit(&uuid_fork_gen, memory_order_relaxed);
    if (uuid_pool.gen != gen || uuid_pool.used + 16 > UUID_POOL_BYTES) {
        random_fill(uuid_pool.bytes, UUID_POOL_BYTES);
        uuid_pool.used = 0;
        uuid_pool.gen = gen;
    }
    unsigned char b[16];
    memcpy(b, uuid_pool.bytes + uuid_pool.used, 16);
    memset(uuid_pool.bytes + uuid_pool.used, 0, 16); /* used bytes are not kept around */
    uuid_pool.used += 16;
    /* version 7 (RFC 9562): the first 48 bits are the Unix time in ms, so
     * ids made close together sort close together, and a store index of
     * them (the audit trail's source ids, the bus_op markers) grows at its
     * end instead of taking every insert at a random page */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    for (int i = 0; i < 6; i++) b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x70); /* version 7 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* variant 10xx */
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
}

/* -------------------------------------------------------------- times --- */

static char *put_digits(char *o, int v, int width) {
    for (int i = width - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return o + width;
}

/* Years outside 0000..9999 cannot be written as RFC 3339; such instants are
 * clamped to the first/last representable millisecond. */
void bus_rfc3339_format(int64_t epoch_ms, char out[32]) {
    const int64_t min_ms = -62167219200000LL;    /* 0000-01-01T00:00:00.000Z */
    const int64_t max_ms = 253402300799999LL;    /* 9999-12-31T23:59:59.999Z */
    if (epoch_ms < min_ms) epoch_ms = min_ms;
    if (epoch_ms > max_ms) epoch_ms = max_ms;
    int64_t sec = epoch_ms / 1000, ms = epoch_ms % 1000;
    if (ms < 0) { /* floor division for instants before 1970 */
        ms += 1000;
        sec -= 1;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) memset(&tm, 0, sizeof tm);
    char *o = out;
    o = put_digits(o, tm.tm_year + 1900, 4);
    *o++ = '-';
    o = put_digits(o, tm.tm_mon + 1, 2);
    *o++ = '-';
    o = put_digits(o, tm.tm_mday, 2);
    *o++ = 'T';
    o = put_digits(o, tm.tm_hour, 2);
    *o++ = ':';
    o = put_digits(o, tm.tm_min, 2);
    *o++ = ':';
    o = put_digits(o, tm.tm_sec, 2);
    *o++ = '.';
    o = put_digits(o, (int)ms, 3);
    *o++ = 'Z';
    *o = '\0';
}

void bus_now_rfc3339(char out[32]) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    bus_rfc3339_format((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, out);
}

/* Reads exactly n decimal digits. */
static int read_digits(const char **p, int n, int *v) {
    int x = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9') return -1;
        x = x * 10 + (c - '0');
    }
    *p += n;
    *v = x;
    return 0;
}

static int is_leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int y, int m) {
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* RFC 3339 section 5.6 date-time:
 *   full-date "T" full-time, full-time = partial-time time-offset,
 *   partial-time = HH:MM:SS [.1*DIGIT], time-offset = "Z" / ("+"/"-") HH:MM
 * with 'T' and 'Z' case-insensitive. A leap second (:60) is accepted and,
 * as POSIX time has none, lands on the following second. */
int bus_rfc3339_parse(const char *s, int64_t *epoch_ms) {
    if (!s) return -1;
    const char *p = s;
    int Y, M, D, h, m, sec, ms = 0;
    if (read_digits(&p, 4, &Y) || *p++ != '-' || read_digits(&p, 2, &M) || *p++ != '-' ||
        read_digits(&p, 2, &D))
        return -1;
    if (*p != 'T' && *p != 't') return -1;
    p++;
    if (read_digits(&p, 2, &h) || *p++ != ':' || read_digits(&p, 2, &m) || *p++ != ':' ||
        read_digits(&p, 2, &sec))
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > days_in_month(Y, M) || h > 23 || m > 59 || sec > 60) return -1;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') return -1;
        int scale = 100;
        for (; *p >= '0' && *p <= '9'; p++) { /* any length; milliseconds kept, the rest truncated */
            ms += (*p - '0') * scale;
            scale /= 10;
        }
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (read_digits(&p, 2, &oh) || *p++ != ':' || read_digits(&p, 2, &om)) return -1;
        if (oh > 23 || om > 59) return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*p != '\0') return -1;
    struct tm tm = {0};
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    errno = 0;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 && errno) return -1;
    if (epoch_ms) *epoch_ms = ((int64_t)t - (int64_t)offset_min * 60) * 1000 + ms;
    return 0;
}

/* ----------------------------------------------------------- envelope --- */

void bus_envelope_clear(bus_envelope_t *env) {
    if (!env) return;
    free(env->specversion);
    free(env->id);
    free(env->source);
    free(env->type);
    free(env->time);
    free(env->datacontenttype);
    free(env->subject);
    free(env->dataschema);
    free(env->correlationid);
    cJSON_Delete(env->data);
    memset(env, 0, sizeof *env);
}

/* strdup that keeps NULL as NULL; *oom is set when a copy fails. */
static char *dup_opt(const char *s, int *oom) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *oom = 1;
    return d;
}

int bus_envelope_init(bus_envelope_t *env, const char *type, const char *source, const char *subject,
                      const char *correlationid, cJSON *data) {
    memset(env, 0, sizeof *env);
    char id[37], now[32];
    bus_uuid(id);
    bus_now_rfc3339(now);
    int oom = 0;
    env->specversion = dup_opt("1.0", &oom);
    env->id = dup_opt(id, &oom);
    env->source = dup_opt(source, &oom);
    env->type = dup_opt(type, &oom);
    env->time = dup_opt(now, &oom);
    env->datacontenttype = dup_opt("application/json", &oom);
    env->subject = dup_opt(subject, &oom);
    env->correlationid = dup_opt(correlationid, &oom);
    env->data = data;
    if (oom) {
        bus_envelope_clear(env);
        return BUS_EINTERNAL;
    }
    return 0;
}

/* Attribute table: the serialisation order, and where each one lives. */
typedef struct {
    const char *name;
    size_t offset;
    int required;
} attr_t;

#define ATTR(n, req) {#n, offsetof(bus_envelope_t, n), req}
static const attr_t attrs[] = {
    ATTR(specversion, 1), ATTR(id, 1),      ATTR(source, 1),     ATTR(type, 1),          ATTR(time, 0),
    ATTR(datacontenttype, 0), ATTR(subject, 0), ATTR(dataschema, 0), ATTR(correlationid, 0),
};
#define NATTRS (sizeof attrs / sizeof attrs[0])

static char **attr_slot(bus_envelope_t *env, const attr_t *a) { return (char **)((char *)env + a->offset); }

/* Writes the reason (arg may point into env), then clears env. */
static int fail(bus_envelope_t *env, char *err, size_t errlen, const char *fmt, const char *arg) {
    if (err && errlen) snprintf(err, errlen, fmt, arg);
    bus_envelope_clear(env);
    return BUS_EBAD_REQUEST;
}

/* The checks shared by both modes, run once every attribute is in place.
 * On failure clears env and writes the reason. */
static int validate(bus_envelope_t *env, char *err, size_t errlen) {
    for (size_t i = 0; i < NATTRS; i++) {
        char *v = *attr_slot(env, &attrs[i]);
        if (attrs[i].required && (!v || !*v))
            return fail(env, err, errlen, "missing or empty attribute \"%s\"", attrs[i].name);
    }
    if (strcmp(env->specversion, "1.0") != 0)
        return fail(env, err, errlen, "unsupported specversion \"%.32s\" (expected \"1.0\")", env->specversion);
    if (env->time && bus_rfc3339_parse(env->time, NULL) != 0)
        return fail(env, err, errlen, "attribute \"time\" is not an RFC 3339 date-time: \"%.40s\"", env->time);
    if (!env->datacontenttype) {
        env->datacontenttype = strdup("application/json");
        if (!env->datacontenttype) return fail(env, err, errlen, "%s", "out of memory");
    }
    return 0;
}

int bus_envelope_parse(const char *body, size_t len, bus_envelope_t *env, char *err, size_t errlen) {
    memset(env, 0, sizeof *env);
    if (err && errlen) err[0] = '\0';
    if (len > BUS_ENVELOPE_MAX_BYTES) {
        if (err && errlen) snprintf(err, errlen, "event larger than %d bytes", BUS_ENVELOPE_MAX_BYTES);
        return BUS_EBAD_REQUEST;
    }
    cJSON *doc = bus_json_parse(body, len, BUS_JSON_MAX_DEPTH, err, errlen);
    if (!doc) return BUS_EBAD_REQUEST;
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return fail(env, err, errlen, "%s", "event must be a JSON object");
    }
    for (size_t i = 0; i < NATTRS; i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, attrs[i].name);
        if (!v || cJSON_IsNull(v)) continue; /* null means absent */
        if (!cJSON_IsString(v) || !v->valuestring) {
            cJSON_Delete(doc);
            return fail(env, err, errlen, "attribute \"%s\" must be a string", attrs[i].name);
        }
        char *copy = strdup(v->valuestring);
        if (!copy) {
            cJSON_Delete(doc);
            return fail(env, err, errlen, "%s", "out of memory");
        }
        *attr_slot(env, &attrs[i]) = copy;
    }
    /* Binary payloads (data_base64) have no place on a JSON bus: refuse them
     * rather than silently dropping the payload. */
    if (cJSON_GetObjectItemCaseSensitive(doc, "data_base64")) {
        cJSON_Delete(doc);
        return fail(env, err, errlen, "%s", "data_base64 is not supported: send JSON in \"data\"");
    }
    env->data = cJSON_DetachItemFromObjectCaseSensitive(doc, "data");
    cJSON_Delete(doc);
    return validate(env, err, errlen);
}

/* Is this content type a JSON one (application/json, text/json, anything+json)? */
static int is_json_type(const char *ct) {
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    if ((n == 16 && strncasecmp(ct, "application/json", 16) == 0) || (n == 9 && strncasecmp(ct, "text/json", 9) == 0))
        return 1;
    return n >= 5 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

static int is_ce_structured(const char *ct) {
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    return n == strlen(BUS_CE_CONTENT_TYPE) && strncasecmp(ct, BUS_CE_CONTENT_TYPE, n) == 0;
}

/* Maps a header name to the attribute it carries, or NULL. "content-type" /
 * "content_type" (the AMQP content_type property as consumers pass it) give
 * datacontenttype, as the CloudEvents AMQP binding maps them. */
static const attr_t *attr_of_header(const bus_header_t *h) {
    const char *k = h->key;
    size_t n = h->key_len;
    if (!k) return NULL;
    if ((n == 12 && (strncasecmp(k, "content-type", 12) == 0 || strncasecmp(k, "content_type", 12) == 0)))
        return &attrs[5];
    if (n < 4 || (strncasecmp(k, "ce-", 3) != 0 && strncasecmp(k, "ce_", 3) != 0)) return NULL;
    for (size_t i = 0; i < NATTRS; i++) {
        size_t an = strlen(attrs[i].name);
        if (an == n - 3 && strncasecmp(k + 3, attrs[i].name, an) == 0) return &attrs[i];
    }
    return NULL;
}

int bus_envelope_parse_binary(const bus_header_t *headers, size_t nheaders, const char *body, size_t len,
                              bus_envelope_t *env, char *err, size_t errlen) {
    memset(env, 0, sizeof *env);
    if (err && errlen) err[0] = '\0';
    for (size_t i = 0; i < nheaders; i++) {
        const bus_header_t *h = &headers[i];
        const attr_t *a = attr_of_header(h);
        if (!a) continue;
        char **slot = attr_slot(env, a);
        if (*slot) return fail(env, err, errlen, "duplicate header for attribute \"%s\"", a->name);
        if (!h->value && h->value_len) return fail(env, err, errlen, "header for \"%s\" has no value", a->name);
        if (h->value_len && memchr(h->value, '\0', h->value_len))
            return fail(env, err, errlen, "header for \"%s\" contains a NUL byte", a->name);
        long bad = h->value_len ? bus_utf8_invalid_at(h->value, h->value_len) : -1;
        if (bad >= 0) /* the structured form must be JSON, and JSON is UTF-8 */
            return fail(env, err, errlen, "header for \"%s\" is not valid UTF-8", a->name);
        *slot = strndup(h->value ? h->value : "", h->value_len);
        if (!*slot) return fail(env, err, errlen, "%s", "out of memory");
    }
    /* A structured event delivered through a path that called us anyway. */
    if (env->datacontenttype && is_ce_structured(env->datacontenttype) && !env->id) {
        bus_envelope_clear(env);
        return bus_envelope_parse(body, len, env, err, errlen);
    }
    if (len > BUS_ENVELOPE_MAX_BYTES) {
        bus_envelope_clear(env);
        if (err && errlen) snprintf(err, errlen, "event larger than %d bytes", BUS_ENVELOPE_MAX_BYTES);
        return BUS_EBAD_REQUEST;
    }
    int rc = validate(env, err, errlen);
    if (rc) return rc;
    if (len == 0) return 0; /* no data */
    if (is_json_type(env->datacontenttype)) {
        char jerr[96];
        env->data = bus_json_parse(body, len, BUS_JSON_MAX_DEPTH, jerr, sizeof jerr);
        if (!env->data) return fail(env, err, errlen, "data: %s", jerr);
    } else {
        /* Non-JSON payloads (text/plain...) travel as a JSON string. */
        if (memchr(body, '\0', len)) return fail(env, err, errlen, "%s", "data contains a NUL byte");
        long bad = bus_utf8_invalid_at(body, len);
        if (bad >= 0) return fail(env, err, errlen, "%s", "data is not valid UTF-8");
        char *s = strndup(body, len);
        if (!s) return fail(env, err, errlen, "%s", "out of memory");
        env->data = cJSON_CreateString(s);
        free(s);
        if (!env->data) return fail(env, err, errlen, "%s", "out of memory");
    }
    return 0;
}

char *bus_envelope_serialize(const bus_envelope_t *env, size_t *len) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    for (size_t i = 0; i < NATTRS; i++) {
        char *v = *attr_slot((bus_envelope_t *)env, &attrs[i]);
        if (v && !cJSON_AddStringToObject(o, attrs[i].name, v)) goto oom;
    }
    /* A reference item prints env->data without copying it and is not freed
     * with the temporary object. */
    if (env->data && !cJSON_AddItemReferenceToObject(o, "data", env->data)) goto oom;
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s && len) *len = strlen(s);
    return s;
oom:
    cJSON_Delete(o);
    return NULL;
}
