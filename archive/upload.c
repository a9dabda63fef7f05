/* archive — streaming uploads. Bytes go to an unnamed file under
 * dir/staging while they are hashed (whole and per chunk); finish checks
 * the caller's expected hash, skips blobs already stored, and otherwise
 * writes the chunks back from the file, each re-checked. Memory per upload:
 * the chunk hashes and, in finish, one chunk plus one write batch. */
#define _GNU_SOURCE 1 /* O_TMPFILE */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive_internal.h"
#include "kyso/util.h"

struct archive_upload {
  archive *a;
  int fd;
  uint64_t size;
  uint32_t in_chunk; /* bytes of the current chunk hashed so far */
  EVP_MD_CTX *whole, *chunk;
  uint8_t *hashes; /* 32 bytes per finished chunk */
  size_t n_hashes, cap_hashes;
};

/* An unnamed temp file: O_TMPFILE where the filesystem has it, otherwise
 * mkstemp and an immediate unlink. Either way a crash leaves no file. */
static int staging_file(const char *dir) {
  int fd = open(dir, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd;
  char path[4096];
  if (snprintf(path, sizeof(path), "%s/upload-XXXXXX", dir) >= (int)sizeof(path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  if ((fd = mkstemp(path)) >= 0) unlink(path);
  return fd;
}

void archive_upload_abort(archive_upload *u) {
  if (u == NULL) return;
  if (u->fd >= 0) close(u->fd);
  EVP_MD_CTX_free(u->whole);
  EVP_MD_CTX_free(u->chunk);
  free(u->hashes);
  free(u);
}

kyso_status archive_upload_begin(archive *a, archive_upload **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  archive_upload *u = calloc(1, sizeof(*u));
  *out = NULL;
  if (u == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for an upload");
  u->a = a;
  u->fd = staging_file(a->staging);
  if (u->fd < 0) {
    st = kyso_fail(err, KYSO_UNAVAILABLE, "cannot create a staging file in '%s': %s", a->staging,
                   strerror(errno));
    goto out;
  }
  u->whole = EVP_MD_CTX_new();
  u->chunk = EVP_MD_CTX_new();
  if (u->whole == NULL || u->chunk == NULL ||
      EVP_DigestInit_ex(u->whole, EVP_sha256(), NULL) != 1 ||
      EVP_DigestInit_ex(u->chunk, EVP_sha256(), NULL) != 1) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot start SHA-256 for an upload");
    goto out;
  }
  *out = u;
  u = NULL;
out:
  archive_upload_abort(u);
  return st;
}

/* Ends the current chunk's hash and starts the next. */
static kyso_status end_chunk(archive_upload *u, kyso_err *err) {
  if (u->n_hashes == u->cap_hashes) {
    size_t cap = u->cap_hashes ? 2 * u->cap_hashes : 16;
    uint8_t *h = realloc(u->hashes, 32 * cap);
    if (h == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for an upload");
    u->hashes = h;
    u->cap_hashes = cap;
  }
  if (EVP_DigestFinal_ex(u->chunk, u->hashes + 32 * u->n_hashes, NULL) != 1 ||
      EVP_DigestInit_ex(u->chunk, EVP_sha256(), NULL) != 1)
    return kyso_fail(err, KYSO_INTERNAL, "SHA-256 failed during an upload");
  u->n_hashes++;
  u->in_chunk = 0;
  return KYSO_OK;
}

kyso_status archive_upload_write(archive_upload *u, const uint8_t *data, size_t len,
                                 kyso_err *err) {
  kyso_status st;
  if (len > u->a->max_document - u->size)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                     "the document is larger than this archive's limit of %llu bytes",
                     (unsigned long long)u->a->max_document);
  for (size_t done = 0; done < len;) {
    ssize_t w = write(u->fd, data + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0)
      return kyso_fail(err, errno == ENOSPC ? KYSO_RESOURCE_EXHAUSTED : KYSO_UNAVAILABLE,
                       "cannot stage the upload in '%s': %s", u->a->staging, strerror(errno));
    done += (size_t)w;
  }
  if (EVP_DigestUpdate(u->whole, data, len) != 1)
    return kyso_fail(err, KYSO_INTERNAL, "SHA-256 failed during an upload");
  for (size_t off = 0; off < len;) {
    size_t take = u->a->chunk_size - u->in_chunk;
    if (take > len - off) take = len - off;
    if (EVP_DigestUpdate(u->chunk, data + off, take) != 1)
      return kyso_fail(err, KYSO_INTERNAL, "SHA-256 failed during an upload");
    u->in_chunk += (uint32_t)take;
    off += take;
    if (u->in_chunk == u->a->chunk_size && (st = end_chunk(u, err)) != KYSO_OK) return st;
  }
  u->size += len;
  return KYSO_OK;
}

kyso_status archive_upload_finish(archive_upload *u, const uint8_t *expect_sha256,
                                  uint8_t sha256[32], uint64_t *size, kyso_err *err) {
  kyso_status st = KYSO_OK;
  uint8_t id[32], *v = NULL;
  size_t n = 0;
  char got[65], want[65];
  if (u->in_chunk > 0 && (st = end_chunk(u, err)) != KYSO_OK) goto out;
  if (EVP_DigestFinal_ex(u->whole, id, NULL) != 1) {
    st = kyso_fail(err, KYSO_INTERNAL, "SHA-256 failed during an upload");
    goto out;
  }
  if (expect_sha256 != NULL && memcmp(expect_sha256, id, 32) != 0) {
    kyso_hex(id, 32, got);
    kyso_hex(expect_sha256, 32, want);
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "the uploaded bytes are %s, not the expected %s; nothing was stored", got, want);
    goto out;
  }
  archive__touch(u->a, id);
  st = archive__get(u->a, NULL, ARCHIVE__CF_MANIFESTS, id, 32, &v, &n, err);
  free(v);
  if (st == KYSO_NOT_FOUND) /* the same bytes stored twice are stored once */
    st = archive__store_chunks(u->a, id, u->size, u->hashes, NULL, u->fd, err);
  if (st != KYSO_OK) goto out;
  memcpy(sha256, id, 32);
  if (size != NULL) *size = u->size;
out:
  archive_upload_abort(u);
  return st;
}
