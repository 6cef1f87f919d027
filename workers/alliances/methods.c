/* The RPC handlers of alliances.<method>.
 *
 * libbus has validated the params against schemas/rpc/alliances.<method>.json
 * before a handler runs, so fields have their types and formats here; the
 * handlers still read them defensively (missing -> "" / 0).
 *
 * State-changing methods (create, join, leave, set_rank, kick, transfer,
 * dissolve) run through libbus's bus_op (bus/include/bus/op.h: marker, load, decide, one batch, outbox);
 * each is a chain of steps: *_load launches reads, *_decide applies the
 * rules (rules.c) and plans the change. Read-only methods (get, find, list,
 * member, members) read and answer.
 *
 * Answers: `not_found` for a missing alliance or membership,
 * `permission_denied` "rule: ..." for a rule, `conflict` for a name taken,
 * a user already in an alliance, or a lost race.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alliances.h"
#include "bus/error.h"
#include "bus/log.h"
#include "rules.h"

#define PARAM(op, name) al_doc_str(bus_op_params(op), name)

static cJSON *obj_str(cJSON *o, const char *k, const char *v) {
    cJSON_AddStringToObject(o, k, v);
    return o;
}

/* ---- create ---------------------------------------------------------------- */

static void create_decide(bus_op_t *op) {
    const char *name = PARAM(op, "name"), *leader = PARAM(op, "leader");
    int64_t state = al_doc_int(bus_op_params(op), "state");
    if (cJSON_GetArraySize(AL(op)->members) > 0) {
        bus_op_fail(op, BUS_ECONFLICT, "an alliance named \"%s\" already exists in state %lld", name, (long long)state);
        return;
    }
    if (AL(op)->m_user && AL(op)->other) {
        bus_op_fail(op, BUS_ECONFLICT, "the leader %s is already in an alliance (%s)", leader,
                   al_doc_str(AL(op)->m_user, "alliance"));
        return;
    }
    if (AL(op)->m_user) /* a stale membership of a dissolved alliance */
        bus_op_plan_delete(op, AL_COLL_MEMBERS, leader, al_doc_version(AL(op)->m_user));

    char id[37], now[32], key[256];
    bus_uuid(id);
    bus_now_rfc3339(now);
    al_name_key(name, key, sizeof key);
    const char *lang = PARAM(op, "language");
    cJSON *a = cJSON_CreateObject();
    obj_str(a, "name", name);
    obj_str(a, "name_key", key);
    obj_str(a, "tag", PARAM(op, "tag"));
    cJSON_AddNumberToObject(a, "state", (double)state);
    obj_str(a, "language", lang[0] ? lang : "en");
    obj_str(a, "leader", leader);
    cJSON_AddNumberToObject(a, "member_count", 1);
    cJSON *ranks = cJSON_AddObjectToObject(a, "ranks");
    for (int r = AL_RANK_MIN; r <= AL_RANK_MAX; r++) cJSON_AddNumberToObject(ranks, al_rank_name(r), r == 5);
    obj_str(a, "created_at", now);
    cJSON_AddNumberToObject(a, "next_seq", 2);

    cJSON *m = cJSON_CreateObject();
    obj_str(m, "alliance", id);
    obj_str(m, "user", leader);
    obj_str(m, "rank", "R5");
    obj_str(m, "joined_at", now);
    cJSON_AddNumberToObject(m, "seq", 1);
    cJSON_AddNumberToObject(m, "succ", al_succession_key(5, 1));

    cJSON_AddStringToObject(a, "_id", id); /* for the view; the store ignores it */
    cJSON *view = al_alliance_view(a);
    cJSON *ev = al_alliance_view(a);
    cJSON_DeleteItemFromObject(ev, "id");
    cJSON_DeleteItemFromObject(ev, "member_count");
    cJSON_DeleteItemFromObject(ev, "ranks");
    cJSON_AddStringToObject(ev, "alliance", id);
    cJSON_DeleteItemFromObject(a, "_id"); /* the store owns _id; it came from the id argument */
    bus_op_plan_insert(op, AL_COLL_ALLIANCES, id, a);
    bus_op_plan_insert(op, AL_COLL_MEMBERS, leader, m);
    bus_op_plan_event(op, "alliance.created", id, ev);
    bus_op_commit(op, view);
}

