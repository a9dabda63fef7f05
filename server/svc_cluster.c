/* kysod — kyso.v1.Cluster/Status: the Raft group as this node sees it. */
#include <stdlib.h>

#include "kysod.h"

#include "kyso/v1/cluster.pb-c.h"

/* The RPC address this node's configuration gives a member, or "". */
static char *rpc_of(const kysod *d, uint64_t id) {
  for (size_t i = 0; i < d->cfg.member_count; i++)
    if (d->cfg.members[i].id == id) return (char *)d->cfg.members[i].rpc;
  return "";
}

void kysod__cluster_status(rpc_call *call, void *app) {
  kysod *d = app;
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__ClusterStatusRequest *req = kyso__v1__cluster_status_request__unpack(NULL, len, data);
  if (req == NULL) {
    rpc_call_finish(call, KYSO_INVALID_ARGUMENT,
                    "request is not a valid kyso.v1.ClusterStatusRequest", NULL, 0);
    return;
  }
  kyso__v1__cluster_status_request__free_unpacked(req, NULL);
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
  for (size_t i = 0; i < in.member_count; i++) {
    kyso__v1__cluster_member__init(&members[i]);
    members[i].id = in.members[i].id;
    members[i].raft_address = in.members[i].raft_address;
    members[i].rpc_address = rpc_of(d, in.members[i].id);
    members[i].voter = in.members[i].voter;
    ptrs[i] = &members[i];
  }
  resp.n_members = in.member_count;
  resp.members = ptrs;
  kysod__reply(call, &resp.base);
}
