/* kyso-bench-disk — the raw synced-write rate of RocksDB on this disk: a
 * fresh database in --dir, opened with the options of kyso's archive, and
 * --threads threads each putting distinct 32-byte keys with --value-size
 * random bytes, WriteOptions.sync = true. RocksDB lets one writer sync the
 * WAL for every write queued behind it, so with several threads this is the
 * batched synced-write rate: the ceiling of kyso's group commit. The
 * database is deleted afterwards. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

#define MAX_THREADS 1024
#define MAX_VALUE (256ull * 1024 * 1024)
/* Each put takes its value from a different offset of a per-thread random
 * buffer this much longer than a value, so no two values are equal. */
#define VALUE_SLACK 4096

/* The archive's options (archive/db.c make_options), with the blob settings
 * of its "blobs" column family, where document chunks go. */
#define DB_WRITE_BUFFER (128u << 20)
#define MAX_TOTAL_WAL (256u << 20)
#define MAX_OPEN_FILES 512
#define BACKGROUND_JOBS 2
#define BLOCK_CACHE (32u << 20)
#define MIN_BLOB_SIZE 4096u
#define BLOB_FILE_SIZE (256u << 20)
#define BLOB_WRITE_BUFFER (16u << 20)
#define BLOB_WRITE_BUFFERS 3

static const char usage_text[] =
    "Usage: kyso-bench-disk --dir DIR [--value-size B] [--threads N] [--duration S]\n"
    "                       [--warmup S] [--json FILE]\n"
    "\n"
    "Measures RocksDB's synced Put rate on the disk under DIR: a fresh database\n"
    "with the options of kyso's archive (blob files for values of 4 KiB and up,\n"
    "as for document chunks), N threads putting distinct 32-byte keys with B-byte\n"
    "random values, each Put with WriteOptions.sync = true. RocksDB makes one\n"
    "writer sync the WAL for all the Puts queued behind it, so N > 1 measures the\n"
    "batched synced-write rate, the ceiling of kyso's group commit.\n"
    "\n"
    "  -d, --dir DIR         where to make the database: a new or empty directory\n"
    "                        on the disk to measure; deleted afterwards (an\n"
    "                        interrupted run leaves it to delete by hand)\n"
    "  -s, --value-size B    bytes per value (default 8192; K, M suffixes: x 1024)\n"
    "  -t, --threads N       writing threads (default 16)\n"
    "      --duration S      measured seconds (default 10)\n"
    "      --warmup S        seconds run first and not counted (default 1)\n"
    "      --json FILE       write the result as JSON\n"
    "  -h, --help            this help\n"
    "\n"
    "Exit status: 0 after a run; 1 when the database could not be made or a\n"
    "Put failed (the error is printed); 2 on a usage error.\n";

enum { O_DURATION = 1, O_WARMUP, O_JSON };

static const struct option longopts[] = {
    {"dir", required_argument, NULL, 'd'},       {"value-size", required_argument, NULL, 's'},
    {"threads", required_argument, NULL, 't'},   {"duration", required_argument, NULL, O_DURATION},
    {"warmup", required_argument, NULL, O_WARMUP}, {"json", required_argument, NULL, O_JSON},
    {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0}};

typedef struct args {
  const char *dir, *json;
  uint64_t value_size, threads;
  double duration, warmup;
} args;

/* The database and what the threads share. */
typedef struct bench {
  rocksdb_t *db;
  rocksdb_writeoptions_t *wo;
  size_t value_size;
  atomic_int stop;
  pthread_mutex_t mu;
  char *first_err; /* under mu; rocksdb_free()d */
} bench;

typedef struct worker {
  bench *b;
  uint64_t id;
  uint8_t *values; /* value_size + VALUE_SLACK random bytes */
  _Atomic uint64_t ops;
  pthread_t thread;
} worker;

static int parse_args(int argc, char **argv, args *a) {
  int opt;
  memset(a, 0, sizeof(*a));
  a->value_size = 8192;
  a->threads = 16;
  a->duration = 10;
  a->warmup = 1;
  while ((opt = getopt_long(argc, argv, "d:s:t:h", longopts, NULL)) != -1) {
    int rc = 0;
    switch (opt) {
      case 'd': a->dir = optarg; break;
      case 's': rc = tool_parse_count("--value-size", optarg, 1, MAX_VALUE, 1, &a->value_size); break;
      case 't': rc = tool_parse_count("--threads", optarg, 1, MAX_THREADS, 0, &a->threads); break;
      case O_DURATION: rc = tool_parse_seconds("--duration", optarg, 0, &a->duration); break;
      case O_WARMUP: rc = tool_parse_seconds("--warmup", optarg, 1, &a->warmup); break;
      case O_JSON: a->json = optarg; break;
      case 'h': fputs(usage_text, stdout); return 0;
      default: fputs(usage_text, stderr); return 2;
    }
    if (rc) return rc;
  }
  if (optind < argc) return tool_usage_error("unexpected argument '%s'", argv[optind]);
  if (a->dir == NULL) return tool_usage_error("give --dir DIR, a new or empty directory");
  return -1;
}

