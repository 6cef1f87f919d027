/* The MongoDB backend of the store.
 *
 * A mongoc_client_pool_t shared by the pool threads: each operation pops a
 * client, runs blocking driver calls (we are on a store thread) and
 * pushes it back. Collections live in the URI's database (default "bus");
 * a document is {_id: <id>, _v: <int64>, ...body}; markers live in
 * "_bus_processed" as {_id: {s: scope, i: id}, result: <json>, at: <ms>}.
 * Write concern, read preference, TLS etc. come from the URI as the driver
 * reads them (w=majority in the deployment examples). Numbers are read with
 * bson_iter_as_int64().
 *
 * Versions: replace is a findAndModify on {_id, _v: expected} with a
 * replacement carrying _v + 1; update and find_one_and_update are
 * findAndModify with $set/$unset/$inc{_v:1}. With BUS_STORE_ANY_VERSION the
 * current version is read first and the write is retried if it moved.
 *
 * Batches run in a multi-document transaction when the deployment has them
 * (replica set or sharded cluster, detected at open with "hello"). On a
 * standalone server they are applied in order with the MARK operations last
 * (see store.h): not atomic, logged when a batch fails midway.
 *
 * Unique indexes get a partialFilterExpression {$exists: true} per field, so
 * documents lacking a field are not constrained (like SQLite, where NULLs
 * are distinct). Unlike SQLite, an explicit JSON null is constrained here.
 *
 * This backend is exercised by tests/integration/test_store.c only when
 * BUS_TEST_MONGO_URI points at a server.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mongoc/mongoc.h>

#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/log.h"
#include "store_int.h"

#define MARKERS "_bus_processed"

typedef struct {
    mongoc_client_pool_t *pool;
    mongoc_uri_t *uri;
    char db[128];
    char url[512]; /* password masked */
    int txn;       /* transactions available */
} mg_t;

static pthread_once_t mg_once = PTHREAD_ONCE_INIT;
/* The driver's own log goes to ours, warnings and worse only. */
static void mg_log(mongoc_log_level_t level, const char *domain, const char *message, void *data) {
    (void)data;
    if (level <= MONGOC_LOG_LEVEL_ERROR)
        bus_error(NULL, "mongoc %s: %s", domain, message);
    else if (level == MONGOC_LOG_LEVEL_WARNING)
        bus_warn(NULL, "mongoc %s: %s", domain, message);
}
static void mg_init(void) {
    mongoc_log_set_handler(mg_log, NULL);
    mongoc_init();
}

/* ---- errors and conversions ----------------------------------------------- */

static int map_err(const bson_error_t *e, const char *what) {
    if (e->code == 11000 || e->code == 11001 || e->code == 112 /* WriteConflict */) return BUS_ECONFLICT;
    int rc = BUS_EINTERNAL;
    if (e->domain == MONGOC_ERROR_SERVER_SELECTION || e->domain == MONGOC_ERROR_STREAM ||
        e->domain == MONGOC_ERROR_CLIENT || e->domain == MONGOC_ERROR_WRITE_CONCERN ||
        e->code == 189 /* PrimarySteppedDown */ || e->code == 91 /* ShutdownInProgress */ ||
        e->code == 10107 /* NotWritablePrimary */ || e->code == 13435 || e->code == 11602)
        rc = BUS_EUNAVAILABLE;
    bus_error(NULL, "store mongodb: %s: %s (domain %u code %u)", what, e->message, e->domain, e->code);
    return rc;
}

/* Appends a scalar/structured JSON value under `key`. */
static int append_json(bson_t *b, const char *key, const cJSON *v) {
    if (cJSON_IsString(v)) return bson_append_utf8(b, key, -1, v->valuestring, -1);
    if (cJSON_IsBool(v)) return bson_append_bool(b, key, -1, cJSON_IsTrue(v));
    if (cJSON_IsNull(v) || !v) return bson_append_null(b, key, -1);
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == (double)(int64_t)d)
            return bson_append_int64(b, key, -1, (int64_t)d);
        return bson_append_double(b, key, -1, d);
    }
    /* object or array: through JSON text, wrapped so arrays work too */
    cJSON *w = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(w, "v", (cJSON *)v);
    char *txt = cJSON_PrintUnformatted(w);
    cJSON_Delete(w);
    if (!txt) return 0;
    bson_error_t err;
    bson_t *tmp = bson_new_from_json((const uint8_t *)txt, -1, &err);
    cJSON_free(txt);
    if (!tmp) return 0;
    bson_iter_t it;
    int ok = bson_iter_init_find(&it, tmp, "v") && bson_append_iter(b, key, -1, &it);
    bson_destroy(tmp);
    return ok;
}

