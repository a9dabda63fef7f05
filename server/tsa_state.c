/* kyso — a node's time-stamp serials and genTime clock, kept durable by
 * reserving counters in blocks and leasing time ahead (see tsa_state.h).
 *
 * The file says two things, each true whenever it is on disk: no serial at
 * or above next_counter and no genTime above time_bound_ms was issued. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kyso/log.h"
#include "kyso/tsa_state.h"
#include "kyso/util.h"

#define COUNTER_END ((uint64_t)1 << 48) /* counters are 1 .. 2^48-1 */
#define DEFAULT_BLOCK 4096
#define DEFAULT_LEASE_MS 1000
/* 9999-12-31T23:59:59.999Z: the last instant a GeneralizedTime can carry. */
#define MAX_TIME_MS INT64_C(253402300799999)
#define MAX_FILE 4096 /* ours is under 300 bytes */

#define CLOCK_HINT "check the clock discipline (e.g. `chronyc tracking`)"

struct tsa_state {
  pthread_mutex_t mu;
  char *path;
  int lock_fd;
  uint16_t node_id;
  uint32_t block;
  uint32_t lease_ms;
  int64_t (*now_ms)(void *arg);
  void *now_arg;
  /* All below under mu. */
  uint64_t next;         /* the next serial's counter */
  uint64_t reserved_end; /* on disk: no counter at or above it was issued */
  int64_t bound;         /* on disk: no genTime above it was issued */
  int64_t last;          /* the last issued genTime, or the bound read at open */
  uint64_t issued;
  uint64_t writes;
};

static int64_t realtime_ms(void *arg) {
  (void)arg;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The bound a write made at `now` persists: a lease ahead, never lowered. */
static int64_t bound_after(const tsa_state *s, int64_t now) {
  int64_t b = now + (int64_t)s->lease_ms; /* now <= MAX_TIME_MS: no overflow */
  if (b > MAX_TIME_MS) b = MAX_TIME_MS;
  return b > s->bound ? b : s->bound;
}

/* Durably replaces the file with (end, bound). UNAVAILABLE naming the file
 * if it cannot: the caller then issues nothing. */
static kyso_status save(tsa_state *s, uint64_t end, int64_t bound, kyso_err *err) {
  char text[512];
  kyso_err werr = {0};
  int n = snprintf(text, sizeof(text),
                   "# kyso TSA state: no serial at or above next_counter and no genTime above\n"
                   "# time_bound_ms was issued. It is this node's alone: never copy it to\n"
                   "# another node or restore it from a backup.\n"
                   "node_id=%u\nnext_counter=%" PRIu64 "\ntime_bound_ms=%" PRId64 "\n",
                   (unsigned)s->node_id, end, bound);
  if (kyso_write_file_atomic(s->path, text, (size_t)n, 0600, &werr) != KYSO_OK)
    return kyso_fail(err, KYSO_UNAVAILABLE, "cannot save the time-stamp state: %s",
                     werr.msg);
  s->writes++;
  return KYSO_OK;
}

/* Exactly the decimal digits of s[0..n) as a number <= max; 0 otherwise. */
static int parse_number(const char *p, size_t n, uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9') return 0;
    unsigned d = (unsigned)(p[i] - '0');
    if (v > (max - d) / 10) return 0;
    v = v * 10 + d;
  }
  *out = v;
  return 1;
}

/* Parses the state file's text strictly: comment lines, then each key once.
 * FAILED_PRECONDITION naming the file and line on anything else. */
static kyso_status parse(const char *path, const char *text, size_t len, uint16_t *node_id,
                         uint64_t *next, int64_t *bound, kyso_err *err) {
  static const struct { const char *key; uint64_t min, max; } keys[] = {
      {"node_id", 1, UINT16_MAX},
      {"next_counter", 1, COUNTER_END},
      {"time_bound_ms", 0, (uint64_t)MAX_TIME_MS},
  };
  uint64_t vals[3] = {0};
  int seen[3] = {0};
  unsigned line = 0;
  size_t pos = 0;
  while (pos < len) {
    const char *p = text + pos;
    const char *nl = memchr(p, '\n', len - pos);
    line++;
    if (nl == NULL)
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "'%s' line %u has no end (a truncated file?); refusing to guess a counter",
                       path, line);
    size_t n = (size_t)(nl - p);
    pos += n + 1;
    if (n == 0 || p[0] == '#') continue;
    const char *eq = memchr(p, '=', n);
    size_t k;
    for (k = 0; k < 3; k++)
      if (eq != NULL && (size_t)(eq - p) == strlen(keys[k].key) &&
          memcmp(p, keys[k].key, (size_t)(eq - p)) == 0)
        break;
    if (k == 3)
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "'%s' line %u is not one of node_id=, next_counter=, time_bound_ms=", path,
                       line);
    if (seen[k])
      return kyso_fail(err, KYSO_FAILED_PRECONDITION, "'%s' line %u repeats %s", path, line,
                       keys[k].key);
    const char *v = eq + 1;
    if (!parse_number(v, (size_t)(p + n - v), keys[k].max, &vals[k]) || vals[k] < keys[k].min)
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "'%s' line %u: %s must be a decimal number in %" PRIu64 "..%" PRIu64, path,
                       line, keys[k].key, keys[k].min, keys[k].max);
    seen[k] = 1;
  }
  for (size_t k = 0; k < 3; k++)
    if (!seen[k])
      return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                       "'%s' has no %s line; refusing to guess a counter", path, keys[k].key);
  *node_id = (uint16_t)vals[0];
  *next = vals[1];
  *bound = (int64_t)vals[2];
  return KYSO_OK;
}

