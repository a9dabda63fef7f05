/* kysod — the orphan collector's thread: a pass of archive_collect_orphans
 * every quarter of the grace period (at most hourly), on every node, since
 * every node may hold copies of documents whose record never committed. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "kyso/log.h"
#include "kysod.h"

struct kysod_collector {
  kysod *d;
  int64_t grace_ms, every_ms;
  pthread_mutex_t mu;
  pthread_cond_t wake;
  int stopping;
  pthread_t thread;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *run(void *arg) {
  kysod_collector *c = arg;
  pthread_mutex_lock(&c->mu);
  while (!c->stopping) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += c->every_ms / 1000;
    ts.tv_nsec += (c->every_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    while (!c->stopping && pthread_cond_timedwait(&c->wake, &c->mu, &ts) == 0) {
    }
    if (c->stopping) break;
    pthread_mutex_unlock(&c->mu);
    archive_collect_stats s;
    kyso_err err = {0};
    if (archive_collect_orphans(c->d->archive, mono_ms(), c->grace_ms, &s, &err) != KYSO_OK)
      kyso_log(KYSO_LOG_WARN, "archive: the orphan collector's pass failed (next in %lld ms): %s",
               (long long)c->every_ms, err.msg);
    else
      kyso_log(s.collected ? KYSO_LOG_INFO : KYSO_LOG_DEBUG,
               "archive: orphan pass: %llu blobs, %llu unreferenced, %llu collected (%llu bytes), "
               "%llu waiting for their grace period",
               (unsigned long long)s.blobs, (unsigned long long)s.unreferenced,
               (unsigned long long)s.collected, (unsigned long long)s.bytes,
               (unsigned long long)s.candidates);
    pthread_mutex_lock(&c->mu);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

kyso_status kysod__collector_start(kysod *d, kyso_err *err) {
  kysod_collector *c = calloc(1, sizeof(*c));
  if (c == NULL) return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory (collector)");
  c->d = d;
  c->grace_ms = (int64_t)d->cfg.orphan_grace_seconds * 1000;
  const char *test = getenv("KYSO_TEST_ORPHAN_GRACE_MS");
  if (test != NULL && *test) {
    c->grace_ms = atoll(test);
    kyso_log(KYSO_LOG_WARN, "test setting active: unreferenced documents are collected after %lld "
             "ms (KYSO_TEST_ORPHAN_GRACE_MS); never set this in production",
             (long long)c->grace_ms);
  }
  c->every_ms = c->grace_ms / 4 > 3600000 ? 3600000 : c->grace_ms / 4 < 100 ? 100 : c->grace_ms / 4;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->wake, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&c->mu, NULL);
  if (pthread_create(&c->thread, NULL, run, c) != 0) {
    pthread_cond_destroy(&c->wake);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "cannot start the orphan collector thread");
  }
  d->collector = c;
  return KYSO_OK;
}

void kysod__collector_stop(kysod *d) {
  kysod_collector *c = d->collector;
  if (c == NULL) return;
  pthread_mutex_lock(&c->mu);
  c->stopping = 1;
  pthread_cond_signal(&c->wake);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->thread, NULL);
  pthread_cond_destroy(&c->wake);
  pthread_mutex_destroy(&c->mu);
  free(c);
  d->collector = NULL;
}
