/* kyso tests — CAdES-T over an in-memory HSM: the signature-time-stamp
 * attribute added to a signature (openssl still verifies the signature,
 * and the token it carries over the signature value), and
 * signer_verify_cms_full: tokens checked against the signature value and
 * the trust store, REQUIRE_TIMESTAMP, and the point of it all, a signer
 * certificate that has expired by now but was valid at genTime. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ts.h>

#include "fake_fixture.h"
#include "fake_hsm.h"
#include "flow.h"
#include "testutil.h"

#define POLICY "1.3.6.1.4.1.99999.1.1"
#define TST_INFO_OID "1.2.840.113549.1.9.16.1.4"
#define SIG_TS_OID "1.2.840.113549.1.9.16.2.14"
#define DAY 86400

typedef fake_fixture fixture;

static const char doc[] = "Quyết định số 7/QĐ-UBND về việc phê duyệt kế hoạch năm 2025.\n";
#define DOC ((const uint8_t *)doc)
#define DOC_LEN (sizeof(doc) - 1)

static int setup(void **state) {
  static const fake_key keys[] = {{"signer", HSM_KEY_EC_P256}, {"signer-rsa", HSM_KEY_RSA_2048},
                                  {"tsa", HSM_KEY_EC_P256},    {"short", HSM_KEY_EC_P256},
                                  {"tsa2", HSM_KEY_EC_P256}};
  fixture *f = fake_fixture_new("signer-cades-t", keys, sizeof(keys) / sizeof(keys[0]));
  *state = f;
  return f != NULL ? 0 : -1;
}

static int teardown(void **state) {
  fake_fixture_free(*state);
  return 0;
}

/* CSR for label → certificate of profile, valid for days, from pki's
 * sub-CA → imported with that chain. Also writes DIR/<label>-untrusted.pem
 * (the certificate, then the sub-CA) for `openssl ts -verify -untrusted`. */
static void certify(fixture *f, const char *pki, const char *label, const char *profile,
                    int days) {
  uint8_t *csr = NULL;
  size_t csr_len = 0;
  kyso_err err = {0};
  char csr_path[600], cert_path[600], untrusted[600];
  if (signer_make_csr(f->s, label, FLOW_SUBJECT, &csr, &csr_len, &err) != KYSO_OK)
    fail_msg("make_csr(%s): %s", label, err.msg);
  snprintf(csr_path, sizeof(csr_path), "%s/%s.csr", f->dir, label);
  snprintf(cert_path, sizeof(cert_path), "%s/%s.pem", f->dir, label);
  assert_true(tu_write(csr_path, csr, csr_len));
  OPENSSL_free(csr);
  if (tu_run("'%s/pki.sh' issue '%s' '%s' '%s' %s %d >/dev/null 2>&1", KYSO_FIXTURES, pki,
             csr_path, cert_path, profile, days) != 0)
    fail_msg("pki.sh issue %s %d failed for %s", profile, days, label);
  FILE *fp = fopen(cert_path, "r");
  assert_non_null(fp);
  X509 *cert = PEM_read_X509(fp, NULL, NULL, NULL);
  fclose(fp);
  assert_non_null(cert);
  STACK_OF(X509) *chain = tu_pki_chain(pki);
  assert_non_null(chain);
  if (signer_import_certificate(f->s, label, cert, chain, &err) != KYSO_OK)
    fail_msg("import(%s): %s", label, err.msg);
  snprintf(untrusted, sizeof(untrusted), "%s/%s-untrusted.pem", f->dir, label);
  assert_non_null(fp = fopen(untrusted, "w"));
  assert_int_equal(PEM_write_X509(fp, cert), 1);
  assert_int_equal(PEM_write_X509(fp, sk_X509_value(chain, 0)), 1);
  fclose(fp);
  X509_free(cert);
  sk_X509_pop_free(chain, X509_free);
}

static signer_tsa *open_tsa(fixture *f, const char *label) {
  signer_tsa *t = NULL;
  kyso_err err = {0};
  kyso_status st = signer_tsa_open(f->s, label, POLICY, &t, &err);
  if (st != KYSO_OK) fail_msg("signer_tsa_open(%s): %s: %s", label, kyso_strerror(st), err.msg);
  return t;
}

static uint8_t *sign(fixture *f, const char *label, signer_rsa_scheme scheme, const uint8_t *d,
                     size_t d_len, time_t signing_time, size_t *len) {
  uint8_t *der = NULL;
  kyso_err err = {0};
  kyso_status st = signer_sign_cms(f->s, label, scheme, d, d_len, signing_time, &der, len, &err);
  if (st != KYSO_OK) fail_msg("sign_cms(%s): %s: %s", label, kyso_strerror(st), err.msg);
  return der;
}

