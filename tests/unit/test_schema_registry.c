/* The schema registry (schemas/ layout, $ref between files by $id and by
 * path), bus_schema_load_file with sibling files, and the busctl
 * `schema check` / `schema list` entry points. Works in a temporary
 * directory; no servers. */
#include <bus/error.h>
#include <bus/schema.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "../test.h"

static char root[256];

static void put_file(const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    char *slash = strrchr(path, '/');
    *slash = 0;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
    CHECK(system(cmd) == 0);
    *slash = '/';
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void make_root(void) {
    snprintf(root, sizeof root, "/tmp/bus-schema-test-XXXXXX");
    CHECK(mkdtemp(root) != NULL);
}

static void remove_root(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
}

/* A small schemas/ tree: common.json with shared definitions (by $id),
 * two event types, an RPC method, a method without result. */
static void write_tree(void) {
    put_file("common.json",
             "{\"$id\":\"https://schemas.bus.test/common.json\",\"definitions\":{"
             "\"rank\":{\"enum\":[\"R1\",\"R2\",\"R3\",\"R4\",\"R5\"]},"
             "\"user\":{\"type\":\"string\",\"pattern\":\"^(discord|telegram):[0-9]+$\"},"
             "\"fid\":{\"type\":\"integer\",\"minimum\":1}}}");
    put_file("events/alliance.member.joined.json",
             "{\"$id\":\"https://schemas.bus.test/events/alliance.member.joined.json\","
             "\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"type\":\"object\","
             "\"required\":[\"alliance_id\",\"fid\",\"rank\"],"
             "\"properties\":{\"alliance_id\":{\"type\":\"string\"},\"fid\":{\"$ref\":\"../common.json#/definitions/fid\"},"
             "\"rank\":{\"$ref\":\"https://schemas.bus.test/common.json#/definitions/rank\"},"
             "\"by\":{\"$ref\":\"../common.json#/definitions/user\"}}}");
    /* no $id: refs resolve relative to the file's own path */
    put_file("events/player.verified.json",
             "{\"type\":\"object\",\"required\":[\"fid\"],\"properties\":{\"fid\":{\"$ref\":\"../common.json#/definitions/fid\"}}}");
    put_file("rpc/alliances.promote.json",
             "{\"$id\":\"https://schemas.bus.test/rpc/alliances.promote.json\",\"definitions\":{"
             "\"params\":{\"type\":\"object\",\"required\":[\"alliance_id\",\"fid\",\"rank\"],\"additionalProperties\":false,"
             "\"properties\":{\"alliance_id\":{\"type\":\"string\"},\"fid\":{\"$ref\":\"../common.json#/definitions/fid\"},"
             "\"rank\":{\"$ref\":\"#/definitions/rank\"}}},"
             "\"result\":{\"type\":\"object\",\"required\":[\"rank\"],\"properties\":{\"rank\":{\"$ref\":\"#/definitions/rank\"}}},"
             "\"rank\":{\"$ref\":\"../common.json#/definitions/rank\"}}}");
    put_file("rpc/alliances.dissolve.json",
             "{\"definitions\":{\"params\":{\"type\":\"object\",\"required\":[\"alliance_id\"]}}}");
    put_file("README.md", "not a schema");
}

static int check_json(const bus_schema_t *s, const char *prefix, const char *text, char *msg, size_t cap) {
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL);
    static bus_schema_result_t r;
    int rc = bus_schema_validate_at(s, j, prefix, &r);
    bus_schema_result_format(&r, msg, cap);
    cJSON_Delete(j);
    return rc;
}

