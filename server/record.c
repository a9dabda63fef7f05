/* kysod — where state changes go: on a single node, the archive's
 * group-commit writer; in a cluster, the Raft log (the command is prepared
 * here, its inline document stored here, then proposed — by this node when
 * it leads, else through the leader: forward.c). Reads in a cluster are
 * linearizable (a Raft barrier on the leader, the leader's read index on a
 * follower) unless [cluster] stale_reads is set. */
#include <stdlib.h>
#include <string.h>

#include "kysod.h"

#include "kyso/store/v1/command.pb-c.h"

kyso_status kysod__require_writer(kysod *d, kyso_err *err) {
  if (d->cluster == NULL) return KYSO_OK;
  cluster_info in;
  cluster_get_info(d->cluster, &in);
  if (in.state == CLUSTER_LEADER) return KYSO_OK;
  if (in.leader_id != 0 && in.leader_rpc[0] != '\0' && d->cfg.forward) return KYSO_OK;
  if (in.leader_id == 0)
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "node %u is not the leader and no leader is known (an election is under "
                     "way, or a majority is unreachable): retry shortly",
                     d->cfg.node_id);
  return kyso_fail(err, KYSO_UNAVAILABLE,
                   "node %u is not the leader; the leader is node %llu at %s: send writes there",
                   d->cfg.node_id, (unsigned long long)in.leader_id,
                   in.leader_rpc[0] ? in.leader_rpc : in.leader_raft);
}

/* The document a (prepared, so well-formed) command names; *has 0 for a
 * key command, which names none. */
static kyso_status document_of(const uint8_t *cmd, size_t len, uint8_t sha[32], int *has,
                               kyso_err *err) {
  Kyso__Store__V1__Command *c = kyso__store__v1__command__unpack(NULL, len, cmd);
  const Kyso__Store__V1__RecordDocument *doc = NULL;
  *has = c == NULL || (c->op_case != KYSO__STORE__V1__COMMAND__OP_RECORD_KEY &&
         c->op_case != KYSO__STORE__V1__COMMAND__OP_RECORD_CERTIFICATE);
  if (c != NULL && c->op_case == KYSO__STORE__V1__COMMAND__OP_RECORD_DOCUMENT)
    doc = c->record_document;
  else if (c != NULL && c->op_case == KYSO__STORE__V1__COMMAND__OP_RECORD_SIGNING &&
           c->record_signing != NULL)
    doc = c->record_signing->document;
  kyso_status st = KYSO_OK;
  if (*has && (doc == NULL || doc->sha256.len != 32))
    st = kyso_fail(err, KYSO_INTERNAL, "a prepared command names no document");
  else if (*has)
    memcpy(sha, doc->sha256.data, 32);
  kyso__store__v1__command__free_unpacked(c, NULL);
  return st;
}

/* What every write does before it is proposed, in a cluster: the checks
 * and the inline document here (archive_prepare), then the bytes on a
 * majority. *forward says whether the leader l proposes it for us. */
static kyso_status before_propose(kysod *d, rpc_call *call, const uint8_t *cmd, size_t len,
                                  const uint8_t *blob, size_t blob_len, kysod_leader *l,
                                  int *forward, kyso_err *err) {
  kyso_status st = archive_prepare(d->archive, cmd, len, blob, blob_len, err);
  if (st != KYSO_OK) return st;
  /* The bytes are on a majority before the record is proposed. */
  uint8_t sha[32];
  int has_doc = 0;
  if ((st = document_of(cmd, len, sha, &has_doc, err)) != KYSO_OK) return st;
  *forward = kysod__forward_to(d, l);
  if (has_doc)
    st = kysod__peers_replicate(d, sha, *forward ? l->id : 0, rpc_call_remaining_ms(call), err);
  return st;
}

