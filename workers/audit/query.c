/* audit.verify and audit.query: reads over the stored records.
 *
 * verify {from?, to?}: reads the records from seq `from` (default 1) to `to`
 * (default the chain's tip) in seq order, 1000 at a time, and checks each:
 * it is the next seq (none missing), its prev_hash is the hash of the record
 * before (64 zeros before seq 1; for from > 1 the stored hash of from-1),
 * and its hash is the SHA-256 of its canonical form (chain.c). At the tip
 * the last hash must be the tip's. Answers {ok, from, to, checked, tip,
 * first_broken: null | {seq, id (its source_id), check, reason}}: the first link that
 * fails, so a record edited in the store names itself (check "hash"), a
 * deleted one names the gap (check "seq").
 *
 * query {actor?, type?, subject?, since?, until?, limit?, cursor?}: the
 * records matching every given field (time since <= t < until), by seq,
 * a page at a time (limit default 100, at most 1000); next_cursor continues.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "bus/log.h"

typedef struct {
    bus_request_t *req;
    au_state_t *st;
    int64_t from, to, want, checked;
    int64_t tip_seq;
    char tip_hash[65];
    char prev[65];
} verify_t;

static void verify_page(verify_t *v, const char *cursor);

static void verify_end(verify_t *v, int64_t seq, const char *id, const char *check, const char *reason) {
    cJSON *out = cJSON_CreateObject();
    cJSON_AddBoolToObject(out, "ok", check == NULL);
    cJSON_AddNumberToObject(out, "from", (double)v->from);
    cJSON_AddNumberToObject(out, "to", (double)v->to);
    cJSON_AddNumberToObject(out, "checked", (double)v->checked);
    cJSON *tip = cJSON_AddObjectToObject(out, "tip");
    cJSON_AddNumberToObject(tip, "seq", (double)v->tip_seq);
    cJSON_AddStringToObject(tip, "hash", v->tip_hash);
    if (check) {
        cJSON *b = cJSON_AddObjectToObject(out, "first_broken");
        cJSON_AddNumberToObject(b, "seq", (double)seq);
        cJSON_AddStringToObject(b, "id", id ? id : "");
        cJSON_AddStringToObject(b, "check", check);
        cJSON_AddStringToObject(b, "reason", reason);
        bus_warn(bus_request_correlation_id(v->req), "audit chain broken at seq %lld (%s): %s", (long long)seq, check,
                 reason);
    } else {
        cJSON_AddNullToObject(out, "first_broken");
    }
    bus_reply_ok(v->req, out);
    free(v);
}

static void on_page(int status, const cJSON *docs, const char *next, void *data) {
    verify_t *v = data;
    if (status != 0) {
        bus_reply_error(v->req, BUS_EUNAVAILABLE, "reading the records failed: %s", bus_strerror(status));
        free(v);
        return;
    }
    const cJSON *r;
    char why[400];
    cJSON_ArrayForEach(r, docs) {
        const char *bad = au_check_link(r, v->want, v->prev, why, sizeof why);
        if (bad) {
            verify_end(v, v->want, strcmp(bad, "seq") == 0 ? "" : au_str(r, "source_id"), bad, why);
            return;
        }
        snprintf(v->prev, sizeof v->prev, "%s", au_str(r, "hash"));
        v->want++;
        v->checked++;
    }
    if (next) {
        verify_page(v, next);
        return;
    }
    if (v->want <= v->to) {
        snprintf(why, sizeof why, "record %lld is missing (the chain goes to %lld)", (long long)v->want,
                 (long long)v->to);
        verify_end(v, v->want, "", "seq", why);
        return;
    }
    if (v->to == v->tip_seq && v->to > 0 && strcmp(v->prev, v->tip_hash) != 0) {
        snprintf(why, sizeof why, "the last record's hash is not the chain tip's %.16s...", v->tip_hash);
        verify_end(v, v->to, "", "tip", why);
        return;
    }
    verify_end(v, 0, NULL, NULL, NULL);
}

static void verify_page(verify_t *v, const char *cursor) {
    cJSON *where = cJSON_CreateObject(), *range = cJSON_CreateObject();
    cJSON_AddNumberToObject(range, "$gte", (double)v->from);
    cJSON_AddNumberToObject(range, "$lte", (double)v->to);
    cJSON_AddItemToObject(where, "seq", range);
    bus_store_query_t q = {.where = where, .sort = "seq", .limit = BUS_STORE_MAX_LIMIT, .cursor = cursor};
    if (bus_store_find(v->st->store, AU_COLL_RECORDS, &q, on_page, v) != 0) {
        bus_reply_error(v->req, BUS_EUNAVAILABLE, "the store is closing");
        free(v);
    }
    cJSON_Delete(where);
}

static void on_before(int status, const cJSON *docs, const char *next, void *data) {
    (void)next;
    verify_t *v = data;
    const cJSON *r = cJSON_GetArrayItem(docs, 0);
    if (status != 0 || !r) {
        char why[128];
        snprintf(why, sizeof why, "record %lld, which record %lld follows, is missing", (long long)v->from - 1,
                 (long long)v->from);
        verify_end(v, v->from - 1, "", "seq", why);
        return;
    }
    snprintf(v->prev, sizeof v->prev, "%s", au_str(r, "hash"));
    verify_page(v, NULL);
}

static void on_verify_tip(int status, const cJSON *docs, const char *next, void *data) {
    (void)next;
    verify_t *v = data;
    if (status != 0) {
        bus_reply_error(v->req, BUS_EUNAVAILABLE, "reading the chain's tip failed: %s", bus_strerror(status));
        free(v);
        return;
    }
    const cJSON *tip = cJSON_GetArrayItem(docs, 0);
    v->tip_seq = tip ? au_int(tip, "seq") : 0;
    snprintf(v->tip_hash, sizeof v->tip_hash, "%s", tip ? au_str(tip, "hash") : au_genesis_hash);
    if (v->to <= 0 || v->to > v->tip_seq) v->to = v->tip_seq;
    v->want = v->from;
    if (v->from > v->to) {
        verify_end(v, 0, NULL, NULL, NULL);
        return;
    }
    if (v->from == 1) {
        snprintf(v->prev, sizeof v->prev, "%s", au_genesis_hash);
        verify_page(v, NULL);
        return;
    }
    cJSON *where = cJSON_CreateObject();
    cJSON_AddNumberToObject(where, "seq", (double)(v->from - 1));
    bus_store_query_t q = {.where = where, .limit = 1};
    if (bus_store_find(v->st->store, AU_COLL_RECORDS, &q, on_before, v) != 0) {
        bus_reply_error(v->req, BUS_EUNAVAILABLE, "the store is closing");
        free(v);
    }
    cJSON_Delete(where);
}

void au_verify(bus_request_t *req) {
    verify_t *v = calloc(1, sizeof *v);
    if (!v) {
        bus_reply_error(req, BUS_EINTERNAL, "out of memory");
        return;
    }
    v->req = req;
    v->st = au_state(bus_request_worker(req));
    const cJSON *p = bus_request_params(req);
    v->from = au_int(p, "from") > 0 ? au_int(p, "from") : 1;
    v->to = au_int(p, "to");
    bus_store_query_t q = {.sort = "-seq", .limit = 1};
    if (bus_store_find(v->st->store, AU_COLL_TIP, &q, on_verify_tip, v) != 0) {
        bus_reply_error(req, BUS_EUNAVAILABLE, "the store is closing");
        free(v);
    }
}

/* ---- query ------------------------------------------------------------------ */

