/* kysod — document bytes between the nodes of a cluster (kyso.v1.Peer).
 *
 * Before the accepting node proposes a command that records a document,
 * the document's bytes are on a majority of the members: here, and on as
 * many peers as a majority needs (that many at once, on threads, and another
 * one in place of any that fails; one that has the
 * blob already counts). So once the command commits, a majority holds both
 * the record and the bytes, and losing any minority of nodes loses
 * neither.
 *
 * A node that applied a record without its bytes (every follower, for
 * documents accepted elsewhere) queues the document's id for the fetcher
 * thread, which asks the peers for it by hash; what arrives is stored only
 * if it hashes to that id. A fetch that fails everywhere is retried with
 * back-off. Peers are called with this node's own TLS certificate (its
 * [tls] cert, which must allow clientAuth), and must know it as a caller
 * with role "peer". */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyso/client.h"
#include "kyso/limits.h"
#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/v1/peer.pb-c.h"

#define FETCH_QUEUE_MAX 65536  /* ids waiting for the fetcher (32 bytes each) */
#define FETCH_ATTEMPTS 120     /* then the id is given up on, loudly (scrub finds it) */
#define FETCH_BACKOFF_MS 500
#define PEER_CALL_MS 30000     /* one peer's HasBlob/GetBlob/PutBlob, at most */
#define PEER_SLOTS (4 * CLUSTER_MAX_MEMBERS) /* members over kysod's life, address changes included */
#define AVOID_MS 5000          /* a peer whose call failed is asked last for this long */

typedef struct want {
  uint8_t sha[32];
  unsigned attempts;
  int64_t not_before_ms;
  struct want *next;
} want;

struct kysod_peers {
  kysod *d;
  /* Clients of the other members, by id, opened on first use: the members
   * come from the replicated Raft configuration, so nodes added later are
   * reached too. Under cmu. */
  pthread_mutex_t cmu;
  size_t n;
  struct {
    uint64_t id;
    char rpc[CLUSTER_MAX_ADDRESS + 1];
    kyso_client *client;
    _Atomic int64_t failed_ms; /* when a call to it last failed (0: never) */
  } peer[PEER_SLOTS];

  pthread_mutex_t mu;
  pthread_cond_t wake;
  want *head, *tail;
  size_t queued;
  int stopping;
  pthread_t fetcher;
  int fetcher_started;
};

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The other members this node can call now (indexes into p->peer), and
 * how many of them must hold a blob for a majority of the voters. */
typedef struct peer_set {
  size_t idx[CLUSTER_MAX_MEMBERS]; /* the likely healthy first */
  int healthy[CLUSTER_MAX_MEMBERS];
  size_t n;
  size_t majority_peers;
} peer_set;

kyso_status kysod__peer_client_open(const kyso_config *cfg, const char *rpc, kyso_client **out,
                                    kyso_err *err) {
  kyso_client_opts o = {.target = rpc,
                        .ca_file = cfg->peer_ca[0] ? cfg->peer_ca : cfg->client_ca,
                        .cert_file = cfg->tls_cert,
                        .key_file = cfg->tls_key,
                        .server_name = cfg->peer_server_name[0] ? cfg->peer_server_name : NULL};
  return kyso_client_open(&o, out, err);
}

/* A slot is never reused or closed while kysod runs (a call on another
 * thread may be using its client): a member whose address changed gets a
 * new slot. Under cmu. */
static kyso_client *client_for(kysod_peers *p, uint64_t id, const char *rpc, size_t *slot) {
  const kyso_config *cfg = &p->d->cfg;
  for (size_t i = 0; i < p->n; i++)
    if (p->peer[i].id == id && strcmp(p->peer[i].rpc, rpc) == 0) {
      *slot = i;
      return p->peer[i].client;
    }
  if (p->n == PEER_SLOTS) return NULL;
  kyso_client *c = NULL;
  kyso_err err = {0};
  if (kysod__peer_client_open(cfg, rpc, &c, &err) != KYSO_OK) {
    kyso_log(KYSO_LOG_WARN, "peers: cannot prepare a connection to node %" PRIu64 " (%s): %s", id,
             rpc, err.msg);
    return NULL;
  }
  size_t i = p->n++;
  p->peer[i].id = id;
  snprintf(p->peer[i].rpc, sizeof(p->peer[i].rpc), "%s", rpc);
  p->peer[i].client = c;
  *slot = i;
  return c;
}

