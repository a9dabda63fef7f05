/* kysod — kyso.v1.Keys: key generation, CSRs, certificates, listing. */
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/limits.h"
#include "kyso/log.h"
#include "kyso/util.h"
#include "kyso/x509_text.h"
#include "kysod.h"

#include "kyso/v1/keys.pb-c.h"

kyso_status kysod__require_key(kysod *d, const char *label, X509 **cert, kyso_err *err) {
  hsm_key_info info;
  kyso_status st = hsm_key_info_get(d->hsm, label, &info, err);
  /* In a cluster the registry may hold what this node has not installed yet
   * (looked up on the refusal paths only: Sign calls this every time). */
  if (st == KYSO_NOT_FOUND && d->cluster != NULL && kysod__key_registered(d, label))
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "key '%s' is in the cluster's key registry but not yet installed on node %u "
                     "(it is unwrapped under the KEK after it replicates): retry shortly; if this "
                     "persists, this node's log says why (a missing KEK: README, the KEK ceremony)",
                     label, d->cfg.node_id);
  if (st == KYSO_NOT_FOUND)
    return kyso_fail(err, KYSO_NOT_FOUND,
                     "no key '%s' in this node's HSM; an operator creates it with `kyso keygen`",
                     label);
  if (st != KYSO_OK || cert == NULL) return st;
  st = signer_certificate(d->signer, label, cert, NULL, err);
  if (st == KYSO_NOT_FOUND && d->cluster != NULL && kysod__certificate_registered(d, label))
    return kyso_fail(err, KYSO_UNAVAILABLE,
                     "the certificate of key '%s' is recorded in the cluster but not yet "
                     "installed on node %u: retry shortly", label, d->cfg.node_id);
  if (st == KYSO_NOT_FOUND)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "key '%s' has no certificate yet; make a CSR with `kyso csr`, have the CA "
                     "issue it, then `kyso cert import`", label);
  return st;
}

static Kyso__V1__KeyAlgorithm algorithm_of(hsm_key_type t) {
  switch (t) {
    case HSM_KEY_RSA_2048: return KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_2048;
    case HSM_KEY_RSA_3072: return KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_3072;
    case HSM_KEY_EC_P256: return KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256;
  }
  return KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_UNSPECIFIED;
}

/* Everything a KeyInfo needs, owned in one place so one free releases it. */
typedef struct key_view {
  Kyso__V1__KeyInfo info;
  Kyso__V1__KeyRef ref;
  char label[KYSO_MAX_LABEL + 1];
  char label_for_ref[KYSO_MAX_LABEL + 1];
  char subject[512];
  char not_after[32];
  uint8_t *spki;
} key_view;

static void key_view_fill(kysod *d, const hsm_key_info *hk, key_view *v) {
  EVP_PKEY *pub = NULL;
  X509 *cert = NULL;
  kyso_err ignored;
  memset(v, 0, sizeof(*v));
  kyso__v1__key_info__init(&v->info);
  kyso__v1__key_ref__init(&v->ref);
  snprintf(v->label, sizeof(v->label), "%s", hk->label);
  snprintf(v->label_for_ref, sizeof(v->label_for_ref), "%s", hk->label);
  if (kysod__label_to_ref(v->label_for_ref, &v->ref)) v->info.key = &v->ref;
  v->info.label = v->label;
  v->info.algorithm = algorithm_of(hk->type);
  v->info.sensitive = hk->sensitive;
  v->info.extractable = hk->extractable;
  v->info.wrap_with_trusted = hk->wrap_with_trusted;
  if (hsm_public_key(d->hsm, hk->label, &pub, &ignored) == KYSO_OK) {
    int n = i2d_PUBKEY(pub, &v->spki);
    if (n > 0) {
      v->info.public_key.data = v->spki;
      v->info.public_key.len = (size_t)n;
    }
  }
  v->info.certificate_subject = v->subject;
  v->info.certificate_not_after = v->not_after;
  if (signer_certificate(d->signer, hk->label, &cert, NULL, &ignored) == KYSO_OK) {
    struct tm tm;
    v->info.has_certificate = 1;
    kyso_x509_name_utf8(X509_get_subject_name(cert), v->subject, sizeof(v->subject));
    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm))
      strftime(v->not_after, sizeof(v->not_after), "%Y-%m-%dT%H:%M:%SZ", &tm);
  }
  X509_free(cert);
  EVP_PKEY_free(pub);
}

static void key_view_clear(key_view *v) { OPENSSL_free(v->spki); }

static kyso_status reply_key(rpc_call *call, kysod *d, const char *label, kyso_err *err) {
  hsm_key_info hk;
  key_view v;
  kyso_status st = hsm_key_info_get(d->hsm, label, &hk, err);
  if (st != KYSO_OK) return st;
  key_view_fill(d, &hk, &v);
  kysod__reply(call, &v.info.base);
  key_view_clear(&v);
  return KYSO_OK;
}

