/* archive — group commit. Submitters check and hash their command on their
 * own thread, queue it and wait; one writer thread takes up to
 * group_commit_max queued commands, applies them in queue order into one
 * WriteBatch (inline blobs included), writes it with one fsync and wakes
 * every submitter with its own result. With replication, the same batch of
 * command bytes becomes one Raft entry. */
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"
#include "kyso/util.h"

struct archive__item {
  const uint8_t *cmd;
  size_t cmd_len;
  const uint8_t *blob; /* inline document, or NULL */
  size_t blob_len;
  uint8_t blob_sha[32];
  uint8_t *manifest;
  size_t manifest_len;

  kyso_status st;
  kyso_err err;
  uint8_t *result;
  size_t result_len;
  int replayed;
  int blob_added;
  int done;
  pthread_cond_t cv;
  archive__item *next;
};

/* Fails every command of a batch with the same error. */
static void fail_all(archive__item *it, kyso_status st, const kyso_err *err) {
  for (; it != NULL; it = it->next) {
    if (it->st != KYSO_OK) continue;
    it->st = st;
    it->err = *err;
    free(it->result);
    it->result = NULL;
  }
}

static void apply_one(archive *a, rocksdb_writebatch_wi_t *wb, archive__item *it) {
  rocksdb_writebatch_wi_set_save_point(wb);
  it->st = KYSO_OK;
  if (it->blob != NULL)
    it->st = archive__blob_into_batch(a, wb, it->blob_sha, it->blob, it->blob_len, it->manifest,
                                      it->manifest_len, &it->blob_added, &it->err);
  if (it->st == KYSO_OK)
    it->st = archive__apply(a, it->cmd, it->cmd_len, wb, &it->result, &it->result_len, &it->err);
  if (it->st == KYSO_OK) {
    archive__result *r = kyso__store__v1__command_result__unpack(NULL, it->result_len, it->result);
    it->replayed = r != NULL && r->replayed;
    kyso__store__v1__command_result__free_unpacked(r, NULL);
    return;
  }
  if (it->st == KYSO_ABORTED) return;
  char *e = NULL;
  rocksdb_writebatch_wi_rollback_to_save_point(wb, &e);
  if (e != NULL) {
    kyso_fail(&it->err, KYSO_ABORTED, "cannot roll back a refused command: %s", e);
    it->st = KYSO_ABORTED;
    rocksdb_free(e);
  }
}

/* Applies the items into one batch and writes it; sets every item's st. */
static void commit_locked(archive *a, rocksdb_writebatch_wi_t *wb, archive__item *items) {
  kyso_err err = {0};
  rocksdb_writebatch_wi_clear(wb);
  for (archive__item *it = items; it != NULL; it = it->next) {
    apply_one(a, wb, it);
    if (it->st == KYSO_ABORTED) {
      /* Nothing of this batch is written. The commands not yet applied
       * still hold st == KYSO_OK, as does this one now: all get the error. */
      err = it->err;
      it->st = KYSO_OK;
      fail_all(items, KYSO_INTERNAL, &err);
      return;
    }
  }
  if (rocksdb_writebatch_wi_count(wb) > 0) {
    char *e = NULL;
    rocksdb_write_writebatch_wi(a->db, a->wo, wb, &e);
    if (e != NULL) {
      kyso_status st = archive__rocks_fail(
          &err, e, "writing a batch of commands to the archive in '%s'", a->dir);
      fail_all(items, st, &err);
      return;
    }
    atomic_fetch_add(&a->st_batches, 1);
    if (!a->no_sync) atomic_fetch_add(&a->st_synced_writes, 1);
  }
  for (archive__item *it = items; it != NULL; it = it->next) {
    if (it->st != KYSO_OK) continue;
    atomic_fetch_add(&a->st_commands, 1);
    if (it->replayed) atomic_fetch_add(&a->st_replayed, 1);
    if (it->blob_added) {
      atomic_fetch_add(&a->st_blob_writes, 1);
      atomic_fetch_add(&a->st_blob_bytes, it->blob_len);
    }
  }
}

