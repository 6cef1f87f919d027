/* The pure rules of scheduled game events: kinds, recurrences, UTC time,
 * the items of an occurrence (rules.h). */
#include "rules.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The kinds players schedule in WhiteOut Survival and their usual length:
 * Bear Trap 30 min, SvS (state vs state) 6 h, Foundry Battle 60 min, the
 * Mercenary bosses a 3-day window, the daily reset a moment (00:00 UTC).
 * Where the game's length is not well known (Crazy Joe, Canyon Clash,
 * Fortress Battle, Frostfire Mine) the default is our choice; create takes
 * duration_min to say otherwise. */
static const ev_kind_t kinds[] = {
    {"bear_trap", "Bear Trap", 30},
    {"svs", "SvS", 360},
    {"foundry_battle", "Foundry Battle", 60},
    {"crazy_joe", "Crazy Joe", 30},
    {"canyon_clash", "Canyon Clash", 60},
    {"fortress_battle", "Fortress Battle", 60},
    {"frostfire_mine", "Frostfire Mine", 30},
    {"mercenary", "Mercenary bosses", 3 * 24 * 60},
    {"daily_reset", "Daily reset", 0},
    {"custom", "Custom event", 60},
};

const ev_kind_t *ev_kind_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i].name, name) == 0) return &kinds[i];
    return NULL;
}

static const char *const rec_names[] = {"none",          "daily",         "every_2_days", "weekly",
                                        "every_2_weeks", "every_4_weeks", "monthly"};

int ev_recurrence_parse(const char *name) {
    if (!name || !*name) return EV_REC_NONE;
    for (int i = 0; i < (int)(sizeof rec_names / sizeof rec_names[0]); i++)
        if (strcmp(rec_names[i], name) == 0) return i;
    return -1;
}

const char *ev_recurrence_name(int rec) {
    return rec >= 0 && rec < (int)(sizeof rec_names / sizeof rec_names[0]) ? rec_names[rec] : "none";
}

#define DAY_MS (24LL * 3600 * 1000)

static int days_in_month(int year, int mon0) {
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mon0 == 1 && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0)) return 29;
    return d[mon0];
}

int ev_day_of_month(int64_t t_ms) {
    time_t t = (time_t)(t_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    return tm.tm_mday;
}

int64_t ev_next_start(int64_t start_ms, int rec, int anchor_day) {
    switch (rec) {
    case EV_REC_DAILY: return start_ms + DAY_MS;
    case EV_REC_EVERY_2_DAYS: return start_ms + 2 * DAY_MS;
    case EV_REC_WEEKLY: return start_ms + 7 * DAY_MS;
    case EV_REC_EVERY_2_WEEKS: return start_ms + 14 * DAY_MS;
    case EV_REC_EVERY_4_WEEKS: return start_ms + 28 * DAY_MS;
    case EV_REC_MONTHLY: {
        int64_t ms = ((start_ms % 1000) + 1000) % 1000;
        time_t t = (time_t)((start_ms - ms) / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        tm.tm_mon += 1;
        if (tm.tm_mon == 12) {
            tm.tm_mon = 0;
            tm.tm_year += 1;
        }
        int dim = days_in_month(tm.tm_year + 1900, tm.tm_mon);
        if (anchor_day < 1 || anchor_day > 31) anchor_day = tm.tm_mday;
        tm.tm_mday = anchor_day < dim ? anchor_day : dim;
        return (int64_t)timegm(&tm) * 1000 + ms;
    }
    default: return start_ms;
    }
}

static int digits(const char **p, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)**p)) return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    return v;
}

int64_t ev_parse_time(const char *s) {
    if (!s) return -1;
    const char *p = s;
    struct tm tm = {0};
    int y = digits(&p, 4);
    if (y < 1970 || *p++ != '-') return -1;
    int mo = digits(&p, 2);
    if (mo < 1 || mo > 12 || *p++ != '-') return -1;
    int d = digits(&p, 2);
    if (d < 1 || d > days_in_month(y, mo - 1) || (*p != 'T' && *p != 't')) return -1;
    p++;
    int h = digits(&p, 2);
    if (h < 0 || h > 23 || *p++ != ':') return -1;
    int mi = digits(&p, 2);
    if (mi < 0 || mi > 59 || *p++ != ':') return -1;
    int se = digits(&p, 2);
    if (se < 0 || se > 59) return -1;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n < 3) frac = frac * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0) return -1;
        for (; n < 3; n++) frac *= 10;
    }
    int64_t offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;
        int oh = digits(&p, 2);
        if (oh < 0 || oh > 23 || *p++ != ':') return -1;
        int om = digits(&p, 2);
        if (om < 0 || om > 59) return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1; /* a time without its zone is ambiguous: refused */
    }
    if (*p) return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    return ((int64_t)timegm(&tm) - offset_min * 60) * 1000 + frac;
}

void ev_format_time(int64_t t_ms, char *out, size_t len) {
    int64_t ms = ((t_ms % 1000) + 1000) % 1000;
    time_t t = (time_t)((t_ms - ms) / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)ms);
}

int64_t ev_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *const item_names[] = {"reminder", "started", "ended"};

const char *ev_item_name(int what) { return what >= 0 && what <= EV_ITEM_ENDED ? item_names[what] : "reminder"; }

int ev_item_parse(const char *s) {
    for (int i = 0; i <= EV_ITEM_ENDED; i++)
        if (s && strcmp(s, item_names[i]) == 0) return i;
    return -1;
}

int ev_plan_items(int64_t start_ms, int duration_min, const int *offsets, int noffsets, int64_t from_ms,
                  ev_item_t *out) {
    int n = 0;
    for (int i = 0; i < noffsets && i < EV_MAX_REMINDERS; i++) {
        int64_t at = start_ms - (int64_t)offsets[i] * 60000;
        if (at >= from_ms) out[n++] = (ev_item_t){EV_ITEM_REMINDER, offsets[i], at};
    }
    if (start_ms >= from_ms) out[n++] = (ev_item_t){EV_ITEM_STARTED, 0, start_ms};
    int64_t end = start_ms + (int64_t)duration_min * 60000;
    if (duration_min > 0 && end >= from_ms) out[n++] = (ev_item_t){EV_ITEM_ENDED, 0, end};
    return n;
}

void ev_item_id(const char *event, int64_t gen, int64_t start_ms, const ev_item_t *it, char *out, size_t len) {
    static const char tag[] = {'r', 's', 'e'};
    snprintf(out, len, "%s.%lld.%lld.%c%d", event, (long long)gen, (long long)start_ms,
             tag[it->what >= 0 && it->what <= EV_ITEM_ENDED ? it->what : 0], it->offset_min);
}

int ev_is_missed(int policy, int64_t late_ms, int64_t window_ms) {
    return policy == EV_LATE_MISS && late_ms > window_ms;
}
