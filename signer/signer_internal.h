/* kyso — internals shared by the files of signer/; nothing outside signer/
 * (and its tests) includes this. Every name here is signer__ prefixed;
 * everything else in signer/ is static. */
#ifndef KYSO_SIGNER_INTERNAL_H
#define KYSO_SIGNER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/cms.h>
#include <openssl/core.h>
#include <openssl/evp.h>
#include <openssl/ts.h>
#include <openssl/x509.h>

#include "kyso/hsm.h"
#include "kyso/limits.h"
#include "kyso/signer.h"
#include "kyso/status.h"

/* The provider's name, and the property query that selects it. The private
 * library context prefers it for every fetch (SIGNER__PREFER), so signing
 * with one of its keys never wanders off to the default provider; digests,
 * encoders and the rest still come from "default". Nothing is verified in
 * that context: verification uses the process-wide default context. */
#define SIGNER__PROVIDER_NAME "kysohsm"
#define SIGNER__PROPQ "provider=kysohsm"
#define SIGNER__PREFER "?provider=kysohsm"

/* OSSL_PARAM (UTF-8 string) naming the HSM key behind a kysohsm key; given
 * to EVP_PKEY_fromdata beside the public-key parameters. */
#define SIGNER__PARAM_LABEL "kyso-hsm-label"

/* Uncompressed EC point of the largest curve we accept (P-521). */
#define SIGNER__EC_PUB_MAX 133

/* The only digest kysohsm signs: the HSM mechanisms are SHA-256 ones. */
#define SIGNER__DIGEST_LEN 32

/* provider.c — the "kysohsm" provider: one context per library context */
typedef struct signer__provctx {
  hsm *hsm;             /* set by signer_open right after loading */
  OSSL_LIB_CTX *libctx; /* the private context the provider lives in */
  EVP_MD *sha256;       /* SHA-256 from "default" there; not owned */
} signer__provctx;

/* The provider's entry point, for OSSL_PROVIDER_add_builtin. */
OSSL_provider_init_fn signer__provider_init;

/* Loads "kysohsm" into libctx ("default" must be loaded already) and wires
 * it to h and sha256, which must outlive it. *out is the kysohsm provider. */
kyso_status signer__provider_load(OSSL_LIB_CTX *libctx, hsm *h, EVP_MD *sha256,
                                  OSSL_PROVIDER **out, kyso_err *err);

/* A kysohsm EVP_PKEY for the HSM key `label`: public parameters read from
 * hsm_public_key, signing forwarded to hsm_sign_digest. Caller frees. */
kyso_status signer__provider_key(OSSL_LIB_CTX *libctx, hsm *h, const char *label,
                                 EVP_PKEY **out, kyso_err *err);

/* provider_keymgmt.c — key objects: a label plus the public half */
typedef enum { SIGNER__KEY_RSA = 1, SIGNER__KEY_EC = 2 } signer__key_kind;

typedef struct signer__key {
  signer__provctx *prov;
  signer__key_kind kind;
  atomic_int refs;
  char label[KYSO_MAX_LABEL + 1]; /* "" for a public-only key */
  int has_pub;
  BIGNUM *n, *e;                  /* RSA */
  int curve_nid;                  /* EC */
  uint8_t pub[SIGNER__EC_PUB_MAX]; /* EC, uncompressed */
  size_t pub_len;
  int bits, security_bits, max_size;
} signer__key;

extern const OSSL_DISPATCH signer__keymgmt_rsa_functions[];
extern const OSSL_DISPATCH signer__keymgmt_ec_functions[];
void signer__key_up_ref(signer__key *k);
void signer__key_release(signer__key *k);

/* provider_signature.c — RSA (PKCS#1 v1.5, PSS) and ECDSA over SHA-256 */
extern const OSSL_DISPATCH signer__signature_rsa_functions[];
extern const OSSL_DISPATCH signer__signature_ecdsa_functions[];

/* The last HSM failure on this thread, kept so a caller that sees OpenSSL
 * fail can answer with the HSM's own status (UNAVAILABLE, NOT_FOUND …)
 * rather than a generic one. Clear before an operation, take after it. */
void signer__hsm_error_clear(void);
int signer__hsm_error_take(kyso_err *err);

/* ecdsa_der.c — PKCS#11 gives ECDSA as raw r||s; CMS and X.509 want DER */
/* Encodes raw (two equal halves, big-endian) as a DER ECDSA-Sig-Value into
 * der (capacity cap). 1 on success; 0 (OpenSSL error raised) for an odd
 * length, a zero r or s, or a too small buffer. */
int signer__ecdsa_raw_to_der(const uint8_t *raw, size_t raw_len, uint8_t *der,
                             size_t cap, size_t *der_len);
/* The largest DER ECDSA-Sig-Value for a group whose order has order_bits. */
int signer__ecdsa_der_max(int order_bits);

