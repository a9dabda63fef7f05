/* cluster/: real libraft over TCP on loopback, real RocksDB archives on
 * disk, several nodes in one process. Waiting is on observed state (the
 * node's own view of leader and applied index), bounded by a deadline. */
#include <arpa/inet.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cluster_internal.h"
#include "testutil.h"

#define MAX_NODES 5
#define WAIT_MS 20000

typedef struct node {
  char *dir, *raft_dir, *archive_dir;
  const char *pki; /* its TLS identity: PKI directory (fixtures/pki.sh), NULL: plain TCP */
  archive *a;
  cluster *c;
} node;

typedef struct fx {
  char *base;
  size_t n;       /* nodes made */
  size_t initial; /* of which the first `initial` bootstrap the cluster; the rest join */
  char raft_addr[MAX_NODES][32], rpc_addr[MAX_NODES][32];
  cluster_member members[MAX_NODES];
  node nodes[MAX_NODES];
  char pki[2][512];       /* the cluster's PKI, and a stranger's */
  uint8_t allowed[1][32]; /* the nodes' certificate (all share one here) */
} fx;

/* A throw-away PKI (root, sub-CA, a server certificate that also allows
 * clientAuth) and the node chain file the transport presents. */
static void make_pki(const char *dir) {
  char cmd[2048];
  snprintf(cmd, sizeof(cmd),
           "bash '%s/pki.sh' init '%s' >/dev/null 2>&1 && cat '%s/server.pem' '%s/chain.pem' > "
           "'%s/node-chain.pem' && cat '%s/root.pem' '%s/chain.pem' > '%s/ca.pem'",
           KYSO_TEST_FIXTURES, dir, dir, dir, dir, dir, dir, dir);
  assert_int_equal(system(cmd), 0);
}

static void cert_sha256(const char *pem, uint8_t out[32]) {
  FILE *fp = fopen(pem, "r");
  assert_non_null(fp);
  X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
  fclose(fp);
  assert_non_null(x);
  unsigned len = 0;
  assert_true(X509_digest(x, EVP_sha256(), out, &len));
  X509_free(x);
}

/* A loopback port nothing listens on right now. */
static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &len), 0);
  close(s);
  return ntohs(sa.sin_port);
}

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void pause_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

static void start_node(fx *f, size_t i) {
  node *nd = &f->nodes[i];
  int join = i >= f->initial;
  kyso_err err = {0};
  nd->a = tu_open(nd->archive_dir, NULL);
  cluster_opts o = {.id = i + 1,
                    .dir = nd->raft_dir,
                    .archive = nd->a,
                    .members = f->members,
                    .member_count = join ? f->n : f->initial,
                    .join = join,
                    .election_ms = 300,
                    .heartbeat_ms = 50};
  char cert[600], key[600], ca[600];
  cluster_tls tls;
  if (nd->pki != NULL) {
    snprintf(cert, sizeof(cert), "%s/node-chain.pem", nd->pki);
    snprintf(key, sizeof(key), "%s/server.key", nd->pki);
    snprintf(ca, sizeof(ca), "%s/ca.pem", f->pki[0]); /* everyone trusts the cluster's CA */
    tls = (cluster_tls){cert, key, ca, (const uint8_t(*)[32])f->allowed, 1};
    o.tls = &tls;
  }
  kyso_status st = cluster_open(&o, &nd->c, &err);
  if (st != KYSO_OK) fail_msg("cluster_open(node %zu): %s", i + 1, err.msg);
}

static void stop_node(fx *f, size_t i) {
  node *nd = &f->nodes[i];
  cluster_close(nd->c);
  nd->c = NULL;
  archive_close(nd->a);
  nd->a = NULL;
}

/* n nodes; with tls, each speaks mutual TLS with the cluster's PKI, except
 * the node numbered stranger (1-based; 0: none), which has another PKI's. */
