/* archive — the deterministic state machine. archive__apply is the only code
 * that changes records: given the same command bytes and the same stored
 * records it adds the same writes to the batch and returns the same result
 * on every node. It never reads the clock, the environment, the node's
 * configuration or the blob tier (blobs are node-local; a replica may not
 * have fetched one yet). */
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"
#include "kyso/util.h"

static kyso_status pack_result(const archive__result *r, uint8_t **out, size_t *len,
                               kyso_err *err) {
  size_t n = kyso__store__v1__command_result__get_packed_size(r);
  if ((*out = malloc(n ? n : 1)) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory packing a command result");
  *len = kyso__store__v1__command_result__pack(r, *out);
  return KYSO_OK;
}

/* A request id seen before answers with its first result — after checking
 * that the retry asks for the same thing. *found = 0 when it is new. */
static kyso_status replay(archive *a, rocksdb_writebatch_wi_t *wb, const archive__command *c,
                          const uint8_t *key, size_t klen, int *found, uint8_t **out,
                          size_t *out_len, kyso_err *err) {
  uint8_t *v = NULL;
  size_t n = 0;
  char was[65], now[65];
  *found = 0;
  kyso_status st = archive__get_wb(a, wb, ARCHIVE__CF_REQUESTS, key, klen, &v, &n, err);
  if (st == KYSO_NOT_FOUND) return KYSO_OK;
  if (st != KYSO_OK) return st;
  archive__result *r = kyso__store__v1__command_result__unpack(NULL, n, v);
  const Kyso__Store__V1__RecordDocument *d = archive__command_document(c);
  int signing = c->op_case == KYSO__STORE__V1__COMMAND__OP_RECORD_SIGNING;
  if (r == NULL || r->document_sha256.len != 32) {
    st = kyso_fail(err, KYSO_DATA_LOSS, "the stored result of request_id '%s' of '%s' is damaged",
                   c->request_id, c->principal);
  } else if ((r->signature_id.len == 32) != signing) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "request_id '%s' of '%s' was first used to %s; this request %s", c->request_id,
                   c->principal, signing ? "put a document" : "sign",
                   signing ? "signs" : "puts a document");
  } else if (memcmp(r->document_sha256.data, d->sha256.data, 32) != 0) {
    kyso_hex(r->document_sha256.data, 32, was);
    kyso_hex(d->sha256.data, 32, now);
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "request_id '%s' of '%s' was first used for document %s; this request names %s",
                   c->request_id, c->principal, was, now);
  } else {
    r->replayed = 1;
    st = pack_result(r, out, out_len, err);
    *found = st == KYSO_OK;
  }
  kyso__store__v1__command_result__free_unpacked(r, NULL);
  free(v);
  return st;
}

/* The same CMS recorded before (a retry without a request id): its stored
 * order, nothing new. *found = 0 when the signature is new. */
static kyso_status known_signature(archive *a, rocksdb_writebatch_wi_t *wb, const uint8_t id[32],
                                   const uint8_t doc[32], int *found, uint32_t *order,
                                   kyso_err *err) {
  uint8_t *v = NULL;
  size_t n = 0;
  char hex[65];
  *found = 0;
  kyso_status st = archive__get_wb(a, wb, ARCHIVE__CF_SIGNATURES, id, 32, &v, &n, err);
  if (st == KYSO_NOT_FOUND) return KYSO_OK;
  if (st != KYSO_OK) return st;
  kyso_hex(id, 32, hex);
  Kyso__Store__V1__SignatureRecord *r = kyso__store__v1__signature_record__unpack(NULL, n, v);
  if (r == NULL || r->document_sha256.len != 32)
    st = kyso_fail(err, KYSO_DATA_LOSS, "signature record %s is damaged", hex);
  else if (memcmp(r->document_sha256.data, doc, 32) != 0)
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "signature %s is already recorded on another document", hex);
  else {
    *found = 1;
    *order = r->order;
  }
  kyso__store__v1__signature_record__free_unpacked(r, NULL);
  free(v);
  return st;
}

