/* archive — record reads. Each record is checked against the key it is
 * stored under (a signature against the hash of its CMS, a certificate
 * against the hash of its DER) before it is handed out. */
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"
#include "kyso/util.h"

kyso_status archive_get_document(archive *a, const uint8_t sha256[32], uint8_t **value, size_t *len,
                                 kyso_err *err) {
  char hex[65];
  kyso_hex(sha256, 32, hex);
  kyso_status st = archive__get(a, NULL, ARCHIVE__CF_DOCUMENTS, sha256, 32, value, len, err);
  if (st == KYSO_NOT_FOUND)
    return kyso_fail(err, KYSO_NOT_FOUND, "document %s has no record in the archive", hex);
  if (st != KYSO_OK) return st;
  Kyso__Store__V1__DocumentRecord *r = kyso__store__v1__document_record__unpack(NULL, *len, *value);
  int ok = r != NULL && r->sha256.len == 32 && memcmp(r->sha256.data, sha256, 32) == 0;
  for (size_t i = 0; ok && i < r->n_signature_ids; i++) ok = r->signature_ids[i].len == 32;
  kyso__store__v1__document_record__free_unpacked(r, NULL);
  if (!ok) {
    free(*value);
    *value = NULL;
    *len = 0;
    return kyso_fail(err, KYSO_DATA_LOSS, "the record of document %s is damaged", hex);
  }
  return KYSO_OK;
}

kyso_status archive_get_signature(archive *a, const uint8_t id[32], uint8_t **value, size_t *len,
                                  kyso_err *err) {
  char hex[65];
  uint8_t got[32];
  kyso_hex(id, 32, hex);
  kyso_status st = archive__get(a, NULL, ARCHIVE__CF_SIGNATURES, id, 32, value, len, err);
  if (st == KYSO_NOT_FOUND)
    return kyso_fail(err, KYSO_NOT_FOUND, "signature %s is not in the archive", hex);
  if (st != KYSO_OK) return st;
  Kyso__Store__V1__SignatureRecord *r =
      kyso__store__v1__signature_record__unpack(NULL, *len, *value);
  int ok = r != NULL && r->document_sha256.len == 32 && r->certificate_sha256.len == 32;
  if (ok) {
    archive__sha256(r->cms.data, r->cms.len, got);
    ok = memcmp(got, id, 32) == 0;
  }
  kyso__store__v1__signature_record__free_unpacked(r, NULL);
  if (!ok) {
    free(*value);
    *value = NULL;
    *len = 0;
    return kyso_fail(err, KYSO_DATA_LOSS,
                     "signature %s is damaged: its stored CMS no longer hashes to its id", hex);
  }
  return KYSO_OK;
}

kyso_status archive_get_certificate(archive *a, const uint8_t sha256[32], uint8_t **der,
                                    size_t *len, kyso_err *err) {
  char hex[65];
  uint8_t got[32];
  kyso_hex(sha256, 32, hex);
  kyso_status st = archive__get(a, NULL, ARCHIVE__CF_CERTIFICATES, sha256, 32, der, len, err);
  if (st == KYSO_NOT_FOUND)
    return kyso_fail(err, KYSO_NOT_FOUND, "certificate %s is not in the archive", hex);
  if (st != KYSO_OK) return st;
  archive__sha256(*der, *len, got);
  if (memcmp(got, sha256, 32) != 0) {
    free(*der);
    *der = NULL;
    *len = 0;
    return kyso_fail(err, KYSO_DATA_LOSS,
                     "certificate %s is damaged: its stored DER no longer hashes to its id", hex);
  }
  return KYSO_OK;
}

kyso_status archive_find_request(archive *a, const char *principal, const char *request_id,
                                 uint8_t **result, size_t *result_len, kyso_err *err) {
  uint8_t key[ARCHIVE__MAX_KEY];
  *result = NULL;
  *result_len = 0;
  size_t klen = archive__request_key(principal, request_id, key);
  if (klen == 0)
    return kyso_fail(err, KYSO_NOT_FOUND, "request_id '%.64s' of '%.64s' has no result", request_id,
                     principal);
  kyso_status st = archive__get(a, NULL, ARCHIVE__CF_REQUESTS, key, klen, result, result_len, err);
  if (st == KYSO_NOT_FOUND)
    return kyso_fail(err, KYSO_NOT_FOUND, "request_id '%s' of '%s' has no result", request_id,
                     principal);
  if (st != KYSO_OK) return st;
  archive__result *r = kyso__store__v1__command_result__unpack(NULL, *result_len, *result);
  int ok = r != NULL && r->document_sha256.len == 32;
  kyso__store__v1__command_result__free_unpacked(r, NULL);
  if (!ok) {
    free(*result);
    *result = NULL;
    *result_len = 0;
    return kyso_fail(err, KYSO_DATA_LOSS, "the stored result of request_id '%s' of '%s' is damaged",
                     request_id, principal);
  }
  return KYSO_OK;
}