static fx *make_grown(size_t n, size_t initial, int tls, size_t stranger) {
  fx *f = calloc(1, sizeof(*f));
  f->base = tu_tmpdir();
  f->n = n;
  f->initial = initial;
  if (tls) {
    snprintf(f->pki[0], sizeof(f->pki[0]), "%s/pki", f->base);
    snprintf(f->pki[1], sizeof(f->pki[1]), "%s/stranger-pki", f->base);
    make_pki(f->pki[0]);
    if (stranger) make_pki(f->pki[1]);
    char server[600];
    snprintf(server, sizeof(server), "%s/server.pem", f->pki[0]);
    cert_sha256(server, f->allowed[0]);
  }
  for (size_t i = 0; i < n; i++) {
    snprintf(f->raft_addr[i], sizeof(f->raft_addr[i]), "127.0.0.1:%d", free_port());
    snprintf(f->rpc_addr[i], sizeof(f->rpc_addr[i]), "127.0.0.1:%d", 7000 + (int)i);
    f->members[i] = (cluster_member){i + 1, f->raft_addr[i], f->rpc_addr[i]};
    char name[16];
    snprintf(name, sizeof(name), "n%zu", i + 1);
    node *nd = &f->nodes[i];
    nd->dir = tu_path(f->base, name);
    assert_int_equal(mkdir(nd->dir, 0700), 0);
    nd->raft_dir = tu_path(nd->dir, "raft");
    nd->archive_dir = tu_path(nd->dir, "archive");
    if (tls) nd->pki = f->pki[stranger == i + 1 ? 1 : 0];
  }
  for (size_t i = 0; i < initial; i++) start_node(f, i);
  return f;
}

static fx *make(size_t n, int tls, size_t stranger) { return make_grown(n, n, tls, stranger); }

static int teardown(void **state) {
  fx *f = *state;
  if (f == NULL) return 0;
  for (size_t i = 0; i < f->n; i++) {
    node *nd = &f->nodes[i];
    if (nd->c != NULL) stop_node(f, i);
    free(nd->dir);
    free(nd->raft_dir);
    free(nd->archive_dir);
  }
  tu_rmrf(f->base);
  free(f->base);
  free(f);
  return 0;
}

/* The node every running node agrees leads (index), waiting for one. */
static size_t wait_leader(fx *f) {
  int64_t end = now_ms() + WAIT_MS;
  while (now_ms() < end) {
    uint64_t agreed = 0;
    int ok = 1;
    for (size_t i = 0; i < f->n && ok; i++) {
      if (f->nodes[i].c == NULL) continue;
      cluster_info in;
      cluster_get_info(f->nodes[i].c, &in);
      if (in.leader_id == 0 || (agreed != 0 && in.leader_id != agreed)) ok = 0;
      agreed = in.leader_id;
    }
    if (ok && agreed != 0 && agreed <= f->n && f->nodes[agreed - 1].c != NULL) {
      cluster_info in;
      cluster_get_info(f->nodes[agreed - 1].c, &in);
      if (in.state == CLUSTER_LEADER) return agreed - 1;
    }
    pause_ms(10);
  }
  fail_msg("no leader within %d ms", WAIT_MS);
  return 0;
}

static void wait_applied(node *nd, uint64_t index) {
  int64_t end = now_ms() + WAIT_MS;
  kyso_err err = {0};
  uint64_t have = 0;
  while (now_ms() < end) {
    assert_int_equal(archive_applied_index(nd->a, &have, &err), KYSO_OK);
    if (have >= index) return;
    pause_ms(10);
  }
  fail_msg("applied index %llu, not %llu, after %d ms", (unsigned long long)have,
           (unsigned long long)index, WAIT_MS);
}

/* Prepares document `seed` on nd and submits it there; returns the status. */
static kyso_status put_doc(node *nd, uint32_t seed, uint8_t sha[32], kyso_err *err) {
  char rid[32];
  size_t n = 4096 + seed, len = 0;
  uint8_t *bytes = tu_bytes(n, seed), *result = NULL;
  tu_sha256(bytes, n, sha);
  snprintf(rid, sizeof(rid), "req-%u", seed);
  tu_doc td = {.sha256 = sha, .size = n, .unit = "H37.DN.001", .account = "a1"};
  uint8_t *cmd = tu_cmd_document("p", rid, &td, 1700000000000 + seed, &len);
  kyso_status st = archive_prepare(nd->a, cmd, len, bytes, n, err);
  size_t rl = 0;
  if (st == KYSO_OK) st = cluster_submit_wait(nd->c, cmd, len, WAIT_MS, &result, &rl, err);
  if (st == KYSO_OK) {
    archive__result *r = kyso__store__v1__command_result__unpack(NULL, rl, result);
    assert_non_null(r);
    assert_memory_equal(r->document_sha256.data, sha, 32);
    kyso__store__v1__command_result__free_unpacked(r, NULL);
  }
  free(result);
  free(cmd);
  free(bytes);
  return st;
}

