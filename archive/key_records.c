/* archive — reads of the key registry (apply_key.c writes it). */
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"

kyso_status archive_get_key(archive *a, const char *label, uint8_t **value, size_t *len,
                            kyso_err *err) {
  *value = NULL;
  *len = 0;
  kyso_status st = archive__get(a, NULL, ARCHIVE__CF_KEYS, label, strlen(label), value, len, err);
  if (st == KYSO_NOT_FOUND)
    return kyso_fail(err, KYSO_NOT_FOUND, "key '%s' is not in the key registry", label);
  return st;
}

kyso_status archive_each_key(archive *a, archive_key_fn fn, void *ctx, kyso_err *err) {
  kyso_status st = KYSO_OK;
  char *e = NULL;
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(a->db, a->ro, a->cf[ARCHIVE__CF_KEYS]);
  for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it) && st == KYSO_OK;
       rocksdb_iter_next(it)) {
    size_t kl = 0, vl = 0;
    const char *k = rocksdb_iter_key(it, &kl);
    const char *v = rocksdb_iter_value(it, &vl);
    char label[KYSO_MAX_LABEL + 1];
    if (kl > KYSO_MAX_LABEL) {
      st = kyso_fail(err, KYSO_DATA_LOSS, "the key registry holds a label of %zu bytes", kl);
      break;
    }
    memcpy(label, k, kl);
    label[kl] = '\0';
    st = fn(ctx, label, (const uint8_t *)v, vl, err);
  }
  if (st == KYSO_OK) {
    rocksdb_iter_get_error(it, &e);
    if (e != NULL) st = archive__rocks_fail(err, e, "reading the key registry in '%s'", a->dir);
  }
  rocksdb_iter_destroy(it);
  return st;
}
