/* kyso — verification of detached CMS signatures, in the process-wide
 * default library context (never the signer's, where kysohsm is preferred
 * and nothing can verify).
 *
 * Status codes, chosen so a caller can tell "you sent garbage" from "this
 * signature does not hold":
 *   INVALID_ARGUMENT     the input is not a detached CMS SignedData with a
 *                        signer: not DER, trailing bytes, another content
 *                        type, content embedded, no SignerInfo, over limits;
 *   FAILED_PRECONDITION  it is one, but it does not verify: message digest
 *                        or signature mismatch, untrusted or invalid chain,
 *                        missing or wrong signing-certificate-v2. The message
 *                        carries OpenSSL's reason.
 * The purpose and verification time are the store's (X509_STORE_set_purpose,
 * X509_VERIFY_PARAM_set_time); by default OpenSSL checks S/MIME signing now. */
#include <limits.h>

#include <openssl/cms.h>
#include <openssl/err.h>

#include "signer_internal.h"

/* CMS_CADES: signing-certificate-v2 (or v1) must be present and name the
 * signer's certificate. No CMS_DETACHED here: it means nothing to verify,
 * the detached content is what we pass as dcont. */
#define VERIFY_FLAGS (CMS_BINARY | CMS_CADES)

/* A sentence for the usual reasons CMS_verify gives (its last error). */
static const char *why(unsigned long e) {
  if (ERR_GET_LIB(e) == ERR_LIB_ESS)
    return "its signing-certificate-v2 attribute is missing or does not name the signer";
  if (ERR_GET_LIB(e) != ERR_LIB_CMS) return "it failed a check";
  switch (ERR_GET_REASON(e)) {
    case CMS_R_CONTENT_VERIFY_ERROR:
      return "the document is not the one signed (message digest differs)";
    case CMS_R_VERIFICATION_FAILURE:
      return "the signature value does not match the signer's public key";
    case CMS_R_CERTIFICATE_VERIFY_ERROR:
      return "the signer's certificate is not trusted";
    case CMS_R_SIGNER_CERTIFICATE_NOT_FOUND:
      return "the signer's certificate is not in the signature";
    default:
      return "it failed a check";
  }
}

static kyso_status parse(const uint8_t *sig, size_t sig_len, CMS_ContentInfo **out,
                         kyso_err *err) {
  const unsigned char *p = sig;
  CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)sig_len);
  *out = NULL;
  if (cms == NULL) {
    kyso_fail(err, KYSO_INVALID_ARGUMENT, "signature is not a DER CMS ContentInfo:");
    kyso_err_add_openssl(err);
    return KYSO_INVALID_ARGUMENT;
  }
  kyso_status st = KYSO_OK;
  if (p != sig + sig_len)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "signature has %zu bytes after its DER",
                   (size_t)(sig + sig_len - p));
  else if (OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "signature is a CMS %s, not SignedData",
                   OBJ_nid2sn(OBJ_obj2nid(CMS_get0_type(cms))));
  else if (CMS_is_detached(cms) != 1)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "signature embeds its content; kyso verifies detached signatures");
  else if (sk_CMS_SignerInfo_num(CMS_get0_SignerInfos(cms)) < 1)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "signature has no SignerInfo");
  if (st != KYSO_OK) {
    ERR_clear_error();
    CMS_ContentInfo_free(cms);
    return st;
  }
  *out = cms;
  return KYSO_OK;
}

/* RFC 5652 11.1: the content-type signed attribute must equal the
 * SignedData's eContentType. OpenSSL 3.0's CMS_verify does not check it. */
static kyso_status check_content_type(CMS_ContentInfo *cms, kyso_err *err) {
  const ASN1_OBJECT *econtent = CMS_get0_eContentType(cms);
  STACK_OF(CMS_SignerInfo) *infos = CMS_get0_SignerInfos(cms);
  for (int i = 0; i < sk_CMS_SignerInfo_num(infos); i++) {
    CMS_SignerInfo *si = sk_CMS_SignerInfo_value(infos, i);
    int at = CMS_signed_get_attr_by_NID(si, NID_pkcs9_contentType, -1);
    if (at < 0) continue; /* without signed attributes there is nothing to compare */
    ASN1_OBJECT *ct = CMS_signed_get0_data_by_OBJ(si, OBJ_nid2obj(NID_pkcs9_contentType), -3,
                                                  V_ASN1_OBJECT);
    if (ct == NULL || econtent == NULL || OBJ_cmp(ct, econtent) != 0)
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "CMS signature does not verify: signer %d's content-type attribute does "
                       "not match the signed content's type", i + 1);
  }
  return KYSO_OK;
}

kyso_status signer_verify_cms(X509_STORE *store, const uint8_t *sig, size_t sig_len,
                              const uint8_t *doc, size_t doc_len, X509 **signer_out,
                              kyso_err *err) {
  kyso_status st;
  CMS_ContentInfo *cms = NULL;
  BIO *in = NULL;
  STACK_OF(X509) *signers = NULL;
  if (signer_out != NULL) *signer_out = NULL;
  if (store == NULL || sig == NULL || sig_len == 0 || (doc == NULL && doc_len > 0))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_verify_cms: store, signature and document are required");
  if (sig_len > KYSO_MAX_MESSAGE)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signature of %zu bytes is over the %d limit",
                     sig_len, KYSO_MAX_MESSAGE);
  if (doc_len > INT_MAX)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "document of %zu bytes is too large", doc_len);
  ERR_clear_error();
  if ((st = parse(sig, sig_len, &cms, err)) != KYSO_OK) goto out;
  in = BIO_new_mem_buf(doc_len > 0 ? (const void *)doc : (const void *)"", (int)doc_len);
  if (in == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory verifying a signature");
    goto out;
  }
  if (CMS_verify(cms, NULL, store, in, NULL, VERIFY_FLAGS) != 1) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "CMS signature does not verify: %s:",
                   why(ERR_peek_last_error()));
    kyso_err_add_openssl(err);
    goto out;
  }
  if ((st = check_content_type(cms, err)) != KYSO_OK) goto out;
  if (signer_out != NULL) {
    /* Set by CMS_verify for every SignerInfo it checked; we report the first. */
    signers = CMS_get0_signers(cms);
    X509 *x = sk_X509_value(signers, 0);
    if (x == NULL || !X509_up_ref(x)) {
      st = kyso_fail(err, KYSO_INTERNAL, "verified signature has no signer certificate");
      goto out;
    }
    *signer_out = x;
  }
out:
  sk_X509_free(signers);
  BIO_free(in);
  CMS_ContentInfo_free(cms);
  return st;
}
