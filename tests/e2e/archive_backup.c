/* e2e_archive_backup: backup and restore as the README describes them.
 * While client threads sign (request ids, every OK recorded in order),
 * `kyso archive backup DIR` takes a checkpoint; the load goes on after it.
 * Then: stop kysod; `mv DATA_DIR/archive DATA_DIR/archive.old`;
 * `cp -a BACKUP_DIR DATA_DIR/archive`; start; `kyso archive scrub`.
 * Every document acknowledged before the backup call is there (Stat shows
 * its signature, Get returns its bytes); documents acknowledged during the
 * call are there whole or not at all; none acknowledged after it returned
 * is (the restore really replaced the store). */
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
#define ACCOUNT "backup.ec"
#define THREADS 3
#define MAX_DOCS 50000
#define BEFORE 300 /* OKs before the backup call */
#define AFTER 100  /* OKs after it returned */

typedef struct doc {
  uint64_t seed;
  size_t len;
  int acked;
  int64_t acked_at; /* order of the OK: index into the ack sequence */
  char archive_id[65];
  char signature_id[65];
} doc;

static e2e *E;
static doc docs[MAX_DOCS];
static atomic_int next_doc;
static atomic_int stop;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int acks;
/* Acks [0, before_call) came before the backup call started; acks
 * [after_return, ...) after it returned. */
static int before_call = -1, after_return = -1;
static char backup_dir[512];
static char load_error[1024]; /* the first failed Sign, under mu */

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  snprintf(backup_dir, sizeof(backup_dir), "%s", e2e_path(E, "backups/2026-11-23"));
  return 0;
}

static size_t doc_len(uint64_t seed) { return 200 + (size_t)(seed * 977) % 30000; }

typedef struct worker {
  kyso_client *client;
  char error[1024];
} worker;

static void *run_worker(void *arg) {
  worker *w = arg;
  while (!atomic_load(&stop)) {
    int i = atomic_fetch_add(&next_doc, 1);
    if (i >= MAX_DOCS) break;
    doc *d = &docs[i];
    d->seed = 70000 + (uint64_t)i;
    d->len = doc_len(d->seed);
    uint8_t *bytes = malloc(d->len);
    char rid[32], msg[512];
    e2e_fill(bytes, d->len, d->seed, 0);
    snprintf(rid, sizeof(rid), "bk-%d", i);
    Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
    Kyso__V1__KeyRef ref;
    Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
    Kyso__V1__SignResponse *r = NULL;
    e2e_key_ref(&ref, PERSONAL, ACCOUNT);
    meta.unit = "H37.BK.001";
    meta.issue_date = "2024-11-01";
    req.key = &ref;
    req.metadata = &meta;
    req.document.data = bytes;
    req.document.len = d->len;
    req.request_id = rid;
    int st = e2e_sign_with(w->client, &req, 30000, &r, msg, sizeof(msg));
    free(bytes);
    pthread_mutex_lock(&mu);
    if (st == 0) {
      d->acked = 1;
      d->acked_at = acks++;
      snprintf(d->archive_id, sizeof(d->archive_id), "%s", r->archive_id);
      snprintf(d->signature_id, sizeof(d->signature_id), "%s", r->signature_id);
      pthread_cond_broadcast(&cv);
    } else if (w->error[0] == '\0') {
      snprintf(w->error, sizeof(w->error), "Sign bk-%d: got %d (%s)", i, st, msg);
      if (load_error[0] == '\0') snprintf(load_error, sizeof(load_error), "%s", w->error);
      pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&mu);
    kyso__v1__sign_response__free_unpacked(r, NULL);
    if (st != 0) break;
  }
  return NULL;
}

/* Waits (bounded) until at least n OKs; returns the count then. */
static int wait_acks(int n) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 120;
  pthread_mutex_lock(&mu);
  int timed_out = 0;
  while (acks < n && !timed_out && load_error[0] == '\0')
    timed_out = pthread_cond_timedwait(&cv, &mu, &until) != 0;
  int got = acks;
  char error[1024];
  snprintf(error, sizeof(error), "%s", load_error);
  pthread_mutex_unlock(&mu);
  if (error[0]) E2E_FAIL("the signing load failed: %s", error);
  if (got < n) E2E_FAIL("got %d OKs from the signing load in 120 s, want %d", got, n);
  return got;
}

static int ack_count(void) {
  pthread_mutex_lock(&mu);
  int n = acks;
  pthread_mutex_unlock(&mu);
  return n;
}

