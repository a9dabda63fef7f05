/* kyso-bench-fill archive — a large archive, fast: DATA_DIR/archive opened
 * with the archive module, and N distinct documents recorded through
 * archive_submit with the RecordDocument command kysod applies for
 * Archive.Put (here with the bytes inline, in the same batch). Many threads
 * submit at once so group commit fills its batches: one fsync carries up to
 * group_commit_max documents.
 *
 * Document number n always has the same bytes and metadata, so a second
 * fill with --first continues the first instead of repeating it; only the
 * time recorded is the real time, as in kysod. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include "fill.h"
#include "kyso/archive.h"
#include "kyso/config.h"
#include "kyso/limits.h"
#include "kyso/store/v1/command.pb-c.h"
#include "tool.h"

#define MAX_THREADS 1024
#define MIN_SIZE 64 /* room for the numbered first line that makes each document distinct */
#define MAX_UNITS 100000
#define MAX_ACCOUNTS 100000
#define PRINCIPAL "kyso-bench-fill"
/* Issue dates: the days of 2024, spread evenly over the documents. */
#define DATE_YEAR 2024
#define DATE_DAYS 366
/* A command is the metadata below plus a hash: well under this. */
#define MAX_COMMAND 4096

static const char usage_text[] =
    "Usage: kyso-bench-fill archive --data-dir DIR --documents N [--first K] [--size B]\n"
    "                               [--units U] [--accounts A] [--threads T] [--json FILE]\n"
    "\n"
    "Records N distinct documents in kysod's archive (DIR/archive, made if\n"
    "missing) with the archive module: the RecordDocument command that kysod\n"
    "applies for Archive.Put, the document's bytes in the same synced batch. Run\n"
    "it with kysod stopped (the archive refuses a second process).\n"
    "\n"
    "Document number n (from K to K+N-1) always has the same B bytes (a numbered\n"
    "first line, then pseudo-random bytes) and metadata: unit BENCH.U<n mod U>,\n"
    "account bench.fill.<n mod A>, number notation \"<n div U + 1>/BENCH\", an issue\n"
    "date among the 366 days of 2024, principal kyso-bench-fill, no request id.\n"
    "So fills continue one another with --first, and Archive.List has realistic\n"
    "indexes to walk.\n"
    "\n"
    "  -d, --data-dir DIR    kysod's data_dir\n"
    "  -n, --documents N     how many documents to record\n"
    "      --first K         number of the first document (default 0)\n"
    "  -s, --size B          bytes per document (default 1024; K, M suffixes;\n"
    "                        64 .. 4 MiB)\n"
    "      --units U         units the documents are spread over (default 10)\n"
    "      --accounts A      accounts they are spread over (default 100)\n"
    "  -t, --threads T       submitting threads (default 64): group commit puts\n"
    "                        up to 256 waiting documents in one synced batch\n"
    "      --json FILE       write the result as JSON\n"
    "  -h, --help            this help\n"
    "\n"
    "Exit status: 0 when all N were recorded; 1 on a failure (the archive's error\n"
    "is printed; what was recorded before it stays); 2 on a usage error.\n";

enum { O_FIRST = 1, O_UNITS, O_ACCOUNTS, O_JSON };

