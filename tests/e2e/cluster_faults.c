/* e2e_cluster_faults: three kysod nodes under signing load from 4 clients
 * (CAdES-T, archived; each request retried with the same request id,
 * following the leader a refusal names, until acknowledged), through: kill
 * -9 of the leader, kill -9 of a follower, SIGSTOP then SIGCONT of the
 * leader, and kill -9 of every node at once followed by a restart. After
 * each fault the cluster serves again (the time until the next
 * acknowledgement is printed). At the end, on every node: every
 * acknowledged document is present with exactly the one signature its
 * request produced, its bytes hash to its id, and the signature verifies
 * with openssl; the nodes' state digests are equal; no time-stamp serial
 * repeats, and per node, sorted by serial, genTime never decreases.
 *
 * Keys are per node here (each node's own token and PKI, the same label),
 * so a signature verifies against the CA of the node that made it. */
#include <pthread.h>
#include <signal.h>
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
#define WRITERS 4
#define MAX_ACKS 20000
#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define EC KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256
#define ACCOUNT "cl.fault"

static e2e_cluster CL;

typedef struct ack {
  char archive_id[65], signature_id[65], request_id[40], ts_serial[32], ts_time[40];
  int writer;
  uint64_t seed;
} ack;

static struct {
  kyso_client *client[WRITERS][N];
  pthread_t thread[WRITERS];
  atomic_int stop;
  atomic_int acked;
  atomic_int hard_errors;
  atomic_int retries;
  atomic_int leader_hint;
  pthread_mutex_t mu;
  ack acks[MAX_ACKS];
  char last_error[600];
  char last_retry_of[N][600]; /* why the last retry on each node was needed */
} L = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* What a writer needs to open its own client to a node again. */
static struct {
  char target[64], ca[320], cert[320], key[320];
} O[N];

static kyso_client *open_client(int node) {
  kyso_client_opts o = {.target = O[node].target,
                        .ca_file = O[node].ca,
                        .cert_file = O[node].cert,
                        .key_file = O[node].key,
                        .server_name = "localhost"};
  kyso_client *c = NULL;
  kyso_err err = {0};
  return kyso_client_open(&o, &c, &err) == KYSO_OK ? c : NULL;
}

