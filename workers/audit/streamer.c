/* The stream: every record, in seq order, republished to bus.audit (the
 * fanout exchange feeding the audit.log stream queue), in packs of up to
 * AU_STREAM_PACK consecutive records per message (bus/audit_stream.h: one
 * broker message per pack instead of one per record, which halved what
 * the broker spent per audited event).
 *
 * One process at a time streams: the holder of the lease in the cursor
 * document ("audit_cursor"/"stream": {owner, until, streamed}). A process
 * takes the lease when it has expired (find_one_and_update on until < now)
 * and renews it at every round and when half of it is left
 * (BUS_AUDIT_LEASE_MS). The holder publishes the records after `streamed`
 * in seq order with confirms, then saves the new `streamed` with its lease.
 * Records its own trail just committed are published from memory; anything
 * else (other processes' records, a round that failed, a new holder catching
 * up) is read back from the store by seq.
 *
 * A holder that dies after publishing and before saving leaves `streamed`
 * behind: the next holder publishes those records again (same seq, same
 * hash). So the stream holds every record, in seq order, some of them
 * twice; a reader shows only the next seq it expects and skips the rest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "bus/log.h"
#include "bus/topology.h"

#define AU_STREAM_ROUND 1000 /* records per round at most */
#define AU_STREAM_PACK 64    /* records per stream message at most (a record is well under 1 KiB) */

struct au_streamer {
    au_state_t *st;
    cJSON *queue; /* records committed here, seq order, not yet published */
    size_t qlen;
    int owner, busy, ready;
    int64_t lease_until, streamed;
    size_t outstanding;
    int failed;
    int64_t round_last;
    uv_timer_t *tick;
};

static void step(au_streamer_t *s);

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_tick(uv_timer_t *h) { step(h->data); }

int au_streamer_new(au_state_t *st, au_streamer_t **out) {
    au_streamer_t *s = calloc(1, sizeof *s);
    if (!s || !(s->queue = cJSON_CreateArray()) || !(s->tick = malloc(sizeof *s->tick))) {
        if (s) cJSON_Delete(s->queue);
        free(s);
        return BUS_EINTERNAL;
    }
    s->st = st;
    uv_timer_init(bus_worker_loop(st->w), s->tick);
    s->tick->data = s;
    /* the holder looks for other processes' records this often; the lease is renewed at half its life */
    uint64_t every = (uint64_t)(st->lease_ms / 5 < 200 ? st->lease_ms / 5 : 200);
    uv_timer_start(s->tick, on_tick, every, every);
    uv_unref((uv_handle_t *)s->tick);
    *out = s;
    return 0;
}

static void on_released(int status, const cJSON *doc, void *data) {
    (void)status;
    (void)doc;
    (void)data;
}

void au_streamer_free(au_streamer_t *s) {
    if (!s) return;
    if (s->owner) { /* a clean stop hands the stream over at once instead of after the lease */
        cJSON *where = cJSON_CreateObject(), *patch = cJSON_CreateObject();
        cJSON_AddStringToObject(where, "_id", AU_CURSOR_ID);
        cJSON_AddStringToObject(where, "owner", bus_worker_instance(s->st->w));
        cJSON_AddNumberToObject(patch, "until", 0);
        bus_store_find_one_and_update(s->st->store, AU_COLL_CURSOR, where, NULL, patch, on_released, NULL);
        cJSON_Delete(where);
        cJSON_Delete(patch);
    }
    cJSON_Delete(s->queue);
    s->queue = NULL;
    uv_close((uv_handle_t *)s->tick, (uv_close_cb)free);
    s->st = NULL; /* callbacks still out see it and free s (below) */
    if (!s->busy) free(s);
}

/* 1 when s was freed while a callback was out: the callback frees it. */
static int gone(au_streamer_t *s) {
    if (s->st) return 0;
    if (!s->busy) free(s);
    return 1;
}

void au_streamer_committed(au_streamer_t *s, cJSON *records) {
    cJSON *r;
    while ((r = cJSON_DetachItemFromArray(records, 0)) != NULL) {
        /* not the holder: the holder reads them from the store; keep a
         * bounded backlog in case we take the lease soon */
        if (!s->owner && s->qlen >= 4 * AU_STREAM_ROUND) {
            cJSON_DeleteItemFromArray(s->queue, 0);
            s->qlen--;
        }
        cJSON_AddItemToArray(s->queue, r);
        s->qlen++;
    }
    cJSON_Delete(records);
    step(s);
}

