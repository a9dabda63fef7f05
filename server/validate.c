/* kysod — checks on what callers send: names of accounts, units and keys,
 * text fields, whole requests. Pure functions, fuzzed by tests/fuzz. */
#include <stdio.h>
#include <string.h>

#include "kyso/limits.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/v1/signer.pb-c.h"

#define PERSONAL_PREFIX "kyso/personal/"
#define SEAL_PREFIX "kyso/seal/"
#define TSA_PREFIX "kyso/tsa/"

kyso_status kysod__check_name(const char *what, const char *value, kyso_err *err) {
  size_t n = value ? strlen(value) : 0;
  if (n == 0) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s is required", what);
  if (n > KYSO_MAX_NAME)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s is longer than %d characters", what,
                     KYSO_MAX_NAME);
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)value[i];
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '.' || ch == '_' || ch == '-' || ch == '@';
    if (!ok)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "%s '%.*s' may only contain letters, digits and . _ - @", what,
                       (int)(n > 64 ? 64 : n), value);
  }
  return KYSO_OK;
}

/* Well-formed UTF-8 (no overlongs, no surrogates) without control characters. */
kyso_status kysod__check_text(const char *what, const char *value, size_t max, kyso_err *err) {
  const unsigned char *p = (const unsigned char *)(value ? value : "");
  size_t n = strlen((const char *)p);
  if (n > max)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s is longer than %zu bytes", what, max);
  for (size_t i = 0; i < n;) {
    unsigned c = p[i];
    size_t len;
    unsigned cp;
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f)
        return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s contains a control character", what);
      i++;
      continue;
    }
    if ((c & 0xe0) == 0xc0) len = 2, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) len = 3, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) len = 4, cp = c & 0x07;
    else goto bad;
    if (i + len > n) goto bad;
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xc0) != 0x80) goto bad;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      goto bad;
    i += len;
  }
  return KYSO_OK;
bad:
  return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s is not valid UTF-8", what);
}

kyso_status kysod__key_label(const Kyso__V1__KeyRef *ref, char *label, size_t size,
                             kyso_err *err) {
  kyso_status st;
  if (ref == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "key is required: give the account and role (personal or seal)");
  switch (ref->role) {
    case KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL:
      if ((st = kysod__check_name("key.account", ref->account, err)) != KYSO_OK) return st;
      snprintf(label, size, PERSONAL_PREFIX "%s", ref->account);
      return KYSO_OK;
    case KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL:
      if ((st = kysod__check_name("key.unit", ref->unit, err)) != KYSO_OK) return st;
      snprintf(label, size, SEAL_PREFIX "%s", ref->unit);
      return KYSO_OK;
    case KYSO__V1__KEY_ROLE__KEY_ROLE_TSA:
      if ((st = kysod__check_name("key.account (the TSA's name)", ref->account, err)) != KYSO_OK)
        return st;
      snprintf(label, size, TSA_PREFIX "%s", ref->account);
      return KYSO_OK;
    default:
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "key.role must be KEY_ROLE_PERSONAL, KEY_ROLE_SEAL or KEY_ROLE_TSA");
  }
}

int kysod__label_to_ref(char *label_copy, Kyso__V1__KeyRef *ref) {
  if (strncmp(label_copy, PERSONAL_PREFIX, strlen(PERSONAL_PREFIX)) == 0) {
    ref->role = KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL;
    ref->account = label_copy + strlen(PERSONAL_PREFIX);
    return 1;
  }
  if (strncmp(label_copy, SEAL_PREFIX, strlen(SEAL_PREFIX)) == 0) {
    ref->role = KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL;
    ref->unit = label_copy + strlen(SEAL_PREFIX);
    return 1;
  }
  if (strncmp(label_copy, TSA_PREFIX, strlen(TSA_PREFIX)) == 0) {
    ref->role = KYSO__V1__KEY_ROLE__KEY_ROLE_TSA;
    ref->account = label_copy + strlen(TSA_PREFIX);
    return 1;
  }
  return 0;
}

kyso_status kysod__check_sign_request(const struct Kyso__V1__SignRequest *req, size_t max_doc,
                                      kyso_err *err) {
  kyso_status st;
  if (req->archive_id[0] != '\0') {
    if (req->document.len != 0)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "give either document or archive_id, not both");
    if (req->skip_archive)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                       "skip_archive cannot be used when signing an archived document");
    uint8_t id[32];
    kyso_status idst = kyso_unhex(req->archive_id, id, sizeof(id), "archive_id", err);
    if (idst != KYSO_OK) return idst;
  } else if (req->document.len == 0) {
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "document is empty: there is nothing to sign (or give archive_id)");
  }
  if (req->document.len > max_doc)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "document is %zu bytes, more than the %zu a Sign message may carry",
                     req->document.len, max_doc);
  if (req->key != NULL && req->key->role == KYSO__V1__KEY_ROLE__KEY_ROLE_TSA)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "a TSA key signs time-stamps only; sign documents with a personal or "
                     "seal key");
  if (req->format != KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_UNSPECIFIED &&
      req->format != KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_BES &&
      req->format != KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_T)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "signature format %d is not supported",
                     (int)req->format);
  if (req->rsa_scheme > KYSO__V1__RSA_SCHEME__RSA_SCHEME_PSS)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "rsa_scheme %d is not supported",
                     (int)req->rsa_scheme);
  if ((st = kysod__check_text("request_id", req->request_id, KYSO_MAX_REQUEST_ID, err)) != KYSO_OK)
    return st;
  return kysod__check_metadata(req->metadata, err);
}

kyso_status kysod__check_metadata(const struct Kyso__V1__DocumentMetadata *m, kyso_err *err) {
  kyso_status st;
  if (m == NULL) return KYSO_OK;
  if (m->unit[0] && (st = kysod__check_name("metadata.unit", m->unit, err)) != KYSO_OK) return st;
  if (m->issue_date[0] && (strlen(m->issue_date) != 10 || m->issue_date[4] != '-' ||
                           m->issue_date[7] != '-'))
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "metadata.issue_date must be YYYY-MM-DD");
  const struct { const char *what, *value; } texts[] = {
      {"metadata.number_notation", m->number_notation}, {"metadata.title", m->title},
      {"metadata.issue_date", m->issue_date},           {"metadata.media_type", m->media_type},
      {"metadata.document_type", m->document_type},
  };
  for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
    if ((st = kysod__check_text(texts[i].what, texts[i].value, KYSO_MAX_METADATA, err)) != KYSO_OK)
      return st;
  return KYSO_OK;
}
