/* Gift codes: giftcodes.add/list/status and the redemption runner.
 *
 * giftcodes.add {code, note?} stores the code (status active, batch
 * running) and publishes giftcode.added. Every process runs the runner:
 * each BUS_GIFTCODE_SCAN_MS it takes the oldest code whose batch is running
 * and walks the linked players page by page; a player without a redemption
 * document for the code is redeemed as one "item":
 *
 *   1. claim: INSERT vf_redemptions "<code>|<player>" {status claimed,
 *      owner, lease_until}. The store's id uniqueness makes exactly one
 *      process (of any number) the owner; the others skip the player.
 *   2. one grant of the shared game-API limit (limiter.h), then the code
 *      document is read again (stopped meanwhile: the claim is deleted);
 *   3. UPDATE at the claim's version to {status calling, lease_until}; only
 *      then the POST /api/gift_code {fid, cdk, time (s)}, signed;
 *   4. the answer is recorded: UPDATE at that version to {status done,
 *      result, err_code, msg} (the result table in rules.c). A transient
 *      answer (40004, TOO FREQUENT, 429, 5xx, timeout) goes back to
 *      claimed and is retried after a backoff, BUS_GAME_API_ATTEMPTS times,
 *      then recorded as result error. USED, TIME ERROR, CDK NOT FOUND (and
 *      SIGN ERROR) stop the batch for everyone: the code becomes stopped
 *      with the reason; items not called yet are released.
 *
 * A process killed at any point: its claims expire (lease_until). A
 * claimed item never reached the game and is deleted, so another process
 * redeems it; a calling item may have reached the game, so it is recorded
 * as result "interrupted" and NEVER called again: each player gets exactly
 * one recorded result and at most one redemption call per code.
 * (Conditional writes decide every race between an owner that comes back
 * late and the one recovering its item: the first write wins.)
 *
 * When a pass over every player finds nothing left to claim and nothing
 * claimed or calling, the batch is finished by a bus_op job (key
 * "giftcode.finish:<code>": marker, update of the code at its version,
 * giftcode.finished with the totals in the outbox), so it is published
 * once whatever the number of processes. giftcode.progress {code, done,
 * total} is published at most every BUS_GIFTCODE_PROGRESS_MS per process.
 * Codes still active are redeemed for a player verified later (at once,
 * after the verify commits).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/metrics.h"
#include "verification.h"

typedef struct item {
    vf_runner_t *r;
    char code[128];
    int64_t pid;
    char user[64];
    char id[160];
    int64_t version;
    int attempt;
    uv_timer_t *timer;
} item_t;

struct vf_runner {
    vf_state_t *st;
    bus_worker_timer_t *timer; /* the scan; stopped by the drain */
    int scanning;  /* a pass step is out (store reads) */
    char code[128];/* the code of the current pass ("" = none) */
    char stop_reason[64]; /* the code stopped: the pass only waits for its items in flight */
    char cursor[1100];
    int pass_unclaimed; /* players found unclaimed during this pass */
    int pass_pending;   /* claimed/calling items seen at the pass's start */
    cJSON *queue;  /* [{player_id, user}] of the current page, to claim */
    int running;   /* items in flight */
    int halted;    /* the code was stopped / rate limited: drop the queue */
    int closing;   /* fini ran: items still out end quietly; the last frees the runner */
    uint64_t last_progress;
    int64_t redeemed_calls;
    bus_counter_t *c_results;
};

static const char *str_or(const char *s, const char *d) { return s && s[0] ? s : d; }

static int64_t claimed_lease_ms(vf_state_t *st) {
    return vf_limiter_opts(st->limiter)->max_wait_ms + 2LL * st->api_timeout_ms;
}
static int64_t calling_lease_ms(vf_state_t *st) { return 2LL * st->api_timeout_ms; }

/* ---- totals ---------------------------------------------------------------- */

typedef void (*totals_cb)(int status, cJSON *totals, void *data); /* totals owned by cb */
typedef struct {
    vf_state_t *st;
    char code[128];
    cJSON *totals;
    char cursor[1100];
    totals_cb cb;
    void *data;
} totals_t;

static void totals_page(totals_t *t);

static void on_totals_page(int status, const cJSON *docs, const char *next, void *data) {
    totals_t *t = data;
    if (status != 0) {
        t->cb(status, NULL, t->data);
        cJSON_Delete(t->totals);
        free(t);
        return;
    }
    cJSON *by = cJSON_GetObjectItemCaseSensitive(t->totals, "results");
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        const char *field = strcmp(vf_doc_str(d, "status"), "done") == 0 ? "done" : "pending";
        cJSON *n = cJSON_GetObjectItemCaseSensitive(t->totals, field);
        cJSON_SetNumberValue(n, n->valuedouble + 1);
        if (field[0] == 'd') {
            cJSON *r = cJSON_GetObjectItemCaseSensitive(by, vf_doc_str(d, "result"));
            if (r) cJSON_SetNumberValue(r, r->valuedouble + 1);
        }
    }
    if (next) {
        snprintf(t->cursor, sizeof t->cursor, "%s", next);
        totals_page(t);
        return;
    }
    t->cb(0, t->totals, t->data);
    free(t);
}

