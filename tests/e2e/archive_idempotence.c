/* e2e_archive_idempotence: the same bytes put twice are one blob (same id,
 * the same DocumentInfo, the archive does not grow by the document again,
 * one entry in the unit's listing); the same request id signed twice is one
 * signature and one record (the second answer has replayed=true, the same
 * CMS bytes and signature_id; Stat shows one signature), also after kysod
 * restarts and after a kill -9. A new request id over the same document is
 * a second signature in the chain (order 2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"

#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define ACCOUNT "idem.ec"
#define UNIT "H37.ID.001"
#define PUT_SIZE (3 * 1024 * 1024 + 12345)
#define SIGN_SIZE (40 * 1024)

static e2e *E;
static char archive_dir[512];
static char put_id[65];
/* The first answer to request "idem-sign-1". */
static Kyso__V1__SignResponse *first;

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  snprintf(archive_dir, sizeof(archive_dir), "%s", e2e_path(E, "data/archive"));
  return 0;
}

static void start_and_provision(void **state) {
  (void)state;
  e2e_start(E, NULL);
  e2e_provision_key(E, PERSONAL, ACCOUNT, KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
}

static uint8_t *packed(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(*len ? *len : 1);
  protobuf_c_message_pack(m, b);
  return b;
}

static int put(const uint8_t *doc, size_t len, const char *request_id,
               Kyso__V1__DocumentInfo **info) {
  Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  char msg[512];
  meta.unit = UNIT;
  meta.number_notation = "12/BC-ID";
  meta.title = "Báo cáo gửi hai lần";
  meta.issue_date = "2024-10-10";
  hdr.metadata = &meta;
  hdr.request_id = (char *)request_id;
  int st = e2e_put_with(E->clients[E2E_DMS], &hdr, doc, len, NULL, 60000, info, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Archive.Put (%s): got status %d (%s), want OK", request_id, st, msg);
  return st;
}

/* Documents of UNIT, all pages. */
static size_t unit_count(const char *id, size_t *with_id) {
  Kyso__V1__ListRequest req = KYSO__V1__LIST_REQUEST__INIT;
  char token[600] = "", msg[512];
  size_t total = 0;
  *with_id = 0;
  req.by_case = KYSO__V1__LIST_REQUEST__BY_UNIT;
  req.unit = UNIT;
  do {
    Kyso__V1__ListResponse *resp = NULL;
    req.page_token = token;
    int st = e2e_call(E, E2E_ARCH, "/kyso.v1.Archive/List", &req.base,
                      &kyso__v1__list_response__descriptor, 30000, (ProtobufCMessage **)&resp,
                      msg, sizeof(msg));
    if (st != 0) E2E_FAIL("Archive.List of %s: got %d (%s), want OK", UNIT, st, msg);
    for (size_t i = 0; i < resp->n_documents; i++)
      *with_id += strcmp(resp->documents[i]->id, id) == 0;
    total += resp->n_documents;
    snprintf(token, sizeof(token), "%s", resp->next_page_token);
    kyso__v1__list_response__free_unpacked(resp, NULL);
  } while (token[0]);
  return total;
}

static void same_bytes_put_twice(void **state) {
  (void)state;
  uint8_t *doc = malloc(PUT_SIZE);
  e2e_fill(doc, PUT_SIZE, 77, 0);
  char want[65];
  e2e_sha256_hex(doc, PUT_SIZE, want);
  Kyso__V1__DocumentInfo *a = NULL, *b = NULL;
  uint64_t size0 = e2e_dir_bytes(archive_dir);
  put(doc, PUT_SIZE, "idem-put-1", &a);
  uint64_t size1 = e2e_dir_bytes(archive_dir);
  put(doc, PUT_SIZE, "idem-put-2", &b);
  uint64_t size2 = e2e_dir_bytes(archive_dir);
  free(doc);
  fprintf(stderr, "e2e: archive directory: %llu -> %llu bytes after the first Put of %d bytes, "
                  "-> %llu after the second\n", (unsigned long long)size0,
          (unsigned long long)size1, PUT_SIZE, (unsigned long long)size2);
  E2E_STREQ("first Put id", a->id, want);
  E2E_STREQ("second Put id", b->id, want);
  snprintf(put_id, sizeof(put_id), "%s", a->id);
  /* One blob, one record: the second Put answers the first's record. */
  size_t la, lb;
  uint8_t *pa = packed(&a->base, &la), *pb = packed(&b->base, &lb);
  int same = la == lb && memcmp(pa, pb, la) == 0;
  if (!same)
    E2E_FAIL("the second Put's DocumentInfo differs from the first's (created %s vs %s, size "
             "%llu vs %llu): the same bytes must be one document", a->created, b->created,
             (unsigned long long)a->size, (unsigned long long)b->size);
  free(pa);
  free(pb);
  kyso__v1__document_info__free_unpacked(a, NULL);
  kyso__v1__document_info__free_unpacked(b, NULL);
  /* The document's bytes went to disk once (log and blob), not twice. */
  if (size1 < size0 + PUT_SIZE)
    E2E_FAIL("the first Put grew the archive by %llu bytes, less than the document's %d",
             (unsigned long long)(size1 - size0), PUT_SIZE);
  if (size2 > size1 + PUT_SIZE / 4)
    E2E_FAIL("the second Put of the same bytes grew the archive by %llu bytes, want well under "
             "the document's %d: stored twice?", (unsigned long long)(size2 - size1), PUT_SIZE);
  size_t with_id = 0, total = unit_count(put_id, &with_id);
  E2E_EQ("documents of the unit", total, 1);
  E2E_EQ("listing entries of the document put twice", with_id, 1);
}

static int sign(const char *request_id, uint64_t seed, Kyso__V1__SignResponse **resp) {
  uint8_t *doc = malloc(SIGN_SIZE);
  char msg[512];
  e2e_fill(doc, SIGN_SIZE, seed, 0);
  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  e2e_key_ref(&ref, PERSONAL, ACCOUNT);
  meta.unit = "H37.ID.002";
  meta.issue_date = "2024-10-11";
  req.key = &ref;
  req.metadata = &meta;
  req.document.data = doc;
  req.document.len = SIGN_SIZE;
  req.request_id = (char *)request_id;
  int st = e2e_sign_with(E->clients[E2E_DMS], &req, 30000, resp, msg, sizeof(msg));
  free(doc);
  if (st != 0) E2E_FAIL("Sign %s: got status %d (%s), want OK", request_id, st, msg);
  return st;
}

/* A replay is the first answer, unchanged, with replayed set. */
static void check_replay(const char *when, const Kyso__V1__SignResponse *r) {
  if (!r->replayed) E2E_FAIL("%s: got replayed=false, want true", when);
  if (first->replayed) E2E_FAIL("the first answer has replayed=true");
  if (r->signature.len != first->signature.len ||
      memcmp(r->signature.data, first->signature.data, r->signature.len) != 0)
    E2E_FAIL("%s: the CMS bytes differ from the first answer's (%zu vs %zu bytes)", when,
             r->signature.len, first->signature.len);
  E2E_STREQ("replayed signature_id", r->signature_id, first->signature_id);
  E2E_STREQ("replayed archive_id", r->archive_id, first->archive_id);
  E2E_STREQ("replayed signing_time", r->signing_time, first->signing_time);
  E2E_STREQ("replayed key_label", r->key_label, first->key_label);
  E2E_STREQ("replayed request_id", r->request_id, first->request_id);
  E2E_EQ("replayed signature_order", r->signature_order, first->signature_order);
  if (r->certificate.len != first->certificate.len ||
      memcmp(r->certificate.data, first->certificate.data, r->certificate.len) != 0)
    E2E_FAIL("%s: the certificate differs from the first answer's", when);
}

static size_t signatures_of(const char *id) {
  Kyso__V1__DocumentInfo *info = NULL;
  char msg[512];
  int st = e2e_stat_with(E->clients[E2E_ARCH], id, 0, 30000, &info, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Archive.Stat %s: got %d (%s), want OK", id, st, msg);
  size_t n = info->n_signatures;
  kyso__v1__document_info__free_unpacked(info, NULL);
  return n;
}

static void same_request_signed_twice(void **state) {
  (void)state;
  Kyso__V1__SignResponse *again = NULL;
  sign("idem-sign-1", 88, &first);
  E2E_EQ("first answer's signature_order", first->signature_order, 1);
  sign("idem-sign-1", 88, &again);
  check_replay("second Sign with the same request id", again);
  kyso__v1__sign_response__free_unpacked(again, NULL);
  E2E_EQ("signatures after the same request twice", signatures_of(first->archive_id), 1);
}

static void replay_after_restart(void **state) {
  (void)state;
  Kyso__V1__SignResponse *again = NULL;
  e2e_stop(E);
  e2e_start(E, NULL);
  sign("idem-sign-1", 88, &again);
  check_replay("the same request id after a clean restart", again);
  kyso__v1__sign_response__free_unpacked(again, NULL);
  e2e_kill9(E);
  e2e_start(E, NULL);
  sign("idem-sign-1", 88, &again);
  check_replay("the same request id after kill -9 and restart", again);
  kyso__v1__sign_response__free_unpacked(again, NULL);
  E2E_EQ("signatures after four tries of one request", signatures_of(first->archive_id), 1);

  /* A new request id over the same document: a second signature, order 2. */
  sign("idem-sign-2", 88, &again);
  if (again->replayed) E2E_FAIL("a new request id was answered as a replay");
  E2E_EQ("second signature's order", again->signature_order, 2);
  if (strcmp(again->signature_id, first->signature_id) == 0)
    E2E_FAIL("a new request id got the first request's signature_id");
  E2E_STREQ("archive_id of the second signature", again->archive_id, first->archive_id);
  kyso__v1__sign_response__free_unpacked(again, NULL);
  E2E_EQ("signatures after two request ids", signatures_of(first->archive_id), 2);
}

static void stop_clean(void **state) {
  (void)state;
  e2e_stop(E);
}

static int teardown(void **state) {
  (void)state;
  kyso__v1__sign_response__free_unpacked(first, NULL);
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_and_provision),
      cmocka_unit_test(same_bytes_put_twice),
      cmocka_unit_test(same_request_signed_twice),
      cmocka_unit_test(replay_after_restart),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_archive_idempotence", tests, setup, teardown);
}
