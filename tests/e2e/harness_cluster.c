/* e2e harness: clusters of kysod processes on loopback. Each node keeps its
 * own throw-away PKI and token (e2e_new); the nodes trust each other's CAs
 * and list each other's server certificates as callers with role peer;
 * every token gets one shared KEK, so keys replicate through the log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "harness_cluster.h"

int64_t e2e_now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void e2e_pause_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

static int append(char *buf, size_t size, const char *text) {
  size_t used = strlen(buf), n = strlen(text);
  if (used + n >= size) return -1;
  memcpy(buf + used, text, n + 1);
  return 0;
}

int e2e_cluster_import_kek(e2e_cluster *cl, int i) {
  e2e *e = cl->node[i];
  char log[320];
  snprintf(log, sizeof(log), "%s/kek.log", e->dir);
  int rc = e2e_sh(log,
                  "SOFTHSM2_CONF='%s' '%s' import-kek --module /usr/lib/softhsm/libsofthsm2.so "
                  "--token '%s' --so-pin-file '%s' --user-pin-file '%s' --kek-file '%s'",
                  e->hsm_conf, KYSO_E2E_TOKEN_TOOL, e->token, e->so_pin_file, e->pin_file,
                  cl->kek_file);
  if (rc != 0) {
    fprintf(stderr, "e2e: the KEK ceremony failed on node %d:\n", i + 1);
    e2e_sh(NULL, "cat '%s' >&2", log);
  }
  return rc;
}

/* One throw-away KEK into every node's token (but node `skip`) with
 * kyso-token, the security officer's tool, as deploy/cluster.sh does. The
 * file stays in node 1's temp directory for e2e_cluster_import_kek (a real
 * ceremony destroys it). */
static int kek_ceremony(e2e_cluster *cl, int skip) {
  snprintf(cl->kek_file, sizeof(cl->kek_file), "%s/kek.bin", cl->node[0]->dir);
  if (e2e_sh(NULL, "umask 077; openssl rand -out '%s' 32", cl->kek_file) != 0) return -1;
  for (int i = 0; i < cl->n; i++)
    if (i != skip && e2e_cluster_import_kek(cl, i) != 0) return -1;
  return 0;
}

void e2e_cluster_wait_key(e2e_cluster *cl, int i, Kyso__V1__KeyRole role, const char *name) {
  int64_t end = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
  while (e2e_now_ms() < end) {
    if (e2e_key_ready(cl->node[i], role, name)) return;
    e2e_pause_ms(20);
  }
  E2E_FAIL("node %d did not install key '%s' with its certificate within %d ms", i + 1, name,
           E2E_CLUSTER_WAIT_MS);
}

void e2e_cluster_provision_key(e2e_cluster *cl, int on, const int *up, Kyso__V1__KeyRole role,
                               const char *name, Kyso__V1__KeyAlgorithm alg) {
  e2e_provision_key(cl->node[on], role, name, alg);
  for (int i = 0; i < cl->n; i++) {
    if (!up[i]) continue;
    e2e_cluster_wait_key(cl, i, role, name);
    /* Installed, so nothing is left pending there (Cluster.Status says so). */
    int64_t end = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
    uint64_t pending = 0;
    for (;;) {
      Kyso__V1__ClusterStatus *s = e2e_cluster_status(cl, i);
      pending = s->keys_pending;
      kyso__v1__cluster_status__free_unpacked(s, NULL);
      if (pending == 0 || e2e_now_ms() > end) break;
      e2e_pause_ms(20);
    }
    if (pending != 0)
      E2E_FAIL("node %d still reports %llu keys pending after installing '%s'", i + 1,
               (unsigned long long)pending, name);
  }
}

