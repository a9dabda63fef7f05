/* kyso tests — the kysohsm provider and the signer over an in-memory HSM:
 * key objects, signatures checked by OpenSSL's default provider, the
 * AlgorithmIdentifiers, refusals, status codes, the certificate store. */
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
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

#include "fake_fixture.h"
#include "fake_hsm.h"
#include "flow.h"
#include "signer_internal.h"
#include "testutil.h"

typedef fake_fixture fixture;

static int setup(void **state) {
  static const fake_key keys[] = {{"rsa", HSM_KEY_RSA_2048}, {"ec", HSM_KEY_EC_P256}, {"nocert", HSM_KEY_EC_P256}};
  fixture *f = fake_fixture_new("signer-fake", keys, sizeof(keys) / sizeof(keys[0]));
  *state = f;
  return f != NULL ? 0 : -1;
}

static int teardown(void **state) {
  fake_fixture_free(*state);
  return 0;
}

static EVP_PKEY *key_of(fixture *f, const char *label) {
  EVP_PKEY *k = NULL;
  kyso_err err = {0};
  if (signer_private_key(f->s, label, &k, &err) != KYSO_OK) fail_msg("%s", err.msg);
  return k;
}

static void test_key_objects(void **state) {
  fixture *f = *state;
  static const struct {
    const char *label, *type;
    int bits, secbits, size;
  } cases[] = {{"rsa", "RSA", 2048, 112, 256}, {"ec", "EC", 256, 128, 72}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    EVP_PKEY *k = key_of(f, cases[i].label), *pub = NULL;
    assert_true(EVP_PKEY_is_a(k, cases[i].type));
    assert_string_equal(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(k)), "kysohsm");
    if (EVP_PKEY_get_bits(k) != cases[i].bits || EVP_PKEY_get_security_bits(k) != cases[i].secbits ||
        EVP_PKEY_get_size(k) != cases[i].size)
      fail_msg("%s: got bits/secbits/size %d/%d/%d, want %d/%d/%d", cases[i].label,
               EVP_PKEY_get_bits(k), EVP_PKEY_get_security_bits(k), EVP_PKEY_get_size(k),
               cases[i].bits, cases[i].secbits, cases[i].size);
    assert_int_equal(hsm_public_key(f->h, cases[i].label, &pub, NULL), KYSO_OK);
    /* Comparable with an ordinary key, both ways round. */
    assert_int_equal(EVP_PKEY_eq(pub, k), 1);
    assert_int_equal(EVP_PKEY_eq(k, pub), 1);
    /* Encodable as SubjectPublicKeyInfo, the same bytes as the HSM's. */
    unsigned char *a = NULL, *b = NULL;
    int an = i2d_PUBKEY(k, &a), bn = i2d_PUBKEY(pub, &b);
    assert_true(an > 0);
    assert_int_equal(an, bn);
    assert_memory_equal(a, b, (size_t)an);
    char md[32];
    assert_int_equal(EVP_PKEY_get_default_digest_name(k, md, sizeof(md)), 1); /* advisory */
    assert_string_equal(md, "SHA256");
    OPENSSL_free(a);
    OPENSSL_free(b);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(k);
  }
  EVP_PKEY *rsa = key_of(f, "rsa"), *ec = key_of(f, "ec");
  assert_int_not_equal(EVP_PKEY_eq(rsa, ec), 1);
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(ec);
  ERR_clear_error();
}

/* Sets PSS the way CMS callers do, through the EVP_PKEY_CTX_ctrl shims. */
static int set_pss(EVP_PKEY_CTX *pctx, int saltlen) {
  return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, saltlen) > 0 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0;
}

static size_t algorithm_id(EVP_PKEY_CTX *pctx, uint8_t *out, size_t n) {
  OSSL_PARAM p[2] = {OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, out, n),
                     OSSL_PARAM_END};
  return EVP_PKEY_CTX_get_params(pctx, p) > 0 ? p[0].return_size : 0;
}

