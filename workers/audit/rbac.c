/* RBAC: the cache of grants and roles, and the methods
 * audit.<check|grant|revoke|roles_of|role_define|roles>.
 *
 * Documents:
 *   "rbac_grants" id = "<user>|<role>|<scope>" {user, role, scope, granted_by, granted_at}
 *   "rbac_roles"  id = the custom role's name {permissions, description, defined_by, defined_at}
 *
 * The cache. A user's grants are read from the store once and kept (a hash
 * table by user) until a grant event for that user (role.granted,
 * role.revoked) or BUS_RBAC_CACHE_TTL_MS; the custom roles until a
 * role.defined event. Every process consumes those events on a queue of its
 * own (intake.c), and drops its own entry as soon as it commits a change. A
 * read that started before an invalidation answers its caller but is not
 * kept (the epoch check), so a stale read never outlives a grant event.
 *
 * Every decision (check, and the permission check inside grant, revoke and
 * role_define) is appended to the audit trail BEFORE its answer leaves: type
 * rbac.<method>, actor the user asking, subject the user/role concerned,
 * outcome allowed|denied, detail {permission, scope, via, reason, caller};
 * record id "d:<request id>", so a redelivered request adds no second record.
 *
 * The first owner: `busctl rbac bootstrap-owner USER` (bus/cli/cli_audit.c)
 * writes the grant into the store directly; there is no open method for it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "bus/log.h"
#include "rules.h"

#define NBUCKETS 4096

typedef struct entry {
    struct entry *next;
    char *user;
    cJSON *grants;
    uint64_t loaded_at;
} entry_t;

struct au_cache {
    au_state_t *st;
    entry_t *buckets[NBUCKETS];
    cJSON *roles; /* {name: {permissions, description}}; NULL until read */
    int roles_stale;
    uint64_t epoch;
};

static unsigned hash_str(const char *s) {
    unsigned h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h % NBUCKETS;
}

int au_cache_new(au_state_t *st, au_cache_t **out) {
    au_cache_t *c = calloc(1, sizeof *c);
    if (!c) return BUS_EINTERNAL;
    c->st = st;
    *out = c;
    return 0;
}

static void entry_free(entry_t *e) {
    free(e->user);
    cJSON_Delete(e->grants);
    free(e);
}

void au_cache_free(au_cache_t *c) {
    if (!c) return;
    for (int i = 0; i < NBUCKETS; i++)
        for (entry_t *e = c->buckets[i], *n; e; e = n) {
            n = e->next;
            entry_free(e);
        }
    cJSON_Delete(c->roles);
    free(c);
}

static void cache_drop(au_cache_t *c, const char *user) {
    entry_t **pp = &c->buckets[hash_str(user)];
    while (*pp) {
        if (strcmp((*pp)->user, user) == 0) {
            entry_t *e = *pp;
            *pp = e->next;
            entry_free(e);
            return;
        }
        pp = &(*pp)->next;
    }
}

void au_cache_invalidate(au_cache_t *c, const char *user) {
    c->epoch++;
    if (!user) { /* roles changed: every decision may change */
        cJSON_Delete(c->roles);
        c->roles = NULL;
        return;
    }
    cache_drop(c, user);
}

void au_cache_invalidate_all(au_cache_t *c) {
    c->epoch++;
    for (int i = 0; i < NBUCKETS; i++)
        for (entry_t *e = c->buckets[i], *n; e; e = n) {
            n = e->next;
            entry_free(e);
        }
    memset(c->buckets, 0, sizeof c->buckets);
    cJSON_Delete(c->roles);
    c->roles = NULL;
}

static const cJSON *cache_get(au_cache_t *c, const char *user) {
    uint64_t now = uv_now(bus_worker_loop(c->st->w));
    for (entry_t *e = c->buckets[hash_str(user)]; e; e = e->next)
        if (strcmp(e->user, user) == 0) {
            if (now - e->loaded_at > (uint64_t)c->st->cache_ttl_ms) {
                cache_drop(c, user);
                return NULL;
            }
            return e->grants;
        }
    return NULL;
}

