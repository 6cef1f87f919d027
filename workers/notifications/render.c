/* A delivery's HTTP request: the text in the subscription's language
 * (i18n.c), in the destination's natural format:
 *
 *   discord   POST <webhook url>?wait=true
 *             {"embeds":[{"title","description","color","footer"?}],
 *              "allowed_mentions":{"parse":[]}}   (no @everyone from data)
 *   telegram  POST <BUS_TELEGRAM_API_URL>/bot<token>/sendMessage
 *             {"chat_id","text":"<b>title</b>\ntext","parse_mode":"HTML",
 *              "disable_web_page_preview":true}   (& < > escaped)
 *   webhook   POST <url> {"delivery","event_id","type","subscription",
 *             "language","title","text","data"} with the headers
 *               X-Bus-Delivery:  the delivery id (the same on every retry:
 *                                receivers deduplicate by it)
 *               X-Bus-Timestamp: unix seconds of this attempt
 *               X-Bus-Signature: sha256=<hex HMAC-SHA256(secret,
 *                                "<timestamp>.<body>")>
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "notifications.h"

char *nt_html_escape(const char *s) {
    size_t n = 0;
    for (const char *p = s; *p; p++) n += *p == '&' ? 5 : (*p == '<' || *p == '>') ? 4 : 1;
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    for (const char *p = s; *p; p++) {
        if (*p == '&') {
            memcpy(o, "&amp;", 5);
            o += 5;
        } else if (*p == '<') {
            memcpy(o, "&lt;", 4);
            o += 4;
        } else if (*p == '>') {
            memcpy(o, "&gt;", 4);
            o += 4;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return out;
}

void nt_sign(const char *secret, const char *timestamp, const char *body, size_t body_len, char out[80]) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t tl = strlen(timestamp), n = tl + 1 + body_len;
    unsigned char *msg = malloc(n + 1);
    out[0] = 0;
    if (!msg) return;
    memcpy(msg, timestamp, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, body_len);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, n, mac, &maclen);
    free(msg);
    strcpy(out, "sha256=");
    for (unsigned int i = 0; i < maclen && i < 32; i++) sprintf(out + 7 + 2 * i, "%02x", mac[i]);
}

static void var_str(cJSON *vars, const char *name, const cJSON *data, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(data, field);
    if (cJSON_IsString(v)) cJSON_AddStringToObject(vars, name, v->valuestring);
    else if (cJSON_IsNumber(v)) cJSON_AddNumberToObject(vars, name, v->valuedouble);
}

void nt_render_text(const nt_catalogs_t *c, const char *lang, const char *type, const cJSON *data, char **title,
                    char **text) {
    cJSON *vars = cJSON_CreateObject();
    var_str(vars, "name", data, "name");
    var_str(vars, "user", data, "user");
    var_str(vars, "rank", data, "rank");
    var_str(vars, "code", data, "code");
    var_str(vars, "nickname", data, "nickname");
    var_str(vars, "state", data, "state");
    var_str(vars, "alliance", data, "alliance");
    var_str(vars, "category", data, "category");
    var_str(vars, "minutes", data, "minutes_left");
    if (strcmp(type, "event.reminder") == 0) {
        *title = nt_format(c, lang, "reminder.title", vars);
        *text = nt_format(c, lang, nt_int(data, "minutes_left") > 0 ? "reminder.body" : "reminder.now", vars);
    } else if (strcmp(type, "event.started") == 0) {
        *title = nt_format(c, lang, "started.title", vars);
        *text = nt_format(c, lang, "started.body", vars);
    } else if (strcmp(type, "announcement.published") == 0) {
        *title = strdup(nt_str(data, "title")); /* the author's own words, not translated */
        *text = strdup(nt_str(data, "body"));
    } else if (strcmp(type, "giftcode.added") == 0) {
        *title = nt_format(c, lang, "giftcode.title", vars);
        *text = nt_format(c, lang, "giftcode.body", vars);
    } else if (strcmp(type, "player.verified") == 0) {
        *title = nt_format(c, lang, "verified.title", vars);
        *text = nt_format(c, lang, "verified.body", vars);
    } else if (strcmp(type, "notification.test") == 0) {
        *title = nt_format(c, lang, "test.title", vars);
        *text = nt_format(c, lang, "test.body", vars);
    } else { /* alliance.* */
        *title = nt_format(c, lang, "alliance.title", vars);
        const cJSON *cat = nt_catalog(c, "en");
        *text = nt_format(c, lang, cJSON_GetObjectItemCaseSensitive(cat, type) ? type : "alliance.other", vars);
    }
    cJSON_Delete(vars);
}

static int type_color(const char *type) {
    if (strcmp(type, "event.reminder") == 0) return 0xF1C40F;
    if (strcmp(type, "event.started") == 0) return 0x2ECC71;
    if (strcmp(type, "announcement.published") == 0) return 0x3498DB;
    if (strcmp(type, "giftcode.added") == 0) return 0x9B59B6;
    return 0x95A5A6;
}

