/* archive — telling a torn WAL tail from a damaged WAL.
 *
 * The store opens with absolute-consistency WAL recovery, so RocksDB refuses
 * any damage instead of dropping acknowledged writes after it. But a kill -9
 * in the middle of writing a large batch also leaves the last WAL record
 * incomplete, and absolute consistency refuses that too: kysod would not
 * restart after an ordinary crash. A write that was cut short was never
 * synced, so never acknowledged; cutting it off loses nothing anyone was
 * told was stored. So when RocksDB refuses, this reads the WAL files itself
 * (RocksDB's log format: 32 KiB blocks of records with a 7-byte header —
 * masked CRC32C of type and payload, length, type) and cuts the newest one
 * back to its last complete record only if everything after it is exactly
 * what an interrupted write leaves: valid fragments of one unfinished
 * record, or a prefix of one record in the last block with no complete
 * record behind it. Anything else is damage, reported with file and offset. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive_internal.h"
#include "kyso/log.h"

#define BLOCK 32768
#define HEADER 7
enum { ZERO = 0, FULL = 1, FIRST = 2, MIDDLE = 3, LAST = 4 };
/* One interrupted write is at most one group-commit batch (plus what
 * RocksDB's own write grouping adds); a longer "tail" is not a tear. */
#define MAX_TORN (ARCHIVE__GROUP_COMMIT_BYTES * 2ull)

typedef enum { WAL_CLEAN, WAL_TORN, WAL_DAMAGED } wal_verdict;

typedef struct wal_scan {
  wal_verdict verdict;
  uint64_t cut; /* end of the last complete record */
  uint64_t at;  /* where the damage is */
  const char *why;
} wal_scan;

static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    crc_table[i] = c;
  }
}

/* CRC32C state (pre/post inverted by the callers below). */
static uint32_t crc_extend(uint32_t c, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c;
}