static void cache_put(au_cache_t *c, const char *user, const cJSON *grants) {
    entry_t *e = calloc(1, sizeof *e);
    if (!e || !(e->user = strdup(user)) || !(e->grants = cJSON_Duplicate(grants, 1))) {
        if (e) free(e->user);
        free(e);
        return;
    }
    e->loaded_at = uv_now(bus_worker_loop(c->st->w));
    unsigned b = hash_str(user);
    e->next = c->buckets[b];
    c->buckets[b] = e;
}

/* ---- reading a user's grants and the roles ------------------------------------ */

typedef void (*grants_cb)(int status, const cJSON *grants, const cJSON *roles, void *data);

typedef struct {
    au_cache_t *c;
    char *user;
    uint64_t epoch;
    cJSON *grants;
    int roles_read;
    grants_cb cb;
    void *data;
} lookup_t;

static void lookup_finish(lookup_t *l, int status) {
    l->cb(status, l->grants, l->c->roles, l->data);
    cJSON_Delete(l->grants);
    free(l->user);
    free(l);
}

static void lookup_step(lookup_t *l);

static void on_roles(int status, const cJSON *docs, const char *next, void *data) {
    (void)next;
    lookup_t *l = data;
    if (status != 0) {
        lookup_finish(l, status);
        return;
    }
    cJSON *roles = cJSON_CreateObject();
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        cJSON *r = cJSON_CreateObject();
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(d, "permissions");
        cJSON_AddItemToObject(r, "permissions", p ? cJSON_Duplicate(p, 1) : cJSON_CreateArray());
        cJSON_AddStringToObject(r, "description", au_str(d, "description"));
        cJSON_AddItemToObject(roles, au_str(d, "_id"), r);
    }
    cJSON_Delete(l->c->roles);
    l->c->roles = roles;
    /* a role.defined arrived meanwhile: this answer uses what was read, the next reads again */
    l->c->roles_stale = l->epoch != l->c->epoch;
    l->roles_read = 1;
    lookup_step(l);
}

static void on_grants(int status, const cJSON *docs, const char *next, void *data) {
    (void)next;
    lookup_t *l = data;
    if (status != 0) {
        lookup_finish(l, status);
        return;
    }
    l->grants = cJSON_Duplicate(docs, 1);
    if (l->epoch == l->c->epoch) cache_put(l->c, l->user, docs);
    lookup_step(l);
}

static void lookup_step(lookup_t *l) {
    au_cache_t *c = l->c;
    if ((!c->roles || c->roles_stale) && !l->roles_read) {
        bus_store_query_t q = {.limit = BUS_STORE_MAX_LIMIT};
        l->epoch = c->epoch;
        if (bus_store_find(c->st->store, AU_COLL_ROLES, &q, on_roles, l) != 0) lookup_finish(l, BUS_EUNAVAILABLE);
        return;
    }
    if (!l->grants) {
        const cJSON *g = cache_get(c, l->user);
        if (g) {
            l->grants = cJSON_Duplicate(g, 1);
        } else {
            cJSON *where = cJSON_CreateObject();
            cJSON_AddStringToObject(where, "user", l->user);
            bus_store_query_t q = {.where = where, .limit = BUS_STORE_MAX_LIMIT};
            l->epoch = c->epoch;
            int rc = bus_store_find(c->st->store, AU_COLL_GRANTS, &q, on_grants, l);
            cJSON_Delete(where);
            if (rc != 0) lookup_finish(l, BUS_EUNAVAILABLE);
            return;
        }
    }
    lookup_finish(l, 0);
}

/* cb gets the user's grants and the custom roles (valid during cb), now
 * when both are cached, else after the store answered. */
static void lookup(au_cache_t *c, const char *user, grants_cb cb, void *data) {
    if (c->roles && !c->roles_stale) { /* the fast path: no allocation but the copy of the grants */
        const cJSON *g = cache_get(c, user);
        if (g) {
            cb(0, g, c->roles, data);
            return;
        }
    }
    lookup_t *l = calloc(1, sizeof *l);
    if (!l || !(l->user = strdup(user))) {
        free(l);
        cb(BUS_EINTERNAL, NULL, NULL, data);
        return;
    }
    l->c = c;
    l->cb = cb;
    l->data = data;
    lookup_step(l);
}

