/* kysod — catching up by a peer's archive checkpoint.
 *
 * When Raft hands this node a snapshot beyond what its archive holds
 * (cluster/fsm.c), kysod__on_checkpoint_needed writes the snapshot's index
 * to DATA_DIR/checkpoint-needed (durably) and asks the main thread to
 * restart. At the next start, before the archive opens,
 * kysod__checkpoint_catch_up asks the members named in [cluster] in turn
 * for a checkpoint that reaches that index (kyso.v1.PeerCheckpoint, with
 * this node's own certificate), downloads it into DATA_DIR/archive.incoming
 * one chunk at a time, checks every file's size and SHA-256 against the
 * peer's manifest and the store's applied index by opening it, and only
 * then puts it in place of DATA_DIR/archive and removes the record. Raft
 * then restores the same snapshot, which the archive now covers. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kyso/client.h"
#include "kyso/limits.h"
#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/v1/peer.pb-c.h"

#define MARKER "checkpoint-needed"
#define OPEN_MS 600000 /* a peer makes and hashes its checkpoint ([server] max_call_seconds) */
#define FILE_MS 600000          /* one file streamed, at most (the same cap) */
#define ROUNDS 30               /* over every peer, before kysod gives up starting */
#define ROUND_PAUSE_MS 2000     /* between rounds: a peer may still be catching up */
#define PROGRESS_BYTES (64u << 20)

static void marker_path(const kysod *d, char *out, size_t size) {
  snprintf(out, size, "%s/" MARKER, d->cfg.data_dir);
}

int kysod__on_checkpoint_needed(void *ctx, uint64_t index) {
  kysod *d = ctx;
  char path[KYSO_PATH_MAX + 32], text[32];
  kyso_err err = {0};
  marker_path(d, path, sizeof(path));
  int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", index);
  if (kyso_write_file_atomic(path, text, (size_t)n, 0600, &err) != KYSO_OK) {
    kyso_log(KYSO_LOG_ERROR, "checkpoint: cannot record that entry %" PRIu64 " is needed: %s",
             index, err.msg);
    return -1;
  }
  /* The main thread takes SIGUSR1 in sigwait; every other thread blocks it. */
  atomic_store(&d->restart_for_checkpoint, 1);
  kill(getpid(), SIGUSR1);
  return 0;
}

typedef struct fetch {
  kysod *d;
  kyso_client *client;
  unsigned peer_id;
  const char *peer_rpc;
  char incoming[KYSO_PATH_MAX + 32];
  uint64_t total, done, next_report;
  uint8_t *buf; /* one request */
} fetch;

static kyso_status peer_fail(fetch *f, kyso_err *err, const kyso_reply *r, const char *what) {
  return kyso_fail(err, r->grpc_status == 9 ? KYSO_FAILED_PRECONDITION : KYSO_UNAVAILABLE,
                   "node %u (%s) %s: status %d: %s", f->peer_id, f->peer_rpc, what,
                   r->grpc_status, r->message);
}

/* Unary call of a PeerCheckpoint method; *out unpacked with desc. */
static kyso_status call(fetch *f, const char *method, const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *desc, int64_t timeout_ms,
                        ProtobufCMessage **out, kyso_err *err) {
  kyso_reply r = {0};
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = malloc(len ? len : 1);
  kyso_status st = KYSO_OK;
  *out = NULL;
  if (buf == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  protobuf_c_message_pack(req, buf);
  st = kyso_client_call(f->client, method, buf, len, timeout_ms, &r, err);
  if (st == KYSO_OK && r.grpc_status != 0) st = peer_fail(f, err, &r, method);
  if (st == KYSO_OK && (*out = protobuf_c_message_unpack(desc, NULL, r.len, r.data)) == NULL)
    st = kyso_fail(err, KYSO_INTERNAL, "node %u answered %s with something else", f->peer_id,
                   method);
  kyso_reply_free(&r);
  free(buf);
  return st;
}

static kyso_status write_all(int fd, const uint8_t *p, size_t n, const char *path,
                             kyso_err *err) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return kyso_fail(err, KYSO_INTERNAL, "cannot write '%s': %s", path, strerror(errno));
    p += w;
    n -= (size_t)w;
  }
  return KYSO_OK;
}