/* ---- the lease -------------------------------------------------------------- */

static void on_lease(int status, const cJSON *doc, void *data) {
    au_streamer_t *s = data;
    s->busy = 0;
    if (gone(s)) return;
    if (status == 0) {
        if (!s->owner) {
            s->streamed = au_int(doc, "streamed");
            bus_info(NULL, "audit: this process streams the trail now (from seq %lld)", (long long)s->streamed + 1);
        }
        s->owner = 1;
        s->lease_until = au_int(doc, "until");
        step(s);
        return;
    }
    if (s->owner) bus_info(NULL, "audit: another process streams the trail now");
    s->owner = 0;
}

static void on_renewed(int status, const cJSON *doc, void *data) {
    au_streamer_t *s = data;
    if (status != BUS_ENOT_FOUND || !s->st) {
        on_lease(status, doc, data);
        return;
    }
    /* not ours (any more): take it if it expired */
    int64_t now = wall_ms();
    cJSON *where = cJSON_CreateObject(), *patch = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "_id", AU_CURSOR_ID);
    cJSON_AddItemToObject(where, "until", cJSON_CreateObject());
    cJSON_AddNumberToObject(cJSON_GetObjectItem(where, "until"), "$lt", (double)now);
    cJSON_AddStringToObject(patch, "owner", bus_worker_instance(s->st->w));
    cJSON_AddNumberToObject(patch, "until", (double)(now + s->st->lease_ms));
    s->owner = 0;
    if (bus_store_find_one_and_update(s->st->store, AU_COLL_CURSOR, where, NULL, patch, on_lease, s) != 0) s->busy = 0;
    cJSON_Delete(where);
    cJSON_Delete(patch);
}

static void on_cursor_made(int status, const cJSON *doc, void *data) {
    (void)doc;
    au_streamer_t *s = data;
    s->busy = 0;
    if (gone(s)) return;
    if (status == 0 || status == BUS_ECONFLICT) s->ready = 1;
    step(s);
}

/* Renews our lease (or, when it is not ours, takes it if expired); with
 * `streamed` set, saves it too. */
static void lease(au_streamer_t *s, int64_t streamed) {
    s->busy = 1;
    if (!s->ready) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "owner", "");
        cJSON_AddNumberToObject(c, "until", 0);
        cJSON_AddNumberToObject(c, "streamed", 0);
        if (bus_store_insert(s->st->store, AU_COLL_CURSOR, AU_CURSOR_ID, c, on_cursor_made, s) != 0) s->busy = 0;
        cJSON_Delete(c);
        return;
    }
    cJSON *where = cJSON_CreateObject(), *patch = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "_id", AU_CURSOR_ID);
    cJSON_AddStringToObject(where, "owner", bus_worker_instance(s->st->w));
    cJSON_AddNumberToObject(patch, "until", (double)(wall_ms() + s->st->lease_ms));
    if (streamed >= 0) cJSON_AddNumberToObject(patch, "streamed", (double)streamed);
    if (bus_store_find_one_and_update(s->st->store, AU_COLL_CURSOR, where, NULL, patch, on_renewed, s) != 0)
        s->busy = 0;
    cJSON_Delete(where);
    cJSON_Delete(patch);
}

/* ---- publishing ---------------------------------------------------------------- */

static void on_confirm(int status, void *data) {
    au_streamer_t *s = data;
    if (status != 0) s->failed = 1;
    if (--s->outstanding > 0) return;
    s->busy = 0;
    if (gone(s)) return;
    if (s->failed) {
        bus_warn(NULL, "audit: the stream did not confirm every record; publishing them again");
        return; /* the next tick reads them from the store */
    }
    s->streamed = s->round_last;
    lease(s, s->streamed);
}

/* Publishes records (an array in seq order starting at streamed+1, owned),
 * AU_STREAM_PACK to a stream message (bus/audit_stream.h). */
