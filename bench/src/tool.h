/* What kyso-bench-hsm, kyso-bench-disk and kyso-bench-fill share: flags
 * parsed with messages that name the flag, the clock, progress lines on
 * stderr and the JSON file. */
#ifndef KYSO_BENCH_TOOL_H
#define KYSO_BENCH_TOOL_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "kyso/status.h"

/* The program's name in every message ("kyso-bench-disk"); main sets it. */
extern const char *tool_name;

/* Says "NAME: <message>; see NAME --help" on stderr and returns 2, the exit
 * status of a usage error. */
int tool_usage_error(const char *fmt, ...) KYSO_PRINTF(1, 2);
/* A whole number in [lo, hi] into *out; with `suffix`, K, M and G multiply
 * by 1024, 1024^2, 1024^3. Returns 0, or 2 after saying what was wrong. */
int tool_parse_count(const char *flag, const char *v, uint64_t lo, uint64_t hi, int suffix,
                     uint64_t *out);
/* Seconds above 0 (or 0 too, with allow_zero), at most a day. 0 or 2. */
int tool_parse_seconds(const char *flag, const char *v, int allow_zero, double *out);

/* Seconds on a monotonic clock. */
double tool_now(void);
void tool_sleep(double seconds);

/* Progress lines for long jobs: at most one a second. */
typedef struct tool_ticker {
  double start, last;
} tool_ticker;
void tool_ticker_start(tool_ticker *t);
/* 1 when a second has passed since the last line (and resets the second). */
int tool_ticker_due(tool_ticker *t);

/* Writes j, indented, to path. 0, or 1 after saying why on stderr. */
int tool_write_json(const char *path, const cJSON *j);

#endif
