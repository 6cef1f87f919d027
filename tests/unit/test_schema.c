/* JSON Schema draft-07 validator: every keyword, with valid and invalid
 * instances written from the specification's text (json-schema-validation
 * draft-07 and json-schema-core draft-07), the tricky cases included. */
#include <bus/error.h>
#include <bus/schema.h>
#include <pthread.h>

#include "../test.h"

typedef struct {
    const char *schema;
    const char *instance;
    int valid;
} case_t;

static bus_schema_t *compile_text(const char *text) {
    cJSON *j = cJSON_Parse(text);
    if (!j) {
        fprintf(stderr, "  test bug: schema is not JSON: %s\n", text);
        exit(1);
    }
    bus_schema_t *s = NULL;
    char err[512];
    int rc = bus_schema_compile(j, NULL, &s, err, sizeof err);
    cJSON_Delete(j);
    if (rc) {
        fprintf(stderr, "  compile failed: %s\n  schema: %s\n", err, text);
        exit(1);
    }
    return s;
}

/* Validates and checks the result's invariants; returns 1 when valid. */
static int is_valid(const bus_schema_t *s, const char *inst, bus_schema_result_t *r) {
    cJSON *ij = cJSON_Parse(inst);
    if (!ij) {
        fprintf(stderr, "  test bug: instance is not JSON: %s\n", inst);
        exit(1);
    }
    int rc = bus_schema_validate(s, ij, r);
    cJSON_Delete(ij);
    CHECK(rc == 0 || rc == BUS_EINVALID);
    CHECK((rc == 0) == (r->count == 0));
    return rc == 0;
}

static void run_cases(const char *group, const case_t *c, size_t n) {
    static bus_schema_result_t r;
    for (size_t i = 0; i < n; i++) {
        bus_schema_t *s = compile_text(c[i].schema);
        int v = is_valid(s, c[i].instance, &r);
        if (v != c[i].valid) {
            char msg[2048];
            bus_schema_result_format(&r, msg, sizeof msg);
            fprintf(stderr, "  %s case %zu: schema %s instance %s: expected %s, got %s (%s)\n", group, i,
                    c[i].schema, c[i].instance, c[i].valid ? "valid" : "invalid",
                    v ? "valid" : "invalid", msg);
            exit(1);
        }
        bus_schema_free(s);
    }
}
#define RUN(group, ...)                                                   \
    do {                                                                  \
        static const case_t cases_[] = {__VA_ARGS__};                     \
        run_cases(group, cases_, sizeof cases_ / sizeof cases_[0]);       \
    } while (0)

static void test_type(void) {
    RUN("type",
        {"{\"type\":\"integer\"}", "1", 1},
        {"{\"type\":\"integer\"}", "1.0", 1}, /* an integer-valued number is an integer */
        {"{\"type\":\"integer\"}", "-0", 1},
        {"{\"type\":\"integer\"}", "1e2", 1},
        {"{\"type\":\"integer\"}", "1.5", 0},
        {"{\"type\":\"integer\"}", "\"1\"", 0},
        {"{\"type\":\"number\"}", "1", 1},
        {"{\"type\":\"number\"}", "1.5", 1},
        {"{\"type\":\"number\"}", "\"1\"", 0},
        {"{\"type\":\"string\"}", "\"\"", 1},
        {"{\"type\":\"string\"}", "1", 0},
        {"{\"type\":\"boolean\"}", "false", 1},
        {"{\"type\":\"boolean\"}", "0", 0},
        {"{\"type\":\"null\"}", "null", 1},
        {"{\"type\":\"null\"}", "false", 0},
        {"{\"type\":\"object\"}", "{}", 1},
        {"{\"type\":\"object\"}", "[]", 0},
        {"{\"type\":\"array\"}", "[]", 1},
        {"{\"type\":\"array\"}", "{}", 0},
        {"{\"type\":[\"string\",\"null\"]}", "null", 1},
        {"{\"type\":[\"string\",\"null\"]}", "\"x\"", 1},
        {"{\"type\":[\"string\",\"null\"]}", "1", 0},
        {"{\"type\":[\"integer\",\"boolean\"]}", "2.0", 1},
        {"{}", "[1,{\"a\":null}]", 1});
}

static void test_enum_const(void) {
    RUN("enum/const",
        {"{\"enum\":[1,2,3]}", "1", 1},
        {"{\"enum\":[1,2,3]}", "1.0", 1}, /* numbers compare by value */
        {"{\"enum\":[1,2,3]}", "4", 0},
        {"{\"enum\":[\"R1\",\"R5\"]}", "\"R5\"", 1},
        {"{\"enum\":[\"R1\",\"R5\"]}", "\"r5\"", 0},
        {"{\"enum\":[{\"a\":1,\"b\":[1,2]}]}", "{\"b\":[1,2],\"a\":1}", 1},
        {"{\"enum\":[{\"a\":1,\"b\":[1,2]}]}", "{\"b\":[2,1],\"a\":1}", 0},
        {"{\"enum\":[false]}", "0", 0},
        {"{\"enum\":[0]}", "false", 0},
        {"{\"enum\":[null]}", "null", 1},
        {"{\"enum\":[]}", "null", 0},
        {"{\"const\":2}", "2.0", 1},
        {"{\"const\":2}", "2.5", 0},
        {"{\"const\":null}", "null", 1},
        {"{\"const\":null}", "0", 0},
        {"{\"const\":{\"x\":{\"y\":[true]}}}", "{\"x\":{\"y\":[true]}}", 1},
        {"{\"const\":{\"x\":{\"y\":[true]}}}", "{\"x\":{\"y\":[true],\"z\":1}}", 0},
        {"{\"const\":[1,2]}", "[1,2,3]", 0},
        {"{\"const\":true}", "1", 0});
}

