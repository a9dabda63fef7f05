/* kyso — kysod's and the kyso CLI's configuration file (INI, read by libinih).
 * Relative paths are resolved against the configuration file's directory. */
#ifndef KYSO_CONFIG_H
#define KYSO_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "kyso/status.h"

#define KYSO_PATH_MAX 1024

/* Roles a caller may hold; the authorisation table is operation x role. */
enum {
  KYSO_ROLE_SERVICE = 1u << 0,   /* the DMS front end: signs on behalf of officials */
  KYSO_ROLE_OPERATOR = 1u << 1,  /* provisions keys and certificates */
  KYSO_ROLE_ARCHIVIST = 1u << 2, /* reads and verifies */
  KYSO_ROLE_PEER = 1u << 3,      /* another node of the cluster (kyso.v1.Peer only) */
};

/* Where CAdES-T signature time-stamps come from ([signer] timestamp). */
typedef enum {
  KYSO_TIMESTAMP_INTERNAL = 0, /* kysod's own TSA key (default) */
  KYSO_TIMESTAMP_EXTERNAL,     /* an RFC 3161 TSA at timestamp_url */
  KYSO_TIMESTAMP_OFF,          /* CAdES-BES: no time-stamp */
} kyso_timestamp_mode;

/* kyso's default TSA policy: an OID under 2.25 (a UUID, ITU-T X.667), so
 * it needs no registration. Production TSAs set their own ([tsa] policy). */
#define KYSO_DEFAULT_TSA_POLICY "2.25.7195448816352327920619818468147684736"

/* A caller kysod knows: [caller.NAME] with its certificate fingerprint. */
typedef struct kyso_caller {
  char name[64];
  uint8_t cert_sha256[32];
  unsigned roles;
} kyso_caller;

/* One node of the Raft group: [cluster] member = ID RAFT_ADDRESS RPC_ADDRESS. */
#define KYSO_MAX_CLUSTER_MEMBERS 9
typedef struct kyso_cluster_member {
  unsigned id;
  char raft[128];
  char rpc[128];
} kyso_cluster_member;

typedef struct kyso_config {
  /* [server] */
  char listen[256];
  char data_dir[KYSO_PATH_MAX];
  unsigned cq_threads;
  unsigned worker_threads;
  size_t max_message;
  int shutdown_grace_ms;
  unsigned max_call_seconds;
  char log_level[16];
  unsigned node_id;           /* 1..65535: the high 16 bits of TSA serials */
  /* [archive] */
  uint64_t max_document;
  unsigned group_commit_max;
  unsigned orphan_grace_seconds; /* unreferenced blobs are collected after this long */
  /* [tls] */
  char tls_cert[KYSO_PATH_MAX];
  char tls_key[KYSO_PATH_MAX];
  char client_ca[KYSO_PATH_MAX];
  unsigned peer_cache_seconds; /* how long a client certificate stays parsed and verified */
  /* [hsm] */
  char hsm_module[KYSO_PATH_MAX];
  char hsm_token[128];
  char pin_file[KYSO_PATH_MAX];
  char pin_env[64];
  unsigned hsm_sessions;
  char kek_label[129]; /* the cluster's key-encryption key in the token */
  /* [signer] */
  kyso_timestamp_mode timestamp;
  char timestamp_url[512];
  unsigned timestamp_timeout_ms;
  char timestamp_ca[KYSO_PATH_MAX]; /* trust anchors of the external TSA */
  /* [tsa] — kysod as a time-stamping authority */
  char tsa_name[64];          /* key label kyso/tsa/<name> */
  char tsa_policy[128];       /* dotted OID */
  char tsa_http_listen[256];  /* "" = HTTP endpoint off */
  char tsa_http_cert[KYSO_PATH_MAX];
  char tsa_http_key[KYSO_PATH_MAX];
  size_t tsa_http_max_request;
  unsigned tsa_http_threads;
  /* [cluster] — replication; off (a single node) without member lines */
  kyso_cluster_member members[KYSO_MAX_CLUSTER_MEMBERS];
  size_t member_count;
  char raft_dir[KYSO_PATH_MAX]; /* "" = data_dir/raft */
  int cluster_join;             /* a new node: wait to be added, never bootstrap */
  unsigned election_ms, heartbeat_ms;
  unsigned snapshot_threshold, snapshot_trailing;
  int stale_reads;              /* answer reads from this node without a barrier */
  int forward;                  /* a follower serves writes and linearizable reads through
                                   the leader (default); 0: refuses them, naming it */
  char peer_ca[KYSO_PATH_MAX];  /* trust anchors of the peers' TLS certificates ("" = client_ca) */
  char peer_server_name[256];   /* name the peers' certificates carry ("" = their address) */
  /* [caller.NAME] ... */
  kyso_caller *callers;
  size_t caller_count;
  /* [cli] — what the kyso command uses to reach a node */
  char cli_address[256];
  char cli_ca[KYSO_PATH_MAX];
  char cli_cert[KYSO_PATH_MAX];
  char cli_key[KYSO_PATH_MAX];
  char cli_server_name[256];
} kyso_config;

/* Loads and validates path into *cfg (defaults first). Unknown sections or
 * keys are errors naming file:line, so typos do not pass silently. */
kyso_status kyso_config_load(const char *path, kyso_config *cfg, kyso_err *err) KYSO_MUST_CHECK;
void kyso_config_free(kyso_config *cfg);
/* Checks what kysod needs (TLS files, HSM, PIN source, data dir). */
kyso_status kyso_config_check_server(const kyso_config *cfg, kyso_err *err) KYSO_MUST_CHECK;

/* Parses "service,operator" into a role mask. */
kyso_status kyso_roles_parse(const char *s, unsigned *out, kyso_err *err);
/* Reads the HSM PIN from pin_file or the pin_env variable into out (wiped by
 * the caller with kyso_wipe). Never logs it. */
kyso_status kyso_config_read_pin(const kyso_config *cfg, char *out, size_t out_size,
                                 kyso_err *err) KYSO_MUST_CHECK;

#endif
