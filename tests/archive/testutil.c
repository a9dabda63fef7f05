/* Archive test helpers. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "testutil.h"

#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char *tu_tmpdir(void) {
  const char *base = getenv("TMPDIR");
  char *path = tu_path(base && base[0] ? base : "/tmp", "kyso-archive-XXXXXX");
  assert_non_null(mkdtemp(path));
  return path;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

void tu_rmrf(const char *path) {
  if (path != NULL && getenv("KYSO_KEEP_TMP") == NULL) nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_path(const char *base, const char *name) {
  size_t n = strlen(base) + strlen(name) + 2;
  char *p = malloc(n);
  assert_non_null(p);
  snprintf(p, n, "%s/%s", base, name);
  return p;
}

archive *tu_open(const char *dir, const archive_opts *opts) {
  archive_opts o = {0};
  if (opts != NULL) o = *opts;
  o.dir = dir;
  archive *a = NULL;
  kyso_err err = {0};
  kyso_status st = archive_open(&o, &a, &err);
  if (st != KYSO_OK) fail_msg("archive_open(%s): %s", dir, err.msg);
  return a;
}

void tu_fill(uint8_t *p, size_t n, uint32_t seed) {
  uint64_t x = 0x9e3779b97f4a7c15ULL ^ seed;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = (uint8_t)(x >> 24);
  }
}

uint8_t *tu_bytes(size_t n, uint32_t seed) {
  uint8_t *p = malloc(n ? n : 1);
  assert_non_null(p);
  tu_fill(p, n, seed);
  return p;
}

void tu_sha256(const void *p, size_t n, uint8_t out[32]) {
  unsigned int len = 32;
  assert_int_equal(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
}

static char *s(const char *v) { return (char *)(v ? v : ""); }

static uint8_t *pack(Kyso__Store__V1__Command *c, size_t *len) {
  *len = kyso__store__v1__command__get_packed_size(c);
  uint8_t *out = malloc(*len);
  assert_non_null(out);
  kyso__store__v1__command__pack(c, out);
  return out;
}

static void fill_doc(const tu_doc *d, Kyso__Store__V1__RecordDocument *doc,
                     Kyso__Store__V1__DocumentMetadata *m) {
  m->unit = s(d->unit);
  m->issue_date = s(d->issue_date);
  m->number_notation = s(d->number);
  m->title = "test document";
  m->media_type = "application/pdf";
  doc->sha256.data = (uint8_t *)d->sha256;
  doc->sha256.len = 32;
  doc->size = d->size;
  doc->metadata = m;
  doc->account = s(d->account);
}

uint8_t *tu_cmd_document(const char *principal, const char *request_id, const tu_doc *d,
                         int64_t time_ms, size_t *len) {
  Kyso__Store__V1__Command c = KYSO__STORE__V1__COMMAND__INIT;
  Kyso__Store__V1__RecordDocument doc = KYSO__STORE__V1__RECORD_DOCUMENT__INIT;
  Kyso__Store__V1__DocumentMetadata m = KYSO__STORE__V1__DOCUMENT_METADATA__INIT;
  fill_doc(d, &doc, &m);
  c.version = 1;
  c.time_unix_ms = time_ms;
  c.principal = s(principal);
  c.request_id = s(request_id);
  c.op_case = KYSO__STORE__V1__COMMAND__OP_RECORD_DOCUMENT;
  c.record_document = &doc;
  return pack(&c, len);
}

uint8_t *tu_cmd_signing(const char *principal, const char *request_id, const tu_doc *d,
                        const char *signer_account, const char *cms_text, int64_t time_ms,
                        size_t *len) {
  Kyso__Store__V1__Command c = KYSO__STORE__V1__COMMAND__INIT;
  Kyso__Store__V1__RecordSigning sg = KYSO__STORE__V1__RECORD_SIGNING__INIT;
  Kyso__Store__V1__RecordDocument doc = KYSO__STORE__V1__RECORD_DOCUMENT__INIT;
  Kyso__Store__V1__DocumentMetadata m = KYSO__STORE__V1__DOCUMENT_METADATA__INIT;
  char cert[128];
  static char ca[] = "fake DER: test root CA";
  ProtobufCBinaryData chain = {sizeof(ca) - 1, (uint8_t *)ca};
  fill_doc(d, &doc, &m);
  snprintf(cert, sizeof(cert), "fake DER: certificate of %s", s(signer_account));
  sg.document = &doc;
  sg.cms.data = (uint8_t *)cms_text;
  sg.cms.len = strlen(cms_text);
  sg.key_label = "test-key";
  sg.role = KYSO__STORE__V1__KEY_ROLE__KEY_ROLE_PERSONAL;
  sg.account = s(signer_account);
  sg.unit = s(d->unit);
  sg.certificate.data = (uint8_t *)cert;
  sg.certificate.len = strlen(cert);
  sg.chain = &chain;
  sg.n_chain = 1;
  sg.signing_time = "2024-05-01T08:00:00Z";
  c.version = 1;
  c.time_unix_ms = time_ms;
  c.principal = s(principal);
  c.request_id = s(request_id);
  c.op_case = KYSO__STORE__V1__COMMAND__OP_RECORD_SIGNING;
  c.record_signing = &sg;
  return pack(&c, len);
}

archive__result *tu_submit_ok(archive *a, const uint8_t *cmd, size_t len, const uint8_t *blob,
                              size_t blob_len) {
  uint8_t *res = NULL;
  size_t res_len = 0;
  kyso_err err = {0};
  kyso_status st = archive_submit(a, cmd, len, blob, blob_len, &res, &res_len, &err);
  if (st != KYSO_OK) fail_msg("archive_submit: %s (%s)", err.msg, kyso_strerror(st));
  archive__result *r = kyso__store__v1__command_result__unpack(NULL, res_len, res);
  assert_non_null(r);
  free(res);
  return r;
}

void tu_result_free(archive__result *r) { kyso__store__v1__command_result__free_unpacked(r, NULL); }

const char *tu_submit_fails(archive *a, const uint8_t *cmd, size_t len, const uint8_t *blob,
                            size_t blob_len, kyso_status want) {
  static kyso_err err;
  uint8_t *res = NULL;
  size_t res_len = 0;
  memset(&err, 0, sizeof(err));
  kyso_status st = archive_submit(a, cmd, len, blob, blob_len, &res, &res_len, &err);
  if (st != want)
    fail_msg("archive_submit: got %s (%s), want %s", kyso_strerror(st), err.msg,
             kyso_strerror(want));
  assert_null(res);
  return err.msg;
}

uint64_t tu_count(archive *a, int cf, const void *prefix, size_t plen) {
  uint64_t n = 0;
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(a->db, a->ro, a->cf[cf]);
  if (plen > 0)
    rocksdb_iter_seek(it, prefix, plen);
  else
    rocksdb_iter_seek_to_first(it);
  for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    size_t kl = 0;
    const char *k = rocksdb_iter_key(it, &kl);
    if (plen > 0 && (kl < plen || memcmp(k, prefix, plen) != 0)) break;
    n++;
  }
  rocksdb_iter_destroy(it);
  return n;
}

void tu_raw_put(archive *a, int cf, const void *k, size_t kl, const void *v, size_t vl) {
  char *e = NULL;
  rocksdb_put_cf(a->db, a->wo, a->cf[cf], k, kl, v, vl, &e);
  if (e != NULL) fail_msg("rocksdb_put_cf: %s", e);
}

void tu_raw_delete(archive *a, int cf, const void *k, size_t kl) {
  char *e = NULL;
  rocksdb_delete_cf(a->db, a->wo, a->cf[cf], k, kl, &e);
  if (e != NULL) fail_msg("rocksdb_delete_cf: %s", e);
}

kyso_status tu_read_all(archive *a, const uint8_t id[32], uint8_t **out, size_t *len,
                        kyso_err *err) {
  return archive_read_blob(a, id, (size_t)KYSO_MAX_DOCUMENT, out, len, err);
}

Kyso__Store__V1__DocumentRecord *tu_document(archive *a, const uint8_t id[32]) {
  uint8_t *v = NULL;
  size_t n = 0;
  kyso_err err = {0};
  kyso_status st = archive_get_document(a, id, &v, &n, &err);
  if (st != KYSO_OK) fail_msg("archive_get_document: %s", err.msg);
  Kyso__Store__V1__DocumentRecord *r = kyso__store__v1__document_record__unpack(NULL, n, v);
  assert_non_null(r);
  free(v);
  return r;
}

static uint64_t status_kib(const char *field) {
  char line[256];
  uint64_t kib = 0;
  size_t fl = strlen(field);
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return 0;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, field, fl) == 0) kib = strtoull(line + fl, NULL, 10);
  fclose(f);
  return kib * 1024;
}

uint64_t tu_rss_peak(void) { return status_kib("VmHWM:"); }
uint64_t tu_rss_now(void) { return status_kib("VmRSS:"); }

void tu_rss_reset_peak(void) {
  /* "5" resets the peak RSS (Linux >= 4.0). */
  int fd = open("/proc/self/clear_refs", O_WRONLY);
  if (fd >= 0) {
    if (write(fd, "5", 1) != 1) { /* older kernel: the peak stays the lifetime peak */
    }
    close(fd);
  }
}

