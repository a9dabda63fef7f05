/* kyso — public keys as ordinary OpenSSL objects (default provider), built
 * from the token's public attributes with OSSL_PARAM_BLD + EVP_PKEY_fromdata,
 * and kyso's CKA_ID: SHA-256 of the DER SubjectPublicKeyInfo. */
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <string.h>

#include "hsm_internal.h"

/* RSA-4096 modulus is 512 bytes; P-256's CKA_EC_POINT is 67 (DER). */
#define MAX_MODULUS 1024
#define MAX_EXPONENT 16
#define MAX_EC_POINT 160

/* EVP_PKEY_fromdata over params built by the caller; algo is "RSA" or "EC". */
static kyso_status from_params(const char *algo, OSSL_PARAM_BLD *bld, const char *label,
                               EVP_PKEY **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, algo, NULL);
  if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
      EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
    kyso_fail(err, KYSO_INTERNAL, "cannot build the %s public key of '%s' from the token",
              algo, label);
    st = kyso_err_add_openssl(err);
  }
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  return st;
}

static kyso_status rsa_pubkey(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                              const hsm__key *k, EVP_PKEY **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  uint8_t n[MAX_MODULUS], e[MAX_EXPONENT];
  CK_ATTRIBUTE t[] = {{CKA_MODULUS, n, sizeof(n)}, {CKA_PUBLIC_EXPONENT, e, sizeof(e)}};
  BIGNUM *bn_n = NULL, *bn_e = NULL;
  OSSL_PARAM_BLD *bld = NULL;
  /* Both halves of an RSA key carry the modulus and public exponent. */
  CK_OBJECT_HANDLE o = k->pub != CK_INVALID_HANDLE ? k->pub : k->priv;
  CK_RV rv = fl->C_GetAttributeValue(s, o, t, 2);
  if (rv != CKR_OK) {
    st = hsm__fail_rv(err, rv, token, "reading the public key of '%s' in token '%s'",
                      k->label, token);
    goto out;
  }
  bn_n = BN_bin2bn(n, (int)t[0].ulValueLen, NULL);
  bn_e = BN_bin2bn(e, (int)t[1].ulValueLen, NULL);
  bld = OSSL_PARAM_BLD_new();
  if (bn_n == NULL || bn_e == NULL || bld == NULL ||
      !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
      !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e)) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for the public key of '%s'",
                   k->label);
    goto out;
  }
  st = from_params("RSA", bld, k->label, out, err);
out:
  OSSL_PARAM_BLD_free(bld);
  BN_free(bn_n);
  BN_free(bn_e);
  return st;
}

/* CKA_EC_POINT is a DER OCTET STRING around the uncompressed point; some
 * modules hand out the bare point (65 bytes, starting 0x04) instead. */
static kyso_status ec_point(const uint8_t *der, size_t len, const char *label,
                            uint8_t point[65], kyso_err *err) {
  kyso_status st = KYSO_OK;
  ASN1_OCTET_STRING *os = NULL;
  if (len == 65 && der[0] == 0x04) {
    memcpy(point, der, 65);
    goto out;
  }
  const unsigned char *p = der;
  os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)len);
  if (os == NULL || p != der + len || ASN1_STRING_length(os) != 65 ||
      ASN1_STRING_get0_data(os)[0] != 0x04) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "the token's CKA_EC_POINT of '%s' is not an uncompressed P-256 point", label);
    goto out;
  }
  memcpy(point, ASN1_STRING_get0_data(os), 65);
out:
  ASN1_OCTET_STRING_free(os);
  return st;
}

static kyso_status ec_pubkey(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                             const hsm__key *k, EVP_PKEY **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  uint8_t der[MAX_EC_POINT], point[65];
  CK_ATTRIBUTE t[] = {{CKA_EC_POINT, der, sizeof(der)}};
  OSSL_PARAM_BLD *bld = NULL;
  if (k->pub == CK_INVALID_HANDLE) { /* an EC private object has no point */
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "key '%s' in token '%s' has no public key object", k->label, token);
    goto out;
  }
  CK_RV rv = fl->C_GetAttributeValue(s, k->pub, t, 1);
  if (rv != CKR_OK) {
    st = hsm__fail_rv(err, rv, token, "reading the public key of '%s' in token '%s'",
                      k->label, token);
    goto out;
  }
  if ((st = ec_point(der, t[0].ulValueLen, k->label, point, err)) != KYSO_OK) goto out;
  bld = OSSL_PARAM_BLD_new();
  if (bld == NULL ||
      !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point))) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for the public key of '%s'",
                   k->label);
    goto out;
  }
  st = from_params("EC", bld, k->label, out, err);
out:
  OSSL_PARAM_BLD_free(bld);
  return st;
}

kyso_status hsm__pubkey_read(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                             const hsm__key *k, EVP_PKEY **out, kyso_err *err) {
  *out = NULL;
  if (k->type == HSM_KEY_EC_P256) return ec_pubkey(fl, s, token, k, out, err);
  return rsa_pubkey(fl, s, token, k, out, err);
}

kyso_status hsm__pubkey_id(EVP_PKEY *pk, uint8_t id[32], kyso_err *err) {
  kyso_status st = KYSO_OK;
  unsigned char *der = NULL;
  unsigned int md_len = 0;
  int len = i2d_PUBKEY(pk, &der);
  if (len <= 0 || !EVP_Digest(der, (size_t)len, id, &md_len, EVP_sha256(), NULL)) {
    kyso_fail(err, KYSO_INTERNAL, "cannot hash the SubjectPublicKeyInfo");
    st = kyso_err_add_openssl(err);
  }
  OPENSSL_free(der);
  return st;
}