static void peer_set_now(kysod_peers *p, peer_set *ps) {
  cluster_info in;
  size_t voters = 0;
  memset(ps, 0, sizeof(*ps));
  if (p->d->cluster == NULL) return;
  cluster_get_info(p->d->cluster, &in);
  pthread_mutex_lock(&p->cmu);
  for (size_t i = 0; i < in.member_count; i++) {
    voters += in.members[i].voter;
    size_t slot = 0;
    if (in.members[i].id == in.id || in.members[i].rpc_address[0] == '\0') continue;
    if (client_for(p, in.members[i].id, in.members[i].rpc_address, &slot) == NULL) continue;
    int64_t failed = atomic_load(&p->peer[slot].failed_ms);
    ps->healthy[ps->n] = in.members[i].reachable && (failed == 0 || now_ms() - failed > AVOID_MS);
    ps->idx[ps->n++] = slot;
  }
  pthread_mutex_unlock(&p->cmu);
  /* Healthy peers first (stable order otherwise). */
  for (size_t i = 1; i < ps->n; i++)
    for (size_t j = i; j > 0 && ps->healthy[j] && !ps->healthy[j - 1]; j--) {
      size_t t = ps->idx[j];
      ps->idx[j] = ps->idx[j - 1];
      ps->idx[j - 1] = t;
      ps->healthy[j] = 0;
      ps->healthy[j - 1] = 1;
    }
  ps->majority_peers = voters / 2; /* plus this node: a majority of the voters */
}

kyso_client *kysod__peer_client(kysod *d, uint64_t id, const char *rpc) {
  kysod_peers *p = d->peers;
  size_t slot = 0;
  if (p == NULL) return NULL;
  pthread_mutex_lock(&p->cmu);
  kyso_client *c = client_for(p, id, rpc, &slot);
  pthread_mutex_unlock(&p->cmu);
  return c;
}

