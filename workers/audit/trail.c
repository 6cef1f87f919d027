/* The appender: records into the store, hash-chained, in batches.
 *
 * Items wait in a FIFO. A batch takes up to AU_BATCH_RECORDS of them, seals
 * them on the tip it expects (seq, prev_hash, hash: chain.c) and commits
 * ONE store batch: delete the tip "<seq>-<hash>" it chained on (it must
 * still be there), insert the new tip, insert every record under its seq
 * (au_record_id: zero-padded, so the records' table grows at its end; a
 * random id such as the source id would make every insert rewrite a page
 * somewhere in the middle of it). The unique index on source_id keeps one
 * record per source. Up to BUS_AUDIT_INFLIGHT_BATCHES batches are in the store at once,
 * each chained on the tip the one before will leave (the store's group
 * commit writes them with one fsync); the tip id carries the hash, so a
 * batch can only commit after the very batch it was chained on.
 *
 * When a batch fails every later one fails too (its tip never appears).
 * Once all are back, their items go back to the front of the FIFO in order
 * and are chained again on the tip read from the store:
 *   - the tip was gone (another process appended): nothing else to do;
 *   - a record's insert conflicted: its source id was recorded before (a
 *     redelivery; its seq is new, the batch having chained on the tip): its
 *     item is answered BUS_ECONFLICT and dropped;
 *   - the store was unavailable: the same after a pause (100 ms doubling to 2 s).
 * Nothing is answered before its record is committed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "bus/log.h"

typedef struct item {
    struct item *next;
    char *id;
    cJSON *rec;
    au_recorded_cb cb;
    void *data;
    int64_t seq;
    int dup;
} item_t;

typedef struct batch {
    struct batch *next;
    au_trail_t *t;
    item_t *items; /* in seq order */
    size_t n;
    int64_t first_seq;
    int status; /* 0 until back */
    int back;
} batch_t;

struct au_trail {
    au_state_t *st;
    item_t *head, *tail;
    size_t npending, nstore;
    int tip_known, tip_loading;
    int64_t tip_seq;
    char tip_hash[65];
    batch_t *inflight; /* submit order */
    int ninflight;
    int replan, unavailable, retry_ms;
    uv_timer_t *timer;
    int stopping;
};

static void kick(au_trail_t *t);

cJSON *au_record_new(const char *time, const char *actor, const char *type, const char *subject,
                     const char *correlation_id, const char *outcome, const char *source_id, cJSON *detail) {
    cJSON *r = cJSON_CreateObject();
    char now[32];
    if (!time || !*time) {
        bus_now_rfc3339(now);
        time = now;
    }
    cJSON_AddStringToObject(r, "time", time);
    cJSON_AddStringToObject(r, "actor", actor ? actor : "");
    cJSON_AddStringToObject(r, "type", type ? type : "");
    cJSON_AddStringToObject(r, "subject", subject ? subject : "");
    cJSON_AddStringToObject(r, "correlation_id", correlation_id ? correlation_id : "");
    cJSON_AddStringToObject(r, "outcome", outcome ? outcome : "");
    cJSON_AddStringToObject(r, "source_id", source_id ? source_id : "");
    cJSON_AddItemToObject(r, "detail", detail ? detail : cJSON_CreateNull());
    return r;
}

void au_record_id(char *buf, size_t len, int64_t seq) { snprintf(buf, len, "%012lld", (long long)seq); }

static void tip_id(char *buf, size_t len, int64_t seq, const char *hash) {
    snprintf(buf, len, "%012lld-%s", (long long)seq, hash);
}

static void on_timer(uv_timer_t *h) {
    au_trail_t *t = h->data;
    t->unavailable = 0;
    kick(t);
}

int au_trail_new(au_state_t *st, au_trail_t **out) {
    au_trail_t *t = calloc(1, sizeof *t);
    if (!t) return BUS_EINTERNAL;
    t->st = st;
    t->timer = malloc(sizeof *t->timer);
    if (!t->timer) {
        free(t);
        return BUS_EINTERNAL;
    }
    uv_timer_init(bus_worker_loop(st->w), t->timer);
    t->timer->data = t;
    *out = t;
    return 0;
}

static void item_free(item_t *it) {
    free(it->id);
    cJSON_Delete(it->rec);
    free(it);
}

void au_trail_free(au_trail_t *t) {
    if (!t) return;
    t->stopping = 1;
    for (item_t *it = t->head, *next; it; it = next) {
        next = it->next;
        if (it->cb) it->cb(BUS_EUNAVAILABLE, 0, it->data);
        item_free(it);
    }
    /* batches still in the store call back into a trail that is gone: they
     * are detached here and freed by their callbacks (see on_batch) */
    for (batch_t *b = t->inflight; b; b = b->next) b->t = NULL;
    uv_close((uv_handle_t *)t->timer, (uv_close_cb)free);
    free(t);
}

