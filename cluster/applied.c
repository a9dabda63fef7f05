/* cluster — how far this node applied the log, and waiting for it. A
 * follower that served a write through the leader, or asked it for a
 * read index, answers only once it applied that far itself: so a client
 * reads on any node what it wrote there, and what was acknowledged before
 * its read began. */
#include <errno.h>
#include <inttypes.h>
#include <time.h>

#include "cluster_internal.h"

kyso_status cluster__applied_init(cluster *c, kyso_err *err) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->applied_cv, &ca);
  pthread_condattr_destroy(&ca);
  /* What the archive holds already; the log replays only what follows. */
  uint64_t held = 0;
  kyso_status st = archive_applied_index(c->archive, &held, err);
  c->applied_cmd = held;
  return st;
}

void cluster__applied_destroy(cluster *c) { pthread_cond_destroy(&c->applied_cv); }

void cluster__applied_signal_locked(cluster *c) { pthread_cond_broadcast(&c->applied_cv); }

void cluster__applied_note(cluster *c, uint64_t index) {
  pthread_mutex_lock(&c->mu);
  if (index > c->applied_cmd) {
    c->applied_cmd = index;
    cluster__applied_signal_locked(c);
  }
  pthread_mutex_unlock(&c->mu);
}

uint64_t cluster_applied_index(cluster *c) {
  pthread_mutex_lock(&c->mu);
  uint64_t i = c->applied_cmd;
  pthread_mutex_unlock(&c->mu);
  return i;
}

/* Under mu. Barrier and configuration entries reach only info (at the
 * next refresh); command entries reach applied_cmd at once. */
static uint64_t applied_locked(const cluster *c) {
  return c->applied_cmd > c->info.applied_index ? c->applied_cmd : c->info.applied_index;
}

void cluster__deadline(int64_t timeout_ms, struct timespec *until) {
  clock_gettime(CLOCK_MONOTONIC, until);
  if (timeout_ms < 0) timeout_ms = 0;
  until->tv_sec += timeout_ms / 1000;
  until->tv_nsec += (timeout_ms % 1000) * 1000000L;
  if (until->tv_nsec >= 1000000000L) {
    until->tv_sec++;
    until->tv_nsec -= 1000000000L;
  }
}

kyso_status cluster_applied_wait(cluster *c, uint64_t index, int64_t timeout_ms, kyso_err *err) {
  struct timespec until;
  cluster__deadline(timeout_ms, &until);
  if (timeout_ms < 0) timeout_ms = 0;
  kyso_status st = KYSO_OK;
  pthread_mutex_lock(&c->mu);
  while (applied_locked(c) < index && !c->stopping)
    if (pthread_cond_timedwait(&c->applied_cv, &c->mu, &until) == ETIMEDOUT) break;
  uint64_t got = applied_locked(c);
  if (got >= index)
    st = KYSO_OK;
  else if (c->stopping)
    st = kyso_fail(err, KYSO_UNAVAILABLE, "node %" PRIu64 " is shutting down: call another node",
                   c->id);
  else
    st = kyso_fail(err, KYSO_DEADLINE_EXCEEDED,
                   "node %" PRIu64 " applied the log up to entry %" PRIu64 " only, not to %" PRIu64
                   " within %lld ms: it lags behind the leader (kyso cluster status shows by how "
                   "much); retry, or call the leader",
                   c->id, got, index, (long long)timeout_ms);
  pthread_mutex_unlock(&c->mu);
  return st;
}
