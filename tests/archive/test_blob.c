/* Blobs: round trips at chunk boundaries, deduplication, expected hashes,
 * size limits, and what a missing blob says. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/util.h"
#include "testutil.h"

#define CHUNK KYSO_CHUNK_SIZE

typedef struct fixture {
  char *dir;
  archive *a;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  f->dir = tu_tmpdir();
  f->a = tu_open(f->dir, NULL);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  archive_close(f->a);
  tu_rmrf(f->dir);
  free(f->dir);
  free(f);
  return 0;
}

static void check_read(archive *a, const uint8_t id[32], const uint8_t *want, size_t n) {
  uint8_t *got = NULL;
  size_t len = 0;
  uint64_t size = 0;
  kyso_err err = {0};
  if (tu_read_all(a, id, &got, &len, &err) != KYSO_OK) fail_msg("read: %s", err.msg);
  assert_int_equal(len, n);
  if (n) assert_memory_equal(got, want, n);
  free(got);
  assert_int_equal(archive_blob_size(a, id, &size, &err), KYSO_OK);
  assert_int_equal(size, n);
  /* chunk by chunk: every chunk but the last is exactly one chunk long */
  archive_reader *r = NULL;
  assert_int_equal(archive_reader_open(a, id, &r, &err), KYSO_OK);
  size_t total = 0, chunks = 0;
  for (;;) {
    const uint8_t *p;
    size_t m;
    assert_int_equal(archive_reader_next(r, &p, &m, &err), KYSO_OK);
    if (m == 0) break;
    assert_memory_equal(p, want + total, m);
    total += m;
    chunks++;
    if (total < n) assert_int_equal(m, CHUNK);
  }
  assert_int_equal(total, n);
  assert_int_equal(chunks, (n + CHUNK - 1) / CHUNK);
  archive_reader_close(r);
  assert_int_equal(tu_count(a, ARCHIVE__CF_BLOBS, id, 32), (n + CHUNK - 1) / CHUNK);
}

/* Sizes around the chunk boundary, stored whole and streamed in odd pieces. */
static void test_round_trip(void **state) {
  fixture *f = *state;
  const size_t sizes[] = {0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    size_t n = sizes[i];
    uint8_t *data = tu_bytes(n, (uint32_t)(100 + i)), want[32], id[32];
    kyso_err err = {0};
    tu_sha256(data, n, want);
    assert_int_equal(archive_put_blob(f->a, data, n, id, &err), KYSO_OK);
    assert_memory_equal(id, want, 32);
    check_read(f->a, id, data, n);
    /* the same bytes, other seed for the streamed copy: a different blob */
    tu_fill(data, n, (uint32_t)(200 + i));
    tu_sha256(data, n, want);
    archive_upload *u = NULL;
    uint64_t size = 0;
    assert_int_equal(archive_upload_begin(f->a, &u, &err), KYSO_OK);
    for (size_t off = 0; off < n; off += 7777)
      assert_int_equal(archive_upload_write(u, data + off, n - off < 7777 ? n - off : 7777, &err),
                       KYSO_OK);
    assert_int_equal(archive_upload_finish(u, want, id, &size, &err), KYSO_OK);
    assert_memory_equal(id, want, 32);
    assert_int_equal(size, n);
    check_read(f->a, id, data, n);
    free(data);
  }
}

/* The same bytes stored twice (put, then upload) are stored once. */
static void test_dedupe(void **state) {
  fixture *f = *state;
  size_t n = 3 * CHUNK + 5;
  uint8_t *data = tu_bytes(n, 7), id1[32], id2[32];
  kyso_err err = {0};
  archive_stats st0, st1;
  archive_get_stats(f->a, &st0);
  assert_int_equal(archive_put_blob(f->a, data, n, id1, &err), KYSO_OK);
  assert_int_equal(archive_put_blob(f->a, data, n, id2, &err), KYSO_OK);
  archive_upload *u = NULL;
  uint64_t size = 0;
  assert_int_equal(archive_upload_begin(f->a, &u, &err), KYSO_OK);
  assert_int_equal(archive_upload_write(u, data, n, &err), KYSO_OK);
  assert_int_equal(archive_upload_finish(u, NULL, id2, &size, &err), KYSO_OK);
  assert_memory_equal(id1, id2, 32);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_MANIFESTS, NULL, 0), 1);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_BLOBS, NULL, 0), 4);
  archive_get_stats(f->a, &st1);
  assert_int_equal(st1.blob_writes - st0.blob_writes, 1);
  assert_int_equal(st1.blob_bytes - st0.blob_bytes, n);
  free(data);
}