/* The signature value of cms (malloc()ed), through the function under test. */
static uint8_t *value_of(const uint8_t *cms, size_t cms_len, size_t *len) {
  uint8_t *v = NULL;
  kyso_err err = {0};
  kyso_status st = signer_cms_signature_value(cms, cms_len, &v, len, &err);
  if (st != KYSO_OK) fail_msg("signature_value: %s: %s", kyso_strerror(st), err.msg);
  return v;
}

/* A token from t over the SHA-256 of cms's signature value, at when. */
static uint8_t *stamp(signer_tsa *t, const uint8_t *cms, size_t cms_len, time_t when,
                      size_t *len) {
  size_t v_len = 0;
  uint8_t *v = value_of(cms, cms_len, &v_len), digest[32], *tok = NULL;
  unsigned n = 0;
  kyso_err err = {0};
  assert_int_equal(EVP_Digest(v, v_len, digest, &n, EVP_sha256(), NULL), 1);
  kyso_status st = signer_tsa_stamp_digest(t, digest, 77, when, 250, &tok, len, &err);
  if (st != KYSO_OK) fail_msg("stamp_digest: %s: %s", kyso_strerror(st), err.msg);
  free(v);
  return tok;
}

static uint8_t *add(const uint8_t *cms, size_t cms_len, const uint8_t *tok, size_t tok_len,
                    size_t *len) {
  uint8_t *out = NULL;
  kyso_err err = {0};
  kyso_status st = signer_cms_add_timestamp(cms, cms_len, tok, tok_len, &out, len, &err);
  if (st != KYSO_OK) fail_msg("add_timestamp: %s: %s", kyso_strerror(st), err.msg);
  return out;
}

/* The DER of the first signature-time-stamp value in cms, read with
 * OpenSSL directly (malloc()ed); NULL if there is none. */
static uint8_t *token_in(const uint8_t *cms, size_t cms_len, size_t *len) {
  const unsigned char *p = cms;
  CMS_ContentInfo *ci = d2i_CMS_ContentInfo(NULL, &p, (long)cms_len);
  assert_non_null(ci);
  CMS_SignerInfo *si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(ci), 0);
  int at = CMS_unsigned_get_attr_by_NID(si, NID_id_smime_aa_timeStampToken, -1);
  uint8_t *out = NULL;
  if (at >= 0) {
    ASN1_TYPE *t = X509_ATTRIBUTE_get0_type(CMS_unsigned_get_attr(si, at), 0);
    assert_non_null(t);
    assert_int_equal(t->type, V_ASN1_SEQUENCE);
    *len = (size_t)t->value.sequence->length;
    out = malloc(*len);
    memcpy(out, t->value.sequence->data, *len);
  }
  CMS_ContentInfo_free(ci);
  return out;
}

/* The token of a DER TimeStampResp (OPENSSL_malloc()ed). */
static uint8_t *token_of_reply(const uint8_t *resp, size_t resp_len, size_t *len) {
  const unsigned char *p = resp;
  TS_RESP *r = d2i_TS_RESP(NULL, &p, (long)resp_len);
  assert_non_null(r);
  assert_non_null(TS_RESP_get_token(r));
  uint8_t *out = NULL;
  int n = i2d_PKCS7(TS_RESP_get_token(r), &out);
  assert_true(n > 0);
  *len = (size_t)n;
  TS_RESP_free(r);
  return out;
}

/* A token from t over cms's signature value hashed with md ("sha384" …),
 * asked for by `openssl ts -query`, as an external client would. */
static uint8_t *stamp_with(fixture *f, signer_tsa *t, const uint8_t *cms, size_t cms_len,
                           const char *md, size_t *len) {
  char vp[600], qp[600];
  size_t v_len = 0, q_len = 0, r_len = 0;
  uint8_t *v = value_of(cms, cms_len, &v_len), *q = NULL, *r = NULL;
  snprintf(vp, sizeof(vp), "%s/value-%s.bin", f->dir, md);
  snprintf(qp, sizeof(qp), "%s/value-%s.tsq", f->dir, md);
  assert_true(tu_write(vp, v, v_len));
  assert_int_equal(tu_run("openssl ts -query -%s -data '%s' -cert -no_nonce -out '%s' 2>/dev/null",
                          md, vp, qp),
                   0);
  assert_non_null(q = tu_read(qp, &q_len));
  kyso_err err = {0};
  kyso_status st = signer_tsa_respond(t, q, q_len, 5, time(NULL), 0, &r, &r_len, &err);
  if (st != KYSO_OK) fail_msg("respond(%s): %s: %s", md, kyso_strerror(st), err.msg);
  uint8_t *tok = token_of_reply(r, r_len, len);
  OPENSSL_free(r);
  free(q);
  free(v);
  return tok;
}

/* A token from `openssl ts -reply`, a TSA that is not kyso's, with the
 * fake HSM's software key of label and its certificate, over cms's
 * signature value hashed with md: kyso's responder refuses SHA-1, another
 * TSA may not. */