static void totals_page(totals_t *t) {
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "code", t->code);
    bus_store_query_t q = {.where = where, .limit = BUS_STORE_MAX_LIMIT, .cursor = t->cursor[0] ? t->cursor : NULL};
    int rc = bus_store_find(t->st->store, VF_COLL_REDEMPTIONS, &q, on_totals_page, t);
    cJSON_Delete(where);
    if (rc != 0) {
        t->cb(rc, NULL, t->data);
        cJSON_Delete(t->totals);
        free(t);
    }
}

/* {done, pending, results: {redeemed: n, ...}} over every redemption of code. */
static void totals_of(vf_state_t *st, const char *code, totals_cb cb, void *data) {
    totals_t *t = calloc(1, sizeof *t);
    t->st = st;
    snprintf(t->code, sizeof t->code, "%s", code);
    t->cb = cb;
    t->data = data;
    t->totals = cJSON_CreateObject();
    cJSON_AddNumberToObject(t->totals, "done", 0);
    cJSON_AddNumberToObject(t->totals, "pending", 0);
    cJSON *by = cJSON_AddObjectToObject(t->totals, "results");
    for (const char *const *r = vf_redeem_results; *r; r++) cJSON_AddNumberToObject(by, *r, 0);
    totals_page(t);
}

/* ---- finishing a batch (exactly once) ------------------------------------------- */

static void finish_decide(bus_op_t *op) {
    const cJSON *p = bus_op_params(op);
    if (!VF(op)->code || strcmp(vf_doc_str(VF(op)->code, "batch"), "running") != 0) {
        bus_op_reply(op, NULL); /* already finished or stopped */
        return;
    }
    const char *reason = vf_doc_str(p, "reason");
    char now[32];
    bus_now_rfc3339(now);
    cJSON *patch = cJSON_CreateObject();
    cJSON_AddStringToObject(patch, "batch", reason[0] ? "stopped" : "finished");
    if (reason[0]) {
        cJSON_AddStringToObject(patch, "status", "stopped");
        cJSON_AddStringToObject(patch, "stop_reason", reason);
    }
    cJSON_AddStringToObject(patch, "finished_at", now);
    cJSON_AddItemToObject(patch, "totals", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(p, "totals"), 1));
    bus_op_plan_update(op, VF_COLL_CODES, VF_PARAM(op, "code"), vf_doc_version(VF(op)->code), patch);
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "code", VF_PARAM(op, "code"));
    cJSON_AddStringToObject(ev, "batch", reason[0] ? "stopped" : "finished");
    if (reason[0]) cJSON_AddStringToObject(ev, "reason", reason);
    cJSON_AddItemToObject(ev, "totals", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(p, "totals"), 1));
    bus_op_plan_event(op, "giftcode.finished", VF_PARAM(op, "code"), ev);
    bus_op_commit(op, NULL);
}

static void finish_load(bus_op_t *op) {
    bus_op_load_doc(op, VF_COLL_CODES, VF_PARAM(op, "code"), &VF(op)->code);
    bus_op_load_wait(op, finish_decide);
}

/* USED, TIME ERROR, CDK NOT FOUND: the code stops at once for everyone (no
 * new call starts: items read the code before calling); the batch itself
 * finishes, with the totals, once nothing is in flight any more. */
static void stop_decide(bus_op_t *op) {
    if (!VF(op)->code || strcmp(vf_doc_str(VF(op)->code, "status"), "active") != 0) {
        bus_op_reply(op, NULL);
        return;
    }
    cJSON *patch = cJSON_CreateObject();
    cJSON_AddStringToObject(patch, "status", "stopped");
    cJSON_AddStringToObject(patch, "stop_reason", VF_PARAM(op, "reason"));
    bus_op_plan_update(op, VF_COLL_CODES, VF_PARAM(op, "code"), vf_doc_version(VF(op)->code), patch);
    bus_op_commit(op, NULL);
}

static void stop_load(bus_op_t *op) {
    bus_op_load_doc(op, VF_COLL_CODES, VF_PARAM(op, "code"), &VF(op)->code);
    bus_op_load_wait(op, stop_decide);
}

static void on_finished(int status, const char *message, void *data) {
    (void)data;
    if (status != 0) bus_warn(NULL, "finishing a gift-code batch failed: %s (the next pass tries again)", message);
}

typedef struct {
    vf_state_t *st;
    char code[128], reason[64];
} finish_t;

static void on_finish_totals(int status, cJSON *totals, void *data) {
    finish_t *f = data;
    if (status == 0) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "code", f->code);
        cJSON_AddStringToObject(p, "reason", f->reason);
        cJSON_AddItemToObject(p, "totals", totals);
        char key[200];
        snprintf(key, sizeof key, "giftcode.finish:%s", f->code);
        bus_op_t *op = bus_op_new_job(f->st->engine, key, NULL, p, finish_load, on_finished, NULL);
        cJSON_Delete(p);
        if (op) bus_op_start(op, 0);
    }
    bus_worker_work_end(f->st->w);
    free(f);
}

static void stop_code(vf_state_t *st, const char *code, const char *reason) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "code", code);
    cJSON_AddStringToObject(p, "reason", reason);
    char key[200];
    snprintf(key, sizeof key, "giftcode.stop:%s", code);
    bus_op_t *op = bus_op_new_job(st->engine, key, NULL, p, stop_load, on_finished, NULL);
    cJSON_Delete(p);
    if (op) bus_op_start(op, 0);
}