static void test_numbers(void) {
    RUN("numbers",
        {"{\"multipleOf\":2}", "10", 1},
        {"{\"multipleOf\":2}", "7", 0},
        {"{\"multipleOf\":2}", "\"7\"", 1}, /* applies to numbers only */
        {"{\"multipleOf\":1.5}", "4.5", 1},
        {"{\"multipleOf\":1.5}", "35", 0},
        {"{\"multipleOf\":0.0001}", "0.0075", 1},
        {"{\"multipleOf\":0.0001}", "0.00751", 0},
        {"{\"multipleOf\":0.01}", "19.99", 1},
        {"{\"type\":\"integer\",\"multipleOf\":0.123456789}", "1e308", 0},
        {"{\"maximum\":3}", "3", 1},
        {"{\"maximum\":3}", "3.0001", 0},
        {"{\"maximum\":3}", "\"x\"", 1},
        {"{\"exclusiveMaximum\":3}", "2.9", 1},
        {"{\"exclusiveMaximum\":3}", "3", 0},
        {"{\"minimum\":-2}", "-2", 1},
        {"{\"minimum\":-2}", "-2.0001", 0},
        {"{\"exclusiveMinimum\":1.1}", "1.2", 1},
        {"{\"exclusiveMinimum\":1.1}", "1.1", 0},
        {"{\"minimum\":1,\"exclusiveMaximum\":5}", "5", 0},
        {"{\"minimum\":1,\"exclusiveMaximum\":5}", "4.99", 1});
}

static void test_strings(void) {
    RUN("strings",
        {"{\"maxLength\":2}", "\"fo\"", 1},
        {"{\"maxLength\":2}", "\"foo\"", 0},
        {"{\"maxLength\":2}", "100", 1},
        /* lengths count code points: two astral-plane characters are length 2 */
        {"{\"maxLength\":2}", "\"\\ud83d\\udca9\\ud83d\\udca9\"", 1},
        {"{\"maxLength\":1}", "\"\\ud83d\\udca9\\ud83d\\udca9\"", 0},
        {"{\"minLength\":2}", "\"\\ud83d\\udca9\"", 0},
        {"{\"minLength\":2}", "\"\xc3\xa9\xc3\xa9\"", 1}, /* "éé": 4 bytes, 2 characters */
        {"{\"maxLength\":1}", "\"\xc3\xa9\"", 1},
        {"{\"minLength\":1}", "\"\"", 0},
        {"{\"maxLength\":2.0}", "\"ab\"", 1},
        {"{\"pattern\":\"^a*$\"}", "\"aaa\"", 1},
        {"{\"pattern\":\"^a*$\"}", "\"abc\"", 0},
        {"{\"pattern\":\"a+\"}", "\"xxaxx\"", 1}, /* not anchored */
        {"{\"pattern\":\"^a*$\"}", "true", 1},
        {"{\"pattern\":\"^abc$\"}", "\"abc\\n\"", 0}, /* ECMA: $ is the very end */
        {"{\"pattern\":\"^.$\"}", "\"\\ud83d\\udca9\"", 1}, /* . is one code point */
        {"{\"pattern\":\"^.$\"}", "\"\\n\"", 0},
        {"{\"pattern\":\"^\\\\s$\"}", "\"\\u00a0\"", 1}, /* ECMA \\s includes NBSP */
        {"{\"pattern\":\"^\\\\S$\"}", "\"\\u2028\"", 0},
        {"{\"pattern\":\"^\\\\d+$\"}", "\"\\u0661\"", 0}, /* \\d is ASCII only */
        {"{\"pattern\":\"^\\\\u0041$\"}", "\"A\"", 1},
        {"{\"pattern\":\"^[^]$\"}", "\"\\n\"", 1},
        {"{\"pattern\":\"^\\\\p{Lu}+$\"}", "\"\xc3\x89T\xc3\x89\"", 1},
        {"{\"pattern\":\"^R[1-5]$\"}", "\"R6\"", 0});
}

static void test_arrays(void) {
    RUN("arrays",
        {"{\"items\":{\"type\":\"integer\"}}", "[1,2,3]", 1},
        {"{\"items\":{\"type\":\"integer\"}}", "[1,\"x\"]", 0},
        {"{\"items\":{\"type\":\"integer\"}}", "{\"0\":\"x\"}", 1},
        {"{\"items\":true}", "[1,\"x\"]", 1},
        {"{\"items\":false}", "[]", 1},
        {"{\"items\":false}", "[1]", 0},
        {"{\"items\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}", "[1,\"a\"]", 1},
        {"{\"items\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}", "[1]", 1},
        {"{\"items\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}", "[1,\"a\",null]", 1},
        {"{\"items\":[{\"type\":\"integer\"},{\"type\":\"string\"}]}", "[\"a\",1]", 0},
        {"{\"items\":[{}],\"additionalItems\":false}", "[1]", 1},
        {"{\"items\":[{}],\"additionalItems\":false}", "[1,2]", 0},
        {"{\"items\":[{}],\"additionalItems\":{\"type\":\"integer\"}}", "[null,2,3]", 1},
        {"{\"items\":[{}],\"additionalItems\":{\"type\":\"integer\"}}", "[null,2,\"x\"]", 0},
        /* additionalItems is ignored when items is a schema or absent */
        {"{\"items\":{},\"additionalItems\":false}", "[1,2,3]", 1},
        {"{\"additionalItems\":false}", "[1,2,3]", 1},
        {"{\"maxItems\":2}", "[1,2]", 1},
        {"{\"maxItems\":2}", "[1,2,3]", 0},
        {"{\"minItems\":1}", "[]", 0},
        {"{\"minItems\":1}", "\"\"", 1},
        {"{\"uniqueItems\":true}", "[1,2]", 1},
        {"{\"uniqueItems\":true}", "[1,1]", 0},
        {"{\"uniqueItems\":true}", "[1,1.0]", 0},
        {"{\"uniqueItems\":true}", "[0,false]", 1},
        {"{\"uniqueItems\":true}", "[1,true]", 1},
        {"{\"uniqueItems\":true}", "[{\"a\":1,\"b\":2},{\"b\":2,\"a\":1}]", 0}, /* key order ignored */
        {"{\"uniqueItems\":true}", "[{\"a\":1},{\"a\":2}]", 1},
        {"{\"uniqueItems\":true}", "[[1,2],[2,1]]", 1},
        {"{\"uniqueItems\":true}", "[[\"x\"],[\"x\"]]", 0},
        {"{\"uniqueItems\":false}", "[1,1]", 1},
        {"{\"contains\":{\"minimum\":5}}", "[1,5]", 1},
        {"{\"contains\":{\"minimum\":5}}", "[1,2]", 0},
        {"{\"contains\":{\"minimum\":5}}", "[]", 0},
        {"{\"contains\":{\"minimum\":5}}", "{}", 1},
        {"{\"contains\":true}", "[]", 0},
        {"{\"contains\":false}", "[1]", 0});
}

