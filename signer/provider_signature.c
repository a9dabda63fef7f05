/* kyso — kysohsm signatures: RSA (PKCS#1 v1.5 or PSS) and ECDSA, always
 * over SHA-256, the value made by hsm_sign_digest. OpenSSL hashes nothing
 * for us: sign() takes the 32-byte digest, digest_sign_*() hash with
 * SHA-256 from the default provider first. ECDSA comes back from the HSM as
 * r||s and is DER-encoded here. */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/proverr.h>
#include <openssl/rsa.h>

#include "signer_internal.h"

typedef struct sig_ctx {
  signer__provctx *prov;
  signer__key *key;
  int ecdsa;     /* an ECDSA context (else RSA) */
  int pad;       /* RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
  EVP_MD_CTX *md; /* digest_sign_* only */
} sig_ctx;

/* DER AlgorithmIdentifiers, byte for byte what OpenSSL's default provider
 * writes for the same settings (tests compare the two). */
static const uint8_t aid_rsa_pkcs1[] = { /* sha256WithRSAEncryption, NULL */
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00};
static const uint8_t aid_rsa_pss[] = { /* RSASSA-PSS: SHA-256, MGF1-SHA-256, salt 32 */
    0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30,
    0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
    0x02, 0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
    0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
    0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x20};
static const uint8_t aid_ecdsa[] = { /* ecdsa-with-SHA256, no parameters */
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};

#define PSS_SALT 32

static _Thread_local kyso_err tls_err;
static _Thread_local int tls_pending;

void signer__hsm_error_clear(void) { tls_pending = 0; }

int signer__hsm_error_take(kyso_err *err) {
  if (!tls_pending) return 0;
  tls_pending = 0;
  if (err != NULL) *err = tls_err;
  return 1;
}

static OSSL_FUNC_signature_newctx_fn rsa_newctx, ecdsa_newctx;
static OSSL_FUNC_signature_freectx_fn sig_freectx;
static OSSL_FUNC_signature_dupctx_fn sig_dupctx;
static OSSL_FUNC_signature_sign_init_fn sig_sign_init;
static OSSL_FUNC_signature_sign_fn sig_sign;
static OSSL_FUNC_signature_digest_sign_init_fn sig_digest_init;
static OSSL_FUNC_signature_digest_sign_update_fn sig_digest_update;
static OSSL_FUNC_signature_digest_sign_final_fn sig_digest_final;
static OSSL_FUNC_signature_get_ctx_params_fn sig_get_params;
static OSSL_FUNC_signature_gettable_ctx_params_fn rsa_gettable, ecdsa_gettable;
static OSSL_FUNC_signature_set_ctx_params_fn sig_set_params;
static OSSL_FUNC_signature_settable_ctx_params_fn rsa_settable, ecdsa_settable;

static void *new_ctx(void *provctx, int ecdsa) {
  sig_ctx *c = calloc(1, sizeof(*c));
  if (c == NULL) return NULL;
  c->prov = provctx;
  c->ecdsa = ecdsa;
  c->pad = RSA_PKCS1_PADDING;
  return c;
}

static void *rsa_newctx(void *provctx, const char *propq) { return new_ctx(provctx, 0); }
static void *ecdsa_newctx(void *provctx, const char *propq) { return new_ctx(provctx, 1); }

static void sig_freectx(void *ctx) {
  sig_ctx *c = ctx;
  if (c == NULL) return;
  EVP_MD_CTX_free(c->md);
  signer__key_release(c->key);
  free(c);
}

/* OpenSSL duplicates the context before every EVP_DigestSignFinal, so the
 * running digest is copied too. */
static void *sig_dupctx(void *ctx) {
  sig_ctx *c = ctx, *d = calloc(1, sizeof(*d));
  if (d == NULL) return NULL;
  *d = *c;
  d->md = NULL;
  if (d->key != NULL) signer__key_up_ref(d->key);
  if (c->md != NULL &&
      ((d->md = EVP_MD_CTX_new()) == NULL || !EVP_MD_CTX_copy_ex(d->md, c->md))) {
    sig_freectx(d);
    return NULL;
  }
  return d;
}

