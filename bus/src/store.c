/* The store interface: URL parsing, argument checks, and the threads every
 * backend shares.
 *
 * Each public operation copies its inputs into a bus__sreq_t on the loop
 * thread and queues it for the store's own threads; the backend runs it
 * there, and the user is called back on the loop thread. The store counts
 * requests in flight so that close can wait for them.
 *
 * Threads. Not libuv's pool: its one global mutex and a condition-variable
 * wake per job made futex calls a third of a worker's CPU on store-heavy
 * RPCs. Here the requests of a loop turn are handed over together (one lock,
 * at most one wake-up per thread), BUS_STORE_THREADS reader threads
 * (default 2) take up to READ_BATCH queued requests per wake, and finished
 * requests go back in batches too: one uv_async_send wakes the loop for all
 * of them.
 *
 * Group commit: when the backend has exec_group (SQLite), writes go to one
 * writer thread instead, which takes every waiting write (up to
 * BUS_STORE_MAX_GROUP) as one group that the backend runs in one
 * transaction with one fsync. A lone write starts at once (no timer, no
 * added latency); under load, the writes that arrive while one group
 * commits share the next commit. Durability per write is unchanged: a
 * callback reports success only after its group's commit.
 */
#include <ctype.h>
#include <dlfcn.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/log.h"
#include "store_int.h"

#define BUS_STORE_MAX_COLLS 64
#define BUS_STORE_MAX_ID 512
#define BUS_STORE_MAX_BATCH 64
#define BUS_STORE_MAX_GROUP 256 /* write requests per group commit */
#define BUS_STORE_MAX_THREADS 16
#define READ_BATCH 8            /* requests a reader takes per wake */

typedef struct {
    bus__sreq_t *head, *tail;
} req_list_t;

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
    /* dispatch (see the top of the file); mu guards the lists and counters */
    pthread_mutex_t mu;
    pthread_cond_t read_cv, write_cv;
    req_list_t reads, writes, finished;
    int idle_readers, writer_idle, stopping;
    pthread_t threads[BUS_STORE_MAX_THREADS + 1];
    int nthreads;
    uv_async_t done_async;     /* the loop's wake-up for `finished` */
    uv_prepare_t submit;       /* hands the turn's requests to the threads */
    req_list_t to_submit;      /* loop thread only: queued in this loop turn */
    int handles_open;          /* done_async, submit */
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
    cJSON *a = bus_json_parse(txt, o, BUS_JSON_MAX_DEPTH, NULL, 0); /* a client's bytes */
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

/* The MongoDB backend lives in libbus-mongo.so (see the Makefile: linking
 * libmongoc costs every process 7 MB even when unused). Looked for in
 * $BUS_MONGO_PLUGIN, then next to the program and up to two folders above
 * it (the build tree), then in ../lib/bus (an installed tree). Loaded once. */
static const bus__store_backend_t *mongo_plugin(int (**open_fn)(const char *, void **, char *, size_t), char *err,
                                                size_t errlen) {
    static void *handle;
    if (!handle) {
        char exe[PATH_MAX], path[PATH_MAX + 64];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        const char *env = getenv("BUS_MONGO_PLUGIN");
        const char *rel[] = {"", "/..", "/../..", "/../lib/bus"};
        for (int i = -1; i < 4 && !handle; i++) {
            if (i < 0 && !(env && *env)) continue;
            if (i < 0)
                snprintf(path, sizeof path, "%s", env);
            else if (slash)
                snprintf(path, sizeof path, "%s%s/libbus-mongo.so", exe, rel[i]);
            else
                continue;
            handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (!handle && i < 0) {
                if (err) snprintf(err, errlen, "BUS_MONGO_PLUGIN=%s: %s", env, dlerror());
                return NULL;
            }
        }
        if (!handle) {
            if (err)
                snprintf(err, errlen, "BUS_STORE=mongodb://...: the MongoDB backend libbus-mongo.so is not next to "
                                      "the program nor in ../lib/bus (set BUS_MONGO_PLUGIN to its path)");
            return NULL;
        }
    }
    const bus__store_backend_t *be = dlsym(handle, "bus__store_mongo_backend");
    *(void **)open_fn = dlsym(handle, "bus__store_mongo_open");
    if (!be || !*open_fn) {
        if (err) snprintf(err, errlen, "BUS_STORE=mongodb://...: libbus-mongo.so is not the MongoDB backend");
        return NULL;
    }
    return be;
}