/* One file of the manifest into incoming/, checked by size and SHA-256. */
static kyso_status get_file(fetch *f, const char *id, const Kyso__V1__CheckpointFile *want,
                            kyso_err *err) {
  char path[2 * KYSO_PATH_MAX], hex[65];
  uint8_t sha[32];
  uint64_t size = 0;
  kyso_stream *s = NULL;
  kyso_reply reply = {0};
  int fd = -1;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  Kyso__V1__CheckpointFileRequest req = KYSO__V1__CHECKPOINT_FILE_REQUEST__INIT;
  kyso_status st = KYSO_OK;
  if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  if (want->name[0] == '\0' || strchr(want->name, '/') != NULL || want->name[0] == '.' ||
      strlen(want->name) > 255) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "node %u listed '%.64s', not a file name",
                   f->peer_id, want->name);
    goto out;
  }
  snprintf(path, sizeof(path), "%s/%s", f->incoming, want->name);
  if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot create '%s': %s", path, strerror(errno));
    goto out;
  }
  req.id = (char *)id;
  req.name = want->name;
  size_t len = kyso__v1__checkpoint_file_request__pack(&req, f->buf);
  if ((st = kyso_stream_open(f->client, "/kyso.v1.PeerCheckpoint/GetCheckpointFile", FILE_MS, &s,
                             err)) != KYSO_OK ||
      (st = kyso_stream_send(s, f->buf, len, err)) != KYSO_OK ||
      (st = kyso_stream_close_send(s, err)) != KYSO_OK)
    goto finish;
  for (;;) {
    uint8_t *data = NULL;
    size_t dl = 0;
    int end = 0;
    if ((st = kyso_stream_recv(s, &data, &dl, &end, err)) != KYSO_OK || end) break;
    Kyso__V1__CheckpointChunk *m = kyso__v1__checkpoint_chunk__unpack(NULL, dl, data);
    free(data);
    if (m == NULL || m->data.len > KYSO_CHUNK_SIZE || size + m->data.len > want->size)
      st = kyso_fail(err, KYSO_DATA_LOSS, "node %u sent more or other than the %" PRIu64
                     " bytes it listed for '%s'", f->peer_id, want->size, want->name);
    else
      st = write_all(fd, m->data.data, m->data.len, path, err);
    if (st == KYSO_OK) {
      EVP_DigestUpdate(md, m->data.data, m->data.len);
      size += m->data.len;
      f->done += m->data.len;
    }
    kyso__v1__checkpoint_chunk__free_unpacked(m, NULL);
    if (st != KYSO_OK) break;
    if (f->done >= f->next_report) {
      kyso_log(KYSO_LOG_INFO, "checkpoint: %" PRIu64 " of %" PRIu64 " MiB from node %u",
               f->done >> 20, f->total >> 20, f->peer_id);
      f->next_report += PROGRESS_BYTES;
    }
  }
finish:;
  kyso_status fin = kyso_stream_finish(s, &reply, err);
  s = NULL;
  if (st == KYSO_OK) st = fin;
  if (st == KYSO_OK && reply.grpc_status != 0) st = peer_fail(f, err, &reply, "GetCheckpointFile");
  if (st != KYSO_OK) goto out;
  EVP_DigestFinal_ex(md, sha, NULL);
  kyso_hex(sha, 32, hex);
  if (size != want->size || strcmp(hex, want->sha256) != 0) {
    st = kyso_fail(err, KYSO_DATA_LOSS,
                   "'%s' from node %u has %" PRIu64 " bytes hashing to %s; its manifest said %"
                   PRIu64 " bytes, %s: not used",
                   want->name, f->peer_id, size, hex, want->size, want->sha256);
    goto out;
  }
  if (fsync(fd) != 0)
    st = kyso_fail(err, KYSO_INTERNAL, "cannot sync '%s': %s", path, strerror(errno));
