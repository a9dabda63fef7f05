/* kyso — the client side of RFC 3161: a query for a SHA-256 digest, and the
 * checks on what a TSA answers. The token checks also serve the
 * signature-time-stamps of CAdES-T signatures (cms_verify.c). Like every
 * verification in signer/, this runs in the process-wide default library
 * context.
 *
 * OpenSSL's TS verification builds the TSA's chain with
 * X509_STORE_CTX_set_purpose(timestampsign), which in 3.0 only applies when
 * the store has no purpose of its own: a store set up for "any" purpose
 * would accept any certificate as a TSA's. So the chain is also checked
 * here with the purpose forced (RFC 3161 2.3: a critical extendedKeyUsage
 * of exactly timeStamping). */

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ts.h>
#include <openssl/x509v3.h>

#include "kyso/x509_text.h"
#include "signer_internal.h"

/* Version 1, SHA-256 imprint (parameters NULL, as `openssl ts -query`
 * writes them), certReq true so the token carries the TSA's certificate,
 * the nonce when given. NULL on failure (OpenSSL error raised). */
static TS_REQ *build_req(const uint8_t sha256[32], const uint64_t *nonce) {
  TS_REQ *req = TS_REQ_new();
  TS_MSG_IMPRINT *mi = TS_MSG_IMPRINT_new();
  X509_ALGOR *alg = X509_ALGOR_new();
  ASN1_INTEGER *n = NULL;
  /* The TS setters copy their argument. */
  int ok = req != NULL && mi != NULL && alg != NULL &&
           X509_ALGOR_set0(alg, OBJ_nid2obj(NID_sha256), V_ASN1_NULL, NULL) &&
           TS_MSG_IMPRINT_set_algo(mi, alg) &&
           TS_MSG_IMPRINT_set_msg(mi, (unsigned char *)sha256, SIGNER__DIGEST_LEN) &&
           TS_REQ_set_version(req, 1) && TS_REQ_set_msg_imprint(req, mi) &&
           TS_REQ_set_cert_req(req, 1);
  if (ok && nonce != NULL)
    ok = (n = ASN1_INTEGER_new()) != NULL && ASN1_INTEGER_set_uint64(n, *nonce) &&
         TS_REQ_set_nonce(req, n);
  ASN1_INTEGER_free(n);
  X509_ALGOR_free(alg);
  TS_MSG_IMPRINT_free(mi);
  if (!ok) {
    TS_REQ_free(req);
    return NULL;
  }
  return req;
}

kyso_status signer__ts_request(const uint8_t sha256[32], const uint64_t *nonce, uint8_t **der,
                               size_t *der_len, kyso_err *err) {
  kyso_status st = KYSO_OK;
  unsigned char *out = NULL;
  TS_REQ *req = build_req(sha256, nonce);
  int n = req != NULL ? i2d_TS_REQ(req, &out) : 0;
  if (n <= 0) {
    kyso_fail(err, KYSO_INTERNAL, "cannot build a time-stamp request:");
    st = kyso_err_add_openssl(err);
    goto out;
  }
  *der = out;
  *der_len = (size_t)n;
  out = NULL;
out:
  OPENSSL_free(out);
  TS_REQ_free(req);
  return st;
}

kyso_status signer_ts_query(const uint8_t sha256[32], uint64_t *nonce, uint8_t **der,
                            size_t *der_len, kyso_err *err) {
  unsigned char rnd[8];
  uint64_t v = 0;
  if (der != NULL) *der = NULL;
  if (der_len != NULL) *der_len = 0;
  if (sha256 == NULL || nonce == NULL || der == NULL || der_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_ts_query: digest, nonce and output are required");
  if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
    kyso_fail(err, KYSO_INTERNAL, "no random bytes for a time-stamp nonce:");
    return kyso_err_add_openssl(err);
  }
  for (size_t i = 0; i < sizeof(rnd); i++) v = v << 8 | rnd[i];
  *nonce = v;
  return signer__ts_request(sha256, nonce, der, der_len, err);
}

/* A sentence for the usual reasons TS_RESP_verify_token gives. */
static const char *why(unsigned long e) {
  if (ERR_GET_LIB(e) == ERR_LIB_ESS)
    return "its signing-certificate attribute does not name the TSA's certificate";
  if (ERR_GET_LIB(e) != ERR_LIB_TS) return "it failed a check";
  switch (ERR_GET_REASON(e)) {
    case TS_R_MESSAGE_IMPRINT_MISMATCH:
      return "its message imprint is not the digest that was stamped";
    case TS_R_NONCE_MISMATCH:
      return "its nonce is not the request's";
    case TS_R_NONCE_NOT_RETURNED:
      return "it carries no nonce, the request had one";
    case TS_R_UNSUPPORTED_VERSION:
      return "its TSTInfo version is not 1";
    case TS_R_SIGNATURE_FAILURE:
      return "its signature does not match the TSA's certificate";
    case TS_R_CERTIFICATE_VERIFY_ERROR:
      return "the TSA's certificate is not trusted";
    case TS_R_ESS_SIGNING_CERTIFICATE_ERROR:
      return "its signing-certificate attribute does not name the TSA's certificate";
    case TS_R_THERE_MUST_BE_ONE_SIGNER:
      return "it does not have exactly one signer";
    default:
      return "it failed a check";
  }
}

/* The token's signer certificate chains to store for time-stamping, the
 * purpose forced (see the top of the file), at the store's time. */