/* ---- decision records ------------------------------------------------------------ */

static cJSON *decision_detail(const au_decision_t *d, const char *permission, const char *scope, int64_t state,
                              const char *caller) {
    cJSON *det = cJSON_CreateObject();
    cJSON_AddStringToObject(det, "permission", permission);
    cJSON_AddStringToObject(det, "scope", scope && *scope ? scope : "global");
    if (state > 0) cJSON_AddNumberToObject(det, "state", (double)state);
    if (d->allowed) {
        cJSON *via = cJSON_AddObjectToObject(det, "via");
        cJSON_AddStringToObject(via, "role", d->via_role);
        cJSON_AddStringToObject(via, "scope", d->via_scope);
    } else {
        cJSON_AddNullToObject(det, "via");
    }
    cJSON_AddStringToObject(det, "reason", d->reason);
    cJSON_AddStringToObject(det, "caller", caller ? caller : "");
    return det;
}

static void record_decision(au_state_t *st, const char *request_id, const char *corr, const char *type,
                            const char *actor, const char *subject, const au_decision_t *d, const char *permission,
                            const char *scope, int64_t state, const char *caller, au_recorded_cb cb, void *data) {
    char id[160];
    snprintf(id, sizeof id, "d:%s", request_id);
    cJSON *rec = au_record_new(NULL, actor, type, subject, corr, d->allowed ? "allowed" : "denied", id,
                               decision_detail(d, permission, scope, state, caller));
    au_trail_append(st->trail, id, rec, cb, data);
}

static cJSON *decision_reply(const au_decision_t *d) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddBoolToObject(r, "allowed", d->allowed);
    cJSON_AddStringToObject(r, "reason", d->reason);
    if (d->allowed) {
        cJSON *via = cJSON_AddObjectToObject(r, "via");
        cJSON_AddStringToObject(via, "role", d->via_role);
        cJSON_AddStringToObject(via, "scope", d->via_scope);
    } else {
        cJSON_AddNullToObject(r, "via");
    }
    return r;
}

/* ---- check ------------------------------------------------------------------------ */

typedef struct {
    bus_request_t *req;
    au_decision_t d;
} check_t;

static void check_recorded(int status, int64_t seq, void *data) {
    (void)seq;
    check_t *k = data;
    if (status != 0 && status != BUS_ECONFLICT)
        bus_reply_error(k->req, BUS_EUNAVAILABLE, "the decision could not be recorded; try again");
    else
        bus_reply_ok(k->req, decision_reply(&k->d));
    free(k);
}

static void check_decide(int status, const cJSON *grants, const cJSON *roles, void *data) {
    check_t *k = data;
    bus_request_t *req = k->req;
    if (status != 0) {
        bus_reply_error(req, BUS_EUNAVAILABLE, "the grants could not be read: %s", bus_strerror(status));
        free(k);
        return;
    }
    const cJSON *p = bus_request_params(req);
    const char *user = au_str(p, "user"), *perm = au_str(p, "permission"), *scope = au_str(p, "scope");
    int64_t state = au_int(p, "state");
    au_decide(user, grants, roles, perm, scope, state, &k->d);
    au_state_t *st = au_state(bus_request_worker(req));
    record_decision(st, bus_request_id(req), bus_request_correlation_id(req), "rbac.check", user, user, &k->d, perm,
                    scope, state, bus_request_caller(req), check_recorded, k);
}

static void m_check(bus_request_t *req) {
    const cJSON *p = bus_request_params(req);
    au_scope_t sc;
    if (!au_permission_known(au_str(p, "permission"))) {
        bus_reply_error(req, BUS_EINVALID, "/params/permission: unknown permission \"%s\"", au_str(p, "permission"));
        return;
    }
    if (au_scope_parse(au_str(p, "scope"), &sc) != 0) {
        bus_reply_error(req, BUS_EINVALID, "/params/scope: \"%s\" is not global, state:<N> or alliance:<id>",
                        au_str(p, "scope"));
        return;
    }
    check_t *k = calloc(1, sizeof *k);
    if (!k) {
        bus_reply_error(req, BUS_EINTERNAL, "out of memory");
        return;
    }
    k->req = req;
    lookup(au_state(bus_request_worker(req))->cache, au_str(p, "user"), check_decide, k);
}

