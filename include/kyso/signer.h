/* kyso — the signer layer: CMS/CAdES signatures, CSRs and verification,
 * built by OpenSSL with the signature value made in the HSM through kyso's
 * own OpenSSL 3 provider. */
#ifndef KYSO_SIGNER_H
#define KYSO_SIGNER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "kyso/hsm.h"
#include "kyso/status.h"

typedef struct signer signer;

typedef enum {
  SIGNER_RSA_PKCS1 = 0, /* RSA keys: PKCS#1 v1.5 SHA-256 */
  SIGNER_RSA_PSS = 1,   /* RSA keys: RSASSA-PSS SHA-256, salt 32 */
} signer_rsa_scheme;

/* Lifecycle */
/* Registers the "kysohsm" provider in a private OSSL_LIB_CTX over h (which
 * must outlive the signer) and opens the certificate store in cert_dir
 * (created 0700 if missing). */
kyso_status signer_open(hsm *h, const char *cert_dir, signer **out,
                        kyso_err *err) KYSO_MUST_CHECK;
void signer_close(signer *s);

/* Certificates */
/* Checks that cert's public key is the HSM key's, then stores cert and its
 * chain durably for that label. INVALID_ARGUMENT on a mismatch or bad DER. */
kyso_status signer_import_certificate(signer *s, const char *label, X509 *cert,
                                      STACK_OF(X509) *chain,
                                      kyso_err *err) KYSO_MUST_CHECK;
/* NOT_FOUND if no certificate was imported for label. Caller frees both
 * (X509_free, sk_X509_pop_free(chain, X509_free)); they are shared with the
 * signer's cache, so read-only. chain_out may be NULL. */
kyso_status signer_certificate(signer *s, const char *label, X509 **cert_out,
                               STACK_OF(X509) **chain_out,
                               kyso_err *err) KYSO_MUST_CHECK;

/* Signing */
/* PKCS#10 request for the key, signed in the HSM. subject is OpenSSL's
 * "/C=VN/O=.../CN=..." form. *der is OPENSSL_malloc()ed. */
kyso_status signer_make_csr(signer *s, const char *label, const char *subject,
                            uint8_t **der, size_t *der_len,
                            kyso_err *err) KYSO_MUST_CHECK;

/* Detached CMS SignedData over doc, SHA-256, CAdES-BES signed attributes
 * (content-type, message-digest, signing-time, signing-certificate-v2),
 * the signer certificate and its chain included. signing_time 0 = now.
 * *der is OPENSSL_malloc()ed. NOT_FOUND: no such key; FAILED_PRECONDITION:
 * no certificate imported; an HSM failure keeps the HSM's status. */
kyso_status signer_sign_cms(signer *s, const char *label,
                            signer_rsa_scheme scheme, const uint8_t *doc,
                            size_t doc_len, time_t signing_time, uint8_t **der,
                            size_t *der_len, kyso_err *err) KYSO_MUST_CHECK;
/* Like signer_sign_cms, but over a document known only by its SHA-256
 * (the caller is responsible for that digest being the document's), so a
 * large one need not be in memory. The same DER but for the signature value.
 * INVALID_ARGUMENT if sha256 is NULL; otherwise as signer_sign_cms. */
kyso_status signer_sign_cms_digest(signer *s, const char *label, signer_rsa_scheme scheme,
                                   const uint8_t sha256[32], time_t signing_time,
                                   uint8_t **der, size_t *der_len,
                                   kyso_err *err) KYSO_MUST_CHECK;

/* CAdES-T in one pass: like signer_sign_cms (doc) or signer_sign_cms_digest
 * (sha256; exactly one of the two), and between signing and encoding,
 * stamp(arg, signature value) returns a time-stamp token (DER ContentInfo,
 * OPENSSL_malloc()ed) that becomes the signature-time-stamp attribute. The
 * same bytes as signing, then signer_cms_add_timestamp, without parsing the
 * CMS twice more (OpenSSL 3.0 decodes every embedded public key on each
 * parse, which was most of a CAdES-T signature's CPU). The stamp's error
 * is returned as it is. */
typedef kyso_status (*signer_stamp_fn)(void *arg, const uint8_t *signature_value, size_t len,
                                       uint8_t **token, size_t *token_len, kyso_err *err);
kyso_status signer_sign_cades_t(signer *s, const char *label, signer_rsa_scheme scheme,
                                const uint8_t *doc, size_t doc_len, const uint8_t *sha256,
                                time_t signing_time, signer_stamp_fn stamp, void *arg,
                                uint8_t **der, size_t *der_len, kyso_err *err) KYSO_MUST_CHECK;

