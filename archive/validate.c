/* archive — a command's shape and limits, checked before apply writes
 * anything. Depends only on the command (no node configuration), so every
 * replica refuses the same commands. */
#include <string.h>

#include "archive_internal.h"

static kyso_status text(const char *field, const char *v, size_t max, int required, kyso_err *err) {
  size_t n = v ? strlen(v) : 0;
  if (required && n == 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "command field %s is empty", field);
  if (n > max)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "command field %s is %zu bytes, more than %zu",
                     field, n, max);
  return KYSO_OK;
}

static kyso_status bytes(const char *field, const ProtobufCBinaryData *b, size_t min, size_t max,
                         kyso_err *err) {
  if (b->len < min || b->len > max)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "command field %s is %zu bytes; it must be %zu..%zu", field, b->len, min, max);
  return KYSO_OK;
}

static kyso_status metadata(const Kyso__Store__V1__DocumentMetadata *m, kyso_err *err) {
  kyso_status st;
  if (m == NULL) return KYSO_OK;
  if ((st = text("metadata.unit", m->unit, KYSO_MAX_NAME, 0, err)) != KYSO_OK ||
      (st = text("metadata.number_notation", m->number_notation, KYSO_MAX_METADATA, 0, err)) !=
          KYSO_OK ||
      (st = text("metadata.title", m->title, KYSO_MAX_METADATA, 0, err)) != KYSO_OK ||
      (st = text("metadata.media_type", m->media_type, KYSO_MAX_METADATA, 0, err)) != KYSO_OK ||
      (st = text("metadata.document_type", m->document_type, KYSO_MAX_METADATA, 0, err)) != KYSO_OK)
    return st;
  if (m->issue_date != NULL && m->issue_date[0] != '\0' && !archive__valid_date(m->issue_date))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "command field metadata.issue_date '%.16s' is not YYYY-MM-DD", m->issue_date);
  return KYSO_OK;
}

static kyso_status document(const Kyso__Store__V1__RecordDocument *d, kyso_err *err) {
  kyso_status st;
  if (d == NULL) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "command names no document");
  if ((st = bytes("document.sha256", &d->sha256, 32, 32, err)) != KYSO_OK) return st;
  if ((st = text("document.account", d->account, KYSO_MAX_NAME, 0, err)) != KYSO_OK) return st;
  return metadata(d->metadata, err);
}

static kyso_status signing(const Kyso__Store__V1__RecordSigning *s, kyso_err *err) {
  kyso_status st;
  if ((st = document(s->document, err)) != KYSO_OK ||
      (st = bytes("cms", &s->cms, 1, ARCHIVE__MAX_CMS, err)) != KYSO_OK ||
      (st = text("key_label", s->key_label, KYSO_MAX_LABEL, 1, err)) != KYSO_OK ||
      (st = text("account", s->account, KYSO_MAX_NAME, 0, err)) != KYSO_OK ||
      (st = text("unit", s->unit, KYSO_MAX_NAME, 0, err)) != KYSO_OK ||
      (st = bytes("certificate", &s->certificate, 1, KYSO_MAX_CERT_DER, err)) != KYSO_OK ||
      (st = text("signing_time", s->signing_time, ARCHIVE__MAX_SIGNING_TIME, 0, err)) != KYSO_OK ||
      (st = text("timestamp_time", s->timestamp_time, ARCHIVE__MAX_SIGNING_TIME, 0, err)) !=
          KYSO_OK ||
      (st = text("timestamp_serial", s->timestamp_serial, ARCHIVE__MAX_SIGNING_TIME, 0, err)) !=
          KYSO_OK ||
      (st = text("timestamp_tsa", s->timestamp_tsa, KYSO_MAX_METADATA, 0, err)) != KYSO_OK)
    return st;
  if (s->role < KYSO__STORE__V1__KEY_ROLE__KEY_ROLE_UNSPECIFIED ||
      s->role > KYSO__STORE__V1__KEY_ROLE__KEY_ROLE_SEAL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "command field role %d is unknown", (int)s->role);
  if (s->n_chain > KYSO_MAX_CERT_CHAIN)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "command carries %zu chain certificates, more than %d", s->n_chain,
                     KYSO_MAX_CERT_CHAIN);
  for (size_t i = 0; i < s->n_chain; i++)
    if ((st = bytes("chain[]", &s->chain[i], 1, KYSO_MAX_CERT_DER, err)) != KYSO_OK) return st;
  return KYSO_OK;
}

/* Wrapped PKCS#8 of an RSA-3072 key is about 1.8 KiB. */
#define MAX_WRAPPED_KEY 8192

