/* Internal: the RPC client's correlation table. Every call gets the
 * correlation id "<prefix>.<n>" (prefix random per client, n counting up);
 * a reply is matched by parsing it back. Foreign, malformed or unknown ids
 * find nothing. Entries are owned by the caller and embedded in its own
 * struct (as the first member); the table only links them. Not thread-safe
 * (one loop thread). */
#ifndef BUS_RPC_TABLE_H
#define BUS_RPC_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <uthash.h>

typedef struct bus__rpc_entry {
    uint64_t id;
    UT_hash_handle hh;
} bus__rpc_entry_t;

typedef struct bus__rpc_table {
    char prefix[24];
    size_t prefix_len;
    uint64_t next_id;
    size_t count;
    bus__rpc_entry_t *head;
} bus__rpc_table_t;

/* prefix: up to 23 characters without '.'. */
void bus__rpc_table_init(bus__rpc_table_t *t, const char *prefix);
/* Gives e a fresh id and writes its correlation id into corr (not linked yet). */
void bus__rpc_table_assign(bus__rpc_table_t *t, bus__rpc_entry_t *e, char *corr, size_t corr_len);
/* Gives e the id of `corr` when it is one of this table's ids that no
 * linked entry holds (made earlier by bus__rpc_table_assign or _make);
 * returns 1, else 0 and e is untouched. */
int bus__rpc_table_assign_made(bus__rpc_table_t *t, bus__rpc_entry_t *e, const char *corr);
/* Writes a fresh correlation id into corr without an entry (reserved for a
 * later call through bus__rpc_table_assign_made). */
void bus__rpc_table_make(bus__rpc_table_t *t, char *corr, size_t corr_len);
/* Links an assigned entry: from now on find() returns it. */
void bus__rpc_table_link(bus__rpc_table_t *t, bus__rpc_entry_t *e);
/* The entry of a correlation id, or NULL. */
bus__rpc_entry_t *bus__rpc_table_find(const bus__rpc_table_t *t, const char *corr);
void bus__rpc_table_remove(bus__rpc_table_t *t, bus__rpc_entry_t *e);
/* Any entry (for failing them all), or NULL when empty. */
bus__rpc_entry_t *bus__rpc_table_any(const bus__rpc_table_t *t);

#endif
