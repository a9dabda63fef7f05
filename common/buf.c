/* kyso — capped growable buffer and whole-file helpers. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kyso/util.h"

void kyso_buf_init(kyso_buf *b, size_t max) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
}

kyso_status kyso_buf_append(kyso_buf *b, const void *p, size_t n,
                            const char *what, kyso_err *err) {
  if (n > b->max - b->len)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                     "%s is larger than the limit of %zu bytes", what, b->max);
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap = cap > b->max / 2 ? b->max : cap * 2;
    uint8_t *d = realloc(b->data, cap);
    if (d == NULL)
      return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for %s", what);
    b->data = d;
    b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return KYSO_OK;
}

void kyso_buf_free(kyso_buf *b, int wipe) {
  if (b == NULL) return;
  if (wipe && b->data) kyso_wipe(b->data, b->cap);
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

void kyso_hex(const uint8_t *p, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = '\0';
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

kyso_status kyso_unhex(const char *hex, uint8_t *out, size_t n, const char *what,
                       kyso_err *err) {
  if (hex == NULL || strlen(hex) != 2 * n)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s must be %zu hex digits", what, 2 * n);
  for (size_t i = 0; i < n; i++) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s must be %zu hex digits", what, 2 * n);
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return KYSO_OK;
}

kyso_status kyso_read_file(const char *path, size_t max, kyso_buf *out,
                           kyso_err *err) {
  kyso_status st = KYSO_OK;
  uint8_t chunk[16384];
  kyso_buf_init(out, max);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return kyso_fail(err, errno == ENOENT ? KYSO_NOT_FOUND : KYSO_FAILED_PRECONDITION,
                     "cannot open '%s': %s", path, strerror(errno));
  for (;;) {
    size_t n = fread(chunk, 1, sizeof(chunk), f);
    if (n > 0 && (st = kyso_buf_append(out, chunk, n, path, err)) != KYSO_OK) goto out;
    if (n < sizeof(chunk)) break;
  }
  if (ferror(f)) st = kyso_fail(err, KYSO_INTERNAL, "cannot read '%s'", path);
out:
  kyso_wipe(chunk, sizeof(chunk));
  fclose(f);
  if (st != KYSO_OK) kyso_buf_free(out, 1);
  return st;
}

kyso_status kyso_write_file_atomic(const char *path, const void *data,
                                   size_t len, unsigned mode, kyso_err *err) {
  kyso_status st = KYSO_OK;
  char tmp[4096], dir[4096];
  int fd = -1, dfd = -1;
  if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "path too long: '%s'", path);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot create '%s': %s", tmp, strerror(errno));
    goto out;
  }
  const uint8_t *p = data;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      st = kyso_fail(err, KYSO_INTERNAL, "cannot write '%s': %s", tmp, strerror(errno));
      goto out;
    }
    p += w;
    len -= (size_t)w;
  }
  if (fsync(fd) != 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot sync '%s': %s", tmp, strerror(errno));
    goto out;
  }
  int rc = close(fd);
  fd = -1;
  if (rc != 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot close '%s': %s", tmp, strerror(errno));
    goto out;
  }
  if (rename(tmp, path) != 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    goto out;
  }
  snprintf(dir, sizeof(dir), "%s", path);
  /* Without this the rename may not survive a power loss: not optional. */
  dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || fsync(dfd) != 0)
    st = kyso_fail(err, KYSO_INTERNAL, "cannot sync directory of '%s': %s", path, strerror(errno));
out:
  if (fd >= 0) close(fd);
  if (dfd >= 0) close(dfd);
  if (st != KYSO_OK) unlink(tmp);
  return st;
}

int64_t kyso_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
