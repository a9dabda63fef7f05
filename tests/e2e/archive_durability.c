/* e2e_archive_durability: nothing acknowledged is lost. Five rounds: client
 * threads sign distinct documents (request ids, sizes from 100 B to
 * 512 KiB) against one kysod and record every OK; once a round's share of
 * OKs is in, kysod gets SIGKILL with calls in flight. It restarts on the
 * same data directory, and every document ever acknowledged is there:
 * Archive.Stat lists the signature id and the CMS bytes the Sign returned,
 * Archive.Get returns exactly the bytes. Requests that were in flight at
 * the kill are retried with their request ids and answer OK (replayed if
 * their write had made it), so a crash leaves no half-written request. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"

#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define ACCOUNT "durable.ec"
#define ROUNDS 5
#define THREADS 4
#define MAX_DOCS 20000
#define BIG_DOC (512 * 1024)

/* One document: its bytes are e2e_fill(seed), so only the seed is kept. */
typedef struct doc {
  uint64_t seed;
  size_t len;
  int acked;             /* a Sign answered OK */
  int in_flight;         /* sent, no OK (kill, or an error) */
  char archive_id[65];
  char signature_id[65];
  uint8_t *cms;
  size_t cms_len;
} doc;

static e2e *E;
static doc docs[MAX_DOCS];
static atomic_int next_doc;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t acked_cv = PTHREAD_COND_INITIALIZER;
static int round_acks;
static atomic_int stop;    /* workers start no new call */
static atomic_int killing; /* failures from here on are the kill's */

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  return 0;
}

static size_t doc_len(uint64_t seed) {
  /* One in six is large (64 KiB..512 KiB): kills land inside big batches too. */
  if (seed % 6 == 5) return 64 * 1024 + (size_t)(seed * 7919) % (BIG_DOC - 64 * 1024);
  return 100 + (size_t)(seed * 131) % 8000;
}

static void request_id(uint64_t seed, char out[32]) {
  snprintf(out, 32, "dur-%llu", (unsigned long long)seed);
}

/* Sign of docs[i]; fills the record on OK. Thread-safe. */
static int sign_doc(kyso_client *c, int i, Kyso__V1__SignResponse **out, char *msg,
                    size_t msg_size) {
  doc *d = &docs[i];
  uint8_t *bytes = malloc(d->len);
  char rid[32], number[32];
  if (bytes == NULL) {
    snprintf(msg, msg_size, "out of memory");
    return -1;
  }
  e2e_fill(bytes, d->len, d->seed, 0);
  request_id(d->seed, rid);
  snprintf(number, sizeof(number), "%llu/QD-BT", (unsigned long long)d->seed);
  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  e2e_key_ref(&ref, PERSONAL, ACCOUNT);
  meta.unit = "H37.BT.001";
  meta.number_notation = number;
  meta.issue_date = "2024-07-01";
  meta.title = "Quyết định lưu trữ bền vững";
  req.key = &ref;
  req.metadata = &meta;
  req.document.data = bytes;
  req.document.len = d->len;
  req.request_id = rid;
  int st = e2e_sign_with(c, &req, 30000, out, msg, msg_size);
  free(bytes);
  return st;
}

/* Records an OK answer (main thread or a worker, under mu). */
static void record_ack(int i, const Kyso__V1__SignResponse *r) {
  doc *d = &docs[i];
  d->acked = 1;
  d->in_flight = 0;
  snprintf(d->archive_id, sizeof(d->archive_id), "%s", r->archive_id);
  snprintf(d->signature_id, sizeof(d->signature_id), "%s", r->signature_id);
  free(d->cms);
  d->cms = malloc(r->signature.len);
  memcpy(d->cms, r->signature.data, r->signature.len);
  d->cms_len = r->signature.len;
}

typedef struct worker {
  kyso_client *client;
  int ok, failed;
  char first_error[1024];
} worker;

