/* kyso — one status vocabulary for every module, mapped once to gRPC codes. */
#ifndef KYSO_STATUS_H
#define KYSO_STATUS_H

#include <stddef.h>

/* X(name, grpc_code, text): grpc_code is the grpc_status_code the server edge sends. */
#define KYSO_STATUS_MAP(X)                                                   \
  X(OK, 0, "ok")                                                             \
  X(CANCELLED, 1, "cancelled")                                               \
  X(INVALID_ARGUMENT, 3, "invalid argument")                                 \
  X(DEADLINE_EXCEEDED, 4, "deadline exceeded")                               \
  X(NOT_FOUND, 5, "not found")                                               \
  X(ALREADY_EXISTS, 6, "already exists")                                     \
  X(PERMISSION_DENIED, 7, "permission denied")                               \
  X(RESOURCE_EXHAUSTED, 8, "resource exhausted")                             \
  X(FAILED_PRECONDITION, 9, "failed precondition")                           \
  X(ABORTED, 10, "aborted")                                                  \
  X(OUT_OF_RANGE, 11, "out of range")                                        \
  X(UNIMPLEMENTED, 12, "unimplemented")                                      \
  X(INTERNAL, 13, "internal error")                                          \
  X(UNAVAILABLE, 14, "unavailable")                                          \
  X(DATA_LOSS, 15, "data loss")                                              \
  X(UNAUTHENTICATED, 16, "unauthenticated")

typedef enum {
#define KYSO__ENUM(name, grpc, text) KYSO_##name,
  KYSO_STATUS_MAP(KYSO__ENUM)
#undef KYSO__ENUM
} kyso_status;

#define KYSO_ERR_MSG_MAX 512

/* An error: a status plus a message naming the thing that failed. */
typedef struct kyso_err {
  kyso_status code;
  char msg[KYSO_ERR_MSG_MAX];
} kyso_err;

#if defined(__GNUC__)
#define KYSO_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define KYSO_MUST_CHECK __attribute__((warn_unused_result))
#else
#define KYSO_PRINTF(f, a)
#define KYSO_MUST_CHECK
#endif

/* Sets *err (err may be NULL) and returns code, so callers write
 *   return kyso_fail(err, KYSO_NOT_FOUND, "key '%s' not found", label); */
kyso_status kyso_fail(kyso_err *err, kyso_status code, const char *fmt, ...)
    KYSO_PRINTF(3, 4);

/* Prefixes err->msg with context ("loading config: ...") and returns err->code. */
kyso_status kyso_err_wrap(kyso_err *err, const char *fmt, ...) KYSO_PRINTF(2, 3);

void kyso_err_clear(kyso_err *err);
const char *kyso_strerror(kyso_status code);
int kyso_status_to_grpc(kyso_status code);
/* The inverse, for a status another node answered (INTERNAL for codes kyso never sends). */
kyso_status kyso_status_from_grpc(int grpc);

/* Appends OpenSSL's error queue (and clears it) to err->msg; returns err->code. */
kyso_status kyso_err_add_openssl(kyso_err *err);

/* Overwrites n bytes in a way the compiler may not elide (PINs, key material). */
void kyso_wipe(void *p, size_t n);

#endif
