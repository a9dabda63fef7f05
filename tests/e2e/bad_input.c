/* e2e_bad_input: a live kysod gets bad, malformed, oversized, unauthorised
 * and misaddressed requests; each gets the gRPC status and message we
 * promise, none crashes the node or logs an error. One table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"
#include "kyso/limits.h"
#include "kyso/util.h"
#include "kyso/v1/keys.pb-c.h"

#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define SEAL KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL
#define SIGN "/kyso.v1.Signer/Sign"
#define HEALTH "/grpc.health.v1.Health/Check"
#define MiB (1024 * 1024)

static e2e *E;

typedef enum {
  REQ_SIGN,      /* SignRequest from the fields below */
  REQ_TRUNCATED, /* that SignRequest cut in the middle of its document */
  REQ_RAW,       /* raw bytes */
  REQ_GENERATE,  /* GenerateKeyRequest for (role, account) */
  REQ_IMPORT,    /* ImportCertificateRequest for (role, account) with raw as the certificate */
  REQ_IMPORT_FILE, /* ... with the PKI file named by raw */
  REQ_HEALTH,    /* HealthCheckRequest for service raw */
} req_kind;

typedef struct bad_case {
  const char *name;
  e2e_ident who;
  const char *method;
  req_kind kind;
  Kyso__V1__KeyRole role;
  const char *account; /* or unit for SEAL */
  size_t doc_len;
  const char *raw;
  size_t raw_len;
  int rsa_scheme;
  const char *title;      /* metadata.title; NULL = none */
  size_t request_id_len;  /* 0 = none */
  int64_t deadline_ms;
  int want_status;
  const char *want_substr;
  int64_t max_elapsed_ms; /* 0 = not checked */
} bad_case;

