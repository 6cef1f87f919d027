/* JSON Schema draft-07 validation of instances against compiled nodes
 * (schema_internal.h), and the formatting of results.
 *
 * A recursive walk with two modes: "collect" records failures (with the
 * instance path) and keeps going, "quiet" stops at the first failure (used
 * inside anyOf/oneOf/not/if/contains/propertyNames, whose branches only need
 * a yes/no). A work budget bounds pathological schemas. Nodes are only read:
 * any number of threads may validate against one set at once.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "schema_internal.h"

#define VALIDATE_BUDGET 2000000L /* node visits per validation */
#define VALIDATE_MAX_DEPTH 2000

typedef struct {
    bus_schema_result_t *out;
    char path[1024];
    size_t plen;
    long budget;
    int depth;
    int stop;      /* no point going on: the error list is full, or the budget is spent */
    int exhausted; /* the budget or the depth limit was hit */
} vctx_t;

static const char *rstore(bus_schema_result_t *o, const char *s, size_t n, const char *suffix) {
    size_t sl = strlen(suffix);
    size_t room = sizeof o->buf_ - o->used_;
    if (room < 5) return "";
    char *dst = o->buf_ + o->used_;
    if (n + sl + 1 > room) {
        size_t keep = room - 4 - 1;
        if (keep > n) keep = n;
        memcpy(dst, s, keep);
        memcpy(dst + keep, "...", 4);
        o->used_ += keep + 4;
        return dst;
    }
    memcpy(dst, s, n);
    memcpy(dst + n, suffix, sl);
    dst[n + sl] = 0;
    o->used_ += n + sl + 1;
    return dst;
}

static void vfail(vctx_t *c, const char *kw, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void vfail(vctx_t *c, const char *kw, const char *fmt, ...) {
    bus_schema_result_t *o = c->out;
    if (o->count >= BUS_SCHEMA_MAX_ERRORS) {
        o->truncated = 1;
        c->stop = 1;
        return;
    }
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bus_schema_error_t *e = &o->errors[o->count++];
    e->path = rstore(o, c->path, c->plen, c->plen >= sizeof c->path - 1 ? "/..." : "");
    e->keyword = rstore(o, kw, strlen(kw), "");
    e->message = rstore(o, msg, strlen(msg), "");
}

static size_t vpush(vctx_t *c, const char *seg, size_t n) {
    size_t mark = c->plen;
    size_t cap = sizeof c->path - 1;
    if (c->plen < cap) c->path[c->plen++] = '/';
    for (size_t i = 0; i < n && c->plen < cap; i++) {
        char ch = seg[i];
        if (ch == '~' || ch == '/') {
            if (c->plen + 2 > cap) {
                c->plen = cap;
                break;
            }
            c->path[c->plen++] = '~';
            c->path[c->plen++] = ch == '~' ? '0' : '1';
        } else {
            c->path[c->plen++] = ch;
        }
    }
    return mark;
}

static size_t vpush_idx(vctx_t *c, size_t i) {
    char b[24];
    int k = (int)sizeof b;
    do {
        b[--k] = (char)('0' + i % 10);
        i /= 10;
    } while (i);
    return vpush(c, b + k, sizeof b - (size_t)k);
}

static inline void vpop(vctx_t *c, size_t mark) { c->plen = mark; }

static unsigned inst_type(const cJSON *x) {
    switch (x->type & 0xFF) {
    case cJSON_NULL: return T_NULL;
    case cJSON_True:
    case cJSON_False: return T_BOOLEAN;
    case cJSON_Object: return T_OBJECT;
    case cJSON_Array: return T_ARRAY;
    case cJSON_String: return T_STRING;
    case cJSON_Number: {
        double v = x->valuedouble;
        return (isfinite(v) && floor(v) == v) ? (T_NUMBER | T_INTEGER) : T_NUMBER;
    }
    default: return 0;
    }
}

/* Deep equality of JSON values: numbers by value (1 == 1.0), objects
 * regardless of key order. */
static int json_equal(const cJSON *a, const cJSON *b) {
    int ta = a->type & 0xFF, tb = b->type & 0xFF;
    if (ta != tb) return 0;
    switch (ta) {
    case cJSON_Number: return a->valuedouble == b->valuedouble;
    case cJSON_String:
        return strcmp(a->valuestring ? a->valuestring : "", b->valuestring ? b->valuestring : "") == 0;
    case cJSON_Array: {
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next)
            if (!json_equal(x, y)) return 0;
        return !x && !y;
    }
    case cJSON_Object: {
        size_t na = 0, nb = 0;
        for (const cJSON *x = a->child; x; x = x->next) na++;
        for (const cJSON *y = b->child; y; y = y->next) nb++;
        if (na != nb) return 0;
        for (const cJSON *x = a->child; x; x = x->next) {
            const cJSON *y = cJSON_GetObjectItemCaseSensitive(b, x->string ? x->string : "");
            if (!y || !json_equal(x, y)) return 0;
        }
        return 1;
    }
    case cJSON_Raw: return strcmp(a->valuestring ? a->valuestring : "", b->valuestring ? b->valuestring : "") == 0;
    default: return 1; /* null, true, false */
    }
}