static void create_other(bus_op_t *op) {
    if (AL(op)->m_user) bus_op_load_doc(op, AL_COLL_ALLIANCES, al_doc_str(AL(op)->m_user, "alliance"), &AL(op)->other);
    bus_op_load_wait(op, create_decide);
}

static void create_load(bus_op_t *op) {
    char key[256];
    if (al_name_key(PARAM(op, "name"), key, sizeof key) != 0) {
        bus_op_fail(op, BUS_EINVALID, "/params/name: too long");
        return;
    }
    bus_op_load_doc(op, AL_COLL_MEMBERS, PARAM(op, "leader"), &AL(op)->m_user);
    cJSON *where = cJSON_CreateObject();
    cJSON_AddNumberToObject(where, "state", (double)al_doc_int(bus_op_params(op), "state"));
    cJSON_AddStringToObject(where, "name_key", key);
    bus_op_load_find(op, AL_COLL_ALLIANCES, where, NULL, 1, &AL(op)->members);
    bus_op_load_wait(op, create_other);
}

/* ---- join ------------------------------------------------------------------- */

static void join_decide(bus_op_t *op) {
    const char *id = PARAM(op, "id"), *user = PARAM(op, "user");
    if (AL(op)->m_user && AL(op)->other) {
        bus_op_fail(op, BUS_ECONFLICT, "%s is already in another alliance (%s); leave it first", user,
                   al_doc_str(AL(op)->m_user, "alliance"));
        return;
    }
    if (AL(op)->m_user) bus_op_plan_delete(op, AL_COLL_MEMBERS, user, al_doc_version(AL(op)->m_user)); /* stale */
    char now[32];
    bus_now_rfc3339(now);
    int64_t seq = al_doc_int(AL(op)->alliance, "next_seq");
    if (seq < 1) seq = 1;
    cJSON *m = cJSON_CreateObject();
    obj_str(m, "alliance", id);
    obj_str(m, "user", user);
    obj_str(m, "rank", "R1");
    obj_str(m, "joined_at", now);
    cJSON_AddNumberToObject(m, "seq", (double)seq);
    cJSON_AddNumberToObject(m, "succ", al_succession_key(1, seq));
    cJSON *view = al_membership_view(m);
    bus_op_plan_insert(op, AL_COLL_MEMBERS, user, m);

    cJSON *patch = cJSON_CreateObject();
    cJSON_AddNumberToObject(patch, "member_count", (double)(al_doc_int(AL(op)->alliance, "member_count") + 1));
    cJSON_AddItemToObject(patch, "ranks", al_ranks_with(AL(op)->alliance, 1, +1));
    cJSON_AddNumberToObject(patch, "next_seq", (double)(seq + 1));
    bus_op_plan_update(op, AL_COLL_ALLIANCES, id, al_doc_version(AL(op)->alliance), patch);
    bus_op_plan_event(op, "alliance.member.joined", id, cJSON_Duplicate(view, 1));
    bus_op_commit(op, view);
}

static void join_other(bus_op_t *op) {
    const char *id = PARAM(op, "id"), *user = PARAM(op, "user");
    if (!AL(op)->alliance) {
        bus_op_fail(op, BUS_ENOT_FOUND, "no alliance %s", id);
        return;
    }
    if (AL(op)->m_user && strcmp(al_doc_str(AL(op)->m_user, "alliance"), id) == 0) {
        bus_op_fail(op, BUS_ECONFLICT, "%s is already a member of this alliance", user);
        return;
    }
    if (AL(op)->m_user) bus_op_load_doc(op, AL_COLL_ALLIANCES, al_doc_str(AL(op)->m_user, "alliance"), &AL(op)->other);
    bus_op_load_wait(op, join_decide);
}

