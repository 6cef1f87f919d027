/* A growable text buffer: see textbuf.h. */
#include "textbuf.h"

#include <stdlib.h>
#include <string.h>

#include "bus/log.h"

/* Room for n more bytes and the NUL; 0 or -1 (oom set). */
static int reserve(bus__text_t *t, size_t n) {
    if (t->oom) return -1;
    if (t->len + n + 1 <= t->cap) return 0;
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->len + n + 1) cap *= 2;
    char *b = realloc(t->buf, cap);
    if (!b) {
        t->oom = 1;
        return -1;
    }
    t->buf = b;
    t->cap = cap;
    return 0;
}

void bus__text_put(bus__text_t *t, const char *s, size_t n) {
    if (reserve(t, n) != 0) return;
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

void bus__text_str(bus__text_t *t, const char *s) { bus__text_put(t, s, strlen(s)); }

void bus__text_json_str(bus__text_t *t, const char *s) {
    if (reserve(t, strlen(s) * 6 + 2) != 0) return; /* every byte escaped as \u00XX at worst */
    t->buf[t->len++] = '"';
    bus_json_escape_into(t->buf, &t->len, t->cap, s);
    t->buf[t->len++] = '"';
    t->buf[t->len] = '\0';
}
