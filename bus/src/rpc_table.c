/* The RPC correlation table. See rpc_table.h. */
#include "rpc_table.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void bus__rpc_table_init(bus__rpc_table_t *t, const char *prefix) {
    memset(t, 0, sizeof *t);
    snprintf(t->prefix, sizeof t->prefix, "%s", prefix);
    t->prefix_len = strlen(t->prefix);
}

void bus__rpc_table_assign(bus__rpc_table_t *t, bus__rpc_entry_t *e, char *corr, size_t corr_len) {
    e->id = ++t->next_id;
    snprintf(corr, corr_len, "%s.%" PRIu64, t->prefix, e->id);
}

void bus__rpc_table_link(bus__rpc_table_t *t, bus__rpc_entry_t *e) {
    HASH_ADD(hh, t->head, id, sizeof e->id, e);
    t->count++;
}

void bus__rpc_table_make(bus__rpc_table_t *t, char *corr, size_t corr_len) {
    snprintf(corr, corr_len, "%s.%" PRIu64, t->prefix, ++t->next_id);
}

/* The number of one of this table's ids, or 0. */
static uint64_t parse_id(const bus__rpc_table_t *t, const char *corr) {
    if (!corr || strncmp(corr, t->prefix, t->prefix_len) != 0 || corr[t->prefix_len] != '.') return 0;
    const char *digits = corr + t->prefix_len + 1;
    if (!*digits || strlen(digits) > 19 || *digits == '0') return 0;
    uint64_t id = 0;
    for (const char *p = digits; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
        id = id * 10 + (uint64_t)(*p - '0');
    }
    return id;
}

int bus__rpc_table_assign_made(bus__rpc_table_t *t, bus__rpc_entry_t *e, const char *corr) {
    uint64_t id = parse_id(t, corr);
    if (id == 0 || id > t->next_id || bus__rpc_table_find(t, corr)) return 0;
    e->id = id;
    return 1;
}

bus__rpc_entry_t *bus__rpc_table_find(const bus__rpc_table_t *t, const char *corr) {
    uint64_t id = parse_id(t, corr);
    if (id == 0) return NULL;
    bus__rpc_entry_t *e = NULL;
    HASH_FIND(hh, t->head, &id, sizeof id, e);
    return e;
}

void bus__rpc_table_remove(bus__rpc_table_t *t, bus__rpc_entry_t *e) {
    HASH_DEL(t->head, e);
    t->count--;
}

bus__rpc_entry_t *bus__rpc_table_any(const bus__rpc_table_t *t) { return t->head; }