static void join_locked(bus_op_t *op) {
    bus_op_load_doc(op, AL_COLL_ALLIANCES, PARAM(op, "id"), &AL(op)->alliance);
    bus_op_load_doc(op, AL_COLL_MEMBERS, PARAM(op, "user"), &AL(op)->m_user);
    bus_op_load_wait(op, join_other);
}

static void join_load(bus_op_t *op) { bus_op_lock(op, PARAM(op, "id"), join_locked); }

/* ---- actor/user pairs: set_rank, kick, transfer ---------------------------- */

/* After m_actor and m_user: both present and in one alliance, then that
 * alliance; continues with the method's decide (pair_decide_of). */
static bus_op_step_fn pair_decide_of(const bus_op_t *op);

static void pair_locked(bus_op_t *op) {
    bus_op_load_doc(op, AL_COLL_ALLIANCES, al_doc_str(AL(op)->m_user, "alliance"), &AL(op)->alliance);
    bus_op_load_wait(op, pair_decide_of(op));
}

static void pair_alliance(bus_op_t *op) {
    if (bus_op_marker_replayed(op)) return;
    const char *actor = PARAM(op, "actor"), *user = PARAM(op, "user");
    if (!AL(op)->m_actor) {
        bus_op_fail(op, BUS_ENOT_FOUND, "the actor %s is not in an alliance", actor);
        return;
    }
    if (!AL(op)->m_user) {
        bus_op_fail(op, BUS_ENOT_FOUND, "%s is not in an alliance", user);
        return;
    }
    if (strcmp(al_doc_str(AL(op)->m_actor, "alliance"), al_doc_str(AL(op)->m_user, "alliance")) != 0) {
        bus_op_fail(op, BUS_EPERMISSION, "rule: the actor and the user must be in the same alliance");
        return;
    }
    bus_op_lock(op, al_doc_str(AL(op)->m_user, "alliance"), pair_locked);
}

static void pair_load(bus_op_t *op) {
    bus_op_load_marker(op); /* one store round trip with the two memberships */
    bus_op_load_doc(op, AL_COLL_MEMBERS, PARAM(op, "actor"), &AL(op)->m_actor);
    bus_op_load_doc(op, AL_COLL_MEMBERS, PARAM(op, "user"), &AL(op)->m_user);
    bus_op_load_wait(op, pair_alliance);
}

/* Common checks once everything is loaded; 0 to go on. */
static int pair_ready(bus_op_t *op) {
    if (!AL(op)->alliance) {
        bus_op_fail(op, BUS_ENOT_FOUND, "the alliance %s no longer exists", al_doc_str(AL(op)->m_user, "alliance"));
        return -1;
    }
    return 0;
}

static void set_rank_decide(bus_op_t *op) {
    if (pair_ready(op)) return;
    const char *actor = PARAM(op, "actor"), *user = PARAM(op, "user"), *id = al_doc_str(AL(op)->alliance, "_id");
    int ar = al_doc_rank(AL(op)->m_actor), ur = al_doc_rank(AL(op)->m_user), nr = al_rank_parse(PARAM(op, "rank"));
    char why[256];
    int rc = al_check_set_rank(ar, ur, nr, strcmp(actor, user) == 0, why, sizeof why);
    if (rc) {
        bus_op_fail(op, rc, "%s", why);
        return;
    }
    if (ur == nr) { /* already so: success, no change, no event (safe to repeat) */
        bus_op_reply(op, al_membership_view(AL(op)->m_user));
        return;
    }
    int64_t seq = al_doc_int(AL(op)->m_user, "seq");
    cJSON *patch = cJSON_CreateObject();
    cJSON_AddStringToObject(patch, "rank", al_rank_name(nr));
    cJSON_AddNumberToObject(patch, "succ", al_succession_key(nr, seq));
    bus_op_plan_update(op, AL_COLL_MEMBERS, user, al_doc_version(AL(op)->m_user), patch);
    cJSON *ap = cJSON_CreateObject();
    cJSON_AddItemToObject(ap, "ranks", al_ranks_add(al_ranks_with(AL(op)->alliance, ur, -1), nr, +1));
    bus_op_plan_update(op, AL_COLL_ALLIANCES, id, al_doc_version(AL(op)->alliance), ap);
    cJSON *ev = cJSON_CreateObject();
    obj_str(ev, "alliance", id);
    obj_str(ev, "user", user);
    obj_str(ev, "old_rank", al_rank_name(ur));
    obj_str(ev, "new_rank", al_rank_name(nr));
    obj_str(ev, "actor", actor);
    bus_op_plan_event(op, "alliance.member.rank_changed", id, ev);
    cJSON *view = al_membership_view(AL(op)->m_user);
    cJSON_ReplaceItemInObject(view, "rank", cJSON_CreateString(al_rank_name(nr)));
    bus_op_commit(op, view);
}

