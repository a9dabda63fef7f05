/* kyso — a node's time-stamp serial numbers and genTime clock, durable
 * across crashes and restarts, without a consensus round per token.
 *
 * Serial numbers are 64-bit: node_id (16 bits, 1..65535) || counter (48
 * bits). Counters are reserved in blocks: the end of the reserved block is
 * written (fsync'ed, atomically replaced) before any serial of it is
 * issued, so a crash skips at most one block and never reuses a serial.
 * Nodes of one cluster must have distinct node ids.
 *
 * genTime never goes backwards on a node: each token's time is the wall
 * clock in milliseconds, and it must not be earlier than the last issued
 * one. The state file also keeps a bound above every issued genTime (a
 * lease of lease_ms beyond the latest, renewed as time passes), so after a
 * crash the node waits until its clock passes that bound; after a clean
 * close the bound is the exact last genTime, so a restart issues at once.
 *
 * The state file (text, "key=value" lines) belongs to this node alone: it
 * must never be restored from a backup or copied to another node. */
#ifndef KYSO_TSA_STATE_H
#define KYSO_TSA_STATE_H

#include <stdint.h>

#include "kyso/status.h"

typedef struct tsa_state tsa_state;

typedef struct tsa_state_opts {
  const char *path;      /* the state file, e.g. DATA_DIR/tsa/state */
  uint16_t node_id;      /* 1..65535 */
  uint32_t block;        /* serials reserved per durable write; 0: 4096 */
  uint32_t lease_ms;     /* genTime bound ahead of the last issued; 0: 1000 */
  /* The wall clock in ms since the epoch; NULL: CLOCK_REALTIME. For tests. */
  int64_t (*now_ms)(void *arg);
  void *now_arg;
} tsa_state_opts;

/* Opens (or creates, with its directory) the state file. A file that does
 * not parse, or whose counter is exhausted, is FAILED_PRECONDITION naming
 * the file: never guess a counter. */
kyso_status tsa_state_open(const tsa_state_opts *opts, tsa_state **out,
                           kyso_err *err) KYSO_MUST_CHECK;
/* Writes the exact last genTime and the next unused counter, so a restart
 * neither waits nor skips; then frees. NULL is fine. */
void tsa_state_close(tsa_state *s);

/* One serial and its genTime, taken together under the state's lock, so
 * that sorted by serial, genTimes never decrease. UNAVAILABLE when the
 * clock is behind the last issued genTime (message says by how much and
 * what to check), or when the state cannot be written (nothing is issued
 * then). Thread-safe. */
kyso_status tsa_state_next(tsa_state *s, uint64_t *serial, int64_t *gen_time_ms,
                           kyso_err *err) KYSO_MUST_CHECK;

/* 0 if the clock is at or past the last issued genTime; otherwise how many
 * ms it is behind. Thread-safe; for health checks. */
int64_t tsa_state_clock_behind_ms(tsa_state *s);

/* What the state holds now (for logs and tests). */
typedef struct tsa_state_info {
  uint16_t node_id;
  uint64_t next_counter;    /* the next serial's counter */
  uint64_t reserved_end;    /* counters below this are durably reserved */
  int64_t last_gen_time_ms; /* the last issued (or, after a crash, bound) */
  uint64_t issued;          /* serials issued by this handle */
  uint64_t writes;          /* durable writes made by this handle */
} tsa_state_info;
void tsa_state_get_info(tsa_state *s, tsa_state_info *out);

#endif
