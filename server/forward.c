/* kysod — a follower serving a call through the leader (kyso.v1.Peer,
 * svc_forward.c is the other side). A write is prepared here exactly as
 * the leader would (signature, time-stamp, principal, request id, the
 * document's bytes on a majority, the leader among them); only the
 * prepared command travels, and the leader proposes it as is. Before the
 * answer goes back this node waits until it applied as far as the leader
 * had, so the client reads its write here. A linearizable read asks the
 * leader for its applied index after a barrier, waits for it, and is then
 * served from this node. When the leader is lost on the way the outcome
 * is unknown: UNAVAILABLE, and a retry with the same request_id records
 * it once (the archive answers a repeated request from its first result). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/client.h"
#include "kysod.h"

#include "kyso/v1/peer.pb-c.h"

int kysod__forward_to(kysod *d, kysod_leader *l) {
  cluster_info in;
  memset(l, 0, sizeof(*l));
  if (d->cluster == NULL || !d->cfg.forward) return 0;
  cluster_get_info(d->cluster, &in);
  if (in.state == CLUSTER_LEADER || in.leader_id == 0 || in.leader_rpc[0] == '\0') return 0;
  l->id = in.leader_id;
  memcpy(l->rpc, in.leader_rpc, sizeof(l->rpc));
  return 1;
}

/* One unary call to the leader within what is left of the client's call:
 * OK with its answer unpacked into *out (free with
 * protobuf_c_message_free_unpacked); its refusal keeps its status and
 * message. */
static kyso_status call_leader(kysod *d, rpc_call *call, const kysod_leader *l,
                               const char *method, const ProtobufCMessage *m,
                               const ProtobufCMessageDescriptor *answer, ProtobufCMessage **out,
                               kyso_err *err) {
  uint8_t *req = NULL;
  size_t len = 0;
  kyso_err e = {0};
  kyso_reply r = {0}, *reply = &r;
  *out = NULL;
  int64_t left = rpc_call_remaining_ms(call);
  kyso_client *c = kysod__peer_client(d, l->id, l->rpc);
  kyso_status st = KYSO_OK;
  if (c == NULL) {
    st = kyso_fail(err, KYSO_UNAVAILABLE,
                   "node %u cannot open a connection to the leader, node %" PRIu64 " at %s (its "
                   "log says why): retry, with the same request_id for a write",
                   d->cfg.node_id, l->id, l->rpc);
    goto out;
  }
  if (left <= 0) {
    st = kyso_fail(err, KYSO_DEADLINE_EXCEEDED, "the call's deadline passed on node %u",
                   d->cfg.node_id);
    goto out;
  }
  if ((st = kysod__pack(m, &req, &len, err)) != KYSO_OK) goto out;
  if (kyso_client_call(c, method, req, len, left, reply, &e) != KYSO_OK) {
    st = kyso_fail(err, KYSO_UNAVAILABLE, "node %u cannot call the leader, node %" PRIu64
                   " at %s (%s): retry, with the same request_id for a write",
                   d->cfg.node_id, l->id, l->rpc, e.msg);
    goto out;
  }
  if (reply->grpc_status == 0) {
    if ((*out = protobuf_c_message_unpack(answer, NULL, reply->len, reply->data)) == NULL)
      st = kyso_fail(err, KYSO_INTERNAL,
                     "the leader, node %" PRIu64 ", answered %s with no %s: are the nodes "
                     "running the same kysod version?",
                     l->id, method, answer->name);
    goto out;
  }
  st = kyso_status_from_grpc(reply->grpc_status);
  /* Lost on the way, or not yet answered: the leader's messages say what to
   * do; gRPC's own (a dropped connection) do not. */
  int unknown = st == KYSO_UNAVAILABLE || st == KYSO_DEADLINE_EXCEEDED;
  kyso_fail(err, st, "node %u served this through the leader, node %" PRIu64 " at %s: %s%s",
            d->cfg.node_id, l->id, l->rpc, reply->message,
            unknown && strstr(reply->message, "retry") == NULL
                ? " (the outcome is unknown: retry, with the same request_id for a write)"
                : "");
out:
  kyso_reply_free(reply);
  free(req);
  return st;
}

kyso_status kysod__forward_propose(kysod *d, rpc_call *call, const kysod_leader *l,
                                   const uint8_t *cmd, size_t len, uint8_t **result,
                                   size_t *result_len, kyso_err *err) {
  Kyso__V1__ProposeRequest req = KYSO__V1__PROPOSE_REQUEST__INIT;
  Kyso__V1__ProposeReply *r = NULL;
  *result = NULL;
  *result_len = 0;
  req.command.data = (uint8_t *)cmd;
  req.command.len = len;
  kyso_status st = call_leader(d, call, l, "/kyso.v1.Peer/Propose", &req.base,
                               &kyso__v1__propose_reply__descriptor, (ProtobufCMessage **)&r, err);
  if (st != KYSO_OK) goto out;
  /* Recorded: answered once this node applied it too (read-your-write here). */
  if ((st = cluster_applied_wait(d->cluster, r->applied_index, rpc_call_remaining_ms(call),
                                 err)) != KYSO_OK) {
    kyso_err_wrap(err, "recorded by the leader; a retry with the same request_id answers it");
    goto out;
  }
  if ((*result = malloc(r->result.len ? r->result.len : 1)) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for a command's result");
    goto out;
  }
  memcpy(*result, r->result.data, r->result.len);
  *result_len = r->result.len;
out:
  kyso__v1__propose_reply__free_unpacked(r, NULL);
  return st;
}

kyso_status kysod__forward_read_index(kysod *d, rpc_call *call, const kysod_leader *l,
                                      kyso_err *err) {
  Kyso__V1__ReadIndexRequest req = KYSO__V1__READ_INDEX_REQUEST__INIT;
  Kyso__V1__ReadIndexReply *r = NULL;
  kyso_status st = call_leader(d, call, l, "/kyso.v1.Peer/ReadIndex", &req.base,
                               &kyso__v1__read_index_reply__descriptor, (ProtobufCMessage **)&r,
                               err);
  if (st == KYSO_OK)
    st = cluster_applied_wait(d->cluster, r->applied_index, rpc_call_remaining_ms(call), err);
  kyso__v1__read_index_reply__free_unpacked(r, NULL);
  return st;
}
