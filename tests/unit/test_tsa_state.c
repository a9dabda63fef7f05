/* Unit tests: TSA serials and genTime — format, restarts, crashes, a clock
 * going backwards, threads, bad state files, and how often it writes. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kyso/tsa_state.h"
#include "kyso/util.h"

#define COUNTER_MASK (((uint64_t)1 << 48) - 1)
#define T0 INT64_C(1700000000000) /* 2023-11-14, any plausible time */

/* A clock the test sets; each read then advances it by `step` ms. */
typedef struct test_clock {
  atomic_llong now;
  long long step;
} test_clock;

static int64_t clock_read(void *arg) {
  test_clock *c = arg;
  return (int64_t)atomic_fetch_add(&c->now, c->step);
}

static void clock_set(test_clock *c, int64_t t) { atomic_store(&c->now, (long long)t); }

/* A fresh directory for one test, removed afterwards. */
typedef struct fixture {
  char dir[64];
  char path[128];
  test_clock clk;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  if (f == NULL) return -1;
  snprintf(f->dir, sizeof(f->dir), "/tmp/kyso-tsa-XXXXXX");
  if (mkdtemp(f->dir) == NULL) return -1;
  snprintf(f->path, sizeof(f->path), "%s/tsa/state", f->dir);
  clock_set(&f->clk, T0);
  *state = f;
  return 0;
}

static int rm_entry(const char *p, const struct stat *sb, int type, struct FTW *ftw) {
  (void)sb, (void)type, (void)ftw;
  return remove(p);
}