static void publish_round(au_streamer_t *s, cJSON *records) {
    bus_conn_t *conn = bus_worker_conn(s->st->w);
    if (!conn || !bus_conn_is_up(conn)) {
        cJSON_Delete(records);
        return;
    }
    s->busy = 1;
    s->failed = 0;
    s->outstanding = 1; /* held until every publish is out */
    while (records->child && !s->failed) {
        cJSON *pack = cJSON_CreateArray();
        for (int n = 0; n < AU_STREAM_PACK && records->child; n++)
            cJSON_AddItemToArray(pack, cJSON_DetachItemViaPointer(records, records->child));
        const cJSON *first = pack->child, *last = first;
        while (last->next) last = last->next;
        char *body = cJSON_PrintUnformatted(pack);
        char seq[32], seq_last[32], id[80];
        snprintf(seq, sizeof seq, "%lld", (long long)au_int(first, "seq"));
        snprintf(seq_last, sizeof seq_last, "%lld", (long long)au_int(last, "seq"));
        snprintf(id, sizeof id, "audit-%s-%s", seq, seq_last);
        bus_header_t h[2] = {{"x-audit-seq", 11, seq, strlen(seq)}, {"x-audit-seq-last", 16, seq_last, strlen(seq_last)}};
        bus_publish_t p = {.exchange = BUS_EXCHANGE_AUDIT, .routing_key = "", .body = body,
                           .len = body ? strlen(body) : 0, .content_type = "application/json", .message_id = id,
                           .type = "audit.records", .persistent = 1, .headers = h, .nheaders = 2};
        if (!body || bus_conn_publish(conn, &p, on_confirm, s) != 0) {
            s->failed = 1;
        } else {
            s->outstanding++;
            s->round_last = au_int(last, "seq");
        }
        free(body);
        cJSON_Delete(pack);
    }
    cJSON_Delete(records);
    on_confirm(0, s);
}

static void on_read(int status, const cJSON *docs, const char *next, void *data) {
    (void)next;
    au_streamer_t *s = data;
    s->busy = 0;
    if (gone(s)) return;
    if (status != 0 || !docs || !docs->child) return;
    cJSON *recs = cJSON_Duplicate(docs, 1);
    cJSON *r;
    int64_t want = s->streamed + 1;
    cJSON_ArrayForEach(r, recs) {
        cJSON_DeleteItemFromObjectCaseSensitive(r, "_id");
        cJSON_DeleteItemFromObjectCaseSensitive(r, "_v");
        if (au_int(r, "seq") != want++) { /* a batch committing right now: stop before the gap */
            while (r->next) cJSON_Delete(cJSON_DetachItemViaPointer(recs, r->next));
            cJSON_Delete(cJSON_DetachItemViaPointer(recs, r));
            break;
        }
    }
    if (!recs->child) {
        cJSON_Delete(recs);
        return;
    }
    publish_round(s, recs);
}

static void step(au_streamer_t *s) {
    if (!s->st || s->busy) return;
    int64_t now = wall_ms();
    if (!s->owner || s->lease_until - now < s->st->lease_ms / 2) {
        lease(s, -1);
        return;
    }
    /* drop what the stream already has */
    cJSON *r;
    while ((r = cJSON_GetArrayItem(s->queue, 0)) != NULL && au_int(r, "seq") <= s->streamed) {
        cJSON_DeleteItemFromArray(s->queue, 0);
        s->qlen--;
    }
    if (r && au_int(r, "seq") == s->streamed + 1) {
        cJSON *round = cJSON_CreateArray();
        int64_t want = s->streamed + 1;
        while ((r = cJSON_GetArrayItem(s->queue, 0)) != NULL && au_int(r, "seq") == want &&
               want - s->streamed <= AU_STREAM_ROUND) {
            cJSON_AddItemToArray(round, cJSON_DetachItemFromArray(s->queue, 0));
            s->qlen--;
            want++;
        }
        publish_round(s, round);
        return;
    }
    /* records of other processes (or ours after a failed round): from the store */
    cJSON *where = cJSON_CreateObject(), *gt = cJSON_CreateObject();
    cJSON_AddNumberToObject(gt, "$gt", (double)s->streamed);
    cJSON_AddItemToObject(where, "seq", gt);
    bus_store_query_t q = {.where = where, .sort = "seq", .limit = AU_STREAM_ROUND};
    s->busy = 1;
    if (bus_store_find(s->st->store, AU_COLL_RECORDS, &q, on_read, s) != 0) s->busy = 0;
    cJSON_Delete(where);
}
