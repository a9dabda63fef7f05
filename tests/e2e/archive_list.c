/* e2e_archive_list: listing by unit and date range is exact across page
 * boundaries. 10,000 small distinct documents go in through Archive.Put
 * from several threads, each with metadata.unit among 3 units and an
 * issue_date over 60 days. Listing one unit for a date sub-range with
 * page_size 97 returns every expected id exactly once, nothing outside
 * (other units, dates before or after), with both bounds inclusive, in
 * date order, every page full but the last; an open-ended range and an
 * exact number lookup are checked the same way. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"

#define DOCS 10000
#define THREADS 8
#define DAYS 60
#define PAGE 97

static const char *const units[3] = {"H37.LS.001", "H37.LS.002", "H37.LS.003"};

typedef struct entry {
  char id[65];
  int unit, day;
  int seen;
} entry;

static e2e *E;
static entry docs[DOCS];
static atomic_int next_doc;

static int setup(void **state) {
  (void)state;
  E = e2e_new();
  assert_non_null(E);
  return 0;
}

/* Document i's unit and day: independent of each other, every (unit, day)
 * pair occurs. */
static int unit_of(int i) { return i % 3; }
static int day_of(int i) { return (i / 3 * 7) % DAYS; }

/* 2024-03-01 plus d days (March has 31, April 30: 60 days end on 29 April). */
static void date_of(int d, char out[11]) {
  int month = d < 31 ? 3 : 4, day = d < 31 ? d + 1 : d - 30;
  memcpy(out, "2024-0", 6);
  out[6] = (char)('0' + month);
  out[7] = '-';
  out[8] = (char)('0' + day / 10);
  out[9] = (char)('0' + day % 10);
  out[10] = '\0';
}

static int by_id(const void *a, const void *b) {
  return strcmp(((const entry *)a)->id, ((const entry *)b)->id);
}

static entry *find(const char *id) {
  entry key;
  snprintf(key.id, sizeof(key.id), "%s", id);
  return bsearch(&key, docs, DOCS, sizeof(entry), by_id);
}

typedef struct worker {
  kyso_client *client;
  int done;
  char error[1024];
} worker;

static void *run_worker(void *arg) {
  worker *w = arg;
  for (;;) {
    int i = atomic_fetch_add(&next_doc, 1);
    if (i >= DOCS) break;
    uint8_t doc[256];
    char date[11], number[32], msg[512];
    size_t len = 64 + (size_t)(i % 150);
    e2e_fill(doc, len, 500000 + (uint64_t)i, 0);
    date_of(day_of(i), date);
    snprintf(number, sizeof(number), "%d/CV-LS", i);
    Kyso__V1__PutHeader hdr = KYSO__V1__PUT_HEADER__INIT;
    Kyso__V1__DocumentMetadata meta = KYSO__V1__DOCUMENT_METADATA__INIT;
    Kyso__V1__DocumentInfo *info = NULL;
    meta.unit = (char *)units[unit_of(i)];
    meta.issue_date = date;
    meta.number_notation = number;
    meta.title = "Công văn để liệt kê";
    hdr.metadata = &meta;
    int st = e2e_put_with(w->client, &hdr, doc, len, NULL, 60000, &info, msg, sizeof(msg));
    if (st != 0) {
      snprintf(w->error, sizeof(w->error), "Put of document %d: got %d (%s)", i, st, msg);
      break;
    }
    snprintf(docs[i].id, sizeof(docs[i].id), "%s", info->id);
    docs[i].unit = unit_of(i);
    docs[i].day = day_of(i);
    kyso__v1__document_info__free_unpacked(info, NULL);
    w->done++;
  }
  return NULL;
}

