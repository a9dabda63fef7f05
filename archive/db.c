/* archive — opening and closing the store: RocksDB options, column families,
 * schema version, and what a refused open tells the operator. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "archive_internal.h"
#include "kyso/log.h"

static const char *const cf_names[ARCHIVE__CF_COUNT] = {"default",   "blobs",      "blob_manifests",
                                                        "documents", "signatures", "certificates",
                                                        "indexes",   "requests",   "keys"};

/* RocksDB's WALRecoveryMode::kAbsoluteConsistency: any damage in the WAL
 * fails the open instead of truncating acknowledged writes away. */
#define WAL_ABSOLUTE_CONSISTENCY 1

kyso_status archive__rocks_fail(kyso_err *err, char *rocks_err, const char *fmt, ...) {
  char what[KYSO_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof(what), fmt, ap);
  va_end(ap);
  const char *r = rocks_err ? rocks_err : "unknown RocksDB error";
  kyso_status code = KYSO_INTERNAL;
  if (strncmp(r, "Corruption", 10) == 0)
    code = KYSO_DATA_LOSS;
  else if (strstr(r, "No space") != NULL)
    code = KYSO_RESOURCE_EXHAUSTED;
  else if (strncmp(r, "IO error", 8) == 0 || strncmp(r, "Busy", 4) == 0 ||
           strncmp(r, "Operation aborted", 17) == 0)
    code = KYSO_UNAVAILABLE;
  kyso_fail(err, code, "%s: %s", what, r);
  rocksdb_free(rocks_err);
  return code;
}

kyso_status archive__write(archive *a, rocksdb_writebatch_t *b, const char *what, kyso_err *err) {
  char *e = NULL;
  rocksdb_write(a->db, a->wo, b, &e);
  if (e != NULL)
    return archive__rocks_fail(err, e, "writing %s to the archive in '%s'", what, a->dir);
  if (!a->no_sync) atomic_fetch_add(&a->st_synced_writes, 1);
  return KYSO_OK;
}

kyso_status archive__flush(archive *a, kyso_err *err) {
  rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
  kyso_status st = KYSO_OK;
  rocksdb_flushoptions_set_wait(fo, 1);
  for (int i = 0; i < ARCHIVE__CF_COUNT && st == KYSO_OK; i++) {
    char *e = NULL;
    rocksdb_flush_cf(a->db, fo, a->cf[i], &e);
    if (e != NULL) st = archive__rocks_fail(err, e, "flushing '%s'", cf_names[i]);
  }
  rocksdb_flushoptions_destroy(fo);
  return st;
}

void archive__set_audit(archive *a, archive__audit_fn fn, void *ctx) {
  a->audit = fn;
  a->audit_ctx = ctx;
}

static void make_options(archive *a) {
  rocksdb_options_t *o = rocksdb_options_create();
  rocksdb_options_set_create_if_missing(o, 1);
  rocksdb_options_set_create_missing_column_families(o, 1);
  rocksdb_options_set_paranoid_checks(o, 1);
  rocksdb_options_set_wal_recovery_mode(o, WAL_ABSOLUTE_CONSISTENCY);
  /* Memtables of all families together; the WAL total that forces the
   * families pinning old logs to flush; blob files kept open. */
  rocksdb_options_set_db_write_buffer_size(o, 128u << 20);
  rocksdb_options_set_max_total_wal_size(o, 256u << 20);
  rocksdb_options_set_max_open_files(o, 512); /* under the usual 1024 fd limit, with room */
  rocksdb_options_set_max_background_jobs(o, 2);
  rocksdb_options_set_keep_log_file_num(o, 8);
  a->cache = rocksdb_cache_create_lru(32u << 20);
  a->table = rocksdb_block_based_options_create();
  rocksdb_block_based_options_set_block_cache(a->table, a->cache);
  rocksdb_options_set_block_based_table_factory(o, a->table);
  rocksdb_options_set_write_buffer_size(o, 32u << 20);
  a->db_opts = o;
  for (int i = 0; i < ARCHIVE__CF_COUNT; i++) {
    rocksdb_options_t *c = rocksdb_options_create_copy(o);
    if (i == ARCHIVE__CF_BLOBS) {
      /* Integrated BlobDB: chunk values live in blob files, keys in SSTs.
       * Small memtables so a 100 MiB upload does not sit in memory. */
      rocksdb_options_set_enable_blob_files(c, 1);
      rocksdb_options_set_min_blob_size(c, ARCHIVE__MIN_CHUNK);
      rocksdb_options_set_blob_file_size(c, 256u << 20);
      rocksdb_options_set_write_buffer_size(c, 16u << 20);
      rocksdb_options_set_max_write_buffer_number(c, 3);
    }
    a->cf_opts[i] = c;
  }
  a->ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_verify_checksums(a->ro, 1);
  a->wo = rocksdb_writeoptions_create();
  rocksdb_writeoptions_set_sync(a->wo, a->no_sync ? 0 : 1);
  a->wo_apply = rocksdb_writeoptions_create();
  rocksdb_writeoptions_set_sync(a->wo_apply, 0);
}

