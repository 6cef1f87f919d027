/* Unit tests of the core that need no server: configuration, names, topic
 * matching, RPC reply bodies. */
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "bus/config.h"
#include "bus/error.h"
#include "bus/rpc.h"
#include "bus/topology.h"
#include "bus/worker.h"

static void clear_env(void) {
    const char *vars[] = {"BUS_AMQP_URL", "BUS_PREFETCH", "BUS_QUEUE_TYPE", "BUS_LOG_LEVEL", "BUS_METRICS_ADDR",
                          "BUS_RPC_TIMEOUT_MS", "BUS_HTTP_ADDR", NULL};
    for (int i = 0; vars[i]; i++) unsetenv(vars[i]);
}

static void test_config_defaults(void) {
    clear_env();
    bus_config_t c;
    char err[256];
    char *argv[] = {"prog", NULL};
    CHECK_INT(bus_config_load(&c, 1, argv, "prog", "test", NULL, 0, err, sizeof err), 0);
    CHECK_STR(c.amqp_url, "amqp://guest:guest@127.0.0.1:5672/");
    CHECK_STR(c.store, "sqlite:var/bus.db");
    CHECK_STR(c.queue_type, "classic");
    CHECK_INT(c.prefetch, 64);
    CHECK(c.metrics_addr == NULL);
    bus_config_free(&c);
}

static void test_config_env_and_flags(void) {
    clear_env();
    setenv("BUS_PREFETCH", "10", 1);
    setenv("BUS_QUEUE_TYPE", "quorum", 1);
    bus_config_t c;
    char err[256];
    char *argv[] = {"prog", "--prefetch", "20", "--metrics-addr=127.0.0.1:9100", NULL};
    CHECK_INT(bus_config_load(&c, 4, argv, "prog", "test", NULL, 0, err, sizeof err), 0);
    CHECK_INT(c.prefetch, 20); /* the flag wins */
    CHECK_STR(c.queue_type, "quorum");
    CHECK_STR(c.metrics_addr, "127.0.0.1:9100");
    bus_config_free(&c);
}

