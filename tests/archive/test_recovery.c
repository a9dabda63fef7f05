/* Recovery: a damaged WAL stops the open and says where; a torn tail from a
 * crash is cut off and nothing else is; damage elsewhere is refused and
 * named; a second opener and a foreign schema are refused. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kyso/util.h"
#include "testutil.h"

#define T0 1714550400000LL
#define SMALL 20    /* small signings before the big one */
#define BIG 3000000 /* an inline document: one WAL record of ~92 fragments */

/* The newest non-empty WAL file of dir into path. */
static void newest_log(const char *dir, char *path, size_t n) {
  DIR *d = opendir(dir);
  struct dirent *e;
  unsigned long best = 0;
  path[0] = '\0';
  assert_non_null(d);
  while ((e = readdir(d)) != NULL) {
    size_t l = strlen(e->d_name);
    struct stat sb;
    char p[1024];
    if (l < 5 || strcmp(e->d_name + l - 4, ".log") != 0) continue;
    snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
    unsigned long num = strtoul(e->d_name, NULL, 10);
    if (stat(p, &sb) == 0 && sb.st_size > 0 && num >= best) {
      best = num;
      snprintf(path, n, "%s", p);
    }
  }
  closedir(d);
  assert_true(path[0] != '\0');
}

static off_t file_size(const char *path) {
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  return sb.st_size;
}

static void test_wal_flip(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), log[1024];
  archive *a = NULL;
  tu_crash_after("--small", dir);
  newest_log(dir, log, sizeof(log));
  off_t size = file_size(log), at = size / 2;
  int fd = open(log, O_RDWR);
  uint8_t c;
  assert_int_equal(pread(fd, &c, 1, at), 1);
  c ^= 0x10;
  assert_int_equal(pwrite(fd, &c, 1, at), 1);
  close(fd);
  archive_opts o = {.dir = dir};
  kyso_err err = {0};
  for (int attempt = 0; attempt < 2; attempt++) { /* refusing changes nothing */
    assert_int_equal(archive_open(&o, &a, &err), KYSO_DATA_LOSS);
    assert_null(a);
    printf("open after a flipped WAL byte: %s\n", err.msg);
    assert_non_null(strstr(err.msg, log));
    assert_non_null(strstr(err.msg, "checksum mismatch"));
    assert_non_null(strstr(err.msg, "Restore"));
    assert_int_equal(file_size(log), size);
  }
  /* following the message's second option: cut at the offset it names */
  const char *cut = strstr(err.msg, "truncate -s ");
  assert_non_null(cut);
  long keep = strtol(cut + 12, NULL, 10);
  assert_true(keep <= at && keep > 0);
  assert_int_equal(truncate(log, keep), 0);
  a = tu_open(dir, NULL);
  assert_true(tu_has_request(a, 0));
  archive_close(a);
  tu_rmrf(dir);
  free(dir);
}

/* A write cut short by a crash is cut off at the last complete record;
 * everything before it stays; the cut bytes are kept aside. Cuts: inside
 * the last fragment's payload, inside its header, whole fragments short. */
static void test_torn_tail(void **state) {
  (void)state;
  const off_t cuts[] = {1, 6, 100, 40000, 1500000, 2990000};
  for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
    char *dir = tu_tmpdir(), log[1024], kept[1100];
    uint8_t id[32];
    uint8_t *big = tu_bytes(BIG, 3);
    tu_sha256(big, BIG, id);
    free(big);
    tu_crash_after("--small-big", dir);
    newest_log(dir, log, sizeof(log));
    assert_int_equal(truncate(log, file_size(log) - cuts[k]), 0);
    archive *a = tu_open(dir, NULL);
    for (int i = 0; i < SMALL; i++) assert_true(tu_has_request(a, i));
    uint8_t *v = NULL;
    size_t vl = 0;
    kyso_err err = {0};
    assert_int_equal(archive_find_request(a, "p", "big", &v, &vl, &err), KYSO_NOT_FOUND);
    assert_int_equal(tu_count(a, ARCHIVE__CF_MANIFESTS, id, 32), 0);
    archive_close(a);
    snprintf(kept, sizeof(kept), "%s/torn-wal", dir);
    struct stat sb;
    assert_int_equal(stat(kept, &sb), 0);
    a = tu_open(dir, NULL); /* and it stays repaired */
    archive_close(a);
    tu_rmrf(dir);
    free(dir);
  }
}

