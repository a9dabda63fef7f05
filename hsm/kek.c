/* kyso — the cluster's key-encryption key (KEK) in this token: finding it by
 * label, checking it is safe to wrap under, and hsm_kek_check.
 *
 * The security officer puts the same AES-256 KEK into every node's token
 * (kyso-token import-kek). What makes a KEK safe, each refused here if absent:
 *  - CKA_TRUSTED, or SoftHSM will not wrap our CKA_WRAP_WITH_TRUSTED keys
 *    under it (only the SO can set it, and only when creating the key);
 *  - CKA_SENSITIVE, !CKA_EXTRACTABLE: its own value never leaves the token;
 *  - !CKA_ENCRYPT, !CKA_DECRYPT: a KEK that decrypts turns a wrapped blob
 *    back into the plain PKCS#8 (SoftHSM lacks that mechanism; others not);
 *  - !CKA_MODIFIABLE: the KEK is a public object (the SO cannot make private
 *    ones), so anyone with the user PIN could otherwise flip the above;
 *  - CKA_UNWRAP_TEMPLATE = the guard below: without it anyone with the user
 *    PIN can unwrap a blob as a non-sensitive key and read it in the clear. */
#include <string.h>

#include "hsm_internal.h"

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

void hsm__kek_guard(CK_ATTRIBUTE t[HSM__KEK_GUARD_N]) {
  t[0] = (CK_ATTRIBUTE){CKA_PRIVATE, &yes, sizeof(yes)};
  t[1] = (CK_ATTRIBUTE){CKA_SENSITIVE, &yes, sizeof(yes)};
  t[2] = (CK_ATTRIBUTE){CKA_EXTRACTABLE, &no, sizeof(no)};
  t[3] = (CK_ATTRIBUTE){CKA_WRAP_WITH_TRUSTED, &yes, sizeof(yes)};
}

static kyso_status ceremony(kyso_err *err, const char *token, const char *kek_label,
                            const char *why) {
  return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "KEK '%s' in token '%s' %s; the security officer must put the cluster's "
                   "KEK into this token with `kyso-token import-kek --token %s --label %s` "
                   "(the node-setup ceremony)",
                   kek_label, token, why, token, kek_label);
}

/* 1 if the object's CKA_UNWRAP_TEMPLATE is exactly the guard. */
static int guarded(hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o) {
  CK_ATTRIBUTE want[HSM__KEK_GUARD_N], got[HSM__KEK_GUARD_N];
  CK_BBOOL vals[HSM__KEK_GUARD_N];
  CK_ATTRIBUTE t = {CKA_UNWRAP_TEMPLATE, NULL, 0};
  hsm__kek_guard(want);
  if (h->fl->C_GetAttributeValue(s, o, &t, 1) != CKR_OK) return 0;
  /* Another size (or CK_UNAVAILABLE_INFORMATION) is not the guard. */
  if (t.ulValueLen != sizeof(want)) return 0;
  /* Array attributes are read like any other: once for the lengths, then
   * into buffers of those lengths. */
  memset(got, 0, sizeof(got));
  t.pValue = got;
  if (h->fl->C_GetAttributeValue(s, o, &t, 1) != CKR_OK) return 0;
  for (size_t i = 0; i < HSM__KEK_GUARD_N; i++) {
    if (got[i].ulValueLen != sizeof(CK_BBOOL)) return 0;
    got[i].pValue = &vals[i];
  }
  if (h->fl->C_GetAttributeValue(s, o, &t, 1) != CKR_OK) return 0;
  for (size_t i = 0; i < HSM__KEK_GUARD_N; i++) {
    size_t j = 0;
    while (j < HSM__KEK_GUARD_N && got[j].type != want[i].type) j++;
    if (j == HSM__KEK_GUARD_N || vals[j] != *(CK_BBOOL *)want[i].pValue) return 0;
  }
  return 1;
}

/* Checks object o is a safe KEK labelled kek_label. *stale is set when o is
 * no longer that object (destroyed, or a handle from before), so the caller
 * searches again instead of failing. */