void kysod__keys_generate(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  char label[KYSO_MAX_LABEL + 1];
  hsm_key_info hk;
  hsm_key_type type = HSM_KEY_EC_P256;
  Kyso__V1__GenerateKeyRequest *req = kyso__v1__generate_key_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.GenerateKeyRequest");
    goto out;
  }
  if ((st = kysod__key_label(req->key, label, sizeof(label), &err)) != KYSO_OK) goto out;
  switch (req->algorithm) {
    case KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_UNSPECIFIED:
    case KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256: type = HSM_KEY_EC_P256; break;
    case KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_2048: type = HSM_KEY_RSA_2048; break;
    case KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_RSA_3072: type = HSM_KEY_RSA_3072; break;
    default:
      st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "algorithm %d is not supported", (int)req->algorithm);
      goto out;
  }
  /* Refused before the HSM works: the name taken in the registry (by a key
   * this node may not have installed yet), or not the writer. */
  if (kysod__key_registered(d, label)) {
    st = kyso_fail(&err, KYSO_ALREADY_EXISTS, "key '%s' already exists (`kyso keys` lists it)",
                   label);
    goto out;
  }
  if ((st = kysod__require_writer(d, &err)) != KYSO_OK) goto out;
  if ((st = hsm_generate_key(d->hsm, label, type, &hk, &err)) != KYSO_OK) goto out;
  if ((st = kysod__register_key(d, call, label, type, &err)) != KYSO_OK) {
    /* Not recorded, or not known to be: the token's key goes. Had the
     * record committed after all, the key sync installs its wrapped copy
     * back, so the registry and the token agree either way. */
    kyso_err derr = {0};
    if (hsm_destroy_key(d->hsm, label, &derr) != KYSO_OK)
      kyso_log(KYSO_LOG_ERROR, "key '%s' was not registered and could not be removed from the "
               "token: %s", label, derr.msg);
    kysod__keys_want(d, label);
    goto out;
  }
  kyso_log(KYSO_LOG_INFO, "keygen principal=%s key=%s type=%s%s", rpc_call_peer(call)->principal,
           label, hsm_key_type_name(type), d->cluster != NULL ? " wrapped for the cluster" : "");
  st = reply_key(call, d, label, &err);
out:
  if (st != KYSO_OK) rpc_call_finish(call, st, err.msg, NULL, 0);
  kyso__v1__generate_key_request__free_unpacked(req, NULL);
}

void kysod__keys_create_csr(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  char label[KYSO_MAX_LABEL + 1];
  uint8_t *der = NULL;
  size_t der_len = 0;
  Kyso__V1__CreateCsrRequest *req = kyso__v1__create_csr_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.CreateCsrRequest");
    goto out;
  }
  if ((st = kysod__key_label(req->key, label, sizeof(label), &err)) != KYSO_OK) goto out;
  if ((st = kysod__check_text("subject", req->subject, KYSO_MAX_SUBJECT, &err)) != KYSO_OK) goto out;
  if ((st = kysod__require_key(d, label, NULL, &err)) != KYSO_OK) goto out;
  if ((st = signer_make_csr(d->signer, label, req->subject, &der, &der_len, &err)) != KYSO_OK)
    goto out;
  Kyso__V1__CreateCsrResponse resp = KYSO__V1__CREATE_CSR_RESPONSE__INIT;
  resp.csr.data = der;
  resp.csr.len = der_len;
  kysod__reply(call, &resp.base);
out:
  if (st != KYSO_OK) rpc_call_finish(call, st, err.msg, NULL, 0);
  OPENSSL_free(der);
  kyso__v1__create_csr_request__free_unpacked(req, NULL);
}

/* DER or PEM, one certificate. */
static X509 *parse_cert(const ProtobufCBinaryData *b) {
  if (b->len == 0 || b->len > KYSO_MAX_CERT_DER * 2) return NULL;
  const unsigned char *p = b->data;
  X509 *x = d2i_X509(NULL, &p, (long)b->len);
  if (x != NULL && p == b->data + b->len) return x;
  X509_free(x);
  BIO *bio = BIO_new_mem_buf(b->data, (int)b->len);
  x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  return x;
}

/* The certificate certifies this key: refused before anything is recorded. */
static kyso_status key_matches(kysod *d, const char *label, X509 *cert, kyso_err *err) {
  EVP_PKEY *pub = NULL;
  kyso_status st = hsm_public_key(d->hsm, label, &pub, err);
  if (st != KYSO_OK) return st;
  EVP_PKEY *ck = X509_get0_pubkey(cert);
  if (ck == NULL || EVP_PKEY_eq(ck, pub) != 1)
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "the certificate is not for key '%s' (its public key differs)", label);
  EVP_PKEY_free(pub);
  return st;
}

