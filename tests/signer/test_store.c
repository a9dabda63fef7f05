/* kyso tests — the certificate store behind signer_import_certificate and
 * signer_certificate, over the in-memory HSM: limits, durability across a
 * restart, replacement, damaged files, hostile labels. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>

#include "fake_fixture.h"
#include "fake_hsm.h"
#include "flow.h"
#include "signer_internal.h"
#include "testutil.h"

typedef fake_fixture fixture;

#define TRAVERSAL "../../escape"

static int setup(void **state) {
  static const fake_key keys[] = {{"user-1", HSM_KEY_EC_P256},
                                    {"user-2", HSM_KEY_EC_P256},
                                    {TRAVERSAL, HSM_KEY_EC_P256}};
  fixture *f = fake_fixture_new("signer-store", keys, sizeof(keys) / sizeof(keys[0]));
  *state = f;
  return f != NULL ? 0 : -1;
}

static int teardown(void **state) {
  fake_fixture_free(*state);
  return 0;
}

static void test_dir_created_private(void **state) {
  fixture *f = *state;
  struct stat sb;
  assert_int_equal(stat(f->certs, &sb), 0);
  assert_true(S_ISDIR(sb.st_mode));
  assert_int_equal(sb.st_mode & 0777, 0700);
  /* A file where the directory should be. */
  char path[600];
  signer *s = NULL;
  snprintf(path, sizeof(path), "%s/not-a-dir", f->dir);
  assert_true(tu_write(path, "x", 1));
  assert_int_equal(signer_open(f->h, path, &s, NULL), KYSO_FAILED_PRECONDITION);
  assert_null(s);
}

static void test_lookups(void **state) {
  fixture *f = *state;
  X509 *x = (X509 *)1;
  kyso_err err = {0};
  assert_int_equal(signer_certificate(f->s, "user-1", &x, NULL, &err), KYSO_NOT_FOUND);
  assert_null(x);
  assert_non_null(strstr(err.msg, "user-1"));
  assert_int_equal(signer_certificate(f->s, "", &x, NULL, NULL), KYSO_INVALID_ARGUMENT);
  assert_int_equal(signer_certificate(f->s, "bad\x01label", &x, NULL, NULL),
                   KYSO_INVALID_ARGUMENT);
  assert_int_equal(signer_import_certificate(f->s, "user-1", NULL, NULL, NULL),
                   KYSO_INVALID_ARGUMENT);
}

/* Import, then a re-issued certificate replaces it; a restart reads the
 * newest from disk; the chain limit holds. */
static void test_import_replace_restart(void **state) {
  fixture *f = *state;
  kyso_err err = {0};
  X509 *first = NULL, *second = NULL, *x = NULL;
  STACK_OF(X509) *chain = NULL;
  flow_certify(f->s, "user-1", f->pki);
  assert_int_equal(signer_certificate(f->s, "user-1", &first, NULL, NULL), KYSO_OK);
  flow_certify(f->s, "user-1", f->pki);
  assert_int_equal(signer_certificate(f->s, "user-1", &second, NULL, NULL), KYSO_OK);
  assert_int_not_equal(X509_cmp(first, second), 0);

  signer *s2 = NULL;
  assert_int_equal(signer_open(f->h, f->certs, &s2, &err), KYSO_OK);
  assert_int_equal(signer_certificate(s2, "user-1", &x, &chain, &err), KYSO_OK);
  assert_int_equal(X509_cmp(x, second), 0);
  assert_int_equal(sk_X509_num(chain), 1);
  X509_free(x);

  /* KYSO_MAX_CERT_CHAIN chain certificates are fine, one more is not. */
  X509 *sub = sk_X509_value(chain, 0);
  while (sk_X509_num(chain) < KYSO_MAX_CERT_CHAIN) {
    X509_up_ref(sub);
    sk_X509_push(chain, sub);
  }
  assert_int_equal(signer_import_certificate(s2, "user-1", second, chain, &err), KYSO_OK);
  X509_up_ref(sub);
  sk_X509_push(chain, sub);
  assert_int_equal(signer_import_certificate(s2, "user-1", second, chain, &err),
                   KYSO_INVALID_ARGUMENT);
  assert_non_null(strstr(err.msg, "limit"));
  signer_close(s2);
  sk_X509_pop_free(chain, X509_free);
  X509_free(first);
  X509_free(second);
}

/* Unknown key: the HSM's NOT_FOUND. */
static void test_import_unknown_key(void **state) {
  fixture *f = *state;
  X509 *x = NULL;
  kyso_err err = {0};
  assert_int_equal(signer_certificate(f->s, "user-1", &x, NULL, NULL), KYSO_OK);
  assert_int_equal(signer_import_certificate(f->s, "nobody", x, NULL, &err), KYSO_NOT_FOUND);
  X509_free(x);
}