static void start_and_fill(void **state) {
  (void)state;
  worker w[THREADS];
  pthread_t tid[THREADS];
  e2e_start(E, NULL);
  memset(w, 0, sizeof(w));
  int64_t t0 = kyso_now_ms();
  for (int t = 0; t < THREADS; t++) {
    w[t].client = e2e_client_open(E, E2E_DMS);
    if (pthread_create(&tid[t], NULL, run_worker, &w[t]) != 0) E2E_FAIL("pthread_create");
  }
  int done = 0;
  for (int t = 0; t < THREADS; t++) {
    pthread_join(tid[t], NULL);
    kyso_client_close(w[t].client);
    done += w[t].done;
  }
  int64_t ms = kyso_now_ms() - t0;
  fprintf(stderr, "e2e: %d Archive.Put calls from %d threads in %lld ms (%.0f/s)\n", done,
          THREADS, (long long)ms, done * 1000.0 / (double)(ms ? ms : 1));
  for (int t = 0; t < THREADS; t++)
    if (w[t].error[0]) E2E_FAIL("thread %d: %s", t, w[t].error);
  E2E_EQ("documents put", done, DOCS);
  qsort(docs, DOCS, sizeof(entry), by_id);
  for (int i = 1; i < DOCS; i++)
    if (strcmp(docs[i - 1].id, docs[i].id) == 0) E2E_FAIL("two documents share id %s", docs[i].id);
}

/* Lists (unit, from, to) page by page and checks it against docs[]. */
static void check_listing(int unit, int from_day, int to_day, int page_size) {
  char from[11] = "", to[11] = "", token[600] = "", msg[512], last_date[11] = "";
  if (from_day >= 0) date_of(from_day, from);
  if (to_day >= 0) date_of(to_day, to);
  int lo = from_day >= 0 ? from_day : 0, hi = to_day >= 0 ? to_day : DAYS - 1;
  int want = 0, on_from = 0, on_to = 0, got = 0, pages = 0;
  for (int i = 0; i < DOCS; i++) {
    docs[i].seen = 0;
    if (docs[i].unit != unit || docs[i].day < lo || docs[i].day > hi) continue;
    want++;
    on_from += docs[i].day == lo;
    on_to += docs[i].day == hi;
  }
  if (on_from == 0 || on_to == 0) E2E_FAIL("test data: no document on a bound of the range");
  Kyso__V1__ListRequest req = KYSO__V1__LIST_REQUEST__INIT;
  req.by_case = KYSO__V1__LIST_REQUEST__BY_UNIT;
  req.unit = (char *)units[unit];
  req.from_date = from;
  req.to_date = to;
  req.page_size = (uint32_t)page_size;
  int64_t t0 = kyso_now_ms();
  do {
    Kyso__V1__ListResponse *resp = NULL;
    req.page_token = token;
    int st = e2e_call(E, E2E_ARCH, "/kyso.v1.Archive/List", &req.base,
                      &kyso__v1__list_response__descriptor, 30000, (ProtobufCMessage **)&resp,
                      msg, sizeof(msg));
    if (st != 0) E2E_FAIL("Archive.List page %d: got %d (%s), want OK", pages, st, msg);
    pages++;
    int last = resp->next_page_token[0] == '\0';
    if (!last && resp->n_documents != (size_t)page_size)
      E2E_FAIL("page %d: got %zu documents with a next page, want %d", pages, resp->n_documents,
               page_size);
    for (size_t k = 0; k < resp->n_documents; k++) {
      const Kyso__V1__DocumentInfo *d = resp->documents[k];
      entry *e = find(d->id);
      if (e == NULL) E2E_FAIL("page %d lists %s, which was never put", pages, d->id);
      char date[11];
      date_of(e->day, date);
      if (e->unit != unit || e->day < lo || e->day > hi)
        E2E_FAIL("page %d lists %s of unit %s dated %s: outside unit %s, %s..%s", pages, d->id,
                 units[e->unit], date, units[unit], from[0] ? from : "(open)",
                 to[0] ? to : "(open)");
      if (e->seen++) E2E_FAIL("page %d lists %s again", pages, d->id);
      if (d->metadata == NULL || strcmp(d->metadata->unit, units[unit]) != 0 ||
          strcmp(d->metadata->issue_date, date) != 0)
        E2E_FAIL("%s: listed with unit \"%s\" date \"%s\", want \"%s\" \"%s\"", d->id,
                 d->metadata ? d->metadata->unit : "", d->metadata ? d->metadata->issue_date : "",
                 units[unit], date);
      if (strcmp(date, last_date) < 0)
        E2E_FAIL("page %d: %s dated %s comes after %s: not in date order", pages, d->id, date,
                 last_date);
      snprintf(last_date, sizeof(last_date), "%s", date);
      got++;
    }
    snprintf(token, sizeof(token), "%s", resp->next_page_token);
    kyso__v1__list_response__free_unpacked(resp, NULL);
    if (pages > want / page_size + 2) E2E_FAIL("more pages than %d documents need", want);
  } while (token[0]);
  for (int i = 0; i < DOCS; i++) {
    if (docs[i].unit != unit || docs[i].day < lo || docs[i].day > hi || docs[i].seen) continue;
    char date[11];
    date_of(docs[i].day, date);
    E2E_FAIL("%s (unit %s, %s) is missing from the listing%s", docs[i].id, units[unit], date,
             docs[i].day == lo || docs[i].day == hi ? ": a bound is not inclusive" : "");
  }
  fprintf(stderr, "e2e: unit %s, %s..%s, page_size %d: %d documents (%d on the first day, %d on "
                  "the last) in %d pages, %lld ms\n", units[unit], from[0] ? from : "(open)",
          to[0] ? to : "(open)", page_size, got, on_from, on_to, pages,
          (long long)(kyso_now_ms() - t0));
  E2E_EQ("documents listed", got, want);
}

