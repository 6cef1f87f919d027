/* The store: every domain keeps its state through this one narrow interface.
 *
 * Two backends pass the same contract tests (tests/integration/test_store.c):
 *   "sqlite:PATH"   embedded SQLite (the default, BUS_STORE=sqlite:var/bus.db):
 *                   WAL, busy timeout, one connection per store thread,
 *                   expression indexes on the declared fields; several
 *                   processes on one machine may share the file.
 *                   Options: "sqlite:PATH?sync=normal" (default full).
 *   "mongodb://..." MongoDB through a mongoc_client_pool_t; the URI is passed
 *                   to the driver as is (w=majority etc. go there).
 *
 * Data model. A collection holds JSON objects keyed by a string id. Every
 * document the store hands back carries two fields the store owns:
 *   "_id"  the id (string)
 *   "_v"   the version (integer >= 1), set to 1 by insert and bumped by 1 by
 *          every replace/update/find_one_and_update.
 * "_id"/"_v" in documents given to the store are ignored (the id comes from
 * the `id` argument), so a document read back can be modified and written
 * again as is. Field names starting with "_" are reserved.
 *
 * Threading. Every operation runs on one of the store's own threads
 * (BUS_STORE_THREADS readers, default 2 for SQLite and 4 for MongoDB, plus
 * one writer for SQLite's group commit) and completes with a callback on the
 * loop thread: the loop never blocks on storage. Call the bus_store_*
 * functions from the loop thread only.
 *
 * Calling convention of every asynchronous operation:
 *   - returns 0: the operation is queued and its callback will be called
 *     exactly once, later, on the loop thread;
 *   - returns < 0 (BUS_EBAD_REQUEST for bad arguments, BUS_EUNAVAILABLE when
 *     the store is closing): nothing is queued and the callback is NEVER called.
 *   - The store copies every input before returning: the caller keeps
 *     ownership of its strings and cJSON values and may free them at once.
 *   - Results (documents, arrays, cursors) are owned by the store and valid
 *     only during the callback; cJSON_Duplicate() what you keep.
 *   - Status codes in callbacks: 0; BUS_ENOT_FOUND; BUS_ECONFLICT (duplicate
 *     id or unique key, version mismatch, marker already present);
 *     BUS_EBAD_REQUEST (undeclared collection, bad field path, bad cursor);
 *     BUS_EUNAVAILABLE (database busy/locked beyond the busy timeout, server
 *     unreachable, I/O error); BUS_EINTERNAL (anything else; logged).
 *
 * Field paths (indexes, filters, sort) are dotted JSON paths of
 * [A-Za-z0-9_] segments: "state", "profile.name_key". At most 8 per index.
 */
#ifndef BUS_STORE_H
#define BUS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

typedef struct bus_store bus_store_t;

/* `version` argument meaning "whatever the stored version is". */
#define BUS_STORE_ANY_VERSION ((int64_t)-1)
/* Default and maximum page size of bus_store_find. */
#define BUS_STORE_DEFAULT_LIMIT 100
#define BUS_STORE_MAX_LIMIT 1000

/* Opens the store named by `url` ("sqlite:PATH" or "mongodb://..."; NULL or
 * "" means the default "sqlite:var/bus.db"). For SQLite, creates the file
 * (not its directory) and checks it can be written. For MongoDB, pings the
 * server (blocking for up to the URI's serverSelectionTimeoutMS, default
 * 5 s here). Meant to be called at start, before uv_run.
 * On failure writes a message naming BUS_STORE into err[errlen] and returns
 * BUS_EBAD_REQUEST (bad URL) or BUS_EUNAVAILABLE (cannot open / unreachable).
 * *out is owned by the caller; release it with bus_store_close. */
int bus_store_open(uv_loop_t *loop, const char *url, bus_store_t **out, char *err, size_t errlen);

/* Closes the store once every queued operation has completed (their
 * callbacks still run). New operations fail with BUS_EUNAVAILABLE at once.
 * `done` (may be NULL) is called on the loop thread when the store is freed,
 * always later, from the loop (run it until then: the store owns a uv_async
 * handle and threads). Safe with NULL. */
