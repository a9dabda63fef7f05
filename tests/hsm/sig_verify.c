/* kyso tests — checking hsm signatures with OpenSSL alone. */
#include "sig_verify.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>

/* Raw r||s (two equal halves) to a DER ECDSA-Sig-Value; caller frees *der. */
static int ecdsa_der(const uint8_t *sig, size_t len, unsigned char **der, int *der_len) {
  int ok = 0;
  ECDSA_SIG *es = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig, (int)(len / 2), NULL);
  BIGNUM *s = BN_bin2bn(sig + len / 2, (int)(len / 2), NULL);
  if (es == NULL || r == NULL || s == NULL || len % 2 != 0) goto out;
  if (!ECDSA_SIG_set0(es, r, s)) goto out;
  r = s = NULL; /* owned by es now */
  *der = NULL;
  *der_len = i2d_ECDSA_SIG(es, der);
  ok = *der_len > 0;
out:
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(es);
  return ok;
}

int sig_verify(EVP_PKEY *pk, hsm_mech mech, const uint8_t digest[32], const uint8_t *sig,
               size_t sig_len) {
  int ok = 0;
  unsigned char *der = NULL;
  int der_len = 0;
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
  if (ctx == NULL || EVP_PKEY_verify_init(ctx) <= 0 ||
      EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) <= 0)
    goto out;
  if (mech == HSM_MECH_RSA_PSS_SHA256 &&
      (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
       EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32) <= 0 ||
       EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) <= 0))
    goto out;
  if (mech == HSM_MECH_ECDSA_SHA256) {
    if (!ecdsa_der(sig, sig_len, &der, &der_len)) goto out;
    sig = der;
    sig_len = (size_t)der_len;
  }
  ok = EVP_PKEY_verify(ctx, sig, sig_len, digest, 32) == 1;
out:
  OPENSSL_free(der);
  EVP_PKEY_CTX_free(ctx);
  return ok;
}
