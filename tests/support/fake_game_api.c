/* The fake game API (fake_game_api.h). */
#include "fake_game_api.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake_http.h"

#define MAX_PLAYERS 16384
#define MAX_CODES 32
#define MAX_REDEEMS 65536
#define MAX_CALLS 200000

typedef struct {
    int64_t fid;
    char nickname[64];
    int state, stove_lv, transient;
} player_t;

typedef struct {
    char cdk[128];
    int err_code;
    char msg[40];
    int claim_limit, min_furnace, claimed;
} code_t;

typedef struct {
    int64_t fid;
    char cdk[128];
    int calls, succeeded;
} redeem_t;

struct bt_game_api {
    bt_fake_http_t *http;
    pthread_mutex_t mu;
    char salt[64];
    player_t players[MAX_PLAYERS];
    int nplayers;
    code_t codes[MAX_CODES];
    int ncodes;
    redeem_t *redeems;
    int nredeems;
    int limit, window_ms, delay_ms;
    double *arrivals;
    int narrivals;
    int calls_player, calls_gift, bad_signs, rejected;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* ---- form parsing and the signature --------------------------------------- */

typedef struct {
    char k[32], v[128];
} field_t;

static int hexv(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void decode(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        if (s[i] == '+')
            out[o++] = ' ';
        else if (s[i] == '%' && i + 2 < n && hexv(s[i + 1]) >= 0 && hexv(s[i + 2]) >= 0) {
            out[o++] = (char)(hexv(s[i + 1]) * 16 + hexv(s[i + 2]));
            i += 2;
        } else
            out[o++] = s[i];
    }
    out[o] = 0;
}

static int parse_form(const char *body, size_t len, field_t *f, int max) {
    int n = 0;
    size_t i = 0;
    while (i < len && n < max) {
        size_t j = i;
        while (j < len && body[j] != '&') j++;
        const char *eq = memchr(body + i, '=', j - i);
        if (eq) {
            decode(body + i, (size_t)(eq - (body + i)), f[n].k, sizeof f[n].k);
            decode(eq + 1, (size_t)(body + j - eq - 1), f[n].v, sizeof f[n].v);
            n++;
        }
        i = j + 1;
    }
    return n;
}

static int cmp_field(const void *a, const void *b) { return strcmp(((const field_t *)a)->k, ((const field_t *)b)->k); }

static const char *get(field_t *f, int n, const char *k) {
    for (int i = 0; i < n; i++)
        if (strcmp(f[i].k, k) == 0) return f[i].v;
    return NULL;
}

static int sign_ok(bt_game_api_t *g, field_t *f, int n) {
    const char *sign = get(f, n, "sign");
    if (!sign) return 0;
    field_t s[16];
    int m = 0;
    for (int i = 0; i < n && m < 16; i++)
        if (strcmp(f[i].k, "sign") != 0) s[m++] = f[i];
    qsort(s, (size_t)m, sizeof s[0], cmp_field);
    char text[1024];
    size_t o = 0;
    for (int i = 0; i < m; i++)
        o += (size_t)snprintf(text + o, sizeof text - o, "%s%s=%s", i ? "&" : "", s[i].k, s[i].v);
    snprintf(text + o, sizeof text - o, "%s", g->salt);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(text, strlen(text), md, &len, EVP_md5(), NULL);
    char hex[33];
    for (unsigned i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return strcmp(hex, sign) == 0;
}

/* ---- the handler ---------------------------------------------------------------- */

static player_t *find_player(bt_game_api_t *g, int64_t fid) {
    for (int i = 0; i < g->nplayers; i++)
        if (g->players[i].fid == fid) return &g->players[i];
    return NULL;
}

static code_t *find_code(bt_game_api_t *g, const char *cdk) {
    for (int i = 0; i < g->ncodes; i++)
        if (strcmp(g->codes[i].cdk, cdk) == 0) return &g->codes[i];
    return NULL;
}

static redeem_t *find_redeem(bt_game_api_t *g, int64_t fid, const char *cdk, int create) {
    for (int i = 0; i < g->nredeems; i++)
        if (g->redeems[i].fid == fid && strcmp(g->redeems[i].cdk, cdk) == 0) return &g->redeems[i];
    if (!create || g->nredeems == MAX_REDEEMS) return NULL;
    redeem_t *r = &g->redeems[g->nredeems++];
    memset(r, 0, sizeof *r);
    r->fid = fid;
    snprintf(r->cdk, sizeof r->cdk, "%s", cdk);
    return r;
}

static char answer[1024];

static void err(bt_fake_reply_t *rep, int code, const char *msg) {
    snprintf(answer, sizeof answer, "{\"code\":1,\"msg\":\"%s\",\"data\":[],\"err_code\":%d}", msg, code);
    if (code == 0) snprintf(answer, sizeof answer, "{\"code\":1,\"msg\":\"%s\",\"data\":[],\"err_code\":\"\"}", msg);
    rep->body = answer;
}

static void handler(const bt_fake_request_t *req, bt_fake_reply_t *rep, void *data) {
    bt_game_api_t *g = data;
    static char h1[64], h2[64], h3[64];
    pthread_mutex_lock(&g->mu);
    double now = now_ms();
    if (g->narrivals < MAX_CALLS) g->arrivals[g->narrivals++] = now;
    rep->delay_ms = g->delay_ms;
    int player_ep = strcmp(req->path, "/api/player") == 0, gift_ep = strcmp(req->path, "/api/gift_code") == 0;
    if (player_ep) g->calls_player++;
    if (gift_ep) g->calls_gift++;
    /* the fake's own limit, over the calls it let through */
    if (g->limit > 0) {
        int in = 0;
        for (int i = g->narrivals - 2; i >= 0 && now - g->arrivals[i] < g->window_ms; i--) in++;
        if (in >= g->limit) {
            g->rejected++;
            rep->status = 429;
            snprintf(h1, sizeof h1, "x-ratelimit-limit: %d", g->limit);
            snprintf(h2, sizeof h2, "x-ratelimit-remaining: 0");
            snprintf(h3, sizeof h3, "Retry-After: %d", (g->window_ms + 999) / 1000);
            rep->headers[0] = h1;
            rep->headers[1] = h2;
            rep->headers[2] = h3;
            rep->body = "{\"code\":1,\"msg\":\"TOO MANY REQUESTS\"}";
            pthread_mutex_unlock(&g->mu);
            return;
        }
        snprintf(h1, sizeof h1, "x-ratelimit-limit: %d", g->limit);
        snprintf(h2, sizeof h2, "x-ratelimit-remaining: %d", g->limit - in - 1);
        rep->headers[0] = h1;
        rep->headers[1] = h2;
    }
    field_t f[16];
    int n = parse_form(req->body, req->body_len, f, 16);
    if ((!player_ep && !gift_ep) || !get(f, n, "fid") || !get(f, n, "time")) {
        rep->status = 404;
        rep->body = "{\"code\":1,\"msg\":\"NOT FOUND\"}";
    } else if (!sign_ok(g, f, n)) {
        g->bad_signs++;
        err(rep, 0, "SIGN ERROR");
    } else {
        int64_t fid = strtoll(get(f, n, "fid"), NULL, 10);
        player_t *p = find_player(g, fid);
        if (p && p->transient > 0) {
            p->transient--;
            err(rep, 40004, "TIMEOUT RETRY.");
        } else if (player_ep) {
            if (!p)
                err(rep, 40001, "ROLE NOT EXIST.");
            else {
                snprintf(answer, sizeof answer,
                         "{\"code\":0,\"msg\":\"success\",\"data\":{\"fid\":%lld,\"nickname\":\"%s\",\"kid\":%d,"
                         "\"stove_lv\":%d,\"stove_lv_content\":\"https://x/icon.png\",\"avatar_image\":"
                         "\"https://x/a%lld.png\",\"total_recharge_amount\":0},\"err_code\":\"\"}",
                         (long long)fid, p->nickname, p->state, p->stove_lv, (long long)fid);
                rep->body = answer;
            }
        } else {
            const char *cdk = get(f, n, "cdk") ? get(f, n, "cdk") : "";
            redeem_t *r = find_redeem(g, fid, cdk, 1);
            if (r) r->calls++;
            code_t *c = find_code(g, cdk);
            if (!p)
                err(rep, 40001, "ROLE NOT EXIST.");
            else if (!c)
                err(rep, 40014, "CDK NOT FOUND.");
            else if (c->err_code)
                err(rep, c->err_code, c->msg);
            else if (r && r->succeeded)
                err(rep, 40008, "RECEIVED.");
            else if (c->min_furnace && p->stove_lv < c->min_furnace)
                err(rep, 40006, "STOVE_LV ERROR.");
            else if (c->claim_limit && c->claimed >= c->claim_limit)
                err(rep, 40005, "USED.");
            else {
                c->claimed++;
                if (r) r->succeeded = 1;
                snprintf(answer, sizeof answer, "{\"code\":0,\"msg\":\"SUCCESS\",\"data\":[],\"err_code\":20000}");
                rep->body = answer;
            }
        }
    }
    pthread_mutex_unlock(&g->mu);
}

bt_game_api_t *bt_game_api_start(const char *salt) {
    bt_game_api_t *g = calloc(1, sizeof *g);
    g->redeems = calloc(MAX_REDEEMS, sizeof *g->redeems);
    g->arrivals = calloc(MAX_CALLS, sizeof *g->arrivals);
    pthread_mutex_init(&g->mu, NULL);
    snprintf(g->salt, sizeof g->salt, "%s", salt ? salt : "tB87#kPtkxqOS2");
    g->http = bt_fake_http_start();
    bt_fake_http_set_handler(g->http, handler, g);
    return g;
}

void bt_game_api_stop(bt_game_api_t *g) {
    if (!g) return;
    bt_fake_http_stop(g->http);
    pthread_mutex_destroy(&g->mu);
    free(g->redeems);
    free(g->arrivals);
    free(g);
}

const char *bt_game_api_url(bt_game_api_t *g, char *buf, size_t cap) { return bt_fake_http_url(g->http, "", buf, cap); }

void bt_game_api_player(bt_game_api_t *g, int64_t fid, const char *nickname, int state, int stove_lv) {
    pthread_mutex_lock(&g->mu);
    player_t *p = find_player(g, fid);
    if (!p && g->nplayers < MAX_PLAYERS) p = &g->players[g->nplayers++];
    if (p) {
        p->fid = fid;
        snprintf(p->nickname, sizeof p->nickname, "%s", nickname);
        p->state = state;
        p->stove_lv = stove_lv;
    }
    pthread_mutex_unlock(&g->mu);
}

void bt_game_api_transient(bt_game_api_t *g, int64_t fid, int n) {
    pthread_mutex_lock(&g->mu);
    player_t *p = find_player(g, fid);
    if (p) p->transient = n;
    pthread_mutex_unlock(&g->mu);
}

void bt_game_api_rate_limit(bt_game_api_t *g, int limit, int window_ms) {
    pthread_mutex_lock(&g->mu);
    g->limit = limit;
    g->window_ms = window_ms;
    pthread_mutex_unlock(&g->mu);
}

void bt_game_api_code(bt_game_api_t *g, const char *cdk, int err_code, const char *msg, int claim_limit,
                      int min_furnace) {
    pthread_mutex_lock(&g->mu);
    code_t *c = find_code(g, cdk);
    if (!c && g->ncodes < MAX_CODES) c = &g->codes[g->ncodes++];
    if (c) {
        memset(c, 0, sizeof *c);
        snprintf(c->cdk, sizeof c->cdk, "%s", cdk);
        c->err_code = err_code;
        snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "");
        c->claim_limit = claim_limit;
        c->min_furnace = min_furnace;
    }
    pthread_mutex_unlock(&g->mu);
}

void bt_game_api_delay(bt_game_api_t *g, int delay_ms) {
    pthread_mutex_lock(&g->mu);
    g->delay_ms = delay_ms;
    pthread_mutex_unlock(&g->mu);
}

void bt_game_api_reset_counts(bt_game_api_t *g) {
    pthread_mutex_lock(&g->mu);
    g->narrivals = g->nredeems = 0;
    g->calls_player = g->calls_gift = g->bad_signs = g->rejected = 0;
    pthread_mutex_unlock(&g->mu);
}

int bt_game_api_calls(bt_game_api_t *g, const char *path) {
    pthread_mutex_lock(&g->mu);
    int n = !path ? g->calls_player + g->calls_gift
                  : strcmp(path, "/api/player") == 0 ? g->calls_player : g->calls_gift;
    pthread_mutex_unlock(&g->mu);
    return n;
}

int bt_game_api_redeem_calls(bt_game_api_t *g, int64_t fid, const char *cdk) {
    pthread_mutex_lock(&g->mu);
    redeem_t *r = find_redeem(g, fid, cdk, 0);
    int n = r ? r->calls : 0;
    pthread_mutex_unlock(&g->mu);
    return n;
}

int bt_game_api_max_redeem_calls(bt_game_api_t *g, const char *cdk) {
    pthread_mutex_lock(&g->mu);
    int m = 0;
    for (int i = 0; i < g->nredeems; i++)
        if (strcmp(g->redeems[i].cdk, cdk) == 0 && g->redeems[i].calls > m) m = g->redeems[i].calls;
    pthread_mutex_unlock(&g->mu);
    return m;
}

int bt_game_api_bad_signs(bt_game_api_t *g) {
    pthread_mutex_lock(&g->mu);
    int n = g->bad_signs;
    pthread_mutex_unlock(&g->mu);
    return n;
}

int bt_game_api_rejected_429(bt_game_api_t *g) {
    pthread_mutex_lock(&g->mu);
    int n = g->rejected;
    pthread_mutex_unlock(&g->mu);
    return n;
}

int bt_game_api_max_in_window(bt_game_api_t *g, int window_ms) {
    pthread_mutex_lock(&g->mu);
    int best = 0, lo = 0;
    for (int hi = 0; hi < g->narrivals; hi++) {
        while (g->arrivals[hi] - g->arrivals[lo] >= window_ms) lo++;
        if (hi - lo + 1 > best) best = hi - lo + 1;
    }
    pthread_mutex_unlock(&g->mu);
    return best;
}
