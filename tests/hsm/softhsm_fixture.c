/* kyso tests — a private SoftHSM2 token made at run time (no shell: the
 * fixture script is run with fork/exec and its stdout read through a pipe). */
#define _GNU_SOURCE
#include "softhsm_fixture.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int fx_run(char *const argv[], int with_stderr, char *out, size_t cap) {
  int fds[2];
  if (cap == 0 || pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(fds[1], 1);
    if (with_stderr) dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(fds[1]);
  size_t used = 0;
  ssize_t n;
  while (used + 1 < cap && (n = read(fds[0], out + used, cap - 1 - used)) > 0) used += (size_t)n;
  out[used] = '\0';
  close(fds[0]);
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

int fx_token_make(fx_token *t, const char *label) {
  const char *tmp = getenv("TMPDIR");
  memset(t, 0, sizeof(*t));
  snprintf(t->label, sizeof(t->label), "%s", label);
  snprintf(t->dir, sizeof(t->dir), "%s/kyso-hsm-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(t->dir) == NULL) {
    perror("mkdtemp");
    return -1;
  }
  char *argv[] = {"/bin/bash", KYSO_SOFTHSM_SH, t->dir, t->label, FX_PIN, FX_SO_PIN, NULL};
  if (fx_run(argv, 0, t->conf, sizeof(t->conf)) != 0) {
    fprintf(stderr, "fixture %s failed for token '%s'\n", KYSO_SOFTHSM_SH, label);
    return -1;
  }
  t->conf[strcspn(t->conf, "\n")] = '\0';
  setenv("SOFTHSM2_CONF", t->conf, 1);
  return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

void fx_token_free(fx_token *t) {
  if (t->dir[0] != '\0') nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  t->dir[0] = '\0';
}