static void finish_batch(vf_state_t *st, const char *code, const char *reason) {
    finish_t *f = calloc(1, sizeof *f);
    f->st = st;
    bus_worker_work_begin(st->w);
    snprintf(f->code, sizeof f->code, "%s", code);
    snprintf(f->reason, sizeof f->reason, "%s", reason ? reason : "");
    totals_of(st, code, on_finish_totals, f);
}

/* ---- progress ----------------------------------------------------------------- */

typedef struct {
    vf_state_t *st;
    char code[128];
    int64_t done;
} progress_t;

static void progress_free(progress_t *p) {
    bus_worker_work_end(p->st->w);
    free(p);
}

static void on_total_count(int status, int64_t count, void *data) {
    progress_t *p = data;
    if (status == 0) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "code", p->code);
        cJSON_AddNumberToObject(d, "done", (double)p->done);
        cJSON_AddNumberToObject(d, "total", (double)(count > p->done ? count : p->done));
        bus_worker_publish(p->st->w, "giftcode.progress", d, p->code, NULL, NULL, NULL, NULL);
    }
    progress_free(p);
}

static void on_done_count(int status, int64_t count, void *data) {
    progress_t *p = data;
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(cJSON_AddObjectToObject(where, "user"), "$gt", "");
    p->done = count;
    if (status != 0 || bus_store_count(p->st->store, VF_COLL_PLAYERS, where, on_total_count, p) != 0) progress_free(p);
    cJSON_Delete(where);
}

static void maybe_progress(vf_runner_t *r, const char *code) {
    uint64_t now = uv_now(bus_worker_loop(r->st->w));
    if (r->last_progress && now - r->last_progress < (uint64_t)r->st->giftcode_progress_ms) return;
    r->last_progress = now;
    progress_t *p = calloc(1, sizeof *p);
    p->st = r->st;
    bus_worker_work_begin(r->st->w); /* every helper below that outlives its call is in-flight work */
    snprintf(p->code, sizeof p->code, "%s", code);
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "code", code);
    cJSON_AddStringToObject(where, "status", "done");
    if (bus_store_count(r->st->store, VF_COLL_REDEMPTIONS, where, on_done_count, p) != 0) progress_free(p);
    cJSON_Delete(where);
}

/* ---- one item ------------------------------------------------------------------- */

static void runner_pump(vf_runner_t *r);
static void item_grant(item_t *it);

static void timer_free(uv_handle_t *h) { free(h); }

static void item_end(item_t *it) {
    vf_runner_t *r = it->r;
    if (it->timer) uv_close((uv_handle_t *)it->timer, timer_free);
    free(it);
    r->running--;
    if (r->closing) { /* after fini (the drain time ran out): the worker is gone */
        if (r->running == 0 && !r->scanning) free(r);
        return;
    }
    runner_pump(r);
    bus_worker_work_end(r->st->w); /* last: it may let a draining worker close */
}

static void on_item_write(int status, const cJSON *doc, void *data) {
    item_t *it = data;
    if (status == 0) it->version = vf_doc_version(doc);
    item_end(it);
}

static void on_item_deleted(int status, void *data) {
    (void)status;
    item_end(data);
}

static void item_release(item_t *it) {
    if (bus_store_delete(it->r->st->store, VF_COLL_REDEMPTIONS, it->id, it->version, on_item_deleted, it) != 0)
        item_end(it);
}

static void item_record(item_t *it, const char *result, const char *code, const char *msg) {
    vf_runner_t *r = it->r;
    char now[32];
    bus_now_rfc3339(now);
    cJSON *patch = cJSON_CreateObject();
    cJSON_AddStringToObject(patch, "status", "done");
    cJSON_AddStringToObject(patch, "result", result);
    cJSON_AddStringToObject(patch, "err_code", code);
    cJSON_AddStringToObject(patch, "msg", msg);
    cJSON_AddStringToObject(patch, "at", now);
    cJSON_AddNullToObject(patch, "lease_until");
    bus_counter_inc(bus_counter("bus_verification_giftcode_results_total", "Gift-code results recorded", "result",
                                result, NULL),
                    1);
    if (bus_store_update(r->st->store, VF_COLL_REDEMPTIONS, it->id, it->version, patch, on_item_write, it) != 0)
        item_end(it);
    cJSON_Delete(patch);
    maybe_progress(r, it->code);
}

static void item_retry_timer(uv_timer_t *t) {
    item_t *it = t->data;
    if (bus_worker_draining(it->r->st->w))
        item_release(it); /* never called again by us: another process takes it */
    else
        item_grant(it);
}

static void on_back_to_claimed(int status, const cJSON *doc, void *data) {
    item_t *it = data;
    if (it->r->closing) {
        item_end(it);
        return;
    }
    if (status != 0) { /* recovered by someone else meanwhile */
        item_end(it);
        return;
    }
    it->version = vf_doc_version(doc);
    int64_t backoff = it->r->st->api_backoff_ms;
    for (int i = 1; i < it->attempt && backoff < 600000; i++) backoff *= 2;
    if (!it->timer) {
        it->timer = malloc(sizeof *it->timer);
        uv_timer_init(bus_worker_loop(it->r->st->w), it->timer);
        it->timer->data = it;
    }
    uv_timer_start(it->timer, item_retry_timer, (uint64_t)backoff, 0);
}

