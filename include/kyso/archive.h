/* kyso — the archive: a content-addressed store on RocksDB.
 *
 * Two tiers behind one handle:
 *  - blobs: original bytes named by their SHA-256, stored in chunks with a
 *    manifest that holds every chunk's hash, so every read re-checks what it
 *    returns. Local to a node (a node that lacks a blob fetches it by hash);
 *    the tier to move onto an object store later.
 *  - records: documents, signatures, certificates, indexes and idempotency
 *    entries, changed only by commands (serialised, versioned protobuf,
 *    proto/kyso/store/v1/command.proto) applied by one deterministic function,
 *    so replication can put the same command bytes through Raft unchanged.
 * A command and the blob it carries inline commit in one synced WriteBatch;
 * concurrent submitters share one fsync (group commit). Thread-safe. */
#ifndef KYSO_ARCHIVE_H
#define KYSO_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include "kyso/status.h"

typedef struct archive archive;
typedef struct archive_upload archive_upload;
typedef struct archive_reader archive_reader;
typedef struct archive_iter archive_iter;

typedef struct archive_opts {
  const char *dir;          /* RocksDB directory; created if missing */
  uint64_t max_document;    /* bytes; default KYSO_MAX_DOCUMENT (100 MiB) */
  uint32_t chunk_size;      /* bytes per blob chunk; default KYSO_CHUNK_SIZE (1 MiB) */
  unsigned group_commit_max;/* most commands per synced batch; default 256 */
  int no_sync;              /* tests of the archive alone only: never in kysod */
} archive_opts;

/* Lifecycle */
/* Opens (or creates) the store with absolute-consistency WAL recovery:
 * a damaged write-ahead log is DATA_LOSS naming the file and offset and
 * saying what the operator does next, never a silent truncation of
 * acknowledged writes. The one exception is proven harmless: a last record
 * cut short by a crash mid-write (never synced, so never acknowledged) is
 * cut off, logged, and kept in dir/torn-wal/. UNAVAILABLE if another
 * process has the store open; FAILED_PRECONDITION for a foreign schema. */
kyso_status archive_open(const archive_opts *opts, archive **out, kyso_err *err) KYSO_MUST_CHECK;
/* Waits for queued commands, flushes the memtables (a clean stop leaves no
 * log to replay), closes. NULL is fine. No call on `a` may be running. */
void archive_close(archive *a);

/* Blobs */
/* Stores len bytes as a blob unless present (same bytes stored once);
 * synced before it returns. sha256 receives the blob id. Empty blobs are
 * stored (Sign refuses empty documents above this layer).
 * RESOURCE_EXHAUSTED past max_document. */
kyso_status archive_put_blob(archive *a, const uint8_t *data, size_t len, uint8_t sha256[32],
                             kyso_err *err) KYSO_MUST_CHECK;
/* Streaming ingestion for large documents, memory bounded by one chunk:
 * bytes are staged on disk while hashed, then written as chunks (synced)
 * with the manifest last. RESOURCE_EXHAUSTED past max_document. */
kyso_status archive_upload_begin(archive *a, archive_upload **out, kyso_err *err) KYSO_MUST_CHECK;
kyso_status archive_upload_write(archive_upload *u, const uint8_t *data, size_t len,
                                 kyso_err *err) KYSO_MUST_CHECK;
/* Commits the blob and frees u (on every outcome). If expect_sha256 is
 * non-NULL and differs, INVALID_ARGUMENT naming both and nothing is stored;
 * DATA_LOSS if the staged copy changed on disk before it was stored. */
kyso_status archive_upload_finish(archive_upload *u, const uint8_t *expect_sha256,
                                  uint8_t sha256[32], uint64_t *size,
                                  kyso_err *err) KYSO_MUST_CHECK;
void archive_upload_abort(archive_upload *u);

/* NOT_FOUND naming the id if absent. */
kyso_status archive_blob_size(archive *a, const uint8_t sha256[32], uint64_t *size,
                              kyso_err *err) KYSO_MUST_CHECK;
/* Reads a blob chunk by chunk; each chunk is checked against the manifest's
 * hash before it is handed out, and the whole blob against its id at the
 * end: DATA_LOSS naming the id otherwise. */
