/* kyso tests — the in-process rpc server harness (see harness.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/x509.h>

#include "harness.h"

h_state H;
static sem_t never; /* never posted: the Deadline handler waits on it with a timeout */

static void sem_wait_intr(sem_t *s) {
  while (sem_wait(s) != 0 && errno == EINTR) {
  }
}

static void echo(rpc_call *call, void *app) {
  size_t len;
  const uint8_t *p = rpc_call_request(call, &len);
  pthread_mutex_lock(&H.mu);
  H.handler_calls++;
  H.echo_remaining_ms = rpc_call_remaining_ms(call);
  pthread_mutex_unlock(&H.mu);
  rpc_call_finish(call, KYSO_OK, NULL, p, len);
}

static void slow(rpc_call *call, void *app) {
  sem_post(&H.slow_entered);
  sem_wait_intr(&H.slow_release);
  echo(call, app);
}

/* Waits until the client's deadline has passed, then refuses the call the
 * way a handler must before an irreversible step. */
static void deadline(rpc_call *call, void *app) {
  int64_t first = rpc_call_remaining_ms(call), left = first;
  while (left > 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (left % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    sem_timedwait(&never, &ts);
    left = rpc_call_remaining_ms(call);
  }
  pthread_mutex_lock(&H.mu);
  H.handler_calls++;
  H.deadline_first_ms = first;
  H.deadline_last_ms = left;
  pthread_mutex_unlock(&H.mu);
  rpc_call_finish(call, KYSO_DEADLINE_EXCEEDED, "deadline passed before signing", NULL, 0);
  sem_post(&H.deadline_done);
}

static void whoami(rpc_call *call, void *app) {
  const rpc_peer *peer = rpc_call_peer(call);
  rpc_call_finish(call, KYSO_OK, NULL, (const uint8_t *)peer->principal,
                  strlen(peer->principal));
}

static kyso_status hook(void *app, rpc_peer *peer, const char *operation, kyso_err *err) {
  pthread_mutex_lock(&H.mu);
  H.hook_calls++;
  H.had_cert = peer->cert != NULL;
  memcpy(H.sha256, peer->cert_sha256, sizeof(H.sha256));
  snprintf(H.operation, sizeof(H.operation), "%s", operation);
  pthread_mutex_unlock(&H.mu);
  if (strcmp(operation, "deny") == 0)
    return kyso_fail(err, KYSO_PERMISSION_DENIED, DENY_MSG);
  if (strcmp(operation, "whoami") == 0) {
    if (peer->cert == NULL) return kyso_fail(err, KYSO_UNAUTHENTICATED, NOCERT_MSG);
    X509_NAME_get_text_by_NID(X509_get_subject_name(peer->cert), NID_commonName,
                              peer->principal, sizeof(peer->principal));
    snprintf(peer->role, sizeof(peer->role), "service");
  }
  return KYSO_OK;
}

static const rpc_method methods[] = {
    {M_ECHO, "echo", echo, RPC_UNARY},
    {M_SLOW, "slow", slow, RPC_UNARY},
    {M_DEADLINE, "deadline", deadline, RPC_UNARY},
    {M_DENIED, "deny", echo, RPC_UNARY},
    {M_WHOAMI, "whoami", whoami, RPC_UNARY},
};

void h_init(void) {
  memset(&H, 0, sizeof(H));
  pthread_mutex_init(&H.mu, NULL);
  sem_init(&H.slow_entered, 0, 0);
  sem_init(&H.slow_release, 0, 0);
  sem_init(&H.deadline_done, 0, 0);
  sem_init(&never, 0, 0);
}

int h_start(harness *h, const rpc_server_opts *opts, int no_client) {
  rpc_server_opts o;
  kyso_err err;
  kyso_err_clear(&err);
  memset(h, 0, sizeof(*h));
  if (opts != NULL)
    o = *opts;
  else
    memset(&o, 0, sizeof(o));
  o.listen_addr = "127.0.0.1:0";
  o.allow_insecure = o.tls_cert_file == NULL;
  o.auth = hook;
  if (rpc_server_start(&o, methods, sizeof(methods) / sizeof(methods[0]), NULL, &h->srv,
                       &err) != KYSO_OK) {
    fprintf(stderr, "rpc_server_start: %s\n", err.msg);
    return -1;
  }
  h->port = rpc_server_port(h->srv);
  snprintf(h->target, sizeof(h->target), "127.0.0.1:%d", h->port);
  if (!no_client && (h->cli = h_client(h, NULL, NULL, NULL, 0)) == NULL) return -1;
  return 0;
}

void h_stop(harness *h, int grace_ms) {
  kyso_client_close(h->cli);
  rpc_server_shutdown(h->srv, grace_ms);
  memset(h, 0, sizeof(*h));
}

kyso_client *h_client(const harness *h, const char *ca_file, const char *cert_file,
                      const char *key_file, size_t max_message) {
  kyso_client *c = NULL;
  kyso_err err;
  kyso_err_clear(&err);
  kyso_client_opts o = {.target = h->target, .ca_file = ca_file, .cert_file = cert_file,
                        .key_file = key_file, .server_name = ca_file ? "localhost" : NULL,
                        .insecure = ca_file == NULL, .max_message = max_message};
  if (kyso_client_open(&o, &c, &err) != KYSO_OK) fprintf(stderr, "kyso_client_open: %s\n", err.msg);
  return c;
}

kyso_reply h_call(kyso_client *c, const char *method, const void *req, size_t len,
                  int64_t timeout_ms) {
  kyso_reply r;
  kyso_err err;
  kyso_err_clear(&err);
  kyso_status st = kyso_client_call(c, method, req, len, timeout_ms, &r, &err);
  if (st != KYSO_OK) fail_msg("kyso_client_call %s: %s", method, err.msg);
  return r;
}

int64_t h_read(const void *field, int is_i64) {
  pthread_mutex_lock(&H.mu);
  int64_t v = is_i64 ? *(const int64_t *)field : *(const int *)field;
  pthread_mutex_unlock(&H.mu);
  return v;
}

void h_hook_snapshot(int *had_cert, uint8_t sha256[32], char *operation, size_t op_size) {
  pthread_mutex_lock(&H.mu);
  *had_cert = H.had_cert;
  memcpy(sha256, H.sha256, 32);
  snprintf(operation, op_size, "%s", H.operation);
  pthread_mutex_unlock(&H.mu);
}

int h_pki_make(char *dir, size_t size) {
  char cmd[1024];
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, size, "%s/kyso-rpc-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(dir) == NULL) return -1;
  snprintf(cmd, sizeof(cmd), "'%s/pki.sh' init '%s' >/dev/null", KYSO_FIXTURES, dir);
  return system(cmd) == 0 ? 0 : -1;
}

void h_pki_remove(const char *dir) {
  char cmd[1024];
  if (dir == NULL || dir[0] == '\0') return;
  snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int h_openssl_fingerprint(const char *pem_path, char hex[65]) {
  char cmd[1024];
  snprintf(cmd, sizeof(cmd), "openssl x509 -in '%s' -outform DER | sha256sum", pem_path);
  FILE *p = popen(cmd, "r");
  if (p == NULL) return -1;
  size_t n = fread(hex, 1, 64, p);
  hex[n] = '\0';
  return pclose(p) == 0 && n == 64 ? 0 : -1;
}

int h_concat(const char *a, const char *b, const char *out) {
  char cmd[3200];
  snprintf(cmd, sizeof(cmd), "cat '%s' '%s' > '%s'", a, b, out);
  return system(cmd) == 0 ? 0 : -1;
}