static kyso_status check(hsm *h, CK_SESSION_HANDLE s, const char *kek_label, CK_OBJECT_HANDLE o,
                         int *stale, kyso_err *err) {
  CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
  CK_ULONG len = 0;
  char label[KYSO_MAX_LABEL + 1];
  CK_BBOOL trusted = CK_FALSE, wrap = CK_FALSE, unwrap = CK_FALSE, sens = CK_FALSE;
  CK_BBOOL extr = CK_TRUE, enc = CK_TRUE, dec = CK_TRUE, mod = CK_TRUE;
  CK_ATTRIBUTE t[] = {
      {CKA_LABEL, label, KYSO_MAX_LABEL},   {CKA_KEY_TYPE, &kt, sizeof(kt)},
      {CKA_VALUE_LEN, &len, sizeof(len)},   {CKA_TRUSTED, &trusted, sizeof(trusted)},
      {CKA_WRAP, &wrap, sizeof(wrap)},      {CKA_UNWRAP, &unwrap, sizeof(unwrap)},
      {CKA_SENSITIVE, &sens, sizeof(sens)}, {CKA_EXTRACTABLE, &extr, sizeof(extr)},
      {CKA_ENCRYPT, &enc, sizeof(enc)},     {CKA_DECRYPT, &dec, sizeof(dec)},
      {CKA_MODIFIABLE, &mod, sizeof(mod)},
  };
  size_t label_len = strlen(kek_label);
  *stale = 0;
  /* Attributes an object lacks come back unavailable and leave the failing
   * value set above in place; a longer label is another object. */
  CK_RV rv = h->fl->C_GetAttributeValue(s, o, t, sizeof(t) / sizeof(t[0]));
  if (rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_BUFFER_TOO_SMALL) {
    *stale = 1;
    return KYSO_OK;
  }
  if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE)
    return hsm__fail_rv(err, rv, h->token, "reading KEK '%s' in token '%s'", kek_label, h->token);
  if (t[0].ulValueLen != label_len || memcmp(label, kek_label, label_len) != 0) {
    *stale = 1;
    return KYSO_OK;
  }
  if (kt != CKK_AES || len != 32) return ceremony(err, h->token, kek_label, "is not AES-256");
  if (trusted != CK_TRUE)
    return ceremony(err, h->token, kek_label,
                    "is not CKA_TRUSTED, so keys kyso generates cannot be wrapped under it "
                    "(only the security officer can make a trusted key)");
  if (wrap != CK_TRUE || unwrap != CK_TRUE)
    return ceremony(err, h->token, kek_label, "lacks CKA_WRAP or CKA_UNWRAP");
  if (sens != CK_TRUE || extr != CK_FALSE || enc != CK_FALSE || dec != CK_FALSE || mod != CK_FALSE)
    return ceremony(err, h->token, kek_label,
                    "is not locked down (it must be sensitive, non-extractable, "
                    "non-modifiable, and unable to encrypt or decrypt); destroy it first");
  if (!guarded(h, s, o))
    return ceremony(err, h->token, kek_label,
                    "has no CKA_UNWRAP_TEMPLATE forcing unwrapped keys sensitive and "
                    "non-extractable, so anyone with the user PIN could unwrap a key in "
                    "the clear; destroy it first");
  return KYSO_OK;
}

/* One search of the token for secret keys labelled kek_label. */
static kyso_status search(hsm *h, CK_SESSION_HANDLE s, const char *kek_label, CK_OBJECT_HANDLE *out,
                          kyso_err *err) {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
                      {CKA_LABEL, (void *)kek_label, (CK_ULONG)strlen(kek_label)}};
  CK_OBJECT_HANDLE found[2];
  CK_ULONG n = 0;
  CK_RV rv = h->fl->C_FindObjectsInit(s, t, 2);
  if (rv == CKR_OK) {
    rv = h->fl->C_FindObjects(s, found, 2, &n);
    h->fl->C_FindObjectsFinal(s);
  }
  if (rv != CKR_OK)
    return hsm__fail_rv(err, rv, h->token, "looking for KEK '%s' in token '%s'", kek_label,
                        h->token);
  if (n == 0) return ceremony(err, h->token, kek_label, "is not there");
  if (n > 1)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "token '%s' holds two secret keys labelled '%s'; the security officer "
                     "must destroy the one that is not the cluster's KEK",
                     h->token, kek_label);
  *out = found[0];
  return KYSO_OK;
}

kyso_status hsm__kek_find(hsm *h, CK_SESSION_HANDLE s, const char *kek_label, CK_OBJECT_HANDLE *out,
                          kyso_err *err) {
  kyso_status st;
  int stale = 1;
  CK_OBJECT_HANDLE o = hsm__keymap_kek(&h->map, kek_label);
  if (o != CK_INVALID_HANDLE && (st = check(h, s, kek_label, o, &stale, err)) != KYSO_OK) return st;
  if (stale) {
    if ((st = search(h, s, kek_label, &o, err)) != KYSO_OK) return st;
    if ((st = check(h, s, kek_label, o, &stale, err)) != KYSO_OK) return st;
    if (stale) return ceremony(err, h->token, kek_label, "vanished while being read");
    hsm__keymap_set_kek(&h->map, kek_label, o);
  }
  *out = o;
  return KYSO_OK;
}

