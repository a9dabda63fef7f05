/* Archive test helpers: temporary stores, deterministic bytes, commands. */
#ifndef KYSO_TESTS_ARCHIVE_TESTUTIL_H
#define KYSO_TESTS_ARCHIVE_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
/* cmocka needs the four above first */
#include <cmocka.h>

#include "archive_internal.h"

/* A fresh directory under $TMPDIR (or /tmp); free with tu_rmrf + free. */
char *tu_tmpdir(void);
void tu_rmrf(const char *path);
/* "<base>/<name>" in a static-free malloc()ed string. */
char *tu_path(const char *base, const char *name);

/* Opens dir (asserting success). opts may be NULL; its dir is ignored. */
archive *tu_open(const char *dir, const archive_opts *opts);

/* n pseudo-random bytes from seed (malloc()ed). */
uint8_t *tu_bytes(size_t n, uint32_t seed);
void tu_fill(uint8_t *p, size_t n, uint32_t seed);
void tu_sha256(const void *p, size_t n, uint8_t out[32]);

/* Commands, packed (malloc()ed). Strings may be NULL for "". */
typedef struct tu_doc {
  const uint8_t *sha256;
  uint64_t size;
  const char *unit, *issue_date, *number, *account;
} tu_doc;
uint8_t *tu_cmd_document(const char *principal, const char *request_id, const tu_doc *d,
                         int64_t time_ms, size_t *len);
/* A signing whose "CMS" is the bytes of cms_text (its id is their hash). */
uint8_t *tu_cmd_signing(const char *principal, const char *request_id, const tu_doc *d,
                        const char *signer_account, const char *cms_text, int64_t time_ms,
                        size_t *len);

/* Submits and asserts OK; returns the unpacked result (free with tu_result_free). */
archive__result *tu_submit_ok(archive *a, const uint8_t *cmd, size_t len, const uint8_t *blob,
                              size_t blob_len);
void tu_result_free(archive__result *r);
/* Submits, asserts the status, returns the error message (static buffer). */
const char *tu_submit_fails(archive *a, const uint8_t *cmd, size_t len, const uint8_t *blob,
                            size_t blob_len, kyso_status want);

/* Number of keys in a column family (and with a key prefix when plen > 0). */
uint64_t tu_count(archive *a, int cf, const void *prefix, size_t plen);
/* Puts/deletes a raw key, bypassing kyso (tampering). */
void tu_raw_put(archive *a, int cf, const void *k, size_t kl, const void *v, size_t vl);
void tu_raw_delete(archive *a, int cf, const void *k, size_t kl);

/* Reads a whole blob through the verifying reader into *out; returns the status. */
kyso_status tu_read_all(archive *a, const uint8_t id[32], uint8_t **out, size_t *len,
                        kyso_err *err);

/* The document record, unpacked (asserting it exists). */
Kyso__Store__V1__DocumentRecord *tu_document(archive *a, const uint8_t id[32]);

/* Signing number i ("r<i>" by principal "p") of a fresh small stored
 * document; whether request "r<i>" of "p" has a result. */
void tu_sign_small(archive *a, int i);
int tu_has_request(archive *a, int i);

/* Crashes: runs this test binary again (exec'd fresh, so RocksDB starts
 * clean) as `argv[0] mode dir fd`; its main hands such calls to the test's
 * child code, which writes, sends "d" on fd and waits to be killed. */
pid_t tu_spawn(const char *mode, const char *dir, int *read_fd);
void tu_kill(pid_t pid); /* SIGKILL, reaped; asserts it died of it */
/* Spawns, waits for "d", kills: what the child wrote lives only in its WAL. */
void tu_crash_after(const char *mode, const char *dir);

/* Peak and current resident set size of this process, bytes. */
uint64_t tu_rss_peak(void);
uint64_t tu_rss_now(void);
void tu_rss_reset_peak(void);

#endif
