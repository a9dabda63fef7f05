/* kysod — an archived document as the API shows it: the document record,
 * its signatures in chain order and their signers, gathered from the
 * archive's records into one kyso.v1.DocumentInfo that owns its memory. */
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyso/util.h"
#include "kyso/x509_text.h"
#include "kysod.h"

#include "kyso/store/v1/command.pb-c.h"
#include "kyso/v1/archive.pb-c.h"

struct kysod_doc_view {
  Kyso__V1__DocumentInfo info;
  Kyso__V1__DocumentMetadata meta;
  Kyso__Store__V1__DocumentRecord *rec;
  size_t n_sigs;
  Kyso__Store__V1__SignatureRecord **sig_recs;
  Kyso__V1__SignatureInfo *sig_infos;
  Kyso__V1__SignatureInfo **sig_ptrs;
  char (*sig_hex)[65];
  char (*subjects)[256];
  char id_hex[65];
  char created[32];
};

static void format_ms(int64_t ms, char out[32]) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void subject_of(kysod *d, const Kyso__Store__V1__SignatureRecord *r, char out[256]) {
  uint8_t *der = NULL;
  size_t len = 0;
  kyso_err ignored;
  out[0] = '\0';
  if (r->certificate_sha256.len != 32 ||
      archive_get_certificate(d->archive, r->certificate_sha256.data, &der, &len, &ignored) !=
          KYSO_OK)
    return;
  const unsigned char *p = der;
  X509 *x = d2i_X509(NULL, &p, (long)len);
  if (x != NULL) kyso_x509_name_utf8(X509_get_subject_name(x), out, 256);
  X509_free(x);
  free(der);
}

static kyso_status load_signatures(kysod *d, kysod_doc_view *v, int include_cms, kyso_err *err) {
  size_t n = v->rec->n_signature_ids;
  v->sig_recs = calloc(n ? n : 1, sizeof(*v->sig_recs));
  v->sig_infos = calloc(n ? n : 1, sizeof(*v->sig_infos));
  v->sig_ptrs = calloc(n ? n : 1, sizeof(*v->sig_ptrs));
  v->sig_hex = calloc(n ? n : 1, sizeof(*v->sig_hex));
  v->subjects = calloc(n ? n : 1, sizeof(*v->subjects));
  if (!v->sig_recs || !v->sig_infos || !v->sig_ptrs || !v->sig_hex || !v->subjects)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for %zu signatures", n);
  for (size_t i = 0; i < n; i++) {
    const ProtobufCBinaryData *id = &v->rec->signature_ids[i];
    uint8_t *value = NULL;
    size_t len = 0;
    if (id->len != 32)
      return kyso_fail(err, KYSO_DATA_LOSS, "document %s has a malformed signature id", v->id_hex);
    kyso_hex(id->data, 32, v->sig_hex[i]);
    kyso_status st = archive_get_signature(d->archive, id->data, &value, &len, err);
    if (st != KYSO_OK) return st;
    v->sig_recs[i] = kyso__store__v1__signature_record__unpack(NULL, len, value);
    free(value);
    if (v->sig_recs[i] == NULL)
      return kyso_fail(err, KYSO_DATA_LOSS, "signature record %s is damaged", v->sig_hex[i]);
    v->n_sigs = i + 1;
    const Kyso__Store__V1__SignatureRecord *r = v->sig_recs[i];
    Kyso__V1__SignatureInfo *si = &v->sig_infos[i];
    kyso__v1__signature_info__init(si);
    si->signature_id = v->sig_hex[i];
    si->order = r->order;
    si->key_label = r->key_label;
    si->account = r->account;
    si->unit = r->unit;
    si->signing_time = r->signing_time;
    si->timestamp_time = r->timestamp_time;
    si->timestamp_serial = r->timestamp_serial;
    si->timestamp_tsa = r->timestamp_tsa;
    subject_of(d, r, v->subjects[i]);
    si->certificate_subject = v->subjects[i];
    if (include_cms) si->signature = r->cms;
    v->sig_ptrs[i] = si;
  }
  v->info.signatures = v->sig_ptrs;
  v->info.n_signatures = n;
  return KYSO_OK;
}

kyso_status kysod__doc_view(kysod *d, const uint8_t id[32], int include_cms, kysod_doc_view **out,
                            kyso_err *err) {
  kyso_status st;
  uint8_t *value = NULL;
  size_t len = 0;
  kysod_doc_view *v = calloc(1, sizeof(*v));
  *out = NULL;
  if (v == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  kyso_hex(id, 32, v->id_hex);
  st = archive_get_document(d->archive, id, &value, &len, err);
  if (st == KYSO_NOT_FOUND) {
    st = kyso_fail(err, KYSO_NOT_FOUND, "no archived document %s", v->id_hex);
    goto out;
  }
  if (st != KYSO_OK) goto out;
  v->rec = kyso__store__v1__document_record__unpack(NULL, len, value);
  if (v->rec == NULL) {
    st = kyso_fail(err, KYSO_DATA_LOSS, "document record %s is damaged", v->id_hex);
    goto out;
  }
  kyso__v1__document_info__init(&v->info);
  kyso__v1__document_metadata__init(&v->meta);
  if (v->rec->metadata != NULL) {
    const Kyso__Store__V1__DocumentMetadata *m = v->rec->metadata;
    v->meta.unit = m->unit;
    v->meta.number_notation = m->number_notation;
    v->meta.title = m->title;
    v->meta.issue_date = m->issue_date;
    v->meta.media_type = m->media_type;
    v->meta.document_type = m->document_type;
  }
  format_ms(v->rec->created_unix_ms, v->created);
  v->info.id = v->id_hex;
  v->info.size = v->rec->size;
  v->info.metadata = &v->meta;
  v->info.account = v->rec->account;
  v->info.created = v->created;
  st = load_signatures(d, v, include_cms, err);
out:
  free(value);
  if (st != KYSO_OK) {
    kysod__doc_view_free(v);
    return st;
  }
  *out = v;
  return KYSO_OK;
}

Kyso__V1__DocumentInfo *kysod__doc_view_info(kysod_doc_view *v) { return &v->info; }

void kysod__doc_view_free(kysod_doc_view *v) {
  if (v == NULL) return;
  for (size_t i = 0; i < v->n_sigs; i++)
    kyso__store__v1__signature_record__free_unpacked(v->sig_recs[i], NULL);
  kyso__store__v1__document_record__free_unpacked(v->rec, NULL);
  free(v->sig_recs);
  free(v->sig_infos);
  free(v->sig_ptrs);
  free(v->sig_hex);
  free(v->subjects);
  free(v);
}