static void fmt_num(double v, char *buf, size_t cap) {
    if (isfinite(v) && floor(v) == v && fabs(v) < 1e15) {
        snprintf(buf, cap, "%.0f", v);
        return;
    }
    snprintf(buf, cap, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, cap, "%.17g", v);
}

/* Prints a JSON value, cut to fit; allocation only on failure paths. */
static void fmt_json(const cJSON *v, char *buf, size_t cap) {
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        snprintf(buf, cap, "(value)");
        return;
    }
    if (strlen(s) >= cap && cap > 4) snprintf(buf, cap, "%.*s...", (int)(cap - 4), s);
    else snprintf(buf, cap, "%s", s);
    cJSON_free(s);
}

static void fmt_types(unsigned mask, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    int first = 1;
    if ((mask & T_NUMBER)) mask &= ~T_INTEGER;
    for (size_t i = 0; i < bus__schema_ntypes; i++) {
        if (!(mask & bus__schema_types[i].bit)) continue;
        n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", first ? "" : " or ", bus__schema_types[i].name);
        first = 0;
        if (n >= cap) break;
    }
    if (first) snprintf(buf, cap, "nothing (empty type list)");
}

static int is_multiple(double v, double m) {
    if (v == 0) return 1;
    if (fabs(v) < 9007199254740992.0 && floor(v) == v && floor(m) == m) return fmod(v, m) == 0;
    double q = v / m;
    if (!isfinite(q)) return 0;
    double r = nearbyint(q);
    return fabs(q - r) <= 1e-9 * (fabs(q) > 1 ? fabs(q) : 1) && fabs(q) < 9007199254740992.0;
}

static const bus__sprop_t *find_prop(const bus_schema_t *s, const char *k, uint32_t h) {
    for (size_t i = h & s->ptab_mask;; i = (i + 1) & s->ptab_mask) {
        uint32_t v = s->ptab[i];
        if (!v) return NULL;
        if (strcmp(s->props[v - 1].name, k) == 0) return &s->props[v - 1];
    }
}

static int vnode(vctx_t *c, const bus_schema_t *s, const cJSON *x, int collect);

#define FAIL(...)                        \
    do {                                 \
        valid = 0;                       \
        if (!collect) return 0;          \
        vfail(c, __VA_ARGS__);           \
        if (c->stop) return 0;           \
    } while (0)
#define SUB(schema, inst)                              \
    do {                                               \
        if (!vnode(c, (schema), (inst), collect)) {    \
            valid = 0;                                 \
            if (!collect || c->stop) return 0;         \
        }                                              \
    } while (0)

