/* kyso — unwrapping a key that another node generated and wrapped under the
 * cluster KEK, into this node's token.
 *
 * Both halves are made as session objects first, the pair is proven (one
 * C_Sign checked by OpenSSL), and only then copied into the token, public
 * half first: a process killed part-way leaves at most a stray public object,
 * which enumeration ignores (it keys on private keys), never a private key
 * under a label it may not hold. */
#include <string.h>

#include "hsm_internal.h"

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

/* Unwraps into a session private key with the protections keygen.c gives a
 * generated one, but never extractable: this copy is not to travel on. */
static kyso_status unwrap(hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE kek, const char *kek_label,
                          const hsm__key *k, const uint8_t *wrapped, size_t wrapped_len,
                          CK_OBJECT_HANDLE *out, kyso_err *err) {
  CK_MECHANISM m = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_KEY_TYPE kt = k->type == HSM_KEY_EC_P256 ? CKK_EC : CKK_RSA;
  CK_ATTRIBUTE t[9 + HSM__KEK_GUARD_N] = {
      {CKA_CLASS, &cls, sizeof(cls)},
      {CKA_KEY_TYPE, &kt, sizeof(kt)},
      {CKA_TOKEN, &no, sizeof(no)}, /* copied into the token once proven */
      {CKA_SIGN, &yes, sizeof(yes)},
      {CKA_DECRYPT, &no, sizeof(no)},
      {CKA_UNWRAP, &no, sizeof(no)},
      {CKA_DERIVE, &no, sizeof(no)},
      {CKA_LABEL, (void *)k->label, (CK_ULONG)strlen(k->label)},
      {CKA_ID, (void *)k->id, (CK_ULONG)k->id_len},
  };
  /* CKA_PRIVATE, CKA_SENSITIVE, !CKA_EXTRACTABLE, CKA_WRAP_WITH_TRUSTED:
   * what the KEK's own CKA_UNWRAP_TEMPLATE insists on anyway. */
  hsm__kek_guard(t + 9);
  CK_RV rv = h->fl->C_UnwrapKey(s, &m, kek, (CK_BYTE_PTR)wrapped, (CK_ULONG)wrapped_len, t,
                                sizeof(t) / sizeof(t[0]), out);
  switch (rv) {
    case CKR_OK:
      return KYSO_OK;
    case CKR_WRAPPED_KEY_LEN_RANGE:
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "the wrapped key '%s' (%zu bytes) is truncated: an RFC 5649 blob is a "
                       "multiple of 8 bytes; nothing was stored in token '%s'",
                       k->label, wrapped_len, h->token);
    /* SoftHSM 2.6 answers a failed RFC 5649 integrity check with
     * CKR_GENERAL_ERROR, and a blob of another key type with
     * CKR_FUNCTION_FAILED; other tokens use the specific codes. */
    case CKR_GENERAL_ERROR:
    case CKR_FUNCTION_FAILED:
    case CKR_WRAPPED_KEY_INVALID:
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_DATA_INVALID:
      return kyso_fail(err, KYSO_DATA_LOSS,
                       "cannot unwrap key '%s' under KEK '%s' in token '%s' (%s): this node's "
                       "KEK is not the one the key was wrapped under (the security officer "
                       "must import the cluster's KEK file; `kyso-token check-kek` prints its "
                       "check value on every node), or the blob is corrupted or is not an %s "
                       "key; nothing was stored",
                       k->label, kek_label, h->token, hsm__rv_name(rv), hsm_key_type_name(k->type));
    default:
      return hsm__fail_rv(err, rv, h->token, "unwrapping key '%s' under KEK '%s' in token '%s'",
                          k->label, kek_label, h->token);
  }
}

/* A token copy of the session object o; *out stays CK_INVALID_HANDLE on
 * failure. */
static kyso_status to_token(hsm *h, CK_SESSION_HANDLE s, const char *label, const char *half,
                            CK_OBJECT_HANDLE o, CK_OBJECT_HANDLE *out, kyso_err *err) {
  CK_ATTRIBUTE t = {CKA_TOKEN, &yes, sizeof(yes)};
  CK_RV rv = h->fl->C_CopyObject(s, o, &t, 1, out);
  if (rv == CKR_OK) return KYSO_OK;
  *out = CK_INVALID_HANDLE;
  return hsm__fail_rv(err, rv, h->token, "storing the %s key of '%s' in token '%s'", half, label,
                      h->token);
}

/* The key already under `label`: OK when it is the same key (the node has
 * it already), ALREADY_EXISTS when it is another. */
static kyso_status same_key(hsm *h, const hsm__key *have, const hsm__key *want,
                            hsm_key_info *info_out, kyso_err *err) {
  if (have->id_len != want->id_len || memcmp(have->id, want->id, want->id_len) != 0)
    return kyso_fail(err, KYSO_ALREADY_EXISTS,
                     "token '%s' already holds a different key labelled '%s' (its CKA_ID "
                     "is not the SHA-256 of the public key sent); remove it or use another "
                     "label",
                     h->token, want->label);
  if (info_out != NULL) hsm__key_to_info(have, info_out);
  return KYSO_OK;
}

