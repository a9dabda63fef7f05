/* kyso — a gRPC C core client for the kyso CLI, tests and benchmarks:
 * one channel, unary calls on raw bytes (protobuf encoding is the caller's). */
#ifndef KYSO_CLIENT_H
#define KYSO_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "kyso/status.h"

typedef struct kyso_client kyso_client;

typedef struct kyso_client_opts {
  const char *target;         /* "127.0.0.1:7443" */
  const char *ca_file;        /* PEM trust anchors for the server certificate */
  const char *cert_file;      /* client certificate (PEM), optional */
  const char *key_file;       /* its private key (PEM), optional */
  const char *server_name;    /* TLS name override (e.g. "localhost"), optional */
  int insecure;               /* plaintext channel; only for tests of the rpc layer */
  size_t max_message;         /* receive limit, default KYSO_MAX_MESSAGE */
} kyso_client_opts;

/* The outcome of one call. */
typedef struct kyso_reply {
  int grpc_status;            /* grpc_status_code */
  char message[512];          /* grpc status details */
  uint8_t *data;              /* response bytes (malloc()ed), NULL if none */
  size_t len;
} kyso_reply;

kyso_status kyso_client_open(const kyso_client_opts *opts, kyso_client **out,
                             kyso_err *err) KYSO_MUST_CHECK;
void kyso_client_close(kyso_client *c);

/* One unary call. Returns OK whenever the call completed with some gRPC status
 * (read reply->grpc_status); an error only if it could not be made at all.
 * timeout_ms <= 0 means no deadline. Thread-safe: one client, many threads. */
kyso_status kyso_client_call(kyso_client *c, const char *method,
                             const uint8_t *req, size_t req_len,
                             int64_t timeout_ms, kyso_reply *reply,
                             kyso_err *err) KYSO_MUST_CHECK;
void kyso_reply_free(kyso_reply *reply);

/* Streaming calls (client-, server- or bidirectional streaming methods),
 * used from one thread at a time. */
typedef struct kyso_stream kyso_stream;

kyso_status kyso_stream_open(kyso_client *c, const char *method, int64_t timeout_ms,
                             kyso_stream **out, kyso_err *err) KYSO_MUST_CHECK;
/* Sends one request message (copied); waits until gRPC took it. An error
 * here usually means the server already ended the call: kyso_stream_finish
 * then tells why. */
kyso_status kyso_stream_send(kyso_stream *s, const uint8_t *data, size_t len,
                             kyso_err *err) KYSO_MUST_CHECK;
/* Half-closes: no more request messages. */
kyso_status kyso_stream_close_send(kyso_stream *s, kyso_err *err) KYSO_MUST_CHECK;
/* Next response message into *data (malloc()ed, caller frees); *end = 1 and
 * *data = NULL when the server has no more. */
kyso_status kyso_stream_recv(kyso_stream *s, uint8_t **data, size_t *len, int *end,
                             kyso_err *err) KYSO_MUST_CHECK;
/* Waits for the call's status into reply->grpc_status/message (reply->data
 * stays NULL) and frees the stream. Half-closes first if that was not done,
 * and drops response messages not yet received (the status comes after them). */
kyso_status kyso_stream_finish(kyso_stream *s, kyso_reply *reply, kyso_err *err) KYSO_MUST_CHECK;
/* Cancels the call and frees the stream (NULL is fine). */
void kyso_stream_cancel(kyso_stream *s);

#endif