static uint32_t masked(uint32_t state) {
  uint32_t crc = ~state;
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A complete, checksummed record of a known type at p (n bytes left in its block)? */
static int valid_record(const uint8_t *p, size_t n) {
  if (n < HEADER) return 0;
  size_t len = (size_t)p[4] | (size_t)p[5] << 8;
  uint8_t type = p[6];
  if (type < FULL || type > LAST || HEADER + len > n) return 0;
  return masked(crc_extend(crc_extend(~0u, &type, 1), p + HEADER, len)) == le32(p);
}

/* The record at p claims to run past the end of the file. A tear, unless
 * its payload checks out at a shorter length (its length field was hit) or
 * a complete record starts somewhere after it (something in between was). */
static int looks_torn(const uint8_t *p, size_t avail) {
  uint32_t want = le32(p), c = crc_extend(~0u, p + 6, 1);
  for (size_t l = 0;; l++) {
    if (masked(c) == want) return 0;
    if (HEADER + l >= avail) break;
    c = crc_extend(c, p + HEADER + l, 1);
  }
  for (size_t q = 1; q + HEADER <= avail; q++)
    if (valid_record(p + q, avail - q)) return 0;
  return 1;
}

static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/* Scans one block; returns 1 when the verdict is final. */
static int scan_block(const uint8_t *b, size_t n, uint64_t base, int *in_frag, wal_scan *s) {
  size_t p = 0;
  while (p < n) {
    if (BLOCK - p < HEADER) {
      if (n == BLOCK) return 0; /* trailer: the next record starts in the next block */
      s->verdict = WAL_TORN;    /* a trailer at the end of the file: the next record's start */
      return 1;
    }
    if (n - p < HEADER) { /* a header cut short by the end of the file */
      s->verdict = WAL_TORN;
      return 1;
    }
    const uint8_t *r = b + p;
    size_t len = (size_t)r[4] | (size_t)r[5] << 8;
    uint8_t type = r[6];
    s->at = base + p;
    if (type == ZERO && len == 0 && le32(r) == 0) { /* preallocated space */
      if (n < BLOCK && all_zero(r, n - p)) {
        s->verdict = WAL_TORN;
      } else if (*in_frag) {
        s->verdict = WAL_DAMAGED;
        s->why = "zeroes in the middle of a record";
      } else {
        return 0; /* RocksDB skips the rest of such a block */
      }
      return 1;
    }
    if (HEADER + len > BLOCK - p) {
      s->verdict = WAL_DAMAGED;
      s->why = "a record length past its block (bad record length)";
      return 1;
    }
    if (p + HEADER + len > n) {
      int torn = looks_torn(r, n - p);
      s->verdict = torn ? WAL_TORN : WAL_DAMAGED;
      s->why = torn ? NULL : "a record length that does not match its record";
      return 1;
    }
    if (!valid_record(r, BLOCK - p)) {
      s->verdict = WAL_DAMAGED;
      s->why = type >= FULL && type <= LAST ? "checksum mismatch"
                                            : "a record type this check does not know";
      return 1;
    }
    if ((type == FULL || type == FIRST) == *in_frag) {
      s->verdict = WAL_DAMAGED;
      s->why = *in_frag ? "a record that ends without its last fragment"
                        : "a fragment without its first";
      return 1;
    }
    *in_frag = type == FIRST || type == MIDDLE;
    p += HEADER + len;
    if (!*in_frag) s->cut = base + p;
  }
  return 0;
}

static kyso_status scan_file(const char *path, wal_scan *s, uint64_t *size, kyso_err *err) {
  kyso_status st = KYSO_OK;
  struct stat sb;
  int in_frag = 0;
  uint8_t *b = malloc(BLOCK);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  memset(s, 0, sizeof(*s));
  if (b == NULL || fd < 0 || fstat(fd, &sb) != 0) {
    st = kyso_fail(err, KYSO_UNAVAILABLE, "cannot read the write-ahead log '%s': %s", path,
                   strerror(errno));
    goto out;
  }
  *size = (uint64_t)sb.st_size;
  for (uint64_t base = 0; base < *size; base += BLOCK) {
    size_t want = *size - base < BLOCK ? (size_t)(*size - base) : BLOCK, got = 0;
    while (got < want) {
      ssize_t r = pread(fd, b + got, want - got, (off_t)(base + got));
      if (r <= 0) {
        st = kyso_fail(err, KYSO_UNAVAILABLE, "cannot read the write-ahead log '%s'", path);
        goto out;
      }
      got += (size_t)r;
    }
    if (scan_block(b, want, base, &in_frag, s)) goto out;
  }
  s->verdict = in_frag ? WAL_TORN : WAL_CLEAN;
out:
  if (fd >= 0) close(fd);
  free(b);
  return st;
}

/* Keeps the cut-off bytes in dir/torn-wal/ (an operator may want to see
 * them) and cuts the log back to its last complete record, durably. */
static kyso_status cut_tail(const char *dir, const char *name, const char *path, uint64_t cut,
                            uint64_t size, kyso_err *err) {
  char keep_dir[4096], keep[4200];
  uint8_t buf[65536];
  kyso_status st = KYSO_OK;
  int in = -1, out = -1;
  snprintf(keep_dir, sizeof(keep_dir), "%s/torn-wal", dir);
  snprintf(keep, sizeof(keep), "%s/%s.from-%" PRIu64, keep_dir, name, cut);
  if ((mkdir(keep_dir, 0700) != 0 && errno != EEXIST) ||
      (in = open(path, O_RDWR | O_CLOEXEC)) < 0 ||
      (out = open(keep, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
    st = kyso_fail(err, KYSO_UNAVAILABLE, "cannot set aside the torn end of '%s': %s", path,
                   strerror(errno));
    goto out;
  }
  for (uint64_t off = cut; off < size;) {
    ssize_t r = pread(in, buf, sizeof(buf), (off_t)off);
    if (r <= 0 || write(out, buf, (size_t)r) != r) {
      st = kyso_fail(err, KYSO_UNAVAILABLE, "cannot copy the torn end of '%s' to '%s'", path, keep);
      goto out;
    }
    off += (uint64_t)r;
  }
  if (fsync(out) != 0 || ftruncate(in, (off_t)cut) != 0 || fsync(in) != 0)
    st = kyso_fail(err, KYSO_UNAVAILABLE, "cannot cut the torn end of '%s': %s", path,
                   strerror(errno));
out:
  if (in >= 0) close(in);
  if (out >= 0) close(out);
  return st;
}

static int log_number(const char *name, unsigned long long *num) {
  size_t n = strlen(name);
  if (n < 5 || strcmp(name + n - 4, ".log") != 0) return 0;
  for (size_t i = 0; i < n - 4; i++)
    if (name[i] < '0' || name[i] > '9') return 0;
  *num = strtoull(name, NULL, 10);
  return 1;
}

/* The WAL files of dir, in log-number order (*names malloc()ed, each too). */
static kyso_status list_logs(const char *dir, char ***names, size_t *count, kyso_err *err) {
  DIR *d = opendir(dir);
  struct dirent *e;
  unsigned long long num;
  *names = NULL;
  *count = 0;
  if (d == NULL)
    return kyso_fail(err, KYSO_UNAVAILABLE, "cannot list '%s': %s", dir, strerror(errno));
  while ((e = readdir(d)) != NULL) {
    if (!log_number(e->d_name, &num)) continue;
    char **more = realloc(*names, (*count + 1) * sizeof(char *));
    if (more == NULL) break;
    *names = more;
    if (((*names)[*count] = strdup(e->d_name)) != NULL) (*count)++;
  }
  closedir(d);
  for (size_t i = 1; i < *count; i++) /* insertion sort: a handful of files */
    for (size_t j = i; j > 0; j--) {
      unsigned long long x = 0, y = 0;
      log_number((*names)[j - 1], &x);
      log_number((*names)[j], &y);
      if (x < y) break;
      char *t = (*names)[j];
      (*names)[j] = (*names)[j - 1];
      (*names)[j - 1] = t;
    }
  return KYSO_OK;
}

kyso_status archive__wal_repair_torn_tail(const char *dir, int *repaired, kyso_err *err) {
  char **names = NULL, path[4096];
  size_t count = 0;
  uint64_t size = 0;
  wal_scan s;
  *repaired = 0;
  crc_init();
  kyso_status st = list_logs(dir, &names, &count, err);
  for (size_t i = 0; st == KYSO_OK && i < count; i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
    if ((st = scan_file(path, &s, &size, err)) != KYSO_OK) break;
    int newest = i + 1 == count;
    if (s.verdict == WAL_CLEAN) continue;
    if (s.verdict == WAL_TORN && newest && size - s.cut <= MAX_TORN) {
      kyso_log(KYSO_LOG_WARN,
               "archive: the write-ahead log '%s' ends in a write cut short (a crash while "
               "writing; never acknowledged): cutting %" PRIu64 " bytes at byte %" PRIu64
               ", kept in %s/torn-wal/",
               path, size - s.cut, s.cut, dir);
      if ((st = cut_tail(dir, names[i], path, s.cut, size, err)) == KYSO_OK) *repaired = 1;
      break;
    }
    st = kyso_fail(err, KYSO_DATA_LOSS,
                   "the write-ahead log '%s' is damaged at byte %" PRIu64
                   " (%s); kysod will not "
                   "start without the acknowledged documents in it. Restore the last backup "
                   "(README: Restore); or, accepting the loss of every write after byte %" PRIu64
                   ", cut the file there (truncate -s %" PRIu64 " '%s') and start again",
                   path, s.at, s.why ? s.why : "an incomplete record before the end of the logs",
                   s.cut, s.cut, path);
  }
  for (size_t i = 0; i < count; i++) free(names[i]);
  free(names);
  return st;
}
