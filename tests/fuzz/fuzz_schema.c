/* libFuzzer target: random bytes as a (schema, instance) pair, split on the
 * first 0x00 byte (no separator: the whole input is both), through compile,
 * validate and result formatting. Nothing may crash, hang or leak. */
#include <bus/schema.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    const char *sep = memchr(text, 0, size);
    size_t slen = sep ? (size_t)(sep - text) : size;
    const char *itext = sep ? sep + 1 : text;
    size_t ilen = sep ? size - slen - 1 : size;

    cJSON *sj = cJSON_ParseWithLength(text, slen);
    if (!sj) return 0;
    bus_schema_t *s = NULL;
    char err[256];
    if (bus_schema_compile(sj, NULL, &s, err, sizeof err) == 0) {
        cJSON *ij = cJSON_ParseWithLength(itext, ilen);
        if (!ij) ij = cJSON_CreateString(itext && ilen ? "x\xff" : "");
        static bus_schema_result_t r;
        int rc = bus_schema_validate_at(s, ij, "/data", &r);
        if ((rc == 0) != (r.count == 0)) abort();
        char buf[512];
        bus_schema_result_format(&r, buf, sizeof buf);
        for (size_t i = 0; i < r.count; i++) {
            if (strncmp(r.errors[i].path, "/data", 5) != 0) abort();
            bus_schema_error_format(&r.errors[i], buf, sizeof buf);
        }
        /* the schema validates itself too: schemas are JSON documents */
        bus_schema_validate(s, sj, &r);
        cJSON_Delete(ij);
        bus_schema_free(s);
    }
    cJSON_Delete(sj);
    return 0;
}
