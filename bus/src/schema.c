/* JSON Schema draft-07: compiling documents into node trees, resolving
 * `$ref`s across a set of documents, and validating instances.
 *
 * A document set (bus__sset_t) owns the parsed documents, every compiled
 * node, and an index of the URIs it knows (file URIs, `$id`s, location-
 * independent `#anchor` ids). Compilation walks the keywords of the
 * core and validation vocabularies, checks each keyword's value the way the
 * draft-07 meta-schema does, and records `$ref`s as pending; linking then
 * resolves them (compiling the target location if it was not a schema
 * location yet, or loading a sibling file when the set allows it) and finally
 * refuses reference loops that never move to a deeper instance location
 * ({"$ref":"#"} or {"allOf":[{"$ref":"#"}]}), which could never terminate.
 *
 * Validation is a recursive walk with two modes: "collect" records failures
 * (with the instance path) and keeps going, "quiet" stops at the first
 * failure (used inside anyOf/oneOf/not/if/contains/propertyNames, whose
 * branches only need a yes/no). A work budget bounds pathological schemas.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bus/envelope.h"
#include "bus/error.h"
#include "schema_internal.h"

#define T_NULL 0x01u
#define T_BOOLEAN 0x02u
#define T_OBJECT 0x04u
#define T_ARRAY 0x08u
#define T_NUMBER 0x10u
#define T_STRING 0x20u
#define T_INTEGER 0x40u

#define N_MULTIPLE 0x01u
#define N_MAX 0x02u
#define N_EXMAX 0x04u
#define N_MIN 0x08u
#define N_EXMIN 0x10u

#define VALIDATE_BUDGET 2000000L /* node visits per validation */
#define VALIDATE_MAX_DEPTH 2000
#define COMPILE_MAX_DEPTH 1000

typedef struct sdoc {
    char *file;     /* as given, for messages; NULL for in-memory documents */
    char *realfile; /* canonical path, for identity; NULL when none */
    char *uri;      /* the document's retrieval URI */
    cJSON *json;
} sdoc_t;

typedef struct {
    char *uri; /* absolute, with a fragment only for "#anchor" ids */
    const cJSON *json;
    sdoc_t *doc;
    const char *base; /* base URI in effect at that location */
    char *ptr;        /* JSON pointer of the location in its document */
} sid_t;

struct prop {
    const char *name;
    bus_schema_t *s;
};
struct pprop {
    pcre2_code *re;
    const char *src;
    bus_schema_t *s;
};
struct dep {
    const char *name;
    bus_schema_t *s;     /* schema form */
    const cJSON *names;  /* array-of-names form */
};

struct bus_schema {
    bus__sset_t *set;
    sdoc_t *doc;
    const cJSON *json;
    const char *base;
    char *ptr;
    signed char boolean; /* -1: an object schema; 0/1: false/true */
    unsigned char unique, tuple_form, fmt, visit;
    unsigned types, nflags;
    bus_schema_t *ref;
    char *ref_uri;
    const char *ref_raw;
    const cJSON *enum_, *const_;
    double multiple_of, maximum, ex_maximum, minimum, ex_minimum;
    long long max_len, min_len, max_items, min_items, max_props, min_props;
    pcre2_code *pattern;
    const char *pattern_src;
    bus_schema_t *items, **tuple, *add_items, *contains;
    size_t ntuple;
    const char **required;
    size_t nrequired;
    struct prop *props;
    size_t nprops;
    uint32_t *ptab; /* open-addressing table over props: index + 1, 0 = empty */
    size_t ptab_mask;
    int *req_prop; /* per required name: its index in props, or -1 */
    struct pprop *pprops;
    size_t npprops;
    bus_schema_t *add_props;
    struct dep *deps;
    size_t ndeps;
    bus_schema_t *prop_names, *if_, *then_, *else_, *not_;
    bus_schema_t **all_of, **any_of, **one_of;
    size_t nall, nany, none;
};

typedef struct {
    const cJSON *key;
    bus_schema_t *node;
} mapent_t;

typedef struct {
    char *path;
    char *id; /* resolved $id or NULL */
} scanent_t;

struct bus__sset {
    sdoc_t **docs;
    size_t ndocs, capdocs;
    sid_t *ids;
    size_t nids, capids;
    mapent_t *map;
    size_t mapn, mapcap;
    bus_schema_t **nodes;
    size_t nnodes, capnodes;
    bus_schema_t **pending;
    size_t npending, cappending, linked;
    char **strs;
    size_t nstrs, capstrs;
    int allow_files;
    char *search_dir;
    int scanned;
    scanent_t *scan;
    size_t nscan, capscan;
    bus_schema_t *owner;
};

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static int grow(void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 8;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

static char *xstrndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* Keeps `s` (malloc'd) alive as long as the set; returns it (NULL on OOM, s freed). */
static char *set_keep(bus__sset_t *set, char *s) {
    if (!s) return NULL;
    if (grow((void **)&set->strs, &set->capstrs, set->nstrs + 1, sizeof *set->strs)) {
        free(s);
        return NULL;
    }
    set->strs[set->nstrs++] = s;
    return s;
}

char *bus__read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap > (64u << 20)) { /* 64 MiB: not a schema */
                free(buf);
                buf = NULL;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                free(buf);
                buf = NULL;
            }
            break;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len) *len = n;
    }
    return buf;
}

/* Schema files and CLI instances go through the platform's one parser
 * (bus_json_parse, bus/src/json.c). The depth bound is the one cJSON applied
 * to them before (CJSON_NESTING_LIMIT): schema files are the repository's,
 * not a client's, and compilation bounds schema nesting on its own. */
cJSON *bus__schema_parse_json(const char *text, size_t len, char *err, size_t errlen) {
    char why[96];
    cJSON *j = bus_json_parse(text, len, CJSON_NESTING_LIMIT, why, sizeof why);
    if (!j) snprintf(err, errlen, "not valid JSON (%s)", why);
    return j;
}

/* ------------------------------------------------------------------ */
/* URIs (RFC 3986 section 5: reference resolution)                     */

