/* kyso — wrapping a key once under the cluster KEK, to copy it to the other
 * nodes' tokens, then making it non-extractable (PKCS#11 never lets that
 * back), so that one blob is the only copy that ever left this token.
 *
 * If the wrap succeeds but CKA_EXTRACTABLE=false does not take, the blob is
 * wiped and the call fails: handing it out from a key that can still be
 * wrapped would break "wrapped once". Nothing has left the token then, so
 * the caller may simply retry. Once the flag is off the blob is returned
 * whatever else happens: it is the only way the key will ever reach another
 * node, and the caller must replicate it durably before anything else. */
#include <stdlib.h>
#include <string.h>

#include "hsm_internal.h"

static CK_BBOOL no = CK_FALSE;

/* Serialises check-wrap-lock for every key of the process, so two callers
 * cannot both see the key extractable and each take a blob. Wrapping is
 * rare (once per key in its life), so one lock costs nothing. */
static pthread_mutex_t wrap_mu = PTHREAD_MUTEX_INITIALIZER;

/* C_WrapKey into a new buffer of the size the token asks for. */
static kyso_status wrap(hsm *h, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE kek, const hsm__key *k,
                        const char *kek_label, uint8_t **out, size_t *out_len, kyso_err *err) {
  CK_MECHANISM m = {CKM_AES_KEY_WRAP_PAD, NULL, 0}; /* RFC 5649 */
  CK_ULONG len = 0;
  uint8_t *buf = NULL;
  CK_RV rv = h->fl->C_WrapKey(s, &m, kek, k->priv, NULL, &len);
  if (rv == CKR_OK && (len == 0 || len > HSM__MAX_WRAPPED)) rv = CKR_GENERAL_ERROR;
  if (rv == CKR_OK && (buf = malloc(len)) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory wrapping key '%s'", k->label);
  if (rv == CKR_OK) rv = h->fl->C_WrapKey(s, &m, kek, k->priv, buf, &len);
  if (rv == CKR_KEY_UNEXTRACTABLE) { /* another process got there first */
    free(buf);
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "key '%s' in token '%s' was already wrapped once and is no longer "
                     "extractable; replicate the blob made then, or generate a new key",
                     k->label, h->token);
  }
  if (rv != CKR_OK) {
    free(buf);
    return hsm__fail_rv(err, rv, h->token, "wrapping key '%s' under KEK '%s' in token '%s'",
                        k->label, kek_label, h->token);
  }
  *out = buf;
  *out_len = len;
  return KYSO_OK;
}

kyso_status hsm_wrap_key(hsm *h, const char *label, const char *kek_label, uint8_t **wrapped,
                         size_t *wrapped_len, kyso_err *err) {
  kyso_status st;
  hsm__sigpipe g;
  hsm__key k = {0};
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE;
  uint8_t *blob = NULL;
  size_t blob_len = 0;
  int locked = 0;
  if (wrapped == NULL || wrapped_len == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "hsm_wrap_key: wrapped and wrapped_len "
                     "are required");
  *wrapped = NULL;
  *wrapped_len = 0;
  if ((st = hsm__label_check(label, err)) != KYSO_OK) return st;
  if ((st = hsm__label_check(kek_label, err)) != KYSO_OK) return st;
  if ((st = hsm__enter(h, &g, err)) != KYSO_OK) return st;
  if ((st = hsm__keymap_get(&h->map, label, h->token, &k, err)) != KYSO_OK) goto out;
  if ((st = hsm__pool_acquire(&h->pool, h->token, &s, err)) != KYSO_OK) goto out;
  pthread_mutex_lock(&wrap_mu);
  locked = 1;
  if ((st = hsm__key_read_flags(h->fl, s, h->token, &k, err)) != KYSO_OK) goto out;
  hsm__keymap_set_flags(&h->map, label, k.sensitive, k.extractable, k.wrap_with_trusted);
  if (!k.extractable) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "key '%s' in token '%s' was already wrapped once (CKA_EXTRACTABLE is "
                   "false, which PKCS#11 never turns back); replicate the blob made then, "
                   "or generate a new key",
                   label, h->token);
    goto out;
  }
  if (!k.sensitive || !k.wrap_with_trusted) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "key '%s' in token '%s' is not CKA_SENSITIVE and CKA_WRAP_WITH_TRUSTED, "
                   "so it was not made by kyso; kyso replicates only keys it generated",
                   label, h->token);
    goto out;
  }
  if ((st = hsm__kek_find(h, s, kek_label, &kek, err)) != KYSO_OK) goto out;
  if ((st = wrap(h, s, kek, &k, kek_label, &blob, &blob_len, err)) != KYSO_OK) goto out;
  CK_ATTRIBUTE off = {CKA_EXTRACTABLE, &no, sizeof(no)};
  CK_RV rv = h->fl->C_SetAttributeValue(s, k.priv, &off, 1);
  if (rv != CKR_OK) {
    st = hsm__fail_rv(err, rv, h->token,
                      "key '%s' in token '%s' was wrapped but could not be made "
                      "non-extractable, so the blob was discarded and the key is unchanged; "
                      "retry",
                      label, h->token);
    goto out;
  }
  /* From here on nothing may fail: see the top of this file. */
  hsm__keymap_set_flags(&h->map, label, k.sensitive, 0, k.wrap_with_trusted);
  *wrapped = blob;
  *wrapped_len = blob_len;
  blob = NULL;
out:
  if (locked) pthread_mutex_unlock(&wrap_mu);
  if (blob != NULL) {
    kyso_wipe(blob, blob_len);
    free(blob);
  }
  if (s != CK_INVALID_HANDLE) hsm__pool_release(&h->pool, s);
  hsm__leave(h, &g);
  return st;
}
