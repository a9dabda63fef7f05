/* Replicated application: archive_prepare, archive_pack_entry and
 * archive_apply_entry, the path every cluster node takes. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

typedef struct fx {
  char *dir;
  archive *a;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof(*f));
  f->dir = tu_tmpdir();
  f->a = tu_open(f->dir, NULL);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  archive_close(f->a);
  tu_rmrf(f->dir);
  free(f->dir);
  free(f);
  return 0;
}

/* A document of n bytes (seed), its command by principal "p". */
typedef struct doc {
  uint8_t *bytes, sha[32];
  size_t n, cmd_len;
  uint8_t *cmd;
} doc;

static void make_doc(doc *d, size_t n, uint32_t seed, const char *request_id) {
  d->n = n;
  d->bytes = tu_bytes(n, seed);
  tu_sha256(d->bytes, n, d->sha);
  tu_doc td = {.sha256 = d->sha, .size = n, .unit = "H37.DN.001", .account = "a1"};
  d->cmd = tu_cmd_document("p", request_id, &td, 1700000000000 + seed, &d->cmd_len);
}

static void free_doc(doc *d) {
  free(d->bytes);
  free(d->cmd);
}

static uint8_t *pack(const uint8_t *const *cmds, const size_t *lens, size_t n, size_t *len) {
  uint8_t *e = NULL;
  kyso_err err = {0};
  assert_int_equal(archive_pack_entry(cmds, lens, n, &e, len, &err), KYSO_OK);
  return e;
}

static uint64_t applied(archive *a) {
  uint64_t i = 99;
  kyso_err err = {0};
  assert_int_equal(archive_applied_index(a, &i, &err), KYSO_OK);
  return i;
}

static void test_entry_applies_in_order_with_its_index(void **state) {
  fx *f = *state;
  kyso_err err = {0};
  doc d1, d2;
  make_doc(&d1, 5000, 1, "r1");
  make_doc(&d2, 7000, 2, "r2");
  assert_int_equal(applied(f->a), 0);
  /* Prepared on the accepting node: the inline document is stored now. */
  assert_int_equal(archive_prepare(f->a, d1.cmd, d1.cmd_len, d1.bytes, d1.n, &err), KYSO_OK);
  assert_int_equal(archive_prepare(f->a, d2.cmd, d2.cmd_len, d2.bytes, d2.n, &err), KYSO_OK);
  uint64_t size = 0;
  assert_int_equal(archive_blob_size(f->a, d1.sha, &size, &err), KYSO_OK);
  assert_int_equal(size, 5000);
  /* Prepared is not recorded: no document record before the entry applies. */
  uint8_t *v = NULL;
  size_t vl = 0;
  assert_int_equal(archive_get_document(f->a, d1.sha, &v, &vl, &err), KYSO_NOT_FOUND);

  const uint8_t *cmds[] = {d1.cmd, d2.cmd};
  size_t lens[] = {d1.cmd_len, d2.cmd_len}, elen = 0;
  uint8_t *e = pack(cmds, lens, 2, &elen);
  archive_outcome *o = NULL;
  size_t n = 0;
  assert_int_equal(archive_apply_entry(f->a, 7, e, elen, &o, &n, &err), KYSO_OK);
  assert_int_equal(n, 2);
  for (size_t i = 0; i < 2; i++) {
    assert_int_equal(o[i].st, KYSO_OK);
    archive__result *r = kyso__store__v1__command_result__unpack(NULL, o[i].result_len,
                                                                  o[i].result);
    assert_non_null(r);
    assert_memory_equal(r->document_sha256.data, i == 0 ? d1.sha : d2.sha, 32);
    assert_false(r->replayed);
    kyso__store__v1__command_result__free_unpacked(r, NULL);
  }
  archive_outcomes_free(o, n);
  assert_int_equal(applied(f->a), 7);
  assert_int_equal(archive_get_document(f->a, d2.sha, &v, &vl, &err), KYSO_OK);
  free(v);

  /* The log replays it after a restart: skipped, nothing changes. */
  archive_stats before, after;
  archive_get_stats(f->a, &before);
  assert_int_equal(archive_apply_entry(f->a, 7, e, elen, &o, &n, &err), KYSO_OK);
  assert_int_equal(n, 0);
  assert_null(o);
  assert_int_equal(archive_apply_entry(f->a, 3, e, elen, &o, &n, &err), KYSO_OK);
  assert_int_equal(n, 0);
  archive_get_stats(f->a, &after);
  assert_int_equal(after.commands, before.commands);

  /* The same commands at a later index: the request ids answer replayed. */
  assert_int_equal(archive_apply_entry(f->a, 8, e, elen, &o, &n, &err), KYSO_OK);
  assert_int_equal(n, 2);
  archive__result *r = kyso__store__v1__command_result__unpack(NULL, o[0].result_len, o[0].result);
  assert_true(r->replayed);
  kyso__store__v1__command_result__free_unpacked(r, NULL);
  archive_outcomes_free(o, n);
  assert_int_equal(applied(f->a), 8);
  free(e);
  free_doc(&d1);
  free_doc(&d2);
}

