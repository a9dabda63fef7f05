/* archive — storing blobs: whole-blob puts, inline blobs that ride in a
 * command's batch, and the manifest that makes a blob exist. Chunks go
 * first, the manifest last: a crash in between leaves orphan chunks (scrub
 * reports them), never a manifest without its bytes. */
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive_internal.h"
#include "kyso/util.h"

static size_t chunk_count(uint64_t size, uint32_t chunk) {
  return (size_t)((size + chunk - 1) / chunk);
}

/* Packs a BlobManifest from n chunk hashes (32 bytes each, back to back). */
static kyso_status pack_manifest(uint64_t size, uint32_t chunk, const uint8_t *hashes, size_t n,
                                 uint8_t **out, size_t *out_len, kyso_err *err) {
  Kyso__Store__V1__BlobManifest m = KYSO__STORE__V1__BLOB_MANIFEST__INIT;
  ProtobufCBinaryData *h = calloc(n ? n : 1, sizeof(*h));
  if (h == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for a blob manifest");
  for (size_t i = 0; i < n; i++) {
    h[i].data = (uint8_t *)hashes + 32 * i;
    h[i].len = 32;
  }
  m.size = size;
  m.chunk_size = chunk;
  m.chunk_sha256 = h;
  m.n_chunk_sha256 = n;
  size_t len = kyso__store__v1__blob_manifest__get_packed_size(&m);
  *out = malloc(len ? len : 1);
  if (*out != NULL) *out_len = kyso__store__v1__blob_manifest__pack(&m, *out);
  free(h);
  if (*out == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for a blob manifest");
  return KYSO_OK;
}

/* Chunk hashes of data (n x 32 bytes, malloc()ed) and its whole hash. */
static kyso_status hash_chunks(archive *a, const uint8_t *data, size_t len, uint8_t sha256[32],
                               uint8_t **hashes, kyso_err *err) {
  size_t n = chunk_count(len, a->chunk_size);
  if ((*hashes = malloc(n ? 32 * n : 1)) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory hashing a document");
  for (size_t i = 0; i < n; i++) {
    size_t off = i * a->chunk_size, m = len - off < a->chunk_size ? len - off : a->chunk_size;
    archive__sha256(data + off, m, *hashes + 32 * i);
  }
  archive__sha256(data, len, sha256);
  return KYSO_OK;
}

kyso_status archive__blob_manifest(archive *a, const uint8_t *data, size_t len, uint8_t sha256[32],
                                   uint8_t **manifest, size_t *manifest_len, kyso_err *err) {
  uint8_t *hashes = NULL;
  kyso_status st = hash_chunks(a, data, len, sha256, &hashes, err);
  if (st == KYSO_OK)
    st = pack_manifest(len, a->chunk_size, hashes, chunk_count(len, a->chunk_size), manifest,
                       manifest_len, err);
  free(hashes);
  return st;
}

kyso_status archive__blob_into_batch(archive *a, rocksdb_writebatch_wi_t *wb,
                                     const uint8_t sha256[32], const uint8_t *data, size_t len,
                                     const uint8_t *manifest, size_t manifest_len, int *added,
                                     kyso_err *err) {
  uint8_t *v = NULL, key[ARCHIVE__CHUNK_KEY];
  size_t n = 0;
  *added = 0;
  archive__touch(a, sha256);
  kyso_status st = archive__get_wb(a, wb, ARCHIVE__CF_MANIFESTS, sha256, 32, &v, &n, err);
  free(v);
  if (st != KYSO_NOT_FOUND) return st; /* stored already (OK), or a read error */
  for (size_t i = 0, off = 0; off < len; i++, off += a->chunk_size) {
    archive__chunk_key(sha256, (uint32_t)i, key);
    rocksdb_writebatch_wi_put_cf(wb, a->cf[ARCHIVE__CF_BLOBS], (const char *)key, sizeof(key),
                                 (const char *)data + off,
                                 len - off < a->chunk_size ? len - off : a->chunk_size);
  }
  rocksdb_writebatch_wi_put_cf(wb, a->cf[ARCHIVE__CF_MANIFESTS], (const char *)sha256, 32,
                               (const char *)manifest, manifest_len);
  *added = 1;
  return KYSO_OK;
}

/* Reads chunk i of a staged upload and checks it is what was hashed while
 * it streamed in. */
static kyso_status staged_chunk(archive *a, int fd, uint64_t off, size_t m, const uint8_t *want,
                                uint8_t *buf, size_t i, kyso_err *err) {
  uint8_t got[32];
  for (size_t done = 0; done < m;) {
    ssize_t r = pread(fd, buf + done, m - done, (off_t)(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      return kyso_fail(err, KYSO_INTERNAL, "cannot read back the staged upload in '%s': %s",
                       a->staging, r < 0 ? strerror(errno) : "file is short");
    done += (size_t)r;
  }
  archive__sha256(buf, m, got);
  if (memcmp(got, want, 32) != 0)
    return kyso_fail(err, KYSO_DATA_LOSS,
                     "the staged upload changed on disk in '%s' before it was stored (chunk %zu); "
                     "nothing was stored: check the disk and send it again",
                     a->staging, i);
  return KYSO_OK;
}

/* Writes a blob's chunks from memory or a staged file in synced batches of
 * ARCHIVE__CHUNKS_PER_WRITE, the manifest in the last one. */
kyso_status archive__store_chunks(archive *a, const uint8_t sha256[32], uint64_t size,
                                  const uint8_t *hashes, const uint8_t *mem, int fd,
                                  kyso_err *err) {
  size_t n = chunk_count(size, a->chunk_size), manifest_len = 0;
  uint8_t key[ARCHIVE__CHUNK_KEY], *manifest = NULL, *buf = NULL;
  rocksdb_writebatch_t *b = rocksdb_writebatch_create();
  kyso_status st = pack_manifest(size, a->chunk_size, hashes, n, &manifest, &manifest_len, err);
  if (st == KYSO_OK && mem == NULL && n > 0 && (buf = malloc(a->chunk_size)) == NULL)
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory storing a document");
  for (size_t i = 0; st == KYSO_OK && i < n; i++) {
    uint64_t off = (uint64_t)i * a->chunk_size;
    size_t m = size - off < a->chunk_size ? (size_t)(size - off) : a->chunk_size;
    const uint8_t *p = mem != NULL ? mem + off : buf;
    if (mem == NULL && (st = staged_chunk(a, fd, off, m, hashes + 32 * i, buf, i, err)) != KYSO_OK)
      break;
    archive__chunk_key(sha256, (uint32_t)i, key);
    rocksdb_writebatch_put_cf(b, a->cf[ARCHIVE__CF_BLOBS], (const char *)key, sizeof(key),
                              (const char *)p, m);
    if ((i + 1) % ARCHIVE__CHUNKS_PER_WRITE == 0 && i + 1 < n) {
      st = archive__write(a, b, "document chunks", err);
      rocksdb_writebatch_clear(b);
    }
  }
  if (st == KYSO_OK) {
    rocksdb_writebatch_put_cf(b, a->cf[ARCHIVE__CF_MANIFESTS], (const char *)sha256, 32,
                              (const char *)manifest, manifest_len);
    st = archive__write(a, b, "a document", err);
  }
  if (st == KYSO_OK) {
    atomic_fetch_add(&a->st_blob_writes, 1);
    atomic_fetch_add(&a->st_blob_bytes, size);
  }
  rocksdb_writebatch_destroy(b);
  free(manifest);
  free(buf);
  return st;
}

kyso_status archive_put_blob(archive *a, const uint8_t *data, size_t len, uint8_t sha256[32],
                             kyso_err *err) {
  uint8_t *hashes = NULL, *v = NULL;
  size_t n = 0;
  if (data == NULL && len > 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "no bytes given for a document of %zu bytes", len);
  if (len > a->max_document)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                     "a document of %zu bytes is larger than this archive's limit of %llu bytes",
                     len, (unsigned long long)a->max_document);
  kyso_status st = hash_chunks(a, data ? data : (const uint8_t *)"", len, sha256, &hashes, err);
  if (st != KYSO_OK) return st;
  archive__touch(a, sha256);
  st = archive__get(a, NULL, ARCHIVE__CF_MANIFESTS, sha256, 32, &v, &n, err);
  free(v);
  if (st == KYSO_NOT_FOUND)
    st = archive__store_chunks(a, sha256, len, hashes, data ? data : (const uint8_t *)"", -1, err);
  free(hashes);
  return st;
}
