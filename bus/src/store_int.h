/* Internal to the store: the request every operation becomes, and the
 * backend table. store.c owns the requests (allocates them on the loop
 * thread, queues them for the store threads, calls back and frees them);
 * a backend's exec() runs on a store thread, reads the inputs and fills the
 * outputs. Every input is a private copy, so exec() may use it freely.
 */
#ifndef BUS_STORE_INT_H
#define BUS_STORE_INT_H

#include "bus/store.h"

typedef enum {
    BUS__SREQ_GET = 1,
    BUS__SREQ_INSERT,
    BUS__SREQ_REPLACE,
    BUS__SREQ_UPDATE,
    BUS__SREQ_DELETE,
    BUS__SREQ_FIND,
    BUS__SREQ_COUNT,
    BUS__SREQ_FOAU, /* find one and update */
    BUS__SREQ_BATCH,
    BUS__SREQ_PGET, /* processed marker get */
    BUS__SREQ_PRUNE,
    BUS__SREQ_PING,
} bus__sreq_kind_t;

typedef struct {
    bus_store_op_kind_t kind;
    char *coll;
    char *id;
    int64_t version;
    cJSON *doc; /* owned copy, may be NULL */
} bus__sop_t;

typedef struct bus__sreq {
    struct bus__sreq *wnext; /* link in the store's queues (store.c) */
    bus_store_t *store;
    bus__sreq_kind_t kind;
    /* inputs (owned copies) */
    char *coll;
    char *id;
    int64_t version;
    cJSON *doc;    /* document, patch or marker result */
    cJSON *where;  /* filter (FIND, COUNT, FOAU) */
    char *sort;    /* NULL = _id */
    int limit;
    char *cursor;
    bus__sop_t *ops;
    size_t nops;
    /* outputs */
    int status;
    cJSON *out;        /* document, array of documents, or marker result */
    char *out_text;    /* or the same as JSON text (malloc'd), parsed on the loop thread */
    char *next_cursor; /* malloc'd */
    int64_t count;
    long failed;
    int64_t *versions; /* nops entries */
    /* completion */
    void (*cb)(void);
    void *data;
} bus__sreq_t;

typedef struct {
    const char *name;
    /* Creates the collection and its indexes. idx/uniq: NULL-terminated. */
    int (*declare)(void *impl, const char *coll, const char *const *idx, const char *const *uniq, char *err,
                   size_t errlen);
    void (*exec)(void *impl, bus__sreq_t *r); /* on a store thread */
    /* Group commit (optional): runs the write requests reqs[0..n) on the writer
     * thread, in order, in one transaction, each one all-or-nothing by itself
     * (a failed request leaves no trace and does not fail the others), and
     * makes them durable together. When set, store.c hands it every write
     * (see bus__store_is_write) and never passes a write to exec(). */
    void (*exec_group)(void *impl, bus__sreq_t **reqs, size_t n);
    /* Several reads at once (optional; else exec() for each): the backend
     * may run them in one read transaction. */
    void (*exec_reads)(void *impl, bus__sreq_t **reqs, size_t n);
    void (*close)(void *impl);                /* nothing in flight */
} bus__store_backend_t;

/* Backend constructors (synchronous, at start). */
int bus__store_sqlite_open(const char *path_and_opts, void **impl, char *err, size_t errlen);
/* In the plugin libbus-mongo.so, found with dlsym (store.c). */
int bus__store_mongo_open(const char *uri, void **impl, char *err, size_t errlen);
extern const bus__store_backend_t bus__store_sqlite_backend;
extern const bus__store_backend_t bus__store_mongo_backend;

/* Helpers shared by the backends (store.c). */
/* 1 for the kinds that change data (insert, replace, update, delete, claim,
 * batch, prune), else 0. */
int bus__store_is_write(bus__sreq_kind_t kind);
/* 1 when `p` is a valid dotted field path ("a.b_c"), else 0. */
int bus__store_path_ok(const char *p);
/* A malloc'd document: the parsed body plus "_id" and "_v". body is consumed. */
cJSON *bus__store_with_meta(cJSON *body, const char *id, int64_t v);
/* A malloc'd copy of doc without "_id"/"_v" (an empty object for NULL). */
cJSON *bus__store_body(const cJSON *doc);
/* Cursor <-> (sort value, id). encode: malloc'd string; decode: 0 or
 * BUS_EBAD_REQUEST, *value owned by the caller (cJSON_Delete), *id malloc'd. */
char *bus__store_cursor_encode(const cJSON *value, const char *id);
int bus__store_cursor_decode(const char *cursor, cJSON **value, char **id);
/* Milliseconds since the epoch. */
int64_t bus__store_now_ms(void);

#endif
