/* kyso — kysohsm key management: a key object is the HSM label plus the
 * public half (RSA n, e; EC curve and point). Nothing secret is ever held
 * here. Import builds keys (EVP_PKEY_fromdata with SIGNER__PARAM_LABEL);
 * export hands out the public half, which is how OpenSSL writes a
 * SubjectPublicKeyInfo and compares us with a certificate (the comparison
 * runs in the certificate key's provider: we offer no match function, so
 * no foreign key is ever cached against our key management). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/proverr.h>

#include "signer_internal.h"

static OSSL_FUNC_keymgmt_new_fn rsa_new, ec_new;
static OSSL_FUNC_keymgmt_free_fn key_free;
static OSSL_FUNC_keymgmt_has_fn key_has;
static OSSL_FUNC_keymgmt_get_params_fn key_get_params;
static OSSL_FUNC_keymgmt_gettable_params_fn rsa_gettable, ec_gettable;
static OSSL_FUNC_keymgmt_import_fn key_import;
static OSSL_FUNC_keymgmt_import_types_fn rsa_types, ec_types;
static OSSL_FUNC_keymgmt_export_fn key_export;
static OSSL_FUNC_keymgmt_query_operation_name_fn rsa_op_name, ec_op_name;

static const OSSL_PARAM rsa_params[] = {
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM ec_params[] = {
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
    OSSL_PARAM_END};

/* What import reads and export writes. */
static const OSSL_PARAM rsa_io[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_utf8_string(SIGNER__PARAM_LABEL, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM ec_io[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_utf8_string(SIGNER__PARAM_LABEL, NULL, 0),
    OSSL_PARAM_END};

static void *key_new(void *provctx, signer__key_kind kind) {
  signer__key *k = calloc(1, sizeof(*k));
  if (k == NULL) return NULL;
  k->prov = provctx;
  k->kind = kind;
  atomic_init(&k->refs, 1);
  return k;
}

static void *rsa_new(void *provctx) { return key_new(provctx, SIGNER__KEY_RSA); }
static void *ec_new(void *provctx) { return key_new(provctx, SIGNER__KEY_EC); }

void signer__key_up_ref(signer__key *k) { atomic_fetch_add(&k->refs, 1); }

void signer__key_release(signer__key *k) {
  if (k == NULL || atomic_fetch_sub(&k->refs, 1) != 1) return;
  BN_free(k->n);
  BN_free(k->e);
  free(k);
}

static void key_free(void *keydata) { signer__key_release(keydata); }

static int key_has(const void *keydata, int selection) {
  const signer__key *k = keydata;
  int ok = k != NULL;
  if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0) ok = ok && k->has_pub;
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) ok = ok && k->label[0] != '\0';
  if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) != 0 && k != NULL &&
      k->kind == SIGNER__KEY_EC)
    ok = ok && k->curve_nid != NID_undef;
  return ok;
}

static int set_common(const signer__key *k, OSSL_PARAM params[]) {
  OSSL_PARAM *p;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_BITS)) != NULL &&
      !OSSL_PARAM_set_int(p, k->bits))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_SECURITY_BITS)) != NULL &&
      !OSSL_PARAM_set_int(p, k->security_bits))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MAX_SIZE)) != NULL &&
      !OSSL_PARAM_set_int(p, k->max_size))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST)) != NULL &&
      !OSSL_PARAM_set_utf8_string(p, "SHA256"))
    return 0;
  return 1;
}

static int key_get_params(void *keydata, OSSL_PARAM params[]) {
  signer__key *k = keydata;
  OSSL_PARAM *p;
  if (k == NULL || !k->has_pub || !set_common(k, params)) return 0;
  if (k->kind == SIGNER__KEY_RSA) {
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_N)) != NULL &&
        !OSSL_PARAM_set_BN(p, k->n))
      return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_E)) != NULL &&
        !OSSL_PARAM_set_BN(p, k->e))
      return 0;
    return 1;
  }
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_GROUP_NAME)) != NULL &&
      !OSSL_PARAM_set_utf8_string(p, OBJ_nid2sn(k->curve_nid)))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_PUB_KEY)) != NULL &&
      !OSSL_PARAM_set_octet_string(p, k->pub, k->pub_len))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY)) != NULL &&
      !OSSL_PARAM_set_octet_string(p, k->pub, k->pub_len))
    return 0;
  return 1;
}