kyso_status kysod__pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len, kyso_err *err) {
  *len = protobuf_c_message_get_packed_size(m);
  if ((*buf = malloc(*len ? *len : 1)) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  protobuf_c_message_pack(m, *buf);
  return KYSO_OK;
}

static kyso_status peer_has(kysod_peers *p, size_t i, const char *hex, int64_t timeout_ms,
                            int *present, kyso_err *err) {
  Kyso__V1__BlobRef ref = KYSO__V1__BLOB_REF__INIT;
  kyso_reply r = {0};
  uint8_t *req = NULL;
  size_t len = 0;
  *present = 0;
  ref.sha256 = (char *)hex;
  kyso_status st = kysod__pack(&ref.base, &req, &len, err);
  if (st == KYSO_OK)
    st = kyso_client_call(p->peer[i].client, "/kyso.v1.Peer/HasBlob", req, len, timeout_ms, &r,
                          err);
  if (st == KYSO_OK && r.grpc_status != 0)
    st = kyso_fail(err, KYSO_UNAVAILABLE, "node %" PRIu64 " (%s) HasBlob: status %d: %s", p->peer[i].id,
                   p->peer[i].rpc, r.grpc_status, r.message);
  if (st == KYSO_OK) {
    Kyso__V1__BlobState *s = kyso__v1__blob_state__unpack(NULL, r.len, r.data);
    if (s == NULL)
      st = kyso_fail(err, KYSO_INTERNAL, "node %" PRIu64 " answered HasBlob with no BlobState",
                     p->peer[i].id);
    else
      *present = s->present;
    kyso__v1__blob_state__free_unpacked(s, NULL);
  }
  kyso_reply_free(&r);
  free(req);
  return st;
}

static kyso_status send_msg(kyso_stream *s, const Kyso__V1__BlobChunk *m, kyso_err *err) {
  uint8_t *buf = NULL;
  size_t len = 0;
  kyso_status st = kysod__pack(&m->base, &buf, &len, err);
  if (st == KYSO_OK) st = kyso_stream_send(s, buf, len, err);
  free(buf);
  return st;
}

/* Streams the local blob to peer i. */
static kyso_status peer_put(kysod_peers *p, size_t i, const uint8_t sha[32], const char *hex,
                            int64_t timeout_ms, kyso_err *err) {
  archive_reader *r = NULL;
  kyso_stream *s = NULL;
  kyso_reply reply = {0};
  uint64_t size = 0;
  kyso_status st = archive_blob_size(p->d->archive, sha, &size, err);
  if (st == KYSO_OK) st = archive_reader_open(p->d->archive, sha, &r, err);
  if (st == KYSO_OK)
    st = kyso_stream_open(p->peer[i].client, "/kyso.v1.Peer/PutBlob", timeout_ms, &s, err);
  if (st != KYSO_OK) goto out;
  Kyso__V1__BlobChunk head = KYSO__V1__BLOB_CHUNK__INIT;
  head.sha256 = (char *)hex;
  head.size = size;
  int sent = send_msg(s, &head, err) == KYSO_OK;
  while (sent) {
    const uint8_t *part;
    size_t n;
    if ((st = archive_reader_next(r, &part, &n, err)) != KYSO_OK) goto out;
    if (n == 0) break;
    for (size_t off = 0; off < n && sent; off += KYSO_CHUNK_SIZE) {
      Kyso__V1__BlobChunk m = KYSO__V1__BLOB_CHUNK__INIT;
      m.chunk.data = (uint8_t *)part + off;
      m.chunk.len = n - off < KYSO_CHUNK_SIZE ? n - off : KYSO_CHUNK_SIZE;
      sent = send_msg(s, &m, err) == KYSO_OK; /* refused: the peer ended the call */
    }
  }
  kyso_err ignored = {0};
  if (sent && kyso_stream_close_send(s, &ignored) == KYSO_OK) {
    uint8_t *resp = NULL;
    size_t rl = 0;
    int end = 0;
    if (kyso_stream_recv(s, &resp, &rl, &end, &ignored) == KYSO_OK) free(resp);
  }
  st = kyso_stream_finish(s, &reply, err);
  s = NULL;
  if (st == KYSO_OK && reply.grpc_status != 0)
    st = kyso_fail(err, KYSO_UNAVAILABLE, "node %" PRIu64 " (%s) PutBlob: status %d: %s", p->peer[i].id,
                   p->peer[i].rpc, reply.grpc_status, reply.message);
out:
  kyso_stream_cancel(s);
  kyso_reply_free(&reply);
  archive_reader_close(r);
  return st;
}

/* One peer's copy, on a thread of its own: HasBlob (a peer that has the
 * bytes counts), else PutBlob. */
typedef struct copy_job {
  kysod_peers *p;
  size_t slot;
  const uint8_t *sha;
  const char *hex;
  int64_t end_ms;
  kyso_status st;
  kyso_err err;
  pthread_t thread;
  int started;
} copy_job;

static void *copy_run(void *arg) {
  copy_job *j = arg;
  int present = 0;
  int64_t left = j->end_ms - now_ms();
  if (left <= 0) {
    j->st = kyso_fail(&j->err, KYSO_DEADLINE_EXCEEDED, "the deadline passed");
    return NULL;
  }
  /* A peer that does not answer at all is given up on within 2 s, so the
   * next round can ask another one before the deadline. */
  j->st = peer_has(j->p, j->slot, j->hex, left < 2000 ? left : 2000, &present, &j->err);
  if (j->st == KYSO_OK && !present)
    j->st = peer_put(j->p, j->slot, j->sha, j->hex, j->end_ms - now_ms(), &j->err);
  return NULL;
}

/* Moves member id to the front of ps; 0 if it is not there. */
static int put_first(kysod_peers *p, peer_set *ps, uint64_t id) {
  for (size_t k = 0; k < ps->n; k++) {
    if (p->peer[ps->idx[k]].id != id) continue;
    size_t i = ps->idx[k];
    memmove(&ps->idx[1], &ps->idx[0], k * sizeof(ps->idx[0]));
    ps->idx[0] = i;
    return 1;
  }
  return 0;
}

kyso_status kysod__peers_replicate(kysod *d, const uint8_t sha[32], uint64_t first,
                                   int64_t timeout_ms, kyso_err *err) {
  kysod_peers *p = d->peers;
  char hex[65], why[KYSO_ERR_MSG_MAX] = "";
  size_t holding = 0, next = 0;
  peer_set ps;
  copy_job jobs[CLUSTER_MAX_MEMBERS];
  if (p == NULL) return KYSO_OK;
  peer_set_now(p, &ps);
  kyso_hex(sha, 32, hex);
  /* A follower's forwarded command is checked by the leader against the
   * bytes, so the leader must hold them, whatever the majority. */
  if (first != 0 && !put_first(p, &ps, first))
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "node %" PRIu64 " (the leader) is not a member this node can call: "
                     "nothing was recorded; retry with the same request_id",
                     first);
  if (ps.majority_peers == 0 && first == 0) return KYSO_OK;
  int64_t end = now_ms() + (timeout_ms < PEER_CALL_MS ? timeout_ms : PEER_CALL_MS);
  /* Rounds: as many copies at once as a majority still lacks, to the
   * likely healthy peers first (the leader first, when it must hold them);
   * a failed one is replaced in the next round by a peer not asked yet. */
  while ((holding < ps.majority_peers || first != 0) && next < ps.n && now_ms() < end) {
    size_t lacking = ps.majority_peers > holding ? ps.majority_peers - holding : 1, n = 0;
    for (; n < lacking && next < ps.n; n++, next++) {
      copy_job *j = &jobs[n];
      *j = (copy_job){.p = p, .slot = ps.idx[next], .sha = sha, .hex = hex, .end_ms = end};
      /* The first copy runs here: one thread fewer in the usual 3-node case. */
      j->started = n > 0 && pthread_create(&j->thread, NULL, copy_run, j) == 0;
      if (n > 0 && !j->started) copy_run(j);
    }
    copy_run(&jobs[0]);
    for (size_t k = 0; k < n; k++) {
      copy_job *j = &jobs[k];
      if (j->started) pthread_join(j->thread, NULL);
      if (j->st == KYSO_OK) {
        holding++;
        atomic_store(&p->peer[j->slot].failed_ms, 0);
      } else {
        atomic_store(&p->peer[j->slot].failed_ms, now_ms());
        snprintf(why, sizeof(why), "%s", j->err.msg);
      }
    }
    if (first != 0) {
      if (jobs[0].st != KYSO_OK) break; /* the leader lacks them: no use going on */
      first = 0; /* the leader holds them: now any majority */
    }
  }
  if (first != 0)
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "the leader, node %" PRIu64 ", did not take document %s (%s): nothing was "
                     "recorded; retry with the same request_id",
                     first, hex, why[0] ? why : "the deadline passed");
  if (holding >= ps.majority_peers) return KYSO_OK;
  if (why[0] == '\0' && now_ms() >= end) snprintf(why, sizeof(why), "the deadline passed");
  return kyso_fail(err, KYSO_UNAVAILABLE,
                   "document %s is stored on %zu of the %zu nodes a majority needs (%s): nothing "
                   "was recorded; retry with the same request_id",
                   hex, holding + 1, ps.majority_peers + 1, why[0] ? why : "no peer reachable");
}