/* ---- grant, revoke, role_define (state changes, through bus_op) -------------------- */

typedef struct {
    cJSON *existing; /* the grant or role document, when present */
    au_decision_t d;
} rb_ctx_t;

#define RB(op) ((rb_ctx_t *)bus_op_ctx(op))
#define PARAM(op, k) au_str(bus_op_params(op), k)

static const char *scope_param(bus_op_t *op) {
    const char *s = PARAM(op, "scope");
    return *s ? s : "global";
}

static void grant_id(bus_op_t *op, char *buf, size_t len) {
    snprintf(buf, len, "%s|%s|%s", PARAM(op, "user"), PARAM(op, "role"), scope_param(op));
}

static void change_decided(bus_op_t *op);

static void on_change_recorded(int status, int64_t seq, void *data) {
    (void)seq;
    bus_op_t *op = data;
    if (status != 0 && status != BUS_ECONFLICT) {
        bus_op_fail(op, BUS_EUNAVAILABLE, "the decision could not be recorded; try again");
        return;
    }
    if (!RB(op)->d.allowed) {
        bus_op_fail(op, BUS_EPERMISSION, "%s", RB(op)->d.reason);
        return;
    }
    change_decided(op);
}

static void change_actor(int status, const cJSON *grants, const cJSON *roles, void *data) {
    bus_op_t *op = data;
    if (status != 0) {
        bus_op_fail(op, BUS_EUNAVAILABLE, "the actor's grants could not be read: %s", bus_strerror(status));
        return;
    }
    const char *m = bus_op_method(op), *actor = PARAM(op, "actor");
    char type[64];
    snprintf(type, sizeof type, "rbac.%s", m);
    const char *subject;
    if (strcmp(m, "role_define") == 0) {
        au_decide(actor, grants, roles, "role.manage", "global", 0, &RB(op)->d);
        subject = PARAM(op, "name");
    } else {
        const char *role = PARAM(op, "role");
        if (!au_role_builtin(role) && !cJSON_GetObjectItemCaseSensitive(roles, role)) {
            bus_op_fail(op, BUS_ENOT_FOUND, "no role named \"%s\" (see audit.roles)", role);
            return;
        }
        au_decide_role_change(actor, grants, roles, role, scope_param(op), &RB(op)->d);
        subject = PARAM(op, "user");
    }
    bus_request_t *req = bus_op_request(op);
    record_decision(au_state(bus_op_worker(op)), bus_op_key(op), bus_op_correlation_id(op), type, actor, subject,
                    &RB(op)->d, "role.manage", strcmp(m, "role_define") == 0 ? "global" : scope_param(op), 0,
                    req ? bus_request_caller(req) : "", on_change_recorded, op);
}

static void change_loaded(bus_op_t *op) {
    lookup(au_state(bus_op_worker(op))->cache, PARAM(op, "actor"), change_actor, op);
}

static void change_load(bus_op_t *op) {
    const char *m = bus_op_method(op);
    au_scope_t sc;
    if (strcmp(m, "role_define") != 0 && au_scope_parse(PARAM(op, "scope"), &sc) != 0) {
        bus_op_fail(op, BUS_EINVALID, "/params/scope: \"%s\" is not global, state:<N> or alliance:<id>",
                    PARAM(op, "scope"));
        return;
    }
    if (strcmp(m, "role_define") == 0) {
        const char *name = PARAM(op, "name");
        if (!au_role_name_valid(name) || au_role_builtin(name)) {
            bus_op_fail(op, BUS_EINVALID, "/params/name: \"%s\" is a built-in role or not [a-z][a-z0-9_]{0,31}", name);
            return;
        }
        const cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(bus_op_params(op), "permissions")) {
            if (!cJSON_IsString(p) || !au_permission_known(p->valuestring)) {
                bus_op_fail(op, BUS_EINVALID, "/params/permissions: unknown permission \"%s\"",
                            cJSON_IsString(p) ? p->valuestring : "?");
                return;
            }
        }
        bus_op_load_doc(op, AU_COLL_ROLES, name, &RB(op)->existing);
    } else {
        char id[256];
        grant_id(op, id, sizeof id);
        bus_op_load_doc(op, AU_COLL_GRANTS, id, &RB(op)->existing);
    }
    bus_op_load_wait(op, change_loaded);
}