static void test_registry(void) {
    make_root();
    write_tree();
    bus_schema_registry_t *r = NULL;
    char err[512];
    int rc = bus_schema_registry_load(root, &r, err, sizeof err);
    if (rc) fprintf(stderr, "  %s\n", err);
    CHECK_INT(rc, 0);

    CHECK_INT(bus_schema_registry_event_count(r), 2);
    const bus_schema_t *ev = NULL;
    CHECK_STR(bus_schema_registry_event_at(r, 0, &ev), "alliance.member.joined");
    CHECK(ev == bus_schema_registry_event(r, "alliance.member.joined"));
    CHECK_STR(bus_schema_registry_event_at(r, 1, NULL), "player.verified");
    CHECK(bus_schema_registry_event_at(r, 2, NULL) == NULL);
    CHECK(bus_schema_registry_event(r, "nope") == NULL);
    CHECK(cJSON_IsObject(cJSON_GetObjectItem(bus_schema_json(ev), "properties")));

    char msg[1024];
    CHECK_INT(check_json(ev, "/data", "{\"alliance_id\":\"a1\",\"fid\":409449988,\"rank\":\"R4\",\"by\":\"discord:42\"}", msg,
                         sizeof msg), 0);
    CHECK_INT(check_json(ev, "/data", "{\"alliance_id\":\"a1\",\"fid\":0,\"rank\":\"R7\",\"by\":\"irc:x\"}", msg, sizeof msg),
              BUS_EINVALID);
    CHECK_STR(msg, "/data/by: must match pattern \"^(discord|telegram):[0-9]+$\"; /data/fid: must be >= 1; "
                   "/data/rank: must be one of \"R1\",\"R2\",\"R3\",\"R4\",\"R5\"");
    const bus_schema_t *pv = bus_schema_registry_event(r, "player.verified");
    CHECK(pv != NULL);
    CHECK_INT(check_json(pv, NULL, "{\"fid\":1.0}", msg, sizeof msg), 0);
    CHECK_INT(check_json(pv, NULL, "{\"fid\":1.5}", msg, sizeof msg), BUS_EINVALID);
    CHECK_STR(msg, "/fid: must be integer");

    CHECK_INT(bus_schema_registry_method_count(r), 2);
    const char *svc, *m;
    const bus_schema_t *p, *res;
    const cJSON *doc;
    CHECK_INT(bus_schema_registry_method_at(r, 0, &svc, &m, &p, &res, &doc), 0);
    CHECK_STR(svc, "alliances");
    CHECK_STR(m, "dissolve");
    CHECK(p != NULL && res == NULL);
    CHECK(cJSON_IsObject(cJSON_GetObjectItem(doc, "definitions")));
    CHECK_INT(bus_schema_registry_method_at(r, 1, &svc, &m, NULL, NULL, NULL), 0);
    CHECK_STR(m, "promote");
    CHECK_INT(bus_schema_registry_method_at(r, 2, &svc, &m, NULL, NULL, NULL), BUS_ENOT_FOUND);
    CHECK(bus_schema_registry_has_method(r, "alliances", "promote"));
    CHECK(!bus_schema_registry_has_method(r, "alliances", "kick"));
    CHECK(bus_schema_registry_result(r, "alliances", "dissolve") == NULL);
    CHECK(bus_schema_registry_params(r, "nope", "x") == NULL);

    p = bus_schema_registry_params(r, "alliances", "promote");
    res = bus_schema_registry_result(r, "alliances", "promote");
    CHECK(p && res);
    CHECK(cJSON_GetObjectItem(bus_schema_json(p), "additionalProperties") != NULL);
    CHECK_INT(check_json(p, NULL, "{\"alliance_id\":\"a\",\"fid\":5,\"rank\":\"R2\"}", msg, sizeof msg), 0);
    CHECK_INT(check_json(p, NULL, "{\"alliance_id\":\"a\",\"fid\":5,\"rank\":\"R2\",\"extra\":1}", msg, sizeof msg),
              BUS_EINVALID);
    CHECK_STR(msg, "/extra: is not allowed (no additional properties)");
    CHECK_INT(check_json(res, "/data", "{\"rank\":\"R0\"}", msg, sizeof msg), BUS_EINVALID);
    CHECK_CONTAINS(msg, "/data/rank: must be one of");
    bus_schema_registry_free(r);
    remove_root();
}

static void expect_load_error(const char *want) {
    bus_schema_registry_t *r = NULL;
    char err[512] = "";
    int rc = bus_schema_registry_load(root, &r, err, sizeof err);
    if (rc == 0) fprintf(stderr, "  loaded, expected an error with \"%s\"\n", want);
    CHECK(rc == BUS_EINVALID);
    CHECK(r == NULL);
    CHECK_CONTAINS(err, want);
}

