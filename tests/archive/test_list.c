/* Listing: 10,000 documents over 100 days in two units, read back in pages
 * of 97 — every id exactly once, in (date, time, id) order, range bounds
 * inclusive — plus tokens that do not belong to the listing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyso/util.h"
#include "testutil.h"

#define DOCS 10000
#define DAYS 100
#define T0 1704067200000LL /* 2024-01-01T00:00:00Z */

typedef struct entry {
  char date[11];
  int64_t created;
  uint8_t id[32];
  int unit; /* 0: H37.DN.001, 1: H37.DN.002 */
  int account;
} entry;

static entry docs[DOCS];
static archive *A;
static char *dir;

static void date_of(int day, char out[11]) {
  static const unsigned char mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  unsigned char m = 0, d = (unsigned char)day;
  while (d >= mdays[m]) d = (unsigned char)(d - mdays[m++]);
  snprintf(out, 11, "2024-%02u-%02u", (unsigned)(m + 1) % 100u, (unsigned)(d + 1) % 100u);
}

static int by_key(const void *x, const void *y) {
  const entry *a = x, *b = y;
  int c = strcmp(a->date, b->date);
  if (c) return c;
  if (a->created != b->created) return a->created < b->created ? -1 : 1;
  return memcmp(a->id, b->id, 32);
}

static int setup(void **state) {
  (void)state;
  dir = tu_tmpdir();
  archive_opts o = {.no_sync = 1}; /* this test is about listing, not durability */
  A = tu_open(dir, &o);
  for (int i = 0; i < DOCS; i++) {
    uint8_t body[64];
    kyso_err err = {0};
    int n = snprintf((char *)body, sizeof(body), "document number %d", i);
    /* days interleave so creation order differs from date order */
    date_of((i * 37) % DAYS, docs[i].date);
    docs[i].created = T0 + (DOCS - i) * 1000;
    docs[i].unit = i % 10 == 3;
    docs[i].account = i % 2;
    assert_int_equal(archive_put_blob(A, body, (size_t)n, docs[i].id, &err), KYSO_OK);
    char number[32];
    snprintf(number, sizeof(number), "%d/UBND-VP", i % 500);
    tu_doc d = {.sha256 = docs[i].id,
                .size = (uint64_t)n,
                .unit = docs[i].unit ? "H37.DN.002" : "H37.DN.001",
                .issue_date = docs[i].date,
                .number = number,
                .account = docs[i].account ? "acc.one" : "acc.zero"};
    size_t len;
    uint8_t *cmd = tu_cmd_document("dms", NULL, &d, docs[i].created, &len);
    tu_result_free(tu_submit_ok(A, cmd, len, NULL, 0));
    free(cmd);
  }
  qsort(docs, DOCS, sizeof(docs[0]), by_key);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  archive_close(A);
  tu_rmrf(dir);
  free(dir);
  return 0;
}

/* Lists every page; checks the ids against the expected entries in order. */
static void check_listing(archive_index index, const char *key, const char *from, const char *to,
                          int (*want)(const entry *), uint32_t page) {
  char token[513] = "";
  size_t expected = 0, got = 0, pages = 0;
  for (int i = 0; i < DOCS; i++) expected += want(&docs[i]) != 0;
  int next = 0;
  do {
    archive_query q = {
        .index = index, .key = key, .from = from, .to = to, .page_token = token, .page_size = page};
    uint8_t *ids = NULL;
    size_t count = 0;
    char next_token[513];
    kyso_err err = {0};
    if (archive_list(A, &q, &ids, &count, next_token, &err) != KYSO_OK)
      fail_msg("list page %zu: %s", pages, err.msg);
    assert_true(count <= page);
    if (next_token[0]) assert_int_equal(count, page);
    for (size_t j = 0; j < count; j++) {
      while (next < DOCS && !want(&docs[next])) next++;
      assert_true(next < DOCS);
      if (memcmp(ids + 32 * j, docs[next].id, 32) != 0)
        fail_msg("page %zu item %zu: got another id than entry %d (date %s)", pages, j, next,
                 docs[next].date);
      next++;
      got++;
    }
    free(ids);
    strcpy(token, next_token);
    pages++;
  } while (token[0]);
  assert_int_equal(got, expected);
  printf("listed %zu documents in %zu pages of %u\n", got, pages, page);
}

static int unit1_range(const entry *e) {
  return e->unit == 0 && strcmp(e->date, "2024-01-10") >= 0 && strcmp(e->date, "2024-03-20") <= 0;
}
static int unit1_all(const entry *e) { return e->unit == 0; }
static int unit2_from(const entry *e) { return e->unit == 1 && strcmp(e->date, "2024-02-01") >= 0; }
static int acc1_to(const entry *e) { return e->account == 1 && strcmp(e->date, "2024-01-31") <= 0; }
static int one_day(const entry *e) { return e->unit == 0 && strcmp(e->date, "2024-02-29") == 0; }