void tu_sign_small(archive *a, int i) {
  char rid[32], cms[32], body[32];
  uint8_t id[32];
  kyso_err err = {0};
  int n = snprintf(body, sizeof(body), "small document %d", i);
  assert_int_equal(archive_put_blob(a, (uint8_t *)body, (size_t)n, id, &err), KYSO_OK);
  snprintf(rid, sizeof(rid), "r%d", i);
  snprintf(cms, sizeof(cms), "CMS %d", i);
  tu_doc d = {.sha256 = id, .size = (uint64_t)n};
  size_t len;
  uint8_t *cmd = tu_cmd_signing("p", rid, &d, "acc", cms, 1714550400000LL + i, &len);
  tu_result_free(tu_submit_ok(a, cmd, len, NULL, 0));
  free(cmd);
}

int tu_has_request(archive *a, int i) {
  char rid[32];
  uint8_t *v = NULL;
  size_t n = 0;
  kyso_err err = {0};
  snprintf(rid, sizeof(rid), "r%d", i);
  kyso_status st = archive_find_request(a, "p", rid, &v, &n, &err);
  free(v);
  return st == KYSO_OK;
}

pid_t tu_spawn(const char *mode, const char *dir, int *read_fd) {
  int p[2];
  char fd[16];
  assert_int_equal(pipe(p), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    snprintf(fd, sizeof(fd), "%d", p[1]);
    execl("/proc/self/exe", "archive-test-child", mode, dir, fd, (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  *read_fd = p[0];
  return pid;
}

void tu_kill(pid_t pid) {
  int status;
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

void tu_crash_after(const char *mode, const char *dir) {
  int fd;
  char c = 0;
  pid_t pid = tu_spawn(mode, dir, &fd);
  assert_int_equal(read(fd, &c, 1), 1);
  assert_int_equal(c, 'd');
  close(fd);
  tu_kill(pid);
}
