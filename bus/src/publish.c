/* Event publishing with confirms. See bus/publish.h. */
#include "bus/publish.h"

#include <stdlib.h>

#include "bus/error.h"
#include "bus/topology.h"

int bus_event_publish_body(bus_conn_t *conn, const char *type, const char *id, const char *correlation_id,
                           const char *body, size_t len, bus_publish_cb cb, void *data) {
    bus_publish_t p = {
        .exchange = BUS_EXCHANGE_EVENTS,
        .routing_key = type,
        .body = body,
        .len = len,
        .content_type = BUS_CE_CONTENT_TYPE,
        .message_id = id,
        .correlation_id = correlation_id && *correlation_id ? correlation_id : NULL,
        .type = type,
        .persistent = 1,
    };
    return bus_conn_publish(conn, &p, cb, data);
}

int bus_event_publish(bus_conn_t *conn, const bus_envelope_t *env, bus_publish_cb cb, void *data) {
    size_t len = 0;
    char *body = bus_envelope_serialize(env, &len);
    if (!body) return BUS_EINTERNAL;
    int rc = bus_event_publish_body(conn, env->type, env->id, env->correlationid, body, len, cb, data);
    free(body);
    return rc;
}
