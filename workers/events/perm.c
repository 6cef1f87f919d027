/* Who may change scheduled events.
 *
 * An alliance's events: its R4 (officers) and its R5 (leader), asked of the
 * alliances domain over RPC (alliances.member {user} answers the user's
 * membership with its alliance and rank, or not_found), or a platform
 * moderator or administrator. A state's events (state-wide: SvS, the daily
 * reset): moderators and administrators only.
 *
 * Moderators and administrators are, until the audit domain answers
 * permission checks, the users listed in the setting BUS_EVENTS_MODERATORS
 * (a comma-separated list, e.g. "discord:1,telegram:2").
 *
 * A refusal is permission_denied "rule: ..." naming the rule; alliances not
 * answering is unavailable (the request may be retried), never a refusal.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "bus/rpc.h"
#include "events.h"

int ev_is_moderator(const ev_state_t *st, const char *user) {
    if (!user || !*user || strchr(user, ',')) return 0;
    char needle[160];
    snprintf(needle, sizeof needle, ",%s,", user);
    return strstr(st->moderators, needle) != NULL;
}

typedef struct {
    bus_op_t *op;
    char alliance[64];
} perm_call_t;

static void on_member(int status, const char *reply, size_t len, void *data) {
    perm_call_t *pc = data;
    bus_op_t *op = pc->op;
    char alliance[64];
    snprintf(alliance, sizeof alliance, "%s", pc->alliance);
    free(pc);
    const char *actor = ev_str(bus_op_params(op), "actor");
    if (status != 0) {
        bus_op_fail(op, BUS_EUNAVAILABLE, "cannot check the actor's rank: alliances did not answer (%s)",
                    bus_strerror(status));
        return;
    }
    cJSON *doc = NULL;
    int ok = 0, err = 0;
    const cJSON *d = NULL;
    const char *message = NULL;
    if (bus_rpc_reply_parse(reply, len, &doc, &ok, &d, &err, &message) != 0) {
        bus_op_fail(op, BUS_EUNAVAILABLE, "cannot check the actor's rank: alliances answered something unreadable");
        return;
    }
    if (!ok && err != BUS_ENOT_FOUND) {
        bus_op_fail(op, BUS_EUNAVAILABLE, "cannot check the actor's rank: alliances answered %s: %s",
                    bus_err_name(err), message ? message : "");
        cJSON_Delete(doc);
        return;
    }
    const char *in = ok ? ev_str(d, "alliance") : "";
    const char *rank = ok ? ev_str(d, "rank") : "";
    if (strcmp(in, alliance) != 0) {
        bus_op_fail(op, BUS_EPERMISSION,
                    "rule: only the alliance's R4 and R5, or a platform moderator, may change its events (%s is not "
                    "a member of alliance %s)",
                    actor, alliance);
    } else if (strcmp(rank, "R4") != 0 && strcmp(rank, "R5") != 0) {
        bus_op_fail(op, BUS_EPERMISSION,
                    "rule: only the alliance's R4 and R5, or a platform moderator, may change its events (%s is %s)",
                    actor, rank);
    } else {
        EV(op)->membership = cJSON_Duplicate(d, 1);
        bus_op_step_fn next = EV(op)->after_perm;
        EV(op)->after_perm = NULL;
        next(op);
    }
    cJSON_Delete(doc);
}

void ev_check_permission(bus_op_t *op, const char *alliance, bus_op_step_fn next) {
    ev_state_t *st = ev_state(bus_op_worker(op));
    const char *actor = ev_str(bus_op_params(op), "actor");
    if (ev_is_moderator(st, actor)) {
        next(op);
        return;
    }
    if (!alliance || !*alliance) {
        bus_op_fail(op, BUS_EPERMISSION,
                    "rule: only platform moderators and administrators may change a state's events (%s is neither)",
                    actor);
        return;
    }
    struct bus_rpc_client *rpc = bus_worker_rpc(bus_op_worker(op));
    perm_call_t *pc = calloc(1, sizeof *pc);
    if (!rpc || !pc) {
        free(pc);
        bus_op_fail(op, BUS_EUNAVAILABLE, "cannot check the actor's rank now (shutting down or out of memory)");
        return;
    }
    pc->op = op;
    snprintf(pc->alliance, sizeof pc->alliance, "%s", alliance);
    EV(op)->after_perm = next;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "user", actor);
    char *body = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    bus_rpc_call_opts_t o = {.correlation_id = bus_op_correlation_id(op), .caller = "bus-events"};
    int rc = body ? bus_rpc_call(rpc, "alliances", "member", body, strlen(body), &o, on_member, pc) : BUS_EINTERNAL;
    free(body);
    if (rc != 0) {
        free(pc);
        bus_op_fail(op, BUS_EUNAVAILABLE, "cannot check the actor's rank: %s", bus_strerror(rc));
    }
}