/* Signs with kysohsm, verifies with the default provider, and compares our
 * AlgorithmIdentifier with the default provider's for the same settings. */
static void test_digest_sign(void **state) {
  fixture *f = *state;
  static const struct {
    const char *label;
    int pss;
  } cases[] = {{"rsa", 0}, {"rsa", 1}, {"ec", 0}};
  static const char msg[] = "to be signed";
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    EVP_PKEY *k = key_of(f, cases[i].label), *pub = NULL;
    EVP_MD_CTX *ours = EVP_MD_CTX_new(), *theirs = EVP_MD_CTX_new(), *ver = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pc = NULL, *tc = NULL, *vc = NULL;
    uint8_t sig[512], aid1[128], aid2[128];
    size_t sig_len = sizeof(sig);
    assert_int_equal(hsm_public_key(f->h, cases[i].label, &pub, NULL), KYSO_OK);
    assert_int_equal(EVP_DigestSignInit_ex(ours, &pc, "SHA256", f->s->libctx, NULL, k, NULL), 1);
    assert_int_equal(EVP_DigestSignInit(theirs, &tc, EVP_sha256(), NULL,
                                        fake_hsm_private(f->h, cases[i].label)), 1);
    assert_int_equal(EVP_DigestVerifyInit(ver, &vc, EVP_sha256(), NULL, pub), 1);
    if (cases[i].pss) assert_true(set_pss(pc, 32) && set_pss(tc, 32) && set_pss(vc, 32));
    assert_int_equal(EVP_DigestSign(ours, sig, &sig_len, (const uint8_t *)msg, sizeof(msg)), 1);
    if (EVP_DigestVerify(ver, sig, sig_len, (const uint8_t *)msg, sizeof(msg)) != 1)
      fail_msg("case %zu (%s pss=%d): the default provider rejects our signature", i,
               cases[i].label, cases[i].pss);
    size_t n1 = algorithm_id(pc, aid1, sizeof(aid1)), n2 = algorithm_id(tc, aid2, sizeof(aid2));
    if (n1 == 0 || n1 != n2 || memcmp(aid1, aid2, n1) != 0)
      fail_msg("case %zu: AlgorithmIdentifier differs from the default provider's", i);
    EVP_MD_CTX_free(ours);
    EVP_MD_CTX_free(theirs);
    EVP_MD_CTX_free(ver);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(k);
  }
}

/* EVP_PKEY_sign takes a SHA-256 digest, nothing else. */
static void test_sign_digest_input(void **state) {
  fixture *f = *state;
  EVP_PKEY *k = key_of(f, "ec");
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(f->s->libctx, k, NULL);
  uint8_t dgst[32] = {1, 2, 3}, sig[80];
  size_t n = sizeof(sig);
  assert_int_equal(EVP_PKEY_sign_init(c), 1);
  assert_int_equal(EVP_PKEY_sign(c, sig, &n, dgst, sizeof(dgst)), 1);
  n = sizeof(sig);
  assert_int_not_equal(EVP_PKEY_sign(c, sig, &n, dgst, 20), 1);
  EVP_PKEY_CTX_free(c);
  EVP_PKEY_free(k);
  ERR_clear_error();
}

static void test_refusals(void **state) {
  fixture *f = *state;
  EVP_PKEY *k = key_of(f, "rsa");
  EVP_MD_CTX *m = EVP_MD_CTX_new();
  EVP_PKEY_CTX *pc = NULL;
  /* Digests other than SHA-256. */
  assert_int_not_equal(EVP_DigestSignInit_ex(m, NULL, "SHA384", f->s->libctx, NULL, k, NULL), 1);
  assert_int_not_equal(EVP_DigestSignInit_ex(m, NULL, "SHA1", f->s->libctx, NULL, k, NULL), 1);
  /* PSS with another salt, padding modes the HSM does not do, MGF1-SHA1. */
  assert_int_equal(EVP_DigestSignInit_ex(m, &pc, "SHA256", f->s->libctx, NULL, k, NULL), 1);
  assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING), 1);
  assert_true(EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, 20) <= 0);
  assert_true(EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_MAX) <= 0);
  assert_true(EVP_PKEY_CTX_set_rsa_mgf1_md(pc, EVP_sha1()) <= 0);
  assert_true(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_NO_PADDING) <= 0);
  assert_true(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_X931_PADDING) <= 0);
  EVP_MD_CTX_free(m);
  EVP_PKEY_free(k);
  ERR_clear_error();
}