static void on_redeem_answer(int status, const bus_http_response_t *resp, void *data) {
    item_t *it = data;
    vf_runner_t *r = it->r;
    if (r->closing) { /* the client closed under the call: it stays "calling", recovered as interrupted */
        item_end(it);
        return;
    }
    vf_redeem_answer_t a;
    if (status != 0) {
        memset(&a, 0, sizeof a);
        a.kind = VF_REDEEM_RETRY;
        snprintf(a.code, sizeof a.code, "%s", status == BUS_ETIMEOUT ? "timeout" : "unavailable");
    } else
        vf_redeem_classify(resp->http_status, resp->body, resp->body_len, &a);
    if (a.kind == VF_REDEEM_RETRY) {
        if (it->attempt >= r->st->api_attempts) {
            char why[96];
            snprintf(why, sizeof why, "%s after %d attempts", a.code, it->attempt);
            item_record(it, "error", a.code, why);
            return;
        }
        cJSON *patch = cJSON_CreateObject();
        cJSON_AddStringToObject(patch, "status", "claimed");
        cJSON_AddNumberToObject(patch, "lease_until", (double)(vf_now_ms() + claimed_lease_ms(r->st)));
        if (bus_store_update(r->st->store, VF_COLL_REDEMPTIONS, it->id, it->version, patch, on_back_to_claimed, it) !=
            0)
            item_end(it);
        cJSON_Delete(patch);
        return;
    }
    if (a.kind == VF_REDEEM_STOP) {
        bus_warn(NULL, "gift code %s: %s (%s): the batch stops for everyone", it->code, a.result, a.code);
        if (strcmp(r->code, it->code) == 0) r->halted = 1;
        stop_code(r->st, it->code, a.result);
    }
    item_record(it, a.result, a.code, a.msg);
}

static void on_calling(int status, const cJSON *doc, void *data) {
    item_t *it = data;
    if (it->r->closing) {
        item_end(it);
        return;
    }
    if (status != 0) { /* recovered meanwhile: not ours any more, never call */
        item_end(it);
        return;
    }
    it->version = vf_doc_version(doc);
    char fid[24], now[24];
    snprintf(fid, sizeof fid, "%lld", (long long)it->pid);
    snprintf(now, sizeof now, "%lld", (long long)(vf_now_ms() / 1000));
    const char *fields[] = {"fid", fid, "cdk", it->code, "time", now, NULL};
    it->r->redeemed_calls++;
    if (vf_api_post(it->r->st, it->r->st->api_url, "/api/gift_code", fields, on_redeem_answer, it) != 0)
        item_record(it, "error", "internal", "cannot send the call");
}

static void on_code_checked(int status, const cJSON *code, void *data) {
    item_t *it = data;
    if (it->r->closing) {
        item_end(it);
        return;
    }
    if (status != 0 || strcmp(vf_doc_str(code, "status"), "active") != 0) {
        if (strcmp(it->r->code, it->code) == 0) it->r->halted = 1;
        item_release(it);
        return;
    }
    cJSON *patch = cJSON_CreateObject();
    cJSON_AddStringToObject(patch, "status", "calling");
    cJSON_AddNumberToObject(patch, "lease_until", (double)(vf_now_ms() + calling_lease_ms(it->r->st)));
    if (bus_store_update(it->r->st->store, VF_COLL_REDEMPTIONS, it->id, it->version, patch, on_calling, it) != 0)
        item_end(it);
    cJSON_Delete(patch);
}

static void on_item_granted(int status, int64_t retry_after_ms, void *data) {
    item_t *it = data;
    if (it->r->closing) {
        item_end(it);
        return;
    }
    (void)retry_after_ms;
    if (status != 0) { /* the budget is used up for now: give the player back, try on a later pass */
        if (strcmp(it->r->code, it->code) == 0) it->r->halted = 1;
        item_release(it);
        return;
    }
    if (bus_store_get(it->r->st->store, VF_COLL_CODES, it->code, on_code_checked, it) != 0) item_release(it);
}

static void item_grant(item_t *it) {
    it->attempt++;
    if (vf_limiter_acquire(it->r->st->limiter, on_item_granted, it) != 0) item_release(it);
}

static void on_claimed(int status, const cJSON *doc, void *data) {
    item_t *it = data;
    if (it->r->closing) {
        item_end(it);
        return;
    }
    if (status != 0) { /* another process has it (or had it) */
        item_end(it);
        return;
    }
    it->version = vf_doc_version(doc);
    item_grant(it);
}

