/* kysod — where state changes go: on a single node, the archive's
 * group-commit writer; in a cluster, the Raft log (the command is prepared
 * here, its inline document stored here, then proposed). Reads in a
 * cluster wait for a Raft barrier unless [cluster] stale_reads is set. */
#include <stdlib.h>

#include "kysod.h"

kyso_status kysod__require_writer(kysod *d, kyso_err *err) {
  if (d->cluster == NULL) return KYSO_OK;
  cluster_info in;
  cluster_get_info(d->cluster, &in);
  if (in.state == CLUSTER_LEADER) return KYSO_OK;
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

kyso_status kysod__record(kysod *d, rpc_call *call, const uint8_t *cmd, size_t len,
                          const uint8_t *blob, size_t blob_len, uint8_t **result,
                          size_t *result_len, kyso_err *err) {
  *result = NULL;
  *result_len = 0;
  if (d->cluster == NULL)
    return archive_submit(d->archive, cmd, len, blob, blob_len, result, result_len, err);
  kyso_status st = archive_prepare(d->archive, cmd, len, blob, blob_len, err);
  if (st != KYSO_OK) return st;
  return cluster_submit_wait(d->cluster, cmd, len, rpc_call_remaining_ms(call), result,
                             result_len, err);
}

kyso_status kysod__read_barrier(kysod *d, rpc_call *call, kyso_err *err) {
  if (d->cluster == NULL || d->cfg.stale_reads) return KYSO_OK;
  return cluster_barrier_wait(d->cluster, rpc_call_remaining_ms(call), err);
}