kyso_status archive_reader_open(archive *a, const uint8_t sha256[32], archive_reader **out,
                                kyso_err *err) KYSO_MUST_CHECK;
/* *data points into the reader (valid until the next call); *len 0 = end.
 * The last chunk comes out only after the whole blob matched its id; an
 * error is sticky (every later call repeats it). */
kyso_status archive_reader_next(archive_reader *r, const uint8_t **data, size_t *len,
                                kyso_err *err) KYSO_MUST_CHECK;
void archive_reader_close(archive_reader *r);
/* Whole blob into memory (small documents; RESOURCE_EXHAUSTED past max);
 * caller frees *data. */
kyso_status archive_read_blob(archive *a, const uint8_t sha256[32], size_t max,
                              uint8_t **data, size_t *len, kyso_err *err) KYSO_MUST_CHECK;

/* Records: commands */
/* Applies one serialised command (kyso.store.v1.Command) durably: queued for
 * the group-commit writer, applied deterministically into a WriteBatch with
 * others, synced, then answered. blob/blob_len, when blob is non-NULL, is
 * stored in the same batch (the document of an inline Sign; at most
 * KYSO_MAX_MESSAGE bytes, else RESOURCE_EXHAUSTED — upload larger ones
 * first); it must be the document the command names (INVALID_ARGUMENT).
 * Without it, the document must be stored already (FAILED_PRECONDITION).
 * *result receives the serialised kyso.store.v1.CommandResult (caller
 * frees): for a request id already applied it is the first result with
 * replayed set, and nothing new is written; the same request id for another
 * document or another kind of command is FAILED_PRECONDITION. A signature
 * whose CMS is already recorded answers its stored order, replayed. */
kyso_status archive_submit(archive *a, const uint8_t *command, size_t command_len,
                           const uint8_t *blob, size_t blob_len, uint8_t **result,
                           size_t *result_len, kyso_err *err) KYSO_MUST_CHECK;

/* Records: replicated commands (cluster/). One Raft log entry is a
 * serialised kyso.store.v1.Entry: commands applied in order, in one
 * WriteBatch that also records the entry's index. Use either these or
 * archive_submit on one store, never both. */
/* On the node that accepts a request, before it proposes the command: the
 * checks of archive_submit, and an inline document (blob non-NULL) is
 * stored now, synced, so the entry carries only the command. */
kyso_status archive_prepare(archive *a, const uint8_t *command, size_t command_len,
                            const uint8_t *blob, size_t blob_len, kyso_err *err) KYSO_MUST_CHECK;
/* Packs n serialised commands into an entry (*out malloc()ed). */
kyso_status archive_pack_entry(const uint8_t *const *commands, const size_t *lens, size_t n,
                               uint8_t **out, size_t *out_len, kyso_err *err) KYSO_MUST_CHECK;
/* What one command of an entry came to: OK with its CommandResult, or the
 * refusal every node makes alike (INVALID_ARGUMENT, FAILED_PRECONDITION). */
typedef struct archive_outcome {
  kyso_status st;
  kyso_err err;
  uint8_t *result; /* serialised kyso.store.v1.CommandResult when st is OK */
  size_t result_len;
} archive_outcome;
/* Applies committed entry `index` (written through the WAL, not synced: the
 * Raft log is the durable copy). An index at or below the one applied last
 * is skipped (*count 0): the log replays entries after a restart. *out gets
 * one outcome per command (free with archive_outcomes_free). Any status but
 * OK means this node could not take an entry its peers took (its disk, a
 * damaged record, a command version newer than this kysod): the node must
 * stop, and nothing of the entry was written. */
kyso_status archive_apply_entry(archive *a, uint64_t index, const uint8_t *entry, size_t len,
                                archive_outcome **out, size_t *count,
                                kyso_err *err) KYSO_MUST_CHECK;
void archive_outcomes_free(archive_outcome *o, size_t n);
/* The index of the last entry applied (0: none). */
kyso_status archive_applied_index(archive *a, uint64_t *index, kyso_err *err) KYSO_MUST_CHECK;
/* Makes everything applied durable (WAL fsync): before Raft forgets the
 * log entries a snapshot covers. */
kyso_status archive_sync(archive *a, kyso_err *err) KYSO_MUST_CHECK;

