/* cluster — the state machine libraft drives, on the loop thread.
 *
 * apply: libraft does not say which index it applies; it is the one after
 * raft_last_applied. The archive writes it with the entry's records, so a
 * restarted node skips what it already holds. A node that cannot apply a
 * committed entry stops (abort): going on would fork its state from its
 * peers'.
 *
 * snapshot: a small manifest (format, applied index), never the archive
 * itself: libraft 0.15 holds a snapshot in memory and restores it on the
 * loop thread. The archive's log is synced first, so nothing the snapshot
 * covers depends on the Raft entries it lets libraft drop.
 *
 * restore: a manifest at or below what the archive holds is taken as is
 * (the entries after it are skipped by archive_apply_entry). One beyond it
 * means this node missed entries that only a peer's archive still has:
 * libraft has already stored the snapshot and reset its log, so the
 * restore fails (nothing more is applied) and checkpoint_needed asks kysod
 * to fetch a peer's RocksDB checkpoint and restart; the next raft_start
 * restores the same snapshot onto the fetched archive. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_internal.h"
#include "kyso/log.h"

#define MANIFEST_FORMAT "kyso-snapshot 1 applied %" SCNu64 "\n"

static cluster__batch *batch_at(cluster *c, uint64_t index) {
  for (cluster__batch *b = c->pending; b != NULL; b = b->next)
    if (b->req.index == index) return b;
  return NULL;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result) {
  cluster *c = fsm->data;
  uint64_t index = raft_last_applied(&c->raft) + 1;
  archive_outcome *o = NULL;
  size_t n = 0;
  kyso_err err = {0};
  const uint8_t *entry = NULL;
  size_t len = 0;
  kyso_status st;
  *result = NULL;
  if (!cluster__unframe(buf, &entry, &len))
    st = kyso_fail(&err, KYSO_DATA_LOSS, "log entry %llu (%zu bytes) is not a kyso entry frame",
                   (unsigned long long)index, buf->len);
  else
    st = archive_apply_entry(c->archive, index, entry, len, &o, &n, &err);
  if (st != KYSO_OK) {
    kyso_log(KYSO_LOG_ERROR,
             "cluster: node %" PRIu64 " cannot apply committed entry %" PRIu64
             ": %s. Stopping: this node's state must not differ from its peers'. Repair or "
             "replace it (README: replacing a node)",
             c->id, index, err.msg);
    abort();
  }
  cluster__applied_note(c, index);
  if (c->applied != NULL && n > 0) c->applied(c->applied_ctx, o, n);
  cluster__batch *b = batch_at(c, index);
  if (b != NULL && b->outcomes == NULL) {
    b->outcomes = o;
    b->n_outcomes = n;
    *result = b;
  } else {
    archive_outcomes_free(o, n); /* a follower's copy: nobody here waits for it */
  }
  return 0;
}

int cluster__frame(const uint8_t *entry, size_t len, struct raft_buffer *out) {
  size_t n = CLUSTER__FRAME_HEADER + len;
  n = (n + 7) & ~(size_t)7;
  uint8_t *p = raft_malloc(n);
  if (p == NULL) return RAFT_NOMEM;
  memset(p, 0, n);
  memcpy(p, CLUSTER__FRAME_MAGIC, 4);
  for (int i = 0; i < 4; i++) p[4 + i] = (uint8_t)(len >> (24 - 8 * i));
  memcpy(p + CLUSTER__FRAME_HEADER, entry, len);
  out->base = p;
  out->len = n;
  return 0;
}

int cluster__unframe(const struct raft_buffer *buf, const uint8_t **entry, size_t *len) {
  const uint8_t *p = buf->base;
  if (buf->len < CLUSTER__FRAME_HEADER || buf->len % 8 != 0 ||
      memcmp(p, CLUSTER__FRAME_MAGIC, 4) != 0)
    return 0;
  size_t n = (size_t)p[4] << 24 | (size_t)p[5] << 16 | (size_t)p[6] << 8 | p[7];
  if (n > buf->len - CLUSTER__FRAME_HEADER || buf->len - CLUSTER__FRAME_HEADER - n >= 8) return 0;
  for (size_t i = CLUSTER__FRAME_HEADER + n; i < buf->len; i++)
    if (p[i] != 0) return 0;
  *entry = p + CLUSTER__FRAME_HEADER;
  *len = n;
  return 1;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs) {
  cluster *c = fsm->data;
  kyso_err err = {0};
  uint64_t applied = 0;
  char text[96];
  if (archive_sync(c->archive, &err) != KYSO_OK ||
      archive_applied_index(c->archive, &applied, &err) != KYSO_OK) {
    kyso_log(KYSO_LOG_WARN, "cluster: no snapshot this time: %s", err.msg);
    return RAFT_IOERR;
  }
  int len = snprintf(text, sizeof(text), "kyso-snapshot 1 applied %" PRIu64 "\n", applied);
  size_t padded = ((size_t)len + 7) & ~(size_t)7; /* libraft's encodings want 8-byte multiples */
  struct raft_buffer *b = raft_malloc(sizeof(*b));
  void *base = raft_malloc(padded);
  if (b == NULL || base == NULL) {
    raft_free(b);
    raft_free(base);
    return RAFT_NOMEM;
  }
  memset(base, 0, padded);
  memcpy(base, text, (size_t)len);
  b->base = base;
  b->len = padded;
  *bufs = b;
  *n_bufs = 1;
  c->snapshots_taken++;
  return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf) {
  cluster *c = fsm->data;
  kyso_err err = {0};
  uint64_t want = 0, have = 0;
  char text[96];
  size_t n = buf->len < sizeof(text) - 1 ? buf->len : sizeof(text) - 1;
  memcpy(text, buf->base, n);
  text[n] = '\0';
  if (sscanf(text, MANIFEST_FORMAT, &want) != 1) {
    kyso_log(KYSO_LOG_ERROR, "cluster: a snapshot of %zu bytes is not a kyso snapshot manifest",
             buf->len);
    return RAFT_CORRUPT;
  }
  if (archive_applied_index(c->archive, &have, &err) != KYSO_OK) {
    kyso_log(KYSO_LOG_ERROR, "cluster: cannot restore a snapshot: %s", err.msg);
    return RAFT_IOERR;
  }
  if (want > have) {
    int asked = c->checkpoint_needed != NULL && c->checkpoint_needed(c->checkpoint_ctx, want) == 0;
    kyso_log(asked ? KYSO_LOG_WARN : KYSO_LOG_ERROR,
             "cluster: node %" PRIu64 " was sent a snapshot at entry %" PRIu64
             " but its archive holds entries up to %" PRIu64 " only: %s",
             c->id, want, have,
             asked ? "applying nothing more; kysod restarts and fetches a peer's archive "
                     "checkpoint first"
                   : "it cannot fetch a peer's checkpoint; stop it and copy a peer's data "
                     "directory (README: replacing a node)");
    return RAFT_INVALID;
  }
  raft_free(buf->base); /* ours on success */
  c->snapshots_installed++;
  return 0;
}

void cluster__fsm_init(cluster *c) {
  memset(&c->fsm, 0, sizeof(c->fsm));
  c->fsm.version = 1; /* raft frees the snapshot buffers; no async snapshots */
  c->fsm.data = c;
  c->fsm.apply = fsm_apply;
  c->fsm.snapshot = fsm_snapshot;
  c->fsm.restore = fsm_restore;
}
