/* libFuzzer target: random bytes as an audit.log stream message body
 * (bus_audit_stream_records, then bus_audit_follow_show over what it gives)
 * and as a Last-Event-ID (bus_audit_event_id_parse). The body is an
 * exact-size heap copy, so ASan sees any over-read of a non-NUL-terminated
 * body. An accepted Last-Event-ID in the "<offset>-<seq>" form must print
 * back as itself through bus_audit_event_id (leading zeros aside).
 *
 *   make build/fuzz/fuzz_audit_stream && build/fuzz/fuzz_audit_stream -max_total_time=60
 */
#include "bus/audit_stream.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *body = malloc(size ? size : 1);
    if (!body) return 0;
    memcpy(body, data, size);
    cJSON *recs = bus_audit_stream_records(body, size);
    if (!recs || !cJSON_IsArray(recs)) abort();
    bus_audit_follow_t f = {0};
    int64_t last = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs) {
        if (bus_audit_follow_show(&f, r)) {
            if (!f.shown) abort();
            last = f.next_seq - 1;
        }
    }
    (void)last;
    cJSON_Delete(recs);
    free(body);

    char id[64];
    size_t n = size < sizeof id - 1 ? size : sizeof id - 1;
    memcpy(id, data, n);
    id[n] = '\0';
    int64_t offset = -1, after = -1;
    if (bus_audit_event_id_parse(id, &offset, &after) == 0) {
        if (offset < 0 || after < 0) abort();
        if (after > 0) {
            char back[64];
            bus_audit_event_id(back, sizeof back, offset, after);
            int64_t o2 = -1, a2 = -1;
            if (bus_audit_event_id_parse(back, &o2, &a2) != 0 || o2 != offset || a2 != after) abort();
        }
    }
    return 0;
}
