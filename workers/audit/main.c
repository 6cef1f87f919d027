/* bus-audit: RBAC and the audit trail (domain arrives with its issue; answers ping now).
 *
 * The skeleton the domain will fill, on libbus's extra consumers (bus/worker.h):
 * - audit.log, the stream fed by bus.audit (declared by
 *   bus_topology_declare_audit, which owns its retention), read from "next"
 *   on the first connect and from the last offset read + 1 after a
 *   reconnect; the domain will keep that offset in its store instead.
 * - audit.events, a durable queue bound to bus.events with "#": every event
 *   of the platform, for the trail.
 * Today both only count and ack what they get.
 */
#include <inttypes.h>

#include "bus/log.h"
#include "bus/topology.h"
#include "bus/worker.h"

static struct {
    int64_t last_offset; /* of audit.log, -1 before the first record */
    uint64_t records, events;
} audit = {-1, 0, 0};

static void on_audit_record(bus_delivery_t *d) {
    audit.last_offset = bus_delivery_stream_offset(d);
    audit.records++;
    bus_debug(NULL, "audit record %" PRId64 " (%" PRIu64 " read)", audit.last_offset, audit.records);
    bus_delivery_ack(d);
}

static int resume_audit(bus_worker_t *w, void *data, bus_stream_offset_t *out) {
    (void)w;
    (void)data;
    if (audit.last_offset < 0) return 0; /* nothing read yet: the consumer's .offset */
    out->from = BUS_STREAM_OFFSET;
    out->value = audit.last_offset + 1;
    return 1;
}

static void on_event(bus_delivery_t *d) {
    audit.events++;
    bus_debug(NULL, "event %s (%" PRIu64 " seen)", bus_delivery_msg(d)->routing_key, audit.events);
    bus_delivery_ack(d);
}

static const bus_binding_t every_event[] = {{BUS_EXCHANGE_EVENTS, "#"}, {NULL, NULL}};

static const bus_consumer_def_t consumers[] = {
    {.queue = BUS_AUDIT_STREAM, .declare = bus_topology_declare_audit, .options = {.queue_type = "stream"},
     .offset = {BUS_STREAM_NEXT}, .resume = resume_audit, .fn = on_audit_record},
    {.queue = "audit.events", .options = {.durable = 1}, .bindings = every_event, .fn = on_event},
    {.fn = NULL},
};

static const bus_worker_def_t definition = {
    .service = "audit",
    .summary = "RBAC and the audit trail (domain arrives with its issue; answers ping now)",
    .consumers = consumers,
};

int main(int argc, char **argv) { return bus_worker_main(argc, argv, &definition); }