void bus_store_close(bus_store_t *s, void (*done)(void *data), void *data);

/* "sqlite" or "mongodb". Static storage. */
const char *bus_store_backend(const bus_store_t *s);
/* Number of operations queued and not yet called back. */
size_t bus_store_inflight(const bus_store_t *s);

/* Declares a collection and its indexes; synchronous (it blocks), call at start,
 * before uv_run: creates the table/collection and
 * indexes if missing. Each entry of `indexes` and `unique` is one index, a
 * comma-separated list of field paths ("state" or "state,name_key"); both
 * arrays are NULL-terminated and may be NULL. A document lacking one of the
 * fields of a unique index is not constrained by it (on both backends).
 * Declaring again is harmless. Operations on an undeclared collection fail
 * with BUS_EBAD_REQUEST.
 * Returns 0, BUS_EBAD_REQUEST (bad names; message in err) or
 * BUS_EUNAVAILABLE / BUS_EINTERNAL (database error; message in err). */
int bus_store_declare(bus_store_t *s, const char *collection, const char *const *indexes,
                      const char *const *unique, char *err, size_t errlen);

/* ---- single-document operations ------------------------------------- */

/* doc: the document with "_id"/"_v", or NULL on error. */
typedef void (*bus_store_doc_cb)(int status, const cJSON *doc, void *data);
/* Plain status. */
typedef void (*bus_store_status_cb)(int status, void *data);

/* Checks that the database answers (health endpoints): 0 or
 * BUS_EUNAVAILABLE. */
int bus_store_ping(bus_store_t *s, bus_store_status_cb cb, void *data);

/* The document `id`, or BUS_ENOT_FOUND. */
int bus_store_get(bus_store_t *s, const char *coll, const char *id, bus_store_doc_cb cb, void *data);

/* Inserts `doc` (a JSON object) under `id` with version 1. BUS_ECONFLICT when
 * the id exists or a unique index is violated. The callback receives the
 * stored document. */
int bus_store_insert(bus_store_t *s, const char *coll, const char *id, const cJSON *doc,
                     bus_store_doc_cb cb, void *data);

/* Replaces the whole document `id` if its version is `version` (or any,
 * BUS_STORE_ANY_VERSION). BUS_ENOT_FOUND when absent, BUS_ECONFLICT when the
 * version differs or a unique index is violated. Callback: the new document. */
int bus_store_replace(bus_store_t *s, const char *coll, const char *id, int64_t version,
                      const cJSON *doc, bus_store_doc_cb cb, void *data);

/* Like replace, but `patch` is a JSON object of top-level fields to set; a
 * field whose value is JSON null is removed. Callback: the new document. */
int bus_store_update(bus_store_t *s, const char *coll, const char *id, int64_t version,
                     const cJSON *patch, bus_store_doc_cb cb, void *data);

/* Deletes `id` if its version matches. BUS_ENOT_FOUND / BUS_ECONFLICT. */
int bus_store_delete(bus_store_t *s, const char *coll, const char *id, int64_t version,
                     bus_store_status_cb cb, void *data);

/* ---- queries ---------------------------------------------------------- */

/* A filter is a JSON object; every member is one condition, all must hold:
 *   "state": "open"                 equality (string, number, true/false);
 *   "leader": null                  the field is null or missing;
 *   "due_at": {"$lte": 1700000000}  comparison: $lt $lte $gt $gte $ne (one
 *                                   or more in the object), numbers or strings.
 * "_id" may be used like a field (other "_" fields may not). NULL means every document. Comparisons
 * between a number and a string never match. Fields need not be indexed,
 * but only declared indexes make a filter fast. */
typedef struct {
    const cJSON *where;  /* filter, or NULL */
    const char *sort;    /* field path, "-path" for descending; NULL = "_id" */
    int limit;           /* page size; 0 = BUS_STORE_DEFAULT_LIMIT, capped at MAX */
    const char *cursor;  /* next_cursor of the previous page, or NULL */
} bus_store_query_t;

