/* kyso — detached CMS SignedData with CAdES-BES signed attributes, built by
 * OpenSSL in the signer's library context; the signature value comes from
 * the HSM through the kysohsm key. */
#include <limits.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "signer_internal.h"

/* DETACHED: the document is not embedded. BINARY: its bytes are signed as
 * they are (no MIME canonicalisation). CADES: signing-certificate-v2.
 * PARTIAL: we add the signer ourselves, then CMS_final. NOSMIMECAP: no
 * S/MIME capabilities attribute, which means nothing for documents. */
#define SIGN_FLAGS (CMS_DETACHED | CMS_BINARY | CMS_CADES | CMS_PARTIAL | CMS_NOSMIMECAP)

static kyso_status check_args(signer *s, const char *label, signer_rsa_scheme scheme,
                              const uint8_t *doc, size_t doc_len, time_t signing_time,
                              uint8_t **der, size_t *der_len, kyso_err *err) {
  if (s == NULL || der == NULL || der_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signer_sign_cms: signer and output are required");
  if (doc == NULL && doc_len > 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signer_sign_cms: the document is NULL");
  /* BIO_new_mem_buf takes an int length. */
  if (doc_len > INT_MAX)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "document of %zu bytes is too large to sign",
                     doc_len);
  if (scheme != SIGNER_RSA_PKCS1 && scheme != SIGNER_RSA_PSS)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "unknown RSA signature scheme %d", (int)scheme);
  if (signing_time < 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signing time %lld is before 1970",
                     (long long)signing_time);
  return signer__label_check(label, err);
}

/* The chain, minus anything already in the SignedData (the leaf, repeats). */
static int add_chain(CMS_ContentInfo *cms, X509 *leaf, STACK_OF(X509) *chain) {
  for (int i = 0; i < sk_X509_num(chain); i++) {
    X509 *x = sk_X509_value(chain, i);
    int dup = X509_cmp(x, leaf) == 0;
    for (int j = 0; j < i && !dup; j++) dup = X509_cmp(x, sk_X509_value(chain, j)) == 0;
    if (!dup && !CMS_add1_cert(cms, x)) return 0;
  }
  return 1;
}

/* RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32: the HSM mechanism's values.
 * CMS asks the key's signature context for the AlgorithmIdentifier. */
static int set_pss(CMS_SignerInfo *si, const EVP_MD *sha256) {
  EVP_PKEY_CTX *pctx = CMS_SignerInfo_get0_pkey_ctx(si);
  return pctx != NULL && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) > 0 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, sha256) > 0;
}

static int set_signing_time(CMS_SignerInfo *si, time_t t) {
  ASN1_TIME *at = ASN1_TIME_set(NULL, t); /* UTCTime until 2049, then GeneralizedTime */
  int ok = at != NULL &&
           CMS_signed_add1_attr_by_NID(si, NID_pkcs9_signingTime, at->type, at, -1) > 0;
  ASN1_TIME_free(at);
  return ok;
}

kyso_status signer_sign_cms(signer *s, const char *label, signer_rsa_scheme scheme,
                            const uint8_t *doc, size_t doc_len, time_t signing_time,
                            uint8_t **der, size_t *der_len, kyso_err *err) {
  kyso_status st;
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  STACK_OF(X509) *chain = NULL;
  CMS_ContentInfo *cms = NULL;
  BIO *in = NULL;
  unsigned char *out = NULL;
  if (der != NULL) *der = NULL;
  if (der_len != NULL) *der_len = 0;
  if ((st = check_args(s, label, scheme, doc, doc_len, signing_time, der, der_len, err)) !=
      KYSO_OK)
    return st;
  if ((st = signer__key_get(s, label, &key, err)) != KYSO_OK) goto out;
  int pss = scheme == SIGNER_RSA_PSS;
  if (pss && !EVP_PKEY_is_a(key, "RSA")) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "RSA-PSS was asked of key '%s', which is not RSA",
                   label);
    goto out;
  }
  st = signer__certstore_get(s->certs, label, &cert, &chain, err);
  if (st == KYSO_NOT_FOUND) /* the key exists: the operator has to import one */
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "key '%s' has no certificate; import one before signing", label);
  if (st != KYSO_OK) goto out;
  ERR_clear_error();
  signer__hsm_error_clear();
  CMS_SignerInfo *si = NULL;
  if ((cms = CMS_sign_ex(NULL, NULL, NULL, NULL, SIGN_FLAGS, s->libctx, NULL)) == NULL ||
      (si = CMS_add1_signer(cms, cert, key, s->sha256,
                            SIGN_FLAGS | (pss ? CMS_KEY_PARAM : 0))) == NULL ||
      (pss && !set_pss(si, s->sha256)) || !add_chain(cms, cert, chain) ||
      (signing_time != 0 && !set_signing_time(si, signing_time))) {
    st = signer__openssl_failure(err, "preparing the CMS signature", label);
    goto out;
  }
  /* Empty documents are signable; BIO_new_mem_buf wants a non-NULL pointer. */
  in = BIO_new_mem_buf(doc_len > 0 ? (const void *)doc : (const void *)"", (int)doc_len);
  if (in == NULL || CMS_final(cms, in, NULL, SIGN_FLAGS) != 1) {
    st = signer__openssl_failure(err, "signing", label);
    goto out;
  }
  int n = i2d_CMS_ContentInfo(cms, &out);
  if (n <= 0) {
    st = signer__openssl_failure(err, "encoding the CMS signature", label);
    goto out;
  }
  *der = out;
  *der_len = (size_t)n;
  out = NULL;
out:
  OPENSSL_free(out);
  BIO_free(in);
  CMS_ContentInfo_free(cms);
  sk_X509_pop_free(chain, X509_free);
  X509_free(cert);
  EVP_PKEY_free(key);
  return st;
}
