/* Fuzzes the store's page cursor decoder: cursors come back from clients
 * (through the HTTP edge), so any string must decode or be refused cleanly,
 * and whatever decodes must survive an encode/decode round trip. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../bus/src/store_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    cJSON *v = NULL;
    char *id = NULL;
    if (bus__store_cursor_decode(s, &v, &id) == 0) {
        char *again = bus__store_cursor_encode(v, id);
        cJSON *v2 = NULL;
        char *id2 = NULL;
        if (!again || bus__store_cursor_decode(again, &v2, &id2) != 0 || strcmp(id, id2) != 0 ||
            !cJSON_Compare(v, v2, 1))
            abort();
        cJSON_Delete(v2);
        free(id2);
        free(again);
    }
    cJSON_Delete(v);
    free(id);
    free(s);
    return 0;
}
