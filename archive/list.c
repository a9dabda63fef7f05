/* archive — listing document ids from the indexes, one page at a time.
 * A page token is hex of: version 1, 8 bytes of the query's fingerprint
 * (index, key, range) and the index key suffix of the last id returned; a
 * token from another listing is INVALID_ARGUMENT, not a wrong page. */
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"
#include "kyso/util.h"

#define TOKEN_VERSION 1
#define FINGERPRINT 8
#define DATE_SUFFIX (ARCHIVE__DATE_LEN + 1 + 8 + 32) /* date 0 created_ms docid */
#define MAX_TOKEN 512

typedef struct bounds {
  uint8_t lower[ARCHIVE__MAX_KEY], upper[ARCHIVE__MAX_KEY], fp[FINGERPRINT];
  size_t lower_len, upper_len, prefix_len, suffix_len;
} bounds;

static const char *str(const char *s) { return s ? s : ""; }

static kyso_status make_bounds(const archive_query *q, bounds *b, kyso_err *err) {
  const char *key = str(q->key), *from = str(q->from), *to = str(q->to);
  size_t kn = strlen(key), at = 0;
  if (kn == 0 || kn > KYSO_MAX_NAME)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a listing needs a unit or account of 1..%d bytes",
                     KYSO_MAX_NAME);
  char type = q->index == ARCHIVE_BY_UNIT_DATE      ? 'u'
              : q->index == ARCHIVE_BY_ACCOUNT_DATE ? 'a'
                                                    : 'n';
  if (q->index != ARCHIVE_BY_UNIT_DATE && q->index != ARCHIVE_BY_ACCOUNT_DATE &&
      q->index != ARCHIVE_BY_NUMBER)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "unknown archive index %d", (int)q->index);
  b->lower[at++] = (uint8_t)type;
  memcpy(b->lower + at, key, kn + 1); /* with its 0 separator */
  at += kn + 1;
  if (type == 'n') {
    size_t nn = strlen(from);
    if (nn == 0 || nn > KYSO_MAX_METADATA)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a number lookup needs a number of 1..%d bytes",
                       KYSO_MAX_METADATA);
    memcpy(b->lower + at, from, nn + 1);
    at += nn + 1;
    b->prefix_len = b->lower_len = at;
    b->suffix_len = 32;
    memcpy(b->upper, b->lower, at);
    b->upper[at - 1] = 1; /* just past every key with this prefix */
    b->upper_len = at;
  } else {
    if ((from[0] && !archive__valid_date(from)) || (to[0] && !archive__valid_date(to)))
      return kyso_fail(err, KYSO_INVALID_ARGUMENT, "listing dates must be YYYY-MM-DD");
    if (from[0] && to[0] && strcmp(from, to) > 0)
      return kyso_fail(err, KYSO_INVALID_ARGUMENT, "from date %s is after to date %s", from, to);
    b->prefix_len = at;
    b->suffix_len = DATE_SUFFIX;
    memcpy(b->upper, b->lower, at);
    if (to[0]) { /* inclusive: past every key of that day (date then 0) */
      memcpy(b->upper + at, to, ARCHIVE__DATE_LEN);
      b->upper[at + ARCHIVE__DATE_LEN] = 1;
      b->upper_len = at + ARCHIVE__DATE_LEN + 1;
    } else {
      b->upper[at - 1] = 1;
      b->upper_len = at;
    }
    if (from[0]) {
      memcpy(b->lower + at, from, ARCHIVE__DATE_LEN);
      at += ARCHIVE__DATE_LEN;
    }
    b->lower_len = at;
  }
  /* Fingerprint of the listing: index and key (and number) in the prefix,
   * the range in the upper bound and the from date. */
  uint8_t fp_in[2 * ARCHIVE__MAX_KEY + ARCHIVE__DATE_LEN], digest[32];
  size_t fn = 0;
  memcpy(fp_in, b->lower, b->prefix_len);
  fn += b->prefix_len;
  memcpy(fp_in + fn, b->upper, b->upper_len);
  fn += b->upper_len;
  if (type != 'n' && from[0]) {
    memcpy(fp_in + fn, from, ARCHIVE__DATE_LEN);
    fn += ARCHIVE__DATE_LEN;
  }
  archive__sha256(fp_in, fn, digest);
  memcpy(b->fp, digest, FINGERPRINT);
  return KYSO_OK;
}

