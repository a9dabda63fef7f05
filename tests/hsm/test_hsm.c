/* kyso tests — hsm/ against a private SoftHSM2 token: lifecycle, keys,
 * signatures checked by OpenSSL alone, reinit. Threads: test_hsm_concurrency. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "kyso/hsm.h"
#include "sig_verify.h"
#include "softhsm_fixture.h"

#define TOKEN "kyso-test"
#define ALICE "kyso/personal/alice"
#define SEAL "kyso/seal/H37.DN.001"

static fx_token tok;

static hsm_opts opts(const char *pin, unsigned sessions) {
  hsm_opts o = {KYSO_SOFTHSM_MODULE, TOKEN, pin, sessions};
  return o;
}

/* Fails with got/want and the message when a call's status is not `want`. */
#define EXPECT_ST(call, want, err)                                                       \
  do {                                                                                   \
    kyso_status got_ = (call);                                                           \
    if (got_ != (want))                                                                  \
      fail_msg("%s: got %s, want %s (%s)", #call, kyso_strerror(got_),                   \
               kyso_strerror(want), (err).msg);                                          \
  } while (0)

static int group_token(void **state) {
  (void)state;
  return fx_token_make(&tok, TOKEN);
}

static int group_token_free(void **state) {
  (void)state;
  fx_token_free(&tok);
  return 0;
}

/* ---- lifecycle: no other hsm is open (login state is per process) ---- */

static void test_open_close(void **state) {
  kyso_err err = {0};
  hsm *h = NULL;
  hsm_opts o = opts(FX_PIN, 2);
  EXPECT_ST(hsm_open(&o, &h, &err), KYSO_OK, err);
  assert_non_null(h);
  hsm_close(h);
  hsm_close(NULL);
}

static void test_bad_options(void **state) {
  static const struct {
    const char *name, *module, *token, *pin;
    unsigned sessions;
    kyso_status want;
    const char *msg_has;
  } cases[] = {
      {"no module", NULL, TOKEN, FX_PIN, 2, KYSO_INVALID_ARGUMENT, "module"},
      {"no token", KYSO_SOFTHSM_MODULE, NULL, FX_PIN, 2, KYSO_INVALID_ARGUMENT, "token"},
      {"no pin", KYSO_SOFTHSM_MODULE, TOKEN, NULL, 2, KYSO_INVALID_ARGUMENT, "PIN"},
      {"empty pin", KYSO_SOFTHSM_MODULE, TOKEN, "", 2, KYSO_INVALID_ARGUMENT, "PIN"},
      {"0 sessions", KYSO_SOFTHSM_MODULE, TOKEN, FX_PIN, 0, KYSO_INVALID_ARGUMENT, "1..64"},
      {"65 sessions", KYSO_SOFTHSM_MODULE, TOKEN, FX_PIN, 65, KYSO_INVALID_ARGUMENT, "1..64"},
      {"long token", KYSO_SOFTHSM_MODULE, "a-token-label-longer-than-32-bytes", FX_PIN, 2,
       KYSO_INVALID_ARGUMENT, "32 bytes"},
      {"missing module", "/nonexistent/libp11.so", TOKEN, FX_PIN, 2, KYSO_NOT_FOUND,
       "/nonexistent/libp11.so"},
      {"not a library", KYSO_SOFTHSM_SH, TOKEN, FX_PIN, 2, KYSO_FAILED_PRECONDITION,
       KYSO_SOFTHSM_SH},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kyso_err err = {0};
    hsm *h = (hsm *)&err; /* must be reset to NULL */
    hsm_opts o = {cases[i].module, cases[i].token, cases[i].pin, cases[i].sessions};
    kyso_status got = hsm_open(&o, &h, &err);
    if (got != cases[i].want || strstr(err.msg, cases[i].msg_has) == NULL || h != NULL)
      fail_msg("%s: got %s \"%s\", want %s mentioning \"%s\"", cases[i].name,
               kyso_strerror(got), err.msg, kyso_strerror(cases[i].want), cases[i].msg_has);
  }
  kyso_err err = {0};
  hsm *h = NULL;
  EXPECT_ST(hsm_open(NULL, &h, &err), KYSO_INVALID_ARGUMENT, err);
}

