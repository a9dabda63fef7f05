/* kysod — the kyso node: loads its configuration, opens the HSM, and serves
 * the kyso.v1 API over gRPC with TLS until SIGTERM or SIGINT. */
#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyso/limits.h"
#include "kyso/log.h"
#include "kysod.h"

static const rpc_method methods[] = {
    {"/kyso.v1.Signer/Sign", "sign", kysod__signer_sign, RPC_UNARY},
    {"/kyso.v1.Keys/Generate", "keys.generate", kysod__keys_generate, RPC_UNARY},
    {"/kyso.v1.Keys/CreateCsr", "keys.csr", kysod__keys_create_csr, RPC_UNARY},
    {"/kyso.v1.Keys/ImportCertificate", "keys.import", kysod__keys_import_certificate,
     RPC_UNARY},
    {"/kyso.v1.Keys/List", "keys.list", kysod__keys_list, RPC_UNARY},
    {"/kyso.v1.Archive/Put", "archive.put", kysod__archive_put, RPC_CLIENT_STREAMING},
    {"/kyso.v1.Archive/Get", "archive.read", kysod__archive_get, RPC_SERVER_STREAMING},
    {"/kyso.v1.Archive/Stat", "archive.read", kysod__archive_stat, RPC_UNARY},
    {"/kyso.v1.Archive/List", "archive.read", kysod__archive_list, RPC_UNARY},
    {"/kyso.v1.Archive/Scrub", "archive.scrub", kysod__archive_scrub, RPC_SERVER_STREAMING},
    {"/kyso.v1.Archive/Backup", "archive.backup", kysod__archive_backup, RPC_UNARY},
    {"/kyso.v1.TimeStamp/Stamp", "timestamp", kysod__timestamp_stamp, RPC_UNARY},
    {"/kyso.v1.Cluster/Status", "cluster.status", kysod__cluster_status, RPC_UNARY},
    {"/kyso.v1.Cluster/Add", "cluster.admin", kysod__cluster_add, RPC_UNARY},
    {"/kyso.v1.Cluster/Remove", "cluster.admin", kysod__cluster_remove, RPC_UNARY},
    {"/kyso.v1.Cluster/Transfer", "cluster.admin", kysod__cluster_transfer, RPC_UNARY},
    {"/kyso.v1.Cluster/Digest", "cluster.digest", kysod__cluster_digest, RPC_UNARY},
    {"/kyso.v1.Peer/HasBlob", "peer.blob", kysod__peer_has_blob, RPC_UNARY},
    {"/kyso.v1.Peer/PutBlob", "peer.blob", kysod__peer_put_blob, RPC_CLIENT_STREAMING},
    {"/kyso.v1.Peer/GetBlob", "peer.blob", kysod__peer_get_blob, RPC_SERVER_STREAMING},
    /* Serving on any node: a follower's calls to the leader. */
    {"/kyso.v1.Peer/Propose", "peer.serve", kysod__peer_propose, RPC_UNARY},
    {"/kyso.v1.Peer/ReadIndex", "peer.serve", kysod__peer_read_index, RPC_UNARY},
    {"/grpc.health.v1.Health/Check", "health", kysod__health_check, RPC_UNARY},
    /* Checkpoint catch-up (svc_peer_checkpoint.c) */
    {"/kyso.v1.PeerCheckpoint/OpenCheckpoint", "peer.checkpoint", kysod__peer_open_checkpoint,
     RPC_UNARY},
    {"/kyso.v1.PeerCheckpoint/GetCheckpointFile", "peer.checkpoint",
     kysod__peer_get_checkpoint_file, RPC_SERVER_STREAMING},
    {"/kyso.v1.PeerCheckpoint/CloseCheckpoint", "peer.checkpoint", kysod__peer_close_checkpoint,
     RPC_UNARY},
};

static void usage(FILE *f) {
  fprintf(f,
          "Usage: kysod --config FILE [--check]\n"
          "\n"
          "Runs one kyso node: signs documents with keys held in a PKCS#11 HSM,\n"
          "time-stamps them (RFC 3161) and serves the kyso.v1 gRPC API over TLS;\n"
          "optionally also the RFC 3161 HTTP endpoint ([tsa] http_listen).\n"
          "\n"
          "  -c, --config FILE   configuration file (INI; see README.md, Configuration)\n"
          "      --check         load the configuration, open the HSM, then exit\n"
          "  -h, --help          show this help\n"
          "  -V, --version       show the version\n"
          "\n"
          "kysod prints 'kysod: ready on ADDRESS port N' on standard output once it\n"
          "serves (followed by ' tsa-http port M' when the HTTP endpoint is on).\n"
          "SIGTERM or SIGINT stop it gracefully: in-flight calls finish first.\n"
          "A cluster node that fell behind a Raft snapshot stops the same way and\n"
          "starts itself again, fetching a peer's archive checkpoint first.\n"
          "Exit status: 0 after a clean stop, 1 on a runtime failure, 2 on a\n"
          "configuration, PIN or HSM problem at start.\n");
}

