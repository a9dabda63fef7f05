/* e2e_cluster: three real kysod processes on loopback form one Raft group
 * (libraft over mutual TLS). Any node serves every call: Put and Sign on a
 * follower are prepared there and proposed by the leader (kyso.v1.Peer/
 * Propose), and are visible at once on the leader and on that follower;
 * Stat, Get and List on a follower are linearizable (the leader's read
 * index): a write the leader just acknowledged is there. A node with
 * [cluster] forward = false refuses writes and linearizable reads naming
 * the leader's address, before any HSM work. Signatures made on either
 * node verify with openssl; the bytes reach every node (copied to a
 * majority, the leader among them, before the commit; fetched by hash
 * after it). kill -9 of the leader while a follower forwards Signs: each
 * of them is acknowledged or UNAVAILABLE, never recorded twice, and its
 * retry with the same request id completes it once; the old leader
 * restarts as a follower and serves every acknowledged record.
 *
 * Keys made on the leader or (forwarded) on a follower reach every
 * node's token through the key registry and sign there.
 *
 * Each node has its own throw-away PKI and token; keys reach the others
 * wrapped under the KEK every token holds. Each node is called with its
 * own clients. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
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
#include "kyso/v1/peer.pb-c.h"

#define N 3
#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define EC KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256
#define UNIT "H37.CL.001"
#define DOCS 8

static e2e_cluster CL;
static e2e **E = CL.node;
static int *rpc_port = CL.rpc_port;
static char ids[8 * DOCS][65];
static int n_ids;

#define now_ms e2e_now_ms
#define pause_ms e2e_pause_ms
#define WAIT_MS E2E_CLUSTER_WAIT_MS

#define NOFWD 1 /* node 2: [cluster] forward = false */