/* One wrong attempt, never retried: the right PIN still works afterwards. */
static void test_wrong_pin(void **state) {
  kyso_err err = {0};
  hsm *h = NULL;
  hsm_opts bad = opts("99999999", 2), good = opts(FX_PIN, 2);
  EXPECT_ST(hsm_open(&bad, &h, &err), KYSO_UNAUTHENTICATED, err);
  assert_null(h);
  assert_non_null(strstr(err.msg, "'" TOKEN "'"));
  assert_null(strstr(err.msg, "99999999")); /* PINs never appear in messages */
  EXPECT_ST(hsm_open(&good, &h, &err), KYSO_OK, err);
  hsm_close(h);
}

static void test_unknown_token(void **state) {
  kyso_err err = {0};
  hsm *h = NULL;
  hsm_opts o = {KYSO_SOFTHSM_MODULE, "no-such-token", FX_PIN, 2};
  EXPECT_ST(hsm_open(&o, &h, &err), KYSO_NOT_FOUND, err);
  /* Names what was asked for, where, and what exists. */
  assert_non_null(strstr(err.msg, "'no-such-token'"));
  assert_non_null(strstr(err.msg, KYSO_SOFTHSM_MODULE));
  assert_non_null(strstr(err.msg, "tokens seen: '" TOKEN "'"));
}

/* Two handles share the loaded module; closing one leaves the other working. */
static void test_two_handles(void **state) {
  kyso_err err = {0};
  hsm *a = NULL, *b = NULL;
  hsm_key_info *keys = NULL;
  size_t n = 0;
  hsm_opts o = opts(FX_PIN, 1);
  EXPECT_ST(hsm_open(&o, &a, &err), KYSO_OK, err);
  EXPECT_ST(hsm_open(&o, &b, &err), KYSO_OK, err);
  hsm_close(a);
  EXPECT_ST(hsm_list_keys(b, &keys, &n, &err), KYSO_OK, err);
  free(keys);
  hsm_close(b);
}

/* ---- keys and signatures: one hsm shared by the group ---- */

typedef struct keys_world {
  hsm *h;
  hsm_key_info alice, seal;
} keys_world;

static int group_keys(void **state) {
  static keys_world w;
  kyso_err err = {0};
  hsm_opts o = opts(FX_PIN, 4);
  if (fx_token_make(&tok, TOKEN) != 0) return -1;
  if (hsm_open(&o, &w.h, &err) != KYSO_OK ||
      hsm_generate_key(w.h, ALICE, HSM_KEY_RSA_2048, &w.alice, &err) != KYSO_OK ||
      hsm_generate_key(w.h, SEAL, HSM_KEY_EC_P256, &w.seal, &err) != KYSO_OK) {
    fprintf(stderr, "group setup: %s\n", err.msg);
    return -1;
  }
  *state = &w;
  return 0;
}

static int group_keys_free(void **state) {
  keys_world *w = *state;
  if (w != NULL) hsm_close(w->h);
  fx_token_free(&tok);
  return 0;
}

/* CKA_ID is SHA-256 of the DER SubjectPublicKeyInfo of the public key. */
static void check_id(hsm *h, const hsm_key_info *info) {
  kyso_err err = {0};
  EVP_PKEY *pk = NULL;
  unsigned char *der = NULL, md[32];
  unsigned int md_len = 0;
  EXPECT_ST(hsm_public_key(h, info->label, &pk, &err), KYSO_OK, err);
  int len = i2d_PUBKEY(pk, &der);
  assert_true(len > 0);
  assert_true(EVP_Digest(der, (size_t)len, md, &md_len, EVP_sha256(), NULL));
  assert_int_equal(info->id_len, 32);
  assert_memory_equal(info->id, md, 32);
  OPENSSL_free(der);
  EVP_PKEY_free(pk);
}

