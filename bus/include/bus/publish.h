/* Publishing events onto bus.events (docs/ARCHITECTURE.md, "Wire contract": Envelope): structured-mode
 * CloudEvents, persistent, with publisher confirms, AMQP properties mirroring
 * the envelope (content_type application/cloudevents+json, message_id = id,
 * correlation_id, timestamp, type). Used by workers, busctl and the edge.
 */
#ifndef BUS_PUBLISH_H
#define BUS_PUBLISH_H

#include <stddef.h>

#include "bus/conn.h"
#include "bus/envelope.h"

/* Serialises env and publishes it with routing key env->type. env is read,
 * not kept. cb (may be NULL) gets the confirm outcome. Returns 0 when sent,
 * BUS_EUNAVAILABLE when not connected, BUS_EINTERNAL (out of memory); on error
 * cb is not called. */
int bus_event_publish(bus_conn_t *conn, const bus_envelope_t *env, bus_publish_cb cb, void *data);

/* Publishes an already serialised structured-mode body (e.g. from an outbox). */
int bus_event_publish_body(bus_conn_t *conn, const char *type, const char *id, const char *correlation_id,
                           const char *body, size_t len, bus_publish_cb cb, void *data);

#endif
