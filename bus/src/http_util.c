/* HTTP helpers: status texts, error bodies, percent-decoding, query lookup.
 * See bus/http.h. Nothing here allocates. */
#include "bus/error.h"
#include "bus/http.h"
#include "bus/log.h"

#include <stdio.h>
#include <string.h>

const char *bus_http_status_text(int status) {
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

const char *bus_http_error_code(int status) {
    int err = bus_err_from_status(status);
    if (bus_err_status(err) == status) return bus_err_name(err);
    /* Statuses outside the error table of bus/error.h: the client's fault or ours. */
    return (status >= 400 && status < 500) || status == 505 ? "bad_request" : "internal";
}

size_t bus_http_error_json(char *buf, size_t cap, int status, const char *code, const char *message) {
    if (cap == 0) return 0;
    size_t len = 0;
    int n = snprintf(buf, cap, "{\"success\":false,\"error\":\"");
    len = n > 0 ? (size_t)n : 0;
    if (len >= cap) goto full;
    bus_json_escape_into(buf, &len, cap, code ? code : "internal");
    if (len + 14 >= cap) goto full;
    memcpy(buf + len, "\",\"message\":\"", 13);
    len += 13;
    bus_json_escape_into(buf, &len, cap, message ? message : "");
    n = snprintf(buf + len, cap - len, "\",\"status_code\":%d}", status);
    if (n < 0 || (size_t)n >= cap - len) goto full;
    len += (size_t)n;
    return len;
full:
    /* Never emit broken JSON: fall back to the shortest valid body. */
    n = snprintf(buf, cap, "{\"success\":false,\"status_code\":%d}", status);
    if (n < 0) n = 0;
    if ((size_t)n >= cap) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}

static int hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int bus_http_url_decode(char *s, size_t *len, int plus_is_space) {
    size_t r = 0, w = 0, n = *len;
    while (r < n) {
        char ch = s[r];
        if (ch == '%') {
            if (r + 2 >= n) return BUS_EBAD_REQUEST;
            int hi = hexval((unsigned char)s[r + 1]), lo = hexval((unsigned char)s[r + 2]);
            if (hi < 0 || lo < 0) return BUS_EBAD_REQUEST;
            ch = (char)(hi * 16 + lo);
            if (ch == '\0') return BUS_EBAD_REQUEST;
            r += 3;
        } else {
            if (ch == '+' && plus_is_space) ch = ' ';
            r++;
        }
        s[w++] = ch;
    }
    s[w] = '\0';
    *len = w;
    return 0;
}

int bus_http_query_param(const char *query, const char *name, char *buf, size_t cap) {
    if (!query || !name) return BUS_ENOT_FOUND;
    size_t nlen = strlen(name);
    const char *p = query;
    while (*p) {
        const char *end = strchr(p, '&');
        if (!end) end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq ? eq : end;
        if ((size_t)(kend - p) == nlen && memcmp(p, name, nlen) == 0) {
            const char *v = eq ? eq + 1 : end;
            size_t vlen = (size_t)(end - v);
            if (vlen + 1 > cap) return BUS_EINVALID;
            memcpy(buf, v, vlen);
            buf[vlen] = '\0';
            return bus_http_url_decode(buf, &vlen, 1);
        }
        p = *end ? end + 1 : end;
    }
    return BUS_ENOT_FOUND;
}