/* Verification */
/* Verifies a detached CMS signature over doc against the trust anchors in
 * store (chain, signature, message digest, signing-certificate-v2); the
 * store's verify params set purpose and time. INVALID_ARGUMENT: not a
 * detached SignedData; FAILED_PRECONDITION: it does not verify (reason in
 * the message). On success the signer certificate is returned in
 * *signer_out if non-NULL. */
kyso_status signer_verify_cms(X509_STORE *store, const uint8_t *sig,
                              size_t sig_len, const uint8_t *doc,
                              size_t doc_len, X509 **signer_out,
                              kyso_err *err) KYSO_MUST_CHECK;


/* For callers and tests that need the provider-backed private key itself
 * (the TSA, later). Caller frees with EVP_PKEY_free, before signer_close. */
kyso_status signer_private_key(signer *s, const char *label, EVP_PKEY **out,
                               kyso_err *err) KYSO_MUST_CHECK;

/* Time-stamping (RFC 3161) */
typedef struct signer_tsa signer_tsa;
/* A responder signing with the HSM key label, whose certificate must be
 * imported already; policy_oid (dotted) is the policy of every token.
 * FAILED_PRECONDITION, naming the certificate, unless it has a critical
 * extendedKeyUsage of exactly timeStamping (RFC 3161 2.3). The handle may
 * be shared by threads; close it before signer_close. */
kyso_status signer_tsa_open(signer *s, const char *label, const char *policy_oid,
                            signer_tsa **out, kyso_err *err) KYSO_MUST_CHECK;
void signer_tsa_close(signer_tsa *t);
/* OK if cert may sign time-stamps: a critical extendedKeyUsage of exactly
 * timeStamping (RFC 3161 2.3); otherwise FAILED_PRECONDITION saying so,
 * naming the certificate. What signer_tsa_open checks, for callers that
 * must refuse such a certificate before storing it. */
kyso_status signer_tsa_check_certificate(X509 *cert, kyso_err *err) KYSO_MUST_CHECK;
/* Answers one DER TimeStampReq with a DER TimeStampResp (*resp
 * OPENSSL_malloc()ed). serial is unique, chosen by the caller; genTime is
 * gen_time + gen_time_ms (0..999) milliseconds; accuracy 1 s. Imprints
 * SHA-256/384/512. A bad request is answered in the response (rejection:
 * badAlg, badDataFormat, unacceptedPolicy …) and returns OK; only internal
 * failures (HSM, OpenSSL) return an error. */
kyso_status signer_tsa_respond(signer_tsa *t, const uint8_t *req, size_t req_len,
                               uint64_t serial, time_t gen_time, unsigned gen_time_ms,
                               uint8_t **resp, size_t *resp_len, kyso_err *err) KYSO_MUST_CHECK;
/* A token (DER ContentInfo of the SignedData over a TSTInfo,
 * OPENSSL_malloc()ed) over a SHA-256 digest, as if requested with certReq
 * true and no nonce: what CAdES-T puts in a signature-time-stamp attribute.
 * Same serial and genTime rules as signer_tsa_respond. */
kyso_status signer_tsa_stamp_digest(signer_tsa *t, const uint8_t sha256[32], uint64_t serial,
                                    time_t gen_time, unsigned gen_time_ms, uint8_t **token,
                                    size_t *token_len, kyso_err *err) KYSO_MUST_CHECK;
/* The TSA certificate's subject, one line, UTF-8 (for logs and replies). */
const char *signer_tsa_name(const signer_tsa *t);

/* A TimeStampResp of status rejection carrying one PKIFailureInfo bit
 * (SIGNER_TSA_FAIL_*) and text: what a TSA answers when it cannot issue,
 * e.g. timeNotAvailable while its clock is behind. *der OPENSSL_malloc()ed. */
enum {
  SIGNER_TSA_FAIL_BAD_ALG = 0,
  SIGNER_TSA_FAIL_BAD_REQUEST = 2,
  SIGNER_TSA_FAIL_BAD_DATA_FORMAT = 5,
  SIGNER_TSA_FAIL_TIME_NOT_AVAILABLE = 14,
  SIGNER_TSA_FAIL_UNACCEPTED_POLICY = 15,
  SIGNER_TSA_FAIL_UNACCEPTED_EXTENSION = 16,
  SIGNER_TSA_FAIL_ADD_INFO_NOT_AVAILABLE = 17,
  SIGNER_TSA_FAIL_SYSTEM_FAILURE = 25,
};
kyso_status signer_tsa_refusal(int failure_bit, const char *text, uint8_t **der, size_t *der_len,
                               kyso_err *err) KYSO_MUST_CHECK;

