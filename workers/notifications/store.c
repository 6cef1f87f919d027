/* Documents of bus-notifications and their views.
 *
 *   subscriptions  id = a UUID. {scope, scope_id, kind, url, webhook_key,
 *                  chat_id, bot, secret, topics[], language, enabled (bool),
 *                  failures (consecutive 401/403/404 answers), disabled_reason,
 *                  created_at}. Secrets: url (a Discord webhook URL carries
 *                  its token; a generic webhook's may carry one), secret
 *                  (the webhook signing secret). The bot token itself is
 *                  never stored: `bot` names a setting (BUS_TELEGRAM_BOTS).
 *   deliveries     id = "<event id>.<subscription id>": one per pair, which
 *                  is what makes a redelivered event harmless. {event_id,
 *                  subscription, type, correlation_id, status
 *                  (pending|sent|dead), attempts, last_error, http_status,
 *                  next_at (ms since the epoch; for a pending delivery: when
 *                  it may be claimed), owner, created_at, updated_at, sent_at}
 *   events         id = the event id: {type, data, correlation_id}: what a
 *                  delivery renders, stored once per event.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "bus/error.h"
#include "notifications.h"

int64_t nt_now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int nt_store_declare(bus_store_t *s, char *err, size_t errlen) {
    static const char *const sub_idx[] = {"scope,scope_id,enabled", "enabled", NULL};
    static const char *const del_idx[] = {"status,next_at", "subscription", "correlation_id", "event_id", NULL};
    int rc = bus_store_declare(s, NT_COLL_SUBS, sub_idx, NULL, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, NT_COLL_DELIVERIES, del_idx, NULL, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, NT_COLL_EVENTS, NULL, NULL, err, errlen);
    return rc;
}

const char *nt_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

int64_t nt_int(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

void nt_mask_url(const char *url, const char *keep_prefix, char *out, size_t cap) {
    size_t keep = 0;
    if (keep_prefix && keep_prefix[0] && strncmp(url, keep_prefix, strlen(keep_prefix)) == 0) {
        keep = strlen(keep_prefix);
    } else {
        const char *host = strstr(url, "://");
        const char *path = host ? strchr(host + 3, '/') : NULL;
        keep = path ? (size_t)(path - url) + 1 : strlen(url);
    }
    snprintf(out, cap, "%.*s****", (int)keep, url);
}

cJSON *nt_sub_view(const cJSON *doc) {
    cJSON *v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "subscription", nt_str(doc, "_id"));
    const char *scope = nt_str(doc, "scope");
    cJSON_AddStringToObject(v, "scope", scope);
    if (strcmp(scope, "state") == 0)
        cJSON_AddNumberToObject(v, "id", (double)strtoll(nt_str(doc, "scope_id"), NULL, 10));
    else
        cJSON_AddStringToObject(v, "id", nt_str(doc, "scope_id"));
    cJSON *d = cJSON_AddObjectToObject(v, "destination");
    const char *kind = nt_str(doc, "kind");
    cJSON_AddStringToObject(d, "kind", kind);
    char masked[600];
    if (strcmp(kind, "telegram") == 0) {
        cJSON_AddStringToObject(d, "chat_id", nt_str(doc, "chat_id"));
        cJSON_AddStringToObject(d, "bot", nt_str(doc, "bot"));
    } else {
        /* Discord: keep ".../webhooks/<id>/", hide the token; webhook: keep the origin */
        char prefix[300] = "";
        if (strcmp(kind, "discord") == 0)
            snprintf(prefix, sizeof prefix, "%.*s", (int)(strlen(nt_str(doc, "url")) - strlen(nt_str(doc, "webhook_token"))),
                     nt_str(doc, "url"));
        nt_mask_url(nt_str(doc, "url"), prefix, masked, sizeof masked);
        cJSON_AddStringToObject(d, "url", masked);
        if (strcmp(kind, "webhook") == 0) cJSON_AddStringToObject(d, "secret", "****");
    }
    cJSON_AddItemToObject(v, "topics", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(doc, "topics"), 1));
    cJSON_AddStringToObject(v, "language", nt_str(doc, "language"));
    cJSON_AddBoolToObject(v, "enabled", cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "enabled")));
    cJSON_AddNumberToObject(v, "failures", (double)nt_int(doc, "failures"));
    if (nt_str(doc, "disabled_reason")[0]) cJSON_AddStringToObject(v, "disabled_reason", nt_str(doc, "disabled_reason"));
    cJSON_AddStringToObject(v, "created_at", nt_str(doc, "created_at"));
    return v;
}

