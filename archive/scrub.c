/* archive — fixity. Every blob is read back through the verifying reader
 * (each chunk against its manifest, the whole against its id), chunks that
 * no manifest claims are found, then every record is checked
 * (scrub_records.c). All of it on one snapshot, so writes that land during
 * the scrub do not look like damage. Problems are reported, never fixed. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"

int archive__scrub_problem(archive__scrub *s, const char *what, const uint8_t *id, const char *fmt,
                           ...) {
  static const uint8_t none[32];
  char msg[KYSO_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (s->cb != NULL && s->cb(s->ctx, what, id ? id : none, msg, s->rep) != 0) s->stopped = 1;
  return 1;
}

static void progress(archive__scrub *s) {
  s->bytes_at_tick = s->rep->bytes;
  if (s->cb != NULL && s->cb(s->ctx, NULL, NULL, NULL, s->rep) != 0) s->stopped = 1;
}

int archive__scrub_tick(archive__scrub *s) {
  if (++s->items % ARCHIVE__SCRUB_PROGRESS == 0) progress(s);
  return s->stopped;
}

/* Reads one blob to its end through the verifying reader. */
static void scrub_blob(archive__scrub *s, const uint8_t id[32]) {
  archive_reader *r = NULL;
  kyso_err err = {0};
  s->rep->blobs++;
  kyso_status st = archive__reader_open_ro(s->a, s->ro, id, &r, &err);
  while (st == KYSO_OK && !s->stopped) {
    const uint8_t *p;
    size_t n;
    if ((st = archive_reader_next(r, &p, &n, &err)) != KYSO_OK || n == 0) break;
    s->rep->bytes += n;
    if (s->rep->bytes - s->bytes_at_tick >= ARCHIVE__SCRUB_PROGRESS_BYTES) progress(s);
  }
  archive_reader_close(r);
  if (st != KYSO_OK) {
    s->rep->blobs_bad++;
    archive__scrub_problem(s, "blob", id, "%s", err.msg);
  }
}

void archive__scrub_iter_end(archive__scrub *s, rocksdb_iterator_t *it, const char *what,
                             const char *records, uint64_t *bad) {
  char *e = NULL;
  rocksdb_iter_get_error(it, &e);
  rocksdb_iter_destroy(it);
  if (e == NULL) return;
  (*bad)++;
  archive__scrub_problem(s, what, NULL,
                         "the %s could not all be read (%s); those after the damage "
                         "were not checked",
                         records, e);
  rocksdb_free(e);
}

static void scrub_manifests(archive__scrub *s) {
  rocksdb_iterator_t *it =
      rocksdb_create_iterator_cf(s->a->db, s->ro, s->a->cf[ARCHIVE__CF_MANIFESTS]);
  for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it) && !s->stopped;
       rocksdb_iter_next(it)) {
    size_t kl = 0;
    const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
    if (kl != 32) {
      s->rep->blobs_bad++;
      archive__scrub_problem(s, "blob", NULL, "a blob manifest has a malformed key of %zu bytes",
                             kl);
    } else {
      uint8_t id[32];
      memcpy(id, k, 32);
      scrub_blob(s, id);
    }
    archive__scrub_tick(s);
  }
  archive__scrub_iter_end(s, it, "blob", "blob manifests", &s->rep->blobs_bad);
}

/* Seeks to chunk `from` of `sha`, or what follows it. */
static void seek_chunks(rocksdb_iterator_t *it, const uint8_t sha[32], uint32_t from) {
  uint8_t key[ARCHIVE__CHUNK_KEY];
  archive__chunk_key(sha, from, key);
  rocksdb_iter_seek(it, (const char *)key, sizeof(key));
}

/* Seeks past every chunk of `sha`. */
static void skip_blob(rocksdb_iterator_t *it, const uint8_t sha[32]) {
  size_t kl = 0;
  seek_chunks(it, sha, UINT32_MAX);
  if (!rocksdb_iter_valid(it)) return;
  const char *k = rocksdb_iter_key(it, &kl);
  if (kl == ARCHIVE__CHUNK_KEY && memcmp(k, sha, 32) == 0) rocksdb_iter_next(it);
}

