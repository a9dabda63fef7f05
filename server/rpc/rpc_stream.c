/* kyso — streaming calls on the server: one read or write batch in flight per
 * call, started by the handler's worker thread, which then waits on the call's
 * semaphore until the completion-queue thread reports the batch done.
 * The core ends every pending batch when the call is cancelled, the client goes
 * away, the deadline passes or shutdown cancels all calls, so every wait ends. */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rpc_internal.h"

/* The client's cancellation at its deadline reaches us before our own copy of
 * the deadline (grpc-timeout is rounded up in transit): a stream that ends this
 * close to the deadline ended because of it. */
#define DEADLINE_SLACK_MS 100

static const uint8_t empty_message[1];

/* Completion-queue thread: records the outcome and wakes the handler; never waits. */
void rpc__stream_io_done(rpc_call *c, int ok) {
  atomic_store_explicit(&c->io_ok, ok, memory_order_relaxed);
  sem_post(&c->io_done);
}

static int is_gone(rpc_call *c) {
  return atomic_load_explicit(&c->closed, memory_order_acquire) != 0;
}

/* Why a stream ended under the handler. */
static kyso_status gone_status(rpc_call *c, const char *what, kyso_err *err) {
  if (atomic_load(&c->srv->state) >= RPC__CANCELLING)
    return kyso_fail(err, KYSO_CANCELLED, "%s on '%s': the server is shutting down", what,
                     rpc_call_method(c));
  if (rpc_call_remaining_ms(c) <= DEADLINE_SLACK_MS)
    return kyso_fail(err, KYSO_DEADLINE_EXCEEDED, "%s on '%s': the client's deadline passed",
                     what, rpc_call_method(c));
  return kyso_fail(err, KYSO_CANCELLED, "%s on '%s': the client cancelled the call or went away",
                   what, rpc_call_method(c));
}

/* Absolute CLOCK_REALTIME time ms from now (sem_timedwait's clock; a clock
 * step only moves this safety net, the core's own deadline timer stays). */
static struct timespec realtime_after(int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += (time_t)(ms / 1000);
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

/* Starts one batch and waits for it. The core ends every pending batch when the
 * call is cancelled (client gone, deadline, shutdown's cancel-all); should our
 * deadline pass first, we cancel the call ourselves. The wait always sees the
 * completion, so no op outlives this function. *ok tells whether the batch
 * succeeded; the status is an error only if it could not start. */
static kyso_status run_batch(rpc_call *c, const grpc_op *ops, size_t n, const char *what,
                             int *ok, kyso_err *err) {
  int cancelled = 0;
  grpc_call_error rc = grpc_call_start_batch(c->call, ops, n, &c->io_tag, NULL);
  if (rc != GRPC_CALL_OK)
    return kyso_fail(err, KYSO_INTERNAL, "%s on '%s': gRPC refused the batch: %s", what,
                     rpc_call_method(c), grpc_call_error_to_string(rc));
  for (;;) {
    int64_t left = rpc_call_remaining_ms(c);
    if (cancelled || left == INT64_MAX) {
      if (sem_wait(&c->io_done) == 0) break;
    } else if (left > 0) {
      struct timespec until = realtime_after(left);
      if (sem_timedwait(&c->io_done, &until) == 0) break;
    } else {
      grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                   "deadline passed during a streaming call", NULL);
      cancelled = 1;
    }
  }
  *ok = atomic_load_explicit(&c->io_ok, memory_order_relaxed);
  return KYSO_OK;
}

/* Refuses a streaming call on the wrong kind of method, or once it is over. */
static kyso_status check_kind(rpc_call *c, rpc_kind kind, const char *what, kyso_err *err) {
  if (c->method == NULL || c->method->kind != kind)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION, "%s: '%s' is not a %s method", what,
                     rpc_call_method(c),
                     kind == RPC_CLIENT_STREAMING ? "client-streaming" : "server-streaming");
  if (atomic_load(&c->srv->state) >= RPC__CANCELLING || is_gone(c))
    return gone_status(c, what, err);
  return KYSO_OK;
}

