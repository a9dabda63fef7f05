/* Commands: records, signature chains, idempotency, refusals, the audit hook. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/util.h"
#include "testutil.h"

#define T0 1714550400000LL /* 2024-05-01T08:00:00Z */

typedef struct fixture {
  char *dir;
  archive *a;
  uint8_t *doc;
  size_t doc_len;
  uint8_t id[32];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  kyso_err err = {0};
  f->dir = tu_tmpdir();
  f->a = tu_open(f->dir, NULL);
  f->doc_len = 12345;
  f->doc = tu_bytes(f->doc_len, 1);
  assert_int_equal(archive_put_blob(f->a, f->doc, f->doc_len, f->id, &err), KYSO_OK);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  archive_close(f->a);
  tu_rmrf(f->dir);
  free(f->dir);
  free(f->doc);
  free(f);
  return 0;
}

static tu_doc doc_of(fixture *f) {
  tu_doc d = {.sha256 = f->id,
              .size = f->doc_len,
              .unit = "H37.DN.001",
              .issue_date = "2024-04-30",
              .number = "123/UBND-VP",
              .account = "nguyen.van.a"};
  return d;
}

static void test_record_document(void **state) {
  fixture *f = *state;
  tu_doc d = doc_of(f);
  size_t n;
  uint8_t *cmd = tu_cmd_document("dms", "put-1", &d, T0, &n);
  archive__result *r = tu_submit_ok(f->a, cmd, n, NULL, 0);
  assert_int_equal(r->document_sha256.len, 32);
  assert_memory_equal(r->document_sha256.data, f->id, 32);
  assert_int_equal(r->signature_id.len, 0);
  assert_false(r->replayed);
  tu_result_free(r);
  Kyso__Store__V1__DocumentRecord *rec = tu_document(f->a, f->id);
  assert_int_equal(rec->size, f->doc_len);
  assert_string_equal(rec->metadata->unit, "H37.DN.001");
  assert_string_equal(rec->metadata->number_notation, "123/UBND-VP");
  assert_string_equal(rec->index_date, "2024-04-30");
  assert_int_equal(rec->created_unix_ms, T0);
  assert_int_equal(rec->n_signature_ids, 0);
  kyso__store__v1__document_record__free_unpacked(rec, NULL);
  /* unit, number and account index entries */
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_INDEXES, NULL, 0), 3);
  /* the retry replays; find_request has the first result */
  r = tu_submit_ok(f->a, cmd, n, NULL, 0);
  assert_true(r->replayed);
  tu_result_free(r);
  uint8_t *v = NULL;
  size_t vl = 0;
  kyso_err err = {0};
  assert_int_equal(archive_find_request(f->a, "dms", "put-1", &v, &vl, &err), KYSO_OK);
  r = kyso__store__v1__command_result__unpack(NULL, vl, v);
  assert_memory_equal(r->document_sha256.data, f->id, 32);
  tu_result_free(r);
  free(v);
  assert_int_equal(archive_find_request(f->a, "dms", "put-2", &v, &vl, &err), KYSO_NOT_FOUND);
  assert_int_equal(archive_find_request(f->a, "other", "put-1", &v, &vl, &err), KYSO_NOT_FOUND);
  free(cmd);
}

