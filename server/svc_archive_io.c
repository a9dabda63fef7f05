/* kysod — kyso.v1.Archive Put and Get: documents in and out in chunks, so a
 * 100 MiB document never sits whole in memory (one chunk per call at a time,
 * staged on disk while hashed). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyso/limits.h"
#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/store/v1/command.pb-c.h"
#include "kyso/v1/archive.pb-c.h"

static kyso_status check_header(const Kyso__V1__PutHeader *h, uint8_t expect[32], int *has_expect,
                                kyso_err *err) {
  kyso_status st;
  *has_expect = 0;
  if (h == NULL)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                     "the first Put message must carry the header (metadata)");
  if ((st = kysod__check_metadata(h->metadata, err)) != KYSO_OK) return st;
  if (h->account[0] && (st = kysod__check_name("header.account", h->account, err)) != KYSO_OK)
    return st;
  if ((st = kysod__check_text("request_id", h->request_id, KYSO_MAX_REQUEST_ID, err)) != KYSO_OK)
    return st;
  if (h->expected_sha256[0]) {
    if ((st = kyso_unhex(h->expected_sha256, expect, 32, "expected_sha256", err)) != KYSO_OK)
      return st;
    *has_expect = 1;
  }
  return KYSO_OK;
}

/* Streams the request's chunks into an upload. *hdr receives the first
 * message (caller frees) for its header. */
static kyso_status receive(kysod *d, rpc_call *call, Kyso__V1__PutRequest **hdr,
                           uint8_t sha256[32], uint64_t *size, kyso_err *err) {
  kyso_status st = KYSO_OK;
  archive_upload *up = NULL;
  uint8_t expect[32];
  int has_expect = 0;
  *hdr = NULL;
  if ((st = archive_upload_begin(d->archive, &up, err)) != KYSO_OK) return st;
  for (size_t n = 0;; n++) {
    const uint8_t *data;
    size_t len;
    int end = 0;
    if ((st = rpc_call_read(call, &data, &len, &end, err)) != KYSO_OK) goto out;
    if (end) break;
    Kyso__V1__PutRequest *m = kyso__v1__put_request__unpack(NULL, len, data);
    if (m == NULL) {
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "Put message %zu is not a kyso.v1.PutRequest", n);
      goto out;
    }
    if (n == 0) {
      *hdr = m;
      if ((st = check_header(m->header, expect, &has_expect, err)) != KYSO_OK) goto out;
    } else if (m->header != NULL) {
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "only the first Put message may carry a header");
    }
    if (st == KYSO_OK && m->chunk.len > KYSO_CHUNK_SIZE)
      st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "Put chunk %zu is %zu bytes, more than %d", n,
                     m->chunk.len, KYSO_CHUNK_SIZE);
    if (st == KYSO_OK) st = archive_upload_write(up, m->chunk.data, m->chunk.len, err);
    if (n > 0) kyso__v1__put_request__free_unpacked(m, NULL);
    if (st != KYSO_OK) goto out;
  }
  if (*hdr == NULL) {
    st = kyso_fail(err, KYSO_INVALID_ARGUMENT, "Put carried no message at all");
    goto out;
  }
  if (rpc_call_remaining_ms(call) <= 0) {
    st = kyso_fail(err, KYSO_DEADLINE_EXCEEDED, "the client's deadline passed during the upload");
    goto out;
  }
  st = archive_upload_finish(up, has_expect ? expect : NULL, sha256, size, err);
  up = NULL;
out:
  archive_upload_abort(up);
  return st;
}

/* One Put from its upload to its answer; put_done answers a failure and
 * frees it. */
typedef struct put_job {
  kysod *d;
  rpc_call *call;
  Kyso__V1__PutRequest *first;
  uint8_t sha256[32];
  uint64_t size;
} put_job;

static void put_done(put_job *j, kyso_status st, const kyso_err *err) {
  if (st != KYSO_OK) kysod__reply_failure(j->call, "put", st, err);
  kyso__v1__put_request__free_unpacked(j->first, NULL);
  free(j);
}

/* kysod__record_async's answer: the document is recorded; answer with
 * what the archive now holds of it. */
static void put_recorded(void *ctx, kyso_status st, const kyso_err *recorded,
                         const uint8_t *result, size_t result_len) {
  put_job *j = ctx;
  kyso_err err = {0};
  kysod_doc_view *view = NULL;
  char hex[65];
  (void)result;
  (void)result_len;
  if (st != KYSO_OK) {
    err = *recorded;
    goto out;
  }
  if ((st = kysod__doc_view(j->d, j->sha256, 0, &view, &err)) != KYSO_OK) goto out;
  kyso_hex(j->sha256, 32, hex);
  kyso_log(KYSO_LOG_INFO, "put principal=%s id=%s bytes=%llu",
           rpc_call_peer(j->call)->principal, hex, (unsigned long long)j->size);
  kysod__reply(j->call, &kysod__doc_view_info(view)->base);
out:
  kysod__doc_view_free(view);
  put_done(j, st, &err);
}