static void test_objects(void) {
    RUN("objects",
        {"{\"maxProperties\":1}", "{\"a\":1}", 1},
        {"{\"maxProperties\":1}", "{\"a\":1,\"b\":2}", 0},
        {"{\"minProperties\":1}", "{}", 0},
        {"{\"minProperties\":1}", "[]", 1},
        {"{\"required\":[\"a\"]}", "{\"a\":null}", 1},
        {"{\"required\":[\"a\"]}", "{\"b\":1}", 0},
        {"{\"required\":[\"a\"]}", "[\"a\"]", 1},
        {"{\"required\":[]}", "{}", 1},
        {"{\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{\"a\":1,\"b\":\"x\"}", 1},
        {"{\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{\"a\":\"x\"}", 0},
        {"{\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{}", 1},
        {"{\"properties\":{\"a\":false}}", "{\"a\":1}", 0},
        {"{\"properties\":{\"a/b~c\":{\"type\":\"integer\"}}}", "{\"a/b~c\":\"x\"}", 0},
        {"{\"patternProperties\":{\"^x-\":{\"type\":\"string\"}}}", "{\"x-a\":\"s\",\"y\":1}", 1},
        {"{\"patternProperties\":{\"^x-\":{\"type\":\"string\"}}}", "{\"x-a\":1}", 0},
        {"{\"patternProperties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"minimum\":5}}}", "{\"ab\":5}", 1},
        {"{\"patternProperties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"minimum\":5}}}", "{\"ab\":4}", 0},
        {"{\"additionalProperties\":false}", "{}", 1},
        {"{\"additionalProperties\":false}", "{\"a\":1}", 0},
        {"{\"properties\":{\"a\":{}},\"additionalProperties\":false}", "{\"a\":1}", 1},
        {"{\"properties\":{\"a\":{}},\"patternProperties\":{\"^v\":{}},\"additionalProperties\":false}",
         "{\"a\":1,\"vx\":2}", 1},
        {"{\"properties\":{\"a\":{}},\"patternProperties\":{\"^v\":{}},\"additionalProperties\":false}",
         "{\"a\":1,\"vx\":2,\"q\":3}", 0},
        {"{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"boolean\"}}", "{\"a\":1,\"b\":true}", 1},
        {"{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"boolean\"}}", "{\"a\":1,\"b\":2}", 0},
        {"{\"additionalProperties\":false}", "[1]", 1},
        {"{\"dependencies\":{\"bar\":[\"foo\"]}}", "{\"bar\":1,\"foo\":2}", 1},
        {"{\"dependencies\":{\"bar\":[\"foo\"]}}", "{\"foo\":2}", 1},
        {"{\"dependencies\":{\"bar\":[\"foo\"]}}", "{\"bar\":1}", 0},
        {"{\"dependencies\":{\"bar\":[]}}", "{\"bar\":1}", 1},
        {"{\"dependencies\":{\"bar\":{\"required\":[\"baz\"]}}}", "{\"bar\":1,\"baz\":2}", 1},
        {"{\"dependencies\":{\"bar\":{\"required\":[\"baz\"]}}}", "{\"bar\":1}", 0},
        {"{\"dependencies\":{\"bar\":{\"required\":[\"baz\"]}}}", "{\"x\":1}", 1},
        {"{\"dependencies\":{\"bar\":false}}", "{\"bar\":1}", 0},
        {"{\"dependencies\":{\"bar\":false}}", "{\"foo\":1}", 1},
        {"{\"propertyNames\":{\"maxLength\":3}}", "{\"abc\":1}", 1},
        {"{\"propertyNames\":{\"maxLength\":3}}", "{\"abcd\":1}", 0},
        {"{\"propertyNames\":{\"pattern\":\"^[a-z]+$\"}}", "{\"aB\":1}", 0},
        {"{\"propertyNames\":false}", "{}", 1},
        {"{\"propertyNames\":false}", "{\"a\":1}", 0},
        {"{\"propertyNames\":{\"maxLength\":3}}", "[\"abcdef\"]", 1});
}

static void test_combinators(void) {
    RUN("combinators",
        {"{\"allOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}", "3", 1},
        {"{\"allOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}", "1", 0},
        {"{\"allOf\":[true,true]}", "1", 1},
        {"{\"allOf\":[true,false]}", "1", 0},
        {"{\"anyOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}", "1", 1},
        {"{\"anyOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}", "2.5", 1},
        {"{\"anyOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}", "1.5", 0},
        {"{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}", "1", 1},
        {"{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}", "2.5", 1},
        {"{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}", "3", 0}, /* both */
        {"{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":2}]}", "1.5", 0}, /* neither */
        {"{\"oneOf\":[true,true]}", "1", 0},
        {"{\"not\":{\"type\":\"integer\"}}", "\"x\"", 1},
        {"{\"not\":{\"type\":\"integer\"}}", "1", 0},
        {"{\"not\":{}}", "1", 0},
        {"{\"not\":false}", "1", 1},
        {"{\"if\":{\"exclusiveMaximum\":0},\"then\":{\"minimum\":-10}}", "-1", 1},
        {"{\"if\":{\"exclusiveMaximum\":0},\"then\":{\"minimum\":-10}}", "-100", 0},
        {"{\"if\":{\"exclusiveMaximum\":0},\"then\":{\"minimum\":-10}}", "3", 1},
        {"{\"if\":{\"exclusiveMaximum\":0},\"else\":{\"multipleOf\":2}}", "-1", 1},
        {"{\"if\":{\"exclusiveMaximum\":0},\"else\":{\"multipleOf\":2}}", "3", 0},
        {"{\"if\":{\"exclusiveMaximum\":0},\"else\":{\"multipleOf\":2}}", "4", 1},
        {"{\"then\":{\"const\":1}}", "2", 1},  /* then without if is ignored */
        {"{\"else\":{\"const\":1}}", "2", 1},  /* else without if is ignored */
        {"{\"if\":false,\"then\":{\"const\":1},\"else\":{\"const\":2}}", "2", 1},
        {"{\"if\":true,\"then\":{\"const\":1},\"else\":{\"const\":2}}", "2", 0},
        {"{\"if\":{\"const\":1}}", "2", 1});
}

