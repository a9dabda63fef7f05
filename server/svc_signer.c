/* kysod — kyso.v1.Signer: signs a document with an HSM-held key, and keeps
 * the document and its signature in the archive in one synced batch.
 * A retried request id answers the first result and signs nothing. */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kyso/archive.h"
#include "kyso/limits.h"
#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/store/v1/command.pb-c.h"
#include "kyso/v1/signer.pb-c.h"

/* One signing in progress, from the worker that signs to whichever thread
 * answers once it is recorded; sign_done answers a failure and frees it. */
typedef struct sign_job {
  kysod *d;
  rpc_call *call;
  Kyso__V1__SignRequest *req;
  char label[KYSO_MAX_LABEL + 1];
  X509 *cert;
  STACK_OF(X509) *chain;
  uint8_t digest[32];
  uint64_t size;
  time_t now;
  char when[32];
  uint8_t *cms;
  size_t cms_len;
  int stamped;       /* CAdES-T: the cms carries a signature-time-stamp */
  signer_ts_info ts; /* that token */
} sign_job;

static void job_clear(sign_job *j) {
  kyso__v1__sign_request__free_unpacked(j->req, NULL);
  X509_free(j->cert);
  sk_X509_pop_free(j->chain, X509_free);
  OPENSSL_free(j->cms);
}

static kyso_status deadline_check(rpc_call *call, const char *when, kyso_err *err) {
  if (rpc_call_remaining_ms(call) > 0) return KYSO_OK;
  return kyso_fail(err, KYSO_DEADLINE_EXCEEDED,
                   "the client's deadline passed %s; nothing was kept", when);
}

/* The document's digest: hashed inline, or re-verified chunk by chunk from
 * the archive (its id is its SHA-256, but stored bytes may have rotted). */
static kyso_status load_document(kysod *d, sign_job *j, kyso_err *err) {
  kyso_status st = KYSO_OK;
  archive_reader *r = NULL;
  if (j->req->archive_id[0] == '\0') {
    SHA256(j->req->document.data, j->req->document.len, j->digest);
    j->size = j->req->document.len;
    return KYSO_OK;
  }
  if ((st = kyso_unhex(j->req->archive_id, j->digest, 32, "archive_id", err)) != KYSO_OK) goto out;
  if ((st = archive_reader_open(d->archive, j->digest, &r, err)) != KYSO_OK) goto out;
  for (;;) {
    const uint8_t *chunk;
    size_t n;
    if ((st = archive_reader_next(r, &chunk, &n, err)) != KYSO_OK) goto out;
    if (n == 0) break;
    j->size += n;
  }
out:
  archive_reader_close(r);
  return st;
}

/* The stamp signer_sign_cades_t calls with the fresh signature value. */
typedef struct stamp_ctx {
  kysod *d;
  rpc_call *call;
  sign_job *j;
  int failed; /* the time-stamp failed, not the signature */
} stamp_ctx;

static kyso_status stamp_signature(void *arg, const uint8_t *value, size_t len, uint8_t **token,
                                   size_t *token_len, kyso_err *err) {
  stamp_ctx *c = arg;
  uint8_t digest[32];
  SHA256(value, len, digest);
  kyso_status st = kysod__signature_timestamp(c->d, digest, rpc_call_remaining_ms(c->call), token,
                                              token_len, &c->j->ts, err);
  if (st != KYSO_OK) {
    c->failed = 1;
    kyso_err_wrap(err, "time-stamping the signature");
  }
  return st;
}

/* CAdES-BES, or CAdES-T (timestamp) with the token added in the same pass. */
static kyso_status make_signature(kysod *d, rpc_call *call, sign_job *j, int timestamp,
                                  kyso_err *err) {
  signer_rsa_scheme scheme = j->req->rsa_scheme == KYSO__V1__RSA_SCHEME__RSA_SCHEME_PSS
                                 ? SIGNER_RSA_PSS
                                 : SIGNER_RSA_PKCS1;
  int by_digest = j->req->archive_id[0] != '\0';
  kyso_status st;
  for (int attempt = 0;; attempt++) {
    stamp_ctx c = {.d = d, .call = call, .j = j};
    if (timestamp)
      st = signer_sign_cades_t(d->signer, j->label, scheme,
                               by_digest ? NULL : j->req->document.data,
                               by_digest ? 0 : j->req->document.len,
                               by_digest ? j->digest : NULL, j->now, stamp_signature, &c, &j->cms,
                               &j->cms_len, err);
    else if (by_digest)
      st = signer_sign_cms_digest(d->signer, j->label, scheme, j->digest, j->now, &j->cms,
                                  &j->cms_len, err);
    else
      st = signer_sign_cms(d->signer, j->label, scheme, j->req->document.data,
                           j->req->document.len, j->now, &j->cms, &j->cms_len, err);
    j->stamped = timestamp && st == KYSO_OK;
    /* A token that went away: recover it and sign once more (signing has no
     * side effect to repeat). A failed time-stamp was already retried by the
     * TSA, or is not the HSM's doing (clock behind, external TSA down). */
    if (st != KYSO_UNAVAILABLE || c.failed || attempt > 0 || kysod__recover_hsm(d, err) != KYSO_OK)
      return st;
  }
}