/* A label that looks like a path stays a file name inside the directory. */
static void test_hostile_label(void **state) {
  fixture *f = *state;
  char path[700];
  struct stat sb;
  flow_certify(f->s, TRAVERSAL, f->pki);
  snprintf(path, sizeof(path), "%s/%%2E.%%2F..%%2Fescape.pem", f->certs);
  assert_int_equal(stat(path, &sb), 0);
  snprintf(path, sizeof(path), "%s/../escape.pem", f->certs);
  assert_int_not_equal(stat(path, &sb), 0);
  snprintf(path, sizeof(path), "%s/../../escape.pem", f->certs);
  assert_int_not_equal(stat(path, &sb), 0);
}

/* A damaged file is DATA_LOSS naming the file, not a crash or a wrong cert. */
static void test_damaged_file(void **state) {
  fixture *f = *state;
  static const struct {
    const char *what, *content;
  } cases[] = {
      {"garbage", "this is not PEM at all\n"},
      {"broken base64", "-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n"},
      {"empty", ""},
      {"not a certificate",
       "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"},
      {"PEM headers", "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n"
                      "-----END CERTIFICATE-----\n"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char path[700];
    signer *s2 = NULL;
    X509 *x = NULL;
    kyso_err err = {0};
    snprintf(path, sizeof(path), "%s/user-1.pem", f->certs);
    assert_true(tu_write(path, cases[i].content, strlen(cases[i].content)));
    assert_int_equal(signer_open(f->h, f->certs, &s2, NULL), KYSO_OK); /* empty cache */
    kyso_status st = signer_certificate(s2, "user-1", &x, NULL, &err);
    if (st != KYSO_DATA_LOSS || strstr(err.msg, path) == NULL)
      fail_msg("%s: got %s (%s), want DATA_LOSS naming the file", cases[i].what,
               kyso_strerror(st), err.msg);
    assert_null(x);
    signer_close(s2);
    ERR_clear_error();
  }
}

/* Keys certified under the same CA share one parsed chain certificate,
 * after a restart too (the store parses each distinct one once); a damaged
 * chain block after a good leaf is still DATA_LOSS. */
static void test_chain_shared(void **state) {
  fixture *f = *state;
  kyso_err err = {0};
  signer *s2 = NULL;
  X509 *x1 = NULL, *x2 = NULL;
  STACK_OF(X509) *c1 = NULL, *c2 = NULL;
  flow_certify(f->s, "user-1", f->pki);
  flow_certify(f->s, "user-2", f->pki);
  assert_int_equal(signer_open(f->h, f->certs, &s2, &err), KYSO_OK);
  assert_int_equal(signer_certificate(s2, "user-1", &x1, &c1, &err), KYSO_OK);
  assert_int_equal(signer_certificate(s2, "user-2", &x2, &c2, &err), KYSO_OK);
  assert_int_not_equal(X509_cmp(x1, x2), 0);
  assert_int_equal(sk_X509_num(c1), 1);
  assert_int_equal(sk_X509_num(c2), 1);
  assert_ptr_equal(sk_X509_value(c1, 0), sk_X509_value(c2, 0));
  /* The shared certificate outlives the signer for as long as we hold it. */
  signer_close(s2);
  assert_int_equal(X509_check_issued(sk_X509_value(c1, 0), x1), X509_V_OK);
  sk_X509_pop_free(c1, X509_free);
  sk_X509_pop_free(c2, X509_free);

  char path[700];
  BIO *mem = BIO_new(BIO_s_mem());
  char *pem = NULL;
  assert_true(PEM_write_bio_X509(mem, x1));
  BIO_puts(mem, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  long n = BIO_get_mem_data(mem, &pem);
  snprintf(path, sizeof(path), "%s/user-2.pem", f->certs);
  assert_true(tu_write(path, pem, (size_t)n));
  assert_int_equal(signer_open(f->h, f->certs, &s2, &err), KYSO_OK);
  X509 *x = NULL;
  assert_int_equal(signer_certificate(s2, "user-2", &x, NULL, &err), KYSO_DATA_LOSS);
  assert_null(x);
  signer_close(s2);
  BIO_free(mem);
  X509_free(x1);
  X509_free(x2);
  ERR_clear_error();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dir_created_private),
      cmocka_unit_test(test_lookups),
      cmocka_unit_test(test_import_replace_restart),
      cmocka_unit_test(test_import_unknown_key),
      cmocka_unit_test(test_hostile_label),
      cmocka_unit_test(test_damaged_file),
      cmocka_unit_test(test_chain_shared),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
