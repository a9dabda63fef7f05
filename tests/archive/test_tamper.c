/* Tampering: bytes changed under kyso — through RocksDB (checksums pass),
 * through `ldb put`, or flipped in a blob file — are DATA_LOSS for that id
 * and only that id, and scrub names exactly what was hit. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyso/util.h"
#include "testutil.h"

#define CHUNK KYSO_CHUNK_SIZE
#define BLOBS 3
#define SIZE (3 * CHUNK + 1234)

typedef struct fixture {
  char *dir;
  archive *a;
  uint8_t *data[BLOBS];
  uint8_t id[BLOBS][32];
  char hex[BLOBS][65];
} fixture;

typedef struct problems {
  int n;
  char what[8][16];
  uint8_t id[8][32];
  char msg[8][KYSO_ERR_MSG_MAX];
} problems;

static int on_problem(void *ctx, const char *what, const uint8_t id[32], const char *problem,
                      const archive_scrub_report *so_far) {
  problems *p = ctx;
  (void)so_far;
  if (problem == NULL) return 0;
  if (p->n < 8) {
    snprintf(p->what[p->n], sizeof(p->what[0]), "%s", what);
    memcpy(p->id[p->n], id, 32);
    snprintf(p->msg[p->n], sizeof(p->msg[0]), "%s", problem);
  }
  printf("scrub: %s: %s\n", what, problem);
  p->n++;
  return 0;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  kyso_err err = {0};
  f->dir = tu_tmpdir();
  f->a = tu_open(f->dir, NULL);
  for (int i = 0; i < BLOBS; i++) {
    f->data[i] = tu_bytes(SIZE, (uint32_t)(i + 1));
    assert_int_equal(archive_put_blob(f->a, f->data[i], SIZE, f->id[i], &err), KYSO_OK);
    kyso_hex(f->id[i], 32, f->hex[i]);
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  archive_close(f->a);
  tu_rmrf(f->dir);
  for (int i = 0; i < BLOBS; i++) free(f->data[i]);
  free(f->dir);
  free(f);
  return 0;
}

/* Blob `bad` reads as DATA_LOSS naming it (with `why`); the others read back
 * intact; a scrub reports that blob once and nothing else. */
static void expect_only(fixture *f, int bad, const char *why) {
  for (int i = 0; i < BLOBS; i++) {
    uint8_t *got = NULL;
    size_t len = 0;
    kyso_err err = {0};
    kyso_status st = tu_read_all(f->a, f->id[i], &got, &len, &err);
    if (i == bad) {
      assert_int_equal(st, KYSO_DATA_LOSS);
      assert_null(got);
      assert_non_null(strstr(err.msg, f->hex[i]));
      if (why) assert_non_null(strstr(err.msg, why));
      printf("read: %s\n", err.msg);
    } else {
      if (st != KYSO_OK) fail_msg("blob %d: %s", i, err.msg);
      assert_int_equal(len, SIZE);
      assert_memory_equal(got, f->data[i], SIZE);
      free(got);
    }
  }
  problems p = {0};
  archive_scrub_report rep;
  kyso_err err = {0};
  assert_int_equal(archive_scrub(f->a, on_problem, &p, &rep, &err), KYSO_OK);
  assert_int_equal(p.n, 1);
  assert_string_equal(p.what[0], "blob");
  assert_memory_equal(p.id[0], f->id[bad], 32);
  assert_int_equal(rep.blobs, BLOBS);
  assert_int_equal(rep.blobs_bad, 1);
}

static void chunk_key(fixture *f, int blob, uint32_t chunk, uint8_t key[ARCHIVE__CHUNK_KEY]) {
  archive__chunk_key(f->id[blob], chunk, key);
}

/* A chunk replaced through RocksDB itself: its checksums are fine, ours is not. */
static void test_chunk_replaced(void **state) {
  fixture *f = *state;
  uint8_t key[ARCHIVE__CHUNK_KEY], *v = malloc(CHUNK);
  memcpy(v, f->data[1] + CHUNK, CHUNK);
  v[4321] ^= 0x01;
  chunk_key(f, 1, 1, key);
  tu_raw_put(f->a, ARCHIVE__CF_BLOBS, key, sizeof(key), v, CHUNK);
  free(v);
  expect_only(f, 1, "chunk 1 does not match its recorded hash");
  /* the reader handed out chunk 0 (it checks out) and then stopped */
  archive_reader *r = NULL;
  kyso_err err = {0};
  const uint8_t *p;
  size_t n;
  assert_int_equal(archive_reader_open(f->a, f->id[1], &r, &err), KYSO_OK);
  assert_int_equal(archive_reader_next(r, &p, &n, &err), KYSO_OK);
  assert_int_equal(n, CHUNK);
  assert_int_equal(archive_reader_next(r, &p, &n, &err), KYSO_DATA_LOSS);
  assert_null(p);
  assert_int_equal(archive_reader_next(r, &p, &n, &err), KYSO_DATA_LOSS); /* it stays so */
  archive_reader_close(r);
}