static void test_boolean_schemas(void) {
    RUN("boolean",
        {"true", "{\"anything\":[1]}", 1},
        {"true", "null", 1},
        {"false", "null", 0},
        {"false", "{}", 0},
        {"{\"properties\":{\"a\":true,\"b\":false}}", "{\"a\":1}", 1},
        {"{\"properties\":{\"a\":true,\"b\":false}}", "{\"b\":1}", 0});
}

static void test_refs(void) {
    RUN("ref",
        {"{\"properties\":{\"a\":{\"$ref\":\"#\"}},\"additionalProperties\":false}", "{\"a\":{\"a\":{}}}", 1},
        {"{\"properties\":{\"a\":{\"$ref\":\"#\"}},\"additionalProperties\":false}", "{\"a\":{\"b\":{}}}", 0},
        {"{\"definitions\":{\"r\":{\"enum\":[\"R1\",\"R2\"]}},\"properties\":{\"rank\":{\"$ref\":\"#/definitions/r\"}}}",
         "{\"rank\":\"R2\"}", 1},
        {"{\"definitions\":{\"r\":{\"enum\":[\"R1\",\"R2\"]}},\"properties\":{\"rank\":{\"$ref\":\"#/definitions/r\"}}}",
         "{\"rank\":\"R3\"}", 0},
        /* draft-07: keywords beside $ref are ignored */
        {"{\"definitions\":{\"r\":{\"type\":\"integer\"}},\"properties\":{\"x\":{\"$ref\":\"#/definitions/r\",\"maximum\":1}}}",
         "{\"x\":5}", 1},
        {"{\"definitions\":{\"r\":{\"type\":\"integer\"}},\"properties\":{\"x\":{\"$ref\":\"#/definitions/r\",\"maximum\":1}}}",
         "{\"x\":\"5\"}", 0},
        {"{\"definitions\":{\"reffed\":{\"type\":\"array\"}},\"properties\":{\"foo\":{\"$ref\":\"#/definitions/reffed\",\"maxItems\":2}}}",
         "{\"foo\":[1,2,3]}", 1},
        /* pointer escapes: ~1 is /, ~0 is ~, %25 is % */
        {"{\"definitions\":{\"a/b\":{\"type\":\"integer\"},\"c~d\":{\"type\":\"string\"},\"e%f\":{\"type\":\"null\"}},"
         "\"properties\":{\"x\":{\"$ref\":\"#/definitions/a~1b\"},\"y\":{\"$ref\":\"#/definitions/c~0d\"},\"z\":{\"$ref\":\"#/definitions/e%25f\"}}}",
         "{\"x\":1,\"y\":\"s\",\"z\":null}", 1},
        {"{\"definitions\":{\"a/b\":{\"type\":\"integer\"}},\"properties\":{\"x\":{\"$ref\":\"#/definitions/a~1b\"}}}",
         "{\"x\":\"1\"}", 0},
        /* refs to array items and through nested refs */
        {"{\"items\":[{\"type\":\"integer\"},{\"$ref\":\"#/items/0\"}]}", "[1,2]", 1},
        {"{\"items\":[{\"type\":\"integer\"},{\"$ref\":\"#/items/0\"}]}", "[1,\"x\"]", 0},
        {"{\"definitions\":{\"a\":{\"type\":\"integer\"},\"b\":{\"$ref\":\"#/definitions/a\"},\"c\":{\"$ref\":\"#/definitions/b\"}},\"$ref\":\"#/definitions/c\"}",
         "5", 1},
        {"{\"definitions\":{\"a\":{\"type\":\"integer\"},\"b\":{\"$ref\":\"#/definitions/a\"},\"c\":{\"$ref\":\"#/definitions/b\"}},\"$ref\":\"#/definitions/c\"}",
         "\"a\"", 0},
        /* recursion: a tree of nodes */
        {"{\"definitions\":{\"node\":{\"type\":\"object\",\"required\":[\"v\"],\"properties\":{\"v\":{\"type\":\"integer\"},"
         "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/definitions/node\"}}}}},\"$ref\":\"#/definitions/node\"}",
         "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"v\":3}]},{\"v\":4}]}", 1},
        {"{\"definitions\":{\"node\":{\"type\":\"object\",\"required\":[\"v\"],\"properties\":{\"v\":{\"type\":\"integer\"},"
         "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/definitions/node\"}}}}},\"$ref\":\"#/definitions/node\"}",
         "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"w\":3}]}]}", 0},
        /* $id: location-independent identifiers and base URI changes */
        {"{\"allOf\":[{\"$ref\":\"#foo\"}],\"definitions\":{\"A\":{\"$id\":\"#foo\",\"type\":\"integer\"}}}", "1", 1},
        {"{\"allOf\":[{\"$ref\":\"#foo\"}],\"definitions\":{\"A\":{\"$id\":\"#foo\",\"type\":\"integer\"}}}", "\"a\"", 0},
        {"{\"$id\":\"http://localhost:1234/root\",\"allOf\":[{\"$ref\":\"http://localhost:1234/nested.json#foo\"}],"
         "\"definitions\":{\"A\":{\"$id\":\"nested.json\",\"definitions\":{\"B\":{\"$id\":\"#foo\",\"type\":\"integer\"}}}}}",
         "1", 1},
        {"{\"$id\":\"http://localhost:1234/root\",\"allOf\":[{\"$ref\":\"http://localhost:1234/nested.json#foo\"}],"
         "\"definitions\":{\"A\":{\"$id\":\"nested.json\",\"definitions\":{\"B\":{\"$id\":\"#foo\",\"type\":\"integer\"}}}}}",
         "\"a\"", 0},
        {"{\"$id\":\"http://x.test/schemas/root.json\",\"definitions\":{\"u\":{\"$id\":\"user.json\",\"type\":\"string\"}},"
         "\"properties\":{\"a\":{\"$ref\":\"user.json\"},\"b\":{\"$ref\":\"http://x.test/schemas/user.json\"}}}",
         "{\"a\":\"x\",\"b\":\"y\"}", 1},
        {"{\"$id\":\"http://x.test/schemas/root.json\",\"definitions\":{\"u\":{\"$id\":\"user.json\",\"type\":\"string\"}},"
         "\"properties\":{\"a\":{\"$ref\":\"user.json\"},\"b\":{\"$ref\":\"http://x.test/schemas/user.json\"}}}",
         "{\"a\":\"x\",\"b\":2}", 0},
        /* a $ref to the root by its own $id */
        {"{\"$id\":\"http://x.test/t.json\",\"properties\":{\"n\":{\"$ref\":\"http://x.test/t.json\"}},\"maxProperties\":1}",
         "{\"n\":{\"n\":{}}}", 1},
        {"{\"$id\":\"http://x.test/t.json\",\"properties\":{\"n\":{\"$ref\":\"http://x.test/t.json\"}},\"maxProperties\":1}",
         "{\"n\":{\"n\":{},\"m\":1}}", 0},
        /* $ref to a location under an unknown keyword still resolves */
        {"{\"x-lib\":{\"int\":{\"type\":\"integer\"}},\"$ref\":\"#/x-lib/int\"}", "3", 1},
        {"{\"x-lib\":{\"int\":{\"type\":\"integer\"}},\"$ref\":\"#/x-lib/int\"}", "3.5", 0});
}