static void test_config_bad_values_name_the_setting(void) {
    struct {
        const char *var, *value, *want;
    } cases[] = {
        {"BUS_PREFETCH", "0", "BUS_PREFETCH"},         {"BUS_PREFETCH", "12abc", "BUS_PREFETCH"},
        {"BUS_PREFETCH", "70000", "from 1 to 65535"},  {"BUS_QUEUE_TYPE", "stream", "classic or quorum"},
        {"BUS_LOG_LEVEL", "loud", "BUS_LOG_LEVEL"},    {"BUS_HTTP_ADDR", "localhost", "host:port"},
        {"BUS_METRICS_ADDR", "x:99999", "BUS_METRICS_ADDR"}, {"BUS_AMQP_URL", "", "must not be empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        clear_env();
        setenv(cases[i].var, cases[i].value, 1);
        bus_config_t c;
        char err[256] = "";
        char *argv[] = {"prog", NULL};
        CHECK_INT(bus_config_load(&c, 1, argv, "prog", "test", NULL, 0, err, sizeof err), BUS_EBAD_REQUEST);
        CHECK_CONTAINS(err, cases[i].want);
        bus_config_free(&c);
    }
    clear_env();
    bus_config_t c;
    char err[256];
    char *unknown[] = {"prog", "--frobnicate", NULL};
    CHECK_INT(bus_config_load(&c, 2, unknown, "prog", "test", NULL, 0, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "--frobnicate");
    bus_config_free(&c);
    char *missing[] = {"prog", "--prefetch", NULL};
    CHECK_INT(bus_config_load(&c, 2, missing, "prog", "test", NULL, 0, err, sizeof err), BUS_EBAD_REQUEST);
    CHECK_CONTAINS(err, "needs a value");
    bus_config_free(&c);
}

static void test_config_extras(void) {
    clear_env();
    setenv("BUS_TEST_EXTRA", "from-env", 1);
    bus_config_extra_t extras[] = {{"BUS_TEST_EXTRA", "--test-extra", "x", "dflt", NULL},
                                   {"BUS_TEST_OTHER", "--test-other", "y", "dflt2", NULL}};
    bus_config_t c;
    char err[256];
    char *argv[] = {"prog", "--test-other", "flag", NULL};
    CHECK_INT(bus_config_load(&c, 3, argv, "prog", "test", extras, 2, err, sizeof err), 0);
    CHECK_STR(extras[0].value, "from-env");
    CHECK_STR(extras[1].value, "flag");
    bus_config_free_extras(extras, 2);
    bus_config_free(&c);
    unsetenv("BUS_TEST_EXTRA");
}

static void test_host_port(void) {
    char host[64];
    int port;
    CHECK_INT(bus_parse_host_port("127.0.0.1:8080", host, sizeof host, &port), 0);
    CHECK_STR(host, "127.0.0.1");
    CHECK_INT(port, 8080);
    CHECK_INT(bus_parse_host_port("[::1]:0", host, sizeof host, &port), 0);
    CHECK_STR(host, "::1");
    CHECK_INT(bus_parse_host_port("nohost", host, sizeof host, &port), -1);
    CHECK_INT(bus_parse_host_port(":80", host, sizeof host, &port), -1);
    CHECK_INT(bus_parse_host_port("h:", host, sizeof host, &port), -1);
    CHECK_INT(bus_parse_host_port("h:65536", host, sizeof host, &port), -1);
}

static void test_names(void) {
    CHECK(bus_valid_name("alliances"));
    CHECK(bus_valid_name("set_rank"));
    CHECK(!bus_valid_name("Alliances"));
    CHECK(!bus_valid_name("1abc"));
    CHECK(!bus_valid_name(""));
    CHECK(!bus_valid_name("a.b"));
    CHECK(bus_valid_event_type("alliance.member.joined"));
    CHECK(!bus_valid_event_type("alliance..joined"));
    CHECK(!bus_valid_event_type(".x"));
    CHECK(!bus_valid_event_type("x."));
    CHECK(!bus_valid_event_type("Alliance.created"));
    CHECK(!bus_valid_event_type("alliance.*"));
}

static void test_topic_matching(void) {
    CHECK(bus_topic_matches("alliance.member.joined", "alliance.member.joined"));
    CHECK(!bus_topic_matches("alliance.member.joined", "alliance.member.left"));
    CHECK(bus_topic_matches("alliance.*", "alliance.created"));
    CHECK(!bus_topic_matches("alliance.*", "alliance.member.joined"));
    CHECK(bus_topic_matches("alliance.#", "alliance.member.joined"));
    CHECK(bus_topic_matches("alliance.#", "alliance"));
    CHECK(bus_topic_matches("#", "anything.at.all"));
    CHECK(bus_topic_matches("*.member.*", "alliance.member.kicked"));
    CHECK(bus_topic_matches("#.joined", "alliance.member.joined"));
    CHECK(!bus_topic_matches("#.joined", "alliance.member.left"));
    CHECK(!bus_topic_matches("alliance", "alliance.created"));
}

static void test_reply_bodies(void) {
    cJSON *data = cJSON_Parse("{\"a\":1}");
    size_t len;
    char *ok = bus_rpc_reply_ok_json(data, &len);
    CHECK_STR(ok, "{\"success\":true,\"data\":{\"a\":1}}");
    CHECK_INT(len, strlen(ok));
    cJSON *doc;
    int success, err;
    const cJSON *d;
    const char *msg;
    CHECK_INT(bus_rpc_reply_parse(ok, len, &doc, &success, &d, &err, &msg), 0);
    CHECK_INT(success, 1);
    CHECK_INT(cJSON_GetObjectItem(d, "a")->valueint, 1);
    cJSON_Delete(doc);
    free(ok);
    cJSON_Delete(data);
    char *bad = bus_rpc_reply_error_json(BUS_EPERMISSION, "an R4 cannot promote to R4", &len);
    CHECK_STR(bad, "{\"success\":false,\"error\":\"permission_denied\",\"message\":\"an R4 cannot promote to R4\","
                   "\"status_code\":403}");
    CHECK_INT(bus_rpc_reply_parse(bad, len, &doc, &success, &d, &err, &msg), 0);
    CHECK_INT(success, 0);
    CHECK_INT(err, BUS_EPERMISSION);
    CHECK_STR(msg, "an R4 cannot promote to R4");
    cJSON_Delete(doc);
    free(bad);
    CHECK_INT(bus_rpc_reply_parse("{\"x\":1}", 7, &doc, &success, &d, &err, &msg), BUS_EBAD_REQUEST);
    CHECK_INT(bus_rpc_reply_parse("nope", 4, &doc, &success, &d, &err, &msg), BUS_EBAD_REQUEST);
}

BUS_TESTS({"config_defaults", test_config_defaults, 5}, {"config_env_and_flags", test_config_env_and_flags, 5},
          {"config_bad_values_name_the_setting", test_config_bad_values_name_the_setting, 5},
          {"config_extras", test_config_extras, 5}, {"host_port", test_host_port, 5}, {"names", test_names, 5},
          {"topic_matching", test_topic_matching, 5}, {"reply_bodies", test_reply_bodies, 5})