/* Appends every member of a JSON object (the document body). */
static int append_body(bson_t *b, const cJSON *body) {
    for (const cJSON *c = body ? body->child : NULL; c; c = c->next)
        if (!append_json(b, c->string, c)) return 0;
    return 1;
}

/* {_id, _v, ...body} */
static bson_t *make_doc(const char *id, int64_t v, const cJSON *body) {
    bson_t *b = bson_new();
    BSON_APPEND_UTF8(b, "_id", id);
    BSON_APPEND_INT64(b, "_v", v);
    if (!append_body(b, body)) {
        bson_destroy(b);
        return NULL;
    }
    return b;
}

/* A stored document back to JSON with "_id" and "_v" first. */
static cJSON *to_json(const bson_t *b) {
    bson_iter_t it;
    char *id = NULL;
    int64_t v = 0;
    if (bson_iter_init_find(&it, b, "_id") && BSON_ITER_HOLDS_UTF8(&it)) id = bson_strdup(bson_iter_utf8(&it, NULL));
    if (bson_iter_init_find(&it, b, "_v")) v = bson_iter_as_int64(&it);
    size_t len;
    char *txt = bson_as_relaxed_extended_json(b, &len);
    cJSON *body = txt ? bus_json_parse(txt, len, CJSON_NESTING_LIMIT, NULL, 0) : NULL; /* libbson's text */
    bson_free(txt);
    cJSON *out = (body && id) ? bus__store_with_meta(body, id, v) : (cJSON_Delete(body), NULL);
    bson_free(id);
    return out;
}

/* A filter from the checked JSON filter of store.h. */
static int append_filter(bson_t *f, const cJSON *w) {
    for (const cJSON *c = w ? w->child : NULL; c; c = c->next) {
        if (!cJSON_IsObject(c)) {
            if (!append_json(f, c->string, c)) return 0;
            continue;
        }
        bson_t sub;
        bson_append_document_begin(f, c->string, -1, &sub);
        for (const cJSON *op = c->child; op; op = op->next)
            if (!append_json(&sub, op->string, op)) return 0;
        bson_append_document_end(f, &sub);
    }
    return 1;
}

/* {$set: {...}, $unset: {...}, $inc: {_v: 1}} */
static bson_t *make_update(const cJSON *patch) {
    bson_t *u = bson_new(), set, unset, inc;
    int nset = 0, nunset = 0;
    for (const cJSON *c = patch->child; c; c = c->next) cJSON_IsNull(c) ? nunset++ : nset++;
    if (nset) {
        bson_append_document_begin(u, "$set", -1, &set);
        for (const cJSON *c = patch->child; c; c = c->next)
            if (!cJSON_IsNull(c)) append_json(&set, c->string, c);
        bson_append_document_end(u, &set);
    }
    if (nunset) {
        bson_append_document_begin(u, "$unset", -1, &unset);
        for (const cJSON *c = patch->child; c; c = c->next)
            if (cJSON_IsNull(c)) BSON_APPEND_UTF8(&unset, c->string, "");
        bson_append_document_end(u, &unset);
    }
    bson_append_document_begin(u, "$inc", -1, &inc);
    BSON_APPEND_INT64(&inc, "_v", 1);
    bson_append_document_end(u, &inc);
    return u;
}

/* The value at a dotted path of a stored document, as JSON (NULL = null). */
static cJSON *value_at(const bson_t *b, const char *path) {
    bson_iter_t it, d;
    if (!bson_iter_init(&it, b) || !bson_iter_find_descendant(&it, path, &d)) return NULL;
    switch (bson_iter_type(&d)) {
    case BSON_TYPE_UTF8:
        return cJSON_CreateString(bson_iter_utf8(&d, NULL));
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        return cJSON_CreateNumber((double)bson_iter_as_int64(&d));
    case BSON_TYPE_DOUBLE:
        return cJSON_CreateNumber(bson_iter_double(&d));
    case BSON_TYPE_BOOL:
        return cJSON_CreateBool(bson_iter_bool(&d));
    default:
        return NULL;
    }
}

/* ---- operations -------------------------------------------------------- */

typedef struct {
    mg_t *m;
    mongoc_client_t *cl;
    mongoc_client_session_t *ses; /* inside a batch transaction, else NULL */
} ctx_t;

static mongoc_collection_t *coll_of(ctx_t *c, const char *name) {
    return mongoc_client_get_collection(c->cl, c->m->db, name);
}

