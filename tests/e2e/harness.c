/* kyso end-to-end harness: temp dir, PKI, SoftHSM token, kysod lifecycle and
 * typed calls. Process and file helpers: harness_util.c; keys and signing:
 * harness_keys.c. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kyso/util.h"

extern char **environ;

/* Bound on kysod's start (ASan builds and a cold SoftHSM are slow). */
#define READY_TIMEOUT_MS 120000

static const char *const ident_cert[E2E_IDENTITIES] = {"client", "operator", "archivist", NULL,
                                                       "stranger", "client"};

e2e *e2e__current; /* for failure reports */

static void random_hex(char *out, size_t bytes) {
  uint8_t r[32];
  if (bytes > sizeof(r) || RAND_bytes(r, (int)bytes) != 1) abort();
  kyso_hex(r, bytes, out);
}

/* SHA-256 fingerprint (hex) of a PEM certificate, as kysod's [caller.*] takes it. */
static int cert_fingerprint(const char *pem_path, char out[65]) {
  FILE *f = fopen(pem_path, "r");
  X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  uint8_t md[32];
  unsigned n = 0;
  int ok = x != NULL && X509_digest(x, EVP_sha256(), md, &n) == 1 && n == 32;
  if (ok) kyso_hex(md, 32, out);
  X509_free(x);
  if (f) fclose(f);
  return ok ? 0 : -1;
}

static int concat_files(const char *out, const char *a, const char *b) {
  size_t la, lb;
  uint8_t *da = e2e_read_file(a, &la), *db = e2e_read_file(b, &lb);
  int rc = -1;
  FILE *f = da && db ? fopen(out, "wb") : NULL;
  if (f) {
    rc = fwrite(da, 1, la, f) == la && fwrite(db, 1, lb, f) == lb ? 0 : -1;
    if (fclose(f) != 0) rc = -1;
  }
  free(da);
  free(db);
  return rc;
}

void e2e_write_pin(e2e *e, const char *pin) {
  int fd = open(e->pin_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, pin, strlen(pin)) != (ssize_t)strlen(pin) || write(fd, "\n", 1) != 1)
    E2E_FAIL("cannot write PIN file %s: %s", e->pin_file, strerror(errno));
  fchmod(fd, 0600);
  close(fd);
}

static int write_config(e2e *e) {
  static const struct { const char *name, *cert, *roles; } callers[] = {
      {"dms", "client", "service"}, {"ops", "operator", "operator"},
      {"arch", "archivist", "archivist"}};
  FILE *f = fopen(e->config, "w");
  if (f == NULL) return -1;
  fprintf(f, "[server]\nlisten = 127.0.0.1:0\ndata_dir = %s/data\nworker_threads = 4\n"
             "shutdown_grace_ms = 5000\n\n", e->dir);
  fprintf(f, "[tls]\ncert = %s/tls/server-chain.pem\nkey = %s/server.key\n"
             "client_ca = %s/tls/client-ca.pem\n\n", e->dir, e->pki, e->dir);
  fprintf(f, "[hsm]\nmodule = /usr/lib/softhsm/libsofthsm2.so\ntoken = %s\npin_file = %s\n"
             "sessions = 4\n", e->token, e->pin_file);
  for (size_t i = 0; i < sizeof(callers) / sizeof(callers[0]); i++) {
    char fp[65];
    if (cert_fingerprint(e2e_path(e, "pki/%s.pem", callers[i].cert), fp) != 0) {
      fclose(f);
      return -1;
    }
    fprintf(f, "\n[caller.%s]\nfingerprint = %s\nroles = %s\n", callers[i].name, fp,
            callers[i].roles);
  }
  return fclose(f);
}

