/* The audit record's canonical form and its hash (pure; no I/O).
 *
 * A record is a JSON object with the fields
 *   seq, time, actor, type, subject, correlation_id, outcome, source_id,
 *   detail (an object or null), prev_hash, hash.
 * Its canonical form is the record WITHOUT "hash" (and without the store's
 * "_id"/"_v"), written as JSON with no whitespace, object members sorted by
 * key (byte order, at every depth), strings escaped minimally (\" \\ \b \f
 * \n \r \t, other bytes below 0x20 as \u00XX, everything else as is),
 * integers as integers and other numbers as %.17g. hash = lower-case hex
 * SHA-256 of the canonical form; prev_hash is the hash of the record before
 * (64 zeros before the first), so each record's hash covers the whole chain
 * up to it. Anyone can recompute it from a stored or streamed record.
 */
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"

const char au_genesis_hash[65] = "0000000000000000000000000000000000000000000000000000000000000000";

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} sb_t;

static void sb_put(sb_t *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n + 1) cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->oom = 1;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void sb_str(sb_t *b, const char *s) {
    sb_put(b, "\"", 1);
    const char *run = s;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *esc = NULL;
        char u[8];
        switch (*p) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (*p < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", *p);
                esc = u;
            }
        }
        if (!esc) continue;
        sb_put(b, run, (size_t)((const char *)p - run));
        sb_put(b, esc, strlen(esc));
        run = (const char *)p + 1;
    }
    sb_put(b, run, strlen(run));
    sb_put(b, "\"", 1);
}

static int by_key(const void *a, const void *b) {
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

static void sb_value(sb_t *b, const cJSON *v, int top) {
    char num[40];
    if (cJSON_IsNull(v) || !v) {
        sb_put(b, "null", 4);
    } else if (cJSON_IsTrue(v)) {
        sb_put(b, "true", 4);
    } else if (cJSON_IsFalse(v)) {
        sb_put(b, "false", 5);
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (isfinite(d) && d == floor(d) && fabs(d) < 9007199254740992.0)
            snprintf(num, sizeof num, "%lld", (long long)d);
        else if (isfinite(d))
            snprintf(num, sizeof num, "%.17g", d);
        else
            snprintf(num, sizeof num, "null");
        sb_put(b, num, strlen(num));
    } else if (cJSON_IsString(v)) {
        sb_str(b, v->valuestring);
    } else if (cJSON_IsArray(v)) {
        sb_put(b, "[", 1);
        int first = 1;
        for (const cJSON *c = v->child; c; c = c->next) {
            if (!first) sb_put(b, ",", 1);
            first = 0;
            sb_value(b, c, 0);
        }
        sb_put(b, "]", 1);
    } else if (cJSON_IsObject(v)) {
        size_t n = 0;
        for (const cJSON *c = v->child; c; c = c->next) n++;
        const cJSON **kids = n ? malloc(n * sizeof *kids) : NULL;
        if (n && !kids) {
            b->oom = 1;
            return;
        }
        size_t k = 0;
        for (const cJSON *c = v->child; c; c = c->next) {
            /* the hash itself and the store's own fields are not part of the record's form */
            if (top && (strcmp(c->string, "hash") == 0 || c->string[0] == '_')) continue;
            kids[k++] = c;
        }
        qsort(kids, k, sizeof *kids, by_key);
        sb_put(b, "{", 1);
        for (size_t i = 0; i < k; i++) {
            if (i) sb_put(b, ",", 1);
            sb_str(b, kids[i]->string);
            sb_put(b, ":", 1);
            sb_value(b, kids[i], 0);
        }
        sb_put(b, "}", 1);
        free(kids);
    } else {
        sb_put(b, "null", 4);
    }
}

char *au_canonical(const cJSON *record, size_t *len) {
    sb_t b = {0};
    sb_value(&b, record, 1);
    if (b.oom) {
        free(b.buf);
        return NULL;
    }
    if (len) *len = b.len;
    return b.buf;
}

void au_sha256_hex(const void *data, size_t len, char out[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    static const char hex[] = "0123456789abcdef";
    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32) {
        memset(out, 'x', 64); /* never equal to a real hash: verification fails loudly */
        out[64] = '\0';
        return;
    }
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

int au_record_hash(const cJSON *record, char out[65]) {
    size_t len = 0;
    char *c = au_canonical(record, &len);
    if (!c) return BUS_EINTERNAL;
    au_sha256_hex(c, len, out);
    free(c);
    return 0;
}

int au_record_seal(cJSON *record, int64_t seq, const char *prev_hash) {
    cJSON_DeleteItemFromObjectCaseSensitive(record, "seq");
    cJSON_DeleteItemFromObjectCaseSensitive(record, "prev_hash");
    cJSON_DeleteItemFromObjectCaseSensitive(record, "hash");
    cJSON_AddNumberToObject(record, "seq", (double)seq);
    cJSON_AddStringToObject(record, "prev_hash", prev_hash);
    char h[65];
    if (au_record_hash(record, h) != 0) return BUS_EINTERNAL;
    return cJSON_AddStringToObject(record, "hash", h) ? 0 : BUS_EINTERNAL;
}

const char *au_check_link(const cJSON *record, int64_t want_seq, const char *want_prev, char *why, size_t whylen) {
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(record, "seq");
    const char *prev = au_str(record, "prev_hash"), *hash = au_str(record, "hash");
    if (!cJSON_IsNumber(seq) || (int64_t)seq->valuedouble != want_seq) {
        snprintf(why, whylen, "expected seq %lld here, found %s", (long long)want_seq,
                 cJSON_IsNumber(seq) ? "another seq (a record is missing)" : "no seq");
        return "seq";
    }
    if (strcmp(prev, want_prev) != 0) {
        snprintf(why, whylen, "prev_hash %.16s... is not the hash of record %lld (%.16s...)", prev,
                 (long long)want_seq - 1, want_prev);
        return "prev_hash";
    }
    char h[65];
    if (au_record_hash(record, h) != 0) {
        snprintf(why, whylen, "out of memory");
        return "internal";
    }
    if (strcmp(h, hash) != 0) {
        snprintf(why, whylen, "the stored hash %.16s... does not match the record's content (%.16s...)", hash, h);
        return "hash";
    }
    return NULL;
}