static kyso_status execute(archive *a, rocksdb_writebatch_wi_t *wb, const archive__command *c,
                           archive__result *res, uint8_t sig_id[32], kyso_err *err) {
  const Kyso__Store__V1__RecordDocument *d = archive__command_document(c);
  kyso_status st;
  int found = 0;
  uint32_t order = 0;
  res->document_sha256 = d->sha256;
  if (c->op_case == KYSO__STORE__V1__COMMAND__OP_RECORD_DOCUMENT)
    return archive__apply_document(a, wb, c, d, NULL, NULL, &order, err);
  const Kyso__Store__V1__RecordSigning *s = c->record_signing;
  archive__sha256(s->cms.data, s->cms.len, sig_id);
  res->signature_id.data = sig_id;
  res->signature_id.len = 32;
  if ((st = known_signature(a, wb, sig_id, d->sha256.data, &found, &order, err)) != KYSO_OK)
    return st;
  if (found) {
    res->replayed = 1;
  } else {
    if ((st = archive__apply_document(a, wb, c, d, s->account, sig_id, &order, err)) != KYSO_OK)
      return st;
    if ((st = archive__apply_signature(a, wb, c, sig_id, order, err)) != KYSO_OK) return st;
  }
  res->signature_order = order;
  return KYSO_OK;
}

/* Records the first result under the request id (stored with replayed
 * false; replays set it when they answer). */
static kyso_status remember(archive *a, rocksdb_writebatch_wi_t *wb, const uint8_t *key,
                            size_t klen, const archive__result *res, kyso_err *err) {
  archive__result first = *res;
  uint8_t *v = NULL;
  size_t n = 0;
  first.replayed = 0;
  kyso_status st = pack_result(&first, &v, &n, err);
  if (st != KYSO_OK) return st;
  rocksdb_writebatch_wi_put_cf(wb, a->cf[ARCHIVE__CF_REQUESTS], (const char *)key, klen,
                               (const char *)v, n);
  free(v);
  return KYSO_OK;
}

kyso_status archive__apply(archive *a, const uint8_t *cmd, size_t cmd_len,
                           rocksdb_writebatch_wi_t *wb, uint8_t **result, size_t *result_len,
                           kyso_err *err) {
  kyso_status st;
  uint8_t key[ARCHIVE__MAX_KEY], sig_id[32];
  size_t klen = 0;
  int found = 0;
  archive__result res = KYSO__STORE__V1__COMMAND_RESULT__INIT;
  *result = NULL;
  *result_len = 0;
  archive__command *c = kyso__store__v1__command__unpack(NULL, cmd_len, cmd);
  if (c == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "the command is not a kyso.store.v1.Command");
  if ((st = archive__validate(c, err)) != KYSO_OK) goto out;
  if (c->request_id[0] != '\0' && !archive__is_key_command(c)) {
    if ((klen = archive__request_key(c->principal, c->request_id, key)) == 0) {
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "request_id '%.64s' cannot be keyed",
                     c->request_id);
      goto out;
    }
    st = replay(a, wb, c, key, klen, &found, result, result_len, err);
    if (st != KYSO_OK || found) goto out;
  }
  /* Everything below adds to wb; a failure rolls back to here. */
  rocksdb_writebatch_wi_set_save_point(wb);
  st = archive__is_key_command(c) ? archive__apply_key(a, wb, c, &res, err)
                                  : execute(a, wb, c, &res, sig_id, err);
  if (st == KYSO_OK && klen > 0) st = remember(a, wb, key, klen, &res, err);
  /* The audit-log leaf of this change joins the same batch here. */
  if (st == KYSO_OK && !res.replayed && a->audit != NULL)
    st = a->audit(a->audit_ctx, a, wb, c, &res, err);
  if (st == KYSO_OK) st = pack_result(&res, result, result_len, err);
  if (st != KYSO_OK) {
    char *e = NULL;
    rocksdb_writebatch_wi_rollback_to_save_point(wb, &e);
    if (e != NULL) {
      /* The batch can no longer be trusted: ABORTED makes the writer fail all of it. */
      st = kyso_fail(err, KYSO_ABORTED, "cannot roll back a failed command in the batch: %s", e);
      rocksdb_free(e);
    }
    free(*result);
    *result = NULL;
  }
out:
  kyso__store__v1__command__free_unpacked(c, NULL);
  return st;
}