static int v_number(vctx_t *c, const bus_schema_t *s, const cJSON *x, int collect) {
    int valid = 1;
    double v = x->valuedouble;
    char b[40];
    if ((s->nflags & N_MULTIPLE) && !is_multiple(v, s->multiple_of)) {
        fmt_num(s->multiple_of, b, sizeof b);
        FAIL("multipleOf", "must be a multiple of %s", b);
    }
    if ((s->nflags & N_MAX) && !(v <= s->maximum)) {
        fmt_num(s->maximum, b, sizeof b);
        FAIL("maximum", "must be <= %s", b);
    }
    if ((s->nflags & N_EXMAX) && !(v < s->ex_maximum)) {
        fmt_num(s->ex_maximum, b, sizeof b);
        FAIL("exclusiveMaximum", "must be < %s", b);
    }
    if ((s->nflags & N_MIN) && !(v >= s->minimum)) {
        fmt_num(s->minimum, b, sizeof b);
        FAIL("minimum", "must be >= %s", b);
    }
    if ((s->nflags & N_EXMIN) && !(v > s->ex_minimum)) {
        fmt_num(s->ex_minimum, b, sizeof b);
        FAIL("exclusiveMinimum", "must be > %s", b);
    }
    return valid;
}

static int v_string(vctx_t *c, const bus_schema_t *s, const cJSON *x, int collect) {
    int valid = 1;
    const char *str = x->valuestring ? x->valuestring : "";
    size_t len = strlen(str);
    if (s->max_len >= 0 || s->min_len >= 0) {
        size_t cp = bus__utf8_length(str, len);
        if (s->max_len >= 0 && (long long)cp > s->max_len)
            FAIL("maxLength", "must have at most %lld character%s", s->max_len, s->max_len == 1 ? "" : "s");
        if (s->min_len >= 0 && (long long)cp < s->min_len)
            FAIL("minLength", "must have at least %lld character%s", s->min_len, s->min_len == 1 ? "" : "s");
    }
    if (s->pattern) {
        int r = bus__schema_regex_search(s->pattern, str, len);
        if (r == 0) FAIL("pattern", "must match pattern \"%.200s\"", s->pattern_src);
        if (r < 0) FAIL("pattern", "cannot be matched against pattern \"%.200s\" (invalid UTF-8 or too complex)", s->pattern_src);
    }
    if (s->fmt && !bus__schema_format_check(s->fmt, str, len))
        FAIL("format", "must be a valid %s", bus__schema_format_name(s->fmt));
    return valid;
}

static int v_array(vctx_t *c, const bus_schema_t *s, const cJSON *x, int collect) {
    int valid = 1;
    size_t n = 0, i = 0;
    for (const cJSON *e = x->child; e; e = e->next) n++;
    if (s->items || s->tuple_form) {
        for (const cJSON *e = x->child; e; e = e->next, i++) {
            int extra = s->tuple_form && i >= s->ntuple;
            const bus_schema_t *is = !s->tuple_form ? s->items : extra ? s->add_items : s->tuple[i];
            if (!is) {
                if (extra) break;
                continue;
            }
            size_t m = vpush_idx(c, i);
            if (extra && is->boolean == 0) {
                vpop(c, m);
                if (!collect) return 0;
                m = vpush_idx(c, i);
                vfail(c, "additionalItems", "must not be present: at most %zu item%s allowed", s->ntuple,
                      s->ntuple == 1 ? " is" : "s are");
                vpop(c, m);
                valid = 0;
                if (c->stop) return 0;
                break; /* one failure for all extra items */
            }
            int ok = vnode(c, is, e, collect);
            vpop(c, m);
            if (!ok) {
                valid = 0;
                if (!collect || c->stop) return 0;
            }
        }
    }
    if (s->max_items >= 0 && (long long)n > s->max_items)
        FAIL("maxItems", "must have at most %lld item%s", s->max_items, s->max_items == 1 ? "" : "s");
    if (s->min_items >= 0 && (long long)n < s->min_items)
        FAIL("minItems", "must have at least %lld item%s", s->min_items, s->min_items == 1 ? "" : "s");
    if (s->unique && n > 1) {
        size_t ia = 0;
        for (const cJSON *a = x->child; a; a = a->next, ia++) {
            size_t ib = ia + 1;
            for (const cJSON *b = a->next; b; b = b->next, ib++) {
                if (json_equal(a, b)) {
                    FAIL("uniqueItems", "must not contain duplicate items (items %zu and %zu are equal)", ia, ib);
                    goto unique_done;
                }
            }
        }
    unique_done:;
    }
    if (s->contains) {
        int found = 0;
        for (const cJSON *e = x->child; e && !found; e = e->next) found = vnode(c, s->contains, e, 0);
        if (!found) FAIL("contains", "must contain at least one item matching the \"contains\" schema");
    }
    return valid;
}

