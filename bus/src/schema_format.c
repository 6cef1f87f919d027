/* JSON Schema `format` assertions and ECMA-262 regular expressions.
 *
 * Each checker follows the RFC the draft-07 specification names:
 * date-time/date/time RFC 3339 section 5.6, email RFC 5322 addr-spec (dot-atom
 * or quoted local part, hostname or address-literal domain), hostname RFC 1123
 * section 2.1, ipv4 dotted-quad (RFC 2673 section 3.2, no leading zeros),
 * ipv6 RFC 4291 section 2.2, uri RFC 3986 (absolute, with a scheme), uuid
 * RFC 4122 text form, regex: compiles as an ECMA-262 pattern.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema_internal.h"

static const char *const fmt_names[] = {
    [BUS__FMT_DATE_TIME] = "date-time", [BUS__FMT_DATE] = "date",   [BUS__FMT_TIME] = "time",
    [BUS__FMT_EMAIL] = "email",         [BUS__FMT_HOSTNAME] = "hostname",
    [BUS__FMT_IPV4] = "ipv4",           [BUS__FMT_IPV6] = "ipv6",   [BUS__FMT_URI] = "uri",
    [BUS__FMT_UUID] = "uuid",           [BUS__FMT_REGEX] = "regex",
};

int bus__schema_format_lookup(const char *name) {
    for (int i = 1; i < (int)(sizeof fmt_names / sizeof fmt_names[0]); i++)
        if (strcmp(fmt_names[i], name) == 0) return i;
    return BUS__FMT_UNKNOWN;
}

const char *bus__schema_format_name(int fmt) {
    if (fmt <= 0 || fmt >= (int)(sizeof fmt_names / sizeof fmt_names[0])) return "unknown";
    return fmt_names[fmt];
}

size_t bus__utf8_length(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) n++;
    return n;
}

/* ---- dates and times (RFC 3339) ---- */

static int digits(const char *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

static int check_date(const char *s, size_t len) {
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, m, d;
    if (len != 10 || s[4] != '-' || s[7] != '-') return 0;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &m) || !digits(s + 8, 2, &d)) return 0;
    if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1]) return 0;
    if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 0;
    return 1;
}

/* full-time = HH:MM:SS[.frac](Z|+HH:MM|-HH:MM). A leap second (:60) is only
 * valid at 23:59:60 UTC, i.e. once the offset is taken off. */
static int check_time(const char *s, size_t len) {
    int h, mi, se, oh = 0, om = 0, sign = 0;
    if (len < 9 || s[2] != ':' || s[5] != ':') return 0;
    if (!digits(s, 2, &h) || !digits(s + 3, 2, &mi) || !digits(s + 6, 2, &se)) return 0;
    size_t i = 8;
    if (i < len && s[i] == '.') {
        size_t f = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9') i++;
        if (i == f) return 0;
    }
    if (i >= len) return 0;
    if (s[i] == 'Z' || s[i] == 'z') {
        if (i + 1 != len) return 0;
    } else if (s[i] == '+' || s[i] == '-') {
        sign = s[i] == '+' ? 1 : -1;
        if (len - i != 6 || s[i + 3] != ':') return 0;
        if (!digits(s + i + 1, 2, &oh) || !digits(s + i + 4, 2, &om)) return 0;
        if (oh > 23 || om > 59) return 0;
    } else {
        return 0;
    }
    if (h > 23 || mi > 59 || se > 60) return 0;
    if (se == 60) {
        int utc = ((h * 60 + mi - sign * (oh * 60 + om)) % 1440 + 1440) % 1440;
        if (utc != 23 * 60 + 59) return 0;
    }
    return 1;
}

static int check_date_time(const char *s, size_t len) {
    if (len < 20 || (s[10] != 'T' && s[10] != 't')) return 0;
    return check_date(s, 10) && check_time(s + 11, len - 11);
}

/* ---- hosts and addresses ---- */

static int check_hostname(const char *s, size_t len) {
    if (len == 0 || len > 253) return 0;
    size_t label = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (label == 0 || label > 63) return 0;
            if (s[i - 1] == '-' || s[i - label] == '-') return 0;
            label = 0;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) && c < 0x80) && c != '-') return 0;
        label++;
    }
    return 1;
}

