/* kyso tests — invariant 1 ("keys never leave the HSM in the clear"), read
 * through PKCS#11 directly: the test dlopen()s SoftHSM itself, with its own
 * session, and inspects keys that hsm_generate_key made.
 *
 * What SoftHSM 2.6.1 (Debian 12) does, as measured by this test:
 *  - The security officer creates a trusted KEK directly: C_GenerateKey with
 *    CKA_TRUSTED=true in an SO session is CKR_OK (the key must be public,
 *    CKA_PRIVATE=false: the SO cannot create private objects). No
 *    C_SetAttributeValue step is needed.
 *  - A normal user can neither create a key with CKA_TRUSTED=true nor set it
 *    afterwards: both are CKR_ATTRIBUTE_READ_ONLY.
 *  - Reading CKA_PRIVATE_EXPONENT (RSA) or CKA_VALUE (EC) of our keys is
 *    CKR_ATTRIBUTE_SENSITIVE; CKA_VALUE of an RSA key is
 *    CKR_ATTRIBUTE_TYPE_INVALID (RSA keys have no CKA_VALUE).
 *  - CKA_SENSITIVE and CKA_WRAP_WITH_TRUSTED cannot be turned off, neither by
 *    C_SetAttributeValue nor by C_CopyObject with a new template
 *    (CKR_ATTRIBUTE_READ_ONLY); a plain copy keeps both true.
 *  - C_WrapKey (CKM_AES_KEY_WRAP_PAD) under an ordinary AES key with
 *    CKA_WRAP=true: CKR_KEY_NOT_WRAPPABLE. Under the SO's trusted KEK: CKR_OK.
 *  - CKA_EXTRACTABLE true → false is CKR_OK, false → true is
 *    CKR_ATTRIBUTE_READ_ONLY; afterwards every C_WrapKey is
 *    CKR_KEY_UNEXTRACTABLE, trusted KEK or not.
 *  - HAZARD: while a key is still extractable, anyone holding the user PIN
 *    can wrap it under the trusted KEK and C_UnwrapKey the blob with
 *    CKA_SENSITIVE=false, then read CKA_VALUE in the clear — unless the KEK
 *    carries CKA_UNWRAP_TEMPLATE {CKA_SENSITIVE=true, CKA_EXTRACTABLE=false},
 *    which SoftHSM enforces (CKR_TEMPLATE_INCONSISTENT, also when the caller's
 *    template leaves those attributes out). The KEK setup must use one.
 */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>

#include "kyso/hsm.h"
#include "softhsm_fixture.h"

#define RSA_LABEL "kyso/personal/prot-rsa"
#define EC_LABEL "kyso/seal/prot-ec"

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

typedef struct world {
  fx_token tok;
  uint8_t rsa_id[32], ec_id[32];
  void *dl;
  CK_FUNCTION_LIST *fl;
  CK_SLOT_ID slot;
  CK_SESSION_HANDLE s;
  CK_OBJECT_HANDLE kek; /* the SO's trusted KEK, made by test_wrap_rules */
} world;

#define EXPECT_RV(got, want, what)                                                   \
  do {                                                                               \
    CK_RV got_ = (got);                                                              \
    if (got_ != (CK_RV)(want))                                                       \
      fail_msg("%s: got CKR 0x%lx, want %s (0x%lx)", what, (unsigned long)got_, #want, \
               (unsigned long)(want));                                               \
  } while (0)

/* hsm_generate_key makes the two keys; the hsm is closed again before the
 * test loads the module on its own. */
