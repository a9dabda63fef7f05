/* Unit tests: kyso-bench's latency histogram — percentiles of known
 * distributions within 1 %, one value exactly, merge equal to recording
 * both, clamping at 1 us and 1000 s, and a CDF that climbs to 1. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "histogram.h"

#define US UINT64_C(1000)

/* Fails unless got is within rel (a fraction) of want, saying both. */
static void assert_near(const char *what, double got, double want, double rel) {
  if (fabs(got - want) <= rel * want) return;
  print_error("%s: got %.1f, want %.1f (within %.2f %%)\n", what, got, want, rel * 100);
  fail();
}

/* A repeatable spread of latencies, roughly log-normal around 5 ms. */
static uint64_t spread(uint64_t *state) {
  *state = *state * 6364136223846793005u + 1442695040888963407u;
  double u = (double)(*state >> 11) / 9007199254740992.0;
  return (uint64_t)(5e6 * exp(3.0 * (u - 0.5)));
}

static void test_uniform(void **state) {
  static const struct {
    double pct;
    double want_us;
  } cases[] = {{50, 500}, {90, 900}, {99, 990}, {99.9, 999}, {10, 100}, {100, 1000}};
  hist *h = hist_new();
  (void)state;
  assert_non_null(h);
  for (uint64_t us = 1; us <= 1000; us++) hist_record_us(h, us);
  assert_int_equal(hist_count(h), 1000);
  assert_int_equal(hist_min_ns(h), 1 * US);
  assert_int_equal(hist_max_ns(h), 1000 * US);
  assert_near("mean (ns)", hist_mean_ns(h), 500.5 * US, 1e-9);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char what[64];
    snprintf(what, sizeof(what), "p%g of 1..1000 us (us)", cases[i].pct);
    assert_near(what, (double)hist_percentile_ns(h, cases[i].pct) / US, cases[i].want_us, 0.01);
  }
  hist_free(h);
}

static void test_single_value(void **state) {
  hist *h = hist_new();
  hist_point pts[8];
  (void)state;
  assert_non_null(h);
  hist_record_us(h, 1234);
  assert_int_equal(hist_count(h), 1);
  assert_int_equal(hist_percentile_ns(h, 0), 1234 * US);
  assert_int_equal(hist_percentile_ns(h, 50), 1234 * US);
  assert_int_equal(hist_percentile_ns(h, 100), 1234 * US);
  assert_near("mean (ns)", hist_mean_ns(h), 1234.0 * US, 1e-12);
  assert_int_equal(hist_cdf(h, pts, 8), 1);
  assert_int_equal(pts[0].value_ns, 1234 * US);
  assert_true(pts[0].fraction == 1.0);
  hist_free(h);
}

/* Any value between 1 us and 1000 s comes back within 1 %: recorded next
 * to the largest value, so the exact minimum and maximum do not help. */
static void test_relative_error(void **state) {
  hist *h = hist_new();
  (void)state;
  assert_non_null(h);
  for (double v = 1000; v <= 1e12; v *= 1.013) {
    char what[64];
    hist_reset(h);
    hist_record_ns(h, (uint64_t)v);
    hist_record_ns(h, HIST_MAX_NS);
    snprintf(what, sizeof(what), "p50 of {%.0f ns, 1000 s}", v);
    assert_near(what, (double)hist_percentile_ns(h, 50), (double)(uint64_t)v, 0.01);
  }
  hist_free(h);
}

static void test_merge(void **state) {
  hist *a = hist_new(), *b = hist_new(), *both = hist_new();
  hist_point pa[128], pb[128];
  uint64_t s1 = 1, s2 = 2;
  (void)state;
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(both);
  for (int i = 0; i < 20000; i++) {
    uint64_t x = spread(&s1), y = spread(&s2) * 3 + 77;
    hist_record_ns(a, x);
    hist_record_ns(both, x);
    if (i % 3 == 0) {
      hist_record_ns(b, y);
      hist_record_ns(both, y);
    }
  }
  hist_merge(a, b);
  assert_int_equal(hist_count(a), hist_count(both));
  assert_int_equal(hist_min_ns(a), hist_min_ns(both));
  assert_int_equal(hist_max_ns(a), hist_max_ns(both));
  assert_near("mean (ns)", hist_mean_ns(a), hist_mean_ns(both), 1e-9);
  for (double pct = 0; pct <= 100; pct += 0.5)
    assert_int_equal(hist_percentile_ns(a, pct), hist_percentile_ns(both, pct));
  size_t na = hist_cdf(a, pa, 128), nb = hist_cdf(both, pb, 128);
  assert_int_equal(na, nb);
  for (size_t i = 0; i < na; i++) {
    assert_int_equal(pa[i].value_ns, pb[i].value_ns);
    assert_true(pa[i].fraction == pb[i].fraction);
  }
  /* Merging an empty one changes nothing. */
  hist_reset(b);
  hist_merge(a, b);
  assert_int_equal(hist_count(a), hist_count(both));
  assert_int_equal(hist_min_ns(a), hist_min_ns(both));
  hist_free(a);
  hist_free(b);
  hist_free(both);
}

