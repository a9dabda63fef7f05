/* e2e_cli: the kyso command against a live kysod, the way an operator and
 * the DMS use it: keygen, csr (UTF-8 subject), CA issue, cert import, keys,
 * sign, verify (and a tampered document), and --help of every command. */
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"

#define SUBJECT "/C=VN/O=UBND Tỉnh/CN=Nguyễn Văn A"
#define MAX_ARGS 16

static e2e *E;

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  return 0;
}

/* A [cli] config per identity, pointing at the running node. */
static void write_cli_config(const char *name, const char *cert) {
  FILE *f = fopen(e2e_path(E, "cli-%s.ini", name), "w");
  if (f == NULL) E2E_FAIL("cannot write cli-%s.ini", name);
  fprintf(f, "[cli]\naddress = 127.0.0.1:%d\nca = %s/root.pem\ncert = %s/%s.pem\n"
             "key = %s/%s.key\nserver_name = localhost\n", E->port, E->pki, E->pki, cert,
          E->pki, cert);
  fclose(f);
}

/* Runs `kyso -c cli-<config>.ini ARGS...`; stdout+stderr go to *out (static). */
static int kyso(const char *config, const char *const *args, char **out) {
  const char *argv[MAX_ARGS + 4];
  static char *last;
  size_t n = 0;
  argv[n++] = e2e_cli_path();
  if (config) {
    argv[n++] = "-c";
    argv[n++] = strdup(e2e_path(E, "cli-%s.ini", config));
  }
  for (size_t i = 0; args[i] && n < MAX_ARGS + 3; i++) argv[n++] = args[i];
  argv[n] = NULL;
  const char *log = e2e_path(E, "work/kyso.out");
  unlink(log);
  int rc = e2e_run(argv, log);
  if (config) free((char *)argv[2]);
  free(last);
  last = (char *)e2e_read_file(log, NULL);
  if (last == NULL) last = strdup("");
  fprintf(stderr, "e2e: kyso%s%s", config ? " -c " : "", config ? config : "");
  for (size_t i = 0; args[i]; i++) fprintf(stderr, " %s", args[i]);
  fprintf(stderr, " -> exit %d\n%s", rc, last);
  if (out) *out = last;
  return rc;
}

#define KYSO_CLI_OK(config, ...)                                                        \
  do {                                                                              \
    const char *const a_[] = {__VA_ARGS__, NULL};                                   \
    int rc_ = kyso(config, a_, &out);                                               \
    if (rc_ != 0) E2E_FAIL("kyso %s: got exit %d, want 0:\n%s", a_[0], rc_, out);   \
  } while (0)

/* The UTF-8 value of field nid in name. */
static void check_name_field(const char *what, X509_NAME *name, int nid, const char *want) {
  int i = X509_NAME_get_index_by_NID(name, nid, -1);
  unsigned char *utf8 = NULL;
  if (i < 0 || ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i))) < 0)
    E2E_FAIL("%s: no %s field", what, OBJ_nid2sn(nid));
  int same = strcmp((char *)utf8, want) == 0;
  char got[256];
  snprintf(got, sizeof(got), "%s", (char *)utf8);
  OPENSSL_free(utf8);
  if (!same) E2E_FAIL("%s %s: got \"%s\", want \"%s\"", what, OBJ_nid2sn(nid), got, want);
}

static void start(void **state) {
  (void)state;
  e2e_start(E, NULL);
  write_cli_config("ops", "operator");
  write_cli_config("dms", "client");
}