/* Copies a received message into c->req, reusing its storage. */
static kyso_status copy_message(rpc_call *c, grpc_byte_buffer *bb, kyso_err *err) {
  kyso_status st = KYSO_OK;
  grpc_byte_buffer_reader r;
  grpc_slice s;
  c->req.len = 0;
  c->req.max = c->srv->max_message;
  if (!grpc_byte_buffer_reader_init(&r, bb))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "request message on '%s' cannot be decompressed",
                     rpc_call_method(c));
  while (st == KYSO_OK && grpc_byte_buffer_reader_next(&r, &s)) {
    st = kyso_buf_append(&c->req, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s),
                         "request message", err);
    grpc_slice_unref(s);
  }
  grpc_byte_buffer_reader_destroy(&r);
  return st;
}

kyso_status rpc_call_read(rpc_call *c, const uint8_t **data, size_t *len, int *end,
                          kyso_err *err) {
  kyso_status st;
  grpc_op op;
  grpc_byte_buffer *bb = NULL;
  int ok = 0;
  *data = empty_message;
  *len = 0;
  *end = 0;
  if (c->read_end) {
    *end = 1;
    return KYSO_OK;
  }
  if ((st = check_kind(c, RPC_CLIENT_STREAMING, "reading a request", err)) != KYSO_OK) return st;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &bb;
  if ((st = run_batch(c, &op, 1, "reading a request", &ok, err)) != KYSO_OK) return st;
  if (!ok) {
    /* The core fails a receive it refused (over the limit, undecodable) and
     * cancels the call, so the close may already be in; a stream torn down
     * by a cancellation instead ends with no message (below). */
    if (atomic_load(&c->srv->state) >= RPC__CANCELLING ||
        grpc_call_failed_before_recv_message(c->call) ||
        rpc_call_remaining_ms(c) <= DEADLINE_SLACK_MS)
      return gone_status(c, "reading a request", err);
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                     "reading a request on '%s': gRPC refused the message (larger than the "
                     "%zu-byte limit, or not decodable)", rpc_call_method(c), c->srv->max_message);
  }
  if (bb == NULL) {
    /* No message: a half-close, unless the stream was torn down. */
    if (grpc_call_failed_before_recv_message(c->call) || is_gone(c))
      return gone_status(c, "reading a request", err);
    c->read_end = 1;
    *end = 1;
    return KYSO_OK;
  }
  st = copy_message(c, bb, err);
  grpc_byte_buffer_destroy(bb);
  if (st != KYSO_OK) return st;
  if (c->req.len > 0) *data = c->req.data;
  *len = c->req.len;
  return KYSO_OK;
}

kyso_status rpc_call_write(rpc_call *c, const uint8_t *data, size_t len, kyso_err *err) {
  kyso_status st;
  grpc_op ops[2];
  size_t n = 0;
  int ok = 0;
  if ((st = check_kind(c, RPC_SERVER_STREAMING, "writing a response", err)) != KYSO_OK)
    return st;
  if (data == NULL && len > 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "writing a response on '%s': no data",
                     rpc_call_method(c));
  /* Over the limit the core would cancel the call; refuse the message instead. */
  if (len > c->srv->max_message)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                     "response message of %zu bytes on '%s' exceeds the %zu-byte limit", len,
                     rpc_call_method(c), c->srv->max_message);
  grpc_slice s = len ? grpc_slice_from_copied_buffer((const char *)data, len) : grpc_empty_slice();
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  memset(ops, 0, sizeof(ops));
  if (!c->md_sent) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n++].data.send_message.send_message = bb;
  st = run_batch(c, ops, n, "writing a response", &ok, err);
  if (st == KYSO_OK) c->md_sent = 1;
  grpc_byte_buffer_destroy(bb);
  if (st == KYSO_OK && !ok) st = gone_status(c, "writing a response", err);
  return st;
}