static kyso_status load_client_store(kysod *d, kyso_err *err) {
  if (d->cfg.client_ca[0] == '\0') return KYSO_OK;
  d->client_store = X509_STORE_new();
  if (d->client_store == NULL || !X509_STORE_load_file(d->client_store, d->cfg.client_ca)) {
    kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot load client CA file '%s'", d->cfg.client_ca);
    return kyso_err_add_openssl(err);
  }
  return rpc_peer_cache_new(RPC_PEER_CACHE_ENTRIES, d->cfg.peer_cache_seconds, &d->verified, err);
}

static kyso_status open_hsm(kysod *d, kyso_err *err) {
  char pin[KYSO_MAX_PIN + 1];
  kyso_status st = kyso_config_read_pin(&d->cfg, pin, sizeof(pin), err);
  if (st != KYSO_OK) goto out;
  hsm_opts ho = {.module_path = d->cfg.hsm_module,
                 .token_label = d->cfg.hsm_token,
                 .pin = pin,
                 .max_sessions = d->cfg.hsm_sessions};
  st = hsm_open(&ho, &d->hsm, err);
out:
  kyso_wipe(pin, sizeof(pin));
  return st;
}

static kyso_status open_archive(kysod *d, kyso_err *err) {
  char dir[KYSO_PATH_MAX + 16];
  snprintf(dir, sizeof(dir), "%s/archive", d->cfg.data_dir);
  archive_opts ao = {.dir = dir,
                     .max_document = d->cfg.max_document,
                     .group_commit_max = d->cfg.group_commit_max};
  kyso_status st = archive_open(&ao, &d->archive, err);
  if (st != KYSO_OK) kyso_err_wrap(err, "opening the archive in '%s'", dir);
  return st;
}

/* A cluster when [cluster] lists members: the archive's commands then go
 * through the Raft log in data_dir/raft (or raft_dir). */
/* Who may speak Raft to this node: this node's own certificate and every
 * [caller.NAME] with role peer (by fingerprint), chaining to peer_ca. */
static kyso_status raft_tls(const kyso_config *cfg, uint8_t (*allowed)[32], cluster_tls *tls,
                            kyso_err *err) {
  size_t n = 0;
  uint8_t own[32];
  unsigned len = 0;
  tls->ca_file = cfg->peer_ca[0] ? cfg->peer_ca : cfg->client_ca;
  if (tls->ca_file[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "a cluster needs [cluster] peer_ca or [tls] client_ca: its nodes "
                     "authenticate each other with their certificates");
  FILE *f = fopen(cfg->tls_cert, "r");
  X509 *x = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f != NULL) fclose(f);
  int ok = x != NULL && X509_digest(x, EVP_sha256(), own, &len) && len == 32;
  X509_free(x);
  if (!ok)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot read the certificate '%s'",
                     cfg->tls_cert);
  memcpy(allowed[n++], own, 32);
  for (size_t i = 0; i < cfg->caller_count && n < KYSO_MAX_CLUSTER_MEMBERS + 1; i++)
    if (cfg->callers[i].roles & KYSO_ROLE_PEER) memcpy(allowed[n++], cfg->callers[i].cert_sha256, 32);
  if (cfg->member_count > 1 && n == 1)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "list every other node as [caller.NAME] with its certificate's fingerprint "
                     "and roles = peer: nodes accept Raft and document traffic only from them");
  tls->cert_file = cfg->tls_cert;
  tls->key_file = cfg->tls_key;
  tls->allowed = (const uint8_t(*)[32])allowed;
  tls->n_allowed = n;
  return KYSO_OK;
}

