/* baseline_rpc_server: the yardstick RPC server for `make bench`.
 *
 *   baseline_rpc_server [QUEUE]        (default bench.baseline.rpc)
 *   env BUS_AMQP_URL                   (default amqp://guest:guest@127.0.0.1:5672/)
 *
 * A minimal server written the plain way with blocking rabbitmq-c: declare a
 * non-durable queue, basic.qos prefetch 64, consume with manual ack, and
 * answer every request with {"success":true,"data":{"pong":true}} published
 * to its reply_to (default exchange) with its correlation_id, then ack it.
 * Prints "ready queue=Q" on stdout once consuming (the harness waits for it).
 * SIGTERM/SIGINT: stop consuming, close, exit 0. Exit 1 on connection errors.
 */
#include "baseline_amqp.h"

#include <signal.h>
#include <stdint.h>

#define PREFETCH 64
static const char REPLY[] = "{\"success\":true,\"data\":{\"pong\":true}}";

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: %s [QUEUE]   (env BUS_AMQP_URL)\n", argv[0]);
        return 0;
    }
    const char *queue = argc > 1 ? argv[1] : "bench.baseline.rpc";
    const char *url = getenv("BUS_AMQP_URL");
    if (!url || !*url) url = BL_DEFAULT_URL;

    /* no SA_RESTART: a signal must interrupt the blocking wait */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    amqp_connection_state_t conn = bl_connect(url);
    if (!conn) return 1;

    amqp_bytes_t qname = amqp_cstring_bytes(queue);
    amqp_queue_declare(conn, BL_CHANNEL, qname, 0 /*passive*/, 0 /*durable*/, 0 /*exclusive*/,
                       0 /*auto_delete*/, amqp_empty_table);
    if (bl_check(amqp_get_rpc_reply(conn), "queue.declare")) goto fail;
    amqp_basic_qos(conn, BL_CHANNEL, 0, PREFETCH, 0);
    if (bl_check(amqp_get_rpc_reply(conn), "basic.qos")) goto fail;
    amqp_basic_consume(conn, BL_CHANNEL, qname, amqp_empty_bytes, 0 /*no_local*/, 0 /*no_ack*/,
                       0 /*exclusive*/, amqp_empty_table);
    if (bl_check(amqp_get_rpc_reply(conn), "basic.consume")) goto fail;
    printf("ready queue=%s\n", queue);
    fflush(stdout);

    uint64_t served = 0;
    int rc = 0;
    while (!stop_flag) {
        amqp_envelope_t env;
        struct timeval tv = {0, 200 * 1000}; /* wake up to notice a signal */
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
                if (r.library_error == AMQP_STATUS_TIMEOUT) continue;
                if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
                    if (bl_handle_other_frame(conn) == 0) continue;
                    rc = 1;
                    break;
                }
                /* EINTR from a signal surfaces as a socket error only if
                 * the flag is set; anything else is a lost connection */
                if (stop_flag) break;
            }
            bl_check(r, "consume");
            rc = 1;
            break;
        }
        amqp_basic_properties_t *in = &env.message.properties;
        if ((in->_flags & AMQP_BASIC_REPLY_TO_FLAG) && in->reply_to.len > 0) {
            amqp_basic_properties_t out;
            memset(&out, 0, sizeof out);
            out._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
            out.content_type = amqp_cstring_bytes("application/json");
            if (in->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
                out._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
                out.correlation_id = in->correlation_id;
            }
            amqp_bytes_t body = {sizeof REPLY - 1, (void *)REPLY};
            int prc = amqp_basic_publish(conn, BL_CHANNEL, amqp_empty_bytes, in->reply_to, 0, 0,
                                         &out, body);
            if (prc != AMQP_STATUS_OK) {
                fprintf(stderr, "publish reply: %s\n", amqp_error_string2(prc));
                amqp_destroy_envelope(&env);
                rc = 1;
                break;
            }
        }
        int arc = amqp_basic_ack(conn, BL_CHANNEL, env.delivery_tag, 0);
        amqp_destroy_envelope(&env);
        if (arc != AMQP_STATUS_OK) {
            fprintf(stderr, "ack: %s\n", amqp_error_string2(arc));
            rc = 1;
            break;
        }
        served++;
    }
    fprintf(stderr, "baseline_rpc_server: served %llu requests\n", (unsigned long long)served);
    bl_close(conn);
    return rc;
fail:
    bl_close(conn);
    return 1;
}
