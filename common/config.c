/* kyso — configuration file loading (libinih). */
#include <ctype.h>
#include <stddef.h>
#include <ini.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kyso/config.h"
#include "kyso/limits.h"
#include "kyso/util.h"

typedef struct load_ctx {
  kyso_config *cfg;
  char base_dir[KYSO_PATH_MAX];
  const char *path;
  kyso_err *err;
  kyso_status st;
} load_ctx;

static void set_defaults(kyso_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  snprintf(cfg->listen, sizeof(cfg->listen), "127.0.0.1:7443");
  snprintf(cfg->data_dir, sizeof(cfg->data_dir), "/var/lib/kyso");
  snprintf(cfg->log_level, sizeof(cfg->log_level), "info");
  cfg->cq_threads = 1;
  cfg->worker_threads = 4;
  cfg->max_message = KYSO_MAX_MESSAGE;
  cfg->shutdown_grace_ms = 10000;
  cfg->max_call_seconds = 600;
  cfg->hsm_sessions = 8;
  cfg->max_document = KYSO_MAX_DOCUMENT;
  cfg->group_commit_max = 256;
  cfg->peer_cache_seconds = 60;
  cfg->node_id = 1;
  cfg->forward = 1;
  cfg->timestamp = KYSO_TIMESTAMP_INTERNAL;
  cfg->timestamp_timeout_ms = 10000;
  snprintf(cfg->tsa_name, sizeof(cfg->tsa_name), "default");
  snprintf(cfg->tsa_policy, sizeof(cfg->tsa_policy), "%s", KYSO_DEFAULT_TSA_POLICY);
  cfg->tsa_http_max_request = 16 * 1024;
  cfg->tsa_http_threads = 2;
  snprintf(cfg->hsm_module, sizeof(cfg->hsm_module), "/usr/lib/softhsm/libsofthsm2.so");
  snprintf(cfg->kek_label, sizeof(cfg->kek_label), "kyso-kek");
  cfg->orphan_grace_seconds = 86400;
}

/* Copies value into dst, resolving it against the config directory when
 * it is a relative path. */
static int set_path(load_ctx *c, char *dst, size_t size, const char *value) {
  int n;
  if (value[0] == '/' || value[0] == '\0')
    n = snprintf(dst, size, "%s", value);
  else
    n = snprintf(dst, size, "%s/%s", c->base_dir, value);
  if (n < 0 || (size_t)n >= size) {
    c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT, "path too long");
    return 0;
  }
  return 1;
}

static int set_str(load_ctx *c, char *dst, size_t size, const char *value) {
  if (strlen(value) >= size) {
    c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT, "value too long");
    return 0;
  }
  snprintf(dst, size, "%s", value);
  return 1;
}

static int set_uint(load_ctx *c, unsigned long *dst, const char *value,
                    unsigned long lo, unsigned long hi) {
  char *end = NULL;
  unsigned long v = strtoul(value, &end, 10);
  if (end == value || *end != '\0' || v < lo || v > hi) {
    c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT,
                      "'%s' is not a number between %lu and %lu", value, lo, hi);
    return 0;
  }
  *dst = v;
  return 1;
}

kyso_status kyso_roles_parse(const char *s, unsigned *out, kyso_err *err) {
  static const struct { const char *name; unsigned bit; } roles[] = {
      {"service", KYSO_ROLE_SERVICE},
      {"operator", KYSO_ROLE_OPERATOR},
      {"archivist", KYSO_ROLE_ARCHIVIST},
      {"peer", KYSO_ROLE_PEER},
  };
  char buf[256];
  unsigned mask = 0;
  if (strlen(s) >= sizeof(buf))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "role list too long");
  snprintf(buf, sizeof(buf), "%s", s);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
    size_t i;
    for (i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
      if (strcmp(tok, roles[i].name) == 0) break;
    }
    if (i == sizeof(roles) / sizeof(roles[0]))
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "unknown role '%s' (roles: service, operator, archivist, peer)", tok);
    mask |= roles[i].bit;
  }
  if (mask == 0) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "empty role list");
  *out = mask;
  return KYSO_OK;
}

