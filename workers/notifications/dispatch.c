/* The dispatcher: BUS_NOTIFY_CONCURRENCY slots per process, each a loop
 *
 *   claim -> load subscription and event -> take a rate-limit slot ->
 *   render and send -> record the outcome -> claim the next
 *
 * Claim. bus_store_find_one_and_update on deliveries {status: pending,
 * next_at <= now} (oldest first) moving next_at to now + BUS_NOTIFY_LEASE_MS
 * and noting the owner: the store gives each due delivery to exactly one
 * slot of one process. A process that dies holding a claim simply lets the
 * lease run out; the delivery is then due again and another slot takes it.
 * Every later write of the slot is conditional on the version its claim
 * produced, so a slot whose lease was taken over cannot overwrite the new
 * owner's outcome. A slot sends only while its lease outlasts the send
 * (BUS_NOTIFY_HTTP_TIMEOUT_MS) plus a quarter of the lease (at least 1 s)
 * to record it; later, it puts
 * the delivery back instead.
 *
 * Rate limits (limits.c). A destination over its limit puts the delivery
 * back, due when the window allows (no attempt counted).
 *
 * Outcomes of a send:
 *   2xx (Telegram: and "ok": true)    sent
 *   429                               retried after retry_after (Discord's
 *                                     body "retry_after" in seconds,
 *                                     Telegram's "parameters.retry_after",
 *                                     else the Retry-After header); the
 *                                     destination is blocked for every
 *                                     process meanwhile
 *   401, 403, 404 (deleted webhook,   retried with backoff, and counted on the
 *   bot removed)                      subscription: BUS_NOTIFY_DISABLE_AFTER
 *                                     in a row disable it and publish
 *                                     subscription.disabled
 *   5xx, timeout, no connection       retried with backoff (at least a
 *                                     Retry-After the answer gives)
 *   any other 4xx                     dead at once (the request will not
 *                                     get better)
 * Backoff: BUS_NOTIFY_RETRY_BASE_MS x 2^(attempt-1), at most
 * BUS_NOTIFY_RETRY_MAX_MS, drawn in [d/2, d] (jitter). After
 * BUS_NOTIFY_MAX_ATTEMPTS sends the delivery is dead with the last error.
 *
 * The duplicate window. A message is sent at most once per delivery except
 * in one window: from the moment the request leaves until the "sent" record
 * commits (the HTTP round trip plus one store write). If the process dies
 * (or is stopped) inside it, the lease runs out and the delivery is sent
 * again -- Discord and Telegram have no idempotency key to stop that. A
 * lost answer (time-out, connection cut after the service read the
 * request) is the same window: not knowing, the slot retries.
 * Generic webhooks get X-Bus-Delivery, the same on every retry, to
 * deduplicate on their side. Nothing else duplicates: a delivery recorded
 * sent is never claimed again, and a redelivered event finds its
 * deliveries already there (fanout.c).
 *
 * The poll timer (a worker timer, bus/worker.h) looks for due deliveries
 * every BUS_NOTIFY_POLL_MS when idle; fanout.c wakes the slots at once.
 * SIGTERM: the drain stops the timer, slots finish their round (each busy
 * slot is in-flight work) and claim nothing more.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "notifications.h"

typedef struct slot {
    nt_dispatcher_t *d;
    int busy;
    cJSON *delivery; /* the claimed record (with _v after the claim) */
    cJSON *sub;
    cJSON *event;
    int loads;      /* loads still out (+1 while they are being launched) */
    int load_error; /* a load failed (not "missing"): try again later */
    nt_limit_t limit;
    nt_message_t msg;
} slot_t;

struct nt_dispatcher {
    nt_state_t *st;
    slot_t *slots;
    int n;
    bus_worker_timer_t *poll; /* a worker timer: the SIGTERM drain stops it */
    uint64_t last_tick;       /* loop time of its last tick */
    int stopping;
    /* the last event read: a fan-out sends one event to many subscriptions */
    char cached_id[128];
    cJSON *cached_event;
};

