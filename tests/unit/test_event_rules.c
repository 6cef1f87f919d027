/* The scheduled-event rules (workers/events/rules.c), pure functions: UTC
 * parsing and formatting, recurrences (monthly clamping, leap years), the
 * items of an occurrence, item ids, the lateness policy. rules.c belongs to
 * the bus-events program, so it is compiled into this test directly. */
#include "../../workers/events/rules.c"

#include "../test.h"

static int64_t T(const char *s) {
    int64_t t = ev_parse_time(s);
    CHECK(t >= 0);
    return t;
}

static void test_time(void) {
    CHECK_INT(ev_parse_time("1970-01-01T00:00:00Z"), 0);
    CHECK_INT(ev_parse_time("1970-01-01T00:00:01.5Z"), 1500);
    CHECK_INT(ev_parse_time("1970-01-01T00:00:01.123456Z"), 1123);
    /* an offset is converted to UTC */
    CHECK_INT(ev_parse_time("2026-12-05T14:00:00+02:00"), T("2026-12-05T12:00:00Z"));
    CHECK_INT(ev_parse_time("2026-12-05T10:30:00-01:30"), T("2026-12-05T12:00:00Z"));
    /* no zone, bad dates and garbage are refused */
    CHECK_INT(ev_parse_time("2026-12-05T12:00:00"), -1);
    CHECK_INT(ev_parse_time("2026-02-30T12:00:00Z"), -1);
    CHECK_INT(ev_parse_time("2026-13-01T12:00:00Z"), -1);
    CHECK_INT(ev_parse_time("2026-12-05 12:00:00Z"), -1);
    CHECK_INT(ev_parse_time("2026-12-05T12:00:00Zx"), -1);
    CHECK_INT(ev_parse_time(""), -1);
    CHECK_INT(ev_parse_time(NULL), -1);
    CHECK(ev_parse_time("2028-02-29T00:00:00Z") > 0);
    CHECK_INT(ev_parse_time("2027-02-29T00:00:00Z"), -1);
    char out[40];
    ev_format_time(T("2026-12-05T12:00:00.250Z"), out, sizeof out);
    CHECK_STR(out, "2026-12-05T12:00:00.250Z");
    ev_format_time(0, out, sizeof out);
    CHECK_STR(out, "1970-01-01T00:00:00.000Z");
    CHECK(ev_now_ms() > T("2025-01-01T00:00:00Z"));
}

static void test_recurrence(void) {
    CHECK_INT(ev_recurrence_parse("none"), EV_REC_NONE);
    CHECK_INT(ev_recurrence_parse(""), EV_REC_NONE);
    CHECK_INT(ev_recurrence_parse("every_2_days"), EV_REC_EVERY_2_DAYS);
    CHECK_INT(ev_recurrence_parse("monthly"), EV_REC_MONTHLY);
    CHECK_INT(ev_recurrence_parse("yearly"), -1);
    for (int r = EV_REC_NONE; r <= EV_REC_MONTHLY; r++) CHECK_INT(ev_recurrence_parse(ev_recurrence_name(r)), r);
    int64_t s = T("2026-12-05T12:00:00Z");
    CHECK_INT(ev_next_start(s, EV_REC_NONE, 5), s);
    CHECK_INT(ev_next_start(s, EV_REC_DAILY, 5), T("2026-12-06T12:00:00Z"));
    CHECK_INT(ev_next_start(s, EV_REC_EVERY_2_DAYS, 5), T("2026-12-07T12:00:00Z"));
    CHECK_INT(ev_next_start(s, EV_REC_WEEKLY, 5), T("2026-12-12T12:00:00Z"));
    CHECK_INT(ev_next_start(s, EV_REC_EVERY_2_WEEKS, 5), T("2026-12-19T12:00:00Z"));
    CHECK_INT(ev_next_start(s, EV_REC_EVERY_4_WEEKS, 5), T("2027-01-02T12:00:00Z"));
    CHECK_INT(ev_next_start(s, EV_REC_MONTHLY, 5), T("2027-01-05T12:00:00Z"));
    /* monthly on the 31st: clamped in short months, back to the 31st after */
    int64_t j = T("2027-01-31T19:00:00.500Z");
    int64_t f = ev_next_start(j, EV_REC_MONTHLY, 31);
    CHECK_INT(f, T("2027-02-28T19:00:00.500Z"));
    int64_t m = ev_next_start(f, EV_REC_MONTHLY, 31);
    CHECK_INT(m, T("2027-03-31T19:00:00.500Z"));
    CHECK_INT(ev_next_start(m, EV_REC_MONTHLY, 31), T("2027-04-30T19:00:00.500Z"));
    CHECK_INT(ev_next_start(T("2028-01-30T00:00:00Z"), EV_REC_MONTHLY, 30), T("2028-02-29T00:00:00Z"));
    CHECK_INT(ev_next_start(T("2026-12-15T00:00:00Z"), EV_REC_MONTHLY, 15), T("2027-01-15T00:00:00Z"));
    CHECK_INT(ev_day_of_month(T("2027-01-31T23:59:59Z")), 31);
}