/* opts with the session when in a transaction */
static void opts_init(ctx_t *c, bson_t *o) {
    bson_init(o);
    if (c->ses) {
        bson_error_t e;
        mongoc_client_session_append(c->ses, o, &e);
    }
}

static int find_one(ctx_t *c, const char *coll, const bson_t *filter, cJSON **out, int64_t *v) {
    mongoc_collection_t *col = coll_of(c, coll);
    bson_t opts;
    opts_init(c, &opts);
    BSON_APPEND_INT64(&opts, "limit", 1);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, &opts, NULL);
    const bson_t *doc;
    int rc = BUS_ENOT_FOUND;
    if (mongoc_cursor_next(cur, &doc)) {
        rc = 0;
        if (v) {
            bson_iter_t it;
            *v = bson_iter_init_find(&it, doc, "_v") ? bson_iter_as_int64(&it) : 0;
        }
        if (out && !(*out = to_json(doc))) rc = BUS_EINTERNAL;
    }
    bson_error_t e;
    if (mongoc_cursor_error(cur, &e)) rc = map_err(&e, "find");
    mongoc_cursor_destroy(cur);
    bson_destroy(&opts);
    mongoc_collection_destroy(col);
    return rc;
}

static int op_get(ctx_t *c, const char *coll, const char *id, cJSON **out, int64_t *v) {
    bson_t f = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&f, "_id", id);
    int rc = find_one(c, coll, &f, out, v);
    bson_destroy(&f);
    return rc;
}

/* ENOT_FOUND or ECONFLICT after a conditional write matched nothing. */
static int why_not(ctx_t *c, const char *coll, const char *id) {
    int rc = op_get(c, coll, id, NULL, NULL);
    return rc == 0 ? BUS_ECONFLICT : rc;
}

static int op_insert(ctx_t *c, const char *coll, const char *id, const cJSON *body) {
    bson_t *d = make_doc(id, 1, body);
    if (!d) return BUS_EBAD_REQUEST;
    mongoc_collection_t *col = coll_of(c, coll);
    bson_t opts;
    opts_init(c, &opts);
    bson_error_t e;
    int rc = mongoc_collection_insert_one(col, d, &opts, NULL, &e) ? 0 : map_err(&e, "insert");
    bson_destroy(&opts);
    bson_destroy(d);
    mongoc_collection_destroy(col);
    return rc;
}

/* findAndModify {_id, _v: version} with `update` (a replacement or operators);
 * returns the new document. Outside transactions only. */
static int fam(ctx_t *c, const char *coll, const bson_t *query, const bson_t *sort, const bson_t *update,
               cJSON **out, int64_t *newv) {
    mongoc_collection_t *col = coll_of(c, coll);
    mongoc_find_and_modify_opts_t *o = mongoc_find_and_modify_opts_new();
    mongoc_find_and_modify_opts_set_update(o, update);
    mongoc_find_and_modify_opts_set_flags(o, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    if (sort) mongoc_find_and_modify_opts_set_sort(o, sort);
    bson_t reply;
    bson_error_t e;
    int rc;
    if (!mongoc_collection_find_and_modify_with_opts(col, query, o, &reply, &e)) {
        rc = map_err(&e, "findAndModify");
    } else {
        bson_iter_t it;
        rc = BUS_ENOT_FOUND;
        if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            const uint8_t *data;
            uint32_t len;
            bson_iter_document(&it, &len, &data);
            bson_t doc;
            if (bson_init_static(&doc, data, len)) {
                bson_iter_t vi;
                if (newv) *newv = bson_iter_init_find(&vi, &doc, "_v") ? bson_iter_as_int64(&vi) : 0;
                rc = 0;
                if (out && !(*out = to_json(&doc))) rc = BUS_EINTERNAL;
            }
        }
    }
    bson_destroy(&reply);
    mongoc_find_and_modify_opts_destroy(o);
    mongoc_collection_destroy(col);
    return rc;
}

