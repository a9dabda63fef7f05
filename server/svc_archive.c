/* kysod — kyso.v1.Archive Stat, List, Scrub and Backup. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kyso/limits.h"
#include "kyso/log.h"
#include "kyso/util.h"
#include "kysod.h"

#include "kyso/v1/archive.pb-c.h"

void kysod__archive_stat(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  uint8_t id[32];
  kysod_doc_view *view = NULL;
  Kyso__V1__StatRequest *req = kyso__v1__stat_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.StatRequest");
    goto out;
  }
  if ((st = kyso_unhex(req->id, id, 32, "id", &err)) != KYSO_OK) goto out;
  if ((st = kysod__read_barrier(d, call, &err)) != KYSO_OK) goto out;
  if ((st = kysod__doc_view(d, id, req->include_signatures, &view, &err)) != KYSO_OK) goto out;
  kysod__reply(call, &kysod__doc_view_info(view)->base);
out:
  if (st != KYSO_OK) rpc_call_finish(call, st, err.msg, NULL, 0);
  kysod__doc_view_free(view);
  kyso__v1__stat_request__free_unpacked(req, NULL);
}

static kyso_status check_list(const Kyso__V1__ListRequest *req, archive_query *q, kyso_err *err) {
  kyso_status st;
  memset(q, 0, sizeof(*q));
  if (req->by_case == KYSO__V1__LIST_REQUEST__BY_UNIT) {
    if ((st = kysod__check_name("unit", req->unit, err)) != KYSO_OK) return st;
    q->key = req->unit;
    q->index = req->number_notation[0] ? ARCHIVE_BY_NUMBER : ARCHIVE_BY_UNIT_DATE;
  } else if (req->by_case == KYSO__V1__LIST_REQUEST__BY_ACCOUNT) {
    if ((st = kysod__check_name("account", req->account, err)) != KYSO_OK) return st;
    if (req->number_notation[0])
      return kyso_fail(err, KYSO_INVALID_ARGUMENT, "number_notation is looked up by unit");
    q->key = req->account;
    q->index = ARCHIVE_BY_ACCOUNT_DATE;
  } else {
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "give unit or account to list by");
  }
  const struct { const char *what, *value; } dates[] = {{"from_date", req->from_date},
                                                        {"to_date", req->to_date}};
  for (size_t i = 0; i < 2; i++) {
    const char *v = dates[i].value;
    if (v[0] && (strlen(v) != 10 || v[4] != '-' || v[7] != '-'))
      return kyso_fail(err, KYSO_INVALID_ARGUMENT, "%s must be YYYY-MM-DD", dates[i].what);
  }
  if ((st = kysod__check_text("number_notation", req->number_notation, KYSO_MAX_METADATA, err)) !=
      KYSO_OK)
    return st;
  if (req->page_size > KYSO_MAX_PAGE)
    return kyso_fail(err, KYSO_INVALID_ARGUMENT, "page_size is at most %d", KYSO_MAX_PAGE);
  q->from = q->index == ARCHIVE_BY_NUMBER ? req->number_notation : req->from_date;
  q->to = req->to_date;
  q->page_token = req->page_token;
  q->page_size = req->page_size;
  return KYSO_OK;
}

void kysod__archive_list(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  size_t len, count = 0, built = 0;
  const uint8_t *data = rpc_call_request(call, &len);
  uint8_t *ids = NULL;
  char next[513] = "";
  archive_query q;
  kysod_doc_view **views = NULL;
  Kyso__V1__DocumentInfo **infos = NULL;
  Kyso__V1__ListRequest *req = kyso__v1__list_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.ListRequest");
    goto out;
  }
  if ((st = check_list(req, &q, &err)) != KYSO_OK) goto out;
  if ((st = kysod__read_barrier(d, call, &err)) != KYSO_OK) goto out;
  if ((st = archive_list(d->archive, &q, &ids, &count, next, &err)) != KYSO_OK) goto out;
  views = calloc(count ? count : 1, sizeof(*views));
  infos = calloc(count ? count : 1, sizeof(*infos));
  if (views == NULL || infos == NULL) {
    st = kyso_fail(&err, KYSO_RESOURCE_EXHAUSTED, "out of memory listing %zu documents", count);
    goto out;
  }
  for (; built < count; built++) {
    if ((st = kysod__doc_view(d, ids + 32 * built, 0, &views[built], &err)) != KYSO_OK) goto out;
    infos[built] = kysod__doc_view_info(views[built]);
  }
  Kyso__V1__ListResponse resp = KYSO__V1__LIST_RESPONSE__INIT;
  resp.documents = infos;
  resp.n_documents = count;
  resp.next_page_token = next;
  kysod__reply(call, &resp.base);
out:
  if (st != KYSO_OK) rpc_call_finish(call, st, err.msg, NULL, 0);
  for (size_t i = 0; i < built; i++) kysod__doc_view_free(views[i]);
  free(views);
  free(infos);
  free(ids);
  kyso__v1__list_request__free_unpacked(req, NULL);
}

typedef struct scrub_ctx {
  rpc_call *call;
  kyso_status st;
  kyso_err err;
  uint64_t problems;
} scrub_ctx;

static void fill_progress(Kyso__V1__ScrubProgress *m, const archive_scrub_report *r) {
  m->blobs_checked = r->blobs;
  m->bytes_checked = r->bytes;
  m->documents_checked = r->documents;
  m->signatures_checked = r->signatures;
}

static int on_scrub(void *ctx, const char *what, const uint8_t id[32], const char *problem,
                    const archive_scrub_report *so_far) {
  scrub_ctx *c = ctx;
  char hex[65] = "";
  Kyso__V1__ScrubProgress m = KYSO__V1__SCRUB_PROGRESS__INIT;
  fill_progress(&m, so_far);
  if (problem != NULL) {
    c->problems++;
    if (id != NULL) kyso_hex(id, 32, hex);
    m.problem_kind = (char *)what;
    m.problem_id = hex;
    m.problem = (char *)problem;
    kyso_log(KYSO_LOG_ERROR, "scrub: %s %s: %s", what, hex, problem);
  }
  m.problems = c->problems;
  size_t n = kyso__v1__scrub_progress__get_packed_size(&m);
  uint8_t buf[2048];
  if (n > sizeof(buf)) return 0; /* an oversized problem text is not worth a stop */
  kyso__v1__scrub_progress__pack(&m, buf);
  c->st = rpc_call_write(c->call, buf, n, &c->err);
  return c->st != KYSO_OK;
}