/* The same request id twice: one signature, one record, the first result. */
static void test_signing_idempotent(void **state) {
  fixture *f = *state;
  tu_doc d = doc_of(f);
  size_t n1, n2;
  uint8_t *c1 = tu_cmd_signing("dms", "req-1", &d, "nguyen.van.a", "CMS #1", T0, &n1);
  /* the retry signed again (new CMS, new time): it must not be recorded */
  uint8_t *c2 = tu_cmd_signing("dms", "req-1", &d, "nguyen.van.a", "CMS #1 retried", T0 + 5, &n2);
  archive__result *r1 = tu_submit_ok(f->a, c1, n1, NULL, 0);
  archive__result *r2 = tu_submit_ok(f->a, c2, n2, NULL, 0);
  assert_false(r1->replayed);
  assert_true(r2->replayed);
  assert_int_equal(r1->signature_order, 1);
  assert_int_equal(r2->signature_order, 1);
  assert_memory_equal(r1->signature_id.data, r2->signature_id.data, 32);
  uint8_t want[32];
  tu_sha256("CMS #1", 6, want);
  assert_memory_equal(r1->signature_id.data, want, 32);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_SIGNATURES, NULL, 0), 1);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_DOCUMENTS, NULL, 0), 1);
  Kyso__Store__V1__DocumentRecord *rec = tu_document(f->a, f->id);
  assert_int_equal(rec->n_signature_ids, 1);
  kyso__store__v1__document_record__free_unpacked(rec, NULL);
  archive_stats st;
  archive_get_stats(f->a, &st);
  assert_int_equal(st.replayed, 1);
  /* the same CMS again without a request id: recorded once */
  size_t n3;
  uint8_t *c3 = tu_cmd_signing("dms", NULL, &d, "nguyen.van.a", "CMS #1", T0 + 9, &n3);
  archive__result *r3 = tu_submit_ok(f->a, c3, n3, NULL, 0);
  assert_true(r3->replayed);
  assert_int_equal(r3->signature_order, 1);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_SIGNATURES, NULL, 0), 1);
  tu_result_free(r1);
  tu_result_free(r2);
  tu_result_free(r3);
  free(c1);
  free(c2);
  free(c3);
}

/* An official's signature, then the unit seal: orders 1 and 2, chain in order. */
static void test_chain_order(void **state) {
  fixture *f = *state;
  tu_doc d = doc_of(f);
  size_t n1, n2;
  uint8_t *c1 = tu_cmd_signing("dms", "sign-official", &d, "nguyen.van.a", "CMS official", T0, &n1);
  uint8_t *c2 = tu_cmd_signing("clerk", "sign-seal", &d, "van.thu", "CMS seal", T0 + 60000, &n2);
  archive__result *r1 = tu_submit_ok(f->a, c1, n1, NULL, 0);
  archive__result *r2 = tu_submit_ok(f->a, c2, n2, NULL, 0);
  assert_int_equal(r1->signature_order, 1);
  assert_int_equal(r2->signature_order, 2);
  Kyso__Store__V1__DocumentRecord *rec = tu_document(f->a, f->id);
  assert_int_equal(rec->n_signature_ids, 2);
  assert_memory_equal(rec->signature_ids[0].data, r1->signature_id.data, 32);
  assert_memory_equal(rec->signature_ids[1].data, r2->signature_id.data, 32);
  assert_int_equal(rec->updated_unix_ms, T0 + 60000);
  kyso__store__v1__document_record__free_unpacked(rec, NULL);
  uint8_t *v = NULL, *der = NULL;
  size_t vl = 0, dl = 0;
  kyso_err err = {0};
  assert_int_equal(archive_get_signature(f->a, r2->signature_id.data, &v, &vl, &err), KYSO_OK);
  Kyso__Store__V1__SignatureRecord *s = kyso__store__v1__signature_record__unpack(NULL, vl, v);
  assert_int_equal(s->order, 2);
  assert_string_equal(s->account, "van.thu");
  assert_string_equal(s->principal, "clerk");
  assert_string_equal(s->request_id, "sign-seal");
  assert_int_equal(archive_get_certificate(f->a, s->certificate_sha256.data, &der, &dl, &err),
                   KYSO_OK);
  assert_memory_equal(der, "fake DER: certificate of van.thu", dl);
  kyso__store__v1__signature_record__free_unpacked(s, NULL);
  free(v);
  free(der);
  /* two signer certificates and the shared CA, once */
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_CERTIFICATES, NULL, 0), 3);
  /* both signers' accounts list the document */
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_INDEXES, "a", 1), 2);
  tu_result_free(r1);
  tu_result_free(r2);
  free(c1);
  free(c2);
}

