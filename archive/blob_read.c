/* archive — reading blobs. Every chunk is checked against the hash its
 * manifest recorded before it is handed out, and the whole blob against its
 * id before the last chunk is: altered, missing or unreadable bytes are
 * DATA_LOSS naming the id, never returned. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"
#include "kyso/util.h"

struct archive_reader {
  archive *a;
  const rocksdb_readoptions_t *ro;
  uint8_t id[32];
  char hex[65];
  Kyso__Store__V1__BlobManifest *m;
  size_t next; /* chunk handed out next */
  uint64_t off;
  EVP_MD_CTX *whole;
  rocksdb_pinnableslice_t *cur;
  int done;
  kyso_status failed; /* sticky: a damaged blob stays damaged */
  kyso_err failed_err;
};

kyso_status archive__manifest_get(archive *a, const rocksdb_readoptions_t *ro,
                                  const uint8_t sha256[32], Kyso__Store__V1__BlobManifest **out,
                                  kyso_err *err) {
  uint8_t *v = NULL;
  size_t n = 0;
  char hex[65];
  *out = NULL;
  kyso_hex(sha256, 32, hex);
  archive__touch(a, sha256);
  kyso_status st = archive__get(a, ro, ARCHIVE__CF_MANIFESTS, sha256, 32, &v, &n, err);
  if (st == KYSO_NOT_FOUND)
    return kyso_fail(err, KYSO_NOT_FOUND, "document %s is not in the archive", hex);
  if (st != KYSO_OK) return kyso_err_wrap(err, "reading document %s", hex);
  Kyso__Store__V1__BlobManifest *m = kyso__store__v1__blob_manifest__unpack(NULL, n, v);
  free(v);
  int ok = m != NULL && m->chunk_size > 0 &&
           m->n_chunk_sha256 == m->size / m->chunk_size + (m->size % m->chunk_size != 0);
  for (size_t i = 0; ok && i < m->n_chunk_sha256; i++) ok = m->chunk_sha256[i].len == 32;
  if (!ok) {
    kyso__store__v1__blob_manifest__free_unpacked(m, NULL);
    return kyso_fail(err, KYSO_DATA_LOSS,
                     "archived document %s is damaged: its manifest is unreadable", hex);
  }
  *out = m;
  return KYSO_OK;
}

kyso_status archive_blob_size(archive *a, const uint8_t sha256[32], uint64_t *size, kyso_err *err) {
  Kyso__Store__V1__BlobManifest *m = NULL;
  kyso_status st = archive__manifest_get(a, NULL, sha256, &m, err);
  if (st == KYSO_OK) *size = m->size;
  kyso__store__v1__blob_manifest__free_unpacked(m, NULL);
  return st;
}

void archive_reader_close(archive_reader *r) {
  if (r == NULL) return;
  if (r->cur != NULL) rocksdb_pinnableslice_destroy(r->cur);
  kyso__store__v1__blob_manifest__free_unpacked(r->m, NULL);
  EVP_MD_CTX_free(r->whole);
  free(r);
}

kyso_status archive__reader_open_ro(archive *a, const rocksdb_readoptions_t *ro,
                                    const uint8_t sha256[32], archive_reader **out, kyso_err *err) {
  kyso_status st;
  archive_reader *r = calloc(1, sizeof(*r));
  *out = NULL;
  if (r == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory opening a document");
  r->a = a;
  r->ro = ro ? ro : a->ro;
  memcpy(r->id, sha256, 32);
  kyso_hex(sha256, 32, r->hex);
  if ((st = archive__manifest_get(a, r->ro, sha256, &r->m, err)) != KYSO_OK) goto out;
  if ((r->whole = EVP_MD_CTX_new()) == NULL ||
      EVP_DigestInit_ex(r->whole, EVP_sha256(), NULL) != 1) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot start SHA-256 reading document %s", r->hex);
    goto out;
  }
  *out = r;
  r = NULL;
out:
  archive_reader_close(r);
  return st;
}

kyso_status archive_reader_open(archive *a, const uint8_t sha256[32], archive_reader **out,
                                kyso_err *err) {
  return archive__reader_open_ro(a, NULL, sha256, out, err);
}

