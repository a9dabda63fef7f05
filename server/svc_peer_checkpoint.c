/* kysod — kyso.v1.PeerCheckpoint: this node's archive as a RocksDB
 * checkpoint, for a peer that fell behind a Raft snapshot.
 *
 * OpenCheckpoint makes a checkpoint under DATA_DIR/checkpoints/ID (hard
 * links to the live SST and blob files, so cheap in space and time) and
 * answers its files with their sizes and SHA-256, hashed in chunk-sized
 * reads; GetCheckpointFile streams one file in chunks of at most 1 MiB;
 * CloseCheckpoint removes it. At most CKPT_OPEN_MAX are open at once, and
 * one nobody used for CKPT_IDLE_MS is removed at the next open, so a peer
 * that died mid-transfer pins the old files for a while only. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyso/limits.h"
#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/v1/peer.pb-c.h"

#define CKPT_OPEN_MAX 2                /* each pins its files until closed */
#define CKPT_IDLE_MS (10 * 60 * 1000)  /* a forgotten one is removed after this */
#define CKPT_FILES_MAX 100000          /* files one checkpoint may list */

typedef struct ckpt {
  char id[33];   /* "" = free slot */
  char dir[KYSO_PATH_MAX + 64];
  int64_t used_ms;
  int users;     /* calls streaming from it now */
  int closed;    /* remove when the last user is done */
} ckpt;

struct kysod_checkpoints {
  pthread_mutex_t mu;
  char root[KYSO_PATH_MAX + 16];
  ckpt slot[CKPT_OPEN_MAX];
};

static void remove_dir(const char *dir) {
  kyso_err err = {0};
  if (archive_dir_remove(dir, &err) != KYSO_OK) kyso_log(KYSO_LOG_WARN, "checkpoint: %s", err.msg);
}

