/* A 100 MiB document: streamed in, signed by id, streamed out, with the
 * process's peak RSS growth under 200 MiB (memory per call stays bounded). */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/util.h"
#include "testutil.h"

#define MIB (1024 * 1024)
#define DOC_MIB 100
#define MAX_GROWTH (200ull * MIB)

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static void test_100mib(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  archive *a = tu_open(dir, NULL);
  uint8_t *piece = malloc(MIB), want[32], id[32], got[32];
  kyso_err err = {0};
  uint64_t size = 0;
  EVP_MD_CTX *h = EVP_MD_CTX_new();
  EVP_DigestInit_ex(h, EVP_sha256(), NULL);
  for (int i = 0; i < DOC_MIB; i++) { /* the expected id, without holding the document */
    tu_fill(piece, MIB, (uint32_t)i);
    EVP_DigestUpdate(h, piece, MIB);
  }
  EVP_DigestFinal_ex(h, want, NULL);
  uint64_t base = tu_rss_now();
  tu_rss_reset_peak();
  int64_t t0 = kyso_now_ms();
  archive_upload *u = NULL;
  assert_int_equal(archive_upload_begin(a, &u, &err), KYSO_OK);
  for (int i = 0; i < DOC_MIB; i++) {
    tu_fill(piece, MIB, (uint32_t)i);
    assert_int_equal(archive_upload_write(u, piece, MIB, &err), KYSO_OK);
  }
  if (archive_upload_finish(u, want, id, &size, &err) != KYSO_OK) fail_msg("finish: %s", err.msg);
  int64_t t1 = kyso_now_ms();
  assert_int_equal(size, (uint64_t)DOC_MIB * MIB);
  tu_doc d = {.sha256 = id, .size = size, .unit = "H37.DN.001", .issue_date = "2024-05-01"};
  size_t n;
  uint8_t *cmd =
      tu_cmd_signing("dms", "big-1", &d, "acc", "CMS of the big one", 1714550400000LL, &n);
  archive__result *r = tu_submit_ok(a, cmd, n, NULL, 0);
  assert_int_equal(r->signature_order, 1);
  tu_result_free(r);
  free(cmd);
  int64_t t2 = kyso_now_ms();
  archive_reader *rd = NULL;
  assert_int_equal(archive_reader_open(a, id, &rd, &err), KYSO_OK);
  EVP_DigestInit_ex(h, EVP_sha256(), NULL);
  uint64_t total = 0;
  for (;;) {
    const uint8_t *p;
    size_t m;
    assert_int_equal(archive_reader_next(rd, &p, &m, &err), KYSO_OK);
    if (m == 0) break;
    EVP_DigestUpdate(h, p, m);
    total += m;
  }
  archive_reader_close(rd);
  EVP_DigestFinal_ex(h, got, NULL);
  int64_t t3 = kyso_now_ms();
  assert_int_equal(total, size);
  assert_memory_equal(got, want, 32);
  uint64_t peak = tu_rss_peak(), growth = peak > base ? peak - base : 0;
  printf(
      "100 MiB: put %lld ms (%.0f MiB/s), sign by id %lld ms, get %lld ms (%.0f MiB/s); "
      "RSS %llu MiB before, peak %llu MiB, growth %llu MiB\n",
      (long long)(t1 - t0), t1 > t0 ? 1000.0 * DOC_MIB / (double)(t1 - t0) : 0.0,
      (long long)(t2 - t1), (long long)(t3 - t2),
      t3 > t2 ? 1000.0 * DOC_MIB / (double)(t3 - t2) : 0.0, (unsigned long long)(base / MIB),
      (unsigned long long)(peak / MIB), (unsigned long long)(growth / MIB));
  if (!SANITIZED) assert_true(growth < MAX_GROWTH);
  /* stored once: a second upload of the same bytes adds nothing */
  assert_int_equal(archive_upload_begin(a, &u, &err), KYSO_OK);
  for (int i = 0; i < DOC_MIB; i++) {
    tu_fill(piece, MIB, (uint32_t)i);
    assert_int_equal(archive_upload_write(u, piece, MIB, &err), KYSO_OK);
  }
  assert_int_equal(archive_upload_finish(u, NULL, got, &size, &err), KYSO_OK);
  assert_memory_equal(got, id, 32);
  assert_int_equal(tu_count(a, ARCHIVE__CF_BLOBS, id, 32), DOC_MIB);
  archive_stats st;
  archive_get_stats(a, &st);
  assert_int_equal(st.blob_bytes, size);
  EVP_MD_CTX_free(h);
  free(piece);
  archive_close(a);
  tu_rmrf(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_100mib)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
