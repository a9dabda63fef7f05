/* kyso — internals of the client library (cli/client/), shared by its files. */
#ifndef KYSO_CLI_CLIENT_INTERNAL_H
#define KYSO_CLI_CLIENT_INTERNAL_H

#include <grpc/grpc.h>

#include "kyso/client.h"

struct kyso_client {
  grpc_channel *ch;
  size_t max_message;
  int grpc_ready;   /* grpc_init() done, grpc_shutdown() owed */
};

/* The absolute deadline for a call of timeout_ms (<= 0: none). */
gpr_timespec kyso_client__deadline(int64_t timeout_ms);
/* Copies a received message into *data (malloc()ed, NULL when empty). */
kyso_status kyso_client__read_message(grpc_byte_buffer *bb, size_t max, uint8_t **data,
                                      size_t *len, kyso_err *err);

#endif
