/* kyso — logging: RFC 3339 UTC timestamp, level, message; one write per line
 * so lines from concurrent threads do not interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "kyso/log.h"

static kyso_log_level log_min = KYSO_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void kyso_log_set_level(kyso_log_level min) { log_min = min; }

kyso_status kyso_log_parse_level(const char *s, kyso_log_level *out, kyso_err *err) {
  for (int i = 0; i < 4; i++) {
    if (strcmp(s, level_names[i]) == 0) {
      *out = (kyso_log_level)i;
      return KYSO_OK;
    }
  }
  return kyso_fail(err, KYSO_INVALID_ARGUMENT,
                   "log level '%s' is not one of debug, info, warn, error", s);
}

void kyso_log(kyso_log_level level, const char *fmt, ...) {
  if (level < log_min) return;
  char line[2048];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
  n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ldZ %-5s ",
                (long)(tv.tv_usec / 1000), level_names[level]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) m = 0;
  size_t len = (size_t)n + (size_t)m;
  if (len > sizeof(line) - 2) len = sizeof(line) - 2;
  line[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}
