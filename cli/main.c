/* kyso — the command line for operators, clerks and archivists. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kyso/limits.h"

static void usage(FILE *f) {
  fprintf(f,
          "Usage: kyso [OPTIONS] COMMAND [ARGS]\n"
          "\n"
          "Talks to a kysod node over gRPC with TLS.\n"
          "\n"
          "Commands:\n"
          "  keygen       generate a key pair inside the node's HSM (official, seal, TSA)\n"
          "  csr          make a certificate signing request for a key\n"
          "  cert import  attach the CA-issued certificate to a key\n"
          "  keys         list keys\n"
          "  sign         sign documents (detached CAdES-T or CAdES-BES signatures)\n"
          "  verify       verify a detached signature locally against a trust anchor\n"
          "  timestamp    get an RFC 3161 time-stamp for a file, or show a stored one\n"
          "  archive      put, get, stat, ls, scrub, backup archived documents\n"
          "  health       ask the node whether it serves\n"
          "  cluster      the Raft cluster: status, add, remove, transfer, recover\n"
          "\n"
          "Options (before COMMAND; they override the [cli] section of --config):\n"
          "  -c, --config FILE      configuration file with a [cli] section\n"
          "  -a, --address HOST:PORT node to talk to\n"
          "      --ca FILE          trust anchors for the node's TLS certificate\n"
          "      --cert FILE        client certificate (PEM)\n"
          "      --key FILE         its private key (PEM)\n"
          "      --server-name NAME TLS name to expect (default: from the address)\n"
          "  -t, --timeout SECONDS  per-call deadline (default 30)\n"
          "  -h, --help             this help; `kyso COMMAND --help` for a command\n");
}

int cli_fail(const char *fmt, ...) {
  va_list ap;
  fputs("kyso: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return 1;
}

static const struct {
  const char *name;
  int (*run)(cli *, int, char **);
} commands[] = {
    {"keygen", cli_keygen}, {"csr", cli_csr},       {"cert", cli_cert},     {"keys", cli_keys},
    {"sign", cli_sign},     {"verify", cli_verify}, {"health", cli_health},
    {"archive", cli_archive}, {"timestamp", cli_timestamp}, {"cluster", cli_cluster},
};

static int set_opt(char *dst, size_t size, const char *v) {
  if (strlen(v) >= size) return cli_fail("option value too long: %.40s…", v);
  snprintf(dst, size, "%s", v);
  return 0;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},  {"address", required_argument, NULL, 'a'},
      {"ca", required_argument, NULL, 1},        {"cert", required_argument, NULL, 2},
      {"key", required_argument, NULL, 3},       {"server-name", required_argument, NULL, 4},
      {"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  cli c;
  kyso_err err = {0};
  int opt, rc = 2;
  memset(&c, 0, sizeof(c));
  c.timeout_ms = 30000;
  kyso_config flags;
  memset(&flags, 0, sizeof(flags));
  const char *config_path = getenv("KYSO_CONFIG");

  /* "+" stops at the first non-option: the command's own flags follow it. */
  while ((opt = getopt_long(argc, argv, "+c:a:t:h", longopts, NULL)) != -1) {
    switch (opt) {
      case 'c': config_path = optarg; break;
      case 'a': if (set_opt(flags.cli_address, sizeof(flags.cli_address), optarg)) return 2; break;
      case 1: if (set_opt(flags.cli_ca, sizeof(flags.cli_ca), optarg)) return 2; break;
      case 2: if (set_opt(flags.cli_cert, sizeof(flags.cli_cert), optarg)) return 2; break;
      case 3: if (set_opt(flags.cli_key, sizeof(flags.cli_key), optarg)) return 2; break;
      case 4: if (set_opt(flags.cli_server_name, sizeof(flags.cli_server_name), optarg)) return 2; break;
      case 't': c.timeout_ms = atol(optarg) * 1000; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (optind >= argc) {
    usage(stderr);
    return 2;
  }
  if (config_path != NULL) {
    if (kyso_config_load(config_path, &c.cfg, &err) != KYSO_OK) {
      cli_fail("%s", err.msg);
      goto out;
    }
  } else {
    kyso_config_free(&c.cfg);
  }
  if (flags.cli_address[0]) memcpy(c.cfg.cli_address, flags.cli_address, sizeof(flags.cli_address));
  if (flags.cli_ca[0]) memcpy(c.cfg.cli_ca, flags.cli_ca, sizeof(flags.cli_ca));
  if (flags.cli_cert[0]) memcpy(c.cfg.cli_cert, flags.cli_cert, sizeof(flags.cli_cert));
  if (flags.cli_key[0]) memcpy(c.cfg.cli_key, flags.cli_key, sizeof(flags.cli_key));
  if (flags.cli_server_name[0])
    memcpy(c.cfg.cli_server_name, flags.cli_server_name, sizeof(flags.cli_server_name));
  if (c.cfg.cli_address[0] == '\0') snprintf(c.cfg.cli_address, sizeof(c.cfg.cli_address), "127.0.0.1:7443");

  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
    if (strcmp(argv[optind], commands[i].name) == 0) {
      int sub_argc = argc - optind;
      char **sub_argv = argv + optind;
      /* 0, not 1: glibc re-initialises getopt only for 0, and otherwise keeps
       * the "+" (stop at the first argument) mode of the global options, so a
       * command's options could not follow its arguments. */
      optind = 0;
      rc = commands[i].run(&c, sub_argc, sub_argv);
      goto out;
    }
  }
  cli_fail("unknown command '%s'; `kyso --help` lists them", argv[optind]);
out:
  kyso_client_close(c.client);
  kyso_config_free(&c.cfg);
  return rc;
}