/* map.c — string-keyed hash map; not locked, its owner locks */
typedef struct signer__map signer__map;
/* free_fn (may be NULL) releases values that are replaced or dropped. */
kyso_status signer__map_new(void (*free_fn)(void *), signer__map **out, kyso_err *err);
void signer__map_free(signer__map *m);
void *signer__map_get(const signer__map *m, const char *key);
/* Stores value under a copy of key, releasing any previous value. On
 * failure value is still the caller's. */
kyso_status signer__map_put(signer__map *m, const char *key, void *value, kyso_err *err);
size_t signer__map_count(const signer__map *m);

/* certstore.c — one PEM file per label (leaf, then chain) under a directory */
typedef struct signer__certstore signer__certstore;
/* Creates dir (0700) when missing. */
kyso_status signer__certstore_open(const char *dir, signer__certstore **out, kyso_err *err);
void signer__certstore_close(signer__certstore *cs);
/* Writes cert and chain durably and caches them. The key check is the
 * caller's; sizes and counts are checked here (INVALID_ARGUMENT). */
kyso_status signer__certstore_put(signer__certstore *cs, const char *label, X509 *cert,
                                  STACK_OF(X509) *chain, kyso_err *err);
/* New references to the cached (or freshly loaded) certificate and chain;
 * NOT_FOUND when none was imported. chain may be NULL. */
kyso_status signer__certstore_get(signer__certstore *cs, const char *label, X509 **cert,
                                  STACK_OF(X509) **chain, kyso_err *err);
/* The file name (no directory) kept for label: printable ASCII labels made
 * of [A-Za-z0-9._-] map to themselves, other bytes become %XX, a leading
 * '.' too; names longer than SIGNER__FILE_NAME_MAX become "~" + SHA-256 hex.
 * Injective and never a path. out needs SIGNER__FILE_NAME_MAX + 1 bytes. */
#define SIGNER__FILE_NAME_MAX 200
kyso_status signer__cert_file_name(const char *label, char *out, kyso_err *err);

/* subject.c — "/C=VN/O=.../CN=..." to an X509_NAME (UTF-8 values) */
kyso_status signer__subject_parse(const char *subject, X509_NAME **out, kyso_err *err);

/* signer.c — the handle */
struct signer {
  hsm *hsm;
  OSSL_LIB_CTX *libctx;
  OSSL_PROVIDER *prov_default;
  OSSL_PROVIDER *prov_kyso;
  EVP_MD *sha256; /* fetched once from libctx, shared by every thread */
  signer__certstore *certs;
  pthread_mutex_t keys_mu;
  signer__map *keys; /* label -> kysohsm EVP_PKEY, built on first use */
};

/* Printable ASCII, 1..KYSO_MAX_LABEL bytes; INVALID_ARGUMENT otherwise. */
kyso_status signer__label_check(const char *label, kyso_err *err);
/* After OpenSSL failed at `what` with key label: the HSM's own status and
 * message when the HSM failed (UNAVAILABLE for a token that went away …),
 * else INTERNAL with OpenSSL's error queue. */
kyso_status signer__openssl_failure(kyso_err *err, const char *what, const char *label);
/* A new reference to the cached kysohsm key of label (NOT_FOUND from hsm). */
kyso_status signer__key_get(signer *s, const char *label, EVP_PKEY **out, kyso_err *err);

/* cms_verify.c — the CMS parse both verification and CAdES-T use */
/* A DER CMS SignedData with at least one SignerInfo and nothing after it,
 * detached when asked; INVALID_ARGUMENT saying what it is instead. */
kyso_status signer__cms_parse(const uint8_t *sig, size_t sig_len, int detached,
                              CMS_ContentInfo **out, kyso_err *err);

/* ts_info.c — RFC 3161 status for messages */
/* "rejection (PKIStatus 2), failure badAlg: text" into out. */
void signer__ts_status_line(TS_STATUS_INFO *si, char *out, size_t size);

/* ts_client.c — requests and token checks shared with tsa.c and cms_verify.c */
/* DER TimeStampReq (version 1, SHA-256 imprint, certReq true, the nonce
 * when non-NULL); *der OPENSSL_malloc()ed. */
kyso_status signer__ts_request(const uint8_t sha256[32], const uint64_t *nonce, uint8_t **der,
                               size_t *der_len, kyso_err *err);
/* Runs the checks set in vctx (flags, imprint, nonce) on token; with a
 * store, also the token's signature and ESS signing certificate, and the
 * TSA certificate's chain to store with the timeStamping purpose forced,
 * at the store's time. FAILED_PRECONDITION naming the failed check. */
kyso_status signer__ts_check(TS_VERIFY_CTX *vctx, PKCS7 *token, X509_STORE *store,
                             kyso_err *err);

#endif
