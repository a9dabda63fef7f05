/* kyso-token — the security officer's tool for the cluster key-encryption
 * key (KEK), under which keys are copied between the nodes' tokens.
 *
 * The ceremony, once per cluster: the security officer (not an operator:
 * they hold the SO PIN, never the keys) makes the KEK on an offline machine
 * with `openssl rand -out kek.bin 32`, carries it on removable media, and at
 * each node's setup runs `kyso-token import-kek`, which prints a check
 * value; every node must print the same one. After the last node (and any
 * spare token kept for adding nodes later) the file is destroyed (shred the
 * media); it is never copied to a node's disk. Each new node's token needs
 * the KEK before it can receive keys, so keep one spare token holding it or
 * repeat the ceremony with a new KEK for the whole cluster.
 *
 * What SoftHSM 2.6 forces: only the SO can set CKA_TRUSTED, and only when
 * the key is created (C_SetAttributeValue of it is CKR_ATTRIBUTE_READ_ONLY,
 * for the SO too); the SO cannot create private objects, so the KEK is a
 * public object (CKA_PRIVATE=false). Its value stays unreadable
 * (CKA_SENSITIVE, not extractable), and CKA_MODIFIABLE=false and
 * CKA_COPYABLE=false stop anyone with the user PIN from loosening it. Its
 * CKA_UNWRAP_TEMPLATE makes every key unwrapped under it private, sensitive
 * and non-extractable. CKA_ID holds the check value: the first three bytes
 * of AES-256(KEK, zero block), which tell KEKs apart without revealing one.
 *
 * Secrets (PINs, the KEK) are never printed and are wiped after use. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hsm_internal.h"
#include "kyso/util.h"

#define DEFAULT_KEK_LABEL "kyso-kek"
#define KCV_LEN 3
#define KCV_HEX 16 /* room for the hex of KCV_LEN bytes, or "unknown" */

static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

typedef struct args {
  const char *cmd, *module, *token, *so_pin_file, *user_pin_file, *kek_file, *label;
} args;

static void usage(FILE *f) {
  fprintf(f,
          "usage:\n"
          "  kyso-token import-kek --module PATH --token LABEL --so-pin-file FILE\n"
          "                        --user-pin-file FILE --kek-file FILE [--label NAME]\n"
          "  kyso-token check-kek  --module PATH --token LABEL --user-pin-file FILE\n"
          "                        [--label NAME]\n"
          "\n"
          "import-kek  puts the cluster's 32-byte key-encryption key (made once with\n"
          "            `openssl rand -out kek.bin 32`) into the token as a trusted,\n"
          "            non-extractable AES-256 key, logged in as the security officer,\n"
          "            then checks as the user that it wraps and unwraps.\n"
          "check-kek   checks the KEK in the token as kysod will use it.\n"
          "Both print the KEK's check value, which must be the same on every node.\n"
          "\n"
          "  --module PATH        PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)\n"
          "  --token LABEL        token label\n"
          "  --so-pin-file FILE   security officer PIN, mode 0600\n"
          "  --user-pin-file FILE user PIN (the one kysod uses), mode 0600\n"
          "  --kek-file FILE      the KEK, 32 raw bytes, mode 0600\n"
          "  --label NAME         the KEK's CKA_LABEL (default " DEFAULT_KEK_LABEL
          ")\n"
          "Secrets are never printed. Exit status: 0 ok, 1 failed, 2 usage.\n");
}

/* Options as --name VALUE or --name=VALUE; 0 on success. */
static int parse(int argc, char **argv, args *a) {
  static const struct {
    const char *name;
    size_t off;
  } opts[] = {
      {"--module", offsetof(args, module)},
      {"--token", offsetof(args, token)},
      {"--so-pin-file", offsetof(args, so_pin_file)},
      {"--user-pin-file", offsetof(args, user_pin_file)},
      {"--kek-file", offsetof(args, kek_file)},
      {"--label", offsetof(args, label)},
  };
  memset(a, 0, sizeof(*a));
  a->label = DEFAULT_KEK_LABEL;
  if (argc < 2) return -1;
  a->cmd = argv[1];
  for (int i = 2; i < argc; i++) {
    size_t j = 0, n = 0;
    for (; j < sizeof(opts) / sizeof(opts[0]); j++) {
      n = strlen(opts[j].name);
      if (strncmp(argv[i], opts[j].name, n) == 0 && (argv[i][n] == '\0' || argv[i][n] == '='))
        break;
    }
    if (j == sizeof(opts) / sizeof(opts[0])) {
      fprintf(stderr, "kyso-token: unknown option '%s'\n", argv[i]);
      return -1;
    }
    const char *v = argv[i][n] == '=' ? argv[i] + n + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (v == NULL || v[0] == '\0') {
      fprintf(stderr, "kyso-token: %s needs a value\n", opts[j].name);
      return -1;
    }
    *(const char **)((char *)a + opts[j].off) = v;
  }
  return 0;
}