static void test_formats(void) {
    RUN("format",
        {"{\"format\":\"date-time\"}", "\"1963-06-19T08:30:06.283185Z\"", 1},
        {"{\"format\":\"date-time\"}", "\"1963-06-19T08:30:06Z\"", 1},
        {"{\"format\":\"date-time\"}", "\"1937-01-01T12:00:27.87+00:20\"", 1},
        {"{\"format\":\"date-time\"}", "\"1990-12-31T15:59:60-08:00\"", 1}, /* leap second at 23:59:60 UTC */
        {"{\"format\":\"date-time\"}", "\"1990-12-31T23:59:60+01:00\"", 0},
        {"{\"format\":\"date-time\"}", "\"1963-06-19t08:30:06.283185z\"", 1},
        {"{\"format\":\"date-time\"}", "\"1990-02-31T15:59:59.123-08:00\"", 0},
        {"{\"format\":\"date-time\"}", "\"1990-12-31T15:59:59-24:00\"", 0},
        {"{\"format\":\"date-time\"}", "\"06/19/1963 08:30:06 PST\"", 0},
        {"{\"format\":\"date-time\"}", "\"2013-350T01:01:01\"", 0},
        {"{\"format\":\"date-time\"}", "\"1963-06-19T08:30:06\"", 0}, /* offset required */
        {"{\"format\":\"date-time\"}", "12", 1},                      /* only strings */
        {"{\"format\":\"date\"}", "\"2020-02-29\"", 1},
        {"{\"format\":\"date\"}", "\"2021-02-29\"", 0},
        {"{\"format\":\"date\"}", "\"1900-02-29\"", 0},
        {"{\"format\":\"date\"}", "\"2000-02-29\"", 1},
        {"{\"format\":\"date\"}", "\"2020-13-01\"", 0},
        {"{\"format\":\"date\"}", "\"2020-1-01\"", 0},
        {"{\"format\":\"time\"}", "\"08:30:06Z\"", 1},
        {"{\"format\":\"time\"}", "\"08:30:06.5+02:00\"", 1},
        {"{\"format\":\"time\"}", "\"08:30:06\"", 0},
        {"{\"format\":\"time\"}", "\"24:00:00Z\"", 0},
        {"{\"format\":\"email\"}", "\"joe.bloggs@example.com\"", 1},
        {"{\"format\":\"email\"}", "\"te~st@example.com\"", 1},
        {"{\"format\":\"email\"}", "\"\\\"joe bloggs\\\"@example.com\"", 1},
        {"{\"format\":\"email\"}", "\"joe@[127.0.0.1]\"", 1},
        {"{\"format\":\"email\"}", "\"2962\"", 0},
        {"{\"format\":\"email\"}", "\".test@example.com\"", 0},
        {"{\"format\":\"email\"}", "\"te..st@example.com\"", 0},
        {"{\"format\":\"email\"}", "\"test.@example.com\"", 0},
        {"{\"format\":\"email\"}", "\"a@b@example.com\"", 0},
        {"{\"format\":\"hostname\"}", "\"www.example.com\"", 1},
        {"{\"format\":\"hostname\"}", "\"xn--4gbwdl.xn--wgbh1c\"", 1},
        {"{\"format\":\"hostname\"}", "\"1host\"", 1},
        {"{\"format\":\"hostname\"}", "\"-a-host-name-that-starts-with--\"", 0},
        {"{\"format\":\"hostname\"}", "\"not_a_valid_host_name\"", 0},
        {"{\"format\":\"hostname\"}",
         "\"a-vvvvvvvvvvvvvvvveeeeeeeeeeeeeeeerrrrrrrrrrrrrrrryyyyyyyyyyyyyyyy-long-host-name-component\"", 0},
        {"{\"format\":\"hostname\"}", "\"\"", 0},
        {"{\"format\":\"hostname\"}", "\"a..b\"", 0},
        {"{\"format\":\"ipv4\"}", "\"192.168.0.1\"", 1},
        {"{\"format\":\"ipv4\"}", "\"127.0.0.0.1\"", 0},
        {"{\"format\":\"ipv4\"}", "\"256.256.256.256\"", 0},
        {"{\"format\":\"ipv4\"}", "\"127.0\"", 0},
        {"{\"format\":\"ipv4\"}", "\"0x7f000001\"", 0},
        {"{\"format\":\"ipv4\"}", "\"087.10.0.1\"", 0}, /* leading zeros */
        {"{\"format\":\"ipv6\"}", "\"::1\"", 1},
        {"{\"format\":\"ipv6\"}", "\"::\"", 1},
        {"{\"format\":\"ipv6\"}", "\"1:2:3:4:5:6:7:8\"", 1},
        {"{\"format\":\"ipv6\"}", "\"::ffff:192.168.0.1\"", 1},
        {"{\"format\":\"ipv6\"}", "\"1::2:3\"", 1},
        {"{\"format\":\"ipv6\"}", "\"12345::\"", 0},
        {"{\"format\":\"ipv6\"}", "\"::laptop\"", 0},
        {"{\"format\":\"ipv6\"}", "\"1:1:1:1:1:1:1:1:1\"", 0},
        {"{\"format\":\"ipv6\"}", "\"1::2::3\"", 0},
        {"{\"format\":\"ipv6\"}", "\":1:2:3:4:5:6:7\"", 0},
        {"{\"format\":\"ipv6\"}", "\"1:2:3:4:5:6:7:\"", 0},
        {"{\"format\":\"ipv6\"}", "\"fe80::1%eth0\"", 0},
        {"{\"format\":\"ipv6\"}", "\"1:2:3:4:5:6:7:8::\"", 0},
        {"{\"format\":\"uri\"}", "\"http://foo.bar/?baz=qux#quux\"", 1},
        {"{\"format\":\"uri\"}", "\"ldap://[2001:db8::7]/c=GB?objectClass?one\"", 1},
        {"{\"format\":\"uri\"}", "\"mailto:John.Doe@example.com\"", 1},
        {"{\"format\":\"uri\"}", "\"urn:oasis:names:specification:docbook:dtd:xml:4.1.2\"", 1},
        {"{\"format\":\"uri\"}", "\"http://example.com:8080/a%20b\"", 1},
        {"{\"format\":\"uri\"}", "\"//foo.bar/?baz=qux#quux\"", 0}, /* relative reference */
        {"{\"format\":\"uri\"}", "\"abc\"", 0},
        {"{\"format\":\"uri\"}", "\"http:// shouldfail.com\"", 0},
        {"{\"format\":\"uri\"}", "\"http://example.com/%zz\"", 0},
        {"{\"format\":\"uri\"}", "\"http://example.com:80a/\"", 0},
        {"{\"format\":\"uuid\"}", "\"2eb8aa08-aa98-11ea-b4aa-73b441d16380\"", 1},
        {"{\"format\":\"uuid\"}", "\"2EB8AA08-AA98-11EA-B4AA-73B441D16380\"", 1},
        {"{\"format\":\"uuid\"}", "\"2eb8aa08aa9811eab4aa73b441d16380\"", 0},
        {"{\"format\":\"uuid\"}", "\"2eb8aa08-aa98-11ea-b4aa-73b441d1638\"", 0},
        {"{\"format\":\"uuid\"}", "\"2eb8aa08-aa98-11ea-b4aa-73b441d1638g\"", 0},
        {"{\"format\":\"regex\"}", "\"([abc])+\\\\s+$\"", 1},
        {"{\"format\":\"regex\"}", "\"^(abc]\"", 0},
        {"{\"format\":\"regex\"}", "\"\\\\a\"", 0}, /* not an ECMA escape */
        {"{\"format\":\"unknown-format\"}", "\"anything\"", 1}); /* unknown formats are ignored */
}

