/* Group commit: 8 threads x 200 signings on shared documents, with retries
 * and concurrent duplicates of one request id. Every answer is right, every
 * chain is complete and ordered, and fewer syncs than commands were made. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/util.h"
#include "testutil.h"

#define THREADS 8
#define PER_THREAD 200
#define DOCS 50
#define SHARED_EVERY 20 /* every 20th command of every thread: the same request id */
#define T0 1714550400000LL

typedef struct shared {
  archive *a;
  uint8_t ids[DOCS][32];
  size_t sizes[DOCS];
  int thread;
  /* per thread, per command: the signature id and order it was answered */
  uint8_t sig[THREADS][PER_THREAD][32];
  uint32_t order[THREADS][PER_THREAD];
  int replayed[THREADS][PER_THREAD];
  int errors;
  pthread_mutex_t mu;
} shared;

static shared g;

static int doc_of(int t, int i) { return (i * 7 + t) % DOCS; }

static void *submitter(void *arg) {
  int t = (int)(intptr_t)arg;
  for (int i = 0; i < PER_THREAD; i++) {
    char rid[64], cms[64];
    int shared_id = i % SHARED_EVERY == 0, retry = i % 10 == 5;
    int doc = shared_id ? i % DOCS : doc_of(t, i);
    if (shared_id) { /* every thread, the same request and the same CMS */
      snprintf(rid, sizeof(rid), "shared-%d", i);
      snprintf(cms, sizeof(cms), "CMS shared %d", i);
    } else if (retry) { /* a retry of this thread's previous command */
      snprintf(rid, sizeof(rid), "t%d-%d", t, i - 1);
      snprintf(cms, sizeof(cms), "CMS t%d-%d retried", t, i - 1);
      doc = doc_of(t, i - 1);
    } else {
      snprintf(rid, sizeof(rid), "t%d-%d", t, i);
      snprintf(cms, sizeof(cms), "CMS t%d-%d", t, i);
    }
    tu_doc d = {.sha256 = g.ids[doc], .size = g.sizes[doc], .unit = "U1"};
    size_t n;
    uint8_t *cmd = tu_cmd_signing("dms", rid, &d, "acc", cms, T0 + i, &n);
    uint8_t *res = NULL;
    size_t res_len = 0;
    kyso_err err = {0};
    kyso_status st = archive_submit(g.a, cmd, n, NULL, 0, &res, &res_len, &err);
    free(cmd);
    archive__result *r =
        st == KYSO_OK ? kyso__store__v1__command_result__unpack(NULL, res_len, res) : NULL;
    free(res);
    if (r == NULL || r->signature_id.len != 32) {
      pthread_mutex_lock(&g.mu);
      g.errors++;
      fprintf(stderr, "thread %d command %d: %s\n", t, i, err.msg);
      pthread_mutex_unlock(&g.mu);
    } else {
      memcpy(g.sig[t][i], r->signature_id.data, 32);
      g.order[t][i] = r->signature_order;
      g.replayed[t][i] = r->replayed;
    }
    tu_result_free(r);
  }
  return NULL;
}

static void check_results(void) {
  int replays = 0, shared_first = 0;
  for (int t = 0; t < THREADS; t++) {
    for (int i = 0; i < PER_THREAD; i++) {
      char cms[64];
      uint8_t want[32];
      if (i % SHARED_EVERY == 0)
        snprintf(cms, sizeof(cms), "CMS shared %d", i);
      else if (i % 10 == 5)
        snprintf(cms, sizeof(cms), "CMS t%d-%d", t, i - 1); /* the first result */
      else
        snprintf(cms, sizeof(cms), "CMS t%d-%d", t, i);
      tu_sha256(cms, strlen(cms), want);
      assert_memory_equal(g.sig[t][i], want, 32);
      replays += g.replayed[t][i];
      if (i % SHARED_EVERY == 0 && !g.replayed[t][i]) shared_first++;
      if (i % 10 == 5) {
        assert_true(g.replayed[t][i]);
        assert_int_equal(g.order[t][i], g.order[t][i - 1]);
      }
    }
  }
  /* each shared request was recorded by exactly one thread */
  assert_int_equal(shared_first, PER_THREAD / SHARED_EVERY);
  assert_int_equal(replays,
                   THREADS * (PER_THREAD / 10) + (THREADS - 1) * (PER_THREAD / SHARED_EVERY));
}

