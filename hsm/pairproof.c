/* kyso — proving that a private key object and a public key are one pair:
 * one C_Sign of a random digest in the token, verified by OpenSSL with the
 * public key. Used before an unwrapped key may take a label, so a corrupted
 * blob, or a blob sent with the wrong public key, never becomes a key that
 * signs under someone else's certificate. */
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "hsm_internal.h"

/* Raw r||s (two equal halves) as a DER ECDSA-Sig-Value; caller frees *der. */
static int ecdsa_der(const uint8_t *sig, size_t len, unsigned char **der, size_t *der_len) {
  int ok = 0;
  ECDSA_SIG *es = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig, (int)(len / 2), NULL);
  BIGNUM *s = BN_bin2bn(sig + len / 2, (int)(len / 2), NULL);
  if (es == NULL || r == NULL || s == NULL || len % 2 != 0 || !ECDSA_SIG_set0(es, r, s)) goto out;
  r = s = NULL; /* es owns them now */
  *der = NULL;
  int n = i2d_ECDSA_SIG(es, der);
  if (n <= 0) goto out;
  *der_len = (size_t)n;
  ok = 1;
out:
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(es);
  return ok;
}

/* 1 when sig is a valid signature of digest under pk (PKCS#1 v1.5 or ECDSA,
 * SHA-256). */
static int verifies(EVP_PKEY *pk, int ec, const uint8_t digest[32], const uint8_t *sig,
                    size_t sig_len) {
  int ok = 0;
  unsigned char *der = NULL;
  size_t der_len = 0;
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
  if (ctx == NULL || EVP_PKEY_verify_init(ctx) <= 0 ||
      EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) <= 0)
    goto out;
  if (!ec && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0) goto out;
  if (ec) {
    if (!ecdsa_der(sig, sig_len, &der, &der_len)) goto out;
    sig = der;
    sig_len = der_len;
  }
  ok = EVP_PKEY_verify(ctx, sig, sig_len, digest, 32) == 1;
out:
  OPENSSL_free(der);
  EVP_PKEY_CTX_free(ctx);
  ERR_clear_error();
  return ok;
}

kyso_status hsm__pair_prove(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                            const hsm__key *k, CK_OBJECT_HANDLE priv, EVP_PKEY *pk, kyso_err *err) {
  kyso_status st;
  int ec = k->type == HSM_KEY_EC_P256;
  uint8_t digest[32], in[HSM__SIGN_IN_MAX], sig[KYSO_MAX_SIGNATURE];
  size_t in_len = 0;
  CK_ULONG sig_len = sizeof(sig);
  CK_MECHANISM m;
  CK_RSA_PKCS_PSS_PARAMS pss;
  if (RAND_bytes(digest, sizeof(digest)) != 1) {
    ERR_clear_error();
    return kyso_fail(err, KYSO_INTERNAL, "no random digest to test key '%s' with", k->label);
  }
  st = hsm__sign_prepare(k, token, ec ? HSM_MECH_ECDSA_SHA256 : HSM_MECH_RSA_PKCS1_SHA256, digest,
                         &m, &pss, in, &in_len, err);
  if (st != KYSO_OK) return st;
  /* sig holds any signature we make, so C_Sign ends the operation either way. */
  CK_RV rv = fl->C_SignInit(s, &m, priv);
  if (rv == CKR_OK) rv = fl->C_Sign(s, in, (CK_ULONG)in_len, sig, &sig_len);
  if (rv != CKR_OK)
    return hsm__fail_rv(err, rv, token, "test-signing with the unwrapped key '%s' in token '%s'",
                        k->label, token);
  if (!verifies(pk, ec, digest, sig, sig_len))
    return kyso_fail(err, KYSO_DATA_LOSS,
                     "the unwrapped key '%s' does not match the public key sent with it: the "
                     "wrapped blob or the public key is corrupted, or they are of different "
                     "keys; nothing was stored in token '%s'",
                     k->label, token);
  return KYSO_OK;
}
