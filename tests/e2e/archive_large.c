/* e2e_archive_large: a 100 MiB document (generated here, never committed)
 * goes in through Archive.Put in 1 MiB messages, is signed by its id
 * (SignRequest.archive_id, no document in the message), comes back through
 * Archive.Get with the same SHA-256, and its signature verifies with
 * `openssl cms -verify -cades` over the file. kysod's peak RSS during all
 * that, less its RSS before, stays under 200 MiB: the document never sits
 * whole in memory. The figure is printed. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/limits.h"
#include "kyso/util.h"

#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define ACCOUNT "large.ec"
#define DOC_SIZE (100ull * 1024 * 1024)
#define SEED 0x4b59534f31303021ull
#define MAX_RSS_GROWTH_KIB (200L * 1024)

static e2e *E;
static char doc_path[512], sha_hex[65], sig_id[65];

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  return 0;
}

/* Writes the document in 1 MiB pieces, hashing as it goes. */
static void make_document(void) {
  uint8_t *buf = malloc(KYSO_CHUNK_SIZE), md[32];
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  FILE *f = fopen(doc_path, "wb");
  if (buf == NULL || ctx == NULL || f == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
    E2E_FAIL("cannot create %s", doc_path);
  for (uint64_t off = 0; off < DOC_SIZE; off += KYSO_CHUNK_SIZE) {
    e2e_fill(buf, KYSO_CHUNK_SIZE, SEED, off);
    EVP_DigestUpdate(ctx, buf, KYSO_CHUNK_SIZE);
    if (fwrite(buf, 1, KYSO_CHUNK_SIZE, f) != KYSO_CHUNK_SIZE) E2E_FAIL("cannot write %s", doc_path);
  }
  if (fclose(f) != 0) E2E_FAIL("cannot write %s", doc_path);
  EVP_DigestFinal_ex(ctx, md, NULL);
  kyso_hex(md, 32, sha_hex);
  EVP_MD_CTX_free(ctx);
  free(buf);
}

static void start_and_provision(void **state) {
  (void)state;
  snprintf(doc_path, sizeof(doc_path), "%s", e2e_path(E, "work/ho-so-100MiB.bin"));
  int64_t t0 = kyso_now_ms();
  make_document();
  fprintf(stderr, "e2e: generated a %llu MiB document in %lld ms, sha256 %s\n",
          DOC_SIZE >> 20, (long long)(kyso_now_ms() - t0), sha_hex);
  e2e_start(E, e2e_env_rss());
  e2e_provision_key(E, PERSONAL, ACCOUNT, KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
}

static void put_sign_get(void **state) {
  (void)state;
  char msg[512];
  long rss_before = e2e_proc_kib(E, "VmRSS");
  long hwm_start = e2e_proc_kib(E, "VmHWM");
  int reset = e2e_reset_peak_rss(E) == 0;
  if (reset) hwm_start = e2e_proc_kib(E, "VmHWM");
  fprintf(stderr, "e2e: kysod before the Put: VmRSS %ld KiB, VmHWM %ld KiB (%s)\n", rss_before,
          hwm_start, reset ? "peak reset with clear_refs" : "peak not resettable");

  /* Put: 100 messages of 1 MiB, the header (with the expected hash) first. */
  Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  Kyso__V1__DocumentInfo *info = NULL;
  meta.unit = "H37.LG.001";
  meta.number_notation = "100/HS-LT";
  meta.title = "Hồ sơ lưu trữ 100 MiB";
  meta.issue_date = "2024-09-01";
  meta.media_type = "application/octet-stream";
  hdr.metadata = &meta;
  hdr.expected_sha256 = sha_hex;
  hdr.request_id = "large-put";
  int64_t t0 = kyso_now_ms();
  int st = e2e_put_with(E->clients[E2E_DMS], &hdr, NULL, 0, doc_path, 600000, &info, msg,
                        sizeof(msg));
  int64_t t1 = kyso_now_ms();
  if (st != 0) E2E_FAIL("Archive.Put of 100 MiB: got status %d (%s), want OK", st, msg);
  E2E_STREQ("Archive.Put id", info->id, sha_hex);
  E2E_EQ("Archive.Put size", info->size, DOC_SIZE);
  kyso__v1__document_info__free_unpacked(info, NULL);
  long hwm_put = e2e_proc_kib(E, "VmHWM");

  /* Sign by id: kysod re-reads and re-checks the 100 MiB, signs the digest. */
  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  Kyso__V1__SignResponse *resp = NULL;
  e2e_key_ref(&ref, PERSONAL, ACCOUNT);
  req.key = &ref;
  req.archive_id = sha_hex;
  req.request_id = "large-sign";
  st = e2e_sign_with(E->clients[E2E_DMS], &req, 300000, &resp, msg, sizeof(msg));
  int64_t t2 = kyso_now_ms();
  if (st != 0) E2E_FAIL("Sign by archive_id: got status %d (%s), want OK", st, msg);
  E2E_STREQ("Sign's archive_id", resp->archive_id, sha_hex);
  E2E_STREQ("Sign's document_sha256", resp->document_sha256, sha_hex);
  E2E_EQ("Sign's signature_order", resp->signature_order, 1);
  snprintf(sig_id, sizeof(sig_id), "%s", resp->signature_id);
  const char *sig_path = e2e_path(E, "work/ho-so-100MiB.bin.p7s");
  e2e_write_file(sig_path, resp->signature.data, resp->signature.len);
  kyso__v1__sign_response__free_unpacked(resp, NULL);
  long hwm_sign = e2e_proc_kib(E, "VmHWM");

  /* Get: hashed as it streams, written out to compare with the original. */
  e2e_got g;
  const char *back = e2e_path(E, "work/ho-so-100MiB.back");
  st = e2e_get_with(E->clients[E2E_ARCH], sha_hex, 0, back, 600000, &g, msg, sizeof(msg));
  int64_t t3 = kyso_now_ms();
  if (st != 0) E2E_FAIL("Archive.Get of 100 MiB: got status %d (%s), want OK", st, msg);
  E2E_EQ("Archive.Get bytes", g.size, DOC_SIZE);
  E2E_STREQ("Archive.Get SHA-256", g.sha256, sha_hex);
  if (g.info == NULL || g.info->size != DOC_SIZE || g.info->n_signatures != 1)
    E2E_FAIL("Archive.Get info: got size %llu with %zu signatures, want %llu with 1",
             g.info ? (unsigned long long)g.info->size : 0ULL,
             g.info ? g.info->n_signatures : (size_t)0, DOC_SIZE);
  E2E_STREQ("Get info's signature id", g.info->signatures[0]->signature_id, sig_id);
  if (g.max_chunk > KYSO_CHUNK_SIZE)
    E2E_FAIL("Archive.Get sent a %zu-byte chunk, want at most %d", g.max_chunk, KYSO_CHUNK_SIZE);
  fprintf(stderr, "e2e: Get: %zu chunk messages, largest %zu bytes\n", g.chunks, g.max_chunk);
  e2e_got_free(&g);
  long hwm_get = e2e_proc_kib(E, "VmHWM");
  if (e2e_sh(NULL, "cmp -s '%s' '%s'", doc_path, back) != 0)
    E2E_FAIL("the document that came back differs from the one put (cmp)");
  e2e_sh(NULL, "rm -f '%s'", back);

  long growth = hwm_get - rss_before;
  fprintf(stderr, "e2e: 100 MiB: Put %lld ms (%.0f MiB/s), Sign by id %lld ms, Get %lld ms\n",
          (long long)(t1 - t0), 100000.0 / (double)(t1 - t0 ? t1 - t0 : 1), (long long)(t2 - t1),
          (long long)(t3 - t2));
  fprintf(stderr, "e2e: kysod VmHWM after Put %ld KiB, after Sign %ld KiB, after Get %ld KiB\n",
          hwm_put, hwm_sign, hwm_get);
  fprintf(stderr, "e2e: RSS FIGURE: kysod peak RSS (VmHWM) %ld KiB - RSS before the Put %ld KiB "
                  "= %ld KiB (%.1f MiB); limit %ld MiB\n",
          hwm_get, rss_before, growth, growth / 1024.0, MAX_RSS_GROWTH_KIB / 1024);
  if (growth >= MAX_RSS_GROWTH_KIB)
    E2E_FAIL("kysod's peak RSS grew by %ld KiB over a 100 MiB Put/Sign/Get, want < %ld KiB",
             growth, MAX_RSS_GROWTH_KIB);
}

static void openssl_verifies(void **state) {
  (void)state;
  const char *sig_path = e2e_path(E, "work/ho-so-100MiB.bin.p7s");
  int64_t t0 = kyso_now_ms();
  int rc = e2e_openssl_verify(E, doc_path, sig_path);
  fprintf(stderr, "e2e: openssl cms -verify -cades of 100 MiB: exit %d in %lld ms\n", rc,
          (long long)(kyso_now_ms() - t0));
  if (rc != 0) {
    e2e_sh(NULL, "cat '%s' >&2", e2e_path(E, "work/openssl-verify.log"));
    E2E_FAIL("openssl cms -verify of the 100 MiB document: got exit %d, want 0", rc);
  }
  /* And the stored record names the same signature. */
  Kyso__V1__DocumentInfo *info = NULL;
  char msg[512];
  int st = e2e_stat_with(E->clients[E2E_ARCH], sha_hex, 1, 30000, &info, msg, sizeof(msg));
  if (st != 0) E2E_FAIL("Archive.Stat: got %d (%s), want OK", st, msg);
  E2E_EQ("signatures in Stat", info->n_signatures, 1);
  E2E_STREQ("Stat's signature id", info->signatures[0]->signature_id, sig_id);
  size_t n = 0;
  uint8_t *sig = e2e_read_file(sig_path, &n);
  int same = sig && info->signatures[0]->signature.len == n &&
             memcmp(info->signatures[0]->signature.data, sig, n) == 0;
  free(sig);
  kyso__v1__document_info__free_unpacked(info, NULL);
  if (!same) E2E_FAIL("Stat's stored CMS differs from the one Sign returned");
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
      cmocka_unit_test(put_sign_get),
      cmocka_unit_test(openssl_verifies),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_archive_large", tests, setup, teardown);
}