typedef struct {
    const char *s;
    size_t n;
    int has;
} upart_t;
typedef struct {
    upart_t scheme, auth, path, query, frag;
} uri_t;

static void uri_split(const char *u, uri_t *p) {
    memset(p, 0, sizeof *p);
    const char *c = u;
    if (isalpha((unsigned char)*c)) {
        const char *k = c;
        while (isalnum((unsigned char)*k) || *k == '+' || *k == '-' || *k == '.') k++;
        if (*k == ':') {
            p->scheme = (upart_t){c, (size_t)(k - c), 1};
            c = k + 1;
        }
    }
    if (c[0] == '/' && c[1] == '/') {
        const char *a = c + 2, *k = a;
        while (*k && *k != '/' && *k != '?' && *k != '#') k++;
        p->auth = (upart_t){a, (size_t)(k - a), 1};
        c = k;
    }
    const char *k = c;
    while (*k && *k != '?' && *k != '#') k++;
    p->path = (upart_t){c, (size_t)(k - c), 1};
    c = k;
    if (*c == '?') {
        k = ++c;
        while (*k && *k != '#') k++;
        p->query = (upart_t){c, (size_t)(k - c), 1};
        c = k;
    }
    if (*c == '#') p->frag = (upart_t){c + 1, strlen(c + 1), 1};
}

/* remove_dot_segments of RFC 3986 5.2.4, in place on a NUL-terminated path. */
static void remove_dots(char *in) {
    char *out = in, *r = in;
    size_t olen = 0;
    while (*r) {
        if (strncmp(r, "../", 3) == 0) r += 3;
        else if (strncmp(r, "./", 2) == 0) r += 2;
        else if (strncmp(r, "/./", 3) == 0) r += 2;
        else if (strcmp(r, "/.") == 0) r[1] = 0;
        else if (strncmp(r, "/../", 4) == 0 || strcmp(r, "/..") == 0) {
            if (r[3] == 0) {
                r += 2;
                *r = '/';
            } else {
                r += 3;
            }
            while (olen > 0 && out[olen - 1] != '/') olen--;
            if (olen > 0) olen--;
        } else if (strcmp(r, ".") == 0 || strcmp(r, "..") == 0) {
            r += strlen(r);
        } else {
            size_t k = (*r == '/') ? 1 : 0;
            while (r[k] && r[k] != '/') k++;
            memmove(out + olen, r, k);
            olen += k;
            r += k;
        }
    }
    out[olen] = 0;
}

static void app(char **o, const char *s, size_t n) {
    memcpy(*o, s, n);
    *o += n;
}

/* The absolute URI of `ref` against `base`; malloc'd. An empty fragment
 * ("x.json#") is dropped: it names the same resource. */
static char *uri_resolve(const char *base, const char *ref) {
    uri_t b, r, t;
    uri_split(base ? base : "", &b);
    uri_split(ref, &r);
    size_t total = strlen(base ? base : "") + strlen(ref) + 8;
    char *path = malloc(total);
    char *out = malloc(total + 8);
    if (!path || !out) {
        free(path);
        free(out);
        return NULL;
    }
    memset(&t, 0, sizeof t);
    path[0] = 0;
    if (r.scheme.has) {
        t.scheme = r.scheme;
        t.auth = r.auth;
        memcpy(path, r.path.s, r.path.n);
        path[r.path.n] = 0;
        remove_dots(path);
        t.query = r.query;
    } else {
        t.scheme = b.scheme;
        if (r.auth.has) {
            t.auth = r.auth;
            memcpy(path, r.path.s, r.path.n);
            path[r.path.n] = 0;
            remove_dots(path);
            t.query = r.query;
        } else {
            t.auth = b.auth;
            if (r.path.n == 0) {
                memcpy(path, b.path.s, b.path.n);
                path[b.path.n] = 0;
                t.query = r.query.has ? r.query : b.query;
            } else {
                if (r.path.s[0] == '/') {
                    memcpy(path, r.path.s, r.path.n);
                    path[r.path.n] = 0;
                } else {
                    size_t keep = 0;
                    char *o = path;
                    if (b.auth.has && b.path.n == 0) {
                        *o++ = '/';
                    } else {
                        for (size_t i = 0; i < b.path.n; i++)
                            if (b.path.s[i] == '/') keep = i + 1;
                        app(&o, b.path.s, keep);
                    }
                    app(&o, r.path.s, r.path.n);
                    *o = 0;
                }
                remove_dots(path);
                t.query = r.query;
            }
        }
    }
    t.frag = r.frag;
    char *o = out;
    if (t.scheme.has) {
        app(&o, t.scheme.s, t.scheme.n);
        *o++ = ':';
    }
    if (t.auth.has) {
        app(&o, "//", 2);
        app(&o, t.auth.s, t.auth.n);
    }
    app(&o, path, strlen(path));
    if (t.query.has) {
        *o++ = '?';
        app(&o, t.query.s, t.query.n);
    }
    if (t.frag.has && t.frag.n > 0) {
        *o++ = '#';
        app(&o, t.frag.s, t.frag.n);
    }
    *o = 0;
    free(path);
    return out;
}

static int uri_is_absolute(const char *u) {
    uri_t p;
    uri_split(u, &p);
    return p.scheme.has;
}

/* "file://" + absolute path (characters outside the unreserved set and
 * "/" percent-encoded). */
static char *file_uri(const char *real) {
    size_t n = strlen(real);
    char *u = malloc(8 + n * 3 + 1), *o = u;
    if (!u) return NULL;
    app(&o, "file://", 7);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)real[i];
        if (isalnum(c) || strchr("-._~/!$&'()*+,;=:@", c)) {
            *o++ = (char)c;
        } else {
            o += sprintf(o, "%%%02X", c);
        }
    }
    *o = 0;
    return u;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string; NULL when malformed. */
static char *pct_decode(const char *s, size_t n) {
    char *o = malloc(n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int a = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int b = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (a < 0 || b < 0) {
                free(o);
                return NULL;
            }
            o[k++] = (char)(a * 16 + b);
            i += 2;
        } else {
            o[k++] = s[i];
        }
    }
    o[k] = 0;
    return o;
}

