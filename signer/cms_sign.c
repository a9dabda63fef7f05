/* kyso — detached CMS SignedData with CAdES-BES signed attributes, built by
 * OpenSSL in the signer's library context; the signature value comes from
 * the HSM through the kysohsm key. One builder serves both entry points:
 * signer_sign_cms has CMS_final digest the document, signer_sign_cms_digest
 * finishes the SignerInfo from a SHA-256 the caller computed. */
#include <limits.h>

#include <openssl/cms.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "signer_internal.h"

/* DETACHED: the document is not embedded. BINARY: its bytes are signed as
 * they are (no MIME canonicalisation). CADES: signing-certificate-v2.
 * PARTIAL: we add the signer ourselves, then finish. NOSMIMECAP: no S/MIME
 * capabilities attribute, which means nothing for documents. */
#define SIGN_FLAGS (CMS_DETACHED | CMS_BINARY | CMS_CADES | CMS_PARTIAL | CMS_NOSMIMECAP)

/* What is signed: the document's bytes, or, when sha256 is set, its digest. */
typedef struct content {
  const uint8_t *doc;
  size_t doc_len;
  const uint8_t *sha256;
  signer_stamp_fn stamp; /* CAdES-T: the token over the signature value */
  void *stamp_arg;
} content;

/* The checks both entry points share; fn names the caller in messages. */
static kyso_status check_args(const char *fn, signer *s, const char *label,
                              signer_rsa_scheme scheme, time_t signing_time, uint8_t **der,
                              size_t *der_len, kyso_err *err) {
  if (s == NULL || der == NULL || der_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s: signer and output are required", fn);
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

/* CMS_final digests the document and signs (BIO_new_mem_buf wants a
 * non-NULL pointer, and empty documents are signable). */
static int finish_content(CMS_ContentInfo *cms, const uint8_t *doc, size_t doc_len) {
  BIO *in = BIO_new_mem_buf(doc_len > 0 ? (const void *)doc : (const void *)"", (int)doc_len);
  int ok = in != NULL && CMS_final(cms, in, NULL, SIGN_FLAGS) == 1;
  BIO_free(in);
  return ok;
}

/* The signatureAlgorithm of a SignerInfo whose key context has its own
 * parameters (RSA-PSS): the context's AlgorithmIdentifier, as CMS_final
 * sets it (OpenSSL 3.0 cms_SignerInfo_content_sign → ossl_cms_rsa_sign). */
static int set_pss_algorithm(CMS_SignerInfo *si) {
  EVP_PKEY_CTX *pctx = CMS_SignerInfo_get0_pkey_ctx(si);
  unsigned char aid[128];
  const unsigned char *p = aid;
  OSSL_PARAM params[2] = {
      OSSL_PARAM_construct_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, aid, sizeof(aid)),
      OSSL_PARAM_construct_end()};
  X509_ALGOR *alg = NULL, *got = NULL;
  CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &alg);
  int ok = pctx != NULL && alg != NULL && EVP_PKEY_CTX_get_params(pctx, params) > 0 &&
           params[0].return_size > 0 && params[0].return_size <= sizeof(aid) &&
           (got = d2i_X509_ALGOR(NULL, &p, (long)params[0].return_size)) != NULL &&
           X509_ALGOR_copy(alg, got);
  X509_ALGOR_free(got);
  return ok;
}

/* What CMS_final does to the SignerInfo once it has the content's digest
 * (OpenSSL 3.0 cms_SignerInfo_content_sign; 3.2 has CMS_final_digest), with
 * the digest given: the PSS signatureAlgorithm; message-digest; content-type
 * from the SignedData's eContentType (id-data); then CMS_SignerInfo_sign,
 * which adds signing-time when absent and signs the DER of the signed
 * attributes, a SET OF sorted as it is encoded, so the order they are added
 * in does not show. CMS_final's version fix-up leaves ours at 1 (issuer and
 * serial, X.509 certificates only, id-data). The tests compare the DER of
 * both paths. */
static int finish_digest(CMS_ContentInfo *cms, CMS_SignerInfo *si, int pss,
                         const uint8_t *sha256) {
  const ASN1_OBJECT *ctype = CMS_get0_eContentType(cms);
  return (!pss || set_pss_algorithm(si)) && ctype != NULL &&
         CMS_signed_add1_attr_by_NID(si, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING, sha256,
                                     SIGNER__DIGEST_LEN) > 0 &&
         CMS_signed_add1_attr_by_NID(si, NID_pkcs9_contentType, V_ASN1_OBJECT, ctype, -1) > 0 &&
         CMS_SignerInfo_sign(si) == 1;
}

/* CAdES-T: the stamp's token over the fresh signature value, added as the
 * unsigned signature-time-stamp attribute. The token is checked to be one
 * whole DER SEQUENCE, since it is copied into the encoding as it is. */
