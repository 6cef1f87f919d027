/* The registry of schemas/: every *.json under a directory, compiled into
 * one document set so `$ref`s between files resolve, with look-ups of event
 * schemas by type and RPC params/result schemas by service and method.
 *
 * Layout (docs/ARCHITECTURE.md, "Wire contract": Schemas):
 *   events/<type>.json              schema of the `data` of events of <type>
 *   rpc/<service>.<method>.json     definitions.params / definitions.result
 *   anything else (common.json...)  only a `$ref` target
 * Files are loaded in sorted path order so errors and iteration are stable.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bus/error.h"
#include "schema_internal.h"

typedef struct {
    char *type;
    bus_schema_t *schema;
} revent_t;

typedef struct {
    char *service;
    char *method;
    bus_schema_t *root, *params, *result;
} rmethod_t;

struct bus_schema_registry {
    bus__sset_t *set;
    revent_t *events;
    size_t nevents;
    rmethod_t *methods;
    size_t nmethods;
};

typedef struct {
    char **v;
    size_t n, cap;
} strvec_t;

static int vec_push(strvec_t *v, char *s) {
    if (!s) return -1;
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 32;
        char **p = realloc(v->v, nc * sizeof *p);
        if (!p) {
            free(s);
            return -1;
        }
        v->v = p;
        v->cap = nc;
    }
    v->v[v->n++] = s;
    return 0;
}

/* Collects the relative paths of *.json files under root/rel. */
static int walk(const char *root, const char *rel, strvec_t *out, int depth) {
    if (depth > 16) return 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d) return depth == 0 ? BUS_ENOT_FOUND : 0;
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char sub[4096], full[8192];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
        snprintf(full, sizeof full, "%s/%s", root, sub);
        struct stat st;
        if (stat(full, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            rc = walk(root, sub, out, depth + 1);
            continue;
        }
        size_t n = strlen(de->d_name);
        if (!S_ISREG(st.st_mode) || n <= 5 || strcmp(de->d_name + n - 5, ".json") != 0) continue;
        if (vec_push(out, strdup(sub))) rc = BUS_EINTERNAL;
    }
    closedir(d);
    return rc;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void bus_schema_registry_free(bus_schema_registry_t *r) {
    if (!r) return;
    for (size_t i = 0; i < r->nevents; i++) free(r->events[i].type);
    for (size_t i = 0; i < r->nmethods; i++) {
        free(r->methods[i].service);
        free(r->methods[i].method);
    }
    free(r->events);
    free(r->methods);
    bus__sset_free(r->set);
    free(r);
}

static int cmp_event(const void *a, const void *b) {
    return strcmp(((const revent_t *)a)->type, ((const revent_t *)b)->type);
}
static int cmp_method(const void *a, const void *b) {
    const rmethod_t *x = a, *y = b;
    int c = strcmp(x->service, y->service);
    return c ? c : strcmp(x->method, y->method);
}