static void item_start(vf_runner_t *r, const char *code, int64_t pid, const char *user) {
    item_t *it = calloc(1, sizeof *it);
    it->r = r;
    snprintf(it->code, sizeof it->code, "%s", code);
    it->pid = pid;
    snprintf(it->user, sizeof it->user, "%s", user);
    snprintf(it->id, sizeof it->id, "%s|%lld", code, (long long)pid);
    r->running++;
    bus_worker_work_begin(r->st->w); /* a SIGTERM drain waits for the item (its call in flight) */
    char key[24];
    snprintf(key, sizeof key, "%lld", (long long)pid);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "code", code);
    cJSON_AddNumberToObject(d, "player_id", (double)pid);
    cJSON_AddStringToObject(d, "player_key", key);
    cJSON_AddStringToObject(d, "user", user);
    cJSON_AddStringToObject(d, "status", "claimed");
    cJSON_AddStringToObject(d, "owner", bus_worker_instance(r->st->w));
    cJSON_AddNumberToObject(d, "lease_until", (double)(vf_now_ms() + claimed_lease_ms(r->st)));
    if (bus_store_insert(r->st->store, VF_COLL_REDEMPTIONS, it->id, d, on_claimed, it) != 0) item_end(it);
    cJSON_Delete(d);
}

/* ---- the pass ------------------------------------------------------------------------ */

/* A pass's store read is out: in-flight work, so the drain waits for it and
 * nothing of the runner is left when fini frees it. */
static void scan_set(vf_runner_t *r, int on) {
    if (on == r->scanning) return;
    r->scanning = on;
    if (on)
        bus_worker_work_begin(r->st->w);
    else
        bus_worker_work_end(r->st->w);
}

static void pass_step(vf_runner_t *r);

static void runner_pump(vf_runner_t *r) {
    if (bus_worker_draining(r->st->w)) r->halted = 1; /* finish what is in flight, start nothing */
    if (r->halted && r->queue) { /* stopped or out of budget: this pass ends here */
        cJSON_Delete(r->queue);
        r->queue = NULL;
        r->code[0] = 0;
        r->cursor[0] = 0;
    }
    while (r->queue && cJSON_GetArraySize(r->queue) > 0 && r->running < r->st->giftcode_concurrency) {
        cJSON *p = cJSON_DetachItemFromArray(r->queue, 0);
        item_start(r, vf_doc_str(p, "code"), vf_doc_int(p, "player_id"), vf_doc_str(p, "user"));
        cJSON_Delete(p);
    }
    if (r->queue && cJSON_GetArraySize(r->queue) == 0) {
        cJSON_Delete(r->queue);
        r->queue = NULL;
        if (r->cursor[0] && r->code[0] && !r->halted)
            pass_step(r); /* the next page at once */
        else {
            r->code[0] = 0;
            r->cursor[0] = 0;
        }
    }
}

typedef struct {
    vf_runner_t *r;
    cJSON *players;
    char next[1100];
} page_t;

static void on_claims_of_page(int status, const cJSON *docs, const char *next, void *data) {
    page_t *pg = data;
    vf_runner_t *r = pg->r;
    if (r->closing) { /* after fini (the drain time ran out): nothing of the worker is left */
        cJSON_Delete(pg->players);
        free(pg);
        r->scanning = 0;
        if (r->running == 0) free(r);
        return;
    }
    (void)next;
    scan_set(r, 0);
    if (status == 0) {
        r->queue = cJSON_CreateArray();
        const cJSON *p;
        cJSON_ArrayForEach(p, pg->players) {
            const char *key = vf_doc_str(p, "_id");
            int seen = 0;
            const cJSON *d;
            cJSON_ArrayForEach(d, docs) if (strcmp(vf_doc_str(d, "player_key"), key) == 0) {
                seen = 1;
                break;
            }
            if (seen) continue;
            cJSON *q = cJSON_CreateObject();
            cJSON_AddStringToObject(q, "code", r->code);
            cJSON_AddNumberToObject(q, "player_id", (double)vf_doc_int(p, "player_id"));
            cJSON_AddStringToObject(q, "user", vf_doc_str(p, "user"));
            cJSON_AddItemToArray(r->queue, q);
            r->pass_unclaimed++;
        }
        snprintf(r->cursor, sizeof r->cursor, "%s", pg->next);
        if (!pg->next[0] && r->pass_unclaimed == 0 && r->pass_pending == 0) finish_batch(r->st, r->code, NULL);
        if (!pg->next[0]) r->code[0] = 0; /* the pass is over; the next tick starts another */
    }
    cJSON_Delete(pg->players);
    free(pg);
    if (r->queue) {
        /* items keep r->code; a new pass only starts once the queue is empty */
        runner_pump(r);
    }
}

static void on_players_page(int status, const cJSON *docs, const char *next, void *data) {
    page_t *pg = data;
    vf_runner_t *r = pg->r;
    if (r->closing) { /* after fini (the drain time ran out): nothing of the worker is left */
        cJSON_Delete(pg->players);
        free(pg);
        r->scanning = 0;
        if (r->running == 0) free(r);
        return;
    }
    if (status != 0 || cJSON_GetArraySize(docs) == 0) {
        scan_set(r, 0);
        if (status == 0 && r->pass_unclaimed == 0 && r->pass_pending == 0) finish_batch(r->st, r->code, NULL);
        r->code[0] = 0;
        r->cursor[0] = 0;
        free(pg);
        return;
    }
    pg->players = cJSON_Duplicate(docs, 1);
    snprintf(pg->next, sizeof pg->next, "%s", next ? next : "");
    const char *first = vf_doc_str(cJSON_GetArrayItem(docs, 0), "_id");
    const char *last = vf_doc_str(cJSON_GetArrayItem(docs, cJSON_GetArraySize(docs) - 1), "_id");
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "code", r->code);
    cJSON *range = cJSON_AddObjectToObject(where, "player_key");
    cJSON_AddStringToObject(range, "$gte", first);
    cJSON_AddStringToObject(range, "$lte", last);
    bus_store_query_t q = {.where = where, .limit = BUS_STORE_MAX_LIMIT};
    if (bus_store_find(r->st->store, VF_COLL_REDEMPTIONS, &q, on_claims_of_page, pg) != 0) {
        scan_set(r, 0);
        cJSON_Delete(pg->players);
        free(pg);
    }
    cJSON_Delete(where);
}

