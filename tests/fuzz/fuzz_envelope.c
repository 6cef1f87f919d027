/* libFuzzer target: random bytes through bus_json_parse, bus_envelope_parse
 * and bus_envelope_parse_binary (headers carved from the input). Whatever is
 * accepted must serialise and parse back to the same attributes. Every
 * buffer handed over is an exact-size heap copy, so ASan sees any over-read
 * of a non-NUL-terminated body.
 *
 *   make build/fuzz/fuzz_envelope && build/fuzz/fuzz_envelope -max_total_time=60
 */
#include "bus/envelope.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

/* An accepted event must survive serialise -> parse unchanged. */
static void check_round_trip(const bus_envelope_t *env) {
    size_t len = 0;
    char *json = bus_envelope_serialize(env, &len);
    if (!json) abort();
    bus_envelope_t back;
    char err[256];
    if (bus_envelope_parse(json, len, &back, err, sizeof err) != 0) {
        /* Binary-mode data of depth 64 gains one level inside the event
         * object, and may push it over the size limit: the only honest
         * reasons for a refusal. */
        if (!strstr(err, "nested deeper") && !strstr(err, "larger than")) {
            fprintf(stderr, "round trip refused: %s\n%s\n", err, json);
            abort();
        }
        free(json);
        return;
    }
    if (!same_str(env->specversion, back.specversion) || !same_str(env->id, back.id) ||
        !same_str(env->source, back.source) || !same_str(env->type, back.type) ||
        !same_str(env->time, back.time) || !same_str(env->datacontenttype, back.datacontenttype) ||
        !same_str(env->subject, back.subject) || !same_str(env->dataschema, back.dataschema) ||
        !same_str(env->correlationid, back.correlationid)) {
        fprintf(stderr, "round trip changed an attribute\n%s\n", json);
        abort();
    }
    if ((env->data == NULL) != (back.data == NULL)) abort();
    bus_envelope_clear(&back);
    free(json);
}

static char *copy(const uint8_t *p, size_t n) {
    char *c = malloc(n ? n : 1);
    if (!c) abort();
    if (n) memcpy(c, p, n);
    return c;
}

#define MAX_HEADERS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    uint8_t mode = data[0], arg = data[1];
    data += 2;
    size -= 2;
    char err[256];
    bus_envelope_t env;

    switch (mode % 3) {
    case 0: { /* plain JSON with a fuzzed depth bound */
        char *body = copy(data, size);
        cJSON *doc = bus_json_parse(body, size, 1 + arg % 80, err, sizeof err);
        if (doc) {
            char *s = cJSON_PrintUnformatted(doc);
            free(s);
            cJSON_Delete(doc);
        } else if (!strstr(err, "malformed JSON at byte") && !strstr(err, "nested deeper") &&
                   !strstr(err, "not valid UTF-8 at byte")) { /* every refusal says why, and where */
            abort();
        }
        free(body);
        break;
    }
    case 1: { /* structured mode */
        char *body = copy(data, size);
        if (bus_envelope_parse(body, size, &env, err, sizeof err) == 0) {
            check_round_trip(&env);
            bus_envelope_clear(&env);
        } else if (env.id || env.data || !err[0]) {
            abort(); /* a refusal leaves env cleared and says why */
        }
        free(body);
        break;
    }
    default: { /* binary mode: [klen][vlen][key][value] records, the rest is the body */
        bus_header_t hs[MAX_HEADERS + 4];
        char *owned[2 * MAX_HEADERS];
        size_t nh = 0, nowned = 0;
        if (arg & 0x80) { /* a valid base so the fuzzer reaches data parsing */
            hs[nh++] = (bus_header_t){"ce-id", 5, "1", 1};
            hs[nh++] = (bus_header_t){"ce-source", 9, "s", 1};
            hs[nh++] = (bus_header_t){"ce-type", 7, "t", 1};
            hs[nh++] = (bus_header_t){"ce-specversion", 14, "1.0", 3};
        }
        size_t want = arg & 0x0f;
        while (want-- > 0 && nh < MAX_HEADERS + 4 && size >= 2) {
            size_t kl = data[0] % 24, vl = data[1] % 48;
            if (2 + kl + vl > size) break;
            char *k = copy(data + 2, kl), *v = copy(data + 2 + kl, vl);
            owned[nowned++] = k;
            owned[nowned++] = v;
            hs[nh++] = (bus_header_t){k, kl, v, vl};
            data += 2 + kl + vl;
            size -= 2 + kl + vl;
        }
        char *body = copy(data, size);
        if (bus_envelope_parse_binary(hs, nh, body, size, &env, err, sizeof err) == 0) {
            check_round_trip(&env);
            bus_envelope_clear(&env);
        } else if (env.id || env.data || !err[0]) {
            abort();
        }
        free(body);
        for (size_t i = 0; i < nowned; i++) free(owned[i]);
        break;
    }
    }
    return 0;
}