cJSON *nt_delivery_view(const cJSON *doc) {
    cJSON *v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "delivery", nt_str(doc, "_id"));
    cJSON_AddStringToObject(v, "event_id", nt_str(doc, "event_id"));
    cJSON_AddStringToObject(v, "subscription", nt_str(doc, "subscription"));
    cJSON_AddStringToObject(v, "type", nt_str(doc, "type"));
    cJSON_AddStringToObject(v, "correlation_id", nt_str(doc, "correlation_id"));
    cJSON_AddStringToObject(v, "status", nt_str(doc, "status"));
    cJSON_AddNumberToObject(v, "attempts", (double)nt_int(doc, "attempts"));
    if (nt_str(doc, "last_error")[0])
        cJSON_AddStringToObject(v, "last_error", nt_str(doc, "last_error"));
    else
        cJSON_AddNullToObject(v, "last_error");
    cJSON_AddStringToObject(v, "updated_at", nt_str(doc, "updated_at"));
    if (nt_str(doc, "sent_at")[0]) cJSON_AddStringToObject(v, "sent_at", nt_str(doc, "sent_at"));
    return v;
}

int nt_scope_id(const cJSON *params, char *out, size_t cap) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(params, "id");
    if (strcmp(nt_str(params, "scope"), "state") == 0) {
        if (!cJSON_IsNumber(id) || id->valuedouble < 1 || id->valuedouble > 99999) return BUS_EINVALID;
        snprintf(out, cap, "%lld", (long long)id->valuedouble);
        return 0;
    }
    if (!cJSON_IsString(id) || strlen(id->valuestring) != 36) return BUS_EINVALID;
    snprintf(out, cap, "%s", id->valuestring);
    return 0;
}

int nt_destination_fill(const nt_state_t *st, const cJSON *dest, cJSON *doc, char *why, size_t cap) {
    const char *kind = nt_str(dest, "kind");
    cJSON_AddStringToObject(doc, "kind", kind);
    if (strcmp(kind, "discord") == 0) {
        /* BUS_DISCORD_API_URL/webhooks/<id>/<token> */
        char prefix[600];
        snprintf(prefix, sizeof prefix, "%s/webhooks/", st->discord_api);
        const char *url = nt_str(dest, "url");
        if (strncmp(url, prefix, strlen(prefix)) != 0) {
            snprintf(why, cap, "/params/destination/url: not a Discord webhook URL (%s<id>/<token>)", prefix);
            return BUS_EINVALID;
        }
        const char *id = url + strlen(prefix), *slash = strchr(id, '/');
        if (!slash || slash == id || !slash[1] || strchr(slash + 1, '/') || strchr(url, '?') ||
            strspn(id, "0123456789") != (size_t)(slash - id)) {
            snprintf(why, cap, "/params/destination/url: not a Discord webhook URL (%s<id>/<token>)", prefix);
            return BUS_EINVALID;
        }
        cJSON_AddStringToObject(doc, "url", url);
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(slash - id) < 40 ? (int)(slash - id) : 40, id);
        cJSON_AddStringToObject(doc, "webhook_key", key);
        cJSON_AddStringToObject(doc, "webhook_token", slash + 1);
        return 0;
    }
    if (strcmp(kind, "telegram") == 0) {
        const cJSON *chat = cJSON_GetObjectItemCaseSensitive(dest, "chat_id");
        char chat_s[64];
        if (cJSON_IsNumber(chat))
            snprintf(chat_s, sizeof chat_s, "%lld", (long long)chat->valuedouble);
        else
            snprintf(chat_s, sizeof chat_s, "%s", cJSON_IsString(chat) ? chat->valuestring : "");
        if (!nt_bot_token(st, nt_str(dest, "bot"))) {
            snprintf(why, cap, "/params/destination/bot: no bot named \"%.60s\" (BUS_TELEGRAM_BOTS)", nt_str(dest, "bot"));
            return BUS_EINVALID;
        }
        cJSON_AddStringToObject(doc, "chat_id", chat_s);
        cJSON_AddStringToObject(doc, "bot", nt_str(dest, "bot"));
        return 0;
    }
    if (strcmp(kind, "webhook") == 0) {
        const char *url = nt_str(dest, "url");
        if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
            snprintf(why, cap, "/params/destination/url: must be an http(s) URL");
            return BUS_EINVALID;
        }
        cJSON_AddStringToObject(doc, "url", url);
        cJSON_AddStringToObject(doc, "secret", nt_str(dest, "secret"));
        return 0;
    }
    snprintf(why, cap, "/params/destination/kind: must be discord, telegram or webhook");
    return BUS_EINVALID;
}

static const struct {
    const char *type, *topic;
} topics[] = {
    {"event.reminder", "reminders"},         {"event.started", "started"},
    {"announcement.published", "announcements"}, {"giftcode.added", "gift_codes"},
    {"player.verified", "verification"},     {"notification.test", "test"},
};

const char *nt_topic_of(const char *type) {
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++)
        if (strcmp(type, topics[i].type) == 0) return topics[i].topic;
    if (strncmp(type, "alliance.", 9) == 0) return "alliance";
    return NULL;
}

int nt_sub_has_topic(const cJSON *sub, const char *topic) {
    if (strcmp(topic, "test") == 0) return 1;
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(sub, "topics")) {
        if (cJSON_IsString(t) && strcmp(t->valuestring, topic) == 0) return 1;
    }
    return 0;
}
