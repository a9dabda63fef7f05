/* kyso — enumerating the token's keys into the map: one C_FindObjects pass
 * over every object (1024 handles per call), then one C_GetAttributeValue
 * per object. Private keys make the entries; public keys are attached to the
 * private key with the same label. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsm_internal.h"

/* One public key seen during the pass, attached once all private keys are in. */
typedef struct pub_seen {
  char label[KYSO_MAX_LABEL + 1];
  CK_OBJECT_HANDLE handle;
} pub_seen;

/* Every object handle of the token, in one linear scan. */
static kyso_status find_all(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                            CK_OBJECT_HANDLE **out, size_t *n, kyso_err *err) {
  kyso_status st = KYSO_OK;
  CK_OBJECT_HANDLE *v = NULL;
  size_t used = 0, cap = 0;
  int active = 0;
  CK_RV rv = fl->C_FindObjectsInit(s, NULL, 0);
  if (rv != CKR_OK) {
    st = hsm__fail_rv(err, rv, token, "listing the objects of token '%s'", token);
    goto out;
  }
  active = 1;
  for (;;) {
    if (cap - used < HSM__FIND_BATCH) {
      if (cap >= HSM__MAX_OBJECTS) {
        st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "token '%s' holds more than %d objects",
                       token, HSM__MAX_OBJECTS);
        goto out;
      }
      cap = cap ? cap * 2 : 4 * HSM__FIND_BATCH;
      CK_OBJECT_HANDLE *nv = realloc(v, cap * sizeof(*v));
      if (nv == NULL) {
        st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory listing token '%s'", token);
        goto out;
      }
      v = nv;
    }
    CK_ULONG got = 0;
    rv = fl->C_FindObjects(s, v + used, HSM__FIND_BATCH, &got);
    if (rv != CKR_OK) {
      st = hsm__fail_rv(err, rv, token, "listing the objects of token '%s'", token);
      goto out;
    }
    if (got == 0) break;
    used += got;
  }
out:
  if (active) fl->C_FindObjectsFinal(s);
  if (st != KYSO_OK) {
    free(v);
    v = NULL;
    used = 0;
  }
  *out = v;
  *n = used;
  return st;
}

/* Sets k->type/bits, or marks k UNSUPPORTED with a description. */
static void classify(hsm__key *k, CK_KEY_TYPE kt, CK_ULONG modulus_len, const uint8_t *ecp,
                     CK_ULONG ecp_len) {
  k->state = HSM__KEY_UNSUPPORTED;
  if (kt == CKK_RSA && modulus_len != CK_UNAVAILABLE_INFORMATION) {
    k->bits = (unsigned)modulus_len * 8;
    if (k->bits == 2048) k->type = HSM_KEY_RSA_2048;
    if (k->bits == 3072) k->type = HSM_KEY_RSA_3072;
    snprintf(k->what, sizeof(k->what), "RSA-%u", k->bits);
  } else if (kt == CKK_EC) {
    if (ecp_len == HSM__P256_OID_LEN && memcmp(ecp, HSM__P256_OID_DER, ecp_len) == 0) {
      k->type = HSM_KEY_EC_P256;
      k->bits = 256;
    }
    snprintf(k->what, sizeof(k->what), "EC on a curve other than P-256");
  } else {
    snprintf(k->what, sizeof(k->what), "of key type 0x%lx", (unsigned long)kt);
  }
  if (k->type != 0) k->state = HSM__KEY_READY;
}

/* Reads one object and files it: a private key into the map, a public key
 * into *pubs. Objects without a kyso-style label are not ours and skipped. */