static void pass_step(vf_runner_t *r) {
    page_t *pg = calloc(1, sizeof *pg);
    pg->r = r;
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(cJSON_AddObjectToObject(where, "user"), "$gt", "");
    bus_store_query_t q = {.where = where, .limit = 200, .cursor = r->cursor[0] ? r->cursor : NULL};
    scan_set(r, 1);
    if (bus_store_find(r->st->store, VF_COLL_PLAYERS, &q, on_players_page, pg) != 0) {
        scan_set(r, 0);
        free(pg);
    }
    cJSON_Delete(where);
}

/* Stale claims of the code (their owner died): claimed -> deleted (never
 * called), calling -> "interrupted" (maybe called: never again). */
static void on_stale_fixed(int status, const cJSON *doc, void *data) {
    (void)status;
    (void)doc;
    bus_worker_work_end(data);
}
static void on_stale_deleted(int status, void *data) {
    (void)status;
    bus_worker_work_end(data);
}

static void on_pending(int status, const cJSON *docs, const char *next, void *data) {
    vf_runner_t *r = data;
    if (r->closing) { /* after fini (the drain time ran out): nothing of the worker is left */
        r->scanning = 0;
        if (r->running == 0) free(r);
        return;
    }
    (void)next;
    if (status != 0) {
        scan_set(r, 0);
        r->code[0] = 0;
        return;
    }
    int64_t now = vf_now_ms();
    r->pass_pending = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        r->pass_pending++;
        if (vf_doc_int(d, "lease_until") >= now) continue;
        const char *id = vf_doc_str(d, "_id");
        if (strcmp(vf_doc_str(d, "status"), "claimed") == 0) {
            bus_worker_work_begin(r->st->w);
            if (bus_store_delete(r->st->store, VF_COLL_REDEMPTIONS, id, vf_doc_version(d), on_stale_deleted, r->st->w))
                bus_worker_work_end(r->st->w);
        } else {
            char at[32];
            bus_now_rfc3339(at);
            cJSON *patch = cJSON_CreateObject();
            cJSON_AddStringToObject(patch, "status", "done");
            cJSON_AddStringToObject(patch, "result", "interrupted");
            cJSON_AddStringToObject(patch, "err_code", "");
            cJSON_AddStringToObject(patch, "msg", "the process calling the game died; the call is not repeated");
            cJSON_AddStringToObject(patch, "at", at);
            bus_counter_inc(bus_counter("bus_verification_giftcode_results_total", "Gift-code results recorded",
                                        "result", "interrupted", NULL),
                            1);
            bus_worker_work_begin(r->st->w);
            if (bus_store_update(r->st->store, VF_COLL_REDEMPTIONS, id, vf_doc_version(d), patch, on_stale_fixed,
                                 r->st->w))
                bus_worker_work_end(r->st->w);
            cJSON_Delete(patch);
        }
    }
    r->pass_unclaimed = 0;
    r->cursor[0] = 0;
    if (r->stop_reason[0]) { /* stopped: nothing new is claimed; finished once nothing is in flight */
        if (r->pass_pending == 0) finish_batch(r->st, r->code, r->stop_reason);
        scan_set(r, 0);
        r->code[0] = 0;
        return;
    }
    pass_step(r);
}

static void on_running_codes(int status, const cJSON *docs, const char *next, void *data) {
    vf_runner_t *r = data;
    if (r->closing) { /* after fini (the drain time ran out): nothing of the worker is left */
        r->scanning = 0;
        if (r->running == 0) free(r);
        return;
    }
    (void)next;
    const cJSON *c = status == 0 ? cJSON_GetArrayItem(docs, 0) : NULL;
    if (!c) {
        scan_set(r, 0);
        return;
    }
    snprintf(r->code, sizeof r->code, "%s", vf_doc_str(c, "_id"));
    snprintf(r->stop_reason, sizeof r->stop_reason, "%s",
             strcmp(vf_doc_str(c, "status"), "active") == 0 ? "" : str_or(vf_doc_str(c, "stop_reason"), "stopped"));
    r->halted = 0;
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "code", r->code);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(where, "status"), "$ne", "done");
    bus_store_query_t q = {.where = where, .limit = BUS_STORE_MAX_LIMIT};
    if (bus_store_find(r->st->store, VF_COLL_REDEMPTIONS, &q, on_pending, r) != 0) {
        scan_set(r, 0);
        r->code[0] = 0;
    }
    cJSON_Delete(where);
}

static void on_tick(bus_worker_timer_t *t, void *data) {
    (void)t;
    vf_runner_t *r = data;
    if (r->scanning || r->queue || r->code[0] || r->running > 0) return; /* a pass is under way */
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "batch", "running");
    bus_store_query_t q = {.where = where, .sort = "added_ms", .limit = 1};
    scan_set(r, 1);
    if (bus_store_find(r->st->store, VF_COLL_CODES, &q, on_running_codes, r) != 0) scan_set(r, 0);
    cJSON_Delete(where);
}