static kyso_status open_failed(archive *a, char *e, kyso_err *err) {
  kyso_status st;
  if (strstr(e, "/LOCK: ") != NULL) /* RocksDB's lock file in the message */
    st =
        kyso_fail(err, KYSO_UNAVAILABLE,
                  "the archive in '%s' is already open (is another kysod running?): %s", a->dir, e);
  else if (strncmp(e, "Corruption", 10) == 0) /* the write-ahead logs were checked: elsewhere */
    st = kyso_fail(err, KYSO_DATA_LOSS,
                   "the archive in '%s' is damaged (%s; RocksDB's LOG there names the file); "
                   "kysod will not start without the acknowledged documents in it. Restore the "
                   "last backup (README: Restore)",
                   a->dir, e);
  else
    return archive__rocks_fail(err, e, "cannot open the archive in '%s'", a->dir);
  rocksdb_free(e);
  return st;
}

static kyso_status open_db(archive *a, kyso_err *err) {
  char *e = NULL;
  int repaired = 0;
  kyso_status st;
  for (int attempt = 0;; attempt++) {
    a->db = rocksdb_open_column_families(a->db_opts, a->dir, ARCHIVE__CF_COUNT, cf_names,
                                         (const rocksdb_options_t *const *)a->cf_opts, a->cf, &e);
    if (e == NULL) return KYSO_OK;
    if (strncmp(e, "Corruption", 10) != 0 || attempt > 0) break;
    /* A kill -9 in the middle of a large write leaves an incomplete last
     * record, which absolute consistency refuses too. Only that is cut off;
     * any other damage is reported with the WAL file and offset. */
    st = archive__wal_repair_torn_tail(a->dir, &repaired, err);
    if (st != KYSO_OK) {
      rocksdb_free(e);
      return st;
    }
    if (!repaired) break;
    rocksdb_free(e);
    e = NULL;
  }
  return open_failed(a, e, err);
}

static kyso_status check_schema(archive *a, kyso_err *err) {
  static const char key[] = "schema";
  uint8_t *v = NULL;
  size_t n = 0;
  kyso_status st = archive__get(a, NULL, ARCHIVE__CF_DEFAULT, key, sizeof(key) - 1, &v, &n, err);
  if (st == KYSO_NOT_FOUND) {
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(b, a->cf[ARCHIVE__CF_DEFAULT], key, sizeof(key) - 1,
                              ARCHIVE__SCHEMA_VERSION, strlen(ARCHIVE__SCHEMA_VERSION));
    st = archive__write(a, b, "the schema version", err);
    rocksdb_writebatch_destroy(b);
    return st;
  }
  if (st != KYSO_OK) return st;
  if (n != strlen(ARCHIVE__SCHEMA_VERSION) || memcmp(v, ARCHIVE__SCHEMA_VERSION, n) != 0)
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "the archive in '%s' has storage schema '%.*s'; this kysod reads schema %s",
                   a->dir, (int)(n > 16 ? 16 : n), (const char *)v, ARCHIVE__SCHEMA_VERSION);
  free(v);
  return st;
}

