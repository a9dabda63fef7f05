/* kyso tests — replicating keys between nodes' tokens under the cluster KEK:
 * hsm_wrap_key on node A, hsm_unwrap_key on node B, signatures made on B
 * checked with A's public key by OpenSSL alone, and every way it must fail.
 *
 * One process loads SoftHSM once, and SoftHSM serves the tokens of one token
 * directory, so the "nodes" are four tokens in one directory:
 *   A, B  the cluster KEK (kek1), put there by the built kyso-token binary
 *   C     another KEK (kek2) under the same label: a node set up wrongly
 *   D     a trusted KEK without CKA_UNWRAP_TEMPLATE, made by the test as SO
 * The test also opens its own PKCS#11 sessions to look at the objects. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

#include "kyso/hsm.h"
#include "kyso/util.h"
#include "sig_verify.h"
#include "softhsm_fixture.h"

#define KEK "kyso-kek"
#define EC_LABEL "kyso/seal/wrap-ec"
#define RSA_LABEL "kyso/personal/wrap-rsa"
#define BAD_LABEL "kyso/seal/bad"
#define ABSENT_KEK "no-such-kek"
#define PLAIN_KEK "plain-kek" /* a user's AES key: not trusted */
#define BARE_KEK "bare-kek"   /* trusted, but no unwrap template */
#define LOOSE_KEK "loose-kek" /* trusted, guarded, but can decrypt */
/* Bigger than any wrapped key of ours (RSA-2048's is ~1.2 KB). */
#define HSM_TEST_MAX_BLOB 4096

enum { A, B, C, D, NTOK };
static const char *tok_label[NTOK] = {"wrap-a", "wrap-b", "wrap-c", "wrap-d"};

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

typedef struct wkey {
  const char *label;
  hsm_key_type type;
  uint8_t id[32];
  EVP_PKEY *pub; /* A's public key */
  uint8_t *spki;
  size_t spki_len;
  uint8_t *blob; /* from hsm_wrap_key on A */
  size_t blob_len;
} wkey;

typedef struct world {
  char dir[PATH_MAX];
  char user_pin[PATH_MAX + 16], so_pin[PATH_MAX + 16], kek1[PATH_MAX + 16], kek2[PATH_MAX + 16],
      kek_hex[PATH_MAX + 16];
  uint8_t kek1_bytes[32], kek2_bytes[32];
  void *dl;
  CK_FUNCTION_LIST *fl;
  CK_SLOT_ID slot[NTOK];
  CK_SESSION_HANDLE s[NTOK]; /* the test's own sessions */
  hsm *h[NTOK];              /* D stays closed until test_kek_check */
  wkey keys[2];
} world;

#define EXPECT_ST(call, want, err)                                                          \
  do {                                                                                      \
    kyso_status got_ = (call);                                                              \
    if (got_ != (want))                                                                     \
      fail_msg("%s: got %s, want %s (%s)", #call, kyso_strerror(got_), kyso_strerror(want), \
               (err).msg);                                                                  \
  } while (0)

#define EXPECT_MSG(err, needle)                                        \
  do {                                                                 \
    if (strstr((err).msg, (needle)) == NULL)                           \
      fail_msg("message '%s' does not say '%s'", (err).msg, (needle)); \
  } while (0)

/* kyso-token import-kek into token t; the exit status, output in out. */
static int import_kek(world *w, int t, const char *kek_file, char *out, size_t cap) {
  char *argv[] = {
      KYSO_TOKEN_BIN,       "import-kek",     "--module", KYSO_SOFTHSM_MODULE, "--token",
      (char *)tok_label[t], "--so-pin-file",  w->so_pin,  "--user-pin-file",   w->user_pin,
      "--kek-file",         (char *)kek_file, NULL};
  return fx_run(argv, 1, out, cap);
}

static int check_kek(world *w, int t, char *out, size_t cap) {
  char *argv[] = {KYSO_TOKEN_BIN,      "check-kek", "--module",
                  KYSO_SOFTHSM_MODULE, "--token",   (char *)tok_label[t],
                  "--user-pin-file",   w->user_pin, NULL};
  return fx_run(argv, 1, out, cap);
}

static int write_secret(const char *path, const void *p, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return -1;
  int ok = write(fd, p, n) == (ssize_t)n;
  return close(fd) == 0 && ok ? 0 : -1;
}

