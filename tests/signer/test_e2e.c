/* kyso tests — the signer over a real SoftHSM2 token through kyso_hsm:
 * the whole life of an RSA-2048 PKCS#1, an RSA-2048 PSS and an EC P-256
 * key, 300 ECDSA CMS signatures (DER encoding of r||s with every leading
 * byte pattern), many threads signing through one signer, and a restart
 * that finds the stored certificates again. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/cms.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>

#include "flow.h"
#include "kyso/hsm.h"
#include "kyso/signer.h"
#include "kyso/util.h"
#include "testutil.h"

#define MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define TOKEN "kyso-signer-e2e"
#define PIN "1234"
#define SO_PIN "5678"

typedef struct fixture {
  char dir[256];
  char pki[512];
  char certs[512];
  hsm *h;
  signer *s;
} fixture;

static const struct {
  const char *label;
  hsm_key_type type;
} keys[] = {
    {"official-rsa-pkcs1", HSM_KEY_RSA_2048},
    {"official-rsa-pss", HSM_KEY_RSA_2048},
    {"seal-ec-H37.DN.001", HSM_KEY_EC_P256},
};

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  char tok[512];
  kyso_err err = {0};
  if (f == NULL || !tu_tmpdir("signer-e2e", f->dir)) return -1;
  snprintf(f->pki, sizeof(f->pki), "%s/pki", f->dir);
  snprintf(f->certs, sizeof(f->certs), "%s/certs", f->dir);
  snprintf(tok, sizeof(tok), "%s/token", f->dir);
  hsm_opts o = {.module_path = MODULE, .token_label = TOKEN, .pin = PIN, .max_sessions = 8};
  if (!tu_pki_init(f->pki) || !tu_softhsm_token(tok, TOKEN, PIN, SO_PIN) ||
      hsm_open(&o, &f->h, &err) != KYSO_OK)
    goto fail;
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
    if (hsm_generate_key(f->h, keys[i].label, keys[i].type, NULL, &err) != KYSO_OK) goto fail;
  if (signer_open(f->h, f->certs, &f->s, &err) != KYSO_OK) goto fail;
  *state = f;
  return 0;
fail:
  fprintf(stderr, "setup: %s: %s\n", kyso_strerror(err.code), err.msg);
  return -1;
}

static int teardown(void **state) {
  fixture *f = *state;
  signer_close(f->s);
  hsm_close(f->h);
  tu_rmdir(f->dir);
  free(f);
  return 0;
}

static void test_flow_rsa_pkcs1(void **state) {
  fixture *f = *state;
  flow_run(f->s, keys[0].label, SIGNER_RSA_PKCS1, f->pki);
}

static void test_flow_rsa_pss(void **state) {
  fixture *f = *state;
  flow_run(f->s, keys[1].label, SIGNER_RSA_PSS, f->pki);
}

static void test_flow_ec(void **state) {
  fixture *f = *state;
  flow_run(f->s, keys[2].label, SIGNER_RSA_PKCS1, f->pki);
}

/* The key object knows the label and the public half, nothing else. */
static void test_no_private_material(void **state) {
  fixture *f = *state;
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    EVP_PKEY *k = NULL;
    OSSL_PARAM *all = NULL;
    BIGNUM *d = NULL;
    assert_int_equal(signer_private_key(f->s, keys[i].label, &k, NULL), KYSO_OK);
    assert_int_equal(EVP_PKEY_todata(k, EVP_PKEY_KEYPAIR, &all), 1);
    assert_null(OSSL_PARAM_locate(all, OSSL_PKEY_PARAM_RSA_D));
    assert_null(OSSL_PARAM_locate(all, OSSL_PKEY_PARAM_PRIV_KEY));
    assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_D, &d), 0);
    OSSL_PARAM_free(all);
    EVP_PKEY_free(k);
    ERR_clear_error();
  }
}

/* Byte length of an INTEGER's content at p (short-form lengths only). */
static int int_len(const uint8_t *p) { return p[0] == 0x02 ? p[1] : -1; }

/* 300 ECDSA CMS signatures, all checked by signer_verify_cms, every 25th by
 * the openssl command line too. r and s come out of the HSM with leading
 * zero bytes and high bits at random; the DER must be right every time. */
