/* kyso — streaming calls on the client: one call on its own pluck completion
 * queue; the status is requested when the call opens and collected by
 * kyso_stream_finish, every other step waits for its own batch. */
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

struct kyso_stream {
  kyso_client *c;
  char *method;
  grpc_completion_queue *cq;
  grpc_call *call;
  grpc_metadata_array md_initial;
  grpc_metadata_array md_trailing;
  grpc_status_code status;
  grpc_slice details;
  int status_started;  /* RECV_STATUS_ON_CLIENT is under way (tag: &status) */
  int got_md;          /* RECV_INITIAL_METADATA done */
  int sent_close;      /* SEND_CLOSE_FROM_CLIENT done */
  int ended;           /* a receive found no more messages (or failed) */
  int io_tag;          /* its address tags every other batch */
};

/* Runs ops and waits for them; 1 when the batch succeeded. */
static int stream_batch(kyso_stream *s, const grpc_op *ops, size_t n) {
  if (grpc_call_start_batch(s->call, ops, n, &s->io_tag, NULL) != GRPC_CALL_OK) return 0;
  grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->io_tag,
                                              gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* Waits for the status (the call's deadline bounds the wait), then frees s. */
static void stream_free(kyso_stream *s) {
  if (s->status_started)
    grpc_completion_queue_pluck(s->cq, &s->status, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  if (s->call != NULL) grpc_call_unref(s->call);
  if (s->cq != NULL) {
    grpc_completion_queue_shutdown(s->cq);
    grpc_completion_queue_destroy(s->cq);
  }
  grpc_metadata_array_destroy(&s->md_initial);
  grpc_metadata_array_destroy(&s->md_trailing);
  grpc_slice_unref(s->details);
  free(s->method);
  free(s);
}

kyso_status kyso_stream_open(kyso_client *c, const char *method, int64_t timeout_ms,
                             kyso_stream **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  kyso_stream *s = NULL;
  grpc_op ops[1];
  *out = NULL;
  if (c == NULL || method == NULL || method[0] != '/')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "stream: needs a client and a '/'-rooted method");
  if ((s = calloc(1, sizeof(*s))) == NULL || (s->method = strdup(method)) == NULL) {
    free(s);
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "stream: out of memory");
  }
  s->c = c;
  s->details = grpc_empty_slice();
  grpc_metadata_array_init(&s->md_initial);
  grpc_metadata_array_init(&s->md_trailing);
  s->cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_slice m = grpc_slice_from_copied_string(method);
  s->call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, m, NULL,
                                     kyso_client__deadline(timeout_ms), NULL);
  grpc_slice_unref(m);
  if (s->cq == NULL || s->call == NULL) {
    st = kyso_fail(err, KYSO_INTERNAL, "stream: cannot create a call to '%s'", method);
    goto out;
  }
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[0].data.recv_status_on_client.trailing_metadata = &s->md_trailing;
  ops[0].data.recv_status_on_client.status = &s->status;
  ops[0].data.recv_status_on_client.status_details = &s->details;
  if (grpc_call_start_batch(s->call, ops, 1, &s->status, NULL) != GRPC_CALL_OK) {
    st = kyso_fail(err, KYSO_INTERNAL, "stream: cannot start a call to '%s'", method);
    goto out;
  }
  s->status_started = 1;
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (!stream_batch(s, ops, 1)) {
    st = kyso_fail(err, KYSO_UNAVAILABLE, "stream: cannot open a call to '%s'", method);
    goto out;
  }
  *out = s;
  s = NULL;
out:
  if (s != NULL) {
    if (s->call != NULL) grpc_call_cancel(s->call, NULL);
    stream_free(s);
  }
  return st;
}

kyso_status kyso_stream_send(kyso_stream *s, const uint8_t *data, size_t len, kyso_err *err) {
  grpc_op ops[1];
  if (data == NULL && len > 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "stream send: no data for %zu bytes", len);
  if (s->sent_close)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION, "stream to '%s': send after close_send",
                     s->method);
  grpc_slice body = len ? grpc_slice_from_copied_buffer((const char *)data, len)
                        : grpc_empty_slice();
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&body, 1);
  grpc_slice_unref(body);
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_MESSAGE;
  ops[0].data.send_message.send_message = bb;
  int ok = stream_batch(s, ops, 1);
  grpc_byte_buffer_destroy(bb);
  if (!ok)
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "stream to '%s' ended before the message went out (see its status)",
                     s->method);
  return KYSO_OK;
}

kyso_status kyso_stream_close_send(kyso_stream *s, kyso_err *err) {
  grpc_op ops[1];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  if (s->sent_close) return KYSO_OK;
  s->sent_close = 1;
  if (!stream_batch(s, ops, 1))
    return kyso_fail(err, KYSO_UNAVAILABLE, "stream to '%s' ended before the half-close",
                     s->method);
  return KYSO_OK;
}

kyso_status kyso_stream_recv(kyso_stream *s, uint8_t **data, size_t *len, int *end,
                             kyso_err *err) {
  kyso_status st = KYSO_OK;
  grpc_byte_buffer *bb = NULL;
  grpc_op ops[2];
  size_t n = 0;
  *data = NULL;
  *len = 0;
  *end = 0;
  if (s->ended) {
    *end = 1;
    return KYSO_OK;
  }
  memset(ops, 0, sizeof(ops));
  if (!s->got_md) {
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->md_initial;
  }
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n++].data.recv_message.recv_message = &bb;
  s->got_md = 1;
  /* A failed batch or no message: the server has no more (finish says why). */
  if (!stream_batch(s, ops, n) || bb == NULL)
    *end = s->ended = 1;
  else
    st = kyso_client__read_message(bb, s->c->max_message, data, len, err);
  if (bb != NULL) grpc_byte_buffer_destroy(bb);
  return st;
}

kyso_status kyso_stream_finish(kyso_stream *s, kyso_reply *reply, kyso_err *err) {
  if (s == NULL) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "stream finish: no stream");
  if (reply == NULL) {
    kyso_stream_cancel(s);
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "stream finish: no reply to fill");
  }
  memset(reply, 0, sizeof(*reply));
  /* The server may wait for the half-close, and the core hands the status
   * over only once every response message was taken: drop those left. */
  if (kyso_stream_close_send(s, err) != KYSO_OK) kyso_err_clear(err);
  while (!s->ended) {
    uint8_t *data = NULL;
    size_t len = 0;
    int end = 0;
    if (kyso_stream_recv(s, &data, &len, &end, err) != KYSO_OK) kyso_err_clear(err);
    free(data);
  }
  grpc_completion_queue_pluck(s->cq, &s->status, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  s->status_started = 0;
  reply->grpc_status = (int)s->status;
  size_t n = GRPC_SLICE_LENGTH(s->details);
  if (n >= sizeof(reply->message)) n = sizeof(reply->message) - 1;
  memcpy(reply->message, GRPC_SLICE_START_PTR(s->details), n);
  reply->message[n] = '\0';
  stream_free(s);
  return KYSO_OK;
}

void kyso_stream_cancel(kyso_stream *s) {
  if (s == NULL) return;
  grpc_call_cancel(s->call, NULL);
  stream_free(s);
}
