/* JSON Schema draft-07 references: URIs (RFC 3986 resolution, file URIs),
 * the URIs a document set knows (`$id`s, file URIs, `#anchor`s), JSON
 * pointers, and linking: every `$ref` recorded while compiling
 * (bus__sset_defer_ref) is resolved to a node, compiling the target location
 * if it was not a schema location yet, or loading a sibling file when the set
 * allows it; finally reference loops that never move to a deeper instance
 * location ({"$ref":"#"} or {"allOf":[{"$ref":"#"}]}) are refused, since
 * validation could never leave them. See schema_internal.h.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bus/error.h"
#include "schema_internal.h"

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

static void copy_part(char *dst, upart_t part) {
    memcpy(dst, part.s, part.n);
    dst[part.n] = 0;
}

/* An empty fragment ("x.json#") is dropped: it names the same resource. */
char *bus__uri_resolve(const char *base, const char *ref) {
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
    t.scheme = r.scheme.has ? r.scheme : b.scheme;
    if (r.scheme.has || r.auth.has) { /* the reference names its own authority */
        t.auth = r.auth;
        copy_part(path, r.path);
        remove_dots(path);
        t.query = r.query;
    } else {
        t.auth = b.auth;
        if (r.path.n == 0) {
            copy_part(path, b.path);
            t.query = r.query.has ? r.query : b.query;
        } else {
            if (r.path.s[0] == '/') {
                copy_part(path, r.path);
            } else { /* merge: the base path up to its last '/', then the reference's */
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

/* Characters outside the unreserved set and "/" are percent-encoded. */
char *bus__file_uri(const char *real) {
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
/* the URIs a set knows: file URIs, $ids, #anchors; pending $refs      */

const bus__sid_t *bus__sset_find_id(const bus__sset_t *set, const char *uri) {
    for (size_t i = 0; i < set->nids; i++)
        if (strcmp(set->ids[i].uri, uri) == 0) return &set->ids[i];
    return NULL;
}

int bus__sset_add_id(bus__sset_t *set, const char *uri, const cJSON *json, bus__sdoc_t *doc,
                     const char *base, const char *ptr) {
    const bus__sid_t *old = bus__sset_find_id(set, uri);
    if (old) return old->json == json ? 0 : 1;
    if (bus__schema_grow((void **)&set->ids, &set->capids, set->nids + 1, sizeof *set->ids)) return -1;
    bus__sid_t *e = &set->ids[set->nids];
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

int bus__sset_declare_id(bus__sset_t *set, bus_schema_t *n, const char *id_ref, char **dup) {
    char *id = bus__uri_resolve(n->base, id_ref);
    if (!id) return -1;
    const char *base = n->base;
    if (!strchr(id, '#')) { /* not an anchor: the base URI of n and what it contains */
        base = bus__sset_keep(set, strdup(id));
        if (!base) {
            free(id);
            return -1;
        }
    }
    int r = bus__sset_add_id(set, id, n->json, n->doc, base, n->ptr);
    if (r == 0) n->base = base;
    if (r > 0) *dup = id;
    else free(id);
    return r;
}

int bus__sset_defer_ref(bus__sset_t *set, bus_schema_t *n, const char *ref) {
    n->ref_raw = ref;
    n->ref_uri = bus__uri_resolve(n->base, ref);
    if (!n->ref_uri ||
        bus__schema_grow((void **)&set->pending, &set->cappending, set->npending + 1, sizeof *set->pending))
        return -1;
    set->pending[set->npending++] = n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* JSON pointers, loading referenced documents, linking                */

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
                char *nb = bus__uri_resolve(*base, id->valuestring);
                if (nb) {
                    char *h = strchr(nb, '#');
                    if (h) *h = 0;
                    const char *kept = bus__sset_keep(set, nb);
                    if (kept) *base = kept;
                }
            }
        }
    }
    return *p ? NULL : at;
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
            bus__schema_grow((void **)&set->scan, &set->capscan, set->nscan + 1, sizeof *set->scan)) {
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
                char *fu = real ? bus__file_uri(real) : NULL;
                id = bus__uri_resolve(fu, v->valuestring);
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

static bus__sdoc_t *find_doc_by_real(const bus__sset_t *set, const char *real) {
    for (size_t i = 0; i < set->ndocs; i++)
        if (set->docs[i]->realfile && strcmp(set->docs[i]->realfile, real) == 0) return set->docs[i];
    return NULL;
}

/* The document of the file at `path`: one of the set's, else loaded when
 * the set allows files (*rc gets a load's failure). NULL when there is none. */
static bus__sdoc_t *doc_for_file(bus__sset_t *set, const char *path, int *rc, char *err, size_t errlen) {
    char *real = realpath(path, NULL);
    if (!real) return NULL;
    bus__sdoc_t *d = find_doc_by_real(set, real);
    if (!d && set->allow_files) {
        bus_schema_t *root = NULL;
        *rc = bus__sset_add_file(set, real, &root, err, errlen);
        if (root) d = root->doc;
    }
    free(real);
    return d;
}

/* Finds (loading if allowed) the document for the absolute URI `abs`
 * referenced by node n. Returns the id entry or NULL; rc < 0 on hard error. */
static const bus__sid_t *locate_doc(bus__sset_t *set, bus_schema_t *n, const char *abs, int *rc, char *err,
                                    size_t errlen) {
    const bus__sid_t *t = bus__sset_find_id(set, abs);
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
    bus__sdoc_t *d = NULL;
    for (int i = 0; i < 2 && !d && !*rc; i++)
        if (cand[i]) d = doc_for_file(set, cand[i], rc, err, errlen);
    free(cand[0]);
    free(cand[1]);
    if (!d && !*rc && set->allow_files && set->search_dir) {
        if (!set->scanned) {
            set->scanned = 1;
            scan_dir(set, set->search_dir, 0);
        }
        for (size_t i = 0; i < set->nscan && !d && !*rc; i++)
            if (set->scan[i].id && strcmp(set->scan[i].id, abs) == 0)
                d = doc_for_file(set, set->scan[i].path, rc, err, errlen);
    }
    if (*rc || !d) return NULL;
    t = bus__sset_find_id(set, abs);
    if (t) return t;
    /* known by another URI (its file URI or its own $id): alias it */
    const bus__sid_t *self = bus__sset_find_id(set, d->uri);
    int r = bus__sset_add_id(set, abs, d->json, d, self ? self->base : d->uri, "");
    if (r < 0) {
        *rc = BUS_EINTERNAL;
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return bus__sset_find_id(set, abs);
}

static int resolve_one(bus__sset_t *set, bus_schema_t *n, char *err, size_t errlen) {
    const char *full = n->ref_uri;
    const char *hash = strchr(full, '#');
    int rc = 0;
    const bus__sid_t *t = bus__sset_find_id(set, full); /* exact: a whole document or an #anchor */
    const char *frag = "";
    char *abs = NULL;
    if (!t) {
        abs = strndup(full, hash ? (size_t)(hash - full) : strlen(full));
        if (!abs) return BUS_EINTERNAL;
        t = locate_doc(set, n, abs, &rc, err, errlen);
        if (rc) {
            free(abs);
            return rc;
        }
        frag = hash ? hash + 1 : "";
    }
    if (!t) {
        snprintf(err, errlen, "%s: %s/$ref: cannot resolve \"%s\" (%s)", bus__sdoc_name(n->doc), n->ptr,
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
            snprintf(err, errlen, "%s: %s/$ref: \"%s\": no such anchor or pointer", bus__sdoc_name(n->doc),
                     n->ptr, n->ref_raw);
            free(dptr);
            return BUS_EINVALID;
        }
        at = follow_pointer(set, at, dptr, &base);
        if (!at) {
            snprintf(err, errlen, "%s: %s/$ref: \"%s\": the pointer leads nowhere", bus__sdoc_name(n->doc),
                     n->ptr, n->ref_raw);
            free(dptr);
            return BUS_EINVALID;
        }
    }
    /* compiled now when it was not a schema location yet */
    rc = bus__schema_compile_at(set, t->doc, at, base, t->ptr, dptr, &n->ref, err, errlen);
    free(dptr);
    return rc;
}

/* Depth-first search over the edges that keep the same instance location;
 * a back edge is a loop validation could never leave. */
static int loop_check(bus_schema_t *n, int depth, char *err, size_t errlen) {
    if (!n || n->boolean >= 0) return 0;
    if (n->visit == 2) return 0;
    if (n->visit == 1 || depth > 5000) {
        snprintf(err, errlen, "%s: %s: %s", bus__sdoc_name(n->doc), n->ptr[0] ? n->ptr : "(root)",
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
    bus_schema_t *n = bus__sset_node(set, at);
    if (!n) {
        int rc = bus__schema_compile_at(set, root->doc, at, base, root->ptr, pointer, &n, err, errlen);
        if (!rc) rc = bus__sset_link(set, err, errlen);
        if (rc) return rc;
    }
    *out = n;
    return 0;
}

