/* archive — fixity of the records: each against its key, and the links
 * between them (document -> blob, signatures, index entries; signature ->
 * document, position, certificate; index entry and request -> document). */
#include <stdlib.h>
#include <string.h>

#include "archive_internal.h"
#include "kyso/util.h"

typedef Kyso__Store__V1__DocumentRecord doc_record;
typedef Kyso__Store__V1__SignatureRecord sig_record;

static int present(archive__scrub *s, int cf, const void *key, size_t klen) {
  uint8_t *v = NULL;
  size_t n = 0;
  kyso_err err = {0};
  kyso_status st = archive__get(s->a, s->ro, cf, key, klen, &v, &n, &err);
  free(v);
  return st == KYSO_OK;
}

static doc_record *load_document(archive__scrub *s, const uint8_t id[32]) {
  uint8_t *v = NULL;
  size_t n = 0;
  kyso_err err = {0};
  if (archive__get(s->a, s->ro, ARCHIVE__CF_DOCUMENTS, id, 32, &v, &n, &err) != KYSO_OK)
    return NULL;
  doc_record *r = kyso__store__v1__document_record__unpack(NULL, n, v);
  free(v);
  return r;
}

static int check_document(archive__scrub *s, const uint8_t *k, size_t kl, const uint8_t *v,
                          size_t vl) {
  uint8_t key[ARCHIVE__MAX_KEY];
  int bad = 0;
  doc_record *r = kl == 32 ? kyso__store__v1__document_record__unpack(NULL, vl, v) : NULL;
  if (r == NULL || r->sha256.len != 32 || memcmp(r->sha256.data, k, 32) != 0 ||
      r->metadata == NULL || !archive__valid_date(r->index_date)) {
    archive__scrub_problem(s, "document", kl == 32 ? k : NULL,
                           "the record is unreadable or not this document's");
    kyso__store__v1__document_record__free_unpacked(r, NULL);
    return 1;
  }
  if (!present(s, ARCHIVE__CF_MANIFESTS, k, 32))
    bad = archive__scrub_problem(s, "document", k, "its bytes (blob) are not in the archive");
  for (size_t i = 0; i < r->n_signature_ids; i++) {
    if (r->signature_ids[i].len != 32 ||
        !present(s, ARCHIVE__CF_SIGNATURES, r->signature_ids[i].data, 32))
      bad =
          archive__scrub_problem(s, "document", k, "signature %zu of its chain is missing", i + 1);
  }
  const Kyso__Store__V1__DocumentMetadata *m = r->metadata;
  size_t n;
  if (m->unit[0] &&
      (n = archive__date_index_key('u', m->unit, r->index_date, r->created_unix_ms, k, key)) &&
      !present(s, ARCHIVE__CF_INDEXES, key, n))
    bad = archive__scrub_problem(s, "document", k, "it is missing from the index of unit '%s'",
                                 m->unit);
  if (m->unit[0] && m->number_notation[0] &&
      (n = archive__number_index_key(m->unit, m->number_notation, k, key)) &&
      !present(s, ARCHIVE__CF_INDEXES, key, n))
    bad = archive__scrub_problem(s, "document", k, "it is missing from the number index");
  if (r->account[0] &&
      (n = archive__date_index_key('a', r->account, r->index_date, r->created_unix_ms, k, key)) &&
      !present(s, ARCHIVE__CF_INDEXES, key, n))
    bad = archive__scrub_problem(s, "document", k, "it is missing from the index of account '%s'",
                                 r->account);
  kyso__store__v1__document_record__free_unpacked(r, NULL);
  return bad;
}

static int check_signature(archive__scrub *s, const uint8_t *k, size_t kl, const uint8_t *v,
                           size_t vl) {
  uint8_t got[32];
  int bad = 0;
  sig_record *r = kl == 32 ? kyso__store__v1__signature_record__unpack(NULL, vl, v) : NULL;
  if (r != NULL) archive__sha256(r->cms.data, r->cms.len, got);
  if (r == NULL || r->id.len != 32 || memcmp(r->id.data, k, 32) != 0 || memcmp(got, k, 32) != 0 ||
      r->document_sha256.len != 32 || r->certificate_sha256.len != 32) {
    archive__scrub_problem(s, "signature", kl == 32 ? k : NULL,
                           "the record is unreadable, or its CMS no longer hashes to its id");
    kyso__store__v1__signature_record__free_unpacked(r, NULL);
    return 1;
  }
  doc_record *d = load_document(s, r->document_sha256.data);
  char doc[65];
  kyso_hex(r->document_sha256.data, 32, doc);
  if (d == NULL)
    bad = archive__scrub_problem(s, "signature", k, "its document %s has no record", doc);
  else if (r->order < 1 || r->order > d->n_signature_ids ||
           d->signature_ids[r->order - 1].len != 32 ||
           memcmp(d->signature_ids[r->order - 1].data, k, 32) != 0)
    bad = archive__scrub_problem(s, "signature", k, "document %s does not list it as signature %u",
                                 doc, r->order);
  if (!present(s, ARCHIVE__CF_CERTIFICATES, r->certificate_sha256.data, 32))
    bad = archive__scrub_problem(s, "signature", k, "its signer certificate is missing");
  kyso__store__v1__document_record__free_unpacked(d, NULL);
  kyso__store__v1__signature_record__free_unpacked(r, NULL);
  return bad;
}