/* ---- errors people can act on ---- */

static void test_messages(void) {
    bus_schema_t *s = compile_text(
        "{\"type\":\"object\",\"required\":[\"fid\",\"rank\"],\"additionalProperties\":false,"
        "\"properties\":{\"fid\":{\"type\":\"integer\",\"minimum\":1},\"rank\":{\"enum\":[\"R1\",\"R2\",\"R3\",\"R4\",\"R5\"]},"
        "\"name\":{\"type\":\"string\",\"maxLength\":3},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}}}");
    static bus_schema_result_t r;
    CHECK(!is_valid(s, "{\"fid\":0,\"rank\":\"R9\",\"name\":\"abcd\",\"x\":1}", &r));
    char buf[2048];
    bus_schema_result_format(&r, buf, sizeof buf);
    CHECK_INT(r.count, 4);
    /* sorted by path */
    CHECK_STR(r.errors[0].path, "/fid");
    CHECK_STR(r.errors[0].keyword, "minimum");
    CHECK_STR(r.errors[0].message, "must be >= 1");
    CHECK_STR(r.errors[1].path, "/name");
    CHECK_STR(r.errors[1].keyword, "maxLength");
    CHECK_STR(r.errors[2].path, "/rank");
    CHECK_STR(r.errors[2].message, "must be one of \"R1\",\"R2\",\"R3\",\"R4\",\"R5\"");
    CHECK_STR(r.errors[3].path, "/x");
    CHECK_STR(r.errors[3].keyword, "additionalProperties");
    CHECK_CONTAINS(buf, "/rank: must be one of \"R1\",\"R2\",\"R3\",\"R4\",\"R5\"; /x: ");
    CHECK(!r.truncated);

    /* a prefix, and a missing property reported on its object */
    cJSON *inst = cJSON_Parse("{\"rank\":\"R6\"}");
    CHECK_INT(bus_schema_validate_at(s, inst, "/data", &r), BUS_EINVALID);
    CHECK_INT(r.count, 2);
    CHECK_STR(r.errors[0].path, "/data");
    CHECK_STR(r.errors[0].keyword, "required");
    CHECK_STR(r.errors[0].message, "must have required property \"fid\"");
    CHECK_STR(r.errors[1].path, "/data/rank");
    bus_schema_result_format(&r, buf, sizeof buf);
    CHECK_STR(buf, "/data: must have required property \"fid\"; /data/rank: must be one of \"R1\",\"R2\",\"R3\",\"R4\",\"R5\"");
    cJSON_Delete(inst);

    /* the root is shown as (root); items paths are indices; ~ and / escaped */
    CHECK(!is_valid(s, "[]", &r));
    bus_schema_error_format(&r.errors[0], buf, sizeof buf);
    CHECK_STR(buf, "(root): must be object");
    CHECK(!is_valid(s, "{\"fid\":1,\"rank\":\"R1\",\"tags\":[\"a\",2,\"c\",4]}", &r));
    CHECK_INT(r.count, 2);
    CHECK_STR(r.errors[0].path, "/tags/1");
    CHECK_STR(r.errors[0].message, "must be string");
    CHECK_STR(r.errors[1].path, "/tags/3");
    CHECK(!is_valid(s, "{\"fid\":1,\"rank\":\"R1\",\"a/b~\":1}", &r));
    CHECK_STR(r.errors[0].path, "/a~1b~0");
    /* formatting into a small buffer is safe and reports the needed size */
    char small[8];
    size_t need = bus_schema_result_format(&r, small, sizeof small);
    CHECK(need > sizeof small);
    CHECK_INT(strlen(small), sizeof small - 1);
    bus_schema_free(s);

    /* type lists and numbers */
    s = compile_text("{\"type\":[\"string\",\"null\"]}");
    CHECK(!is_valid(s, "1", &r));
    CHECK_STR(r.errors[0].message, "must be string or null");
    bus_schema_free(s);
    s = compile_text("{\"multipleOf\":0.5,\"exclusiveMaximum\":1.25}");
    CHECK(!is_valid(s, "1.3", &r));
    CHECK_INT(r.count, 2);
    CHECK_STR(r.errors[0].message, "must be a multiple of 0.5");
    CHECK_STR(r.errors[1].message, "must be < 1.25");
    bus_schema_free(s);
}