/* Fetches sha from peer i into the local archive. */
static kyso_status peer_get(kysod_peers *p, size_t i, const uint8_t sha[32], const char *hex,
                            kyso_err *err) {
  Kyso__V1__BlobRef ref = KYSO__V1__BLOB_REF__INIT;
  kyso_stream *s = NULL;
  archive_upload *up = NULL;
  kyso_reply reply = {0};
  uint8_t *req = NULL, got[32];
  size_t len = 0;
  uint64_t size = 0, want_size = 0;
  ref.sha256 = (char *)hex;
  kyso_status st = kysod__pack(&ref.base, &req, &len, err);
  if (st == KYSO_OK)
    st = kyso_stream_open(p->peer[i].client, "/kyso.v1.Peer/GetBlob", PEER_CALL_MS, &s, err);
  if (st == KYSO_OK) st = kyso_stream_send(s, req, len, err);
  if (st == KYSO_OK) st = kyso_stream_close_send(s, err);
  if (st == KYSO_OK) st = archive_upload_begin(p->d->archive, &up, err);
  for (size_t n = 0; st == KYSO_OK; n++) {
    uint8_t *data = NULL;
    size_t dl = 0;
    int end = 0;
    if ((st = kyso_stream_recv(s, &data, &dl, &end, err)) != KYSO_OK || end) break;
    Kyso__V1__BlobChunk *m = kyso__v1__blob_chunk__unpack(NULL, dl, data);
    free(data);
    if (m == NULL || m->chunk.len > KYSO_CHUNK_SIZE) {
      st = kyso_fail(err, KYSO_INTERNAL, "node %" PRIu64 " sent a bad BlobChunk", p->peer[i].id);
    } else {
      if (n == 0) want_size = m->size;
      st = archive_upload_write(up, m->chunk.data, m->chunk.len, err);
    }
    kyso__v1__blob_chunk__free_unpacked(m, NULL);
  }
  kyso_status fin = kyso_stream_finish(s, &reply, err);
  s = NULL;
  if (st == KYSO_OK) st = fin;
  if (st == KYSO_OK && reply.grpc_status != 0)
    st = kyso_fail(err, reply.grpc_status == 5 ? KYSO_NOT_FOUND : KYSO_UNAVAILABLE,
                   "node %" PRIu64 " (%s) GetBlob: status %d: %s", p->peer[i].id, p->peer[i].rpc,
                   reply.grpc_status, reply.message);
  if (st == KYSO_OK) {
    /* Stored only if the bytes are the blob they were asked for. */
    st = archive_upload_finish(up, sha, got, &size, err);
    up = NULL;
    if (st == KYSO_OK && size != want_size)
      kyso_log(KYSO_LOG_WARN, "peers: node %" PRIu64 " announced %llu bytes for %s and sent %llu",
               p->peer[i].id, (unsigned long long)want_size, hex, (unsigned long long)size);
  }
  archive_upload_abort(up);
  kyso_stream_cancel(s);
  kyso_reply_free(&reply);
  free(req);
  return st;
}