static void test_refusal_is_an_outcome_not_a_failure(void **state) {
  fx *f = *state;
  kyso_err err = {0};
  doc d1, d2;
  make_doc(&d1, 4096, 3, "same");
  make_doc(&d2, 4096, 4, "same"); /* the same request id for another document */
  assert_int_equal(archive_prepare(f->a, d1.cmd, d1.cmd_len, d1.bytes, d1.n, &err), KYSO_OK);
  assert_int_equal(archive_prepare(f->a, d2.cmd, d2.cmd_len, d2.bytes, d2.n, &err), KYSO_OK);
  const uint8_t *cmds[] = {d1.cmd, d2.cmd};
  size_t lens[] = {d1.cmd_len, d2.cmd_len}, elen = 0;
  uint8_t *e = pack(cmds, lens, 2, &elen);
  archive_outcome *o = NULL;
  size_t n = 0;
  assert_int_equal(archive_apply_entry(f->a, 1, e, elen, &o, &n, &err), KYSO_OK);
  assert_int_equal(n, 2);
  assert_int_equal(o[0].st, KYSO_OK);
  assert_int_equal(o[1].st, KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(o[1].err.msg, "request_id 'same'"));
  assert_null(o[1].result);
  archive_outcomes_free(o, n);
  /* The refused command left nothing; the other one is recorded. */
  uint8_t *v = NULL;
  size_t vl = 0;
  assert_int_equal(archive_get_document(f->a, d2.sha, &v, &vl, &err), KYSO_NOT_FOUND);
  assert_int_equal(archive_get_document(f->a, d1.sha, &v, &vl, &err), KYSO_OK);
  free(v);
  assert_int_equal(applied(f->a), 1);
  free(e);
  free_doc(&d1);
  free_doc(&d2);
}

static void test_prepare_refuses_what_submit_refuses(void **state) {
  fx *f = *state;
  kyso_err err = {0};
  doc d;
  make_doc(&d, 3000, 5, "r5");
  /* Not stored and not inline. */
  assert_int_equal(archive_prepare(f->a, d.cmd, d.cmd_len, NULL, 0, &err),
                   KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(err.msg, "put it first"));
  /* Inline bytes that are not the document named. */
  d.bytes[0] ^= 1;
  assert_int_equal(archive_prepare(f->a, d.cmd, d.cmd_len, d.bytes, d.n, &err),
                   KYSO_INVALID_ARGUMENT);
  uint64_t size = 0;
  assert_int_equal(archive_blob_size(f->a, d.sha, &size, &err), KYSO_NOT_FOUND);
  assert_int_equal(archive_prepare(f->a, (const uint8_t *)"\xff\xff", 2, NULL, 0, &err),
                   KYSO_INVALID_ARGUMENT);
  free_doc(&d);
}

static void test_entries_the_node_cannot_take_fail_whole(void **state) {
  fx *f = *state;
  kyso_err err = {0};
  archive_outcome *o = NULL;
  size_t n = 0;
  /* Not an entry at all. */
  assert_int_equal(archive_apply_entry(f->a, 1, (const uint8_t *)"\xff\x01", 2, &o, &n, &err),
                   KYSO_DATA_LOSS);
  /* A command from a newer kysod: this node must stop, not refuse it. */
  doc d;
  make_doc(&d, 4096, 6, "r6");
  assert_int_equal(archive_prepare(f->a, d.cmd, d.cmd_len, d.bytes, d.n, &err), KYSO_OK);
  Kyso__Store__V1__Command *c = kyso__store__v1__command__unpack(NULL, d.cmd_len, d.cmd);
  c->version = ARCHIVE__COMMAND_VERSION + 1;
  size_t nl = kyso__store__v1__command__get_packed_size(c);
  uint8_t *newer = malloc(nl);
  kyso__store__v1__command__pack(c, newer);
  kyso__store__v1__command__free_unpacked(c, NULL);
  const uint8_t *cmds[] = {d.cmd, newer};
  size_t lens[] = {d.cmd_len, nl}, elen = 0;
  uint8_t *e = pack(cmds, lens, 2, &elen);
  assert_int_equal(archive_apply_entry(f->a, 1, e, elen, &o, &n, &err), KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(err.msg, "upgrade"));
  assert_null(o);
  /* Nothing of the entry was written, its first command included. */
  uint8_t *v = NULL;
  size_t vl = 0;
  assert_int_equal(archive_get_document(f->a, d.sha, &v, &vl, &err), KYSO_NOT_FOUND);
  assert_int_equal(applied(f->a), 0);
  assert_int_equal(archive_sync(f->a, &err), KYSO_OK);
  free(e);
  free(newer);
  free_doc(&d);
}

static void test_index_survives_reopen(void **state) {
  fx *f = *state;
  kyso_err err = {0};
  doc d;
  make_doc(&d, 4096, 7, "r7");
  assert_int_equal(archive_prepare(f->a, d.cmd, d.cmd_len, d.bytes, d.n, &err), KYSO_OK);
  const uint8_t *cmds[] = {d.cmd};
  size_t lens[] = {d.cmd_len}, elen = 0;
  uint8_t *e = pack(cmds, lens, 1, &elen);
  archive_outcome *o = NULL;
  size_t n = 0;
  assert_int_equal(archive_apply_entry(f->a, 41, e, elen, &o, &n, &err), KYSO_OK);
  archive_outcomes_free(o, n);
  assert_int_equal(archive_sync(f->a, &err), KYSO_OK);
  archive_close(f->a);
  f->a = tu_open(f->dir, NULL);
  assert_int_equal(applied(f->a), 41);
  free(e);
  free_doc(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_entry_applies_in_order_with_its_index, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refusal_is_an_outcome_not_a_failure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_prepare_refuses_what_submit_refuses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_entries_the_node_cannot_take_fail_whole, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_index_survives_reopen, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
