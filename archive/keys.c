/* archive — key layouts (see archive_internal.h) and point reads. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"

void archive__sha256(const void *p, size_t n, uint8_t out[32]) {
  unsigned int len = 32;
  /* EVP_Digest only fails on allocation failure; a zeroed id then matches nothing. */
  if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1) memset(out, 0, 32);
}

void archive__chunk_key(const uint8_t sha256[32], uint32_t index, uint8_t out[ARCHIVE__CHUNK_KEY]) {
  memcpy(out, sha256, 32);
  out[32] = (uint8_t)(index >> 24);
  out[33] = (uint8_t)(index >> 16);
  out[34] = (uint8_t)(index >> 8);
  out[35] = (uint8_t)index;
}

/* Appends s and a 0 separator; 0 if it would not fit. */
static size_t put_str(uint8_t *out, size_t at, const char *s, size_t max) {
  size_t n = strlen(s);
  if (n > max || at + n + 1 > ARCHIVE__MAX_KEY) return 0;
  memcpy(out + at, s, n);
  out[at + n] = 0;
  return at + n + 1;
}

size_t archive__request_key(const char *principal, const char *request_id,
                            uint8_t out[ARCHIVE__MAX_KEY]) {
  size_t at = put_str(out, 0, principal, ARCHIVE__MAX_PRINCIPAL);
  size_t n = strlen(request_id);
  if (at == 0 || n == 0 || n > KYSO_MAX_REQUEST_ID || at + n > ARCHIVE__MAX_KEY) return 0;
  memcpy(out + at, request_id, n);
  return at + n;
}

size_t archive__date_index_key(char type, const char *name, const char *date, int64_t created_ms,
                               const uint8_t docid[32], uint8_t out[ARCHIVE__MAX_KEY]) {
  out[0] = (uint8_t)type;
  size_t at = put_str(out, 1, name, KYSO_MAX_NAME);
  if (at == 0 || name[0] == '\0' || !archive__valid_date(date)) return 0;
  at = put_str(out, at, date, ARCHIVE__DATE_LEN);
  uint64_t ms = (uint64_t)created_ms;
  for (int i = 7; i >= 0; i--) out[at++] = (uint8_t)(ms >> (8 * i));
  memcpy(out + at, docid, 32);
  return at + 32;
}

size_t archive__number_index_key(const char *unit, const char *number, const uint8_t docid[32],
                                 uint8_t out[ARCHIVE__MAX_KEY]) {
  out[0] = 'n';
  size_t at = put_str(out, 1, unit, KYSO_MAX_NAME);
  if (at == 0 || unit[0] == '\0' || number[0] == '\0') return 0;
  if ((at = put_str(out, at, number, KYSO_MAX_METADATA)) == 0) return 0;
  memcpy(out + at, docid, 32);
  return at + 32;
}

/* "YYYY-MM-DD" with digits in place and a plausible month and day; the
 * index orders by these bytes, so the shape is all that matters. */
int archive__valid_date(const char *s) {
  if (strlen(s) != ARCHIVE__DATE_LEN || s[4] != '-' || s[7] != '-') return 0;
  for (int i = 0; i < ARCHIVE__DATE_LEN; i++)
    if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) return 0;
  int month = (s[5] - '0') * 10 + (s[6] - '0'), day = (s[8] - '0') * 10 + (s[9] - '0');
  return month >= 1 && month <= 12 && day >= 1 && day <= 31;
}

/* Takes ownership of v (from RocksDB) and hands out a malloc()ed copy. */
static kyso_status hand_out(char *v, size_t n, uint8_t **value, size_t *len, kyso_err *err) {
  uint8_t *copy = malloc(n ? n : 1);
  if (copy == NULL) {
    rocksdb_free(v);
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory reading a record");
  }
  memcpy(copy, v, n);
  rocksdb_free(v);
  *value = copy;
  *len = n;
  return KYSO_OK;
}

kyso_status archive__get(archive *a, const rocksdb_readoptions_t *ro, int cf, const void *key,
                         size_t klen, uint8_t **value, size_t *len, kyso_err *err) {
  char *e = NULL;
  size_t n = 0;
  *value = NULL;
  *len = 0;
  char *v = rocksdb_get_cf(a->db, ro ? ro : a->ro, a->cf[cf], key, klen, &n, &e);
  if (e != NULL) return archive__rocks_fail(err, e, "reading the archive in '%s'", a->dir);
  if (v == NULL) return KYSO_NOT_FOUND;
  return hand_out(v, n, value, len, err);
}

kyso_status archive__get_wb(archive *a, rocksdb_writebatch_wi_t *wb, int cf, const void *key,
                            size_t klen, uint8_t **value, size_t *len, kyso_err *err) {
  char *e = NULL;
  size_t n = 0;
  *value = NULL;
  *len = 0;
  char *v = rocksdb_writebatch_wi_get_from_batch_and_db_cf(wb, a->db, a->ro, a->cf[cf], key, klen,
                                                           &n, &e);
  if (e != NULL) return archive__rocks_fail(err, e, "reading the archive in '%s'", a->dir);
  if (v == NULL) return KYSO_NOT_FOUND;
  return hand_out(v, n, value, len, err);
}
