/* archive — collecting blobs no record refers to.
 *
 * They come from writes that never committed: a leader copies a document to
 * its peers before it proposes the record, and may lose its leadership in
 * between; an upload whose record was refused. Such a blob is collected
 * only after it has been seen unreferenced, and untouched, for a whole grace
 * period:
 *  - each pass lists the blobs without a document record; one seen for the
 *    first time becomes a candidate, stamped with the pass's time; one that
 *    is referenced again, or gone, stops being one;
 *  - every read of a blob's manifest (a Put finding its bytes stored, a
 *    peer's HasBlob, a command checking its document) first drops the blob
 *    from the candidates — before it reads, so the collector cannot delete
 *    what a caller has just found present;
 *  - a candidate older than the grace period is deleted under the apply
 *    lock, after checking again that no record names it and that it is
 *    still a candidate: an entry applying its record meanwhile either came
 *    first (the blob stays) or comes after (and the node fetches the bytes
 *    from a peer, as for any record whose bytes it lacks).
 * Candidates live in memory, so a restart only delays a collection. */
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"
#include "kyso/log.h"
#include "kyso/util.h"

/* Candidates followed at once; more wait for a later pass. A touch scans
 * them linearly, which stays cheap at this size (orphans are rare). */
#define MAX_CANDIDATES 4096

struct archive__orphan {
  uint8_t sha[32];
  int64_t first_seen_ms;
  int seen; /* in the current pass */
};

static archive__orphan *find(archive *a, const uint8_t sha[32]) {
  for (size_t i = 0; i < a->n_orphans; i++)
    if (memcmp(a->orphans[i].sha, sha, 32) == 0) return &a->orphans[i];
  return NULL;
}

static void drop(archive *a, archive__orphan *o) {
  *o = a->orphans[--a->n_orphans];
  atomic_store(&a->orphan_count, a->n_orphans);
}

void archive__touch(archive *a, const uint8_t sha[32]) {
  if (atomic_load(&a->orphan_count) == 0) return; /* the usual case: nothing to look up */
  pthread_mutex_lock(&a->orphan_mu);
  archive__orphan *o = find(a, sha);
  if (o != NULL) drop(a, o);
  pthread_mutex_unlock(&a->orphan_mu);
}

static int referenced(archive *a, const uint8_t sha[32], kyso_status *st, kyso_err *err) {
  uint8_t *v = NULL;
  size_t n = 0;
  *st = archive__get(a, NULL, ARCHIVE__CF_DOCUMENTS, sha, 32, &v, &n, err);
  free(v);
  if (*st == KYSO_NOT_FOUND) {
    *st = KYSO_OK;
    return 0;
  }
  return 1; /* found, or unknown after an error: never delete then */
}

/* Deletes the blob's manifest (it stops existing) and its chunks, in one
 * synced batch, if it is still an unreferenced candidate. */
static kyso_status collect_one(archive *a, const uint8_t sha[32], archive_collect_stats *stats,
                               kyso_err *err) {
  Kyso__Store__V1__BlobManifest *m = NULL;
  kyso_status st = KYSO_OK;
  char hex[65];
  kyso_hex(sha, 32, hex);
  pthread_mutex_lock(&a->apply_mu);
  pthread_mutex_lock(&a->orphan_mu);
  archive__orphan *o = find(a, sha);
  int still = o != NULL && !referenced(a, sha, &st, err) && st == KYSO_OK;
  if (o != NULL) drop(a, o);
  pthread_mutex_unlock(&a->orphan_mu);
  if (!still) goto out;
  uint8_t *v = NULL;
  size_t n = 0;
  st = archive__get(a, NULL, ARCHIVE__CF_MANIFESTS, sha, 32, &v, &n, err);
  if (st == KYSO_NOT_FOUND) { /* gone already */
    st = KYSO_OK;
    goto out;
  }
  if (st != KYSO_OK) goto out;
  m = kyso__store__v1__blob_manifest__unpack(NULL, n, v);
  free(v);
  rocksdb_writebatch_t *b = rocksdb_writebatch_create();
  rocksdb_writebatch_delete_cf(b, a->cf[ARCHIVE__CF_MANIFESTS], (const char *)sha, 32);
  /* A manifest that does not parse still names chunks from index 0: scrub
   * reports what a damaged one leaves behind. */
  for (size_t i = 0; m != NULL && i < m->n_chunk_sha256; i++) {
    uint8_t key[ARCHIVE__CHUNK_KEY];
    archive__chunk_key(sha, (uint32_t)i, key);
    rocksdb_writebatch_delete_cf(b, a->cf[ARCHIVE__CF_BLOBS], (const char *)key, sizeof(key));
  }
  st = archive__write(a, b, "collecting an unreferenced blob", err);
  rocksdb_writebatch_destroy(b);
  if (st == KYSO_OK) {
    stats->collected++;
    stats->bytes += m != NULL ? m->size : 0;
    kyso_log(KYSO_LOG_INFO, "archive: collected blob %s (%llu bytes): no record named it for the "
             "whole grace period", hex, (unsigned long long)(m != NULL ? m->size : 0));
  }
out:
  pthread_mutex_unlock(&a->apply_mu);
  kyso__store__v1__blob_manifest__free_unpacked(m, NULL);
  return st;
}

