/* kyso — the public half of a key that arrives from another node: its DER
 * SubjectPublicKeyInfo, checked against the key type the caller names, and
 * turned into a PKCS#11 public key object (RSA modulus and exponent, or EC
 * parameters and point) like the one C_GenerateKeyPair makes. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <string.h>

#include "hsm_internal.h"

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

/* RSA-3072: a 384-byte modulus; 65537 is 3 bytes, allow up to 8. */
#define MAX_MODULUS 512
#define MAX_EXPONENT 8

static kyso_status mismatch(kyso_err *err, const char *label, hsm_key_type type, const char *got) {
  return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "the public key sent with key '%s' is %s, but the key is declared %s", label,
                   got, hsm_key_type_name(type));
}

kyso_status hsm__spki_parse(const uint8_t *der, size_t len, hsm_key_type type, const char *label,
                            EVP_PKEY **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  const unsigned char *p = der;
  char group[32] = "";
  EVP_PKEY *pk = NULL;
  *out = NULL;
  if (der == NULL || len == 0 || len > HSM__MAX_SPKI)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "the public key of '%s' must be a DER SubjectPublicKeyInfo of 1..%d "
                     "bytes, got %zu",
                     label, HSM__MAX_SPKI, der == NULL ? 0 : len);
  pk = d2i_PUBKEY(NULL, &p, (long)len);
  if (pk == NULL || p != der + len) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "the public key of '%s' is not one DER SubjectPublicKeyInfo", label);
    kyso_err_add_openssl(err);
    goto out;
  }
  int bits = EVP_PKEY_get_bits(pk);
  if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA) {
    hsm_key_type got = bits == 2048 ? HSM_KEY_RSA_2048 : bits == 3072 ? HSM_KEY_RSA_3072 : 0;
    if (got != type)
      st = mismatch(err, label, type, got != 0 ? hsm_key_type_name(got) : "RSA of another size");
  } else if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC) {
    int named =
        EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL);
    if (!named || strcmp(group, "prime256v1") != 0)
      st = mismatch(err, label, type, "EC on a curve other than P-256");
    else if (type != HSM_KEY_EC_P256)
      st = mismatch(err, label, type, "EC-P256");
  } else {
    st = mismatch(err, label, type, "neither RSA nor EC");
  }
out:
  ERR_clear_error();
  if (st == KYSO_OK)
    *out = pk;
  else
    EVP_PKEY_free(pk);
  return st;
}

/* CKA_EC_POINT is the DER OCTET STRING around the uncompressed point, which
 * is what SoftHSM makes for its own keys. */
static kyso_status ec_point_der(EVP_PKEY *pk, const char *label, uint8_t out[67], kyso_err *err) {
  size_t n = 0;
  if (!EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out + 2, 65, &n) ||
      n != 65 || out[2] != 0x04)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "the public key of '%s' is not an uncompressed P-256 point", label);
  out[0] = 0x04; /* OCTET STRING */
  out[1] = 65;
  return KYSO_OK;
}

static kyso_status rsa_parts(EVP_PKEY *pk, const char *label, uint8_t *n, CK_ULONG *n_len,
                             uint8_t *e, CK_ULONG *e_len, kyso_err *err) {
  kyso_status st = KYSO_OK;
  BIGNUM *bn_n = NULL, *bn_e = NULL;
  if (!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &bn_n) ||
      !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &bn_e) ||
      BN_num_bytes(bn_n) > MAX_MODULUS || BN_num_bytes(bn_e) > MAX_EXPONENT) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "cannot read the RSA modulus and exponent of the public key of '%s'", label);
    goto out;
  }
  *n_len = (CK_ULONG)BN_bn2bin(bn_n, n);
  *e_len = (CK_ULONG)BN_bn2bin(bn_e, e);
out:
  BN_free(bn_n);
  BN_free(bn_e);
  ERR_clear_error();
  return st;
}

kyso_status hsm__spki_create(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                             const hsm__key *k, EVP_PKEY *pk, CK_OBJECT_HANDLE *out,
                             kyso_err *err) {
  kyso_status st;
  CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
  CK_KEY_TYPE kt = k->type == HSM_KEY_EC_P256 ? CKK_EC : CKK_RSA;
  uint8_t n[MAX_MODULUS], e[MAX_EXPONENT], point[67];
  CK_ULONG n_len = 0, e_len = 0;
  /* The same attributes keygen.c gives a public key, plus the key itself. */
  CK_ATTRIBUTE t[] = {
      {CKA_CLASS, &cls, sizeof(cls)},
      {CKA_KEY_TYPE, &kt, sizeof(kt)},
      {CKA_TOKEN, &no, sizeof(no)}, /* made a token object once proven */
      {CKA_PRIVATE, &no, sizeof(no)},
      {CKA_VERIFY, &yes, sizeof(yes)},
      {CKA_ENCRYPT, &no, sizeof(no)},
      {CKA_WRAP, &no, sizeof(no)},
      {CKA_LABEL, (void *)k->label, (CK_ULONG)strlen(k->label)},
      {CKA_ID, (void *)k->id, (CK_ULONG)k->id_len},
      {CKA_EC_PARAMS, (void *)HSM__P256_OID_DER, HSM__P256_OID_LEN},
      {CKA_EC_POINT, point, sizeof(point)},
  };
  CK_ULONG nt = sizeof(t) / sizeof(t[0]);
  *out = CK_INVALID_HANDLE;
  if (k->type == HSM_KEY_EC_P256) {
    if ((st = ec_point_der(pk, k->label, point, err)) != KYSO_OK) return st;
  } else {
    if ((st = rsa_parts(pk, k->label, n, &n_len, e, &e_len, err)) != KYSO_OK) return st;
    t[nt - 2] = (CK_ATTRIBUTE){CKA_MODULUS, n, n_len};
    t[nt - 1] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, e, e_len};
  }
  CK_RV rv = fl->C_CreateObject(s, t, nt, out);
  if (rv != CKR_OK)
    return hsm__fail_rv(err, rv, token, "creating the public key of '%s' in token '%s'", k->label,
                        token);
  return KYSO_OK;
}