static kyso_status key(const Kyso__Store__V1__RecordKey *k, kyso_err *err) {
  kyso_status st;
  if (k == NULL) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "command names no key");
  if ((st = text("key.label", k->label, KYSO_MAX_LABEL, 1, err)) != KYSO_OK ||
      (st = text("key.kek_label", k->kek_label, KYSO_MAX_LABEL, k->wrapped.len > 0, err)) !=
          KYSO_OK ||
      (st = bytes("key.public_key", &k->public_key, 1, KYSO_MAX_CERT_DER, err)) != KYSO_OK ||
      (st = bytes("key.wrapped", &k->wrapped, 0, MAX_WRAPPED_KEY, err)) != KYSO_OK)
    return st;
  if (strcmp(k->algorithm, "ec-p256") != 0 && strcmp(k->algorithm, "rsa-2048") != 0 &&
      strcmp(k->algorithm, "rsa-3072") != 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "command field key.algorithm '%.16s' is unknown",
                     k->algorithm);
  return KYSO_OK;
}

static kyso_status certificate(const Kyso__Store__V1__RecordCertificate *r, kyso_err *err) {
  kyso_status st;
  if (r == NULL) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "command names no certificate");
  if ((st = text("certificate.label", r->label, KYSO_MAX_LABEL, 1, err)) != KYSO_OK ||
      (st = bytes("certificate.certificate", &r->certificate, 1, KYSO_MAX_CERT_DER, err)) !=
          KYSO_OK)
    return st;
  if (r->n_chain > KYSO_MAX_CERT_CHAIN)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "command carries %zu chain certificates, more than %d", r->n_chain,
                     KYSO_MAX_CERT_CHAIN);
  for (size_t i = 0; i < r->n_chain; i++)
    if ((st = bytes("certificate.chain[]", &r->chain[i], 1, KYSO_MAX_CERT_DER, err)) != KYSO_OK)
      return st;
  return KYSO_OK;
}

int archive__is_key_command(const archive__command *c) {
  return c->op_case == KYSO__STORE__V1__COMMAND__OP_RECORD_KEY ||
         c->op_case == KYSO__STORE__V1__COMMAND__OP_RECORD_CERTIFICATE;
}

kyso_status archive__validate(const archive__command *c, kyso_err *err) {
  kyso_status st;
  if (c->version < 1 || c->version > ARCHIVE__COMMAND_VERSION)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "command version %u is not one this kysod applies (it applies versions 1 to "
                     "%d)",
                     c->version, ARCHIVE__COMMAND_VERSION);
  if (archive__is_key_command(c) && c->version < ARCHIVE__KEY_COMMAND_VERSION)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "key commands are version %d or later",
                     ARCHIVE__KEY_COMMAND_VERSION);
  if (c->time_unix_ms <= 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "command has no time (time_unix_ms)");
  if ((st = text("principal", c->principal, ARCHIVE__MAX_PRINCIPAL, 1, err)) != KYSO_OK ||
      (st = text("request_id", c->request_id, KYSO_MAX_REQUEST_ID, 0, err)) != KYSO_OK)
    return st;
  switch (c->op_case) {
    case KYSO__STORE__V1__COMMAND__OP_RECORD_DOCUMENT:
      return document(c->record_document, err);
    case KYSO__STORE__V1__COMMAND__OP_RECORD_SIGNING:
      if (c->record_signing == NULL)
        return kyso_fail(err, KYSO_INVALID_ARGUMENT, "command names no signing");
      return signing(c->record_signing, err);
    case KYSO__STORE__V1__COMMAND__OP_RECORD_KEY:
    case KYSO__STORE__V1__COMMAND__OP_RECORD_CERTIFICATE:
      /* Keys are named by label: a retry finds the label taken, no request id needed. */
      if (c->request_id[0] != '\0')
        return kyso_fail(err, KYSO_INVALID_ARGUMENT, "key commands carry no request_id");
      return c->op_case == KYSO__STORE__V1__COMMAND__OP_RECORD_KEY
                 ? key(c->record_key, err)
                 : certificate(c->record_certificate, err);
    default:
      return kyso_fail(err, KYSO_INVALID_ARGUMENT, "command carries no operation this kysod knows");
  }
}

const Kyso__Store__V1__RecordDocument *archive__command_document(const archive__command *c) {
  if (c->op_case == KYSO__STORE__V1__COMMAND__OP_RECORD_DOCUMENT) return c->record_document;
  if (c->op_case == KYSO__STORE__V1__COMMAND__OP_RECORD_SIGNING && c->record_signing != NULL)
    return c->record_signing->document;
  return NULL;
}