/* docs: a JSON array of documents (empty when nothing matched).
 * next_cursor: NULL on the last page, else an opaque string to pass as the
 * next query's cursor (with the same where/sort). Pagination is keyset-based
 * on (sort value, _id): stable while documents are inserted or deleted
 * (each document still present is returned at most once). Sorting on a field
 * whose values mix types (numbers and strings) is not supported on MongoDB. */
typedef void (*bus_store_find_cb)(int status, const cJSON *docs, const char *next_cursor, void *data);
int bus_store_find(bus_store_t *s, const char *coll, const bus_store_query_t *q, bus_store_find_cb cb,
                   void *data);

typedef void (*bus_store_count_cb)(int status, int64_t count, void *data);
/* Number of documents matching `where` (NULL = all). */
int bus_store_count(bus_store_t *s, const char *coll, const cJSON *where, bus_store_count_cb cb, void *data);

/* Atomically: takes the first document matching `where` in `sort` order
 * (NULL = by _id), applies `patch` as bus_store_update does and bumps its
 * version, and returns the new document; BUS_ENOT_FOUND when none matches.
 * Two callers (threads, processes, machines) never get the same document
 * for a filter the patch makes false: the work-claim primitive. */
int bus_store_find_one_and_update(bus_store_t *s, const char *coll, const cJSON *where, const char *sort,
                                  const cJSON *patch, bus_store_doc_cb cb, void *data);

/* ---- atomic batches and exactly-once markers -------------------------- */

typedef enum {
    BUS_STORE_OP_INSERT = 1, /* coll, id, doc */
    BUS_STORE_OP_REPLACE,    /* coll, id, version, doc */
    BUS_STORE_OP_UPDATE,     /* coll, id, version, doc = patch */
    BUS_STORE_OP_DELETE,     /* coll, id, version */
    BUS_STORE_OP_MARK,       /* coll = scope, id = event/request id, doc = result (any JSON, may be NULL) */
} bus_store_op_kind_t;

typedef struct {
    bus_store_op_kind_t kind;
    const char *coll;
    const char *id;
    int64_t version; /* expected version (REPLACE/UPDATE/DELETE); BUS_STORE_ANY_VERSION */
    const cJSON *doc;
} bus_store_op_t;

/* status: 0 when every operation was applied, else the first failure and
 * nothing was applied. failed: index of the failing operation, -1 when none
 * (or when the failure is not tied to one, e.g. BUS_EUNAVAILABLE).
 * versions[i]: on success, the new version of op i (0 for DELETE and MARK);
 * NULL on failure. A MARK that already exists fails with BUS_ECONFLICT at its
 * index: the request was already processed; read its result with
 * bus_store_processed_get. */
typedef void (*bus_store_batch_cb)(int status, long failed, const int64_t *versions, void *data);

/* Applies ops[0..n) atomically: all or nothing, in one transaction (SQLite;
 * MongoDB replica sets and sharded clusters). On a standalone MongoDB,
 * which has no transactions, the operations are applied in order with the
 * MARK operations last; a failure midway leaves the earlier ones applied
 * (logged at error level), and a crash between effect and marker is caught
 * on redelivery by the version checks of the conditional operations.
 * 1 <= n <= 64. */
int bus_store_batch(bus_store_t *s, const bus_store_op_t *ops, size_t n, bus_store_batch_cb cb, void *data);

/* result: the JSON stored with the marker (JSON null when none was given). */
typedef void (*bus_store_processed_cb)(int status, const cJSON *result, void *data);
/* Looks up the marker (scope, id): 0 with its result, or BUS_ENOT_FOUND. */
int bus_store_processed_get(bus_store_t *s, const char *scope, const char *id, bus_store_processed_cb cb,
                            void *data);
/* Records a marker alone (a one-operation batch). BUS_ECONFLICT if present. */
int bus_store_processed_put(bus_store_t *s, const char *scope, const char *id, const cJSON *result,
                            bus_store_status_cb cb, void *data);
/* Deletes markers recorded more than `older_than_ms` ago; count = removed. */
int bus_store_processed_prune(bus_store_t *s, int64_t older_than_ms, bus_store_count_cb cb, void *data);

#endif