/* ------------------------------------------------------------------ */
/* the set: documents, ids, node map                                   */

static size_t ptr_hash(const void *p, size_t cap) {
    uintptr_t v = (uintptr_t)p;
    v ^= v >> 17;
    v *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return (size_t)(v >> 7) & (cap - 1);
}

static bus_schema_t *map_get(const bus__sset_t *set, const cJSON *key) {
    if (!set->mapcap) return NULL;
    for (size_t i = ptr_hash(key, set->mapcap);; i = (i + 1) & (set->mapcap - 1)) {
        if (!set->map[i].key) return NULL;
        if (set->map[i].key == key) return set->map[i].node;
    }
}

static int map_put(bus__sset_t *set, const cJSON *key, bus_schema_t *node) {
    if ((set->mapn + 1) * 2 > set->mapcap) {
        size_t nc = set->mapcap ? set->mapcap * 2 : 64;
        mapent_t *nm = calloc(nc, sizeof *nm);
        if (!nm) return -1;
        for (size_t i = 0; i < set->mapcap; i++) {
            if (!set->map[i].key) continue;
            size_t j = ptr_hash(set->map[i].key, nc);
            while (nm[j].key) j = (j + 1) & (nc - 1);
            nm[j] = set->map[i];
        }
        free(set->map);
        set->map = nm;
        set->mapcap = nc;
    }
    size_t j = ptr_hash(key, set->mapcap);
    while (set->map[j].key) j = (j + 1) & (set->mapcap - 1);
    set->map[j].key = key;
    set->map[j].node = node;
    set->mapn++;
    return 0;
}

bus__sset_t *bus__sset_new(void) { return calloc(1, sizeof(bus__sset_t)); }

static void node_free(bus_schema_t *n) {
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

void bus__sset_free(bus__sset_t *set) {
    if (!set) return;
    for (size_t i = 0; i < set->nnodes; i++) node_free(set->nodes[i]);
    free(set->nodes);
    for (size_t i = 0; i < set->ndocs; i++) {
        sdoc_t *d = set->docs[i];
        free(d->file);
        free(d->realfile);
        free(d->uri);
        cJSON_Delete(d->json);
        free(d);
    }
    free(set->docs);
    for (size_t i = 0; i < set->nids; i++) {
        free(set->ids[i].uri);
        free(set->ids[i].ptr);
    }
    free(set->ids);
    for (size_t i = 0; i < set->nstrs; i++) free(set->strs[i]);
    free(set->strs);
    for (size_t i = 0; i < set->nscan; i++) {
        free(set->scan[i].path);
        free(set->scan[i].id);
    }
    free(set->scan);
    free(set->map);
    free(set->pending);
    free(set->search_dir);
    free(set);
}

int bus__sset_allow_files(bus__sset_t *set, const char *search_dir) {
    set->allow_files = 1;
    if (search_dir) {
        set->search_dir = strdup(search_dir);
        if (!set->search_dir) return BUS_EINTERNAL;
    }
    return 0;
}

void bus__sset_set_owner(bus__sset_t *set, bus_schema_t *s) { set->owner = s; }

static const sid_t *find_id(const bus__sset_t *set, const char *uri) {
    for (size_t i = 0; i < set->nids; i++)
        if (strcmp(set->ids[i].uri, uri) == 0) return &set->ids[i];
    return NULL;
}

static const char *doc_name(const sdoc_t *d) { return d->file ? d->file : d->uri; }

/* Registers uri -> location. The same uri for another location is an error
 * (1 returned); OOM is -1. */
static int add_id(bus__sset_t *set, const char *uri, const cJSON *json, sdoc_t *doc,
                  const char *base, const char *ptr) {
    const sid_t *old = find_id(set, uri);
    if (old) return old->json == json ? 0 : 1;
    if (grow((void **)&set->ids, &set->capids, set->nids + 1, sizeof *set->ids)) return -1;
    sid_t *e = &set->ids[set->nids];
    e->uri = strdup(uri);
    e->ptr = strdup(ptr);
    if (!e->uri || !e->ptr) {
        free(e->uri);
        free(e->ptr);
        return -1;
    }
    e->json = json;
    e->doc = doc;
    e->base = base;
    set->nids++;
    return 0;
}

/* ------------------------------------------------------------------ */
/* compiling                                                           */

typedef struct {
    bus__sset_t *set;
    sdoc_t *doc;
    char *err;
    size_t errlen;
    char ptr[2048];
    size_t plen;
    int depth;
    int rc; /* first error code */
} cctx_t;

static void cfail(cctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cfail(cctx_t *c, const char *fmt, ...) {
    if (c->rc) return;
    c->rc = BUS_EINVALID;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s: %s: %s", doc_name(c->doc), c->plen ? c->ptr : "(root)", msg);
}

static void coom(cctx_t *c) {
    if (c->rc) return;
    c->rc = BUS_EINTERNAL;
    snprintf(c->err, c->errlen, "%s: out of memory", doc_name(c->doc));
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

static bus_schema_t *compile(cctx_t *c, const cJSON *j, const char *base);

static bus_schema_t *compile_kw(cctx_t *c, const cJSON *j, const char *kw, const char *base) {
    size_t m = cpush(c, kw);
    bus_schema_t *s = compile(c, j, base);
    cpop(c, m);
    return s;
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

static int is_int_value(const cJSON *v) {
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) && floor(v->valuedouble) == v->valuedouble;
}

/* A non-negative integer keyword (maxLength, minItems, ...). */
static long long get_count(cctx_t *c, const cJSON *j, const char *kw) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, kw);
    if (!v) return -1;
    if (!is_int_value(v) || v->valuedouble < 0) {
        size_t m = cpush(c, kw);
        cfail(c, "must be a non-negative integer");
        cpop(c, m);
        return -1;
    }
    return v->valuedouble > 9e18 ? LLONG_MAX : (long long)v->valuedouble;
}

static int get_number(cctx_t *c, const cJSON *j, const char *kw, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, kw);
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) {
        size_t m = cpush(c, kw);
        cfail(c, "must be a number");
        cpop(c, m);
        return 0;
    }
    *out = v->valuedouble;
    return 1;
}