static void claim(slot_t *s);
static void release(slot_t *s);

/* A busy slot is in-flight work of the worker (bus_worker_work_begin/end),
 * so the SIGTERM drain waits for the round it is in: a send is not cut
 * halfway (which would re-send it after the lease). */
static void slot_idle(slot_t *s) {
    if (!s->busy) return;
    s->busy = 0;
    bus_worker_work_end(s->d->st->w);
}

/* The drain stops the poll timer: a slot chains its next claim only while
 * the timer ticks (a late tick only idles a slot until the next one). */
static int draining(const nt_dispatcher_t *d) {
    return uv_now(bus_worker_loop(d->st->w)) - d->last_tick > (uint64_t)(3 * d->st->poll_ms + 200);
}

/* Lease time kept for recording a send's outcome (see send_now): a quarter
 * of the lease, at least a second. */
static int64_t record_margin_ms(const nt_state_t *st) { return st->lease_ms / 4 > 1000 ? st->lease_ms / 4 : 1000; }

/* ---- the end of a slot's round ------------------------------------------- */

static void slot_clear(slot_t *s) {
    cJSON_Delete(s->delivery);
    cJSON_Delete(s->sub);
    cJSON_Delete(s->event);
    nt_message_free(&s->msg);
    s->delivery = s->sub = s->event = NULL;
}

/* The round is over: next claim (or idle when stopping). */
static void release(slot_t *s) {
    slot_clear(s);
    if (s->d->stopping || draining(s->d)) {
        slot_idle(s);
        return;
    }
    claim(s);
}

static void on_recorded(int status, const cJSON *doc, void *data) {
    (void)doc;
    slot_t *s = data;
    if (status == BUS_ECONFLICT)
        bus_warn(NULL, "delivery %s: its lease ran out before the outcome was recorded; another slot owns it",
                 nt_str(s->delivery, "_id"));
    else if (status != 0)
        bus_warn(NULL, "delivery %s: recording the outcome failed: %s", nt_str(s->delivery, "_id"), bus_strerror(status));
    release(s);
}

/* Writes patch (owned) on the claimed delivery, conditional on the claim. */
static void record(slot_t *s, cJSON *patch) {
    char now[32];
    bus_now_rfc3339(now);
    cJSON_AddStringToObject(patch, "updated_at", now);
    cJSON_AddStringToObject(patch, "owner", "");
    int rc = bus_store_update(s->d->st->store, NT_COLL_DELIVERIES, nt_str(s->delivery, "_id"),
                              nt_int(s->delivery, "_v"), patch, on_recorded, s);
    cJSON_Delete(patch);
    if (rc != 0) release(s);
}

/* Back to pending, due in wait_ms, without counting an attempt. */
static void put_back(slot_t *s, int64_t wait_ms) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddNumberToObject(p, "next_at", (double)(nt_now_ms() + wait_ms));
    record(s, p);
}

static void dead(slot_t *s, int attempts, const char *why) {
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "status", "dead");
    cJSON_AddNumberToObject(p, "attempts", attempts);
    cJSON_AddStringToObject(p, "last_error", why);
    bus_info(nt_str(s->delivery, "correlation_id"), "delivery %s is dead: %s", nt_str(s->delivery, "_id"), why);
    record(s, p);
}

static int64_t backoff_ms(const nt_state_t *st, int attempt) {
    int64_t d = st->retry_base_ms;
    for (int i = 1; i < attempt && d < st->retry_max_ms; i++) d *= 2;
    if (d > st->retry_max_ms) d = st->retry_max_ms;
    return d / 2 + (int64_t)(rand() % (int)(d / 2 + 1));
}

/* A failed send: retried after max(backoff, min_wait_ms), or dead after the
 * last attempt. */