static kyso_status open_cluster(kysod *d, kyso_err *err) {
  const kyso_config *cfg = &d->cfg;
  cluster_member m[KYSO_MAX_CLUSTER_MEMBERS];
  char dir[KYSO_PATH_MAX + 16];
  uint8_t allowed[KYSO_MAX_CLUSTER_MEMBERS + 1][32];
  cluster_tls tls;
  if (cfg->member_count == 0) return KYSO_OK;
  kyso_status st = raft_tls(cfg, allowed, &tls, err);
  if (st != KYSO_OK) return st;
  for (size_t i = 0; i < cfg->member_count; i++)
    m[i] = (cluster_member){cfg->members[i].id, cfg->members[i].raft, cfg->members[i].rpc};
  if (cfg->raft_dir[0])
    snprintf(dir, sizeof(dir), "%s", cfg->raft_dir);
  else
    snprintf(dir, sizeof(dir), "%s/raft", cfg->data_dir);
  cluster_opts co = {.id = cfg->node_id,
                     .dir = dir,
                     .archive = d->archive,
                     .members = m,
                     .member_count = cfg->member_count,
                     .join = cfg->cluster_join,
                     .election_ms = cfg->election_ms,
                     .heartbeat_ms = cfg->heartbeat_ms,
                     .snapshot_threshold = cfg->snapshot_threshold,
                     .snapshot_trailing = cfg->snapshot_trailing,
                     .tls = &tls,
                     .applied = kysod__on_applied,
                     .applied_ctx = d,
                     .checkpoint_needed = kysod__on_checkpoint_needed,
                     .checkpoint_ctx = d};
  const char *delay = getenv("KYSO_TEST_PROPOSE_DELAY_MS");
  if (delay != NULL && atoi(delay) > 0) {
    co.test_propose_delay_ms = (unsigned)atoi(delay);
    kyso_log(KYSO_LOG_WARN, "test mode: every write waits %u ms before it is proposed "
             "(KYSO_TEST_PROPOSE_DELAY_MS); never set this in production",
             co.test_propose_delay_ms);
  }
  st = kysod__peers_open(d, err);
  if (st != KYSO_OK) return st;
  /* Before the log replays: the applied hook queues keys for it. */
  if ((st = kysod__key_sync_open(d, err)) != KYSO_OK) return st;
  st = cluster_open(&co, &d->cluster, err);
  if (st != KYSO_OK) kyso_err_wrap(err, "joining the cluster");
  return st;
}

