/* The store interface: URL parsing, argument checks, and the thread-pool
 * plumbing every backend shares.
 *
 * Each public operation copies its inputs into a bus__sreq_t on the loop
 * thread, queues it with uv_queue_work, lets the backend's exec() run it on a
 * pool thread, and calls the user back from the after-work callback on the
 * loop thread. The store counts requests in flight so that close can wait
 * for them.
 *
 * Group commit: when the backend has exec_group (SQLite), writes do not go
 * to the pool one by one. They wait in a queue; while no group is running,
 * the whole queue (up to BUS_STORE_MAX_GROUP) becomes one pool job that the
 * backend runs in one transaction with one fsync. A lone write starts at
 * once (no timer, no added latency); under load, the writes that arrive
 * while one group commits share the next commit. Durability per write is
 * unchanged: a callback reports success only after its group's commit.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus/error.h"
#include "bus/log.h"
#include "store_int.h"

#define BUS_STORE_MAX_COLLS 64
#define BUS_STORE_MAX_ID 512
#define BUS_STORE_MAX_BATCH 64
#define BUS_STORE_MAX_GROUP 256 /* write requests per group commit */

struct bus_store {
    uv_loop_t *loop;
    const bus__store_backend_t *be;
    void *impl;
    size_t inflight;
    int closing;
    void (*done)(void *);
    void *done_data;
    size_t ncolls;
    char *colls[BUS_STORE_MAX_COLLS];
    /* group commit (backends with exec_group) */
    bus__sreq_t *wq_head, *wq_tail; /* writes waiting for the next group */
    int writing;                    /* a group is on the pool */
    uv_work_t group_work;
    bus__sreq_t *group[BUS_STORE_MAX_GROUP];
    size_t ngroup;
};

/* ---- helpers shared with the backends --------------------------------- */

int bus__store_path_ok(const char *p) {
    if (!p || !*p || strlen(p) > 128) return 0;
    int seg = 0;
    for (const char *c = p; *c; c++) {
        if (*c == '.') {
            if (seg == 0) return 0;
            seg = 0;
        } else if (isalnum((unsigned char)*c) || *c == '_') {
            seg++;
        } else {
            return 0;
        }
    }
    return seg > 0;
}

static int name_ok(const char *n) {
    if (!n || !*n || strlen(n) > 64) return 0;
    for (const char *c = n; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_') return 0;
    return n[0] != '_';
}

int64_t bus__store_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

cJSON *bus__store_with_meta(cJSON *body, const char *id, int64_t v) {
    cJSON *doc = cJSON_CreateObject();
    if (!doc) {
        cJSON_Delete(body);
        return NULL;
    }
    cJSON_AddStringToObject(doc, "_id", id);
    cJSON_AddNumberToObject(doc, "_v", (double)v);
    if (body) {
        /* move the body's members after the meta fields */
        cJSON *it = body->child;
        body->child = NULL;
        while (it) {
            cJSON *next = it->next;
            it->next = it->prev = NULL;
            if (it->string && (strcmp(it->string, "_id") == 0 || strcmp(it->string, "_v") == 0))
                cJSON_Delete(it);
            else
                cJSON_AddItemToObject(doc, it->string, it); /* re-adds with a copied key */
            it = next;
        }
        cJSON_Delete(body);
    }
    return doc;
}

cJSON *bus__store_body(const cJSON *doc) {
    cJSON *b = doc ? cJSON_Duplicate(doc, 1) : cJSON_CreateObject();
    if (!b) return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(b, "_id");
    cJSON_DeleteItemFromObjectCaseSensitive(b, "_v");
    return b;
}

/* Cursors are base64url(JSON [value, id]): opaque, URL-safe. */
static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *bus__store_cursor_encode(const cJSON *value, const char *id) {
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, value ? cJSON_Duplicate(value, 1) : cJSON_CreateNull());
    cJSON_AddItemToArray(a, cJSON_CreateString(id));
    char *txt = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    if (!txt) return NULL;
    size_t n = strlen(txt), o = 0;
    char *out = malloc(n / 3 * 4 + 5);
    if (out) {
        for (size_t i = 0; i < n; i += 3) {
            unsigned v = (unsigned char)txt[i] << 16;
            if (i + 1 < n) v |= (unsigned char)txt[i + 1] << 8;
            if (i + 2 < n) v |= (unsigned char)txt[i + 2];
            out[o++] = b64[(v >> 18) & 63];
            out[o++] = b64[(v >> 12) & 63];
            if (i + 1 < n) out[o++] = b64[(v >> 6) & 63];
            if (i + 2 < n) out[o++] = b64[v & 63];
        }
        out[o] = 0;
    }
    cJSON_free(txt);
    return out;
}

