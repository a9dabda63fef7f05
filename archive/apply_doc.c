/* archive — the record writes of apply: a document record (created, or its
 * chain extended and empty metadata filled in — never overwritten), its
 * index entries, a signature record and the certificates it names. Called
 * only from archive__apply; deterministic like it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "archive_internal.h"
#include "kyso/util.h"

/* Signatures in one document's chain: an official, a seal, counter-
 * signatures; the record is rewritten whole on each, so it stays small. */
#define ARCHIVE__MAX_SIGNATURES 1000

typedef Kyso__Store__V1__DocumentRecord doc_record;
typedef Kyso__Store__V1__DocumentMetadata doc_meta;

static const char *str(const char *s) { return s ? s : ""; }

/* The UTC day of a command time: the index date of a document without an
 * issue date. From the command, so every replica computes the same day. */
static void utc_day(int64_t ms, char out[ARCHIVE__DATE_LEN + 1]) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL || strftime(out, ARCHIVE__DATE_LEN + 1, "%Y-%m-%d", &tm) == 0)
    strcpy(out, "1970-01-01");
}

static void put(archive *a, rocksdb_writebatch_wi_t *wb, int cf, const void *k, size_t kn,
                const void *v, size_t vn) {
  rocksdb_writebatch_wi_put_cf(wb, a->cf[cf], (const char *)k, kn, (const char *)v, vn);
}

static kyso_status index_date(archive *a, rocksdb_writebatch_wi_t *wb, char type, const char *name,
                              const doc_record *r, kyso_err *err) {
  uint8_t key[ARCHIVE__MAX_KEY];
  if (name == NULL || name[0] == '\0') return KYSO_OK;
  size_t n =
      archive__date_index_key(type, name, r->index_date, r->created_unix_ms, r->sha256.data, key);
  if (n == 0) return kyso_fail(err, KYSO_INVALID_ARGUMENT, "cannot index under '%.64s'", name);
  put(a, wb, ARCHIVE__CF_INDEXES, key, n, "", 0);
  return KYSO_OK;
}

static kyso_status index_unit(archive *a, rocksdb_writebatch_wi_t *wb, const doc_record *r,
                              kyso_err *err) {
  uint8_t key[ARCHIVE__MAX_KEY];
  kyso_status st = index_date(a, wb, 'u', r->metadata->unit, r, err);
  if (st != KYSO_OK || r->metadata->number_notation[0] == '\0') return st;
  size_t n = archive__number_index_key(r->metadata->unit, r->metadata->number_notation,
                                       r->sha256.data, key);
  if (n != 0) put(a, wb, ARCHIVE__CF_INDEXES, key, n, "", 0);
  return KYSO_OK;
}

/* Fills each empty field of `into` (pointing into the stored record or the
 * command) from `from`; *unit_set / *number_set say what became known. */
static void fill_metadata(doc_meta *into, const doc_meta *from, int *unit_set, int *number_set) {
  *unit_set = *number_set = 0;
  if (from == NULL) return;
  if (into->unit[0] == '\0' && str(from->unit)[0] != '\0') {
    into->unit = from->unit;
    *unit_set = 1;
  }
  if (into->number_notation[0] == '\0' && str(from->number_notation)[0] != '\0') {
    into->number_notation = from->number_notation;
    *number_set = 1;
  }
  if (into->title[0] == '\0') into->title = (char *)str(from->title);
  if (into->issue_date[0] == '\0') into->issue_date = (char *)str(from->issue_date);
  if (into->media_type[0] == '\0') into->media_type = (char *)str(from->media_type);
  if (into->document_type[0] == '\0') into->document_type = (char *)str(from->document_type);
}

static void copy_metadata(doc_meta *into, const doc_meta *from) {
  into->unit = (char *)str(from ? from->unit : NULL);
  into->number_notation = (char *)str(from ? from->number_notation : NULL);
  into->title = (char *)str(from ? from->title : NULL);
  into->issue_date = (char *)str(from ? from->issue_date : NULL);
  into->media_type = (char *)str(from ? from->media_type : NULL);
  into->document_type = (char *)str(from ? from->document_type : NULL);
}

/* Builds the new record in *r (pointing into stored and the command) and
 * writes the index entries that became due. */
static kyso_status merge(archive *a, rocksdb_writebatch_wi_t *wb, const archive__command *c,
                         const Kyso__Store__V1__RecordDocument *d, const doc_record *stored,
                         doc_record *r, doc_meta *m, char day[ARCHIVE__DATE_LEN + 1],
                         kyso_err *err) {
  char hex[65];
  int unit_set = 0, number_set = 0;
  if (stored == NULL) {
    r->sha256 = d->sha256;
    r->size = d->size;
    copy_metadata(m, d->metadata);
    r->metadata = m;
    r->account = (char *)str(d->account);
    r->created_unix_ms = c->time_unix_ms;
    if (archive__valid_date(m->issue_date))
      snprintf(day, ARCHIVE__DATE_LEN + 1, "%s", m->issue_date);
    else
      utc_day(c->time_unix_ms, day);
    r->index_date = day;
    unit_set = m->unit[0] != '\0';
  } else {
    *r = *stored;
    if (stored->size != d->size) {
      kyso_hex(d->sha256.data, 32, hex);
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "document %s was recorded with %llu bytes; this command says %llu", hex,
                       (unsigned long long)stored->size, (unsigned long long)d->size);
    }
    copy_metadata(m, stored->metadata);
    r->metadata = m;
    fill_metadata(m, d->metadata, &unit_set, &number_set);
    if (r->account[0] == '\0') r->account = (char *)str(d->account);
  }
  r->updated_unix_ms = c->time_unix_ms;
  kyso_status st = KYSO_OK;
  if (unit_set || (number_set && m->unit[0] != '\0')) st = index_unit(a, wb, r, err);
  if (st == KYSO_OK) st = index_date(a, wb, 'a', d->account, r, err);
  return st;
}