static int make_keys(world *w) {
  kyso_err err = {0};
  hsm *h = NULL;
  hsm_key_info info;
  hsm_opts o = {KYSO_SOFTHSM_MODULE, w->tok.label, FX_PIN, 2};
  if (hsm_open(&o, &h, &err) != KYSO_OK) goto fail;
  if (hsm_generate_key(h, RSA_LABEL, HSM_KEY_RSA_2048, &info, &err) != KYSO_OK) goto fail;
  memcpy(w->rsa_id, info.id, 32);
  if (hsm_generate_key(h, EC_LABEL, HSM_KEY_EC_P256, &info, &err) != KYSO_OK) goto fail;
  memcpy(w->ec_id, info.id, 32);
  hsm_close(h);
  return 0;
fail:
  fprintf(stderr, "make_keys: %s\n", err.msg);
  hsm_close(h);
  return -1;
}

static int find_slot(world *w) {
  CK_SLOT_ID slots[16];
  CK_ULONG n = 16;
  size_t len = strlen(w->tok.label);
  if (w->fl->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) return -1;
  for (CK_ULONG i = 0; i < n; i++) {
    CK_TOKEN_INFO ti;
    if (w->fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK) continue;
    if (memcmp(ti.label, w->tok.label, len) == 0 && ti.label[len] == ' ') {
      w->slot = slots[i];
      return 0;
    }
  }
  return -1;
}

static int setup(void **state) {
  static world w;
  CK_C_GetFunctionList get = NULL;
  CK_C_INITIALIZE_ARGS args = {0};
  memset(&w, 0, sizeof(w));
  if (fx_token_make(&w.tok, "kyso-prot") != 0 || make_keys(&w) != 0) return -1;
  w.dl = dlopen(KYSO_SOFTHSM_MODULE, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  void *sym = w.dl ? dlsym(w.dl, "C_GetFunctionList") : NULL;
  if (sym == NULL) return -1;
  memcpy(&get, &sym, sizeof(get));
  args.flags = CKF_OS_LOCKING_OK;
  if (get(&w.fl) != CKR_OK || w.fl->C_Initialize(&args) != CKR_OK || find_slot(&w) != 0)
    return -1;
  if (w.fl->C_OpenSession(w.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &w.s) !=
      CKR_OK)
    return -1;
  *state = &w;
  return 0;
}

static int teardown(void **state) {
  world *w = *state;
  if (w == NULL) return 0;
  w->fl->C_CloseAllSessions(w->slot);
  w->fl->C_Finalize(NULL);
  dlclose(w->dl);
  fx_token_free(&w->tok);
  return 0;
}

/* Login state is per token, so switching user means logging out first. */
static void login_as(world *w, CK_USER_TYPE who) {
  const char *pin = who == CKU_SO ? FX_SO_PIN : FX_PIN;
  w->fl->C_Logout(w->s);
  EXPECT_RV(w->fl->C_Login(w->s, who, (CK_UTF8CHAR *)pin, strlen(pin)), CKR_OK, "C_Login");
}

/* Tests may search the token; kyso itself never does per operation. */
static CK_OBJECT_HANDLE find_key(world *w, CK_OBJECT_CLASS cls, const char *label) {
  CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
                      {CKA_LABEL, (void *)label, strlen(label)}};
  CK_OBJECT_HANDLE o[2];
  CK_ULONG n = 0;
  EXPECT_RV(w->fl->C_FindObjectsInit(w->s, t, 2), CKR_OK, "C_FindObjectsInit");
  EXPECT_RV(w->fl->C_FindObjects(w->s, o, 2, &n), CKR_OK, "C_FindObjects");
  w->fl->C_FindObjectsFinal(w->s);
  if (n != 1) fail_msg("want one object of class %lu labelled '%s', found %lu", cls, label, n);
  return o[0];
}

static CK_BBOOL read_bool(world *w, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE a) {
  CK_BBOOL v = 0xff;
  CK_ATTRIBUTE t = {a, &v, sizeof(v)};
  EXPECT_RV(w->fl->C_GetAttributeValue(w->s, o, &t, 1), CKR_OK, "reading a boolean");
  return v;
}

static CK_RV read_secret(world *w, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE a) {
  uint8_t buf[1024];
  CK_ATTRIBUTE t = {a, buf, sizeof(buf)};
  CK_RV rv = w->fl->C_GetAttributeValue(w->s, o, &t, 1);
  OPENSSL_cleanse(buf, sizeof(buf));
  return rv;
}