/* Only SHA-256, under any of its names ("SHA256", "SHA2-256", the OID). */
static int digest_ok(const sig_ctx *c, const char *name) {
  if (name == NULL || EVP_MD_is_a(c->prov->sha256, name)) return 1;
  ERR_raise_data(ERR_LIB_PROV, PROV_R_INVALID_DIGEST,
                 "kysohsm signs SHA-256 digests only, not %s", name);
  return 0;
}

static int sig_init(sig_ctx *c, void *provkey, const OSSL_PARAM params[]) {
  signer__key *k = provkey;
  if (k == NULL) {
    if (c->key == NULL) {
      ERR_raise(ERR_LIB_PROV, PROV_R_NO_KEY_SET);
      return 0;
    }
  } else {
    if ((k->kind == SIGNER__KEY_EC) != (c->ecdsa != 0)) {
      ERR_raise(ERR_LIB_PROV, PROV_R_OPERATION_NOT_SUPPORTED_FOR_THIS_KEYTYPE);
      return 0;
    }
    if (k->label[0] == '\0') {
      ERR_raise_data(ERR_LIB_PROV, PROV_R_NOT_A_PRIVATE_KEY,
                     "kysohsm: this key has no HSM label, it cannot sign");
      return 0;
    }
    signer__key_up_ref(k);
    signer__key_release(c->key);
    c->key = k;
  }
  c->pad = RSA_PKCS1_PADDING;
  return sig_set_params(c, params);
}

static int sig_sign_init(void *ctx, void *provkey, const OSSL_PARAM params[]) {
  return sig_init(ctx, provkey, params);
}

/* One C_Sign over the digest; on failure the HSM's error is kept for the
 * caller (signer__hsm_error_take) and raised into OpenSSL's queue. */
static int sign_digest(sig_ctx *c, unsigned char *sig, size_t *siglen, size_t sigsize,
                       const unsigned char *dgst) {
  uint8_t raw[KYSO_MAX_SIGNATURE];
  size_t raw_len = sizeof(raw);
  kyso_err e = {0};
  hsm_mech mech = c->ecdsa ? HSM_MECH_ECDSA_SHA256
                  : c->pad == RSA_PKCS1_PSS_PADDING ? HSM_MECH_RSA_PSS_SHA256
                                                    : HSM_MECH_RSA_PKCS1_SHA256;
  if (hsm_sign_digest(c->prov->hsm, c->key->label, mech, dgst, SIGNER__DIGEST_LEN, raw,
                      &raw_len, &e) != KYSO_OK) {
    tls_err = e;
    tls_pending = 1;
    ERR_raise_data(ERR_LIB_PROV, PROV_R_FAILED_TO_SIGN, "kysohsm: %s", e.msg);
    return 0;
  }
  if (c->ecdsa) return signer__ecdsa_raw_to_der(raw, raw_len, sig, sigsize, siglen);
  if (raw_len > sigsize) {
    ERR_raise(ERR_LIB_PROV, PROV_R_OUTPUT_BUFFER_TOO_SMALL);
    return 0;
  }
  memcpy(sig, raw, raw_len);
  *siglen = raw_len;
  return 1;
}

static int sig_sign(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                    const unsigned char *tbs, size_t tbslen) {
  sig_ctx *c = ctx;
  if (c->key == NULL) {
    ERR_raise(ERR_LIB_PROV, PROV_R_NO_KEY_SET);
    return 0;
  }
  if (sig == NULL) { /* size query */
    *siglen = (size_t)c->key->max_size;
    return 1;
  }
  if (tbslen != SIGNER__DIGEST_LEN) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_INVALID_DIGEST_LENGTH,
                   "kysohsm signs 32-byte SHA-256 digests, got %zu bytes", tbslen);
    return 0;
  }
  return sign_digest(c, sig, siglen, sigsize, tbs);
}