static void test_error_order_and_cap(void) {
    /* indices sort numerically: /10 after /2 */
    bus_schema_t *s = compile_text("{\"items\":{\"type\":\"integer\"}}");
    static bus_schema_result_t r;
    CHECK(!is_valid(s, "[0,0,\"a\",0,0,0,0,0,0,0,\"b\"]", &r));
    CHECK_INT(r.count, 2);
    CHECK_STR(r.errors[0].path, "/2");
    CHECK_STR(r.errors[1].path, "/10");
    /* a huge bad document: at most BUS_SCHEMA_MAX_ERRORS failures, truncated set */
    size_t n = 100000;
    char *big = malloc(n * 4 + 8);
    size_t k = 0;
    big[k++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i) big[k++] = ',';
        memcpy(big + k, "\"x\"", 3);
        k += 3;
    }
    big[k++] = ']';
    big[k] = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CHECK(!is_valid(s, big, &r));
    clock_gettime(CLOCK_MONOTONIC, &b);
    CHECK_INT(r.count, BUS_SCHEMA_MAX_ERRORS);
    CHECK(r.truncated);
    CHECK_STR(r.errors[0].path, "/0");
    CHECK_STR(r.errors[19].path, "/19");
    char buf[4096];
    bus_schema_result_format(&r, buf, sizeof buf);
    CHECK(strlen(buf) > 5 && strcmp(buf + strlen(buf) - 5, "; ...") == 0);
    free(big);
    bus_schema_free(s);

    /* same document, same schema: the same list every time */
    s = compile_text("{\"required\":[\"z\",\"a\"],\"properties\":{\"b\":{\"type\":\"string\"},\"a\":{\"type\":\"string\"}},"
                     "\"minProperties\":9}");
    static bus_schema_result_t r2;
    CHECK(!is_valid(s, "{\"b\":1,\"c\":2}", &r));
    CHECK(!is_valid(s, "{\"b\":1,\"c\":2}", &r2));
    CHECK_INT(r.count, 4);
    CHECK_INT(r.count, r2.count);
    for (size_t i = 0; i < r.count; i++) {
        CHECK_STR(r.errors[i].path, r2.errors[i].path);
        CHECK_STR(r.errors[i].message, r2.errors[i].message);
    }
    /* root failures in rule order, then /b */
    CHECK_STR(r.errors[0].keyword, "minProperties");
    CHECK_STR(r.errors[1].message, "must have required property \"z\"");
    CHECK_STR(r.errors[2].message, "must have required property \"a\"");
    CHECK_STR(r.errors[3].path, "/b");
    bus_schema_free(s);
}

/* ---- broken schemas are refused at load, with the place ---- */

/* draft-07 ignores every sibling of $ref, so a broken sibling (even a
 * broken $id) is no error: the compiler does not look at them. */
static void test_ref_siblings_unchecked(void) {
    RUN("ref siblings",
        {"{\"definitions\":{\"r\":{\"type\":\"integer\"}},"
         "\"properties\":{\"x\":{\"$ref\":\"#/definitions/r\",\"maximum\":\"1\",\"$id\":7,\"items\":3}}}",
         "{\"x\":5}", 1},
        {"{\"definitions\":{\"r\":{\"type\":\"integer\"}},"
         "\"properties\":{\"x\":{\"$ref\":\"#/definitions/r\",\"maximum\":\"1\",\"$id\":7,\"items\":3}}}",
         "{\"x\":\"5\"}", 0});
}

static void expect_broken(const char *schema, const char *want) {
    cJSON *j = cJSON_Parse(schema);
    CHECK(j != NULL);
    bus_schema_t *s = NULL;
    char err[512] = "";
    int rc = bus_schema_compile(j, "urn:test", &s, err, sizeof err);
    cJSON_Delete(j);
    if (rc != BUS_EINVALID) fprintf(stderr, "  schema %s compiled (rc %d)\n", schema, rc);
    CHECK_INT(rc, BUS_EINVALID);
    CHECK(s == NULL);
    CHECK_CONTAINS(err, want);
}

static void test_broken_schemas(void) {
    expect_broken("{\"properties\":{\"rank\":{\"enum\":\"R1\"}}}", "urn:test: /properties/rank/enum: must be an array");
    expect_broken("{\"type\":\"integr\"}", "/type: unknown type \"integr\"");
    expect_broken("{\"type\":[]}", "/type: must not be an empty array");
    expect_broken("{\"type\":[\"string\",\"string\"]}", "/type: type \"string\" is listed twice");
    expect_broken("{\"minLength\":-1}", "/minLength: must be a non-negative integer");
    expect_broken("{\"maxItems\":1.5}", "/maxItems: must be a non-negative integer");
    expect_broken("{\"multipleOf\":0}", "/multipleOf: must be greater than 0");
    expect_broken("{\"maximum\":\"3\"}", "/maximum: must be a number");
    expect_broken("{\"pattern\":\"(\"}", "/pattern: invalid regular expression");
    expect_broken("{\"patternProperties\":{\"[\":{}}}", "/patternProperties/[: invalid regular expression");
    expect_broken("{\"items\":[{\"type\":1}]}", "/items/0/type:");
    expect_broken("{\"items\":3}", "/items: must be a schema");
    expect_broken("{\"required\":[\"a\",\"a\"]}", "/required: \"a\" is listed twice");
    expect_broken("{\"required\":\"a\"}", "/required: must be an array");
    expect_broken("{\"required\":[\"a\",2]}", "/required: must be an array of unique strings");
    expect_broken("{\"properties\":[]}", "/properties: must be an object of schemas");
    expect_broken("{\"patternProperties\":\"x\"}", "/patternProperties: must be an object of schemas");
    expect_broken("{\"dependencies\":[\"a\"]}", "/dependencies: must be an object");
    expect_broken("{\"properties\":{\"a\":{\"required\":{}}}}", "/properties/a/required: must be an array");
    expect_broken("{\"anyOf\":[]}", "/anyOf: must be a non-empty array");
    expect_broken("{\"allOf\":{}}", "/allOf: must be a non-empty array");
    expect_broken("{\"dependencies\":{\"a\":[1]}}", "/dependencies/a: must be a schema or an array of strings");
    expect_broken("{\"definitions\":{\"x\":{\"not\":5}}}", "/definitions/x/not: must be a schema");
    expect_broken("{\"uniqueItems\":1}", "/uniqueItems: must be a boolean");
    expect_broken("{\"format\":1}", "/format: must be a string");
    expect_broken("5", "(root): must be a schema");
    expect_broken("{\"$ref\":\"#/definitions/missing\"}", "/$ref: \"#/definitions/missing\": the pointer leads nowhere");
    expect_broken("{\"$ref\":\"other.json\"}", "cannot resolve \"other.json\"");
    expect_broken("{\"$ref\":\"#nope\"}", "no such anchor");
    /* loops that never reach a deeper instance could not terminate */
    expect_broken("{\"$ref\":\"#\"}", "$ref loop");
    expect_broken("{\"allOf\":[{\"$ref\":\"#\"}]}", "$ref loop");
    expect_broken("{\"definitions\":{\"a\":{\"$ref\":\"#/definitions/b\"},\"b\":{\"anyOf\":[{\"$ref\":\"#/definitions/a\"}]}},\"$ref\":\"#/definitions/a\"}",
                  "$ref loop");
    expect_broken("{\"definitions\":{\"a\":{\"$id\":\"#x\"},\"b\":{\"$id\":\"#x\"}}}", "duplicate $id");
}

