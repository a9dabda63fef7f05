/* kyso timestamp — RFC 3161 time-stamps from the node's TSA, and reading
 * stored ones. */
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kyso/limits.h"
#include "kyso/signer.h"
#include "kyso/util.h"
#include "kyso/v1/timestamp.pb-c.h"

static const char timestamp_help[] =
    "Usage: kyso timestamp [--ca ROOT.pem] [-o OUT.tsr] FILE\n"
    "       kyso timestamp --show FILE.tsr\n"
    "       kyso timestamp --token TOKEN.der\n"
    "\n"
    "Asks the node's time-stamping authority (RFC 3161) to vouch that FILE\n"
    "existed now. FILE is hashed here with SHA-256, in chunks, so only its\n"
    "digest is sent, whatever its size. The query carries a random nonce and\n"
    "asks for the TSA's certificate; the reply is written only after its\n"
    "status, digest and nonce are checked.\n"
    "  -o, --out FILE    where to write the reply, a DER TimeStampResp\n"
    "                    (default FILE.tsr)\n"
    "  --ca ROOT.pem     also check the token's signature and the TSA's\n"
    "                    certificate chain (timeStamping) to these trust anchors\n"
    "  --show FILE.tsr   print a stored reply; does not contact the node\n"
    "  --token FILE      print a bare token (DER ContentInfo), e.g. one taken\n"
    "                    out of a CAdES-T signature\n"
    "Prints the token's genTime, serial, TSA, policy and hash. A request the\n"
    "TSA refuses prints its status text and failure (badAlg, badRequest,\n"
    "badDataFormat, timeNotAvailable, unacceptedPolicy, systemFailure) and\n"
    "exits 1; timeNotAvailable and systemFailure are worth a retry later.\n"
    "\n"
    "Anyone can check the reply later, without kyso:\n"
    "  openssl ts -verify -in FILE.tsr -data FILE -CAfile root.pem -untrusted chain.pem\n"
    "where chain.pem holds the CA certificates between root.pem and the TSA's.\n";

enum { T_OUT = 'o', T_CA = 1, T_SHOW, T_TOKEN };

static const struct option timestamp_longopts[] = {
    {"out", required_argument, NULL, T_OUT},     {"ca", required_argument, NULL, T_CA},
    {"show", required_argument, NULL, T_SHOW},   {"token", required_argument, NULL, T_TOKEN},
    {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0}};

/* PKIStatus (RFC 3161 2.4.2). */
static const char *status_name(int status) {
  static const char *const names[] = {"granted",           "grantedWithMods",
                                      "rejection",         "waiting",
                                      "revocationWarning", "revocationNotification"};
  if (status < 0) return "unreadable";
  if ((size_t)status < sizeof(names) / sizeof(names[0])) return names[status];
  return "unknown";
}

static int granted(int status) { return status == 0 || status == 1; }

/* PKIFailureInfo bits as RFC 3161 2.4.2 names them, comma-separated into
 * out; bits it does not name print as "bit N". */
static void failure_names(uint32_t bits, char *out, size_t size) {
  static const struct {
    unsigned bit;
    const char *name;
  } names[] = {{0, "badAlg"},            {2, "badRequest"},          {5, "badDataFormat"},
               {14, "timeNotAvailable"}, {15, "unacceptedPolicy"},   {16, "unacceptedExtension"},
               {17, "addInfoNotAvailable"}, {25, "systemFailure"}};
  out[0] = '\0';
  for (unsigned bit = 0; bit < 32; bit++) {
    if (!(bits & (1u << bit))) continue;
    char one[24];
    const char *name = NULL;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
      if (names[i].bit == bit) name = names[i].name;
    if (name == NULL) {
      snprintf(one, sizeof(one), "bit %u", bit);
      name = one;
    }
    size_t used = strlen(out);
    snprintf(out + used, size - used, "%s%s", used ? ", " : "", name);
  }
}

