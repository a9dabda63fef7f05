/* kyso-bench — an HDR-style log-linear latency histogram: each power of two
 * split into 128 linear buckets, so a reported value is within 0.4 % of
 * what was recorded (1/256). Range 1 us .. 1000 s; values outside clamp to
 * it. Not thread-safe: each thread records into its own, then they merge. */
#ifndef KYSO_BENCH_HISTOGRAM_H
#define KYSO_BENCH_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

#define HIST_MIN_NS UINT64_C(1000)          /* 1 us */
#define HIST_MAX_NS UINT64_C(1000000000000) /* 1000 s */

typedef struct hist hist;

/* One point of a cumulative distribution: this fraction of the values is
 * at most value_ns. */
typedef struct hist_point {
  uint64_t value_ns;
  double fraction;
} hist_point;

/* Lifetime */
hist *hist_new(void); /* NULL when out of memory */
void hist_free(hist *h);
void hist_reset(hist *h);

/* Recording (clamped to HIST_MIN_NS .. HIST_MAX_NS) */
void hist_record_ns(hist *h, uint64_t ns);
void hist_record_us(hist *h, uint64_t us);
/* Adds every value of from into into. */
void hist_merge(hist *into, const hist *from);

/* Reading; all 0 on an empty histogram */
uint64_t hist_count(const hist *h);
uint64_t hist_min_ns(const hist *h);
uint64_t hist_max_ns(const hist *h);
double hist_mean_ns(const hist *h); /* of the clamped values, exact */
/* The value below or at which pct percent of the values lie (0..100). */
uint64_t hist_percentile_ns(const hist *h, double pct);
/* Up to max points of the CDF, value and fraction both ascending, the last
 * at the largest value with fraction 1: a point at every percent, then
 * closer in the tail (99.5, 99.9, 99.99 %), once per bucket. Returns how
 * many were written. */
size_t hist_cdf(const hist *h, hist_point *out, size_t max);

#endif