static CK_RV wrap(world *w, CK_OBJECT_HANDLE kek, CK_OBJECT_HANDLE key, uint8_t *out,
                  CK_ULONG *len) {
  CK_MECHANISM m = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
  return w->fl->C_WrapKey(w->s, &m, kek, key, out, len);
}

static CK_RV wrap_discard(world *w, CK_OBJECT_HANDLE kek, CK_OBJECT_HANDLE key) {
  uint8_t out[4096];
  CK_ULONG len = sizeof(out);
  return wrap(w, kek, key, out, &len);
}

/* An AES-256 wrapping key; `unwrap_tmpl` (2 attributes) may be NULL. */
static CK_RV aes_key(world *w, CK_BBOOL on_token, CK_BBOOL trusted, CK_ATTRIBUTE *unwrap_tmpl,
                     CK_OBJECT_HANDLE *out) {
  CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
  CK_ULONG len = 32;
  CK_ATTRIBUTE t[] = {
      {CKA_TOKEN, &on_token, sizeof(on_token)}, {CKA_PRIVATE, &no, sizeof(no)},
      {CKA_WRAP, &yes, sizeof(yes)},            {CKA_UNWRAP, &yes, sizeof(yes)},
      {CKA_SENSITIVE, &yes, sizeof(yes)},       {CKA_EXTRACTABLE, &no, sizeof(no)},
      {CKA_VALUE_LEN, &len, sizeof(len)},       {CKA_TRUSTED, &trusted, sizeof(trusted)},
      {CKA_UNWRAP_TEMPLATE, unwrap_tmpl, 2 * sizeof(CK_ATTRIBUTE)},
  };
  return w->fl->C_GenerateKey(w->s, &m, t, unwrap_tmpl ? 9 : 8, out);
}

static void test_private_values_unreadable(void **state) {
  world *w = *state;
  login_as(w, CKU_USER);
  CK_OBJECT_HANDLE rsa = find_key(w, CKO_PRIVATE_KEY, RSA_LABEL);
  CK_OBJECT_HANDLE ec = find_key(w, CKO_PRIVATE_KEY, EC_LABEL);
  EXPECT_RV(read_secret(w, rsa, CKA_PRIVATE_EXPONENT), CKR_ATTRIBUTE_SENSITIVE, "RSA d");
  EXPECT_RV(read_secret(w, rsa, CKA_PRIME_1), CKR_ATTRIBUTE_SENSITIVE, "RSA p");
  EXPECT_RV(read_secret(w, rsa, CKA_VALUE), CKR_ATTRIBUTE_TYPE_INVALID, "RSA CKA_VALUE");
  EXPECT_RV(read_secret(w, ec, CKA_VALUE), CKR_ATTRIBUTE_SENSITIVE, "EC private value");
}

