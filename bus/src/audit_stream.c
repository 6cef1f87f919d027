/* Reading the audit.log stream: bus/include/bus/audit_stream.h. */
#include "bus/audit_stream.h"

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
