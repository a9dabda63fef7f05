/* e2e_timestamp: kysod as an RFC 3161 TSA, checked with tools we did not
 * write. A reply from TimeStamp.Stamp and one from the HTTP endpoint (a
 * query made by `openssl ts -query`, posted by curl) pass `openssl ts
 * -verify`; a CAdES-T signature's time-stamp token, extracted, passes
 * `openssl ts -verify -token_in` against the signature value. Each bad
 * query gets a rejection with its PKIFailureInfo; the HTTP endpoint
 * answers 405/404/415/413 to the wrong requests; a TSA certificate without
 * the critical EKU is refused at import and stops kysod at start; a clock
 * behind the last genTime makes the TSA refuse and health say so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"
#include "kyso/v1/archive.pb-c.h"
#include "kyso/v1/keys.pb-c.h"

#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define TSA KYSO__V1__KEY_ROLE__KEY_ROLE_TSA
#define EC KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256
#define ACCOUNT "ts.official"
#define SERVING 1
#define NOT_SERVING 2

/* PKIFailureInfo bits (RFC 3161 2.4.2). */
#define BAD_ALG 0
#define BAD_DATA_FORMAT 5
#define TIME_NOT_AVAILABLE 14
#define UNACCEPTED_POLICY 15

static e2e *E;
static char doc_path[400];

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  snprintf(doc_path, sizeof(doc_path), "%s", e2e_path(E, "work/decision.txt"));
  const char text[] = "Quyết định số 42/QĐ-UBND về việc thử nghiệm dấu thời gian.\n";
  assert_int_equal(e2e_write_file(doc_path, text, sizeof(text) - 1), 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  e2e_free(E);
  return 0;
}

static void start(void **state) {
  (void)state;
  e2e_config_append(E, "\n[tsa]\nhttp_listen = 127.0.0.1:0\n");
  e2e_start(E, NULL);
  if (E->tsa_http_port <= 0) E2E_FAIL("kysod did not report its tsa-http port");
  e2e_provision_key(E, PERSONAL, ACCOUNT, EC);
  E2E_EQ("health of kyso.v1.TimeStamp", e2e_health(E, "kyso.v1.TimeStamp"), SERVING);
  E2E_EQ("health of kyso.v1.Signer", e2e_health(E, "kyso.v1.Signer"), SERVING);
}

/* `openssl ts -query` of the document into path. */
static void openssl_query(const char *path, const char *extra) {
  const char *log = e2e_path(E, "work/ts-query.log");
  if (e2e_sh(log, "openssl ts -query -data '%s' -cert %s -out '%s'", doc_path, extra, path) != 0) {
    e2e_sh(NULL, "cat '%s' >&2", log);
    E2E_FAIL("openssl ts -query %s failed", extra);
  }
}

/* Stamp over gRPC of the query file; the reply to reply_path. */
static int stamp_file(const char *query_path, const char *reply_path,
                      Kyso__V1__StampResponse **resp, char *msg, size_t msg_size) {
  size_t len = 0;
  uint8_t *q = e2e_read_file(query_path, &len);
  if (q == NULL) E2E_FAIL("cannot read %s", query_path);
  int st = e2e_stamp_with(E->clients[E2E_DMS], q, len, 30000, resp, msg, msg_size);
  free(q);
  if (st == 0 && reply_path != NULL)
    e2e_write_file(reply_path, (*resp)->reply.data, (*resp)->reply.len);
  return st;
}

