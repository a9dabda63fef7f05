/* e2e_cluster_async: a write is answered after its commit without a thread
 * waiting for it. Three real kysod processes, each with ONE worker thread,
 * and a slow commit (KYSO_TEST_PROPOSE_DELAY_MS: what the leader is handed
 * waits 3 s on its loop, without blocking it, before it is proposed). Three
 * concurrent Puts on the leader are all awaiting their commit at the same
 * moment, while that single worker still answers Cluster.Status; none is
 * answered before its commit, all succeed, and every node then holds them.
 * With a worker blocked per write, the second Put could not even start. */
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

#define N 3
#define PUTS 3
#define DELAY_MS "3000"

static e2e_cluster CL;

static struct {
  pthread_t thread;
  int node, seed, st;
  char id[65], msg[512];
} P[PUTS];
static atomic_int answered;

static int setup(void **state) {
  (void)state;
  assert_int_equal(e2e_cluster_new(&CL, N, N, NULL), 0);
  for (int i = 0; i < N; i++)
    assert_int_equal(e2e_sh(NULL, "sed -i 's/^worker_threads = .*/worker_threads = 1/' '%s'",
                            CL.node[i]->config),
                     0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  e2e_cluster_free(&CL);
  return 0;
}

static void *put_run(void *arg) {
  int k = (int)(intptr_t)arg;
  uint8_t doc[6000];
  char rid[32];
  Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  Kyso__V1__DocumentInfo *info = NULL;
  e2e_fill(doc, sizeof(doc), 900 + (uint64_t)k, 0);
  snprintf(rid, sizeof(rid), "async-put-%d", k);
  meta.unit = "H37.AS.001";
  meta.issue_date = "2026-12-03";
  hdr.metadata = &meta;
  hdr.request_id = rid;
  kyso_client *c = e2e_client_open(CL.node[P[k].node], E2E_DMS);
  P[k].st = e2e_put_with(c, &hdr, doc, sizeof(doc), NULL, 60000, &info, P[k].msg,
                         sizeof(P[k].msg));
  if (P[k].st == 0) {
    snprintf(P[k].id, sizeof(P[k].id), "%s", info->id);
    kyso__v1__document_info__free_unpacked(info, NULL);
  }
  kyso_client_close(c);
  atomic_fetch_add(&answered, 1);
  return NULL;
}

static uint64_t awaiting(int node) {
  Kyso__V1__ClusterStatus *s = e2e_cluster_status(&CL, node);
  uint64_t n = s->writes_awaiting_commit;
  kyso__v1__cluster_status__free_unpacked(s, NULL);
  return n;
}

static void test_writes_wait_on_no_thread(void **state) {
  (void)state;
  const char *env[] = {"KYSO_TEST_PROPOSE_DELAY_MS=" DELAY_MS, NULL};
  int up[N] = {1, 1, 1};
  for (int i = 0; i < N; i++) e2e_start(CL.node[i], env);
  int leader = e2e_cluster_wait_leader(&CL, up);

  for (int k = 0; k < PUTS; k++) {
    P[k].node = leader;
    assert_int_equal(pthread_create(&P[k].thread, NULL, put_run, (void *)(intptr_t)k), 0);
  }
  /* The one worker answers Status while all three Puts await their commit. */
  uint64_t most = 0;
  int before_any_answer = 0;
  int64_t end = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
  while (e2e_now_ms() < end && atomic_load(&answered) < PUTS) {
    uint64_t n = awaiting(leader);
    if (n > most) {
      most = n;
      before_any_answer = atomic_load(&answered) == 0;
    }
    if (most == PUTS) break;
    e2e_pause_ms(20);
  }
  printf("writes awaiting their commit at once on the 1-worker leader: %llu\n",
         (unsigned long long)most);
  if (most != PUTS || !before_any_answer)
    E2E_FAIL("the leader had %llu of %d Puts awaiting their commit at once (%s any was "
             "answered): its single worker waited for a commit",
             (unsigned long long)most, PUTS, before_any_answer ? "before" : "after");
  for (int k = 0; k < PUTS; k++) {
    pthread_join(P[k].thread, NULL);
    if (P[k].st != 0) E2E_FAIL("Put %d: status %d (%s)", k, P[k].st, P[k].msg);
  }
  E2E_EQ("writes awaiting a commit once all were answered", awaiting(leader), 0);
  /* Acknowledged means committed: a follower serves each record at once
   * (a linearizable read: each costs a barrier, slow here), and every node
   * holds the same state. */
  for (int i = (leader + 1) % N; i == (leader + 1) % N; i = -1)
    for (int k = 0; k < PUTS; k++) {
      Kyso__V1__DocumentInfo *info = NULL;
      char msg[512];
      int st = e2e_stat_with(CL.node[i]->clients[E2E_ARCH], P[k].id, 0, 30000, &info, msg,
                             sizeof(msg));
      if (st != 0) E2E_FAIL("Stat %s on node %d: status %d (%s)", P[k].id, i + 1, st, msg);
      kyso__v1__document_info__free_unpacked(info, NULL);
    }
  e2e_cluster_check_digests(&CL, up, "after the slow commits");
  for (int i = 0; i < N; i++) E2E_EQ("clean stop", e2e_stop(CL.node[i]), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_writes_wait_on_no_thread),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
