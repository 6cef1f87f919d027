/* JSON Schema draft-07: the document set and the public entry points of
 * compiling (bus_schema_compile, bus_schema_load_file, bus_schema_free).
 *
 * A document set (bus__sset_t, schema_internal.h) owns the parsed
 * documents, every compiled node, and an index of the URIs it knows (file
 * URIs, `$id`s, location-independent `#anchor` ids). Adding a document
 * compiles its root (schema_compile.c); linking resolves the `$ref`s
 * (schema_ref.c); validation only reads the nodes (schema_validate.c).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/envelope.h"
#include "bus/error.h"
#include "schema_internal.h"

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

int bus__schema_grow(void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 8;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

char *bus__sset_keep(bus__sset_t *set, char *s) {
    if (!s) return NULL;
    if (bus__schema_grow((void **)&set->strs, &set->capstrs, set->nstrs + 1, sizeof *set->strs)) {
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
/* the set: documents, nodes                                           */

static size_t ptr_hash(const void *p, size_t cap) {
    uintptr_t v = (uintptr_t)p;
    v ^= v >> 17;
    v *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return (size_t)(v >> 7) & (cap - 1);
}

bus_schema_t *bus__sset_node(const bus__sset_t *set, const cJSON *key) {
    if (!set->mapcap) return NULL;
    for (size_t i = ptr_hash(key, set->mapcap);; i = (i + 1) & (set->mapcap - 1)) {
        if (!set->map[i].key) return NULL;
        if (set->map[i].key == key) return set->map[i].node;
    }
}

static int map_put(bus__sset_t *set, const cJSON *key, bus_schema_t *node) {
    if ((set->mapn + 1) * 2 > set->mapcap) {
        size_t nc = set->mapcap ? set->mapcap * 2 : 64;
        bus__snode_ent_t *nm = calloc(nc, sizeof *nm);
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

bus_schema_t *bus__sset_new_node(bus__sset_t *set, const cJSON *json) {
    bus_schema_t *n = calloc(1, sizeof *n);
    if (!n || bus__schema_grow((void **)&set->nodes, &set->capnodes, set->nnodes + 1, sizeof *set->nodes)) {
        free(n);
        return NULL;
    }
    set->nodes[set->nnodes++] = n; /* the set frees it from now on */
    n->set = set;
    n->json = json;
    return map_put(set, json, n) ? NULL : n;
}

bus__sset_t *bus__sset_new(void) { return calloc(1, sizeof(bus__sset_t)); }

void bus__sset_free(bus__sset_t *set) {
    if (!set) return;
    for (size_t i = 0; i < set->nnodes; i++) bus__schema_node_free(set->nodes[i]);
    free(set->nodes);
    for (size_t i = 0; i < set->ndocs; i++) {
        bus__sdoc_t *d = set->docs[i];
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

const char *bus__sdoc_name(const bus__sdoc_t *d) { return d->file ? d->file : d->uri; }

int bus__sset_add(bus__sset_t *set, cJSON *json, const char *file, const char *base_uri,
                  bus_schema_t **root, char *err, size_t errlen) {
    bus__sdoc_t *d = calloc(1, sizeof *d);
    if (!d || bus__schema_grow((void **)&set->docs, &set->capdocs, set->ndocs + 1, sizeof *set->docs)) {
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
        d->uri = bus__file_uri(d->realfile ? d->realfile : file);
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
    int r = bus__sset_add_id(set, d->uri, json, d, d->uri, "");
    if (r < 0) goto oom;
    if (r > 0) {
        snprintf(err, errlen, "%s: (root): another document already has the URI \"%s\"", bus__sdoc_name(d),
                 d->uri);
        return BUS_EINVALID;
    }
    bus_schema_t *n = NULL;
    int rc = bus__schema_compile_at(set, d, json, d->uri, "", NULL, &n, err, errlen);
    if (rc) return rc;
    /* the document's own URI resolves with the base its root declares ($id) */
    for (size_t i = 0; i < set->nids; i++)
        if (set->ids[i].json == json) set->ids[i].base = n->base;
    if (root) *root = n;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return BUS_EINTERNAL;
}

int bus__sset_add_file(bus__sset_t *set, const char *path, bus_schema_t **root, char *err, size_t errlen) {
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
    return bus__sset_add(set, j, path, NULL, root, err, errlen);
}

/* ------------------------------------------------------------------ */
/* public: compile one schema                                          */

/* The end of bus_schema_compile/bus_schema_load_file: after `rc` (the
 * adding of the root document), links the set and makes `root` its owner
 * handle in *out; frees the set on failure. */
static int link_and_own(bus__sset_t *set, bus_schema_t *root, int rc, bus_schema_t **out, char *err,
                        size_t errlen) {
    if (!rc) rc = bus__sset_link(set, err, errlen);
    if (rc) {
        bus__sset_free(set);
        return rc;
    }
    bus__sset_set_owner(set, root);
    *out = root;
    return 0;
}

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
    return link_and_own(set, root, rc, out, err, errlen);
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
    bus_schema_t *root = NULL;
    if (!rc) rc = bus__sset_add_file(set, path, &root, err, errlen);
    else snprintf(err, errlen, "out of memory");
    return link_and_own(set, root, rc, out, err, errlen);
}

void bus_schema_free(bus_schema_t *s) {
    if (!s || s->set->owner != s) return;
    bus__sset_free(s->set);
}

const cJSON *bus_schema_json(const bus_schema_t *s) { return s ? s->json : NULL; }
const char *bus_schema_uri(const bus_schema_t *s) { return s ? s->base : NULL; }