static void failed(slot_t *s, int attempts, int http_status, const char *why, int64_t min_wait_ms) {
    nt_state_t *st = s->d->st;
    if (attempts >= st->max_attempts) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s (after %d attempts)", why, attempts);
        dead(s, attempts, msg);
        return;
    }
    int64_t wait = backoff_ms(st, attempts);
    if (wait < min_wait_ms) wait = min_wait_ms;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddNumberToObject(p, "attempts", attempts);
    cJSON_AddStringToObject(p, "last_error", why);
    cJSON_AddNumberToObject(p, "http_status", http_status);
    cJSON_AddNumberToObject(p, "next_at", (double)(nt_now_ms() + wait));
    record(s, p);
}

/* ---- subscriptions that stopped answering ----------------------------------- */

typedef struct {
    nt_state_t *st;
    char sub_id[64];
    int http_status;
    int tries;
} gone_t;

static void gone_load(gone_t *g);

static void on_disabled_published(int status, void *data) {
    (void)data;
    if (status != 0) bus_warn(NULL, "subscription.disabled was not confirmed: %s", bus_strerror(status));
}

static void on_gone_updated(int status, const cJSON *doc, void *data) {
    gone_t *g = data;
    if (status == BUS_ECONFLICT && g->tries < 5 && !g->st->dispatcher->stopping) {
        gone_load(g); /* another process counted at the same time: count again */
        return;
    }
    if (status == 0 && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "enabled")) &&
        nt_int(doc, "failures") == g->st->disable_after) {
        /* this update disabled it (failures reached the bound exactly here) */
        cJSON *ev = cJSON_CreateObject();
        cJSON_AddStringToObject(ev, "subscription", g->sub_id);
        cJSON_AddStringToObject(ev, "scope", nt_str(doc, "scope"));
        if (strcmp(nt_str(doc, "scope"), "state") == 0)
            cJSON_AddNumberToObject(ev, "id", (double)strtoll(nt_str(doc, "scope_id"), NULL, 10));
        else
            cJSON_AddStringToObject(ev, "id", nt_str(doc, "scope_id"));
        cJSON_AddStringToObject(ev, "kind", nt_str(doc, "kind"));
        cJSON_AddNumberToObject(ev, "http_status", g->http_status);
        cJSON_AddStringToObject(ev, "reason", nt_str(doc, "disabled_reason"));
        char now[32];
        bus_now_rfc3339(now);
        cJSON_AddStringToObject(ev, "disabled_at", now);
        bus_warn(NULL, "subscription %s disabled: %s", g->sub_id, nt_str(doc, "disabled_reason"));
        bus_worker_publish(g->st->w, "subscription.disabled", ev, g->sub_id, NULL, on_disabled_published, NULL, NULL);
    }
    free(g);
}

static void on_gone_loaded(int status, const cJSON *doc, void *data) {
    gone_t *g = data;
    if (status != 0 || g->st->dispatcher->stopping || !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "enabled"))) {
        free(g);
        return;
    }
    int64_t failures = nt_int(doc, "failures") + 1;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddNumberToObject(p, "failures", (double)failures);
    if (failures >= g->st->disable_after) {
        char why[160];
        snprintf(why, sizeof why, "the destination answered HTTP %d %d times in a row", g->http_status, (int)failures);
        cJSON_AddFalseToObject(p, "enabled");
        cJSON_AddStringToObject(p, "disabled_reason", why);
    }
    g->tries++;
    int rc = bus_store_update(g->st->store, NT_COLL_SUBS, g->sub_id, nt_int(doc, "_v"), p, on_gone_updated, g);
    cJSON_Delete(p);
    if (rc != 0) free(g);
}

static void gone_load(gone_t *g) {
    if (bus_store_get(g->st->store, NT_COLL_SUBS, g->sub_id, on_gone_loaded, g) != 0) free(g);
}

static void count_gone(nt_state_t *st, const char *sub_id, int http_status) {
    gone_t *g = calloc(1, sizeof *g);
    if (!g) return;
    g->st = st;
    snprintf(g->sub_id, sizeof g->sub_id, "%s", sub_id);
    g->http_status = http_status;
    gone_load(g);
}