static int v_object(vctx_t *c, const bus_schema_t *s, const cJSON *x, int collect) {
    int valid = 1;
    if (s->max_props >= 0 || s->min_props >= 0) {
        long long n = 0;
        for (const cJSON *e = x->child; e; e = e->next) n++;
        if (s->max_props >= 0 && n > s->max_props)
            FAIL("maxProperties", "must have at most %lld propert%s", s->max_props, s->max_props == 1 ? "y" : "ies");
        if (s->min_props >= 0 && n < s->min_props)
            FAIL("minProperties", "must have at least %lld propert%s", s->min_props, s->min_props == 1 ? "y" : "ies");
    }
    /* which properties are present, when there are few enough to track */
    uint64_t seen = 0;
    int use_seen = s->nprops > 0 && s->nprops <= 64;
    if (s->nprops || s->npprops || s->add_props || s->prop_names) {
        for (const cJSON *e = x->child; e; e = e->next) {
            const char *k = e->string ? e->string : "";
            size_t klen;
            uint32_t h = bus__key_hash(k, &klen);
            int matched = 0;
            if (s->nprops) {
                const bus__sprop_t *p = find_prop(s, k, h);
                if (p) {
                    if (use_seen) seen |= 1ull << (p - s->props);
                    matched = 1;
                    size_t m = vpush(c, k, klen);
                    int ok = vnode(c, p->s, e, collect);
                    vpop(c, m);
                    if (!ok) {
                        valid = 0;
                        if (!collect || c->stop) return 0;
                    }
                }
            }
            for (size_t i = 0; i < s->npprops; i++) {
                int r = bus__schema_regex_search(s->pprops[i].re, k, klen);
                if (r == 0) continue;
                matched = 1;
                size_t m = vpush(c, k, klen);
                int ok;
                if (r < 0) {
                    ok = 0;
                    if (collect)
                        vfail(c, "patternProperties", "name cannot be matched against pattern \"%.200s\"",
                              s->pprops[i].src);
                } else {
                    ok = vnode(c, s->pprops[i].s, e, collect);
                }
                vpop(c, m);
                if (!ok) {
                    valid = 0;
                    if (!collect || c->stop) return 0;
                }
            }
            if (!matched && s->add_props) {
                size_t m = vpush(c, k, klen);
                int ok;
                if (s->add_props->boolean == 0) {
                    ok = 0;
                    if (collect) vfail(c, "additionalProperties", "is not allowed (no additional properties)");
                } else {
                    ok = vnode(c, s->add_props, e, collect);
                }
                vpop(c, m);
                if (!ok) {
                    valid = 0;
                    if (!collect || c->stop) return 0;
                }
            }
            if (s->prop_names) {
                cJSON name;
                memset(&name, 0, sizeof name);
                name.type = cJSON_String;
                name.valuestring = (char *)k;
                if (!vnode(c, s->prop_names, &name, 0)) {
                    size_t m = vpush(c, k, klen);
                    if (collect) vfail(c, "propertyNames", "name \"%.200s\" does not match the \"propertyNames\" schema", k);
                    vpop(c, m);
                    valid = 0;
                    if (!collect || c->stop) return 0;
                }
            }
        }
    }
    for (size_t i = 0; i < s->nrequired; i++) {
        int pi = s->req_prop[i];
        int present = use_seen && pi >= 0 ? (int)((seen >> pi) & 1u)
                                          : cJSON_GetObjectItemCaseSensitive(x, s->required[i]) != NULL;
        if (!present) FAIL("required", "must have required property \"%.200s\"", s->required[i]);
    }
    for (size_t i = 0; i < s->ndeps; i++) {
        const bus__sdep_t *d = &s->deps[i];
        if (!cJSON_GetObjectItemCaseSensitive(x, d->name)) continue;
        if (d->s) {
            SUB(d->s, x);
        } else {
            for (const cJSON *nm = d->names->child; nm; nm = nm->next)
                if (!cJSON_GetObjectItemCaseSensitive(x, nm->valuestring))
                    FAIL("dependencies", "must have property \"%.200s\" when property \"%.200s\" is present",
                         nm->valuestring, d->name);
        }
    }
    return valid;
}

