/* e2e_cluster: three real kysod processes on loopback form one Raft group
 * (libraft over TCP). The leader takes Put and Sign; a follower refuses
 * writes naming the leader's address, before any HSM work; every record
 * reaches every node (Stat on a node with stale reads, once its applied
 * index caught up); a signature made on the leader and read back from a
 * follower's archive verifies with openssl; the bytes reach the follower
 * too (copied to a majority before the commit, fetched by hash after it).
 * kill -9 of the leader: the two
 * others elect a new one within seconds and take writes; the old leader
 * restarts as a follower and catches up, holding every acknowledged record;
 * the new leader serves the bytes of every document the dead one took.
 *
 * Each node has its own throw-away PKI and token; keys are made on the
 * leader and reach the others through the key registry (wrapped under the
 * KEK every token holds). Each node is called with its own clients. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "harness_cluster.h"
#include "kyso/util.h"
#include "kyso/v1/cluster.pb-c.h"

#define N 3
#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define EC KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256
#define UNIT "H37.CL.001"
#define DOCS 8

static e2e_cluster CL;
static e2e **E = CL.node;
static int *rpc_port = CL.rpc_port;
static char ids[3 * DOCS][65];
static int n_ids;

#define now_ms e2e_now_ms
#define pause_ms e2e_pause_ms
#define WAIT_MS E2E_CLUSTER_WAIT_MS

static int setup(void **state) {
  (void)state;
  /* The last node reads without a barrier: it shows what it holds. */
  const char *extra[N] = {NULL, NULL, "stale_reads = true\n"};
  assert_int_equal(e2e_cluster_new(&CL, N, N, extra), 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  e2e_cluster_free(&CL);
  return 0;
}

static int wait_leader(const int *up) { return e2e_cluster_wait_leader(&CL, up); }
static uint64_t applied_of(int i) { return e2e_cluster_applied(&CL, i); }
static void wait_applied(int i, uint64_t index) { e2e_cluster_wait_applied(&CL, i, index); }
static Kyso__V1__ClusterStatus *status_of(int i) { return e2e_cluster_status(&CL, i); }

/* Waits until node serves the bytes of id (they may still be on their way
 * to it), and checks they hash to id. */
static void wait_bytes(int node, const char *id) {
  int64_t end = now_ms() + WAIT_MS;
  char msg[512] = "";
  int st = -1;
  while (now_ms() < end) {
    e2e_got g;
    memset(&g, 0, sizeof(g));
    st = e2e_get_with(E[node]->clients[E2E_ARCH], id, 0, NULL, 10000, &g, msg, sizeof(msg));
    int same = st == 0 && strcmp(g.sha256, id) == 0;
    e2e_got_free(&g);
    if (same) return;
    if (st == 0) E2E_FAIL("node %d served bytes for %s that hash to something else", node + 1, id);
    pause_ms(20);
  }
  E2E_FAIL("node %d did not serve the bytes of %s within %d ms: status %d (%s)", node + 1, id,
           WAIT_MS, st, msg);
}

static int put(int node, uint64_t seed, char *msg, size_t msg_size) {
  uint8_t doc[6000];
  char rid[32];
  Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  Kyso__V1__DocumentInfo *info = NULL;
  e2e_fill(doc, sizeof(doc), seed, 0);
  snprintf(rid, sizeof(rid), "cl-put-%llu", (unsigned long long)seed);
  meta.unit = UNIT;
  meta.issue_date = "2026-12-03";
  hdr.metadata = &meta;
  hdr.request_id = rid;
  int st = e2e_put_with(E[node]->clients[E2E_DMS], &hdr, doc, sizeof(doc), NULL, 30000, &info,
                        msg, msg_size);
  if (st == 0) {
    snprintf(ids[n_ids++], 65, "%s", info->id);
    kyso__v1__document_info__free_unpacked(info, NULL);
  }
  return st;
}