static kyso_status make_dirs(archive *a, kyso_err *err) {
  size_t n = strlen(a->dir) + sizeof("/staging");
  if ((a->staging = malloc(n)) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory opening the archive");
  snprintf(a->staging, n, "%s/staging", a->dir);
  if (mkdir(a->dir, 0700) != 0 && errno != EEXIST)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot create the archive directory '%s': %s",
                     a->dir, strerror(errno));
  return KYSO_OK;
}

static kyso_status make_staging(archive *a, kyso_err *err) {
  /* Inside the RocksDB directory, which RocksDB ignores and checkpoints
   * leave out; upload files in it have no name (O_TMPFILE) or lose it at once. */
  if (mkdir(a->staging, 0700) != 0 && errno != EEXIST)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot create '%s': %s", a->staging,
                     strerror(errno));
  return KYSO_OK;
}

kyso_status archive_open(const archive_opts *opts, archive **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  archive *a = NULL;
  *out = NULL;
  if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "the archive needs a directory");
  uint32_t chunk = opts->chunk_size ? opts->chunk_size : KYSO_CHUNK_SIZE;
  if (chunk < ARCHIVE__MIN_CHUNK || chunk > ARCHIVE__MAX_CHUNK)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "archive chunk_size %u is not in %u..%u", chunk,
                     ARCHIVE__MIN_CHUNK, ARCHIVE__MAX_CHUNK);
  if ((a = calloc(1, sizeof(*a))) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory opening the archive");
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->wake, NULL);
  pthread_mutex_init(&a->apply_mu, NULL);
  pthread_mutex_init(&a->orphan_mu, NULL);
  if ((a->dir = strdup(opts->dir)) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory opening the archive");
    goto out;
  }
  a->max_document = opts->max_document ? opts->max_document : KYSO_MAX_DOCUMENT;
  a->chunk_size = chunk;
  a->group_commit_max = opts->group_commit_max ? opts->group_commit_max : 256;
  a->no_sync = opts->no_sync;
  if ((st = make_dirs(a, err)) != KYSO_OK) goto out;
  make_options(a);
  if ((st = open_db(a, err)) != KYSO_OK) goto out;
  if ((st = make_staging(a, err)) != KYSO_OK) goto out;
  if ((st = check_schema(a, err)) != KYSO_OK) goto out;
  if ((st = archive__writer_start(a, err)) != KYSO_OK) goto out;
  *out = a;
  a = NULL;
out:
  archive_close(a);
  return st;
}

void archive_close(archive *a) {
  if (a == NULL) return;
  archive__writer_stop(a);
  /* A clean stop leaves the memtables in SST and blob files, so the next
   * start has no log to replay. Every write is durable already: a failure
   * here only costs that replay. */
  kyso_err err = {0};
  if (a->db != NULL && archive__flush(a, &err) != KYSO_OK)
    kyso_log(KYSO_LOG_WARN, "archive: flushing '%s' at close: %s", a->dir, err.msg);
  for (int i = 0; i < ARCHIVE__CF_COUNT; i++)
    if (a->cf[i] != NULL) rocksdb_column_family_handle_destroy(a->cf[i]);
  if (a->db != NULL) rocksdb_close(a->db);
  for (int i = 0; i < ARCHIVE__CF_COUNT; i++)
    if (a->cf_opts[i] != NULL) rocksdb_options_destroy(a->cf_opts[i]);
  if (a->db_opts != NULL) rocksdb_options_destroy(a->db_opts);
  if (a->table != NULL) rocksdb_block_based_options_destroy(a->table);
  if (a->cache != NULL) rocksdb_cache_destroy(a->cache);
  if (a->ro != NULL) rocksdb_readoptions_destroy(a->ro);
  if (a->wo != NULL) rocksdb_writeoptions_destroy(a->wo);
  if (a->wo_apply != NULL) rocksdb_writeoptions_destroy(a->wo_apply);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->wake);
  pthread_mutex_destroy(&a->apply_mu);
  pthread_mutex_destroy(&a->orphan_mu);
  free(a->orphans);
  free(a->staging);
  free(a->dir);
  free(a);
}
