/* The MongoDB backend of the store (being written). */
#include <stdio.h>

#include "bus/error.h"
#include "store_int.h"

static int mg_declare(void *impl, const char *coll, const char *const *idx, const char *const *uniq, char *err,
                      size_t errlen) {
    (void)impl, (void)coll, (void)idx, (void)uniq, (void)err, (void)errlen;
    return BUS_EUNAVAILABLE;
}
static void mg_exec(void *impl, bus__sreq_t *r) {
    (void)impl;
    r->status = BUS_EUNAVAILABLE;
}
static void mg_close(void *impl) { (void)impl; }
int bus__store_mongo_open(const char *uri, void **impl, char *err, size_t errlen) {
    (void)impl;
    if (err) snprintf(err, errlen, "BUS_STORE=%s: MongoDB backend not built yet", uri);
    return BUS_EUNAVAILABLE;
}
const bus__store_backend_t bus__store_mongo_backend = {"mongodb", mg_declare, mg_exec, mg_close};
