/* RPC reply bodies: building and reading them. See bus/rpc.h. */
#include <stdlib.h>
#include <string.h>

#include "bus/envelope.h"
#include "bus/error.h"
#include "bus/rpc.h"

static char *print(cJSON *doc, size_t *len) {
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (s && len) *len = strlen(s);
    return s;
}

char *bus_rpc_reply_ok_json(const cJSON *data, size_t *len) {
    cJSON *doc = cJSON_CreateObject();
    if (!doc) return NULL;
    cJSON_AddBoolToObject(doc, "success", 1);
    cJSON *copy = data ? cJSON_Duplicate(data, 1) : cJSON_CreateNull();
    if (!copy) {
        cJSON_Delete(doc);
        return NULL;
    }
    cJSON_AddItemToObject(doc, "data", copy);
    return print(doc, len);
}

char *bus_rpc_reply_error_json(int err, const char *message, size_t *len) {
    cJSON *doc = cJSON_CreateObject();
    if (!doc) return NULL;
    cJSON_AddBoolToObject(doc, "success", 0);
    cJSON_AddStringToObject(doc, "error", bus_err_name(err));
    cJSON_AddStringToObject(doc, "message", message && *message ? message : bus_strerror(err));
    cJSON_AddNumberToObject(doc, "status_code", bus_err_status(err));
    return print(doc, len);
}

int bus_rpc_reply_parse(const char *body, size_t len, cJSON **doc, int *ok, const cJSON **data, int *err,
                        const char **message) {
    char why[128];
    *doc = bus_json_parse(body, len, BUS_JSON_MAX_DEPTH, why, sizeof why);
    if (!*doc) return BUS_EBAD_REQUEST;
    const cJSON *success = cJSON_GetObjectItemCaseSensitive(*doc, "success");
    if (!cJSON_IsBool(success)) {
        cJSON_Delete(*doc);
        *doc = NULL;
        return BUS_EBAD_REQUEST;
    }
    *ok = cJSON_IsTrue(success);
    if (data) *data = cJSON_GetObjectItemCaseSensitive(*doc, "data");
    if (!*ok) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(*doc, "error");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(*doc, "message");
        if (err) *err = bus_err_from_name(cJSON_IsString(code) ? code->valuestring : NULL);
        if (message) *message = cJSON_IsString(msg) ? msg->valuestring : "";
    } else {
        if (err) *err = 0;
        if (message) *message = NULL;
    }
    return 0;
}