void e2e_cluster_provision_tsa(e2e_cluster *cl, int on, const int *up) {
  e2e_cluster_provision_key(cl, on, up, KYSO__V1__KEY_ROLE__KEY_ROLE_TSA, cl->node[on]->tsa_name,
                            KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
  for (int i = 0; i < cl->n; i++) cl->node[i]->tsa_provisioned = 1;
}

int e2e_cluster_new(e2e_cluster *cl, int n, int initial, const char *const *extra) {
  return e2e_cluster_new_at(cl, n, initial, extra, NULL);
}

static int cluster_new(e2e_cluster *cl, int n, int initial, const char *const *extra,
                       const char *const *hosts, int no_kek);

int e2e_cluster_new_at(e2e_cluster *cl, int n, int initial, const char *const *extra,
                       const char *const *hosts) {
  return cluster_new(cl, n, initial, extra, hosts, -1);
}

int e2e_cluster_new_without_kek(e2e_cluster *cl, int n, const char *const *extra, int node) {
  return cluster_new(cl, n, n, extra, NULL, node);
}

static int cluster_new(e2e_cluster *cl, int n, int initial, const char *const *extra,
                       const char *const *hosts, int no_kek) {
  char members_initial[1024] = "", members_all[1024] = "", callers[4096] = "";
  memset(cl, 0, sizeof(*cl));
  if (n < 1 || n > E2E_CLUSTER_MAX || initial < 1 || initial > n) return -1;
  cl->n = n;
  for (int i = 0; i < n; i++) {
    char line[128];
    const char *h = hosts != NULL ? hosts[i] : "127.0.0.1";
    cl->raft_port[i] = hosts != NULL ? 7601 : e2e_free_port(); /* own namespaces: fixed ports */
    cl->rpc_port[i] = hosts != NULL ? 7443 : e2e_free_port();
    snprintf(line, sizeof(line), "member = %d %s:%d %s:%d\n", i + 1, h, cl->raft_port[i], h,
             cl->rpc_port[i]);
    if ((i < initial && append(members_initial, sizeof(members_initial), line) != 0) ||
        append(members_all, sizeof(members_all), line) != 0)
      return -1;
  }
  for (int i = 0; i < n; i++) {
    if ((cl->node[i] = e2e_new()) == NULL) return -1;
    if (hosts != NULL) snprintf(cl->node[i]->host, sizeof(cl->node[i]->host), "%s", hosts[i]);
    cl->node[i]->no_auto_tsa = 1; /* one TSA key for the cluster: e2e_cluster_provision_tsa */
  }
  if (kek_ceremony(cl, no_kek) != 0) return -1;
  snprintf(cl->bundle, sizeof(cl->bundle), "%s/peers-ca.pem", cl->node[0]->dir);
  for (int i = 0; i < n; i++) {
    if (e2e_sh(NULL, "cat '%s/root.pem' '%s/chain.pem' >> '%s'", cl->node[i]->pki,
               cl->node[i]->pki, cl->bundle) != 0)
      return -1;
    char fp_file[600], line[256];
    snprintf(fp_file, sizeof(fp_file), "%s/fp.txt", cl->node[i]->dir);
    if (e2e_sh(NULL,
               "openssl x509 -in '%s/server.pem' -noout -fingerprint -sha256 | cut -d= -f2 | "
               "tr -d '\\n' > '%s'",
               cl->node[i]->pki, fp_file) != 0)
      return -1;
    size_t len = 0;
    char *fp = (char *)e2e_read_file(fp_file, &len);
    if (fp == NULL) return -1;
    snprintf(line, sizeof(line), "\n[caller.node%d]\nfingerprint = %s\nroles = peer\n", i + 1, fp);
    free(fp);
    if (append(callers, sizeof(callers), line) != 0) return -1;
  }
  for (int i = 0; i < n; i++) {
    char text[8192];
    snprintf(text, sizeof(text),
             "\n[server]\nnode_id = %d\nlisten = %s:%d\n\n[tls]\nclient_ca = %s\n"
             "\n[cluster]\n%speer_ca = %s\n%selection_ms = 600\nheartbeat_ms = 60\n%s%s\n%s",
             i + 1, cl->node[i]->host, cl->rpc_port[i], cl->bundle,
             i < initial ? members_initial : members_all, cl->bundle,
             hosts != NULL ? "peer_server_name = localhost\n" : "",
             i < initial ? "" : "join = true\n",
             extra != NULL && extra[i] != NULL ? extra[i] : "", callers);
    e2e_config_append(cl->node[i], text);
  }
  return 0;
}

void e2e_cluster_free(e2e_cluster *cl) {
  for (int i = 0; i < cl->n; i++) e2e_free(cl->node[i]);
  memset(cl, 0, sizeof(*cl));
}

Kyso__V1__ClusterStatus *e2e_cluster_status(e2e_cluster *cl, int i) {
  Kyso__V1__ClusterStatusRequest req = KYSO__V1__CLUSTER_STATUS_REQUEST__INIT;
  Kyso__V1__ClusterStatus *s = NULL;
  char msg[256];
  int st = e2e_call(cl->node[i], E2E_OPS, "/kyso.v1.Cluster/Status", &req.base,
                    &kyso__v1__cluster_status__descriptor, 5000, (ProtobufCMessage **)&s, msg,
                    sizeof(msg));
  if (st != 0) E2E_FAIL("Cluster.Status on node %d: status %d (%s)", i + 1, st, msg);
  return s;
}

int e2e_cluster_wait_leader(e2e_cluster *cl, const int *up) {
  int64_t start = e2e_now_ms();
  while (e2e_now_ms() - start < E2E_CLUSTER_WAIT_MS) {
    uint64_t agreed = 0;
    int ok = 1;
    for (int i = 0; i < cl->n && ok; i++) {
      if (!up[i]) continue;
      Kyso__V1__ClusterStatus *s = e2e_cluster_status(cl, i);
      if (s->leader_id == 0 || (agreed && s->leader_id != agreed)) ok = 0;
      agreed = s->leader_id;
      kyso__v1__cluster_status__free_unpacked(s, NULL);
    }
    if (ok && agreed >= 1 && agreed <= (uint64_t)cl->n && up[agreed - 1]) {
      Kyso__V1__ClusterStatus *s = e2e_cluster_status(cl, (int)agreed - 1);
      int leads = strcmp(s->state, "leader") == 0;
      kyso__v1__cluster_status__free_unpacked(s, NULL);
      if (leads) {
        printf("leader: node %llu after %lld ms\n", (unsigned long long)agreed,
               (long long)(e2e_now_ms() - start));
        return (int)agreed - 1;
      }
    }
    e2e_pause_ms(20);
  }
  E2E_FAIL("no leader agreed within %d ms", E2E_CLUSTER_WAIT_MS);
}

uint64_t e2e_cluster_applied(e2e_cluster *cl, int i) {
  Kyso__V1__ClusterStatus *s = e2e_cluster_status(cl, i);
  uint64_t a = s->applied_index;
  kyso__v1__cluster_status__free_unpacked(s, NULL);
  return a;
}

void e2e_cluster_wait_applied(e2e_cluster *cl, int i, uint64_t index) {
  int64_t end = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
  uint64_t have = 0;
  while (e2e_now_ms() < end) {
    if ((have = e2e_cluster_applied(cl, i)) >= index) return;
    e2e_pause_ms(20);
  }
  E2E_FAIL("node %d applied %llu, not %llu, within %d ms", i + 1, (unsigned long long)have,
           (unsigned long long)index, E2E_CLUSTER_WAIT_MS);
}

int e2e_cluster_voters(e2e_cluster *cl, int i) {
  Kyso__V1__ClusterStatus *s = e2e_cluster_status(cl, i);
  int v = 0;
  for (size_t k = 0; k < s->n_members; k++) v += s->members[k]->voter;
  kyso__v1__cluster_status__free_unpacked(s, NULL);
  return v;
}

int e2e_cluster_named_leader(const e2e_cluster *cl, const char *msg) {
  const char *p = strstr(msg, "the leader is node ");
  if (p == NULL) return -1;
  int k = atoi(p + strlen("the leader is node "));
  return k >= 1 && k <= cl->n ? k - 1 : -1;
}

Kyso__V1__ClusterDigest *e2e_cluster_digest(e2e_cluster *cl, int i) {
  Kyso__V1__ClusterDigestRequest req = KYSO__V1__CLUSTER_DIGEST_REQUEST__INIT;
  Kyso__V1__ClusterDigest *d = NULL;
  char msg[256];
  int st = e2e_call(cl->node[i], E2E_OPS, "/kyso.v1.Cluster/Digest", &req.base,
                    &kyso__v1__cluster_digest__descriptor, 30000, (ProtobufCMessage **)&d, msg,
                    sizeof(msg));
  if (st != 0) E2E_FAIL("Cluster.Digest on node %d: status %d (%s)", i + 1, st, msg);
  return d;
}

void e2e_cluster_check_digests(e2e_cluster *cl, const int *up, const char *when) {
  Kyso__V1__ClusterDigest *d[E2E_CLUSTER_MAX] = {0};
  int64_t end = e2e_now_ms() + E2E_CLUSTER_WAIT_MS;
  int first = -1;
  for (;;) { /* the same applied index everywhere (a barrier may still be applying) */
    int same = 1;
    first = -1;
    for (int i = 0; i < cl->n; i++) {
      if (!up[i]) continue;
      d[i] = e2e_cluster_digest(cl, i);
      if (first < 0) first = i;
      same = same && d[i]->applied_index == d[first]->applied_index;
    }
    if (same || e2e_now_ms() > end) break;
    for (int i = 0; i < cl->n; i++)
      if (d[i] != NULL) kyso__v1__cluster_digest__free_unpacked(d[i], NULL), d[i] = NULL;
    e2e_pause_ms(50);
  }
  for (int i = 0; i < cl->n; i++) {
    if (d[i] == NULL || i == first) continue;
    E2E_EQ("applied index", d[i]->applied_index, d[first]->applied_index);
    E2E_EQ("records", d[i]->records, d[first]->records);
    E2E_STREQ("state digest", d[i]->sha256, d[first]->sha256);
  }
  printf("%s: state digest %s over %llu records at index %llu on every node\n", when,
         d[first]->sha256, (unsigned long long)d[first]->records,
         (unsigned long long)d[first]->applied_index);
  for (int i = 0; i < cl->n; i++)
    if (d[i] != NULL) kyso__v1__cluster_digest__free_unpacked(d[i], NULL);
}

int e2e_cluster_cli(e2e_cluster *cl, int node, const char *const *args) {
  const char *out = e2e_path(cl->node[node], "work/cli.txt");
  int rc = e2e_kyso(cl->node[node], E2E_OPS, out, args);
  if (rc != 0) {
    size_t n = 0;
    char *text = (char *)e2e_read_file(out, &n);
    fprintf(stderr, "kyso %s %s: exit %d: %s\n", args[0], args[1], rc, text ? text : "");
    free(text);
  }
  return rc;
}
