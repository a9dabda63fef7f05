/* e2e_cluster_membership: grow a 3-node cluster to 5 and shrink it back to
 * 3 with `kyso cluster add|remove`, while a writer keeps putting documents
 * (retrying an unavailable write with the same request id, following the
 * leader the refusal names). No acknowledged write fails or goes missing:
 * at the end every acknowledged document is on the leader, its bytes
 * included, and the writer saw no error other than UNAVAILABLE. The added
 * nodes catch up with the whole log and serve what was written before
 * they joined; a change on a follower is refused naming the leader. A key
 * generated before the growth reaches each new node through the key
 * registry (unwrapped under the KEK into its own token) and signs there,
 * once that node leads: openssl verifies the signature and its
 * time-stamp's TSA key came the same way. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "harness_cluster.h"

#define N 5
#define INITIAL 3
#define UNIT "H37.MB.001"
#define MAX_DOCS 4096
#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define EC KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256
#define SIGNER "mb.signer"

static e2e_cluster CL;

/* The writer: its own client per node, the leader it believes in. */
static struct {
  pthread_t thread;
  kyso_client *_Atomic client[N]; /* opened when the node first starts */
  atomic_int leader;
  atomic_int stop;
  atomic_int acked;
  char ids[MAX_DOCS][65]; /* [0, acked) are written before acked moves past them */
  atomic_int hard_errors; /* anything but UNAVAILABLE */
  char last_error[512];   /* the first hard error (written once, before hard_errors moves) */
  atomic_int retries;
} W;