static void test_chunk_deleted(void **state) {
  fixture *f = *state;
  uint8_t key[ARCHIVE__CHUNK_KEY];
  chunk_key(f, 2, 3, key);
  tu_raw_delete(f->a, ARCHIVE__CF_BLOBS, key, sizeof(key));
  expect_only(f, 2, "chunk 3 of 4 is missing");
}

/* Chunk and manifest changed together: every chunk matches the manifest,
 * but the whole no longer hashes to the id — the last chunk is withheld. */
static void test_manifest_forged(void **state) {
  fixture *f = *state;
  uint8_t key[ARCHIVE__CHUNK_KEY], *v = NULL, forged[32];
  size_t vl = 0;
  kyso_err err = {0};
  chunk_key(f, 0, 0, key);
  uint8_t *c = malloc(CHUNK);
  memcpy(c, f->data[0], CHUNK);
  c[0] ^= 0xff;
  tu_raw_put(f->a, ARCHIVE__CF_BLOBS, key, sizeof(key), c, CHUNK);
  tu_sha256(c, CHUNK, forged);
  free(c);
  assert_int_equal(archive__get(f->a, NULL, ARCHIVE__CF_MANIFESTS, f->id[0], 32, &v, &vl, &err),
                   KYSO_OK);
  Kyso__Store__V1__BlobManifest *m = kyso__store__v1__blob_manifest__unpack(NULL, vl, v);
  memcpy(m->chunk_sha256[0].data, forged, 32);
  uint8_t packed[1024];
  size_t pl = kyso__store__v1__blob_manifest__pack(m, packed);
  tu_raw_put(f->a, ARCHIVE__CF_MANIFESTS, f->id[0], 32, packed, pl);
  kyso__store__v1__blob_manifest__free_unpacked(m, NULL);
  free(v);
  archive_reader *r = NULL;
  const uint8_t *p;
  size_t n, got = 0;
  kyso_status st;
  assert_int_equal(archive_reader_open(f->a, f->id[0], &r, &err), KYSO_OK);
  while ((st = archive_reader_next(r, &p, &n, &err)) == KYSO_OK && n > 0) got += n;
  assert_int_equal(st, KYSO_DATA_LOSS);
  assert_int_equal(got, 3 * CHUNK); /* the last 1234 bytes never came out */
  archive_reader_close(r);
  expect_only(f, 0, "no longer hash to its id");
}

/* Returns the path of the blob file holding `needle`, and its offset. */
static int find_in_blob_files(const char *dir, const uint8_t *needle, size_t n, char *path,
                              size_t path_len, off_t *at) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int found = 0;
  while (!found && (e = readdir(d)) != NULL) {
    size_t l = strlen(e->d_name);
    if (l < 6 || strcmp(e->d_name + l - 5, ".blob") != 0) continue;
    snprintf(path, path_len, "%s/%s", dir, e->d_name);
    kyso_buf b;
    kyso_err err = {0};
    assert_int_equal(kyso_read_file(path, 1u << 30, &b, &err), KYSO_OK);
    for (size_t i = 0; i + n <= b.len; i++)
      if (memcmp(b.data + i, needle, n) == 0) {
        *at = (off_t)i;
        found = 1;
        break;
      }
    kyso_buf_free(&b, 0);
  }
  closedir(d);
  return found;
}

/* A byte flipped in a blob file on disk: RocksDB's CRC catches it; kyso
 * names the document; the other documents in the same file read fine. */
static void test_blob_file_flip(void **state) {
  fixture *f = *state;
  char path[1024];
  off_t at = 0;
  kyso_err err = {0};
  assert_int_equal(archive__flush(f->a, &err), KYSO_OK);
  archive_close(f->a);
  /* in the first chunk: the one every pass over the chunks lands on */
  assert_true(find_in_blob_files(f->dir, f->data[1] + 5000, 64, path, sizeof(path), &at));
  int fd = open(path, O_RDWR);
  uint8_t c;
  assert_int_equal(pread(fd, &c, 1, at + 10), 1);
  c ^= 0x04;
  assert_int_equal(pwrite(fd, &c, 1, at + 10), 1);
  close(fd);
  printf("flipped byte %lld of %s\n", (long long)(at + 10), path);
  f->a = tu_open(f->dir, NULL);
  expect_only(f, 1, "chunk 0 cannot be read");
}

