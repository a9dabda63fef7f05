/* e2e_archive_tamper: altered bytes on disk are found, named and never
 * served, with kysod stopped while the disk is changed:
 *  (i)   a flipped byte inside a RocksDB blob file (*.blob) under a 200 KiB
 *        document: Archive.Get answers DATA_LOSS naming the id before any of
 *        its bytes go out, a Sign of it by archive_id too, `kyso archive
 *        scrub` names it and exits non-zero, other documents Get fine;
 *  (ii)  a chunk replaced through RocksDB itself (`ldb put` into the blobs
 *        column family, so RocksDB's checksums pass): DATA_LOSS from kyso's
 *        own hash check;
 *  (iii) a flipped byte in the write-ahead log after synced writes and a
 *        kill -9 (so the last documents live only in the log): kysod
 *        refuses to start and says why; with the byte put back it starts
 *        and every document is there. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"

#define PERSONAL KYSO__V1__KEY_ROLE__KEY_ROLE_PERSONAL
#define ACCOUNT "tamper.ec"
#define BIG (200 * 1024)
#define SMALL (16 * 1024)

static e2e *E;
static char archive_dir[512];

/* The documents of this test: bytes are e2e_fill(seed). */
enum { D_BIG1, D_BIG2, D_SMALL1, D_SMALL2, D_WAL1, D_WAL2, D_WAL3, N_DOCS };
static struct {
  const char *name;
  uint64_t seed;
  size_t len;
  int put;          /* stored with Archive.Put (else by an inline Sign) */
  char id[65];
} docs[N_DOCS] = {
    {"big1", 11, BIG, 1, ""},      {"big2", 12, BIG, 1, ""},
    {"small1", 13, SMALL, 1, ""},  {"small2", 14, SMALL, 1, ""},
    {"wal1", 15, 64 * 1024, 0, ""}, {"wal2", 16, 3000, 0, ""},
    {"wal3", 17, 5000, 0, ""},
};

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  snprintf(archive_dir, sizeof(archive_dir), "%s", e2e_path(E, "data/archive"));
  return 0;
}

static uint8_t *doc_bytes(int i) {
  uint8_t *b = malloc(docs[i].len);
  if (b == NULL) E2E_FAIL("out of memory");
  e2e_fill(b, docs[i].len, docs[i].seed, 0);
  return b;
}

/* 64 bytes from the middle of a document: found only where its bytes are. */
static void needle_of(int i, uint8_t out[64]) {
  e2e_fill(out, 64, docs[i].seed, docs[i].len / 2);
}

static void sign_doc(int i) {
  uint8_t *b = docs[i].put ? NULL : doc_bytes(i);
  char rid[64], msg[512];
  snprintf(rid, sizeof(rid), "tamper-%s", docs[i].name);
  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  Kyso__V1__SignResponse *r = NULL;
  e2e_key_ref(&ref, PERSONAL, ACCOUNT);
  meta.unit = "H37.TT.001";
  meta.issue_date = "2024-08-01";
  req.key = &ref;
  req.metadata = &meta;
  req.request_id = rid;
  if (b != NULL) {
    req.document.data = b;
    req.document.len = docs[i].len;
  } else {
    req.archive_id = docs[i].id;
  }
  int st = e2e_sign_with(E->clients[E2E_DMS], &req, 30000, &r, msg, sizeof(msg));
  free(b);
  if (st != 0) E2E_FAIL("Sign of %s: got status %d (%s), want OK", docs[i].name, st, msg);
  if (!docs[i].put) snprintf(docs[i].id, sizeof(docs[i].id), "%s", r->archive_id);
  E2E_STREQ("Sign's archive_id", r->archive_id, docs[i].id);
  kyso__v1__sign_response__free_unpacked(r, NULL);
}

