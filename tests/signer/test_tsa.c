/* kyso tests — the RFC 3161 responder over an in-memory HSM: tokens that
 * `openssl ts -verify` accepts (EC and RSA TSA keys), the caller's serial and
 * genTime in them, bad requests answered with rejections, TSA certificates
 * without the timeStamping EKU refused, an HSM failure reported as such. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ts.h>

#include "fake_fixture.h"
#include "fake_hsm.h"
#include "flow.h"
#include "signer_internal.h"
#include "testutil.h"

#define POLICY "1.3.6.1.4.1.99999.1.1"
#define OTHER_POLICY "1.3.6.1.4.1.99999.1.2"

typedef fake_fixture fixture;

static int setup(void **state) {
  static const fake_key keys[] = {{"tsa-ec", HSM_KEY_EC_P256}, {"tsa-rsa", HSM_KEY_RSA_2048},
                                  {"plain", HSM_KEY_EC_P256}, {"nocert", HSM_KEY_EC_P256}};
  fixture *f = fake_fixture_new("signer-tsa", keys, sizeof(keys) / sizeof(keys[0]));
  *state = f;
  return f != NULL ? 0 : -1;
}

static int teardown(void **state) {
  fake_fixture_free(*state);
  return 0;
}

/* CSR for label → certificate of profile from the sub-CA → imported with
 * the chain. Also writes DIR/<label>-untrusted.pem: the certificate, then
 * the sub-CA, for `openssl ts -verify -untrusted`. */
static void certify(fixture *f, const char *label, const char *profile) {
  uint8_t *csr = NULL;
  size_t csr_len = 0;
  kyso_err err = {0};
  if (signer_make_csr(f->s, label, FLOW_SUBJECT, &csr, &csr_len, &err) != KYSO_OK)
    fail_msg("make_csr(%s): %s", label, err.msg);
  X509 *cert = tu_pki_issue(f->pki, csr, csr_len, profile);
  OPENSSL_free(csr);
  if (cert == NULL) fail_msg("pki.sh issue %s failed for %s", profile, label);
  STACK_OF(X509) *chain = tu_pki_chain(f->pki);
  assert_non_null(chain);
  if (signer_import_certificate(f->s, label, cert, chain, &err) != KYSO_OK)
    fail_msg("import(%s): %s", label, err.msg);
  char path[600];
  snprintf(path, sizeof(path), "%s/%s-untrusted.pem", f->dir, label);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
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

/* Responds to the request in file q and writes the response to file r. */
static void respond_file(signer_tsa *t, const char *q, const char *r, uint64_t serial,
                         time_t when, unsigned ms) {
  size_t req_len = 0, resp_len = 0;
  uint8_t *req = tu_read(q, &req_len), *resp = NULL;
  kyso_err err = {0};
  assert_non_null(req);
  kyso_status st = signer_tsa_respond(t, req, req_len, serial, when, ms, &resp, &resp_len, &err);
  if (st != KYSO_OK) fail_msg("signer_tsa_respond: %s: %s", kyso_strerror(st), err.msg);
  assert_true(tu_write(r, resp, resp_len));
  OPENSSL_free(resp);
  free(req);
}

static int file_contains(const char *path, const char *want) {
  size_t n = 0;
  uint8_t *buf = tu_read(path, &n);
  if (buf == NULL) return 0;
  char *s = malloc(n + 1);
  memcpy(s, buf, n);
  s[n] = '\0';
  int ok = strstr(s, want) != NULL;
  free(s);
  free(buf);
  return ok;
}

/* A token per key type: verified by openssl against the test root, with
 * the caller's serial, genTime (milliseconds), policy and accuracy; the
 * same response over changed data fails. */
static void test_stamp_verifies(void **state) {
  fixture *f = *state;
  static const char *labels[] = {"tsa-ec", "tsa-rsa"};
  static const char text[] = "Quyết định số 42/QĐ-UBND, bản gốc.\n";
  char data[600], bad[600], q[600], r[600], txt[600], want[128];
  snprintf(data, sizeof(data), "%s/data.txt", f->dir);
  snprintf(bad, sizeof(bad), "%s/data-bad.txt", f->dir);
  assert_true(tu_write(data, text, sizeof(text) - 1));
  assert_true(tu_write(bad, "Quyết định số 43", strlen("Quyết định số 43")));
  for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
    const char *label = labels[i];
    certify(f, label, "tsa");
    signer_tsa *t = open_tsa(f, label);
    snprintf(q, sizeof(q), "%s/%s.tsq", f->dir, label);
    snprintf(r, sizeof(r), "%s/%s.tsr", f->dir, label);
    snprintf(txt, sizeof(txt), "%s/%s.txt", f->dir, label);
    assert_int_equal(tu_run("openssl ts -query -sha256 -cert -data '%s' -out '%s' 2>/dev/null",
                            data, q), 0);
    time_t now = time(NULL);
    uint64_t serial = 0x0123456789abcdefULL + i;
    respond_file(t, q, r, serial, now, 123);
    if (tu_run("openssl ts -verify -in '%s' -data '%s' -CAfile '%s/root.pem' -untrusted "
               "'%s/%s-untrusted.pem' >/dev/null 2>&1",
               r, data, f->pki, f->dir, label) != 0)
      fail_msg("%s: openssl ts -verify rejects the token", label);
    if (tu_run("openssl ts -verify -in '%s' -data '%s' -CAfile '%s/root.pem' -untrusted "
               "'%s/%s-untrusted.pem' >/dev/null 2>&1",
               r, bad, f->pki, f->dir, label) == 0)
      fail_msg("%s: openssl ts -verify accepts the token over changed data", label);
    assert_int_equal(tu_run("openssl ts -reply -in '%s' -text > '%s' 2>/dev/null", r, txt), 0);
    char when[64];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%b %e %H:%M:%S.123 %Y GMT", &tm);
    const char *wants[] = {"Status: Granted.", "Policy OID: " POLICY, "Accuracy: 0x01 seconds",
                           want, when};
    snprintf(want, sizeof(want), "Serial number: 0x%016llX", (unsigned long long)serial);
    for (size_t k = 0; k < sizeof(wants) / sizeof(wants[0]); k++)
      if (!file_contains(txt, wants[k]))
        fail_msg("%s: `openssl ts -reply -text` lacks \"%s\" (see %s with KYSO_TEST_KEEP=1)",
                 label, wants[k], txt);
    signer_tsa_close(t);
  }
}

