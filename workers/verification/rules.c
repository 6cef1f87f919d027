/* The game's facts as pure functions (rules.h). */
#include "rules.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *vf_furnace_label(int level, char *buf, size_t cap) {
    if (level >= 31 && level <= 34)
        snprintf(buf, cap, "30-%d", level - 30);
    else if (level >= 35 && level <= 84) {
        int tier = (level - 35) / 5 + 1, step = (level - 35) % 5;
        if (step == 0)
            snprintf(buf, cap, "FC %d", tier);
        else
            snprintf(buf, cap, "FC %d - %d", tier, step);
    } else
        snprintf(buf, cap, "%d", level);
    return buf;
}

typedef struct {
    const char *k, *v;
} kv_t;

static int kv_cmp(const void *a, const void *b) { return strcmp(((const kv_t *)a)->k, ((const kv_t *)b)->k); }

int vf_sign(const char *const *fields, const char *salt, char out[33]) {
    kv_t kv[16];
    size_t n = 0;
    for (; fields[2 * n]; n++) {
        if (n == 16) return -1;
        kv[n].k = fields[2 * n];
        kv[n].v = fields[2 * n + 1] ? fields[2 * n + 1] : "";
    }
    qsort(kv, n, sizeof kv[0], kv_cmp);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return -1;
    EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    for (size_t i = 0; i < n; i++) {
        if (i) EVP_DigestUpdate(ctx, "&", 1);
        EVP_DigestUpdate(ctx, kv[i].k, strlen(kv[i].k));
        EVP_DigestUpdate(ctx, "=", 1);
        EVP_DigestUpdate(ctx, kv[i].v, strlen(kv[i].v));
    }
    if (salt) EVP_DigestUpdate(ctx, salt, strlen(salt));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    for (unsigned int i = 0; i < len && i < 16; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[32] = 0;
    return 0;
}

/* err_code as text whatever its JSON type ("" when absent). */
static void err_code_of(const cJSON *doc, char *buf, size_t cap) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(doc, "err_code");
    if (cJSON_IsNumber(e))
        snprintf(buf, cap, "%lld", (long long)e->valuedouble);
    else if (cJSON_IsString(e))
        snprintf(buf, cap, "%s", e->valuestring);
    else
        buf[0] = 0;
}

static const char *msg_of(const cJSON *doc) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "msg");
    return cJSON_IsString(m) ? m->valuestring : "";
}

static int starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

void vf_player_classify(int http_status, const char *body, size_t len, vf_player_answer_t *out) {
    memset(out, 0, sizeof *out);
    if (http_status == 429 || http_status >= 500) {
        out->kind = VF_PLAYER_TRANSIENT;
        snprintf(out->code, sizeof out->code, "HTTP %d", http_status);
        return;
    }
    cJSON *doc = cJSON_ParseWithLength(body, len);
    char ec[32];
    err_code_of(doc, ec, sizeof ec);
    const char *msg = msg_of(doc);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(doc, "code");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(doc, "data");
    const cJSON *fid = cJSON_GetObjectItemCaseSensitive(data, "fid");
    if (http_status == 200 && cJSON_IsNumber(code) && code->valuedouble == 0 && cJSON_IsObject(data) &&
        cJSON_IsNumber(fid)) {
        const cJSON *nick = cJSON_GetObjectItemCaseSensitive(data, "nickname");
        const cJSON *kid = cJSON_GetObjectItemCaseSensitive(data, "kid");
        const cJSON *lv = cJSON_GetObjectItemCaseSensitive(data, "stove_lv");
        const cJSON *av = cJSON_GetObjectItemCaseSensitive(data, "avatar_image");
        if (cJSON_IsString(nick) && cJSON_IsNumber(kid) && cJSON_IsNumber(lv)) {
            out->kind = VF_PLAYER_OK;
            out->fid = (int64_t)fid->valuedouble;
            snprintf(out->nickname, sizeof out->nickname, "%s", nick->valuestring);
            out->state = (int64_t)kid->valuedouble;
            out->furnace_level = (int)lv->valuedouble;
            snprintf(out->avatar_url, sizeof out->avatar_url, "%s", cJSON_IsString(av) ? av->valuestring : "");
            snprintf(out->code, sizeof out->code, "0");
            cJSON_Delete(doc);
            return;
        }
    }
    if (strcmp(ec, "40001") == 0 || starts(msg, "ROLE NOT EXIST")) {
        out->kind = VF_PLAYER_NOT_FOUND;
        snprintf(out->code, sizeof out->code, "%s", ec[0] ? ec : "ROLE NOT EXIST");
    } else if (strcmp(ec, "40004") == 0 || starts(msg, "TIMEOUT RETRY") || starts(msg, "TOO FREQUENT")) {
        out->kind = VF_PLAYER_TRANSIENT;
        snprintf(out->code, sizeof out->code, "%s", ec[0] ? ec : msg);
    } else {
        /* SIGN ERROR, any other code, or a shape we do not know */
        out->kind = VF_PLAYER_INTERNAL;
        if (!doc)
            snprintf(out->code, sizeof out->code, "HTTP %d, not JSON", http_status);
        else if (msg[0] || ec[0])
            snprintf(out->code, sizeof out->code, "%s%s%s", msg, msg[0] && ec[0] ? " " : "", ec);
        else
            snprintf(out->code, sizeof out->code, "HTTP %d, unknown shape", http_status);
    }
    cJSON_Delete(doc);
}

