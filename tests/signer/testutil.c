/* kyso tests — signer test helpers (see testutil.h). */
#include "testutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#ifndef KYSO_FIXTURES
#error "KYSO_FIXTURES must name tests/fixtures"
#endif

int tu_tmpdir(const char *tag, char *out) {
  const char *base = getenv("TMPDIR");
  snprintf(out, 256, "%s/kyso-%s-XXXXXX", base && base[0] ? base : "/tmp", tag);
  return mkdtemp(out) != NULL;
}

void tu_rmdir(const char *dir) {
  if (getenv("KYSO_TEST_KEEP") != NULL) {
    fprintf(stderr, "kept %s\n", dir);
    return;
  }
  if (dir != NULL && strstr(dir, "/kyso-") != NULL) tu_run("rm -rf '%s'", dir);
}

int tu_run(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(cmd)) return -1;
  int rc = system(cmd);
  return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

int tu_write(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) return 0;
  int ok = fwrite(data, 1, len, f) == len;
  return fclose(f) == 0 && ok;
}

uint8_t *tu_read(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  long n;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (buf = malloc((size_t)n + 1)) != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n) {
    *len = (size_t)n;
  } else {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

int tu_softhsm_token(const char *dir, const char *label, const char *pin, const char *sopin) {
  char cmd[2048], conf[1024] = "";
  snprintf(cmd, sizeof(cmd), "'%s/softhsm.sh' '%s' '%s' '%s' '%s'", KYSO_FIXTURES, dir, label,
           pin, sopin);
  FILE *p = popen(cmd, "r");
  if (p == NULL) return 0;
  int got = fgets(conf, sizeof(conf), p) != NULL;
  if (pclose(p) != 0 || !got) return 0;
  conf[strcspn(conf, "\n")] = '\0';
  return setenv("SOFTHSM2_CONF", conf, 1) == 0;
}

int tu_pki_init(const char *dir) {
  return tu_run("'%s/pki.sh' init '%s' >/dev/null 2>&1", KYSO_FIXTURES, dir) == 0;
}

static X509 *read_pem_cert(const char *path) {
  FILE *f = fopen(path, "r");
  X509 *x = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f != NULL) fclose(f);
  return x;
}

X509 *tu_pki_issue(const char *dir, const uint8_t *csr, size_t csr_len, const char *profile) {
  char csr_path[512], cert_path[512];
  static int seq;
  int n = __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST);
  snprintf(csr_path, sizeof(csr_path), "%s/req-%d.der", dir, n);
  snprintf(cert_path, sizeof(cert_path), "%s/cert-%d.pem", dir, n);
  if (!tu_write(csr_path, csr, csr_len) ||
      tu_run("'%s/pki.sh' issue '%s' '%s' '%s' %s >/dev/null 2>&1", KYSO_FIXTURES, dir,
             csr_path, cert_path, profile) != 0)
    return NULL;
  return read_pem_cert(cert_path);
}

STACK_OF(X509) *tu_pki_chain(const char *dir) {
  char path[512];
  snprintf(path, sizeof(path), "%s/chain.pem", dir);
  STACK_OF(X509) *sk = sk_X509_new_null();
  X509 *x = read_pem_cert(path);
  if (sk == NULL || x == NULL || !sk_X509_push(sk, x)) {
    X509_free(x);
    sk_X509_free(sk);
    return NULL;
  }
  return sk;
}

X509_STORE *tu_pki_store(const char *dir) {
  char path[512];
  snprintf(path, sizeof(path), "%s/root.pem", dir);
  X509_STORE *st = X509_STORE_new();
  if (st == NULL || X509_STORE_load_file(st, path) != 1 ||
      X509_STORE_set_purpose(st, X509_PURPOSE_ANY) != 1) {
    X509_STORE_free(st);
    return NULL;
  }
  return st;
}

int tu_openssl_cms_verify_file(const char *dir, const uint8_t *sig, size_t sig_len,
                               const char *doc_path) {
  char sp[512];
  static int seq;
  int n = __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST);
  snprintf(sp, sizeof(sp), "%s/sig-%d.der", dir, n);
  if (!tu_write(sp, sig, sig_len)) return -1;
  return tu_run("openssl cms -verify -cades -binary -inform DER -in '%s' -content '%s' "
                "-CAfile '%s/root.pem' -purpose any -out /dev/null 2>/dev/null",
                sp, doc_path, dir);
}

int tu_openssl_cms_verify(const char *dir, const uint8_t *sig, size_t sig_len,
                          const uint8_t *doc, size_t doc_len) {
  char dp[512];
  static int seq;
  int n = __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST);
  snprintf(dp, sizeof(dp), "%s/doc-%d.bin", dir, n);
  if (!tu_write(dp, doc, doc_len)) return -1;
  return tu_openssl_cms_verify_file(dir, sig, sig_len, dp);
}

int tu_openssl_req_verify(const char *dir, const uint8_t *csr, size_t csr_len) {
  char path[512];
  snprintf(path, sizeof(path), "%s/verify-req.der", dir);
  if (!tu_write(path, csr, csr_len)) return -1;
  /* OpenSSL 3.0's `req -verify` exits 0 even when the signature is bad;
   * only its message tells ("... verify OK" / "... verify failure"). */
  return tu_run("openssl req -verify -noout -inform DER -in '%s' 2>&1 | grep -q 'verify OK'",
                path);
}