static void test_attributes(void **state) {
  world *w = *state;
  static const struct {
    CK_ATTRIBUTE_TYPE a;
    const char *name;
    CK_BBOOL want;
  } cases[] = {
      {CKA_TOKEN, "CKA_TOKEN", CK_TRUE},
      {CKA_PRIVATE, "CKA_PRIVATE", CK_TRUE},
      {CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE},
      {CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", CK_TRUE},
      {CKA_WRAP_WITH_TRUSTED, "CKA_WRAP_WITH_TRUSTED", CK_TRUE},
      {CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_TRUE},
      {CKA_SIGN, "CKA_SIGN", CK_TRUE},
      {CKA_DECRYPT, "CKA_DECRYPT", CK_FALSE},
      {CKA_UNWRAP, "CKA_UNWRAP", CK_FALSE},
  };
  const char *labels[] = {RSA_LABEL, EC_LABEL};
  const uint8_t *ids[] = {w->rsa_id, w->ec_id};
  login_as(w, CKU_USER);
  for (int k = 0; k < 2; k++) {
    CK_OBJECT_HANDLE priv = find_key(w, CKO_PRIVATE_KEY, labels[k]);
    CK_OBJECT_HANDLE pub = find_key(w, CKO_PUBLIC_KEY, labels[k]);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
      CK_BBOOL got = read_bool(w, priv, cases[i].a);
      if (got != cases[i].want)
        fail_msg("%s of '%s': got %d, want %d", cases[i].name, labels[k], got, cases[i].want);
    }
    assert_int_equal(read_bool(w, pub, CKA_VERIFY), CK_TRUE);
    assert_int_equal(read_bool(w, pub, CKA_TOKEN), CK_TRUE);
    /* CKA_ID on both halves is what hsm_generate_key reported. */
    CK_OBJECT_HANDLE both[2] = {priv, pub};
    for (int j = 0; j < 2; j++) {
      uint8_t id[64];
      CK_ATTRIBUTE t = {CKA_ID, id, sizeof(id)};
      EXPECT_RV(w->fl->C_GetAttributeValue(w->s, both[j], &t, 1), CKR_OK, "CKA_ID");
      assert_int_equal(t.ulValueLen, 32);
      assert_memory_equal(id, ids[k], 32);
    }
  }
}

static void test_no_downgrade(void **state) {
  world *w = *state;
  CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE, aes = CK_INVALID_HANDLE;
  login_as(w, CKU_USER);
  CK_OBJECT_HANDLE ec = find_key(w, CKO_PRIVATE_KEY, EC_LABEL);
  CK_ATTRIBUTE sens_off = {CKA_SENSITIVE, &no, sizeof(no)};
  CK_ATTRIBUTE wwt_off = {CKA_WRAP_WITH_TRUSTED, &no, sizeof(no)};
  CK_ATTRIBUTE trusted_on = {CKA_TRUSTED, &yes, sizeof(yes)};
  CK_ATTRIBUTE session_only = {CKA_TOKEN, &no, sizeof(no)};
  EXPECT_RV(w->fl->C_SetAttributeValue(w->s, ec, &sens_off, 1), CKR_ATTRIBUTE_READ_ONLY,
            "CKA_SENSITIVE off");
  EXPECT_RV(w->fl->C_SetAttributeValue(w->s, ec, &wwt_off, 1), CKR_ATTRIBUTE_READ_ONLY,
            "CKA_WRAP_WITH_TRUSTED off");
  EXPECT_RV(w->fl->C_CopyObject(w->s, ec, &sens_off, 1, &copy), CKR_ATTRIBUTE_READ_ONLY,
            "copy with CKA_SENSITIVE off");
  EXPECT_RV(w->fl->C_CopyObject(w->s, ec, &wwt_off, 1, &copy), CKR_ATTRIBUTE_READ_ONLY,
            "copy with CKA_WRAP_WITH_TRUSTED off");
  EXPECT_RV(w->fl->C_CopyObject(w->s, ec, &session_only, 1, &copy), CKR_OK, "plain copy");
  assert_int_equal(read_bool(w, copy, CKA_SENSITIVE), CK_TRUE);
  assert_int_equal(read_bool(w, copy, CKA_WRAP_WITH_TRUSTED), CK_TRUE);
  w->fl->C_DestroyObject(w->s, copy);
  /* Only the security officer makes trusted keys. */
  EXPECT_RV(aes_key(w, CK_FALSE, CK_TRUE, NULL, &aes), CKR_ATTRIBUTE_READ_ONLY,
            "user creates a trusted key");
  EXPECT_RV(aes_key(w, CK_FALSE, CK_FALSE, NULL, &aes), CKR_OK, "user creates a plain key");
  EXPECT_RV(w->fl->C_SetAttributeValue(w->s, aes, &trusted_on, 1), CKR_ATTRIBUTE_READ_ONLY,
            "user sets CKA_TRUSTED");
  w->fl->C_DestroyObject(w->s, aes);
}