static void put_doc(int i) {
  uint8_t *b = doc_bytes(i);
  char msg[512], want[65];
  Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
  Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
  Kyso__V1__DocumentInfo *info = NULL;
  meta.unit = "H37.TT.001";
  meta.issue_date = "2024-08-01";
  meta.title = (char *)docs[i].name;
  hdr.metadata = &meta;
  int st = e2e_put_with(E->clients[E2E_DMS], &hdr, b, docs[i].len, NULL, 60000, &info, msg,
                        sizeof(msg));
  e2e_sha256_hex(b, docs[i].len, want);
  free(b);
  if (st != 0) E2E_FAIL("Archive.Put of %s: got status %d (%s), want OK", docs[i].name, st, msg);
  E2E_STREQ("Archive.Put id", info->id, want);
  E2E_EQ("Archive.Put size", info->size, docs[i].len);
  snprintf(docs[i].id, sizeof(docs[i].id), "%s", info->id);
  kyso__v1__document_info__free_unpacked(info, NULL);
}

/* Get of document i: OK with exactly its bytes. */
static void get_ok(int i, const char *when) {
  uint8_t *b = doc_bytes(i);
  char msg[512];
  e2e_got g;
  int st = e2e_get_with(E->clients[E2E_ARCH], docs[i].id, docs[i].len, NULL, 30000, &g, msg,
                        sizeof(msg));
  int same = st == 0 && g.size == docs[i].len && memcmp(g.data, b, docs[i].len) == 0;
  uint64_t got = g.size;
  free(b);
  e2e_got_free(&g);
  if (st != 0)
    E2E_FAIL("%s: Archive.Get of %s (%s): got status %d (%s), want OK", when, docs[i].name,
             docs[i].id, st, msg);
  if (!same)
    E2E_FAIL("%s: Archive.Get of %s: got %llu bytes that differ, want its %zu bytes", when,
             docs[i].name, (unsigned long long)got, docs[i].len);
}

/* Get of document i: DATA_LOSS naming it, and none of its bytes out. */
static void get_data_loss(int i, const char *when, const char *must_not_say) {
  char msg[512];
  e2e_got g;
  int st = e2e_get_with(E->clients[E2E_ARCH], docs[i].id, docs[i].len, NULL, 30000, &g, msg,
                        sizeof(msg));
  uint64_t got = g.size;
  e2e_got_free(&g);
  fprintf(stderr, "e2e: %s: Archive.Get of %s -> %s: %s\n", when, docs[i].name,
          st >= 0 ? e2e_grpc_status_names[st] : "no call", msg);
  E2E_EQ("Archive.Get status of the damaged document (15 = DATA_LOSS)", st, 15);
  if (strstr(msg, docs[i].id) == NULL)
    E2E_FAIL("%s: DATA_LOSS message \"%s\" does not name the id %s", when, msg, docs[i].id);
  if (must_not_say != NULL && strstr(msg, must_not_say) != NULL)
    E2E_FAIL("%s: DATA_LOSS message \"%s\": got \"%s\", want kyso's own hash check", when, msg,
             must_not_say);
  /* One chunk, checked before it goes out: not a byte of it may arrive. */
  E2E_EQ("bytes of the damaged document that came out", got, 0);
}

/* `kyso archive scrub` as the archivist: exit status, output in *out. */
static int cli_scrub(char **out) {
  const char *log = e2e_path(E, "work/scrub.out");
  static const char *const args[] = {"archive", "scrub", NULL};
  unlink(log);
  int rc = e2e_kyso(E, E2E_ARCH, log, args);
  *out = (char *)e2e_read_file(log, NULL);
  if (*out == NULL) *out = strdup("");
  fprintf(stderr, "e2e: kyso archive scrub -> exit %d\n%s", rc, *out);
  return rc;
}