static void kick_decide(bus_op_t *op) {
    if (pair_ready(op)) return;
    const char *actor = PARAM(op, "actor"), *user = PARAM(op, "user"), *id = al_doc_str(AL(op)->alliance, "_id");
    int ar = al_doc_rank(AL(op)->m_actor), ur = al_doc_rank(AL(op)->m_user);
    char why[256];
    int rc = al_check_kick(ar, ur, strcmp(actor, user) == 0, why, sizeof why);
    if (rc) {
        bus_op_fail(op, rc, "%s", why);
        return;
    }
    bus_op_plan_delete(op, AL_COLL_MEMBERS, user, al_doc_version(AL(op)->m_user));
    cJSON *ap = cJSON_CreateObject();
    cJSON_AddNumberToObject(ap, "member_count", (double)(al_doc_int(AL(op)->alliance, "member_count") - 1));
    cJSON_AddItemToObject(ap, "ranks", al_ranks_with(AL(op)->alliance, ur, -1));
    bus_op_plan_update(op, AL_COLL_ALLIANCES, id, al_doc_version(AL(op)->alliance), ap);
    cJSON *ev = al_membership_view(AL(op)->m_user);
    cJSON_DeleteItemFromObject(ev, "joined_at");
    obj_str(ev, "actor", actor);
    bus_op_plan_event(op, "alliance.member.kicked", id, cJSON_Duplicate(ev, 1));
    bus_op_commit(op, ev);
}

static void transfer_decide(bus_op_t *op) {
    if (pair_ready(op)) return;
    const char *actor = PARAM(op, "actor"), *user = PARAM(op, "user"), *id = al_doc_str(AL(op)->alliance, "_id");
    int ar = al_doc_rank(AL(op)->m_actor), ur = al_doc_rank(AL(op)->m_user);
    char why[256];
    int rc = al_check_transfer(ar, strcmp(actor, user) == 0, why, sizeof why);
    if (rc) {
        bus_op_fail(op, rc, "%s", why);
        return;
    }
    cJSON *pa = cJSON_CreateObject();
    cJSON_AddStringToObject(pa, "rank", "R4");
    cJSON_AddNumberToObject(pa, "succ", al_succession_key(4, al_doc_int(AL(op)->m_actor, "seq")));
    bus_op_plan_update(op, AL_COLL_MEMBERS, actor, al_doc_version(AL(op)->m_actor), pa);
    cJSON *pu = cJSON_CreateObject();
    cJSON_AddStringToObject(pu, "rank", "R5");
    cJSON_AddNumberToObject(pu, "succ", al_succession_key(5, al_doc_int(AL(op)->m_user, "seq")));
    bus_op_plan_update(op, AL_COLL_MEMBERS, user, al_doc_version(AL(op)->m_user), pu);
    cJSON *ap = cJSON_CreateObject();
    cJSON_AddStringToObject(ap, "leader", user);
    cJSON_AddItemToObject(ap, "ranks", al_ranks_add(al_ranks_with(AL(op)->alliance, ur, -1), 4, +1));
    bus_op_plan_update(op, AL_COLL_ALLIANCES, id, al_doc_version(AL(op)->alliance), ap);
    cJSON *ev = cJSON_CreateObject();
    obj_str(ev, "alliance", id);
    obj_str(ev, "old_leader", actor);
    obj_str(ev, "new_leader", user);
    obj_str(ev, "reason", "transfer");
    obj_str(ev, "new_leader_previous_rank", al_rank_name(ur));
    obj_str(ev, "old_leader_rank", "R4");
    bus_op_plan_event(op, "alliance.leader.changed", id, cJSON_Duplicate(ev, 1));
    cJSON_DeleteItemFromObject(ev, "reason");
    bus_op_commit(op, ev);
}

