/* kyso — generating a key pair in the token.
 *
 * The private half is CKA_SENSITIVE and CKA_WRAP_WITH_TRUSTED: it can leave
 * the token only wrapped under a CKA_TRUSTED key (the cluster KEK, which only
 * the security officer can mark). CKA_EXTRACTABLE starts true so that the
 * cluster can wrap it that one time to copy it to the other nodes' tokens,
 * then sets it false, which PKCS#11 makes one-way. */
#include <string.h>

#include "hsm_internal.h"

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

static kyso_status generate_pair(hsm *h, CK_SESSION_HANDLE s, const char *label,
                                 hsm_key_type type, CK_OBJECT_HANDLE *pub,
                                 CK_OBJECT_HANDLE *priv, kyso_err *err) {
  CK_ULONG bits = type == HSM_KEY_RSA_3072 ? 3072 : 2048;
  CK_BYTE e65537[] = {0x01, 0x00, 0x01};
  CK_ULONG label_len = (CK_ULONG)strlen(label);
  CK_MECHANISM m = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
  CK_ATTRIBUTE pub_t[] = {
      {CKA_TOKEN, &yes, sizeof(yes)},
      {CKA_PRIVATE, &no, sizeof(no)},
      {CKA_VERIFY, &yes, sizeof(yes)},
      {CKA_ENCRYPT, &no, sizeof(no)},
      {CKA_WRAP, &no, sizeof(no)},
      {CKA_LABEL, (void *)label, label_len},
      {CKA_MODULUS_BITS, &bits, sizeof(bits)}, /* RSA; EC puts CKA_EC_PARAMS here */
      {CKA_PUBLIC_EXPONENT, e65537, sizeof(e65537)},
  };
  CK_ULONG npub = sizeof(pub_t) / sizeof(pub_t[0]);
  CK_ATTRIBUTE priv_t[] = {
      {CKA_TOKEN, &yes, sizeof(yes)},
      {CKA_PRIVATE, &yes, sizeof(yes)},
      {CKA_SENSITIVE, &yes, sizeof(yes)},
      {CKA_EXTRACTABLE, &yes, sizeof(yes)},
      {CKA_WRAP_WITH_TRUSTED, &yes, sizeof(yes)},
      {CKA_SIGN, &yes, sizeof(yes)},
      {CKA_DECRYPT, &no, sizeof(no)},
      {CKA_UNWRAP, &no, sizeof(no)},
      {CKA_DERIVE, &no, sizeof(no)},
      {CKA_LABEL, (void *)label, label_len},
  };
  if (type == HSM_KEY_EC_P256) {
    m.mechanism = CKM_EC_KEY_PAIR_GEN;
    pub_t[npub - 2] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)HSM__P256_OID_DER, HSM__P256_OID_LEN};
    npub--;
  }
  CK_RV rv = h->fl->C_GenerateKeyPair(s, &m, pub_t, npub, priv_t,
                                      sizeof(priv_t) / sizeof(priv_t[0]), pub, priv);
  if (rv != CKR_OK)
    return hsm__fail_rv(err, rv, h->token, "generating %s key '%s' in token '%s'",
                        hsm_key_type_name(type), label, h->token);
  return KYSO_OK;
}

/* CKA_ID = SHA-256 of the DER SubjectPublicKeyInfo, on both halves, so other
 * PKCS#11 tools pair them and a certificate can be matched to its key. */
static kyso_status set_id(hsm *h, CK_SESSION_HANDLE s, hsm__key *k, kyso_err *err) {
  kyso_status st = hsm__pubkey_id(k->pubkey, k->id, err);
  if (st != KYSO_OK) return st;
  k->id_len = 32;
  CK_ATTRIBUTE t[] = {{CKA_ID, k->id, 32}};
  CK_OBJECT_HANDLE both[2] = {k->pub, k->priv};
  for (int i = 0; i < 2; i++) {
    CK_RV rv = h->fl->C_SetAttributeValue(s, both[i], t, 1);
    if (rv != CKR_OK)
      return hsm__fail_rv(err, rv, h->token, "setting CKA_ID of key '%s' in token '%s'",
                          k->label, h->token);
  }
  return KYSO_OK;
}

kyso_status hsm_generate_key(hsm *h, const char *label, hsm_key_type type,
                             hsm_key_info *info_out, kyso_err *err) {
  kyso_status st;
  hsm__sigpipe g;
  hsm__key k;
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  int reserved = 0;
  memset(&k, 0, sizeof(k));
  k.pub = k.priv = CK_INVALID_HANDLE;
  if ((st = hsm__label_check(label, err)) != KYSO_OK) return st;
  if (type != HSM_KEY_RSA_2048 && type != HSM_KEY_RSA_3072 && type != HSM_KEY_EC_P256)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "unknown key type %d for key '%s'", (int)type,
                     label);
  if ((st = hsm__enter(h, &g, err)) != KYSO_OK) return st;
  if ((st = hsm__keymap_reserve(&h->map, label, h->token, err)) != KYSO_OK) goto out;
  reserved = 1;
  if ((st = hsm__pool_acquire(&h->pool, h->token, &s, err)) != KYSO_OK) goto out;
  memcpy(k.label, label, strlen(label) + 1);
  k.type = type;
  k.bits = type == HSM_KEY_RSA_3072 ? 3072 : type == HSM_KEY_RSA_2048 ? 2048 : 256;
  k.state = HSM__KEY_READY;
  if ((st = generate_pair(h, s, label, type, &k.pub, &k.priv, err)) != KYSO_OK) goto out;
  if ((st = hsm__pubkey_read(h->fl, s, h->token, &k, &k.pubkey, err)) != KYSO_OK) goto out;
  if ((st = set_id(h, s, &k, err)) != KYSO_OK) goto out;
  if ((st = hsm__key_read_flags(h->fl, s, h->token, &k, err)) != KYSO_OK) goto out;
  hsm__keymap_commit(&h->map, &k);
  reserved = 0;
  if (info_out != NULL) hsm__key_to_info(&k, info_out);
out:
  if (st != KYSO_OK && s != CK_INVALID_HANDLE) { /* no half-made key keeps the label */
    if (k.priv != CK_INVALID_HANDLE) h->fl->C_DestroyObject(s, k.priv);
    if (k.pub != CK_INVALID_HANDLE) h->fl->C_DestroyObject(s, k.pub);
  }
  if (s != CK_INVALID_HANDLE) hsm__pool_release(&h->pool, s);
  if (reserved) hsm__keymap_cancel(&h->map, label);
  EVP_PKEY_free(k.pubkey);
  hsm__leave(h, &g);
  return st;
}
