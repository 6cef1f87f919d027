/* JSON Schema draft-07 compilation: a schema location (an object or a
 * boolean) into a node of its document set (schema_internal.h).
 *
 * Each keyword of the core and validation vocabularies is one row of
 * `keywords` below: its name and the function that checks its value the way
 * the draft-07 meta-schema does and fills the node. Rows run in table order;
 * the first broken keyword stops the node and is the error reported
 * ("<file>: <pointer>: <reason>"). `$ref`s are only recorded here
 * (bus__sset_defer_ref); schema_ref.c resolves them when the set is linked.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "schema_internal.h"

#define COMPILE_MAX_DEPTH 1000

const bus__stype_t bus__schema_types[] = {
    {"integer", T_INTEGER}, {"number", T_NUMBER}, {"string", T_STRING}, {"boolean", T_BOOLEAN},
    {"object", T_OBJECT},   {"array", T_ARRAY},   {"null", T_NULL},
};
const size_t bus__schema_ntypes = sizeof bus__schema_types / sizeof bus__schema_types[0];

typedef struct {
    bus__sset_t *set;
    bus__sdoc_t *doc;
    char *err;
    size_t errlen;
    char ptr[2048]; /* JSON pointer of the location being compiled, for errors */
    size_t plen;
    int depth;
    int rc; /* first error code */
} cctx_t;

static void vcfail(cctx_t *c, const char *fmt, va_list ap) {
    if (c->rc) return;
    c->rc = BUS_EINVALID;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    snprintf(c->err, c->errlen, "%s: %s: %s", bus__sdoc_name(c->doc), c->plen ? c->ptr : "(root)", msg);
}

