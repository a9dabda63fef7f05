/* kyso tests — the peer cache (server/rpc/rpc_peer_cache.c) on its own, with
 * clocks the test moves: hits, the ttl, notAfter, the bound and eviction
 * order, replacement, and many threads at once (run under TSan). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "rpc_internal.h"

/* The clocks every cache in this file runs on. */
typedef struct fake_clock {
  int64_t mono_ms;
  time_t wall;
} fake_clock;

static int64_t fake_mono(void *ctx) { return ((fake_clock *)ctx)->mono_ms; }
static time_t fake_wall(void *ctx) { return ((fake_clock *)ctx)->wall; }

static const time_t T0 = 1700000000; /* 2023-11-14: the fake wall clock's start */

static rpc_peer_cache *new_cache(unsigned entries, unsigned ttl, fake_clock *fc) {
  rpc_peer_cache *c = NULL;
  kyso_err err;
  kyso_err_clear(&err);
  assert_int_equal(rpc_peer_cache_new(entries, ttl, &c, &err), KYSO_OK);
  assert_non_null(c);
  fc->mono_ms = 5000;
  fc->wall = T0;
  rpc__clock clk = {fake_mono, fake_wall, fc};
  rpc__peer_cache_set_clock(c, &clk);
  return c;
}

/* A self-signed certificate valid until not_after. */
static X509 *make_cert(time_t not_after) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  assert_non_null(k);
  assert_non_null(x);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const unsigned char *)"peer-cache-test", -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  ASN1_TIME_set(X509_getm_notBefore(x), T0 - 86400);
  ASN1_TIME_set(X509_getm_notAfter(x), not_after);
  X509_set_pubkey(x, k);
  assert_true(X509_sign(x, k, EVP_sha256()) > 0);
  EVP_PKEY_free(k);
  return x;
}

static void key_of(uint8_t key[32], unsigned n) {
  memset(key, 0, 32);
  memcpy(key, &n, sizeof(n));
  key[31] = 0x5a;
}

static void test_off_and_bad_sizes(void **state) {
  rpc_peer_cache *c = (rpc_peer_cache *)1;
  kyso_err err;
  kyso_err_clear(&err);
  uint8_t key[32];
  key_of(key, 1);
  /* ttl 0 is "off": no cache, and a NULL cache misses and stores nothing. */
  assert_int_equal(rpc_peer_cache_new(16, 0, &c, &err), KYSO_OK);
  assert_null(c);
  rpc_peer_cache_put(NULL, key, NULL, key, NULL);
  assert_int_equal(rpc_peer_cache_get(NULL, key, NULL, NULL), 0);
  rpc_peer_cache_clear(NULL);
  rpc_peer_cache_free(NULL);
  assert_int_equal(rpc_peer_cache_new(0, 60, &c, &err), KYSO_INVALID_ARGUMENT);
  assert_null(c);
  assert_non_null(strstr(err.msg, "0 entries"));
}

static void test_hit_returns_cert_and_fingerprint(void **state) {
  fake_clock fc;
  rpc_peer_cache *c = new_cache(8, 60, &fc);
  X509 *x = make_cert(T0 + 86400);
  uint8_t key[32], sha[32], got[32];
  X509 *out = NULL;
  key_of(key, 7);
  memset(sha, 0xab, sizeof(sha));
  assert_int_equal(rpc_peer_cache_get(c, key, &out, got), 0);
  rpc_peer_cache_put(c, key, x, sha, X509_get0_notAfter(x));
  X509_free(x); /* the cache holds its own reference */
  for (int i = 0; i < 3; i++) {
    memset(got, 0, sizeof(got));
    out = NULL;
    assert_int_equal(rpc_peer_cache_get(c, key, &out, got), 1);
    assert_memory_equal(got, sha, 32);
    assert_non_null(out);
    assert_int_equal(X509_cmp_time(X509_get0_notAfter(out), &(time_t){T0 + 86399}), 1);
    X509_free(out); /* ours: a reference per hit */
  }
  /* Another key misses; a lookup that wants no certificate hits too. */
  key_of(key, 8);
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 0);
  key_of(key, 7);
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 1);
  rpc_peer_cache_free(c);
}

