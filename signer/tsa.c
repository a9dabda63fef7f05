/* kyso — an RFC 3161 time-stamping responder. OpenSSL's TS_RESP_CTX builds
 * and checks everything; the TSTInfo is signed with the kysohsm key of the
 * TSA's label, so the signature value comes from the HSM. A TS_RESP_CTX is
 * not thread-safe, so each response gets its own; the handle itself is
 * read-only after signer_tsa_open and may be shared between threads. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/ts.h>
#include <openssl/x509v3.h>

#include "kyso/x509_text.h"
#include "signer_internal.h"

struct signer_tsa {
  signer *s;
  char label[KYSO_MAX_LABEL + 1];
  char name[256];         /* the certificate's subject, one UTF-8 line */
  EVP_PKEY *key;          /* kysohsm key */
  X509 *cert;             /* the TSA certificate */
  STACK_OF(X509) *chain;  /* its chain, may be NULL */
  ASN1_OBJECT *policy;    /* the one policy we answer under */
};

/* What the serial and time callbacks read: the caller's values. */
typedef struct stamp {
  uint64_t serial;
  time_t sec;
  unsigned ms;
} stamp;

/* RFC 3161 2.3: the TSA certificate MUST have exactly one extendedKeyUsage
 * value, id-kp-timeStamping, and the extension MUST be critical. */
static int eku_is_timestamping_only(X509 *cert) {
  int idx = X509_get_ext_by_NID(cert, NID_ext_key_usage, -1);
  if (idx < 0 || X509_get_ext_by_NID(cert, NID_ext_key_usage, idx) >= 0) return 0;
  X509_EXTENSION *ext = X509_get_ext(cert, idx);
  if (ext == NULL || !X509_EXTENSION_get_critical(ext)) return 0;
  EXTENDED_KEY_USAGE *eku = X509V3_EXT_d2i(ext);
  int ok = eku != NULL && sk_ASN1_OBJECT_num(eku) == 1 &&
           OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)) == NID_time_stamp;
  EXTENDED_KEY_USAGE_free(eku);
  return ok;
}

kyso_status signer_tsa_check_certificate(X509 *cert, kyso_err *err) {
  if (cert == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signer_tsa_check_certificate: no certificate");
  if (eku_is_timestamping_only(cert)) return KYSO_OK;
  char name[256];
  ERR_clear_error(); /* an undecodable extension leaves its error behind */
  kyso_x509_name_utf8(X509_get_subject_name(cert), name, sizeof(name));
  return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "certificate '%s' is not a TSA certificate: it needs a critical "
                   "extendedKeyUsage of exactly timeStamping (RFC 3161 2.3)",
                   name);
}

const char *signer_tsa_name(const signer_tsa *t) { return t != NULL ? t->name : ""; }

void signer_tsa_close(signer_tsa *t) {
  if (t == NULL) return;
  EVP_PKEY_free(t->key);
  X509_free(t->cert);
  sk_X509_pop_free(t->chain, X509_free);
  ASN1_OBJECT_free(t->policy);
  free(t);
}

kyso_status signer_tsa_open(signer *s, const char *label, const char *policy_oid,
                            signer_tsa **out, kyso_err *err) {
  kyso_status st;
  signer_tsa *t = NULL;
  if (out != NULL) *out = NULL;
  if (s == NULL || out == NULL || policy_oid == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_tsa_open: signer, policy and output are required");
  if ((st = signer__label_check(label, err)) != KYSO_OK) return st;
  if ((t = calloc(1, sizeof(*t))) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory opening TSA '%s'", label);
    goto out;
  }
  t->s = s;
  snprintf(t->label, sizeof(t->label), "%s", label);
  if ((t->policy = OBJ_txt2obj(policy_oid, 1)) == NULL) {
    ERR_clear_error();
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "TSA policy '%s' is not a dotted OID", policy_oid);
    goto out;
  }
  if ((st = signer__key_get(s, label, &t->key, err)) != KYSO_OK) goto out;
  st = signer__certstore_get(s->certs, label, &t->cert, &t->chain, err);
  if (st == KYSO_NOT_FOUND)
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "key '%s' has no certificate; import a TSA certificate first", label);
  if (st != KYSO_OK) goto out;
  if ((st = signer_tsa_check_certificate(t->cert, err)) != KYSO_OK) {
    kyso_err_wrap(err, "key '%s'", label);
    goto out;
  }
  kyso_x509_name_utf8(X509_get_subject_name(t->cert), t->name, sizeof(t->name));
  *out = t;
  t = NULL;
