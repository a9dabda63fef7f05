/* kyso tests — hsm/ under threads: many signers on a small session pool,
 * reinit while signing, racing generations, and C_Sign rates. Also run under
 * -DKYSO_TSAN=ON. Threads never call cmocka asserts (they longjmp); they
 * count failures and keep the first message, and the main thread asserts. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "kyso/hsm.h"
#include "kyso/util.h"
#include "sig_verify.h"
#include "softhsm_fixture.h"

#define TOKEN "kyso-conc"
#define ALICE "kyso/personal/alice"
#define SEAL "kyso/seal/H37.DN.001"
#define POOL 4

typedef struct world {
  fx_token tok;
  hsm *h;
  EVP_PKEY *seal_pub;
  pthread_mutex_t mu;
  unsigned failures;
  char first[KYSO_ERR_MSG_MAX + 64];
} world;

typedef struct job {
  world *w;
  pthread_barrier_t *start;
  unsigned id, count;
  const char *label;  /* for the generation race */
  hsm_mech mech;      /* for the rate runs */
  const char *key;
  int64_t until_ms;   /* rate runs stop here */
  unsigned done;
  kyso_status st;
} job;

static void record(world *w, const char *what, const kyso_err *err) {
  pthread_mutex_lock(&w->mu);
  if (w->failures++ == 0) snprintf(w->first, sizeof(w->first), "%s: %s", what, err->msg);
  pthread_mutex_unlock(&w->mu);
}

static void reset(world *w) {
  w->failures = 0;
  w->first[0] = '\0';
}

static int setup(void **state) {
  static world w;
  kyso_err err = {0};
  hsm_opts o = {KYSO_SOFTHSM_MODULE, TOKEN, FX_PIN, POOL};
  memset(&w, 0, sizeof(w));
  pthread_mutex_init(&w.mu, NULL);
  if (fx_token_make(&w.tok, TOKEN) != 0) return -1;
  if (hsm_open(&o, &w.h, &err) != KYSO_OK ||
      hsm_generate_key(w.h, SEAL, HSM_KEY_EC_P256, NULL, &err) != KYSO_OK ||
      hsm_generate_key(w.h, ALICE, HSM_KEY_RSA_2048, NULL, &err) != KYSO_OK ||
      hsm_public_key(w.h, SEAL, &w.seal_pub, &err) != KYSO_OK) {
    fprintf(stderr, "setup: %s\n", err.msg);
    return -1;
  }
  *state = &w;
  return 0;
}

static int teardown(void **state) {
  world *w = *state;
  if (w == NULL) return 0;
  EVP_PKEY_free(w->seal_pub);
  hsm_close(w->h);
  fx_token_free(&w->tok);
  pthread_mutex_destroy(&w->mu);
  return 0;
}

/* Runs fn on n jobs at once (a barrier lines the threads up). */
static void run_threads(job *jobs, unsigned n, void *(*fn)(void *)) {
  pthread_t t[16];
  pthread_barrier_t start;
  assert_true(n <= 16);
  pthread_barrier_init(&start, NULL, n);
  for (unsigned i = 0; i < n; i++) {
    jobs[i].start = &start;
    assert_int_equal(pthread_create(&t[i], NULL, fn, &jobs[i]), 0);
  }
  for (unsigned i = 0; i < n; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&start);
}

/* count ECDSA signatures over distinct digests, each verified. */
static void *ecdsa_signer(void *arg) {
  job *j = arg;
  pthread_barrier_wait(j->start);
  for (unsigned i = 0; i < j->count; i++) {
    kyso_err err = {0};
    uint8_t seed[8] = {(uint8_t)j->id, (uint8_t)(i >> 8), (uint8_t)i}, digest[32], sig[64];
    size_t len = sizeof(sig);
    unsigned int md_len;
    EVP_Digest(seed, sizeof(seed), digest, &md_len, EVP_sha256(), NULL);
    if (hsm_sign_digest(j->w->h, SEAL, HSM_MECH_ECDSA_SHA256, digest, 32, sig, &len, &err) !=
        KYSO_OK) {
      record(j->w, "sign", &err);
      continue;
    }
    if (!sig_verify(j->w->seal_pub, HSM_MECH_ECDSA_SHA256, digest, sig, len)) {
      kyso_fail(&err, KYSO_INTERNAL, "thread %u signature %u does not verify", j->id, i);
      record(j->w, "verify", &err);
    }
    j->done++;
  }
  return NULL;
}

/* 8 threads × 200 signatures through a pool of 4 sessions: half the threads
 * wait for a session at any moment. */
static void test_concurrent_ecdsa(void **state) {
  world *w = *state;
  job jobs[8];
  reset(w);
  for (unsigned i = 0; i < 8; i++) jobs[i] = (job){.w = w, .id = i, .count = 200};
  int64_t t0 = kyso_now_ms();
  run_threads(jobs, 8, ecdsa_signer);
  int64_t ms = kyso_now_ms() - t0;
  if (w->failures) fail_msg("%u failures; first: %s", w->failures, w->first);
  for (unsigned i = 0; i < 8; i++) assert_int_equal(jobs[i].done, 200);
  printf("# 8 threads x 200 ECDSA P-256 signs (pool %d, each verified): %lld ms, %.0f/s\n",
         POOL, (long long)ms, 1600.0 * 1000.0 / (double)(ms ? ms : 1));
}