/* CAdES-T asked for explicitly, or by the node's default. */
static int wants_timestamp(const kysod *d, const Kyso__V1__SignRequest *req) {
  if (req->format == KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_T) return 1;
  if (req->format == KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_BES) return 0;
  return d->cfg.timestamp != KYSO_TIMESTAMP_OFF;
}

/* Packs the record_signing command (*packed malloc()ed). */
static kyso_status pack_record(rpc_call *call, sign_job *j, uint8_t **packed,
                               size_t *packed_len, kyso_err *err) {
  kyso_status st = KYSO_OK;
  const Kyso__V1__SignRequest *req = j->req;
  const Kyso__V1__DocumentMetadata *m = req->metadata;
  Kyso__Store__V1__DocumentMetadata meta = KYSO__STORE__V1__DOCUMENT_METADATA__INIT;
  Kyso__Store__V1__RecordDocument doc = KYSO__STORE__V1__RECORD_DOCUMENT__INIT;
  Kyso__Store__V1__RecordSigning rs = KYSO__STORE__V1__RECORD_SIGNING__INIT;
  Kyso__Store__V1__Command cmd = KYSO__STORE__V1__COMMAND__INIT;
  uint8_t *cert_der = NULL;
  int n_chain = j->chain ? sk_X509_num(j->chain) : 0;
  ProtobufCBinaryData chain[KYSO_MAX_CERT_CHAIN];
  int n_der = 0;
  if (m != NULL) {
    meta.unit = m->unit;
    meta.number_notation = m->number_notation;
    meta.title = m->title;
    meta.issue_date = m->issue_date;
    meta.media_type = m->media_type;
    meta.document_type = m->document_type;
  }
  doc.sha256.data = j->digest;
  doc.sha256.len = 32;
  doc.size = j->size;
  doc.metadata = &meta;
  doc.account = req->key->account;
  int cert_len = i2d_X509(j->cert, &cert_der);
  if (cert_len <= 0 || n_chain > KYSO_MAX_CERT_CHAIN) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot encode the certificates of '%s'", j->label);
    goto out;
  }
  for (; n_der < n_chain; n_der++) {
    unsigned char *der = NULL;
    int len = i2d_X509(sk_X509_value(j->chain, n_der), &der);
    if (len <= 0) {
      st = kyso_fail(err, KYSO_INTERNAL, "cannot encode the chain of '%s'", j->label);
      goto out;
    }
    chain[n_der].data = der;
    chain[n_der].len = (size_t)len;
  }
  rs.document = &doc;
  rs.cms.data = j->cms;
  rs.cms.len = j->cms_len;
  rs.key_label = j->label;
  rs.role = (Kyso__Store__V1__KeyRole)req->key->role;
  rs.account = req->key->account;
  rs.unit = req->key->role == KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL ? req->key->unit
                                                                 : (m ? m->unit : (char *)"");
  rs.certificate.data = cert_der;
  rs.certificate.len = (size_t)cert_len;
  rs.chain = chain;
  rs.n_chain = (size_t)n_der;
  rs.signing_time = j->when;
  if (j->stamped) {
    rs.timestamp_time = j->ts.gen_time_text;
    rs.timestamp_serial = j->ts.serial;
    rs.timestamp_tsa = j->ts.tsa;
  }
  cmd.version = 1;
  cmd.time_unix_ms = (int64_t)j->now * 1000;
  cmd.principal = (char *)rpc_call_peer(call)->principal;
  cmd.request_id = req->request_id;
  cmd.op_case = KYSO__STORE__V1__COMMAND__OP_RECORD_SIGNING;
  cmd.record_signing = &rs;
  *packed_len = kyso__store__v1__command__get_packed_size(&cmd);
  if ((*packed = malloc(*packed_len)) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory recording a signature");
    goto out;
  }
  kyso__store__v1__command__pack(&cmd, *packed);
out:
  for (int i = 0; i < n_der; i++) OPENSSL_free(chain[i].data);
  OPENSSL_free(cert_der);
  return st;
}