static void test_unit_range(void **state) {
  (void)state;
  check_listing(ARCHIVE_BY_UNIT_DATE, "H37.DN.001", "2024-01-10", "2024-03-20", unit1_range, 97);
  check_listing(ARCHIVE_BY_UNIT_DATE, "H37.DN.001", NULL, NULL, unit1_all, 97);
  check_listing(ARCHIVE_BY_UNIT_DATE, "H37.DN.001", "", "", unit1_all, 1000);
  check_listing(ARCHIVE_BY_UNIT_DATE, "H37.DN.002", "2024-02-01", NULL, unit2_from, 97);
  check_listing(ARCHIVE_BY_UNIT_DATE, "H37.DN.001", "2024-02-29", "2024-02-29", one_day, 7);
  check_listing(ARCHIVE_BY_ACCOUNT_DATE, "acc.one", NULL, "2024-01-31", acc1_to, 97);
}

static void test_by_number(void **state) {
  (void)state;
  archive_query q = {.index = ARCHIVE_BY_NUMBER, .key = "H37.DN.001", .from = "7/UBND-VP"};
  uint8_t *ids = NULL;
  size_t count = 0;
  char next[513];
  kyso_err err = {0};
  assert_int_equal(archive_list(A, &q, &ids, &count, next, &err), KYSO_OK);
  /* documents i with i % 500 == 7 in unit 1 (i % 10 != 3): 20 of them */
  assert_int_equal(count, 20);
  assert_string_equal(next, "");
  for (size_t j = 1; j < count; j++) assert_true(memcmp(ids + 32 * (j - 1), ids + 32 * j, 32) < 0);
  free(ids);
}

static void test_bad_queries(void **state) {
  (void)state;
  uint8_t *ids = NULL;
  size_t count = 0;
  char next[513], other[513];
  kyso_err err = {0};
  archive_query q = {.index = ARCHIVE_BY_UNIT_DATE, .key = "H37.DN.001", .page_size = 10};
  assert_int_equal(archive_list(A, &q, &ids, &count, next, &err), KYSO_OK);
  free(ids);
  assert_true(next[0] != '\0');
  /* a token of another listing (other unit) or a mangled one */
  archive_query q2 = q;
  q2.key = "H37.DN.002";
  assert_int_equal(archive_list(A, &q2, &ids, &count, other, &err), KYSO_OK);
  free(ids);
  q.page_token = other;
  assert_int_equal(archive_list(A, &q, &ids, &count, other, &err), KYSO_INVALID_ARGUMENT);
  assert_null(ids);
  const char *bad[] = {"zz", "00", "not hex at all", next + 2};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    q.page_token = bad[i];
    assert_int_equal(archive_list(A, &q, &ids, &count, other, &err), KYSO_INVALID_ARGUMENT);
  }
  q.page_token = next;
  q.from = "2024-01-01"; /* same unit, other range: the token does not carry over */
  assert_int_equal(archive_list(A, &q, &ids, &count, other, &err), KYSO_INVALID_ARGUMENT);
  archive_query q3 = {.index = ARCHIVE_BY_UNIT_DATE, .key = "H37.DN.001", .page_size = 1001};
  assert_int_equal(archive_list(A, &q3, &ids, &count, other, &err), KYSO_INVALID_ARGUMENT);
  q3.page_size = 0;
  q3.from = "2024-03-01";
  q3.to = "2024-02-01";
  assert_int_equal(archive_list(A, &q3, &ids, &count, other, &err), KYSO_INVALID_ARGUMENT);
  q3.from = "2024-13-01";
  assert_int_equal(archive_list(A, &q3, &ids, &count, other, &err), KYSO_INVALID_ARGUMENT);
  q3.from = NULL;
  q3.to = NULL;
  q3.key = "";
  assert_int_equal(archive_list(A, &q3, &ids, &count, other, &err), KYSO_INVALID_ARGUMENT);
  q3.key = "nobody";
  assert_int_equal(archive_list(A, &q3, &ids, &count, other, &err), KYSO_OK);
  assert_int_equal(count, 0);
  assert_string_equal(other, "");
  free(ids);
}

static int count_calls(void *ctx, const char *what, const uint8_t id[32], const char *problem,
                       const archive_scrub_report *so_far) {
  (void)id;
  (void)so_far;
  if (problem != NULL) fail_msg("scrub: %s: %s", what, problem);
  (*(int *)ctx)++;
  return 0;
}

/* A scrub of the 10,000 documents: clean, with progress along the way. */
static void test_scrub_all(void **state) {
  (void)state;
  int progress = 0;
  archive_scrub_report rep;
  kyso_err err = {0};
  int64_t t0 = kyso_now_ms();
  assert_int_equal(archive_scrub(A, count_calls, &progress, &rep, &err), KYSO_OK);
  printf("scrub of %llu blobs, %llu documents, %llu index entries: %lld ms, %d progress calls\n",
         (unsigned long long)rep.blobs, (unsigned long long)rep.documents,
         (unsigned long long)rep.indexes, (long long)(kyso_now_ms() - t0), progress);
  assert_int_equal(rep.blobs, DOCS);
  assert_int_equal(rep.documents, DOCS);
  assert_int_equal(rep.indexes, 3 * DOCS); /* unit, number and account */
  assert_int_equal(rep.blobs_bad + rep.documents_bad + rep.indexes_bad, 0);
  assert_true(progress >= 4 * DOCS / 256);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unit_range),
      cmocka_unit_test(test_by_number),
      cmocka_unit_test(test_bad_queries),
      cmocka_unit_test(test_scrub_all),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
