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
 * X509_VERIFY_PARAM_set_time); by default OpenSSL checks S/MIME signing now.
 * signer_verify_cms_full checks a signer's chain at the genTime of its
 * signature-time-stamp instead, when it has one.
 *
 * CMS_verify cannot check a chain at another time than the store's, and
 * with CMS_CADES it checks chains even when told not to, so the chains and
 * the signing-certificate-v2 attribute (what CMS_CADES does) are checked
 * here, each signer at its own time; CMS_verify is left the signatures and
 * the message digest. */
#include <limits.h>
#include <string.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/ess.h>

#include "kyso/x509_text.h"
#include "signer_internal.h"

/* No CMS_DETACHED here: it means nothing to verify, the detached content is
 * what we pass as dcont. No CMS_CADES: see the top of the file. */
#define VERIFY_FLAGS (CMS_BINARY | CMS_NO_SIGNER_CERT_VERIFY)

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

kyso_status signer__cms_parse(const uint8_t *sig, size_t sig_len, int detached,
                             CMS_ContentInfo **out, kyso_err *err) {
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
  else if (detached && CMS_is_detached(cms) != 1)
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

/* The signing-certificate(-v2) attribute, as CMS_CADES checks it: present,
 * and naming the signer's certificate first in chain. The ESS library says
 * what was wrong. */
static int ess_matches(CMS_SignerInfo *si, STACK_OF(X509) *chain) {
  ESS_SIGNING_CERT *ss = NULL;
  ESS_SIGNING_CERT_V2 *ssv2 = NULL;
  /* -3: a repeated attribute, or one with several values, counts as absent. */
  const ASN1_STRING *v1 = CMS_signed_get0_data_by_OBJ(
      si, OBJ_nid2obj(NID_id_smime_aa_signingCertificate), -3, V_ASN1_SEQUENCE);
  const ASN1_STRING *v2 = CMS_signed_get0_data_by_OBJ(
      si, OBJ_nid2obj(NID_id_smime_aa_signingCertificateV2), -3, V_ASN1_SEQUENCE);
  const unsigned char *p;
  int ok = 1;
  if (v1 != NULL && ok) {
    p = ASN1_STRING_get0_data(v1);
    ok = (ss = d2i_ESS_SIGNING_CERT(NULL, &p, ASN1_STRING_length(v1))) != NULL;
  }
  if (v2 != NULL && ok) {
    p = ASN1_STRING_get0_data(v2);
    ok = (ssv2 = d2i_ESS_SIGNING_CERT_V2(NULL, &p, ASN1_STRING_length(v2))) != NULL;
  }
  ok = ok && OSSL_ESS_check_signing_certs(ss, ssv2, chain, 1) > 0;
  ESS_SIGNING_CERT_free(ss);
  ESS_SIGNING_CERT_V2_free(ssv2);
  return ok;
}

/* Signer n's (1-based) certificate chain to store with the S/MIME signing
 * purpose unless the store sets another (as CMS_verify does), at time `at`
 * (0: the store's), with the CRLs the signature carries; then its
 * signing-certificate-v2 attribute against that chain. */
static kyso_status check_signer(X509_STORE *store, CMS_SignerInfo *si, int n,
                                STACK_OF(X509) *certs, STACK_OF(X509_CRL) *crls, time_t at,
                                const char *at_text, kyso_err *err) {
  kyso_status st = KYSO_OK;
  X509 *x = NULL;
  X509_STORE_CTX *ctx = NULL;
  STACK_OF(X509) *chain = NULL;
  CMS_SignerInfo_get0_algs(si, NULL, &x, NULL, NULL);
  if ((ctx = X509_STORE_CTX_new()) == NULL || !X509_STORE_CTX_init(ctx, store, x, certs) ||
      !X509_STORE_CTX_set_default(ctx, "smime_sign")) {
    kyso_fail(err, KYSO_INTERNAL, "cannot set up the check of signer %d's certificate:", n);
    st = kyso_err_add_openssl(err);
    goto out;
  }
  if (at != 0) X509_STORE_CTX_set_time(ctx, 0, at);
  X509_STORE_CTX_set0_crls(ctx, crls);
  if (X509_verify_cert(ctx) != 1) {
    char name[256];
    int e = X509_STORE_CTX_get_error(ctx);
    kyso_x509_name_utf8(X509_get_subject_name(x), name, sizeof(name));
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "CMS signature does not verify: the signer's certificate is not trusted: %s "
                   "(signer %d, '%s', checked %s)",
                   X509_verify_cert_error_string(e), n, name,
                   at != 0 ? at_text : "at the trust store's time, by default now");
    goto out;
  }
  if ((chain = X509_STORE_CTX_get1_chain(ctx)) == NULL || !ess_matches(si, chain)) {
    kyso_fail(err, KYSO_FAILED_PRECONDITION, "CMS signature does not verify: %s:",
              why(ERR_PACK(ERR_LIB_ESS, 0, 0)));
    st = kyso_err_add_openssl(err);
    goto out;
  }
out:
  sk_X509_pop_free(chain, X509_free);
  X509_STORE_CTX_free(ctx);
  return st;
}

