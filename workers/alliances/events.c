/* Events the alliances worker consumes.
 *
 * user.forgotten {user, requested_at?}: a user asked for their data to be
 * deleted. Their membership is removed exactly as `leave` removes it (with
 * succession, or the alliance dissolved when they were its last member),
 * the events carry reason "forgotten" and the forgotten event's correlation
 * id. Exactly once by the event id (marker scope "alliances.events"): a
 * redelivery publishes the stored events again and changes nothing. A user
 * without a membership is acked with nothing to do.
 *
 * The events this worker publishes are planned in methods.c
 * (bus_op_plan_event); their schemas are schemas/events/alliance.*.json.
 */
#include "alliances.h"
#include "bus/error.h"

void al_on_user_forgotten(bus_event_t *ev) {
    bus_op_t *op = bus_op_new_event(al_state(bus_event_worker(ev))->engine, ev, al_leave_load);
    if (!op) {
        bus_event_done(ev, BUS_EINTERNAL, "out of memory");
        return;
    }
    bus_op_start(op, 0);
}