static int setup(void **state) {
  (void)state;
  const char *extra[N] = {"stale_reads = true\n", "stale_reads = true\n", "stale_reads = true\n"};
  assert_int_equal(e2e_cluster_new(&CL, N, N, extra), 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (int w = 0; w < WRITERS; w++)
    for (int i = 0; i < N; i++) kyso_client_close(L.client[w][i]);
  e2e_cluster_free(&CL);
  return 0;
}

static void doc_bytes(int writer, uint64_t seed, uint8_t *buf, size_t len) {
  e2e_fill(buf, len, (uint64_t)writer << 32 | seed, 0);
}


static void *writer(void *arg) {
  int w = (int)(intptr_t)arg;
  int node = atomic_load(&L.leader_hint);
  int64_t unreachable_since[N] = {0};
  for (uint64_t seed = 1; !atomic_load(&L.stop); seed++) {
    uint8_t doc[2048];
    char rid[40], msg[512];
    doc_bytes(w, seed, doc, sizeof(doc));
    snprintf(rid, sizeof(rid), "fault-%d-%llu", w, (unsigned long long)seed);
    Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
    Kyso__V1__KeyRef ref;
    Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
    e2e_key_ref(&ref, PERSONAL, ACCOUNT);
    meta.unit = "H37.FT.001";
    meta.issue_date = "2026-12-03";
    req.document.data = doc;
    req.document.len = sizeof(doc);
    req.key = &ref;
    req.metadata = &meta;
    req.request_id = rid;
    for (;;) {
      Kyso__V1__SignResponse *resp = NULL;
      int st = e2e_sign_with(L.client[w][node], &req, 5000, &resp, msg, sizeof(msg));
      if (st == 0) {
        pthread_mutex_lock(&L.mu);
        int k = atomic_load(&L.acked);
        if (k < MAX_ACKS) {
          ack *a = &L.acks[k];
          snprintf(a->archive_id, sizeof(a->archive_id), "%s", resp->archive_id);
          snprintf(a->signature_id, sizeof(a->signature_id), "%s", resp->signature_id);
          snprintf(a->request_id, sizeof(a->request_id), "%s", rid);
          snprintf(a->ts_serial, sizeof(a->ts_serial), "%s", resp->timestamp_serial);
          snprintf(a->ts_time, sizeof(a->ts_time), "%s", resp->timestamp_time);
          a->writer = w;
          a->seed = seed;
          atomic_store(&L.acked, k + 1);
        }
        pthread_mutex_unlock(&L.mu);
        kyso__v1__sign_response__free_unpacked(resp, NULL);
        break;
      }
      if (atomic_load(&L.stop)) return NULL; /* an unacknowledged last request: not counted */
      /* UNAVAILABLE (no leader, a node down, the leadership lost) and a
       * deadline (a stopped node) are retried with the same request id. */
      if (st != 14 && st != 4) {
        atomic_fetch_add(&L.hard_errors, 1);
        pthread_mutex_lock(&L.mu);
        snprintf(L.last_error, sizeof(L.last_error), "%s: status %d: %.500s", rid, st, msg);
        pthread_mutex_unlock(&L.mu);
        break;
      }
      atomic_fetch_add(&L.retries, 1);
      /* gRPC 1.51 channels were seen to stay in "failed to connect" after
       * every node was killed at once, while a new channel connects at
       * once: a client that cannot connect for a second opens a new one. */
      if (strstr(msg, "failed to connect") != NULL) {
        int64_t now = e2e_now_ms();
        if (unreachable_since[node] == 0) unreachable_since[node] = now;
        if (now - unreachable_since[node] > 1000) {
          kyso_client *fresh = open_client(node);
          if (fresh != NULL) {
            kyso_client_close(L.client[w][node]);
            L.client[w][node] = fresh;
          }
          unreachable_since[node] = 0;
        }
      } else {
        unreachable_since[node] = 0;
      }
      pthread_mutex_lock(&L.mu);
      snprintf(L.last_retry_of[node], sizeof(L.last_retry_of[node]), "status %d: %.400s", st, msg);
      pthread_mutex_unlock(&L.mu);
      int k = e2e_cluster_named_leader(&CL, msg);
      node = k >= 0 && k != node ? k : (node + 1) % N;
      e2e_pause_ms(30); /* back-off before a retry */
    }
  }
  return NULL;
}

/* Waits for `more` acknowledgements; returns the milliseconds it took. */
static int64_t wait_acks(int more, const char *after) {
  int64_t start = e2e_now_ms();
  int want = atomic_load(&L.acked) + more;
  while (atomic_load(&L.acked) < want && atomic_load(&L.hard_errors) == 0) {
    if (e2e_now_ms() - start > 60000) E2E_FAIL("no %d acknowledgements within 60 s %s", more, after);
    e2e_pause_ms(10);
  }
  if (atomic_load(&L.hard_errors) != 0) {
    pthread_mutex_lock(&L.mu);
    E2E_FAIL("a writer failed %s: %s", after, L.last_error);
  }
  return e2e_now_ms() - start;
}

/* The time from a fault to the first acknowledgement after it. */
static void recovered(const char *fault, int64_t at) {
  int before = atomic_load(&L.acked);
  while (atomic_load(&L.acked) == before) {
    if (atomic_load(&L.hard_errors) != 0) {
      pthread_mutex_lock(&L.mu);
      E2E_FAIL("a writer failed after %s: %s", fault, L.last_error);
    }
    if (e2e_now_ms() - at > 60000) {
      for (int i = 0; i < N; i++) {
        Kyso__V1__ClusterStatus *s = e2e_cluster_status(&CL, i);
        fprintf(stderr, "node %d: %s term %llu leader %llu applied %llu\n", i + 1, s->state,
                (unsigned long long)s->term, (unsigned long long)s->leader_id,
                (unsigned long long)s->applied_index);
        kyso__v1__cluster_status__free_unpacked(s, NULL);
      }
      fprintf(stderr, "retries %d\n", atomic_load(&L.retries));
      for (int i = 0; i < N; i++)
        fprintf(stderr, "  last on node %d: %s\n", i + 1, L.last_retry_of[i]);
      E2E_FAIL("nothing acknowledged within 60 s after %s", fault);
    }
    e2e_pause_ms(5);
  }
  printf("recovery after %s: first acknowledgement %lld ms later\n", fault,
         (long long)(e2e_now_ms() - at));
  wait_acks(20, fault);
}

static int cmp_serial(const void *a, const void *b) {
  const ack *x = *(const ack *const *)a, *y = *(const ack *const *)b;
  unsigned long long sx = strtoull(x->ts_serial, NULL, 10), sy = strtoull(y->ts_serial, NULL, 10);
  return sx < sy ? -1 : sx > sy;
}

static void check_timestamps(int n) {
  ack **by = malloc((size_t)n * sizeof(*by));
  for (int i = 0; i < n; i++) by[i] = &L.acks[i];
  qsort(by, (size_t)n, sizeof(*by), cmp_serial);
  for (int i = 0; i < n; i++) {
    if (by[i]->ts_serial[0] == '\0') E2E_FAIL("%s carries no time-stamp", by[i]->request_id);
    if (i > 0 && strcmp(by[i]->ts_serial, by[i - 1]->ts_serial) == 0)
      E2E_FAIL("time-stamp serial %s issued twice (%s, %s)", by[i]->ts_serial,
               by[i - 1]->request_id, by[i]->request_id);
    /* The top 16 bits of a serial are the issuing node's id: within one
     * node, genTime never goes back as serials grow. */
    unsigned long long s = strtoull(by[i]->ts_serial, NULL, 10);
    unsigned long long p = i > 0 ? strtoull(by[i - 1]->ts_serial, NULL, 10) : 0;
    if (i > 0 && s >> 48 == p >> 48 && strcmp(by[i]->ts_time, by[i - 1]->ts_time) < 0)
      E2E_FAIL("node %llu: serial %s has genTime %s, before serial %s's %s", s >> 48,
               by[i]->ts_serial, by[i]->ts_time, by[i - 1]->ts_serial, by[i - 1]->ts_time);
  }
  free(by);
}

static void check_node(int node, int n) {
  e2e *e = CL.node[node];
  int verified = 0;
  for (int i = 0; i < n; i++) {
    const ack *a = &L.acks[i];
    Kyso__V1__DocumentInfo *info = NULL;
    char msg[512];
    int st = e2e_stat_with(e->clients[E2E_ARCH], a->archive_id, 1, 10000, &info, msg, sizeof(msg));
    if (st != 0)
      E2E_FAIL("node %d: acknowledged %s (%s) missing: status %d (%s)", node + 1, a->archive_id,
               a->request_id, st, msg);
    /* One request, one signature: a retry never signed twice. */
    if (info->n_signatures != 1 || strcmp(info->signatures[0]->signature_id, a->signature_id) != 0)
      E2E_FAIL("node %d: %s has %zu signatures (want exactly %s)", node + 1, a->request_id,
               info->n_signatures, a->signature_id);
    /* The signature is byte-identical on every node (same signature_id, the
     * SHA-256 of its CMS): openssl verifies each one once, on node 1. */
    if (node == 0) {
      uint8_t doc[2048];
      doc_bytes(a->writer, a->seed, doc, sizeof(doc));
      e2e_write_file(e2e_path(e, "work/f.doc"), doc, sizeof(doc));
      e2e_write_file(e2e_path(e, "work/f.p7s"), info->signatures[0]->signature.data,
                     info->signatures[0]->signature.len);
      if (e2e_sh(e2e_path(e, "work/f.log"),
                 "openssl cms -verify -cades -binary -content '%s' -inform DER -in '%s' "
                 "-CAfile '%s' -purpose any -out /dev/null",
                 e2e_path(e, "work/f.doc"), e2e_path(e, "work/f.p7s"), CL.bundle) != 0)
        E2E_FAIL("node %d: openssl cms -verify refuses the signature of %s", node + 1,
                 a->request_id);
      verified++;
    }
    kyso__v1__document_info__free_unpacked(info, NULL);
    /* The bytes, fetched by hash if this node did not take the document. */
    int64_t end = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
    for (;;) {
      e2e_got g;
      memset(&g, 0, sizeof(g));
      st = e2e_get_with(e->clients[E2E_ARCH], a->archive_id, 0, NULL, 10000, &g, msg, sizeof(msg));
      int same = st == 0 && strcmp(g.sha256, a->archive_id) == 0;
      e2e_got_free(&g);
      if (same) break;
      if (st == 0) E2E_FAIL("node %d serves other bytes for %s", node + 1, a->archive_id);
      if (e2e_now_ms() > end)
        E2E_FAIL("node %d: no bytes for %s: status %d (%s)", node + 1, a->archive_id, st, msg);
      e2e_pause_ms(20);
    }
  }
  printf("node %d: %d documents present with one signature each, bytes checked, %d signatures "
         "verified by openssl\n",
         node + 1, n, verified);
}


static void test_faults_under_signing_load(void **state) {
  (void)state;
  int up[N] = {1, 1, 1};
  for (int i = 0; i < N; i++) e2e_start(CL.node[i], NULL);
  int leader = e2e_cluster_wait_leader(&CL, up);
  /* One key for every node: made on the leader, replicated through the log. */
  e2e_cluster_provision_tsa(&CL, leader, up);
  e2e_cluster_provision_key(&CL, leader, up, PERSONAL, ACCOUNT, EC);
  for (int i = 0; i < N; i++) {
    e2e *e = CL.node[i];
    snprintf(O[i].target, sizeof(O[i].target), "127.0.0.1:%d", CL.rpc_port[i]);
    snprintf(O[i].ca, sizeof(O[i].ca), "%s/root.pem", e->pki);
    snprintf(O[i].cert, sizeof(O[i].cert), "%s/client.pem", e->pki);
    snprintf(O[i].key, sizeof(O[i].key), "%s/client.key", e->pki);
  }
  for (int w = 0; w < WRITERS; w++)
    for (int i = 0; i < N; i++)
      if ((L.client[w][i] = open_client(i)) == NULL) E2E_FAIL("cannot open a client to node %d", i + 1);
  atomic_store(&L.leader_hint, leader);
  for (int w = 0; w < WRITERS; w++)
    assert_int_equal(pthread_create(&L.thread[w], NULL, writer, (void *)(intptr_t)w), 0);
  wait_acks(40, "at the start");

  /* 1. kill -9 of the leader, then it comes back. */
  int64_t at = e2e_now_ms();
  e2e_kill9(CL.node[leader]);
  up[leader] = 0;
  recovered("kill -9 of the leader", at);
  e2e_start(CL.node[leader], NULL);
  up[leader] = 1;
  leader = e2e_cluster_wait_leader(&CL, up);

  /* 2. kill -9 of a follower. */
  int follower = (leader + 1) % N;
  at = e2e_now_ms();
  e2e_kill9(CL.node[follower]);
  up[follower] = 0;
  recovered("kill -9 of a follower", at);
  e2e_start(CL.node[follower], NULL);
  up[follower] = 1;
  leader = e2e_cluster_wait_leader(&CL, up);

  /* 3. The leader stops (SIGSTOP) long enough to be deposed, then resumes. */
  at = e2e_now_ms();
  assert_int_equal(kill(CL.node[leader]->pid, SIGSTOP), 0);
  up[leader] = 0;
  recovered("SIGSTOP of the leader", at);
  assert_int_equal(kill(CL.node[leader]->pid, SIGCONT), 0);
  up[leader] = 1;
  leader = e2e_cluster_wait_leader(&CL, up);
  wait_acks(20, "after SIGCONT");

  /* 4. Every node killed at once, then all restarted. */
  at = e2e_now_ms();
  for (int i = 0; i < N; i++) e2e_kill9(CL.node[i]);
  for (int i = 0; i < N; i++) e2e_start(CL.node[i], NULL);
  recovered("kill -9 of every node and a restart", at);
  leader = e2e_cluster_wait_leader(&CL, up);

  atomic_store(&L.stop, 1);
  for (int w = 0; w < WRITERS; w++) pthread_join(L.thread[w], NULL);
  int n = atomic_load(&L.acked);
  printf("%d signatures acknowledged, %d retries, %d other errors\n", n, atomic_load(&L.retries),
         atomic_load(&L.hard_errors));
  if (atomic_load(&L.hard_errors) != 0) E2E_FAIL("a writer failed: %s", L.last_error);

  /* Every node holds the same state. */
  uint64_t idx = e2e_cluster_applied(&CL, leader);
  for (int i = 0; i < N; i++) e2e_cluster_wait_applied(&CL, i, idx);
  e2e_cluster_check_digests(&CL, up, "after the faults");

  check_timestamps(n);
  for (int i = 0; i < N; i++) check_node(i, n);
  for (int i = 0; i < N; i++) E2E_EQ("clean stop", e2e_stop(CL.node[i]), 0);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_faults_under_signing_load),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