/* Creates path's directory (0700) if missing, and makes its name durable:
 * a directory lost in a power cut would take the counter with it. */
static kyso_status make_dir(const char *path, kyso_err *err) {
  kyso_status st = KYSO_OK;
  char dir[PATH_MAX], up[PATH_MAX];
  int fd = -1;
  snprintf(dir, sizeof(dir), "%s", path);
  char *d = dirname(dir);
  if (mkdir(d, 0700) != 0) {
    if (errno != EEXIST)
      st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot create directory '%s': %s", d,
                     strerror(errno));
    goto out;
  }
  snprintf(up, sizeof(up), "%s", d);
  char *u = dirname(up);
  fd = open(u, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0)
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot sync directory '%s': %s", u,
                   strerror(errno));
out:
  if (fd >= 0) close(fd);
  return st;
}

/* One handle per file: two processes on one file would issue the same
 * serials. The lock is on a side file, since the state file is replaced. */
static kyso_status take_lock(tsa_state *s, kyso_err *err) {
  char lock[PATH_MAX];
  snprintf(lock, sizeof(lock), "%s.lock", s->path);
  s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s->lock_fd < 0)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot open '%s': %s", lock,
                     strerror(errno));
  if (flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0) return KYSO_OK;
  if (errno == EWOULDBLOCK)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION,
                     "'%s' is in use by another process (it holds '%s')", s->path, lock);
  return kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot lock '%s': %s", lock, strerror(errno));
}

static void state_free(tsa_state *s) {
  if (s == NULL) return;
  if (s->lock_fd >= 0) close(s->lock_fd); /* releases the lock */
  pthread_mutex_destroy(&s->mu);
  free(s->path);
  free(s);
}

kyso_status tsa_state_open(const tsa_state_opts *opts, tsa_state **out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  tsa_state *s = NULL;
  kyso_buf file;
  kyso_err rerr = {0};
  uint16_t file_node;
  uint64_t next = 1;
  int64_t bound = 0;
  kyso_buf_init(&file, MAX_FILE);
  *out = NULL;
  if (opts == NULL || opts->path == NULL || opts->path[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "the time-stamp state needs a file path");
  /* Room for the ".tmp.<pid>" and ".lock" names made from it. */
  if (strlen(opts->path) > PATH_MAX - 32)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "time-stamp state path is too long");
  if (opts->node_id == 0)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "the TSA node_id must be 1..65535, not 0");
  if ((s = calloc(1, sizeof(*s))) == NULL || (s->path = strdup(opts->path)) == NULL) {
    free(s);
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory opening the time-stamp state");
  }
  pthread_mutex_init(&s->mu, NULL);
  s->lock_fd = -1;
  s->node_id = opts->node_id;
  s->block = opts->block ? opts->block : DEFAULT_BLOCK;
  s->lease_ms = opts->lease_ms ? opts->lease_ms : DEFAULT_LEASE_MS;
  s->now_ms = opts->now_ms ? opts->now_ms : realtime_ms;
  s->now_arg = opts->now_arg;
  file_node = s->node_id;

  if ((st = make_dir(s->path, err)) != KYSO_OK || (st = take_lock(s, err)) != KYSO_OK) goto out;
  switch (kyso_read_file(s->path, MAX_FILE, &file, &rerr)) {
  case KYSO_OK:
    st = parse(s->path, (const char *)file.data, file.len, &file_node, &next, &bound, err);
    break;
  case KYSO_NOT_FOUND: /* a new node: counter 1, no genTime yet */
    break;
  default:
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot read the time-stamp state: %s",
                   rerr.msg);
  }
  if (st != KYSO_OK) goto out;
  if (next == COUNTER_END) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "'%s': the serial counter is exhausted (2^48-1 serials issued)", s->path);
    goto out;
  }
  if (file_node != s->node_id)
    kyso_log(KYSO_LOG_INFO,
             "tsa state '%s' was written as node %u, now node %u: the counter continues, "
             "serials take the new prefix", s->path, (unsigned)file_node, (unsigned)s->node_id);
  s->next = s->reserved_end = next;
  s->bound = s->last = bound;

  /* Reserve the first block now: the file is proven writable before the
   * node serves, and the first token does not wait for a write. */
  uint64_t end = COUNTER_END - next < s->block ? COUNTER_END : next + s->block;
  int64_t now = s->now_ms(s->now_arg);
  int64_t new_bound = now >= bound && now <= MAX_TIME_MS ? bound_after(s, now) : bound;
  if ((st = save(s, end, new_bound, err)) != KYSO_OK) goto out;
  s->reserved_end = end;
  s->bound = new_bound;
  kyso_log(KYSO_LOG_INFO, "tsa state '%s': node %u, next counter %" PRIu64 ", genTime from %" PRId64
           " ms since 1970", s->path, (unsigned)s->node_id, s->next, s->last);