/* REPLACE or UPDATE, single (not in a batch). */
static int op_write(ctx_t *c, const char *coll, const char *id, int64_t version, const cJSON *body, int patch,
                    cJSON **out) {
    for (int attempt = 0; attempt < 5; attempt++) {
        int64_t v = version;
        if (v == BUS_STORE_ANY_VERSION) {
            int rc = op_get(c, coll, id, NULL, &v);
            if (rc) return rc;
        }
        bson_t q = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&q, "_id", id);
        BSON_APPEND_INT64(&q, "_v", v);
        bson_t *u = patch ? make_update(body) : make_doc(id, v + 1, body);
        int rc = u ? fam(c, coll, &q, NULL, u, out, NULL) : BUS_EBAD_REQUEST;
        bson_destroy(&q);
        if (u) bson_destroy(u);
        if (rc != BUS_ENOT_FOUND) return rc;
        rc = why_not(c, coll, id);
        if (rc != BUS_ECONFLICT || version != BUS_STORE_ANY_VERSION) return rc;
        /* ANY version and it moved under us: read again */
    }
    return BUS_ECONFLICT;
}

/* REPLACE/UPDATE/DELETE inside a batch: update_one/replace_one/delete_one
 * with the session; *newv = the new version. */
static int op_batch_write(ctx_t *c, bus__sop_t *o, int64_t *newv) {
    int64_t v = o->version;
    if (v == BUS_STORE_ANY_VERSION) {
        int rc = op_get(c, o->coll, o->id, NULL, &v);
        if (rc) return rc;
    }
    bson_t q = BSON_INITIALIZER, opts, reply;
    BSON_APPEND_UTF8(&q, "_id", o->id);
    BSON_APPEND_INT64(&q, "_v", v);
    opts_init(c, &opts);
    mongoc_collection_t *col = coll_of(c, o->coll);
    bson_error_t e;
    bool ok;
    const char *countf = "matchedCount";
    bson_t *u = NULL;
    if (o->kind == BUS_STORE_OP_DELETE) {
        ok = mongoc_collection_delete_one(col, &q, &opts, &reply, &e);
        countf = "deletedCount";
    } else if (o->kind == BUS_STORE_OP_UPDATE) {
        u = make_update(o->doc);
        ok = mongoc_collection_update_one(col, &q, u, &opts, &reply, &e);
    } else {
        u = make_doc(o->id, v + 1, o->doc);
        ok = u && mongoc_collection_replace_one(col, &q, u, &opts, &reply, &e);
    }
    int rc = 0;
    if (!ok) {
        rc = u || o->kind == BUS_STORE_OP_DELETE ? map_err(&e, "batch write") : BUS_EBAD_REQUEST;
    } else {
        bson_iter_t it;
        int64_t n = bson_iter_init_find(&it, &reply, countf) ? bson_iter_as_int64(&it) : 0;
        if (n == 0) rc = why_not(c, o->coll, o->id);
        *newv = o->kind == BUS_STORE_OP_DELETE ? 0 : v + 1;
    }
    bson_destroy(&reply);
    if (u) bson_destroy(u);
    bson_destroy(&q);
    bson_destroy(&opts);
    mongoc_collection_destroy(col);
    return rc;
}

static int op_delete(ctx_t *c, const char *coll, const char *id, int64_t version) {
    bus__sop_t o = {.kind = BUS_STORE_OP_DELETE, .coll = (char *)coll, .id = (char *)id, .version = version};
    int64_t v;
    return op_batch_write(c, &o, &v);
}

static void marker_id(bson_t *b, const char *scope, const char *id) {
    bson_t sub;
    bson_append_document_begin(b, "_id", -1, &sub);
    BSON_APPEND_UTF8(&sub, "s", scope);
    BSON_APPEND_UTF8(&sub, "i", id);
    bson_append_document_end(b, &sub);
}

static int op_mark(ctx_t *c, const char *scope, const char *id, const cJSON *result) {
    bson_t d = BSON_INITIALIZER, opts;
    marker_id(&d, scope, id);
    int ok = append_json(&d, "result", result);
    BSON_APPEND_INT64(&d, "at", bus__store_now_ms());
    opts_init(c, &opts);
    mongoc_collection_t *col = coll_of(c, MARKERS);
    bson_error_t e;
    int rc = !ok ? BUS_EBAD_REQUEST : mongoc_collection_insert_one(col, &d, &opts, NULL, &e) ? 0 : map_err(&e, "mark");
    bson_destroy(&opts);
    bson_destroy(&d);
    mongoc_collection_destroy(col);
    return rc;
}

