/* kyso-bench — log-linear histogram (see histogram.h).
 *
 * Bucket index of a value v: with m its highest set bit and
 * shift = max(0, m - 7), idx = shift * 128 + (v >> shift). Values below 256
 * get a bucket each; above, every power of two [2^m, 2^(m+1)) has 128
 * buckets of width 2^(m-7), so a bucket is at most 1/128 of its values wide
 * and its midpoint within 1/256 of any of them. */
#include "histogram.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
/* HIST_MAX_NS < 2^40: shift at most 40 - 1 - SUB_BITS = 32. */
#define MAX_SHIFT 32
#define NBUCKETS ((MAX_SHIFT + 2) * SUB)

struct hist {
  uint64_t total;
  uint64_t min, max;
  double sum;  /* a double: 2^64 ns would be reached in a few hours at 1000 s each */
  uint64_t counts[NBUCKETS];
};

static unsigned bucket_of(uint64_t v) {
  unsigned m = 63u - (unsigned)__builtin_clzll(v | 1);
  unsigned shift = m > SUB_BITS ? m - SUB_BITS : 0;
  return shift * SUB + (unsigned)(v >> shift);
}

/* The value a bucket stands for: its midpoint. */
static uint64_t bucket_value(unsigned idx) {
  if (idx < 2 * SUB) return idx;
  unsigned shift = idx / SUB - 1;
  uint64_t low = (uint64_t)(idx - shift * SUB) << shift;
  return low + ((UINT64_C(1) << shift) >> 1);
}

static uint64_t clamp(uint64_t v, uint64_t lo, uint64_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

hist *hist_new(void) {
  hist *h = malloc(sizeof(*h));
  if (h != NULL) hist_reset(h);
  return h;
}

void hist_free(hist *h) { free(h); }

void hist_reset(hist *h) {
  memset(h, 0, sizeof(*h));
  h->min = UINT64_MAX;
}

void hist_record_ns(hist *h, uint64_t ns) {
  ns = clamp(ns, HIST_MIN_NS, HIST_MAX_NS);
  h->counts[bucket_of(ns)]++;
  h->total++;
  h->sum += (double)ns;
  if (ns < h->min) h->min = ns;
  if (ns > h->max) h->max = ns;
}

void hist_record_us(hist *h, uint64_t us) {
  /* Saturate rather than wrap: the clamp then caps it at HIST_MAX_NS. */
  hist_record_ns(h, us > UINT64_MAX / 1000 ? UINT64_MAX : us * 1000);
}

void hist_merge(hist *into, const hist *from) {
  if (from->total == 0) return;
  for (unsigned i = 0; i < NBUCKETS; i++) into->counts[i] += from->counts[i];
  into->total += from->total;
  into->sum += from->sum;
  if (from->min < into->min) into->min = from->min;
  if (from->max > into->max) into->max = from->max;
}

uint64_t hist_count(const hist *h) { return h->total; }
uint64_t hist_min_ns(const hist *h) { return h->total ? h->min : 0; }
uint64_t hist_max_ns(const hist *h) { return h->max; }
double hist_mean_ns(const hist *h) { return h->total ? h->sum / (double)h->total : 0.0; }

/* The rank (1-based) of the value at fraction q of n values. */
static uint64_t rank_of(double q, uint64_t n) {
  double r = ceil(q * (double)n);
  if (r < 1) return 1;
  if (r >= (double)n) return n;
  return (uint64_t)r;
}

/* A bucket's value, kept within what was really recorded, so that a
 * histogram of one value answers exactly that value. */
static uint64_t value_at(const hist *h, unsigned idx, uint64_t cumulative) {
  if (cumulative == h->total) return h->max;
  return clamp(bucket_value(idx), h->min, h->max);
}

uint64_t hist_percentile_ns(const hist *h, double pct) {
  if (h->total == 0) return 0;
  uint64_t want = rank_of(pct / 100.0, h->total), c = 0;
  if (want == 1) return h->min; /* the smallest is known exactly */
  for (unsigned i = 0; i < NBUCKETS; i++) {
    c += h->counts[i];
    if (c >= want) return value_at(h, i, c);
  }
  return h->max;
}

size_t hist_cdf(const hist *h, hist_point *out, size_t max) {
  static const double tail[] = {0.995, 0.999, 0.9999, 1.0};
  double targets[99 + sizeof(tail) / sizeof(tail[0])];
  size_t nt = 0, n = 0, t = 0;
  uint64_t c = 0;
  if (h->total == 0 || max == 0) return 0;
  for (int k = 1; k <= 99; k++) targets[nt++] = k / 100.0;
  for (size_t k = 0; k < sizeof(tail) / sizeof(tail[0]); k++) targets[nt++] = tail[k];
  for (unsigned i = 0; i < NBUCKETS && t < nt; i++) {
    if (h->counts[i] == 0) continue;
    c += h->counts[i];
    if (c < rank_of(targets[t], h->total)) continue;
    /* This bucket reaches one target or more: one point for all of them. */
    while (t < nt && c >= rank_of(targets[t], h->total)) t++;
    hist_point p = {value_at(h, i, c), (double)c / (double)h->total};
    /* Out of room: the last slot keeps moving so that the CDF ends at 1. */
    if (n == max) n--;
    out[n++] = p;
  }
  return n;
}
