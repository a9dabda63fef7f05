/* kysod — who may do what. Every RPC passes through kysod__authorize:
 * TLS hands us the client certificate unverified, so that a bad one gets
 * UNAUTHENTICATED with a reason instead of a bare handshake failure. */
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <string.h>

#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

/* operation x role: the least privilege each operation needs. */
static const struct {
  const char *operation;
  unsigned roles;
} authz_table[] = {
    {"sign", KYSO_ROLE_SERVICE},
    {"keys.generate", KYSO_ROLE_OPERATOR},
    {"keys.csr", KYSO_ROLE_OPERATOR},
    {"keys.import", KYSO_ROLE_OPERATOR},
    {"keys.list", KYSO_ROLE_OPERATOR | KYSO_ROLE_SERVICE | KYSO_ROLE_ARCHIVIST},
    {"archive.put", KYSO_ROLE_SERVICE},
    {"archive.read", KYSO_ROLE_SERVICE | KYSO_ROLE_ARCHIVIST},
    {"archive.scrub", KYSO_ROLE_ARCHIVIST | KYSO_ROLE_OPERATOR},
    {"archive.backup", KYSO_ROLE_OPERATOR},
    {"timestamp", KYSO_ROLE_SERVICE | KYSO_ROLE_ARCHIVIST},
    {"cluster.status", KYSO_ROLE_OPERATOR | KYSO_ROLE_SERVICE | KYSO_ROLE_ARCHIVIST},
    {"cluster.admin", KYSO_ROLE_OPERATOR},
    {"cluster.digest", KYSO_ROLE_OPERATOR | KYSO_ROLE_ARCHIVIST},
    {"peer.blob", KYSO_ROLE_PEER},
    {"peer.checkpoint", KYSO_ROLE_PEER},
    {"peer.serve", KYSO_ROLE_PEER}, /* Propose, ReadIndex: a follower's calls to the leader */
};

static void roles_text(unsigned roles, char *out, size_t size) {
  out[0] = '\0';
  if (roles & KYSO_ROLE_SERVICE) strncat(out, "service ", size - strlen(out) - 1);
  if (roles & KYSO_ROLE_OPERATOR) strncat(out, "operator ", size - strlen(out) - 1);
  if (roles & KYSO_ROLE_ARCHIVIST) strncat(out, "archivist ", size - strlen(out) - 1);
  if (roles & KYSO_ROLE_PEER) strncat(out, "peer ", size - strlen(out) - 1);
  size_t n = strlen(out);
  if (n > 0) out[n - 1] = '\0';
}

/* The earliest notAfter in a verified chain: past it, the verification no
 * longer holds even if the leaf is still valid. */
static const ASN1_TIME *chain_not_after(X509_STORE_CTX *ctx) {
  STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
  const ASN1_TIME *min = NULL;
  for (int i = 0; i < sk_X509_num(chain); i++) {
    const ASN1_TIME *t = X509_get0_notAfter(sk_X509_value(chain, i));
    if (min == NULL || ASN1_TIME_compare(t, min) < 0) min = t;
  }
  return min;
}

/* Verifies the peer's certificate against d->client_store, unless it did so
 * within [tls] peer_cache_seconds. Only a success is remembered (a client
 * that fixes its certificate must not wait), and never past its chain's
 * notAfter. */
static kyso_status verify_chain(kysod *d, const rpc_peer *peer, kyso_err *err) {
  kyso_status st = KYSO_OK;
  X509_STORE_CTX *ctx = NULL;
  char subject[256];
  if (rpc_peer_cache_get(d->verified, peer->cert_sha256, NULL, NULL)) goto out;
  X509_NAME_oneline(X509_get_subject_name(peer->cert), subject, sizeof(subject));
  if ((ctx = X509_STORE_CTX_new()) == NULL ||
      !X509_STORE_CTX_init(ctx, d->client_store, peer->cert, NULL)) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot set up certificate verification");
    goto out;
  }
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
  if (X509_verify_cert(ctx) != 1) {
    int e = X509_STORE_CTX_get_error(ctx);
    st = kyso_fail(err, KYSO_UNAUTHENTICATED, "client certificate '%s' is not trusted: %s",
                   subject, X509_verify_cert_error_string(e));
    goto out;
  }
  rpc_peer_cache_put(d->verified, peer->cert_sha256, NULL, NULL, chain_not_after(ctx));
out:
  X509_STORE_CTX_free(ctx);
  return st;
}

static kyso_status decide(kysod *d, rpc_peer *peer, const char *operation, kyso_err *err);

/* Every refusal is logged with the certificate fingerprint and the
 * operation, so an operator sees who knocked and what they wanted. */
kyso_status kysod__authorize(void *app, rpc_peer *peer, const char *operation, kyso_err *err) {
  kyso_status st = decide(app, peer, operation, err);
  if (st != KYSO_OK) {
    char hex[65] = "none";
    if (peer->cert != NULL) kyso_hex(peer->cert_sha256, 32, hex);
    kyso_log(KYSO_LOG_WARN, "denied operation=%s caller=%s cert_sha256=%s status=%s: %s",
             operation, peer->principal[0] ? peer->principal : "-", hex, kyso_strerror(st),
             err ? err->msg : "");
  }
  return st;
}

static kyso_status decide(kysod *d, rpc_peer *peer, const char *operation, kyso_err *err) {
  if (strcmp(operation, "health") == 0) return KYSO_OK; /* probes carry no identity */
  if (peer->cert == NULL)
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "a client certificate is required: give the kyso command --cert and --key, "
                     "or configure your gRPC client with one");
  if (d->client_store == NULL)
    return kyso_fail(err, KYSO_UNAUTHENTICATED, "this node has no [tls] client_ca configured");
  kyso_status st = verify_chain(d, peer, err);
  if (st != KYSO_OK) return st;

  const kyso_caller *caller = NULL;
  for (size_t i = 0; i < d->cfg.caller_count; i++) {
    if (memcmp(d->cfg.callers[i].cert_sha256, peer->cert_sha256, 32) == 0) {
      caller = &d->cfg.callers[i];
      break;
    }
  }
  if (caller == NULL) {
    char hex[65];
    kyso_hex(peer->cert_sha256, 32, hex);
    return kyso_fail(err, KYSO_UNAUTHENTICATED,
                     "client certificate sha256:%s is not registered; add a [caller.NAME] "
                     "section with this fingerprint to kysod's configuration", hex);
  }
  snprintf(peer->principal, sizeof(peer->principal), "%s", caller->name);
  roles_text(caller->roles, peer->role, sizeof(peer->role));

  for (size_t i = 0; i < sizeof(authz_table) / sizeof(authz_table[0]); i++) {
    if (strcmp(authz_table[i].operation, operation) != 0) continue;
    if (caller->roles & authz_table[i].roles) return KYSO_OK;
    char need[64];
    roles_text(authz_table[i].roles, need, sizeof(need));
    return kyso_fail(err, KYSO_PERMISSION_DENIED,
                     "caller '%s' (roles: %s) may not %s; that needs one of: %s",
                     caller->name, peer->role, operation, need);
  }
  return kyso_fail(err, KYSO_PERMISSION_DENIED, "operation '%s' is not in the authorisation table",
                   operation);
}
