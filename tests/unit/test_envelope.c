/* Tests of bus/src/envelope.c and bus/src/json.c: CloudEvents envelopes,
 * ids, RFC 3339 times and the limited JSON parser. */
#include "bus/envelope.h"

#include "bus/error.h"

#include "../test.h"

#include <stdint.h>

static char err[256];

/* ------------------------------------------------------------- envelope */

static void test_round_trip(void) {
    bus_envelope_t env, back = {0};
    cJSON *data = cJSON_Parse("{\"alliance\":\"WOS1\",\"rank\":4,\"tags\":[\"a\",\"b\\\"q\"]}");
    CHECK(data);
    CHECK_INT(bus_envelope_init(&env, "alliance.member.promoted", "/alliances", "member/42", "corr-1", data), 0);
    CHECK_STR(env.specversion, "1.0");
    CHECK_STR(env.datacontenttype, "application/json");
    CHECK_INT(strlen(env.id), 36);
    CHECK_INT(strlen(env.time), 24);
    CHECK(bus_rfc3339_parse(env.time, NULL) == 0);
    CHECK(env.dataschema == NULL);

    size_t len = 0;
    char *json = bus_envelope_serialize(&env, &len);
    CHECK(json);
    CHECK_INT(len, strlen(json));
    /* Attributes first, in the stable order, then data. */
    const char *order[] = {"\"specversion\"", "\"id\"", "\"source\"", "\"type\"", "\"time\"",
                           "\"datacontenttype\"", "\"subject\"", "\"correlationid\"", "\"data\""};
    const char *prev = json;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const char *at = strstr(json, order[i]);
        CHECK(at != NULL);
        CHECK(at >= prev);
        prev = at;
    }
    CHECK(strncmp(json, "{\"specversion\":\"1.0\",\"id\":\"", 27) == 0);

    CHECK_INT(bus_envelope_parse(json, len, &back, err, sizeof err), 0);
    CHECK_STR(back.specversion, env.specversion);
    CHECK_STR(back.id, env.id);
    CHECK_STR(back.source, "/alliances");
    CHECK_STR(back.type, "alliance.member.promoted");
    CHECK_STR(back.time, env.time);
    CHECK_STR(back.datacontenttype, "application/json");
    CHECK_STR(back.subject, "member/42");
    CHECK_STR(back.correlationid, "corr-1");
    CHECK(back.dataschema == NULL);
    CHECK(cJSON_Compare(back.data, env.data, 1));

    char *again = bus_envelope_serialize(&back, NULL);
    CHECK_STR(again, json); /* serialisation is stable */
    free(again);
    free(json);
    bus_envelope_clear(&env);
    bus_envelope_clear(&back);
    CHECK(env.id == NULL && env.data == NULL);
    bus_envelope_clear(&env); /* safe twice */
}

static void test_init_without_optionals(void) {
    bus_envelope_t env;
    CHECK_INT(bus_envelope_init(&env, "player.verified", "/verification", NULL, NULL, NULL), 0);
    char *json = bus_envelope_serialize(&env, NULL);
    CHECK(json);
    CHECK(strstr(json, "\"data\"") == NULL);
    CHECK(strstr(json, "subject") == NULL);
    CHECK(strstr(json, "correlationid") == NULL);
    bus_envelope_t back;
    CHECK_INT(bus_envelope_parse(json, strlen(json), &back, err, sizeof err), 0);
    CHECK(back.data == NULL);
    CHECK(back.subject == NULL);
    free(json);
    bus_envelope_clear(&env);
    bus_envelope_clear(&back);
}

static void test_parse_defaults_and_extensions(void) {
    const char *j = " {\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"bot://discord\",\"type\":\"x.y\","
                    "\"subject\":null,\"myext\":42,\"data\":null}\n";
    bus_envelope_t env;
    CHECK_INT(bus_envelope_parse(j, strlen(j), &env, err, sizeof err), 0);
    CHECK_STR(env.datacontenttype, "application/json"); /* default */
    CHECK(env.time == NULL);                             /* optional on input */
    CHECK(env.subject == NULL);                          /* null = absent */
    CHECK(env.data != NULL && cJSON_IsNull(env.data));   /* explicit null data is kept */
    bus_envelope_clear(&env);
}