int bus__store_cursor_decode(const char *cursor, cJSON **value, char **id) {
    *value = NULL;
    *id = NULL;
    size_t n = strlen(cursor), o = 0;
    if (n == 0 || n > 4096 || n % 4 == 1) return BUS_EBAD_REQUEST;
    char *txt = malloc(n);
    if (!txt) return BUS_EINTERNAL;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = strchr(b64, cursor[i]);
        if (!p || !cursor[i]) {
            free(txt);
            return BUS_EBAD_REQUEST;
        }
        acc = (acc << 6) | (unsigned)(p - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            txt[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    cJSON *a = cJSON_ParseWithLength(txt, o);
    free(txt);
    int rc = BUS_EBAD_REQUEST;
    if (a && cJSON_IsArray(a) && cJSON_GetArraySize(a) == 2 && cJSON_IsString(cJSON_GetArrayItem(a, 1))) {
        cJSON *v = cJSON_GetArrayItem(a, 0);
        if (cJSON_IsNull(v) || cJSON_IsNumber(v) || cJSON_IsString(v) || cJSON_IsBool(v)) {
            *value = cJSON_Duplicate(v, 1);
            *id = strdup(cJSON_GetArrayItem(a, 1)->valuestring);
            rc = (*value && *id) ? 0 : BUS_EINTERNAL;
        }
    }
    cJSON_Delete(a);
    if (rc) {
        cJSON_Delete(*value);
        free(*id);
        *value = NULL;
        *id = NULL;
    }
    return rc;
}

/* ---- open / close / declare ------------------------------------------- */

int bus_store_open(uv_loop_t *loop, const char *url, bus_store_t **out, char *err, size_t errlen) {
    *out = NULL;
    if (err && errlen) err[0] = 0;
    if (!url || !*url) url = "sqlite:var/bus.db";
    const bus__store_backend_t *be;
    void *impl = NULL;
    int rc;
    if (strncmp(url, "sqlite:", 7) == 0) {
        be = &bus__store_sqlite_backend;
        rc = bus__store_sqlite_open(url + 7, &impl, err, errlen);
    } else if (strncmp(url, "mongodb://", 10) == 0 || strncmp(url, "mongodb+srv://", 14) == 0) {
        be = &bus__store_mongo_backend;
        rc = bus__store_mongo_open(url, &impl, err, errlen);
    } else {
        if (err) snprintf(err, errlen, "BUS_STORE=%s: expected sqlite:PATH or mongodb://...", url);
        return BUS_EBAD_REQUEST;
    }
    if (rc) return rc;
    bus_store_t *s = calloc(1, sizeof *s);
    if (!s) {
        be->close(impl);
        if (err) snprintf(err, errlen, "BUS_STORE: out of memory");
        return BUS_EINTERNAL;
    }
    s->loop = loop;
    s->be = be;
    s->impl = impl;
    *out = s;
    return 0;
}

static void store_free(bus_store_t *s) {
    s->be->close(s->impl);
    for (size_t i = 0; i < s->ncolls; i++) free(s->colls[i]);
    void (*done)(void *) = s->done;
    void *dd = s->done_data;
    free(s);
    if (done) done(dd);
}

void bus_store_close(bus_store_t *s, void (*done)(void *data), void *data) {
    if (!s || s->closing) return;
    s->closing = 1;
    s->done = done;
    s->done_data = data;
    if (s->inflight == 0) store_free(s);
}

const char *bus_store_backend(const bus_store_t *s) { return s->be->name; }
size_t bus_store_inflight(const bus_store_t *s) { return s->inflight; }

static int declared(const bus_store_t *s, const char *coll) {
    if (!coll) return 0;
    for (size_t i = 0; i < s->ncolls; i++)
        if (strcmp(s->colls[i], coll) == 0) return 1;
    return 0;
}

static int index_spec_ok(const char *spec) {
    char buf[1100];
    if (!spec || strlen(spec) >= sizeof buf) return 0;
    strcpy(buf, spec);
    int n = 0;
    char *save = NULL;
    for (char *f = strtok_r(buf, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
        if (!bus__store_path_ok(f) || f[0] == '_' || ++n > 8) return 0;
    }
    return n > 0;
}

int bus_store_declare(bus_store_t *s, const char *collection, const char *const *indexes,
                      const char *const *unique, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!s || !name_ok(collection)) {
        if (err) snprintf(err, errlen, "bad collection name \"%s\" (letters, digits, _)", collection ? collection : "");
        return BUS_EBAD_REQUEST;
    }
    for (int u = 0; u < 2; u++) {
        const char *const *l = u ? unique : indexes;
        for (size_t i = 0; l && l[i]; i++)
            if (!index_spec_ok(l[i])) {
                if (err) snprintf(err, errlen, "collection %s: bad index \"%s\"", collection, l[i]);
                return BUS_EBAD_REQUEST;
            }
    }
    if (!declared(s, collection) && s->ncolls == BUS_STORE_MAX_COLLS) {
        if (err) snprintf(err, errlen, "too many collections (max %d)", BUS_STORE_MAX_COLLS);
        return BUS_EBAD_REQUEST;
    }
    int rc = s->be->declare(s->impl, collection, indexes, unique, err, errlen);
    if (rc) return rc;
    if (!declared(s, collection)) {
        char *c = strdup(collection);
        if (!c) return BUS_EINTERNAL;
        s->colls[s->ncolls++] = c;
    }
    return 0;
}

/* ---- argument checks --------------------------------------------------- */

static int id_ok(const char *id) { return id && *id && strlen(id) <= BUS_STORE_MAX_ID; }

static int scalar(const cJSON *v) { return cJSON_IsString(v) || cJSON_IsNumber(v) || cJSON_IsBool(v); }

static int where_ok(const cJSON *w) {
    if (!w) return 1;
    if (!cJSON_IsObject(w)) return 0;
    for (const cJSON *c = w->child; c; c = c->next) {
        if (!c->string || (strcmp(c->string, "_id") != 0 && (!bus__store_path_ok(c->string) || c->string[0] == '_')))
            return 0;
        if (scalar(c) || cJSON_IsNull(c)) continue;
        if (!cJSON_IsObject(c) || !c->child) return 0;
        for (const cJSON *op = c->child; op; op = op->next) {
            const char *k = op->string;
            if (!k) return 0;
            if (strcmp(k, "$ne") == 0) {
                if (!scalar(op) && !cJSON_IsNull(op)) return 0;
            } else if (strcmp(k, "$lt") == 0 || strcmp(k, "$lte") == 0 || strcmp(k, "$gt") == 0 ||
                       strcmp(k, "$gte") == 0) {
                if (!cJSON_IsString(op) && !cJSON_IsNumber(op)) return 0;
            } else {
                return 0;
            }
        }
    }
    return 1;
}

static int patch_ok(const cJSON *p) {
    if (!cJSON_IsObject(p)) return 0;
    for (const cJSON *c = p->child; c; c = c->next) {
        if (!c->string) return 0;
        if (strcmp(c->string, "_id") == 0 || strcmp(c->string, "_v") == 0) continue; /* ignored */
        if (c->string[0] == '_' || strchr(c->string, '.') || !bus__store_path_ok(c->string)) return 0;
    }
    return 1;
}

static int doc_ok(const cJSON *d) { return cJSON_IsObject(d); }

static int sort_ok(const char *sort) {
    if (!sort) return 1;
    if (*sort == '-') sort++;
    return strcmp(sort, "_id") == 0 || (bus__store_path_ok(sort) && sort[0] != '_');
}

/* ---- queueing ---------------------------------------------------------- */

static void req_free(bus__sreq_t *r) {
    free(r->coll);
    free(r->id);
    cJSON_Delete(r->doc);
    cJSON_Delete(r->where);
    free(r->sort);
    free(r->cursor);
    for (size_t i = 0; i < r->nops; i++) {
        free(r->ops[i].coll);
        free(r->ops[i].id);
        cJSON_Delete(r->ops[i].doc);
    }
    free(r->ops);
    cJSON_Delete(r->out);
    free(r->next_cursor);
    free(r->versions);
    free(r);
}

static void work_cb(uv_work_t *w) {
    bus__sreq_t *r = w->data;
    r->store->be->exec(r->store->impl, r);
}

/* Calls r's callback with its outcome and frees r; the caller adjusts
 * s->inflight. */
static void complete(bus__sreq_t *r, int uvst) {
    int st = uvst ? BUS_EINTERNAL : r->status;
    switch (r->kind) {
    case BUS__SREQ_GET:
    case BUS__SREQ_INSERT:
    case BUS__SREQ_REPLACE:
    case BUS__SREQ_UPDATE:
    case BUS__SREQ_FOAU:
        ((bus_store_doc_cb)r->cb)(st, st ? NULL : r->out, r->data);
        break;
    case BUS__SREQ_DELETE:
    case BUS__SREQ_PING:
        ((bus_store_status_cb)r->cb)(st, r->data);
        break;
    case BUS__SREQ_FIND:
        ((bus_store_find_cb)r->cb)(st, st ? NULL : r->out, st ? NULL : r->next_cursor, r->data);
        break;
    case BUS__SREQ_COUNT:
    case BUS__SREQ_PRUNE:
        ((bus_store_count_cb)r->cb)(st, st ? 0 : r->count, r->data);
        break;
    case BUS__SREQ_BATCH:
        ((bus_store_batch_cb)r->cb)(st, st ? r->failed : -1, st ? NULL : r->versions, r->data);
        break;
    case BUS__SREQ_PGET:
        ((bus_store_processed_cb)r->cb)(st, st ? NULL : r->out, r->data);
        break;
    }
    req_free(r);
}

static void after_cb(uv_work_t *w, int uvst) {
    bus__sreq_t *r = w->data;
    bus_store_t *s = r->store;
    complete(r, uvst);
    s->inflight--;
    if (s->closing && s->inflight == 0) store_free(s);
}

int bus__store_is_write(bus__sreq_kind_t kind) {
    switch (kind) {
    case BUS__SREQ_INSERT:
    case BUS__SREQ_REPLACE:
    case BUS__SREQ_UPDATE:
    case BUS__SREQ_DELETE:
    case BUS__SREQ_FOAU:
    case BUS__SREQ_BATCH:
    case BUS__SREQ_PRUNE:
        return 1;
    default:
        return 0;
    }
}

static void group_work_cb(uv_work_t *w) {
    bus_store_t *s = w->data;
    s->be->exec_group(s->impl, s->group, s->ngroup);
}

static void group_start(bus_store_t *s);

static void group_after_cb(uv_work_t *w, int uvst) {
    bus_store_t *s = w->data;
    size_t n = s->ngroup;
    /* Callbacks may queue new writes (they wait: `writing` is still set) or
     * close the store (not freed yet: this group still counts in flight). */
    for (size_t i = 0; i < n; i++) complete(s->group[i], uvst);
    s->ngroup = 0;
    s->writing = 0;
    s->inflight -= n;
    if (s->wq_head)
        group_start(s);
    else if (s->closing && s->inflight == 0)
        store_free(s);
}

/* Moves the waiting writes (up to BUS_STORE_MAX_GROUP) into one pool job. */
static void group_start(bus_store_t *s) {
    size_t n = 0;
    while (s->wq_head && n < BUS_STORE_MAX_GROUP) {
        bus__sreq_t *r = s->wq_head;
        s->wq_head = r->wnext;
        r->wnext = NULL;
        s->group[n++] = r;
    }
    if (!s->wq_head) s->wq_tail = NULL;
    s->ngroup = n;
    s->writing = 1;
    s->group_work.data = s;
    int rc = uv_queue_work(s->loop, &s->group_work, group_work_cb, group_after_cb);
    if (rc) { /* cannot happen with a valid loop; fail the group, never hang */
        bus_error(NULL, "store: uv_queue_work: %s", uv_strerror(rc));
        group_after_cb(&s->group_work, rc);
    }
}

static bus__sreq_t *req_new(bus_store_t *s, bus__sreq_kind_t kind, void (*cb)(void), void *data) {
    bus__sreq_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->store = s;
    r->kind = kind;
    r->cb = cb;
    r->data = data;
    r->version = BUS_STORE_ANY_VERSION;
    r->failed = -1;
    r->work.data = r;
    return r;
}

static int req_queue(bus__sreq_t *r) {
    bus_store_t *s = r->store;
    if (s->be->exec_group && bus__store_is_write(r->kind)) {
        if (s->wq_tail)
            s->wq_tail->wnext = r;
        else
            s->wq_head = r;
        s->wq_tail = r;
        s->inflight++;
        if (!s->writing) group_start(s);
        return 0;
    }
    int rc = uv_queue_work(s->loop, &r->work, work_cb, after_cb);
    if (rc) {
        bus_error(NULL, "store: uv_queue_work: %s", uv_strerror(rc));
        req_free(r);
        return BUS_EINTERNAL;
    }
    s->inflight++;
    return 0;
}

static int usable(bus_store_t *s, const char *coll) {
    if (!s) return BUS_EBAD_REQUEST;
    if (s->closing) return BUS_EUNAVAILABLE;
    if (coll && !declared(s, coll)) {
        bus_warn(NULL, "store: collection \"%s\" was not declared", coll);
        return BUS_EBAD_REQUEST;
    }
    return 0;
}

/* The common path of the one-document operations. */
static int single(bus_store_t *s, bus__sreq_kind_t kind, const char *coll, const char *id, int64_t version,
                  const cJSON *doc, void (*cb)(void), void *data) {
    int rc = usable(s, coll);
    if (rc) return rc;
    if (!cb || !id_ok(id) || (version < 0 && version != BUS_STORE_ANY_VERSION)) return BUS_EBAD_REQUEST;
    bus__sreq_t *r = req_new(s, kind, cb, data);
    if (!r) return BUS_EINTERNAL;
    r->coll = strdup(coll);
    r->id = strdup(id);
    r->version = version;
    if (doc && !(r->doc = bus__store_body(doc))) {
        req_free(r);
        return BUS_EINTERNAL;
    }
    if (!r->coll || !r->id) {
        req_free(r);
        return BUS_EINTERNAL;
    }
    return req_queue(r);
}

int bus_store_get(bus_store_t *s, const char *coll, const char *id, bus_store_doc_cb cb, void *data) {
    return single(s, BUS__SREQ_GET, coll, id, BUS_STORE_ANY_VERSION, NULL, (void (*)(void))cb, data);
}

int bus_store_insert(bus_store_t *s, const char *coll, const char *id, const cJSON *doc, bus_store_doc_cb cb,
                     void *data) {
    if (!doc_ok(doc)) return BUS_EBAD_REQUEST;
    return single(s, BUS__SREQ_INSERT, coll, id, BUS_STORE_ANY_VERSION, doc, (void (*)(void))cb, data);
}

int bus_store_replace(bus_store_t *s, const char *coll, const char *id, int64_t version, const cJSON *doc,
                      bus_store_doc_cb cb, void *data) {
    if (!doc_ok(doc)) return BUS_EBAD_REQUEST;
    return single(s, BUS__SREQ_REPLACE, coll, id, version, doc, (void (*)(void))cb, data);
}

int bus_store_update(bus_store_t *s, const char *coll, const char *id, int64_t version, const cJSON *patch,
                     bus_store_doc_cb cb, void *data) {
    if (!patch_ok(patch)) return BUS_EBAD_REQUEST;
    return single(s, BUS__SREQ_UPDATE, coll, id, version, patch, (void (*)(void))cb, data);
}

int bus_store_delete(bus_store_t *s, const char *coll, const char *id, int64_t version, bus_store_status_cb cb,
                     void *data) {
    return single(s, BUS__SREQ_DELETE, coll, id, version, NULL, (void (*)(void))cb, data);
}

static int query_req(bus_store_t *s, bus__sreq_kind_t kind, const char *coll, const cJSON *where,
                     const char *sort, void (*cb)(void), void *data, bus__sreq_t **out) {
    int rc = usable(s, coll);
    if (rc) return rc;
    if (!cb || !where_ok(where) || !sort_ok(sort)) return BUS_EBAD_REQUEST;
    bus__sreq_t *r = req_new(s, kind, cb, data);
    if (!r) return BUS_EINTERNAL;
    r->coll = strdup(coll);
    if (where) r->where = cJSON_Duplicate(where, 1);
    if (sort && strcmp(sort, "_id") != 0) r->sort = strdup(sort);
    if (!r->coll || (where && !r->where) || (sort && strcmp(sort, "_id") != 0 && !r->sort)) {
        req_free(r);
        return BUS_EINTERNAL;
    }
    *out = r;
    return 0;
}

int bus_store_find(bus_store_t *s, const char *coll, const bus_store_query_t *q, bus_store_find_cb cb,
                   void *data) {
    bus_store_query_t none = {0};
    if (!q) q = &none;
    if (q->limit < 0) return BUS_EBAD_REQUEST;
    bus__sreq_t *r;
    int rc = query_req(s, BUS__SREQ_FIND, coll, q->where, q->sort, (void (*)(void))cb, data, &r);
    if (rc) return rc;
    r->limit = q->limit == 0 ? BUS_STORE_DEFAULT_LIMIT : q->limit > BUS_STORE_MAX_LIMIT ? BUS_STORE_MAX_LIMIT : q->limit;
    if (q->cursor && !(r->cursor = strdup(q->cursor))) {
        req_free(r);
        return BUS_EINTERNAL;
    }
    return req_queue(r);
}

int bus_store_count(bus_store_t *s, const char *coll, const cJSON *where, bus_store_count_cb cb, void *data) {
    bus__sreq_t *r;
    int rc = query_req(s, BUS__SREQ_COUNT, coll, where, NULL, (void (*)(void))cb, data, &r);
    return rc ? rc : req_queue(r);
}

int bus_store_find_one_and_update(bus_store_t *s, const char *coll, const cJSON *where, const char *sort,
                                  const cJSON *patch, bus_store_doc_cb cb, void *data) {
    if (!patch_ok(patch)) return BUS_EBAD_REQUEST;
    bus__sreq_t *r;
    int rc = query_req(s, BUS__SREQ_FOAU, coll, where, sort, (void (*)(void))cb, data, &r);
    if (rc) return rc;
    if (!(r->doc = bus__store_body(patch))) {
        req_free(r);
        return BUS_EINTERNAL;
    }
    return req_queue(r);
}

static int batch_req(bus_store_t *s, const bus_store_op_t *ops, size_t n, void (*cb)(void), void *data,
                     bus__sreq_t **out) {
    int rc = usable(s, NULL);
    if (rc) return rc;
    if (!cb || !ops || n == 0 || n > BUS_STORE_MAX_BATCH) return BUS_EBAD_REQUEST;
    for (size_t i = 0; i < n; i++) {
        const bus_store_op_t *o = &ops[i];
        if (!id_ok(o->id)) return BUS_EBAD_REQUEST;
        switch (o->kind) {
        case BUS_STORE_OP_INSERT:
        case BUS_STORE_OP_REPLACE:
            if (!doc_ok(o->doc)) return BUS_EBAD_REQUEST;
            break;
        case BUS_STORE_OP_UPDATE:
            if (!patch_ok(o->doc)) return BUS_EBAD_REQUEST;
            break;
        case BUS_STORE_OP_DELETE:
            break;
        case BUS_STORE_OP_MARK:
            if (!o->coll || !*o->coll || strlen(o->coll) > 128) return BUS_EBAD_REQUEST;
            continue;
        default:
            return BUS_EBAD_REQUEST;
        }
        if (o->version < 0 && o->version != BUS_STORE_ANY_VERSION) return BUS_EBAD_REQUEST;
        if ((rc = usable(s, o->coll))) return rc;
    }
    bus__sreq_t *r = req_new(s, BUS__SREQ_BATCH, cb, data);
    if (!r) return BUS_EINTERNAL;
    r->ops = calloc(n, sizeof *r->ops);
    r->versions = calloc(n, sizeof *r->versions);
    if (!r->ops || !r->versions) {
        req_free(r);
        return BUS_EINTERNAL;
    }
    r->nops = n;
    for (size_t i = 0; i < n; i++) {
        bus__sop_t *d = &r->ops[i];
        d->kind = ops[i].kind;
        d->coll = strdup(ops[i].coll);
        d->id = strdup(ops[i].id);
        d->version = ops[i].version;
        if (ops[i].kind == BUS_STORE_OP_MARK)
            d->doc = ops[i].doc ? cJSON_Duplicate(ops[i].doc, 1) : cJSON_CreateNull();
        else if (ops[i].kind != BUS_STORE_OP_DELETE)
            d->doc = bus__store_body(ops[i].doc);
        if (!d->coll || !d->id || (ops[i].kind != BUS_STORE_OP_DELETE && !d->doc)) {
            req_free(r);
            return BUS_EINTERNAL;
        }
    }
    *out = r;
    return 0;
}

int bus_store_batch(bus_store_t *s, const bus_store_op_t *ops, size_t n, bus_store_batch_cb cb, void *data) {
    bus__sreq_t *r;
    int rc = batch_req(s, ops, n, (void (*)(void))cb, data, &r);
    return rc ? rc : req_queue(r);
}

/* processed_put is a one-operation batch whose batch callback adapts to the
 * caller's status callback: the adapter owns a tiny record. */
typedef struct {
    bus_store_status_cb cb;
    void *data;
} put_ctx_t;

static void put_done(int status, long failed, const int64_t *versions, void *data) {
    (void)failed;
    (void)versions;
    put_ctx_t c = *(put_ctx_t *)data;
    free(data);
    c.cb(status, c.data);
}

int bus_store_processed_put(bus_store_t *s, const char *scope, const char *id, const cJSON *result,
                            bus_store_status_cb cb, void *data) {
    if (!cb) return BUS_EBAD_REQUEST;
    put_ctx_t *c = malloc(sizeof *c);
    if (!c) return BUS_EINTERNAL;
    c->cb = cb;
    c->data = data;
    bus_store_op_t op = {.kind = BUS_STORE_OP_MARK, .coll = scope, .id = id, .doc = result};
    int rc = bus_store_batch(s, &op, 1, put_done, c);
    if (rc) free(c);
    return rc;
}

int bus_store_processed_get(bus_store_t *s, const char *scope, const char *id, bus_store_processed_cb cb,
                            void *data) {
    int rc = usable(s, NULL);
    if (rc) return rc;
    if (!cb || !scope || !*scope || strlen(scope) > 128 || !id_ok(id)) return BUS_EBAD_REQUEST;
    bus__sreq_t *r = req_new(s, BUS__SREQ_PGET, (void (*)(void))cb, data);
    if (!r) return BUS_EINTERNAL;
    r->coll = strdup(scope);
    r->id = strdup(id);
    if (!r->coll || !r->id) {
        req_free(r);
        return BUS_EINTERNAL;
    }
    return req_queue(r);
}

int bus_store_ping(bus_store_t *s, bus_store_status_cb cb, void *data) {
    int rc = usable(s, NULL);
    if (rc) return rc;
    if (!cb) return BUS_EBAD_REQUEST;
    bus__sreq_t *r = req_new(s, BUS__SREQ_PING, (void (*)(void))cb, data);
    return r ? req_queue(r) : BUS_EINTERNAL;
}

int bus_store_processed_prune(bus_store_t *s, int64_t older_than_ms, bus_store_count_cb cb, void *data) {
    int rc = usable(s, NULL);
    if (rc) return rc;
    if (!cb || older_than_ms < 0) return BUS_EBAD_REQUEST;
    bus__sreq_t *r = req_new(s, BUS__SREQ_PRUNE, (void (*)(void))cb, data);
    if (!r) return BUS_EINTERNAL;
    r->version = bus__store_now_ms() - older_than_ms; /* the cut-off time */
    return req_queue(r);
}
