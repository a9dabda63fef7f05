/* kyso tests — the RFC 3161 responder over an in-memory HSM: tokens that
 * `openssl ts -verify` accepts (EC and RSA TSA keys), the caller's serial and
 * genTime in them, bad requests answered with rejections, TSA certificates
 * without the timeStamping EKU refused, an HSM failure reported as such;
 * bare tokens over a digest (CAdES-T), refusals, what signer_ts_describe
 * reads from replies and tokens, and the client side: signer_ts_query and
 * signer_ts_accept against this responder. */
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
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ts.h>

#include "fake_fixture.h"
#include "fake_hsm.h"
#include "flow.h"
#include "kyso/x509_text.h"
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

static void sha256_of(const void *data, size_t len, uint8_t out[32]) {
  unsigned n = 0;
  assert_int_equal(EVP_Digest(data, len, out, &n, EVP_sha256(), NULL), 1);
  assert_int_equal(n, 32);
}

static void hex(const uint8_t *b, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

/* The signer_ts_info fields a granted reply or token must carry. */
static void check_granted(const char *what, const signer_ts_info *got, const char *serial,
                          time_t when, unsigned ms, const char *tsa) {
  char text[40];
  struct tm tm;
  gmtime_r(&when, &tm);
  strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(text + strlen(text), sizeof(text) - strlen(text), ".%03uZ", ms);
  if (got->status != TS_STATUS_GRANTED || !got->has_token || strcmp(got->serial, serial) != 0 ||
      got->gen_time != when || got->gen_time_ms != ms || strcmp(got->gen_time_text, text) != 0 ||
      strcmp(got->policy, POLICY) != 0 || strcmp(got->hash, "SHA256") != 0 ||
      strcmp(got->tsa, tsa) != 0 || got->failure_info != 0)
    fail_msg("%s: got status %d token %d serial %s genTime %lld.%03u '%s' policy %s hash %s "
             "tsa '%s' failure 0x%x; want 0 1 %s %lld.%03u '%s' %s SHA256 '%s' 0",
             what, got->status, got->has_token, got->serial, (long long)got->gen_time,
             got->gen_time_ms, got->gen_time_text, got->policy, got->hash, got->tsa,
             got->failure_info, serial, (long long)when, ms, text, POLICY, tsa);
}

/* A bare token over a digest: `openssl ts -verify -digest` accepts it,
 * and not over another digest; the caller's serial and genTime are in it;
 * the TSA's name is its certificate's subject. */
static void test_stamp_digest(void **state) {
  fixture *f = *state;
  certify(f, "tsa-ec", "tsa");
  signer_tsa *t = open_tsa(f, "tsa-ec");
  X509 *cert = NULL;
  kyso_err err = {0};
  assert_int_equal(signer_certificate(f->s, "tsa-ec", &cert, NULL, &err), KYSO_OK);
  char want_name[256];
  kyso_x509_name_utf8(X509_get_subject_name(cert), want_name, sizeof(want_name));
  X509_free(cert);
  if (strcmp(signer_tsa_name(t), want_name) != 0 ||
      strstr(signer_tsa_name(t), "CN=Nguyễn Thị Minh Khai") == NULL)
    fail_msg("signer_tsa_name: got '%s', want '%s'", signer_tsa_name(t), want_name);
  assert_string_equal(signer_tsa_name(NULL), "");

  static const char text[] = "Biên bản họp ngày 12/3";
  uint8_t digest[32], other[32];
  char digest_hex[65], other_hex[65], tok_path[600];
  sha256_of(text, sizeof(text) - 1, digest);
  sha256_of("x", 1, other);
  hex(digest, 32, digest_hex);
  hex(other, 32, other_hex);
  uint8_t *tok = NULL;
  size_t tok_len = 0;
  time_t now = time(NULL);
  kyso_status st = signer_tsa_stamp_digest(t, digest, 4242, now, 7, &tok, &tok_len, &err);
  if (st != KYSO_OK) fail_msg("stamp_digest: %s: %s", kyso_strerror(st), err.msg);
  snprintf(tok_path, sizeof(tok_path), "%s/digest.tst", f->dir);
  assert_true(tu_write(tok_path, tok, tok_len));
#define VERIFY_DIGEST                                                                        \
  "openssl ts -verify -token_in -in '%s' -digest %s -CAfile '%s/root.pem' -untrusted "  \
  "'%s/tsa-ec-untrusted.pem' >/dev/null 2>&1"
  if (tu_run(VERIFY_DIGEST, tok_path, digest_hex, f->pki, f->dir) != 0)
    fail_msg("openssl ts -verify -token_in rejects the token (KYSO_TEST_KEEP=1 keeps %s)",
             tok_path);
  if (tu_run(VERIFY_DIGEST, tok_path, other_hex, f->pki, f->dir) == 0)
    fail_msg("openssl ts -verify accepts the token over another digest");
  signer_ts_info info;
  st = signer_ts_describe(tok, tok_len, 1, &info, &err);
  if (st != KYSO_OK) fail_msg("describe token: %s: %s", kyso_strerror(st), err.msg);
  check_granted("stamped token", &info, "4242", now, 7, want_name);
  OPENSSL_free(tok);

  /* Bad arguments; an HSM failure is the caller's error. */
  tok = (uint8_t *)1;
  st = signer_tsa_stamp_digest(t, NULL, 1, now, 0, &tok, &tok_len, &err);
  if (st != KYSO_INVALID_ARGUMENT || tok != NULL)
    fail_msg("no digest: got %s (%s), want INVALID_ARGUMENT", kyso_strerror(st), err.msg);
  st = signer_tsa_stamp_digest(t, digest, 1, now, 1000, &tok, &tok_len, &err);
  if (st != KYSO_INVALID_ARGUMENT)
    fail_msg("1000 ms: got %s (%s), want INVALID_ARGUMENT", kyso_strerror(st), err.msg);
  fake_hsm_fail_signs(f->h, KYSO_UNAVAILABLE, 1);
  st = signer_tsa_stamp_digest(t, digest, 1, now, 0, &tok, &tok_len, &err);
  if (st != KYSO_UNAVAILABLE || tok != NULL)
    fail_msg("failing HSM: got %s (%s), want UNAVAILABLE", kyso_strerror(st), err.msg);
  assert_int_equal(ERR_peek_error(), 0);
  signer_tsa_close(t);
}

/* A refusal parses as a TimeStampResp of status rejection with exactly the
 * bit asked for and the text; openssl reads it too. */
static void test_refusal(void **state) {
  fixture *f = *state;
  static const struct {
    int bit;
    const char *text;
    const char *want_text;
  } cases[] = {
      {SIGNER_TSA_FAIL_BAD_ALG, "SHA-1 is not accepted", "SHA-1 is not accepted"},
      {SIGNER_TSA_FAIL_BAD_REQUEST, NULL, ""},
      {SIGNER_TSA_FAIL_BAD_DATA_FORMAT, "", ""},
      {SIGNER_TSA_FAIL_TIME_NOT_AVAILABLE, "the clock is 1500 ms behind",
       "the clock is 1500 ms behind"},
      {SIGNER_TSA_FAIL_UNACCEPTED_POLICY, "chính sách khác", "chính sách khác"},
      {SIGNER_TSA_FAIL_UNACCEPTED_EXTENSION, "x", "x"},
      {SIGNER_TSA_FAIL_ADD_INFO_NOT_AVAILABLE, "bad \xff byte\n", "bad ? byte?"},
      {SIGNER_TSA_FAIL_SYSTEM_FAILURE, "HSM 'node1' unavailable", "HSM 'node1' unavailable"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint8_t *der = NULL;
    size_t len = 0;
    kyso_err err = {0};
    kyso_status st = signer_tsa_refusal(cases[i].bit, cases[i].text, &der, &len, &err);
    if (st != KYSO_OK) fail_msg("bit %d: %s: %s", cases[i].bit, kyso_strerror(st), err.msg);
    int bit = 0, token = 1;
    long status = resp_status(der, len, cases[i].bit, &bit, &token);
    signer_ts_info info;
    st = signer_ts_describe(der, len, 0, &info, &err);
    if (st != KYSO_OK || status != TS_STATUS_REJECTION || !bit || token ||
        info.status != TS_STATUS_REJECTION || info.failure_info != 1u << cases[i].bit ||
        info.has_token || strcmp(info.status_text, cases[i].want_text) != 0)
      fail_msg("bit %d: got status %ld/%d, bit %d, failure 0x%x, token %d, text '%s' (%s); "
               "want rejection, 0x%x only, no token, text '%s'",
               cases[i].bit, status, info.status, bit, info.failure_info, token,
               info.status_text, err.msg, 1u << cases[i].bit, cases[i].want_text);
    if (i == 3) { /* and openssl's own reading of one */
      char path[600], txt[600];
      snprintf(path, sizeof(path), "%s/refusal.tsr", f->dir);
      snprintf(txt, sizeof(txt), "%s/refusal.txt", f->dir);
      assert_true(tu_write(path, der, len));
      assert_int_equal(tu_run("openssl ts -reply -in '%s' -text > '%s' 2>/dev/null", path, txt),
                       0);
      if (!file_contains(txt, "Status: Rejected") ||
          !file_contains(txt, "the clock is 1500 ms behind") ||
          !file_contains(txt, "time source is not available"))
        fail_msg("`openssl ts -reply -text` of the refusal lacks its status, text or failure "
                 "(see %s with KYSO_TEST_KEEP=1)", txt);
    }
    OPENSSL_free(der);
  }
  uint8_t *der = (uint8_t *)1;
  size_t len = 1;
  kyso_err err = {0};
  kyso_status st = signer_tsa_refusal(3, "x", &der, &len, &err);
  if (st != KYSO_INVALID_ARGUMENT || der != NULL || len != 0)
    fail_msg("bit 3 (undefined): got %s (%s), want INVALID_ARGUMENT", kyso_strerror(st), err.msg);
}

/* What signer_ts_describe reads: a granted reply (the largest serial, an
 * old genTime with milliseconds), rejections with their failure bit, and
 * input that is neither a reply nor a token. */
static void test_describe(void **state) {
  fixture *f = *state;
  certify(f, "tsa-ec", "tsa");
  signer_tsa *t = open_tsa(f, "tsa-ec");
  char data[600], q[600];
  snprintf(data, sizeof(data), "%s/data.txt", f->dir);
  snprintf(q, sizeof(q), "%s/describe.tsq", f->dir);
  assert_true(tu_write(data, "nội dung", strlen("nội dung")));
  static const struct {
    const char *name;
    const char *query; /* openssl ts -query options, or NULL: raw bytes */
    const char *raw;
    size_t raw_len;
    int bit; /* -1: granted */
  } cases[] = {
      {"granted", "-sha256 -cert", NULL, 0, -1},
      {"SHA-1 query", "-sha1", NULL, 0, SIGNER_TSA_FAIL_BAD_ALG},
      {"garbage", NULL, "\x30\x03\x02\x01", 4, SIGNER_TSA_FAIL_BAD_DATA_FORMAT},
      {"another policy", "-sha256 -tspolicy " OTHER_POLICY, NULL, 0,
       SIGNER_TSA_FAIL_UNACCEPTED_POLICY},
  };
  const time_t when = 1700000000; /* 2023-11-14T22:13:20Z */
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint8_t *req = NULL, *resp = NULL;
    size_t req_len = cases[i].raw_len, resp_len = 0;
    if (cases[i].query != NULL) {
      assert_int_equal(tu_run("openssl ts -query %s -data '%s' -out '%s' 2>/dev/null",
                              cases[i].query, data, q), 0);
      assert_non_null(req = tu_read(q, &req_len));
    }
    kyso_err err = {0};
    kyso_status st = signer_tsa_respond(t, req ? req : (const uint8_t *)cases[i].raw, req_len,
                                        UINT64_MAX, when, 45, &resp, &resp_len, &err);
    if (st != KYSO_OK) fail_msg("%s: respond: %s: %s", cases[i].name, kyso_strerror(st), err.msg);
    signer_ts_info info;
    st = signer_ts_describe(resp, resp_len, 0, &info, &err);
    if (st != KYSO_OK) fail_msg("%s: describe: %s: %s", cases[i].name, kyso_strerror(st), err.msg);
    if (cases[i].bit < 0) {
      check_granted(cases[i].name, &info, "18446744073709551615", when, 45, signer_tsa_name(t));
      assert_string_equal(info.gen_time_text, "2023-11-14T22:13:20.045Z");
    } else if (info.status != TS_STATUS_REJECTION || info.failure_info != 1u << cases[i].bit ||
               info.has_token || info.serial[0] != '\0' || info.status_text[0] == '\0') {
      fail_msg("%s: got status %d failure 0x%x token %d serial '%s' text '%s'; want rejection "
               "(2), 0x%x, no token, a text",
               cases[i].name, info.status, info.failure_info, info.has_token, info.serial,
               info.status_text, 1u << cases[i].bit);
    }
    print_message("%-16s status %d failure 0x%x text '%s'\n", cases[i].name, info.status,
                  info.failure_info, info.status_text);
    /* A reply is not a token, and the other way round. */
    st = signer_ts_describe(resp, resp_len, 1, &info, &err);
    if (st != KYSO_INVALID_ARGUMENT || info.status != -1)
      fail_msg("%s: reply read as a token: got %s status %d, want INVALID_ARGUMENT -1",
               cases[i].name, kyso_strerror(st), info.status);
    OPENSSL_free(resp);
    free(req);
  }
  static const uint8_t junk[] = {0x30, 0x82, 0x01, 0x00, 0x02};
  signer_ts_info info;
  kyso_err err = {0};
  for (int is_token = 0; is_token <= 1; is_token++) {
    kyso_status st = signer_ts_describe(junk, sizeof(junk), is_token, &info, &err);
    if (st != KYSO_INVALID_ARGUMENT || info.status != -1 || info.has_token)
      fail_msg("junk (is_token %d): got %s status %d, want INVALID_ARGUMENT -1", is_token,
               kyso_strerror(st), info.status);
  }
  assert_int_equal(ERR_peek_error(), 0);
  signer_tsa_close(t);
}

/* signer_ts_query → signer_tsa_respond → signer_ts_accept; accept refuses
 * a reply to another nonce or digest, a rejection, a reply without the
 * nonce, a TSA the store does not trust, and what is not a reply. */
static void test_query_accept(void **state) {
  fixture *f = *state;
  certify(f, "tsa-ec", "tsa");
  signer_tsa *t = open_tsa(f, "tsa-ec");
  uint8_t digest[32], other[32];
  sha256_of("tài liệu", strlen("tài liệu"), digest);
  sha256_of("khác", strlen("khác"), other);
  uint8_t *q = NULL, *resp = NULL, *tok = NULL;
  size_t q_len = 0, resp_len = 0, tok_len = 0;
  uint64_t nonce = 0, nonce2 = 0;
  kyso_err err = {0};
  kyso_status st = signer_ts_query(digest, &nonce, &q, &q_len, &err);
  if (st != KYSO_OK) fail_msg("query: %s: %s", kyso_strerror(st), err.msg);
  uint8_t *q2 = NULL;
  size_t q2_len = 0;
  assert_int_equal(signer_ts_query(digest, &nonce2, &q2, &q2_len, &err), KYSO_OK);
  assert_true(nonce != nonce2); /* 2^-64 */
  OPENSSL_free(q2);

  /* openssl reads the query as we meant it. */
  char qp[600], txt[600], want[64];
  snprintf(qp, sizeof(qp), "%s/client.tsq", f->dir);
  snprintf(txt, sizeof(txt), "%s/client.txt", f->dir);
  assert_true(tu_write(qp, q, q_len));
  assert_int_equal(tu_run("openssl ts -query -in '%s' -text > '%s' 2>/dev/null", qp, txt), 0);
  /* openssl prints whole bytes: an odd number of hex digits gets a 0. */
  char nonce_hex[24];
  int digits = snprintf(nonce_hex, sizeof(nonce_hex), "%llX", (unsigned long long)nonce);
  snprintf(want, sizeof(want), "Nonce: 0x%s%s", digits % 2 ? "0" : "", nonce_hex);
  const char *wants[] = {"Version: 1", "Hash Algorithm: sha256", "Certificate required: yes",
                         want};
  for (size_t k = 0; k < sizeof(wants) / sizeof(wants[0]); k++)
    if (!file_contains(txt, wants[k]))
      fail_msg("`openssl ts -query -text` lacks \"%s\" (see %s with KYSO_TEST_KEEP=1)", wants[k],
               txt);

  time_t now = time(NULL);
  st = signer_tsa_respond(t, q, q_len, 99, now, 500, &resp, &resp_len, &err);
  if (st != KYSO_OK) fail_msg("respond: %s: %s", kyso_strerror(st), err.msg);
  X509_STORE *store = tu_pki_store(f->pki), *empty = X509_STORE_new();
  assert_non_null(store);
  for (int with_store = 0; with_store <= 1; with_store++) {
    st = signer_ts_accept(resp, resp_len, digest, nonce, with_store ? store : NULL, &tok, &tok_len,
                          &err);
    if (st != KYSO_OK)
      fail_msg("accept (store %d): %s: %s", with_store, kyso_strerror(st), err.msg);
    signer_ts_info info;
    assert_int_equal(signer_ts_describe(tok, tok_len, 1, &info, &err), KYSO_OK);
    check_granted("accepted token", &info, "99", now, 500, signer_tsa_name(t));
    OPENSSL_free(tok);
    tok = NULL;
  }

  /* The refusals. */
  uint8_t *refusal = NULL, *no_nonce = NULL, *nn_req = NULL;
  size_t refusal_len = 0, no_nonce_len = 0, nn_req_len = 0;
  assert_int_equal(signer_tsa_refusal(SIGNER_TSA_FAIL_TIME_NOT_AVAILABLE, "clock behind",
                                      &refusal, &refusal_len, &err),
                   KYSO_OK);
  char hexd[65], nnq[600];
  hex(digest, 32, hexd);
  snprintf(nnq, sizeof(nnq), "%s/no-nonce.tsq", f->dir);
  assert_int_equal(tu_run("openssl ts -query -sha256 -digest %s -cert -no_nonce -out '%s' "
                          "2>/dev/null",
                          hexd, nnq),
                   0);
  assert_non_null(nn_req = tu_read(nnq, &nn_req_len));
  assert_int_equal(signer_tsa_respond(t, nn_req, nn_req_len, 100, now, 0, &no_nonce,
                                      &no_nonce_len, &err),
                   KYSO_OK);
  static const uint8_t junk[] = "not a reply";
  const struct {
    const char *name;
    const uint8_t *resp;
    size_t resp_len;
    const uint8_t *digest;
    uint64_t nonce;
    X509_STORE *store;
    kyso_status want;
    const char *want_msg;
  } cases[] = {
      {"wrong nonce", resp, resp_len, digest, nonce + 1, store, KYSO_FAILED_PRECONDITION, "nonce"},
      {"wrong digest", resp, resp_len, other, nonce, store, KYSO_FAILED_PRECONDITION, "imprint"},
      {"wrong digest, no store", resp, resp_len, other, nonce, NULL, KYSO_FAILED_PRECONDITION,
       "imprint"},
      {"rejection", refusal, refusal_len, digest, nonce, store, KYSO_FAILED_PRECONDITION,
       "timeNotAvailable: clock behind"},
      {"no nonce in the reply", no_nonce, no_nonce_len, digest, nonce, store,
       KYSO_FAILED_PRECONDITION, "nonce"},
      {"untrusted TSA", resp, resp_len, digest, nonce, empty, KYSO_FAILED_PRECONDITION,
       "not trusted"},
      {"not a reply", junk, sizeof(junk) - 1, digest, nonce, store, KYSO_INVALID_ARGUMENT,
       "TimeStampResp"},
      {"a query", q, q_len, digest, nonce, store, KYSO_INVALID_ARGUMENT, "TimeStampResp"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    tok = (uint8_t *)1;
    tok_len = 1;
    st = signer_ts_accept(cases[i].resp, cases[i].resp_len, cases[i].digest, cases[i].nonce,
                          cases[i].store, &tok, &tok_len, &err);
    if (st != cases[i].want || tok != NULL || tok_len != 0 ||
        strstr(err.msg, cases[i].want_msg) == NULL)
      fail_msg("%s: got %s (%s), want %s mentioning \"%s\"", cases[i].name, kyso_strerror(st),
               err.msg, kyso_strerror(cases[i].want), cases[i].want_msg);
    print_message("%-24s %s: %.200s\n", cases[i].name, kyso_strerror(st), err.msg);
    assert_int_equal(ERR_peek_error(), 0);
  }
  X509_STORE_free(store);
  X509_STORE_free(empty);
  OPENSSL_free(refusal);
  OPENSSL_free(no_nonce);
  free(nn_req);
  OPENSSL_free(resp);
  OPENSSL_free(q);
  signer_tsa_close(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stamp_verifies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rejections, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_refusals, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hsm_failure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stamp_digest, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refusal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_describe, setup, teardown),
      cmocka_unit_test_setup_teardown(test_query_accept, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