/* A new or empty directory; *made says whether we created it. 0 or 1. */
static int prepare_dir(const char *dir, int *made) {
  struct stat sb;
  *made = 0;
  if (stat(dir, &sb) != 0) {
    if (errno == ENOENT && mkdir(dir, 0700) == 0) {
      *made = 1;
      return 0;
    }
    fprintf(stderr, "%s: cannot create '%s': %s\n", tool_name, dir, strerror(errno));
    return 1;
  }
  DIR *d = S_ISDIR(sb.st_mode) ? opendir(dir) : NULL;
  if (d == NULL) {
    fprintf(stderr, "%s: '%s' is not a directory I can read; give a new or empty directory\n",
            tool_name, dir);
    return 1;
  }
  struct dirent *e;
  int empty = 1;
  while (empty && (e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) empty = 0;
  closedir(d);
  if (!empty) {
    fprintf(stderr, "%s: '%s' is not empty; give a new or empty directory (the database made "
            "there is deleted afterwards)\n", tool_name, dir);
    return 1;
  }
  return 0;
}

/* The archive's DB options with its blob settings; *desc says which. */
static rocksdb_options_t *make_options(rocksdb_cache_t **cache,
                                       rocksdb_block_based_table_options_t **table, cJSON *desc) {
  rocksdb_options_t *o = rocksdb_options_create();
  rocksdb_options_set_create_if_missing(o, 1);
  rocksdb_options_set_error_if_exists(o, 1);
  rocksdb_options_set_paranoid_checks(o, 1);
  rocksdb_options_set_wal_recovery_mode(o, 1); /* kAbsoluteConsistency, as the archive */
  rocksdb_options_set_db_write_buffer_size(o, DB_WRITE_BUFFER);
  rocksdb_options_set_max_total_wal_size(o, MAX_TOTAL_WAL);
  rocksdb_options_set_max_open_files(o, MAX_OPEN_FILES);
  rocksdb_options_set_max_background_jobs(o, BACKGROUND_JOBS);
  *cache = rocksdb_cache_create_lru(BLOCK_CACHE);
  *table = rocksdb_block_based_options_create();
  rocksdb_block_based_options_set_block_cache(*table, *cache);
  rocksdb_options_set_block_based_table_factory(o, *table);
  rocksdb_options_set_enable_blob_files(o, 1);
  rocksdb_options_set_min_blob_size(o, MIN_BLOB_SIZE);
  rocksdb_options_set_blob_file_size(o, BLOB_FILE_SIZE);
  rocksdb_options_set_write_buffer_size(o, BLOB_WRITE_BUFFER);
  rocksdb_options_set_max_write_buffer_number(o, BLOB_WRITE_BUFFERS);
  /* Counts WAL syncs and writes done by another thread's group. */
  rocksdb_options_enable_statistics(o);
  cJSON_AddStringToObject(desc, "as", "kyso archive (archive/db.c), blobs column family");
  cJSON_AddStringToObject(desc, "write", "WriteOptions.sync=true (fdatasync of the WAL)");
  cJSON_AddBoolToObject(desc, "paranoid_checks", 1);
  cJSON_AddStringToObject(desc, "wal_recovery_mode", "kAbsoluteConsistency");
  cJSON_AddNumberToObject(desc, "db_write_buffer_size", DB_WRITE_BUFFER);
  cJSON_AddNumberToObject(desc, "max_total_wal_size", MAX_TOTAL_WAL);
  cJSON_AddNumberToObject(desc, "max_open_files", MAX_OPEN_FILES);
  cJSON_AddNumberToObject(desc, "max_background_jobs", BACKGROUND_JOBS);
  cJSON_AddNumberToObject(desc, "block_cache", BLOCK_CACHE);
  cJSON_AddBoolToObject(desc, "enable_blob_files", 1);
  cJSON_AddNumberToObject(desc, "min_blob_size", MIN_BLOB_SIZE);
  cJSON_AddNumberToObject(desc, "blob_file_size", BLOB_FILE_SIZE);
  cJSON_AddNumberToObject(desc, "write_buffer_size", BLOB_WRITE_BUFFER);
  cJSON_AddNumberToObject(desc, "max_write_buffer_number", BLOB_WRITE_BUFFERS);
  return o;
}

/* One counter of RocksDB's statistics text ("rocksdb.wal.synced COUNT : 7"). */
static uint64_t ticker(const char *stats, const char *name) {
  size_t n = strlen(name);
  for (const char *p = stats; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (strncmp(p, name, n) == 0 && strncmp(p + n, " COUNT : ", 9) == 0)
      return strtoull(p + n + 9, NULL, 10);
  return 0;
}

typedef struct counters {
  uint64_t ops, wal_syncs, by_self, by_other;
} counters;

static void snapshot(worker *w, size_t n, rocksdb_options_t *o, counters *c) {
  c->ops = 0;
  for (size_t i = 0; i < n; i++) c->ops += atomic_load(&w[i].ops);
  char *s = rocksdb_options_statistics_get_string(o);
  c->wal_syncs = ticker(s, "rocksdb.wal.synced");
  c->by_self = ticker(s, "rocksdb.write.self");
  c->by_other = ticker(s, "rocksdb.write.other");
  rocksdb_free(s);
}

/* splitmix64: fast, and good enough to make values that do not compress. */
static uint64_t mix(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void *put_loop(void *arg) {
  worker *w = arg;
  bench *b = w->b;
  uint8_t key[32];
  memcpy(key + 8, &w->id, 8);
  memcpy(key + 24, "kysodisk", 8);
  for (uint64_t n = 0; !atomic_load_explicit(&b->stop, memory_order_relaxed); n++) {
    /* A random-looking first word spreads the keys like kyso's SHA-256 ids;
     * thread and counter after it keep every key distinct. */
    uint64_t s = (w->id << 40) ^ n;
    uint64_t head = mix(&s);
    memcpy(key, &head, 8);
    memcpy(key + 16, &n, 8);
    uint8_t *v = w->values + (n * 8) % VALUE_SLACK;
    memcpy(v, &n, 8);
    char *e = NULL;
    rocksdb_put(b->db, b->wo, (const char *)key, sizeof(key), (const char *)v, b->value_size, &e);
    if (e != NULL) {
      pthread_mutex_lock(&b->mu);
      if (b->first_err == NULL) b->first_err = e;
      else rocksdb_free(e);
      pthread_mutex_unlock(&b->mu);
      atomic_store(&b->stop, 1);
      break;
    }
    atomic_fetch_add_explicit(&w->ops, 1, memory_order_relaxed);
  }
  return NULL;
}

/* Runs the threads for warmup + duration; fills the result. 0 or 1. */
static int run(const args *a, bench *b, rocksdb_options_t *o, cJSON *j) {
  worker *w = calloc(a->threads, sizeof(*w));
  size_t started = 0;
  int rc = 1;
  if (w == NULL) goto oom;
  for (size_t i = 0; i < a->threads; i++) {
    uint64_t seed = (uint64_t)time(NULL) ^ (i * 0x2545f4914f6cdd1dull);
    size_t words = (a->value_size + VALUE_SLACK + 7) / 8;
    if ((w[i].values = malloc(words * 8)) == NULL) goto oom;
    for (size_t k = 0; k < words; k++) {
      uint64_t r = mix(&seed);
      memcpy(w[i].values + 8 * k, &r, 8);
    }
    w[i].b = b;
    w[i].id = i;
  }
  for (; started < a->threads; started++)
    if (pthread_create(&w[started].thread, NULL, put_loop, &w[started]) != 0) {
      fprintf(stderr, "%s: cannot start writing thread %zu\n", tool_name, started + 1);
      goto out;
    }
  tool_sleep(a->warmup);
  counters c0, c1;
  snapshot(w, started, o, &c0);
  double t0 = tool_now(), end = t0 + a->duration, now;
  while (!atomic_load(&b->stop) && (now = tool_now()) < end) {
    tool_sleep(end - now < 1 ? end - now : 1);
    if ((now = tool_now()) >= end) break;
    snapshot(w, started, o, &c1);
    fprintf(stderr, "%s:   %.0f s: %.1f synced puts/s, %.1f MB/s\n", tool_name, now - t0,
            (double)(c1.ops - c0.ops) / (now - t0),
            (double)(c1.ops - c0.ops) * (double)a->value_size / (now - t0) / 1e6);
  }
  snapshot(w, started, o, &c1);
  double elapsed = tool_now() - t0;
  atomic_store(&b->stop, 1);
  for (; started > 0; started--) pthread_join(w[started - 1].thread, NULL);
  if (b->first_err != NULL) {
    fprintf(stderr, "%s: a synced Put into '%s' failed: %s\n", tool_name, a->dir, b->first_err);
    goto out;
  }
  uint64_t ops = c1.ops - c0.ops, syncs = c1.wal_syncs - c0.wal_syncs;
  double rate = (double)ops / elapsed, bytes = rate * (double)a->value_size;
  cJSON_AddNumberToObject(j, "ops", (double)ops);
  cJSON_AddNumberToObject(j, "elapsed_s", elapsed);
  cJSON_AddNumberToObject(j, "throughput", rate);
  cJSON_AddNumberToObject(j, "bytes_per_s", bytes);
  cJSON_AddNumberToObject(j, "wal_syncs", (double)syncs);
  cJSON_AddNumberToObject(j, "puts_per_sync", syncs ? (double)ops / (double)syncs : 0);
  cJSON_AddNumberToObject(j, "writes_grouped", (double)(c1.by_other - c0.by_other));
  printf("%llu-byte values, %llu threads: %.1f synced puts/s, %.1f MB/s (%llu in %.2f s; "
         "%.1f puts per WAL sync)\n", (unsigned long long)a->value_size,
         (unsigned long long)a->threads, rate, bytes / 1e6, (unsigned long long)ops, elapsed,
         syncs ? (double)ops / (double)syncs : 0.0);
  rc = 0;
  goto out;
oom:
  fprintf(stderr, "%s: out of memory for %llu threads of %llu-byte values\n", tool_name,
          (unsigned long long)a->threads, (unsigned long long)a->value_size);
out:
  atomic_store(&b->stop, 1);
  for (; started > 0; started--) pthread_join(w[started - 1].thread, NULL);
  for (size_t i = 0; w != NULL && i < a->threads; i++) free(w[i].values);
  free(w);
  return rc;
}

int main(int argc, char **argv) {
  args a;
  bench b;
  rocksdb_cache_t *cache = NULL;
  rocksdb_block_based_table_options_t *table = NULL;
  rocksdb_options_t *o = NULL;
  cJSON *json = NULL;
  char *e = NULL;
  int made = 0, created_db = 0;
  memset(&b, 0, sizeof(b));
  pthread_mutex_init(&b.mu, NULL);
  tool_name = "kyso-bench-disk";
  int rc = parse_args(argc, argv, &a);
  if (rc >= 0) goto out;
  rc = 1;
  if (prepare_dir(a.dir, &made) != 0) goto out;
  json = cJSON_CreateObject();
  cJSON_AddStringToObject(json, "tool", "kyso-bench-disk");
  cJSON_AddStringToObject(json, "dir", a.dir);
  cJSON_AddNumberToObject(json, "value_size", (double)a.value_size);
  cJSON_AddNumberToObject(json, "threads", (double)a.threads);
  cJSON_AddNumberToObject(json, "duration_s", a.duration);
  cJSON_AddNumberToObject(json, "warmup_s", a.warmup);
  o = make_options(&cache, &table, cJSON_AddObjectToObject(json, "rocksdb_options"));
  b.db = rocksdb_open(o, a.dir, &e);
  if (e != NULL) {
    fprintf(stderr, "%s: cannot create a RocksDB database in '%s': %s\n", tool_name, a.dir, e);
    goto out;
  }
  created_db = 1;
  b.wo = rocksdb_writeoptions_create();
  rocksdb_writeoptions_set_sync(b.wo, 1);
  b.value_size = (size_t)a.value_size;
  fprintf(stderr, "%s: %llu threads, %llu-byte values, synced, in '%s': %g s warm-up, "
          "%g s measured\n", tool_name, (unsigned long long)a.threads,
          (unsigned long long)a.value_size, a.dir, a.warmup, a.duration);
  if (run(&a, &b, o, json) != 0) goto out;
  if (a.json != NULL && tool_write_json(a.json, json) != 0) goto out;
  rc = 0;
out:
  if (b.db != NULL) rocksdb_close(b.db);
  if (created_db) {
    rocksdb_destroy_db(o, a.dir, &e);
    if (e != NULL) {
      fprintf(stderr, "%s: could not delete the database in '%s' (%s); delete it by hand\n",
              tool_name, a.dir, e);
      rocksdb_free(e);
      e = NULL;
    }
  }
  /* DestroyDB removes the directory too when it can; one we made goes. */
  if (made && rmdir(a.dir) != 0 && errno != ENOENT)
    fprintf(stderr, "%s: could not remove '%s': %s\n", tool_name, a.dir, strerror(errno));
  rocksdb_free(e);
  rocksdb_free(b.first_err);
  if (b.wo != NULL) rocksdb_writeoptions_destroy(b.wo);
  if (o != NULL) rocksdb_options_destroy(o);
  if (table != NULL) rocksdb_block_based_options_destroy(table);
  if (cache != NULL) rocksdb_cache_destroy(cache);
  cJSON_Delete(json);
  pthread_mutex_destroy(&b.mu);
  return rc;
}