static void provision_and_sign(void **state) {
  (void)state;
  char *out;
  char csr[512], cert[512], chain[512], doc[512], root[512];
  snprintf(csr, sizeof(csr), "%s", e2e_path(E, "work/cli.user.csr"));
  snprintf(cert, sizeof(cert), "%s", e2e_path(E, "work/cli.user.pem"));
  snprintf(chain, sizeof(chain), "%s", e2e_path(E, "pki/chain.pem"));
  snprintf(root, sizeof(root), "%s", e2e_path(E, "pki/root.pem"));
  snprintf(doc, sizeof(doc), "%s", e2e_path(E, "work/quyet-dinh.txt"));

  KYSO_CLI_OK("ops", "health");
  KYSO_CLI_OK("ops", "keygen", "--account", "cli.user");
  if (!strstr(out, "kyso/personal/cli.user")) E2E_FAIL("keygen output lacks the key's label");
  KYSO_CLI_OK("ops", "csr", "--account", "cli.user", "--subject", SUBJECT, "--out", csr);

  /* The CSR carries the subject as UTF-8 and is signed by the HSM key. */
  FILE *f = fopen(csr, "r");
  X509_REQ *req = f ? PEM_read_X509_REQ(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  if (req == NULL) E2E_FAIL("%s is not a PEM certificate request", csr);
  check_name_field("CSR", X509_REQ_get_subject_name(req), NID_commonName, "Nguyễn Văn A");
  check_name_field("CSR", X509_REQ_get_subject_name(req), NID_organizationName, "UBND Tỉnh");
  EVP_PKEY *pub = X509_REQ_get_pubkey(req);
  int self_ok = pub && X509_REQ_verify(req, pub) == 1;
  EVP_PKEY_free(pub);
  X509_REQ_free(req);
  if (!self_ok) E2E_FAIL("the CSR's signature does not verify with its own public key");

  if (e2e_sh(e2e_path(E, "work/issue.log"), "'%s/pki.sh' issue '%s' '%s' '%s' signer",
             e2e_fixtures_dir(), E->pki, csr, cert) != 0)
    E2E_FAIL("pki.sh issue of the CLI's CSR failed");
  KYSO_CLI_OK("ops", "cert", "import", "--account", "cli.user", cert, chain);
  KYSO_CLI_OK("ops", "keys");
  if (!strstr(out, "kyso/personal/cli.user")) E2E_FAIL("`kyso keys` does not list cli.user");
  if (strstr(out, "(no certificate)")) E2E_FAIL("`kyso keys` shows cli.user without certificate");
  if (!strstr(out, SUBJECT)) E2E_FAIL("`kyso keys` does not show the subject " SUBJECT " as UTF-8");

  static const char text[] = "ỦY BAN NHÂN DÂN TỈNH\r\nQuyết định số 45/QĐ-UBND\r\n";
  e2e_write_file(doc, text, sizeof(text) - 1);
  KYSO_CLI_OK("dms", "sign", "--account", "cli.user", "--number", "45/QĐ-UBND", "--request-id",
          "cli-1", doc);
  char sig[600];
  snprintf(sig, sizeof(sig), "%s.p7s", doc);
  if (access(sig, R_OK) != 0) E2E_FAIL("kyso sign did not write %s", sig);
  E2E_EQ("openssl cms -verify of the CLI's signature (exit)", e2e_openssl_verify(E, doc, sig), 0);
  KYSO_CLI_OK(NULL, "verify", "--ca", root, doc);
  if (!strstr(out, "signed by " SUBJECT)) E2E_FAIL("kyso verify does not name the signer " SUBJECT);
  /* A command's options may also follow its arguments. */
  char doc2[600], sig2[620];
  snprintf(doc2, sizeof(doc2), "%s", e2e_path(E, "work/cong-van.txt"));
  snprintf(sig2, sizeof(sig2), "%s.p7s", doc2);
  e2e_write_file(doc2, "x", 1);
  KYSO_CLI_OK("dms", "sign", doc2, "--account", "cli.user");
  KYSO_CLI_OK(NULL, "verify", doc2, sig2, "--ca", root);

  /* Tampered: one byte changed. */
  char tampered[] = "ỦY BAN NHÂN DÂN TỈNH\r\nQuyết định số 46/QĐ-UBND\r\n";
  e2e_write_file(doc, tampered, sizeof(tampered) - 1);
  const char *const verify_args[] = {"verify", "--ca", root, doc, NULL};
  E2E_EQ("kyso verify of a tampered document (exit)", kyso(NULL, verify_args, &out), 1);
  if (e2e_openssl_verify(E, doc, sig) == 0) E2E_FAIL("openssl verified a tampered document");

  /* The wrong identity gets a clear refusal and a non-zero exit. */
  const char *const denied[] = {"keygen", "--account", "cli.other", NULL};
  int rc = kyso("dms", denied, &out);
  if (rc == 0 || !strstr(out, "may not"))
    E2E_FAIL("kyso keygen as the DMS: got exit %d \"%s\", want non-zero with \"may not\"", rc,
             out);
}

static void help(void **state) {
  (void)state;
  static const char *const cases[][4] = {
      {"--help"},         {"keygen", "--help"}, {"csr", "--help"},
      {"cert", "--help"}, {"cert", "import", "--help"}, {"keys", "--help"},
      {"sign", "--help"}, {"verify", "--help"}, {"health", "--help"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *script = NULL;
    const char *log = e2e_path(E, "work/help.out");
    if (asprintf(&script, "'%s' %s %s %s >'%s' 2>/dev/null", e2e_cli_path(), cases[i][0],
                 cases[i][1] ? cases[i][1] : "", cases[i][2] ? cases[i][2] : "", log) < 0)
      E2E_FAIL("asprintf");
    int rc = e2e_sh(NULL, "%s", script);
    free(script);
    char *text = (char *)e2e_read_file(log, NULL);
    int has_usage = text && strstr(text, "Usage") != NULL;
    free(text);
    if (rc != 0 || !has_usage)
      E2E_FAIL("kyso %s %s %s: got exit %d, Usage on stdout %s; want 0 and yes", cases[i][0],
               cases[i][1] ? cases[i][1] : "", cases[i][2] ? cases[i][2] : "", rc,
               has_usage ? "yes" : "no");
  }
}

static void stop_clean(void **state) {
  (void)state;
  e2e_stop(E);
}

static int teardown(void **state) {
  (void)state;
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start),
      cmocka_unit_test(provision_and_sign),
      cmocka_unit_test(help),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_cli", tests, setup, teardown);
}