/* Parses `json` expecting a refusal whose message contains `want`. */
static void expect_reject(const char *json, const char *want) {
    bus_envelope_t env;
    memset(&env, 0x5a, sizeof env); /* parse must not rely on a zeroed struct */
    err[0] = '\0';
    int rc = bus_envelope_parse(json, strlen(json), &env, err, sizeof err);
    if (rc != BUS_EBAD_REQUEST) fprintf(stderr, "  accepted: %s\n", json);
    CHECK_INT(rc, BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, want);
    CHECK(env.id == NULL && env.data == NULL && env.specversion == NULL); /* left cleared */
}

#define BASE "\"specversion\":\"1.0\",\"source\":\"/s\",\"type\":\"t\""

static void test_rejections(void) {
    expect_reject("[1,2]", "event must be a JSON object");
    expect_reject("\"str\"", "event must be a JSON object");
    expect_reject("{" BASE "}", "missing or empty attribute \"id\"");
    expect_reject("{" BASE ",\"id\":\"\"}", "missing or empty attribute \"id\"");
    expect_reject("{" BASE ",\"id\":null}", "missing or empty attribute \"id\"");
    expect_reject("{\"specversion\":\"1.0\",\"id\":\"1\",\"type\":\"t\"}", "missing or empty attribute \"source\"");
    expect_reject("{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"\",\"type\":\"t\"}",
                  "missing or empty attribute \"source\"");
    expect_reject("{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\"}", "missing or empty attribute \"type\"");
    expect_reject("{\"id\":\"1\",\"source\":\"s\",\"type\":\"t\"}", "missing or empty attribute \"specversion\"");
    expect_reject("{\"specversion\":\"0.3\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\"}",
                  "unsupported specversion \"0.3\"");
    expect_reject("{\"specversion\":1.0,\"id\":\"1\",\"source\":\"s\",\"type\":\"t\"}",
                  "attribute \"specversion\" must be a string");
    expect_reject("{" BASE ",\"id\":5}", "attribute \"id\" must be a string");
    expect_reject("{" BASE ",\"id\":\"1\",\"subject\":[\"x\"]}", "attribute \"subject\" must be a string");
    expect_reject("{" BASE ",\"id\":\"1\",\"correlationid\":true}", "attribute \"correlationid\" must be a string");
    expect_reject("{" BASE ",\"id\":\"1\",\"time\":\"2026-02-30T10:00:00Z\"}",
                  "attribute \"time\" is not an RFC 3339 date-time");
    expect_reject("{" BASE ",\"id\":\"1\",\"time\":\"yesterday\"}", "attribute \"time\" is not an RFC 3339");
    expect_reject("{" BASE ",\"id\":\"1\",\"data_base64\":\"AAAA\"}", "data_base64 is not supported");
    expect_reject("{" BASE ",\"id\":\"1\"", "malformed JSON at byte");
    expect_reject("", "malformed JSON at byte 0");
    expect_reject("{" BASE ",\"id\":\"1\"} x", "malformed JSON at byte 56 (data after the value)");
}