/* `ldb put` replaces a chunk under the same key with the store closed. */
static void test_ldb_put(void **state) {
  fixture *f = *state;
  if (access("/usr/bin/ldb", X_OK) != 0) skip();
  uint8_t key[ARCHIVE__CHUNK_KEY], small[100], id[32];
  kyso_err err = {0};
  tu_fill(small, sizeof(small), 77);
  assert_int_equal(archive_put_blob(f->a, small, sizeof(small), id, &err), KYSO_OK);
  archive_close(f->a);
  archive__chunk_key(id, 0, key);
  char khex[2 * sizeof(key) + 1], vhex[2 * sizeof(small) + 1], cmd[4096];
  small[50] ^= 0x20;
  kyso_hex(key, sizeof(key), khex);
  kyso_hex(small, sizeof(small), vhex);
  snprintf(cmd, sizeof(cmd),
           "ldb --db='%s' --column_family=blobs --key_hex --value_hex put 0x%s 0x%s >/dev/null",
           f->dir, khex, vhex);
  assert_int_equal(system(cmd), 0);
  f->a = tu_open(f->dir, NULL);
  uint8_t *got = NULL;
  size_t len = 0;
  char hex[65];
  kyso_hex(id, 32, hex);
  assert_int_equal(tu_read_all(f->a, id, &got, &len, &err), KYSO_DATA_LOSS);
  assert_non_null(strstr(err.msg, hex));
  printf("after ldb put: %s\n", err.msg);
  for (int i = 0; i < BLOBS; i++) {
    assert_int_equal(tu_read_all(f->a, f->id[i], &got, &len, &err), KYSO_OK);
    free(got);
  }
}

/* Chunks nobody's manifest claims (an upload cut short) are reported. */
static void test_orphans(void **state) {
  fixture *f = *state;
  uint8_t sha[32], key[ARCHIVE__CHUNK_KEY], v[5000];
  memset(sha, 0x5a, sizeof(sha));
  memset(v, 1, sizeof(v));
  for (uint32_t i = 0; i < 3; i++) {
    archive__chunk_key(sha, i, key);
    tu_raw_put(f->a, ARCHIVE__CF_BLOBS, key, sizeof(key), v, sizeof(v));
  }
  archive__chunk_key(f->id[2], 9, key); /* one past a manifest's last chunk */
  tu_raw_put(f->a, ARCHIVE__CF_BLOBS, key, sizeof(key), v, sizeof(v));
  problems p = {0};
  archive_scrub_report rep;
  kyso_err err = {0};
  assert_int_equal(archive_scrub(f->a, on_problem, &p, &rep, &err), KYSO_OK);
  assert_int_equal(p.n, 2);
  int orphan = memcmp(p.id[0], sha, 32) == 0 ? 0 : 1; /* reported in key order */
  assert_memory_equal(p.id[orphan], sha, 32);
  assert_non_null(strstr(p.msg[orphan], "orphan"));
  assert_memory_equal(p.id[1 - orphan], f->id[2], 32);
  assert_non_null(strstr(p.msg[1 - orphan], "beyond"));
  assert_int_equal(rep.blobs_bad, 2);
  assert_int_equal(rep.blobs, BLOBS);
  assert_int_equal(rep.bytes, (uint64_t)BLOBS * SIZE);
}

/* Records: a signature's CMS, a certificate, a document's chain and an
 * index entry changed under kyso. */