/* allOf / anyOf / oneOf: a non-empty array of schemas. */
static bus_schema_t **compile_list(cctx_t *c, const cJSON *j, const char *kw, const char *base,
                                   size_t *n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, kw);
    *n = 0;
    if (!v) return NULL;
    size_t m = cpush(c, kw);
    int cnt = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || cnt == 0) {
        cfail(c, "must be a non-empty array of schemas");
        cpop(c, m);
        return NULL;
    }
    bus_schema_t **arr = calloc((size_t)cnt, sizeof *arr);
    if (!arr) {
        coom(c);
        cpop(c, m);
        return NULL;
    }
    size_t i = 0;
    for (const cJSON *e = v->child; e && !c->rc; e = e->next, i++) {
        size_t m2 = cpush_idx(c, i);
        arr[i] = compile(c, e, base);
        cpop(c, m2);
    }
    cpop(c, m);
    *n = i;
    return arr;
}

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    {"integer", T_INTEGER}, {"number", T_NUMBER}, {"string", T_STRING}, {"boolean", T_BOOLEAN},
    {"object", T_OBJECT},   {"array", T_ARRAY},   {"null", T_NULL},
};

static unsigned type_bit(const char *s) {
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
        if (strcmp(type_names[i].name, s) == 0) return type_names[i].bit;
    return 0;
}

static int prop_cmp(const void *a, const void *b) {
    return strcmp(((const struct prop *)a)->name, ((const struct prop *)b)->name);
}

static int add_pending(bus__sset_t *set, bus_schema_t *n) {
    if (grow((void **)&set->pending, &set->cappending, set->npending + 1, sizeof *set->pending))
        return -1;
    set->pending[set->npending++] = n;
    return 0;
}

static void compile_object(cctx_t *c, bus_schema_t *n, const cJSON *j, const char *base);

/* FNV-1a over a NUL-terminated key; *len gets its length (one pass for both). */
static inline uint32_t key_hash(const char *k, size_t *len) {
    uint32_t h = 2166136261u;
    const unsigned char *p = (const unsigned char *)k;
    while (*p) {
        h ^= *p++;
        h *= 16777619u;
    }
    *len = (size_t)((const char *)p - k);
    return h;
}

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
            size_t k = key_hash(n->props[i].name, &len) & n->ptab_mask;
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
    bus_schema_t *n = map_get(c->set, j);
    if (n) return n;
    if (!cJSON_IsObject(j) && !cJSON_IsBool(j)) {
        cfail(c, "must be a schema (an object or a boolean)");
        return NULL;
    }
    if (c->depth >= COMPILE_MAX_DEPTH) {
        cfail(c, "schema nested too deeply");
        return NULL;
    }
    n = calloc(1, sizeof *n);
    if (!n || grow((void **)&c->set->nodes, &c->set->capnodes, c->set->nnodes + 1,
                   sizeof *c->set->nodes)) {
        free(n);
        coom(c);
        return NULL;
    }
    c->set->nodes[c->set->nnodes++] = n;
    n->set = c->set;
    n->doc = c->doc;
    n->json = j;
    n->base = base;
    n->max_len = n->min_len = n->max_items = n->min_items = n->max_props = n->min_props = -1;
    n->ptr = strdup(c->ptr);
    if (!n->ptr || map_put(c->set, j, n)) {
        coom(c);
        return NULL;
    }
    if (cJSON_IsBool(j)) {
        n->boolean = cJSON_IsTrue(j) ? 1 : 0;
        return n;
    }
    n->boolean = -1;
    c->depth++;
    compile_object(c, n, j, base);
    c->depth--;
    return c->rc ? NULL : n;
}

