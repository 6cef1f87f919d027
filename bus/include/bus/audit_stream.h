/* Reading the audit.log stream (docs/ARCHITECTURE.md "The audit trail").
 *
 * bus-audit (workers/audit/streamer.c) publishes the records in packs: one
 * stream message holds a JSON array of consecutive records in seq order
 * (headers x-audit-seq and x-audit-seq-last: the first and last seq). A
 * pack costs the broker one message where a record each would cost it one
 * per record, on the way in and on the way out to every reader. A message
 * holding one record as a bare JSON object (streams written before packs)
 * reads as a pack of one.
 *
 * After a crash of the streaming process the stream may hold records twice
 * (same seq, same hash): a reader shows only the record it expects next.
 *
 * Ownership: bus_audit_stream_records returns a cJSON array the caller
 * deletes; bus_audit_follow_t is a plain value the caller keeps.
 */
#ifndef BUS_AUDIT_STREAM_H
#define BUS_AUDIT_STREAM_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

/* The records of one stream message (an array; empty when the body is
 * neither a record nor an array of them); NULL only when out of memory. */
cJSON *bus_audit_stream_records(const char *body, size_t len);

/* Which records a reader shows: each seq once, in order. */
typedef struct bus_audit_follow {
    int64_t next_seq; /* 0: show the first record whatever its seq; S+1 to resume after seq S */
    int shown;        /* a record was shown (set by bus_audit_follow_show) */
} bus_audit_follow_t;

/* 1 when `record` is the one to show next (and it becomes the last shown),
 * 0 when it is a repeat or out of order. A record with seq 1 and the genesis
 * prev_hash after later ones were shown is a new chain (a fresh store):
 * shown. (Before anything was shown it is the start of the chain a resumed
 * reader has already seen, and skipped.) */
int bus_audit_follow_show(bus_audit_follow_t *f, const cJSON *record);

/* The SSE event id of a record: "<offset>-<seq>" (the stream offset of its
 * pack and its seq); buf of 48 bytes or more. Returns the length. */
int bus_audit_event_id(char *buf, size_t len, int64_t offset, int64_t seq);

/* Parses a Last-Event-ID: "<offset>-<seq>" gives *offset and *after_seq
 * (resume by reading that pack again and showing the records after seq);
 * a bare "<offset>" (the ids before packs) gives offset+1 and 0. Decimal
 * digits only, offset >= 0, seq >= 1. 0, or -1 when it is neither. */
int bus_audit_event_id_parse(const char *id, int64_t *offset, int64_t *after_seq);

#endif