static uint8_t *cli_token(fixture *f, const char *label, const uint8_t *cms, size_t cms_len,
                          const char *md, size_t *len) {
  char key[600], conf[600], serial[600], vp[600], qp[600], tp[600];
  snprintf(key, sizeof(key), "%s/cli-tsa.key", f->dir);
  snprintf(conf, sizeof(conf), "%s/cli-tsa.cnf", f->dir);
  snprintf(serial, sizeof(serial), "%s/cli-tsa.serial", f->dir);
  snprintf(vp, sizeof(vp), "%s/cli-value.bin", f->dir);
  snprintf(qp, sizeof(qp), "%s/cli.tsq", f->dir);
  snprintf(tp, sizeof(tp), "%s/cli.tst", f->dir);
  FILE *fp = fopen(key, "w");
  assert_non_null(fp);
  assert_int_equal(PEM_write_PrivateKey(fp, fake_hsm_private(f->h, label), NULL, NULL, 0, NULL,
                                        NULL),
                   1);
  fclose(fp);
  assert_non_null(fp = fopen(conf, "w"));
  fprintf(fp,
          "[tsa]\ndefault_tsa = tsa1\n[tsa1]\nserial = %s\n"
          "signer_cert = %s/%s-untrusted.pem\ncerts = %s/%s-untrusted.pem\n"
          "signer_key = %s\nsigner_digest = sha256\ndefault_policy = " POLICY "\n"
          "digests = sha1, sha256\naccuracy = secs:1\ness_cert_id_alg = sha256\n",
          serial, f->dir, label, f->dir, label, key);
  fclose(fp);
  assert_true(tu_write(serial, "01\n", 3));
  size_t v_len = 0;
  uint8_t *v = value_of(cms, cms_len, &v_len);
  assert_true(tu_write(vp, v, v_len));
  free(v);
  if (tu_run("openssl ts -query -%s -data '%s' -cert -no_nonce -out '%s' 2>/dev/null && "
             "openssl ts -reply -config '%s' -queryfile '%s' -token_out -out '%s' 2>/dev/null",
             md, vp, qp, conf, qp, tp) != 0)
    fail_msg("openssl ts -reply failed (KYSO_TEST_KEEP=1 keeps %s)", conf);
  uint8_t *tok = tu_read(tp, len);
  assert_non_null(tok);
  return tok;
}

/* tok's TSTInfo signed again, by `openssl cms`, with the PKI's client
 * certificate (clientAuth, no timeStamping): the imprint is right, the
 * signer may not sign time-stamps. */
static uint8_t *foreign_token(fixture *f, const uint8_t *tok, size_t tok_len, size_t *len) {
  char tst_path[600], out[600];
  const unsigned char *p = tok;
  PKCS7 *p7 = d2i_PKCS7(NULL, &p, (long)tok_len);
  assert_non_null(p7);
  TS_TST_INFO *tst = PKCS7_to_TS_TST_INFO(p7);
  assert_non_null(tst);
  uint8_t *der = NULL;
  int n = i2d_TS_TST_INFO(tst, &der);
  assert_true(n > 0);
  snprintf(tst_path, sizeof(tst_path), "%s/tstinfo.der", f->dir);
  snprintf(out, sizeof(out), "%s/foreign.tst", f->dir);
  assert_true(tu_write(tst_path, der, (size_t)n));
  OPENSSL_free(der);
  TS_TST_INFO_free(tst);
  PKCS7_free(p7);
  if (tu_run("cd '%s' && openssl cms -sign -binary -nodetach -in '%s' -econtent_type " TST_INFO_OID
             " -signer client.pem -inkey client.key -certfile chain.pem -md sha256 -cades "
             "-nosmimecap -outform DER -out '%s' 2>/dev/null",
             f->pki, tst_path, out) != 0)
    fail_msg("openssl cms -sign of a TSTInfo failed");
  uint8_t *t = tu_read(out, len);
  assert_non_null(t);
  return t;
}

static X509 *imported(fixture *f, const char *label) {
  X509 *cert = NULL;
  kyso_err err = {0};
  assert_int_equal(signer_certificate(f->s, label, &cert, NULL, &err), KYSO_OK);
  return cert;
}

/* signer_cms_signature_value is the SignerInfo's signature as OpenSSL
 * reads it; what is not a SignedData is INVALID_ARGUMENT. */
