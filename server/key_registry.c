/* kysod — recording keys and certificates in the key registry.
 *
 * In a cluster a key is generated here, wrapped once under the KEK ([hsm]
 * kek_label; CKA_EXTRACTABLE goes false right after) and recorded through
 * the Raft log with its public key and wrapped copy; every other node
 * installs it from the record (key_sync.c). A certificate is recorded the
 * same way. On a single node the same commands go to the archive, without
 * a wrapped copy. */
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyso/log.h"
#include "kysod.h"

#include "kyso/store/v1/command.pb-c.h"

static kyso_status submit(kysod *d, rpc_call *call, Kyso__Store__V1__Command *cmd,
                          kyso_err *err) {
  uint8_t *result = NULL;
  size_t result_len = 0;
  cmd->version = 2; /* key commands: a kysod too old for them stops, never refuses them */
  cmd->time_unix_ms = (int64_t)time(NULL) * 1000;
  cmd->principal = (char *)rpc_call_peer(call)->principal;
  size_t len = kyso__store__v1__command__get_packed_size(cmd);
  uint8_t *packed = malloc(len ? len : 1);
  if (packed == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  kyso__store__v1__command__pack(cmd, packed);
  kyso_status st = kysod__record(d, call, packed, len, NULL, 0, &result, &result_len, err);
  free(packed);
  free(result);
  return st;
}

/* 0: not registered; 1: registered; 2: registered with a certificate. */
static int registry_state(kysod *d, const char *label) {
  uint8_t *v = NULL;
  size_t n = 0;
  kyso_err ignored = {0};
  int state = 0;
  if (archive_get_key(d->archive, label, &v, &n, &ignored) == KYSO_OK) {
    Kyso__Store__V1__KeyRecord *r = kyso__store__v1__key_record__unpack(NULL, n, v);
    state = r != NULL && r->certificate.len > 0 ? 2 : 1;
    kyso__store__v1__key_record__free_unpacked(r, NULL);
  }
  free(v);
  return state;
}

int kysod__key_registered(kysod *d, const char *label) { return registry_state(d, label) > 0; }
int kysod__certificate_registered(kysod *d, const char *label) {
  return registry_state(d, label) == 2;
}

kyso_status kysod__register_key(kysod *d, rpc_call *call, const char *label, hsm_key_type type,
                                kyso_err *err) {
  EVP_PKEY *pub = NULL;
  uint8_t *spki = NULL, *wrapped = NULL;
  size_t wrapped_len = 0;
  kyso_status st = hsm_public_key(d->hsm, label, &pub, err);
  if (st != KYSO_OK) return st;
  int n = i2d_PUBKEY(pub, &spki);
  if (n <= 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot encode the public key of '%s'", label);
    goto out;
  }
  if (d->cluster != NULL &&
      (st = hsm_wrap_key(d->hsm, label, d->cfg.kek_label, &wrapped, &wrapped_len, err)) != KYSO_OK)
    goto out;
  Kyso__Store__V1__RecordKey k = KYSO__STORE__V1__RECORD_KEY__INIT;
  k.label = (char *)label;
  k.algorithm = (char *)hsm_key_type_id(type);
  k.public_key.data = spki;
  k.public_key.len = (size_t)n;
  k.wrapped.data = wrapped;
  k.wrapped.len = wrapped_len;
  k.kek_label = wrapped != NULL ? d->cfg.kek_label : "";
  k.origin_node = d->cfg.node_id;
  Kyso__Store__V1__Command cmd = KYSO__STORE__V1__COMMAND__INIT;
  cmd.request_id = "";
  cmd.op_case = KYSO__STORE__V1__COMMAND__OP_RECORD_KEY;
  cmd.record_key = &k;
  st = submit(d, call, &cmd, err);
out:
  if (wrapped != NULL) {
    OPENSSL_cleanse(wrapped, wrapped_len);
    free(wrapped);
  }
  OPENSSL_free(spki);
  EVP_PKEY_free(pub);
  return st;
}

kyso_status kysod__register_certificate(kysod *d, rpc_call *call, const char *label, X509 *cert,
                                        STACK_OF(X509) *chain, kyso_err *err) {
  int nchain = sk_X509_num(chain);
  ProtobufCBinaryData *ders = calloc((size_t)nchain + 1, sizeof(*ders));
  uint8_t *leaf = NULL;
  kyso_status st = KYSO_OK;
  int n = i2d_X509(cert, &leaf);
  if (ders == NULL || n <= 0) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "cannot encode the certificate of '%s'", label);
    goto out;
  }
  for (int i = 0; i < nchain; i++) {
    uint8_t *p = NULL;
    int m = i2d_X509(sk_X509_value(chain, i), &p);
    if (m <= 0) {
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "chain[%d] of '%s' cannot be encoded", i, label);
      goto out;
    }
    ders[i].data = p;
    ders[i].len = (size_t)m;
  }
  Kyso__Store__V1__RecordCertificate rc = KYSO__STORE__V1__RECORD_CERTIFICATE__INIT;
  rc.label = (char *)label;
  rc.certificate.data = leaf;
  rc.certificate.len = (size_t)n;
  rc.n_chain = (size_t)nchain;
  rc.chain = ders;
  Kyso__Store__V1__Command cmd = KYSO__STORE__V1__COMMAND__INIT;
  cmd.request_id = "";
  cmd.op_case = KYSO__STORE__V1__COMMAND__OP_RECORD_CERTIFICATE;
  cmd.record_certificate = &rc;
  st = submit(d, call, &cmd, err);
out:
  for (int i = 0; ders != NULL && i < nchain; i++) OPENSSL_free(ders[i].data);
  free(ders);
  OPENSSL_free(leaf);
  return st;
}