static void compile_object(cctx_t *c, bus_schema_t *n, const cJSON *j, const char *base) {
    bus__sset_t *set = c->set;
    const cJSON *v;

    /* $ref: in draft-07 every sibling keyword is ignored, $id included. */
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "$ref"))) {
        size_t m = cpush(c, "$ref");
        if (!cJSON_IsString(v)) {
            cfail(c, "must be a string");
        } else {
            n->ref_raw = v->valuestring;
            n->ref_uri = uri_resolve(base, v->valuestring);
            if (!n->ref_uri || add_pending(set, n)) coom(c);
        }
        cpop(c, m);
        return;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "$schema")) && !cJSON_IsString(v)) {
        size_t m = cpush(c, "$schema");
        cfail(c, "must be a string");
        cpop(c, m);
        return;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "$id"))) {
        size_t m = cpush(c, "$id");
        if (!cJSON_IsString(v)) {
            cfail(c, "must be a string");
            cpop(c, m);
            return;
        }
        char *id = uri_resolve(base, v->valuestring);
        if (!id) {
            coom(c);
            cpop(c, m);
            return;
        }
        char *hash = strchr(id, '#');
        const char *nbase = base;
        if (!hash) {
            nbase = set_keep(set, strdup(id));
            if (!nbase) {
                free(id);
                coom(c);
                cpop(c, m);
                return;
            }
        }
        cpop(c, m);
        int r = add_id(set, id, j, c->doc, nbase, c->ptr);
        if (r < 0) coom(c);
        else if (r > 0) {
            m = cpush(c, "$id");
            cfail(c, "duplicate $id \"%s\"", id);
            cpop(c, m);
        }
        free(id);
        if (c->rc) return;
        base = nbase;
        n->base = base;
    }

    if ((v = cJSON_GetObjectItemCaseSensitive(j, "type"))) {
        size_t m = cpush(c, "type");
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
        if (c->rc) return;
        if (n->types & T_NUMBER) n->types |= T_INTEGER;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "enum"))) {
        if (!cJSON_IsArray(v)) {
            size_t m = cpush(c, "enum");
            cfail(c, "must be an array");
            cpop(c, m);
            return;
        }
        n->enum_ = v;
    }
    n->const_ = cJSON_GetObjectItemCaseSensitive(j, "const");

    if (get_number(c, j, "multipleOf", &n->multiple_of)) {
        n->nflags |= N_MULTIPLE;
        if (!(n->multiple_of > 0)) {
            size_t m = cpush(c, "multipleOf");
            cfail(c, "must be greater than 0");
            cpop(c, m);
        }
    }
    if (get_number(c, j, "maximum", &n->maximum)) n->nflags |= N_MAX;
    if (get_number(c, j, "exclusiveMaximum", &n->ex_maximum)) n->nflags |= N_EXMAX;
    if (get_number(c, j, "minimum", &n->minimum)) n->nflags |= N_MIN;
    if (get_number(c, j, "exclusiveMinimum", &n->ex_minimum)) n->nflags |= N_EXMIN;
    n->max_len = get_count(c, j, "maxLength");
    n->min_len = get_count(c, j, "minLength");
    n->max_items = get_count(c, j, "maxItems");
    n->min_items = get_count(c, j, "minItems");
    n->max_props = get_count(c, j, "maxProperties");
    n->min_props = get_count(c, j, "minProperties");
    if (c->rc) return;

    if ((v = cJSON_GetObjectItemCaseSensitive(j, "pattern"))) {
        size_t m = cpush(c, "pattern");
        char rerr[160];
        if (!cJSON_IsString(v)) cfail(c, "must be a string");
        else if (!(n->pattern = bus__schema_regex_compile(v->valuestring, rerr, sizeof rerr)))
            cfail(c, "%s", rerr);
        else n->pattern_src = v->valuestring;
        cpop(c, m);
        if (c->rc) return;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "format"))) {
        if (!cJSON_IsString(v)) {
            size_t m = cpush(c, "format");
            cfail(c, "must be a string");
            cpop(c, m);
            return;
        }
        n->fmt = (unsigned char)bus__schema_format_lookup(v->valuestring);
    }

    if ((v = cJSON_GetObjectItemCaseSensitive(j, "items"))) {
        if (cJSON_IsArray(v)) {
            size_t m = cpush(c, "items");
            int cnt = cJSON_GetArraySize(v);
            n->tuple_form = 1;
            n->tuple = calloc((size_t)cnt + 1, sizeof *n->tuple);
            if (!n->tuple) coom(c);
            size_t i = 0;
            for (const cJSON *e = v->child; e && !c->rc; e = e->next, i++) {
                size_t m2 = cpush_idx(c, i);
                n->tuple[i] = compile(c, e, base);
                cpop(c, m2);
            }
            n->ntuple = i;
            cpop(c, m);
        } else {
            n->items = compile_kw(c, v, "items", base);
        }
        if (c->rc) return;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "additionalItems")))
        n->add_items = compile_kw(c, v, "additionalItems", base);
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "uniqueItems"))) {
        if (!cJSON_IsBool(v)) {
            size_t m = cpush(c, "uniqueItems");
            cfail(c, "must be a boolean");
            cpop(c, m);
        }
        n->unique = cJSON_IsTrue(v);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "contains")))
        n->contains = compile_kw(c, v, "contains", base);
    if (c->rc) return;

    size_t m;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "required"))) {
        const char *what = "must be an array of unique strings";
        if ((n->required = kw_members(c, v, "required", 1, what, sizeof *n->required, &m)))
            for (const cJSON *e = v->child; e && !c->rc; e = e->next) {
                if (!cJSON_IsString(e)) {
                    cfail(c, "%s", what);
                    break;
                }
                for (size_t k = 0; k < n->nrequired; k++)
                    if (strcmp(n->required[k], e->valuestring) == 0)
                        cfail(c, "\"%s\" is listed twice", e->valuestring);
                n->required[n->nrequired++] = e->valuestring;
            }
        cpop(c, m);
        if (c->rc) return;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "properties"))) {
        if ((n->props = kw_members(c, v, "properties", 0, "must be an object of schemas", sizeof *n->props, &m))) {
            for (const cJSON *e = v->child; e && !c->rc; e = e->next) {
                n->props[n->nprops].name = e->string;
                n->props[n->nprops].s = compile_kw(c, e, e->string, base);
                n->nprops++;
            }
            if (!c->rc) qsort(n->props, n->nprops, sizeof *n->props, prop_cmp);
        }
        cpop(c, m);
        if (c->rc) return;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "patternProperties"))) {
        if ((n->pprops = kw_members(c, v, "patternProperties", 0, "must be an object of schemas", sizeof *n->pprops,
                                    &m)))
            for (const cJSON *e = v->child; e && !c->rc; e = e->next) {
                char rerr[160];
                size_t m2 = cpush(c, e->string);
                pcre2_code *re = bus__schema_regex_compile(e->string, rerr, sizeof rerr);
                if (!re) {
                    cfail(c, "%s", rerr);
                } else {
                    struct pprop *p = &n->pprops[n->npprops++];
                    p->re = re;
                    p->src = e->string;
                    p->s = compile(c, e, base);
                }
                cpop(c, m2);
            }
        cpop(c, m);
        if (c->rc) return;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "additionalProperties")))
        n->add_props = compile_kw(c, v, "additionalProperties", base);
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "dependencies"))) {
        if ((n->deps = kw_members(c, v, "dependencies", 0, "must be an object", sizeof *n->deps, &m)))
            for (const cJSON *e = v->child; e && !c->rc; e = e->next) {
                struct dep *d = &n->deps[n->ndeps++];
                d->name = e->string;
                if (cJSON_IsArray(e)) {
                    size_t m2 = cpush(c, e->string);
                    for (const cJSON *x = e->child; x; x = x->next)
                        if (!cJSON_IsString(x)) {
                            cfail(c, "must be a schema or an array of strings");
                            break;
                        }
                    cpop(c, m2);
                    d->names = e;
                } else {
                    d->s = compile_kw(c, e, e->string, base);
                }
            }
        cpop(c, m);
        if (c->rc) return;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "propertyNames")))
        n->prop_names = compile_kw(c, v, "propertyNames", base);
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "if"))) n->if_ = compile_kw(c, v, "if", base);
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "then"))) n->then_ = compile_kw(c, v, "then", base);
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "else"))) n->else_ = compile_kw(c, v, "else", base);
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "not"))) n->not_ = compile_kw(c, v, "not", base);
    if (c->rc) return;
    if (index_props(n)) {
        coom(c);
        return;
    }
    n->all_of = compile_list(c, j, "allOf", base, &n->nall);
    n->any_of = compile_list(c, j, "anyOf", base, &n->nany);
    n->one_of = compile_list(c, j, "oneOf", base, &n->none);
    if (c->rc) return;

    /* definitions: compiled so they are checked and can be $ref targets. */
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "definitions"))) {
        size_t m = cpush(c, "definitions");
        if (!cJSON_IsObject(v)) cfail(c, "must be an object of schemas");
        for (const cJSON *e = v->child; e && !c->rc && cJSON_IsObject(v); e = e->next)
            compile_kw(c, e, e->string, base);
        cpop(c, m);
    }
}