static int parse_fingerprint(load_ctx *c, uint8_t out[32], const char *value) {
  /* Accepts "AB:CD:…" (openssl x509 -fingerprint) or plain hex. */
  size_t n = 0;
  for (const char *p = value; *p; p++) {
    if (*p == ':') continue;
    if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]) || n == 32) goto bad;
    char byte[3] = {p[0], p[1], 0};
    out[n++] = (uint8_t)strtoul(byte, NULL, 16);
    p++;
  }
  if (n == 32) return 1;
bad:
  c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT,
                    "fingerprint must be a SHA-256 (64 hex digits), as printed by "
                    "`openssl x509 -noout -fingerprint -sha256 -in CERT`");
  return 0;
}

static kyso_caller *caller_for(load_ctx *c, const char *name) {
  kyso_config *cfg = c->cfg;
  for (size_t i = 0; i < cfg->caller_count; i++)
    if (strcmp(cfg->callers[i].name, name) == 0) return &cfg->callers[i];
  if (strlen(name) == 0 || strlen(name) >= sizeof(cfg->callers[0].name)) {
    c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT, "bad caller name");
    return NULL;
  }
  kyso_caller *grown = realloc(cfg->callers, (cfg->caller_count + 1) * sizeof(*grown));
  if (grown == NULL) {
    c->st = kyso_fail(c->err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  cfg->callers = grown;
  kyso_caller *k = &cfg->callers[cfg->caller_count++];
  memset(k, 0, sizeof(*k));
  snprintf(k->name, sizeof(k->name), "%s", name);
  return k;
}

static int set_bool(load_ctx *c, int *dst, const char *value) {
  if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 || strcmp(value, "1") == 0)
    *dst = 1;
  else if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0 || strcmp(value, "0") == 0)
    *dst = 0;
  else {
    c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT, "'%s' is not true or false", value);
    return 0;
  }
  return 1;
}

/* member = ID RAFT_ADDRESS RPC_ADDRESS, one line per node. */
static int add_member(load_ctx *c, const char *value) {
  kyso_config *cfg = c->cfg;
  kyso_cluster_member m;
  char extra[2];
  memset(&m, 0, sizeof(m));
  if (cfg->member_count == KYSO_MAX_CLUSTER_MEMBERS) {
    c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT, "a cluster has at most %d members",
                      KYSO_MAX_CLUSTER_MEMBERS);
    return 0;
  }
  if (sscanf(value, "%u %127s %127s %1s", &m.id, m.raft, m.rpc, extra) != 3 || m.id == 0 ||
      m.id > 65535 || strchr(m.raft, ':') == NULL || strchr(m.rpc, ':') == NULL) {
    c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT,
                      "member is '%s'; write: member = ID RAFT_HOST:PORT RPC_HOST:PORT (ID "
                      "1..65535, the node's [server] node_id)",
                      value);
    return 0;
  }
  for (size_t i = 0; i < cfg->member_count; i++)
    if (cfg->members[i].id == m.id) {
      c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT, "member %u is listed twice", m.id);
      return 0;
    }
  cfg->members[cfg->member_count++] = m;
  return 1;
}

static int cluster_entry(load_ctx *c, const char *name, const char *value) {
  kyso_config *cfg = c->cfg;
  unsigned long v = 0;
  if (strcmp(name, "member") == 0) return add_member(c, value);
  if (strcmp(name, "raft_dir") == 0) return set_path(c, cfg->raft_dir, sizeof(cfg->raft_dir), value);
  if (strcmp(name, "join") == 0) return set_bool(c, &cfg->cluster_join, value);
  if (strcmp(name, "stale_reads") == 0) return set_bool(c, &cfg->stale_reads, value);
  if (strcmp(name, "forward") == 0) return set_bool(c, &cfg->forward, value);
  if (strcmp(name, "peer_ca") == 0) return set_path(c, cfg->peer_ca, sizeof(cfg->peer_ca), value);
  if (strcmp(name, "peer_server_name") == 0)
    return set_str(c, cfg->peer_server_name, sizeof(cfg->peer_server_name), value);
  static const struct {
    const char *name;
    size_t offset;
    unsigned long lo, hi;
  } numbers[] = {
      {"election_ms", offsetof(kyso_config, election_ms), 100, 60000},
      {"heartbeat_ms", offsetof(kyso_config, heartbeat_ms), 10, 10000},
      {"snapshot_threshold", offsetof(kyso_config, snapshot_threshold), 16, 1000000},
      {"snapshot_trailing", offsetof(kyso_config, snapshot_trailing), 8, 1000000},
  };
  for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
    if (strcmp(name, numbers[i].name) != 0) continue;
    if (!set_uint(c, &v, value, numbers[i].lo, numbers[i].hi)) return 0;
    *(unsigned *)((char *)cfg + numbers[i].offset) = (unsigned)v;
    return 1;
  }
  c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT, "unknown setting '%s' in [cluster]", name);
  return 0;
}