static int make_tokens(world *w) {
  char conf[PATH_MAX];
  const char *tmp = getenv("TMPDIR");
  snprintf(w->dir, sizeof(w->dir), "%s/kyso-wrap-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(w->dir) == NULL) return -1;
  for (int t = 0; t < NTOK; t++) {
    char *argv[] = {"/bin/bash", KYSO_SOFTHSM_SH, w->dir, (char *)tok_label[t],
                    FX_PIN,      FX_SO_PIN,       NULL};
    if (fx_run(argv, 0, conf, sizeof(conf)) != 0) {
      fprintf(stderr, "softhsm.sh failed for %s: %s\n", tok_label[t], conf);
      return -1;
    }
  }
  conf[strcspn(conf, "\n")] = '\0';
  setenv("SOFTHSM2_CONF", conf, 1);
  return 0;
}

static int make_secrets(world *w) {
  char hex[65];
  snprintf(w->user_pin, sizeof(w->user_pin), "%s/user.pin", w->dir);
  snprintf(w->so_pin, sizeof(w->so_pin), "%s/so.pin", w->dir);
  snprintf(w->kek1, sizeof(w->kek1), "%s/kek1.bin", w->dir);
  snprintf(w->kek2, sizeof(w->kek2), "%s/kek2.bin", w->dir);
  snprintf(w->kek_hex, sizeof(w->kek_hex), "%s/kek1.hex", w->dir);
  if (RAND_bytes(w->kek1_bytes, 32) != 1 || RAND_bytes(w->kek2_bytes, 32) != 1) return -1;
  kyso_hex(w->kek1_bytes, 32, hex);
  return write_secret(w->user_pin, FX_PIN "\n", strlen(FX_PIN) + 1) ||
                 write_secret(w->so_pin, FX_SO_PIN, strlen(FX_SO_PIN)) ||
                 write_secret(w->kek1, w->kek1_bytes, 32) ||
                 write_secret(w->kek2, w->kek2_bytes, 32) || write_secret(w->kek_hex, hex, 64)
             ? -1
             : 0;
}

static int load_module(world *w) {
  CK_C_GetFunctionList get = NULL;
  CK_C_INITIALIZE_ARGS args = {0};
  CK_SLOT_ID slots[16];
  CK_ULONG n = 16;
  w->dl = dlopen(KYSO_SOFTHSM_MODULE, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  void *sym = w->dl ? dlsym(w->dl, "C_GetFunctionList") : NULL;
  if (sym == NULL) return -1;
  memcpy(&get, &sym, sizeof(get));
  args.flags = CKF_OS_LOCKING_OK;
  if (get(&w->fl) != CKR_OK || w->fl->C_Initialize(&args) != CKR_OK) return -1;
  if (w->fl->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) return -1;
  for (int t = 0; t < NTOK; t++) {
    size_t len = strlen(tok_label[t]);
    int found = 0;
    for (CK_ULONG i = 0; i < n && !found; i++) {
      CK_TOKEN_INFO ti;
      if (w->fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK) continue;
      found = memcmp(ti.label, tok_label[t], len) == 0 && ti.label[len] == ' ';
      if (found) w->slot[t] = slots[i];
    }
    if (!found || w->fl->C_OpenSession(w->slot[t], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                                       &w->s[t]) != CKR_OK)
      return -1;
  }
  return 0;
}

/* An AES-256 key made through PKCS#11 directly, in the test's session; with
 * `guard`, carrying the unwrap template kyso-token gives a KEK. */
static CK_RV aes_key(world *w, int t, const char *label, CK_BBOOL trusted, CK_BBOOL decrypt,
                     int guard, CK_OBJECT_HANDLE *out) {
  CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
  CK_ULONG len = 32;
  CK_ATTRIBUTE g[] = {{CKA_PRIVATE, &yes, sizeof(yes)},
                      {CKA_SENSITIVE, &yes, sizeof(yes)},
                      {CKA_EXTRACTABLE, &no, sizeof(no)},
                      {CKA_WRAP_WITH_TRUSTED, &yes, sizeof(yes)}};
  CK_ATTRIBUTE tmpl[] = {
      {CKA_TOKEN, &yes, sizeof(yes)},
      {CKA_PRIVATE, &no, sizeof(no)},
      {CKA_WRAP, &yes, sizeof(yes)},
      {CKA_UNWRAP, &yes, sizeof(yes)},
      {CKA_SENSITIVE, &yes, sizeof(yes)},
      {CKA_EXTRACTABLE, &no, sizeof(no)},
      {CKA_ENCRYPT, &no, sizeof(no)},
      {CKA_DECRYPT, &decrypt, sizeof(decrypt)},
      {CKA_MODIFIABLE, &no, sizeof(no)},
      {CKA_VALUE_LEN, &len, sizeof(len)},
      {CKA_LABEL, (void *)label, strlen(label)},
      {CKA_TRUSTED, &trusted, sizeof(trusted)},
      {CKA_UNWRAP_TEMPLATE, g, sizeof(g)},
  };
  CK_ULONG n = sizeof(tmpl) / sizeof(tmpl[0]) - (guard ? 0 : 1);
  return w->fl->C_GenerateKey(w->s[t], &m, tmpl, n, out);
}

/* D's KEKs are trusted but not safe: one lacks the unwrap template, one can
 * decrypt. Only the SO can make trusted keys, so they are made before anyone
 * logs in to D as the user. */
static int make_bare_kek(world *w) {
  CK_OBJECT_HANDLE o;
  if (w->fl->C_Login(w->s[D], CKU_SO, (CK_UTF8CHAR *)FX_SO_PIN, strlen(FX_SO_PIN)) != CKR_OK)
    return -1;
  CK_RV rv = aes_key(w, D, BARE_KEK, CK_TRUE, CK_FALSE, 0, &o);
  if (rv == CKR_OK) rv = aes_key(w, D, LOOSE_KEK, CK_TRUE, CK_TRUE, 1, &o);
  w->fl->C_Logout(w->s[D]);
  return rv == CKR_OK ? 0 : -1;
}

static int open_hsm(int t, hsm **out) {
  kyso_err err = {0};
  hsm_opts o = {KYSO_SOFTHSM_MODULE, tok_label[t], FX_PIN, 2};
  if (hsm_open(&o, out, &err) == KYSO_OK) return 0;
  fprintf(stderr, "hsm_open %s: %s\n", tok_label[t], err.msg);
  return -1;
}

static int setup(void **state) {
  static world w;
  char out[4096];
  memset(&w, 0, sizeof(w));
  w.keys[0] = (wkey){.label = EC_LABEL, .type = HSM_KEY_EC_P256};
  w.keys[1] = (wkey){.label = RSA_LABEL, .type = HSM_KEY_RSA_2048};
  *state = &w;
  if (make_tokens(&w) != 0 || make_secrets(&w) != 0) return -1;
  const char *kek_of[3] = {w.kek1, w.kek1, w.kek2};
  for (int t = A; t <= C; t++)
    if (import_kek(&w, t, kek_of[t], out, sizeof(out)) != 0) {
      fprintf(stderr, "kyso-token import-kek %s failed: %s\n", tok_label[t], out);
      return -1;
    }
  if (load_module(&w) != 0 || make_bare_kek(&w) != 0) return -1;
  for (int t = A; t <= C; t++)
    if (open_hsm(t, &w.h[t]) != 0) return -1;
  return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int teardown(void **state) {
  world *w = *state;
  for (int i = 0; i < 2; i++) {
    EVP_PKEY_free(w->keys[i].pub);
    free(w->keys[i].spki);
    free(w->keys[i].blob);
  }
  for (int t = 0; t < NTOK; t++) hsm_close(w->h[t]);
  if (w->fl != NULL) {
    for (int t = 0; t < NTOK; t++) w->fl->C_CloseAllSessions(w->slot[t]);
    w->fl->C_Finalize(NULL);
  }
  if (w->dl != NULL) dlclose(w->dl);
  OPENSSL_cleanse(w->kek1_bytes, 32);
  OPENSSL_cleanse(w->kek2_bytes, 32);
  if (w->dir[0] != '\0') nftw(w->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}

/* Objects of class cls labelled `label` in token t, session objects too. */
static CK_ULONG count_objects(world *w, int t, CK_OBJECT_CLASS cls, const char *label,
                              CK_OBJECT_HANDLE *first) {
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)},
                         {CKA_LABEL, (void *)label, label ? strlen(label) : 0}};
  CK_OBJECT_HANDLE o[16];
  CK_ULONG n = 0;
  assert_int_equal(w->fl->C_FindObjectsInit(w->s[t], tmpl, label ? 2 : 1), CKR_OK);
  assert_int_equal(w->fl->C_FindObjects(w->s[t], o, 16, &n), CKR_OK);
  w->fl->C_FindObjectsFinal(w->s[t]);
  if (first != NULL && n > 0) *first = o[0];
  return n;
}

/* Nothing labelled `label` in token t, and the hsm does not know it. */
static void assert_nothing_left(world *w, int t, const char *label) {
  kyso_err err = {0};
  hsm_key_info info;
  CK_ULONG npriv = count_objects(w, t, CKO_PRIVATE_KEY, label, NULL);
  CK_ULONG npub = count_objects(w, t, CKO_PUBLIC_KEY, label, NULL);
  if (npriv != 0 || npub != 0)
    fail_msg("token %s holds %lu private and %lu public objects labelled '%s', want none",
             tok_label[t], npriv, npub, label);
  EXPECT_ST(hsm_key_info_get(w->h[t], label, &info, &err), KYSO_NOT_FOUND, err);
}

static CK_BBOOL read_bool(world *w, int t, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE a) {
  CK_BBOOL v = 0xff;
  CK_ATTRIBUTE attr = {a, &v, sizeof(v)};
  assert_int_equal(w->fl->C_GetAttributeValue(w->s[t], o, &attr, 1), CKR_OK);
  return v;
}

/* ---- the ceremony tool ---- */

/* "check value XXXXXX" from kyso-token's output, into kcv (7 bytes). */
static void kcv_of(const char *out, char kcv[7]) {
  const char *p = strstr(out, "check value ");
  if (p == NULL) fail_msg("no check value in: %s", out);
  snprintf(kcv, 7, "%s", p + strlen("check value "));
}

static void test_kyso_token(void **state) {
  world *w = *state;
  char out[4096], kcv_a[7], kcv_b[7], kcv_c[7], hex1[65], hex2[65];
  kyso_hex(w->kek1_bytes, 32, hex1);
  kyso_hex(w->kek2_bytes, 32, hex2);
  char *help[] = {KYSO_TOKEN_BIN, "--help", NULL};
  assert_int_equal(fx_run(help, 1, out, sizeof(out)), 0);
  assert_non_null(strstr(out, "import-kek"));
  assert_non_null(strstr(out, "check-kek"));
  char *bad[] = {KYSO_TOKEN_BIN, "import-kek", "--module", KYSO_SOFTHSM_MODULE, NULL};
  assert_int_equal(fx_run(bad, 1, out, sizeof(out)), 2);
  /* The same KEK file gives the same check value; another KEK another. */
  assert_int_equal(check_kek(w, A, out, sizeof(out)), 0);
  kcv_of(out, kcv_a);
  assert_int_equal(check_kek(w, B, out, sizeof(out)), 0);
  kcv_of(out, kcv_b);
  assert_int_equal(check_kek(w, C, out, sizeof(out)), 0);
  kcv_of(out, kcv_c);
  assert_string_equal(kcv_a, kcv_b);
  assert_string_not_equal(kcv_a, kcv_c);
  if (strstr(out, hex1) || strstr(out, hex2) || strstr(out, FX_SO_PIN))
    fail_msg("kyso-token printed a secret: %s", out);
  /* Importing twice is refused; a hex KEK file is explained; no secrets shown. */
  assert_int_equal(import_kek(w, A, w->kek1, out, sizeof(out)), 1);
  assert_non_null(strstr(out, "already holds a KEK"));
  assert_int_equal(import_kek(w, D, w->kek_hex, out, sizeof(out)), 1);
  assert_non_null(strstr(out, "looks like hex"));
  if (strstr(out, hex1) || strstr(out, FX_SO_PIN)) fail_msg("kyso-token printed a secret: %s", out);
  assert_int_equal(check_kek(w, D, out, sizeof(out)), 1);
  assert_non_null(strstr(out, "is not there"));
}

/* What import-kek made, as anyone with the user PIN sees it. */
static void test_kek_object(void **state) {
  world *w = *state;
  static const struct {
    CK_ATTRIBUTE_TYPE a;
    const char *name;
    CK_BBOOL want;
  } cases[] = {
      {CKA_TOKEN, "CKA_TOKEN", CK_TRUE},
      {CKA_PRIVATE, "CKA_PRIVATE", CK_FALSE},
      {CKA_TRUSTED, "CKA_TRUSTED", CK_TRUE},
      {CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE},
      {CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_FALSE},
      {CKA_MODIFIABLE, "CKA_MODIFIABLE", CK_FALSE},
      {CKA_COPYABLE, "CKA_COPYABLE", CK_FALSE},
      {CKA_WRAP, "CKA_WRAP", CK_TRUE},
      {CKA_UNWRAP, "CKA_UNWRAP", CK_TRUE},
      {CKA_ENCRYPT, "CKA_ENCRYPT", CK_FALSE},
      {CKA_DECRYPT, "CKA_DECRYPT", CK_FALSE},
      {CKA_SIGN, "CKA_SIGN", CK_FALSE},
  };
  CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE, copy = CK_INVALID_HANDLE;
  assert_int_equal(count_objects(w, B, CKO_SECRET_KEY, KEK, &kek), 1);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    CK_BBOOL got = read_bool(w, B, kek, cases[i].a);
    if (got != cases[i].want)
      fail_msg("%s of the KEK: got %d, want %d", cases[i].name, got, cases[i].want);
  }
  uint8_t v[64];
  CK_ATTRIBUTE value = {CKA_VALUE, v, sizeof(v)};
  assert_int_equal(w->fl->C_GetAttributeValue(w->s[B], kek, &value, 1), CKR_ATTRIBUTE_SENSITIVE);
  /* Nobody with the user PIN can loosen it, or copy it loosened. */
  CK_ATTRIBUTE dec = {CKA_DECRYPT, &yes, sizeof(yes)};
  CK_ATTRIBUTE tmpl = {CKA_UNWRAP_TEMPLATE, NULL, 0};
  assert_int_not_equal(w->fl->C_SetAttributeValue(w->s[B], kek, &dec, 1), CKR_OK);
  assert_int_not_equal(w->fl->C_SetAttributeValue(w->s[B], kek, &tmpl, 1), CKR_OK);
  assert_int_not_equal(w->fl->C_CopyObject(w->s[B], kek, &dec, 1, &copy), CKR_OK);
  assert_int_equal(read_bool(w, B, kek, CKA_DECRYPT), CK_FALSE);
}