static int sig_digest_init(void *ctx, const char *mdname, void *provkey,
                           const OSSL_PARAM params[]) {
  sig_ctx *c = ctx;
  if (!digest_ok(c, mdname) || !sig_init(c, provkey, params)) return 0;
  if (c->md == NULL && (c->md = EVP_MD_CTX_new()) == NULL) return 0;
  return EVP_DigestInit_ex2(c->md, c->prov->sha256, NULL);
}

static int sig_digest_update(void *ctx, const unsigned char *data, size_t len) {
  sig_ctx *c = ctx;
  return c->md != NULL && EVP_DigestUpdate(c->md, data, len);
}

static int sig_digest_final(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize) {
  sig_ctx *c = ctx;
  unsigned char dgst[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (c->md == NULL || c->key == NULL) {
    ERR_raise(ERR_LIB_PROV, PROV_R_NO_KEY_SET);
    return 0;
  }
  if (sig == NULL) { /* size query: the digest keeps running */
    *siglen = (size_t)c->key->max_size;
    return 1;
  }
  if (!EVP_DigestFinal_ex(c->md, dgst, &n) || n != SIGNER__DIGEST_LEN) return 0;
  return sign_digest(c, sig, siglen, sigsize, dgst);
}

/* A UTF-8 parameter copied out NUL-terminated (OpenSSL does not promise
 * the terminator); 0 when it is not a string or does not fit. */
static int get_str(const OSSL_PARAM *p, char *buf, size_t n) {
  char *b = buf;
  return OSSL_PARAM_get_utf8_string(p, &b, n);
}

/* pad-mode and pss-saltlen arrive as integers from EVP_PKEY_CTX_set_params
 * and as strings through the EVP_PKEY_CTX_ctrl translation; both are taken. */
static int get_pad(const OSSL_PARAM *p, int *pad) {
  char s[16];
  if (p->data_type == OSSL_PARAM_UTF8_STRING) {
    if (!get_str(p, s, sizeof(s))) return 0;
    if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0) *pad = RSA_PKCS1_PADDING;
    else if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0) *pad = RSA_PKCS1_PSS_PADDING;
    else return 0;
    return 1;
  }
  return OSSL_PARAM_get_int(p, pad) &&
         (*pad == RSA_PKCS1_PADDING || *pad == RSA_PKCS1_PSS_PADDING);
}

/* The HSM mechanism fixes the salt at 32 bytes, the digest's length. */
static int saltlen_ok(const OSSL_PARAM *p) {
  char s[16];
  int v = 0;
  if (p->data_type == OSSL_PARAM_UTF8_STRING)
    return get_str(p, s, sizeof(s)) &&
           (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0 || strcmp(s, "32") == 0);
  return OSSL_PARAM_get_int(p, &v) && (v == PSS_SALT || v == RSA_PSS_SALTLEN_DIGEST);
}

/* A digest parameter that names SHA-256. */
static int digest_param_ok(const sig_ctx *c, const OSSL_PARAM *p) {
  char s[64];
  if (!get_str(p, s, sizeof(s))) {
    ERR_raise(ERR_LIB_PROV, PROV_R_INVALID_DIGEST);
    return 0;
  }
  return digest_ok(c, s);
}

static int sig_set_params(void *ctx, const OSSL_PARAM params[]) {
  sig_ctx *c = ctx;
  const OSSL_PARAM *p;
  if (params == NULL) return 1;
  if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL &&
      !digest_param_ok(c, p))
    return 0;
  if (c->ecdsa) return 1;
  if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL &&
      !get_pad(p, &c->pad)) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_INVALID_PADDING_MODE,
                   "kysohsm signs with PKCS#1 v1.5 or PSS padding only");
    return 0;
  }
  if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL &&
      !saltlen_ok(p)) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_INVALID_SALT_LENGTH,
                   "kysohsm's PSS salt is %d bytes (the HSM mechanism's)", PSS_SALT);
    return 0;
  }
  if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL &&
      !digest_param_ok(c, p))
    return 0;
  return 1;
}