/* ---- thread safety: one compiled schema, many threads ---- */

static bus_schema_t *shared;
static void *thread_main(void *arg) {
    long bad = 0;
    bus_schema_result_t *r = malloc(sizeof *r);
    cJSON *good = cJSON_Parse("{\"name\":\"abc-12\",\"ip\":\"10.0.0.1\",\"n\":[1,2,3]}");
    cJSON *wrong = cJSON_Parse("{\"name\":\"ABC\",\"ip\":\"10.0.0\",\"n\":[1,1]}");
    for (int i = 0; i < 3000; i++) {
        if (bus_schema_validate(shared, good, r) != 0) bad++;
        if (bus_schema_validate(shared, wrong, r) != BUS_EINVALID || r->count != 3) bad++;
        else if (strcmp(r->errors[0].path, "/ip") || strcmp(r->errors[1].path, "/n") ||
                 strcmp(r->errors[2].path, "/name"))
            bad++;
    }
    cJSON_Delete(good);
    cJSON_Delete(wrong);
    free(r);
    (void)arg;
    return (void *)bad;
}

static void test_threads(void) {
    shared = compile_text("{\"properties\":{\"name\":{\"pattern\":\"^[a-z]+-[0-9]+$\"},\"ip\":{\"format\":\"ipv4\"},"
                          "\"n\":{\"uniqueItems\":true}}}");
    pthread_t t[6];
    for (int i = 0; i < 6; i++) CHECK(pthread_create(&t[i], NULL, thread_main, NULL) == 0);
    for (int i = 0; i < 6; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        CHECK_INT((long)ret, 0);
    }
    bus_schema_free(shared);
}

static void test_pathological(void) {
    /* exponential branching is cut by the work budget, not by a hang */
    char schema[4096];
    size_t k = (size_t)snprintf(schema, sizeof schema, "{\"definitions\":{\"d0\":{\"type\":\"integer\",\"maximum\":0}");
    for (int i = 1; i <= 40; i++)
        k += (size_t)snprintf(schema + k, sizeof schema - k,
                              ",\"d%d\":{\"anyOf\":[{\"$ref\":\"#/definitions/d%d\"},{\"$ref\":\"#/definitions/d%d\"}]}", i,
                              i - 1, i - 1);
    snprintf(schema + k, sizeof schema - k, "},\"$ref\":\"#/definitions/d40\"}");
    bus_schema_t *s = compile_text(schema);
    static bus_schema_result_t r;
    CHECK(!is_valid(s, "1", &r));
    CHECK_STR(r.errors[r.count - 1].keyword, "limit");
    CHECK(is_valid(s, "0", &r)); /* the first branch succeeds at once */
    bus_schema_free(s);
    /* catastrophic backtracking is bounded by the match limit */
    s = compile_text("{\"pattern\":\"^(a+)+$\"}");
    CHECK(!is_valid(s, "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab\"", &r));
    bus_schema_free(s);
    /* invalid UTF-8 in an instance string cannot crash the matcher */
    s = compile_text("{\"pattern\":\"^a\",\"maxLength\":3}");
    cJSON *inst = cJSON_CreateString("a\xff\xfe");
    CHECK_INT(bus_schema_validate(s, inst, &r), BUS_EINVALID);
    CHECK_STR(r.errors[0].keyword, "pattern");
    cJSON_Delete(inst);
    bus_schema_free(s);
}

static void test_compile_copies(void) {
    /* the schema keeps its own copy: the caller may free the document */
    cJSON *j = cJSON_Parse("{\"$id\":\"http://x.test/a.json\",\"enum\":[\"a\"]}");
    bus_schema_t *s = NULL;
    char err[256];
    CHECK_INT(bus_schema_compile(j, NULL, &s, err, sizeof err), 0);
    cJSON_Delete(j);
    static bus_schema_result_t r;
    CHECK(is_valid(s, "\"a\"", &r));
    CHECK(!is_valid(s, "\"b\"", &r));
    CHECK_STR(bus_schema_uri(s), "http://x.test/a.json");
    CHECK(cJSON_IsArray(cJSON_GetObjectItem(bus_schema_json(s), "enum")));
    bus_schema_free(s);
    bus_schema_free(NULL);
    CHECK_INT(bus_schema_validate(NULL, NULL, &r), BUS_EINVALID);
}

BUS_TESTS({"type", test_type, 10}, {"enum_const", test_enum_const, 10}, {"numbers", test_numbers, 10},
          {"strings", test_strings, 10}, {"arrays", test_arrays, 10}, {"objects", test_objects, 10},
          {"combinators", test_combinators, 10}, {"boolean_schemas", test_boolean_schemas, 10},
          {"refs", test_refs, 10}, {"ref_siblings_unchecked", test_ref_siblings_unchecked, 10},
          {"formats", test_formats, 10}, {"messages", test_messages, 10},
          {"error_order_and_cap", test_error_order_and_cap, 20}, {"broken_schemas", test_broken_schemas, 10},
          {"threads", test_threads, 60}, {"pathological", test_pathological, 30},
          {"compile_copies", test_compile_copies, 10})
