/* Fuzz target: what a Raft log entry carries into the state machine — the
 * 8-byte-aligned frame (cluster__unframe) around a kyso.store.v1.Entry,
 * applied by archive_apply_entry to one store that lives across inputs, at
 * the next index. Whatever the bytes: no crash, no hang; an entry refused
 * as a whole writes nothing (the applied index stays); an entry taken
 * moves the applied index to its own, with one outcome per command, each
 * OK or a refusal every node would make alike. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive_internal.h"
#include "cluster_internal.h"
#include "kyso/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static archive *store;
static uint64_t next_index = 1;
static char dir[256];

static void cleanup(void) {
  archive_close(store);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "fuzz_raft_entry: cannot remove %s\n", dir);
}

static void setup(void) {
  const char *base = getenv("TMPDIR");
  snprintf(dir, sizeof(dir), "%s/kyso-fuzz-entry-XXXXXX", base && base[0] ? base : "/tmp");
  if (mkdtemp(dir) == NULL) abort();
  kyso_log_set_level(KYSO_LOG_ERROR);
  archive_opts o = {.dir = dir, .no_sync = 1};
  kyso_err err = {0};
  if (archive_open(&o, &store, &err) != KYSO_OK) {
    fprintf(stderr, "fuzz_raft_entry: %s\n", err.msg);
    abort();
  }
  atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (store == NULL) setup();
  struct raft_buffer buf = {.base = (void *)data, .len = size};
  const uint8_t *entry = NULL;
  size_t len = 0;
  if (!cluster__unframe(&buf, &entry, &len)) return 0;
  if (len > size - CLUSTER__FRAME_HEADER) abort();
  uint64_t before = 0, after = 0;
  kyso_err err = {0};
  if (archive_applied_index(store, &before, &err) != KYSO_OK) abort();
  archive_outcome *o = NULL;
  size_t n = 0;
  uint64_t index = next_index++;
  kyso_status st = archive_apply_entry(store, index, entry, len, &o, &n, &err);
  if (archive_applied_index(store, &after, &err) != KYSO_OK) abort();
  if (st != KYSO_OK) {
    if (after != before || o != NULL || n != 0) abort(); /* refused whole: nothing written */
  } else {
    if (after != index) abort();
    for (size_t i = 0; i < n; i++) {
      if (o[i].st == KYSO_OK && o[i].result == NULL) abort();
      if (o[i].st != KYSO_OK && o[i].st != KYSO_INVALID_ARGUMENT &&
          o[i].st != KYSO_FAILED_PRECONDITION && o[i].st != KYSO_ALREADY_EXISTS)
        abort();
    }
  }
  archive_outcomes_free(o, n);
  return 0;
}