static void test_too_large(void) {
    size_t n = BUS_ENVELOPE_MAX_BYTES + 1;
    char *big = malloc(n);
    CHECK(big);
    memset(big, ' ', n);
    bus_envelope_t env;
    CHECK_INT(bus_envelope_parse(big, n, &env, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "larger than 1048576 bytes");
    free(big);
}

static void test_not_nul_terminated(void) {
    const char *j = "{" BASE ",\"id\":\"abc\"}GARBAGE";
    size_t len = strlen(j) - 7;
    char *copy = malloc(len); /* exactly len bytes: ASan catches any over-read */
    CHECK(copy);
    memcpy(copy, j, len);
    bus_envelope_t env;
    CHECK_INT(bus_envelope_parse(copy, len, &env, err, sizeof err), 0);
    CHECK_STR(env.id, "abc");
    bus_envelope_clear(&env);
    free(copy);
}

#define H(k, v) {k, sizeof k - 1, v, sizeof v - 1}

static void test_binary_mode(void) {
    bus_header_t hs[] = {
        H("CE-ID", "b-1"),       H("ce-source", "bot://telegram"), H("Ce-Type", "gift.code.added"),
        H("ce-specversion", "1.0"), H("ce-time", "2026-11-23T09:15:05.123+02:00"), H("ce-subject", "code/X"),
        H("ce-correlationid", "c-9"), H("ce-dataschema", "schemas/events/gift.code.added.json"),
        H("x-other", "ignored"),
    };
    const char *body = "{\"code\":\"WOS2026\"}";
    bus_envelope_t env;
    CHECK_INT(bus_envelope_parse_binary(hs, sizeof hs / sizeof hs[0], body, strlen(body), &env, err, sizeof err), 0);
    CHECK_STR(env.id, "b-1");
    CHECK_STR(env.source, "bot://telegram");
    CHECK_STR(env.type, "gift.code.added");
    CHECK_STR(env.time, "2026-11-23T09:15:05.123+02:00");
    CHECK_STR(env.subject, "code/X");
    CHECK_STR(env.correlationid, "c-9");
    CHECK_STR(env.dataschema, "schemas/events/gift.code.added.json");
    CHECK_STR(env.datacontenttype, "application/json");
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(env.data, "code")->valuestring, "WOS2026");
    bus_envelope_clear(&env);

    /* Empty body: no data. */
    CHECK_INT(bus_envelope_parse_binary(hs, 4, "", 0, &env, err, sizeof err), 0);
    CHECK(env.data == NULL);
    bus_envelope_clear(&env);

    /* A non-JSON content type travels as a JSON string. */
    bus_header_t text[] = {H("ce-id", "1"), H("ce-source", "s"), H("ce-type", "t"), H("ce-specversion", "1.0"),
                           H("content_type", "text/plain; charset=utf-8")};
    CHECK_INT(bus_envelope_parse_binary(text, 5, "hello [", 7, &env, err, sizeof err), 0);
    CHECK(cJSON_IsString(env.data));
    CHECK_STR(env.data->valuestring, "hello [");
    CHECK_STR(env.datacontenttype, "text/plain; charset=utf-8");
    bus_envelope_clear(&env);

    /* A structured event arriving through the binary entry point. */
    bus_header_t ce[] = {H("content-type", "application/cloudevents+json")};
    const char *s = "{" BASE ",\"id\":\"st-1\",\"data\":{\"k\":1}}";
    CHECK_INT(bus_envelope_parse_binary(ce, 1, s, strlen(s), &env, err, sizeof err), 0);
    CHECK_STR(env.id, "st-1");
    CHECK_STR(env.datacontenttype, "application/json");
    bus_envelope_clear(&env);
}

