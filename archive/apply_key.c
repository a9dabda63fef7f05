/* archive — the key registry's part of apply: which key each label names,
 * and its current certificate. The registry is what every node's token and
 * certificate store must come to hold; the nodes install from it after
 * apply (server/key_sync.c), never inside it.
 *
 * Deterministic like the rest of apply: the certificate is parsed only to
 * compare its public key with the recorded one (OpenSSL's DER parser, the
 * same bytes on every node). */
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"

static kyso_status load(archive *a, rocksdb_writebatch_wi_t *wb, const char *label,
                        Kyso__Store__V1__KeyRecord **out, kyso_err *err) {
  uint8_t *v = NULL;
  size_t n = 0;
  *out = NULL;
  kyso_status st = archive__get_wb(a, wb, ARCHIVE__CF_KEYS, label, strlen(label), &v, &n, err);
  if (st != KYSO_OK) return st; /* NOT_FOUND untouched: the caller words it */
  if ((*out = kyso__store__v1__key_record__unpack(NULL, n, v)) == NULL)
    st = kyso_fail(err, KYSO_DATA_LOSS, "the key registry's record of '%s' is damaged", label);
  free(v);
  return st;
}

static kyso_status store(archive *a, rocksdb_writebatch_wi_t *wb, const Kyso__Store__V1__KeyRecord *r,
                         kyso_err *err) {
  size_t n = kyso__store__v1__key_record__get_packed_size(r);
  uint8_t *p = malloc(n ? n : 1);
  if (p == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory recording a key");
  kyso__store__v1__key_record__pack(r, p);
  rocksdb_writebatch_wi_put_cf(wb, a->cf[ARCHIVE__CF_KEYS], r->label, strlen(r->label),
                               (const char *)p, n);
  free(p);
  return KYSO_OK;
}

static kyso_status add_key(archive *a, rocksdb_writebatch_wi_t *wb, const archive__command *c,
                           archive__result *res, kyso_err *err) {
  const Kyso__Store__V1__RecordKey *k = c->record_key;
  Kyso__Store__V1__KeyRecord *have = NULL;
  kyso_status st = load(a, wb, k->label, &have, err);
  if (st == KYSO_OK) {
    /* The same key again (a retried Generate whose first try committed): its answer. */
    if (have->public_key.len == k->public_key.len &&
        memcmp(have->public_key.data, k->public_key.data, k->public_key.len) == 0)
      res->replayed = 1;
    else
      st = kyso_fail(err, KYSO_ALREADY_EXISTS,
                     "key '%s' already exists (generated on node %llu); choose another name or "
                     "use that key",
                     k->label, (unsigned long long)have->origin_node);
    goto out;
  }
  if (st != KYSO_NOT_FOUND) goto out;
  Kyso__Store__V1__KeyRecord r = KYSO__STORE__V1__KEY_RECORD__INIT;
  r.label = k->label;
  r.algorithm = k->algorithm;
  r.public_key = k->public_key;
  r.wrapped = k->wrapped;
  r.kek_label = k->kek_label;
  r.origin_node = k->origin_node;
  r.principal = c->principal;
  r.created_unix_ms = c->time_unix_ms;
  st = store(a, wb, &r, err);
out:
  if (st == KYSO_OK) res->key_label = k->label;
  kyso__store__v1__key_record__free_unpacked(have, NULL);
  return st;
}

/* 1 if der is one certificate whose SubjectPublicKeyInfo is spki. */
static int certifies(const ProtobufCBinaryData *der, const ProtobufCBinaryData *spki) {
  const unsigned char *p = der->data;
  unsigned char *pub = NULL;
  X509 *x = d2i_X509(NULL, &p, (long)der->len);
  int n = x != NULL && p == der->data + der->len ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &pub)
                                                 : -1;
  int ok = n > 0 && (size_t)n == spki->len && memcmp(pub, spki->data, spki->len) == 0;
  OPENSSL_free(pub);
  X509_free(x);
  return ok;
}

static void keep_certificate(archive *a, rocksdb_writebatch_wi_t *wb,
                             const ProtobufCBinaryData *der) {
  uint8_t id[32];
  archive__sha256(der->data, der->len, id);
  rocksdb_writebatch_wi_put_cf(wb, a->cf[ARCHIVE__CF_CERTIFICATES], (const char *)id, 32,
                               (const char *)der->data, der->len);
}

static kyso_status add_certificate(archive *a, rocksdb_writebatch_wi_t *wb,
                                   const archive__command *c, archive__result *res,
                                   kyso_err *err) {
  const Kyso__Store__V1__RecordCertificate *rc = c->record_certificate;
  Kyso__Store__V1__KeyRecord *have = NULL;
  kyso_status st = load(a, wb, rc->label, &have, err);
  if (st == KYSO_NOT_FOUND) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "key '%s' is not in the key registry; generate it first (`kyso keygen`)",
                   rc->label);
    goto out;
  }
  if (st != KYSO_OK) goto out;
  if (!certifies(&rc->certificate, &have->public_key)) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "the certificate is not one DER certificate for key '%s' (its public key "
                   "differs)", rc->label);
    goto out;
  }
  if (have->certificate.len == rc->certificate.len &&
      memcmp(have->certificate.data, rc->certificate.data, rc->certificate.len) == 0) {
    res->replayed = 1; /* imported again: nothing changes */
    goto out;
  }
  /* A shallow copy takes the command's certificate; `have` keeps its own
   * fields, so freeing it frees what it unpacked and nothing else. */
  Kyso__Store__V1__KeyRecord r = *have;
  r.certificate = rc->certificate;
  r.n_chain = rc->n_chain;
  r.chain = rc->chain;
  r.certificate_unix_ms = c->time_unix_ms;
  r.certificate_generation = have->certificate_generation + 1;
  keep_certificate(a, wb, &rc->certificate);
  for (size_t i = 0; i < rc->n_chain; i++) keep_certificate(a, wb, &rc->chain[i]);
  st = store(a, wb, &r, err);
out:
  if (st == KYSO_OK) res->key_label = rc->label;
  kyso__store__v1__key_record__free_unpacked(have, NULL);
  return st;
}

kyso_status archive__apply_key(archive *a, rocksdb_writebatch_wi_t *wb, const archive__command *c,
                               archive__result *res, kyso_err *err) {
  if (c->op_case == KYSO__STORE__V1__COMMAND__OP_RECORD_KEY) return add_key(a, wb, c, res, err);
  return add_certificate(a, wb, c, res, err);
}