/* Answers from the stored signature record: a retried request, or a
 * concurrent duplicate that lost the race to the batch. */
static kyso_status reply_stored(kysod *d, rpc_call *call, const uint8_t sig_id[32],
                                const char *request_id, kyso_err *err) {
  kyso_status st;
  uint8_t *value = NULL, *cert = NULL;
  size_t len = 0, cert_len = 0;
  Kyso__Store__V1__SignatureRecord *rec = NULL;
  char doc_hex[65], sig_hex[65];
  if ((st = archive_get_signature(d->archive, sig_id, &value, &len, err)) != KYSO_OK) goto out;
  rec = kyso__store__v1__signature_record__unpack(NULL, len, value);
  if (rec == NULL || rec->document_sha256.len != 32 || rec->certificate_sha256.len != 32) {
    st = kyso_fail(err, KYSO_DATA_LOSS, "signature record is damaged");
    goto out;
  }
  st = archive_get_certificate(d->archive, rec->certificate_sha256.data, &cert, &cert_len, err);
  if (st != KYSO_OK) goto out;
  kyso_hex(rec->document_sha256.data, 32, doc_hex);
  kyso_hex(sig_id, 32, sig_hex);
  Kyso__V1__SignResponse resp = KYSO__V1__SIGN_RESPONSE__INIT;
  resp.signature.data = rec->cms.data;
  resp.signature.len = rec->cms.len;
  resp.document_sha256 = doc_hex;
  resp.key_label = rec->key_label;
  resp.certificate.data = cert;
  resp.certificate.len = cert_len;
  resp.signing_time = rec->signing_time;
  resp.request_id = (char *)request_id;
  resp.archive_id = doc_hex;
  resp.signature_id = sig_hex;
  resp.signature_order = rec->order;
  resp.replayed = 1;
  resp.timestamp_time = rec->timestamp_time;
  resp.timestamp_serial = rec->timestamp_serial;
  resp.timestamp_tsa = rec->timestamp_tsa;
  kyso_log(KYSO_LOG_INFO, "sign replayed principal=%s request_id=%s signature=%s",
           rpc_call_peer(call)->principal, request_id, sig_hex);
  kysod__reply(call, &resp.base);
out:
  kyso__store__v1__signature_record__free_unpacked(rec, NULL);
  free(value);
  free(cert);
  return st;
}

static kyso_status find_replay(kysod *d, rpc_call *call, const Kyso__V1__SignRequest *req,
                               int *answered, kyso_err *err) {
  uint8_t *value = NULL;
  size_t len = 0;
  *answered = 0;
  if (d->archive == NULL || req->skip_archive || req->request_id[0] == '\0') return KYSO_OK;
  kyso_status st = archive_find_request(d->archive, rpc_call_peer(call)->principal,
                                        req->request_id, &value, &len, err);
  if (st == KYSO_NOT_FOUND) return KYSO_OK;
  if (st != KYSO_OK) return st;
  Kyso__Store__V1__CommandResult *res = kyso__store__v1__command_result__unpack(NULL, len, value);
  if (res == NULL || res->signature_id.len != 32) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "request_id '%s' was already used for something other than a signature",
                   req->request_id);
  } else {
    st = reply_stored(d, call, res->signature_id.data, req->request_id, err);
    *answered = st == KYSO_OK;
  }
  kyso__store__v1__command_result__free_unpacked(res, NULL);
  free(value);
  return st;
}

static void reply_fresh(rpc_call *call, sign_job *j, Kyso__Store__V1__CommandResult *res) {
  char digest_hex[65], sig_hex[65] = "";
  uint8_t *cert_der = NULL;
  int cert_len = i2d_X509(j->cert, &cert_der);
  kyso_hex(j->digest, 32, digest_hex);
  if (res != NULL) kyso_hex(res->signature_id.data, 32, sig_hex);
  Kyso__V1__SignResponse resp = KYSO__V1__SIGN_RESPONSE__INIT;
  resp.signature.data = j->cms;
  resp.signature.len = j->cms_len;
  resp.document_sha256 = digest_hex;
  resp.key_label = j->label;
  resp.certificate.data = cert_der;
  resp.certificate.len = cert_len > 0 ? (size_t)cert_len : 0;
  resp.signing_time = j->when;
  resp.request_id = j->req->request_id;
  resp.archive_id = res != NULL ? digest_hex : (char *)"";
  resp.signature_id = sig_hex;
  resp.signature_order = res != NULL ? res->signature_order : 0;
  if (j->stamped) {
    resp.timestamp_time = j->ts.gen_time_text;
    resp.timestamp_serial = j->ts.serial;
    resp.timestamp_tsa = j->ts.tsa;
  }
  kyso_log(KYSO_LOG_INFO,
           "sign principal=%s key=%s sha256=%s bytes=%llu order=%u request_id=%s ts_serial=%s",
           rpc_call_peer(call)->principal, j->label, digest_hex, (unsigned long long)j->size,
           resp.signature_order, j->req->request_id, j->stamped ? j->ts.serial : "-");
  kysod__reply(call, &resp.base);
  OPENSSL_free(cert_der);
}

