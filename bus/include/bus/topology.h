/* The names every part of the platform shares (docs/ARCHITECTURE.md, "Wire contract": Topology).
 *
 *   bus.events   topic exchange, routing key = event type
 *   bus.rpc      topic exchange, routing key = <service>.<method>
 *   bus.audit    fanout exchange feeding the audit.log stream
 *   events.<s>   durable queue of a domain's subscribed event types
 *   rpc.<s>      durable queue of a domain's RPC requests (bound <s>.*)
 *   retry.<s>    holds failed events for BUS_RETRY_DELAY_MS, then dead-letters
 *                them back into events.<s> (x-message-ttl + DLX "")
 *   dead.<s>     failed messages, with headers x-bus-dead-reason and friends
 *   bus.rpc.unrouted  fanout exchange: the alternate exchange of bus.rpc, which
 *                receives every request no rpc.<s> queue is bound for (an
 *                unknown service). The alternate exchange is set by a policy,
 *                not an exchange argument: bus.rpc already exists on running
 *                brokers without arguments, and declaring it again with
 *                different arguments fails (PRECONDITION_FAILED) and closes
 *                the channel. deploy/local/servers.sh sets the policy on the
 *                private broker; README "Unknown services" gives the command.
 *   rpc.unrouted queue bound to bus.rpc.unrouted; every worker consumes it and
 *                answers not_found at once (x-message-ttl 60 s: a request
 *                waiting longer than that has no caller left).
 */
#ifndef BUS_TOPOLOGY_H
#define BUS_TOPOLOGY_H

#include <stddef.h>

#include "bus/conn.h"

#define BUS_EXCHANGE_EVENTS "bus.events"
#define BUS_EXCHANGE_RPC "bus.rpc"
#define BUS_EXCHANGE_AUDIT "bus.audit"
#define BUS_AUDIT_STREAM "audit.log"
#define BUS_DIRECT_REPLY_TO "amq.rabbitmq.reply-to"
#define BUS_EXCHANGE_RPC_UNROUTED "bus.rpc.unrouted"
#define BUS_QUEUE_RPC_UNROUTED "rpc.unrouted"

/* Message headers the platform reads and writes. */
#define BUS_HDR_CORRELATION "x-correlation-id" /* end-to-end id (X-Request-Id) */
#define BUS_HDR_CALLER "x-caller"              /* identity of an RPC caller (API key id, bot name) */
#define BUS_HDR_ATTEMPT "x-bus-attempt"        /* delivery attempts so far (retries) */
#define BUS_HDR_DEAD_REASON "x-bus-dead-reason"
#define BUS_HDR_DEAD_QUEUE "x-bus-dead-queue"
#define BUS_HDR_ROUTING_KEY "x-bus-routing-key"

/* The five domains of the platform, NULL-terminated. */
extern const char *const bus_domains[];

/* Declares bus.events, bus.rpc, bus.audit (durable; idempotent). 0 or BUS_EUNAVAILABLE. */
int bus_topology_declare_exchanges(bus_conn_t *conn);
/* Declares bus.rpc.unrouted and the rpc.unrouted queue bound to it, the
 * queue of `queue_type` (NULL or "classic", "quorum": BUS_QUEUE_TYPE); an
 * existing queue of another type is used as it is. 0; BUS_EUNAVAILABLE when
 * the connection was lost; another code when the queue cannot be used now
 * (e.g. the node of a classic queue is down): the connection stays up and
 * the caller goes on without it. */
int bus_topology_declare_unrouted(bus_conn_t *conn, const char *queue_type);
/* Declares the audit stream and binds it (retention BUS_AUDIT_MAX_AGE, default 7D). */
int bus_topology_declare_audit(bus_conn_t *conn);
/* Writes "<kind>.<service>" into buf (kind: "events", "rpc", "retry", "dead"). */
void bus_queue_name(char *buf, size_t len, const char *kind, const char *service);
/* 1 when `name` is a valid service or method name: [a-z][a-z0-9_]{0,62}. */
int bus_valid_name(const char *name);
/* 1 when `type` is a valid event type: dot-separated names, each [a-z0-9_]+. */
int bus_valid_event_type(const char *type);

#endif