void kysod__keys_import_certificate(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  char label[KYSO_MAX_LABEL + 1];
  X509 *cert = NULL;
  STACK_OF(X509) *chain = sk_X509_new_null();
  Kyso__V1__ImportCertificateRequest *req =
      kyso__v1__import_certificate_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT,
                   "request is not a valid kyso.v1.ImportCertificateRequest");
    goto out;
  }
  if ((st = kysod__key_label(req->key, label, sizeof(label), &err)) != KYSO_OK) goto out;
  if ((st = kysod__require_key(d, label, NULL, &err)) != KYSO_OK) goto out;
  if ((cert = parse_cert(&req->certificate)) == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "certificate is not a DER or PEM X.509 certificate");
    goto out;
  }
  if (req->n_chain > KYSO_MAX_CERT_CHAIN) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "chain has %zu certificates, more than %d",
                   req->n_chain, KYSO_MAX_CERT_CHAIN);
    goto out;
  }
  for (size_t i = 0; i < req->n_chain; i++) {
    X509 *c = parse_cert(&req->chain[i]);
    if (c == NULL || !sk_X509_push(chain, c)) {
      X509_free(c);
      st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "chain[%zu] is not a DER or PEM certificate", i);
      goto out;
    }
  }
  if ((st = kysod__tsa_check_import(d, label, cert, &err)) != KYSO_OK) goto out;
  if ((st = key_matches(d, label, cert, &err)) != KYSO_OK) goto out;
  if ((st = kysod__require_writer(d, &err)) != KYSO_OK) goto out;
  if (!kysod__key_registered(d, label)) {
    /* A key made before the registry existed joins it now (in a cluster:
     * wrapped, so the other nodes get it too). */
    hsm_key_info hk;
    if ((st = hsm_key_info_get(d->hsm, label, &hk, &err)) != KYSO_OK) goto out;
    if ((st = kysod__register_key(d, call, label, hk.type, &err)) != KYSO_OK) goto out;
    kyso_log(KYSO_LOG_INFO, "key-registry key=%s recorded at its first certificate", label);
  }
  if ((st = kysod__register_certificate(d, call, label, cert, chain, &err)) != KYSO_OK) goto out;
  if ((st = signer_import_certificate(d->signer, label, cert, chain, &err)) != KYSO_OK) goto out;
  kyso_log(KYSO_LOG_INFO, "cert-import principal=%s key=%s", rpc_call_peer(call)->principal, label);
  kysod__tsa_reload(d, label);
  st = reply_key(call, d, label, &err);
out:
  if (st != KYSO_OK) rpc_call_finish(call, st, err.msg, NULL, 0);
  X509_free(cert);
  sk_X509_pop_free(chain, X509_free);
  kyso__v1__import_certificate_request__free_unpacked(req, NULL);
}

static int matches(const Kyso__V1__ListKeysRequest *req, const Kyso__V1__KeyRef *ref) {
  if (req->role != KYSO__V1__KEY_ROLE__KEY_ROLE_UNSPECIFIED && req->role != ref->role) return 0;
  if (req->account[0] && strcmp(req->account, ref->account) != 0) return 0;
  if (req->unit[0] && strcmp(req->unit, ref->unit) != 0) return 0;
  return 1;
}

void kysod__keys_list(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  size_t len, count = 0, n = 0;
  const uint8_t *data = rpc_call_request(call, &len);
  hsm_key_info *keys = NULL;
  key_view *views = NULL;
  Kyso__V1__KeyInfo **ptrs = NULL;
  Kyso__V1__ListKeysRequest *req = kyso__v1__list_keys_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.ListKeysRequest");
    goto out;
  }
  if ((st = hsm_list_keys(d->hsm, &keys, &count, &err)) != KYSO_OK) goto out;
  views = calloc(count ? count : 1, sizeof(*views));
  ptrs = calloc(count ? count : 1, sizeof(*ptrs));
  if (views == NULL || ptrs == NULL) {
    st = kyso_fail(&err, KYSO_RESOURCE_EXHAUSTED, "out of memory listing %zu keys", count);
    goto out;
  }
  size_t page = req->page_size == 0 ? 200 : req->page_size > 1000 ? 1000 : req->page_size;
  const char *next = "";
  for (size_t i = 0; i < count; i++) {
    char copy[KYSO_MAX_LABEL + 1];
    if (req->page_token[0] && strcmp(keys[i].label, req->page_token) <= 0) continue;
    if (n == page) {
      next = views[n - 1].label;
      break;
    }
    Kyso__V1__KeyRef ref = KYSO__V1__KEY_REF__INIT;
    snprintf(copy, sizeof(copy), "%s", keys[i].label);
    if (!kysod__label_to_ref(copy, &ref) || !matches(req, &ref)) continue;
    key_view_fill(d, &keys[i], &views[n]);
    ptrs[n] = &views[n].info;
    n++;
  }
  Kyso__V1__ListKeysResponse resp = KYSO__V1__LIST_KEYS_RESPONSE__INIT;
  resp.keys = ptrs;
  resp.n_keys = n;
  resp.next_page_token = (char *)next;
  kysod__reply(call, &resp.base);
out:
  if (st != KYSO_OK) rpc_call_finish(call, st, err.msg, NULL, 0);
  for (size_t i = 0; i < n; i++) key_view_clear(&views[i]);
  free(views);
  free(ptrs);
  free(keys);
  kyso__v1__list_keys_request__free_unpacked(req, NULL);
}
