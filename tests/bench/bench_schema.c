/* Benchmark: validating a typical event's data against its compiled schema,
 * next to parsing the same bytes with cJSON (the cost every consumer pays
 * anyway). The target (issue 3): validation costs less than the parse.
 *
 *   build/tests/bench/bench_schema [seconds-per-measure]
 *
 * Prints one line per measure and exits 0 (1 if the instance is unexpectedly
 * invalid, which would make the numbers meaningless).
 */
#include <bus/schema.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* An alliance.member.promoted-like event: 16 fields, a nested object, enums,
 * patterns, formats, an array. */
static const char *schema_text =
    "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"type\":\"object\","
    "\"required\":[\"alliance_id\",\"fid\",\"rank\",\"previous_rank\",\"by\",\"at\"],"
    "\"additionalProperties\":false,"
    "\"definitions\":{\"rank\":{\"type\":\"string\",\"enum\":[\"R1\",\"R2\",\"R3\",\"R4\",\"R5\"]},"
    "\"user\":{\"type\":\"string\",\"pattern\":\"^(discord|telegram):[0-9]{1,20}$\"}},"
    "\"properties\":{"
    "\"alliance_id\":{\"type\":\"string\",\"format\":\"uuid\"},"
    "\"alliance_tag\":{\"type\":\"string\",\"minLength\":3,\"maxLength\":4},"
    "\"alliance_name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":64},"
    "\"state\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":99999},"
    "\"fid\":{\"type\":\"integer\",\"minimum\":1},"
    "\"nickname\":{\"type\":\"string\",\"maxLength\":64},"
    "\"rank\":{\"$ref\":\"#/definitions/rank\"},"
    "\"previous_rank\":{\"$ref\":\"#/definitions/rank\"},"
    "\"by\":{\"$ref\":\"#/definitions/user\"},"
    "\"at\":{\"type\":\"string\",\"format\":\"date-time\"},"
    "\"reason\":{\"type\":[\"string\",\"null\"],\"maxLength\":200},"
    "\"furnace\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":84},"
    "\"auto\":{\"type\":\"boolean\"},"
    "\"platform\":{\"enum\":[\"discord\",\"telegram\",\"http\"]},"
    "\"roles\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"uniqueItems\":true,\"maxItems\":10},"
    "\"profile\":{\"type\":\"object\",\"required\":[\"kid\",\"stove_lv\"],\"properties\":{"
    "\"kid\":{\"type\":\"integer\"},\"stove_lv\":{\"type\":\"integer\",\"minimum\":1},"
    "\"avatar\":{\"type\":\"string\",\"format\":\"uri\"}}}}}";

static const char *instance_text =
    "{\"alliance_id\":\"2eb8aa08-aa98-11ea-b4aa-73b441d16380\",\"alliance_tag\":\"WOS\","
    "\"alliance_name\":\"Frost Wolves\",\"state\":2630,\"fid\":409449988,\"nickname\":\"FalteHD\","
    "\"rank\":\"R4\",\"previous_rank\":\"R3\",\"by\":\"discord:123456789012345678\","
    "\"at\":\"2026-11-23T09:15:05.123Z\",\"reason\":null,\"furnace\":35,\"auto\":false,"
    "\"platform\":\"discord\",\"roles\":[\"officer\",\"gift-codes\"],"
    "\"profile\":{\"kid\":2630,\"stove_lv\":35,\"avatar\":\"https://example.com/a/409449988.png\"}}";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    if (secs <= 0) secs = 1.0;
    char err[256];
    cJSON *sj = cJSON_Parse(schema_text);
    bus_schema_t *s = NULL;
    if (!sj || bus_schema_compile(sj, NULL, &s, err, sizeof err)) {
        fprintf(stderr, "bench_schema: schema: %s\n", sj ? err : "not JSON");
        return 1;
    }
    cJSON_Delete(sj);
    size_t len = strlen(instance_text);
    cJSON *inst = cJSON_ParseWithLengthOpts(instance_text, len, NULL, 0);
    static bus_schema_result_t r;
    if (bus_schema_validate(s, inst, &r) != 0) {
        char msg[1024];
        bus_schema_result_format(&r, msg, sizeof msg);
        fprintf(stderr, "bench_schema: the instance is invalid: %s\n", msg);
        return 1;
    }

    /* validation of the parsed document */
    long n = 0;
    double t0 = now(), t1;
    do {
        for (int i = 0; i < 1000; i++) n += bus_schema_validate(s, inst, &r) == 0;
        t1 = now();
    } while (t1 - t0 < secs);
    double vps = (double)n / (t1 - t0);

    /* parse (and free) of the same bytes */
    long p = 0;
    t0 = now();
    do {
        for (int i = 0; i < 1000; i++) {
            cJSON *j = cJSON_ParseWithLengthOpts(instance_text, len, NULL, 0);
            p += j != NULL;
            cJSON_Delete(j);
        }
        t1 = now();
    } while (t1 - t0 < secs);
    double pps = (double)p / (t1 - t0);

    printf("schema validate: %.0f validations/s (%.0f ns each, %zu-byte event, 16 fields)\n", vps, 1e9 / vps, len);
    printf("cJSON parse:     %.0f parses/s (%.0f ns each, parse + free of the same bytes)\n", pps, 1e9 / pps);
    printf("validation/parse cost ratio: %.2f (target < 1)\n", pps / vps);
    cJSON_Delete(inst);
    bus_schema_free(s);
    return 0;
}
