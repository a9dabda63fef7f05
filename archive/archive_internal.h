/* archive/ internals: the RocksDB handle and its column families, key
 * layouts, the group-commit writer and the deterministic apply function.
 * Only the archive/ sources and tests/archive include this. */
#ifndef KYSO_ARCHIVE_INTERNAL_H
#define KYSO_ARCHIVE_INTERNAL_H

#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdint.h>

#include "kyso/archive.h"
#include "kyso/limits.h"
#include "kyso/store/v1/command.pb-c.h"

/* Column families. Keys:
 *   default       "schema" -> decimal schema version
 *   blobs         sha256[32] || chunk index (u32 BE) -> chunk bytes (BlobDB)
 *   manifests     sha256[32] -> BlobManifest; written last: a blob exists iff
 *                 its manifest does (chunks without one are an interrupted upload)
 *   documents     sha256[32] -> DocumentRecord
 *   signatures    sha256(cms)[32] -> SignatureRecord
 *   certificates  sha256(der)[32] -> DER
 *   indexes       'u' unit 0 date 0 created_ms(8 BE) docid[32] -> ""
 *                 'a' account 0 date 0 created_ms(8 BE) docid[32] -> ""
 *                 'n' unit 0 number_notation 0 docid[32] -> ""
 *   requests      principal 0 request_id -> CommandResult (first result)
 *   keys          label -> KeyRecord (the key registry: what every node's
 *                 token and certificate store must hold) */
enum {
  ARCHIVE__CF_DEFAULT,
  ARCHIVE__CF_BLOBS,
  ARCHIVE__CF_MANIFESTS,
  ARCHIVE__CF_DOCUMENTS,
  ARCHIVE__CF_SIGNATURES,
  ARCHIVE__CF_CERTIFICATES,
  ARCHIVE__CF_INDEXES,
  ARCHIVE__CF_REQUESTS,
  ARCHIVE__CF_KEYS,
  ARCHIVE__CF_COUNT
};

#define ARCHIVE__SCHEMA_VERSION "1"
/* Commands this kysod applies: version 1 (documents, signatures) and 2
 * (adds the key registry's RecordKey and RecordCertificate). A new kind of
 * command takes a new version, so a node too old for it stops at it (the
 * version check in entry.c) instead of refusing it while its peers apply
 * it: a rolling upgrade never forks the state. */
#define ARCHIVE__COMMAND_VERSION 2
#define ARCHIVE__KEY_COMMAND_VERSION 2
#define ARCHIVE__ENTRY_VERSION 1

/* Chunk sizes a store accepts: at least RocksDB's min_blob_size (so every
 * full chunk lands in a blob file), at most a few per memtable. */
#define ARCHIVE__MIN_CHUNK 4096u
#define ARCHIVE__MAX_CHUNK (4u * 1024 * 1024)
/* Uploads: chunks per synced WriteBatch; memory stays a few chunks. */
#define ARCHIVE__CHUNKS_PER_WRITE 8
/* One group-commit batch stops taking commands past this many bytes of
 * commands and inline blobs, so a batch never holds more than this. */
#define ARCHIVE__GROUP_COMMIT_BYTES (64u * 1024 * 1024)
/* The writer keeps its batch's memory between batches up to this size. */
#define ARCHIVE__KEEP_BATCH (4u * 1024 * 1024)
/* A blob that rides in a command's batch is an inline Sign document; larger
 * ones go through archive_upload_* first. */
#define ARCHIVE__MAX_INLINE_BLOB KYSO_MAX_MESSAGE
/* CMS with a signer certificate, a chain of KYSO_MAX_CERT_CHAIN and, later,
 * a time-stamp token with the TSA's chain. */
#define ARCHIVE__MAX_CMS (512 * 1024)
#define ARCHIVE__MAX_PRINCIPAL KYSO_MAX_SUBJECT
#define ARCHIVE__MAX_SIGNING_TIME 64
/* Longest key we build: 'n' unit 0 number 0 docid, or a request key. */
#define ARCHIVE__MAX_KEY (4 + KYSO_MAX_NAME + KYSO_MAX_METADATA + 32 + 16)
#define ARCHIVE__CHUNK_KEY 36
#define ARCHIVE__DATE_LEN 10
/* Scrub calls back with progress every this many items or bytes re-hashed. */
#define ARCHIVE__SCRUB_PROGRESS 256
#define ARCHIVE__SCRUB_PROGRESS_BYTES (256ull * 1024 * 1024)

typedef Kyso__Store__V1__Command archive__command;
typedef Kyso__Store__V1__CommandResult archive__result;

/* The audit-log hook. apply calls it for every command that changed state,
 * after the command's records are in the batch and before the batch is
 * written, so the Merkle-log leaf commits atomically with the records. It
 * must be deterministic (only the command, the result and stored state).
 * NULL until the audit-log issue installs one. */