/* Parses a token into the key to continue after (*seek_len 0: none). */
static kyso_status parse_token(const char *token, const bounds *b, uint8_t *seek, size_t *seek_len,
                               kyso_err *err) {
  uint8_t raw[1 + FINGERPRINT + ARCHIVE__MAX_KEY];
  size_t tn = strlen(token), want = 1 + FINGERPRINT + b->suffix_len;
  *seek_len = 0;
  if (tn == 0) return KYSO_OK;
  if (tn != 2 * want || kyso_unhex(token, raw, want, "page_token", NULL) != KYSO_OK ||
      raw[0] != TOKEN_VERSION || memcmp(raw + 1, b->fp, FINGERPRINT) != 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "page_token does not belong to this listing (start again without one)");
  memcpy(seek, b->lower, b->prefix_len);
  memcpy(seek + b->prefix_len, raw + 1 + FINGERPRINT, b->suffix_len);
  *seek_len = b->prefix_len + b->suffix_len;
  return KYSO_OK;
}

static void make_token(const bounds *b, const uint8_t *key, char out[MAX_TOKEN + 1]) {
  uint8_t raw[1 + FINGERPRINT + ARCHIVE__MAX_KEY];
  raw[0] = TOKEN_VERSION;
  memcpy(raw + 1, b->fp, FINGERPRINT);
  memcpy(raw + 1 + FINGERPRINT, key + b->prefix_len, b->suffix_len);
  kyso_hex(raw, 1 + FINGERPRINT + b->suffix_len, out);
}

kyso_status archive_list(archive *a, const archive_query *q, uint8_t **ids, size_t *count,
                         char next_token[513], kyso_err *err) {
  bounds b;
  uint8_t seek[ARCHIVE__MAX_KEY];
  char token[MAX_TOKEN + 1];
  size_t seek_len = 0, n = 0;
  uint32_t page = q->page_size ? q->page_size : 100;
  kyso_status st;
  *ids = NULL;
  *count = 0;
  /* the caller may pass its last next_token buffer as page_token */
  if (strlen(str(q->page_token)) > MAX_TOKEN)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "page_token is longer than %d", MAX_TOKEN);
  strcpy(token, str(q->page_token));
  next_token[0] = '\0';
  if (page > KYSO_MAX_PAGE)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "page_size %u is more than %d", page,
                     KYSO_MAX_PAGE);
  if ((st = make_bounds(q, &b, err)) != KYSO_OK) return st;
  if ((st = parse_token(token, &b, seek, &seek_len, err)) != KYSO_OK) return st;
  uint8_t *out = malloc((size_t)page * 32);
  if (out == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory listing");
  rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_iterate_lower_bound(ro, (const char *)b.lower, b.lower_len);
  rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)b.upper, b.upper_len);
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(a->db, ro, a->cf[ARCHIVE__CF_INDEXES]);
  if (seek_len > 0) {
    rocksdb_iter_seek(it, (const char *)seek, seek_len);
    size_t kl = 0;
    const char *k = rocksdb_iter_valid(it) ? rocksdb_iter_key(it, &kl) : NULL;
    if (k != NULL && kl == seek_len && memcmp(k, seek, kl) == 0) rocksdb_iter_next(it);
  } else {
    rocksdb_iter_seek(it, (const char *)b.lower, b.lower_len);
  }
  for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    size_t kl = 0;
    const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
    if (kl != b.prefix_len + b.suffix_len) {
      st = kyso_fail(err, KYSO_DATA_LOSS, "the archive's index has a malformed entry of %zu bytes",
                     kl);
      break;
    }
    if (n == page) { /* one more exists: the page gets a token */
      make_token(&b, seek, next_token);
      break;
    }
    memcpy(out + 32 * n++, k + kl - 32, 32);
    memcpy(seek, k, kl);
  }
  char *e = NULL;
  rocksdb_iter_get_error(it, &e);
  if (e != NULL && st == KYSO_OK)
    st = archive__rocks_fail(err, e, "listing the archive in '%s'", a->dir);
  else
    rocksdb_free(e);
  rocksdb_iter_destroy(it);
  rocksdb_readoptions_destroy(ro);
  if (st != KYSO_OK) {
    free(out);
    next_token[0] = '\0';
    return st;
  }
  *ids = out;
  *count = n;
  return KYSO_OK;
}