static void *run_worker(void *arg) {
  worker *w = arg;
  while (!atomic_load(&stop)) {
    int i = atomic_fetch_add(&next_doc, 1);
    if (i >= MAX_DOCS) break;
    docs[i].seed = 1000 + (uint64_t)i;
    docs[i].len = doc_len(docs[i].seed);
    docs[i].in_flight = 1;
    Kyso__V1__SignResponse *r = NULL;
    char msg[512];
    int st = sign_doc(w->client, i, &r, msg, sizeof(msg));
    pthread_mutex_lock(&mu);
    if (st == 0) {
      record_ack(i, r);
      w->ok++;
      round_acks++;
      pthread_cond_broadcast(&acked_cv);
    } else {
      /* After the kill every call fails; before it none may. */
      if (!atomic_load(&killing) && w->first_error[0] == '\0')
        snprintf(w->first_error, sizeof(w->first_error), "doc %d: status %d (%s)", i, st, msg);
      w->failed++;
    }
    pthread_mutex_unlock(&mu);
    kyso__v1__sign_response__free_unpacked(r, NULL);
  }
  return NULL;
}

/* Everything acknowledged so far is there, bytes and signature. */
static void verify_acked(const char *when) {
  int checked = 0;
  int64_t t0 = kyso_now_ms();
  int n = atomic_load(&next_doc);
  if (n > MAX_DOCS) n = MAX_DOCS;
  for (int i = 0; i < n; i++) {
    doc *d = &docs[i];
    if (!d->acked) continue;
    char msg[512], want_sha[65];
    Kyso__V1__DocumentInfo *info = NULL;
    int st = e2e_stat_with(E->clients[E2E_ARCH], d->archive_id, 1, 30000, &info, msg, sizeof(msg));
    if (st != 0)
      E2E_FAIL("%s: Archive.Stat of acknowledged document %d (%s): got status %d (%s), want OK",
               when, i, d->archive_id, st, msg);
    char number[32];
    snprintf(number, sizeof(number), "%llu/QD-BT", (unsigned long long)d->seed);
    if (info->size != d->len || info->metadata == NULL ||
        strcmp(info->metadata->number_notation, number) != 0)
      E2E_FAIL("%s: document %d's record: got size %llu, number \"%s\"; want %zu, \"%s\"", when,
               i, (unsigned long long)info->size,
               info->metadata ? info->metadata->number_notation : "(no metadata)", d->len, number);
    int found = 0;
    for (size_t s = 0; s < info->n_signatures; s++) {
      const Kyso__V1__SignatureInfo *si = info->signatures[s];
      if (strcmp(si->signature_id, d->signature_id) != 0) continue;
      found = 1;
      if (si->signature.len != d->cms_len || memcmp(si->signature.data, d->cms, d->cms_len) != 0)
        E2E_FAIL("%s: document %d: the stored CMS of signature %s differs from the one Sign "
                 "returned (%zu vs %zu bytes)", when, i, d->signature_id, si->signature.len,
                 d->cms_len);
    }
    size_t n_sigs = info->n_signatures;
    kyso__v1__document_info__free_unpacked(info, NULL);
    if (!found)
      E2E_FAIL("%s: acknowledged document %d (%s): signature %s not in Stat (%zu signatures)",
               when, i, d->archive_id, d->signature_id, n_sigs);
    if (n_sigs != 1)
      E2E_FAIL("%s: document %d: got %zu signatures, want 1 (one request id, one signature)",
               when, i, n_sigs);
    uint8_t *want = malloc(d->len);
    e2e_fill(want, d->len, d->seed, 0);
    e2e_sha256_hex(want, d->len, want_sha);
    E2E_STREQ("archive_id is the document's SHA-256", d->archive_id, want_sha);
    e2e_got g;
    st = e2e_get_with(E->clients[E2E_ARCH], d->archive_id, d->len, NULL, 30000, &g, msg,
                      sizeof(msg));
    int same = st == 0 && g.size == d->len && memcmp(g.data, want, d->len) == 0;
    free(want);
    uint64_t got_size = g.size;
    e2e_got_free(&g);
    if (st != 0)
      E2E_FAIL("%s: Archive.Get of acknowledged document %d (%s): got status %d (%s), want OK",
               when, i, d->archive_id, st, msg);
    if (!same)
      E2E_FAIL("%s: Archive.Get of document %d: got %llu bytes that differ, want its %zu bytes",
               when, i, (unsigned long long)got_size, d->len);
    checked++;
  }
  fprintf(stderr, "e2e: %s: %d acknowledged documents all there (Stat + Get) in %lld ms\n", when,
          checked, (long long)(kyso_now_ms() - t0));
}

