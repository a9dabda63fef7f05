/* The key registry: RecordKey and RecordCertificate through the one apply
 * function — what is stored, what a retry answers, what is refused, and
 * that the registry is part of the state digest. Keys and certificates are
 * real (OpenSSL, in memory), so the public-key comparison is the real one. */
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define T0 1714550400000LL
#define LABEL "kyso/personal/nguyen.van.a"

typedef struct der {
  uint8_t *p;
  size_t n;
} der;

typedef struct fixture {
  char *dir;
  archive *a;
  EVP_PKEY *key, *other;
  der spki, other_spki;
} fixture;

static EVP_PKEY *ec_key(void) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  assert_non_null(k);
  return k;
}

static der spki_of(EVP_PKEY *k) {
  der d = {0};
  unsigned char *p = NULL;
  int n = i2d_PUBKEY(k, &p);
  assert_true(n > 0);
  d.p = p;
  d.n = (size_t)n;
  return d;
}

/* A self-signed certificate for k, serial s (distinct DER per serial). */
static der cert_of(EVP_PKEY *k, long s) {
  X509 *x = X509_new();
  der d = {0};
  unsigned char *p = NULL;
  assert_non_null(x);
  ASN1_INTEGER_set(X509_get_serialNumber(x), s);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const unsigned char *)"Nguyen Van A", -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  X509_set_pubkey(x, k);
  assert_true(X509_sign(x, k, EVP_sha256()) > 0);
  int n = i2d_X509(x, &p);
  assert_true(n > 0);
  d.p = p;
  d.n = (size_t)n;
  X509_free(x);
  return d;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  f->dir = tu_tmpdir();
  f->a = tu_open(f->dir, NULL);
  f->key = ec_key();
  f->other = ec_key();
  f->spki = spki_of(f->key);
  f->other_spki = spki_of(f->other);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  archive_close(f->a);
  tu_rmrf(f->dir);
  free(f->dir);
  OPENSSL_free(f->spki.p);
  OPENSSL_free(f->other_spki.p);
  EVP_PKEY_free(f->key);
  EVP_PKEY_free(f->other);
  free(f);
  return 0;
}

static uint8_t *pack(Kyso__Store__V1__Command *c, const char *request_id, size_t *len) {
  c->version = 2;
  c->time_unix_ms = T0;
  c->principal = "admin";
  c->request_id = (char *)(request_id ? request_id : "");
  *len = kyso__store__v1__command__get_packed_size(c);
  uint8_t *p = malloc(*len);
  assert_non_null(p);
  kyso__store__v1__command__pack(c, p);
  return p;
}

static uint8_t *key_cmd(const char *label, const char *alg, const der *spki, const char *wrapped,
                        const char *kek, const char *request_id, size_t *len) {
  Kyso__Store__V1__RecordKey k = KYSO__STORE__V1__RECORD_KEY__INIT;
  Kyso__Store__V1__Command c = KYSO__STORE__V1__COMMAND__INIT;
  k.label = (char *)label;
  k.algorithm = (char *)alg;
  k.public_key.data = spki->p;
  k.public_key.len = spki->n;
  k.wrapped.data = (uint8_t *)wrapped;
  k.wrapped.len = wrapped ? strlen(wrapped) : 0;
  k.kek_label = (char *)(kek ? kek : "");
  k.origin_node = 2;
  c.op_case = KYSO__STORE__V1__COMMAND__OP_RECORD_KEY;
  c.record_key = &k;
  return pack(&c, request_id, len);
}

static uint8_t *cert_cmd(const char *label, const der *cert, const der *chain, size_t *len) {
  Kyso__Store__V1__RecordCertificate r = KYSO__STORE__V1__RECORD_CERTIFICATE__INIT;
  Kyso__Store__V1__Command c = KYSO__STORE__V1__COMMAND__INIT;
  ProtobufCBinaryData ch = {0};
  r.label = (char *)label;
  r.certificate.data = cert->p;
  r.certificate.len = cert->n;
  if (chain != NULL) {
    ch.data = chain->p;
    ch.len = chain->n;
    r.chain = &ch;
    r.n_chain = 1;
  }
  c.op_case = KYSO__STORE__V1__COMMAND__OP_RECORD_CERTIFICATE;
  c.record_certificate = &r;
  return pack(&c, NULL, len);
}