/* One signature-time-stamp value of si: a token whose imprint is the hash
 * (SHA-256/384/512, as the token says) of si's signature value, signed by a
 * TSA that chains to store for time-stamping. *info describes it. */
static kyso_status check_token(X509_STORE *store, CMS_SignerInfo *si, const ASN1_TYPE *value,
                               signer_ts_info *info, kyso_err *err) {
  kyso_status st = KYSO_OK;
  PKCS7 *token = NULL;
  TS_TST_INFO *tst = NULL;
  TS_VERIFY_CTX *vctx = NULL;
  unsigned char digest[EVP_MAX_MD_SIZE], *imprint = NULL;
  unsigned digest_len = 0;
  const ASN1_STRING *der = ASN1_TYPE_get(value) == V_ASN1_SEQUENCE ? value->value.sequence : NULL;
  const unsigned char *p = der != NULL ? ASN1_STRING_get0_data(der) : NULL;
  long len = der != NULL ? ASN1_STRING_length(der) : 0;
  if (der == NULL || signer_ts_describe(p, (size_t)len, 1, info, NULL) != KYSO_OK ||
      (token = d2i_PKCS7(NULL, &p, len)) == NULL || (tst = PKCS7_to_TS_TST_INFO(token)) == NULL) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "it is not a time-stamp token");
    goto out;
  }
  const X509_ALGOR *alg = TS_MSG_IMPRINT_get_algo(TS_TST_INFO_get_msg_imprint(tst));
  int nid = alg != NULL ? OBJ_obj2nid(alg->algorithm) : NID_undef;
  if (nid != NID_sha256 && nid != NID_sha384 && nid != NID_sha512) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "its imprint is a %s hash; SHA-256, SHA-384 and SHA-512 are accepted",
                   info->hash[0] ? info->hash : "unknown");
    goto out;
  }
  const ASN1_OCTET_STRING *sv = CMS_SignerInfo_get0_signature(si);
  if (!EVP_Digest(ASN1_STRING_get0_data(sv), (size_t)ASN1_STRING_length(sv), digest, &digest_len,
                  EVP_get_digestbynid(nid), NULL) ||
      (imprint = OPENSSL_memdup(digest, digest_len)) == NULL ||
      (vctx = TS_VERIFY_CTX_new()) == NULL) {
    kyso_fail(err, KYSO_INTERNAL, "cannot hash the signature value:");
    st = kyso_err_add_openssl(err);
    goto out;
  }
  /* The context owns the imprint from here. No md_alg is set, so OpenSSL
   * compares the bytes only; the algorithm is the token's, checked above. */
  TS_VERIFY_CTX_set_imprint(vctx, imprint, digest_len);
  imprint = NULL;
  TS_VERIFY_CTX_set_flags(vctx, TS_VFY_VERSION | TS_VFY_IMPRINT);
  st = signer__ts_check(vctx, token, store, err);
out:
  OPENSSL_free(imprint);
  TS_VERIFY_CTX_free(vctx);
  TS_TST_INFO_free(tst);
  PKCS7_free(token);
  ERR_clear_error();
  return st;
}

/* Every signature-time-stamp signer n carries (the attribute may repeat,
 * and hold several tokens) must verify; *count says how many there were,
 * *first describes the earliest, whose genTime the chain is checked at. */
static kyso_status check_timestamps(X509_STORE *store, CMS_SignerInfo *si, int n, int *count,
                                    signer_ts_info *first, kyso_err *err) {
  kyso_status st = KYSO_OK;
  *count = 0;
  for (int at = CMS_unsigned_get_attr_by_NID(si, NID_id_smime_aa_timeStampToken, -1); at >= 0;
       at = CMS_unsigned_get_attr_by_NID(si, NID_id_smime_aa_timeStampToken, at)) {
    X509_ATTRIBUTE *attr = CMS_unsigned_get_attr(si, at);
    for (int v = 0; v < X509_ATTRIBUTE_count(attr); v++) {
      signer_ts_info info;
      if ((st = check_token(store, si, X509_ATTRIBUTE_get0_type(attr, v), &info, err)) !=
          KYSO_OK) {
        kyso_err_wrap(err, "CMS signature does not verify: signer %d's signature-time-stamp", n);
        return st;
      }
      if (*count == 0 || info.gen_time < first->gen_time ||
          (info.gen_time == first->gen_time && info.gen_time_ms < first->gen_time_ms))
        *first = info;
      ++*count;
    }
  }
  return st;
}

/* The signing-time attribute, 0 if absent or unreadable (it is the
 * signer's own claim, for display only). */
static time_t signing_time(CMS_SignerInfo *si) {
  int at = CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1);
  const ASN1_TYPE *t = at >= 0 ? X509_ATTRIBUTE_get0_type(CMS_signed_get_attr(si, at), 0) : NULL;
  struct tm tm;
  if (t == NULL || (t->type != V_ASN1_UTCTIME && t->type != V_ASN1_GENERALIZEDTIME) ||
      !ASN1_TIME_to_tm(t->value.utctime, &tm)) {
    ERR_clear_error();
    return 0;
  }
  return timegm(&tm);
}