/* ------------------------------------------------------------------ */
/* adding documents, linking                                           */

static sdoc_t *find_doc_by_real(const bus__sset_t *set, const char *real) {
    for (size_t i = 0; i < set->ndocs; i++)
        if (set->docs[i]->realfile && strcmp(set->docs[i]->realfile, real) == 0) return set->docs[i];
    return NULL;
}

int bus__sset_add(bus__sset_t *set, cJSON *json, const char *file, const char *base_uri,
                  bus_schema_t **root, char *err, size_t errlen) {
    sdoc_t *d = calloc(1, sizeof *d);
    if (!d || grow((void **)&set->docs, &set->capdocs, set->ndocs + 1, sizeof *set->docs)) {
        free(d);
        cJSON_Delete(json);
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    set->docs[set->ndocs++] = d;
    d->json = json;
    if (file) {
        d->file = strdup(file);
        d->realfile = realpath(file, NULL);
        if (!d->realfile) d->realfile = strdup(file);
        d->uri = file_uri(d->realfile ? d->realfile : file);
    } else {
        d->uri = strdup(base_uri ? base_uri : "urn:bus:schema");
    }
    if ((file && (!d->file || !d->realfile)) || !d->uri) {
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    /* a retrieval URI with a fragment would be odd; keep only the resource part */
    char *h = strchr(d->uri, '#');
    if (h) *h = 0;
    int r = add_id(set, d->uri, json, d, d->uri, "");
    if (r < 0) goto oom;
    if (r > 0) {
        snprintf(err, errlen, "%s: (root): another document already has the URI \"%s\"", doc_name(d),
                 d->uri);
        return BUS_EINVALID;
    }
    cctx_t c;
    memset(&c, 0, sizeof c);
    c.set = set;
    c.doc = d;
    c.err = err;
    c.errlen = errlen;
    bus_schema_t *n = compile(&c, json, d->uri);
    if (c.rc) return c.rc;
    /* the document's own URI resolves with the base its root declares ($id) */
    for (size_t i = 0; i < set->nids; i++)
        if (set->ids[i].json == json) set->ids[i].base = n->base;
    if (root) *root = n;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return BUS_EINTERNAL;
}

/* Follows a JSON pointer (already percent-decoded) from `at`, tracking the
 * base URI through `$id`s on the way. NULL when the location does not exist. */
static const cJSON *follow_pointer(bus__sset_t *set, const cJSON *at, const char *ptr,
                                   const char **base) {
    const char *p = ptr;
    while (at && *p == '/') {
        p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *tok = malloc(n + 1);
        if (!tok) return NULL;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '~' && i + 1 < n && (p[i + 1] == '0' || p[i + 1] == '1')) {
                tok[k++] = p[i + 1] == '0' ? '~' : '/';
                i++;
            } else {
                tok[k++] = p[i];
            }
        }
        tok[k] = 0;
        if (cJSON_IsArray(at)) {
            char *end;
            errno = 0;
            long idx = strtol(tok, &end, 10);
            if (*tok < '0' || *tok > '9' || *end || errno || (tok[0] == '0' && tok[1]) || idx < 0)
                at = NULL;
            else
                at = cJSON_GetArrayItem(at, (int)(idx > INT_MAX ? -1 : idx));
        } else if (cJSON_IsObject(at)) {
            at = cJSON_GetObjectItemCaseSensitive(at, tok);
        } else {
            at = NULL;
        }
        free(tok);
        p += n;
        if (at && cJSON_IsObject(at)) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(at, "$id");
            if (cJSON_IsString(id) && !cJSON_GetObjectItemCaseSensitive(at, "$ref")) {
                char *nb = uri_resolve(*base, id->valuestring);
                if (nb) {
                    char *h = strchr(nb, '#');
                    if (h) *h = 0;
                    const char *kept = set_keep(set, nb);
                    if (kept) *base = kept;
                }
            }
        }
    }
    return *p ? NULL : at;
}

static int load_doc_file(bus__sset_t *set, const char *path, sdoc_t **out, char *err,
                         size_t errlen) {
    size_t len = 0;
    char *text = bus__read_file(path, &len);
    if (!text) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno ? errno : EIO));
        return BUS_ENOT_FOUND;
    }
    char perr[128];
    cJSON *j = bus__schema_parse_json(text, len, perr, sizeof perr);
    free(text);
    if (!j) {
        snprintf(err, errlen, "%s: %s", path, perr);
        return BUS_EINVALID;
    }
    int rc = bus__sset_add(set, j, path, NULL, NULL, err, errlen);
    if (rc) return rc;
    *out = set->docs[set->ndocs - 1];
    return 0;
}

static int has_json_suffix(const char *name) {
    size_t n = strlen(name);
    return n > 5 && strcmp(name + n - 5, ".json") == 0;
}