static void on_reset(int status, const cJSON *doc, void *data) {
    (void)status;
    (void)doc;
    (void)data;
}

/* ---- the send ------------------------------------------------------------------ */

/* The service's retry_after in ms: Discord's body retry_after (seconds,
 * fractional), Telegram's parameters.retry_after (seconds), else the
 * Retry-After header; -1 when none. */
static int64_t retry_after_ms(const bus_http_response_t *r) {
    int64_t ms = -1;
    cJSON *b = cJSON_ParseWithLength(r->body, r->body_len);
    const cJSON *ra = cJSON_GetObjectItemCaseSensitive(b, "retry_after");
    if (!cJSON_IsNumber(ra))
        ra = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(b, "parameters"), "retry_after");
    if (cJSON_IsNumber(ra) && ra->valuedouble >= 0) ms = (int64_t)(ra->valuedouble * 1000.0 + 0.5);
    cJSON_Delete(b);
    if (ms < 0) ms = bus_http_response_retry_after_ms(r);
    return ms;
}

static void on_sent(int status, const bus_http_response_t *r, void *data) {
    slot_t *s = data;
    nt_state_t *st = s->d->st;
    if (s->d->stopping) { /* the client is closing: the lease will hand it to another process */
        slot_clear(s);
        slot_idle(s);
        return;
    }
    int attempts = (int)nt_int(s->delivery, "attempts") + 1;
    const char *kind = nt_str(s->sub, "kind");
    char why[512];
    if (status != 0) {
        snprintf(why, sizeof why, "%s", r->error);
        failed(s, attempts, 0, why, 0);
        return;
    }
    int code = r->http_status;
    int ok = code >= 200 && code < 300;
    if (ok && strcmp(kind, "telegram") == 0) {
        cJSON *b = cJSON_ParseWithLength(r->body, r->body_len);
        ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "ok"));
        cJSON_Delete(b);
    }
    if (ok) {
        char now[32];
        bus_now_rfc3339(now);
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "status", "sent");
        cJSON_AddNumberToObject(p, "attempts", attempts);
        cJSON_AddNumberToObject(p, "http_status", code);
        cJSON_AddStringToObject(p, "sent_at", now);
        if (nt_int(s->sub, "failures") > 0) { /* it answers again: the count starts over */
            cJSON *reset = cJSON_CreateObject();
            cJSON_AddNumberToObject(reset, "failures", 0);
            bus_store_update(st->store, NT_COLL_SUBS, nt_str(s->sub, "_id"), BUS_STORE_ANY_VERSION, reset, on_reset, NULL);
            cJSON_Delete(reset);
        }
        record(s, p);
        return;
    }
    /* the service's own description, never the URL (it may hold a token) */
    cJSON *b = cJSON_ParseWithLength(r->body, r->body_len);
    const char *desc = nt_str(b, "description")[0] ? nt_str(b, "description") : nt_str(b, "message");
    snprintf(why, sizeof why, "HTTP %d%s%.200s", code, desc[0] ? ": " : "", desc);
    cJSON_Delete(b);
    if (code == 429) {
        int64_t wait = retry_after_ms(r);
        if (wait < 0) wait = 1000;
        nt_limit_block(st, &s->limit, wait);
        failed(s, attempts, code, why, wait + rand() % 100);
    } else if (code == 401 || code == 403 || code == 404) {
        count_gone(st, nt_str(s->sub, "_id"), code);
        failed(s, attempts, code, why, 0);
    } else if (code >= 500 || code == 408) { /* a 503 may say when to come back */
        int64_t wait = retry_after_ms(r);
        failed(s, attempts, code, why, wait > 0 ? wait : 0);
    } else {
        dead(s, attempts, why);
    }
}