/* One pass over the manifests, joined with the documents in key order
 * (both keyed by SHA-256): updates the candidates; *due receives those
 * older than the grace period (malloc()ed, n_due of them). */
static kyso_status scan(archive *a, int64_t now_ms, int64_t grace_ms, archive_collect_stats *stats,
                        uint8_t (**due)[32], size_t *n_due, kyso_err *err) {
  kyso_status st = KYSO_OK;
  char *e = NULL;
  size_t cap = 0;
  *due = NULL;
  *n_due = 0;
  rocksdb_iterator_t *mi = rocksdb_create_iterator_cf(a->db, a->ro, a->cf[ARCHIVE__CF_MANIFESTS]);
  rocksdb_iterator_t *di = rocksdb_create_iterator_cf(a->db, a->ro, a->cf[ARCHIVE__CF_DOCUMENTS]);
  pthread_mutex_lock(&a->orphan_mu);
  for (size_t i = 0; i < a->n_orphans; i++) a->orphans[i].seen = 0;
  pthread_mutex_unlock(&a->orphan_mu);
  rocksdb_iter_seek_to_first(di);
  for (rocksdb_iter_seek_to_first(mi); rocksdb_iter_valid(mi); rocksdb_iter_next(mi)) {
    size_t kl = 0;
    const char *k = rocksdb_iter_key(mi, &kl);
    if (kl != 32) continue; /* not a manifest key: scrub's business */
    stats->blobs++;
    rocksdb_iter_seek(di, k, kl);
    size_t dl = 0;
    const char *dk = rocksdb_iter_valid(di) ? rocksdb_iter_key(di, &dl) : NULL;
    if (dk != NULL && dl == 32 && memcmp(dk, k, 32) == 0) continue;
    stats->unreferenced++;
    pthread_mutex_lock(&a->orphan_mu);
    archive__orphan *o = find(a, (const uint8_t *)k);
    if (o == NULL && a->n_orphans == a->cap_orphans && a->cap_orphans < MAX_CANDIDATES) {
      size_t ncap = a->cap_orphans ? a->cap_orphans * 2 : 16;
      archive__orphan *g = realloc(a->orphans, ncap * sizeof(*g));
      if (g != NULL) {
        a->orphans = g;
        a->cap_orphans = ncap;
      }
    }
    if (o == NULL && a->n_orphans < a->cap_orphans) {
      o = &a->orphans[a->n_orphans++];
      memcpy(o->sha, k, 32);
      o->first_seen_ms = now_ms;
      atomic_store(&a->orphan_count, a->n_orphans);
    }
    if (o != NULL) o->seen = 1;
    int ripe = o != NULL && now_ms - o->first_seen_ms >= grace_ms;
    pthread_mutex_unlock(&a->orphan_mu);
    if (!ripe) continue;
    if (*n_due == cap) {
      size_t ncap = cap ? cap * 2 : 64;
      uint8_t(*g)[32] = realloc(*due, ncap * 32);
      if (g == NULL) {
        st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory listing unreferenced blobs");
        break;
      }
      *due = g;
      cap = ncap;
    }
    memcpy((*due)[(*n_due)++], k, 32);
  }
  if (st == KYSO_OK) {
    rocksdb_iter_get_error(mi, &e);
    if (e == NULL) rocksdb_iter_get_error(di, &e);
    if (e != NULL) st = archive__rocks_fail(err, e, "listing the blobs of '%s'", a->dir);
  }
  rocksdb_iter_destroy(mi);
  rocksdb_iter_destroy(di);
  /* Candidates this pass did not find unreferenced are referenced, or gone. */
  pthread_mutex_lock(&a->orphan_mu);
  for (size_t i = 0; i < a->n_orphans;)
    if (!a->orphans[i].seen && st == KYSO_OK)
      drop(a, &a->orphans[i]);
    else
      i++;
  pthread_mutex_unlock(&a->orphan_mu);
  return st;
}

kyso_status archive_collect_orphans(archive *a, int64_t now_ms, int64_t grace_ms,
                                    archive_collect_stats *stats, kyso_err *err) {
  uint8_t(*due)[32] = NULL;
  size_t n_due = 0;
  memset(stats, 0, sizeof(*stats));
  if (grace_ms < 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a negative grace period (%lld ms)",
                     (long long)grace_ms);
  kyso_status st = scan(a, now_ms, grace_ms, stats, &due, &n_due, err);
  for (size_t i = 0; i < n_due && st == KYSO_OK; i++) st = collect_one(a, due[i], stats, err);
  free(due);
  pthread_mutex_lock(&a->orphan_mu);
  stats->candidates = a->n_orphans;
  pthread_mutex_unlock(&a->orphan_mu);
  return st;
}