static void test_generated_keys(void **state) {
  keys_world *w = *state;
  kyso_err err = {0};
  hsm_key_info got;
  const hsm_key_info *want[] = {&w->alice, &w->seal};
  const hsm_key_type types[] = {HSM_KEY_RSA_2048, HSM_KEY_EC_P256};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(want[i]->type, types[i]);
    assert_int_equal(want[i]->sensitive, 1);
    assert_int_equal(want[i]->extractable, 1);
    assert_int_equal(want[i]->wrap_with_trusted, 1);
    check_id(w->h, want[i]);
    EXPECT_ST(hsm_key_info_get(w->h, want[i]->label, &got, &err), KYSO_OK, err);
    assert_memory_equal(&got, want[i], sizeof(got));
  }
  assert_string_equal(hsm_key_type_name(HSM_KEY_EC_P256), "EC-P256");
}

static void test_generate_errors(void **state) {
  keys_world *w = *state;
  char long_label[KYSO_MAX_LABEL + 2];
  memset(long_label, 'k', sizeof(long_label) - 1);
  long_label[sizeof(long_label) - 1] = '\0';
  static struct {
    const char *name, *label;
    hsm_key_type type;
    kyso_status want;
  } cases[] = {
      {"duplicate", SEAL, HSM_KEY_EC_P256, KYSO_ALREADY_EXISTS},
      {"duplicate, other type", ALICE, HSM_KEY_EC_P256, KYSO_ALREADY_EXISTS},
      {"empty label", "", HSM_KEY_EC_P256, KYSO_INVALID_ARGUMENT},
      {"NULL label", NULL, HSM_KEY_EC_P256, KYSO_INVALID_ARGUMENT},
      {"129-byte label", NULL, HSM_KEY_EC_P256, KYSO_INVALID_ARGUMENT},
      {"newline", "kyso/bad\nlabel", HSM_KEY_EC_P256, KYSO_INVALID_ARGUMENT},
      {"UTF-8", "kyso/personal/nguy\xe1\xbb\x85n", HSM_KEY_EC_P256, KYSO_INVALID_ARGUMENT},
      {"unknown type", "kyso/typeless", (hsm_key_type)99, KYSO_INVALID_ARGUMENT},
  };
  cases[4].label = long_label;
  hsm_key_info *before = NULL, *after = NULL;
  size_t nb = 0, na = 0;
  kyso_err err = {0};
  EXPECT_ST(hsm_list_keys(w->h, &before, &nb, &err), KYSO_OK, err);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kyso_status got = hsm_generate_key(w->h, cases[i].label, cases[i].type, NULL, &err);
    if (got != cases[i].want)
      fail_msg("%s: got %s (%s), want %s", cases[i].name, kyso_strerror(got), err.msg,
               kyso_strerror(cases[i].want));
  }
  EXPECT_ST(hsm_generate_key(w->h, SEAL, HSM_KEY_EC_P256, NULL, &err), KYSO_ALREADY_EXISTS,
            err);
  assert_string_equal(err.msg, "key '" SEAL "' already exists in token '" TOKEN "'");
  EXPECT_ST(hsm_list_keys(w->h, &after, &na, &err), KYSO_OK, err);
  assert_int_equal(na, nb); /* failures leave nothing behind */
  free(before);
  free(after);
}

static void test_rsa3072(void **state) {
  keys_world *w = *state;
  kyso_err err = {0};
  hsm_key_info info;
  EVP_PKEY *pk = NULL;
  uint8_t digest[32] = {0x30, 0x72}, sig[KYSO_MAX_SIGNATURE];
  size_t len = sizeof(sig);
  EXPECT_ST(hsm_generate_key(w->h, "kyso/seal/rsa3072", HSM_KEY_RSA_3072, &info, &err),
            KYSO_OK, err);
  assert_int_equal(info.type, HSM_KEY_RSA_3072);
  EXPECT_ST(hsm_sign_digest(w->h, info.label, HSM_MECH_RSA_PSS_SHA256, digest, 32, sig, &len,
                            &err),
            KYSO_OK, err);
  assert_int_equal(len, 384);
  EXPECT_ST(hsm_public_key(w->h, info.label, &pk, &err), KYSO_OK, err);
  assert_true(sig_verify(pk, HSM_MECH_RSA_PSS_SHA256, digest, sig, len));
  EVP_PKEY_free(pk);
}