static bus_op_step_fn pair_decide_of(const bus_op_t *op) {
    if (strcmp(bus_op_method(op), "set_rank") == 0) return set_rank_decide;
    if (strcmp(bus_op_method(op), "kick") == 0) return kick_decide;
    return transfer_decide;
}

/* ---- leave (and user.forgotten) ---------------------------------------------- */

static void leave_decide(bus_op_t *op) {
    const char *user = PARAM(op, "user");
    if (!AL(op)->alliance) {
        /* the alliance was dissolved and this membership outlived it: clean up */
        cJSON *l = cJSON_CreateArray(), *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "id", user);
        cJSON_AddNumberToObject(it, "v", (double)al_doc_version(AL(op)->m_user));
        cJSON_AddItemToArray(l, it);
        al_delete_later(al_state(bus_op_worker(op)), l);
        bus_op_fail(op, BUS_ENOT_FOUND, "%s is not in an alliance", user);
        return;
    }
    const char *id = al_doc_str(AL(op)->alliance, "_id");
    int r = al_doc_rank(AL(op)->m_user);
    int64_t count = al_doc_int(AL(op)->alliance, "member_count");
    const char *reason = bus_op_event(op) ? "forgotten" : "left";
    cJSON *succ = cJSON_GetArrayItem(AL(op)->members, 0);
    cJSON *result = cJSON_CreateObject();
    obj_str(result, "alliance", id);
    obj_str(result, "user", user);
    obj_str(result, "rank", al_rank_name(r));

    bus_op_plan_delete(op, AL_COLL_MEMBERS, user, al_doc_version(AL(op)->m_user));
    cJSON *left = cJSON_Duplicate(result, 1);
    obj_str(left, "reason", reason);
    bus_op_plan_event(op, "alliance.member.left", id, left);

    if (r == AL_RANK_MAX && !succ) { /* the last member: the alliance goes */
        bus_op_plan_delete(op, AL_COLL_ALLIANCES, id, al_doc_version(AL(op)->alliance));
        cJSON *ev = cJSON_CreateObject();
        obj_str(ev, "alliance", id);
        obj_str(ev, "name", al_doc_str(AL(op)->alliance, "name"));
        cJSON_AddNumberToObject(ev, "state", (double)al_doc_int(AL(op)->alliance, "state"));
        cJSON_AddNullToObject(ev, "actor");
        obj_str(ev, "reason", "empty");
        cJSON *ms = cJSON_AddArrayToObject(ev, "members");
        cJSON_AddItemToArray(ms, cJSON_CreateString(user));
        bus_op_plan_event(op, "alliance.dissolved", id, ev);
        cJSON_AddNullToObject(result, "new_leader");
        cJSON_AddBoolToObject(result, "dissolved", 1);
    } else if (r == AL_RANK_MAX) { /* succession */
        const char *heir = al_doc_str(succ, "user");
        int hr = al_doc_rank(succ);
        cJSON *pu = cJSON_CreateObject();
        cJSON_AddStringToObject(pu, "rank", "R5");
        cJSON_AddNumberToObject(pu, "succ", al_succession_key(5, al_doc_int(succ, "seq")));
        bus_op_plan_update(op, AL_COLL_MEMBERS, heir, al_doc_version(succ), pu);
        cJSON *ap = cJSON_CreateObject();
        cJSON_AddStringToObject(ap, "leader", heir);
        cJSON_AddNumberToObject(ap, "member_count", (double)(count - 1));
        cJSON_AddItemToObject(ap, "ranks", al_ranks_with(AL(op)->alliance, hr, -1)); /* R5 count unchanged */
        bus_op_plan_update(op, AL_COLL_ALLIANCES, id, al_doc_version(AL(op)->alliance), ap);
        cJSON *ev = cJSON_CreateObject();
        obj_str(ev, "alliance", id);
        obj_str(ev, "old_leader", user);
        obj_str(ev, "new_leader", heir);
        obj_str(ev, "reason", "succession");
        obj_str(ev, "new_leader_previous_rank", al_rank_name(hr));
        bus_op_plan_event(op, "alliance.leader.changed", id, ev);
        obj_str(result, "new_leader", heir);
        cJSON_AddBoolToObject(result, "dissolved", 0);
    } else {
        cJSON *ap = cJSON_CreateObject();
        cJSON_AddNumberToObject(ap, "member_count", (double)(count - 1));
        cJSON_AddItemToObject(ap, "ranks", al_ranks_with(AL(op)->alliance, r, -1));
        bus_op_plan_update(op, AL_COLL_ALLIANCES, id, al_doc_version(AL(op)->alliance), ap);
        cJSON_AddNullToObject(result, "new_leader");
        cJSON_AddBoolToObject(result, "dissolved", 0);
    }
    bus_op_commit(op, result);
}

