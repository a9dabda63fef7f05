/* hsm — removing a key that must not stay: kysod generated it, but the
 * command that registers it never committed (the key registry, not the
 * token, is the truth in a cluster). */
#include <string.h>

#include "hsm_internal.h"

kyso_status hsm_destroy_key(hsm *h, const char *label, kyso_err *err) {
  kyso_status st;
  hsm__sigpipe g;
  hsm__key k;
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  if ((st = hsm__label_check(label, err)) != KYSO_OK) return st;
  if ((st = hsm__enter(h, &g, err)) != KYSO_OK) return st;
  if ((st = hsm__keymap_get(&h->map, label, h->token, &k, err)) != KYSO_OK) goto out;
  if ((st = hsm__pool_acquire(&h->pool, h->token, &s, err)) != KYSO_OK) goto out;
  CK_RV rv = h->fl->C_DestroyObject(s, k.priv);
  if (rv != CKR_OK) {
    st = hsm__fail_rv(err, rv, h->token, "destroying key '%s' in token '%s'", label, h->token);
    goto out;
  }
  /* The private half is what matters; a public half left behind is harmless
   * and found by the next enumeration as a lone public object. */
  if (k.pub != CK_INVALID_HANDLE) h->fl->C_DestroyObject(s, k.pub);
  hsm__keymap_remove(&h->map, label);
out:
  if (s != CK_INVALID_HANDLE) hsm__pool_release(&h->pool, s);
  hsm__leave(h, &g);
  return st;
}
