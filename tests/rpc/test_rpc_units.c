/* kyso tests — the rpc layer's pieces on their own: the worker pool and the
 * reading of messages that arrive empty, absent or in several slices. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <grpc/byte_buffer.h>
#include <semaphore.h>

#include "rpc_internal.h"

typedef struct counter {
  pthread_mutex_t mu;
  int runs;
  sem_t entered;   /* posted by a blocking item when it starts */
  sem_t release;   /* posted by the test to let it finish */
} counter;

static void count_item(void *item, void *ctx) {
  counter *c = ctx;
  if (item == (void *)c) { /* the blocking item */
    sem_post(&c->entered);
    while (sem_wait(&c->release) != 0) {
    }
  }
  pthread_mutex_lock(&c->mu);
  c->runs++;
  pthread_mutex_unlock(&c->mu);
}

static void counter_init(counter *c) {
  memset(c, 0, sizeof(*c));
  pthread_mutex_init(&c->mu, NULL);
  sem_init(&c->entered, 0, 0);
  sem_init(&c->release, 0, 0);
}

static void test_pool_runs_everything(void **state) {
  counter c;
  rpc__pool *p = NULL;
  counter_init(&c);
  assert_int_equal(rpc__pool_start(3, 200, count_item, &c, &p, NULL), KYSO_OK);
  for (int i = 0; i < 200; i++) assert_int_equal(rpc__pool_submit(p, &i), 0);
  rpc__pool_stop(p); /* runs what is queued before joining */
  assert_int_equal(c.runs, 200);
}

static void test_pool_refuses_when_full(void **state) {
  counter c;
  rpc__pool *p = NULL;
  int other;
  counter_init(&c);
  assert_int_equal(rpc__pool_start(1, 2, count_item, &c, &p, NULL), KYSO_OK);
  assert_int_equal(rpc__pool_submit(p, &c), 0);
  while (sem_wait(&c.entered) != 0) {
  }
  /* The only thread is busy: two fit in the queue, the third does not. */
  assert_int_equal(rpc__pool_submit(p, &other), 0);
  assert_int_equal(rpc__pool_submit(p, &other), 0);
  assert_int_equal(rpc__pool_submit(p, &other), -1);
  sem_post(&c.release);
  rpc__pool_stop(p);
  assert_int_equal(c.runs, 3);
}

static void test_pool_bad_args(void **state) {
  rpc__pool *p = (rpc__pool *)&p;
  kyso_err err;
  assert_int_equal(rpc__pool_start(0, 1, count_item, NULL, &p, &err), KYSO_INVALID_ARGUMENT);
  assert_null(p);
  assert_int_equal(rpc__pool_start(1, 0, count_item, NULL, &p, &err), KYSO_INVALID_ARGUMENT);
  rpc__pool_stop(NULL);
}

static grpc_byte_buffer *buffer_of(const char *const *parts, size_t n) {
  grpc_slice s[8];
  for (size_t i = 0; i < n; i++) s[i] = grpc_slice_from_copied_string(parts[i]);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(s, n);
  for (size_t i = 0; i < n; i++) grpc_slice_unref(s[i]);
  return bb;
}

static void test_read_payload(void **state) {
  static const char *const split[] = {"sign ", "", "this ", "document"};
  static const char *const one[] = {"0123456789"};
  static const char *const none[] = {""};
  const struct {
    const char *name;
    const char *const *parts;
    size_t nparts; /* 0: no message at all (NULL buffer) */
    size_t max;
    kyso_status want;
    const char *want_bytes;
  } cases[] = {
      {"absent message", NULL, 0, 16, KYSO_OK, ""},
      {"empty message", none, 1, 16, KYSO_OK, ""},
      {"split across four slices", split, 4, 64, KYSO_OK, "sign this document"},
      {"exactly the cap", one, 1, 10, KYSO_OK, "0123456789"},
      {"one byte over the cap", one, 1, 9, KYSO_RESOURCE_EXHAUSTED, NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kyso_buf out;
    kyso_err err;
    kyso_err_clear(&err);
    grpc_byte_buffer *bb = cases[i].nparts ? buffer_of(cases[i].parts, cases[i].nparts) : NULL;
    kyso_status st = rpc__read_payload(bb, cases[i].max, &out, &err);
    size_t want_len = cases[i].want_bytes ? strlen(cases[i].want_bytes) : 0;
    if (st != cases[i].want ||
        (st == KYSO_OK && (out.len != want_len || (want_len && memcmp(out.data, cases[i].want_bytes, want_len)))))
      fail_msg("%s: got %s with %zu bytes (%s), want %s with '%s'", cases[i].name,
               kyso_strerror(st), out.len, err.msg, kyso_strerror(cases[i].want),
               cases[i].want_bytes ? cases[i].want_bytes : "");
    kyso_buf_free(&out, 0);
    if (bb != NULL) grpc_byte_buffer_destroy(bb);
  }
}

static int setup(void **state) {
  grpc_init();
  return 0;
}

static int teardown(void **state) {
  grpc_shutdown();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pool_runs_everything),
      cmocka_unit_test(test_pool_refuses_when_full),
      cmocka_unit_test(test_pool_bad_args),
      cmocka_unit_test(test_read_payload),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