/* Both entry points: fn names the caller in messages; with use_timestamps
 * 0, signature-time-stamps are not looked at (signer_verify_cms). */
static kyso_status verify(const char *fn, X509_STORE *store, const uint8_t *sig, size_t sig_len,
                          const uint8_t *doc, size_t doc_len, unsigned flags, int use_timestamps,
                          signer_verified *out, kyso_err *err) {
  kyso_status st;
  CMS_ContentInfo *cms = NULL;
  BIO *in = NULL;
  STACK_OF(X509) *certs = NULL;
  STACK_OF(X509_CRL) *crls = NULL;
  signer_verified v;
  memset(&v, 0, sizeof(v));
  if (out != NULL) *out = v;
  if (store == NULL || sig == NULL || sig_len == 0 || (doc == NULL && doc_len > 0))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "%s: store, signature and document are required", fn);
  if (sig_len > KYSO_MAX_MESSAGE)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signature of %zu bytes is over the %d limit",
                     sig_len, KYSO_MAX_MESSAGE);
  if (doc_len > INT_MAX)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "document of %zu bytes is too large", doc_len);
  ERR_clear_error();
  if ((st = signer__cms_parse(sig, sig_len, 1, &cms, err)) != KYSO_OK) goto out;
  STACK_OF(CMS_SignerInfo) *infos = CMS_get0_SignerInfos(cms);
  /* Finds each signer's certificate among those the signature carries. */
  CMS_set1_signers_certs(cms, NULL, 0);
  for (int i = 0; i < sk_CMS_SignerInfo_num(infos); i++) {
    X509 *x = NULL;
    CMS_SignerInfo_get0_algs(sk_CMS_SignerInfo_value(infos, i), NULL, &x, NULL, NULL);
    if (x == NULL) {
      st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "CMS signature does not verify: %s (signer %d)",
                     why(ERR_PACK(ERR_LIB_CMS, 0, CMS_R_SIGNER_CERTIFICATE_NOT_FOUND)), i + 1);
      goto out;
    }
  }
  certs = CMS_get1_certs(cms); /* NULL when there are none */
  crls = CMS_get1_crls(cms);
  for (int i = 0; i < sk_CMS_SignerInfo_num(infos); i++) {
    CMS_SignerInfo *si = sk_CMS_SignerInfo_value(infos, i);
    signer_ts_info ts;
    int stamps = 0;
    memset(&ts, 0, sizeof(ts));
    if (use_timestamps && (st = check_timestamps(store, si, i + 1, &stamps, &ts, err)) != KYSO_OK)
      goto out;
    if (stamps == 0 && (flags & SIGNER_VERIFY_REQUIRE_TIMESTAMP)) {
      st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "signer %d has no signature-time-stamp (CAdES-T), and one is required", i + 1);
      goto out;
    }
    char at_text[96];
    snprintf(at_text, sizeof(at_text), "at the time-stamp's genTime %s", ts.gen_time_text);
    st = check_signer(store, si, i + 1, certs, crls, stamps > 0 ? ts.gen_time : 0, at_text, err);
    if (st != KYSO_OK) goto out;
    if (i == 0) {
      v.timestamped = stamps > 0;
      if (stamps > 0) v.ts = ts;
      v.signing_time = signing_time(si);
    }
  }
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
  if (out != NULL) {
    CMS_SignerInfo_get0_algs(sk_CMS_SignerInfo_value(infos, 0), NULL, &v.signer, NULL, NULL);
    if (!X509_up_ref(v.signer)) {
      st = kyso_fail(err, KYSO_INTERNAL, "verified signature has no signer certificate");
      goto out;
    }
    *out = v;
  }
out:
  sk_X509_CRL_pop_free(crls, X509_CRL_free);
  sk_X509_pop_free(certs, X509_free);
  BIO_free(in);
  CMS_ContentInfo_free(cms);
  ERR_clear_error();
  return st;
}

kyso_status signer_verify_cms(X509_STORE *store, const uint8_t *sig, size_t sig_len,
                              const uint8_t *doc, size_t doc_len, X509 **signer_out,
                              kyso_err *err) {
  signer_verified v;
  if (signer_out != NULL) *signer_out = NULL;
  kyso_status st = verify("signer_verify_cms", store, sig, sig_len, doc, doc_len, 0, 0,
                          signer_out != NULL ? &v : NULL, err);
  if (st == KYSO_OK && signer_out != NULL) *signer_out = v.signer;
  return st;
}

kyso_status signer_verify_cms_full(X509_STORE *store, const uint8_t *sig, size_t sig_len,
                                   const uint8_t *doc, size_t doc_len, unsigned flags,
                                   signer_verified *out, kyso_err *err) {
  return verify("signer_verify_cms_full", store, sig, sig_len, doc, doc_len, flags, 1, out, err);
}