static void test_list_sorted(void **state) {
  keys_world *w = *state;
  kyso_err err = {0};
  hsm_key_info *keys = NULL;
  size_t n = 0;
  const char *extra[] = {"kyso/z-last", "kyso/a-first", "kyso/m-middle"};
  for (int i = 0; i < 3; i++)
    EXPECT_ST(hsm_generate_key(w->h, extra[i], HSM_KEY_EC_P256, NULL, &err), KYSO_OK, err);
  EXPECT_ST(hsm_list_keys(w->h, &keys, &n, &err), KYSO_OK, err);
  assert_true(n >= 5);
  int seen = 0;
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && strcmp(keys[i - 1].label, keys[i].label) >= 0)
      fail_msg("not sorted: '%s' before '%s'", keys[i - 1].label, keys[i].label);
    seen += strcmp(keys[i].label, ALICE) == 0 || strcmp(keys[i].label, SEAL) == 0;
  }
  assert_int_equal(seen, 2);
  free(keys);
}

/* Signs digest with label/mech and checks the result with OpenSSL only. */
static void sign_and_verify(hsm *h, const char *label, hsm_mech mech, uint8_t seed) {
  kyso_err err = {0};
  EVP_PKEY *pk = NULL;
  uint8_t digest[32], sig[KYSO_MAX_SIGNATURE];
  size_t len = sizeof(sig);
  unsigned int md_len;
  EVP_Digest(&seed, 1, digest, &md_len, EVP_sha256(), NULL);
  EXPECT_ST(hsm_sign_digest(h, label, mech, digest, 32, sig, &len, &err), KYSO_OK, err);
  EXPECT_ST(hsm_public_key(h, label, &pk, &err), KYSO_OK, err);
  if (!sig_verify(pk, mech, digest, sig, len))
    fail_msg("signature by '%s' (mech %d) does not verify", label, (int)mech);
  digest[0] ^= 1; /* and it is the digest that was signed */
  assert_false(sig_verify(pk, mech, digest, sig, len));
  EVP_PKEY_free(pk);
}

static void test_sign_verify(void **state) {
  keys_world *w = *state;
  static const struct {
    const char *label;
    hsm_mech mech;
    size_t len;
  } cases[] = {
      {ALICE, HSM_MECH_RSA_PKCS1_SHA256, 256},
      {ALICE, HSM_MECH_RSA_PSS_SHA256, 256},
      {SEAL, HSM_MECH_ECDSA_SHA256, 64},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kyso_err err = {0};
    uint8_t digest[32] = {0}, sig[KYSO_MAX_SIGNATURE];
    size_t len = sizeof(sig);
    sign_and_verify(w->h, cases[i].label, cases[i].mech, (uint8_t)i);
    EXPECT_ST(hsm_sign_digest(w->h, cases[i].label, cases[i].mech, digest, 32, sig, &len, &err),
              KYSO_OK, err);
    assert_int_equal(len, cases[i].len);
  }
}