static void test_ecdsa_300(void **state) {
  fixture *f = *state;
  const char *label = keys[2].label;
  X509_STORE *store = tu_pki_store(f->pki);
  int padded = 0, short_ = 0;
  int64_t t0 = kyso_now_ms();
  for (int i = 0; i < 300; i++) {
    char doc[128];
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    kyso_err err = {0};
    int n = snprintf(doc, sizeof(doc), "Công văn số %d/UBND-VP\n", i);
    kyso_status st = signer_sign_cms(f->s, label, SIGNER_RSA_PKCS1, (const uint8_t *)doc,
                                     (size_t)n, 0, &sig, &sig_len, &err);
    if (st != KYSO_OK) fail_msg("signature %d: %s: %s", i, kyso_strerror(st), err.msg);
    st = signer_verify_cms(store, sig, sig_len, (const uint8_t *)doc, (size_t)n, NULL, &err);
    if (st != KYSO_OK) fail_msg("signature %d does not verify: %s", i, err.msg);
    if (i % 25 == 0 &&
        tu_openssl_cms_verify(f->pki, sig, sig_len, (const uint8_t *)doc, (size_t)n) != 0)
      fail_msg("openssl rejects ECDSA signature %d", i);
    /* Count the shapes seen, from the SignerInfo's signature value. */
    const unsigned char *p = sig;
    CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)sig_len);
    CMS_SignerInfo *si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
    ASN1_OCTET_STRING *v = CMS_SignerInfo_get0_signature(si);
    const uint8_t *der = ASN1_STRING_get0_data(v);
    int rl = int_len(der + 2), sl = rl > 0 ? int_len(der + 4 + rl) : -1;
    padded += (rl == 33) + (sl == 33);
    short_ += (rl > 0 && rl < 32) + (sl > 0 && sl < 32);
    CMS_ContentInfo_free(cms);
    OPENSSL_free(sig);
  }
  print_message("ECDSA: 300 sign+verify in %lld ms (12 also by openssl); %d of 600 integers "
                "needed a 0x00 pad, %d were shorter than 32 bytes\n",
                (long long)(kyso_now_ms() - t0), padded, short_);
  assert_true(padded > 0);
  X509_STORE_free(store);
}

typedef struct worker {
  fixture *f;
  int id;
  int failures;
  char msg[KYSO_ERR_MSG_MAX];
} worker;

/* Each thread signs with all three keys in turn and verifies each result. */
static void *sign_many(void *arg) {
  worker *w = arg;
  X509_STORE *store = tu_pki_store(w->f->pki);
  for (int i = 0; i < 40; i++) {
    size_t k = (size_t)(i + w->id) % (sizeof(keys) / sizeof(keys[0]));
    signer_rsa_scheme scheme = k == 1 ? SIGNER_RSA_PSS : SIGNER_RSA_PKCS1;
    char doc[64];
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    kyso_err err = {0};
    int n = snprintf(doc, sizeof(doc), "thread %d doc %d", w->id, i);
    if (signer_sign_cms(w->f->s, keys[k].label, scheme, (const uint8_t *)doc, (size_t)n, 0, &sig,
                        &sig_len, &err) != KYSO_OK ||
        signer_verify_cms(store, sig, sig_len, (const uint8_t *)doc, (size_t)n, NULL, &err) !=
            KYSO_OK) {
      w->failures++;
      snprintf(w->msg, sizeof(w->msg), "%s", err.msg);
    }
    OPENSSL_free(sig);
  }
  X509_STORE_free(store);
  return NULL;
}

static void test_concurrent_signing(void **state) {
  fixture *f = *state;
  enum { THREADS = 6 };
  pthread_t t[THREADS];
  worker w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker){.f = f, .id = i};
    assert_int_equal(pthread_create(&t[i], NULL, sign_many, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    pthread_join(t[i], NULL);
    if (w[i].failures) fail_msg("thread %d: %d failures, last: %s", i, w[i].failures, w[i].msg);
  }
}

/* A new signer over the same directory signs with the stored certificates. */
static void test_restart(void **state) {
  fixture *f = *state;
  signer *s2 = NULL;
  kyso_err err = {0};
  static const uint8_t doc[] = "after restart";
  assert_int_equal(signer_open(f->h, f->certs, &s2, &err), KYSO_OK);
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
    flow_sign_verify(s2, keys[i].label, i == 1 ? SIGNER_RSA_PSS : SIGNER_RSA_PKCS1, f->pki, doc,
                     sizeof(doc) - 1, i == 0);
  signer_close(s2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_flow_rsa_pkcs1),
      cmocka_unit_test(test_flow_rsa_pss),
      cmocka_unit_test(test_flow_ec),
      cmocka_unit_test(test_no_private_material),
      cmocka_unit_test(test_ecdsa_300),
      cmocka_unit_test(test_concurrent_signing),
      cmocka_unit_test(test_restart),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