/* A request id reused for something else is refused, naming both. */
static void test_request_id_reuse(void **state) {
  fixture *f = *state;
  tu_doc d = doc_of(f);
  uint8_t id2[32];
  kyso_err err = {0};
  uint8_t *other = tu_bytes(999, 2);
  assert_int_equal(archive_put_blob(f->a, other, 999, id2, &err), KYSO_OK);
  tu_doc d2 = {.sha256 = id2, .size = 999};
  size_t n1, n2, n3;
  uint8_t *c1 = tu_cmd_signing("dms", "r", &d, "a1", "CMS A", T0, &n1);
  uint8_t *c2 = tu_cmd_signing("dms", "r", &d2, "a1", "CMS B", T0, &n2);
  uint8_t *c3 = tu_cmd_document("dms", "r", &d, T0, &n3);
  tu_result_free(tu_submit_ok(f->a, c1, n1, NULL, 0));
  char hex[65];
  kyso_hex(id2, 32, hex);
  const char *msg = tu_submit_fails(f->a, c2, n2, NULL, 0, KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(msg, hex));
  tu_submit_fails(f->a, c3, n3, NULL, 0, KYSO_FAILED_PRECONDITION);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_SIGNATURES, NULL, 0), 1);
  free(other);
  free(c1);
  free(c2);
  free(c3);
}

/* An inline document rides in the command's batch; a wrong one stores nothing. */
static void test_inline_blob(void **state) {
  fixture *f = *state;
  uint8_t *doc = tu_bytes(3 * KYSO_CHUNK_SIZE / 2, 5), id[32];
  size_t len = 3 * KYSO_CHUNK_SIZE / 2, n;
  tu_sha256(doc, len, id);
  tu_doc d = {.sha256 = id, .size = len, .unit = "H37.DN.002"};
  uint8_t *cmd = tu_cmd_signing("dms", "inline-1", &d, "a2", "CMS inline", T0, &n);
  /* not stored and not sent: the precondition names the document */
  tu_submit_fails(f->a, cmd, n, NULL, 0, KYSO_FAILED_PRECONDITION);
  /* sent, but other bytes */
  doc[0] ^= 1;
  tu_submit_fails(f->a, cmd, n, doc, len, KYSO_INVALID_ARGUMENT);
  doc[0] ^= 1;
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_MANIFESTS, id, 32), 0);
  archive__result *r = tu_submit_ok(f->a, cmd, n, doc, len);
  assert_int_equal(r->signature_order, 1);
  tu_result_free(r);
  uint8_t *back = NULL;
  size_t back_len = 0;
  kyso_err err = {0};
  assert_int_equal(tu_read_all(f->a, id, &back, &back_len, &err), KYSO_OK);
  assert_int_equal(back_len, len);
  assert_memory_equal(back, doc, len);
  free(back);
  /* the size in the command must be the stored size */
  tu_doc wrong = {.sha256 = f->id, .size = f->doc_len + 1};
  uint8_t *c2 = tu_cmd_document("dms", NULL, &wrong, T0, &n);
  tu_submit_fails(f->a, c2, n, NULL, 0, KYSO_INVALID_ARGUMENT);
  free(c2);
  free(cmd);
  free(doc);
}

static void test_refusals(void **state) {
  fixture *f = *state;
  tu_doc d = doc_of(f);
  size_t n;
  tu_submit_fails(f->a, (const uint8_t *)"\xff\xff\xff", 3, NULL, 0, KYSO_INVALID_ARGUMENT);
  uint8_t *cmd = tu_cmd_document(NULL, NULL, &d, T0, &n); /* no principal */
  tu_submit_fails(f->a, cmd, n, NULL, 0, KYSO_INVALID_ARGUMENT);
  free(cmd);
  d.issue_date = "30/04/2024";
  cmd = tu_cmd_document("dms", NULL, &d, T0, &n);
  assert_non_null(
      strstr(tu_submit_fails(f->a, cmd, n, NULL, 0, KYSO_INVALID_ARGUMENT), "issue_date"));
  free(cmd);
  d.issue_date = NULL;
  cmd = tu_cmd_document("dms", NULL, &d, 0, &n); /* no time */
  tu_submit_fails(f->a, cmd, n, NULL, 0, KYSO_INVALID_ARGUMENT);
  free(cmd);
  /* a future command version is not applied */
  Kyso__Store__V1__Command c = KYSO__STORE__V1__COMMAND__INIT;
  c.version = ARCHIVE__COMMAND_VERSION + 1;
  c.time_unix_ms = T0;
  c.principal = "dms";
  uint8_t buf[64];
  n = kyso__store__v1__command__pack(&c, buf);
  tu_submit_fails(f->a, buf, n, NULL, 0, KYSO_FAILED_PRECONDITION);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_DOCUMENTS, NULL, 0), 0);
  archive_stats st;
  archive_get_stats(f->a, &st);
  assert_int_equal(st.commands, 0);
  assert_int_equal(st.failed, 5);
}

