/* kyso tests — a private SoftHSM2 token made at run time. */
#ifndef KYSO_TEST_SOFTHSM_FIXTURE_H
#define KYSO_TEST_SOFTHSM_FIXTURE_H

#include <limits.h>
#include <stddef.h>

#define FX_PIN "1234"
#define FX_SO_PIN "87654321"

typedef struct fx_token {
  char dir[PATH_MAX];  /* mkdtemp()ed; removed by fx_token_free */
  char conf[PATH_MAX]; /* exported as SOFTHSM2_CONF */
  char label[33];
} fx_token;

/* Creates DIR with a fresh token labelled `label` (PIN FX_PIN, SO PIN
 * FX_SO_PIN) through tests/fixtures/softhsm.sh and sets SOFTHSM2_CONF.
 * Returns 0 on success; prints why and returns -1 otherwise. */
int fx_token_make(fx_token *t, const char *label);
/* Runs argv (no shell) and keeps at most cap-1 bytes of its stdout (and
 * stderr too if with_stderr) in out, NUL-terminated; its exit status, or -1
 * when it could not run or did not exit. */
int fx_run(char *const argv[], int with_stderr, char *out, size_t cap);
/* Removes the token directory. */
void fx_token_free(fx_token *t);

#endif