static void start_and_store(void **state) {
  (void)state;
  e2e_start(E, NULL);
  e2e_provision_key(E, PERSONAL, ACCOUNT, KYSO__V1__KEY_ALGORITHM__KEY_ALGORITHM_EC_P256);
  for (int i = D_BIG1; i <= D_SMALL2; i++) {
    put_doc(i);
    sign_doc(i);
  }
  char *out = NULL;
  int rc = cli_scrub(&out);
  int clean = rc == 0 && strstr(out, "0 problem(s)") != NULL;
  free(out);
  if (!clean) E2E_FAIL("kyso archive scrub of an intact archive: got exit %d, want 0 and "
                       "\"0 problem(s)\"", rc);
  e2e_scrub_out so;
  char msg[512];
  int st = e2e_scrub(E, E2E_ARCH, &so, msg, sizeof(msg));
  int ok = st == 0 && so.done && so.problems == 0 && so.blobs == 4 && so.documents == 4 &&
           so.signatures == 4 && so.bytes == 2 * BIG + 2 * SMALL;
  fprintf(stderr, "e2e: Archive.Scrub of the intact archive: status %d, done=%d, %llu blobs, "
          "%llu bytes, %llu documents, %llu signatures, %llu problems\n", st, so.done,
          (unsigned long long)so.blobs, (unsigned long long)so.bytes,
          (unsigned long long)so.documents, (unsigned long long)so.signatures,
          (unsigned long long)so.problems);
  e2e_scrub_out_free(&so);
  if (!ok) E2E_FAIL("Archive.Scrub of an intact archive: want OK, done, 4 blobs of %d bytes, 4 "
                    "documents, 4 signatures, 0 problems", 2 * BIG + 2 * SMALL);
}

/* Lines that tampering makes kysod log at error level, by design. */
static const char *const expected_errors[] = {"scrub:", NULL};

/* The blob file holding big1's bytes into blob/off; 0 if none does. */
static int find_big1(char *blob, size_t size, long *off) {
  uint8_t needle[64];
  needle_of(D_BIG1, needle);
  return e2e_find_in_files(archive_dir, ".blob", needle, sizeof(needle), blob, size, off);
}

/* A clean stop flushes the memtables, so the chunks are in blob files (and
 * the next start has no log to replay). */
static void clean_stop_flushes(void **state) {
  (void)state;
  char blob[1024];
  long off = -1;
  e2e_stop(E);
  if (find_big1(blob, sizeof(blob), &off) == 0) {
    e2e_sh(NULL, "ls -l '%s' >&2", archive_dir);
    E2E_FAIL("after a clean stop no *.blob file in %s holds big1's bytes: the stop did not "
             "flush the blobs column family (they are only in the write-ahead log)", archive_dir);
  }
}