static int op_pget(ctx_t *c, const char *scope, const char *id, cJSON **out) {
    bson_t f = BSON_INITIALIZER;
    marker_id(&f, scope, id);
    mongoc_collection_t *col = coll_of(c, MARKERS);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &f, NULL, NULL);
    const bson_t *doc;
    int rc = BUS_ENOT_FOUND;
    if (mongoc_cursor_next(cur, &doc)) {
        /* {"result": <value>} as JSON, then take the value */
        bson_t w = BSON_INITIALIZER;
        bson_iter_t it;
        if (bson_iter_init_find(&it, doc, "result")) bson_append_iter(&w, "result", -1, &it);
        size_t len;
        char *txt = bson_as_relaxed_extended_json(&w, &len);
        cJSON *j = txt ? bus_json_parse(txt, len, CJSON_NESTING_LIMIT, NULL, 0) : NULL;
        bson_free(txt);
        bson_destroy(&w);
        cJSON *r = j ? cJSON_DetachItemFromObject(j, "result") : NULL;
        cJSON_Delete(j);
        *out = r ? r : cJSON_CreateNull();
        rc = 0;
    }
    bson_error_t e;
    if (mongoc_cursor_error(cur, &e)) rc = map_err(&e, "processed get");
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(col);
    bson_destroy(&f);
    return rc;
}

static int op_find(ctx_t *c, bus__sreq_t *r) {
    int desc = r->sort && r->sort[0] == '-';
    const char *sort = r->sort ? r->sort + desc : "_id";
    cJSON *cval = NULL;
    char *cid = NULL;
    if (r->cursor) {
        int e = bus__store_cursor_decode(r->cursor, &cval, &cid);
        if (e) return e;
    }
    bson_t f = BSON_INITIALIZER, and, w, k;
    bson_append_array_begin(&f, "$and", -1, &and);
    bson_append_document_begin(&and, "0", -1, &w);
    append_filter(&w, r->where);
    bson_append_document_end(&and, &w);
    if (cid) {
        /* keyset: strictly after (value, id) in the sort order; null sorts first */
        const char *gt = desc ? "$lt" : "$gt";
        bson_append_document_begin(&and, "1", -1, &k);
        if (strcmp(sort, "_id") == 0) {
            bson_t s;
            bson_append_document_begin(&k, "_id", -1, &s);
            BSON_APPEND_UTF8(&s, gt, cid);
            bson_append_document_end(&k, &s);
        } else {
            bson_t or, a, s;
            bson_append_array_begin(&k, "$or", -1, &or);
            int n = 0;
            char key[4];
            if (cJSON_IsNull(cval)) {
                if (!desc) { /* anything non-null */
                    snprintf(key, sizeof key, "%d", n++);
                    bson_append_document_begin(&or, key, -1, &a);
                    bson_append_document_begin(&a, sort, -1, &s);
                    bson_append_null(&s, "$ne", -1);
                    bson_append_document_end(&a, &s);
                    bson_append_document_end(&or, &a);
                }
            } else {
                snprintf(key, sizeof key, "%d", n++);
                bson_append_document_begin(&or, key, -1, &a);
                bson_append_document_begin(&a, sort, -1, &s);
                append_json(&s, gt, cval);
                bson_append_document_end(&a, &s);
                bson_append_document_end(&or, &a);
                if (desc) { /* nulls come last when descending */
                    snprintf(key, sizeof key, "%d", n++);
                    bson_append_document_begin(&or, key, -1, &a);
                    bson_append_null(&a, sort, -1);
                    bson_append_document_end(&or, &a);
                }
            }
            snprintf(key, sizeof key, "%d", n++);
            bson_append_document_begin(&or, key, -1, &a);
            append_json(&a, sort, cval);
            bson_append_document_begin(&a, "_id", -1, &s);
            BSON_APPEND_UTF8(&s, gt, cid);
            bson_append_document_end(&a, &s);
            bson_append_document_end(&or, &a);
            bson_append_array_end(&k, &or);
        }
        bson_append_document_end(&and, &k);
    }
    bson_append_array_end(&f, &and);
    bson_t opts = BSON_INITIALIZER, so;
    bson_append_document_begin(&opts, "sort", -1, &so);
    BSON_APPEND_INT32(&so, sort, desc ? -1 : 1);
    if (strcmp(sort, "_id") != 0) BSON_APPEND_INT32(&so, "_id", desc ? -1 : 1);
    bson_append_document_end(&opts, &so);
    BSON_APPEND_INT64(&opts, "limit", r->limit + 1);
    mongoc_collection_t *col = coll_of(c, r->coll);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, &f, &opts, NULL);
    const bson_t *doc;
    cJSON *arr = cJSON_CreateArray(), *lastv = NULL;
    int n = 0, rc = 0;
    while (mongoc_cursor_next(cur, &doc)) {
        if (n == r->limit) {
            cJSON *last = cJSON_GetArrayItem(arr, n - 1);
            r->next_cursor = bus__store_cursor_encode(lastv, cJSON_GetObjectItem(last, "_id")->valuestring);
            break;
        }
        if (n == r->limit - 1 && strcmp(sort, "_id") != 0) lastv = value_at(doc, sort);
        cJSON *d = to_json(doc);
        if (!d) {
            rc = BUS_EINTERNAL;
            break;
        }
        cJSON_AddItemToArray(arr, d);
        n++;
    }
    bson_error_t e;
    if (!rc && mongoc_cursor_error(cur, &e)) rc = map_err(&e, "find");
    if (rc)
        cJSON_Delete(arr);
    else
        r->out = arr;
    cJSON_Delete(lastv);
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(col);
    bson_destroy(&opts);
    bson_destroy(&f);
    cJSON_Delete(cval);
    free(cid);
    return rc;
}