static int on_entry(void *user, const char *section, const char *name, const char *value) {
  load_ctx *c = user;
  kyso_config *cfg = c->cfg;
  unsigned long v = 0;
#define IS(s, k) (strcmp(section, s) == 0 && strcmp(name, k) == 0)
  if (IS("server", "listen")) return set_str(c, cfg->listen, sizeof(cfg->listen), value);
  if (IS("server", "data_dir")) return set_path(c, cfg->data_dir, sizeof(cfg->data_dir), value);
  if (IS("server", "log_level")) return set_str(c, cfg->log_level, sizeof(cfg->log_level), value);
  if (IS("server", "cq_threads")) {
    if (!set_uint(c, &v, value, 1, KYSO_MAX_THREADS)) return 0;
    cfg->cq_threads = (unsigned)v;
    return 1;
  }
  if (IS("server", "worker_threads")) {
    if (!set_uint(c, &v, value, 1, KYSO_MAX_THREADS)) return 0;
    cfg->worker_threads = (unsigned)v;
    return 1;
  }
  if (IS("server", "max_message")) {
    if (!set_uint(c, &v, value, 64 * 1024, 64UL * 1024 * 1024)) return 0;
    cfg->max_message = v;
    return 1;
  }
  if (IS("server", "max_call_seconds")) {
    if (!set_uint(c, &v, value, 1, 86400)) return 0;
    cfg->max_call_seconds = (unsigned)v;
    return 1;
  }
  if (IS("server", "shutdown_grace_ms")) {
    if (!set_uint(c, &v, value, 0, 600000)) return 0;
    cfg->shutdown_grace_ms = (int)v;
    return 1;
  }
  if (IS("server", "node_id")) {
    if (!set_uint(c, &v, value, 1, 65535)) return 0;
    cfg->node_id = (unsigned)v;
    return 1;
  }
  if (IS("signer", "timestamp")) {
    if (strcmp(value, "internal") == 0) cfg->timestamp = KYSO_TIMESTAMP_INTERNAL;
    else if (strcmp(value, "external") == 0) cfg->timestamp = KYSO_TIMESTAMP_EXTERNAL;
    else if (strcmp(value, "off") == 0) cfg->timestamp = KYSO_TIMESTAMP_OFF;
    else {
      c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT,
                        "timestamp is '%s'; use internal, external or off", value);
      return 0;
    }
    return 1;
  }
  if (IS("signer", "timestamp_url"))
    return set_str(c, cfg->timestamp_url, sizeof(cfg->timestamp_url), value);
  if (IS("signer", "timestamp_timeout_ms")) {
    if (!set_uint(c, &v, value, 100, 120000)) return 0;
    cfg->timestamp_timeout_ms = (unsigned)v;
    return 1;
  }
  if (IS("signer", "timestamp_ca"))
    return set_path(c, cfg->timestamp_ca, sizeof(cfg->timestamp_ca), value);
  if (IS("tsa", "name")) return set_str(c, cfg->tsa_name, sizeof(cfg->tsa_name), value);
  if (IS("tsa", "policy")) return set_str(c, cfg->tsa_policy, sizeof(cfg->tsa_policy), value);
  if (IS("tsa", "http_listen"))
    return set_str(c, cfg->tsa_http_listen, sizeof(cfg->tsa_http_listen), value);
  if (IS("tsa", "http_cert"))
    return set_path(c, cfg->tsa_http_cert, sizeof(cfg->tsa_http_cert), value);
  if (IS("tsa", "http_key")) return set_path(c, cfg->tsa_http_key, sizeof(cfg->tsa_http_key), value);
  if (IS("tsa", "http_max_request")) {
    if (!set_uint(c, &v, value, 1024, 1024 * 1024)) return 0;
    cfg->tsa_http_max_request = v;
    return 1;
  }
  if (IS("tsa", "http_threads")) {
    if (!set_uint(c, &v, value, 1, KYSO_MAX_THREADS)) return 0;
    cfg->tsa_http_threads = (unsigned)v;
    return 1;
  }
  if (IS("archive", "max_document")) {
    if (!set_uint(c, &v, value, 1024, 4UL * 1024 * 1024 * 1024)) return 0;
    cfg->max_document = v;
    return 1;
  }
  if (IS("archive", "orphan_grace_seconds")) {
    /* At least a minute: far longer than any write between copying a
     * document and committing its record. */
    if (!set_uint(c, &v, value, 60, 365UL * 86400)) return 0;
    cfg->orphan_grace_seconds = (unsigned)v;
    return 1;
  }
  if (IS("archive", "group_commit_max")) {
    if (!set_uint(c, &v, value, 1, 4096)) return 0;
    cfg->group_commit_max = (unsigned)v;
    return 1;
  }
  if (IS("tls", "cert")) return set_path(c, cfg->tls_cert, sizeof(cfg->tls_cert), value);
  if (IS("tls", "key")) return set_path(c, cfg->tls_key, sizeof(cfg->tls_key), value);
  if (IS("tls", "client_ca")) return set_path(c, cfg->client_ca, sizeof(cfg->client_ca), value);
  if (IS("tls", "peer_cache_seconds")) {
    /* How long a verified client certificate is trusted without a fresh check,
     * so also how long a revoked one can still be honoured. */
    if (!set_uint(c, &v, value, 0, 3600)) return 0;
    cfg->peer_cache_seconds = (unsigned)v;
    return 1;
  }
  if (IS("hsm", "module")) return set_path(c, cfg->hsm_module, sizeof(cfg->hsm_module), value);
  if (IS("hsm", "token")) return set_str(c, cfg->hsm_token, sizeof(cfg->hsm_token), value);
  if (IS("hsm", "pin_file")) return set_path(c, cfg->pin_file, sizeof(cfg->pin_file), value);
  if (IS("hsm", "pin_env")) return set_str(c, cfg->pin_env, sizeof(cfg->pin_env), value);
  if (IS("hsm", "kek_label")) return set_str(c, cfg->kek_label, sizeof(cfg->kek_label), value);
  if (IS("hsm", "sessions")) {
    if (!set_uint(c, &v, value, 1, KYSO_HSM_MAX_SESSIONS)) return 0;
    cfg->hsm_sessions = (unsigned)v;
    return 1;
  }
  if (IS("cli", "address")) return set_str(c, cfg->cli_address, sizeof(cfg->cli_address), value);
  if (IS("cli", "ca")) return set_path(c, cfg->cli_ca, sizeof(cfg->cli_ca), value);
  if (IS("cli", "cert")) return set_path(c, cfg->cli_cert, sizeof(cfg->cli_cert), value);
  if (IS("cli", "key")) return set_path(c, cfg->cli_key, sizeof(cfg->cli_key), value);
  if (IS("cli", "server_name"))
    return set_str(c, cfg->cli_server_name, sizeof(cfg->cli_server_name), value);