/* After the last chunk: the whole blob must hash to its id. */
static kyso_status check_whole(archive_reader *r, kyso_err *err) {
  uint8_t got[32];
  r->done = 1;
  if (EVP_DigestFinal_ex(r->whole, got, NULL) != 1)
    return kyso_fail(err, KYSO_INTERNAL, "SHA-256 failed reading document %s", r->hex);
  if (memcmp(got, r->id, 32) != 0)
    return kyso_fail(err, KYSO_DATA_LOSS,
                     "archived document %s is damaged: its bytes no longer hash to its id "
                     "(the manifest was altered)",
                     r->hex);
  return KYSO_OK;
}

static kyso_status next_chunk(archive_reader *r, const uint8_t **data, size_t *len, kyso_err *err) {
  uint8_t key[ARCHIVE__CHUNK_KEY], got[32];
  char *e = NULL;
  size_t n = r->m->n_chunk_sha256, vlen = 0;
  if (r->next == n) return r->done ? KYSO_OK : check_whole(r, err);
  archive__chunk_key(r->id, (uint32_t)r->next, key);
  r->cur = rocksdb_get_pinned_cf(r->a->db, r->ro, r->a->cf[ARCHIVE__CF_BLOBS], (const char *)key,
                                 sizeof(key), &e);
  if (e != NULL)
    return archive__rocks_fail(err, e, "archived document %s%s: chunk %zu cannot be read", r->hex,
                               strncmp(e, "Corruption", 10) == 0 ? " is damaged" : "", r->next);
  if (r->cur == NULL)
    return kyso_fail(err, KYSO_DATA_LOSS,
                     "archived document %s is damaged: chunk %zu of %zu is missing", r->hex,
                     r->next, n);
  const uint8_t *v = (const uint8_t *)rocksdb_pinnableslice_value(r->cur, &vlen);
  uint64_t want = r->m->size - r->off < r->m->chunk_size ? r->m->size - r->off : r->m->chunk_size;
  if (vlen != want)
    return kyso_fail(
        err, KYSO_DATA_LOSS,
        "archived document %s is damaged: chunk %zu is %zu bytes, its manifest says %llu", r->hex,
        r->next, vlen, (unsigned long long)want);
  archive__sha256(v, vlen, got);
  if (memcmp(got, r->m->chunk_sha256[r->next].data, 32) != 0)
    return kyso_fail(err, KYSO_DATA_LOSS,
                     "archived document %s is damaged: chunk %zu does not match its recorded hash",
                     r->hex, r->next);
  if (EVP_DigestUpdate(r->whole, v, vlen) != 1)
    return kyso_fail(err, KYSO_INTERNAL, "SHA-256 failed reading document %s", r->hex);
  r->next++;
  r->off += vlen;
  if (r->next == n) {
    kyso_status st = check_whole(r, err);
    if (st != KYSO_OK) return st;
  }
  *data = v;
  *len = vlen;
  return KYSO_OK;
}

kyso_status archive_reader_next(archive_reader *r, const uint8_t **data, size_t *len,
                                kyso_err *err) {
  *data = NULL;
  *len = 0;
  if (r->failed != KYSO_OK) {
    if (err != NULL) *err = r->failed_err;
    return r->failed;
  }
  if (r->cur != NULL) {
    rocksdb_pinnableslice_destroy(r->cur);
    r->cur = NULL;
  }
  kyso_err local = {0};
  kyso_status st = next_chunk(r, data, len, &local);
  if (st != KYSO_OK) {
    r->failed = st;
    r->failed_err = local;
    *data = NULL;
    *len = 0;
    if (err != NULL) *err = local;
  }
  return st;
}

kyso_status archive_read_blob(archive *a, const uint8_t sha256[32], size_t max, uint8_t **data,
                              size_t *len, kyso_err *err) {
  archive_reader *r = NULL;
  uint8_t *buf = NULL;
  size_t have = 0;
  *data = NULL;
  *len = 0;
  kyso_status st = archive_reader_open(a, sha256, &r, err);
  if (st != KYSO_OK) return st;
  if (r->m->size > max) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "document %s is %llu bytes, more than %zu", r->hex,
                   (unsigned long long)r->m->size, max);
    goto out;
  }
  if ((buf = malloc(r->m->size ? (size_t)r->m->size : 1)) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory reading document %s", r->hex);
    goto out;
  }
  for (;;) {
    const uint8_t *p;
    size_t n;
    if ((st = archive_reader_next(r, &p, &n, err)) != KYSO_OK || n == 0) break;
    memcpy(buf + have, p, n);
    have += n;
  }
  if (st == KYSO_OK) {
    *data = buf;
    *len = have;
    buf = NULL;
  }
out:
  free(buf);
  archive_reader_close(r);
  return st;
}