static void test_entry_without_cert(void **state) {
  fake_clock fc;
  rpc_peer_cache *c = new_cache(8, 60, &fc);
  X509 *x = make_cert(T0 + 86400);
  uint8_t key[32];
  X509 *out = NULL;
  key_of(key, 3);
  rpc_peer_cache_put(c, key, NULL, NULL, X509_get0_notAfter(x));
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 1);
  /* Asked for a certificate it does not hold, it misses (and gives none). */
  assert_int_equal(rpc_peer_cache_get(c, key, &out, NULL), 0);
  assert_null(out);
  /* No notAfter, nothing stored. */
  key_of(key, 4);
  rpc_peer_cache_put(c, key, NULL, NULL, NULL);
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 0);
  X509_free(x);
  rpc_peer_cache_free(c);
}

static void test_ttl_expires(void **state) {
  fake_clock fc;
  rpc_peer_cache *c = new_cache(8, 60, &fc);
  X509 *x = make_cert(T0 + 86400);
  uint8_t key[32];
  key_of(key, 1);
  rpc_peer_cache_put(c, key, x, NULL, X509_get0_notAfter(x));
  fc.mono_ms += 60 * 1000 - 1;
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 1);
  /* Hits do not extend the life: one verification per ttl. */
  fc.mono_ms += 1;
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 0);
  assert_int_equal(rpc__peer_cache_count(c), 0);
  /* Stored again, it lives another ttl from then. */
  rpc_peer_cache_put(c, key, x, NULL, X509_get0_notAfter(x));
  fc.mono_ms += 59 * 1000;
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 1);
  X509_free(x);
  rpc_peer_cache_free(c);
}

static void test_not_after_ends_an_entry(void **state) {
  fake_clock fc;
  rpc_peer_cache *c = new_cache(8, 3600, &fc);
  X509 *x = make_cert(T0 + 100);
  uint8_t key[32];
  key_of(key, 1);
  rpc_peer_cache_put(c, key, x, NULL, X509_get0_notAfter(x));
  fc.wall = T0 + 99;
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 1);
  /* Well inside the ttl, but the certificate has expired. */
  fc.wall = T0 + 100;
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 0);
  /* An already expired certificate is not stored at all. */
  rpc_peer_cache_put(c, key, x, NULL, X509_get0_notAfter(x));
  assert_int_equal(rpc__peer_cache_count(c), 0);
  fc.wall = T0;
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 0);
  X509_free(x);
  rpc_peer_cache_free(c);
}

static void test_replace_and_clear(void **state) {
  fake_clock fc;
  rpc_peer_cache *c = new_cache(8, 60, &fc);
  X509 *a = make_cert(T0 + 86400), *b = make_cert(T0 + 2 * 86400), *out = NULL;
  uint8_t key[32], sha_a[32], sha_b[32], got[32];
  key_of(key, 1);
  memset(sha_a, 0xaa, 32);
  memset(sha_b, 0xbb, 32);
  rpc_peer_cache_put(c, key, a, sha_a, X509_get0_notAfter(a));
  rpc_peer_cache_put(c, key, b, sha_b, X509_get0_notAfter(b));
  assert_int_equal(rpc__peer_cache_count(c), 1);
  assert_int_equal(rpc_peer_cache_get(c, key, &out, got), 1);
  assert_ptr_equal(out, b);
  assert_memory_equal(got, sha_b, 32);
  X509_free(out);
  rpc_peer_cache_clear(c);
  assert_int_equal(rpc__peer_cache_count(c), 0);
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 0);
  /* Usable after clearing. */
  rpc_peer_cache_put(c, key, a, sha_a, X509_get0_notAfter(a));
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, got), 1);
  assert_memory_equal(got, sha_a, 32);
  X509_free(a);
  X509_free(b);
  rpc_peer_cache_free(c);
}

/* A full cache keeps its bound; the entry to go is the oldest not looked up
 * since the clock hand last passed, so certificates in use stay. */