const char *const vf_redeem_results[] = {
    "redeemed",      "already_redeemed",  "claim_limit",  "expired",     "not_found",   "no_such_player",
    "furnace_too_low", "recharge_required", "vip_required", "wrong_state", "error",       "interrupted",
    NULL,
};

typedef struct {
    const char *err_code, *msg;
    vf_redeem_kind_t kind;
    const char *result;
} redeem_rule_t;

/* The result table of the gift-code endpoint. */
static const redeem_rule_t redeem_rules[] = {
    {"20000", "SUCCESS", VF_REDEEM_FINAL, "redeemed"},
    {"40008", "RECEIVED", VF_REDEEM_FINAL, "already_redeemed"},
    {"40011", "SAME TYPE EXCHANGE", VF_REDEEM_FINAL, "already_redeemed"},
    {"40005", "USED", VF_REDEEM_STOP, "claim_limit"},
    {"40007", "TIME ERROR", VF_REDEEM_STOP, "expired"},
    {"40014", "CDK NOT FOUND", VF_REDEEM_STOP, "not_found"},
    {"40004", "TIMEOUT RETRY", VF_REDEEM_RETRY, NULL},
    {"40001", "ROLE NOT EXIST", VF_REDEEM_FINAL, "no_such_player"},
    {"40006", "STOVE_LV ERROR", VF_REDEEM_FINAL, "furnace_too_low"},
    {"40017", "RECHARGE_MONEY ERROR", VF_REDEEM_FINAL, "recharge_required"},
    {"40018", "RECHARGE_MONEY_VIP ERROR", VF_REDEEM_FINAL, "vip_required"},
    {"40020", "USER INFO ERROR", VF_REDEEM_FINAL, "wrong_state"},
    {NULL, "TOO FREQUENT", VF_REDEEM_RETRY, NULL},
};

void vf_redeem_classify(int http_status, const char *body, size_t len, vf_redeem_answer_t *out) {
    memset(out, 0, sizeof *out);
    if (http_status == 429 || http_status >= 500) {
        out->kind = VF_REDEEM_RETRY;
        snprintf(out->code, sizeof out->code, "HTTP %d", http_status);
        return;
    }
    cJSON *doc = cJSON_ParseWithLength(body, len);
    char ec[32];
    err_code_of(doc, ec, sizeof ec);
    const char *msg = msg_of(doc);
    snprintf(out->msg, sizeof out->msg, "%s", msg);
    /* SUCCESS may come with an empty err_code */
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(doc, "code");
    if (!ec[0] && cJSON_IsNumber(code) && code->valuedouble == 0 && starts(msg, "SUCCESS")) snprintf(ec, sizeof ec, "20000");
    for (size_t i = 0; i < sizeof redeem_rules / sizeof redeem_rules[0]; i++) {
        const redeem_rule_t *r = &redeem_rules[i];
        if ((r->err_code && strcmp(ec, r->err_code) == 0) || (msg[0] && starts(msg, r->msg))) {
            out->kind = r->kind;
            out->result = r->result;
            snprintf(out->code, sizeof out->code, "%s", ec[0] ? ec : msg);
            cJSON_Delete(doc);
            return;
        }
    }
    /* SIGN ERROR would fail for every player: stop the batch, with the raw code */
    out->kind = starts(msg, "SIGN ERROR") ? VF_REDEEM_STOP : VF_REDEEM_FINAL;
    out->result = "error";
    if (!doc)
        snprintf(out->code, sizeof out->code, "HTTP %d, not JSON", http_status);
    else
        snprintf(out->code, sizeof out->code, "%s", ec[0] ? ec : (msg[0] ? msg : "unknown shape"));
    cJSON_Delete(doc);
}
