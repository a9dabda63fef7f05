/* Fuzz target: the TSA's durable state file (server/tsa_state.c). The
 * input is the file (none if the input is empty: a new node), in a private
 * directory made once; the clock is fixed.
 * A file refused (FAILED_PRECONDITION) must be left as it was: it is the
 * only record of which serials were issued. A file accepted must give the
 * serial of its counter at the clock's time, or nothing (UNAVAILABLE) if
 * the clock is behind its time bound; and what close writes must open
 * again, with the counter past that serial. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyso/log.h"
#include "kyso/tsa_state.h"

#define NODE_ID 7
#define NOW_MS INT64_C(1700000000000) /* make_ts_seeds.sh's seeds are around it */
#define COUNTER_MASK ((UINT64_C(1) << 48) - 1)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256], sub[300], path[320], lock[340], tmp[360];

static int64_t fixed_clock(void *arg) {
  (void)arg;
  return NOW_MS;
}

/* What a run may leave: the file, its lock, a temporary of an atomic write. */
static void clean(void) {
  unlink(path);
  unlink(lock);
  unlink(tmp);
}

static void teardown(void) {
  clean();
  rmdir(sub);
  rmdir(dir);
}

static void setup(void) {
  const char *base = getenv("TMPDIR");
  snprintf(dir, sizeof(dir), "%s/kyso-fuzz-tsa-state-XXXXXX", base && base[0] ? base : "/tmp");
  if (mkdtemp(dir) == NULL) {
    perror("fuzz_tsa_state: mkdtemp");
    abort();
  }
  snprintf(sub, sizeof(sub), "%s/tsa", dir);
  snprintf(path, sizeof(path), "%s/state", sub);
  snprintf(lock, sizeof(lock), "%s.lock", path);
  snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
  if (mkdir(sub, 0700) != 0) {
    perror("fuzz_tsa_state: mkdir");
    abort();
  }
  kyso_log_set_level(KYSO_LOG_ERROR); /* every open logs at info */
  atexit(teardown);
}

static void write_state(const uint8_t *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
    perror("fuzz_tsa_state: writing the state file");
    abort();
  }
}

/* 1 if the state file holds exactly data. */
static int unchanged(const uint8_t *data, size_t size) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return 0;
  uint8_t *buf = malloc(size + 1);
  size_t n = buf != NULL ? fread(buf, 1, size + 1, f) : 0;
  fclose(f);
  int same = buf != NULL && n == size && memcmp(buf, data, size) == 0;
  free(buf);
  return same;
}

/* One serial from an opened state, closed, then opened again. */
static void issue_one(const tsa_state_opts *o, tsa_state *s) {
  tsa_state_info before, after;
  kyso_err err = {0};
  uint64_t serial = 0;
  int64_t gen = 0;
  tsa_state_get_info(s, &before);
  int behind = before.last_gen_time_ms > NOW_MS;
  if ((tsa_state_clock_behind_ms(s) > 0) != behind) __builtin_trap();
  kyso_status st = tsa_state_next(s, &serial, &gen, &err);
  if (st == KYSO_OK) {
    if (behind || serial >> 48 != NODE_ID || (serial & COUNTER_MASK) != before.next_counter ||
        gen != NOW_MS)
      __builtin_trap();
  } else if (st != KYSO_UNAVAILABLE || !behind) {
    fprintf(stderr, "fuzz_tsa_state: next: %s: %s\n", kyso_strerror(st), err.msg);
    __builtin_trap();
  }
  tsa_state_close(s);

  /* What close wrote reads back, and never hands out that serial again;
   * only after the very last serial is the counter exhausted. */
  s = NULL;
  kyso_status again = tsa_state_open(o, &s, &err);
  if (again == KYSO_FAILED_PRECONDITION && st == KYSO_OK && (serial & COUNTER_MASK) == COUNTER_MASK)
    return;
  if (again != KYSO_OK) {
    fprintf(stderr, "fuzz_tsa_state: reopen: %s: %s\n", kyso_strerror(again), err.msg);
    __builtin_trap();
  }
  tsa_state_get_info(s, &after);
  if (after.next_counter < before.next_counter + (st == KYSO_OK) ||
      after.last_gen_time_ms < (st == KYSO_OK ? gen : before.last_gen_time_ms))
    __builtin_trap();
  tsa_state_close(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  if (!ready) {
    setup();
    ready = 1;
  }
  /* An empty input is no file at all: a new node. */
  clean();
  if (size > 0) write_state(data, size);
  const tsa_state_opts o = {.path = path,
                            .node_id = NODE_ID,
                            .block = 16,
                            .lease_ms = 1000,
                            .now_ms = fixed_clock};
  tsa_state *s = NULL;
  kyso_err err = {0};
  kyso_status st = tsa_state_open(&o, &s, &err);
  if (st == KYSO_OK) {
    issue_one(&o, s);
  } else if (st != KYSO_FAILED_PRECONDITION || s != NULL || size == 0 || !unchanged(data, size)) {
    fprintf(stderr, "fuzz_tsa_state: open: %s: %s\n", kyso_strerror(st), err.msg);
    __builtin_trap();
  }
  clean();
  return 0;
}
