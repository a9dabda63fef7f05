/* cli/import_run: the bulk import's runner, over items that count their
 * calls (no server: the e2e test of kyso admin import runs the real one).
 * A failed item stops the journal's prefix there; a rerun with the same
 * identity redoes only from it; another identity redoes everything;
 * UNAVAILABLE-like outcomes are retried; a complete run removes the
 * journal. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "import_run.h"

#define ITEMS 50

typedef struct items {
  atomic_int calls[ITEMS];
  int fail_at;       /* this item fails (-1: none) */
  int retries_at;    /* this item answers RETRY twice, then MADE (-1: none) */
} items;

static import_outcome item(void *ctx, size_t i, char *msg, size_t msg_size) {
  items *it = ctx;
  int n = atomic_fetch_add(&it->calls[i], 1);
  if ((int)i == it->fail_at) {
    snprintf(msg, msg_size, "item %zu refused", i);
    return IMPORT_FAILED;
  }
  if ((int)i == it->retries_at && n < 2) {
    snprintf(msg, msg_size, "busy");
    return IMPORT_RETRY;
  }
  return i % 2 ? IMPORT_UNCHANGED : IMPORT_MADE;
}

static char journal[64];

static int setup(void **state) {
  (void)state;
  snprintf(journal, sizeof(journal), "/tmp/kyso-test-journal-%d", (int)getpid());
  unlink(journal);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  unlink(journal);
  return 0;
}

static void reset(items *it, int fail_at, int retries_at) {
  for (int i = 0; i < ITEMS; i++) atomic_store(&it->calls[i], 0);
  it->fail_at = fail_at;
  it->retries_at = retries_at;
}

static void test_resumes_from_the_first_failure(void **state) {
  (void)state;
  items a, b;
  reset(&a, -1, 7);
  reset(&b, 30, -1);
  import_step steps[] = {{.name = "first", .n = ITEMS, .jobs = 4, .fn = item, .ctx = &a},
                         {.name = "second", .n = ITEMS, .jobs = 4, .fn = item, .ctx = &b}};
  assert_int_equal(import_run(steps, 2, journal, "id-1", 0), 1);
  assert_int_equal(steps[0].made + steps[0].unchanged, ITEMS);
  assert_int_equal(atomic_load(&a.calls[7]), 3); /* two RETRY, then MADE */
  assert_int_equal(steps[1].failed, 1);
  assert_int_equal(access(journal, F_OK), 0);

  /* The rerun: the first step is skipped, the second redone from item 30. */
  reset(&a, -1, -1);
  reset(&b, -1, -1);
  import_step again[] = {{.name = "first", .n = ITEMS, .jobs = 4, .fn = item, .ctx = &a},
                         {.name = "second", .n = ITEMS, .jobs = 4, .fn = item, .ctx = &b}};
  assert_int_equal(import_run(again, 2, journal, "id-1", 0), 0);
  for (int i = 0; i < ITEMS; i++) {
    assert_int_equal(atomic_load(&a.calls[i]), 0);
    assert_int_equal(atomic_load(&b.calls[i]), i < 30 ? 0 : 1);
  }
  assert_int_equal(access(journal, F_OK), -1); /* all done: removed */
}

static void test_other_inputs_redo_everything(void **state) {
  (void)state;
  items a;
  reset(&a, 10, -1);
  import_step one[] = {{.name = "only", .n = ITEMS, .jobs = 2, .fn = item, .ctx = &a}};
  assert_int_equal(import_run(one, 1, journal, "id-A", 0), 1);
  reset(&a, -1, -1);
  import_step two[] = {{.name = "only", .n = ITEMS, .jobs = 2, .fn = item, .ctx = &a}};
  assert_int_equal(import_run(two, 1, journal, "id-B", 0), 0);
  for (int i = 0; i < ITEMS; i++) assert_int_equal(atomic_load(&a.calls[i]), 1);
  assert_int_equal(two[0].made + two[0].unchanged, ITEMS);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_resumes_from_the_first_failure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_other_inputs_redo_everything, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