static Kyso__Store__V1__KeyRecord *record_of(fixture *f, const char *label) {
  uint8_t *v = NULL;
  size_t n = 0;
  kyso_err err = {0};
  assert_int_equal(archive_get_key(f->a, label, &v, &n, &err), KYSO_OK);
  Kyso__Store__V1__KeyRecord *r = kyso__store__v1__key_record__unpack(NULL, n, v);
  assert_non_null(r);
  free(v);
  return r;
}

static void add_key(fixture *f) {
  size_t n;
  uint8_t *cmd = key_cmd(LABEL, "ec-p256", &f->spki, "wrapped-bytes", "kyso-kek", NULL, &n);
  archive__result *r = tu_submit_ok(f->a, cmd, n, NULL, 0);
  assert_string_equal(r->key_label, LABEL);
  assert_false(r->replayed);
  tu_result_free(r);
  free(cmd);
}

static void test_key_is_recorded_once(void **state) {
  fixture *f = *state;
  size_t n;
  kyso_err err = {0};
  uint8_t *v = NULL;
  size_t vn = 0;
  assert_int_equal(archive_get_key(f->a, LABEL, &v, &vn, &err), KYSO_NOT_FOUND);
  assert_non_null(strstr(err.msg, LABEL));
  add_key(f);
  Kyso__Store__V1__KeyRecord *r = record_of(f, LABEL);
  assert_string_equal(r->algorithm, "ec-p256");
  assert_int_equal(r->public_key.len, f->spki.n);
  assert_memory_equal(r->public_key.data, f->spki.p, f->spki.n);
  assert_int_equal(r->wrapped.len, strlen("wrapped-bytes"));
  assert_string_equal(r->kek_label, "kyso-kek");
  assert_int_equal(r->origin_node, 2);
  assert_string_equal(r->principal, "admin");
  assert_int_equal(r->created_unix_ms, T0);
  assert_int_equal(r->certificate.len, 0);
  kyso__store__v1__key_record__free_unpacked(r, NULL);

  /* The same key again (a retried Generate): answered, nothing new. */
  uint8_t *again = key_cmd(LABEL, "ec-p256", &f->spki, "other-wrap", "kyso-kek", NULL, &n);
  archive__result *res = tu_submit_ok(f->a, again, n, NULL, 0);
  assert_true(res->replayed);
  tu_result_free(res);
  free(again);
  r = record_of(f, LABEL);
  assert_int_equal(r->wrapped.len, strlen("wrapped-bytes")); /* the first copy stays */
  kyso__store__v1__key_record__free_unpacked(r, NULL);

  /* Another key under the label: refused, naming the node that made the first. */
  uint8_t *other = key_cmd(LABEL, "ec-p256", &f->other_spki, "w", "kyso-kek", NULL, &n);
  const char *msg = tu_submit_fails(f->a, other, n, NULL, 0, KYSO_ALREADY_EXISTS);
  assert_non_null(strstr(msg, "node 2"));
  free(other);
}

static void test_certificate_must_certify_the_key(void **state) {
  fixture *f = *state;
  size_t n;
  der mine = cert_of(f->key, 1), theirs = cert_of(f->other, 2);
  /* No key in the registry yet. */
  uint8_t *cmd = cert_cmd(LABEL, &mine, NULL, &n);
  const char *msg = tu_submit_fails(f->a, cmd, n, NULL, 0, KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(msg, "not in the key registry"));
  free(cmd);
  add_key(f);
  /* A certificate of another key. */
  cmd = cert_cmd(LABEL, &theirs, NULL, &n);
  msg = tu_submit_fails(f->a, cmd, n, NULL, 0, KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(msg, "public key differs"));
  free(cmd);
  /* Not DER at all. */
  der junk = {(uint8_t *)"not a certificate", 17};
  cmd = cert_cmd(LABEL, &junk, NULL, &n);
  tu_submit_fails(f->a, cmd, n, NULL, 0, KYSO_FAILED_PRECONDITION);
  free(cmd);
  Kyso__Store__V1__KeyRecord *r = record_of(f, LABEL);
  assert_int_equal(r->certificate.len, 0);
  kyso__store__v1__key_record__free_unpacked(r, NULL);
  OPENSSL_free(mine.p);
  OPENSSL_free(theirs.p);
}