static kyso_status add_stamp(const content *c, CMS_SignerInfo *si, kyso_err *err) {
  kyso_status st;
  uint8_t *token = NULL;
  size_t token_len = 0;
  const ASN1_OCTET_STRING *sig = CMS_SignerInfo_get0_signature(si);
  if ((st = c->stamp(c->stamp_arg, ASN1_STRING_get0_data(sig), (size_t)ASN1_STRING_length(sig),
                     &token, &token_len, err)) != KYSO_OK)
    goto out;
  const unsigned char *p = token;
  long len = 0;
  int tag = 0, cls = 0;
  if (token == NULL || token_len < 2 || token_len > KYSO_MAX_MESSAGE ||
      (ASN1_get_object(&p, &len, &tag, &cls, (long)token_len) & 0x80) != 0 ||
      tag != V_ASN1_SEQUENCE || cls != V_ASN1_UNIVERSAL || p + len != token + token_len) {
    ERR_clear_error();
    st = kyso_fail(err, KYSO_INTERNAL, "the time-stamp token is not one DER SEQUENCE");
    goto out;
  }
  if (CMS_unsigned_add1_attr_by_NID(si, NID_id_smime_aa_timeStampToken, V_ASN1_SEQUENCE, token,
                                    (int)token_len) <= 0) {
    kyso_fail(err, KYSO_INTERNAL, "cannot add the signature-time-stamp attribute:");
    st = kyso_err_add_openssl(err);
  }
out:
  OPENSSL_free(token);
  return st;
}

/* The builder behind both entry points, arguments checked: label's key and
 * certificate, a detached SignedData with the chain and one SignerInfo
 * (signing-certificate-v2, signing-time when given), finished over c and
 * DER-encoded into *der (OPENSSL_malloc()ed). */
static kyso_status sign(signer *s, const char *label, signer_rsa_scheme scheme,
                        const content *c, time_t signing_time, uint8_t **der, size_t *der_len,
                        kyso_err *err) {
  kyso_status st;
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  STACK_OF(X509) *chain = NULL;
  CMS_ContentInfo *cms = NULL;
  unsigned char *out = NULL;
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
  if (c->sha256 != NULL ? !finish_digest(cms, si, pss, c->sha256)
                        : !finish_content(cms, c->doc, c->doc_len)) {
    st = signer__openssl_failure(err, "signing", label);
    goto out;
  }
  if (c->stamp != NULL && (st = add_stamp(c, si, err)) != KYSO_OK) goto out;
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
  CMS_ContentInfo_free(cms);
  sk_X509_pop_free(chain, X509_free);
  X509_free(cert);
  EVP_PKEY_free(key);
  return st;
}

kyso_status signer_sign_cms(signer *s, const char *label, signer_rsa_scheme scheme,
                            const uint8_t *doc, size_t doc_len, time_t signing_time,
                            uint8_t **der, size_t *der_len, kyso_err *err) {
  kyso_status st;
  if (der != NULL) *der = NULL;
  if (der_len != NULL) *der_len = 0;
  if ((st = check_args("signer_sign_cms", s, label, scheme, signing_time, der, der_len, err)) !=
      KYSO_OK)
    return st;
  if (doc == NULL && doc_len > 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signer_sign_cms: the document is NULL");
  /* BIO_new_mem_buf takes an int length. */
  if (doc_len > INT_MAX)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "document of %zu bytes is too large to sign",
                     doc_len);
  const content c = {.doc = doc, .doc_len = doc_len};
  return sign(s, label, scheme, &c, signing_time, der, der_len, err);
}

kyso_status signer_sign_cms_digest(signer *s, const char *label, signer_rsa_scheme scheme,
                                   const uint8_t sha256[32], time_t signing_time, uint8_t **der,
                                   size_t *der_len, kyso_err *err) {
  kyso_status st;
  if (der != NULL) *der = NULL;
  if (der_len != NULL) *der_len = 0;
  if ((st = check_args("signer_sign_cms_digest", s, label, scheme, signing_time, der, der_len,
                       err)) != KYSO_OK)
    return st;
  if (sha256 == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_sign_cms_digest: the document's SHA-256 is NULL");
  const content c = {.sha256 = sha256};
  return sign(s, label, scheme, &c, signing_time, der, der_len, err);
}

kyso_status signer_sign_cades_t(signer *s, const char *label, signer_rsa_scheme scheme,
                                const uint8_t *doc, size_t doc_len, const uint8_t *sha256,
                                time_t signing_time, signer_stamp_fn stamp, void *arg,
                                uint8_t **der, size_t *der_len, kyso_err *err) {
  kyso_status st;
  if (der != NULL) *der = NULL;
  if (der_len != NULL) *der_len = 0;
  if ((st = check_args("signer_sign_cades_t", s, label, scheme, signing_time, der, der_len,
                       err)) != KYSO_OK)
    return st;
  if (stamp == NULL || (sha256 == NULL) == (doc == NULL && doc_len == 0) ||
      (doc == NULL && doc_len > 0))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_sign_cades_t: a stamp and either the document or its SHA-256 are "
                     "required");
  if (doc_len > INT_MAX)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "document of %zu bytes is too large to sign",
                     doc_len);
  const content c = {.doc = doc, .doc_len = doc_len, .sha256 = sha256, .stamp = stamp,
                     .stamp_arg = arg};
  return sign(s, label, scheme, &c, signing_time, der, der_len, err);
}
