/* JSON parsing with the platform's limits. See bus_json_parse() in bus/envelope.h.
 *
 * cJSON parses recursively and only knows its compiled-in nesting limit
 * (CJSON_NESTING_LIMIT, 1000 in Debian's 1.7.15), so a hostile body could
 * still make it recurse a thousand frames deep and build a deep tree that
 * every later walker (schema validation, printing) recurses over again. We
 * therefore pre-scan the bytes once: count bracket depth outside string
 * literals and refuse anything deeper than the caller's bound before cJSON
 * sees it. The pre-scan is a single linear pass with no allocation.
 *
 * The error offset comes from cJSON's return_parse_end out-parameter, which
 * 1.7.15 sets on failure too; unlike cJSON_GetErrorPtr() it is not a global,
 * so the offset is exact even while other threads parse.
 */
#include "bus/envelope.h"

#include <stdio.h>

/* Deepest bracket nesting of `p[0..len)`, ignoring brackets inside strings.
 * Stops early (returning a value > limit) as soon as `limit` is exceeded. */
static int json_depth(const char *p, size_t len, int limit) {
    int depth = 0, max = 0;
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (in_string) {
            if (c == '\\') i++; /* skip the escaped character, whatever it is */
            else if (c == '"') in_string = 0;
            continue;
        }
        switch (c) {
        case '"': in_string = 1; break;
        case '[':
        case '{':
            if (++depth > max) {
                max = depth;
                if (max > limit) return max;
            }
            break;
        case ']':
        case '}':
            if (depth > 0) depth--; /* unbalanced input: cJSON will report it */
            break;
        default: break;
        }
    }
    return max;
}

static int is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t bus_utf8_seq_len(const unsigned char *p, size_t avail) {
    if (avail == 0) return 0;
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) n = 3, lo = 0xA0;            /* no overlongs */
    else if (c == 0xED) n = 3, hi = 0x9F;            /* no surrogates */
    else if (c >= 0xE1 && c <= 0xEF) n = 3;
    else if (c == 0xF0) n = 4, lo = 0x90;            /* no overlongs */
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else if (c == 0xF4) n = 4, hi = 0x8F;            /* nothing above U+10FFFF */
    else return 0;
    if (avail < n || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return n;
}

long bus_utf8_invalid_at(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        if (p[i] < 0x80) { /* ASCII runs are most of every body */
            i++;
            continue;
        }
        size_t n = bus_utf8_seq_len(p + i, len - i);
        if (n == 0) return (long)i;
        i += n;
    }
    return -1;
}

cJSON *bus_json_parse(const char *body, size_t len, int max_depth, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    if (!body) len = 0;
    if (len == 0) {
        if (err && errlen) snprintf(err, errlen, "malformed JSON at byte 0 (empty body)");
        return NULL;
    }
    long bad = bus_utf8_invalid_at(body, len);
    if (bad >= 0) { /* JSON is UTF-8 (RFC 8259 8.1); cJSON would pass any byte through */
        if (err && errlen) snprintf(err, errlen, "not valid UTF-8 at byte %ld", bad);
        return NULL;
    }
    if (max_depth < 1) max_depth = 1;
    if (json_depth(body, len, max_depth) > max_depth) {
        if (err && errlen) snprintf(err, errlen, "JSON nested deeper than %d levels", max_depth);
        return NULL;
    }
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!doc) {
        size_t at = (end && end >= body && end <= body + len) ? (size_t)(end - body) : 0;
        if (err && errlen) snprintf(err, errlen, "malformed JSON at byte %zu", at);
        return NULL;
    }
    /* require_null_terminated is false (the body has no NUL), so check by
     * hand that only whitespace follows the value. */
    size_t at = (end && end >= body && end <= body + len) ? (size_t)(end - body) : len;
    while (at < len && is_json_space(body[at])) at++;
    if (at < len) {
        cJSON_Delete(doc);
        if (err && errlen) snprintf(err, errlen, "malformed JSON at byte %zu (data after the value)", at);
        return NULL;
    }
    return doc;
}
