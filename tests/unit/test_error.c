/* Tests of bus/src/error.c: every code's name, status and text round trip. */
#include "bus/error.h"

#include "../test.h"

static const struct {
    int code;
    const char *name;
    int status;
} expected[] = {
    {BUS_OK, "ok", 200},
    {BUS_EBAD_REQUEST, "bad_request", 400},
    {BUS_EUNAUTHORIZED, "unauthorized", 401},
    {BUS_EPERMISSION, "permission_denied", 403},
    {BUS_ENOT_FOUND, "not_found", 404},
    {BUS_ECONFLICT, "conflict", 409},
    {BUS_EINVALID, "invalid", 422},
    {BUS_ERATE_LIMITED, "rate_limited", 429},
    {BUS_EINTERNAL, "internal", 500},
    {BUS_EUNAVAILABLE, "unavailable", 503},
    {BUS_ETIMEOUT, "timeout", 504},
};
#define N (sizeof expected / sizeof expected[0])

static void test_table_matches_design(void) {
    CHECK_INT(N, BUS_ERR_COUNT);
    for (size_t i = 0; i < N; i++) {
        CHECK_STR(bus_err_name(expected[i].code), expected[i].name);
        CHECK_INT(bus_err_status(expected[i].code), expected[i].status);
    }
}

static void test_name_round_trip(void) {
    for (size_t i = 0; i < N; i++) {
        int code = expected[i].code;
        CHECK_INT(bus_err_from_name(bus_err_name(code)), code);
    }
}

static void test_status_round_trip(void) {
    for (size_t i = 1; i < N; i++) { /* 200 is success, not an error status */
        int code = expected[i].code;
        CHECK_INT(bus_err_from_status(bus_err_status(code)), code);
    }
}

static void test_texts_distinct_and_present(void) {
    for (size_t i = 0; i < N; i++) {
        const char *t = bus_strerror(expected[i].code);
        CHECK(t != NULL && t[0] != '\0');
        for (size_t j = 0; j < i; j++) CHECK(strcmp(t, bus_strerror(expected[j].code)) != 0);
    }
    CHECK_STR(bus_strerror(BUS_ENOT_FOUND), "not found");
}

static void test_unknown_codes(void) {
    CHECK_STR(bus_err_name(-99), "internal");
    CHECK_STR(bus_err_name(7), "internal");
    CHECK_INT(bus_err_status(-99), 500);
    CHECK_STR(bus_strerror(-99), bus_strerror(BUS_EINTERNAL));
    CHECK_INT(bus_err_from_name("no_such_code"), BUS_EINTERNAL);
    CHECK_INT(bus_err_from_name(NULL), BUS_EINTERNAL);
    CHECK_INT(bus_err_from_name("NOT_FOUND"), BUS_EINTERNAL); /* names are exact */
    CHECK_INT(bus_err_from_status(418), BUS_EINTERNAL);
    CHECK_INT(bus_err_from_status(200), BUS_EINTERNAL); /* success is not an error code */
}

BUS_TESTS({"table_matches_design", test_table_matches_design, 5},
          {"name_round_trip", test_name_round_trip, 5},
          {"status_round_trip", test_status_round_trip, 5},
          {"texts_distinct_and_present", test_texts_distinct_and_present, 5},
          {"unknown_codes", test_unknown_codes, 5})