int bus_schema_registry_load(const char *dir, bus_schema_registry_t **out, char *err,
                             size_t errlen) {
    *out = NULL;
    /* "schemas/" and "schemas" name files the same way in messages */
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", dir);
    for (size_t n = strlen(dirbuf); n > 1 && dirbuf[n - 1] == '/'; n--) dirbuf[n - 1] = 0;
    dir = dirbuf;
    strvec_t files = {0};
    bus_schema_registry_t *r = calloc(1, sizeof *r);
    int rc = r && (r->set = bus__sset_new()) ? 0 : BUS_EINTERNAL;
    if (rc) snprintf(err, errlen, "out of memory");
    if (!rc) {
        rc = walk(dir, "", &files, 0);
        if (rc == BUS_ENOT_FOUND) snprintf(err, errlen, "%s: cannot open directory: %s", dir, strerror(errno));
        else if (rc) snprintf(err, errlen, "out of memory");
    }
    if (!rc) {
        if (files.n) qsort(files.v, files.n, sizeof *files.v, cmp_str);
        r->events = calloc(files.n + 1, sizeof *r->events);
        r->methods = calloc(files.n + 1, sizeof *r->methods);
        if (!r->events || !r->methods) {
            rc = BUS_EINTERNAL;
            snprintf(err, errlen, "out of memory");
        }
    }
    for (size_t i = 0; !rc && i < files.n; i++) {
        const char *rel = files.v[i];
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, rel);
        bus_schema_t *root = NULL;
        rc = bus__sset_add_file(r->set, path, &root, err, errlen);
        if (rc == BUS_ENOT_FOUND) rc = BUS_EINVALID; /* listed a moment ago: the directory exists */
        if (rc) break;
        const char *base = strrchr(rel, '/');
        base = base ? base + 1 : rel;
        size_t blen = strlen(base) - 5; /* without ".json" */
        if (strncmp(rel, "events/", 7) == 0 && !strchr(rel + 7, '/')) {
            revent_t *e = &r->events[r->nevents];
            e->type = strndup(base, blen);
            e->schema = root;
            if (!e->type) rc = BUS_EINTERNAL;
            else r->nevents++;
        } else if (strncmp(rel, "rpc/", 4) == 0 && !strchr(rel + 4, '/')) {
            const char *dot = memchr(base, '.', blen);
            if (!dot || dot == base || (size_t)(dot - base) + 1 >= blen) {
                snprintf(err, errlen, "%s: the name must be <service>.<method>.json", path);
                rc = BUS_EINVALID;
                break;
            }
            rmethod_t *m = &r->methods[r->nmethods];
            m->service = strndup(base, (size_t)(dot - base));
            m->method = strndup(dot + 1, blen - (size_t)(dot - base) - 1);
            m->root = root;
            if (!m->service || !m->method) {
                free(m->service);
                free(m->method);
                rc = BUS_EINTERNAL;
            } else {
                r->nmethods++;
            }
        }
        if (rc == BUS_EINTERNAL) snprintf(err, errlen, "out of memory");
    }
    if (!rc) rc = bus__sset_link(r->set, err, errlen);
    for (size_t i = 0; !rc && i < r->nmethods; i++) {
        rmethod_t *m = &r->methods[i];
        rc = bus__sset_node_at(r->set, m->root, "/definitions/params", &m->params, err, errlen);
        if (!rc) rc = bus__sset_node_at(r->set, m->root, "/definitions/result", &m->result, err, errlen);
    }
    for (size_t i = 0; i < files.n; i++) free(files.v[i]);
    free(files.v);
    if (rc) {
        bus_schema_registry_free(r);
        return rc;
    }
    if (r->nevents) qsort(r->events, r->nevents, sizeof *r->events, cmp_event);
    if (r->nmethods) qsort(r->methods, r->nmethods, sizeof *r->methods, cmp_method);
    *out = r;
    return 0;
}

static const revent_t *find_event(const bus_schema_registry_t *r, const char *type) {
    size_t lo = 0, hi = r->nevents;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(r->events[mid].type, type);
        if (!c) return &r->events[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static const rmethod_t *find_method(const bus_schema_registry_t *r, const char *service,
                                    const char *method) {
    if (!r || !service || !method) return NULL;
    size_t lo = 0, hi = r->nmethods;
    rmethod_t key = {(char *)service, (char *)method, NULL, NULL, NULL};
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = cmp_method(&r->methods[mid], &key);
        if (!c) return &r->methods[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const bus_schema_t *bus_schema_registry_event(const bus_schema_registry_t *r, const char *type) {
    if (!r || !type) return NULL;
    const revent_t *e = find_event(r, type);
    return e ? e->schema : NULL;
}

const bus_schema_t *bus_schema_registry_params(const bus_schema_registry_t *r, const char *service,
                                               const char *method) {
    const rmethod_t *m = find_method(r, service, method);
    return m ? m->params : NULL;
}

const bus_schema_t *bus_schema_registry_result(const bus_schema_registry_t *r, const char *service,
                                               const char *method) {
    const rmethod_t *m = find_method(r, service, method);
    return m ? m->result : NULL;
}

int bus_schema_registry_has_method(const bus_schema_registry_t *r, const char *service,
                                   const char *method) {
    return find_method(r, service, method) != NULL;
}

size_t bus_schema_registry_event_count(const bus_schema_registry_t *r) { return r ? r->nevents : 0; }

const char *bus_schema_registry_event_at(const bus_schema_registry_t *r, size_t i,
                                         const bus_schema_t **schema) {
    if (!r || i >= r->nevents) return NULL;
    if (schema) *schema = r->events[i].schema;
    return r->events[i].type;
}

size_t bus_schema_registry_method_count(const bus_schema_registry_t *r) { return r ? r->nmethods : 0; }

int bus_schema_registry_method_at(const bus_schema_registry_t *r, size_t i, const char **service,
                                  const char **method, const bus_schema_t **params,
                                  const bus_schema_t **result, const cJSON **doc) {
    if (!r || i >= r->nmethods) return BUS_ENOT_FOUND;
    const rmethod_t *m = &r->methods[i];
    if (service) *service = m->service;
    if (method) *method = m->method;
    if (params) *params = m->params;
    if (result) *result = m->result;
    if (doc) *doc = bus_schema_json(m->root);
    return 0;
}
