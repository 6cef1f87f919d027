/* The RBAC rules (pure; no I/O). See rules.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

const char *const au_permissions[] = {
    "all",                 /* full access: every permission below */
    "alliance.manage",     /* alliance management */
    "player.manage",       /* player management (verification, privacy requests) */
    "giftcode.manage",     /* gift-code management */
    "notification.manage", /* notification destinations and templates */
    "announcement.manage", /* announcements */
    "event.manage",        /* scheduled game events */
    "role.manage",         /* grant and revoke roles, define custom roles */
    "audit.read",          /* read the audit trail */
    NULL,
};

static const char *const owner_perms[] = {"all", NULL};
static const char *const admin_perms[] = {"all", NULL};
static const char *const moderator_perms[] = {"announcement.manage", "giftcode.manage", "event.manage", NULL};

static const struct {
    const char *name;
    const char *const *perms;
    const char *description;
} builtin[] = {
    {"owner", owner_perms, "the platform's owner: everything, and the only role that grants owner and administrator"},
    {"administrator", admin_perms, "everything, role management included (not owner or administrator grants)"},
    {"moderator", moderator_perms, "announcements, gift codes and scheduled events"},
};
#define NBUILTIN (sizeof builtin / sizeof builtin[0])

int au_permission_known(const char *p) {
    for (size_t i = 0; au_permissions[i]; i++)
        if (strcmp(au_permissions[i], p) == 0) return 1;
    return 0;
}

int au_role_builtin(const char *name) {
    for (size_t i = 0; i < NBUILTIN; i++)
        if (strcmp(builtin[i].name, name) == 0) return 1;
    return 0;
}

cJSON *au_builtin_roles(void) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < NBUILTIN; i++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "name", builtin[i].name);
        cJSON *p = cJSON_AddArrayToObject(r, "permissions");
        for (size_t k = 0; builtin[i].perms[k]; k++) cJSON_AddItemToArray(p, cJSON_CreateString(builtin[i].perms[k]));
        cJSON_AddStringToObject(r, "description", builtin[i].description);
        cJSON_AddBoolToObject(r, "builtin", 1);
        cJSON_AddItemToArray(arr, r);
    }
    return arr;
}

int au_role_name_valid(const char *name) {
    size_t n = strlen(name);
    if (n < 1 || n > 32 || !(name[0] >= 'a' && name[0] <= 'z')) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return 0;
    return 1;
}

int au_scope_parse(const char *s, au_scope_t *out) {
    memset(out, 0, sizeof *out);
    if (!s || !*s || strcmp(s, "global") == 0) {
        out->kind = AU_SCOPE_GLOBAL;
        return 0;
    }
    if (strncmp(s, "state:", 6) == 0) {
        char *end = NULL;
        long v = strtol(s + 6, &end, 10);
        if (s[6] < '1' || s[6] > '9' || *end || v < 1 || v > 99999) return -1;
        out->kind = AU_SCOPE_STATE;
        out->state = v;
        return 0;
    }
    if (strncmp(s, "alliance:", 9) == 0) {
        size_t n = strlen(s + 9);
        if (n < 1 || n >= sizeof out->alliance) return -1;
        for (const char *p = s + 9; *p; p++)
            if (!((*p >= 'a' && *p <= 'f') || (*p >= '0' && *p <= '9') || *p == '-')) return -1;
        out->kind = AU_SCOPE_ALLIANCE;
        snprintf(out->alliance, sizeof out->alliance, "%s", s + 9);
        return 0;
    }
    return -1;
}

int au_scope_covers(const char *grant_scope, const char *target, int64_t target_state) {
    au_scope_t g, t;
    if (au_scope_parse(grant_scope, &g) != 0 || au_scope_parse(target, &t) != 0) return 0;
    switch (g.kind) {
    case AU_SCOPE_GLOBAL: return 1;
    case AU_SCOPE_STATE:
        return (t.kind == AU_SCOPE_STATE && t.state == g.state) ||
               (t.kind == AU_SCOPE_ALLIANCE && target_state == g.state);
    case AU_SCOPE_ALLIANCE: return t.kind == AU_SCOPE_ALLIANCE && strcmp(t.alliance, g.alliance) == 0;
    }
    return 0;
}