kyso_status kysod__checkpoints_open(kysod *d, kyso_err *err) {
  kysod_checkpoints *c = calloc(1, sizeof(*c));
  if (c == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  pthread_mutex_init(&c->mu, NULL);
  snprintf(c->root, sizeof(c->root), "%s/checkpoints", d->cfg.data_dir);
  remove_dir(c->root); /* left by a kysod that stopped while serving one */
  d->checkpoints = c;
  return KYSO_OK;
}

void kysod__checkpoints_close(kysod *d) {
  kysod_checkpoints *c = d->checkpoints;
  if (c == NULL) return;
  remove_dir(c->root);
  pthread_mutex_destroy(&c->mu);
  free(c);
  d->checkpoints = NULL;
}

/* Under mu: removes what was closed or forgotten and nobody streams from. */
static void sweep_locked(kysod_checkpoints *c) {
  int64_t now = kyso_now_ms();
  for (int i = 0; i < CKPT_OPEN_MAX; i++) {
    ckpt *k = &c->slot[i];
    if (k->id[0] == '\0' || k->users > 0 || (!k->closed && now - k->used_ms < CKPT_IDLE_MS))
      continue;
    kyso_log(KYSO_LOG_INFO, "checkpoint %s removed (%s)", k->id, k->closed ? "closed" : "idle");
    remove_dir(k->dir);
    k->id[0] = '\0';
  }
}

/* Takes the checkpoint id for a call (NOT_FOUND if unknown); release after. */
static ckpt *acquire(kysod_checkpoints *c, const char *id, kyso_err *err) {
  ckpt *found = NULL;
  pthread_mutex_lock(&c->mu);
  for (int i = 0; i < CKPT_OPEN_MAX && found == NULL; i++)
    if (c->slot[i].id[0] != '\0' && !c->slot[i].closed && strcmp(c->slot[i].id, id) == 0)
      found = &c->slot[i];
  if (found != NULL) {
    found->users++;
    found->used_ms = kyso_now_ms();
  }
  pthread_mutex_unlock(&c->mu);
  if (found == NULL)
    kyso_fail(err, KYSO_NOT_FOUND, "no open checkpoint '%s' here (closed or idle too long): "
              "open a new one", id);
  return found;
}

static void release(kysod_checkpoints *c, ckpt *k, int close_it) {
  pthread_mutex_lock(&c->mu);
  k->users--;
  k->used_ms = kyso_now_ms();
  if (close_it) k->closed = 1;
  sweep_locked(c);
  pthread_mutex_unlock(&c->mu);
}

typedef struct listing {
  Kyso__V1__CheckpointManifest *m;
  size_t cap;
} listing;

static int add_file(void *ctx, const char *name, uint64_t size, const uint8_t sha[32]) {
  listing *l = ctx;
  Kyso__V1__CheckpointManifest *m = l->m;
  if (m->n_files == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    Kyso__V1__CheckpointFile **f =
        cap <= CKPT_FILES_MAX ? realloc(m->files, cap * sizeof(*f)) : NULL;
    if (f == NULL) return 1;
    m->files = f;
    l->cap = cap;
  }
  Kyso__V1__CheckpointFile *f = calloc(1, sizeof(*f));
  char *hex = malloc(65);
  char *copy = strdup(name);
  if (f == NULL || hex == NULL || copy == NULL) {
    free(f);
    free(hex);
    free(copy);
    return 1;
  }
  kyso__v1__checkpoint_file__init(f);
  kyso_hex(sha, 32, hex);
  f->name = copy;
  f->size = size;
  f->sha256 = hex;
  m->files[m->n_files++] = f;
  return 0;
}

static void manifest_free(Kyso__V1__CheckpointManifest *m) {
  for (size_t i = 0; i < m->n_files; i++) {
    free(m->files[i]->name);
    free(m->files[i]->sha256);
    free(m->files[i]);
  }
  free(m->files);
}

/* Reserves a free slot for a new checkpoint (RESOURCE_EXHAUSTED if none). */
static ckpt *reserve(kysod_checkpoints *c, kyso_err *err) {
  uint8_t rnd[16];
  ckpt *k = NULL;
  if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
    kyso_fail(err, KYSO_INTERNAL, "no randomness for a checkpoint id");
    return NULL;
  }
  pthread_mutex_lock(&c->mu);
  sweep_locked(c);
  for (int i = 0; i < CKPT_OPEN_MAX && k == NULL; i++)
    if (c->slot[i].id[0] == '\0') k = &c->slot[i];
  if (k != NULL) {
    memset(k, 0, sizeof(*k));
    kyso_hex(rnd, sizeof(rnd), k->id);
    snprintf(k->dir, sizeof(k->dir), "%s/%s", c->root, k->id);
    k->users = 1;
    k->used_ms = kyso_now_ms();
  }
  pthread_mutex_unlock(&c->mu);
  if (k == NULL)
    kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
              "%d checkpoints are open on this node already: retry later, or ask another peer",
              CKPT_OPEN_MAX);
  return k;
}

void kysod__peer_open_checkpoint(rpc_call *call, void *app) {
  kysod *d = app;
  kysod_checkpoints *c = d->checkpoints;
  kyso_err err = {0};
  kyso_status st;
  uint64_t applied = 0;
  ckpt *k = NULL;
  Kyso__V1__CheckpointManifest m = KYSO__V1__CHECKPOINT_MANIFEST__INIT;
  listing l = {.m = &m};
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__OpenCheckpointRequest *req =
      kyso__v1__open_checkpoint_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a kyso.v1.OpenCheckpointRequest");
    goto out;
  }
  /* Read before the checkpoint is made: it holds at least this entry. */
  if ((st = archive_applied_index(d->archive, &applied, &err)) != KYSO_OK) goto out;
  if (applied < req->min_index) {
    st = kyso_fail(&err, KYSO_FAILED_PRECONDITION,
                   "node %" PRIu64 " applied entries up to %" PRIu64 " only, not %" PRIu64
                   ": ask a peer that is further on, or retry once this one caught up",
                   (uint64_t)d->cfg.node_id, applied, req->min_index);
    goto out;
  }
  if ((k = reserve(c, &err)) == NULL) {
    st = err.code;
    goto out;
  }
  if (mkdir(c->root, 0700) != 0 && errno != EEXIST) {
    st = kyso_fail(&err, KYSO_INTERNAL, "cannot create '%s': %s", c->root, strerror(errno));
    goto out;
  }
  int64_t t0 = kyso_now_ms();
  if ((st = archive_checkpoint(d->archive, k->dir, &err)) != KYSO_OK) goto out;
  if ((st = archive_checkpoint_files(k->dir, add_file, &l, &err)) != KYSO_OK) goto out;
  uint64_t bytes = 0;
  for (size_t i = 0; i < m.n_files; i++) bytes += m.files[i]->size;
  kyso_log(KYSO_LOG_INFO,
           "checkpoint %s for %s: entry %" PRIu64 " or later, %zu files, %" PRIu64
           " bytes, hashed in %lld ms",
           k->id, rpc_call_peer(call)->principal, applied, m.n_files, bytes,
           (long long)(kyso_now_ms() - t0));
  m.id = k->id;
  m.applied_index = applied;
