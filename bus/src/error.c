/* Error codes: names, HTTP statuses, human text. See bus/error.h. */
#include "bus/error.h"

#include <string.h>

typedef struct {
    int code;
    const char *name;
    int status;
    const char *text;
} error_row_t;

static const error_row_t rows[] = {
    {BUS_OK, "ok", 200, "success"},
    {BUS_EBAD_REQUEST, "bad_request", 400, "bad request"},
    {BUS_EUNAUTHORIZED, "unauthorized", 401, "unauthorized"},
    {BUS_EPERMISSION, "permission_denied", 403, "permission denied"},
    {BUS_ENOT_FOUND, "not_found", 404, "not found"},
    {BUS_ECONFLICT, "conflict", 409, "conflict"},
    {BUS_EINVALID, "invalid", 422, "schema violation"},
    {BUS_ERATE_LIMITED, "rate_limited", 429, "rate limited"},
    {BUS_EINTERNAL, "internal", 500, "internal error"},
    {BUS_EUNAVAILABLE, "unavailable", 503, "service unavailable"},
    {BUS_ETIMEOUT, "timeout", 504, "timed out"},
};

static const error_row_t *row_of(int err) {
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].code == err) return &rows[i];
    return &rows[8]; /* internal */
}

const char *bus_err_name(int err) { return row_of(err)->name; }
int bus_err_status(int err) { return row_of(err)->status; }
const char *bus_strerror(int err) { return row_of(err)->text; }

int bus_err_from_name(const char *name) {
    if (name)
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
            if (strcmp(rows[i].name, name) == 0) return rows[i].code;
    return BUS_EINTERNAL;
}

int bus_err_from_status(int status) {
    for (size_t i = 1; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].status == status) return rows[i].code;
    return BUS_EINTERNAL;
}