static int check_certificate(archive__scrub *s, const uint8_t *k, size_t kl, const uint8_t *v,
                             size_t vl) {
  uint8_t got[32];
  archive__sha256(v, vl, got);
  if (kl == 32 && memcmp(got, k, 32) == 0) return 0;
  archive__scrub_problem(s, "certificate", kl == 32 ? k : NULL,
                         "its DER no longer hashes to its id");
  return 1;
}

static int check_index(archive__scrub *s, const uint8_t *k, size_t kl, const uint8_t *v,
                       size_t vl) {
  if (kl < 1 + 2 + 32 || (k[0] != 'u' && k[0] != 'a' && k[0] != 'n')) {
    archive__scrub_problem(s, "index", NULL, "an index entry of %zu bytes is malformed", kl);
    return 1;
  }
  const uint8_t *doc = k + kl - 32;
  if (present(s, ARCHIVE__CF_DOCUMENTS, doc, 32)) return 0;
  archive__scrub_problem(s, "index", doc, "the '%c' index names a document with no record", k[0]);
  return 1;
}

static int check_request(archive__scrub *s, const uint8_t *k, size_t kl, const uint8_t *v,
                         size_t vl) {
  archive__result *r = kyso__store__v1__command_result__unpack(NULL, vl, v);
  int bad = 0;
  if (r == NULL || r->document_sha256.len != 32 || memchr(k, 0, kl) == NULL) {
    bad = archive__scrub_problem(s, "request", NULL, "an idempotency entry is unreadable");
  } else if (!present(s, ARCHIVE__CF_DOCUMENTS, r->document_sha256.data, 32)) {
    bad = archive__scrub_problem(s, "request", r->document_sha256.data,
                                 "request '%.*s' names a document with no record",
                                 (int)(kl > 200 ? 200 : kl), (const char *)k);
  } else if (r->signature_id.len == 32 &&
             !present(s, ARCHIVE__CF_SIGNATURES, r->signature_id.data, 32)) {
    bad = archive__scrub_problem(s, "request", r->document_sha256.data,
                                 "a request's signature is not in the archive");
  }
  kyso__store__v1__command_result__free_unpacked(r, NULL);
  return bad;
}

typedef int (*check_fn)(archive__scrub *s, const uint8_t *k, size_t kl, const uint8_t *v,
                        size_t vl);

static void walk(archive__scrub *s, int cf, const char *what, const char *records, check_fn check,
                 uint64_t *seen, uint64_t *bad) {
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->a->db, s->ro, s->a->cf[cf]);
  for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it) && !s->stopped;
       rocksdb_iter_next(it)) {
    size_t kl = 0, vl = 0;
    const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
    const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);
    (*seen)++;
    if (check(s, k, kl, v, vl)) (*bad)++;
    archive__scrub_tick(s);
  }
  archive__scrub_iter_end(s, it, what, records, bad);
}

void archive__scrub_records(archive__scrub *s) {
  archive_scrub_report *r = s->rep;
  walk(s, ARCHIVE__CF_DOCUMENTS, "document", "document records", check_document, &r->documents,
       &r->documents_bad);
  if (!s->stopped)
    walk(s, ARCHIVE__CF_SIGNATURES, "signature", "signature records", check_signature,
         &r->signatures, &r->signatures_bad);
  if (!s->stopped)
    walk(s, ARCHIVE__CF_CERTIFICATES, "certificate", "certificates", check_certificate,
         &r->certificates, &r->certificates_bad);
  if (!s->stopped)
    walk(s, ARCHIVE__CF_INDEXES, "index", "index entries", check_index, &r->indexes,
         &r->indexes_bad);
  if (!s->stopped)
    walk(s, ARCHIVE__CF_REQUESTS, "request", "idempotency entries", check_request, &r->requests,
         &r->requests_bad);
}