/* 1 when the permission list (NULL-terminated C array or JSON array) holds p or "all". */
static int perms_hold(const char *const *c, const cJSON *j, const char *p) {
    for (size_t i = 0; c && c[i]; i++)
        if (strcmp(c[i], "all") == 0 || strcmp(c[i], p) == 0) return 1;
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        if (cJSON_IsString(it) && (strcmp(it->valuestring, "all") == 0 || strcmp(it->valuestring, p) == 0)) return 1;
    }
    return 0;
}

int au_role_grants(const char *role, const cJSON *custom_roles, const char *permission) {
    for (size_t i = 0; i < NBUILTIN; i++)
        if (strcmp(builtin[i].name, role) == 0) return perms_hold(builtin[i].perms, NULL, permission);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(custom_roles, role);
    return r ? perms_hold(NULL, cJSON_GetObjectItemCaseSensitive(r, "permissions"), permission) : 0;
}

static int role_rank(const char *role) {
    for (size_t i = 0; i < NBUILTIN; i++)
        if (strcmp(builtin[i].name, role) == 0) return (int)i;
    return (int)NBUILTIN;
}

static int scope_rank(const char *scope) {
    au_scope_t s;
    if (au_scope_parse(scope, &s) != 0) return 9;
    return s.kind == AU_SCOPE_GLOBAL ? 0 : s.kind == AU_SCOPE_STATE ? 1 : 2;
}

static const char *gstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

void au_decide(const char *user, const cJSON *grants, const cJSON *custom_roles, const char *permission,
               const char *scope, int64_t state, au_decision_t *d) {
    memset(d, 0, sizeof *d);
    const cJSON *best = NULL;
    const cJSON *g;
    cJSON_ArrayForEach(g, grants) {
        const char *role = gstr(g, "role"), *gs = gstr(g, "scope");
        if (!au_role_grants(role, custom_roles, permission) || !au_scope_covers(gs, scope, state)) continue;
        if (!best || role_rank(role) < role_rank(gstr(best, "role")) ||
            (role_rank(role) == role_rank(gstr(best, "role")) && scope_rank(gs) < scope_rank(gstr(best, "scope"))))
            best = g;
    }
    const char *target = scope && *scope ? scope : "global";
    if (best) {
        d->allowed = 1;
        snprintf(d->via_role, sizeof d->via_role, "%s", gstr(best, "role"));
        snprintf(d->via_scope, sizeof d->via_scope, "%s", gstr(best, "scope"));
        snprintf(d->reason, sizeof d->reason, "%s holds role %s at %s, which grants %s at %s", user, d->via_role,
                 d->via_scope, permission, target);
    } else {
        snprintf(d->reason, sizeof d->reason, "no role of %s grants %s at %s", user, permission, target);
    }
}

void au_decide_role_change(const char *actor, const cJSON *grants, const cJSON *custom_roles, const char *role,
                           const char *scope, au_decision_t *d) {
    if (au_role_builtin(role) && strcmp(role, "moderator") != 0) {
        /* owner and administrator: only a global owner hands them out or takes them back */
        const cJSON *g;
        memset(d, 0, sizeof *d);
        cJSON_ArrayForEach(g, grants) {
            if (strcmp(gstr(g, "role"), "owner") == 0 && strcmp(gstr(g, "scope"), "global") == 0) {
                d->allowed = 1;
                snprintf(d->via_role, sizeof d->via_role, "owner");
                snprintf(d->via_scope, sizeof d->via_scope, "global");
                snprintf(d->reason, sizeof d->reason, "%s is an owner, who manages the %s role", actor, role);
                return;
            }
        }
        snprintf(d->reason, sizeof d->reason, "only an owner grants or revokes the %s role; %s is not one", role,
                 actor);
        return;
    }
    au_decide(actor, grants, custom_roles, "role.manage", scope, 0, d);
}