static void send_now(slot_t *s) {
    nt_state_t *st = s->d->st;
    /* Send only while the claim's lease outlasts the send and its record:
     * a slot slowed down past its lease (a loaded machine, a slow store)
     * must not send what another slot may be sending already. */
    if (nt_now_ms() + st->http_timeout_ms + record_margin_ms(st) > nt_int(s->delivery, "next_at")) {
        put_back(s, 0);
        return;
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(s->event, "data");
    char event_id[128];
    snprintf(event_id, sizeof event_id, "%s", nt_str(s->delivery, "event_id"));
    int rc = nt_render(st, s->sub, nt_str(s->delivery, "_id"), event_id, nt_str(s->event, "type"), data, &s->msg);
    if (rc == BUS_ENOT_FOUND) {
        dead(s, (int)nt_int(s->delivery, "attempts"), "the subscription's bot is not configured (BUS_TELEGRAM_BOTS)");
        return;
    }
    if (rc != 0) {
        put_back(s, 1000);
        return;
    }
    bus_http_request_t rq = {.method = "POST", .url = s->msg.url, .json = s->msg.body,
                             .headers = (const char *const *)(s->msg.headers[0] ? s->msg.headers : NULL)};
    rc = bus_http_client_send(st->http, &rq, on_sent, s, NULL);
    if (rc != 0) {
        bus_warn(NULL, "delivery %s: cannot send: %s", nt_str(s->delivery, "_id"), bus_strerror(rc));
        put_back(s, 1000);
    }
}

static void on_limit(int status, int64_t wait_ms, void *data) {
    slot_t *s = data;
    if (s->d->stopping) {
        slot_clear(s);
        slot_idle(s);
        return;
    }
    if (status != 0) { /* Redis is down: limits cannot be checked, so nothing is sent */
        put_back(s, 1000);
        return;
    }
    if (wait_ms > 0) {
        put_back(s, wait_ms);
        return;
    }
    send_now(s);
}

static void loaded(slot_t *s) {
    if (--s->loads > 0) return;
    if (s->d->stopping) {
        slot_clear(s);
        slot_idle(s);
        return;
    }
    if (s->load_error) {
        put_back(s, 1000);
        return;
    }
    int attempts = (int)nt_int(s->delivery, "attempts");
    if (!s->sub) {
        dead(s, attempts, "the subscription was removed");
        return;
    }
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s->sub, "enabled"))) {
        dead(s, attempts, "the subscription is disabled");
        return;
    }
    if (!s->event) {
        dead(s, attempts, "the event's data is missing");
        return;
    }
    nt_limits_of(s->d->st, s->sub, &s->limit);
    if (nt_limit_take(s->d->st, &s->limit, on_limit, s) != 0) put_back(s, 1000);
}

static void on_sub(int status, const cJSON *doc, void *data) {
    slot_t *s = data;
    if (status == 0) s->sub = cJSON_Duplicate(doc, 1);
    else if (status != BUS_ENOT_FOUND) s->load_error = 1;
    loaded(s);
}

static void on_ev(int status, const cJSON *doc, void *data) {
    slot_t *s = data;
    if (status == 0) {
        s->event = cJSON_Duplicate(doc, 1);
        cJSON_Delete(s->d->cached_event);
        s->d->cached_event = cJSON_Duplicate(doc, 1);
        snprintf(s->d->cached_id, sizeof s->d->cached_id, "%s", nt_str(doc, "_id"));
    } else if (status != BUS_ENOT_FOUND) {
        s->load_error = 1;
    }
    loaded(s);
}