/* The status and failure info of a DER TimeStampResp; -1 if it does not
 * parse. *bit_set says whether failure bit `bit` is set. */
static long resp_status(const uint8_t *der, size_t len, int bit, int *bit_set, int *has_token) {
  const unsigned char *p = der;
  TS_RESP *r = d2i_TS_RESP(NULL, &p, (long)len);
  if (r == NULL) return -1;
  TS_STATUS_INFO *si = TS_RESP_get_status_info(r);
  long status = ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(si));
  const ASN1_BIT_STRING *fi = TS_STATUS_INFO_get0_failure_info(si);
  *bit_set = fi != NULL && ASN1_BIT_STRING_get_bit(fi, bit);
  *has_token = TS_RESP_get_token(r) != NULL;
  TS_RESP_free(r);
  return status;
}

/* Bad requests are answered, with status rejection and the failure bit. */
static void test_rejections(void **state) {
  fixture *f = *state;
  certify(f, "tsa-ec", "tsa");
  signer_tsa *t = open_tsa(f, "tsa-ec");
  char data[600], q[600];
  snprintf(data, sizeof(data), "%s/data.txt", f->dir);
  snprintf(q, sizeof(q), "%s/rej.tsq", f->dir);
  assert_true(tu_write(data, "x", 1));
  static const struct {
    const char *name;
    const char *query; /* openssl ts -query options, or NULL: raw bytes */
    const char *raw;
    size_t raw_len;
    int bit;
  } cases[] = {
      {"SHA-1 imprint (SHA-256/384/512 accepted)", "-sha1", NULL, 0, TS_INFO_BAD_ALG},
      {"MD5 imprint", "-md5", NULL, 0, TS_INFO_BAD_ALG},
      {"another policy", "-sha256 -tspolicy " OTHER_POLICY, NULL, 0, TS_INFO_UNACCEPTED_POLICY},
      {"garbage bytes", NULL, "\x30\x82\xff\xffgarbage", 11, TS_INFO_BAD_DATA_FORMAT},
      {"not DER at all", NULL, "hello, TSA", 10, TS_INFO_BAD_DATA_FORMAT},
      {"empty request", NULL, "", 0, TS_INFO_BAD_DATA_FORMAT},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint8_t *req = NULL, *resp = NULL;
    size_t req_len = 0, resp_len = 0;
    if (cases[i].query != NULL) {
      assert_int_equal(tu_run("openssl ts -query %s -data '%s' -out '%s' 2>/dev/null",
                              cases[i].query, data, q), 0);
      req = tu_read(q, &req_len);
      assert_non_null(req);
    }
    const uint8_t *in = req != NULL ? req : (const uint8_t *)cases[i].raw;
    if (req == NULL) req_len = cases[i].raw_len;
    kyso_err err = {0};
    kyso_status st = signer_tsa_respond(t, in, req_len, 7, time(NULL), 0, &resp, &resp_len, &err);
    if (st != KYSO_OK) fail_msg("%s: got %s (%s), want OK", cases[i].name, kyso_strerror(st), err.msg);
    int bit = 0, token = 1;
    long status = resp_status(resp, resp_len, cases[i].bit, &bit, &token);
    if (status != TS_STATUS_REJECTION || !bit || token)
      fail_msg("%s: got status %ld, failure bit %d %s, token %d; want rejection (%d) with it set, "
               "no token",
               cases[i].name, status, cases[i].bit, bit ? "set" : "clear", token,
               TS_STATUS_REJECTION);
    OPENSSL_free(resp);
    free(req);
  }
  signer_tsa_close(t);
}

