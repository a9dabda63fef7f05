/* kyso — replication: one Raft group (libraft 0.15) whose log carries the
 * archive's commands. Every node applies the committed entries, in order,
 * with archive_apply_entry; the leader batches queued commands into one
 * entry (group commit across requests). libraft runs on one libuv loop
 * thread owned by this module; other threads hand it work through a queue
 * and uv_async_send and are answered through a callback, so no caller
 * blocks a libuv or gRPC completion-queue thread while a commit is under
 * way. No other thread touches the raft struct. */
#ifndef KYSO_CLUSTER_H
#define KYSO_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "kyso/archive.h"
#include "kyso/status.h"

typedef struct cluster cluster;

/* Most members a configuration may list (Raft groups are 3 or 5). */
#define CLUSTER_MAX_MEMBERS 9
#define CLUSTER_MAX_ADDRESS 127

typedef struct cluster_member {
  uint64_t id;              /* 1.., unique in the cluster, never reused */
  const char *raft_address; /* host:port of its Raft listener */
  const char *rpc_address;  /* host:port its clients call; told to a caller that reached a
                               follower (NULL: unknown) */
} cluster_member;

/* Mutual TLS between the nodes' Raft listeners: each presents cert_file
 * (its chain, PEM) and key_file, and takes only peers whose certificate
 * chains to ca_file and, with n_allowed > 0, whose SHA-256 is one of
 * allowed (the nodes' certificates). */
typedef struct cluster_tls {
  const char *cert_file;
  const char *key_file;
  const char *ca_file;
  const uint8_t (*allowed)[32];
  size_t n_allowed;
} cluster_tls;

typedef struct cluster_opts {
  uint64_t id;                      /* this node: one of members, or a node being added */
  const char *dir;                  /* Raft log and snapshots; created if missing */
  archive *archive;                 /* the store every entry is applied to */
  /* Every node the operator configured. A pristine node whose id is among
   * them bootstraps with all of them as voters (the same configuration on
   * each initial node); a node with Raft state ignores this except to name
   * members' RPC addresses. */
  const cluster_member *members;
  size_t member_count;
  int join;                         /* pristine and not bootstrapping: wait to be added */
  const cluster_tls *tls;           /* NULL: plain TCP (tests of this module only) */
  unsigned election_ms;             /* default 1000 */
  unsigned heartbeat_ms;            /* default 100 */
  unsigned snapshot_threshold;      /* entries between snapshots; default 1024 */
  unsigned snapshot_trailing;       /* entries kept behind a snapshot; default 2048 */
  unsigned max_batch;               /* commands per entry; default 256 */
  unsigned max_queued;              /* commands waiting for the loop; default 4096 */
  /* Fault injection for tests only (a slow commit): what is submitted
   * waits this long on the loop, without blocking it, before it is
   * proposed. 0 in production. */
  unsigned test_propose_delay_ms;
  /* Called on the loop thread after each entry this node applied, with its
   * outcomes (NULL: none). Must be quick: queue work, never do it. */
  void (*applied)(void *ctx, const archive_outcome *outcomes, size_t n);
  void *applied_ctx;
  /* Called when a snapshot names an entry beyond what the archive holds
   * (on the loop thread, or in cluster_open while Raft loads its state):
   * this node needs a peer's archive checkpoint. It must record that
   * durably and arrange a restart; 0 if it did. The restore fails either
   * way, so nothing more is applied until then. NULL: the restore fails. */
  int (*checkpoint_needed)(void *ctx, uint64_t index);
  void *checkpoint_ctx;
} cluster_opts;

/* How one submission ended. Runs on the cluster's loop thread: do no slow
 * work in it. msg is "" on OK; result (a serialised CommandResult) is valid
 * during the call only. */
typedef void (*cluster_done_fn)(void *ctx, kyso_status st, const char *msg, const uint8_t *result,
                                size_t result_len);

/* Lifecycle */
/* Loads (or bootstraps) the Raft state, replays what the archive lacks and
 * starts the loop thread. The process must ignore SIGPIPE (libuv writes to
 * peers that may have gone away). */
kyso_status cluster_open(const cluster_opts *opts, cluster **out, kyso_err *err) KYSO_MUST_CHECK;
/* Fails what is queued (UNAVAILABLE), closes Raft, joins the thread. NULL is fine. */
void cluster_close(cluster *c);

/* Writes */
/* Proposes one prepared command (archive_prepare; cmd is copied). done
 * runs exactly once: OK with the result once a majority holds the entry
 * and this node applied it; the command's refusal; UNAVAILABLE when this
 * node is not the leader (the message names the leader) or when leadership
 * was lost before the commit (the outcome is then unknown: retry with the
 * same request id); RESOURCE_EXHAUSTED when the queue is full. */
