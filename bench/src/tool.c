/* Shared helpers of the limit and fill tools (see tool.h). */
#include "tool.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *tool_name = "kyso-bench";

int tool_usage_error(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", tool_name);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "; see %s --help\n", tool_name);
  return 2;
}

int tool_parse_count(const char *flag, const char *v, uint64_t lo, uint64_t hi, int suffix,
                     uint64_t *out) {
  char *end = NULL;
  uint64_t mult = 1;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (suffix && end != v && *end != '\0' && end[1] == '\0') {
    switch (*end) {
      case 'K': case 'k': mult = 1024; end++; break;
      case 'M': case 'm': mult = 1024 * 1024; end++; break;
      case 'G': case 'g': mult = 1024 * 1024 * 1024; end++; break;
      default: break;
    }
  }
  /* strtoull accepts "-1" as a huge number: refuse a sign outright. */
  if (errno != 0 || end == v || *end != '\0' || v[0] == '-' || v[0] == '+' || n > hi / mult ||
      n * mult < lo)
    return tool_usage_error("%s needs a whole number from %llu to %llu%s, not '%s'", flag,
                            (unsigned long long)lo, (unsigned long long)hi,
                            suffix ? " (K, M, G suffixes: x 1024)" : "", v);
  *out = n * mult;
  return 0;
}

int tool_parse_seconds(const char *flag, const char *v, int allow_zero, double *out) {
  char *end = NULL;
  errno = 0;
  double d = strtod(v, &end);
  if (errno != 0 || end == v || *end != '\0' || !isfinite(d) || d < 0 || (!allow_zero && d == 0) ||
      d > 86400)
    return tool_usage_error("%s needs seconds, %s up to 86400, not '%s'", flag,
                            allow_zero ? "0" : "above 0", v);
  *out = d;
  return 0;
}

double tool_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tool_sleep(double seconds) {
  if (seconds <= 0) return;
  struct timespec ts = {.tv_sec = (time_t)seconds,
                        .tv_nsec = (long)((seconds - floor(seconds)) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

void tool_ticker_start(tool_ticker *t) { t->start = t->last = tool_now(); }

int tool_ticker_due(tool_ticker *t) {
  double now = tool_now();
  if (now - t->last < 1.0) return 0;
  t->last = now;
  return 1;
}

int tool_write_json(const char *path, const cJSON *j) {
  char *text = cJSON_Print(j);
  FILE *f = NULL;
  int rc = 1;
  if (text == NULL) {
    fprintf(stderr, "%s: out of memory writing the JSON\n", tool_name);
    goto out;
  }
  if ((f = fopen(path, "w")) == NULL) goto failed;
  size_t len = strlen(text);
  if (fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF) goto failed;
  int closed = fclose(f);
  f = NULL;
  if (closed != 0) goto failed;
  rc = 0;
  goto out;
failed:
  fprintf(stderr, "%s: cannot write the JSON to '%s': %s\n", tool_name, path, strerror(errno));
out:
  if (f != NULL) fclose(f);
  free(text);
  return rc;
}
