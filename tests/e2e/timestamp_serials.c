/* e2e_timestamp_serials: 10,000 time-stamps from 8 concurrent clients,
 * with kysod killed (SIGKILL) and restarted in the middle while the clients
 * keep asking. Every granted token, read by OpenSSL: 10,000 distinct
 * serials; sorted by serial, genTime never decreases; every serial issued
 * after the restart is above every one issued before it (no serial reused
 * after a crash). Clients retry what the restart interrupts. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"

#define TOKENS 10000
#define THREADS 8
#define RESTART_AT (TOKENS / 2)

/* Which kysod answered: the first, uncertain (between the kill and the
 * second being ready), or the second. */
enum { PHASE_FIRST = 1, PHASE_UNCERTAIN = 2, PHASE_SECOND = 3 };

typedef struct token {
  uint64_t serial;
  int64_t gen_ms;
  int phase;
} token;

static e2e *E;
static token tokens[TOKENS];
static atomic_int taken;     /* slots claimed */
static atomic_int phase = PHASE_FIRST;
static atomic_int failures;  /* answers that were neither a token nor a retryable error */
static atomic_int retries;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t progress = PTHREAD_COND_INITIALIZER;
static int done_count;

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  e2e_free(E);
  return 0;
}

static void start(void **state) {
  (void)state;
  /* A fixed port, so the clients' channels find the restarted kysod. */
  char conf[96];
  int port = e2e_free_port();
  if (port <= 0) E2E_FAIL("no free port");
  snprintf(conf, sizeof(conf), "\n[server]\nlisten = 127.0.0.1:%d\n", port);
  e2e_config_append(E, conf);
  e2e_start(E, NULL);
}

static void note_done(void) {
  pthread_mutex_lock(&mu);
  done_count++;
  pthread_cond_broadcast(&progress);
  pthread_mutex_unlock(&mu);
}

static void *client_main(void *arg) {
  (void)arg;
  kyso_client *c = e2e_client_open(E, E2E_DMS);
  char msg[512];
  for (;;) {
    int slot = atomic_fetch_add(&taken, 1);
    if (slot >= TOKENS) break;
    uint8_t seed[16];
    memcpy(seed, &slot, sizeof(slot));
    memcpy(seed + 8, "serials!", 8);
    size_t qlen = 0;
    uint8_t *q = e2e_ts_query(seed, sizeof(seed), slot % 2, &qlen);
    for (;;) {
      Kyso__V1__StampResponse *resp = NULL;
      int before = atomic_load(&phase);
      int st = q ? e2e_stamp_with(c, q, qlen, 20000, &resp, msg, sizeof(msg)) : -1;
      int after = atomic_load(&phase);
      if (st == 0) {
        e2e_ts ts;
        if (e2e_ts_parse(resp->reply.data, resp->reply.len, 0, &ts) != 0 || ts.status != 0 ||
            !ts.has_token || ts.serial == 0) {
          fprintf(stderr, "e2e: slot %d: reply is not a granted token (status %d)\n", slot,
                  ts.status);
          atomic_fetch_add(&failures, 1);
        } else {
          tokens[slot].serial = ts.serial;
          tokens[slot].gen_ms = ts.gen_ms;
          tokens[slot].phase = before == after ? before : PHASE_UNCERTAIN;
        }
        kyso__v1__stamp_response__free_unpacked(resp, NULL);
        break;
      }
      /* The restart: connection refused or reset, or the new kysod waiting
       * for its clock to pass the last genTime bound. Back off and retry. */
      if (st == 14 || st == 4 || st == -1) {
        /* A fresh channel connects at once; the old one would wait out
         * gRPC's reconnect backoff, which grows to minutes. */
        atomic_fetch_add(&retries, 1);
        kyso_client_close(c);
        usleep(20 * 1000);
        c = e2e_client_open(E, E2E_DMS);
        continue;
      }
      fprintf(stderr, "e2e: slot %d: status %d (%s)\n", slot, st, msg);
      atomic_fetch_add(&failures, 1);
      break;
    }
    free(q);
    note_done();
  }
  kyso_client_close(c);
  return NULL;
}

static int cmp_serial(const void *a, const void *b) {
  const token *x = a, *y = b;
  return x->serial < y->serial ? -1 : x->serial > y->serial;
}

static void ten_thousand_tokens_across_a_crash(void **state) {
  (void)state;
  pthread_t th[THREADS];
  int64_t t0 = kyso_now_ms();
  for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, client_main, NULL);

  pthread_mutex_lock(&mu);
  while (done_count < RESTART_AT) pthread_cond_wait(&progress, &mu);
  pthread_mutex_unlock(&mu);
  fprintf(stderr, "e2e: %d tokens in %lld ms\n", RESTART_AT, (long long)(kyso_now_ms() - t0));
  atomic_store(&phase, PHASE_UNCERTAIN);
  e2e_kill9(E);
  fprintf(stderr, "e2e: killed kysod after %d tokens; restarting\n", RESTART_AT);
  e2e_start(E, NULL);
  atomic_store(&phase, PHASE_SECOND);

  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  int64_t ms = kyso_now_ms() - t0;
  fprintf(stderr, "e2e: %d tokens in %lld ms (%d retries around the restart)\n", TOKENS,
          (long long)ms, atomic_load(&retries));
  E2E_EQ("failed requests", atomic_load(&failures), 0);

  uint64_t max_first = 0, min_second = UINT64_MAX;
  int firsts = 0, seconds = 0;
  for (int i = 0; i < TOKENS; i++) {
    if (tokens[i].serial == 0) E2E_FAIL("slot %d got no token", i);
    if (tokens[i].phase == PHASE_FIRST) {
      firsts++;
      if (tokens[i].serial > max_first) max_first = tokens[i].serial;
    } else if (tokens[i].phase == PHASE_SECOND) {
      seconds++;
      if (tokens[i].serial < min_second) min_second = tokens[i].serial;
    }
  }
  fprintf(stderr, "e2e: %d tokens before the kill, %d after the restart; serials %llu..%llu "
                  "then %llu..\n",
          firsts, seconds, (unsigned long long)(max_first >> 48),
          (unsigned long long)max_first, (unsigned long long)min_second);
  if (firsts < RESTART_AT / 2 || seconds < TOKENS / 4)
    E2E_FAIL("the restart did not fall in the middle (%d before, %d after)", firsts, seconds);
  if (!(max_first < min_second))
    E2E_FAIL("a serial after the restart (%llu) is not above all before it (max %llu)",
             (unsigned long long)min_second, (unsigned long long)max_first);

  qsort(tokens, TOKENS, sizeof(tokens[0]), cmp_serial);
  for (int i = 1; i < TOKENS; i++) {
    if (tokens[i].serial == tokens[i - 1].serial)
      E2E_FAIL("serial %llu issued twice", (unsigned long long)tokens[i].serial);
    if (tokens[i].gen_ms < tokens[i - 1].gen_ms)
      E2E_FAIL("genTime goes backwards: serial %llu at %lld ms, serial %llu at %lld ms",
               (unsigned long long)tokens[i - 1].serial, (long long)tokens[i - 1].gen_ms,
               (unsigned long long)tokens[i].serial, (long long)tokens[i].gen_ms);
  }
  if ((tokens[0].serial >> 48) != 1) E2E_FAIL("serials do not carry node id 1 in their top bits");
}

static void stop_clean(void **state) {
  (void)state;
  e2e_stop(E);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start),
      cmocka_unit_test(ten_thousand_tokens_across_a_crash),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_timestamp_serials", tests, setup, teardown);
}