static int setup(void **state) {
  (void)state;
  const char *extra[N] = {NULL, "forward = false\n", NULL};
  assert_int_equal(e2e_cluster_new(&CL, N, N, extra), 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  e2e_cluster_free(&CL);
  return 0;
}

static int wait_leader(const int *up) { return e2e_cluster_wait_leader(&CL, up); }
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

/* Stat of id on node: OK (with its signatures) or the test fails. */
static Kyso__V1__DocumentInfo *stat_ok(int node, const char *id, const char *when) {
  Kyso__V1__DocumentInfo *info = NULL;
  char msg[512];
  int st = e2e_stat_with(E[node]->clients[E2E_ARCH], id, 1, 10000, &info, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Stat %s on node %d %s: status %d (%s)", id, node + 1, when, st, msg);
  return info;
}

/* Archive.List of the unit on node: how many documents it has. */
static size_t list_count(int node) {
  Kyso__V1__ListRequest req = KYSO__V1__LIST_REQUEST__INIT;
  Kyso__V1__ListResponse *resp = NULL;
  char msg[512];
  req.by_case = KYSO__V1__LIST_REQUEST__BY_UNIT;
  req.unit = UNIT;
  req.page_size = 1000;
  int st = e2e_call(E[node], E2E_ARCH, "/kyso.v1.Archive/List", &req.base,
                    &kyso__v1__list_response__descriptor, 10000, (ProtobufCMessage **)&resp, msg,
                    sizeof(msg));
  if (st != 0) E2E_FAIL("List on node %d: status %d (%s)", node + 1, st, msg);
  size_t n = resp->n_documents;
  kyso__v1__list_response__free_unpacked(resp, NULL);
  return n;
}

/* The refusal of a node with forward = false names the leader's address. */
static void check_names_leader(const char *what, int st, const char *msg, int leader) {
  char where[64];
  E2E_EQ(what, st, 14 /* UNAVAILABLE */);
  snprintf(where, sizeof(where), "127.0.0.1:%d", rpc_port[leader]);
  if (strstr(msg, "not the leader") == NULL || strstr(msg, where) == NULL)
    E2E_FAIL("%s: the refusal '%s' does not name the leader at %s", what, msg, where);
}

/* Signs a document on node signer and checks its one signature, read from
 * node reader, with openssl against the PKI of the node that made the key. */
static void sign_and_verify(int signer, int reader, int maker, const char *account,
                            const char *rid) {
  char msg[512], doc[96];
  Kyso__V1__SignResponse *resp = NULL;
  int len = snprintf(doc, sizeof(doc), "Quyet dinh so 12/QD-CL: %s, signed on node %d", rid,
                     signer + 1);
  int st = e2e_sign(E[signer], E2E_DMS, PERSONAL, account, 0, (const uint8_t *)doc, (size_t)len,
                    rid, 30000, &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Sign on node %d: status %d (%s)", signer + 1, st, msg);
  snprintf(ids[n_ids++], 65, "%s", resp->archive_id);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  Kyso__V1__DocumentInfo *info = stat_ok(reader, ids[n_ids - 1], "after a Sign");
  E2E_EQ("signatures on the signed document", info->n_signatures, 1);
  e2e *m = E[maker];
  e2e_write_file(e2e_path(m, "work/%s.doc", rid), doc, (size_t)len);
  e2e_write_file(e2e_path(m, "work/%s.p7s", rid), info->signatures[0]->signature.data,
                 info->signatures[0]->signature.len);
  E2E_EQ("openssl cms -verify of the replicated signature",
         e2e_openssl_verify(m, e2e_path(m, "work/%s.doc", rid), e2e_path(m, "work/%s.p7s", rid)),
         0);
  kyso__v1__document_info__free_unpacked(info, NULL);
}

/* ---- a follower forwarding Signs while the leader is killed ---- */
#define KILL_MAX 512
static struct {
  kyso_client *client;
  pthread_t thread;
  atomic_int stop, acked, hard_errors, unknown; /* unknown: UNAVAILABLE or deadline, retried */
  int tried;                                    /* the writer's own; read after the join */
  char sig[KILL_MAX][65];                       /* signature_id of each acknowledgement */
  char why[600];                                /* the writer's own; read after the join */
} K;

static void kill_request(int k, Kyso__V1__SignRequest *req, Kyso__V1__KeyRef *ref,
                         Kyso__V1__DocumentMetadata *meta, uint8_t *doc, size_t len, char *rid,
                         size_t rid_size) {
  e2e_fill(doc, len, 7000 + (uint64_t)k, 0);
  snprintf(rid, rid_size, "cl-kill-%d", k);
  e2e_key_ref(ref, PERSONAL, "cl.follower");
  meta->unit = "H37.CL.002";
  meta->issue_date = "2026-12-03";
  req->document.data = doc;
  req->document.len = len;
  req->key = ref;
  req->metadata = meta;
  req->request_id = rid;
}

/* Each request is retried with its request id until acknowledged: every
 * outcome the kill can give but "recorded twice" is allowed. */
static void *kill_writer(void *arg) {
  (void)arg;
  for (int k = 0; k < KILL_MAX && !atomic_load(&K.stop); k++) {
    uint8_t doc[1024];
    char rid[32], msg[512];
    Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
    Kyso__V1__KeyRef ref;
    Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
    kill_request(k, &req, &ref, &meta, doc, sizeof(doc), rid, sizeof(rid));
    K.tried = k + 1;
    for (;;) {
      Kyso__V1__SignResponse *resp = NULL;
      int st = e2e_sign_with(K.client, &req, 10000, &resp, msg, sizeof(msg));
      if (st == 0) {
        snprintf(K.sig[k], sizeof(K.sig[k]), "%s", resp->signature_id);
        kyso__v1__sign_response__free_unpacked(resp, NULL);
        atomic_fetch_add(&K.acked, 1);
        break;
      }
      if (st != 14 && st != 4) {
        snprintf(K.why, sizeof(K.why), "%s: status %d: %.500s", rid, st, msg);
        atomic_fetch_add(&K.hard_errors, 1);
        return NULL;
      }
      atomic_fetch_add(&K.unknown, 1);
      if (atomic_load(&K.stop)) return NULL; /* its retry is the main thread's */
      pause_ms(30); /* back-off before a retry */
    }
  }
  return NULL;
}

/* Waits for `more` acknowledgements from the writer. */
static void kill_wait_acks(int more, const char *when) {
  int want = atomic_load(&K.acked) + more;
  int64_t end = now_ms() + 60000;
  while (atomic_load(&K.acked) < want && atomic_load(&K.hard_errors) == 0 && now_ms() < end)
    pause_ms(10);
  if (atomic_load(&K.acked) < want)
    E2E_FAIL("the forwarding writer got %d of %d acknowledgements %s (hard errors %d)",
             atomic_load(&K.acked), want, when, atomic_load(&K.hard_errors));
}

/* Every request the writer sent, retried once more with its request id on
 * node: the same signature as its acknowledgement, and one signature on
 * the document, on node and on reader. */
static void kill_check(int node, int reader) {
  for (int k = 0; k < K.tried; k++) {
    uint8_t doc[1024];
    char rid[32], msg[512];
    Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
    Kyso__V1__KeyRef ref;
    Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
    Kyso__V1__SignResponse *resp = NULL;
    kill_request(k, &req, &ref, &meta, doc, sizeof(doc), rid, sizeof(rid));
    int st = e2e_sign_with(E[node]->clients[E2E_DMS], &req, 30000, &resp, msg, sizeof(msg));
    if (st != 0) E2E_FAIL("retry of %s on node %d: status %d (%s)", rid, node + 1, st, msg);
    if (K.sig[k][0] && strcmp(K.sig[k], resp->signature_id) != 0)
      E2E_FAIL("retry of %s answered signature %s; its acknowledgement said %s", rid,
               resp->signature_id, K.sig[k]);
    char id[65];
    snprintf(id, sizeof(id), "%s", resp->archive_id);
    kyso__v1__sign_response__free_unpacked(resp, NULL);
    int on[2] = {node, reader};
    for (int i = 0; i < 2; i++) {
      Kyso__V1__DocumentInfo *info = stat_ok(on[i], id, "after the kill");
      if (info->n_signatures != 1)
        E2E_FAIL("%s: document %s has %zu signatures on node %d, want 1", rid, id,
                 info->n_signatures, on[i] + 1);
      kyso__v1__document_info__free_unpacked(info, NULL);
    }
  }
}

static void test_cluster_forms_and_replicates(void **state) {
  (void)state;
  int up[N] = {1, 1, 1};
  char msg[512];
  for (int i = 0; i < N; i++) e2e_start(E[i], NULL);
  int leader = wait_leader(up);
  if (leader == NOFWD) { /* forward = false shows only on a follower */
    const char *args[] = {"cluster", "transfer", "1", NULL};
    E2E_EQ("kyso cluster transfer 1",
           e2e_kyso(E[leader], E2E_OPS, e2e_path(E[leader], "work/transfer.txt"), args), 0);
    leader = wait_leader(up);
    E2E_EQ("the leader after the transfer", leader, 0);
  }
  int follower = N - leader - NOFWD; /* the third node: forwards */
  /* One TSA key for the cluster, made on the leader, installed everywhere. */
  e2e_cluster_provision_tsa(&CL, leader, up);

  /* forward = false: writes are refused naming the leader's address, before
   * the HSM signs; so are linearizable reads. */
  int st = put(NOFWD, 999, msg, sizeof(msg));
  check_names_leader("Put on a node with forward = false", st, msg, leader);
  Kyso__V1__SignResponse *resp = NULL;
  e2e_cluster_provision_key(&CL, leader, up, PERSONAL, "cl.nofwd", EC);
  st = e2e_sign(E[NOFWD], E2E_DMS, PERSONAL, "cl.nofwd", 0, (const uint8_t *)"x", 1, NULL, 30000,
                &resp, msg, sizeof(msg));
  check_names_leader("Sign on a node with forward = false", st, msg, leader);

  /* Only a peer may hand the leader a prepared command: a client may not. */
  Kyso__V1__ProposeRequest prop = KYSO__V1__PROPOSE_REQUEST__INIT;
  ProtobufCMessage *answer = NULL;
  prop.command.data = (uint8_t *)"x";
  prop.command.len = 1;
  const e2e_ident clients[] = {E2E_DMS, E2E_OPS, E2E_ARCH};
  for (size_t i = 0; i < sizeof(clients) / sizeof(clients[0]); i++) {
    st = e2e_call(E[leader], clients[i], "/kyso.v1.Peer/Propose", &prop.base,
                  &kyso__v1__propose_reply__descriptor, 10000, &answer, msg, sizeof(msg));
    E2E_EQ("Peer/Propose from a client", st, 7 /* PERMISSION_DENIED */);
  }

  /* Puts on the leader, then the same number on the follower, forwarded. */
  int64_t t0 = now_ms();
  for (uint64_t s = 1; s <= DOCS; s++) put_ok(leader, s);
  int64_t t1 = now_ms();
  for (uint64_t s = DOCS + 1; s <= 2 * DOCS; s++) put_ok(follower, s);
  int64_t t2 = now_ms();
  printf("Put of 6000 bytes, mean of %d: %.1f ms on the leader, %.1f ms forwarded by a "
         "follower\n",
         DOCS, (double)(t1 - t0) / DOCS, (double)(t2 - t1) / DOCS);
  /* A forwarded write is on the leader and the follower once acknowledged. */
  for (int i = DOCS; i < 2 * DOCS; i++) {
    kyso__v1__document_info__free_unpacked(stat_ok(leader, ids[i], "after a forwarded Put"), NULL);
    kyso__v1__document_info__free_unpacked(stat_ok(follower, ids[i], "after its Put there"),
                                           NULL);
  }
  /* A linearizable read on a follower sees what the leader just acknowledged. */
  put_ok(leader, 3 * DOCS);
  kyso__v1__document_info__free_unpacked(stat_ok(follower, ids[n_ids - 1], "read after a write"),
                                         NULL);
  E2E_EQ("List on the follower", list_count(follower), (size_t)n_ids);
  Kyso__V1__DocumentInfo *info = NULL;
  st = e2e_stat_with(E[NOFWD]->clients[E2E_ARCH], ids[0], 0, 10000, &info, msg, sizeof(msg));
  check_names_leader("Stat on a node with forward = false", st, msg, leader);

  /* CAdES-T signatures on the leader and, forwarded, on the follower, with
   * a key made on the leader and one made on the follower (its RecordKey
   * forwarded): each installed on every node, each signing on both. */
  e2e_cluster_provision_key(&CL, leader, up, PERSONAL, "cl.leader", EC);
  sign_and_verify(leader, follower, leader, "cl.leader", "cl-sign-1");
  sign_and_verify(follower, leader, leader, "cl.leader", "cl-sign-2");
  e2e_cluster_provision_key(&CL, follower, up, PERSONAL, "cl.follower", EC);
  sign_and_verify(follower, leader, follower, "cl.follower", "cl-sign-3");
  sign_and_verify(leader, follower, follower, "cl.follower", "cl-sign-4");

  /* Every record reaches every node (the same state digest), and the
   * bytes the two nodes that read them (Get is linearizable on the
   * follower: its bytes may still be on their way, its record is not). */
  e2e_cluster_check_digests(&CL, up, "after the first writes");
  for (int i = 0; i < n_ids; i++) {
    wait_bytes(leader, ids[i]);
    wait_bytes(follower, ids[i]);
  }

  /* kill -9 of the leader while the follower forwards Signs. */
  K.client = e2e_client_open(E[follower], E2E_DMS);
  assert_int_equal(pthread_create(&K.thread, NULL, kill_writer, NULL), 0);
  kill_wait_acks(3, "before the kill");
  int64_t killed = now_ms();
  e2e_kill9(E[leader]);
  up[leader] = 0;
  int next = wait_leader(up);
  if (next == leader) E2E_FAIL("the killed node is still named leader");
  kill_wait_acks(3, "after the kill");
  printf("forwarded Signs resumed %lld ms after the leader was killed\n",
         (long long)(now_ms() - killed));
  atomic_store(&K.stop, 1);
  pthread_join(K.thread, NULL);
  kyso_client_close(K.client);
  if (atomic_load(&K.hard_errors) != 0) E2E_FAIL("a forwarded Sign failed: %s", K.why);
  printf("%d forwarded Signs, %d attempts answered UNAVAILABLE or past their deadline\n", K.tried,
         atomic_load(&K.unknown));
  kill_check(follower, next);

  for (uint64_t s = 4 * DOCS + 1; s <= 5 * DOCS; s++) put_ok(next, s);
  /* Every document the dead leader acknowledged, bytes included, is served
   * by the new one. */
  for (int i = 0; i < n_ids; i++) wait_bytes(next, ids[i]);

  /* The old leader restarts as a follower; its linearizable reads wait
   * until it caught up, so it serves every record at once. */
  e2e_start(E[leader], NULL);
  up[leader] = 1;
  E2E_EQ("one leader after the restart", wait_leader(up), next);
  for (int i = 0; i < n_ids; i++)
    kyso__v1__document_info__free_unpacked(stat_ok(leader, ids[i], "after its restart"), NULL);
  for (int i = 0; i < n_ids; i++) wait_bytes(leader, ids[i]);
  e2e_cluster_check_digests(&CL, up, "after the restart");
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