kyso_status kysod__record(kysod *d, rpc_call *call, const uint8_t *cmd, size_t len,
                          const uint8_t *blob, size_t blob_len, uint8_t **result,
                          size_t *result_len, kyso_err *err) {
  *result = NULL;
  *result_len = 0;
  if (d->cluster == NULL)
    return archive_submit(d->archive, cmd, len, blob, blob_len, result, result_len, err);
  kysod_leader l;
  int forward = 0;
  kyso_status st = before_propose(d, call, cmd, len, blob, blob_len, &l, &forward, err);
  if (st != KYSO_OK) return st;
  if (forward) return kysod__forward_propose(d, call, &l, cmd, len, result, result_len, err);
  return cluster_submit_wait(d->cluster, cmd, len, rpc_call_remaining_ms(call), result,
                             result_len, err);
}

/* A proposal of kysod__record_async between the loop thread and the
 * completion thread. */
typedef struct proposal {
  kysod *d;
  kysod_recorded_fn fn;
  void *ctx;
} proposal;

static void on_committed(void *ctx, kyso_status st, const char *msg, const uint8_t *result,
                         size_t result_len) {
  proposal p = *(proposal *)ctx;
  free(ctx);
  atomic_fetch_sub(&p.d->writes_awaiting_commit, 1);
  kysod__completions_post(p.d, p.fn, p.ctx, st, msg, result, result_len);
}

void kysod__record_async(kysod *d, rpc_call *call, const uint8_t *cmd, size_t len,
                         const uint8_t *blob, size_t blob_len, kysod_recorded_fn fn, void *ctx) {
  kyso_err err = {0};
  uint8_t *result = NULL;
  size_t result_len = 0;
  kyso_status st;
  proposal *p = NULL;
  kysod_leader l;
  int forward = 0;
  if (d->cluster == NULL) {
    /* One node: the group-commit writer answers within a sync. */
    st = archive_submit(d->archive, cmd, len, blob, blob_len, &result, &result_len, &err);
    goto answer;
  }
  if ((st = before_propose(d, call, cmd, len, blob, blob_len, &l, &forward, &err)) != KYSO_OK)
    goto answer;
  if (forward) {
    /* The leader's answer comes over the network: wait for it here. */
    st = kysod__forward_propose(d, call, &l, cmd, len, &result, &result_len, &err);
    goto answer;
  }
  if ((p = malloc(sizeof(*p))) == NULL) {
    st = kyso_fail(&err, KYSO_RESOURCE_EXHAUSTED, "out of memory proposing a write");
    goto answer;
  }
  *p = (proposal){.d = d, .fn = fn, .ctx = ctx};
  atomic_fetch_add(&d->writes_awaiting_commit, 1);
  cluster_submit(d->cluster, cmd, len, on_committed, p);
  return;
answer:
  fn(ctx, st, &err, result, result_len);
  free(result);
}

kyso_status kysod__read_barrier(kysod *d, rpc_call *call, kyso_err *err) {
  if (d->cluster == NULL || d->cfg.stale_reads) return KYSO_OK;
  kysod_leader l;
  if (kysod__forward_to(d, &l)) return kysod__forward_read_index(d, call, &l, err);
  return cluster_barrier_wait(d->cluster, rpc_call_remaining_ms(call), err);
}

/* The cluster's hook after each applied entry (loop thread): every
 * document recorded there whose bytes may be missing here goes to the
 * fetcher, which checks and fetches off this thread; every key or
 * certificate recorded goes to the key sync. */
void kysod__on_applied(void *ctx, const archive_outcome *o, size_t n) {
  kysod *d = ctx;
  for (size_t i = 0; i < n; i++) {
    if (o[i].st != KYSO_OK) continue;
    Kyso__Store__V1__CommandResult *r =
        kyso__store__v1__command_result__unpack(NULL, o[i].result_len, o[i].result);
    if (r != NULL && r->document_sha256.len == 32 && !r->replayed)
      kysod__peers_want(d, r->document_sha256.data);
    if (r != NULL && r->key_label[0] != '\0' && !r->replayed) kysod__keys_want(d, r->key_label);
    kyso__store__v1__command_result__free_unpacked(r, NULL);
  }
}
