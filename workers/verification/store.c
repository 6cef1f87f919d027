/* Documents of the verification domain.
 *
 * "vf_players"     id = the player id in decimal. {player_id, nickname,
 *                  state, furnace_level, furnace_label, avatar_url, user,
 *                  verified_at, refreshed_at, refreshed_ms}. `user` is the
 *                  linked bot user ("" after unlink): a player has at most
 *                  one user, a user may link several players (their alts).
 * "vf_history"     id = a UUID. {player_id, at, field, old, new}: one entry
 *                  per field a refresh saw change (nickname, state,
 *                  furnace_level), in the same batch as the change.
 * "vf_giftcodes"   id = the code. {code, note, status active|stopped,
 *                  batch running|finished|stopped, stop_reason, added_at,
 *                  finished_at, totals}
 * "vf_redemptions" id = "<code>|<player id>". {code, player_id, user,
 *                  status claimed|calling|done, result, err_code, msg,
 *                  owner, lease_until, at}: see giftcodes.c.
 */
#include <stdio.h>
#include <string.h>

#include "bus/error.h"
#include "bus/log.h"
#include "verification.h"

int vf_store_declare(bus_store_t *s, char *err, size_t errlen) {
    static const char *const p_idx[] = {"user", "state", NULL};
    static const char *const h_idx[] = {"player_id,at", NULL};
    static const char *const c_idx[] = {"status", "batch", NULL};
    static const char *const r_idx[] = {"code,status", "code,player_id", "player_id", "user", NULL};
    int rc = bus_store_declare(s, VF_COLL_PLAYERS, p_idx, NULL, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, VF_COLL_HISTORY, h_idx, NULL, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, VF_COLL_CODES, c_idx, NULL, err, errlen);
    if (rc == 0) rc = bus_store_declare(s, VF_COLL_REDEMPTIONS, r_idx, NULL, err, errlen);
    return rc;
}

const char *vf_doc_str(const cJSON *doc, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsString(v) ? v->valuestring : "";
}

int64_t vf_doc_int(const cJSON *doc, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, field);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

int64_t vf_doc_version(const cJSON *doc) { return vf_doc_int(doc, "_v"); }

static void copy_field(cJSON *to, const cJSON *from, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, field);
    cJSON_AddItemToObject(to, field, v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull());
}

cJSON *vf_profile_view(const cJSON *doc) {
    cJSON *o = cJSON_CreateObject();
    static const char *const f[] = {"player_id", "nickname", "state", "furnace_level", "furnace_label",
                                    "avatar_url", "verified_at", "refreshed_at"};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) copy_field(o, doc, f[i]);
    const char *user = vf_doc_str(doc, "user");
    if (user[0])
        cJSON_AddStringToObject(o, "user", user);
    else
        cJSON_AddNullToObject(o, "user");
    int64_t age = (vf_now_ms() - vf_doc_int(doc, "refreshed_ms")) / 1000;
    cJSON_AddNumberToObject(o, "age_s", (double)(age < 0 ? 0 : age));
    return o;
}

cJSON *vf_player_doc(const vf_player_answer_t *a, const cJSON *old, const char *user, const char *now) {
    char label[32];
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "player_id", (double)a->fid);
    cJSON_AddStringToObject(d, "nickname", a->nickname);
    cJSON_AddNumberToObject(d, "state", (double)a->state);
    cJSON_AddNumberToObject(d, "furnace_level", a->furnace_level);
    cJSON_AddStringToObject(d, "furnace_label", vf_furnace_label(a->furnace_level, label, sizeof label));
    cJSON_AddStringToObject(d, "avatar_url", a->avatar_url);
    cJSON_AddStringToObject(d, "user", user ? user : vf_doc_str(old, "user"));
    const char *verified = vf_doc_str(old, "verified_at");
    cJSON_AddStringToObject(d, "verified_at", user || !verified[0] ? now : verified);
    cJSON_AddStringToObject(d, "refreshed_at", now);
    cJSON_AddNumberToObject(d, "refreshed_ms", (double)vf_now_ms());
    return d;
}

int vf_plan_changes(bus_op_t *op, const cJSON *old, const cJSON *nw, const char *now) {
    if (!old) return 0;
    static const char *const fields[] = {"nickname", "state", "furnace_level"};
    int n = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(old, fields[i]);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(nw, fields[i]);
        if (!a || !b || cJSON_Compare(a, b, 1)) continue;
        char id[37];
        bus_uuid(id);
        cJSON *h = cJSON_CreateObject();
        cJSON_AddNumberToObject(h, "player_id", (double)vf_doc_int(nw, "player_id"));
        cJSON_AddStringToObject(h, "at", now);
        cJSON_AddStringToObject(h, "field", fields[i]);
        cJSON_AddItemToObject(h, "old", cJSON_Duplicate(a, 1));
        cJSON_AddItemToObject(h, "new", cJSON_Duplicate(b, 1));
        cJSON *ev = cJSON_Duplicate(h, 1);
        bus_op_plan_insert(op, VF_COLL_HISTORY, id, h);
        char subject[24];
        snprintf(subject, sizeof subject, "%lld", (long long)vf_doc_int(nw, "player_id"));
        bus_op_plan_event(op, "player.changed", subject, ev);
        n++;
    }
    return n;
}
