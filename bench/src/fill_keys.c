/* kyso-bench-fill keys — many personal keys in kysod's token, each with a
 * certificate in kysod's certificate store, faster than `kyso keygen`:
 *
 *  1. the labels kyso/personal/<prefix><i> are checked free through kyso's
 *     hsm module (kysod's view of the token);
 *  2. the keys are imported with C_CreateObject on PKCS#11 sessions of our
 *     own, from several threads (kyso's hsm module only generates keys:
 *     importing is a benchmark shortcut kept out of it), with the attributes
 *     hsm/keygen.c gives generated keys: private half CKA_SENSITIVE,
 *     CKA_EXTRACTABLE, CKA_WRAP_WITH_TRUSTED, CKA_SIGN, CKA_TOKEN,
 *     CKA_PRIVATE; CKA_ID the SHA-256 of the public key on both halves;
 *  3. the token is opened again through kyso's hsm module, which enumerates
 *     the new keys, and each gets a certificate from the test PKI's sub-CA,
 *     stored with signer_import_certificate (which checks it against the
 *     key in the token) in DATA_DIR/certs.
 *
 * EC P-256 keys are each fresh. RSA-2048 material comes from a pool made
 * once (generating thousands of RSA keys takes minutes) and is reused
 * across labels: kysod finds keys by label only (hsm/keymap.c), CKA_ID is
 * informational, and the certificate store is per label, so nothing in kyso
 * depends on distinct material; keys that share material share CKA_ID. */
#include <cjson/cJSON.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fill.h"
#include "kyso/config.h"
#include "kyso/hsm.h"
#include "kyso/limits.h"
#include "kyso/signer.h"
#include "kysod.h"
#include "tool.h"

#define MAX_KEYS KYSO_HSM_MAX_KEYS
#define MAX_POOL 4096
/* DER of the P-256 OID (1.2.840.10045.3.1.7), as CKA_EC_PARAMS. */
static const uint8_t p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

static const char usage_text[] =
    "Usage: kyso-bench-fill keys --config FILE --pki DIR --keys N --alg rsa-2048|ec-p256\n"
    "                            [--prefix P] [--rsa-pool M] [--days D] [--threads T]\n"
    "                            [--json FILE]\n"
    "\n"
    "Gives kysod N personal keys with certificates, for benchmarks: imports keys\n"
    "labelled kyso/personal/<P><i> (i = 0 .. N-1) into the token of --config's\n"
    "[hsm] section with the attributes kysod's keygen sets, then issues each a\n"
    "certificate (subject /C=VN/O=Kyso Bench/CN=<P><i>, the PKI's 'signer'\n"
    "profile) from DIR/sub.pem and DIR/sub.key and stores it, with the chain\n"
    "DIR/chain.pem, in kysod's certificate store (data_dir/certs).\n"
    "\n"
    "Stop kysod first: it reads the token's keys only when it starts. Labels that\n"
    "already exist are refused before anything is written. EC keys are each\n"
    "fresh; RSA keys reuse the material of a pool of M keys (kysod finds keys by\n"
    "label, so that is enough to measure it; keys sharing material share CKA_ID).\n"
    "\n"
    "  -c, --config FILE     kysod's configuration (its [hsm] section and data_dir)\n"
    "      --pki DIR         the test PKI (tests/fixtures/pki.sh init DIR)\n"
    "  -n, --keys N          how many keys\n"
    "      --alg ALG         rsa-2048 or ec-p256\n"
    "      --prefix P        account prefix (default \"bench.fill.\")\n"
    "      --rsa-pool M      distinct RSA keys to reuse (default 32)\n"
    "      --days D          certificate lifetime in days (default 365)\n"
    "  -t, --threads T       importing threads, a PKCS#11 session each (default 8)\n"
    "      --json FILE       write the result as JSON\n"
    "  -h, --help            this help\n"
    "  SoftHSM finds the token through SOFTHSM2_CONF, as for kysod.\n"
    "\n"
    "Exit status: 0 when all N keys and certificates are in place; 1 on a failure\n"
    "(the keys made before it stay; use another --prefix or a fresh token); 2 on a\n"
    "usage error.\n";

enum { O_PKI = 1, O_ALG, O_PREFIX, O_RSA_POOL, O_DAYS, O_JSON };