static void test_kek_check(void **state) {
  world *w = *state;
  kyso_err err = {0};
  CK_OBJECT_HANDLE plain;
  for (int t = A; t <= C; t++) EXPECT_ST(hsm_kek_check(w->h[t], KEK, &err), KYSO_OK, err);
  EXPECT_ST(hsm_kek_check(w->h[A], ABSENT_KEK, &err), KYSO_FAILED_PRECONDITION, err);
  EXPECT_MSG(err, "kyso-token import-kek");
  EXPECT_MSG(err, ABSENT_KEK);
  /* A user can make an AES key, not a trusted one. */
  assert_int_equal(aes_key(w, A, PLAIN_KEK, CK_FALSE, CK_FALSE, 1, &plain), CKR_OK);
  EXPECT_ST(hsm_kek_check(w->h[A], PLAIN_KEK, &err), KYSO_FAILED_PRECONDITION, err);
  EXPECT_MSG(err, "not CKA_TRUSTED");
  EXPECT_MSG(err, "kyso-token import-kek");
  assert_int_equal(open_hsm(D, &w->h[D]), 0);
  EXPECT_ST(hsm_kek_check(w->h[D], BARE_KEK, &err), KYSO_FAILED_PRECONDITION, err);
  EXPECT_MSG(err, "CKA_UNWRAP_TEMPLATE");
  EXPECT_ST(hsm_kek_check(w->h[D], LOOSE_KEK, &err), KYSO_FAILED_PRECONDITION, err);
  EXPECT_MSG(err, "not locked down");
  EXPECT_ST(hsm_kek_check(w->h[A], "", &err), KYSO_INVALID_ARGUMENT, err);
}