static kyso_status scan_one(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                            CK_OBJECT_HANDLE o, hsm__keymap *m, pub_seen *pubs,
                            size_t *npubs, kyso_err *err) {
  CK_OBJECT_CLASS cls = (CK_OBJECT_CLASS)-1;
  CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
  char label[KYSO_MAX_LABEL + 1];
  uint8_t id[64], ecp[32];
  CK_BBOOL sens = CK_FALSE, extr = CK_FALSE, wwt = CK_FALSE;
  CK_ATTRIBUTE t[] = {
      {CKA_CLASS, &cls, sizeof(cls)},
      {CKA_KEY_TYPE, &kt, sizeof(kt)},
      {CKA_LABEL, label, KYSO_MAX_LABEL},
      {CKA_ID, id, sizeof(id)},
      {CKA_MODULUS, NULL, 0}, /* the length only: gives the RSA size */
      {CKA_EC_PARAMS, ecp, sizeof(ecp)},
      {CKA_SENSITIVE, &sens, sizeof(sens)},
      {CKA_EXTRACTABLE, &extr, sizeof(extr)},
      {CKA_WRAP_WITH_TRUSTED, &wwt, sizeof(wwt)},
  };
  /* Attributes an object lacks (or too long a label) come back as
   * CK_UNAVAILABLE_INFORMATION with one of these codes; the rest are filled. */
  CK_RV rv = fl->C_GetAttributeValue(s, o, t, sizeof(t) / sizeof(t[0]));
  if (rv == CKR_OBJECT_HANDLE_INVALID) return KYSO_OK; /* destroyed meanwhile */
  if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE &&
      rv != CKR_BUFFER_TOO_SMALL)
    return hsm__fail_rv(err, rv, token, "reading object %lu of token '%s'", (unsigned long)o,
                        token);
  if (t[0].ulValueLen != sizeof(cls) || t[2].ulValueLen == CK_UNAVAILABLE_INFORMATION ||
      t[2].ulValueLen > KYSO_MAX_LABEL)
    return KYSO_OK;
  if (cls != CKO_PRIVATE_KEY && cls != CKO_PUBLIC_KEY) return KYSO_OK;
  label[t[2].ulValueLen] = '\0';
  if (hsm__label_check(label, NULL) != KYSO_OK) return KYSO_OK;
  if (cls == CKO_PUBLIC_KEY) {
    memcpy(pubs[*npubs].label, label, t[2].ulValueLen + 1);
    pubs[(*npubs)++].handle = o;
    return KYSO_OK;
  }
  hsm__key k;
  memset(&k, 0, sizeof(k));
  memcpy(k.label, label, t[2].ulValueLen + 1);
  k.priv = o;
  k.pub = CK_INVALID_HANDLE;
  if (t[3].ulValueLen != CK_UNAVAILABLE_INFORMATION && t[3].ulValueLen <= sizeof(k.id)) {
    memcpy(k.id, id, t[3].ulValueLen);
    k.id_len = t[3].ulValueLen;
  }
  classify(&k, t[1].ulValueLen == sizeof(kt) ? kt : (CK_KEY_TYPE)-1, t[4].ulValueLen, ecp,
           t[5].ulValueLen);
  k.sensitive = t[6].ulValueLen == sizeof(sens) && sens == CK_TRUE;
  k.extractable = t[7].ulValueLen == sizeof(extr) && extr == CK_TRUE;
  k.wrap_with_trusted = t[8].ulValueLen == sizeof(wwt) && wwt == CK_TRUE;
  return hsm__keymap_put(m, &k, err);
}

kyso_status hsm__keyscan(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                         hsm__keymap *m, kyso_err *err) {
  kyso_status st = KYSO_OK;
  CK_OBJECT_HANDLE *objs = NULL;
  pub_seen *pubs = NULL;
  size_t n = 0, npubs = 0;
  if ((st = find_all(fl, s, token, &objs, &n, err)) != KYSO_OK) goto out;
  pubs = malloc((n ? n : 1) * sizeof(*pubs));
  if (pubs == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory enumerating token '%s'", token);
    goto out;
  }
  for (size_t i = 0; i < n; i++)
    if ((st = scan_one(fl, s, token, objs[i], m, pubs, &npubs, err)) != KYSO_OK) goto out;
  for (size_t i = 0; i < npubs; i++) hsm__keymap_attach_pub(m, pubs[i].label, pubs[i].handle);
out:
  free(pubs);
  free(objs);
  return st;
}

kyso_status hsm__key_read_flags(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                                hsm__key *k, kyso_err *err) {
  CK_BBOOL sens = CK_FALSE, extr = CK_FALSE, wwt = CK_FALSE;
  CK_ATTRIBUTE t[] = {
      {CKA_SENSITIVE, &sens, sizeof(sens)},
      {CKA_EXTRACTABLE, &extr, sizeof(extr)},
      {CKA_WRAP_WITH_TRUSTED, &wwt, sizeof(wwt)},
  };
  CK_RV rv = fl->C_GetAttributeValue(s, k->priv, t, sizeof(t) / sizeof(t[0]));
  if (rv != CKR_OK)
    return hsm__fail_rv(err, rv, token, "reading the protection flags of key '%s' in token '%s'",
                        k->label, token);
  k->sensitive = sens == CK_TRUE;
  k->extractable = extr == CK_TRUE;
  k->wrap_with_trusted = wwt == CK_TRUE;
  return KYSO_OK;
}
