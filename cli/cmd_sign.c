/* kyso sign | verify | health. */
#include <getopt.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "kyso/limits.h"
#include "kyso/signer.h"
#include "kyso/util.h"
#include "kyso/x509_text.h"
#include "kyso/v1/signer.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

enum { S_ACCOUNT = 1, S_UNIT, S_SEAL, S_PSS, S_NUMBER, S_TITLE, S_DATE, S_MEDIA, S_TYPE, S_OUT, S_REQID, S_CA,
       S_ARCHIVE_ID, S_NO_ARCHIVE, S_FORMAT, S_REQUIRE_TS, S_TSA };

static const struct option sign_longopts[] = {
    {"account", required_argument, NULL, S_ACCOUNT}, {"unit", required_argument, NULL, S_UNIT},
    {"seal", no_argument, NULL, S_SEAL},             {"pss", no_argument, NULL, S_PSS},
    {"number", required_argument, NULL, S_NUMBER},   {"title", required_argument, NULL, S_TITLE},
    {"date", required_argument, NULL, S_DATE},       {"media-type", required_argument, NULL, S_MEDIA},
    {"type", required_argument, NULL, S_TYPE},       {"out", required_argument, NULL, S_OUT},
    {"request-id", required_argument, NULL, S_REQID}, {"ca", required_argument, NULL, S_CA},
    {"archive-id", required_argument, NULL, S_ARCHIVE_ID}, {"no-archive", no_argument, NULL, S_NO_ARCHIVE},
    {"format", required_argument, NULL, S_FORMAT},   {"help", no_argument, NULL, 'h'},
    /* Not in the help: the node refuses a TSA key for documents, and says why. */
    {"tsa", required_argument, NULL, S_TSA},         {NULL, 0, NULL, 0}};

static const struct option verify_longopts[] = {
    {"ca", required_argument, NULL, S_CA},
    {"require-timestamp", no_argument, NULL, S_REQUIRE_TS},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

static int write_file(const char *path, const uint8_t *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) return cli_fail("cannot create '%s'", path);
  size_t w = fwrite(p, 1, n, f);
  if (fclose(f) != 0 || w != n) return cli_fail("cannot write '%s'", path);
  return 0;
}

/* --format bes|t; without it the request says UNSPECIFIED: the node's default. */
static int parse_format(const char *v, Kyso__V1__SignatureFormat *f) {
  if (strcmp(v, "bes") == 0) *f = KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_BES;
  else if (strcmp(v, "t") == 0) *f = KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_T;
  else return cli_fail("--format is bes (CAdES-BES) or t (CAdES-T), not '%s'", v);
  return 0;
}

/* The CAdES-T line under a "signed" line; nothing for CAdES-BES. */
static void print_sign_timestamp(const Kyso__V1__SignResponse *r) {
  if (r->timestamp_time[0] == '\0') return;
  printf("  time-stamp: genTime %s, serial %s, TSA %s\n", r->timestamp_time, r->timestamp_serial,
         r->timestamp_tsa);
}