/* One attempt at fetching w: 1 done (stored, or here already), 0 retry later. */
static int fetch_one(kysod_peers *p, want *w) {
  char hex[65], why[KYSO_ERR_MSG_MAX] = "no peer";
  uint64_t size = 0;
  kyso_err err = {0};
  if (archive_blob_size(p->d->archive, w->sha, &size, &err) == KYSO_OK) return 1;
  kyso_hex(w->sha, 32, hex);
  peer_set ps;
  peer_set_now(p, &ps);
  for (size_t k = 0; k < ps.n; k++) {
    size_t i = ps.idx[(w->attempts + k) % ps.n];
    kyso_err e = {0};
    if (peer_get(p, i, w->sha, hex, &e) == KYSO_OK) {
      kyso_log(KYSO_LOG_DEBUG, "peers: fetched %s from node %" PRIu64, hex, p->peer[i].id);
      return 1;
    }
    snprintf(why, sizeof(why), "%s", e.msg);
  }
  if (++w->attempts >= FETCH_ATTEMPTS) {
    kyso_log(KYSO_LOG_ERROR,
             "peers: giving up fetching document %s after %u attempts (%s); this node holds "
             "its record without its bytes (kyso archive scrub reports it)",
             hex, w->attempts, why);
    return 1;
  }
  if (w->attempts == 1 || w->attempts % 10 == 0)
    kyso_log(KYSO_LOG_WARN, "peers: cannot fetch document %s yet (%s): retrying", hex, why);
  w->not_before_ms = now_ms() + FETCH_BACKOFF_MS;
  return 0;
}

