/* kyso CLI internals: shared connection settings and helpers. */
#ifndef KYSO_CLI_H
#define KYSO_CLI_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "kyso/client.h"
#include "kyso/config.h"
#include "kyso/status.h"
#include "kyso/v1/common.pb-c.h"

typedef struct cli {
  kyso_config cfg;          /* [cli] section of --config, overridden by flags */
  int64_t timeout_ms;
  kyso_client *client;      /* opened on first use */
} cli;

/* Each subcommand: argv[0] is its name. Returns the process exit status. */
int cli_keygen(cli *c, int argc, char **argv);
int cli_csr(cli *c, int argc, char **argv);
int cli_cert(cli *c, int argc, char **argv);
int cli_keys(cli *c, int argc, char **argv);
int cli_sign(cli *c, int argc, char **argv);
int cli_verify(cli *c, int argc, char **argv);
int cli_health(cli *c, int argc, char **argv);
int cli_archive(cli *c, int argc, char **argv);
int cli_timestamp(cli *c, int argc, char **argv);
int cli_cluster(cli *c, int argc, char **argv);

/* Opens c->client on first use; prints why not and returns 1 otherwise. */
int cli_connect(cli *c);

/* One unary call with a protobuf-c request; on success *out is the unpacked
 * response (caller frees with protobuf_c_message_free_unpacked). Prints the
 * error and returns a non-zero exit status otherwise. */
int cli_call(cli *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **out);

/* --account/--unit/--seal/--tsa into a KeyRef (NULL/0 for a flag not
 * given); prints what is missing or clashes. ref points into the strings. */
int cli_key_ref(const char *account, const char *unit, int seal, const char *tsa,
                Kyso__V1__KeyRef *ref);

int cli_fail(const char *fmt, ...) KYSO_PRINTF(1, 2);

#endif