void kysod__archive_scrub(rpc_call *call, void *app) {
  kysod *d = app;
  scrub_ctx c = {.call = call, .st = KYSO_OK};
  archive_scrub_report rep;
  memset(&rep, 0, sizeof(rep));
  kyso_log(KYSO_LOG_INFO, "scrub started by %s", rpc_call_peer(call)->principal);
  kyso_status st = archive_scrub(d->archive, on_scrub, &c, &rep, &c.err);
  if (st == KYSO_OK && c.st == KYSO_OK) {
    Kyso__V1__ScrubProgress m = KYSO__V1__SCRUB_PROGRESS__INIT;
    uint8_t buf[256];
    fill_progress(&m, &rep);
    m.done = 1;
    m.problems = c.problems;
    kyso__v1__scrub_progress__pack(&m, buf);
    st = rpc_call_write(call, buf, kyso__v1__scrub_progress__get_packed_size(&m), &c.err);
  }
  if (c.st != KYSO_OK) st = c.st;
  kyso_log(KYSO_LOG_INFO, "scrub finished: %llu blobs, %llu bytes, %llu problems",
           (unsigned long long)rep.blobs, (unsigned long long)rep.bytes,
           (unsigned long long)c.problems);
  rpc_call_finish(call, st, st == KYSO_OK ? "" : c.err.msg, NULL, 0);
}

static uint64_t backup_total;

static int add_size(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
  (void)path;
  (void)ftw;
  if (type == FTW_F) backup_total += (uint64_t)sb->st_size;
  return 0;
}

/* Bytes in the checkpoint (hard links to live SST files count in full).
 * Backups are rare and serialised by the caller's role; a static is enough. */
static uint64_t dir_bytes(const char *dir) {
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&lock);
  backup_total = 0;
  nftw(dir, add_size, 16, FTW_PHYS);
  uint64_t total = backup_total;
  pthread_mutex_unlock(&lock);
  return total;
}

void kysod__archive_backup(rpc_call *call, void *app) {
  kysod *d = app;
  kyso_err err = {0};
  kyso_status st;
  size_t len;
  const uint8_t *data = rpc_call_request(call, &len);
  struct stat sb;
  Kyso__V1__BackupRequest *req = kyso__v1__backup_request__unpack(NULL, len, data);
  if (req == NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT, "request is not a valid kyso.v1.BackupRequest");
    goto out;
  }
  if (req->directory[0] != '/' || strlen(req->directory) >= KYSO_PATH_MAX ||
      strstr(req->directory, "..") != NULL) {
    st = kyso_fail(&err, KYSO_INVALID_ARGUMENT,
                   "directory must be an absolute path on the node, without '..'");
    goto out;
  }
  if (stat(req->directory, &sb) == 0) {
    st = kyso_fail(&err, KYSO_ALREADY_EXISTS, "'%s' already exists; name a new directory",
                   req->directory);
    goto out;
  }
  if ((st = archive_checkpoint(d->archive, req->directory, &err)) != KYSO_OK) goto out;
  kyso_log(KYSO_LOG_INFO, "backup by %s into %s", rpc_call_peer(call)->principal, req->directory);
  Kyso__V1__BackupResponse resp = KYSO__V1__BACKUP_RESPONSE__INIT;
  resp.directory = req->directory;
  resp.bytes = dir_bytes(req->directory);
  kysod__reply(call, &resp.base);
out:
  if (st != KYSO_OK) rpc_call_finish(call, st, err.msg, NULL, 0);
  kyso__v1__backup_request__free_unpacked(req, NULL);
}