static int vnode(vctx_t *c, const bus_schema_t *s, const cJSON *x, int collect) {
    if (c->stop) return 0;
    if (s->boolean >= 0) {
        if (s->boolean) return 1;
        if (collect) vfail(c, "false", "no value is allowed here (the schema is false)");
        return 0;
    }
    if (--c->budget < 0 || c->depth >= VALIDATE_MAX_DEPTH) {
        c->stop = c->exhausted = 1;
        return 0;
    }
    c->depth++;
    int valid;
    if (s->ref) {
        valid = vnode(c, s->ref, x, collect); /* draft-07: siblings of $ref are ignored */
        c->depth--;
        return valid;
    }
    valid = 1;
    unsigned t = inst_type(x);
#undef FAIL
#define FAIL(...)                        \
    do {                                 \
        valid = 0;                       \
        if (!collect) goto out;          \
        vfail(c, __VA_ARGS__);           \
        if (c->stop) goto out;           \
    } while (0)
#undef SUB
#define SUB(schema, inst)                              \
    do {                                               \
        if (!vnode(c, (schema), (inst), collect)) {    \
            valid = 0;                                 \
            if (!collect || c->stop) goto out;         \
        }                                              \
    } while (0)
    char b[200];
    if (s->types && !(s->types & t)) {
        fmt_types(s->types, b, sizeof b);
        FAIL("type", "must be %s", b);
    }
    if (s->enum_) {
        int found = 0;
        for (const cJSON *e = s->enum_->child; e && !found; e = e->next) found = json_equal(e, x);
        if (!found) {
            size_t n = 0;
            b[0] = 0;
            for (const cJSON *e = s->enum_->child; e; e = e->next) {
                char one[120];
                fmt_json(e, one, sizeof one);
                size_t ol = strlen(one);
                if (n + ol + 5 >= sizeof b) {
                    snprintf(b + n, sizeof b - n, "%s...", n ? "," : "");
                    break;
                }
                n += (size_t)snprintf(b + n, sizeof b - n, "%s%s", n ? "," : "", one);
            }
            if (!s->enum_->child) snprintf(b, sizeof b, "(nothing: the enum is empty)");
            FAIL("enum", "must be one of %s", b);
        }
    }
    if (s->const_ && !json_equal(s->const_, x)) {
        fmt_json(s->const_, b, sizeof b);
        FAIL("const", "must be equal to %s", b);
    }
    {
        int ok = 1;
        if (t & T_NUMBER) ok = v_number(c, s, x, collect);
        else if (t & T_STRING) ok = v_string(c, s, x, collect);
        else if (t & T_ARRAY) ok = v_array(c, s, x, collect);
        else if (t & T_OBJECT) ok = v_object(c, s, x, collect);
        if (!ok) {
            valid = 0;
            if (!collect || c->stop) goto out;
        }
    }
    if (s->if_) {
        if (vnode(c, s->if_, x, 0)) {
            if (s->then_) SUB(s->then_, x);
        } else if (!c->stop) {
            if (s->else_) SUB(s->else_, x);
        }
    }
    for (size_t i = 0; i < s->nall; i++) SUB(s->all_of[i], x);
    if (s->nany) {
        int any = 0;
        for (size_t i = 0; i < s->nany && !any; i++) any = vnode(c, s->any_of[i], x, 0);
        if (!any && !c->stop) FAIL("anyOf", "must match at least one schema in \"anyOf\"");
    }
    if (s->none) {
        size_t hits = 0, first = 0, second = 0;
        for (size_t i = 0; i < s->none && hits < 2; i++) {
            if (vnode(c, s->one_of[i], x, 0)) {
                if (hits == 0) first = i;
                else second = i;
                hits++;
            }
        }
        if (c->stop) goto out;
        if (hits == 0) FAIL("oneOf", "must match exactly one schema in \"oneOf\" (it matches none)");
        else if (hits > 1)
            FAIL("oneOf", "must match exactly one schema in \"oneOf\" (it matches schemas %zu and %zu)", first, second);
    }
    if (s->not_ && vnode(c, s->not_, x, 0) && !c->stop) FAIL("not", "must not be valid against the schema in \"not\"");
out:
    c->depth--;
    return valid && !c->exhausted;
}