static const struct option longopts[] = {
    {"data-dir", required_argument, NULL, 'd'}, {"documents", required_argument, NULL, 'n'},
    {"first", required_argument, NULL, O_FIRST}, {"size", required_argument, NULL, 's'},
    {"units", required_argument, NULL, O_UNITS}, {"accounts", required_argument, NULL, O_ACCOUNTS},
    {"threads", required_argument, NULL, 't'},  {"json", required_argument, NULL, O_JSON},
    {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};

typedef struct args {
  const char *data_dir, *json;
  uint64_t documents, first, size, units, accounts, threads;
} args;

/* What the submitting threads share. */
typedef struct fill {
  const args *a;
  archive *ar;
  _Atomic uint64_t next; /* next document number to take */
  _Atomic uint64_t done; /* documents recorded */
  atomic_int stop;
  pthread_mutex_t mu;
  int failed;
  kyso_err first_err; /* under mu */
} fill;

static int parse_args(int argc, char **argv, args *a) {
  int opt, have_n = 0;
  memset(a, 0, sizeof(*a));
  a->size = 1024;
  a->units = 10;
  a->accounts = 100;
  a->threads = 64;
  while ((opt = getopt_long(argc, argv, "d:n:s:t:h", longopts, NULL)) != -1) {
    int rc = 0;
    switch (opt) {
      case 'd': a->data_dir = optarg; break;
      case 'n':
        rc = tool_parse_count("--documents", optarg, 1, UINT64_C(1) << 40, 0, &a->documents);
        have_n = 1;
        break;
      case O_FIRST: rc = tool_parse_count("--first", optarg, 0, UINT64_C(1) << 40, 0, &a->first); break;
      case 's': rc = tool_parse_count("--size", optarg, MIN_SIZE, KYSO_MAX_MESSAGE, 1, &a->size); break;
      case O_UNITS: rc = tool_parse_count("--units", optarg, 1, MAX_UNITS, 0, &a->units); break;
      case O_ACCOUNTS:
        rc = tool_parse_count("--accounts", optarg, 1, MAX_ACCOUNTS, 0, &a->accounts);
        break;
      case 't': rc = tool_parse_count("--threads", optarg, 1, MAX_THREADS, 0, &a->threads); break;
      case O_JSON: a->json = optarg; break;
      case 'h': fputs(usage_text, stdout); return 0;
      default: fputs(usage_text, stderr); return 2;
    }
    if (rc) return rc;
  }
  if (optind < argc) return tool_usage_error("unexpected argument '%s'", argv[optind]);
  if (a->data_dir == NULL) return tool_usage_error("give --data-dir DIR (kysod's data_dir)");
  if (!have_n) return tool_usage_error("give --documents N, how many to record");
  return -1;
}

/* splitmix64: documents' filler and dates, seeded by their number. */
static uint64_t mix(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* The bytes of document n: a numbered first line, then filler. */
static void document_bytes(uint64_t n, uint8_t *buf, size_t size) {
  uint64_t state = n ^ 0x6b79736f62656e63ull; /* "kysobenc" */
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t r = mix(&state);
    memcpy(buf + i, &r, 8);
  }
  for (uint64_t r = mix(&state); i < size; i++, r >>= 8) buf[i] = (uint8_t)r;
  int len = snprintf((char *)buf, size, "kyso-bench-fill document %020llu\n",
                     (unsigned long long)n);
  /* snprintf's terminating NUL overwrote one filler byte: make it part of
   * the line's end, so the first line is the same for every size. */
  if (len > 0 && (size_t)len < size) buf[len] = '\n';
}

static void issue_date(uint64_t n, char out[11]) {
  /* A hash of n, not n itself: with n mod 366 a unit (n mod U) would only
   * ever get the days of one parity. */
  uint64_t state = n ^ 0x6461746573ull; /* "dates" */
  struct tm tm = {.tm_year = DATE_YEAR - 1900, .tm_mday = 1 + (int)(mix(&state) % DATE_DAYS),
                  .tm_hour = 12};
  time_t t = timegm(&tm); /* normalises day 60 into March 1, and so on */
  gmtime_r(&t, &tm);
  strftime(out, 11, "%Y-%m-%d", &tm);
}

static int64_t now_unix_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static const char *const doc_types[] = {"decision", "official-letter", "report", "plan", "notice"};

/* Records document n. */
static kyso_status record(fill *f, uint64_t n, uint8_t *doc, uint8_t *packed, kyso_err *err) {
  const args *a = f->a;
  char unit[32], account[32], number[48], title[48], date[11];
  uint8_t sha[32], *result = NULL;
  size_t result_len = 0;
  Kyso__Store__V1__DocumentMetadata meta = KYSO__STORE__V1__DOCUMENT_METADATA__INIT;
  Kyso__Store__V1__RecordDocument rd = KYSO__STORE__V1__RECORD_DOCUMENT__INIT;
  Kyso__Store__V1__Command cmd = KYSO__STORE__V1__COMMAND__INIT;
  document_bytes(n, doc, (size_t)a->size);
  SHA256(doc, (size_t)a->size, sha);
  snprintf(unit, sizeof(unit), "BENCH.U%llu", (unsigned long long)(n % a->units));
  snprintf(account, sizeof(account), "bench.fill.%llu", (unsigned long long)(n % a->accounts));
  snprintf(number, sizeof(number), "%llu/BENCH", (unsigned long long)(n / a->units + 1));
  snprintf(title, sizeof(title), "Bench document %llu", (unsigned long long)n);
  issue_date(n, date);
  meta.unit = unit;
  meta.number_notation = number;
  meta.title = title;
  meta.issue_date = date;
  meta.media_type = "application/octet-stream";
  meta.document_type = (char *)doc_types[n % (sizeof(doc_types) / sizeof(doc_types[0]))];
  rd.sha256.data = sha;
  rd.sha256.len = sizeof(sha);
  rd.size = a->size;
  rd.metadata = &meta;
  rd.account = account;
  cmd.version = 1;
  cmd.time_unix_ms = now_unix_ms();
  cmd.principal = PRINCIPAL;
  cmd.request_id = "";
  cmd.op_case = KYSO__STORE__V1__COMMAND__OP_RECORD_DOCUMENT;
  cmd.record_document = &rd;
  size_t len = kyso__store__v1__command__get_packed_size(&cmd);
  if (len > MAX_COMMAND)
    return kyso_fail(err, KYSO_INTERNAL, "the command of document %llu is %zu bytes, more than %d",
                     (unsigned long long)n, len, MAX_COMMAND);
  kyso__store__v1__command__pack(&cmd, packed);
  kyso_status st = archive_submit(f->ar, packed, len, doc, (size_t)a->size, &result, &result_len,
                                  err);
  free(result);
  return st;
}

static void *submit_loop(void *arg) {
  fill *f = arg;
  kyso_err err = {0};
  uint64_t end = f->a->first + f->a->documents;
  uint8_t *doc = malloc((size_t)f->a->size), *packed = malloc(MAX_COMMAND);
  if (doc == NULL || packed == NULL) {
    kyso_fail(&err, KYSO_RESOURCE_EXHAUSTED, "out of memory for a %llu-byte document",
              (unsigned long long)f->a->size);
    goto failed;
  }
  while (!atomic_load_explicit(&f->stop, memory_order_relaxed)) {
    uint64_t n = atomic_fetch_add(&f->next, 1);
    if (n >= end) break;
    if (record(f, n, doc, packed, &err) != KYSO_OK) {
      kyso_err_wrap(&err, "recording document %llu", (unsigned long long)n);
      goto failed;
    }
    atomic_fetch_add_explicit(&f->done, 1, memory_order_relaxed);
  }
  goto out;
failed:
  pthread_mutex_lock(&f->mu);
  if (!f->failed) f->first_err = err;
  f->failed = 1;
  pthread_mutex_unlock(&f->mu);
  atomic_store(&f->stop, 1);
out:
  free(doc);
  free(packed);
  return NULL;
}

static void add_result(cJSON *j, const args *a, const char *dir, double elapsed, double close_s,
                       const archive_stats *st) {
  double docs = (double)a->documents, bytes = docs * (double)a->size;
  char from[11], to[11];
  snprintf(to, sizeof(to), "%d-12-31", DATE_YEAR);
  snprintf(from, sizeof(from), "%d-01-01", DATE_YEAR);
  cJSON_AddStringToObject(j, "tool", "kyso-bench-fill");
  cJSON_AddStringToObject(j, "mode", "archive");
  cJSON_AddStringToObject(j, "archive_dir", dir);
  cJSON_AddNumberToObject(j, "first", (double)a->first);
  cJSON_AddNumberToObject(j, "documents", docs);
  cJSON_AddNumberToObject(j, "size", (double)a->size);
  cJSON_AddNumberToObject(j, "units", (double)a->units);
  cJSON_AddNumberToObject(j, "accounts", (double)a->accounts);
  cJSON_AddNumberToObject(j, "threads", (double)a->threads);
  cJSON *dates = cJSON_AddArrayToObject(j, "issue_dates");
  cJSON_AddItemToArray(dates, cJSON_CreateString(from));
  cJSON_AddItemToArray(dates, cJSON_CreateString(to));
  cJSON_AddStringToObject(j, "command", "RecordDocument, document inline");
  cJSON_AddNumberToObject(j, "elapsed_s", elapsed);
  cJSON_AddNumberToObject(j, "documents_per_s", docs / elapsed);
  cJSON_AddNumberToObject(j, "bytes", bytes);
  cJSON_AddNumberToObject(j, "bytes_per_s", bytes / elapsed);
  cJSON_AddNumberToObject(j, "batches", (double)st->batches);
  cJSON_AddNumberToObject(j, "documents_per_batch",
                          st->batches ? (double)st->commands / (double)st->batches : 0);
  cJSON_AddNumberToObject(j, "blobs_stored", (double)st->blob_writes);
  cJSON_AddNumberToObject(j, "close_s", close_s);
}

int fill_archive_main(int argc, char **argv) {
  args a;
  fill f;
  archive *ar = NULL;
  pthread_t *threads = NULL;
  size_t started = 0;
  kyso_err err = {0};
  archive_stats stats;
  cJSON *json = NULL;
  char dir[KYSO_PATH_MAX + 16];
  memset(&f, 0, sizeof(f));
  pthread_mutex_init(&f.mu, NULL);
  int rc = parse_args(argc, argv, &a);
  if (rc >= 0) goto out;
  rc = 1;
  if (snprintf(dir, sizeof(dir), "%s/archive", a.data_dir) >= (int)sizeof(dir)) {
    fprintf(stderr, "%s: --data-dir is too long\n", tool_name);
    goto out;
  }
  if (mkdir(a.data_dir, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "%s: cannot create the data directory '%s': %s\n", tool_name, a.data_dir,
            strerror(errno));
    goto out;
  }
  /* kysod's options: the defaults of [archive] (max_document,
   * group_commit_max 256) and synced writes. */
  archive_opts ao = {.dir = dir};
  if (archive_open(&ao, &ar, &err) != KYSO_OK) {
    fprintf(stderr, "%s: %s\n", tool_name, err.msg);
    goto out;
  }
  f.a = &a;
  f.ar = ar;
  atomic_store(&f.next, a.first);
  if ((threads = calloc(a.threads, sizeof(*threads))) == NULL) {
    fprintf(stderr, "%s: out of memory\n", tool_name);
    goto out;
  }
  fprintf(stderr, "%s: recording documents %llu..%llu (%llu bytes each) in '%s' from %llu "
          "threads\n", tool_name, (unsigned long long)a.first,
          (unsigned long long)(a.first + a.documents - 1), (unsigned long long)a.size, dir,
          (unsigned long long)a.threads);
  double t0 = tool_now();
  for (; started < a.threads; started++)
    if (pthread_create(&threads[started], NULL, submit_loop, &f) != 0) {
      fprintf(stderr, "%s: cannot start submitting thread %zu\n", tool_name, started + 1);
      atomic_store(&f.stop, 1);
      goto out;
    }
  tool_ticker tick;
  tool_ticker_start(&tick);
  /* Short naps, so the end is seen when it comes; a progress line a second. */
  while (!atomic_load(&f.stop) && atomic_load(&f.done) < a.documents) {
    tool_sleep(0.02);
    uint64_t done = atomic_load(&f.done);
    double secs = tool_now() - t0, rate = (double)done / secs;
    if (done < a.documents && tool_ticker_due(&tick))
      fprintf(stderr, "%s: %llu/%llu documents, %.0f/s, about %.0f s to go\n", tool_name,
              (unsigned long long)done, (unsigned long long)a.documents, rate,
              rate > 0 ? (double)(a.documents - done) / rate : 0.0);
  }
  for (; started > 0; started--) pthread_join(threads[started - 1], NULL);
  double elapsed = tool_now() - t0;
  if (f.failed) {
    fprintf(stderr, "%s: %s\n%s: %llu documents were recorded before it\n", tool_name,
            f.first_err.msg, tool_name, (unsigned long long)atomic_load(&f.done));
    goto out;
  }
  archive_get_stats(ar, &stats);
  double c0 = tool_now();
  archive_close(ar); /* flushes the memtables: part of what a fill costs */
  ar = NULL;
  double close_s = tool_now() - c0;
  json = cJSON_CreateObject();
  add_result(json, &a, dir, elapsed, close_s, &stats);
  printf("%llu documents of %llu bytes in %.1f s: %.0f documents/s, %.1f MB/s, %.1f per synced "
         "batch (then %.1f s to close)\n", (unsigned long long)a.documents,
         (unsigned long long)a.size, elapsed, (double)a.documents / elapsed,
         (double)a.documents * (double)a.size / elapsed / 1e6,
         stats.batches ? (double)stats.commands / (double)stats.batches : 0.0, close_s);
  if (a.json != NULL && tool_write_json(a.json, json) != 0) goto out;
  rc = 0;
out:
  for (; started > 0; started--) pthread_join(threads[started - 1], NULL);
  free(threads);
  archive_close(ar);
  cJSON_Delete(json);
  pthread_mutex_destroy(&f.mu);
  return rc;
}