static void test_wrap_rules(void **state) {
  world *w = *state;
  CK_OBJECT_HANDLE plain = CK_INVALID_HANDLE;
  login_as(w, CKU_SO);
  EXPECT_RV(aes_key(w, CK_TRUE, CK_TRUE, NULL, &w->kek), CKR_OK, "SO creates a trusted KEK");
  assert_int_equal(read_bool(w, w->kek, CKA_TRUSTED), CK_TRUE);
  login_as(w, CKU_USER);
  CK_OBJECT_HANDLE rsa = find_key(w, CKO_PRIVATE_KEY, RSA_LABEL);
  CK_OBJECT_HANDLE ec = find_key(w, CKO_PRIVATE_KEY, EC_LABEL);
  EXPECT_RV(aes_key(w, CK_FALSE, CK_FALSE, NULL, &plain), CKR_OK, "ordinary AES key");
  EXPECT_RV(wrap_discard(w, plain, rsa), CKR_KEY_NOT_WRAPPABLE, "RSA under an ordinary key");
  EXPECT_RV(wrap_discard(w, plain, ec), CKR_KEY_NOT_WRAPPABLE, "EC under an ordinary key");
  EXPECT_RV(wrap_discard(w, w->kek, rsa), CKR_OK, "RSA under the trusted KEK");
  EXPECT_RV(wrap_discard(w, w->kek, ec), CKR_OK, "EC under the trusted KEK");
  /* The one-way switch the cluster flips after its single wrap. */
  CK_ATTRIBUTE off = {CKA_EXTRACTABLE, &no, sizeof(no)};
  CK_ATTRIBUTE on = {CKA_EXTRACTABLE, &yes, sizeof(yes)};
  EXPECT_RV(w->fl->C_SetAttributeValue(w->s, rsa, &off, 1), CKR_OK, "CKA_EXTRACTABLE off");
  EXPECT_RV(w->fl->C_SetAttributeValue(w->s, rsa, &on, 1), CKR_ATTRIBUTE_READ_ONLY,
            "CKA_EXTRACTABLE back on");
  EXPECT_RV(wrap_discard(w, w->kek, rsa), CKR_KEY_UNEXTRACTABLE, "unextractable, trusted KEK");
  EXPECT_RV(wrap_discard(w, plain, rsa), CKR_KEY_UNEXTRACTABLE, "unextractable, ordinary key");
  w->fl->C_DestroyObject(w->s, plain);
}