/* ---- the replication path ---- */

static void spki_of(EVP_PKEY *pk, uint8_t **der, size_t *len) {
  unsigned char *p = NULL;
  int n = i2d_PUBKEY(pk, &p);
  assert_true(n > 0);
  *der = malloc((size_t)n);
  assert_non_null(*der);
  memcpy(*der, p, (size_t)n);
  *len = (size_t)n;
  OPENSSL_free(p);
}

/* B's copy signs, and A's public key verifies it: the same key. */
static void assert_b_signs_as_a(world *w, const wkey *k) {
  kyso_err err = {0};
  uint8_t digest[32], sig[512];
  hsm_mech mechs[2] = {HSM_MECH_ECDSA_SHA256, HSM_MECH_ECDSA_SHA256};
  if (k->type != HSM_KEY_EC_P256) {
    mechs[0] = HSM_MECH_RSA_PKCS1_SHA256;
    mechs[1] = HSM_MECH_RSA_PSS_SHA256;
  }
  for (int i = 0; i < 2; i++) {
    size_t sig_len = sizeof(sig);
    assert_int_equal(RAND_bytes(digest, 32), 1);
    EXPECT_ST(hsm_sign_digest(w->h[B], k->label, mechs[i], digest, 32, sig, &sig_len, &err),
              KYSO_OK, err);
    if (!sig_verify(k->pub, mechs[i], digest, sig, sig_len))
      fail_msg("a signature by B's '%s' does not verify under A's public key", k->label);
    digest[0] ^= 1; /* the verifier can say no */
    assert_false(sig_verify(k->pub, mechs[i], digest, sig, sig_len));
  }
}