static kyso_status check_tsa_chain(PKCS7 *token, X509_STORE *store, kyso_err *err) {
  kyso_status st = KYSO_OK;
  X509_STORE_CTX *ctx = NULL;
  STACK_OF(X509) *signers = PKCS7_get0_signers(token, NULL, 0);
  if (sk_X509_num(signers) != 1) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "time-stamp token does not verify: it does not carry its TSA's certificate "
                   "(it should have been asked for with certReq)");
    goto out;
  }
  X509 *tsa = sk_X509_value(signers, 0);
  if ((ctx = X509_STORE_CTX_new()) == NULL ||
      !X509_STORE_CTX_init(ctx, store, tsa, token->d.sign->cert) ||
      !X509_VERIFY_PARAM_set_purpose(X509_STORE_CTX_get0_param(ctx),
                                     X509_PURPOSE_TIMESTAMP_SIGN)) {
    kyso_fail(err, KYSO_INTERNAL, "cannot set up the check of a TSA certificate:");
    st = kyso_err_add_openssl(err);
    goto out;
  }
  if (X509_verify_cert(ctx) != 1) {
    char name[256];
    kyso_x509_name_utf8(X509_get_subject_name(tsa), name, sizeof(name));
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "time-stamp token does not verify: the TSA's certificate '%s' is not trusted "
                   "for time-stamping: %s",
                   name, X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    goto out;
  }
out:
  X509_STORE_CTX_free(ctx);
  sk_X509_free(signers);
  ERR_clear_error();
  return st;
}

kyso_status signer__ts_check(TS_VERIFY_CTX *vctx, PKCS7 *token, X509_STORE *store,
                             kyso_err *err) {
  kyso_status st;
  if (store != NULL) {
    if ((st = check_tsa_chain(token, store, err)) != KYSO_OK) return st;
    /* 3.0's TS_VERIFY_CTX_set_store hands the store to the context, whose
     * free frees it: the context gets its own reference. */
    if (!X509_STORE_up_ref(store))
      return kyso_fail(err, KYSO_INTERNAL, "cannot take a reference to the trust store");
    TS_VERIFY_CTX_set_store(vctx, store);
    TS_VERIFY_CTX_add_flags(vctx, TS_VFY_SIGNATURE);
  }
  ERR_clear_error();
  if (TS_RESP_verify_token(vctx, token) != 1) {
    kyso_fail(err, KYSO_FAILED_PRECONDITION, "time-stamp token does not verify: %s:",
              why(ERR_peek_last_error()));
    return kyso_err_add_openssl(err);
  }
  ERR_clear_error();
  return KYSO_OK;
}

kyso_status signer_ts_accept(const uint8_t *resp, size_t resp_len, const uint8_t sha256[32],
                             uint64_t nonce, X509_STORE *store, uint8_t **token,
                             size_t *token_len, kyso_err *err) {
  kyso_status st = KYSO_OK;
  const unsigned char *p = resp;
  TS_RESP *r = NULL;
  TS_REQ *req = NULL;
  TS_VERIFY_CTX *vctx = NULL;
  unsigned char *out = NULL;
  if (token != NULL) *token = NULL;
  if (token_len != NULL) *token_len = 0;
  if (resp == NULL || sha256 == NULL || token == NULL || token_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_ts_accept: reply, digest and output are required");
  if (resp_len == 0 || resp_len > KYSO_MAX_MESSAGE)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "time-stamp reply of %zu bytes", resp_len);
  ERR_clear_error();
  if ((r = d2i_TS_RESP(NULL, &p, (long)resp_len)) == NULL || p != resp + resp_len) {
    kyso_fail(err, KYSO_INVALID_ARGUMENT, "time-stamp reply is not a DER TimeStampResp:");
    st = kyso_err_add_openssl(err);
    goto out;
  }
  long status = ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(TS_RESP_get_status_info(r)));
  if (status != TS_STATUS_GRANTED && status != TS_STATUS_GRANTED_WITH_MODS) {
    char line[400];
    signer__ts_status_line(TS_RESP_get_status_info(r), line, sizeof(line));
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "the TSA did not grant the time-stamp: %s",
                   line);
    goto out;
  }
  /* The verify context of the request we sent: imprint with its algorithm,
   * and the nonce; the flags then say which checks run. */
  if ((req = build_req(sha256, &nonce)) == NULL ||
      (vctx = TS_REQ_to_TS_VERIFY_CTX(req, NULL)) == NULL) {
    kyso_fail(err, KYSO_INTERNAL, "cannot set up the time-stamp check:");
    st = kyso_err_add_openssl(err);
    goto out;
  }
  TS_VERIFY_CTX_set_flags(vctx, TS_VFY_VERSION | TS_VFY_IMPRINT | TS_VFY_NONCE);
  if ((st = signer__ts_check(vctx, TS_RESP_get_token(r), store, err)) != KYSO_OK) goto out;
  int n = i2d_PKCS7(TS_RESP_get_token(r), &out);
  if (n <= 0) {
    kyso_fail(err, KYSO_INTERNAL, "cannot encode the time-stamp token:");
    st = kyso_err_add_openssl(err);
    goto out;
  }
  *token = out;
  *token_len = (size_t)n;
  out = NULL;
out:
  OPENSSL_free(out);
  TS_VERIFY_CTX_free(vctx);
  TS_REQ_free(req);
  TS_RESP_free(r);
  ERR_clear_error();
  return st;
}
