/* kyso — the "kysohsm" OpenSSL 3 provider: its entry point, the algorithm
 * tables, loading it into a private library context, and making key objects
 * that stand for HSM keys. Key management is in provider_keymgmt.c, signing
 * in provider_signature.c. */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include "signer_internal.h"

#define RSA_NAMES "RSA:rsaEncryption:1.2.840.113549.1.1.1"
#define EC_NAMES "EC:id-ecPublicKey:1.2.840.10045.2.1"
#define ECDSA_NAMES "ECDSA"

static OSSL_FUNC_provider_teardown_fn prov_teardown;
static OSSL_FUNC_provider_gettable_params_fn prov_gettable_params;
static OSSL_FUNC_provider_get_params_fn prov_get_params;
static OSSL_FUNC_provider_query_operation_fn prov_query;

static const OSSL_ALGORITHM keymgmt_algs[] = {
    {RSA_NAMES, SIGNER__PROPQ, signer__keymgmt_rsa_functions, "RSA key held in kyso's HSM"},
    {EC_NAMES, SIGNER__PROPQ, signer__keymgmt_ec_functions, "EC key held in kyso's HSM"},
    {NULL, NULL, NULL, NULL}};

static const OSSL_ALGORITHM signature_algs[] = {
    {RSA_NAMES, SIGNER__PROPQ, signer__signature_rsa_functions,
     "RSA PKCS#1 v1.5 / PSS over SHA-256 by kyso's HSM"},
    {ECDSA_NAMES, SIGNER__PROPQ, signer__signature_ecdsa_functions,
     "ECDSA over SHA-256 by kyso's HSM"},
    {NULL, NULL, NULL, NULL}};

static const OSSL_PARAM prov_param_types[] = {
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_DISPATCH prov_functions[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))prov_teardown},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))prov_gettable_params},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))prov_get_params},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))prov_query},
    {0, NULL}};

static void prov_teardown(void *provctx) { free(provctx); }

static const OSSL_PARAM *prov_gettable_params(void *provctx) { return prov_param_types; }

static int prov_get_params(void *provctx, OSSL_PARAM params[]) {
  OSSL_PARAM *p;
  if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != NULL &&
      !OSSL_PARAM_set_utf8_ptr(p, "kyso HSM provider"))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) != NULL &&
      !OSSL_PARAM_set_utf8_ptr(p, "1"))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != NULL &&
      !OSSL_PARAM_set_int(p, 1))
    return 0;
  return 1;
}

static const OSSL_ALGORITHM *prov_query(void *provctx, int operation_id, int *no_cache) {
  *no_cache = 0;
  switch (operation_id) {
    case OSSL_OP_KEYMGMT:
      return keymgmt_algs;
    case OSSL_OP_SIGNATURE:
      return signature_algs;
    default:
      return NULL;
  }
}

/* Called by OSSL_PROVIDER_load; the hsm handle is wired in afterwards by
 * signer__provider_load (the init function cannot be given user data in
 * OpenSSL 3.0), before any key can exist. */
int signer__provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                          const OSSL_DISPATCH **out, void **provctx) {
  signer__provctx *pc = calloc(1, sizeof(*pc));
  if (pc == NULL) return 0;
  *provctx = pc;
  *out = prov_functions;
  return 1;
}

kyso_status signer__provider_load(OSSL_LIB_CTX *libctx, hsm *h, EVP_MD *sha256,
                                  OSSL_PROVIDER **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  OSSL_PROVIDER *prov = NULL;
  *out = NULL;
  if (!OSSL_PROVIDER_add_builtin(libctx, SIGNER__PROVIDER_NAME, signer__provider_init) ||
      (prov = OSSL_PROVIDER_load(libctx, SIGNER__PROVIDER_NAME)) == NULL) {
    kyso_fail(err, KYSO_INTERNAL, "cannot load the %s OpenSSL provider",
              SIGNER__PROVIDER_NAME);
    st = kyso_err_add_openssl(err);
    goto out;
  }
  signer__provctx *pc = OSSL_PROVIDER_get0_provider_ctx(prov);
  if (pc == NULL) {
    st = kyso_fail(err, KYSO_INTERNAL, "the %s provider has no context",
                   SIGNER__PROVIDER_NAME);
    goto out;
  }
  pc->hsm = h;
  pc->libctx = libctx;
  pc->sha256 = sha256;
  *out = prov;
  prov = NULL;
out:
  if (prov != NULL) OSSL_PROVIDER_unload(prov);
  return st;
}

/* The parameters of a kysohsm key: the public half of pub (a default-
 * provider key) and the label. OSSL_PARAM_BLD keeps pointers until
 * to_param, so everything pushed lives until then. */
static kyso_status key_params(EVP_PKEY *pub, const char *label, OSSL_PARAM **out,
                              const char **algo, kyso_err *err) {
  kyso_status st = KYSO_OK;
  BIGNUM *n = NULL, *e = NULL;
  char group[64];
  uint8_t point[SIGNER__EC_PUB_MAX];
  size_t point_len = 0;
  OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
  *out = NULL;
  if (bld == NULL) goto fail;
  if (EVP_PKEY_is_a(pub, "RSA")) {
    *algo = "RSA";
    if (!EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n) ||
        !EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_E, &e) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
      goto fail;
  } else if (EVP_PKEY_is_a(pub, "EC")) {
    *algo = "EC";
    if (!EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                        sizeof(group), NULL) ||
        !EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point),
                                         &point_len) ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, point_len))
      goto fail;
  } else {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "key '%s' is neither RSA nor EC; kyso cannot sign with it", label);
    goto out;
  }
  if (!OSSL_PARAM_BLD_push_utf8_string(bld, SIGNER__PARAM_LABEL, label, 0) ||
      (*out = OSSL_PARAM_BLD_to_param(bld)) == NULL)
    goto fail;
  goto out;
fail:
  kyso_fail(err, KYSO_INTERNAL, "cannot read the public key of '%s'", label);
  st = kyso_err_add_openssl(err);
out:
  OSSL_PARAM_BLD_free(bld);
  BN_free(n);
  BN_free(e);
  return st;
}

kyso_status signer__provider_key(OSSL_LIB_CTX *libctx, hsm *h, const char *label,
                                 EVP_PKEY **out, kyso_err *err) {
  kyso_status st;
  EVP_PKEY *pub = NULL;
  OSSL_PARAM *params = NULL;
  EVP_PKEY_CTX *ctx = NULL;
  const char *algo = NULL;
  *out = NULL;
  if ((st = hsm_public_key(h, label, &pub, err)) != KYSO_OK) goto out;
  if ((st = key_params(pub, label, &params, &algo, err)) != KYSO_OK) goto out;
  if ((ctx = EVP_PKEY_CTX_new_from_name(libctx, algo, SIGNER__PROPQ)) == NULL ||
      EVP_PKEY_fromdata_init(ctx) <= 0 ||
      EVP_PKEY_fromdata(ctx, out, EVP_PKEY_KEYPAIR, params) <= 0) {
    kyso_fail(err, KYSO_INTERNAL, "cannot make the %s key object for '%s'",
              SIGNER__PROVIDER_NAME, label);
    st = kyso_err_add_openssl(err);
    goto out;
  }
out:
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  EVP_PKEY_free(pub);
  return st;
}