static void test_clamp(void **state) {
  hist *h = hist_new();
  (void)state;
  assert_non_null(h);
  hist_record_ns(h, 0);
  hist_record_ns(h, 999);
  assert_int_equal(hist_min_ns(h), HIST_MIN_NS);
  assert_int_equal(hist_max_ns(h), HIST_MIN_NS);
  hist_record_ns(h, UINT64_C(5000000000000));
  hist_record_us(h, UINT64_MAX); /* would overflow as ns */
  hist_record_ns(h, UINT64_MAX);
  assert_int_equal(hist_count(h), 5);
  assert_int_equal(hist_max_ns(h), HIST_MAX_NS);
  assert_int_equal(hist_percentile_ns(h, 0), HIST_MIN_NS);
  assert_near("p40 (ns)", (double)hist_percentile_ns(h, 40), (double)HIST_MIN_NS, 0.01);
  assert_int_equal(hist_percentile_ns(h, 100), HIST_MAX_NS);
  assert_near("p60 (ns)", (double)hist_percentile_ns(h, 60), (double)HIST_MAX_NS, 0.01);
  hist_free(h);
}

static void test_cdf(void **state) {
  static const size_t sizes[] = {120, 100, 10, 2, 1};
  hist *h = hist_new();
  hist_point pts[120];
  uint64_t s = 42;
  (void)state;
  assert_non_null(h);
  assert_int_equal(hist_cdf(h, pts, 120), 0); /* empty */
  for (int i = 0; i < 100000; i++) hist_record_ns(h, spread(&s));
  for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
    size_t n = hist_cdf(h, pts, sizes[k]);
    assert_in_range(n, 1, sizes[k]);
    for (size_t i = 1; i < n; i++) {
      if (pts[i].value_ns <= pts[i - 1].value_ns || pts[i].fraction <= pts[i - 1].fraction) {
        print_error("max %zu: point %zu (%llu ns, %f) does not climb from (%llu ns, %f)\n",
                    sizes[k], i, (unsigned long long)pts[i].value_ns, pts[i].fraction,
                    (unsigned long long)pts[i - 1].value_ns, pts[i - 1].fraction);
        fail();
      }
    }
    assert_true(pts[n - 1].fraction == 1.0);
    assert_int_equal(pts[n - 1].value_ns, hist_max_ns(h));
  }
  /* About a hundred points, each near the percentile it stands for. */
  size_t n = hist_cdf(h, pts, 120);
  assert_in_range(n, 90, 110);
  for (size_t i = 0; i + 1 < n; i++) {
    char what[64];
    snprintf(what, sizeof(what), "CDF point at %.4f (ns)", pts[i].fraction);
    assert_near(what, (double)pts[i].value_ns,
                (double)hist_percentile_ns(h, pts[i].fraction * 100), 0.01);
  }
  hist_free(h);
}

static void test_empty(void **state) {
  hist *h = hist_new();
  (void)state;
  assert_non_null(h);
  assert_int_equal(hist_count(h), 0);
  assert_int_equal(hist_min_ns(h), 0);
  assert_int_equal(hist_max_ns(h), 0);
  assert_int_equal(hist_percentile_ns(h, 99), 0);
  assert_true(hist_mean_ns(h) == 0.0);
  hist_free(h);
  hist_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uniform),     cmocka_unit_test(test_single_value),
      cmocka_unit_test(test_relative_error), cmocka_unit_test(test_merge),
      cmocka_unit_test(test_clamp),       cmocka_unit_test(test_cdf),
      cmocka_unit_test(test_empty),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
