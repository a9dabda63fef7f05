/* archive — replicated application. With a cluster, commands reach the
 * records through the Raft log: the node that accepts a request prepares it
 * (checks it, stores its document), the leader batches commands into one
 * log entry, and every node applies each committed entry here, in log
 * order, with the same deterministic function the single node uses. The
 * entry's index is written in the same WriteBatch as the records it
 * produced, so after a crash the store says exactly which entries it holds.
 * The batch is not synced: the Raft log is the durable copy until a
 * snapshot lets Raft drop it, and archive_sync runs before that. */
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"
#include "kyso/log.h"

static const char applied_key[] = "raft_applied_index";

static void put_index(archive *a, rocksdb_writebatch_wi_t *wb, uint64_t index) {
  uint8_t v[8];
  for (int i = 0; i < 8; i++) v[i] = (uint8_t)(index >> (56 - 8 * i));
  rocksdb_writebatch_wi_put_cf(wb, a->cf[ARCHIVE__CF_DEFAULT], applied_key,
                               sizeof(applied_key) - 1, (const char *)v, sizeof(v));
}

kyso_status archive_applied_index(archive *a, uint64_t *index, kyso_err *err) {
  uint8_t *v = NULL;
  size_t n = 0;
  *index = 0;
  kyso_status st = archive__get(a, NULL, ARCHIVE__CF_DEFAULT, applied_key,
                                sizeof(applied_key) - 1, &v, &n, err);
  if (st == KYSO_NOT_FOUND) return KYSO_OK;
  if (st != KYSO_OK) return st;
  if (n != 8) {
    st = kyso_fail(err, KYSO_DATA_LOSS, "the archive in '%s' holds a damaged applied index",
                   a->dir);
  } else {
    for (int i = 0; i < 8; i++) *index = *index << 8 | v[i];
  }
  free(v);
  return st;
}

kyso_status archive_prepare(archive *a, const uint8_t *cmd, size_t cmd_len, const uint8_t *blob,
                            size_t blob_len, kyso_err *err) {
  uint8_t sha[32], *manifest = NULL;
  size_t manifest_len = 0;
  int added = 0;
  if (cmd == NULL || cmd_len == 0 || cmd_len > KYSO_MAX_MESSAGE)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a command of %zu bytes is not 1..%d bytes",
                     cmd_len, KYSO_MAX_MESSAGE);
  kyso_status st = archive__precheck(a, cmd, cmd_len, blob, blob_len, sha, &manifest,
                                     &manifest_len, err);
  if (st != KYSO_OK || blob == NULL) goto out;
  /* The inline document is stored (synced) before the command is proposed:
   * every node that applies the command can then fetch it from here. */
  rocksdb_writebatch_wi_t *wb = rocksdb_writebatch_wi_create(0, 1);
  st = archive__blob_into_batch(a, wb, sha, blob, blob_len, manifest, manifest_len, &added, err);
  if (st == KYSO_OK && added) {
    char *e = NULL;
    rocksdb_write_writebatch_wi(a->db, a->wo, wb, &e);
    if (e != NULL)
      st = archive__rocks_fail(err, e, "storing an inline document in '%s'", a->dir);
    else {
      atomic_fetch_add(&a->st_blob_writes, 1);
      atomic_fetch_add(&a->st_blob_bytes, blob_len);
      if (!a->no_sync) atomic_fetch_add(&a->st_synced_writes, 1);
    }
  }
  rocksdb_writebatch_wi_destroy(wb);
out:
  free(manifest);
  return st;
}

kyso_status archive_pack_entry(const uint8_t *const *cmds, const size_t *lens, size_t n,
                               uint8_t **out, size_t *out_len, kyso_err *err) {
  Kyso__Store__V1__Entry e = KYSO__STORE__V1__ENTRY__INIT;
  ProtobufCBinaryData *c = calloc(n ? n : 1, sizeof(*c));
  kyso_status st = KYSO_OK;
  *out = NULL;
  *out_len = 0;
  if (c == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory packing an entry");
  for (size_t i = 0; i < n; i++) {
    c[i].data = (uint8_t *)cmds[i];
    c[i].len = lens[i];
  }
  e.version = ARCHIVE__ENTRY_VERSION;
  e.n_commands = n;
  e.commands = c;
  size_t len = kyso__store__v1__entry__get_packed_size(&e);
  if ((*out = malloc(len ? len : 1)) == NULL)
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory packing an entry");
  else
    *out_len = kyso__store__v1__entry__pack(&e, *out);
  free(c);
  return st;
}

/* Refusals every node makes alike (the command itself is wrong for the
 * stored state) are answers; anything else means this node's store could
 * not take what the others took. */
static int deterministic(kyso_status st) {
  return st == KYSO_INVALID_ARGUMENT || st == KYSO_FAILED_PRECONDITION ||
         st == KYSO_ALREADY_EXISTS;
}

/* A command this kysod is too old to apply must stop the node, not be
 * refused: its newer peers apply it, and a refusal would fork the state. */
static kyso_status check_version(archive *a, const ProtobufCBinaryData *cmd, kyso_err *err) {
  archive__command *c = kyso__store__v1__command__unpack(NULL, cmd->len, cmd->data);
  kyso_status st = KYSO_OK;
  if (c != NULL && c->version > ARCHIVE__COMMAND_VERSION)
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "the log holds a version %u command; this kysod applies version %d: upgrade "
                   "it before it rejoins (archive '%s')",
                   c->version, ARCHIVE__COMMAND_VERSION, a->dir);
  kyso__store__v1__command__free_unpacked(c, NULL);
  return st;
}