e2e *e2e_new(void) {
  e2e *e = calloc(1, sizeof(*e));
  char sopin[33];
  if (e == NULL) return NULL;
  e->stdout_fd = -1;
  e->netns_fd = -1;
  snprintf(e->host, sizeof(e->host), "127.0.0.1");
  snprintf(e->dir, sizeof(e->dir), "/tmp/kyso-e2e-XXXXXX");
  if (mkdtemp(e->dir) == NULL) {
    fprintf(stderr, "e2e: mkdtemp: %s\n", strerror(errno));
    free(e);
    return NULL;
  }
  e2e__current = e;
  snprintf(e->pki, sizeof(e->pki), "%s/pki", e->dir);
  snprintf(e->config, sizeof(e->config), "%s/kysod.ini", e->dir);
  snprintf(e->tsa_name, sizeof(e->tsa_name), "default");
  snprintf(e->pin_file, sizeof(e->pin_file), "%s/hsm.pin", e->dir);
  snprintf(e->hsm_conf, sizeof(e->hsm_conf), "%s/hsm/softhsm2.conf", e->dir);
  snprintf(e->token, sizeof(e->token), "e2e-");
  random_hex(e->token + 4, 4);
  random_hex(e->pin, 8);
  random_hex(sopin, 8);
  const char *fx = e2e_fixtures_dir();
  char log[300];
  snprintf(log, sizeof(log), "%s/fixtures.log", e->dir);
  if (mkdir(e2e_path(e, "data"), 0700) != 0 || mkdir(e2e_path(e, "tls"), 0700) != 0 ||
      mkdir(e2e_path(e, "work"), 0700) != 0 ||
      e2e_sh(log, "set -e; '%s/pki.sh' init '%s' && '%s/pki.sh' client '%s' stranger", fx,
             e->pki, fx, e->pki) != 0 ||
      e2e_sh(log, "'%s/softhsm.sh' '%s/hsm' '%s' '%s' '%s' >/dev/null", fx, e->dir, e->token,
             e->pin, sopin) != 0 ||
      concat_files(e2e_path(e, "tls/server-chain.pem"), e2e_path(e, "pki/server.pem"),
                   e2e_path(e, "pki/chain.pem")) != 0 ||
      concat_files(e2e_path(e, "tls/client-ca.pem"), e2e_path(e, "pki/root.pem"),
                   e2e_path(e, "pki/chain.pem")) != 0 ||
      write_config(e) != 0) {
    fprintf(stderr, "e2e: setting up %s failed; fixture log:\n", e->dir);
    e2e_sh(NULL, "cat '%s' >&2", log);
    setenv("KYSO_KEEP_TMP", "1", 1);
    e2e_free(e);
    return NULL;
  }
  snprintf(e->so_pin_file, sizeof(e->so_pin_file), "%s/hsm.so.pin", e->dir);
  e2e_write_file(e->so_pin_file, sopin, strlen(sopin));
  chmod(e->so_pin_file, 0600);
  kyso_wipe(sopin, sizeof(sopin));
  e2e_write_pin(e, e->pin);
  return e;
}

static void close_clients(e2e *e) {
  for (int i = 0; i < E2E_IDENTITIES; i++) {
    kyso_client_close(e->clients[i]);
    e->clients[i] = NULL;
  }
}