static void test_sign_errors(void **state) {
  keys_world *w = *state;
  static const struct {
    const char *name, *label;
    hsm_mech mech;
    size_t digest_len, buf_len;
    kyso_status want;
    size_t want_len; /* *sig_len afterwards */
  } cases[] = {
      {"ECDSA with RSA key", ALICE, HSM_MECH_ECDSA_SHA256, 32, 512, KYSO_INVALID_ARGUMENT, 512},
      {"PKCS1 with EC key", SEAL, HSM_MECH_RSA_PKCS1_SHA256, 32, 512, KYSO_INVALID_ARGUMENT, 512},
      {"PSS with EC key", SEAL, HSM_MECH_RSA_PSS_SHA256, 32, 512, KYSO_INVALID_ARGUMENT, 512},
      {"unknown mech", SEAL, (hsm_mech)42, 32, 512, KYSO_INVALID_ARGUMENT, 512},
      {"SHA-1 sized digest", SEAL, HSM_MECH_ECDSA_SHA256, 20, 512, KYSO_INVALID_ARGUMENT, 512},
      {"small buffer RSA", ALICE, HSM_MECH_RSA_PSS_SHA256, 32, 255, KYSO_INVALID_ARGUMENT, 256},
      {"small buffer EC", SEAL, HSM_MECH_ECDSA_SHA256, 32, 63, KYSO_INVALID_ARGUMENT, 64},
      {"unknown key", "kyso/personal/nobody", HSM_MECH_ECDSA_SHA256, 32, 512, KYSO_NOT_FOUND,
       512},
      {"bad label", "kyso\x01", HSM_MECH_ECDSA_SHA256, 32, 512, KYSO_INVALID_ARGUMENT, 512},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kyso_err err = {0};
    uint8_t digest[32] = {0}, sig[KYSO_MAX_SIGNATURE];
    size_t len = cases[i].buf_len;
    kyso_status got = hsm_sign_digest(w->h, cases[i].label, cases[i].mech, digest,
                                      cases[i].digest_len, sig, &len, &err);
    if (got != cases[i].want || len != cases[i].want_len)
      fail_msg("%s: got %s, sig_len %zu (%s); want %s, sig_len %zu", cases[i].name,
               kyso_strerror(got), len, err.msg, kyso_strerror(cases[i].want),
               cases[i].want_len);
  }
  kyso_err err = {0};
  hsm_key_info info;
  EVP_PKEY *pk = NULL;
  EXPECT_ST(hsm_key_info_get(w->h, "kyso/personal/nobody", &info, &err), KYSO_NOT_FOUND, err);
  assert_string_equal(err.msg, "key 'kyso/personal/nobody' not found in token '" TOKEN "'");
  EXPECT_ST(hsm_public_key(w->h, "kyso/personal/nobody", &pk, &err), KYSO_NOT_FOUND, err);
  assert_null(pk);
}

/* A second handle builds its map from the token alone (the enumeration
 * path), and finds, signs with and verifies what the first one generated. */
static void test_enumeration(void **state) {
  keys_world *w = *state;
  kyso_err err = {0};
  hsm *h2 = NULL;
  hsm_key_info info;
  hsm_opts o = opts(FX_PIN, 1);
  EXPECT_ST(hsm_open(&o, &h2, &err), KYSO_OK, err);
  EXPECT_ST(hsm_key_info_get(h2, ALICE, &info, &err), KYSO_OK, err);
  assert_memory_equal(&info, &w->alice, sizeof(info));
  EXPECT_ST(hsm_key_info_get(h2, SEAL, &info, &err), KYSO_OK, err);
  assert_memory_equal(&info, &w->seal, sizeof(info));
  sign_and_verify(h2, ALICE, HSM_MECH_RSA_PKCS1_SHA256, 7);
  sign_and_verify(h2, SEAL, HSM_MECH_ECDSA_SHA256, 8);
  EXPECT_ST(hsm_generate_key(h2, SEAL, HSM_KEY_EC_P256, NULL, &err), KYSO_ALREADY_EXISTS, err);
  hsm_close(h2);
}

static void test_public_key_cached(void **state) {
  keys_world *w = *state;
  kyso_err err = {0};
  EVP_PKEY *a = NULL, *b = NULL;
  EXPECT_ST(hsm_public_key(w->h, SEAL, &a, &err), KYSO_OK, err);
  EXPECT_ST(hsm_public_key(w->h, SEAL, &b, &err), KYSO_OK, err);
  assert_ptr_equal(a, b); /* one object, two references */
  EVP_PKEY_free(a);
  EVP_PKEY_free(b);
}