/* Why the KEK needs CKA_UNWRAP_TEMPLATE: see the header comment. */
static void test_kek_needs_unwrap_template(void **state) {
  world *w = *state;
  CK_OBJECT_HANDLE guarded = CK_INVALID_HANDLE, leaked = CK_INVALID_HANDLE, ok = 0;
  CK_ATTRIBUTE must[] = {{CKA_SENSITIVE, &yes, sizeof(yes)},
                         {CKA_EXTRACTABLE, &no, sizeof(no)}};
  login_as(w, CKU_SO);
  EXPECT_RV(aes_key(w, CK_FALSE, CK_TRUE, must, &guarded), CKR_OK, "SO KEK with a template");
  login_as(w, CKU_USER);
  CK_OBJECT_HANDLE ec = find_key(w, CKO_PRIVATE_KEY, EC_LABEL);
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_KEY_TYPE kt = CKK_EC;
  CK_ATTRIBUTE weak[] = {{CKA_CLASS, &cls, sizeof(cls)},     {CKA_KEY_TYPE, &kt, sizeof(kt)},
                         {CKA_TOKEN, &no, sizeof(no)},       {CKA_SENSITIVE, &no, sizeof(no)},
                         {CKA_EXTRACTABLE, &yes, sizeof(yes)}};
  CK_ATTRIBUTE strong[] = {{CKA_CLASS, &cls, sizeof(cls)},    {CKA_KEY_TYPE, &kt, sizeof(kt)},
                           {CKA_TOKEN, &no, sizeof(no)},      {CKA_SENSITIVE, &yes, sizeof(yes)},
                           {CKA_EXTRACTABLE, &no, sizeof(no)}};
  CK_MECHANISM m = {CKM_AES_KEY_WRAP_PAD, NULL, 0};
  uint8_t blob[4096];
  CK_ULONG len = sizeof(blob);

  /* The hazard, under the template-less trusted KEK. */
  EXPECT_RV(wrap(w, w->kek, ec, blob, &len), CKR_OK, "wrap under the plain KEK");
  EXPECT_RV(w->fl->C_UnwrapKey(w->s, &m, w->kek, blob, len, weak, 5, &leaked), CKR_OK,
            "non-sensitive unwrap under a KEK without CKA_UNWRAP_TEMPLATE");
  EXPECT_RV(read_secret(w, leaked, CKA_VALUE), CKR_OK, "reading the unwrapped copy");
  w->fl->C_DestroyObject(w->s, leaked);

  /* The defence. */
  len = sizeof(blob);
  EXPECT_RV(wrap(w, guarded, ec, blob, &len), CKR_OK, "wrap under the guarded KEK");
  EXPECT_RV(w->fl->C_UnwrapKey(w->s, &m, guarded, blob, len, weak, 5, &leaked),
            CKR_TEMPLATE_INCONSISTENT, "non-sensitive unwrap under the guarded KEK");
  EXPECT_RV(w->fl->C_UnwrapKey(w->s, &m, guarded, blob, len, strong, 3, &leaked),
            CKR_TEMPLATE_INCONSISTENT, "unwrap that leaves CKA_SENSITIVE out");
  EXPECT_RV(w->fl->C_UnwrapKey(w->s, &m, guarded, blob, len, strong, 5, &ok), CKR_OK,
            "sensitive unwrap under the guarded KEK");
  EXPECT_RV(read_secret(w, ok, CKA_VALUE), CKR_ATTRIBUTE_SENSITIVE, "reading the good copy");
  w->fl->C_DestroyObject(w->s, ok);
  w->fl->C_DestroyObject(w->s, guarded);
}

/* kysod's view of the same key: hsm_key_info_get reads the flags afresh, and
 * an hsm opened beside the test's own use of the module shares it (the test
 * initialised it, so hsm_close must not finalise it). */
static void test_hsm_sees_flags(void **state) {
  world *w = *state;
  kyso_err err = {0};
  hsm *h = NULL;
  hsm_key_info info;
  hsm_opts o = {KYSO_SOFTHSM_MODULE, w->tok.label, FX_PIN, 2};
  uint8_t digest[32] = {1, 2, 3}, sig[512];
  size_t sig_len = sizeof(sig);
  login_as(w, CKU_USER);
  assert_int_equal(hsm_open(&o, &h, &err), KYSO_OK);
  assert_int_equal(hsm_key_info_get(h, RSA_LABEL, &info, &err), KYSO_OK);
  assert_int_equal(info.sensitive, 1);
  assert_int_equal(info.wrap_with_trusted, 1);
  assert_int_equal(info.extractable, 0);
  assert_int_equal(hsm_key_info_get(h, EC_LABEL, &info, &err), KYSO_OK);
  assert_int_equal(info.extractable, 1);
  assert_int_equal(hsm_sign_digest(h, RSA_LABEL, HSM_MECH_RSA_PKCS1_SHA256, digest, 32, sig,
                                   &sig_len, &err),
                   KYSO_OK);
  hsm_close(h);
  CK_SESSION_INFO si;
  EXPECT_RV(w->fl->C_GetSessionInfo(w->s, &si), CKR_OK, "the test's session after hsm_close");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_private_values_unreadable),
      cmocka_unit_test(test_attributes),
      cmocka_unit_test(test_no_downgrade),
      cmocka_unit_test(test_wrap_rules),
      cmocka_unit_test(test_kek_needs_unwrap_template),
      cmocka_unit_test(test_hsm_sees_flags),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
