/* archive — a checkpoint as files, for moving a store between nodes: list
 * and hash the files of a closed checkpoint directory, read the applied
 * index of a store nobody has open, put a verified store in place of
 * another durably, remove one. A RocksDB checkpoint is one flat directory
 * of regular files, so anything else in it is refused. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kyso/archive.h"
#include "kyso/limits.h"

static kyso_status hash_file(const char *path, uint64_t *size, uint8_t sha[32], kyso_err *err) {
  kyso_status st = KYSO_OK;
  uint8_t *buf = malloc(KYSO_CHUNK_SIZE);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  *size = 0;
  if (buf == NULL || md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory hashing '%s'", path);
    goto out;
  }
  if (fd < 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot open '%s': %s", path, strerror(errno));
    goto out;
  }
  for (;;) {
    ssize_t n = read(fd, buf, KYSO_CHUNK_SIZE);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = kyso_fail(err, KYSO_INTERNAL, "cannot read '%s': %s", path, strerror(errno));
      goto out;
    }
    if (n == 0) break;
    EVP_DigestUpdate(md, buf, (size_t)n);
    *size += (uint64_t)n;
  }
  EVP_DigestFinal_ex(md, sha, NULL);
out:
  if (fd >= 0) close(fd);
  EVP_MD_CTX_free(md);
  free(buf);
  return st;
}

kyso_status archive_checkpoint_files(const char *dir, archive_file_cb cb, void *ctx,
                                     kyso_err *err) {
  kyso_status st = KYSO_OK;
  char path[PATH_MAX + 256];
  DIR *dh = opendir(dir);
  if (dh == NULL)
    return kyso_fail(err, KYSO_NOT_FOUND, "cannot list checkpoint '%s': %s", dir, strerror(errno));
  for (struct dirent *e; st == KYSO_OK && (e = readdir(dh)) != NULL;) {
    struct stat sb;
    uint8_t sha[32];
    uint64_t size = 0;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
      st = kyso_fail(err, KYSO_INTERNAL, "checkpoint '%s' holds '%s', which is not a regular file",
                     dir, e->d_name);
      break;
    }
    st = hash_file(path, &size, sha, err);
    if (st == KYSO_OK && cb(ctx, e->d_name, size, sha) != 0)
      st = kyso_fail(err, KYSO_CANCELLED, "listing checkpoint '%s' stopped", dir);
  }
  closedir(dh);
  return st;
}

kyso_status archive_dir_applied_index(const char *dir, uint64_t *index, kyso_err *err) {
  archive *a = NULL;
  archive_opts o = {.dir = dir};
  struct stat sb;
  *index = 0;
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
    return kyso_fail(err, KYSO_NOT_FOUND, "no store in '%s'", dir);
  kyso_status st = archive_open(&o, &a, err);
  if (st == KYSO_OK) st = archive_applied_index(a, index, err);
  archive_close(a);
  return st;
}

static int sync_path(const char *path, int flags) {
  int fd = open(path, flags | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

static kyso_status sync_tree(const char *dir, kyso_err *err) {
  char path[PATH_MAX + 256];
  kyso_status st = KYSO_OK;
  DIR *dh = opendir(dir);
  if (dh == NULL)
    return kyso_fail(err, KYSO_INTERNAL, "cannot list '%s': %s", dir, strerror(errno));
  for (struct dirent *e; st == KYSO_OK && (e = readdir(dh)) != NULL;) {
    if (e->d_name[0] == '.' && (e->d_name[1] == '\0' || strcmp(e->d_name, "..") == 0)) continue;
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    struct stat sb;
    if (lstat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sync_path(path, O_RDONLY) != 0)
      st = kyso_fail(err, KYSO_INTERNAL, "cannot sync '%s': %s", path, strerror(errno));
  }
  closedir(dh);
  if (st == KYSO_OK && sync_path(dir, O_RDONLY | O_DIRECTORY) != 0)
    st = kyso_fail(err, KYSO_INTERNAL, "cannot sync '%s': %s", dir, strerror(errno));
  return st;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

kyso_status archive_dir_remove(const char *dir, kyso_err *err) {
  struct stat sb;
  if (lstat(dir, &sb) != 0 && errno == ENOENT) return KYSO_OK;
  if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    return kyso_fail(err, KYSO_INTERNAL, "cannot remove '%s': %s; remove it by hand", dir,
                     strerror(errno));
  return KYSO_OK;
}

kyso_status archive_dir_replace(const char *dir, const char *incoming, kyso_err *err) {
  char aside[PATH_MAX + 64], parent[PATH_MAX + 1];
  struct stat sb;
  int moved = 0;
  kyso_status st = sync_tree(incoming, err);
  if (st != KYSO_OK) return st;
  snprintf(parent, sizeof(parent), "%s", dir);
  char *slash = strrchr(parent, '/');
  if (slash == NULL)
    snprintf(parent, sizeof(parent), ".");
  else
    *slash = '\0';
  snprintf(aside, sizeof(aside), "%s.replaced-%lld", dir, (long long)time(NULL));
  /* The old store is renamed aside, not removed, until the new one has its
   * name durably: a crash in between leaves one of the two in place. */
  if (stat(dir, &sb) == 0) {
    if (rename(dir, aside) != 0)
      return kyso_fail(err, KYSO_INTERNAL, "cannot move '%s' aside to '%s': %s", dir, aside,
                       strerror(errno));
    moved = 1;
  }
  if (rename(incoming, dir) != 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot rename '%s' to '%s': %s", incoming, dir,
                   strerror(errno));
    if (moved && rename(aside, dir) == 0) moved = 0;
    goto out;
  }
  if (sync_path(parent, O_RDONLY | O_DIRECTORY) != 0) {
    st = kyso_fail(err, KYSO_INTERNAL, "cannot sync '%s': %s", parent, strerror(errno));
    goto out;
  }
  if (moved) st = archive_dir_remove(aside, err);
out:
  return st;
}
