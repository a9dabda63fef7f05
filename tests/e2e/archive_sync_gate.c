/* e2e_archive_sync_gate: a Sign answers OK only after its archive write is
 * synced. kysod runs with the fsync gate (tests/fixtures/fsync_gate.c) in
 * LD_PRELOAD: while the gate file exists every fsync/fdatasync/
 * sync_file_range in kysod blocks. With the gate closed an archiving Sign
 * must not answer OK (it runs into its deadline), while a Sign with
 * skip_archive, which writes nothing durable, and an Archive.Stat still
 * answer; once the gate opens, Signs answer OK again and the sync count went
 * up, and the Sign that timed out was kept (a retry replays it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"

#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define ACCOUNT "gate.ec"
#define GATED_DEADLINE_MS 2000

static e2e *E;
static char gate[512], counter[512];

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  return 0;
}

/* Calls the shim saw: all ('s' + 'g') and those that found the gate closed. */
static void sync_counts(long *all, long *gated) {
  size_t n = 0;
  uint8_t *text = e2e_read_file(counter, &n);
  *all = 0;
  *gated = 0;
  for (size_t i = 0; text && i < n; i++) {
    *all += 1;
    *gated += text[i] == 'g';
  }
  free(text);
}

static void start_gated(void **state) {
  (void)state;
  static char preload[600], gate_env[600], count_env[600], asan_env[1024];
  snprintf(gate, sizeof(gate), "%s", e2e_path(E, "fsync.gate"));
  snprintf(counter, sizeof(counter), "%s", e2e_path(E, "fsync.count"));
  const char *shim = getenv("KYSO_FSYNC_GATE_LIB");
  snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", shim && *shim ? shim : KYSO_E2E_FSYNC_GATE);
  snprintf(gate_env, sizeof(gate_env), "KYSO_FSYNC_GATE=%s", gate);
  snprintf(count_env, sizeof(count_env), "KYSO_FSYNC_COUNT=%s", counter);
  /* In an ASan build the shim is loaded before the ASan runtime. */
  const char *asan = getenv("ASAN_OPTIONS");
  snprintf(asan_env, sizeof(asan_env), "ASAN_OPTIONS=%s%sverify_asan_link_order=0",
           asan ? asan : "", asan && *asan ? ":" : "");
  const char *const env[] = {preload, gate_env, count_env, asan_env, NULL};
  e2e_start(E, env);
  e2e_provision_key(E, PERSONAL, ACCOUNT, KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
}

static int sign(const char *text, const char *request_id, int skip_archive, int64_t timeout_ms,
                Kyso__V1__SignResponse **resp, char *msg, size_t msg_size) {
  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  e2e_key_ref(&ref, PERSONAL, ACCOUNT);
  meta.unit = "H37.GATE";
  meta.issue_date = "2024-06-01";
  req.key = &ref;
  req.metadata = &meta;
  req.document.data = (uint8_t *)text;
  req.document.len = strlen(text);
  req.request_id = (char *)request_id;
  req.skip_archive = skip_archive;
  /* CAdES-BES: a time-stamp makes the TSA write its own state durably too,
   * and this test is about the archive's sync alone. */
  req.format = KYSO__V1__SIGNATURE_FORMAT__SIGNATURE_FORMAT_CADES_BES;
  return e2e_sign_with(E->clients[E2E_DMS], &req, timeout_ms, resp, msg, msg_size);
}

static void gate_holds_the_answer(void **state) {
  (void)state;
  Kyso__V1__SignResponse *resp = NULL;
  char msg[512], archive_a[65];
  long all0, all1, all2, all3, gated;
  int st0;

  /* Open gate: an archiving Sign is OK, and the shim saw kysod sync. The
   * first write to a new log also syncs its directory: done beforehand. */
  st0 = sign("Công văn khởi động", "gate-warm", 0, 30000, NULL, msg, sizeof(msg));
  if (st0 != 0) E2E_FAIL("warm-up Sign with the gate open: got status %d (%s), want OK", st0, msg);
  sync_counts(&all0, &gated);
  int st = sign("Công văn A, cổng mở", "gate-a", 0, 30000, &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Sign with the gate open: got status %d (%s), want OK", st, msg);
  snprintf(archive_a, sizeof(archive_a), "%s", resp->archive_id);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  sync_counts(&all1, &gated);
  fprintf(stderr, "e2e: gate open: Sign OK, syncs %ld -> %ld\n", all0, all1);
  if (all1 <= all0)
    E2E_FAIL("the fsync gate saw no sync during an archiving Sign (%ld -> %ld): is the shim "
             "loaded (LD_PRELOAD), and does the archive sync?", all0, all1);
  E2E_EQ("syncs that found the gate closed, before it was closed", gated, 0);

  /* Closed gate: the archiving Sign must not be answered OK. */
  e2e_write_file(gate, "closed\n", 7);
  int64_t t0 = kyso_now_ms();
  st = sign("Công văn B, cổng đóng", "gate-b", 0, GATED_DEADLINE_MS, &resp, msg, sizeof(msg));
  int64_t elapsed = kyso_now_ms() - t0;
  fprintf(stderr, "e2e: gate closed: archiving Sign -> %s after %lld ms (%s)\n",
          st >= 0 ? e2e_grpc_status_names[st] : "no call", (long long)elapsed, msg);
  if (st == 0) {
    kyso__v1__sign_response__free_unpacked(resp, NULL);
    unlink(gate);
    E2E_FAIL("an archiving Sign answered OK while every fsync in kysod was blocked: OK was sent "
             "before the archive write was durable");
  }
  E2E_EQ("status of the archiving Sign with the gate closed (4 = DEADLINE_EXCEEDED)", st, 4);
  sync_counts(&all2, &gated);
  if (gated < 1) E2E_FAIL("no sync reached the closed gate, yet the Sign did not answer");

  /* What writes nothing durable still answers: skip_archive, and reads. */
  st = sign("Công văn C, không lưu", "gate-c", 1, 30000, &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Sign with skip_archive, gate closed: got %d (%s), want OK", st, msg);
  E2E_STREQ("archive_id of a skip_archive Sign", resp->archive_id, "");
  char doc_c[65];
  snprintf(doc_c, sizeof(doc_c), "%s", resp->document_sha256);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  Kyso__V1__DocumentInfo *info = NULL;
  st = e2e_stat_with(E->clients[E2E_ARCH], archive_a, 0, 10000, &info, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Archive.Stat with the gate closed: got %d (%s), want OK", st, msg);
  kyso__v1__document_info__free_unpacked(info, NULL);

  /* Open the gate: the next Sign is OK and synced. */
  sync_counts(&all2, &gated);
  if (unlink(gate) != 0) E2E_FAIL("cannot remove the gate %s", gate);
  st = sign("Công văn D, cổng mở lại", "gate-d", 0, 30000, &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Sign after the gate opened: got %d (%s), want OK", st, msg);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  sync_counts(&all3, &gated);
  fprintf(stderr, "e2e: gate reopened: Sign OK, syncs %ld -> %ld (%ld found the gate closed)\n",
          all2, all3, gated);
  if (all3 <= all2) E2E_FAIL("syncs: got %ld after the Sign, want more than %ld", all3, all2);

  /* The Sign that ran out of time was queued first and committed once the
   * gate opened: its retry replays it, and it has one signature. */
  st = sign("Công văn B, cổng đóng", "gate-b", 0, 30000, &resp, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("retry of gate-b: got %d (%s), want OK", st, msg);
  if (!resp->replayed)
    E2E_FAIL("retry of gate-b: got replayed=false, want true (its first attempt was written)");
  char doc_b[65];
  snprintf(doc_b, sizeof(doc_b), "%s", resp->archive_id);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  st = e2e_stat_with(E->clients[E2E_ARCH], doc_b, 0, 10000, &info, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Archive.Stat of gate-b's document: got %d (%s), want OK", st, msg);
  E2E_EQ("signatures of gate-b's document", info->n_signatures, 1);
  kyso__v1__document_info__free_unpacked(info, NULL);
  /* skip_archive kept nothing. */
  st = e2e_stat_with(E->clients[E2E_ARCH], doc_c, 0, 10000, NULL, msg, sizeof(msg));
  E2E_EQ("Archive.Stat of the skip_archive document (5 = NOT_FOUND)", st, 5);
}

static void stop_clean(void **state) {
  (void)state;
  unlink(gate);
  e2e_stop(E);
}

static int teardown(void **state) {
  (void)state;
  unlink(gate); /* never leave kysod blocked behind a failed test */
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_gated),
      cmocka_unit_test(gate_holds_the_answer),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_archive_sync_gate", tests, setup, teardown);
}
