/* Fake Discord, Telegram and webhook endpoints (fake_notify.h). */
#include "fake_notify.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#define MAX_KEYS 8192
#define RING 64

typedef struct {
    char key[96];
    int count, hits;
    double times[RING]; /* arrival times of delivered-or-not requests, newest at pos-1 */
    int pos, filled;
    char *last_body;
    /* rule */
    int r_status, r_times, r_delay;
    double r_retry;
    int r_active;
} entry_t;

struct bt_notify {
    bt_fake_http_t *http;
    pthread_mutex_t mu;
    char secret[256];
    entry_t *e;
    int ne;
    int total, violations, bad_sigs;
    double last_ms;
    char urls[4][256];
    int url_slot;
};

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static entry_t *entry(bt_notify_t *n, const char *key) {
    for (int i = 0; i < n->ne; i++)
        if (strcmp(n->e[i].key, key) == 0) return &n->e[i];
    if (n->ne >= MAX_KEYS) return NULL;
    entry_t *e = &n->e[n->ne++];
    memset(e, 0, sizeof *e);
    snprintf(e->key, sizeof e->key, "%s", key);
    return e;
}

/* Records an arrival; 1 when more than limit arrived within window_ms. */
static int arrive(entry_t *e, double now, int limit, double window_ms) {
    e->times[e->pos] = now;
    e->pos = (e->pos + 1) % RING;
    if (e->filled < RING) e->filled++;
    int in = 0;
    for (int i = 0; i < e->filled; i++)
        if (now - e->times[i] < window_ms) in++;
    return in > limit;
}

static void sign(const char *secret, const char *ts, const char *body, size_t len, char out[80]) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t tl = strlen(ts);
    unsigned char *msg = malloc(tl + 1 + len + 1);
    memcpy(msg, ts, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, len);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, tl + 1 + len, mac, &maclen);
    free(msg);
    strcpy(out, "sha256=");
    for (unsigned int i = 0; i < maclen && i < 32; i++) sprintf(out + 7 + 2 * i, "%02x", mac[i]);
}

static __thread char reply_body[512];
static __thread char reply_hdr[64];

static void handler(const bt_fake_request_t *req, bt_fake_reply_t *reply, void *data) {
    bt_notify_t *n = data;
    double now = mono_ms();
    char key[96] = "", bot_key[96] = "";
    int kind = 0; /* 1 discord, 2 telegram, 3 webhook */
    const char *p = req->path;
    if (strncmp(p, "/api/webhooks/", 14) == 0) {
        const char *id = p + 14, *slash = strchr(id, '/');
        snprintf(key, sizeof key, "discord:%.*s", slash ? (int)(slash - id) : (int)strlen(id), id);
        kind = 1;
    } else if (strncmp(p, "/bot", 4) == 0 && strstr(p, "/sendMessage")) {
        cJSON *b = cJSON_ParseWithLength(req->body, req->body_len);
        const cJSON *chat = cJSON_GetObjectItem(b, "chat_id");
        if (cJSON_IsNumber(chat))
            snprintf(key, sizeof key, "tg:%lld", (long long)chat->valuedouble);
        else
            snprintf(key, sizeof key, "tg:%s", cJSON_IsString(chat) ? chat->valuestring : "?");
        cJSON_Delete(b);
        snprintf(bot_key, sizeof bot_key, "bot:%.*s", (int)(strstr(p, "/sendMessage") - p - 4), p + 4);
        kind = 2;
    } else if (strncmp(p, "/hook/", 6) == 0) {
        snprintf(key, sizeof key, "wh:%s", p + 6);
        kind = 3;
    } else {
        reply->status = 404;
        reply->body = "{\"message\":\"Unknown route\"}";
        return;
    }
    pthread_mutex_lock(&n->mu);
    entry_t *e = entry(n, key);
    if (!e) {
        pthread_mutex_unlock(&n->mu);
        reply->status = 500;
        return;
    }
    e->hits++;
    int over = 0;
    if (kind == 1) over = arrive(e, now, 5, 2000);
    if (kind == 3) arrive(e, now, 1 << 30, 1); /* no limit: only the time is kept */
    if (kind == 2) {
        over = arrive(e, now, 1, 1000);
        entry_t *b = entry(n, bot_key);
        if (b && arrive(b, now, 30, 1000)) over = 1;
    }
    if (over) n->violations++;
    int status = 200;
    if (e->r_active) {
        reply->delay_ms = e->r_delay;
        status = e->r_status ? e->r_status : 200;
        double retry = e->r_retry;
        if (e->r_times > 0 && --e->r_times == 0) e->r_active = 0;
        if (status == 429 && kind == 1)
            snprintf(reply_body, sizeof reply_body, "{\"message\":\"You are being rate limited.\",\"retry_after\":%.3f,\"global\":false}", retry);
        else if (status != 200 && kind == 2)
            snprintf(reply_body, sizeof reply_body,
                     "{\"ok\":false,\"error_code\":%d,\"description\":\"%s\",\"parameters\":{\"retry_after\":%d}}", status,
                     status == 429 ? "Too Many Requests: retry later" : status == 403 ? "Forbidden: bot was kicked" : "Error",
                     (int)retry);
        else if (status == 404 && kind == 1)
            snprintf(reply_body, sizeof reply_body, "{\"message\":\"Unknown Webhook\",\"code\":10015}");
        else
            snprintf(reply_body, sizeof reply_body, "{\"message\":\"error %d\"}", status);
        if (status != 200) {
            reply->body = reply_body;
            if (retry > 0 && !(status == 429 && kind != 3)) {
                snprintf(reply_hdr, sizeof reply_hdr, "Retry-After: %d", (int)(retry + 0.999));
                reply->headers[0] = reply_hdr;
            }
        }
    }
    if (status == 200 && kind == 3) {
        const char *ts = bt_fake_request_header(req, "X-Bus-Timestamp");
        const char *sig = bt_fake_request_header(req, "X-Bus-Signature");
        char want[80];
        sign(n->secret, ts ? ts : "", req->body, req->body_len, want);
        if (!ts || !sig || strcmp(sig, want) != 0) {
            n->bad_sigs++;
            status = 401;
            reply->body = "{\"error\":\"bad signature\"}";
        }
    }
    reply->status = status;
    if (status >= 200 && status < 300) {
        e->count++;
        n->total++;
        n->last_ms = now;
        free(e->last_body);
        e->last_body = strndup(req->body, req->body_len);
        if (kind == 2) reply->body = "{\"ok\":true,\"result\":{\"message_id\":1}}";
        if (kind == 1) reply->body = "{\"id\":\"1\",\"type\":0}";
    }
    pthread_mutex_unlock(&n->mu);
}

