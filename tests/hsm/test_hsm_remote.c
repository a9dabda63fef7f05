/* kyso tests — a remote token that goes away: kysod talks to SoftHSM through
 * p11-kit-client.so and a `p11-kit server` the test starts; the test kills
 * the p11-kit-remote serving our connection, as happens when a network HSM
 * restarts. Signing must answer UNAVAILABLE (not kill the process with
 * SIGPIPE, not INTERNAL), and hsm_reinit must bring the key back. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "kyso/hsm.h"
#include "sig_verify.h"
#include "softhsm_fixture.h"

#define TOKEN "kyso-remote"
#define SEAL "kyso/seal/remote"

typedef struct world {
  fx_token tok;
  char sock[PATH_MAX + 32];
  pid_t server;
} world;

static void pause_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* Children of pid (the server's p11-kit-remote processes), from /proc. */
static size_t children_of(pid_t pid, pid_t *out, size_t cap) {
  size_t n = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL && n < cap) {
    char path[300], buf[512];
    long self = strtol(e->d_name, NULL, 10);
    if (self <= 0) continue;
    snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL) continue;
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *rp = strrchr(buf, ')'); /* "pid (comm) state ppid ..." */
    char state;
    long ppid;
    if (rp != NULL && sscanf(rp + 1, " %c %ld", &state, &ppid) == 2 && ppid == pid &&
        state != 'Z')
      out[n++] = (pid_t)self;
  }
  if (d != NULL) closedir(d);
  return n;
}

static int start_server(world *w) {
  struct stat st;
  snprintf(w->sock, sizeof(w->sock), "%s/p11.sock", w->tok.dir);
  w->server = fork();
  if (w->server < 0) return -1;
  if (w->server == 0) {
    /* Dies with the test even when the test itself crashes. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 1);
    char pin_uri[64];
    snprintf(pin_uri, sizeof(pin_uri), "pkcs11:token=%s", TOKEN);
    execl(KYSO_P11KIT_BIN, "p11-kit", "server", "-f", "--provider", KYSO_SOFTHSM_MODULE, "-n",
          w->sock, pin_uri, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 100 && stat(w->sock, &st) != 0; i++) pause_ms(50);
  if (stat(w->sock, &st) != 0) return -1;
  char addr[PATH_MAX + 64];
  snprintf(addr, sizeof(addr), "unix:path=%s", w->sock);
  setenv("P11_KIT_SERVER_ADDRESS", addr, 1);
  return 0;
}

static int setup(void **state) {
  static world w;
  memset(&w, 0, sizeof(w));
  if (access(KYSO_P11KIT_CLIENT_MODULE, R_OK) != 0 || access(KYSO_P11KIT_BIN, X_OK) != 0) {
    fprintf(stderr, "p11-kit server or client module missing: skipped\n");
    exit(77);
  }
  if (fx_token_make(&w.tok, TOKEN) != 0 || start_server(&w) != 0) return -1;
  *state = &w;
  return 0;
}

/* Stops only what this test started: the server and its remotes, by pid. */
static int teardown(void **state) {
  world *w = *state;
  pid_t kids[16];
  if (w == NULL) return 0;
  size_t n = children_of(w->server, kids, 16);
  kill(w->server, SIGTERM);
  for (size_t i = 0; i < n; i++) kill(kids[i], SIGTERM);
  waitpid(w->server, NULL, 0);
  fx_token_free(&w->tok);
  return 0;
}

static kyso_status sign_seal(hsm *h, uint8_t seed, EVP_PKEY *pk, kyso_err *err) {
  uint8_t digest[32], sig[64];
  size_t len = sizeof(sig);
  unsigned int md_len;
  EVP_Digest(&seed, 1, digest, &md_len, EVP_sha256(), NULL);
  kyso_status st = hsm_sign_digest(h, SEAL, HSM_MECH_ECDSA_SHA256, digest, 32, sig, &len, err);
  if (st == KYSO_OK && !sig_verify(pk, HSM_MECH_ECDSA_SHA256, digest, sig, len))
    st = kyso_fail(err, KYSO_INTERNAL, "signature does not verify");
  return st;
}

static void test_remote_token_goes_away(void **state) {
  world *w = *state;
  kyso_err err = {0};
  hsm *h = NULL;
  EVP_PKEY *pk = NULL;
  pid_t kids[16];
  sigset_t mask;
  hsm_opts o = {KYSO_P11KIT_CLIENT_MODULE, TOKEN, FX_PIN, 2};
  if (hsm_open(&o, &h, &err) != KYSO_OK) fail_msg("open through p11-kit: %s", err.msg);
  assert_int_equal(hsm_generate_key(h, SEAL, HSM_KEY_EC_P256, NULL, &err), KYSO_OK);
  assert_int_equal(hsm_public_key(h, SEAL, &pk, &err), KYSO_OK);
  assert_int_equal(sign_seal(h, 1, pk, &err), KYSO_OK);

  size_t n = children_of(w->server, kids, 16);
  assert_true(n >= 1);
  for (size_t i = 0; i < n; i++) kill(kids[i], SIGKILL);
  for (int i = 0; i < 100 && children_of(w->server, kids, 16) > 0; i++) pause_ms(20);

  /* Still alive (SIGPIPE swallowed), and told why. */
  for (int i = 0; i < 3; i++) {
    kyso_status st = sign_seal(h, 2, pk, &err);
    if (st != KYSO_UNAVAILABLE || strstr(err.msg, "kysod will reinitialise it") == NULL)
      fail_msg("sign after the remote died: got %s \"%s\", want UNAVAILABLE", kyso_strerror(st),
               err.msg);
  }
  pthread_sigmask(SIG_BLOCK, NULL, &mask);
  assert_false(sigismember(&mask, SIGPIPE)); /* the caller's mask is restored */

  if (hsm_reinit(h, &err) != KYSO_OK) fail_msg("reinit: %s", err.msg);
  if (sign_seal(h, 3, pk, &err) != KYSO_OK) fail_msg("sign after reinit: %s", err.msg);
  EVP_PKEY_free(pk);
  hsm_close(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_remote_token_goes_away)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