static const struct option longopts[] = {
    {"config", required_argument, NULL, 'c'},       {"pki", required_argument, NULL, O_PKI},
    {"keys", required_argument, NULL, 'n'},         {"alg", required_argument, NULL, O_ALG},
    {"prefix", required_argument, NULL, O_PREFIX},  {"rsa-pool", required_argument, NULL, O_RSA_POOL},
    {"days", required_argument, NULL, O_DAYS},      {"json", required_argument, NULL, O_JSON},
    {"threads", required_argument, NULL, 't'},     {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

typedef struct args {
  const char *config, *pki, *prefix, *json;
  int ec; /* --alg ec-p256, else rsa-2048 */
  uint64_t keys, rsa_pool, days, threads;
} args;

/* The issuing sub-CA and the chain stored with each certificate. */
typedef struct pki {
  X509 *ca;
  EVP_PKEY *key;
  STACK_OF(X509) *chain;
} pki;

/* Our own use of the module, for C_CreateObject: the token's slot and the
 * session that logged in (the login holds for every session we open). */
typedef struct p11 {
  void *dl;
  CK_FUNCTION_LIST *fl;
  CK_SLOT_ID slot;
  CK_SESSION_HANDLE s;
  int initialized, logged_in;
} p11;

static int parse_args(int argc, char **argv, args *a) {
  int opt;
  const char *alg = NULL;
  memset(a, 0, sizeof(*a));
  a->prefix = "bench.fill.";
  a->rsa_pool = 32;
  a->days = 365;
  a->threads = 8;
  while ((opt = getopt_long(argc, argv, "c:n:t:h", longopts, NULL)) != -1) {
    int rc = 0;
    switch (opt) {
      case 'c': a->config = optarg; break;
      case O_PKI: a->pki = optarg; break;
      case 'n': rc = tool_parse_count("--keys", optarg, 1, MAX_KEYS, 0, &a->keys); break;
      case O_ALG: alg = optarg; break;
      case O_PREFIX: a->prefix = optarg; break;
      case O_RSA_POOL: rc = tool_parse_count("--rsa-pool", optarg, 1, MAX_POOL, 0, &a->rsa_pool); break;
      case O_DAYS: rc = tool_parse_count("--days", optarg, 1, 36500, 0, &a->days); break;
      case 't': rc = tool_parse_count("--threads", optarg, 1, 64, 0, &a->threads); break;
      case O_JSON: a->json = optarg; break;
      case 'h': fputs(usage_text, stdout); return 0;
      default: fputs(usage_text, stderr); return 2;
    }
    if (rc) return rc;
  }
  if (optind < argc) return tool_usage_error("unexpected argument '%s'", argv[optind]);
  if (a->config == NULL) return tool_usage_error("give --config FILE, kysod's configuration");
  if (a->pki == NULL) return tool_usage_error("give --pki DIR, the test PKI with sub.pem and sub.key");
  if (a->keys == 0) return tool_usage_error("give --keys N, how many keys to make");
  if (alg == NULL || (strcmp(alg, "ec-p256") != 0 && strcmp(alg, "rsa-2048") != 0))
    return tool_usage_error("--alg is rsa-2048 or ec-p256");
  a->ec = strcmp(alg, "ec-p256") == 0;
  return -1;
}

/* kysod's label for account <prefix><i>, checked by kysod's own rule. */
static kyso_status label_of(const args *a, uint64_t i, char *account, size_t account_size,
                            char label[KYSO_MAX_LABEL + 1], kyso_err *err) {
  Kyso__V1__KeyRef ref = KYSO__V1__KEY_REF__INIT;
  if (snprintf(account, account_size, "%s%llu", a->prefix, (unsigned long long)i) >=
      (int)account_size)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "--prefix '%s' is too long", a->prefix);
  ref.role = KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL;
  ref.account = account;
  kyso_status st = kysod__key_label(&ref, label, KYSO_MAX_LABEL + 1, err);
  if (st != KYSO_OK) kyso_err_wrap(err, "--prefix '%s'", a->prefix);
  return st;
}

/* kysod holds a lock on its archive's RocksDB LOCK file while it runs. */
static int kysod_running(const char *data_dir, pid_t *pid) {
  char path[KYSO_PATH_MAX + 32];
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  snprintf(path, sizeof(path), "%s/archive/LOCK", data_dir);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  int held = fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
  *pid = fl.l_pid;
  close(fd);
  return held;
}

static void pki_free(pki *p) {
  X509_free(p->ca);
  EVP_PKEY_free(p->key);
  sk_X509_pop_free(p->chain, X509_free);
  memset(p, 0, sizeof(*p));
}

/* An encrypted sub.key fails to load instead of prompting on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) { return 0; }

static kyso_status pki_load(const char *dir, pki *p, kyso_err *err) {
  kyso_status st = KYSO_OK;
  char path[KYSO_PATH_MAX + 32];
  BIO *b = NULL;
  X509 *x;
  memset(p, 0, sizeof(*p));
  snprintf(path, sizeof(path), "%s/sub.pem", dir);
  if ((b = BIO_new_file(path, "r")) == NULL || (p->ca = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL)
    goto bad;
  BIO_free(b);
  snprintf(path, sizeof(path), "%s/sub.key", dir);
  if ((b = BIO_new_file(path, "r")) == NULL ||
      (p->key = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL)) == NULL)
    goto bad;
  if (X509_check_private_key(p->ca, p->key) != 1) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "'%s/sub.key' is not the key of '%s/sub.pem'", dir,
                   dir);
    goto out;
  }
  BIO_free(b);
  snprintf(path, sizeof(path), "%s/chain.pem", dir);
  if ((b = BIO_new_file(path, "r")) == NULL || (p->chain = sk_X509_new_null()) == NULL) goto bad;
  while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
    if (!sk_X509_push(p->chain, x)) {
      X509_free(x);
      goto bad;
    }
  ERR_clear_error(); /* the end of the file reads as an error */
  if (sk_X509_num(p->chain) == 0 || sk_X509_num(p->chain) > KYSO_MAX_CERT_CHAIN) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "'%s' holds %d certificates; the chain needs 1 to %d",
                   path, sk_X509_num(p->chain), KYSO_MAX_CERT_CHAIN);
    goto out;
  }
  goto out;