static int has_doc(archive *a, const uint8_t sha[32]) {
  uint8_t *v = NULL;
  size_t n = 0;
  kyso_err err = {0};
  kyso_status st = archive_get_document(a, sha, &v, &n, &err);
  free(v);
  return st == KYSO_OK;
}

static void test_single_node_commits_and_restarts(void **state) {
  fx *f = *state = make(1, 0, 0);
  kyso_err err = {0};
  uint8_t sha[5][32];
  assert_int_equal(wait_leader(f), 0);
  for (uint32_t i = 0; i < 5; i++)
    assert_int_equal(put_doc(&f->nodes[0], i + 1, sha[i], &err), KYSO_OK);
  assert_int_equal(cluster_barrier_wait(f->nodes[0].c, WAIT_MS, &err), KYSO_OK);
  cluster_info in;
  cluster_get_info(f->nodes[0].c, &in);
  assert_int_equal(in.id, 1);
  assert_int_equal(in.member_count, 1);
  assert_true(in.members[0].voter);
  uint64_t applied = 0;
  assert_int_equal(archive_applied_index(f->nodes[0].a, &applied, &err), KYSO_OK);
  assert_true(applied >= 5);
  archive_stats before;
  archive_get_stats(f->nodes[0].a, &before);
  assert_int_equal(before.commands, 5);

  /* Restarted, the log replays what the archive holds already: skipped. */
  stop_node(f, 0);
  start_node(f, 0);
  assert_int_equal(wait_leader(f), 0);
  assert_int_equal(cluster_barrier_wait(f->nodes[0].c, WAIT_MS, &err), KYSO_OK);
  archive_stats after;
  archive_get_stats(f->nodes[0].a, &after);
  assert_int_equal(after.commands, 0);
  for (int i = 0; i < 5; i++) assert_true(has_doc(f->nodes[0].a, sha[i]));
  /* The same request again: answered from its first result. */
  assert_int_equal(put_doc(&f->nodes[0], 1, sha[0], &err), KYSO_OK);
  archive_get_stats(f->nodes[0].a, &after);
  assert_int_equal(after.replayed, 1);
}

static void test_three_nodes_replicate_and_survive_the_leader(void **state) {
  fx *f = *state = make(3, 1, 0);
  kyso_err err = {0};
  uint8_t sha[12][32];
  size_t leader = wait_leader(f);
  size_t follower = (leader + 1) % 3;

  /* A follower names the leader instead of taking the write. */
  uint8_t fsha[32];
  assert_int_equal(put_doc(&f->nodes[follower], 100, fsha, &err), KYSO_UNAVAILABLE);
  assert_non_null(strstr(err.msg, "is not the leader"));
  assert_non_null(strstr(err.msg, f->rpc_addr[leader]));

  for (uint32_t i = 0; i < 6; i++)
    assert_int_equal(put_doc(&f->nodes[leader], i + 1, sha[i], &err), KYSO_OK);
  uint64_t li = 0;
  assert_int_equal(archive_applied_index(f->nodes[leader].a, &li, &err), KYSO_OK);
  /* The leader's applied index covers every acknowledged command; a
   * follower waits for it on a condition, and says how far it got when
   * asked for more than exists. */
  assert_int_equal(cluster_applied_index(f->nodes[leader].c), li);
  assert_int_equal(cluster_applied_wait(f->nodes[follower].c, li, WAIT_MS, &err), KYSO_OK);
  assert_true(cluster_applied_index(f->nodes[follower].c) >= li);
  assert_int_equal(cluster_applied_wait(f->nodes[follower].c, li + 1000, 50, &err),
                   KYSO_DEADLINE_EXCEEDED);
  assert_non_null(strstr(err.msg, "applied the log up to entry"));
  for (size_t i = 0; i < 3; i++) {
    wait_applied(&f->nodes[i], li);
    for (int d = 0; d < 6; d++) assert_true(has_doc(f->nodes[i].a, sha[d]));
  }
  /* Only the leader holds the inline documents' bytes (blob copies to the
   * followers are the next step); the records are everywhere. */
  uint64_t size = 0;
  assert_int_equal(archive_blob_size(f->nodes[leader].a, sha[0], &size, &err), KYSO_OK);

  /* The leader goes away: the other two elect one and go on. */
  stop_node(f, leader);
  size_t next = wait_leader(f);
  assert_int_not_equal(next, leader);
  for (uint32_t i = 6; i < 12; i++)
    assert_int_equal(put_doc(&f->nodes[next], i + 1, sha[i], &err), KYSO_OK);

  /* The old leader comes back as a follower and catches up. */
  start_node(f, leader);
  /* It knows at once what its archive held before the stop. */
  assert_true(cluster_applied_index(f->nodes[leader].c) >= li);
  uint64_t ni = 0;
  assert_int_equal(archive_applied_index(f->nodes[next].a, &ni, &err), KYSO_OK);
  wait_applied(&f->nodes[leader], ni);
  for (int d = 0; d < 12; d++) assert_true(has_doc(f->nodes[leader].a, sha[d]));
  cluster_info in;
  cluster_get_info(f->nodes[leader].c, &in);
  assert_int_equal(in.member_count, 3);
}

