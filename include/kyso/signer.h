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
/* Answers one DER TimeStampReq with a DER TimeStampResp (*resp
 * OPENSSL_malloc()ed). serial is unique, chosen by the caller; genTime is
 * gen_time + gen_time_ms (0..999) milliseconds; accuracy 1 s. Imprints
 * SHA-256/384/512. A bad request is answered in the response (rejection:
 * badAlg, badDataFormat, unacceptedPolicy …) and returns OK; only internal
 * failures (HSM, OpenSSL) return an error. */
kyso_status signer_tsa_respond(signer_tsa *t, const uint8_t *req, size_t req_len,
                               uint64_t serial, time_t gen_time, unsigned gen_time_ms,
                               uint8_t **resp, size_t *resp_len, kyso_err *err) KYSO_MUST_CHECK;

#endif