static void test_flows(void **state) {
  fixture *f = *state;
  flow_run(f->s, "rsa", SIGNER_RSA_PKCS1, f->pki);
  flow_run(f->s, "rsa", SIGNER_RSA_PSS, f->pki);
  flow_run(f->s, "ec", SIGNER_RSA_PKCS1, f->pki);
  /* An empty document is a document too. */
  flow_sign_verify(f->s, "ec", SIGNER_RSA_PKCS1, f->pki, (const uint8_t *)"", 0, 1);
}

/* The HSM's status reaches the caller through OpenSSL. */
static void test_hsm_failure_status(void **state) {
  fixture *f = *state;
  uint8_t *out = NULL;
  size_t n = 0;
  kyso_err err = {0};
  fake_hsm_fail_signs(f->h, KYSO_UNAVAILABLE, 1);
  assert_int_equal(signer_sign_cms(f->s, "ec", SIGNER_RSA_PKCS1, (const uint8_t *)"x", 1, 0,
                                   &out, &n, &err), KYSO_UNAVAILABLE);
  assert_non_null(strstr(err.msg, "fake token refused"));
  assert_null(out);
  fake_hsm_fail_signs(f->h, KYSO_DEADLINE_EXCEEDED, 1);
  assert_int_equal(signer_make_csr(f->s, "rsa", "/CN=x", &out, &n, &err), KYSO_DEADLINE_EXCEEDED);
  /* Afterwards all is well again, and no stale error leaks into a success. */
  assert_int_equal(signer_sign_cms(f->s, "ec", SIGNER_RSA_PKCS1, (const uint8_t *)"x", 1, 0,
                                   &out, &n, &err), KYSO_OK);
  OPENSSL_free(out);
  assert_int_equal(ERR_peek_error(), 0);
  /* The digest path the same. */
  static const uint8_t sha[32] = {0x5a};
  fake_hsm_fail_signs(f->h, KYSO_UNAVAILABLE, 1);
  assert_int_equal(signer_sign_cms_digest(f->s, "rsa", SIGNER_RSA_PSS, sha, 0, &out, &n, &err),
                   KYSO_UNAVAILABLE);
  assert_non_null(strstr(err.msg, "fake token refused"));
  assert_null(out);
  assert_int_equal(signer_sign_cms_digest(f->s, "rsa", SIGNER_RSA_PSS, sha, 0, &out, &n, &err),
                   KYSO_OK);
  OPENSSL_free(out);
  assert_int_equal(ERR_peek_error(), 0);
}