/* Chunks whose blob has no manifest (an interrupted upload), or beyond
 * their manifest's last chunk. One seek per blob. RocksDB 7.8's iterator
 * reads each value it lands on, so this pass reads without checksums: a
 * damaged chunk (reported by the manifest pass) must not stop the listing. */
static void scrub_orphans(archive__scrub *s) {
  rocksdb_iterator_t *it =
      rocksdb_create_iterator_cf(s->a->db, s->ro_keys, s->a->cf[ARCHIVE__CF_BLOBS]);
  rocksdb_iter_seek_to_first(it);
  while (rocksdb_iter_valid(it) && !s->stopped) {
    size_t kl = 0;
    const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
    uint8_t sha[32];
    if (kl != ARCHIVE__CHUNK_KEY) {
      s->rep->blobs_bad++;
      archive__scrub_problem(s, "blob", NULL, "a blob chunk has a malformed key of %zu bytes", kl);
      rocksdb_iter_next(it);
      continue;
    }
    memcpy(sha, k, 32);
    uint32_t index = (uint32_t)k[32] << 24 | (uint32_t)k[33] << 16 | (uint32_t)k[34] << 8 | k[35];
    Kyso__Store__V1__BlobManifest *m = NULL;
    kyso_err merr = {0};
    kyso_status st = archive__manifest_get(s->a, s->ro, sha, &m, &merr);
    uint32_t n = m != NULL ? (uint32_t)m->n_chunk_sha256 : 0;
    kyso__store__v1__blob_manifest__free_unpacked(m, NULL);
    if (st == KYSO_NOT_FOUND) {
      s->rep->blobs_bad++;
      archive__scrub_problem(
          s, "blob", sha, "orphan chunks without a manifest (an interrupted upload) from chunk %u",
          index);
      skip_blob(it, sha);
      continue;
    }
    if (st == KYSO_OK && index >= n) {
      s->rep->blobs_bad++;
      archive__scrub_problem(s, "blob", sha, "chunk %u is beyond its manifest's %u chunks", index,
                             n);
      skip_blob(it, sha);
      continue;
    }
    if (st == KYSO_OK)
      seek_chunks(it, sha, n); /* the next key is another blob's, or an extra chunk */
    else
      skip_blob(it, sha); /* damaged manifest: reported by the manifest pass */
  }
  archive__scrub_iter_end(s, it, "blob", "blob chunks", &s->rep->blobs_bad);
}

kyso_status archive_scrub(archive *a, archive_scrub_cb cb, void *ctx, archive_scrub_report *out,
                          kyso_err *err) {
  archive_scrub_report rep;
  memset(&rep, 0, sizeof(rep));
  const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(a->db);
  rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_snapshot(ro, snap);
  rocksdb_readoptions_set_verify_checksums(ro, 1);
  rocksdb_readoptions_set_fill_cache(ro, 0); /* a scrub must not evict the working set */
  rocksdb_readoptions_t *ro_keys = rocksdb_readoptions_create();
  rocksdb_readoptions_set_snapshot(ro_keys, snap);
  rocksdb_readoptions_set_verify_checksums(ro_keys, 0);
  rocksdb_readoptions_set_fill_cache(ro_keys, 0);
  archive__scrub s = {.a = a, .ro = ro, .ro_keys = ro_keys, .cb = cb, .ctx = ctx, .rep = &rep};
  kyso_status st = KYSO_OK;
  scrub_manifests(&s);
  if (!s.stopped) scrub_orphans(&s);
  if (!s.stopped) archive__scrub_records(&s);
  if (s.stopped) st = kyso_fail(err, KYSO_CANCELLED, "the scrub was stopped");
  rocksdb_readoptions_destroy(ro_keys);
  rocksdb_readoptions_destroy(ro);
  rocksdb_release_snapshot(a->db, snap);
  if (out != NULL) *out = rep;
  return st;
}
