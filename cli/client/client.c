/* kyso — the gRPC C core client: one channel shared by every thread, each
 * unary call on its own pluck completion queue. */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "kyso/limits.h"
#include "kyso/pem.h"
#include "kyso/util.h"

#define RECONNECT_INITIAL_MS 200
#define RECONNECT_MAX_MS 1000
#define CONNECT_TIMEOUT_MS 20000

static kyso_status make_creds(const kyso_client_opts *o, grpc_channel_credentials **out,
                              kyso_err *err) {
  kyso_status st = KYSO_OK;
  kyso_buf ca, cert, key;
  kyso_buf_init(&ca, 0);
  kyso_buf_init(&cert, 0);
  kyso_buf_init(&key, 0);
  *out = NULL;
  if (o->insecure) {
    *out = grpc_insecure_credentials_create();
    return KYSO_OK;
  }
  if (o->ca_file == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "TLS to '%s' needs ca_file, the PEM trust anchors of the server", o->target);
  if ((o->cert_file == NULL) != (o->key_file == NULL))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "a client certificate needs its key and a key its certificate "
                     "(cert_file %s, key_file %s)", o->cert_file ? "set" : "missing",
                     o->key_file ? "set" : "missing");
  if ((st = kyso_pem_read(o->ca_file, "CA bundle", &ca, err)) != KYSO_OK) goto out;
  if (o->cert_file != NULL &&
      ((st = kyso_pem_read(o->cert_file, "client certificate", &cert, err)) != KYSO_OK ||
       (st = kyso_pem_read(o->key_file, "client key", &key, err)) != KYSO_OK ||
       (st = kyso_pem_check_pair(&cert, &key, o->cert_file, o->key_file, err)) != KYSO_OK))
    goto out;
  grpc_ssl_pem_key_cert_pair pair = {(const char *)key.data, (const char *)cert.data};
  *out = grpc_ssl_credentials_create((const char *)ca.data, o->cert_file ? &pair : NULL,
                                     NULL, NULL);
  if (*out == NULL)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "gRPC refused the TLS credentials for '%s'",
                   o->target);
out:
  kyso_buf_free(&ca, 0);
  kyso_buf_free(&cert, 0);
  kyso_buf_free(&key, 1);
  return st;
}

kyso_status kyso_client_open(const kyso_client_opts *o, kyso_client **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  kyso_client *c = NULL;
  grpc_channel_credentials *creds = NULL;
  grpc_arg args[6];
  size_t nargs = 0;
  *out = NULL;
  if (o == NULL || o->target == NULL || o->target[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "client: target is required");
  if (o->max_message > INT_MAX)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "client: max_message %zu is above %d",
                     o->max_message, INT_MAX);
  if ((c = calloc(1, sizeof(*c))) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "client: out of memory");
  c->max_message = o->max_message ? o->max_message : KYSO_MAX_MESSAGE;
  grpc_init();
  c->grpc_ready = 1;
  if ((st = make_creds(o, &creds, err)) != KYSO_OK) goto out;
  memset(args, 0, sizeof(args));
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[nargs++].value.integer = (int)c->max_message;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
  args[nargs++].value.integer = (int)c->max_message;
  /* A node that restarts (or a new leader) is reached again within about a
   * second, not after gRPC's default back-off of up to two minutes. */
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
  args[nargs++].value.integer = RECONNECT_INITIAL_MS;
  args[nargs].type = GRPC_ARG_INTEGER; /* despite its name: how long one connect may take */
  args[nargs].key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
  args[nargs++].value.integer = CONNECT_TIMEOUT_MS;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
  args[nargs++].value.integer = RECONNECT_MAX_MS;
  if (o->server_name != NULL && !o->insecure) {
    args[nargs].type = GRPC_ARG_STRING;
    args[nargs].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
    args[nargs++].value.string = (char *)o->server_name;
  }
  grpc_channel_args ca = {nargs, args};
  /* Never NULL: a bad target gives a channel whose calls fail UNAVAILABLE. */
  c->ch = grpc_channel_create(o->target, creds, &ca);
  *out = c;
  c = NULL;
out:
  if (creds != NULL) grpc_channel_credentials_release(creds);
  kyso_client_close(c);
  return st;
}

void kyso_client_close(kyso_client *c) {
  if (c == NULL) return;
  if (c->ch != NULL) grpc_channel_destroy(c->ch);
  if (c->grpc_ready) grpc_shutdown();
  free(c);
}