static void test_kinds(void) {
    CHECK_INT(ev_kind_find("bear_trap")->default_duration_min, 30);
    CHECK_INT(ev_kind_find("svs")->default_duration_min, 360);
    CHECK_INT(ev_kind_find("foundry_battle")->default_duration_min, 60);
    CHECK_INT(ev_kind_find("mercenary")->default_duration_min, 3 * 24 * 60);
    CHECK_INT(ev_kind_find("daily_reset")->default_duration_min, 0);
    CHECK(ev_kind_find("custom") != NULL);
    CHECK(ev_kind_find("Bear_Trap") == NULL);
    CHECK(ev_kind_find(NULL) == NULL);
}

static void test_plan_items(void) {
    int64_t s = T("2026-12-05T12:00:00Z");
    int offs[] = {60, 15, 5, 0};
    ev_item_t it[EV_MAX_ITEMS];
    /* planned early: every reminder, started, ended */
    int n = ev_plan_items(s, 30, offs, 4, s - 3600 * 1000, it);
    CHECK_INT(n, 6);
    CHECK_INT(it[0].what, EV_ITEM_REMINDER);
    CHECK_INT(it[0].offset_min, 60);
    CHECK_INT(it[0].at_ms, s - 3600 * 1000);
    CHECK_INT(it[3].at_ms, s);
    CHECK_INT(it[4].what, EV_ITEM_STARTED);
    CHECK_INT(it[4].at_ms, s);
    CHECK_INT(it[5].what, EV_ITEM_ENDED);
    CHECK_INT(it[5].at_ms, s + 30 * 60000);
    /* planned at 11:50: the 60- and 15-minute reminders were already past */
    n = ev_plan_items(s, 30, offs, 4, s - 10 * 60000, it);
    CHECK_INT(n, 4);
    CHECK_INT(it[0].offset_min, 5);
    /* duration 0: no "ended" */
    n = ev_plan_items(s, 0, offs, 4, 0, it);
    CHECK_INT(n, 5);
    CHECK_INT(it[4].what, EV_ITEM_STARTED);
    /* under way: only "ended" left */
    n = ev_plan_items(s, 30, offs, 4, s + 1, it);
    CHECK_INT(n, 1);
    CHECK_INT(it[0].what, EV_ITEM_ENDED);
    /* never more than EV_MAX_REMINDERS reminders */
    int many[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    CHECK_INT(ev_plan_items(s, 30, many, 12, 0, it), EV_MAX_ITEMS);
    char id[160];
    ev_item_id("e1", 3, s, &(ev_item_t){EV_ITEM_REMINDER, 15, s - 900000}, id, sizeof id);
    CHECK_STR(id, "e1.3.1796472000000.r15");
    ev_item_id("e1", 3, s, &(ev_item_t){EV_ITEM_ENDED, 0, s}, id, sizeof id);
    CHECK_STR(id, "e1.3.1796472000000.e0");
    CHECK_STR(ev_item_name(EV_ITEM_STARTED), "started");
    CHECK_INT(ev_item_parse("ended"), EV_ITEM_ENDED);
    CHECK_INT(ev_item_parse("x"), -1);
}

static void test_late_policy(void) {
    CHECK(!ev_is_missed(EV_LATE_MISS, 0, 60000));
    CHECK(!ev_is_missed(EV_LATE_MISS, 60000, 60000));
    CHECK(ev_is_missed(EV_LATE_MISS, 60001, 60000));
    CHECK(!ev_is_missed(EV_LATE_SEND, 3600000, 60000));
}

BUS_TESTS({"time", test_time, 5}, {"recurrence", test_recurrence, 5}, {"kinds", test_kinds, 5},
          {"plan_items", test_plan_items, 5}, {"late_policy", test_late_policy, 5})