/* Signers keep going while the token is reinitialised three times: they
 * wait for the reinit and carry on with the new handles, none fails. */
static void test_reinit_under_load(void **state) {
  world *w = *state;
  job jobs[4];
  pthread_t t[4];
  pthread_barrier_t start;
  reset(w);
  pthread_barrier_init(&start, NULL, 5);
  for (unsigned i = 0; i < 4; i++) {
    jobs[i] = (job){.w = w, .id = 10 + i, .count = 300, .start = &start};
    assert_int_equal(pthread_create(&t[i], NULL, ecdsa_signer, &jobs[i]), 0);
  }
  pthread_barrier_wait(&start);
  for (int r = 0; r < 3; r++) {
    kyso_err err = {0};
    struct timespec pause = {0, 5 * 1000 * 1000};
    nanosleep(&pause, NULL);
    if (hsm_reinit(w->h, &err) != KYSO_OK) record(w, "reinit", &err);
  }
  for (unsigned i = 0; i < 4; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&start);
  if (w->failures) fail_msg("%u failures; first: %s", w->failures, w->first);
  for (unsigned i = 0; i < 4; i++) assert_int_equal(jobs[i].done, 300);
}

static void *generator(void *arg) {
  job *j = arg;
  kyso_err err = {0};
  pthread_barrier_wait(j->start);
  j->st = hsm_generate_key(j->w->h, j->label, HSM_KEY_EC_P256, NULL, &err);
  return NULL;
}

static void test_generate_race(void **state) {
  world *w = *state;
  job jobs[6];
  char labels[6][32];
  int ok = 0, exists = 0;
  for (unsigned i = 0; i < 6; i++) jobs[i] = (job){.w = w, .id = i, .label = "kyso/race"};
  run_threads(jobs, 6, generator);
  for (unsigned i = 0; i < 6; i++) {
    ok += jobs[i].st == KYSO_OK;
    exists += jobs[i].st == KYSO_ALREADY_EXISTS;
  }
  assert_int_equal(ok, 1);
  assert_int_equal(exists, 5);
  /* Distinct labels generate side by side. */
  for (unsigned i = 0; i < 6; i++) {
    snprintf(labels[i], sizeof(labels[i]), "kyso/parallel/%u", i);
    jobs[i] = (job){.w = w, .id = i, .label = labels[i]};
  }
  run_threads(jobs, 6, generator);
  for (unsigned i = 0; i < 6; i++) {
    kyso_err err = {0};
    hsm_key_info info;
    assert_int_equal(jobs[i].st, KYSO_OK);
    assert_int_equal(hsm_key_info_get(w->h, labels[i], &info, &err), KYSO_OK);
  }
}

static void *rate_signer(void *arg) {
  job *j = arg;
  uint8_t digest[32] = {(uint8_t)j->id}, sig[KYSO_MAX_SIGNATURE];
  pthread_barrier_wait(j->start);
  while (kyso_now_ms() < j->until_ms) {
    kyso_err err = {0};
    size_t len = sizeof(sig);
    if (hsm_sign_digest(j->w->h, j->key, j->mech, digest, 32, sig, &len, &err) != KYSO_OK) {
      record(j->w, "rate sign", &err);
      break;
    }
    j->done++;
  }
  return NULL;
}

/* Not a pass/fail measure: prints the C_Sign rate through the whole hsm
 * path (map lookup, pool, C_Sign) for DESIGN's "measured facts". */
static void test_sign_rates(void **state) {
  world *w = *state;
  static const struct {
    const char *key, *name;
    hsm_mech mech;
  } runs[] = {{ALICE, "RSA-2048 PKCS#1", HSM_MECH_RSA_PKCS1_SHA256},
              {SEAL, "ECDSA P-256", HSM_MECH_ECDSA_SHA256}};
  reset(w);
  for (size_t r = 0; r < 2; r++) {
    for (unsigned threads = 1; threads <= 2; threads++) {
      job jobs[2];
      int64_t t0 = kyso_now_ms();
      for (unsigned i = 0; i < threads; i++)
        jobs[i] = (job){.w = w, .id = i, .key = runs[r].key, .mech = runs[r].mech,
                        .until_ms = t0 + 1000};
      run_threads(jobs, threads, rate_signer);
      int64_t ms = kyso_now_ms() - t0;
      unsigned total = 0;
      for (unsigned i = 0; i < threads; i++) total += jobs[i].done;
      printf("# %s: %u thread(s): %.0f signs/s\n", runs[r].name, threads,
             total * 1000.0 / (double)(ms ? ms : 1));
    }
  }
  if (w->failures) fail_msg("%u failures; first: %s", w->failures, w->first);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_concurrent_ecdsa),
      cmocka_unit_test(test_reinit_under_load),
      cmocka_unit_test(test_generate_race),
      cmocka_unit_test(test_sign_rates),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