static int teardown(void **state) {
  fixture *f = *state;
  nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static tsa_state_opts opts_for(fixture *f, const char *path, uint16_t node, uint32_t block,
                               uint32_t lease) {
  tsa_state_opts o = {.path = path, .node_id = node, .block = block, .lease_ms = lease,
                      .now_ms = clock_read, .now_arg = &f->clk};
  return o;
}

static tsa_state *must_open(const tsa_state_opts *o) {
  tsa_state *s = NULL;
  kyso_err err = {0};
  kyso_status st = tsa_state_open(o, &s, &err);
  if (st != KYSO_OK)
    fail_msg("open '%s': got %s (%s), want ok", o->path, kyso_strerror(st), err.msg);
  return s;
}

static void must_next(tsa_state *s, uint64_t *serial, int64_t *t) {
  kyso_err err = {0};
  kyso_status st = tsa_state_next(s, serial, t, &err);
  if (st != KYSO_OK) fail_msg("next: got %s (%s), want ok", kyso_strerror(st), err.msg);
}

/* Field by field: the struct has padding. */
static void assert_info_equal(const tsa_state_info *a, const tsa_state_info *b) {
  assert_int_equal(a->node_id, b->node_id);
  assert_int_equal(a->next_counter, b->next_counter);
  assert_int_equal(a->reserved_end, b->reserved_end);
  assert_int_equal(a->last_gen_time_ms, b->last_gen_time_ms);
  assert_int_equal(a->issued, b->issued);
  assert_int_equal(a->writes, b->writes);
}

static void write_text(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  assert_int_equal(fputs(text, fp) >= 0, 1);
  assert_int_equal(fclose(fp), 0);
}

/* The saved next_counter and time_bound_ms, read the plain way. */
static void read_saved(const char *path, uint64_t *next, int64_t *bound) {
  kyso_buf b;
  kyso_err err = {0};
  assert_int_equal(kyso_read_file(path, 4096, &b, &err), KYSO_OK);
  assert_non_null(b.data);
  char text[4097];
  memcpy(text, b.data, b.len);
  text[b.len] = '\0';
  kyso_buf_free(&b, 0);
  const char *n = strstr(text, "\nnext_counter="), *t = strstr(text, "\ntime_bound_ms=");
  assert_non_null(n);
  assert_non_null(t);
  *next = strtoull(n + strlen("\nnext_counter="), NULL, 10);
  *bound = strtoll(t + strlen("\ntime_bound_ms="), NULL, 10);
}

static void test_serial_format(void **state) {
  fixture *f = *state;
  tsa_state_opts o = opts_for(f, f->path, 0x0102, 0, 0);
  f->clk.step = 0;
  tsa_state *s = must_open(&o);
  uint64_t serial;
  int64_t t;
  for (uint64_t i = 1; i <= 3; i++) {
    must_next(s, &serial, &t);
    assert_int_equal(serial, (uint64_t)0x0102 << 48 | i);
    assert_int_equal(t, T0); /* the same ms thrice is fine */
  }
  /* The directory was created private; the file is the documented text. */
  char dir[160];
  struct stat sb;
  snprintf(dir, sizeof(dir), "%s/tsa", f->dir);
  assert_int_equal(stat(dir, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0700);
  assert_int_equal(stat(f->path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  uint64_t next;
  int64_t bound;
  read_saved(f->path, &next, &bound);
  assert_int_equal(next, 1 + 4096);     /* the default block, reserved at open */
  assert_int_equal(bound, T0 + 1000);   /* the default lease */
  tsa_state_close(s);
  kyso_buf b;
  kyso_err err = {0};
  assert_int_equal(kyso_read_file(f->path, 4096, &b, &err), KYSO_OK);
  const char *want_tail = "node_id=258\nnext_counter=4\ntime_bound_ms=1700000000000\n";
  size_t tl = strlen(want_tail);
  assert_true(b.len > tl && b.data[0] == '#');
  if (memcmp(b.data + b.len - tl, want_tail, tl) != 0)
    fail_msg("file after close: got\n%.*s\nwant it to end with\n%s", (int)b.len, b.data, want_tail);
  kyso_buf_free(&b, 0);
}

static void test_close_reopen_continues(void **state) {
  fixture *f = *state;
  tsa_state_opts o = opts_for(f, f->path, 7, 100, 1000);
  f->clk.step = 1;
  uint64_t seen_max = 0, serial;
  int64_t t, last_t = 0;
  for (int round = 0; round < 5; round++) {
    tsa_state *s = must_open(&o);
    tsa_state_info before;
    tsa_state_get_info(s, &before);
    assert_int_equal(before.next_counter, seen_max + 1); /* no skip after a clean close */
    assert_int_equal(before.last_gen_time_ms, last_t);
    /* The clock is exactly at the saved genTime: issues at once. */
    clock_set(&f->clk, last_t ? last_t : T0);
    for (int i = 0; i < 37 + round * 50; i++) {
      must_next(s, &serial, &t);
      assert_int_equal(serial >> 48, 7);
      assert_int_equal(serial & COUNTER_MASK, seen_max + 1);
      assert_true(t >= last_t);
      seen_max = serial & COUNTER_MASK;
      last_t = t;
    }
    tsa_state_info info;
    tsa_state_get_info(s, &info);
    assert_int_equal(info.next_counter, seen_max + 1);
    tsa_state_close(s);
    s = must_open(&o);
    tsa_state_info again;
    tsa_state_get_info(s, &again);
    assert_int_equal(again.next_counter, info.next_counter);
    assert_int_equal(again.last_gen_time_ms, last_t);
    assert_int_equal(again.issued, 0);
    tsa_state_close(s);
  }
}

/* A crash leaves the file as it is on disk at that moment: copy it then,
 * and start a second handle on the copy. */
static void test_crash_skips_forward(void **state) {
  fixture *f = *state;
  const uint32_t block = 100, lease = 1000;
  tsa_state_opts o = opts_for(f, f->path, 3, block, lease);
  f->clk.step = 1;
  tsa_state *a = must_open(&o);
  uint64_t serial, max_a = 0;
  int64_t t, max_t = 0;
  for (int i = 0; i < 250; i++) {
    must_next(a, &serial, &t);
    max_a = serial & COUNTER_MASK;
    max_t = t;
  }
  char copy_dir[160], copy[200];
  snprintf(copy_dir, sizeof(copy_dir), "%s/after-crash", f->dir);
  snprintf(copy, sizeof(copy), "%s/state", copy_dir);
  assert_int_equal(mkdir(copy_dir, 0700), 0);
  kyso_buf b;
  kyso_err err = {0};
  assert_int_equal(kyso_read_file(f->path, 4096, &b, &err), KYSO_OK);
  assert_int_equal(kyso_write_file_atomic(copy, b.data, b.len, 0600, &err), KYSO_OK);
  kyso_buf_free(&b, 0);
  uint64_t saved_next;
  int64_t saved_bound;
  read_saved(copy, &saved_next, &saved_bound);
  assert_true(saved_bound > max_t + 1); /* the lease runs ahead of the last genTime */

  /* Restart on the crashed file with the clock where it was. */
  tsa_state_opts oc = opts_for(f, copy, 3, block, lease);
  clock_set(&f->clk, max_t + 1);
  f->clk.step = 0;
  tsa_state *c = must_open(&oc);
  tsa_state_info info;
  tsa_state_get_info(c, &info);
  assert_int_equal(info.last_gen_time_ms, saved_bound);
  assert_true(info.next_counter > max_a);
  assert_true(info.next_counter <= max_a + 1 + block); /* skips at most one block */
  kyso_status st = tsa_state_next(c, &serial, &t, &err);
  assert_int_equal(st, KYSO_UNAVAILABLE);
  char want[64];
  snprintf(want, sizeof(want), "%" PRId64 " ms behind", saved_bound - (max_t + 1));
  if (strstr(err.msg, want) == NULL || strstr(err.msg, "chronyc") == NULL)
    fail_msg("message: got '%s', want '%s' and a clock hint", err.msg, want);
  assert_int_equal(tsa_state_clock_behind_ms(c), saved_bound - (max_t + 1));
  tsa_state_info same;
  tsa_state_get_info(c, &same);
  assert_int_equal(same.issued, 0);
  assert_int_equal(same.next_counter, info.next_counter);
  /* Once the clock reaches the bound it issues, after every old serial. */
  clock_set(&f->clk, saved_bound);
  assert_int_equal(tsa_state_clock_behind_ms(c), 0);
  for (int i = 0; i < 300; i++) {
    must_next(c, &serial, &t);
    assert_true((serial & COUNTER_MASK) > max_a);
    assert_true(t >= max_t);
  }
  tsa_state_close(c);
  tsa_state_close(a);
}

static void test_clock_backwards(void **state) {
  fixture *f = *state;
  tsa_state_opts o = opts_for(f, f->path, 9, 16, 1000);
  f->clk.step = 1;
  tsa_state *s = must_open(&o);
  uint64_t serial, last_serial = 0;
  int64_t t, last_t = 0;
  for (int i = 0; i < 10; i++) must_next(s, &last_serial, &last_t);
  tsa_state_info before, after;
  tsa_state_get_info(s, &before);
  clock_set(&f->clk, last_t - 5);
  f->clk.step = 0;
  for (int i = 0; i < 3; i++) {
    kyso_err err = {0};
    serial = 0;
    t = 0;
    assert_int_equal(tsa_state_next(s, &serial, &t, &err), KYSO_UNAVAILABLE);
    assert_int_equal(serial, 0);
    assert_int_equal(t, 0);
    if (strstr(err.msg, "5 ms behind the last issued genTime") == NULL ||
        strstr(err.msg, "chronyc tracking") == NULL)
      fail_msg("message: got '%s', want '5 ms behind the last issued genTime' and a hint",
               err.msg);
  }
  assert_int_equal(tsa_state_clock_behind_ms(s), 5);
  tsa_state_get_info(s, &after);
  assert_info_equal(&before, &after);
  /* Caught up to the same ms: that is allowed, and the counter did not move. */
  clock_set(&f->clk, last_t);
  must_next(s, &serial, &t);
  assert_int_equal(t, last_t);
  assert_int_equal(serial, last_serial + 1);
  assert_int_equal(tsa_state_clock_behind_ms(s), 0);
  tsa_state_close(s);
}

/* A clock that repeats some ms and skips others: floor(n/3) + floor(n/5). */
static atomic_llong repeat_calls;
static int64_t repeating_clock(void *arg) {
  (void)arg;
  long long n = atomic_fetch_add(&repeat_calls, 1);
  return T0 + n / 3 + n / 5;
}

#define THREADS 8
#define PER_THREAD 5000

typedef struct issued {
  uint64_t serial;
  int64_t t;
} issued;

typedef struct worker {
  tsa_state *s;
  issued *out;
  int failed;
} worker;

static void *work(void *arg) {
  worker *w = arg;
  for (int i = 0; i < PER_THREAD; i++) {
    kyso_err err = {0};
    if (tsa_state_next(w->s, &w->out[i].serial, &w->out[i].t, &err) != KYSO_OK) {
      w->failed = 1;
      break;
    }
  }
  return NULL;
}

static int by_serial(const void *a, const void *b) {
  uint64_t x = ((const issued *)a)->serial, y = ((const issued *)b)->serial;
  return x < y ? -1 : x > y;
}

static void test_threads_monotonic(void **state) {
  fixture *f = *state;
  tsa_state_opts o = {.path = f->path, .node_id = 65535, .block = 1000, .lease_ms = 200,
                      .now_ms = repeating_clock};
  atomic_store(&repeat_calls, 0);
  tsa_state *s = must_open(&o);
  issued *all = calloc(THREADS * PER_THREAD, sizeof(*all));
  assert_non_null(all);
  pthread_t th[THREADS];
  worker w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker){.s = s, .out = all + (size_t)i * PER_THREAD};
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_false(w[i].failed);
  }
  qsort(all, THREADS * PER_THREAD, sizeof(*all), by_serial);
  for (size_t i = 0; i < THREADS * PER_THREAD; i++) {
    assert_int_equal(all[i].serial, (uint64_t)65535 << 48 | (i + 1)); /* distinct, dense */
    if (i > 0 && all[i].t < all[i - 1].t)
      fail_msg("serial %" PRIu64 " has genTime %" PRId64 ", before the previous one's %" PRId64,
               all[i].serial, all[i].t, all[i - 1].t);
  }
  tsa_state_info info;
  tsa_state_get_info(s, &info);
  assert_int_equal(info.issued, THREADS * PER_THREAD);
  free(all);
  tsa_state_close(s);
}

/* After every issue, what is on disk covers it: its counter is below the
 * saved next_counter and its genTime at or below the saved bound. */
static void test_disk_covers_every_issue(void **state) {
  fixture *f = *state;
  tsa_state_opts o = opts_for(f, f->path, 5, 64, 50);
  f->clk.step = 0;
  tsa_state *s = must_open(&o);
  uint64_t serial, next;
  int64_t t, bound;
  unsigned r = 12345;
  for (int i = 0; i < 600; i++) {
    r = r * 1103515245 + 12345;
    atomic_fetch_add(&f->clk.now, (long long)((r >> 16) % 21)); /* 0..20 ms on */
    must_next(s, &serial, &t);
    read_saved(f->path, &next, &bound);
    if ((serial & COUNTER_MASK) >= next || t > bound)
      fail_msg("issued counter %" PRIu64 " at %" PRId64 "; disk says next %" PRIu64
               ", bound %" PRId64, serial & COUNTER_MASK, t, next, bound);
  }
  tsa_state_close(s);
}

static void test_bad_files(void **state) {
  fixture *f = *state;
  static const struct { const char *text, *want; } cases[] = {
      {"hello\n", "line 1"},
      {"# c\nnode_id=1\nnext_counter=5\ntime_bound_ms=0\ncolour=blue\n", "line 5"},
      {"node_id=1\nnext_counter=99999999999999999999999\ntime_bound_ms=0\n", "line 2"},
      {"node_id=1\nnext_counter=18446744073709551616\ntime_bound_ms=0\n", "line 2"},
      {"node_id=1\nnext_counter=281474976710657\ntime_bound_ms=0\n", "line 2"}, /* 2^48+1 */
      {"node_id=1\nnext_counter=0\ntime_bound_ms=0\n", "line 2"},
      {"node_id=0\nnext_counter=5\ntime_bound_ms=0\n", "line 1"},
      {"node_id=65536\nnext_counter=5\ntime_bound_ms=0\n", "line 1"},
      {"node_id=1\nnext_counter=5\ntime_bound_ms=-5\n", "line 3"},
      {"node_id=1\nnext_counter=5\ntime_bound_ms=1e3\n", "line 3"},
      {"node_id=1\nnext_counter= 5\ntime_bound_ms=0\n", "line 2"},
      {"node_id=1\nnext_counter=5\r\ntime_bound_ms=0\n", "line 2"},
      {"node_id=1\nnext_counter=5\ntime_bound_ms=\n", "line 3"},
      {"node_id=1\nnext_counter=5\nnext_counter=6\ntime_bound_ms=0\n", "repeats next_counter"},
      {"node_id=1\ntime_bound_ms=0\n", "no next_counter"},
      {"node_id=1\nnext_counter=5\ntime_bound_ms=0", "line 3 has no end"},
      {"", "no node_id"},
      {"node_id=1\nnext_counter=281474976710656\ntime_bound_ms=0\n", "exhausted"}, /* 2^48 */
  };
  char dir[160];
  snprintf(dir, sizeof(dir), "%s/tsa", f->dir);
  assert_int_equal(mkdir(dir, 0700), 0);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    write_text(f->path, cases[i].text);
    tsa_state_opts o = opts_for(f, f->path, 1, 0, 0);
    tsa_state *s = (tsa_state *)(void *)&o; /* not NULL: open must reset it */
    kyso_err err = {0};
    kyso_status got = tsa_state_open(&o, &s, &err);
    if (got != KYSO_FAILED_PRECONDITION || strstr(err.msg, f->path) == NULL ||
        strstr(err.msg, cases[i].want) == NULL)
      fail_msg("case %zu: got %s '%s', want failed precondition naming the file and '%s'", i,
               kyso_strerror(got), err.msg, cases[i].want);
    assert_null(s);
    /* Never guessed over: the file is as it was. */
    kyso_buf b;
    assert_int_equal(kyso_read_file(f->path, 4096, &b, &err), KYSO_OK);
    assert_int_equal(b.len, strlen(cases[i].text));
    if (b.len) assert_memory_equal(b.data, cases[i].text, b.len);
    kyso_buf_free(&b, 0);
  }
  /* Comments and blank lines are fine; a file from another node id keeps its counter. */
  write_text(f->path, "# hand-written\n\nnode_id=2\nnext_counter=41\ntime_bound_ms=5\n");
  tsa_state_opts o = opts_for(f, f->path, 1, 0, 0);
  tsa_state *s = must_open(&o);
  uint64_t serial;
  int64_t t;
  must_next(s, &serial, &t);
  assert_int_equal(serial, (uint64_t)1 << 48 | 41);
  tsa_state_close(s);
}

static void test_exhausted(void **state) {
  fixture *f = *state;
  char dir[160];
  snprintf(dir, sizeof(dir), "%s/tsa", f->dir);
  assert_int_equal(mkdir(dir, 0700), 0);
  write_text(f->path, "node_id=4\nnext_counter=281474976710654\ntime_bound_ms=0\n"); /* 2^48-2 */
  tsa_state_opts o = opts_for(f, f->path, 4, 0, 0);
  tsa_state *s = must_open(&o);
  uint64_t serial;
  int64_t t;
  must_next(s, &serial, &t);
  assert_int_equal(serial & COUNTER_MASK, COUNTER_MASK - 1);
  must_next(s, &serial, &t);
  assert_int_equal(serial & COUNTER_MASK, COUNTER_MASK);
  kyso_err err = {0};
  assert_int_equal(tsa_state_next(s, &serial, &t, &err), KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(err.msg, "exhausted"));
  tsa_state_close(s);
  s = NULL;
  assert_int_equal(tsa_state_open(&o, &s, &err), KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(err.msg, "exhausted"));
  assert_null(s);
}

/* 20,000 serials, block 4096, the clock 1 ms on per read, lease 1000 ms.
 * At most: a write per block (5, the first at open) plus one per lease of
 * clock passed (ceil(19,999 / 1000) = 20), as a lease write comes at least
 * lease + 1 ms after the last write. At least 19: each write moves the
 * bound up by at most lease + 1 ms, and it must cover 20 s. */
static void test_write_count(void **state) {
  fixture *f = *state;
  const uint64_t n = 20000, block = 4096, lease = 1000;
  tsa_state_opts o = opts_for(f, f->path, 2, (uint32_t)block, (uint32_t)lease);
  f->clk.step = 1;
  tsa_state *s = must_open(&o);
  uint64_t serial;
  int64_t t, first = 0;
  for (uint64_t i = 0; i < n; i++) {
    must_next(s, &serial, &t);
    if (i == 0) first = t;
  }
  tsa_state_info info;
  tsa_state_get_info(s, &info);
  uint64_t span = (uint64_t)(t - first);
  uint64_t blocks = (n + block - 1) / block, leases = (span + lease - 1) / lease;
  if (info.writes > blocks + leases || info.writes < span / lease)
    fail_msg("writes: got %" PRIu64 ", want %" PRIu64 "..%" PRIu64, info.writes, span / lease,
             blocks + leases);
  tsa_state_close(s);
}

static void test_unwritable(void **state) {
  fixture *f = *state;
  tsa_state_opts o = opts_for(f, f->path, 6, 8, 1000);
  f->clk.step = 0;
  tsa_state *s = must_open(&o);
  uint64_t serial, last_serial = 0;
  int64_t t;
  for (int i = 0; i < 8; i++) must_next(s, &last_serial, &t);

  /* A directory where the temporary file goes: writes fail even for root. */
  char blocker[200];
  snprintf(blocker, sizeof(blocker), "%s.tmp.%ld", f->path, (long)getpid());
  assert_int_equal(mkdir(blocker, 0700), 0);
  tsa_state_info before, after;
  tsa_state_get_info(s, &before);
  kyso_err err = {0};
  assert_int_equal(tsa_state_next(s, &serial, &t, &err), KYSO_UNAVAILABLE); /* block is used up */
  assert_non_null(strstr(err.msg, f->path));
  tsa_state_get_info(s, &after);
  assert_info_equal(&before, &after);
  assert_int_equal(rmdir(blocker), 0);
  must_next(s, &serial, &t);
  assert_int_equal(serial, last_serial + 1);

  /* The same when only the time lease is due. */
  clock_set(&f->clk, T0 + 5000);
  assert_int_equal(mkdir(blocker, 0700), 0);
  assert_int_equal(tsa_state_next(s, &serial, &t, &err), KYSO_UNAVAILABLE);
  assert_int_equal(rmdir(blocker), 0);
  must_next(s, &serial, &t);
  assert_int_equal(serial, last_serial + 2);
  assert_int_equal(t, T0 + 5000);
  tsa_state_close(s);

  /* open fails too: an unwritable state, and a directory that cannot be made. */
  assert_int_equal(mkdir(blocker, 0700), 0);
  s = NULL;
  assert_int_equal(tsa_state_open(&o, &s, &err), KYSO_UNAVAILABLE);
  assert_null(s);
  assert_int_equal(rmdir(blocker), 0);
  char file[160], under_file[200];
  snprintf(file, sizeof(file), "%s/plain", f->dir);
  snprintf(under_file, sizeof(under_file), "%s/tsa/state", file);
  write_text(file, "x");
  tsa_state_opts bad = opts_for(f, under_file, 6, 0, 0);
  assert_int_equal(tsa_state_open(&bad, &s, &err), KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(err.msg, file));
  assert_null(s);
}

static void test_one_handle_per_file(void **state) {
  fixture *f = *state;
  tsa_state_opts o = opts_for(f, f->path, 1, 0, 0);
  tsa_state *a = must_open(&o), *b = NULL;
  kyso_err err = {0};
  assert_int_equal(tsa_state_open(&o, &b, &err), KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(err.msg, "in use"));
  assert_null(b);
  tsa_state_close(a);
  b = must_open(&o); /* the lock went with the first handle */
  tsa_state_close(b);
}

static void test_bad_opts(void **state) {
  fixture *f = *state;
  tsa_state *s = NULL;
  kyso_err err = {0};
  tsa_state_opts o = opts_for(f, f->path, 0, 0, 0);
  assert_int_equal(tsa_state_open(&o, &s, &err), KYSO_INVALID_ARGUMENT);
  o = opts_for(f, "", 1, 0, 0);
  assert_int_equal(tsa_state_open(&o, &s, &err), KYSO_INVALID_ARGUMENT);
  assert_int_equal(tsa_state_open(NULL, &s, &err), KYSO_INVALID_ARGUMENT);
  assert_null(s);
  tsa_state_close(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_serial_format, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_reopen_continues, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crash_skips_forward, setup, teardown),
      cmocka_unit_test_setup_teardown(test_clock_backwards, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threads_monotonic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_disk_covers_every_issue, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exhausted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_count, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unwritable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_one_handle_per_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_opts, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