/* Wraps a fresh session AES key under the KEK, unwraps it again, and checks
 * both encrypt a block alike: the KEK works both ways in this token. */
static kyso_status round_trip(hsm *h, CK_SESSION_HANDLE s, const char *kek_label,
                              CK_OBJECT_HANDLE kek, kyso_err *err) {
  kyso_status st = KYSO_OK;
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_AES;
  CK_ULONG len = 32;
  CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0}, wrap = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
  CK_MECHANISM ecb = {CKM_AES_ECB, NULL, 0};
  CK_ATTRIBUTE probe_t[] = {
      {CKA_TOKEN, &no, sizeof(no)},       {CKA_PRIVATE, &yes, sizeof(yes)},
      {CKA_SENSITIVE, &yes, sizeof(yes)}, {CKA_EXTRACTABLE, &yes, sizeof(yes)},
      {CKA_ENCRYPT, &yes, sizeof(yes)},   {CKA_VALUE_LEN, &len, sizeof(len)},
  };
  CK_ATTRIBUTE back_t[4 + HSM__KEK_GUARD_N] = {
      {CKA_CLASS, &cls, sizeof(cls)},
      {CKA_KEY_TYPE, &kt, sizeof(kt)},
      {CKA_TOKEN, &no, sizeof(no)},
      {CKA_ENCRYPT, &yes, sizeof(yes)},
  };
  CK_OBJECT_HANDLE probe = CK_INVALID_HANDLE, back = CK_INVALID_HANDLE;
  uint8_t blob[64], zero[16] = {0}, c1[16], c2[16];
  CK_ULONG blob_len = sizeof(blob), l1 = sizeof(c1), l2 = sizeof(c2);
  const char *step = "generating a test key";
  hsm__kek_guard(back_t + 4);
  CK_RV rv = h->fl->C_GenerateKey(s, &gen, probe_t, sizeof(probe_t) / sizeof(probe_t[0]), &probe);
  if (rv == CKR_OK) {
    step = "wrapping a test key";
    rv = h->fl->C_WrapKey(s, &wrap, kek, probe, blob, &blob_len);
  }
  if (rv == CKR_OK) {
    step = "unwrapping a test key";
    rv = h->fl->C_UnwrapKey(s, &wrap, kek, blob, blob_len, back_t,
                            sizeof(back_t) / sizeof(back_t[0]), &back);
  }
  if (rv == CKR_OK) {
    step = "encrypting with the test key";
    rv = h->fl->C_EncryptInit(s, &ecb, probe);
    if (rv == CKR_OK) rv = h->fl->C_Encrypt(s, zero, sizeof(zero), c1, &l1);
  }
  if (rv == CKR_OK) {
    step = "encrypting with the unwrapped test key";
    rv = h->fl->C_EncryptInit(s, &ecb, back);
    if (rv == CKR_OK) rv = h->fl->C_Encrypt(s, zero, sizeof(zero), c2, &l2);
  }
  if (rv != CKR_OK) {
    st = hsm__fail_rv(err, rv, h->token, "KEK '%s' in token '%s' does not work: %s", kek_label,
                      h->token, step);
    goto out;
  }
  if (l1 != l2 || memcmp(c1, c2, l1) != 0)
    st = kyso_fail(err, KYSO_INTERNAL,
                   "KEK '%s' in token '%s' unwrapped a different key than it wrapped; the "
                   "token is faulty",
                   kek_label, h->token);
out:
  if (probe != CK_INVALID_HANDLE) h->fl->C_DestroyObject(s, probe);
  if (back != CK_INVALID_HANDLE) h->fl->C_DestroyObject(s, back);
  return st;
}

kyso_status hsm_kek_check(hsm *h, const char *kek_label, kyso_err *err) {
  kyso_status st;
  hsm__sigpipe g;
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE;
  if ((st = hsm__label_check(kek_label, err)) != KYSO_OK) return st;
  if ((st = hsm__enter(h, &g, err)) != KYSO_OK) return st;
  if ((st = hsm__pool_acquire(&h->pool, h->token, &s, err)) != KYSO_OK) goto out;
  if ((st = hsm__kek_find(h, s, kek_label, &kek, err)) != KYSO_OK) goto out;
  st = round_trip(h, s, kek_label, kek, err);
out:
  if (s != CK_INVALID_HANDLE) hsm__pool_release(&h->pool, s);
  hsm__leave(h, &g);
  return st;
}