out:
  if (st == KYSO_OK)
    kysod__reply(call, &m.base);
  else
    rpc_call_finish(call, st, err.msg, NULL, 0);
  if (k != NULL) release(c, k, st != KYSO_OK);
  manifest_free(&m);
  kyso__v1__open_checkpoint_request__free_unpacked(req, NULL);
}

static kyso_status send_file(rpc_call *call, const char *path, uint64_t offset, kyso_err *err) {
  kyso_status st = KYSO_OK;
  uint8_t *buf = malloc(KYSO_CHUNK_SIZE), *msg = malloc(KYSO_CHUNK_SIZE + 16);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (buf == NULL || msg == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  if (fd < 0) {
    st = kyso_fail(err, KYSO_NOT_FOUND, "checkpoint file '%s': %s", path, strerror(errno));
    goto out;
  }
  for (;;) {
    ssize_t n = pread(fd, buf, KYSO_CHUNK_SIZE, (off_t)offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = kyso_fail(err, KYSO_INTERNAL, "cannot read '%s': %s", path, strerror(errno));
      goto out;
    }
    if (n == 0) break;
    Kyso__V1__CheckpointChunk m = KYSO__V1__CHECKPOINT_CHUNK__INIT;
    m.data.data = buf;
    m.data.len = (size_t)n;
    size_t packed = kyso__v1__checkpoint_chunk__pack(&m, msg);
    if ((st = rpc_call_write(call, msg, packed, err)) != KYSO_OK) goto out;
    offset += (uint64_t)n;
  }
out:
  if (fd >= 0) close(fd);
  free(msg);
  free(buf);
  return st;
}

/* A name the checkpoint listed: a plain file name, never a path. */
static int plain_name(const char *name) {
  return name[0] != '\0' && strchr(name, '/') == NULL && strcmp(name, ".") != 0 &&
         strcmp(name, "..") != 0;
}

void kysod__peer_get_checkpoint_file(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  char path[KYSO_PATH_MAX + 384];
  ckpt *k = NULL;
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__CheckpointFileRequest *req =
      kyso__v1__checkpoint_file_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a kyso.v1.CheckpointFileRequest");
    goto out;
  }
  if (!plain_name(req->name) || strlen(req->name) > 255) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "'%.64s' is not a checkpoint file name", req->name);
    goto out;
  }
  if ((k = acquire(d->checkpoints, req->id, &err)) == NULL) {
    st = err.code;
    goto out;
  }
  snprintf(path, sizeof(path), "%s/%s", k->dir, req->name);
  if ((st = send_file(call, path, req->offset, &err)) != KYSO_OK) goto out;
  rpc_call_finish(call, KYSO_OK, "", NULL, 0);
out:
  if (st != KYSO_OK) rpc_call_finish(call, st, err.msg, NULL, 0);
  if (k != NULL) release(d->checkpoints, k, 0);
  kyso__v1__checkpoint_file_request__free_unpacked(req, NULL);
}

void kysod__peer_close_checkpoint(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__CheckpointRef *req = kyso__v1__checkpoint_ref__unpack(NULL, len, data);
  ckpt *k = req != NULL ? acquire(d->checkpoints, req->id, &err) : NULL;
  if (req == NULL) {
    rpc_call_finish(call, KYSO_INVALID_ARGUMENT, "request is not a kyso.v1.CheckpointRef", NULL, 0);
  } else if (k == NULL) {
    rpc_call_finish(call, err.code, err.msg, NULL, 0);
  } else {
    release(d->checkpoints, k, 1);
    Kyso__V1__CheckpointClosed done = KYSO__V1__CHECKPOINT_CLOSED__INIT;
    kysod__reply(call, &done.base);
  }
  kyso__v1__checkpoint_ref__free_unpacked(req, NULL);
}