/* Reads a secret file of 1..max bytes that only its owner can read. The
 * caller wipes and frees *out (kyso_buf_free(out, 1)). */
static kyso_status read_secret(const char *path, const char *what, size_t max, kyso_buf *out,
                               kyso_err *err) {
  struct stat sb;
  kyso_buf_init(out, max);
  if (stat(path, &sb) == 0 && (sb.st_mode & 077) != 0)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "%s file '%s' is readable by group or others; chmod 600 it", what, path);
  kyso_status st = kyso_read_file(path, max, out, err);
  if (st == KYSO_RESOURCE_EXHAUSTED)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s file '%s' is longer than %zu bytes", what,
                     path, max);
  return st;
}

/* A PIN file's content without its trailing newline, as a string. */
static kyso_status read_pin(const char *path, const char *what, char pin[KYSO_MAX_PIN + 1],
                            kyso_err *err) {
  kyso_buf b;
  kyso_status st = read_secret(path, what, KYSO_MAX_PIN, &b, err);
  if (st != KYSO_OK) goto out;
  size_t n = b.len;
  while (n > 0 && (b.data[n - 1] == '\n' || b.data[n - 1] == '\r')) n--;
  if (n == 0) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s file '%s' is empty", what, path);
    goto out;
  }
  memcpy(pin, b.data, n);
  pin[n] = '\0';
out:
  kyso_buf_free(&b, 1);
  return st;
}

static kyso_status read_kek(const char *path, uint8_t kek[32], kyso_err *err) {
  kyso_buf b;
  kyso_status st = read_secret(path, "KEK", 256, &b, err);
  if (st != KYSO_OK) goto out;
  if (b.len == 32) {
    memcpy(kek, b.data, 32);
  } else if (b.len == 64 || b.len == 65) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "KEK file '%s' looks like hex; the KEK is 32 raw bytes: make it with "
                   "`openssl rand -out kek.bin 32`",
                   path);
  } else {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "KEK file '%s' is %zu bytes; the KEK is 32 raw bytes (`openssl rand -out "
                   "kek.bin 32`)",
                   path, b.len);
  }
out:
  kyso_buf_free(&b, 1);
  return st;
}

/* The check value: first KCV_LEN bytes of AES-256-ECB(kek, 0^128). */
static kyso_status check_value(const uint8_t kek[32], uint8_t kcv[KCV_LEN], kyso_err *err) {
  uint8_t zero[16] = {0}, out[32];
  int n = 0, ok;
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  ok = c != NULL && EVP_EncryptInit_ex(c, EVP_aes_256_ecb(), NULL, kek, NULL) == 1 &&
       EVP_CIPHER_CTX_set_padding(c, 0) == 1 &&
       EVP_EncryptUpdate(c, out, &n, zero, sizeof(zero)) == 1 && n == 16;
  EVP_CIPHER_CTX_free(c);
  if (ok) memcpy(kcv, out, KCV_LEN);
  OPENSSL_cleanse(out, sizeof(out));
  if (!ok) {
    kyso_fail(err, KYSO_INTERNAL, "cannot compute the KEK's check value");
    return kyso_err_add_openssl(err);
  }
  return KYSO_OK;
}

/* The secret key labelled `label`, or CK_INVALID_HANDLE; kcv_hex (KCV_HEX
 * bytes, or NULL) gets the hex of its CKA_ID, the check value. */
static kyso_status find_kek(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                            const char *label, CK_OBJECT_HANDLE *out, char *kcv_hex,
                            kyso_err *err) {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
                      {CKA_LABEL, (void *)label, (CK_ULONG)strlen(label)}};
  CK_ULONG n = 0;
  uint8_t id[KCV_LEN];
  *out = CK_INVALID_HANDLE;
  CK_RV rv = fl->C_FindObjectsInit(s, t, 2);
  if (rv == CKR_OK) {
    rv = fl->C_FindObjects(s, out, 1, &n);
    fl->C_FindObjectsFinal(s);
  }
  if (rv != CKR_OK)
    return hsm__fail_rv(err, rv, token, "looking for KEK '%s' in token '%s'", label, token);
  if (n == 0) *out = CK_INVALID_HANDLE;
  if (n == 0 || kcv_hex == NULL) return KYSO_OK;
  CK_ATTRIBUTE a = {CKA_ID, id, sizeof(id)};
  if (fl->C_GetAttributeValue(s, *out, &a, 1) == CKR_OK && a.ulValueLen == KCV_LEN)
    kyso_hex(id, KCV_LEN, kcv_hex);
  else
    snprintf(kcv_hex, KCV_HEX, "unknown");
  return KYSO_OK;
}