static void leave_locked(bus_op_t *op);

static void leave_alliance(bus_op_t *op) {
    if (!AL(op)->m_user) {
        bus_op_fail(op, BUS_ENOT_FOUND, "%s is not in an alliance", PARAM(op, "user"));
        return;
    }
    bus_op_lock(op, al_doc_str(AL(op)->m_user, "alliance"), leave_locked);
}

static void leave_locked(bus_op_t *op) {
    const char *id = al_doc_str(AL(op)->m_user, "alliance");
    bus_op_load_doc(op, AL_COLL_ALLIANCES, id, &AL(op)->alliance);
    if (al_doc_rank(AL(op)->m_user) == AL_RANK_MAX) {
        /* the heir: highest rank, then the lowest join sequence ("succ") */
        cJSON *where = cJSON_CreateObject(), *ne = cJSON_CreateObject();
        cJSON_AddStringToObject(where, "alliance", id);
        cJSON_AddStringToObject(ne, "$ne", "R5");
        cJSON_AddItemToObject(where, "rank", ne);
        bus_op_load_find(op, AL_COLL_MEMBERS, where, "succ", 1, &AL(op)->members);
    }
    bus_op_load_wait(op, leave_decide);
}

void al_leave_load(bus_op_t *op) {
    bus_op_load_doc(op, AL_COLL_MEMBERS, PARAM(op, "user"), &AL(op)->m_user);
    bus_op_load_wait(op, leave_alliance);
}

/* ---- dissolve -------------------------------------------------------------------- */

static void dissolve_decide(bus_op_t *op) {
    const char *id = PARAM(op, "id"), *actor = PARAM(op, "actor");
    bus_op_plan_delete(op, AL_COLL_ALLIANCES, id, al_doc_version(AL(op)->alliance));
    cJSON *ev = cJSON_CreateObject();
    obj_str(ev, "alliance", id);
    obj_str(ev, "name", al_doc_str(AL(op)->alliance, "name"));
    cJSON_AddNumberToObject(ev, "state", (double)al_doc_int(AL(op)->alliance, "state"));
    obj_str(ev, "actor", actor);
    obj_str(ev, "reason", "dissolved");
    cJSON *users = cJSON_AddArrayToObject(ev, "members");
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, AL(op)->members) {
        const char *u = al_doc_str(m, "user");
        cJSON_AddItemToArray(users, cJSON_CreateString(u));
        if (i++ < AL_BATCH_MEMBERS) {
            bus_op_plan_delete(op, AL_COLL_MEMBERS, u, al_doc_version(m));
        } else { /* beyond one batch: deleted right after; reads ignore them meanwhile */
            if (!AL(op)->leftover) AL(op)->leftover = cJSON_CreateArray();
            cJSON *it = cJSON_CreateObject();
            cJSON_AddStringToObject(it, "id", u);
            cJSON_AddNumberToObject(it, "v", (double)al_doc_version(m));
            cJSON_AddItemToArray(AL(op)->leftover, it);
        }
    }
    cJSON *result = cJSON_CreateObject();
    obj_str(result, "alliance", id);
    cJSON_AddNumberToObject(result, "members", cJSON_GetArraySize(users));
    bus_op_plan_event(op, "alliance.dissolved", id, ev);
    bus_op_commit(op, result);
}