static const OSSL_PARAM *rsa_gettable(void *provctx) { return rsa_params; }
static const OSSL_PARAM *ec_gettable(void *provctx) { return ec_params; }
static const OSSL_PARAM *rsa_types(int selection) { return rsa_io; }
static const OSSL_PARAM *ec_types(int selection) { return ec_io; }

static int import_rsa(signer__key *k, const OSSL_PARAM params[]) {
  const OSSL_PARAM *pn = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_N);
  const OSSL_PARAM *pe = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_E);
  BIGNUM *n = NULL, *e = NULL;
  if (pn == NULL || pe == NULL || !OSSL_PARAM_get_BN(pn, &n) || !OSSL_PARAM_get_BN(pe, &e) ||
      !BN_is_odd(n) || BN_num_bits(n) < 1024 || !BN_is_odd(e) || BN_is_one(e)) {
    BN_free(n);
    BN_free(e);
    ERR_raise_data(ERR_LIB_PROV, PROV_R_INVALID_KEY, "kysohsm: RSA key needs a valid n and e");
    return 0;
  }
  BN_free(k->n);
  BN_free(k->e);
  k->n = n;
  k->e = e;
  k->bits = BN_num_bits(n);
  k->security_bits = BN_security_bits(k->bits, -1);
  k->max_size = BN_num_bytes(n);
  return 1;
}

static int ec_security_bits(int order_bits) {
  if (order_bits >= 512) return 256;
  if (order_bits >= 384) return 192;
  if (order_bits >= 256) return 128;
  if (order_bits >= 224) return 112;
  return order_bits / 2;
}

/* Named curves only; the point is checked to be on the curve and kept in
 * uncompressed form so every export looks the same. */
static int import_ec(signer__key *k, const OSSL_PARAM params[]) {
  int ok = 0;
  EC_POINT *pt = NULL;
  const void *pub = NULL;
  size_t pub_len = 0;
  EC_GROUP *g = EC_GROUP_new_from_params(params, k->prov ? k->prov->libctx : NULL, NULL);
  const OSSL_PARAM *pp = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY);
  if (g == NULL || EC_GROUP_get_curve_name(g) == NID_undef || pp == NULL ||
      !OSSL_PARAM_get_octet_string_ptr(pp, &pub, &pub_len) ||
      (pt = EC_POINT_new(g)) == NULL || !EC_POINT_oct2point(g, pt, pub, pub_len, NULL))
    goto out;
  size_t n = EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, k->pub,
                                sizeof(k->pub), NULL);
  if (n == 0) goto out;
  k->pub_len = n;
  k->curve_nid = EC_GROUP_get_curve_name(g);
  k->bits = EC_GROUP_order_bits(g);
  k->security_bits = ec_security_bits(k->bits);
  k->max_size = signer__ecdsa_der_max(k->bits);
  ok = 1;
out:
  if (!ok)
    ERR_raise_data(ERR_LIB_PROV, PROV_R_INVALID_KEY,
                   "kysohsm: EC key needs a named curve and a point on it");
  EC_POINT_free(pt);
  EC_GROUP_free(g);
  return ok;
}

/* Public half (required for any key-pair selection) and, with the private
 * selection, the label of the HSM key. Private key material is refused:
 * kysohsm keys only ever refer to keys that stay in the HSM. */