/* The lines every form of the command prints about a reply or token. */
static void print_ts(const signer_ts_info *ts, int with_status) {
  if (with_status) {
    char failures[256];
    printf("  status: %s\n", status_name(ts->status));
    failure_names(ts->failure_info, failures, sizeof(failures));
    if (failures[0]) printf("  failure: %s\n", failures);
    if (ts->status_text[0]) printf("  text: %s\n", ts->status_text);
  }
  if (!ts->has_token) return;
  printf("  genTime: %s\n", ts->gen_time_text);
  printf("  serial: %s\n", ts->serial);
  printf("  tsa: %s\n", ts->tsa);
  printf("  policy: %s\n", ts->policy);
  printf("  hash: %s\n", ts->hash);
}

/* SHA-256 of the file at path, read a chunk at a time so that memory stays
 * small whatever its size. Prints why not and returns 1 on failure. */
static int hash_file(const char *path, uint8_t out[32]) {
  FILE *f = fopen(path, "rb");
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  uint8_t *chunk = malloc(KYSO_CHUNK_SIZE);
  unsigned len = 0;
  int rc = 1;
  if (f == NULL) {
    rc = cli_fail("cannot open '%s': %s", path, strerror(errno));
    goto out;
  }
  if (md == NULL || chunk == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
    rc = cli_fail("cannot start SHA-256 for '%s' (out of memory?)", path);
    goto out;
  }
  for (;;) {
    size_t n = fread(chunk, 1, KYSO_CHUNK_SIZE, f);
    if (n > 0 && !EVP_DigestUpdate(md, chunk, n)) {
      rc = cli_fail("SHA-256 of '%s' failed", path);
      goto out;
    }
    if (n < KYSO_CHUNK_SIZE) break;
  }
  if (ferror(f)) {
    rc = cli_fail("cannot read '%s': %s", path, strerror(errno));
    goto out;
  }
  if (!EVP_DigestFinal_ex(md, out, &len) || len != 32) {
    rc = cli_fail("SHA-256 of '%s' failed", path);
    goto out;
  }
  rc = 0;
out:
  if (f) fclose(f);
  EVP_MD_CTX_free(md);
  free(chunk);
  return rc;
}

/* --show / --token: prints a stored reply or token, offline. Exit 0 for a
 * token or a granted reply, 1 for a refusal or a file that is neither. */
static int show(const char *path, int is_token) {
  kyso_buf der;
  kyso_err err = {0};
  signer_ts_info ts;
  int rc = 1;
  kyso_buf_init(&der, 0);
  if (kyso_read_file(path, KYSO_MAX_MESSAGE, &der, &err) != KYSO_OK) {
    rc = cli_fail("%s", err.msg);
    goto out;
  }
  if (signer_ts_describe(der.data, der.len, is_token, &ts, &err) != KYSO_OK) {
    rc = cli_fail("%s: %s; %s", path, err.msg,
                  is_token ? "is it a TimeStampResp? then use --show"
                           : "is it a bare token? then use --token");
    goto out;
  }
  printf("%s %s\n", is_token ? "time-stamp token" : "time-stamp reply", path);
  print_ts(&ts, !is_token);
  rc = is_token || granted(ts.status) ? 0 : 1;
out:
  kyso_buf_free(&der, 0);
  return rc;
}

/* Asks the node for a time-stamp over path's SHA-256 and writes the reply
 * to out_path once it answers this query; ca (may be NULL) anchors the
 * check of the TSA's signature and certificate. */