#undef IS
  if (strcmp(section, "cluster") == 0) return cluster_entry(c, name, value);
  if (strncmp(section, "caller.", 7) == 0) {
    kyso_caller *k = caller_for(c, section + 7);
    if (k == NULL) return 0;
    if (strcmp(name, "fingerprint") == 0) return parse_fingerprint(c, k->cert_sha256, value);
    if (strcmp(name, "roles") == 0) {
      if ((c->st = kyso_roles_parse(value, &k->roles, c->err)) != KYSO_OK) return 0;
      return 1;
    }
  }
  c->st = kyso_fail(c->err, KYSO_INVALID_ARGUMENT, "unknown setting '%s' in [%s]", name, section);
  return 0;
}

kyso_status kyso_config_load(const char *path, kyso_config *cfg, kyso_err *err) {
  load_ctx c = {.cfg = cfg, .path = path, .err = err, .st = KYSO_OK};
  char tmp[KYSO_PATH_MAX];
  set_defaults(cfg);
  snprintf(tmp, sizeof(tmp), "%s", path);
  char *real = realpath(dirname(tmp), NULL);
  snprintf(c.base_dir, sizeof(c.base_dir), "%s", real ? real : ".");
  free(real);
  int rc = ini_parse(path, on_entry, &c);
  if (rc < 0) return kyso_fail(err, KYSO_NOT_FOUND, "cannot read configuration file '%s'", path);
  if (c.st != KYSO_OK) return kyso_err_wrap(err, "%s:%d", path, rc);
  if (rc > 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s:%d: syntax error", path, rc);
  if (cfg->member_count > 0) {
    size_t self = 0;
    for (size_t i = 0; i < cfg->member_count; i++) self += cfg->members[i].id == cfg->node_id;
    if (self == 0)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "%s: [cluster] lists no member with this node's id %u ([server] node_id)",
                       path, cfg->node_id);
    unsigned hb = cfg->heartbeat_ms ? cfg->heartbeat_ms : 100;
    unsigned el = cfg->election_ms ? cfg->election_ms : 1000;
    if (hb * 2 > el)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "%s: [cluster] heartbeat_ms %u must be at most half of election_ms %u",
                       path, hb, el);
  }
  for (size_t i = 0; i < cfg->caller_count; i++) {
    static const uint8_t zero[32];
    if (memcmp(cfg->callers[i].cert_sha256, zero, 32) == 0 || cfg->callers[i].roles == 0)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "%s: [caller.%s] needs both 'fingerprint' and 'roles'", path,
                       cfg->callers[i].name);
  }
  return KYSO_OK;
}