static int key_import(void *keydata, int selection, const OSSL_PARAM params[]) {
  signer__key *k = keydata;
  const char *label = NULL;
  if (k == NULL || params == NULL) return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_NOT_SUPPORTED,
                   "kysohsm: import of parameters alone is not supported");
    return 0;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) == 0) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_MISSING_KEY, "kysohsm: the public key is required");
    return 0;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
    const OSSL_PARAM *pl = OSSL_PARAM_locate_const(params, SIGNER__PARAM_LABEL);
    if (pl == NULL || !OSSL_PARAM_get_utf8_string_ptr(pl, &label) ||
        signer__label_check(label, NULL) != KYSO_OK) {
      ERR_raise_data(ERR_LIB_PROV, PROV_R_NOT_A_PRIVATE_KEY,
                     "kysohsm: a private key is an HSM label (%s); key material is refused",
                     SIGNER__PARAM_LABEL);
      return 0;
    }
  }
  if (!(k->kind == SIGNER__KEY_RSA ? import_rsa(k, params) : import_ec(k, params))) return 0;
  k->has_pub = 1;
  if (label != NULL) snprintf(k->label, sizeof(k->label), "%s", label);
  return 1;
}

static int key_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg) {
  signer__key *k = keydata;
  int ok = 0;
  OSSL_PARAM *params = NULL;
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  int want_pub = (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
  int want_group = want_pub || (selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) != 0;
  if (bld == NULL || k == NULL || !k->has_pub) goto out;
  if (k->kind == SIGNER__KEY_RSA && want_pub &&
      (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, k->n) ||
       !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, k->e)))
    goto out;
  if (k->kind == SIGNER__KEY_EC && want_group &&
      !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                       OBJ_nid2sn(k->curve_nid), 0))
    goto out;
  if (k->kind == SIGNER__KEY_EC && want_pub &&
      !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, k->pub, k->pub_len))
    goto out;
  if ((params = OSSL_PARAM_BLD_to_param(bld)) == NULL) goto out;
  ok = cb(params, cbarg);
out:
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  return ok;
}

static const char *rsa_op_name(int operation_id) {
  return operation_id == OSSL_OP_SIGNATURE ? "RSA" : NULL;
}

static const char *ec_op_name(int operation_id) {
  return operation_id == OSSL_OP_SIGNATURE ? "ECDSA" : NULL;
}

#define FN(id, f) {id, (void (*)(void))(f)}

const OSSL_DISPATCH signer__keymgmt_rsa_functions[] = {
    FN(OSSL_FUNC_KEYMGMT_NEW, rsa_new),
    FN(OSSL_FUNC_KEYMGMT_FREE, key_free),
    FN(OSSL_FUNC_KEYMGMT_HAS, key_has),
    FN(OSSL_FUNC_KEYMGMT_GET_PARAMS, key_get_params),
    FN(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, rsa_gettable),
    FN(OSSL_FUNC_KEYMGMT_IMPORT, key_import),
    FN(OSSL_FUNC_KEYMGMT_IMPORT_TYPES, rsa_types),
    FN(OSSL_FUNC_KEYMGMT_EXPORT, key_export),
    FN(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, rsa_types),
    FN(OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, rsa_op_name),
    {0, NULL}};

const OSSL_DISPATCH signer__keymgmt_ec_functions[] = {
    FN(OSSL_FUNC_KEYMGMT_NEW, ec_new),
    FN(OSSL_FUNC_KEYMGMT_FREE, key_free),
    FN(OSSL_FUNC_KEYMGMT_HAS, key_has),
    FN(OSSL_FUNC_KEYMGMT_GET_PARAMS, key_get_params),
    FN(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, ec_gettable),
    FN(OSSL_FUNC_KEYMGMT_IMPORT, key_import),
    FN(OSSL_FUNC_KEYMGMT_IMPORT_TYPES, ec_types),
    FN(OSSL_FUNC_KEYMGMT_EXPORT, key_export),
    FN(OSSL_FUNC_KEYMGMT_EXPORT_TYPES, ec_types),
    FN(OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, ec_op_name),
    {0, NULL}};
