/* archive_bench: commands per second through group commit, synced.
 *   archive_bench [threads] [commands per thread] [inline bytes] [no_sync]
 * Each command signs its own small stored document (or carries `inline
 * bytes` of document); prints commands/s, batches and syncs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/util.h"
#include "testutil.h"

static archive *A;
static int per_thread;
static size_t inline_bytes;
static uint8_t (*doc_ids)[32]; /* one stored document per command, as in real use */
static size_t doc_len = 4096;
static _Atomic int failures;

static void *worker(void *arg) {
  int t = (int)(intptr_t)arg;
  uint8_t *doc = inline_bytes ? tu_bytes(inline_bytes, (uint32_t)t) : NULL;
  for (int i = 0; i < per_thread; i++) {
    char rid[48], cms[48];
    uint8_t id[32], *res = NULL;
    size_t n, rl;
    kyso_err err = {0};
    snprintf(rid, sizeof(rid), "bench-%d-%d", t, i);
    snprintf(cms, sizeof(cms), "CMS %d %d", t, i);
    tu_doc d = {.sha256 = doc_ids[t * per_thread + i],
                .size = doc_len,
                .unit = "U",
                .issue_date = "2024-05-01"};
    if (doc != NULL) {
      memcpy(doc, &i, sizeof(i));
      tu_sha256(doc, inline_bytes, id);
      d.sha256 = id;
      d.size = inline_bytes;
    }
    uint8_t *cmd = tu_cmd_signing("bench", rid, &d, "acc", cms, 1714550400000LL + i, &n);
    if (archive_submit(A, cmd, n, doc, doc ? inline_bytes : 0, &res, &rl, &err) != KYSO_OK) {
      fprintf(stderr, "submit: %s\n", err.msg);
      failures++;
    }
    free(res);
    free(cmd);
  }
  free(doc);
  return NULL;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 8;
  per_thread = argc > 2 ? atoi(argv[2]) : 2000;
  inline_bytes = argc > 3 ? (size_t)atol(argv[3]) : 0;
  archive_opts o = {.no_sync = argc > 4 ? atoi(argv[4]) : 0}, fast = {.no_sync = 1};
  char *dir = tu_tmpdir();
  kyso_err err = {0};
  /* the documents go in first, unsynced: the measurement is the commands */
  size_t docs = (size_t)threads * (size_t)per_thread;
  doc_ids = calloc(docs, 32);
  uint8_t *doc = tu_bytes(doc_len, 1);
  if (!inline_bytes) {
    A = tu_open(dir, &fast);
    for (size_t k = 0; k < docs; k++) {
      memcpy(doc, &k, sizeof(k));
      if (archive_put_blob(A, doc, doc_len, doc_ids[k], &err) != KYSO_OK) return 1;
    }
    archive_close(A);
  }
  free(doc);
  A = tu_open(dir, &o);
  archive_stats s0, s1;
  archive_get_stats(A, &s0);
  int64_t t0 = kyso_now_ms();
  pthread_t *th = calloc((size_t)threads, sizeof(*th));
  for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
  for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
  double secs = (double)(kyso_now_ms() - t0) / 1000.0;
  archive_get_stats(A, &s1);
  uint64_t cmds = s1.commands - s0.commands, syncs = s1.synced_writes - s0.synced_writes;
  printf(
      "threads %d, inline %zu bytes, sync %s: %llu commands in %.2f s = %.0f commands/s; "
      "%llu batches, %llu synced writes = %.0f syncs/s, %.1f commands per sync\n",
      threads, inline_bytes, o.no_sync ? "off" : "on", (unsigned long long)cmds, secs,
      (double)cmds / secs, (unsigned long long)(s1.batches - s0.batches), (unsigned long long)syncs,
      (double)syncs / secs, syncs ? (double)cmds / (double)syncs : 0);
  archive_close(A);
  tu_rmrf(dir);
  free(dir);
  free(th);
  free(doc_ids);
  return failures ? 1 : 0;
}