static int stamp(cli *c, const char *path, const char *out_path, const char *ca) {
  uint8_t sha256[32], *query = NULL, *token = NULL;
  size_t query_len = 0, token_len = 0;
  uint64_t nonce = 0;
  X509_STORE *store = NULL;
  Kyso__V1__StampRequest req = KYSO__V1__STAMP_REQUEST__INIT;
  Kyso__V1__StampResponse *resp = NULL;
  signer_ts_info ts;
  kyso_err err = {0};
  int rc = 1;
  /* A wrong --ca path should fail before anything goes over the network. */
  if (ca != NULL && ((store = X509_STORE_new()) == NULL || !X509_STORE_load_file(store, ca))) {
    rc = cli_fail("cannot load trust anchors from '%s'", ca);
    goto out;
  }
  if (hash_file(path, sha256) != 0) goto out;
  if (signer_ts_query(sha256, &nonce, &query, &query_len, &err) != KYSO_OK) {
    rc = cli_fail("cannot build the time-stamp query: %s", err.msg);
    goto out;
  }
  req.query.data = query;
  req.query.len = query_len;
  if ((rc = cli_call(c, "/kyso.v1.TimeStamp/Stamp", &req.base,
                     &kyso__v1__stamp_response__descriptor, (ProtobufCMessage **)&resp)) != 0)
    goto out;
  rc = 1;
  if (signer_ts_describe(resp->reply.data, resp->reply.len, 0, &ts, &err) != KYSO_OK) {
    rc = cli_fail("the node's reply is not a TimeStampResp: %s", err.msg);
    goto out;
  }
  if (!granted(ts.status)) {
    printf("REJECTED %s: %s\n", path, ts.status_text[0] ? ts.status_text : status_name(ts.status));
    print_ts(&ts, 1);
    goto out;
  }
  /* Only a reply to this very query (digest, nonce) is worth keeping. */
  if (signer_ts_accept(resp->reply.data, resp->reply.len, sha256, nonce, store, &token,
                       &token_len, &err) != KYSO_OK) {
    printf("FAILED %s: %s\n", path, err.msg);
    goto out;
  }
  if (kyso_write_file_atomic(out_path, resp->reply.data, resp->reply.len, 0644, &err) != KYSO_OK) {
    rc = cli_fail("%s", err.msg);
    goto out;
  }
  printf("OK %s time-stamped -> %s\n", path, out_path);
  print_ts(&ts, 0);
  if (store != NULL)
    printf("  checked: status, digest, nonce, TSA signature and certificate chain to %s\n", ca);
  else
    printf("  checked: status, digest and nonce only; give --ca ROOT.pem to check the TSA's "
           "signature and certificate too\n");
  rc = 0;
out:
  X509_STORE_free(store);
  OPENSSL_free(query);
  OPENSSL_free(token);
  kyso__v1__stamp_response__free_unpacked(resp, NULL);
  return rc;
}

int cli_timestamp(cli *c, int argc, char **argv) {
  const char *out = NULL, *ca = NULL, *show_path = NULL, *token_path = NULL;
  char out_path[KYSO_PATH_MAX + 8];
  int opt;
  while ((opt = getopt_long(argc, argv, "ho:", timestamp_longopts, NULL)) != -1) {
    switch (opt) {
      case T_OUT: out = optarg; break;
      case T_CA: ca = optarg; break;
      case T_SHOW: show_path = optarg; break;
      case T_TOKEN: token_path = optarg; break;
      case 'h': fputs(timestamp_help, stdout); return 0;
      default: fputs(timestamp_help, stderr); return 2;
    }
  }
  if (show_path != NULL || token_path != NULL) {
    if (show_path != NULL && token_path != NULL)
      return cli_fail("give --show FILE.tsr or --token FILE, not both"), 2;
    if (out != NULL || ca != NULL || optind != argc)
      return cli_fail("--show and --token only print a stored file; to check one against "
                      "its data and a root, use openssl ts -verify (see `kyso timestamp "
                      "--help`)"), 2;
    return show(show_path ? show_path : token_path, token_path != NULL);
  }
  if (argc - optind != 1) {
    fputs(timestamp_help, stderr);
    return 2;
  }
  const char *path = argv[optind];
  int n = snprintf(out_path, sizeof(out_path), "%s%s", out ? out : path, out ? "" : ".tsr");
  if (n < 0 || (size_t)n >= sizeof(out_path))
    return cli_fail("output path too long: '%.40s…'; give a shorter -o OUT.tsr", out_path), 2;
  return stamp(c, path, out_path, ca);
}
