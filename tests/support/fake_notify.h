/* Fake Discord, Telegram and generic-webhook endpoints on one fake HTTP
 * server (fake_http.h), for the tests and the bench of bus-notifications.
 *
 *   bt_notify_t *n = bt_notify_start("whsecret-0123456789");
 *   // BUS_DISCORD_API_URL = bt_notify_url(n, "/api")
 *   // BUS_TELEGRAM_API_URL = bt_notify_url(n, "")
 *   // webhooks: bt_notify_url(n, "/hook/<name>")
 *   bt_notify_rule(n, "discord:42", 429, 1, 1.5, 0);  // the next answer: 429, retry_after 1.5 s
 *   ... CHECK_INT(bt_notify_count(n, "discord:42"), 1); CHECK_INT(bt_notify_violations(n), 0);
 *   bt_notify_stop(n);
 *
 * Routes and what they check, like the real services:
 *   POST /api/webhooks/<id>/<token>   key "discord:<id>": at most 5 per 2 s
 *                                     per webhook (sliding, by arrival);
 *                                     answers 200 {"id":...}; 429 rules
 *                                     answer {"retry_after": s, "global": false}
 *   POST /bot<token>/sendMessage      key "tg:<chat_id>" (and "bot:<token>"):
 *                                     at most 1 per 1 s per chat and 30 per
 *                                     1 s per bot; answers {"ok":true,...};
 *                                     rules answer {"ok":false,"error_code",
 *                                     "description","parameters":{"retry_after"}}
 *   POST /hook/<name>                 key "wh:<name>": checks X-Bus-Signature =
 *                                     sha256=HMAC(secret, X-Bus-Timestamp "."
 *                                     body) (a mismatch answers 401 and counts
 *                                     in bt_notify_bad_signatures)
 * A request over a limit is counted in bt_notify_violations (and answered
 * 200, so that the counts stay those of the sender). Counted requests are
 * those answered 2xx ("delivered"); bt_notify_hits counts every request.
 *
 * Threading: the handler runs on the fake's thread; every bt_notify_*
 * function may be called from the test's thread (a mutex guards the state).
 */
#ifndef BUS_TEST_FAKE_NOTIFY_H
#define BUS_TEST_FAKE_NOTIFY_H

#include <stddef.h>

#include "fake_http.h"

typedef struct bt_notify bt_notify_t;

bt_notify_t *bt_notify_start(const char *webhook_secret);
void bt_notify_stop(bt_notify_t *n);
bt_fake_http_t *bt_notify_http(bt_notify_t *n);
/* "http://127.0.0.1:PORT" + path, in a static buffer per call slot (4 rotating). */
const char *bt_notify_url(bt_notify_t *n, const char *path);

/* The next `times` requests for key (0 = all of them) answer status after
 * delay_ms; retry_after_s goes in the 429 body (and Retry-After header when
 * the body has none: use status 503 with it for the header case). status 0:
 * answer normally, only after delay_ms (a slow service). */
void bt_notify_rule(bt_notify_t *n, const char *key, int status, int times, double retry_after_s, int delay_ms);

/* Delivered (2xx) messages for a key; every request for it; their sums. */
int bt_notify_count(bt_notify_t *n, const char *key);
int bt_notify_hits(bt_notify_t *n, const char *key);
int bt_notify_total(bt_notify_t *n);
int bt_notify_violations(bt_notify_t *n);
int bt_notify_bad_signatures(bt_notify_t *n);
/* Distinct keys that got at least one delivered message; keys delivered
 * more than once. */
int bt_notify_keys(bt_notify_t *n);
int bt_notify_keys_over(bt_notify_t *n, int count);
/* The last delivered body for key (malloc'd copy, caller frees), NULL when none. */
char *bt_notify_last_body(bt_notify_t *n, const char *key);
/* Milliseconds between the last two requests for key (by arrival); -1 with fewer. */
double bt_notify_last_gap_ms(bt_notify_t *n, const char *key);
/* Milliseconds (monotonic, bt_now_ms clock) of the last delivered message. */
double bt_notify_last_ms(bt_notify_t *n);


/* ---- bus-notifications processes for tests and the bench ---------------- */
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "bus/conn.h"

/* Starts $BUS_TEST_BUILD/bus-notifications with the store
 * $BUS_TEST_TMPDIR/notifications-<name>.db (fresh: delete it first), the
 * fakes of n as Discord/Telegram (bots alpha, beta), quick retries, and the
 * NULL-terminated extra "NAME=value" entries (may be NULL; later entries
 * win). Its log goes to $BUS_TEST_TMPDIR/notifications-<name>-<idx>.log. */
pid_t bt_notify_worker(bt_notify_t *n, const char *name, int idx, int fresh, const char *const *extra);
/* The Telegram token of bot alpha / beta in those workers (a secret the
 * tests look for in answers and logs). */
#define BT_NOTIFY_BOT_ALPHA "111:alpha-SECRET-token"
#define BT_NOTIFY_BOT_BETA "222:beta-SECRET-token"
/* Publishes an event (data owned) with this id to bus.events. */
void bt_notify_publish(bus_conn_t *conn, const char *type, const char *id, const char *corr, cJSON *data);

#endif