static void test_sign_refusals(void **state) {
  fixture *f = *state;
  uint8_t *out = NULL;
  size_t n = 0;
  const uint8_t *d = (const uint8_t *)"doc";
  static const struct {
    const char *label;
    signer_rsa_scheme scheme;
    time_t t;
    kyso_status want;
  } cases[] = {
      {"ec", SIGNER_RSA_PSS, 0, KYSO_INVALID_ARGUMENT},       /* PSS of an EC key */
      {"missing", SIGNER_RSA_PKCS1, 0, KYSO_NOT_FOUND},       /* no such key */
      {"nocert", SIGNER_RSA_PKCS1, 0, KYSO_FAILED_PRECONDITION}, /* key without cert */
      {"ec", (signer_rsa_scheme)7, 0, KYSO_INVALID_ARGUMENT}, /* unknown scheme */
      {"ec", SIGNER_RSA_PKCS1, -5, KYSO_INVALID_ARGUMENT},    /* before 1970 */
      {"", SIGNER_RSA_PKCS1, 0, KYSO_INVALID_ARGUMENT},       /* empty label */
  };
  static const uint8_t sha[32] = {1};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    for (int digest = 0; digest <= 1; digest++) {
      kyso_err err = {0};
      kyso_status got =
          digest ? signer_sign_cms_digest(f->s, cases[i].label, cases[i].scheme, sha, cases[i].t,
                                          &out, &n, &err)
                 : signer_sign_cms(f->s, cases[i].label, cases[i].scheme, d, 3, cases[i].t, &out,
                                   &n, &err);
      if (got != cases[i].want)
        fail_msg("case %zu (%s): got %s (%s), want %s", i, digest ? "digest" : "bytes",
                 kyso_strerror(got), err.msg, kyso_strerror(cases[i].want));
      assert_null(out);
    }
  }
  assert_int_equal(signer_sign_cms(f->s, "ec", 0, NULL, 3, 0, &out, &n, NULL),
                   KYSO_INVALID_ARGUMENT);
  assert_int_equal(signer_sign_cms_digest(f->s, "ec", 0, NULL, 0, &out, &n, NULL),
                   KYSO_INVALID_ARGUMENT);
  assert_int_equal(signer_sign_cms_digest(NULL, "ec", 0, sha, 0, &out, &n, NULL),
                   KYSO_INVALID_ARGUMENT);
  assert_int_equal(signer_sign_cms_digest(f->s, "ec", 0, sha, 0, NULL, &n, NULL),
                   KYSO_INVALID_ARGUMENT);
  assert_int_equal(signer_make_csr(f->s, "ec", "/CN=a/", &out, &n, NULL), KYSO_INVALID_ARGUMENT);
  assert_int_equal(signer_make_csr(f->s, "missing", "/CN=a", &out, &n, NULL), KYSO_NOT_FOUND);
}

/* signing_time lands in the signingTime attribute (test_flows has given
 * "ec" its certificate). */
static void test_signing_time(void **state) {
  fixture *f = *state;
  uint8_t *out = NULL;
  size_t n = 0;
  kyso_err err = {0};
  time_t when = 1700000000; /* 2023-11-14T22:13:20Z */
  assert_int_equal(signer_sign_cms(f->s, "ec", 0, (const uint8_t *)"x", 1, when, &out, &n, &err),
                   KYSO_OK);
  const unsigned char *p = out;
  CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &p, (long)n);
  CMS_SignerInfo *si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
  /* content-type, signing-time, message-digest, signing-certificate-v2 */
  assert_int_equal(CMS_signed_get_attr_count(si), 4);
  int idx = CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1);
  assert_true(idx >= 0);
  ASN1_TYPE *t = X509_ATTRIBUTE_get0_type(CMS_signed_get_attr(si, idx), 0);
  int day = 0, sec = 0;
  ASN1_TIME *want = ASN1_TIME_set(NULL, when);
  assert_int_equal(ASN1_TIME_diff(&day, &sec, want, t->value.utctime), 1);
  assert_int_equal(day, 0);
  assert_int_equal(sec, 0);
  assert_true(CMS_signed_get_attr_by_NID(si, NID_id_smime_aa_signingCertificateV2, -1) >= 0);
  ASN1_TIME_free(want);
  CMS_ContentInfo_free(cms);
  OPENSSL_free(out);
}

/* What the digest path is for: a 100 MiB document, written and hashed one
 * 1 MiB chunk at a time, signed from its SHA-256 and checked by openssl
 * against the file; the signer never sees the bytes. */