static void test_certificates_replace_and_stay(void **state) {
  fixture *f = *state;
  size_t n;
  kyso_err err = {0};
  der first = cert_of(f->key, 10), second = cert_of(f->key, 11), ca = cert_of(f->other, 12);
  add_key(f);
  uint8_t *cmd = cert_cmd(LABEL, &first, &ca, &n);
  archive__result *res = tu_submit_ok(f->a, cmd, n, NULL, 0);
  assert_false(res->replayed);
  assert_string_equal(res->key_label, LABEL);
  tu_result_free(res);
  /* Imported again: nothing changes. */
  res = tu_submit_ok(f->a, cmd, n, NULL, 0);
  assert_true(res->replayed);
  tu_result_free(res);
  free(cmd);
  Kyso__Store__V1__KeyRecord *r = record_of(f, LABEL);
  assert_int_equal(r->certificate_generation, 1);
  assert_int_equal(r->certificate.len, first.n);
  assert_memory_equal(r->certificate.data, first.p, first.n);
  assert_int_equal(r->n_chain, 1);
  assert_int_equal(r->certificate_unix_ms, T0);
  kyso__store__v1__key_record__free_unpacked(r, NULL);

  cmd = cert_cmd(LABEL, &second, NULL, &n);
  tu_result_free(tu_submit_ok(f->a, cmd, n, NULL, 0));
  free(cmd);
  r = record_of(f, LABEL);
  assert_int_equal(r->certificate_generation, 2);
  assert_memory_equal(r->certificate.data, second.p, second.n);
  assert_int_equal(r->n_chain, 0);
  assert_string_equal(r->algorithm, "ec-p256"); /* the key's fields are untouched */
  assert_memory_equal(r->public_key.data, f->spki.p, f->spki.n);
  kyso__store__v1__key_record__free_unpacked(r, NULL);
  /* The replaced certificate stays readable for signatures made under it. */
  uint8_t id[32], *got = NULL;
  size_t got_len = 0;
  tu_sha256(first.p, first.n, id);
  assert_int_equal(archive_get_certificate(f->a, id, &got, &got_len, &err), KYSO_OK);
  assert_int_equal(got_len, first.n);
  free(got);
  OPENSSL_free(first.p);
  OPENSSL_free(second.p);
  OPENSSL_free(ca.p);
}

static void test_key_commands_are_checked(void **state) {
  fixture *f = *state;
  size_t n;
  struct {
    const char *label, *alg, *wrapped, *kek, *request_id, *why;
  } bad[] = {
      {LABEL, "ec-p256", "w", "kyso-kek", "gen-1", "no request_id"},
      {LABEL, "dsa-1024", NULL, NULL, NULL, "is unknown"},
      {LABEL, "ec-p256", "w", NULL, NULL, "kek_label is empty"},
      {"", "ec-p256", NULL, NULL, NULL, "key.label is empty"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint8_t *cmd =
        key_cmd(bad[i].label, bad[i].alg, &f->spki, bad[i].wrapped, bad[i].kek, bad[i].request_id,
                &n);
    const char *msg = tu_submit_fails(f->a, cmd, n, NULL, 0, KYSO_INVALID_ARGUMENT);
    if (strstr(msg, bad[i].why) == NULL) fail_msg("case %zu: '%s' lacks '%s'", i, msg, bad[i].why);
    free(cmd);
  }
  der none = {NULL, 0};
  uint8_t *cmd = key_cmd(LABEL, "ec-p256", &none, NULL, NULL, NULL, &n);
  tu_submit_fails(f->a, cmd, n, NULL, 0, KYSO_INVALID_ARGUMENT);
  free(cmd);
  /* Key commands came with command version 2: a version-1 one is malformed. */
  cmd = key_cmd(LABEL, "ec-p256", &f->spki, NULL, NULL, NULL, &n);
  Kyso__Store__V1__Command *c1 = kyso__store__v1__command__unpack(NULL, n, cmd);
  c1->version = 1;
  uint8_t v1[512];
  size_t v1n = kyso__store__v1__command__pack(c1, v1);
  kyso__store__v1__command__free_unpacked(c1, NULL);
  assert_non_null(strstr(tu_submit_fails(f->a, v1, v1n, NULL, 0, KYSO_INVALID_ARGUMENT),
                         "version 2 or later"));
  free(cmd);
  /* A key command carries no document. */
  cmd = key_cmd(LABEL, "ec-p256", &f->spki, NULL, NULL, NULL, &n);
  tu_submit_fails(f->a, cmd, n, (const uint8_t *)"x", 1, KYSO_INVALID_ARGUMENT);
  free(cmd);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_KEYS, NULL, 0), 0);
}

