/* kyso end-to-end harness: processes, files, openssl verification, failures. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <poll.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#include "harness.h"
#include "kyso/util.h"

extern char **environ;
extern e2e *e2e__current;

const char *const e2e_grpc_status_names[17] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED"};

static const char *env_or(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return v && *v ? v : fallback;
}
const char *e2e_kysod_path(void) { return env_or("KYSOD", KYSO_E2E_KYSOD); }
const char *e2e_cli_path(void) { return env_or("KYSO_CLI", KYSO_E2E_CLI); }
const char *e2e_fixtures_dir(void) { return env_or("KYSO_FIXTURES", KYSO_E2E_FIXTURES); }
const char *e2e_samples_dir(void) { return env_or("KYSO_SAMPLES", KYSO_E2E_SAMPLES); }

const char *const *e2e_env_rss(void) {
  static char asan_env[1024];
  static const char *env[2];
  const char *asan = getenv("ASAN_OPTIONS");
  snprintf(asan_env, sizeof(asan_env),
           "ASAN_OPTIONS=%s%squarantine_size_mb=4:thread_local_quarantine_size_kb=64",
           asan ? asan : "", asan && *asan ? ":" : "");
  env[0] = asan_env;
  env[1] = NULL;
  return env;
}

void e2e__fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  char msg[2048];
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  print_error("%s:%d: %s\n", file, line, msg);
  if (e2e__current && e2e__current->pid > 0) {
    int st;
    if (waitpid(e2e__current->pid, &st, WNOHANG) == e2e__current->pid) {
      print_error("kysod (pid %d) is gone: wait status 0x%x (%s %d)\n", (int)e2e__current->pid,
                  st, WIFEXITED(st) ? "exit" : "signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
      e2e__current->pid = 0;
    }
  }
  if (e2e__current && e2e__current->stderr_path[0]) {
    print_error("--- last lines of kysod's stderr (%s) ---\n", e2e__current->stderr_path);
    fflush(stdout);
    e2e_sh(NULL, "tail -n 25 '%s' >&2", e2e__current->stderr_path);
    print_error("--- (set KYSO_KEEP_TMP=1 to keep %s) ---\n", e2e__current->dir);
  }
  _fail(file, line);
  abort(); /* not reached: _fail longjmps out of the test */
}