/* B's private object has the protections of a generated key, except that it
 * can never be wrapped again; both halves carry A's CKA_ID. */
static void assert_b_objects(world *w, const wkey *k) {
  static const struct {
    CK_ATTRIBUTE_TYPE a;
    const char *name;
    CK_BBOOL want;
  } cases[] = {
      {CKA_TOKEN, "CKA_TOKEN", CK_TRUE},
      {CKA_PRIVATE, "CKA_PRIVATE", CK_TRUE},
      {CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE},
      {CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_FALSE},
      {CKA_WRAP_WITH_TRUSTED, "CKA_WRAP_WITH_TRUSTED", CK_TRUE},
      {CKA_SIGN, "CKA_SIGN", CK_TRUE},
      {CKA_DECRYPT, "CKA_DECRYPT", CK_FALSE},
      {CKA_UNWRAP, "CKA_UNWRAP", CK_FALSE},
      {CKA_DERIVE, "CKA_DERIVE", CK_FALSE},
  };
  CK_OBJECT_HANDLE priv = CK_INVALID_HANDLE, pub = CK_INVALID_HANDLE;
  CK_ULONG npriv = count_objects(w, B, CKO_PRIVATE_KEY, k->label, &priv);
  CK_ULONG npub = count_objects(w, B, CKO_PUBLIC_KEY, k->label, &pub);
  if (npriv != 1 || npub != 1)
    fail_msg("token B holds %lu private and %lu public objects labelled '%s', want 1 and 1", npriv,
             npub, k->label);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    CK_BBOOL got = read_bool(w, B, priv, cases[i].a);
    if (got != cases[i].want)
      fail_msg("%s of B's '%s': got %d, want %d", cases[i].name, k->label, got, cases[i].want);
  }
  assert_int_equal(read_bool(w, B, pub, CKA_TOKEN), CK_TRUE);
  assert_int_equal(read_bool(w, B, pub, CKA_VERIFY), CK_TRUE);
  CK_OBJECT_HANDLE both[2] = {priv, pub};
  for (int j = 0; j < 2; j++) {
    uint8_t id[64];
    CK_ATTRIBUTE t = {CKA_ID, id, sizeof(id)};
    assert_int_equal(w->fl->C_GetAttributeValue(w->s[B], both[j], &t, 1), CKR_OK);
    assert_int_equal(t.ulValueLen, 32);
    assert_memory_equal(id, k->id, 32);
  }
  uint8_t secret[1024];
  CK_ATTRIBUTE sv = {k->type == HSM_KEY_EC_P256 ? CKA_VALUE : CKA_PRIVATE_EXPONENT, secret,
                     sizeof(secret)};
  assert_int_equal(w->fl->C_GetAttributeValue(w->s[B], priv, &sv, 1), CKR_ATTRIBUTE_SENSITIVE);
}

static void assert_listed_unextractable(hsm *h, const char *label) {
  kyso_err err = {0};
  hsm_key_info *v = NULL;
  size_t n = 0, i = 0;
  EXPECT_ST(hsm_list_keys(h, &v, &n, &err), KYSO_OK, err);
  while (i < n && strcmp(v[i].label, label) != 0) i++;
  if (i == n) fail_msg("'%s' is not listed", label);
  int extractable = v[i].extractable;
  free(v);
  assert_int_equal(extractable, 0);
}