static kyso_status open_signer(kysod *d, kyso_err *err) {
  char cert_dir[KYSO_PATH_MAX + 16];
  snprintf(cert_dir, sizeof(cert_dir), "%s/certs", d->cfg.data_dir);
  return signer_open(d->hsm, cert_dir, &d->signer, err);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'k'},
      {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  const char *config_path = NULL;
  int check_only = 0, opt, rc = 2, restart = 0;
  kysod d;
  kyso_err err = {0};
  rpc_server *srv = NULL;
  kyso_log_level level;
  sigset_t sigs;

  memset(&d, 0, sizeof(d));
  while ((opt = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
    switch (opt) {
      case 'c': config_path = optarg; break;
      case 'k': check_only = 1; break;
      case 'h': usage(stdout); return 0;
      case 'V': printf("kysod %s\n", KYSO_VERSION); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (config_path == NULL || optind != argc) {
    usage(stderr);
    return 2;
  }

  /* Signals are taken by sigwait in this thread only; every thread started
   * from here on inherits the mask. */
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGUSR1); /* restart_for_checkpoint was set */
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);
  umask(077);

  if (kyso_config_load(config_path, &d.cfg, &err) != KYSO_OK ||
      kyso_config_check_server(&d.cfg, &err) != KYSO_OK ||
      kyso_log_parse_level(d.cfg.log_level, &level, &err) != KYSO_OK)
    goto fail;
  kyso_log_set_level(level);
  const char *delay = getenv("KYSO_TEST_SIGN_DELAY_MS");
  if (delay != NULL && *delay) {
    d.test_sign_delay_ms = atoi(delay);
    kyso_log(KYSO_LOG_WARN, "test fault injection active: every Sign is delayed %d ms "
             "(KYSO_TEST_SIGN_DELAY_MS); never set this in production", d.test_sign_delay_ms);
  }
  if (load_client_store(&d, &err) != KYSO_OK) goto fail;
  if (open_hsm(&d, &err) != KYSO_OK) goto fail;
  if (open_signer(&d, &err) != KYSO_OK) goto fail;
  if (!check_only && d.cfg.member_count > 0 && kysod__checkpoint_catch_up(&d, &err) != KYSO_OK)
    goto fail;
  if (open_archive(&d, &err) != KYSO_OK) goto fail;
  if (kysod__checkpoints_open(&d, &err) != KYSO_OK) goto fail;
  if (kysod__tsa_open(&d, &err) != KYSO_OK) goto fail;
  if (check_only) {
    printf("kysod: configuration '%s' is valid and token '%s' opened\n", config_path,
           d.cfg.hsm_token);
    rc = 0;
    goto out;
  }

  if (kysod__completions_start(&d, &err) != KYSO_OK) goto fail;
  if (open_cluster(&d, &err) != KYSO_OK) goto fail;
  if (kysod__collector_start(&d, &err) != KYSO_OK) goto fail;

  rpc_server_opts so = {.listen_addr = d.cfg.listen,
                        .tls_cert_file = d.cfg.tls_cert,
                        .tls_key_file = d.cfg.tls_key,
                        .client_ca_file = d.cfg.client_ca[0] ? d.cfg.client_ca : NULL,
                        .cq_threads = d.cfg.cq_threads,
                        .worker_threads = d.cfg.worker_threads,
                        .max_message = d.cfg.max_message,
                        .max_call_ms = (int64_t)d.cfg.max_call_seconds * 1000,
                        .peer_cache_seconds = d.cfg.peer_cache_seconds,
                        .auth = kysod__authorize};
  if (rpc_server_start(&so, methods, sizeof(methods) / sizeof(methods[0]), &d, &srv, &err) !=
      KYSO_OK)
    goto fail;
  if (kysod__tsa_http_start(&d, &err) != KYSO_OK) goto fail;
  atomic_store(&d.serving, 1);
  kyso_log(KYSO_LOG_INFO, "serving on %s (port %d), token '%s', %u workers", d.cfg.listen,
           rpc_server_port(srv), d.cfg.hsm_token, d.cfg.worker_threads);
  if (d.tsa_http != NULL) {
    kyso_log(KYSO_LOG_INFO, "RFC 3161 HTTP endpoint on %s (port %d)", d.cfg.tsa_http_listen,
             http_server_port(d.tsa_http));
    printf("kysod: ready on %s port %d tsa-http port %d\n", d.cfg.listen, rpc_server_port(srv),
           http_server_port(d.tsa_http));
  } else {
    printf("kysod: ready on %s port %d\n", d.cfg.listen, rpc_server_port(srv));
  }
  fflush(stdout);

  int sig = 0;
  /* A SIGUSR1 without the flag (one left pending across a restart) is not a stop. */
  while (sigwait(&sigs, &sig) != 0 ||
         (sig == SIGUSR1 && !atomic_load(&d.restart_for_checkpoint))) {
  }
  restart = sig == SIGUSR1; /* a SIGTERM stops it: the record waits for the next start */
  if (restart)
    kyso_log(KYSO_LOG_INFO, "restarting to fetch a peer's archive checkpoint: stopping, "
             "in-flight calls finish first (up to %d ms)", d.cfg.shutdown_grace_ms);
  else
    kyso_log(KYSO_LOG_INFO, "signal %d: stopping, in-flight calls finish first (up to %d ms)",
             sig, d.cfg.shutdown_grace_ms);
  atomic_store(&d.serving, 0);
  http_server_stop(d.tsa_http);
  d.tsa_http = NULL;
  rpc_server_shutdown(srv, d.cfg.shutdown_grace_ms);
  srv = NULL;
  kyso_log(KYSO_LOG_INFO, "stopped");
  rc = 0;
  goto out;

fail:
  if (atomic_load(&d.restart_for_checkpoint)) {
    /* Raft refused to load a snapshot the archive lacks: restart and fetch it. */
    kyso_log(KYSO_LOG_WARN, "restarting to fetch a peer's archive checkpoint (%s)", err.msg);
    restart = 1;
    rc = 0;
    goto out;
  }
  fprintf(stderr, "kysod: %s\n", err.msg);
  if (err.code == KYSO_UNAUTHENTICATED)
    fprintf(stderr, "kysod: not retrying: a PKCS#11 token locks after repeated wrong PINs. "
                    "Fix the PIN source ([hsm] pin_file or pin_env) and start kysod again.\n");
  rc = 2;
out:
  rpc_server_shutdown(srv, 0);
  kysod__tsa_close(&d);
  kysod__collector_stop(&d);
  kysod__peers_stop(&d);
  kysod__key_sync_stop(&d);
  cluster_close(d.cluster); /* fails what is still queued: after it, nothing completes */
  kysod__completions_stop(&d);
  kysod__key_sync_close(&d);
  kysod__peers_close(&d);
  archive_close(d.archive);
  signer_close(d.signer);
  hsm_close(d.hsm);
  rpc_peer_cache_free(d.verified);
  X509_STORE_free(d.client_store);
  kysod__checkpoints_close(&d);
  kyso_config_free(&d.cfg);
  if (restart) {
    /* Everything is closed; the same pid, arguments and standard streams go on. */
    fflush(NULL);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "kysod: cannot restart itself (%s); start it again to fetch the checkpoint\n",
            strerror(errno));
    rc = 1;
  }
  return rc;
}