static void test_signature_value(void **state) {
  fixture *f = *state;
  certify(f, f->pki, "signer", "signer", 365);
  certify(f, f->pki, "signer-rsa", "signer", 365);
  static const struct {
    const char *label;
    signer_rsa_scheme scheme;
    size_t want_len; /* 0: any */
  } cases[] = {{"signer", SIGNER_RSA_PKCS1, 0}, {"signer-rsa", SIGNER_RSA_PKCS1, 256}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t len = 0, v_len = 0;
    uint8_t *cms = sign(f, cases[i].label, cases[i].scheme, DOC, DOC_LEN, 0, &len);
    uint8_t *v = value_of(cms, len, &v_len);
    const unsigned char *p = cms;
    CMS_ContentInfo *ci = d2i_CMS_ContentInfo(NULL, &p, (long)len);
    assert_non_null(ci);
    ASN1_OCTET_STRING *want =
        CMS_SignerInfo_get0_signature(sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(ci), 0));
    if (v_len != (size_t)want->length || memcmp(v, want->data, v_len) != 0 ||
        (cases[i].want_len != 0 && v_len != cases[i].want_len))
      fail_msg("%s: got a %zu-byte value, want the SignerInfo's %d bytes", cases[i].label, v_len,
               want->length);
    CMS_ContentInfo_free(ci);
    free(v);
    OPENSSL_free(cms);
  }
  static const uint8_t junk[] = {0x30, 0x03, 0x02, 0x01, 0x01};
  uint8_t *v = (uint8_t *)1;
  size_t v_len = 1;
  kyso_err err = {0};
  kyso_status st = signer_cms_signature_value(junk, sizeof(junk), &v, &v_len, &err);
  if (st != KYSO_INVALID_ARGUMENT || v != NULL || v_len != 0)
    fail_msg("junk: got %s (%s), want INVALID_ARGUMENT", kyso_strerror(st), err.msg);
  st = signer_cms_signature_value(NULL, 0, &v, &v_len, &err);
  if (st != KYSO_INVALID_ARGUMENT)
    fail_msg("NULL: got %s (%s), want INVALID_ARGUMENT", kyso_strerror(st), err.msg);
  assert_int_equal(ERR_peek_error(), 0);
}

/* The attribute goes in as 1.2.840.113549.1.9.16.2.14 holding the token;
 * the signature still verifies (openssl cms, signer_verify_cms), the
 * signature value is unchanged, and openssl verifies the token against the
 * signature value. A second one is refused, and so is a non-token. */
static void test_add_timestamp(void **state) {
  fixture *f = *state;
  certify(f, f->pki, "signer", "signer", 365);
  certify(f, f->pki, "signer-rsa", "signer", 365);
  certify(f, f->pki, "tsa", "tsa", 365);
  signer_tsa *t = open_tsa(f, "tsa");
  X509_STORE *store = tu_pki_store(f->pki);
  static const struct {
    const char *label;
    signer_rsa_scheme scheme;
  } cases[] = {{"signer", SIGNER_RSA_PKCS1}, {"signer-rsa", SIGNER_RSA_PSS}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *label = cases[i].label;
    size_t len = 0, tok_len = 0, st_len = 0, v_len = 0, v2_len = 0, got_len = 0;
    uint8_t *cms = sign(f, label, cases[i].scheme, DOC, DOC_LEN, 0, &len);
    uint8_t *tok = stamp(t, cms, len, time(NULL), &tok_len);
    uint8_t *stamped = add(cms, len, tok, tok_len, &st_len);
    if (tu_openssl_cms_verify(f->pki, stamped, st_len, DOC, DOC_LEN) != 0)
      fail_msg("%s: openssl cms -verify rejects the time-stamped signature", label);
    kyso_err err = {0};
    kyso_status st = signer_verify_cms(store, stamped, st_len, DOC, DOC_LEN, NULL, &err);
    if (st != KYSO_OK) fail_msg("%s: signer_verify_cms: %s: %s", label, kyso_strerror(st), err.msg);
    uint8_t *v = value_of(cms, len, &v_len), *v2 = value_of(stamped, st_len, &v2_len);
    assert_true(v_len == v2_len && memcmp(v, v2, v_len) == 0);
    uint8_t *got = token_in(stamped, st_len, &got_len);
    assert_non_null(got);
    assert_true(got_len == tok_len && memcmp(got, tok, tok_len) == 0);
    assert_null(token_in(cms, len, &got_len));

    char sp[600], tp[600], vp[600], txt[600];
    snprintf(sp, sizeof(sp), "%s/%s-t.p7s", f->dir, label);
    snprintf(tp, sizeof(tp), "%s/%s.tst", f->dir, label);
    snprintf(vp, sizeof(vp), "%s/%s-value.bin", f->dir, label);
    snprintf(txt, sizeof(txt), "%s/%s-t.txt", f->dir, label);
    assert_true(tu_write(sp, stamped, st_len));
    assert_true(tu_write(tp, got, got_len));
    assert_true(tu_write(vp, v, v_len));
    if (tu_run("openssl ts -verify -token_in -in '%s' -data '%s' -CAfile '%s/root.pem' "
               "-untrusted '%s/tsa-untrusted.pem' >/dev/null 2>&1",
               tp, vp, f->pki, f->dir) != 0)
      fail_msg("%s: openssl ts -verify rejects the token over the signature value", label);
    if (tu_run("openssl ts -verify -token_in -in '%s' -data '%s' -CAfile '%s/root.pem' "
               "-untrusted '%s/tsa-untrusted.pem' >/dev/null 2>&1",
               tp, sp, f->pki, f->dir) == 0)
      fail_msg("%s: openssl ts -verify accepts the token over other data", label);
    assert_int_equal(tu_run("openssl cms -cmsout -print -inform DER -in '%s' > '%s' 2>/dev/null",
                            sp, txt),
                     0);
    assert_int_equal(tu_run("grep -q '" SIG_TS_OID "' '%s'", txt), 0);

    /* Once only; and only tokens. */
    uint8_t *again = (uint8_t *)1;
    size_t again_len = 1;
    st = signer_cms_add_timestamp(stamped, st_len, tok, tok_len, &again, &again_len, &err);
    if (st != KYSO_FAILED_PRECONDITION || again != NULL || again_len != 0)
      fail_msg("%s: second time-stamp: got %s (%s), want FAILED_PRECONDITION", label,
               kyso_strerror(st), err.msg);
    st = signer_cms_add_timestamp(cms, len, v, v_len, &again, &again_len, &err);
    if (st != KYSO_INVALID_ARGUMENT)
      fail_msg("%s: a non-token: got %s (%s), want INVALID_ARGUMENT", label, kyso_strerror(st),
               err.msg);
    assert_int_equal(ERR_peek_error(), 0);
    free(got);
    free(v);
    free(v2);
    OPENSSL_free(stamped);
    OPENSSL_free(tok);
    OPENSSL_free(cms);
  }
  X509_STORE_free(store);
  signer_tsa_close(t);
}