/* Under apply_mu: the orphan collector never deletes a blob between the
 * moment a batch reads that no record names it and the batch's write. */
static void commit(archive *a, rocksdb_writebatch_wi_t *wb, archive__item *items) {
  pthread_mutex_lock(&a->apply_mu);
  commit_locked(a, wb, items);
  pthread_mutex_unlock(&a->apply_mu);
}

static void *writer_main(void *arg) {
  archive *a = arg;
  rocksdb_writebatch_wi_t *wb = rocksdb_writebatch_wi_create(0, 1);
  pthread_mutex_lock(&a->mu);
  for (;;) {
    while (a->head == NULL && !a->stopping) pthread_cond_wait(&a->wake, &a->mu);
    if (a->head == NULL) break; /* stopping, and drained */
    /* Take a run from the queue: at most group_commit_max, and at most
     * ARCHIVE__GROUP_COMMIT_BYTES unless it is the first. */
    archive__item *first = a->head, *last = first;
    size_t bytes = first->cmd_len + first->blob_len;
    for (unsigned n = 1; n < a->group_commit_max && last->next != NULL; n++) {
      size_t more = last->next->cmd_len + last->next->blob_len;
      if (bytes + more > ARCHIVE__GROUP_COMMIT_BYTES) break;
      bytes += more;
      last = last->next;
    }
    a->head = last->next;
    if (a->head == NULL) a->tail = NULL;
    last->next = NULL;
    pthread_mutex_unlock(&a->mu);
    commit(a, wb, first);
    size_t used = 0;
    rocksdb_writebatch_wi_data(wb, &used);
    if (used > ARCHIVE__KEEP_BATCH) { /* give back what a batch of large inline blobs took */
      rocksdb_writebatch_wi_destroy(wb);
      wb = rocksdb_writebatch_wi_create(0, 1);
    }
    pthread_mutex_lock(&a->mu);
    for (archive__item *it = first, *next; it != NULL; it = next) {
      next = it->next; /* it belongs to its submitter once done is set */
      it->done = 1;
      pthread_cond_signal(&it->cv);
    }
  }
  pthread_mutex_unlock(&a->mu);
  rocksdb_writebatch_wi_destroy(wb);
  return NULL;
}

kyso_status archive__writer_start(archive *a, kyso_err *err) {
  if (pthread_create(&a->writer, NULL, writer_main, a) != 0)
    return kyso_fail(err, KYSO_INTERNAL, "cannot start the archive's writer thread");
  a->writer_started = 1;
  return KYSO_OK;
}

void archive__writer_stop(archive *a) {
  if (!a->writer_started) return;
  pthread_mutex_lock(&a->mu);
  a->stopping = 1;
  pthread_cond_signal(&a->wake);
  pthread_mutex_unlock(&a->mu);
  pthread_join(a->writer, NULL);
  a->writer_started = 0;
}

/* On the submitter's thread: the command is well formed and its document
 * is either carried inline (hashed here, off the writer thread) or already
 * stored. A local precondition, not part of apply: with replication only
 * the node that accepts the request checks it. */