bad:
  kyso_fail(err, KYSO_FAILED_PRECONDITION,
            "cannot read '%s'; --pki is a directory made by tests/fixtures/pki.sh init", path);
  st = kyso_err_add_openssl(err);
out:
  BIO_free(b);
  if (st != KYSO_OK) pki_free(p);
  return st;
}

/* kysod's hsm options from cfg, with the PIN (wiped by the caller). */
static kyso_status hsm_from_config(const kyso_config *cfg, const char *pin, hsm **out,
                                   kyso_err *err) {
  hsm_opts ho = {.module_path = cfg->hsm_module,
                 .token_label = cfg->hsm_token,
                 .pin = pin,
                 .max_sessions = 2};
  return hsm_open(&ho, out, err);
}

/* Every label must be free in kysod's view of the token: a second private
 * key under a label makes kysod refuse both. */
static kyso_status check_free(const args *a, const kyso_config *cfg, const char *pin,
                              kyso_err *err) {
  kyso_status st;
  hsm *h = NULL;
  char account[KYSO_MAX_NAME + 1], label[KYSO_MAX_LABEL + 1];
  hsm_key_info info;
  if ((st = hsm_from_config(cfg, pin, &h, err)) != KYSO_OK) goto out;
  for (uint64_t i = 0; i < a->keys; i++) {
    if ((st = label_of(a, i, account, sizeof(account), label, err)) != KYSO_OK) goto out;
    kyso_status got = hsm_key_info_get(h, label, &info, err);
    if (got == KYSO_NOT_FOUND) continue;
    st = got != KYSO_OK && got != KYSO_FAILED_PRECONDITION /* no verdict on the label */
             ? got
             : kyso_fail(err, KYSO_ALREADY_EXISTS,
                         "key '%s' is already in token '%s'; give another --prefix, or fill a "
                         "fresh token", label, cfg->hsm_token);
    goto out;
  }
out:
  hsm_close(h);
  return st;
}

/* The name of a return value a person is likely to meet here, else its
 * number, in buf. */
static const char *rv_text(CK_RV rv, char buf[32]) {
  switch (rv) {
    case CKR_PIN_INCORRECT: return "CKR_PIN_INCORRECT";
    case CKR_PIN_LOCKED: return "CKR_PIN_LOCKED";
    case CKR_DEVICE_MEMORY: return "CKR_DEVICE_MEMORY";
    case CKR_DEVICE_ERROR: return "CKR_DEVICE_ERROR";
    case CKR_TEMPLATE_INCONSISTENT: return "CKR_TEMPLATE_INCONSISTENT";
    case CKR_TEMPLATE_INCOMPLETE: return "CKR_TEMPLATE_INCOMPLETE";
    case CKR_ATTRIBUTE_VALUE_INVALID: return "CKR_ATTRIBUTE_VALUE_INVALID";
    case CKR_ATTRIBUTE_TYPE_INVALID: return "CKR_ATTRIBUTE_TYPE_INVALID";
    case CKR_TOKEN_WRITE_PROTECTED: return "CKR_TOKEN_WRITE_PROTECTED";
    case CKR_USER_NOT_LOGGED_IN: return "CKR_USER_NOT_LOGGED_IN";
  }
  snprintf(buf, 32, "CKR 0x%08lx", (unsigned long)rv);
  return buf;
}

static void p11_close(p11 *p) {
  if (p->logged_in) p->fl->C_Logout(p->s);
  if (p->s != CK_INVALID_HANDLE) p->fl->C_CloseSession(p->s);
  /* Finalised, so that kyso's hsm module initialises it afresh after us
   * and enumerates what we added. */
  if (p->initialized) p->fl->C_Finalize(NULL);
  if (p->dl != NULL) dlclose(p->dl); /* only a reference: RTLD_NODELETE */
  memset(p, 0, sizeof(*p));
  p->s = CK_INVALID_HANDLE;
}

/* Loads the module (RTLD_NODELETE, like hsm/module.c: modules keep process
 * state), finds the token by label, opens a read-write session, logs in. */