int vf_runner_new(vf_state_t *st) {
    vf_runner_t *r = calloc(1, sizeof *r);
    if (!r) return BUS_EINTERNAL;
    r->st = st;
    int rc = bus_worker_timer_start(st->w, (uint64_t)st->giftcode_scan_ms, (uint64_t)st->giftcode_scan_ms, on_tick, r,
                                    &r->timer);
    if (rc != 0) {
        free(r);
        return rc;
    }
    st->runner = r;
    return 0;
}

/* In fini, after the loop ended. Items still out (the drain time ran out)
 * end when the store and the HTTP client close under them; the last one
 * frees the runner. */
void vf_runner_free(vf_state_t *st) {
    vf_runner_t *r = st->runner;
    if (!r) return;
    bus_worker_timer_stop(r->timer);
    cJSON_Delete(r->queue);
    r->queue = NULL;
    st->runner = NULL;
    r->closing = 1;
    if (r->running == 0 && !r->scanning) free(r);
}

/* ---- players verified later ------------------------------------------------------- */

typedef struct {
    vf_state_t *st;
    int64_t pid;
    char code[128];
} later_t;

static void later_free(later_t *l) {
    bus_worker_work_end(l->st->w);
    free(l);
}

static void on_player_for_code(int status, const cJSON *player, void *data) {
    later_t *l = data;
    if (status == 0 && l->st->runner && !bus_worker_draining(l->st->w) && vf_doc_str(player, "user")[0])
        item_start(l->st->runner, l->code, l->pid, vf_doc_str(player, "user"));
    later_free(l);
}

static void on_active_codes(int status, const cJSON *docs, const char *next, void *data) {
    later_t *l = data;
    (void)next;
    const cJSON *c;
    if (status == 0 && l->st->runner) cJSON_ArrayForEach(c, docs) {
            /* the player's document once more: the redemption names its user */
            later_t *one = calloc(1, sizeof *one);
            *one = *l;
            bus_worker_work_begin(l->st->w);
            snprintf(one->code, sizeof one->code, "%s", vf_doc_str(c, "_id"));
            char id[24];
            snprintf(id, sizeof id, "%lld", (long long)l->pid);
            if (bus_store_get(l->st->store, VF_COLL_PLAYERS, id, on_player_for_code, one) != 0) later_free(one);
        }
    later_free(l);
}

void vf_runner_player_verified(vf_state_t *st, int64_t player_id) {
    later_t *l = calloc(1, sizeof *l);
    l->st = st;
    l->pid = player_id;
    bus_worker_work_begin(st->w);
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "status", "active");
    bus_store_query_t q = {.where = where, .limit = 100};
    if (bus_store_find(st->store, VF_COLL_CODES, &q, on_active_codes, l) != 0) later_free(l);
    cJSON_Delete(where);
}

cJSON *vf_runner_status(vf_state_t *st) {
    cJSON *o = cJSON_CreateObject();
    vf_runner_t *r = st->runner;
    cJSON_AddStringToObject(o, "current_code", r ? r->code : "");
    cJSON_AddNumberToObject(o, "in_flight", r ? r->running : 0);
    cJSON_AddNumberToObject(o, "calls", r ? (double)r->redeemed_calls : 0);
    return o;
}

/* ---- the methods ---------------------------------------------------------------------- */

static void add_decide(bus_op_t *op) {
    const char *code = VF_PARAM(op, "code");
    if (VF(op)->code) {
        bus_op_fail(op, BUS_ECONFLICT, "the gift code %s was already added (status %s)", code,
                    vf_doc_str(VF(op)->code, "status"));
        return;
    }
    char now[32];
    bus_now_rfc3339(now);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "code", code);
    cJSON_AddStringToObject(d, "note", VF_PARAM(op, "note"));
    cJSON_AddStringToObject(d, "status", "active");
    cJSON_AddStringToObject(d, "batch", "running");
    cJSON_AddStringToObject(d, "added_at", now);
    cJSON_AddNumberToObject(d, "added_ms", (double)vf_now_ms());
    cJSON_AddStringToObject(d, "added_by", str_or(bus_request_caller(bus_op_request(op)), "unknown"));
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "code", code);
    if (VF_PARAM(op, "note")[0]) cJSON_AddStringToObject(ev, "note", VF_PARAM(op, "note"));
    cJSON_AddStringToObject(ev, "added_at", now);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "code", code);
    cJSON_AddStringToObject(out, "status", "active");
    cJSON_AddStringToObject(out, "batch", "running");
    cJSON_AddStringToObject(out, "added_at", now);
    bus_op_plan_insert(op, VF_COLL_CODES, code, d);
    bus_op_plan_event(op, "giftcode.added", code, ev);
    bus_op_commit(op, out);
}

static void add_load(bus_op_t *op) {
    bus_op_load_doc(op, VF_COLL_CODES, VF_PARAM(op, "code"), &VF(op)->code);
    bus_op_load_wait(op, add_decide);
}

void vf_giftcodes_add(bus_request_t *req) { vf_run(req, add_load, VF_CHANGES); }