/* signer_verify_cms_full over good signatures: with a token (SHA-256 from
 * kyso's TSA, SHA-384/512 asked for by openssl) it is checked and
 * described; without one it is CAdES-BES and REQUIRE_TIMESTAMP fails it. */
static void test_verify_full(void **state) {
  fixture *f = *state;
  certify(f, f->pki, "signer", "signer", 365);
  certify(f, f->pki, "tsa", "tsa", 365);
  signer_tsa *t = open_tsa(f, "tsa");
  X509_STORE *store = tu_pki_store(f->pki);
  X509 *cert = imported(f, "signer");
  const time_t signed_at = 1700000000;
  size_t len = 0;
  uint8_t *cms = sign(f, "signer", SIGNER_RSA_PKCS1, DOC, DOC_LEN, signed_at, &len);
  time_t now = time(NULL);
  static const char *hashes[] = {"sha256", "sha384", "sha512"};
  static const char *names[] = {"SHA256", "SHA384", "SHA512"};
  for (size_t i = 0; i < 3; i++) {
    size_t tok_len = 0, st_len = 0;
    uint8_t *tok = i == 0 ? stamp(t, cms, len, now, &tok_len)
                          : stamp_with(f, t, cms, len, hashes[i], &tok_len);
    uint8_t *stamped = add(cms, len, tok, tok_len, &st_len);
    signer_verified v;
    kyso_err err = {0};
    kyso_status st = signer_verify_cms_full(store, stamped, st_len, DOC, DOC_LEN,
                                            SIGNER_VERIFY_REQUIRE_TIMESTAMP, &v, &err);
    if (st != KYSO_OK) fail_msg("%s token: %s: %s", hashes[i], kyso_strerror(st), err.msg);
    if (X509_cmp(v.signer, cert) != 0 || v.signing_time != signed_at || !v.timestamped ||
        strcmp(v.ts.hash, names[i]) != 0 || strcmp(v.ts.policy, POLICY) != 0 ||
        strcmp(v.ts.tsa, signer_tsa_name(t)) != 0 || !v.ts.has_token ||
        v.ts.gen_time < now - 5 || v.ts.gen_time > now + 60 ||
        strcmp(v.ts.serial, i == 0 ? "77" : "5") != 0)
      fail_msg("%s token: got signing_time %lld timestamped %d hash %s policy %s tsa '%s' "
               "genTime %s serial %s",
               hashes[i], (long long)v.signing_time, v.timestamped, v.ts.hash, v.ts.policy,
               v.ts.tsa, v.ts.gen_time_text, v.ts.serial);
    X509_free(v.signer);
    /* out is optional */
    assert_int_equal(signer_verify_cms_full(store, stamped, st_len, DOC, DOC_LEN, 0, NULL, NULL),
                     KYSO_OK);
    OPENSSL_free(stamped);
    OPENSSL_free(tok);
  }
  signer_verified v;
  kyso_err err = {0};
  kyso_status st = signer_verify_cms_full(store, cms, len, DOC, DOC_LEN, 0, &v, &err);
  if (st != KYSO_OK) fail_msg("no token: %s: %s", kyso_strerror(st), err.msg);
  assert_int_equal(v.timestamped, 0);
  assert_int_equal(v.ts.has_token, 0);
  assert_int_equal(v.signing_time, signed_at);
  assert_int_equal(X509_cmp(v.signer, cert), 0);
  X509_free(v.signer);
  st = signer_verify_cms_full(store, cms, len, DOC, DOC_LEN, SIGNER_VERIFY_REQUIRE_TIMESTAMP, &v,
                              &err);
  if (st != KYSO_FAILED_PRECONDITION || v.signer != NULL || strstr(err.msg, "required") == NULL)
    fail_msg("no token, required: got %s (%s), want FAILED_PRECONDITION", kyso_strerror(st),
             err.msg);
  X509_free(cert);
  OPENSSL_free(cms);
  X509_STORE_free(store);
  signer_tsa_close(t);
}