static void test_wrap_and_unwrap(void **state) {
  world *w = *state;
  kyso_err err = {0};
  hsm_key_info info, binfo;
  for (int i = 0; i < 2; i++) {
    wkey *k = &w->keys[i];
    uint8_t *again = NULL;
    size_t again_len = 0;
    EXPECT_ST(hsm_generate_key(w->h[A], k->label, k->type, &info, &err), KYSO_OK, err);
    assert_int_equal(info.extractable, 1);
    memcpy(k->id, info.id, 32);
    EXPECT_ST(hsm_public_key(w->h[A], k->label, &k->pub, &err), KYSO_OK, err);
    spki_of(k->pub, &k->spki, &k->spki_len);

    EXPECT_ST(hsm_wrap_key(w->h[A], k->label, KEK, &k->blob, &k->blob_len, &err), KYSO_OK, err);
    assert_non_null(k->blob);
    assert_int_equal(k->blob_len % 8, 0);
    /* Once only: A's key is no longer extractable, in the map (listing reads
     * no token, so it comes first) and in the token. */
    assert_listed_unextractable(w->h[A], k->label);
    EXPECT_ST(hsm_key_info_get(w->h[A], k->label, &info, &err), KYSO_OK, err);
    assert_int_equal(info.extractable, 0);
    assert_int_equal(info.sensitive, 1);
    EXPECT_ST(hsm_wrap_key(w->h[A], k->label, KEK, &again, &again_len, &err),
              KYSO_FAILED_PRECONDITION, err);
    EXPECT_MSG(err, "already wrapped once");
    assert_null(again);
    assert_int_equal(again_len, 0);

    EXPECT_ST(hsm_unwrap_key(w->h[B], k->label, k->type, k->spki, k->spki_len, k->blob, k->blob_len,
                             KEK, &binfo, &err),
              KYSO_OK, err);
    assert_string_equal(binfo.label, k->label);
    assert_int_equal(binfo.type, k->type);
    assert_int_equal(binfo.id_len, 32);
    assert_memory_equal(binfo.id, k->id, 32);
    assert_int_equal(binfo.extractable, 0);
    assert_int_equal(binfo.sensitive, 1);
    assert_int_equal(binfo.wrap_with_trusted, 1);
    assert_b_objects(w, k);
    assert_b_signs_as_a(w, k);
    EVP_PKEY *bpub = NULL;
    EXPECT_ST(hsm_public_key(w->h[B], k->label, &bpub, &err), KYSO_OK, err);
    assert_int_equal(EVP_PKEY_eq(bpub, k->pub), 1);
    EVP_PKEY_free(bpub);
    /* B's copy can never travel on. */
    EXPECT_ST(hsm_wrap_key(w->h[B], k->label, KEK, &again, &again_len, &err),
              KYSO_FAILED_PRECONDITION, err);

    /* Idempotent: a replayed unwrap changes nothing. */
    memset(&binfo, 0, sizeof(binfo));
    EXPECT_ST(hsm_unwrap_key(w->h[B], k->label, k->type, k->spki, k->spki_len, k->blob, k->blob_len,
                             KEK, &binfo, &err),
              KYSO_OK, err);
    assert_memory_equal(binfo.id, k->id, 32);
    assert_b_objects(w, k);
  }
  /* The same label with another key is refused, and nothing is added. */
  wkey *ec = &w->keys[0], *rsa = &w->keys[1];
  EXPECT_ST(hsm_unwrap_key(w->h[B], ec->label, rsa->type, rsa->spki, rsa->spki_len, rsa->blob,
                           rsa->blob_len, KEK, &binfo, &err),
            KYSO_ALREADY_EXISTS, err);
  assert_b_objects(w, ec);
}

/* The blob is RFC 5649 AES key wrap of the PKCS#8 under the KEK: decrypting
 * it needs the KEK (a different key fails), and the plaintext is nowhere in
 * it. The test knows the KEK only because it made the file. */