bt_notify_t *bt_notify_start(const char *webhook_secret) {
    bt_notify_t *n = calloc(1, sizeof *n);
    n->e = calloc(MAX_KEYS, sizeof *n->e);
    pthread_mutex_init(&n->mu, NULL);
    snprintf(n->secret, sizeof n->secret, "%s", webhook_secret ? webhook_secret : "");
    n->http = bt_fake_http_start();
    bt_fake_http_set_handler(n->http, handler, n);
    return n;
}

void bt_notify_stop(bt_notify_t *n) {
    if (!n) return;
    bt_fake_http_stop(n->http);
    for (int i = 0; i < n->ne; i++) free(n->e[i].last_body);
    free(n->e);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

bt_fake_http_t *bt_notify_http(bt_notify_t *n) { return n->http; }

const char *bt_notify_url(bt_notify_t *n, const char *path) {
    char *buf = n->urls[n->url_slot];
    n->url_slot = (n->url_slot + 1) % 4;
    return bt_fake_http_url(n->http, path, buf, sizeof n->urls[0]);
}

void bt_notify_rule(bt_notify_t *n, const char *key, int status, int times, double retry_after_s, int delay_ms) {
    pthread_mutex_lock(&n->mu);
    entry_t *e = entry(n, key);
    if (e) {
        e->r_active = 1;
        e->r_status = status;
        e->r_times = times;
        e->r_retry = retry_after_s;
        e->r_delay = delay_ms;
    }
    pthread_mutex_unlock(&n->mu);
}

#define GETTER(name, expr)                  \
    int name(bt_notify_t *n) {              \
        pthread_mutex_lock(&n->mu);         \
        int v = (expr);                     \
        pthread_mutex_unlock(&n->mu);       \
        return v;                           \
    }
GETTER(bt_notify_total, n->total)
GETTER(bt_notify_violations, n->violations)
GETTER(bt_notify_bad_signatures, n->bad_sigs)

int bt_notify_count(bt_notify_t *n, const char *key) {
    pthread_mutex_lock(&n->mu);
    int v = 0;
    for (int i = 0; i < n->ne; i++)
        if (strcmp(n->e[i].key, key) == 0) v = n->e[i].count;
    pthread_mutex_unlock(&n->mu);
    return v;
}

int bt_notify_hits(bt_notify_t *n, const char *key) {
    pthread_mutex_lock(&n->mu);
    int v = 0;
    for (int i = 0; i < n->ne; i++)
        if (strcmp(n->e[i].key, key) == 0) v = n->e[i].hits;
    pthread_mutex_unlock(&n->mu);
    return v;
}

int bt_notify_keys(bt_notify_t *n) { return bt_notify_keys_over(n, 0); }

int bt_notify_keys_over(bt_notify_t *n, int count) {
    pthread_mutex_lock(&n->mu);
    int v = 0;
    for (int i = 0; i < n->ne; i++)
        if (strncmp(n->e[i].key, "bot:", 4) != 0 && n->e[i].count > count) v++;
    pthread_mutex_unlock(&n->mu);
    return v;
}

char *bt_notify_last_body(bt_notify_t *n, const char *key) {
    pthread_mutex_lock(&n->mu);
    char *v = NULL;
    for (int i = 0; i < n->ne; i++)
        if (strcmp(n->e[i].key, key) == 0 && n->e[i].last_body) v = strdup(n->e[i].last_body);
    pthread_mutex_unlock(&n->mu);
    return v;
}

double bt_notify_last_ms(bt_notify_t *n) {
    pthread_mutex_lock(&n->mu);
    double v = n->last_ms;
    pthread_mutex_unlock(&n->mu);
    return v;
}

/* ---- bus-notifications processes ------------------------------------------------ */

#include <unistd.h>

#include "bus/envelope.h"
#include "bus/publish.h"
#include "support.h"

pid_t bt_notify_worker(bt_notify_t *n, const char *name, int idx, int fresh, const char *const *extra) {
    const char *tmp = getenv("BUS_TEST_TMPDIR") ? getenv("BUS_TEST_TMPDIR") : "/tmp";
    char db[512], p[600];
    snprintf(db, sizeof db, "%s/notifications-%s.db", tmp, name);
    if (fresh) {
        unlink(db);
        snprintf(p, sizeof p, "%s-wal", db);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", db);
        unlink(p);
    }
    static char store[600], schemas[600], prog[600], log[600], discord[300], telegram[300];
    snprintf(store, sizeof store, "BUS_STORE=sqlite:%s", db);
    const char *sd = getenv("BUS_SCHEMAS_DIR");
    snprintf(schemas, sizeof schemas, "BUS_SCHEMAS_DIR=%s", sd ? sd : "schemas");
    snprintf(prog, sizeof prog, "%s/bus-notifications", getenv("BUS_TEST_BUILD") ? getenv("BUS_TEST_BUILD") : "build");
    snprintf(log, sizeof log, "%s/notifications-%s-%d.log", tmp, name, idx);
    snprintf(discord, sizeof discord, "BUS_DISCORD_API_URL=%s", bt_notify_url(n, "/api"));
    snprintf(telegram, sizeof telegram, "BUS_TELEGRAM_API_URL=%s", bt_notify_url(n, ""));
    const char *env[40] = {store,
                           schemas,
                           discord,
                           telegram,
                           "BUS_TELEGRAM_BOTS=alpha=" BT_NOTIFY_BOT_ALPHA ",beta=" BT_NOTIFY_BOT_BETA,
                           "BUS_NOTIFY_I18N_DIR=workers/notifications/i18n",
                           "BUS_NOTIFY_RETRY_BASE_MS=100",
                           "BUS_NOTIFY_RETRY_MAX_MS=1000",
                           "BUS_NOTIFY_MAX_ATTEMPTS=4",
                           "BUS_NOTIFY_LEASE_MS=8000",
                           "BUS_NOTIFY_HTTP_TIMEOUT_MS=1000",
                           "BUS_NOTIFY_POLL_MS=100",
                           "BUS_LOG_LEVEL=info",
                           "BUS_VALIDATE_REPLIES=1",
                           "BUS_PREFETCH=64",
                           NULL};
    size_t k = 0;
    while (env[k]) k++;
    for (size_t i = 0; extra && extra[i] && k < 39; i++) env[k++] = extra[i];
    env[k] = NULL;
    char *argv[] = {prog, NULL};
    return bt_spawn_program(argv, env, log);
}

void bt_notify_publish(bus_conn_t *conn, const char *type, const char *id, const char *corr, cJSON *data) {
    bus_envelope_t env = {0};
    bus_envelope_init(&env, type, "test", NULL, corr, data);
    if (id) {
        free(env.id);
        env.id = strdup(id);
    }
    size_t len;
    char *body = bus_envelope_serialize(&env, &len);
    bus_event_publish_body(conn, type, env.id, corr, body, len, NULL, NULL);
    free(body);
    bus_envelope_clear(&env);
}

double bt_notify_last_gap_ms(bt_notify_t *n, const char *key) {
    pthread_mutex_lock(&n->mu);
    double v = -1;
    for (int i = 0; i < n->ne; i++) {
        entry_t *e = &n->e[i];
        if (strcmp(e->key, key) != 0 || e->filled < 2) continue;
        double last = e->times[(e->pos + RING - 1) % RING], prev = e->times[(e->pos + RING - 2) % RING];
        v = last - prev;
    }
    pthread_mutex_unlock(&n->mu);
    return v;
}
