/* kysod — kyso.v1.Peer/Propose and ReadIndex: on the leader, what a
 * follower asks on behalf of a client it serves (forward.c is the other
 * side). The command arrives prepared — principal, time, request id,
 * signature stamped by the follower, its document's bytes already here and
 * on a majority — and is proposed exactly as it came. It is checked first
 * as every command this node prepares (archive_prepare): a committed entry
 * that some node cannot apply stops that node. Nothing here forwards
 * again: a node that is not the leader answers UNAVAILABLE naming it. */
#include <stdlib.h>

#include "kysod.h"

#include "kyso/v1/peer.pb-c.h"

void kysod__peer_propose(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  uint8_t *result = NULL;
  size_t len, result_len = 0;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__ProposeRequest *req = kyso__v1__propose_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.ProposeRequest");
    goto out;
  }
  if (d->cluster == NULL) {
    st = kyso_fail(&err, KYSO_FAILED_PRECONDITION,
                   "node %u is a single node, not in a cluster: nothing is forwarded to it",
                   d->cfg.node_id);
    goto out;
  }
  st = archive_prepare(d->archive, req->command.data, req->command.len, NULL, 0, &err);
  if (st == KYSO_OK)
    st = cluster_submit_wait(d->cluster, req->command.data, req->command.len,
                             rpc_call_remaining_ms(call), &result, &result_len, &err);
  if (st != KYSO_OK) goto out;
  cluster_nudge(d->cluster); /* the follower waits until it applied this too */
  Kyso__V1__ProposeReply r = KYSO__V1__PROPOSE_REPLY__INIT;
  r.result.data = result;
  r.result.len = result_len;
  r.applied_index = cluster_applied_index(d->cluster); /* covers the command */
  kysod__reply(call, &r.base);
out:
  if (st != KYSO_OK) rpc_call_finish(call, st, err.msg, NULL, 0);
  free(result);
  kyso__v1__propose_request__free_unpacked(req, NULL);
}

void kysod__peer_read_index(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  if (d->cluster == NULL)
    st = kyso_fail(&err, KYSO_FAILED_PRECONDITION, "node %u is a single node, not in a cluster",
                   d->cfg.node_id);
  else
    st = cluster_barrier_wait(d->cluster, rpc_call_remaining_ms(call), &err);
  if (st != KYSO_OK) {
    rpc_call_finish(call, st, err.msg, NULL, 0);
    return;
  }
  Kyso__V1__ReadIndexReply r = KYSO__V1__READ_INDEX_REPLY__INIT;
  r.applied_index = cluster_applied_index(d->cluster); /* every command before the barrier */
  kysod__reply(call, &r.base);
}