int cli_sign(cli *c, int argc, char **argv) {
  static const char help[] =
      "Usage: kyso sign (--account NAME | --seal --unit CODE) [OPTIONS] DOC...\n"
      "       kyso sign (--account NAME | --seal --unit CODE) --archive-id ID --out FILE\n"
      "\n"
      "Signs each DOC in the node's HSM and writes DOC.p7s: a detached CMS\n"
      "signature (SHA-256) that `openssl cms -verify` checks. The node archives\n"
      "the document and the signature and prints the archive id.\n"
      "  --archive-id ID    sign a document already archived (kyso archive put),\n"
      "                     of any size, instead of sending its bytes\n"
      "  --no-archive       do not keep the document and signature on the node\n"
      "  --account NAME     sign with this official's personal key\n"
      "  --seal --unit CODE apply unit CODE's seal (as --account, if given)\n"
      "  --format bes|t     bes: CAdES-BES; t: CAdES-T, CAdES-BES plus an RFC 3161\n"
      "                     time-stamp over the signature, so it can be verified\n"
      "                     after the certificate expires. Default: the node's\n"
      "                     ([signer] timestamp; CAdES-T unless that is off)\n"
      "  --pss              RSA keys: RSASSA-PSS instead of PKCS#1 v1.5\n"
      "  --out FILE         signature file (only with one DOC; default DOC.p7s)\n"
      "Document metadata, recorded with the signature:\n"
      "  --unit CODE --number \"123/UBND-VP\" --title TEXT --date YYYY-MM-DD\n"
      "  --media-type application/pdf --type decision --request-id ID\n";
  const char *account = NULL, *unit = NULL, *out = NULL, *tsa = NULL;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  int seal = 0, opt, rc = 0;
  while ((opt = getopt_long(argc, argv, "h", sign_longopts, NULL)) != -1) {
    switch (opt) {
      case S_ACCOUNT: account = optarg; break;
      case S_UNIT: unit = optarg; meta.unit = optarg; break;
      case S_SEAL: seal = 1; break;
      case S_TSA: tsa = optarg; break;
      case S_PSS: req.rsa_scheme = KYSO__V1__RSA_SCHEME__RSA_SCHEME_PSS; break;
      case S_NUMBER: meta.number_notation = optarg; break;
      case S_TITLE: meta.title = optarg; break;
      case S_DATE: meta.issue_date = optarg; break;
      case S_MEDIA: meta.media_type = optarg; break;
      case S_TYPE: meta.document_type = optarg; break;
      case S_OUT: out = optarg; break;
      case S_REQID: req.request_id = optarg; break;
      case S_ARCHIVE_ID: req.archive_id = optarg; break;
      case S_NO_ARCHIVE: req.skip_archive = 1; break;
      case S_FORMAT: if (parse_format(optarg, &req.format)) return 2; break;
      case 'h': fputs(help, stdout); return 0;
      default: fputs(help, stderr); return 2;
    }
  }
  Kyso__V1__KeyRef ref;
  if (cli_key_ref(account, unit, seal, tsa, &ref)) return 2;
  req.key = &ref;
  req.metadata = &meta;
  if (req.archive_id[0]) {
    if (optind != argc || out == NULL)
      return cli_fail("--archive-id signs an archived document: give --out FILE and no DOC");
    Kyso__V1__SignResponse *resp = NULL;
    rc = cli_call(c, "/kyso.v1.Signer/Sign", &req.base, &kyso__v1__sign_response__descriptor,
                  (ProtobufCMessage **)&resp);
    if (rc) return rc;
    rc = write_file(out, resp->signature.data, resp->signature.len);
    if (rc == 0)
      printf("signed archived %s -> %s (key %s, signature %u, %s)\n", resp->archive_id, out,
             resp->key_label, resp->signature_order, resp->signing_time);
    if (rc == 0) print_sign_timestamp(resp);
    kyso__v1__sign_response__free_unpacked(resp, NULL);
    return rc;
  }
  if (optind >= argc) return cli_fail("give at least one document; see `kyso sign --help`");
  if (out && argc - optind > 1) return cli_fail("--out works with one document only");
  for (int i = optind; i < argc && rc == 0; i++) {
    kyso_buf doc;
    kyso_err err = {0};
    char sig_path[KYSO_PATH_MAX + 8];
    Kyso__V1__SignResponse *resp = NULL;
    if (kyso_read_file(argv[i], KYSO_MAX_INLINE_DOCUMENT, &doc, &err) != KYSO_OK)
      return cli_fail("%s", err.msg);
    req.document.data = doc.data;
    req.document.len = doc.len;
    rc = cli_call(c, "/kyso.v1.Signer/Sign", &req.base, &kyso__v1__sign_response__descriptor,
                  (ProtobufCMessage **)&resp);
    if (rc == 0) {
      snprintf(sig_path, sizeof(sig_path), "%s", out ? out : argv[i]);
      if (!out) strncat(sig_path, ".p7s", sizeof(sig_path) - strlen(sig_path) - 1);
      rc = write_file(sig_path, resp->signature.data, resp->signature.len);
      if (rc == 0)
        printf("signed %s -> %s (key %s, archive id %s, signature %u%s, %s)\n", argv[i],
               sig_path, resp->key_label,
               resp->archive_id[0] ? resp->archive_id : resp->document_sha256,
               resp->signature_order, resp->replayed ? ", replayed" : "", resp->signing_time);
      if (rc == 0) print_sign_timestamp(resp);
    }
    kyso__v1__sign_response__free_unpacked(resp, NULL);
    kyso_buf_free(&doc, 0);
  }
  return rc;
}

