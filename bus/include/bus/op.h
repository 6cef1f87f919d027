/* bus_op: the exactly-once life of a state-changing request, consumed event
 * or job of a domain, so that a domain is a table of handlers plus its rules.
 *
 *   1. Marker check. bus_store_processed_get(scope, key): when found, the
 *      work was already done (the process died before answering, or the
 *      same message came twice): the stored events are published again with
 *      their original ids (consumers deduplicate by id) and the stored reply
 *      is answered. Nothing is applied twice. A method may instead read the
 *      marker together with its first documents (bus_op_load_marker), which
 *      saves a store round trip.
 *   2. Load, decide, plan. The domain's steps (bus_op_step_fn) launch loads
 *      (bus_op_load_*) whose results land in the domain's per-op context
 *      (bus_op_ctx), wait for them (bus_op_load_wait), apply their rules and
 *      build the plan: document changes, each conditional on the version
 *      read (bus_op_plan_*), events for the outbox (bus_op_plan_event: built
 *      and validated here, ids known) and the reply.
 *   3. Commit ONE store batch: the changes plus a MARK (scope, key) whose
 *      result is the outbox {"reply": "<body>", "events": [{type,id,body}]}.
 *      A version conflict means another request (in this process or any
 *      other) changed a document since it was read: the context is reset
 *      and the whole load-decide-commit runs again on fresh data after a
 *      jittered, growing pause, until the op's deadline (see "Contention").
 *      A conflict on the MARK itself means a twin of this request committed
 *      first: its stored outcome is replayed (step 1).
 *   4. Publish the outbox with confirms, then answer the request, ack the
 *      event or call the job's callback. A process that dies between 3 and 4
 *      is redelivered the message and step 1 publishes the same events.
 * Refusals (rule violations, not found) store nothing: a redelivered refused
 * request is decided again.
 *
 * Contention. Requests on one key run one at a time inside a process
 * (bus_op_lock), so a burst on one alliance does not collide with itself.
 * Across processes the store's conditional writes decide, and a request that
 * lost a race is decided again on fresh data until its deadline (a
 * request's own: bus_request_deadline, when its caller stops waiting; an
 * event's or job's: the engine's retry_budget_ms after it started),
 * with a random pause that doubles up to 100 ms: with N processes at most N
 * requests on one key are in the store at once and one of them always wins,
 * so every request that does not conflict by the rules succeeds whatever the
 * number of processes. `conflict` then means the domain's rules conflict
 * (a name taken, a user already in an alliance); a request whose deadline
 * passes while it keeps losing answers `unavailable` ("busy, try again"),
 * never a false `conflict`. Counted in bus_op_conflict_retries_total.
 *
 * Ownership. An op is created by bus_op_new_* and owned by the engine from
 * bus_op_start / bus_op_run until it ends: every path ends it exactly once
 * (bus_op_fail, bus_op_reply, bus_op_commit, or a replay), which answers the
 * request / finishes the event / calls the job callback and frees the op.
 * Do not touch op after calling one of those. The context (ctx_size bytes,
 * zeroed) belongs to the domain; ctx_reset must free what it points to and
 * zero it: it runs before each retry and when the op ends. Loaded documents
 * are copies owned by the context. Everything runs on the worker's loop
 * thread; the op holds its request or event, so the SIGTERM drain waits
 * for it (a job counts as in-flight work of the worker too).
 */
#ifndef BUS_OP_H
#define BUS_OP_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "bus/store.h"
#include "bus/worker.h"

typedef struct bus_op bus_op_t;
typedef struct bus_op_engine bus_op_engine_t;
typedef void (*bus_op_step_fn)(bus_op_t *op);
/* A job's end: status 0 (done now, or found already done) or the error,
 * with its message ("" on success). data is the job's cbdata. */
typedef void (*bus_op_job_cb)(int status, const char *message, void *data);

/* Plan size: changes plus the marker. */
#define BUS_OP_MAX_OPS 64

typedef struct bus_op_engine_options {
    const char *rpc_scope;   /* marker scope of requests ("alliances.rpc") */
    const char *event_scope; /* marker scope of consumed events and jobs ("alliances.events") */
    size_t ctx_size;         /* bytes of the domain's context per op (zeroed); 0 = none */
    /* Frees what the context holds and leaves it as zeroed; runs before a
     * retry and when the op ends. May be NULL. */
    void (*ctx_reset)(bus_op_t *op, void *ctx);
    /* Runs once after the commit succeeded, before the outbox is published
     * (follow-up work of the domain, e.g. best-effort clean-ups). May be NULL. */
    void (*committed)(bus_op_t *op, void *ctx);
    /* How long an event or job keeps retrying lost races; 0 =
     * BUS_RPC_TIMEOUT_MS. (A request retries until its own deadline.) */
    int retry_budget_ms;
} bus_op_engine_options_t;

/* Creates the engine of a domain (in its init). The store and w must
 * outlive it; options' strings must be static. Returns 0 or BUS_EINTERNAL. */
int bus_op_engine_new(bus_worker_t *w, bus_store_t *store, const bus_op_engine_options_t *o, bus_op_engine_t **out);
/* Frees the engine (in fini, after the loop ended: no op is left then). */
void bus_op_engine_free(bus_op_engine_t *e);
bus_store_t *bus_op_engine_store(const bus_op_engine_t *e);

/* ---- starting --------------------------------------------------------- */

/* An op for an RPC request; the request moves into the op. NULL when out
 * of memory (the request is then still the caller's). */