typedef kyso_status (*archive__audit_fn)(void *ctx, archive *a, rocksdb_writebatch_wi_t *batch,
                                         const archive__command *cmd, const archive__result *res,
                                         kyso_err *err);

typedef struct archive__item archive__item;
typedef struct archive__orphan archive__orphan;

struct archive {
  char *dir;
  char *staging; /* dir/staging: upload temp files (unnamed) */
  uint64_t max_document;
  uint32_t chunk_size;
  unsigned group_commit_max;
  int no_sync;

  rocksdb_t *db;
  rocksdb_options_t *db_opts;
  rocksdb_options_t *cf_opts[ARCHIVE__CF_COUNT];
  rocksdb_block_based_table_options_t *table;
  rocksdb_cache_t *cache;
  rocksdb_column_family_handle_t *cf[ARCHIVE__CF_COUNT];
  rocksdb_readoptions_t *ro;
  rocksdb_writeoptions_t *wo;
  rocksdb_writeoptions_t *wo_apply; /* replicated entries: WAL, not synced (entry.c) */

  /* Group-commit writer: submitters queue items, one thread writes them. */
  pthread_mutex_t mu;
  pthread_cond_t wake;
  archive__item *head, *tail;
  int stopping;
  int writer_started;
  pthread_t writer;

  archive__audit_fn audit;
  void *audit_ctx;

  /* Orphan collection (collect.c): apply_mu is held while a batch of
   * records is built and written, and while the collector deletes a blob;
   * orphan_mu guards the candidates. */
  pthread_mutex_t apply_mu;
  pthread_mutex_t orphan_mu;
  archive__orphan *orphans;
  size_t n_orphans, cap_orphans;
  _Atomic size_t orphan_count;

  _Atomic uint64_t st_commands, st_replayed, st_failed, st_batches, st_synced_writes,
      st_blob_writes, st_blob_bytes;
};

/* collect.c: a blob is about to be found present (or stored): it stops
 * being a candidate for collection. Call before the read. */
void archive__touch(archive *a, const uint8_t sha256[32]);

/* db.c */
/* Maps a RocksDB error string to a status; `what` says what was being done. */
kyso_status archive__rocks_fail(kyso_err *err, char *rocks_err, const char *fmt, ...)
    KYSO_PRINTF(3, 4);
/* A synced (unless no_sync) write of a plain batch, counted in the stats. */
kyso_status archive__write(archive *a, rocksdb_writebatch_t *b, const char *what, kyso_err *err);
/* Flushes every memtable to SST/blob files (tests use this to reach blob files). */
kyso_status archive__flush(archive *a, kyso_err *err);
/* writer.c: the group-commit thread (started by open, drained by close). */
kyso_status archive__writer_start(archive *a, kyso_err *err);
void archive__writer_stop(archive *a);
/* The accepting node's checks of a command before it is queued or proposed:
 * well formed, and its document inline (hashed into blob_sha and a packed
 * manifest, *manifest malloc()ed) or already stored. */
kyso_status archive__precheck(archive *a, const uint8_t *cmd, size_t cmd_len, const uint8_t *blob,
                              size_t blob_len, uint8_t blob_sha[32], uint8_t **manifest,
                              size_t *manifest_len, kyso_err *err);
/* Installs the audit hook (before the first submit). */
void archive__set_audit(archive *a, archive__audit_fn fn, void *ctx);

/* wal_check.c: decides whether a WAL that RocksDB refused holds only the torn
 * tail of an unacknowledged write, and if so cuts it off (copy kept aside). */
kyso_status archive__wal_repair_torn_tail(const char *dir, int *repaired, kyso_err *err);

/* keys.c */
void archive__chunk_key(const uint8_t sha256[32], uint32_t index, uint8_t out[ARCHIVE__CHUNK_KEY]);
/* Each returns the key length, or 0 if a part is too long or holds a NUL. */
size_t archive__request_key(const char *principal, const char *request_id,
                            uint8_t out[ARCHIVE__MAX_KEY]);
size_t archive__date_index_key(char type, const char *name, const char *date, int64_t created_ms,
                               const uint8_t docid[32], uint8_t out[ARCHIVE__MAX_KEY]);
size_t archive__number_index_key(const char *unit, const char *number, const uint8_t docid[32],
                                 uint8_t out[ARCHIVE__MAX_KEY]);
int archive__valid_date(const char *s);
void archive__sha256(const void *p, size_t n, uint8_t out[32]);

/* Point reads. *value is malloc()ed (caller frees); NOT_FOUND is returned
 * without touching err so callers can word it. ro NULL = a->ro. */
kyso_status archive__get(archive *a, const rocksdb_readoptions_t *ro, int cf, const void *key,
                         size_t klen, uint8_t **value, size_t *len, kyso_err *err);