static int op_count(ctx_t *c, bus__sreq_t *r) {
    bson_t f = BSON_INITIALIZER;
    append_filter(&f, r->where);
    mongoc_collection_t *col = coll_of(c, r->coll);
    bson_error_t e;
    int64_t n = mongoc_collection_count_documents(col, &f, NULL, NULL, NULL, &e);
    mongoc_collection_destroy(col);
    bson_destroy(&f);
    if (n < 0) return map_err(&e, "count");
    r->count = n;
    return 0;
}

static int op_foau(ctx_t *c, bus__sreq_t *r) {
    int desc = r->sort && r->sort[0] == '-';
    const char *sort = r->sort ? r->sort + desc : NULL;
    bson_t f = BSON_INITIALIZER, s = BSON_INITIALIZER;
    append_filter(&f, r->where);
    if (sort) BSON_APPEND_INT32(&s, sort, desc ? -1 : 1);
    BSON_APPEND_INT32(&s, "_id", desc ? -1 : 1);
    bson_t *u = make_update(r->doc);
    int rc = fam(c, r->coll, &f, &s, u, &r->out, NULL);
    bson_destroy(u);
    bson_destroy(&s);
    bson_destroy(&f);
    return rc;
}

static int run_ops(ctx_t *c, bus__sreq_t *r, int marks) {
    for (size_t i = 0; i < r->nops; i++) {
        bus__sop_t *o = &r->ops[i];
        if ((o->kind == BUS_STORE_OP_MARK) != marks) continue;
        int rc;
        r->versions[i] = 0;
        switch (o->kind) {
        case BUS_STORE_OP_INSERT:
            rc = op_insert(c, o->coll, o->id, o->doc);
            r->versions[i] = 1;
            break;
        case BUS_STORE_OP_MARK:
            rc = op_mark(c, o->coll, o->id, o->doc);
            break;
        default:
            rc = op_batch_write(c, o, &r->versions[i]);
        }
        if (rc) {
            r->failed = (long)i;
            return rc;
        }
    }
    return 0;
}

static int op_batch(ctx_t *c, bus__sreq_t *r) {
    bson_error_t e;
    if (!c->m->txn) {
        /* standalone server: effects first, markers last (see store.h) */
        int rc = run_ops(c, r, 0);
        if (!rc) rc = run_ops(c, r, 1);
        if (rc && r->failed > 0)
            bus_error(NULL, "store mongodb: batch failed at operation %ld without a transaction; earlier operations "
                      "stay applied", r->failed);
        return rc;
    }
    c->ses = mongoc_client_start_session(c->cl, NULL, &e);
    if (!c->ses) return map_err(&e, "start session");
    int rc;
    if (!mongoc_client_session_start_transaction(c->ses, NULL, &e)) {
        rc = map_err(&e, "start transaction");
    } else {
        rc = run_ops(c, r, 0);
        if (!rc) rc = run_ops(c, r, 1);
        if (rc) {
            mongoc_client_session_abort_transaction(c->ses, NULL);
        } else {
            bson_t reply;
            bool ok = mongoc_client_session_commit_transaction(c->ses, &reply, &e);
            if (!ok && mongoc_error_has_label(&reply, "UnknownTransactionCommitResult")) {
                bson_destroy(&reply);
                ok = mongoc_client_session_commit_transaction(c->ses, &reply, &e); /* retry once */
            }
            bson_destroy(&reply);
            if (!ok) {
                rc = map_err(&e, "commit");
                r->failed = -1;
            }
        }
    }
    mongoc_client_session_destroy(c->ses);
    c->ses = NULL;
    return rc;
}