/* Fails the compilation at the current pointer; the first failure wins. */
static void cfail(cctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cfail(cctx_t *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vcfail(c, fmt, ap);
    va_end(ap);
}

static void coom(cctx_t *c) {
    if (c->rc) return;
    c->rc = BUS_EINTERNAL;
    snprintf(c->err, c->errlen, "%s: out of memory", bus__sdoc_name(c->doc));
}

/* Appends "/seg" (escaped as a JSON pointer token) to the compile pointer. */
static size_t cpush(cctx_t *c, const char *seg) {
    size_t mark = c->plen;
    size_t cap = sizeof c->ptr - 4;
    if (c->plen < cap) c->ptr[c->plen++] = '/';
    for (const char *s = seg; *s && c->plen < cap; s++) {
        if (*s == '~' || *s == '/') {
            c->ptr[c->plen++] = '~';
            c->ptr[c->plen++] = *s == '~' ? '0' : '1';
        } else {
            c->ptr[c->plen++] = *s;
        }
    }
    c->ptr[c->plen] = 0;
    return mark;
}
static size_t cpush_idx(cctx_t *c, size_t i) {
    char b[32];
    snprintf(b, sizeof b, "%zu", i);
    return cpush(c, b);
}
static void cpop(cctx_t *c, size_t mark) {
    c->plen = mark;
    c->ptr[mark] = 0;
}

/* Fails the compilation at the pointer of keyword `kw` of the current node. */
static void kw_fail(cctx_t *c, const char *kw, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void kw_fail(cctx_t *c, const char *kw, const char *fmt, ...) {
    size_t m = cpush(c, kw);
    va_list ap;
    va_start(ap, fmt);
    vcfail(c, fmt, ap);
    va_end(ap);
    cpop(c, m);
}

static bus_schema_t *compile(cctx_t *c, const cJSON *j, const char *base);

/* Compiles the schema `j` found under the pointer token `seg`. */
static bus_schema_t *compile_under(cctx_t *c, const cJSON *j, const char *seg, const char *base) {
    size_t m = cpush(c, seg);
    bus_schema_t *s = compile(c, j, base);
    cpop(c, m);
    return s;
}

/* ------------------------------------------------------------------ */
/* the keywords                                                        */

typedef struct kw kw_t;
/* Checks the value `v` of keyword kw->name of node n and fills n; failures
 * go to c (cfail/kw_fail/coom). */
typedef void kw_compile_fn(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw);
struct kw {
    const char *name;
    kw_compile_fn *compile;
    size_t field;  /* the node member the shared compilers fill (offsetof) */
    size_t count;  /* kw_schema_list: the member that counts that list */
    unsigned flag; /* kw_number: the N_* bit that says the keyword is present */
    int alone;     /* when present, every other keyword is ignored ($ref) */
};

/* The node member a row names (kw->field, kw->count). */
#define MEMBER(type, n, off) ((type *)(void *)((char *)(n) + (off)))

static void kw_ref(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    if (!cJSON_IsString(v)) kw_fail(c, kw->name, "must be a string");
    else if (bus__sset_defer_ref(c->set, n, v->valuestring)) coom(c);
}

static void kw_string(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    (void)n;
    if (!cJSON_IsString(v)) kw_fail(c, kw->name, "must be a string");
}

static void kw_id(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    if (!cJSON_IsString(v)) {
        kw_fail(c, kw->name, "must be a string");
        return;
    }
    char *dup = NULL;
    int r = bus__sset_declare_id(c->set, n, v->valuestring, &dup);
    if (r < 0) coom(c);
    else if (r > 0) kw_fail(c, kw->name, "duplicate $id \"%s\"", dup);
    free(dup);
}

static unsigned type_bit(const char *s) {
    for (size_t i = 0; i < bus__schema_ntypes; i++)
        if (strcmp(bus__schema_types[i].name, s) == 0) return bus__schema_types[i].bit;
    return 0;
}

static void kw_type(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    size_t m = cpush(c, kw->name);
    if (cJSON_IsString(v)) {
        n->types = type_bit(v->valuestring);
        if (!n->types) cfail(c, "unknown type \"%s\"", v->valuestring);
    } else if (cJSON_IsArray(v)) {
        for (const cJSON *e = v->child; e; e = e->next) {
            unsigned b = cJSON_IsString(e) ? type_bit(e->valuestring) : 0;
            if (!b) {
                cfail(c, "must be a type name or an array of unique type names");
                break;
            }
            if (n->types & b) {
                cfail(c, "type \"%s\" is listed twice", e->valuestring);
                break;
            }
            n->types |= b;
        }
        if (!v->child) cfail(c, "must not be an empty array");
    } else {
        cfail(c, "must be a type name or an array of unique type names");
    }
    cpop(c, m);
    if (n->types & T_NUMBER) n->types |= T_INTEGER;
}

static void kw_enum(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    if (!cJSON_IsArray(v)) kw_fail(c, kw->name, "must be an array");
    else n->enum_ = v;
}

static void kw_const(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    (void)c, (void)kw;
    n->const_ = v;
}

/* maximum, exclusiveMaximum, minimum, exclusiveMinimum: a number. */
static void kw_number(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    if (!cJSON_IsNumber(v)) {
        kw_fail(c, kw->name, "must be a number");
        return;
    }
    *MEMBER(double, n, kw->field) = v->valuedouble;
    n->nflags |= kw->flag;
}

static void kw_multiple_of(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    kw_number(c, n, v, kw);
    if (!c->rc && !(n->multiple_of > 0)) kw_fail(c, kw->name, "must be greater than 0");
}

/* maxLength, minItems, ...: a non-negative integer (-1 stays "absent"). */
static void kw_count(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || !isfinite(d) || floor(d) != d || d < 0) {
        kw_fail(c, kw->name, "must be a non-negative integer");
        return;
    }
    *MEMBER(long long, n, kw->field) = d > 9e18 ? LLONG_MAX : (long long)d;
}

static void kw_pattern(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    char rerr[160];
    if (!cJSON_IsString(v)) kw_fail(c, kw->name, "must be a string");
    else if (!(n->pattern = bus__schema_regex_compile(v->valuestring, rerr, sizeof rerr)))
        kw_fail(c, kw->name, "%s", rerr);
    else n->pattern_src = v->valuestring;
}

static void kw_format(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    if (!cJSON_IsString(v)) kw_fail(c, kw->name, "must be a string");
    else n->fmt = (unsigned char)bus__schema_format_lookup(v->valuestring);
}

/* additionalItems, contains, propertyNames, if, ...: one schema. */
static void kw_schema(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    *MEMBER(bus_schema_t *, n, kw->field) = compile_under(c, v, kw->name, n->base);
}

/* allOf / anyOf / oneOf: a non-empty array of schemas. */
static void kw_schema_list(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    size_t m = cpush(c, kw->name);
    int cnt = cJSON_GetArraySize(v);
    bus_schema_t **arr = NULL;
    size_t i = 0;
    if (!cJSON_IsArray(v) || cnt == 0) cfail(c, "must be a non-empty array of schemas");
    else if (!(arr = calloc((size_t)cnt, sizeof *arr))) coom(c);
    for (const cJSON *e = arr ? v->child : NULL; e && !c->rc; e = e->next, i++) {
        size_t m2 = cpush_idx(c, i);
        arr[i] = compile(c, e, n->base);
        cpop(c, m2);
    }
    cpop(c, m);
    *MEMBER(bus_schema_t **, n, kw->field) = arr;
    *MEMBER(size_t, n, kw->count) = i;
}

/* items: one schema for every item, or an array of them (the tuple form). */
static void kw_items(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    if (!cJSON_IsArray(v)) {
        n->items = compile_under(c, v, kw->name, n->base);
        return;
    }
    size_t m = cpush(c, kw->name);
    n->tuple_form = 1;
    n->tuple = calloc((size_t)cJSON_GetArraySize(v) + 1, sizeof *n->tuple);
    if (!n->tuple) coom(c);
    size_t i = 0;
    for (const cJSON *e = v->child; e && !c->rc; e = e->next, i++) {
        size_t m2 = cpush_idx(c, i);
        n->tuple[i] = compile(c, e, n->base);
        cpop(c, m2);
    }
    n->ntuple = i;
    cpop(c, m);
}

static void kw_unique_items(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    if (!cJSON_IsBool(v)) kw_fail(c, kw->name, "must be a boolean");
    n->unique = cJSON_IsTrue(v);
}

/* The frame the collection keywords (required, properties,
 * patternProperties, dependencies) share: the keyword goes on the error
 * path (*mark, for cpop), its value must be an array (want_array) or an
 * object, else `what` is the error, and one zeroed element of `size` bytes
 * is allocated per member. Returns that allocation, or NULL when there is
 * nothing to fill: empty, wrong type or out of memory (c->rc says which). */
static void *kw_members(cctx_t *c, const cJSON *v, const char *kw, int want_array, const char *what, size_t size,
                        size_t *mark) {
    *mark = cpush(c, kw);
    if (want_array ? !cJSON_IsArray(v) : !cJSON_IsObject(v)) {
        cfail(c, "%s", what);
        return NULL;
    }
    int cnt = cJSON_GetArraySize(v);
    if (cnt == 0) return NULL;
    void *items = calloc((size_t)cnt, size);
    if (!items) coom(c);
    return items;
}

static void kw_required(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    const char *what = "must be an array of unique strings";
    size_t m;
    if ((n->required = kw_members(c, v, kw->name, 1, what, sizeof *n->required, &m)))
        for (const cJSON *e = v->child; e && !c->rc; e = e->next) {
            if (!cJSON_IsString(e)) {
                cfail(c, "%s", what);
                break;
            }
            for (size_t k = 0; k < n->nrequired; k++)
                if (strcmp(n->required[k], e->valuestring) == 0) cfail(c, "\"%s\" is listed twice", e->valuestring);
            n->required[n->nrequired++] = e->valuestring;
        }
    cpop(c, m);
}

static int prop_cmp(const void *a, const void *b) {
    return strcmp(((const bus__sprop_t *)a)->name, ((const bus__sprop_t *)b)->name);
}

static void kw_properties(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    size_t m;
    if ((n->props = kw_members(c, v, kw->name, 0, "must be an object of schemas", sizeof *n->props, &m))) {
        for (const cJSON *e = v->child; e && !c->rc; e = e->next) {
            n->props[n->nprops].name = e->string;
            n->props[n->nprops].s = compile_under(c, e, e->string, n->base);
            n->nprops++;
        }
        if (!c->rc) qsort(n->props, n->nprops, sizeof *n->props, prop_cmp);
    }
    cpop(c, m);
}

static void kw_pattern_properties(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    size_t m;
    if ((n->pprops = kw_members(c, v, kw->name, 0, "must be an object of schemas", sizeof *n->pprops, &m)))
        for (const cJSON *e = v->child; e && !c->rc; e = e->next) {
            char rerr[160];
            size_t m2 = cpush(c, e->string);
            pcre2_code *re = bus__schema_regex_compile(e->string, rerr, sizeof rerr);
            if (!re) {
                cfail(c, "%s", rerr);
            } else {
                bus__spattern_t *p = &n->pprops[n->npprops++];
                p->re = re;
                p->src = e->string;
                p->s = compile(c, e, n->base);
            }
            cpop(c, m2);
        }
    cpop(c, m);
}

static void kw_dependencies(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    size_t m;
    if ((n->deps = kw_members(c, v, kw->name, 0, "must be an object", sizeof *n->deps, &m)))
        for (const cJSON *e = v->child; e && !c->rc; e = e->next) {
            bus__sdep_t *d = &n->deps[n->ndeps++];
            d->name = e->string;
            if (cJSON_IsArray(e)) {
                for (const cJSON *x = e->child; x; x = x->next)
                    if (!cJSON_IsString(x)) {
                        kw_fail(c, e->string, "must be a schema or an array of strings");
                        break;
                    }
                d->names = e;
            } else {
                d->s = compile_under(c, e, e->string, n->base);
            }
        }
    cpop(c, m);
}

/* definitions: compiled so they are checked and can be $ref targets. */
static void kw_definitions(cctx_t *c, bus_schema_t *n, const cJSON *v, const kw_t *kw) {
    size_t m = cpush(c, kw->name);
    if (!cJSON_IsObject(v)) cfail(c, "must be an object of schemas");
    else
        for (const cJSON *e = v->child; e && !c->rc; e = e->next) compile_under(c, e, e->string, n->base);
    cpop(c, m);
}

/* Rows by kind: a keyword with its own compiler, and the shared compilers
 * with the node member they fill. */
#define ROW(kw, fn) {.name = (kw), .compile = (fn)}
#define NUMBER(kw, member, bit) \
    {.name = (kw), .compile = kw_number, .field = offsetof(bus_schema_t, member), .flag = (bit)}
#define COUNT(kw, member) {.name = (kw), .compile = kw_count, .field = offsetof(bus_schema_t, member)}
#define SCHEMA(kw, member) {.name = (kw), .compile = kw_schema, .field = offsetof(bus_schema_t, member)}
#define SCHEMA_LIST(kw, member, counter)                                                  \
    {.name = (kw), .compile = kw_schema_list, .field = offsetof(bus_schema_t, member), \
     .count = offsetof(bus_schema_t, counter)}

/* In the order they are checked: the first broken one is the error. `$ref`
 * comes first: in draft-07 its siblings are ignored, `$id` included. `$id`
 * comes before every keyword holding schemas, which resolve against it. */
static const kw_t keywords[] = {
    {.name = "$ref", .compile = kw_ref, .alone = 1},
    ROW("$schema", kw_string),
    ROW("$id", kw_id),
    ROW("type", kw_type),
    ROW("enum", kw_enum),
    ROW("const", kw_const),
    {.name = "multipleOf", .compile = kw_multiple_of, .field = offsetof(bus_schema_t, multiple_of),
     .flag = N_MULTIPLE},
    NUMBER("maximum", maximum, N_MAX),
    NUMBER("exclusiveMaximum", ex_maximum, N_EXMAX),
    NUMBER("minimum", minimum, N_MIN),
    NUMBER("exclusiveMinimum", ex_minimum, N_EXMIN),
    COUNT("maxLength", max_len),
    COUNT("minLength", min_len),
    COUNT("maxItems", max_items),
    COUNT("minItems", min_items),
    COUNT("maxProperties", max_props),
    COUNT("minProperties", min_props),
    ROW("pattern", kw_pattern),
    ROW("format", kw_format),
    ROW("items", kw_items),
    SCHEMA("additionalItems", add_items),
    ROW("uniqueItems", kw_unique_items),
    SCHEMA("contains", contains),
    ROW("required", kw_required),
    ROW("properties", kw_properties),
    ROW("patternProperties", kw_pattern_properties),
    SCHEMA("additionalProperties", add_props),
    ROW("dependencies", kw_dependencies),
    SCHEMA("propertyNames", prop_names),
    SCHEMA("if", if_),
    SCHEMA("then", then_),
    SCHEMA("else", else_),
    SCHEMA("not", not_),
    SCHEMA_LIST("allOf", all_of, nall),
    SCHEMA_LIST("anyOf", any_of, nany),
    SCHEMA_LIST("oneOf", one_of, none),
    ROW("definitions", kw_definitions),
};
#undef ROW
#undef NUMBER
#undef COUNT
#undef SCHEMA
#undef SCHEMA_LIST

/* ------------------------------------------------------------------ */
/* nodes                                                               */

/* Builds the look-up structures of `properties`/`required` so validation
 * finds a member's schema with one hash and checks `required` without
 * scanning the instance again. */
static int index_props(bus_schema_t *n) {
    if (n->nprops) {
        size_t cap = 4;
        while (cap < n->nprops * 2) cap *= 2;
        n->ptab = calloc(cap, sizeof *n->ptab);
        if (!n->ptab) return -1;
        n->ptab_mask = cap - 1;
        for (size_t i = 0; i < n->nprops; i++) {
            size_t len;
            size_t k = bus__key_hash(n->props[i].name, &len) & n->ptab_mask;
            while (n->ptab[k]) k = (k + 1) & n->ptab_mask;
            n->ptab[k] = (uint32_t)(i + 1);
        }
    }
    if (n->nrequired) {
        n->req_prop = malloc(n->nrequired * sizeof *n->req_prop);
        if (!n->req_prop) return -1;
        for (size_t i = 0; i < n->nrequired; i++) {
            n->req_prop[i] = -1;
            for (size_t k = 0; k < n->nprops; k++)
                if (strcmp(n->props[k].name, n->required[i]) == 0) {
                    n->req_prop[i] = (int)k;
                    break;
                }
        }
    }
    return 0;
}

static bus_schema_t *compile(cctx_t *c, const cJSON *j, const char *base) {
    if (c->rc) return NULL;
    bus_schema_t *n = bus__sset_node(c->set, j);
    if (n) return n;
    if (!cJSON_IsObject(j) && !cJSON_IsBool(j)) {
        cfail(c, "must be a schema (an object or a boolean)");
        return NULL;
    }
    if (c->depth >= COMPILE_MAX_DEPTH) {
        cfail(c, "schema nested too deeply");
        return NULL;
    }
    n = bus__sset_new_node(c->set, j);
    if (!n || !(n->ptr = strdup(c->ptr))) {
        coom(c);
        return NULL;
    }
    n->doc = c->doc;
    n->base = base;
    n->max_len = n->min_len = n->max_items = n->min_items = n->max_props = n->min_props = -1;
    if (cJSON_IsBool(j)) {
        n->boolean = cJSON_IsTrue(j) ? 1 : 0;
        return n;
    }
    n->boolean = -1;
    c->depth++;
    for (const kw_t *kw = keywords; kw < keywords + sizeof keywords / sizeof keywords[0] && !c->rc; kw++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, kw->name);
        if (!v) continue;
        kw->compile(c, n, v, kw);
        if (kw->alone) break;
    }
    if (!c->rc && index_props(n)) coom(c);
    c->depth--;
    return c->rc ? NULL : n;
}

int bus__schema_compile_at(bus__sset_t *set, bus__sdoc_t *doc, const cJSON *json, const char *base,
                           const char *ptr, const char *ptr_tail, bus_schema_t **out, char *err,
                           size_t errlen) {
    cctx_t c;
    memset(&c, 0, sizeof c);
    c.set = set;
    c.doc = doc;
    c.err = err;
    c.errlen = errlen;
    snprintf(c.ptr, sizeof c.ptr, "%s%s", ptr, ptr_tail ? ptr_tail : "");
    c.plen = strlen(c.ptr);
    bus_schema_t *n = compile(&c, json, base);
    *out = c.rc ? NULL : n;
    return c.rc;
}

void bus__schema_node_free(bus_schema_t *n) {
    free(n->ptr);
    free(n->ref_uri);
    if (n->pattern) pcre2_code_free(n->pattern);
    free(n->tuple);
    free(n->required);
    free(n->props);
    free(n->ptab);
    free(n->req_prop);
    for (size_t i = 0; i < n->npprops; i++) pcre2_code_free(n->pprops[i].re);
    free(n->pprops);
    free(n->deps);
    free(n->all_of);
    free(n->any_of);
    free(n->one_of);
    free(n);
}