static void dissolve_members(bus_op_t *op) {
    const char *id = PARAM(op, "id");
    if (!AL(op)->alliance) {
        bus_op_fail(op, BUS_ENOT_FOUND, "no alliance %s", id);
        return;
    }
    if (!AL(op)->m_actor || strcmp(al_doc_str(AL(op)->m_actor, "alliance"), id) != 0) {
        bus_op_fail(op, BUS_EPERMISSION, "rule: only the alliance's R5 may dissolve it (the actor is not a member)");
        return;
    }
    char why[256];
    int rc = al_check_dissolve(al_doc_rank(AL(op)->m_actor), why, sizeof why);
    if (rc) {
        bus_op_fail(op, rc, "%s", why);
        return;
    }
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "alliance", id);
    bus_op_load_find(op, AL_COLL_MEMBERS, where, "succ", BUS_STORE_MAX_LIMIT, &AL(op)->members);
    bus_op_load_wait(op, dissolve_decide);
}

static void dissolve_locked(bus_op_t *op) {
    bus_op_load_doc(op, AL_COLL_ALLIANCES, PARAM(op, "id"), &AL(op)->alliance);
    bus_op_load_doc(op, AL_COLL_MEMBERS, PARAM(op, "actor"), &AL(op)->m_actor);
    bus_op_load_wait(op, dissolve_members);
}

static void dissolve_load(bus_op_t *op) { bus_op_lock(op, PARAM(op, "id"), dissolve_locked); }

/* ---- read-only ------------------------------------------------------------------- */

static void get_answer(bus_op_t *op) {
    if (!AL(op)->alliance) {
        bus_op_fail(op, BUS_ENOT_FOUND, "no alliance %s", PARAM(op, "id"));
        return;
    }
    bus_op_reply(op, al_alliance_view(AL(op)->alliance));
}

static void get_load(bus_op_t *op) {
    bus_op_load_doc(op, AL_COLL_ALLIANCES, PARAM(op, "id"), &AL(op)->alliance);
    bus_op_load_wait(op, get_answer);
}

static void find_answer(bus_op_t *op) {
    cJSON *a = cJSON_GetArrayItem(AL(op)->members, 0);
    if (!a) {
        bus_op_fail(op, BUS_ENOT_FOUND, "no alliance named \"%s\" in state %lld", PARAM(op, "name"),
                   (long long)al_doc_int(bus_op_params(op), "state"));
        return;
    }
    bus_op_reply(op, al_alliance_view(a));
}

static void find_load(bus_op_t *op) {
    char key[256];
    if (al_name_key(PARAM(op, "name"), key, sizeof key) != 0) {
        bus_op_fail(op, BUS_EINVALID, "/params/name: too long");
        return;
    }
    cJSON *where = cJSON_CreateObject();
    cJSON_AddNumberToObject(where, "state", (double)al_doc_int(bus_op_params(op), "state"));
    cJSON_AddStringToObject(where, "name_key", key);
    bus_op_load_find(op, AL_COLL_ALLIANCES, where, NULL, 1, &AL(op)->members);
    bus_op_load_wait(op, find_answer);
}

