/* Per-destination rate limits shared by every bus-notifications process,
 * in Redis (one Lua script, so check-and-take is atomic across processes):
 *
 *   discord   5 requests per 2 s per webhook         nt:rl:dc:<webhook id>
 *   telegram  1 message per 1 s per chat              nt:rl:tg:<bot>:<chat>
 *             and 30 messages per 1 s per bot         nt:rl:tg:<bot>
 *   webhook   none
 *
 * Each is a sliding window (a sorted set of the send times, on Redis's
 * clock): a send is allowed only when fewer than `limit` sends happened in
 * the last window, so no window anywhere holds more -- fixed windows would
 * let 2x through across a boundary. The windows are BUS_NOTIFY_RATE_MARGIN_PCT
 * longer than the services' (default 10%) because a service measures arrival
 * times, which scheduling and the network spread out. A 429 blocks the
 * destination for every process (nt:block:<...>, PX retry_after): the
 * script answers the block's remaining time first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "notifications.h"

/* KEYS[1] block key, KEYS[2..] windows; ARGV: limit, window per window, then a
 * unique member. Returns 0 (taken) or the milliseconds to wait. */
static const char take_script[] =
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local b = redis.call('PTTL', KEYS[1])\n"
    "if b > 0 then return b end\n"
    "local tm = redis.call('TIME')\n"
    "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"
    "for i = 2, #KEYS do\n"
    "  local lim = tonumber(ARGV[2 * i - 3]); local win = tonumber(ARGV[2 * i - 2])\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - win)\n"
    "  local n = redis.call('ZCARD', KEYS[i])\n"
    "  if n >= lim then\n"
    "    local o = redis.call('ZRANGE', KEYS[i], n - lim, n - lim, 'WITHSCORES')\n"
    "    local w = tonumber(o[2]) + win - now + 1\n"
    "    if w < 1 then w = 1 end\n"
    "    return w\n"
    "  end\n"
    "end\n"
    "for i = 2, #KEYS do\n"
    "  local win = tonumber(ARGV[2 * i - 2])\n"
    "  redis.call('ZADD', KEYS[i], now, ARGV[#ARGV])\n"
    "  redis.call('PEXPIRE', KEYS[i], win + 1000)\n"
    "end\n"
    "return 0\n";

static int margin(const nt_state_t *st, int ms) { return ms + ms * st->rate_margin_pct / 100; }

void nt_limits_of(const nt_state_t *st, const cJSON *sub, nt_limit_t *l) {
    memset(l, 0, sizeof *l);
    const char *kind = nt_str(sub, "kind");
    if (strcmp(kind, "discord") == 0) {
        snprintf(l->block_key, sizeof l->block_key, "nt:block:dc:%s", nt_str(sub, "webhook_key"));
        snprintf(l->key[0], sizeof l->key[0], "nt:rl:dc:%s", nt_str(sub, "webhook_key"));
        l->limit[0] = 5;
        l->window_ms[0] = margin(st, 2000);
        l->n = 1;
    } else if (strcmp(kind, "telegram") == 0) {
        snprintf(l->block_key, sizeof l->block_key, "nt:block:tg:%.60s:%.60s", nt_str(sub, "bot"), nt_str(sub, "chat_id"));
        snprintf(l->key[0], sizeof l->key[0], "nt:rl:tg:%.60s:%.60s", nt_str(sub, "bot"), nt_str(sub, "chat_id"));
        l->limit[0] = 1;
        l->window_ms[0] = margin(st, 1000);
        snprintf(l->key[1], sizeof l->key[1], "nt:rl:tg:%.60s", nt_str(sub, "bot"));
        l->limit[1] = 30;
        l->window_ms[1] = margin(st, 1000);
        l->n = 2;
    } else {
        /* a generic webhook has no published limit; a 429 still blocks it */
        snprintf(l->block_key, sizeof l->block_key, "nt:block:wh:%.120s", nt_str(sub, "_id"));
    }
}

typedef struct {
    nt_limit_cb cb;
    void *data;
} take_t;

static void on_take(int status, const redisReply *r, void *data) {
    take_t *t = data;
    if (status == 0 && r && r->type == REDIS_REPLY_INTEGER)
        t->cb(0, (int64_t)r->integer, t->data);
    else
        t->cb(status ? status : BUS_EINTERNAL, 0, t->data);
    free(t);
}

int nt_limit_take(nt_state_t *st, const nt_limit_t *l, nt_limit_cb cb, void *data) {
    static unsigned long long seq;
    char args_s[3][2][24], member[96], nkeys[16];
    const char *argv[16];
    size_t n = 0;
    argv[n++] = "EVAL";
    argv[n++] = take_script;
    snprintf(nkeys, sizeof nkeys, "%d", 1 + l->n);
    argv[n++] = nkeys;
    argv[n++] = l->block_key;
    for (int i = 0; i < l->n; i++) argv[n++] = l->key[i];
    for (int i = 0; i < l->n; i++) {
        snprintf(args_s[i][0], sizeof args_s[i][0], "%d", l->limit[i]);
        snprintf(args_s[i][1], sizeof args_s[i][1], "%d", l->window_ms[i]);
        argv[n++] = args_s[i][0];
        argv[n++] = args_s[i][1];
    }
    snprintf(member, sizeof member, "%s:%llu", bus_worker_instance(st->w), ++seq);
    argv[n++] = member;
    take_t *t = malloc(sizeof *t);
    if (!t) return BUS_EINTERNAL;
    t->cb = cb;
    t->data = data;
    int rc = bus_redis_command_argv(st->redis, (int)n, argv, NULL, on_take, t);
    if (rc != 0) free(t);
    return rc;
}

static void on_blocked(int status, void *data) {
    (void)data;
    if (status != 0) bus_warn(NULL, "recording a 429 block in Redis failed: %s", bus_strerror(status));
}

void nt_limit_block(nt_state_t *st, const nt_limit_t *l, int64_t ms) {
    if (ms < 1) return;
    bus_redis_set_px(st->redis, l->block_key, "1", 1, ms, on_blocked, NULL);
}