out:
  kyso_buf_free(&file, 0);
  if (st != KYSO_OK)
    state_free(s);
  else
    *out = s;
  return st;
}

void tsa_state_close(tsa_state *s) {
  if (s == NULL) return;
  kyso_err err = {0};
  pthread_mutex_lock(&s->mu);
  /* Exact values: nothing at or above next, no genTime after last. */
  if (save(s, s->next, s->last, &err) != KYSO_OK)
    kyso_log(KYSO_LOG_WARN, "%s; the next start skips to the reserved counter and time bound",
             err.msg);
  pthread_mutex_unlock(&s->mu);
  state_free(s);
}

kyso_status tsa_state_next(tsa_state *s, uint64_t *serial, int64_t *gen_time_ms,
                           kyso_err *err) {
  kyso_status st = KYSO_OK;
  pthread_mutex_lock(&s->mu);
  int64_t now = s->now_ms(s->now_arg);
  if (now < 0 || now > MAX_TIME_MS) {
    st = kyso_fail(err, KYSO_UNAVAILABLE,
                   "the clock reads %" PRId64 " ms since 1970, outside what a time-stamp can "
                   "carry; " CLOCK_HINT, now);
    goto out;
  }
  if (now < s->last) {
    /* Issuing now would put this token before an earlier one. */
    st = kyso_fail(err, KYSO_UNAVAILABLE,
                   "the clock is %" PRId64 " ms behind %s; no time-stamp is issued until it "
                   "catches up. If this persists, " CLOCK_HINT, s->last - now,
                   s->issued ? "the last issued genTime"
                             : "the genTime bound saved before this start");
    goto out;
  }
  if (s->next >= COUNTER_END) {
    st = kyso_fail(err, KYSO_FAILED_PRECONDITION,
                   "the serial counter of TSA node %u is exhausted (2^48-1 serials issued)",
                   (unsigned)s->node_id);
    goto out;
  }
  uint64_t end = s->reserved_end;
  if (s->next == end) end = COUNTER_END - end < s->block ? COUNTER_END : end + s->block;
  /* Write only when a new block is needed or now passes the bound; either
   * write carries both, and the lease spares a write for most tokens. */
  if (end != s->reserved_end || now > s->bound) {
    int64_t bound = bound_after(s, now);
    if ((st = save(s, end, bound, err)) != KYSO_OK) {
      kyso_err_wrap(err, "no time-stamp issued");
      goto out;
    }
    s->reserved_end = end;
    s->bound = bound;
  }
  *serial = (uint64_t)s->node_id << 48 | s->next++;
  *gen_time_ms = s->last = now;
  s->issued++;
out:
  pthread_mutex_unlock(&s->mu);
  return st;
}

int64_t tsa_state_clock_behind_ms(tsa_state *s) {
  pthread_mutex_lock(&s->mu);
  int64_t now = s->now_ms(s->now_arg);
  if (now < 0) now = -1; /* a clock before 1970 is behind; keep the subtraction in range */
  int64_t behind = now < s->last ? s->last - now : 0;
  pthread_mutex_unlock(&s->mu);
  return behind;
}

void tsa_state_get_info(tsa_state *s, tsa_state_info *out) {
  pthread_mutex_lock(&s->mu);
  out->node_id = s->node_id;
  out->next_counter = s->next;
  out->reserved_end = s->reserved_end;
  out->last_gen_time_ms = s->last;
  out->issued = s->issued;
  out->writes = s->writes;
  pthread_mutex_unlock(&s->mu);
}