/* Metadata is filled in where empty, never overwritten; the unit index
 * follows when the unit becomes known. */
static void test_metadata_fill(void **state) {
  fixture *f = *state;
  tu_doc bare = {.sha256 = f->id, .size = f->doc_len};
  tu_doc full = doc_of(f);
  tu_doc other = doc_of(f);
  other.unit = "OTHER.UNIT";
  size_t n;
  uint8_t *c1 = tu_cmd_document("dms", NULL, &bare, T0, &n);
  tu_result_free(tu_submit_ok(f->a, c1, n, NULL, 0));
  free(c1);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_INDEXES, NULL, 0), 0);
  c1 = tu_cmd_signing("dms", NULL, &full, "nguyen.van.a", "CMS fill", T0 + 1, &n);
  tu_result_free(tu_submit_ok(f->a, c1, n, NULL, 0));
  free(c1);
  c1 = tu_cmd_signing("dms", NULL, &other, "x", "CMS other", T0 + 2, &n);
  tu_result_free(tu_submit_ok(f->a, c1, n, NULL, 0));
  free(c1);
  Kyso__Store__V1__DocumentRecord *rec = tu_document(f->a, f->id);
  assert_string_equal(rec->metadata->unit, "H37.DN.001");
  assert_string_equal(rec->account, "nguyen.van.a");
  /* created without an issue date: listed under the UTC day it was recorded */
  assert_string_equal(rec->index_date, "2024-05-01");
  kyso__store__v1__document_record__free_unpacked(rec, NULL);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_INDEXES, "u", 1), 1);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_INDEXES, "n", 1), 1);
}

static int audit_calls;
static kyso_status audit(void *ctx, archive *a, rocksdb_writebatch_wi_t *wb,
                         const archive__command *c, const archive__result *res, kyso_err *err) {
  (void)ctx;
  char key[32];
  int n = snprintf(key, sizeof(key), "audit/%d", ++audit_calls);
  rocksdb_writebatch_wi_put_cf(wb, a->cf[ARCHIVE__CF_DEFAULT], key, (size_t)n, c->request_id,
                               strlen(c->request_id));
  if (strcmp(c->request_id, "refuse") == 0)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION, "audit log refused");
  return KYSO_OK;
}

/* The audit hook runs once per change, in the command's batch; when it
 * fails the command leaves nothing behind. */
static void test_audit_hook(void **state) {
  fixture *f = *state;
  tu_doc d = doc_of(f);
  size_t n;
  archive__set_audit(f->a, audit, NULL);
  audit_calls = 0;
  uint8_t *c1 = tu_cmd_signing("dms", "audited", &d, "a", "CMS audited", T0, &n);
  tu_result_free(tu_submit_ok(f->a, c1, n, NULL, 0));
  tu_result_free(tu_submit_ok(f->a, c1, n, NULL, 0)); /* replay: no new leaf */
  free(c1);
  assert_int_equal(audit_calls, 1);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_DEFAULT, "audit/", 6), 1);
  c1 = tu_cmd_signing("dms", "refuse", &d, "a", "CMS refused", T0, &n);
  tu_submit_fails(f->a, c1, n, NULL, 0, KYSO_FAILED_PRECONDITION);
  free(c1);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_DEFAULT, "audit/", 6), 1);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_SIGNATURES, NULL, 0), 1);
  Kyso__Store__V1__DocumentRecord *rec = tu_document(f->a, f->id);
  assert_int_equal(rec->n_signature_ids, 1);
  kyso__store__v1__document_record__free_unpacked(rec, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_record_document, setup, teardown),
      cmocka_unit_test_setup_teardown(test_signing_idempotent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_chain_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_request_id_reuse, setup, teardown),
      cmocka_unit_test_setup_teardown(test_inline_blob, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
      cmocka_unit_test_setup_teardown(test_metadata_fill, setup, teardown),
      cmocka_unit_test_setup_teardown(test_audit_hook, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
