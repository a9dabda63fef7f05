/* kysod — kyso.v1.Peer: document bytes between the nodes of a cluster.
 * Every blob is checked against the id it is sent under before it is
 * stored, and re-checked chunk by chunk when it is read out (the archive's
 * reader), so a peer can neither plant bytes under a wrong name nor be
 * served damaged ones. */
#include <stdlib.h>

#include "kyso/limits.h"
#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/v1/peer.pb-c.h"

static void reply_state(rpc_call *call, kysod *d, const uint8_t sha[32]) {
  Kyso__V1__BlobState s = KYSO__V1__BLOB_STATE__INIT;
  kyso_err err = {0};
  uint64_t size = 0;
  kyso_status st = archive_blob_size(d->archive, sha, &size, &err);
  if (st != KYSO_OK && st != KYSO_NOT_FOUND) {
    rpc_call_finish(call, st, err.msg, NULL, 0);
    return;
  }
  s.present = st == KYSO_OK;
  s.size = size;
  kysod__reply(call, &s.base);
}

void kysod__peer_has_blob(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  size_t len;
  uint8_t sha[32];
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__BlobRef *req = kyso__v1__blob_ref__unpack(NULL, len, data);
  if (req == NULL) {
    rpc_call_finish(call, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.BlobRef", NULL, 0);
    return;
  }
  kyso_status st = kyso_unhex(req->sha256, sha, 32, "sha256", &err);
  if (st == KYSO_OK)
    reply_state(call, d, sha);
  else
    rpc_call_finish(call, st, err.msg, NULL, 0);
  kyso__v1__blob_ref__free_unpacked(req, NULL);
}

void kysod__peer_put_blob(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  archive_upload *up = NULL;
  uint8_t sha[32], got[32];
  uint64_t want_size = 0, size = 0;
  if ((st = archive_upload_begin(d->archive, &up, &err)) != KYSO_OK) goto out;
  for (size_t n = 0;; n++) {
    const uint8_t *data;
    size_t len;
    int end = 0;
    if ((st = rpc_call_read(call, &data, &len, &end, &err)) != KYSO_OK) goto out;
    if (end) {
      if (n == 0) st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "PutBlob carried no message");
      break;
    }
    Kyso__V1__BlobChunk *m = kyso__v1__blob_chunk__unpack(NULL, len, data);
    if (m == NULL) {
      st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "PutBlob message %zu is not a BlobChunk", n);
      goto out;
    }
    if (n == 0) {
      st = kyso_unhex(m->sha256, sha, 32, "sha256", &err);
      want_size = m->size;
    } else if (m->sha256[0] != '\0') {
      st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "only the first PutBlob message names the blob");
    }
    if (st == KYSO_OK && m->chunk.len > KYSO_CHUNK_SIZE)
      st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "PutBlob chunk %zu is %zu bytes, more than %d",
                     n, m->chunk.len, KYSO_CHUNK_SIZE);
    if (st == KYSO_OK) st = archive_upload_write(up, m->chunk.data, m->chunk.len, &err);
    kyso__v1__blob_chunk__free_unpacked(m, NULL);
    if (st != KYSO_OK) goto out;
  }
  if (st != KYSO_OK) goto out;
  st = archive_upload_finish(up, sha, got, &size, &err);
  up = NULL;
  if (st == KYSO_OK && size != want_size)
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "the blob has %llu bytes; the sender said %llu",
                   (unsigned long long)size, (unsigned long long)want_size);
out:
  archive_upload_abort(up);
  if (st == KYSO_OK) {
    reply_state(call, d, sha);
  } else {
    kyso_log(KYSO_LOG_WARN, "peer put-blob from %s refused: %s", rpc_call_peer(call)->principal,
             err.msg);
    rpc_call_finish(call, st, err.msg, NULL, 0);
  }
}

static kyso_status send_chunk(rpc_call *call, const Kyso__V1__BlobChunk *m, kyso_err *err) {
  size_t n = kyso__v1__blob_chunk__get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
  kyso__v1__blob_chunk__pack(m, buf);
  kyso_status st = rpc_call_write(call, buf, n, err);
  free(buf);
  return st;
}

void kysod__peer_get_blob(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  size_t len;
  uint8_t sha[32];
  uint64_t size = 0;
  archive_reader *r = NULL;
  const uint8_t *data = rpc_call_request(call, &len);
  Kyso__V1__BlobRef *req = kyso__v1__blob_ref__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.BlobRef");
    goto out;
  }
  if ((st = kyso_unhex(req->sha256, sha, 32, "sha256", &err)) != KYSO_OK) goto out;
  if ((st = archive_blob_size(d->archive, sha, &size, &err)) != KYSO_OK) goto out;
  if ((st = archive_reader_open(d->archive, sha, &r, &err)) != KYSO_OK) goto out;
  Kyso__V1__BlobChunk head = KYSO__V1__BLOB_CHUNK__INIT;
  head.sha256 = req->sha256;
  head.size = size;
  if ((st = send_chunk(call, &head, &err)) != KYSO_OK) goto out;
  for (;;) {
    const uint8_t *part;
    size_t n;
    if ((st = archive_reader_next(r, &part, &n, &err)) != KYSO_OK) goto out;
    if (n == 0) break;
    for (size_t off = 0; off < n; off += KYSO_CHUNK_SIZE) {
      Kyso__V1__BlobChunk m = KYSO__V1__BLOB_CHUNK__INIT;
      m.chunk.data = (uint8_t *)part + off;
      m.chunk.len = n - off < KYSO_CHUNK_SIZE ? n - off : KYSO_CHUNK_SIZE;
      if ((st = send_chunk(call, &m, &err)) != KYSO_OK) goto out;
    }
  }
  rpc_call_finish(call, KYSO_OK, "", NULL, 0);
out:
  if (st != KYSO_OK) rpc_call_finish(call, st, err.msg, NULL, 0);
  archive_reader_close(r);
  kyso__v1__blob_ref__free_unpacked(req, NULL);
}