static void test_eviction_keeps_the_bound(void **state) {
  enum { CAP = 4 };
  fake_clock fc;
  rpc_peer_cache *c = new_cache(CAP, 60, &fc);
  X509 *x = make_cert(T0 + 86400);
  uint8_t key[32];
  /* 0..3 fill it; 100 evicts the oldest (0); 2 is looked up, so 101 evicts
   * 1 and 102 evicts 3, passing 2 over. */
  static const struct { char op; unsigned key; } steps[] = {
      {'p', 0}, {'p', 1}, {'p', 2}, {'p', 3}, {'p', 100}, {'g', 2}, {'p', 101}, {'p', 102}};
  for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
    key_of(key, steps[i].key);
    if (steps[i].op == 'p')
      rpc_peer_cache_put(c, key, x, NULL, X509_get0_notAfter(x));
    else
      assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 1);
    assert_true(rpc__peer_cache_count(c) <= CAP);
  }
  static const struct { unsigned key; int want; } after[] = {
      {0, 0}, {1, 0}, {3, 0}, {2, 1}, {100, 1}, {101, 1}, {102, 1}};
  for (size_t i = 0; i < sizeof(after) / sizeof(after[0]); i++) {
    key_of(key, after[i].key);
    int got = rpc_peer_cache_get(c, key, NULL, NULL);
    if (got != after[i].want)
      fail_msg("key %u: got %s, want %s", after[i].key, got ? "hit" : "miss",
               after[i].want ? "hit" : "miss");
  }
  /* Many more keys than room: never above the bound, the newest always in. */
  for (unsigned i = 1000; i < 1000 + 10 * CAP; i++) {
    key_of(key, i);
    rpc_peer_cache_put(c, key, x, NULL, X509_get0_notAfter(x));
    if (rpc__peer_cache_count(c) != CAP)
      fail_msg("after key %u: %zu entries, want %d", i, rpc__peer_cache_count(c), CAP);
    assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 1);
  }
  X509_free(x);
  rpc_peer_cache_free(c);
}

/* An expired entry is the first to go, whatever its mark. */
static void test_eviction_prefers_expired(void **state) {
  fake_clock fc;
  rpc_peer_cache *c = new_cache(2, 60, &fc);
  X509 *x = make_cert(T0 + 86400);
  uint8_t key[32];
  key_of(key, 1);
  rpc_peer_cache_put(c, key, x, NULL, X509_get0_notAfter(x));
  fc.mono_ms += 30 * 1000;
  key_of(key, 2);
  rpc_peer_cache_put(c, key, x, NULL, X509_get0_notAfter(x));
  fc.mono_ms += 31 * 1000; /* key 1 is past its ttl, key 2 is not */
  key_of(key, 3);
  rpc_peer_cache_put(c, key, x, NULL, X509_get0_notAfter(x));
  key_of(key, 2);
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 1);
  key_of(key, 3);
  assert_int_equal(rpc_peer_cache_get(c, key, NULL, NULL), 1);
  X509_free(x);
  rpc_peer_cache_free(c);
}

/* Threads hitting, missing, storing and evicting the same small cache. */
typedef struct worker_arg {
  rpc_peer_cache *c;
  X509 *x;
  unsigned seed;
  int wrong;
} worker_arg;

static void *worker(void *p) {
  worker_arg *a = p;
  uint8_t key[32], sha[32], got[32];
  for (unsigned i = 0; i < 20000; i++) {
    unsigned k = (a->seed * 31 + i * 7) % 24;
    key_of(key, k);
    memset(sha, (int)k, 32);
    X509 *out = NULL;
    if (rpc_peer_cache_get(a->c, key, &out, got)) {
      if (memcmp(got, sha, 32) != 0 || out != a->x) a->wrong++;
      X509_free(out);
    } else {
      rpc_peer_cache_put(a->c, key, a->x, sha, X509_get0_notAfter(a->x));
    }
    if (i % 5000 == 4999 && a->seed == 0) rpc_peer_cache_clear(a->c);
  }
  return NULL;
}

static void test_threads(void **state) {
  enum { N = 4 };
  rpc_peer_cache *c = NULL;
  kyso_err err;
  kyso_err_clear(&err);
  assert_int_equal(rpc_peer_cache_new(16, 60, &c, &err), KYSO_OK); /* real clocks */
  X509 *x = make_cert(time(NULL) + 86400);
  pthread_t t[N];
  worker_arg a[N];
  for (unsigned i = 0; i < N; i++) {
    a[i] = (worker_arg){c, x, i, 0};
    assert_int_equal(pthread_create(&t[i], NULL, worker, &a[i]), 0);
  }
  for (unsigned i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    if (a[i].wrong) fail_msg("thread %u: %d hits with the wrong value", i, a[i].wrong);
  }
  assert_true(rpc__peer_cache_count(c) <= 16);
  rpc_peer_cache_free(c);
  X509_free(x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_off_and_bad_sizes),
      cmocka_unit_test(test_hit_returns_cert_and_fingerprint),
      cmocka_unit_test(test_entry_without_cert),
      cmocka_unit_test(test_ttl_expires),
      cmocka_unit_test(test_not_after_ends_an_entry),
      cmocka_unit_test(test_replace_and_clear),
      cmocka_unit_test(test_eviction_keeps_the_bound),
      cmocka_unit_test(test_eviction_prefers_expired),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
