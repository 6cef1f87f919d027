/* Shared bits of the baseline RPC client and server (tests/bench/).
 *
 * The baseline is what a competent person writes with plain rabbitmq-c and no
 * platform: a blocking connection, one channel, the default exchange. It is
 * the yardstick libbus's RPC path is measured against, so it deliberately
 * uses nothing from libbus. Everything here is static: each baseline program
 * includes this header and is a single translation unit.
 *
 * Ownership: bl_connect() returns a connection the caller closes with
 * bl_close(); the strings passed in stay owned by the caller.
 */
#ifndef BUS_BENCH_BASELINE_AMQP_H
#define BUS_BENCH_BASELINE_AMQP_H

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BL_DEFAULT_URL "amqp://guest:guest@127.0.0.1:5672/"
#define BL_CHANNEL 1

/* Prints a readable reason for a failed RPC-style rabbitmq-c call; returns
 * 0 when `r` is a normal reply, -1 otherwise. */
static inline int bl_check(amqp_rpc_reply_t r, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_NONE:
        fprintf(stderr, "%s: missing RPC reply type\n", what);
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        fprintf(stderr, "%s: %s\n", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            fprintf(stderr, "%s: connection closed by broker: %u %.*s\n", what, m->reply_code,
                    (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            fprintf(stderr, "%s: channel closed by broker: %u %.*s\n", what, m->reply_code,
                    (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            fprintf(stderr, "%s: unexpected server method 0x%08x\n", what, r.reply.id);
        }
        break;
    }
    return -1;
}

/* Connects to `url` (amqp://user:pass@host:port/vhost), logs in and opens
 * channel BL_CHANNEL. Returns NULL (after printing why) on any failure. */
static inline amqp_connection_state_t bl_connect(const char *url)
{
    char *buf = strdup(url);
    struct amqp_connection_info ci;
    amqp_connection_state_t conn = NULL;
    if (!buf) return NULL;
    if (amqp_parse_url(buf, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "bad AMQP URL: %s\n", url);
        goto out;
    }
    /* rabbitmq-c follows the AMQP URI spec, where "amqp://host/" names the
     * empty vhost; everyone means the default vhost "/" by it. */
    if (!ci.vhost || !ci.vhost[0]) ci.vhost = "/";
    conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (!sock) {
        fprintf(stderr, "cannot create socket\n");
        goto fail;
    }
    struct timeval tv = {5, 0};
    int rc = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        fprintf(stderr, "cannot connect to %s:%d: %s\n", ci.host, ci.port, amqp_error_string2(rc));
        goto fail;
    }
    if (bl_check(amqp_login(conn, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user,
                            ci.password),
                 "login"))
        goto fail;
    amqp_channel_open(conn, BL_CHANNEL);
    if (bl_check(amqp_get_rpc_reply(conn), "channel.open")) goto fail;
    goto out;
fail:
    amqp_destroy_connection(conn);
    conn = NULL;
out:
    free(buf);
    return conn;
}

static inline void bl_close(amqp_connection_state_t conn)
{
    if (!conn) return;
    amqp_channel_close(conn, BL_CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
}

/* After amqp_consume_message() reports AMQP_STATUS_UNEXPECTED_STATE a
 * non-delivery frame is waiting (basic.return, channel.close, ...). Reads and
 * handles it. Returns 0 to keep going, -1 when the channel/connection is gone. */
static inline int bl_handle_other_frame(amqp_connection_state_t conn)
{
    amqp_frame_t frame;
    struct timeval tv = {0, 0};
    if (amqp_simple_wait_frame_noblock(conn, &frame, &tv) != AMQP_STATUS_OK) return 0;
    if (frame.frame_type != AMQP_FRAME_METHOD) return 0;
    switch (frame.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD:
        return 0;
    case AMQP_BASIC_RETURN_METHOD: {
        /* an unroutable mandatory message: read and drop its body */
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(conn, frame.channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) return -1;
        amqp_destroy_message(&msg);
        return 0;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *m = frame.payload.method.decoded;
        fprintf(stderr, "channel closed by broker: %u %.*s\n", m->reply_code,
                (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *m = frame.payload.method.decoded;
        fprintf(stderr, "connection closed by broker: %u %.*s\n", m->reply_code,
                (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        return -1;
    }
    default:
        return 0;
    }
}

#endif