out:
  signer_tsa_close(t);
  return st;
}

static ASN1_INTEGER *serial_cb(TS_RESP_CTX *ctx, void *data) {
  const stamp *sp = data;
  ASN1_INTEGER *n = ASN1_INTEGER_new();
  if (n == NULL || !ASN1_INTEGER_set_uint64(n, sp->serial)) {
    ASN1_INTEGER_free(n);
    TS_RESP_CTX_set_status_info(ctx, TS_STATUS_REJECTION, "Error during serial number generation.");
    TS_RESP_CTX_add_failure_info(ctx, TS_INFO_ADD_INFO_NOT_AVAILABLE);
    return NULL;
  }
  return n;
}

static int time_cb(TS_RESP_CTX *ctx, void *data, long *sec, long *usec) {
  (void)ctx;
  const stamp *sp = data;
  *sec = (long)sp->sec;
  *usec = (long)sp->ms * 1000;
  return 1;
}

/* A fresh TS_RESP_CTX for one response: key, certificate, chain, policy,
 * SHA-256/384/512 imprints, ESSCertIDv2 with SHA-256, accuracy 1 s, genTime
 * in milliseconds, serial and time from sp. NULL on failure. */
static TS_RESP_CTX *make_ctx(signer_tsa *t, stamp *sp) {
  TS_RESP_CTX *ctx = TS_RESP_CTX_new_ex(t->s->libctx, NULL);
  if (ctx == NULL || !TS_RESP_CTX_set_signer_cert(ctx, t->cert) ||
      !TS_RESP_CTX_set_signer_key(ctx, t->key) ||
      (t->chain != NULL && !TS_RESP_CTX_set_certs(ctx, t->chain)) ||
      !TS_RESP_CTX_set_def_policy(ctx, t->policy) || !TS_RESP_CTX_add_md(ctx, EVP_sha256()) ||
      !TS_RESP_CTX_add_md(ctx, EVP_sha384()) || !TS_RESP_CTX_add_md(ctx, EVP_sha512()) ||
      !TS_RESP_CTX_set_ess_cert_id_digest(ctx, EVP_sha256()) ||
      !TS_RESP_CTX_set_signer_digest(ctx, t->s->sha256) ||
      !TS_RESP_CTX_set_accuracy(ctx, 1, 0, 0) ||
      !TS_RESP_CTX_set_clock_precision_digits(ctx, 3)) {
    TS_RESP_CTX_free(ctx);
    return NULL;
  }
  TS_RESP_CTX_set_serial_cb(ctx, serial_cb, sp);
  TS_RESP_CTX_set_time_cb(ctx, time_cb, sp);
  return ctx;
}

/* Runs OpenSSL's responder over one DER request: *out is a granted
 * response or a rejection for the client's fault (badAlg, badDataFormat …),
 * the response the client gets. Failures of ours (HSM, OpenSSL) are errors.
 * Arguments are the caller's to check. */
static kyso_status answer(signer_tsa *t, const uint8_t *req, size_t req_len, stamp *sp,
                          TS_RESP **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  TS_RESP_CTX *ctx = NULL;
  BIO *in = NULL;
  TS_RESP *r = NULL;
  *out = NULL;
  ERR_clear_error();
  signer__hsm_error_clear();
  /* A malformed request is answered by OpenSSL itself: rejection with
   * badDataFormat, so a parse failure is not an error here. */
  if ((ctx = make_ctx(t, sp)) == NULL ||
      (in = BIO_new_mem_buf(req_len > 0 ? (const void *)req : (const void *)"", (int)req_len)) ==
          NULL ||
      (r = TS_RESP_create_response(ctx, in)) == NULL) {
    st = signer__openssl_failure(err, "time-stamp response", t->label);
    goto out;
  }
  /* OpenSSL answers its own failures with a rejection too: signing ("Error
   * during signature generation.", no failure info), the serial
   * (addInfoNotAvailable), the rest (systemFailure). Those are ours to
   * report, with the HSM's status when the HSM failed; a rejection for the
   * client's fault always carries its reason bit. */
  TS_STATUS_INFO *si = TS_RESP_get_status_info(r);
  long status = ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(si));
  const ASN1_BIT_STRING *fi = TS_STATUS_INFO_get0_failure_info(si);
  if (status != TS_STATUS_GRANTED &&
      (fi == NULL || ASN1_BIT_STRING_get_bit(fi, TS_INFO_ADD_INFO_NOT_AVAILABLE) ||
       ASN1_BIT_STRING_get_bit(fi, TS_INFO_SYSTEM_FAILURE))) {
    st = signer__openssl_failure(err, "time-stamp signature", t->label);
    goto out;
  }
  *out = r;
  r = NULL;