static int op_prune(ctx_t *c, bus__sreq_t *r) {
    bson_t f = BSON_INITIALIZER, s, reply;
    bson_append_document_begin(&f, "at", -1, &s);
    BSON_APPEND_INT64(&s, "$lt", r->version);
    bson_append_document_end(&f, &s);
    mongoc_collection_t *col = coll_of(c, MARKERS);
    bson_error_t e;
    int rc = 0;
    if (mongoc_collection_delete_many(col, &f, NULL, &reply, &e)) {
        bson_iter_t it;
        r->count = bson_iter_init_find(&it, &reply, "deletedCount") ? bson_iter_as_int64(&it) : 0;
    } else {
        rc = map_err(&e, "prune");
    }
    bson_destroy(&reply);
    bson_destroy(&f);
    mongoc_collection_destroy(col);
    return rc;
}

static void mg_exec(void *impl, bus__sreq_t *r) {
    mg_t *m = impl;
    ctx_t c = {.m = m, .cl = mongoc_client_pool_pop(m->pool)};
    if (!c.cl) {
        r->status = BUS_EUNAVAILABLE;
        return;
    }
    switch (r->kind) {
    case BUS__SREQ_GET:
        r->status = op_get(&c, r->coll, r->id, &r->out, NULL);
        break;
    case BUS__SREQ_INSERT:
        r->status = op_insert(&c, r->coll, r->id, r->doc);
        if (!r->status) {
            r->out = bus__store_with_meta(r->doc, r->id, 1);
            r->doc = NULL;
        }
        break;
    case BUS__SREQ_REPLACE:
    case BUS__SREQ_UPDATE:
        r->status = op_write(&c, r->coll, r->id, r->version, r->doc, r->kind == BUS__SREQ_UPDATE, &r->out);
        break;
    case BUS__SREQ_DELETE:
        r->status = op_delete(&c, r->coll, r->id, r->version);
        break;
    case BUS__SREQ_FIND:
        r->status = op_find(&c, r);
        break;
    case BUS__SREQ_COUNT:
        r->status = op_count(&c, r);
        break;
    case BUS__SREQ_FOAU:
        r->status = op_foau(&c, r);
        break;
    case BUS__SREQ_BATCH:
        r->status = op_batch(&c, r);
        break;
    case BUS__SREQ_PGET:
        r->status = op_pget(&c, r->coll, r->id, &r->out);
        break;
    case BUS__SREQ_PRUNE:
        r->status = op_prune(&c, r);
        break;
    case BUS__SREQ_PING: {
        bson_t cmd = BSON_INITIALIZER;
        bson_error_t e;
        BSON_APPEND_INT32(&cmd, "ping", 1);
        r->status = mongoc_client_command_simple(c.cl, "admin", &cmd, NULL, NULL, &e) ? 0 : BUS_EUNAVAILABLE;
        bson_destroy(&cmd);
        break;
    }
    }
    mongoc_client_pool_push(m->pool, c.cl);
}

/* ---- open / declare / close ----------------------------------------------- */