/* Orphans: blobs no document record names (copied for a write that never
 * committed). One pass at now_ms: blobs seen unreferenced and untouched
 * since at least grace_ms ago are deleted; others become or stay
 * candidates. Safe against concurrent Puts of the same bytes and against
 * entries recording them (collect.c says how). Call it periodically, with
 * a grace period far longer than any write takes. */
typedef struct archive_collect_stats {
  uint64_t blobs;        /* blobs listed */
  uint64_t unreferenced; /* of which no record names */
  uint64_t candidates;   /* followed after this pass */
  uint64_t collected;    /* deleted in this pass */
  uint64_t bytes;        /* their size */
} archive_collect_stats;
kyso_status archive_collect_orphans(archive *a, int64_t now_ms, int64_t grace_ms,
                                    archive_collect_stats *stats, kyso_err *err) KYSO_MUST_CHECK;

/* Records: reads. Values are serialised kyso.store.v1 messages; caller
 * frees *value. NOT_FOUND naming the key; DATA_LOSS if the record no longer
 * matches its key (a signature's CMS, a certificate's DER re-hashed). */
kyso_status archive_get_document(archive *a, const uint8_t sha256[32], uint8_t **value,
                                 size_t *len, kyso_err *err) KYSO_MUST_CHECK;
kyso_status archive_get_signature(archive *a, const uint8_t id[32], uint8_t **value, size_t *len,
                                  kyso_err *err) KYSO_MUST_CHECK;
kyso_status archive_get_certificate(archive *a, const uint8_t sha256[32], uint8_t **der,
                                    size_t *len, kyso_err *err) KYSO_MUST_CHECK;
/* The key registry: *value is a serialised kyso.store.v1.KeyRecord
 * (caller frees); NOT_FOUND naming the label. */
kyso_status archive_get_key(archive *a, const char *label, uint8_t **value, size_t *len,
                            kyso_err *err) KYSO_MUST_CHECK;
/* Calls fn for every key record, in label order; fn's status other than OK
 * stops the walk and is returned. */
typedef kyso_status (*archive_key_fn)(void *ctx, const char *label, const uint8_t *record,
                                      size_t len, kyso_err *err);
kyso_status archive_each_key(archive *a, archive_key_fn fn, void *ctx,
                             kyso_err *err) KYSO_MUST_CHECK;
/* The first result of (principal, request_id), if that request completed
 * (as stored: replayed is false). NOT_FOUND otherwise. */
kyso_status archive_find_request(archive *a, const char *principal, const char *request_id,
                                 uint8_t **result, size_t *result_len,
                                 kyso_err *err) KYSO_MUST_CHECK;

/* Listing */
typedef enum {
  ARCHIVE_BY_UNIT_DATE = 1,    /* key: unit, date range */
  ARCHIVE_BY_ACCOUNT_DATE = 2, /* key: account, date range */
  ARCHIVE_BY_NUMBER = 3,       /* key: unit, exact number/notation in `from` */
} archive_index;

typedef struct archive_query {
  archive_index index;
  const char *key;          /* unit or account */
  const char *from;         /* inclusive, "YYYY-MM-DD" (or number) ; NULL/"" = open */
  const char *to;           /* inclusive, "YYYY-MM-DD"; NULL/"" = open */
  const char *page_token;   /* from the previous page; NULL/"" = first page */
  uint32_t page_size;       /* 1..1000; 0 = 100 */
} archive_query;

/* One page of document ids in index order (date, then time recorded, then
 * id); *ids is malloc()ed (count x 32 bytes); next_token ("" at the end) is
 * at most 512 bytes and may be the buffer page_token points to. A
 * document's date is its issue_date, or the UTC day it was first recorded
 * without one. A token from another listing, or from another range, is
 * INVALID_ARGUMENT. */
kyso_status archive_list(archive *a, const archive_query *q, uint8_t **ids, size_t *count,
                         char next_token[513], kyso_err *err) KYSO_MUST_CHECK;