kyso_status archive__apply_document(archive *a, rocksdb_writebatch_wi_t *wb,
                                    const archive__command *c,
                                    const Kyso__Store__V1__RecordDocument *d,
                                    const char *signer_account, const uint8_t *signature_id,
                                    uint32_t *order, kyso_err *err) {
  uint8_t *v = NULL, *packed = NULL;
  size_t n = 0;
  char hex[65], day[ARCHIVE__DATE_LEN + 1];
  doc_record *stored = NULL, r = KYSO__STORE__V1__DOCUMENT_RECORD__INIT;
  doc_meta m = KYSO__STORE__V1__DOCUMENT_METADATA__INIT;
  ProtobufCBinaryData *ids = NULL;
  kyso_hex(d->sha256.data, 32, hex);
  kyso_status st = archive__get_wb(a, wb, ARCHIVE__CF_DOCUMENTS, d->sha256.data, 32, &v, &n, err);
  if (st == KYSO_OK) {
    stored = kyso__store__v1__document_record__unpack(NULL, n, v);
    if (stored == NULL || stored->metadata == NULL || !archive__valid_date(stored->index_date)) {
      st = kyso_fail(err, KYSO_DATA_LOSS, "document record %s is damaged", hex);
      goto out;
    }
  } else if (st != KYSO_NOT_FOUND) {
    goto out;
  }
  if ((st = merge(a, wb, c, d, stored, &r, &m, day, err)) != KYSO_OK) goto out;
  if (signature_id != NULL) {
    if (r.n_signature_ids >= ARCHIVE__MAX_SIGNATURES) {
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "document %s already has %d signatures", hex,
                     ARCHIVE__MAX_SIGNATURES);
      goto out;
    }
    if ((ids = calloc(r.n_signature_ids + 1, sizeof(*ids))) == NULL) {
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory recording a signature");
      goto out;
    }
    if (r.n_signature_ids) memcpy(ids, r.signature_ids, r.n_signature_ids * sizeof(*ids));
    ids[r.n_signature_ids].data = (uint8_t *)signature_id;
    ids[r.n_signature_ids].len = 32;
    r.signature_ids = ids;
    r.n_signature_ids++;
    if ((st = index_date(a, wb, 'a', signer_account, &r, err)) != KYSO_OK) goto out;
  }
  *order = (uint32_t)r.n_signature_ids;
  n = kyso__store__v1__document_record__get_packed_size(&r);
  if ((packed = malloc(n)) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory recording document %s", hex);
    goto out;
  }
  kyso__store__v1__document_record__pack(&r, packed);
  put(a, wb, ARCHIVE__CF_DOCUMENTS, d->sha256.data, 32, packed, n);
out:
  free(packed);
  free(ids);
  kyso__store__v1__document_record__free_unpacked(stored, NULL);
  free(v);
  return st;
}

static void put_certificate(archive *a, rocksdb_writebatch_wi_t *wb, const ProtobufCBinaryData *der,
                            uint8_t id[32], kyso_status *st, kyso_err *err) {
  uint8_t *v = NULL;
  size_t n = 0;
  archive__sha256(der->data, der->len, id);
  if (*st != KYSO_OK) return;
  kyso_status got = archive__get_wb(a, wb, ARCHIVE__CF_CERTIFICATES, id, 32, &v, &n, err);
  free(v);
  if (got == KYSO_NOT_FOUND)
    put(a, wb, ARCHIVE__CF_CERTIFICATES, id, 32, der->data, der->len);
  else if (got != KYSO_OK)
    *st = got;
}

kyso_status archive__apply_signature(archive *a, rocksdb_writebatch_wi_t *wb,
                                     const archive__command *c, const uint8_t id[32],
                                     uint32_t order, kyso_err *err) {
  const Kyso__Store__V1__RecordSigning *s = c->record_signing;
  Kyso__Store__V1__SignatureRecord r = KYSO__STORE__V1__SIGNATURE_RECORD__INIT;
  uint8_t cert_id[32], chain_id[32];
  kyso_status st = KYSO_OK;
  put_certificate(a, wb, &s->certificate, cert_id, &st, err);
  for (size_t i = 0; i < s->n_chain; i++) put_certificate(a, wb, &s->chain[i], chain_id, &st, err);
  if (st != KYSO_OK) return st;
  r.id.data = (uint8_t *)id;
  r.id.len = 32;
  r.document_sha256 = s->document->sha256;
  r.cms = s->cms;
  r.key_label = (char *)str(s->key_label);
  r.role = s->role;
  r.account = (char *)str(s->account);
  r.unit = (char *)str(s->unit);
  r.certificate_sha256.data = cert_id;
  r.certificate_sha256.len = 32;
  r.signing_time = (char *)str(s->signing_time);
  r.timestamp_time = (char *)str(s->timestamp_time);
  r.timestamp_serial = (char *)str(s->timestamp_serial);
  r.timestamp_tsa = (char *)str(s->timestamp_tsa);
  r.order = order;
  r.principal = c->principal;
  r.request_id = (char *)str(c->request_id);
  r.recorded_unix_ms = c->time_unix_ms;
  size_t n = kyso__store__v1__signature_record__get_packed_size(&r);
  uint8_t *packed = malloc(n);
  if (packed == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory recording a signature");
  kyso__store__v1__signature_record__pack(&r, packed);
  put(a, wb, ARCHIVE__CF_SIGNATURES, id, 32, packed, n);
  free(packed);
  return KYSO_OK;
}