out:
  kyso_stream_cancel(s);
  kyso_reply_free(&reply);
  if (fd >= 0) close(fd);
  EVP_MD_CTX_free(md);
  return st;
}

/* The whole checkpoint of one peer into f->incoming; *applied is the
 * store's own applied index once it opened. */
static kyso_status fetch_from(fetch *f, uint64_t want, uint64_t *applied, kyso_err *err) {
  Kyso__V1__OpenCheckpointRequest oreq = KYSO__V1__OPEN_CHECKPOINT_REQUEST__INIT;
  Kyso__V1__CheckpointManifest *m = NULL;
  kyso_status st = archive_dir_remove(f->incoming, err);
  if (st != KYSO_OK) return st;
  if (mkdir(f->incoming, 0700) != 0)
    return kyso_fail(err, KYSO_INTERNAL, "cannot create '%s': %s", f->incoming, strerror(errno));
  oreq.min_index = want;
  st = call(f, "/kyso.v1.PeerCheckpoint/OpenCheckpoint", &oreq.base,
            &kyso__v1__checkpoint_manifest__descriptor, OPEN_MS, (ProtobufCMessage **)&m, err);
  if (st != KYSO_OK) goto out;
  f->total = f->done = 0;
  f->next_report = PROGRESS_BYTES;
  for (size_t i = 0; i < m->n_files; i++) f->total += m->files[i]->size;
  kyso_log(KYSO_LOG_INFO,
           "checkpoint: node %u offers checkpoint %s at entry %" PRIu64 " or later: %zu files, %"
           PRIu64 " MiB",
           f->peer_id, m->id, m->applied_index, m->n_files, f->total >> 20);
  int64_t t0 = kyso_now_ms();
  for (size_t i = 0; i < m->n_files && st == KYSO_OK; i++)
    st = get_file(f, m->id, m->files[i], err);
  /* The peer's copy can go now, whatever happened. */
  Kyso__V1__CheckpointRef ref = KYSO__V1__CHECKPOINT_REF__INIT;
  ProtobufCMessage *closed = NULL;
  kyso_err ignored = {0};
  ref.id = m->id;
  if (call(f, "/kyso.v1.PeerCheckpoint/CloseCheckpoint", &ref.base,
           &kyso__v1__checkpoint_closed__descriptor, 10000, &closed, &ignored) != KYSO_OK)
    kyso_log(KYSO_LOG_WARN, "checkpoint: %s (node %u removes it once idle)", ignored.msg,
             f->peer_id);
  if (closed != NULL) protobuf_c_message_free_unpacked(closed, NULL);
  if (st != KYSO_OK) goto out;
  kyso_log(KYSO_LOG_INFO, "checkpoint: %" PRIu64 " MiB in %zu files from node %u in %lld ms, "
           "every file matched its SHA-256",
           f->done >> 20, m->n_files, f->peer_id, (long long)(kyso_now_ms() - t0));
  if ((st = archive_dir_applied_index(f->incoming, applied, err)) != KYSO_OK) goto out;
  if (*applied < want)
    st = kyso_fail(err, KYSO_DATA_LOSS,
                   "the checkpoint from node %u holds entries up to %" PRIu64 " only, not %" PRIu64,
                   f->peer_id, *applied, want);
out:
  if (m != NULL) kyso__v1__checkpoint_manifest__free_unpacked(m, NULL);
  return st;
}