size_t au_trail_pending(const au_trail_t *t) { return t->npending + t->nstore; }

void au_trail_append(au_trail_t *t, const char *id, cJSON *record, au_recorded_cb cb, void *data) {
    item_t *it = calloc(1, sizeof *it);
    if (!it || !(it->id = strdup(id))) {
        free(it);
        cJSON_Delete(record);
        cb(BUS_EINTERNAL, 0, data);
        return;
    }
    it->rec = record;
    it->cb = cb;
    it->data = data;
    if (t->tail) t->tail->next = it;
    else t->head = it;
    t->tail = it;
    t->npending++;
    kick(t);
}

/* ---- the tip ------------------------------------------------------------ */

static void on_genesis(int status, const cJSON *doc, void *data);

static void on_tip(int status, const cJSON *docs, const char *next, void *data) {
    (void)next;
    au_trail_t *t = data;
    t->tip_loading = 0;
    if (status != 0) {
        bus_warn(NULL, "audit: reading the chain's tip failed (%s); trying again", bus_err_name(status));
        t->unavailable = 1;
        kick(t);
        return;
    }
    const cJSON *tip = cJSON_GetArrayItem(docs, 0);
    if (!tip) { /* an empty store: the genesis tip, once, whoever comes first */
        cJSON *g = cJSON_CreateObject();
        cJSON_AddNumberToObject(g, "seq", 0);
        cJSON_AddStringToObject(g, "hash", au_genesis_hash);
        char id[96];
        tip_id(id, sizeof id, 0, au_genesis_hash);
        t->tip_loading = 1;
        if (bus_store_insert(t->st->store, AU_COLL_TIP, id, g, on_genesis, t) != 0) {
            t->tip_loading = 0;
            t->unavailable = 1;
            kick(t);
        }
        cJSON_Delete(g);
        return;
    }
    t->tip_seq = au_int(tip, "seq");
    snprintf(t->tip_hash, sizeof t->tip_hash, "%s", au_str(tip, "hash"));
    t->tip_known = 1;
    kick(t);
}

static void on_genesis(int status, const cJSON *doc, void *data) {
    (void)doc;
    au_trail_t *t = data;
    t->tip_loading = 0;
    if (status != 0 && status != BUS_ECONFLICT) {
        t->unavailable = 1;
        kick(t);
        return;
    }
    kick(t); /* read it back (ours or the twin's) */
}

static void load_tip(au_trail_t *t) {
    bus_store_query_t q = {.sort = "-seq", .limit = 1};
    t->tip_loading = 1;
    if (bus_store_find(t->st->store, AU_COLL_TIP, &q, on_tip, t) != 0) {
        t->tip_loading = 0;
        t->unavailable = 1;
        kick(t);
    }
}

/* ---- batches ------------------------------------------------------------ */

static void replan(au_trail_t *t) {
    /* every batch is back and failed (those that committed are gone): their
     * items return to the front of the FIFO in seq order */
    item_t *front = NULL, *last = NULL;
    size_t n = 0;
    for (batch_t *b = t->inflight, *next; b; b = next) {
        next = b->next;
        for (item_t *it = b->items, *in; it; it = in) {
            in = it->next;
            it->next = NULL;
            if (it->dup) {
                it->cb(BUS_ECONFLICT, 0, it->data);
                item_free(it);
                continue;
            }
            if (last) last->next = it;
            else front = it;
            last = it;
            n++;
        }
        t->nstore -= b->n;
        free(b);
    }
    t->inflight = NULL;
    if (front) {
        last->next = t->head;
        if (!t->head) t->tail = last;
        t->head = front;
        t->npending += n;
    }
    t->replan = 0;
    t->tip_known = 0;
}

/* Answers the committed batches at the front, in order. */
static void complete_front(au_trail_t *t) {
    while (t->inflight && t->inflight->back && t->inflight->status == 0) {
        batch_t *b = t->inflight;
        t->inflight = b->next;
        t->nstore -= b->n;
        cJSON *recs = cJSON_CreateArray();
        for (item_t *it = b->items, *in; it; it = in) {
            in = it->next;
            cJSON_AddItemToArray(recs, it->rec);
            it->rec = NULL;
            it->cb(0, it->seq, it->data);
            item_free(it);
        }
        free(b);
        au_streamer_committed(t->st->streamer, recs);
        t->retry_ms = 0;
    }
}