kyso_status hsm_unwrap_key(hsm *h, const char *label, hsm_key_type type, const uint8_t *spki_der,
                           size_t spki_len, const uint8_t *wrapped, size_t wrapped_len,
                           const char *kek_label, hsm_key_info *info_out, kyso_err *err) {
  kyso_status st;
  hsm__sigpipe g;
  hsm__key k, have;
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE spriv = CK_INVALID_HANDLE, spub = CK_INVALID_HANDLE; /* session objects */
  int reserved = 0;
  memset(&k, 0, sizeof(k));
  k.pub = k.priv = CK_INVALID_HANDLE;
  if ((st = hsm__label_check(label, err)) != KYSO_OK) return st;
  if ((st = hsm__label_check(kek_label, err)) != KYSO_OK) return st;
  if (type != HSM_KEY_RSA_2048 && type != HSM_KEY_RSA_3072 && type != HSM_KEY_EC_P256)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "unknown key type %d for key '%s'", (int)type,
                     label);
  /* RFC 5649 output is a multiple of 8 and at least 16 bytes. */
  if (wrapped == NULL || wrapped_len < 16 || wrapped_len % 8 != 0 || wrapped_len > HSM__MAX_WRAPPED)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "the wrapped key '%s' is %zu bytes; an RFC 5649 blob is a multiple of 8 "
                     "bytes, 16..%d: it was truncated or is not a wrapped key",
                     label, wrapped == NULL ? 0 : wrapped_len, HSM__MAX_WRAPPED);
  if ((st = hsm__enter(h, &g, err)) != KYSO_OK) return st;
  memcpy(k.label, label, strlen(label) + 1);
  k.type = type;
  k.bits = type == HSM_KEY_RSA_3072 ? 3072 : type == HSM_KEY_RSA_2048 ? 2048 : 256;
  k.state = HSM__KEY_READY;
  if ((st = hsm__spki_parse(spki_der, spki_len, type, label, &k.pubkey, err)) != KYSO_OK) goto out;
  if ((st = hsm__pubkey_id(k.pubkey, k.id, err)) != KYSO_OK) goto out;
  k.id_len = 32;
  if ((st = hsm__keymap_get(&h->map, label, h->token, &have, err)) != KYSO_OK &&
      st != KYSO_NOT_FOUND)
    goto out;
  if (st == KYSO_OK) { /* idempotent: a retried or replayed unwrap */
    st = same_key(h, &have, &k, info_out, err);
    goto out;
  }
  if ((st = hsm__keymap_reserve(&h->map, label, h->token, err)) != KYSO_OK) goto out;
  reserved = 1;
  if ((st = hsm__pool_acquire(&h->pool, h->token, &s, err)) != KYSO_OK) goto out;
  if ((st = hsm__kek_find(h, s, kek_label, &kek, err)) != KYSO_OK) goto out;
  if ((st = unwrap(h, s, kek, kek_label, &k, wrapped, wrapped_len, &spriv, err)) != KYSO_OK)
    goto out;
  if ((st = hsm__spki_create(h->fl, s, h->token, &k, k.pubkey, &spub, err)) != KYSO_OK) goto out;
  if ((st = hsm__pair_prove(h->fl, s, h->token, &k, spriv, k.pubkey, err)) != KYSO_OK) goto out;
  if ((st = to_token(h, s, label, "public", spub, &k.pub, err)) != KYSO_OK) goto out;
  if ((st = to_token(h, s, label, "private", spriv, &k.priv, err)) != KYSO_OK) goto out;
  if ((st = hsm__key_read_flags(h->fl, s, h->token, &k, err)) != KYSO_OK) goto out;
  hsm__keymap_commit(&h->map, &k);
  reserved = 0;
  if (info_out != NULL) hsm__key_to_info(&k, info_out);
out:
  if (s != CK_INVALID_HANDLE) {
    if (spriv != CK_INVALID_HANDLE) h->fl->C_DestroyObject(s, spriv);
    if (spub != CK_INVALID_HANDLE) h->fl->C_DestroyObject(s, spub);
    if (st != KYSO_OK) { /* no half-made key keeps the label */
      if (k.priv != CK_INVALID_HANDLE) h->fl->C_DestroyObject(s, k.priv);
      if (k.pub != CK_INVALID_HANDLE) h->fl->C_DestroyObject(s, k.pub);
    }
    hsm__pool_release(&h->pool, s);
  }
  if (reserved) hsm__keymap_cancel(&h->map, label);
  EVP_PKEY_free(k.pubkey);
  hsm__leave(h, &g);
  return st;
}
