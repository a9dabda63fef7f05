/* kyso — the session pool: a fixed number of open PKCS#11 sessions, each lent
 * to one caller at a time (a session runs one operation at a time), with a
 * bounded blocking wait when every session is out. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "hsm_internal.h"

kyso_status hsm__pool_init(hsm__pool *p, unsigned cap, kyso_err *err) {
  kyso_status st = KYSO_OK;
  pthread_condattr_t ca;
  int have_ca = 0, have_mu = 0;
  p->idle = calloc(cap, sizeof(*p->idle));
  p->nidle = p->size = 0;
  p->cap = cap;
  if (p->idle == NULL) {
    st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED, "out of memory for %u sessions", cap);
    goto out;
  }
  if (pthread_mutex_init(&p->mu, NULL) != 0) goto fail;
  have_mu = 1;
  if (pthread_condattr_init(&ca) != 0) goto fail;
  have_ca = 1;
  /* Waits are measured on the monotonic clock: a wall-clock step (NTP)
   * must not shorten or stretch them. */
  if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
      pthread_cond_init(&p->cv, &ca) != 0)
    goto fail;
  goto out;
fail:
  st = kyso_fail(err, KYSO_INTERNAL, "cannot initialise the session pool's locks");
  if (have_mu) pthread_mutex_destroy(&p->mu);
  free(p->idle);
  p->idle = NULL;
out:
  if (have_ca) pthread_condattr_destroy(&ca);
  return st;
}

void hsm__pool_destroy(hsm__pool *p) {
  if (p->idle == NULL) return;
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  free(p->idle);
  p->idle = NULL;
}

void hsm__pool_add(hsm__pool *p, CK_SESSION_HANDLE s) {
  pthread_mutex_lock(&p->mu);
  if (p->size < p->cap) {
    p->idle[p->nidle++] = s;
    p->size++;
  }
  pthread_mutex_unlock(&p->mu);
  pthread_cond_signal(&p->cv);
}

kyso_status hsm__pool_acquire(hsm__pool *p, const char *token,
                              CK_SESSION_HANDLE *out, kyso_err *err) {
  kyso_status st = KYSO_OK;
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += HSM__POOL_WAIT_MS / 1000;
  deadline.tv_nsec += (long)(HSM__POOL_WAIT_MS % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&p->mu);
  while (p->nidle == 0) {
    int rc = pthread_cond_timedwait(&p->cv, &p->mu, &deadline);
    if (rc == ETIMEDOUT && p->nidle == 0) {
      st = kyso_fail(err, KYSO_RESOURCE_EXHAUSTED,
                     "all %u sessions to HSM token '%s' stayed busy for %d ms; "
                     "raise the session pool size or lower the load",
                     p->size, token, HSM__POOL_WAIT_MS);
      goto out;
    }
  }
  *out = p->idle[--p->nidle];
out:
  pthread_mutex_unlock(&p->mu);
  return st;
}

void hsm__pool_release(hsm__pool *p, CK_SESSION_HANDLE s) {
  pthread_mutex_lock(&p->mu);
  p->idle[p->nidle++] = s;
  pthread_mutex_unlock(&p->mu);
  pthread_cond_signal(&p->cv);
}

void hsm__pool_close_all(hsm__pool *p, CK_FUNCTION_LIST *fl) {
  pthread_mutex_lock(&p->mu);
  /* Errors are ignored: after a token went away the handles are dead anyway. */
  for (unsigned i = 0; i < p->nidle; i++) fl->C_CloseSession(p->idle[i]);
  p->nidle = p->size = 0;
  pthread_mutex_unlock(&p->mu);
}
