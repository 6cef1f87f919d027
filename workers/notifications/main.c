/* bus-notifications: reminders, announcements, gift codes, alliance changes
 * and verification results delivered to Discord webhooks, Telegram chats
 * and signed generic webhooks, in the subscriber's language, with retries,
 * shared rate limits and one delivery record per (event, subscription).
 *
 * RPC notifications.<subscribe|unsubscribe|list|test|deliveries|announce>
 * (methods.c); events in: event.reminder, event.started, giftcode.added,
 * announcement.published, alliance.#, player.verified (fanout.c); out:
 * announcement.published, subscription.disabled. Any number of processes
 * may run side by side on one store and one Redis (dispatch.c, limits.c).
 * See notifications.h for the files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/error.h"
#include "bus/log.h"
#include "notifications.h"

static bus_config_extra_t extras[] = {
    {"BUS_DISCORD_API_URL", "--discord-api-url", "Discord API base; webhook URLs must start with it + /webhooks/",
     "https://discord.com/api", NULL},
    {"BUS_TELEGRAM_API_URL", "--telegram-api-url", "Telegram Bot API base", "https://api.telegram.org", NULL},
    {"BUS_TELEGRAM_BOTS", "--telegram-bots", "bot tokens by name, name=token,name2=token2 (secret; never logged)", "",
     NULL},
    {"BUS_NOTIFY_I18N_DIR", "--notify-i18n-dir", "message catalogues, <lang>.json each", "workers/notifications/i18n",
     NULL},
    {"BUS_NOTIFY_CONCURRENCY", "--notify-concurrency", "deliveries in flight per process", "16", NULL},
    {"BUS_NOTIFY_MAX_ATTEMPTS", "--notify-max-attempts", "sends before a delivery is dead", "8", NULL},
    {"BUS_NOTIFY_RETRY_BASE_MS", "--notify-retry-base-ms", "first retry delay (doubles, jittered)", "2000", NULL},
    {"BUS_NOTIFY_RETRY_MAX_MS", "--notify-retry-max-ms", "longest retry delay", "600000", NULL},
    {"BUS_NOTIFY_DISABLE_AFTER", "--notify-disable-after", "401/403/404 answers in a row that disable a subscription",
     "3", NULL},
    {"BUS_NOTIFY_LEASE_MS", "--notify-lease-ms", "a claimed delivery is claimable again after this", "60000", NULL},
    {"BUS_NOTIFY_POLL_MS", "--notify-poll-ms", "how often an idle process looks for due deliveries", "500", NULL},
    {"BUS_NOTIFY_RATE_MARGIN_PCT", "--notify-rate-margin-pct", "rate-limit windows this much longer than the services'",
     "10", NULL},
    {"BUS_NOTIFY_HTTP_TIMEOUT_MS", "--notify-http-timeout-ms", "one send's time limit", "10000", NULL},
    {"BUS_MARKER_TTL_H", "--marker-ttl-h", "hours a handled request id is remembered", "168", NULL},
};

nt_state_t *nt_state(bus_worker_t *w) { return bus_worker_state(w); }

const char *nt_bot_token(const nt_state_t *st, const char *name) {
    for (int i = 0; i < st->nbots; i++)
        if (name && strcmp(st->bots[i].name, name) == 0) return st->bots[i].token;
    return NULL;
}

void nt_ctx_reset(bus_op_t *op, void *ctx); /* methods.c */

static void nt_committed(bus_op_t *op, void *ctx) {
    (void)ctx;
    if (strcmp(bus_op_method(op), "test") == 0) nt_dispatcher_wake(nt_state(bus_op_worker(op)));
}

static const bus_op_engine_options_t engine_options = {
    .rpc_scope = NT_SCOPE_RPC,
    .event_scope = NT_SCOPE_EVENTS,
    .ctx_size = sizeof(void *),
    .ctx_reset = nt_ctx_reset,
    .committed = nt_committed,
};

static int int_setting(bus_worker_t *w, const char *env, int min, int max, int *out, char *err, size_t errlen) {
    const char *v = bus_worker_extra(w, env);
    char *end = NULL;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || n < min || n > max) {
        snprintf(err, errlen, "%s: \"%s\" is not a whole number from %d to %d", env, v ? v : "", min, max);
        return BUS_EBAD_REQUEST;
    }
    *out = (int)n;
    return 0;
}

static void base_url(bus_worker_t *w, const char *env, char *out, size_t cap) {
    snprintf(out, cap, "%s", bus_worker_extra(w, env) ? bus_worker_extra(w, env) : "");
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '/') out[--n] = 0;
}

/* BUS_TELEGRAM_BOTS: name=token,name2=token2. The error never shows a token. */
static int parse_bots(nt_state_t *st, const char *v, char *err, size_t errlen) {
    char *copy = strdup(v ? v : ""), *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq || eq == item || !eq[1] || st->nbots >= NT_MAX_BOTS || (size_t)(eq - item) >= sizeof st->bots[0].name) {
            snprintf(err, errlen, "BUS_TELEGRAM_BOTS: entry %d is not name=token (at most %d bots)", st->nbots + 1,
                     NT_MAX_BOTS);
            free(copy);
            return BUS_EBAD_REQUEST;
        }
        *eq = 0;
        snprintf(st->bots[st->nbots].name, sizeof st->bots[0].name, "%s", item);
        st->bots[st->nbots].token = strdup(eq + 1);
        st->nbots++;
    }
    free(copy);
    return 0;
}

static void free_state(nt_state_t *st) {
    nt_catalogs_free(st->catalogs);
    for (int i = 0; i < st->nbots; i++) free(st->bots[i].token);
    free(st);
}

static void on_prune_timer(bus_worker_timer_t *t, void *data);
static int64_t marker_ttl_ms;