static const bad_case cases[] = {
    {"empty document", E2E_DMS, SIGN, REQ_SIGN, PERSONAL, "bad.ec", 0, NULL, 0, 0, NULL, 0,
     10000, 3, "document is empty", 0},
    {"unknown account", E2E_DMS, SIGN, REQ_SIGN, PERSONAL, "nobody.here", 100, NULL, 0, 0, NULL,
     0, 10000, 5, "kyso/personal/nobody.here", 0},
    {"key without certificate", E2E_DMS, SIGN, REQ_SIGN, PERSONAL, "bad.nocert", 100, NULL, 0,
     0, NULL, 0, 10000, 9, "has no certificate", 0},
    {"role unspecified", E2E_DMS, SIGN, REQ_SIGN, KYSO__V1__KEY_ROLE__KEY_ROLE_UNSPECIFIED,
     "bad.ec", 100, NULL, 0, 0, NULL, 0, 10000, 3, "key.role", 0},
    {"role out of range", E2E_DMS, SIGN, REQ_SIGN, (Kyso__V1__KeyRole)77, "bad.ec", 100, NULL, 0,
     0, NULL, 0, 10000, 3, "key.role", 0},
    {"account with '/'", E2E_DMS, SIGN, REQ_SIGN, PERSONAL, "../bad.ec", 100, NULL, 0, 0, NULL,
     0, 10000, 3, "may only contain", 0},
    {"account too long", E2E_DMS, SIGN, REQ_SIGN, PERSONAL,
     "a123456789b123456789c123456789d123456789e123456789f123456789g12345", 100, NULL, 0, 0,
     NULL, 0, 10000, 3, "longer than", 0},
    {"seal without unit", E2E_DMS, SIGN, REQ_SIGN, SEAL, "", 100, NULL, 0, 0, NULL, 0, 10000, 3,
     "key.unit is required", 0},
    {"unknown rsa_scheme", E2E_DMS, SIGN, REQ_SIGN, PERSONAL, "bad.ec", 100, NULL, 0, 99, NULL,
     0, 10000, 3, "rsa_scheme", 0},
    {"title not UTF-8", E2E_DMS, SIGN, REQ_SIGN, PERSONAL, "bad.ec", 100, NULL, 0, 0,
     "V\xe1\xbb b\xc3", 0, 10000, 3, "metadata.title is not valid UTF-8", 0},
    {"title with a control character", E2E_DMS, SIGN, REQ_SIGN, PERSONAL, "bad.ec", 100, NULL,
     0, 0, "line\nbreak", 0, 10000, 3, "control character", 0},
    {"request_id too long", E2E_DMS, SIGN, REQ_SIGN, PERSONAL, "bad.ec", 100, NULL, 0, 0, NULL,
     KYSO_MAX_REQUEST_ID + 1, 10000, 3, "request_id", 0},
    {"malformed protobuf", E2E_DMS, SIGN, REQ_RAW, 0, NULL, 0, "\xff\xff\xff\xff\x0f", 5, 0,
     NULL, 0, 10000, 3, "not a valid kyso.v1.SignRequest", 0},
    {"truncated message", E2E_DMS, SIGN, REQ_TRUNCATED, PERSONAL, "bad.ec", 1000, NULL, 0, 0,
     NULL, 0, 10000, 3, "not a valid kyso.v1.SignRequest", 0},
    {"document just over the inline limit", E2E_DMS, SIGN, REQ_SIGN, PERSONAL, "bad.ec",
     KYSO_MAX_INLINE_DOCUMENT + 1, NULL, 0, 0, NULL, 0, 30000, 3, "more than", 0},
    {"message over 4 MiB, refused by the server", E2E_DMS_BIG, SIGN, REQ_SIGN, PERSONAL,
     "bad.ec", 5 * MiB, NULL, 0, 0, NULL, 0, 30000, 8, "Received message larger than max", 0},
    {"message over 4 MiB, refused by the client", E2E_DMS, SIGN, REQ_SIGN, PERSONAL, "bad.ec",
     5 * MiB, NULL, 0, 0, NULL, 0, 30000, 8, "Sent message larger than max", 0},
    {"method that does not exist", E2E_DMS, "/kyso.v1.Signer/Nope", REQ_RAW, 0, NULL, 0, "", 0,
     0, NULL, 0, 20000, 12, "", 5000},
    {"service that does not exist", E2E_DMS, "/kyso.v9.Nothing/Sign", REQ_RAW, 0, NULL, 0, "", 0,
     0, NULL, 0, 20000, 12, "", 5000},
    {"no client certificate", E2E_ANON, SIGN, REQ_SIGN, PERSONAL, "bad.ec", 100, NULL, 0, 0,
     NULL, 0, 10000, 16, "client certificate is required", 0},
    {"unregistered certificate", E2E_STRANGER, SIGN, REQ_SIGN, PERSONAL, "bad.ec", 100, NULL, 0,
     0, NULL, 0, 10000, 16, "not registered", 0},
    {"operator calls Sign", E2E_OPS, SIGN, REQ_SIGN, PERSONAL, "bad.ec", 100, NULL, 0, 0, NULL,
     0, 10000, 7, "may not sign", 0},
    {"archivist calls Sign", E2E_ARCH, SIGN, REQ_SIGN, PERSONAL, "bad.ec", 100, NULL, 0, 0, NULL,
     0, 10000, 7, "may not sign", 0},
    {"dms calls Keys.Generate", E2E_DMS, "/kyso.v1.Keys/Generate", REQ_GENERATE, PERSONAL,
     "bad.new", 0, NULL, 0, 0, NULL, 0, 10000, 7, "may not keys.generate", 0},
    {"Keys.Generate of an existing key", E2E_OPS, "/kyso.v1.Keys/Generate", REQ_GENERATE,
     PERSONAL, "bad.ec", 0, NULL, 0, 0, NULL, 0, 10000, 6, "", 0},
    {"import of garbage as a certificate", E2E_OPS, "/kyso.v1.Keys/ImportCertificate",
     REQ_IMPORT, PERSONAL, "bad.nocert", 0, "not a certificate", 17, 0, NULL, 0, 10000, 3,
     "not a DER or PEM", 0},
    {"import of another key's certificate", E2E_OPS, "/kyso.v1.Keys/ImportCertificate",
     REQ_IMPORT_FILE, PERSONAL, "bad.nocert", 0, "client.pem", 0, 0, NULL, 0, 10000, 3, "", 0},
    {"import for a key that does not exist", E2E_OPS, "/kyso.v1.Keys/ImportCertificate",
     REQ_IMPORT_FILE, PERSONAL, "nobody.here", 0, "client.pem", 0, 0, NULL, 0, 10000, 5, "", 0},
    {"Health/Check without a client certificate", E2E_ANON, HEALTH, REQ_HEALTH, 0, NULL, 0, "",
     0, 0, NULL, 0, 10000, 0, "", 0},
    {"Health/Check of an unknown service", E2E_ANON, HEALTH, REQ_HEALTH, 0, NULL, 0, "kyso.v1.X",
     0, 0, NULL, 0, 10000, 5, "", 0},
};