kyso_status archive__precheck(archive *a, const uint8_t *cmd, size_t cmd_len, const uint8_t *blob,
                              size_t blob_len, uint8_t blob_sha[32], uint8_t **manifest,
                              size_t *manifest_len, kyso_err *err) {
  char want[65], got[65];
  archive__command *c = kyso__store__v1__command__unpack(NULL, cmd_len, cmd);
  if (c == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "the command is not a kyso.store.v1.Command");
  kyso_status st = archive__validate(c, err);
  if (st != KYSO_OK) goto out;
  if (archive__is_key_command(c)) {
    if (blob != NULL)
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "a key command carries no document");
    goto out;
  }
  const Kyso__Store__V1__RecordDocument *d = archive__command_document(c);
  kyso_hex(d->sha256.data, 32, want);
  if (blob == NULL) {
    uint64_t size = 0;
    st = archive_blob_size(a, d->sha256.data, &size, err);
    if (st == KYSO_NOT_FOUND)
      st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "document %s is not in the archive: put it first, or send it inline", want);
    else if (st == KYSO_OK && size != d->size)
      st =
          kyso_fail(err, KYSO_INVALID_ARGUMENT, "document %s has %llu bytes; the command says %llu",
                    want, (unsigned long long)size, (unsigned long long)d->size);
    goto out;
  }
  if (blob_len > ARCHIVE__MAX_INLINE_BLOB || blob_len > a->max_document) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                   "an inline document of %zu bytes is larger than %llu; upload it first",
                   blob_len,
                   (unsigned long long)(a->max_document < ARCHIVE__MAX_INLINE_BLOB
                                            ? a->max_document
                                            : ARCHIVE__MAX_INLINE_BLOB));
    goto out;
  }
  st = archive__blob_manifest(a, blob, blob_len, blob_sha, manifest, manifest_len, err);
  if (st != KYSO_OK) goto out;
  kyso_hex(blob_sha, 32, got);
  if (memcmp(blob_sha, d->sha256.data, 32) != 0 || blob_len != d->size)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "the inline document is %s (%zu bytes); the command names %s (%llu bytes)", got,
                   blob_len, want, (unsigned long long)d->size);
out:
  kyso__store__v1__command__free_unpacked(c, NULL);
  return st;
}

kyso_status archive_submit(archive *a, const uint8_t *command, size_t command_len,
                           const uint8_t *blob, size_t blob_len, uint8_t **result,
                           size_t *result_len, kyso_err *err) {
  archive__item it;
  memset(&it, 0, sizeof(it));
  *result = NULL;
  *result_len = 0;
  if (command == NULL || command_len == 0 || command_len > KYSO_MAX_MESSAGE)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a command of %zu bytes is not 1..%d bytes",
                     command_len, KYSO_MAX_MESSAGE);
  it.cmd = command;
  it.cmd_len = command_len;
  it.blob = blob;
  it.blob_len = blob != NULL ? blob_len : 0;
  kyso_status st = archive__precheck(a, it.cmd, it.cmd_len, it.blob, it.blob_len, it.blob_sha,
                                       &it.manifest, &it.manifest_len, err);
  if (st != KYSO_OK) {
    atomic_fetch_add(&a->st_failed, 1);
    goto out;
  }
  pthread_cond_init(&it.cv, NULL);
  pthread_mutex_lock(&a->mu);
  if (a->stopping) {
    st = kyso_fail(err, KYSO_UNAVAILABLE, "the archive in '%s' is closing", a->dir);
  } else {
    if (a->tail != NULL)
      a->tail->next = &it;
    else
      a->head = &it;
    a->tail = &it;
    pthread_cond_signal(&a->wake);
    while (!it.done) pthread_cond_wait(&it.cv, &a->mu);
    st = it.st;
  }
  pthread_mutex_unlock(&a->mu);
  pthread_cond_destroy(&it.cv);
  if (st == KYSO_OK) {
    *result = it.result;
    *result_len = it.result_len;
  } else {
    if (err != NULL && it.done) *err = it.err;
    free(it.result);
    atomic_fetch_add(&a->st_failed, 1);
  }
out:
  free(it.manifest);
  return st;
}

void archive_get_stats(archive *a, archive_stats *out) {
  out->commands = atomic_load(&a->st_commands);
  out->replayed = atomic_load(&a->st_replayed);
  out->failed = atomic_load(&a->st_failed);
  out->batches = atomic_load(&a->st_batches);
  out->synced_writes = atomic_load(&a->st_synced_writes);
  out->blob_writes = atomic_load(&a->st_blob_writes);
  out->blob_bytes = atomic_load(&a->st_blob_bytes);
}