int cli_connect(cli *c) {
  kyso_err err = {0};
  if (c->client != NULL) return 0;
  if (c->cfg.cli_ca[0] == '\0')
    return cli_fail("no trust anchor for the node's certificate: give --ca FILE or set "
                    "ca in the [cli] section of --config");
  kyso_client_opts o = {.target = c->cfg.cli_address,
                        .ca_file = c->cfg.cli_ca,
                        .cert_file = c->cfg.cli_cert[0] ? c->cfg.cli_cert : NULL,
                        .key_file = c->cfg.cli_key[0] ? c->cfg.cli_key : NULL,
                        .server_name = c->cfg.cli_server_name[0] ? c->cfg.cli_server_name : NULL,
                        .max_message = KYSO_MAX_MESSAGE};
  if (kyso_client_open(&o, &c->client, &err) != KYSO_OK) return cli_fail("%s", err.msg);
  return 0;
}

int cli_call(cli *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **out) {
  kyso_err err = {0};
  kyso_reply reply = {0};
  uint8_t *buf = NULL;
  int rc = 1;
  if (cli_connect(c) != 0) goto out;
  size_t n = protobuf_c_message_get_packed_size(req);
  buf = malloc(n ? n : 1);
  if (buf == NULL) goto out;
  protobuf_c_message_pack(req, buf);
  if (kyso_client_call(c->client, method, buf, n, c->timeout_ms, &reply, &err) != KYSO_OK) {
    rc = cli_fail("%s: %s", method, err.msg);
    goto out;
  }
  if (reply.grpc_status != 0) {
    rc = cli_fail("%s failed (gRPC status %d): %s", method, reply.grpc_status, reply.message);
    if (reply.grpc_status == 14 && strstr(reply.message, "not the leader") != NULL)
      fprintf(stderr, "kyso: send it to the leader instead: kyso --address LEADER_ADDRESS ...\n");
    else if (reply.grpc_status == 14)
      fprintf(stderr, "kyso: is kysod running at %s, and do --ca/--cert/--key match it?\n",
              c->cfg.cli_address);
    goto out;
  }
  *out = protobuf_c_message_unpack(resp_desc, NULL, reply.len, reply.data);
  if (*out == NULL) {
    rc = cli_fail("%s: the node sent a response that does not parse", method);
    goto out;
  }
  rc = 0;
out:
  free(buf);
  kyso_reply_free(&reply);
  return rc;
}

int cli_key_ref(const char *account, const char *unit, int seal, const char *tsa,
                Kyso__V1__KeyRef *ref) {
  kyso__v1__key_ref__init(ref);
  if (tsa != NULL) {
    /* A TSA key belongs to the node, not to an official or a unit. */
    if (account != NULL || unit != NULL || seal)
      return cli_fail("--tsa NAME names the node's time-stamping key on its own; "
                      "drop --account, --seal and --unit");
    ref->role = KYSO__V1__KEY_ROLE__KEY_ROLE_TSA;
    ref->account = (char *)tsa;
    ref->unit = (char *)"";
    return 0;
  }
  if (seal) {
    if (unit == NULL) return cli_fail("a seal key needs --unit ORGAN-CODE");
    ref->role = KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL;
    ref->unit = (char *)unit;
    ref->account = (char *)(account ? account : "");
    return 0;
  }
  if (account == NULL) return cli_fail("give --account NAME (personal key) or --seal --unit CODE");
  ref->role = KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL;
  ref->account = (char *)account;
  ref->unit = (char *)(unit ? unit : "");
  return 0;
}
