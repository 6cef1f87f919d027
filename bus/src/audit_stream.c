/* Reading the audit.log stream: bus/include/bus/audit_stream.h. */
#include "bus/audit_stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cJSON *bus_audit_stream_records(const char *body, size_t len) {
    cJSON *doc = cJSON_ParseWithLength(body, len);
    if (cJSON_IsArray(doc)) return doc;
    cJSON *out = cJSON_CreateArray();
    if (!out) {
        cJSON_Delete(doc);
        return NULL;
    }
    if (cJSON_IsObject(doc)) cJSON_AddItemToArray(out, doc);
    else cJSON_Delete(doc);
    return out;
}

int bus_audit_follow_show(bus_audit_follow_t *f, const cJSON *record) {
    const cJSON *seqv = cJSON_GetObjectItemCaseSensitive(record, "seq");
    const cJSON *prev = cJSON_GetObjectItemCaseSensitive(record, "prev_hash");
    if (!cJSON_IsNumber(seqv)) return 0;
    int64_t seq = (int64_t)seqv->valuedouble;
    int new_chain = seq == 1 && f->shown && f->next_seq > 1 && cJSON_IsString(prev) && strlen(prev->valuestring) == 64 &&
                    strspn(prev->valuestring, "0") == 64;
    if (f->next_seq != 0 && seq != f->next_seq && !new_chain) return 0;
    f->next_seq = seq + 1;
    f->shown = 1;
    return 1;
}

int bus_audit_event_id(char *buf, size_t len, int64_t offset, int64_t seq) {
    return snprintf(buf, len, "%lld-%lld", (long long)offset, (long long)seq);
}

/* A run of decimal digits (no sign, no space) that fits an int64: its end, or NULL. */
static const char *digits(const char *s, int64_t *out) {
    if (*s < '0' || *s > '9') return NULL;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE) return NULL;
    *out = v;
    return end;
}

int bus_audit_event_id_parse(const char *id, int64_t *offset, int64_t *after_seq) {
    int64_t o = 0, seq = 0;
    const char *end = id ? digits(id, &o) : NULL;
    if (!end) return -1;
    if (*end == '\0') { /* a bare offset: the next message */
        if (o == INT64_MAX) return -1;
        *offset = o + 1;
        *after_seq = 0;
        return 0;
    }
    if (*end != '-' || !(end = digits(end + 1, &seq)) || *end != '\0' || seq < 1) return -1;
    *offset = o;
    *after_seq = seq;
    return 0;
}