/* One SO login, never retried: tokens lock the SO PIN too. */
static kyso_status so_login(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                            const char *pin, kyso_err *err) {
  CK_RV rv = fl->C_Login(s, CKU_SO, (CK_UTF8CHAR *)pin, (CK_ULONG)strlen(pin));
  if (rv == CKR_OK) return KYSO_OK;
  if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE ||
      rv == CKR_PIN_LOCKED)
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "the security officer PIN of token '%s' was rejected (%s); not "
                     "retried, tokens lock after a few failures",
                     token, hsm__rv_name(rv));
  if (rv == CKR_USER_ANOTHER_ALREADY_LOGGED_IN || rv == CKR_SESSION_READ_WRITE_SO_EXISTS)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "token '%s' is in use (%s); stop kysod on this node first", token,
                     hsm__rv_name(rv));
  return hsm__fail_rv(err, rv, token, "logging in to token '%s' as security officer", token);
}

/* Creates the KEK object in an SO session: see the top of this file. */
static kyso_status create_kek(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const args *a,
                              uint8_t kek[32], const uint8_t kcv[KCV_LEN], kyso_err *err) {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_AES;
  CK_ATTRIBUTE guard[HSM__KEK_GUARD_N];
  CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
  hsm__kek_guard(guard);
  CK_ATTRIBUTE t[] = {
      {CKA_CLASS, &cls, sizeof(cls)},
      {CKA_KEY_TYPE, &kt, sizeof(kt)},
      {CKA_TOKEN, &yes, sizeof(yes)},
      {CKA_PRIVATE, &no, sizeof(no)}, /* the SO cannot create private objects */
      {CKA_SENSITIVE, &yes, sizeof(yes)},
      {CKA_EXTRACTABLE, &no, sizeof(no)},
      {CKA_MODIFIABLE, &no, sizeof(no)},
      {CKA_COPYABLE, &no, sizeof(no)},
      {CKA_TRUSTED, &yes, sizeof(yes)},
      {CKA_WRAP, &yes, sizeof(yes)},
      {CKA_UNWRAP, &yes, sizeof(yes)},
      {CKA_ENCRYPT, &no, sizeof(no)},
      {CKA_DECRYPT, &no, sizeof(no)},
      {CKA_SIGN, &no, sizeof(no)},
      {CKA_VERIFY, &no, sizeof(no)},
      {CKA_DERIVE, &no, sizeof(no)},
      {CKA_LABEL, (void *)a->label, (CK_ULONG)strlen(a->label)},
      {CKA_ID, (void *)kcv, KCV_LEN},
      {CKA_UNWRAP_TEMPLATE, guard, sizeof(guard)},
      {CKA_VALUE, kek, 32},
  };
  CK_RV rv = fl->C_CreateObject(s, t, sizeof(t) / sizeof(t[0]), &o);
  if (rv != CKR_OK)
    return hsm__fail_rv(err, rv, a->token, "creating KEK '%s' in token '%s'", a->label, a->token);
  return KYSO_OK;
}

/* The SO half of import-kek: one session, logged in as SO, on a token found
 * through the module that hsm_open will use afterwards. */