/* libraft wants payloads in 8-byte multiples; the frame keeps the Entry's
 * own length and refuses anything else. */
static void test_entry_frames(void **state) {
  (void)state;
  for (size_t len = 0; len < 20; len++) {
    uint8_t entry[20] = {0};
    for (size_t i = 0; i < len; i++) entry[i] = (uint8_t)(0xa0 + i);
    struct raft_buffer b;
    assert_int_equal(cluster__frame(entry, len, &b), 0);
    assert_int_equal(b.len % 8, 0);
    const uint8_t *got = NULL;
    size_t got_len = 99;
    assert_true(cluster__unframe(&b, &got, &got_len));
    assert_int_equal(got_len, len);
    if (len) assert_memory_equal(got, entry, len);
    uint8_t *p = b.base;
    if (b.len > 8 + len) { /* padding that is not zero */
      p[b.len - 1] = 1;
      assert_false(cluster__unframe(&b, &got, &got_len));
      p[b.len - 1] = 0;
    }
    p[7] = (uint8_t)(p[7] + 8); /* a length past the frame */
    assert_false(cluster__unframe(&b, &got, &got_len));
    p[7] = (uint8_t)(p[7] - 8);
    p[0] = 'X'; /* not our magic */
    assert_false(cluster__unframe(&b, &got, &got_len));
    raft_free(b.base);
  }
  struct raft_buffer odd = {.base = "kyE1\0\0\0\0\0", .len = 9};
  const uint8_t *got = NULL;
  size_t got_len = 0;
  assert_false(cluster__unframe(&odd, &got, &got_len));
}

/* After a transfer the nodes' views catch up within a heartbeat. */
static void wait_leader_is(fx *f, size_t want) {
  int64_t end = now_ms() + WAIT_MS;
  size_t got = wait_leader(f);
  while (got != want && now_ms() < end) {
    pause_ms(10);
    got = wait_leader(f);
  }
  assert_int_equal(got, want);
}

static size_t voters(node *nd) {
  cluster_info in;
  cluster_get_info(nd->c, &in);
  size_t v = 0;
  for (size_t i = 0; i < in.member_count; i++) v += in.members[i].voter;
  return v;
}

static void wait_voters(node *nd, size_t want) {
  int64_t end = now_ms() + WAIT_MS;
  while (now_ms() < end && voters(nd) != want) pause_ms(10);
  assert_int_equal(voters(nd), want);
}

/* Grow 3 -> 5 and shrink 5 -> 3 with writes between the changes; hand the
 * leadership over; every write committed on the way is on every member. */
