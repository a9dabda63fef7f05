/* kysod — kyso.v1.Cluster/Status: the Raft group as this node sees it. */
#include <stdlib.h>

#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/v1/cluster.pb-c.h"

/* The RPC address this node's configuration gives a member, or "". */
static char *rpc_of(const kysod *d, uint64_t id) {
  for (size_t i = 0; i < d->cfg.member_count; i++)
    if (d->cfg.members[i].id == id) return (char *)d->cfg.members[i].rpc;
  return "";
}

static void reply_status(kysod *d, rpc_call *call) {
  Kyso__V1__ClusterStatus resp = KYSO__V1__CLUSTER_STATUS__INIT;
  Kyso__V1__ClusterMember members[CLUSTER_MAX_MEMBERS], *ptrs[CLUSTER_MAX_MEMBERS];
  cluster_info in;
  resp.id = d->cfg.node_id;
  if (d->cluster == NULL) {
    resp.state = "leader"; /* a single node takes every write itself */
    resp.leader_id = d->cfg.node_id;
    resp.leader_rpc_address = d->cfg.listen;
    kysod__reply(call, &resp.base);
    return;
  }
  cluster_get_info(d->cluster, &in);
  resp.replicated = 1;
  resp.state = (char *)cluster_state_name(in.state);
  resp.term = in.term;
  resp.leader_id = in.leader_id;
  resp.leader_rpc_address = in.leader_rpc;
  resp.last_index = in.last_index;
  resp.commit_index = in.commit_index;
  resp.applied_index = in.applied_index;
  resp.snapshots_taken = in.snapshots_taken;
  resp.snapshots_installed = in.snapshots_installed;
  resp.checkpoints_installed = d->checkpoints_installed;
  resp.keys_pending = kysod__keys_pending(d);
  resp.writes_awaiting_commit = atomic_load(&d->writes_awaiting_commit);
  for (size_t i = 0; i < in.member_count; i++) {
    kyso__v1__cluster_member__init(&members[i]);
    members[i].id = in.members[i].id;
    members[i].raft_address = in.members[i].raft_address;
    members[i].rpc_address =
        in.members[i].rpc_address[0] ? in.members[i].rpc_address : rpc_of(d, in.members[i].id);
    members[i].voter = in.members[i].voter;
    members[i].reachable = in.members[i].reachable;
    ptrs[i] = &members[i];
  }
  resp.n_members = in.member_count;
  resp.members = ptrs;
  kysod__reply(call, &resp.base);
}

void kysod__cluster_status(rpc_call *call, void *app) {
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__ClusterStatusRequest *req = kyso__v1__cluster_status_request__unpack(NULL, len, data);
  if (req == NULL) {
    rpc_call_finish(call, KYSO_INVALID_ARGUMENT,
                    "request is not a valid kyso.v1.ClusterStatusRequest", NULL, 0);
    return;
  }
  kyso__v1__cluster_status_request__free_unpacked(req, NULL);
  reply_status(app, call);
}

/* Runs one membership change and answers with the status after it. */
static void change(kysod *d, rpc_call *call, cluster_change_op op, uint64_t id, const char *raft,
                   const char *rpc) {
  kyso_err err = {0};
  kyso_status st;
  if (d->cluster == NULL)
    st = kyso_fail(&err, KYSO_FAILED_PRECONDITION,
                   "node %u runs alone ([cluster] lists no members): there is no membership to "
                   "change",
                   d->cfg.node_id);
  else
    st = cluster_change_wait(d->cluster, op, id, raft, rpc, rpc_call_remaining_ms(call), &err);
  if (st != KYSO_OK) {
    kyso_log(KYSO_LOG_WARN, "cluster change %d of node %llu by %s failed: %s", (int)op,
             (unsigned long long)id, rpc_call_peer(call)->principal, err.msg);
    rpc_call_finish(call, st, err.msg, NULL, 0);
    return;
  }
  kyso_log(KYSO_LOG_INFO, "cluster change %d of node %llu by %s", (int)op, (unsigned long long)id,
           rpc_call_peer(call)->principal);
  reply_status(d, call);
}

void kysod__cluster_add(rpc_call *call, void *app) {
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__ClusterAddRequest *req = kyso__v1__cluster_add_request__unpack(NULL, len, data);
  if (req == NULL) {
    rpc_call_finish(call, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.ClusterAddRequest",
                    NULL, 0);
    return;
  }
  if (req->id == 0 || req->id > 65535 || req->rpc_address[0] == '\0')
    rpc_call_finish(call, KYSO_INVALID_ARGUMENT,
                    "a node is added with its id (1..65535, its [server] node_id), its Raft "
                    "address and its client address",
                    NULL, 0);
  else
    change(app, call, CLUSTER_CHANGE_ADD, req->id, req->raft_address, req->rpc_address);
  kyso__v1__cluster_add_request__free_unpacked(req, NULL);
}

void kysod__cluster_remove(rpc_call *call, void *app) {
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__ClusterRemoveRequest *req = kyso__v1__cluster_remove_request__unpack(NULL, len, data);
  if (req == NULL) {
    rpc_call_finish(call, KYSO_INVALID_ARGUMENT,
                    "request is not a valid kyso.v1.ClusterRemoveRequest", NULL, 0);
    return;
  }
  change(app, call, CLUSTER_CHANGE_REMOVE, req->id, NULL, NULL);
  kyso__v1__cluster_remove_request__free_unpacked(req, NULL);
}

void kysod__cluster_transfer(rpc_call *call, void *app) {
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__ClusterTransferRequest *req =
      kyso__v1__cluster_transfer_request__unpack(NULL, len, data);
  if (req == NULL) {
    rpc_call_finish(call, KYSO_INVALID_ARGUMENT,
                    "request is not a valid kyso.v1.ClusterTransferRequest", NULL, 0);
    return;
  }
  change(app, call, CLUSTER_CHANGE_TRANSFER, req->id, NULL, NULL);
  kyso__v1__cluster_transfer_request__free_unpacked(req, NULL);
}

void kysod__cluster_digest(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  size_t len;
  uint8_t sha[32];
  char hex[65];
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__ClusterDigestRequest *req = kyso__v1__cluster_digest_request__unpack(NULL, len, data);
  if (req == NULL) {
    rpc_call_finish(call, KYSO_INVALID_ARGUMENT,
                    "request is not a valid kyso.v1.ClusterDigestRequest", NULL, 0);
    return;
  }
  kyso__v1__cluster_digest_request__free_unpacked(req, NULL);
  Kyso__V1__ClusterDigest resp = KYSO__V1__CLUSTER_DIGEST__INIT;
  kyso_status st = archive_state_digest(d->archive, sha, &resp.applied_index, &resp.records, &err);
  if (st != KYSO_OK) {
    rpc_call_finish(call, st, err.msg, NULL, 0);
    return;
  }
  kyso_hex(sha, 32, hex);
  resp.sha256 = hex;
  kysod__reply(call, &resp.base);
}
