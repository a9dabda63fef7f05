/* Fuzz target: the RFC 3161 responder (signer_tsa_respond) over a fuzzed
 * TimeStampReq, with a real TSA: an EC key in the in-memory fake HSM and a
 * certificate with the critical timeStamping EKU from a throw-away PKI,
 * made once. A bad request must be answered, never be an error of ours;
 * a granted token must be exactly what a well-formed SHA-256/384/512
 * request of our policy asked for, and a well-formed one must be granted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ts.h>
#include <openssl/x509.h>

#include "fake_fixture.h"
#include "kyso/signer.h"
#include "testutil.h"

#define POLICY "1.3.6.1.4.1.99999.1.1"
#define SERIAL UINT64_C(0xfedcba9876543210)
#define SERIAL_TEXT "18364758544493064720"
#define GEN_TIME ((time_t)1700000000) /* 2023-11-14T22:13:20Z */
#define GEN_TIME_MS 45u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
  fake_fixture *f;
  signer_tsa *t;
  X509_STORE *store; /* trusts the throw-away root */
  ASN1_OBJECT *policy;
} fx;

static void teardown(void) {
  signer_tsa_close(fx.t);
  X509_STORE_free(fx.store);
  ASN1_OBJECT_free(fx.policy);
  fake_fixture_free(fx.f);
}

static void setup(void) {
  static const fake_key keys[] = {{"tsa", HSM_KEY_EC_P256}};
  kyso_err err = {0};
  uint8_t *csr = NULL;
  size_t csr_len = 0;
  X509 *cert = NULL;
  STACK_OF(X509) *chain = NULL;
  int ok = (fx.f = fake_fixture_new("fuzz-ts-query", keys, 1)) != NULL &&
           signer_make_csr(fx.f->s, "tsa", "/C=VN/O=Kyso Fuzz/CN=Kyso Fuzz TSA", &csr, &csr_len,
                           &err) == KYSO_OK &&
           (cert = tu_pki_issue(fx.f->pki, csr, csr_len, "tsa")) != NULL &&
           (chain = tu_pki_chain(fx.f->pki)) != NULL &&
           signer_import_certificate(fx.f->s, "tsa", cert, chain, &err) == KYSO_OK &&
           signer_tsa_open(fx.f->s, "tsa", POLICY, &fx.t, &err) == KYSO_OK &&
           (fx.store = tu_pki_store(fx.f->pki)) != NULL &&
           (fx.policy = OBJ_txt2obj(POLICY, 1)) != NULL;
  OPENSSL_free(csr);
  X509_free(cert);
  sk_X509_pop_free(chain, X509_free);
  atexit(teardown);
  if (!ok) {
    fprintf(stderr, "fuzz_ts_query: setup failed: %s\n", err.msg);
    abort();
  }
}

/* What OpenSSL's responder, configured as signer/tsa.c does, must grant:
 * version 1, a SHA-256/384/512 imprint of the right length with absent or
 * NULL parameters, our policy or none, no extensions. */
static int well_formed(TS_REQ *req) {
  TS_MSG_IMPRINT *mi = TS_REQ_get_msg_imprint(req);
  const X509_ALGOR *alg = TS_MSG_IMPRINT_get_algo(mi);
  const ASN1_OCTET_STRING *msg = TS_MSG_IMPRINT_get_msg(mi);
  const ASN1_OBJECT *policy = TS_REQ_get_policy_id(req);
  int nid = OBJ_obj2nid(alg->algorithm);
  const EVP_MD *md = nid == NID_sha256 ? EVP_sha256()
                     : nid == NID_sha384 ? EVP_sha384()
                     : nid == NID_sha512 ? EVP_sha512()
                                         : NULL;
  return TS_REQ_get_version(req) == 1 && md != NULL &&
         (alg->parameter == NULL || ASN1_TYPE_get(alg->parameter) == V_ASN1_NULL) &&
         ASN1_STRING_length(msg) == EVP_MD_get_size(md) &&
         (policy == NULL || OBJ_cmp(policy, fx.policy) == 0) &&
         sk_X509_EXTENSION_num(TS_REQ_get_exts(req)) <= 0;
}

/* A granted response carries what req asked for, with our serial, time
 * and policy; and signer_ts_accept takes it as the answer to the query it
 * would have made, when req is such a query. */
