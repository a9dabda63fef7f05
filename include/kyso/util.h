/* kyso — small shared utilities: a capped growable buffer, hex, files. */
#ifndef KYSO_UTIL_H
#define KYSO_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "kyso/status.h"

/* A growable byte buffer with a maximum fixed at birth: every buffer fed from
 * the network or a file cannot grow past what its caller allowed. */
typedef struct kyso_buf {
  uint8_t *data;
  size_t len;
  size_t cap;
  size_t max;
} kyso_buf;

void kyso_buf_init(kyso_buf *b, size_t max);
/* RESOURCE_EXHAUSTED (naming `what`) if len + n would pass max. */
kyso_status kyso_buf_append(kyso_buf *b, const void *p, size_t n,
                            const char *what, kyso_err *err);
/* Frees the storage (wiping it first when `wipe` is set); b stays reusable. */
void kyso_buf_free(kyso_buf *b, int wipe);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void kyso_hex(const uint8_t *p, size_t n, char *out);

/* Parses exactly 2n hex digits into n bytes; INVALID_ARGUMENT naming what. */
kyso_status kyso_unhex(const char *hex, uint8_t *out, size_t n, const char *what,
                       kyso_err *err) KYSO_MUST_CHECK;

/* Reads a whole file into a new buffer of at most max bytes (caller frees
 * with kyso_buf_free). NOT_FOUND / RESOURCE_EXHAUSTED / INTERNAL, naming path. */
kyso_status kyso_read_file(const char *path, size_t max, kyso_buf *out,
                           kyso_err *err);

/* Writes data to path atomically and durably: temp file, fsync, rename,
 * fsync of the directory. mode is the new file's permission bits. */
kyso_status kyso_write_file_atomic(const char *path, const void *data,
                                   size_t len, unsigned mode, kyso_err *err);

/* Milliseconds on a monotonic clock. */
int64_t kyso_now_ms(void);

#endif
