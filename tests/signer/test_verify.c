/* kyso tests — signer_verify_cms on signatures made by the openssl command
 * line with the test PKI's software keys (so no HSM is involved): what
 * verifies, and which status each kind of bad input gets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "kyso/signer.h"
#include "testutil.h"

typedef struct fixture {
  char dir[256];
  char pki[512];
  uint8_t *good, *attached, *no_ess, *digest;
  size_t good_len, attached_len, no_ess_len, digest_len;
} fixture;

static const char doc[] = "Tờ trình số 45/TTr-SNV\n";

/* openssl cms <args> over doc with the client key; the DER it wrote. */
static uint8_t *cli_cms(fixture *f, const char *name, const char *args, size_t *len) {
  char out[600];
  snprintf(out, sizeof(out), "%s/%s.der", f->dir, name);
  if (tu_run("cd '%s' && openssl cms %s -binary -in '%s/doc.txt' -outform DER -out '%s' "
             "2>/dev/null",
             f->pki, args, f->dir, out) != 0)
    return NULL;
  return tu_read(out, len);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  char path[600];
  if (f == NULL || !tu_tmpdir("signer-verify", f->dir)) return -1;
  snprintf(f->pki, sizeof(f->pki), "%s/pki", f->dir);
  snprintf(path, sizeof(path), "%s/doc.txt", f->dir);
  if (!tu_pki_init(f->pki) || !tu_write(path, doc, sizeof(doc) - 1)) return -1;
#define SIGN "-sign -signer client.pem -inkey client.key -md sha256"
  f->good = cli_cms(f, "good", SIGN " -cades -certfile chain.pem", &f->good_len);
  f->attached = cli_cms(f, "attached", SIGN " -cades -nodetach", &f->attached_len);
  f->no_ess = cli_cms(f, "no-ess", SIGN " -certfile chain.pem", &f->no_ess_len);
  f->digest = cli_cms(f, "digest", "-digest_create -md sha256", &f->digest_len);
  if (!f->good || !f->attached || !f->no_ess || !f->digest) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  free(f->good);
  free(f->attached);
  free(f->no_ess);
  free(f->digest);
  tu_rmdir(f->dir);
  free(f);
  return 0;
}

static void test_openssl_made_signature_verifies(void **state) {
  fixture *f = *state;
  X509_STORE *store = tu_pki_store(f->pki);
  X509 *who = NULL;
  kyso_err err = {0};
  kyso_status st = signer_verify_cms(store, f->good, f->good_len, (const uint8_t *)doc,
                                     sizeof(doc) - 1, &who, &err);
  if (st != KYSO_OK) fail_msg("got %s: %s", kyso_strerror(st), err.msg);
  char path[600];
  snprintf(path, sizeof(path), "%s/client.pem", f->pki);
  FILE *fp = fopen(path, "r");
  X509 *client = PEM_read_X509(fp, NULL, NULL, NULL);
  fclose(fp);
  assert_int_equal(X509_cmp(who, client), 0);
  X509_free(client);
  X509_free(who);
  /* signer_out is optional. */
  assert_int_equal(signer_verify_cms(store, f->good, f->good_len, (const uint8_t *)doc,
                                     sizeof(doc) - 1, NULL, NULL), KYSO_OK);
  X509_STORE_free(store);
}

static void test_bad_inputs(void **state) {
  fixture *f = *state;
  uint8_t trailing[8192], truncated[8192], badsig[8192], garbage[64];
  memset(garbage, 0x30, sizeof(garbage));
  assert_true(f->good_len + 1 <= sizeof(trailing));
  memcpy(trailing, f->good, f->good_len);
  trailing[f->good_len] = 0;
  memcpy(truncated, f->good, f->good_len);
  memcpy(badsig, f->good, f->good_len);
  badsig[f->good_len - 1] ^= 0x01; /* the SignerInfo's signature value ends the DER */
  uint8_t flipped[sizeof(doc) - 1];
  memcpy(flipped, doc, sizeof(flipped));
  flipped[3] ^= 0x20;
  X509_STORE *trusted = tu_pki_store(f->pki), *empty = X509_STORE_new();
  X509_STORE *strict = X509_STORE_new(); /* root trusted, default S/MIME purpose */
  char root[600];
  snprintf(root, sizeof(root), "%s/root.pem", f->pki);
  assert_int_equal(X509_STORE_load_file(strict, root), 1);
  const uint8_t *d = (const uint8_t *)doc;
  size_t dl = sizeof(doc) - 1;
  const struct {
    const char *what;
    X509_STORE *store;
    const uint8_t *sig;
    size_t sig_len;
    const uint8_t *doc;
    size_t doc_len;
    kyso_status want;
  } cases[] = {
      {"garbage", trusted, garbage, sizeof(garbage), d, dl, KYSO_INVALID_ARGUMENT},
      {"truncated DER", trusted, truncated, f->good_len - 10, d, dl, KYSO_INVALID_ARGUMENT},
      {"trailing byte", trusted, trailing, f->good_len + 1, d, dl, KYSO_INVALID_ARGUMENT},
      {"content embedded", trusted, f->attached, f->attached_len, d, dl, KYSO_INVALID_ARGUMENT},
      {"DigestedData", trusted, f->digest, f->digest_len, d, dl, KYSO_INVALID_ARGUMENT},
      {"empty signature", trusted, f->good, 0, d, dl, KYSO_INVALID_ARGUMENT},
      {"no store", NULL, f->good, f->good_len, d, dl, KYSO_INVALID_ARGUMENT},
      {"NULL document", trusted, f->good, f->good_len, NULL, 5, KYSO_INVALID_ARGUMENT},
      {"flipped document byte", trusted, f->good, f->good_len, flipped, dl,
       KYSO_FAILED_PRECONDITION},
      {"shorter document", trusted, f->good, f->good_len, d, dl - 1, KYSO_FAILED_PRECONDITION},
      {"flipped signature byte", trusted, badsig, f->good_len, d, dl, KYSO_FAILED_PRECONDITION},
      {"untrusted root", empty, f->good, f->good_len, d, dl, KYSO_FAILED_PRECONDITION},
      {"clientAuth-only cert, S/MIME purpose", strict, f->good, f->good_len, d, dl,
       KYSO_FAILED_PRECONDITION},
      {"no signing-certificate-v2", trusted, f->no_ess, f->no_ess_len, d, dl,
       KYSO_FAILED_PRECONDITION},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    X509 *who = (X509 *)1;
    kyso_err err = {0};
    kyso_status got = signer_verify_cms(cases[i].store, cases[i].sig, cases[i].sig_len,
                                        cases[i].doc, cases[i].doc_len, &who, &err);
    if (got != cases[i].want)
      fail_msg("%s: got %s (%s), want %s", cases[i].what, kyso_strerror(got), err.msg,
               kyso_strerror(cases[i].want));
    assert_null(who);
    assert_true(err.msg[0] != '\0');
    print_message("%-40s %s: %.160s\n", cases[i].what, kyso_strerror(got), err.msg);
    assert_int_equal(ERR_peek_error(), 0); /* nothing left behind */
  }
  X509_STORE_free(trusted);
  X509_STORE_free(empty);
  X509_STORE_free(strict);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_openssl_made_signature_verifies),
      cmocka_unit_test(test_bad_inputs),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
