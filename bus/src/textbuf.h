/* Internal: a growable, NUL-terminated text buffer for building JSON and
 * Prometheus text. Start from {0}; the caller owns `buf` (free() it). After
 * an allocation failure `oom` is set and later appends do nothing. */
#ifndef BUS_TEXTBUF_H
#define BUS_TEXTBUF_H

#include <stddef.h>

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} bus__text_t;

/* Appends n bytes of s. */
void bus__text_put(bus__text_t *t, const char *s, size_t n);
/* Appends the NUL-terminated s. */
void bus__text_str(bus__text_t *t, const char *s);
/* Appends s as a JSON string, quotes included. */
void bus__text_json_str(bus__text_t *t, const char *s);

#endif