void kyso_config_free(kyso_config *cfg) {
  if (cfg == NULL) return;
  free(cfg->callers);
  cfg->callers = NULL;
  cfg->caller_count = 0;
}

kyso_status kyso_config_check_server(const kyso_config *cfg, kyso_err *err) {
  struct stat sb;
  if (cfg->tls_cert[0] == '\0' || cfg->tls_key[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "[tls] cert and key are required: kysod only serves over TLS");
  if (cfg->hsm_token[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "[hsm] token is required (the token's label)");
  if (cfg->pin_file[0] == '\0' && cfg->pin_env[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "[hsm] needs pin_file or pin_env: where kysod reads the user PIN");
  if (cfg->client_ca[0] == '\0' && cfg->caller_count > 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "[caller.*] sections need [tls] client_ca to verify client certificates");
  if (cfg->timestamp == KYSO_TIMESTAMP_EXTERNAL &&
      strncmp(cfg->timestamp_url, "http://", 7) != 0 &&
      strncmp(cfg->timestamp_url, "https://", 8) != 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "[signer] timestamp = external needs timestamp_url, an http:// or "
                     "https:// RFC 3161 TSA address");
  if ((cfg->tsa_http_cert[0] == '\0') != (cfg->tsa_http_key[0] == '\0'))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "[tsa] http_cert and http_key go together (HTTPS), or neither (HTTP)");
  if (stat(cfg->data_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "data directory '%s' does not exist; create it (mode 0700) first",
                     cfg->data_dir);
  return KYSO_OK;
}

kyso_status kyso_config_read_pin(const kyso_config *cfg, char *out, size_t out_size,
                                 kyso_err *err) {
  kyso_status st = KYSO_OK;
  kyso_buf b;
  kyso_buf_init(&b, 0);
  if (cfg->pin_file[0] != '\0') {
    struct stat sb;
    if (stat(cfg->pin_file, &sb) == 0 && (sb.st_mode & 077) != 0)
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "PIN file '%s' is readable by group or others; chmod 600 it",
                       cfg->pin_file);
    st = kyso_read_file(cfg->pin_file, KYSO_MAX_PIN, &b, err);
    if (st != KYSO_OK) goto out;
    size_t n = b.len;
    while (n > 0 && (b.data[n - 1] == '\n' || b.data[n - 1] == '\r')) n--;
    if (n == 0 || n >= out_size) {
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "PIN file '%s' is empty or too long",
                     cfg->pin_file);
      goto out;
    }
    memcpy(out, b.data, n);
    out[n] = '\0';
  } else {
    const char *v = getenv(cfg->pin_env);
    if (v == NULL || v[0] == '\0' || strlen(v) >= out_size) {
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "environment variable %s (the HSM PIN) is not set or too long",
                     cfg->pin_env);
      goto out;
    }
    snprintf(out, out_size, "%s", v);
  }
out:
  kyso_buf_free(&b, 1);
  return st;
}
