/* kyso — reading keys: info, listing, public halves. All answered from the
 * handle map; only attribute reads by handle touch the token. */
#include <string.h>

#include "hsm_internal.h"

const char *hsm_key_type_id(hsm_key_type type) {
  switch (type) {
    case HSM_KEY_RSA_2048: return "rsa-2048";
    case HSM_KEY_RSA_3072: return "rsa-3072";
    case HSM_KEY_EC_P256: return "ec-p256";
  }
  return "unknown";
}

int hsm_key_type_parse(const char *id, hsm_key_type *out) {
  static const hsm_key_type all[] = {HSM_KEY_RSA_2048, HSM_KEY_RSA_3072, HSM_KEY_EC_P256};
  for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
    if (strcmp(id, hsm_key_type_id(all[i])) == 0) {
      *out = all[i];
      return 1;
    }
  return 0;
}

const char *hsm_key_type_name(hsm_key_type type) {
  switch (type) {
    case HSM_KEY_RSA_2048:
      return "RSA-2048";
    case HSM_KEY_RSA_3072:
      return "RSA-3072";
    case HSM_KEY_EC_P256:
      return "EC-P256";
  }
  return "unknown";
}

kyso_status hsm_key_info_get(hsm *h, const char *label, hsm_key_info *out, kyso_err *err) {
  kyso_status st;
  hsm__sigpipe g;
  hsm__key k = {0};
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  if (out == NULL) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "hsm_key_info_get: out is NULL");
  if ((st = hsm__label_check(label, err)) != KYSO_OK) return st;
  if ((st = hsm__enter(h, &g, err)) != KYSO_OK) return st;
  if ((st = hsm__keymap_get(&h->map, label, h->token, &k, err)) != KYSO_OK) goto out;
  if ((st = hsm__pool_acquire(&h->pool, h->token, &s, err)) != KYSO_OK) goto out;
  /* The protection flags can change under us (CKA_EXTRACTABLE goes false
   * after the one wrap for replication), so they are read afresh. */
  st = hsm__key_read_flags(h->fl, s, h->token, &k, err);
  hsm__pool_release(&h->pool, s);
  if (st != KYSO_OK) goto out;
  hsm__keymap_set_flags(&h->map, label, k.sensitive, k.extractable, k.wrap_with_trusted);
  hsm__key_to_info(&k, out);
out:
  hsm__leave(h, &g);
  return st;
}

kyso_status hsm_list_keys(hsm *h, hsm_key_info **out, size_t *count, kyso_err *err) {
  kyso_status st;
  hsm__sigpipe g;
  if (out == NULL || count == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "hsm_list_keys: out and count are required");
  *out = NULL;
  *count = 0;
  if ((st = hsm__enter(h, &g, err)) != KYSO_OK) return st;
  st = hsm__keymap_list(&h->map, out, count, err);
  hsm__leave(h, &g);
  return st;
}

kyso_status hsm_public_key(hsm *h, const char *label, EVP_PKEY **out, kyso_err *err) {
  kyso_status st;
  hsm__sigpipe g;
  hsm__key k = {0};
  EVP_PKEY *pk = NULL;
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  if (out == NULL) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "hsm_public_key: out is NULL");
  *out = NULL;
  if ((st = hsm__label_check(label, err)) != KYSO_OK) return st;
  if ((st = hsm__enter(h, &g, err)) != KYSO_OK) return st;
  if ((st = hsm__keymap_get(&h->map, label, h->token, &k, err)) != KYSO_OK) goto out;
  if ((*out = hsm__keymap_cache_pubkey(&h->map, label, NULL)) != NULL) goto out; /* cached */
  if ((st = hsm__pool_acquire(&h->pool, h->token, &s, err)) != KYSO_OK) goto out;
  st = hsm__pubkey_read(h->fl, s, h->token, &k, &pk, err);
  hsm__pool_release(&h->pool, s);
  if (st != KYSO_OK) goto out;
  /* Two callers may race to build it; the map keeps the first. */
  *out = hsm__keymap_cache_pubkey(&h->map, label, pk);
  if (*out == NULL)
    st = kyso_fail(err, KYSO_NOT_FOUND, "key '%s' not found in token '%s'", label, h->token);
out:
  EVP_PKEY_free(pk);
  hsm__leave(h, &g);
  return st;
}
