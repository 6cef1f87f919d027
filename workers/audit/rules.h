/* The RBAC rules of bus-audit: permissions, roles, scopes and decisions.
 * Pure functions on JSON values the caller owns; nothing is allocated
 * except where a function says it returns a new value.
 *
 * Permissions: au_permissions[] ("all" is full access and holds every
 * other). Roles: the built-in owner, administrator (both "all") and
 * moderator (announcement.manage, giftcode.manage, event.manage), plus
 * custom roles {name: {"permissions": [...]}} defined with role_define.
 * A grant {user, role, scope} holds the role at a scope:
 *   "global"            everywhere;
 *   "state:<N>"         state N and every alliance in it (a check names the
 *                       alliance's state with `state` for this to apply);
 *   "alliance:<uuid>"   that alliance only.
 * A decision picks the strongest matching grant (owner, administrator,
 * moderator, custom; then global, state, alliance) and names it in `via`.
 */
#ifndef AU_RULES_H
#define AU_RULES_H

#include <cjson/cJSON.h>
#include <stdint.h>

extern const char *const au_permissions[];

typedef enum { AU_SCOPE_GLOBAL = 0, AU_SCOPE_STATE, AU_SCOPE_ALLIANCE } au_scope_kind_t;
typedef struct {
    au_scope_kind_t kind;
    int64_t state;
    char alliance[64];
} au_scope_t;

typedef struct {
    int allowed;
    char reason[320];
    char via_role[64];   /* "" when denied */
    char via_scope[96];
} au_decision_t;

int au_permission_known(const char *p);
int au_role_builtin(const char *name);
/* [a-z][a-z0-9_]{0,31} */
int au_role_name_valid(const char *name);
/* The built-in roles as [{name, permissions, description, builtin: true}] (new array). */
cJSON *au_builtin_roles(void);
/* 0, or -1 when s is not "global" (or NULL/""), "state:<1..99999>" or "alliance:<hex and dashes>". */
int au_scope_parse(const char *s, au_scope_t *out);
/* 1 when a grant at grant_scope applies to target (with the target alliance's state, 0 = unknown). */
int au_scope_covers(const char *grant_scope, const char *target, int64_t target_state);
/* 1 when the role (built-in, or a member of custom_roles) holds the permission. */
int au_role_grants(const char *role, const cJSON *custom_roles, const char *permission);
/* check: may `user`, holding `grants` ([{role, scope, ...}]), use `permission` at `scope`? */
void au_decide(const char *user, const cJSON *grants, const cJSON *custom_roles, const char *permission,
               const char *scope, int64_t state, au_decision_t *d);
/* may `actor` grant or revoke `role` at `scope`? owner/administrator need a
 * global owner; any other role needs role.manage covering the scope. */
void au_decide_role_change(const char *actor, const cJSON *grants, const cJSON *custom_roles, const char *role,
                           const char *scope, au_decision_t *d);

#endif