static kyso_status p11_open(const kyso_config *cfg, const char *pin, p11 *p, kyso_err *err) {
  kyso_status st = KYSO_OK;
  CK_SLOT_ID *slots = NULL;
  CK_ULONG nslots = 0;
  CK_C_GetFunctionList get = NULL;
  CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK};
  CK_RV rv;
  char rvb[32];
  memset(p, 0, sizeof(*p));
  p->s = CK_INVALID_HANDLE;
  p->dl = dlopen(cfg->hsm_module, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  void *sym = p->dl != NULL ? dlsym(p->dl, "C_GetFunctionList") : NULL;
  if (sym == NULL) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot load PKCS#11 module '%s': %s",
                   cfg->hsm_module, dlerror());
    goto out;
  }
  memcpy(&get, &sym, sizeof(get)); /* object to function pointer, as POSIX allows */
  if ((rv = get(&p->fl)) != CKR_OK || (rv = p->fl->C_Initialize(&init)) != CKR_OK) {
    p->fl = NULL;
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot initialise PKCS#11 module '%s': %s",
                   cfg->hsm_module, rv_text(rv, rvb));
    goto out;
  }
  p->initialized = 1;
  if ((rv = p->fl->C_GetSlotList(CK_TRUE, NULL, &nslots)) != CKR_OK ||
      (slots = calloc(nslots ? nslots : 1, sizeof(*slots))) == NULL ||
      (rv = p->fl->C_GetSlotList(CK_TRUE, slots, &nslots)) != CKR_OK) {
    st = kyso_fail(err, KYSO_UNAVAILABLE, "cannot list the slots of '%s': %s", cfg->hsm_module,
                   rv_text(rv, rvb));
    goto out;
  }
  CK_ULONG i;
  size_t want = strlen(cfg->hsm_token);
  for (i = 0; i < nslots; i++) {
    CK_TOKEN_INFO ti;
    if (p->fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK) continue;
    size_t n = sizeof(ti.label); /* blank-padded, not terminated */
    while (n > 0 && ti.label[n - 1] == ' ') n--;
    if (n == want && memcmp(ti.label, cfg->hsm_token, n) == 0) break;
  }
  if (i == nslots) {
    st = kyso_fail(err, KYSO_NOT_FOUND,
                   "token '%s' not found in '%s'; for SoftHSM, export SOFTHSM2_CONF as for kysod",
                   cfg->hsm_token, cfg->hsm_module);
    goto out;
  }
  p->slot = slots[i];
  rv = p->fl->C_OpenSession(p->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &p->s);
  if (rv != CKR_OK) {
    st = kyso_fail(err, KYSO_UNAVAILABLE, "cannot open a session on token '%s': %s",
                   cfg->hsm_token, rv_text(rv, rvb));
    goto out;
  }
  rv = p->fl->C_Login(p->s, CKU_USER, (CK_UTF8CHAR *)pin, (CK_ULONG)strlen(pin));
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    st = kyso_fail(err, KYSO_UNAUTHENTICATED, "token '%s' refused the PIN: %s", cfg->hsm_token,
                   rv_text(rv, rvb));
    goto out;
  }
  p->logged_in = rv == CKR_OK;
out:
  free(slots);
  if (st != KYSO_OK) p11_close(p);
  return st;
}

/* Big-endian bytes of a key parameter into buf (cap bytes), as an attribute. */
static int bn_attr(const EVP_PKEY *pk, const char *param, size_t pad, CK_ATTRIBUTE_TYPE type,
                   CK_ATTRIBUTE *out, uint8_t *buf, size_t cap) {
  BIGNUM *bn = NULL;
  int n = -1;
  if (EVP_PKEY_get_bn_param(pk, param, &bn) && (size_t)BN_num_bytes(bn) <= cap)
    n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
  BN_clear_free(bn);
  if (n <= 0) return 0;
  *out = (CK_ATTRIBUTE){type, buf, (CK_ULONG)n};
  return 1;
}

/* Imports pk under label: the private object first, so that a crash in
 * between leaves a key kysod lists (and this tool then refuses to reuse),
 * never a stray public key kysod would pair with the next key of that label. */