static int setup(void **state) {
  (void)state;
  const char *extra[N] = {"stale_reads = true\n", NULL, NULL, "stale_reads = true\n",
                          "stale_reads = true\n"};
  assert_int_equal(e2e_cluster_new(&CL, N, INITIAL, extra), 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (int i = 0; i < N; i++) kyso_client_close(W.client[i]);
  e2e_cluster_free(&CL);
  return 0;
}

/* "... the leader is node K at ..." in a refusal: K-1, or -1. */

static void *writer(void *arg) {
  (void)arg;
  for (uint64_t seed = 1; !W.stop && W.acked < MAX_DOCS; seed++) {
    uint8_t doc[3000];
    char rid[32], msg[512];
    Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
    Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
    e2e_fill(doc, sizeof(doc), seed + 7000, 0);
    snprintf(rid, sizeof(rid), "mb-%llu", (unsigned long long)seed);
    meta.unit = UNIT;
    meta.issue_date = "2026-12-03";
    hdr.metadata = &meta;
    hdr.request_id = rid;
    /* The same request id until it is acknowledged (idempotent). */
    for (int attempt = 0; attempt < 200; attempt++) {
      Kyso__V1__DocumentInfo *info = NULL;
      int st = e2e_put_with(W.client[W.leader], &hdr, doc, sizeof(doc), NULL, 20000, &info, msg,
                            sizeof(msg));
      if (st == 0) {
        snprintf(W.ids[W.acked], 65, "%s", info->id);
        W.acked++;
        kyso__v1__document_info__free_unpacked(info, NULL);
        break;
      }
      if (st != 14) {
        if (W.hard_errors++ == 0) /* the first one says what went wrong */
          snprintf(W.last_error, sizeof(W.last_error), "status %d: %.480s", st, msg);
        break;
      }
      W.retries++;
      int k = e2e_cluster_named_leader(&CL, msg);
      if (k >= 0) W.leader = k;
      e2e_pause_ms(50); /* back-off before a retry */
    }
  }
  return NULL;
}

static int cli(int node, const char *const *args) { return e2e_cluster_cli(&CL, node, args); }

static int wait_acked(int more) {
  int want = W.acked + more;
  int64_t end = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
  while (W.acked < want && W.hard_errors == 0 && e2e_now_ms() < end) e2e_pause_ms(20);
  return W.acked >= want;
}

/* Node i installed SIGNER (made on node `maker` before i joined); it takes
 * the leadership and signs a document with it; openssl verifies the
 * CAdES-T signature against the maker's PKI. */
static void sign_on_new_node(int maker, int i) {
  int up_all[N] = {1, 1, 1, 1, 1};
  char id_s[16], rid[32], msg[512], doc[128];
  e2e_cluster_wait_key(&CL, i, PERSONAL, SIGNER);
  e2e_cluster_wait_key(&CL, i, KYSO__V1__KEY_ROLE__KEY_ROLE_TSA, "default");
  snprintf(id_s, sizeof(id_s), "%d", i + 1);
  snprintf(rid, sizeof(rid), "mb-sign-%d", i + 1);
  const char *to[] = {"cluster", "transfer", id_s, NULL};
  E2E_EQ("kyso cluster transfer to a new node", cli(e2e_cluster_wait_leader(&CL, up_all), to), 0);
  E2E_EQ("the new node leads", e2e_cluster_wait_leader(&CL, up_all), i);
  W.leader = i; /* the writer follows (it would also learn it from a refusal) */
  int n = snprintf(doc, sizeof(doc), "Cong van 7/%d-MB: signed on node %d", i + 1, i + 1);
  Kyso__V1__SignResponse *resp = NULL;
  int st = -1;
  /* The leadership may move again before the call lands: retry while UNAVAILABLE. */
  for (int attempt = 0; attempt < 50; attempt++) {
    st = e2e_sign(CL.node[i], E2E_DMS, PERSONAL, SIGNER, 0, (const uint8_t *)doc, (size_t)n,
                  rid, 30000, &resp, msg, sizeof(msg));
    if (st != 14) break;
    e2e_pause_ms(50);
  }
  if (st != 0) E2E_FAIL("Sign with %s on new node %d: status %d (%s)", SIGNER, i + 1, st, msg);
  e2e *m = CL.node[maker];
  e2e_write_file(e2e_path(m, "work/mb.doc"), doc, (size_t)n);
  e2e_write_file(e2e_path(m, "work/mb.doc.p7s"), resp->signature.data, resp->signature.len);
  E2E_EQ("openssl cms -verify of a signature made on a new node",
         e2e_openssl_verify(m, e2e_path(m, "work/mb.doc"), e2e_path(m, "work/mb.doc.p7s")), 0);
  /* Stamped by the new node's own TSA: its node id is the serial's top 16 bits. */
  unsigned long long serial = strtoull(resp->timestamp_serial, NULL, 10);
  if (resp->timestamp_serial[0] == '\0' || serial >> 48 != (unsigned long long)(i + 1))
    E2E_FAIL("the signature made on node %d has time-stamp serial '%s', want one of node %d",
             i + 1, resp->timestamp_serial, i + 1);
  printf("node %d signed with %s (made on node %d before it joined), time-stamp serial %s\n",
         i + 1, SIGNER, maker + 1, resp->timestamp_serial);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
}

static void test_grow_and_shrink_under_writes(void **state) {
  (void)state;
  int up[N] = {1, 1, 1, 0, 0};
  char id_s[16], raft[32], rpc[32];
  for (int i = 0; i < INITIAL; i++) e2e_start(CL.node[i], NULL);
  int leader = e2e_cluster_wait_leader(&CL, up);
  /* Keys made before the growth: the TSA's and a signer's. */
  e2e_cluster_provision_tsa(&CL, leader, up);
  e2e_cluster_provision_key(&CL, leader, up, PERSONAL, SIGNER, EC);
  for (int i = 0; i < INITIAL; i++) W.client[i] = e2e_client_open(CL.node[i], E2E_DMS);
  W.leader = leader;
  assert_int_equal(pthread_create(&W.thread, NULL, writer, NULL), 0);
  if (!wait_acked(10)) E2E_FAIL("the writer got no 10 documents in");

  /* Grow: start each new node with join = true, then add it. */
  for (int i = INITIAL; i < N; i++) {
    e2e_start(CL.node[i], NULL);
    up[i] = 1;
    W.client[i] = e2e_client_open(CL.node[i], E2E_DMS); /* before any refusal can name it */
    snprintf(id_s, sizeof(id_s), "%d", i + 1);
    snprintf(raft, sizeof(raft), "127.0.0.1:%d", CL.raft_port[i]);
    snprintf(rpc, sizeof(rpc), "127.0.0.1:%d", CL.rpc_port[i]);
    const char *add[] = {"cluster", "add", id_s, raft, rpc, NULL};
    E2E_EQ("kyso cluster add", cli(leader, add), 0);
    if (!wait_acked(10)) E2E_FAIL("writes stalled after adding node %d", i + 1);
  }
  E2E_EQ("voters after growing", e2e_cluster_voters(&CL, leader), 5);
  /* A change sent to a follower is refused and names the leader. */
  int follower = (leader + 1) % INITIAL;
  const char *bad[] = {"cluster", "remove", "5", NULL};
  if (cli(follower, bad) == 0) E2E_FAIL("kyso cluster remove on a follower succeeded");
  if (!e2e_file_contains(e2e_path(CL.node[follower], "work/cli.txt"), "is not the leader"))
    E2E_FAIL("the follower's refusal does not name the leader");
  /* The new nodes caught up with the whole log, documents from before they joined included. */
  uint64_t idx = e2e_cluster_applied(&CL, leader);
  for (int i = INITIAL; i < N; i++) {
    e2e_cluster_wait_applied(&CL, i, idx);
    Kyso__V1__DocumentInfo *info = NULL;
    char msg[512];
    int st = e2e_stat_with(CL.node[i]->clients[E2E_ARCH], W.ids[0], 0, 10000, &info, msg,
                           sizeof(msg));
    if (st != 0) E2E_FAIL("node %d lacks the first document: status %d (%s)", i + 1, st, msg);
    kyso__v1__document_info__free_unpacked(info, NULL);
  }

  /* The key made before they joined signs on each new node, once it leads. */
  for (int i = INITIAL; i < N; i++) sign_on_new_node(leader, i);
  snprintf(id_s, sizeof(id_s), "%d", leader + 1);
  const char *back[] = {"cluster", "transfer", id_s, NULL};
  E2E_EQ("kyso cluster transfer back", cli(e2e_cluster_wait_leader(&CL, up), back), 0);
  E2E_EQ("the first leader leads again", e2e_cluster_wait_leader(&CL, up), leader);
  W.leader = leader; /* before the new nodes stop: the writer must not call a stopped node */
  /* The writer is sequential: once it was acknowledged again, no call of
   * its is left in flight whose refusal could name an old leader. */
  if (!wait_acked(5))
    E2E_FAIL("writes stalled after the leadership came back (%d other errors: %s)",
             atomic_load(&W.hard_errors), W.hard_errors ? W.last_error : "-");

  /* Shrink: remove the two new nodes one at a time, then stop them. */
  for (int i = N - 1; i >= INITIAL; i--) {
    snprintf(id_s, sizeof(id_s), "%d", i + 1);
    const char *rm[] = {"cluster", "remove", id_s, NULL};
    E2E_EQ("kyso cluster remove", cli(leader, rm), 0);
    E2E_EQ("clean stop of a removed node", e2e_stop(CL.node[i]), 0);
    up[i] = 0;
    if (!wait_acked(10))
      E2E_FAIL("writes stalled after removing node %d (%d other errors: %s)", i + 1,
               atomic_load(&W.hard_errors), W.hard_errors ? W.last_error : "-");
  }
  E2E_EQ("voters after shrinking", e2e_cluster_voters(&CL, leader), 3);
  W.stop = 1;
  pthread_join(W.thread, NULL);
  printf("%d documents acknowledged during the changes, %d retries, %d other errors\n",
         atomic_load(&W.acked), atomic_load(&W.retries), atomic_load(&W.hard_errors));
  if (W.hard_errors != 0) E2E_FAIL("the writer saw a failure: %s", W.last_error);

  /* Every acknowledged document, bytes included, is on every remaining node. */
  idx = e2e_cluster_applied(&CL, leader);
  for (int i = 0; i < INITIAL; i++) e2e_cluster_wait_applied(&CL, i, idx);
  for (int k = 0; k < W.acked; k++) {
    e2e_got g;
    char msg[512];
    memset(&g, 0, sizeof(g));
    int st = e2e_get_with(CL.node[leader]->clients[E2E_ARCH], W.ids[k], 0, NULL, 10000, &g, msg,
                          sizeof(msg));
    if (st != 0 || strcmp(g.sha256, W.ids[k]) != 0)
      E2E_FAIL("acknowledged document %s: status %d (%s)", W.ids[k], st, msg);
    e2e_got_free(&g);
    Kyso__V1__DocumentInfo *info = NULL;
    st = e2e_stat_with(CL.node[0]->clients[E2E_ARCH], W.ids[k], 0, 10000, &info, msg, sizeof(msg));
    if (st != 0) E2E_FAIL("document %s missing on node 1: status %d (%s)", W.ids[k], st, msg);
    kyso__v1__document_info__free_unpacked(info, NULL);
  }
  for (int i = 0; i < INITIAL; i++) E2E_EQ("clean stop", e2e_stop(CL.node[i]), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_grow_and_shrink_under_writes),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
