/* Orphan blobs: collected only after a whole grace period unreferenced and
 * untouched; never while a record names them; a Put of the same bytes (any
 * read of the blob) restarts the period. The clock is the caller's, so the
 * test steps it instead of waiting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define GRACE 60000
#define T0 1714550400000LL

typedef struct fixture {
  char *dir;
  archive *a;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  archive_opts o = {.chunk_size = 4096};
  f->dir = tu_tmpdir();
  f->a = tu_open(f->dir, &o);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  archive_close(f->a);
  tu_rmrf(f->dir);
  free(f->dir);
  free(f);
  return 0;
}

static void put(fixture *f, size_t n, uint32_t seed, uint8_t id[32]) {
  kyso_err err = {0};
  uint8_t *b = tu_bytes(n, seed);
  assert_int_equal(archive_put_blob(f->a, b, n, id, &err), KYSO_OK);
  free(b);
}

static archive_collect_stats pass(fixture *f, int64_t now) {
  archive_collect_stats s;
  kyso_err err = {0};
  if (archive_collect_orphans(f->a, now, GRACE, &s, &err) != KYSO_OK)
    fail_msg("archive_collect_orphans: %s", err.msg);
  return s;
}

static int present(fixture *f, const uint8_t id[32]) {
  uint64_t size = 0;
  kyso_err err = {0};
  kyso_status st = archive_blob_size(f->a, id, &size, &err);
  assert_true(st == KYSO_OK || st == KYSO_NOT_FOUND);
  return st == KYSO_OK;
}

static void test_orphan_goes_after_the_grace_period(void **state) {
  fixture *f = *state;
  uint8_t id[32];
  put(f, 20000, 1, id); /* 5 chunks */
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_BLOBS, id, 32), 5);
  archive_collect_stats s = pass(f, T0);
  assert_int_equal(s.blobs, 1);
  assert_int_equal(s.unreferenced, 1);
  assert_int_equal(s.candidates, 1);
  assert_int_equal(s.collected, 0);
  s = pass(f, T0 + GRACE - 1);
  assert_int_equal(s.collected, 0);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_MANIFESTS, id, 32), 1);
  s = pass(f, T0 + GRACE);
  assert_int_equal(s.collected, 1);
  assert_int_equal(s.bytes, 20000);
  assert_int_equal(s.candidates, 0);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_MANIFESTS, id, 32), 0);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_BLOBS, id, 32), 0);
  assert_false(present(f, id));
  s = pass(f, T0 + 2 * GRACE);
  assert_int_equal(s.blobs, 0);
}

static void test_recorded_blob_stays(void **state) {
  fixture *f = *state;
  uint8_t id[32], orphan[32];
  size_t n;
  put(f, 9000, 2, id);
  put(f, 9000, 3, orphan);
  tu_doc d = {.sha256 = id, .size = 9000, .unit = "H37.DN.001", .issue_date = "2024-04-30",
              .account = "nguyen.van.a"};
  uint8_t *cmd = tu_cmd_document("dms", "put-1", &d, T0, &n);
  tu_result_free(tu_submit_ok(f->a, cmd, n, NULL, 0));
  free(cmd);
  for (int64_t t = T0; t <= T0 + 3 * GRACE; t += GRACE / 2) {
    archive_collect_stats s = pass(f, t);
    assert_int_equal(s.unreferenced, t <= T0 + GRACE ? 1 : 0); /* collected at T0 + GRACE */
  }
  assert_true(present(f, id));
  assert_false(present(f, orphan));
}

/* A read of the blob — what a Put of the same bytes, a peer's HasBlob or a
 * command naming the document does first — restarts its grace period. */
static void test_touch_restarts_the_period(void **state) {
  fixture *f = *state;
  uint8_t id[32], again[32];
  put(f, 5000, 4, id);
  pass(f, T0);
  put(f, 5000, 4, again); /* the same bytes stored "again": found present */
  assert_memory_equal(id, again, 32);
  archive_collect_stats s = pass(f, T0 + GRACE);
  assert_int_equal(s.collected, 0);
  assert_int_equal(s.candidates, 1); /* a candidate again, from this pass on */
  assert_true(present(f, id));       /* a read: touched once more */
  s = pass(f, T0 + 2 * GRACE);
  assert_int_equal(s.collected, 0);
  s = pass(f, T0 + 3 * GRACE);
  assert_int_equal(s.collected, 1);
}

/* A replicated record arriving for a candidate (a follower applying an
 * entry for bytes it holds from an earlier copy) keeps the blob. */
static void test_record_through_an_entry_keeps_it(void **state) {
  fixture *f = *state;
  uint8_t id[32], *entry = NULL;
  size_t n, elen, count = 0;
  kyso_err err = {0};
  archive_outcome *o = NULL;
  put(f, 7000, 5, id);
  pass(f, T0);
  tu_doc d = {.sha256 = id, .size = 7000, .unit = "H37.DN.001", .issue_date = "2024-04-30",
              .account = "nguyen.van.a"};
  uint8_t *cmd = tu_cmd_document("dms", "put-2", &d, T0, &n);
  const uint8_t *cmds[] = {cmd};
  assert_int_equal(archive_pack_entry(cmds, &n, 1, &entry, &elen, &err), KYSO_OK);
  assert_int_equal(archive_apply_entry(f->a, 1, entry, elen, &o, &count, &err), KYSO_OK);
  assert_int_equal(o[0].st, KYSO_OK);
  archive_outcomes_free(o, count);
  archive_collect_stats s = pass(f, T0 + GRACE);
  assert_int_equal(s.collected, 0);
  assert_int_equal(s.unreferenced, 0);
  assert_true(present(f, id));
  free(cmd);
  free(entry);
}

static void test_refuses_a_negative_grace(void **state) {
  fixture *f = *state;
  archive_collect_stats s;
  kyso_err err = {0};
  assert_int_equal(archive_collect_orphans(f->a, T0, -1, &s, &err), KYSO_INVALID_ARGUMENT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_orphan_goes_after_the_grace_period, setup, teardown),
      cmocka_unit_test_setup_teardown(test_recorded_blob_stays, setup, teardown),
      cmocka_unit_test_setup_teardown(test_touch_restarts_the_period, setup, teardown),
      cmocka_unit_test_setup_teardown(test_record_through_an_entry_keeps_it, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refuses_a_negative_grace, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