static void test_blob_is_ciphertext(void **state) {
  world *w = *state;
  for (int i = 0; i < 2; i++) {
    wkey *k = &w->keys[i];
    if (k->blob == NULL) fail_msg("no blob for '%s' (test_wrap_and_unwrap failed)", k->label);
    const uint8_t *keys[2] = {w->kek2_bytes, w->kek1_bytes};
    uint8_t plain[HSM_TEST_MAX_BLOB];
    int plain_len = 0;
    for (int j = 0; j < 2; j++) {
      EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
      int n = 0, fin = 0;
      assert_non_null(c);
      int ok = EVP_DecryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, keys[j], NULL) == 1 &&
               EVP_DecryptUpdate(c, plain, &n, k->blob, (int)k->blob_len) == 1 &&
               EVP_DecryptFinal_ex(c, plain + n, &fin) == 1;
      EVP_CIPHER_CTX_free(c);
      if (j == 0 && ok) fail_msg("the blob of '%s' decrypts under another key", k->label);
      if (j == 1 && !ok) fail_msg("the blob of '%s' is not RFC 5649 under the KEK", k->label);
      plain_len = n + fin;
    }
    const unsigned char *p = plain;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, plain_len);
    EVP_PKEY *priv = p8 ? EVP_PKCS82PKEY(p8) : NULL;
    assert_non_null(priv);
    assert_int_equal(EVP_PKEY_eq(priv, k->pub), 1);
    EVP_PKEY_free(priv);
    PKCS8_PRIV_KEY_INFO_free(p8);
    assert_null(memmem(k->blob, k->blob_len, plain, (size_t)plain_len));
    /* Not even the public parts of the PKCS#8 show through. */
    if (k->type == HSM_KEY_RSA_2048) {
      BIGNUM *n = NULL;
      uint8_t mod[256];
      assert_int_equal(EVP_PKEY_get_bn_param(k->pub, OSSL_PKEY_PARAM_RSA_N, &n), 1);
      assert_int_equal(BN_bn2binpad(n, mod, sizeof(mod)), 256);
      BN_free(n);
      assert_non_null(memmem(plain, (size_t)plain_len, mod, 64)); /* the probe works */
      assert_null(memmem(k->blob, k->blob_len, mod, 64));
    }
    OPENSSL_cleanse(plain, sizeof(plain));
  }
}

static void test_wrong_kek(void **state) {
  world *w = *state;
  kyso_err err = {0};
  hsm_key_info *v = NULL;
  size_t n = 1;
  for (int i = 0; i < 2; i++) {
    wkey *k = &w->keys[i];
    if (k->blob == NULL) fail_msg("no blob for '%s' (test_wrap_and_unwrap failed)", k->label);
    EXPECT_ST(hsm_unwrap_key(w->h[C], k->label, k->type, k->spki, k->spki_len, k->blob, k->blob_len,
                             KEK, NULL, &err),
              KYSO_DATA_LOSS, err);
    EXPECT_MSG(err, "KEK");
    EXPECT_MSG(err, "nothing was stored");
    assert_nothing_left(w, C, k->label);
  }
  assert_int_equal(count_objects(w, C, CKO_PRIVATE_KEY, NULL, NULL), 0);
  assert_int_equal(count_objects(w, C, CKO_PUBLIC_KEY, NULL, NULL), 0);
  EXPECT_ST(hsm_list_keys(w->h[C], &v, &n, &err), KYSO_OK, err);
  assert_int_equal(n, 0);
  free(v);
}

/* A fresh P-256 public key made by OpenSSL: not the blob's. */
static void other_ec_spki(uint8_t **der, size_t *len) {
  EVP_PKEY *pk = EVP_EC_gen("P-256");
  assert_non_null(pk);
  spki_of(pk, der, len);
  EVP_PKEY_free(pk);
}