static cJSON *code_view(const cJSON *d) {
    cJSON *o = cJSON_CreateObject();
    static const char *const f[] = {"code", "note", "status", "batch", "stop_reason", "added_at", "finished_at",
                                    "totals"};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, f[i]);
        if (v) cJSON_AddItemToObject(o, f[i], cJSON_Duplicate(v, 1));
    }
    return o;
}

static void on_codes_page(int status, const cJSON *docs, const char *next, void *data) {
    bus_op_t *op = data;
    if (status != 0) {
        bus_op_fail(op, status == BUS_EBAD_REQUEST ? status : BUS_EUNAVAILABLE, "store: %s", bus_strerror(status));
        return;
    }
    cJSON *out = cJSON_CreateObject(), *items = cJSON_AddArrayToObject(out, "codes");
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) cJSON_AddItemToArray(items, code_view(d));
    if (next)
        cJSON_AddStringToObject(out, "next_cursor", next);
    else
        cJSON_AddNullToObject(out, "next_cursor");
    bus_op_reply(op, out);
}

static void list_load(bus_op_t *op) {
    cJSON *where = cJSON_CreateObject();
    if (VF_PARAM(op, "status")[0]) cJSON_AddStringToObject(where, "status", VF_PARAM(op, "status"));
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(bus_op_params(op), "cursor");
    int64_t limit = vf_doc_int(bus_op_params(op), "limit");
    bus_store_query_t q = {.where = where,
                           .sort = "added_ms",
                           .limit = limit > 0 ? (int)limit : 50,
                           .cursor = cJSON_IsString(c) && c->valuestring[0] ? c->valuestring : NULL};
    int rc = bus_store_find(vf_state(bus_op_worker(op))->store, VF_COLL_CODES, &q, on_codes_page, op);
    cJSON_Delete(where);
    if (rc != 0) bus_op_fail(op, rc == BUS_EBAD_REQUEST ? rc : BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

void vf_giftcodes_list(bus_request_t *req) { vf_run(req, list_load, VF_READS); }

/* status: the code, its totals (live), and one page of per-player results */
static void on_results_page(int status, const cJSON *docs, const char *next, void *data) {
    bus_op_t *op = data;
    if (status != 0) {
        bus_op_fail(op, status == BUS_EBAD_REQUEST ? status : BUS_EUNAVAILABLE,
                    status == BUS_EBAD_REQUEST ? "bad cursor" : "store: %s", bus_strerror(status));
        return;
    }
    cJSON *out = VF(op)->extra;
    VF(op)->extra = NULL;
    cJSON *items = cJSON_AddArrayToObject(out, "players");
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "player_id", (double)vf_doc_int(d, "player_id"));
        cJSON_AddStringToObject(o, "status", vf_doc_str(d, "status"));
        if (vf_doc_str(d, "result")[0]) cJSON_AddStringToObject(o, "result", vf_doc_str(d, "result"));
        if (vf_doc_str(d, "err_code")[0]) cJSON_AddStringToObject(o, "err_code", vf_doc_str(d, "err_code"));
        if (vf_doc_str(d, "at")[0]) cJSON_AddStringToObject(o, "at", vf_doc_str(d, "at"));
        cJSON_AddItemToArray(items, o);
    }
    if (next)
        cJSON_AddStringToObject(out, "next_cursor", next);
    else
        cJSON_AddNullToObject(out, "next_cursor");
    bus_op_reply(op, out);
}

static void on_status_totals(int status, cJSON *totals, void *data) {
    bus_op_t *op = data;
    if (status != 0) {
        bus_op_fail(op, BUS_EUNAVAILABLE, "store: %s", bus_strerror(status));
        return;
    }
    cJSON *out = code_view(VF(op)->code);
    cJSON_DeleteItemFromObject(out, "totals");
    cJSON_AddItemToObject(out, "totals", totals);
    VF(op)->extra = out;
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "code", VF_PARAM(op, "code"));
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(bus_op_params(op), "cursor");
    int64_t limit = vf_doc_int(bus_op_params(op), "limit");
    bus_store_query_t q = {.where = where,
                           .sort = "player_key",
                           .limit = limit > 0 ? (int)limit : 50,
                           .cursor = cJSON_IsString(c) && c->valuestring[0] ? c->valuestring : NULL};
    int rc = bus_store_find(vf_state(bus_op_worker(op))->store, VF_COLL_REDEMPTIONS, &q, on_results_page, op);
    cJSON_Delete(where);
    if (rc != 0) bus_op_fail(op, rc == BUS_EBAD_REQUEST ? rc : BUS_EUNAVAILABLE, "store: %s", bus_strerror(rc));
}

static void status_code(bus_op_t *op) {
    if (!VF(op)->code) {
        bus_op_fail(op, BUS_ENOT_FOUND, "no gift code %s", VF_PARAM(op, "code"));
        return;
    }
    totals_of(vf_state(bus_op_worker(op)), VF_PARAM(op, "code"), on_status_totals, op);
}

static void status_load(bus_op_t *op) {
    bus_op_load_doc(op, VF_COLL_CODES, VF_PARAM(op, "code"), &VF(op)->code);
    bus_op_load_wait(op, status_code);
}

void vf_giftcodes_status(bus_request_t *req) { vf_run(req, status_load, VF_READS); }
