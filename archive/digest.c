/* archive — the state digest: one SHA-256 over the logical contents of the
 * records (documents, signatures, certificates, indexes, idempotency
 * entries, the key registry), in key order, read from one snapshot together with the applied
 * index. Two replicas that applied the same entries have the same digest,
 * whatever their files look like. The blob tier is left out: it is
 * node-local by design (a follower may still be fetching, and a leader that
 * lost its leadership between copying a document and committing it holds
 * bytes nobody recorded until they are collected); every record's document
 * is checked separately, by hash. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"

static const int digest_cfs[] = {ARCHIVE__CF_DOCUMENTS, ARCHIVE__CF_SIGNATURES, ARCHIVE__CF_CERTIFICATES,
                                 ARCHIVE__CF_INDEXES, ARCHIVE__CF_REQUESTS, ARCHIVE__CF_KEYS};

static void add_len(EVP_MD_CTX *md, size_t n) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
  EVP_DigestUpdate(md, b, 8);
}

kyso_status archive_state_digest(archive *a, uint8_t out[32], uint64_t *applied,
                                 uint64_t *records, kyso_err *err) {
  kyso_status st = KYSO_OK;
  const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(a->db);
  rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  *records = 0;
  *applied = 0;
  rocksdb_readoptions_set_snapshot(ro, snap);
  rocksdb_readoptions_set_verify_checksums(ro, 1);
  rocksdb_readoptions_set_fill_cache(ro, 0);
  if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "cannot start a SHA-256");
    goto out;
  }
  /* The applied index, from the same snapshot. */
  static const char key[] = "raft_applied_index";
  uint8_t *v = NULL;
  size_t vn = 0;
  st = archive__get(a, ro, ARCHIVE__CF_DEFAULT, key, sizeof(key) - 1, &v, &vn, err);
  if (st == KYSO_OK && vn == 8)
    for (int i = 0; i < 8; i++) *applied = *applied << 8 | v[i];
  free(v);
  if (st == KYSO_NOT_FOUND) st = KYSO_OK;
  if (st != KYSO_OK) goto out;
  for (size_t f = 0; f < sizeof(digest_cfs) / sizeof(digest_cfs[0]) && st == KYSO_OK; f++) {
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(a->db, ro, a->cf[digest_cfs[f]]);
    uint8_t tag = (uint8_t)f;
    EVP_DigestUpdate(md, &tag, 1);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
      size_t kl = 0, vl = 0;
      const char *k = rocksdb_iter_key(it, &kl), *val = rocksdb_iter_value(it, &vl);
      add_len(md, kl);
      EVP_DigestUpdate(md, k, kl);
      add_len(md, vl);
      EVP_DigestUpdate(md, val, vl);
      (*records)++;
    }
    char *e = NULL;
    rocksdb_iter_get_error(it, &e);
    rocksdb_iter_destroy(it);
    if (e != NULL) st = archive__rocks_fail(err, e, "reading the archive in '%s'", a->dir);
  }
  unsigned len = 0;
  if (st == KYSO_OK && EVP_DigestFinal_ex(md, out, &len) != 1)
    st = kyso_fail(err, KYSO_INTERNAL, "cannot finish a SHA-256");
out:
  EVP_MD_CTX_free(md);
  rocksdb_readoptions_destroy(ro);
  rocksdb_release_snapshot(a->db, snap);
  return st;
}

kyso_status archive_missing_blobs(archive *a, archive_missing_cb cb, void *ctx, uint64_t *missing,
                                  kyso_err *err) {
  kyso_status st = KYSO_OK;
  rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_fill_cache(ro, 0);
  *missing = 0;
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(a->db, ro, a->cf[ARCHIVE__CF_DOCUMENTS]);
  for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    size_t kl = 0;
    const char *k = rocksdb_iter_key(it, &kl);
    if (kl != 32) continue;
    uint8_t *v = NULL;
    size_t vn = 0;
    kyso_status gs = archive__get(a, ro, ARCHIVE__CF_MANIFESTS, k, 32, &v, &vn, err);
    free(v);
    if (gs == KYSO_NOT_FOUND) {
      (*missing)++;
      if (cb((const uint8_t *)k, ctx) != 0) break;
    } else if (gs != KYSO_OK) {
      st = gs;
      break;
    }
  }
  char *e = NULL;
  rocksdb_iter_get_error(it, &e);
  rocksdb_iter_destroy(it);
  rocksdb_readoptions_destroy(ro);
  if (e != NULL && st == KYSO_OK)
    st = archive__rocks_fail(err, e, "listing the documents of '%s'", a->dir);
  else
    rocksdb_free(e);
  return st;
}