static kyso_status import_as_so(hsm__module *mod, const args *a, const char *so_pin,
                                uint8_t kek[32], const uint8_t kcv[KCV_LEN], kyso_err *err) {
  kyso_status st;
  CK_FUNCTION_LIST *fl = hsm__module_functions(mod);
  hsm__slot slot;
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE old = CK_INVALID_HANDLE;
  char old_kcv[KCV_HEX] = "";
  int logged_in = 0;
  if ((st = hsm__token_find(fl, a->module, a->token, &slot, err)) != KYSO_OK) goto out;
  CK_RV rv = fl->C_OpenSession(slot.id, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
  if (rv != CKR_OK) {
    s = CK_INVALID_HANDLE;
    st = hsm__fail_rv(err, rv, a->token, "opening a session to token '%s'", a->token);
    goto out;
  }
  if ((st = so_login(fl, s, a->token, so_pin, err)) != KYSO_OK) goto out;
  logged_in = 1;
  if ((st = find_kek(fl, s, a->token, a->label, &old, old_kcv, err)) != KYSO_OK) goto out;
  if (old != CK_INVALID_HANDLE) {
    st = kyso_fail(err, KYSO_ALREADY_EXISTS,
                   "token '%s' already holds a KEK labelled '%s' (check value %s); run "
                   "check-kek, or destroy it first to replace it",
                   a->token, a->label, old_kcv);
    goto out;
  }
  st = create_kek(fl, s, a, kek, kcv, err);
out:
  if (logged_in) fl->C_Logout(s);
  if (s != CK_INVALID_HANDLE) fl->C_CloseSession(s);
  return st;
}

/* As kysod will: hsm_open with the user PIN, then hsm_kek_check; prints the
 * check value the token holds. */
static kyso_status check_as_user(hsm__module *mod, const args *a, const char *user_pin,
                                 kyso_err *err) {
  kyso_status st;
  hsm *h = NULL;
  hsm_opts o = {a->module, a->token, user_pin, 1};
  CK_FUNCTION_LIST *fl = hsm__module_functions(mod);
  hsm__slot slot;
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE;
  char kcv[KCV_HEX] = "unknown";
  if ((st = hsm_open(&o, &h, err)) != KYSO_OK) goto out;
  if ((st = hsm_kek_check(h, a->label, err)) != KYSO_OK) goto out;
  /* A second session sees the user login hsm_open made (it is per token). */
  if (hsm__token_find(fl, a->module, a->token, &slot, NULL) == KYSO_OK &&
      fl->C_OpenSession(slot.id, CKF_SERIAL_SESSION, NULL, NULL, &s) == CKR_OK) {
    if (find_kek(fl, s, a->token, a->label, &kek, kcv, NULL) != KYSO_OK)
      snprintf(kcv, sizeof(kcv), "unknown");
    fl->C_CloseSession(s);
  }
  printf("KEK '%s' in token '%s': trusted, locked down, wraps and unwraps; check value %s\n",
         a->label, a->token, kcv);
out:
  hsm_close(h);
  return st;
}

static int need(const args *a, int so) {
  const char *missing = a->module == NULL              ? "--module"
                        : a->token == NULL             ? "--token"
                        : a->user_pin_file == NULL     ? "--user-pin-file"
                        : so && a->so_pin_file == NULL ? "--so-pin-file"
                        : so && a->kek_file == NULL    ? "--kek-file"
                                                       : NULL;
  if (missing != NULL) fprintf(stderr, "kyso-token %s: %s is required\n", a->cmd, missing);
  return missing == NULL;
}

int main(int argc, char **argv) {
  kyso_status st = KYSO_OK;
  kyso_err err = {0};
  args a;
  char so_pin[KYSO_MAX_PIN + 1] = "", user_pin[KYSO_MAX_PIN + 1] = "";
  uint8_t kek[32], kcv[KCV_LEN];
  char kcv_hex[KCV_HEX];
  hsm__module *mod = NULL;
  uint64_t gen = 0;
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage(stdout);
    return 0;
  }
  if (parse(argc, argv, &a) != 0) {
    usage(stderr);
    return 2;
  }
  int import = strcmp(a.cmd, "import-kek") == 0;
  if (!import && strcmp(a.cmd, "check-kek") != 0) {
    fprintf(stderr, "kyso-token: unknown command '%s'\n", a.cmd);
    usage(stderr);
    return 2;
  }
  if (!need(&a, import)) return 2;
  if (hsm__label_check(a.label, &err) != KYSO_OK) {
    fprintf(stderr, "kyso-token: --label: %s\n", err.msg);
    return 2;
  }
  memset(kek, 0, sizeof(kek));
  if ((st = read_pin(a.user_pin_file, "user PIN", user_pin, &err)) != KYSO_OK) goto out;
  if (import) {
    if ((st = read_pin(a.so_pin_file, "SO PIN", so_pin, &err)) != KYSO_OK) goto out;
    if ((st = read_kek(a.kek_file, kek, &err)) != KYSO_OK) goto out;
    if ((st = check_value(kek, kcv, &err)) != KYSO_OK) goto out;
  }
  if ((st = hsm__module_acquire(a.module, &mod, &gen, &err)) != KYSO_OK) goto out;
  if (import) {
    st = import_as_so(mod, &a, so_pin, kek, kcv, &err);
    OPENSSL_cleanse(kek, sizeof(kek)); /* in the token now, or not at all */
    OPENSSL_cleanse(so_pin, sizeof(so_pin));
    if (st != KYSO_OK) goto out;
    kyso_hex(kcv, KCV_LEN, kcv_hex);
    printf("KEK '%s' imported into token '%s' with check value %s\n", a.label, a.token, kcv_hex);
  }
  st = check_as_user(mod, &a, user_pin, &err);
  if (st == KYSO_OK && import)
    printf(
        "Every node must show check value %s. Destroy the KEK file once the last node "
        "has it.\n",
        kcv_hex);
out:
  OPENSSL_cleanse(kek, sizeof(kek));
  OPENSSL_cleanse(so_pin, sizeof(so_pin));
  OPENSSL_cleanse(user_pin, sizeof(user_pin));
  hsm__module_release(mod);
  if (st != KYSO_OK) {
    fprintf(stderr, "kyso-token %s: %s (%s)\n", a.cmd, err.msg, kyso_strerror(st));
    return 1;
  }
  return 0;
}