static void blob_file_flip(void **state) {
  (void)state;
  char blob[1024];
  long off = -1;
  if (find_big1(blob, sizeof(blob), &off) == 0) {
    /* clean_stop_flushes failed: RocksDB flushes a replayed log at open. */
    fprintf(stderr, "e2e: no blob file yet; a start and stop to get one\n");
    e2e_start(E, NULL);
    e2e_stop(E);
  }
  if (find_big1(blob, sizeof(blob), &off) == 0) E2E_FAIL("no *.blob file holds big1's bytes");
  uint8_t other[64];
  needle_of(D_BIG2, other);
  if (e2e_find_in_files(archive_dir, ".blob", other, sizeof(other), NULL, 0, NULL) == 0)
    E2E_FAIL("no *.blob file holds big2's bytes");
  fprintf(stderr, "e2e: big1's bytes are at offset %ld of %s; flipping one bit there\n", off, blob);
  e2e_flip_byte(blob, off + 10);

  e2e_start(E, NULL);
  get_data_loss(D_BIG1, "blob file flip", NULL);
  get_ok(D_BIG2, "blob file flip");
  get_ok(D_SMALL1, "blob file flip");
  get_ok(D_SMALL2, "blob file flip");

  /* A Sign of the damaged document by id re-reads it: DATA_LOSS too. */
  Kyso__V1__SignRequest req = KYSO__V1__SIGN_REQUEST__INIT;
  Kyso__V1__KeyRef ref;
  char msg[512];
  e2e_key_ref(&ref, PERSONAL, ACCOUNT);
  req.key = &ref;
  req.archive_id = docs[D_BIG1].id;
  req.request_id = "tamper-big1-again";
  int st = e2e_sign_with(E->clients[E2E_DMS], &req, 30000, NULL, msg, sizeof(msg));
  E2E_EQ("Sign by archive_id of the damaged document (15 = DATA_LOSS)", st, 15);
  if (strstr(msg, docs[D_BIG1].id) == NULL)
    E2E_FAIL("Sign's DATA_LOSS message \"%s\" does not name %s", msg, docs[D_BIG1].id);

  char *out = NULL;
  int rc = cli_scrub(&out);
  int names = strstr(out, docs[D_BIG1].id) != NULL;
  int others = strstr(out, docs[D_BIG2].id) != NULL || strstr(out, docs[D_SMALL1].id) != NULL;
  int finished = strstr(out, "scrub finished: 1 problem(s)") != NULL;
  free(out);
  if (rc == 0) E2E_FAIL("kyso archive scrub with a damaged blob: got exit 0, want non-zero");
  if (!names) E2E_FAIL("kyso archive scrub does not name the damaged document %s", docs[D_BIG1].id);
  if (others) E2E_FAIL("kyso archive scrub names an intact document as damaged");
  /* A damaged blob is a finding, not the end: the records get checked too. */
  if (!finished)
    E2E_FAIL("kyso archive scrub with one damaged blob: did not say \"scrub finished: 1 "
             "problem(s)\"; a scrub must report the damage and go on to the end");
  /* The same through the API: one problem, kind "blob", its id, and done. */
  e2e_scrub_out so;
  char want[100];
  st = e2e_scrub(E, E2E_ARCH, &so, msg, sizeof(msg));
  snprintf(want, sizeof(want), "blob %s: ", docs[D_BIG1].id);
  int named = strncmp(so.problem_text, want, strlen(want)) == 0;
  fprintf(stderr, "e2e: Archive.Scrub -> %s, done=%d, %llu problem(s), %llu documents, %llu "
          "signatures checked:\n%s", st >= 0 ? e2e_grpc_status_names[st] : "no call", so.done,
          (unsigned long long)so.problems, (unsigned long long)so.documents,
          (unsigned long long)so.signatures, so.problem_text);
  uint64_t problems = so.problems, documents = so.documents;
  int done = so.done;
  e2e_scrub_out_free(&so);
  if (st != 0 || !done || problems != 1 || !named || documents != 4)
    E2E_FAIL("Archive.Scrub with one damaged blob: got status %d, done=%d, %llu problem(s), "
             "big1 named first: %s, %llu documents checked; want OK, done, 1, yes, 4", st, done,
             (unsigned long long)problems, named ? "yes" : "no", (unsigned long long)documents);
  e2e_stop_allowing(E, expected_errors);
}

static void ldb_replace(void **state) {
  (void)state;
  if (E->pid > 0) e2e_stop_allowing(E, expected_errors); /* blob_file_flip failed early */
  /* Key: sha256 || u32 BE chunk index (archive/keys.c); small1 is one chunk. */
  char key[2 + 64 + 8 + 1], *value = malloc(2 + 2 * SMALL + 1);
  uint8_t *b = doc_bytes(D_SMALL1);
  b[SMALL / 3] ^= 0x01;
  snprintf(key, sizeof(key), "0x%s00000000", docs[D_SMALL1].id);
  value[0] = '0';
  value[1] = 'x';
  kyso_hex(b, SMALL, value + 2);
  free(b);
  char db[600];
  snprintf(db, sizeof(db), "--db=%s", archive_dir);
  const char *const argv[] = {"ldb", db, "--column_family=blobs", "put", "--key_hex",
                              "--value_hex", key, value, NULL};
  const char *log = e2e_path(E, "work/ldb.out");
  int rc = e2e_run(argv, log);
  free(value);
  if (rc != 0) {
    e2e_sh(NULL, "cat '%s' >&2", log);
    E2E_FAIL("ldb put into the blobs column family: got exit %d, want 0", rc);
  }
  e2e_start(E, NULL);
  /* RocksDB's checksums pass, so kyso's hash check speaks (not "Corruption"). */
  get_data_loss(D_SMALL1, "ldb put", "Corruption");
  get_ok(D_SMALL2, "ldb put");
  get_ok(D_BIG2, "ldb put");
  char *out = NULL;
  int src = cli_scrub(&out);
  int names = strstr(out, docs[D_SMALL1].id) != NULL && strstr(out, docs[D_BIG1].id) != NULL;
  int finished = strstr(out, "scrub finished: 2 problem(s)") != NULL;
  free(out);
  if (src == 0 || !names || !finished)
    E2E_FAIL("kyso archive scrub after ldb put: got exit %d, naming small1 and big1: %s, "
             "finished with 2 problems: %s; want non-zero, both named, finished", src,
             names ? "yes" : "no", finished ? "yes" : "no");
}