static void check_granted(TS_REQ *req, TS_RESP *r, const uint8_t *der, size_t len) {
  TS_TST_INFO *tst = TS_RESP_get_tst_info(r);
  PKCS7 *token = TS_RESP_get_token(r);
  if (tst == NULL || token == NULL) __builtin_trap();
  TS_MSG_IMPRINT *want = TS_REQ_get_msg_imprint(req), *got = TS_TST_INFO_get_msg_imprint(tst);
  const ASN1_INTEGER *nonce = TS_REQ_get_nonce(req), *got_nonce = TS_TST_INFO_get_nonce(tst);
  if (ASN1_STRING_cmp(TS_MSG_IMPRINT_get_msg(want), TS_MSG_IMPRINT_get_msg(got)) != 0 ||
      OBJ_cmp(TS_MSG_IMPRINT_get_algo(want)->algorithm,
              TS_MSG_IMPRINT_get_algo(got)->algorithm) != 0 ||
      (nonce == NULL) != (got_nonce == NULL) ||
      (nonce != NULL && ASN1_INTEGER_cmp(nonce, got_nonce) != 0) ||
      OBJ_cmp(TS_TST_INFO_get_policy_id(tst), fx.policy) != 0)
    __builtin_trap();
  /* certReq true: the TSA's certificate is in the token; false: none is. */
  int certs = sk_X509_num(token->d.sign->cert);
  if (TS_REQ_get_cert_req(req) ? certs < 1 : certs > 0) __builtin_trap();
  signer_ts_info info;
  kyso_err err = {0};
  if (signer_ts_describe(der, len, 0, &info, &err) != KYSO_OK || info.status != 0 ||
      !info.has_token || strcmp(info.serial, SERIAL_TEXT) != 0 || info.gen_time != GEN_TIME ||
      info.gen_time_ms != GEN_TIME_MS || strcmp(info.policy, POLICY) != 0)
    __builtin_trap();

  uint64_t n = 0;
  const X509_ALGOR *alg = TS_MSG_IMPRINT_get_algo(want);
  const ASN1_OCTET_STRING *msg = TS_MSG_IMPRINT_get_msg(want);
  if (OBJ_obj2nid(alg->algorithm) == NID_sha256 && nonce != NULL &&
      ASN1_INTEGER_get_uint64(&n, nonce) == 1 && TS_REQ_get_cert_req(req)) {
    uint8_t *tok = NULL;
    size_t tok_len = 0;
    if (signer_ts_accept(der, len, ASN1_STRING_get0_data(msg), n, fx.store, &tok, &tok_len,
                         &err) != KYSO_OK) {
      fprintf(stderr, "fuzz_ts_query: our own token is refused: %s\n", err.msg);
      __builtin_trap();
    }
    OPENSSL_free(tok);
  }
  ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  if (!ready) {
    setup();
    ready = 1;
  }
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  kyso_err err = {0};
  kyso_status st = signer_tsa_respond(fx.t, data, size, SERIAL, GEN_TIME, GEN_TIME_MS, &resp,
                                      &resp_len, &err);
  if (st != KYSO_OK) {
    /* Only our own failures are errors, and the fake HSM does not fail. */
    fprintf(stderr, "fuzz_ts_query: %s: %s\n", kyso_strerror(st), err.msg);
    __builtin_trap();
  }
  const unsigned char *p = resp;
  TS_RESP *r = d2i_TS_RESP(NULL, &p, (long)resp_len);
  if (r == NULL || p != resp + resp_len) __builtin_trap();
  TS_STATUS_INFO *si = TS_RESP_get_status_info(r);
  long status = ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(si));
  /* The responder reads one DER TimeStampReq from the front of the input. */
  const unsigned char *q = data;
  TS_REQ *req = d2i_TS_REQ(NULL, &q, (long)size);
  int good = req != NULL && well_formed(req);
  if (status == TS_STATUS_GRANTED) {
    if (!good) __builtin_trap();
    check_granted(req, r, resp, resp_len);
  } else {
    /* A rejection says why, and has no token. */
    const ASN1_BIT_STRING *fi = TS_STATUS_INFO_get0_failure_info(si);
    if (status != TS_STATUS_REJECTION || fi == NULL || TS_RESP_get_token(r) != NULL || good)
      __builtin_trap();
  }
  TS_REQ_free(req);
  TS_RESP_free(r);
  OPENSSL_free(resp);
  ERR_clear_error();
  return 0;
}