static kyso_status import_key(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s, const char *token,
                              const char *label, EVP_PKEY *pk, int ec, kyso_err *err) {
  static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  static CK_OBJECT_CLASS priv_class = CKO_PRIVATE_KEY, pub_class = CKO_PUBLIC_KEY;
  kyso_status st = KYSO_OK;
  CK_KEY_TYPE kt = ec ? CKK_EC : CKK_RSA;
  CK_ULONG label_len = (CK_ULONG)strlen(label);
  uint8_t id[32], scratch[8][512], point[2 + 65];
  unsigned char *spki = NULL;
  unsigned int id_len = 0;
  size_t point_len = 0;
  CK_OBJECT_HANDLE priv = CK_INVALID_HANDLE, pub = CK_INVALID_HANDLE;
  CK_RV rv;
  char rvb[32];
  /* CKA_ID as kysod sets it: SHA-256 of the DER SubjectPublicKeyInfo. */
  int spki_len = i2d_PUBKEY(pk, &spki);
  if (spki_len <= 0 || !EVP_Digest(spki, (size_t)spki_len, id, &id_len, EVP_sha256(), NULL))
    goto ossl;
  CK_ATTRIBUTE priv_t[24] = {
      {CKA_CLASS, &priv_class, sizeof(priv_class)},
      {CKA_KEY_TYPE, &kt, sizeof(kt)},
      {CKA_TOKEN, &yes, sizeof(yes)},
      {CKA_PRIVATE, &yes, sizeof(yes)},
      {CKA_SENSITIVE, &yes, sizeof(yes)},
      {CKA_EXTRACTABLE, &yes, sizeof(yes)},
      {CKA_WRAP_WITH_TRUSTED, &yes, sizeof(yes)},
      {CKA_SIGN, &yes, sizeof(yes)},
      {CKA_DECRYPT, &no, sizeof(no)},
      {CKA_UNWRAP, &no, sizeof(no)},
      {CKA_DERIVE, &no, sizeof(no)},
      {CKA_LABEL, (void *)label, label_len},
      {CKA_ID, id, sizeof(id)},
  };
  CK_ULONG npriv = 13;
  CK_ATTRIBUTE pub_t[16] = {
      {CKA_CLASS, &pub_class, sizeof(pub_class)},
      {CKA_KEY_TYPE, &kt, sizeof(kt)},
      {CKA_TOKEN, &yes, sizeof(yes)},
      {CKA_PRIVATE, &no, sizeof(no)},
      {CKA_VERIFY, &yes, sizeof(yes)},
      {CKA_ENCRYPT, &no, sizeof(no)},
      {CKA_WRAP, &no, sizeof(no)},
      {CKA_LABEL, (void *)label, label_len},
      {CKA_ID, id, sizeof(id)},
  };
  CK_ULONG npub = 9;
  if (ec) {
    /* CKA_EC_POINT is the uncompressed point in a DER OCTET STRING. */
    point[0] = 0x04;
    point[1] = 65;
    if (!EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, point + 2, 65,
                                         &point_len) ||
        point_len != 65 ||
        !bn_attr(pk, OSSL_PKEY_PARAM_PRIV_KEY, 32, CKA_VALUE, &priv_t[npriv++], scratch[0], 32))
      goto ossl;
    priv_t[npriv++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid)};
    pub_t[npub++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid)};
    pub_t[npub++] = (CK_ATTRIBUTE){CKA_EC_POINT, point, sizeof(point)};
  } else {
    static const struct {
      const char *param;
      CK_ATTRIBUTE_TYPE type;
    } rsa[] = {{OSSL_PKEY_PARAM_RSA_N, CKA_MODULUS},
               {OSSL_PKEY_PARAM_RSA_E, CKA_PUBLIC_EXPONENT},
               {OSSL_PKEY_PARAM_RSA_D, CKA_PRIVATE_EXPONENT},
               {OSSL_PKEY_PARAM_RSA_FACTOR1, CKA_PRIME_1},
               {OSSL_PKEY_PARAM_RSA_FACTOR2, CKA_PRIME_2},
               {OSSL_PKEY_PARAM_RSA_EXPONENT1, CKA_EXPONENT_1},
               {OSSL_PKEY_PARAM_RSA_EXPONENT2, CKA_EXPONENT_2},
               {OSSL_PKEY_PARAM_RSA_COEFFICIENT1, CKA_COEFFICIENT}};
    for (size_t i = 0; i < sizeof(rsa) / sizeof(rsa[0]); i++)
      if (!bn_attr(pk, rsa[i].param, 0, rsa[i].type, &priv_t[npriv++], scratch[i],
                   sizeof(scratch[i])))
        goto ossl;
    pub_t[npub++] = priv_t[13]; /* modulus */
    pub_t[npub++] = priv_t[14]; /* public exponent */
  }
  if ((rv = fl->C_CreateObject(s, priv_t, npriv, &priv)) != CKR_OK ||
      (rv = fl->C_CreateObject(s, pub_t, npub, &pub)) != CKR_OK) {
    st = kyso_fail(err, rv == CKR_DEVICE_MEMORY ? KYSO_RESOURCE_EXHAUSTED : KYSO_INTERNAL,
                   "importing key '%s' into token '%s': %s", label, token, rv_text(rv, rvb));
    if (priv != CK_INVALID_HANDLE) fl->C_DestroyObject(s, priv);
  }
  goto out;
ossl:
  kyso_fail(err, KYSO_INTERNAL, "cannot read the key material for '%s'", label);
  st = kyso_err_add_openssl(err);
out:
  OPENSSL_cleanse(scratch, sizeof(scratch));
  OPENSSL_free(spki);
  return st;
}

/* The key for index i: fresh for EC, from the pool of npool for RSA. */
static kyso_status key_for(int ec, EVP_PKEY **pool, uint64_t npool, uint64_t i, EVP_PKEY **out,
                           kyso_err *err) {
  if (!ec) {
    *out = pool[i % npool];
    return EVP_PKEY_up_ref(*out) ? KYSO_OK
                                 : kyso_fail(err, KYSO_INTERNAL, "cannot reference an RSA key");
  }
  if ((*out = EVP_EC_gen("P-256")) != NULL) return KYSO_OK;
  kyso_fail(err, KYSO_INTERNAL, "cannot generate an EC P-256 key");
  return kyso_err_add_openssl(err);
}