static void test_bad_input(void **state) {
  world *w = *state;
  kyso_err err = {0};
  hsm_key_info info;
  wkey *ec = &w->keys[0], *rsa = &w->keys[1];
  if (ec->blob == NULL || rsa->blob == NULL) fail_msg("no blobs (test_wrap_and_unwrap failed)");
  uint8_t garbage[HSM_TEST_MAX_BLOB], flipped[HSM_TEST_MAX_BLOB], junk_spki[91];
  uint8_t *other = NULL;
  size_t other_len = 0;
  assert_true(ec->blob_len <= sizeof(garbage));
  assert_int_equal(RAND_bytes(garbage, (int)ec->blob_len), 1);
  memcpy(flipped, ec->blob, ec->blob_len);
  flipped[ec->blob_len / 2] ^= 0x01;
  assert_int_equal(RAND_bytes(junk_spki, sizeof(junk_spki)), 1);
  other_ec_spki(&other, &other_len);
  const struct {
    const char *what;
    hsm_key_type type;
    const uint8_t *spki;
    size_t spki_len;
    const uint8_t *blob;
    size_t blob_len;
    kyso_status want;
    const char *says;
  } cases[] = {
      {"truncated by 8", ec->type, ec->spki, ec->spki_len, ec->blob, ec->blob_len - 8,
       KYSO_DATA_LOSS, "corrupted"},
      {"truncated by 3", ec->type, ec->spki, ec->spki_len, ec->blob, ec->blob_len - 3,
       KYSO_INVALID_ARGUMENT, "truncated"},
      {"8 bytes", ec->type, ec->spki, ec->spki_len, ec->blob, 8, KYSO_INVALID_ARGUMENT,
       "truncated"},
      {"empty", ec->type, ec->spki, ec->spki_len, ec->blob, 0, KYSO_INVALID_ARGUMENT, "truncated"},
      {"random bytes", ec->type, ec->spki, ec->spki_len, garbage, ec->blob_len, KYSO_DATA_LOSS,
       "corrupted"},
      {"one bit flipped", ec->type, ec->spki, ec->spki_len, flipped, ec->blob_len, KYSO_DATA_LOSS,
       "corrupted"},
      {"another key's SPKI", ec->type, other, other_len, ec->blob, ec->blob_len, KYSO_DATA_LOSS,
       "does not match the public key"},
      {"an RSA blob sent as EC", ec->type, ec->spki, ec->spki_len, rsa->blob, rsa->blob_len,
       KYSO_DATA_LOSS, "not an EC-P256 key"},
      {"an EC SPKI declared RSA", HSM_KEY_RSA_2048, ec->spki, ec->spki_len, ec->blob, ec->blob_len,
       KYSO_INVALID_ARGUMENT, "declared RSA-2048"},
      {"an RSA SPKI declared RSA-3072", HSM_KEY_RSA_3072, rsa->spki, rsa->spki_len, rsa->blob,
       rsa->blob_len, KYSO_INVALID_ARGUMENT, "declared RSA-3072"},
      {"junk SPKI", ec->type, junk_spki, sizeof(junk_spki), ec->blob, ec->blob_len,
       KYSO_INVALID_ARGUMENT, "SubjectPublicKeyInfo"},
      {"no SPKI", ec->type, NULL, 0, ec->blob, ec->blob_len, KYSO_INVALID_ARGUMENT,
       "SubjectPublicKeyInfo"},
      {"no KEK", ec->type, ec->spki, ec->spki_len, ec->blob, ec->blob_len, KYSO_FAILED_PRECONDITION,
       "kyso-token import-kek"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *kek = strcmp(cases[i].what, "no KEK") == 0 ? ABSENT_KEK : KEK;
    kyso_status got =
        hsm_unwrap_key(w->h[B], BAD_LABEL, cases[i].type, cases[i].spki, cases[i].spki_len,
                       cases[i].blob, cases[i].blob_len, kek, &info, &err);
    if (got != cases[i].want || strstr(err.msg, cases[i].says) == NULL)
      fail_msg("%s: got %s (%s), want %s saying '%s'", cases[i].what, kyso_strerror(got), err.msg,
               kyso_strerror(cases[i].want), cases[i].says);
    assert_nothing_left(w, B, BAD_LABEL);
  }
  /* The label is still free: the right input takes it. */
  EXPECT_ST(hsm_unwrap_key(w->h[B], BAD_LABEL, ec->type, ec->spki, ec->spki_len, ec->blob,
                           ec->blob_len, KEK, &info, &err),
            KYSO_OK, err);
  assert_memory_equal(info.id, ec->id, 32);
  free(other);
}

static void test_wrap_refusals(void **state) {
  world *w = *state;
  kyso_err err = {0};
  hsm_key_info info;
  uint8_t *blob = NULL;
  size_t len = 0;
  const char *fresh = "kyso/seal/not-yet-wrapped";
  EXPECT_ST(hsm_wrap_key(w->h[A], "kyso/none", KEK, &blob, &len, &err), KYSO_NOT_FOUND, err);
  EXPECT_MSG(err, "kyso/none");
  EXPECT_ST(hsm_generate_key(w->h[A], fresh, HSM_KEY_EC_P256, &info, &err), KYSO_OK, err);
  EXPECT_ST(hsm_wrap_key(w->h[A], fresh, ABSENT_KEK, &blob, &len, &err), KYSO_FAILED_PRECONDITION,
            err);
  EXPECT_MSG(err, "kyso-token import-kek");
  EXPECT_ST(hsm_wrap_key(w->h[A], fresh, PLAIN_KEK, &blob, &len, &err), KYSO_FAILED_PRECONDITION,
            err);
  EXPECT_MSG(err, "not CKA_TRUSTED");
  assert_null(blob);
  /* Refusals leave the key as it was: still extractable, still wrappable. */
  EXPECT_ST(hsm_key_info_get(w->h[A], fresh, &info, &err), KYSO_OK, err);
  assert_int_equal(info.extractable, 1);
  EXPECT_ST(hsm_wrap_key(w->h[A], fresh, KEK, &blob, &len, &err), KYSO_OK, err);
  free(blob);
  EXPECT_ST(hsm_wrap_key(w->h[A], NULL, KEK, &blob, &len, &err), KYSO_INVALID_ARGUMENT, err);
  EXPECT_ST(hsm_wrap_key(w->h[A], fresh, KEK, NULL, &len, &err), KYSO_INVALID_ARGUMENT, err);
}

/* What B holds survives a restart: enumeration finds both halves again. */
static void test_b_after_reopen(void **state) {
  world *w = *state;
  kyso_err err = {0};
  hsm_key_info info;
  hsm_close(w->h[B]);
  w->h[B] = NULL;
  assert_int_equal(open_hsm(B, &w->h[B]), 0);
  for (int i = 0; i < 2; i++) {
    wkey *k = &w->keys[i];
    EXPECT_ST(hsm_key_info_get(w->h[B], k->label, &info, &err), KYSO_OK, err);
    assert_memory_equal(info.id, k->id, 32);
    assert_int_equal(info.extractable, 0);
    assert_b_signs_as_a(w, k);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kyso_token),         cmocka_unit_test(test_kek_object),
      cmocka_unit_test(test_kek_check),          cmocka_unit_test(test_wrap_and_unwrap),
      cmocka_unit_test(test_blob_is_ciphertext), cmocka_unit_test(test_wrong_kek),
      cmocka_unit_test(test_bad_input),          cmocka_unit_test(test_wrap_refusals),
      cmocka_unit_test(test_b_after_reopen),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
