/* e2e harness: clusters of real kysod processes on loopback (Raft over
 * mutual TLS, document bytes over kyso.v1.Peer). Main thread only. */
#ifndef KYSO_E2E_HARNESS_CLUSTER_H
#define KYSO_E2E_HARNESS_CLUSTER_H

#include <stdint.h>

#include "harness.h"
#include "kyso/v1/cluster.pb-c.h"

#define E2E_CLUSTER_MAX 5
#define E2E_CLUSTER_WAIT_MS 30000

typedef struct e2e_cluster {
  int n;
  e2e *node[E2E_CLUSTER_MAX];
  int raft_port[E2E_CLUSTER_MAX], rpc_port[E2E_CLUSTER_MAX];
  char bundle[512]; /* every node's root and sub-CA */
  char kek_file[320]; /* the KEK every token got (kept for e2e_cluster_import_kek) */
} e2e_cluster;

/* n nodes (e2e_new each; not started). Nodes 1..initial bootstrap the
 * cluster with each other as members; the others get every node as a
 * member and join = true, to be added later. Every node trusts every
 * node's CA and lists every node's server certificate as a caller with
 * role peer. extra[i] (NULL, or entries NULL) is appended to node i+1's
 * [cluster] section. 0 on success. */
int e2e_cluster_new(e2e_cluster *cl, int n, int initial, const char *const *extra);
/* The same with node i+1 listening on hosts[i] (ports 7601 Raft, 7443
 * gRPC: each node in a network namespace of its own; set each node's
 * netns_fd before starting it). */
int e2e_cluster_new_at(e2e_cluster *cl, int n, int initial, const char *const *extra,
                       const char *const *hosts);
/* All n nodes initial, every token but node `node`'s (0-based) given the KEK. */
int e2e_cluster_new_without_kek(e2e_cluster *cl, int n, const char *const *extra, int node);
/* The KEK ceremony on node i's token (kysod stopped there). 0 on success. */
int e2e_cluster_import_kek(e2e_cluster *cl, int i);
void e2e_cluster_free(e2e_cluster *cl);

/* Cluster.Status of node i (0-based), as the operator; fails the test if
 * the call fails. Free with kyso__v1__cluster_status__free_unpacked. */
Kyso__V1__ClusterStatus *e2e_cluster_status(e2e_cluster *cl, int i);
/* The node (0-based) every node with up[i] names as leader, once it says
 * it leads; fails the test after E2E_CLUSTER_WAIT_MS. */
int e2e_cluster_wait_leader(e2e_cluster *cl, const int *up);
uint64_t e2e_cluster_applied(e2e_cluster *cl, int i);
void e2e_cluster_wait_applied(e2e_cluster *cl, int i, uint64_t index);
/* Cluster.Digest of node i, as the operator. */
Kyso__V1__ClusterDigest *e2e_cluster_digest(e2e_cluster *cl, int i);
/* Waits until every node with up[i] reports the same applied index, then
 * fails the test unless their state digests and record counts are equal. */
void e2e_cluster_check_digests(e2e_cluster *cl, const int *up, const char *when);
/* Voters in node i's configuration. */
int e2e_cluster_voters(e2e_cluster *cl, int i);

/* Keys are generated on one node and replicated through the log (wrapped
 * under the KEK every node's token got at e2e_cluster_new). Provisions the
 * key on node `on` (key, CSR, certificate from that node's PKI) and waits
 * until every node with up[i] lists it with its certificate. */
void e2e_cluster_provision_key(e2e_cluster *cl, int on, const int *up, Kyso__V1__KeyRole role,
                               const char *name, Kyso__V1__KeyAlgorithm alg);
/* The TSA key kyso/tsa/default, once for the cluster (nodes are created
 * with no_auto_tsa), on node `on`; waits as above. */
void e2e_cluster_provision_tsa(e2e_cluster *cl, int on, const int *up);
/* Waits until node i lists the key with its certificate. */
void e2e_cluster_wait_key(e2e_cluster *cl, int i, Kyso__V1__KeyRole role, const char *name);

/* The node (0-based) a refusal names ("... the leader is node K ..."), or -1. */
int e2e_cluster_named_leader(const e2e_cluster *cl, const char *msg);

/* `kyso ARGS` against node (0-based) as the operator, output in its
 * work/cli.txt (printed on failure); the exit status. */
int e2e_cluster_cli(e2e_cluster *cl, int node, const char *const *args);

int64_t e2e_now_ms(void);
/* For polling observed state, never as synchronisation by itself. */
void e2e_pause_ms(int ms);

#endif