/* Step 2 is shared by the importing threads: each takes the next index. */
typedef struct importer {
  const args *a;
  const char *token;
  p11 *p;
  EVP_PKEY **pool; /* RSA material, read only */
  uint64_t npool;
  _Atomic uint64_t next, done;
  atomic_int stop;
  pthread_mutex_t mu;
  int failed;
  kyso_err first_err; /* under mu */
} importer;

/* One thread: its own session. SoftHSM's file token writes every attribute
 * of a new object separately, but works on several sessions at once: on
 * two cores eight threads import about three times as fast as one. */
static void *import_loop(void *arg) {
  importer *im = arg;
  kyso_err err = {0};
  kyso_status st = KYSO_OK;
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  EVP_PKEY *pk = NULL;
  char account[KYSO_MAX_NAME + 1], label[KYSO_MAX_LABEL + 1], rvb[32];
  CK_RV rv = im->p->fl->C_OpenSession(im->p->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
                                      NULL, &s);
  if (rv != CKR_OK) {
    st = kyso_fail(&err, KYSO_UNAVAILABLE, "cannot open a session on token '%s': %s", im->token,
                   rv_text(rv, rvb));
    goto out;
  }
  while (!atomic_load_explicit(&im->stop, memory_order_relaxed)) {
    uint64_t i = atomic_fetch_add(&im->next, 1);
    if (i >= im->a->keys) break;
    if ((st = label_of(im->a, i, account, sizeof(account), label, &err)) != KYSO_OK ||
        (st = key_for(im->a->ec, im->pool, im->npool, i, &pk, &err)) != KYSO_OK ||
        (st = import_key(im->p->fl, s, im->token, label, pk, im->a->ec, &err)) != KYSO_OK)
      goto out;
    EVP_PKEY_free(pk);
    pk = NULL;
    atomic_fetch_add_explicit(&im->done, 1, memory_order_relaxed);
  }
out:
  if (st != KYSO_OK) {
    pthread_mutex_lock(&im->mu);
    if (!im->failed) im->first_err = err;
    im->failed = 1;
    pthread_mutex_unlock(&im->mu);
    atomic_store(&im->stop, 1);
  }
  EVP_PKEY_free(pk);
  if (s != CK_INVALID_HANDLE) im->p->fl->C_CloseSession(s);
  return NULL;
}

/* Step 2: the keys, from --threads threads on sessions of our own.
 * *gen_s gets the RSA pool's time. */
static kyso_status import_all(const args *a, const kyso_config *cfg, const char *pin,
                              double *gen_s, kyso_err *err) {
  kyso_status st = KYSO_OK;
  p11 p = {0};
  importer im;
  pthread_t *threads = NULL;
  size_t started = 0;
  double t0 = tool_now();
  memset(&im, 0, sizeof(im));
  pthread_mutex_init(&im.mu, NULL);
  im.a = a;
  im.token = cfg->hsm_token;
  im.p = &p;
  im.npool = a->ec ? 0 : (a->rsa_pool < a->keys ? a->rsa_pool : a->keys);
  if ((threads = calloc(a->threads, sizeof(*threads))) == NULL ||
      (im.npool > 0 && (im.pool = calloc(im.npool, sizeof(*im.pool))) == NULL)) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for the import");
    goto out;
  }
  if (im.npool > 0)
    fprintf(stderr, "%s: generating %llu RSA-2048 keys to reuse\n", tool_name,
            (unsigned long long)im.npool);
  for (uint64_t k = 0; k < im.npool; k++)
    if ((im.pool[k] = EVP_RSA_gen(2048)) == NULL) {
      kyso_fail(err, KYSO_INTERNAL, "cannot generate an RSA-2048 key");
      st = kyso_err_add_openssl(err);
      goto out;
    }
  *gen_s = tool_now() - t0;
  if ((st = p11_open(cfg, pin, &p, err)) != KYSO_OK) goto out;
  double t1 = tool_now();
  for (; started < a->threads; started++)
    if (pthread_create(&threads[started], NULL, import_loop, &im) != 0) {
      st = kyso_fail(err, KYSO_INTERNAL, "cannot start importing thread %zu", started + 1);
      goto out;
    }
  tool_ticker tick;
  tool_ticker_start(&tick);
  while (!atomic_load(&im.stop) && atomic_load(&im.done) < a->keys) {
    tool_sleep(0.02); /* short naps see the end when it comes */
    uint64_t done = atomic_load(&im.done);
    if (done < a->keys && tool_ticker_due(&tick))
      fprintf(stderr, "%s: imported %llu/%llu keys, %.0f/s\n", tool_name,
              (unsigned long long)done, (unsigned long long)a->keys,
              (double)done / (tool_now() - t1));
  }