static void list_ranges(void **state) {
  (void)state;
  check_listing(1, 10, 40, PAGE);  /* 2024-03-11 .. 2024-04-10 */
  check_listing(0, -1, 5, PAGE);   /* open start */
  check_listing(2, 55, -1, PAGE);  /* open end */
  check_listing(1, 20, 20, PAGE);  /* one day */
  check_listing(2, -1, -1, 1000);  /* the whole unit, largest pages */
}

static void list_by_number(void **state) {
  (void)state;
  /* Document 4242's number in its unit: exactly that document. */
  int i = 4242;
  char number[32], msg[512];
  snprintf(number, sizeof(number), "%d/CV-LS", i);
  Kyso__V1__ListRequest req = KYSO__V1__LIST_REQUEST__INIT;
  Kyso__V1__ListResponse *resp = NULL;
  req.by_case = KYSO__V1__LIST_REQUEST__BY_UNIT;
  req.unit = (char *)units[unit_of(i)];
  req.number_notation = number;
  int st = e2e_call(E, E2E_ARCH, "/kyso.v1.Archive/List", &req.base,
                    &kyso__v1__list_response__descriptor, 30000, (ProtobufCMessage **)&resp, msg,
                    sizeof(msg));
  if (st != 0) E2E_FAIL("Archive.List by number: got %d (%s), want OK", st, msg);
  E2E_EQ("documents with that number", resp->n_documents, 1);
  E2E_STREQ("its number", resp->documents[0]->metadata->number_notation, number);
  kyso__v1__list_response__free_unpacked(resp, NULL);
  /* The same number under another unit: none. */
  req.unit = (char *)units[(unit_of(i) + 1) % 3];
  st = e2e_call(E, E2E_ARCH, "/kyso.v1.Archive/List", &req.base,
                &kyso__v1__list_response__descriptor, 30000, (ProtobufCMessage **)&resp, msg,
                sizeof(msg));
  if (st != 0) E2E_FAIL("Archive.List by number, other unit: got %d (%s), want OK", st, msg);
  E2E_EQ("documents with that number in another unit", resp->n_documents, 0);
  kyso__v1__list_response__free_unpacked(resp, NULL);
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
      cmocka_unit_test(start_and_fill),
      cmocka_unit_test(list_ranges),
      cmocka_unit_test(list_by_number),
      cmocka_unit_test(stop_clean),
  };
  return cmocka_run_group_tests_name("e2e_archive_list", tests, setup, teardown);
}