/* What a TimeStampResp (or, with is_token, a bare token) says, for display
 * and for the gRPC reply: filled as far as the DER allows. */
typedef struct signer_ts_info {
  int status;              /* PKIStatus; -1 if the DER does not parse */
  uint32_t failure_info;   /* bit n set as 1u << n */
  char status_text[256];   /* statusString, joined with "; " */
  int has_token;
  char serial[64];         /* decimal */
  time_t gen_time;
  unsigned gen_time_ms;
  char gen_time_text[40];  /* RFC 3339 UTC with milliseconds */
  char policy[128];        /* dotted OID */
  char hash[16];           /* imprint algorithm, "SHA256" ... */
  char tsa[256];           /* the signing certificate's subject if present, else the tsa name */
} signer_ts_info;
/* INVALID_ARGUMENT if der is not a TimeStampResp (is_token 0) or a token
 * ContentInfo (is_token 1). */
kyso_status signer_ts_describe(const uint8_t *der, size_t len, int is_token, signer_ts_info *out,
                               kyso_err *err) KYSO_MUST_CHECK;

/* Asking another TSA (CAdES-T with an external TSA, `kyso timestamp`). */
/* A DER TimeStampReq for a SHA-256 digest with certReq true and a 64-bit
 * random nonce (returned in *nonce). *der OPENSSL_malloc()ed. */
kyso_status signer_ts_query(const uint8_t sha256[32], uint64_t *nonce, uint8_t **der,
                            size_t *der_len, kyso_err *err) KYSO_MUST_CHECK;
/* Checks a TimeStampResp answering signer_ts_query(sha256, nonce): status
 * granted, version, imprint and nonce match, and, if store is non-NULL,
 * the token's signature and the TSA certificate chain to it with the
 * timeStamping purpose. Returns the token (DER ContentInfo,
 * OPENSSL_malloc()ed). FAILED_PRECONDITION with the TSA's status text or
 * the check that failed; INVALID_ARGUMENT if resp is not a TimeStampResp. */
kyso_status signer_ts_accept(const uint8_t *resp, size_t resp_len, const uint8_t sha256[32],
                             uint64_t nonce, X509_STORE *store, uint8_t **token,
                             size_t *token_len, kyso_err *err) KYSO_MUST_CHECK;

/* CAdES-T: the signature-time-stamp unsigned attribute
 * (id-aa-signatureTimeStampToken, 1.2.840.113549.1.9.16.2.14) holds a
 * token whose imprint is the hash of the SignerInfo's signature value. */
/* The first SignerInfo's signature value (malloc()ed copy). INVALID_ARGUMENT
 * if cms is not a DER SignedData with a SignerInfo. */
kyso_status signer_cms_signature_value(const uint8_t *cms, size_t cms_len, uint8_t **value,
                                       size_t *value_len, kyso_err *err) KYSO_MUST_CHECK;
/* cms with token added as the first SignerInfo's signature-time-stamp
 * attribute; *out OPENSSL_malloc()ed. The signed attributes and the
 * signature value are unchanged, so the signature still verifies.
 * FAILED_PRECONDITION if the SignerInfo already carries one. */
kyso_status signer_cms_add_timestamp(const uint8_t *cms, size_t cms_len, const uint8_t *token,
                                     size_t token_len, uint8_t **out, size_t *out_len,
                                     kyso_err *err) KYSO_MUST_CHECK;

/* Full verification (CAdES-T aware) */
/* What signer_verify_cms_full found. */
typedef struct signer_verified {
  X509 *signer;            /* the first signer's certificate (caller frees) */
  time_t signing_time;     /* the signing-time attribute, 0 if absent */
  int timestamped;         /* a signature-time-stamp token was present and verified */
  signer_ts_info ts;       /* that token, when timestamped */
} signer_verified;
enum {
  /* Fail (FAILED_PRECONDITION) unless a signature-time-stamp is present. */
  SIGNER_VERIFY_REQUIRE_TIMESTAMP = 1u << 0,
};
/* signer_verify_cms, and when the first SignerInfo carries a
 * signature-time-stamp token: the token's imprint is the hash of the
 * signature value, its signature verifies, the TSA certificate chains to
 * store with a critical timeStamping EKU, and the signer's certificate
 * chain is checked at the token's genTime (not now), so a signature
 * stays valid after its certificate expires. A bad token is
 * FAILED_PRECONDITION naming what failed. out may be NULL; on success
 * out->signer is the caller's to free. */
kyso_status signer_verify_cms_full(X509_STORE *store, const uint8_t *sig, size_t sig_len,
                                   const uint8_t *doc, size_t doc_len, unsigned flags,
                                   signer_verified *out, kyso_err *err) KYSO_MUST_CHECK;

#endif