/* RFC 3161 2.3: only a certificate with a critical EKU of exactly
 * timeStamping may sign tokens. Also: no certificate, a bad policy. */
static void test_open_refusals(void **state) {
  fixture *f = *state;
  certify(f, "plain", "signer");
  signer_tsa *t = (signer_tsa *)1;
  kyso_err err = {0};
  kyso_status st = signer_tsa_open(f->s, "plain", POLICY, &t, &err);
  if (st != KYSO_FAILED_PRECONDITION || t != NULL || strstr(err.msg, "timeStamping") == NULL ||
      strstr(err.msg, "CN=") == NULL)
    fail_msg("signer profile: got %s (%s), want FAILED_PRECONDITION naming the certificate",
             kyso_strerror(st), err.msg);
  st = signer_tsa_open(f->s, "nocert", POLICY, &t, &err);
  if (st != KYSO_FAILED_PRECONDITION)
    fail_msg("no certificate: got %s (%s), want FAILED_PRECONDITION", kyso_strerror(st), err.msg);
  st = signer_tsa_open(f->s, "missing", POLICY, &t, &err);
  if (st != KYSO_NOT_FOUND)
    fail_msg("no key: got %s (%s), want NOT_FOUND", kyso_strerror(st), err.msg);
  certify(f, "tsa-ec", "tsa");
  st = signer_tsa_open(f->s, "tsa-ec", "not an oid", &t, &err);
  if (st != KYSO_INVALID_ARGUMENT)
    fail_msg("bad policy: got %s (%s), want INVALID_ARGUMENT", kyso_strerror(st), err.msg);
  signer_tsa_close(NULL);
}

/* An HSM failure is the caller's error, not a response to the client. */
static void test_hsm_failure(void **state) {
  fixture *f = *state;
  certify(f, "tsa-ec", "tsa");
  signer_tsa *t = open_tsa(f, "tsa-ec");
  char data[600], q[600];
  snprintf(data, sizeof(data), "%s/data.txt", f->dir);
  snprintf(q, sizeof(q), "%s/hsm.tsq", f->dir);
  assert_true(tu_write(data, "x", 1));
  assert_int_equal(tu_run("openssl ts -query -sha256 -data '%s' -out '%s' 2>/dev/null", data, q),
                   0);
  size_t req_len = 0, resp_len = 0;
  uint8_t *req = tu_read(q, &req_len), *resp = NULL;
  kyso_err err = {0};
  fake_hsm_fail_signs(f->h, KYSO_UNAVAILABLE, 1);
  kyso_status st = signer_tsa_respond(t, req, req_len, 1, time(NULL), 0, &resp, &resp_len, &err);
  if (st != KYSO_UNAVAILABLE || resp != NULL)
    fail_msg("failing HSM: got %s (%s), want UNAVAILABLE and no response", kyso_strerror(st),
             err.msg);
  /* And the next one works again. */
  st = signer_tsa_respond(t, req, req_len, 2, time(NULL), 0, &resp, &resp_len, &err);
  if (st != KYSO_OK) fail_msg("after the failure: %s: %s", kyso_strerror(st), err.msg);
  OPENSSL_free(resp);
  free(req);
  signer_tsa_close(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stamp_verifies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rejections, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_refusals, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hsm_failure, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