int cli_verify(cli *c, int argc, char **argv) {
  static const char help[] =
      "Usage: kyso verify --ca ROOT.pem [--require-timestamp] DOC [SIG]\n"
      "\n"
      "Verifies the detached CMS signature SIG (default DOC.p7s) over DOC, here,\n"
      "without the node: certificate chain to the trust anchors in ROOT.pem,\n"
      "signature value, message digest and the signing-certificate-v2 binding.\n"
      "A CAdES-T signature's time-stamp is checked too: it covers this\n"
      "signature value, the TSA's signature verifies and its certificate chains\n"
      "to ROOT.pem with a critical timeStamping extendedKeyUsage. The signer's\n"
      "certificate chain is then checked at the time-stamp's genTime, not now,\n"
      "so the signature stays valid after that certificate expires.\n"
      "  --ca ROOT.pem          trust anchors for the signer and the TSA (PEM)\n"
      "  --require-timestamp    fail unless the signature carries a time-stamp\n"
      "                         (CAdES-T; `kyso sign --format t` makes one)\n"
      "Prints \"OK DOC signed by SUBJECT\", the signing-time and the time-stamp\n"
      "(genTime, serial, TSA, policy), or \"FAILED DOC: why\".\n"
      "Exit status 0 when it verifies, 1 when it does not.\n";
  const char *ca = NULL;
  unsigned flags = 0;
  int opt;
  (void)c;
  while ((opt = getopt_long(argc, argv, "h", verify_longopts, NULL)) != -1) {
    if (opt == S_CA) ca = optarg;
    else if (opt == S_REQUIRE_TS) flags |= SIGNER_VERIFY_REQUIRE_TIMESTAMP;
    else if (opt == 'h') { fputs(help, stdout); return 0; }
    else { fputs(help, stderr); return 2; }
  }
  if (ca == NULL)
    return cli_fail("give the trust anchors with --ca ROOT.pem (after `verify`); see "
                    "`kyso verify --help`"), 2;
  if (optind >= argc || argc - optind > 2) return fputs(help, stderr), 2;
  const char *doc_path = argv[optind];
  char sig_path[KYSO_PATH_MAX + 8];
  snprintf(sig_path, sizeof(sig_path), "%s%s", argc - optind == 2 ? argv[optind + 1] : doc_path,
           argc - optind == 2 ? "" : ".p7s");
  kyso_buf doc, sig;
  kyso_err err = {0};
  X509_STORE *store = X509_STORE_new();
  signer_verified v;
  X509 *who = NULL; /* v.signer, once it is ours: only on success */
  int rc = 1;
  memset(&v, 0, sizeof(v));
  kyso_buf_init(&doc, 0);
  kyso_buf_init(&sig, 0);
  if (store == NULL || !X509_STORE_load_file(store, ca)) {
    rc = cli_fail("cannot load trust anchors from '%s'", ca);
    goto out;
  }
  if (kyso_read_file(doc_path, (size_t)1 << 31, &doc, &err) != KYSO_OK ||
      kyso_read_file(sig_path, KYSO_MAX_MESSAGE, &sig, &err) != KYSO_OK) {
    rc = cli_fail("%s", err.msg);
    goto out;
  }
  if (signer_verify_cms_full(store, sig.data, sig.len, doc.data, doc.len, flags, &v, &err) !=
      KYSO_OK) {
    printf("FAILED %s: %s\n", doc_path, err.msg);
    goto out;
  }
  who = v.signer;
  char subject[512];
  kyso_x509_name_utf8(X509_get_subject_name(who), subject, sizeof(subject));
  printf("OK %s signed by %s\n", doc_path, subject);
  if (v.signing_time != 0) {
    char when[32];
    struct tm tm;
    gmtime_r(&v.signing_time, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("  signing-time: %s\n", when);
  }
  if (v.timestamped) {
    printf("  time-stamp: genTime %s, serial %s, TSA %s, policy %s\n", v.ts.gen_time_text,
           v.ts.serial, v.ts.tsa, v.ts.policy);
    printf("  certificate chain checked at the time-stamp's genTime %s\n", v.ts.gen_time_text);
  } else {
    /* Say so: without a time-stamp the check holds only while the
     * certificate is valid, and signing-time is the signer's own claim. */
    printf("  time-stamp: none (CAdES-BES); certificate chain checked at the current time\n");
  }
  rc = 0;
out:
  X509_free(who);
  X509_STORE_free(store);
  kyso_buf_free(&doc, 0);
  kyso_buf_free(&sig, 0);
  return rc;
}

int cli_health(cli *c, int argc, char **argv) {
  if (argc > 1) {
    int help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
    fputs("Usage: kyso health\n\nAsks the node (grpc.health.v1) whether it serves.\n",
          help ? stdout : stderr);
    return help ? 0 : 2;
  }
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  int rc = cli_call(c, "/grpc.health.v1.Health/Check", &req.base,
                    &grpc__health__v1__health_check_response__descriptor, (ProtobufCMessage **)&resp);
  if (rc) return rc;
  int serving = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  printf("%s: %s\n", c->cfg.cli_address, serving ? "SERVING" : "NOT_SERVING");
  grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
  return serving ? 0 : 1;
}