static void on_committed_invalidate(bus_op_t *op, void *ctx) {
    (void)ctx;
    au_state_t *st = au_state(bus_op_worker(op));
    if (strcmp(bus_op_method(op), "role_define") == 0)
        au_cache_invalidate(st->cache, NULL);
    else
        au_cache_invalidate(st->cache, PARAM(op, "user"));
}

static void change_decided(bus_op_t *op) {
    const char *m = bus_op_method(op), *actor = PARAM(op, "actor");
    char now[32], id[256];
    bus_now_rfc3339(now);
    if (strcmp(m, "role_define") == 0) {
        const char *name = PARAM(op, "name");
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddItemToObject(doc, "permissions",
                              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(bus_op_params(op), "permissions"), 1));
        cJSON_AddStringToObject(doc, "description", PARAM(op, "description"));
        cJSON_AddStringToObject(doc, "defined_by", actor);
        cJSON_AddStringToObject(doc, "defined_at", now);
        cJSON *ev = cJSON_CreateObject();
        cJSON_AddStringToObject(ev, "name", name);
        cJSON_AddItemToObject(ev, "permissions", cJSON_Duplicate(cJSON_GetObjectItem(doc, "permissions"), 1));
        cJSON_AddStringToObject(ev, "by", actor);
        cJSON_AddStringToObject(ev, "at", now);
        cJSON *view = cJSON_Duplicate(ev, 1);
        cJSON_AddStringToObject(view, "description", PARAM(op, "description"));
        if (RB(op)->existing)
            bus_op_plan_replace(op, AU_COLL_ROLES, name, au_int(RB(op)->existing, "_v"), doc);
        else
            bus_op_plan_insert(op, AU_COLL_ROLES, name, doc);
        bus_op_plan_event(op, "role.defined", name, ev);
        bus_op_commit(op, view);
        return;
    }
    const char *user = PARAM(op, "user"), *role = PARAM(op, "role"), *scope = scope_param(op);
    grant_id(op, id, sizeof id);
    int grant = strcmp(m, "grant") == 0;
    if (grant && RB(op)->existing) {
        bus_op_fail(op, BUS_ECONFLICT, "%s already holds %s at %s", user, role, scope);
        return;
    }
    if (!grant && !RB(op)->existing) {
        bus_op_fail(op, BUS_ENOT_FOUND, "%s does not hold %s at %s", user, role, scope);
        return;
    }
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "user", user);
    cJSON_AddStringToObject(ev, "role", role);
    cJSON_AddStringToObject(ev, "scope", scope);
    cJSON_AddStringToObject(ev, "by", actor);
    cJSON_AddStringToObject(ev, "at", now);
    cJSON *view = cJSON_Duplicate(ev, 1);
    if (grant) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "user", user);
        cJSON_AddStringToObject(doc, "role", role);
        cJSON_AddStringToObject(doc, "scope", scope);
        cJSON_AddStringToObject(doc, "granted_by", actor);
        cJSON_AddStringToObject(doc, "granted_at", now);
        bus_op_plan_insert(op, AU_COLL_GRANTS, id, doc);
    } else {
        bus_op_plan_delete(op, AU_COLL_GRANTS, id, au_int(RB(op)->existing, "_v"));
    }
    bus_op_plan_event(op, grant ? "role.granted" : "role.revoked", user, ev);
    bus_op_commit(op, view);
}