static kyso_status apply_entry_locked(archive *a, uint64_t index, const uint8_t *entry,
                                      size_t len, archive_outcome **out, size_t *count,
                                      kyso_err *err) {
  uint64_t applied = 0;
  kyso_status st;
  Kyso__Store__V1__Entry *e = NULL;
  archive_outcome *o = NULL;
  rocksdb_writebatch_wi_t *wb = NULL;
  *out = NULL;
  *count = 0;
  if ((st = archive_applied_index(a, &applied, err)) != KYSO_OK) return st;
  if (index <= applied) return KYSO_OK; /* replayed after a restart: already here */
  if ((e = kyso__store__v1__entry__unpack(NULL, len, entry)) == NULL)
    return kyso_fail(err, KYSO_DATA_LOSS, "log entry %llu is not a kyso.store.v1.Entry",
                     (unsigned long long)index);
  if (e->version != ARCHIVE__ENTRY_VERSION) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "log entry %llu has version %u; this kysod applies version %d: upgrade it",
                   (unsigned long long)index, e->version, ARCHIVE__ENTRY_VERSION);
    goto out;
  }
  if ((o = calloc(e->n_commands ? e->n_commands : 1, sizeof(*o))) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory applying log entry %llu",
                   (unsigned long long)index);
    goto out;
  }
  wb = rocksdb_writebatch_wi_create(0, 1);
  for (size_t i = 0; i < e->n_commands; i++) {
    if ((st = check_version(a, &e->commands[i], err)) != KYSO_OK) goto out;
    o[i].st = archive__apply(a, e->commands[i].data, e->commands[i].len, wb, &o[i].result,
                             &o[i].result_len, &o[i].err);
    if (o[i].st != KYSO_OK && !deterministic(o[i].st)) {
      st = o[i].st;
      kyso_fail(err, st, "applying command %zu of log entry %llu: %s", i,
                (unsigned long long)index, o[i].err.msg);
      goto out;
    }
  }
  put_index(a, wb, index);
  char *re = NULL;
  rocksdb_write_writebatch_wi(a->db, a->wo_apply, wb, &re);
  if (re != NULL) {
    st = archive__rocks_fail(err, re, "writing log entry %llu to the archive in '%s'",
                             (unsigned long long)index, a->dir);
    goto out;
  }
  atomic_fetch_add(&a->st_batches, 1);
  for (size_t i = 0; i < e->n_commands; i++) {
    if (o[i].st != KYSO_OK) {
      atomic_fetch_add(&a->st_failed, 1);
      continue;
    }
    atomic_fetch_add(&a->st_commands, 1);
    archive__result *r = kyso__store__v1__command_result__unpack(NULL, o[i].result_len,
                                                                  o[i].result);
    if (r != NULL && r->replayed) atomic_fetch_add(&a->st_replayed, 1);
    kyso__store__v1__command_result__free_unpacked(r, NULL);
  }
  *out = o;
  *count = e->n_commands;
  o = NULL;
out:
  if (o != NULL) archive_outcomes_free(o, e->n_commands);
  if (wb != NULL) rocksdb_writebatch_wi_destroy(wb);
  kyso__store__v1__entry__free_unpacked(e, NULL);
  return st;
}

/* Under apply_mu, like the single node's writer (collect.c). */
kyso_status archive_apply_entry(archive *a, uint64_t index, const uint8_t *entry, size_t len,
                                archive_outcome **out, size_t *count, kyso_err *err) {
  pthread_mutex_lock(&a->apply_mu);
  kyso_status st = apply_entry_locked(a, index, entry, len, out, count, err);
  pthread_mutex_unlock(&a->apply_mu);
  return st;
}

void archive_outcomes_free(archive_outcome *o, size_t n) {
  if (o == NULL) return;
  for (size_t i = 0; i < n; i++) free(o[i].result);
  free(o);
}

kyso_status archive_sync(archive *a, kyso_err *err) {
  char *e = NULL;
  rocksdb_flush_wal(a->db, 1, &e);
  if (e != NULL) return archive__rocks_fail(err, e, "syncing the archive's log in '%s'", a->dir);
  if (!a->no_sync) atomic_fetch_add(&a->st_synced_writes, 1);
  return KYSO_OK;
}