static void put_ok(int node, uint64_t seed) {
  char msg[512];
  int st = put(node, seed, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Put on node %d: status %d (%s), want OK", node + 1, st, msg);
}

static void test_cluster_forms_and_replicates(void **state) {
  (void)state;
  int up[N] = {1, 1, 1};
  char msg[512];
  for (int i = 0; i < N; i++) e2e_start(E[i], NULL);
  int leader = wait_leader(up);
  int follower = (leader + 1) % N;
  /* One TSA key for the cluster, made on the leader, installed everywhere. */
  e2e_cluster_provision_tsa(&CL, leader, up);

  /* A follower refuses writes and says where the leader is. */
  int st = put(follower, 999, msg, sizeof(msg));
  E2E_EQ("Put on a follower", st, 14 /* UNAVAILABLE */);
  char where[64];
  snprintf(where, sizeof(where), "127.0.0.1:%d", rpc_port[leader]);
  if (strstr(msg, "not the leader") == NULL || strstr(msg, where) == NULL)
    E2E_FAIL("the follower's refusal '%s' does not name the leader at %s", msg, where);
  /* ... before the HSM signs: a Sign there is refused the same way. */
  Kyso__V1__SignResponse *resp = NULL;
  e2e_cluster_provision_key(&CL, leader, up, PERSONAL, "cl.follower", EC);
  st = e2e_sign(E[follower], E2E_DMS, PERSONAL, "cl.follower", 0, (const uint8_t *)"x", 1, NULL,
                30000, &resp, msg, sizeof(msg));
  E2E_EQ("Sign on a follower", st, 14);

  for (uint64_t s = 1; s <= DOCS; s++) put_ok(leader, s);
  /* A CAdES-T signature on the leader, recorded through the log. */
  e2e_cluster_provision_key(&CL, leader, up, PERSONAL, "cl.leader", EC);
  const char doc[] = "Quyet dinh so 12/QD-CL: replicated";
  st = e2e_sign(E[leader], E2E_DMS, PERSONAL, "cl.leader", 0, (const uint8_t *)doc,
                sizeof(doc) - 1, "cl-sign-1", 30000, &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Sign on the leader: status %d (%s)", st, msg);
  snprintf(ids[n_ids++], 65, "%s", resp->archive_id);
  kyso__v1__sign_response__free_unpacked(resp, NULL);

  /* Every record reaches the stale-read node; the signature read back
   * from its archive verifies with openssl against the leader's PKI. */
  uint64_t idx = applied_of(leader);
  int reader = N - 1;
  wait_applied(reader, idx);
  for (int i = 0; i < n_ids; i++) {
    Kyso__V1__DocumentInfo *info = NULL;
    st = e2e_stat_with(E[reader]->clients[E2E_ARCH], ids[i], 1, 10000, &info, msg, sizeof(msg));
    if (st != 0) E2E_FAIL("Stat %s on node %d: status %d (%s)", ids[i], reader + 1, st, msg);
    if (i == n_ids - 1) {
      E2E_EQ("signatures on the signed document", info->n_signatures, 1);
      e2e_write_file(e2e_path(E[leader], "work/cl.doc"), doc, sizeof(doc) - 1);
      e2e_write_file(e2e_path(E[leader], "work/cl.doc.p7s"), info->signatures[0]->signature.data,
                     info->signatures[0]->signature.len);
      E2E_EQ("openssl cms -verify of the replicated signature",
             e2e_openssl_verify(E[leader], e2e_path(E[leader], "work/cl.doc"),
                                e2e_path(E[leader], "work/cl.doc.p7s")),
             0);
    }
    kyso__v1__document_info__free_unpacked(info, NULL);
  }
  /* The bytes reach the follower too: fetched by hash from a peer. */
  for (int i = 0; i < n_ids; i++) wait_bytes(reader, ids[i]);
  /* A barrier read on a plain follower is refused with the leader's name. */
  if (follower != reader) {
    Kyso__V1__DocumentInfo *info = NULL;
    st = e2e_stat_with(E[follower]->clients[E2E_ARCH], ids[0], 0, 10000, &info, msg, sizeof(msg));
    E2E_EQ("linearizable Stat on a follower", st, 14);
  }

  /* kill -9 of the leader: the others elect one and go on. */
  int64_t killed = now_ms();
  e2e_kill9(E[leader]);
  up[leader] = 0;
  int next = wait_leader(up);
  if (next == leader) E2E_FAIL("the killed node is still named leader");
  for (uint64_t s = DOCS + 1; s <= 2 * DOCS; s++) put_ok(next, s);
  printf("writes resumed %lld ms after the leader was killed\n", (long long)(now_ms() - killed));
  /* Every document the dead leader acknowledged, bytes included, is served
   * by the new one. */
  for (int i = 0; i < n_ids; i++) wait_bytes(next, ids[i]);

  /* The old leader restarts as a follower and holds everything. */
  e2e_start(E[leader], NULL);
  up[leader] = 1;
  E2E_EQ("one leader after the restart", wait_leader(up), next);
  wait_applied(leader, applied_of(next));
  wait_applied(reader, applied_of(next));
  for (int i = 0; i < n_ids; i++) wait_bytes(reader, ids[i]);
  if (leader != reader)
    for (int i = 0; i < n_ids; i++) {
      Kyso__V1__DocumentInfo *info = NULL;
      st = e2e_stat_with(E[reader]->clients[E2E_ARCH], ids[i], 0, 10000, &info, msg,
                         sizeof(msg));
      if (st != 0) E2E_FAIL("Stat %s after the restart: status %d (%s)", ids[i], st, msg);
      kyso__v1__document_info__free_unpacked(info, NULL);
    }
  /* kyso cluster status names the leader and all three voters. */
  const char *args[] = {"cluster", "status", NULL};
  const char *out = e2e_path(E[next], "work/status.txt");
  E2E_EQ("kyso cluster status", e2e_kyso(E[next], E2E_OPS, out, args), 0);
  if (!e2e_file_contains(out, "leader, term") || !e2e_file_contains(out, "(leader)"))
    E2E_FAIL("kyso cluster status does not show this node leading (see %s)", out);
  Kyso__V1__ClusterStatus *s = status_of(next);
  E2E_EQ("members", s->n_members, N);
  for (size_t i = 0; i < s->n_members; i++) E2E_EQ("voter", s->members[i]->voter, 1);
  kyso__v1__cluster_status__free_unpacked(s, NULL);
  for (int i = 0; i < N; i++) E2E_EQ("clean stop", e2e_stop(E[i]), 0);

  /* The other two are lost for good: the documented recovery on node 1. */
  const char *dry[] = {"cluster", "recover", "--kysod-config", E[0]->config, "--keep", "1", NULL};
  const char *log = e2e_path(E[0], "work/recover.txt");
  if (e2e_kyso(E[0], E2E_OPS, log, dry) == 0) E2E_FAIL("recover without --yes changed something");
  if (!e2e_file_contains(log, "add --yes")) E2E_FAIL("recover without --yes does not say why");
  const char *wet[] = {"cluster", "recover", "--kysod-config", E[0]->config, "--keep", "1",
                       "--yes", NULL};
  E2E_EQ("kyso cluster recover", e2e_kyso(E[0], E2E_OPS, log, wet), 0);
  e2e_start(E[0], NULL);
  int alone[N] = {1, 0, 0};
  E2E_EQ("node 1 leads alone", wait_leader(alone), 0);
  Kyso__V1__ClusterStatus *st1 = status_of(0);
  E2E_EQ("members after recovery", st1->n_members, 1);
  kyso__v1__cluster_status__free_unpacked(st1, NULL);
  put_ok(0, 4242);
  for (int i = 0; i < n_ids; i++) {
    Kyso__V1__DocumentInfo *info = NULL;
    int rs = e2e_stat_with(E[0]->clients[E2E_ARCH], ids[i], 0, 10000, &info, msg, sizeof(msg));
    if (rs != 0) E2E_FAIL("after recovery node 1 lacks %s: status %d (%s)", ids[i], rs, msg);
    kyso__v1__document_info__free_unpacked(info, NULL);
  }
  E2E_EQ("clean stop after recovery", e2e_stop(E[0]), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cluster_forms_and_replicates),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