/* The same through the batch being built (sees its own earlier writes). */
kyso_status archive__get_wb(archive *a, rocksdb_writebatch_wi_t *wb, int cf, const void *key,
                            size_t klen, uint8_t **value, size_t *len, kyso_err *err);

/* validate.c: a command's fields within limits; INVALID_ARGUMENT naming the field. */
kyso_status archive__validate(const archive__command *c, kyso_err *err);
/* The document a command names (NULL if none). */
const Kyso__Store__V1__RecordDocument *archive__command_document(const archive__command *c);

/* apply.c: the one deterministic function that changes records. Decodes
 * `cmd`, reads only records (through wb, so earlier commands of the same
 * batch are seen), adds its writes to wb, and returns the serialised
 * CommandResult in *result (malloc()ed). On error nothing was added to wb,
 * except ABORTED: the batch could not be rolled back and must be dropped. */
kyso_status archive__apply(archive *a, const uint8_t *cmd, size_t cmd_len,
                           rocksdb_writebatch_wi_t *wb, uint8_t **result, size_t *result_len,
                           kyso_err *err);
/* apply_key.c: RecordKey and RecordCertificate into the key registry
 * (res->key_label points into c). */
kyso_status archive__apply_key(archive *a, rocksdb_writebatch_wi_t *wb, const archive__command *c,
                               archive__result *res, kyso_err *err);
/* 1 for the commands that change the key registry (no document, no request id). */
int archive__is_key_command(const archive__command *c);

/* apply_doc.c: the document record, signature and index writes of apply. */
kyso_status archive__apply_document(archive *a, rocksdb_writebatch_wi_t *wb,
                                    const archive__command *c,
                                    const Kyso__Store__V1__RecordDocument *d,
                                    const char *signer_account, const uint8_t *signature_id,
                                    uint32_t *order, kyso_err *err);
kyso_status archive__apply_signature(archive *a, rocksdb_writebatch_wi_t *wb,
                                     const archive__command *c, const uint8_t id[32],
                                     uint32_t order, kyso_err *err);

/* blob_write.c */
/* Hashes data into its id and a packed BlobManifest (*manifest malloc()ed). */
kyso_status archive__blob_manifest(archive *a, const uint8_t *data, size_t len, uint8_t sha256[32],
                                   uint8_t **manifest, size_t *manifest_len, kyso_err *err);
/* Adds data's chunks and its manifest to wb unless the blob is already
 * stored or already in wb; *added says which. */
kyso_status archive__blob_into_batch(archive *a, rocksdb_writebatch_wi_t *wb,
                                     const uint8_t sha256[32], const uint8_t *data, size_t len,
                                     const uint8_t *manifest, size_t manifest_len, int *added,
                                     kyso_err *err);

/* Writes a blob (size bytes, chunk hashes n x 32 bytes) from memory (mem)
 * or a staged file (fd; each chunk re-checked against hashes) in synced
 * batches of ARCHIVE__CHUNKS_PER_WRITE chunks, the manifest last. */
kyso_status archive__store_chunks(archive *a, const uint8_t sha256[32], uint64_t size,
                                  const uint8_t *hashes, const uint8_t *mem, int fd, kyso_err *err);

/* blob_read.c */
kyso_status archive__reader_open_ro(archive *a, const rocksdb_readoptions_t *ro,
                                    const uint8_t sha256[32], archive_reader **out, kyso_err *err);
/* Index of the chunk the reader hands out next (scrub reports it). */
kyso_status archive__manifest_get(archive *a, const rocksdb_readoptions_t *ro,
                                  const uint8_t sha256[32], Kyso__Store__V1__BlobManifest **out,
                                  kyso_err *err);

/* scrub_records.c */
typedef struct archive__scrub {
  archive *a;
  const rocksdb_readoptions_t *ro;      /* the scrub's snapshot, checksums verified */
  const rocksdb_readoptions_t *ro_keys; /* the same snapshot, for passes that need only keys */
  archive_scrub_cb cb;
  void *ctx;
  archive_scrub_report *rep;
  uint64_t items;
  uint64_t bytes_at_tick;
  int stopped;
} archive__scrub;
/* Reports one problem (formatted) to the callback, which may stop the
 * scrub (s->stopped); returns 1, so checks write bad = archive__scrub_problem(...). */
int archive__scrub_problem(archive__scrub *s, const char *what, const uint8_t *id, const char *fmt,
                           ...) KYSO_PRINTF(4, 5);
int archive__scrub_tick(archive__scrub *s);
/* Ends a pass over one column family: an iterator that stopped on damage
 * it cannot read past is one more problem (counted in *bad), not the end
 * of the scrub. Destroys it. */
void archive__scrub_iter_end(archive__scrub *s, rocksdb_iterator_t *it, const char *what,
                             const char *records, uint64_t *bad);
void archive__scrub_records(archive__scrub *s);

#endif
