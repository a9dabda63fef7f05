/* e2e_cluster_partition: three kysod nodes, each in a network namespace of
 * its own, on a bridge in the test's own namespace (unshare: nothing of the
 * machine's network is touched). The leader is cut off from the other two
 * (blackhole routes inside its namespace; the test still reaches it): it
 * acknowledges no write, while the other two elect a leader and take
 * writes. After healing, the old leader follows and converges: the same
 * applied index and state digest as the others, every document written
 * during the partition present there with its bytes. Meanwhile the new
 * leader's status marks the cut-off node unreachable, and not after healing.
 *
 * Needs root and network namespaces; without them it says so and is
 * skipped (exit 77, which ctest shows as skipped). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "harness_cluster.h"

#define N 3
#define UNIT "H37.PT.001"

static e2e_cluster CL;
static char ns_name[N][40];
static const char *hosts[N] = {"10.77.0.1", "10.77.0.2", "10.77.0.3"};

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  return e2e_sh(NULL, "%s", cmd);
}

/* The test's own network namespace with a bridge, and one namespace per
 * node wired to it. 0, or why not in why. */
static int make_network(char *why, size_t size) {
  if (geteuid() != 0) {
    snprintf(why, size, "needs root (network namespaces)");
    return -1;
  }
  if (system("command -v ip >/dev/null 2>&1") != 0) {
    snprintf(why, size, "needs the ip command (iproute2)");
    return -1;
  }
  if (unshare(CLONE_NEWNET) != 0) {
    snprintf(why, size, "cannot make a network namespace: %s", strerror(errno));
    return -1;
  }
  if (sh("ip link set lo up && ip link add kbr0 type bridge && ip addr add 10.77.0.100/24 dev "
         "kbr0 && ip link set kbr0 up") != 0) {
    snprintf(why, size, "cannot make a bridge in the test's namespace");
    return -1;
  }
  for (int i = 0; i < N; i++) {
    snprintf(ns_name[i], sizeof(ns_name[i]), "kyso-pt%d-%d", i + 1, (int)getpid());
    if (sh("ip netns add %s && ip link add kv%d type veth peer name eth0 netns %s && "
           "ip link set kv%d master kbr0 up && "
           "ip -n %s link set lo up && ip -n %s addr add %s/24 dev eth0 && "
           "ip -n %s link set eth0 up",
           ns_name[i], i + 1, ns_name[i], i + 1, ns_name[i], ns_name[i], hosts[i],
           ns_name[i]) != 0) {
      snprintf(why, size, "cannot wire namespace %s", ns_name[i]);
      return -1;
    }
  }
  return 0;
}

static void drop_network(void) {
  for (int i = 0; i < N; i++)
    if (ns_name[i][0]) sh("ip netns del %s 2>/dev/null", ns_name[i]);
}

/* Cuts node i off from the other nodes (not from the test), or heals it. */
static void partition(int i, int cut) {
  for (int j = 0; j < N; j++) {
    if (j == i) continue;
    if (sh("ip -n %s route %s blackhole %s/32", ns_name[i], cut ? "add" : "del", hosts[j]) != 0)
      E2E_FAIL("cannot %s the route from node %d to node %d", cut ? "cut" : "heal", i + 1, j + 1);
  }
}

static int put(int node, uint64_t seed, char id[65], char *msg, size_t msg_size) {
  uint8_t doc[4000];
  char rid[32];
  Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  Kyso__V1__DocumentInfo *info = NULL;
  e2e_fill(doc, sizeof(doc), seed + 9000, 0);
  snprintf(rid, sizeof(rid), "pt-%llu", (unsigned long long)seed);
  meta.unit = UNIT;
  meta.issue_date = "2026-12-03";
  hdr.metadata = &meta;
  hdr.request_id = rid;
  int st = e2e_put_with(CL.node[node]->clients[E2E_DMS], &hdr, doc, sizeof(doc), NULL, 4000,
                        &info, msg, msg_size);
  if (st == 0) {
    snprintf(id, 65, "%s", info->id);
    kyso__v1__document_info__free_unpacked(info, NULL);
  }
  return st;
}