static void reap(e2e *e, int *wstatus) {
  int st = 0;
  while (waitpid(e->pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (wstatus) *wstatus = st;
  e->pid = 0;
  if (e->stdout_fd >= 0) close(e->stdout_fd);
  e->stdout_fd = -1;
}

void e2e_free(e2e *e) {
  if (e == NULL) return;
  close_clients(e);
  if (e->pid > 0) {
    kill(e->pid, SIGKILL);
    reap(e, NULL);
  }
  if (e->stdout_fd >= 0) close(e->stdout_fd);
  if (e->netns_fd >= 0) close(e->netns_fd);
  if (getenv("KYSO_KEEP_TMP") != NULL)
    fprintf(stderr, "e2e: keeping %s (KYSO_KEEP_TMP)\n", e->dir);
  else
    e2e_sh(NULL, "rm -rf '%s'", e->dir);
  if (e2e__current == e) e2e__current = NULL;
  kyso_wipe(e->pin, sizeof(e->pin));
  free(e);
}

/* fork + execve of kysod; stdout to a pipe, stderr to a fresh file. */
static int spawn_kysod(e2e *e, const char *const *extra_env) {
  size_t n = 0, k = 0, extra = 0;
  while (environ[n]) n++;
  while (extra_env && extra_env[extra]) extra++;
  char **envp = calloc(n + extra + 2, sizeof(char *));
  char conf_var[sizeof(e->hsm_conf) + 16];
  int pfd[2] = {-1, -1}, efd = -1, rc = -1;
  snprintf(conf_var, sizeof(conf_var), "SOFTHSM2_CONF=%s", e->hsm_conf);
  if (envp == NULL) goto out;
  /* extra_env overrides: getenv() finds the first of two equal names. */
  for (size_t i = 0; i < n; i++) {
    int overridden = strncmp(environ[i], "SOFTHSM2_CONF=", 14) == 0;
    for (size_t j = 0; j < extra && !overridden; j++) {
      const char *eq = strchr(extra_env[j], '=');
      size_t name = eq ? (size_t)(eq - extra_env[j]) + 1 : 0;
      overridden = name > 0 && strncmp(environ[i], extra_env[j], name) == 0;
    }
    if (!overridden) envp[k++] = environ[i];
  }
  envp[k++] = conf_var;
  for (size_t i = 0; i < extra; i++) envp[k++] = (char *)extra_env[i];
  snprintf(e->stderr_path, sizeof(e->stderr_path), "%s/kysod-%d.stderr", e->dir, ++e->starts);
  efd = open(e->stderr_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (efd < 0 || pipe2(pfd, O_CLOEXEC) != 0) goto out;
  const char *kysod = e2e_kysod_path();
  char *const argv[] = {(char *)kysod, "--config", e->config, NULL};
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) goto out;
  if (pid == 0) { /* only async-signal-safe calls from here */
    /* A test killed by ctest's TIMEOUT must not leave kysod running. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
    if (dup2(pfd[1], STDOUT_FILENO) < 0 || dup2(efd, STDERR_FILENO) < 0) _exit(127);
    if (e->netns_fd >= 0 && setns(e->netns_fd, CLONE_NEWNET) != 0) _exit(126);
    execve(kysod, argv, envp);
    _exit(127);
  }
  e->pid = pid;
  e->stdout_fd = pfd[0];
  pfd[0] = -1;
  rc = 0;
out:
  if (rc != 0) fprintf(stderr, "e2e: cannot spawn kysod: %s\n", strerror(errno));
  if (pfd[0] >= 0) close(pfd[0]);
  if (pfd[1] >= 0) close(pfd[1]);
  if (efd >= 0) close(efd);
  free(envp);
  return rc;
}

/* Reads kysod's stdout until the ready line (returns the port), EOF (0) or
 * the bound (-1). */
static int wait_ready(e2e *e) {
  char buf[4096];
  size_t len = 0;
  int64_t end = kyso_now_ms() + READY_TIMEOUT_MS;
  for (;;) {
    char *nl;
    while ((nl = memchr(buf, '\n', len)) != NULL) {
      *nl = '\0';
      const char *p = strstr(buf, " port ");
      const char *h = strstr(buf, " tsa-http port ");
      e->tsa_http_port = h ? atoi(h + 15) : 0;
      if (strncmp(buf, "kysod: ready on ", 16) == 0 && p) return atoi(p + 6);
      len -= (size_t)(nl + 1 - buf);
      memmove(buf, nl + 1, len);
    }
    struct pollfd pfd = {.fd = e->stdout_fd, .events = POLLIN};
    int64_t left = end - kyso_now_ms();
    if (left <= 0) return -1;
    int r = poll(&pfd, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    if (len == sizeof(buf)) len = 0; /* an absurdly long line: drop it */
    ssize_t got = read(e->stdout_fd, buf + len, sizeof(buf) - len);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return 0;
    len += (size_t)got;
  }
}

static int open_clients(e2e *e) {
  char target[96];
  snprintf(target, sizeof(target), "%s:%d", e->host, e->port);
  for (int i = 0; i < E2E_IDENTITIES; i++) {
    kyso_err err = {0};
    char cert[320], key[320];
    kyso_client_opts o = {.target = target, .ca_file = e2e_path(e, "pki/root.pem"),
                          .server_name = "localhost",
                          .max_message = i == E2E_DMS_BIG ? 16u << 20 : 0};
    if (ident_cert[i]) {
      snprintf(cert, sizeof(cert), "%s/%s.pem", e->pki, ident_cert[i]);
      snprintf(key, sizeof(key), "%s/%s.key", e->pki, ident_cert[i]);
      o.cert_file = cert;
      o.key_file = key;
    }
    if (kyso_client_open(&o, &e->clients[i], &err) != KYSO_OK)
      E2E_FAIL("kyso_client_open(%s): %s", ident_cert[i] ? ident_cert[i] : "anonymous", err.msg);
  }
  return 0;
}

int e2e_start_expect_exit(e2e *e, const char *const *extra_env, int *wstatus) {
  if (spawn_kysod(e, extra_env) != 0) E2E_FAIL("spawning kysod failed");
  int port = wait_ready(e);
  if (port == 0) {
    reap(e, wstatus);
    return 0;
  }
  if (port < 0) E2E_FAIL("kysod neither got ready nor exited within %d ms", READY_TIMEOUT_MS);
  e->port = port;
  e2e_stop(e);
  return -1;
}

int e2e_start(e2e *e, const char *const *extra_env) {
  if (spawn_kysod(e, extra_env) != 0) E2E_FAIL("spawning kysod failed");
  int port = wait_ready(e);
  if (port <= 0) {
    int st = 0;
    if (port < 0) kill(e->pid, SIGKILL);
    reap(e, &st);
    E2E_FAIL("kysod did not get ready (%s, wait status 0x%x); its stderr follows",
             port < 0 ? "timed out" : "it exited", st);
  }
  e->port = port;
  if (open_clients(e) != 0) return -1;
  if (!e->tsa_provisioned && !e->no_auto_tsa) {
    e2e_provision_key(e, KYSO__V1__KEY_ROLE__KEY_ROLE_TSA, e->tsa_name,
                      KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
    e->tsa_provisioned = 1;
  }
  return 0;
}

void e2e_config_append(e2e *e, const char *text) {
  FILE *f = fopen(e->config, "a");
  if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
    E2E_FAIL("cannot append to %s", e->config);
}

int e2e_stop(e2e *e) { return e2e_stop_allowing(e, NULL); }

int e2e_stop_allowing(e2e *e, const char *const *allowed) {
  int st = 0;
  close_clients(e);
  if (e->pid <= 0) E2E_FAIL("e2e_stop: kysod is not running");
  int64_t t0 = kyso_now_ms();
  if (kill(e->pid, SIGTERM) != 0) E2E_FAIL("kill(SIGTERM): %s", strerror(errno));
  reap(e, &st);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    E2E_FAIL("kysod stop: got wait status 0x%x (%s %d), want exit status 0", st,
             WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
  fprintf(stderr, "e2e: kysod stopped cleanly in %lld ms\n", (long long)(kyso_now_ms() - t0));
  e2e_check_log_clean_except(e, allowed); /* sanitizer reports at exit, error-level lines */
  return 0;
}

void e2e_kill9(e2e *e) {
  if (e->pid <= 0) E2E_FAIL("e2e_kill9: kysod is not running");
  if (kill(e->pid, SIGKILL) != 0) E2E_FAIL("kill(SIGKILL): %s", strerror(errno));
  reap(e, NULL);
  close_clients(e);
}

kyso_client *e2e_client_open(e2e *e, e2e_ident who) {
  char target[96], cert[320], key[320];
  kyso_client *c = NULL;
  kyso_err err = {0};
  snprintf(target, sizeof(target), "%s:%d", e->host, e->port);
  kyso_client_opts o = {.target = target, .ca_file = e2e_path(e, "pki/root.pem"),
                        .server_name = "localhost"};
  if (ident_cert[who]) {
    snprintf(cert, 320, "%s/%s.pem", e->pki, ident_cert[who]);
    snprintf(key, 320, "%s/%s.key", e->pki, ident_cert[who]);
    o.cert_file = cert;
    o.key_file = key;
  }
  if (kyso_client_open(&o, &c, &err) != KYSO_OK)
    E2E_FAIL("kyso_client_open(%s): %s", ident_cert[who] ? ident_cert[who] : "anonymous", err.msg);
  return c;
}

/* kyso's argv for e2e_kyso and e2e_kyso_start; argv[4] is strdup()ed. */
static void kyso_argv(e2e *e, e2e_ident who, const char *const *args, const char **argv,
                      char *addr, char *cert, char *key);


pid_t e2e_kyso_start(e2e *e, e2e_ident who, const char *out_file, const char *const *args) {
  const char *argv[64];
  char addr[96], cert[320], key[320];
  kyso_argv(e, who, args, argv, addr, cert, key);
  pid_t pid = e2e_spawn(argv, out_file);
  free((char *)argv[4]);
  if (pid < 0) E2E_FAIL("cannot start kyso %s", args[0]);
  return pid;
}

int e2e_kyso(e2e *e, e2e_ident who, const char *out_file, const char *const *args) {
  return e2e_wait_exit(e2e_kyso_start(e, who, out_file, args));
}

static void kyso_argv(e2e *e, e2e_ident who, const char *const *args, const char **argv,
                      char *addr, char *cert, char *key) {
  size_t n = 0;
  snprintf(addr, 96, "%s:%d", e->host, e->port);
  argv[n++] = e2e_cli_path();
  argv[n++] = "--address";
  argv[n++] = addr;
  argv[n++] = "--ca";
  argv[n++] = strdup(e2e_path(e, "pki/root.pem"));
  argv[n++] = "--server-name";
  argv[n++] = "localhost";
  if (ident_cert[who]) {
    snprintf(cert, 320, "%s/%s.pem", e->pki, ident_cert[who]);
    snprintf(key, 320, "%s/%s.key", e->pki, ident_cert[who]);
    argv[n++] = "--cert";
    argv[n++] = cert;
    argv[n++] = "--key";
    argv[n++] = key;
  }
  for (size_t i = 0; args[i] != NULL; i++) {
    if (n == 63) E2E_FAIL("e2e_kyso: too many arguments");
    argv[n++] = args[i];
  }
  argv[n] = NULL;
}

int e2e_call_raw(e2e *e, e2e_ident who, const char *method, const uint8_t *req, size_t len,
                 int64_t timeout_ms, kyso_reply *reply) {
  kyso_err err = {0};
  memset(reply, 0, sizeof(*reply));
  if (e->clients[who] == NULL) E2E_FAIL("no client for identity %d (kysod not started?)", who);
  if (kyso_client_call(e->clients[who], method, req, len, timeout_ms, reply, &err) != KYSO_OK)
    E2E_FAIL("kyso_client_call(%s) could not be made: %s", method, err.msg);
  return reply->grpc_status;
}

int e2e_call(e2e *e, e2e_ident who, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
             ProtobufCMessage **resp, char *msg, size_t msg_size) {
  kyso_reply reply;
  size_t n = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) E2E_FAIL("out of memory");
  protobuf_c_message_pack(req, buf);
  int st = e2e_call_raw(e, who, method, buf, n, timeout_ms, &reply);
  free(buf);
  if (msg) snprintf(msg, msg_size, "%s", reply.message);
  if (resp) *resp = NULL;
  if (st == 0 && resp) {
    *resp = protobuf_c_message_unpack(resp_desc, NULL, reply.len, reply.data);
    if (*resp == NULL) {
      size_t got = reply.len;
      kyso_reply_free(&reply);
      E2E_FAIL("%s: OK, but the %zu-byte response is not a %s", method, got, resp_desc->name);
    }
  }
  kyso_reply_free(&reply);
  return st;
}