/* The newest *.log (write-ahead log) in the archive directory. */
static void newest_wal(char *out, size_t size) {
  DIR *d = opendir(archive_dir);
  struct dirent *de;
  unsigned long best = 0;
  out[0] = '\0';
  while (d && (de = readdir(d)) != NULL) {
    size_t n = strlen(de->d_name);
    if (n < 5 || strcmp(de->d_name + n - 4, ".log") != 0) continue;
    unsigned long num = strtoul(de->d_name, NULL, 10);
    if (num >= best) {
      best = num;
      snprintf(out, size, "%s/%s", archive_dir, de->d_name);
    }
  }
  if (d) closedir(d);
}

static void wal_flip(void **state) {
  (void)state;
  if (E->pid <= 0) e2e_start(E, NULL); /* ldb_replace failed early */
  for (int i = D_WAL1; i <= D_WAL3; i++) sign_doc(i);
  /* Synced and acknowledged, not flushed: only the log holds them. */
  e2e_kill9(E);
  char wal[1024];
  newest_wal(wal, sizeof(wal));
  if (wal[0] == '\0') E2E_FAIL("no *.log in %s after kill -9", archive_dir);
  size_t len = 0;
  uint8_t *data = e2e_read_file(wal, &len), needle[64];
  needle_of(D_WAL1, needle);
  uint8_t *at = data ? memmem(data, len, needle, sizeof(needle)) : NULL;
  long off = at ? (long)(at - data) : -1;
  free(data);
  if (off < 0) E2E_FAIL("the write-ahead log %s does not hold wal1's bytes", wal);
  fprintf(stderr, "e2e: wal1's bytes at offset %ld of %s (%zu bytes); flipping one bit\n", off,
          wal, len);
  e2e_flip_byte(wal, off + 5);

  int wstatus = 0;
  if (e2e_start_expect_exit(E, NULL, &wstatus) != 0)
    E2E_FAIL("kysod started with a damaged write-ahead log, want a refusal");
  char *err = (char *)e2e_read_file(E->stderr_path, NULL);
  fprintf(stderr, "e2e: kysod with a damaged log: wait status 0x%x; stderr:\n%s", wstatus,
          err ? err : "");
  int refused = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0;
  int damaged = err && strstr(err, "damaged") != NULL;
  int says_log = err && (strstr(err, "write-ahead log") != NULL || strstr(err, ".log") != NULL);
  free(err);
  if (!refused) E2E_FAIL("kysod with a damaged log: got wait status 0x%x, want a non-zero exit",
                         wstatus);
  if (!damaged || !says_log)
    E2E_FAIL("kysod's stderr with a damaged log: got damaged=%s, names the log=%s; want both",
             damaged ? "yes" : "no", says_log ? "yes" : "no");

  /* The refusal changed nothing: with the byte put back, everything is there. */
  e2e_flip_byte(wal, off + 5);
  e2e_start(E, NULL);
  for (int i = D_WAL1; i <= D_WAL3; i++) get_ok(i, "log restored");
  get_ok(D_BIG2, "log restored");
  e2e_stop_allowing(E, expected_errors);
}

static int teardown(void **state) {
  (void)state;
  e2e_free(E);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(start_and_store),
      cmocka_unit_test(clean_stop_flushes),
      cmocka_unit_test(blob_file_flip),
      cmocka_unit_test(ldb_replace),
      cmocka_unit_test(wal_flip),
  };
  return cmocka_run_group_tests_name("e2e_archive_tamper", tests, setup, teardown);
}
