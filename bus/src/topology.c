/* Shared names and declarations. See bus/topology.h. */
#include "bus/topology.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/error.h"

const char *const bus_domains[] = {"verification", "alliances", "events", "notifications", "audit", NULL};

int bus_topology_declare_exchanges(bus_conn_t *conn) {
    int rc = bus_conn_declare_exchange(conn, BUS_EXCHANGE_EVENTS, "topic");
    if (rc == 0) rc = bus_conn_declare_exchange(conn, BUS_EXCHANGE_RPC, "topic");
    if (rc == 0) rc = bus_conn_declare_exchange(conn, BUS_EXCHANGE_AUDIT, "fanout");
    return rc;
}

int bus_topology_declare_unrouted(bus_conn_t *conn, const char *queue_type) {
    bus_queue_options_t o = {.durable = 1, .queue_type = queue_type, .message_ttl_ms = 60000};
    int rc = bus_conn_declare_exchange(conn, BUS_EXCHANGE_RPC_UNROUTED, "fanout");
    if (rc != 0) return rc;
    /* the admin channel is closed and reopened on a refusal; the connection stays */
    rc = bus_conn_declare_queue_try(conn, BUS_QUEUE_RPC_UNROUTED, &o);
    if (rc == BUS_ECONFLICT) rc = bus_conn_queue_info(conn, BUS_QUEUE_RPC_UNROUTED, NULL, NULL); /* another type: as it is */
    if (rc == 0) rc = bus_conn_bind(conn, BUS_QUEUE_RPC_UNROUTED, BUS_EXCHANGE_RPC_UNROUTED, "");
    return rc;
}

int bus_topology_declare_audit(bus_conn_t *conn) {
    const char *age = getenv("BUS_AUDIT_MAX_AGE");
    bus_queue_options_t o = {.durable = 1, .queue_type = "stream", .max_age = age && *age ? age : "7D"};
    int rc = bus_conn_declare_queue(conn, BUS_AUDIT_STREAM, &o);
    if (rc == 0) rc = bus_conn_bind(conn, BUS_AUDIT_STREAM, BUS_EXCHANGE_AUDIT, "");
    return rc;
}

void bus_queue_name(char *buf, size_t len, const char *kind, const char *service) {
    snprintf(buf, len, "%s.%s", kind, service);
}

int bus_valid_name(const char *name) {
    if (!name || !(name[0] >= 'a' && name[0] <= 'z')) return 0;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_') || n >= 63) return 0;
    return 1;
}

int bus_valid_event_type(const char *type) {
    if (!type || !*type || strlen(type) > 200) return 0;
    int seg = 0;
    for (const char *p = type; *p; p++) {
        if (*p == '.') {
            if (seg == 0) return 0;
            seg = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_') {
            seg++;
        } else {
            return 0;
        }
    }
    return seg > 0;
}