static int check_ipv4(const char *s, size_t len) {
    int parts = 0;
    size_t i = 0;
    while (parts < 4) {
        size_t start = i;
        int v = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 3) v = v * 10 + (s[i++] - '0');
        size_t n = i - start;
        if (n == 0 || v > 255 || (n > 1 && s[start] == '0')) return 0;
        parts++;
        if (parts < 4) {
            if (i >= len || s[i] != '.') return 0;
            i++;
        }
    }
    return i == len;
}

/* Counts the 16-bit groups of "a:b:c" (text without "::"); a trailing
 * dotted quad counts two when allowed. Returns -1 when malformed. */
static int ipv6_groups(const char *s, size_t len, int allow_v4) {
    if (len == 0) return 0;
    int n = 0;
    size_t i = 0;
    for (;;) {
        size_t start = i;
        while (i < len && s[i] != ':') i++;
        size_t glen = i - start;
        if (glen == 0) return -1;
        if (i == len && allow_v4 && memchr(s + start, '.', glen)) {
            if (!check_ipv4(s + start, glen)) return -1;
            return n + 2;
        }
        if (glen > 4) return -1;
        for (size_t k = start; k < i; k++)
            if (!isxdigit((unsigned char)s[k])) return -1;
        n++;
        if (i == len) return n;
        i++; /* ':' */
        if (i == len) return -1;
    }
}

static int check_ipv6(const char *s, size_t len) {
    const char *dc = NULL;
    for (size_t i = 0; i + 1 < len; i++)
        if (s[i] == ':' && s[i + 1] == ':') {
            dc = s + i;
            break;
        }
    if (!dc) return ipv6_groups(s, len, 1) == 8;
    size_t l = (size_t)(dc - s), r0 = l + 2;
    /* only one "::", and no ":::" */
    for (size_t i = r0; i + 1 < len; i++)
        if (s[i] == ':' && s[i + 1] == ':') return 0;
    if (r0 < len && s[r0] == ':') return 0;
    int a = ipv6_groups(s, l, 0), b = ipv6_groups(s + r0, len - r0, 1);
    return a >= 0 && b >= 0 && a + b <= 7;
}

/* ---- email (RFC 5322 addr-spec, ASCII) ---- */

static int atext(unsigned char c) {
    return (isalnum(c) && c < 0x80) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static int check_email(const char *s, size_t len) {
    const char *at = NULL;
    for (size_t i = len; i > 0; i--)
        if (s[i - 1] == '@') {
            at = s + i - 1;
            break;
        }
    if (!at) return 0;
    size_t llen = (size_t)(at - s), dlen = len - llen - 1;
    if (llen == 0 || llen > 64 || dlen == 0) return 0;
    if (s[0] == '"') {
        if (llen < 2 || s[llen - 1] != '"') return 0;
        for (size_t i = 1; i < llen - 1; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '\\') {
                if (++i >= llen - 1) return 0;
                continue;
            }
            if (c == '"' || c < 0x20 || c >= 0x7f) return 0;
        }
    } else {
        for (size_t i = 0; i < llen; i++) {
            if (s[i] == '.') {
                if (i == 0 || i == llen - 1 || s[i + 1] == '.') return 0;
            } else if (!atext((unsigned char)s[i])) {
                return 0;
            }
        }
    }
    const char *d = at + 1;
    if (d[0] == '[') {
        if (d[dlen - 1] != ']' || dlen < 3) return 0;
        if (dlen > 6 && strncasecmp(d + 1, "IPv6:", 5) == 0) return check_ipv6(d + 6, dlen - 7);
        return check_ipv4(d + 1, dlen - 2);
    }
    return check_hostname(d, dlen);
}

/* ---- uri (RFC 3986, absolute URI with optional fragment) ---- */

static int unreserved(unsigned char c) {
    return (isalnum(c) && c < 0x80) || c == '-' || c == '.' || c == '_' || c == '~';
}
static int subdelim(unsigned char c) { return c && strchr("!$&'()*+,;=", c) != NULL; }

/* Checks s[i..end) is made of unreserved, sub-delims, pct-encoded and the
 * characters of `extra`. */
static int uri_chars(const char *s, size_t i, size_t end, const char *extra) {
    for (; i < end; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= end) return 0;
            if (!isxdigit((unsigned char)s[i + 1]) || !isxdigit((unsigned char)s[i + 2])) return 0;
            i += 2;
            continue;
        }
        if (unreserved(c) || subdelim(c) || (c && strchr(extra, c))) continue;
        return 0;
    }
    return 1;
}

