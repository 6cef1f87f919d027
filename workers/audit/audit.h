/* bus-audit internals, shared by the files of this worker:
 *
 *   main.c      the worker definition, settings, init/fini, the consumers
 *   chain.c     a record's canonical form and SHA-256 hash (pure)
 *   rules.c     RBAC: permissions, roles, scopes, decisions (pure; rules.h)
 *   trail.c     the appender: records into the store, hash-chained, exactly
 *               once per source id, in batches
 *   streamer.c  the stream: records republished to bus.audit (audit.log) in
 *               seq order by the one process holding the stream lease
 *   intake.c    every event of bus.events and the grant events that
 *               invalidate the RBAC cache
 *   rbac.c      the RBAC cache and the methods check, grant, revoke,
 *               roles_of, role_define, roles
 *   query.c     the methods verify and query over the stored records
 *
 * The chain with several processes. There is ONE chain for the platform.
 * Its tip is the single document of "audit_tip" (id = the tip's seq,
 * zero-padded); a process appends a batch by deleting the tip it read
 * (conditional: it must still exist) and inserting the new tip in the same
 * store batch as the records. Two processes racing for one tip: one commits,
 * the other's batch fails as a whole and is chained again on the new tip.
 * So the store's atomic batch is the sequencer and seq has no gaps. A
 * record is stored under its seq (au_record_id) and names its source in
 * source_id ("e:<event id>", "d:<request id>"), which a unique index keeps
 * unique: a second record for the same event fails its insert, so an event
 * redelivered after a crash is recorded exactly once.
 *
 * The stream (audit.log) gets the records in seq order from the process
 * holding the stream lease (streamer.c); after a crash of that process the
 * next holder republishes from the last seq it knows was confirmed, so a
 * record may appear twice on the stream, with the same seq and hash:
 * readers (busctl tail, the SSE endpoint) skip a seq they have shown.
 *
 * Everything runs on the worker's loop thread.
 */
#ifndef AU_AUDIT_H
#define AU_AUDIT_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "bus/error.h"
#include "bus/op.h"
#include "bus/store.h"
#include "bus/worker.h"

#define AU_COLL_RECORDS "audit_records"
#define AU_COLL_TIP "audit_tip"
#define AU_COLL_CURSOR "audit_cursor"
#define AU_COLL_GRANTS "rbac_grants"
#define AU_COLL_ROLES "rbac_roles"
#define AU_CURSOR_ID "stream"
#define AU_SCOPE_RPC "audit.rpc"
#define AU_SCOPE_EVENTS "audit.events"
/* records per store batch: the batch holds at most 64 operations, two of them the tip */
#define AU_BATCH_RECORDS 62

typedef struct au_trail au_trail_t;
typedef struct au_streamer au_streamer_t;
typedef struct au_cache au_cache_t;

typedef struct au_state {
    bus_worker_t *w;
    bus_store_t *store;
    bus_op_engine_t *engine;
    au_trail_t *trail;
    au_streamer_t *streamer;
    au_cache_t *cache;
    int inflight_batches; /* BUS_AUDIT_INFLIGHT_BATCHES */
    int lease_ms;         /* BUS_AUDIT_LEASE_MS */
    int cache_ttl_ms;     /* BUS_RBAC_CACHE_TTL_MS */
    uv_timer_t *prune_timer;
} au_state_t;

au_state_t *au_state(bus_worker_t *w);
const char *au_str(const cJSON *doc, const char *field); /* "" when absent */
int64_t au_int(const cJSON *doc, const char *field);     /* 0 when absent */

/* ---- chain.c ------------------------------------------------------------ */
extern const char au_genesis_hash[65];
/* The canonical form (malloc'd, caller frees; NULL when out of memory). */
char *au_canonical(const cJSON *record, size_t *len);
void au_sha256_hex(const void *data, size_t len, char out[65]);
int au_record_hash(const cJSON *record, char out[65]);
/* Sets seq, prev_hash and hash on the record. 0 or BUS_EINTERNAL. */
int au_record_seal(cJSON *record, int64_t seq, const char *prev_hash);
/* NULL when the record is record want_seq, follows want_prev and its hash
 * matches its content; else which check failed ("seq", "prev_hash",
 * "hash") with the details in why. */
const char *au_check_link(const cJSON *record, int64_t want_seq, const char *want_prev, char *why, size_t whylen);

/* ---- trail.c -------------------------------------------------------------- */

/* The store id of record `seq`: 12 digits, zero-padded (buf of 13 or more). */
void au_record_id(char *buf, size_t len, int64_t seq);
/* A new record (without seq and hashes): fields as in chain.c; strings may
 * be NULL (""), detail is owned (NULL = null). */
cJSON *au_record_new(const char *time, const char *actor, const char *type, const char *subject,
                     const char *correlation_id, const char *outcome, const char *source_id, cJSON *detail);
/* status: 0 recorded now, BUS_ECONFLICT recorded before (same id: a
 * redelivery), BUS_EUNAVAILABLE the worker is stopping (not recorded). */
typedef void (*au_recorded_cb)(int status, int64_t seq, void *data);
int au_trail_new(au_state_t *st, au_trail_t **out);
/* Appends the record of source `id` (copied; the record's source_id);
 * record is owned. cb runs
 * exactly once, on the loop, once the record is committed (the trail
 * retries the store until it is). */
void au_trail_append(au_trail_t *t, const char *id, cJSON *record, au_recorded_cb cb, void *data);
/* Items waiting or in the store now. */
size_t au_trail_pending(const au_trail_t *t);
void au_trail_free(au_trail_t *t);

/* ---- streamer.c ------------------------------------------------------------ */
int au_streamer_new(au_state_t *st, au_streamer_t **out);
/* Records just committed (an array in seq order; ownership moves in). */
void au_streamer_committed(au_streamer_t *s, cJSON *records);
void au_streamer_free(au_streamer_t *s);

/* ---- rbac.c ------------------------------------------------------------------ */
int au_cache_new(au_state_t *st, au_cache_t **out);
void au_cache_free(au_cache_t *c);
/* A grant event for `user` (NULL = every user: a role was (re)defined). */
void au_cache_invalidate(au_cache_t *c, const char *user);
/* Forgets everything (after a reconnect: grant events may have been missed). */
void au_cache_invalidate_all(au_cache_t *c);
extern const bus_method_t au_methods[];

/* ---- intake.c ---------------------------------------------------------------- */
/* Records one consumed event. done(status, why, data) runs once: 0
 * recorded (now, or before: a redelivery), else not recorded (retry it). */
void au_intake_envelope(au_state_t *st, const bus_envelope_t *env, void (*done)(int status, const char *why, void *data), void *data);
/* The consumers: audit.events (every event) and this process's grant events. */
void au_on_event(bus_delivery_t *d);
void au_on_grant_event(bus_delivery_t *d);
/* The consumers: audit.events (every event) and this process's grant events. */
void au_on_event(bus_delivery_t *d);
void au_on_grant_event(bus_delivery_t *d);

/* ---- the bus_op context of grant, revoke, role_define (rbac.c) ---------------- */
size_t au_rbac_ctx_size(void);
void au_rbac_ctx_reset(bus_op_t *op, void *ctx);
void au_rbac_committed(bus_op_t *op, void *ctx);

#endif