/* Requests in flight at the kill: a retry with the same request id is OK. */
static void retry_in_flight(void) {
  int retried = 0, replayed = 0;
  int n = atomic_load(&next_doc);
  if (n > MAX_DOCS) n = MAX_DOCS;
  for (int i = 0; i < n; i++) {
    if (!docs[i].in_flight) continue;
    Kyso__V1__SignResponse *r = NULL;
    char msg[512];
    int st = sign_doc(E->clients[E2E_DMS], i, &r, msg, sizeof(msg));
    if (st != 0)
      E2E_FAIL("retry of in-flight request dur-%llu after the restart: got %d (%s), want OK",
               (unsigned long long)docs[i].seed, st, msg);
    replayed += r->replayed;
    record_ack(i, r);
    kyso__v1__sign_response__free_unpacked(r, NULL);
    retried++;
  }
  fprintf(stderr, "e2e: %d requests in flight at the kill retried: all OK, %d of them replayed "
                  "(written, the OK lost with the process)\n", retried, replayed);
}

static void start_and_provision(void **state) {
  (void)state;
  e2e_start(E, NULL);
  e2e_provision_key(E, PERSONAL, ACCOUNT, KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
}

static void kill_rounds(void **state) {
  (void)state;
  int64_t t0 = kyso_now_ms();
  for (int round = 0; round < ROUNDS; round++) {
    worker w[THREADS];
    pthread_t tid[THREADS];
    /* Different amounts of work before each kill: 150, 300, 450 ... OKs. */
    int target = 150 + 150 * round;
    memset(w, 0, sizeof(w));
    round_acks = 0;
    atomic_store(&stop, 0);
    atomic_store(&killing, 0);
    for (int t = 0; t < THREADS; t++) {
      w[t].client = e2e_client_open(E, E2E_DMS);
      if (pthread_create(&tid[t], NULL, run_worker, &w[t]) != 0) E2E_FAIL("pthread_create");
    }
    int64_t r0 = kyso_now_ms();
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 120;
    pthread_mutex_lock(&mu);
    int timed_out = 0;
    while (round_acks < target && !timed_out)
      timed_out = pthread_cond_timedwait(&acked_cv, &mu, &until) != 0;
    int at_kill = round_acks;
    pthread_mutex_unlock(&mu);
    atomic_store(&killing, 1);
    e2e_kill9(E); /* calls are in flight: THREADS workers are busy */
    atomic_store(&stop, 1);
    for (int t = 0; t < THREADS; t++) pthread_join(tid[t], NULL);
    int ok = 0, failed = 0;
    for (int t = 0; t < THREADS; t++) {
      kyso_client_close(w[t].client);
      ok += w[t].ok;
      failed += w[t].failed;
      if (w[t].first_error[0])
        E2E_FAIL("round %d, thread %d: a Sign failed before the kill: %s", round, t,
                 w[t].first_error);
    }
    if (timed_out) E2E_FAIL("round %d: got %d OKs in 120 s, want %d", round, at_kill, target);
    fprintf(stderr, "e2e: round %d: kill -9 after %d OKs (%lld ms); %d OK, %d failed in all\n",
            round, at_kill, (long long)(kyso_now_ms() - r0), ok, failed);
    e2e_start(E, NULL);
    char when[64];
    snprintf(when, sizeof(when), "after kill %d", round + 1);
    verify_acked(when);
    retry_in_flight();
  }
  verify_acked("after the last retries");
  fprintf(stderr, "e2e: %d rounds of kill -9 in %lld ms\n", ROUNDS,
          (long long)(kyso_now_ms() - t0));
}

static void stop_clean(void **state) {
  (void)state;
  e2e_stop(E);
}

static int teardown(void **state) {
  (void)state;
  for (int i = 0; i < MAX_DOCS; i++) free(docs[i].cms);
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_and_provision),
      cmocka_unit_test(kill_rounds),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_archive_durability", tests, setup, teardown);
}