gpr_timespec kyso_client__deadline(int64_t timeout_ms) {
  if (timeout_ms <= 0) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

kyso_status kyso_client__read_message(grpc_byte_buffer *bb, size_t max, uint8_t **data,
                                      size_t *len, kyso_err *err) {
  kyso_status st = KYSO_OK;
  grpc_byte_buffer_reader r;
  grpc_slice s;
  kyso_buf b;
  kyso_buf_init(&b, max);
  *data = NULL;
  *len = 0;
  if (!grpc_byte_buffer_reader_init(&r, bb))
    return kyso_fail(err, KYSO_DATA_LOSS, "response message cannot be decompressed");
  while (st == KYSO_OK && grpc_byte_buffer_reader_next(&r, &s)) {
    st = kyso_buf_append(&b, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s),
                         "response message", err);
    grpc_slice_unref(s);
  }
  grpc_byte_buffer_reader_destroy(&r);
  if (st != KYSO_OK) {
    kyso_buf_free(&b, 0);
    return st;
  }
  *data = b.data;
  *len = b.len;
  return KYSO_OK;
}

kyso_status kyso_client_call(kyso_client *c, const char *method, const uint8_t *req,
                             size_t req_len, int64_t timeout_ms, kyso_reply *reply,
                             kyso_err *err) {
  kyso_status st = KYSO_OK;
  grpc_completion_queue *cq = NULL;
  grpc_call *call = NULL;
  grpc_byte_buffer *send = NULL, *recv = NULL;
  grpc_metadata_array md_initial, md_trailing;
  grpc_status_code status = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  grpc_op ops[6];
  grpc_metadata_array_init(&md_initial);
  grpc_metadata_array_init(&md_trailing);
  if (reply != NULL) memset(reply, 0, sizeof(*reply));
  if (c == NULL || method == NULL || method[0] != '/' || reply == NULL ||
      (req == NULL && req_len > 0)) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "client call: needs a client, a '/'-rooted method and a reply");
    goto out;
  }
  cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_slice m = grpc_slice_from_copied_string(method);
  call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                  kyso_client__deadline(timeout_ms), NULL);
  grpc_slice_unref(m);
  grpc_slice body = req_len ? grpc_slice_from_copied_buffer((const char *)req, req_len)
                            : grpc_empty_slice();
  send = grpc_raw_byte_buffer_create(&body, 1);
  grpc_slice_unref(body);
  if (call == NULL || cq == NULL || send == NULL) {
    st = kyso_fail(err, KYSO_INTERNAL, "client: cannot create a call to '%s'", method);
    goto out;
  }
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_initial;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &md_trailing;
  ops[5].data.recv_status_on_client.status = &status;
  ops[5].data.recv_status_on_client.status_details = &details;
  grpc_call_error rc = grpc_call_start_batch(call, ops, 6, ops, NULL);
  if (rc != GRPC_CALL_OK) {
    st = kyso_fail(err, KYSO_INTERNAL, "client: cannot start a call to '%s': %s", method,
                   grpc_call_error_to_string(rc));
    goto out;
  }
  /* The call's deadline bounds this wait: the core always ends the batch. */
  grpc_event ev = grpc_completion_queue_pluck(cq, ops, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  if (ev.type != GRPC_OP_COMPLETE) {
    st = kyso_fail(err, KYSO_INTERNAL, "client: call to '%s' never completed", method);
    goto out;
  }
  reply->grpc_status = (int)status;
  size_t n = GRPC_SLICE_LENGTH(details);
  if (n >= sizeof(reply->message)) n = sizeof(reply->message) - 1;
  memcpy(reply->message, GRPC_SLICE_START_PTR(details), n);
  reply->message[n] = '\0';
  if (status == GRPC_STATUS_OK && recv != NULL)
    st = kyso_client__read_message(recv, c->max_message, &reply->data, &reply->len, err);
out:
  if (call != NULL) grpc_call_unref(call);
  if (cq != NULL) {
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
  }
  if (send != NULL) grpc_byte_buffer_destroy(send);
  if (recv != NULL) grpc_byte_buffer_destroy(recv);
  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&md_initial);
  grpc_metadata_array_destroy(&md_trailing);
  return st;
}

void kyso_reply_free(kyso_reply *reply) {
  if (reply == NULL) return;
  free(reply->data);
  reply->data = NULL;
  reply->len = 0;
}
