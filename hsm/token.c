/* kyso — finding the token by label and logging in to it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsm_internal.h"

/* CK_TOKEN_INFO.label is 32 bytes padded with blanks, not NUL-terminated. */
static void token_label(const CK_TOKEN_INFO *ti, char out[33]) {
  size_t n = sizeof(ti->label);
  memcpy(out, ti->label, n);
  while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\0')) n--;
  out[n] = '\0';
}

/* Appends ", 'label'" to a bounded list of the labels seen, for messages. */
static void seen_add(char *seen, size_t cap, const char *label) {
  size_t used = strlen(seen);
  if (used + strlen(label) + 8 >= cap) return;
  snprintf(seen + used, cap - used, "%s'%s'", used ? ", " : "", label);
}

static kyso_status slot_list(CK_FUNCTION_LIST *fl, const char *path, CK_SLOT_ID **out,
                             CK_ULONG *n, kyso_err *err) {
  kyso_status st = KYSO_OK;
  CK_SLOT_ID *ids = NULL;
  CK_RV rv;
  for (;;) { /* the count can grow between the two calls: hot-plug */
    if ((rv = fl->C_GetSlotList(CK_TRUE, NULL, n)) != CKR_OK) break;
    free(ids);
    ids = calloc(*n ? *n : 1, sizeof(*ids));
    if (ids == NULL) {
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory listing slots");
      goto out;
    }
    if ((rv = fl->C_GetSlotList(CK_TRUE, ids, n)) != CKR_BUFFER_TOO_SMALL) break;
  }
  if (rv != CKR_OK) st = hsm__fail_rv(err, rv, "?", "C_GetSlotList of '%s'", path);
out:
  if (st != KYSO_OK) {
    free(ids);
    ids = NULL;
  }
  *out = ids;
  return st;
}

kyso_status hsm__token_find(CK_FUNCTION_LIST *fl, const char *module_path,
                            const char *label, hsm__slot *out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  CK_SLOT_ID *ids = NULL;
  CK_ULONG n = 0;
  char seen[256] = "";
  int found = 0;
  if ((st = slot_list(fl, module_path, &ids, &n, err)) != KYSO_OK) goto out;
  for (CK_ULONG i = 0; i < n; i++) {
    CK_TOKEN_INFO ti;
    char got[33];
    if (fl->C_GetTokenInfo(ids[i], &ti) != CKR_OK) continue; /* pulled meanwhile */
    if (!(ti.flags & CKF_TOKEN_INITIALIZED)) continue;
    token_label(&ti, got);
    seen_add(seen, sizeof(seen), got);
    if (strcmp(got, label) != 0) continue;
    if (found++) {
      st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "two tokens in PKCS#11 module '%s' are labelled '%s'; relabel one",
                     module_path, label);
      goto out;
    }
    out->id = ids[i];
    out->flags = ti.flags;
  }
  if (!found)
    st = kyso_fail(err, KYSO_NOT_FOUND,
                   "token '%s' not found in PKCS#11 module '%s'; tokens seen: %s", label,
                   module_path, seen[0] ? seen : "none");
out:
  free(ids);
  return st;
}

kyso_status hsm__token_login(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s,
                             const char *label, const hsm__slot *slot,
                             const hsm__pin *pin, kyso_err *err) {
  if (pin->page == NULL)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "no user PIN held for token '%s' (it was rejected earlier); "
                     "restart kysod with the right PIN",
                     label);
  if (slot->flags & CKF_USER_PIN_LOCKED)
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "the user PIN of token '%s' is locked; the security officer must "
                     "reset it (no login attempted)",
                     label);
  CK_RV rv = fl->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin->page, (CK_ULONG)pin->len);
  switch (rv) {
    case CKR_OK:
    case CKR_USER_ALREADY_LOGGED_IN: /* login state is per process and token */
      return KYSO_OK;
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
      return kyso_fail(err, KYSO_UNAUTHENTICATED,
                       "wrong user PIN for token '%s' (%s); not retried, tokens lock "
                       "after a few failures",
                       label, hsm__rv_name(rv));
    case CKR_PIN_LOCKED:
      return kyso_fail(err, KYSO_UNAUTHENTICATED,
                       "the user PIN of token '%s' is locked; the security officer must "
                       "reset it",
                       label);
    case CKR_USER_PIN_NOT_INITIALIZED:
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "token '%s' has no user PIN yet; the security officer must set one",
                       label);
    case CKR_PIN_EXPIRED:
      return kyso_fail(err, KYSO_UNAUTHENTICATED,
                       "the user PIN of token '%s' has expired; set a new one", label);
    default:
      return hsm__fail_rv(err, rv, label, "logging in to token '%s'", label);
  }
}