static int store_threads_start(bus_store_t *s, char *err, size_t errlen);
static void store_free(bus_store_t *s);
static void on_done(uv_async_t *a);

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
        int (*mongo_open)(const char *, void **, char *, size_t);
        if (!(be = mongo_plugin(&mongo_open, err, errlen))) return BUS_EUNAVAILABLE;
        rc = mongo_open(url, &impl, err, errlen);
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
    /* Requests are allocated on the loop thread and results on the store's
     * threads, each freed on the other side. glibc gives every thread its own
     * arena and trims an arena's top as soon as 128 KiB of it are free: under
     * this traffic that meant an madvise and a TLB shootdown across threads
     * many times a second (in a VM, a conditional update went from 56k to
     * 12k ops/s). Keep up to 16 MiB free per arena instead. Process-wide, so
     * only when the program has not chosen its own (MALLOC_TRIM_THRESHOLD_ or
     * GLIBC_TUNABLES). */
    if (!getenv("MALLOC_TRIM_THRESHOLD_") && !getenv("GLIBC_TUNABLES")) mallopt(M_TRIM_THRESHOLD, 16 << 20);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->read_cv, NULL);
    pthread_cond_init(&s->write_cv, NULL);
    uv_async_init(loop, &s->done_async, on_done);
    s->done_async.data = s;
    uv_prepare_init(loop, &s->submit);
    s->submit.data = s;
    s->handles_open = 2;
    rc = store_threads_start(s, err, errlen);
    if (rc) {
        store_free(s); /* joins what started; freed when the handle closes */
        return rc;
    }
    *out = s;
    return 0;
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
    free(r->out_text);
    free(r->next_cursor);
    free(r->versions);
    free(r);
}

/* Calls r's callback with its outcome and frees r; the caller adjusts
 * s->inflight. */
static void complete(bus__sreq_t *r, int uvst) {
    int st = uvst ? BUS_EINTERNAL : r->status;
    if (st == 0 && !r->out && r->out_text) { /* parsed here, on the loop thread (see store_sqlite.c) */
        /* text the store wrote itself: cJSON's own depth bound, as before */
        r->out = bus_json_parse(r->out_text, strlen(r->out_text), CJSON_NESTING_LIMIT, NULL, 0);
        if (!r->out) {
            bus_error(NULL, "store: a stored document is not valid JSON");
            st = BUS_EINTERNAL;
        }
    }
    if (st == 0 && !r->out && r->kind == BUS__SREQ_INSERT) { /* the inserted document as stored */
        r->out = bus__store_with_meta(r->doc, r->id, 1);
        r->doc = NULL;
        if (!r->out) st = BUS_EINTERNAL;
    }
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

static void list_push(req_list_t *l, bus__sreq_t *r) {
    r->wnext = NULL;
    if (l->tail)
        l->tail->wnext = r;
    else
        l->head = r;
    l->tail = r;
}

static bus__sreq_t *list_pop(req_list_t *l) {
    bus__sreq_t *r = l->head;
    if (r) {
        l->head = r->wnext;
        if (!l->head) l->tail = NULL;
        r->wnext = NULL;
    }
    return r;
}

/* On a store thread: hands finished requests back to the loop (s->mu held). */
static void give_back(bus_store_t *s, bus__sreq_t **reqs, size_t n) {
    int wake = s->finished.head == NULL; /* else a wake-up is already on its way */
    for (size_t i = 0; i < n; i++) list_push(&s->finished, reqs[i]);
    if (wake && n) uv_async_send(&s->done_async);
}

static void *reader_main(void *arg) {
    bus_store_t *s = arg;
    bus__sreq_t *batch[READ_BATCH];
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->reads.head && !s->stopping) {
            s->idle_readers++;
            pthread_cond_wait(&s->read_cv, &s->mu);
            s->idle_readers--;
        }
        if (!s->reads.head) break; /* stopping, nothing left */
        size_t n = 0;
        while (n < READ_BATCH && s->reads.head) batch[n++] = list_pop(&s->reads);
        pthread_mutex_unlock(&s->mu);
        if (s->be->exec_reads && n > 1)
            s->be->exec_reads(s->impl, batch, n);
        else
            for (size_t i = 0; i < n; i++) s->be->exec(s->impl, batch[i]);
        pthread_mutex_lock(&s->mu);
        give_back(s, batch, n);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void *writer_main(void *arg) {
    bus_store_t *s = arg;
    static __thread bus__sreq_t *group[BUS_STORE_MAX_GROUP];
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->writes.head && !s->stopping) {
            s->writer_idle = 1;
            pthread_cond_wait(&s->write_cv, &s->mu);
            s->writer_idle = 0;
        }
        if (!s->writes.head) break;
        size_t n = 0;
        while (n < BUS_STORE_MAX_GROUP && s->writes.head) group[n++] = list_pop(&s->writes);
        pthread_mutex_unlock(&s->mu);
        s->be->exec_group(s->impl, group, n);
        pthread_mutex_lock(&s->mu);
        give_back(s, group, n);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void on_async_closed(uv_handle_t *h) {
    bus_store_t *s = h->data;
    if (--s->handles_open > 0) return;
    void (*done)(void *) = s->done;
    void *dd = s->done_data;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->read_cv);
    pthread_cond_destroy(&s->write_cv);
    free(s);
    if (done) done(dd);
}

