/* kyso — one call's state, from the moment the core hands it over until its
 * final batch completes: every method, registered or not, takes this path. */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/log.h"
#include "rpc_internal.h"

/* Frees the call when both the final batch and RECV_CLOSE_ON_SERVER are done. */
static void call_unref(rpc_call *c) {
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
  (void)atomic_load_explicit(&c->finished, memory_order_acquire);
  if (c->call != NULL) grpc_call_unref(c->call);
  if (c->payload != NULL) grpc_byte_buffer_destroy(c->payload);
  if (c->resp != NULL) grpc_byte_buffer_destroy(c->resp);
  grpc_slice_unref(c->status_msg);
  kyso_buf_free(&c->req, 0);
  X509_free(c->peer.cert);
  sem_destroy(&c->io_done);
  free(c->path);
  free(c);
}

/* Empties the slot so it can be re-armed; the call (if any) is no longer its. */
static void slot_reset(rpc__slot *s) {
  s->call = NULL;
  s->payload = NULL;
  grpc_metadata_array_destroy(&s->md);
  grpc_metadata_array_init(&s->md);
  grpc_call_details_destroy(&s->details);
  grpc_call_details_init(&s->details);
}

rpc_call *rpc__call_adopt(rpc__slot *s) {
  rpc_call *c = calloc(1, sizeof(*c));
  gpr_timespec deadline = s->method ? s->deadline : s->details.deadline;
  if (c != NULL && s->method == NULL) {
    size_t n = GRPC_SLICE_LENGTH(s->details.method);
    if ((c->path = malloc(n + 1)) != NULL) {
      memcpy(c->path, GRPC_SLICE_START_PTR(s->details.method), n);
      c->path[n] = '\0';
    }
  }
  if (c == NULL || (s->method == NULL && c->path == NULL)) {
    grpc_call_cancel_with_status(s->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                 "server out of memory", NULL);
    grpc_call_unref(s->call);
    if (s->payload != NULL) grpc_byte_buffer_destroy(s->payload);
    free(c);
    c = NULL;
    goto out;
  }
  c->close_tag = (rpc__tag){RPC__TAG_CLOSE, c};
  c->finish_tag = (rpc__tag){RPC__TAG_FINISH, c};
  c->io_tag = (rpc__tag){RPC__TAG_IO, c};
  sem_init(&c->io_done, 0, 0);
  c->srv = s->srv;
  c->method = s->method;
  c->call = s->call;
  c->payload = s->payload;
  c->deadline = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
  /* No call outlives max_call_ms, whatever deadline the client chose (or
   * did not choose): the streaming waits cancel the call at this point. */
  gpr_timespec cap = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                  gpr_time_from_millis(s->srv->max_call_ms, GPR_TIMESPAN));
  if (gpr_time_cmp(c->deadline, cap) > 0) c->deadline = cap;
  c->status_msg = grpc_empty_slice();
  kyso_buf_init(&c->req, 0);
  atomic_init(&c->closed, 0);
  atomic_init(&c->refs, 2);
  atomic_init(&c->finished, 0);
out:
  slot_reset(s);
  return c;
}

void rpc__call_dispatch(rpc_call *c) {
  char msg[KYSO_ERR_MSG_MAX];
  rpc_server *srv = c->srv;
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->cancelled;
  grpc_call_error rc = grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL);
  if (rc != GRPC_CALL_OK) {
    kyso_log(KYSO_LOG_ERROR, "rpc: cannot watch call to '%s' for cancellation: %s",
             rpc_call_method(c), grpc_call_error_to_string(rc));
    call_unref(c);
  }
  if (c->method == NULL) {
    snprintf(msg, sizeof(msg), "method '%s' is not implemented by this server", c->path);
    rpc_call_finish(c, KYSO_UNIMPLEMENTED, msg, NULL, 0);
  } else if (rpc__pool_submit(srv->pool, c) != 0) {
    snprintf(msg, sizeof(msg),
             "server busy: %u calls already wait for a worker; retry later", srv->max_queued);
    rpc_call_finish(c, KYSO_RESOURCE_EXHAUSTED, msg, NULL, 0);
  }
}

void rpc__call_on_tag(rpc__tag *tag, int ok) {
  rpc_call *c = tag->owner;
  if (tag->kind == RPC__TAG_IO) {
    rpc__stream_io_done(c, ok); /* the handler still holds its reference */
    return;
  }
  if (tag->kind == RPC__TAG_CLOSE && ok && c->cancelled)
    atomic_store_explicit(&c->closed, 1, memory_order_release);
  call_unref(c);
}

