/* Durability: kill -9 under load loses no acknowledged signing (and the
 * restart cuts any torn WAL tail the kill left); a checkpoint taken while
 * writing holds every write acknowledged before the call. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kyso/util.h"
#include "testutil.h"

#define T0 1714550400000LL

#define KILL_THREADS 3
#define KILL_TRIALS 8

typedef struct child_ctx {
  archive *a;
  int fd; /* acknowledgements to the parent: one uint32 per OK */
  int thread;
} child_ctx;

/* Child: signings carrying 2-3 MB documents inline (large WAL records, so
 * a kill often lands inside one) and small ones, acknowledged one by one. */
static void *child_writer(void *arg) {
  child_ctx *c = arg;
  size_t max = 3000000;
  uint8_t *doc = tu_bytes(max, (uint32_t)c->thread);
  for (uint32_t i = 0;; i++) {
    uint32_t tag = (uint32_t)c->thread << 24 | i;
    size_t len = i % 3 == 2 ? 2000 : 2000000 + (i % 7) * 100000;
    char rid[32], cms[32];
    uint8_t id[32], *res = NULL;
    size_t n, rl;
    kyso_err err = {0};
    memcpy(doc, &tag, 4);
    tu_sha256(doc, len, id);
    snprintf(rid, sizeof(rid), "k%08x", tag);
    snprintf(cms, sizeof(cms), "CMS %08x", tag);
    tu_doc d = {.sha256 = id, .size = len};
    uint8_t *cmd = tu_cmd_signing("p", rid, &d, "acc", cms, T0 + i, &n);
    if (archive_submit(c->a, cmd, n, doc, len, &res, &rl, &err) != KYSO_OK) _exit(3);
    free(res);
    free(cmd);
    if (write(c->fd, &tag, 4) != 4) _exit(4);
  }
  return NULL;
}

static int run_load(const char *dir, int fd) {
  archive *a = NULL;
  archive_opts o = {.dir = dir};
  kyso_err err = {0};
  if (archive_open(&o, &a, &err) != KYSO_OK) return 2;
  pthread_t th[KILL_THREADS];
  child_ctx ctx[KILL_THREADS];
  for (int t = 0; t < KILL_THREADS; t++) {
    ctx[t] = (child_ctx){.a = a, .fd = fd, .thread = t};
    pthread_create(&th[t], NULL, child_writer, &ctx[t]);
  }
  pthread_join(th[0], NULL);
  return 0;
}

/* Every acknowledged signing is there after kill -9, document included. */
static void check_acked(archive *a, const uint32_t *acks, size_t n) {
  for (size_t k = 0; k < n; k++) {
    char rid[32];
    uint8_t *v = NULL;
    size_t vl = 0;
    kyso_err err = {0};
    snprintf(rid, sizeof(rid), "k%08x", acks[k]);
    if (archive_find_request(a, "p", rid, &v, &vl, &err) != KYSO_OK)
      fail_msg("acknowledged signing %s is missing after kill -9: %s", rid, err.msg);
    archive__result *r = kyso__store__v1__command_result__unpack(NULL, vl, v);
    uint8_t *doc = NULL;
    size_t len = 0;
    if (tu_read_all(a, r->document_sha256.data, &doc, &len, &err) != KYSO_OK)
      fail_msg("the document of acknowledged signing %s: %s", rid, err.msg);
    uint32_t tag;
    memcpy(&tag, doc, 4);
    assert_int_equal(tag, acks[k]);
    free(doc);
    tu_result_free(r);
    free(v);
  }
}

static void test_kill9_under_load(void **state) {
  (void)state;
  int torn = 0;
  size_t total = 0;
  for (int trial = 0; trial < KILL_TRIALS; trial++) {
    char *dir = tu_tmpdir(), kept[1100];
    int fd;
    pid_t pid = tu_spawn("--load", dir, &fd);
    size_t cap = 1 << 16, n = 0;
    uint32_t *acks = malloc(cap * sizeof(*acks));
    int64_t deadline = kyso_now_ms() + 400 + trial * 250, killed = 0;
    for (;;) {
      struct pollfd pf = {.fd = fd, .events = POLLIN};
      if (!killed && kyso_now_ms() >= deadline) {
        kill(pid, SIGKILL);
        killed = 1;
      }
      if (poll(&pf, 1, 20) <= 0) continue;
      uint32_t tag;
      ssize_t r = read(fd, &tag, 4);
      if (r == 0) break; /* the child is gone and the pipe drained */
      assert_int_equal(r, 4);
      if (n < cap) acks[n++] = tag;
    }
    int status;
    waitpid(pid, &status, 0);
    close(fd);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    archive *a = tu_open(dir, NULL);
    check_acked(a, acks, n);
    archive_close(a);
    snprintf(kept, sizeof(kept), "%s/torn-wal", dir);
    struct stat sb;
    torn += stat(kept, &sb) == 0;
    total += n;
    free(acks);
    tu_rmrf(dir);
    free(dir);
  }
  printf(
      "kill -9: %d trials, %zu acknowledged signings all present; %d restarts cut a torn "
      "WAL tail\n",
      KILL_TRIALS, total, torn);
}

typedef struct writer_ctx {
  archive *a;
  pthread_mutex_t mu;
  int acked; /* commands 0..acked-1 are acknowledged */
  int stop;
} writer_ctx;

static void *checkpoint_writer(void *arg) {
  writer_ctx *w = arg;
  for (int i = 0;; i++) {
    pthread_mutex_lock(&w->mu);
    int stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    if (stop) break;
    tu_sign_small(w->a, i);
    pthread_mutex_lock(&w->mu);
    w->acked = i + 1;
    pthread_mutex_unlock(&w->mu);
  }
  return NULL;
}

/* A checkpoint taken while a writer runs holds every write acknowledged
 * before the call, and opens as a store of its own. */
static void test_checkpoint_while_writing(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), *backup = tu_path(dir, "backup");
  char *store = tu_path(dir, "store");
  writer_ctx w = {.a = tu_open(store, NULL)};
  pthread_mutex_init(&w.mu, NULL);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, checkpoint_writer, &w), 0);
  int before = 0;
  while (before < 200) {
    usleep(1000);
    pthread_mutex_lock(&w.mu);
    before = w.acked;
    pthread_mutex_unlock(&w.mu);
  }
  kyso_err err = {0};
  if (archive_checkpoint(w.a, backup, &err) != KYSO_OK) fail_msg("checkpoint: %s", err.msg);
  assert_int_equal(archive_checkpoint(w.a, backup, &err), KYSO_ALREADY_EXISTS);
  usleep(50000);
  pthread_mutex_lock(&w.mu);
  w.stop = 1;
  int after = w.acked;
  pthread_mutex_unlock(&w.mu);
  pthread_join(th, NULL);
  archive_close(w.a);
  archive *b = tu_open(backup, NULL);
  for (int i = 0; i < before; i++) assert_true(tu_has_request(b, i));
  archive_scrub_report rep;
  assert_int_equal(archive_scrub(b, NULL, NULL, &rep, &err), KYSO_OK);
  assert_int_equal(rep.blobs_bad + rep.documents_bad + rep.signatures_bad + rep.indexes_bad, 0);
  printf("checkpoint: %d acknowledged before the call, all in the backup; %d after\n", before,
         after);
  archive_close(b);
  pthread_mutex_destroy(&w.mu);
  tu_rmrf(dir);
  free(store);
  free(backup);
  free(dir);
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--load") == 0) return run_load(argv[2], atoi(argv[3]));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kill9_under_load),
      cmocka_unit_test(test_checkpoint_while_writing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