/* Packs the record_document command (*packed malloc()ed). */
static kyso_status pack_record(rpc_call *call, const Kyso__V1__PutHeader *h,
                               const uint8_t sha256[32], uint64_t size, uint8_t **packed,
                               size_t *len, kyso_err *err) {
  Kyso__Store__V1__DocumentMetadata meta = KYSO__STORE__V1__DOCUMENT_METADATA__INIT;
  Kyso__Store__V1__RecordDocument doc = KYSO__STORE__V1__RECORD_DOCUMENT__INIT;
  Kyso__Store__V1__Command cmd = KYSO__STORE__V1__COMMAND__INIT;
  if (h->metadata != NULL) {
    meta.unit = h->metadata->unit;
    meta.number_notation = h->metadata->number_notation;
    meta.title = h->metadata->title;
    meta.issue_date = h->metadata->issue_date;
    meta.media_type = h->metadata->media_type;
    meta.document_type = h->metadata->document_type;
  }
  doc.sha256.data = (uint8_t *)sha256;
  doc.sha256.len = 32;
  doc.size = size;
  doc.metadata = &meta;
  doc.account = h->account;
  cmd.version = 1;
  cmd.time_unix_ms = (int64_t)time(NULL) * 1000;
  cmd.principal = (char *)rpc_call_peer(call)->principal;
  cmd.request_id = h->request_id;
  cmd.op_case = KYSO__STORE__V1__COMMAND__OP_RECORD_DOCUMENT;
  cmd.record_document = &doc;
  *len = kyso__store__v1__command__get_packed_size(&cmd);
  if ((*packed = malloc(*len)) == NULL)
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  kyso__store__v1__command__pack(&cmd, *packed);
  return KYSO_OK;
}

/* Receives and stores the bytes on this worker; put_recorded answers once
 * the record is in (here, or once committed on a cluster's leader). */
void kysod__archive_put(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  uint8_t *packed = NULL;
  size_t len = 0;
  put_job *j = calloc(1, sizeof(*j));
  if (j == NULL) {
    rpc_call_finish(call, KYSO_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  j->d = d;
  j->call = call;
  kyso_status st = kysod__require_writer(d, &err);
  if (st == KYSO_OK) st = receive(d, call, &j->first, j->sha256, &j->size, &err);
  if (st == KYSO_OK)
    st = pack_record(call, j->first->header, j->sha256, j->size, &packed, &len, &err);
  if (st != KYSO_OK) {
    put_done(j, st, &err);
    return;
  }
  kysod__record_async(d, call, packed, len, NULL, 0, put_recorded, j);
  free(packed);
}

static kyso_status send_message(rpc_call *call, const ProtobufCMessage *m, kyso_err *err) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  protobuf_c_message_pack(m, buf);
  kyso_status st = rpc_call_write(call, buf, n, err);
  free(buf);
  return st;
}

void kysod__archive_get(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  uint8_t id[32];
  kysod_doc_view *view = NULL;
  archive_reader *r = NULL;
  Kyso__V1__GetRequest *req = kyso__v1__get_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.GetRequest");
    goto out;
  }
  size_t chunk = req->chunk_size == 0 || req->chunk_size > KYSO_CHUNK_SIZE ? KYSO_CHUNK_SIZE
                                                                          : req->chunk_size;
  if ((st = kyso_unhex(req->id, id, 32, "id", &err)) != KYSO_OK) goto out;
  if ((st = kysod__read_barrier(d, call, &err)) != KYSO_OK) goto out;
  if ((st = kysod__doc_view(d, id, 0, &view, &err)) != KYSO_OK) goto out;
  if ((st = archive_reader_open(d->archive, id, &r, &err)) != KYSO_OK) goto out;
  Kyso__V1__GetResponse head = KYSO__V1__GET_RESPONSE__INIT;
  head.info = kysod__doc_view_info(view);
  if ((st = send_message(call, &head.base, &err)) != KYSO_OK) goto out;
  for (;;) {
    const uint8_t *part;
    size_t n;
    /* Each stored chunk is checked against its hash before any of it goes out. */
    if ((st = archive_reader_next(r, &part, &n, &err)) != KYSO_OK) goto out;
    if (n == 0) break;
    for (size_t off = 0; off < n; off += chunk) {
      Kyso__V1__GetResponse m = KYSO__V1__GET_RESPONSE__INIT;
      m.chunk.data = (uint8_t *)part + off;
      m.chunk.len = n - off < chunk ? n - off : chunk;
      if ((st = send_message(call, &m.base, &err)) != KYSO_OK) goto out;
    }
  }
  rpc_call_finish(call, KYSO_OK, "", NULL, 0);
out:
  if (st != KYSO_OK) kysod__reply_failure(call, "get", st, &err);
  archive_reader_close(r);
  kysod__doc_view_free(view);
  kyso__v1__get_request__free_unpacked(req, NULL);
}
