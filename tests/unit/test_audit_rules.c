/* The pure parts of bus-audit: the record's canonical form and hash chain
 * (workers/audit/chain.c) and the RBAC rules (workers/audit/rules.c),
 * compiled into this test as they are. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "../../workers/audit/chain.c"
#include "../../workers/audit/rules.c"
#include "../test.h"
#include "bus/audit_stream.h"

/* main.c's helpers, which chain.c uses */
const char *au_str(const cJSON *doc, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsString(v) ? v->valuestring : "";
}
int64_t au_int(const cJSON *doc, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static void test_sha256_known_vector(void) {
    char h[65];
    au_sha256_hex("abc", 3, h);
    CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_canonical_form(void) {
    cJSON *r = cJSON_Parse("{\"seq\":3,\"b\":\"x\\\"y\\n\\u0001\",\"a\":{\"z\":1.5,\"k\":[true,null,2]},\"hash\":\"h\","
                           "\"_id\":\"e:1\",\"_v\":1,\"t\":\"é\"}");
    size_t len = 0;
    char *c = au_canonical(r, &len);
    /* sorted keys at every depth; no hash, _id, _v; minimal escapes; integers as integers */
    CHECK_STR(c, "{\"a\":{\"k\":[true,null,2],\"z\":1.5},\"b\":\"x\\\"y\\n\\u0001\",\"seq\":3,\"t\":\"é\"}");
    CHECK_INT(len, strlen(c));
    free(c);
    /* member order does not change the form */
    cJSON *r2 = cJSON_Parse("{\"t\":\"é\",\"a\":{\"k\":[true,null,2],\"z\":1.5},\"b\":\"x\\\"y\\n\\u0001\",\"seq\":3}");
    char h1[65], h2[65];
    au_record_hash(r, h1);
    au_record_hash(r2, h2);
    CHECK_STR(h1, h2);
    cJSON_Delete(r);
    cJSON_Delete(r2);
}

static void test_chain_links_and_tampering(void) {
    cJSON *a = cJSON_Parse("{\"time\":\"2026-12-03T10:00:00.000Z\",\"actor\":\"discord:1\",\"type\":\"x.y\","
                           "\"outcome\":\"published\",\"source_id\":\"e:1\",\"detail\":null}");
    cJSON *b = cJSON_Parse("{\"time\":\"2026-12-03T10:00:01.000Z\",\"actor\":\"discord:2\",\"type\":\"x.y\","
                           "\"outcome\":\"published\",\"source_id\":\"e:2\",\"detail\":{\"k\":1}}");
    CHECK_INT(au_record_seal(a, 1, au_genesis_hash), 0);
    CHECK_INT(au_record_seal(b, 2, au_str(a, "hash")), 0);
    char why[400];
    CHECK(au_check_link(a, 1, au_genesis_hash, why, sizeof why) == NULL);
    CHECK(au_check_link(b, 2, au_str(a, "hash"), why, sizeof why) == NULL);
    CHECK_STR(au_check_link(b, 3, au_str(a, "hash"), why, sizeof why), "seq");
    CHECK_STR(au_check_link(b, 2, au_genesis_hash, why, sizeof why), "prev_hash");
    cJSON_ReplaceItemInObject(b, "actor", cJSON_CreateString("discord:666"));
    CHECK_STR(au_check_link(b, 2, au_str(a, "hash"), why, sizeof why), "hash");
    CHECK_CONTAINS(why, "does not match");
    /* sealing again (a record chained anew after a lost race) gives a consistent record */
    CHECK_INT(au_record_seal(b, 5, "ab"), 0);
    CHECK(au_check_link(b, 5, "ab", why, sizeof why) == NULL);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static void test_scopes(void) {
    au_scope_t s;
    CHECK_INT(au_scope_parse("global", &s), 0);
    CHECK_INT(au_scope_parse("", &s), 0);
    CHECK_INT(s.kind, AU_SCOPE_GLOBAL);
    CHECK_INT(au_scope_parse("state:2630", &s), 0);
    CHECK_INT(s.state, 2630);
    CHECK_INT(au_scope_parse("state:0", &s), -1);
    CHECK_INT(au_scope_parse("state:100000", &s), -1);
    CHECK_INT(au_scope_parse("state:12x", &s), -1);
    CHECK_INT(au_scope_parse("alliance:0a1b-ff", &s), 0);
    CHECK_INT(au_scope_parse("alliance:ZZ", &s), -1);
    CHECK_INT(au_scope_parse("planet:1", &s), -1);
    CHECK(au_scope_covers("global", "alliance:aa", 0));
    CHECK(au_scope_covers("state:5", "state:5", 0));
    CHECK(au_scope_covers("state:5", "alliance:aa", 5));
    CHECK(!au_scope_covers("state:5", "alliance:aa", 6));
    CHECK(!au_scope_covers("state:5", "alliance:aa", 0));
    CHECK(!au_scope_covers("state:5", "global", 5));
    CHECK(au_scope_covers("alliance:aa", "alliance:aa", 0));
    CHECK(!au_scope_covers("alliance:aa", "alliance:ab", 0));
    CHECK(!au_scope_covers("alliance:aa", "state:5", 5));
}

static void test_decisions(void) {
    cJSON *roles = cJSON_Parse("{\"codes\":{\"permissions\":[\"giftcode.manage\"]}}");
    cJSON *g = cJSON_Parse("[{\"role\":\"codes\",\"scope\":\"global\"},{\"role\":\"moderator\",\"scope\":\"state:3\"},"
                           "{\"role\":\"moderator\",\"scope\":\"global\"}]");
    au_decision_t d;
    au_decide("discord:1", g, roles, "giftcode.manage", "state:3", 0, &d);
    CHECK(d.allowed);
    CHECK_STR(d.via_role, "moderator"); /* the built-in role first, then the widest scope */
    CHECK_STR(d.via_scope, "global");
    au_decide("discord:1", g, roles, "player.manage", "state:3", 0, &d);
    CHECK(!d.allowed);
    CHECK_STR(d.reason, "no role of discord:1 grants player.manage at state:3");
    cJSON *owner = cJSON_Parse("[{\"role\":\"owner\",\"scope\":\"global\"}]");
    cJSON *admin = cJSON_Parse("[{\"role\":\"administrator\",\"scope\":\"global\"}]");
    cJSON *local_admin = cJSON_Parse("[{\"role\":\"administrator\",\"scope\":\"state:3\"}]");
    au_decide_role_change("discord:1", owner, roles, "administrator", "global", &d);
    CHECK(d.allowed);
    au_decide_role_change("discord:2", admin, roles, "administrator", "global", &d);
    CHECK(!d.allowed);
    au_decide_role_change("discord:2", admin, roles, "moderator", "state:9", &d);
    CHECK(d.allowed);
    au_decide_role_change("discord:3", local_admin, roles, "codes", "state:3", &d);
    CHECK(d.allowed);
    au_decide_role_change("discord:3", local_admin, roles, "codes", "state:4", &d);
    CHECK(!d.allowed);
    au_decide_role_change("discord:3", local_admin, roles, "codes", "global", &d);
    CHECK(!d.allowed);
    CHECK(au_role_grants("owner", NULL, "audit.read"));
    CHECK(!au_role_grants("moderator", NULL, "role.manage"));
    CHECK(!au_role_grants("nosuch", roles, "giftcode.manage"));
    CHECK(au_permission_known("event.manage") && !au_permission_known("events.manage"));
    CHECK(au_role_name_valid("codes_2") && !au_role_name_valid("2codes") && !au_role_name_valid("Codes"));
    cJSON_Delete(roles);
    cJSON_Delete(g);
    cJSON_Delete(owner);
    cJSON_Delete(admin);
    cJSON_Delete(local_admin);
}

/* The readers' side of the audit.log stream (bus/audit_stream.h). */
static cJSON *rec(int seq, const char *prev) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "seq", seq);
    cJSON_AddStringToObject(r, "prev_hash", prev);
    return r;
}

static void test_stream_packs_and_follow(void) {
    const char *zeros = au_genesis_hash;
    /* a pack, a bare record (streams written before packs), and junk */
    const char *pack = "[{\"seq\":1},{\"seq\":2},{\"seq\":3}]";
    cJSON *a = bus_audit_stream_records(pack, strlen(pack));
    CHECK_INT(cJSON_GetArraySize(a), 3);
    cJSON *b = bus_audit_stream_records("{\"seq\":4}", 10);
    CHECK_INT(cJSON_GetArraySize(b), 1);
    cJSON *c = bus_audit_stream_records("not json", 8);
    CHECK(cJSON_IsArray(c) && cJSON_GetArraySize(c) == 0);
    cJSON *d = bus_audit_stream_records("7", 1);
    CHECK_INT(cJSON_GetArraySize(d), 0);
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(c);
    cJSON_Delete(d);
    /* each seq once, in order: a repeat (a republished pack) is skipped */
    bus_audit_follow_t f = {0};
    cJSON *r5 = rec(5, "x"), *r6 = rec(6, "x"), *r7 = rec(7, "x"), *r1 = rec(1, zeros), *r2 = rec(2, "y");
    CHECK(bus_audit_follow_show(&f, r5)); /* the first, whatever its seq */
    CHECK(bus_audit_follow_show(&f, r6));
    CHECK(!bus_audit_follow_show(&f, r5));
    CHECK(!bus_audit_follow_show(&f, r6));
    CHECK(!bus_audit_follow_show(&f, r2)); /* out of order */
    CHECK(bus_audit_follow_show(&f, r7));
    CHECK(bus_audit_follow_show(&f, r1)); /* seq 1 on the genesis hash after 7: a new chain */
    CHECK(bus_audit_follow_show(&f, r2));
    /* resuming after seq 6: the pack holding 5..7 is read again, only 7 shows,
     * and the chain's own start (seq 1) is not taken for a new chain */
    bus_audit_follow_t g = {.next_seq = 7};
    CHECK(!bus_audit_follow_show(&g, r1));
    CHECK(!bus_audit_follow_show(&g, r5));
    CHECK(!bus_audit_follow_show(&g, r6));
    CHECK(bus_audit_follow_show(&g, r7));
    cJSON *noseq = cJSON_Parse("{\"type\":\"x\"}");
    CHECK(!bus_audit_follow_show(&g, noseq));
    cJSON_Delete(noseq);
    cJSON_Delete(r5);
    cJSON_Delete(r6);
    cJSON_Delete(r7);
    cJSON_Delete(r1);
    cJSON_Delete(r2);
}

/* SSE ids: "<offset>-<seq>", and the bare offsets of the ids before packs. */
static void test_event_ids(void) {
    char id[48];
    bus_audit_event_id(id, sizeof id, 1234, 56789);
    CHECK_STR(id, "1234-56789");
    int64_t off = -1, after = -1;
    CHECK_INT(bus_audit_event_id_parse(id, &off, &after), 0);
    CHECK(off == 1234 && after == 56789);
    CHECK_INT(bus_audit_event_id_parse("19", &off, &after), 0); /* a bare offset: the next message */
    CHECK(off == 20 && after == 0);
    CHECK_INT(bus_audit_event_id_parse("0-1", &off, &after), 0);
    CHECK(off == 0 && after == 1);
    static const char *const bad[] = {"", "-", "x", "12-", "-5", "12-x", "12-0", "12--3", "+5", " 5", "5 ",
                                      "12-3-4", "99999999999999999999", "1-99999999999999999999", NULL};
    for (int i = 0; bad[i]; i++) CHECK_INT(bus_audit_event_id_parse(bad[i], &off, &after), -1);
}

BUS_TESTS({"sha256_known_vector", test_sha256_known_vector, 5}, {"canonical_form", test_canonical_form, 5},
          {"chain_links_and_tampering", test_chain_links_and_tampering, 5}, {"scopes", test_scopes, 5},
          {"decisions", test_decisions, 5}, {"stream_packs_and_follow", test_stream_packs_and_follow, 5},
          {"event_ids", test_event_ids, 5})