static void test_records(void **state) {
  fixture *f = *state;
  tu_doc d = {.sha256 = f->id[0], .size = SIZE, .unit = "U", .account = "acc"};
  size_t n;
  uint8_t *cmd = tu_cmd_signing("p", "r1", &d, "acc", "CMS one", 1714550400000LL, &n);
  archive__result *r = tu_submit_ok(f->a, cmd, n, NULL, 0);
  free(cmd);
  uint8_t *v = NULL, sig[32], cert[32];
  size_t vl = 0;
  kyso_err err = {0};
  memcpy(sig, r->signature_id.data, 32);
  tu_result_free(r);
  assert_int_equal(archive_get_signature(f->a, sig, &v, &vl, &err), KYSO_OK);
  Kyso__Store__V1__SignatureRecord *s = kyso__store__v1__signature_record__unpack(NULL, vl, v);
  memcpy(cert, s->certificate_sha256.data, 32);
  s->cms.data[0] ^= 1; /* same key, other CMS */
  uint8_t packed[4096];
  size_t pl = kyso__store__v1__signature_record__pack(s, packed);
  tu_raw_put(f->a, ARCHIVE__CF_SIGNATURES, sig, 32, packed, pl);
  kyso__store__v1__signature_record__free_unpacked(s, NULL);
  free(v);
  assert_int_equal(archive_get_signature(f->a, sig, &v, &vl, &err), KYSO_DATA_LOSS);
  assert_null(v);
  tu_raw_put(f->a, ARCHIVE__CF_CERTIFICATES, cert, 32, "not the certificate", 19);
  assert_int_equal(archive_get_certificate(f->a, cert, &v, &vl, &err), KYSO_DATA_LOSS);
  uint8_t ghost[32], key[ARCHIVE__MAX_KEY];
  memset(ghost, 0x77, sizeof(ghost));
  size_t kl = archive__date_index_key('u', "U", "2024-01-01", 1, ghost, key);
  tu_raw_put(f->a, ARCHIVE__CF_INDEXES, key, kl, "", 0);
  problems p = {0};
  archive_scrub_report rep;
  assert_int_equal(archive_scrub(f->a, on_problem, &p, &rep, &err), KYSO_OK);
  assert_int_equal(p.n, 3);
  assert_string_equal(p.what[0], "signature");
  assert_memory_equal(p.id[0], sig, 32);
  assert_string_equal(p.what[1], "certificate");
  assert_memory_equal(p.id[1], cert, 32);
  assert_string_equal(p.what[2], "index");
  assert_memory_equal(p.id[2], ghost, 32);
  assert_int_equal(rep.documents, 1);
  assert_int_equal(rep.documents_bad, 0);
  assert_int_equal(rep.signatures_bad, 1);
  assert_int_equal(rep.certificates, 2);
  assert_int_equal(rep.certificates_bad, 1);
  assert_int_equal(rep.indexes_bad, 1);
  assert_int_equal(rep.requests, 1);
  /* the document whose chain lost its signature */
  tu_raw_delete(f->a, ARCHIVE__CF_SIGNATURES, sig, 32);
  memset(&p, 0, sizeof(p));
  assert_int_equal(archive_scrub(f->a, on_problem, &p, &rep, &err), KYSO_OK);
  assert_string_equal(p.what[0], "document");
  assert_memory_equal(p.id[0], f->id[0], 32);
  assert_non_null(strstr(p.msg[0], "signature 1"));
  assert_int_equal(rep.documents_bad, 1);
  assert_int_equal(rep.requests_bad, 1);
}

static int stop_at_first(void *ctx, const char *what, const uint8_t id[32], const char *problem,
                         const archive_scrub_report *so_far) {
  (void)what;
  (void)id;
  (void)so_far;
  (*(int *)ctx)++;
  return problem != NULL;
}

static void test_scrub_clean_and_stop(void **state) {
  fixture *f = *state;
  archive_scrub_report rep;
  kyso_err err = {0};
  int calls = 0;
  assert_int_equal(archive_scrub(f->a, stop_at_first, &calls, &rep, &err), KYSO_OK);
  assert_int_equal(calls, 0); /* 3 blobs: below the progress interval, no problems */
  assert_int_equal(rep.blobs, BLOBS);
  assert_int_equal(rep.bytes, (uint64_t)BLOBS * SIZE);
  uint8_t key[ARCHIVE__CHUNK_KEY];
  chunk_key(f, 0, 0, key);
  tu_raw_delete(f->a, ARCHIVE__CF_BLOBS, key, sizeof(key));
  assert_int_equal(archive_scrub(f->a, stop_at_first, &calls, &rep, &err), KYSO_CANCELLED);
  assert_int_equal(calls, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_chunk_replaced, setup, teardown),
      cmocka_unit_test_setup_teardown(test_chunk_deleted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_manifest_forged, setup, teardown),
      cmocka_unit_test_setup_teardown(test_blob_file_flip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ldb_put, setup, teardown),
      cmocka_unit_test_setup_teardown(test_orphans, setup, teardown),
      cmocka_unit_test_setup_teardown(test_records, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scrub_clean_and_stop, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
