/* kyso — PKCS#10 certificate requests for HSM keys, signed in the HSM
 * (sha256WithRSAEncryption or ecdsa-with-SHA256), then checked against the
 * HSM's public key before they leave. */
#include <openssl/err.h>
#include <openssl/x509.h>

#include "signer_internal.h"

/* Re-reads the request in the default library context and verifies it with
 * the HSM's public key: a wrong signature from the token or from our DER
 * encoding must not reach a CA. */
static kyso_status self_check(signer *s, const char *label, const uint8_t *der, size_t len,
                              kyso_err *err) {
  kyso_status st;
  EVP_PKEY *pub = NULL;
  const unsigned char *p = der;
  X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
  if ((st = hsm_public_key(s->hsm, label, &pub, err)) != KYSO_OK) goto out;
  if (req == NULL || p != der + len || X509_REQ_verify(req, pub) != 1 ||
      EVP_PKEY_eq(X509_REQ_get0_pubkey(req), pub) != 1) {
    kyso_fail(err, KYSO_INTERNAL,
              "the request made with key '%s' does not verify with its public key:", label);
    st = kyso_err_add_openssl(err);
  }
out:
  X509_REQ_free(req);
  EVP_PKEY_free(pub);
  return st;
}

kyso_status signer_make_csr(signer *s, const char *label, const char *subject, uint8_t **der,
                            size_t *der_len, kyso_err *err) {
  kyso_status st;
  X509_NAME *name = NULL;
  EVP_PKEY *key = NULL;
  X509_REQ *req = NULL;
  unsigned char *out = NULL;
  if (der != NULL) *der = NULL;
  if (der_len != NULL) *der_len = 0;
  if (s == NULL || der == NULL || der_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signer_make_csr: signer and output are required");
  if ((st = signer__label_check(label, err)) != KYSO_OK) return st;
  if ((st = signer__subject_parse(subject, &name, err)) != KYSO_OK) goto out;
  if ((st = signer__key_get(s, label, &key, err)) != KYSO_OK) goto out;
  ERR_clear_error();
  signer__hsm_error_clear();
  /* The request lives in the signer's context, so its signature is made by
   * the kysohsm key through that context's (preferred) provider. */
  if ((req = X509_REQ_new_ex(s->libctx, NULL)) == NULL ||
      !X509_REQ_set_version(req, X509_REQ_VERSION_1) || !X509_REQ_set_subject_name(req, name) ||
      !X509_REQ_set_pubkey(req, key)) {
    st = signer__openssl_failure(err, "building a certificate request", label);
    goto out;
  }
  if (X509_REQ_sign(req, key, s->sha256) <= 0) {
    st = signer__openssl_failure(err, "signing a certificate request", label);
    goto out;
  }
  int n = i2d_X509_REQ(req, &out);
  if (n <= 0) {
    st = signer__openssl_failure(err, "encoding a certificate request", label);
    goto out;
  }
  if ((st = self_check(s, label, out, (size_t)n, err)) != KYSO_OK) goto out;
  *der = out;
  *der_len = (size_t)n;
  out = NULL;
out:
  OPENSSL_free(out);
  X509_REQ_free(req);
  EVP_PKEY_free(key);
  X509_NAME_free(name);
  return st;
}