kyso_status rpc__read_payload(grpc_byte_buffer *bb, size_t max, kyso_buf *out,
                              kyso_err *err) {
  kyso_status st = KYSO_OK;
  grpc_byte_buffer_reader r;
  grpc_slice s;
  int reading = 0;
  kyso_buf_init(out, max);
  if (bb == NULL) goto out; /* no message at all: the empty message */
  if (!grpc_byte_buffer_reader_init(&r, bb)) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "request message cannot be decompressed");
    goto out;
  }
  reading = 1;
  while (grpc_byte_buffer_reader_next(&r, &s)) {
    st = kyso_buf_append(out, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s),
                         "request message", err);
    grpc_slice_unref(s);
    if (st != KYSO_OK) goto out;
  }
out:
  if (reading) grpc_byte_buffer_reader_destroy(&r);
  if (st != KYSO_OK) kyso_buf_free(out, 0);
  return st;
}

void rpc__call_run(void *item, void *ctx) {
  rpc_call *c = item;
  rpc_server *srv = ctx;
  kyso_status st = KYSO_OK;
  const char *msg = NULL;
  kyso_err err;
  kyso_err_clear(&err);
  if (atomic_load_explicit(&c->closed, memory_order_acquire)) {
    st = KYSO_CANCELLED;
    msg = "call cancelled before a worker took it";
    goto out;
  }
  if (atomic_load(&srv->state) >= RPC__CANCELLING) {
    st = KYSO_UNAVAILABLE;
    msg = "server is shutting down";
    goto out;
  }
  if (rpc_call_remaining_ms(c) <= 0) {
    st = KYSO_DEADLINE_EXCEEDED;
    msg = "deadline passed while the call waited for a worker";
    goto out;
  }
  /* Authorise before touching the request: a refused caller costs no copy. */
  rpc__peer_load(srv->peer_cache, c->call, &c->peer);
  if ((st = srv->auth(srv->app, &c->peer, c->method->operation, &err)) != KYSO_OK ||
      (st = rpc__read_payload(c->payload, srv->max_message, &c->req, &err)) != KYSO_OK) {
    msg = err.msg;
    goto out;
  }
  if (c->payload != NULL) grpc_byte_buffer_destroy(c->payload);
  c->payload = NULL;
out:
  if (st == KYSO_OK)
    c->method->handler(c, srv->app);
  else
    rpc_call_finish(c, st, msg, NULL, 0);
}

const uint8_t *rpc_call_request(const rpc_call *c, size_t *len) {
  static const uint8_t empty[1];
  *len = c->req.len;
  return c->req.data ? c->req.data : empty;
}

const rpc_peer *rpc_call_peer(const rpc_call *c) { return &c->peer; }

const char *rpc_call_method(const rpc_call *c) {
  return c->method ? c->method->path : c->path;
}

int64_t rpc_call_remaining_ms(const rpc_call *c) {
  if (gpr_time_cmp(c->deadline, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0) return INT64_MAX;
  gpr_timespec left = gpr_time_sub(c->deadline, gpr_now(GPR_CLOCK_MONOTONIC));
  return left.tv_sec * 1000 + left.tv_nsec / 1000000;
}

void rpc_call_finish(rpc_call *c, kyso_status code, const char *msg,
                     const uint8_t *resp, size_t resp_len) {
  char toobig[160];
  grpc_op ops[3];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  if (code == KYSO_OK && resp_len > c->srv->max_message) {
    snprintf(toobig, sizeof(toobig), "response of %zu bytes exceeds the %zu-byte message limit",
             resp_len, c->srv->max_message);
    code = KYSO_RESOURCE_EXHAUSTED;
    msg = toobig;
  }
  if (msg == NULL || msg[0] == '\0') msg = code == KYSO_OK ? "" : kyso_strerror(code);
  if (!c->md_sent) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  /* A server-streaming call has sent its messages; resp, if any, is one more. */
  int server_streams = c->method != NULL && c->method->kind == RPC_SERVER_STREAMING;
  if (code == KYSO_OK && (resp != NULL || !server_streams)) {
    grpc_slice s = resp_len ? grpc_slice_from_copied_buffer((const char *)resp, resp_len)
                            : grpc_empty_slice();
    c->resp = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->resp;
  }
  c->status_msg = grpc_slice_from_copied_string(msg);
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)kyso_status_to_grpc(code);
  ops[n++].data.send_status_from_server.status_details = msg[0] ? &c->status_msg : NULL;
  /* Once the batch starts, the completion-queue thread may free c at any
   * moment: nothing of c is read after the release below. */
  grpc_call *gc = c->call;
  rpc__tag *tag = &c->finish_tag;
  atomic_store_explicit(&c->finished, 1, memory_order_release);
  grpc_call_error rc = grpc_call_start_batch(gc, ops, n, tag, NULL);
  if (rc != GRPC_CALL_OK) {
    kyso_log(KYSO_LOG_ERROR, "rpc: cannot finish call to '%s': %s", rpc_call_method(c),
             grpc_call_error_to_string(rc));
    grpc_call_cancel(c->call, NULL);
    call_unref(c);
  }
}