static void grpc_reply_verifies_with_openssl(void **state) {
  (void)state;
  const char *q = e2e_path(E, "work/grpc.tsq"), *r = e2e_path(E, "work/grpc.tsr");
  Kyso__V1__StampResponse *resp = NULL;
  char msg[512];
  e2e_ts ts;
  openssl_query(q, "-sha256");
  int st = stamp_file(q, r, &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("TimeStamp.Stamp: got status %d (%s), want OK", st, msg);
  E2E_EQ("reply status", resp->status, 0);
  if (resp->serial[0] == '\0' || resp->gen_time[0] == '\0' || !strstr(resp->tsa, "default"))
    E2E_FAIL("reply fields: serial '%s' gen_time '%s' tsa '%s'", resp->serial, resp->gen_time,
             resp->tsa);
  if (e2e_ts_parse(resp->reply.data, resp->reply.len, 0, &ts) != 0 || !ts.has_token)
    E2E_FAIL("the reply is not a granted TimeStampResp");
  char serial[32];
  snprintf(serial, sizeof(serial), "%llu", (unsigned long long)ts.serial);
  E2E_STREQ("serial field vs. token", resp->serial, serial);
  E2E_STREQ("policy", ts.policy, "2.25.7195448816352327920619818468147684736");
  int64_t now = (int64_t)time(NULL) * 1000;
  if (ts.gen_ms < now - 60000 || ts.gen_ms > now + 2000)
    E2E_FAIL("genTime %lld is not about now (%lld)", (long long)ts.gen_ms, (long long)now);
  kyso__v1__stamp_response__free_unpacked(resp, NULL);
  if (e2e_openssl_ts_verify(E, NULL, r, doc_path, 0) != 0) {
    e2e_sh(NULL, "cat '%s' >&2", e2e_path(E, "work/ts-verify.log"));
    E2E_FAIL("openssl ts -verify rejected the gRPC reply");
  }
  /* The same reply over other data must fail: the check can fail. */
  const char *other = e2e_path(E, "work/other.txt");
  e2e_write_file(other, "khác", 5);
  if (e2e_openssl_ts_verify(E, NULL, r, other, 0) == 0)
    E2E_FAIL("openssl ts -verify accepted the reply for a different document");
}

static void http_reply_verifies_with_openssl(void **state) {
  (void)state;
  const char *q = e2e_path(E, "work/http.tsq"), *r = e2e_path(E, "work/http.tsr");
  e2e_ts ts;
  openssl_query(q, "-sha256");
  int code = e2e_http(E->tsa_http_port, "/tsa", "POST", "application/timestamp-query", q, r);
  E2E_EQ("HTTP status of a good query", code, 200);
  if (!e2e_file_contains(e2e_path(E, "work/http.tsr.hdr"), "application/timestamp-reply"))
    E2E_FAIL("the HTTP reply's Content-Type is not application/timestamp-reply");
  size_t len = 0;
  uint8_t *der = e2e_read_file(r, &len);
  if (der == NULL || e2e_ts_parse(der, len, 0, &ts) != 0 || ts.status != 0)
    E2E_FAIL("the HTTP reply is not a granted TimeStampResp (status %d)", ts.status);
  free(der);
  if (e2e_openssl_ts_verify(E, NULL, r, doc_path, 0) != 0) {
    e2e_sh(NULL, "cat '%s' >&2", e2e_path(E, "work/ts-verify.log"));
    E2E_FAIL("openssl ts -verify rejected the HTTP reply");
  }
}

static void http_refuses_wrong_requests(void **state) {
  (void)state;
  const char *q = e2e_path(E, "work/http.tsq"), *out = e2e_path(E, "work/http-bad.out");
  const char *big = e2e_path(E, "work/big.bin");
  uint8_t *junk = calloc(1, 20000);
  e2e_write_file(big, junk, 20000);
  free(junk);
  E2E_EQ("wrong Content-Type",
         e2e_http(E->tsa_http_port, "/tsa", "POST", "text/plain", q, out), 415);
  E2E_EQ("no Content-Type", e2e_http(E->tsa_http_port, "/tsa", "POST", NULL, q, out), 415);
  E2E_EQ("GET", e2e_http(E->tsa_http_port, "/tsa", "GET", NULL, NULL, out), 405);
  if (!e2e_file_contains(e2e_path(E, "work/http-bad.out.hdr"), "Allow: POST"))
    E2E_FAIL("405 without Allow: POST");
  E2E_EQ("unknown path",
         e2e_http(E->tsa_http_port, "/other", "POST", "application/timestamp-query", q, out),
         404);
  E2E_EQ("20000-byte body (cap 16384)",
         e2e_http(E->tsa_http_port, "/tsa", "POST", "application/timestamp-query", big, out),
         413);
  /* Type parameters are allowed; the endpoint still answers. */
  E2E_EQ("type with a parameter",
         e2e_http(E->tsa_http_port, "/", "POST", "application/timestamp-query; charset=binary",
                  q, out),
         200);
}

/* A rejection, over gRPC: status 2 with exactly the expected bit, read by
 * OpenSSL from the DER and mirrored in the response's fields. */
static void expect_rejection(const uint8_t *query, size_t len, int bit, const char *what) {
  Kyso__V1__StampResponse *resp = NULL;
  char msg[512];
  e2e_ts ts;
  int st = e2e_stamp_with(E->clients[E2E_DMS], query, len, 30000, &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("%s: got gRPC status %d (%s), want OK with a rejection", what, st, msg);
  if (e2e_ts_parse(resp->reply.data, resp->reply.len, 0, &ts) != 0)
    E2E_FAIL("%s: the reply is not a TimeStampResp", what);
  E2E_EQ("PKIStatus (2 = rejection)", ts.status, 2);
  E2E_EQ("PKIFailureInfo bits", ts.failure_bits, 1u << bit);
  E2E_EQ("has a token", ts.has_token, 0);
  E2E_EQ("status field", resp->status, 2);
  E2E_EQ("failure_info field", resp->failure_info, 1u << bit);
  fprintf(stderr, "e2e: %s -> rejection: %s\n", what, resp->status_text);
  kyso__v1__stamp_response__free_unpacked(resp, NULL);
}

static void rejects_sha1_with_bad_alg(void **state) {
  (void)state;
  const char *q = e2e_path(E, "work/sha1.tsq");
  openssl_query(q, "-sha1");
  size_t len = 0;
  uint8_t *der = e2e_read_file(q, &len);
  expect_rejection(der, len, BAD_ALG, "a SHA-1 imprint");
  free(der);
}

static void rejects_garbage_with_bad_data_format(void **state) {
  (void)state;
  static const uint8_t garbage[] = {0x30, 0x03, 0x02, 0x01};
  expect_rejection(garbage, sizeof(garbage), BAD_DATA_FORMAT, "truncated DER");
  static const uint8_t text[] = "POST me a time-stamp";
  expect_rejection(text, sizeof(text) - 1, BAD_DATA_FORMAT, "text, not DER");
}

static void rejects_other_policy_with_unaccepted_policy(void **state) {
  (void)state;
  const char *q = e2e_path(E, "work/policy.tsq");
  openssl_query(q, "-sha256 -tspolicy 1.2.3.4.5");
  size_t len = 0;
  uint8_t *der = e2e_read_file(q, &len);
  expect_rejection(der, len, UNACCEPTED_POLICY, "policy 1.2.3.4.5");
  free(der);
}

static void rejects_empty_query_as_invalid_argument(void **state) {
  (void)state;
  Kyso__V1__StampResponse *resp = NULL;
  char msg[512];
  int st = e2e_stamp_with(E->clients[E2E_DMS], (const uint8_t *)"", 0, 30000, &resp, msg,
                          sizeof(msg));
  E2E_EQ("empty query: gRPC status (INVALID_ARGUMENT)", st, 3);
  /* Least privilege: the operator provisions keys but asks for no tokens. */
  openssl_query(e2e_path(E, "work/ops.tsq"), "-sha256");
  size_t len = 0;
  uint8_t *q = e2e_read_file(e2e_path(E, "work/ops.tsq"), &len);
  st = e2e_stamp_with(E->clients[E2E_OPS], q, len, 30000, &resp, msg, sizeof(msg));
  free(q);
  E2E_EQ("Stamp as operator: gRPC status (PERMISSION_DENIED)", st, 7);
}

static void cades_t_token_verifies_against_signature_value(void **state) {
  (void)state;
  static const uint8_t doc[] = "Công văn số 7/CV-VP: ký kèm dấu thời gian (CAdES-T).";
  Kyso__V1__SignResponse *resp = NULL;
  char msg[512];
  const char *sig = e2e_path(E, "work/cadest.p7s"), *tok = e2e_path(E, "work/cadest.tst");
  const char *val = e2e_path(E, "work/cadest.sigvalue"), *d = e2e_path(E, "work/cadest.doc");
  int st = e2e_sign(E, E2E_DMS, PERSONAL, ACCOUNT, 0, doc, sizeof(doc) - 1, NULL, 60000, &resp,
                    msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Sign (default format): got status %d (%s), want OK", st, msg);
  if (resp->timestamp_serial[0] == '\0' || resp->timestamp_time[0] == '\0')
    E2E_FAIL("Sign's response has no time-stamp fields");
  e2e_write_file(sig, resp->signature.data, resp->signature.len);
  e2e_write_file(d, doc, sizeof(doc) - 1);
  E2E_EQ("signature-time-stamp attribute present",
         e2e_cms_timestamp(resp->signature.data, resp->signature.len, tok, val), 1);
  if (e2e_openssl_ts_verify(E, NULL, tok, val, 1) != 0) {
    e2e_sh(NULL, "cat '%s' >&2", e2e_path(E, "work/ts-verify.log"));
    E2E_FAIL("openssl ts -verify -token_in rejected the token over the signature value");
  }
  /* Over the document instead of the signature value it must fail. */
  if (e2e_openssl_ts_verify(E, NULL, tok, d, 1) == 0)
    E2E_FAIL("the token verified over the document; it must cover the signature value");
  if (e2e_openssl_verify(E, d, sig) != 0) E2E_FAIL("openssl cms -verify rejected the CAdES-T");
  e2e_ts ts;
  size_t len = 0;
  uint8_t *der = e2e_read_file(tok, &len);
  if (der == NULL || e2e_ts_parse(der, len, 1, &ts) != 0) E2E_FAIL("the token does not parse");
  free(der);
  char serial[32];
  snprintf(serial, sizeof(serial), "%llu", (unsigned long long)ts.serial);
  E2E_STREQ("timestamp_serial vs. token", resp->timestamp_serial, serial);

  /* The archive shows it too. */
  Kyso__V1__DocumentInfo *info = NULL;
  st = e2e_stat_with(E->clients[E2E_ARCH], resp->archive_id, 0, 30000, &info, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Archive.Stat: got status %d (%s)", st, msg);
  E2E_EQ("signatures", info->n_signatures, 1);
  E2E_STREQ("archived timestamp_serial", info->signatures[0]->timestamp_serial, serial);
  kyso__v1__document_info__free_unpacked(info, NULL);
  kyso__v1__sign_response__free_unpacked(resp, NULL);

  /* CAdES-BES asked for explicitly: no token. */
  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  e2e_key_ref(&ref, PERSONAL, ACCOUNT);
  req.key = &ref;
  req.document.data = (uint8_t *)doc;
  req.document.len = sizeof(doc) - 2;
  req.format = KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_BES;
  st = e2e_sign_with(E->clients[E2E_DMS], &req, 60000, &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Sign (CADES_BES): got status %d (%s)", st, msg);
  E2E_EQ("CAdES-BES carries no token",
         e2e_cms_timestamp(resp->signature.data, resp->signature.len, tok, val), 0);
  E2E_STREQ("CAdES-BES timestamp_serial", resp->timestamp_serial, "");
  kyso__v1__sign_response__free_unpacked(resp, NULL);
}

static void tsa_key_cannot_sign_documents(void **state) {
  (void)state;
  char msg[512];
  static const uint8_t doc[] = "not for a TSA key";
  int st = e2e_sign(E, E2E_DMS, TSA, "default", 0, doc, sizeof(doc) - 1, NULL, 30000, NULL, msg,
                    sizeof(msg));
  E2E_EQ("Sign with the TSA key: status (INVALID_ARGUMENT)", st, 3);
  if (!strstr(msg, "TSA key")) E2E_FAIL("message does not explain: %s", msg);
}

/* The bytes of kysod's configuration, to put back after a test changed it. */
static uint8_t *saved_config;
static size_t saved_config_len;

static void restore_config(void) {
  e2e_write_file(E->config, saved_config, saved_config_len);
}

static void tsa_certificate_without_critical_eku(void **state) {
  (void)state;
  char msg[512];
  Kyso__V1__KeyRef ref;
  e2e_key_ref(&ref, TSA, "nocrit");
  e2e_generate_key(E, TSA, "nocrit", EC);
  Kyso__V1__CreateCsrRequest creq = KYSO__V1__CREATE_CSR_REQUEST__INIT;
  Kyso__V1__CreateCsrResponse *cresp = NULL;
  creq.key = &ref;
  creq.subject = "/C=VN/O=Kyso E2E/OU=TSA/CN=nocrit";
  int st = e2e_call(E, E2E_OPS, "/kyso.v1.Keys/CreateCsr", &creq.base,
                    &kyso__v1__create_csr_response__descriptor, 30000,
                    (ProtobufCMessage **)&cresp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("CreateCsr: %d (%s)", st, msg);
  const char *csr = e2e_path(E, "work/nocrit.csr"), *pem = e2e_path(E, "work/nocrit.pem");
  e2e_write_file(csr, cresp->csr.data, cresp->csr.len);
  kyso__v1__create_csr_response__free_unpacked(cresp, NULL);
  if (e2e_sh(NULL, "'%s/pki.sh' issue '%s' '%s' '%s' tsa_noncritical", e2e_fixtures_dir(),
             E->pki, csr, pem) != 0)
    E2E_FAIL("pki.sh issue tsa_noncritical failed");
  size_t len = 0;
  uint8_t *cert = e2e_read_file(pem, &len);
  Kyso__V1__ImportCertificateRequest ireq = KYSO__V1__IMPORT_CERTIFICATE_REQUEST__INIT;
  ireq.key = &ref;
  ireq.certificate.data = cert;
  ireq.certificate.len = len;
  st = e2e_call(E, E2E_OPS, "/kyso.v1.Keys/ImportCertificate", &ireq.base,
                &kyso__v1__key_info__descriptor, 30000, NULL, msg, sizeof(msg));
  E2E_EQ("import of a TSA certificate with a non-critical EKU (FAILED_PRECONDITION)", st, 9);
  if (!strstr(msg, "critical")) E2E_FAIL("the refusal does not say why: %s", msg);

  /* Planted behind kysod's back (as a careless restore might), the same
   * certificate must stop kysod at start, saying why. */
  e2e_stop(E);
  const char *planted = e2e_path(E, "data/certs/kyso%%2Ftsa%%2Fnocrit.pem");
  if (e2e_sh(NULL, "cat '%s' '%s/chain.pem' > '%s'", pem, E->pki, planted) != 0)
    E2E_FAIL("cannot plant %s", planted);
  free(cert);
  saved_config = e2e_read_file(E->config, &saved_config_len);
  e2e_config_append(E, "\n[tsa]\nname = nocrit\n");
  int wstatus = 0;
  if (e2e_start_expect_exit(E, NULL, &wstatus) != 0) E2E_FAIL("kysod started with that TSA");
  E2E_EQ("kysod exit status", WEXITSTATUS(wstatus), 2);
  if (!e2e_file_contains(E->stderr_path, "critical extendedKeyUsage"))
    E2E_FAIL("kysod's message does not name the missing critical extendedKeyUsage");
  restore_config();
  e2e_start(E, NULL);
}

/* Rewrites the state file's time bound to now + ahead_ms while kysod is
 * stopped: as if the clock had been set back by that much. */
static void set_state_bound(int64_t ahead_ms) {
  const char *state = e2e_path(E, "data/tsa/state");
  int64_t bound = (int64_t)time(NULL) * 1000 + ahead_ms;
  if (e2e_sh(NULL, "sed -i 's/^time_bound_ms=.*/time_bound_ms=%lld/' '%s' && "
                   "grep -q '^time_bound_ms=%lld$' '%s'",
             (long long)bound, state, (long long)bound, state) != 0)
    E2E_FAIL("cannot rewrite time_bound_ms in %s", state);
}

static void clock_behind_last_gentime(void **state) {
  (void)state;
  char msg[512];
  static const uint8_t doc[] = "signed while the clock is wrong";
  e2e_stop(E);
  set_state_bound(3600 * 1000);
  e2e_start(E, NULL);
  E2E_EQ("health of kyso.v1.TimeStamp", e2e_health(E, "kyso.v1.TimeStamp"), NOT_SERVING);
  E2E_EQ("health of kyso.v1.Signer (CAdES-T by default)", e2e_health(E, "kyso.v1.Signer"),
         NOT_SERVING);
  E2E_EQ("health of the node", e2e_health(E, ""), SERVING);

  Kyso__V1__StampResponse *resp = NULL;
  int st = stamp_file(e2e_path(E, "work/grpc.tsq"), NULL, &resp, msg, sizeof(msg));
  E2E_EQ("Stamp while behind: status (UNAVAILABLE)", st, 14);
  if (!strstr(msg, "behind")) E2E_FAIL("the refusal does not say the clock is behind: %s", msg);

  st = e2e_sign(E, E2E_DMS, PERSONAL, ACCOUNT, 0, doc, sizeof(doc) - 1, NULL, 30000, NULL, msg,
                sizeof(msg));
  E2E_EQ("CAdES-T Sign while behind: status (UNAVAILABLE)", st, 14);

  const char *out = e2e_path(E, "work/behind.tsr");
  int code = e2e_http(E->tsa_http_port, "/tsa", "POST", "application/timestamp-query",
                      e2e_path(E, "work/http.tsq"), out);
  E2E_EQ("HTTP while behind", code, 503);
  if (!e2e_file_contains(e2e_path(E, "work/behind.tsr.hdr"), "Retry-After"))
    E2E_FAIL("503 without Retry-After");
  size_t len = 0;
  uint8_t *der = e2e_read_file(out, &len);
  e2e_ts ts;
  if (der == NULL || e2e_ts_parse(der, len, 0, &ts) != 0)
    E2E_FAIL("the 503 body is not a TimeStampResp");
  free(der);
  E2E_EQ("PKIStatus", ts.status, 2);
  E2E_EQ("PKIFailureInfo (timeNotAvailable)", ts.failure_bits, 1u << TIME_NOT_AVAILABLE);

  /* Put right again, the TSA serves at once. */
  e2e_stop(E);
  set_state_bound(-1000);
  e2e_start(E, NULL);
  E2E_EQ("health of kyso.v1.TimeStamp after the fix", e2e_health(E, "kyso.v1.TimeStamp"),
         SERVING);
}

static void stop_clean(void **state) {
  (void)state;
  e2e_stop(E);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start),
      cmocka_unit_test(grpc_reply_verifies_with_openssl),
      cmocka_unit_test(http_reply_verifies_with_openssl),
      cmocka_unit_test(http_refuses_wrong_requests),
      cmocka_unit_test(rejects_sha1_with_bad_alg),
      cmocka_unit_test(rejects_garbage_with_bad_data_format),
      cmocka_unit_test(rejects_other_policy_with_unaccepted_policy),
      cmocka_unit_test(rejects_empty_query_as_invalid_argument),
      cmocka_unit_test(cades_t_token_verifies_against_signature_value),
      cmocka_unit_test(tsa_key_cannot_sign_documents),
      cmocka_unit_test(tsa_certificate_without_critical_eku),
      cmocka_unit_test(clock_behind_last_gentime),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_timestamp", tests, setup, teardown);
}