static pid_t spawn(const char *const *argv, const char *out_file) {
  posix_spawn_file_actions_t fa;
  pid_t pid = -1;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (out_file) {
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_file,
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  }
  if (posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

static int wait_exit(pid_t pid) {
  int st;
  if (pid < 0) return -1;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int e2e_run(const char *const *argv, const char *out_file) {
  return wait_exit(spawn(argv, out_file));
}

pid_t e2e_spawn(const char *const *argv, const char *out_file) { return spawn(argv, out_file); }

int e2e_wait_exit(pid_t pid) { return wait_exit(pid); }

static pid_t spawn_sh(const char *out_file, const char *fmt, va_list ap) {
  char *script = NULL;
  if (vasprintf(&script, fmt, ap) < 0) return -1;
  const char *argv[] = {"sh", "-c", script, NULL};
  pid_t pid = spawn(argv, out_file);
  free(script);
  return pid;
}

int e2e_sh(const char *out_file, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  pid_t pid = spawn_sh(out_file, fmt, ap);
  va_end(ap);
  return wait_exit(pid);
}

static pid_t e2e_sh_start(const char *out_file, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static pid_t e2e_sh_start(const char *out_file, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  pid_t pid = spawn_sh(out_file, fmt, ap);
  va_end(ap);
  return pid;
}

int e2e_openssl_verify(e2e *e, const char *doc, const char *sig) {
  const char *argv[] = {"openssl", "cms", "-verify", "-cades", "-binary", "-content", doc,
                        "-inform", "DER", "-in", sig, "-CAfile", e2e_path(e, "pki/root.pem"),
                        "-purpose", "any", "-out", "/dev/null", NULL};
  return e2e_run(argv, e2e_path(e, "work/openssl-verify.log"));
}

/* One `sh -c` loop over files [first, last] of dir. */
static pid_t start_verify_loop(e2e *e, const char *dir, int index, int first, int last) {
  return e2e_sh_start(
      e2e_path(e, "work/verify-%d.log", index),
      "cd '%s' || exit 2; i=%d; while [ $i -le %d ]; do "
      "openssl cms -verify -cades -binary -content $i.doc -inform DER -in $i.doc.p7s "
      "-CAfile '%s/pki/root.pem' -purpose any -out /dev/null 2>$i.err || "
      "{ echo \"openssl cms -verify failed for %s/$i.doc:\"; cat $i.err; exit 1; }; "
      "i=$((i+1)); done",
      dir, first, last, e->dir, dir);
}

int e2e_openssl_verify_many(e2e *e, const char *dir, int count, int jobs) {
  enum { PER_LOOP = 100 };
  int loops = (count + PER_LOOP - 1) / PER_LOOP, started = 0, failed = 0;
  pid_t *pids = calloc((size_t)loops + 1, sizeof(pid_t));
  if (pids == NULL) return -1;
  /* Waits on our own children by pid only: kysod is a child too. */
  for (int done = 0; done < loops; done++) {
    for (; started < loops && started < done + jobs; started++) {
      int first = started * PER_LOOP, last = first + PER_LOOP - 1;
      pids[started] = start_verify_loop(e, dir, started, first, last < count ? last : count - 1);
    }
    if (wait_exit(pids[done]) != 0) {
      failed++;
      print_error("verification loop %d (files %d..%d of %s) failed:\n", done, done * PER_LOOP,
                  done * PER_LOOP + PER_LOOP - 1, dir);
      e2e_sh(NULL, "head -n 20 '%s' >&2", e2e_path(e, "work/verify-%d.log", done));
    }
  }
  free(pids);
  return failed ? -1 : 0;
}

int e2e_write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) E2E_FAIL("cannot create %s: %s", path, strerror(errno));
  size_t w = len ? fwrite(data, 1, len, f) : 0;
  if (fclose(f) != 0 || w != len) E2E_FAIL("cannot write %s", path);
  return 0;
}

uint8_t *e2e_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  size_t cap = 0, n = 0;
  if (f == NULL) return NULL;
  for (;;) {
    if (cap - n < 4096) {
      uint8_t *grown = realloc(buf, cap = cap ? cap * 2 : 65536);
      if (grown == NULL) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = grown;
    }
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0) break;
  }
  fclose(f);
  buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

int e2e_file_contains(const char *path, const char *needle) {
  size_t n;
  char *text = (char *)e2e_read_file(path, &n);
  int found = text != NULL && memmem(text, n, needle, strlen(needle)) != NULL;
  free(text);
  return found;
}

int e2e_wait_for_text(const char *path, const char *needle, int timeout_ms) {
  int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  int found = 0;
  int64_t end = kyso_now_ms() + timeout_ms;
  if (fd < 0 || inotify_add_watch(fd, path, IN_MODIFY | IN_CLOSE_WRITE) < 0)
    E2E_FAIL("inotify on %s: %s", path, strerror(errno));
  /* Watch first, then look: a write between the two still wakes us. */
  while (!(found = e2e_file_contains(path, needle))) {
    int64_t left = end - kyso_now_ms();
    if (left <= 0) break;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, (int)left) > 0) {
      char ev[4096];
      while (read(fd, ev, sizeof(ev)) > 0) {
      }
    }
  }
  close(fd);
  return found;
}

void e2e_check_log_clean(e2e *e) { e2e_check_log_clean_except(e, NULL); }

void e2e_check_log_clean_except(e2e *e, const char *const *allowed) {
  static const char *const bad[] = {"ERROR", " error ", "Sanitizer", "runtime error:",
                                    "Assertion", "assertion"};
  size_t n = 0;
  char *text = (char *)e2e_read_file(e->stderr_path, &n);
  if (text == NULL) return;
  for (char *line = text, *end; line < text + n; line = end + 1) {
    end = memchr(line, '\n', (size_t)(text + n - line));
    if (end == NULL) end = text + n;
    *end = '\0';
    int excused = 0;
    for (size_t a = 0; allowed && allowed[a] && !excused; a++)
      excused = strstr(line, allowed[a]) != NULL;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]) && !excused; i++) {
      if (strstr(line, bad[i]) == NULL) continue;
      char copy[512];
      snprintf(copy, sizeof(copy), "%s", line);
      free(text);
      E2E_FAIL("kysod's stderr %s: got a line with \"%s\", want none: %s", e->stderr_path,
               bad[i], copy);
    }
  }
  free(text);
}

const char *e2e_path(e2e *e, const char *fmt, ...) {
  static char bufs[8][512];
  static int next;
  char *out = bufs[next++ % 8];
  va_list ap;
  int n = snprintf(out, 512, "%s/", e->dir);
  va_start(ap, fmt);
  vsnprintf(out + n, 512 - (size_t)n, fmt, ap);
  va_end(ap);
  return out;
}

void e2e_sha256_hex(const uint8_t *data, size_t len, char out[65]) {
  uint8_t md[32];
  SHA256(data, len, md);
  kyso_hex(md, 32, out);
}
