/* kyso keygen | csr | cert import | keys — key management for operators. */
#include <getopt.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kyso/limits.h"
#include "kyso/util.h"
#include "kyso/v1/keys.pb-c.h"

/* Options every key command shares. */
typedef struct key_opts {
  const char *account, *unit, *algorithm, *subject, *out, *role, *tsa;
  int seal, der;
} key_opts;

enum { OPT_ACCOUNT = 1, OPT_UNIT, OPT_SEAL, OPT_ALG, OPT_SUBJECT, OPT_OUT, OPT_DER, OPT_ROLE,
       OPT_TSA };

static const struct option key_longopts[] = {
    {"account", required_argument, NULL, OPT_ACCOUNT}, {"unit", required_argument, NULL, OPT_UNIT},
    {"seal", no_argument, NULL, OPT_SEAL},             {"algorithm", required_argument, NULL, OPT_ALG},
    {"subject", required_argument, NULL, OPT_SUBJECT}, {"out", required_argument, NULL, OPT_OUT},
    {"der", no_argument, NULL, OPT_DER},               {"role", required_argument, NULL, OPT_ROLE},
    {"tsa", required_argument, NULL, OPT_TSA},         {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

/* Returns -1 to go on, otherwise an exit status (help shown or bad flag). */
static int parse_key_opts(int argc, char **argv, key_opts *o, const char *help) {
  int opt;
  memset(o, 0, sizeof(*o));
  while ((opt = getopt_long(argc, argv, "h", key_longopts, NULL)) != -1) {
    switch (opt) {
      case OPT_ACCOUNT: o->account = optarg; break;
      case OPT_UNIT: o->unit = optarg; break;
      case OPT_SEAL: o->seal = 1; break;
      case OPT_ALG: o->algorithm = optarg; break;
      case OPT_SUBJECT: o->subject = optarg; break;
      case OPT_OUT: o->out = optarg; break;
      case OPT_DER: o->der = 1; break;
      case OPT_ROLE: o->role = optarg; break;
      case OPT_TSA: o->tsa = optarg; break;
      case 'h': fputs(help, stdout); return 0;
      default: fputs(help, stderr); return 2;
    }
  }
  return -1;
}

/* The key the options name, for the commands that act on one key. */
static int key_ref(const key_opts *o, Kyso__V1__KeyRef *ref) {
  if (o->account == NULL && !o->seal && o->tsa == NULL)
    return cli_fail("give --account NAME (an official's key), --seal --unit CODE (a unit's "
                    "seal) or --tsa NAME (the node's time-stamping key)");
  return cli_key_ref(o->account, o->unit, o->seal, o->tsa, ref);
}

static const char *algorithm_name(Kyso__V1__KeyAlgorithm a) {
  switch (a) {
    case KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_2048: return "rsa-2048";
    case KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_3072: return "rsa-3072";
    case KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256: return "ec-p256";
    default: return "?";
  }
}

static void print_key(const Kyso__V1__KeyInfo *k) {
  printf("%-40s %-9s %-11s %s\n", k->label, algorithm_name(k->algorithm),
         k->sensitive && !k->extractable ? "sealed" : k->sensitive ? "sensitive" : "EXPOSED",
         k->has_certificate ? k->certificate_subject : "(no certificate)");
  if (k->has_certificate) printf("%-40s not after %s\n", "", k->certificate_not_after);
}

int cli_keygen(cli *c, int argc, char **argv) {
  static const char help[] =
      "Usage: kyso keygen (--account NAME | --seal --unit CODE | --tsa NAME) [--algorithm ALG]\n"
      "\n"
      "Generates a key pair inside the node's HSM. The private key is created\n"
      "sensitive and wrap-with-trusted: it never leaves the HSM in the clear.\n"
      "  --account NAME   an official's personal key (label kyso/personal/NAME)\n"
      "  --seal --unit C  the seal key of unit C (label kyso/seal/C)\n"
      "  --tsa NAME       the node's time-stamping (RFC 3161) key (label kyso/tsa/NAME);\n"
      "                   NAME is `name` in kysod's [tsa] section, \"default\" unless set\n"
      "  --algorithm ALG  ec-p256 (default), rsa-2048 or rsa-3072\n"
      "Next: `kyso csr` for a certificate request.\n";
  key_opts o;
  int rc = parse_key_opts(argc, argv, &o, help);
  if (rc >= 0) return rc;
  Kyso__V1__GenerateKeyRequest req = KYSO__V1__GENERATE_KEY_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  if (key_ref(&o, &ref)) return 2;
  req.key = &ref;
  const char *alg = o.algorithm ? o.algorithm : "ec-p256";
  if (strcmp(alg, "ec-p256") == 0) req.algorithm = KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256;
  else if (strcmp(alg, "rsa-2048") == 0) req.algorithm = KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_2048;
  else if (strcmp(alg, "rsa-3072") == 0) req.algorithm = KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_3072;
  else return cli_fail("unknown algorithm '%s' (ec-p256, rsa-2048, rsa-3072)", alg);
  Kyso__V1__KeyInfo *info = NULL;
  rc = cli_call(c, "/kyso.v1.Keys/Generate", &req.base, &kyso__v1__key_info__descriptor,
                (ProtobufCMessage **)&info);
  if (rc) return rc;
  printf("generated ");
  print_key(info);
  kyso__v1__key_info__free_unpacked(info, NULL);
  return 0;
}

int cli_csr(cli *c, int argc, char **argv) {
  static const char help[] =
      "Usage: kyso csr (--account NAME | --seal --unit CODE | --tsa NAME) --subject DN\n"
      "                [--out FILE] [--der]\n"
      "\n"
      "Makes a PKCS#10 certificate request signed inside the HSM by that key.\n"
      "  --subject DN  e.g. \"/C=VN/O=UBND Tinh/OU=Van phong/CN=Nguyen Van A\" (UTF-8)\n"
      "  --out FILE    where to write it (default: standard output)\n"
      "  --der         write DER instead of PEM\n"
      "For --tsa the CA must issue a certificate whose extendedKeyUsage is\n"
      "critical and only timeStamping (RFC 3161 2.3); the node refuses others.\n"
      "Next: have the CA issue it, then `kyso cert import`.\n";
  key_opts o;
  int rc = parse_key_opts(argc, argv, &o, help);
  if (rc >= 0) return rc;
  if (o.subject == NULL) return cli_fail("--subject is required; see `kyso csr --help`");
  Kyso__V1__CreateCsrRequest req = KYSO__V1__CREATE_CSR_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  if (key_ref(&o, &ref)) return 2;
  req.key = &ref;
  req.subject = (char *)o.subject;
  Kyso__V1__CreateCsrResponse *resp = NULL;
  rc = cli_call(c, "/kyso.v1.Keys/CreateCsr", &req.base, &kyso__v1__create_csr_response__descriptor,
                (ProtobufCMessage **)&resp);
  if (rc) return rc;
  FILE *f = o.out ? fopen(o.out, "wb") : stdout;
  if (f == NULL) {
    rc = cli_fail("cannot write '%s'", o.out);
    goto out;
  }
  if (o.der) {
    fwrite(resp->csr.data, 1, resp->csr.len, f);
  } else {
    const unsigned char *p = resp->csr.data;
    X509_REQ *x = d2i_X509_REQ(NULL, &p, (long)resp->csr.len);
    if (x == NULL || !PEM_write_X509_REQ(f, x)) rc = cli_fail("the node returned a malformed CSR");
    X509_REQ_free(x);
  }
  if (o.out) {
    if (fclose(f) != 0) rc = cli_fail("cannot write '%s'", o.out);
    else if (rc == 0) fprintf(stderr, "kyso: wrote certificate request %s\n", o.out);
  }
out:
  kyso__v1__create_csr_response__free_unpacked(resp, NULL);
  return rc;
}

int cli_cert(cli *c, int argc, char **argv) {
  static const char help[] =
      "Usage: kyso cert import (--account NAME | --seal --unit CODE | --tsa NAME) CERT [CHAIN...]\n"
      "\n"
      "Attaches the CA-issued certificate CERT (PEM or DER) to the key; CHAIN\n"
      "files are the intermediate CA certificates, put into every signature so\n"
      "verifiers need only the root. The node refuses a certificate whose public\n"
      "key is not the key's, and for --tsa one without a critical\n"
      "extendedKeyUsage of only timeStamping. A TSA key with its certificate\n"
      "imported starts issuing time-stamps at once.\n";
  if (argc < 2 || strcmp(argv[1], "import") != 0) {
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
      fputs(help, stdout);
      return 0;
    }
    fputs(help, stderr);
    return 2;
  }
  key_opts o;
  int rc = parse_key_opts(argc - 1, argv + 1, &o, help);
  if (rc >= 0) return rc;
  int first = optind + 1; /* positional arguments, relative to argv */
  if (first >= argc) return cli_fail("give the certificate file; see `kyso cert import --help`");
  size_t nfiles = (size_t)(argc - first);
  if (nfiles - 1 > KYSO_MAX_CERT_CHAIN) return cli_fail("at most %d chain certificates", KYSO_MAX_CERT_CHAIN);
  kyso_buf files[1 + KYSO_MAX_CERT_CHAIN];
  ProtobufCBinaryData chain[KYSO_MAX_CERT_CHAIN];
  size_t loaded = 0;
  Kyso__V1__ImportCertificateRequest req = KYSO__V1__IMPORT_CERTIFICATE_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  Kyso__V1__KeyInfo *info = NULL;
  kyso_err err = {0};
  rc = 2;
  if (key_ref(&o, &ref)) goto out;
  for (; loaded < nfiles; loaded++) {
    if (kyso_read_file(argv[first + (int)loaded], 2 * KYSO_MAX_CERT_DER, &files[loaded], &err) != KYSO_OK) {
      rc = cli_fail("%s", err.msg);
      goto out;
    }
    if (loaded > 0) {
      chain[loaded - 1].data = files[loaded].data;
      chain[loaded - 1].len = files[loaded].len;
    }
  }
  req.key = &ref;
  req.certificate.data = files[0].data;
  req.certificate.len = files[0].len;
  req.chain = chain;
  req.n_chain = nfiles - 1;
  rc = cli_call(c, "/kyso.v1.Keys/ImportCertificate", &req.base, &kyso__v1__key_info__descriptor,
                (ProtobufCMessage **)&info);
  if (rc == 0) {
    printf("imported ");
    print_key(info);
  }
out:
  for (size_t i = 0; i < loaded; i++) kyso_buf_free(&files[i], 0);
  kyso__v1__key_info__free_unpacked(info, NULL);
  return rc;
}

int cli_keys(cli *c, int argc, char **argv) {
  static const char help[] =
      "Usage: kyso keys [--account NAME] [--unit CODE] [--role personal|seal|tsa] [--tsa NAME]\n"
      "\n"
      "Lists the node's keys: label, algorithm, protection (sensitive = never\n"
      "readable in the clear), and the certificate's subject and expiry.\n"
      "Time-stamping keys are labelled kyso/tsa/NAME; --tsa NAME shows only\n"
      "that one, --role tsa all of them.\n";
  key_opts o;
  int rc = parse_key_opts(argc, argv, &o, help);
  if (rc >= 0) return rc;
  Kyso__V1__ListKeysRequest req = KYSO__V1__LIST_KEYS_REQUEST__INIT;
  req.account = (char *)(o.account ? o.account : "");
  req.unit = (char *)(o.unit ? o.unit : "");
  if (o.role && strcmp(o.role, "personal") == 0) req.role = KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL;
  else if (o.role && strcmp(o.role, "seal") == 0) req.role = KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL;
  else if (o.role && strcmp(o.role, "tsa") == 0) req.role = KYSO__V1__KEY_ROLE__KEY_ROLE_TSA;
  else if (o.role) return cli_fail("--role is personal, seal or tsa");
  /* A TSA's name sits where a personal key has its account: without this,
   * --account default would list the TSA key "default" too. */
  if (o.account && !o.role) req.role = KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL;
  if (o.tsa) {
    if (o.account || (o.role && req.role != KYSO__V1__KEY_ROLE__KEY_ROLE_TSA))
      return cli_fail("--tsa NAME lists that time-stamping key; drop --account and --role");
    req.role = KYSO__V1__KEY_ROLE__KEY_ROLE_TSA;
    req.account = (char *)o.tsa;
  }
  char token[KYSO_MAX_LABEL + 1] = "";
  size_t total = 0;
  do {
    Kyso__V1__ListKeysResponse *resp = NULL;
    req.page_token = token;
    req.page_size = 500;
    rc = cli_call(c, "/kyso.v1.Keys/List", &req.base, &kyso__v1__list_keys_response__descriptor,
                  (ProtobufCMessage **)&resp);
    if (rc) return rc;
    for (size_t i = 0; i < resp->n_keys; i++) print_key(resp->keys[i]);
    total += resp->n_keys;
    snprintf(token, sizeof(token), "%s", resp->next_page_token);
    kyso__v1__list_keys_response__free_unpacked(resp, NULL);
  } while (token[0]);
  fprintf(stderr, "kyso: %zu key(s)\n", total);
  return 0;
}
