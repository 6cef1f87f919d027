/* bus-notifications internals, shared by the files of this worker:
 *
 *   main.c      the worker definition, settings, init/fini (store, Redis,
 *               HTTP client, catalogues, engine, dispatcher)
 *   store.c     collections, subscription views with secrets masked,
 *               destination checks
 *   methods.c   the RPC handlers: subscribe, unsubscribe, list, test,
 *               deliveries, announce
 *   fanout.c    consumed events -> one delivery record per matching
 *               subscription
 *   dispatch.c  claiming due deliveries, rate limits, sending, retries,
 *               recording the outcome, disabling dead destinations
 *   limits.c    per-destination rate limits shared through Redis
 *   render.c    a message for a destination kind and language (Discord
 *               embed, Telegram HTML, webhook JSON) and webhook signatures
 *   i18n.c      message catalogues, placeholders, CLDR plural rules (i18n.h)
 *
 * Everything runs on the worker's loop thread; store, Redis and HTTP
 * callbacks come back to it. See README "Notifications" for the model.
 */
#ifndef NT_NOTIFICATIONS_H
#define NT_NOTIFICATIONS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "bus/http_client.h"
#include "bus/op.h"
#include "bus/redis.h"
#include "bus/store.h"
#include "bus/worker.h"
#include "i18n.h"

#define NT_COLL_SUBS "subscriptions"
#define NT_COLL_DELIVERIES "deliveries"
#define NT_COLL_EVENTS "events" /* the consumed events' data, once each, for rendering */
#define NT_SCOPE_RPC "notifications.rpc"
#define NT_SCOPE_EVENTS "notifications.events"

#define NT_MAX_BOTS 16

typedef struct nt_bot {
    char name[64];
    char *token; /* secret: never logged, never answered */
} nt_bot_t;

typedef struct nt_dispatcher nt_dispatcher_t;

typedef struct nt_state {
    bus_worker_t *w;
    bus_store_t *store;
    bus_op_engine_t *engine;
    bus_redis_t *redis;
    bus_http_client_t *http;
    nt_catalogs_t *catalogs;
    nt_dispatcher_t *dispatcher;
    /* settings */
    char discord_api[512];  /* BUS_DISCORD_API_URL without trailing '/' */
    char telegram_api[512]; /* BUS_TELEGRAM_API_URL without trailing '/' */
    nt_bot_t bots[NT_MAX_BOTS];
    int nbots;
    int concurrency;        /* deliveries in flight per process */
    int max_attempts;       /* sends before a delivery is dead */
    int retry_base_ms, retry_max_ms;
    int disable_after;      /* consecutive 401/403/404 answers that disable a subscription */
    int lease_ms;           /* a claimed delivery is reclaimable after this */
    int poll_ms;            /* idle dispatcher looks for due deliveries this often */
    int rate_margin_pct;    /* rate-limit windows are this much longer than the services' */
    int http_timeout_ms;
} nt_state_t;

nt_state_t *nt_state(bus_worker_t *w);
const char *nt_bot_token(const nt_state_t *st, const char *name); /* NULL when unknown */

/* Wall clock, milliseconds since the epoch. */
int64_t nt_now_ms(void);

/* ---- store.c -------------------------------------------------------------- */

int nt_store_declare(bus_store_t *s, char *err, size_t errlen);
const char *nt_str(const cJSON *o, const char *k); /* "" when absent */
int64_t nt_int(const cJSON *o, const char *k);     /* 0 when absent */
/* The subscription as answered: secrets masked (new object). */
cJSON *nt_sub_view(const cJSON *doc);
/* The delivery record as answered (new object). */
cJSON *nt_delivery_view(const cJSON *doc);
/* "https://discord.com/api/webhooks/123/" + "****": keeps scheme, host and the
 * non-secret prefix only. Writes into out. */
void nt_mask_url(const char *url, const char *keep_prefix, char *out, size_t cap);
/* The scope id as stored: the alliance id, or the state number in decimal. */
int nt_scope_id(const cJSON *params, char *out, size_t cap);
/* Checks a destination against the settings and fills the stored fields of
 * doc (kind, url, webhook_key, chat_id, bot, secret). 0 or BUS_EINVALID with
 * why (never echoing a secret). */
int nt_destination_fill(const nt_state_t *st, const cJSON *dest, cJSON *doc, char *why, size_t cap);
/* The topic of an event type ("reminders" for event.reminder), NULL when
 * none of ours. */
const char *nt_topic_of(const char *type);
int nt_sub_has_topic(const cJSON *sub, const char *topic);

/* ---- methods.c / fanout.c ------------------------------------------------- */

extern const bus_method_t nt_methods[];
void nt_on_event(bus_event_t *ev);

/* ---- dispatch.c ----------------------------------------------------------- */

int nt_dispatcher_start(nt_state_t *st);
/* Wakes idle slots: new deliveries were recorded. */
void nt_dispatcher_wake(nt_state_t *st);
void nt_dispatcher_stop(nt_state_t *st);
void nt_dispatcher_free(nt_state_t *st); /* once every callback has run */

/* ---- limits.c --------------------------------------------------------------- */

/* The limits of one destination: up to 2 sliding windows plus a shared
 * "blocked until" key set from a 429's retry_after. */
typedef struct nt_limit {
    char block_key[160];
    int n;
    char key[2][160];
    int limit[2];
    int window_ms[2];
} nt_limit_t;

/* Fills the limits of a subscription's destination (n = 0: none). */
void nt_limits_of(const nt_state_t *st, const cJSON *sub, nt_limit_t *l);
/* wait_ms: 0 = a slot was taken (send now), > 0 = wait that long first.
 * status != 0: Redis unavailable (the caller waits and tries again). */
typedef void (*nt_limit_cb)(int status, int64_t wait_ms, void *data);
int nt_limit_take(nt_state_t *st, const nt_limit_t *l, nt_limit_cb cb, void *data);
/* Every process holds off this destination for ms (a 429 said so). */
void nt_limit_block(nt_state_t *st, const nt_limit_t *l, int64_t ms);

/* ---- render.c ----------------------------------------------------------------- */

/* The HTTP request of one delivery, built from the subscription, the event
 * (type, data) and the delivery id. url/body/headers are malloc'd. */
typedef struct nt_message {
    char *url;
    char *body;
    char *headers[4]; /* "Name: value", NULL-terminated */
} nt_message_t;

int nt_render(const nt_state_t *st, const cJSON *sub, const char *delivery_id, const char *event_id,
              const char *type, const cJSON *data, nt_message_t *out);
void nt_message_free(nt_message_t *m);
/* Title and text in the language (malloc'd, caller frees both). */
void nt_render_text(const nt_catalogs_t *c, const char *lang, const char *type, const cJSON *data, char **title,
                    char **text);
/* "sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>" into out (72 bytes). */
void nt_sign(const char *secret, const char *timestamp, const char *body, size_t body_len, char out[80]);
/* Telegram HTML: & < > escaped (malloc'd). */
char *nt_html_escape(const char *s);

#endif