static void member_answer(bus_op_t *op) {
    if (!AL(op)->m_user || !AL(op)->alliance) {
        bus_op_fail(op, BUS_ENOT_FOUND, "%s is not in an alliance", PARAM(op, "user"));
        return;
    }
    bus_op_reply(op, al_membership_view(AL(op)->m_user));
}

static void member_alliance(bus_op_t *op) {
    if (AL(op)->m_user) bus_op_load_doc(op, AL_COLL_ALLIANCES, al_doc_str(AL(op)->m_user, "alliance"), &AL(op)->alliance);
    bus_op_load_wait(op, member_answer);
}

static void member_load(bus_op_t *op) {
    bus_op_load_doc(op, AL_COLL_MEMBERS, PARAM(op, "user"), &AL(op)->m_user);
    bus_op_load_wait(op, member_alliance);
}

static void list_load(bus_op_t *op) {
    cJSON *where = cJSON_CreateObject();
    if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(bus_op_params(op), "state")))
        cJSON_AddNumberToObject(where, "state", (double)al_doc_int(bus_op_params(op), "state"));
    bus_op_reply_page(op, AL_COLL_ALLIANCES, where, "name_key", NULL, "alliances", al_alliance_view);
}

static void members_page(bus_op_t *op) {
    if (!AL(op)->alliance) {
        bus_op_fail(op, BUS_ENOT_FOUND, "no alliance %s", PARAM(op, "id"));
        return;
    }
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "alliance", PARAM(op, "id"));
    if (PARAM(op, "rank")[0]) cJSON_AddStringToObject(where, "rank", PARAM(op, "rank"));
    bus_op_reply_page(op, AL_COLL_MEMBERS, where, "succ", NULL, "members", al_membership_view);
}

static void members_load(bus_op_t *op) {
    bus_op_load_doc(op, AL_COLL_ALLIANCES, PARAM(op, "id"), &AL(op)->alliance);
    bus_op_load_wait(op, members_page);
}

/* ---- the table -------------------------------------------------------------------- */

enum { READS, CHANGES, CHANGES_MARKER_IN_LOAD };

static void run(bus_request_t *req, bus_op_step_fn load, int changes) {
    bus_op_t *op = bus_op_new_request(al_state(bus_request_worker(req))->engine, req, load);
    if (!op) {
        bus_reply_error(req, BUS_EINTERNAL, "out of memory");
        return;
    }
    if (changes == READS)
        bus_op_run(op);
    else
        bus_op_start(op, changes == CHANGES_MARKER_IN_LOAD);
}

static void on_create(bus_request_t *r) { run(r, create_load, CHANGES); }
static void on_join(bus_request_t *r) { run(r, join_load, CHANGES); }
static void on_leave(bus_request_t *r) { run(r, al_leave_load, CHANGES); }
static void on_set_rank(bus_request_t *r) { run(r, pair_load, CHANGES_MARKER_IN_LOAD); }
static void on_kick(bus_request_t *r) { run(r, pair_load, CHANGES_MARKER_IN_LOAD); }
static void on_transfer(bus_request_t *r) { run(r, pair_load, CHANGES_MARKER_IN_LOAD); }
static void on_dissolve(bus_request_t *r) { run(r, dissolve_load, CHANGES); }
static void on_get(bus_request_t *r) { run(r, get_load, READS); }
static void on_find(bus_request_t *r) { run(r, find_load, READS); }
static void on_list(bus_request_t *r) { run(r, list_load, READS); }
static void on_member(bus_request_t *r) { run(r, member_load, READS); }
static void on_members(bus_request_t *r) { run(r, members_load, READS); }

const bus_method_t al_methods[] = {
    {"create", on_create},   {"get", on_get},           {"find", on_find},         {"list", on_list},
    {"join", on_join},       {"leave", on_leave},       {"set_rank", on_set_rank}, {"kick", on_kick},
    {"transfer", on_transfer}, {"dissolve", on_dissolve}, {"member", on_member},     {"members", on_members},
    {NULL, NULL},
};