/* Fixity and backup */
typedef struct archive_scrub_report {
  uint64_t blobs, blobs_bad;       /* orphan chunks count as bad blobs too */
  uint64_t documents, documents_bad;
  uint64_t signatures, signatures_bad;
  uint64_t bytes;
  uint64_t certificates, certificates_bad;
  uint64_t indexes, indexes_bad;   /* index entries */
  uint64_t requests, requests_bad; /* idempotency entries */
} archive_scrub_report;
/* Called for each problem found (what: "blob", "document", "signature",
 * "certificate", "index", "request"; the id — for an index entry the
 * document it names, for a request the document of its result, all-zero
 * when unknown; a reason) and for progress (what == problem == NULL) every
 * so often. Return non-zero to stop (archive_scrub then says CANCELLED). */
typedef int (*archive_scrub_cb)(void *ctx, const char *what, const uint8_t id[32],
                                const char *problem, const archive_scrub_report *so_far);
/* Re-hashes every blob chunk and blob, finds chunks no manifest claims,
 * checks every record against its key and its links (a document's blob,
 * signatures and index entries; a signature's document, position and
 * certificate; an index entry's or request's document), on one snapshot.
 * Problems are reported, not repaired; OK means the scrub ran to the end. */
kyso_status archive_scrub(archive *a, archive_scrub_cb cb, void *ctx, archive_scrub_report *out,
                          kyso_err *err) KYSO_MUST_CHECK;
/* One SHA-256 over the logical contents of the records (key order, one
 * snapshot; not the node-local blob tier), with the applied index and the number of
 * entries hashed from the same snapshot: replicas that applied the same log
 * have the same digest. Reads everything: for tests and operators. */
kyso_status archive_state_digest(archive *a, uint8_t out[32], uint64_t *applied,
                                 uint64_t *records, kyso_err *err) KYSO_MUST_CHECK;
/* Calls cb for every recorded document whose bytes this node lacks (a
 * replica that applied the record before its fetch finished); cb returns
 * non-zero to stop. *missing counts them. */
typedef int (*archive_missing_cb)(const uint8_t sha256[32], void *ctx);
kyso_status archive_missing_blobs(archive *a, archive_missing_cb cb, void *ctx, uint64_t *missing,
                                  kyso_err *err) KYSO_MUST_CHECK;
/* A consistent RocksDB checkpoint in dir (must not exist), while serving. */
kyso_status archive_checkpoint(archive *a, const char *dir, kyso_err *err) KYSO_MUST_CHECK;

/* Checkpoints as files (checkpoint_files.c): a store moved between nodes. */
/* Called per file with its name, size and SHA-256; non-zero stops. */
typedef int (*archive_file_cb)(void *ctx, const char *name, uint64_t size,
                               const uint8_t sha256[32]);
/* Every file of a closed checkpoint directory (flat, regular files only:
 * INTERNAL otherwise), hashed in chunk-sized reads. */
kyso_status archive_checkpoint_files(const char *dir, archive_file_cb cb, void *ctx,
                                     kyso_err *err) KYSO_MUST_CHECK;
/* The applied index of the store in dir, which nobody has open (opens it,
 * reads, closes). NOT_FOUND when dir is not there. */
kyso_status archive_dir_applied_index(const char *dir, uint64_t *index,
                                      kyso_err *err) KYSO_MUST_CHECK;
/* Puts the store in incoming in the place of dir, durably: incoming's files
 * and directory synced, dir renamed aside, incoming renamed to dir, the
 * parent synced, then the old store removed. No store may be open on either. */
kyso_status archive_dir_replace(const char *dir, const char *incoming,
                                kyso_err *err) KYSO_MUST_CHECK;
/* Removes a directory tree (a checkpoint); a missing one is fine. */
kyso_status archive_dir_remove(const char *dir, kyso_err *err) KYSO_MUST_CHECK;

/* Counters since open (metrics, and tests that show group commit). */
typedef struct archive_stats {
  uint64_t commands;       /* submitted commands answered OK (replays included) */
  uint64_t replayed;       /* of which answered from a stored first result */
  uint64_t failed;         /* commands refused by apply or by a failed write */
  uint64_t batches;        /* group-commit batches written */
  uint64_t synced_writes;  /* WriteBatches written with sync (all kinds) */
  uint64_t blob_writes;    /* blobs stored (deduplicated ones not counted) */
  uint64_t blob_bytes;     /* their bytes */
} archive_stats;
void archive_get_stats(archive *a, archive_stats *out);

#endif