static void test_membership(void **state) {
  fx *f = *state = make_grown(5, 3, 1, 0);
  kyso_err err = {0};
  uint8_t sha[12][32];
  int d = 0;
  size_t leader = wait_leader(f);
  assert_int_equal(put_doc(&f->nodes[leader], 300 + d, sha[d], &err), KYSO_OK);
  d++;
  for (size_t i = 3; i < 5; i++) {
    start_node(f, i);
    kyso_status st = cluster_change_wait(f->nodes[leader].c, CLUSTER_CHANGE_ADD, i + 1,
                                         f->raft_addr[i], f->rpc_addr[i], WAIT_MS, &err);
    if (st != KYSO_OK) fail_msg("adding node %zu: %s", i + 1, err.msg);
    assert_int_equal(put_doc(&f->nodes[leader], 300 + d, sha[d], &err), KYSO_OK);
    d++;
  }
  wait_voters(&f->nodes[leader], 5);
  /* The same id again, and a change on a follower, are refused. */
  assert_int_equal(cluster_change_wait(f->nodes[leader].c, CLUSTER_CHANGE_ADD, 4, "127.0.0.1:1",
                                       NULL, WAIT_MS, &err),
                   KYSO_FAILED_PRECONDITION);
  size_t follower = (leader + 1) % 5;
  assert_int_equal(cluster_change_wait(f->nodes[follower].c, CLUSTER_CHANGE_REMOVE, 5, NULL, NULL,
                                       WAIT_MS, &err),
                   KYSO_UNAVAILABLE);
  assert_non_null(strstr(err.msg, "is not the leader"));
  /* The new nodes hold every record. */
  uint64_t li = 0;
  assert_int_equal(archive_applied_index(f->nodes[leader].a, &li, &err), KYSO_OK);
  wait_applied(&f->nodes[3], li);
  wait_applied(&f->nodes[4], li);
  for (int k = 0; k < d; k++) assert_true(has_doc(f->nodes[4].a, sha[k]));

  /* Leadership to node 4, then shrink back to 1..3 from there. */
  size_t target = 3;
  if (leader == target) target = 4;
  assert_int_equal(cluster_change_wait(f->nodes[leader].c, CLUSTER_CHANGE_TRANSFER, target + 1,
                                       NULL, NULL, WAIT_MS, &err),
                   KYSO_OK);
  wait_leader_is(f, target);
  leader = target;
  for (size_t gone = 3; gone < 5; gone++) {
    if (gone == leader) continue;
    assert_int_equal(cluster_change_wait(f->nodes[leader].c, CLUSTER_CHANGE_REMOVE, gone + 1,
                                         NULL, NULL, WAIT_MS, &err),
                     KYSO_OK);
    stop_node(f, gone); /* out of the configuration: it hears no leader any more */
    assert_int_equal(put_doc(&f->nodes[leader], 300 + d, sha[d], &err), KYSO_OK);
    d++;
  }
  /* The leader leaves last: hand over to node 1 first. */
  assert_int_equal(cluster_change_wait(f->nodes[leader].c, CLUSTER_CHANGE_TRANSFER, 1, NULL,
                                       NULL, WAIT_MS, &err),
                   KYSO_OK);
  size_t old = leader;
  wait_leader_is(f, 0);
  leader = 0;
  assert_int_equal(cluster_change_wait(f->nodes[0].c, CLUSTER_CHANGE_REMOVE, old + 1, NULL, NULL,
                                       WAIT_MS, &err),
                   KYSO_OK);
  stop_node(f, old);
  wait_voters(&f->nodes[0], 3);
  assert_int_equal(put_doc(&f->nodes[0], 300 + d, sha[d], &err), KYSO_OK);
  d++;
  assert_int_equal(archive_applied_index(f->nodes[0].a, &li, &err), KYSO_OK);
  for (size_t i = 0; i < 3; i++) {
    wait_applied(&f->nodes[i], li);
    for (int k = 0; k < d; k++) assert_true(has_doc(f->nodes[i].a, sha[k]));
  }
  assert_null(f->nodes[3].c);
  assert_null(f->nodes[4].c);
}

/* Two of three nodes lost for good: node 1's configuration is rewritten to
 * itself alone (offline), it starts alone, leads and takes writes, and
 * holds everything committed before. */
