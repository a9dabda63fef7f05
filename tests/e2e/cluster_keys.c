/* e2e_cluster_keys: keys made on the leader reach every token through the
 * key registry — and what a node whose token lacks the cluster's KEK does.
 * Three nodes; node 3's security officer has not imported the KEK yet. A
 * TSA key and a signer's key are made on the leader: nodes 1 and 2 install
 * them; node 3 reports them pending in Cluster.Status, says why in its log
 * (the KEK), lists none, and answers a Sign for them UNAVAILABLE "not yet
 * installed", never NOT_FOUND. A second key under a taken label is refused
 * on any node. Once the KEK is imported (kysod stopped, as the ceremony
 * wants) node 3 installs both at its start, takes the leadership and signs:
 * openssl verifies the signature, stamped by node 3's own TSA serials. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "harness_cluster.h"
#include "kyso/v1/keys.pb-c.h"

#define N 3
#define NO_KEK 2 /* node 3 */
#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define EC KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256
#define SIGNER "keys.signer"

static e2e_cluster CL;

static int setup(void **state) {
  (void)state;
  assert_int_equal(e2e_cluster_new_without_kek(&CL, N, NULL, NO_KEK), 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  e2e_cluster_free(&CL);
  return 0;
}

static int cli(int node, const char *const *args) { return e2e_cluster_cli(&CL, node, args); }

static void lead(int node) {
  int up[N] = {1, 1, 1};
  char id[16];
  int l = e2e_cluster_wait_leader(&CL, up);
  if (l == node) return;
  snprintf(id, sizeof(id), "%d", node + 1);
  const char *to[] = {"cluster", "transfer", id, NULL};
  E2E_EQ("kyso cluster transfer", cli(l, to), 0);
  E2E_EQ("the leadership moved", e2e_cluster_wait_leader(&CL, up), node);
}

static uint64_t pending_on(int i) {
  Kyso__V1__ClusterStatus *s = e2e_cluster_status(&CL, i);
  uint64_t p = s->keys_pending;
  kyso__v1__cluster_status__free_unpacked(s, NULL);
  return p;
}

static int sign_on(int node, const char *rid, Kyso__V1__SignResponse **resp, char *msg,
                   size_t size) {
  static const char doc[] = "Cong van 9/KY: signed with a replicated key";
  return e2e_sign(CL.node[node], E2E_DMS, PERSONAL, SIGNER, 0, (const uint8_t *)doc,
                  sizeof(doc) - 1, rid, 30000, resp, msg, size);
}

static void test_keys_follow_the_kek(void **state) {
  (void)state;
  int up[N] = {1, 1, 1}, with_kek[N] = {1, 1, 0};
  char msg[512];
  for (int i = 0; i < N; i++) e2e_start(CL.node[i], NULL);
  lead(0); /* a node that holds the KEK makes the keys */
  e2e_cluster_provision_tsa(&CL, 0, with_kek);
  e2e_cluster_provision_key(&CL, 0, with_kek, PERSONAL, SIGNER, EC);

  /* Node 3 applied the records but cannot unwrap: pending, and it says why. */
  e2e_cluster_wait_applied(&CL, NO_KEK, e2e_cluster_applied(&CL, 0));
  int64_t end = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
  while (pending_on(NO_KEK) < 2 && e2e_now_ms() < end) e2e_pause_ms(20);
  if (pending_on(NO_KEK) < 2)
    E2E_FAIL("node 3 reports %llu keys pending, want the 2 it cannot unwrap",
             (unsigned long long)pending_on(NO_KEK));
  while (!e2e_file_contains(CL.node[NO_KEK]->stderr_path, "not installed on node 3") &&
         e2e_now_ms() < end)
    e2e_pause_ms(20);
  if (!e2e_file_contains(CL.node[NO_KEK]->stderr_path, "kyso-kek"))
    E2E_FAIL("node 3's log does not name the missing KEK");
  E2E_EQ("node 3 lists the key", e2e_key_ready(CL.node[NO_KEK], PERSONAL, SIGNER), 0);
  Kyso__V1__SignResponse *resp = NULL;
  int st = sign_on(NO_KEK, "keys-1", &resp, msg, sizeof(msg));
  E2E_EQ("Sign on node 3 before its KEK", st, 14 /* UNAVAILABLE */);
  if (strstr(msg, "not yet installed") == NULL)
    E2E_FAIL("node 3's refusal '%s' does not say the key is not installed yet", msg);

  /* The label is taken, whichever node is asked. */
  for (int i = 0; i < N; i++) {
    Kyso__V1__GenerateKeyRequest req = KYSO__V1__GENERATE_KEY_REQUEST__INIT;
    Kyso__V1__KeyRef ref;
    Kyso__V1__KeyInfo *info = NULL;
    e2e_key_ref(&ref, PERSONAL, SIGNER);
    req.key = &ref;
    req.algorithm = EC;
    st = e2e_call(CL.node[i], E2E_OPS, "/kyso.v1.Keys/Generate", &req.base,
                  &kyso__v1__key_info__descriptor, 30000, (ProtobufCMessage **)&info, msg,
                  sizeof(msg));
    E2E_EQ("Keys.Generate of a taken label", st, 6 /* ALREADY_EXISTS */);
  }

  /* The security officer imports the KEK with kysod stopped; at its start
   * node 3 installs what the registry holds. */
  E2E_EQ("node 3 stops", e2e_stop(CL.node[NO_KEK]), 0);
  E2E_EQ("KEK ceremony on node 3", e2e_cluster_import_kek(&CL, NO_KEK), 0);
  e2e_start(CL.node[NO_KEK], NULL);
  e2e_cluster_wait_key(&CL, NO_KEK, PERSONAL, SIGNER);
  e2e_cluster_wait_key(&CL, NO_KEK, KYSO__V1__KEY_ROLE__KEY_ROLE_TSA, "default");
  end = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
  while (pending_on(NO_KEK) != 0 && e2e_now_ms() < end) e2e_pause_ms(20);
  E2E_EQ("keys pending on node 3 after the ceremony", pending_on(NO_KEK), 0);

  /* And it signs with them. */
  lead(NO_KEK);
  for (int attempt = 0; attempt < 50; attempt++) {
    st = sign_on(NO_KEK, "keys-2", &resp, msg, sizeof(msg));
    if (st != 14) break;
    e2e_pause_ms(50);
  }
  if (st != 0) E2E_FAIL("Sign on node 3 after its KEK: status %d (%s)", st, msg);
  e2e *maker = CL.node[0];
  static const char doc[] = "Cong van 9/KY: signed with a replicated key";
  e2e_write_file(e2e_path(maker, "work/k.doc"), doc, sizeof(doc) - 1);
  e2e_write_file(e2e_path(maker, "work/k.doc.p7s"), resp->signature.data, resp->signature.len);
  E2E_EQ("openssl cms -verify of node 3's signature",
         e2e_openssl_verify(maker, e2e_path(maker, "work/k.doc"),
                            e2e_path(maker, "work/k.doc.p7s")),
         0);
  unsigned long long serial = strtoull(resp->timestamp_serial, NULL, 10);
  E2E_EQ("node id in the time-stamp serial", serial >> 48, 3);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  e2e_cluster_check_digests(&CL, up, "at the end");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keys_follow_the_kek),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