/* Tokens that must not pass, each FAILED_PRECONDITION naming the problem;
 * the store trusts any purpose, so the TSA check cannot lean on it. */
static void test_verify_full_bad_tokens(void **state) {
  fixture *f = *state;
  char pki2[600];
  snprintf(pki2, sizeof(pki2), "%s/pki2", f->dir);
  assert_true(tu_pki_init(pki2));
  certify(f, f->pki, "signer", "signer", 365);
  certify(f, f->pki, "tsa", "tsa", 365);
  certify(f, pki2, "tsa2", "tsa", 365); /* a TSA under a root the store does not hold */
  signer_tsa *t = open_tsa(f, "tsa"), *t2 = open_tsa(f, "tsa2");
  X509_STORE *store = tu_pki_store(f->pki);
  static const char other_doc[] = "một văn bản khác";
  size_t len = 0, len2 = 0;
  uint8_t *cms = sign(f, "signer", SIGNER_RSA_PKCS1, DOC, DOC_LEN, 0, &len);
  uint8_t *cms2 = sign(f, "signer", SIGNER_RSA_PKCS1, (const uint8_t *)other_doc,
                       sizeof(other_doc) - 1, 0, &len2);
  time_t now = time(NULL);
  size_t good_len = 0, other_len = 0, untrusted_len = 0, foreign_len = 0, sha1_len = 0;
  uint8_t *good = stamp(t, cms, len, now, &good_len);
  uint8_t *other = stamp(t, cms2, len2, now, &other_len); /* another signature's value */
  uint8_t *untrusted = stamp(t2, cms, len, now, &untrusted_len);
  uint8_t *foreign = foreign_token(f, good, good_len, &foreign_len);
  uint8_t *sha1 = cli_token(f, "tsa", cms, len, "sha1", &sha1_len);
  uint8_t *damaged = malloc(good_len);
  memcpy(damaged, good, good_len);
  damaged[good_len - 3] ^= 0x01; /* in the token's own signature, which ends its DER */
  /* The CLI TSA itself is fine: its SHA-256 token passes. */
  size_t cli_len = 0, cli_st_len = 0;
  uint8_t *cli = cli_token(f, "tsa", cms, len, "sha256", &cli_len);
  uint8_t *cli_stamped = add(cms, len, cli, cli_len, &cli_st_len);
  kyso_err err = {0};
  kyso_status st =
      signer_verify_cms_full(store, cli_stamped, cli_st_len, DOC, DOC_LEN, 0, NULL, &err);
  if (st != KYSO_OK) fail_msg("openssl TSA's SHA-256 token: %s: %s", kyso_strerror(st), err.msg);
  const struct {
    const char *name;
    const uint8_t *tok;
    size_t tok_len;
    const uint8_t *d;
    size_t d_len;
    const char *want_msg;
  } cases[] = {
      {"token over another signature value", other, other_len, DOC, DOC_LEN, "imprint"},
      {"TSA under another root", untrusted, untrusted_len, DOC, DOC_LEN, "not trusted"},
      {"token signed without timeStamping EKU", foreign, foreign_len, DOC, DOC_LEN,
       "for time-stamping"},
      {"SHA-1 token", sha1, sha1_len, DOC, DOC_LEN, "SHA1"},
      {"damaged token signature", damaged, good_len, DOC, DOC_LEN, "does not verify"},
      {"good token, wrong document", good, good_len, (const uint8_t *)other_doc,
       sizeof(other_doc) - 1, "message digest differs"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t st_len = 0;
    uint8_t *stamped = add(cms, len, cases[i].tok, cases[i].tok_len, &st_len);
    signer_verified v;
    memset(&v, 0xff, sizeof(v));
    st = signer_verify_cms_full(store, stamped, st_len, cases[i].d, cases[i].d_len, 0, &v, &err);
    if (st != KYSO_FAILED_PRECONDITION || v.signer != NULL || v.timestamped ||
        strstr(err.msg, cases[i].want_msg) == NULL)
      fail_msg("%s: got %s (%s), want FAILED_PRECONDITION mentioning \"%s\"", cases[i].name,
               kyso_strerror(st), err.msg, cases[i].want_msg);
    print_message("%-40s %.240s\n", cases[i].name, err.msg);
    assert_int_equal(ERR_peek_error(), 0);
    OPENSSL_free(stamped);
  }
  OPENSSL_free(cli_stamped);
  free(cli);
  free(damaged);
  free(sha1);
  free(foreign);
  OPENSSL_free(untrusted);
  OPENSSL_free(other);
  OPENSSL_free(good);
  OPENSSL_free(cms2);
  OPENSSL_free(cms);
  X509_STORE_free(store);
  signer_tsa_close(t2);
  signer_tsa_close(t);
}

/* A signer certificate valid for one day. pki.sh (openssl x509 -req) cannot
 * backdate one, so "now" is moved instead: the store's verification time
 * is set three days ahead, past the certificate's notAfter, while the token
 * carries the real genTime, inside its validity. The TSA's certificate
 * (a year) is valid at both. Time-stamped, the signature verifies there;
 * without the token, or with signer_verify_cms (which ignores tokens), it
 * does not; and a token whose genTime is past notAfter does not save it. */
static void test_expired_signer(void **state) {
  fixture *f = *state;
  certify(f, f->pki, "short", "signer", 1);
  certify(f, f->pki, "tsa", "tsa", 365);
  signer_tsa *t = open_tsa(f, "tsa");
  X509_STORE *today = tu_pki_store(f->pki), *later = tu_pki_store(f->pki);
  time_t now = time(NULL);
  X509_VERIFY_PARAM_set_time(X509_STORE_get0_param(later), now + 3 * DAY);
  size_t len = 0, tok_len = 0, st_len = 0, late_len = 0, late_st_len = 0;
  uint8_t *cms = sign(f, "short", SIGNER_RSA_PKCS1, DOC, DOC_LEN, 0, &len);
  uint8_t *tok = stamp(t, cms, len, now, &tok_len);
  uint8_t *stamped = add(cms, len, tok, tok_len, &st_len);
  uint8_t *late = stamp(t, cms, len, now + 2 * DAY, &late_len);
  uint8_t *late_stamped = add(cms, len, late, late_len, &late_st_len);

  signer_verified v;
  kyso_err err = {0};
  kyso_status st = signer_verify_cms_full(later, stamped, st_len, DOC, DOC_LEN,
                                          SIGNER_VERIFY_REQUIRE_TIMESTAMP, &v, &err);
  if (st != KYSO_OK || !v.timestamped || v.ts.gen_time != now)
    fail_msg("time-stamped, expired now: got %s (%s), want OK at genTime", kyso_strerror(st),
             err.msg);
  X509_free(v.signer);
  const struct {
    const char *name;
    X509_STORE *store;
    const uint8_t *sig;
    size_t sig_len;
    int full; /* signer_verify_cms_full, else signer_verify_cms */
    kyso_status want;
  } cases[] = {
      {"today, time-stamped", today, stamped, st_len, 1, KYSO_OK},
      {"today, no token", today, cms, len, 1, KYSO_OK},
      {"today, signer_verify_cms", today, stamped, st_len, 0, KYSO_OK},
      {"expired, no token", later, cms, len, 1, KYSO_FAILED_PRECONDITION},
      {"expired, signer_verify_cms ignores the token", later, stamped, st_len, 0,
       KYSO_FAILED_PRECONDITION},
      {"expired, token after notAfter", later, late_stamped, late_st_len, 1,
       KYSO_FAILED_PRECONDITION},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    X509 *who = NULL;
    st = cases[i].full ? signer_verify_cms_full(cases[i].store, cases[i].sig, cases[i].sig_len,
                                                DOC, DOC_LEN, 0, &v, &err)
                       : signer_verify_cms(cases[i].store, cases[i].sig, cases[i].sig_len, DOC,
                                           DOC_LEN, &who, &err);
    if (st != cases[i].want ||
        (st != KYSO_OK && strstr(err.msg, "certificate has expired") == NULL))
      fail_msg("%s: got %s (%s), want %s", cases[i].name, kyso_strerror(st), err.msg,
               kyso_strerror(cases[i].want));
    if (st != KYSO_OK) print_message("%-45s %.240s\n", cases[i].name, err.msg);
    if (st == KYSO_OK && cases[i].full) X509_free(v.signer);
    X509_free(who);
  }
  OPENSSL_free(late_stamped);
  OPENSSL_free(late);
  OPENSSL_free(stamped);
  OPENSSL_free(tok);
  OPENSSL_free(cms);
  X509_STORE_free(today);
  X509_STORE_free(later);
  signer_tsa_close(t);
}

/* The stamp signer_sign_cades_t calls: a token from the TSA over the
 * signature value it is given, or the error it is told to give. */
typedef struct one_pass {
  signer_tsa *t;
  kyso_status fail; /* KYSO_OK: issue a token */
  size_t value_len; /* what it was handed */
} one_pass;

static kyso_status one_pass_stamp(void *arg, const uint8_t *value, size_t len, uint8_t **token,
                                  size_t *token_len, kyso_err *err) {
  one_pass *p = arg;
  uint8_t digest[32];
  unsigned n = 0;
  p->value_len = len;
  if (p->fail != KYSO_OK) return kyso_fail(err, p->fail, "the TSA's clock is behind");
  if (EVP_Digest(value, len, digest, &n, EVP_sha256(), NULL) != 1)
    return kyso_fail(err, KYSO_INTERNAL, "digest");
  return signer_tsa_stamp_digest(p->t, digest, 78, time(NULL), 500, token, token_len, err);
}

/* signer_sign_cades_t, over the document and over its digest: openssl
 * accepts the signature and the token over its signature value; the token
 * is the one attribute; a failing stamp's status comes back, with no output. */
static void test_sign_cades_t_one_pass(void **state) {
  fixture *f = *state;
  certify(f, f->pki, "signer", "signer", 365);
  certify(f, f->pki, "tsa", "tsa", 365);
  one_pass p = {.t = open_tsa(f, "tsa")};
  uint8_t sha[32];
  unsigned n = 0;
  assert_int_equal(EVP_Digest(DOC, DOC_LEN, sha, &n, EVP_sha256(), NULL), 1);
  for (int by_digest = 0; by_digest < 2; by_digest++) {
    uint8_t *cms = NULL, *got = NULL, *v = NULL;
    size_t len = 0, got_len = 0, v_len = 0;
    kyso_err err = {0};
    p.value_len = 0;
    kyso_status st = signer_sign_cades_t(f->s, "signer", SIGNER_RSA_PKCS1,
                                         by_digest ? NULL : DOC, by_digest ? 0 : DOC_LEN,
                                         by_digest ? sha : NULL, 0, one_pass_stamp, &p, &cms,
                                         &len, &err);
    if (st != KYSO_OK) fail_msg("sign_cades_t(by_digest %d): %s: %s", by_digest,
                                kyso_strerror(st), err.msg);
    if (tu_openssl_cms_verify(f->pki, cms, len, DOC, DOC_LEN) != 0)
      fail_msg("by_digest %d: openssl cms -verify rejects the one-pass CAdES-T", by_digest);
    v = value_of(cms, len, &v_len);
    assert_int_equal(v_len, p.value_len);
    assert_non_null(got = token_in(cms, len, &got_len));
    char tp[600], vp[600];
    snprintf(tp, sizeof(tp), "%s/one-pass-%d.tst", f->dir, by_digest);
    snprintf(vp, sizeof(vp), "%s/one-pass-%d.value", f->dir, by_digest);
    assert_true(tu_write(tp, got, got_len));
    assert_true(tu_write(vp, v, v_len));
    if (tu_run("openssl ts -verify -token_in -in '%s' -data '%s' -CAfile '%s/root.pem' "
               "-untrusted '%s/tsa-untrusted.pem' >/dev/null 2>&1",
               tp, vp, f->pki, f->dir) != 0)
      fail_msg("by_digest %d: openssl ts -verify rejects the token over the signature value",
               by_digest);
    free(got);
    free(v);
    OPENSSL_free(cms);
  }
  /* A stamp that fails: its status, nothing returned. */
  uint8_t *cms = (uint8_t *)1;
  size_t len = 1;
  kyso_err err = {0};
  p.fail = KYSO_UNAVAILABLE;
  kyso_status st = signer_sign_cades_t(f->s, "signer", SIGNER_RSA_PKCS1, DOC, DOC_LEN, NULL, 0,
                                       one_pass_stamp, &p, &cms, &len, &err);
  assert_int_equal(st, KYSO_UNAVAILABLE);
  assert_null(cms);
  assert_int_equal(len, 0);
  assert_non_null(strstr(err.msg, "clock is behind"));
  /* Both the document and its digest, or neither, or no stamp: refused. */
  st = signer_sign_cades_t(f->s, "signer", SIGNER_RSA_PKCS1, DOC, DOC_LEN, sha, 0,
                           one_pass_stamp, &p, &cms, &len, &err);
  assert_int_equal(st, KYSO_INVALID_ARGUMENT);
  st = signer_sign_cades_t(f->s, "signer", SIGNER_RSA_PKCS1, NULL, 0, NULL, 0, one_pass_stamp, &p,
                           &cms, &len, &err);
  assert_int_equal(st, KYSO_INVALID_ARGUMENT);
  st = signer_sign_cades_t(f->s, "signer", SIGNER_RSA_PKCS1, DOC, DOC_LEN, NULL, 0, NULL, NULL,
                           &cms, &len, &err);
  assert_int_equal(st, KYSO_INVALID_ARGUMENT);
  signer_tsa_close(p.t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_signature_value, setup, teardown),
      cmocka_unit_test_setup_teardown(test_add_timestamp, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verify_full, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verify_full_bad_tokens, setup, teardown),
      cmocka_unit_test_setup_teardown(test_expired_signer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sign_cades_t_one_pass, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