static int check_uri(const char *s, size_t len) {
    size_t i = 0;
    if (len == 0 || !isalpha((unsigned char)s[0]) || (unsigned char)s[0] >= 0x80) return 0;
    while (i < len && ((isalnum((unsigned char)s[i]) && (unsigned char)s[i] < 0x80) || s[i] == '+' ||
                       s[i] == '-' || s[i] == '.'))
        i++;
    if (i >= len || s[i] != ':') return 0;
    i++;
    size_t q = len, f = len;
    for (size_t k = i; k < len; k++)
        if (s[k] == '#') {
            f = k;
            break;
        }
    for (size_t k = i; k < f; k++)
        if (s[k] == '?') {
            q = k;
            break;
        }
    size_t pend = q < f ? q : f;
    if (pend - i >= 2 && s[i] == '/' && s[i + 1] == '/') {
        size_t a = i + 2, ae = a;
        while (ae < pend && s[ae] != '/') ae++;
        size_t host = a;
        for (size_t k = a; k < ae; k++)
            if (s[k] == '@') host = k + 1;
        if (host > a && !uri_chars(s, a, host - 1, ":")) return 0;
        size_t hend = ae;
        if (host < ae && s[host] == '[') {
            size_t cl = host;
            while (cl < ae && s[cl] != ']') cl++;
            if (cl == ae) return 0;
            if (!check_ipv6(s + host + 1, cl - host - 1)) {
                /* IPvFuture: "v" 1*HEXDIG "." 1*(unreserved / sub-delims / ":") */
                if (cl - host < 4 || (s[host + 1] != 'v' && s[host + 1] != 'V')) return 0;
                if (!uri_chars(s, host + 2, cl, ":")) return 0;
            }
            hend = cl + 1;
            if (hend < ae && s[hend] != ':') return 0;
        } else {
            for (size_t k = host; k < ae; k++)
                if (s[k] == ':') {
                    hend = k;
                    break;
                }
            if (!uri_chars(s, host, hend, "")) return 0;
        }
        if (hend < ae) /* ":" port */
            for (size_t k = hend + 1; k < ae; k++)
                if (s[k] < '0' || s[k] > '9') return 0;
        i = ae;
    }
    if (!uri_chars(s, i, pend, ":@/")) return 0;
    if (q < f && !uri_chars(s, q + 1, f, ":@/?")) return 0;
    if (f < len && !uri_chars(s, f + 1, len, ":@/?")) return 0;
    return 1;
}

