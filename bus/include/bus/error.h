/* The platform's error model (docs/ARCHITECTURE.md, "Wire contract": Replies and errors).
 *
 * Every libbus function that can fail returns an int: 0 on success or one of
 * the negative BUS_E* codes below. Each code has a wire name ("not_found")
 * and an HTTP status (404); the same codes travel in RPC error replies and in
 * the edge's HTTP error bodies. No function here allocates.
 */
#ifndef BUS_ERROR_H
#define BUS_ERROR_H

enum {
    BUS_OK = 0,
    BUS_EBAD_REQUEST = -1,   /* bad_request       400 */
    BUS_EUNAUTHORIZED = -2,  /* unauthorized      401 */
    BUS_EPERMISSION = -3,    /* permission_denied 403 */
    BUS_ENOT_FOUND = -4,     /* not_found         404 */
    BUS_ECONFLICT = -5,      /* conflict          409 */
    BUS_EINVALID = -6,       /* invalid           422 (schema violation) */
    BUS_ERATE_LIMITED = -7,  /* rate_limited      429 */
    BUS_EINTERNAL = -8,      /* internal          500 */
    BUS_EUNAVAILABLE = -9,   /* unavailable       503 */
    BUS_ETIMEOUT = -10,      /* timeout           504 */
};
#define BUS_ERR_COUNT 11 /* including BUS_OK */

/* "not_found" for BUS_ENOT_FOUND; "internal" for anything unknown; "ok" for 0. */
const char *bus_err_name(int err);
/* HTTP status of the code: 404 for BUS_ENOT_FOUND, 500 for unknown codes, 200 for 0. */
int bus_err_status(int err);
/* A short human sentence for the code ("not found"). Static storage. */
const char *bus_strerror(int err);
/* The code of a wire name; BUS_EINTERNAL when the name is unknown. */
int bus_err_from_name(const char *name);
/* The code whose HTTP status is `status`; BUS_EINTERNAL when there is none. */
int bus_err_from_status(int status);

#endif
