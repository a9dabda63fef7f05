/* kyso — the HSM layer: PKCS#11 module, session pool, key handle map.
 * The only code in kyso that touches keys. Thread-safe. */
#ifndef KYSO_HSM_H
#define KYSO_HSM_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "kyso/limits.h"
#include "kyso/status.h"

typedef struct hsm hsm;

typedef enum {
  HSM_KEY_RSA_2048 = 1,
  HSM_KEY_RSA_3072 = 2,
  HSM_KEY_EC_P256 = 3,
} hsm_key_type;

/* Signature mechanisms; the input is always a SHA-256 digest (32 bytes). */
typedef enum {
  HSM_MECH_RSA_PKCS1_SHA256 = 1, /* CKM_RSA_PKCS over DigestInfo(SHA-256) */
  HSM_MECH_RSA_PSS_SHA256 = 2,   /* CKM_RSA_PKCS_PSS, MGF1-SHA256, salt 32 */
  HSM_MECH_ECDSA_SHA256 = 3,     /* CKM_ECDSA over the digest: raw r||s out */
} hsm_mech;

typedef struct hsm_opts {
  const char *module_path;  /* PKCS#11 module, dlopen()ed */
  const char *token_label;  /* CKA_LABEL of the token to use */
  const char *pin;          /* user PIN; copied into one mlock()ed page for
                               hsm_reinit, wiped at hsm_close; the caller's
                               string is not used after hsm_open returns */
  unsigned max_sessions;    /* session pool size, 1..KYSO_HSM_MAX_SESSIONS */
} hsm_opts;

typedef struct hsm_key_info {
  char label[KYSO_MAX_LABEL + 1];
  uint8_t id[32];           /* CKA_ID (SHA-256 of the public key) */
  size_t id_len;
  hsm_key_type type;
  int sensitive;            /* CKA_SENSITIVE as read from the token */
  int extractable;          /* CKA_EXTRACTABLE */
  int wrap_with_trusted;    /* CKA_WRAP_WITH_TRUSTED */
} hsm_key_info;

/* Lifecycle */
/* Loads the module, C_Initialize (OS locking), finds the token, logs in once
 * and enumerates every key into the handle map. A wrong PIN is
 * UNAUTHENTICATED and is never retried (a real HSM locks the token). */
kyso_status hsm_open(const hsm_opts *opts, hsm **out, kyso_err *err) KYSO_MUST_CHECK;
void hsm_close(hsm *h);
/* C_Finalize + C_Initialize + login + rebuild of the handle map, for a token
 * that went away and came back (handles differ afterwards). Until a reinit
 * succeeds, operations answer UNAVAILABLE; a PIN the token rejects is
 * dropped, never retried. */
kyso_status hsm_reinit(hsm *h, kyso_err *err) KYSO_MUST_CHECK;

/* Keys */
/* Generates a key pair in the token: private half CKA_SENSITIVE=true,
 * CKA_WRAP_WITH_TRUSTED=true, CKA_SIGN=true, CKA_TOKEN=true, CKA_PRIVATE=true;
 * CKA_ID = SHA-256 of the public key. ALREADY_EXISTS if the label is taken. */
kyso_status hsm_generate_key(hsm *h, const char *label, hsm_key_type type,
                             hsm_key_info *info_out, kyso_err *err) KYSO_MUST_CHECK;
/* Looks a key up in the handle map (no token search). NOT_FOUND names it. */
kyso_status hsm_key_info_get(hsm *h, const char *label, hsm_key_info *out,
                             kyso_err *err) KYSO_MUST_CHECK;
/* Every key in the map, sorted by label; *out is malloc()ed, caller frees.
 * The protection flags are as last read (enumeration, generation, info_get). */
kyso_status hsm_list_keys(hsm *h, hsm_key_info **out, size_t *count,
                          kyso_err *err) KYSO_MUST_CHECK;
/* The public key as an ordinary (default provider) EVP_PKEY; caller frees. */
kyso_status hsm_public_key(hsm *h, const char *label, EVP_PKEY **out,
                           kyso_err *err) KYSO_MUST_CHECK;

/* Replication: one key in every node's token, never in the clear outside.
 * The KEK is an AES-256 secret key with CKA_TRUSTED, put into each token by
 * its security officer (kyso-token import-kek); kek_label is its CKA_LABEL. */
/* OK when the KEK is present, trusted, locked down and wraps and unwraps in
 * this token; FAILED_PRECONDITION naming the ceremony otherwise. */
kyso_status hsm_kek_check(hsm *h, const char *kek_label, kyso_err *err) KYSO_MUST_CHECK;
/* Wraps the private key `label` under the KEK (CKM_AES_KEY_WRAP_PAD, RFC
 * 5649), then sets its CKA_EXTRACTABLE false: a key is wrapped once in its
 * life. *wrapped is malloc()ed, caller frees, and must replicate it durably:
 * it is the only copy that can reach another node. NOT_FOUND for an unknown
 * key; FAILED_PRECONDITION "already wrapped once", or for a missing or
 * unsafe KEK. If the flag cannot be set, nothing is returned (the blob is
 * wiped) and the key stays extractable, so a retry is safe. */
kyso_status hsm_wrap_key(hsm *h, const char *label, const char *kek_label, uint8_t **wrapped,
                         size_t *wrapped_len, kyso_err *err) KYSO_MUST_CHECK;
/* Unwraps a blob from hsm_wrap_key into this token as key `label`: private
 * half as generated keys but never extractable, public half from spki_der
 * (DER SubjectPublicKeyInfo, which must be a `type` key), CKA_ID = SHA-256 of
 * it; the pair is proven with one test signature before it is stored.
 * OK without change if `label` already holds this key; ALREADY_EXISTS if it
 * holds another. DATA_LOSS for a wrong KEK or a corrupted blob or a blob that
 * does not match spki_der; INVALID_ARGUMENT for a truncated blob or an SPKI
 * of another type. On failure nothing is left in the token. */
kyso_status hsm_unwrap_key(hsm *h, const char *label, hsm_key_type type,
                           const uint8_t *spki_der, size_t spki_len, const uint8_t *wrapped,
                           size_t wrapped_len, const char *kek_label, hsm_key_info *info_out,
                           kyso_err *err) KYSO_MUST_CHECK;

/* Destroys key `label` (both halves) in the token and forgets it:
 * for a key whose registration failed. NOT_FOUND if there is none. */
kyso_status hsm_destroy_key(hsm *h, const char *label, kyso_err *err) KYSO_MUST_CHECK;

/* Signing */
/* Signs a 32-byte SHA-256 digest with one C_Sign on a pooled session.
 * RSA: the raw signature (modulus-sized). ECDSA: raw r||s (64 bytes for
 * P-256) — DER encoding is the caller's job. *sig_len is in/out. */
kyso_status hsm_sign_digest(hsm *h, const char *label, hsm_mech mech,
                            const uint8_t *digest, size_t digest_len,
                            uint8_t *sig, size_t *sig_len,
                            kyso_err *err) KYSO_MUST_CHECK;

const char *hsm_key_type_name(hsm_key_type type);
/* The type's name in configuration and records: "ec-p256", "rsa-2048",
 * "rsa-3072"; hsm_key_type_parse reads it back (0 if unknown). */
const char *hsm_key_type_id(hsm_key_type type);
int hsm_key_type_parse(const char *id, hsm_key_type *out);

#endif