static void test_registry_errors(void) {
    make_root();
    write_tree();
    put_file("events/bad.json", "{\"properties\":{\"rank\":{\"enum\":\"R1\"}}}");
    expect_load_error("/events/bad.json: /properties/rank/enum: must be an array");
    put_file("events/bad.json", "{\"properties\":{\"rank\":{\"$ref\":\"../nowhere.json\"}}}");
    expect_load_error("/events/bad.json: /properties/rank/$ref: cannot resolve \"../nowhere.json\"");
    put_file("events/bad.json", "{\"type\": \"object\",");
    expect_load_error("/events/bad.json: not valid JSON");
    put_file("events/bad.json", "{\"$ref\":\"../common.json#/definitions/nothing\"}");
    expect_load_error("the pointer leads nowhere");
    put_file("events/bad.json", "{\"$id\":\"https://schemas.bus.test/common.json\"}");
    expect_load_error("/events/bad.json: /$id: duplicate $id \"https://schemas.bus.test/common.json\"");
    put_file("events/bad.json", "{}");
    put_file("rpc/nodot.json", "{}");
    expect_load_error("rpc/nodot.json: the name must be <service>.<method>.json");
    remove_root();

    bus_schema_registry_t *r = NULL;
    char err[256];
    CHECK_INT(bus_schema_registry_load("/nonexistent-schemas-dir", &r, err, sizeof err), BUS_ENOT_FOUND);
    CHECK_CONTAINS(err, "/nonexistent-schemas-dir");
}

static void test_load_file_siblings(void) {
    make_root();
    write_tree();
    char path[512], err[512];
    bus_schema_t *s = NULL;
    /* refs by relative path and by absolute $id URI (found by scanning schemas/) */
    snprintf(path, sizeof path, "%s/events/alliance.member.joined.json", root);
    int rc = bus_schema_load_file(path, &s, err, sizeof err);
    if (rc) fprintf(stderr, "  %s\n", err);
    CHECK_INT(rc, 0);
    char msg[512];
    CHECK_INT(check_json(s, NULL, "{\"alliance_id\":\"a\",\"fid\":3,\"rank\":\"R9\"}", msg, sizeof msg), BUS_EINVALID);
    CHECK_STR(msg, "/rank: must be one of \"R1\",\"R2\",\"R3\",\"R4\",\"R5\"");
    bus_schema_free(s);
    /* a plain sibling without any $id */
    put_file("x/a.json", "{\"properties\":{\"b\":{\"$ref\":\"b.json\"}}}");
    put_file("x/b.json", "{\"type\":\"integer\"}");
    snprintf(path, sizeof path, "%s/x/a.json", root);
    CHECK_INT(bus_schema_load_file(path, &s, err, sizeof err), 0);
    CHECK_INT(check_json(s, NULL, "{\"b\":\"no\"}", msg, sizeof msg), BUS_EINVALID);
    CHECK_STR(msg, "/b: must be integer");
    bus_schema_free(s);
    snprintf(path, sizeof path, "%s/x/missing.json", root);
    CHECK_INT(bus_schema_load_file(path, &s, err, sizeof err), BUS_ENOT_FOUND);
    CHECK_CONTAINS(err, "missing.json: cannot read");
    remove_root();
}

/* Runs fn(argc, argv) with stdout/stderr captured into files. */
static int run_captured(int (*fn)(int, char **), int argc, char **argv, const char *in_text, char *out,
                        size_t outcap, char *errout, size_t errcap) {
    char op[300], ep[300], ip[300];
    snprintf(op, sizeof op, "%s/.out", root);
    snprintf(ep, sizeof ep, "%s/.err", root);
    snprintf(ip, sizeof ip, "%s/.in", root);
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2), si = dup(0);
    int fo = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0600), fe = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);
    if (in_text) {
        FILE *f = fopen(ip, "w");
        fputs(in_text, f);
        fclose(f);
        int fi = open(ip, O_RDONLY);
        dup2(fi, 0);
        close(fi);
        clearerr(stdin);
    }
    int rc = fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    dup2(si, 0);
    close(so);
    close(se);
    close(si);
    clearerr(stdin);
    FILE *f = fopen(op, "r");
    size_t n = fread(out, 1, outcap - 1, f);
    out[n] = 0;
    fclose(f);
    f = fopen(ep, "r");
    n = fread(errout, 1, errcap - 1, f);
    errout[n] = 0;
    fclose(f);
    return rc;
}

