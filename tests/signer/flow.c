/* kyso tests — one key's life through the signer (see flow.h). */
#include "flow.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "testutil.h"

#define CHECK_OK(call)                                                            \
  do {                                                                            \
    kyso_err err_ = {0};                                                          \
    kyso_status st_ = (call);                                                     \
    if (st_ != KYSO_OK) fail_msg("%s: %s: %s", #call, kyso_strerror(st_), err_.msg); \
  } while (0)

void flow_certify(signer *s, const char *label, const char *pki_dir) {
  uint8_t *csr = NULL;
  size_t csr_len = 0;
  kyso_err err = {0};
  kyso_status st = signer_make_csr(s, label, FLOW_SUBJECT, &csr, &csr_len, &err);
  if (st != KYSO_OK) fail_msg("make_csr(%s): %s: %s", label, kyso_strerror(st), err.msg);
  if (tu_openssl_req_verify(pki_dir, csr, csr_len) != 0)
    fail_msg("openssl req -verify rejects the CSR of %s", label);
  csr[csr_len - 3] ^= 0x01; /* in the signature: the check must notice */
  if (tu_openssl_req_verify(pki_dir, csr, csr_len) == 0)
    fail_msg("openssl req -verify accepts a damaged CSR of %s", label);
  csr[csr_len - 3] ^= 0x01;
  X509 *cert = tu_pki_issue(pki_dir, csr, csr_len, "signer");
  OPENSSL_free(csr);
  if (cert == NULL) fail_msg("pki.sh issue failed for %s", label);

  /* A certificate for some other key (the PKI's client key) is refused. */
  char path[512];
  snprintf(path, sizeof(path), "%s/client.pem", pki_dir);
  FILE *f = fopen(path, "r");
  X509 *other = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  assert_non_null(other);
  st = signer_import_certificate(s, label, other, NULL, &err);
  if (st != KYSO_INVALID_ARGUMENT || strstr(err.msg, "does not match key") == NULL)
    fail_msg("importing a foreign certificate for %s: got %s (%s), want INVALID_ARGUMENT",
             label, kyso_strerror(st), err.msg);
  X509_free(other);

  STACK_OF(X509) *chain = tu_pki_chain(pki_dir);
  assert_non_null(chain);
  st = signer_import_certificate(s, label, cert, chain, &err);
  if (st != KYSO_OK) fail_msg("import(%s): %s: %s", label, kyso_strerror(st), err.msg);
  X509 *got = NULL;
  STACK_OF(X509) *got_chain = NULL;
  st = signer_certificate(s, label, &got, &got_chain, &err);
  if (st != KYSO_OK) fail_msg("certificate(%s): %s: %s", label, kyso_strerror(st), err.msg);
  assert_int_equal(X509_cmp(got, cert), 0);
  assert_int_equal(sk_X509_num(got_chain), 1);
  X509_free(got);
  sk_X509_pop_free(got_chain, X509_free);
  sk_X509_pop_free(chain, X509_free);
  X509_free(cert);
}

void flow_sign_verify(signer *s, const char *label, signer_rsa_scheme scheme,
                      const char *pki_dir, const uint8_t *doc, size_t doc_len, int cli) {
  uint8_t *sig = NULL;
  size_t sig_len = 0;
  kyso_err err = {0};
  kyso_status st = signer_sign_cms(s, label, scheme, doc, doc_len, 0, &sig, &sig_len, &err);
  if (st != KYSO_OK) fail_msg("sign_cms(%s): %s: %s", label, kyso_strerror(st), err.msg);
  X509_STORE *store = tu_pki_store(pki_dir);
  X509 *who = NULL;
  st = signer_verify_cms(store, sig, sig_len, doc, doc_len, &who, &err);
  if (st != KYSO_OK) fail_msg("verify_cms(%s): %s: %s", label, kyso_strerror(st), err.msg);
  X509 *mine = NULL;
  CHECK_OK(signer_certificate(s, label, &mine, NULL, &err_));
  assert_int_equal(X509_cmp(who, mine), 0);
  if (cli && tu_openssl_cms_verify(pki_dir, sig, sig_len, doc, doc_len) != 0)
    fail_msg("openssl cms -verify -cades rejects the signature of %s", label);
  X509_free(mine);
  X509_free(who);
  X509_STORE_free(store);
  OPENSSL_free(sig);
}

void flow_run(signer *s, const char *label, signer_rsa_scheme scheme, const char *pki_dir) {
  static const char text[] = "Quyết định số 123/QĐ-UBND về việc ký số văn bản đi.\n";
  uint8_t *sig = NULL;
  size_t sig_len = 0;
  kyso_err err = {0};
  flow_certify(s, label, pki_dir);
  flow_sign_verify(s, label, scheme, pki_dir, (const uint8_t *)text, sizeof(text) - 1, 1);

  /* A flipped document byte fails both verifiers. */
  uint8_t doc[sizeof(text) - 1];
  memcpy(doc, text, sizeof(doc));
  CHECK_OK(signer_sign_cms(s, label, scheme, doc, sizeof(doc), 0, &sig, &sig_len, &err_));
  doc[7] ^= 0x01;
  X509_STORE *store = tu_pki_store(pki_dir);
  X509 *who = (X509 *)1;
  kyso_status st = signer_verify_cms(store, sig, sig_len, doc, sizeof(doc), &who, &err);
  if (st != KYSO_FAILED_PRECONDITION)
    fail_msg("verify of a flipped document (%s): got %s (%s), want FAILED_PRECONDITION", label,
             kyso_strerror(st), err.msg);
  assert_null(who);
  if (tu_openssl_cms_verify(pki_dir, sig, sig_len, doc, sizeof(doc)) == 0)
    fail_msg("openssl cms -verify accepts a flipped document (%s)", label);
  X509_STORE_free(store);
  OPENSSL_free(sig);
}