static void test_recover_from_majority_loss(void **state) {
  fx *f = *state = make(3, 0, 0);
  kyso_err err = {0};
  uint8_t sha[6][32];
  size_t leader = wait_leader(f);
  for (uint32_t i = 0; i < 4; i++)
    assert_int_equal(put_doc(&f->nodes[leader], 400 + i, sha[i], &err), KYSO_OK);
  uint64_t li = 0;
  assert_int_equal(archive_applied_index(f->nodes[leader].a, &li, &err), KYSO_OK);
  wait_applied(&f->nodes[0], li);
  for (size_t i = 0; i < 3; i++) stop_node(f, i);
  /* Without a majority nothing moves; recovery is the way out. */
  assert_int_equal(cluster_recover(f->nodes[0].raft_dir, 1, &f->members[0], 1, 0, &err), KYSO_OK);
  /* A survivor that is not listed cannot recover. */
  assert_int_equal(cluster_recover(f->nodes[0].raft_dir, 2, &f->members[0], 1, 0, &err),
                   KYSO_INVALID_ARGUMENT);
  start_node(f, 0);
  assert_int_equal(wait_leader(f), 0);
  cluster_info in;
  cluster_get_info(f->nodes[0].c, &in);
  assert_int_equal(in.member_count, 1);
  for (uint32_t i = 4; i < 6; i++)
    assert_int_equal(put_doc(&f->nodes[0], 400 + i, sha[i], &err), KYSO_OK);
  for (int k = 0; k < 6; k++) assert_true(has_doc(f->nodes[0].a, sha[k]));
}

/* A node whose certificate does not chain to the cluster's CA takes no
 * part: the other two elect a leader and commit without it, and it never
 * applies an entry. */
static void test_tls_keeps_a_stranger_out(void **state) {
  fx *f = *state = make(3, 1, 3);
  kyso_err err = {0};
  uint8_t sha[4][32];
  int64_t end = now_ms() + WAIT_MS;
  size_t leader = MAX_NODES;
  while (leader == MAX_NODES && now_ms() < end) {
    for (size_t i = 0; i < 2; i++) {
      cluster_info in;
      cluster_get_info(f->nodes[i].c, &in);
      if (in.state == CLUSTER_LEADER) leader = i;
    }
    pause_ms(10);
  }
  assert_true(leader < 2);
  for (uint32_t i = 0; i < 4; i++)
    assert_int_equal(put_doc(&f->nodes[leader], 200 + i, sha[i], &err), KYSO_OK);
  uint64_t li = 0, other = 0;
  assert_int_equal(archive_applied_index(f->nodes[leader].a, &li, &err), KYSO_OK);
  wait_applied(&f->nodes[1 - leader], li);
  assert_int_equal(archive_applied_index(f->nodes[2].a, &other, &err), KYSO_OK);
  assert_int_equal(other, 0);
  cluster_info in;
  cluster_get_info(f->nodes[2].c, &in);
  assert_int_equal(in.leader_id, 0);
  (void)other;
}

static void test_bad_options_are_refused(void **state) {
  (void)state;
  kyso_err err = {0};
  cluster *c = NULL;
  cluster_member m = {1, "127.0.0.1:1", NULL};
  archive *a = (archive *)&m; /* never dereferenced: the options fail first */
  cluster_opts o = {.id = 2, .dir = "/nonexistent", .archive = a, .members = &m,
                    .member_count = 1};
  assert_int_equal(cluster_open(&o, &c, &err), KYSO_INVALID_ARGUMENT);
  assert_non_null(strstr(err.msg, "not among the cluster's members"));
  cluster_member twice[2] = {{1, "127.0.0.1:1", NULL}, {1, "127.0.0.1:2", NULL}};
  o.id = 1;
  o.members = twice;
  o.member_count = 2;
  assert_int_equal(cluster_open(&o, &c, &err), KYSO_INVALID_ARGUMENT);
  assert_non_null(strstr(err.msg, "listed twice"));
  assert_null(c);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* as kysod does: libuv writes to peers that went away */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_entry_frames),
      cmocka_unit_test(test_bad_options_are_refused),
      cmocka_unit_test_teardown(test_single_node_commits_and_restarts, teardown),
      cmocka_unit_test_teardown(test_three_nodes_replicate_and_survive_the_leader, teardown),
      cmocka_unit_test_teardown(test_tls_keeps_a_stranger_out, teardown),
      cmocka_unit_test_teardown(test_membership, teardown),
      cmocka_unit_test_teardown(test_recover_from_majority_loss, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