static void test_large_document_by_digest(void **state) {
  fixture *f = *state;
  enum { CHUNK = 1 << 20, CHUNKS = 100 };
  char path[600];
  uint8_t *chunk = malloc(CHUNK), sha[32], *sig = NULL;
  size_t sig_len = 0;
  unsigned int n = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  kyso_err err = {0};
  snprintf(path, sizeof(path), "%s/large.bin", f->dir);
  FILE *out = fopen(path, "wb");
  assert_non_null(chunk);
  assert_non_null(out);
  assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
  for (int c = 0; c < CHUNKS; c++) {
    for (size_t i = 0; i < CHUNK; i++) chunk[i] = (uint8_t)((i * 31u) ^ (size_t)c ^ (i >> 13));
    assert_int_equal(EVP_DigestUpdate(md, chunk, CHUNK), 1);
    assert_int_equal(fwrite(chunk, 1, CHUNK, out), CHUNK);
  }
  assert_int_equal(fclose(out), 0);
  assert_int_equal(EVP_DigestFinal_ex(md, sha, &n), 1);
  kyso_status st = signer_sign_cms_digest(f->s, "rsa", SIGNER_RSA_PSS, sha, 0, &sig, &sig_len,
                                          &err);
  if (st != KYSO_OK) fail_msg("sign_cms_digest: %s: %s", kyso_strerror(st), err.msg);
  if (tu_openssl_cms_verify_file(f->pki, sig, sig_len, path) != 0)
    fail_msg("openssl cms -verify rejects the signature of the 100 MiB document");
  /* One byte changed near the end: openssl notices. */
  out = fopen(path, "r+b");
  assert_non_null(out);
  assert_int_equal(fseek(out, (long)CHUNK * CHUNKS - 10, SEEK_SET), 0);
  assert_int_equal(fputc(0x55 ^ chunk[CHUNK - 10], out), 0x55 ^ chunk[CHUNK - 10]);
  assert_int_equal(fclose(out), 0);
  if (tu_openssl_cms_verify_file(f->pki, sig, sig_len, path) == 0)
    fail_msg("openssl cms -verify accepts a changed 100 MiB document");
  remove(path);
  OPENSSL_free(sig);
  EVP_MD_CTX_free(md);
  free(chunk);
}

/* Certificates handed out outlive the signer that handed them out: nothing
 * in them points into its library context once it is gone. */
static void test_certificate_outlives_signer(void **state) {
  fixture *f = *state;
  signer *s2 = NULL;
  X509 *cert = NULL;
  STACK_OF(X509) *chain = NULL;
  EVP_PKEY *k = NULL, *pub = NULL;
  uint8_t *sig = NULL;
  size_t n = 0;
  assert_int_equal(signer_open(f->h, f->certs, &s2, NULL), KYSO_OK);
  assert_int_equal(signer_certificate(s2, "rsa", &cert, &chain, NULL), KYSO_OK);
  assert_int_equal(signer_sign_cms(s2, "rsa", 0, (const uint8_t *)"x", 1, 0, &sig, &n, NULL),
                   KYSO_OK);
  assert_int_equal(signer_private_key(s2, "rsa", &k, NULL), KYSO_OK);
  assert_int_equal(X509_check_private_key(cert, k), 1);
  EVP_PKEY_free(k); /* keys must go before their signer */
  signer_close(s2);
  assert_int_equal(hsm_public_key(f->h, "rsa", &pub, NULL), KYSO_OK);
  assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(cert), pub), 1);
  EVP_PKEY_free(pub);
  X509_free(cert);
  sk_X509_pop_free(chain, X509_free);
  OPENSSL_free(sig);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_key_objects),
      cmocka_unit_test(test_digest_sign),
      cmocka_unit_test(test_sign_digest_input),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_flows),
      cmocka_unit_test(test_hsm_failure_status),
      cmocka_unit_test(test_sign_refusals),
      cmocka_unit_test(test_signing_time),
      cmocka_unit_test(test_large_document_by_digest),
      cmocka_unit_test(test_certificate_outlives_signer),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
