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
 * Each node has its own throw-away PKI and token here (keys are not yet
 * shared between tokens), so each node is called with its own clients. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"
#include "kyso/v1/cluster.pb-c.h"

#define N 3
#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define EC KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256
#define UNIT "H37.CL.001"
#define WAIT_MS 30000
#define DOCS 8

static e2e *E[N];
static int raft_port[N], rpc_port[N];
static char ids[3 * DOCS][65];
static int n_ids;

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void pause_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

static int setup(void **state) {
  (void)state;
  for (int i = 0; i < N; i++) {
    raft_port[i] = e2e_free_port();
    rpc_port[i] = e2e_free_port();
  }
  char members[1024] = "";
  for (int i = 0; i < N; i++) {
    char line[128];
    snprintf(line, sizeof(line), "member = %d 127.0.0.1:%d 127.0.0.1:%d\n", i + 1, raft_port[i],
             rpc_port[i]);
    strcat(members, line);
  }
  for (int i = 0; i < N; i++) {
    E[i] = e2e_new();
    assert_non_null(E[i]);
  }
  /* The nodes trust each other's PKIs and know each other as peers (each
   * calls the others with its own server certificate). */
  char bundle[512];
  snprintf(bundle, sizeof(bundle), "%s/peers-ca.pem", E[0]->dir);
  for (int i = 0; i < N; i++)
    assert_int_equal(e2e_sh(NULL, "cat '%s/root.pem' '%s/chain.pem' >> '%s'", E[i]->pki,
                            E[i]->pki, bundle),
                     0);
  char callers[2048] = "";
  for (int j = 0; j < N; j++) {
    char fp_file[600], line[256];
    snprintf(fp_file, sizeof(fp_file), "%s/fp.txt", E[j]->dir);
    assert_int_equal(e2e_sh(NULL,
                            "openssl x509 -in '%s/server.pem' -noout -fingerprint -sha256 | "
                            "cut -d= -f2 | tr -d '\\n' > '%s'",
                            E[j]->pki, fp_file),
                     0);
    size_t n = 0;
    char *fp = (char *)e2e_read_file(fp_file, &n);
    assert_non_null(fp);
    snprintf(line, sizeof(line), "\n[caller.node%d]\nfingerprint = %s\nroles = peer\n", j + 1,
             fp);
    strcat(callers, line);
    free(fp);
  }
  for (int i = 0; i < N; i++) {
    char text[4096];
    /* The last node reads without a barrier: it shows what it holds. */
    snprintf(text, sizeof(text),
             "\n[server]\nnode_id = %d\nlisten = 127.0.0.1:%d\n\n[tls]\nclient_ca = %s\n"
             "\n[cluster]\n%speer_ca = %s\nelection_ms = 600\nheartbeat_ms = 60\n%s%s",
             i + 1, rpc_port[i], bundle, members, bundle,
             i == N - 1 ? "stale_reads = true\n" : "", callers);
    e2e_config_append(E[i], text);
  }
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (int i = 0; i < N; i++) e2e_free(E[i]);
  return 0;
}

static Kyso__V1__ClusterStatus *status_of(int i) {
  Kyso__V1__ClusterStatusRequest req = KYSO__V1__CLUSTER_STATUS_REQUEST__INIT;
  Kyso__V1__ClusterStatus *s = NULL;
  char msg[256];
  int st = e2e_call(E[i], E2E_OPS, "/kyso.v1.Cluster/Status", &req.base,
                    &kyso__v1__cluster_status__descriptor, 5000, (ProtobufCMessage **)&s, msg,
                    sizeof(msg));
  if (st != 0) E2E_FAIL("Cluster.Status on node %d: status %d (%s)", i + 1, st, msg);
  return s;
}

/* The node all running nodes name as leader, once it says it leads. */
static int wait_leader(const int *up) {
  int64_t start = now_ms();
  while (now_ms() - start < WAIT_MS) {
    uint64_t agreed = 0;
    int ok = 1;
    for (int i = 0; i < N && ok; i++) {
      if (!up[i]) continue;
      Kyso__V1__ClusterStatus *s = status_of(i);
      if (s->leader_id == 0 || (agreed && s->leader_id != agreed)) ok = 0;
      agreed = s->leader_id;
      kyso__v1__cluster_status__free_unpacked(s, NULL);
    }
    if (ok && agreed >= 1 && agreed <= N && up[agreed - 1]) {
      Kyso__V1__ClusterStatus *s = status_of((int)agreed - 1);
      int leads = strcmp(s->state, "leader") == 0;
      kyso__v1__cluster_status__free_unpacked(s, NULL);
      if (leads) {
        printf("leader: node %llu after %lld ms\n", (unsigned long long)agreed,
               (long long)(now_ms() - start));
        return (int)agreed - 1;
      }
    }
    pause_ms(20);
  }
  E2E_FAIL("no leader agreed within %d ms", WAIT_MS);
}

static uint64_t applied_of(int i) {
  Kyso__V1__ClusterStatus *s = status_of(i);
  uint64_t a = s->applied_index;
  kyso__v1__cluster_status__free_unpacked(s, NULL);
  return a;
}

static void wait_applied(int i, uint64_t index) {
  int64_t end = now_ms() + WAIT_MS;
  uint64_t have = 0;
  while (now_ms() < end) {
    if ((have = applied_of(i)) >= index) return;
    pause_ms(20);
  }
  E2E_FAIL("node %d applied %llu, not %llu, within %d ms", i + 1, (unsigned long long)have,
           (unsigned long long)index, WAIT_MS);
}

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

  /* A follower refuses writes and says where the leader is. */
  int st = put(follower, 999, msg, sizeof(msg));
  E2E_EQ("Put on a follower", st, 14 /* UNAVAILABLE */);
  char where[64];
  snprintf(where, sizeof(where), "127.0.0.1:%d", rpc_port[leader]);
  if (strstr(msg, "not the leader") == NULL || strstr(msg, where) == NULL)
    E2E_FAIL("the follower's refusal '%s' does not name the leader at %s", msg, where);
  /* ... before the HSM signs: a Sign there is refused the same way. */
  Kyso__V1__SignResponse *resp = NULL;
  e2e_provision_key(E[follower], PERSONAL, "cl.follower", EC);
  st = e2e_sign(E[follower], E2E_DMS, PERSONAL, "cl.follower", 0, (const uint8_t *)"x", 1, NULL,
                30000, &resp, msg, sizeof(msg));
  E2E_EQ("Sign on a follower", st, 14);

  for (uint64_t s = 1; s <= DOCS; s++) put_ok(leader, s);
  /* A CAdES-T signature on the leader, recorded through the log. */
  e2e_provision_key(E[leader], PERSONAL, "cl.leader", EC);
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
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cluster_forms_and_replicates),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