void cluster_submit(cluster *c, const uint8_t *cmd, size_t len, cluster_done_fn done, void *ctx);
/* The same from a thread that may block (a worker): waits at most
 * timeout_ms (DEADLINE_EXCEEDED then, the outcome unknown). *result is
 * malloc()ed on OK. */
kyso_status cluster_submit_wait(cluster *c, const uint8_t *cmd, size_t len, int64_t timeout_ms,
                                uint8_t **result, size_t *result_len,
                                kyso_err *err) KYSO_MUST_CHECK;

/* Reads */
/* Linearizable reads: OK once this node, the leader, has applied every
 * entry committed before the call (a Raft barrier). UNAVAILABLE with the
 * leader's name on a follower. */
kyso_status cluster_barrier_wait(cluster *c, int64_t timeout_ms, kyso_err *err) KYSO_MUST_CHECK;

/* Serving on any node: a follower serves a write or a read through the
 * leader, then waits until it applied as far as the leader answered. */
/* The index of the last command entry this node applied (0: none). Once
 * cluster_submit_wait or cluster_barrier_wait returned OK it covers that
 * command, or every command committed before the barrier. */
uint64_t cluster_applied_index(cluster *c);
/* OK once this node applied every entry up to index; DEADLINE_EXCEEDED
 * after timeout_ms (saying how far it got); UNAVAILABLE when closing. */
kyso_status cluster_applied_wait(cluster *c, uint64_t index, int64_t timeout_ms,
                                 kyso_err *err) KYSO_MUST_CHECK;
/* On the leader, after a commit a follower waits for: libraft tells the
 * followers of a commit only with its next AppendEntries, up to two
 * heartbeats later; this appends a barrier now (one per loop wake-up,
 * nobody waits for it), whose AppendEntries carries the commit at once. */
void cluster_nudge(cluster *c);

/* Membership, one change at a time, on the leader. */
typedef enum {
  CLUSTER_CHANGE_ADD = 1,      /* id with raft_address/rpc_address: added, then promoted to
                                  voter once it caught up with the log */
  CLUSTER_CHANGE_REMOVE = 2,   /* id leaves the configuration */
  CLUSTER_CHANGE_TRANSFER = 3, /* the leadership goes to id (0: the most up-to-date voter) */
} cluster_change_op;
/* UNAVAILABLE on a follower (naming the leader) or when the new node does
 * not catch up (not running, or not started with join); FAILED_PRECONDITION
 * for a change the configuration refuses (an id or address in use, an
 * unknown id, another change under way); DEADLINE_EXCEEDED when timeout_ms
 * passes first (the change may still complete: look at the status). */
kyso_status cluster_change_wait(cluster *c, cluster_change_op op, uint64_t id,
                                const char *raft_address, const char *rpc_address,
                                int64_t timeout_ms, kyso_err *err) KYSO_MUST_CHECK;

/* Recovery from the permanent loss of a majority, offline (kysod stopped on
 * every node): rewrites the Raft configuration in dir (this node's Raft
 * directory) to the surviving members. Run it on ONE survivor — the one
 * with the highest term and longest log — then copy that node's whole data
 * directory to the other survivors and start them all. with_rpc: the
 * members' client addresses go into the configuration too (kysod's TLS
 * transport; tests of plain TCP pass 0). Anything acknowledged only by the
 * lost nodes is lost: the cluster goes on from this node's log. */
kyso_status cluster_recover(const char *dir, uint64_t id, const cluster_member *members,
                            size_t member_count, int with_rpc, kyso_err *err) KYSO_MUST_CHECK;

/* State, as the loop thread last saw it (refreshed every heartbeat). */
typedef enum {
  CLUSTER_UNAVAILABLE = 0,
  CLUSTER_FOLLOWER = 1,
  CLUSTER_CANDIDATE = 2,
  CLUSTER_LEADER = 3,
} cluster_role_state;

typedef struct cluster_info {
  uint64_t id;
  cluster_role_state state;
  uint64_t term;
  uint64_t leader_id;                       /* 0: none known */
  char leader_raft[CLUSTER_MAX_ADDRESS + 1];
  char leader_rpc[CLUSTER_MAX_ADDRESS + 1]; /* "" when unknown */
  uint64_t last_index, commit_index, applied_index;
  uint64_t snapshots_taken, snapshots_installed;
  size_t member_count;
  struct {
    uint64_t id;
    char raft_address[CLUSTER_MAX_ADDRESS + 1];
    char rpc_address[CLUSTER_MAX_ADDRESS + 1]; /* "" when unknown */
    int voter; /* 1 voter, 0 stand-by or spare */
    int reachable; /* on the leader: heard from within two election timeouts; else 1 */
  } members[CLUSTER_MAX_MEMBERS];
} cluster_info;
void cluster_get_info(cluster *c, cluster_info *out);
const char *cluster_state_name(cluster_role_state s);

#endif
