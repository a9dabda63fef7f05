/* archive — backups: a RocksDB checkpoint (hard links where it can, copies
 * otherwise) taken while kysod serves. The checkpoint is a complete store:
 * archive_open on it reads every write acknowledged before the call. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "archive_internal.h"

kyso_status archive_checkpoint(archive *a, const char *dir, kyso_err *err) {
  struct stat sb;
  char *e = NULL;
  if (dir == NULL || dir[0] == '\0')
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "a backup needs a directory");
  if (stat(dir, &sb) == 0)
    return kyso_fail(err, KYSO_ALREADY_EXISTS, "backup directory '%s' already exists", dir);
  if (errno != ENOENT)
    return kyso_fail(err, KYSO_FAILED_PRECONDITION, "cannot use backup directory '%s': %s", dir,
                     strerror(errno));
  rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(a->db, &e);
  if (e != NULL) return archive__rocks_fail(err, e, "starting a backup of '%s'", a->dir);
  /* log_size_for_flush 0: flush the memtables first, so the checkpoint's
   * SST and blob files hold everything and its WAL is short. */
  rocksdb_checkpoint_create(cp, dir, 0, &e);
  rocksdb_checkpoint_object_destroy(cp);
  if (e != NULL) return archive__rocks_fail(err, e, "backing up '%s' to '%s'", a->dir, dir);
  return KYSO_OK;
}
