/* A checkpoint as files (checkpoint_files.c): its files listed with the
 * sizes and SHA-256 they have on disk, the applied index of a closed
 * store, a store put in place of another (the old one gone, the new one
 * serving its blob and index), and what is refused. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

typedef struct seen {
  char *dir;
  int files, bad;
  uint64_t bytes;
} seen;

/* Re-reads each listed file whole and checks the size and hash given. */
static int check_file(void *ctx, const char *name, uint64_t size, const uint8_t sha[32]) {
  seen *s = ctx;
  char *path = tu_path(s->dir, name);
  FILE *f = fopen(path, "rb");
  uint8_t *data = malloc(size ? size : 1), got[32];
  size_t n = f != NULL ? fread(data, 1, size, f) : 0;
  if (f != NULL && fgetc(f) != EOF) n = size + 1; /* longer than said */
  tu_sha256(data, n, got);
  if (n != size || memcmp(got, sha, 32) != 0) s->bad++;
  s->files++;
  s->bytes += size;
  if (f != NULL) fclose(f);
  free(data);
  free(path);
  return 0;
}

static void checkpoint_moves_a_store(void **state) {
  (void)state;
  char *root = tu_tmpdir(), *live = tu_path(root, "live"), *cp = tu_path(root, "cp");
  char *target = tu_path(root, "archive");
  kyso_err err = {0};
  uint8_t id[32];
  uint64_t index = 0;
  archive *a = tu_open(live, NULL);
  uint8_t *doc = tu_bytes(3u << 20, 7);
  assert_int_equal(archive_put_blob(a, doc, 3u << 20, id, &err), KYSO_OK);
  /* Its record through entry 42, as on a cluster node. */
  tu_doc td = {.sha256 = id, .size = 3u << 20, .unit = "H37.DN.001", .account = "a1"};
  size_t clen = 0, elen = 0, no = 0;
  uint8_t *cmd = tu_cmd_document("p", "r1", &td, 1700000000000, &clen), *entry = NULL;
  const uint8_t *cmds[] = {cmd};
  archive_outcome *o = NULL;
  assert_int_equal(archive_pack_entry(cmds, &clen, 1, &entry, &elen, &err), KYSO_OK);
  free(cmd);
  assert_int_equal(archive_apply_entry(a, 42, entry, elen, &o, &no, &err), KYSO_OK);
  assert_int_equal(no, 1);
  assert_int_equal(o[0].st, KYSO_OK);
  archive_outcomes_free(o, no);
  free(entry);
  assert_int_equal(archive_checkpoint(a, cp, &err), KYSO_OK);
  archive_close(a);

  seen s = {.dir = cp};
  assert_int_equal(archive_checkpoint_files(cp, check_file, &s, &err), KYSO_OK);
  assert_true(s.files > 0);
  assert_int_equal(s.bad, 0);
  assert_true(s.bytes >= 3u << 20); /* the blob travels inside the checkpoint */

  /* Something RocksDB never puts in a checkpoint is refused. */
  char *sub = tu_path(cp, "subdir");
  assert_int_equal(mkdir(sub, 0700), 0);
  assert_int_equal(archive_checkpoint_files(cp, check_file, &s, &err), KYSO_INTERNAL);
  assert_non_null(strstr(err.msg, "subdir"));
  assert_int_equal(rmdir(sub), 0);

  assert_int_equal(archive_dir_applied_index(cp, &index, &err), KYSO_OK);
  assert_int_equal(index, 42);

  /* In place of an older store: that one is gone, the new one serves. */
  archive *old = tu_open(target, NULL);
  archive_close(old);
  assert_int_equal(archive_dir_replace(target, cp, &err), KYSO_OK);
  struct stat sb;
  assert_int_not_equal(stat(cp, &sb), 0);
  a = tu_open(target, NULL);
  uint8_t *back = NULL;
  size_t blen = 0;
  assert_int_equal(tu_read_all(a, id, &back, &blen, &err), KYSO_OK);
  assert_int_equal(blen, 3u << 20);
  assert_memory_equal(back, doc, blen);
  assert_int_equal(archive_applied_index(a, &index, &err), KYSO_OK);
  assert_int_equal(index, 42);
  archive_close(a);
  int replaced = 0;
  DIR *dh = opendir(root);
  assert_non_null(dh);
  for (struct dirent *e; (e = readdir(dh)) != NULL;)
    replaced += strncmp(e->d_name, "archive.replaced-", 17) == 0;
  closedir(dh);
  assert_int_equal(replaced, 0); /* the old store was removed after the swap */

  assert_int_equal(archive_dir_remove(target, &err), KYSO_OK);
  assert_int_not_equal(stat(target, &sb), 0);
  assert_int_equal(archive_dir_remove(target, &err), KYSO_OK); /* missing is fine */
  assert_int_equal(archive_dir_applied_index(target, &index, &err), KYSO_NOT_FOUND);

  free(back);
  free(doc);
  free(sub);
  tu_rmrf(root);
  free(target);
  free(cp);
  free(live);
  free(root);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(checkpoint_moves_a_store)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