static void start_and_provision(void **state) {
  (void)state;
  e2e_start(E, NULL);
  e2e_provision_key(E, PERSONAL, ACCOUNT, KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
  if (e2e_sh(NULL, "mkdir -p '%s/backups'", E->dir) != 0) E2E_FAIL("mkdir backups");
}

static void backup_under_load(void **state) {
  (void)state;
  worker w[THREADS];
  pthread_t tid[THREADS];
  memset(w, 0, sizeof(w));
  for (int t = 0; t < THREADS; t++) {
    w[t].client = e2e_client_open(E, E2E_DMS);
    if (pthread_create(&tid[t], NULL, run_worker, &w[t]) != 0) E2E_FAIL("pthread_create");
  }
  wait_acks(BEFORE);
  const char *log = e2e_path(E, "work/backup.out");
  const char *const args[] = {"archive", "backup", backup_dir, NULL};
  before_call = ack_count();
  int64_t t0 = kyso_now_ms();
  int rc = e2e_kyso(E, E2E_OPS, log, args);
  int64_t t1 = kyso_now_ms();
  after_return = ack_count();
  int during = after_return - before_call;
  wait_acks(after_return + AFTER);
  atomic_store(&stop, 1);
  for (int t = 0; t < THREADS; t++) {
    pthread_join(tid[t], NULL);
    kyso_client_close(w[t].client);
  }
  char *out = (char *)e2e_read_file(log, NULL);
  fprintf(stderr, "e2e: kyso archive backup %s -> exit %d in %lld ms, with %d OKs before the "
                  "call, %d during it, %d in all:\n%s", backup_dir, rc, (long long)(t1 - t0),
          before_call, during, ack_count(), out ? out : "");
  int says_dir = out && strstr(out, backup_dir) != NULL;
  free(out);
  for (int t = 0; t < THREADS; t++)
    if (w[t].error[0]) E2E_FAIL("signing load, thread %d: %s", t, w[t].error);
  if (rc != 0) E2E_FAIL("kyso archive backup: got exit %d, want 0", rc);
  if (!says_dir) E2E_FAIL("kyso archive backup does not name the directory it wrote");

  /* The same directory twice: refused, nothing overwritten. */
  Kyso__V1__BackupRequest req = KYSO__V1__BACKUP_REQUEST__INIT;
  char msg[512];
  req.directory = backup_dir;
  int st = e2e_call(E, E2E_OPS, "/kyso.v1.Archive/Backup", &req.base,
                    &kyso__v1__backup_response__descriptor, 30000, NULL, msg, sizeof(msg));
  E2E_EQ("Archive.Backup into an existing directory (6 = ALREADY_EXISTS)", st, 6);
}

static void restore_and_check(void **state) {
  (void)state;
  e2e_stop(E);
  /* README, Backup and restore: exactly these steps. */
  if (e2e_sh(e2e_path(E, "work/restore.log"),
             "set -e; mv '%s/data/archive' '%s/data/archive.old'; cp -a '%s' '%s/data/archive'",
             E->dir, E->dir, backup_dir, E->dir) != 0)
    E2E_FAIL("restore (mv + cp -a) failed");
  e2e_start(E, NULL);
  const char *log = e2e_path(E, "work/scrub.out");
  static const char *const args[] = {"archive", "scrub", NULL};
  int rc = e2e_kyso(E, E2E_ARCH, log, args);
  char *out = (char *)e2e_read_file(log, NULL);
  int clean = out && strstr(out, "scrub finished: 0 problem(s)") != NULL;
  fprintf(stderr, "e2e: kyso archive scrub after the restore -> exit %d\n%s", rc, out ? out : "");
  free(out);
  if (rc != 0 || !clean) E2E_FAIL("scrub of the restored archive: got exit %d, want 0 problems", rc);

  int present_before = 0, present_during = 0, absent_during = 0, absent_after = 0;
  int n = atomic_load(&next_doc);
  if (n > MAX_DOCS) n = MAX_DOCS;
  for (int i = 0; i < n; i++) {
    doc *d = &docs[i];
    if (!d->acked) continue;
    char msg[512];
    Kyso__V1__DocumentInfo *info = NULL;
    int st = e2e_stat_with(E->clients[E2E_ARCH], d->archive_id, 0, 30000, &info, msg, sizeof(msg));
    int before = d->acked_at < before_call, after = d->acked_at >= after_return;
    if (st == 5) {
      if (before)
        E2E_FAIL("bk-%d, acknowledged before the backup call (OK #%lld of %d), is not in the "
                 "restored archive: %s", i, (long long)d->acked_at, before_call, msg);
      if (after) absent_after++;
      else absent_during++;
      continue;
    }
    if (st != 0) E2E_FAIL("Archive.Stat of bk-%d: got %d (%s), want OK or NOT_FOUND", i, st, msg);
    if (after)
      E2E_FAIL("bk-%d, acknowledged after the backup returned, is in the restored archive: was "
               "the store really replaced?", i);
    int has_sig = info->n_signatures == 1 &&
                  strcmp(info->signatures[0]->signature_id, d->signature_id) == 0;
    kyso__v1__document_info__free_unpacked(info, NULL);
    /* Present means whole: record, signature and bytes. */
    if (!has_sig) E2E_FAIL("bk-%d is in the restored archive without its signature %s", i,
                           d->signature_id);
    uint8_t *want = malloc(d->len);
    e2e_fill(want, d->len, d->seed, 0);
    e2e_got g;
    st = e2e_get_with(E->clients[E2E_ARCH], d->archive_id, d->len, NULL, 30000, &g, msg,
                      sizeof(msg));
    int same = st == 0 && g.size == d->len && memcmp(g.data, want, d->len) == 0;
    free(want);
    e2e_got_free(&g);
    if (!same) E2E_FAIL("Archive.Get of restored bk-%d: got status %d (%s), bytes %s", i, st, msg,
                        st == 0 ? "differ" : "-");
    if (before) present_before++;
    else present_during++;
  }
  fprintf(stderr, "e2e: restored: %d/%d acknowledged before the call all there; of those during "
                  "it %d there, %d not; %d acknowledged after it absent\n", present_before,
          before_call, present_during, absent_during, absent_after);
  E2E_EQ("documents acknowledged before the backup call found", present_before, before_call);
  if (absent_after == 0) E2E_FAIL("no document acknowledged after the backup was absent");
}

static void stop_clean(void **state) {
  (void)state;
  e2e_stop(E);
}

static int teardown(void **state) {
  (void)state;
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_and_provision),
      cmocka_unit_test(backup_under_load),
      cmocka_unit_test(restore_and_check),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_archive_backup", tests, setup, teardown);
}