void au_rbac_ctx_reset(bus_op_t *op, void *ctx) {
    (void)op;
    rb_ctx_t *c = ctx;
    cJSON_Delete(c->existing);
    memset(c, 0, sizeof *c);
}

void au_rbac_committed(bus_op_t *op, void *ctx) { on_committed_invalidate(op, ctx); }
size_t au_rbac_ctx_size(void) { return sizeof(rb_ctx_t); }

static void m_change(bus_request_t *req) {
    bus_op_t *op = bus_op_new_request(au_state(bus_request_worker(req))->engine, req, change_load);
    if (!op) {
        bus_reply_error(req, BUS_EINTERNAL, "out of memory");
        return;
    }
    bus_op_start(op, 0);
}

/* ---- roles, roles_of (reads) ----------------------------------------------------------- */

static void on_roles_read(int status, const cJSON *docs, const char *next, void *data) {
    (void)next;
    bus_request_t *req = data;
    if (status != 0) {
        bus_reply_error(req, BUS_EUNAVAILABLE, "the roles could not be read: %s", bus_strerror(status));
        return;
    }
    cJSON *arr = au_builtin_roles();
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "name", au_str(d, "_id"));
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(d, "permissions");
        cJSON_AddItemToObject(r, "permissions", p ? cJSON_Duplicate(p, 1) : cJSON_CreateArray());
        cJSON_AddStringToObject(r, "description", au_str(d, "description"));
        cJSON_AddBoolToObject(r, "builtin", 0);
        cJSON_AddItemToArray(arr, r);
    }
    cJSON *out = cJSON_CreateObject();
    cJSON_AddItemToObject(out, "roles", arr);
    cJSON *perms = cJSON_AddArrayToObject(out, "permissions");
    for (size_t i = 0; au_permissions[i]; i++) cJSON_AddItemToArray(perms, cJSON_CreateString(au_permissions[i]));
    bus_reply_ok(req, out);
}

static void m_roles(bus_request_t *req) {
    bus_store_query_t q = {.limit = BUS_STORE_MAX_LIMIT};
    if (bus_store_find(au_state(bus_request_worker(req))->store, AU_COLL_ROLES, &q, on_roles_read, req) != 0)
        bus_reply_error(req, BUS_EUNAVAILABLE, "the store is closing");
}

static void on_grants_read(int status, const cJSON *docs, const char *next, void *data) {
    (void)next;
    bus_request_t *req = data;
    if (status != 0) {
        bus_reply_error(req, BUS_EUNAVAILABLE, "the grants could not be read: %s", bus_strerror(status));
        return;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "user", au_str(bus_request_params(req), "user"));
    cJSON *arr = cJSON_AddArrayToObject(out, "grants");
    const cJSON *d;
    cJSON_ArrayForEach(d, docs) {
        cJSON *g = cJSON_CreateObject();
        static const char *const f[] = {"role", "scope", "granted_by", "granted_at"};
        for (size_t i = 0; i < 4; i++) cJSON_AddStringToObject(g, f[i], au_str(d, f[i]));
        cJSON_AddItemToArray(arr, g);
    }
    bus_reply_ok(req, out);
}

static void m_roles_of(bus_request_t *req) {
    cJSON *where = cJSON_CreateObject();
    cJSON_AddStringToObject(where, "user", au_str(bus_request_params(req), "user"));
    bus_store_query_t q = {.where = where, .limit = BUS_STORE_MAX_LIMIT};
    if (bus_store_find(au_state(bus_request_worker(req))->store, AU_COLL_GRANTS, &q, on_grants_read, req) != 0)
        bus_reply_error(req, BUS_EUNAVAILABLE, "the store is closing");
    cJSON_Delete(where);
}

void au_verify(bus_request_t *req);
void au_query(bus_request_t *req);

const bus_method_t au_methods[] = {
    {"check", m_check},   {"grant", m_change},   {"revoke", m_change}, {"role_define", m_change},
    {"roles", m_roles},   {"roles_of", m_roles_of}, {"verify", au_verify}, {"query", au_query},
    {NULL, NULL},
};
