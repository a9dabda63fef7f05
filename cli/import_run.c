/* kyso CLI — the bulk import's runner: threads, progress, resume journal. */
#include "import_run.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kyso/util.h"

#define RETRIES 6
#define MAX_PRINTED_ERRORS 20

typedef struct run {
  import_step *s;
  size_t start;            /* items below it were done by an earlier run */
  atomic_size_t next;      /* next item to take */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  unsigned char *ok;       /* mu: per item, 1 once made or unchanged */
  size_t prefix;           /* mu: every item below it is ok */
  size_t finished;         /* mu: items ended this run, failed ones too */
  int printed;             /* mu: errors printed */
} run;

static int64_t mono_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void *worker(void *arg) {
  run *r = arg;
  import_step *s = r->s;
  char msg[512];
  for (;;) {
    size_t i = atomic_fetch_add(&r->next, 1);
    if (i >= s->n) break;
    import_outcome o = IMPORT_RETRY;
    /* A node busy or changing leader answers UNAVAILABLE: back off and retry. */
    for (int attempt = 0; attempt < RETRIES && o == IMPORT_RETRY; attempt++) {
      if (attempt > 0) usleep((useconds_t)(100000u << (attempt - 1)));
      msg[0] = '\0';
      o = s->fn(s->ctx, i, msg, sizeof(msg));
    }
    pthread_mutex_lock(&r->mu);
    if (o == IMPORT_MADE) s->made++;
    if (o == IMPORT_UNCHANGED) s->unchanged++;
    if (o == IMPORT_MADE || o == IMPORT_UNCHANGED) {
      r->ok[i] = 1;
      while (r->prefix < s->n && r->ok[r->prefix]) r->prefix++;
    } else {
      s->failed++;
      if (r->printed++ < MAX_PRINTED_ERRORS)
        fprintf(stderr, "\nkyso admin import: %s, item %zu: %s%s\n", s->name, i + 1, msg,
                o == IMPORT_RETRY ? " (gave up after retries)" : "");
    }
    r->finished++;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
  }
  return NULL;
}

/* "kyso-import 1", the inputs' identity, then the first step not done and
 * how many of its items are. Written whole, then renamed over the old one. */
static int journal_write(const char *path, const char *identity, size_t step, size_t prefix) {
  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL) return -1;
  fprintf(f, "kyso-import 1\n%s\n%zu %zu\n", identity, step, prefix);
  int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
  bad |= fclose(f) != 0;
  if (bad || rename(tmp, path) != 0) {
    unlink(tmp);
    return -1;
  }
  return 0;
}

/* 0 and the resume point when path is a journal of these inputs. */
static int journal_read(const char *path, const char *identity, size_t *step, size_t *prefix) {
  char line[256], id[256] = "";
  size_t s = 0, p = 0;
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  int ok = fgets(line, sizeof(line), f) != NULL && strcmp(line, "kyso-import 1\n") == 0 &&
           fgets(id, sizeof(id), f) != NULL && fscanf(f, "%zu %zu", &s, &p) == 2;
  fclose(f);
  id[strcspn(id, "\n")] = '\0';
  if (!ok || strcmp(id, identity) != 0) return -1; /* another import's: start over */
  *step = s;
  *prefix = p;
  return 0;
}

static void draw(const run *r, int64_t t0, int bar, int *last_tenth) {
  const import_step *s = r->s;
  size_t done = r->start + r->finished;
  double pct = s->n ? 100.0 * (double)done / (double)s->n : 100.0;
  double secs = (double)(mono_ms() - t0) / 1000.0;
  double rate = secs > 0 ? (double)r->finished / secs : 0;
  if (bar) {
    char b[31];
    int fill = (int)(pct * 30 / 100);
    for (int k = 0; k < 30; k++) b[k] = k < fill ? '#' : '-';
    b[30] = '\0';
    fprintf(stderr, "\r  %-14s [%s] %3.0f%%  %zu/%zu  %.0f/s", s->name, b, pct, done, s->n, rate);
    if (rate > 0 && done < s->n) fprintf(stderr, "  eta %.0fs ", (double)(s->n - done) / rate);
    fflush(stderr);
  } else if ((int)(pct / 10) > *last_tenth) {
    *last_tenth = (int)(pct / 10);
    fprintf(stderr, "  %s: %zu/%zu (%.0f%%, %.0f/s)\n", s->name, done, s->n, pct, rate);
  }
}

long import_run(import_step *steps, size_t n_steps, const char *journal, const char *identity,
                int progress) {
  size_t from_step = 0, from_prefix = 0;
  long failed = 0;
  int journal_ok = 1;
  if (journal_read(journal, identity, &from_step, &from_prefix) == 0)
    fprintf(stderr, "kyso admin import: resuming from %s (step %zu, %zu items done)\n", journal,
            from_step + 1, from_prefix);
  for (size_t k = 0; k < n_steps; k++) {
    import_step *s = &steps[k];
    if (k < from_step) {
      fprintf(stderr, "  %-14s done by an earlier run\n", s->name);
      continue;
    }
    run r = {.s = s, .start = k == from_step && from_prefix <= s->n ? from_prefix : 0};
    r.prefix = r.start;
    atomic_init(&r.next, r.start);
    if ((r.ok = calloc(s->n ? s->n : 1, 1)) == NULL) return -1;
    memset(r.ok, 1, r.start);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    unsigned jobs = s->jobs ? s->jobs : 1;
    pthread_t th[64];
    unsigned started = 0;
    for (; started < jobs && started < 64; started++)
      if (pthread_create(&th[started], NULL, worker, &r) != 0) break;
    if (started == 0) worker(&r); /* no thread: do it here */
    int64_t t0 = mono_ms(), saved_at = t0;
    int tenth = -1;
    size_t saved_prefix = r.start;
    pthread_mutex_lock(&r.mu);
    while (r.start + r.finished < s->n) {
      struct timespec until;
      clock_gettime(CLOCK_REALTIME, &until);
      until.tv_nsec += 250 * 1000000L;
      if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&r.cv, &r.mu, &until);
      draw(&r, t0, progress, &tenth);
      /* Once a second, what is certainly done, so a kill loses little. */
      if (mono_ms() - saved_at >= 1000 && r.prefix != saved_prefix && failed == 0 && journal_ok) {
        journal_ok = journal_write(journal, identity, k, r.prefix) == 0;
        saved_prefix = r.prefix;
        saved_at = mono_ms();
      }
    }
    draw(&r, t0, progress, &tenth);
    pthread_mutex_unlock(&r.mu);
    for (unsigned t = 0; t < started; t++) pthread_join(th[t], NULL);
    fprintf(stderr, "%s  %-14s %zu: %zu made, %zu unchanged, %zu failed (%.1f s)\n",
            progress ? "\n" : "", s->name, s->n, s->made, s->unchanged, s->failed,
            (double)(mono_ms() - t0) / 1000.0);
    /* The journal names the first step with a failure: a rerun redoes it. */
    if (failed == 0 && journal_ok)
      journal_ok = journal_write(journal, identity, s->failed ? k : k + 1,
                                 s->failed ? r.prefix : 0) == 0;
    failed += (long)s->failed;
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    free(r.ok);
  }
  if (!journal_ok) {
    fprintf(stderr, "kyso admin import: cannot write the resume file %s: %s\n", journal,
            strerror(errno));
    return -1;
  }
  if (failed == 0) unlink(journal); /* all done: nothing to resume */
  return failed;
}