static kyso_status read_marker(const char *path, uint64_t *want, kyso_err *err) {
  kyso_buf b;
  kyso_status st = kyso_read_file(path, 64, &b, err);
  if (st != KYSO_OK) return st;
  char text[65] = "";
  memcpy(text, b.data, b.len < 64 ? b.len : 64);
  kyso_buf_free(&b, 0);
  char *end = NULL;
  *want = strtoull(text, &end, 10);
  if (end == text || *want == 0)
    return kyso_fail(err, KYSO_DATA_LOSS,
                     "'%s' does not hold an entry index; remove it and copy a peer's data "
                     "directory instead", path);
  return KYSO_OK;
}

/* Every configured peer once: OK once one checkpoint was put in place. */
static kyso_status one_round(fetch *f, uint64_t want, const char *archive_dir, kyso_err *err) {
  kyso_status st = kyso_fail(err, KYSO_UNAVAILABLE, "no other member is configured");
  for (size_t i = 0; i < f->d->cfg.member_count; i++) {
    const kyso_cluster_member *mb = &f->d->cfg.members[i];
    uint64_t applied = 0;
    if (mb->id == f->d->cfg.node_id) continue;
    f->peer_id = mb->id;
    f->peer_rpc = mb->rpc;
    st = kysod__peer_client_open(&f->d->cfg, mb->rpc, &f->client, err);
    if (st == KYSO_OK) st = fetch_from(f, want, &applied, err);
    kyso_client_close(f->client);
    f->client = NULL;
    if (st == KYSO_OK && (st = archive_dir_replace(archive_dir, f->incoming, err)) == KYSO_OK) {
      kyso_log(KYSO_LOG_INFO, "checkpoint: the archive is now node %u's checkpoint (entries up "
               "to %" PRIu64 ")", mb->id, applied);
      return KYSO_OK;
    }
    kyso_log(KYSO_LOG_WARN, "checkpoint: not from node %u: %s", mb->id, err->msg);
  }
  return st;
}

kyso_status kysod__checkpoint_catch_up(kysod *d, kyso_err *err) {
  char marker[KYSO_PATH_MAX + 32], archive_dir[KYSO_PATH_MAX + 16];
  uint64_t want = 0;
  fetch f = {.d = d};
  marker_path(d, marker, sizeof(marker));
  kyso_status st = read_marker(marker, &want, err);
  if (st == KYSO_NOT_FOUND) return KYSO_OK;
  if (st != KYSO_OK) return st;
  snprintf(archive_dir, sizeof(archive_dir), "%s/archive", d->cfg.data_dir);
  snprintf(f.incoming, sizeof(f.incoming), "%s/archive.incoming", d->cfg.data_dir);
  if ((f.buf = malloc(4096)) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  kyso_log(KYSO_LOG_WARN, "checkpoint: this node's archive must reach entry %" PRIu64
           " (%s): fetching a peer's checkpoint before it starts", want, marker);
  for (int round = 0; round < ROUNDS; round++) {
    if (round > 0) {
      struct timespec t = {ROUND_PAUSE_MS / 1000, 0};
      nanosleep(&t, NULL); /* back-off between rounds, not synchronisation */
    }
    if ((st = one_round(&f, want, archive_dir, err)) == KYSO_OK) break;
  }
  if (st == KYSO_OK) {
    if (unlink(marker) != 0)
      st = kyso_fail(err, KYSO_INTERNAL, "cannot remove '%s': %s", marker, strerror(errno));
    else
      d->checkpoints_installed++;
  } else {
    kyso_err_wrap(err, "no peer gave this node a checkpoint reaching entry %" PRIu64
                  " after %d rounds; start kysod again once a peer is reachable (or copy a "
                  "peer's data directory and remove '%s')", want, ROUNDS, marker);
  }
  kyso_err ignored = {0};
  if (archive_dir_remove(f.incoming, &ignored) != KYSO_OK)
    kyso_log(KYSO_LOG_WARN, "checkpoint: %s", ignored.msg);
  free(f.buf);
  return st;
}