static void test_minority_cannot_acknowledge(void **state) {
  (void)state;
  int up[N] = {1, 1, 1};
  char ids[32][65], msg[512];
  int n = 0;
  for (int i = 0; i < N; i++) {
    char path[192];
    snprintf(path, sizeof(path), "/run/netns/%s", ns_name[i]);
    if ((CL.node[i]->netns_fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
      E2E_FAIL("cannot open %s: %s", path, strerror(errno));
    e2e_start(CL.node[i], NULL);
  }
  int old = e2e_cluster_wait_leader(&CL, up);
  for (int k = 0; k < 4; k++, n++)
    if (put(old, (uint64_t)n, ids[n], msg, sizeof(msg)) != 0)
      E2E_FAIL("Put before the partition: %s", msg);

  /* The leader alone on one side: nothing it takes is acknowledged. */
  partition(old, 1);
  int refused = 0;
  for (int k = 0; k < 3; k++) {
    char id[65];
    int st = put(old, 100 + (uint64_t)k, id, msg, sizeof(msg));
    if (st == 0) E2E_FAIL("the cut-off node acknowledged a write");
    refused++;
    printf("cut-off node %d refused a write: status %d (%s)\n", old + 1, st, msg);
  }
  /* The majority elects a leader among itself and takes writes. */
  up[old] = 0;
  int next = e2e_cluster_wait_leader(&CL, up);
  if (next == old) E2E_FAIL("the cut-off node is still the leader of the majority");
  for (int k = 0; k < 6; k++, n++)
    if (put(next, (uint64_t)n, ids[n], msg, sizeof(msg)) != 0)
      E2E_FAIL("Put on the majority's leader: %s", msg);
  /* The new leader reports the cut-off node unreachable (it hears nothing
   * from it any more). */
  int64_t until = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
  int unreachable = 0;
  while (!unreachable && e2e_now_ms() < until) {
    Kyso__V1__ClusterStatus *ls = e2e_cluster_status(&CL, next);
    for (size_t m = 0; m < ls->n_members; m++)
      if (ls->members[m]->id == (uint64_t)old + 1) unreachable = !ls->members[m]->reachable;
    kyso__v1__cluster_status__free_unpacked(ls, NULL);
    if (!unreachable) e2e_pause_ms(50);
  }
  if (!unreachable) E2E_FAIL("the new leader still reports the cut-off node reachable");
  Kyso__V1__ClusterStatus *s = e2e_cluster_status(&CL, old), *t = e2e_cluster_status(&CL, next);
  if (strcmp(s->state, "leader") == 0 && s->term >= t->term)
    E2E_FAIL("the cut-off node still leads in the newest term");
  kyso__v1__cluster_status__free_unpacked(s, NULL);
  kyso__v1__cluster_status__free_unpacked(t, NULL);

  /* Healed, it follows the new leader and converges. */
  partition(old, 0);
  up[old] = 1;
  E2E_EQ("one leader after healing", e2e_cluster_wait_leader(&CL, up), next);
  until = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
  for (unreachable = 1; unreachable && e2e_now_ms() < until;) {
    Kyso__V1__ClusterStatus *ls = e2e_cluster_status(&CL, next);
    unreachable = 0;
    for (size_t m = 0; m < ls->n_members; m++) unreachable |= !ls->members[m]->reachable;
    kyso__v1__cluster_status__free_unpacked(ls, NULL);
    if (unreachable) e2e_pause_ms(50);
  }
  if (unreachable) E2E_FAIL("after healing the leader still reports a member unreachable");
  uint64_t idx = e2e_cluster_applied(&CL, next);
  for (int i = 0; i < N; i++) e2e_cluster_wait_applied(&CL, i, idx);
  e2e_cluster_check_digests(&CL, up, "healed");
  E2E_EQ("writes the cut-off node refused", refused, 3);
  /* Every acknowledged document, bytes included, on the healed node. */
  for (int k = 0; k < n; k++) {
    until = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
    for (;;) {
      e2e_got g;
      memset(&g, 0, sizeof(g));
      int st = e2e_get_with(CL.node[old]->clients[E2E_ARCH], ids[k], 0, NULL, 10000, &g, msg,
                            sizeof(msg));
      int same = st == 0 && strcmp(g.sha256, ids[k]) == 0;
      e2e_got_free(&g);
      if (same) break;
      if (e2e_now_ms() > until)
        E2E_FAIL("healed node lacks %s: status %d (%s)", ids[k], st, msg);
      e2e_pause_ms(20);
    }
  }
  for (int i = 0; i < N; i++) E2E_EQ("clean stop", e2e_stop(CL.node[i]), 0);
}

int main(void) {
  char why[256];
  signal(SIGPIPE, SIG_IGN);
  if (make_network(why, sizeof(why)) != 0) {
    printf("SKIPPED: e2e_cluster_partition %s\n", why);
    drop_network();
    return 77;
  }
  const char *extra[N] = {"stale_reads = true\n", "stale_reads = true\n", "stale_reads = true\n"};
  if (e2e_cluster_new_at(&CL, N, N, extra, hosts) != 0) {
    drop_network();
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_minority_cannot_acknowledge),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  e2e_cluster_free(&CL);
  drop_network();
  return rc;
}