/* Lists *.json under dir (depth-limited) with their root $id. */
static void scan_dir(bus__sset_t *set, const char *dir, int depth) {
    if (depth > 6 || set->nscan > 5000) return;
    DIR *dh = opendir(dir);
    if (!dh) return;
    struct dirent *de;
    while ((de = readdir(dh))) {
        if (de->d_name[0] == '.') continue;
        size_t n = strlen(dir) + strlen(de->d_name) + 2;
        char *p = malloc(n);
        if (!p) break;
        snprintf(p, n, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            scan_dir(set, p, depth + 1);
            free(p);
            continue;
        }
        if (!has_json_suffix(de->d_name) ||
            grow((void **)&set->scan, &set->capscan, set->nscan + 1, sizeof *set->scan)) {
            free(p);
            continue;
        }
        char *id = NULL;
        size_t len;
        char *text = bus__read_file(p, &len);
        if (text) {
            char perr[128];
            cJSON *j = bus__schema_parse_json(text, len, perr, sizeof perr);
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "$id");
            if (cJSON_IsString(v)) {
                char *real = realpath(p, NULL);
                char *fu = real ? file_uri(real) : NULL;
                id = uri_resolve(fu, v->valuestring);
                if (id && strchr(id, '#')) *strchr(id, '#') = 0;
                free(fu);
                free(real);
            }
            cJSON_Delete(j);
            free(text);
        }
        set->scan[set->nscan].path = p;
        set->scan[set->nscan].id = id;
        set->nscan++;
    }
    closedir(dh);
}

/* Finds (loading if allowed) the document for the absolute URI `abs`
 * referenced by node n. Returns the id entry or NULL; rc < 0 on hard error. */