/* Every document's chain holds each of its signatures once, in order. */
static void check_chains(void) {
  kyso_err err = {0};
  uint64_t total = 0;
  for (int k = 0; k < DOCS; k++) {
    Kyso__Store__V1__DocumentRecord *rec = tu_document(g.a, g.ids[k]);
    for (size_t j = 0; j < rec->n_signature_ids; j++) {
      uint8_t *v = NULL;
      size_t vl = 0;
      assert_int_equal(archive_get_signature(g.a, rec->signature_ids[j].data, &v, &vl, &err),
                       KYSO_OK);
      Kyso__Store__V1__SignatureRecord *s = kyso__store__v1__signature_record__unpack(NULL, vl, v);
      assert_int_equal(s->order, j + 1);
      assert_memory_equal(s->document_sha256.data, g.ids[k], 32);
      kyso__store__v1__signature_record__free_unpacked(s, NULL);
      free(v);
    }
    total += rec->n_signature_ids;
    kyso__store__v1__document_record__free_unpacked(rec, NULL);
  }
  uint64_t distinct =
      (uint64_t)THREADS * (PER_THREAD - PER_THREAD / 10 - PER_THREAD / SHARED_EVERY) +
      PER_THREAD / SHARED_EVERY;
  assert_int_equal(total, distinct);
  assert_int_equal(tu_count(g.a, ARCHIVE__CF_SIGNATURES, NULL, 0), distinct);
}

static void test_group_commit(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  kyso_err err = {0};
  memset(&g, 0, sizeof(g));
  pthread_mutex_init(&g.mu, NULL);
  g.a = tu_open(dir, NULL);
  for (int k = 0; k < DOCS; k++) {
    g.sizes[k] = 1000 + (size_t)k;
    uint8_t *b = tu_bytes(g.sizes[k], (uint32_t)k);
    assert_int_equal(archive_put_blob(g.a, b, g.sizes[k], g.ids[k], &err), KYSO_OK);
    free(b);
  }
  archive_stats before, after;
  archive_get_stats(g.a, &before);
  pthread_t th[THREADS];
  int64_t t0 = kyso_now_ms();
  for (int t = 0; t < THREADS; t++)
    assert_int_equal(pthread_create(&th[t], NULL, submitter, (void *)(intptr_t)t), 0);
  for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
  int64_t ms = kyso_now_ms() - t0;
  archive_get_stats(g.a, &after);
  assert_int_equal(g.errors, 0);
  uint64_t commands = after.commands - before.commands;
  uint64_t syncs = after.synced_writes - before.synced_writes;
  uint64_t batches = after.batches - before.batches;
  printf(
      "group commit: %llu commands in %lld ms (%.0f/s), %llu batches, %llu synced writes, "
      "%.1f commands per sync\n",
      (unsigned long long)commands, (long long)ms,
      ms ? 1000.0 * (double)commands / (double)ms : 0.0, (unsigned long long)batches,
      (unsigned long long)syncs, syncs ? (double)commands / (double)syncs : 0.0);
  assert_int_equal(commands, THREADS * PER_THREAD);
  assert_true(syncs < commands);
  check_results();
  check_chains();
  /* the same holds after a restart */
  archive_close(g.a);
  g.a = tu_open(dir, NULL);
  check_chains();
  archive_close(g.a);
  pthread_mutex_destroy(&g.mu);
  tu_rmrf(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_group_commit)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