static int check_uuid(const char *s, size_t len) {
    if (len != 36) return 0;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return 0;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

static int check_regex(const char *s, size_t len) {
    if (strlen(s) != len) return 0; /* embedded NUL */
    char err[8];
    pcre2_code *re = bus__schema_regex_compile(s, err, sizeof err);
    if (!re) return 0;
    pcre2_code_free(re);
    return 1;
}

int bus__schema_format_check(int fmt, const char *s, size_t len) {
    switch (fmt) {
    case BUS__FMT_DATE_TIME: return check_date_time(s, len);
    case BUS__FMT_DATE: return check_date(s, len);
    case BUS__FMT_TIME: return check_time(s, len);
    case BUS__FMT_EMAIL: return check_email(s, len);
    case BUS__FMT_HOSTNAME: return check_hostname(s, len);
    case BUS__FMT_IPV4: return check_ipv4(s, len);
    case BUS__FMT_IPV6: return check_ipv6(s, len);
    case BUS__FMT_URI: return check_uri(s, len);
    case BUS__FMT_UUID: return check_uuid(s, len);
    case BUS__FMT_REGEX: return check_regex(s, len);
    default: return 1;
    }
}

/* ---- ECMA-262 regular expressions on PCRE2 ----
 *
 * PCRE2 and ECMA-262 agree on most syntax. The differences that change what
 * a pattern matches are rewritten here:
 *   - `.` does not match the ECMA line terminators (\n \r U+2028 U+2029);
 *   - `\s`/`\S` are the ECMA white space + line terminator set (Unicode),
 *     not ASCII white space (`\S` inside a class stays ASCII: a documented gap);
 *   - `\v` is U+000B only (PCRE2's \v is a class);
 *   - escapes of letters that ECMA does not define (`\a`, `\e`, `\z`, `\Z`,
 *     `\A`, `\h`, `\R`, `\G`, ...) are refused rather than given a PCRE meaning.
 * Options: UTF (code points), DOLLAR_ENDONLY (`$` is the very end),
 * ALT_BSUX (`\uHHHH`, `\xHH`, and `\u{...}` through the extra option),
 * ALLOW_EMPTY_CLASS (`[]` matches nothing and `[^]` anything, as in ECMA).
 */
#define ECMA_WS "\\t\\n\\u000b\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"

static pthread_once_t regex_once = PTHREAD_ONCE_INIT;
static pcre2_match_context *regex_mctx;
static pcre2_compile_context *regex_cctx;

static void regex_init(void) {
    regex_mctx = pcre2_match_context_create(NULL);
    if (regex_mctx) {
        /* Bound backtracking so a pathological pattern costs milliseconds, not minutes. */
        pcre2_set_match_limit(regex_mctx, 200000);
        pcre2_set_depth_limit(regex_mctx, 10000);
    }
    regex_cctx = pcre2_compile_context_create(NULL);
    if (regex_cctx) {
        pcre2_set_compile_extra_options(regex_cctx, PCRE2_EXTRA_ALT_BSUX);
        pcre2_set_max_pattern_length(regex_cctx, 1 << 16);
        pcre2_set_parens_nest_limit(regex_cctx, 250);
    }
}

static int put(char **o, const char *s) {
    size_t n = strlen(s);
    memcpy(*o, s, n);
    *o += n;
    return 0;
}

pcre2_code *bus__schema_regex_compile(const char *src, char *err, size_t errlen) {
    pthread_once(&regex_once, regex_init);
    size_t n = strlen(src);
    char *buf = malloc(n * 64 + 16), *o = buf;
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '\\') {
            if (i + 1 >= n) {
                snprintf(err, errlen, "\\ at end of pattern");
                free(buf);
                return NULL;
            }
            char e = src[++i];
            if (e == 's') {
                put(&o, in_class ? ECMA_WS : "[" ECMA_WS "]");
            } else if (e == 'S' && !in_class) {
                put(&o, "[^" ECMA_WS "]");
            } else if (e == 'v') {
                put(&o, "\\u000b");
            } else if (isalpha((unsigned char)e) && !strchr("bBcdDfknpPrStuvwWx", e)) {
                snprintf(err, errlen, "\\%c is not an ECMA-262 escape", e);
                free(buf);
                return NULL;
            } else {
                *o++ = '\\';
                *o++ = e;
            }
            continue;
        }
        if (in_class) {
            if (c == ']') in_class = 0;
            *o++ = c;
            continue;
        }
        if (c == '[') {
            in_class = 1;
            *o++ = c;
            if (i + 1 < n && src[i + 1] == '^') *o++ = src[++i];
            continue;
        }
        if (c == '.') {
            put(&o, "[^\\n\\r\\u2028\\u2029]");
            continue;
        }
        *o++ = c;
    }
    *o = 0;
    int ec = 0;
    PCRE2_SIZE off = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)buf, (PCRE2_SIZE)(o - buf),
                                   PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX |
                                       PCRE2_ALLOW_EMPTY_CLASS | PCRE2_NEVER_BACKSLASH_C,
                                   &ec, &off, regex_cctx);
    free(buf);
    if (!re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(ec, msg, sizeof msg);
        snprintf(err, errlen, "invalid regular expression: %s", (const char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: the interpreter works too */
    return re;
}

/* One match block per thread, kept for the thread's life (freed by the key's
 * destructor when the thread exits), so matching allocates nothing. */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static void md_free(void *p) { pcre2_match_data_free(p); }
static void md_init(void) { (void)pthread_key_create(&md_key, md_free); }

int bus__schema_regex_search(const pcre2_code *re, const char *s, size_t len) {
    pthread_once(&md_once, md_init);
    pthread_once(&regex_once, regex_init);
    pcre2_match_data *md = pthread_getspecific(md_key);
    if (!md) {
        md = pcre2_match_data_create(1, NULL);
        if (!md) return -1;
        if (pthread_setspecific(md_key, md) != 0) {
            pcre2_match_data_free(md);
            return -1;
        }
    }
    int rc = pcre2_match(re, (PCRE2_SPTR)s, len, 0, 0, md, regex_mctx);
    if (rc >= 0) return 1;
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    return -1;
}