/* Compares JSON pointers token by token; tokens made only of digits compare
 * as numbers, so /items/2 sorts before /items/10. */
static int path_cmp(const char *a, const char *b) {
    while (*a || *b) {
        if (!*a) return -1;
        if (!*b) return 1;
        if (*a == '/') a++;
        if (*b == '/') b++;
        size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
        int da = la > 0, db = lb > 0;
        for (size_t i = 0; i < la && da; i++) da = isdigit((unsigned char)a[i]);
        for (size_t i = 0; i < lb && db; i++) db = isdigit((unsigned char)b[i]);
        int r;
        if (da && db) {
            while (la > 1 && *a == '0') a++, la--;
            while (lb > 1 && *b == '0') b++, lb--;
            r = la != lb ? (la < lb ? -1 : 1) : memcmp(a, b, la);
        } else {
            size_t l = la < lb ? la : lb;
            r = memcmp(a, b, l);
            if (!r && la != lb) r = la < lb ? -1 : 1;
        }
        if (r) return r;
        a += la;
        b += lb;
    }
    return 0;
}

int bus_schema_validate_at(const bus_schema_t *s, const cJSON *instance, const char *prefix,
                           bus_schema_result_t *out) {
    out->count = 0;
    out->truncated = 0;
    out->used_ = 0;
    vctx_t c;
    c.out = out;
    c.plen = 0;
    c.budget = VALIDATE_BUDGET;
    c.depth = 0;
    c.stop = c.exhausted = 0;
    if (prefix) {
        size_t pl = strlen(prefix);
        if (pl > 256) pl = 256;
        memcpy(c.path, prefix, pl);
        c.plen = pl;
    }
    size_t root = c.plen;
    int ok;
    if (!s) {
        vfail(&c, "schema", "no schema");
        return BUS_EINVALID;
    }
    if (!instance) {
        vfail(&c, "type", "no value");
        return BUS_EINVALID;
    }
    ok = vnode(&c, s, instance, 1);
    if (c.exhausted) {
        c.plen = root;
        c.stop = 0;
        if (out->count >= BUS_SCHEMA_MAX_ERRORS) out->count = BUS_SCHEMA_MAX_ERRORS - 1;
        vfail(&c, "limit", "validation stopped: the document or schema is too complex");
        ok = 0;
    }
    if (!ok && out->count == 0) {
        c.plen = root;
        vfail(&c, "schema", "is not valid");
    }
    /* stable insertion sort by path; ties keep the order the rules were checked in */
    for (size_t i = 1; i < out->count; i++) {
        bus_schema_error_t e = out->errors[i];
        size_t k = i;
        while (k > 0 && path_cmp(out->errors[k - 1].path, e.path) > 0) {
            out->errors[k] = out->errors[k - 1];
            k--;
        }
        out->errors[k] = e;
    }
    return ok ? 0 : BUS_EINVALID;
}

int bus_schema_validate(const bus_schema_t *s, const cJSON *instance, bus_schema_result_t *out) {
    return bus_schema_validate_at(s, instance, NULL, out);
}

size_t bus_schema_error_format(const bus_schema_error_t *e, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "%s: %s", e->path[0] ? e->path : "(root)", e->message);
    return n < 0 ? 0 : (size_t)n;
}

size_t bus_schema_result_format(const bus_schema_result_t *r, char *buf, size_t cap) {
    size_t n = 0;
    if (cap) buf[0] = 0;
    for (size_t i = 0; i < r->count; i++) {
        int k = snprintf(n < cap ? buf + n : NULL, n < cap ? cap - n : 0, "%s%s: %s", i ? "; " : "",
                         r->errors[i].path[0] ? r->errors[i].path : "(root)", r->errors[i].message);
        if (k > 0) n += (size_t)k;
    }
    if (r->truncated) {
        int k = snprintf(n < cap ? buf + n : NULL, n < cap ? cap - n : 0, "; ...");
        if (k > 0) n += (size_t)k;
    }
    return n;
}