static kyso_status collect(void *ctx, const char *label, const uint8_t *rec, size_t len,
                           kyso_err *err) {
  (void)err;
  char *seen = ctx;
  Kyso__Store__V1__KeyRecord *r = kyso__store__v1__key_record__unpack(NULL, len, rec);
  assert_non_null(r);
  assert_string_equal(r->label, label);
  kyso__store__v1__key_record__free_unpacked(r, NULL);
  strcat(seen, label);
  strcat(seen, ";");
  return KYSO_OK;
}

static void test_registry_walk_and_digest(void **state) {
  fixture *f = *state;
  size_t n;
  kyso_err err = {0};
  uint8_t before[32], after[32];
  uint64_t applied = 0, records = 0;
  char seen[512] = "";
  assert_int_equal(archive_state_digest(f->a, before, &applied, &records, &err), KYSO_OK);
  const char *labels[] = {"kyso/seal/H37.DN.001", "kyso/personal/b", "kyso/personal/a"};
  for (size_t i = 0; i < 3; i++) {
    uint8_t *cmd = key_cmd(labels[i], "ec-p256", &f->spki, NULL, NULL, NULL, &n);
    tu_result_free(tu_submit_ok(f->a, cmd, n, NULL, 0));
    free(cmd);
  }
  assert_int_equal(archive_each_key(f->a, collect, seen, &err), KYSO_OK);
  assert_string_equal(seen, "kyso/personal/a;kyso/personal/b;kyso/seal/H37.DN.001;");
  assert_int_equal(archive_state_digest(f->a, after, &applied, &records, &err), KYSO_OK);
  assert_memory_not_equal(before, after, 32);
}

/* In a replicated entry, a refused key command is an outcome the other
 * commands of the entry are not held back by. */
static void test_refusal_in_an_entry(void **state) {
  fixture *f = *state;
  size_t n1, n2, n3, elen, count = 0;
  kyso_err err = {0};
  archive_outcome *o = NULL;
  uint8_t *entry = NULL;
  uint8_t *c1 = key_cmd(LABEL, "ec-p256", &f->spki, NULL, NULL, NULL, &n1);
  uint8_t *c2 = key_cmd(LABEL, "ec-p256", &f->other_spki, NULL, NULL, NULL, &n2);
  uint8_t *c3 = key_cmd("kyso/personal/b", "rsa-2048", &f->other_spki, NULL, NULL, NULL, &n3);
  const uint8_t *cmds[] = {c1, c2, c3};
  size_t lens[] = {n1, n2, n3};
  assert_int_equal(archive_pack_entry(cmds, lens, 3, &entry, &elen, &err), KYSO_OK);
  assert_int_equal(archive_apply_entry(f->a, 1, entry, elen, &o, &count, &err), KYSO_OK);
  assert_int_equal(count, 3);
  assert_int_equal(o[0].st, KYSO_OK);
  assert_int_equal(o[1].st, KYSO_ALREADY_EXISTS);
  assert_int_equal(o[2].st, KYSO_OK);
  archive_outcomes_free(o, count);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_KEYS, NULL, 0), 2);
  free(entry);
  free(c1);
  free(c2);
  free(c3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_key_is_recorded_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_certificate_must_certify_the_key, setup, teardown),
      cmocka_unit_test_setup_teardown(test_certificates_replace_and_stay, setup, teardown),
      cmocka_unit_test_setup_teardown(test_key_commands_are_checked, setup, teardown),
      cmocka_unit_test_setup_teardown(test_registry_walk_and_digest, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refusal_in_an_entry, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