/* A torn record followed by more records is not a tail: refused. */
static void test_hole_is_not_a_tail(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), log[1024];
  archive *a = NULL;
  tu_crash_after("--small", dir);
  newest_log(dir, log, sizeof(log));
  /* cut 300 bytes out of the middle: what follows is intact, so a tear
   * cannot explain it */
  off_t size = file_size(log), mid = size / 2;
  uint8_t *all = malloc((size_t)size);
  int fd = open(log, O_RDWR);
  assert_int_equal(pread(fd, all, (size_t)size, 0), size);
  assert_int_equal(pwrite(fd, all + mid + 300, (size_t)(size - mid - 300), mid), size - mid - 300);
  assert_int_equal(ftruncate(fd, size - 300), 0);
  close(fd);
  free(all);
  archive_opts o = {.dir = dir};
  kyso_err err = {0};
  assert_int_equal(archive_open(&o, &a, &err), KYSO_DATA_LOSS);
  printf("open after a hole in the WAL: %s\n", err.msg);
  assert_non_null(strstr(err.msg, log));
  tu_rmrf(dir);
  free(dir);
}

/* Damage outside the WAL (here the MANIFEST) is refused too, and named. */
static void test_manifest_damage(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), manifest[1100] = "";
  archive *a = tu_open(dir, NULL);
  for (int i = 0; i < 10; i++) tu_sign_small(a, i);
  archive_close(a); /* a clean close: everything in SST and blob files */
  DIR *d = opendir(dir);
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strncmp(e->d_name, "MANIFEST-", 9) == 0)
      snprintf(manifest, sizeof(manifest), "%s/%s", dir, e->d_name);
  closedir(d);
  off_t size = file_size(manifest);
  int fd = open(manifest, O_RDWR);
  uint8_t c;
  assert_int_equal(pread(fd, &c, 1, size / 2), 1);
  c ^= 1;
  assert_int_equal(pwrite(fd, &c, 1, size / 2), 1);
  close(fd);
  archive_opts o = {.dir = dir};
  kyso_err err = {0};
  assert_int_equal(archive_open(&o, &a, &err), KYSO_DATA_LOSS);
  printf("open with a damaged MANIFEST: %s\n", err.msg);
  assert_non_null(strstr(err.msg, manifest));
  tu_rmrf(dir);
  free(dir);
}

static void test_lock_and_schema(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  archive *a = NULL, *b = NULL;
  archive_opts o = {.dir = dir};
  kyso_err err = {0};
  /* another process has it open (a child that wrote and now waits) */
  int fd;
  char c = 0;
  pid_t pid = tu_spawn("--small", dir, &fd);
  assert_int_equal(read(fd, &c, 1), 1);
  assert_int_equal(archive_open(&o, &b, &err), KYSO_UNAVAILABLE);
  printf("open while another process has it: %s\n", err.msg);
  assert_non_null(strstr(err.msg, "already open"));
  close(fd);
  tu_kill(pid);
  /* this process, twice */
  a = tu_open(dir, NULL);
  assert_int_equal(archive_open(&o, &b, &err), KYSO_UNAVAILABLE);
  assert_null(b);
  tu_raw_put(a, ARCHIVE__CF_DEFAULT, "schema", 6, "2", 1);
  archive_close(a);
  assert_int_equal(archive_open(&o, &b, &err), KYSO_FAILED_PRECONDITION);
  assert_non_null(strstr(err.msg, "schema"));
  assert_null(b);
  tu_rmrf(dir);
  free(dir);
}

/* Child modes (see spawn): write, say "done", wait to be killed. */
static int child(const char *mode, const char *dir, int fd) {
  archive *a = tu_open(dir, NULL);
  for (int i = 0; i < (strcmp(mode, "--small") == 0 ? 100 : SMALL); i++) tu_sign_small(a, i);
  if (strcmp(mode, "--small-big") == 0) { /* then one large record at the end of the WAL */
    uint8_t *big = tu_bytes(BIG, 3), id[32];
    size_t n;
    tu_sha256(big, BIG, id);
    tu_doc d = {.sha256 = id, .size = BIG};
    uint8_t *cmd = tu_cmd_signing("p", "big", &d, "acc", "CMS big", T0, &n);
    tu_result_free(tu_submit_ok(a, cmd, n, big, BIG));
  }
  if (write(fd, "d", 1) != 1) return 1;
  for (;;) pause();
}

int main(int argc, char **argv) {
  if (argc == 4) return child(argv[1], argv[2], atoi(argv[3]));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wal_flip),           cmocka_unit_test(test_torn_tail),
      cmocka_unit_test(test_hole_is_not_a_tail), cmocka_unit_test(test_manifest_damage),
      cmocka_unit_test(test_lock_and_schema),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