out:
  atomic_store(&im.stop, 1);
  for (; started > 0; started--) pthread_join(threads[started - 1], NULL);
  if (st == KYSO_OK && im.failed) {
    *err = im.first_err;
    st = err->code;
  }
  if (st != KYSO_OK && atomic_load(&im.done) > 0)
    fprintf(stderr, "%s: %llu keys were imported before the failure\n", tool_name,
            (unsigned long long)atomic_load(&im.done));
  for (uint64_t k = 0; im.pool != NULL && k < im.npool; k++) EVP_PKEY_free(im.pool[k]);
  free(im.pool);
  free(threads);
  p11_close(&p);
  pthread_mutex_destroy(&im.mu);
  return st;
}

/* A certificate for pub from the sub-CA: the PKI's 'signer' profile. */
static kyso_status issue(const pki *p, EVP_PKEY *pub, const char *account, uint64_t days,
                         X509 **out, kyso_err *err) {
  static const struct {
    int nid;
    const char *value;
  } exts[] = {{NID_basic_constraints, "critical,CA:FALSE"},
              {NID_key_usage, "critical,digitalSignature,nonRepudiation"},
              {NID_ext_key_usage, "emailProtection"},
              {NID_subject_key_identifier, "hash"},
              {NID_authority_key_identifier, "keyid"}};
  kyso_status st = KYSO_OK;
  X509 *x = X509_new();
  X509_NAME *name = X509_NAME_new();
  BIGNUM *serial = BN_new();
  X509V3_CTX ctx;
  *out = NULL;
  /* 127 random bits: positive, and unique without keeping a counter. */
  if (x == NULL || name == NULL || serial == NULL || !BN_rand(serial, 127, BN_RAND_TOP_ANY,
                                                              BN_RAND_BOTTOM_ANY) ||
      !X509_set_version(x, X509_VERSION_3) ||
      BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) == NULL ||
      !X509_set_issuer_name(x, X509_get_subject_name(p->ca)) ||
      !X509_NAME_add_entry_by_txt(name, "C", MBSTRING_UTF8, (const unsigned char *)"VN", -1, -1, 0) ||
      !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"Kyso Bench", -1,
                                  -1, 0) ||
      !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)account, -1,
                                  -1, 0) ||
      !X509_set_subject_name(x, name) ||
      X509_gmtime_adj(X509_getm_notBefore(x), -60) == NULL || /* a little clock skew */
      X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) == NULL ||
      !X509_set_pubkey(x, pub))
    goto ossl;
  X509V3_set_ctx(&ctx, p->ca, x, NULL, NULL, 0);
  for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &ctx, exts[i].nid, exts[i].value);
    int ok = e != NULL && X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    if (!ok) goto ossl;
  }
  if (X509_sign(x, p->key, EVP_sha256()) <= 0) goto ossl;
  *out = x;
  x = NULL;
  goto out;
ossl:
  kyso_fail(err, KYSO_INTERNAL, "cannot issue the certificate of '%s'", account);
  st = kyso_err_add_openssl(err);
out:
  X509_free(x);
  X509_NAME_free(name);
  BN_free(serial);
  return st;
}

/* Step 3: through kyso's modules, as `kyso cert import` would store them. */
static kyso_status certify_all(const args *a, const kyso_config *cfg, const char *pin,
                               const pki *p, double *open_s, kyso_err *err) {
  kyso_status st;
  hsm *h = NULL;
  signer *s = NULL;
  EVP_PKEY *pub = NULL;
  X509 *cert = NULL;
  char account[KYSO_MAX_NAME + 1], label[KYSO_MAX_LABEL + 1], dir[KYSO_PATH_MAX + 16];
  tool_ticker tick;
  uint64_t i = 0;
  double t0 = tool_now();
  snprintf(dir, sizeof(dir), "%s/certs", cfg->data_dir);
  if ((st = hsm_from_config(cfg, pin, &h, err)) != KYSO_OK) goto out;
  if ((st = signer_open(h, dir, &s, err)) != KYSO_OK) goto out;
  *open_s = tool_now() - t0;
  tool_ticker_start(&tick);
  for (; i < a->keys; i++) {
    if ((st = label_of(a, i, account, sizeof(account), label, err)) != KYSO_OK) goto out;
    if ((st = hsm_public_key(h, label, &pub, err)) != KYSO_OK) goto out;
    if ((st = issue(p, pub, account, a->days, &cert, err)) != KYSO_OK) goto out;
    if ((st = signer_import_certificate(s, label, cert, p->chain, err)) != KYSO_OK) goto out;
    EVP_PKEY_free(pub);
    X509_free(cert);
    pub = NULL;
    cert = NULL;
    if (tool_ticker_due(&tick))
      fprintf(stderr, "%s: stored %llu/%llu certificates, %.0f/s\n", tool_name,
              (unsigned long long)(i + 1), (unsigned long long)a->keys,
              (double)(i + 1) / (tool_now() - tick.start));
  }
out:
  if (st != KYSO_OK && i > 0)
    fprintf(stderr, "%s: %llu certificates were stored before the failure\n", tool_name,
            (unsigned long long)i);
  EVP_PKEY_free(pub);
  X509_free(cert);
  signer_close(s);
  hsm_close(h);
  return st;
}