out:
  TS_RESP_free(r);
  BIO_free(in);
  TS_RESP_CTX_free(ctx);
  return st;
}

static kyso_status check_time(time_t gen_time, unsigned gen_time_ms, kyso_err *err) {
  if (gen_time < 0 || gen_time_ms > 999)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "genTime %lld.%03u is out of range",
                     (long long)gen_time, gen_time_ms);
  return KYSO_OK;
}

kyso_status signer_tsa_respond(signer_tsa *t, const uint8_t *req, size_t req_len,
                               uint64_t serial, time_t gen_time, unsigned gen_time_ms,
                               uint8_t **resp, size_t *resp_len, kyso_err *err) {
  kyso_status st;
  stamp sp = {serial, gen_time, gen_time_ms};
  TS_RESP *r = NULL;
  unsigned char *der = NULL;
  if (t == NULL || resp == NULL || resp_len == NULL || (req == NULL && req_len > 0))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_tsa_respond: TSA, request and output are required");
  *resp = NULL;
  *resp_len = 0;
  if ((st = check_time(gen_time, gen_time_ms, err)) != KYSO_OK) return st;
  if (req_len > INT_MAX)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "time-stamp request of %zu bytes is too large",
                     req_len);
  if ((st = answer(t, req, req_len, &sp, &r, err)) != KYSO_OK) goto out;
  int n = i2d_TS_RESP(r, &der);
  if (n <= 0) {
    st = signer__openssl_failure(err, "time-stamp response encoding", t->label);
    goto out;
  }
  *resp = der;
  *resp_len = (size_t)n;
  der = NULL;
out:
  OPENSSL_free(der);
  TS_RESP_free(r);
  ERR_clear_error();
  return st;
}

/* The request is built here and answered by the same responder as any
 * client's, so a signature-time-stamp is exactly what `openssl ts -query
 * -cert` would have got. */
kyso_status signer_tsa_stamp_digest(signer_tsa *t, const uint8_t sha256[32], uint64_t serial,
                                    time_t gen_time, unsigned gen_time_ms, uint8_t **token,
                                    size_t *token_len, kyso_err *err) {
  kyso_status st;
  stamp sp = {serial, gen_time, gen_time_ms};
  uint8_t *req = NULL;
  size_t req_len = 0;
  TS_RESP *r = NULL;
  unsigned char *der = NULL;
  if (token != NULL) *token = NULL;
  if (token_len != NULL) *token_len = 0;
  if (t == NULL || sha256 == NULL || token == NULL || token_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "signer_tsa_stamp_digest: TSA, digest and output are required");
  if ((st = check_time(gen_time, gen_time_ms, err)) != KYSO_OK) return st;
  if ((st = signer__ts_request(sha256, NULL, &req, &req_len, err)) != KYSO_OK) goto out;
  if ((st = answer(t, req, req_len, &sp, &r, err)) != KYSO_OK) goto out;
  PKCS7 *tok = TS_RESP_get_token(r);
  if (tok == NULL) { /* our own request refused: a bug, not the caller's fault */
    char why[256];
    signer__ts_status_line(TS_RESP_get_status_info(r), why, sizeof(why));
    st = kyso_fail(err, KYSO_INTERNAL, "TSA '%s' refused its own request: %s", t->label, why);
    goto out;
  }
  int n = i2d_PKCS7(tok, &der);
  if (n <= 0) {
    st = signer__openssl_failure(err, "time-stamp token encoding", t->label);
    goto out;
  }
  *token = der;
  *token_len = (size_t)n;
  der = NULL;
out:
  OPENSSL_free(der);
  OPENSSL_free(req);
  TS_RESP_free(r);
  ERR_clear_error();
  return st;
}