/* Under p->mu. */
static void push_locked(kysod_peers *p, want *w) {
  w->next = NULL;
  if (p->tail != NULL)
    p->tail->next = w;
  else
    p->head = w;
  p->tail = w;
  p->queued++;
}

static int queue_missing(const uint8_t sha[32], void *ctx) {
  kysod_peers *p = ctx;
  kysod__peers_want(p->d, sha);
  pthread_mutex_lock(&p->mu);
  int stop = p->stopping || p->queued >= FETCH_QUEUE_MAX;
  pthread_mutex_unlock(&p->mu);
  return stop;
}

static void *fetcher_main(void *arg) {
  kysod_peers *p = arg;
  /* Records applied before a restart whose bytes had not arrived yet. */
  kyso_err err = {0};
  uint64_t missing = 0;
  if (archive_missing_blobs(p->d->archive, queue_missing, p, &missing, &err) != KYSO_OK)
    kyso_log(KYSO_LOG_WARN, "peers: cannot list documents without their bytes: %s", err.msg);
  else if (missing > 0)
    kyso_log(KYSO_LOG_INFO, "peers: %llu recorded documents lack their bytes here: fetching them",
             (unsigned long long)missing);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (p->head == NULL && !p->stopping) pthread_cond_wait(&p->wake, &p->mu);
    if (p->stopping) break;
    want *w = p->head;
    if ((p->head = w->next) == NULL) p->tail = NULL;
    p->queued--;
    pthread_mutex_unlock(&p->mu);
    int64_t wait = w->not_before_ms - now_ms();
    if (wait > 0) {
      struct timespec t = {wait / 1000, (long)(wait % 1000) * 1000000L};
      nanosleep(&t, NULL); /* back-off before a retry, not synchronisation */
    }
    int done = fetch_one(p, w);
    pthread_mutex_lock(&p->mu);
    if (done || p->stopping)
      free(w);
    else
      push_locked(p, w);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

void kysod__peers_want(kysod *d, const uint8_t sha[32]) {
  kysod_peers *p = d->peers;
  if (p == NULL) return;
  want *w = calloc(1, sizeof(*w));
  if (w == NULL) return;
  memcpy(w->sha, sha, 32);
  pthread_mutex_lock(&p->mu);
  if (p->stopping || p->queued >= FETCH_QUEUE_MAX) {
    pthread_mutex_unlock(&p->mu);
    free(w);
    kyso_log(KYSO_LOG_WARN, "peers: fetch queue full; a document's bytes wait for the next scrub");
    return;
  }
  push_locked(p, w);
  pthread_cond_signal(&p->wake);
  pthread_mutex_unlock(&p->mu);
}

kyso_status kysod__peers_open(kysod *d, kyso_err *err) {
  if (d->cfg.member_count == 0) return KYSO_OK;
  kysod_peers *p = calloc(1, sizeof(*p));
  if (p == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  p->d = d;
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->cmu, NULL);
  pthread_cond_init(&p->wake, NULL);
  d->peers = p;
  if (pthread_create(&p->fetcher, NULL, fetcher_main, p) != 0)
    return kyso_fail(err, KYSO_INTERNAL, "cannot start the blob fetcher thread");
  p->fetcher_started = 1;
  return KYSO_OK;
}

void kysod__peers_stop(kysod *d) {
  kysod_peers *p = d->peers;
  if (p == NULL) return;
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_signal(&p->wake);
  pthread_mutex_unlock(&p->mu);
  if (p->fetcher_started) pthread_join(p->fetcher, NULL);
  p->fetcher_started = 0;
}

void kysod__peers_close(kysod *d) {
  kysod_peers *p = d->peers;
  if (p == NULL) return;
  kysod__peers_stop(d);
  for (want *w = p->head, *next; w != NULL; w = next) {
    next = w->next;
    free(w);
  }
  for (size_t i = 0; i < p->n; i++) kyso_client_close(p->peer[i].client);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->cmu);
  pthread_cond_destroy(&p->wake);
  free(p);
  d->peers = NULL;
}
