/* kyso — CAdES-T: the signature-time-stamp unsigned attribute (ETSI EN 319
 * 122-1 5.3, RFC 5126 6.1.1). Its token stamps the hash of the SignerInfo's
 * signature value, so adding it touches neither the signed attributes nor
 * the signature: the signature verifies as before, and the token says the
 * signature existed at its genTime. The token is checked in cms_verify.c. */
#include <stdlib.h>
#include <string.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/ts.h>

#include "signer_internal.h"

kyso_status signer_cms_signature_value(const uint8_t *cms, size_t cms_len, uint8_t **value,
                                       size_t *value_len, kyso_err *err) {
  kyso_status st;
  CMS_ContentInfo *ci = NULL;
  if (value != NULL) *value = NULL;
  if (value_len != NULL) *value_len = 0;
  if (cms == NULL || cms_len == 0 || value == NULL || value_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_cms_signature_value: signature and output are required");
  if (cms_len > KYSO_MAX_MESSAGE)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signature of %zu bytes is over the %d limit",
                     cms_len, KYSO_MAX_MESSAGE);
  ERR_clear_error();
  if ((st = signer__cms_parse(cms, cms_len, 0, &ci, err)) != KYSO_OK) goto out;
  const ASN1_OCTET_STRING *sv =
      CMS_SignerInfo_get0_signature(sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(ci), 0));
  size_t n = (size_t)ASN1_STRING_length(sv);
  if (n == 0) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "the SignerInfo has an empty signature value");
    goto out;
  }
  if ((*value = malloc(n)) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory copying a signature value");
    goto out;
  }
  memcpy(*value, ASN1_STRING_get0_data(sv), n);
  *value_len = n;
out:
  CMS_ContentInfo_free(ci);
  return st;
}

/* 1 if the first SignerInfo's signature over its signed attributes
 * verifies with the signer's certificate from the CMS; 0 if it does not or
 * cannot be checked (no certificate, no signed attributes). */
static int signed_attrs_verify(CMS_ContentInfo *ci) {
  CMS_SignerInfo *si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(ci), 0);
  X509 *x = NULL;
  CMS_set1_signers_certs(ci, NULL, 0);
  CMS_SignerInfo_get0_algs(si, NULL, &x, NULL, NULL);
  int ok = x != NULL && CMS_SignerInfo_verify(si) == 1;
  ERR_clear_error();
  return ok;
}

/* The attribute value is the token's ContentInfo itself: an ASN1_TYPE of
 * type SEQUENCE holds its whole DER and is written out as it is. OpenSSL
 * re-encodes the whole CMS, sorting every SET OF; signed attributes in DER
 * (as every conforming signer writes them) come out byte for byte, but a
 * signature over an unsorted SET would not survive, so the result is
 * checked before it is handed out. */
kyso_status signer_cms_add_timestamp(const uint8_t *cms, size_t cms_len, const uint8_t *token,
                                     size_t token_len, uint8_t **out, size_t *out_len,
                                     kyso_err *err) {
  kyso_status st;
  CMS_ContentInfo *ci = NULL, *check = NULL;
  PKCS7 *tok = NULL;
  TS_TST_INFO *tst = NULL;
  unsigned char *der = NULL;
  if (out != NULL) *out = NULL;
  if (out_len != NULL) *out_len = 0;
  if (cms == NULL || cms_len == 0 || token == NULL || token_len == 0 || out == NULL ||
      out_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_cms_add_timestamp: signature, token and output are required");
  if (cms_len > KYSO_MAX_MESSAGE || token_len > KYSO_MAX_MESSAGE)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signature (%zu bytes) or token (%zu bytes) is over the %d limit", cms_len,
                     token_len, KYSO_MAX_MESSAGE);
  ERR_clear_error();
  if ((st = signer__cms_parse(cms, cms_len, 0, &ci, err)) != KYSO_OK) goto out;
  CMS_SignerInfo *si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(ci), 0);
  if (CMS_unsigned_get_attr_by_NID(si, NID_id_smime_aa_timeStampToken, -1) >= 0) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "the signature already carries a signature-time-stamp");
    goto out;
  }
  const unsigned char *p = token;
  if ((tok = d2i_PKCS7(NULL, &p, (long)token_len)) == NULL || p != token + token_len ||
      (tst = PKCS7_to_TS_TST_INFO(tok)) == NULL) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "the token is not a DER time-stamp token (ContentInfo of a SignedData over a "
                   "TSTInfo)");
    goto out;
  }
  if (CMS_unsigned_add1_attr_by_NID(si, NID_id_smime_aa_timeStampToken, V_ASN1_SEQUENCE, token,
                                    (int)token_len) <= 0) {
    kyso_fail(err, KYSO_INTERNAL, "cannot add the signature-time-stamp attribute:");
    st = kyso_err_add_openssl(err);
    goto out;
  }
  int n = i2d_CMS_ContentInfo(ci, &der);
  if (n <= 0) {
    kyso_fail(err, KYSO_INTERNAL, "cannot encode the time-stamped signature:");
    st = kyso_err_add_openssl(err);
    goto out;
  }
  p = der;
  if ((check = d2i_CMS_ContentInfo(NULL, &p, n)) == NULL || p != der + n) {
    kyso_fail(err, KYSO_INTERNAL, "the time-stamped signature does not parse back:");
    st = kyso_err_add_openssl(err);
    goto out;
  }
  if (!signed_attrs_verify(check) && signed_attrs_verify(ci)) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "the signature's signed attributes are not in DER; adding a time-stamp would "
                   "change the bytes its signature covers");
    goto out;
  }
  *out = der;
  *out_len = (size_t)n;
  der = NULL;
out:
  OPENSSL_free(der);
  TS_TST_INFO_free(tst);
  PKCS7_free(tok);
  CMS_ContentInfo_free(check);
  CMS_ContentInfo_free(ci);
  ERR_clear_error();
  return st;
}