/* The end of every signing: a failure is answered (a success already
 * was), and the job freed. */
static void sign_done(sign_job *j, kyso_status st, const kyso_err *err) {
  if (st != KYSO_OK) kysod__reply_failure(j->call, "sign", st, err);
  job_clear(j);
  free(j);
}

/* kysod__record_async's answer: the signature is recorded (or not). */
static void sign_recorded(void *ctx, kyso_status st, const kyso_err *recorded,
                          const uint8_t *result, size_t result_len) {
  sign_job *j = ctx;
  kyso_err err = {0};
  Kyso__Store__V1__CommandResult *res = NULL;
  if (st != KYSO_OK) {
    err = *recorded;
    goto out;
  }
  res = kyso__store__v1__command_result__unpack(NULL, result_len, result);
  if (res == NULL || res->signature_id.len != 32) {
    st = kyso_fail(&err, KYSO_INTERNAL, "the archive returned a malformed result");
    goto out;
  }
  if (res->replayed) /* same request id, raced in concurrently: the first one is the answer */
    st = reply_stored(j->d, j->call, res->signature_id.data, j->req->request_id, &err);
  else
    reply_fresh(j->call, j, res);
out:
  kyso__store__v1__command_result__free_unpacked(res, NULL);
  sign_done(j, st, &err);
}

/* Signs on this worker; the record, when there is one, is answered by
 * sign_recorded, here or (a leader in a cluster) once it committed. */
void kysod__signer_sign(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st = KYSO_OK;
  size_t len = 0, packed_len = 0;
  const uint8_t *data = rpc_call_request(call, &len);
  uint8_t *packed = NULL;
  int answered = 0;
  struct tm tm;
  sign_job *j = calloc(1, sizeof(*j));
  if (j == NULL) {
    rpc_call_finish(call, KYSO_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  j->d = d;
  j->call = call;
  j->req = kyso__v1__sign_request__unpack(NULL, len, data);
  if (j->req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.SignRequest");
    goto out;
  }
  if ((st = kysod__check_sign_request(j->req, KYSO_MAX_INLINE_DOCUMENT, &err)) != KYSO_OK)
    goto out;
  if ((st = kysod__key_label(j->req->key, j->label, sizeof(j->label), &err)) != KYSO_OK) goto out;
  if ((st = kysod__require_key(d, j->label, &j->cert, &err)) != KYSO_OK) goto out;
  /* A follower refuses before the HSM signs or the TSA spends a serial. */
  if (!j->req->skip_archive && (st = kysod__require_writer(d, &err)) != KYSO_OK) goto out;
  if ((st = find_replay(d, call, j->req, &answered, &err)) != KYSO_OK || answered) goto out;
  if ((st = load_document(d, j, &err)) != KYSO_OK) goto out;
  X509 *again = NULL; /* the same certificate, fetched with its chain */
  st = signer_certificate(d->signer, j->label, &again, &j->chain, &err);
  X509_free(again);
  if (st != KYSO_OK) goto out;
  if ((st = deadline_check(call, "before signing", &err)) != KYSO_OK) goto out;

  j->now = time(NULL);
  gmtime_r(&j->now, &tm);
  strftime(j->when, sizeof(j->when), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if ((st = make_signature(d, call, j, wants_timestamp(d, j->req), &err)) != KYSO_OK) goto out;
  if (d->test_sign_delay_ms > 0) usleep((useconds_t)d->test_sign_delay_ms * 1000);
  /* A signature the caller no longer waits for is dropped, not half-kept. */
  if ((st = deadline_check(call, "while signing", &err)) != KYSO_OK) goto out;

  if (!j->req->skip_archive) {
    if ((st = pack_record(call, j, &packed, &packed_len, &err)) != KYSO_OK) goto out;
    /* The inline document travels in the same synced batch as its records.
     * From here on sign_recorded owns j. */
    int by_id = j->req->archive_id[0] != '\0';
    kysod__record_async(d, call, packed, packed_len, by_id ? NULL : j->req->document.data,
                        by_id ? 0 : j->req->document.len, sign_recorded, j);
    free(packed);
    return;
  }
  reply_fresh(call, j, NULL);
out:
  sign_done(j, st, &err);
}
