/* kyso — signing a SHA-256 digest with one C_Sign on a pooled session. */
#include <string.h>

#include "hsm_internal.h"

/* DER DigestInfo header for SHA-256 (RFC 8017 §9.2 note 1): CKM_RSA_PKCS
 * pads and signs whatever it is given, so the caller supplies the encoding. */
static const uint8_t sha256_digest_info[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                               0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                               0x01, 0x05, 0x00, 0x04, 0x20};
_Static_assert(sizeof(sha256_digest_info) + 32 == HSM__SIGN_IN_MAX,
               "HSM__SIGN_IN_MAX is DigestInfo(SHA-256)");

static const char *mech_name(hsm_mech mech) {
  switch (mech) {
    case HSM_MECH_RSA_PKCS1_SHA256:
      return "RSA-PKCS1-SHA256";
    case HSM_MECH_RSA_PSS_SHA256:
      return "RSA-PSS-SHA256";
    case HSM_MECH_ECDSA_SHA256:
      return "ECDSA-SHA256";
  }
  return "unknown mechanism";
}

/* The PKCS#11 mechanism and input for mech, or INVALID_ARGUMENT when mech
 * does not fit the key. in must hold HSM__SIGN_IN_MAX (51) bytes. */
kyso_status hsm__sign_prepare(const hsm__key *k, const char *token, hsm_mech mech,
                              const uint8_t *digest, CK_MECHANISM *m,
                              CK_RSA_PKCS_PSS_PARAMS *pss, uint8_t *in, size_t *in_len,
                              kyso_err *err) {
  int rsa = k->type == HSM_KEY_RSA_2048 || k->type == HSM_KEY_RSA_3072;
  int ok = (mech == HSM_MECH_ECDSA_SHA256) ? k->type == HSM_KEY_EC_P256
                                           : rsa && (mech == HSM_MECH_RSA_PKCS1_SHA256 ||
                                                     mech == HSM_MECH_RSA_PSS_SHA256);
  if (!ok)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "mechanism %s does not fit key '%s' in token '%s', which is %s",
                     mech_name(mech), k->label, token, hsm_key_type_name(k->type));
  memset(m, 0, sizeof(*m));
  memcpy(in, digest, 32);
  *in_len = 32;
  if (mech == HSM_MECH_ECDSA_SHA256) {
    m->mechanism = CKM_ECDSA;
  } else if (mech == HSM_MECH_RSA_PSS_SHA256) {
    pss->hashAlg = CKM_SHA256;
    pss->mgf = CKG_MGF1_SHA256;
    pss->sLen = 32;
    m->mechanism = CKM_RSA_PKCS_PSS;
    m->pParameter = pss;
    m->ulParameterLen = sizeof(*pss);
  } else {
    memcpy(in, sha256_digest_info, sizeof(sha256_digest_info));
    memcpy(in + sizeof(sha256_digest_info), digest, 32);
    *in_len = sizeof(sha256_digest_info) + 32;
    m->mechanism = CKM_RSA_PKCS;
  }
  return KYSO_OK;
}

kyso_status hsm_sign_digest(hsm *h, const char *label, hsm_mech mech, const uint8_t *digest,
                            size_t digest_len, uint8_t *sig, size_t *sig_len, kyso_err *err) {
  kyso_status st;
  hsm__sigpipe g;
  hsm__key k = {0};
  CK_MECHANISM m;
  CK_RSA_PKCS_PSS_PARAMS pss;
  uint8_t in[HSM__SIGN_IN_MAX];
  uint8_t out[KYSO_MAX_SIGNATURE];
  size_t in_len = 0;
  CK_ULONG out_len = sizeof(out);
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  if (digest == NULL || sig == NULL || sig_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "hsm_sign_digest: digest, sig and sig_len "
                                                 "are required");
  if (digest_len != 32)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "a SHA-256 digest is 32 bytes, got %zu for key '%.*s'", digest_len,
                     KYSO_MAX_LABEL, label ? label : "");
  if ((st = hsm__label_check(label, err)) != KYSO_OK) return st;
  if ((st = hsm__enter(h, &g, err)) != KYSO_OK) return st;
  if ((st = hsm__keymap_get(&h->map, label, h->token, &k, err)) != KYSO_OK) goto out;
  if ((st = hsm__sign_prepare(&k, h->token, mech, digest, &m, &pss, in, &in_len, err)) !=
      KYSO_OK)
    goto out;
  size_t need = k.type == HSM_KEY_EC_P256 ? 64 : (k.bits + 7) / 8;
  if (*sig_len < need) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "a %s signature with key '%s' needs %zu bytes, the buffer has %zu",
                   mech_name(mech), label, need, *sig_len);
    *sig_len = need;
    goto out;
  }
  if ((st = hsm__pool_acquire(&h->pool, h->token, &s, err)) != KYSO_OK) goto out;
  /* C_Sign ends the operation on success and on every error but
   * CKR_BUFFER_TOO_SMALL, which `out` (KYSO_MAX_SIGNATURE) rules out: the
   * session goes back to the pool clean. */
  CK_RV rv = h->fl->C_SignInit(s, &m, k.priv);
  if (rv == CKR_OK) rv = h->fl->C_Sign(s, in, (CK_ULONG)in_len, out, &out_len);
  hsm__pool_release(&h->pool, s);
  if (rv != CKR_OK) {
    st = hsm__fail_rv(err, rv, h->token, "signing with key '%s' in token '%s'", label, h->token);
    goto out;
  }
  if (out_len != need) {
    st = kyso_fail(err, KYSO_INTERNAL,
                   "token '%s' returned a %lu-byte %s signature for key '%s', expected %zu",
                   h->token, (unsigned long)out_len, mech_name(mech), label, need);
    goto out;
  }
  memcpy(sig, out, out_len);
  *sig_len = out_len;
out:
  hsm__leave(h, &g);
  return st;
}