static int set_int_or_string(OSSL_PARAM *p, int v, const char *s) {
  if (p->data_type == OSSL_PARAM_UTF8_STRING) return OSSL_PARAM_set_utf8_string(p, s);
  return OSSL_PARAM_set_int(p, v);
}

static int sig_get_params(void *ctx, OSSL_PARAM params[]) {
  sig_ctx *c = ctx;
  OSSL_PARAM *p;
  int pss = !c->ecdsa && c->pad == RSA_PKCS1_PSS_PADDING;
  const char *md = EVP_MD_get0_name(c->prov->sha256);
  if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) != NULL &&
      !(c->ecdsa ? OSSL_PARAM_set_octet_string(p, aid_ecdsa, sizeof(aid_ecdsa))
        : pss    ? OSSL_PARAM_set_octet_string(p, aid_rsa_pss, sizeof(aid_rsa_pss))
                 : OSSL_PARAM_set_octet_string(p, aid_rsa_pkcs1, sizeof(aid_rsa_pkcs1))))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) != NULL &&
      !OSSL_PARAM_set_utf8_string(p, md))
    return 0;
  if (c->ecdsa) return 1;
  if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL &&
      !set_int_or_string(p, c->pad,
                         pss ? OSSL_PKEY_RSA_PAD_MODE_PSS : OSSL_PKEY_RSA_PAD_MODE_PKCSV15))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL &&
      !set_int_or_string(p, PSS_SALT, "32"))
    return 0;
  if ((p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL &&
      !OSSL_PARAM_set_utf8_string(p, md))
    return 0;
  return 1;
}

static const OSSL_PARAM rsa_gettable_tbl[] = {
    OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
    OSSL_PARAM_END};
static const OSSL_PARAM rsa_settable_tbl[] = {
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES, NULL, 0),
    OSSL_PARAM_END};
static const OSSL_PARAM ecdsa_gettable_tbl[] = {
    OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_END};
static const OSSL_PARAM ecdsa_settable_tbl[] = {
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM *rsa_gettable(void *ctx, void *provctx) { return rsa_gettable_tbl; }
static const OSSL_PARAM *rsa_settable(void *ctx, void *provctx) { return rsa_settable_tbl; }
static const OSSL_PARAM *ecdsa_gettable(void *ctx, void *provctx) { return ecdsa_gettable_tbl; }
static const OSSL_PARAM *ecdsa_settable(void *ctx, void *provctx) { return ecdsa_settable_tbl; }

#define FN(id, f) {id, (void (*)(void))(f)}
#define COMMON_FUNCTIONS                                          \
  FN(OSSL_FUNC_SIGNATURE_FREECTX, sig_freectx),                   \
  FN(OSSL_FUNC_SIGNATURE_DUPCTX, sig_dupctx),                     \
  FN(OSSL_FUNC_SIGNATURE_SIGN_INIT, sig_sign_init),               \
  FN(OSSL_FUNC_SIGNATURE_SIGN, sig_sign),                         \
  FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, sig_digest_init),      \
  FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, sig_digest_update),  \
  FN(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, sig_digest_final),    \
  FN(OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, sig_get_params),         \
  FN(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, sig_set_params)

const OSSL_DISPATCH signer__signature_rsa_functions[] = {
    FN(OSSL_FUNC_SIGNATURE_NEWCTX, rsa_newctx),
    COMMON_FUNCTIONS,
    FN(OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, rsa_gettable),
    FN(OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, rsa_settable),
    {0, NULL}};

const OSSL_DISPATCH signer__signature_ecdsa_functions[] = {
    FN(OSSL_FUNC_SIGNATURE_NEWCTX, ecdsa_newctx),
    COMMON_FUNCTIONS,
    FN(OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, ecdsa_gettable),
    FN(OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, ecdsa_settable),
    {0, NULL}};
