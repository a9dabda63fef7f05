/* kyso-bench — one call of each scenario: Signer.Sign, TimeStamp.Stamp,
 * Archive.Put, Archive.Get, Health.Check, over the kyso client library.
 * Every document is distinct (this run's random id and the call's number
 * in its first 16 bytes), so neither the archive's de-duplication nor
 * request replay flatters a figure. */
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "kyso/limits.h"
#include "kyso/signer.h"
#include "kyso/v1/archive.pb-c.h"
#include "kyso/v1/signer.pb-c.h"
#include "kyso/v1/timestamp.pb-c.h"
#include "load.h"

#define STAMP_LEN 16 /* run id (8) + call number (8, big-endian) */

struct load_ctx {
  const load_opts *o;
  uint8_t run_id[8];
  uint8_t *filler;    /* random: the whole inline document, or Put's first chunk */
  size_t filler_len;
  char (*ids)[65];    /* get: the documents put first */
  size_t nids;
};

struct load_slot {
  uint8_t *doc;       /* a copy of the filler, stamped per call */
  uint8_t *msg;       /* packed request */
  size_t msg_cap;
};

/* grpc_status_code names, by number. */
static const char *const grpc_names[] = {
    "OK",                "CANCELLED",          "UNKNOWN",
    "INVALID_ARGUMENT",  "DEADLINE_EXCEEDED",  "NOT_FOUND",
    "ALREADY_EXISTS",    "PERMISSION_DENIED",  "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED",          "OUT_OF_RANGE",
    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS",         "UNAUTHENTICATED"};

const char *load_err_name(int kind) {
  switch (kind) {
    case LOAD_ERR_CLIENT: return "CLIENT_ERROR";
    case LOAD_ERR_BAD_RESPONSE: return "BAD_RESPONSE";
    case LOAD_ERR_TSA_REJECTED: return "TSA_REJECTED";
    case LOAD_ERR_NOT_SERVING: return "NOT_SERVING";
    case LOAD_ERR_SHORT_READ: return "SHORT_READ";
    default: break;
  }
  if (kind >= 0 && (size_t)kind < sizeof(grpc_names) / sizeof(grpc_names[0]))
    return grpc_names[kind];
  return "UNKNOWN";
}

const char *load_hint(const load_opts *o, int kind) {
  switch (kind) {
    case 14:
      return "is kysod running at that address, and do --ca/--cert/--key (or [cli] of "
             "--config) match it?";
    case 16:
      return "kysod does not know this client certificate: add its SHA-256 fingerprint as "
             "a [caller.NAME] in kysod's config";
    case 7:
      return "give this client's [caller.NAME] in kysod's config the role the call needs "
             "(service to sign, archivist for the archive)";
    case 5:
      if (o->scenario == LOAD_SIGN)
        return "no such key, or no certificate imported for it: provision it (kyso keygen, "
               "kyso csr, kyso cert import) or name an existing one with --account/--seal; "
               "note --account-prefix P signs with accounts P0, P1 ...";
      return "";
    case 9:
      if (o->scenario == LOAD_STAMP || o->scenario == LOAD_SIGN)
        return "the node's TSA is not provisioned (kyso keygen --tsa default, csr, cert "
               "import) or its time-stamps are off; for sign, --format bes needs no TSA";
      return "";
    case 4:
      return "calls took longer than --timeout: lower --concurrency or --rate, or raise "
             "--timeout";
    case 8:
    case 3:
      return "the request is above one of the node's limits or not valid: check --size "
             "and the node's [archive] max_document";
    default:
      return "";
  }
}

static int fail(load_outcome *out, int kind, const char *fmt, ...) KYSO_PRINTF(3, 4);
static int fail(load_outcome *out, int kind, const char *fmt, ...) {
  va_list ap;
  out->kind = kind;
  va_start(ap, fmt);
  vsnprintf(out->message, sizeof(out->message), fmt, ap);
  va_end(ap);
  return kind;
}

/* A finished call's gRPC status into out; 1 if it failed. */
static int status_failed(const kyso_reply *reply, const char *what, load_outcome *out) {
  if (reply->grpc_status == 0) return 0;
  int kind = reply->grpc_status > 0 && reply->grpc_status <= 16 ? reply->grpc_status : 2;
  fail(out, kind, "%s: %s: %s", what, load_err_name(kind), reply->message);
  return 1;
}

/* s->msg holds at least n bytes; 0 when out of memory. */
static int msg_room(load_slot *s, size_t n) {
  if (n <= s->msg_cap) return 1;
  uint8_t *p = realloc(s->msg, n);
  if (p == NULL) return 0;
  s->msg = p;
  s->msg_cap = n;
  return 1;
}

static void stamp(const load_ctx *x, uint8_t *p, uint64_t seq) {
  memcpy(p, x->run_id, sizeof(x->run_id));
  for (int i = 0; i < 8; i++) p[8 + i] = (uint8_t)(seq >> (56 - 8 * i));
}

/* The slot's document, stamped for call seq; NULL when out of memory. */
static uint8_t *document(const load_ctx *x, load_slot *s, uint64_t seq) {
  if (s->doc == NULL) {
    if ((s->doc = malloc(x->filler_len)) == NULL) return NULL;
    memcpy(s->doc, x->filler, x->filler_len);
  }
  stamp(x, s->doc, seq);
  return s->doc;
}

/* One unary call with a packed protobuf-c request; reply is the caller's
 * to free. 0 when the call ended with status OK. */
static int unary(load_slot *s, kyso_client *c, const char *method, const ProtobufCMessage *req,
                 int64_t timeout_ms, kyso_reply *reply, load_outcome *out) {
  kyso_err err = {0};
  size_t n = protobuf_c_message_get_packed_size(req);
  if (!msg_room(s, n ? n : 1)) return fail(out, LOAD_ERR_CLIENT, "%s: out of memory", method);
  protobuf_c_message_pack(req, s->msg);
  if (kyso_client_call(c, method, s->msg, n, timeout_ms, reply, &err) != KYSO_OK)
    return fail(out, LOAD_ERR_CLIENT, "%s: %s", method, err.msg);
  if (status_failed(reply, method, out)) return out->kind;
  return 0;
}

static void call_sign(const load_ctx *x, load_slot *s, kyso_client *c, uint64_t seq,
                      load_outcome *out) {
  const load_opts *o = x->o;
  char account[300];
  kyso_reply reply = {0};
  Kyso__V1__KeyRef ref = KYSO__V1__KEY_REF__INIT;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  uint8_t *doc = document(x, s, seq);
  if (doc == NULL) {
    fail(out, LOAD_ERR_CLIENT, "sign: out of memory for a document of %zu bytes", o->size);
    return;
  }
  if (o->seal_unit != NULL) {
    ref.role = KYSO__V1__KEY_ROLE__KEY_ROLE_SEAL;
    ref.unit = (char *)o->seal_unit;
  } else {
    ref.role = KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL;
    if (o->account != NULL)
      snprintf(account, sizeof(account), "%s", o->account);
    else
      snprintf(account, sizeof(account), "%s%llu", o->account_prefix,
               (unsigned long long)(seq % o->keys));
    ref.account = account;
  }
  req.document.data = doc;
  req.document.len = o->size;
  req.key = &ref;
  req.format = (Kyso__V1__SignatureFormat)o->format;
  req.metadata = &meta;
  req.skip_archive = o->skip_archive;
  /* The signature is not checked here (that costs the bench's CPU, which
   * the node shares): an OK with some response is a signature. */
  if (unary(s, c, "/kyso.v1.Signer/Sign", &req.base, o->timeout_ms, &reply, out) == 0) {
    if (reply.len == 0)
      fail(out, LOAD_ERR_BAD_RESPONSE, "sign: status OK but no SignResponse");
    else
      out->bytes = o->size;
  }
  kyso_reply_free(&reply);
}

static void call_stamp(const load_ctx *x, load_slot *s, kyso_client *c, uint64_t seq,
                       load_outcome *out) {
  uint8_t data[STAMP_LEN], digest[SHA256_DIGEST_LENGTH], *query = NULL;
  size_t query_len = 0;
  uint64_t nonce = 0;
  kyso_err err = {0};
  kyso_reply reply = {0};
  Kyso__V1__StampRequest req = KYSO__V1__STAMP_REQUEST__INIT;
  Kyso__V1__StampResponse *resp = NULL;
  stamp(x, data, seq);
  SHA256(data, sizeof(data), digest);
  if (signer_ts_query(digest, &nonce, &query, &query_len, &err) != KYSO_OK) {
    fail(out, LOAD_ERR_CLIENT, "stamp: %s", err.msg);
    goto out;
  }
  req.query.data = query;
  req.query.len = query_len;
  if (unary(s, c, "/kyso.v1.TimeStamp/Stamp", &req.base, x->o->timeout_ms, &reply, out) != 0)
    goto out;
  resp = kyso__v1__stamp_response__unpack(NULL, reply.len, reply.data);
  if (resp == NULL)
    fail(out, LOAD_ERR_BAD_RESPONSE, "stamp: the response does not parse");
  else if (resp->status > 1) /* granted (0) or grantedWithMods (1) */
    fail(out, LOAD_ERR_TSA_REJECTED, "stamp: the TSA refused: status %u, failure bits 0x%x: %s",
         resp->status, resp->failure_info, resp->status_text);
out:
  if (resp != NULL) kyso__v1__stamp_response__free_unpacked(resp, NULL);
  OPENSSL_free(query);
  kyso_reply_free(&reply);
}

static void call_health(load_slot *s, kyso_client *c, int64_t timeout_ms, load_outcome *out) {
  kyso_reply reply = {0};
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  if (unary(s, c, "/grpc.health.v1.Health/Check", &req.base, timeout_ms, &reply, out) != 0)
    goto out;
  resp = grpc__health__v1__health_check_response__unpack(NULL, reply.len, reply.data);
  if (resp == NULL)
    fail(out, LOAD_ERR_BAD_RESPONSE, "health: the response does not parse");
  else if (resp->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
    fail(out, LOAD_ERR_NOT_SERVING, "health: the node answers NOT_SERVING (status %d)",
         (int)resp->status);
out:
  if (resp != NULL) grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
  kyso_reply_free(&reply);
}

/* Streams document seq (o->size bytes) to Archive.Put in chunks of
 * KYSO_CHUNK_SIZE: the first from the slot's stamped copy, the others from
 * the shared filler. id (65 bytes, may be NULL) receives its archive id. */
static void put_doc(const load_ctx *x, load_slot *s, kyso_client *c, uint64_t seq, char *id,
                    load_outcome *out) {
  const load_opts *o = x->o;
  kyso_err err = {0};
  kyso_stream *st = NULL;
  kyso_reply reply = {0};
  uint8_t *resp = NULL;
  size_t resp_len = 0, sent = 0;
  int end = 0;
  Kyso__V1__DocumentInfo *info = NULL;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
  uint8_t *doc = document(x, s, seq);
  if (doc == NULL || !msg_room(s, KYSO_CHUNK_SIZE + 1024)) {
    fail(out, LOAD_ERR_CLIENT, "put: out of memory");
    goto out;
  }
  hdr.metadata = &meta;
  if (kyso_stream_open(c, "/kyso.v1.Archive/Put", o->timeout_ms, &st, &err) != KYSO_OK) {
    fail(out, LOAD_ERR_CLIENT, "put: %s", err.msg);
    goto out;
  }
  do {
    Kyso__V1__PutRequest m = KYSO__V1__PUT_REQUEST__INIT;
    size_t n = o->size - sent < KYSO_CHUNK_SIZE ? o->size - sent : KYSO_CHUNK_SIZE;
    if (sent == 0) m.header = &hdr;
    m.chunk.data = sent == 0 ? doc : x->filler;
    m.chunk.len = n;
    size_t len = kyso__v1__put_request__pack(&m, s->msg);
    /* A refused send means the node ended the call: its status says why. */
    if (kyso_stream_send(st, s->msg, len, &err) != KYSO_OK) break;
    sent += n;
  } while (sent < o->size);
  if (kyso_stream_close_send(st, &err) == KYSO_OK &&
      kyso_stream_recv(st, &resp, &resp_len, &end, &err) != KYSO_OK)
    resp_len = 0;
  kyso_status fst = kyso_stream_finish(st, &reply, &err);
  st = NULL;
  if (fst != KYSO_OK) {
    fail(out, LOAD_ERR_CLIENT, "put: %s", err.msg);
    goto out;
  }
  if (status_failed(&reply, "/kyso.v1.Archive/Put", out)) goto out;
  info = kyso__v1__document_info__unpack(NULL, resp_len, resp);
  if (info == NULL || info->size != o->size || strlen(info->id) != 64) {
    fail(out, LOAD_ERR_BAD_RESPONSE, "put: the response is not the DocumentInfo of %zu bytes",
         o->size);
    goto out;
  }
  if (id != NULL) memcpy(id, info->id, 65);
  out->bytes = o->size;
out:
  kyso_stream_cancel(st);
  if (info != NULL) kyso__v1__document_info__free_unpacked(info, NULL);
  free(resp);
  kyso_reply_free(&reply);
}

static void call_get(const load_ctx *x, load_slot *s, kyso_client *c, uint64_t seq,
                     load_outcome *out) {
  const char *id = x->ids[seq % x->nids];
  kyso_err err = {0};
  kyso_stream *st = NULL;
  kyso_reply reply = {0};
  uint64_t got = 0, want = UINT64_MAX;
  Kyso__V1__GetRequest req = KYSO__V1__GET_REQUEST__INIT;
  req.id = (char *)id;
  size_t len = kyso__v1__get_request__get_packed_size(&req);
  if (!msg_room(s, len)) {
    fail(out, LOAD_ERR_CLIENT, "get: out of memory");
    goto out;
  }
  kyso__v1__get_request__pack(&req, s->msg);
  if (kyso_stream_open(c, "/kyso.v1.Archive/Get", x->o->timeout_ms, &st, &err) != KYSO_OK) {
    fail(out, LOAD_ERR_CLIENT, "get: %s", err.msg);
    goto out;
  }
  /* Refusals show in the status that kyso_stream_finish collects. */
  if (kyso_stream_send(st, s->msg, len, &err) == KYSO_OK &&
      kyso_stream_close_send(st, &err) == KYSO_OK) {
    for (;;) {
      uint8_t *data = NULL;
      size_t n = 0;
      int end = 0;
      if (kyso_stream_recv(st, &data, &n, &end, &err) != KYSO_OK || end) break;
      Kyso__V1__GetResponse *m = kyso__v1__get_response__unpack(NULL, n, data);
      free(data);
      if (m == NULL) break; /* counted as a short read below */
      if (m->info != NULL) want = m->info->size;
      got += m->chunk.len;
      kyso__v1__get_response__free_unpacked(m, NULL);
    }
  }
  kyso_status fst = kyso_stream_finish(st, &reply, &err);
  st = NULL;
  if (fst != KYSO_OK) {
    fail(out, LOAD_ERR_CLIENT, "get: %s", err.msg);
    goto out;
  }
  if (status_failed(&reply, "/kyso.v1.Archive/Get", out)) goto out;
  if (want == UINT64_MAX) {
    fail(out, LOAD_ERR_BAD_RESPONSE, "get %s: status OK, but no DocumentInfo came first", id);
    goto out;
  }
  if (got != want) {
    fail(out, LOAD_ERR_SHORT_READ, "get %s: %llu bytes received, the document has %llu", id,
         (unsigned long long)got, (unsigned long long)want);
    goto out;
  }
  out->bytes = got;
out:
  kyso_stream_cancel(st);
  kyso_reply_free(&reply);
}

void load_call(const load_ctx *x, load_slot *s, kyso_client *c, uint64_t seq,
               load_outcome *out) {
  out->kind = LOAD_OK;
  out->bytes = 0;
  out->message[0] = '\0';
  switch (x->o->scenario) {
    case LOAD_SIGN: call_sign(x, s, c, seq, out); break;
    case LOAD_STAMP: call_stamp(x, s, c, seq, out); break;
    case LOAD_PUT: put_doc(x, s, c, seq, NULL, out); break;
    case LOAD_GET: call_get(x, s, c, seq, out); break;
    case LOAD_HEALTH: call_health(s, c, x->o->timeout_ms, out); break;
  }
}

load_slot *load_slot_new(void) { return calloc(1, sizeof(load_slot)); }

void load_slot_free(load_slot *s) {
  if (s == NULL) return;
  free(s->doc);
  free(s->msg);
  free(s);
}

kyso_status load_ctx_open(const load_opts *o, kyso_client *c, load_ctx **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  load_ctx *x = calloc(1, sizeof(*x));
  load_slot *s = load_slot_new();
  *out = NULL;
  if (x == NULL || s == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  x->o = o;
  /* Sign sends the whole document inline; Put and Get need one chunk. */
  x->filler_len = o->scenario == LOAD_SIGN || o->size < KYSO_CHUNK_SIZE ? o->size
                                                                         : KYSO_CHUNK_SIZE;
  if (x->filler_len < STAMP_LEN) x->filler_len = STAMP_LEN;
  if ((x->filler = malloc(x->filler_len)) == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for %zu bytes", x->filler_len);
    goto out;
  }
  /* Random, so that no compression on the way or on disk flatters a figure. */
  if (RAND_bytes(x->run_id, sizeof(x->run_id)) != 1 ||
      RAND_bytes(x->filler, (int)x->filler_len) != 1) {
    st = kyso_fail(err, KYSO_INTERNAL, "OpenSSL gives no random bytes for the documents");
    goto out;
  }
  if (o->scenario == LOAD_GET) {
    if ((x->ids = calloc(o->get_docs, sizeof(*x->ids))) == NULL) {
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for %u ids", o->get_docs);
      goto out;
    }
    if (!o->quiet)
      fprintf(stderr, "kyso-bench: putting %u documents of %zu bytes for get\n", o->get_docs,
              o->size);
    for (x->nids = 0; x->nids < o->get_docs; x->nids++) {
      load_outcome po = {0};
      put_doc(x, s, c, x->nids, x->ids[x->nids], &po);
      if (po.kind != LOAD_OK) {
        const char *hint = load_hint(o, po.kind);
        st = kyso_fail(err, KYSO_UNAVAILABLE, "putting document %zu of %u for get failed: %s%s%s",
                       x->nids + 1, o->get_docs, po.message, hint[0] ? "\n  " : "", hint);
        goto out;
      }
    }
  }
  *out = x;
  x = NULL;
out:
  load_slot_free(s);
  load_ctx_close(x);
  return st;
}

void load_ctx_close(load_ctx *x) {
  if (x == NULL) return;
  free(x->filler);
  free(x->ids);
  free(x);
}