/* An upload that is not what the caller expected stores nothing. */
static void test_expected_mismatch(void **state) {
  fixture *f = *state;
  size_t n = 2 * CHUNK + 3;
  uint8_t *data = tu_bytes(n, 9), wrong[32], id[32];
  kyso_err err = {0};
  uint64_t size = 0;
  memset(wrong, 0xab, sizeof(wrong));
  archive_upload *u = NULL;
  assert_int_equal(archive_upload_begin(f->a, &u, &err), KYSO_OK);
  assert_int_equal(archive_upload_write(u, data, n, &err), KYSO_OK);
  assert_int_equal(archive_upload_finish(u, wrong, id, &size, &err), KYSO_INVALID_ARGUMENT);
  assert_non_null(strstr(err.msg, "abababab"));
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_MANIFESTS, NULL, 0), 0);
  assert_int_equal(tu_count(f->a, ARCHIVE__CF_BLOBS, NULL, 0), 0);
  free(data);
}

static void test_max_document(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  archive_opts o = {.max_document = 3 * 100000};
  archive *a = tu_open(dir, &o);
  uint8_t *data = tu_bytes(3 * 100000 + 1, 11), id[32];
  kyso_err err = {0};
  uint64_t size = 0;
  archive_upload *u = NULL;
  assert_int_equal(archive_upload_begin(a, &u, &err), KYSO_OK);
  for (int i = 0; i < 3; i++)
    assert_int_equal(archive_upload_write(u, data + 100000 * i, 100000, &err), KYSO_OK);
  assert_int_equal(archive_upload_write(u, data, 1, &err), KYSO_RESOURCE_EXHAUSTED);
  assert_non_null(strstr(err.msg, "300000"));
  archive_upload_abort(u);
  assert_int_equal(archive_put_blob(a, data, 3 * 100000 + 1, id, &err), KYSO_RESOURCE_EXHAUSTED);
  /* exactly the limit is fine */
  assert_int_equal(archive_upload_begin(a, &u, &err), KYSO_OK);
  assert_int_equal(archive_upload_write(u, data, 3 * 100000, &err), KYSO_OK);
  assert_int_equal(archive_upload_finish(u, NULL, id, &size, &err), KYSO_OK);
  assert_int_equal(size, 3 * 100000);
  assert_int_equal(tu_count(a, ARCHIVE__CF_MANIFESTS, NULL, 0), 1);
  free(data);
  archive_close(a);
  tu_rmrf(dir);
  free(dir);
}

static void test_not_found(void **state) {
  fixture *f = *state;
  uint8_t id[32];
  char hex[65];
  kyso_err err = {0};
  archive_reader *r = NULL;
  uint64_t size;
  memset(id, 0x42, sizeof(id));
  kyso_hex(id, 32, hex);
  assert_int_equal(archive_reader_open(f->a, id, &r, &err), KYSO_NOT_FOUND);
  assert_null(r);
  assert_non_null(strstr(err.msg, hex));
  assert_int_equal(archive_blob_size(f->a, id, &size, &err), KYSO_NOT_FOUND);
  /* read_blob refuses a blob larger than the caller's buffer limit */
  uint8_t *data = tu_bytes(1000, 1), *out = NULL;
  size_t len = 0;
  assert_int_equal(archive_put_blob(f->a, data, 1000, id, &err), KYSO_OK);
  assert_int_equal(archive_read_blob(f->a, id, 999, &out, &len, &err), KYSO_RESOURCE_EXHAUSTED);
  assert_null(out);
  free(data);
}

static void test_bad_options(void **state) {
  (void)state;
  archive *a = NULL;
  kyso_err err = {0};
  archive_opts o = {.dir = "/tmp/never-created-kyso", .chunk_size = 1000};
  assert_int_equal(archive_open(&o, &a, &err), KYSO_INVALID_ARGUMENT);
  assert_null(a);
  archive_opts none = {0};
  assert_int_equal(archive_open(&none, &a, &err), KYSO_INVALID_ARGUMENT);
  archive_close(NULL);
  archive_reader_close(NULL);
  archive_upload_abort(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dedupe, setup, teardown),
      cmocka_unit_test_setup_teardown(test_expected_mismatch, setup, teardown),
      cmocka_unit_test(test_max_document),
      cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
      cmocka_unit_test(test_bad_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
