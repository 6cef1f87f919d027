/* Documents of the alliances domain.
 *
 * "alliances"   id = a UUID. {name, name_key, tag, state, language, leader,
 *               member_count, ranks: {"R1".."R5": n}, created_at, next_seq}
 *               unique (state, name_key): the name is unique per state,
 *               case-insensitively, by the store itself.
 * "memberships" id = the user id, so "one alliance per user" is the store's
 *               id uniqueness. {alliance, user, rank, joined_at, seq, succ}
 *               seq: the join sequence within the alliance (from the
 *               alliance's next_seq); succ: al_succession_key(rank, seq),
 *               the order of succession and of member lists.
 *
 * Every change to an alliance's members also updates the alliance document
 * (member_count, ranks, next_seq, leader) at the version read, so all changes
 * to one alliance are serialised by that version: a decision made on a
 * snapshot only commits if nothing in the alliance changed meanwhile.
 */
#include <stdlib.h>
#include <string.h>

#include "alliances.h"
#include "bus/error.h"
#include "bus/log.h"
#include "rules.h"

int al_store_declare(bus_store_t *s, char *err, size_t errlen) {
    static const char *const a_idx[] = {"state,name_key", "name_key", NULL};
    static const char *const a_uniq[] = {"state,name_key", NULL};
    static const char *const m_idx[] = {"alliance,succ", "alliance,rank,succ", NULL};
    int rc = bus_store_declare(s, AL_COLL_ALLIANCES, a_idx, a_uniq, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, AL_COLL_MEMBERS, m_idx, NULL, err, errlen);
    return rc;
}

const char *al_doc_str(const cJSON *doc, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsString(v) ? v->valuestring : "";
}

int64_t al_doc_int(const cJSON *doc, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

int64_t al_doc_version(const cJSON *doc) { return al_doc_int(doc, "_v"); }

int al_doc_rank(const cJSON *m) { return al_rank_parse(al_doc_str(m, "rank")); }

static void copy_field(cJSON *to, const cJSON *from, const char *field, const char *as) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, field);
    cJSON_AddItemToObject(to, as ? as : field, v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
}

cJSON *al_alliance_view(const cJSON *doc) {
    cJSON *o = cJSON_CreateObject();
    copy_field(o, doc, "_id", "id");
    static const char *const f[] = {"name", "tag", "state", "language", "leader", "member_count", "ranks",
                                    "created_at"};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) copy_field(o, doc, f[i], NULL);
    return o;
}

cJSON *al_membership_view(const cJSON *doc) {
    cJSON *o = cJSON_CreateObject();
    static const char *const f[] = {"alliance", "user", "rank", "joined_at"};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) copy_field(o, doc, f[i], NULL);
    return o;
}

cJSON *al_ranks_add(cJSON *ranks, int r, int delta) {
    const char *name = al_rank_name(r);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(ranks, name);
    double n = (cJSON_IsNumber(v) ? v->valuedouble : 0) + delta;
    if (n < 0) n = 0;
    if (v)
        cJSON_SetNumberValue(v, n);
    else
        cJSON_AddNumberToObject(ranks, name, n);
    return ranks;
}

cJSON *al_ranks_with(const cJSON *alliance, int r, int delta) {
    const cJSON *old = cJSON_GetObjectItemCaseSensitive(alliance, "ranks");
    cJSON *ranks = cJSON_CreateObject();
    for (int i = AL_RANK_MIN; i <= AL_RANK_MAX; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(old, al_rank_name(i));
        cJSON_AddNumberToObject(ranks, al_rank_name(i), cJSON_IsNumber(v) ? v->valuedouble : 0);
    }
    return al_ranks_add(ranks, r, delta);
}

/* ---- best-effort deletions after a large dissolve ---------------------- */

typedef struct {
    al_state_t *st;
    cJSON *list;
    int next;
} later_t;

static void later_step(later_t *l);

static void later_done(int status, void *data) {
    later_t *l = data;
    if (status != 0 && status != BUS_ENOT_FOUND && status != BUS_ECONFLICT)
        bus_warn(NULL, "deleting a membership of a dissolved alliance failed: %s (it stays stale; reads ignore it)",
                 bus_err_name(status));
    later_step(l);
}

static void later_step(later_t *l) {
    while (l->next < cJSON_GetArraySize(l->list)) {
        const cJSON *it = cJSON_GetArrayItem(l->list, l->next++);
        if (bus_store_delete(l->st->store, AL_COLL_MEMBERS, al_doc_str(it, "id"), al_doc_int(it, "v"), later_done,
                             l) == 0)
            return;
    }
    cJSON_Delete(l->list);
    free(l);
}

void al_delete_later(al_state_t *st, cJSON *list) {
    later_t *l = calloc(1, sizeof *l);
    if (!l) {
        cJSON_Delete(list);
        return;
    }
    l->st = st;
    l->list = list;
    later_step(l);
}