static int nt_init(bus_worker_t *w, char *err, size_t errlen) {
    nt_state_t *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return BUS_EINTERNAL;
    }
    st->w = w;
    srand((unsigned)getpid() ^ (unsigned)nt_now_ms());
    int ttl_h = 0;
    int rc = 0;
    if (rc == 0) rc = int_setting(w, "BUS_NOTIFY_CONCURRENCY", 1, 256, &st->concurrency, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_NOTIFY_MAX_ATTEMPTS", 1, 100, &st->max_attempts, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_NOTIFY_RETRY_BASE_MS", 1, 3600000, &st->retry_base_ms, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_NOTIFY_RETRY_MAX_MS", 1, 86400000, &st->retry_max_ms, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_NOTIFY_DISABLE_AFTER", 1, 1000, &st->disable_after, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_NOTIFY_LEASE_MS", 100, 3600000, &st->lease_ms, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_NOTIFY_POLL_MS", 10, 600000, &st->poll_ms, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_NOTIFY_RATE_MARGIN_PCT", 0, 100, &st->rate_margin_pct, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_NOTIFY_HTTP_TIMEOUT_MS", 100, 600000, &st->http_timeout_ms, err, errlen);
    if (rc == 0) rc = int_setting(w, "BUS_MARKER_TTL_H", 1, 24 * 365, &ttl_h, err, errlen);
    if (rc == 0 && st->lease_ms < 2 * st->http_timeout_ms + 2000) {
        snprintf(err, errlen, "BUS_NOTIFY_LEASE_MS (%d) must be at least 2 x BUS_NOTIFY_HTTP_TIMEOUT_MS (%d) + 2000",
                 st->lease_ms, st->http_timeout_ms);
        rc = BUS_EBAD_REQUEST;
    }
    if (rc == 0) rc = parse_bots(st, bus_worker_extra(w, "BUS_TELEGRAM_BOTS"), err, errlen);
    if (rc != 0) {
        free_state(st);
        return rc;
    }
    marker_ttl_ms = (int64_t)ttl_h * 3600 * 1000;
    base_url(w, "BUS_DISCORD_API_URL", st->discord_api, sizeof st->discord_api);
    base_url(w, "BUS_TELEGRAM_API_URL", st->telegram_api, sizeof st->telegram_api);
    if (nt_catalogs_load(bus_worker_extra(w, "BUS_NOTIFY_I18N_DIR"), &st->catalogs, err, errlen) != 0) {
        free_state(st);
        return BUS_EBAD_REQUEST;
    }
    rc = bus_store_open(bus_worker_loop(w), bus_worker_config(w)->store, &st->store, err, errlen);
    if (rc == 0) rc = nt_store_declare(st->store, err, errlen);
    if (rc == 0)
        rc = bus_redis_open(bus_worker_loop(w), bus_worker_config(w)->redis_url, NULL, &st->redis, err, errlen);
    bus_http_client_opts_t ho = {.name = "notifications", .timeout_ms = st->http_timeout_ms,
                                 .max_host_connections = 16};
    if (rc == 0) rc = bus_http_client_new(bus_worker_loop(w), &ho, &st->http);
    if (rc == 0 && bus_op_engine_new(w, st->store, &engine_options, &st->engine) != 0) rc = BUS_EINTERNAL;
    if (rc == 0) rc = nt_dispatcher_start(st);
    if (rc != 0) {
        if (!err[0]) snprintf(err, errlen, "cannot start: %s", bus_strerror(rc));
        bus_op_engine_free(st->engine);
        bus_http_client_close(st->http, NULL, NULL);
        bus_redis_close(st->redis, NULL, NULL);
        bus_store_close(st->store, NULL, NULL);
        free_state(st);
        return rc;
    }
    bus_worker_timer_start(w, 60 * 1000, 3600 * 1000, on_prune_timer, st, NULL); /* owned by the worker */
    bus_worker_set_state(w, st);
    return 0;
}

static void on_pruned(int status, int64_t count, void *data) {
    (void)data;
    if (status == 0 && count > 0) bus_info(NULL, "forgot %lld old request markers", (long long)count);
}

static void on_prune_timer(bus_worker_timer_t *t, void *data) {
    (void)t;
    nt_state_t *st = data;
    bus_store_processed_prune(st->store, marker_ttl_ms, on_pruned, NULL);
}

/* The state lives until the store, Redis and the HTTP client have called
 * back everything they hold (the worker runs the loop after fini). */
static int closing;
static void on_closed(void *data) {
    nt_state_t *st = data;
    if (--closing > 0) return;
    nt_dispatcher_free(st);
    free_state(st);
}

static void nt_fini(bus_worker_t *w) {
    nt_state_t *st = bus_worker_state(w);
    if (!st) return;
    nt_dispatcher_stop(st);
    bus_op_engine_free(st->engine);
    bus_worker_set_state(w, NULL);
    closing = 3;
    bus_http_client_close(st->http, on_closed, st);
    bus_redis_close(st->redis, on_closed, st);
    bus_store_close(st->store, on_closed, st);
}

static const bus_subscription_t subscriptions[] = {
    {"event.reminder", nt_on_event},  {"event.started", nt_on_event},   {"giftcode.added", nt_on_event},
    {"announcement.published", nt_on_event}, {"alliance.#", nt_on_event}, {"player.verified", nt_on_event},
    {NULL, NULL},
};

static const bus_worker_def_t definition = {
    .service = "notifications",
    .summary = "notifications to Discord, Telegram and signed webhooks, in 11 languages, with retries, rate limits "
               "and delivery records",
    .methods = nt_methods,
    .subscriptions = subscriptions,
    .extras = extras,
    .nextras = sizeof extras / sizeof extras[0],
    .init = nt_init,
    .fini = nt_fini,
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