static void on_claimed(int status, const cJSON *doc, void *data) {
    slot_t *s = data;
    nt_dispatcher_t *d = s->d;
    if (status != 0 || d->stopping) {
        if (status != 0 && status != BUS_ENOT_FOUND) bus_warn(NULL, "claiming a delivery failed: %s", bus_strerror(status));
        slot_idle(s); /* idle until woken or polled */
        return;
    }
    s->delivery = cJSON_Duplicate(doc, 1);
    nt_dispatcher_wake(d->st); /* there is work: idle slots look too */
    const char *ev = nt_str(doc, "event_id");
    s->loads = 1; /* held while launching */
    s->load_error = 0;
    if (d->cached_event && strcmp(d->cached_id, ev) == 0)
        s->event = cJSON_Duplicate(d->cached_event, 1);
    else if (bus_store_get(d->st->store, NT_COLL_EVENTS, ev, on_ev, s) == 0)
        s->loads++;
    else
        s->load_error = 1;
    if (bus_store_get(d->st->store, NT_COLL_SUBS, nt_str(doc, "subscription"), on_sub, s) == 0)
        s->loads++;
    else
        s->load_error = 1;
    loaded(s);
}

static void claim(slot_t *s) {
    nt_state_t *st = s->d->st;
    int64_t now = nt_now_ms();
    if (!s->busy) {
        s->busy = 1;
        bus_worker_work_begin(st->w);
    }
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "status", "pending");
    cJSON_AddItemToObject(cJSON_AddObjectToObject(where, "next_at"), "$lte", cJSON_CreateNumber((double)now));
    cJSON *patch = cJSON_CreateObject();
    cJSON_AddNumberToObject(patch, "next_at", (double)(now + st->lease_ms));
    cJSON_AddStringToObject(patch, "owner", bus_worker_instance(st->w));
    int rc = bus_store_find_one_and_update(st->store, NT_COLL_DELIVERIES, where, "next_at", patch, on_claimed, s);
    cJSON_Delete(where);
    cJSON_Delete(patch);
    if (rc != 0) slot_idle(s);
}

/* ---- waking and polling -------------------------------------------------------------- */

void nt_dispatcher_wake(nt_state_t *st) {
    nt_dispatcher_t *d = st->dispatcher;
    if (!d || d->stopping) return;
    for (int i = 0; i < d->n; i++)
        if (!d->slots[i].busy) claim(&d->slots[i]);
}

static void on_poll(bus_worker_timer_t *t, void *data) {
    (void)t;
    nt_dispatcher_t *d = data;
    d->last_tick = uv_now(bus_worker_loop(d->st->w));
    if (d->stopping) return;
    for (int i = 0; i < d->n; i++) /* one idle slot looks; it wakes the others when it finds work */
        if (!d->slots[i].busy) {
            claim(&d->slots[i]);
            return;
        }
}

int nt_dispatcher_start(nt_state_t *st) {
    nt_dispatcher_t *d = calloc(1, sizeof *d);
    if (!d) return BUS_EINTERNAL;
    d->st = st;
    d->n = st->concurrency;
    d->slots = calloc((size_t)d->n, sizeof *d->slots);
    if (!d->slots) {
        free(d);
        return BUS_EINTERNAL;
    }
    for (int i = 0; i < d->n; i++) d->slots[i].d = d;
    d->last_tick = uv_now(bus_worker_loop(st->w));
    int rc = bus_worker_timer_start(st->w, (uint64_t)st->poll_ms, (uint64_t)st->poll_ms, on_poll, d, &d->poll);
    if (rc != 0) {
        free(d->slots);
        free(d);
        return rc;
    }
    st->dispatcher = d;
    return 0;
}

/* Stops claiming; rounds in flight end at their next callback (closing the
 * HTTP client, Redis and the store calls them back). */
void nt_dispatcher_stop(nt_state_t *st) {
    nt_dispatcher_t *d = st->dispatcher;
    if (!d) return;
    d->stopping = 1;
    bus_worker_timer_stop(d->poll);
    d->poll = NULL;
}

/* After every callback ran (main.c frees the state once the store, Redis
 * and the HTTP client are closed). */
void nt_dispatcher_free(nt_state_t *st) {
    nt_dispatcher_t *d = st->dispatcher;
    if (!d) return;
    for (int i = 0; i < d->n; i++) slot_clear(&d->slots[i]);
    cJSON_Delete(d->cached_event);
    free(d->slots);
    free(d);
    st->dispatcher = NULL;
}