static void on_batch(int status, long failed, const int64_t *versions, void *data) {
    (void)versions;
    batch_t *b = data;
    au_trail_t *t = b->t;
    if (!t) { /* the trail was freed meanwhile */
        for (item_t *it = b->items, *in; it; it = in) {
            in = it->next;
            item_free(it);
        }
        free(b);
        return;
    }
    b->back = 1;
    b->status = status;
    t->ninflight--;
    if (status != 0) {
        t->replan = 1;
        if (status == BUS_ECONFLICT && failed >= 2) {
            long k = failed - 2;
            item_t *it = b->items;
            while (it && k-- > 0) it = it->next;
            if (it) it->dup = 1; /* recorded before, under the same source id */
        } else if (status != BUS_ECONFLICT && status != BUS_ENOT_FOUND) {
            bus_warn(NULL, "audit: storing %zu records failed (%s); trying again", b->n, bus_err_name(status));
            t->unavailable = 1;
        }
    }
    complete_front(t);
    kick(t);
}

static void submit(au_trail_t *t) {
    batch_t *b = calloc(1, sizeof *b);
    if (!b) return;
    b->t = t;
    bus_store_op_t ops[2 + AU_BATCH_RECORDS];
    char ids[2][96], rec_ids[AU_BATCH_RECORDS][24];
    tip_id(ids[0], sizeof ids[0], t->tip_seq, t->tip_hash);
    ops[0] = (bus_store_op_t){.kind = BUS_STORE_OP_DELETE, .coll = AU_COLL_TIP, .id = ids[0],
                              .version = BUS_STORE_ANY_VERSION};
    size_t n = 2;
    item_t **tailp = &b->items;
    b->first_seq = t->tip_seq + 1;
    while (t->head && n < 2 + AU_BATCH_RECORDS) {
        item_t *it = t->head;
        t->head = it->next;
        if (!t->head) t->tail = NULL;
        t->npending--;
        it->next = NULL;
        it->seq = ++t->tip_seq;
        au_record_seal(it->rec, it->seq, t->tip_hash);
        snprintf(t->tip_hash, sizeof t->tip_hash, "%s", au_str(it->rec, "hash"));
        au_record_id(rec_ids[n - 2], sizeof rec_ids[0], it->seq);
        ops[n] = (bus_store_op_t){.kind = BUS_STORE_OP_INSERT, .coll = AU_COLL_RECORDS, .id = rec_ids[n - 2],
                                  .doc = it->rec};
        n++;
        *tailp = it;
        tailp = &it->next;
        b->n++;
    }
    cJSON *tip = cJSON_CreateObject();
    cJSON_AddNumberToObject(tip, "seq", (double)t->tip_seq);
    cJSON_AddStringToObject(tip, "hash", t->tip_hash);
    tip_id(ids[1], sizeof ids[1], t->tip_seq, t->tip_hash);
    ops[1] = (bus_store_op_t){.kind = BUS_STORE_OP_INSERT, .coll = AU_COLL_TIP, .id = ids[1], .doc = tip};
    batch_t **bp = &t->inflight;
    while (*bp) bp = &(*bp)->next;
    *bp = b;
    t->ninflight++;
    t->nstore += b->n;
    int rc = bus_store_batch(t->st->store, ops, n, on_batch, b);
    cJSON_Delete(tip);
    if (rc != 0) { /* the store is closing: answered by replan at the next kick */
        t->ninflight--;
        b->back = 1;
        b->status = rc;
        t->replan = 1;
        t->unavailable = 1;
    }
}

static void kick(au_trail_t *t) {
    if (t->stopping) return;
    if (t->replan) {
        if (t->ninflight > 0) return;
        replan(t);
    }
    if (t->unavailable) {
        if (!uv_is_active((uv_handle_t *)t->timer)) {
            t->retry_ms = t->retry_ms ? (t->retry_ms * 2 > 2000 ? 2000 : t->retry_ms * 2) : 100;
            uv_timer_start(t->timer, on_timer, (uint64_t)t->retry_ms, 0);
        }
        return;
    }
    if (!t->head) return;
    if (!t->tip_known) {
        if (!t->tip_loading && t->ninflight == 0) load_tip(t);
        return;
    }
    /* a batch that is not full waits while another is in the store: under
     * load the batches fill up (one commit for many records), idle a record
     * goes at once */
    while (t->head && !t->replan && t->ninflight < t->st->inflight_batches &&
           (t->ninflight == 0 || t->npending >= AU_BATCH_RECORDS))
        submit(t);
}