bus_op_t *bus_op_new_request(bus_op_engine_t *e, bus_request_t *req, bus_op_step_fn load);
/* An op for a consumed event (its data are the params, its id the key). */
bus_op_t *bus_op_new_event(bus_op_engine_t *e, bus_event_t *ev, bus_op_step_fn load);
/* An op the domain starts itself (a timer's work, a batch item): key is its
 * idempotency key in the event scope ("" = none), params are copied, cb
 * gets the outcome. Counted as in-flight work of the worker until cb. */
bus_op_t *bus_op_new_job(bus_op_engine_t *e, const char *key, const char *correlation_id, const cJSON *params,
                         bus_op_step_fn load, bus_op_job_cb cb, void *cbdata);
/* Starts a state-changing op: marker check, then load(op). When
 * marker_in_load is set the load step reads the marker itself
 * (bus_op_load_marker) instead. */
void bus_op_start(bus_op_t *op, int marker_in_load);
/* Starts a read-only op: no marker, no commit; end it with bus_op_reply or
 * bus_op_fail. */
void bus_op_run(bus_op_t *op);

/* ---- what an op knows --------------------------------------------------- */
void *bus_op_ctx(bus_op_t *op);
const cJSON *bus_op_params(const bus_op_t *op);
/* The method ("join"), the event type, or "job". */
const char *bus_op_method(const bus_op_t *op);
const char *bus_op_key(const bus_op_t *op);
const char *bus_op_correlation_id(const bus_op_t *op);
bus_request_t *bus_op_request(const bus_op_t *op); /* NULL unless an RPC */
bus_event_t *bus_op_event(const bus_op_t *op);     /* NULL unless an event */
bus_worker_t *bus_op_worker(const bus_op_t *op);
bus_op_engine_t *bus_op_engine(const bus_op_t *op);
bus_store_t *bus_op_store(const bus_op_t *op);
/* Load-decide-commit rounds so far: 0 on the first. */
int bus_op_attempt(const bus_op_t *op);

/* ---- ending without a change ------------------------------------------ */

/* Ends with an error: the request is answered with it; an event is acked
 * for BUS_ENOT_FOUND/BUS_EPERMISSION (nothing to do), retried later for
 * BUS_ECONFLICT and the retryable codes, dead-lettered otherwise; a job's
 * callback gets it. A refused request looks at its marker once more first,
 * since a twin may have committed meanwhile. Frees op. */
void bus_op_fail(bus_op_t *op, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Ends with success and data (owned), nothing stored, no event. Frees op. */
void bus_op_reply(bus_op_t *op, cJSON *data);

/* ---- pages of read-only methods ------------------------------------------ */

/* Turns a stored document into what the caller sees (a new object). */
typedef cJSON *(*bus_op_view_fn)(const cJSON *doc);
/* Answers one page of `coll`: the params' "limit" (default 50, capped by
 * the store) and "cursor" (the previous page's next_cursor) go to
 * bus_store_find with where/sort; the answer is `head` (owned, NULL = a new
 * object) with `field` set to the documents through view and
 * "next_cursor" (null on the last page). A cursor the store refuses is
 * bad_request. where is consumed; field must be static. Ends op. */
void bus_op_reply_page(bus_op_t *op, const char *coll, cJSON *where, const char *sort, cJSON *head,
                       const char *field, bus_op_view_fn view);

/* ---- per-key serialisation in this process ------------------------------ */

/* Runs next(op) once op holds this process's lock on `key` (at most 63
 * bytes are significant): at once when free or already held by op, else
 * when the holder ends. An op holds at most one lock; locking another key
 * releases the first. */
void bus_op_lock(bus_op_t *op, const char *key, bus_op_step_fn next);

/* ---- loads ---------------------------------------------------------------- */

/* Each launches one load whose result lands in *slot (a copy, owned by the
 * context; NULL when absent). Launch them all, then bus_op_load_wait(op,
 * next): next runs once every load of the step is back. A load error other
 * than not-found ends the op with it. */
void bus_op_load_doc(bus_op_t *op, const char *coll, const char *id, cJSON **slot);
/* *slot gets the array of matching documents. where is consumed. */
void bus_op_load_find(bus_op_t *op, const char *coll, cJSON *where, const char *sort, int limit, cJSON **slot);
void bus_op_load_wait(bus_op_t *op, bus_op_step_fn next);
/* For an op started with marker_in_load: reads the marker as one more load
 * of the step (only the first call of an op reads it); the step after that
 * wait must begin with `if (bus_op_marker_replayed(op)) return;`. */
void bus_op_load_marker(bus_op_t *op);
/* 1 when the marker was found: the stored outcome was replayed and op is
 * gone. 0: go on. */
int bus_op_marker_replayed(bus_op_t *op);

/* ---- the plan and the commit ---------------------------------------------- */

/* Each takes ownership of doc/patch. Strings are copied. */
void bus_op_plan_insert(bus_op_t *op, const char *coll, const char *id, cJSON *doc);
void bus_op_plan_replace(bus_op_t *op, const char *coll, const char *id, int64_t version, cJSON *doc);
void bus_op_plan_update(bus_op_t *op, const char *coll, const char *id, int64_t version, cJSON *patch);
void bus_op_plan_delete(bus_op_t *op, const char *coll, const char *id, int64_t version);
/* Adds an event to the outbox (data owned), built and validated by
 * bus_worker_build_event. 0, or BUS_EINVALID (the data break the event's
 * schema: a bug, logged) / BUS_EINTERNAL; the commit then fails. */
int bus_op_plan_event(bus_op_t *op, const char *type, const char *subject, cJSON *data);
/* Planned changes so far. */
size_t bus_op_planned(const bus_op_t *op);
/* Commits the plan with the marker, publishes the outbox, then answers
 * data (owned; validated against the method's result schema) or acks the
 * event / calls the job back. Frees op. */
void bus_op_commit(bus_op_t *op, cJSON *data);

#endif