static void test_binary_rejections(void) {
    bus_envelope_t env;
    bus_header_t missing[] = {H("ce-id", "1"), H("ce-source", "s"), H("ce-specversion", "1.0")};
    CHECK_INT(bus_envelope_parse_binary(missing, 3, "{}", 2, &env, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "missing or empty attribute \"type\"");

    bus_header_t dup[] = {H("ce-id", "1"), H("CE-ID", "2"), H("ce-source", "s"), H("ce-type", "t"),
                          H("ce-specversion", "1.0")};
    CHECK_INT(bus_envelope_parse_binary(dup, 5, "{}", 2, &env, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "duplicate header for attribute \"id\"");

    bus_header_t nul[] = {{"ce-id", 5, "a\0b", 3}, H("ce-source", "s"), H("ce-type", "t"), H("ce-specversion", "1.0")};
    CHECK_INT(bus_envelope_parse_binary(nul, 4, "{}", 2, &env, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "contains a NUL byte");

    bus_header_t ok[] = {H("ce-id", "1"), H("ce-source", "s"), H("ce-type", "t"), H("ce-specversion", "1.0"),
                         H("ce-time", "2026-13-01T00:00:00Z")};
    CHECK_INT(bus_envelope_parse_binary(ok, 5, "{}", 2, &env, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "attribute \"time\" is not an RFC 3339");

    CHECK_INT(bus_envelope_parse_binary(ok, 4, "{\"a\":", 5, &env, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "data: malformed JSON at byte 4"); /* truncated: cJSON names the last byte */

    bus_header_t v03[] = {H("ce-id", "1"), H("ce-source", "s"), H("ce-type", "t"), H("ce-specversion", "0.3")};
    CHECK_INT(bus_envelope_parse_binary(v03, 4, "", 0, &env, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "unsupported specversion");
    CHECK(env.id == NULL);
}

/* ------------------------------------------------------------------ ids */

static int cmp_id(const void *a, const void *b) { return memcmp(a, b, 37); }

static int is_v7(const char *id) {
    if (strlen(id) != 36) return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (id[i] != '-') return 0;
        } else if (!strchr("0123456789abcdef", id[i])) {
            return 0;
        }
    }
    return id[14] == '7' && strchr("89ab", id[19]) != NULL;
}

static void test_uuid_unique(void) {
    enum { N = 100000 };
    char(*ids)[37] = malloc(sizeof(char[37]) * N);
    CHECK(ids);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < N; i++) bus_uuid(ids[i]);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / N;
    printf("  bus_uuid: %.0f ns per id\n", ns);
    for (int i = 0; i < N; i++) CHECK(is_v7(ids[i]));
    /* the first 48 bits are the time in ms: never going back, and now */
    for (int i = 1; i < N; i++) CHECK(memcmp(ids[i - 1], ids[i], 13) <= 0);
    char hex_ms[13] = {0};
    memcpy(hex_ms, ids[N - 1], 8);
    memcpy(hex_ms + 8, ids[N - 1] + 9, 4);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long id_ms = strtoll(hex_ms, NULL, 16), now_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    CHECK(id_ms <= now_ms && id_ms > now_ms - 60000);
    qsort(ids, N, sizeof ids[0], cmp_id);
    for (int i = 1; i < N; i++) CHECK(strcmp(ids[i - 1], ids[i]) != 0);
    free(ids);
}

/* A child forked after the parent has buffered randomness must not repeat
 * the parent's next ids. */
static void test_uuid_differs_across_fork(void) {
    enum { N = 200 };
    char first[37];
    bus_uuid(first); /* fills this thread's pool */
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        for (int i = 0; i < N; i++) {
            char id[37];
            bus_uuid(id);
            if (write(fds[1], id, 37) != 37) _exit(2);
        }
        _exit(0);
    }
    close(fds[1]);
    char mine[N][37], theirs[N][37];
    for (int i = 0; i < N; i++) bus_uuid(mine[i]);
    size_t got = 0;
    while (got < sizeof theirs) {
        ssize_t n = read(fds[0], (char *)theirs + got, sizeof theirs - got);
        CHECK(n > 0);
        got += (size_t)n;
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < N; i++) {
        CHECK(is_v7(theirs[i]));
        for (int j = 0; j < N; j++) CHECK(strcmp(mine[i], theirs[j]) != 0);
    }
}

/* ---------------------------------------------------------------- times */

static void test_time_format(void) {
    char out[32];
    bus_rfc3339_format(0, out);
    CHECK_STR(out, "1970-01-01T00:00:00.000Z");
    bus_rfc3339_format(1795425305123LL, out);
    CHECK_STR(out, "2026-11-23T09:15:05.123Z");
    bus_rfc3339_format(-1, out); /* floor, not truncation */
    CHECK_STR(out, "1969-12-31T23:59:59.999Z");
    bus_rfc3339_format(951782400000LL, out); /* leap day of a century leap year */
    CHECK_STR(out, "2000-02-29T00:00:00.000Z");
    bus_rfc3339_format(INT64_MAX, out);
    CHECK_STR(out, "9999-12-31T23:59:59.999Z");
    bus_rfc3339_format(INT64_MIN, out);
    CHECK_STR(out, "0000-01-01T00:00:00.000Z");

    bus_now_rfc3339(out);
    CHECK_INT(strlen(out), 24);
    int64_t ms;
    CHECK_INT(bus_rfc3339_parse(out, &ms), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    CHECK(now - ms >= 0 && now - ms < 5000);
}

static int64_t parse_ok(const char *s) {
    int64_t ms = -42;
    if (bus_rfc3339_parse(s, &ms) != 0) {
        fprintf(stderr, "  refused: %s\n", s);
        exit(1);
    }
    return ms;
}

static void test_time_parse(void) {
    CHECK_INT(parse_ok("2026-11-23T09:15:05.123Z"), 1795425305123LL);
    CHECK_INT(parse_ok("2026-11-23t09:15:05.123z"), 1795425305123LL);
    CHECK_INT(parse_ok("2026-11-23T11:15:05.123+02:00"), 1795425305123LL);
    CHECK_INT(parse_ok("2026-11-23T04:00:05.123-05:15"), 1795425305123LL);
    CHECK_INT(parse_ok("2026-11-23T09:15:05Z"), 1795425305000LL);
    CHECK_INT(parse_ok("2026-11-23T09:15:05.1Z"), 1795425305100LL);
    CHECK_INT(parse_ok("2026-11-23T09:15:05.123456789Z"), 1795425305123LL);
    CHECK_INT(parse_ok("1970-01-01T00:00:00Z"), 0);
    CHECK_INT(parse_ok("1969-12-31T23:59:59.999Z"), -1);
    CHECK_INT(parse_ok("2024-02-29T00:00:00Z"), 1709164800000LL);
    CHECK_INT(parse_ok("2016-12-31T23:59:60Z"), parse_ok("2017-01-01T00:00:00Z")); /* leap second */
    CHECK_INT(parse_ok("2026-01-01T00:00:00+23:59"), parse_ok("2025-12-31T00:01:00Z"));

    const char *bad[] = {
        "", "2026-11-23", "2026-11-23T09:15Z", "2026-11-23 09:15:05Z", "2026-11-23T09:15:05",
        "2026-02-29T00:00:00Z", "2026-02-30T00:00:00Z", "1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
        "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z", "2026-01-00T00:00:00Z", "2026-01-32T00:00:00Z",
        "2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z", "2026-01-01T23:59:61Z", "2026-01-01T00:00:00.Z",
        "2026-01-01T00:00:00+2:00", "2026-01-01T00:00:00+02", "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00+02:60", "2026-01-01T00:00:00ZZ", "2026-01-01T00:00:00Z ", " 2026-01-01T00:00:00Z",
        "26-01-01T00:00:00Z", "2026-1-01T00:00:00Z", "2026/01/01T00:00:00Z", "2026-01-01T00:00:00.12a3Z",
        "+2026-01-01T00:00:00Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 0;
        if (bus_rfc3339_parse(bad[i], &ms) == 0) fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
        CHECK_INT(bus_rfc3339_parse(bad[i], &ms), -1);
    }
    CHECK_INT(bus_rfc3339_parse(NULL, NULL), -1);

    /* format -> parse is the identity on milliseconds */
    for (int64_t ms = -86400000LL * 400; ms < 86400000LL * 365 * 60; ms += 86400000LL * 37 + 12345) {
        char out[32];
        bus_rfc3339_format(ms, out);
        CHECK_INT(parse_ok(out), ms);
    }
}

/* ----------------------------------------------------------------- JSON */

static char *nested(int depth, char open, char close) {
    char *s = malloc((size_t)depth * 2 + 1);
    memset(s, open, (size_t)depth);
    memset(s + depth, close, (size_t)depth);
    s[depth * 2] = '\0';
    return s;
}

static void test_json_depth(void) {
    char *ok = nested(64, '[', ']');
    cJSON *doc = bus_json_parse(ok, strlen(ok), BUS_JSON_MAX_DEPTH, err, sizeof err);
    CHECK(doc != NULL);
    cJSON_Delete(doc);
    char *deep = nested(65, '[', ']');
    CHECK(bus_json_parse(deep, strlen(deep), BUS_JSON_MAX_DEPTH, err, sizeof err) == NULL);
    CHECK_STR(err, "JSON nested deeper than 64 levels");
    /* deeper than cJSON's own limit: refused by the pre-scan, no recursion */
    char *huge = nested(100000, '[', ']');
    CHECK(bus_json_parse(huge, strlen(huge), BUS_JSON_MAX_DEPTH, err, sizeof err) == NULL);
    CHECK_STR(err, "JSON nested deeper than 64 levels");
    /* unbalanced and deep: still the depth message, no crash */
    CHECK(bus_json_parse(huge, 70000, BUS_JSON_MAX_DEPTH, err, sizeof err) == NULL);
    CHECK_STR(err, "JSON nested deeper than 64 levels");
    free(ok);
    free(deep);
    free(huge);

    /* objects count too, and brackets inside strings do not */
    const char *objs = "{\"a\":{\"b\":{\"c\":1}}}";
    CHECK(bus_json_parse(objs, strlen(objs), 2, err, sizeof err) == NULL);
    CHECK_STR(err, "JSON nested deeper than 2 levels");
    doc = bus_json_parse(objs, strlen(objs), 3, err, sizeof err);
    CHECK(doc);
    cJSON_Delete(doc);
    const char *str = "[\"[[[[\\\"[[[[\", {\"k\\\\\":\"{{{{\"}]";
    doc = bus_json_parse(str, strlen(str), 2, err, sizeof err);
    if (!doc) fprintf(stderr, "  %s\n", err);
    CHECK(doc);
    CHECK_STR(cJSON_GetArrayItem(doc, 0)->valuestring, "[[[[\"[[[[");
    cJSON_Delete(doc);

    /* the envelope parser applies the limit to the whole event */
    char ev[512];
    char *d64 = nested(63, '[', ']'); /* 63 + the event object = 64 */
    snprintf(ev, sizeof ev, "{" BASE ",\"id\":\"1\",\"data\":%s}", d64);
    bus_envelope_t env;
    CHECK_INT(bus_envelope_parse(ev, strlen(ev), &env, err, sizeof err), 0);
    bus_envelope_clear(&env);
    free(d64);
    char *d65 = nested(64, '[', ']');
    snprintf(ev, sizeof ev, "{" BASE ",\"id\":\"1\",\"data\":%s}", d65);
    CHECK_INT(bus_envelope_parse(ev, strlen(ev), &env, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_STR(err, "JSON nested deeper than 64 levels");
    free(d65);
}

static void test_json_errors(void) {
    cJSON *doc;
    /* trailing garbage refused, trailing whitespace accepted */
    CHECK(bus_json_parse("{\"a\":1} x", 9, 64, err, sizeof err) == NULL);
    CHECK_STR(err, "malformed JSON at byte 8 (data after the value)");
    CHECK(bus_json_parse("{\"a\":1}{}", 9, 64, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "at byte 7");
    CHECK(bus_json_parse("[1]\0", 4, 64, err, sizeof err) == NULL); /* embedded NUL is garbage too */
    CHECK_CONTAINS(err, "at byte 3");
    doc = bus_json_parse(" {\"a\":1} \r\n\t ", 13, 64, err, sizeof err);
    CHECK(doc);
    cJSON_Delete(doc);
    /* only len bytes are read */
    doc = bus_json_parse("[1,2]]]]", 5, 64, err, sizeof err);
    CHECK(doc && cJSON_GetArraySize(doc) == 2);
    cJSON_Delete(doc);

    /* the byte offset points at the error */
    const char *j = "{\"alliance\": \"WOS\", oops}";
    CHECK(bus_json_parse(j, strlen(j), 64, err, sizeof err) == NULL);
    unsigned at = 0;
    CHECK(sscanf(err, "malformed JSON at byte %u", &at) == 1);
    CHECK(at == 20 || at == 21); /* cJSON stops at or just after the bad byte */
    CHECK(bus_json_parse("[1,2,]", 6, 64, err, sizeof err) == NULL);
    CHECK_STR(err, "malformed JSON at byte 5");
    CHECK(bus_json_parse("", 0, 64, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "malformed JSON at byte 0");
    CHECK(bus_json_parse(NULL, 10, 64, err, sizeof err) == NULL);
    CHECK(bus_json_parse("nul", 3, 64, NULL, 0) == NULL); /* err is optional */
}

BUS_TESTS({"round_trip", test_round_trip, 10},
          {"init_without_optionals", test_init_without_optionals, 10},
          {"parse_defaults_and_extensions", test_parse_defaults_and_extensions, 10},
          {"rejections", test_rejections, 10},
          {"too_large", test_too_large, 10},
          {"not_nul_terminated", test_not_nul_terminated, 10},
          {"binary_mode", test_binary_mode, 10},
          {"binary_rejections", test_binary_rejections, 10},
          {"uuid_unique", test_uuid_unique, 30},
          {"uuid_differs_across_fork", test_uuid_differs_across_fork, 10},
          {"time_format", test_time_format, 10},
          {"time_parse", test_time_parse, 10},
          {"json_depth", test_json_depth, 10},
          {"json_errors", test_json_errors, 10})