static void test_cli(void) {
    make_root();
    write_tree();
    char out[4096], err[4096];
    char *l1[] = {"list", "--dir", root, NULL};
    CHECK_INT(run_captured(bus_schema_list_main, 3, l1, NULL, out, sizeof out, err, sizeof err), 0);
    char want[4096];
    snprintf(want, sizeof want,
             "event  alliance.member.joined               %s/events/alliance.member.joined.json\n"
             "event  player.verified                      %s/events/player.verified.json\n"
             "rpc    alliances.dissolve                   %s/rpc/alliances.dissolve.json (params: yes, result: no)\n"
             "rpc    alliances.promote                    %s/rpc/alliances.promote.json (params: yes, result: yes)\n",
             root, root, root, root);
    CHECK_STR(out, want);
    setenv("BUS_SCHEMAS_DIR", root, 1);
    char *l2[] = {"list", NULL};
    CHECK_INT(run_captured(bus_schema_list_main, 1, l2, NULL, out, sizeof out, err, sizeof err), 0);
    CHECK_CONTAINS(out, "player.verified.json\n");
    char *l3[] = {"list", "--dir", "/nonexistent-dir", NULL};
    CHECK_INT(run_captured(bus_schema_list_main, 3, l3, NULL, out, sizeof out, err, sizeof err), 2);
    CHECK_CONTAINS(err, "/nonexistent-dir");
    put_file("inst/good.json", "{\"alliance_id\":\"a\",\"fid\":3,\"rank\":\"R1\"}");
    put_file("inst/bad.json", "{\"fid\":-3,\"rank\":\"R1\"}");
    put_file("inst/notjson.json", "{\"fid\":");
    put_file("broken.json", "{\"minimum\":\"x\"}");
    char schema[512], good[512], bad[512], notjson[512], broken[512];
    snprintf(schema, sizeof schema, "%s/events/alliance.member.joined.json", root);
    snprintf(good, sizeof good, "%s/inst/good.json", root);
    snprintf(bad, sizeof bad, "%s/inst/bad.json", root);
    snprintf(notjson, sizeof notjson, "%s/inst/notjson.json", root);
    snprintf(broken, sizeof broken, "%s/broken.json", root);

    char *a1[] = {"check", schema, good, NULL};
    CHECK_INT(run_captured(bus_schema_check_main, 3, a1, NULL, out, sizeof out, err, sizeof err), 0);
    CHECK_STR(out, "");
    char *a2[] = {"check", schema, bad, NULL};
    CHECK_INT(run_captured(bus_schema_check_main, 3, a2, NULL, out, sizeof out, err, sizeof err), 1);
    CHECK_STR(out, "(root): must have required property \"alliance_id\"\n/fid: must be >= 1\n");
    char *a3[] = {"check", schema, "-", NULL};
    CHECK_INT(run_captured(bus_schema_check_main, 3, a3, "{\"alliance_id\":\"a\",\"fid\":3,\"rank\":\"R6\"}", out,
                           sizeof out, err, sizeof err), 1);
    CHECK_CONTAINS(out, "/rank: must be one of");
    char *a3b[] = {"check", schema, NULL};
    CHECK_INT(run_captured(bus_schema_check_main, 2, a3b, "{\"alliance_id\":\"a\",\"fid\":3,\"rank\":\"R2\"}", out,
                           sizeof out, err, sizeof err), 0);
    char *a4[] = {"check", schema, notjson, NULL};
    CHECK_INT(run_captured(bus_schema_check_main, 3, a4, NULL, out, sizeof out, err, sizeof err), 1);
    CHECK_CONTAINS(out, "not valid JSON");
    char *a5[] = {"check", broken, good, NULL};
    CHECK_INT(run_captured(bus_schema_check_main, 3, a5, NULL, out, sizeof out, err, sizeof err), 2);
    CHECK_CONTAINS(err, "broken.json: /minimum: must be a number");
    char *a6[] = {"check", NULL};
    CHECK_INT(run_captured(bus_schema_check_main, 1, a6, NULL, out, sizeof out, err, sizeof err), 2);
    CHECK_CONTAINS(err, "usage");
    char *a7[] = {"check", schema, "/nonexistent.json", NULL};
    CHECK_INT(run_captured(bus_schema_check_main, 3, a7, NULL, out, sizeof out, err, sizeof err), 2);

    remove_root();
}

static void test_repo_schemas(void) {
    /* whatever is in the repository's schemas/ must load */
    struct stat st;
    if (stat("schemas", &st) != 0) SKIP("no schemas/ directory here (run from the repository root)");
    bus_schema_registry_t *r = NULL;
    char err[512];
    int rc = bus_schema_registry_load("schemas", &r, err, sizeof err);
    if (rc) fprintf(stderr, "  schemas/: %s\n", err);
    CHECK_INT(rc, 0);
    bus_schema_registry_free(r);
}

BUS_TESTS({"registry", test_registry, 10}, {"registry_errors", test_registry_errors, 10},
          {"load_file_siblings", test_load_file_siblings, 10}, {"cli", test_cli, 10},
          {"repo_schemas", test_repo_schemas, 10})