/* Serialises c's request into *out (malloc()ed). */
static size_t build(const bad_case *c, uint8_t **out) {
  Kyso__V1__KeyRef ref;
  ProtobufCMessage *msg = NULL;
  Kyso__V1__SignRequest sreq = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  Kyso__V1__GenerateKeyRequest greq = KYSO__V1__GENERATE_KEY_REQUEST__INIT;
  Kyso__V1__ImportCertificateRequest ireq = KYSO__V1__IMPORT_CERTIFICATE_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  uint8_t *doc = NULL, *file = NULL;
  char rid[KYSO_MAX_REQUEST_ID + 64];
  if (c->account) e2e_key_ref(&ref, c->role, c->account);
  switch (c->kind) {
    case REQ_RAW:
      *out = malloc(c->raw_len + 1);
      memcpy(*out, c->raw, c->raw_len);
      return c->raw_len;
    case REQ_SIGN:
    case REQ_TRUNCATED:
      doc = malloc(c->doc_len + 1);
      for (size_t i = 0; i < c->doc_len; i++) doc[i] = (uint8_t)(i * 31);
      sreq.document.data = doc;
      sreq.document.len = c->doc_len;
      sreq.key = &ref;
      sreq.rsa_scheme = (Kyso__V1__RsaScheme)c->rsa_scheme;
      if (c->title) {
        meta.title = (char *)c->title;
        sreq.metadata = &meta;
      }
      if (c->request_id_len) {
        memset(rid, 'r', c->request_id_len);
        rid[c->request_id_len] = '\0';
        sreq.request_id = rid;
      }
      msg = &sreq.base;
      break;
    case REQ_GENERATE:
      greq.key = &ref;
      greq.algorithm = KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256;
      msg = &greq.base;
      break;
    case REQ_IMPORT:
    case REQ_IMPORT_FILE:
      ireq.key = &ref;
      if (c->kind == REQ_IMPORT_FILE) {
        file = e2e_read_file(e2e_path(E, "pki/%s", c->raw), &ireq.certificate.len);
        ireq.certificate.data = file;
      } else {
        ireq.certificate.data = (uint8_t *)c->raw;
        ireq.certificate.len = c->raw_len;
      }
      msg = &ireq.base;
      break;
    case REQ_HEALTH:
      hreq.service = (char *)c->raw;
      msg = &hreq.base;
      break;
  }
  size_t n = protobuf_c_message_get_packed_size(msg);
  *out = malloc(n + 1);
  protobuf_c_message_pack(msg, *out);
  free(doc);
  free(file);
  return c->kind == REQ_TRUNCATED ? n / 2 : n;
}

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  return 0;
}

static void start_and_provision(void **state) {
  (void)state;
  e2e_start(E, NULL);
  e2e_provision_key(E, PERSONAL, "bad.ec", KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
  e2e_generate_key(E, PERSONAL, "bad.nocert", KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
}

static void bad_requests(void **state) {
  (void)state;
  int failures = 0;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const bad_case *c = &cases[i];
    uint8_t *req = NULL;
    kyso_reply reply;
    size_t len = build(c, &req);
    int64_t t0 = kyso_now_ms();
    int st = e2e_call_raw(E, c->who, c->method, req, len, c->deadline_ms, &reply);
    int64_t elapsed = kyso_now_ms() - t0;
    free(req);
    const char *got = st >= 0 && st <= 16 ? e2e_grpc_status_names[st] : "?";
    int ok = st == c->want_status && strstr(reply.message, c->want_substr) != NULL &&
             (c->max_elapsed_ms == 0 || elapsed < c->max_elapsed_ms);
    if (ok && c->kind == REQ_HEALTH && st == 0) {
      Grpc__Health__V1__HealthCheckResponse *h =
          grpc__health__v1__health_check_response__unpack(NULL, reply.len, reply.data);
      ok = h && h->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
      if (!ok) print_error("case \"%s\": health status is not SERVING\n", c->name);
      grpc__health__v1__health_check_response__free_unpacked(h, NULL);
    }
    printf("[ %-6s ] %-44s %s in %lld ms: %s\n", ok ? "ok" : "FAILED", c->name, got,
           (long long)elapsed, reply.message);
    if (!ok) {
      failures++;
      print_error("case \"%s\": got %s (%d) \"%s\" after %lld ms, want %s (%d) with \"%s\"%s\n",
                  c->name, got, st, reply.message, (long long)elapsed,
                  e2e_grpc_status_names[c->want_status], c->want_status, c->want_substr,
                  c->max_elapsed_ms ? " within the time limit" : "");
    }
    kyso_reply_free(&reply);
  }
  E2E_EQ("failed cases", failures, 0);
}

/* After all of that the node still serves, and logged nothing alarming. */
static void still_serving(void **state) {
  (void)state;
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *h = NULL;
  Kyso__V1__SignResponse *resp = NULL;
  char msg[512];
  int st = e2e_call(E, E2E_DMS, HEALTH, &hreq.base,
                    &grpc__health__v1__health_check_response__descriptor, 10000,
                    (ProtobufCMessage **)&h, msg, sizeof(msg));
  E2E_EQ("Health/Check status", st, 0);
  E2E_EQ("serving status", h->status,
         GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  grpc__health__v1__health_check_response__free_unpacked(h, NULL);
  static const uint8_t doc[] = "Công văn số 123/UBND-VP";
  st = e2e_sign(E, E2E_DMS, PERSONAL, "bad.ec", 0, doc, sizeof(doc) - 1, "after-bad", 10000,
                &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("valid Sign after the bad ones: got status %d (%s), want OK", st, msg);
  e2e_write_file(e2e_path(E, "work/after.doc"), doc, sizeof(doc) - 1);
  e2e_write_file(e2e_path(E, "work/after.p7s"), resp->signature.data, resp->signature.len);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  E2E_EQ("openssl cms -verify exit",
         e2e_openssl_verify(E, e2e_path(E, "work/after.doc"), e2e_path(E, "work/after.p7s")), 0);
  e2e_check_log_clean(E);
}

static void stop_clean(void **state) {
  (void)state;
  e2e_stop(E); /* also checks the log once more: sanitizer reports at exit */
}

static int teardown(void **state) {
  (void)state;
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_and_provision),
      cmocka_unit_test(bad_requests),
      cmocka_unit_test(still_serving),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_bad_input", tests, setup, teardown);
}