static int mg_declare(void *impl, const char *coll, const char *const *idx, const char *const *uniq, char *err,
                      size_t errlen) {
    mg_t *m = impl;
    mongoc_client_t *cl = mongoc_client_pool_pop(m->pool);
    bson_t cmd = BSON_INITIALIZER, arr;
    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    bson_append_array_begin(&cmd, "indexes", -1, &arr);
    int n = 0;
    for (int u = 0; u < 2; u++) {
        const char *const *l = u ? uniq : idx;
        for (size_t i = 0; l && l[i]; i++) {
            char key[12], name[300], buf[1100], *save = NULL;
            bson_t ix, k, pf;
            snprintf(key, sizeof key, "%d", n++);
            snprintf(buf, sizeof buf, "%s", l[i]);
            snprintf(name, sizeof name, "%s_%.280s", u ? "ux" : "ix", l[i]);
            bson_append_document_begin(&arr, key, -1, &ix);
            bson_append_document_begin(&ix, "key", -1, &k);
            for (char *f = strtok_r(buf, ",", &save); f; f = strtok_r(NULL, ",", &save)) BSON_APPEND_INT32(&k, f, 1);
            bson_append_document_end(&ix, &k);
            BSON_APPEND_UTF8(&ix, "name", name);
            if (u) {
                BSON_APPEND_BOOL(&ix, "unique", true);
                bson_append_document_begin(&ix, "partialFilterExpression", -1, &pf);
                snprintf(buf, sizeof buf, "%s", l[i]);
                for (char *f = strtok_r(buf, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
                    bson_t ex;
                    bson_append_document_begin(&pf, f, -1, &ex);
                    BSON_APPEND_BOOL(&ex, "$exists", true);
                    bson_append_document_end(&pf, &ex);
                }
                bson_append_document_end(&ix, &pf);
            }
            bson_append_document_end(&arr, &ix);
        }
    }
    bson_append_array_end(&cmd, &arr);
    bson_error_t e;
    int rc = 0;
    if (n > 0) {
        if (!mongoc_client_write_command_with_opts(cl, m->db, &cmd, NULL, NULL, &e)) {
            rc = map_err(&e, "createIndexes");
            if (err) snprintf(err, errlen, "BUS_STORE=%s: declaring %s: %s", m->url, coll, e.message);
        }
    }
    bson_destroy(&cmd);
    mongoc_client_pool_push(m->pool, cl);
    return rc;
}

static void mg_close(void *impl) {
    mg_t *m = impl;
    if (m->pool) mongoc_client_pool_destroy(m->pool);
    if (m->uri) mongoc_uri_destroy(m->uri);
    free(m);
}

int bus__store_mongo_open(const char *url, void **impl, char *err, size_t errlen) {
    pthread_once(&mg_once, mg_init);
    mg_t *m = calloc(1, sizeof *m);
    if (!m) return BUS_EINTERNAL;
    /* mask the password in messages: scheme://user:***@host */
    const char *p = strstr(url, "://"), *at = p ? strchr(p + 3, '@') : NULL, *colon = p ? strchr(p + 3, ':') : NULL;
    if (at && colon && colon < at)
        snprintf(m->url, sizeof m->url, "%.*s:***%.400s", (int)(colon - url), url, at);
    else
        snprintf(m->url, sizeof m->url, "%.500s", url);
    bson_error_t e;
    m->uri = mongoc_uri_new_with_error(url, &e);
    if (!m->uri) {
        if (err) snprintf(err, errlen, "BUS_STORE=%s: bad MongoDB URI: %s", m->url, e.message);
        mg_close(m);
        return BUS_EBAD_REQUEST;
    }
    if (!mongoc_uri_has_option(m->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(m->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
    const char *db = mongoc_uri_get_database(m->uri);
    snprintf(m->db, sizeof m->db, "%s", db && *db ? db : "bus");
    m->pool = mongoc_client_pool_new(m->uri);
    if (!m->pool) {
        if (err) snprintf(err, errlen, "BUS_STORE=%s: cannot create a client pool", m->url);
        mg_close(m);
        return BUS_EBAD_REQUEST;
    }
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_t *cl = mongoc_client_pool_pop(m->pool);
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_INT32(&cmd, "hello", 1);
    int ok = mongoc_client_command_simple(cl, "admin", &cmd, NULL, &reply, &e);
    if (ok) {
        bson_iter_t it;
        m->txn = bson_iter_init_find(&it, &reply, "setName") ||
                 (bson_iter_init_find(&it, &reply, "msg") && BSON_ITER_HOLDS_UTF8(&it) &&
                  strcmp(bson_iter_utf8(&it, NULL), "isdbgrid") == 0);
    }
    bson_destroy(&reply);
    bson_destroy(&cmd);
    /* the markers' clean-up index */
    if (ok) {
        bson_t ic = BSON_INITIALIZER, arr, ix, k;
        BSON_APPEND_UTF8(&ic, "createIndexes", MARKERS);
        bson_append_array_begin(&ic, "indexes", -1, &arr);
        bson_append_document_begin(&arr, "0", -1, &ix);
        bson_append_document_begin(&ix, "key", -1, &k);
        BSON_APPEND_INT32(&k, "at", 1);
        bson_append_document_end(&ix, &k);
        BSON_APPEND_UTF8(&ix, "name", "at_1");
        bson_append_document_end(&arr, &ix);
        bson_append_array_end(&ic, &arr);
        ok = mongoc_client_write_command_with_opts(cl, m->db, &ic, NULL, NULL, &e);
        bson_destroy(&ic);
    }
    mongoc_client_pool_push(m->pool, cl);
    if (!ok) {
        if (err) snprintf(err, errlen, "BUS_STORE=%s: MongoDB unreachable: %s", m->url, e.message);
        mg_close(m);
        return BUS_EUNAVAILABLE;
    }
    bus_info(NULL, "store: MongoDB %s, database %s, transactions %s", m->url, m->db,
             m->txn ? "available" : "unavailable (standalone server)");
    *impl = m;
    return 0;
}

const bus__store_backend_t bus__store_mongo_backend = {
    .name = "mongodb",
    .declare = mg_declare,
    .exec = mg_exec,
    .close = mg_close,
};
