/* The pure rules of scheduled game events (no I/O; unit-tested in
 * tests/unit/test_event_rules.c).
 *
 * Time is UTC only: instants are milliseconds since the Unix epoch (int64),
 * written as RFC 3339 with a "Z" (offsets are accepted on input and
 * converted). The game's clock is UTC and so is every recurrence: "daily"
 * means every 24 h at the same UTC time, "monthly" the same day of the
 * month at the same UTC time: the day first asked for (the event's
 * anchor_day), clamped to each month's last day (the 31st falls on the 30th
 * in April and on the 31st again in May).
 */
#ifndef EV_RULES_H
#define EV_RULES_H

#include <stddef.h>
#include <stdint.h>

/* ---- kinds -------------------------------------------------------------- */

typedef struct ev_kind {
    const char *name;         /* "bear_trap" */
    const char *label;        /* "Bear Trap": the default event name */
    int default_duration_min; /* used when create has no duration_min */
} ev_kind_t;

/* The kind named `name`, or NULL. */
const ev_kind_t *ev_kind_find(const char *name);

/* ---- recurrence ---------------------------------------------------------- */

typedef enum {
    EV_REC_NONE = 0,
    EV_REC_DAILY,
    EV_REC_EVERY_2_DAYS,
    EV_REC_WEEKLY,
    EV_REC_EVERY_2_WEEKS,
    EV_REC_EVERY_4_WEEKS,
    EV_REC_MONTHLY,
} ev_recurrence_t;

/* -1 for an unknown name; "" and NULL mean none. */
int ev_recurrence_parse(const char *name);
const char *ev_recurrence_name(int rec);
/* The start of the occurrence after the one starting at start_ms (UTC);
 * start_ms itself for EV_REC_NONE. Monthly keeps the day of the month of
 * `anchor_day` (1..31), clamped to the length of each month. */
int64_t ev_next_start(int64_t start_ms, int rec, int anchor_day);
/* The day of the month (1..31, UTC) of t. */
int ev_day_of_month(int64_t t_ms);

/* ---- time ----------------------------------------------------------------- */

/* Parses RFC 3339 ("2026-12-05T12:00:00Z", fractions and +hh:mm offsets
 * allowed) into UTC ms; -1 when malformed. */
int64_t ev_parse_time(const char *s);
/* Writes "2026-12-05T12:00:00.000Z" (at least 25 bytes). */
void ev_format_time(int64_t t_ms, char *out, size_t len);
/* The wall clock, UTC ms. */
int64_t ev_now_ms(void);

/* ---- planning ---------------------------------------------------------------- */

/* What an item of an occurrence publishes when due. */
typedef enum { EV_ITEM_REMINDER = 0, EV_ITEM_STARTED, EV_ITEM_ENDED } ev_item_what_t;
const char *ev_item_name(int what); /* "reminder", "started", "ended" */
int ev_item_parse(const char *s);   /* -1 when unknown */

typedef struct ev_item {
    int what;       /* ev_item_what_t */
    int offset_min; /* minutes before the start (reminders; 0 otherwise) */
    int64_t at_ms;  /* when it is due */
} ev_item_t;

#define EV_MAX_REMINDERS 8
#define EV_MAX_ITEMS (EV_MAX_REMINDERS + 2)

/* The items of the occurrence starting at start_ms: one reminder per
 * offset (minutes before the start), "started" at the start and "ended" at
 * start + duration (none when the duration is 0). Items due before
 * `from_ms` are left out: they were already past when the occurrence was
 * planned (an event created at 11:50 for 12:00 gets no 60-minute reminder).
 * Returns the number written to out (at most EV_MAX_ITEMS). */
int ev_plan_items(int64_t start_ms, int duration_min, const int *offsets, int noffsets, int64_t from_ms,
                  ev_item_t *out);

/* The id of an item's document in the "reminders" collection, also the
 * idempotency key of its firing: "<event>.<gen>.<start ms>.<r|s|e><offset>".
 * Deterministic, so planning the same occurrence twice names the same
 * documents. */
void ev_item_id(const char *event, int64_t gen, int64_t start_ms, const ev_item_t *it, char *out, size_t len);

/* The lateness policy: a due item published more than window_ms late is
 * "missed" under the miss policy (published as event.reminder.missed, never
 * sent stale); under the send policy it is always sent, saying how late. */
typedef enum { EV_LATE_MISS = 0, EV_LATE_SEND } ev_late_policy_t;
int ev_is_missed(int policy, int64_t late_ms, int64_t window_ms);

#endif