static const sid_t *locate_doc(bus__sset_t *set, bus_schema_t *n, const char *abs, int *rc,
                               char *err, size_t errlen) {
    const sid_t *t = find_id(set, abs);
    if (t) return t;
    char *cand[2] = {NULL, NULL};
    if (strncmp(abs, "file://", 7) == 0) cand[0] = pct_decode(abs + 7, strlen(abs + 7));
    if (n->ref_raw && n->doc->realfile) {
        const char *h = strchr(n->ref_raw, '#');
        size_t rl = h ? (size_t)(h - n->ref_raw) : strlen(n->ref_raw);
        if (rl > 0 && !uri_is_absolute(n->ref_raw) && n->ref_raw[0] != '/') {
            char *rel = pct_decode(n->ref_raw, rl);
            const char *slash = strrchr(n->doc->realfile, '/');
            size_t dl = slash ? (size_t)(slash - n->doc->realfile) : 0;
            if (rel) {
                size_t sz = dl + strlen(rel) + 3;
                cand[1] = malloc(sz);
                if (cand[1]) snprintf(cand[1], sz, "%.*s/%s", (int)dl, n->doc->realfile, rel);
            }
            free(rel);
        }
    }
    sdoc_t *d = NULL;
    for (int i = 0; i < 2 && !d && !*rc; i++) {
        if (!cand[i]) continue;
        char *real = realpath(cand[i], NULL);
        if (real) {
            d = find_doc_by_real(set, real);
            if (!d && set->allow_files) *rc = load_doc_file(set, real, &d, err, errlen);
            free(real);
        }
    }
    free(cand[0]);
    free(cand[1]);
    if (!d && !*rc && set->allow_files && set->search_dir) {
        if (!set->scanned) {
            set->scanned = 1;
            scan_dir(set, set->search_dir, 0);
        }
        for (size_t i = 0; i < set->nscan && !d && !*rc; i++) {
            if (!set->scan[i].id || strcmp(set->scan[i].id, abs) != 0) continue;
            char *real = realpath(set->scan[i].path, NULL);
            if (!real) continue;
            d = find_doc_by_real(set, real);
            if (!d) *rc = load_doc_file(set, real, &d, err, errlen);
            free(real);
        }
    }
    if (*rc || !d) return NULL;
    t = find_id(set, abs);
    if (t) return t;
    /* known by another URI (its file URI or its own $id): alias it */
    int r = add_id(set, abs, d->json, d, find_id(set, d->uri) ? find_id(set, d->uri)->base : d->uri, "");
    if (r < 0) {
        *rc = BUS_EINTERNAL;
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return find_id(set, abs);
}

static int resolve_one(bus__sset_t *set, bus_schema_t *n, char *err, size_t errlen) {
    const char *full = n->ref_uri;
    const char *hash = strchr(full, '#');
    int rc = 0;
    const sid_t *t = find_id(set, full); /* exact: a whole document or an #anchor */
    const char *frag = "";
    char *abs = NULL;
    if (!t) {
        abs = xstrndup(full, hash ? (size_t)(hash - full) : strlen(full));
        if (!abs) return BUS_EINTERNAL;
        t = locate_doc(set, n, abs, &rc, err, errlen);
        if (rc) {
            free(abs);
            return rc;
        }
        frag = hash ? hash + 1 : "";
    }
    if (!t) {
        snprintf(err, errlen, "%s: %s/$ref: cannot resolve \"%s\" (%s)", doc_name(n->doc), n->ptr,
                 n->ref_raw, abs ? abs : full);
        free(abs);
        return BUS_EINVALID;
    }
    free(abs);
    const cJSON *at = t->json;
    const char *base = t->base;
    char *dptr = NULL;
    if (*frag) {
        dptr = pct_decode(frag, strlen(frag));
        if (!dptr || dptr[0] != '/') {
            snprintf(err, errlen, "%s: %s/$ref: \"%s\": no such anchor or pointer", doc_name(n->doc),
                     n->ptr, n->ref_raw);
            free(dptr);
            return BUS_EINVALID;
        }
        at = follow_pointer(set, at, dptr, &base);
        if (!at) {
            snprintf(err, errlen, "%s: %s/$ref: \"%s\": the pointer leads nowhere", doc_name(n->doc),
                     n->ptr, n->ref_raw);
            free(dptr);
            return BUS_EINVALID;
        }
    }
    bus_schema_t *target = map_get(set, at);
    if (!target) {
        cctx_t c;
        memset(&c, 0, sizeof c);
        c.set = set;
        c.doc = t->doc;
        c.err = err;
        c.errlen = errlen;
        snprintf(c.ptr, sizeof c.ptr, "%s%s", t->ptr, dptr ? dptr : "");
        c.plen = strlen(c.ptr);
        target = compile(&c, at, base);
        if (c.rc) {
            free(dptr);
            return c.rc;
        }
    }
    free(dptr);
    n->ref = target;
    return 0;
}

/* Depth-first search over the edges that keep the same instance location;
 * a back edge is a loop validation could never leave. */
static int loop_check(bus_schema_t *n, int depth, char *err, size_t errlen) {
    if (!n || n->boolean >= 0) return 0;
    if (n->visit == 2) return 0;
    if (n->visit == 1 || depth > 5000) {
        snprintf(err, errlen, "%s: %s: %s", doc_name(n->doc), n->ptr[0] ? n->ptr : "(root)",
                 n->visit == 1 ? "$ref loop that never descends into the instance"
                               : "chain of $ref/allOf/anyOf/oneOf/not/if is too long");
        return BUS_EINVALID;
    }
    n->visit = 1;
    int rc = 0;
    /* then/else without if are never evaluated: not edges */
    bus_schema_t *one[] = {n->ref, n->not_, n->if_, n->if_ ? n->then_ : NULL, n->if_ ? n->else_ : NULL};
    for (size_t i = 0; i < 5 && !rc; i++) rc = loop_check(one[i], depth + 1, err, errlen);
    for (size_t i = 0; i < n->nall && !rc; i++) rc = loop_check(n->all_of[i], depth + 1, err, errlen);
    for (size_t i = 0; i < n->nany && !rc; i++) rc = loop_check(n->any_of[i], depth + 1, err, errlen);
    for (size_t i = 0; i < n->none && !rc; i++) rc = loop_check(n->one_of[i], depth + 1, err, errlen);
    for (size_t i = 0; i < n->ndeps && !rc; i++) rc = loop_check(n->deps[i].s, depth + 1, err, errlen);
    n->visit = 2;
    return rc;
}

int bus__sset_link(bus__sset_t *set, char *err, size_t errlen) {
    for (; set->linked < set->npending; set->linked++) {
        int rc = resolve_one(set, set->pending[set->linked], err, errlen);
        if (rc) return rc;
    }
    for (size_t i = 0; i < set->nnodes; i++) set->nodes[i]->visit = 0;
    for (size_t i = 0; i < set->nnodes; i++) {
        int rc = loop_check(set->nodes[i], 0, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

int bus__sset_node_at(bus__sset_t *set, bus_schema_t *root, const char *pointer,
                      bus_schema_t **out, char *err, size_t errlen) {
    *out = NULL;
    const char *base = root->base;
    const cJSON *at = follow_pointer(set, root->json, pointer, &base);
    if (!at) return 0;
    bus_schema_t *n = map_get(set, at);
    if (!n) {
        cctx_t c;
        memset(&c, 0, sizeof c);
        c.set = set;
        c.doc = root->doc;
        c.err = err;
        c.errlen = errlen;
        snprintf(c.ptr, sizeof c.ptr, "%s%s", root->ptr, pointer);
        c.plen = strlen(c.ptr);
        n = compile(&c, at, base);
        if (c.rc) return c.rc;
        int rc = bus__sset_link(set, err, errlen);
        if (rc) return rc;
    }
    *out = n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* public: compile one schema                                          */

int bus_schema_compile(const cJSON *doc, const char *base_uri, bus_schema_t **out, char *err,
                       size_t errlen) {
    *out = NULL;
    if (!doc) {
        snprintf(err, errlen, "(root): no schema");
        return BUS_EINVALID;
    }
    bus__sset_t *set = bus__sset_new();
    cJSON *copy = cJSON_Duplicate(doc, 1);
    if (!set || !copy) {
        cJSON_Delete(copy);
        bus__sset_free(set);
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    bus_schema_t *root = NULL;
    int rc = bus__sset_add(set, copy, NULL, base_uri, &root, err, errlen);
    if (!rc) rc = bus__sset_link(set, err, errlen);
    if (rc) {
        bus__sset_free(set);
        return rc;
    }
    set->owner = root;
    *out = root;
    return 0;
}

int bus_schema_load_file(const char *path, bus_schema_t **out, char *err, size_t errlen) {
    *out = NULL;
    bus__sset_t *set = bus__sset_new();
    if (!set) {
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    /* search the file's directory, or schemas/ when the file is in events/ or rpc/ */
    char *dir = strdup(path);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (dir) {
        if (slash) *slash = 0;
        else strcpy(dir, ".");
        const char *b = strrchr(dir, '/');
        b = b ? b + 1 : dir;
        if (strcmp(b, "events") == 0 || strcmp(b, "rpc") == 0) {
            char *s2 = strrchr(dir, '/');
            if (s2) *s2 = 0;
            else strcpy(dir, ".");
        }
    }
    int rc = dir ? bus__sset_allow_files(set, dir) : BUS_EINTERNAL;
    free(dir);
    sdoc_t *d = NULL;
    if (!rc) rc = load_doc_file(set, path, &d, err, errlen);
    else snprintf(err, errlen, "out of memory");
    if (!rc) rc = bus__sset_link(set, err, errlen);
    if (rc) {
        bus__sset_free(set);
        return rc;
    }
    bus_schema_t *root = map_get(set, d->json);
    set->owner = root;
    *out = root;
    return 0;
}

void bus_schema_free(bus_schema_t *s) {
    if (!s || s->set->owner != s) return;
    bus__sset_free(s->set);
}

const cJSON *bus_schema_json(const bus_schema_t *s) { return s ? s->json : NULL; }
const char *bus_schema_uri(const bus_schema_t *s) { return s ? s->base : NULL; }

/* ------------------------------------------------------------------ */
/* validation                                                          */

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
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) {
        if (!(mask & type_names[i].bit)) continue;
        n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", first ? "" : " or ", type_names[i].name);
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

static const struct prop *find_prop(const bus_schema_t *s, const char *k, uint32_t h) {
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
            uint32_t h = key_hash(k, &klen);
            int matched = 0;
            if (s->nprops) {
                const struct prop *p = find_prop(s, k, h);
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
        const struct dep *d = &s->deps[i];
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