static void on_query(int status, const cJSON *docs, const char *next, void *data) {
    bus_request_t *req = data;
    if (status == BUS_EBAD_REQUEST) {
        bus_reply_error(req, BUS_EINVALID, "/params/cursor: not a cursor of this query");
        return;
    }
    if (status != 0) {
        bus_reply_error(req, BUS_EUNAVAILABLE, "reading the records failed: %s", bus_strerror(status));
        return;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON *recs = cJSON_AddArrayToObject(out, "records");
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        cJSON *r = cJSON_Duplicate(d, 1);
        cJSON_DeleteItemFromObjectCaseSensitive(r, "_id");
        cJSON_DeleteItemFromObjectCaseSensitive(r, "_v");
        cJSON_AddItemToArray(recs, r);
    }
    if (next) cJSON_AddStringToObject(out, "next_cursor", next);
    else cJSON_AddNullToObject(out, "next_cursor");
    bus_reply_ok(req, out);
}

void au_query(bus_request_t *req) {
    const cJSON *p = bus_request_params(req);
    cJSON *where = cJSON_CreateObject();
    static const char *const eq[] = {"actor", "type", "subject"};
    for (size_t i = 0; i < 3; i++)
        if (*au_str(p, eq[i])) cJSON_AddStringToObject(where, eq[i], au_str(p, eq[i]));
    const char *since = au_str(p, "since"), *until = au_str(p, "until");
    if (*since || *until) {
        /* records carry UTC times with milliseconds: normalised, they compare as strings */
        cJSON *t = cJSON_AddObjectToObject(where, "time");
        int64_t ms;
        char norm[32];
        if (*since && bus_rfc3339_parse(since, &ms) == 0) {
            bus_rfc3339_format(ms, norm);
            cJSON_AddStringToObject(t, "$gte", norm);
        }
        if (*until && bus_rfc3339_parse(until, &ms) == 0) {
            bus_rfc3339_format(ms, norm);
            cJSON_AddStringToObject(t, "$lt", norm);
        }
    }
    const char *cursor = au_str(p, "cursor");
    bus_store_query_t q = {.where = where, .sort = "seq", .limit = (int)au_int(p, "limit"),
                           .cursor = *cursor ? cursor : NULL};
    if (bus_store_find(au_state(bus_request_worker(req))->store, AU_COLL_RECORDS, &q, on_query, req) != 0)
        bus_reply_error(req, BUS_EUNAVAILABLE, "the store is closing");
    cJSON_Delete(where);
}