static cJSON *result_json(const args *a, const kyso_config *cfg, double import_s, double gen_s,
                          double cert_s, double open_s) {
  char first[KYSO_MAX_LABEL + 1], last[KYSO_MAX_LABEL + 1], account[KYSO_MAX_NAME + 1];
  kyso_err ignored;
  cJSON *j = cJSON_CreateObject();
  if (label_of(a, 0, account, sizeof(account), first, &ignored) != KYSO_OK ||
      label_of(a, a->keys - 1, account, sizeof(account), last, &ignored) != KYSO_OK)
    first[0] = last[0] = '\0';
  cJSON_AddStringToObject(j, "tool", "kyso-bench-fill");
  cJSON_AddStringToObject(j, "mode", "keys");
  cJSON_AddStringToObject(j, "token", cfg->hsm_token);
  cJSON_AddStringToObject(j, "algorithm", a->ec ? "ec-p256" : "rsa-2048");
  cJSON_AddNumberToObject(j, "keys", (double)a->keys);
  cJSON_AddStringToObject(j, "prefix", a->prefix);
  cJSON_AddStringToObject(j, "first_label", first);
  cJSON_AddStringToObject(j, "last_label", last);
  cJSON_AddStringToObject(j, "method", "C_CreateObject (private, then public object)");
  cJSON_AddNumberToObject(j, "threads", (double)a->threads);
  cJSON_AddStringToObject(j, "key_material",
                          a->ec ? "fresh per key" : "a pool of RSA keys reused across labels");
  if (a->ec)
    cJSON_AddNullToObject(j, "rsa_pool");
  else
    cJSON_AddNumberToObject(j, "rsa_pool", (double)(a->rsa_pool < a->keys ? a->rsa_pool : a->keys));
  cJSON_AddStringToObject(j, "cka_id", "SHA-256 of the public key, both halves (as kysod)");
  cJSON_AddNumberToObject(j, "import_seconds", import_s);
  cJSON_AddNumberToObject(j, "import_keys_per_s", (double)a->keys / import_s);
  cJSON_AddNumberToObject(j, "rsa_pool_seconds", gen_s);
  cJSON_AddNumberToObject(j, "certificate_seconds", cert_s);
  cJSON_AddNumberToObject(j, "certificates_per_s", (double)a->keys / cert_s);
  cJSON_AddNumberToObject(j, "hsm_open_seconds", open_s);
  return j;
}

int fill_keys_main(int argc, char **argv) {
  args a;
  kyso_config cfg;
  kyso_err err = {0};
  pki p = {0};
  char pin[KYSO_MAX_PIN + 1] = "";
  cJSON *json = NULL;
  pid_t pid = 0;
  double gen_s = 0, open_s = 0;
  memset(&cfg, 0, sizeof(cfg));
  int rc = parse_args(argc, argv, &a);
  if (rc >= 0) goto out;
  rc = 1;
  if (kyso_config_load(a.config, &cfg, &err) != KYSO_OK ||
      kyso_config_read_pin(&cfg, pin, sizeof(pin), &err) != KYSO_OK ||
      pki_load(a.pki, &p, &err) != KYSO_OK)
    goto failed;
  if (kysod_running(cfg.data_dir, &pid)) {
    fprintf(stderr, "%s: kysod (pid %ld) is running on '%s'; stop it first: it reads the "
            "token's keys only when it starts\n", tool_name, (long)pid, cfg.data_dir);
    goto out;
  }
  fprintf(stderr, "%s: checking that the %llu labels are free in token '%s'\n", tool_name,
          (unsigned long long)a.keys, cfg.hsm_token);
  if (check_free(&a, &cfg, pin, &err) != KYSO_OK) goto failed;
  double t0 = tool_now();
  if (import_all(&a, &cfg, pin, &gen_s, &err) != KYSO_OK) goto failed;
  double import_s = tool_now() - t0;
  fprintf(stderr, "%s: %llu keys imported in %.1f s; now their certificates\n", tool_name,
          (unsigned long long)a.keys, import_s);
  t0 = tool_now();
  if (certify_all(&a, &cfg, pin, &p, &open_s, &err) != KYSO_OK) goto failed;
  double cert_s = tool_now() - t0;
  json = result_json(&a, &cfg, import_s, gen_s, cert_s, open_s);
  printf("%llu %s keys: imported in %.1f s (%.0f/s), certificates in %.1f s (%.0f/s)\n",
         (unsigned long long)a.keys, a.ec ? "EC P-256" : "RSA-2048", import_s,
         (double)a.keys / import_s, cert_s, (double)a.keys / cert_s);
  if (a.json != NULL && tool_write_json(a.json, json) != 0) goto out;
  rc = 0;
  goto out;
failed:
  fprintf(stderr, "%s: %s\n", tool_name, err.msg);
out:
  kyso_wipe(pin, sizeof(pin));
  pki_free(&p);
  kyso_config_free(&cfg);
  cJSON_Delete(json);
  return rc;
}