static void test_reinit(void **state) {
  keys_world *w = *state;
  kyso_err err = {0};
  hsm_key_info info;
  sign_and_verify(w->h, SEAL, HSM_MECH_ECDSA_SHA256, 20);
  EXPECT_ST(hsm_reinit(w->h, &err), KYSO_OK, err);
  sign_and_verify(w->h, SEAL, HSM_MECH_ECDSA_SHA256, 21);
  sign_and_verify(w->h, ALICE, HSM_MECH_RSA_PSS_SHA256, 22);
  EXPECT_ST(hsm_key_info_get(w->h, ALICE, &info, &err), KYSO_OK, err);
  assert_memory_equal(&info, &w->alice, sizeof(info));
  EXPECT_ST(hsm_reinit(w->h, &err), KYSO_OK, err);
  EXPECT_ST(hsm_generate_key(w->h, "kyso/after-reinit", HSM_KEY_EC_P256, NULL, &err), KYSO_OK,
            err);
  sign_and_verify(w->h, "kyso/after-reinit", HSM_MECH_ECDSA_SHA256, 23);
  EXPECT_ST(hsm_reinit(NULL, &err), KYSO_INVALID_ARGUMENT, err);
}

/* The token vanishes (here: SoftHSM re-reads a config whose token directory
 * lacks it) and comes back: the failed reinit leaves the hsm answering
 * UNAVAILABLE with the reason, and the next reinit restores it. */
static void test_reinit_token_gone(void **state) {
  keys_world *w = *state;
  kyso_err err = {0};
  fx_token other;
  hsm_key_info *keys = NULL;
  size_t n = 0;
  uint8_t digest[32] = {0}, sig[KYSO_MAX_SIGNATURE];
  size_t len = sizeof(sig);
  assert_int_equal(fx_token_make(&other, "other"), 0); /* sets SOFTHSM2_CONF */
  EXPECT_ST(hsm_reinit(w->h, &err), KYSO_NOT_FOUND, err);
  assert_non_null(strstr(err.msg, "token '" TOKEN "' not found"));
  assert_non_null(strstr(err.msg, "tokens seen: 'other'"));
  EXPECT_ST(hsm_sign_digest(w->h, SEAL, HSM_MECH_ECDSA_SHA256, digest, 32, sig, &len, &err),
            KYSO_UNAVAILABLE, err);
  assert_non_null(strstr(err.msg, "kysod will reinitialise it"));
  EXPECT_ST(hsm_list_keys(w->h, &keys, &n, &err), KYSO_UNAVAILABLE, err);
  setenv("SOFTHSM2_CONF", tok.conf, 1);
  EXPECT_ST(hsm_reinit(w->h, &err), KYSO_OK, err);
  sign_and_verify(w->h, SEAL, HSM_MECH_ECDSA_SHA256, 30);
  fx_token_free(&other);
}

int main(void) {
  const struct CMUnitTest lifecycle[] = {
      cmocka_unit_test(test_open_close),  cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_wrong_pin),   cmocka_unit_test(test_unknown_token),
      cmocka_unit_test(test_two_handles),
  };
  const struct CMUnitTest keys[] = {
      cmocka_unit_test(test_generated_keys), cmocka_unit_test(test_generate_errors),
      cmocka_unit_test(test_rsa3072),        cmocka_unit_test(test_list_sorted),
      cmocka_unit_test(test_sign_verify),    cmocka_unit_test(test_sign_errors),
      cmocka_unit_test(test_enumeration),    cmocka_unit_test(test_public_key_cached),
      cmocka_unit_test(test_reinit),         cmocka_unit_test(test_reinit_token_gone),
  };
  int failed = cmocka_run_group_tests_name("hsm lifecycle", lifecycle, group_token,
                                           group_token_free);
  failed += cmocka_run_group_tests_name("hsm keys", keys, group_keys, group_keys_free);
  return failed;
}