/* Nothing in flight: stops the threads (idle by now), closes the backend,
 * and frees the store once the async handle has closed. */
static void store_free(bus_store_t *s) {
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->read_cv);
    pthread_cond_broadcast(&s->write_cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->nthreads; i++) pthread_join(s->threads[i], NULL);
    s->nthreads = 0;
    s->be->close(s->impl);
    for (size_t i = 0; i < s->ncolls; i++) free(s->colls[i]);
    uv_close((uv_handle_t *)&s->done_async, on_async_closed);
    uv_close((uv_handle_t *)&s->submit, on_async_closed);
}

/* The loop's side: completes every finished request. */
static void on_done(uv_async_t *a) {
    bus_store_t *s = a->data;
    pthread_mutex_lock(&s->mu);
    req_list_t done = s->finished;
    s->finished.head = s->finished.tail = NULL;
    pthread_mutex_unlock(&s->mu);
    size_t n = 0;
    bus__sreq_t *r;
    /* callbacks may queue more or close the store: it is not freed while
     * these still count in flight */
    while ((r = list_pop(&done))) {
        complete(r, 0);
        n++;
    }
    s->inflight -= n;
    if (s->closing && s->inflight == 0 && !s->stopping) store_free(s);
}

/* Starts the threads; 0 or BUS_EINTERNAL (message in err). */
static int store_threads_start(bus_store_t *s, char *err, size_t errlen) {
    const char *env = getenv("BUS_STORE_THREADS");
    int readers = strcmp(s->be->name, "sqlite") == 0 ? 2 : 4;
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end || v < 1 || v > BUS_STORE_MAX_THREADS) {
            if (err) snprintf(err, errlen, "BUS_STORE_THREADS=%s: expected 1..%d", env, BUS_STORE_MAX_THREADS);
            return BUS_EBAD_REQUEST;
        }
        readers = (int)v;
    }
    for (int i = 0; i < readers + (s->be->exec_group ? 1 : 0); i++) {
        void *(*fn)(void *) = i < readers ? reader_main : writer_main;
        if (pthread_create(&s->threads[i], NULL, fn, s) != 0) {
            if (err) snprintf(err, errlen, "BUS_STORE: cannot start a store thread");
            return BUS_EINTERNAL;
        }
        s->nthreads++;
    }
    return 0;
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
    return r;
}

/* The requests of a loop turn reach the threads together, from a prepare
 * handle (it runs before the loop waits for I/O): one lock and at most one
 * wake-up per thread for the whole turn, where each request used to cost a
 * lock and a futex wake of its own. */
static void on_submit(uv_prepare_t *h) {
    bus_store_t *s = h->data;
    uv_prepare_stop(h);
    size_t nreads = 0;
    int writes = 0;
    bus__sreq_t *r;
    pthread_mutex_lock(&s->mu);
    while ((r = list_pop(&s->to_submit))) {
        if (s->be->exec_group && bus__store_is_write(r->kind)) {
            list_push(&s->writes, r);
            writes = 1;
        } else {
            list_push(&s->reads, r);
            nreads++;
        }
    }
    if (writes && s->writer_idle) pthread_cond_signal(&s->write_cv);
    if (nreads > READ_BATCH && s->idle_readers > 1)
        pthread_cond_broadcast(&s->read_cv);
    else if (nreads && s->idle_readers)
        pthread_cond_signal(&s->read_cv);
    pthread_mutex_unlock(&s->mu);
}

static int req_queue(bus__sreq_t *r) {
    bus_store_t *s = r->store;
    s->inflight++;
    list_push(&s->to_submit, r);
    if (!uv_is_active((uv_handle_t *)&s->submit)) uv_prepare_start(&s->submit, on_submit);
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