int nt_render(const nt_state_t *st, const cJSON *sub, const char *delivery_id, const char *event_id,
              const char *type, const cJSON *data, nt_message_t *out) {
    memset(out, 0, sizeof *out);
    const char *lang = nt_str(sub, "language"), *kind = nt_str(sub, "kind");
    char *title = NULL, *text = NULL;
    nt_render_text(st->catalogs, lang, type, data, &title, &text);
    if (!title || !text) {
        free(title);
        free(text);
        return BUS_EINTERNAL;
    }
    cJSON *body = cJSON_CreateObject();
    char url[1200];
    if (strcmp(kind, "discord") == 0) {
        snprintf(url, sizeof url, "%s?wait=true", nt_str(sub, "url"));
        cJSON *embed = cJSON_CreateObject();
        cJSON_AddStringToObject(embed, "title", title);
        cJSON_AddStringToObject(embed, "description", text);
        cJSON_AddNumberToObject(embed, "color", type_color(type));
        if (strcmp(type, "announcement.published") == 0 && nt_str(data, "category")[0]) {
            cJSON *vars = cJSON_CreateObject();
            cJSON_AddStringToObject(vars, "category", nt_str(data, "category"));
            char *footer = nt_format(st->catalogs, lang, "announcement.category", vars);
            cJSON_AddStringToObject(cJSON_AddObjectToObject(embed, "footer"), "text", footer ? footer : "");
            free(footer);
            cJSON_Delete(vars);
        }
        cJSON_AddItemToArray(cJSON_AddArrayToObject(body, "embeds"), embed);
        cJSON_AddArrayToObject(cJSON_AddObjectToObject(body, "allowed_mentions"), "parse");
    } else if (strcmp(kind, "telegram") == 0) {
        const char *token = nt_bot_token(st, nt_str(sub, "bot"));
        if (!token) {
            free(title);
            free(text);
            cJSON_Delete(body);
            return BUS_ENOT_FOUND; /* the bot is no longer configured */
        }
        snprintf(url, sizeof url, "%s/bot%s/sendMessage", st->telegram_api, token);
        char *t = nt_html_escape(title), *x = nt_html_escape(text);
        size_t n = strlen(t ? t : "") + strlen(x ? x : "") + 16;
        char *html = malloc(n);
        if (html) snprintf(html, n, "<b>%s</b>\n%s", t ? t : "", x ? x : "");
        const char *chat = nt_str(sub, "chat_id");
        char *end = NULL;
        long long chat_n = strtoll(chat, &end, 10);
        if (chat[0] && end && !*end)
            cJSON_AddNumberToObject(body, "chat_id", (double)chat_n);
        else
            cJSON_AddStringToObject(body, "chat_id", chat);
        cJSON_AddStringToObject(body, "text", html ? html : "");
        cJSON_AddStringToObject(body, "parse_mode", "HTML");
        cJSON_AddTrueToObject(body, "disable_web_page_preview");
        free(t);
        free(x);
        free(html);
    } else {
        snprintf(url, sizeof url, "%s", nt_str(sub, "url"));
        cJSON_AddStringToObject(body, "delivery", delivery_id);
        cJSON_AddStringToObject(body, "event_id", event_id);
        cJSON_AddStringToObject(body, "type", type);
        cJSON_AddStringToObject(body, "subscription", nt_str(sub, "_id"));
        cJSON_AddStringToObject(body, "language", lang);
        cJSON_AddStringToObject(body, "title", title);
        cJSON_AddStringToObject(body, "text", text);
        cJSON_AddItemToObject(body, "data", data ? cJSON_Duplicate(data, 1) : cJSON_CreateObject());
    }
    free(title);
    free(text);
    out->url = strdup(url);
    out->body = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (!out->url || !out->body) {
        nt_message_free(out);
        return BUS_EINTERNAL;
    }
    if (strcmp(kind, "webhook") == 0) {
        char ts[32], sig[80], h[200];
        snprintf(ts, sizeof ts, "%lld", (long long)(nt_now_ms() / 1000));
        nt_sign(nt_str(sub, "secret"), ts, out->body, strlen(out->body), sig);
        snprintf(h, sizeof h, "X-Bus-Delivery: %s", delivery_id);
        out->headers[0] = strdup(h);
        snprintf(h, sizeof h, "X-Bus-Timestamp: %s", ts);
        out->headers[1] = strdup(h);
        snprintf(h, sizeof h, "X-Bus-Signature: %s", sig);
        out->headers[2] = strdup(h);
    }
    return 0;
}

void nt_message_free(nt_message_t *m) {
    free(m->url);
    free(m->body);
    for (int i = 0; i < 4; i++) free(m->headers[i]);
    memset(m, 0, sizeof *m);
}
